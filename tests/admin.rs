//! The admin HTTP API: users, tokens, groups, members, bot sends, message paging, and its errors.

mod common;

use std::time::Duration;

use common::{http_error_code, member_of, now_secs, seq, seqs, Client, Server, ADMIN_TOKEN};
use serde_json::{json, Value};

fn decode_token(token: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = true;
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(common::JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the server's token does not verify with the secret: {e}"))
    .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_once_and_get_a_working_token() {
    let server = Server::start();
    let alice = server.admin_expect(
        "POST",
        "/api/users",
        Some(json!({"id": "alice", "name": "Alice"})),
        201,
    );
    assert_eq!(alice["id"], "alice");
    assert_eq!(alice["name"], "Alice");
    let token = alice["token"].as_str().expect("a token string");
    assert_eq!(decode_token(token)["sub"], "alice");
    let client = Client::connect(&server.ws_url(), token).await;
    assert_eq!(client.welcome["user"], "alice");
    assert_eq!(client.welcome["groups"], json!([]));

    // The name defaults to the id.
    let bob = server.admin_expect("POST", "/api/users", Some(json!({"id": "bob"})), 201);
    assert_eq!(bob["name"], "bob");

    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "alice"})));
    assert_eq!(status, 409, "{body}");
    assert_eq!(http_error_code(&body), "user_exists");

    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "has space"})));
    assert_eq!(status, 400, "{body}");
    assert_eq!(http_error_code(&body), "bad_request");
    let (status, body) = server.admin("POST", "/api/users", Some(json!({"name": "no id"})));
    assert_eq!(status, 400, "{body}");
    assert_eq!(http_error_code(&body), "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_route_issues_working_tokens() {
    let server = Server::start();
    server.admin_expect("POST", "/api/users", Some(json!({"id": "alice"})), 201);

    let issued = server.admin_expect("POST", "/api/users/alice/tokens", Some(json!({})), 200);
    let token = issued["token"].as_str().expect("token");
    let claims = decode_token(token);
    assert_eq!(claims["sub"], "alice");
    let exp = claims["exp"].as_u64().expect("numeric exp");
    let thirty_days = 30 * 24 * 3600;
    assert!(
        exp.abs_diff(now_secs() + thirty_days) < 120,
        "default ttl should be 30 days, exp = {exp}"
    );
    Client::connect(&server.ws_url(), token).await;

    let issued = server.admin_expect(
        "POST",
        "/api/users/alice/tokens",
        Some(json!({"ttl_secs": 60})),
        200,
    );
    let token = issued["token"].as_str().expect("token");
    let exp = decode_token(token)["exp"].as_u64().expect("numeric exp");
    assert!(
        exp.abs_diff(now_secs() + 60) < 30,
        "ttl_secs ignored: exp = {exp}"
    );
    Client::connect(&server.ws_url(), token).await;

    let (status, body) = server.admin("POST", "/api/users/nobody/tokens", Some(json!({})));
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_error_code(&body), "no_such_user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_created_with_or_without_an_id() {
    let server = Server::start();
    server.ensure_users(&["alice", "carol"]);
    let eng = server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "eng", "name": "Engineering", "members": ["carol", "alice"]})),
        201,
    );
    assert_eq!(
        eng,
        json!({
            "id": "eng", "name": "Engineering", "kind": "group", "receipts": "full", "last_seq": 0,
            "first_seq": 1, "retention_secs": null,
            "members": [
                {"user": "alice", "name": "alice", "role": "member", "joined_seq": 0, "delivered": 0, "read": 0},
                {"user": "carol", "name": "carol", "role": "owner", "joined_seq": 0, "delivered": 0, "read": 0},
            ]
        })
    );
    assert_eq!(server.group("eng"), eng);
    // Nobody is created because a group names them: an unknown member is refused, and
    // nothing is created.
    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "typo", "members": ["alice", "alcie"]})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_user"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("alcie"),
        "{body}"
    );
    let (status, _) = server.admin("GET", "/api/groups/typo", None);
    assert_eq!(status, 404);
    let (status, _) = server.admin("GET", "/api/users/alcie", None);
    assert_eq!(status, 404);

    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "eng", "members": ["alice"]})),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(http_error_code(&body), "group_exists");

    let mut generated = Vec::new();
    for _ in 0..2 {
        let group = server.admin_expect(
            "POST",
            "/api/groups",
            Some(json!({"members": ["alice"]})),
            201,
        );
        let id = group["id"].as_str().expect("an id").to_string();
        assert!(
            id.len() == 14
                && id.starts_with("g-")
                && id[2..]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "generated id {id:?} is not g- followed by 12 lowercase letters/digits"
        );
        assert_eq!(group["name"], id.as_str(), "the name defaults to the id");
        assert_eq!(server.group(&id)["members"][0]["user"], "alice");
        generated.push(id);
    }
    assert_ne!(generated[0], generated[1]);

    // alice sees every group she is in.
    let alice = server.connect("alice").await;
    assert_eq!(alice.welcome["groups"].as_array().map(Vec::len), Some(3));
    let summary = alice.welcome_group("eng").expect("eng");
    assert_eq!(summary["name"], "Engineering");

    for bad in [json!({"id": "no spaces"}), json!({"id": "dm:alice:bob"})] {
        let (status, body) = server.admin("POST", "/api/groups", Some(bad.clone()));
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(http_error_code(&body), "bad_request", "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_take_effect_at_once() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await; // not a member yet
    for i in 1..=3 {
        alice
            .send_msg("team", &format!("c{i}"), &format!("m{i}"))
            .await;
    }
    bob.recv_msgs("team", 3).await;

    // carol joins: her cursors start at the group's end, and she is pushed new messages
    // without reconnecting.
    let member = server.admin_expect("PUT", "/api/groups/team/members/carol", None, 200);
    assert_eq!(
        member,
        json!({"user": "carol", "name": "carol", "role": "member", "joined_seq": 3, "delivered": 3, "read": 3})
    );
    let again = server.admin_expect("PUT", "/api/groups/team/members/carol", None, 200);
    assert_eq!(
        again, member,
        "PUT of an existing member must leave it unchanged"
    );
    // Online, she is told at once (`joined`, with her welcome-style summary), once.
    let mut joined = carol.recv_type("joined").await;
    let last_ts = joined["last_ts"].as_u64().expect("last_ts");
    assert!(
        last_ts > 1_700_000_000_000,
        "the newest message's time: {joined}"
    );
    joined.as_object_mut().expect("object").remove("last_ts");
    assert_eq!(
        joined,
        json!({
            "type": "joined", "group": "team", "name": "team", "kind": "group",
            "last_seq": 3, "delivered": 3, "read": 3, "unread": 0,
            "receipts": "full", "marked_unread": false, "role": "member", "first_seq": 1
        })
    );
    alice.send_msg("team", "c4", "welcome carol").await;
    let msg = carol.recv_msg("team").await;
    assert!(
        !carol.pending().iter().any(|f| f["type"] == "joined"),
        "a second PUT of a member sent another joined: {:?}",
        carol.pending()
    );
    assert_eq!(
        (seq(&msg), msg["body"].as_str()),
        (4, Some("welcome carol"))
    );
    let carol_again = server.connect("carol").await;
    assert_eq!(
        carol_again.welcome_group("team").expect("team")["unread"],
        1
    );
    bob.recv_msg("team").await;

    // bob is removed: from the moment DELETE returns, he gets no pushes and may not send.
    let (status, body) = server.admin("DELETE", "/api/groups/team/members/bob", None);
    assert_eq!(status, 204, "{body}");
    alice.send_msg("team", "c5", "bob is gone").await;
    let msg = carol.recv_msg("team").await;
    assert_eq!(msg["body"], "bob is gone");
    // bob is told he left; the push to carol has happened; give a push to bob, if any, a moment
    // to show up.
    let left = bob.recv_type("left").await;
    assert_eq!(left["group"], "team", "{left}");
    bob.ping().await;
    bob.drain_for(Duration::from_millis(300)).await;
    bob.assert_no_msg("team");
    bob.expect_error(
        json!({"type": "send", "group": "team", "client_id": "b1", "body": "let me in"}),
        "not_member",
    )
    .await;
    bob.expect_error(json!({"type": "sync", "group": "team"}), "not_member")
        .await;

    let group = server.group("team");
    let users: Vec<&str> = group["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    assert_eq!(users, vec!["alice", "carol"]);
    assert_eq!(group["last_seq"], 5);

    let (status, body) = server.admin("DELETE", "/api/groups/team/members/bob", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_error_code(&body), "not_member");
    assert_eq!(
        body["error"]["message"], "bob is not a member of team",
        "the admin is told about the user named, not \"you\""
    );
    let (status, body) = server.admin("PUT", "/api/groups/nosuch/members/bob", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_error_code(&body), "no_such_group");

    // Re-added, bob joins at the current end and is pushed again.
    let member = server.admin_expect("PUT", "/api/groups/team/members/bob", None, 200);
    assert_eq!(member["joined_seq"], 5);
    let joined = bob.recv_type("joined").await;
    assert_eq!(
        (&joined["group"], &joined["last_seq"], &joined["unread"]),
        (&json!("team"), &json!(5), &json!(0))
    );
    alice.send_msg("team", "c6", "hi again bob").await;
    let msg = bob.recv_msg("team").await;
    assert_eq!((seq(&msg), msg["body"].as_str()), (6, Some("hi again bob")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_sends_are_durable_pushed_and_idempotent() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut bob = server.connect("bob").await;
    let mut alice = server.connect("alice").await;

    let reply = server.admin_expect(
        "POST",
        "/api/groups/team/messages",
        Some(json!({"from": "alice", "body": "deploy finished"})),
        200,
    );
    assert_eq!(reply["seq"], 1, "{reply}");
    assert!(reply["ts"].as_u64().is_some_and(|ts| ts > 0), "{reply}");
    for client in [&mut bob, &mut alice] {
        let msg = client.recv_msg("team").await;
        assert_eq!(msg["from"], "alice");
        assert_eq!(msg["body"], "deploy finished");
        assert_eq!(msg["seq"], 1);
        assert_eq!(msg["ts"], reply["ts"]);
        assert!(
            msg["client_id"].as_str().is_some_and(|c| !c.is_empty()),
            "a generated client_id is expected: {msg}"
        );
    }

    server.admin_expect("POST", "/api/users", Some(json!({"id": "carol"})), 201);
    let with_id = json!({"from": "bob", "body": "build #7 green", "client_id": "ci-7"});
    let first = server.admin_expect(
        "POST",
        "/api/groups/team/messages",
        Some(with_id.clone()),
        200,
    );
    let again = server.admin_expect("POST", "/api/groups/team/messages", Some(with_id), 200);
    assert_eq!(first["seq"], 2);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["ts"], first["ts"]);
    let msg = alice.recv_msg("team").await;
    assert_eq!((msg["client_id"].as_str(), seq(&msg)), (Some("ci-7"), 2));
    // The bot's send and a WebSocket send share client_id space per sender.
    let sent = bob.send_msg("team", "ci-7", "build #7 green").await;
    assert_eq!(sent["duplicate"], true);
    assert_eq!(sent["seq"], 2);
    assert_eq!(server.group("team")["last_seq"], 2);

    for (body, status, code) in [
        (json!({"from": "carol", "body": "hi"}), 403, "not_member"),
        (json!({"from": "alice"}), 400, "bad_request"),
        (json!({"body": "from nobody"}), 400, "bad_request"),
        (json!({"from": "alice", "body": ""}), 400, "bad_request"),
        (
            json!({"from": "alice", "body": "  \n "}),
            400,
            "bad_request",
        ),
        (
            json!({"from": "alice", "body": "x", "admin": true}),
            400,
            "bad_request",
        ),
    ] {
        let (got, reply) = server.admin("POST", "/api/groups/team/messages", Some(body.clone()));
        assert_eq!(got, status, "{body} → {reply}");
        assert_eq!(http_error_code(&reply), code, "{body}");
    }
    let (status, reply) = server.admin(
        "POST",
        "/api/groups/nosuch/messages",
        Some(json!({"from": "alice", "body": "hi"})),
    );
    assert_eq!(status, 404, "{reply}");
    assert_eq!(http_error_code(&reply), "no_such_group");
    assert_eq!(server.group("team")["last_seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_route_pages_like_sync() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=5 {
        alice
            .send_msg("team", &format!("c{i}"), &format!("m{i}"))
            .await;
    }
    let page = server.admin_expect(
        "GET",
        "/api/groups/team/messages?after=0&limit=2",
        None,
        200,
    );
    assert_eq!(page["group"], "team");
    assert_eq!(
        seqs(page["messages"].as_array().expect("messages")),
        vec![1, 2]
    );
    assert_eq!(page["more"], true);
    assert_eq!(page["last_seq"], 5);
    assert_eq!(
        page["messages"][0],
        json!({
            "group": "team", "seq": 1, "from": "alice", "ts": page["messages"][0]["ts"],
            "body": "m1", "client_id": "c1"
        })
    );
    let page = server.admin_expect(
        "GET",
        "/api/groups/team/messages?after=2&limit=100",
        None,
        200,
    );
    assert_eq!(seqs(page["messages"].as_array().unwrap()), vec![3, 4, 5]);
    assert_eq!(page["more"], false);
    let page = server.admin_expect("GET", "/api/groups/team/messages", None, 200);
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        vec![1, 2, 3, 4, 5]
    );
    // The same as the WebSocket sync.
    let sync = alice.sync_page("team", 0, 100).await;
    assert_eq!(sync["messages"], page["messages"]);

    let (status, body) = server.admin("GET", "/api/groups/nosuch/messages", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_error_code(&body), "no_such_group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_users_and_quiet_groups_survive_a_crash() {
    let mut server = Server::start();
    server.admin_expect("POST", "/api/users", Some(json!({"id": "zed"})), 201);
    // A group needs a member.
    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "nobody", "members": []})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (400, "bad_request")
    );
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "empty", "members": ["zed"]})),
        201,
    );
    server.restart(); // SIGKILL right after the 201s
    let (status, body) = server.admin("POST", "/api/users/zed/tokens", None);
    assert_eq!(
        status, 200,
        "a user answered with 201 is gone after a crash: {body}"
    );
    let (status, body) = server.admin("GET", "/api/groups/empty", None);
    assert_eq!(
        status, 200,
        "a group answered with 201 is gone after a crash: {body}"
    );
}

/// A member added while messages stream in gets `joined` before any `msg` of the group, and
/// only messages after its join point.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_added_mid_stream_gets_joined_first() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    let port = server.port;
    let put = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        ureq::put(&format!(
            "http://127.0.0.1:{port}/api/groups/team/members/carol"
        ))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .call()
        .expect("PUT member")
        .into_json::<Value>()
        .expect("member JSON")
    });
    // Keep 200 sends in flight for 600 ms around the PUT.
    let sender = tokio::spawn(async move {
        let start = std::time::Instant::now();
        let (mut written, mut acked) = (0u64, 0u64);
        while start.elapsed() < Duration::from_millis(600) {
            while written - acked < 200 {
                written += 1;
                alice
                    .send_json(json!({"type": "send", "group": "team",
                        "client_id": format!("c{written}"), "body": "x"}))
                    .await;
            }
            alice.recv_type("sent").await;
            acked += 1;
        }
        alice
    });
    let member = tokio::task::spawn_blocking(move || put.join().expect("PUT thread"))
        .await
        .expect("PUT task");
    let _alice = sender.await.expect("sender task");
    let joined_seq = member["joined_seq"].as_u64().expect("joined_seq");

    let first = carol
        .recv_where("a frame of team", |f| f["group"] == "team")
        .await;
    assert_eq!(first["type"], "joined", "carol got {first} before joined");
    assert_eq!(first["last_seq"].as_u64(), Some(joined_seq), "{first}");
    assert_eq!(first["delivered"].as_u64(), Some(joined_seq), "{first}");
    let next = carol.recv_msg("team").await;
    assert_eq!(
        seq(&next),
        joined_seq + 1,
        "carol's first msg follows her join point"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_admin_token() {
    let server = Server::start();
    server.create_group("team", &["alice"]);

    let (status, body) = server.http("GET", "/healthz", None, None);
    assert_eq!(
        (status, &body["status"], &body["role"]),
        (200, &json!("ok"), &json!("active"))
    );

    let user_token = common::token("alice");
    for bearer in [None, Some("wrong-token"), Some(user_token.as_str())] {
        for (method, path, body) in [
            ("GET", "/api/groups/team", None),
            ("POST", "/api/users", Some(json!({"id": "eve"}))),
            (
                "POST",
                "/api/groups",
                Some(json!({"id": "evil", "members": ["eve"]})),
            ),
            ("DELETE", "/api/groups/team/members/alice", None),
            ("GET", "/api/no/such/route", None),
        ] {
            let (status, reply) = server.http(method, path, bearer, body);
            assert_eq!(status, 401, "{method} {path} with {bearer:?} → {reply}");
            assert_eq!(http_error_code(&reply), "unauthorized");
        }
    }
    // Nothing was changed by the refused requests.
    let (status, _) = server.admin("GET", "/api/groups/evil", None);
    assert_eq!(status, 404);
    assert!(member_of(&server.group("team"), "alice").is_some());
    server.admin_expect("POST", "/api/users", Some(json!({"id": "eve"})), 201);

    let (status, body) = server.http("GET", "/api/groups/team", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.admin("GET", "/api/groups/nosuch", None);
    assert_eq!(status, 404);
    assert_eq!(http_error_code(&body), "no_such_group");
    let (status, body) = server.admin("GET", "/api/no/such/route", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http_error_code(&body), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_listed_and_paged_by_id() {
    let server = Server::start();
    server.create_group("b-team", &["alice", "bob"]);
    server.create_group("a-team", &["alice"]);
    server.create_group("c-team", &["carol"]);
    server.post("b-team", "alice", "one");
    server.post("b-team", "bob", "two");
    server.admin_expect(
        "PUT",
        "/api/groups/c-team",
        Some(json!({"name": "Team C", "receipts": "counts"})),
        200,
    );
    let mut alice = server.connect("alice").await;
    alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;

    let page = server.admin_expect("GET", "/api/groups?limit=2", None, 200);
    let ids = |page: &Value| -> Vec<String> {
        page["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| g["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&page), ["a-team", "b-team"]);
    assert_eq!(page["more"], true);
    let b = &page["groups"][1];
    assert_eq!(
        (
            b["name"].as_str(),
            b["kind"].as_str(),
            b["receipts"].as_str()
        ),
        (Some("b-team"), Some("group"), Some("full"))
    );
    assert_eq!(
        (b["last_seq"].as_u64(), b["members"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(b["created_ms"].as_u64().is_some_and(|ms| ms > 0), "{b}");
    let rest = server.admin_expect("GET", "/api/groups?after=b-team", None, 200);
    assert_eq!(ids(&rest), ["c-team", "dm:alice:bob"]);
    assert_eq!(rest["more"], false);
    assert_eq!(
        (
            rest["groups"][0]["name"].as_str(),
            rest["groups"][0]["receipts"].as_str()
        ),
        (Some("Team C"), Some("counts"))
    );
    assert_eq!(rest["groups"][1]["kind"], "direct");
    for bad in ["/api/groups?after=no%20spaces", "/api/groups?sort=name"] {
        let (status, body) = server.admin("GET", bad, None);
        assert_eq!(
            (status, http_error_code(&body).as_str()),
            (400, "bad_request"),
            "{bad}"
        );
    }
    // Unknown fields in a body are refused, and nothing changes.
    let (status, body) = server.admin(
        "PUT",
        "/api/groups/c-team",
        Some(json!({"name": "Hijacked", "admin": true})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (400, "bad_request")
    );
    assert_eq!(server.group("c-team")["name"], "Team C");
    // A direct conversation has no name of its own to change.
    let (status, body) = server.admin(
        "PUT",
        "/api/groups/dm:alice:bob",
        Some(json!({"name": "x"})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (403, "not_allowed")
    );
}
