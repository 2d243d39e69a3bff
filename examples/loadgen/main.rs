//! Load generator for Rollcall (loopback only): real WebSocket clients against a real server.
//!
//! ```text
//! cargo run --release --example loadgen -- <scenario> [options]
//! ```
//!
//! By default it starts its own server (`rollcall` beside this program, `serve --addr
//! 127.0.0.1:0` with a temporary data directory; see `server.rs`), reads its CPU time and memory
//! from `/proc`, and stops it at the end; `--http URL --admin-token TOKEN` drives an external
//! one. Every run is bounded by a message count and `--deadline-secs`, prints a human summary
//! and, last, one JSON line of figures. Scenarios (details and results in BENCHMARKS.md):
//!
//! - `storm` (default): one group of `--members` (200), `--online` (40) of them connected: one
//!   sender (`--senders`) posts `--messages` (20,000) closed-loop with `--window` (64) unanswered
//!   sends, or open-loop at `--rate` msgs/s; every reader reads every message, sending a
//!   cumulative `read` every `--read-batch` (5) messages or after `--read-ms` (20) ms without
//!   one. Reports posted msgs/s, deliveries/s, send→sent, send→received-by-all and send→read
//!   count (receipt) latencies, frames per message from `/metrics`, CPU and peak RSS.
//! - `ceiling`: the storm against Rollcall, then the same clients against a bare relay (this
//!   program run as `loadgen relay`, a separate process), then the disk's fsyncs per second.
//! - `groups`: a sweep over the number of groups (`--sweep`, default 1,10,100,1000), the same
//!   total of messages spread over them. Without `--sweep` and with `--http`, the older single
//!   run: `--groups` (1,000) groups of `--members` (20) drawn from `--users` (200), `--messages`
//!   (100) per group, then a reconnect storm of every user (`--phase load|welcome|all`).
//! - `idle`: `--connections` (or `--sweep`) idle authenticated connections: memory per
//!   connection, time to accept them, `welcome` latency.
//! - `catchup`: a member offline while `--messages` (10,000) are posted, then it connects with
//!   the client module (`rollcall::client`) and syncs in pages of `--page`.
//! - `cold`: `--messages` (1,000,000) in `--groups` (1,000) groups, then a restart: time until
//!   `/healthz` answers and until the first `sync` returns.
//! - `fanout`: the storm at `--sweep` (10,100,1000,5000) members with 20% online.
//! - `throughput`, `receipts`: the older scenarios (`--scenario NAME` still works).
//!
//! Counters come from the server's `/metrics`, so run against a server nobody else is using.
//! The storm clients speak the protocol directly (tokio-tungstenite) rather than through the
//! client module, so that the very same client code can drive the bare relay in `ceiling` and
//! so that every timestamp is taken where the frame is read.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

mod scenarios;
mod server;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One group of 200 members, 40 online; one sender posts; every reader reads everything.
    Storm,
    /// G groups (a sweep: 1, 10, 100, 1,000) with traffic spread over them.
    Groups,
    /// C idle authenticated connections: memory per connection, time to accept, `welcome` latency.
    Idle,
    /// One member offline while messages are posted, then it reconnects and syncs.
    Catchup,
    /// A data directory with many messages: restart time until `/healthz` and the first sync.
    Cold,
    /// Cost per message as the group grows (10, 100, 1,000, 5,000 members, 20% online).
    Fanout,
    /// The storm against Rollcall and against a bare WebSocket relay, and the disk's fsyncs/s.
    Ceiling,
    /// Older scenario: one group, every member online, several closed-loop senders.
    Throughput,
    /// Older scenario: the receipt-traffic count with a paced sender (see `storm --rate`).
    Receipts,
    /// Internal: serve the bare relay (`ceiling` starts this as a separate process).
    #[value(hide = true)]
    Relay,
}

/// What the `groups` scenario runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Load, then the reconnect storm on the same (warm) server.
    All,
    /// Create the groups and post the messages.
    Load,
    /// Only the reconnect storm (run against a restarted server on the same data dir).
    Welcome,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "loadgen",
    about = "Load generator for a Rollcall server (loopback only)"
)]
struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    scenario_arg: Option<Scenario>,
    /// The same, in the older spelling (`--scenario throughput`).
    #[arg(long = "scenario", value_enum, hide = true)]
    scenario_flag: Option<Scenario>,
    /// An external server's base URL (a loopback address). Without it, loadgen starts its own
    /// server (the `rollcall` binary beside this program) with a temporary data directory.
    #[arg(long, visible_alias = "url")]
    http: Option<String>,
    /// The external server's admin token (with --http).
    #[arg(long, env = "ROLLCALL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The server binary to start (default: `rollcall` beside this program, same profile).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra flags for the started server, e.g. `--server-arg=--cache-mb=16` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Storm: post at this many messages per second (open loop) instead of closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Storm: a reader also sends its `read` when this many milliseconds passed since its last
    /// one (0: only every --read-batch messages).
    #[arg(long, default_value_t = 20)]
    read_ms: u64,
    /// Groups, fanout, idle: the values to sweep (groups, members, connections), comma-separated.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<u64>,
    /// Idle: connections to open (default 1,000; the sweep overrides it).
    #[arg(long, default_value_t = 1000)]
    connections: u64,
    /// Catchup and cold: the sync page size the client uses (the server caps pages at 1,000).
    #[arg(long, default_value_t = 1000)]
    page: usize,
    /// Relay (internal): the address to listen on.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    relay_addr: String,
    /// Members of the group (default: 40 for throughput, 200 for receipts, 20 per group for groups).
    #[arg(long)]
    members: Option<usize>,
    /// Storm: members online, senders included (default 40); receipts: online readers (default
    /// 40). Throughput keeps every member online.
    #[arg(long)]
    online: Option<usize>,
    /// Members that send (default: 4 for throughput and groups, 1 for storm).
    #[arg(long)]
    senders: Option<usize>,
    /// Messages posted in total (default: 20,000 for throughput, 200 for receipts); groups: per
    /// group (default 100).
    #[arg(long)]
    messages: Option<u64>,
    /// Most sends in flight (without their `sent`) per sender.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Throughput: each member sends a cumulative `ack` every N received messages.
    #[arg(long, default_value_t = 50)]
    ack_every: u64,
    /// Storm and receipts: each reader sends a cumulative `read` every N received messages
    /// (default: 5 for storm, 1 for receipts).
    #[arg(long)]
    read_batch: Option<u64>,
    /// Receipts: the sender posts one message every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// The server's --receipt-interval-ms (how long "two receipt ticks" is).
    #[arg(long, default_value_t = 1000)]
    receipt_interval_ms: u64,
    /// Message body size in bytes (default: 64; 200 for groups).
    #[arg(long)]
    body_bytes: Option<usize>,
    /// The whole run (setup included) stops after this many seconds.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Leave Nagle's algorithm on for the client sockets (default: TCP_NODELAY, as browsers do).
    #[arg(long)]
    client_nagle: bool,
    /// The server's data directory, to report its size before and after (optional).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Groups and cold: number of groups.
    #[arg(long, default_value_t = 1000)]
    groups: usize,
    /// Groups: the pool of users that members are drawn from (and that the storm connects).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Groups: `load`, `welcome` or `all` (both, without a restart in between).
    #[arg(long, value_enum, default_value_t = Phase::All)]
    phase: Phase,
    /// Groups: prefix of the user and group ids; `--phase welcome` needs the one `load` used.
    #[arg(long, default_value = "lg")]
    prefix: String,
    /// Groups: the server's process id, to report its VmRSS and VmHWM (from /proc/PID/status).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Groups: parallel admin requests while creating the groups.
    #[arg(long, default_value_t = 8)]
    create_threads: usize,
}

/// What every scenario resolves its optional arguments to.
struct Plan {
    scenario: Scenario,
    members: usize,
    /// Members that connect (throughput: all; receipts: readers + the sender).
    online: usize,
    senders: usize,
    messages: u64,
    window: usize,
    /// Throughput: `ack` every N; receipts: `read` every N.
    cursor_every: u64,
    pace: Option<Duration>,
    /// Storm: open-loop rate in messages per second (all senders together).
    rate: Option<f64>,
    /// Storm: readers also send their `read` at this period.
    cursor_period: Option<Duration>,
    settle: Duration,
    body: Arc<str>,
    nodelay: bool,
    /// Against the bare relay (`ceiling`): no `sent`, no receipts; echoed `send` frames count
    /// as both the sender's answer and the members' `msg`.
    relay: bool,
}

impl Args {
    /// The scenario, positional or from the older `--scenario` flag.
    fn scenario(&self) -> Scenario {
        self.scenario_arg
            .or(self.scenario_flag)
            .unwrap_or(Scenario::Storm)
    }

    /// The admin client of the server under test.
    fn admin(&self) -> Result<Admin, Error> {
        let http = self.http.as_deref().ok_or("no server: give --http")?;
        let token = self
            .admin_token
            .as_deref()
            .ok_or("--admin-token (or ROLLCALL_ADMIN_TOKEN) is needed with --http")?;
        Admin::new(http, token)
    }

    fn plan(&self) -> Result<Plan, Error> {
        self.plan_for(self.scenario())
    }

    fn plan_for(&self, scenario: Scenario) -> Result<Plan, Error> {
        let (members, online, senders, messages, every, pace) = match scenario {
            Scenario::Throughput => {
                let members = self.members.unwrap_or(40);
                (
                    members,
                    members,
                    self.senders.unwrap_or(4),
                    self.messages.unwrap_or(20_000),
                    self.ack_every,
                    None,
                )
            }
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout => {
                let members = self.members.unwrap_or(200);
                let online = if scenario == Scenario::Fanout {
                    (members / 5).max(2)
                } else {
                    self.online.unwrap_or(40)
                };
                (
                    members,
                    online,
                    self.senders.unwrap_or(1),
                    self.messages.unwrap_or(20_000),
                    self.read_batch.unwrap_or(5),
                    None,
                )
            }
            Scenario::Receipts => {
                let members = self.members.unwrap_or(200);
                let readers = self.online.unwrap_or(40);
                (
                    members,
                    readers + 1,
                    1,
                    self.messages.unwrap_or(200),
                    self.read_batch.unwrap_or(1),
                    Some(Duration::from_millis(self.pace_ms)),
                )
            }
            other => return Err(format!("{other:?} has no single-group plan").into()),
        };
        if members == 0 || senders == 0 || senders > members || online > members {
            return Err(format!(
                "need 0 < senders ({senders}) <= members ({members}) and online ({online}) <= members"
            )
            .into());
        }
        if messages == 0 || self.window == 0 || every == 0 {
            return Err("--messages, --window, --ack-every and --read-batch must be > 0".into());
        }
        let storm_like = matches!(
            scenario,
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout
        );
        Ok(Plan {
            scenario,
            members,
            online,
            senders,
            messages,
            window: if storm_like && self.rate.is_some() {
                self.window.max(4096)
            } else {
                self.window
            },
            cursor_every: every,
            pace,
            rate: if storm_like { self.rate } else { None },
            cursor_period: (storm_like && self.read_ms > 0)
                .then(|| Duration::from_millis(self.read_ms)),
            settle: Duration::from_millis(2 * self.receipt_interval_ms + 200),
            body: "x".repeat(self.body_bytes.unwrap_or(64)).into(),
            nodelay: !self.client_nagle,
            relay: false,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Admin HTTP (blocking, ureq), loopback only.

#[derive(Clone)]
struct Admin {
    base: String,
    host_port: String,
    token: String,
}

impl Admin {
    fn new(http: &str, token: &str) -> Result<Admin, Error> {
        let rest = http
            .strip_prefix("http://")
            .ok_or("--http must start with http://")?;
        let host_port = rest.split('/').next().unwrap_or_default().to_string();
        let addrs: Vec<_> = host_port.to_socket_addrs()?.collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!("{host_port} is not a loopback address; refusing").into());
        }
        Ok(Admin {
            base: format!("http://{host_port}"),
            host_port,
            token: token.to_string(),
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        let response = ureq::post(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        Ok(response.into_json()?)
    }

    fn metrics(&self) -> Result<Metrics, Error> {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .call()
            .map_err(|e| format!("GET /metrics: {e}"))?
            .into_string()?;
        Ok(Metrics::parse(&text))
    }

    fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.host_port)
    }
}

/// One `/metrics` snapshot: `name{labels}` → value.
#[derive(Default, Clone)]
struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut out = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    out.insert(key.trim().to_string(), v);
                }
            }
        }
        Metrics(out)
    }

    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// `after - self` for one key.
    fn delta(&self, after: &Metrics, key: &str) -> f64 {
        after.get(key) - self.get(key)
    }

    fn frames(&self, after: &Metrics, dir: &str, kind: &str) -> f64 {
        self.delta(
            after,
            &format!("rollcall_frames_{dir}_total{{type=\"{kind}\"}}"),
        )
    }

    /// Every frame type's delta in one direction.
    fn frames_by_type(&self, after: &Metrics, dir: &str) -> BTreeMap<String, f64> {
        let prefix = format!("rollcall_frames_{dir}_total{{type=\"");
        let mut out = BTreeMap::new();
        for key in after.0.keys().chain(self.0.keys()) {
            if let Some(kind) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix("\"}"))
            {
                let d = self.delta(after, key);
                if d != 0.0 {
                    out.insert(kind.to_string(), d);
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket members.

/// What one read from a connection amounts to.
enum Read {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// Nothing to handle (a non-text frame, or a close/error already recorded in `lost`).
    Skip,
    /// The connection ended after its owner was done: stop reading.
    Stop,
}

/// Turns one read into a text frame, recording a closed or broken connection in `lost`.
fn frame_text(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    lost: &mut Option<String>,
    done: bool,
) -> Read {
    match frame {
        Some(Ok(Message::Text(text))) => Read::Text(text),
        Some(Ok(Message::Close(reason))) => {
            lost.get_or_insert(format!("closed by server: {reason:?}"));
            Read::Skip
        }
        Some(Ok(_)) => Read::Skip,
        Some(Err(e)) => {
            lost.get_or_insert(format!("read: {e}"));
            if done {
                Read::Stop
            } else {
                Read::Skip
            }
        }
        None => {
            lost.get_or_insert("connection ended".to_string());
            if done {
                Read::Stop
            } else {
                Read::Skip
            }
        }
    }
}

/// Parses a server frame, counting an unparsable one in `errors` (and keeping the first).
fn parse_frame<'a>(
    text: &'a str,
    errors: &mut BTreeMap<String, u64>,
    first_error: &mut Option<String>,
) -> Option<Incoming<'a>> {
    match serde_json::from_str(text) {
        Ok(f) => Some(f),
        Err(e) => {
            *errors.entry("unparsable".into()).or_default() += 1;
            first_error.get_or_insert(format!("unparsable frame ({e}): {text}"));
            None
        }
    }
}

/// The fields of a server frame the load generator looks at (others are skipped unparsed).
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    client_id: Option<&'a str>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    items: Option<Vec<ReceiptItem>>,
}

#[derive(Deserialize)]
struct ReceiptItem {
    seq: u64,
    read: u64,
}

/// State shared by every member task of a run.
struct Shared {
    start: Instant,
    group: String,
    /// Per message (by global index): when it was sent, µs since `start` (0: not yet).
    sent_at: Vec<AtomicU64>,
    /// Per message: the latest arrival of its `msg` at any member, µs since `start`.
    last_arrival: Vec<AtomicU64>,
    /// Per message: how many members received its `msg`.
    arrivals: Vec<AtomicU32>,
    /// Readers the receipts sender waits for in its receipt counts.
    readers: u64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What one member does.
struct Role {
    index: usize,
    url: String,
    /// Global message indexes this member sends (`client_id` = `m<index>`).
    sends: Vec<u64>,
    window: usize,
    pace: Option<Duration>,
    /// Open loop: this member's share of the rate, in messages per second.
    rate: Option<f64>,
    /// `Some(("ack"|"read", every))`: the cursor frame sent after every N received messages.
    cursor: Option<(&'static str, u64)>,
    /// Also send the cursor frame at this period when it moved.
    cursor_period: Option<Duration>,
    /// `msg` frames this member waits for before it is done.
    expect: u64,
    /// Receipts sender: done only when a receipt shows every reader read the last message.
    wait_all_read: bool,
    body: Arc<str>,
    nodelay: bool,
}

/// What one member saw.
#[derive(Default)]
struct Outcome {
    index: usize,
    sent_latency_us: Vec<u64>,
    first_send_us: Option<u64>,
    last_sent_us: Option<u64>,
    received: u64,
    cursor_frames: u64,
    receipt_frames: u64,
    /// Receipts sender: per message, send → first receipt showing all readers read it (µs).
    all_read_latency_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    duplicates: u64,
    /// Why the connection ended before the member was done (eviction, close, I/O error).
    lost: Option<String>,
    done: bool,
}

async fn run_member(
    role: Role,
    shared: Arc<Shared>,
    deadline: tokio::time::Instant,
    done_tx: mpsc::UnboundedSender<usize>,
    mut stop: watch::Receiver<bool>,
    ready_tx: mpsc::UnboundedSender<Result<usize, String>>,
    mut go: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome {
        index: role.index,
        ..Outcome::default()
    };
    let connect = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::connect_async_with_config(&role.url, None, role.nodelay),
    );
    let ws = match connect.await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            let _ = ready_tx.send(Err(format!("member {}: connect: {e}", role.index)));
            return out;
        }
        Err(_) => {
            let _ = ready_tx.send(Err(format!("member {}: connect timed out", role.index)));
            return out;
        }
    };
    let (mut sink, mut stream) = ws.split();
    // Wait for `welcome` before reporting ready, so no setup frame lands in the measurement.
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.as_str().contains("\"type\":\"welcome\"") {
                    break;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => {
                let why = match other {
                    Err(_) => "timed out".to_string(),
                    Ok(None) => "closed".to_string(),
                    Ok(Some(Err(e))) => e.to_string(),
                    Ok(Some(Ok(_))) => unreachable!(),
                };
                let _ = ready_tx.send(Err(format!("member {}: no welcome: {why}", role.index)));
                return out;
            }
        }
    }
    let _ = ready_tx.send(Ok(role.index));
    // Start together; a dropped sender (the run gave up) or the deadline ends the member.
    while !*go.borrow() {
        match tokio::time::timeout_at(deadline, go.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return out,
        }
    }

    let group = shared.group.as_str();
    let total_sends = role.sends.len();
    let mut next_send = 0usize; // position in role.sends
    let mut answered = 0usize;
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(role.window * 2);
    let mut sent_us_by_seq: HashMap<u64, u64> = HashMap::new(); // own seq → send time (µs)
    let mut last_seq = 0u64;
    let mut acked_seq = 0u64;
    let go_at = Instant::now();
    let pace_period = match role.rate {
        Some(_) => Some(Duration::from_millis(1)),
        None => role.pace,
    };
    let mut pace = pace_period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut last_cursor_at = Instant::now();
    let mut cursor_tick = role.cursor_period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut pace_credit = 0usize;
    let mut all_read_seq: Option<u64> = None; // highest seq seen with read == readers
    let mut my_last_seq: Option<u64> = None;

    loop {
        // 1. Send what the window (and pacing) allows.
        let mut fed = 0;
        while next_send < total_sends && in_flight.len() < role.window {
            if pace.is_some() {
                if pace_credit == 0 {
                    break;
                }
                pace_credit -= 1;
            }
            let global = role.sends[next_send];
            let frame = json!({
                "type": "send", "id": global, "group": group,
                "client_id": format!("m{global}"), "body": &*role.body,
            });
            in_flight.insert(global, Instant::now());
            let t = shared.now_us();
            shared.sent_at[global as usize].store(t, Ordering::Relaxed);
            out.first_send_us.get_or_insert(t);
            if let Err(e) = sink.feed(Message::text(frame.to_string())).await {
                out.lost = Some(format!("write: {e}"));
                break;
            }
            next_send += 1;
            fed += 1;
        }
        if fed > 0 {
            if let Err(e) = sink.flush().await {
                out.lost.get_or_insert(format!("flush: {e}"));
            }
        }
        // 2. Send the final cumulative cursor once everything expected arrived.
        if let Some((kind, _)) = role.cursor {
            if out.received >= role.expect && last_seq > acked_seq && out.lost.is_none() {
                let frame = json!({"type": kind, "group": group, "seq": last_seq});
                if sink.send(Message::text(frame.to_string())).await.is_ok() {
                    acked_seq = last_seq;
                    out.cursor_frames += 1;
                }
            }
        }
        // 3. Done?
        if !out.done {
            let sends_done = answered == total_sends;
            let recv_done = out.received >= role.expect;
            let cursor_done = role.cursor.is_none() || acked_seq >= last_seq;
            let read_done = !role.wait_all_read
                || shared.readers == 0
                || matches!((all_read_seq, my_last_seq), (Some(a), Some(m)) if a >= m);
            if (sends_done && recv_done && cursor_done && read_done) || out.lost.is_some() {
                out.done = true;
                let _ = done_tx.send(role.index);
            }
        }

        // 4. Wait for the next event.
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.changed() => break,
            _ = async { pace.as_mut().expect("guarded").tick().await },
                if pace.is_some() && next_send < total_sends => {
                match role.rate {
                    // Open loop: whatever is due by now, whether earlier sends were answered or not.
                    Some(rate) => {
                        let due = (go_at.elapsed().as_secs_f64() * rate) as usize;
                        pace_credit = due.min(total_sends).saturating_sub(next_send);
                    }
                    None => pace_credit += 1,
                }
                continue;
            }
            _ = async { cursor_tick.as_mut().expect("guarded").tick().await },
                if cursor_tick.is_some() => {
                // "N messages or T ms": only when no cursor frame went out for a whole period.
                let quiet = role
                    .cursor_period
                    .is_some_and(|p| last_cursor_at.elapsed() >= p);
                if let (Some((kind, _)), true) = (role.cursor, quiet) {
                    if last_seq > acked_seq && out.lost.is_none() {
                        let frame = json!({"type": kind, "group": group, "seq": last_seq});
                        if let Err(e) = sink.send(Message::text(frame.to_string())).await {
                            out.lost.get_or_insert(format!("write: {e}"));
                        } else {
                            acked_seq = last_seq;
                            out.cursor_frames += 1;
                            last_cursor_at = Instant::now();
                        }
                    }
                }
                continue;
            }
            frame = stream.next() => frame,
        };
        // An ended connection: the next turn marks the member done, the one after stops it.
        let text = match frame_text(frame, &mut out.lost, out.done) {
            Read::Text(text) => text,
            Read::Skip => continue,
            Read::Stop => break,
        };
        let Some(f) = parse_frame(&text, &mut out.errors, &mut out.first_error) else {
            continue;
        };
        // The bare relay echoes `send` frames to everyone, the sender included: for the sender
        // the echo is its answer, for everyone it is the `msg` (seq: the message's index + 1).
        let (kind, seq) = match f.kind {
            "send" => {
                if let Some(global) = f.id {
                    if in_flight.remove(&global).is_some() {
                        answered += 1;
                        let at = shared.sent_at[global as usize].load(Ordering::Relaxed);
                        let now = shared.now_us();
                        out.sent_latency_us.push(now.saturating_sub(at));
                        out.last_sent_us = Some(now);
                    }
                }
                ("msg", f.id.map(|g| g + 1))
            }
            other => (other, f.seq),
        };
        match kind {
            "sent" => {
                let Some(global) = f.id else { continue };
                if let Some(at) = in_flight.remove(&global) {
                    answered += 1;
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    out.sent_latency_us.push(us);
                    out.last_sent_us = Some(shared.now_us());
                    if text.as_str().contains("\"duplicate\":true") {
                        out.duplicates += 1;
                    }
                    if let Some(seq) = f.seq {
                        let sent_us = shared.sent_at[global as usize].load(Ordering::Relaxed);
                        sent_us_by_seq.insert(seq, sent_us);
                        my_last_seq = Some(my_last_seq.map_or(seq, |m: u64| m.max(seq)));
                    }
                }
            }
            "msg" => {
                out.received += 1;
                let seq = seq.unwrap_or(0);
                last_seq = last_seq.max(seq);
                if let Some(global) = f
                    .client_id
                    .and_then(|c| c.strip_prefix('m'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&g| g < shared.arrivals.len())
                {
                    shared.last_arrival[global].fetch_max(shared.now_us(), Ordering::Relaxed);
                    shared.arrivals[global].fetch_add(1, Ordering::Relaxed);
                }
                if let Some((kind, every)) = role.cursor {
                    if out.received.is_multiple_of(every) && last_seq > acked_seq {
                        let frame = json!({"type": kind, "group": group, "seq": last_seq});
                        if let Err(e) = sink.send(Message::text(frame.to_string())).await {
                            out.lost.get_or_insert(format!("write: {e}"));
                        } else {
                            acked_seq = last_seq;
                            out.cursor_frames += 1;
                        }
                        last_cursor_at = Instant::now();
                    }
                }
            }
            "receipt" => {
                out.receipt_frames += 1;
                let now = shared.now_us();
                for item in f.items.unwrap_or_default() {
                    if shared.readers > 0 && item.read >= shared.readers {
                        if let Some(sent_us) = sent_us_by_seq.remove(&item.seq) {
                            out.all_read_latency_us.push(now.saturating_sub(sent_us));
                        }
                        all_read_seq =
                            Some(all_read_seq.map_or(item.seq, |a: u64| a.max(item.seq)));
                    }
                }
            }
            "error" => {
                let code = f.code.unwrap_or("?").to_string();
                if out.first_error.is_none() {
                    out.first_error =
                        Some(format!("{code}: {}", f.message.clone().unwrap_or_default()));
                }
                *out.errors.entry(code).or_default() += 1;
                if let Some(global) = f.id {
                    if in_flight.remove(&global).is_some() {
                        answered += 1; // a refused send is answered (and counted as an error)
                    }
                }
            }
            _ => {}
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    if !out.done {
        out.lost
            .get_or_insert("deadline reached before done".into());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The run.

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}"))
}

fn dir_bytes(path: &Path) -> u64 {
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

fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("lg{ms:x}{:x}", std::process::id())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let scenario = args.scenario();
    if scenario == Scenario::Relay {
        return match scenarios::serve_relay(&args.relay_addr) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen relay: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let nofile = server::raise_nofile();
    fig("scenario", format!("{scenario:?}").to_lowercase());
    fig("nofile", nofile);
    let result = with_server(&args, |args| match scenario {
        Scenario::Groups if args.sweep.is_empty() && args.http_given() => groups::run(args),
        Scenario::Groups => scenarios::groups_sweep(args),
        Scenario::Idle => scenarios::idle(args),
        Scenario::Catchup => scenarios::catchup(args),
        Scenario::Cold => scenarios::cold(args),
        Scenario::Fanout => scenarios::fanout(args),
        Scenario::Ceiling => scenarios::ceiling(args),
        _ => run(args),
    });
    let code = match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            fig("status", "incomplete");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            fig("status", "error");
            fig("error", e.to_string());
            std::process::ExitCode::FAILURE
        }
    };
    print_figures();
    code
}

/// The figures of this run, printed as one JSON line at the end.
static FIGURES: std::sync::Mutex<Vec<(String, Value)>> = std::sync::Mutex::new(Vec::new());
/// A prefix for the keys of the figures (the sweep point, e.g. `g100.`).
static FIG_PREFIX: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Records one figure for the final JSON line (NaN and infinities become null).
fn fig(key: &str, value: impl Into<Value>) {
    let prefix = FIG_PREFIX.lock().map(|p| p.clone()).unwrap_or_default();
    let mut value = value.into();
    if let Value::Number(n) = &value {
        if let Some(f) = n.as_f64() {
            if n.is_f64() {
                // Three significant decimals are plenty and keep the line short.
                value = json!((f * 1000.0).round() / 1000.0);
            }
        }
    }
    if let Ok(mut figures) = FIGURES.lock() {
        figures.push((format!("{prefix}{key}"), value));
    }
}

fn fig_f(key: &str, value: f64) {
    if value.is_finite() {
        fig(key, value);
    } else {
        fig(key, Value::Null);
    }
}

fn set_fig_prefix(prefix: &str) {
    if let Ok(mut p) = FIG_PREFIX.lock() {
        *p = prefix.to_string();
    }
}

fn print_figures() {
    let mut map = serde_json::Map::new();
    if let Ok(figures) = FIGURES.lock() {
        for (k, v) in figures.iter() {
            map.insert(k.clone(), v.clone());
        }
    }
    println!("{}", Value::Object(map));
}

impl Args {
    fn http_given(&self) -> bool {
        self.http.is_some()
    }
}

/// Runs `f` against the external server (`--http`) or against a server started for it.
fn with_server(args: &Args, f: impl FnOnce(&Args) -> Result<bool, Error>) -> Result<bool, Error> {
    if args.http.is_some() {
        return f(args);
    }
    // Scenarios that start servers themselves (several, or restarted) get none here.
    if matches!(
        args.scenario(),
        Scenario::Groups | Scenario::Fanout | Scenario::Cold | Scenario::Idle | Scenario::Ceiling
    ) {
        return f(args);
    }
    let (server, _dir) = start_server(args)?;
    let mut args = args.clone();
    attach(&mut args, &server);
    let out = f(&args);
    finish_server(server);
    out
}

/// Starts a server with a fresh temporary data directory.
fn start_server(args: &Args) -> Result<(server::Server, tempfile::TempDir), Error> {
    let dir = tempfile::Builder::new().prefix("rollcall-lg").tempdir()?;
    let bin = args.server_bin.clone().unwrap_or_else(server::default_bin);
    let server = server::Server::start(&bin, &dir.path().join("data"), &args.server_args)?;
    println!(
        "server      : {} serve --addr 127.0.0.1:0 --data {} {} (pid {}, {})",
        bin.display(),
        server.data.display(),
        args.server_args.join(" "),
        server.pid,
        server.http
    );
    Ok((server, dir))
}

/// Points `args` at a started server.
fn attach(args: &mut Args, server: &server::Server) {
    args.http = Some(server.http.clone());
    args.admin_token = Some(server::ADMIN_TOKEN.to_string());
    args.server_pid = Some(server.pid);
    args.data_dir = Some(server.data.clone());
}

/// Stops a started server and reports its log.
fn finish_server(mut server: server::Server) {
    let took = server.stop();
    let lines = server.log_lines();
    println!(
        "server stop : {:.2} s; {lines} warning/error log lines ({})",
        took.as_secs_f64(),
        server.log_path().display()
    );
    fig("server_log_lines", lines);
}

/// The single-group scenarios (storm, throughput, receipts) against the server in `args`.
fn run(args: &Args) -> Result<bool, Error> {
    let plan = args.plan()?;
    run_plan(args, &plan)
}

/// Creates the group and the users' tokens; returns the group id and one URL per online member.
fn setup_group(
    admin: &Admin,
    plan: &Plan,
    deadline_std: Instant,
) -> Result<(String, Vec<String>), Error> {
    let id = run_id();
    let users: Vec<String> = (0..plan.members).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");
    admin.post(
        "/api/groups",
        json!({"id": group, "name": "loadgen", "members": users}),
    )?;
    let mut urls = Vec::with_capacity(plan.online);
    for user in users.iter().take(plan.online) {
        if Instant::now() > deadline_std {
            return Err("deadline reached during setup".into());
        }
        let answer = admin.post(&format!("/api/users/{user}/tokens"), json!({}))?;
        let token = answer["token"].as_str().ok_or("no token in answer")?;
        urls.push(admin.ws_url(token));
    }
    Ok((group, urls))
}

fn run_plan(args: &Args, plan: &Plan) -> Result<bool, Error> {
    let admin = args.admin()?;
    let started = Instant::now();
    let deadline_std = started + Duration::from_secs(args.deadline_secs);
    let (group, urls) = setup_group(&admin, plan, deadline_std)?;
    let data_before = args.data_dir.as_deref().map(dir_bytes);
    let (shared, measured) = drive_plan(
        plan,
        Some(&admin),
        group,
        urls,
        args.server_pid,
        deadline_std,
    )?;
    let data_after = args.data_dir.as_deref().map(dir_bytes);
    let ok = report(plan, &shared, measured, data_before, data_after);
    Ok(ok)
}

/// Runs one plan's members against `urls` (Rollcall, or the relay when `admin` is None).
fn drive_plan(
    plan: &Plan,
    admin: Option<&Admin>,
    group: String,
    urls: Vec<String>,
    pid: Option<u32>,
    deadline_std: Instant,
) -> Result<(Arc<Shared>, Measured), Error> {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        group,
        sent_at: (0..plan.messages).map(|_| AtomicU64::new(0)).collect(),
        last_arrival: (0..plan.messages).map(|_| AtomicU64::new(0)).collect(),
        arrivals: (0..plan.messages).map(|_| AtomicU32::new(0)).collect(),
        readers: match plan.scenario {
            _ if plan.relay => 0,
            Scenario::Receipts => (plan.online - 1) as u64,
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout => {
                (plan.online - plan.senders) as u64
            }
            _ => 0,
        },
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(drive(
        plan,
        admin,
        urls,
        Arc::clone(&shared),
        deadline_std,
        pid,
    ))?;
    Ok((shared, measured))
}

struct Measured {
    before: Metrics,
    after: Metrics,
    /// The server's CPU seconds at the two snapshots, and its VmHWM (KiB) at the end.
    cpu_before: Option<f64>,
    cpu_after: Option<f64>,
    /// This program's own CPU seconds over the same span (the clients' cost).
    own_cpu: f64,
    hwm_kib: Option<u64>,
    outcomes: Vec<Outcome>,
    /// From "go" until every member was done.
    active: Duration,
    timed_out: bool,
}

async fn drive(
    plan: &Plan,
    admin: Option<&Admin>,
    urls: Vec<String>,
    shared: Arc<Shared>,
    deadline_std: Instant,
    pid: Option<u32>,
) -> Result<Measured, Error> {
    let deadline = tokio::time::Instant::from_std(deadline_std);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);

    let mut tasks = Vec::with_capacity(urls.len());
    for (index, url) in urls.into_iter().enumerate() {
        let (sends, cursor, expect, wait_all_read) = match plan.scenario {
            Scenario::Throughput => {
                let sends: Vec<u64> = if index < plan.senders {
                    (index as u64..plan.messages)
                        .step_by(plan.senders)
                        .collect()
                } else {
                    Vec::new()
                };
                (
                    sends,
                    Some(("ack", plan.cursor_every)),
                    plan.messages,
                    false,
                )
            }
            Scenario::Receipts if index == 0 => {
                ((0..plan.messages).collect(), None, plan.messages, true)
            }
            Scenario::Receipts => (
                Vec::new(),
                Some(("read", plan.cursor_every)),
                plan.messages,
                false,
            ),
            // Storm-like: the first `senders` members post (their own messages come back as
            // `msg` too); the others read everything in batches.
            _ if index < plan.senders => (
                (index as u64..plan.messages)
                    .step_by(plan.senders)
                    .collect(),
                None,
                plan.messages,
                !plan.relay,
            ),
            _ => (
                Vec::new(),
                Some(("read", plan.cursor_every)),
                plan.messages,
                false,
            ),
        };
        let sender = index < plan.senders;
        let role = Role {
            index,
            url,
            sends,
            window: plan.window,
            pace: if plan.scenario == Scenario::Receipts && index == 0 {
                plan.pace
            } else {
                None
            },
            rate: plan
                .rate
                .filter(|_| sender)
                .map(|r| r / plan.senders as f64),
            cursor,
            cursor_period: if sender { None } else { plan.cursor_period },
            expect,
            wait_all_read,
            body: Arc::clone(&plan.body),
            nodelay: plan.nodelay,
        };
        tasks.push(tokio::spawn(run_member(
            role,
            Arc::clone(&shared),
            deadline,
            done_tx.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
            go_rx.clone(),
        )));
    }
    drop(ready_tx);
    drop(done_tx);

    // Every member connected and got `welcome`?
    let mut ready = 0;
    while ready < tasks.len() {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(_))) => ready += 1,
            Ok(Some(Err(e))) => {
                let _ = stop_tx.send(true);
                return Err(e.into());
            }
            Ok(None) | Err(_) => {
                let _ = stop_tx.send(true);
                return Err("members did not connect before the deadline".into());
            }
        }
    }
    // Let the welcome bursts drain before the "before" snapshot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = match admin {
        Some(admin) => blocking_metrics(admin).await?,
        None => Metrics::default(),
    };
    let cpu_before = pid.and_then(server::cpu_seconds);
    let own_cpu_before = server::cpu_seconds(std::process::id());

    let go_at = Instant::now();
    let _ = go_tx.send(true);
    let mut done = 0;
    let mut timed_out = false;
    while done < tasks.len() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(_)) => done += 1,
            Ok(None) => break, // every task ended
            Err(_) => {
                timed_out = true;
                break;
            }
        }
    }
    let active = go_at.elapsed();
    // Two receipt ticks, so the last cursor moves are flushed and their receipts pushed.
    if !timed_out {
        let settle_until = (tokio::time::Instant::now() + plan.settle).min(deadline);
        tokio::time::sleep_until(settle_until).await;
    }
    let cpu_after = pid.and_then(server::cpu_seconds);
    let own_cpu = match (own_cpu_before, server::cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let hwm_kib = pid.and_then(server::rss_kib).map(|(_, hwm)| hwm);
    let after = match admin {
        Some(admin) => blocking_metrics(admin).await?,
        None => Metrics::default(),
    };
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => return Err(format!("member task failed: {e}").into()),
            Err(_) => return Err("a member task did not stop".into()),
        }
    }
    Ok(Measured {
        before,
        after,
        cpu_before,
        cpu_after,
        own_cpu,
        hwm_kib,
        outcomes,
        active,
        timed_out,
    })
}

async fn blocking_metrics(admin: &Admin) -> Result<Metrics, Error> {
    let admin = admin.clone();
    tokio::task::spawn_blocking(move || admin.metrics())
        .await
        .map_err(|e| format!("metrics task: {e}"))?
}

/// Prints the result block; returns whether the run completed cleanly.
fn report(
    plan: &Plan,
    shared: &Shared,
    m: Measured,
    data_before: Option<u64>,
    data_after: Option<u64>,
) -> bool {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let cmdline: Vec<String> = std::env::args().collect();
    let outcomes = &m.outcomes;

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for o in outcomes {
        for (k, v) in &o.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    let lost: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.lost.as_ref().map(|l| format!("member {}: {l}", o.index)))
        .collect();
    let first_error = outcomes.iter().find_map(|o| o.first_error.clone());
    let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();

    let mut sent_lat: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.sent_latency_us.iter().copied())
        .collect();
    sent_lat.sort_unstable();
    let answered = sent_lat.len() as u64;
    let first_send = outcomes.iter().filter_map(|o| o.first_send_us).min();
    let last_sent = outcomes.iter().filter_map(|o| o.last_sent_us).max();
    let send_span_s = match (first_send, last_sent) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };

    let (b, a) = (&m.before, &m.after);
    let flushes = b.delta(a, "rollcall_flushes_total");
    let stored = b.delta(a, "rollcall_messages_stored_total");
    let evictions = b.delta(a, "rollcall_outbound_queue_overflows_total");
    let out_by_type = b.frames_by_type(a, "out");
    let in_by_type = b.frames_by_type(a, "in");
    let out_total: f64 = out_by_type.values().sum();
    let in_total: f64 = in_by_type.values().sum();
    let per = |x: f64, n: f64| if n > 0.0 { x / n } else { f64::NAN };

    println!("=== rollcall loadgen: {:?} ===", plan.scenario);
    println!(
        "machine     : nproc={nproc} MemTotal={mem} loadavg(at end)={}",
        load.trim()
    );
    println!("command     : {}", cmdline.join(" "));
    println!(
        "setup       : members={} online={} senders={} messages={} window={} {}={} body={}B",
        plan.members,
        plan.online,
        plan.senders,
        plan.messages,
        plan.window,
        if plan.scenario == Scenario::Throughput {
            "ack_every"
        } else {
            "read_batch"
        },
        plan.cursor_every,
        plan.body.len()
    );
    println!(
        "run         : active={:.2}s (go → all members done), timed_out={}",
        m.active.as_secs_f64(),
        m.timed_out
    );
    println!(
        "sends       : answered={answered}/{} stored(delta)={stored} duplicates={duplicates}",
        plan.messages
    );
    println!(
        "send→sent   : median={} ms p99={} ms max={} ms",
        fmt_ms(percentile(&sent_lat, 0.5)),
        fmt_ms(percentile(&sent_lat, 0.99)),
        fmt_ms(sent_lat.last().map(|&v| v as f64 / 1000.0))
    );
    let online = plan.online as u32;
    let mut all_delivered: Vec<u64> = (0..plan.messages as usize)
        .filter(|&i| shared.arrivals[i].load(Ordering::Relaxed) >= online)
        .filter_map(|i| {
            let s = shared.sent_at[i].load(Ordering::Relaxed);
            let l = shared.last_arrival[i].load(Ordering::Relaxed);
            (s > 0 && l >= s).then_some(l - s)
        })
        .collect();
    all_delivered.sort_unstable();
    println!(
        "send→msg@all: median={} ms p99={} ms ({} of {} messages reached all {} online sessions)",
        fmt_ms(percentile(&all_delivered, 0.5)),
        fmt_ms(percentile(&all_delivered, 0.99)),
        all_delivered.len(),
        plan.messages,
        plan.online
    );
    println!(
        "metrics Δ   : flushes={flushes} messages/flush={:.1} evictions={evictions}",
        per(stored, flushes)
    );
    println!("frames in Δ : total={in_total} {in_by_type:?}");
    println!("frames out Δ: total={out_total} {out_by_type:?}");

    // Figures shared by every single-group scenario (the JSON line).
    let messages = plan.messages as f64;
    let received: u64 = outcomes.iter().map(|o| o.received).sum();
    let first_send_us = (0..plan.messages as usize)
        .map(|i| shared.sent_at[i].load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .min();
    let last_arrival_us = (0..plan.messages as usize)
        .map(|i| shared.last_arrival[i].load(Ordering::Relaxed))
        .max();
    let delivery_span_s = match (first_send_us, last_arrival_us) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => f64::NAN,
    };
    let msgs_per_s = per(answered as f64, send_span_s);
    let deliveries_per_s = per(received as f64, delivery_span_s);
    let mut all_read: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.all_read_latency_us.iter().copied())
        .collect();
    all_read.sort_unstable();
    let cpu = match (m.cpu_before, m.cpu_after) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let ms = |v: Option<f64>| v.unwrap_or(f64::NAN);
    fig("members", plan.members);
    fig("online", plan.online);
    fig("senders", plan.senders);
    fig("messages", plan.messages);
    if let Some(rate) = plan.rate {
        fig_f("rate", rate);
    } else {
        fig("window", plan.window);
    }
    fig("answered", answered);
    fig_f("msgs_per_s", msgs_per_s);
    fig_f("deliveries_per_s", deliveries_per_s);
    fig_f("sent_p50_ms", ms(percentile(&sent_lat, 0.5)));
    fig_f("sent_p99_ms", ms(percentile(&sent_lat, 0.99)));
    fig_f("sent_max_ms", ms(percentile(&sent_lat, 1.0)));
    fig_f("all_p50_ms", ms(percentile(&all_delivered, 0.5)));
    fig_f("all_p99_ms", ms(percentile(&all_delivered, 0.99)));
    fig_f("all_max_ms", ms(percentile(&all_delivered, 1.0)));
    fig("reached_all", all_delivered.len());
    if !plan.relay {
        let receipts = b.delta(a, "rollcall_receipt_frames_sent_total");
        fig_f("frames_in_per_msg", per(in_total, stored));
        fig_f("frames_out_per_msg", per(out_total, stored));
        fig_f("receipt_frames_per_msg", per(receipts, stored));
        fig_f("msgs_per_flush", per(stored, flushes));
        fig_f(
            "body_bytes_stored_per_msg",
            per(b.delta(a, "rollcall_message_bytes_stored_total"), stored),
        );
        if let (Some(x), Some(y)) = (data_before, data_after) {
            fig_f("disk_growth_per_msg", per(y as f64 - x as f64, stored));
        }
        fig("evictions", evictions);
        let durable_n = b.delta(a, "rollcall_send_durable_seconds_count");
        fig_f(
            "send_durable_mean_ms",
            1000.0 * per(b.delta(a, "rollcall_send_durable_seconds_sum"), durable_n),
        );
        fig_f("read_all_p50_ms", ms(percentile(&all_read, 0.5)));
        fig_f("read_all_p99_ms", ms(percentile(&all_read, 0.99)));
        fig("read_all_n", all_read.len());
    }
    fig_f("server_cpu_s", cpu);
    fig_f("server_cpu_s_per_1k_msgs", 1000.0 * per(cpu, messages));
    fig_f("loadgen_cpu_s", m.own_cpu);
    fig_f(
        "server_cpu_us_per_delivery",
        1e6 * per(cpu, received as f64),
    );
    if let Some(hwm) = m.hwm_kib {
        fig_f("server_peak_rss_mib", hwm as f64 / 1024.0);
        fig_f(
            "server_peak_rss_mib_per_1k_msgs",
            1000.0 * per(hwm as f64 / 1024.0, messages),
        );
    }
    if matches!(
        plan.scenario,
        Scenario::Storm | Scenario::Ceiling | Scenario::Fanout
    ) {
        println!(
            "--- result ({}) ---",
            if plan.relay { "bare relay" } else { "storm" }
        );
        println!(
            "posted msgs/s (durable)   : {msgs_per_s:.0} ({answered} answered over {send_span_s:.2} s, first send → last answer){}",
            plan.rate.map_or(String::new(), |r| format!(" at --rate {r}"))
        );
        println!(
            "deliveries/s              : {deliveries_per_s:.0} ({received} msg frames received over {delivery_span_s:.2} s, first send → last arrival)"
        );
        println!(
            "send→sent                 : p50 {} / p99 {} / max {} ms",
            fmt_ms(percentile(&sent_lat, 0.5)),
            fmt_ms(percentile(&sent_lat, 0.99)),
            fmt_ms(percentile(&sent_lat, 1.0))
        );
        println!(
            "send→received by all {:<4} : p50 {} / p99 {} / max {} ms",
            plan.online,
            fmt_ms(percentile(&all_delivered, 0.5)),
            fmt_ms(percentile(&all_delivered, 0.99)),
            fmt_ms(percentile(&all_delivered, 1.0))
        );
        if !plan.relay {
            println!(
                "send→read count {}        : p50 {} / p99 {} ms ({} messages; receipt tick {} ms)",
                shared.readers,
                fmt_ms(percentile(&all_read, 0.5)),
                fmt_ms(percentile(&all_read, 0.99)),
                all_read.len(),
                plan.settle.as_millis().saturating_sub(200) / 2
            );
            println!(
                "server frames per message : out {:.2}, in {:.2}, receipt {:.4}; messages/flush {:.1}",
                per(out_total, stored),
                per(in_total, stored),
                per(b.delta(a, "rollcall_receipt_frames_sent_total"), stored),
                per(stored, flushes)
            );
        }
        println!(
            "server CPU                : {cpu:.2} s ({:.3} s per 1,000 messages, {:.2} µs per delivery); peak RSS {}",
            1000.0 * per(cpu, messages),
            1e6 * per(cpu, received as f64),
            m.hwm_kib
                .map_or("n/a".into(), |h| format!("{:.1} MiB", h as f64 / 1024.0))
        );
        println!(
            "loadgen CPU (the clients) : {:.2} s over the same span",
            m.own_cpu
        );
    }

    match plan.scenario {
        Scenario::Throughput => {
            let sends_per_s = if send_span_s > 0.0 {
                answered as f64 / send_span_s
            } else {
                f64::NAN
            };
            println!("--- result ---");
            println!("sends/s                 : {sends_per_s:.0} (sent replies over {send_span_s:.2} s, first send → last sent)");
            println!(
                "send→sent latency       : median {} ms, p99 {} ms",
                fmt_ms(percentile(&sent_lat, 0.5)),
                fmt_ms(percentile(&sent_lat, 0.99))
            );
            println!(
                "send→delivered-to-all   : median {} ms",
                fmt_ms(percentile(&all_delivered, 0.5))
            );
            println!(
                "flushes / messages/flush: {flushes} / {:.1}",
                per(stored, flushes)
            );
            println!(
                "frames out per message  : {:.2} (msg {:.2}, sent {:.2}, receipt {:.4})",
                per(out_total, stored),
                per(b.frames(a, "out", "msg"), stored),
                per(b.frames(a, "out", "sent"), stored),
                per(b.frames(a, "out", "receipt"), stored)
            );
            println!(
                "frames in per message   : {:.2} (send {:.2}, ack {:.2})",
                per(in_total, stored),
                per(b.frames(a, "in", "send"), stored),
                per(b.frames(a, "in", "ack"), stored)
            );
        }
        Scenario::Receipts => {
            let n = plan.messages as f64;
            let readers = (plan.online - 1) as f64;
            let fin =
                b.frames(a, "in", "send") + b.frames(a, "in", "ack") + b.frames(a, "in", "read");
            let fout = b.frames(a, "out", "sent")
                + b.frames(a, "out", "msg")
                + b.frames(a, "out", "receipt")
                + b.frames(a, "out", "read_sync");
            let receipts = b.frames(a, "out", "receipt");
            let msg_out = b.frames(a, "out", "msg");
            let cursor_in = b.frames(a, "in", "ack") + b.frames(a, "in", "read");
            let mut all_read: Vec<u64> = outcomes
                .iter()
                .flat_map(|o| o.all_read_latency_us.iter().copied())
                .collect();
            all_read.sort_unstable();
            let sender_receipts = outcomes.first().map_or(0, |o| o.receipt_frames);
            // Reader pushes only: the sender's own session also gets each msg (1 per message).
            let reader_msgs = msg_out - n;
            let comparable = reader_msgs + cursor_in + receipts;
            let naive = 3.0 * readers;
            let member_bytes = plan.members as f64 * 25.0;
            println!("--- result (per posted message, M={}) ---", plan.messages);
            println!(
                "frames received by server (send+ack/read)       : {:.2}  (send {:.2}, ack/read {:.2})",
                fin / n,
                b.frames(a, "in", "send") / n,
                cursor_in / n
            );
            println!(
                "frames sent by server (sent+msg+receipt+read_sync): {:.2}  (sent {:.2}, msg {:.2}, receipt {:.4}, read_sync {:.2})",
                fout / n,
                b.frames(a, "out", "sent") / n,
                msg_out / n,
                receipts / n,
                b.frames(a, "out", "read_sync") / n
            );
            println!(
                "receipt frames only                             : {:.4}  ({receipts} in all; sender saw {sender_receipts})",
                receipts / n
            );
            println!(
                "naive design (push+ack+receipt per reader)      : {naive:.0} frames  ({readers} pushes + {readers} acks + {readers} receipts); {readers} stored receipt rows"
            );
            println!(
                "rollcall, same count (reader msg+read+receipt)  : {:.2} frames  ({:.1}% of naive); 0 stored receipt rows",
                comparable / n,
                100.0 * comparable / n / naive
            );
            println!(
                "send → receipt with all {readers} read          : median {} ms, p99 {} ms ({} messages)",
                fmt_ms(percentile(&all_read, 0.5)),
                fmt_ms(percentile(&all_read, 0.99)),
                all_read.len()
            );
            println!(
                "receipt storage: no per-message receipt data; member records {} x 25 B = {member_bytes:.0} B per group → {:.1} B per message at M={} (fixed per member, independent of how many read)",
                plan.members,
                member_bytes / n,
                plan.messages
            );
            if let (Some(x), Some(y)) = (data_before, data_after) {
                println!(
                    "data dir size: before {x} B, after {y} B (sled preallocates segments; Δ {} B)",
                    y as i64 - x as i64
                );
            }
        }
        _ => {}
    }

    if !errors.is_empty() {
        println!(
            "errors      : {errors:?} first: {}",
            first_error.unwrap_or_default()
        );
    }
    if !lost.is_empty() {
        println!("members not done or connection lost ({}):", lost.len());
        for l in lost.iter().take(10) {
            println!("  {l}");
        }
    }
    let clean = !m.timed_out && lost.is_empty() && errors.is_empty() && answered == plan.messages;
    println!("status      : {}", if clean { "ok" } else { "INCOMPLETE" });
    fig("clean", clean);
    clean
}

// ---------------------------------------------------------------------------------------------
// Scenario `groups`: many groups, a few pipelined senders, then a reconnect storm.

mod groups {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Who is in which group. Deterministic, so `--phase welcome` knows what `--phase load` made.
    struct Layout {
        prefix: String,
        groups: usize,
        members: usize,
        users: usize,
        senders: usize,
        messages: u64,
    }

    impl Layout {
        fn user(&self, u: usize) -> String {
            format!("{}-u{u:04}", self.prefix)
        }

        fn group(&self, g: usize) -> String {
            format!("{}-g{g:05}", self.prefix)
        }

        fn group_prefix(&self) -> String {
            format!("{}-g", self.prefix)
        }

        /// The member (a pool index) that posts group `g`'s messages.
        fn sender_of(&self, g: usize) -> usize {
            g % self.senders
        }

        /// Group `g`'s members (pool indexes, sorted): its sender plus `members - 1` others drawn
        /// from the pool by a partial shuffle seeded with `g`.
        fn members_of(&self, g: usize) -> Vec<usize> {
            let sender = self.sender_of(g);
            let mut pool: Vec<usize> = (0..self.users).filter(|&u| u != sender).collect();
            let mut state = (g as u64).wrapping_add(0x5EED);
            let mut chosen = vec![sender];
            for k in 0..self.members - 1 {
                let j = k + (splitmix64(&mut state) % (pool.len() - k) as u64) as usize;
                pool.swap(k, j);
                chosen.push(pool[k]);
            }
            chosen.sort_unstable();
            chosen
        }

        /// How many groups each pool user belongs to.
        fn groups_per_user(&self) -> Vec<usize> {
            let mut counts = vec![0; self.users];
            for g in 0..self.groups {
                for u in self.members_of(g) {
                    counts[u] += 1;
                }
            }
            counts
        }
    }

    fn splitmix64(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    // -- server memory and disk ------------------------------------------------------------

    fn read_rss(pid: u32) -> Option<(u64, u64)> {
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

    /// Prints the server's VmRSS and VmHWM (when `--server-pid` was given).
    fn print_rss(pid: Option<u32>, label: &str) {
        let Some(pid) = pid else { return };
        match read_rss(pid) {
            Some((rss, hwm)) => println!(
                "rss {label:<24}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
            None => println!("rss {label:<24}: /proc/{pid}/status unreadable"),
        }
    }

    fn print_disk(dir: Option<&Path>, label: &str) -> Option<u64> {
        let bytes = dir.map(dir_bytes)?;
        println!(
            "disk {label:<23}: {bytes} B ({:.1} MiB)",
            bytes as f64 / 1048576.0
        );
        Some(bytes)
    }

    // -- setup over HTTP -------------------------------------------------------------------

    /// Creates every group (with its members) from `threads` parallel admin connections.
    fn create_groups(
        admin: &Admin,
        layout: &Layout,
        threads: usize,
        deadline: Instant,
    ) -> Result<(), Error> {
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| -> Result<(), Error> {
                        loop {
                            let g = next.fetch_add(1, Ordering::Relaxed);
                            if g >= layout.groups {
                                return Ok(());
                            }
                            if Instant::now() > deadline {
                                next.store(layout.groups, Ordering::Relaxed);
                                return Err("deadline reached while creating groups".into());
                            }
                            let members: Vec<String> = layout
                                .members_of(g)
                                .into_iter()
                                .map(|u| layout.user(u))
                                .collect();
                            let body = json!({"id": layout.group(g), "members": members});
                            if let Err(e) = admin.post("/api/groups", body) {
                                next.store(layout.groups, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    })
                })
                .collect();
            let mut result = Ok(());
            for w in workers {
                let r = w.join().map_err(|_| "a group-creating thread panicked")?;
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    /// A WebSocket URL (with a fresh token) for each pool user in `users`.
    fn ws_urls(
        admin: &Admin,
        layout: &Layout,
        users: impl Iterator<Item = usize>,
        deadline: Instant,
    ) -> Result<Vec<String>, Error> {
        let mut urls = Vec::new();
        for u in users {
            if Instant::now() > deadline {
                return Err("deadline reached while minting tokens".into());
            }
            let answer = admin.post(&format!("/api/users/{}/tokens", layout.user(u)), json!({}))?;
            let token = answer["token"].as_str().ok_or("no token in answer")?;
            urls.push(admin.ws_url(token));
        }
        Ok(urls)
    }

    /// Connects and reads up to the `welcome` frame (returned as text).
    async fn connect_welcome(
        url: &str,
        nodelay: bool,
        deadline: tokio::time::Instant,
    ) -> Result<(Ws, String), String> {
        let connect = tokio::time::timeout_at(
            deadline,
            tokio_tungstenite::connect_async_with_config(url, None, nodelay),
        );
        let mut ws = match connect.await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Err(_) => return Err("connect timed out".into()),
        };
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if text.as_str().contains("\"type\":\"welcome\"") {
                        return Ok((ws, text.as_str().to_owned()));
                    }
                }
                Ok(Some(Ok(_))) => {}
                Err(_) => return Err("no welcome: timed out".into()),
                Ok(None) => return Err("no welcome: closed".into()),
                Ok(Some(Err(e))) => return Err(format!("no welcome: {e}")),
            }
        }
    }

    // -- posting ---------------------------------------------------------------------------

    struct Sender {
        index: usize,
        url: String,
        /// (group index, round) in sending order; the `client_id` is `m<round>`.
        sends: Vec<(u32, u32)>,
        window: usize,
        body: Arc<str>,
        nodelay: bool,
    }

    #[derive(Default)]
    struct SenderOutcome {
        index: usize,
        answered: u64,
        stored: u64,
        duplicates: u64,
        latency_us: Vec<u64>,
        first_send: Option<Instant>,
        last_sent: Option<Instant>,
        msgs: u64,
        errors: BTreeMap<String, u64>,
        first_error: Option<String>,
        lost: Option<String>,
        done: bool,
    }

    struct Channels {
        ready_tx: mpsc::UnboundedSender<Result<usize, String>>,
        go: watch::Receiver<bool>,
        done_tx: mpsc::UnboundedSender<usize>,
        stop: watch::Receiver<bool>,
    }

    async fn run_sender(
        s: Sender,
        group_ids: Arc<Vec<String>>,
        deadline: tokio::time::Instant,
        mut ch: Channels,
    ) -> SenderOutcome {
        let mut out = SenderOutcome {
            index: s.index,
            ..SenderOutcome::default()
        };
        let ws = match connect_welcome(&s.url, s.nodelay, deadline).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                let _ = ch.ready_tx.send(Err(format!("sender {}: {e}", s.index)));
                return out;
            }
        };
        let (mut sink, mut stream) = ws.split();
        let _ = ch.ready_tx.send(Ok(s.index));
        while !*ch.go.borrow() {
            match tokio::time::timeout_at(deadline, ch.go.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return out,
            }
        }

        let total = s.sends.len() as u64;
        let mut next = 0usize;
        let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(s.window * 2);
        loop {
            // 1. Fill the window, across as many groups as it spans.
            let mut fed = 0;
            while next < s.sends.len() && in_flight.len() < s.window && out.lost.is_none() {
                let (g, round) = s.sends[next];
                let frame = json!({
                    "type": "send", "id": next, "group": &group_ids[g as usize],
                    "client_id": format!("m{round}"), "body": &*s.body,
                });
                let now = Instant::now();
                out.first_send.get_or_insert(now);
                in_flight.insert(next as u64, now);
                if let Err(e) = sink.feed(Message::text(frame.to_string())).await {
                    out.lost = Some(format!("write: {e}"));
                    break;
                }
                next += 1;
                fed += 1;
            }
            if fed > 0 {
                if let Err(e) = sink.flush().await {
                    out.lost.get_or_insert(format!("flush: {e}"));
                }
            }
            // 2. Done? (Keep reading pushes until told to stop.)
            if !out.done && (out.answered == total || out.lost.is_some()) {
                out.done = true;
                let _ = ch.done_tx.send(s.index);
            }
            // 3. The next frame.
            let frame = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ch.stop.changed() => break,
                frame = stream.next() => frame,
            };
            let text = match frame_text(frame, &mut out.lost, out.done) {
                Read::Text(text) => text,
                Read::Skip => continue,
                Read::Stop => break,
            };
            let Some(f) = parse_frame(&text, &mut out.errors, &mut out.first_error) else {
                continue;
            };
            match f.kind {
                "sent" => {
                    let Some(id) = f.id else { continue };
                    if let Some(at) = in_flight.remove(&id) {
                        out.answered += 1;
                        out.latency_us
                            .push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
                        out.last_sent = Some(Instant::now());
                        if text.as_str().contains("\"duplicate\":true") {
                            out.duplicates += 1;
                        } else {
                            out.stored += 1;
                        }
                    }
                }
                "msg" => out.msgs += 1,
                "error" => {
                    let code = f.code.unwrap_or("?").to_string();
                    if out.first_error.is_none() {
                        out.first_error =
                            Some(format!("{code}: {}", f.message.clone().unwrap_or_default()));
                    }
                    *out.errors.entry(code).or_default() += 1;
                    if let Some(id) = f.id {
                        if in_flight.remove(&id).is_some() {
                            out.answered += 1; // refused: answered, counted as an error
                        }
                    }
                }
                _ => {}
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        if !out.done {
            out.lost
                .get_or_insert("deadline reached before done".into());
        }
        out
    }

    /// Connects the senders, posts every message, returns what each sender saw, the time from
    /// "go" until all were done, and whether the deadline cut the run short.
    async fn post_all(
        layout: &Layout,
        urls: Vec<String>,
        window: usize,
        body: Arc<str>,
        nodelay: bool,
        deadline: tokio::time::Instant,
    ) -> Result<(Vec<SenderOutcome>, Duration, bool), Error> {
        let group_ids: Arc<Vec<String>> =
            Arc::new((0..layout.groups).map(|g| layout.group(g)).collect());
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (go_tx, go_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (index, url) in urls.into_iter().enumerate() {
            // Round-robin: round r of every group of this sender, then round r + 1.
            let mine: Vec<u32> = (index..layout.groups)
                .step_by(layout.senders)
                .map(|g| g as u32)
                .collect();
            let sends: Vec<(u32, u32)> = (0..layout.messages as u32)
                .flat_map(|r| mine.iter().map(move |&g| (g, r)))
                .collect();
            let sender = Sender {
                index,
                url,
                sends,
                window,
                body: Arc::clone(&body),
                nodelay,
            };
            let ch = Channels {
                ready_tx: ready_tx.clone(),
                go: go_rx.clone(),
                done_tx: done_tx.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(run_sender(
                sender,
                Arc::clone(&group_ids),
                deadline,
                ch,
            )));
        }
        drop(ready_tx);
        drop(done_tx);
        let mut ready = 0;
        while ready < tasks.len() {
            match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
                Ok(Some(Ok(_))) => ready += 1,
                Ok(Some(Err(e))) => {
                    let _ = stop_tx.send(true);
                    return Err(e.into());
                }
                Ok(None) | Err(_) => {
                    let _ = stop_tx.send(true);
                    return Err("senders did not connect before the deadline".into());
                }
            }
        }
        let go_at = Instant::now();
        let _ = go_tx.send(true);
        let mut done = 0;
        let mut timed_out = false;
        while done < tasks.len() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(_)) => done += 1,
                Ok(None) => break,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        let active = go_at.elapsed();
        let _ = stop_tx.send(true);
        let mut outcomes = Vec::new();
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(o)) => outcomes.push(o),
                Ok(Err(e)) => return Err(format!("sender task failed: {e}").into()),
                Err(_) => return Err("a sender task did not stop".into()),
            }
        }
        Ok((outcomes, active, timed_out))
    }

    // -- the reconnect storm ---------------------------------------------------------------

    #[derive(Deserialize)]
    struct Welcome {
        groups: Vec<WelcomeGroup>,
    }

    #[derive(Deserialize)]
    struct WelcomeGroup {
        group: String,
        last_seq: u64,
    }

    struct Welcomed {
        user: usize,
        /// From "go" until this user's `welcome` arrived.
        at: Duration,
        /// (group, last_seq) of every group listed.
        groups: Vec<(String, u64)>,
    }

    /// Every URL connects at once; answers each user's `welcome` in arrival order, then keeps
    /// the connections open until `stop`.
    async fn storm_user(
        user: usize,
        url: String,
        nodelay: bool,
        deadline: tokio::time::Instant,
        mut go: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
        tx: mpsc::UnboundedSender<Result<Welcomed, String>>,
    ) {
        while !*go.borrow() {
            match tokio::time::timeout_at(deadline, go.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
        let go_at = Instant::now();
        let mut ws = match connect_welcome(&url, nodelay, deadline).await {
            Ok((ws, text)) => {
                let at = go_at.elapsed();
                let parsed = serde_json::from_str::<Welcome>(&text)
                    .map(|w| Welcomed {
                        user,
                        at,
                        groups: w
                            .groups
                            .into_iter()
                            .map(|g| (g.group, g.last_seq))
                            .collect(),
                    })
                    .map_err(|e| format!("user {user}: bad welcome: {e}"));
                let _ = tx.send(parsed);
                ws
            }
            Err(e) => {
                let _ = tx.send(Err(format!("user {user}: {e}")));
                return;
            }
        };
        // Hold the session (reading, so pings are answered) until told to stop.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => break,
                frame = ws.next() => if !matches!(frame, Some(Ok(_))) { return },
            }
        }
        let _ = ws.close(None).await;
    }

    struct Storm {
        welcomed: Vec<Welcomed>,
        errors: Vec<String>,
        /// From "go" until the last `welcome` (or the deadline).
        span: Duration,
        /// Metrics and RSS taken while every session is still open.
        during: Option<Metrics>,
    }

    async fn storm(
        admin: &Admin,
        urls: Vec<String>,
        nodelay: bool,
        deadline: tokio::time::Instant,
        pid: Option<u32>,
    ) -> Result<Storm, Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (go_tx, go_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let n = urls.len();
        let mut tasks = Vec::with_capacity(n);
        for (user, url) in urls.into_iter().enumerate() {
            tasks.push(tokio::spawn(storm_user(
                user,
                url,
                nodelay,
                deadline,
                go_rx.clone(),
                stop_rx.clone(),
                tx.clone(),
            )));
        }
        drop(tx);
        // Let every task reach its "go" wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let go_at = Instant::now();
        let _ = go_tx.send(true);
        let mut welcomed = Vec::with_capacity(n);
        let mut errors = Vec::new();
        while welcomed.len() + errors.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Ok(w))) => welcomed.push(w),
                Ok(Some(Err(e))) => errors.push(e),
                Ok(None) => break,
                Err(_) => {
                    errors.push(format!(
                        "deadline: {} of {n} welcomes arrived",
                        welcomed.len()
                    ));
                    break;
                }
            }
        }
        let span = welcomed
            .iter()
            .map(|w| w.at)
            .max()
            .unwrap_or_else(|| go_at.elapsed());
        print_rss(pid, "after welcome storm");
        let during = blocking_metrics(admin).await.ok();
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        Ok(Storm {
            welcomed,
            errors,
            span,
            during,
        })
    }

    // -- the run ---------------------------------------------------------------------------

    fn valid_prefix(prefix: &str) -> bool {
        !prefix.is_empty()
            && prefix.len() <= 40
            && !prefix.starts_with("dm:")
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
    }

    pub(super) fn run(args: &Args) -> Result<bool, Error> {
        let layout = Layout {
            prefix: args.prefix.clone(),
            groups: args.groups,
            members: args.members.unwrap_or(20),
            users: args.users,
            senders: args.senders.unwrap_or(4),
            messages: args.messages.unwrap_or(100),
        };
        if !valid_prefix(&layout.prefix) {
            return Err("--prefix: 1-40 characters from A-Z a-z 0-9 _ . @ -".into());
        }
        if layout.groups == 0
            || layout.members == 0
            || layout.senders == 0
            || layout.members > layout.users
            || layout.senders > layout.users
            || layout.senders > layout.groups
            || layout.groups > 99_999
            || layout.users > 9_999
            || layout.messages == 0
            || layout.messages > u64::from(u32::MAX)
            || args.window == 0
        {
            return Err(format!(
                "need 0 < groups ({}) <= 99,999, 0 < members ({}) <= users ({}) <= 9,999, \
                 0 < senders ({}) <= min(users, groups), messages and window > 0",
                layout.groups, layout.members, layout.users, layout.senders
            )
            .into());
        }
        let admin = args.admin()?;
        let deadline_std = Instant::now() + Duration::from_secs(args.deadline_secs);
        let deadline = tokio::time::Instant::from_std(deadline_std);
        let body: Arc<str> = "x".repeat(args.body_bytes.unwrap_or(200)).into();
        let nodelay = !args.client_nagle;
        let pid = args.server_pid;
        let data_dir = args.data_dir.as_deref();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;

        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cmdline: Vec<String> = std::env::args().collect();
        println!("=== rollcall loadgen: Groups ({:?}) ===", args.phase);
        println!("machine     : nproc={nproc}");
        println!("command     : {}", cmdline.join(" "));
        println!(
            "setup       : groups={} members/group={} users={} senders={} messages/group={} \
             (total {}) window/sender={} body={}B prefix={}",
            layout.groups,
            layout.members,
            layout.users,
            layout.senders,
            layout.messages,
            layout.groups as u64 * layout.messages,
            args.window,
            body.len(),
            layout.prefix
        );
        let mut clean = true;

        if args.phase != Phase::Welcome {
            print_rss(pid, "at start");
            print_disk(data_dir, "at start");
            let t = Instant::now();
            create_groups(&admin, &layout, args.create_threads, deadline_std)?;
            let took = t.elapsed().as_secs_f64();
            println!(
                "create      : {} groups x {} members in {took:.2} s ({:.0} groups/s, {} threads)",
                layout.groups,
                layout.members,
                layout.groups as f64 / took,
                args.create_threads
            );
            let before = admin.metrics()?;
            print_rss(pid, "after group creation");
            let disk_before = print_disk(data_dir, "after group creation");
            let urls = ws_urls(&admin, &layout, 0..layout.senders, deadline_std)?;
            let (outcomes, active, timed_out) = runtime.block_on(post_all(
                &layout,
                urls,
                args.window,
                Arc::clone(&body),
                nodelay,
                deadline,
            ))?;
            let after = admin.metrics()?;
            print_rss(pid, "after posting");
            let disk_after = print_disk(data_dir, "after posting");
            clean &= report_load(
                &layout,
                &outcomes,
                active,
                timed_out,
                &before,
                &after,
                disk_before,
                disk_after,
            );
        }

        if args.phase != Phase::Load {
            let before = admin.metrics()?;
            print_rss(pid, "before welcome storm");
            if args.phase == Phase::Welcome {
                print_disk(data_dir, "before welcome storm");
            }
            let t = Instant::now();
            let urls = ws_urls(&admin, &layout, 0..layout.users, deadline_std)?;
            println!(
                "tokens      : {} minted in {:.2} s (before the storm, not timed)",
                urls.len(),
                t.elapsed().as_secs_f64()
            );
            let storm = runtime.block_on(storm(&admin, urls, nodelay, deadline, pid))?;
            clean &= report_storm(&layout, &storm, &before);
        }
        println!("status      : {}", if clean { "ok" } else { "INCOMPLETE" });
        Ok(clean)
    }

    #[allow(clippy::too_many_arguments)]
    fn report_load(
        layout: &Layout,
        outcomes: &[SenderOutcome],
        active: Duration,
        timed_out: bool,
        b: &Metrics,
        a: &Metrics,
        disk_before: Option<u64>,
        disk_after: Option<u64>,
    ) -> bool {
        let expected = layout.groups as u64 * layout.messages;
        let answered: u64 = outcomes.iter().map(|o| o.answered).sum();
        let stored_replies: u64 = outcomes.iter().map(|o| o.stored).sum();
        let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();
        let msgs: u64 = outcomes.iter().map(|o| o.msgs).sum();
        let mut lat: Vec<u64> = outcomes
            .iter()
            .flat_map(|o| o.latency_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let first = outcomes.iter().filter_map(|o| o.first_send).min();
        let last = outcomes.iter().filter_map(|o| o.last_sent).max();
        let span = match (first, last) {
            (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for o in outcomes {
            for (k, v) in &o.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
        }
        let lost: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.lost.as_ref().map(|l| format!("sender {}: {l}", o.index)))
            .collect();
        let stored = b.delta(a, "rollcall_messages_stored_total");
        let flushes = b.delta(a, "rollcall_flushes_total");
        let out_total: f64 = b.frames_by_type(a, "out").values().sum();
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { f64::NAN };
        println!(
            "post        : active={:.2}s (go → all senders done), timed_out={timed_out}",
            active.as_secs_f64()
        );
        println!(
            "sends       : answered={answered}/{expected} stored(sent replies)={stored_replies} \
             stored(metrics Δ)={stored} duplicates={duplicates}"
        );
        println!(
            "metrics Δ   : flushes={flushes} messages/flush={:.1} evictions={} frames out={out_total} \
             ({:.2}/message; senders received {msgs} msg pushes)",
            per(stored, flushes),
            b.delta(a, "rollcall_outbound_queue_overflows_total"),
            per(out_total, stored)
        );
        println!(
            "groups      : {} group actors running",
            a.get("rollcall_groups_loaded")
        );
        fig("groups", layout.groups);
        fig("messages", expected);
        fig("answered", answered);
        fig_f("msgs_per_s", per(answered as f64, span));
        fig_f("sent_p50_ms", percentile(&lat, 0.5).unwrap_or(f64::NAN));
        fig_f("sent_p99_ms", percentile(&lat, 0.99).unwrap_or(f64::NAN));
        fig_f("sent_max_ms", percentile(&lat, 1.0).unwrap_or(f64::NAN));
        fig_f("msgs_per_flush", per(stored, flushes));
        if let (Some(_), Some(y)) = (disk_before, disk_after) {
            fig_f("disk_per_msg", per(y as f64, stored));
        }
        println!("--- result (load) ---");
        println!(
            "sends/s             : {:.0} ({answered} sent replies over {span:.2} s, first send → last sent)",
            per(answered as f64, span)
        );
        println!(
            "send→sent latency   : median {} ms, p99 {} ms, max {} ms",
            fmt_ms(percentile(&lat, 0.5)),
            fmt_ms(percentile(&lat, 0.99)),
            fmt_ms(lat.last().map(|&v| v as f64 / 1000.0))
        );
        if let (Some(x), Some(y)) = (disk_before, disk_after) {
            println!(
                "disk per message    : {:.0} B total ({y} B / {stored} messages); Δ while posting {:.0} B ({} B)",
                per(y as f64, stored),
                per(y as f64 - x as f64, stored),
                y as i64 - x as i64
            );
        }
        if !errors.is_empty() {
            let first = outcomes.iter().find_map(|o| o.first_error.clone());
            println!(
                "errors      : {errors:?} first: {}",
                first.unwrap_or_default()
            );
        }
        for l in &lost {
            println!("  {l}");
        }
        !timed_out && lost.is_empty() && errors.is_empty() && answered == expected
    }

    fn report_storm(layout: &Layout, storm: &Storm, before: &Metrics) -> bool {
        let expected_groups = layout.groups_per_user();
        let prefix = layout.group_prefix();
        let mut ats: Vec<u64> = storm
            .welcomed
            .iter()
            .map(|w| u64::try_from(w.at.as_micros()).unwrap_or(u64::MAX))
            .collect();
        ats.sort_unstable();
        let mut heads: BTreeMap<&str, u64> = BTreeMap::new();
        let mut listed = 0usize;
        let mut wrong = Vec::new();
        for w in &storm.welcomed {
            let mine: Vec<&(String, u64)> = w
                .groups
                .iter()
                .filter(|(g, _)| g.starts_with(&prefix))
                .collect();
            listed += mine.len();
            if mine.len() != expected_groups[w.user] {
                wrong.push(format!(
                    "user {}: welcome lists {} of its {} groups",
                    w.user,
                    mine.len(),
                    expected_groups[w.user]
                ));
            }
            for (g, seq) in mine {
                heads.insert(g.as_str(), *seq);
            }
        }
        let in_groups: u64 = heads.values().sum();
        let expected_messages = layout.groups as u64 * layout.messages;
        println!(
            "storm       : {} of {} users welcomed; {} group entries listed (expected {})",
            storm.welcomed.len(),
            layout.users,
            listed,
            expected_groups.iter().sum::<usize>()
        );
        println!(
            "welcomes    : {} distinct groups, Σ last_seq = {in_groups} messages (after a full load: {expected_messages})",
            heads.len()
        );
        if let Some(d) = &storm.during {
            println!(
                "metrics     : group actors running {} → {}, sessions {} → {}, welcome frames Δ {}",
                before.get("rollcall_groups_loaded"),
                d.get("rollcall_groups_loaded"),
                before.get("rollcall_sessions"),
                d.get("rollcall_sessions"),
                before.frames(d, "out", "welcome")
            );
        }
        println!("--- result (welcome storm) ---");
        println!(
            "all welcomes in     : {:.3} s ({} users connecting at once; go → last welcome)",
            storm.span.as_secs_f64(),
            storm.welcomed.len()
        );
        println!(
            "welcome arrival     : median {} ms, p99 {} ms after go",
            fmt_ms(percentile(&ats, 0.5)),
            fmt_ms(percentile(&ats, 0.99))
        );
        for e in storm.errors.iter().chain(wrong.iter()).take(10) {
            println!("  {e}");
        }
        storm.errors.is_empty() && wrong.is_empty() && storm.welcomed.len() == layout.users
    }
}
