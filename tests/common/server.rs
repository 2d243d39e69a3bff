//! The server under test: one real `rollcall serve` process on 127.0.0.1:0 with a temp data dir.
//! It owns starting it (with extra flags and environment, see [`ServerOptions`]), reading what it
//! prints on stdout (the listen address, the admin token, demo links), capturing its log (stderr)
//! completely, signalling it, killing it with SIGKILL and starting it again on the same data dir.
//!
//! HTTP requests to it live in `http.rs`, WebSocket clients in `ws.rs`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{ADMIN_TOKEN, JWT_SECRET, TIMEOUT};

/// How to start a [`Server`]: `Server::options().args(..).env(..).start()`. Whatever is set here
/// holds for every restart too (except `args`, which `restart_with` replaces).
///
/// By default the server gets [`ADMIN_TOKEN`] and [`JWT_SECRET`] in its environment, `RUST_LOG`
/// from the test's environment (else `info`), and `--send-rate 0` unless the flags name
/// `--send-rate` themselves.
#[derive(Default)]
pub struct ServerOptions {
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    default_send_rate: bool,
    data: Option<DataDir>,
}

/// Where a server keeps its data: a temp dir of its own (removed with it), or a directory
/// someone else owns (a backup snapshot).
enum DataDir {
    Temp(TempDir),
    Given(std::path::PathBuf),
}

impl DataDir {
    fn path(&self) -> &std::path::Path {
        match self {
            DataDir::Temp(dir) => dir.path(),
            DataDir::Given(path) => path,
        }
    }
}

impl ServerOptions {
    /// Extra `serve` flags, e.g. `&["--max-body-bytes", "1024"]` (added to any given before).
    pub fn args(mut self, args: &[&str]) -> ServerOptions {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable of the server (after the harness's own, so it wins).
    pub fn env(mut self, key: &str, value: &str) -> ServerOptions {
        self.env.push((key.to_string(), Some(value.to_string())));
        self
    }

    /// Removes an environment variable from the server's environment, the harness's own
    /// (`ROLLCALL_ADMIN_TOKEN`, `ROLLCALL_JWT_SECRET`, `RUST_LOG`) included.
    pub fn env_remove(mut self, key: &str) -> ServerOptions {
        self.env.push((key.to_string(), None));
        self
    }

    /// The server logs at `level` (`RUST_LOG`), whatever the test's environment says.
    pub fn log_level(self, level: &str) -> ServerOptions {
        self.env("RUST_LOG", level)
    }

    /// Neither secret in the environment: the server generates both into its data dir (and
    /// prints the admin token once).
    pub fn generated_secrets(self) -> ServerOptions {
        self.env_remove("ROLLCALL_ADMIN_TOKEN")
            .env_remove("ROLLCALL_JWT_SECRET")
    }

    /// Leaves the send rate at the server's own default instead of turning the limit off.
    pub fn server_default_send_rate(mut self) -> ServerOptions {
        self.default_send_rate = true;
        self
    }

    /// Runs on a data dir the test made (e.g. on a small file system of its own).
    pub fn data_dir(mut self, data: TempDir) -> ServerOptions {
        self.data = Some(DataDir::Temp(data));
        self
    }

    /// Runs on an existing directory the server does not own (left in place when it is
    /// dropped): a backup's snapshot, `serve --data <snapshot>`.
    pub fn data_path(mut self, path: &std::path::Path) -> ServerOptions {
        self.data = Some(DataDir::Given(path.to_path_buf()));
        self
    }

    /// Starts the server; panics (with its log) if it does not listen.
    pub fn start(self) -> Server {
        let mut server = Server {
            child: None,
            data: match self.data {
                Some(data) => data,
                None => DataDir::Temp(tempfile::tempdir().expect("creating the data dir")),
            },
            logs: tempfile::tempdir().expect("creating the log dir"),
            args: self.args,
            env: self.env,
            default_send_rate: self.default_send_rate,
            port: 0,
            stdout: Default::default(),
            run: 0,
            pipes: Vec::new(),
            store: None,
        };
        if super::postgres::on_postgres() && !server.args.iter().any(|a| a.starts_with("--store")) {
            server.store = Some(super::postgres::cluster().database());
        }
        server.spawn();
        server
    }
}

/// One running (or stopped) `rollcall serve` process and its data dir.
pub struct Server {
    child: Option<Child>,
    /// The data dir; kept alive across restarts, removed when the harness is dropped.
    data: DataDir,
    /// Where the server's stderr (logs) goes, all runs appended; printed when a test fails.
    logs: TempDir,
    /// Extra command-line flags, reused on every restart.
    args: Vec<String>,
    /// Environment changes over the harness's defaults, reused on every restart.
    env: Vec<(String, Option<String>)>,
    /// Whether to leave `--send-rate` at the server's default.
    default_send_rate: bool,
    /// The port of the current (or last) run.
    pub port: u16,
    /// Every line the server printed on standard output (all runs), with the run it came from.
    stdout: Arc<Mutex<Vec<(u32, String)>>>,
    /// The number of the current (or last) run, from 1.
    run: u32,
    /// The threads copying the current run's stdout and stderr; joined when it ends, so that
    /// the log and the stdout lines are complete once the process is gone.
    pipes: Vec<JoinHandle<()>>,
    /// The PostgreSQL database of this server, kept across restarts (`ROLLCALL_TEST_STORE=
    /// postgres`, see `postgres.rs`); `None`: sled in the data dir.
    pub store: Option<String>,
}

impl Server {
    /// Starts a server with default settings.
    pub fn start() -> Server {
        Server::options().start()
    }

    /// Starts a server with extra `serve` flags, e.g. `&["--max-body-bytes", "1024"]`.
    pub fn start_with(args: &[&str]) -> Server {
        Server::options().args(args).start()
    }

    /// Starts a server on a data dir the test made (e.g. on a small file system of its own).
    pub fn start_in(data: TempDir, args: &[&str]) -> Server {
        Server::options().data_dir(data).args(args).start()
    }

    /// Options for starting a server with more than flags: environment, log level, secrets.
    pub fn options() -> ServerOptions {
        ServerOptions::default()
    }

    /// Kills the server with SIGKILL (no shutdown code runs), then starts it again on the same
    /// data dir (on a new ephemeral port). A restart is always a crash: anything the server
    /// acknowledged must survive it.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Like [`Server::restart`], with these `serve` flags from now on instead of the first ones.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Kills the server with SIGKILL and waits for it to be gone (and for its log to be
    /// written out).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
        self.join_pipes();
    }

    /// Kills the server (if running) and starts it again; `Err` when it exits before listening
    /// (the log says why).
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill9();
        self.try_spawn_at("127.0.0.1:0")
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every line the server printed on standard output so far (all runs).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lock_stdout()
            .iter()
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// The lines the current (or last) run printed on standard output so far.
    pub fn stdout_lines_of_this_run(&self) -> Vec<String> {
        self.lock_stdout()
            .iter()
            .filter(|(run, _)| *run == self.run)
            .map(|(_, line)| line.clone())
            .collect()
    }

    fn lock_stdout(&self) -> std::sync::MutexGuard<'_, Vec<(u32, String)>> {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the lines the server printed on standard output (in all runs) satisfy
    /// `accept`, and returns them.
    pub fn wait_for_stdout(&self, what: &str, accept: impl Fn(&[String]) -> bool) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines = self.stdout_lines();
            if accept(&lines) {
                return lines;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "the server printed no line with {what} within {TIMEOUT:?}; it printed {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the running server with `kill -SIG <pid>`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid} failed: {status}");
    }

    /// Waits up to `within` for the server process to exit by itself; its exit status, or
    /// `None` if it is still running then (it is left running). Polls every 10 ms.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                self.child = None;
                self.join_pipes();
                return Some(status);
            }
            if started.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("polling the server").is_none(),
            None => false,
        }
    }

    /// The arguments of `rollcall check` for this server's data: `--store` on PostgreSQL,
    /// else `--data`.
    pub fn check_args(&self) -> Vec<String> {
        match &self.store {
            Some(url) => vec!["check".into(), "--store".into(), url.clone()],
            None => vec![
                "check".into(),
                "--data".into(),
                self.data.path().display().to_string(),
            ],
        }
    }

    /// The data dir the server runs on.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// Everything the server wrote to its log (stderr) so far, all runs one after the other.
    /// Complete up to the end of a run once the process is gone ([`Server::kill9`],
    /// [`Server::wait_exit`]).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.logs.path().join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// The last lines of the server's log (all runs).
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// `ws://127.0.0.1:PORT/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn_at("127.0.0.1:0") {
            panic!("rollcall {why}; log:\n{}", self.log_tail());
        }
    }

    /// Waits (up to `TIMEOUT`) for the threads that copy the ended run's stdout and stderr to
    /// reach the end of the pipes; a thread still running then is left to finish by itself.
    fn join_pipes(&mut self) {
        let started = Instant::now();
        for pipe in self.pipes.drain(..) {
            while !pipe.is_finished() && started.elapsed() < TIMEOUT {
                std::thread::sleep(Duration::from_millis(5));
            }
            if pipe.is_finished() {
                let _ = pipe.join();
            }
        }
    }
}

/// Starting on a given address, and restarting on the same port for clients that hold the
/// server's URL and reconnect by themselves (the crate's `client` module).
impl Server {
    /// Kills the server with SIGKILL, then starts it again on the same data dir and the same
    /// port, so a connected client's URL stays valid. The bind is retried for up to `TIMEOUT`
    /// while the port is momentarily busy.
    pub fn restart_on_same_port(&mut self) {
        self.kill9();
        let addr = format!("127.0.0.1:{}", self.port);
        let started = Instant::now();
        loop {
            match self.try_spawn_at(&addr) {
                Ok(()) => return,
                Err(why) if started.elapsed() < TIMEOUT => {
                    eprintln!("restart on {addr} failed ({why}); retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(why) => panic!(
                    "rollcall could not start again on {addr} within {TIMEOUT:?}: {why}; log:\n{}",
                    self.log_tail()
                ),
            }
        }
    }

    /// Starts the server on `addr`; `Err` when the process exits before listening (for example
    /// because the port is taken). Panics if it neither listens nor exits within `TIMEOUT`.
    fn try_spawn_at(&mut self, addr: &str) -> Result<(), String> {
        assert!(self.child.is_none(), "spawn while a server is running");
        self.join_pipes();
        self.run += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("server.log"))
            .expect("opening the server log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rollcall"));
        command
            .arg("serve")
            .arg("--addr")
            .arg(addr)
            .arg("--data")
            .arg(self.data.path())
            .args(&self.args)
            .args(self.store.iter().flat_map(|url| ["--store", url.as_str()]))
            // Tests send in bursts far above a person's pace; tests/limits.rs turns the rate
            // limit on (a later flag wins).
            .args(
                if self.default_send_rate || self.args.iter().any(|a| a == "--send-rate") {
                    &[][..]
                } else {
                    &["--send-rate", "0"][..]
                },
            )
            .env("ROLLCALL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ROLLCALL_JWT_SECRET", JWT_SECRET)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Through a pipe, copied by a thread of ours: the log stays complete even when a
            // test limits what the server itself may write (tests/storage.rs).
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the rollcall binary");
        let mut stderr = child.stderr.take().expect("piped stderr");
        self.pipes.push(std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut log);
        }));
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread reads stdout for the whole life of the process, so the server never blocks on
        // a full pipe; it reports the address from the "listening" line.
        let (tx, rx) = mpsc::channel();
        let printed = Arc::clone(&self.stdout);
        let run = self.run;
        self.pipes.push(std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                printed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((run, line.clone()));
                if let Some(rest) = line.trim().strip_prefix("rollcall: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        }));
        let started = Instant::now();
        let listening = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(listening) => break listening,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    self.join_pipes();
                    return Err(format!("exited before listening ({status:?})"));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.join_pipes();
                return Err(format!("exited before listening ({status})"));
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                self.join_pipes();
                panic!(
                    "rollcall printed no 'listening' line within {TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
        };
        self.port = listening
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse a port from 'listening on {listening}'"));
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- rollcall server log (last lines) ----\n{}\n---- end of log ----",
                self.log_tail()
            );
        }
    }
}
