//! The receipt index: counts of recipients, deliveries and reads for any message, derived from
//! the members' cursors in O(log members) per query.
//!
//! Receipts are never stored per message. For message `s` with sender `x`:
//! - recipients(s) = members with `joined_seq < s`, minus `x`;
//! - read(s) = recipients with `read >= s`; delivered(s) = recipients with `delivered >= s`.
//!
//! Because a member's cursors start at its join point and only move forward
//! (`joined_seq <= read <= delivered`), a member with `joined_seq >= s` always has
//! `read >= s`, so `read(s) = #{read >= s} - #{joined_seq >= s} - [x counts]`. Each of the three
//! counts is a binary search in a sorted vector of that cursor over all members.
//!
//! Private reads: a member who does not share reads (`share_reads: false`) is never counted as
//! having read someone else's message, only as having received it. So `read` and a second
//! `joined` vector hold only the members who share: `read(s) = #{shared read >= s} - #{shared
//! joined >= s} - [x shares and counts]`, by the same argument, still O(log members).
//!
//! Sorted vectors rather than a Fenwick tree keyed by seq: the tree would grow with the number of
//! messages (8 bytes per message per cursor kind), while a sorted vector grows with members, and
//! an update is one `memmove` of at most a few kilobytes even for thousands of members.

use super::ReceiptCounts;
use crate::store::MemberRecord;

/// A sorted multiset of u64 values with "how many are >= s" queries.
#[derive(Debug, Default, Clone)]
struct SortedValues(Vec<u64>);

impl SortedValues {
    fn insert(&mut self, value: u64) {
        let at = self.0.partition_point(|&v| v < value);
        self.0.insert(at, value);
    }

    fn remove(&mut self, value: u64) {
        let at = self.0.partition_point(|&v| v < value);
        if self.0.get(at) == Some(&value) {
            self.0.remove(at);
        } else {
            log::error!("receipt index: removing a value it does not hold ({value})");
        }
    }

    fn replace(&mut self, old: u64, new: u64) {
        if old != new {
            self.remove(old);
            self.insert(new);
        }
    }

    fn count_at_least(&self, s: u64) -> u64 {
        let below = self.0.partition_point(|&v| v < s);
        u64::try_from(self.0.len() - below).unwrap_or(u64::MAX)
    }
}

/// Counts over all current members' cursors of one group.
#[derive(Debug, Default, Clone)]
pub struct ReceiptIndex {
    joined: SortedValues,
    delivered: SortedValues,
    /// Of the members who share their reads only.
    shared_joined: SortedValues,
    shared_read: SortedValues,
}

/// A member as the index sees it: its record, and whether it shares its reads.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    pub record: &'a MemberRecord,
    pub shares_reads: bool,
}

impl ReceiptIndex {
    /// Adds a member's record.
    pub fn insert(&mut self, member: &MemberRecord, shares_reads: bool) {
        self.joined.insert(member.joined_seq);
        self.delivered.insert(member.delivered);
        if shares_reads {
            self.shared_joined.insert(member.joined_seq);
            self.shared_read.insert(member.read);
        }
    }

    /// Removes a member's record (the one it holds now).
    pub fn remove(&mut self, member: &MemberRecord, shares_reads: bool) {
        self.joined.remove(member.joined_seq);
        self.delivered.remove(member.delivered);
        if shares_reads {
            self.shared_joined.remove(member.joined_seq);
            self.shared_read.remove(member.read);
        }
    }

    /// Moves a member's cursors from `old` to `new`.
    pub fn update(&mut self, old: &MemberRecord, new: &MemberRecord, shares_reads: bool) {
        self.joined.replace(old.joined_seq, new.joined_seq);
        self.delivered.replace(old.delivered, new.delivered);
        if shares_reads {
            self.shared_joined.replace(old.joined_seq, new.joined_seq);
            self.shared_read.replace(old.read, new.read);
        }
    }

    /// A member starts or stops sharing its reads.
    pub fn set_shares_reads(&mut self, member: &MemberRecord, from: bool, to: bool) {
        if from != to {
            self.remove(member, from);
            self.insert(member, to);
        }
    }

    /// The counts for message `seq`, whose sender is `sender` (`None` when the sender is no
    /// longer a member).
    pub fn counts(&self, seq: u64, sender: Option<Counted<'_>>) -> ReceiptCounts {
        let not_recipients = self.joined.count_at_least(seq);
        let not_shared_recipients = self.shared_joined.count_at_least(seq);
        let members = u64::try_from(self.joined.0.len()).unwrap_or(u64::MAX);
        let (own, own_delivered, own_read) = match sender {
            Some(Counted {
                record: m,
                shares_reads,
            }) if m.joined_seq < seq => (
                1,
                u64::from(m.delivered >= seq),
                u64::from(shares_reads && m.read >= seq),
            ),
            _ => (0, 0, 0),
        };
        let minus = |n: u64, not: u64, own: u64| n.saturating_sub(not).saturating_sub(own);
        ReceiptCounts {
            seq,
            recipients: minus(members, not_recipients, own),
            delivered: minus(
                self.delivered.count_at_least(seq),
                not_recipients,
                own_delivered,
            ),
            read: minus(
                self.shared_read.count_at_least(seq),
                not_shared_recipients,
                own_read,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(joined_seq: u64, delivered: u64, read: u64) -> MemberRecord {
        MemberRecord {
            joined_seq,
            delivered,
            read,
        }
    }

    /// The definition, by scanning every member: a member who does not share reads is never
    /// counted as having read.
    fn naive(
        members: &[MemberRecord],
        shares: &[bool],
        sender: Option<usize>,
        seq: u64,
    ) -> ReceiptCounts {
        let recipients: Vec<(&MemberRecord, bool)> = members
            .iter()
            .zip(shares.iter().copied())
            .enumerate()
            .filter(|(i, (m, _))| Some(*i) != sender && m.joined_seq < seq)
            .map(|(_, pair)| pair)
            .collect();
        ReceiptCounts {
            seq,
            recipients: recipients.len() as u64,
            delivered: recipients
                .iter()
                .filter(|(m, _)| m.delivered >= seq)
                .count() as u64,
            read: recipients
                .iter()
                .filter(|(m, share)| *share && m.read >= seq)
                .count() as u64,
        }
    }

    fn counted(m: &MemberRecord) -> Option<Counted<'_>> {
        Some(Counted {
            record: m,
            shares_reads: true,
        })
    }

    #[test]
    fn late_joiners_and_the_sender_are_not_recipients() {
        let members = [
            member(0, 5, 3),
            member(0, 2, 2),
            member(4, 4, 4),
            member(0, 9, 9),
        ];
        let mut index = ReceiptIndex::default();
        members.iter().for_each(|m| index.insert(m, true));
        // Message 3 sent by member 3: recipients are 0 and 1 (2 joined at 4).
        let item = index.counts(3, counted(&members[3]));
        assert_eq!((item.recipients, item.delivered, item.read), (2, 1, 1));
        // Message 5 sent by member 0: recipients 1, 2, 3; delivered: 3; read: 3.
        let item = index.counts(5, counted(&members[0]));
        assert_eq!((item.recipients, item.delivered, item.read), (3, 1, 1));
        // Member 3 stops sharing its reads: it counts as delivered, not read.
        index.set_shares_reads(&members[3], true, false);
        let item = index.counts(5, counted(&members[0]));
        assert_eq!((item.recipients, item.delivered, item.read), (3, 1, 0));
        // The sender left: everyone who joined before counts.
        let item = index.counts(5, None);
        assert_eq!(item.recipients, 4);
    }

    proptest! {
        #[test]
        fn counts_match_the_definition(
            raw in prop::collection::vec((0u64..30, 0u64..30, 0u64..30, any::<bool>()), 1..40),
            moves in prop::collection::vec((0usize..40, 0u64..40, any::<bool>()), 0..60),
            toggles in prop::collection::vec(0usize..40, 0..10),
            sender in 0usize..40,
            seq in 1u64..45,
        ) {
            // Build members that respect joined <= read <= delivered.
            let mut members: Vec<MemberRecord> = raw
                .iter()
                .map(|&(j, a, b, _)| {
                    let read = j + a.min(b);
                    member(j, read + a.max(b) - a.min(b), read)
                })
                .collect();
            let mut shares: Vec<bool> = raw.iter().map(|&(.., share)| share).collect();
            let mut index = ReceiptIndex::default();
            for (m, &share) in members.iter().zip(&shares) {
                index.insert(m, share);
            }
            for (who, to, is_read) in moves {
                let i = who % members.len();
                let old = members[i];
                let mut new = old;
                if is_read {
                    new.read = new.read.max(to);
                    new.delivered = new.delivered.max(new.read);
                } else {
                    new.delivered = new.delivered.max(to);
                }
                index.update(&old, &new, shares[i]);
                members[i] = new;
            }
            // Members start or stop sharing their reads (applies to past messages too).
            for who in toggles {
                let i = who % members.len();
                index.set_shares_reads(&members[i], shares[i], !shares[i]);
                shares[i] = !shares[i];
            }
            // Remove one member to exercise removal.
            let gone = members.remove(0);
            index.remove(&gone, shares.remove(0));
            if members.is_empty() {
                return Ok(());
            }
            let sender = sender % members.len();
            let as_sender = Counted { record: &members[sender], shares_reads: shares[sender] };
            prop_assert_eq!(
                index.counts(seq, Some(as_sender)),
                naive(&members, &shares, Some(sender), seq)
            );
            prop_assert_eq!(index.counts(seq, None), naive(&members, &shares, None, seq));
        }
    }
}
