//! Error codes (docs/PROTOCOL.md §5), the [`Refusal`] that carries one with its message on
//! every path (WebSocket and HTTP), and the admin API's JSON error body.

use serde::{Deserialize, Serialize};

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

/// Why a request was refused: a documented code and a sentence for the person reading it. The
/// WebSocket path sends it as an `error` frame, the HTTP path as an error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}
