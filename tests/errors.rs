//! Refused frames: each error code on the WebSocket, the `id` echoed, the session left open, and
//! nothing stored changed. One session's bad input never affects another session.

mod common;

use common::{seq, Client, Server};
use serde_json::{json, Value};

/// The state a refused frame must not change: the group as the admin API shows it, and its
/// messages.
async fn snapshot(server: &Server, client: &mut Client, group: &str) -> (Value, Vec<Value>) {
    (server.group(group), client.sync_all(group, 0).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_bad_frame_and_the_session_survives() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    alice.send_msg("team", "seed", "seed").await;
    let before = snapshot(&server, &mut alice, "team").await;

    // Without a readable id, the error carries none.
    for text in [
        "this is not json",
        r#"{"type":"send","group":"team""#, // truncated JSON
        "[1,2,3]",
        r#""send""#,
        "42",
        "null",
        r#"{"group":"team","seq":1}"#, // no type
        r#"{"type":7}"#,               // type is not a string
    ] {
        alice.send_text(text).await;
        let err = alice.recv_type("error").await;
        assert_eq!(err["code"], "bad_frame", "for {text:?}: {err}");
        assert!(err["message"].is_string(), "{err}");
        assert!(
            err.get("id").is_none() || err["id"].is_null(),
            "for {text:?}: {err}"
        );
        alice.ping().await;
    }

    // With an id, the error echoes it even though the rest is malformed.
    for frame in [
        json!({"type": "send", "id": "m1", "group": "team", "body": "no client_id"}),
        json!({"type": "send", "id": "m2", "group": "team", "client_id": "x"}),
        json!({"type": "send", "id": "m3", "group": "team", "client_id": "x", "body": 5}),
        json!({"type": "ack", "id": 4, "group": "team", "seq": "ten"}),
        json!({"type": "ack", "id": 5, "group": "team", "seq": -1}),
        json!({"type": "read", "id": 6, "group": "team"}),
        json!({"type": "sync", "id": 7, "group": 12}),
        json!({"type": "history", "id": 8, "group": "team", "before": "latest"}),
        json!({"type": "direct", "id": 9}),
        json!({"type": "send", "id": 10, "group": ["team"], "client_id": "x", "body": "b"}),
    ] {
        let err = alice.expect_error(frame.clone(), "bad_frame").await;
        assert_eq!(err["id"], frame["id"], "{err}");
        alice.ping().await;
    }
    alice.assert_no_error();
    assert_eq!(
        snapshot(&server, &mut alice, "team").await,
        before,
        "a refused frame changed state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_bad_frame() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    let long_client_id = "c".repeat(129);
    for frame in [
        json!({"type": "send", "id": 1, "group": "team", "client_id": "", "body": "b"}),
        json!({"type": "send", "id": 2, "group": "team", "client_id": long_client_id, "body": "b"}),
        json!({"type": "sync", "id": 3, "group": "no spaces allowed"}),
        json!({"type": "sync", "id": 4, "group": ""}),
        json!({"type": "direct", "id": 5, "with": "not/valid"}),
    ] {
        let err = alice.expect_error(frame.clone(), "bad_frame").await;
        assert_eq!(err["id"], frame["id"]);
    }
    // 128 characters is still a valid client_id.
    let sent = alice.send_msg("team", &"c".repeat(128), "b").await;
    assert_eq!(seq(&sent), 1);
    assert_eq!(server.group("team")["last_seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_is_reported_and_the_session_survives() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    let err = alice
        .expect_error(
            json!({"type": "dance", "id": "d1", "group": "team"}),
            "unknown_type",
        )
        .await;
    assert_eq!(err["id"], "d1");
    // Server-only frame types are unknown as client frames too.
    alice
        .expect_error(json!({"type": "welcome", "id": "w"}), "unknown_type")
        .await;
    alice.ping().await;
    alice.send_msg("team", "after", "still works").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_groups_and_non_members_are_refused() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server.create_group("private", &["carol"]);
    let mut carol = server.connect("carol").await;
    carol.send_msg("private", "secret-1", "secret").await;
    let mut alice = server.connect("alice").await;
    let private_before = server.group("private");

    let requests = |group: &str| {
        vec![
            json!({"type": "send", "group": group, "client_id": "x", "body": "intrude"}),
            json!({"type": "sync", "group": group}),
            json!({"type": "history", "group": group}),
            json!({"type": "ack", "group": group, "seq": 1}),
            json!({"type": "read", "group": group, "seq": 1}),
        ]
    };
    for (n, frame) in requests("nosuch").into_iter().enumerate() {
        let mut frame = frame;
        frame["id"] = json!(format!("ns-{n}"));
        let err = alice.expect_error(frame.clone(), "no_such_group").await;
        assert_eq!(err["id"], frame["id"]);
    }
    for (n, frame) in requests("private").into_iter().enumerate() {
        let mut frame = frame;
        frame["id"] = json!(format!("nm-{n}"));
        let err = alice.expect_error(frame.clone(), "not_member").await;
        assert_eq!(err["id"], frame["id"]);
        assert!(
            !err.to_string().contains("\"secret\""),
            "a refusal leaked the group's messages: {err}"
        );
    }
    alice.ping().await;
    assert_eq!(
        server.group("private"),
        private_before,
        "a non-member changed the group"
    );
    let (status, _) = server.admin("GET", "/api/groups/nosuch", None);
    assert_eq!(status, 404, "a refused frame created the group");
    // alice was never pushed carol's messages either.
    carol.send_msg("private", "secret-2", "secret").await;
    alice.send_msg("team", "mine", "mine").await;
    alice.recv_msg("team").await;
    alice.assert_no_msg("private");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_too_large() {
    let server = Server::start_with(&["--max-body-bytes", "1024"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    // Exactly at the limit is fine.
    let at_limit = "a".repeat(1024);
    let sent = alice.send_msg("team", "at-limit", &at_limit).await;
    assert_eq!(seq(&sent), 1);

    // One byte over, and over in bytes though not in characters (3-byte '€'), and far over
    // (a frame bigger than common WebSocket defaults of 64 KiB, well below the 1 MiB frame cap).
    for (n, body) in [
        "a".repeat(1025),
        "€".repeat(342), // 342 characters, 1,026 bytes
        "z".repeat(200 * 1024),
    ]
    .into_iter()
    .enumerate()
    {
        let err = alice
            .expect_error(
                json!({"type": "send", "id": n, "group": "team", "client_id": format!("big-{n}"), "body": body}),
                "too_large",
            )
            .await;
        assert_eq!(err["id"], n);
        alice.ping().await;
    }

    // Nothing was stored: the next message is seq 2, and it is the next one bob sees.
    let sent = alice.send_msg("team", "small", "small").await;
    assert_eq!(seq(&sent), 2);
    let msgs = bob.recv_msgs("team", 2).await;
    assert_eq!(msgs[0]["body"], at_limit);
    assert_eq!(seq(&msgs[1]), 2);
    assert_eq!(msgs[1]["body"], "small");
    // A refused client_id was not remembered: sending it again, small, stores it.
    let sent = alice.send_msg("team", "big-0", "now small").await;
    assert_eq!(sent["duplicate"], false);
    assert_eq!(seq(&sent), 3);

    // The admin API applies the same limit with 413.
    let (status, body) = server.admin(
        "POST",
        "/api/groups/team/messages",
        Some(json!({"from": "alice", "body": "b".repeat(1025)})),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(common::http_error_code(&body), "too_large");
    // A request body larger than any valid one (300 KiB, past actix's own 256 KiB limit) is
    // refused before it is parsed, with the same JSON error shape.
    let (status, body) = server.admin(
        "POST",
        "/api/groups/team/messages",
        Some(json!({"from": "alice", "body": "b".repeat(300 << 10)})),
    );
    assert_eq!(status, 413, "{body}");
    assert_eq!(common::http_error_code(&body), "too_large");
    assert_eq!(server.group("team")["last_seq"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_never_closes_other_sessions() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut alice_phone = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    alice.send_text("{{{{ garbage").await;
    assert_eq!(alice.recv_type("error").await["code"], "bad_frame");
    alice.send_json(json!({"type": "explode"})).await;
    assert_eq!(alice.recv_type("error").await["code"], "unknown_type");

    // A frame above the 1 MiB default of --max-frame-bytes is dropped with too_large ...
    alice
        .send_text(&format!(
            r#"{{"type":"send","id":"big","group":"team","client_id":"huge","body":"{}"}}"#,
            "h".repeat(1_100_000)
        ))
        .await;
    let err = alice.recv_type("error").await;
    assert_eq!(err["code"], "too_large", "{err}");
    assert!(err["id"].is_null(), "the frame was never parsed: {err}");

    // ... and every session, the offending one included, carries on.
    bob.send_msg("team", "b1", "still here?").await;
    for client in [&mut alice, &mut alice_phone, &mut bob] {
        let msg = client.recv_msg("team").await;
        assert_eq!(msg["body"], "still here?");
        assert_eq!(seq(&msg), 1, "the oversized send must not be stored");
        client.ping().await;
        client.assert_no_error();
    }
}
