//! The receipt audit (`GET /api/groups/{gid}/audit`): the counts the receipt index computes in
//! O(log members) (`receipts.rs`), checked against the definition (docs/PROTOCOL.md §4)
//! computed the naive way from what is stored.
//!
//! For each of the newest live messages `s` with sender `x`, the recipients are the stored
//! members other than `x` with `joined_seq < s`; of them, `delivered` counts those with
//! `delivered ≥ s`, and `read` those with `read ≥ s` who share their reads (their stored
//! setting). That costs O(members) per message, which is why the index exists, and why this is
//! an admin's occasional check rather than the way counts are served.
//!
//! All inside one handler: the actor first writes its pending cursor moves, so the stored
//! cursors are its cursors, and nothing moves them while it compares. A mismatch therefore means
//! the index and the stored cursors disagree: cursors changed behind the actor's back, or
//! cursors that break `joined_seq ≤ read ≤ delivered`, on which the index's arithmetic relies.

use std::collections::HashSet;

use actix::prelude::*;

use crate::ids::{Seq, UserId};
use crate::store::{Direction, MemberRecord, Note};

use super::{AuditReceipts, GroupActor, GroupError, ReceiptAudit, ReceiptCounts, ReceiptMismatch};

/// A member as stored: its record and its stored `share_reads`.
#[derive(Debug, Clone)]
pub(super) struct StoredMember {
    pub user: UserId,
    pub record: MemberRecord,
    pub shares_reads: bool,
}

/// The counts of message `seq` sent by `sender`, by the definition (a scan of every member).
pub(super) fn naive_counts(members: &[StoredMember], sender: &UserId, seq: u64) -> ReceiptCounts {
    let mut counts = ReceiptCounts {
        seq,
        recipients: 0,
        delivered: 0,
        read: 0,
    };
    for m in members {
        if m.user == *sender || m.record.joined_seq >= seq {
            continue;
        }
        counts.recipients += 1;
        counts.delivered += u64::from(m.record.delivered >= seq);
        counts.read += u64::from(m.shares_reads && m.record.read >= seq);
    }
    counts
}

/// The messages whose counts differ, pairing `expected[i]` with `actual[i]` (same seqs).
pub(super) fn compare(
    expected: &[ReceiptCounts],
    actual: &[ReceiptCounts],
) -> Vec<ReceiptMismatch> {
    expected
        .iter()
        .zip(actual)
        .filter(|(e, a)| e != a)
        .map(|(e, a)| ReceiptMismatch {
            seq: e.seq,
            expected: *e,
            actual: *a,
        })
        .collect()
}

impl GroupActor {
    fn audit(&mut self, limit: usize) -> Result<ReceiptAudit, GroupError> {
        self.persist_cursors();
        if !self.unwritten_cursors.is_empty() {
            return Err(GroupError::Storage(
                "cursor moves could not be written, so the stored cursors lag; retry later".into(),
            ));
        }
        let store = &self.deps.store;
        let mut members = Vec::new();
        for (user, record) in store.members(&self.id)? {
            let shares_reads = store.user_settings(&user)?.unwrap_or_default().share_reads;
            members.push(StoredMember {
                user,
                record,
                shares_reads,
            });
        }
        let head = self.queue.durable_seq();
        let deleted: HashSet<Seq> = store
            .notes(&self.id, Note::Deleted, Seq(1), Seq(head))?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        let mut newest = Vec::new();
        if limit > 0 {
            store.scan_messages(
                &self.id,
                Seq(1),
                Seq(head),
                Direction::Descending,
                &mut |seq, message| {
                    if !deleted.contains(&seq) {
                        newest.push((seq.0, message.from));
                    }
                    newest.len() < limit
                },
            )?;
        }
        newest.reverse();
        let mut expected = Vec::with_capacity(newest.len());
        let mut actual = Vec::with_capacity(newest.len());
        for (seq, from) in newest {
            let sender = UserId::parse(&from)
                .map_err(|_| GroupError::Storage(format!("bad sender of message {seq}")))?;
            expected.push(naive_counts(&members, &sender, seq));
            actual.push(self.receipt(seq, &sender));
        }
        let mismatches = compare(&expected, &actual);
        if !mismatches.is_empty() {
            log::warn!(
                "group {}: receipt audit: {} of {} messages differ from the stored cursors",
                self.id,
                mismatches.len(),
                expected.len()
            );
        }
        Ok(ReceiptAudit {
            checked: u64::try_from(expected.len()).unwrap_or(u64::MAX),
            mismatches,
        })
    }
}

impl Handler<AuditReceipts> for GroupActor {
    type Result = Result<ReceiptAudit, GroupError>;

    fn handle(&mut self, msg: AuditReceipts, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.audit(msg.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::receipts::{Counted, ReceiptIndex};

    fn member(user: &str, joined_seq: u64, delivered: u64, read: u64) -> StoredMember {
        StoredMember {
            user: UserId::parse(user).unwrap(),
            record: MemberRecord {
                joined_seq,
                delivered,
                read,
            },
            shares_reads: user != "carol",
        }
    }

    /// The index's counts for these members, as the actor computes them.
    fn index_counts(members: &[StoredMember], sender: &UserId, seq: u64) -> ReceiptCounts {
        let mut index = ReceiptIndex::default();
        for m in members {
            index.insert(&m.record, m.shares_reads);
        }
        let counted = members.iter().find(|m| m.user == *sender).map(|m| Counted {
            record: &m.record,
            shares_reads: m.shares_reads,
        });
        index.counts(seq, counted)
    }

    #[test]
    fn the_naive_counts_follow_the_definition() {
        let alice = UserId::parse("alice").unwrap();
        // alice sent; dave joined after 3; carol keeps her reads private.
        let members = [
            member("alice", 0, 0, 0),
            member("bob", 0, 5, 4),
            member("carol", 0, 7, 7),
            member("dave", 3, 3, 3),
        ];
        let counts = |seq| naive_counts(&members, &alice, seq);
        let triple = |c: ReceiptCounts| (c.recipients, c.delivered, c.read);
        assert_eq!(triple(counts(3)), (2, 2, 1));
        assert_eq!(triple(counts(5)), (3, 2, 0));
        assert_eq!(triple(counts(8)), (3, 0, 0));
        // The sender is a recipient of nobody's message but others'.
        assert_eq!(
            triple(naive_counts(&members, &UserId::parse("bob").unwrap(), 1)),
            (2, 1, 0)
        );
        for seq in 1..9 {
            assert_eq!(
                index_counts(&members, &alice, seq),
                counts(seq),
                "seq {seq}"
            );
        }
    }

    #[test]
    fn cursors_that_break_the_invariant_make_the_index_and_the_definition_differ() {
        let alice = UserId::parse("alice").unwrap();
        // dave's record says he joined at 9 but delivered nothing: joined_seq > delivered.
        let members = [
            member("alice", 0, 0, 0),
            member("bob", 0, 5, 5),
            member("dave", 9, 0, 0),
        ];
        let seqs = [1, 3, 9];
        let expected: Vec<ReceiptCounts> = seqs
            .iter()
            .map(|&s| naive_counts(&members, &alice, s))
            .collect();
        let actual: Vec<ReceiptCounts> = seqs
            .iter()
            .map(|&s| index_counts(&members, &alice, s))
            .collect();
        let mismatches = compare(&expected, &actual);
        assert_eq!(
            mismatches.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 3],
            "{mismatches:?}"
        );
        assert_eq!(mismatches[0].expected.delivered, 1);
        assert_eq!(mismatches[0].actual.delivered, 0);
        assert!(compare(&expected, &expected).is_empty());
    }
}
