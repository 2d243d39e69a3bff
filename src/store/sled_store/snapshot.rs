//! The sled [`Snapshot`]: a second sled database, filled by copying key/value pairs raw from the
//! live one.
//!
//! Raw copies rather than decoded records: the copy needs no knowledge of record types, so it
//! also carries key kinds and trees this build does not know (a newer build's data survives a
//! backup taken by an older one). Plain inserts rather than sled batches: a batch takes sled's
//! process-wide write lock, which would stall every group of the live server for the copy of
//! one (ARCHITECTURE.md, *Invariants*). The target runs without sled's background flusher
//! (`flush_every_ms(None)`): [`Snapshot::finish`] flushes it, and dropping it then closes the
//! files at once, so a server can open the snapshot as soon as the backup answered.
//!
//! Rejected: sled's own `Db::export`/`import`, which walks every tree with no point at which a
//! group holds still, so a group's cursors could be copied from after its last copied message.

use std::path::{Path, PathBuf};

use super::super::{GroupCopy, Snapshot, StoreError};
use super::{
    group_tree, keys, SledStore, FORMAT_KEY, FORMAT_VERSION, GROUPS, GROUP_TREE_PREFIX, LOG_FILE,
    SCHEDULED_GROUPS, USER_GROUPS,
};
use crate::ids::GroupId;

/// The page cache of the target: it is written once, front to back, and read by nobody.
const TARGET_CACHE_BYTES: u64 = 16 << 20;

/// A snapshot of a [`SledStore`] in progress.
pub(in crate::store) struct SledSnapshot {
    source: sled::Db,
    source_groups: sled::Tree,
    source_user_groups: sled::Tree,
    source_scheduled_groups: sled::Tree,
    target: sled::Db,
    target_groups: sled::Tree,
    target_user_groups: sled::Tree,
    target_scheduled_groups: sled::Tree,
    dir: PathBuf,
}

impl SledSnapshot {
    /// A new, empty database in `dir` (refused if one exists there).
    pub(in crate::store) fn create(
        store: &SledStore,
        dir: &Path,
    ) -> Result<SledSnapshot, StoreError> {
        let target = sled::Config::new()
            .path(dir)
            .create_new(true)
            .cache_capacity(TARGET_CACHE_BYTES)
            .flush_every_ms(None)
            .open()?;
        Ok(SledSnapshot {
            source: store.db.clone(),
            source_groups: store.groups.clone(),
            source_user_groups: store.user_groups.clone(),
            source_scheduled_groups: store.scheduled_groups.clone(),
            target_groups: target.open_tree(GROUPS)?,
            target_user_groups: target.open_tree(USER_GROUPS)?,
            target_scheduled_groups: target.open_tree(SCHEDULED_GROUPS)?,
            target,
            dir: dir.to_path_buf(),
        })
    }
}

/// Whether a shared tree is copied group by group rather than whole.
fn copied_per_group(name: &[u8]) -> bool {
    name.starts_with(GROUP_TREE_PREFIX.as_bytes())
        || [GROUPS, USER_GROUPS, SCHEDULED_GROUPS]
            .iter()
            .any(|tree| tree.as_bytes() == name)
}

impl Snapshot for SledSnapshot {
    fn copy_group(&self, group: &GroupId) -> Result<Option<GroupCopy>, StoreError> {
        let id = group.as_str().as_bytes();
        // Before its tree: a group without a record (deleted) must not get its tree back.
        let Some(record) = self.source_groups.get(id)? else {
            return Ok(None);
        };
        let name = group_tree(group);
        let from = self.source.open_tree(&name)?;
        let into = self.target.open_tree(&name)?;
        let mut copy = GroupCopy::default();
        for entry in from.iter() {
            let (key, value) = entry?;
            match key.first() {
                Some(&keys::MESSAGE) => copy.messages += 1,
                Some(&keys::MEMBER) => {
                    // The member's index entry, as it is now (the member record is the truth;
                    // an entry missing in the live store stays missing in the copy).
                    if let Some(user) = keys::second_of(&key, 1) {
                        let entry = keys::pair(user, group.as_str());
                        if let Some(marker) = self.source_user_groups.get(&entry)? {
                            self.target_user_groups.insert(entry, marker)?;
                        }
                    }
                }
                _ => {}
            }
            copy.bytes += u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX);
            into.insert(key, value)?;
        }
        if let Some(marker) = self.source_scheduled_groups.get(id)? {
            self.target_scheduled_groups.insert(id, marker)?;
        }
        self.target_groups.insert(id, record)?;
        Ok(Some(copy))
    }

    fn copy_global(&self) -> Result<(), StoreError> {
        let default_name = self.source.name();
        for name in self.source.tree_names() {
            if copied_per_group(&name) {
                continue;
            }
            if name == default_name {
                // The default tree: everything but the format, which `finish` writes last.
                for entry in self.source.iter() {
                    let (key, value) = entry?;
                    if key != FORMAT_KEY {
                        self.target.insert(key, value)?;
                    }
                }
                continue;
            }
            let into = self.target.open_tree(&name)?;
            for entry in self.source.open_tree(&name)?.iter() {
                let (key, value) = entry?;
                into.insert(key, value)?;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), StoreError> {
        let sync = || -> Result<(), StoreError> {
            self.target.flush()?;
            std::fs::File::open(self.dir.join(LOG_FILE))
                .and_then(|file| file.sync_all())
                .map_err(|e| StoreError::Engine(sled::Error::Io(e)))
        };
        // Everything first, then the mark: a copy cut short has no format and is never taken
        // for a finished one (`rollcall check` says so).
        sync()?;
        self.target
            .insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
        sync()
    }
}
