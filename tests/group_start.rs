//! A group's start (ARCHITECTURE.md, *Invariants*): it reads its members and its newest
//! `--dedup-window` messages, and repairs what a crash can leave of the per-sender index: the
//! entry of the newest message (written just after it) missing, or the entry of a deleted
//! message (removed just after the deletion's note) still there. Both would show in counts a
//! client sees: the sender's own message counted as unread for them, a deleted one in
//! `receipts mine`.

mod common;

use common::{raw_store, Server, TIMEOUT};
use serde_json::json;

fn seqs(items: &serde_json::Value) -> Vec<u64> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_repairs_the_sender_index_a_crash_cut_off() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=4 {
        alice
            .send_msg("team", &format!("c{i}"), &format!("m{i}"))
            .await;
    }
    alice
        .request(json!({"type": "delete", "group": "team", "seq": 2}))
        .await;
    alice.close().await;
    server.signal("TERM");
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "the server did not stop"
    );
    {
        // What a crash between the writes leaves: message 4 without its entry, the deleted
        // message 2 with its entry still there.
        let db = raw_store::open(server.data_dir());
        let tree = raw_store::group_tree(&db, "team");
        tree.remove(raw_store::sent_key("alice", 4))
            .expect("remove");
        tree.insert(raw_store::sent_key("alice", 2), vec![1u8])
            .expect("insert");
        db.flush().expect("flush");
    }
    server.restart();
    // Her own messages are not unread for her: 4 is hers again.
    let alice = server.connect("alice").await;
    let team = alice.welcome_group("team").expect("team").clone();
    assert_eq!(
        (&team["last_seq"], &team["unread"]),
        (&json!(4), &json!(0)),
        "{team}"
    );
    let mut alice = alice;
    let mine = alice
        .request(json!({"type": "receipts", "group": "team", "mine": true}))
        .await;
    assert_eq!(
        seqs(&mine["items"]),
        [1, 3, 4],
        "the deleted 2 left out: {mine}"
    );
    let bob = server.connect("bob").await;
    assert_eq!(
        bob.welcome_group("team").expect("team")["unread"],
        3,
        "1, 3, 4"
    );
    // And the stored index is whole again: `rollcall check` finds nothing.
    alice.close().await;
    server.signal("TERM");
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "the server did not stop"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["check", "--data", &server.data_dir().display().to_string()])
        .output()
        .expect("rollcall check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("0 violations, 0 warnings"), "{report}");
}
