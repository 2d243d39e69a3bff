//! Loading a group actor's memory from the store when it starts (lazily, on first use): its
//! record and settings, members (with who shares reads and their roles) and the receipt index, the unread flags,
//! pending reminders and schedules, the deleted seqs, and the `(sender, client_id) → seq`
//! resend map of the last `--dedup-window` messages.
//!
//! Loading reads O(members + deletions + dedup window), never the whole history: each sender's
//! seqs (for `unread`, `receipts mine` and receipt pushes) are the store's per-sender index,
//! read by range when needed. A group written before that index existed gets it built once, on
//! its first start (one scan of its messages).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::ids::{GroupId, Seq, UserId};
use crate::store::{Direction, Note, RoleRecord, StoreError};

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
        let mut resend = HashMap::new();
        let mut resend_order = VecDeque::new();
        let mut newest = Vec::new();
        let mut corrupt = None;
        // Only the newest `--dedup-window` messages: the resend map, and the index entries a
        // crash may have cut off (the index is written just after its message).
        deps.store.scan_messages(
            &id,
            Seq(window_start + 1),
            Seq(last_seq),
            Direction::Ascending,
            &mut |seq, m| {
                let Ok(from) = UserId::parse(&m.from) else {
                    corrupt = Some(seq);
                    return false;
                };
                newest.push((seq, from.clone()));
                let key = (from, m.client_id);
                resend.insert(key.clone(), (seq.0, m.ts));
                resend_order.push_back(key);
                true
            },
        )?;
        if let Some(seq) = corrupt {
            return Err(StoreError::Corrupt(format!(
                "sender of message {seq:?} in group {id}"
            )));
        }
        let window_read = started.elapsed();
        repair_sent_index(&id, &deps, &newest, &deleted_seqs)?;
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
                entries.push((seq, m.from));
            }
            true
        },
    )?;
    for (seq, from) in &entries {
        let from = UserId::parse(from)
            .map_err(|_| StoreError::Corrupt(format!("sender of message {seq:?} in group {id}")))?;
        deps.store.index_sent(id, &from, *seq, true)?;
    }
    deps.store.mark_sent_indexed(id)?;
    log::info!(
        "group {id}: built the sender index of {} messages in {:?}",
        entries.len(),
        started.elapsed()
    );
    Ok(())
}

/// Re-adds the index entries of the newest messages that a crash cut off, and removes those of
/// deletions a crash interrupted.
///
/// A message's entry is written just after it, by the one actor that writes the group, so the
/// entries of live messages are written in seq order; sled recovers a prefix of its writes, so
/// if the newest live message has its entry, every older one has too. The walk goes back from
/// the newest live message until it finds one with its entry (usually the first: one read). A
/// deletion removes the entry after its note, at any later time, so each deleted message of the
/// window is checked (few). Nothing is written unless something was cut off.
fn repair_sent_index(
    id: &GroupId,
    deps: &GroupDeps,
    newest: &[(Seq, UserId)],
    deleted: &BTreeSet<u64>,
) -> Result<(), StoreError> {
    let indexed = |seq: Seq, from: &UserId| -> Result<bool, StoreError> {
        let mut found = false;
        deps.store.scan_sent(
            id,
            from,
            Seq(seq.0.saturating_sub(1)),
            seq,
            Direction::Ascending,
            &mut |_| {
                found = true;
                false
            },
        )?;
        Ok(found)
    };
    for (seq, from) in newest.iter().rev().filter(|(s, _)| !deleted.contains(&s.0)) {
        if indexed(*seq, from)? {
            break;
        }
        log::warn!("group {id}: repairing the sender index at message {seq:?}");
        deps.store.index_sent(id, from, *seq, true)?;
    }
    for (seq, from) in newest.iter().filter(|(s, _)| deleted.contains(&s.0)) {
        if indexed(*seq, from)? {
            log::warn!("group {id}: unindexing deleted message {seq:?}");
            deps.store.index_sent(id, from, *seq, false)?;
        }
    }
    Ok(())
}
