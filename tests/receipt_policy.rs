//! Per-group receipt policy (docs/PROTOCOL.md §4.1): `full` (the default), `counts` and `off`, set
//! at `POST /api/groups` and changed with `PUT /api/groups/{gid}`; shown in the group JSON, in
//! `welcome` and `joined` entries, pushed as `group_updated`; durable before the 200. Under
//! `counts` the counts flow as usual but `readers` is `receipts_hidden`; under `off` no `receipt`
//! is pushed and `receipts`, `readers`, `remind` (and a scheduled send) are `receipts_off`.
//! Cursors, `unread`, `read_sync` and the admin receipts route work under every policy.

mod common;

use std::time::Duration;

use common::controls::{items, names, user_list};
use common::{http_error_code, Client, Server};
use serde_json::json;

/// One tick of the servers below is 100 ms; "a few ticks" for asserting an absence.
const TICKS: Duration = Duration::from_millis(400);

fn start() -> Server {
    Server::start_with(&[
        "--receipt-interval-ms",
        "100",
        "--remind-interval-secs",
        "1",
    ])
}

/// The admin receipts route for one message: (read, delivered, unread).
fn admin_readers(
    server: &Server,
    group: &str,
    seq: u64,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let body = server.admin_expect(
        "GET",
        &format!("/api/groups/{group}/messages/{seq}/receipts"),
        None,
        200,
    );
    assert_eq!(
        (body["group"].clone(), body["seq"].clone()),
        (json!(group), json!(seq))
    );
    (
        user_list(&body, "read"),
        user_list(&body, "delivered"),
        user_list(&body, "unread"),
    )
}

/// Waits until the `receipt` pushes of `group` have shown every item of `expected` with these
/// counts (a push lists only the messages whose counts changed in its tick, so the items are
/// gathered over the pushes; a later push of a seq replaces its earlier counts).
async fn await_receipt(client: &mut Client, group: &str, expected: &[(u64, u64, u64, u64)]) {
    let mut seen: std::collections::BTreeMap<u64, (u64, u64, u64, u64)> = Default::default();
    while expected.iter().any(|item| seen.get(&item.0) != Some(item)) {
        let frame = client
            .recv_where(
                &format!("a receipt of {group} (seen so far: {seen:?})"),
                |f| f["type"] == "receipt" && f["group"] == group,
            )
            .await;
        for item in items(&frame) {
            seen.insert(item.0, item);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_set_at_creation_and_shown_everywhere() {
    let server = start();
    let default = server.create_group("plain", &["alice", "bob"]);
    assert_eq!(default["receipts"], "full", "the default policy: {default}");
    for policy in ["full", "counts", "off"] {
        let group = format!("g-{policy}");
        let created = server.create_group_with_receipts(&group, &["alice", "bob"], policy);
        assert_eq!(created["receipts"], policy, "{created}");
        assert_eq!(created["id"], group.as_str(), "{created}");
        assert_eq!(server.group(&group)["receipts"], policy);
    }

    // A policy that is none of the three is refused; the group is not created.
    for bad in [json!("none"), json!(true), json!(1), json!("FULL")] {
        let (status, body) = server.admin(
            "POST",
            "/api/groups",
            Some(json!({"id": "bad", "members": ["alice"], "receipts": bad})),
        );
        assert_eq!(
            (status, http_error_code(&body)),
            (400, "bad_request".into()),
            "{bad}"
        );
    }
    let (status, _) = server.admin("GET", "/api/groups/bad", None);
    assert_eq!(status, 404, "a refused POST created the group");

    // welcome lists each group's policy.
    let alice = server.connect("alice").await;
    for (group, policy) in [
        ("plain", "full"),
        ("g-full", "full"),
        ("g-counts", "counts"),
        ("g-off", "off"),
    ] {
        let entry = alice.welcome_group(group).expect("listed in welcome");
        assert_eq!(entry["receipts"], policy, "{entry}");
        assert_eq!(entry["marked_unread"], false, "{entry}");
    }

    // joined, for a member added while online, shows it too.
    let mut carol = server.connect("carol").await;
    server.ensure_users(&["carol"]);
    server.admin_expect("PUT", "/api/groups/g-counts/members/carol", None, 200);
    let joined = carol.recv_type("joined").await;
    assert_eq!(joined["group"], "g-counts", "{joined}");
    assert_eq!(joined["receipts"], "counts", "{joined}");
    assert_eq!(joined["marked_unread"], false, "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_changes_the_policy_durably_and_pushes_group_updated_once() {
    let mut server = start();
    server.create_group("g", &["alice", "bob"]);
    server.create_group("other", &["carol"]);
    let mut alice1 = server.connect("alice").await;
    let mut alice2 = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    let changed = server.set_receipts("g", "counts");
    assert_eq!(changed["receipts"], "counts", "{changed}");
    assert_eq!(changed["id"], "g", "{changed}");
    assert_eq!(changed["name"], "g", "{changed}");
    assert_eq!(changed["kind"], "group", "{changed}");
    let expected =
        json!({"type": "group_updated", "group": "g", "name": "g", "receipts": "counts"});
    for client in [&mut alice1, &mut alice2, &mut bob] {
        assert_eq!(
            client.recv_type("group_updated").await,
            expected,
            "[{}]",
            client.user
        );
    }

    // A PUT that changes nothing answers the group and pushes nothing: the next push every
    // member sees is the one of the following (real) change.
    let same = server.set_receipts("g", "counts");
    assert_eq!(
        same, changed,
        "a PUT that changes nothing answers the same group"
    );
    let renamed = server.admin_expect(
        "PUT",
        "/api/groups/g",
        Some(json!({"name": "  Engineering  ", "receipts": "off"})),
        200,
    );
    assert_eq!(
        renamed["name"], "Engineering",
        "the name is trimmed: {renamed}"
    );
    assert_eq!(renamed["receipts"], "off", "{renamed}");
    let expected =
        json!({"type": "group_updated", "group": "g", "name": "Engineering", "receipts": "off"});
    for client in [&mut alice1, &mut alice2, &mut bob] {
        assert_eq!(
            client.recv_type("group_updated").await,
            expected,
            "[{}] the no-op PUT pushed something",
            client.user
        );
    }
    // A name-only PUT keeps the policy.
    let name_only = server.admin_expect("PUT", "/api/groups/g", Some(json!({"name": "Eng"})), 200);
    assert_eq!(
        (name_only["name"].clone(), name_only["receipts"].clone()),
        (json!("Eng"), json!("off"))
    );
    let expected = json!({"type": "group_updated", "group": "g", "name": "Eng", "receipts": "off"});
    assert_eq!(bob.recv_type("group_updated").await, expected);

    // Refusals: each with its code, nothing changes, nothing is pushed.
    let refusals = [
        (
            "/api/groups/g",
            json!({"receipts": "some"}),
            400,
            "bad_request",
        ),
        (
            "/api/groups/g",
            json!({"receipts": null, "name": 5}),
            400,
            "bad_request",
        ),
        ("/api/groups/g", json!({"name": "   "}), 400, "bad_request"),
        (
            "/api/groups/g",
            json!({"name": "x".repeat(101)}),
            400,
            "bad_request",
        ),
        (
            "/api/groups/nope",
            json!({"receipts": "full"}),
            404,
            "no_such_group",
        ),
    ];
    for (path, body, status, code) in refusals {
        let (got, answer) = server.admin("PUT", path, Some(body.clone()));
        assert_eq!(
            (got, http_error_code(&answer)),
            (status, code.to_string()),
            "PUT {path} {body}"
        );
    }
    let (status, _) = server.http(
        "PUT",
        "/api/groups/g",
        None,
        Some(json!({"receipts": "full"})),
    );
    assert_eq!(status, 401, "PUT without the admin token");
    let now = server.group("g");
    assert_eq!(
        (now["name"].clone(), now["receipts"].clone()),
        (json!("Eng"), json!("off"))
    );
    bob.barrier("g").await;
    bob.expect_none_of("group_updated", None, TICKS).await;
    carol
        .expect_none_of("group_updated", None, Duration::ZERO)
        .await;
    carol.ping().await;

    // The 200 came after the change was durable: it survives kill -9.
    server.restart();
    let group = server.group("g");
    assert_eq!(
        (group["name"].clone(), group["receipts"].clone()),
        (json!("Eng"), json!("off"))
    );
    let alice = server.connect("alice").await;
    let entry = alice.welcome_group("g").expect("g in welcome");
    assert_eq!(
        (entry["name"].clone(), entry["receipts"].clone()),
        (json!("Eng"), json!("off"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_pushes_and_answers_counts_but_hides_readers() {
    let server = start();
    server.create_group_with_receipts("g", &["alice", "bob", "carol"], "counts");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    for i in 1..=2 {
        alice.send_msg("g", &format!("a{i}"), "hello").await;
    }
    bob.read_to("g", 2).await;
    carol.ack_to("g", 1).await;
    await_receipt(&mut alice, "g", &[(1, 2, 2, 1), (2, 2, 1, 1)]).await;

    let mine = alice
        .request(json!({"type": "receipts", "group": "g", "mine": true}))
        .await;
    assert_eq!(mine["type"], "receipts", "{mine}");
    assert_eq!(items(&mine), vec![(1, 2, 2, 1), (2, 2, 1, 1)]);
    let asked = carol
        .request(json!({"type": "receipts", "group": "g", "seqs": [2, 1]}))
        .await;
    assert_eq!(items(&asked), vec![(2, 2, 1, 1), (1, 2, 2, 1)], "{asked}");

    // Who exactly: hidden from the members, for the sender too; the id is echoed.
    for client in [&mut alice, &mut carol] {
        let refused = client
            .expect_error(
                json!({"type": "readers", "id": 77, "group": "g", "seq": 1}),
                "receipts_hidden",
            )
            .await;
        assert_eq!(refused["id"], 77, "{refused}");
        client.ping().await;
    }
    // The operator's audit view still lists them.
    assert_eq!(
        admin_readers(&server, "g", 1),
        (names("bob"), names("carol"), names(""))
    );

    // Reminders work, with a count and no names (§4.3).
    let reminded = alice.remind("g", 2).await;
    assert_eq!(reminded["type"], "reminded", "{reminded}");
    assert_eq!(reminded["count"], 1, "{reminded}");
    assert!(
        reminded.get("users").is_none(),
        "users under counts: {reminded}"
    );
    let reminder = carol.recv_type("reminder").await;
    assert_eq!(
        (reminder["group"].clone(), reminder["seq"].clone()),
        (json!("g"), json!(2))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_pushes_no_receipt_and_refuses_every_receipt_query() {
    let server = start();
    server.create_group_with_receipts("quiet", &["alice", "bob"], "off");
    server.create_group("loud", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    alice.send_msg("quiet", "q1", "psst").await;
    alice.send_msg("quiet", "q2", "psst").await;
    alice.send_msg("loud", "l1", "hey").await;

    // Bob reads both; the loud group's push proves a tick went by after both reads; another few
    // ticks later still no receipt for the quiet group.
    bob1.read_to("quiet", 1).await;
    bob1.read_to("loud", 1).await;
    await_receipt(&mut alice, "loud", &[(1, 1, 1, 1)]).await;
    alice.expect_none_of("receipt", Some("quiet"), TICKS).await;

    // read_sync, cursors and unread work as ever.
    let sync = bob2
        .recv_where("read_sync of quiet", |f| {
            f["type"] == "read_sync" && f["group"] == "quiet"
        })
        .await;
    assert_eq!(
        sync,
        json!({"type": "read_sync", "group": "quiet", "seq": 1})
    );
    let member = server.member("quiet", "bob");
    assert_eq!(
        (member["delivered"].clone(), member["read"].clone()),
        (json!(1), json!(1))
    );
    let bob3 = server.connect("bob").await;
    let entry = bob3.welcome_group("quiet").expect("quiet in welcome");
    assert_eq!(
        (entry["read"].clone(), entry["unread"].clone()),
        (json!(1), json!(1)),
        "{entry}"
    );
    assert_eq!(entry["receipts"], "off", "{entry}");
    // The admin route answers under every policy.
    assert_eq!(
        admin_readers(&server, "quiet", 1),
        (names("bob"), names(""), names(""))
    );
    assert_eq!(
        admin_readers(&server, "quiet", 2),
        (names(""), names(""), names("bob"))
    );

    let last_seq = server.group("quiet")["last_seq"].clone();
    for frame in [
        json!({"type": "receipts", "group": "quiet", "mine": true}),
        json!({"type": "receipts", "group": "quiet", "seqs": [1]}),
        json!({"type": "readers", "group": "quiet", "seq": 1}),
        json!({"type": "remind", "group": "quiet", "seq": 2}),
        json!({"type": "send", "group": "quiet", "client_id": "q3", "body": "later?", "remind_after_secs": 60}),
    ] {
        let refused = alice.expect_error(frame.clone(), "receipts_off").await;
        assert!(refused.get("id").is_some(), "{refused}");
    }
    alice.ping().await;
    assert_eq!(
        server.group("quiet")["last_seq"],
        last_seq,
        "a refused send was stored"
    );
    // Nobody was reminded.
    bob1.expect_none_of("reminder", None, Duration::ZERO).await;
    let bob4 = server.connect("bob").await;
    assert_eq!(bob4.welcome["reminders"], json!([]), "{}", bob4.welcome);
    // A plain send still works, and the refused client_id is free.
    let sent = alice.send_msg("quiet", "q3", "now").await;
    assert_eq!(
        (sent["seq"].clone(), sent["duplicate"].clone()),
        (json!(3), json!(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_applies_at_once() {
    let server = start();
    server.create_group("g", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.send_msg("g", "a1", "x").await;
    alice.send_msg("g", "a2", "x").await;
    bob.read_to("g", 1).await;
    await_receipt(&mut alice, "g", &[(1, 2, 1, 1)]).await;

    // Off: the next moves push nothing; queries are refused at once.
    server.set_receipts("g", "off");
    alice.recv_type("group_updated").await;
    alice
        .expect_error(
            json!({"type": "receipts", "group": "g", "seqs": [1]}),
            "receipts_off",
        )
        .await;
    bob.read_to("g", 2).await;
    alice.expect_none_of("receipt", Some("g"), TICKS).await;

    // Counts: counts again (reflecting the read made while off), names hidden.
    server.set_receipts("g", "counts");
    alice.recv_type("group_updated").await;
    let reply = alice
        .request(json!({"type": "receipts", "group": "g", "seqs": [1, 2]}))
        .await;
    assert_eq!(items(&reply), vec![(1, 2, 1, 1), (2, 2, 1, 1)], "{reply}");
    alice
        .expect_error(
            json!({"type": "readers", "group": "g", "seq": 2}),
            "receipts_hidden",
        )
        .await;

    // Full: names too; and pushes flow again.
    server.set_receipts("g", "full");
    alice.recv_type("group_updated").await;
    let readers = alice
        .request(json!({"type": "readers", "group": "g", "seq": 2}))
        .await;
    assert_eq!(readers["type"], "readers", "{readers}");
    assert_eq!(
        (
            user_list(&readers, "read"),
            user_list(&readers, "delivered"),
            user_list(&readers, "unread")
        ),
        (names("bob"), names(""), names("carol"))
    );
    let mut carol = server.connect("carol").await;
    carol.read_to("g", 2).await;
    await_receipt(&mut alice, "g", &[(1, 2, 2, 2), (2, 2, 2, 2)]).await;
}
