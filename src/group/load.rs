//! Loading a group actor's memory from the store when it starts (lazily, on first use): its
//! record and settings, members (with who shares reads and their roles) and the receipt index, the unread flags,
//! pending reminders and schedules, each sender's seqs, and the `(sender, client_id) → seq`
//! resend map of the last `--dedup-window` messages.
//!
//! Loading scans the group's messages once: O(messages). (A known limit, ARCHITECTURE.md.)

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
        let deleted_seqs: BTreeSet<u64> = deps
            .store
            .notes(&id, Note::Deleted, Seq(1), Seq(last_seq))?
            .into_iter()
            .map(|(seq, _)| seq.0)
            .collect();
        let window_start =
            last_seq.saturating_sub(u64::try_from(deps.config.dedup_window).unwrap_or(u64::MAX));
        let mut by_sender: HashMap<UserId, Vec<u64>> = HashMap::new();
        let mut resend = HashMap::new();
        let mut resend_order = VecDeque::new();
        let mut corrupt = None;
        deps.store.scan_messages(
            &id,
            Seq(1),
            Seq(last_seq),
            Direction::Ascending,
            &mut |seq, m| {
                let Ok(from) = UserId::parse(&m.from) else {
                    corrupt = Some(seq);
                    return false;
                };
                if !deleted_seqs.contains(&seq.0) {
                    by_sender.entry(from.clone()).or_default().push(seq.0);
                }
                if seq.0 > window_start {
                    let key = (from, m.client_id);
                    resend.insert(key.clone(), (seq.0, m.ts));
                    resend_order.push_back(key);
                }
                true
            },
        )?;
        if let Some(seq) = corrupt {
            return Err(StoreError::Corrupt(format!(
                "sender of message {seq:?} in group {id}"
            )));
        }
        log::debug!(
            "group {id} loaded: {} members, last seq {last_seq}",
            members.len()
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
            by_sender,
            resend,
            resend_order,
            fanout,
            moved: HashMap::new(),
            unwritten_cursors: HashSet::new(),
            roles,
            deferred: Vec::new(),
            deleted_seqs,
            deleted: false,
        }))
    }
}
