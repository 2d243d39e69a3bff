//! Wire frames: the JSON objects that cross the WebSocket and the admin HTTP API.
//!
//! This is the only module that knows JSON. Both the server and the client module (`client/`)
//! use these types, so the two sides cannot drift apart. Frames are tagged by `"type"`; field
//! names are the public contract documented in docs/PROTOCOL.md and are only ever extended
//! compatibly (new optional fields, new frame types).
//!
//! The files: [`client`] (client frames and their parsing), [`server`] (server frames and the
//! payloads inside them), [`error`] (codes, [`Refusal`], the HTTP error body) and [`admin`] (the
//! admin API's request and response bodies). Nothing outside this module calls `serde_json`
//! (the client module and the tests excepted; `tests/layering.rs` checks it).

mod admin;
mod client;
mod error;
mod server;

pub use admin::*;
pub use client::{ClientFrame, FrameError};
pub use error::{ErrorCode, HttpError, HttpErrorBody, Refusal};
pub use server::{
    GroupKind, GroupSummary, LeftReason, MemberEntry, Message, Readers, ReceiptItem, ReceiptPolicy,
    RemindedMessage, Reminder, Role, ServerFrame, UserEntry,
};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most items any paged reply carries; larger `limit`s are lowered to this.
pub const MAX_PAGE: usize = 1000;
/// The page size when a request gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// The longest delay of a scheduled reminder (`remind_after_secs`): a week.
pub const MAX_REMIND_AFTER_SECS: u64 = 604_800;
/// The most characters a `client_id` may have.
pub const MAX_CLIENT_ID_CHARS: usize = 128;
/// The most characters a string request `id` may have (it is echoed in every reply).
pub const MAX_ID_CHARS: usize = 128;
/// A `messages` page stops once its bodies reach this many bytes (it always holds at least one
/// message), so a page stays well under common client frame limits.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// The most characters a user's or group's name may have (after trimming).
pub const MAX_NAME_CHARS: usize = 100;

/// A user's or group's name, trimmed: 1-[`MAX_NAME_CHARS`] characters.
pub fn check_name(name: &str) -> Result<String, Refusal> {
    let name = name.trim();
    let n_chars = name.chars().count();
    if (1..=MAX_NAME_CHARS).contains(&n_chars) {
        Ok(name.to_owned())
    } else {
        Err(Refusal::new(
            ErrorCode::BadFrame,
            format!("a name has 1-{MAX_NAME_CHARS} characters after trimming, not {n_chars}"),
        ))
    }
}

/// Checks a send's `client_id` and `body` against the protocol's limits (WebSocket and HTTP alike).
pub fn check_send(client_id: &str, body: &str, max_body_bytes: usize) -> Result<(), Refusal> {
    if client_id.is_empty() || client_id.chars().count() > MAX_CLIENT_ID_CHARS {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            format!("client_id must have 1-{MAX_CLIENT_ID_CHARS} characters"),
        ));
    }
    if body.trim().is_empty() {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            "a message body must not be empty",
        ));
    }
    if body.len() > max_body_bytes {
        return Err(Refusal::new(
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

/// A request's `id`, echoed in its reply: a JSON number or a short string, as the client chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Value);

impl RequestId {
    /// Whether `value` may be a request id: a number, or a string of at most [`MAX_ID_CHARS`]
    /// characters.
    pub(crate) fn valid_value(value: &Value) -> bool {
        match value {
            Value::Number(_) => true,
            Value::String(s) => s.chars().count() <= MAX_ID_CHARS,
            _ => false,
        }
    }

    /// Whether this id is one a client may send (see [`RequestId::valid_value`]).
    pub(crate) fn is_valid(&self) -> bool {
        RequestId::valid_value(&self.0)
    }

    /// The id as a number, when the client used one (the client module numbers its requests).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }

    /// The id as JSON.
    pub fn as_json(&self) -> &Value {
        &self.0
    }
}

impl From<u64> for RequestId {
    fn from(n: u64) -> RequestId {
        RequestId(Value::from(n))
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> RequestId {
        RequestId(Value::from(s))
    }
}

impl From<Value> for RequestId {
    fn from(value: Value) -> RequestId {
        RequestId(value)
    }
}

/// Serializes any wire value; our wire types cannot fail to serialize (string keys only).
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        log::error!("serializing a frame failed: {e}");
        String::from(r#"{"type":"error","code":"internal","message":"serialization failed"}"#)
    })
}

/// Parses a JSON body (the admin API's); the error is a sentence for the `bad_frame` answer.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad JSON body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_unknown_type_from_bad_frame() {
        let err = ClientFrame::parse(r#"{"type":"dance","id":7}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownType);
        assert_eq!(err.id, Some(RequestId::from(7)));
        let err = ClientFrame::parse(r#"{"type":"send","id":"a","group":"g"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadFrame);
        assert_eq!(err.id, Some(RequestId::from("a")));
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
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"groups","after":"g","limit":2}"#),
            Ok(ClientFrame::Groups { .. })
        ));
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
            id: Some(RequestId::from(1)),
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
            ..Default::default()
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
                receipts: ReceiptPolicy::Counts,
                marked_unread: true,
                role: Default::default(),
                first_seq: 1,
                last_ts: 0,
            },
        };
        let text = joined.to_text();
        assert!(
            text.starts_with(r#"{"type":"joined","group":"g","name":"G","kind":"direct""#),
            "{text}"
        );
        assert!(
            text.contains(r#""receipts":"counts","marked_unread":true"#),
            "{text}"
        );
        // A summary from a server that predates the fields reads with the defaults.
        let old = r#"{"type":"joined","group":"g","name":"G","kind":"group","last_seq":1,"delivered":1,"read":1,"unread":0}"#;
        let ServerFrame::Joined { summary } = ServerFrame::parse(old).unwrap() else {
            panic!("not joined");
        };
        assert_eq!(
            (summary.receipts, summary.marked_unread),
            (ReceiptPolicy::Full, false)
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
