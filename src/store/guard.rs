//! The disk guard: refuses writes before the disk is full, and remembers a failed flush.
//!
//! sled turns any I/O error into a "global error": from then on every operation of that `Db`
//! fails until the process reopens it. So Rollcall keeps sled away from a full disk instead of
//! letting it hit `ENOSPC`: a monitor thread reads the free space of the data directory's file
//! system every [`CHECK_EVERY`], and while it is below `--min-free-mb` every write is refused
//! with [`StoreError::Unwritable`] before it reaches sled. Reads keep working, and writes resume
//! by themselves once space returns. Writes are refused the same way while the free space cannot
//! be read at all, or the directory at the data path is no longer the one sled opened: the data
//! directory was moved or deleted under the running server (sled would go on writing to files
//! that no longer have a name, so what it acknowledged would be gone at the next start), or its
//! file system fails.
//!
//! A flush that fails anyway (the disk filled faster than the monitor looks, an I/O error, a
//! file-size limit) is fatal, as in PostgreSQL after a failed fsync: the writes it covered may or
//! may not be on disk, and sled will refuse everything after. The guard records the failure,
//! every later write is refused, and the server stops (exit 1) so that its supervisor restarts
//! it on the data that did reach the disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::StoreError;

/// How often the monitor reads the free space.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Whether writes may go to the store now.
#[derive(Default)]
pub struct DiskGuard {
    /// Free space is below the watermark.
    low: AtomicBool,
    /// The free space cannot be read (the directory is gone, or its file system fails).
    unreadable: AtomicBool,
    /// A flush failed: the store is unusable until the process restarts.
    failed: Mutex<Option<String>>,
}

impl DiskGuard {
    /// Starts watching the file system of `dir`; the thread ends with the guard.
    pub fn watch(self: &Arc<Self>, dir: PathBuf, min_free_bytes: u64) {
        if min_free_bytes == 0 {
            return;
        }
        let guard = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("rollcall-disk".into())
            .spawn(move || monitor(guard, dir, min_free_bytes));
        if let Err(e) = spawned {
            log::error!("cannot start the disk monitor: {e}; free space is not watched");
        }
    }

    /// Ok when a write may proceed; the reason it may not otherwise.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.failure() {
            return Err(StoreError::Unwritable(format!("storage failed: {reason}")));
        }
        if self.low.load(Ordering::Relaxed) {
            return Err(StoreError::Unwritable(
                "the disk is (nearly) full; writes resume when space is freed".into(),
            ));
        }
        if self.unreadable.load(Ordering::Relaxed) {
            return Err(StoreError::Unwritable(
                "the data directory cannot be read, or was moved or deleted; writes resume when \
                 it is back"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Records a failed flush; the first reason is kept.
    pub fn fail(&self, reason: String) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_none() {
            log::error!("storage failed: {reason}; refusing every write until restarted");
            *failed = Some(reason);
        }
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_low(&self, low: bool, free: u64, min_free: u64) {
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                log::error!(
                    "disk nearly full ({free} bytes free, below {min_free}): refusing writes"
                );
            } else {
                log::warn!("disk space is back ({free} bytes free): accepting writes");
            }
        }
    }

    /// Records whether the free space of `dir` could be read; logs only the changes, so a
    /// directory that stays gone is one line in the log, not ten a second.
    fn set_readable(&self, dir: &std::path::Path, error: Option<&std::io::Error>) {
        let unreadable = error.is_some();
        if self.unreadable.swap(unreadable, Ordering::Relaxed) != unreadable {
            match error {
                Some(e) => log::error!(
                    "reading the free space of {}: {e}; refusing writes until it can be read",
                    dir.display()
                ),
                None => log::warn!(
                    "the free space of {} can be read again: accepting writes",
                    dir.display()
                ),
            }
        }
    }
}

fn monitor(guard: Weak<DiskGuard>, dir: PathBuf, min_free_bytes: u64) {
    // The directory sled opened: one made again at the same path (after it was deleted) is not
    // where sled's open files are.
    let opened = identity(&dir).ok();
    loop {
        let Some(guard) = guard.upgrade() else {
            return;
        };
        let free = identity(&dir).and_then(|now| {
            if opened.is_some_and(|opened| opened != now) {
                Err(std::io::Error::other(
                    "it is not the directory the server opened (deleted and made again?)",
                ))
            } else {
                fs2::available_space(&dir)
            }
        });
        match free {
            Ok(free) => {
                guard.set_readable(&dir, None);
                guard.set_low(free < min_free_bytes, free, min_free_bytes);
            }
            Err(e) => guard.set_readable(&dir, Some(&e)),
        }
        drop(guard);
        std::thread::sleep(CHECK_EVERY);
    }
}

/// The device and inode of `dir`.
fn identity(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| (m.dev(), m.ino()))
}
