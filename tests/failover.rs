//! Failover on PostgreSQL: an active node A and a standby B on one database, clients sending
//! through A with both URLs. A is paused (`SIGSTOP`) past its lease, or killed mid-batch; B
//! takes over and the clients move to it; A, continued, finds itself fenced and waits as a
//! standby. Then the whole history is checked: every acknowledged send is there exactly once,
//! at the seq it was acknowledged with; no seq twice; gapless; cursors never went back.
//!
//! These tests start their own nodes with `--store` on the test process's throwaway cluster
//! (`common::postgres`), whatever `ROLLCALL_TEST_STORE` says.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rust_client::config;
use common::{Server, TIMEOUT};
use rollcall::client::{Client, ClientConfig, ClientError};
use rollcall::protocol::ErrorCode;

const LEASE_MS: &str = "1000";

/// A node on `url` with id `node`.
fn node(url: &str, node: &str) -> Server {
    Server::options()
        .args(&[
            "--store",
            url,
            "--node-id",
            node,
            "--lease-ms",
            LEASE_MS,
            "--receipt-interval-ms",
            "100",
        ])
        .start()
}

/// The role `/healthz` reports; empty while the node answers nothing (a node switching
/// between active and standby drops its connections for a moment).
fn role(server: &Server) -> String {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    match agent.get(&server.url("/healthz")).call() {
        Ok(response) => response
            .into_json::<serde_json::Value>()
            .ok()
            .and_then(|body| body["role"].as_str().map(str::to_string))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn wait_for_role(server: &Server, wanted: &str) {
    let started = Instant::now();
    while role(server) != wanted {
        assert!(
            started.elapsed() < TIMEOUT,
            "node never became {wanted}; log:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client of `user` that knows both nodes, and gives up on a silent one quickly.
fn client_config(a: &Server, b: &Server, user: &str) -> ClientConfig {
    let mut config = config(a, user).with_fallback_urls([b.ws_url()]);
    config.idle_timeout = Duration::from_millis(1500);
    config.connect_timeout = Duration::from_secs(1);
    config
}

/// What the senders saw: body → (seq, the node's URL that answered, when).
type Acked = Arc<Mutex<BTreeMap<String, (u64, String, Instant)>>>;

/// Sends messages as `user` until `enough` is set, each with its own client id, retrying one
/// the server could not answer for sure (`storage`, `internal`) with the same client id.
async fn sender(client: Arc<Client>, user: &'static str, enough: Arc<AtomicBool>, acked: Acked) {
    for i in 0.. {
        if enough.load(Ordering::SeqCst) {
            return;
        }
        let body = format!("{user}-{i}");
        loop {
            match tokio::time::timeout(TIMEOUT, client.send_with_client_id("team", &body, &body))
                .await
                .unwrap_or_else(|_| panic!("{body}: no answer within {TIMEOUT:?}"))
            {
                Ok(sent) => {
                    let url = client.url();
                    acked
                        .lock()
                        .expect("acked")
                        .insert(body.clone(), (sent.seq, url, Instant::now()));
                    break;
                }
                Err(ClientError::Server {
                    code: ErrorCode::Storage | ErrorCode::Internal,
                    ..
                }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{body}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks the whole history of `team` on `server` against what was acknowledged.
async fn check_history(server: &Server, acked: &Acked) {
    let mut reader = server.connect("carol").await;
    let messages = reader.sync_all("team", 0).await;
    let acked = acked.lock().expect("acked").clone();
    let mut by_body: HashMap<String, Vec<u64>> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let seq = message["seq"].as_u64().expect("seq");
        assert_eq!(seq, i as u64 + 1, "gapless and each seq once: {messages:?}");
        let body = message["body"].as_str().expect("body").to_string();
        by_body.entry(body).or_default().push(seq);
    }
    for (body, (seq, _, _)) in &acked {
        assert_eq!(
            by_body.get(body),
            Some(&vec![*seq]),
            "{body} acknowledged at seq {seq} must be stored once, there"
        );
    }
    assert_eq!(
        messages.len(),
        acked.len(),
        "nothing stored that no one sent"
    );
}

/// The failover time: the last `sent` from `a` to the first from `b`.
fn failover_ms(acked: &Acked, a: &str, b: &str) -> u128 {
    let acked = acked.lock().expect("acked");
    let last_a = acked
        .values()
        .filter(|(_, url, _)| url == a)
        .map(|(_, _, at)| *at)
        .max()
        .expect("sends answered by A");
    let first_b = acked
        .values()
        .filter(|(_, url, _)| url == b)
        .map(|(_, _, at)| *at)
        .min()
        .expect("sends answered by B");
    first_b.saturating_duration_since(last_a).as_millis()
}

/// The cursors of `user` in `team` as the node's `welcome` has them.
async fn cursors(server: &Server, user: &str) -> (u64, u64) {
    let client = server.connect(user).await;
    let group = client
        .welcome_group("team")
        .expect("team in welcome")
        .clone();
    let get = |key: &str| group[key].as_u64().unwrap_or(0);
    (get("delivered"), get("read"))
}

/// Waits until `n` sends of `acked` were answered by the node at `url`.
async fn until_answered_by(acked: &Acked, url: &str, n: usize) {
    let started = Instant::now();
    loop {
        let count = acked
            .lock()
            .expect("acked")
            .values()
            .filter(|(_, u, _)| u == url)
            .count();
        if count >= n {
            return;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "only {count} sends answered by {url}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn failover(kill: bool) {
    let url = common::postgres::cluster().database();
    let mut a = node(&url, "A");
    wait_for_role(&a, "active");
    a.create_group("team", &["alice", "bob", "carol"]);
    let b = node(&url, "B");
    wait_for_role(&b, "standby");
    // The standby takes no sessions: 503 with a Retry-After.
    let refused = b.http_response("GET", "/ws", &[], None);
    assert_eq!(refused.status(), 503);
    assert!(refused.header("Retry-After").is_some());

    let acked: Acked = Arc::default();
    let enough = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for user in ["alice", "bob"] {
        let client = Client::connect(client_config(&a, &b, user))
            .await
            .expect("connecting to A");
        assert_eq!(client.url(), a.ws_url());
        senders.push(tokio::spawn(sender(
            Arc::new(client),
            user,
            Arc::clone(&enough),
            Arc::clone(&acked),
        )));
    }
    // carol reads as far as she got, on A.
    until_answered_by(&acked, &a.ws_url(), 20).await;
    let mut carol = a.connect("carol").await;
    let seen = carol.sync_all("team", 0).await;
    let upto = seen
        .last()
        .and_then(|m| m["seq"].as_u64())
        .expect("a message");
    carol
        .send_json(serde_json::json!({"type": "read", "group": "team", "seq": upto}))
        .await;
    carol.barrier("team").await;
    let before = cursors(&a, "carol").await;
    assert_eq!(before.1, upto);
    // Cursor moves are committed with the next receipt tick (100 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;

    if kill {
        tokio::task::block_in_place(|| a.kill9());
    } else {
        a.signal("STOP");
    }
    wait_for_role(&b, "active");
    until_answered_by(&acked, &b.ws_url(), 10).await;
    if !kill {
        a.signal("CONT");
        // A finds itself fenced (its lease, or its first commit) and waits as a standby.
        wait_for_role(&a, "standby");
        assert!(a.log().contains("fenced"), "{}", a.log_tail());
    }
    until_answered_by(&acked, &b.ws_url(), 40).await;
    enough.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.expect("a sender panicked");
    }
    eprintln!(
        "failover ({}): last sent from A -> first sent from B: {} ms",
        if kill { "SIGKILL" } else { "SIGSTOP" },
        failover_ms(&acked, &a.ws_url(), &b.ws_url())
    );
    check_history(&b, &acked).await;
    // And the whole database, offline of the nodes' memory: `rollcall check --store`.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["check", "--store", &url])
        .output()
        .expect("rollcall check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{report}");
    let after = cursors(&b, "carol").await;
    assert!(
        after.0 >= before.0 && after.1 >= before.1,
        "cursors went back: {before:?} -> {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_is_replaced_by_the_standby_and_fenced_when_it_comes_back() {
    failover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_killed_mid_batch_is_replaced_by_the_standby() {
    failover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_claim_of_a_group_fences_the_active_node() {
    // Another owner's claim of one group, written straight into the database (as a node that
    // took the group over would): A's next commit of that group is refused, nothing of it is
    // stored, A's sessions are closed with 1012 and A starts over from the database. Its lease
    // is still its own, so it takes it back (a new term, every group claimed again) and serves.
    let url = common::postgres::cluster().database();
    let db = common::postgres::Cluster::name_of(&url).to_string();
    let a = node(&url, "A");
    wait_for_role(&a, "active");
    a.create_group("team", &["alice", "bob"]);
    let mut alice = a.connect("alice").await;
    let first = alice.send_msg("team", "c1", "before").await;
    assert_eq!(first["seq"], 1, "{first}");
    common::postgres::cluster().psql(
        &db,
        "UPDATE group_owners SET epoch = epoch + 1, node_id = 'X' WHERE group_id = 'team'",
    );
    alice
        .send_json(serde_json::json!({"type": "send", "id": 7, "group": "team",
                                       "client_id": "c2", "body": "after"}))
        .await;
    let end = alice.expect_closed().await;
    assert!(
        matches!(end, common::WireEnd::Closed(Some(1012))),
        "closed with 1012: {end:?}"
    );
    assert!(a.log().contains("fenced"), "{}", a.log_tail());
    let messages = common::postgres::cluster().psql(
        &db,
        "SELECT count(*) FROM kv WHERE tree = 'group:team' AND get_byte(key, 0) = ascii('m')",
    );
    assert_eq!(messages, "1", "nothing of the fenced commit is stored");
    // Back as the lease's holder: the resend is stored, at the next seq.
    let started = Instant::now();
    let mut alice = loop {
        if let Ok(client) =
            common::Client::try_connect(&a.ws_url(), Some(&common::token("alice"))).await
        {
            break client;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "A never served again:\n{}",
            a.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let again = alice.send_msg("team", "c2", "after").await;
    assert_eq!(again["seq"], 2, "{again}");
    let owner = common::postgres::cluster().psql(
        &db,
        "SELECT node_id FROM group_owners WHERE group_id = 'team'",
    );
    assert_eq!(owner, "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_is_refused_naming_both_versions() {
    let url = common::postgres::cluster().database();
    let db = common::postgres::Cluster::name_of(&url).to_string();
    let mut a = node(&url, "A");
    a.kill9();
    common::postgres::cluster().psql(&db, "INSERT INTO rollcall_schema VALUES (99)");
    let why = a.try_restart().expect_err("a newer schema must be refused");
    assert!(why.contains("exited"), "{why}");
    let log = a.log_tail();
    assert!(
        log.contains("schema version 99")
            && log.contains(&format!("up to {}", rollcall::store::SCHEMA_VERSION)),
        "{log}"
    );
}
