//! Graceful shutdown: on SIGTERM or SIGINT the server stops accepting connections, closes every
//! WebSocket with close code 1001 (`going away`), writes the cursors, flushes and exits with
//! status 0 within the documented bound (5 s); everything acknowledged before the signal is
//! there after a restart, and cursor moves are kept even when no receipt tick wrote them.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{seq, seqs, Server, WireEnd, TIMEOUT};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The shutdown bound documented in README.md (*Operations*) and PROTOCOL.md (close codes).
const BOUND: Duration = Duration::from_secs(5);

fn send_frame(i: u64) -> serde_json::Value {
    json!({"type": "send", "group": "team", "client_id": format!("c{i}"), "body": format!("b{i}")})
}

/// What a new connection attempt during shutdown got.
#[derive(Debug, PartialEq)]
enum Attempt {
    /// The TCP connection or the upgrade failed: nobody accepts any more.
    Refused,
    /// A session was opened but closed at once with 1001 (accepted in the instant before the
    /// listener closed).
    ClosedAtOnce,
}

/// Tries to open a WebSocket session while the server is shutting down. Panics if a session
/// is opened and served (anything but an immediate 1001 close).
async fn connect_during_shutdown(server: &Server, user: &str) -> Attempt {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.ws_url().as_str(),
        )
        .expect("a request");
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", common::token(user))
            .parse()
            .expect("a header"),
    );
    let Ok(Ok((mut ws, _))) =
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request)).await
    else {
        return Attempt::Refused;
    };
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Err(_) => panic!("a session opened during shutdown stayed open"),
            Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1001 => {
                return Attempt::ClosedAtOnce
            }
            Ok(Some(Ok(Message::Text(text)))) if text.contains("\"welcome\"") => {}
            Ok(None) | Ok(Some(Err(_))) => return Attempt::Refused,
            Ok(other) => panic!("a session opened during shutdown got {other:?}"),
        }
    }
}

/// The scenario of both signals: acknowledged sends and cursor moves before the signal, more
/// sends in flight when it arrives; every session closed with 1001, exit 0 within the bound,
/// nothing acknowledged lost after the restart, and the unanswered sends resend cleanly.
async fn graceful_stop_keeps_everything(signal: &str) {
    // A receipt tick far away: only the shutdown can have written bob's cursor moves.
    let mut server = Server::start_with(&["--receipt-interval-ms", "600000"]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let carol = server.connect("carol").await; // connected, idle

    let mut acked: BTreeMap<u64, u64> = BTreeMap::new(); // i -> seq
    for i in 1..=20 {
        let sent = alice
            .send_msg("team", &format!("c{i}"), &format!("b{i}"))
            .await;
        acked.insert(i, seq(&sent));
    }
    bob.send_json(json!({"type": "ack", "group": "team", "seq": 20}))
        .await;
    bob.send_json(json!({"type": "read", "group": "team", "seq": 15}))
        .await;
    // A round trip after the moves: bob's session has read them and passed them to the group
    // (which takes them long before the shutdown asks it to write its cursors).
    bob.barrier("team").await;
    for i in 21..=50 {
        alice.send_json(send_frame(i)).await;
    }
    let signalled = Instant::now();
    server.signal(signal);

    // alice's sends answered before the close count as acknowledged; then 1001.
    let end = loop {
        match alice.read_wire(TIMEOUT).await {
            Ok(frame) if frame["type"] == "sent" => {
                let i: u64 = frame["client_id"].as_str().expect("client_id")[1..]
                    .parse()
                    .expect("c<i>");
                acked.insert(i, seq(&frame));
            }
            Ok(frame) => assert_ne!(frame["type"], "error", "{frame}"),
            Err(end) => break end,
        }
    };
    assert!(
        matches!(end, WireEnd::Closed(Some(1001))),
        "alice's session should be closed with 1001 (going away) on {signal}, got {end:?}"
    );
    for mut client in [bob, carol] {
        let end = client.expect_closed().await;
        assert!(
            matches!(end, WireEnd::Closed(Some(1001))),
            "{}'s session should be closed with 1001 on {signal}, got {end:?}",
            client.user
        );
    }
    let attempt = connect_during_shutdown(&server, "alice").await;
    eprintln!("a connection attempt after the close frames: {attempt:?}");

    let status = server
        .wait_exit(BOUND.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("the server still runs {BOUND:?} after {signal}"));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status after {signal}: {status}");
    eprintln!(
        "{signal}: exited 0 after {took:?}, {} of 50 sends acknowledged",
        acked.len()
    );
    assert_eq!(
        connect_during_shutdown(&server, "alice").await,
        Attempt::Refused,
        "connections must be refused after the server exited"
    );

    server.restart(); // (it is not running: this just starts it again on the same data)
    let mut bob = server.connect("bob").await;
    let team = bob.welcome_group("team").expect("team in welcome").clone();
    assert_eq!(
        (team["delivered"].as_u64(), team["read"].as_u64()),
        (Some(20), Some(15)),
        "bob's cursor moves before {signal} were not written by the shutdown: {team}"
    );
    let stored = bob.sync_all("team", 0).await;
    let n_stored = stored.len() as u64;
    assert_eq!(
        seqs(&stored),
        (1..=n_stored).collect::<Vec<_>>(),
        "gaps after {signal}"
    );
    let stored_at: BTreeMap<String, u64> = stored
        .iter()
        .map(|m| {
            (
                m["client_id"].as_str().expect("client_id").to_string(),
                seq(m),
            )
        })
        .collect();
    assert_eq!(stored_at.len() as u64, n_stored, "a client_id stored twice");
    for (i, s) in &acked {
        assert_eq!(
            stored_at.get(&format!("c{i}")),
            Some(s),
            "c{i} was acknowledged as seq {s} before {signal}, then lost or moved"
        );
    }

    // The sends alice never got an answer for: resent, each is either recognised (stored
    // before the stop) or stored now, in order.
    let mut alice = server.connect("alice").await;
    for i in 21..=50 {
        if acked.contains_key(&i) {
            continue;
        }
        let sent = alice
            .send_msg("team", &format!("c{i}"), &format!("b{i}"))
            .await;
        match stored_at.get(&format!("c{i}")) {
            Some(&s) => {
                assert_eq!(sent["duplicate"], true, "{sent}");
                assert_eq!(seq(&sent), s);
            }
            None => assert_eq!(sent["duplicate"], false, "{sent}"),
        }
    }
    let all = alice.sync_all("team", 0).await;
    assert_eq!(seqs(&all), (1..=50).collect::<Vec<_>>());
    for (n, message) in all.iter().enumerate() {
        assert_eq!(message["client_id"], format!("c{}", n + 1), "out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001_keeps_everything_and_exits_0() {
    graceful_stop_keeps_everything("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_closes_sessions_with_1001_keeps_everything_and_exits_0() {
    graceful_stop_keeps_everything("INT").await;
}

/// A client that stopped reading cannot take its close frame; it may hold the shutdown up to
/// the bound, never longer. Meanwhile the listener is closed: new connections are refused
/// although the process still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_delays_the_exit_at_most_the_bound() {
    // A queue large enough that bob is not evicted: his pushes pile up behind a full socket.
    let mut server = Server::start_with(&["--session-queue", "100000"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let _bob = server.connect("bob").await; // never reads again

    // ~19 MB of pushes to bob: more than the socket buffers of both ends hold.
    let body = "x".repeat(64_000);
    alice.send_in_windows("team", 50 * 6, 6, &body).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let end = alice.expect_closed().await;
    assert!(
        matches!(end, WireEnd::Closed(Some(1001))),
        "a reading client is closed with 1001, got {end:?}"
    );
    // bob's connection keeps a worker busy, so the process is still there: but it no longer
    // accepts connections.
    let attempt = connect_during_shutdown(&server, "alice").await;
    let alive = server.is_running();
    eprintln!("while bob holds the shutdown: alive {alive}, a new connection: {attempt:?}");
    assert!(
        alive,
        "expected the stuck reader to hold the shutdown for a while (test premise)"
    );
    assert_eq!(
        attempt,
        Attempt::Refused,
        "the listener should be closed by now"
    );

    let status = server
        .wait_exit(BOUND.saturating_sub(signalled.elapsed()))
        .unwrap_or_else(|| panic!("a client that stopped reading kept the server past {BOUND:?}"));
    assert!(status.success(), "exit status: {status}");
    eprintln!("exited 0 after {:?}", signalled.elapsed());

    server.restart();
    assert_eq!(server.group("team")["last_seq"], 300);
}
