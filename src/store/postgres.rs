//! The PostgreSQL store: the truth in a database the team already runs, with owner epochs
//! that fence every commit, and a lease that says which node is active.
//!
//! A node serves from a mirror (`mirror.rs`): the sled key layout in memory, filled from the
//! database when the node becomes active, every change journaled. A flush commits the journal
//! in one transaction (many messages per `COMMIT`) and answers after `COMMIT` returned. The
//! database holds the same keys and values as a sled data directory (table `kv`: tree, key,
//! value, in the codec's encoding), so one implementation of the layout serves both stores and
//! `rollcall migrate` copies a data directory as it is.
//!
//! Ownership:
//! - `leadership` (one row): the active node, its term and its lease. A node becomes active
//!   when the lease has expired (or was its own: a restart), raising the term, and in the same
//!   transaction raises the owner epoch of every group (`group_owners`), so nothing an earlier
//!   owner still has in flight can commit. It renews the lease every third of `--lease-ms`.
//! - Every commit reads the leadership row `FOR SHARE` and checks the term, applies this
//!   node's new group claims (epoch + 1, conditional on the epoch before), and checks the epoch
//!   of every group it writes `FOR SHARE`. A mismatch rolls it back: the node is fenced, and the
//!   server closes its sessions with 1012 and waits as a standby.
//!
//! Faults: a failed commit keeps its changes for the next one (each is idempotent: a put, a
//! remove, a dropped tree, a claim that is already this node's), marks the database
//! unreachable (writes are refused with [`StoreError::Unwritable`], answered `storage`), and the
//! lease task commits them as soon as the database answers again. A commit that lost its
//! connection during `COMMIT` has an unknown outcome: its senders are answered `storage`, and
//! their resend with the same `client_id` finds the message (its `client_id` is in the value
//! committed with it) or stores it once.
//!
//! Schema: versioned migrations embedded below, applied at start under an advisory lock; a
//! database with a newer schema is refused with both versions named.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::NoTls;

use super::mirror::{Change, Compacted, Remote};
use super::sled_store::group_of_tree;
use super::{SledStore, Store, StoreError};
use crate::ids::GroupId;

/// The schema this build creates and the newest it runs on.
pub const SCHEMA_VERSION: i32 = 1;

/// Migration `n` (from 1) takes the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: the key/value records of the sled layout, group owners, the active node.
    "CREATE TABLE kv (
         tree text NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         PRIMARY KEY (tree, key)
     );
     CREATE TABLE group_owners (
         group_id text PRIMARY KEY,
         epoch bigint NOT NULL,
         node_id text NOT NULL
     );
     CREATE TABLE leadership (
         id integer PRIMARY KEY CHECK (id = 1),
         node_id text NOT NULL,
         term bigint NOT NULL,
         expires_at timestamptz NOT NULL
     );
     INSERT INTO leadership VALUES (1, '', 0, 'epoch');",
];

/// The advisory lock taken while migrating (two nodes starting at once migrate once).
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6c6c; // "rollcall"

/// How long one commit may take before its outcome counts as unknown.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the database and who this node is.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:pass@host:port/db` (any libpq-style connection string).
    pub url: String,
    /// This node's name in `leadership` and `group_owners`.
    pub node_id: String,
    /// How long the active node's lease lasts without renewal.
    pub lease: Duration,
}

/// A node's connection to the database: the [`Remote`] of its mirror.
pub struct Postgres {
    inner: Arc<Inner>,
    /// The runtime the client runs on (its own threads: no actix arbiter waits on the network);
    /// shut down in the background on drop, which is allowed anywhere.
    runtime: Option<tokio::runtime::Runtime>,
}

struct Inner {
    pool: Pool,
    options: PgOptions,
    /// The leadership term this node holds (0: none yet).
    term: AtomicU64,
    state: Mutex<State>,
    /// One commit at a time, in the order they were asked for.
    commit: tokio::sync::Mutex<()>,
    unreachable: AtomicBool,
    fenced: AtomicBool,
    reasons: Mutex<Reasons>,
}

#[derive(Default)]
struct State {
    /// Changes not committed yet (a failed commit's, then newer ones).
    pending: Vec<Change>,
    /// Claims not committed yet: (group, new epoch).
    claims: Vec<(GroupId, u64)>,
    /// The epoch this node holds for each group it claimed or took over.
    epochs: HashMap<GroupId, u64>,
}

#[derive(Default)]
struct Reasons {
    unreachable: Option<String>,
    fenced: Option<String>,
}

/// What the active node's lease task and a standby's wait need to know of a failed call.
fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// This store, the mirror it backs, and the (records, groups) loaded into the mirror.
type LoadedMirror = (Arc<Postgres>, Arc<SledStore>, (u64, usize));

impl Postgres {
    /// Connects (a pool of a few connections on a runtime of its own) and brings the schema
    /// to [`SCHEMA_VERSION`]; refuses a newer one.
    pub fn connect(options: PgOptions) -> Result<Postgres, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rollcall-pg")
            .enable_all()
            .build()
            .map_err(|e| db_error(format!("starting the database runtime: {e}")))?;
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| db_error(format!("the --store URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(3));
        }
        config.keepalives(true);
        config.application_name("rollcall");
        // A node paused in the middle of a transaction (SIGSTOP, a long GC-like stall, a
        // partition) must not hold its locks, the leadership row's among them, for longer than
        // half a lease: the database ends such a session, and a takeover waits at most as long
        // for a lock before it asks again.
        let half_lease = (options.lease.as_millis() / 2).max(100);
        let ours = format!(
            "-c idle_in_transaction_session_timeout={half_lease} -c lock_timeout={half_lease}"
        );
        let options_string = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {ours}"),
            _ => ours,
        };
        config.options(&options_string);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| db_error(format!("the connection pool: {e}")))?;
        let inner = Arc::new(Inner {
            pool,
            options,
            term: AtomicU64::new(0),
            state: Mutex::default(),
            commit: tokio::sync::Mutex::new(()),
            unreachable: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            reasons: Mutex::default(),
        });
        let postgres = Postgres {
            inner,
            runtime: Some(runtime),
        };
        let inner = Arc::clone(&postgres.inner);
        postgres.block_on(async move { inner.migrate().await })?;
        Ok(postgres)
    }

    /// Connects for a tool (`rollcall check`, `rollcall migrate`): no node id, no lease.
    pub fn connect_to_read(url: &str) -> Result<Postgres, StoreError> {
        Postgres::connect(PgOptions {
            url: url.to_string(),
            node_id: String::new(),
            lease: Duration::from_secs(5),
        })
    }

    /// Runs `future` on the database runtime and waits for it (from any thread, an actix one
    /// included: only this thread blocks).
    fn block_on<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(db_error("the database runtime is gone"));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv()
            .unwrap_or_else(|_| Err(db_error("the database runtime stopped")))
    }

    /// Takes the lease if it is free (expired, or this node's own from before a restart),
    /// raising the term and every group's owner epoch; `Ok(false)`: another node holds it.
    pub fn try_become_active(&self) -> Result<bool, StoreError> {
        let inner = Arc::clone(&self.inner);
        self.block_on(async move { inner.acquire().await })
    }

    /// Who holds the lease now: (node id, term, milliseconds left; negative: expired).
    pub fn leader(&self) -> Result<(String, u64, i64), StoreError> {
        let inner = Arc::clone(&self.inner);
        self.block_on(async move {
            let client = inner.client().await?;
            let row = client
                .query_one(
                    "SELECT node_id, term, \
                     (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint \
                     FROM leadership WHERE id = 1",
                    &[],
                )
                .await
                .map_err(db_error)?;
            let term: i64 = row.get(1);
            Ok((row.get(0), u64::try_from(term).unwrap_or(0), row.get(2)))
        })
    }

    /// Becomes the store of an active node (after [`Postgres::try_become_active`]): loads the
    /// whole database into a mirror in `dir` (a scratch directory, emptied first) and starts
    /// renewing the lease.
    pub fn into_store(self, cache_bytes: u64, dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        let started = std::time::Instant::now();
        let (this, mirror, (entries, groups)) = self.load_mirror(cache_bytes, dir)?;
        log::info!(
            "loaded {entries} records of {groups} groups from PostgreSQL in {:?} (term {})",
            started.elapsed(),
            this.inner.term.load(Ordering::SeqCst)
        );
        if let Some(runtime) = &this.runtime {
            runtime.spawn(renew(Arc::downgrade(&this.inner)));
        }
        Ok(mirror)
    }

    /// A read-only copy of the whole database, for `rollcall check`: no lease is taken and no
    /// write of it ever reaches the database.
    pub fn snapshot_store(
        self,
        cache_bytes: u64,
        dir: &Path,
    ) -> Result<Arc<dyn Store>, StoreError> {
        self.inner.fenced.store(true, Ordering::SeqCst);
        self.inner.reasons().fenced = Some("a read-only copy (rollcall check)".into());
        let (_, mirror, _) = self.load_mirror(cache_bytes, dir)?;
        Ok(mirror)
    }

    /// A mirror in `dir` (emptied first) that this store backs, filled with the whole database.
    fn load_mirror(self, cache_bytes: u64, dir: &Path) -> Result<LoadedMirror, StoreError> {
        let this = Arc::new(self);
        let mirror = SledStore::mirror(Arc::clone(&this) as Arc<dyn Remote>, cache_bytes, dir)?;
        let mirror = Arc::new(mirror);
        let inner = Arc::clone(&this.inner);
        let target = Arc::clone(&mirror);
        let loaded = this.block_on(async move { inner.load(&target).await })?;
        Ok((this, mirror, loaded))
    }

    /// Copies a stopped server's sled data directory into this (empty) database: every record
    /// as it is, and the owner epochs. Refuses a database that holds any record.
    pub fn copy_from(&self, source: &SledStore) -> Result<u64, StoreError> {
        let mut rows: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
        source.scan_raw(&mut |tree, key, value| {
            let tree = std::str::from_utf8(tree)
                .map_err(|_| StoreError::Corrupt("a tree name that is not UTF-8".into()))?;
            rows.push((tree.to_string(), key.to_vec(), value.to_vec()));
            Ok(())
        })?;
        let owners = source.owner_epochs()?;
        let inner = Arc::clone(&self.inner);
        self.block_on(async move {
            let mut client = inner.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let any: Option<tokio_postgres::Row> = tx
                .query_opt("SELECT 1 FROM kv LIMIT 1", &[])
                .await
                .map_err(db_error)?;
            if any.is_some() {
                return Err(StoreError::Unwritable(
                    "the database already holds Rollcall data; migrate into an empty one".into(),
                ));
            }
            let n = rows.len() as u64;
            for chunk in rows.chunks(1000) {
                let trees: Vec<&str> = chunk.iter().map(|r| r.0.as_str()).collect();
                let keys: Vec<&[u8]> = chunk.iter().map(|r| r.1.as_slice()).collect();
                let values: Vec<&[u8]> = chunk.iter().map(|r| r.2.as_slice()).collect();
                tx.execute(PUT_SQL, &[&trees, &keys, &values])
                    .await
                    .map_err(db_error)?;
            }
            for (group, epoch) in &owners {
                let epoch = i64::try_from(*epoch).unwrap_or(i64::MAX);
                tx.execute(
                    "INSERT INTO group_owners (group_id, epoch, node_id) VALUES ($1, $2, '')",
                    &[&group.as_str(), &epoch],
                )
                .await
                .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)?;
            Ok(n)
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

const PUT_SQL: &str = "INSERT INTO kv (tree, key, value) \
     SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bytea[]) \
     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value";
const REMOVE_SQL: &str = "DELETE FROM kv USING UNNEST($1::text[], $2::bytea[]) AS r(tree, key) \
     WHERE kv.tree = r.tree AND kv.key = r.key";
const LEADERSHIP_SQL: &str = "SELECT node_id, term FROM leadership WHERE id = 1 FOR SHARE";
const OWNERS_SQL: &str = "SELECT group_id, epoch, node_id FROM group_owners \
     WHERE group_id = ANY($1::text[]) FOR SHARE";
const DROP_SQL: &str = "DELETE FROM kv WHERE tree = ANY($1::text[])";
/// A claim: epoch + 1 over the one before (or again, when a commit whose outcome was unknown
/// had already made it this node's).
const CLAIM_SQL: &str = "INSERT INTO group_owners (group_id, epoch, node_id) VALUES ($1, $2, $3) \
     ON CONFLICT (group_id) DO UPDATE SET epoch = EXCLUDED.epoch, node_id = EXCLUDED.node_id \
     WHERE group_owners.epoch = EXCLUDED.epoch - 1 \
        OR (group_owners.epoch = EXCLUDED.epoch AND group_owners.node_id = EXCLUDED.node_id)";

/// Why a transaction did not commit.
enum Refused {
    /// Another node owns what this one wrote.
    Fenced(String),
    /// The database failed or could not be reached; the outcome may be unknown.
    Failed(String),
}

impl From<tokio_postgres::Error> for Refused {
    fn from(e: tokio_postgres::Error) -> Refused {
        Refused::Failed(e.to_string())
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reasons(&self) -> std::sync::MutexGuard<'_, Reasons> {
        self.reasons.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| db_error(format!("connecting: {e}")))
    }

    fn set_unreachable(&self, reason: Option<String>) {
        let was = self.unreachable.swap(reason.is_some(), Ordering::SeqCst);
        match (&reason, was) {
            (Some(reason), false) => {
                log::error!("PostgreSQL failed ({reason}): refusing writes until it answers")
            }
            (None, true) => log::warn!("PostgreSQL answers again: accepting writes"),
            _ => {}
        }
        self.reasons().unreachable = reason;
    }

    fn fence(&self, reason: String) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            log::error!("fenced: {reason}; this node stops serving");
            self.reasons().fenced = Some(reason);
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS rollcall_schema (version integer NOT NULL)")
            .await
            .map_err(db_error)?;
        let found: Option<i32> = tx
            .query_one("SELECT max(version) FROM rollcall_schema", &[])
            .await
            .map_err(db_error)?
            .get(0);
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "the database has Rollcall schema version {found}, written by a newer Rollcall; \
                 this build runs on schema versions up to {SCHEMA_VERSION}: upgrade Rollcall"
            )));
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = n as i32 + 1;
            log::info!("PostgreSQL schema: migrating to version {version}");
            tx.batch_execute(sql).await.map_err(db_error)?;
            tx.execute("INSERT INTO rollcall_schema VALUES ($1)", &[&version])
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    fn lease_ms(&self) -> f64 {
        self.options.lease.as_secs_f64() * 1000.0
    }

    async fn acquire(&self) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let node = self.options.node_id.as_str();
        let row = tx
            .query_opt(
                "UPDATE leadership SET node_id = $1, term = term + 1, \
                 expires_at = now() + $2::float8 * interval '1 millisecond' \
                 WHERE id = 1 AND (expires_at < now() OR node_id = $1) RETURNING term",
                &[&node, &self.lease_ms()],
            )
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let term: i64 = row.get(0);
        // Every group: nothing an earlier owner has in flight commits after this.
        tx.execute(
            "UPDATE group_owners SET epoch = epoch + 1, node_id = $1",
            &[&node],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.term
            .store(u64::try_from(term).unwrap_or(0), Ordering::SeqCst);
        log::info!("node {node} is active (term {term})");
        Ok(true)
    }

    /// Fills `mirror` from the database; returns (records, groups with an owner).
    async fn load(&self, mirror: &SledStore) -> Result<(u64, usize), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_error)?;
        let owners = tx
            .query("SELECT group_id, epoch FROM group_owners", &[])
            .await
            .map_err(db_error)?;
        let mut epochs = HashMap::new();
        for row in owners {
            let id: String = row.get(0);
            let epoch: i64 = row.get(1);
            if let Ok(group) = GroupId::parse(&id) {
                epochs.insert(group, u64::try_from(epoch).unwrap_or(0));
            }
        }
        let rows = tx
            .query_raw(
                // In the primary key's order: tree by tree, keys sorted (see MirrorLoader).
                "SELECT tree, key, value FROM kv ORDER BY tree, key",
                std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
            )
            .await
            .map_err(db_error)?;
        futures_util::pin_mut!(rows);
        let mut n = 0u64;
        let mut loader = mirror.loader();
        while let Some(row) = rows.next().await {
            let row = row.map_err(db_error)?;
            let tree: &str = row.get(0);
            let key: &[u8] = row.get(1);
            let value: &[u8] = row.get(2);
            loader.add(tree.as_bytes(), key, value)?;
            n += 1;
        }
        loader.apply()?;
        tx.commit().await.map_err(db_error)?;
        let groups = epochs.len();
        self.state().epochs = epochs;
        Ok((n, groups))
    }

    async fn commit(
        &self,
        changes: Vec<Change>,
        claims: &[(GroupId, u64)],
    ) -> Result<Vec<GroupId>, StoreError> {
        let _one = self.commit.lock().await;
        if self.fenced.load(Ordering::SeqCst) {
            let reason = self.reasons().fenced.clone().unwrap_or_default();
            return Err(StoreError::Fenced(reason));
        }
        let (batch, new_claims, expected) = {
            let mut state = self.state();
            for (group, epoch) in claims {
                if state.epochs.get(group) != Some(epoch) {
                    drop(state);
                    let reason = format!("group {group} was claimed again after epoch {epoch}");
                    self.fence(reason.clone());
                    return Err(StoreError::Fenced(reason));
                }
            }
            state.pending.extend(changes);
            let batch = std::mem::take(&mut state.pending);
            let new_claims = std::mem::take(&mut state.claims);
            let mut touched: Vec<GroupId> = batch
                .iter()
                .filter_map(|c| match c {
                    Change::Put { tree, .. }
                    | Change::Remove { tree, .. }
                    | Change::DropTree { tree } => group_of_tree(tree),
                })
                .chain(claims.iter().map(|(g, _)| g.clone()))
                .collect();
            touched.sort();
            touched.dedup();
            let expected: Vec<(GroupId, u64)> = touched
                .into_iter()
                .filter_map(|g| state.epochs.get(&g).map(|e| (g, *e)))
                .collect();
            (batch, new_claims, expected)
        };
        if batch.is_empty() && new_claims.is_empty() {
            return Ok(Vec::new());
        }
        let compacted = Compacted::of(batch.clone());
        let outcome = tokio::time::timeout(
            COMMIT_TIMEOUT,
            self.transact(&compacted, &new_claims, &expected),
        )
        .await
        .unwrap_or_else(|_| Err(Refused::Failed("the commit timed out".into())));
        match outcome {
            Ok(()) => {
                if self.unreachable.load(Ordering::SeqCst) {
                    self.set_unreachable(None);
                }
                Ok(Vec::new())
            }
            Err(Refused::Fenced(reason)) => {
                self.fence(reason.clone());
                Err(StoreError::Fenced(reason))
            }
            Err(Refused::Failed(reason)) => {
                // Kept for the next commit, in front of what came meanwhile.
                let mut state = self.state();
                let newer = std::mem::take(&mut state.pending);
                state.pending = batch;
                state.pending.extend(newer);
                let newer_claims = std::mem::take(&mut state.claims);
                state.claims = new_claims;
                state.claims.extend(newer_claims);
                drop(state);
                self.set_unreachable(Some(reason.clone()));
                Err(StoreError::Database(reason))
            }
        }
    }

    async fn transact(
        &self,
        batch: &Compacted,
        claims: &[(GroupId, u64)],
        expected: &[(GroupId, u64)],
    ) -> Result<(), Refused> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| Refused::Failed(format!("connecting: {e}")))?;
        let tx = client.transaction().await?;
        let node = self.options.node_id.as_str();
        let term = self.term.load(Ordering::SeqCst);
        let name = |tree: &sled::IVec| -> Result<String, Refused> {
            String::from_utf8(tree.to_vec())
                .map_err(|_| Refused::Failed("a tree name that is not UTF-8".into()))
        };
        let dropped = batch
            .dropped
            .iter()
            .map(name)
            .collect::<Result<Vec<_>, _>>()?;
        let removed_trees = batch
            .removed
            .iter()
            .map(|(t, _)| name(t))
            .collect::<Result<Vec<_>, _>>()?;
        let removed_keys: Vec<&[u8]> = batch.removed.iter().map(|(_, k)| k.as_ref()).collect();
        let put_trees = batch
            .put
            .iter()
            .map(|(t, _, _)| name(t))
            .collect::<Result<Vec<_>, _>>()?;
        let put_keys: Vec<&[u8]> = batch.put.iter().map(|(_, k, _)| k.as_ref()).collect();
        let put_values: Vec<&[u8]> = batch.put.iter().map(|(_, _, v)| v.as_ref()).collect();
        let ids: Vec<&str> = expected.iter().map(|(g, _)| g.as_str()).collect();
        // Prepared once per connection (deadpool caches them).
        let leadership = tx.prepare_cached(LEADERSHIP_SQL).await?;
        let claim = tx.prepare_cached(CLAIM_SQL).await?;
        let owners = tx.prepare_cached(OWNERS_SQL).await?;
        let drop = tx.prepare_cached(DROP_SQL).await?;
        let remove = tx.prepare_cached(REMOVE_SQL).await?;
        let put = tx.prepare_cached(PUT_SQL).await?;
        let claims: Vec<(&str, i64)> = claims
            .iter()
            .map(|(g, e)| (g.as_str(), i64::try_from(*e).unwrap_or(i64::MAX)))
            .collect();
        type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
        let claim_params: Vec<[Param<'_>; 3]> = claims
            .iter()
            .map(|(group, epoch)| [group as Param<'_>, epoch, &node])
            .collect();
        let drop_params: [Param<'_>; 1] = [&dropped];
        let remove_params: [Param<'_>; 2] = [&removed_trees, &removed_keys];
        let put_params: [Param<'_>; 3] = [&put_trees, &put_keys, &put_values];
        // Every statement of the transaction goes out at once (tokio-postgres pipelines the
        // queries polled together on one connection, and the database runs them in that
        // order): the checks first, then the writes. A failed check rolls the whole
        // transaction back, writes included, so nothing is committed before it is known.
        let (leader, claimed, held, (), (), ()) = tokio::try_join!(
            tx.query_one(&leadership, &[]),
            futures_util::future::try_join_all(
                claim_params.iter().map(|params| tx.execute(&claim, params))
            ),
            async {
                if ids.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&owners, &[&ids]).await
                }
            },
            write(&tx, &drop, &drop_params, dropped.is_empty()),
            write(&tx, &remove, &remove_params, removed_trees.is_empty()),
            write(&tx, &put, &put_params, put_trees.is_empty()),
        )?;
        let (leader_node, leader_term): (String, i64) = (leader.get(0), leader.get(1));
        if leader_node != node || u64::try_from(leader_term).ok() != Some(term) {
            return Err(Refused::Fenced(format!(
                "node {leader_node} took over (term {leader_term}; this node held term {term})"
            )));
        }
        if let Some(((group, epoch), _)) = claims.iter().zip(&claimed).find(|(_, n)| **n == 0) {
            return Err(Refused::Fenced(format!(
                "group {group} was claimed by another node before epoch {epoch}"
            )));
        }
        let held: HashMap<String, (i64, String)> = held
            .into_iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        for (group, epoch) in expected {
            let owner = held.get(group.as_str());
            let mine = owner
                .is_some_and(|(e, n)| u64::try_from(*e).ok() == Some(*epoch) && n.as_str() == node);
            if !mine {
                return Err(Refused::Fenced(format!(
                    "group {group} is owned by {owner:?}, not by this node at epoch {epoch}"
                )));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Renews the lease once: `Ok(false)` when another node holds it now.
    async fn renew_once(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let term = i64::try_from(self.term.load(Ordering::SeqCst)).unwrap_or(0);
        let renewed = client
            .execute(
                "UPDATE leadership SET expires_at = now() + $3::float8 * interval '1 millisecond' \
                 WHERE id = 1 AND node_id = $1 AND term = $2",
                &[&self.options.node_id.as_str(), &term, &self.lease_ms()],
            )
            .await
            .map_err(db_error)?;
        Ok(renewed == 1)
    }
}

/// Runs one of a commit's writes, unless it has nothing to write (`empty`).
async fn write(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    empty: bool,
) -> Result<(), tokio_postgres::Error> {
    if !empty {
        tx.execute(statement, params).await?;
    }
    Ok(())
}

/// The active node's lease task: renews every third of the lease; commits what a failed
/// commit kept once the database answers; fences the node when a whole lease passed without a
/// renewal (it may have been taken over meanwhile); stops when the node is fenced or the store
/// dropped.
async fn renew(inner: std::sync::Weak<Inner>) {
    // Measured from before each renewal was asked for, so it never runs past the lease the
    // database granted.
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        let Some(node) = inner.upgrade() else {
            return;
        };
        let every = node.options.lease / 3;
        if node.fenced.load(Ordering::SeqCst) {
            return;
        }
        let asked_at = tokio::time::Instant::now();
        match node.renew_once().await {
            Ok(true) => {
                renewed_at = asked_at;
                if node.unreachable.load(Ordering::SeqCst) {
                    if let Err(e) = node.commit(Vec::new(), &[]).await {
                        log::warn!("committing the writes kept from a failed commit: {e}");
                    }
                }
            }
            Ok(false) => {
                node.fence("another node took over the lease".into());
                return;
            }
            Err(e) if renewed_at.elapsed() >= node.options.lease => {
                // Unrenewed for a whole lease: a standby may hold it now. Stop acting on it
                // before anyone could (the sessions go with 1012; clients try other nodes).
                node.fence(format!(
                    "the lease could not be renewed for a whole lease ({e})"
                ));
                return;
            }
            Err(e) => log::warn!("renewing the lease: {e}"),
        }
        drop(node);
        tokio::time::sleep(every).await;
    }
}

impl Remote for Postgres {
    fn commit(
        &self,
        changes: Vec<Change>,
        claims: &[(GroupId, u64)],
    ) -> Result<Vec<GroupId>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let claims = claims.to_vec();
        self.block_on(async move { inner.commit(changes, &claims).await })
    }

    fn claim(&self, group: &GroupId) -> Result<u64, StoreError> {
        // Refused only when fenced: a group starts (and is read) while the database is away;
        // the claim is committed with the next commit.
        if let Some(reason) = self.fenced() {
            return Err(StoreError::Fenced(reason));
        }
        let mut state = self.inner.state();
        let epoch = state.epochs.get(group).copied().unwrap_or(0) + 1;
        state.epochs.insert(group.clone(), epoch);
        state.claims.push((group.clone(), epoch));
        Ok(epoch)
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.inner.fenced.load(Ordering::Relaxed) {
            let reason = self.inner.reasons().fenced.clone().unwrap_or_default();
            return Err(StoreError::Fenced(reason));
        }
        if self.inner.unreachable.load(Ordering::Relaxed) {
            let reason = self.inner.reasons().unreachable.clone().unwrap_or_default();
            return Err(StoreError::Unwritable(format!(
                "the database is unreachable ({reason}); writes resume when it answers"
            )));
        }
        Ok(())
    }

    fn fenced(&self) -> Option<String> {
        if !self.inner.fenced.load(Ordering::Relaxed) {
            return None;
        }
        self.inner.reasons().fenced.clone()
    }
}
