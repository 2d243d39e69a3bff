//! Every knob of the server, with its default, in one place: [`Config::new`] and the CLI
//! (`main.rs`, whose flags take their defaults from the constants here) agree by construction.
//! Tests shrink the timers through the same flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7600";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The server the CLI's admin commands (`rollcall backup`) talk to by default: [`DEFAULT_ADDR`].
pub const DEFAULT_URL: &str = "http://127.0.0.1:7600";
/// Where backups go inside the data directory unless `--backup-dir` says otherwise.
pub const BACKUPS_SUBDIR: &str = "backups";
pub const DEFAULT_RECEIPT_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_HEARTBEAT_MS: u64 = 10_000;
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_BODY_BYTES: usize = 65_536;
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
pub const DEFAULT_SEND_RATE: u32 = 100;
pub const DEFAULT_SEND_BURST: u32 = 200;
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 32;
pub const DEFAULT_MIN_FREE_MB: u64 = 64;
pub const DEFAULT_SESSION_QUEUE: usize = 1024;
pub const DEFAULT_DEDUP_WINDOW: usize = 10_000;
pub const DEFAULT_CACHE_MB: u64 = 64;
pub const DEFAULT_REMIND_INTERVAL_SECS: u64 = 300;

/// How long an active node's lease lasts without renewal (PostgreSQL store).
pub const DEFAULT_LEASE_MS: u64 = 5_000;

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// sled in `<data>/db` (the embedded default).
    Sled,
    /// PostgreSQL at this connection URL (`postgres://user:pass@host:port/db`).
    Postgres(String),
}

/// How much a store flush guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// sled's flush only (`pwrite` + `sync_file_range`): survives a process crash.
    Process,
    /// sled's flush, then `fsync` of its log file (data, metadata and the drive's cache):
    /// survives power loss too.
    Power,
}

/// Groups above this many members carry no `typing` and no `presence`.
pub const DEFAULT_PRESENCE_MAX_MEMBERS: usize = 500;
/// A group actor stops after this long without a command.
pub const DEFAULT_GROUP_IDLE_SECS: u64 = 600;
/// How often the pruner looks for messages past their retention.
pub const DEFAULT_PRUNE_INTERVAL_SECS: u64 = 60;
/// The most groups one `welcome` lists (the most recently active; `groups` pages the rest).
pub const DEFAULT_WELCOME_GROUPS: usize = 200;

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (printed on start).
    pub addr: SocketAddr,
    /// The data directory: the sled database and the generated secrets.
    pub data_dir: PathBuf,
    /// The admin bearer token; generated into the data directory when `None`.
    pub admin_token: Option<String>,
    /// The HS256 secret for user tokens; generated into the data directory when `None`.
    pub jwt_secret: Option<String>,
    /// A group actor stops after this long without a command (`None`: never).
    pub group_idle: Option<Duration>,
    /// Messages older than this are pruned, unless the group sets its own (`None`: kept
    /// forever).
    pub retention: Option<Duration>,
    /// How often the pruner runs.
    pub prune_interval: Duration,
    /// The most groups one `welcome` lists.
    pub welcome_groups: usize,
    /// How often each group pushes aggregated `receipt` frames.
    pub receipt_interval: Duration,
    /// How often the server pings each WebSocket.
    pub heartbeat_interval: Duration,
    /// A connection silent for longer than this is closed (the session's heartbeat), and so is
    /// one whose written data stays unacknowledged or unsent for this long (`TCP_USER_TIMEOUT`,
    /// set in `server.rs`).
    pub client_timeout: Duration,
    /// The largest message body, in bytes.
    pub max_body_bytes: usize,
    /// The largest WebSocket frame a client may send, in bytes; larger ones are dropped and
    /// answered with `too_large`.
    pub max_frame_bytes: usize,
    /// Writes (sends, new direct conversations) per second each user may sustain, over all of the
    /// user's sessions (token bucket refill); 0 turns the limit off.
    pub send_rate: u32,
    /// Writes a user may make in a burst (token bucket size).
    pub send_burst: u32,
    /// Open WebSocket sessions per user; 0: no limit.
    pub max_sessions_per_user: usize,
    /// Writes are refused while the data directory's file system has less free space; 0: never.
    pub min_free_bytes: u64,
    /// The outbound queue of a session, in frames; a session whose queue is full is evicted.
    pub session_queue: usize,
    /// How many of a group's latest messages are remembered for idempotent resends.
    pub dedup_window: usize,
    /// Whether a `sent` waits for fsync (power-loss safe) or only for sled's flush.
    pub durability: Durability,
    /// The least time between two reminders of one message.
    pub remind_interval: Duration,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// How many HTTP worker threads (0: one per core).
    pub workers: usize,
    /// Whether users may create groups (`create_group`); otherwise only the admin does.
    pub user_groups: bool,
    /// Groups with more members carry no `typing` and no `presence` (one keystroke would be
    /// pushed to every online member).
    pub presence_max_members: usize,
    /// `serve --demo`: seed demo data into a data directory without users and print login links.
    pub demo: bool,
    /// Where `POST /api/backup` writes its snapshots (one directory each); `None`:
    /// `<data_dir>/backups`.
    pub backup_dir: Option<PathBuf>,
    /// sled in the data directory, or PostgreSQL.
    pub store: StoreKind,
    /// This node's id in the database's ownership records (PostgreSQL store).
    pub node_id: String,
    /// How long the active node's lease lasts without renewal (PostgreSQL store).
    pub lease: Duration,
}

impl Config {
    /// The defaults documented in README.md, for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7600)),
            data_dir: data_dir.into(),
            admin_token: None,
            jwt_secret: None,
            group_idle: Some(Duration::from_secs(DEFAULT_GROUP_IDLE_SECS)),
            retention: None,
            prune_interval: Duration::from_secs(DEFAULT_PRUNE_INTERVAL_SECS),
            welcome_groups: DEFAULT_WELCOME_GROUPS,
            receipt_interval: Duration::from_millis(DEFAULT_RECEIPT_INTERVAL_MS),
            heartbeat_interval: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            client_timeout: Duration::from_millis(DEFAULT_CLIENT_TIMEOUT_MS),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            send_rate: DEFAULT_SEND_RATE,
            send_burst: DEFAULT_SEND_BURST,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            min_free_bytes: DEFAULT_MIN_FREE_MB << 20,
            session_queue: DEFAULT_SESSION_QUEUE,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            durability: Durability::Power,
            cache_bytes: DEFAULT_CACHE_MB << 20,
            remind_interval: Duration::from_secs(DEFAULT_REMIND_INTERVAL_SECS),
            workers: 0,
            user_groups: true,
            presence_max_members: DEFAULT_PRESENCE_MAX_MEMBERS,
            demo: false,
            backup_dir: None,
            store: StoreKind::Sled,
            node_id: default_node_id(),
            lease: Duration::from_millis(DEFAULT_LEASE_MS),
        }
    }
}

/// The machine's host name (`--node-id`'s default), or `rollcall`.
pub fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "rollcall".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_address_parses_and_is_the_one_config_uses() {
        let addr: SocketAddr = DEFAULT_ADDR.parse().expect("DEFAULT_ADDR");
        assert_eq!(Config::new(DEFAULT_DATA_DIR).addr, addr);
        assert_eq!(DEFAULT_URL, format!("http://{DEFAULT_ADDR}"));
    }
}
