//! Reminders (docs/PROTOCOL.md §4.3): `remind {group, seq}` by the message's sender reminds every
//! recipient not counted as having read it; the caller gets `reminded` once the reminders are
//! durable (`users` sorted, left out under `counts`; a private reader is listed whether or not
//! they read it); `reminder` frames go only to recipients whose read mark is below `seq`; offline
//! users find them in `welcome.reminders` until they read `seq`, across restarts and crashes.
//! Refusals: `not_allowed`, `invalid_seq`, `rate_limited` (one per message per
//! `--remind-interval-secs`), `receipts_off`. Scheduled: `send {…, remind_after_secs}` fires once,
//! N seconds after the message was stored, across a graceful restart and a kill -9.

mod common;

use std::time::Duration;

use common::controls::{names, user_list};
use common::{Client, Server};
use serde_json::{json, Value};

fn start() -> Server {
    Server::start_with(&[
        "--receipt-interval-ms",
        "100",
        "--remind-interval-secs",
        "1",
    ])
}

/// Sends `body` as `client_id` with `remind_after_secs`; returns the `sent`.
async fn send_scheduled(client: &mut Client, group: &str, client_id: &str, secs: u64) -> Value {
    let sent = client
        .request(
            json!({"type": "send", "group": group, "client_id": client_id,
                        "body": format!("{client_id} body"), "remind_after_secs": secs}),
        )
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
    sent
}

/// Checks one `reminder` (a frame, or a `welcome.reminders` entry) of message `sent` (its `sent`
/// reply) in `group`, from `by`, with `body`; returns its `ts`.
fn check_reminder(reminder: &Value, group: &str, sent: &Value, by: &str, body: &str) -> u64 {
    assert_eq!(reminder["group"], group, "{reminder}");
    assert_eq!(reminder["seq"], sent["seq"], "{reminder}");
    assert_eq!(reminder["by"], by, "{reminder}");
    assert_eq!(
        reminder["message"],
        json!({"seq": sent["seq"], "from": by, "ts": sent["ts"], "body": body}),
        "{reminder}"
    );
    let ts = reminder["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric ts in {reminder}"));
    assert!(
        ts >= sent["ts"].as_u64().expect("ts"),
        "reminded before it was sent: {reminder}"
    );
    ts
}

/// The `(group, seq)` of every `welcome.reminders` entry.
fn welcome_reminders(client: &Client) -> Vec<(String, u64)> {
    client.welcome["reminders"]
        .as_array()
        .unwrap_or_else(|| panic!("no reminders list in {}", client.welcome))
        .iter()
        .map(|r| {
            (
                r["group"].as_str().expect("group").to_string(),
                common::seq(r),
            )
        })
        .collect()
}

/// The reminder of `group`/`seq` that `user` gets on connecting now: from `welcome.reminders`,
/// or else the next `reminder` push (a scheduled one that is not due yet, or fires right after
/// the group loaded). The second value says whether it came as a push.
async fn reminder_on_connect(
    server: &Server,
    user: &str,
    group: &str,
    seq: u64,
) -> (Client, Value, bool) {
    let mut client = server.connect(user).await;
    let listed = client.welcome["reminders"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["group"] == group && r["seq"] == seq))
        .cloned();
    match listed {
        Some(reminder) => (client, reminder, false),
        None => {
            let pushed = client
                .recv_where(&format!("a reminder of {group}/{seq}"), |f| {
                    f["type"] == "reminder" && f["group"] == group && f["seq"] == seq
                })
                .await;
            (client, pushed, true)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remind_reaches_the_non_readers_and_waits_in_welcome_until_read() {
    let mut server = start();
    server.create_group("g", &["alice", "bob", "carol", "dave", "erin"]);
    server.set_share_reads("dave", false);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    let sent = alice.send_msg("g", "a1", "lunch?").await;
    bob.read_to("g", 1).await;
    dave.read_to("g", 1).await;
    carol.ack_to("g", 1).await;

    // Carol (received, not read), dave (read, privately) and erin (offline) are reminded.
    let reminded = alice
        .request(json!({"type": "remind", "id": "r1", "group": "g", "seq": 1}))
        .await;
    assert_eq!(
        reminded,
        json!({"type": "reminded", "id": "r1", "group": "g", "seq": 1, "count": 3,
               "users": ["carol", "dave", "erin"]})
    );
    // Only carol has a read mark below 1: only she gets the frame.
    let pushed = carol.recv_type("reminder").await;
    let at = check_reminder(&pushed, "g", &sent, "alice", "lunch?");
    for client in [&mut dave, &mut bob, &mut alice] {
        client.barrier("g").await;
        client
            .expect_none_of("reminder", None, Duration::from_millis(300))
            .await;
    }
    // Erin finds it in welcome; a second session of carol too.
    let erin = server.connect("erin").await;
    assert_eq!(
        welcome_reminders(&erin),
        vec![("g".to_string(), 1)],
        "{}",
        erin.welcome
    );
    let mut listed = erin.welcome["reminders"][0].clone();
    listed["type"] = json!("reminder");
    assert_eq!(
        listed, pushed,
        "welcome lists the same reminder, with the fields of the frame"
    );
    let carol2 = server.connect("carol").await;
    assert_eq!(welcome_reminders(&carol2), vec![("g".to_string(), 1)]);
    for user in ["bob", "dave", "alice"] {
        let client = server.connect(user).await;
        assert_eq!(
            welcome_reminders(&client),
            vec![],
            "[{user}] {}",
            client.welcome
        );
    }

    // Durable before `reminded`: they survive kill -9.
    drop((erin, carol2));
    server.restart();
    let erin = server.connect("erin").await;
    let listed = &erin.welcome["reminders"][0];
    assert_eq!(
        check_reminder(listed, "g", &sent, "alice", "lunch?"),
        at,
        "{listed}"
    );
    assert_eq!(welcome_reminders(&erin), vec![("g".to_string(), 1)]);

    // Read, and it is gone: carol reads 1, erin reads past it.
    let mut carol = server.connect("carol").await;
    assert_eq!(welcome_reminders(&carol), vec![("g".to_string(), 1)]);
    carol.read_to("g", 1).await;
    let carol = server.connect("carol").await;
    assert_eq!(
        welcome_reminders(&carol),
        vec![],
        "read, still listed: {}",
        carol.welcome
    );
    drop(carol);
    let mut alice = server.connect("alice").await;
    alice.send_msg("g", "a2", "or dinner").await;
    let mut erin = erin;
    erin.read_to("g", 2).await;
    let erin2 = server.connect("erin").await;
    assert_eq!(welcome_reminders(&erin2), vec![], "{}", erin2.welcome);
    // And none comes back after a restart.
    drop((erin, erin2, alice));
    server.graceful_restart();
    for user in ["carol", "erin"] {
        let client = server.connect(user).await;
        assert_eq!(
            welcome_reminders(&client),
            vec![],
            "[{user}] resurrected: {}",
            client.welcome
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reminds_use_their_codes_and_remind_nobody() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    server.create_group("h", &["mallory"]);
    server.create_group_with_receipts("quiet", &["alice", "bob"], "off");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut mallory = server.connect("mallory").await;
    alice.send_msg("g", "a1", "mine").await;
    bob.send_msg("g", "b2", "bob's").await;
    alice.send_msg("quiet", "q1", "quiet").await;

    bob.expect_error(
        json!({"type": "remind", "id": 1, "group": "g", "seq": 1}),
        "not_allowed",
    )
    .await;
    alice
        .expect_error(
            json!({"type": "remind", "group": "g", "seq": 2}),
            "not_allowed",
        )
        .await;
    for seq in [0, 3, 1000] {
        alice
            .expect_error(
                json!({"type": "remind", "group": "g", "seq": seq}),
                "invalid_seq",
            )
            .await;
    }
    alice
        .expect_error(
            json!({"type": "remind", "group": "quiet", "seq": 1}),
            "receipts_off",
        )
        .await;
    mallory
        .expect_error(
            json!({"type": "remind", "group": "g", "seq": 1}),
            "not_member",
        )
        .await;
    alice
        .expect_error(
            json!({"type": "remind", "group": "nope", "seq": 1}),
            "no_such_group",
        )
        .await;
    for frame in [
        json!({"type": "remind", "group": "g"}),
        json!({"type": "remind", "seq": 1}),
        json!({"type": "remind", "group": "g", "seq": "1"}),
        json!({"type": "remind", "group": "g", "seq": -1}),
    ] {
        alice.expect_error(frame, "bad_frame").await;
    }
    for client in [&mut alice, &mut bob, &mut mallory] {
        client.ping().await;
        client
            .expect_none_of("reminder", None, Duration::ZERO)
            .await;
    }
    let bob2 = server.connect("bob").await;
    assert_eq!(
        welcome_reminders(&bob2),
        vec![],
        "a refused remind stored one: {}",
        bob2.welcome
    );
    let alice2 = server.connect("alice").await;
    assert_eq!(welcome_reminders(&alice2), vec![]);

    // The first real one works; a second one of the same message within the interval is
    // rate limited and reminds nobody; another message is not limited by it.
    let reminded = alice.remind("g", 1).await;
    assert_eq!(reminded["type"], "reminded", "{reminded}");
    assert_eq!(user_list(&reminded, "users"), names("bob"));
    bob.recv_type("reminder").await;
    let limited = alice
        .expect_error(
            json!({"type": "remind", "id": "again", "group": "g", "seq": 1}),
            "rate_limited",
        )
        .await;
    assert_eq!(limited["id"], "again");
    let retry = limited["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric retry_after_ms in {limited}"));
    assert!(
        (1..=1000).contains(&retry),
        "retry_after_ms {retry} with a 1 s interval"
    );
    let sent = alice.send_msg("g", "a3", "another").await;
    let reminded3 = alice.remind("g", 3).await;
    assert_eq!(
        reminded3["type"], "reminded",
        "another message is limited apart: {reminded3}"
    );
    let third = bob.recv_type("reminder").await;
    assert_eq!(
        third["seq"], sent["seq"],
        "the rate-limited remind reached bob: {third}"
    );

    // After retry_after_ms (a timed promise: nothing to await but the clock) it is allowed again.
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    let again = alice.remind("g", 1).await;
    assert_eq!(again["type"], "reminded", "{again}");
    assert_eq!(bob.recv_type("reminder").await["seq"], 1);
    let bob3 = server.connect("bob").await;
    let mut listed = welcome_reminders(&bob3);
    listed.sort();
    assert_eq!(
        listed,
        vec![("g".to_string(), 1), ("g".to_string(), 3)],
        "one pending reminder per message: {}",
        bob3.welcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_counts_reminded_gives_the_count_only() {
    let server = start();
    server.create_group_with_receipts("g", &["alice", "bob", "carol", "dave"], "counts");
    server.set_share_reads("carol", false);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    alice.send_msg("g", "a1", "x").await;
    bob.read_to("g", 1).await;
    carol.read_to("g", 1).await;
    let reminded = alice
        .request(json!({"type": "remind", "id": 5, "group": "g", "seq": 1}))
        .await;
    assert_eq!(
        reminded,
        json!({"type": "reminded", "id": 5, "group": "g", "seq": 1, "count": 2}),
        "carol (private) and dave, without names"
    );
    assert_eq!(dave.recv_type("reminder").await["by"], "alice");
    for client in [&mut bob, &mut carol] {
        client
            .expect_none_of("reminder", None, Duration::from_millis(200))
            .await;
    }

    // A scheduled one under counts: the sender's `reminded` has no names either.
    let sent = send_scheduled(&mut alice, "g", "s2", 1).await;
    bob.read_to("g", 2).await;
    let fired = alice.recv_type("reminded").await;
    assert_eq!(
        fired,
        json!({"type": "reminded", "group": "g", "seq": sent["seq"], "count": 2})
    );
    assert_eq!(dave.recv_type("reminder").await["seq"], sent["seq"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reminder_fires_once_for_the_non_readers() {
    let server = start();
    server.create_group("g", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut alice2 = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    // Out of range or mistyped: refused, nothing stored.
    for secs in [
        json!(0),
        json!(604_801),
        json!(-1),
        json!(1.5),
        json!("10"),
        json!(true),
    ] {
        alice
            .expect_error(
                json!({"type": "send", "group": "g", "client_id": "bad", "body": "x", "remind_after_secs": secs}),
                "bad_frame",
            )
            .await;
    }
    assert_eq!(
        server.group("g")["last_seq"],
        0,
        "a refused send was stored"
    );

    let sent = send_scheduled(&mut alice, "g", "s1", 1).await;
    assert_eq!(sent["seq"], 1);
    bob.read_to("g", 1).await;
    let expected =
        json!({"type": "reminded", "group": "g", "seq": 1, "count": 1, "users": ["carol"]});
    for client in [&mut alice, &mut alice2] {
        let reminded = client.recv_type("reminded").await;
        assert_eq!(reminded, expected, "[{}] no id: nobody asked", client.user);
    }
    let reminder = carol.recv_type("reminder").await;
    let at = check_reminder(&reminder, "g", &sent, "alice", "s1 body");
    let stored = sent["ts"].as_u64().expect("ts");
    assert!(
        at >= stored + 1000,
        "fired {} ms after the message was stored",
        at - stored
    );
    bob.expect_none_of("reminder", None, Duration::ZERO).await;

    // The longest delay is accepted (and does not fire in this test).
    let long = send_scheduled(&mut alice, "g", "s2", 604_800).await;
    assert_eq!(long["seq"], 2);
    // Once: nothing more comes in the next second.
    carol
        .expect_none_of("reminder", None, Duration::from_millis(1200))
        .await;
    alice.expect_none_of("reminded", None, Duration::ZERO).await;
}

/// A scheduled reminder sent before a stop fires after the restart, `secs` after it was stored.
async fn scheduled_across_a_restart(graceful: bool) {
    let mut server = start();
    server.create_group("g", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    // Due during the downtime (kill -9 only: a graceful stop is too quick to wait for), and due
    // after the restart.
    let early = send_scheduled(&mut alice, "g", "early", 1).await;
    let late = send_scheduled(&mut alice, "g", "late", 4).await;
    let mut bob = server.connect("bob").await;
    bob.read_to("g", 1).await;
    // The receipt counting bob's read is pushed only once his cursor is durable.
    alice
        .recv_where("a receipt counting bob's read of 1", |f| {
            f["type"] == "receipt"
                && f["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["seq"] == 1 && i["read"] == 1))
        })
        .await;
    drop((alice, bob));
    if graceful {
        server.graceful_restart();
    } else {
        server.kill9();
        // Let `early` fall due while the server is down (nothing to await: it is not running).
        std::thread::sleep(Duration::from_millis(1500));
        server.restart();
    }
    let mut alice = server.connect("alice").await;
    // Carol missed both; bob read `early` before the stop, and only `late` reaches him.
    let (carol, reminder, _) = reminder_on_connect(&server, "carol", "g", 1).await;
    let at = check_reminder(&reminder, "g", &early, "alice", "early body");
    assert!(at >= early["ts"].as_u64().expect("ts") + 1000, "{reminder}");
    drop(carol);
    let (_carol, reminder, pushed) = reminder_on_connect(&server, "carol", "g", 2).await;
    let at = check_reminder(&reminder, "g", &late, "alice", "late body");
    assert!(
        at >= late["ts"].as_u64().expect("ts") + 4000,
        "fired early: {reminder}"
    );
    let (_bob, reminder, _) = reminder_on_connect(&server, "bob", "g", 2).await;
    check_reminder(&reminder, "g", &late, "alice", "late body");
    if pushed {
        // Alice was online when `late` fired.
        let reminded = alice
            .recv_where("reminded of 2", |f| {
                f["type"] == "reminded" && f["seq"] == 2
            })
            .await;
        assert_eq!(
            reminded,
            json!({"type": "reminded", "group": "g", "seq": 2, "count": 2, "users": ["bob", "carol"]})
        );
    }
    // Bob never gets `early` (he read it).
    let bob = server.connect("bob").await;
    assert!(
        !welcome_reminders(&bob).contains(&("g".to_string(), 1)),
        "{}",
        bob.welcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reminder_survives_a_graceful_restart() {
    scheduled_across_a_restart(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reminder_survives_kill_9_and_fires_after_it_if_due() {
    scheduled_across_a_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reminder_is_dropped_when_receipts_are_off_by_then() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    server.create_group("clock", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    send_scheduled(&mut alice, "g", "g1", 1).await;
    server.set_receipts("g", "off");
    // Stored after the first, due after it: once it fired, the first was due too.
    send_scheduled(&mut alice, "clock", "c1", 1).await;
    bob.recv_where("the clock's reminder", |f| {
        f["type"] == "reminder" && f["group"] == "clock"
    })
    .await;
    alice
        .recv_where("the clock's reminded", |f| {
            f["type"] == "reminded" && f["group"] == "clock"
        })
        .await;
    for client in [&mut alice, &mut bob] {
        client
            .expect_none_of("reminder", Some("g"), Duration::from_millis(300))
            .await;
        client
            .expect_none_of("reminded", Some("g"), Duration::ZERO)
            .await;
    }
    // Turning receipts on again does not bring it back.
    server.set_receipts("g", "full");
    bob.expect_none_of("reminder", Some("g"), Duration::from_millis(300))
        .await;
    let bob2 = server.connect("bob").await;
    assert_eq!(welcome_reminders(&bob2), vec![("clock".to_string(), 1)]);
}

/// A remind that reaches nobody (every recipient has read the message) does not start the
/// interval: the next one is not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remind_that_reached_nobody_does_not_start_the_interval() {
    let server = Server::start_with(&["--remind-interval-secs", "600"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let sent = alice.send_msg("team", "c1", "all read").await;
    let seq = sent["seq"].as_u64().expect("a seq");
    bob.read_to("team", seq).await;
    for _ in 0..2 {
        let reply = alice.remind("team", seq).await;
        assert_eq!(
            (reply["type"].as_str(), reply["count"].as_u64()),
            (Some("reminded"), Some(0)),
            "{reply}"
        );
    }
}
