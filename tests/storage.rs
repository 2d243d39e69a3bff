//! Storage faults: a full disk refuses writes with `storage` (nothing half-stored, nothing
//! acknowledged lost) and recovers by itself when space returns; a flush that fails for good
//! answers `storage` and stops the server, which restarts on everything it acknowledged; a data
//! directory from a newer format version is refused with a clear message; a data directory moved
//! away under the running server refuses writes until it is back.
//!
//! The full-disk test mounts a small tmpfs, which needs root (CAP_SYS_ADMIN); CI runs as root.
//! Without that it FAILS with a message saying so: a storage test that silently skips proves
//! nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{seq, Server};
use serde_json::json;

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB; panics where that is not possible (not root).
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status();
        let needs_root = "this test mounts a small tmpfs, which needs root (CAP_SYS_ADMIN); run \
                          the tests as root, as CI does, or in a container with CAP_SYS_ADMIN";
        match status {
            Ok(status) if status.success() => SmallDisk {
                path: dir.path().to_path_buf(),
                _dir: dir,
            },
            Ok(status) => panic!("`mount -t tmpfs` failed ({status}): {needs_root}"),
            Err(e) => panic!("running `mount` failed ({e}): {needs_root}"),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes a file that leaves about `leave` bytes free on the file system of `dir`.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let free = fs2::available_space(dir).expect("free space");
    let filler = dir.join("filler");
    let size = free.saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; size as usize]).expect("writing the filler");
    filler
}

/// Sends `frame` again every 50 ms while it is refused with `storage`, for up to 10 s; the
/// `sent` that ends it (or the last refusal).
async fn resend_until_sent(
    client: &mut common::ws::Client,
    frame: &serde_json::Value,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.request(frame.clone()).await;
        if reply["type"] == "sent" || Instant::now() >= deadline {
            return reply;
        }
        assert_eq!(reply["code"], "storage", "{reply}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers_when_space_returns() {
    if common::sled_only("the free space of the data directory's disk (sled's)") {
        return;
    }
    let disk = SmallDisk::mount(64);
    let data = tempfile::TempDir::new_in(&disk.path).expect("data dir on the small disk");
    let mut server = Server::start_in(data, &["--min-free-mb", "16"]);
    server.create_group("team", &["alice", "bob"]);
    server.ensure_users(&["dave"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    for n in 1..=3 {
        alice.send_msg("team", &format!("a{n}"), "before").await;
    }

    let filler = fill(&disk.path, 8 << 20);
    // Once the monitor has looked (probing with throwaway users until one is refused) every
    // write is refused with `storage`, and nothing is stored.
    let mut probe = 0;
    wait_until("the disk guard refuses writes", || {
        probe += 1;
        let user = json!({"id": format!("probe{probe}")});
        let (status, body) = server.admin("POST", "/api/users", Some(user));
        assert!(status == 201 || status == 503, "{status} {body}");
        status == 503 && common::http_error_code(&body) == "storage"
    });
    let refused =
        json!({"type": "send", "id": "s", "group": "team", "client_id": "a4", "body": "full"});
    let err = alice.request(refused.clone()).await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "storage", "{err}");
    assert_eq!(err["id"], "s");
    let (status, body) = server.admin(
        "POST",
        "/api/groups/team/messages",
        Some(json!({"from": "bob", "body": "full"})),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(common::http_error_code(&body), "storage");
    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "carol"})));
    assert_eq!(status, 503, "{body}");
    // Opening a new conversation writes a group and its members: `storage` too.
    let err = alice
        .request(json!({"type": "direct", "id": "d", "with": "dave"}))
        .await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("storage")),
        "{err}"
    );
    // Reads keep working, and the session is usable.
    assert_eq!(alice.sync_all("team", 0).await.len(), 3);
    alice.ping().await;
    bob.ping().await;

    // Space returns: writes resume by themselves, with no hole in the seqs.
    std::fs::remove_file(&filler).expect("removing the filler");
    let sent = resend_until_sent(&mut alice, &refused).await;
    assert_eq!(seq(&sent), 4, "{sent}");
    assert_eq!(
        sent["duplicate"], false,
        "the refused send was never stored"
    );
    assert_eq!(bob.recv_msgs("team", 4).await.len(), 4);

    // And everything acknowledged survives a crash.
    server.restart();
    let mut alice = server.connect("alice").await;
    let all = alice.sync_all("team", 0).await;
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_moved_away_refuses_writes_until_it_is_back() {
    if common::sled_only("sled's data directory on the local file system") {
        return;
    }
    let mut server = Server::start();
    server.create_group("team", &["alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.send_msg("team", "a1", "before").await;

    // Moved away, the directory's files keep working for the open server, but whatever it
    // acknowledged now would be gone at the next start: every write is refused with `storage`.
    let data = server.data_dir().to_path_buf();
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).expect("moving the data directory away");
    let mut refused = json!(null);
    let mut err = json!(null);
    let mut stored = 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 2.. {
        assert!(Instant::now() < deadline, "no write was refused: {err}");
        let client_id = format!("a{n}");
        refused = json!({"type": "send", "id": "s", "group": "team", "client_id": client_id,
                         "body": "gone"});
        err = alice.request(refused.clone()).await;
        if err["type"] == "error" {
            break;
        }
        // Sent before the monitor looked: stored in the moved directory, which comes back.
        assert_eq!(err["type"], "sent", "{err}");
        stored += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(err["code"], "storage", "{err}");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be read")),
        "{err}"
    );
    let (status, body) = server.admin("POST", "/api/users", Some(json!({"id": "carol"})));
    assert_eq!(status, 503, "{body}");
    assert_eq!(common::http_error_code(&body), "storage");
    // Reads keep working; one line in the log however long it lasts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alice.sync_all("team", 0).await.len(), stored);
    alice.ping().await;
    let log = server.log_tail();
    assert_eq!(
        log.matches("refusing writes until it can be read").count(),
        1,
        "{log}"
    );

    // A new, empty directory at the same path is not where the server's files are: still
    // refused, and still one line.
    std::fs::create_dir_all(data.join("db")).expect("an empty data directory in its place");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = alice.request(refused.clone()).await;
    assert_eq!(err["code"], "storage", "{err}");
    let log = server.log_tail();
    assert_eq!(
        log.matches("refusing writes until it can be read").count(),
        1,
        "{log}"
    );
    std::fs::remove_dir_all(&data).expect("removing the empty one");

    // Back: writes resume by themselves, and the refused send is stored once.
    std::fs::rename(&moved, &data).expect("moving the data directory back");
    let sent = resend_until_sent(&mut alice, &refused).await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert!(server
        .log_tail()
        .contains("can be read again: accepting writes"));
    assert_eq!(
        sent["duplicate"], false,
        "the refused send was never stored"
    );
    let last = seq(&sent);
    let pushed = bob.recv_msgs("team", usize::try_from(last).unwrap()).await;
    assert_eq!(
        pushed.iter().map(seq).collect::<Vec<u64>>(),
        (1..=last).collect::<Vec<u64>>()
    );

    // Everything acknowledged survives a crash, each message once.
    server.restart();
    let mut alice = server.connect("alice").await;
    let all = alice.sync_all("team", 0).await;
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_answers_storage_and_stops_the_server_without_losing_acknowledged_messages()
{
    if common::sled_only("a file-size limit on the data directory's sled log (tests/database_restart.rs covers a failing PostgreSQL)") {
        return;
    }
    // A write past RLIMIT_FSIZE fails with EFBIG instead of killing the process when SIGXFSZ is
    // ignored; the disposition is inherited by the server this test starts.
    // SAFETY: setting a signal to SIG_IGN has no handler to race with.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut server = Server::start();
    server.create_group("team", &["alice"]);
    let mut alice = server.connect("alice").await;
    for n in 1..=5 {
        alice.send_msg("team", &format!("a{n}"), "before").await;
    }

    // Appends beyond the database file's current end fail; the log file (smaller) stays
    // writable, so the server can still say what happened.
    let pid = server.pid().expect("running") as libc::pid_t;
    let db_len = std::fs::metadata(server.data_dir().join("db").join("db"))
        .expect("sled's log file")
        .len();
    let limit = libc::rlimit {
        rlim_cur: db_len,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a child process of ours, with valid pointers.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    // Sends after the fault: none is answered `sent`; they get `storage` (or the connection
    // closes as the server stops).
    let mut failed = Vec::new();
    for n in 6..=8 {
        let client_id = format!("a{n}");
        let frame = json!({"type": "send", "id": n, "group": "team", "client_id": client_id, "body": "after"});
        alice.send_json(frame).await;
        let reply = loop {
            match alice.read_wire(Duration::from_secs(10)).await {
                Ok(frame) if frame["type"] == "msg" => {
                    assert!(
                        seq(&frame) <= 5,
                        "a message after the fault was pushed: {frame}"
                    );
                }
                Ok(frame) => break Some(frame),
                Err(_) => break None,
            }
        };
        let Some(reply) = reply else { break };
        assert_eq!(
            reply["type"], "error",
            "a send after a failed flush: {reply}"
        );
        assert_eq!(reply["code"], "storage", "{reply}");
        failed.push(client_id);
    }
    assert!(!failed.is_empty(), "no send was answered with `storage`");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server stops after a failed flush");
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(
        server.log_tail().contains("storage failed"),
        "the log says why: {}",
        server.log_tail()
    );

    // Restarted: all acknowledged messages are there, gapless; resending the refused ones with
    // their client_ids stores each exactly once.
    server.try_restart().expect("restarts on the same data");
    let mut alice = server.connect("alice").await;
    for client_id in &failed {
        alice.send_msg("team", client_id, "after").await;
    }
    let all = alice.sync_all("team", 0).await;
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "gapless");
    let ids: Vec<&str> = all.iter().filter_map(|m| m["client_id"].as_str()).collect();
    for n in 1..=5 {
        let id = format!("a{n}");
        assert_eq!(
            ids.iter().filter(|c| **c == id).count(),
            1,
            "{id} in {ids:?}"
        );
    }
    for id in &failed {
        assert_eq!(
            ids.iter().filter(|c| *c == id).count(),
            1,
            "{id} in {ids:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_a_newer_format_is_refused() {
    if common::sled_only(
        "the sled format record (tests/failover.rs covers a newer PostgreSQL schema)",
    ) {
        return;
    }
    let mut server = Server::start();
    server.create_group("team", &["alice"]);
    server.kill9();
    {
        let db = sled::open(server.data_dir().join("db")).expect("opening the stopped database");
        assert_eq!(
            db.get("format").expect("read").as_deref(),
            Some(&1u32.to_be_bytes()[..]),
            "a new database records its format"
        );
        db.insert("format", &99u32.to_be_bytes()).expect("write");
        db.flush().expect("flush");
    }
    let why = server
        .try_restart()
        .expect_err("a newer format must be refused");
    assert!(why.contains("exited"), "{why}");
    let log = server.log_tail();
    assert!(
        log.contains("storage format 99") && log.contains("newer Rollcall"),
        "the message names the problem: {log}"
    );
}
