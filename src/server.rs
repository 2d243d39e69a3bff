//! Starting and stopping the server: open the store, start the committer and the group
//! arbiters, bind the HTTP listener (whose sockets give up on a peer that takes no data, see
//! `give_up_unacknowledged_after`), print where it listens, run until told to stop, flush.
//!
//! Shutdown is ours, not actix-server's: its own handlers stop at once on SIGINT (no draining)
//! and, on SIGTERM, wait up to the shutdown timeout for open WebSockets, which only end when
//! their clients leave, then stop the whole actix system (group arbiters included) before the
//! cursors are written. So signals are disabled there, and [`run`] takes its stop as a future
//! argument, as mini-redis does: the binary passes [`shutdown_signal`] (SIGTERM/SIGINT), an
//! embedder or a test anything else. On it (or on a failed flush): stop accepting, close every
//! session with 1001 (`going away`), let the workers finish, write the cursors, flush, return. The bound is [`SHUTDOWN_TIMEOUT_SECS`] for the workers plus the
//! final writes (documented as 5 s in README and PROTOCOL.md).

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::{web, App, HttpServer};

use crate::accounts::Accounts;
use crate::auth::Auth;
use crate::backup::Backups;
use crate::commit::Committer;
use crate::config::{Config, StoreKind};
use crate::http::{routes, AppState};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{PgOptions, SledStore, Store};

mod standby;

/// How long the HTTP workers may take to finish their connections after a stop signal; a
/// client that does not read its close frame is cut off after this.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 3;

/// Runs the server until `shutdown` resolves (or storage fails), then shuts down gracefully
/// (see the module doc). Must be called inside an actix system (`actix_web::rt::System`).
///
/// On PostgreSQL the node first waits as a standby until it holds the lease (`standby.rs`),
/// then serves; fenced (another node took over), it closes its sessions with 1012 and waits as
/// a standby again, on the same listener.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + 'static) -> io::Result<()> {
    use futures_util::FutureExt;
    std::fs::create_dir_all(&config.data_dir)?;
    let (auth, generated_admin_token) = Auth::load(
        &config.data_dir,
        config.admin_token.clone(),
        config.jwt_secret.clone(),
    )?;
    // The store is opened (its format or schema checked) before anything listens.
    let opened = match &config.store {
        StoreKind::Sled => {
            let sled = SledStore::open(
                &config.data_dir.join("db"),
                config.cache_bytes,
                config.durability,
            )
            .map_err(|e| io::Error::other(format!("opening the database: {e}")))?;
            sled.guard_disk(config.min_free_bytes);
            Opened::Sled(sled)
        }
        StoreKind::Postgres(url) => {
            Opened::Postgres(standby::connect(pg_options(&config, url)).await?)
        }
    };
    let listener = std::net::TcpListener::bind(config.addr)?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "rollcall: listening on {}", listener.local_addr()?)?;
        if let Some(token) = generated_admin_token {
            writeln!(
                out,
                "rollcall: generated admin token (shown once; stored in {}): {token}",
                config
                    .data_dir
                    .join(crate::auth::ADMIN_TOKEN_FILE)
                    .display()
            )?;
        }
        out.flush()?;
    }
    log::info!("data directory {}", config.data_dir.display());
    let shutdown = shutdown.boxed_local().shared();
    let config = Arc::new(config);
    let mut pg = match opened {
        Opened::Sled(sled) => {
            serve(config, auth, Arc::new(sled), listener, shutdown).await?;
            return Ok(());
        }
        Opened::Postgres(pg) => Some(pg),
    };
    let mut auth = Some(auth);
    loop {
        let pg = match pg.take() {
            Some(pg) => pg,
            None => {
                let StoreKind::Postgres(url) = &config.store else {
                    return Ok(());
                };
                // After a fence the database may be the reason (an outage longer than a
                // lease): ask again until it answers, rather than exit.
                loop {
                    match standby::connect(pg_options(&config, url)).await {
                        Ok(pg) => break pg,
                        Err(e) => log::warn!("{e}; asking again in 1 s"),
                    }
                    tokio::select! {
                        () = shutdown.clone() => return Ok(()),
                        () = actix_web::rt::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let Some(store) =
            standby::wait_until_active(pg, &config, listener.try_clone()?, shutdown.clone())
                .await?
        else {
            return Ok(());
        };
        let auth = match auth.take() {
            Some(auth) => auth,
            None => {
                Auth::load(
                    &config.data_dir,
                    config.admin_token.clone(),
                    config.jwt_secret.clone(),
                )?
                .0
            }
        };
        let listening = listener.try_clone()?;
        match serve(
            Arc::clone(&config),
            auth,
            store,
            listening,
            shutdown.clone(),
        )
        .await?
        {
            Ended::Stopped => return Ok(()),
            Ended::Fenced => log::warn!("this node was fenced: waiting as a standby"),
        }
    }
}

/// How this node reaches the database at `url`.
fn pg_options(config: &Config, url: &str) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        node_id: config.node_id.clone(),
        lease: config.lease,
    }
}

/// The store as opened at start, before anything listens.
enum Opened {
    Sled(SledStore),
    /// Connected, its schema up to date; not active yet.
    Postgres(crate::store::Postgres),
}

/// How [`serve`] ended.
enum Ended {
    /// Shutdown was asked for (or storage failed, which returns an error instead).
    Stopped,
    /// Another node took over: serve again once this node holds the lease.
    Fenced,
}

/// Serves on `store` until `shutdown`, a storage failure or a fence.
async fn serve(
    config: Arc<Config>,
    auth: Auth,
    store: Arc<dyn Store>,
    listener: std::net::TcpListener,
    shutdown: futures_util::future::Shared<futures_util::future::LocalBoxFuture<'static, ()>>,
) -> io::Result<Ended> {
    // Demo data goes only into a store with no users yet: other files in the directory (a
    // README, the secrets Rollcall generated on an earlier start) do not count.
    let seed_demo = config.demo
        && store
            .users(None, 1)
            .map_err(|e| io::Error::other(format!("reading the database: {e}")))?
            .is_empty();
    let metrics = Arc::new(Metrics::default());
    let committer = Committer::start(Arc::clone(&store), Arc::clone(&metrics));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arbiters: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
    let registry = Registry::new(
        Arc::clone(&store),
        committer,
        Arc::clone(&config),
        metrics,
        arbiters.iter().map(Arbiter::handle).collect(),
    );
    match registry.start_scheduled_groups() {
        Ok(0) => {}
        Ok(n) => log::info!("started {n} groups with scheduled reminders"),
        Err(e) => log::error!("starting the groups with scheduled reminders: {e}"),
    }
    crate::auth::password::warm_up();
    let state = web::Data::new(AppState {
        registry: Arc::clone(&registry),
        accounts: Accounts::new(auth, Arc::clone(&registry)),
        backups: Backups::default(),
    });
    let app_state = state.clone();
    let client_timeout = config.client_timeout;
    let mut server =
        HttpServer::new(move || App::new().app_data(app_state.clone()).configure(routes))
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .disable_signals()
            // `sent` and `msg` are small frames written back to back: without this the second
            // waits for the client's delayed ACK (about 20 ms more per send).
            .tcp_nodelay(true)
            .client_request_timeout(Duration::from_secs(10))
            .on_connect(move |io, _| give_up_unacknowledged_after(io, client_timeout));
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.listen(listener)?;
    if config.demo {
        // The listener is bound (early browsers wait in its backlog); seed before serving so
        // the printed links open a page with history.
        demo(&registry, &state.accounts, &server.addrs(), seed_demo).await?;
    }
    let running = server.run();
    let handle = running.handle();
    // The pruner: every --prune-interval-secs, messages past their group's retention go, a
    // small batch at a time (registry.rs, group/retention.rs).
    let pruner = Arc::clone(&registry);
    let prune_every = config.prune_interval;
    let pruning = actix_web::rt::spawn(async move {
        loop {
            let pruned = pruner.prune_all().await;
            if pruned > 0 {
                log::info!("pruned {pruned} messages past their retention");
            }
            actix_web::rt::time::sleep(prune_every).await;
        }
    });
    let closing = Arc::clone(&registry);
    let watched = Arc::clone(&store);
    let fenced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let was_fenced = Arc::clone(&fenced);
    actix_web::rt::spawn(async move {
        let fence = tokio::select! {
            () = shutdown => {
                log::info!("shutdown requested: closing sessions and stopping");
                false
            }
            why = until_store(Arc::clone(&watched), |s| s.failure()) => {
                log::error!("storage failed ({why}): closing sessions and stopping the server");
                false
            }
            why = until_store(watched, |s| s.fenced()) => {
                log::error!("fenced ({why}): closing every session with 1012");
                true
            }
        };
        // Stop accepting first (the command goes out now), then close the open sessions; a
        // session that starts after this closes itself at once.
        let stopped = handle.stop(true);
        if fence {
            was_fenced.store(true, std::sync::atomic::Ordering::SeqCst);
            let n_sessions = closing.presence().restart_all();
            log::info!("closing {n_sessions} sessions (1012)");
        } else {
            let n_sessions = closing.presence().close_all();
            log::info!("closing {n_sessions} sessions (1001)");
        }
        stopped.await;
    });
    let served = running.await;
    // The pruner holds the registry (and so the store): stop it before the final writes.
    pruning.abort();
    let _ = pruning.await;
    served?;
    registry.persist_cursors().await;
    for arbiter in arbiters {
        arbiter.stop();
        // The group actors (and their handles on the store) are gone once it has stopped.
        if arbiter.join().is_err() {
            log::error!("a group arbiter panicked while stopping");
        }
    }
    let fenced = fenced.load(std::sync::atomic::Ordering::SeqCst);
    let result = match store.failure() {
        Some(reason) => Err(io::Error::other(format!(
            "storage failed ({reason}); stopped. Every `sent` before the failure is on disk; \
             restart once the data directory is writable"
        ))),
        None if fenced => Ok(()),
        None => {
            log::info!("stopping: flushing the database");
            store
                .flush()
                .map_err(|e| io::Error::other(format!("final flush: {e}")))
        }
    };
    // Returning means the data directory is free again (an embedder may start anew on it):
    // wait until the last handle on the store (the commit thread's) is gone.
    drop((state, registry));
    release(store).await;
    result.map(|()| {
        if fenced {
            Ended::Fenced
        } else {
            Ended::Stopped
        }
    })
}

/// Sets `TCP_USER_TIMEOUT` on an accepted connection: once data it wrote stays unacknowledged,
/// or untransmitted because the peer's receive window is zero, for `timeout`, the kernel fails
/// the socket, and the HTTP worker drops the connection (a WebSocket session stops with it).
///
/// This is the closer for a peer that stopped reading. The session's own heartbeat cannot be
/// it: the session actor is driven by its response stream, which the HTTP dispatcher stops
/// polling while the socket takes no more bytes, so its timers do not run. A watchdog outside
/// the actor, shutting the socket down when the session's writes made no progress, would need
/// the raw descriptor kept beside a connection that may close and reuse it at any time; the
/// kernel already tracks progress of each socket exactly. No keepalive is needed: the heartbeat
/// writes a ping every `--heartbeat-ms`, so a session always has data that must be
/// acknowledged, and idle HTTP connections end with actix's keep-alive timeout. Linux only
/// (zero-window probes count since Linux 5.11); elsewhere a stalled peer lingers until the
/// kernel's own retransmission timeout.
fn give_up_unacknowledged_after(io: &dyn std::any::Any, timeout: Duration) {
    #[cfg(target_os = "linux")]
    if let Some(stream) = io.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
            log::warn!("setting TCP_USER_TIMEOUT on a connection: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (io, timeout);
}

/// Drops this handle on the store and waits (up to the shutdown bound) until every other one
/// is gone too, so the database is closed.
async fn release(store: Arc<dyn Store>) {
    let weak = Arc::downgrade(&store);
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(SHUTDOWN_TIMEOUT_SECS);
    while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    if weak.strong_count() > 0 {
        log::warn!("the database is still in use after the shutdown bound");
    }
}

/// Resolves with the reason once `condition` of the store holds, looked at every 100 ms: a
/// flush that failed for good (`Store::failure`, see `store::DiskGuard`: sled refuses every
/// later operation, so the server stops and must restart on what reached the disk), or a fence
/// (`Store::fenced`: another node took over, PostgreSQL).
async fn until_store(store: Arc<dyn Store>, condition: fn(&dyn Store) -> Option<String>) -> String {
    let mut check = actix_web::rt::time::interval(Duration::from_millis(100));
    loop {
        check.tick().await;
        if let Some(reason) = condition(store.as_ref()) {
            return reason;
        }
    }
}

/// `serve --demo`: seeds a data directory without users, then prints one login link per demo user.
async fn demo(
    registry: &Arc<Registry>,
    accounts: &Accounts,
    listening: &[std::net::SocketAddr],
    seed: bool,
) -> io::Result<()> {
    if seed {
        crate::demo::seed(registry, accounts)
            .await
            .map_err(|e| io::Error::other(format!("seeding demo data: {e:?}")))?;
    }
    let Some(&addr) = listening.first() else {
        return Ok(());
    };
    let links = crate::demo::login_links(registry, accounts, addr)
        .map_err(|e| io::Error::other(format!("demo login links: {e:?}")))?;
    let mut out = io::stdout().lock();
    if seed {
        writeln!(
            out,
            "rollcall: demo data created (users {}, each with the password {:?}; group \"{}\")",
            crate::demo::USERS
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .join(", "),
            crate::demo::PASSWORD,
            crate::demo::GROUP
        )?;
    } else if links.is_empty() {
        writeln!(
            out,
            "rollcall: demo: the data directory was not empty (it holds users already), so \
             nothing was seeded; for a fresh demo, start with --data and a new directory"
        )?;
    }
    for (user, link) in links {
        writeln!(out, "rollcall: demo login for {user}: {link}")?;
    }
    out.flush()
}

/// Resolves on the first SIGTERM or SIGINT (logging which). The handlers are installed when
/// this is called, not when the future is first polled, so call it before [`run`] starts.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        log::info!("{name} received");
    })
}
