//! PostgreSQL going away under load: the database server is stopped at once (`pg_ctl -m
//! immediate`, like a crash of it) while clients send, and started again. Meanwhile writes are
//! answered `storage`; the node is never restarted, reconnects by itself, and every send that
//! was acknowledged, before, during or after, is stored exactly once at its seq, gapless.
//!
//! Its own test binary: it stops the cluster that every test of its process shares.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rust_client::config;
use common::{Server, TIMEOUT};
use rollcall::client::{Client, ClientError};
use rollcall::protocol::ErrorCode;

/// body → acknowledged seq, and how many `storage` answers the senders got.
#[derive(Default)]
struct Seen {
    acked: BTreeMap<String, u64>,
    storage: usize,
}

async fn sender(client: Client, user: &'static str, n: usize, seen: Arc<Mutex<Seen>>) {
    for i in 0..n {
        let body = format!("{user}-{i}");
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < 2 * TIMEOUT,
                "{body}: never acknowledged"
            );
            match tokio::time::timeout(TIMEOUT, client.send_with_client_id("team", &body, &body))
                .await
            {
                Ok(Ok(sent)) => {
                    seen.lock()
                        .expect("seen")
                        .acked
                        .insert(body.clone(), sent.seq);
                    break;
                }
                Ok(Err(ClientError::Server {
                    code: ErrorCode::Storage,
                    ..
                })) => {
                    seen.lock().expect("seen").storage += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => panic!("{body}: {e}"),
                Err(_) => panic!("{body}: no answer within {TIMEOUT:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_storage_while_the_database_is_down_and_resume_by_themselves() {
    let cluster = common::postgres::cluster();
    let url = cluster.database();
    let server = Server::options()
        .args(&["--store", &url, "--node-id", "A"])
        .start();
    let pid = server.pid();
    server.create_group("team", &["alice", "bob", "carol"]);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    const N: usize = 150;
    let mut senders = Vec::new();
    for user in ["alice", "bob"] {
        let client = Client::connect(config(&server, user))
            .await
            .expect("connecting");
        senders.push(tokio::spawn(sender(client, user, N, Arc::clone(&seen))));
    }
    // Some traffic first, then the database goes away under it.
    let started = Instant::now();
    while seen.lock().expect("seen").acked.len() < 40 {
        assert!(started.elapsed() < TIMEOUT, "no traffic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut carol = server.connect("carol").await;
    tokio::task::block_in_place(|| cluster.stop());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A new write is refused at once, and nothing of it is stored (its seq is not taken).
    let refused = carol
        .expect_error(
            serde_json::json!({"type": "send", "id": "down", "group": "team",
                               "client_id": "carol-down", "body": "while down"}),
            "storage",
        )
        .await;
    assert!(refused["message"].is_string(), "{refused}");
    tokio::task::block_in_place(|| {
        cluster.start_again();
        cluster.wait_ready();
    });
    for sender in senders {
        sender.await.expect("a sender panicked");
    }
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    assert!(
        server.log().contains("flush failed; answering"),
        "the sends waiting for the failed commits were answered `storage`"
    );
    assert_eq!(server.pid(), pid, "the node was never restarted");
    assert!(
        server.log().contains("PostgreSQL answers again"),
        "{}",
        server.log_tail()
    );

    let mut reader = server.connect("carol").await;
    let messages = reader.sync_all("team", 0).await;
    let mut by_body: HashMap<String, Vec<u64>> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let seq = message["seq"].as_u64().expect("seq");
        assert_eq!(seq, i as u64 + 1, "gapless, each seq once");
        by_body
            .entry(message["body"].as_str().expect("body").to_string())
            .or_default()
            .push(seq);
    }
    assert_eq!(seen.acked.len(), 2 * N);
    for (body, seq) in &seen.acked {
        assert_eq!(
            by_body.get(body),
            Some(&vec![*seq]),
            "{body} once, at {seq}"
        );
    }
    // A send answered `storage` whose commit had in fact gone through is there once (its
    // resend was answered with the original seq); one that had not was stored by its resend.
    assert_eq!(
        messages.len(),
        seen.acked.len(),
        "nothing stored twice or unsent"
    );
    eprintln!(
        "{} `storage` answers reached the senders (the client resends the rest by itself); all {} stored once",
        seen.storage,
        messages.len()
    );
}
