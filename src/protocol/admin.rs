//! The admin HTTP API's bodies (docs/PROTOCOL.md §6): what each route reads and answers.
//!
//! Typed both ways, so the JSON shape of every route is written down once, here, and the HTTP
//! handlers never build JSON by hand. Request bodies refuse unknown fields (`400 bad_request`):
//! a misspelt field silently ignored would do something else than asked.

use serde::{Deserialize, Serialize};

use super::{GroupKind, Message, ReceiptPolicy, Role};

/// `POST /api/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// At least 8 characters; without one the user signs in with tokens or links only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `POST /api/login`: a user and password, or a sign-in link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The answer to `POST /api/login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedIn {
    pub user: String,
    pub token: String,
}

/// `POST /api/me/password`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// Not needed while the user has no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    pub new: String,
}

/// The answer to `POST /api/users/{uid}/login-link`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginLink {
    /// The link token (exchanged with `POST /api/login {"link"}`).
    pub link: String,
    /// The web client's page that signs in with it: `/?link=<token>`.
    pub path: String,
    pub expires_ms: u64,
}

/// The query of the listing routes (`GET /api/users`, `GET /api/groups`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to `GET /api/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<UserInfo>,
    pub more: bool,
}

/// One group in `GET /api/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub id: String,
    pub name: String,
    pub kind: GroupKind,
    pub receipts: ReceiptPolicy,
    pub created_ms: u64,
    pub last_seq: u64,
    /// The oldest kept seq (older ones were pruned).
    pub first_seq: u64,
    /// How many members.
    pub members: u64,
}

/// The answer to `GET /api/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupEntry>,
    pub more: bool,
}

/// `PUT /api/groups/{gid}/members/{uid}` (the body may be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// The answer to `POST /api/users`: the user and a first token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedUser {
    pub id: String,
    pub name: String,
    pub token: String,
}

/// `POST /api/users/{uid}/tokens` and `/login-link` (the body may be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// A minted token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenReply {
    pub token: String,
}

/// `POST /api/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    /// The receipt policy (default `full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<ReceiptPolicy>,
    /// The member who owns the group (default: the first listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `PUT /api/groups/{gid}`: what to change (absent fields stay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipts: Option<ReceiptPolicy>,
    /// The group's own retention in seconds (1 to [`MAX_RETENTION_SECS`]); `null`: keep its
    /// messages forever, whatever `--retention-secs` says; absent: unchanged.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention_secs: Option<Option<u64>>,
}

/// The longest retention a group may set: 100 years, in seconds.
pub const MAX_RETENTION_SECS: u64 = 100 * 365 * 24 * 3600;

/// A field that is present, `null` included (absent stays `None` through `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A user as the admin sees it (`GET`/`PUT /api/users/{uid}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub created_ms: u64,
    pub deactivated: bool,
    pub share_reads: bool,
    pub has_password: bool,
}

/// `PUT /api/users/{uid}`: what to change (absent fields stay).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new password (earlier tokens are refused, sessions closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_reads: Option<bool>,
}

/// A group as the admin sees it (`GET /api/groups/{gid}`, and the answer to `POST`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub kind: GroupKind,
    pub receipts: ReceiptPolicy,
    pub last_seq: u64,
    /// The oldest kept seq (older ones were pruned).
    pub first_seq: u64,
    /// The retention in force, in seconds (the group's own, else the server's); `null`: forever.
    pub retention_secs: Option<u64>,
    /// Sorted by user id.
    pub members: Vec<MemberInfo>,
}

/// One member with its cursors (`PUT /api/groups/{gid}/members/{uid}` answers one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user: String,
    pub name: String,
    pub role: Role,
    pub joined_seq: u64,
    pub delivered: u64,
    pub read: u64,
}

/// `POST /api/groups/{gid}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    pub from: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// The answer to `POST /api/groups/{gid}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostedMessage {
    pub seq: u64,
    pub ts: u64,
    pub client_id: String,
    pub duplicate: bool,
}

/// The query of `GET /api/groups/{gid}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesQuery {
    #[serde(default)]
    pub after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to `GET /api/groups/{gid}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesReply {
    pub group: String,
    pub messages: Vec<Message>,
    pub more: bool,
    pub last_seq: u64,
    /// The oldest kept seq.
    pub first_seq: u64,
}

/// The body of `POST /api/backup`: none, or `{}` (no options yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {}

/// The answer to `POST /api/backup`: where the snapshot is and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupReply {
    /// The snapshot's directory, absolute: a data directory (`rollcall serve --data <path>`).
    pub path: String,
    pub groups: u64,
    pub messages: u64,
    /// The snapshot's size on disk.
    pub bytes: u64,
    /// The longest time one group's writes waited for its copy, in milliseconds.
    #[serde(default)]
    pub longest_pause_ms: f64,
}

/// The query of `GET /api/groups/{gid}/audit`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many of the newest live messages to check (default 100, at most 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to `GET /api/groups/{gid}/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReply {
    /// No mismatches.
    pub ok: bool,
    /// How many messages were compared.
    pub checked: u64,
    pub mismatches: Vec<AuditMismatch>,
}

/// One message whose receipt counts differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditMismatch {
    pub seq: u64,
    /// Recomputed from the stored cursors.
    pub expected: ReceiptTally,
    /// What the group's receipt index says.
    pub actual: ReceiptTally,
}

/// The receipt counts of one message (as in a `receipt` item, without the seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptTally {
    pub recipients: u64,
    pub delivered: u64,
    pub read: u64,
}

/// The query of `GET /ws` (the token may come in the query instead of a header).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    /// `active` (serving), or `standby` (PostgreSQL store: waiting for the active node's lease
    /// to expire). Absent from servers before roles existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The node id (`--node-id`), on the PostgreSQL store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}
