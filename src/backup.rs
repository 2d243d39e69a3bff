//! Online backup (`POST /api/backup`, `rollcall backup`): a snapshot of the running server's data
//! in `<backup dir>/<UTC timestamp>/`, written while the server keeps serving. A snapshot is a
//! data directory (`db/` and the secrets files), so `rollcall serve --data <snapshot>` opens it,
//! and `rollcall check --data <snapshot>` checks it.
//!
//! The flow, one backup at a time (a second request meanwhile is `busy`):
//! 1. reserve `<stamp>.partial/` and start a [`Snapshot`] there (a new sled database);
//! 2. for every group (pages of the `groups` listing), send its actor [`ExportGroup`]: the actor
//!    writes its pending cursor moves and copies its own tree while it takes no commands
//!    (`group/backup.rs`), so every group in the snapshot is one consistent state of it, taken
//!    after the request arrived: every message acknowledged before the request is in, gapless.
//!    A group whose actor is not running is started for it (through [`Registry::group`], as any
//!    request does), so its actor is the one writer it waits for: one path for every group. The
//!    option not taken, copying an idle group straight from the store under the registry's slot
//!    lock (as the pruner does), saves that group's load but needs a registry method that holds
//!    the slot lock across a blocking copy. Groups go one at a time, so only one group's writes
//!    pause at any moment;
//! 3. copy what belongs to no group (users, accounts, settings, deleted ids), after the groups so
//!    that every member in the snapshot is a user there (users are never deleted);
//! 4. flush the snapshot, write its storage format (the mark of a finished copy), flush again;
//!    copy the secrets files `admin-token` and `jwt-secret` where the data directory has them
//!    (not when they come from the environment); rename `<stamp>.partial` to `<stamp>`.
//!
//! A failed backup removes its `.partial` directory; one cut short by a crash leaves it behind,
//! without a format (and `rollcall check` says so). Before starting, the free space where the
//! backup goes must exceed the live database's size plus `--min-free-mb`: a backup must not
//! starve the live server's writes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{ADMIN_TOKEN_FILE, JWT_SECRET_FILE};
use crate::config::BACKUPS_SUBDIR;
use crate::group::{reply_channel, ExportGroup, GroupError, GroupExported};
use crate::ids::GroupId;
use crate::protocol::{ErrorCode, Refusal};
use crate::registry::Registry;
use crate::store::{now_ms, GroupCopy, Snapshot, StoreError};

/// How many groups one listing call reads.
const GROUPS_PAGE: usize = 1000;

/// How often a group's export is tried when its actor stops under it (a panic; later, an idle
/// actor passivating just then).
const EXPORT_ATTEMPTS: u32 = 3;

/// The server's backups: one runs at a time.
#[derive(Default)]
pub struct Backups {
    /// Held while a backup runs (an async lock: it is held across the groups' copies).
    running: Arc<tokio::sync::Mutex<()>>,
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDone {
    /// The snapshot's directory (absolute).
    pub path: PathBuf,
    pub groups: u64,
    pub messages: u64,
    /// The snapshot's size on disk.
    pub bytes: u64,
    /// The longest time one group took no commands for its copy, and which group.
    pub longest_pause: Duration,
    pub longest_pause_group: Option<GroupId>,
}

/// Why a backup was not made.
#[derive(Debug)]
pub enum BackupError {
    /// Another backup is running.
    Running,
    /// Reading the store, or writing the snapshot, failed.
    Failed(String),
    /// A group could not be copied.
    Group(GroupError),
}

impl std::fmt::Display for BackupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupError::Running => write!(f, "a backup is already running"),
            BackupError::Failed(why) => write!(f, "{why}"),
            BackupError::Group(e) => write!(f, "{}", e.message()),
        }
    }
}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> BackupError {
        BackupError::Failed(e.to_string())
    }
}

impl From<BackupError> for Refusal {
    fn from(e: BackupError) -> Refusal {
        match e {
            BackupError::Running => Refusal::new(
                ErrorCode::Busy,
                "a backup is already running; retry once it has answered",
            ),
            BackupError::Failed(why) => {
                Refusal::new(ErrorCode::Storage, format!("backup failed: {why}"))
            }
            BackupError::Group(e) => e.into(),
        }
    }
}

/// An I/O error as a [`BackupError`], saying what was being done to which path.
fn io_failed<'a>(
    doing: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |e| BackupError::Failed(format!("{doing} {}: {e}", path.display()))
}

impl Backups {
    /// Writes a snapshot of everything the server stores (see the module doc); answers once it
    /// is durable and renamed into place. The backup runs on a task of its own, so a caller that
    /// stops waiting (an HTTP client gone away) neither cuts it short nor leaves its `.partial`
    /// directory behind.
    pub async fn run(&self, registry: &Arc<Registry>) -> Result<BackupDone, BackupError> {
        let Ok(running) = Arc::clone(&self.running).try_lock_owned() else {
            return Err(BackupError::Running);
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let registry = Arc::clone(registry);
        actix::spawn(async move {
            let result = backup(&registry).await;
            drop(running);
            let _ = done.send(result);
        });
        answer
            .await
            .unwrap_or_else(|_| Err(BackupError::Failed("the backup task stopped".into())))
    }
}

/// The whole backup (see the module doc).
async fn backup(registry: &Registry) -> Result<BackupDone, BackupError> {
    let started = Instant::now();
    let config = registry.config();
    let parent = config
        .backup_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join(BACKUPS_SUBDIR));
    std::fs::create_dir_all(&parent).map_err(io_failed("creating", &parent))?;
    check_space(&parent, &config.data_dir.join("db"), config.min_free_bytes)?;
    let (partial, path) = reserve(&parent, &utc_stamp(now_ms()))?;
    log::info!("backup into {} started", path.display());
    let written = write(registry, &partial).await.and_then(|done| {
        std::fs::rename(&partial, &path).map_err(io_failed("renaming", &partial))?;
        sync_dir(&parent);
        Ok(done)
    });
    let mut done = match written {
        Ok(done) => done,
        Err(e) => {
            log::error!("backup into {} failed: {e}", path.display());
            if let Err(e) = std::fs::remove_dir_all(&partial) {
                log::warn!("removing {}: {e}", partial.display());
            }
            return Err(e);
        }
    };
    done.path = std::fs::canonicalize(&path).unwrap_or(path);
    done.bytes = dir_size(&done.path);
    log::info!(
        "backup {}: {} groups, {} messages, {} bytes in {:?}; the longest pause of one \
         group's writes was {:?}{}",
        done.path.display(),
        done.groups,
        done.messages,
        done.bytes,
        started.elapsed(),
        done.longest_pause,
        done.longest_pause_group
            .as_ref()
            .map(|g| format!(" (group {g})"))
            .unwrap_or_default(),
    );
    Ok(done)
}

/// Steps 1 to 4 of the module doc, into `dir`.
async fn write(registry: &Registry, dir: &Path) -> Result<BackupDone, BackupError> {
    let store = Arc::clone(registry.store());
    let db = dir.join("db");
    let snapshot = blocking(move || store.begin_snapshot(&db)).await?;
    let mut done = BackupDone {
        path: dir.to_path_buf(),
        groups: 0,
        messages: 0,
        bytes: 0,
        longest_pause: Duration::ZERO,
        longest_pause_group: None,
    };
    let mut after: Option<GroupId> = None;
    loop {
        let page = registry.store().groups(after.as_ref(), GROUPS_PAGE)?;
        let full = page.len() == GROUPS_PAGE;
        for (id, _) in page {
            if let Some(exported) = export(registry, &snapshot, &id).await? {
                done.groups += 1;
                done.messages += exported.messages;
                if exported.pause >= done.longest_pause {
                    done.longest_pause = exported.pause;
                    done.longest_pause_group = Some(id.clone());
                }
            }
            after = Some(id);
        }
        if !full {
            break;
        }
    }
    let global = Arc::clone(&snapshot);
    blocking(move || global.copy_global()).await?;
    let finish = Arc::clone(&snapshot);
    blocking(move || finish.finish()).await?;
    // The last handle: every group has answered, so this closes the snapshot's database.
    drop(snapshot);
    copy_secrets(&registry.config().data_dir, dir)?;
    Ok(done)
}

/// Precopy rounds at most per group (each copies what came in during the one before).
const PRECOPY_ROUNDS: usize = 5;
/// A precopy round that copied at most this many messages ends the rounds.
const PRECOPY_SETTLED: u64 = 256;

/// Has the group's actor copy the group; `None` when the group is gone (deleted meanwhile).
async fn export(
    registry: &Registry,
    snapshot: &Arc<dyn Snapshot>,
    id: &GroupId,
) -> Result<Option<GroupExported>, BackupError> {
    // The bulk first, while the group keeps serving (its writes do not wait for this part), in
    // rounds while many messages came in during the previous one: the pause then copies few.
    let mut precopied = GroupCopy::default();
    for _ in 0..PRECOPY_ROUNDS {
        let (snapshot, id, after) = (Arc::clone(snapshot), id.clone(), precopied);
        let copied = blocking(move || snapshot.precopy_group(&id, &after)).await?;
        let new = copied.upto.saturating_sub(precopied.upto);
        precopied = copied;
        if new <= PRECOPY_SETTLED {
            break;
        }
    }
    for _ in 0..EXPORT_ATTEMPTS {
        let Some(addr) = registry.group(id)? else {
            return Ok(None);
        };
        let (reply, answer) = reply_channel();
        let snapshot = Arc::clone(snapshot);
        if addr
            .send(ExportGroup {
                snapshot,
                precopied,
                reply,
            })
            .await
            .is_err()
        {
            continue;
        }
        match answer.wait().await {
            Err(GroupError::Unavailable(why)) => {
                log::debug!("backup: group {id} unavailable ({why}); asking again");
            }
            answer => return answer.map_err(BackupError::Group),
        }
    }
    Err(BackupError::Group(GroupError::Unavailable(format!(
        "group {id} stopped {EXPORT_ATTEMPTS} times during the backup"
    ))))
}

/// Runs store work on the blocking pool (it reads or writes a whole database).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| BackupError::Failed(format!("the copy stopped: {e}")))?
        .map_err(BackupError::from)
}

/// Refuses a backup that would leave less than `min_free_bytes` free where it goes.
fn check_space(parent: &Path, db: &Path, min_free_bytes: u64) -> Result<(), BackupError> {
    let needed = dir_size(db);
    let free =
        fs2::available_space(parent).map_err(io_failed("reading the free space of", parent))?;
    if free < needed.saturating_add(min_free_bytes) {
        let mib = |bytes: u64| bytes >> 20;
        return Err(BackupError::Failed(format!(
            "{} has {} MiB free; the database takes {} MiB and {} MiB must stay free \
             (--min-free-mb): free some space or choose another --backup-dir",
            parent.display(),
            mib(free),
            mib(needed),
            mib(min_free_bytes)
        )));
    }
    Ok(())
}

/// Creates `<stamp>.partial` in `parent` for a backup that will be `<stamp>` (`<stamp>-2`, ...
/// when taken, by a backup of the same second or one cut short by a crash).
fn reserve(parent: &Path, stamp: &str) -> Result<(PathBuf, PathBuf), BackupError> {
    for n in 1..=100 {
        let name = if n == 1 {
            stamp.to_owned()
        } else {
            format!("{stamp}-{n}")
        };
        let path = parent.join(&name);
        let partial = parent.join(format!("{name}.partial"));
        if path.exists() {
            continue;
        }
        match std::fs::create_dir(&partial) {
            Ok(()) => return Ok((partial, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_failed("creating", &partial)(e)),
        }
    }
    Err(BackupError::Failed(format!(
        "{} holds 100 backups named {stamp}",
        parent.display()
    )))
}

/// Copies the data directory's secrets files (mode 0600) where it has them.
fn copy_secrets(data_dir: &Path, into: &Path) -> Result<(), BackupError> {
    for name in [ADMIN_TOKEN_FILE, JWT_SECRET_FILE] {
        let from = data_dir.join(name);
        let secret = match std::fs::read(&from) {
            Ok(secret) => secret,
            // Given in the environment (ROLLCALL_ADMIN_TOKEN, ROLLCALL_JWT_SECRET): none here.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_failed("reading", &from)(e)),
        };
        let to = into.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&to)
            .and_then(|mut file| {
                io::Write::write_all(&mut file, &secret)?;
                file.sync_all()
            })
            .map_err(io_failed("writing", &to))?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable (best effort: a failure is logged, the backup is there).
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("syncing {}: {e}", dir.display());
    }
}

/// The bytes of every file under `path` (0 for what cannot be read).
fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| dir_size(&entry.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format, UTC) for milliseconds since the epoch: sorts by
/// time, and has no `:` (which some file systems and tools refuse).
pub fn utc_stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_in_the_basic_format() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(utc_stamp(1_700_000_000_999), "20231114T221320Z");
        assert_eq!(utc_stamp(4_102_444_799_000), "20991231T235959Z");
    }

    #[test]
    fn a_taken_name_gets_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let (partial, path) = reserve(dir.path(), "s").unwrap();
        assert_eq!(
            (partial.file_name(), path.file_name()),
            (Some("s.partial".as_ref()), Some("s".as_ref()))
        );
        std::fs::rename(&partial, &path).unwrap();
        let (partial, path) = reserve(dir.path(), "s").unwrap();
        assert_eq!(path.file_name(), Some("s-2".as_ref()));
        // A backup cut short left its .partial: the next one goes beside it.
        let (_, path) = reserve(dir.path(), "s").unwrap();
        assert_eq!(path.file_name(), Some("s-3".as_ref()));
        assert!(partial.exists());
    }
}
