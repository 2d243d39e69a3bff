//! The group actor's read-only queries: summaries for `welcome`/`joined`, pages of messages,
//! receipt counts and reader lists, the admin's view. None of them writes; all of them answer
//! only up to the durable head, so nothing is visible before the flush that covers it.

use crate::ids::{Seq, UserId};
use crate::protocol::MAX_PAGE_BYTES;
use crate::store::{Direction, MemberRecord, Note};

use super::receipts::Counted;
use super::{
    FetchMessages, GroupActor, GroupError, GroupView, ListReaders, ListReceipts, MessagesPage,
    Page, ReaderLists, ReceiptCounts, ReceiptQuery, ReceiptsPage, StoredMessage, Summary,
};

impl GroupActor {
    /// Counts the sender's own live messages in `(after, upto]` (the store's per-sender index:
    /// O(own messages in the range)).
    fn own_between(&self, user: &UserId, after: u64, upto: u64) -> u64 {
        let mut n = 0u64;
        let counted = self.deps.store.scan_sent(
            &self.id,
            user,
            Seq(after),
            Seq(upto),
            Direction::Ascending,
            &mut |_| {
                n += 1;
                true
            },
        );
        if let Err(e) = counted {
            log::error!("group {}: counting the messages of {user}: {e}", self.id);
        }
        n
    }

    /// The group as `welcome` (or `joined`) shows it to `user`, as of `head`: the last seq whose
    /// `msg` the session will not get pushed.
    pub(super) fn summary(&self, user: &UserId, member: &MemberRecord, head: u64) -> Summary {
        let from = super::stored::unread_after(member, self.first_seq, head);
        // Deleted messages are not in the sender index: own and deleted never count twice.
        let unread = super::stored::unread(
            head,
            from,
            self.own_between(user, from, head),
            self.deleted_between(from, head),
        );
        Summary {
            group: self.id.clone(),
            name: self.record.name.clone(),
            kind: self.record.kind,
            last_seq: head,
            delivered: member.delivered,
            read: member.read,
            unread,
            receipts: self.settings.receipts,
            marked_unread: self.marked_unread.contains(user),
            role: self.role_of(user),
            first_seq: self.first_seq.min(head + 1),
            last_ts: self.last_ts,
        }
    }

    pub(super) fn receipt(&self, seq: u64, sender: &UserId) -> ReceiptCounts {
        let counted = self.members.get(sender).map(|record| Counted {
            record,
            shares_reads: self.shares_reads(sender),
        });
        self.index.counts(seq, counted)
    }

    /// The sender of a durable message, read from the store.
    pub(super) fn sender_of(&self, seq: u64) -> Result<UserId, GroupError> {
        let record = self
            .deps
            .store
            .message(&self.id, Seq(seq))?
            .ok_or_else(|| GroupError::Storage(format!("message {seq} missing")))?;
        UserId::parse(&record.from)
            .map_err(|_| GroupError::Storage(format!("bad sender of message {seq}")))
    }

    pub(super) fn fetch(&self, msg: FetchMessages) -> Result<MessagesPage, GroupError> {
        if let Some(user) = &msg.user {
            self.check_member(user)?;
        }
        let head = self.queue.durable_seq();
        // Nothing below `first_seq` is stored (pruned): `sync` answers from it, `history` stops
        // there.
        let oldest = self.first_seq.max(1);
        let (first, last, limit, direction) = match msg.page {
            Page::After { after, limit } => (
                after.saturating_add(1).max(oldest),
                head,
                limit,
                Direction::Ascending,
            ),
            Page::Before { before, limit } => {
                let below = before.unwrap_or(u64::MAX).min(head.saturating_add(1));
                (
                    oldest,
                    below.saturating_sub(1),
                    limit,
                    Direction::Descending,
                )
            }
        };
        let mut messages: Vec<StoredMessage> = Vec::new();
        let mut bytes = 0;
        if first <= last && limit > 0 {
            self.deps.store.scan_messages(
                &self.id,
                Seq(first),
                Seq(last),
                direction,
                &mut |seq, m| {
                    bytes += m.body.len();
                    messages.push(StoredMessage {
                        group: self.id.clone(),
                        seq: seq.0,
                        from: m.from,
                        ts: m.ts,
                        body: m.body,
                        client_id: m.client_id,
                        reply_to: None,
                        edited_ts: None,
                        deleted: self.deleted_seqs.contains(&seq.0),
                    });
                    messages.len() < limit && bytes < MAX_PAGE_BYTES
                },
            )?;
        }
        let more = match direction {
            Direction::Ascending => messages.last().is_some_and(|m| m.seq < last),
            Direction::Descending => messages.last().is_some_and(|m| m.seq > first),
        };
        if direction == Direction::Descending {
            messages.reverse();
        }
        self.annotate(&mut messages)?;
        Ok(MessagesPage {
            messages,
            more,
            last_seq: head,
            first_seq: self.first_seq.min(head + 1),
        })
    }

    /// Fills in the replied-to seqs and edit times of a page (ascending by seq).
    fn annotate(&self, messages: &mut [StoredMessage]) -> Result<(), GroupError> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(());
        };
        let (first, last) = (Seq(first.seq), Seq(last.seq));
        let store = &self.deps.store;
        let replies = store.notes(&self.id, Note::ReplyTo, first, last)?;
        let edits = store.notes(&self.id, Note::Edited, first, last)?;
        for m in messages.iter_mut() {
            let find = |notes: &[(Seq, u64)]| {
                notes
                    .binary_search_by_key(&m.seq, |(seq, _)| seq.0)
                    .ok()
                    .and_then(|at| notes.get(at))
                    .map(|(_, value)| *value)
            };
            m.reply_to = find(&replies);
            if !m.deleted {
                m.edited_ts = find(&edits);
            }
        }
        Ok(())
    }

    pub(super) fn receipts(&self, msg: ListReceipts) -> Result<ReceiptsPage, GroupError> {
        self.check_member(&msg.user)?;
        self.check_receipts_shown(false)?;
        match msg.query {
            ReceiptQuery::Mine { after, limit } => {
                let mut seqs = Vec::new();
                self.deps.store.scan_sent(
                    &self.id,
                    &msg.user,
                    Seq(after.max(self.first_seq.saturating_sub(1))),
                    Seq(self.queue.durable_seq()),
                    Direction::Ascending,
                    &mut |seq| {
                        seqs.push(seq.0);
                        seqs.len() <= limit
                    },
                )?;
                let items = seqs
                    .iter()
                    .take(limit)
                    .map(|&seq| self.receipt(seq, &msg.user))
                    .collect();
                Ok(ReceiptsPage {
                    items,
                    more: seqs.len() > limit,
                })
            }
            ReceiptQuery::Seqs(seqs) => {
                let mut items = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    self.check_seq(seq)?;
                    if self.deleted_seqs.contains(&seq) || seq < self.first_seq {
                        continue; // left out: a deleted or pruned message has no receipts
                    }
                    let sender = self.sender_of(seq)?;
                    items.push(self.receipt(seq, &sender));
                }
                Ok(ReceiptsPage { items, more: false })
            }
        }
    }

    /// Who read, received, or has not received a message. Members ask under the group's policy;
    /// the admin (`user: None`) always gets the lists. Everyone's view hides private reads.
    pub(super) fn readers(&self, msg: ListReaders) -> Result<ReaderLists, GroupError> {
        if let Some(user) = &msg.user {
            self.check_member(user)?;
            self.check_receipts_shown(true)?;
        }
        self.check_live_seq(msg.seq)?;
        let sender = self.sender_of(msg.seq)?;
        let mut members: Vec<(&UserId, &MemberRecord)> = self
            .members
            .iter()
            .filter(|(user, m)| **user != sender && m.joined_seq < msg.seq)
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut readers = ReaderLists {
            group: self.id.clone(),
            seq: msg.seq,
            read: Vec::new(),
            delivered: Vec::new(),
            unread: Vec::new(),
        };
        for (user, m) in members {
            let list = if m.read >= msg.seq && self.shares_reads(user) {
                &mut readers.read
            } else if m.delivered >= msg.seq {
                &mut readers.delivered
            } else {
                &mut readers.unread
            };
            list.push(user.clone());
        }
        Ok(readers)
    }

    pub(super) fn describe(&self) -> GroupView {
        let members = self.member_views();
        GroupView {
            name: self.record.name.clone(),
            kind: self.record.kind,
            receipts: self.settings.receipts,
            last_seq: self.queue.durable_seq(),
            first_seq: self.first_seq.min(self.queue.durable_seq() + 1),
            retention: self.retention,
            members,
        }
    }
}
