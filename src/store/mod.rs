//! Persistence: the one boundary through which all group data is read and written.
//!
//! [`Store`] is a trait so that the single-node sled implementation ([`SledStore`]) can later be
//! replaced by a transactional store without touching the actors (see ../shared/SCALE-OUT.md).
//! Only the group actor writes a group's messages and member records; the registry and the HTTP
//! layer write users and group records. Nothing outside this module knows sled, key layout or
//! encoding.
//!
//! Writes change memory only; [`Store::flush`] makes every earlier write of every group durable.
//! That single flush covering everything is what makes group commit (see `commit.rs`) work.
//!
//! Records are plain values; a message is stored once, under one key that also carries its sender
//! and `client_id`, so a send is one atomic write and the resend map can be rebuilt from messages.
//! Its entry in the per-sender index, written just after it, repeats the `client_id` and `ts`
//! ([`SentRecord`]), so the resend map is rebuilt from those small entries, each sender's
//! ([`Store::scan_sent_entries`]) on their first send after the group's start.
//!
//! Two tools work on a whole store through this trait: [`Snapshot`] (the online backup's copy,
//! written one group at a time while the server runs) and [`check`] (`rollcall check`, the
//! consistency check of a stopped server's data or of a snapshot).

pub mod check;
mod codec;
mod guard;
mod keys;
mod mirror;
pub mod postgres;
mod sled_store;

pub use guard::DiskGuard;
pub use postgres::{PgOptions, Postgres, SCHEMA_VERSION};
pub use sled_store::{SledStore, FORMAT_VERSION};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::ids::{GroupId, Seq, UserId};

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub created_ms: u64,
}

/// A user's account: password, token generation, deactivation. Absent: no password, generation
/// 0, active (the state of every user created before accounts existed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The Argon2id hash in the PHC string format; `None`: no password (token or link only).
    pub password: Option<String>,
    /// Tokens carry the generation they were issued in; a revoke (or a password change) raises
    /// it, refusing every earlier token.
    pub token_gen: u64,
    /// When the generation was last raised (seconds): a backend's token without a generation
    /// is accepted only if issued after that second.
    pub revoked_at_secs: u64,
    pub deactivated: bool,
    /// The number of the last sign-in link minted, and of the last one used: a link is good
    /// once, and only if no later link has been used.
    pub links_minted: u64,
    pub links_used: u64,
}

/// A member's role in a group. Absent: `Member`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RoleRecord {
    #[default]
    Member,
    Admin,
    Owner,
}

/// What kind of conversation a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKindRecord {
    Group,
    Direct,
}

/// A group's own fields (its members and messages are stored beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub kind: GroupKindRecord,
    pub created_ms: u64,
}

/// One member of one group: its join point and its two cursors. This is all the per-member state
/// receipts need: member m has read message s iff `read >= s` (and `joined_seq < s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The group's last seq when the member joined; messages after it are theirs to receive.
    pub joined_seq: u64,
    /// Cumulative delivery cursor (everything <= it was received).
    pub delivered: u64,
    /// Cumulative read cursor (everything <= it was read); never below `delivered`'s meaning.
    pub read: u64,
}

/// One group message, stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub from: String,
    pub client_id: String,
    pub ts: u64,
    pub body: String,
}

/// A message's entry in its sender's index (`b` + sender + seq): what the resend map needs of
/// the message, so a sender's first send after a group's start reads the small entries of
/// their messages among the newest `--dedup-window` instead of the messages. Entries written by
/// builds before it held `()`, which [`Store::scan_sent_entries`] and
/// [`Store::scan_sent_window`] report as `None` (the message itself then tells).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    pub client_id: String,
    pub ts: u64,
}

impl From<&MessageRecord> for SentRecord {
    fn from(message: &MessageRecord) -> SentRecord {
        SentRecord {
            client_id: message.client_id.clone(),
            ts: message.ts,
        }
    }
}

/// Who sees receipts in a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptPolicyRecord {
    /// Counts and lists (the default).
    #[default]
    Full,
    /// Counts only.
    Counts,
    /// No receipts at all.
    Off,
}

/// A group's settings (beside its record, so the record's encoding never changes). Absent:
/// the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettingsRecord {
    pub receipts: ReceiptPolicyRecord,
}

/// A user's settings. Absent: the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSettingsRecord {
    /// Whether others see this user's reads (`false`: counted as delivered only).
    pub share_reads: bool,
}

impl Default for UserSettingsRecord {
    fn default() -> UserSettingsRecord {
        UserSettingsRecord { share_reads: true }
    }
}

/// A member's flags in one group. Absent: all false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFlagsRecord {
    /// Marked unread by the member (cleared by their next `read`).
    pub marked_unread: bool,
}

/// A reminder waiting for its user to read the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderRecord {
    /// Who reminded.
    pub by: String,
    pub ts: u64,
}

/// A scheduled reminder of a message's non-readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// When it fires (ms since the epoch).
    pub due_ms: u64,
}

/// A group's own retention, which overrides the server's `--retention-secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRecord {
    /// Messages older than this many seconds are pruned; `None`: kept forever.
    pub secs: Option<u64>,
}

/// A fact about one message kept beside it (its record's encoding never changes): a `u64` per
/// message and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The seq the message replies to.
    ReplyTo,
    /// When it was last edited (ms).
    Edited,
    /// When it was deleted (ms); its body is gone from the record.
    Deleted,
}

/// A storage failure. These are fatal for the operation: the caller reports `storage` and logs.
#[derive(Debug)]
pub enum StoreError {
    /// sled failed (I/O, or its own corruption checks).
    Engine(sled::Error),
    /// A stored value could not be decoded.
    Corrupt(String),
    /// A write refused before it reached the engine: the disk is nearly full, or an earlier
    /// flush failed (see [`DiskGuard`]). Nothing was written.
    Unwritable(String),
    /// The data directory was written by a newer version of Rollcall.
    NewerFormat { found: u32, supported: u32 },
    /// PostgreSQL failed or could not be reached (the operation may be retried).
    Database(String),
    /// This node no longer owns the group (or any group): another node claimed it after this
    /// one did. Nothing was committed; the node stops serving it.
    Fenced(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Engine(e) => write!(f, "storage engine: {e}"),
            StoreError::Corrupt(what) => write!(f, "corrupt stored value: {what}"),
            StoreError::Unwritable(why) => write!(f, "{why}"),
            StoreError::NewerFormat { found, supported } => write!(
                f,
                "the data directory has storage format {found}, written by a newer Rollcall; \
                 this build reads formats up to {supported}: upgrade Rollcall, or point --data \
                 at another directory"
            ),
            StoreError::Database(why) => write!(f, "database: {why}"),
            StoreError::Fenced(why) => write!(f, "fenced: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        StoreError::Engine(e)
    }
}

/// Which way a message scan walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// Everything Rollcall stores. Implementations are shared between threads.
pub trait Store: Send + Sync + 'static {
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError>;
    /// Creates the user unless it exists; returns whether it was created.
    fn create_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError>;
    /// Replaces a user's record (a rename).
    fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError>;
    /// A user's account; `None` when never written (the defaults apply).
    fn account(&self, user: &UserId) -> Result<Option<AccountRecord>, StoreError>;
    fn put_account(&self, user: &UserId, account: &AccountRecord) -> Result<(), StoreError>;
    /// Up to `limit` users with ids above `after` (all when `None`), ascending by id.
    fn users(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, UserRecord)>, StoreError>;

    fn group(&self, group: &GroupId) -> Result<Option<GroupRecord>, StoreError>;
    /// Creates the group unless it exists or existed (a deleted id is never handed out
    /// again); returns whether it was created.
    fn create_group(&self, group: &GroupId, record: &GroupRecord) -> Result<bool, StoreError>;
    /// Up to `limit` groups with ids above `after` (all when `None`), ascending by id.
    fn groups(
        &self,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<(GroupId, GroupRecord)>, StoreError>;
    /// Deletes a group: its record, messages, members and everything else of it; its id stays
    /// taken for good.
    fn delete_group(&self, group: &GroupId) -> Result<(), StoreError>;

    /// Replaces a group's record (a rename).
    fn put_group(&self, group: &GroupId, record: &GroupRecord) -> Result<(), StoreError>;
    /// A group's settings; `None` when never set (the defaults apply).
    fn group_settings(&self, group: &GroupId) -> Result<Option<GroupSettingsRecord>, StoreError>;
    fn put_group_settings(
        &self,
        group: &GroupId,
        settings: &GroupSettingsRecord,
    ) -> Result<(), StoreError>;
    /// A user's settings; `None` when never set (the defaults apply).
    fn user_settings(&self, user: &UserId) -> Result<Option<UserSettingsRecord>, StoreError>;
    fn put_user_settings(
        &self,
        user: &UserId,
        settings: &UserSettingsRecord,
    ) -> Result<(), StoreError>;

    /// Every member's flags that were ever set in a group.
    fn member_flags(&self, group: &GroupId)
        -> Result<Vec<(UserId, MemberFlagsRecord)>, StoreError>;
    fn put_member_flags(
        &self,
        group: &GroupId,
        user: &UserId,
        flags: &MemberFlagsRecord,
    ) -> Result<(), StoreError>;
    /// The members whose role is not `Member`.
    fn member_roles(&self, group: &GroupId) -> Result<Vec<(UserId, RoleRecord)>, StoreError>;
    /// Sets a member's role (`Member` removes the entry).
    fn put_member_role(
        &self,
        group: &GroupId,
        user: &UserId,
        role: RoleRecord,
    ) -> Result<(), StoreError>;
    /// Every pending reminder of a group, by seq then user.
    fn reminders(&self, group: &GroupId) -> Result<Vec<(Seq, UserId, ReminderRecord)>, StoreError>;
    fn put_reminder(
        &self,
        group: &GroupId,
        seq: Seq,
        user: &UserId,
        reminder: &ReminderRecord,
    ) -> Result<(), StoreError>;
    fn remove_reminder(&self, group: &GroupId, seq: Seq, user: &UserId) -> Result<(), StoreError>;
    /// Every scheduled reminder of a group, by seq.
    fn schedules(&self, group: &GroupId) -> Result<Vec<(Seq, ScheduleRecord)>, StoreError>;
    fn put_schedule(
        &self,
        group: &GroupId,
        seq: Seq,
        schedule: &ScheduleRecord,
    ) -> Result<(), StoreError>;
    fn remove_schedule(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError>;
    /// The groups with at least one scheduled reminder (started when the server starts, so
    /// their timers run without anyone opening them).
    fn scheduled_groups(&self) -> Result<Vec<GroupId>, StoreError>;

    /// All members of a group with their records, sorted by user id.
    fn members(&self, group: &GroupId) -> Result<Vec<(UserId, MemberRecord)>, StoreError>;
    /// One member's record.
    fn member(&self, group: &GroupId, user: &UserId) -> Result<Option<MemberRecord>, StoreError>;
    /// Adds a member (or replaces its record) and indexes the group under the user.
    fn add_member(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError>;
    /// Writes an existing member's cursors.
    fn put_cursors(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError>;
    /// Removes a member, its role and its index entry.
    fn remove_member(&self, group: &GroupId, user: &UserId) -> Result<(), StoreError>;
    /// The groups a user may be a member of. A superset: the member records are the truth.
    fn user_groups(&self, user: &UserId) -> Result<Vec<GroupId>, StoreError>;

    /// Stores a message under its seq (one atomic write), then its entry in the sender's index
    /// with the message's [`SentRecord`] (idempotent: rewriting a message, as an edit does,
    /// rewrites the same entry).
    fn put_message(
        &self,
        group: &GroupId,
        seq: Seq,
        record: &MessageRecord,
    ) -> Result<(), StoreError>;
    /// Calls `visit` for messages with `first <= seq <= last` in `direction`, until it returns
    /// false.
    fn scan_messages(
        &self,
        group: &GroupId,
        first: Seq,
        last: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq, MessageRecord) -> bool,
    ) -> Result<(), StoreError>;
    /// One message.
    fn message(&self, group: &GroupId, seq: Seq) -> Result<Option<MessageRecord>, StoreError>;
    /// Writes a note about message `seq`.
    fn put_note(&self, group: &GroupId, note: Note, seq: Seq, value: u64)
        -> Result<(), StoreError>;
    /// The notes of one kind for messages `first..=last`, by seq.
    fn notes(
        &self,
        group: &GroupId,
        note: Note,
        first: Seq,
        last: Seq,
    ) -> Result<Vec<(Seq, u64)>, StoreError>;
    /// The highest stored seq of a group (0 when it has none).
    fn last_seq(&self, group: &GroupId) -> Result<Seq, StoreError>;
    /// The lowest stored seq of a group (older ones were pruned); `last_seq + 1` when it has none.
    fn first_seq(&self, group: &GroupId) -> Result<Seq, StoreError>;

    /// Calls `visit` with the seqs of `sender`'s live messages in `(after, upto]`, in
    /// `direction`, until it returns false (the per-sender index: O(result), not O(messages)).
    fn scan_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq) -> bool,
    ) -> Result<(), StoreError>;
    /// Calls `visit` with every entry of the per-sender index whose seq is in `(after, upto]`:
    /// sender by sender (in key order), each sender's entries newest first, until it returns
    /// false. The senders are found by skipping from one sender's keys to the next (one seek
    /// each), so this reads O(senders + entries in the range), not the whole index. An entry
    /// written by a build before entries had values comes with `None`: its message tells.
    fn scan_sent_window(
        &self,
        group: &GroupId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(&UserId, Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError>;
    /// Calls `visit` with `sender`'s index entries whose seq is in `(after, upto]`, newest
    /// first, with their values (`None`: an entry a build before entries had values wrote),
    /// until it returns false: one range of one sender's keys (a sender's first send after its
    /// group's start reads its part of the resend window with it).
    fn scan_sent_entries(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError>;
    /// The group's own retention, if it has one.
    fn group_retention(&self, group: &GroupId) -> Result<Option<RetentionRecord>, StoreError>;
    /// Sets the group's own retention.
    fn put_group_retention(
        &self,
        group: &GroupId,
        retention: &RetentionRecord,
    ) -> Result<(), StoreError>;
    /// Prunes message `seq` and everything about it (its sender index entry, notes, reminders
    /// and schedule). The message key goes first: a crash part-way leaves only leftovers below
    /// `first_seq`, which nothing reads.
    fn prune_message(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError>;
    /// Adds one entry of the per-sender index with its value (`Some`: the message is live), or
    /// removes it (`None`: deleted).
    fn index_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        seq: Seq,
        entry: Option<&SentRecord>,
    ) -> Result<(), StoreError>;
    /// Whether the per-sender index covers every message of the group.
    fn sent_indexed(&self, group: &GroupId) -> Result<bool, StoreError>;
    /// Records that the per-sender index covers every message of the group.
    fn mark_sent_indexed(&self, group: &GroupId) -> Result<(), StoreError>;

    /// The storage format recorded in the store; `None` when it records none (a database whose
    /// creation or snapshot never finished, or not a Rollcall database).
    fn format(&self) -> Result<Option<u32>, StoreError>;
    /// Calls `visit` for every entry of the user → groups index, by user then group, until it
    /// returns false.
    fn scan_user_groups(
        &self,
        visit: &mut dyn FnMut(UserId, GroupId) -> bool,
    ) -> Result<(), StoreError>;
    /// Starts a snapshot into a new database in `dir` (which must not exist yet): an empty copy
    /// that [`Snapshot`]'s methods fill while the server keeps running.
    fn begin_snapshot(&self, dir: &Path) -> Result<Arc<dyn Snapshot>, StoreError>;

    /// Makes every earlier write durable (survives a process crash).
    fn flush(&self) -> Result<(), StoreError>;
    /// Claims a group for this node before its actor writes to it: raises the group's owner
    /// epoch and returns it. Every later flush of the actor's writes names that epoch
    /// ([`Store::flush_claimed`]); once someone claims the group again, they are fenced.
    /// sled (one process) always grants it; PostgreSQL records it with the next commit.
    fn claim_group(&self, group: &GroupId) -> Result<u64, StoreError>;
    /// [`Store::flush`], for actors holding `claims` (group, epoch): the answer lists the
    /// groups among them whose epoch is no longer the group's (another claim came after).
    /// PostgreSQL commits nothing of a fenced group (the whole node stops being active); sled
    /// has already written it (its only other claimer is in the same process).
    fn flush_claimed(&self, claims: &[(GroupId, u64)]) -> Result<Vec<GroupId>, StoreError>;
    /// Why this node lost ownership of its groups, if it did: it must stop serving and close
    /// its sessions with 1012 (service restart).
    fn fenced(&self) -> Option<String>;
    /// Ok when writes are accepted now; why not otherwise (disk nearly full, failed flush).
    fn writable(&self) -> Result<(), StoreError>;
    /// Why the store failed for good (a flush failed), if it did: the server must restart.
    fn failure(&self) -> Option<String>;
}

/// A copy of the store being written while the server runs (`POST /api/backup`): once
/// [`Snapshot::finish`]ed, a database a server opens like any other.
///
/// Piece by piece rather than in one pass, because only a group's actor may decide when its
/// tree holds still: each group is copied whole by [`Snapshot::copy_group`] while its actor (or
/// whoever keeps writers away) holds it, so every group in the copy is one consistent state of
/// that group, including its entries in the shared trees (its record, its members' index
/// entries, its schedule marker). The rest ([`Snapshot::copy_global`]) comes after the groups, so
/// every member in the copy is a user there too (users are never deleted).
pub trait Snapshot: Send + Sync {
    /// Copies one group whole: its record, everything of its own (messages, members and their
    /// cursors, settings, roles, flags, reminders, notes, and any key kind this build does not
    /// know), the index entries of its members and its schedule marker. `None` when the group
    /// does not exist (any more). The caller keeps every writer of the group away meanwhile.
    ///
    /// `precopied` is what [`Snapshot::precopy_group`] copied of it before (`GroupCopy::default()`
    /// if nothing): those messages and their index entries are not copied again, only the ones
    /// changed since (edited, deleted, pruned), so the group holds still only for the rest.
    fn copy_group(
        &self,
        group: &GroupId,
        precopied: &GroupCopy,
    ) -> Result<Option<GroupCopy>, StoreError>;
    /// Copies the bulk of a group while its actor keeps serving: its messages after
    /// `after.upto` up to the newest one now, and their sender index entries; returns `after`
    /// grown by them (start from `GroupCopy::default()`; repeat while much was written
    /// meanwhile). Messages only change by an edit, a delete or a prune, which
    /// [`Snapshot::copy_group`] then catches up on.
    fn precopy_group(&self, group: &GroupId, after: &GroupCopy) -> Result<GroupCopy, StoreError>;
    /// Copies everything that belongs to no group: users, accounts, user settings, the ids of
    /// deleted groups (and any shared data this build does not know).
    fn copy_global(&self) -> Result<(), StoreError>;
    /// Makes the copy durable, then records the storage format (the mark of a finished copy)
    /// and makes that durable too.
    fn finish(&self) -> Result<(), StoreError>;
}

/// What [`Snapshot::copy_group`] copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCopy {
    /// Messages (deleted ones included: their seqs stay).
    pub messages: u64,
    /// Bytes of keys and values of the group's own data.
    pub bytes: u64,
    /// The highest seq copied by a precopy (0: none).
    pub upto: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
