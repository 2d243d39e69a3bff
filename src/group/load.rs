//! Loading a group actor's memory from the store when it starts (lazily, on first use): its
//! record and settings, members (with who shares reads and their roles) and the receipt index, the unread flags,
//! pending reminders and schedules, the deleted seqs, and the deleted messages of the
//! `(sender, client_id) → seq` resend map of the last `--dedup-window` messages.
//!
//! Loading reads O(members + deletions in the dedup window), never the whole history nor the
//! whole window: each sender's
//! seqs (for `unread`, `receipts mine` and receipt pushes) are the store's per-sender index,
//! read by range when needed. A group written before that index existed gets it built once, on
//! its first start (one scan of its messages).
//!
//! The resend map is loaded lazily, per sender (`resend.rs`): the start puts in it only the
//! window's deleted messages (read from the messages: they have no index entry, and they are
//! few), and repairs what a crash can leave of the index in the window (`start_window`: a few
//! reads). Each sender's entries of the window are read on their first send after the start,
//! so a start stays O(members + deletions in the window) however many messages the window
//! holds (it read the window's 10,000 index entries before, about 1 µs each cold).
//! Rejected: keeping the resend map in a record of its own (one more write per send on the hot
//! path, where the index entry is written anyway).

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::ids::{GroupId, Seq, UserId};
use crate::store::{Direction, Note, RoleRecord, SentRecord, StoreError};

use super::commit_queue::CommitQueue;
use super::fanout::Fanout;
use super::receipts::ReceiptIndex;
use super::reminders::Reminders;
use super::resend::{read_messages, ResendMap};
use super::{GroupActor, GroupDeps};

impl GroupActor {
    /// Rebuilds a group's actor state from the store; `None` when the group does not exist.
    pub fn load(id: GroupId, deps: GroupDeps) -> Result<Option<GroupActor>, StoreError> {
        let started = std::time::Instant::now();
        let Some(record) = deps.store.group(&id)? else {
            return Ok(None);
        };
        let epoch = deps.store.claim_group(&id)?;
        let settings = deps.store.group_settings(&id)?.unwrap_or_default();
        let mut index = ReceiptIndex::default();
        let mut members = HashMap::new();
        let mut private_readers = HashSet::new();
        for (user, member) in deps.store.members(&id)? {
            let shares = deps
                .store
                .user_settings(&user)?
                .unwrap_or_default()
                .share_reads;
            index.insert(&member, shares);
            if !shares {
                private_readers.insert(user.clone());
            }
            members.insert(user, member);
        }
        let marked_unread: HashSet<UserId> = deps
            .store
            .member_flags(&id)?
            .into_iter()
            .filter(|(user, flags)| flags.marked_unread && members.contains_key(user))
            .map(|(user, _)| user)
            .collect();
        let roles: HashMap<UserId, RoleRecord> = deps
            .store
            .member_roles(&id)?
            .into_iter()
            .filter(|(user, _)| members.contains_key(user))
            .collect();
        let mut reminders = Reminders::default();
        for (seq, user, record) in deps.store.reminders(&id)? {
            match members.get(&user) {
                Some(m) if m.read < seq.0 => reminders.add(user, seq.0, record),
                // Read (or left) before its record was deleted: delete it now (best effort: a
                // refused write must not keep the group from starting).
                _ => {
                    if let Err(e) = deps.store.remove_reminder(&id, seq, &user) {
                        log::debug!("group {id}: deleting a read reminder: {e}");
                    }
                }
            }
        }
        for (seq, schedule) in deps.store.schedules(&id)? {
            reminders.add_schedule(seq.0, schedule.due_ms);
        }
        let last_seq = deps.store.last_seq(&id)?.0;
        let first_seq = deps.store.first_seq(&id)?.0;
        let last_ts = deps.store.message(&id, Seq(last_seq))?.map_or(0, |m| m.ts);
        let retention = deps.store.group_retention(&id)?;
        let deleted_seqs: BTreeSet<u64> = deps
            .store
            .notes(&id, Note::Deleted, Seq(first_seq), Seq(last_seq))?
            .into_iter()
            .map(|(seq, _)| seq.0)
            .collect();
        if !deps.store.sent_indexed(&id)? {
            build_sent_index(&id, &deps, first_seq, last_seq, &deleted_seqs)?;
        }
        let mut resend = ResendMap::new(deps.config.dedup_window);
        let window_start = resend.floor(last_seq).max(first_seq.saturating_sub(1));
        // Only the newest `--dedup-window` messages: their deletions for the resend map, and
        // the index entries a crash may have cut off (the index is written just after its
        // message). Each sender's entries come on their first send.
        for (seq, from, entry) in start_window(&id, &deps, window_start, last_seq, &deleted_seqs)? {
            resend.insert((from, entry.client_id), seq, entry.ts, last_seq);
        }
        log::debug!(
            "group {id} loaded in {:?}: {} members, seqs {first_seq}..={last_seq}, {} deleted \
             in the resend window",
            started.elapsed(),
            members.len(),
            resend.len()
        );
        let fanout = Fanout::new(id.clone(), std::sync::Arc::clone(&deps.metrics));
        Ok(Some(GroupActor {
            id,
            epoch,
            record,
            settings,
            deps,
            queue: CommitQueue::new(last_seq),
            members,
            private_readers,
            marked_unread,
            index,
            reminders,
            first_seq,
            last_ts,
            retention,
            resend,
            fanout,
            moved: HashMap::new(),
            unwritten_cursors: HashSet::new(),
            roles,
            deferred: Vec::new(),
            deleted_seqs,
            deleted: false,
            last_used: std::time::Instant::now(),
            retire: None,
        }))
    }
}

/// What a start needs of the newest messages `(window_start, last_seq]`: the deleted ones, as
/// `(seq, sender, entry)` for the resend map (a resend of a deleted message's `client_id` is
/// still a duplicate; they have no index entry, so they are read from the messages), and the
/// index whole again.
///
/// A message's entry is written just after it, by the one actor that writes the group, so the
/// entries of live messages are written in seq order, and sled recovers a prefix of its
/// writes: if a live message has its entry, every older one has too. So the start reads the
/// live messages newest first until one has its entry (usually the newest: one message and one
/// entry), and re-adds the entries of those before it, oldest first (so a crash during the
/// repair leaves a prefix too). A deletion removes the entry after its note, so a deleted
/// message's entry that a crash left behind is removed here. Nothing is written unless
/// something was cut off or left behind.
fn start_window(
    id: &GroupId,
    deps: &GroupDeps,
    window_start: u64,
    last_seq: u64,
    deleted: &BTreeSet<u64>,
) -> Result<Vec<(u64, UserId, SentRecord)>, StoreError> {
    if window_start >= last_seq {
        return Ok(Vec::new());
    }
    let store = deps.store.as_ref();
    let corrupt = |seq: u64| StoreError::Corrupt(format!("sender of message {seq} in group {id}"));
    let has_entry = |sender: &UserId, seq: u64| -> Result<bool, StoreError> {
        let mut found = false;
        store.scan_sent_entries(id, sender, Seq(seq - 1), Seq(seq), &mut |_, _| {
            found = true;
            false
        })?;
        Ok(found)
    };
    let wanted: BTreeSet<u64> = deleted
        .range(window_start + 1..=last_seq)
        .copied()
        .collect();
    let mut deletions = Vec::with_capacity(wanted.len());
    for (seq, m) in read_messages(store, id, &wanted)? {
        let from = UserId::parse(&m.from).map_err(|_| corrupt(seq))?;
        if has_entry(&from, seq)? {
            log::warn!("group {id}: unindexing deleted message {seq}");
            store.index_sent(id, &from, Seq(seq), None)?;
        }
        deletions.push((seq, from, SentRecord::from(&m)));
    }
    let mut cut_off = Vec::new();
    for seq in (window_start + 1..=last_seq).rev() {
        if deleted.contains(&seq) {
            continue;
        }
        let Some(m) = store.message(id, Seq(seq))? else {
            continue;
        };
        let from = UserId::parse(&m.from).map_err(|_| corrupt(seq))?;
        if has_entry(&from, seq)? {
            break;
        }
        cut_off.push((seq, from, SentRecord::from(&m)));
    }
    for (seq, from, entry) in cut_off.iter().rev() {
        log::warn!("group {id}: repairing the sender index at message {seq}");
        store.index_sent(id, from, Seq(*seq), Some(entry))?;
    }
    Ok(deletions)
}

/// Builds the per-sender index of a group written before it existed: one scan of its messages.
fn build_sent_index(
    id: &GroupId,
    deps: &GroupDeps,
    first_seq: u64,
    last_seq: u64,
    deleted: &BTreeSet<u64>,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut entries = Vec::new();
    deps.store.scan_messages(
        id,
        Seq(first_seq),
        Seq(last_seq),
        Direction::Ascending,
        &mut |seq, m| {
            if !deleted.contains(&seq.0) {
                entries.push((seq, SentRecord::from(&m), m.from));
            }
            true
        },
    )?;
    for (seq, entry, from) in &entries {
        let from = UserId::parse(from)
            .map_err(|_| StoreError::Corrupt(format!("sender of message {seq:?} in group {id}")))?;
        deps.store.index_sent(id, &from, *seq, Some(entry))?;
    }
    deps.store.mark_sent_indexed(id)?;
    log::info!(
        "group {id}: built the sender index of {} messages in {:?}",
        entries.len(),
        started.elapsed()
    );
    Ok(())
}
