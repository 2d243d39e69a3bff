//! Starting and stopping the server: open the store, start the committer and the group
//! arbiters, bind the HTTP listener, print where it listens, run until a signal, flush.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use actix_web::{web, App, HttpServer};

use crate::auth::Auth;
use crate::commit::Committer;
use crate::config::Config;
use crate::http::{routes, AppState};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::{SledStore, Store};

/// Runs the server until SIGINT/SIGTERM. Must be called inside an actix system
/// (`#[actix_web::main]`).
pub async fn run(config: Config) -> io::Result<()> {
    // Demo data goes only into a directory that held nothing before this start.
    let seed_demo = config.demo && crate::demo::is_empty_dir(&config.data_dir)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let (auth, generated_admin_token) = Auth::load(
        &config.data_dir,
        config.admin_token.clone(),
        config.jwt_secret.clone(),
    )?;
    let sled = SledStore::open(
        &config.data_dir.join("db"),
        config.cache_bytes,
        config.durability,
    )
    .map_err(|e| io::Error::other(format!("opening the database: {e}")))?;
    sled.guard_disk(config.min_free_bytes);
    let store: Arc<dyn Store> = Arc::new(sled);
    let metrics = Arc::new(Metrics::default());
    let committer = Committer::start(Arc::clone(&store), Arc::clone(&metrics));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arbiters: Vec<Arbiter> = (0..cores).map(|_| Arbiter::new()).collect();
    let config = Arc::new(config);
    let registry = Registry::new(
        Arc::clone(&store),
        committer,
        Arc::clone(&config),
        metrics,
        arbiters.iter().map(Arbiter::handle).collect(),
    );
    let state = web::Data::new(AppState {
        registry: Arc::clone(&registry),
        auth,
    });
    let app_state = state.clone();
    let mut server =
        HttpServer::new(move || App::new().app_data(app_state.clone()).configure(routes))
            .shutdown_timeout(5)
            // `sent` and `msg` are small frames written back to back: without this the second
            // waits for the client's delayed ACK (about 20 ms more per send).
            .tcp_nodelay(true)
            .client_request_timeout(Duration::from_secs(10));
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server.bind(config.addr)?;
    {
        let mut out = io::stdout().lock();
        for addr in server.addrs() {
            writeln!(out, "rollcall: listening on {addr}")?;
        }
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
    if config.demo {
        // The listener is bound (early browsers wait in its backlog); seed before serving so
        // the printed links open a page with history.
        demo(&registry, &state.auth, &server.addrs(), seed_demo).await?;
    }
    let server = server.run();
    stop_on_storage_failure(Arc::clone(&store), server.handle());
    server.await?;
    registry.persist_cursors().await;
    for arbiter in &arbiters {
        arbiter.stop();
    }
    if let Some(reason) = store.failure() {
        return Err(io::Error::other(format!(
            "storage failed ({reason}); stopped. Every `sent` before the failure is on disk; \
             restart once the data directory is writable"
        )));
    }
    log::info!("stopping: flushing the database");
    store
        .flush()
        .map_err(|e| io::Error::other(format!("final flush: {e}")))
}

/// Stops the server once a flush failed for good (see `store::DiskGuard`): sled refuses every
/// later operation, so the process must restart on what reached the disk.
fn stop_on_storage_failure(store: Arc<dyn Store>, server: actix_web::dev::ServerHandle) {
    actix_web::rt::spawn(async move {
        let mut check = actix_web::rt::time::interval(Duration::from_millis(100));
        loop {
            check.tick().await;
            if store.failure().is_some() {
                log::error!("storage failed: stopping the server");
                server.stop(true).await;
                return;
            }
        }
    });
}

/// `serve --demo`: seeds an empty data directory, then prints one login link per demo user.
async fn demo(
    registry: &Arc<Registry>,
    auth: &Auth,
    listening: &[std::net::SocketAddr],
    seed: bool,
) -> io::Result<()> {
    if seed {
        crate::demo::seed(registry)
            .await
            .map_err(|e| io::Error::other(format!("seeding demo data: {e:?}")))?;
    }
    let Some(&addr) = listening.first() else {
        return Ok(());
    };
    let links = crate::demo::login_links(registry, auth, addr)
        .map_err(|e| io::Error::other(format!("demo login links: {e:?}")))?;
    let mut out = io::stdout().lock();
    if seed {
        writeln!(
            out,
            "rollcall: demo data created (users {}; group \"{}\")",
            crate::demo::USERS
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .join(", "),
            crate::demo::GROUP
        )?;
    } else if links.is_empty() {
        writeln!(
            out,
            "rollcall: demo: the data directory was not empty, so nothing was seeded"
        )?;
    }
    for (user, link) in links {
        writeln!(out, "rollcall: demo login for {user}: {link}")?;
    }
    out.flush()
}
