//! Catching up: a member that was offline learns what it missed from `welcome` and pages through
//! it with `sync`.

mod common;

use common::{seq, seqs, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_member_syncs_what_it_missed_in_pages() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);

    // bob writes 5 messages and acknowledges them, then goes offline.
    let mut bob = server.connect("bob").await;
    for i in 1..=5 {
        bob.send_msg("team", &format!("bob-{i}"), &format!("from bob {i}"))
            .await;
    }
    bob.send_json(json!({"type": "ack", "group": "team", "seq": 5}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    bob.close().await;

    // alice writes 250 while bob is away.
    let mut alice = server.connect("alice").await;
    for i in 1..=250 {
        alice
            .send_json(json!({
                "type": "send", "group": "team",
                "client_id": format!("alice-{i}"), "body": format!("from alice {i}")
            }))
            .await;
    }
    for _ in 0..250 {
        let sent = alice.recv_type("sent").await;
        assert_eq!(sent["duplicate"], false, "{sent}");
    }

    // bob comes back: welcome tells him what he missed, without counting his own messages.
    let mut bob = server.connect("bob").await;
    let summary = bob
        .welcome_group("team")
        .expect("team in bob's welcome")
        .clone();
    assert_eq!(summary["last_seq"], 255, "{summary}");
    assert_eq!(summary["delivered"], 5, "{summary}");
    assert_eq!(summary["read"], 0, "{summary}");
    assert_eq!(
        summary["unread"], 250,
        "unread must not count bob's own 5: {summary}"
    );
    assert_eq!(summary["kind"], "group");
    assert_eq!(summary["name"], "team");

    // Pages of 100 from his delivered mark: 100, 100, 50.
    let mut after = 5;
    let mut got = Vec::new();
    for (expected_len, expected_more) in [(100, true), (100, true), (50, false)] {
        let page = bob.sync_page("team", after, 100).await;
        let messages = page["messages"].as_array().expect("messages").clone();
        assert_eq!(messages.len(), expected_len, "page after {after}");
        assert_eq!(page["more"], expected_more, "page after {after}");
        assert_eq!(page["last_seq"], 255);
        assert_eq!(page["group"], "team");
        after = seq(messages.last().expect("a non-empty page"));
        got.extend(messages);
    }
    assert_eq!(seqs(&got), (6..=255).collect::<Vec<_>>());
    for (i, message) in (1..=250).zip(&got) {
        assert_eq!(message["from"], "alice");
        assert_eq!(message["body"], format!("from alice {i}"));
        assert_eq!(message["client_id"], format!("alice-{i}"));
    }

    // alice's own welcome counts bob's 5 only.
    let alice_again = server.connect("alice").await;
    let summary = alice_again
        .welcome_group("team")
        .expect("team in alice's welcome");
    assert_eq!(summary["unread"], 5, "{summary}");

    // Once bob has read everything, nothing is unread.
    bob.send_json(json!({"type": "read", "group": "team", "seq": 255}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    let bob_again = server.connect("bob").await;
    let summary = bob_again
        .welcome_group("team")
        .expect("team in bob's welcome");
    assert_eq!(summary["unread"], 0, "{summary}");
    assert_eq!(summary["read"], 255);
    assert_eq!(summary["delivered"], 255);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_only_messages_after_the_read_mark() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=10 {
        alice.send_msg("team", &format!("c{i}"), "x").await;
    }
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.welcome_group("team").unwrap()["unread"], 10);
    bob.send_json(json!({"type": "read", "group": "team", "seq": 4}))
        .await;
    bob.barrier("team").await;
    bob.assert_no_error();
    let bob_again = server.connect("bob").await;
    let summary = bob_again.welcome_group("team").unwrap();
    assert_eq!(summary["unread"], 6, "{summary}");
    assert_eq!(summary["read"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_connection_welcomes_with_every_group_of_the_user() {
    let server = Server::start();
    server.create_group("eng", &["alice", "bob"]);
    server.create_group("ops", &["alice"]);
    server.create_group("sales", &["bob"]);
    let alice = server.connect("alice").await;
    assert_eq!(alice.welcome["user"], "alice");
    let mut groups: Vec<String> = alice.welcome["groups"]
        .as_array()
        .expect("groups array")
        .iter()
        .map(|g| g["group"].as_str().unwrap_or_default().to_string())
        .collect();
    groups.sort();
    assert_eq!(groups, vec!["eng", "ops"], "{}", alice.welcome);
    for g in alice.welcome["groups"].as_array().unwrap() {
        for field in [
            "group",
            "name",
            "kind",
            "last_seq",
            "delivered",
            "read",
            "unread",
        ] {
            assert!(
                g.get(field).is_some(),
                "welcome group entry lacks {field}: {g}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_ends_once_its_bodies_reach_one_mib() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    const N: u64 = 40;
    let body = "y".repeat(60_000); // 40 of them: 2.4 MB
    alice.send_in_windows("team", N, 8, &body).await;

    // A page also ends once its bodies reach 1 MiB, whatever the limit (PROTOCOL.md §1).
    let mut bob = server.connect("bob").await;
    let mut after = 0;
    let mut n_pages = 0;
    while after < N {
        let page = bob.sync_page("team", after, 1000).await;
        n_pages += 1;
        let messages = page["messages"].as_array().expect("messages");
        assert!(!messages.is_empty(), "an empty page before the end");
        let bytes: Vec<usize> = messages
            .iter()
            .map(|m| m["body"].as_str().map_or(0, str::len))
            .collect();
        let before_last: usize = bytes[..bytes.len() - 1].iter().sum();
        assert!(
            before_last < 1 << 20,
            "a page went on after its bodies reached 1 MiB ({} messages)",
            messages.len()
        );
        let last = seq(messages.last().expect("non-empty"));
        assert_eq!(seq(&messages[0]), after + 1, "a gap between pages");
        assert_eq!(page["more"], last < N, "more is wrong after {last}");
        after = last;
    }
    assert!(n_pages >= 3, "2.4 MB came in {n_pages} pages");
}
