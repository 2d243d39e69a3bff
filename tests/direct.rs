//! Direct (1:1) conversations: `direct` names one stable group per pair, which then behaves like
//! any group, and the other side is pushed its messages without reconnecting.

mod common;

use common::{seq, seqs, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_is_one_stable_group_for_the_pair() {
    let server = Server::start();
    // bob is online before the conversation exists.
    let mut bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;

    let reply = alice
        .request(json!({"type": "direct", "id": "d1", "with": "bob"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "direct", "id": "d1", "group": "dm:alice:bob"})
    );
    // Asking again gives the same group.
    let reply = alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    assert_eq!(reply["group"], "dm:alice:bob");

    // bob receives the first message at once, on the connection he already had.
    let sent = alice.send_msg("dm:alice:bob", "hi-1", "hi bob").await;
    assert_eq!(seq(&sent), 1);
    // He is told about the conversation (`joined`) before its first msg.
    let first = bob
        .recv_where("joined or msg of the dm", |f| {
            f["group"] == "dm:alice:bob" && (f["type"] == "joined" || f["type"] == "msg")
        })
        .await;
    assert_eq!(
        first["type"], "joined",
        "joined must come before the msgs: {first}"
    );
    assert_eq!(first["kind"], "direct", "{first}");
    assert!(first["name"].is_string(), "{first}");
    let msg = bob.recv_msg("dm:alice:bob").await;
    assert_eq!(msg["from"], "alice");
    assert_eq!(msg["body"], "hi bob");
    assert_eq!(seq(&msg), 1);
    assert_eq!(alice.recv_msg("dm:alice:bob").await["seq"], 1);

    // From bob's side it is the same conversation.
    let reply = bob
        .request(json!({"type": "direct", "id": 2, "with": "alice"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "direct", "id": 2, "group": "dm:alice:bob"})
    );
    bob.send_msg("dm:alice:bob", "re-1", "hi alice").await;
    let msg = alice.recv_msg("dm:alice:bob").await;
    assert_eq!((seq(&msg), msg["from"].as_str()), (2, Some("bob")));

    let history = bob.sync_all("dm:alice:bob", 0).await;
    assert_eq!(seqs(&history), vec![1, 2]);
    assert_eq!(history[0]["body"], "hi bob");
    assert_eq!(history[1]["body"], "hi alice");

    let group = server.group("dm:alice:bob");
    assert_eq!(group["kind"], "direct");
    assert_eq!(group["last_seq"], 2);
    let members: Vec<&str> = group["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert_eq!(members, vec!["alice", "bob"]);

    // On a new connection the conversation is listed; bob has not read alice's message.
    let bob_again = server.connect("bob").await;
    let summary = bob_again
        .welcome_group("dm:alice:bob")
        .expect("the dm in welcome");
    assert_eq!(summary["kind"], "direct");
    assert_eq!(summary["last_seq"], 2);
    assert_eq!(
        summary["unread"], 1,
        "only alice's message is unread for bob: {summary}"
    );

    // A third user is not part of it.
    let mut carol = server.connect("carol").await;
    assert!(carol.welcome_group("dm:alice:bob").is_none());
    carol
        .expect_error(
            json!({"type": "send", "group": "dm:alice:bob", "client_id": "x", "body": "psst"}),
            "not_member",
        )
        .await;
    carol
        .expect_error(
            json!({"type": "sync", "group": "dm:alice:bob"}),
            "not_member",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_ids_order_the_pair_by_bytes() {
    let server = Server::start();
    let _adam = server.connect("adam").await;
    let mut zed = server.connect("Zed").await;
    // 'Z' (0x5A) sorts before 'a' (0x61).
    let reply = zed.request(json!({"type": "direct", "with": "adam"})).await;
    assert_eq!(reply["group"], "dm:Zed:adam", "{reply}");
    let mut adam = server.connect("adam").await;
    let reply = adam.request(json!({"type": "direct", "with": "Zed"})).await;
    assert_eq!(reply["group"], "dm:Zed:adam", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_with_yourself_is_refused() {
    let server = Server::start();
    let mut alice = server.connect("alice").await;
    let reply = alice
        .request(json!({"type": "direct", "id": "self", "with": "alice"}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["id"], "self");
    alice.ping().await;
    let (status, body) = server.admin("GET", "/api/groups/dm:alice:alice", None);
    assert_ne!(
        status, 200,
        "a conversation with oneself was created: {body}"
    );
    let alice_again = server.connect("alice").await;
    assert_eq!(alice_again.welcome["groups"], json!([]));
}

/// A direct conversation is its two people's: the admin can neither add a third (who would read
/// the whole history) nor remove one of them, and a refusal changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_joins_or_leaves_a_direct_conversation() {
    let server = Server::start();
    server.ensure_users(&["bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let reply = alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    assert_eq!(reply["group"], "dm:alice:bob");
    alice
        .send_msg("dm:alice:bob", "secret-1", "just between us")
        .await;
    let before = server.group("dm:alice:bob");

    for method in ["PUT", "DELETE"] {
        for user in ["carol", "bob"] {
            let (status, body) = server.admin(
                method,
                &format!("/api/groups/dm:alice:bob/members/{user}"),
                None,
            );
            assert_eq!(
                (status, common::http_error_code(&body).as_str()),
                (403, "not_allowed"),
                "{method} {user}: {body}"
            );
        }
    }
    assert_eq!(
        server.group("dm:alice:bob"),
        before,
        "the membership changed"
    );
    let mut carol = server.connect("carol").await;
    assert!(carol.welcome_group("dm:alice:bob").is_none());
    carol
        .expect_error(
            json!({"type": "sync", "group": "dm:alice:bob", "after": 0}),
            "not_member",
        )
        .await;
}
