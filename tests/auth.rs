//! WebSocket authentication: a bad, badly signed, expired or missing token is refused with 401
//! before the upgrade; a good one works in the header or in `?token=`, and creates the user.

mod common;

use common::{now_secs, token, token_with, Client, Server, JWT_SECRET};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let server = Server::start();
    let url = server.ws_url();
    let expired = token_with("alice", now_secs() - 120, JWT_SECRET);
    let forged = token_with("alice", now_secs() + 3600, "not-the-server-secret");
    for (what, bearer) in [
        ("garbage", Some("not-a-jwt")),
        ("expired", Some(expired.as_str())),
        ("badly signed", Some(forged.as_str())),
        ("the admin token", Some(common::ADMIN_TOKEN)),
        ("missing", None),
    ] {
        match Client::try_connect(&url, bearer).await {
            Err(status) => assert_eq!(status, 401, "{what} token"),
            Ok(_) => panic!("a {what} token was accepted"),
        }
    }
    for (what, query) in [
        ("garbage", "nope"),
        ("expired", expired.as_str()),
        ("empty", ""),
    ] {
        match Client::try_connect(&format!("{url}?token={query}"), None).await {
            Err(status) => assert_eq!(status, 401, "{what} ?token="),
            Ok(_) => panic!("a {what} ?token= was accepted"),
        }
    }
    // None of the refused attempts created a user.
    let (status, _) = server.admin("POST", "/api/users", Some(json!({"id": "alice"})));
    assert_eq!(status, 201);
}

/// PROTOCOL.md §2: user tokens are HS256 JWTs with `sub` and `exp`, and a team's backend may
/// mint them itself; such a token has no other claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_only_sub_and_exp_is_accepted() {
    let server = Server::start();
    let minimal = common::sign(
        &json!({"sub": "alice", "exp": now_secs() + 3600}),
        JWT_SECRET,
    );
    match Client::try_connect(&server.ws_url(), Some(&minimal)).await {
        Ok(alice) => assert_eq!(alice.welcome["user"], "alice"),
        Err(status) => panic!("a token with exactly sub and exp was refused with {status}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_the_query_works_like_the_header() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = Client::connect_query(&server.ws_url(), &token("alice")).await;
    assert_eq!(alice.welcome["user"], "alice");
    assert!(alice.welcome_group("team").is_some());
    let sent = alice.send_msg("team", "q1", "via query token").await;
    assert_eq!(sent["seq"], 1);
    let msg = alice.recv_msg("team").await;
    assert_eq!(msg["from"], "alice", "from must be the authenticated user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_for_an_unknown_user_creates_it() {
    let server = Server::start();
    let newbie = server.connect("newbie").await;
    assert_eq!(newbie.welcome["user"], "newbie");
    assert_eq!(newbie.welcome["groups"], json!([]));
    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "newbie"})));
    assert_eq!(
        status, 409,
        "the first connect should have created the user: {body}"
    );
    server.admin_expect("POST", "/api/users/newbie/tokens", Some(json!({})), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_is_always_the_authenticated_user() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;
    // A `from` field in the frame is not the sender's to choose.
    alice
        .send_json(json!({"type": "send", "id": 1, "group": "team", "client_id": "x", "body": "hi", "from": "bob"}))
        .await;
    let reply = alice.recv_where("reply 1", |f| f["id"] == 1).await;
    if reply["type"] == "sent" {
        let msg = bob.recv_msg("team").await;
        assert_eq!(msg["from"], "alice", "{msg}");
    } else {
        assert_eq!(reply["code"], "bad_frame", "{reply}");
    }
}
