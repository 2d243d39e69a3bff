//! The messages a [`GroupActor`](super::GroupActor) handles: commands in the imperative, replies as
//! plain structs. Replies that must wait for durability travel on a oneshot channel inside the
//! command, so the actor can answer after the flush while it keeps serving other commands.
//!
//! Replies are actor types, not wire frames: each converts into its wire type with `From` at the
//! edge (the session, the HTTP handlers, or the group's own pushes), so the wire format can
//! change without touching the actor and the actor can be tested without JSON.

use std::sync::Arc;
use std::time::Duration;

use actix::Message as ActixMessage;
use tokio::sync::oneshot;

use crate::ids::{GroupId, UserId};
use crate::presence::SessionHandle;
use crate::protocol::{
    AuditMismatch, AuditReply, ErrorCode, GroupKind, GroupSummary, Message, Readers, ReceiptItem,
    ReceiptPolicy, ReceiptTally, Refusal, RemindedMessage, Reminder, RequestId, Role,
};
use crate::store::{
    GroupCopy, GroupKindRecord, MemberRecord, ReceiptPolicyRecord, RetentionRecord, RoleRecord,
    Snapshot, StoreError,
};

/// Why a group refused a command. Each maps to one protocol error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    NotMember,
    InvalidSeq(String),
    Storage(String),
    /// The actor is gone or dropped the request (it is restarted on next use).
    Unavailable(String),
    /// The group's receipt policy is `counts`: who read is not shown.
    ReceiptsHidden,
    /// The group's receipt policy is `off`.
    ReceiptsOff,
    /// The caller may not do this; the sentence says what.
    NotAllowed(String),
    /// Too soon again (a reminder within `--remind-interval-secs`).
    RateLimited {
        message: String,
        wait: Duration,
    },
    /// A user named in the request does not exist (or is deactivated).
    NoSuchUser(String),
    /// The group was deleted.
    Deleted,
}

impl GroupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::NotMember => ErrorCode::NotMember,
            GroupError::InvalidSeq(_) => ErrorCode::InvalidSeq,
            GroupError::Storage(_) => ErrorCode::Storage,
            GroupError::Unavailable(_) => ErrorCode::Internal,
            GroupError::ReceiptsHidden => ErrorCode::ReceiptsHidden,
            GroupError::ReceiptsOff => ErrorCode::ReceiptsOff,
            GroupError::NotAllowed(_) => ErrorCode::NotAllowed,
            GroupError::RateLimited { .. } => ErrorCode::RateLimited,
            GroupError::NoSuchUser(_) => ErrorCode::NoSuchUser,
            GroupError::Deleted => ErrorCode::NoSuchGroup,
        }
    }

    pub fn message(&self) -> String {
        match self {
            GroupError::NotMember => "you are not a member of this group".into(),
            GroupError::InvalidSeq(m) => m.clone(),
            GroupError::Storage(detail) => {
                format!("not stored ({detail}); retry later, with the same client_id for a send")
            }
            GroupError::Unavailable(_) => "the group is unavailable; retry later".into(),
            GroupError::ReceiptsHidden => {
                "this group shows receipt counts only, not who read".into()
            }
            GroupError::ReceiptsOff => "receipts are off in this group".into(),
            GroupError::NotAllowed(m)
            | GroupError::RateLimited { message: m, .. }
            | GroupError::NoSuchUser(m) => m.clone(),
            GroupError::Deleted => "the group was deleted".into(),
        }
    }
}

impl From<GroupError> for Refusal {
    fn from(e: GroupError) -> Refusal {
        match e {
            GroupError::RateLimited { message, wait } => Refusal::rate_limited(message, wait),
            e => Refusal::new(e.code(), e.message()),
        }
    }
}

impl From<actix::MailboxError> for GroupError {
    fn from(e: actix::MailboxError) -> GroupError {
        GroupError::Unavailable(e.to_string())
    }
}

/// Where a group actor puts an answer it gives only after a flush.
pub type Reply<T> = oneshot::Sender<Result<T, GroupError>>;

/// The waiting end of a [`Reply`].
pub struct Answer<T>(oneshot::Receiver<Result<T, GroupError>>);

/// A reply channel for one command.
pub fn reply_channel<T>() -> (Reply<T>, Answer<T>) {
    let (reply, answer) = oneshot::channel();
    (reply, Answer(answer))
}

impl<T> Answer<T> {
    /// The group's answer, or `Unavailable` when the actor dropped the request.
    pub async fn wait(self) -> Result<T, GroupError> {
        self.0.await.unwrap_or_else(|_| {
            Err(GroupError::Unavailable(
                "the group dropped the request".into(),
            ))
        })
    }
}

impl From<StoreError> for GroupError {
    fn from(e: StoreError) -> GroupError {
        GroupError::Storage(e.to_string())
    }
}

/// Attaches an online session of a member: it receives pushes from now on. Answers the group's
/// summary and the member's pending reminders for `welcome`, or `None` when the session's user
/// is not a member.
#[derive(ActixMessage)]
#[rtype(result = "Option<Attached>")]
pub struct AttachSession {
    pub session: SessionHandle,
}

/// The answer to [`AttachSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub summary: Summary,
    /// Reminders of messages the member has not read yet, by seq.
    pub reminders: Vec<ReminderView>,
}

/// Detaches a closed session.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct DetachSession {
    pub user: UserId,
    pub session_id: u64,
}

/// Stores a message from `from`, answering once it is durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct PostMessage {
    pub from: UserId,
    pub client_id: String,
    pub body: String,
    /// Remind the non-readers this long after the message is durable (validated by the caller).
    pub remind_after: Option<Duration>,
    /// The seq this message replies to (checked by the group).
    pub reply_to: Option<u64>,
    pub reply: Reply<Posted>,
}

/// Changes the body of the user's own message, answering once durable; every online member
/// gets `msg_edited` then (nothing when the body is the same).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct EditMessage {
    pub user: UserId,
    pub seq: u64,
    /// Checked by the caller like a send's.
    pub body: String,
    pub reply: Reply<()>,
}

/// Deletes a message (the sender's own, or anyone's for the group's owners and admins; `By::Admin`
/// for the server's admin), answering once durable; every online member gets `msg_deleted` then
/// (nothing when it was deleted already).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct DeleteMessage {
    pub by: By,
    pub seq: u64,
    pub reply: Reply<()>,
}

/// The user is typing: forwarded to the group's other online members (the session throttles).
#[derive(ActixMessage)]
#[rtype(result = "Result<(), GroupError>")]
pub struct Typing {
    pub user: UserId,
}

/// The answer to [`PostMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub seq: u64,
    pub ts: u64,
    /// The `client_id` was already stored: nothing new was stored.
    pub duplicate: bool,
}

/// Which cursor an [`AdvanceCursor`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Delivered,
    Read,
}

/// Moves a member's cursor forward (a lower value is ignored).
#[derive(ActixMessage)]
#[rtype(result = "Result<(), GroupError>")]
pub struct AdvanceCursor {
    pub user: UserId,
    pub cursor: Cursor,
    pub seq: u64,
    /// The session that moved it, which gets no `read_sync` of its own move.
    pub session_id: Option<u64>,
}

/// The `ack`s and `read`s of one member read in one burst of a session's frames, in order:
/// `(cursor, seq)` each, with each frame's `id` at the same place in `ids`. Cursors are
/// max-registers, so the group applies the valid ones as one move (one index update, one write,
/// one `read_sync`). Each refused one is answered with an `error` frame (its own `id`) put in the
/// session's mailbox, `refusals_to`: a reply the session is waiting for from a later frame comes
/// after it, as every reply of the group comes in the order it handled the frames' commands.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct AdvanceCursors {
    pub user: UserId,
    pub moves: Vec<(Cursor, u64)>,
    pub ids: Vec<Option<RequestId>>,
    /// The session that moved them, which gets no `read_sync` of its own move.
    pub session_id: Option<u64>,
    pub refusals_to: SessionHandle,
}

/// Which page of messages [`FetchMessages`] wants.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// Seqs above `after`, ascending.
    After { after: u64, limit: usize },
    /// The `limit` seqs just below `before` (default: the head), ascending.
    Before { before: Option<u64>, limit: usize },
}

/// Reads a page of durable messages. `user: None` is the admin.
#[derive(ActixMessage)]
#[rtype(result = "Result<MessagesPage, GroupError>")]
pub struct FetchMessages {
    pub user: Option<UserId>,
    pub page: Page,
}

/// The answer to [`FetchMessages`].
#[derive(Debug, Clone)]
pub struct MessagesPage {
    pub messages: Vec<StoredMessage>,
    pub more: bool,
    pub last_seq: u64,
    /// The oldest kept seq (`sync` below it answers from it; `history` stops there).
    pub first_seq: u64,
}

/// Who asks for a change of a group: the server's admin (the HTTP API, or the server itself
/// when it creates a group), who may do everything, or a user, whose role decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    Admin,
    User(UserId),
}

/// Adds a member with `role` (idempotent: an existing member keeps its role), answering once
/// durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct AddMember {
    pub user: UserId,
    pub role: RoleRecord,
    pub by: By,
    pub reply: Reply<MemberRecord>,
}

/// Removes a member, answering once durable; its sessions get `left` (`removed`) and stop
/// receiving pushes at once.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct RemoveMember {
    pub user: UserId,
    pub by: By,
    pub reply: Reply<()>,
}

/// Changes a member's role, answering once durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct SetRole {
    pub user: UserId,
    pub role: RoleRecord,
    pub by: By,
    pub reply: Reply<()>,
}

/// The member leaves; a last owner hands ownership on first. Answers once durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct Leave {
    pub user: UserId,
    /// The session that asked, which gets the answer rather than the `left` push.
    pub session_id: Option<u64>,
    pub reply: Reply<()>,
}

/// Deletes the group: members get `left` (`deleted`), everything stored goes, and the actor
/// stops once that is durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct DeleteGroup {
    pub reply: Reply<()>,
}

/// The members with their roles; `user: None` is the admin (otherwise a member must ask).
#[derive(ActixMessage)]
#[rtype(result = "Result<Vec<(UserId, MemberView)>, GroupError>")]
pub struct ListMembers {
    pub user: Option<UserId>,
}

/// One member with its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    pub record: MemberRecord,
    pub role: RoleRecord,
}

/// Writes the cursor moves not yet written (the receipt tick does this too).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct PersistCursors;

/// The admin view of a group.
#[derive(ActixMessage)]
#[rtype(result = "GroupView")]
pub struct DescribeGroup;

/// The answer to [`DescribeGroup`].
#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub kind: GroupKindRecord,
    pub receipts: ReceiptPolicyRecord,
    pub last_seq: u64,
    pub first_seq: u64,
    /// The group's own retention (`None`: the server's `--retention-secs`).
    pub retention: Option<RetentionRecord>,
    /// Sorted by user id.
    pub members: Vec<(UserId, MemberView)>,
}

/// Which receipts [`ListReceipts`] wants.
#[derive(Debug, Clone)]
pub enum ReceiptQuery {
    /// The caller's own messages with seq above `after`, ascending.
    Mine { after: u64, limit: usize },
    /// These messages, in this order.
    Seqs(Vec<u64>),
}

/// Receipt counts, pulled.
#[derive(ActixMessage)]
#[rtype(result = "Result<ReceiptsPage, GroupError>")]
pub struct ListReceipts {
    pub user: UserId,
    pub query: ReceiptQuery,
}

/// The answer to [`ListReceipts`].
#[derive(Debug, Clone)]
pub struct ReceiptsPage {
    pub items: Vec<ReceiptCounts>,
    pub more: bool,
}

/// Exactly who read, only received, or has not received a message. `user: None` is the admin.
#[derive(ActixMessage)]
#[rtype(result = "Result<ReaderLists, GroupError>")]
pub struct ListReaders {
    pub user: Option<UserId>,
    pub seq: u64,
}

/// A group as `welcome` (or `joined`) shows it to one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub group: GroupId,
    pub name: String,
    pub kind: GroupKindRecord,
    pub last_seq: u64,
    pub delivered: u64,
    pub read: u64,
    /// Messages after the member's read mark, not counting their own.
    pub unread: u64,
    pub receipts: ReceiptPolicyRecord,
    pub marked_unread: bool,
    pub role: RoleRecord,
    /// The oldest kept seq (older ones were pruned).
    pub first_seq: u64,
    /// When the newest message was sent (ms; 0 when there is none): for "most recently active".
    pub last_ts: u64,
}

/// One durable message of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub group: GroupId,
    pub seq: u64,
    pub from: String,
    pub ts: u64,
    /// Empty when deleted.
    pub body: String,
    pub client_id: String,
    pub reply_to: Option<u64>,
    pub edited_ts: Option<u64>,
    pub deleted: bool,
}

/// Receipt counts for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptCounts {
    pub seq: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub read: u64,
}

/// Exactly who has read, only received, or not received one message; each list sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderLists {
    pub group: GroupId,
    pub seq: u64,
    pub read: Vec<UserId>,
    pub delivered: Vec<UserId>,
    pub unread: Vec<UserId>,
}

impl From<GroupKindRecord> for GroupKind {
    fn from(kind: GroupKindRecord) -> GroupKind {
        match kind {
            GroupKindRecord::Group => GroupKind::Group,
            GroupKindRecord::Direct => GroupKind::Direct,
        }
    }
}

impl From<Summary> for GroupSummary {
    fn from(s: Summary) -> GroupSummary {
        GroupSummary {
            group: s.group.to_string(),
            name: s.name,
            kind: s.kind.into(),
            last_seq: s.last_seq,
            delivered: s.delivered,
            read: s.read,
            unread: s.unread,
            receipts: s.receipts.into(),
            marked_unread: s.marked_unread,
            role: s.role.into(),
            first_seq: s.first_seq,
            last_ts: s.last_ts,
        }
    }
}

impl From<StoredMessage> for Message {
    fn from(m: StoredMessage) -> Message {
        Message {
            group: m.group.to_string(),
            seq: m.seq,
            from: m.from,
            ts: m.ts,
            body: m.body,
            client_id: m.client_id,
            reply_to: m.reply_to,
            edited_ts: m.edited_ts,
            deleted: m.deleted,
        }
    }
}

impl From<ReceiptCounts> for ReceiptItem {
    fn from(c: ReceiptCounts) -> ReceiptItem {
        ReceiptItem {
            seq: c.seq,
            recipients: c.recipients,
            delivered: c.delivered,
            read: c.read,
        }
    }
}

impl From<ReaderLists> for Readers {
    fn from(r: ReaderLists) -> Readers {
        let names = |users: Vec<UserId>| users.iter().map(UserId::to_string).collect();
        Readers {
            group: r.group.to_string(),
            seq: r.seq,
            read: names(r.read),
            delivered: names(r.delivered),
            unread: names(r.unread),
        }
    }
}

/// Changes a group's name and/or receipt policy (the admin, or an owner or admin of the
/// group), answering once durable with the new view; online members get `group_updated` when
/// something changed.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct UpdateGroup {
    pub name: Option<String>,
    pub receipts: Option<ReceiptPolicyRecord>,
    /// A new retention of the group's own.
    pub retention: Option<RetentionRecord>,
    pub by: By,
    pub reply: Reply<GroupView>,
}

/// A member's `share_reads` setting changed (already stored by the registry).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct SetShareReads {
    pub user: UserId,
    pub share_reads: bool,
}

/// Sets the member's unread flag (cleared by their next `read`); no cursor moves.
#[derive(ActixMessage)]
#[rtype(result = "Result<(), GroupError>")]
pub struct MarkUnread {
    pub user: UserId,
    /// The session that marked it, which gets no `read_sync` of its own mark.
    pub session_id: Option<u64>,
}

/// Reminds the recipients of `seq` who have not read it, answering once the reminders are
/// durable.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct Remind {
    pub user: UserId,
    pub seq: u64,
    pub reply: Reply<Reminded>,
}

/// The answer to [`Remind`] (and what a scheduled reminder tells its sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminded {
    pub group: GroupId,
    pub seq: u64,
    /// How many were reminded (as the policy shows it: private readers count).
    pub count: u64,
    /// Who, sorted; `None` under the `counts` policy.
    pub users: Option<Vec<UserId>>,
}

/// A pending reminder as its user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderView {
    pub group: GroupId,
    pub seq: u64,
    pub by: String,
    pub ts: u64,
    pub from: String,
    pub sent_ts: u64,
    pub body: String,
}

impl From<ReceiptPolicyRecord> for ReceiptPolicy {
    fn from(policy: ReceiptPolicyRecord) -> ReceiptPolicy {
        match policy {
            ReceiptPolicyRecord::Full => ReceiptPolicy::Full,
            ReceiptPolicyRecord::Counts => ReceiptPolicy::Counts,
            ReceiptPolicyRecord::Off => ReceiptPolicy::Off,
        }
    }
}

impl From<ReceiptPolicy> for ReceiptPolicyRecord {
    fn from(policy: ReceiptPolicy) -> ReceiptPolicyRecord {
        match policy {
            ReceiptPolicy::Full => ReceiptPolicyRecord::Full,
            ReceiptPolicy::Counts => ReceiptPolicyRecord::Counts,
            ReceiptPolicy::Off => ReceiptPolicyRecord::Off,
        }
    }
}

impl From<RoleRecord> for Role {
    fn from(role: RoleRecord) -> Role {
        match role {
            RoleRecord::Owner => Role::Owner,
            RoleRecord::Admin => Role::Admin,
            RoleRecord::Member => Role::Member,
        }
    }
}

impl From<Role> for RoleRecord {
    fn from(role: Role) -> RoleRecord {
        match role {
            Role::Owner => RoleRecord::Owner,
            Role::Admin => RoleRecord::Admin,
            Role::Member => RoleRecord::Member,
        }
    }
}

impl From<ReminderView> for Reminder {
    fn from(r: ReminderView) -> Reminder {
        Reminder {
            group: r.group.to_string(),
            seq: r.seq,
            by: r.by,
            ts: r.ts,
            message: RemindedMessage {
                seq: r.seq,
                from: r.from,
                ts: r.sent_ts,
                body: r.body,
            },
        }
    }
}

/// Copies the group whole into a snapshot (`POST /api/backup`), answering once copied: the
/// actor first writes its pending cursor moves, then takes no other message until the copy is
/// done, so the copy is one consistent state of the group (`group/backup.rs`). `None`: the
/// group was deleted.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub struct ExportGroup {
    pub snapshot: Arc<dyn Snapshot>,
    /// What a precopy (made while the group kept serving) copied already.
    pub precopied: GroupCopy,
    pub reply: Reply<Option<GroupExported>>,
}

/// The answer to [`ExportGroup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupExported {
    pub messages: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// How long the group took no commands (its writes paused): the cursor writes and the copy.
    pub pause: Duration,
}

/// Recomputes the receipt counts of the newest `limit` live messages from the stored cursors,
/// the naive way, and compares them with the receipt index's (`group/audit.rs`).
#[derive(ActixMessage)]
#[rtype(result = "Result<ReceiptAudit, GroupError>")]
pub struct AuditReceipts {
    pub limit: usize,
}

/// The answer to [`AuditReceipts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptAudit {
    /// How many messages were compared.
    pub checked: u64,
    /// The messages whose counts differ, by seq.
    pub mismatches: Vec<ReceiptMismatch>,
}

/// One message whose index counts differ from the recomputed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptMismatch {
    pub seq: u64,
    /// Recomputed from the stored cursors.
    pub expected: ReceiptCounts,
    /// What the group's receipt index says (and pushes).
    pub actual: ReceiptCounts,
}

impl From<ReceiptCounts> for ReceiptTally {
    fn from(c: ReceiptCounts) -> ReceiptTally {
        ReceiptTally {
            recipients: c.recipients,
            delivered: c.delivered,
            read: c.read,
        }
    }
}

impl From<ReceiptAudit> for AuditReply {
    fn from(audit: ReceiptAudit) -> AuditReply {
        AuditReply {
            ok: audit.mismatches.is_empty(),
            checked: audit.checked,
            mismatches: audit
                .mismatches
                .into_iter()
                .map(|m| AuditMismatch {
                    seq: m.seq,
                    expected: m.expected.into(),
                    actual: m.actual.into(),
                })
                .collect(),
        }
    }
}
