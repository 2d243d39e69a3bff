//! Every knob of the server, with its default. The CLI (`main.rs`) fills a [`Config`]; tests
//! shrink the timers through the same flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// How often each group pushes aggregated `receipt` frames.
    pub receipt_interval: Duration,
    /// How often the server pings each WebSocket.
    pub heartbeat_interval: Duration,
    /// A connection silent for longer than this is closed.
    pub client_timeout: Duration,
    /// The largest message body, in bytes.
    pub max_body_bytes: usize,
    /// The largest WebSocket frame a client may send, in bytes; larger ones are dropped and
    /// answered with `too_large`.
    pub max_frame_bytes: usize,
    /// Sends per second each session may sustain (token bucket refill); 0 turns the limit off.
    pub send_rate: u32,
    /// Sends a session may make in a burst (token bucket size).
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
    pub durability: crate::store::Durability,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// How many HTTP worker threads (0: one per core).
    pub workers: usize,
    /// `serve --demo`: seed demo data into an empty data directory and print login links.
    pub demo: bool,
}

impl Config {
    /// The defaults documented in README.md, for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7600)),
            data_dir: data_dir.into(),
            admin_token: None,
            jwt_secret: None,
            receipt_interval: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(10_000),
            client_timeout: Duration::from_millis(30_000),
            max_body_bytes: 65_536,
            max_frame_bytes: 1 << 20,
            send_rate: 100,
            send_burst: 200,
            max_sessions_per_user: 32,
            min_free_bytes: 64 << 20,
            session_queue: 1024,
            dedup_window: 10_000,
            durability: crate::store::Durability::Power,
            cache_bytes: 64 << 20,
            workers: 0,
            demo: false,
        }
    }
}
