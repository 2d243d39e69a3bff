//! Error codes (docs/PROTOCOL.md §5), the [`Refusal`] that carries one with its message on
//! every path (WebSocket and HTTP), and the admin API's JSON error body.

use serde::{Deserialize, Serialize};

/// Every error code of the protocol (docs/PROTOCOL.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    /// An HTTP request that is not valid (the WebSocket's `bad_frame`).
    BadRequest,
    /// A wrong user or password (or a used sign-in link).
    BadCredentials,
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
    /// A write beyond the user's budget (token bucket), or a reminder too soon again.
    RateLimited,
    /// The user already has as many sessions open as allowed.
    TooManySessions,
    /// Nothing was stored: the disk is nearly full or storage failed; retry later.
    Storage,
    /// The group's receipt policy is `counts`: who read is not shown.
    ReceiptsHidden,
    /// The group's receipt policy is `off`.
    ReceiptsOff,
    /// The caller may not do this (e.g. remind for a message they did not send).
    NotAllowed,
    Internal,
    /// This node is a standby (PostgreSQL store): another node is active; retry there, or
    /// here after `retry_after_ms`.
    Standby,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadCredentials => "bad_credentials",
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
            ErrorCode::ReceiptsHidden => "receipts_hidden",
            ErrorCode::ReceiptsOff => "receipts_off",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::Internal => "internal",
            ErrorCode::Standby => "standby",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status the admin API answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadFrame
            | ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::InvalidSeq => 400,
            ErrorCode::Unauthorized | ErrorCode::BadCredentials => 401,
            ErrorCode::NotMember
            | ErrorCode::NotAllowed
            | ErrorCode::ReceiptsHidden
            | ErrorCode::ReceiptsOff => 403,
            ErrorCode::NoSuchGroup | ErrorCode::NoSuchUser | ErrorCode::NotFound => 404,
            ErrorCode::UserExists | ErrorCode::GroupExists => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::Busy | ErrorCode::RateLimited | ErrorCode::TooManySessions => 429,
            ErrorCode::Storage | ErrorCode::Standby => 503,
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
    /// With `rate_limited`: when a retry will be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Why a request was refused: a documented code and a sentence for the person reading it. The
/// WebSocket path sends it as an `error` frame, the HTTP path as an error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// With `rate_limited`: when a retry will be accepted.
    pub retry_after_ms: Option<u64>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A `rate_limited` refusal, retried after `wait` (rounded up to whole milliseconds, so a
    /// client that waits exactly this long is accepted).
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Refusal {
        let millis = wait.as_micros().div_ceil(1000);
        Refusal {
            code: ErrorCode::RateLimited,
            message: message.into(),
            retry_after_ms: Some(millis.try_into().unwrap_or(u64::MAX)),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}
