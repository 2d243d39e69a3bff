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

use super::super::codec::decode;
use super::super::{GroupCopy, MessageRecord, Snapshot, StoreError};
use super::{
    group_tree, keys, SledStore, FORMAT_KEY, FORMAT_VERSION, GROUPS, GROUP_TREE_PREFIX, LOG_FILE,
    SCHEDULED_GROUPS, USER_GROUPS,
};
use crate::ids::{GroupId, Seq};

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

impl SledSnapshot {
    /// Copies `from`'s keys in `range` into `into`; adds what it copied to `copy`.
    fn copy_range<R: std::ops::RangeBounds<Vec<u8>>>(
        from: &sled::Tree,
        into: &sled::Tree,
        range: R,
        copy: &mut GroupCopy,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for entry in from.range(range) {
            let (key, value) = entry?;
            each(&key, &value)?;
            copy.bytes += u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX);
            into.insert(key, value)?;
        }
        Ok(())
    }

    /// The sender index key of the message stored under `value` at `seq`.
    fn sent_key(value: &[u8], seq: Seq) -> Result<Vec<u8>, StoreError> {
        let record: MessageRecord = decode(value)?;
        Ok(keys::sent(&record.from, seq))
    }
}

impl Snapshot for SledSnapshot {
    fn precopy_group(&self, group: &GroupId, after: &GroupCopy) -> Result<GroupCopy, StoreError> {
        let mut copy = *after;
        if !self.source_groups.contains_key(group.as_str().as_bytes())? {
            return Ok(copy);
        }
        let name = group_tree(group);
        let from = self.source.open_tree(&name)?;
        let into = self.target.open_tree(&name)?;
        let Some(last) = from.scan_prefix([keys::MESSAGE]).next_back() else {
            return Ok(copy);
        };
        let upto = keys::seq_of(&last?.0)
            .ok_or_else(|| StoreError::Corrupt(format!("message key in group {group}")))?;
        if upto.0 <= after.upto {
            return Ok(copy);
        }
        let first_round = after.upto == 0;
        let messages = keys::message(Seq(after.upto + 1)).to_vec()..=keys::message(upto).to_vec();
        let mut n = 0;
        Self::copy_range(&from, &into, messages, &mut copy, |key, value| {
            n += 1;
            if !first_round {
                // A later round: this message's index entry, found through its sender.
                if let Some(seq) = keys::seq_of(key) {
                    let entry = Self::sent_key(value, seq)?;
                    if let Some(marker) = from.get(&entry)? {
                        into.insert(entry, marker)?;
                    }
                }
            }
            Ok(())
        })?;
        if first_round {
            // The index entries of everything copied, in one pass over the index.
            for entry in from.scan_prefix([keys::SENT]) {
                let (key, value) = entry?;
                if keys::seq_of(&key).is_some_and(|seq| seq <= upto) {
                    copy.bytes += u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX);
                    into.insert(key, value)?;
                }
            }
        }
        copy.messages = after.messages + n;
        copy.upto = upto.0;
        Ok(copy)
    }

    fn copy_group(
        &self,
        group: &GroupId,
        precopied: &GroupCopy,
    ) -> Result<Option<GroupCopy>, StoreError> {
        let id = group.as_str().as_bytes();
        // Before its tree: a group without a record (deleted) must not get its tree back.
        let Some(record) = self.source_groups.get(id)? else {
            return Ok(None);
        };
        let name = group_tree(group);
        let from = self.source.open_tree(&name)?;
        let into = self.target.open_tree(&name)?;
        let upto = Seq(precopied.upto);
        let mut copy = GroupCopy {
            messages: precopied.messages,
            bytes: precopied.bytes,
            upto: precopied.upto,
        };
        let mut changed: Vec<u64> = Vec::new();
        let mut deleted: Vec<u64> = Vec::new();
        let (sent, messages) = (vec![keys::SENT], vec![keys::MESSAGE]);
        let after_sent = vec![keys::SENT + 1];
        let after_messages = vec![keys::MESSAGE + 1];
        // Everything below the sender index, and between it and the messages.
        Self::copy_range(&from, &into, ..sent, &mut copy, |_, _| Ok(()))?;
        Self::copy_range(&from, &into, after_sent..messages, &mut copy, |key, _| {
            // An edit (or a delete) since the precopy rewrote its message.
            if matches!(key.first(), Some(&keys::EDITED) | Some(&keys::DELETED)) {
                if let Some((seq, _)) = keys::seq_key_parts(key).filter(|(s, _)| *s <= upto) {
                    changed.push(seq.0);
                    if key.first() == Some(&keys::DELETED) {
                        deleted.push(seq.0);
                    }
                }
            }
            Ok(())
        })?;
        // The messages after the precopy, with their index entries.
        let mut newer = 0;
        let later = keys::message(Seq(upto.0 + 1)).to_vec()..after_messages.clone();
        Self::copy_range(&from, &into, later, &mut copy, |key, value| {
            newer += 1;
            let seq = keys::seq_of(key)
                .ok_or_else(|| StoreError::Corrupt(format!("message key in group {group}")))?;
            let entry = Self::sent_key(value, seq)?;
            if let Some(marker) = from.get(&entry)? {
                into.insert(entry, marker)?;
            }
            Ok(())
        })?;
        Self::copy_range(&from, &into, after_messages.., &mut copy, |key, _| {
            if key.first() == Some(&keys::MEMBER) {
                // The member's index entry, as it is now (the member record is the truth;
                // an entry missing in the live store stays missing in the copy).
                if let Some(user) = keys::second_of(key, 1) {
                    let entry = keys::pair(user, group.as_str());
                    if let Some(marker) = self.source_user_groups.get(&entry)? {
                        self.target_user_groups.insert(entry, marker)?;
                    }
                }
            }
            // A deletion note below the precopy's head: its message changed (see above).
            if key.first() == Some(&keys::DELETED) {
                if let Some((seq, _)) = keys::seq_key_parts(key).filter(|(s, _)| *s <= upto) {
                    changed.push(seq.0);
                    deleted.push(seq.0);
                }
            }
            Ok(())
        })?;
        // Messages changed since the precopy: copied again; a deleted one leaves the index.
        for seq in changed {
            let key = keys::message(Seq(seq));
            if let Some(value) = from.get(key)? {
                if deleted.contains(&seq) {
                    into.remove(Self::sent_key(&value, Seq(seq))?)?;
                }
                into.insert(key, value)?;
            }
        }
        // Messages pruned since the precopy: gone from the copy too, with their index entries.
        let first = match from.scan_prefix([keys::MESSAGE]).next() {
            Some(entry) => keys::seq_of(&entry?.0).unwrap_or(Seq(u64::MAX)),
            None => Seq(u64::MAX),
        };
        let pruned: Vec<(sled::IVec, sled::IVec)> = into
            .range(keys::message(Seq(0)).to_vec()..keys::message(first).to_vec())
            .collect::<Result<_, _>>()?;
        let n_pruned = u64::try_from(pruned.len()).unwrap_or(0);
        for (key, value) in pruned {
            if let Some(seq) = keys::seq_of(&key) {
                into.remove(Self::sent_key(&value, seq)?)?;
            }
            into.remove(key)?;
        }
        copy.messages = (copy.messages + newer).saturating_sub(n_pruned);
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
