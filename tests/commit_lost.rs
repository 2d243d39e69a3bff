//! A connection to PostgreSQL lost during `COMMIT`: the outcome is unknown to the node. A TCP
//! proxy between the node and the database passes the `COMMIT` of a send's transaction on to
//! the database and then cuts both connections before the answer comes back, so the commit
//! happens but the node never hears of it. The send is answered `storage`; its resend with the
//! same `client_id` is answered with the original seq (`duplicate`), and the message is stored
//! exactly once (docs/PROTOCOL.md §3.3, *On PostgreSQL*).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT};
use serde_json::json;

/// A proxy on 127.0.0.1:0 to `upstream`; while `armed`, the `COMMIT` of the first
/// transaction that carries `marker` (a message body in its bound values) is forwarded, and
/// then both sides of that connection are shut down.
fn proxy(upstream: u16, armed: Arc<AtomicBool>, marker: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut client_r, mut server_w) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (mut server_r, mut client_w) = (server, client);
            let armed = Arc::clone(&armed);
            let cut_client = client_w.try_clone().expect("clone");
            let cut_server = server_w.try_clone().expect("clone");
            // Set once the COMMIT to cut is on its way: nothing more reaches the node.
            let deaf = Arc::new(AtomicBool::new(false));
            let deaf_reader = Arc::clone(&deaf);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut carries_marker = false;
                while let Ok(n) = client_r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let sent = &buf[..n];
                    carries_marker |= sent.windows(marker.len()).any(|w| w == marker);
                    let commit = sent.windows(6).any(|w| w == b"COMMIT");
                    let cut = commit && carries_marker && armed.swap(false, Ordering::SeqCst);
                    if cut {
                        deaf.store(true, Ordering::SeqCst);
                    }
                    if server_w.write_all(sent).is_err() {
                        break;
                    }
                    if cut {
                        // Let the database commit, then cut: its answer never returns.
                        std::thread::sleep(Duration::from_millis(100));
                        let _ = cut_client.shutdown(Shutdown::Both);
                        let _ = cut_server.shutdown(Shutdown::Both);
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = server_r.read(&mut buf) {
                    if n == 0 || deaf_reader.load(Ordering::SeqCst) {
                        break;
                    }
                    if client_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_commit_lost_its_connection_is_stored_once() {
    let cluster = common::postgres::cluster();
    let direct = cluster.database();
    let db = common::postgres::Cluster::name_of(&direct).to_string();
    let armed = Arc::new(AtomicBool::new(false));
    let port = proxy(cluster.port, Arc::clone(&armed), b"second");
    let url = format!("postgres://postgres@127.0.0.1:{port}/{db}");
    let server = Server::options()
        .args(&["--store", &url, "--node-id", "A"])
        .start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let first = alice.send_msg("team", "c1", "first").await;
    assert_eq!(first["seq"], 1, "{first}");
    armed.store(true, Ordering::SeqCst);
    let answer = alice
        .request(json!({"type": "send", "id": "lost", "group": "team",
                         "client_id": "c2", "body": "second"}))
        .await;
    assert!(!armed.load(Ordering::SeqCst), "the proxy cut no COMMIT");
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "storage", "{answer}");
    // The commit did happen: the database holds the message already.
    let count = |db: &str| {
        cluster.psql(
            db,
            "SELECT count(*) FROM kv WHERE tree = 'group:team' AND get_byte(key, 0) = ascii('m')",
        )
    };
    assert_eq!(count(&db), "2");
    // The resend, once the node takes writes again, is the original.
    let started = Instant::now();
    let resent = loop {
        let reply = alice
            .request(json!({"type": "send", "id": "again", "group": "team",
                             "client_id": "c2", "body": "second"}))
            .await;
        if reply["type"] == "sent" {
            break reply;
        }
        assert_eq!(reply["code"], "storage", "{reply}");
        assert!(started.elapsed() < TIMEOUT, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(resent["seq"], 2, "{resent}");
    assert_eq!(resent["duplicate"], true, "{resent}");
    let third = alice.send_msg("team", "c3", "third").await;
    assert_eq!(third["seq"], 3, "{third}");
    assert_eq!(count(&db), "3", "each message once");
    let mut bob = server.connect("bob").await;
    let bodies: Vec<String> = bob
        .sync_all("team", 0)
        .await
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(bodies, ["first", "second", "third"]);
}
