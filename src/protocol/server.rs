//! Server frames: what the server sends over the WebSocket, and the payload types inside them
//! (also used by the admin API's bodies).

use serde::{Deserialize, Serialize};

use super::{to_json, ErrorCode, Refusal, RequestId};

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        user: String,
        /// The most recently active groups, at most `--welcome-groups`.
        groups: Vec<GroupSummary>,
        /// Reminders of messages the user has not read yet.
        #[serde(default)]
        reminders: Vec<Reminder>,
        /// The user has more groups than `groups` lists (page them with `groups`).
        #[serde(default)]
        more_groups: bool,
        /// `unread` summed over all of the user's groups, listed or not.
        #[serde(default)]
        unread_total: u64,
    },
    /// A page of the user's groups, ascending by id.
    Groups {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        groups: Vec<GroupSummary>,
        more: bool,
    },
    Sent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        client_id: String,
        seq: u64,
        ts: u64,
        #[serde(default)]
        duplicate: bool,
    },
    Msg(Message),
    Messages {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        messages: Vec<Message>,
        more: bool,
        last_seq: u64,
        /// The oldest kept seq: older messages were pruned (a `sync` below it answers from it).
        #[serde(default = "first_seq_default")]
        first_seq: u64,
    },
    Direct {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
    Receipt {
        group: String,
        items: Vec<ReceiptItem>,
    },
    Receipts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        items: Vec<ReceiptItem>,
        more: bool,
    },
    Readers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(flatten)]
        readers: Readers,
    },
    /// The user's read mark (or unread flag) changed in another session.
    ReadSync {
        group: String,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marked_unread: Option<bool>,
    },
    /// Reply to `users`: a page of users in id order.
    Users {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        users: Vec<UserEntry>,
        more: bool,
    },
    /// The user became a member of a group while online.
    Joined {
        #[serde(flatten)]
        summary: GroupSummary,
    },
    /// The user is no longer a member of a group (removed, left, or the group was deleted);
    /// with `id`, the answer to `leave`.
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        #[serde(default)]
        reason: LeftReason,
    },
    /// Reply to `edit`.
    Edited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    /// Reply to `delete`.
    Deleted {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    /// A message's body changed (once durable).
    MsgEdited {
        group: String,
        seq: u64,
        body: String,
        edited_ts: u64,
    },
    /// A message was deleted (once durable).
    MsgDeleted {
        group: String,
        seq: u64,
    },
    /// Another member is typing.
    Typing {
        group: String,
        user: String,
    },
    /// A user sharing a group came online or went offline.
    Presence {
        user: String,
        online: bool,
    },
    /// Reply to `create_group`.
    GroupCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
    /// A group's members (reply to `members`, `add_member`, `remove_member`, `set_role`).
    Members {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        members: Vec<MemberEntry>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// The user's settings (reply to `settings`).
    Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        share_reads: bool,
    },
    /// Reminders were sent (reply to `remind`, or to the sender when a scheduled one fired).
    Reminded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
        count: u64,
        /// Who was reminded, sorted; left out under the `counts` policy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        users: Option<Vec<String>>,
    },
    /// Someone reminds this user of a message they have not read.
    Reminder(Reminder),
    /// A group's name or receipt policy changed, or (with `role`, to that member only) the
    /// receiving user's role.
    GroupUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        name: String,
        receipts: ReceiptPolicy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
        /// With `rate_limited`: when the next send will be accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// A frame type this version does not know (sent by a newer server); clients ignore it.
    #[serde(other)]
    Unknown,
}

impl ServerFrame {
    /// Serializes the frame as one JSON text.
    pub fn to_text(&self) -> String {
        to_json(self)
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Welcome { .. } => "welcome",
            ServerFrame::Sent { .. } => "sent",
            ServerFrame::Msg(_) => "msg",
            ServerFrame::Messages { .. } => "messages",
            ServerFrame::Direct { .. } => "direct",
            ServerFrame::Receipt { .. } => "receipt",
            ServerFrame::Receipts { .. } => "receipts",
            ServerFrame::Readers { .. } => "readers",
            ServerFrame::ReadSync { .. } => "read_sync",
            ServerFrame::Users { .. } => "users",
            ServerFrame::Groups { .. } => "groups",
            ServerFrame::Joined { .. } => "joined",
            ServerFrame::Left { .. } => "left",
            ServerFrame::GroupCreated { .. } => "group_created",
            ServerFrame::Edited { .. } => "edited",
            ServerFrame::Deleted { .. } => "deleted",
            ServerFrame::MsgEdited { .. } => "msg_edited",
            ServerFrame::MsgDeleted { .. } => "msg_deleted",
            ServerFrame::Typing { .. } => "typing",
            ServerFrame::Presence { .. } => "presence",
            ServerFrame::Members { .. } => "members",
            ServerFrame::Unknown => "unknown",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Settings { .. } => "settings",
            ServerFrame::Reminded { .. } => "reminded",
            ServerFrame::Reminder(_) => "reminder",
            ServerFrame::GroupUpdated { .. } => "group_updated",
            ServerFrame::Error { .. } => "error",
        }
    }

    /// Parses one text frame sent by a server (used by the client module).
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The `error` frame for a refused request.
    pub fn refused(id: Option<RequestId>, refusal: Refusal) -> ServerFrame {
        ServerFrame::Error {
            id,
            code: refusal.code,
            message: refusal.message,
            retry_after_ms: refusal.retry_after_ms,
        }
    }

    /// An `error` frame.
    pub fn error(
        id: Option<RequestId>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> ServerFrame {
        ServerFrame::Error {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// One group in the `welcome` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub name: String,
    pub kind: GroupKind,
    pub last_seq: u64,
    pub delivered: u64,
    pub read: u64,
    pub unread: u64,
    /// Who sees receipts in this group.
    #[serde(default)]
    pub receipts: ReceiptPolicy,
    /// The user marked the conversation unread (cleared by their next `read`).
    #[serde(default)]
    pub marked_unread: bool,
    /// The user's role in the group.
    #[serde(default)]
    pub role: Role,
    /// The oldest kept seq: older messages were pruned (retention). 1 while nothing was pruned.
    #[serde(default = "first_seq_default")]
    pub first_seq: u64,
    /// When the newest message was sent (ms since the epoch; 0: no message yet).
    #[serde(default)]
    pub last_ts: u64,
}

fn first_seq_default() -> u64 {
    1
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the group; only owners make or unmake owners.
    Owner,
    /// Manages members and the name, except owners.
    Admin,
    #[default]
    Member,
}

/// Why a user is no longer a member of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// An owner, an admin or the server's admin removed them.
    #[default]
    Removed,
    /// They left.
    Left,
    /// The group was deleted.
    Deleted,
}

/// One member in a `members` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub joined_seq: u64,
    /// Online now (always `false` in groups above `--presence-max-members`).
    #[serde(default)]
    pub online: bool,
}

/// Who sees receipts in a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptPolicy {
    /// Counts and lists of who read (the default).
    #[default]
    Full,
    /// Counts only: `readers` is refused.
    Counts,
    /// No receipts: no `receipt` pushes; `receipts`, `readers` and `remind` are refused.
    Off,
}

/// A reminder of a message, in `reminder` and in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    pub group: String,
    pub seq: u64,
    /// Who reminded.
    pub by: String,
    pub ts: u64,
    pub message: RemindedMessage,
}

/// The message a reminder is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemindedMessage {
    pub seq: u64,
    pub from: String,
    pub ts: u64,
    pub body: String,
}

/// One user in a `users` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub id: String,
    pub name: String,
}

/// Whether a group was created as a group or is a direct (1:1) conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    Group,
    Direct,
}

/// A stored group message as it appears in `msg` and `messages`. A deleted one has
/// `deleted: true` and no `body` (an empty body is never stored otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub group: String,
    pub seq: u64,
    pub from: String,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    pub client_id: String,
    /// The seq of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When the body was last edited (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ts: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Receipt counts for one message (see docs/PROTOCOL.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptItem {
    pub seq: u64,
    pub recipients: u64,
    pub delivered: u64,
    pub read: u64,
}

/// Exactly who has read, only received, or not received one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readers {
    pub group: String,
    pub seq: u64,
    pub read: Vec<String>,
    pub delivered: Vec<String>,
    pub unread: Vec<String>,
}
