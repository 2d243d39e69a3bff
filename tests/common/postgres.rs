//! A throwaway PostgreSQL cluster for the tests: Debian's server binaries (`apt-get install
//! postgresql`), `initdb` into a temp dir and `pg_ctl start` on a free loopback port, as the
//! unprivileged `postgres` user when the tests run as root. Never a system service.
//!
//! One cluster per test process, started on first use; a watchdog process stops it (and
//! removes its directory) once the test process has exited, since a test binary has no hook
//! that runs at its end. Each test server gets a database of its own ([`Cluster::database`]).
//!
//! `ROLLCALL_TEST_STORE=postgres` runs every server of the suite on PostgreSQL ([`on_postgres`]);
//! tests that look inside a sled data directory skip themselves there ([`sled_only`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether the suite runs on PostgreSQL (`ROLLCALL_TEST_STORE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("ROLLCALL_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// For a test about the sled data directory itself: true (after saying so) when the suite runs
/// on PostgreSQL, where the test does not apply; the test then returns.
pub fn sled_only(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
        return true;
    }
    false
}

/// The running cluster.
pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    databases: AtomicU32,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

/// Where Debian keeps the server binaries: `ROLLCALL_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` with an `initdb`.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ROLLCALL_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.parse().ok()?;
                    let bin = entry.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install Debian's \
             postgresql package (scripts/test.sh does), or set ROLLCALL_TEST_PG_BIN"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the cluster's owner: `postgres` when the tests run as root (initdb refuses
/// root), else the test's own user.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(command: &mut Command, what: &str) {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    fn start() -> Cluster {
        let bin = bin_dir();
        let base = std::env::temp_dir().join(format!("rollcall-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("creating the cluster dir");
        if is_root() {
            run(
                Command::new("chown").arg("postgres").arg(&base),
                "chown of the cluster dir",
            );
        }
        let data = base.join("data");
        run(
            as_owner(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        );
        let cluster = Cluster {
            port: free_port(),
            dir: base,
            bin,
            databases: AtomicU32::new(0),
        };
        cluster.pg_ctl_start();
        cluster.watch();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) {
        // fsync off: the tests kill Rollcall, not the machine; a database restart (`restart`)
        // is an immediate shutdown, which keeps every commit.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
             -c shared_buffers=16MB",
            self.port,
            self.dir.display()
        );
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-o", &options, "-l"])
                .arg(self.dir.join("log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        );
    }

    /// Stops the cluster at once (`-m immediate`: like a crash of the database server).
    pub fn stop(&self) {
        run(
            as_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Starts it again after [`Cluster::stop`], on the same port.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    /// A watchdog that stops the cluster and removes its directory once this process is gone.
    fn watch(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {owner}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            owner = if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        // Never waited for: it outlives this process on purpose.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the cluster's watchdog");
    }

    /// `psql` against the cluster's `postgres` database, running `sql`; its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; its connection URL.
    pub fn database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("rollcall_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The name of the database of a URL [`Cluster::database`] gave.
    pub fn name_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Waits until the cluster accepts connections again.
    pub fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the PostgreSQL cluster did not come back");
    }
}
