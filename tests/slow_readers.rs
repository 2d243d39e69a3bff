//! Flow control: a session that does not keep up is evicted with close code 4000 and loses
//! nothing (it resyncs); a client pipelining many sends gets every one answered.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{seq, seqs, Server, WireEnd};
use serde_json::json;

/// The error codes PROTOCOL.md §5 defines.
const DOCUMENTED_CODES: &[&str] = &[
    "bad_frame",
    "unknown_type",
    "unauthorized",
    "no_such_group",
    "no_such_user",
    "not_member",
    "invalid_seq",
    "too_large",
    "user_exists",
    "group_exists",
    "not_found",
    "busy",
    "internal",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_evicted_and_loses_nothing() {
    let server = Server::start_with(&["--session-queue", "16"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await; // reads nothing until alice is done

    // ~19 MB of pushes: far more than the socket buffers hold, so bob's queue fills up.
    const N: u64 = 300;
    let body = "x".repeat(64_000);
    // alice keeps up with her own pushes.
    for sent in alice.send_in_windows("team", N, 6, &body).await {
        assert_eq!(sent["duplicate"], false);
    }

    // bob finds his connection closed with 4000 after the msgs that made it, in order.
    let mut seen = Vec::new();
    let end = loop {
        match bob.read_wire(common::TIMEOUT).await {
            Ok(frame) if frame["type"] == "msg" => seen.push(seq(&frame)),
            Ok(_) => {}
            Err(end) => break end,
        }
    };
    assert!(
        matches!(end, WireEnd::Closed(Some(4000))),
        "a session that stopped reading should be evicted with 4000, got {end:?} after {} msgs",
        seen.len()
    );
    let k = seen.len() as u64;
    assert!(k < N, "bob was evicted after receiving everything");
    assert_eq!(
        seen,
        (1..=k).collect::<Vec<_>>(),
        "msgs before the eviction out of order"
    );

    // He reconnects and catches up (small pages: each message is 64 kB); nothing is lost.
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.welcome_group("team").expect("team")["last_seq"], N);
    let rest = bob.sync_all_in_pages("team", k, 10).await;
    assert_eq!(seqs(&rest), (k + 1..=N).collect::<Vec<_>>());

    // alice, who kept reading, was never evicted.
    alice.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_past_the_session_queue_is_refused_with_busy_and_loses_nothing() {
    let server = Server::start_with(&["--session-queue", "8"]);
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;

    // 40 sends at once, 5 times the queue. Each is answered with `sent`, or refused with `busy`
    // (nothing stored; the client retries after some `sent` arrive), or (slow readers) the
    // session is evicted with 4000 and the client resends on a new one.
    const N: u64 = 40;
    let mut answered: BTreeMap<u64, u64> = BTreeMap::new(); // n -> seq
    let mut n_busy = 0;
    let mut rounds = 0;
    // Sends outstanding when the session was evicted: stored or not, their answer was lost with
    // the connection, so their resend may rightly come back as a duplicate.
    let mut cut_off: BTreeSet<u64> = BTreeSet::new();
    while (answered.len() as u64) < N {
        rounds += 1;
        assert!(rounds <= 50, "no progress after {rounds} rounds");
        let open: Vec<u64> = (1..=N).filter(|n| !answered.contains_key(n)).collect();
        for n in &open {
            alice
                .send_json(json!({"type": "send", "id": n, "group": "team", "client_id": format!("c{n}"), "body": format!("b{n}")}))
                .await;
        }
        let mut waiting = open.len();
        while waiting > 0 {
            match alice.read_wire(common::TIMEOUT).await {
                Ok(frame) if frame["type"] == "sent" => {
                    let n = frame["id"].as_u64().expect("the id is echoed");
                    if !cut_off.contains(&n) {
                        assert_eq!(frame["duplicate"], false, "c{n} was stored before: {frame}");
                    }
                    answered.insert(n, seq(&frame));
                    waiting -= 1;
                }
                Ok(frame) if frame["type"] == "error" => {
                    let code = frame["code"].as_str().unwrap_or_default();
                    assert!(
                        DOCUMENTED_CODES.contains(&code),
                        "error code {code:?} is not in PROTOCOL.md §5: {frame}"
                    );
                    assert_eq!(code, "busy", "a valid pipelined send was refused: {frame}");
                    assert!(
                        frame["id"].as_u64().is_some(),
                        "busy without the id: {frame}"
                    );
                    n_busy += 1;
                    waiting -= 1;
                }
                Ok(_) => {}
                Err(WireEnd::Closed(Some(4000))) => {
                    cut_off.extend((1..=N).filter(|n| !answered.contains_key(n)));
                    alice = server.connect("alice").await;
                    break;
                }
                Err(end) => panic!("the connection ended: {end:?}"),
            }
        }
    }
    eprintln!("{n_busy} sends were refused with busy and retried");
    let all = alice.sync_all("team", 0).await;
    assert_eq!(
        seqs(&all),
        (1..=N).collect::<Vec<_>>(),
        "a send was stored twice or lost"
    );
    for (n, s) in &answered {
        let message = &all[(*s - 1) as usize];
        assert_eq!(message["client_id"], format!("c{n}"));
        assert_eq!(message["body"], format!("b{n}"));
    }
}

/// A member that stops reading is evicted without holding back the group: the sender's sends
/// are all answered and a member that keeps reading gets every message, in order, while the
/// stalled one is behind. The stalled member then resyncs from its stored `delivered` cursor
/// (what it acknowledged), not from what the client happens to remember, and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_does_not_hold_back_the_others_and_resyncs_from_its_cursor() {
    let server = Server::start_with(&["--session-queue", "16"]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    // bob reads and acknowledges the first 10 messages, then stops reading.
    const FIRST: u64 = 10;
    for i in 1..=FIRST {
        alice.send_msg("team", &format!("s{i}"), "small").await;
    }
    assert_eq!(
        seqs(&bob.recv_msgs("team", FIRST as usize).await),
        (1..=FIRST).collect::<Vec<_>>()
    );
    bob.send_json(json!({"type": "ack", "group": "team", "seq": FIRST}))
        .await;
    bob.barrier("team").await;

    // carol reads everything, concurrently, as fast as it comes.
    const N: u64 = FIRST + 300;
    let carol_reads = tokio::spawn(async move {
        let msgs = carol.recv_msgs("team", N as usize).await;
        carol.ping().await; // still connected: never evicted
        seqs(&msgs)
    });

    // ~19 MB of pushes: bob's queue overflows long before the end.
    let body = "x".repeat(64_000);
    for sent in alice.send_in_windows("team", N - FIRST, 6, &body).await {
        assert_eq!(sent["duplicate"], false);
    }

    let carol_seqs = carol_reads.await.expect("carol's reader");
    assert_eq!(
        carol_seqs,
        (1..=N).collect::<Vec<_>>(),
        "a reading member missed messages while another member was stalled"
    );
    let end = bob.expect_closed().await;
    assert!(
        matches!(end, WireEnd::Closed(Some(4000))),
        "the stalled member should be evicted with 4000, got {end:?}"
    );

    // bob comes back: his welcome shows the cursor he acknowledged, and syncing from it brings
    // every later message.
    let mut bob = server.connect("bob").await;
    let team = bob.welcome_group("team").expect("team").clone();
    assert_eq!(team["delivered"], FIRST, "{team}");
    assert_eq!(team["last_seq"], N, "{team}");
    let rest = bob.sync_all_in_pages("team", FIRST, 20).await;
    assert_eq!(seqs(&rest), (FIRST + 1..=N).collect::<Vec<_>>());
}
