//! Read receipts (docs/PROTOCOL.md §3-§4), as a user sees them: the counts and reader lists of a
//! message under late joins, departures, offline members, batched and out-of-order reads and the
//! sender's own reads; one aggregated `receipt` push per tick; pulling receipts after being
//! offline; `read_sync` to the reader's other sessions; receipts after a crash; refusals; and
//! `welcome.unread`.

mod common;

use std::time::Duration;

use common::controls::user_list as names;
use common::{Client, Server};
use serde_json::{json, Value};

/// `(seq, recipients, delivered, read)` of one receipt item.
type Counts = (u64, u64, u64, u64);

/// Who read, only received, or has not received one message.
type Lists = (Vec<String>, Vec<String>, Vec<String>);

fn num(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {field} in {value}"))
}

fn counts(item: &Value) -> Counts {
    (
        num(item, "seq"),
        num(item, "recipients"),
        num(item, "delivered"),
        num(item, "read"),
    )
}

fn items(frame: &Value) -> Vec<Counts> {
    frame["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {frame}"))
        .iter()
        .map(counts)
        .collect()
}

/// "bob carol" → ["bob", "carol"].
fn users(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}

/// Sends a frame that has no reply on success (`ack`, `read`), then a barrier through the same
/// group, and checks that it was not refused.
async fn mark(client: &mut Client, kind: &str, group: &str, seq: u64) {
    client
        .send_json(json!({"type": kind, "id": format!("{kind}-{seq}"), "group": group, "seq": seq}))
        .await;
    client.barrier(group).await;
    client.assert_no_error();
}

/// `receipts` with `seqs`: the counts, in the order asked.
async fn receipts_of(client: &mut Client, group: &str, seqs: &[u64]) -> Vec<Counts> {
    let reply = client
        .request(json!({"type": "receipts", "group": group, "seqs": seqs}))
        .await;
    assert_eq!(
        reply["type"], "receipts",
        "receipts {seqs:?} answered with {reply}"
    );
    assert_eq!(reply["group"], group, "{reply}");
    assert_eq!(reply["more"], false, "{reply}");
    let found = items(&reply);
    let asked: Vec<u64> = found.iter().map(|c| c.0).collect();
    assert_eq!(asked, seqs, "items not in the order asked: {reply}");
    found
}

/// `receipts` with `mine: true`: one page of the caller's own messages and its `more`.
async fn my_receipts(
    client: &mut Client,
    group: &str,
    after: Option<u64>,
    limit: Option<u64>,
) -> (Vec<Counts>, bool) {
    let mut frame = json!({"type": "receipts", "group": group, "mine": true});
    if let Some(after) = after {
        frame["after"] = json!(after);
    }
    if let Some(limit) = limit {
        frame["limit"] = json!(limit);
    }
    let reply = client.request(frame).await;
    assert_eq!(
        reply["type"], "receipts",
        "receipts mine answered with {reply}"
    );
    assert_eq!(reply["group"], group, "{reply}");
    let more = reply["more"]
        .as_bool()
        .unwrap_or_else(|| panic!("no boolean more in {reply}"));
    (items(&reply), more)
}

/// The reader lists of one message, asked over the WebSocket and through the admin API; both
/// must agree, and the lists must be sorted and disjoint.
async fn readers(server: &Server, client: &mut Client, group: &str, seq: u64) -> Lists {
    let reply = client
        .request(json!({"type": "readers", "group": group, "seq": seq}))
        .await;
    assert_eq!(
        reply["type"], "readers",
        "readers {seq} answered with {reply}"
    );
    assert_eq!(reply["group"], group, "{reply}");
    assert_eq!(reply["seq"], seq, "{reply}");
    let lists = (
        names(&reply, "read"),
        names(&reply, "delivered"),
        names(&reply, "unread"),
    );
    let mut all = Vec::new();
    for list in [&lists.0, &lists.1, &lists.2] {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "unsorted: {reply}");
        all.extend(list.iter().cloned());
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "lists not disjoint: {reply}");

    let admin = server.admin_expect(
        "GET",
        &format!("/api/groups/{group}/messages/{seq}/receipts"),
        None,
        200,
    );
    assert_eq!(admin["group"], group, "{admin}");
    assert_eq!(admin["seq"], seq, "{admin}");
    let admin_lists = (
        names(&admin, "read"),
        names(&admin, "delivered"),
        names(&admin, "unread"),
    );
    assert_eq!(admin_lists, lists, "admin API and readers frame disagree");
    lists
}

/// Asserts who read, only received, and has not received message `seq` of group "g" (each a
/// space-separated list of users), through `readers`, the admin API and `receipts` counts.
async fn expect_readers(
    server: &Server,
    client: &mut Client,
    seq: u64,
    read: &str,
    delivered: &str,
    unread: &str,
) {
    let group = "g";
    let (read, delivered, unread) = (users(read), users(delivered), users(unread));
    let lists = readers(server, client, group, seq).await;
    assert_eq!(
        lists,
        (read.clone(), delivered.clone(), unread.clone()),
        "readers of {group}/{seq} as (read, delivered, unread)"
    );
    let total = (read.len() + delivered.len() + unread.len()) as u64;
    let expected = (
        seq,
        total,
        (read.len() + delivered.len()) as u64,
        read.len() as u64,
    );
    assert_eq!(
        receipts_of(client, group, &[seq]).await,
        vec![expected],
        "counts of {group}/{seq} as (seq, recipients, delivered, read)"
    );
}

fn receipt_frames(client: &Client) -> Vec<Value> {
    client
        .pending()
        .iter()
        .filter(|f| f["type"] == "receipt")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_readers_follow_joins_leaves_and_cursors() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob", "carol", "dave"]);
    for i in 1..=3 {
        assert_eq!(server.post("g", "alice", &format!("m{i}")), i);
    }

    // Dave reads everything so far; bob and carol are offline and count as not received.
    let mut dave = server.connect("dave").await;
    mark(&mut dave, "read", "g", 3).await;
    expect_readers(&server, &mut dave, 1, "dave", "", "bob carol").await;

    // Erin joins late: a recipient of later messages only.
    server.ensure_users(&["erin"]);
    let erin = server.admin_expect("PUT", "/api/groups/g/members/erin", None, 200);
    assert_eq!(erin["joined_seq"], 3, "{erin}");
    assert_eq!(server.post("g", "alice", "m4"), 4);
    assert_eq!(server.post("g", "alice", "m5"), 5);

    // Dave leaves: no longer counted, not even as a reader of what he read.
    server.admin_expect("DELETE", "/api/groups/g/members/dave", None, 204);
    dave.close().await;

    let mut alice = server.connect("alice").await;
    for seq in 1..=3 {
        expect_readers(&server, &mut alice, seq, "", "", "bob carol").await;
    }
    for seq in 4..=5 {
        expect_readers(&server, &mut alice, seq, "", "", "bob carol erin").await;
    }

    // Bob reads 1..=5 in one batch; carol reads 4 and then 2 (ignored); erin only receives 5.
    let mut bob = server.connect("bob").await;
    mark(&mut bob, "read", "g", 5).await;
    let mut carol = server.connect("carol").await;
    mark(&mut carol, "read", "g", 4).await;
    mark(&mut carol, "read", "g", 2).await;
    let mut erin = server.connect("erin").await;
    mark(&mut erin, "ack", "g", 5).await;

    for seq in 1..=3 {
        expect_readers(&server, &mut alice, seq, "bob carol", "", "").await;
    }
    expect_readers(&server, &mut alice, 4, "bob carol", "erin", "").await;
    expect_readers(&server, &mut alice, 5, "bob", "erin", "carol").await;
    assert_eq!(
        receipts_of(&mut alice, "g", &[5, 1, 4]).await,
        vec![(5, 3, 2, 1), (1, 2, 2, 2), (4, 3, 3, 2)],
        "the counts of several messages, in the order asked"
    );

    // Bob's own message: he is never a recipient, and his reading it changes nothing.
    let sent = bob.send_msg("g", "b6", "m6").await;
    assert_eq!(sent["seq"], 6, "{sent}");
    expect_readers(&server, &mut bob, 6, "", "", "alice carol erin").await;
    mark(&mut bob, "read", "g", 6).await;
    expect_readers(&server, &mut carol, 6, "", "", "alice carol erin").await;

    // Alice reading her own messages changes none of their counts either.
    mark(&mut alice, "read", "g", 5).await;
    expect_readers(&server, &mut alice, 5, "bob", "erin", "carol").await;
    expect_readers(&server, &mut alice, 6, "", "", "alice carol erin").await;
    let (mine, more) = my_receipts(&mut alice, "g", None, None).await;
    assert_eq!(
        mine,
        vec![
            (1, 2, 2, 2),
            (2, 2, 2, 2),
            (3, 2, 2, 2),
            (4, 3, 3, 2),
            (5, 3, 2, 1)
        ]
    );
    assert!(!more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_receipt_frame_per_tick_however_many_readers_moved() {
    // A long interval so that a burst of reads lands in one tick window.
    let server = Server::start_with(&["--receipt-interval-ms", "1000"]);
    let readers: Vec<String> = (1..=6).map(|i| format!("r{i}")).collect();
    let mut members = vec!["alice", "pat"];
    members.extend(readers.iter().map(String::as_str));
    server.create_group("g", &members);

    let mut alice = server.connect("alice").await;
    let mut alice2 = server.connect("alice").await;
    let mut pat = server.connect("pat").await;
    let mut clients = Vec::new();
    for reader in &readers {
        clients.push(server.connect(reader).await);
    }
    for i in 1..=10 {
        let frame =
            json!({"type": "send", "group": "g", "client_id": format!("c{i}"), "body": "x"});
        alice.send_json(frame).await;
    }
    for _ in 1..=10 {
        alice.recv_type("sent").await;
    }

    // Pat reads message 1: its receipt frame marks the start of a tick window.
    mark(&mut pat, "read", "g", 1).await;
    let probe = alice.recv_type("receipt").await;
    assert_eq!(items(&probe), vec![(1, 7, 1, 1)], "{probe}");
    let probe2 = alice2.recv_type("receipt").await;
    assert_eq!(probe2, probe, "every session of the sender gets the frame");

    // Right after a tick, all six read up to 5 at once: one frame, in one tick.
    for client in clients.iter_mut() {
        client
            .send_json(json!({"type": "read", "group": "g", "seq": 5}))
            .await;
    }
    let frame = alice.recv_type("receipt").await;
    assert_eq!(frame["group"], "g", "{frame}");
    let mut expected = vec![(1, 7, 7, 7)];
    expected.extend((2..=5).map(|s| (s, 7, 6, 6)));
    assert_eq!(items(&frame), expected, "{frame}");
    assert_eq!(alice2.recv_type("receipt").await, frame);

    // The sender reading her own messages pushes nothing; nothing else changed: no frame in the
    // next two ticks.
    alice
        .send_json(json!({"type": "read", "group": "g", "seq": 10}))
        .await;
    alice.drain_for(Duration::from_millis(2200)).await;
    alice.assert_no_error();
    let extra = receipt_frames(&alice);
    assert!(extra.is_empty(), "frames without a change: {extra:?}");
    alice2.drain_for(Duration::from_millis(100)).await;
    let extra = receipt_frames(&alice2);
    assert!(extra.is_empty(), "frames without a change: {extra:?}");

    // Pat jumps from 1 to 10 in one read: one frame listing 2..=10 with the new counts.
    pat.send_json(json!({"type": "read", "group": "g", "seq": 10}))
        .await;
    let jump = alice.recv_type("receipt").await;
    let mut expected: Vec<Counts> = (2..=5).map(|s| (s, 7, 7, 7)).collect();
    expected.extend((6..=10).map(|s| (s, 7, 1, 1)));
    assert_eq!(items(&jump), expected, "{jump}");
    alice.drain_for(Duration::from_millis(1200)).await;
    let extra = receipt_frames(&alice);
    assert!(extra.is_empty(), "a second frame: {extra:?}");
    pat.assert_no_error();
    for client in &clients {
        client.assert_no_error();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_sender_pulls_receipts_after_reconnecting() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=5 {
        alice.send_msg("g", &format!("a{i}"), "x").await;
    }
    alice.close().await;

    // While alice is away: bob writes, reads up to 4; carol receives up to 5.
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.send_msg("g", "b6", "x").await["seq"], 6);
    mark(&mut bob, "read", "g", 4).await;
    let mut carol = server.connect("carol").await;
    mark(&mut carol, "ack", "g", 5).await;

    let mut alice = server.connect("alice").await;
    let (all, more) = my_receipts(&mut alice, "g", None, None).await;
    let expected = vec![
        (1, 2, 2, 1),
        (2, 2, 2, 1),
        (3, 2, 2, 1),
        (4, 2, 2, 1),
        (5, 2, 1, 0),
    ];
    assert_eq!(all, expected, "alice's messages only, ascending");
    assert!(!more);

    // Paging by `after` and `limit`.
    let (page, more) = my_receipts(&mut alice, "g", None, Some(2)).await;
    assert_eq!((page, more), (expected[0..2].to_vec(), true));
    let (page, more) = my_receipts(&mut alice, "g", Some(2), Some(2)).await;
    assert_eq!((page, more), (expected[2..4].to_vec(), true));
    let (page, more) = my_receipts(&mut alice, "g", Some(4), Some(2)).await;
    assert_eq!((page, more), (expected[4..].to_vec(), false));
    let (page, more) = my_receipts(&mut alice, "g", Some(5), None).await;
    assert_eq!((page, more), (Vec::new(), false));

    // Bob's view of his own message.
    let (page, more) = my_receipts(&mut bob, "g", None, None).await;
    assert_eq!((page, more), (vec![(6, 2, 0, 0)], false));
    alice.assert_no_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_sync_reaches_only_the_readers_other_sessions() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob"]);
    for i in 1..=3 {
        server.post("g", "alice", &format!("m{i}"));
    }
    let mut bob1 = server.connect("bob").await;
    let mut bob2 = server.connect("bob").await;
    let mut bob3 = server.connect("bob").await;
    let mut alice = server.connect("alice").await;

    mark(&mut bob1, "read", "g", 2).await;
    for bob in [&mut bob2, &mut bob3] {
        let sync = bob.recv_type("read_sync").await;
        assert_eq!(sync, json!({"type": "read_sync", "group": "g", "seq": 2}));
    }

    // A lower read and an ack do not move the read mark: no read_sync. Then bob2 reads 3.
    mark(&mut bob1, "read", "g", 1).await;
    mark(&mut bob1, "ack", "g", 3).await;
    mark(&mut bob2, "read", "g", 3).await;
    for bob in [&mut bob1, &mut bob3] {
        let sync = bob.recv_type("read_sync").await;
        assert_eq!(sync, json!({"type": "read_sync", "group": "g", "seq": 3}));
    }

    // Nobody got anything else: not the session that read, not another user.
    alice.barrier("g").await;
    for client in [&mut bob1, &mut bob2, &mut bob3, &mut alice] {
        client.drain_for(Duration::from_millis(300)).await;
        client.assert_no_error();
        let stray: Vec<&Value> = client
            .pending()
            .iter()
            .filter(|f| f["type"] == "read_sync")
            .collect();
        assert!(stray.is_empty(), "[{}] unexpected {stray:?}", client.user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_the_same_after_a_crash() {
    let mut server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob", "carol", "dave"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=4 {
        alice.send_msg("g", &format!("a{i}"), "x").await;
    }
    let mut bob = server.connect("bob").await;
    mark(&mut bob, "read", "g", 3).await;
    let mut carol = server.connect("carol").await;
    mark(&mut carol, "ack", "g", 4).await;

    // A receipt frame leaves only once the cursors behind it are durable: wait until the pushed
    // counts show both moves.
    let expected = vec![(1, 3, 2, 1), (2, 3, 2, 1), (3, 3, 2, 1), (4, 3, 1, 0)];
    let mut seen: Vec<Option<Counts>> = vec![None; 4];
    while seen
        .iter()
        .map(|c| c.unwrap_or_default())
        .collect::<Vec<_>>()
        != expected
    {
        let frame = alice.recv_type("receipt").await;
        for item in items(&frame) {
            seen[item.0 as usize - 1] = Some(item);
        }
    }
    let mut before = Vec::new();
    for seq in 1..=4 {
        before.push(readers(&server, &mut alice, "g", seq).await);
    }
    assert_eq!(before[2], (users("bob"), users("carol"), users("dave")));
    assert_eq!(before[3], (users(""), users("carol"), users("bob dave")));

    server.restart();

    let mut alice = server.connect("alice").await;
    for seq in 1..=4 {
        assert_eq!(
            readers(&server, &mut alice, "g", seq).await,
            before[seq as usize - 1],
            "readers of {seq} after the restart"
        );
    }
    assert_eq!(
        my_receipts(&mut alice, "g", None, None).await,
        (expected.clone(), false)
    );
    assert_eq!(receipts_of(&mut alice, "g", &[1, 2, 3, 4]).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_queries_refuse_bad_requests() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob"]);
    server.create_group("other", &["mallory"]);
    server.post("g", "alice", "m1");
    server.post("g", "alice", "m2");

    let mut mallory = server.connect("mallory").await;
    for frame in [
        json!({"type": "readers", "group": "g", "seq": 1}),
        json!({"type": "receipts", "group": "g", "mine": true}),
        json!({"type": "receipts", "group": "g", "seqs": [1]}),
    ] {
        mallory.expect_error(frame, "not_member").await;
    }

    let mut bob = server.connect("bob").await;
    for frame in [
        json!({"type": "readers", "group": "g", "seq": 0}),
        json!({"type": "readers", "group": "g", "seq": 3}),
        json!({"type": "receipts", "group": "g", "seqs": [0]}),
        json!({"type": "receipts", "group": "g", "seqs": [1, 3]}),
    ] {
        bob.expect_error(frame, "invalid_seq").await;
    }
    for frame in [
        json!({"type": "receipts", "group": "g"}),
        json!({"type": "receipts", "group": "g", "mine": false}),
        json!({"type": "readers", "group": "g"}),
    ] {
        bob.expect_error(frame, "bad_frame").await;
    }
    let too_many: Vec<u64> = (0..1001).map(|i| i % 2 + 1).collect();
    bob.expect_error(
        json!({"type": "receipts", "group": "g", "seqs": too_many}),
        "too_large",
    )
    .await;
    bob.expect_error(
        json!({"type": "readers", "group": "nope", "seq": 1}),
        "no_such_group",
    )
    .await;

    // The admin API refuses the same seqs.
    for path in [
        "/api/groups/g/messages/0/receipts",
        "/api/groups/g/messages/3/receipts",
    ] {
        let body = server.admin_expect("GET", path, None, 400);
        assert_eq!(common::http_error_code(&body), "invalid_seq", "{path}");
    }
    let body = server.admin_expect("GET", "/api/groups/nope/messages/1/receipts", None, 404);
    assert_eq!(common::http_error_code(&body), "no_such_group");

    // The sessions stay usable, and exactly 1,000 seqs are fine.
    let thousand: Vec<u64> = (0..1000).map(|i| i % 2 + 1).collect();
    let reply = bob
        .request(json!({"type": "receipts", "group": "g", "seqs": thousand}))
        .await;
    assert_eq!(items(&reply).len(), 1000, "{}", reply["type"]);
    mallory.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_unread_counts_others_messages_after_the_read_mark() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("g", &["alice", "bob"]);
    for from in ["alice", "alice", "bob", "alice", "alice", "bob"] {
        server.post("g", from, "x");
    }

    let unread = |client: &Client| {
        let summary = client.welcome_group("g").expect("g in welcome").clone();
        num(&summary, "unread")
    };
    let alice = server.connect("alice").await;
    assert_eq!(unread(&alice), 2, "bob's 3 and 6");

    let mut bob = server.connect("bob").await;
    assert_eq!(unread(&bob), 4, "alice's 1, 2, 4, 5");
    mark(&mut bob, "read", "g", 2).await;
    bob.close().await;
    let mut bob = server.connect("bob").await;
    assert_eq!(unread(&bob), 2, "alice's 4 and 5 (3 and 6 are bob's own)");
    mark(&mut bob, "read", "g", 5).await;
    bob.close().await;
    let bob = server.connect("bob").await;
    assert_eq!(unread(&bob), 0, "only bob's own 6 is after his mark");

    // A late joiner has nothing unread from before joining.
    server.ensure_users(&["carol"]);
    server.admin_expect("PUT", "/api/groups/g/members/carol", None, 200);
    let carol = server.connect("carol").await;
    assert_eq!(unread(&carol), 0);
    carol.close().await;
    server.post("g", "alice", "x");
    let carol = server.connect("carol").await;
    assert_eq!(unread(&carol), 1);
}
