//! Abuse limits and hostile frames: the per-session send rate (`rate_limited`), the cap on
//! sessions per user (`too_many_sessions`), frames over `--max-frame-bytes`, text frames that are
//! not UTF-8 and binary frames. Each refusal is an error frame or status, the session goes on,
//! other sessions are unaffected, and nothing is stored.

mod common;

use std::time::Duration;

use common::{seq, token, Client, Server};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_the_rate_are_rate_limited_and_not_stored() {
    let server = Server::start_with(&["--send-rate", "5", "--send-burst", "3"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    // The burst passes ...
    for n in 1..=3 {
        let sent = alice.send_msg("team", &format!("a{n}"), "hi").await;
        assert_eq!(seq(&sent), n);
    }
    // ... the next send, at once, is refused with a retry hint.
    let err = alice
        .expect_error(
            json!({"type": "send", "group": "team", "client_id": "a4", "body": "hi"}),
            "rate_limited",
        )
        .await;
    let retry = err["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        retry > 0 && retry <= 200,
        "5/s refills a token within 200 ms: {err}"
    );
    // The session is still usable, and another user's sends are not limited by alice's bucket.
    alice.ping().await;
    assert_eq!(seq(&bob.send_msg("team", "b1", "me too").await), 4);

    // After the hint, the same send goes through, under the next seq: the refused one left no hole.
    tokio::time::sleep(Duration::from_millis(retry + 20)).await;
    let sent = alice.send_msg("team", "a4", "hi").await;
    assert_eq!(seq(&sent), 5);
    assert_eq!(sent["duplicate"], false);
    let stored: Vec<String> = alice
        .sync_all("team", 0)
        .await
        .iter()
        .map(|m| m["client_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(stored, ["a1", "a2", "a3", "b1", "a4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_capped() {
    let server = Server::start_with(&["--max-sessions-per-user", "2"]);
    server.create_group("team", &["alice", "bob"]);
    let first = server.connect("alice").await;
    let mut second = server.connect("alice").await;

    let url = server.ws_url();
    let refused = Client::try_connect(&url, Some(&token("alice"))).await;
    assert_eq!(refused.err(), Some(429), "a third session of alice");
    // The refusal is the documented JSON error.
    let response = ureq::get(&server.url("/ws"))
        .set("Authorization", &format!("Bearer {}", token("alice")))
        .set("Connection", "Upgrade")
        .set("Upgrade", "websocket")
        .set("Sec-WebSocket-Version", "13")
        .set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .call();
    let Err(ureq::Error::Status(429, response)) = response else {
        panic!("expected HTTP 429, got {response:?}");
    };
    let body: serde_json::Value = response.into_json().expect("a JSON error body");
    assert_eq!(common::http_error_code(&body), "too_many_sessions");

    // Other users are not affected, and alice's open sessions work.
    let mut bob = server.connect("bob").await;
    bob.send_msg("team", "b1", "hello").await;
    assert_eq!(second.recv_msg("team").await["body"], "hello");

    // Closing one frees its place.
    drop(first);
    let mut third = None;
    for _ in 0..100 {
        if let Ok(client) = Client::try_connect(&url, Some(&token("alice"))).await {
            third = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut third = third.expect("a place frees up once a session closes");
    third.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_get_errors_and_the_session_survives() {
    let server = Server::start_with(&["--max-frame-bytes", "4096", "--max-body-bytes", "1024"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.send_msg("team", "seed", "seed").await;

    // A frame over --max-frame-bytes: dropped whole, too_large, then the next frame is read.
    let big = format!(
        r#"{{"type":"send","group":"team","client_id":"big","body":"{}"}}"#,
        "x".repeat(5000)
    );
    alice.send_text(&big).await;
    assert_eq!(alice.recv_type("error").await["code"], "too_large");
    alice.ping().await;

    // A body over --max-body-bytes inside a frame under the frame limit: too_large, with its id.
    alice
        .expect_error(
            json!({"type": "send", "id": 2, "group": "team", "client_id": "body", "body": "y".repeat(2000)}),
            "too_large",
        )
        .await;

    // A text frame that is not UTF-8.
    let invalid = vec![b'{', 0xff, 0xfe, b'}'];
    alice
        .send_message(Message::Frame(Frame::message(
            invalid,
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    let err = alice.recv_type("error").await;
    assert_eq!(err["code"], "bad_frame", "{err}");
    alice.ping().await;

    // A binary frame.
    alice
        .send_message(Message::binary(br#"{"type":"ping"}"#.to_vec()))
        .await;
    assert_eq!(alice.recv_type("error").await["code"], "bad_frame");
    alice.ping().await;

    // Nothing was stored, and both sessions go on.
    bob.send_msg("team", "b1", "after").await;
    let all = alice.sync_all("team", 0).await;
    let ids: Vec<&str> = all.iter().filter_map(|m| m["client_id"].as_str()).collect();
    assert_eq!(ids, ["seed", "b1"]);
    assert_eq!(seq(&alice.recv_msg("team").await), 1);
    assert_eq!(seq(&alice.recv_msg("team").await), 2);
    alice.assert_no_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_rides_out_the_rate_limit_without_losing_or_repeating_a_send() {
    let server = Server::start_with(&["--send-rate", "50", "--send-burst", "5"]);
    server.create_group("team", &["alice"]);
    let mut config = rollcall::client::ClientConfig::new(server.ws_url(), token("alice"));
    config.ack_interval = Duration::from_millis(20);
    let client = rollcall::client::Client::connect(config)
        .await
        .expect("connecting");
    // 40 sends at once: most are refused with rate_limited at first and retried by the client.
    let sends = (0..40).map(|n| {
        let client = &client;
        async move {
            client
                .send_with_client_id("team", &format!("c{n}"), "burst")
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    let mut seqs: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("every send is eventually accepted").seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<u64>>(),
        "each stored once, no gap"
    );
    let refused = server.metric(r#"rollcall_frames_out_total{type="error"}"#);
    assert!(refused > 0, "the limit was hit (so the retry path ran)");
}
