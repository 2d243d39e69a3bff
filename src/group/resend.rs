//! The resend map `(sender, client_id) → (seq, ts)` of a group's newest `--dedup-window`
//! messages, loaded lazily, one sender at a time.
//!
//! Why lazy: the map answers a resend with its original seq, and after a restart it must know
//! the window's messages from before. Reading the whole window at start (10,000 index entries by
//! default, about 1 µs each cold whatever their size) made a 1,000,000-message group's first
//! send miss its 20 ms target. So the group's start stays O(members + deletions in the window):
//! it puts only the window's deleted messages in the map (they have no index entry; read from
//! the messages, they are few) and repairs the index entries a crash cut off (a few reads,
//! `load.rs`). A sender's first send after the start ([`GroupActor::load_resends_of`]) then
//! reads that sender's entries in the window, one range of their index, with the values that
//! hold each message's `client_id` and `ts`; entries an older build wrote with `()` are read
//! from their messages then, and given their values (best effort). A sender who never sends
//! again costs nothing. Rejected: loading every sender in the background after the start (the
//! actor is single-threaded, so the first send would wait behind it anyway).
//!
//! Entries arrive out of seq order (a sender's older entries are loaded after newer messages
//! of others were sent), so the map evicts by seq, not by insertion: [`ResendMap`] keeps a
//! `BTreeMap` from seq to key, drops everything at or below `last_seq - window` on each
//! insertion, and checks the seq again at lookup. Each entry's seq is distinct and inside the
//! window, so it holds at most `window` entries: memory stays O(window).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::ids::{GroupId, Seq, UserId};
use crate::store::{Direction, MessageRecord, SentRecord, Store, StoreError};

use super::GroupActor;

/// Up to this many messages are read one by one; more, in one range scan from the oldest to
/// the newest of them.
const POINT_READS: usize = 64;

/// The map's key: who sent it, and the client's id for it.
pub(super) type ResendKey = (UserId, String);

/// `(sender, client_id) → (seq, ts)` for messages in `(last_seq - window, last_seq]`, and the
/// senders whose entries of that window are in it.
pub(super) struct ResendMap {
    window: u64,
    by_key: HashMap<ResendKey, (u64, u64)>,
    /// Every entry of `by_key`, by seq: what eviction walks.
    by_seq: BTreeMap<u64, ResendKey>,
    /// Senders whose index entries in the window were read since the actor started.
    loaded: HashSet<UserId>,
}

impl ResendMap {
    /// An empty map for a window of `window` messages (at least 1).
    pub(super) fn new(window: usize) -> ResendMap {
        ResendMap {
            window: u64::try_from(window.max(1)).unwrap_or(u64::MAX),
            by_key: HashMap::new(),
            by_seq: BTreeMap::new(),
            loaded: HashSet::new(),
        }
    }

    /// The highest seq outside the window when the newest message is `last_seq`.
    pub(super) fn floor(&self, last_seq: u64) -> u64 {
        last_seq.saturating_sub(self.window)
    }

    /// The original `(seq, ts)` of a resend, if it is inside the window.
    pub(super) fn get(&self, key: &ResendKey, last_seq: u64) -> Option<(u64, u64)> {
        self.by_key
            .get(key)
            .copied()
            .filter(|&(seq, _)| seq > self.floor(last_seq))
    }

    /// Remembers a message (the newer one when a key comes twice) and forgets every message
    /// that is no longer among the newest `window` when the newest is `last_seq`.
    pub(super) fn insert(&mut self, key: ResendKey, seq: u64, ts: u64, last_seq: u64) {
        let floor = self.floor(last_seq);
        while let Some(entry) = self.by_seq.first_entry() {
            if *entry.key() > floor {
                break;
            }
            let (old_seq, old_key) = entry.remove_entry();
            if self
                .by_key
                .get(&old_key)
                .is_some_and(|&(s, _)| s == old_seq)
            {
                self.by_key.remove(&old_key);
            }
        }
        if seq <= floor {
            return;
        }
        match self.by_key.get(&key) {
            Some(&(known, _)) if known >= seq => return,
            Some(&(known, _)) => {
                self.by_seq.remove(&known);
            }
            None => {}
        }
        self.by_seq.insert(seq, key.clone());
        self.by_key.insert(key, (seq, ts));
    }

    /// How many messages it holds.
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

impl GroupActor {
    /// Puts `sender`'s messages of the window in the resend map, once per actor: their index
    /// entries in `(last_seq - window, last_seq]` (one range scan), the messages of entries an
    /// older build wrote without a value. An error leaves the sender to load again next time.
    pub(super) fn load_resends_of(&mut self, sender: &UserId) -> Result<(), StoreError> {
        if self.resend.loaded.contains(sender) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let last_seq = self.queue.last_seq();
        let after = self
            .resend
            .floor(last_seq)
            .max(self.first_seq.saturating_sub(1));
        let found = sender_window(
            self.deps.store.as_ref(),
            &self.id,
            sender,
            after,
            last_seq,
            &self.deleted_seqs,
        )?;
        let n_found = found.len();
        for (seq, entry) in found {
            self.resend
                .insert((sender.clone(), entry.client_id), seq, entry.ts, last_seq);
        }
        self.resend.loaded.insert(sender.clone());
        log::debug!(
            "group {}: {n_found} resend entries of {sender} loaded in {:?}",
            self.id,
            started.elapsed()
        );
        Ok(())
    }
}

/// `sender`'s live messages in `(after, upto]` as `(seq, entry)`: the index entries, and for
/// those an older build wrote with `()` the messages (whose values are then written, best
/// effort: a refused write only leaves the next start to read them again). Entries of deleted
/// messages (a crash between a deletion's writes) are skipped: the deletions are in the map
/// already.
fn sender_window(
    store: &dyn Store,
    id: &GroupId,
    sender: &UserId,
    after: u64,
    upto: u64,
    deleted: &BTreeSet<u64>,
) -> Result<Vec<(u64, SentRecord)>, StoreError> {
    let mut found = Vec::new();
    let mut unvalued = BTreeSet::new();
    store.scan_sent_entries(id, sender, Seq(after), Seq(upto), &mut |seq, entry| {
        match entry {
            _ if deleted.contains(&seq.0) => {}
            Some(entry) => found.push((seq.0, entry)),
            None => {
                unvalued.insert(seq.0);
            }
        }
        true
    })?;
    if unvalued.is_empty() {
        return Ok(found);
    }
    let read = read_messages(store, id, &unvalued)?;
    let mut give_values = true;
    for (seq, message) in read {
        if message.from != sender.as_str() {
            // Not something this build writes (`rollcall check` reports it): no resend of
            // `sender` is that message.
            log::warn!("group {id}: index entry of message {seq} under {sender}, not its sender");
            continue;
        }
        let entry = SentRecord::from(&message);
        if give_values {
            if let Err(e) = store.index_sent(id, sender, Seq(seq), Some(&entry)) {
                log::info!("group {id}: index entries left without their values: {e}");
                give_values = false;
            }
        }
        found.push((seq, entry));
    }
    Ok(found)
}

/// The messages with these seqs that exist, by seq: one by one when they are few, else one
/// range scan from the oldest to the newest of them.
pub(super) fn read_messages(
    store: &dyn Store,
    id: &GroupId,
    wanted: &BTreeSet<u64>,
) -> Result<Vec<(u64, MessageRecord)>, StoreError> {
    let mut read = Vec::with_capacity(wanted.len());
    match (wanted.first(), wanted.last()) {
        (Some(&oldest), Some(&newest)) if wanted.len() > POINT_READS => {
            store.scan_messages(
                id,
                Seq(oldest),
                Seq(newest),
                Direction::Ascending,
                &mut |seq, m| {
                    if wanted.contains(&seq.0) {
                        read.push((seq.0, m));
                    }
                    true
                },
            )?;
        }
        _ => {
            for &seq in wanted {
                if let Some(m) = store.message(id, Seq(seq))? {
                    read.push((seq, m));
                }
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, client_id: &str) -> ResendKey {
        (UserId::parse(user).unwrap(), client_id.to_owned())
    }

    #[test]
    fn older_entries_inserted_late_are_evicted_by_seq() {
        let mut map = ResendMap::new(3);
        // Newest first, as a lazy load after other senders' messages inserts them.
        map.insert(key("bob", "b10"), 10, 1, 10);
        map.insert(key("alice", "a9"), 9, 1, 10);
        map.insert(key("alice", "a8"), 8, 1, 10);
        map.insert(key("alice", "a7"), 7, 1, 10);
        assert_eq!(map.len(), 3, "7 is outside (7, 10]");
        assert_eq!(map.get(&key("alice", "a7"), 10), None);
        assert_eq!(map.get(&key("alice", "a8"), 10), Some((8, 1)));
        map.insert(key("bob", "b11"), 11, 2, 11);
        assert_eq!(map.get(&key("alice", "a8"), 11), None, "evicted by seq");
        assert_eq!(map.len(), 3);
        // At lookup, the window is checked again.
        assert_eq!(map.get(&key("alice", "a9"), 12), None);
        assert_eq!(map.get(&key("bob", "b11"), 12), Some((11, 2)));
    }

    #[test]
    fn a_key_that_comes_twice_keeps_its_newer_message() {
        let mut map = ResendMap::new(10);
        map.insert(key("alice", "c"), 5, 50, 6);
        map.insert(key("alice", "c"), 3, 30, 6);
        assert_eq!(map.get(&key("alice", "c"), 6), Some((5, 50)));
        map.insert(key("alice", "c"), 6, 60, 6);
        assert_eq!(map.get(&key("alice", "c"), 6), Some((6, 60)));
        assert_eq!(map.len(), 1);
        // Evicting the old seq does not forget the newer message with that key.
        map.insert(key("bob", "d"), 16, 1, 16);
        assert_eq!(map.get(&key("alice", "c"), 16), None);
        assert_eq!(map.len(), 1);
        let mut map = ResendMap::new(10);
        map.insert(key("alice", "c"), 5, 50, 6);
        map.insert(key("alice", "c"), 12, 120, 12);
        map.insert(key("bob", "d"), 15, 1, 15);
        assert_eq!(map.get(&key("alice", "c"), 15), Some((12, 120)));
    }

    #[test]
    fn memory_stays_within_the_window() {
        let mut map = ResendMap::new(100);
        for seq in 1..=10_000u64 {
            map.insert(key("alice", &format!("c{seq}")), seq, seq, seq);
            assert!(map.len() <= 100);
            assert_eq!(map.by_seq.len(), map.len());
        }
    }
}
