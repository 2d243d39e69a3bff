//! Writing a stopped server's database behind its back, for tests that corrupt it on purpose
//! (`rollcall check`, the receipt audit). Only tests name sled outside `src/store/`; the key
//! layout written here is ARCHITECTURE.md's *Storage layout*, and values are encoded as
//! `src/store/codec.rs` does (a version byte, then bincode).

use std::path::Path;
use std::time::{Duration, Instant};

use rollcall::store::{MemberRecord, SentRecord};

use super::TIMEOUT;

/// Opens `<data>/db` with sled itself; retried while the server that just stopped still holds
/// its lock. Without sled's background flusher, so that dropping it (after a `flush`) frees the
/// database at once for the next process.
pub fn open(data: &Path) -> sled::Db {
    let started = Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(data.join("db"))
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return db,
            Err(e) if started.elapsed() < TIMEOUT => {
                eprintln!("opening the database: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("opening the database: {e}"),
        }
    }
}

/// The tree of one group.
pub fn group_tree(db: &sled::Db, group: &str) -> sled::Tree {
    db.open_tree(format!("group:{group}"))
        .expect("a group tree")
}

/// `m` + seq: a message's key in its group's tree.
pub fn message_key(seq: u64) -> Vec<u8> {
    let mut key = vec![b'm'];
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `u` + user id: a member's key in its group's tree.
pub fn member_key(user: &str) -> Vec<u8> {
    let mut key = vec![b'u'];
    key.extend_from_slice(user.as_bytes());
    key
}

/// A member record's stored value.
pub fn member_value(joined_seq: u64, delivered: u64, read: u64) -> Vec<u8> {
    let record = MemberRecord {
        joined_seq,
        delivered,
        read,
    };
    let mut value = vec![1];
    value.extend(bincode::serialize(&record).expect("encoding a member record"));
    value
}

/// `[len][user][group]`: an entry of the `user_groups` index.
pub fn index_key(user: &str, group: &str) -> Vec<u8> {
    let mut key = vec![u8::try_from(user.len()).expect("a short id")];
    key.extend_from_slice(user.as_bytes());
    key.extend_from_slice(group.as_bytes());
    key
}

/// `b` + `[len][sender]` + seq: a message's entry in its group's per-sender index.
pub fn sent_key(sender: &str, seq: u64) -> Vec<u8> {
    let mut key = vec![b'b', u8::try_from(sender.len()).expect("a short id")];
    key.extend_from_slice(sender.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A per-sender index entry's stored value (`[1]` alone is what builds before it wrote).
pub fn sent_value(client_id: &str, ts: u64) -> Vec<u8> {
    let record = SentRecord {
        client_id: client_id.into(),
        ts,
    };
    let mut value = vec![1];
    value.extend(bincode::serialize(&record).expect("encoding an index entry"));
    value
}
