//! The Rust client (`rollcall::client`) given several server URLs (`ClientConfig::fallback_urls`):
//! past a dead URL and a standby's `503` to the node that accepts it, on to the next URL when its
//! node is killed or steps down with 1012, and without hammering a list that refuses it.
//!
//! The two real servers here share the harness's JWT secret but not their data (each has the same
//! users and group, seeded through its admin API); a standby and a node that steps down are
//! played by small fakes (`fake_node`), since the server itself has no standby role here.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::rust_client::{config, connect, next_event};
use common::{Server, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use rollcall::client::{Client, ClientConfig, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A WebSocket URL on which nothing listens (the port was bound and released).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let port = listener.local_addr().expect("its address").port();
    drop(listener);
    format!("ws://127.0.0.1:{port}/ws")
}

/// What a [`fake_node`] does with a connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Every upgrade is answered `503` with `Retry-After: 1`, as a standby answers.
    Standby,
    /// The first session gets a `welcome` (no groups) and is then closed with 1012, as an
    /// active node that steps down closes its sessions; later upgrades are answered as a
    /// standby answers.
    StepsDown,
}

/// A fake node on 127.0.0.1:0: its WebSocket URL and the number of connections it has taken.
async fn fake_node(behaviour: Fake) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let port = listener.local_addr().expect("its address").port();
    let n_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n_connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            if matches!(behaviour, Fake::StepsDown) && n == 0 {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let welcome = r#"{"type":"welcome","user":"alice","groups":[]}"#;
                    let _ = ws.send(WsMessage::text(welcome)).await;
                    let close = CloseFrame {
                        code: CloseCode::Restart,
                        reason: "now a standby".into(),
                    };
                    let _ = ws.send(WsMessage::Close(Some(close))).await;
                    // Let the client read the close before the socket goes.
                    while let Some(Ok(_)) = ws.next().await {}
                });
                continue;
            }
            tokio::spawn(async move {
                // The request is not read: the answer is the same whatever it asked.
                let answer = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
                              Content-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("ws://127.0.0.1:{port}/ws"), n_connections)
}

/// A server with users alice and bob and the group `team` of both.
fn seeded_server() -> Server {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server
}

/// `base` (a [`config`] for alice) with its URL replaced by `urls`, in order.
fn with_urls(base: ClientConfig, urls: &[String]) -> ClientConfig {
    let mut config = base;
    config.url = urls[0].clone();
    config.with_fallback_urls(urls[1..].iter().cloned())
}

/// Takes events until the client is connected (again) to `url`, within `TIMEOUT`.
async fn until_connected_to(client: &Client, url: &str) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not connected to {url} within {TIMEOUT:?} (at {})",
                    client.url()
                )
            })
            .expect("the client closed");
        if matches!(event, Event::Connected { .. }) && client.url() == url {
            return;
        }
    }
}

/// Sends through alice's client to `team` and has bob, on a raw session of `server`, receive it.
async fn send_is_answered_and_pushed(alice: &Client, server: &Server, body: &str) {
    let mut bob = server.connect("bob").await;
    let sent = tokio::time::timeout(TIMEOUT, alice.send("team", body))
        .await
        .expect("no sent in time")
        .expect("the send failed");
    let pushed = bob.recv_msg("team").await;
    assert_eq!(pushed["seq"], sent.seq, "{pushed}");
    assert_eq!(pushed["body"], body, "{pushed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connect_passes_a_dead_url_and_a_standby() {
    let live = seeded_server();
    let (standby, _) = fake_node(Fake::Standby).await;
    let urls = [dead_url(), standby, live.ws_url()];
    let alice = connect(with_urls(config(&live, "alice"), &urls)).await;
    assert_eq!(alice.url(), live.ws_url());
    assert!(alice.is_connected());
    send_is_answered_and_pushed(&alice, &live, "found you").await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_replaced_by_the_next_url() {
    let mut a = seeded_server();
    let b = seeded_server();
    let urls = [a.ws_url(), b.ws_url()];
    let alice = connect(with_urls(config(&a, "alice"), &urls)).await;
    assert_eq!(alice.url(), a.ws_url());
    send_is_answered_and_pushed(&alice, &a, "on a").await;

    tokio::task::block_in_place(|| a.kill9());
    until_connected_to(&alice, &b.ws_url()).await;
    assert!(alice.is_connected());
    // B has its own data: this is its first message of `team`, and bob there gets it.
    send_is_answered_and_pushed(&alice, &b, "on b").await;
    // And what bob sends on B reaches alice.
    let mut bob = b.connect("bob").await;
    let from_bob = bob.send_msg("team", "bob-1", "from bob on b").await;
    loop {
        match next_event(&alice).await {
            Event::Message(m) if m.from == "bob" => {
                assert_eq!(m.body, "from bob on b");
                assert_eq!(m.seq, from_bob["seq"], "{from_bob}");
                break;
            }
            _ => {}
        }
    }
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_1012_moves_to_the_next_url() {
    let live = seeded_server();
    let (stepping_down, _) = fake_node(Fake::StepsDown).await;
    let urls = [stepping_down.clone(), live.ws_url()];
    // The fake node accepts the first session (its welcome lists no groups) ...
    let alice = connect(with_urls(config(&live, "alice"), &urls)).await;
    // ... and closes it with 1012 at once: the client goes on to the live server.
    until_connected_to(&alice, &live.ws_url()).await;
    send_is_answered_and_pushed(&alice, &live, "after the step-down").await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_refuses_is_tried_once_a_round_honouring_retry_after() {
    let mut a = seeded_server();
    let (standby, n_standby_connections) = fake_node(Fake::Standby).await;
    let urls = [a.ws_url(), standby];
    let alice = connect(with_urls(config(&a, "alice"), &urls)).await;

    // A is gone and the standby answers 503 with Retry-After: 1. With the 50 ms reconnect delay
    // alone the client would try about 30 rounds in 1.5 s; the standby's ask makes it 2.
    tokio::task::block_in_place(|| a.kill9());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = n_standby_connections.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&n),
        "the standby was tried {n} times in 1.5 s"
    );

    // A comes back on its port: the client finds it again and works.
    tokio::task::block_in_place(|| a.restart_on_same_port());
    until_connected_to(&alice, &a.ws_url()).await;
    send_is_answered_and_pushed(&alice, &a, "back on a").await;
    alice.close().await;
}
