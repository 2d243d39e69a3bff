//! Abuse limits and hostile frames: the per-session send rate (`rate_limited`), the cap on
//! sessions per user (`too_many_sessions`), frames over `--max-frame-bytes`, text frames that are
//! not UTF-8 and binary frames. Each refusal is an error frame or status, the session goes on,
//! other sessions are unaffected, and nothing is stored.

mod common;

use std::time::Duration;

use common::{raw_ws_upgrade, seq, token, Client, Server};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_the_rate_are_rate_limited_and_not_stored() {
    let server = Server::start_with(&["--send-rate", "2", "--send-burst", "3"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    // Four sends written back to back: the burst of three passes, the fourth is refused with a
    // retry hint (2/s refills a token within 500 ms).
    for n in 1..=4 {
        let client_id = format!("a{n}");
        alice
            .send_json(json!({"type": "send", "id": n, "group": "team", "client_id": client_id, "body": "hi"}))
            .await;
    }
    let mut retry = None;
    for _ in 0..4 {
        let reply = alice
            .recv_where("sent or error", |f| {
                f["type"] == "sent" || f["type"] == "error"
            })
            .await;
        if reply["type"] == "sent" {
            assert_eq!(reply["seq"], reply["id"], "{reply}");
        } else {
            assert_eq!(reply["code"], "rate_limited", "{reply}");
            assert_eq!(reply["id"], 4, "{reply}");
            retry = reply["retry_after_ms"].as_u64();
        }
    }
    let retry = retry.expect("the fourth send was refused with retry_after_ms");
    assert!(retry > 0 && retry <= 500, "{retry} ms");
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

/// A raw WebSocket connection, for frames no client library would write.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16, user: &str) -> Raw {
        let (stream, buf) = raw_ws_upgrade(port, &token(user)).await;
        Raw { stream, buf }
    }

    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("writing");
    }

    /// The next text frame from the server as JSON, or `None` if none comes within `wait`.
    async fn next_json(&mut self, wait: Duration) -> Option<serde_json::Value> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 2 {
                let (header, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes")) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    short => (2, short as usize),
                };
                if header != usize::MAX && self.buf.len() >= header + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload: Vec<u8> = self.buf.drain(..header + len).skip(header).collect();
                    if opcode == 1 {
                        return Some(serde_json::from_slice(&payload).expect("JSON text"));
                    }
                    continue; // pings and the like
                }
            }
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

/// A masked client text frame header announcing `len` payload bytes.
fn header_announcing(len: u64) -> Vec<u8> {
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_giant_frames_are_answered_once_and_never_buffered() {
    let server = Server::start_with(&["--max-frame-bytes", "65536"]);
    server.create_group("team", &["alice", "bob"]);

    // A length with the top bit set: one too_large, not a loop of them.
    let mut raw = Raw::connect(server.port, "alice").await;
    assert_eq!(
        raw.next_json(Duration::from_secs(5))
            .await
            .expect("welcome")["type"],
        "welcome"
    );
    raw.write(&header_announcing(u64::MAX)).await;
    let err = raw
        .next_json(Duration::from_secs(5))
        .await
        .expect("an error");
    assert_eq!(err["code"], "too_large", "{err}");
    assert!(
        raw.next_json(Duration::from_millis(500)).await.is_none(),
        "exactly one error for one frame"
    );

    // A 1 TiB frame streamed for 256 MiB: skipped as it arrives, so memory stays flat.
    let pid = server.pid().expect("running");
    let before = rss_bytes(pid);
    let mut raw = Raw::connect(server.port, "bob").await;
    raw.next_json(Duration::from_secs(5))
        .await
        .expect("welcome");
    raw.write(&header_announcing(1 << 40)).await;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        raw.write(&zeros).await;
    }
    let err = raw
        .next_json(Duration::from_secs(5))
        .await
        .expect("an error");
    assert_eq!(err["code"], "too_large", "{err}");
    let grown = rss_bytes(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "the server grew by {grown} bytes while 256 MiB of an oversized frame arrived"
    );

    // The server serves everyone else as before.
    let mut alice = server.connect("alice").await;
    assert_eq!(seq(&alice.send_msg("team", "after", "still fine").await), 1);
}
