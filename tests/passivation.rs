//! Passivation and the paged welcome (issue #14; docs/PROTOCOL.md §3.2, README `--group-idle-secs`,
//! `--welcome-groups`), end to end against a real server with `--group-idle-secs 1`:
//!
//! - an idle group's actor stops (`rollcall_groups_loaded` falls to 0, `rollcall_group_passivations_total`
//!   counts it) while its members stay connected, and the next send starts it again with the
//!   next seq, pushed to the online members it found again in the online directory;
//! - a cursor move made just before the group went idle, and not written yet, is written before
//!   the actor stops: after the restart the sender's `receipts`/`readers` and the reader's
//!   `welcome` show it, and a read made after the restart is pushed to the sender as `receipt`;
//! - a `welcome` (and a `groups` page) of groups that are all passivated is the same frame as
//!   while they were running, and starts none of them;
//! - a scheduled reminder keeps its group loaded until it fires, on time;
//! - `--welcome-groups 3`: `welcome` lists the 3 most recently active groups with
//!   `more_groups` and `unread_total` over all of them; `groups` pages them all by id; the Rust
//!   client catches up every group, also those the welcome left out.
//!
//! Waits are on events (a push, a metric reaching a value) with the harness's timeout; the
//! only fixed waits assert that something did NOT happen.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::controls::items;
use common::rust_client::{config, next_event};
use common::{seq, seqs, Client, Server, TIMEOUT};
use rollcall::client::Event;
use serde_json::{json, Value};

const LOADED: &str = "rollcall_groups_loaded";
const PASSIVATIONS: &str = "rollcall_group_passivations_total";

/// A server whose groups passivate after 1 s without a command, with a 100 ms receipt tick.
fn start() -> Server {
    start_with(&[])
}

fn start_with(more: &[&str]) -> Server {
    let mut args = vec!["--group-idle-secs", "1", "--receipt-interval-ms", "100"];
    args.extend_from_slice(more);
    Server::start_with(&args)
}

/// One metric sample, read without blocking the runtime's other tasks.
fn metric(server: &Server, sample: &str) -> u64 {
    tokio::task::block_in_place(|| server.metric(sample))
}

/// Waits (polling `/metrics` every 50 ms, up to `TIMEOUT`) until `sample` satisfies `accept`;
/// returns the value and how long it took.
async fn wait_metric(
    server: &Server,
    sample: &str,
    what: &str,
    accept: impl Fn(u64) -> bool,
) -> (u64, Duration) {
    let started = Instant::now();
    loop {
        let value = metric(server, sample);
        if accept(value) {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{what}: {sample} is still {value} after {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no group actor runs any more (every group passivated).
async fn wait_all_passivated(server: &Server) -> Duration {
    wait_metric(server, LOADED, "every group passivates", |n| n == 0)
        .await
        .1
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

fn num(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {field} in {value}"))
}

/// The group ids of a list of summaries (a `welcome`'s or a `groups` page's `groups`).
fn ids(groups: &Value) -> Vec<String> {
    groups
        .as_array()
        .unwrap_or_else(|| panic!("not a list of groups: {groups}"))
        .iter()
        .map(|g| g["group"].as_str().expect("a group id").to_string())
        .collect()
}

/// `receipts {seqs}`: the `(seq, recipients, delivered, read)` items.
async fn receipts(client: &mut Client, group: &str, seqs: &[u64]) -> Vec<(u64, u64, u64, u64)> {
    let reply = client
        .request(json!({"type": "receipts", "group": group, "seqs": seqs}))
        .await;
    assert_eq!(reply["type"], "receipts", "{reply}");
    items(&reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_group_stops_and_the_next_send_reaches_the_members_still_online() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    let first = alice.send_msg("g", "c1", "before the pause").await;
    assert_eq!(seq(&first), 1);
    assert_eq!(seq(&bob.recv_msg("g").await), 1);
    assert_eq!(seq(&alice.recv_msg("g").await), 1);
    assert_eq!(metric(&server, LOADED), 1, "the group runs after a send");
    let passivations_before = metric(&server, PASSIVATIONS);

    // Nobody does anything: the group's actor stops by itself, within a few seconds.
    let took = wait_all_passivated(&server).await;
    assert!(
        took < Duration::from_secs(4),
        "passivating took {took:?} with --group-idle-secs 1"
    );
    assert!(
        metric(&server, PASSIVATIONS) > passivations_before,
        "the passivation is counted"
    );
    // Both stayed connected through it.
    alice.ping().await;
    bob.ping().await;
    assert_eq!(metric(&server, "rollcall_sessions"), 2);

    // The next send starts the group again: the next seq, pushed to bob, who was found again
    // among the online members, and to alice's own session.
    let second = alice.send_msg("g", "c2", "after the pause").await;
    assert_eq!(seq(&second), 2, "the seq after a restart: {second}");
    let pushed = bob.recv_msg("g").await;
    assert_eq!(
        (seq(&pushed), pushed["body"].as_str()),
        (2, Some("after the pause")),
        "{pushed}"
    );
    assert_eq!(seq(&alice.recv_msg("g").await), 2);
    assert_eq!(
        metric(&server, LOADED),
        1,
        "the send started the group again"
    );

    // Once more, the other way round.
    wait_all_passivated(&server).await;
    let third = bob.send_msg("g", "c3", "and again").await;
    assert_eq!(seq(&third), 3);
    assert_eq!(seq(&alice.recv_msg("g").await), 3);
    assert_eq!(seq(&bob.recv_msg("g").await), 3);
    assert!(metric(&server, PASSIVATIONS) >= passivations_before + 2);

    // Gapless, and nothing pushed twice.
    assert_eq!(seqs(&bob.sync_all("g", 0).await), vec![1, 2, 3]);
    bob.drain_for(Duration::from_millis(200)).await;
    bob.assert_no_msg("g");
    alice.assert_no_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_just_before_the_group_idles_survives_its_passivation() {
    // The receipt tick (2 s) is slower than passivation (1 s idle plus 1 s grace), so a read
    // right after a tick is still unwritten when the group is first idle enough to stop.
    let server = Server::start_with(&["--group-idle-secs", "1", "--receipt-interval-ms", "2000"]);
    server.create_group("g", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    for i in 1..=3 {
        alice
            .send_msg("g", &format!("c{i}"), &format!("m{i}"))
            .await;
    }
    assert_eq!(seqs(&bob.recv_msgs("g", 3).await), vec![1, 2, 3]);
    assert_eq!(seqs(&carol.recv_msgs("g", 3).await), vec![1, 2, 3]);

    // bob reads 1; alice's `receipt` for it comes right after a tick...
    bob.read_to("g", 1).await;
    let receipt = alice
        .recv_where("a receipt with seq 1 read", |f| {
            f["type"] == "receipt" && items(f).iter().any(|&(s, _, _, read)| s == 1 && read == 1)
        })
        .await;
    assert_eq!(receipt["group"], "g");
    // ...so his read of 2, now, waits for the next tick, about 2 s away.
    bob.read_to("g", 2).await;
    bob.close().await;

    wait_all_passivated(&server).await;
    assert!(metric(&server, PASSIVATIONS) >= 1);

    // bob reconnects (the group is not running: the welcome reads the store): his read mark
    // is 2, and one message of alice's is unread.
    let bob = server.connect("bob").await;
    let entry = bob.welcome_group("g").expect("g in bob's welcome").clone();
    assert_eq!(
        (
            num(&entry, "read"),
            num(&entry, "delivered"),
            num(&entry, "unread"),
            num(&entry, "last_seq")
        ),
        (2, 2, 1, 3),
        "bob's welcome after the passivation: {entry}"
    );
    assert_eq!(bob.welcome["unread_total"], 1, "{}", bob.welcome);
    assert_eq!(metric(&server, LOADED), 0, "a welcome starts no group");

    // alice asks (the group starts again from the store): bob has read 1 and 2, carol nothing.
    assert_eq!(
        receipts(&mut alice, "g", &[1, 2, 3]).await,
        vec![(1, 2, 1, 1), (2, 2, 1, 1), (3, 2, 0, 0)]
    );
    let readers = alice
        .request(json!({"type": "readers", "group": "g", "seq": 2}))
        .await;
    assert_eq!(readers["type"], "readers", "{readers}");
    assert_eq!(
        (&readers["read"], &readers["delivered"], &readers["unread"]),
        (&json!(["bob"]), &json!([]), &json!(["carol"])),
        "{readers}"
    );
    assert_eq!(metric(&server, LOADED), 1, "asking started the group");

    // carol (online all along) reads everything after the restart: alice, online all along,
    // gets the `receipt` push from the restarted group.
    carol.read_to("g", 3).await;
    let receipt = alice
        .recv_where("a receipt with seq 3 read", |f| {
            f["type"] == "receipt" && items(f).iter().any(|&(s, _, _, read)| s == 3 && read == 1)
        })
        .await;
    let counts = items(&receipt);
    assert!(
        counts.contains(&(3, 2, 1, 1)) && counts.contains(&(2, 2, 2, 2)),
        "the receipt after the restart: {receipt}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_of_passivated_groups_is_the_same_and_starts_none_of_them() {
    let server = start();
    server.create_group("g1", &["alice", "bob"]);
    server.create_group_with_receipts("g2", &["alice", "bob"], "counts");
    server.create_group("g3", &["alice", "bob"]); // no message at all
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let direct = bob
        .request(json!({"type": "direct", "with": "alice"}))
        .await;
    let dm = direct["group"]
        .as_str()
        .expect("a direct group")
        .to_string();

    // g1: alice's messages 1-4 and bob's 5; bob reads 2; 4 is deleted; alice reminds bob of 3.
    for i in 1..=4 {
        alice
            .send_msg("g1", &format!("a{i}"), &format!("g1 {i}"))
            .await;
    }
    bob.send_msg("g1", "b5", "g1 5").await;
    bob.read_to("g1", 2).await;
    let deleted = alice
        .request(json!({"type": "delete", "group": "g1", "seq": 4}))
        .await;
    assert_eq!(deleted["type"], "deleted", "{deleted}");
    let reminded = alice.remind("g1", 3).await;
    assert_eq!(reminded["type"], "reminded", "{reminded}");
    // g2: two of alice's, marked unread by bob after reading both.
    alice.send_msg("g2", "a1", "g2 1").await;
    alice.send_msg("g2", "a2", "g2 2").await;
    bob.read_to("g2", 2).await;
    bob.mark_unread("g2").await;
    // The direct conversation: one message each way.
    alice.send_msg(&dm, "d1", "hi bob").await;
    bob.send_msg(&dm, "d2", "hi alice").await;
    bob.close().await;

    // Every group runs (each was used just now), so this welcome comes from the actors.
    for group in ["g1", "g2", &dm, "g3"] {
        assert_eq!(alice.barrier(group).await["type"], "messages");
    }
    let loaded = metric(&server, LOADED);
    let running = server.connect("bob").await;
    assert_eq!(
        loaded, 4,
        "all four groups ran while the first welcome was built"
    );
    let while_running = running.welcome.clone();
    running.close().await;
    alice.close().await;

    let g1 = while_running["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "g1"))
        .unwrap_or_else(|| panic!("g1 missing from {while_running}"));
    assert_eq!(
        (num(g1, "last_seq"), num(g1, "read"), num(g1, "unread")),
        (5, 2, 1),
        "g1: 3 is unread, 4 deleted, 5 bob's own: {g1}"
    );
    assert_eq!(while_running["reminders"].as_array().map(Vec::len), Some(1));

    wait_all_passivated(&server).await;
    let stored = server.connect("bob").await;
    assert_eq!(
        stored.welcome, while_running,
        "the welcome of passivated groups differs from the one of running groups"
    );
    // Neither the welcome nor a `groups` page started anything.
    let mut stored = stored;
    let page = stored.request(json!({"type": "groups"})).await;
    assert_eq!(page["type"], "groups", "{page}");
    assert_eq!(page["more"], false);
    let mut by_id: Vec<Value> = while_running["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    by_id.sort_by(|a, b| a["group"].as_str().cmp(&b["group"].as_str()));
    assert_eq!(
        page["groups"],
        Value::Array(by_id),
        "groups of passivated groups"
    );
    stored.ping().await;
    assert_eq!(
        metric(&server, LOADED),
        0,
        "welcome and groups started a passivated group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reminder_keeps_its_group_loaded_until_it_fires_on_time() {
    let server = start();
    server.create_group("g", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let sent = alice
        .request(json!({"type": "send", "group": "g", "client_id": "c1",
                        "body": "read this", "remind_after_secs": 3}))
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let sent_ts = num(&sent, "ts");
    assert_eq!(seq(&bob.recv_msg("g").await), 1);
    let passivations_before = metric(&server, PASSIVATIONS);

    // Well past the idle time (1 s, plus the 1 s grace), the group still runs: its schedule
    // is armed there.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        metric(&server, LOADED),
        1,
        "the group with a schedule passivated"
    );
    assert_eq!(metric(&server, PASSIVATIONS), passivations_before);

    // It fires 3 s after the message was stored: bob is reminded, alice told.
    let reminder = bob.recv_type("reminder").await;
    let arrived = now_ms();
    assert_eq!((reminder["group"].as_str(), seq(&reminder)), (Some("g"), 1));
    assert_eq!(reminder["by"], "alice");
    let reminded_ts = num(&reminder, "ts");
    assert!(
        reminded_ts >= sent_ts + 3000 && reminded_ts < sent_ts + 4500,
        "sent at {sent_ts}, reminded at {reminded_ts}"
    );
    assert!(arrived < sent_ts + 5000, "arrived at {arrived}");
    let told = alice.recv_type("reminded").await;
    assert_eq!(
        (told["group"].as_str(), seq(&told), num(&told, "count")),
        (Some("g"), 1, 1),
        "{told}"
    );
    assert!(
        told.get("id").is_none(),
        "a scheduled reminded has no id: {told}"
    );

    // Then nothing holds it any more.
    wait_all_passivated(&server).await;
    assert!(metric(&server, PASSIVATIONS) > passivations_before);
}

/// Seven groups of alice's and bob's, and how many messages each gets, in the order of their
/// last activity (the last one is the most recent).
const ACTIVITY: &[(&str, u64)] = &[
    ("p4", 2),
    ("p1", 1),
    ("p6", 3),
    ("p2", 1),
    ("p7", 2),
    ("p3", 1),
    ("p5", 2),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_lists_the_most_recent_groups_and_groups_pages_them_all() {
    let server = start_with(&["--welcome-groups", "3"]);
    server.ensure_users(&["alice", "bob", "carol"]);
    let mut sorted: Vec<&str> = ACTIVITY.iter().map(|&(g, _)| g).collect();
    sorted.sort();
    for group in &sorted {
        server.create_group(group, &["alice", "bob"]);
    }
    for group in ["p1", "p2", "p3"] {
        server.admin_expect(
            "PUT",
            &format!("/api/groups/{group}/members/carol"),
            None,
            200,
        );
    }
    // bob's messages, group after group; p5 ends with one of alice's own (not unread for her).
    let mut messages = BTreeMap::new();
    let mut last_ts = 0;
    for &(group, n) in ACTIVITY {
        for i in 1..=n {
            let from = if group == "p5" && i == n {
                "alice"
            } else {
                "bob"
            };
            server.post(group, from, &format!("{group} {i}"));
        }
        messages.insert(group.to_string(), n);
        // Distinct last_ts per group, so "most recently active" has one answer.
        let page = server.admin_expect(
            "GET",
            &format!("/api/groups/{group}/messages?after={}&limit=1", n - 1),
            None,
            200,
        );
        let newest = num(&page["messages"][0], "ts");
        assert!(newest >= last_ts);
        last_ts = newest;
        while now_ms() <= last_ts + 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let unread_total: u64 = ACTIVITY.iter().map(|&(_, n)| n).sum::<u64>() - 1;

    let mut alice = server.connect("alice").await;
    let welcome = alice.welcome.clone();
    assert_eq!(
        ids(&welcome["groups"]),
        vec!["p5", "p3", "p7"],
        "the 3 most recently active, newest first: {welcome}"
    );
    assert_eq!(welcome["more_groups"], true, "{welcome}");
    assert_eq!(
        welcome["unread_total"], unread_total,
        "unread over all 7 groups, not only the 3 listed: {welcome}"
    );
    let listed: Vec<u64> = welcome["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| num(g, "unread"))
        .collect();
    assert_eq!(listed, vec![1, 1, 2], "p5's last message is alice's own");

    // carol is in exactly 3: all listed, no more.
    let carol = server.connect("carol").await;
    assert_eq!(ids(&carol.welcome["groups"]).len(), 3);
    assert_eq!(carol.welcome["more_groups"], false, "{}", carol.welcome);
    carol.close().await;

    // `groups` in pages of 2: all 7, ascending by id, `more` on every page but the last.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut frame = json!({"type": "groups", "limit": 2});
        if let Some(after) = &after {
            frame["after"] = json!(after);
        }
        let page = alice.request(frame).await;
        assert_eq!(page["type"], "groups", "{page}");
        let page_ids = ids(&page["groups"]);
        pages += 1;
        let last_page = paged.len() + page_ids.len() == 7;
        assert_eq!(page["more"], !last_page, "page {pages}: {page}");
        assert_eq!(page_ids.len(), if last_page { 1 } else { 2 }, "{page}");
        for entry in page["groups"].as_array().expect("groups") {
            // An entry listed in the welcome too is the same (nothing happened since).
            if let Some(listed) = alice.welcome_group(entry["group"].as_str().unwrap_or("")) {
                assert_eq!(entry, listed);
            }
            let group = entry["group"].as_str().expect("id");
            let n = messages[group];
            assert_eq!(num(entry, "last_seq"), n, "{entry}");
            assert_eq!(num(entry, "first_seq"), 1, "{entry}");
            assert!(num(entry, "last_ts") > 0, "{entry}");
        }
        after = page_ids.last().cloned();
        paged.extend(page_ids);
        if page["more"] == false {
            break;
        }
    }
    assert_eq!(paged, sorted, "all 7 in ascending id order");
    assert_eq!(pages, 4);
    // After the last one: nothing more; a bad id: refused.
    let past = alice
        .request(json!({"type": "groups", "after": "p7", "limit": 2}))
        .await;
    assert_eq!(
        (&past["groups"], &past["more"]),
        (&json!([]), &json!(false))
    );
    let from_middle = alice
        .request(json!({"type": "groups", "after": "p3", "limit": 100}))
        .await;
    assert_eq!(ids(&from_middle["groups"]), vec!["p4", "p5", "p6", "p7"]);
    alice
        .expect_error(
            json!({"type": "groups", "after": "not an id!"}),
            "bad_frame",
        )
        .await;
    alice.close().await;

    // The Rust client: its Connected lists all 7, and it catches up every message of every
    // group, also of the 4 the welcome left out.
    let client = rollcall::client::Client::connect(config(&server, "alice"))
        .await
        .expect("connecting");
    match next_event(&client).await {
        Event::Connected { groups, .. } => {
            let mut listed: Vec<String> = groups.iter().map(|g| g.group.clone()).collect();
            listed.sort();
            assert_eq!(listed, sorted, "the Rust client's Connected");
        }
        other => panic!("the first event should be Connected, got {other:?}"),
    }
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let total: u64 = messages.values().sum();
    let mut n = 0;
    let deadline = Instant::now() + TIMEOUT;
    while n < total {
        assert!(
            Instant::now() < deadline,
            "the Rust client caught up {received:?} of {messages:?}"
        );
        match next_event(&client).await {
            Event::Message(message) => {
                received
                    .entry(message.group.clone())
                    .or_default()
                    .push(message.seq);
                n += 1;
            }
            Event::Connected { groups, .. } => panic!("a second Connected: {groups:?}"),
            _ => {}
        }
    }
    for (group, &count) in &messages {
        assert_eq!(
            received.get(group),
            Some(&(1..=count).collect::<Vec<_>>()),
            "the Rust client's messages of {group}: {received:?}"
        );
    }
}
