//! A group's start (ARCHITECTURE.md, *Invariants*): it reads its members and its newest
//! `--dedup-window` messages, and repairs what a crash can leave of the per-sender index: the
//! entry of the newest message (written just after it) missing, or the entry of a deleted
//! message (removed just after the deletion's note) still there. Both would show in counts a
//! client sees: the sender's own message counted as unread for them, a deleted one in
//! `receipts mine`. The resend map of that window comes from the index entries (each holds
//! its message's `client_id` and `ts`), from the messages where the index cannot tell: a resend
//! after the start must still be answered with the original seq. The start reads none of the
//! window's live entries: each sender's are read on their first send after it, so these tests
//! resend after other senders sent, and right at the window's edge.

mod common;

use common::{raw_store, seq, Server, TIMEOUT};
use serde_json::json;

/// `rollcall check` on the stopped server's data, asserted clean. Right after this test dropped
/// its own handle on the sled database, sled's I/O thread pool may still hold the file (and its
/// lock) for a moment, so a refused lock is tried again for up to 5 s.
fn assert_check_clean(server: &Server) {
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(server.check_args())
            .output()
            .expect("rollcall check")
    };
    let started = std::time::Instant::now();
    let mut out = check();
    while String::from_utf8_lossy(&out.stderr).contains("could not acquire lock")
        && started.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = check();
    }
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{report}{errors}");
    assert!(report.contains("0 violations, 0 warnings"), "{report}");
}

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
    if common::sled_only("it cuts entries out of the stopped server's sled database") {
        return;
    }
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
    let mut alice = server.connect("alice").await;
    let team = alice.welcome_group("team").expect("team").clone();
    assert_eq!(
        (&team["last_seq"], &team["unread"]),
        (&json!(4), &json!(0)),
        "{team}"
    );
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
    // Resends of the message whose entry was cut off, and of the deleted one: duplicates.
    for (client_id, original) in [("c4", 4), ("c2", 2)] {
        let again = alice.send_msg("team", client_id, "again").await;
        assert_eq!(
            (seq(&again), &again["duplicate"]),
            (original, &json!(true)),
            "{again}"
        );
    }
    // And the stored index is whole again (the re-added entry with its client id): `rollcall
    // check` finds nothing.
    alice.close().await;
    server.signal("TERM");
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "the server did not stop"
    );
    assert_check_clean(&server);
}

/// After a restart, a resend of a message 5,000 back (inside the default `--dedup-window` of
/// 10,000) is answered with its original seq and ts and `duplicate`, for each sender and for a
/// deleted message too; then the same on a data directory whose index entries hold the `()`
/// an older build wrote (no client ids: the start reads those messages instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_deep_in_the_window_is_a_duplicate_after_a_restart() {
    if common::sled_only(
        "it writes old-format index entries into the stopped server's sled database",
    ) {
        return;
    }
    const N: u64 = 6000;
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut originals = Vec::new();
    for sent in alice.send_in_windows("team", N, 200, "m").await {
        let client_id = sent["client_id"].as_str().expect("client_id").to_owned();
        if ["c1000", "c1001", "c6000"].contains(&client_id.as_str()) {
            originals.push(("alice", client_id, seq(&sent), sent["ts"].clone()));
        }
    }
    let mut bob = server.connect("bob").await;
    let bobs = bob.send_msg("team", "c1001", "bob's own c1001").await;
    assert_eq!(seq(&bobs), N + 1);
    originals.push(("bob", "c1001".into(), N + 1, bobs["ts"].clone()));
    alice
        .request(json!({"type": "delete", "group": "team", "seq": 1000}))
        .await;
    alice.close().await;
    bob.close().await;
    assert_eq!(originals.len(), 4);

    for phase in ["entries with client ids", "entries of an older build"] {
        server.restart();
        for (user, client_id, original, ts) in &originals {
            let mut client = server.connect(user).await;
            let again = client.send_msg("team", client_id, "a resend").await;
            assert_eq!(
                (seq(&again), &again["duplicate"], &again["ts"]),
                (*original, &json!(true), ts),
                "{phase}: {user}'s resend of {client_id}: {again}"
            );
            client.close().await;
        }
        server.signal("TERM");
        assert!(
            server.wait_exit(TIMEOUT).is_some(),
            "the server did not stop"
        );
        // Every entry holds its message's client id (the start gave the older build's theirs).
        assert_check_clean(&server);
        // What an older build wrote: `()` (the version byte alone) under every entry.
        {
            let db = raw_store::open(server.data_dir());
            let tree = raw_store::group_tree(&db, "team");
            let keys: Vec<_> = tree
                .scan_prefix([b'b'])
                .keys()
                .collect::<Result<_, _>>()
                .expect("index keys");
            assert_eq!(
                keys.len(),
                usize::try_from(N).expect("N"),
                "the live messages: alice's and bob's, less the deleted one"
            );
            for key in keys {
                tree.insert(key, vec![1u8]).expect("insert");
            }
            db.flush().expect("flush");
        }
        // Entries without client ids are no violation.
        assert_check_clean(&server);
    }
    // A client id not sent yet is a new message.
    server.restart();
    let mut bob = server.connect("bob").await;
    let new = bob.send_msg("team", "c1002", "bob's second").await;
    assert_eq!((seq(&new), &new["duplicate"]), (N + 2, &json!(false)));
}

/// After a restart, bob's first send is a new message (the next seq, though alice used its
/// client id) while alice's resend of a message 5,000 back is a duplicate; so is her resend of
/// a message deleted after the restart, before her first send (its index entry is gone by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_resends_are_known_on_their_first_send_after_a_restart() {
    const N: u64 = 6000;
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let sent = alice.send_in_windows("team", N, 200, "m").await;
    let ts_of = |client_id: &str| {
        sent.iter()
            .find(|s| s["client_id"] == client_id)
            .map(|s| s["ts"].clone())
            .expect("sent")
    };
    alice.close().await;
    server.restart();

    let mut bob = server.connect("bob").await;
    let bobs = bob.send_msg("team", "c1000", "bob's first").await;
    assert_eq!(
        (seq(&bobs), &bobs["duplicate"]),
        (N + 1, &json!(false)),
        "{bobs}"
    );
    let mut alice = server.connect("alice").await;
    let deleted = alice
        .request(json!({"type": "delete", "group": "team", "seq": 2000}))
        .await;
    assert_ne!(deleted["type"], "error", "{deleted}");
    for (client_id, original) in [("c1000", 1000), ("c2000", 2000), ("c6000", 6000)] {
        let again = alice.send_msg("team", client_id, "a resend").await;
        assert_eq!(
            (seq(&again), &again["duplicate"], &again["ts"]),
            (original, &json!(true), &ts_of(client_id)),
            "alice's resend of {client_id}: {again}"
        );
    }
    let again = bob.send_msg("team", "c1000", "bob's again").await;
    assert_eq!((seq(&again), &again["duplicate"]), (N + 1, &json!(true)));
    let new = alice.send_msg("team", "c6001", "new").await;
    assert_eq!((seq(&new), &new["duplicate"]), (N + 2, &json!(false)));
}

/// With `--dedup-window 100`, after a restart: a resend of the message just outside the window
/// is stored as new, one just inside is a duplicate; and the entries loaded on the first send
/// age out by seq as new messages come (the window moves by one with each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_edge_holds_after_a_restart() {
    let mut server = Server::start_with(&["--dedup-window", "100"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    alice.send_in_windows("team", 150, 50, "m").await;
    alice.close().await;
    let mut bob = server.connect("bob").await;
    assert_eq!(seq(&bob.send_msg("team", "b1", "bob's").await), 151);
    bob.close().await;
    server.restart();

    // The window is (51, 151]; each new message moves it by one.
    let mut alice = server.connect("alice").await;
    for (client_id, expect, duplicate) in [
        ("c51", 152, false), // outside: a new message, the window is now (52, 152]
        ("c53", 53, true),
        ("c52", 153, false), // aged out by 152: (53, 153]
        ("c54", 54, true),
        ("c51", 152, true), // the new c51
    ] {
        let got = alice.send_msg("team", client_id, "again").await;
        assert_eq!(
            (seq(&got), &got["duplicate"]),
            (expect, &json!(duplicate)),
            "alice's {client_id}: {got}"
        );
    }
    let mut bob = server.connect("bob").await;
    let again = bob.send_msg("team", "b1", "bob's again").await;
    assert_eq!((seq(&again), &again["duplicate"]), (151, &json!(true)));
}
