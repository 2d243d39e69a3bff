//! The server under test: either one this load generator starts (`target/<profile>/rollcall
//! serve` on `127.0.0.1:0` with a temporary data directory, the default) or an external one
//! given by `--http` and `--admin-token`. Owning the process lets the scenarios read its CPU time
//! and memory from `/proc`, restart it (`cold`) and mint user tokens offline with the JWT secret
//! it was started with, which `idle` needs for 10,000 connections. Also the readings of a
//! process from `/proc` (CPU time, memory), of this process's open-file limit and of a data
//! directory's size.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rollcall::auth::Auth;
use rollcall::ids::UserId;

use crate::args::Args;
use crate::report::fig;
use crate::Error;

/// The admin token and JWT secret of servers this program starts (loopback only, throwaway).
pub const ADMIN_TOKEN: &str = "loadgen-admin";
pub const JWT_SECRET: &str = "loadgen-secret";

/// A server process started by the load generator; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    child: Option<Child>,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    pub data: PathBuf,
    bin: PathBuf,
    extra: Vec<String>,
    log: PathBuf,
}

/// Where the `rollcall` binary of the same build profile as this program lies.
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rollcall")))
        .unwrap_or_else(|| PathBuf::from("target/release/rollcall"))
}

impl Server {
    /// Starts `bin serve` on a free loopback port with `data` as its data directory.
    pub fn start(bin: &Path, data: &Path, extra: &[String]) -> Result<Server, Error> {
        let log = data.with_extension("log");
        let mut server = Server {
            child: None,
            pid: 0,
            http: String::new(),
            data: data.to_path_buf(),
            bin: bin.to_path_buf(),
            extra: extra.to_vec(),
            log,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&self.data)
            // The load generator measures capacity: the abuse limits (per-user write rate,
            // sessions per user) are off unless --server-arg turns them back on (a later flag
            // wins).
            .args(["--send-rate", "0", "--max-sessions-per-user", "0"])
            .args(&self.extra)
            .env("ROLLCALL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ROLLCALL_JWT_SECRET", JWT_SECRET)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.pid = child.id();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(a) = line.split("listening on ").nth(1) {
                addr = Some(a.trim().to_string());
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        let addr = addr.ok_or_else(|| {
            format!(
                "the server exited before listening; see {}",
                self.log.display()
            )
        })?;
        self.http = format!("http://{addr}");
        Ok(())
    }

    /// Stops the server (SIGTERM; SIGKILL after 30 s) and returns how long that took.
    pub fn stop(&mut self) -> Duration {
        let t = Instant::now();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid.to_string())
                .status();
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > until => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        t.elapsed()
    }

    /// Stops and starts the server on the same data directory; returns the time from the
    /// start of the new process until `GET /healthz` answered 200.
    pub fn restart(&mut self) -> Result<Duration, Error> {
        self.stop();
        let t = Instant::now();
        self.spawn()?;
        loop {
            let ok = ureq::get(&format!("{}/healthz", self.http))
                .timeout(Duration::from_secs(1))
                .call()
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ok {
                return Ok(t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(120) {
                return Err("/healthz did not answer within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// [`Server::restart`] with other flags (after the fixed ones, as at the start).
    pub fn restart_with(&mut self, extra: Vec<String>) -> Result<Duration, Error> {
        self.extra = extra;
        self.restart()
    }

    /// Warning and error lines the server logged so far.
    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = if tick > 0 { tick as f64 } else { 100.0 };
    Some((utime + stime) / tick)
}

/// (VmRSS, VmHWM) of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A process's VmRSS in MiB (NaN when unreadable).
pub fn rss_mib(pid: u32) -> f64 {
    rss_kib(pid).map_or(f64::NAN, |(rss, _)| rss as f64 / 1024.0)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it, so a server
/// this program starts gets the same). Returns the new soft limit.
/// The descriptor limit loadgen asks for when the hard limit is lower (granted to root only).
const WANTED_NOFILE: u64 = 120_000;

pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        // Root may raise the hard limit too (CAP_SYS_RESOURCE, up to fs.nr_open): 50,000 idle
        // connections need about 50,100 descriptors in each process.
        if lim.rlim_max < WANTED_NOFILE {
            let raised = libc::rlimit {
                rlim_cur: WANTED_NOFILE,
                rlim_max: WANTED_NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Starts a server with a fresh temporary data directory.
pub fn start_server(args: &Args) -> Result<(Server, tempfile::TempDir), Error> {
    start_server_with(args, &[])
}

/// Starts a server with a fresh temporary data directory and the scenario's own server flags
/// `scenario_flags` before `--server-arg`'s (so those win).
pub fn start_server_with(
    args: &Args,
    scenario_flags: &[String],
) -> Result<(Server, tempfile::TempDir), Error> {
    let dir = tempfile::Builder::new().prefix("rollcall-lg").tempdir()?;
    let bin = args.server_bin.clone().unwrap_or_else(default_bin);
    let mut extra = server_flags(args, scenario_flags);
    if let Some(url) = &args.postgres {
        extra.push(format!("--store={}", fresh_database(url)?));
    }
    let server = Server::start(&bin, &dir.path().join("data"), &extra)?;
    println!(
        "server      : {} serve --addr 127.0.0.1:0 --data {} {} (pid {}, {})",
        bin.display(),
        server.data.display(),
        extra.join(" "),
        server.pid,
        server.http
    );
    Ok((server, dir))
}

/// A new database on the PostgreSQL server of `url` (`psql`); its URL.
fn fresh_database(url: &str) -> Result<String, Error> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "loadgen_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let out = Command::new("psql")
        .arg(url)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "creating database {name} on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}

/// The scenario's server flags, then `--server-arg`'s.
pub fn server_flags(args: &Args, scenario_flags: &[String]) -> Vec<String> {
    scenario_flags
        .iter()
        .chain(args.server_args.iter())
        .cloned()
        .collect()
}

/// Points `args` at a started server.
pub fn attach(args: &mut Args, server: &Server) {
    args.http = Some(server.http.clone());
    args.admin_token = Some(ADMIN_TOKEN.to_string());
    args.server_pid = Some(server.pid);
    args.data_dir = Some(server.data.clone());
    args.own_server = true;
}

/// Stops a started server and reports its log.
pub fn finish_server(mut server: Server) {
    let took = server.stop();
    let lines = server.log_lines();
    println!(
        "server stop : {:.2} s; {lines} warning/error log lines ({})",
        took.as_secs_f64(),
        server.log_path().display()
    );
    fig("server_log_lines", lines);
}

/// Mints a token for `user` with the secret the started servers use.
pub fn mint(data: &Path, user: &str) -> Result<String, Error> {
    let user = UserId::parse(user).map_err(|e| format!("bad user id {user}: {e:?}"))?;
    Ok(Auth::mint_offline(
        data,
        Some(JWT_SECRET.to_string()),
        &user,
        3600,
    )?)
}

/// The size of the files under `path` (stops after visiting 10,000 directories).
pub fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
