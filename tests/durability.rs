//! Crashes: whatever the server acknowledged (`sent`, a 201, a `{seq, ts}`) survives a SIGKILL,
//! seqs stay gapless, and idempotent resend still works afterwards.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};

use common::{seq, seqs, Server, WireEnd, TIMEOUT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_stream_loses_no_acknowledged_message() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;

    const N: u64 = 200;
    let frame = |i: u64| {
        json!({
            "type": "send", "group": "team",
            "client_id": format!("c-{i}"), "body": format!("body {i}")
        })
        .to_string()
    };
    let mut acked: BTreeMap<String, u64> = BTreeMap::new(); // client_id -> seq
    fn record(acked: &mut BTreeMap<String, u64>, frame: &serde_json::Value) {
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "sent" {
            let client_id = frame["client_id"].as_str().expect("client_id").to_string();
            acked.insert(client_id, seq(frame));
        }
    }

    // The client keeps a window of up to WINDOW sends in flight, topping it up as `sent`s
    // arrive, so the server is storing, flushing and acknowledging in several batches. When
    // KILL_AT sends are acknowledged, the server is killed with the window still in flight.
    const WINDOW: u64 = 30;
    const KILL_AT: usize = 100;
    let mut written = 0;
    while written < WINDOW {
        written += 1;
        alice.send_text(&frame(written)).await;
    }
    loop {
        let reply = alice.recv().await;
        record(&mut acked, &reply);
        if acked.len() >= KILL_AT {
            break;
        }
        while written < N && written - (acked.len() as u64) < WINDOW {
            written += 1;
            alice.send_text(&frame(written)).await;
        }
    }
    server.kill9();

    // Every `sent` that made it out before the crash counts as acknowledged.
    loop {
        match alice.read_wire(TIMEOUT).await {
            Ok(frame) => record(&mut acked, &frame),
            Err(WireEnd::Timeout) => panic!("the connection outlived the server"),
            Err(_) => break,
        }
    }
    while let Some(frame) = alice.take_pending() {
        record(&mut acked, &frame);
    }
    eprintln!(
        "{} of {written} written sends were acknowledged before the crash",
        acked.len()
    );
    server.restart();

    // Every acknowledged message is there, under its seq, and the seqs have no gap.
    let mut alice = server.connect("alice").await;
    let stored = alice.sync_all("team", 0).await;
    let last_seq = stored.len() as u64;
    eprintln!("{last_seq} of {N} sends were stored before the crash");
    assert_eq!(
        seqs(&stored),
        (1..=last_seq).collect::<Vec<_>>(),
        "gaps after the crash"
    );
    assert_eq!(server.group("team")["last_seq"], last_seq);
    let by_client_id: HashMap<String, (u64, String)> = stored
        .iter()
        .map(|m| {
            (
                m["client_id"].as_str().expect("client_id").to_string(),
                (seq(m), m["body"].as_str().expect("body").to_string()),
            )
        })
        .collect();
    assert_eq!(
        by_client_id.len() as u64,
        last_seq,
        "a client_id was stored twice"
    );
    for (client_id, acked_seq) in &acked {
        let (stored_seq, body) = by_client_id
            .get(client_id)
            .unwrap_or_else(|| panic!("acknowledged {client_id} (seq {acked_seq}) was lost"));
        assert_eq!(stored_seq, acked_seq, "{client_id} moved");
        assert_eq!(body, &format!("body {}", &client_id[2..]));
    }

    // The client resends everything it has no `sent` for, with the same client_ids: the ones
    // that were stored are recognised, the rest are stored now.
    for i in 1..=N {
        let client_id = format!("c-{i}");
        if acked.contains_key(&client_id) {
            continue;
        }
        let sent = alice
            .send_msg("team", &client_id, &format!("body {i}"))
            .await;
        match by_client_id.get(&client_id) {
            Some((stored_seq, _)) => {
                assert_eq!(
                    sent["duplicate"], true,
                    "{client_id} was stored before: {sent}"
                );
                assert_eq!(seq(&sent), *stored_seq);
            }
            None => assert_eq!(sent["duplicate"], false, "{sent}"),
        }
    }
    // An acknowledged one resent is a duplicate too.
    if let Some((client_id, acked_seq)) = acked.iter().next() {
        let i = &client_id[2..];
        let sent = alice
            .send_msg("team", client_id, &format!("body {i}"))
            .await;
        assert_eq!(sent["duplicate"], true);
        assert_eq!(seq(&sent), *acked_seq);
    }

    let all = alice.sync_all("team", 0).await;
    assert_eq!(seqs(&all), (1..=N).collect::<Vec<_>>());
    let bodies: HashSet<&str> = all.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies.len() as u64, N, "a body is stored twice");
    for i in 1..=N {
        assert!(
            bodies.contains(format!("body {i}").as_str()),
            "body {i} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_after_a_crash_is_still_recognised() {
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let first = alice.send_msg("team", "retry-me", "hello").await;
    assert_eq!(seq(&first), 1);
    drop(alice);

    server.restart();

    let mut alice = server.connect("alice").await;
    let again = alice.send_msg("team", "retry-me", "hello").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["ts"], first["ts"]);
    let next = alice.send_msg("team", "new-one", "world").await;
    assert_eq!(seq(&next), 2, "the duplicate must not consume a seq");
    assert_eq!(next["duplicate"], false);
    let all = alice.sync_all("team", 0).await;
    assert_eq!(seqs(&all), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_groups_members_and_messages_survive_a_crash() {
    let mut server = Server::start();
    let created = server.admin_expect(
        "POST",
        "/api/users",
        Some(json!({"id": "dora", "name": "Dora"})),
        201,
    );
    let dora_token = created["token"].as_str().expect("token").to_string();
    server.ensure_users(&["alice"]);
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "eng", "name": "Engineering", "members": ["alice", "dora"]})),
        201,
    );
    let bot = server.admin_expect(
        "POST",
        "/api/groups/eng/messages",
        Some(json!({"from": "alice", "body": "from the bot", "client_id": "bot-1"})),
        200,
    );
    server.ensure_users(&["erin"]);
    server.admin_expect("PUT", "/api/groups/eng/members/erin", None, 200);
    let before = server.group("eng");

    server.restart();

    assert_eq!(
        server.group("eng"),
        before,
        "the group changed across the crash"
    );
    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "dora"})));
    assert_eq!(
        (status, common::http_error_code(&body).as_str()),
        (409, "user_exists")
    );
    // A token issued before the crash still works.
    let mut dora = common::Client::connect(&server.ws_url(), &dora_token).await;
    assert_eq!(dora.welcome["user"], "dora");
    let messages = dora.sync_all("eng", 0).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["body"], "from the bot");
    assert_eq!(messages[0]["seq"], bot["seq"]);
    assert_eq!(messages[0]["ts"], bot["ts"]);
    let again = server.admin_expect(
        "POST",
        "/api/groups/eng/messages",
        Some(json!({"from": "alice", "body": "from the bot", "client_id": "bot-1"})),
        200,
    );
    assert_eq!(
        (&again["seq"], &again["ts"]),
        (&bot["seq"], &bot["ts"]),
        "a bot resend after a crash must return the original seq and ts"
    );
}
