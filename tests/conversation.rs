//! The conversation itself (docs/PROTOCOL.md §3.6): edit, delete, replies, typing and presence,
//! end to end against a real server process with real WebSocket clients. Unread counts and
//! receipts are checked after edits and deletes; refusals are checked to change nothing.

mod common;

use std::time::Duration;

use common::{seqs, Client, Server};
use serde_json::{json, Value};

/// The welcome entry's `unread` of `group` for a fresh session of `user`.
async fn unread(server: &Server, user: &str, group: &str) -> u64 {
    let client = server.connect(user).await;
    let unread = client.welcome_group(group).expect("group listed")["unread"]
        .as_u64()
        .expect("unread");
    client.close().await;
    unread
}

/// The whole history of `group` as `user` sees it.
async fn history(client: &mut Client, group: &str) -> Vec<Value> {
    client.sync_all(group, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_changes_the_body_everywhere_and_nothing_else() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.send_msg("team", "a1", "helo").await;
    alice.send_msg("team", "a2", "second").await;
    bob.recv_msgs("team", 2).await;
    let unread_before = unread(&server, "bob", "team").await;
    assert_eq!(unread_before, 2);

    let reply = alice
        .request(json!({"type": "edit", "id": "e", "group": "team", "seq": 1, "body": "hello"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "edited", "id": "e", "group": "team", "seq": 1})
    );
    // Every session of every member, the editor's own included, hears of it once.
    for client in [&mut alice, &mut bob] {
        let pushed = client.recv_type("msg_edited").await;
        assert_eq!(
            (
                pushed["group"].as_str(),
                pushed["seq"].as_u64(),
                pushed["body"].as_str()
            ),
            (Some("team"), Some(1), Some("hello")),
            "{pushed}"
        );
        assert!(pushed["edited_ts"].as_u64().is_some(), "{pushed}");
    }
    // History shows the latest body with edited_ts; no new seq, unread unchanged.
    let page = history(&mut bob, "team").await;
    assert_eq!(seqs(&page), vec![1, 2]);
    assert_eq!(page[0]["body"], "hello");
    assert!(page[0]["edited_ts"].as_u64().is_some(), "{}", page[0]);
    assert!(page[1].get("edited_ts").is_none(), "{}", page[1]);
    assert_eq!(unread(&server, "bob", "team").await, unread_before);

    // The same body again: the same answer, no push.
    let again = alice
        .request(json!({"type": "edit", "group": "team", "seq": 1, "body": "hello"}))
        .await;
    assert_eq!(again["type"], "edited", "{again}");
    // Refusals: someone else's message, an unknown seq, an empty body; nothing changes.
    bob.expect_error(
        json!({"type": "edit", "group": "team", "seq": 1, "body": "mine now"}),
        "not_allowed",
    )
    .await;
    alice
        .expect_error(
            json!({"type": "edit", "group": "team", "seq": 9, "body": "x"}),
            "invalid_seq",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "edit", "group": "team", "seq": 1, "body": " "}),
            "bad_frame",
        )
        .await;
    bob.ping().await;
    bob.drain_for(Duration::from_millis(200)).await;
    assert_eq!(
        bob.pending()
            .iter()
            .filter(|f| f["type"] == "msg_edited")
            .count(),
        0,
        "a repeated or refused edit was pushed: {:?}",
        bob.pending()
    );
    // Durable: after a crash the edit is there.
    server.restart();
    let mut bob = server.connect("bob").await;
    let page = history(&mut bob, "team").await;
    assert_eq!(page[0]["body"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_the_body_and_leaves_unread_and_receipts() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob", "carol"]);
    server.admin_expect(
        "PUT",
        "/api/groups/team/members/carol",
        Some(json!({"role": "admin"})),
        200,
    );
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    for (n, body) in ["one", "two", "three", "four"].iter().enumerate() {
        alice.send_msg("team", &format!("a{n}"), body).await;
    }
    bob.recv_msgs("team", 4).await;
    bob.read_to("team", 1).await;
    assert_eq!(unread(&server, "bob", "team").await, 3);
    assert_eq!(unread(&server, "carol", "team").await, 4);

    // bob (a member) may not delete alice's message; alice may.
    bob.expect_error(
        json!({"type": "delete", "group": "team", "seq": 3}),
        "not_allowed",
    )
    .await;
    let reply = alice
        .request(json!({"type": "delete", "id": 7, "group": "team", "seq": 3}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "deleted", "id": 7, "group": "team", "seq": 3})
    );
    for client in [&mut alice, &mut bob] {
        let pushed = client.recv_type("msg_deleted").await;
        assert_eq!(
            pushed,
            json!({"type": "msg_deleted", "group": "team", "seq": 3})
        );
    }
    // An admin of the group deletes someone else's message.
    let mut carol = server.connect("carol").await;
    let reply = carol
        .request(json!({"type": "delete", "group": "team", "seq": 4}))
        .await;
    assert_eq!(reply["type"], "deleted", "{reply}");

    // History keeps the seqs, without bodies; unread excludes deleted messages.
    let page = history(&mut bob, "team").await;
    assert_eq!(seqs(&page), vec![1, 2, 3, 4], "seqs stay gapless");
    assert_eq!(
        page[2],
        json!({"group": "team", "seq": 3, "from": "alice", "ts": page[2]["ts"],
               "client_id": "a2", "deleted": true})
    );
    assert!(page[2].get("body").is_none());
    assert_eq!(unread(&server, "bob", "team").await, 1, "2 only");
    assert_eq!(unread(&server, "carol", "team").await, 2, "1 and 2");
    // Receipts leave it out; readers, edit, remind and reply_to refuse it.
    let receipts = alice
        .request(json!({"type": "receipts", "group": "team", "seqs": [2, 3, 4]}))
        .await;
    let items: Vec<u64> = receipts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["seq"].as_u64())
        .collect();
    assert_eq!(items, vec![2], "{receipts}");
    let mine = alice
        .request(json!({"type": "receipts", "group": "team", "mine": true}))
        .await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(2), "{mine}");
    for frame in [
        json!({"type": "readers", "group": "team", "seq": 3}),
        json!({"type": "edit", "group": "team", "seq": 3, "body": "back"}),
        json!({"type": "remind", "group": "team", "seq": 3}),
        json!({"type": "send", "group": "team", "client_id": "r1", "body": "re", "reply_to": 3}),
    ] {
        alice.expect_error(frame, "invalid_seq").await;
    }
    // Deleting again: the same answer, no push.
    let again = alice
        .request(json!({"type": "delete", "group": "team", "seq": 3}))
        .await;
    assert_eq!(again["type"], "deleted");
    bob.ping().await;
    bob.drain_for(Duration::from_millis(200)).await;
    assert_eq!(
        bob.pending()
            .iter()
            .filter(|f| f["type"] == "msg_deleted")
            .count(),
        1,
        "only carol's delete of 4 is new: {:?}",
        bob.pending()
    );

    // Never comes back after a crash; the body is gone from storage.
    server.restart();
    let mut bob = server.connect("bob").await;
    let page = history(&mut bob, "team").await;
    assert_eq!(page[2]["deleted"], true);
    assert!(page[2].get("body").is_none());
    // (bob's read mark may be a receipt tick behind after a kill; carol never read.)
    assert_eq!(unread(&server, "carol", "team").await, 2);
    let admin_page = server.admin_expect("GET", "/api/groups/team/messages", None, 200);
    assert!(
        !admin_page.to_string().contains("three"),
        "the deleted body is still served: {admin_page}"
    );
    drop(bob);
    server.kill9();
    if let Some(url) = &server.store {
        // PostgreSQL: no stored record holds the body any more.
        let db = common::postgres::Cluster::name_of(url);
        let holding = common::postgres::cluster().psql(
            db,
            "SELECT count(*) FROM kv WHERE position('three'::bytea in value) > 0",
        );
        assert_eq!(holding, "0", "the deleted body is still stored");
        return;
    }
    let db = server.data_dir().join("db");
    let mut found = false;
    for entry in std::fs::read_dir(&db).expect("db dir").flatten() {
        if let Ok(bytes) = std::fs::read(entry.path()) {
            found |= bytes.windows(5).any(|w| w == b"three");
        }
    }
    // sled's log may keep an old value until it is rewritten; say so rather than pass blindly.
    if found {
        eprintln!("note: the deleted body is still in sled's log segments (not yet compacted)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_names_its_message_in_msg_and_history() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server.create_group("other", &["alice"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.send_msg("team", "a1", "lunch?").await;
    bob.recv_msg("team").await;
    let sent = bob
        .request(json!({"type": "send", "group": "team", "client_id": "b1", "body": "yes", "reply_to": 1}))
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let msgs = alice.recv_msgs("team", 2).await;
    assert!(msgs[0].get("reply_to").is_none(), "{}", msgs[0]);
    let msg = &msgs[1];
    assert_eq!(
        (msg["seq"].as_u64(), msg["reply_to"].as_u64()),
        (Some(2), Some(1))
    );
    let page = history(&mut alice, "team").await;
    assert_eq!(page[1]["reply_to"], 1);
    assert!(page[0].get("reply_to").is_none());
    // Only a seq of the same group, up to its last.
    for reply_to in [0, 3, 99] {
        bob.expect_error(
            json!({"type": "send", "group": "team", "client_id": format!("x{reply_to}"), "body": "?", "reply_to": reply_to}),
            "invalid_seq",
        )
        .await;
    }
    let last = history(&mut alice, "team").await;
    assert_eq!(seqs(&last), vec![1, 2], "a refused reply stored something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_others_throttled_and_only_from_members() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob", "carol"]);
    server.create_group("other", &["dave"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut dave = server.connect("dave").await;
    for _ in 0..5 {
        alice
            .send_json(json!({"type": "typing", "group": "team"}))
            .await;
    }
    let typing = bob.recv_type("typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "group": "team", "user": "alice"})
    );
    bob.ping().await;
    alice.ping().await;
    bob.drain_for(Duration::from_millis(300)).await;
    let n_typing = bob
        .pending()
        .iter()
        .filter(|f| f["type"] == "typing")
        .count();
    assert_eq!(
        n_typing, 0,
        "five typing within 2 s forwarded more than one"
    );
    assert!(
        !alice.pending().iter().any(|f| f["type"] == "typing"),
        "the typist heard their own typing"
    );
    // A non-member is refused and learns nothing.
    dave.expect_error(json!({"type": "typing", "group": "team"}), "not_member")
        .await;
    dave.expect_error(json!({"type": "typing", "group": "team"}), "not_member")
        .await;
    // After the throttle, the next one goes through, once per user: a second session of alice
    // shares the throttle.
    let mut alice2 = server.connect("alice").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    alice
        .send_json(json!({"type": "typing", "group": "team"}))
        .await;
    alice2
        .send_json(json!({"type": "typing", "group": "team"}))
        .await;
    bob.recv_type("typing").await;
    alice.ping().await;
    alice2.ping().await;
    bob.drain_for(Duration::from_millis(300)).await;
    let n_typing = bob
        .pending()
        .iter()
        .filter(|f| f["type"] == "typing")
        .count();
    assert_eq!(n_typing, 0, "two sessions of one user forwarded two typing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_announced_debounced_and_shown_in_members() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server.create_group("pair", &["alice", "bob"]);
    server.create_group("alone", &["carol"]);
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    let alice = server.connect("alice").await;
    let online = bob.recv_type("presence").await;
    assert_eq!(
        online,
        json!({"type": "presence", "user": "alice", "online": true})
    );
    let members = bob
        .request(json!({"type": "members", "group": "team"}))
        .await;
    let online_of = |members: &Value, user: &str| {
        members["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user"] == user)
            .map(|m| m["online"].clone())
    };
    assert_eq!(online_of(&members, "alice"), Some(json!(true)));

    // A reconnect within 5 s sends nothing.
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alice = server.connect("alice").await;
    // Going offline is announced within 10 s of the last close.
    alice.close().await;
    let offline = bob.recv_type("presence").await;
    assert_eq!(
        offline,
        json!({"type": "presence", "user": "alice", "online": false})
    );
    bob.ping().await;
    // Once per recipient, though bob shares two groups with alice: two frames in all.
    let extra = bob
        .pending()
        .iter()
        .filter(|f| f["type"] == "presence")
        .count();
    assert_eq!(extra, 0, "presence repeated: {:?}", bob.pending());
    let members = bob
        .request(json!({"type": "members", "group": "team"}))
        .await;
    assert_eq!(online_of(&members, "alice"), Some(json!(false)));
    // carol shares no group with alice: she heard nothing.
    carol.ping().await;
    assert!(
        !carol.pending().iter().any(|f| f["type"] == "presence"),
        "{:?}",
        carol.pending()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_groups_carry_no_typing_and_no_presence() {
    let server = Server::start_with(&["--presence-max-members", "2"]);
    server.create_group("big", &["alice", "bob", "carol"]);
    let mut bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;
    alice
        .send_json(json!({"type": "typing", "group": "big"}))
        .await;
    alice.ping().await;
    let members = bob
        .request(json!({"type": "members", "group": "big"}))
        .await;
    assert!(
        members["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["online"] == false),
        "{members}"
    );
    bob.drain_for(Duration::from_millis(300)).await;
    assert!(
        !bob.pending()
            .iter()
            .any(|f| f["type"] == "typing" || f["type"] == "presence"),
        "{:?}",
        bob.pending()
    );
}
