//! The `rollcall` command: parses the command line and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use rollcall::auth::{Auth, DEFAULT_TOKEN_TTL_SECS};
use rollcall::config::{self, Config, Durability, StoreKind};
use rollcall::ids::UserId;

/// mimalloc rather than glibc malloc: less CPU per allocation on the hot paths (BENCHMARKS.md,
/// "Closer to the wire").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc keeps freed pages for a second (`purge_delay`, 1,000 ms) before it gives them back.
/// A server that frees a burst's buffers and then idles should give them back soon, but giving
/// each page back at once (delay 0) cost about 11% of the server's CPU in the storm: a `madvise`
/// with a TLB shootdown on the other cores, then a page fault when the page is used again
/// (BENCHMARKS.md, "Closer to the wire"). So pages wait 10 ms, and a housekeeping thread runs
/// mimalloc's collection every 100 ms: a purge that is due only runs when mimalloc is called, so
/// without it an idle server would keep its pages, and the first request after the start would
/// pay for purging what the start freed (the first send to a big group after a restart took
/// twice as long with a collection once a second). The number is the option's place in the `mi_option_e`
/// enum of the mimalloc.h that libmimalloc-sys 0.1.49 builds (v3), which is why that crate is
/// pinned. `MIMALLOC_PURGE_DELAY`, read when the process starts, still wins.
fn tune_allocator() {
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const PURGE_DELAY_MS: std::os::raw::c_long = 10;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores a value in mimalloc's option table (it checks the range
        // too); it is called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Starts the allocator's housekeeping thread (see [`tune_allocator`]), for `serve`.
fn start_allocator_housekeeping() {
    let housekeeping = std::thread::Builder::new()
        .name("rollcall-alloc".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: mi_collect takes no pointers; any thread may call it at any time.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = housekeeping {
        log::warn!("allocator housekeeping thread not started: {e}");
    }
}

#[derive(Parser)]
#[command(
    name = "rollcall",
    version,
    about = "Self-hosted group chat with read receipts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // Boxed: its flags outweigh every other command's by far (clippy::large_enum_variant).
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a user token signed with the server's secret (no running server needed).
    Token {
        /// The user id the token is for.
        user: String,
        /// The data directory holding the secret `jwt-secret` (refused if it has none), unless a
        /// secret is given with --jwt-secret or ROLLCALL_JWT_SECRET.
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// How long the token is valid, in seconds (1 to a year).
        #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS)]
        ttl_secs: u64,
        /// Sign with this HS256 secret instead of the data directory's: the one the server was
        /// started with, when it runs with ROLLCALL_JWT_SECRET.
        #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
    },
    /// Ask a running server for an online backup (`POST /api/backup`) and print its answer
    /// (`{"path","groups","messages","bytes","longest_pause_ms"}`); the server keeps serving meanwhile.
    Backup {
        /// The server, as `http://host:port`.
        #[arg(long, default_value = config::DEFAULT_URL)]
        url: String,
        /// The admin token; when unset, read from `<data>/admin-token`.
        #[arg(long, env = "ROLLCALL_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The data directory whose `admin-token` to use when no token is given.
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data: PathBuf,
    },
    /// Check a data directory (of a stopped server, or a backup): the storage format, gapless
    /// seqs, cursors, direct conversations, the user -> groups and per-sender indexes. Prints each
    /// violation and a summary; exits 1 on any violation, 2 when the directory cannot be checked.
    Check {
        /// The data directory (holding `db/`).
        #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
        data: PathBuf,
        /// Check a PostgreSQL database instead (`postgres://…`): a read-only copy taken in one
        /// transaction, so the nodes may keep running.
        #[arg(long, env = "ROLLCALL_STORE")]
        store: Option<String>,
        /// sled page cache while checking, in MiB.
        #[arg(long, default_value_t = config::DEFAULT_CACHE_MB)]
        cache_mb: u64,
    },
    /// Copy a stopped server's sled data directory into an empty PostgreSQL database: users,
    /// accounts, groups, messages, cursors and every other record, and the owner epochs. The
    /// secrets (`admin-token`, `jwt-secret`) stay in the data directory: give every node the
    /// same ones. Checks the directory first and refuses a database that holds Rollcall data.
    Migrate {
        /// The stopped server's data directory (holding `db/`).
        #[arg(long)]
        from_data: PathBuf,
        /// The database, `postgres://user:pass@host:port/db`.
        #[arg(long)]
        to: String,
        /// sled page cache while copying, in MiB.
        #[arg(long, default_value_t = config::DEFAULT_CACHE_MB)]
        cache_mb: u64,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; 0.0.0.0:7600 for every interface (port 0 picks a free port,
    /// printed on start).
    #[arg(long, default_value = config::DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Data directory: the sled database `db/` and the generated secrets `admin-token` and
    /// `jwt-secret`.
    #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Where the data lives: `sled` (in `<data>/db`), or a PostgreSQL URL
    /// `postgres://user:pass@host:port/db` (the secrets stay in `--data`).
    #[arg(long, env = "ROLLCALL_STORE", default_value = "sled")]
    store: String,
    /// This node's id in the database (PostgreSQL store): the active node and the owner of
    /// every group are recorded by it. Default: the host name.
    #[arg(long, env = "ROLLCALL_NODE_ID")]
    node_id: Option<String>,
    /// How long the active node's lease lasts without renewal, in milliseconds (PostgreSQL
    /// store): a standby takes over once it has expired.
    #[arg(long, env = "ROLLCALL_LEASE_MS", default_value_t = config::DEFAULT_LEASE_MS)]
    lease_ms: u64,
    /// Admin bearer token for `/api/*` and `/metrics`; when unset, generated into
    /// `<data>/admin-token` and printed once.
    #[arg(long, env = "ROLLCALL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// HS256 secret of user tokens (set it to mint tokens from your own backend); when unset,
    /// generated into `<data>/jwt-secret`.
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Period of the aggregated receipt push, in milliseconds.
    #[arg(long, default_value_t = config::DEFAULT_RECEIPT_INTERVAL_MS)]
    receipt_interval_ms: u64,
    /// Period of the server's WebSocket pings, in milliseconds.
    #[arg(long, default_value_t = config::DEFAULT_HEARTBEAT_MS)]
    heartbeat_ms: u64,
    /// Close a connection silent for this long, or one whose peer takes no data for this long,
    /// in milliseconds.
    #[arg(long, default_value_t = config::DEFAULT_CLIENT_TIMEOUT_MS)]
    client_timeout_ms: u64,
    /// Largest message body, in bytes.
    #[arg(long, default_value_t = config::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Largest WebSocket frame a client may send, in bytes (larger: skipped unbuffered,
    /// `too_large`).
    #[arg(long, default_value_t = config::DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// Writes (sends and new direct conversations) per second per user, sustained: a token
    /// bucket shared by the user's sessions (over it: `rate_limited`); 0 turns the limit off.
    #[arg(long, default_value_t = config::DEFAULT_SEND_RATE)]
    send_rate: u32,
    /// Writes per user in a burst (the size of the user's token bucket).
    #[arg(long, default_value_t = config::DEFAULT_SEND_BURST)]
    send_burst: u32,
    /// Open WebSocket sessions per user (one more: HTTP 429 `too_many_sessions`); 0: no limit.
    #[arg(long, default_value_t = config::DEFAULT_MAX_SESSIONS_PER_USER)]
    max_sessions_per_user: usize,
    /// Refuse writes (`storage`) while the data directory's disk has less free space, in MiB
    /// (0: never).
    #[arg(long, default_value_t = config::DEFAULT_MIN_FREE_MB)]
    min_free_mb: u64,
    /// Outbound queue per session, in frames (a full queue evicts the session); also the most
    /// sends one session may have waiting for `sent`.
    #[arg(long, default_value_t = config::DEFAULT_SESSION_QUEUE)]
    session_queue: usize,
    /// Messages per group remembered for idempotent resends (about 100 bytes each per loaded
    /// group).
    #[arg(long, default_value_t = config::DEFAULT_DEDUP_WINDOW)]
    dedup_window: usize,
    /// `power`: a message is fsynced before `sent` (survives power loss); `process`: only
    /// sled's flush (survives a process crash; the last ~0.5 s may be lost on power loss).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Power)]
    durability: DurabilityArg,
    /// The least time between two reminders (`remind`) of one message, in seconds.
    #[arg(long, default_value_t = config::DEFAULT_REMIND_INTERVAL_SECS)]
    remind_interval_secs: u64,
    /// sled page cache, in MiB.
    #[arg(long, default_value_t = config::DEFAULT_CACHE_MB)]
    cache_mb: u64,
    /// HTTP worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Where `POST /api/backup` (`rollcall backup`) writes its snapshots, one directory each
    /// (default: `<data>/backups`).
    #[arg(long, env = "ROLLCALL_BACKUP_DIR")]
    backup_dir: Option<PathBuf>,
    /// Whether users may create groups themselves (`create_group`); with `false` only the admin
    /// API creates groups.
    #[arg(long, env = "ROLLCALL_USER_GROUPS", default_value_t = true, action = clap::ArgAction::Set)]
    user_groups: bool,
    /// Groups with more members carry no typing indicators and no presence (each keystroke or
    /// connect would be pushed to every online member).
    #[arg(long, default_value_t = config::DEFAULT_PRESENCE_MAX_MEMBERS)]
    presence_max_members: usize,
    /// Stop a group's actor after this many seconds without a command (memory follows
    /// activity; the next use starts it again, nothing lost); 0: never.
    #[arg(long, env = "ROLLCALL_GROUP_IDLE_SECS", default_value_t = config::DEFAULT_GROUP_IDLE_SECS)]
    group_idle_secs: u64,
    /// The same in milliseconds, for tests (wins over `--group-idle-secs`).
    #[arg(long, hide = true)]
    group_idle_ms: Option<u64>,
    /// Prune messages older than this many seconds (a group's own `retention_secs` wins); the
    /// newest message of a group is always kept. Default: keep forever.
    #[arg(long, env = "ROLLCALL_RETENTION_SECS")]
    retention_secs: Option<u64>,
    /// How often the pruner runs, in seconds.
    #[arg(long, default_value_t = config::DEFAULT_PRUNE_INTERVAL_SECS)]
    prune_interval_secs: u64,
    /// The most groups one `welcome` lists, most recently active first (`groups` pages them all).
    #[arg(long, default_value_t = config::DEFAULT_WELCOME_GROUPS)]
    welcome_groups: usize,
    /// Demo mode: into a data directory without users yet, create users alice, bob, carol and
    /// dave, a group `team` and a direct conversation with some history; on every start print a
    /// login link per demo user for the web client at `/`.
    #[arg(long)]
    demo: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DurabilityArg {
    Power,
    Process,
}

impl ServeArgs {
    fn into_config(self) -> Config {
        let mut config = Config::new(self.data);
        config.addr = self.addr;
        config.admin_token = self.admin_token;
        config.jwt_secret = self.jwt_secret;
        config.receipt_interval = Duration::from_millis(self.receipt_interval_ms.max(1));
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_ms.max(1));
        config.client_timeout = Duration::from_millis(self.client_timeout_ms.max(1));
        config.max_body_bytes = self.max_body_bytes;
        config.max_frame_bytes = self.max_frame_bytes.max(1);
        config.send_rate = self.send_rate;
        config.send_burst = self.send_burst.max(1);
        config.max_sessions_per_user = self.max_sessions_per_user;
        config.min_free_bytes = self.min_free_mb.saturating_mul(1 << 20);
        config.session_queue = self.session_queue.max(1);
        config.dedup_window = self.dedup_window;
        config.durability = match self.durability {
            DurabilityArg::Power => Durability::Power,
            DurabilityArg::Process => Durability::Process,
        };
        config.cache_bytes = self.cache_mb.saturating_mul(1 << 20);
        config.remind_interval = Duration::from_secs(self.remind_interval_secs);
        config.workers = self.workers;
        config.group_idle = match self.group_idle_ms {
            Some(ms) => (ms > 0).then(|| Duration::from_millis(ms)),
            None => (self.group_idle_secs > 0).then(|| Duration::from_secs(self.group_idle_secs)),
        };
        config.retention = self
            .retention_secs
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs);
        config.prune_interval = Duration::from_secs(self.prune_interval_secs.max(1));
        config.welcome_groups = self.welcome_groups.max(1);
        config.user_groups = self.user_groups;
        config.presence_max_members = self.presence_max_members;
        config.demo = self.demo;
        config.backup_dir = self.backup_dir;
        config.store = if self.store == "sled" {
            StoreKind::Sled
        } else {
            StoreKind::Postgres(self.store)
        };
        if let Some(node_id) = self.node_id.filter(|id| !id.is_empty()) {
            config.node_id = node_id;
        }
        config.lease = Duration::from_millis(self.lease_ms.max(100));
        config
    }
}

fn main() -> ExitCode {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            start_allocator_housekeeping();
            let config = (*args).into_config();
            actix_web::rt::System::new().block_on(async {
                // Installed first, so a signal that arrives while starting is not fatal.
                let shutdown = rollcall::server::shutdown_signal()?;
                rollcall::server::run(config, shutdown).await
            })
        }
        Command::Token {
            user,
            data,
            ttl_secs,
            jwt_secret,
        } => print_token(&user, &data, ttl_secs, jwt_secret),
        Command::Backup {
            url,
            admin_token,
            data,
        } => backup(&url, admin_token, &data),
        Command::Check {
            data,
            store,
            cache_mb,
        } => return check(&data, store.filter(|s| s != "sled"), cache_mb),
        Command::Migrate {
            from_data,
            to,
            cache_mb,
        } => migrate(&from_data, &to, cache_mb),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rollcall: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_token(
    user: &str,
    data: &std::path::Path,
    ttl_secs: u64,
    secret: Option<String>,
) -> std::io::Result<()> {
    let user = UserId::parse(user)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    println!("{}", Auth::mint_offline(data, secret, &user, ttl_secs)?);
    Ok(())
}

fn backup(url: &str, admin_token: Option<String>, data: &std::path::Path) -> std::io::Result<()> {
    let token = match admin_token.filter(|t| !t.is_empty()) {
        Some(token) => token,
        None => {
            let file = data.join(rollcall::auth::ADMIN_TOKEN_FILE);
            std::fs::read_to_string(&file)
                .map(|token| token.trim().to_owned())
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "no --admin-token (ROLLCALL_ADMIN_TOKEN), and reading {}: {e}",
                            file.display()
                        ),
                    )
                })?
        }
    };
    let answer = rollcall::client::admin::request(url, "POST", "/api/backup", &token)?;
    if answer.status == 200 {
        println!("{}", answer.body.trim_end());
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the server answered {}: {}",
            answer.status,
            answer.body.trim_end()
        )))
    }
}

/// `rollcall migrate`: a sled data directory into an empty PostgreSQL database.
fn migrate(from: &std::path::Path, to: &str, cache_mb: u64) -> std::io::Result<()> {
    let copied =
        rollcall::store::check::migrate_to_postgres(from, to, cache_mb.saturating_mul(1 << 20))
            .map_err(|e| std::io::Error::other(format!("migrating {}: {e}", from.display())))?;
    println!(
        "rollcall migrate: copied {copied} records from {} into the database; start the nodes \
         with --store and the same secrets ({}/admin-token, {}/jwt-secret, or \
         ROLLCALL_ADMIN_TOKEN and ROLLCALL_JWT_SECRET)",
        from.display(),
        from.display(),
        from.display()
    );
    Ok(())
}

/// `rollcall check`: exit 0 when consistent, 1 on violations, 2 when it could not check.
fn check(data: &std::path::Path, store: Option<String>, cache_mb: u64) -> ExitCode {
    let cache_bytes = cache_mb.saturating_mul(1 << 20);
    let (checked, what) = match &store {
        Some(url) => (
            rollcall::store::check::check_postgres(url, cache_bytes),
            "the PostgreSQL database".to_string(),
        ),
        None => (
            rollcall::store::check::check_data_dir(data, cache_bytes),
            data.display().to_string(),
        ),
    };
    match checked {
        Ok(report) => {
            for finding in &report.violations {
                println!("{finding}");
            }
            for finding in &report.warnings {
                println!("warning: {finding}");
            }
            println!("rollcall check: {what}: {}", report.summary());
            if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!(
                "rollcall check: cannot open {what}: {e} (if a server runs on a data directory, \
                 stop it first, or check a backup of it)"
            );
            ExitCode::from(2)
        }
    }
}
