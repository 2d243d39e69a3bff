//! Accounts (docs/PROTOCOL.md §2, §2.1): passwords and `POST /api/login`, changing a password,
//! revoking tokens, deactivating users, one-time sign-in links, token lifetimes, and nobody
//! created because someone else named them. Every test runs a real server process and real
//! WebSocket clients; refusals are checked to change nothing.

mod common;

use std::time::Duration;

use common::{http_error_code, sign, token, Client, Server, WireEnd, ADMIN_TOKEN, JWT_SECRET};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// Creates `id` with [`PASSWORD`].
fn create_with_password(server: &Server, id: &str) -> Value {
    server.admin_expect(
        "POST",
        "/api/users",
        Some(json!({"id": id, "name": id.to_uppercase(), "password": PASSWORD})),
        201,
    )
}

fn login(server: &Server, user: &str, password: &str) -> (u16, Value) {
    server.http(
        "POST",
        "/api/login",
        None,
        Some(json!({"user": user, "password": password})),
    )
}

/// Logs in, which must succeed; returns the token.
fn login_token(server: &Server, user: &str, password: &str) -> String {
    let (status, body) = login(server, user, password);
    assert_eq!(status, 200, "login of {user}: {body}");
    assert_eq!(body["user"], user);
    body["token"].as_str().expect("a token").to_string()
}

/// The HTTP status of a WebSocket upgrade with `token`.
async fn upgrade_status(server: &Server, token: &str) -> u16 {
    match Client::try_connect(&server.ws_url(), Some(token)).await {
        Ok(client) => {
            client.close().await;
            101
        }
        Err(status) => status,
    }
}

/// Waits for the server to close `client`; asserts close code 4001.
async fn expect_4001(client: &mut Client) {
    match client.expect_closed().await {
        WireEnd::Closed(Some(4001)) => {}
        other => panic!("[{}] expected close code 4001, got {other:?}", client.user),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_signs_in_and_every_refusal_looks_the_same() {
    let server = Server::start();
    create_with_password(&server, "alice");
    let token = login_token(&server, "alice", PASSWORD);
    let alice = Client::connect(&server.ws_url(), &token).await;
    assert_eq!(alice.welcome["user"], "alice");

    server.admin_expect("POST", "/api/users", Some(json!({"id": "tokenonly"})), 201);
    let mut refusals = Vec::new();
    for (user, password) in [
        ("alice", "wrong password"),
        ("nobody", PASSWORD),
        ("tokenonly", PASSWORD),
        ("not an id!", PASSWORD),
    ] {
        let (status, body) = login(&server, user, password);
        assert_eq!(status, 401, "{user}: {body}");
        refusals.push(body);
    }
    // The same body for a wrong password, an unknown user, a user without a password and a
    // malformed id: the answer does not tell which users exist.
    assert!(
        refusals.windows(2).all(|w| w[0] == w[1]),
        "refusals differ: {refusals:?}"
    );
    assert_eq!(http_error_code(&refusals[0]), "bad_credentials");

    // A password must have 8 characters; a bad body is refused.
    for body in [
        json!({"id": "bob", "password": "short"}),
        json!({"id": "bob", "name": "   "}),
        json!({"id": "bob", "name": "x".repeat(101)}),
        json!({"id": "bob", "admin": true}),
    ] {
        let (status, answer) = server.admin("POST", "/api/users", Some(body.clone()));
        assert_eq!(
            (status, http_error_code(&answer).as_str()),
            (400, "bad_request"),
            "{body}"
        );
    }
    let (status, _) = server.admin("GET", "/api/users/bob", None);
    assert_eq!(status, 404, "a refused create stored the user");
    for body in [
        json!({"user": "alice"}),
        json!({"user": "alice", "password": PASSWORD, "link": "x"}),
        json!({"user": "alice", "password": PASSWORD, "remember": true}),
    ] {
        let (status, answer) = server.http("POST", "/api/login", None, Some(body.clone()));
        assert_eq!(
            (status, http_error_code(&answer).as_str()),
            (400, "bad_request"),
            "{body}"
        );
    }
    // A name is trimmed.
    let carol = server.admin_expect(
        "POST",
        "/api/users",
        Some(json!({"id": "carol", "name": "  Carol C.  ", "password": PASSWORD})),
        201,
    );
    assert_eq!(carol["name"], "Carol C.");
    let info = server.admin_expect("GET", "/api/users/carol", None, 200);
    assert_eq!(
        info,
        json!({"id": "carol", "name": "Carol C.", "created_ms": info["created_ms"],
               "deactivated": false, "share_reads": true, "has_password": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_of_one_user_are_rate_limited() {
    let server = Server::start();
    create_with_password(&server, "alice");
    create_with_password(&server, "bob");
    for _ in 0..5 {
        let (status, _) = login(&server, "alice", "guess-guess");
        assert_eq!(status, 401);
    }
    // The sixth attempt is refused before the password is checked, the right one too.
    for password in ["guess-guess", PASSWORD] {
        let (status, body) = login(&server, "alice", password);
        assert_eq!(status, 429, "{body}");
        assert_eq!(http_error_code(&body), "rate_limited");
        let wait = body["error"]["retry_after_ms"]
            .as_u64()
            .expect("retry_after_ms");
        assert!((1..=60_000).contains(&wait), "{body}");
    }
    // Another user is not affected; names that do not exist are limited alike.
    login_token(&server, "bob", PASSWORD);
    for _ in 0..5 {
        login(&server, "ghost", "guess-guess");
    }
    let (status, _) = login(&server, "ghost", "guess-guess");
    assert_eq!(status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_refuses_every_earlier_token() {
    let server = Server::start();
    let created = create_with_password(&server, "alice");
    let first = created["token"].as_str().expect("token").to_string();
    let second = login_token(&server, "alice", PASSWORD);
    let mut open = Client::connect(&server.ws_url(), &second).await;

    let change = |bearer: &str, body: Value| {
        server.http("POST", "/api/me/password", Some(bearer), Some(body))
    };
    // Wrong old password, short new one, no user token: refused, nothing changes.
    let (status, body) = change(&second, json!({"old": "not it", "new": "brand new pw"}));
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (401, "bad_credentials")
    );
    let (status, body) = change(&second, json!({"old": PASSWORD, "new": "short"}));
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (400, "bad_request")
    );
    let (status, body) = change(ADMIN_TOKEN, json!({"old": PASSWORD, "new": "brand new pw"}));
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (401, "unauthorized")
    );
    let (status, _) = server.http(
        "POST",
        "/api/me/password",
        None,
        Some(json!({"old": PASSWORD, "new": "brand new pw"})),
    );
    assert_eq!(status, 401);
    open.ping().await;
    login_token(&server, "alice", PASSWORD);

    let (status, body) = change(&second, json!({"old": PASSWORD, "new": "brand new pw"}));
    assert_eq!(status, 200, "{body}");
    let fresh = body["token"].as_str().expect("a new token").to_string();
    // The open session closes with 4001; every earlier token is refused, the new one works.
    expect_4001(&mut open).await;
    for old in [&first, &second] {
        assert_eq!(upgrade_status(&server, old).await, 401);
        let (status, _) = change(old, json!({"old": "brand new pw", "new": "another one!"}));
        assert_eq!(status, 401);
    }
    let alice = Client::connect(&server.ws_url(), &fresh).await;
    assert_eq!(alice.welcome["user"], "alice");
    let (status, _) = login(&server, "alice", PASSWORD);
    assert_eq!(status, 401, "the old password still signs in");
    login_token(&server, "alice", "brand new pw");

    // A user without a password sets a first one without `old`.
    let created = server.admin_expect("POST", "/api/users", Some(json!({"id": "bob"})), 201);
    let bob = created["token"].as_str().expect("token").to_string();
    let (status, body) = change(&bob, json!({"new": "bobs first pw"}));
    assert_eq!(status, 200, "{body}");
    login_token(&server, "bob", "bobs first pw");
    // ... and from then on needs it.
    let fresh_bob = body["token"].as_str().expect("token").to_string();
    let (status, _) = change(&fresh_bob, json!({"new": "bobs other pw"}));
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_refuses_tokens_of_the_same_second_and_closes_sessions() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let minted = server.admin_expect("POST", "/api/users/alice/tokens", Some(json!({})), 200);
    let minted = minted["token"].as_str().expect("token").to_string();
    let mut alice1 = Client::connect(&server.ws_url(), &minted).await;
    let mut alice2 = Client::connect(&server.ws_url(), &minted).await;
    let mut bob = server.connect("bob").await;

    let (status, body) = server.admin("POST", "/api/users/alice/revoke", None);
    assert_eq!(status, 204, "{body}");
    expect_4001(&mut alice1).await;
    expect_4001(&mut alice2).await;
    bob.ping().await; // others stay
                      // Issued within the same second as the revoke, and still refused: a generation, not a time.
    assert_eq!(upgrade_status(&server, &minted).await, 401);
    // A backend's token (no generation) issued before the revoke's second is refused too.
    assert_eq!(upgrade_status(&server, &token("alice")).await, 401);
    let (status, body) = server.admin("POST", "/api/users/nobody/revoke", None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_user")
    );

    // A token issued now works; a backend's token issued after the revoke's second works.
    let fresh = server.admin_expect("POST", "/api/users/alice/tokens", None, 200);
    let alice = Client::connect(&server.ws_url(), fresh["token"].as_str().unwrap()).await;
    assert_eq!(alice.welcome["groups"][0]["group"], "team");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(upgrade_status(&server, &token("alice")).await, 101);
    // A backend's minimal token (sub and exp only) was good before any revoke; for alice it
    // is refused now, for bob it still works.
    let minimal = |user: &str| {
        sign(
            &json!({"sub": user, "exp": common::now_secs() + 600}),
            JWT_SECRET,
        )
    };
    assert_eq!(upgrade_status(&server, &minimal("alice")).await, 401);
    assert_eq!(upgrade_status(&server, &minimal("bob")).await, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_is_shut_out_and_restored_with_their_history() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server.admin_expect(
        "PUT",
        "/api/users/bob",
        Some(json!({"password": PASSWORD})),
        200,
    );
    let bob_token = login_token(&server, "bob", PASSWORD);
    let mut bob = Client::connect(&server.ws_url(), &bob_token).await;
    bob.send_msg("team", "b1", "before").await;
    let mut alice = server.connect("alice").await;

    let info = server.admin_expect(
        "PUT",
        "/api/users/bob",
        Some(json!({"deactivated": true})),
        200,
    );
    assert_eq!(info["deactivated"], true);
    expect_4001(&mut bob).await;
    assert_eq!(upgrade_status(&server, &bob_token).await, 401);
    assert_eq!(upgrade_status(&server, &token("bob")).await, 401);
    let (status, body) = login(&server, "bob", PASSWORD);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (401, "bad_credentials")
    );
    // Nobody picks them any more; their messages stay.
    let users = alice.request(json!({"type": "users"})).await;
    let ids: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert_eq!(ids, ["alice"], "{users}");
    alice
        .expect_error(json!({"type": "direct", "with": "bob"}), "no_such_user")
        .await;
    let history = alice.sync_page("team", 0, 10).await;
    assert_eq!(history["messages"][0]["body"], "before");
    let listed = server.admin_expect("GET", "/api/users", None, 200);
    assert_eq!(listed["users"][1]["deactivated"], true, "{listed}");

    // Survives a crash; `false` restores everything, earlier tokens included.
    server.restart();
    assert_eq!(upgrade_status(&server, &bob_token).await, 401);
    server.admin_expect(
        "PUT",
        "/api/users/bob",
        Some(json!({"deactivated": false})),
        200,
    );
    let bob = Client::connect(&server.ws_url(), &bob_token).await;
    assert_eq!(bob.welcome["groups"][0]["group"], "team");
    login_token(&server, "bob", PASSWORD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_link_works_once() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let link = server.admin_expect("POST", "/api/users/alice/login-link", None, 200);
    let token = link["link"].as_str().expect("link").to_string();
    assert_eq!(link["path"], format!("/?link={token}"));
    assert!(link["expires_ms"].as_u64().unwrap() > common::now_secs() * 1000);
    // A link is not a token.
    assert_eq!(upgrade_status(&server, &token).await, 401);

    let exchange =
        |link: &str| server.http("POST", "/api/login", None, Some(json!({"link": link})));
    let (status, body) = exchange(&token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
    let alice = Client::connect(&server.ws_url(), body["token"].as_str().unwrap()).await;
    assert_eq!(alice.welcome["groups"][0]["group"], "team");
    let (status, body) = exchange(&token);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (401, "bad_credentials")
    );

    // Using a newer link makes an older, unused one worthless.
    let older = server.admin_expect("POST", "/api/users/alice/login-link", None, 200);
    let newer = server.admin_expect("POST", "/api/users/alice/login-link", None, 200);
    assert_eq!(exchange(newer["link"].as_str().unwrap()).0, 200);
    assert_eq!(exchange(older["link"].as_str().unwrap()).0, 401);
    // A revoke kills unused links.
    let unused = server.admin_expect("POST", "/api/users/alice/login-link", None, 200);
    server.admin_expect("POST", "/api/users/alice/revoke", None, 204);
    assert_eq!(exchange(unused["link"].as_str().unwrap()).0, 401);
    assert_eq!(exchange("not.a.link").0, 401);
    let (status, _) = server.admin("POST", "/api/users/nobody/login-link", None);
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetimes_are_checked() {
    let server = Server::start();
    server.admin_expect("POST", "/api/users", Some(json!({"id": "alice"})), 201);
    for bad in [
        json!({"ttl_secs": 0}),
        json!({"ttl_secs": 365 * 24 * 3600 + 1}),
        json!({"ttl_secs": "long"}),
        json!({"ttl": 60}),
    ] {
        for route in ["tokens", "login-link"] {
            let path = format!("/api/users/alice/{route}");
            let (status, body) = server.admin("POST", &path, Some(bad.clone()));
            assert_eq!(
                (status, http_error_code(&body).as_str()),
                (400, "bad_request"),
                "{route} {bad}"
            );
        }
    }
    let year = server.admin_expect(
        "POST",
        "/api/users/alice/tokens",
        Some(json!({"ttl_secs": 365 * 24 * 3600})),
        200,
    );
    assert_eq!(
        upgrade_status(&server, year["token"].as_str().unwrap()).await,
        101
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_is_created_because_someone_else_named_them() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    alice
        .expect_error(json!({"type": "direct", "with": "nobody"}), "no_such_user")
        .await;
    let (status, body) = server.admin("PUT", "/api/groups/team/members/neverexisted", None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_user")
    );
    for user in ["nobody", "neverexisted"] {
        let (status, _) = server.admin("GET", &format!("/api/users/{user}"), None);
        assert_eq!(status, 404, "{user} was created");
    }
    let members = server.group("team")["members"].as_array().unwrap().len();
    assert_eq!(members, 1);
    // A token signed with the secret (the team's backend) creates its own user on connect.
    let dora = server.connect("dora").await;
    assert_eq!(dora.welcome["user"], "dora");
    server.admin_expect("GET", "/api/users/dora", None, 200);
    let direct = alice
        .request(json!({"type": "direct", "with": "dora"}))
        .await;
    assert_eq!(direct["group"], "dm:alice:dora");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_renamed_and_paged() {
    let server = Server::start();
    for id in ["carol", "alice", "bob"] {
        server.admin_expect("POST", "/api/users", Some(json!({"id": id})), 201);
    }
    let page = server.admin_expect("GET", "/api/users?limit=2", None, 200);
    let ids = |page: &Value| -> Vec<String> {
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), ["alice", "bob"]);
    assert_eq!(page["more"], true);
    let rest = server.admin_expect("GET", "/api/users?after=bob&limit=2", None, 200);
    assert_eq!(ids(&rest), ["carol"]);
    assert_eq!(rest["more"], false);
    for bad in [
        "/api/users?after=not%20an%20id",
        "/api/users?limit=x",
        "/api/users?page=2",
    ] {
        let (status, body) = server.admin("GET", bad, None);
        assert_eq!(
            (status, http_error_code(&body).as_str()),
            (400, "bad_request"),
            "{bad}"
        );
    }

    let renamed = server.admin_expect(
        "PUT",
        "/api/users/alice",
        Some(json!({"name": " Alice Liddell "})),
        200,
    );
    assert_eq!(renamed["name"], "Alice Liddell");
    for bad in [
        json!({"name": ""}),
        json!({"password": "short"}),
        json!({"admin": true}),
    ] {
        let (status, body) = server.admin("PUT", "/api/users/alice", Some(bad.clone()));
        assert_eq!(
            (status, http_error_code(&body).as_str()),
            (400, "bad_request"),
            "{bad}"
        );
    }
    assert_eq!(
        server.admin_expect("GET", "/api/users/alice", None, 200)["name"],
        "Alice Liddell"
    );
    let (status, body) = server.admin("PUT", "/api/users/nobody", Some(json!({"name": "N"})));
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_user")
    );
    let mut bob = server.connect("bob").await;
    let users = bob.request(json!({"type": "users"})).await;
    assert_eq!(
        users["users"][0],
        json!({"id": "alice", "name": "Alice Liddell"})
    );
}
