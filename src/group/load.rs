//! Loading a group actor's memory from the store when it starts (lazily, on first use): its
//! record and settings, members (with who shares reads and their roles) and the receipt index, the unread flags,
//! pending reminders and schedules, the deleted seqs, and the `(sender, client_id) → seq`
//! resend map of the last `--dedup-window` messages.
//!
//! Loading reads O(members + deletions + dedup window), never the whole history: each sender's
//! seqs (for `unread`, `receipts mine` and receipt pushes) are the store's per-sender index,
//! read by range when needed. A group written before that index existed gets it built once, on
//! its first start (one scan of its messages).
//!
//! The resend map comes from the same index: each entry holds its message's `client_id` and
//! `ts`, so the start reads the window's index entries (a skip from sender to sender, then each
//! sender's range: O(senders + window) entries of a few dozen bytes) rather than the window's
//! messages (about 2 µs each, cold, for the default window of 10,000). The messages are read
//! only for what the index cannot tell (`resend_window`): deleted ones, entries an older build
//! wrote without a value, and the newest messages whose entries a crash cut off. Rejected:
//! keeping the resend map in a record of its own (one more write per send on the hot path,
//! where the index entry is written anyway).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::ids::{GroupId, Seq, UserId};
use crate::store::{Direction, MessageRecord, Note, RoleRecord, SentRecord, StoreError};

use super::commit_queue::CommitQueue;
use super::fanout::Fanout;
use super::receipts::ReceiptIndex;
use super::reminders::Reminders;
use super::{GroupActor, GroupDeps};

impl GroupActor {
    /// Rebuilds a group's actor state from the store; `None` when the group does not exist.
    pub fn load(id: GroupId, deps: GroupDeps) -> Result<Option<GroupActor>, StoreError> {
        let started = std::time::Instant::now();
        let Some(record) = deps.store.group(&id)? else {
            return Ok(None);
        };
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
        let window = u64::try_from(deps.config.dedup_window.max(1)).unwrap_or(u64::MAX);
        let window_start = last_seq
            .saturating_sub(window)
            .max(first_seq.saturating_sub(1));
        // Only the newest `--dedup-window` messages: the resend map, and the index entries a
        // crash may have cut off (the index is written just after its message).
        let newest = resend_window(&id, &deps, window_start, last_seq, &deleted_seqs)?;
        let window_read = started.elapsed();
        let mut resend = HashMap::with_capacity(newest.len());
        let mut resend_order = VecDeque::with_capacity(newest.len());
        for sent in newest {
            let key = (sent.from, sent.client_id);
            resend.insert(key.clone(), (sent.seq.0, sent.ts));
            resend_order.push_back(key);
        }
        log::debug!(
            "group {id} loaded in {:?} ({:?} up to the window read): {} members, seqs \
             {first_seq}..={last_seq}, {} in the resend window",
            started.elapsed(),
            window_read,
            members.len(),
            resend_order.len()
        );
        let fanout = Fanout::new(id.clone(), std::sync::Arc::clone(&deps.metrics));
        Ok(Some(GroupActor {
            id,
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
            resend_order,
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

/// Up to this many messages a start reads one by one; more, in one range scan from the oldest
/// to the newest of them (they are usually the newest few, or a whole window of entries an
/// older build wrote).
const POINT_READS: usize = 64;

/// One message of the resend window.
struct WindowMessage {
    seq: Seq,
    from: UserId,
    client_id: String,
    ts: u64,
}

/// The newest messages `(window_start, last_seq]` for the resend map, by seq, deleted ones
/// included (a resend of a deleted message's `client_id` is still a duplicate), read from the
/// per-sender index: O(senders + window) small entries, not the messages.
///
/// The messages are read only where the index cannot tell: the deleted ones (not in the index),
/// those whose entry an older build wrote without a value (rewritten with it here, best effort,
/// so the next start need not read them), and those newer than the newest live one with an
/// entry, which a crash cut off: a message's entry is written just after it, by the one actor
/// that writes the group, so the entries of live messages are written in seq order, and sled
/// recovers a prefix of its writes: if a live message has its entry, every older one has too.
/// Those entries are re-added, oldest first (so a crash during the repair leaves a prefix too).
/// A deletion removes the entry after its note, so an entry of a deleted message a crash left
/// behind is among those read, and removed. Nothing is written unless something was cut off
/// or written by an older build.
fn resend_window(
    id: &GroupId,
    deps: &GroupDeps,
    window_start: u64,
    last_seq: u64,
    deleted: &BTreeSet<u64>,
) -> Result<Vec<WindowMessage>, StoreError> {
    if window_start >= last_seq {
        return Ok(Vec::new());
    }
    let mut newest = Vec::new();
    let mut unvalued = BTreeSet::new();
    let mut stale = Vec::new();
    deps.store.scan_sent_window(
        id,
        Seq(window_start),
        Seq(last_seq),
        &mut |sender, seq, entry| {
            match entry {
                _ if deleted.contains(&seq.0) => stale.push((sender.clone(), seq)),
                Some(entry) => newest.push(WindowMessage {
                    seq,
                    from: sender.clone(),
                    client_id: entry.client_id,
                    ts: entry.ts,
                }),
                None => {
                    unvalued.insert(seq.0);
                }
            }
            true
        },
    )?;
    let newest_indexed = newest
        .iter()
        .map(|m| m.seq.0)
        .chain(unvalued.iter().copied())
        .max()
        .unwrap_or(window_start);
    let cut_off = newest_indexed + 1..=last_seq;
    let mut wanted: BTreeSet<u64> = deleted
        .range(window_start + 1..=last_seq)
        .copied()
        .collect();
    wanted.extend(unvalued.iter().copied());
    wanted.extend(cut_off.clone());
    let mut read = Vec::new();
    let mut corrupt = None;
    let mut keep = |seq: Seq, m: MessageRecord| {
        let Ok(from) = UserId::parse(&m.from) else {
            corrupt = Some(seq);
            return false;
        };
        read.push((seq, from, m));
        true
    };
    match (wanted.first(), wanted.last()) {
        (Some(&oldest), Some(&newest_wanted)) if wanted.len() > POINT_READS => {
            deps.store.scan_messages(
                id,
                Seq(oldest),
                Seq(newest_wanted),
                Direction::Ascending,
                &mut |seq, m| !wanted.contains(&seq.0) || keep(seq, m),
            )?;
        }
        _ => {
            for &seq in &wanted {
                if let Some(m) = deps.store.message(id, Seq(seq))? {
                    if !keep(Seq(seq), m) {
                        break;
                    }
                }
            }
        }
    }
    if let Some(seq) = corrupt {
        return Err(StoreError::Corrupt(format!(
            "sender of message {seq:?} in group {id}"
        )));
    }
    let mut give_values = true;
    for (seq, from, m) in read {
        let entry = SentRecord::from(&m);
        if cut_off.contains(&seq.0) && !deleted.contains(&seq.0) {
            log::warn!("group {id}: repairing the sender index at message {seq:?}");
            deps.store.index_sent(id, &from, seq, Some(&entry))?;
        } else if give_values && unvalued.contains(&seq.0) {
            // An entry an older build wrote without a value: this start has what it needs, so
            // a refused write only leaves the next start to read the messages again.
            if let Err(e) = deps.store.index_sent(id, &from, seq, Some(&entry)) {
                log::info!("group {id}: index entries left without their values: {e}");
                give_values = false;
            }
        }
        newest.push(WindowMessage {
            seq,
            from,
            client_id: entry.client_id,
            ts: entry.ts,
        });
    }
    for (sender, seq) in stale {
        log::warn!("group {id}: unindexing deleted message {seq:?}");
        deps.store.index_sent(id, &sender, seq, None)?;
    }
    newest.sort_by_key(|m| m.seq);
    newest.dedup_by_key(|m| m.seq);
    Ok(newest)
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
