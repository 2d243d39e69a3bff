//! Live messaging: `send` → `sent` to the sender, `msg` pushed to every online session of every
//! member, in seq order; idempotent resend by `client_id`.

mod common;

use common::{seq, seqs, Server};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_reach_every_session_in_order() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut alice_phone = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    const N: u64 = 50;
    for i in 1..=N {
        alice
            .send_json(json!({
                "type": "send", "id": i, "group": "team",
                "client_id": format!("c-{i}"), "body": format!("hello {i}")
            }))
            .await;
    }

    // The sender gets one `sent` per send, echoing its id and client_id; one session's sends get
    // seqs in the order they were sent.
    let mut sent_ts = Vec::new();
    for i in 1..=N {
        let sent = alice.recv_where("a sent", |f| f["id"] == i).await;
        assert_eq!(sent["type"], "sent", "{sent}");
        assert_eq!(sent["group"], "team");
        assert_eq!(sent["client_id"], format!("c-{i}"));
        assert_eq!(
            seq(&sent),
            i,
            "sends of one session must be numbered in order: {sent}"
        );
        assert_eq!(sent["duplicate"], false);
        assert!(sent["ts"].as_u64().is_some_and(|ts| ts > 0), "{sent}");
        sent_ts.push(sent["ts"].clone());
    }

    // Every session of every member, the sender's own two included, sees 1..=N in order.
    for client in [&mut alice, &mut alice_phone, &mut bob, &mut carol] {
        let msgs = client.recv_msgs("team", N as usize).await;
        assert_eq!(
            seqs(&msgs),
            (1..=N).collect::<Vec<_>>(),
            "{} saw msgs out of order or with gaps",
            client.user
        );
        for (i, msg) in (1..=N).zip(&msgs) {
            assert_eq!(msg["from"], "alice", "{msg}");
            assert_eq!(msg["body"], format!("hello {i}"), "{msg}");
            assert_eq!(msg["client_id"], format!("c-{i}"), "{msg}");
            assert_eq!(
                msg["ts"],
                sent_ts[(i - 1) as usize],
                "msg and sent disagree on ts"
            );
        }
        client.assert_no_error();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_see_one_common_order() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    const EACH: usize = 20;
    for i in 0..EACH {
        for (client, name) in [(&mut alice, "a"), (&mut bob, "b")] {
            client
                .send_json(json!({
                    "type": "send", "group": "team",
                    "client_id": format!("{name}-{i}"), "body": format!("{name} says {i}")
                }))
                .await;
        }
    }

    let mut orders: Vec<Vec<(u64, String)>> = Vec::new();
    for client in [&mut alice, &mut bob, &mut carol] {
        let msgs = client.recv_msgs("team", 2 * EACH).await;
        assert_eq!(seqs(&msgs), (1..=(2 * EACH) as u64).collect::<Vec<_>>());
        orders.push(
            msgs.iter()
                .map(|m| (seq(m), m["body"].as_str().unwrap_or_default().to_string()))
                .collect(),
        );
        client.assert_no_error();
    }
    assert_eq!(
        orders[0], orders[1],
        "alice and bob see different histories"
    );
    assert_eq!(
        orders[0], orders[2],
        "alice and carol see different histories"
    );
    // Each sender's own messages keep their sending order.
    for name in ["a", "b"] {
        let mine: Vec<String> = orders[0]
            .iter()
            .filter(|(_, body)| body.starts_with(&format!("{name} says")))
            .map(|(_, body)| body.clone())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("{name} says {i}")).collect();
        assert_eq!(mine, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_a_client_id_returns_the_original_and_pushes_nothing() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    let first = alice.send_msg("team", "same-id", "only once").await;
    assert_eq!(seq(&first), 1);
    assert_eq!(first["duplicate"], false);
    let pushed = bob.recv_msg("team").await;
    assert_eq!(seq(&pushed), 1);

    // Same client_id again (even with another body): the original seq and ts, flagged duplicate.
    let again = alice.send_msg("team", "same-id", "a retry").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["ts"], first["ts"]);
    assert_eq!(again["client_id"], "same-id");

    // Nothing new was stored or pushed: the next message is seq 2, and it is the next msg that
    // bob and alice see.
    let next = alice.send_msg("team", "next-id", "second").await;
    assert_eq!(seq(&next), 2, "a duplicate must not consume a seq");
    let bob_next = bob.recv_msg("team").await;
    assert_eq!(
        seq(&bob_next),
        2,
        "bob got a second msg for a duplicate send"
    );
    let alice_msgs = alice.recv_msgs("team", 2).await;
    assert_eq!(seqs(&alice_msgs), vec![1, 2]);

    let history = alice.sync_all("team", 0).await;
    assert_eq!(seqs(&history), vec![1, 2]);
    assert_eq!(
        history[0]["body"], "only once",
        "the retry's body must not replace the original"
    );
    assert_eq!(server.group("team")["last_seq"], 2);

    // The key is (group, sender, client_id): bob may use the same client_id for his own message.
    let bobs = bob.send_msg("team", "same-id", "bob's own").await;
    assert_eq!(bobs["duplicate"], false);
    assert_eq!(seq(&bobs), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resend_window_holds_the_latest_messages_also_after_a_crash() {
    // A window of 5 messages: ids 6..=10 are remembered, ids 1..=5 have aged out.
    let mut server = Server::start_with(&["--dedup-window", "5"]);
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=10 {
        alice
            .send_msg("team", &format!("c{i}"), &format!("m{i}"))
            .await;
    }
    let recent = alice.send_msg("team", "c8", "retry of 8").await;
    assert_eq!((seq(&recent), &recent["duplicate"]), (8, &json!(true)));

    // After a crash the window is rebuilt from the stored messages.
    server.restart();
    let mut alice = server.connect("alice").await;
    let recent = alice.send_msg("team", "c6", "retry of 6").await;
    assert_eq!((seq(&recent), &recent["duplicate"]), (6, &json!(true)));
    // An id older than the window is a new message (documented in PROTOCOL.md).
    let old = alice.send_msg("team", "c1", "c1 again, much later").await;
    assert_eq!((seq(&old), &old["duplicate"]), (11, &json!(false)));
    // The window now holds seqs 7..=11, and `c1` names seq 11.
    let again = alice.send_msg("team", "c1", "c1 once more").await;
    assert_eq!((seq(&again), &again["duplicate"]), (11, &json!(true)));
    assert_eq!(server.group("team")["last_seq"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_and_sync_pages_forwards() {
    let server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    for i in 1..=30 {
        alice
            .send_json(json!({"type": "send", "group": "team", "client_id": format!("c{i}"), "body": format!("b{i}")}))
            .await;
    }
    for _ in 0..30 {
        alice.recv_type("sent").await;
    }
    let mut bob = server.connect("bob").await;

    // history without `before` starts at the newest message.
    let page = bob
        .request(json!({"type": "history", "group": "team", "limit": 10}))
        .await;
    assert_eq!(page["type"], "messages", "{page}");
    assert_eq!(page["group"], "team");
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        (21..=30).collect::<Vec<_>>()
    );
    assert_eq!(page["more"], true);
    assert_eq!(page["last_seq"], 30);
    let page = bob
        .request(json!({"type": "history", "group": "team", "before": 21, "limit": 10}))
        .await;
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        (11..=20).collect::<Vec<_>>()
    );
    assert_eq!(page["more"], true);
    let page = bob
        .request(json!({"type": "history", "group": "team", "before": 11, "limit": 10}))
        .await;
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(page["more"], false, "nothing is older than seq 1");
    let first = &page["messages"][0];
    for field in ["group", "seq", "from", "ts", "body", "client_id"] {
        assert!(
            first.get(field).is_some(),
            "a history entry lacks {field}: {first}"
        );
    }
    assert_eq!(first["from"], "alice");
    assert_eq!(first["body"], "b1");
    assert_eq!(first["client_id"], "c1");

    // sync after 25 → 26..30, nothing further.
    let page = bob.sync_page("team", 25, 100).await;
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        (26..=30).collect::<Vec<_>>()
    );
    assert_eq!(page["more"], false);
    assert_eq!(page["last_seq"], 30);

    // A limit above 1,000 is lowered silently, not refused.
    let page = bob.sync_page("team", 0, 5000).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 30);
    assert_eq!(page["more"], false);
    // Without a limit the default (100) applies, which covers all 30.
    let page = bob.request(json!({"type": "sync", "group": "team"})).await;
    assert_eq!(
        seqs(page["messages"].as_array().unwrap()),
        (1..=30).collect::<Vec<_>>()
    );
    bob.assert_no_error();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_of_any_json_type_are_echoed() {
    let server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    for id in [json!(7), json!("seven"), json!(1.5)] {
        let reply = alice
            .request(json!({"type": "ping", "id": id.clone()}))
            .await;
        assert_eq!(reply["type"], "pong");
        assert_eq!(reply["id"], id);
    }
    let sent = alice
        .request(
            json!({"type": "send", "id": "s-1", "group": "team", "client_id": "x", "body": "hi"}),
        )
        .await;
    assert_eq!(sent["type"], "sent");
    // A reply to a frame without an id carries no id (or null).
    alice.send_json(json!({"type": "ping"})).await;
    let pong = alice.recv_type("pong").await;
    assert!(
        pong.get("id").is_none() || pong["id"] == Value::Null,
        "{pong}"
    );
}
