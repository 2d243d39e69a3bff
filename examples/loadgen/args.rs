//! The command line: the scenarios, the flags (their doc comments are `--help`) and the `Plan`
//! every single-group run (storm, throughput, receipts, and the storms inside fanout and
//! ceiling) resolves its optional flags to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::admin::Admin;
use crate::Error;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
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
    /// One message to a large group that nobody reads, then `remind`: time until every online
    /// non-reader got its `reminder`, and the server's CPU for it.
    Remind,
    /// Presence (docs/PROTOCOL.md §3.6): `--connections` (10,000) users in groups of
    /// `--members` (20), all connected: presence frames per connect and per disconnect, then a
    /// restart and a mass reconnect (time, presence frames, server CPU), and RSS.
    Presence,
    /// Typing: one group of `--members` (500), all online, `--senders` (100) of them sending
    /// `typing` every `--typing-ms` (300): frames forwarded and dropped, CPU per frame.
    Typing,
    /// Passivation: `--groups` (100,000) groups of two members, each used once by one `send`,
    /// then idle: the server's RSS empty, while the groups are loaded and after every actor
    /// stopped (`--group-idle-secs`, 5), against the target of empty + 64 MiB + sled's cache.
    Passivate,
    /// One group with `--messages` (1,000,000): after each of `--restarts` (5) restarts, the
    /// first `send` → `sent` (the actor starts from the store on that path) and the RSS after
    /// it, against the same for a group of `--baseline-messages` (1,000).
    Biggroup,
    /// Online backups under sends: one group of `--senders` (4) posting `--messages` (20,000)
    /// once without and once with `POST /api/backup` back to back: send → `sent` latency of
    /// both, and each backup's `longest_pause_ms` (one group's writes waiting for its copy).
    Backup,
    /// One user in `--groups` (5,000) groups, each with a message: the `welcome` frame's size
    /// and time with the server's `--welcome-groups` (200) and with `--welcome-groups N` (all),
    /// then every group paged with `groups` (`--groups-page`, 500).
    Welcome,
    /// Older scenario: one group, every member online, several closed-loop senders.
    Throughput,
    /// Older scenario: the receipt-traffic count with a paced sender (see `storm --rate`).
    Receipts,
    /// Internal: serve the bare relay (`ceiling` starts this as a separate process).
    #[value(hide = true)]
    Relay,
}

/// A group's receipt policy (docs/PROTOCOL.md §4.1), as the storm creates its group with it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Receipts {
    /// Receipt pushes, pulls and `readers` (the server's default).
    Full,
    /// Counts only: no `readers`, `reminded` without `users`.
    Counts,
    /// No receipt frames at all.
    Off,
}

impl Receipts {
    /// The policy's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Receipts::Full => "full",
            Receipts::Counts => "counts",
            Receipts::Off => "off",
        }
    }
}

/// How the `remind` scenario puts its members into the group.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MembersVia {
    /// One `POST /api/groups` with every member.
    Post,
    /// `POST /api/groups` with the sender, then one `PUT …/members/{uid}` per member, in parallel.
    Put,
}

/// How the `presence` scenario lays its groups over the users.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// Group g is users [g·m, (g+1)·m): every user in one group, with m − 1 others.
    Disjoint,
    /// Group g is users [g·m/2, g·m/2 + m) (mod the users): every user in two groups, which
    /// share half their members, so with 1.5·m − 1 others.
    Ring,
}

/// What the `groups` scenario runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
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
pub struct Args {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario_arg: Option<Scenario>,
    /// The same, in the older spelling (`--scenario throughput`).
    #[arg(long = "scenario", value_enum, hide = true)]
    pub scenario_flag: Option<Scenario>,
    /// An external server's base URL (a loopback address). Without it, loadgen starts its own
    /// server (the `rollcall` binary beside this program) with a temporary data directory.
    #[arg(long, visible_alias = "url")]
    pub http: Option<String>,
    /// The external server's admin token (with --http).
    #[arg(long, env = "ROLLCALL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The server binary to start (default: `rollcall` beside this program, same profile).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Extra flags for the started server, e.g. `--server-arg=--cache-mb=16` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Run every started server on PostgreSQL: a fresh database (created with `psql`) on the
    /// server of this URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres` (any existing
    /// database of it), passed as the server's `--store`.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Storm: post at this many messages per second (open loop) instead of closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Storm: a reader also sends its `read` when this many milliseconds passed since its last
    /// one (0: only every --read-batch messages).
    #[arg(long, default_value_t = 20)]
    pub read_ms: u64,
    /// Groups, fanout, idle: the values to sweep (groups, members, connections), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<u64>,
    /// Idle: connections to open (default 1,000; the sweep overrides it); presence: users, each
    /// connected once (default 10,000).
    #[arg(long)]
    pub connections: Option<u64>,
    /// Idle: spread the connections over this many loopback source addresses (127.0.0.1,
    /// 127.0.0.2, ...), each with its own ~28,000 ephemeral ports, for more connections than one
    /// source address has ports.
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
    /// Presence: how the groups of `--members` cover the users: `disjoint` (each user in one
    /// group) or `ring` (a group starts every `--members`/2 users: each user in two groups that
    /// overlap by half).
    #[arg(long, value_enum, default_value_t = Layout::Disjoint)]
    pub layout: Layout,
    /// Presence: users disconnected and reconnected one by one to count the frames per
    /// disconnect and per connect (no two share a group).
    #[arg(long, default_value_t = 100)]
    pub sample: usize,
    /// Presence: connections opening at once, in the first connect and in the mass reconnect.
    #[arg(long, default_value_t = 256)]
    pub connect_window: usize,
    /// Typing: each typing member sends `typing` every this many milliseconds.
    #[arg(long, default_value_t = 300)]
    pub typing_ms: u64,
    /// Typing: the measured window in seconds (after 3 s of warm-up).
    #[arg(long, default_value_t = 20)]
    pub run_secs: u64,
    /// Catchup and cold: the sync page size the client uses (the server caps pages at 1,000).
    #[arg(long, default_value_t = 1000)]
    pub page: usize,
    /// Relay (internal): the address to listen on.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    pub relay_addr: String,
    /// Members of the group (default: 40 for throughput, 200 for receipts, 20 per group for groups).
    #[arg(long)]
    pub members: Option<usize>,
    /// Storm: members online, senders included (default 40); receipts: online readers (default
    /// 40). Throughput keeps every member online.
    #[arg(long)]
    pub online: Option<usize>,
    /// Members that send (default: 4 for throughput and groups, 1 for storm).
    #[arg(long)]
    pub senders: Option<usize>,
    /// Messages posted in total (default: 20,000 for throughput, 200 for receipts); groups: per
    /// group (default 100).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Most sends in flight (without their `sent`) per sender.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Throughput: each member sends a cumulative `ack` every N received messages.
    #[arg(long, default_value_t = 50)]
    pub ack_every: u64,
    /// Storm and receipts: each reader sends a cumulative `read` every N received messages
    /// (default: 5 for storm, 1 for receipts).
    #[arg(long)]
    pub read_batch: Option<u64>,
    /// Receipts: the sender posts one message every this many milliseconds.
    #[arg(long, default_value_t = 20)]
    pub pace_ms: u64,
    /// The server's --receipt-interval-ms (how long "two receipt ticks" is).
    #[arg(long, default_value_t = 1000)]
    pub receipt_interval_ms: u64,
    /// Message body size in bytes, at least 1: the server refuses an empty body (default: 64;
    /// 200 for groups).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub body_bytes: Option<usize>,
    /// The whole run (setup included) stops after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub deadline_secs: u64,
    /// Leave Nagle's algorithm on for the client sockets (default: TCP_NODELAY, as browsers do).
    #[arg(long)]
    pub client_nagle: bool,
    /// The server's data directory, to report its size before and after (optional).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Number of groups (default: 1,000 for groups and cold, 100,000 for passivate, 5,000 for
    /// welcome).
    #[arg(long)]
    pub groups: Option<usize>,
    /// Groups: the pool of users that members are drawn from (and that the storm connects).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Groups: `load`, `welcome` or `all` (both, without a restart in between).
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Groups: prefix of the user and group ids; `--phase welcome` needs the one `load` used.
    #[arg(long, default_value = "lg")]
    pub prefix: String,
    /// Groups: the server's process id, to report its VmRSS and VmHWM (from /proc/PID/status).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Parallel admin requests while creating the users (every scenario that makes groups), the
    /// groups (groups) and adding the members (remind).
    #[arg(long, default_value_t = 8)]
    pub create_threads: usize,
    /// Storm family and remind: the group's receipt policy, set when it is created (default:
    /// the server's, `full`). With `off` the storm checks that no `receipt` frame was sent.
    #[arg(long, value_enum)]
    pub receipts: Option<Receipts>,
    /// Storm family: this many of the online readers do not share reads (`share_reads: false`
    /// through the admin API before the run); the storm checks that the sender's read counts
    /// leave them out exactly.
    #[arg(long, default_value_t = 0)]
    pub private_readers: usize,
    /// Remind: how the members are put into the group (`post`: all in the group's `POST`;
    /// `put`: one `PUT` each, from --create-threads threads).
    #[arg(long, value_enum, default_value_t = MembersVia::Put)]
    pub members_via: MembersVia,
    /// Passivate: the server's `--group-idle-secs` (a group actor stops after this long without
    /// a command).
    #[arg(long, default_value_t = 5)]
    pub group_idle_secs: u64,
    /// Passivate: after every group actor stopped, wait this many seconds more before the last
    /// RSS reading (what the allocator gives back late).
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// Passivate: after each round, call glibc's `malloc_trim(0)` inside the server through
    /// `gdb -p` (needs gdb and ptrace rights) and read the RSS again: memory the server freed
    /// but the allocator kept, as opposed to memory still in use. A diagnostic, off by default.
    #[arg(long)]
    pub trim_probe: bool,
    /// Biggroup: restarts, each followed by one timed first `send`.
    #[arg(long, default_value_t = 5)]
    pub restarts: usize,
    /// Biggroup: messages in the comparison group (its restarts measure the same).
    #[arg(long, default_value_t = 1000)]
    pub baseline_messages: u64,
    /// Welcome: the server's `--welcome-groups` for the comparison run (default: `--groups`,
    /// every group in the `welcome`); the first run keeps the server's default.
    #[arg(long)]
    pub welcome_groups: Option<usize>,
    /// Welcome: connects per configuration (the first is reported apart: the first after a
    /// restart reads a cold cache).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Welcome: the `limit` of each `groups` page (the server caps it at 1,000).
    #[arg(long, default_value_t = 500)]
    pub groups_page: usize,
    /// Set when loadgen started the server itself (it can then mint tokens offline).
    #[arg(skip)]
    pub own_server: bool,
}

/// What every scenario resolves its optional arguments to.
pub struct Plan {
    pub scenario: Scenario,
    pub members: usize,
    /// Members that connect (throughput: all; receipts: readers + the sender).
    pub online: usize,
    pub senders: usize,
    pub messages: u64,
    pub window: usize,
    /// Throughput: `ack` every N; receipts: `read` every N.
    pub cursor_every: u64,
    pub pace: Option<Duration>,
    /// Storm: open-loop rate in messages per second (all senders together).
    pub rate: Option<f64>,
    /// Storm: readers also send their `read` at this period.
    pub cursor_period: Option<Duration>,
    pub settle: Duration,
    pub body: Arc<str>,
    pub nodelay: bool,
    /// Against the bare relay (`ceiling`): no `sent`, no receipts; echoed `send` frames count
    /// as both the sender's answer and the members' `msg`.
    pub relay: bool,
    /// Storm family: the group's receipt policy (`None`: the server's default, `full`).
    pub receipts: Option<Receipts>,
    /// Storm family: online readers that do not share reads (the last ones of the online).
    pub private_readers: usize,
}

impl Plan {
    /// The online readers (members that connect and read, senders excluded).
    pub fn n_readers(&self) -> usize {
        match self.scenario {
            Scenario::Receipts => self.online.saturating_sub(1),
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout => {
                self.online.saturating_sub(self.senders)
            }
            _ => 0,
        }
    }

    /// The readers a sender's read counts must reach: the online readers who share reads (none
    /// against the relay or with receipts `off`, where the senders wait for no receipt).
    pub fn n_sharing_readers(&self) -> u64 {
        if self.relay || self.receipts == Some(Receipts::Off) {
            return 0;
        }
        u64::try_from(self.n_readers().saturating_sub(self.private_readers)).unwrap_or(u64::MAX)
    }
}

impl Args {
    /// The scenario, positional or from the older `--scenario` flag.
    pub fn scenario(&self) -> Scenario {
        self.scenario_arg
            .or(self.scenario_flag)
            .unwrap_or(Scenario::Storm)
    }

    pub fn http_given(&self) -> bool {
        self.http.is_some()
    }

    /// `--groups`, or the scenario's default.
    pub fn groups_or(&self, default: usize) -> usize {
        self.groups.unwrap_or(default)
    }

    /// The value of a server flag given with `--server-arg` (`--name=V` or `--name V`; the
    /// last one wins, as in the server's parser).
    pub fn server_flag(&self, name: &str) -> Option<String> {
        let mut found = None;
        let mut flags = self.server_args.iter().map(String::as_str);
        while let Some(flag) = flags.next() {
            if let Some(v) = flag.strip_prefix(name).and_then(|v| v.strip_prefix('=')) {
                found = Some(v.to_string());
            } else if flag == name {
                found = flags.next().map(str::to_string);
            }
        }
        found
    }

    /// The admin client of the server under test.
    pub fn admin(&self) -> Result<Admin, Error> {
        let http = self.http.as_deref().ok_or("no server: give --http")?;
        let token = self
            .admin_token
            .as_deref()
            .ok_or("--admin-token (or ROLLCALL_ADMIN_TOKEN) is needed with --http")?;
        Admin::new(http, token)
    }

    pub fn plan(&self) -> Result<Plan, Error> {
        self.plan_for(self.scenario())
    }

    pub fn plan_for(&self, scenario: Scenario) -> Result<Plan, Error> {
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
        let storm_like = matches!(
            scenario,
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout
        );
        if self.private_readers > 0
            && !(storm_like && self.private_readers <= online.saturating_sub(senders))
        {
            return Err(format!(
                "--private-readers ({}) is for the storm family, at most the online readers ({})",
                self.private_readers,
                online.saturating_sub(senders)
            )
            .into());
        }
        if messages == 0 || self.window == 0 || every == 0 {
            return Err("--messages, --window, --ack-every and --read-batch must be > 0".into());
        }
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
            receipts: if storm_like { self.receipts } else { None },
            private_readers: self.private_readers,
        })
    }
}
