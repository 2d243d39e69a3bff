//! Retention (docs/PROTOCOL.md §3.7): messages older than a group's retention are pruned in the
//! background, the newest is kept, `first_seq` says where the history starts now, seqs stay
//! gapless above it, and unread counts and receipts never count a pruned message.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{json, Value};

/// Polls `probe` until it yields `Some`, for at most `within`.
async fn eventually<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_pruned_and_never_counted() {
    let server = Server::start_with(&["--retention-secs", "2", "--prune-interval-secs", "1"]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=5 {
        alice
            .send_msg("team", &format!("old{i}"), &format!("old {i}"))
            .await;
    }
    // carol reads two of the old ones (her cursor stays below the new first_seq).
    let mut carol = server.connect("carol").await;
    carol
        .send_json(json!({"type": "read", "group": "team", "seq": 2}))
        .await;
    carol.ping().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    alice.send_msg("team", "new1", "new 1").await;
    alice.send_msg("team", "new2", "new 2").await;

    // The five old ones go within about a prune interval; the two new ones stay.
    let group = eventually(Duration::from_secs(10), "first_seq 6", || {
        let group = server.admin_expect("GET", "/api/groups/team", None, 200);
        (group["first_seq"] == 6).then_some(group)
    })
    .await;
    assert_eq!(group["last_seq"], 7, "{group}");
    assert_eq!(
        group["retention_secs"], 2,
        "the server's retention applies: {group}"
    );
    assert!(server.metric("rollcall_messages_pruned_total") >= 5);

    // sync from the start answers from first_seq; history stops there; both say where.
    let page = alice.sync_page("team", 0, 100).await;
    assert_eq!(
        seqs(page["messages"].as_array().expect("messages")),
        [6, 7],
        "{page}"
    );
    assert_eq!(page["first_seq"], 6, "{page}");
    let history = alice
        .request(json!({"type": "history", "group": "team", "limit": 100}))
        .await;
    assert_eq!(
        seqs(history["messages"].as_array().expect("messages")),
        [6, 7]
    );
    assert_eq!(history["more"], false, "{history}");

    // Unread counts only what is kept: bob never read anything, carol read up to 2.
    let bob = server.connect("bob").await;
    let summary = bob.welcome_group("team").expect("team in welcome").clone();
    assert_eq!(summary["first_seq"], 6, "{summary}");
    assert_eq!(
        summary["unread"], 2,
        "two kept messages, not seven: {summary}"
    );
    assert_eq!(bob.welcome["unread_total"], 2, "{}", bob.welcome);
    drop(carol);
    let carol = server.connect("carol").await;
    assert_eq!(carol.welcome_group("team").expect("team")["unread"], 2);

    // Receipts leave pruned seqs out; readers refuse them.
    let receipts = alice
        .request(json!({"type": "receipts", "group": "team", "seqs": [1, 6]}))
        .await;
    let items = receipts["items"].as_array().expect("items");
    assert_eq!(seqs(items), [6], "a pruned seq has no receipts: {receipts}");
    alice
        .expect_error(
            json!({"type": "readers", "group": "team", "seq": 2}),
            "invalid_seq",
        )
        .await;
    let mine = alice
        .request(json!({"type": "receipts", "group": "team", "mine": true}))
        .await;
    assert_eq!(
        seqs(mine["items"].as_array().expect("items")),
        [6, 7],
        "{mine}"
    );

    // Seqs stay gapless above first_seq: the next message is 8.
    let sent = alice.send_msg("team", "new3", "new 3").await;
    assert_eq!(sent["seq"], 8, "{sent}");
    // Replying to a pruned message is refused like any unknown seq.
    alice
        .expect_error(
            json!({"type": "send", "group": "team", "client_id": "r", "body": "re", "reply_to": 3}),
            "invalid_seq",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_message_is_kept_and_groups_set_their_own_retention() {
    let server = Server::start_with(&["--prune-interval-secs", "1"]);
    server.create_group("short", &["alice", "bob"]);
    server.create_group("forever", &["alice", "bob"]);
    // No --retention-secs: kept forever unless a group sets its own.
    let group = server.admin_expect("GET", "/api/groups/forever", None, 200);
    assert_eq!(group["retention_secs"], Value::Null, "{group}");
    for bad in [json!({"retention_secs": 0}), json!({"retention_secs": "2"})] {
        let (status, body) = server.admin("PUT", "/api/groups/short", Some(bad.clone()));
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let set = server.admin_expect(
        "PUT",
        "/api/groups/short",
        Some(json!({"retention_secs": 1})),
        200,
    );
    assert_eq!(set["retention_secs"], 1, "{set}");
    let mut alice = server.connect("alice").await;
    for i in 1..=3 {
        alice
            .send_msg("short", &format!("s{i}"), "short-lived")
            .await;
        alice.send_msg("forever", &format!("f{i}"), "kept").await;
    }
    // Everything but the newest goes, however old the newest gets.
    eventually(
        Duration::from_secs(10),
        "short pruned to its newest",
        || {
            let group = server.admin_expect("GET", "/api/groups/short", None, 200);
            (group["first_seq"] == 3).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let short = server.admin_expect("GET", "/api/groups/short", None, 200);
    assert_eq!(
        (&short["first_seq"], &short["last_seq"]),
        (&json!(3), &json!(3))
    );
    let forever = server.admin_expect("GET", "/api/groups/forever", None, 200);
    assert_eq!(forever["first_seq"], 1, "{forever}");
    // The admin's message listing says where the history starts, too.
    let listed = server.admin_expect("GET", "/api/groups/short/messages", None, 200);
    assert_eq!(listed["first_seq"], 3, "{listed}");
    assert_eq!(seqs(listed["messages"].as_array().expect("messages")), [3]);
    let groups = server.admin_expect("GET", "/api/groups", None, 200);
    let entry = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["id"] == "short")
        .expect("short listed")
        .clone();
    assert_eq!(entry["first_seq"], 3, "{entry}");
    // `null` keeps a group's messages forever again.
    let cleared = server.admin_expect(
        "PUT",
        "/api/groups/short",
        Some(json!({"retention_secs": null})),
        200,
    );
    assert_eq!(cleared["retention_secs"], Value::Null, "{cleared}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_are_pruned_without_being_started() {
    let server = Server::start_with(&[
        "--retention-secs",
        "2",
        "--prune-interval-secs",
        "1",
        "--group-idle-secs",
        "1",
    ]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=4 {
        alice.send_msg("team", &format!("m{i}"), "hello").await;
    }
    drop(alice);
    // The group passivates, then its old messages are pruned from the store directly.
    eventually(Duration::from_secs(10), "pruned while stopped", || {
        (server.metric("rollcall_messages_pruned_total") >= 3
            && server.metric("rollcall_groups_loaded") == 0)
            .then_some(())
    })
    .await;
    assert!(server.metric("rollcall_group_passivations_total") >= 1);
    // A welcome does not start it either, and shows the pruned head.
    let bob = server.connect("bob").await;
    let summary = bob.welcome_group("team").expect("team").clone();
    assert_eq!(
        (
            &summary["first_seq"],
            &summary["last_seq"],
            &summary["unread"]
        ),
        (&json!(4), &json!(4), &json!(1)),
        "{summary}"
    );
    assert_eq!(server.metric("rollcall_groups_loaded"), 0);
}
