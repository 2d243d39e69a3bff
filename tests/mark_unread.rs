//! Marked unread (docs/PROTOCOL.md §4.4): `mark_unread {group}` sets the user's flag of the group
//! without a reply and without moving a cursor; it shows as `marked_unread: true` in `welcome`
//! and `joined` entries and reaches the user's other sessions as `read_sync {group, seq,
//! marked_unread: true}`; the user's next `read` in that group, at any seq, clears it
//! (`read_sync … marked_unread: false`). The flag is durable like the cursors.

mod common;

use std::time::Duration;

use common::{Client, Server};
use serde_json::{json, Value};

fn start() -> Server {
    Server::start_with(&["--receipt-interval-ms", "100"])
}

fn flag(client: &Client, group: &str) -> Value {
    client
        .welcome_group(group)
        .unwrap_or_else(|| panic!("{group} not in {}", client.welcome))["marked_unread"]
        .clone()
}

fn read_sync(group: &str, seq: u64, marked_unread: Option<bool>) -> Value {
    let mut frame = json!({"type": "read_sync", "group": group, "seq": seq});
    if let Some(marked) = marked_unread {
        frame["marked_unread"] = json!(marked);
    }
    frame
}

/// Asserts that none of these sessions got (or gets within a short wait) a `read_sync`.
async fn no_read_sync(clients: &mut [&mut Client]) {
    for client in clients.iter_mut() {
        client
            .expect_none_of("read_sync", None, Duration::from_millis(200))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_unread_reaches_the_other_sessions_until_the_next_read() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    server.create_group("h", &["alice", "bob"]);
    for i in 1..=3 {
        server.post("g", "alice", &format!("m{i}"));
    }
    server.post("h", "alice", "h1");
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut alice = server.connect("alice").await;
    bob1.read_to("g", 2).await;
    assert_eq!(bob2.recv_type("read_sync").await, read_sync("g", 2, None));

    // Marked: no reply; the other session learns it; no cursor moved.
    bob1.mark_unread("g").await;
    assert_eq!(
        bob2.recv_type("read_sync").await,
        read_sync("g", 2, Some(true))
    );
    no_read_sync(&mut [&mut bob1, &mut alice]).await;
    let member = server.member("g", "bob");
    assert_eq!(
        (member["delivered"].clone(), member["read"].clone()),
        (json!(2), json!(2))
    );
    let mut bob3 = server.connect("bob").await;
    assert_eq!(flag(&bob3, "g"), true, "{}", bob3.welcome);
    let entry = bob3.welcome_group("g").expect("g");
    assert_eq!(
        (entry["read"].clone(), entry["unread"].clone()),
        (json!(2), json!(1)),
        "{entry}"
    );
    assert_eq!(flag(&bob3, "h"), false, "the flag is per group");
    let alice2 = server.connect("alice").await;
    assert_eq!(flag(&alice2, "g"), false, "the flag is per user");

    // Neither an ack nor a read in another group clears it.
    bob2.ack_to("g", 3).await;
    bob2.read_to("h", 1).await;
    for bob in [&mut bob1, &mut bob3] {
        assert_eq!(bob.recv_type("read_sync").await, read_sync("h", 1, None));
    }
    let bob4 = server.connect("bob").await;
    assert_eq!(flag(&bob4, "g"), true, "{}", bob4.welcome);
    drop(bob4);

    // A read that does not move the mark clears it, for the other sessions.
    bob2.read_to("g", 1).await;
    for bob in [&mut bob1, &mut bob3] {
        assert_eq!(
            bob.recv_type("read_sync").await,
            read_sync("g", 2, Some(false))
        );
    }
    no_read_sync(&mut [&mut bob2]).await;
    let bob4 = server.connect("bob").await;
    assert_eq!(flag(&bob4, "g"), false, "{}", bob4.welcome);
    assert_eq!(
        bob4.welcome_group("g").expect("g")["read"],
        2,
        "the stale read moved nothing"
    );
    // With the flag clear, a read at the mark sends nothing.
    bob2.read_to("g", 2).await;
    no_read_sync(&mut [&mut bob1, &mut bob3]).await;

    // Marked again (from another session), then a read that moves the mark clears it.
    bob3.mark_unread("g").await;
    for bob in [&mut bob1, &mut bob2] {
        assert_eq!(
            bob.recv_type("read_sync").await,
            read_sync("g", 2, Some(true))
        );
    }
    bob1.read_to("g", 3).await;
    for bob in [&mut bob2, &mut bob3] {
        assert_eq!(
            bob.recv_type("read_sync").await,
            read_sync("g", 3, Some(false))
        );
    }
    no_read_sync(&mut [&mut bob1, &mut bob2, &mut bob3]).await;
    let bob5 = server.connect("bob").await;
    assert_eq!(flag(&bob5, "g"), false);
    for client in [&bob1, &bob2, &bob3, &alice] {
        client.assert_no_error();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_mark_unread_changes_nothing() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    server.create_group("h", &["mallory"]);
    let mut mallory = server.connect("mallory").await;
    let mut bob = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    mallory
        .expect_error(
            json!({"type": "mark_unread", "id": 3, "group": "g"}),
            "not_member",
        )
        .await;
    bob.expect_error(
        json!({"type": "mark_unread", "group": "nope"}),
        "no_such_group",
    )
    .await;
    for frame in [
        json!({"type": "mark_unread"}),
        json!({"type": "mark_unread", "group": 5}),
    ] {
        bob.expect_error(frame, "bad_frame").await;
    }
    mallory.ping().await;
    bob.ping().await;
    no_read_sync(&mut [&mut bob2]).await;
    let bob3 = server.connect("bob").await;
    assert_eq!(flag(&bob3, "g"), false, "{}", bob3.welcome);
    let alice = server.connect("alice").await;
    assert_eq!(flag(&alice, "g"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_unread_survives_restarts_like_the_cursors() {
    let mut server = start();
    server.create_group("g", &["alice", "bob", "carol"]);
    server.create_group("h", &["bob"]);
    let mut alice = server.connect("alice").await;
    alice.send_msg("g", "a1", "x").await;
    let mut bob = server.connect("bob").await;
    bob.read_to("g", 1).await;
    bob.mark_unread("g").await;
    // The next receipt tick writes what the group received before it: carol's ack, after the
    // flag, shows in a receipt only once that tick is durable.
    let mut carol = server.connect("carol").await;
    carol.ack_to("g", 1).await;
    alice
        .recv_where("a receipt counting carol", |f| {
            f["type"] == "receipt" && f["items"][0]["delivered"] == 2
        })
        .await;
    drop((alice, bob, carol));
    server.restart();
    let mut bob = server.connect("bob").await;
    assert_eq!(flag(&bob, "g"), true, "lost in kill -9: {}", bob.welcome);
    assert_eq!(flag(&bob, "h"), false);
    assert_eq!(bob.welcome_group("g").expect("g")["read"], 1);

    // Cleared, then a graceful stop: stays clear. Marked, then a graceful stop: stays marked.
    bob.read_to("g", 1).await;
    drop(bob);
    server.graceful_restart();
    let mut bob = server.connect("bob").await;
    assert_eq!(
        flag(&bob, "g"),
        false,
        "the clearing read was lost: {}",
        bob.welcome
    );
    bob.mark_unread("g").await;
    drop(bob);
    server.graceful_restart();
    let bob = server.connect("bob").await;
    assert_eq!(
        flag(&bob, "g"),
        true,
        "lost in a graceful stop: {}",
        bob.welcome
    );
}
