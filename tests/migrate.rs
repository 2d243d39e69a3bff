//! `rollcall migrate --from-data DIR --to postgres://…`: a stopped sled server's data copied
//! into an empty PostgreSQL database, on which a node then serves the same users, groups,
//! messages, cursors and passwords (README, *PostgreSQL*). Always on PostgreSQL (the test
//! process's throwaway cluster), whatever `ROLLCALL_TEST_STORE` says.

mod common;

use std::process::Command;

use common::{seq, Server};
use serde_json::json;

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["migrate", "--from-data"])
        .arg(from)
        .args(["--to", to])
        .output()
        .expect("rollcall migrate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_data_directory_moves_to_postgres_whole() {
    // On sled (explicitly: the harness would put it on PostgreSQL otherwise).
    let mut sled = Server::start_with(&["--store", "sled"]);
    sled.create_group("team", &["alice", "bob"]);
    sled.admin_expect(
        "PUT",
        "/api/users/alice",
        Some(json!({"password": "correct horse battery"})),
        200,
    );
    for i in 1..=5 {
        sled.post("team", "alice", &format!("message {i}"));
    }
    let mut bob = sled.connect("bob").await;
    bob.send_json(json!({"type": "read", "group": "team", "seq": 3}))
        .await;
    bob.barrier("team").await;
    drop(bob);
    sled.signal("TERM");
    assert!(sled.wait_exit(common::TIMEOUT).is_some(), "sled stopped");

    let cluster = common::postgres::cluster();
    let url = cluster.database();
    let out = migrate(sled.data_dir(), &url);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("copied"));
    // Into a database that holds Rollcall data: refused, nothing changed.
    let again = migrate(sled.data_dir(), &url);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds Rollcall data"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let check = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["check", "--store", &url])
        .output()
        .expect("rollcall check");
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{report}");
    assert!(report.contains("0 violations"), "{report}");

    // A node on the database (with the data directory, for its secrets) serves it all.
    let pg = Server::options()
        .data_path(sled.data_dir())
        .args(&["--store", &url, "--node-id", "a"])
        .start();
    let mut bob = pg.connect("bob").await;
    let team = bob.welcome_group("team").expect("team").clone();
    assert_eq!(team["last_seq"], 5, "{team}");
    assert_eq!(team["read"], 3, "{team}");
    let messages = bob.sync_all("team", 0).await;
    let bodies: Vec<&str> = messages.iter().filter_map(|m| m["body"].as_str()).collect();
    assert_eq!(
        bodies,
        [
            "message 1",
            "message 2",
            "message 3",
            "message 4",
            "message 5"
        ]
    );
    let next = bob.send_msg("team", "b1", "on postgres").await;
    assert_eq!(seq(&next), 6);
    let (status, login) = pg.http(
        "POST",
        "/api/login",
        None,
        Some(json!({"user": "alice", "password": "correct horse battery"})),
    );
    assert_eq!(status, 200, "{login}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_backup_is_refused_on_postgres_saying_what_to_use() {
    let url = common::postgres::cluster().database();
    let server = Server::options()
        .args(&["--store", &url, "--node-id", "a"])
        .start();
    let (status, body) = server.admin("POST", "/api/backup", None);
    assert_eq!(
        (status, common::http_error_code(&body).as_str()),
        (400, "bad_request"),
        "{body}"
    );
    assert!(body.to_string().contains("pg_dump"), "{body}");
}
