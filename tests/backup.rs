//! Online backup and the consistency check (README, *Backups*; docs/PROTOCOL.md §2):
//! `POST /api/backup` / `rollcall backup` while clients keep sending, the snapshot opened by
//! `rollcall check` and by `rollcall serve --data <snapshot>`; `rollcall check` on a data
//! directory corrupted on purpose in each way it detects.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{raw_store, token, Client, Server, ADMIN_TOKEN, TIMEOUT};
use serde_json::{json, Value};

/// Runs the `rollcall` binary with these arguments.
fn rollcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .output()
        .expect("running rollcall")
}

/// `rollcall check --data <dir>`: its exit code and its standard output.
fn check(dir: &Path) -> (i32, String) {
    let out = rollcall(&["check", "--data", &dir.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "rollcall check {}:\n{stdout}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// Every message of a group through the admin API, in pages.
fn history(server: &Server, group: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = server.admin_expect(
            "GET",
            &format!("/api/groups/{group}/messages?after={after}&limit=1000"),
            None,
            200,
        );
        let messages = page["messages"].as_array().expect("messages").clone();
        if let Some(last) = messages.last() {
            after = last["seq"].as_u64().expect("seq");
        }
        all.extend(messages);
        if page["more"] != true {
            return all;
        }
    }
}

/// One `sent` a client saw: the message is acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    group: String,
    seq: u64,
    client_id: String,
}

/// How many sends a storm client pipelines per group before it waits for their `sent`.
const WINDOW: u64 = 4;

/// A client that sends to its groups until `stop`, recording every `sent`, and reads up to its
/// own newest message after each window (so cursors move during the backup too).
async fn storm(
    ws_url: String,
    user: String,
    groups: Vec<String>,
    ledger: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
) {
    let mut client = Client::connect(&ws_url, &token(&user)).await;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for group in &groups {
            for _ in 0..WINDOW {
                n += 1;
                client
                    .send_json(json!({"type": "send", "group": group,
                        "client_id": format!("{user}-{n}"), "body": format!("storm {n} from {user}")}))
                    .await;
            }
            let mut newest = 0;
            for _ in 0..WINDOW {
                let sent = client.recv_type("sent").await;
                let acked = Acked {
                    group: sent["group"].as_str().expect("group").to_string(),
                    seq: sent["seq"].as_u64().expect("seq"),
                    client_id: sent["client_id"].as_str().expect("client_id").to_string(),
                };
                newest = newest.max(acked.seq);
                ledger.lock().expect("ledger").push(acked);
            }
            client
                .send_json(json!({"type": "read", "group": group, "seq": newest}))
                .await;
            while client.take_pending().is_some() {}
        }
    }
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_a_storm_of_sends_holds_every_acknowledged_message() {
    if common::sled_only("the online backup copies a sled data directory (PostgreSQL is backed up with its own tools)") {
        return;
    }
    let mut server = Server::start_with(&["--receipt-interval-ms", "20"]);
    let users = ["u0", "u1", "u2", "u3"];
    for g in ["g0", "g1", "g2"] {
        server.create_group(g, &users);
    }
    // Groups nobody touches during the storm: after the restart below their actors are not
    // running, and the backup starts them.
    for i in 0..5 {
        let group = format!("idle{i}");
        server.create_group(&group, &["u2", "u3"]);
        for n in 0..20 {
            server.post(&group, "u2", &format!("old {n}"));
        }
    }
    let mut u0 = server.connect("u0").await;
    let direct = u0.request(json!({"type": "direct", "with": "u1"})).await;
    let dm = direct["group"]
        .as_str()
        .expect("a direct group")
        .to_string();
    u0.close().await;
    server.restart();

    let ledger = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let plan = [
        ("u0", vec!["g0", "g1", dm.as_str()]),
        ("u1", vec!["g0", "g2", dm.as_str()]),
        ("u2", vec!["g1", "g2"]),
        ("u3", vec!["g0", "g1", "g2"]),
    ];
    let clients: Vec<_> = plan
        .iter()
        .map(|(user, groups)| {
            tokio::spawn(storm(
                server.ws_url(),
                user.to_string(),
                groups.iter().map(|g| g.to_string()).collect(),
                Arc::clone(&ledger),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let started = Instant::now();
    while ledger.lock().expect("ledger").len() < 300 {
        assert!(started.elapsed() < TIMEOUT, "the storm is too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything acknowledged before the request must be in the snapshot.
    let acked_before: Vec<Acked> = ledger.lock().expect("ledger").clone();
    let url = server.url("");
    let out = tokio::task::spawn_blocking(move || {
        rollcall(&["backup", "--url", &url, "--admin-token", ADMIN_TOKEN])
    })
    .await
    .expect("the backup command");
    let during = ledger.lock().expect("ledger").len() - acked_before.len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("a storm client");
    }
    assert!(
        out.status.success(),
        "rollcall backup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value =
        serde_json::from_slice(&out.stdout).expect("the backup prints its JSON answer");
    eprintln!(
        "backup answer {answer}; {} sends acknowledged before it, {during} while it ran",
        acked_before.len()
    );
    let path = PathBuf::from(answer["path"].as_str().expect("path"));
    assert!(path.is_absolute(), "{answer}");
    assert!(
        path.starts_with(
            server
                .data_dir()
                .canonicalize()
                .expect("data dir")
                .join("backups")
        ),
        "{answer}"
    );
    assert_eq!(answer["groups"], 3 + 5 + 1, "{answer}");
    let n_acked = u64::try_from(acked_before.len()).expect("count");
    assert!(
        answer["messages"].as_u64().expect("messages") >= n_acked + 100,
        "{answer}"
    );
    assert!(answer["bytes"].as_u64().expect("bytes") > 0, "{answer}");
    let pause = answer["longest_pause_ms"]
        .as_f64()
        .expect("longest_pause_ms");
    assert!(
        pause > 0.0,
        "some group's writes waited for its copy: {answer}"
    );
    let log = server.log();
    let pause = log
        .lines()
        .find(|l| l.contains("longest pause"))
        .expect("the backup's log line");
    eprintln!("{pause}");

    let (code, report) = check(&path);
    assert_eq!(code, 0, "rollcall check of the snapshot: {report}");
    assert!(report.contains("0 violations, 0 warnings"), "{report}");

    // The snapshot is a data directory: a server opens it.
    let restored = Server::options().data_path(&path).start();
    let mut groups: Vec<String> = ["g0", "g1", "g2", dm.as_str()]
        .iter()
        .map(|g| g.to_string())
        .collect();
    groups.extend((0..5).map(|i| format!("idle{i}")));
    let mut in_snapshot = HashMap::new();
    for group in &groups {
        let messages = history(&restored, group);
        let seqs: Vec<u64> = messages
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect();
        let gapless: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, gapless, "{group}: seqs in the snapshot");
        // The live group goes on from the snapshot: same seqs, same sends.
        let live = history(&server, group);
        for (copied, live) in messages.iter().zip(&live) {
            assert_eq!(
                copied["client_id"], live["client_id"],
                "{group}: seq {}",
                copied["seq"]
            );
        }
        assert!(live.len() >= messages.len(), "{group}");
        if group.starts_with("idle") {
            assert_eq!(messages.len(), 20, "{group}");
        }
        for m in messages {
            let key = (group.clone(), m["seq"].as_u64().expect("seq"));
            in_snapshot.insert(key, m["client_id"].as_str().expect("client_id").to_string());
        }
    }
    for acked in &acked_before {
        assert_eq!(
            in_snapshot.get(&(acked.group.clone(), acked.seq)),
            Some(&acked.client_id),
            "{acked:?}, acknowledged before the backup, is not in the snapshot"
        );
    }
    // Its members' cursors came along, and keep working: a member connects and sees them.
    let u3 = Client::connect(&restored.ws_url(), &token("u3")).await;
    let g0 = u3.welcome_group("g0").expect("g0 in welcome");
    assert!(g0["read"].as_u64().expect("read") > 0, "{g0}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_each_violation_it_finds() {
    if common::sled_only("it corrupts the stopped server's sled database") {
        return;
    }
    let mut server = Server::start();
    server.create_group("eng", &["alice", "bob"]);
    server.create_group("ops", &["alice", "bob"]);
    server.ensure_users(&["carol"]);
    for n in 1..=5 {
        server.post("eng", "alice", &format!("m{n}"));
    }
    let mut alice = server.connect("alice").await;
    let direct = alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    let dm = direct["group"]
        .as_str()
        .expect("a direct group")
        .to_string();
    alice.close().await;
    server.signal("TERM");
    assert!(
        server.wait_exit(TIMEOUT).is_some(),
        "the server did not stop"
    );
    let data = server.data_dir().to_path_buf();
    let (code, report) = check(&data);
    assert_eq!(code, 0, "a clean data directory: {report}");

    {
        let db = raw_store::open(&data);
        let eng = raw_store::group_tree(&db, "eng");
        eng.remove(raw_store::message_key(3)).expect("write");
        eng.insert(
            raw_store::member_key("bob"),
            raw_store::member_value(0, 2, 4),
        )
        .expect("write");
        // The per-sender index: alice's 2 out of it, an entry for a message bob never sent
        // (with the value builds before client ids in entries wrote), and alice's 4 with
        // another client id than its message's.
        eng.remove(raw_store::sent_key("alice", 2)).expect("write");
        eng.insert(raw_store::sent_key("bob", 1), &[1u8])
            .expect("write");
        eng.insert(
            raw_store::sent_key("alice", 4),
            raw_store::sent_value("wrong", 0),
        )
        .expect("write");
        let ops = raw_store::group_tree(&db, "ops");
        // Not in the index either: two violations.
        ops.insert(
            raw_store::member_key("carol"),
            raw_store::member_value(0, 99, 0),
        )
        .expect("write");
        raw_store::group_tree(&db, &dm)
            .insert(
                raw_store::member_key("carol"),
                raw_store::member_value(0, 0, 0),
            )
            .expect("write");
        let index = db.open_tree("user_groups").expect("index");
        index
            .remove(raw_store::index_key("alice", "eng"))
            .expect("write");
        index
            .insert(raw_store::index_key("carol", "eng"), &[])
            .expect("write");
        db.remove("format").expect("write");
        db.flush().expect("flush");
    }
    let (code, report) = check(&data);
    assert_eq!(code, 1, "{report}");
    for expected in [
        "store: key format: absent",
        "group eng: key m/3: missing: message 3 is absent (first_seq 1, last_seq 5",
        "group eng: key u/bob: read 4 is above delivered 2",
        "group eng: key b/alice/2: missing: live message 2 from alice has no sender index entry",
        "group eng: key b/bob/1: stale: there is no live message 1 from bob",
        "group eng: key b/alice/4: the entry holds client_id \"wrong\" and ts 0, its message",
        // The message taken out above leaves its index entry behind.
        "group eng: key b/alice/3: stale: there is no live message 3 from alice",
        "group ops: key u/carol: delivered 99 is above last_seq 0",
        "group ops: key user_groups/carol/ops: missing: carol is a member",
        "group eng: key user_groups/alice/eng: missing: alice is a member",
        &format!(
            "group {dm}: key u: a direct conversation has 3 members (alice, bob, carol), not 2"
        ),
        "warning: group eng: key user_groups/carol/eng: stale: carol is not a member of eng",
    ] {
        assert!(
            report.lines().any(|line| line.starts_with(expected)),
            "no line {expected:?} in:\n{report}"
        );
    }
    // carol's membership of the direct conversation is not indexed either.
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&format!("group {dm}: key user_groups/carol/{dm}: missing"))),
        "{report}"
    );
    assert!(report.contains("12 violations, 1 warnings"), "{report}");
    assert!(
        report.contains("per-sender index: checked in 3 groups"),
        "{report}"
    );

    // A newer format: nothing else can be read.
    {
        let db = raw_store::open(&data);
        db.insert("format", &2u32.to_be_bytes()).expect("write");
        db.flush().expect("flush");
    }
    let (code, report) = check(&data);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.starts_with("store: key format: storage format 2 was written by a newer Rollcall"),
        "{report}"
    );
    // No database at all: 2, and nothing is created.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = rollcall(&["check", "--data", &empty.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!empty.path().join("db").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_carries_the_generated_secrets_and_goes_to_backup_dir() {
    if common::sled_only("the online backup copies a sled data directory (PostgreSQL is backed up with its own tools)") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let backups = tempfile::tempdir().expect("tempdir");
    let server = Server::options()
        .generated_secrets()
        .args(&["--backup-dir", &backups.path().display().to_string()])
        .start();
    let admin = std::fs::read_to_string(server.data_dir().join("admin-token"))
        .expect("the generated admin token")
        .trim()
        .to_string();
    let (status, created) = server.http(
        "POST",
        "/api/users",
        Some(&admin),
        Some(json!({"id": "alice"})),
    );
    assert_eq!(status, 201, "{created}");
    let alice_token = created["token"].as_str().expect("token").to_string();

    let (status, body) = server.http("POST", "/api/backup", None, None);
    assert_eq!(
        (status, common::http_error_code(&body)),
        (401, "unauthorized".into())
    );
    let (status, body) = server.http(
        "POST",
        "/api/backup",
        Some(&admin),
        Some(json!({"full": true})),
    );
    assert_eq!(
        (status, common::http_error_code(&body)),
        (400, "bad_request".into())
    );
    let (status, answer) = server.http("POST", "/api/backup", Some(&admin), Some(json!({})));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["groups"].as_u64(), answer["messages"].as_u64()),
        (Some(0), Some(0))
    );
    let path = PathBuf::from(answer["path"].as_str().expect("path"));
    assert_eq!(
        path.parent(),
        Some(backups.path().canonicalize().expect("dir").as_path())
    );
    let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
    assert!(
        name.len() == 16 && name.ends_with('Z') && name.as_bytes()[8] == b'T',
        "{name}"
    );
    for file in ["admin-token", "jwt-secret"] {
        let mode = std::fs::metadata(path.join(file))
            .expect(file)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // Another backup in the same second gets a name of its own.
    let (status, second) = server.http("POST", "/api/backup", Some(&admin), None);
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["path"], answer["path"]);

    // Restored with no secrets in the environment: the copied ones are in use.
    let restored = Server::options()
        .generated_secrets()
        .data_path(&path)
        .start();
    let (status, alice) = restored.http("GET", "/api/users/alice", Some(&admin), None);
    assert_eq!(status, 200, "{alice}");
    let client = Client::connect(&restored.ws_url(), &alice_token).await;
    assert_eq!(client.welcome["user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_pruned_group_starts_at_its_first_seq() {
    if common::sled_only("the online backup copies a sled data directory (PostgreSQL is backed up with its own tools)") {
        return;
    }
    let server = Server::start_with(&["--retention-secs", "2", "--prune-interval-secs", "1"]);
    server.create_group("team", &["alice", "bob"]);
    for n in 1..=5 {
        server.post("team", "alice", &format!("old {n}"));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.post("team", "alice", "new 1");
    server.post("team", "alice", "new 2");
    let started = Instant::now();
    while server.group("team")["first_seq"] != 6 {
        assert!(started.elapsed() < TIMEOUT, "{}", server.group("team"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = server.admin_expect("POST", "/api/backup", None, 200);
    let path = PathBuf::from(answer["path"].as_str().expect("path"));
    let (code, report) = check(&path);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 violations, 0 warnings"), "{report}");

    // Restored without a retention: the history starts where the snapshot's did.
    let restored = Server::options().data_path(&path).start();
    let group = restored.group("team");
    assert_eq!(group["last_seq"], 7, "{group}");
    let first = group["first_seq"].as_u64().expect("first_seq");
    assert!((6..=7).contains(&first), "{group}");
    let seqs: Vec<u64> = history(&restored, "team")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (first..=7).collect::<Vec<_>>());
}
