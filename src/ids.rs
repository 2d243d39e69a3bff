//! Identifier newtypes: [`UserId`], [`GroupId`] and [`Seq`].
//!
//! Ids are validated once, where they enter (a frame, an HTTP path, a token), so the rest of the
//! code can rely on them: 1–64 characters from `A–Z a–z 0–9 _ . @ -`. Group ids starting with
//! `dm:` are reserved for direct conversations and built only by [`GroupId::direct`]. Keeping the
//! alphabet small keeps ids safe in storage keys, URLs and logs.

use std::fmt;

/// The most characters an id may have.
pub const MAX_ID_CHARS: usize = 64;
/// The prefix of every direct-conversation group id.
pub const DIRECT_PREFIX: &str = "dm:";

fn valid_plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_CHARS
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid id {:?}: use 1-{MAX_ID_CHARS} characters from A-Z a-z 0-9 _ . @ -",
            self.0
        )
    }
}

/// A user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Validates a user id.
    pub fn parse(s: &str) -> Result<UserId, InvalidId> {
        if valid_plain_id(s) {
            Ok(UserId(s.to_owned()))
        } else {
            Err(InvalidId(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group id: a plain id, or `dm:<a>:<b>` for a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(String);

impl GroupId {
    /// Validates a group id as given by a client (plain or direct).
    pub fn parse(s: &str) -> Result<GroupId, InvalidId> {
        let ok = match s.strip_prefix(DIRECT_PREFIX) {
            Some(rest) => match rest.split_once(':') {
                Some((a, b)) => valid_plain_id(a) && valid_plain_id(b) && a < b,
                None => false,
            },
            None => valid_plain_id(s),
        };
        if ok {
            Ok(GroupId(s.to_owned()))
        } else {
            Err(InvalidId(s.chars().take(80).collect()))
        }
    }

    /// Validates a group id for creation through the admin API: `dm:` ids are reserved.
    pub fn parse_plain(s: &str) -> Result<GroupId, InvalidId> {
        if valid_plain_id(s) {
            Ok(GroupId(s.to_owned()))
        } else {
            Err(InvalidId(s.chars().take(80).collect()))
        }
    }

    /// The stable id of the direct conversation between two users (order does not matter).
    pub fn direct(a: &UserId, b: &UserId) -> GroupId {
        let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        GroupId(format!("{DIRECT_PREFIX}{}:{}", lo.0, hi.0))
    }

    /// A fresh random id `g-` + 12 lowercase letters and digits.
    pub fn generate() -> GroupId {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        let tail: String = (0..12)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        GroupId(format!("g-{tail}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A per-group message sequence number: 1 for the first message, +1 for each next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Seq(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(UserId::parse("alice.b-1@x_y").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a b").is_err());
        assert!(UserId::parse("a:b").is_err());
        assert!(UserId::parse(&"x".repeat(65)).is_err());
        assert!(GroupId::parse("dm:alice:bob").is_ok());
        assert!(GroupId::parse("dm:bob:alice").is_err());
        assert!(GroupId::parse("dm:alice").is_err());
        assert!(GroupId::parse_plain("dm:alice:bob").is_err());
    }

    #[test]
    fn direct_ids_are_stable_for_the_pair() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        assert_eq!(GroupId::direct(&a, &b), GroupId::direct(&b, &a));
        assert_eq!(GroupId::direct(&a, &b).as_str(), "dm:alice:bob");
        assert!(GroupId::parse(GroupId::direct(&b, &a).as_str()).is_ok());
        let g = GroupId::generate();
        assert_eq!(g.as_str().len(), 14);
        assert!(GroupId::parse_plain(g.as_str()).is_ok());
    }
}
