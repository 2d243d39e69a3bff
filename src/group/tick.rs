//! The receipt tick: cursor moves become at most one `receipt` frame per online sender per
//! `--receipt-interval-ms`.
//!
//! An `ack`/`read` changes memory and the receipt index at once, and records the moved interval
//! `(from, to]` per member and cursor ([`Moved`]). Each tick writes the moved members' records
//! (one write per member, not per ack), then, for each online sender, merges the intervals moved
//! by others ([`union`], a pure function, property-tested), looks up that sender's seqs inside
//! them in the store's per-sender index (newest first, at most a page) and builds one frame. The frames wait in the commit queue for the flush that
//! makes those cursors durable.

use crate::presence::FrameText;
use std::collections::HashMap;

use actix::prelude::*;

use crate::ids::{Seq, UserId};
use crate::protocol::{ReceiptItem, ServerFrame, MAX_PAGE};
use crate::store::{Direction, ReceiptPolicyRecord, StoreError};

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

/// The union of the intervals `(lo, hi]` as disjoint intervals, ascending. O(k log k).
pub(super) fn union(mut intervals: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    intervals.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in intervals {
        if hi <= lo {
            continue;
        }
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The seqs of `seqs` (ascending) that lie in the union of the intervals `(lo, hi]`, ascending
/// and each once: the definition the store's index scans in [`GroupActor::tick`] follow.
#[cfg(test)]
pub(super) fn seqs_in_union(seqs: &[u64], intervals: Vec<(u64, u64)>) -> Vec<u64> {
    let mut items = Vec::new();
    for (lo, hi) in union(intervals) {
        let start = seqs.partition_point(|&s| s <= lo);
        let end = seqs.partition_point(|&s| s <= hi);
        items.extend(seqs.get(start..end).unwrap_or_default().iter().copied());
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
        let durable = self.queue.durable_seq();
        for sender in self.fanout.online_users() {
            let intervals = union(moved_by_others(&moved, sender));
            if intervals.is_empty() {
                continue;
            }
            // The sender's seqs in the union, from the store's per-sender index, newest first,
            // at most MAX_PAGE (older ones can be pulled): O(result), whatever the history.
            let mut items = Vec::new();
            for &(lo, hi) in intervals.iter().rev() {
                if items.len() >= MAX_PAGE {
                    break;
                }
                let scanned = self.deps.store.scan_sent(
                    &self.id,
                    sender,
                    Seq(lo.max(self.first_seq.saturating_sub(1))),
                    Seq(hi.min(durable)),
                    Direction::Descending,
                    &mut |seq| {
                        items.push(seq.0);
                        items.len() < MAX_PAGE
                    },
                );
                if let Err(e) = scanned {
                    log::error!("group {}: reading the seqs of {sender}: {e}", self.id);
                }
            }
            if items.is_empty() {
                continue;
            }
            items.reverse();
            let items: Vec<ReceiptItem> = items
                .iter()
                .map(|&seq| self.receipt(seq, sender).into())
                .collect();
            let frame = ServerFrame::Receipt {
                group: self.id.to_string(),
                items,
            };
            frames.push((sender.clone(), FrameText::from(frame.to_text())));
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
