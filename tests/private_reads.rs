//! Private reads (docs/PROTOCOL.md §4.2): the user setting `share_reads`, read and changed with the
//! `settings` frame and the admin `GET`/`PUT /api/users/{uid}`. A member who does not share reads
//! is never counted or listed as having read another's message — once delivered they count and
//! list as delivered — in `receipt` pushes, `receipts`, `readers` and the admin receipts route,
//! for past and future messages alike, at once; their own read mark, `unread` and `read_sync` are
//! unchanged.

mod common;

use std::collections::BTreeMap;

use common::controls::{items, names, user_list};
use common::{http_error_code, Client, Server};
use serde_json::json;

type Counts = (u64, u64, u64, u64);
type Lists = (Vec<String>, Vec<String>, Vec<String>);

fn start() -> Server {
    Server::start_with(&["--receipt-interval-ms", "100"])
}

/// Gathers `receipt` pushes of `group` until every item of `expected` was shown with these counts
/// (the latest push of a seq counts).
async fn await_receipt(client: &mut Client, group: &str, expected: &[Counts]) {
    let mut seen: BTreeMap<u64, Counts> = BTreeMap::new();
    while expected.iter().any(|item| seen.get(&item.0) != Some(item)) {
        let frame = client
            .recv_where(
                &format!("receipts {expected:?} of {group} (seen {seen:?})"),
                |f| f["type"] == "receipt" && f["group"] == group,
            )
            .await;
        for item in items(&frame) {
            seen.insert(item.0, item);
        }
    }
}

/// The pulled counts of `seqs`, in the order asked.
async fn pulled(client: &mut Client, group: &str, seqs: &[u64]) -> Vec<Counts> {
    let reply = client
        .request(json!({"type": "receipts", "group": group, "seqs": seqs}))
        .await;
    assert_eq!(reply["type"], "receipts", "{reply}");
    items(&reply)
}

/// (read, delivered, unread) of one message from `readers`, checked equal to the admin route.
async fn lists(server: &Server, client: &mut Client, group: &str, seq: u64) -> Lists {
    let reply = client
        .request(json!({"type": "readers", "group": group, "seq": seq}))
        .await;
    assert_eq!(reply["type"], "readers", "{reply}");
    let ws = (
        user_list(&reply, "read"),
        user_list(&reply, "delivered"),
        user_list(&reply, "unread"),
    );
    let admin = server.admin_expect(
        "GET",
        &format!("/api/groups/{group}/messages/{seq}/receipts"),
        None,
        200,
    );
    let http = (
        user_list(&admin, "read"),
        user_list(&admin, "delivered"),
        user_list(&admin, "unread"),
    );
    assert_eq!(
        ws, http,
        "readers frame and admin route of {group}/{seq} differ"
    );
    ws
}

fn lists_of(read: &str, delivered: &str, unread: &str) -> Lists {
    (names(read), names(delivered), names(unread))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_the_admin_user_route_read_and_change_share_reads() {
    let mut server = start();
    let mut alice = server.connect("alice").await;
    let reply = alice.request(json!({"type": "settings", "id": "s1"})).await;
    assert_eq!(
        reply,
        json!({"type": "settings", "id": "s1", "share_reads": true}),
        "the default"
    );
    // Without an id, the reply has none.
    alice.send_json(json!({"type": "settings"})).await;
    assert_eq!(
        alice.recv_type("settings").await,
        json!({"type": "settings", "share_reads": true})
    );

    let reply = alice
        .request(json!({"type": "settings", "id": 9, "share_reads": false}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "settings", "id": 9, "share_reads": false})
    );
    let mut alice2 = server.connect("alice").await;
    assert_eq!(
        alice2.settings(None).await["share_reads"],
        false,
        "another session sees it"
    );
    let user = server.user("alice");
    assert_eq!(user["id"], "alice", "{user}");
    assert_eq!(user["name"], "alice", "{user}");
    assert!(
        user["created_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000),
        "{user}"
    );
    assert_eq!(user["share_reads"], false, "{user}");

    // Refused frames change nothing, and the session goes on.
    for bad in [json!("no"), json!(0), json!([false]), json!({})] {
        alice
            .expect_error(json!({"type": "settings", "share_reads": bad}), "bad_frame")
            .await;
    }
    assert_eq!(alice.settings(None).await["share_reads"], false);

    // The admin route: back to true, seen by the sessions at once; fields left out stay.
    let created = server.admin_expect(
        "POST",
        "/api/users",
        Some(json!({"id": "bob", "name": "Bob B."})),
        201,
    );
    assert_eq!(created["id"], "bob");
    let changed = server.set_share_reads("alice", true);
    assert_eq!(changed["share_reads"], true, "{changed}");
    assert_eq!(changed["created_ms"], user["created_ms"], "{changed}");
    assert_eq!(alice2.settings(None).await["share_reads"], true);
    let unchanged = server.admin_expect("PUT", "/api/users/alice", Some(json!({})), 200);
    assert_eq!(unchanged, changed, "an empty PUT changes nothing");
    let bob = server.set_share_reads("bob", false);
    assert_eq!(
        (bob["name"].clone(), bob["share_reads"].clone()),
        (json!("Bob B."), json!(false)),
        "{bob}"
    );
    for (method, path, body, status, code) in [
        ("GET", "/api/users/nobody", None, 404, "no_such_user"),
        (
            "PUT",
            "/api/users/nobody",
            Some(json!({"share_reads": false})),
            404,
            "no_such_user",
        ),
        (
            "PUT",
            "/api/users/alice",
            Some(json!({"share_reads": "no"})),
            400,
            "bad_request",
        ),
    ] {
        let (got, answer) = server.admin(method, path, body);
        assert_eq!(
            (got, http_error_code(&answer)),
            (status, code.to_string()),
            "{method} {path}"
        );
    }
    let (status, _) = server.http("GET", "/api/users/alice", None, None);
    assert_eq!(status, 401, "GET a user without the admin token");
    let (status, _) = server.http("GET", "/api/users/alice", Some("wrong"), None);
    assert_eq!(status, 401);
    let (status, _) = server.admin("GET", "/api/users/nobody", None);
    assert_eq!(status, 404, "a refused PUT created a user");
    assert_eq!(
        server.user("alice")["share_reads"],
        true,
        "a refused PUT changed it"
    );

    // The admin PUT answered after the change was durable: it survives kill -9.
    server.restart();
    assert_eq!(server.user("bob")["share_reads"], false);
    assert_eq!(server.user("alice")["share_reads"], true);
    // The frame's change survives a graceful restart.
    let mut alice = server.connect("alice").await;
    assert_eq!(alice.settings(Some(false)).await["share_reads"], false);
    drop(alice);
    drop(alice2);
    server.graceful_restart();
    assert_eq!(server.user("alice")["share_reads"], false);
    let mut alice = server.connect("alice").await;
    assert_eq!(alice.settings(None).await["share_reads"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_reader_counts_as_delivered_on_every_path() {
    let server = start();
    server.create_group("g", &["alice", "bob", "carol", "dave"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    assert_eq!(bob.settings(Some(false)).await["share_reads"], false);
    alice.send_msg("g", "a1", "one").await;
    alice.send_msg("g", "a2", "two").await;

    // Bob reads both (privately), carol reads 1, dave is offline.
    bob.read_to("g", 2).await;
    carol.read_to("g", 1).await;
    await_receipt(&mut alice, "g", &[(1, 3, 2, 1), (2, 3, 1, 0)]).await;
    assert_eq!(
        pulled(&mut alice, "g", &[1, 2]).await,
        vec![(1, 3, 2, 1), (2, 3, 1, 0)]
    );
    let mine = alice
        .request(json!({"type": "receipts", "group": "g", "mine": true}))
        .await;
    assert_eq!(items(&mine), vec![(1, 3, 2, 1), (2, 3, 1, 0)], "{mine}");
    assert_eq!(
        lists(&server, &mut alice, "g", 1).await,
        lists_of("carol", "bob", "dave")
    );
    assert_eq!(
        lists(&server, &mut carol, "g", 2).await,
        lists_of("", "bob", "carol dave")
    );

    // Bob's own side is unchanged: his other session follows his read, his mark and unread are
    // what he read.
    let sync = bob2.recv_type("read_sync").await;
    assert_eq!(sync, json!({"type": "read_sync", "group": "g", "seq": 2}));
    let bob3 = server.connect("bob").await;
    let entry = bob3.welcome_group("g").expect("g in welcome");
    assert_eq!(
        (entry["read"].clone(), entry["unread"].clone()),
        (json!(2), json!(0)),
        "{entry}"
    );
    // ... and others reading his messages is shown to him as ever.
    let sent = bob.send_msg("g", "b3", "three").await;
    assert_eq!(sent["seq"], 3);
    carol.read_to("g", 3).await;
    await_receipt(&mut bob, "g", &[(3, 3, 1, 1)]).await;
    assert_eq!(
        lists(&server, &mut bob, "g", 3).await,
        lists_of("carol", "", "alice dave")
    );

    // (Carol's read of 3 covered 2 as well.)
    await_receipt(&mut alice, "g", &[(2, 3, 2, 1)]).await;

    // Sharing again applies at once to past messages, and the sender is pushed the new counts.
    assert_eq!(bob.settings(Some(true)).await["share_reads"], true);
    await_receipt(&mut alice, "g", &[(1, 3, 2, 2), (2, 3, 2, 2)]).await;
    assert_eq!(
        lists(&server, &mut alice, "g", 1).await,
        lists_of("bob carol", "", "dave")
    );
    assert_eq!(
        lists(&server, &mut alice, "g", 2).await,
        lists_of("bob carol", "", "dave")
    );

    // Private again, through the admin route: hidden again at once, pushed on the next tick.
    server.set_share_reads("bob", false);
    await_receipt(&mut alice, "g", &[(1, 3, 2, 1), (2, 3, 2, 1)]).await;
    assert_eq!(
        lists(&server, &mut alice, "g", 2).await,
        lists_of("carol", "bob", "dave")
    );
    // Future messages too: bob reads a new one, carol only receives it.
    alice.send_msg("g", "a4", "four").await;
    bob.read_to("g", 4).await;
    carol.ack_to("g", 4).await;
    await_receipt(&mut alice, "g", &[(4, 3, 2, 0)]).await;
    assert_eq!(
        lists(&server, &mut alice, "g", 4).await,
        lists_of("", "bob carol", "dave")
    );
    assert_eq!(
        pulled(&mut alice, "g", &[4, 1]).await,
        vec![(4, 3, 2, 0), (1, 3, 2, 1)]
    );
    // Bob's read mark really is at 4 (his own view).
    let bob4 = server.connect("bob").await;
    assert_eq!(bob4.welcome_group("g").expect("g")["read"], 4);
    for client in [&alice, &bob, &bob2, &carol] {
        client.assert_no_error();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_reader_is_hidden_under_counts_too() {
    let server = start();
    server.create_group_with_receipts("g", &["alice", "bob", "carol"], "counts");
    server.set_share_reads("bob", false);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    alice.send_msg("g", "a1", "x").await;
    bob.read_to("g", 1).await;
    carol.read_to("g", 1).await;
    await_receipt(&mut alice, "g", &[(1, 2, 2, 1)]).await;
    assert_eq!(pulled(&mut alice, "g", &[1]).await, vec![(1, 2, 2, 1)]);
    let admin = server.admin_expect("GET", "/api/groups/g/messages/1/receipts", None, 200);
    assert_eq!(
        (
            user_list(&admin, "read"),
            user_list(&admin, "delivered"),
            user_list(&admin, "unread")
        ),
        lists_of("carol", "bob", "")
    );
}
