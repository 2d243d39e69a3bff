//! The Rust client module (`rollcall::client`) against a real server: sends that survive a
//! crash without being stored twice, catch-up of a backlog page by page, batched acks, in-order
//! dedupe across dropped connections, receipts and read sync through the client API, and
//! joined/left events.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, TIMEOUT};
use rollcall::client::{
    Client, ClientError, ErrorCode, Event, Message, Readers, ReceiptItem, Sent,
};
use serde_json::json;
use tokio::time::{timeout, Instant};

use common::rust_client::{config, connect, next_event};

/// What a client saw besides messages while messages were collected.
#[derive(Default, Debug)]
struct Seen {
    connected: usize,
    disconnected: usize,
}

/// Takes events until a message of `group` with seq `last` or above arrives, within `within`.
/// Returns the messages in arrival order (any duplicates or gaps included, for the caller to
/// assert on), counting connection events on the way.
async fn messages_until(
    client: &Client,
    group: &str,
    last: u64,
    within: Duration,
) -> (Vec<Message>, Seen) {
    let deadline = Instant::now() + within;
    let mut messages: Vec<Message> = Vec::new();
    let mut seen = Seen::default();
    while messages.last().is_none_or(|m| m.seq < last) {
        let event = match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("[{}] the client closed", client.user()),
            Err(_) => panic!(
                "[{}] by {within:?} got {} messages of {group} up to seq {:?}, expected up to {last}",
                client.user(),
                messages.len(),
                messages.last().map(|m| m.seq)
            ),
        };
        match event {
            Event::Message(message) => {
                assert_eq!(message.group, group, "a message of another group");
                messages.push(message);
            }
            Event::Connected { .. } => seen.connected += 1,
            Event::Disconnected => seen.disconnected += 1,
            // Ephemeral: who else is online (or typing) says nothing about the messages.
            Event::Receipt { .. }
            | Event::ReadSync { .. }
            | Event::Presence { .. }
            | Event::Typing { .. } => {}
            other => panic!("[{}] unexpected event {other:?}", client.user()),
        }
    }
    (messages, seen)
}

/// The next message event of `group`, skipping connection and receipt events.
async fn next_message(client: &Client, group: &str) -> Message {
    let (mut messages, _) = messages_until(client, group, 0, TIMEOUT).await;
    messages.pop().expect("one message")
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// Waits until `check` holds, polling the server every 20 ms (for server state that no event
/// announces, such as a cursor moved by an ack). Panics with `what` and the last value.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let value = tokio::task::block_in_place(&mut probe);
        if check(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: still {value:?} after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's `delivered` cursor of `user` in `group`.
fn delivered(server: &Server, group: &str, user: &str) -> u64 {
    server.member(group, user)["delivered"]
        .as_u64()
        .expect("numeric delivered")
}

/// Stores `n` messages from `from` through a raw, pipelined WebSocket session (one group commit
/// covers many); message `i` (1-based) has body `"{prefix} {i}"` and gets seq `first + i - 1`.
async fn post_pipelined(server: &Server, group: &str, from: &str, prefix: &str, n: u64) {
    let mut raw = server.connect(from).await;
    for i in 1..=n {
        raw.send_json(json!({
            "type": "send", "id": i, "group": group,
            "client_id": format!("{prefix}-{i}"), "body": format!("{prefix} {i}")
        }))
        .await;
    }
    for i in 1..=n {
        let sent = raw.recv_where("a sent", |f| f["id"] == i).await;
        assert_eq!(sent["type"], "sent", "{sent}");
    }
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_survive_a_crash_and_are_stored_once() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let alice = connect(config(&server, "alice")).await;
    let bob = connect(config(&server, "bob")).await;

    // Every send is its own task, as independent callers would make them; the server is killed
    // once 30 are answered, with the rest in flight or not yet written. With 500 sends the crash
    // nearly always also falls between storing some of them and their `sent` reaching the
    // client (some answers then come back with `duplicate: true`), which is the case the resend
    // with the same `client_id` exists for; whatever the timing, the invariants below must hold.
    const N: u64 = 500;
    const KILL_AFTER: usize = 30;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 1..=N {
        let alice = alice.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let body = format!("crash {i}");
            let result = alice.send("team", &body).await;
            let _ = done.send((body, result));
        });
    }
    drop(done_tx);
    let mut results: Vec<(String, Result<Sent, ClientError>)> = Vec::new();
    while results.len() < KILL_AFTER {
        let result = timeout(TIMEOUT, done_rx.recv())
            .await
            .expect("the first sends take too long")
            .expect("a send task ended without answering");
        results.push(result);
    }
    tokio::task::block_in_place(|| server.restart_on_same_port());

    // Every send completes after the restart, without the caller doing anything.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(result) = tokio::time::timeout_at(deadline, done_rx.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {N} sends answered 30 s after the crash",
                results.len()
            )
        })
    {
        results.push(result);
    }
    assert_eq!(results.len(), N as usize);
    let mut body_of_seq: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for (body, result) in results {
        let sent = result.unwrap_or_else(|e| panic!("send of {body:?} failed: {e}"));
        assert_eq!(sent.group, "team");
        if let Some((other, _)) = body_of_seq.insert(sent.seq, (body.clone(), sent.client_id)) {
            panic!("{body:?} and {other:?} both got seq {}", sent.seq);
        }
    }
    assert_eq!(
        body_of_seq.keys().copied().collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "the seqs handed to the senders"
    );
    // Nothing was stored twice: the group holds exactly the N messages.
    let group = tokio::task::block_in_place(|| server.group("team"));
    assert_eq!(group["last_seq"], N, "{group}");

    // Bob reconnected by himself and sees every message once, in order, with its body.
    let (messages, _) = messages_until(&bob, "team", N, Duration::from_secs(30)).await;
    assert_eq!(seqs(&messages), (1..=N).collect::<Vec<_>>());
    for message in &messages {
        let (body, client_id) = &body_of_seq[&message.seq];
        assert_eq!(&message.body, body, "seq {}", message.seq);
        assert_eq!(&message.client_id, client_id, "seq {}", message.seq);
        assert_eq!(message.from, "alice");
    }
    // Nothing of the old stream comes again: the next message bob sees is the next one sent.
    let sent = alice.send("team", "after the crash").await.expect("send");
    assert_eq!(sent.seq, N + 1);
    let message = next_message(&bob, "team").await;
    assert_eq!(
        (message.seq, message.body.as_str()),
        (N + 1, "after the crash")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backlog_arrives_in_pages_and_is_acknowledged() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    const N: u64 = 250;
    post_pipelined(&server, "team", "alice", "backlog", N).await;
    let syncs_before = server.metric(r#"rollcall_frames_in_total{type="sync"}"#);

    let mut bob_config = config(&server, "bob");
    bob_config.sync_page = 100;
    let bob = connect(bob_config).await;
    let (messages, _) = messages_until(&bob, "team", N, TIMEOUT).await;
    assert_eq!(seqs(&messages), (1..=N).collect::<Vec<_>>());
    for message in &messages {
        assert_eq!(message.body, format!("backlog {}", message.seq));
        assert_eq!(message.from, "alice");
    }
    // Pages of 100: 100 + 100 + 50.
    let syncs = server.metric(r#"rollcall_frames_in_total{type="sync"}"#) - syncs_before;
    assert_eq!(syncs, 3, "sync requests for {N} messages in pages of 100");

    // The batched acks (every 20 messages, the rest on the 200 ms timer) reach the server.
    eventually(
        "bob's delivered cursor",
        || delivered(&server, "team", "bob"),
        |&d| d == N,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_batched_by_count_and_flushed_by_time() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    server.create_group("quiet", &["alice", "carol"]);
    let acks = || server.metric(r#"rollcall_frames_in_total{type="ack"}"#);

    // Every 20 messages, with a timer too long to matter: 100 messages take 5 acks, not 100.
    let mut bob_config = config(&server, "bob");
    bob_config.ack_every = 20;
    bob_config.ack_interval = Duration::from_secs(60);
    let bob = connect(bob_config).await;
    let acks_before = acks();
    post_pipelined(&server, "team", "alice", "batch", 100).await;
    let (messages, _) = messages_until(&bob, "team", 100, TIMEOUT).await;
    assert_eq!(seqs(&messages), (1..=100).collect::<Vec<_>>());
    eventually(
        "bob's delivered cursor",
        || delivered(&server, "team", "bob"),
        |&d| d == 100,
    )
    .await;
    let sent_acks = acks() - acks_before;
    assert!(
        (1..=6).contains(&sent_acks),
        "100 consumed messages took {sent_acks} ack frames"
    );

    // A count never reached: the 100 ms timer sends the ack.
    let mut carol_config = config(&server, "carol");
    carol_config.ack_every = 1000;
    carol_config.ack_interval = Duration::from_millis(100);
    let carol = connect(carol_config).await;
    post_pipelined(&server, "quiet", "alice", "few", 5).await;
    let (messages, _) = messages_until(&carol, "quiet", 5, TIMEOUT).await;
    assert_eq!(seqs(&messages), (1..=5).collect::<Vec<_>>());
    eventually(
        "carol's delivered cursor",
        || delivered(&server, "quiet", "carol"),
        |&d| d == 5,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_neither_lose_nor_repeat_messages() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let alice = connect(config(&server, "alice")).await;
    let bob = connect(config(&server, "bob")).await;

    // Alice sends one message at a time (each waits for its flush), so the stream is still
    // running when bob's connection drops, twice.
    const N: u64 = 150;
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                let sent = alice.send("team", &format!("m {i}")).await.expect("send");
                assert_eq!(sent.seq, i);
            }
        })
    };
    let (first, seen_first) = messages_until(&bob, "team", 40, TIMEOUT).await;
    bob.disconnect_now();
    let (second, seen_second) = messages_until(&bob, "team", 100, TIMEOUT).await;
    bob.disconnect_now();
    let (third, seen_third) = messages_until(&bob, "team", N, TIMEOUT).await;
    timeout(TIMEOUT, sender)
        .await
        .expect("alice's sends take too long")
        .expect("alice's sends failed");

    let all: Vec<Message> = [first, second, third].concat();
    assert_eq!(seqs(&all), (1..=N).collect::<Vec<_>>());
    for message in &all {
        assert_eq!(message.body, format!("m {}", message.seq));
    }
    // Nothing comes again after the stream: the next message is the next one sent.
    alice.send("team", "last").await.expect("send");
    let (after, seen_after) = messages_until(&bob, "team", N + 1, TIMEOUT).await;
    assert_eq!(seqs(&after), vec![N + 1]);

    let seen = [seen_first, seen_second, seen_third, seen_after];
    let disconnected: usize = seen.iter().map(|s| s.disconnected).sum();
    let connected: usize = seen.iter().map(|s| s.connected).sum();
    assert_eq!(
        (disconnected, connected),
        (2, 2),
        "drops and reconnects: {seen:?}"
    );
}

fn item(seq: u64, recipients: u64, delivered: u64, read: u64) -> ReceiptItem {
    ReceiptItem {
        seq,
        recipients,
        delivered,
        read,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_read_sync_through_the_client() {
    let server = Server::start_with(&["--receipt-interval-ms", "200"]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let alice = connect(config(&server, "alice")).await;
    let bob = connect(config(&server, "bob")).await;
    let bob_phone = connect(config(&server, "bob")).await;
    let carol = connect(config(&server, "carol")).await;

    for i in 1..=3 {
        let sent = alice.send("team", &format!("r {i}")).await.expect("send");
        assert_eq!(sent.seq, i);
    }
    // Bob reads everything on his laptop; carol has read up to 2 (on a client that consumed
    // nothing, so her only cursor movement is that read).
    let (messages, _) = messages_until(&bob, "team", 3, TIMEOUT).await;
    assert_eq!(seqs(&messages), vec![1, 2, 3]);
    bob.read("team", 3).expect("read");
    carol.read("team", 2).expect("read");

    // Alice's counts rise to both readers through pushed receipts.
    let expected = vec![item(1, 2, 2, 2), item(2, 2, 2, 2), item(3, 2, 1, 1)];
    let mut latest: BTreeMap<u64, ReceiptItem> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while latest.values().copied().collect::<Vec<_>>() != expected {
        let event = tokio::time::timeout_at(deadline, alice.next_event())
            .await
            .unwrap_or_else(|_| panic!("alice's receipts stopped at {latest:?}"))
            .expect("alice's client closed");
        if let Event::Receipt { group, items } = event {
            assert_eq!(group, "team");
            for item in items {
                assert!(
                    item.read <= item.delivered && item.delivered <= item.recipients,
                    "{item:?}"
                );
                latest.insert(item.seq, item);
            }
        }
    }

    // The pulls agree with the pushes, for the sender and for any member.
    let (mine, more) = alice.receipts_mine("team", 0, 100).await.expect("receipts");
    assert_eq!((mine, more), (expected.clone(), false));
    let asked = bob.receipts_for("team", &[3, 1]).await.expect("receipts");
    assert_eq!(asked, vec![expected[2], expected[0]]);
    let readers = |seq: u64, read: &[&str], unread: &[&str]| Readers {
        group: "team".into(),
        seq,
        read: read.iter().map(|u| u.to_string()).collect(),
        delivered: Vec::new(),
        unread: unread.iter().map(|u| u.to_string()).collect(),
    };
    assert_eq!(
        alice.readers("team", 3).await.expect("readers"),
        readers(3, &["bob"], &["carol"])
    );
    assert_eq!(
        carol.readers("team", 2).await.expect("readers"),
        readers(2, &["bob", "carol"], &[])
    );

    // Bob's phone learns that his laptop read up to 3.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let event = tokio::time::timeout_at(deadline, bob_phone.next_event())
            .await
            .expect("no read sync on bob's phone")
            .expect("bob's phone closed");
        match event {
            Event::ReadSync { group, seq } => {
                assert_eq!((group.as_str(), seq), ("team", 3));
                break;
            }
            Event::Message(_) | Event::Presence { .. } => {}
            other => panic!("unexpected event on bob's phone: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_and_leaving_while_online() {
    let server = Server::start();
    server.create_group("late", &["alice"]);
    server.admin_expect(
        "POST",
        "/api/groups/late/messages",
        Some(json!({"from": "alice", "body": "before bob"})),
        200,
    );
    let bob = connect(config(&server, "bob")).await;
    assert!(bob.groups().is_empty());

    server.admin_expect("PUT", "/api/groups/late/members/bob", None, 200);
    match next_event(&bob).await {
        Event::Joined(summary) => {
            assert_eq!(summary.group, "late");
            assert_eq!((summary.last_seq, summary.delivered), (1, 1), "{summary:?}");
        }
        other => panic!("expected Joined, got {other:?}"),
    }
    server.admin_expect(
        "POST",
        "/api/groups/late/messages",
        Some(json!({"from": "alice", "body": "welcome bob"})),
        200,
    );
    // The message from before he joined is not his; the next one is.
    let message = next_message(&bob, "late").await;
    assert_eq!(
        (message.seq, message.body.as_str()),
        (2, "welcome bob"),
        "{message:?}"
    );
    let sent = bob.send("late", "hi").await.expect("a member may send");
    assert_eq!(sent.seq, 3);
    assert_eq!(next_message(&bob, "late").await.seq, 3);

    server.admin_expect("DELETE", "/api/groups/late/members/bob", None, 204);
    assert_eq!(
        next_event(&bob).await,
        Event::Left {
            group: "late".into()
        }
    );
    match bob.send("late", "still here?").await {
        Err(ClientError::Server {
            code: ErrorCode::NotMember,
            ..
        }) => {}
        other => panic!("a removed member's send should be refused, got {other:?}"),
    }
}
