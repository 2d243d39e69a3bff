//! Test harness shared by every integration test: a real `rollcall` server process on a temp data
//! dir, an admin HTTP helper, and a raw WebSocket client that speaks JSON frames.
//!
//! The server runs as a separate process (not in-process) so that durability tests can kill it with
//! SIGKILL and start it again on the same data dir, exactly as a crash would. Each test starts its
//! own server on an ephemeral port, so tests run in parallel without sharing state.
//!
//! The client is deliberately raw (`serde_json::Value`, not the crate's client module): the tests
//! check the documented wire format field by field, and a typed client would hide a renamed or
//! missing field behind its own defaults.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The admin bearer token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-5f1c";
/// The HS256 secret every test server signs and checks user tokens with.
pub const JWT_SECRET: &str = "test-jwt-secret-9d2e-0123456789abcdef";
/// How long any single expected event (a frame, a server start, an HTTP answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A user token (HS256 JWT) valid for an hour, signed with the servers' secret. It carries `iat`
/// besides the documented `sub` and `exp`, like the server's own tokens; the test
/// `a_token_with_only_sub_and_exp_is_accepted` covers a token with exactly the documented claims.
pub fn token(user: &str) -> String {
    token_with(user, now_secs() + 3600, JWT_SECRET)
}

/// A user token with an explicit expiry and secret (and `iat` = now), for the refusal tests.
pub fn token_with(user: &str, exp: u64, secret: &str) -> String {
    sign(
        &serde_json::json!({"sub": user, "exp": exp, "iat": now_secs().min(exp)}),
        secret,
    )
}

/// Signs arbitrary claims with HS256.
pub fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encoding a JWT")
}

/// One running (or stopped) `rollcall serve` process and its data dir.
pub struct Server {
    child: Option<Child>,
    /// The data dir; kept alive across restarts, removed when the harness is dropped.
    data: TempDir,
    /// Where the server's stderr (logs) goes; printed when a test fails.
    logs: TempDir,
    /// Extra command-line flags, reused on every restart.
    args: Vec<String>,
    /// The port of the current (or last) run.
    pub port: u16,
    /// Every line the server printed on standard output (all runs).
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server with default settings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra `serve` flags, e.g. `&["--max-body-bytes", "1024"]`.
    pub fn start_with(args: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            data: tempfile::tempdir().expect("creating the data dir"),
            logs: tempfile::tempdir().expect("creating the log dir"),
            args: args.iter().map(|a| a.to_string()).collect(),
            port: 0,
            stdout: Default::default(),
        };
        server.spawn();
        server
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

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
    }

    /// Starts a server on a data dir the test made (e.g. on a small file system of its own).
    pub fn start_in(data: TempDir, args: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            data,
            logs: tempfile::tempdir().expect("creating the log dir"),
            args: args.iter().map(|a| a.to_string()).collect(),
            port: 0,
            stdout: Default::default(),
        };
        server.spawn();
        server
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
        self.stdout
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

    /// The data dir the server runs on.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn_at("127.0.0.1:0") {
            panic!("rollcall {why}; log:\n{}", self.log_tail());
        }
    }

    /// The last lines of the server's log (all runs).
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.logs.path().join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
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

    /// One HTTP request; answers (status, JSON body) for success and error statuses alike. An
    /// empty body is `Value::Null`; a body that is not JSON comes back as a `Value::String`.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
        let mut request = agent.request(method, &self.url(path));
        if let Some(bearer) = bearer {
            request = request.set("Authorization", &format!("Bearer {bearer}"));
        }
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("{method} {path}: transport error: {e}"),
        };
        let status = response.status();
        let text = response.into_string().expect("reading the HTTP body");
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// An admin API request with the right admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.http(method, path, Some(ADMIN_TOKEN), body)
    }

    /// An admin API request that must answer `expected_status`; returns the body.
    pub fn admin_expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        expected_status: u16,
    ) -> Value {
        let (status, value) = self.admin(method, path, body);
        assert_eq!(
            status, expected_status,
            "{method} {path}: unexpected status; body: {value}"
        );
        value
    }

    /// Creates a group through the admin API (members are created as users).
    pub fn create_group(&self, id: &str, members: &[&str]) -> Value {
        self.admin_expect(
            "POST",
            "/api/groups",
            Some(json!({"id": id, "members": members})),
            201,
        )
    }

    /// `GET /api/groups/{gid}`, which must exist.
    pub fn group(&self, id: &str) -> Value {
        self.admin_expect("GET", &format!("/api/groups/{id}"), None, 200)
    }

    /// One member's entry of `GET /api/groups/{gid}`.
    pub fn member(&self, group: &str, user: &str) -> Value {
        let group_value = self.group(group);
        member_of(&group_value, user)
            .unwrap_or_else(|| panic!("{user} is not listed in {group_value}"))
            .clone()
    }

    /// Connects a WebSocket client for `user` with a freshly minted token.
    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(), &token(user)).await
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
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join("server.log"))
            .expect("opening the server log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .arg("serve")
            .arg("--addr")
            .arg(addr)
            .arg("--data")
            .arg(self.data.path())
            .args(&self.args)
            // Tests send in bursts far above a person's pace; tests/limits.rs turns the rate
            // limit on (a later flag wins).
            .args(if self.args.iter().any(|a| a == "--send-rate") {
                &[][..]
            } else {
                &["--send-rate", "0"][..]
            })
            .env("ROLLCALL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("ROLLCALL_JWT_SECRET", JWT_SECRET)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Through a pipe, copied by a thread of ours: the log stays complete even when a
            // test limits what the server itself may write (tests/storage.rs).
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the rollcall binary");
        let mut stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut log);
        });
        let stdout = child.stdout.take().expect("piped stdout");
        // A thread reads stdout for the whole life of the process, so the server never blocks on
        // a full pipe; it reports the address from the "listening" line.
        let (tx, rx) = mpsc::channel();
        let printed = std::sync::Arc::clone(&self.stdout);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                printed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.clone());
                if let Some(rest) = line.trim().strip_prefix("rollcall: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let started = Instant::now();
        let listening = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(listening) => break listening,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    return Err(format!("exited before listening ({status:?})"));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited before listening ({status})"));
            }
            if started.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
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

    /// `GET /metrics` with the admin token: the value of one counter or gauge sample, named
    /// with its labels as in the Prometheus text (e.g. `rollcall_frames_in_total{type="ack"}`);
    /// 0 when the sample is absent (a labelled counter appears on its first increment).
    pub fn metric(&self, sample: &str) -> u64 {
        let (status, body) = self.admin("GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics: {body}");
        let text = body.as_str().expect("metrics are plain text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| {
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|e| panic!("bad sample value in {line:?}: {e}"))
                        as u64
                })
            })
            .unwrap_or(0)
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

/// The entry for `user` in a group object's `members`.
pub fn member_of<'a>(group: &'a Value, user: &str) -> Option<&'a Value> {
    group["members"]
        .as_array()?
        .iter()
        .find(|m| m["user"] == user)
}

/// The error code of an admin API error body `{"error":{"code","message"}}`, checking the shape.
pub fn http_error_code(body: &Value) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"].is_string(),
        "error body without a message: {body}"
    );
    code.to_string()
}

/// How reading the next frame from the wire ended when it did not yield a JSON frame.
#[derive(Debug)]
pub enum WireEnd {
    /// Nothing arrived within the wait.
    Timeout,
    /// The server closed the connection, with this close code if it sent one.
    Closed(Option<u16>),
    /// The connection failed (reset, EOF without a close frame, ...).
    Failed(String),
}

/// A raw WebSocket client: sends JSON objects, reads JSON objects.
///
/// Frames skipped while waiting for a particular one (`recv_type`, `request`) are kept in
/// `pending`, in arrival order, and later `recv*` calls look there first.
pub struct Client {
    pub user: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The `welcome` frame, read by `connect`.
    pub welcome: Value,
    next_id: u64,
}

impl Client {
    /// Connects with `Authorization: Bearer <token>` and reads the `welcome` frame.
    pub async fn connect(ws_url: &str, token: &str) -> Client {
        match Client::try_connect(ws_url, Some(token)).await {
            Ok(client) => client,
            Err(status) => panic!("connecting to {ws_url} was refused with HTTP {status}"),
        }
    }

    /// Connects with the token in the `?token=` query instead of a header.
    pub async fn connect_query(ws_url: &str, token: &str) -> Client {
        let url = format!("{ws_url}?token={token}");
        match Client::try_connect(&url, None).await {
            Ok(client) => client,
            Err(status) => panic!("connecting to {url} was refused with HTTP {status}"),
        }
    }

    /// Connects; `Err(status)` when the server refused the upgrade with an HTTP status.
    pub async fn try_connect(url: &str, bearer: Option<&str>) -> Result<Client, u16> {
        let mut request = url
            .into_client_request()
            .expect("building the WebSocket request");
        if let Some(bearer) = bearer {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {bearer}")).expect("header value"),
            );
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (ws, _response) = match tokio::time::timeout(TIMEOUT, connecting).await {
            Err(_) => panic!("connecting to {url} took longer than {TIMEOUT:?}"),
            Ok(Err(tungstenite::Error::Http(response))) => return Err(response.status().as_u16()),
            Ok(Err(e)) => panic!("connecting to {url} failed: {e}"),
            Ok(Ok(pair)) => pair,
        };
        let mut client = Client {
            user: String::new(),
            ws,
            pending: VecDeque::new(),
            welcome: Value::Null,
            next_id: 0,
        };
        let welcome = client.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "the first frame after the upgrade must be welcome, got {welcome}"
        );
        client.user = welcome["user"].as_str().unwrap_or_default().to_string();
        client.welcome = welcome;
        Ok(client)
    }

    /// The `welcome` entry for one group, if listed.
    pub fn welcome_group(&self, group: &str) -> Option<&Value> {
        self.welcome["groups"]
            .as_array()?
            .iter()
            .find(|g| g["group"] == group)
    }

    /// Sends one JSON value as a text frame.
    pub async fn send_json(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends raw text as one text frame (for malformed input).
    pub async fn send_text(&mut self, text: &str) {
        match tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(text.to_string()))).await {
            Err(_) => panic!(
                "[{}] the server did not take a frame within {TIMEOUT:?}",
                self.user
            ),
            Ok(Err(e)) => panic!("[{}] sending a frame failed: {e}", self.user),
            Ok(Ok(())) => {}
        }
    }

    /// Sends any WebSocket message (binary, or a raw frame with invalid UTF-8).
    pub async fn send_message(&mut self, message: Message) {
        match tokio::time::timeout(TIMEOUT, self.ws.send(message)).await {
            Err(_) => panic!("[{}] the server did not take a frame", self.user),
            Ok(Err(e)) => panic!("[{}] sending a frame failed: {e}", self.user),
            Ok(Ok(())) => {}
        }
    }

    /// Sends raw text, ignoring a failure (the server may already be closing the connection).
    pub async fn send_text_lossy(&mut self, text: &str) {
        let _ = tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(text.to_string()))).await;
    }

    /// Reads the next JSON frame from the wire, skipping pings and pongs.
    pub async fn read_wire(&mut self, wait: Duration) -> Result<Value, WireEnd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(WireEnd::Timeout),
                Ok(next) => next,
            };
            match next {
                None => return Err(WireEnd::Failed("stream ended".into())),
                Some(Err(tungstenite::Error::ConnectionClosed)) => {
                    return Err(WireEnd::Closed(None))
                }
                Some(Err(e)) => return Err(WireEnd::Failed(e.to_string())),
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!(
                            "[{}] server sent a frame that is not JSON ({e}): {text}",
                            self.user
                        )
                    });
                    assert!(
                        value.is_object() && value["type"].is_string(),
                        "[{}] server sent a frame that is not a typed object: {value}",
                        self.user
                    );
                    return Ok(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(WireEnd::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(bytes))) => {
                    panic!(
                        "[{}] server sent a binary frame ({} bytes)",
                        self.user,
                        bytes.len()
                    )
                }
            }
        }
    }

    /// The next frame (pending first), waiting at most `TIMEOUT`.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        match self.read_wire(TIMEOUT).await {
            Ok(frame) => frame,
            Err(end) => panic!("[{}] expected a frame, got {end:?}", self.user),
        }
    }

    /// The first frame that satisfies `accept` (pending first); frames skipped on the way stay
    /// pending. Panics after `TIMEOUT`, naming `what` and the skipped frames.
    pub async fn recv_where(&mut self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.pending.iter().position(&accept) {
            return self.pending.remove(pos).expect("position is in range");
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) if accept(&frame) => return frame,
                Ok(frame) => self.pending.push_back(frame),
                Err(end) => panic!(
                    "[{}] waiting for {what}: {end:?}; frames received meanwhile: {:?}",
                    self.user,
                    self.pending_summary()
                ),
            }
        }
    }

    /// The next frame of this `type` (pending first).
    pub async fn recv_type(&mut self, frame_type: &str) -> Value {
        self.recv_where(&format!("a {frame_type:?} frame"), |f| {
            f["type"] == frame_type
        })
        .await
    }

    /// The next `msg` frame of one group.
    pub async fn recv_msg(&mut self, group: &str) -> Value {
        self.recv_where(&format!("a msg of {group}"), |f| {
            f["type"] == "msg" && f["group"] == group
        })
        .await
    }

    /// The next `n` `msg` frames of one group, in arrival order.
    pub async fn recv_msgs(&mut self, group: &str, n: usize) -> Vec<Value> {
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            msgs.push(self.recv_msg(group).await);
        }
        msgs
    }

    /// Sends a frame with an `id` (one is added when missing) and waits for the reply that echoes
    /// it. Other frames stay pending.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        if frame.get("id").is_none() {
            self.next_id += 1;
            frame["id"] = json!(format!("req-{}", self.next_id));
        }
        let id = frame["id"].clone();
        self.send_json(frame.clone()).await;
        self.recv_where(&format!("the reply to {frame}"), |f| {
            f.get("id") == Some(&id)
        })
        .await
    }

    /// Sends a frame that must be refused; returns the `error` frame after checking that it is
    /// an error with `code` that echoes the frame's id.
    pub async fn expect_error(&mut self, frame: Value, code: &str) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(
            reply["type"], "error",
            "{frame} should be refused, got {reply}"
        );
        assert_eq!(
            reply["code"], code,
            "{frame} refused with the wrong code: {reply}"
        );
        assert!(
            reply["message"].is_string(),
            "error without a message: {reply}"
        );
        reply
    }

    /// `ping` → `pong`: proves the session is open and answering.
    pub async fn ping(&mut self) {
        let reply = self.request(json!({"type": "ping"})).await;
        assert_eq!(reply["type"], "pong", "ping answered with {reply}");
    }

    /// `send` and wait for its `sent`.
    pub async fn send_msg(&mut self, group: &str, client_id: &str, body: &str) -> Value {
        let sent = self
            .request(json!({"type": "send", "group": group, "client_id": client_id, "body": body}))
            .await;
        assert_eq!(
            sent["type"], "sent",
            "send {client_id} to {group} answered with {sent}"
        );
        sent
    }

    /// A round trip through the group: a `sync` of one message, answered after everything this
    /// session sent to that group before it. Returns the reply.
    pub async fn barrier(&mut self, group: &str) -> Value {
        self.request(json!({"type": "sync", "group": group, "after": 0, "limit": 1}))
            .await
    }

    /// Syncs one group from `after` with `limit`, one page; checks the reply's type.
    pub async fn sync_page(&mut self, group: &str, after: u64, limit: u64) -> Value {
        let page = self
            .request(json!({"type": "sync", "group": group, "after": after, "limit": limit}))
            .await;
        assert_eq!(page["type"], "messages", "sync answered with {page}");
        page
    }

    /// Syncs a whole group from `after`, following `more`; returns every message in order.
    pub async fn sync_all(&mut self, group: &str, after: u64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = after;
        loop {
            let page = self.sync_page(group, after, 1000).await;
            let messages = page["messages"].as_array().expect("messages array").clone();
            if let Some(last) = messages.last() {
                after = last["seq"].as_u64().expect("seq");
            }
            all.extend(messages);
            if page["more"] != true {
                return all;
            }
        }
    }

    /// Reads whatever arrives within `wait` into pending. Only for asserting that something did
    /// NOT happen, after an awaited barrier made it due.
    pub async fn drain_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) => self.pending.push_back(frame),
                Err(WireEnd::Timeout) => return,
                Err(end) => panic!("[{}] connection ended: {end:?}", self.user),
            }
        }
    }

    /// Frames received but not consumed yet.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.pending
    }

    /// Removes and returns the oldest pending frame.
    pub fn take_pending(&mut self) -> Option<Value> {
        self.pending.pop_front()
    }

    /// Panics if any pending frame is an `error`.
    pub fn assert_no_error(&self) {
        if let Some(err) = self.pending.iter().find(|f| f["type"] == "error") {
            panic!("[{}] unexpected error frame: {err}", self.user);
        }
    }

    /// Panics if any pending frame is a `msg` of `group`.
    pub fn assert_no_msg(&self, group: &str) {
        if let Some(msg) = self
            .pending
            .iter()
            .find(|f| f["type"] == "msg" && f["group"] == group)
        {
            panic!("[{}] unexpected msg: {msg}", self.user);
        }
    }

    /// Reads until the server ends the connection; returns how it ended. Panics if it stays open
    /// longer than `TIMEOUT`.
    pub async fn expect_closed(&mut self) -> WireEnd {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) => self.pending.push_back(frame),
                Err(WireEnd::Timeout) => {
                    panic!("[{}] the server did not close the connection", self.user)
                }
                Err(end) => return end,
            }
        }
    }

    /// Reads (and so answers pings) until `until` completes; frames go to pending. Panics if the
    /// connection ends meanwhile.
    pub async fn pump_until<F: std::future::Future>(&mut self, until: F) -> F::Output {
        tokio::pin!(until);
        loop {
            tokio::select! {
                out = &mut until => return out,
                next = self.ws.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        let value = serde_json::from_str(text.as_str()).expect("JSON frame");
                        self.pending.push_back(value);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        panic!("[{}] server closed the connection: {frame:?}", self.user)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("[{}] connection failed: {e}", self.user),
                    None => panic!("[{}] connection ended", self.user),
                },
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn pending_summary(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|f| {
                let mut s = f.to_string();
                if s.len() > 200 {
                    s.truncate(200);
                    s.push('…');
                }
                s
            })
            .collect()
    }
}

/// The `seq` of a frame or message, which must be a number.
pub fn seq(frame: &Value) -> u64 {
    frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {frame}"))
}

/// The seqs of a list of messages.
pub fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(seq).collect()
}
