//! User tokens for the tests: HS256 JWTs signed with the test servers' secret ([`JWT_SECRET`]),
//! or with any claims and secret for the refusal tests.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::JWT_SECRET;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A user token (HS256 JWT) valid for an hour, signed with the servers' secret. It carries `iat`
/// besides the documented `sub` and `exp`, like the server's own tokens; the test
/// `a_token_with_only_sub_and_exp_is_accepted` covers a token with exactly the documented claims.
pub fn token(user: &str) -> String {
    token_with(user, now_secs() + 3600, JWT_SECRET)
}

/// A user token with an explicit expiry and secret (and `iat` = now), for the refusal tests.
pub fn token_with(user: &str, exp: u64, secret: &str) -> String {
    sign(
        &serde_json::json!({"sub": user, "exp": exp, "iat": now_secs().min(exp)}),
        secret,
    )
}

/// Signs arbitrary claims with HS256.
pub fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encoding a JWT")
}
