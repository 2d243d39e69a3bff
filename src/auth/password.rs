//! Passwords: Argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes) in the PHC string
//! format, which carries its own salt and parameters, so stronger parameters later still verify
//! the hashes stored now.
//!
//! Hashing is slow on purpose (tens of milliseconds): callers run it off the actor threads
//! (`web::block`). Verifying for a user without a password, or one who does not exist, checks
//! against a dummy hash instead, so that every refusal takes the same time and the answer does
//! not tell which users exist.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted (bytes): hashing time must not depend on what a client sends.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a new password is refused, in words; `None` when it is acceptable.
pub fn check_new(password: &str) -> Option<String> {
    let n_chars = password.chars().count();
    if n_chars < MIN_PASSWORD_CHARS {
        Some(format!(
            "a password has at least {MIN_PASSWORD_CHARS} characters, not {n_chars}"
        ))
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(format!(
            "a password has at most {MAX_PASSWORD_BYTES} bytes, not {}",
            password.len()
        ))
    } else {
        None
    }
}

/// The PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let hashed: Result<PasswordHash, _> = Argon2::default().hash_password(password.as_bytes());
    hashed
        .map(|hash| hash.to_string())
        .map_err(|e| format!("hashing a password failed: {e}"))
}

/// A hash of a password nobody knows, computed once.
fn dummy() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash(&crate::auth::random_hex(16)).unwrap_or_default())
}

/// Computes the dummy hash now, so the first refused login does not take twice as long.
pub fn warm_up() {
    dummy();
}

/// Whether `password` matches `stored` (a PHC string). With `None` it verifies against the
/// dummy hash, taking the same time, and answers `false`.
pub fn verify(stored: Option<&str>, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        // Never hashed, so never matched; verify the dummy to keep the time.
        let _ = verify_phc(dummy(), password.get(..0).unwrap_or_default());
        return false;
    }
    match stored {
        Some(stored) => verify_phc(stored, password),
        None => {
            let _ = verify_phc(dummy(), password);
            false
        }
    }
}

fn verify_phc(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            log::error!("a stored password hash does not parse: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify(Some(&stored), "correct horse"));
        assert!(!verify(Some(&stored), "correct hors"));
        assert!(!verify(None, "correct horse"));
        assert!(!verify(Some("not a hash"), "correct horse"));
        // A fresh salt each time.
        assert_ne!(hash("correct horse").unwrap(), stored);
        assert!(check_new("short").is_some());
        assert!(check_new("long enough").is_none());
        assert!(check_new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
    }
}
