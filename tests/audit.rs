//! The receipt audit (`GET /api/groups/{gid}/audit`, docs/PROTOCOL.md §2): after reads it agrees
//! with the definition; cursors that break `joined_seq ≤ read ≤ delivered` on disk, or stored
//! cursors changed behind the group actor's back, are reported as mismatches.

mod common;

use std::sync::Arc;

use common::{http_error_code, raw_store, Server, TIMEOUT};
use rollcall::commit::Committer;
use rollcall::config::{Config, Durability};
use rollcall::group::{reply_channel, AdvanceCursor, AuditReceipts, Cursor, PostMessage};
use rollcall::ids::{GroupId, UserId};
use rollcall::metrics::Metrics;
use rollcall::registry::Registry;
use rollcall::store::{GroupKindRecord, MemberRecord, SledStore, Store, UserRecord};
use serde_json::{json, Value};

fn seqs_of(mismatches: &Value) -> Vec<u64> {
    mismatches
        .as_array()
        .expect("mismatches")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_agrees_after_reads_and_names_cursors_that_break_the_index() {
    if common::sled_only("it rewrites a member record in the stopped server's sled database") {
        return;
    }
    let mut server = Server::start();
    server.create_group("eng", &["alice", "bob", "carol", "dave"]);
    server.admin_expect(
        "PUT",
        "/api/users/carol",
        Some(json!({"share_reads": false})),
        200,
    );
    for n in 1..=10 {
        server.post("eng", "alice", &format!("m{n}"));
    }
    for (user, kind, seq) in [("bob", "read", 6), ("carol", "read", 8), ("dave", "ack", 3)] {
        let mut client = server.connect(user).await;
        client
            .send_json(json!({"type": kind, "group": "eng", "seq": seq}))
            .await;
        client.barrier("eng").await;
        client.close().await;
    }
    let audit = server.admin_expect("GET", "/api/groups/eng/audit", None, 200);
    assert_eq!(audit, json!({"ok": true, "checked": 10, "mismatches": []}));
    let audit = server.admin_expect("GET", "/api/groups/eng/audit?limit=3", None, 200);
    assert_eq!(audit["checked"], 3, "{audit}");
    for (path, status, code) in [
        ("/api/groups/eng/audit?limit=x", 400, "bad_request"),
        ("/api/groups/eng/audit?seq=1", 400, "bad_request"),
        ("/api/groups/nope/audit", 404, "no_such_group"),
    ] {
        let (got, body) = server.admin("GET", path, None);
        assert_eq!(
            (got, http_error_code(&body).as_str()),
            (status, code),
            "{path}"
        );
    }
    let (status, _) = server.http("GET", "/api/groups/eng/audit", None, None);
    assert_eq!(status, 401);

    // dave's record, rewritten while the server is stopped: joined at 9, nothing received. The
    // index's arithmetic relies on joined_seq ≤ read ≤ delivered; the definition does not.
    server.signal("TERM");
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "the server did not stop"
    );
    {
        let db = raw_store::open(server.data_dir());
        raw_store::group_tree(&db, "eng")
            .insert(
                raw_store::member_key("dave"),
                raw_store::member_value(9, 0, 0),
            )
            .expect("write");
        db.flush().expect("flush");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["check", "--data", &server.data_dir().display().to_string()])
        .output()
        .expect("rollcall check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("group eng: key u/dave: joined_seq 9 is above read 0"),
        "{report}"
    );
    server.restart();
    let audit = server.admin_expect("GET", "/api/groups/eng/audit", None, 200);
    assert_eq!(audit["ok"], false, "{audit}");
    assert_eq!(audit["checked"], 10, "{audit}");
    // Up to 6 bob and carol received it (bob read it; carol's reads are private); up to 8 carol.
    assert_eq!(
        seqs_of(&audit["mismatches"]),
        (1..=8).collect::<Vec<_>>(),
        "{audit}"
    );
    assert_eq!(
        audit["mismatches"][0],
        json!({"seq": 1, "expected": {"recipients": 2, "delivered": 2, "read": 1},
               "actual": {"recipients": 2, "delivered": 1, "read": 0}})
    );
}

/// In-process, so the test can write the store while the group's actor runs: a stored cursor
/// changed behind the actor's back no longer matches its receipt index.
#[test]
fn stored_cursors_changed_behind_the_actors_back_are_a_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&dir.path().join("db"), 8 << 20, Durability::Process).expect("store"),
    );
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    for user in [&alice, &bob] {
        let record = UserRecord {
            name: user.to_string(),
            created_ms: 1,
        };
        store.create_user(user, &record).expect("user");
    }
    let eng = GroupId::parse("eng").unwrap();
    actix::System::new().block_on(async {
        let metrics = Arc::new(Metrics::default());
        let committer = Committer::start(Arc::clone(&store), Arc::clone(&metrics));
        let registry = Registry::new(
            Arc::clone(&store),
            committer,
            Arc::new(Config::new(dir.path())),
            metrics,
            Vec::new(),
        );
        let members = [alice.clone(), bob.clone()];
        let addr = registry
            .create_group(&eng, "eng", GroupKindRecord::Group, &members)
            .await
            .expect("create")
            .expect("a new group");
        for n in 0..5 {
            let (reply, answer) = reply_channel();
            addr.send(PostMessage {
                from: alice.clone(),
                client_id: format!("c{n}"),
                body: "hi".into(),
                remind_after: None,
                reply_to: None,
                reply,
            })
            .await
            .expect("send");
            answer.wait().await.expect("sent");
        }
        addr.send(AdvanceCursor {
            user: bob.clone(),
            cursor: Cursor::Read,
            seq: 3,
            session_id: None,
        })
        .await
        .expect("send")
        .expect("read");
        let audit = addr
            .send(AuditReceipts { limit: 100 })
            .await
            .expect("send")
            .expect("audit");
        assert_eq!((audit.checked, audit.mismatches.len()), (5, 0), "{audit:?}");

        // bob's stored read mark jumps to 5; the actor's index still says 3.
        let moved = MemberRecord {
            joined_seq: 0,
            delivered: 5,
            read: 5,
        };
        store.put_cursors(&eng, &bob, &moved).expect("write");
        let audit = addr
            .send(AuditReceipts { limit: 100 })
            .await
            .expect("send")
            .expect("audit");
        let seqs: Vec<u64> = audit.mismatches.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [4, 5], "{audit:?}");
        let m = audit.mismatches[0];
        assert_eq!((m.expected.delivered, m.expected.read), (1, 1));
        assert_eq!((m.actual.delivered, m.actual.read), (0, 0));
    });
}
