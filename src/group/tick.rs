//! The receipt tick: cursor moves become at most one `receipt` frame per online sender per
//! `--receipt-interval-ms`.
//!
//! An `ack`/`read` changes memory and the receipt index at once, and records the moved interval
//! `(from, to]` per member and cursor ([`Moved`]). Each tick writes the moved members' records
//! (one write per member, not per ack), then, for each online sender, merges the intervals moved
//! by others ([`seqs_in_union`], a pure function, property-tested), looks up that sender's seqs
//! inside them and builds one frame. The frames wait in the commit queue for the flush that
//! makes those cursors durable.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::ids::UserId;
use crate::protocol::{ReceiptItem, ServerFrame, MAX_PAGE};
use crate::store::{ReceiptPolicyRecord, StoreError};

use super::commit_queue::AfterFlush;
use super::{Cursor, GroupActor};

/// The cursor intervals one member moved since the last receipt tick: `(from, to]`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Moved {
    delivered: Option<(u64, u64)>,
    read: Option<(u64, u64)>,
}

fn widen(interval: &mut Option<(u64, u64)>, from: u64, to: u64) {
    *interval = Some(match *interval {
        None => (from, to),
        Some((lo, hi)) => (lo.min(from), hi.max(to)),
    });
}

/// The intervals moved by members other than `sender`.
fn moved_by_others(moved: &HashMap<UserId, Moved>, sender: &UserId) -> Vec<(u64, u64)> {
    moved
        .iter()
        .filter(|(mover, _)| *mover != sender)
        .flat_map(|(_, m)| [m.delivered, m.read])
        .flatten()
        .collect()
}

/// The seqs of `seqs` (ascending) that lie in the union of the intervals `(lo, hi]`, ascending
/// and each once. Costs O(k log k + k log n) for k intervals over n seqs: no scan of `seqs`.
pub(super) fn seqs_in_union(seqs: &[u64], mut intervals: Vec<(u64, u64)>) -> Vec<u64> {
    intervals.sort_unstable();
    let mut items = Vec::new();
    let mut covered_to = 0;
    for (lo, hi) in intervals {
        let lo = lo.max(covered_to);
        if hi <= lo {
            continue;
        }
        let start = seqs.partition_point(|&s| s <= lo);
        let end = seqs.partition_point(|&s| s <= hi);
        items.extend(seqs.get(start..end).unwrap_or_default().iter().copied());
        covered_to = hi;
    }
    items
}

impl GroupActor {
    /// Records that `user` moved a cursor over `(from, to]`.
    pub(super) fn note_moved(&mut self, user: &UserId, cursor: Cursor, from: u64, to: u64) {
        let moved = self.moved.entry(user.clone()).or_default();
        match cursor {
            Cursor::Delivered => widen(&mut moved.delivered, from, to),
            Cursor::Read => widen(&mut moved.read, from, to),
        }
    }

    /// Writes the cursors of members whose cursors moved since they were last written.
    pub(super) fn persist_cursors(&mut self) {
        for user in std::mem::take(&mut self.unwritten_cursors) {
            let Some(record) = self.members.get(&user) else {
                continue;
            };
            match self.deps.store.put_cursors(&self.id, &user, record) {
                Ok(()) => self.queue.wrote(),
                Err(e) => {
                    // A refused write (disk nearly full) is logged once by the guard.
                    if !matches!(e, StoreError::Unwritable(_)) {
                        log::error!(
                            "group {}: writing the cursors of {user} failed: {e}",
                            self.id
                        );
                    }
                    self.unwritten_cursors.insert(user);
                }
            }
        }
    }

    /// The receipt tick: write moved cursors, then one frame per online sender whose messages'
    /// counts changed, once those cursors are durable.
    pub(super) fn tick(&mut self, ctx: &mut Context<Self>) {
        self.persist_cursors();
        if !self.unwritten_cursors.is_empty() {
            // Some cursors could not be written: counts built now could not be made durable
            // before they are pushed. Keep what moved for a later tick.
            return;
        }
        if self.moved.is_empty() {
            return;
        }
        let moved = std::mem::take(&mut self.moved);
        if self.settings.receipts == ReceiptPolicyRecord::Off {
            // No receipt pushes in this group; the cursors are written all the same.
            self.request_flush(ctx);
            return;
        }
        let mut frames = Vec::new();
        for sender in self.fanout.online_users() {
            let Some(seqs) = self.by_sender.get(sender) else {
                continue;
            };
            let intervals = moved_by_others(&moved, sender);
            if intervals.is_empty() {
                continue;
            }
            let items = seqs_in_union(seqs, intervals);
            if items.is_empty() {
                continue;
            }
            // Bound the frame: the newest MAX_PAGE items; older ones can be pulled.
            let skip = items.len().saturating_sub(MAX_PAGE);
            let items: Vec<ReceiptItem> = items[skip..]
                .iter()
                .map(|&seq| self.receipt(seq, sender).into())
                .collect();
            let frame = ServerFrame::Receipt {
                group: self.id.to_string(),
                items,
            };
            frames.push((sender.clone(), Arc::from(frame.to_text())));
        }
        if !frames.is_empty() {
            let kind = "receipt";
            self.after_flush(AfterFlush::Notify { kind, frames }, ctx);
        } else {
            self.request_flush(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overlapping_and_nested_intervals_yield_each_seq_once() {
        let seqs = [2, 3, 5, 8, 9, 12];
        assert_eq!(
            seqs_in_union(&seqs, vec![(1, 5), (4, 9), (6, 7)]),
            [2, 3, 5, 8, 9]
        );
        assert_eq!(seqs_in_union(&seqs, vec![(9, 12), (0, 2)]), [2, 12]);
        assert_eq!(
            seqs_in_union(&seqs, vec![(5, 5), (12, 20)]),
            Vec::<u64>::new()
        );
    }

    proptest! {
        #[test]
        fn the_union_matches_the_definition(
            raw in prop::collection::btree_set(1u64..200, 0..60),
            intervals in prop::collection::vec((0u64..210, 0u64..30), 0..12),
        ) {
            let seqs: Vec<u64> = raw.into_iter().collect();
            let intervals: Vec<(u64, u64)> =
                intervals.into_iter().map(|(lo, len)| (lo, lo + len)).collect();
            let expected: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|&s| intervals.iter().any(|&(lo, hi)| lo < s && s <= hi))
                .collect();
            prop_assert_eq!(seqs_in_union(&seqs, intervals), expected);
        }
    }
}
