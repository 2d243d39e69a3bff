//! The sled implementation of [`Store`].
//!
//! Layout: one sled `Db`; three shared trees, and one tree per group that holds that group's
//! messages and member cursors, as the design card has it (one group actor owns one tree).
//! ARCHITECTURE.md gives the 1,000-group measurement behind keeping a tree per group (no space
//! blow-up; 20-30% less disk than one shared tree with group-prefixed keys).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `users` | user id | [`UserRecord`] |
//! | `groups` | group id | [`GroupRecord`] |
//! | `user_groups` | `[len][user][group]` | empty (index for `welcome`) |
//! | `group:<id>` | `m` + seq (big-endian u64) | [`MessageRecord`] |
//! | `group:<id>` | `u` + user id | [`MemberRecord`] |
//! | `group:<id>` | `b` + `[len][sender]` + seq | [`SentRecord`] (`()` where an older build wrote it) |
//! | `accounts` | user id | [`AccountRecord`] (absent: the defaults) |
//! | `deleted_groups` | group id | empty (a deleted id, never handed out again) |
//!
//! (The other keys of a group's tree are in `keys.rs`.) A sender index entry held `()` before it
//! held a [`SentRecord`]; the storage format did not change for it, because no build reads that
//! value but [`Store::scan_sent_window`] (the older ones ignore it: `scan_sent` and the check
//! read only keys, a snapshot copies it raw), and that reads `()` as "ask the message".
//!
//! No transactions and no batches: sled takes a process-wide lock for them. Membership writes the
//! index entry before the member record and removes it after, so the index is always a superset.
//!
//! The default tree holds one key, `format`: the storage format version (u32, big-endian), written
//! when the database is created. A build refuses a directory whose format is newer than its own
//! [`FORMAT_VERSION`] instead of misreading it.
//!
//! Every write first asks the [`DiskGuard`], so a nearly full disk or a failed flush refuses
//! writes before they reach sled.
//!
//! A [`Snapshot`](super::Snapshot) (the online backup) is a second sled database that
//! `snapshot.rs` fills with raw copies of this one's keys and values, a group at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{decode, encode};
use super::keys;
use super::mirror::{Change, Remote};
use super::{
    AccountRecord, Direction, DiskGuard, GroupRecord, GroupSettingsRecord, MemberFlagsRecord,
    MemberRecord, MessageRecord, Note, ReminderRecord, RetentionRecord, RoleRecord, ScheduleRecord,
    SentRecord, Store, StoreError, UserRecord, UserSettingsRecord,
};
use crate::config::Durability;
use crate::ids::{GroupId, Seq, UserId};

/// sled-backed storage in one directory.
pub struct SledStore {
    db: sled::Db,
    /// sled's log file, opened a second time for `fsync` when durability is `Power`.
    log_file: Option<std::fs::File>,
    users: sled::Tree,
    user_settings: sled::Tree,
    groups: sled::Tree,
    user_groups: sled::Tree,
    /// Group ids with a scheduled reminder (a key each, no value).
    scheduled_groups: sled::Tree,
    accounts: sled::Tree,
    /// Ids of deleted groups (a key each, no value).
    deleted_groups: sled::Tree,
    /// Group id → the owner epoch of its last claim (see [`Store::claim_group`]); unused in
    /// a mirror, whose claims are the remote's.
    owners: sled::Tree,
    guard: Arc<DiskGuard>,
    dir: PathBuf,
    /// A mirror's journal of raw changes since the last flush, and where they become durable
    /// (see `mirror.rs`); `None` for a database of its own.
    mirror: Option<Mirror>,
}

/// Fills a mirror from the remote, tree by tree, in sled batches: nothing else runs on the
/// mirror while it loads, so the process-wide lock a batch takes stalls no one (and a batch
/// of sorted keys is several times faster than inserts one by one).
pub(super) struct MirrorLoader<'a> {
    db: &'a sled::Db,
    /// The tree being filled and its name.
    tree: Option<(Vec<u8>, sled::Tree)>,
    batch: sled::Batch,
    n_batched: usize,
}

/// Entries per batch while loading a mirror.
const LOAD_BATCH: usize = 10_000;

impl MirrorLoader<'_> {
    /// Adds one entry (best in tree, then key, order).
    pub(super) fn add(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self
            .tree
            .as_ref()
            .is_none_or(|(name, _)| name.as_slice() != tree)
        {
            self.apply()?;
            self.tree = Some((tree.to_vec(), self.db.open_tree(tree)?));
        }
        self.batch.insert(key, value);
        self.n_batched += 1;
        if self.n_batched >= LOAD_BATCH {
            self.apply()?;
        }
        Ok(())
    }

    /// Applies what is batched.
    pub(super) fn apply(&mut self) -> Result<(), StoreError> {
        if self.n_batched == 0 {
            return Ok(());
        }
        if let Some((_, tree)) = &self.tree {
            tree.apply_batch(std::mem::take(&mut self.batch))?;
        }
        self.n_batched = 0;
        Ok(())
    }
}

/// Called with (tree, key, value) of raw entries.
pub(super) type RawVisit<'a> = dyn FnMut(&[u8], &[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// What makes a [`SledStore`] a mirror: every raw write is journaled in write order, and a
/// flush hands the journal to the remote store instead of flushing sled.
struct Mirror {
    /// Held while a write is applied and journaled, so the journal's order is sled's.
    journal: std::sync::Mutex<Vec<Change>>,
    remote: Arc<dyn Remote>,
}

/// The storage format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The key of the format version in sled's default tree.
const FORMAT_KEY: &[u8] = b"format";

/// The file in a sled directory that holds its log (and its lock).
const LOG_FILE: &str = "db";

/// The shared trees that hold an entry per group (copied with their group by a snapshot).
const GROUPS: &str = "groups";
const USER_GROUPS: &str = "user_groups";
const SCHEDULED_GROUPS: &str = "scheduled_groups";
/// Group id → owner epoch (a database of its own; a mirror's epochs are its remote's).
const OWNERS: &str = "owners";

/// The prefix of every group's own tree.
const GROUP_TREE_PREFIX: &str = "group:";

/// The name of a group's own tree.
fn group_tree(group: &GroupId) -> String {
    format!("{GROUP_TREE_PREFIX}{group}")
}

/// The group whose own tree is named `tree`; `None` for a shared tree.
pub(super) fn group_of_tree(tree: &[u8]) -> Option<GroupId> {
    std::str::from_utf8(tree)
        .ok()?
        .strip_prefix(GROUP_TREE_PREFIX)
        .and_then(|id| GroupId::parse(id).ok())
}

/// A key that is a group id (of a shared tree: `scheduled_groups`, `owners`).
fn group_key(key: &[u8], what: &str) -> Result<GroupId, StoreError> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| GroupId::parse(s).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} key")))
}

/// Reads the format version, writing ours into a new database; refuses a newer one.
fn check_format(db: &sled::Db) -> Result<(), StoreError> {
    match db.get(FORMAT_KEY)? {
        Some(v) => {
            let bytes: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("format version".into()))?;
            let found = u32::from_be_bytes(bytes);
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
        None => {
            db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
        }
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, with a page cache of `cache_bytes`.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
        durability: Durability,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        check_format(&db)?;
        SledStore::with_db(db, dir, durability)
    }

    /// Opens an existing database in `dir` for `rollcall check`: refuses a directory without
    /// one, and neither writes nor refuses a format (the check reports it, see
    /// [`Store::format`]).
    pub fn open_to_check(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        // sled creates a database where it finds none; a typo in --data must not "check" one.
        if !dir.join(LOG_FILE).is_file() {
            return Err(StoreError::Engine(sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} holds no sled database", dir.display()),
            ))));
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        SledStore::with_db(db, dir, Durability::Process)
    }

    fn with_db(db: sled::Db, dir: &Path, durability: Durability) -> Result<SledStore, StoreError> {
        // sled keeps its log in `<dir>/db`. fsync on any descriptor of a file syncs the file.
        let log_file = match durability {
            Durability::Process => None,
            Durability::Power => Some(
                std::fs::File::open(dir.join(LOG_FILE))
                    .map_err(|e| StoreError::Engine(sled::Error::Io(e)))?,
            ),
        };
        Ok(SledStore {
            log_file,
            users: db.open_tree("users")?,
            user_settings: db.open_tree("user_settings")?,
            groups: db.open_tree(GROUPS)?,
            user_groups: db.open_tree(USER_GROUPS)?,
            scheduled_groups: db.open_tree(SCHEDULED_GROUPS)?,
            accounts: db.open_tree("accounts")?,
            deleted_groups: db.open_tree("deleted_groups")?,
            owners: db.open_tree(OWNERS)?,
            db,
            guard: Arc::default(),
            dir: dir.to_path_buf(),
            mirror: None,
        })
    }

    /// An empty database in `dir` that mirrors `remote` (PostgreSQL), removed when dropped:
    /// fill it with [`SledStore::loader`], then every write is journaled and [`Store::flush`]
    /// commits the journal to the remote. Whatever a crashed node left in `dir` is removed
    /// first (in a directory of ours, not in /dev/shm, where sled puts a temporary database by
    /// default and a killed process would leave it in memory for good).
    pub(super) fn mirror(
        remote: Arc<dyn Remote>,
        cache_bytes: u64,
        dir: &Path,
    ) -> Result<SledStore, StoreError> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Engine(sled::Error::Io(e))),
        }
        let db = sled::Config::new()
            .path(dir)
            .temporary(true)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()?;
        check_format(&db)?;
        let mut store = SledStore::with_db(db, Path::new(""), Durability::Process)?;
        store.mirror = Some(Mirror {
            journal: std::sync::Mutex::new(Vec::new()),
            remote,
        });
        Ok(store)
    }

    /// A loader of raw entries into a mirror (not journaled: they came from the remote).
    pub(super) fn loader(&self) -> MirrorLoader<'_> {
        MirrorLoader {
            db: &self.db,
            tree: None,
            batch: sled::Batch::default(),
            n_batched: 0,
        }
    }

    /// Calls `visit` with every raw entry of every tree but the default one (`rollcall
    /// migrate` copies them), tree by tree in name order.
    pub(super) fn scan_raw(&self, visit: &mut RawVisit<'_>) -> Result<(), StoreError> {
        let mut names = self.db.tree_names();
        names.sort();
        for name in names {
            if name.as_ref() == b"__sled__default" || name.as_ref() == OWNERS.as_bytes() {
                continue;
            }
            for entry in self.db.open_tree(&name)?.iter() {
                let (key, value) = entry?;
                visit(&name, &key, &value)?;
            }
        }
        Ok(())
    }

    /// Every owner epoch a database of its own recorded (`rollcall migrate` carries them over).
    pub(super) fn owner_epochs(&self) -> Result<Vec<(GroupId, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.owners.iter() {
            let (key, value) = entry?;
            out.push((group_key(&key, "owner")?, decode(&value)?));
        }
        Ok(out)
    }

    /// Runs `write` (one raw change of sled) and, in a mirror, journals `change` in the same
    /// critical section, so the journal lists changes in the order sled applied them.
    fn journaled<T>(
        &self,
        write: impl FnOnce() -> sled::Result<T>,
        change: impl FnOnce(&T) -> Option<Change>,
    ) -> Result<T, StoreError> {
        let Some(mirror) = &self.mirror else {
            return self.checked(write().map_err(StoreError::from));
        };
        let mut journal = mirror
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let done = self.checked(write().map_err(StoreError::from))?;
        if let Some(change) = change(&done) {
            journal.push(change);
        }
        Ok(done)
    }

    /// Inserts a raw value (a guarded, journaled write).
    fn raw_insert(&self, tree: &sled::Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.writable()?;
        let value = sled::IVec::from(value);
        self.journaled(
            || tree.insert(key, value.clone()).map(drop),
            |()| {
                Some(Change::Put {
                    tree: tree.name(),
                    key: key.into(),
                    value: value.clone(),
                })
            },
        )
    }

    /// Removes a raw key (a guarded, journaled write).
    fn raw_remove(&self, tree: &sled::Tree, key: &[u8]) -> Result<(), StoreError> {
        self.writable()?;
        self.journaled(
            || tree.remove(key).map(drop),
            |()| {
                Some(Change::Remove {
                    tree: tree.name(),
                    key: key.into(),
                })
            },
        )
    }

    /// Passes `result` on; an I/O or corruption error of sled fails the store for good (sled
    /// refuses every later operation after one; see DiskGuard).
    fn checked<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Engine(
            e @ (sled::Error::Io(_)
            | sled::Error::Corruption { .. }
            | sled::Error::ReportableBug(_)),
        )) = &result
        {
            self.guard.fail(e.to_string());
        }
        result
    }

    /// Refuses writes while the data directory's file system has less than `min_free_bytes`
    /// free (0: never); see [`DiskGuard`].
    pub fn guard_disk(&self, min_free_bytes: u64) {
        self.guard.watch(self.dir.clone(), min_free_bytes);
    }

    /// The tree of one group (sled keeps opened trees; reopening one is a map lookup).
    fn tree(&self, group: &GroupId) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(group_tree(group))?)
    }
}

impl SledStore {
    /// Writes `value` under `key` (a guarded write).
    fn put<T: serde::Serialize>(
        &self,
        tree: Result<sled::Tree, StoreError>,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let value = encode(value)?;
        self.raw_insert(&tree?, key, value)
    }

    /// Removes `key` (a guarded write).
    fn delete(&self, tree: Result<sled::Tree, StoreError>, key: &[u8]) -> Result<(), StoreError> {
        self.raw_remove(&tree?, key)
    }

    /// Every entry of a group's tree whose key starts with `tag`, decoded.
    fn scan<T: serde::de::DeserializeOwned>(
        &self,
        group: &GroupId,
        tag: u8,
    ) -> Result<Vec<(sled::IVec, T)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree(group)?.scan_prefix([tag]) {
            let (key, value) = entry?;
            out.push((key, decode(&value)?));
        }
        Ok(out)
    }

    /// Inserts `value` under `key` unless the key exists (a write, so guarded); returns whether
    /// it inserted.
    fn insert_new(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.writable()?;
        let value = sled::IVec::from(value);
        self.journaled(
            || {
                tree.compare_and_swap(key, None as Option<&[u8]>, Some(value.clone()))
                    .map(|swapped| swapped.is_ok())
            },
            |&inserted| {
                inserted.then(|| Change::Put {
                    tree: tree.name(),
                    key: key.into(),
                    value: value.clone(),
                })
            },
        )
    }
}

/// One sender's index entries with seq in `(after, upto]`, newest first, with their values
/// (`None`: the `()` a build before [`SentRecord`] wrote); `Ok(false)` when `visit` stopped it.
fn sent_entries_newest_first(
    tree: &sled::Tree,
    group: &GroupId,
    sender: &UserId,
    after: Seq,
    upto: Seq,
    visit: &mut dyn FnMut(Seq, Option<SentRecord>) -> bool,
) -> Result<bool, StoreError> {
    if after >= upto {
        return Ok(true);
    }
    let corrupt = || StoreError::Corrupt(format!("sender index in group {group}"));
    // What builds before `SentRecord` wrote as every entry's value.
    let unit = encode(&())?;
    let range = tree
        .range(keys::sent(sender.as_str(), Seq(after.0 + 1))..=keys::sent(sender.as_str(), upto));
    for entry in range.rev() {
        let (key, value) = entry?;
        let seq = keys::seq_of(&key).ok_or_else(corrupt)?;
        let record = if value.as_ref() == unit.as_slice() {
            None
        } else {
            Some(decode(&value)?)
        };
        if !visit(seq, record) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first byte of a note's keys.
/// Calls `step` on the entries of `range` in `direction` until it returns false.
fn walk(
    range: sled::Iter,
    direction: Direction,
    mut step: impl FnMut(sled::Result<(sled::IVec, sled::IVec)>) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    match direction {
        Direction::Ascending => {
            for entry in range {
                if !step(entry)? {
                    break;
                }
            }
        }
        Direction::Descending => {
            for entry in range.rev() {
                if !step(entry)? {
                    break;
                }
            }
        }
    }
    Ok(())
}

fn note_tag(note: Note) -> u8 {
    match note {
        Note::ReplyTo => keys::REPLY_TO,
        Note::Edited => keys::EDITED,
        Note::Deleted => keys::DELETED,
    }
}

/// Up to `limit` records of `tree` with keys above `after`, ascending, with keys parsed by
/// `parse_key`.
fn page<K, T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    after: Option<&str>,
    limit: usize,
    parse_key: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, T)>, StoreError> {
    use std::ops::Bound;
    let start = match after {
        Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    let mut out = Vec::new();
    for entry in tree
        .range::<Vec<u8>, _>((start, Bound::Unbounded))
        .take(limit)
    {
        let (key, value) = entry?;
        let id = std::str::from_utf8(&key)
            .ok()
            .and_then(&parse_key)
            .ok_or_else(|| StoreError::Corrupt("record key".into()))?;
        out.push((id, decode(&value)?));
    }
    Ok(out)
}

/// The record under `key` in `tree`, decoded.
fn read<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|v| decode(&v)).transpose()
}

impl Store for SledStore {
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        read(&self.users, user.as_str())
    }

    fn create_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError> {
        self.insert_new(&self.users, user.as_str().as_bytes(), encode(record)?)
    }

    fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError> {
        self.put(Ok(self.users.clone()), user.as_str().as_bytes(), record)
    }

    fn account(&self, user: &UserId) -> Result<Option<AccountRecord>, StoreError> {
        read(&self.accounts, user.as_str())
    }

    fn put_account(&self, user: &UserId, account: &AccountRecord) -> Result<(), StoreError> {
        self.put(Ok(self.accounts.clone()), user.as_str().as_bytes(), account)
    }

    fn users(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        page(&self.users, after.map(UserId::as_str), limit, |s| {
            UserId::parse(s).ok()
        })
    }

    fn group(&self, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        read(&self.groups, group.as_str())
    }

    fn create_group(&self, group: &GroupId, record: &GroupRecord) -> Result<bool, StoreError> {
        let key = group.as_str().as_bytes();
        if self.deleted_groups.contains_key(key)? {
            return Ok(false);
        }
        if !self.insert_new(&self.groups, key, encode(record)?)? {
            return Ok(false);
        }
        // A delete that wrote its tombstone after the check above and removed the record
        // before the insert: the id stays deleted.
        if self.deleted_groups.contains_key(key)? {
            self.delete(Ok(self.groups.clone()), key)?;
            return Ok(false);
        }
        // A new group has no messages: its sender index is complete from the start.
        self.mark_sent_indexed(group)?;
        Ok(true)
    }

    fn groups(
        &self,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<(GroupId, GroupRecord)>, StoreError> {
        page(&self.groups, after.map(GroupId::as_str), limit, |s| {
            GroupId::parse(s).ok()
        })
    }

    fn delete_group(&self, group: &GroupId) -> Result<(), StoreError> {
        let key = group.as_str().as_bytes();
        // The tombstone first: from here on the id is never created again.
        self.put(Ok(self.deleted_groups.clone()), key, &())?;
        for (user, _) in self.members(group)? {
            self.remove_member(group, &user)?;
        }
        self.delete(Ok(self.scheduled_groups.clone()), key)?;
        self.delete(Ok(self.groups.clone()), key)?;
        self.writable()?;
        // Messages, cursors, settings, flags, reminders: the whole tree goes.
        let name = group_tree(group);
        self.journaled(
            || self.db.drop_tree(&name).map(drop),
            |()| {
                Some(Change::DropTree {
                    tree: name.as_bytes().into(),
                })
            },
        )
    }

    fn put_group(&self, group: &GroupId, record: &GroupRecord) -> Result<(), StoreError> {
        self.put(Ok(self.groups.clone()), group.as_str().as_bytes(), record)
    }

    fn group_settings(&self, group: &GroupId) -> Result<Option<GroupSettingsRecord>, StoreError> {
        self.tree(group)?
            .get(keys::SETTINGS)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_group_settings(
        &self,
        group: &GroupId,
        settings: &GroupSettingsRecord,
    ) -> Result<(), StoreError> {
        self.put(self.tree(group), keys::SETTINGS, settings)
    }

    fn user_settings(&self, user: &UserId) -> Result<Option<UserSettingsRecord>, StoreError> {
        read(&self.user_settings, user.as_str())
    }

    fn put_user_settings(
        &self,
        user: &UserId,
        settings: &UserSettingsRecord,
    ) -> Result<(), StoreError> {
        let key = user.as_str().as_bytes();
        self.put(Ok(self.user_settings.clone()), key, settings)
    }

    fn member_flags(
        &self,
        group: &GroupId,
    ) -> Result<Vec<(UserId, MemberFlagsRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, flags) in self.scan(group, keys::FLAGS)? {
            let user = keys::second_of(&key, 1)
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("flags key in group {group}")))?;
            out.push((user, flags));
        }
        Ok(out)
    }

    fn put_member_flags(
        &self,
        group: &GroupId,
        user: &UserId,
        flags: &MemberFlagsRecord,
    ) -> Result<(), StoreError> {
        let key = keys::tagged(keys::FLAGS, user.as_str());
        self.put(self.tree(group), &key, flags)
    }

    fn member_roles(&self, group: &GroupId) -> Result<Vec<(UserId, RoleRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, role) in self.scan(group, keys::ROLE)? {
            let user = keys::second_of(&key, 1)
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("role key in group {group}")))?;
            out.push((user, role));
        }
        Ok(out)
    }

    fn put_member_role(
        &self,
        group: &GroupId,
        user: &UserId,
        role: RoleRecord,
    ) -> Result<(), StoreError> {
        let key = keys::tagged(keys::ROLE, user.as_str());
        match role {
            RoleRecord::Member => self.delete(self.tree(group), &key),
            role => self.put(self.tree(group), &key, &role),
        }
    }

    fn reminders(&self, group: &GroupId) -> Result<Vec<(Seq, UserId, ReminderRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, reminder) in self.scan(group, keys::REMINDER)? {
            let (seq, user) = keys::seq_key_parts(&key)
                .and_then(|(seq, user)| Some((seq, UserId::parse(user).ok()?)))
                .ok_or_else(|| StoreError::Corrupt(format!("reminder key in group {group}")))?;
            out.push((seq, user, reminder));
        }
        Ok(out)
    }

    fn put_reminder(
        &self,
        group: &GroupId,
        seq: Seq,
        user: &UserId,
        reminder: &ReminderRecord,
    ) -> Result<(), StoreError> {
        let key = keys::seq_key(keys::REMINDER, seq, user.as_str());
        self.put(self.tree(group), &key, reminder)
    }

    fn remove_reminder(&self, group: &GroupId, seq: Seq, user: &UserId) -> Result<(), StoreError> {
        let key = keys::seq_key(keys::REMINDER, seq, user.as_str());
        self.delete(self.tree(group), &key)
    }

    fn schedules(&self, group: &GroupId) -> Result<Vec<(Seq, ScheduleRecord)>, StoreError> {
        let mut out = Vec::new();
        for (key, schedule) in self.scan(group, keys::SCHEDULE)? {
            let (seq, _) = keys::seq_key_parts(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("schedule key in group {group}")))?;
            out.push((seq, schedule));
        }
        Ok(out)
    }

    fn put_schedule(
        &self,
        group: &GroupId,
        seq: Seq,
        schedule: &ScheduleRecord,
    ) -> Result<(), StoreError> {
        let key = keys::seq_key(keys::SCHEDULE, seq, "");
        self.put(self.tree(group), &key, schedule)?;
        self.put(
            Ok(self.scheduled_groups.clone()),
            group.as_str().as_bytes(),
            &(),
        )
    }

    fn remove_schedule(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError> {
        self.delete(self.tree(group), &keys::seq_key(keys::SCHEDULE, seq, ""))?;
        if self
            .tree(group)?
            .scan_prefix([keys::SCHEDULE])
            .next()
            .is_none()
        {
            let marker = group.as_str().as_bytes();
            self.delete(Ok(self.scheduled_groups.clone()), marker)?;
        }
        Ok(())
    }

    fn scheduled_groups(&self) -> Result<Vec<GroupId>, StoreError> {
        let mut out = Vec::new();
        for entry in self.scheduled_groups.iter() {
            let (key, _) = entry?;
            out.push(group_key(&key, "scheduled group")?);
        }
        Ok(out)
    }

    fn members(&self, group: &GroupId) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.tree(group)?.scan_prefix([keys::MEMBER]) {
            let (key, value) = entry?;
            let user = keys::second_of(&key, 1)
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("member key in group {group}")))?;
            out.push((user, decode(&value)?));
        }
        Ok(out)
    }

    fn member(&self, group: &GroupId, user: &UserId) -> Result<Option<MemberRecord>, StoreError> {
        self.tree(group)?
            .get(keys::member(user.as_str()))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn add_member(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError> {
        let entry = keys::pair(user.as_str(), group.as_str());
        self.raw_insert(&self.user_groups, &entry, Vec::new())?;
        self.put_cursors(group, user, record)
    }

    fn put_cursors(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError> {
        self.put(self.tree(group), &keys::member(user.as_str()), record)
    }

    fn remove_member(&self, group: &GroupId, user: &UserId) -> Result<(), StoreError> {
        let tree = self.tree(group)?;
        self.raw_remove(&tree, &keys::member(user.as_str()))?;
        self.raw_remove(&tree, &keys::tagged(keys::ROLE, user.as_str()))?;
        let entry = keys::pair(user.as_str(), group.as_str());
        self.raw_remove(&self.user_groups, &entry)
    }

    fn user_groups(&self, user: &UserId) -> Result<Vec<GroupId>, StoreError> {
        let prefix = keys::prefix(user.as_str());
        let mut out = Vec::new();
        for entry in self.user_groups.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let group = keys::second_of(&key, prefix.len())
                .and_then(|s| GroupId::parse(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("group index key of user {user}")))?;
            out.push(group);
        }
        Ok(out)
    }

    fn put_message(
        &self,
        group: &GroupId,
        seq: Seq,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        let tree = self.tree(group)?;
        self.put(Ok(tree.clone()), &keys::message(seq), record)?;
        // After the message: a crash between the two loses at most the index entries of the
        // newest messages, which the group's start re-adds from the messages after the newest
        // entry.
        let entry = SentRecord::from(record);
        self.put(Ok(tree), &keys::sent(&record.from, seq), &entry)
    }

    fn scan_messages(
        &self,
        group: &GroupId,
        first: Seq,
        last: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq, MessageRecord) -> bool,
    ) -> Result<(), StoreError> {
        if first > last {
            return Ok(());
        }
        let tree = self.tree(group)?;
        let range = tree.range(keys::message(first)..=keys::message(last));
        let step = |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, StoreError> {
            let (key, value) = entry?;
            let seq = keys::seq_of(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("message key in group {group}")))?;
            Ok(visit(seq, decode(&value)?))
        };
        walk(range, direction, step)
    }

    fn message(&self, group: &GroupId, seq: Seq) -> Result<Option<MessageRecord>, StoreError> {
        self.tree(group)?
            .get(keys::message(seq))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_note(
        &self,
        group: &GroupId,
        note: Note,
        seq: Seq,
        value: u64,
    ) -> Result<(), StoreError> {
        let key = keys::seq_key(note_tag(note), seq, "");
        self.put(self.tree(group), &key, &value)
    }

    fn notes(
        &self,
        group: &GroupId,
        note: Note,
        first: Seq,
        last: Seq,
    ) -> Result<Vec<(Seq, u64)>, StoreError> {
        let tag = note_tag(note);
        let (from, to) = (keys::seq_key(tag, first, ""), keys::seq_key(tag, last, ""));
        let mut out = Vec::new();
        for entry in self.tree(group)?.range(from..=to) {
            let (key, value) = entry?;
            let (seq, _) = keys::seq_key_parts(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("note key in group {group}")))?;
            out.push((seq, decode(&value)?));
        }
        Ok(out)
    }

    fn first_seq(&self, group: &GroupId) -> Result<Seq, StoreError> {
        match self.tree(group)?.scan_prefix([keys::MESSAGE]).next() {
            None => Ok(Seq(self.last_seq(group)?.0 + 1)),
            Some(entry) => {
                let (key, _) = entry?;
                keys::seq_of(&key)
                    .ok_or_else(|| StoreError::Corrupt(format!("message key in group {group}")))
            }
        }
    }

    fn scan_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq) -> bool,
    ) -> Result<(), StoreError> {
        if after >= upto {
            return Ok(());
        }
        let tree = self.tree(group)?;
        let (from, to) = (
            keys::sent(sender.as_str(), Seq(after.0 + 1)),
            keys::sent(sender.as_str(), upto),
        );
        let range = tree.range(from..=to);
        let step = |entry: sled::Result<(sled::IVec, sled::IVec)>| -> Result<bool, StoreError> {
            let (key, _) = entry?;
            let seq = keys::seq_of(&key)
                .ok_or_else(|| StoreError::Corrupt(format!("sender index in group {group}")))?;
            Ok(visit(seq))
        };
        walk(range, direction, step)
    }

    fn scan_sent_window(
        &self,
        group: &GroupId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(&UserId, Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError> {
        use std::ops::Bound;
        if after >= upto {
            return Ok(());
        }
        let tree = self.tree(group)?;
        let corrupt = || StoreError::Corrupt(format!("sender index in group {group}"));
        let end = Bound::Excluded(vec![keys::SENT + 1]);
        let mut from = Bound::Included(vec![keys::SENT]);
        // One seek per sender: the first key past the previous sender's keys names the next.
        while let Some(entry) = tree.range((from, end.clone())).next() {
            let (key, _) = entry?;
            let (sender, _) = keys::sent_parts(&key).ok_or_else(corrupt)?;
            let user = UserId::parse(sender).map_err(|_| corrupt())?;
            if !sent_entries_newest_first(&tree, group, &user, after, upto, &mut |seq, record| {
                visit(&user, seq, record)
            })? {
                return Ok(());
            }
            from = Bound::Excluded(keys::sent(sender, Seq(u64::MAX)));
        }
        Ok(())
    }

    fn scan_sent_entries(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError> {
        if after >= upto {
            return Ok(());
        }
        let tree = self.tree(group)?;
        sent_entries_newest_first(&tree, group, sender, after, upto, visit).map(|_| ())
    }

    fn index_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        seq: Seq,
        entry: Option<&SentRecord>,
    ) -> Result<(), StoreError> {
        let key = keys::sent(sender.as_str(), seq);
        match entry {
            Some(entry) => self.put(self.tree(group), &key, entry),
            None => self.delete(self.tree(group), &key),
        }
    }

    fn group_retention(&self, group: &GroupId) -> Result<Option<RetentionRecord>, StoreError> {
        self.tree(group)?
            .get(keys::RETENTION)?
            .map(|v| decode(&v))
            .transpose()
    }

    fn put_group_retention(
        &self,
        group: &GroupId,
        retention: &RetentionRecord,
    ) -> Result<(), StoreError> {
        self.put(self.tree(group), keys::RETENTION, retention)
    }

    fn prune_message(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError> {
        let Some(record) = self.message(group, seq)? else {
            return Ok(());
        };
        let tree = self.tree(group)?;
        self.delete(Ok(tree.clone()), &keys::message(seq))?;
        self.delete(Ok(tree.clone()), &keys::sent(&record.from, seq))?;
        for tag in [keys::REPLY_TO, keys::EDITED, keys::DELETED] {
            self.delete(Ok(tree.clone()), &keys::seq_key(tag, seq, ""))?;
        }
        let reminders: Vec<sled::IVec> = tree
            .scan_prefix(keys::seq_key(keys::REMINDER, seq, ""))
            .keys()
            .collect::<Result<_, _>>()?;
        for key in reminders {
            self.delete(Ok(tree.clone()), &key)?;
        }
        if tree.contains_key(keys::seq_key(keys::SCHEDULE, seq, ""))? {
            self.remove_schedule(group, seq)?;
        }
        Ok(())
    }

    fn sent_indexed(&self, group: &GroupId) -> Result<bool, StoreError> {
        Ok(self.tree(group)?.contains_key(keys::SENT_INDEXED)?)
    }

    fn mark_sent_indexed(&self, group: &GroupId) -> Result<(), StoreError> {
        self.put(self.tree(group), keys::SENT_INDEXED, &())
    }

    fn last_seq(&self, group: &GroupId) -> Result<Seq, StoreError> {
        match self.tree(group)?.scan_prefix([keys::MESSAGE]).next_back() {
            None => Ok(Seq(0)),
            Some(entry) => {
                let (key, _) = entry?;
                keys::seq_of(&key)
                    .ok_or_else(|| StoreError::Corrupt(format!("message key in group {group}")))
            }
        }
    }

    fn format(&self) -> Result<Option<u32>, StoreError> {
        match self.db.get(FORMAT_KEY)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("format version".into()))?;
                Ok(Some(u32::from_be_bytes(bytes)))
            }
        }
    }

    fn scan_user_groups(
        &self,
        visit: &mut dyn FnMut(UserId, GroupId) -> bool,
    ) -> Result<(), StoreError> {
        for entry in self.user_groups.iter() {
            let (key, _) = entry?;
            let pair = keys::split_pair(&key).and_then(|(user, group)| {
                Some((UserId::parse(user).ok()?, GroupId::parse(group).ok()?))
            });
            let Some((user, group)) = pair else {
                return Err(StoreError::Corrupt(format!(
                    "user_groups key {:?}",
                    String::from_utf8_lossy(&key)
                )));
            };
            if !visit(user, group) {
                break;
            }
        }
        Ok(())
    }

    fn begin_snapshot(&self, dir: &Path) -> Result<Arc<dyn super::Snapshot>, StoreError> {
        if self.mirror.is_some() {
            return Err(StoreError::Unwritable(
                "the online backup copies a sled data directory; back up PostgreSQL with its \
                 own tools (pg_dump, a standby, base backups)"
                    .into(),
            ));
        }
        Ok(Arc::new(snapshot::SledSnapshot::create(self, dir)?))
    }

    fn flush(&self) -> Result<(), StoreError> {
        if let Some(mirror) = &self.mirror {
            return self.commit_journal(mirror, &[]).map(drop);
        }
        if let Some(reason) = self.guard.failure() {
            return Err(StoreError::Unwritable(format!("storage failed: {reason}")));
        }
        let flushed = self
            .db
            .flush()
            .map(drop)
            .and_then(|()| match &self.log_file {
                Some(file) => file.sync_all().map_err(sled::Error::Io),
                None => Ok(()),
            });
        flushed.map_err(|e| {
            // Whatever this flush covered may or may not be on disk, and sled refuses every
            // later operation: fail for good (see DiskGuard).
            self.guard.fail(e.to_string());
            StoreError::Engine(e)
        })
    }

    fn claim_group(&self, group: &GroupId) -> Result<u64, StoreError> {
        if let Some(mirror) = &self.mirror {
            return mirror.remote.claim(group);
        }
        if let Some(reason) = self.guard.failure() {
            return Err(StoreError::Unwritable(format!("storage failed: {reason}")));
        }
        // Not refused on a nearly full disk (eight bytes; a group must still start and be
        // read): the next flush makes it durable, or fails the store as any flush does.
        let epoch = self.owner_epoch(group)? + 1;
        let value = encode(&epoch)?;
        self.checked(
            self.owners
                .insert(group.as_str().as_bytes(), value)
                .map(drop)
                .map_err(StoreError::from),
        )?;
        Ok(epoch)
    }

    fn flush_claimed(&self, claims: &[(GroupId, u64)]) -> Result<Vec<GroupId>, StoreError> {
        if let Some(mirror) = &self.mirror {
            return self.commit_journal(mirror, claims);
        }
        self.flush()?;
        let mut fenced = Vec::new();
        for (group, epoch) in claims {
            if self.owner_epoch(group)? != *epoch {
                fenced.push(group.clone());
            }
        }
        Ok(fenced)
    }

    fn fenced(&self) -> Option<String> {
        self.mirror.as_ref().and_then(|m| m.remote.fenced())
    }

    fn writable(&self) -> Result<(), StoreError> {
        self.guard.check()?;
        match &self.mirror {
            Some(mirror) => mirror.remote.writable(),
            None => Ok(()),
        }
    }

    fn failure(&self) -> Option<String> {
        self.guard.failure()
    }
}

impl SledStore {
    /// A group's owner epoch in a database of its own (0: never claimed).
    fn owner_epoch(&self, group: &GroupId) -> Result<u64, StoreError> {
        Ok(read::<u64>(&self.owners, group.as_str())?.unwrap_or(0))
    }

    /// Hands a mirror's journal to its remote (see `mirror.rs`).
    fn commit_journal(
        &self,
        mirror: &Mirror,
        claims: &[(GroupId, u64)],
    ) -> Result<Vec<GroupId>, StoreError> {
        let changes = std::mem::take(
            &mut *mirror
                .journal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        mirror.remote.commit(changes, claims)
    }
}

mod snapshot;

#[cfg(test)]
mod tests;
