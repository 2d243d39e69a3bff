//! Delivery and read cursors: `ack` and `read` only move forward, `read` implies delivery, a seq
//! beyond the group's end is refused, and cursors survive a crash.

mod common;

use common::Server;
use serde_json::json;

/// A group "team" with alice and bob where alice has written `n` messages; returns alice online.
async fn team_with_messages(server: &Server, n: u64) -> common::Client {
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=n {
        alice
            .send_json(json!({"type": "send", "group": "team", "client_id": format!("c{i}"), "body": format!("m{i}")}))
            .await;
    }
    for _ in 0..n {
        alice.recv_type("sent").await;
    }
    alice
}

fn cursors(server: &Server, user: &str) -> (u64, u64) {
    let member = server.member("team", user);
    (
        member["delivered"].as_u64().expect("delivered"),
        member["read"].as_u64().expect("read"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_only_move_forward_and_survive_a_crash() {
    let mut server = Server::start_with(&["--receipt-interval-ms", "200"]);
    let mut alice = team_with_messages(&server, 12).await;
    let mut bob = server.connect("bob").await;

    bob.send_json(json!({"type": "ack", "id": "a10", "group": "team", "seq": 10}))
        .await;
    bob.send_json(json!({"type": "ack", "id": "a5", "group": "team", "seq": 5}))
        .await;
    bob.send_json(json!({"type": "read", "id": "r7", "group": "team", "seq": 7}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error(); // a lower ack is ignored, not refused

    assert_eq!(cursors(&server, "bob"), (10, 7), "{}", server.group("team"));
    let group = server.group("team");
    assert_eq!(group["last_seq"], 12);

    // Receipts are pushed only after the cursors behind them are durable: once alice (the
    // sender) sees bob's read of 7 (his last move, after the ack of 10), the server may crash.
    alice
        .recv_where("a receipt showing bob's read of 7", |f| {
            f["type"] == "receipt"
                && f["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["seq"] == 7 && i["read"] == 1))
        })
        .await;
    alice.send_msg("team", "after-cursors", "m13").await;
    server.restart();

    assert_eq!(
        cursors(&server, "bob"),
        (10, 7),
        "cursors lost in the crash"
    );
    let bob = server.connect("bob").await;
    let summary = bob.welcome_group("team").expect("team in welcome");
    assert_eq!(summary["delivered"], 10, "{summary}");
    assert_eq!(summary["read"], 7, "{summary}");
    assert_eq!(summary["last_seq"], 13, "{summary}");
    assert_eq!(summary["unread"], 6, "alice's 8..=13 are unread: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_implies_delivered() {
    let server = Server::start();
    let _alice = team_with_messages(&server, 6).await;
    let mut bob = server.connect("bob").await;

    bob.send_json(json!({"type": "read", "group": "team", "seq": 5}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    assert_eq!(cursors(&server, "bob"), (5, 5));

    // Reading backwards is ignored; acking below the read mark too.
    bob.send_json(json!({"type": "read", "group": "team", "seq": 2}))
        .await;
    bob.send_json(json!({"type": "ack", "group": "team", "seq": 3}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    assert_eq!(cursors(&server, "bob"), (5, 5));

    // Delivery may run ahead of reading.
    bob.send_json(json!({"type": "ack", "group": "team", "seq": 6}))
        .await;
    bob.barrier("team").await;
    assert_eq!(cursors(&server, "bob"), (6, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_beyond_last_seq_is_refused_and_changes_nothing() {
    let server = Server::start();
    let _alice = team_with_messages(&server, 3).await;
    let mut bob = server.connect("bob").await;
    bob.send_json(json!({"type": "ack", "group": "team", "seq": 1}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();

    let err = bob
        .expect_error(
            json!({"type": "read", "id": 41, "group": "team", "seq": 4}),
            "invalid_seq",
        )
        .await;
    assert_eq!(err["id"], 41);
    let err = bob
        .expect_error(
            json!({"type": "ack", "id": "big", "group": "team", "seq": 1000}),
            "invalid_seq",
        )
        .await;
    assert_eq!(err["id"], "big");
    assert_eq!(
        cursors(&server, "bob"),
        (1, 0),
        "a refused cursor must change nothing"
    );

    // The session still works, and the refused values were not half-applied.
    bob.ping().await;
    bob.send_json(json!({"type": "read", "group": "team", "seq": 3}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    assert_eq!(cursors(&server, "bob"), (3, 3));
}
