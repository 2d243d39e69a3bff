//! A standby (PostgreSQL store): a node that waits for the active node's lease to expire.
//!
//! It connects (bringing the schema up to date), then tries to take the lease: at once, and
//! every fifth of `--lease-ms` after. Meanwhile it answers `GET /healthz` with
//! `{"status":"ok","role":"standby","node":…}` and everything else, the `/ws` upgrade
//! included, with `503` `standby` and a `Retry-After` (seconds). Once it holds the lease it
//! stops that listener's server, loads the database into its mirror and returns the store; the
//! caller serves on the same listener.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::config::Config;
use crate::protocol::{to_json, ErrorCode, Health, HttpError, HttpErrorBody};
use crate::store::{PgOptions, Postgres, Store};

/// Where an active node keeps its mirror of the database, inside `--data`.
pub const MIRROR_DIR: &str = "mirror";

/// What the standby's answers say.
struct Waiting {
    node: String,
    /// Who is active, and for how long its lease still runs (ms).
    leader: Mutex<(String, i64)>,
    lease: Duration,
}

/// Runs a blocking database call off the actix threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    actix_web::rt::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("a database call panicked: {e}")))
}

/// Connects to the database and brings its schema up to date (refusing a newer one).
pub(super) async fn connect(options: PgOptions) -> io::Result<Postgres> {
    blocking(move || Postgres::connect(options))
        .await?
        .map_err(|e| io::Error::other(format!("connecting to PostgreSQL: {e}")))
}

/// Waits until this node holds the lease, then returns its store; `None` when `shutdown`
/// came first.
pub(super) async fn wait_until_active(
    pg: Postgres,
    config: &Config,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<Option<Arc<dyn Store>>> {
    let node = config.node_id.clone();
    let lease = config.lease;
    let (mut pg, mut active) = blocking(move || {
        let active = pg.try_become_active();
        (pg, active)
    })
    .await?;
    if !matches!(active, Ok(true)) {
        let waiting = Arc::new(Waiting {
            node,
            leader: Mutex::new((String::new(), lease.as_millis() as i64)),
            lease,
        });
        let state = web::Data::from(Arc::clone(&waiting));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(healthz))
                .default_service(web::to(refuse))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        log::info!(
            "node {}: standby, waiting for the active node's lease",
            waiting.node
        );
        let poll = (lease / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
        futures_util::pin_mut!(shutdown);
        loop {
            match &active {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => log::warn!("standby: asking for the lease: {e}"),
            }
            tokio::select! {
                () = &mut shutdown => {
                    handle.stop(false).await;
                    return Ok(None);
                }
                () = actix_web::rt::time::sleep(poll) => {}
            }
            let shown = Arc::clone(&waiting);
            (pg, active) = blocking(move || {
                if let Ok(leader) = pg.leader() {
                    let (node, _, left_ms) = leader;
                    *waiting_leader(&shown) = (node, left_ms);
                }
                let active = pg.try_become_active();
                (pg, active)
            })
            .await?;
        }
        handle.stop(false).await;
    }
    let cache = config.cache_bytes;
    // The mirror's scratch directory, in the data directory (emptied at every start).
    let dir = config.data_dir.join(MIRROR_DIR);
    let store = blocking(move || pg.into_store(cache, &dir))
        .await?
        .map_err(|e| io::Error::other(format!("loading from PostgreSQL: {e}")))?;
    Ok(Some(store))
}

fn waiting_leader(waiting: &Waiting) -> std::sync::MutexGuard<'_, (String, i64)> {
    waiting
        .leader
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

async fn healthz(waiting: web::Data<Waiting>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(to_json(&Health {
            status: "ok".into(),
            role: Some("standby".into()),
            node: Some(waiting.node.clone()),
        }))
}

async fn refuse(waiting: web::Data<Waiting>) -> HttpResponse {
    let (leader, left_ms) = waiting_leader(&waiting).clone();
    // The active node's lease runs out in `left_ms` at most (then this node may take over).
    let retry_ms = u64::try_from(left_ms)
        .unwrap_or(0)
        .clamp(100, waiting.lease.as_millis() as u64);
    let message = if leader.is_empty() {
        "this node is a standby; another node is active".to_string()
    } else {
        format!("this node is a standby; node {leader} is active")
    };
    let body = HttpError {
        error: HttpErrorBody {
            code: ErrorCode::Standby,
            message,
            retry_after_ms: Some(retry_ms),
        },
    };
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", retry_ms.div_ceil(1000).to_string()))
        .content_type("application/json")
        .body(to_json(&body))
}
