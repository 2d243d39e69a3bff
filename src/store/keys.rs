//! Key encoding.
//!
//! Inside a group's own tree, a message key is `m` + seq as big-endian u64 (so sled's byte order is
//! seq order and the last `m` key is the head) and a member key is `u` + user id. Beside them:
//! `c` (the group's settings), `f` + user id (a member's flags), `r` + seq + user id (a pending
//! reminder), `s` + seq (a scheduled reminder) and `o` + user id (a member's role, when not
//! `Member`), and the notes about messages, `p`/`e`/`x` + seq (replied-to seq, edited and deleted
//! times), the per-sender index `b` + `[len][sender]` + seq (its value the message's `client_id`
//! and `ts`; `B` marks it complete) and `t` (the group's own retention). The length prefix makes
//! one sender's index keys contiguous and lets a scan skip from one sender to the next (seek past
//! `b` + `[len][sender]` + `u64::MAX`). Every kind has its own first byte, so a
//! prefix scan reads one kind. In the shared
//! `user_groups` index a key is a length-prefixed user id (`[len: u8][id bytes]`) followed by the
//! group id, so a prefix scan for one user never matches another id that merely starts with the
//! same characters.

use crate::ids::Seq;

/// `[len][id]`: the prefix shared by every key of one group (or user).
pub fn prefix(id: &str) -> Vec<u8> {
    let bytes = id.as_bytes();
    let mut out = Vec::with_capacity(1 + bytes.len() + 8);
    // Ids are ASCII and at most 132 bytes (a direct id `dm:<64>:<64>`, see ids.rs), so the
    // length always fits a byte.
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
    out
}

/// The first byte of every message key in a group's tree.
pub const MESSAGE: u8 = b'm';
/// The first byte of every member key in a group's tree.
pub const MEMBER: u8 = b'u';

/// The key of a group's settings in its tree.
pub const SETTINGS: &[u8] = b"c";
/// The first byte of every member-flags key in a group's tree.
pub const FLAGS: u8 = b'f';
/// The first byte of every reminder key in a group's tree.
pub const REMINDER: u8 = b'r';
/// The first byte of every schedule key in a group's tree.
pub const SCHEDULE: u8 = b's';
/// The first byte of every role key in a group's tree.
pub const ROLE: u8 = b'o';
/// The first bytes of the notes about messages (`tag` + seq): the seq replied to, when edited,
/// when deleted.
pub const REPLY_TO: u8 = b'p';
pub const EDITED: u8 = b'e';
pub const DELETED: u8 = b'x';
/// The first byte of the per-sender index: `b` + `[len][sender]` + seq →
/// [`SentRecord`](super::SentRecord) (`()` where an older build wrote it), one entry per live
/// (not deleted, not pruned) message, so a sender's seqs in a range are a range scan.
pub const SENT: u8 = b'b';
/// Present once the group's per-sender index covers every message (groups written before the
/// index existed get it built once, on their first start).
pub const SENT_INDEXED: &[u8] = b"B";

/// The key of a group's own retention ([`RetentionRecord`](super::RetentionRecord)); absent: the
/// server's `--retention-secs`.
pub const RETENTION: &[u8] = b"t";

/// `b` + `[len][sender]` + seq: one message in its sender's index.
pub fn sent(sender: &str, seq: Seq) -> Vec<u8> {
    let mut out = vec![SENT];
    out.extend_from_slice(&prefix(sender));
    out.extend_from_slice(&seq.0.to_be_bytes());
    out
}

/// The sender and seq of a [`sent`] key.
pub fn sent_parts(key: &[u8]) -> Option<(&str, Seq)> {
    let (&tag, rest) = key.split_first()?;
    if tag != SENT {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    let sender = std::str::from_utf8(rest.get(..len)?).ok()?;
    let bytes: [u8; 8] = rest.get(len..)?.try_into().ok()?;
    Some((sender, Seq(u64::from_be_bytes(bytes))))
}

/// `tag` + user id.
pub fn tagged(tag: u8, user: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + user.len());
    out.push(tag);
    out.extend_from_slice(user.as_bytes());
    out
}

/// `tag` + seq (big-endian) + `user`.
pub fn seq_key(tag: u8, seq: Seq, user: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + user.len());
    out.push(tag);
    out.extend_from_slice(&seq.0.to_be_bytes());
    out.extend_from_slice(user.as_bytes());
    out
}

/// The seq and user of a [`seq_key`].
pub fn seq_key_parts(key: &[u8]) -> Option<(Seq, &str)> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    let user = std::str::from_utf8(key.get(9..)?).ok()?;
    Some((Seq(u64::from_be_bytes(bytes)), user))
}

/// `m` + seq (big-endian): one message in its group's tree.
pub fn message(seq: Seq) -> [u8; 9] {
    let mut out = [MESSAGE; 9];
    out[1..].copy_from_slice(&seq.0.to_be_bytes());
    out
}

/// `u` + user id: one member in its group's tree.
pub fn member(user: &str) -> Vec<u8> {
    tagged(MEMBER, user)
}

/// The seq at the end of a message key.
pub fn seq_of(key: &[u8]) -> Option<Seq> {
    let tail = key
        .len()
        .checked_sub(8)
        .and_then(|start| key.get(start..))?;
    let bytes: [u8; 8] = tail.try_into().ok()?;
    Some(Seq(u64::from_be_bytes(bytes)))
}

/// `[len][a][b]`: an entry of `b` under `a` (a group under its user).
pub fn pair(a: &str, b: &str) -> Vec<u8> {
    let mut out = prefix(a);
    out.extend_from_slice(b.as_bytes());
    out
}

/// The two ids of a [`pair`] key.
pub fn split_pair(key: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = key.split_first()?;
    let len = usize::from(len);
    let a = std::str::from_utf8(rest.get(..len)?).ok()?;
    let b = std::str::from_utf8(rest.get(len..)?).ok()?;
    Some((a, b))
}

/// The `b` of a [`pair`] key, given the prefix length.
pub fn second_of(key: &[u8], prefix_len: usize) -> Option<&str> {
    std::str::from_utf8(key.get(prefix_len..)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_seq_before_members() {
        let m1 = message(Seq(1));
        let m2 = message(Seq(256));
        assert!(m1 < m2);
        assert!(m2.as_slice() < member("a").as_slice());
        assert_eq!(seq_of(&m2), Some(Seq(256)));
        assert_eq!(seq_of(&[1, 2]), None);
        assert!(!pair("abc", "x").starts_with(&prefix("ab")));
        let reminder = seq_key(REMINDER, Seq(7), "bob");
        assert_eq!(seq_key_parts(&reminder), Some((Seq(7), "bob")));
        assert_eq!(
            seq_key_parts(&seq_key(SCHEDULE, Seq(3), "")),
            Some((Seq(3), ""))
        );
        // No other kind of key falls in the message range the head is read from.
        for other in [
            SETTINGS.to_vec(),
            tagged(FLAGS, "a"),
            tagged(ROLE, "a"),
            reminder,
            member("a"),
        ] {
            assert!(!other.starts_with(&[MESSAGE]));
        }
    }

    proptest::proptest! {
        #[test]
        fn byte_order_is_seq_order(a: u64, b: u64) {
            proptest::prop_assert_eq!(message(Seq(a)).cmp(&message(Seq(b))), a.cmp(&b));
            proptest::prop_assert_eq!(seq_of(&message(Seq(a))), Some(Seq(a)));
        }

        #[test]
        fn one_users_prefix_never_matches_another_users_keys(
            a in "[A-Za-z0-9_.@-]{1,64}",
            b in "[A-Za-z0-9_.@-]{1,64}",
            group in "[A-Za-z0-9_.@-]{1,64}",
        ) {
            let key = pair(&a, &group);
            proptest::prop_assert_eq!(key.starts_with(&prefix(&b)), a == b);
            proptest::prop_assert_eq!(second_of(&key, prefix(&a).len()), Some(group.as_str()));
            proptest::prop_assert_eq!(split_pair(&key), Some((a.as_str(), group.as_str())));
        }
    }

    #[test]
    fn sent_keys_split_back_and_group_by_sender() {
        let key = sent("alice", Seq(7));
        assert_eq!(sent_parts(&key), Some(("alice", Seq(7))));
        assert_eq!(sent_parts(&key[..key.len() - 1]), None);
        assert_eq!(sent_parts(&message(Seq(7))), None);
        // Senders sort by length, then bytes, and every key of one sorts before every key of
        // the next, whatever the seqs: the skip past a sender's last possible key lands on the
        // next sender.
        assert!(sent("al", Seq(u64::MAX)) < sent("bob", Seq(0)));
        assert!(sent("bob", Seq(u64::MAX)) < sent("alice", Seq(0)));
        assert!(sent("alice", Seq(u64::MAX)) < sent("alicf", Seq(0)));
    }

    #[test]
    fn pair_keys_split_back() {
        let key = pair("eng", "alice");
        assert!(key.starts_with(&prefix("eng")));
        assert_eq!(second_of(&key, prefix("eng").len()), Some("alice"));
    }
}
