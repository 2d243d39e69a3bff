//! Wire frames: the JSON objects that cross the WebSocket and the admin HTTP API.
//!
//! This is the only module that knows JSON. Both the server and the client module (`client/`)
//! use these types, so the two sides cannot drift apart. Frames are tagged by `"type"`; field
//! names are the public contract documented in docs/PROTOCOL.md and are only ever extended
//! compatibly (new optional fields, new frame types).
//!
//! Parsing is layered: text → [`serde_json::Value`] (so a frame's `id` can be echoed even when the
//! rest of it is malformed) → [`ClientFrame`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most items any paged reply carries; larger `limit`s are lowered to this.
pub const MAX_PAGE: usize = 1000;
/// The page size when a request gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// The most characters a `client_id` may have.
pub const MAX_CLIENT_ID_CHARS: usize = 128;
/// The most characters a string request `id` may have (it is echoed in every reply).
pub const MAX_ID_CHARS: usize = 128;
/// A `messages` page stops once its bodies reach this many bytes (it always holds at least one
/// message), so a page stays well under common client frame limits.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Checks a send's `client_id` and `body` against the protocol's limits (WebSocket and HTTP alike).
pub fn check_send(
    client_id: &str,
    body: &str,
    max_body_bytes: usize,
) -> Result<(), (ErrorCode, String)> {
    if client_id.is_empty() || client_id.chars().count() > MAX_CLIENT_ID_CHARS {
        return Err((
            ErrorCode::BadFrame,
            format!("client_id must have 1-{MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    if body.len() > max_body_bytes {
        return Err((
            ErrorCode::TooLarge,
            format!(
                "body has {} bytes; the limit is {max_body_bytes}",
                body.len()
            ),
        ));
    }
    Ok(())
}

/// Clamps a requested page size to `1..=MAX_PAGE`, with `DEFAULT_PAGE` when absent.
pub fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        client_id: String,
        body: String,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        seq: u64,
    },
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        seq: u64,
    },
    Sync {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        #[serde(default)]
        after: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Direct {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        with: String,
    },
    Receipts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
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
        id: Option<Value>,
        group: String,
        seq: u64,
    },
    /// Lists users (to pick the other side of a `direct`).
    Users {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

/// The frame types a client may send, for telling `unknown_type` from `bad_frame`.
const CLIENT_TYPES: &[&str] = &[
    "send", "ack", "read", "sync", "history", "direct", "receipts", "readers", "users", "ping",
];

/// Why a client frame could not be parsed. Carries the frame's `id` when one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<Value>,
    pub code: ErrorCode,
    pub message: String,
}

impl ClientFrame {
    /// Parses one text frame, telling a bad frame from an unknown type.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
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
            Some(id @ Value::Number(_)) => Some(id.clone()),
            Some(id @ Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(id.clone()),
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
    pub fn set_id(&mut self, new_id: Value) {
        match self {
            ClientFrame::Send { id, .. }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::Read { id, .. }
            | ClientFrame::Sync { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Direct { id, .. }
            | ClientFrame::Receipts { id, .. }
            | ClientFrame::Readers { id, .. }
            | ClientFrame::Users { id, .. }
            | ClientFrame::Ping { id } => *id = Some(new_id),
        }
    }

    /// The request id the client attached, if any.
    pub fn id(&self) -> Option<&Value> {
        match self {
            ClientFrame::Send { id, .. }
            | ClientFrame::Ack { id, .. }
            | ClientFrame::Read { id, .. }
            | ClientFrame::Sync { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Direct { id, .. }
            | ClientFrame::Receipts { id, .. }
            | ClientFrame::Readers { id, .. }
            | ClientFrame::Users { id, .. }
            | ClientFrame::Ping { id } => id.as_ref(),
        }
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
            ClientFrame::Ping { .. } => "ping",
        }
    }
}

/// A frame sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        user: String,
        groups: Vec<GroupSummary>,
    },
    Sent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
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
        id: Option<Value>,
        group: String,
        messages: Vec<Message>,
        more: bool,
        last_seq: u64,
    },
    Direct {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
    },
    Receipt {
        group: String,
        items: Vec<ReceiptItem>,
    },
    Receipts {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        group: String,
        items: Vec<ReceiptItem>,
        more: bool,
    },
    Readers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(flatten)]
        readers: Readers,
    },
    ReadSync {
        group: String,
        seq: u64,
    },
    /// Reply to `users`: a page of users in id order.
    Users {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        users: Vec<UserEntry>,
        more: bool,
    },
    /// The user became a member of a group while online.
    Joined {
        #[serde(flatten)]
        summary: GroupSummary,
    },
    /// The user was removed from a group while online.
    Left {
        group: String,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
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
            ServerFrame::Joined { .. } => "joined",
            ServerFrame::Left { .. } => "left",
            ServerFrame::Unknown => "unknown",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Error { .. } => "error",
        }
    }

    /// Parses one text frame sent by a server (used by the client module).
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// An `error` frame.
    pub fn error(id: Option<Value>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
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

/// A stored group message as it appears in `msg` and `messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub group: String,
    pub seq: u64,
    pub from: String,
    pub ts: u64,
    pub body: String,
    pub client_id: String,
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

/// Every error code of the protocol (docs/PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    Unauthorized,
    NoSuchGroup,
    NoSuchUser,
    NotMember,
    InvalidSeq,
    TooLarge,
    UserExists,
    GroupExists,
    NotFound,
    Busy,
    /// A send beyond the session's rate limit (token bucket).
    RateLimited,
    /// The user already has as many sessions open as allowed.
    TooManySessions,
    /// Nothing was stored: the disk is nearly full or storage failed; retry later.
    Storage,
    Internal,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NoSuchGroup => "no_such_group",
            ErrorCode::NoSuchUser => "no_such_user",
            ErrorCode::NotMember => "not_member",
            ErrorCode::InvalidSeq => "invalid_seq",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::GroupExists => "group_exists",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::Storage => "storage",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status the admin API answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::InvalidSeq => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotMember => 403,
            ErrorCode::NoSuchGroup | ErrorCode::NoSuchUser | ErrorCode::NotFound => 404,
            ErrorCode::UserExists | ErrorCode::GroupExists => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Busy | ErrorCode::RateLimited | ErrorCode::TooManySessions => 429,
            ErrorCode::Storage => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }
}

/// The JSON error body of the admin API: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpError {
    pub error: HttpErrorBody,
}

/// The inside of [`HttpError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Serializes any wire value; our wire types cannot fail to serialize (string keys only).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        log::error!("serializing a frame failed: {e}");
        String::from(r#"{"type":"error","code":"internal","message":"serialization failed"}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_unknown_type_from_bad_frame() {
        let err = ClientFrame::parse(r#"{"type":"dance","id":7}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.id, Some(Value::from(7)));
        let err = ClientFrame::parse(r#"{"type":"send","id":"a","group":"g"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert_eq!(err.id, Some(Value::from("a")));
        assert_eq!(
            ClientFrame::parse("[1]").unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            ClientFrame::parse("nope").unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            ClientFrame::parse(r#"{"id":1}"#).unwrap_err().code,
            ErrorCode::BadFrame
        );
        let nested = ClientFrame::parse(r#"{"type":"ping","id":{"a":[1]}}"#).unwrap_err();
        assert_eq!((nested.code, nested.id), (ErrorCode::BadFrame, None));
        let long = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(129));
        assert_eq!(
            ClientFrame::parse(&long).unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert!(ClientFrame::parse(r#"{"type":"ping","id":"x"}"#).is_ok());
    }

    #[test]
    fn frames_round_trip() {
        let frame = ClientFrame::parse(r#"{"type":"sync","group":"g","after":3}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Sync {
                id: None,
                group: "g".into(),
                after: 3,
                limit: None
            }
        );
        let readers = ServerFrame::Readers {
            id: Some(Value::from(1)),
            readers: Readers {
                group: "g".into(),
                seq: 2,
                read: vec!["a".into()],
                delivered: vec![],
                unread: vec!["b".into()],
            },
        };
        let text = readers.to_text();
        assert!(text.contains(r#""type":"readers""#), "{text}");
        assert!(text.contains(r#""seq":2"#), "{text}");
        assert_eq!(ServerFrame::parse(&text).unwrap(), readers);
        let msg = ServerFrame::Msg(Message {
            group: "g".into(),
            seq: 1,
            from: "a".into(),
            ts: 5,
            body: "hi".into(),
            client_id: "c".into(),
        });
        let text = msg.to_text();
        assert!(text.starts_with(r#"{"type":"msg","group":"g""#), "{text}");
        assert_eq!(ServerFrame::parse(&text).unwrap(), msg);
    }

    #[test]
    fn clients_can_ignore_unknown_server_frames() {
        let frame = ServerFrame::parse(r#"{"type":"from_the_future","x":1}"#).unwrap();
        assert_eq!(frame, ServerFrame::Unknown);
        let joined = ServerFrame::Joined {
            summary: GroupSummary {
                group: "g".into(),
                name: "G".into(),
                kind: GroupKind::Direct,
                last_seq: 3,
                delivered: 3,
                read: 3,
                unread: 0,
            },
        };
        let text = joined.to_text();
        assert!(
            text.starts_with(r#"{"type":"joined","group":"g","name":"G","kind":"direct""#),
            "{text}"
        );
        assert_eq!(ServerFrame::parse(&text).unwrap(), joined);
    }

    #[test]
    fn page_limit_is_clamped() {
        assert_eq!(page_limit(None), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(0)), 1);
        assert_eq!(page_limit(Some(5000)), MAX_PAGE);
    }
}
