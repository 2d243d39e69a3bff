//! Client frames: what a client sends over the WebSocket, and how one text frame is parsed.
//!
//! Parsing is layered: text → [`serde_json::Value`] (so a frame's `id` can be echoed even when the
//! rest of it is malformed) → [`ClientFrame`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{to_json, ErrorCode, ReceiptPolicy, RequestId, Role, MAX_ID_CHARS};

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        client_id: String,
        body: String,
        /// Remind the non-readers this many seconds after the message is durable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remind_after_secs: Option<u64>,
        /// The seq of the message this one replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// Changes the body of one's own message.
    Edit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
        body: String,
    },
    /// Deletes a message (one's own; owners and admins: anyone's).
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    /// Tells the group's other online members that the user is typing.
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        #[serde(default)]
        after: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Direct {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        with: String,
    },
    Receipts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        #[serde(default)]
        mine: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seqs: Option<Vec<u64>>,
        #[serde(default)]
        after: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Readers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    /// Pages through the user's groups in ascending id order (`welcome` lists only the most
    /// recently active `--welcome-groups`).
    Groups {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Lists users (to pick the other side of a `direct`).
    Users {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Reads (no field) or changes the user's settings.
    Settings {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        share_reads: Option<bool>,
    },
    /// Reminds the recipients of `seq` who have not read it.
    Remind {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        seq: u64,
    },
    /// Marks the conversation unread (no cursor moves); the next `read` clears it.
    MarkUnread {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
    /// Creates a group; the sender is its owner.
    CreateGroup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        name: String,
        #[serde(default)]
        members: Vec<String>,
    },
    /// Adds a member (owners and admins).
    AddMember {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        user: String,
    },
    /// Removes a member (owners and admins; an admin cannot remove an owner).
    RemoveMember {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        user: String,
    },
    /// Changes a member's role (owners and admins; only owners make or unmake owners).
    SetRole {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        user: String,
        role: Role,
    },
    /// Renames a group (owners and admins).
    RenameGroup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        name: String,
    },
    /// Changes a group's receipt policy (owners and admins).
    SetReceipts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
        receipts: ReceiptPolicy,
    },
    /// Leaves a group.
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
    /// Lists a group's members with their roles.
    Members {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        group: String,
    },
}

/// The `id` field of any client frame (`&` or `&mut`, as the frame is borrowed).
macro_rules! id_field {
    ($frame:expr) => {
        match $frame {
            ClientFrame::Send { id, .. }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::Read { id, .. }
            | ClientFrame::Sync { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Direct { id, .. }
            | ClientFrame::Receipts { id, .. }
            | ClientFrame::Readers { id, .. }
            | ClientFrame::Users { id, .. }
            | ClientFrame::Groups { id, .. }
            | ClientFrame::Ping { id }
            | ClientFrame::Settings { id, .. }
            | ClientFrame::Remind { id, .. }
            | ClientFrame::MarkUnread { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Delete { id, .. }
            | ClientFrame::Typing { id, .. }
            | ClientFrame::CreateGroup { id, .. }
            | ClientFrame::AddMember { id, .. }
            | ClientFrame::RemoveMember { id, .. }
            | ClientFrame::SetRole { id, .. }
            | ClientFrame::RenameGroup { id, .. }
            | ClientFrame::SetReceipts { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Members { id, .. } => id,
        }
    };
}

/// The frame types a client may send, for telling `unknown_type` from `bad_frame`.
const CLIENT_TYPES: &[&str] = &[
    "send",
    "ack",
    "read",
    "sync",
    "history",
    "direct",
    "receipts",
    "readers",
    "users",
    "groups",
    "ping",
    "settings",
    "remind",
    "mark_unread",
    "edit",
    "delete",
    "typing",
    "create_group",
    "add_member",
    "remove_member",
    "set_role",
    "rename_group",
    "set_receipts",
    "leave",
    "members",
];

/// `read` and `ack`, the most frequent frames by far (a reader may send one per message), read
/// with every string borrowed from the text: `None` when the text is not plainly one of them
/// (escapes, another type, a wrong field), and the general parse decides.
fn parse_cursor_frame(text: &str) -> Option<ClientFrame> {
    #[derive(Deserialize)]
    struct Cursor<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(default)]
        id: Option<RequestId>,
        #[serde(borrow)]
        group: &'a str,
        seq: u64,
    }
    if !(text.contains("\"type\":\"read\"") || text.contains("\"type\":\"ack\"")) {
        return None;
    }
    let frame: Cursor<'_> = serde_json::from_str(text).ok()?;
    if !frame
        .id
        .as_ref()
        .map_or(!may_hold_id(text), RequestId::is_valid)
    {
        return None;
    }
    let (id, group, seq) = (frame.id, frame.group.to_owned(), frame.seq);
    match frame.kind {
        "read" => Some(ClientFrame::Read { id, group, seq }),
        "ack" => Some(ClientFrame::Ack { id, group, seq }),
        _ => None,
    }
}

/// Whether `text` may have an `id` key although the frame read as having none: `"id": null`
/// reads as no id straight into a [`ClientFrame`] but is refused by the careful parse, and a key
/// may be spelled with escapes (`"\u0069d"`).
fn may_hold_id(text: &str) -> bool {
    text.contains("\"id\"") || text.contains('\\')
}

/// Why a client frame could not be parsed. Carries the frame's `id` when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<RequestId>,
    pub code: ErrorCode,
    pub message: String,
}

impl ClientFrame {
    /// Parses one text frame, telling a bad frame from an unknown type.
    ///
    /// Most frames are well formed: they are read straight into a [`ClientFrame`] (one pass,
    /// strings borrowed while the tag is looked for). Only when that fails, or the `id` is not
    /// one a client may use, is the frame read again the careful way ([`ClientFrame::parse_checked`]),
    /// which finds the `id` to echo and tells `unknown_type` from `bad_frame`. Both give the same
    /// answer for every text (a property test says so).
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        // serde reads an internally tagged enum from an array too (`["ping"]`): objects only.
        let object = text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        if !object {
            return ClientFrame::parse_checked(text);
        }
        if let Some(frame) = parse_cursor_frame(text) {
            return Ok(frame);
        }
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) if frame.id().map_or(!may_hold_id(text), RequestId::is_valid) => Ok(frame),
            _ => ClientFrame::parse_checked(text),
        }
    }

    /// Parses one text frame through a [`Value`] first, so that a malformed frame's `id` can
    /// still be echoed in its `error`.
    pub fn parse_checked(text: &str) -> Result<ClientFrame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: None,
            code: ErrorCode::BadFrame,
            message: format!("not JSON: {e}"),
        })?;
        let Value::Object(object) = &value else {
            return Err(FrameError {
                id: None,
                code: ErrorCode::BadFrame,
                message: "a frame must be a JSON object".into(),
            });
        };
        let id = match object.get("id") {
            None => None,
            Some(id) if RequestId::valid_value(id) => Some(RequestId(id.clone())),
            Some(_) => {
                return Err(FrameError {
                    id: None,
                    code: ErrorCode::BadFrame,
                    message: format!(
                        "\"id\" must be a number or a string of at most {MAX_ID_CHARS} characters"
                    ),
                })
            }
        };
        match object.get("type") {
            Some(Value::String(t)) if CLIENT_TYPES.contains(&t.as_str()) => {}
            Some(Value::String(t)) => {
                return Err(FrameError {
                    id,
                    code: ErrorCode::UnknownType,
                    // Echo at most MAX_ID_CHARS characters of what the client sent.
                    message: format!(
                        "unknown frame type {:?}",
                        t.chars().take(MAX_ID_CHARS).collect::<String>()
                    ),
                });
            }
            _ => {
                return Err(FrameError {
                    id,
                    code: ErrorCode::BadFrame,
                    message: "missing string field \"type\"".into(),
                })
            }
        }
        serde_json::from_value(value).map_err(|e| FrameError {
            id,
            code: ErrorCode::BadFrame,
            message: e.to_string(),
        })
    }

    /// Sets the request id (the client module numbers its requests).
    pub fn set_id(&mut self, new_id: impl Into<RequestId>) {
        *id_field!(self) = Some(new_id.into());
    }

    /// The request id the client attached, if any.
    pub fn id(&self) -> Option<&RequestId> {
        id_field!(self).as_ref()
    }

    /// Serializes the frame as one JSON text.
    pub fn to_text(&self) -> String {
        to_json(self)
    }

    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::Read { .. } => "read",
            ClientFrame::Sync { .. } => "sync",
            ClientFrame::History { .. } => "history",
            ClientFrame::Direct { .. } => "direct",
            ClientFrame::Receipts { .. } => "receipts",
            ClientFrame::Readers { .. } => "readers",
            ClientFrame::Users { .. } => "users",
            ClientFrame::Groups { .. } => "groups",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::Settings { .. } => "settings",
            ClientFrame::Remind { .. } => "remind",
            ClientFrame::MarkUnread { .. } => "mark_unread",
            ClientFrame::Edit { .. } => "edit",
            ClientFrame::Delete { .. } => "delete",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::CreateGroup { .. } => "create_group",
            ClientFrame::AddMember { .. } => "add_member",
            ClientFrame::RemoveMember { .. } => "remove_member",
            ClientFrame::SetRole { .. } => "set_role",
            ClientFrame::RenameGroup { .. } => "rename_group",
            ClientFrame::SetReceipts { .. } => "set_receipts",
            ClientFrame::Leave { .. } => "leave",
            ClientFrame::Members { .. } => "members",
        }
    }
}
