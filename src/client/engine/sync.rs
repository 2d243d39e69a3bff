//! Delivery into the per-group inboxes: live pushes, the client's own catch-up `sync` in pages,
//! and what to do about a gap.
//!
//! Messages of a group reach the application through its [`Inbox`] (`inbox.rs`), which hands
//! them out once and in order and holds those above a gap. This file decides where an inbox
//! starts and when to page: a group the client already knew is synced from its watermark on every
//! (re)connect, and a push that opens a gap starts a sync at once. A sync runs in rounds of pages;
//! a round that ends with the gap still open starts another only if it made progress, and
//! otherwise the gap is skipped. The rejected option, syncing until the gap is filled, would
//! stall a group forever on a seq the server can no longer serve.
//!
//! One sync per group runs at a time (`syncing`); a second reason to sync while one runs is
//! covered by the round's end, which looks at the gap again.

use super::{Engine, InFlight};
use crate::client::inbox::Inbox;
use crate::protocol::{ClientFrame, GroupSummary, Message};

impl Engine {
    /// The inbox of `group`, created as if every seq up to `after` was delivered if the client
    /// has none yet.
    pub(super) fn inbox_starting_after(&mut self, group: &str, after: u64) -> &mut Inbox {
        self.inboxes
            .entry(group.to_owned())
            .or_insert_with(|| Inbox::starting_after(after))
    }

    /// On (re)connect: counts what the server says was delivered as delivered, hands out what that
    /// releases, and says whether the group needs a catch-up sync.
    pub(super) fn resume_inbox(&mut self, summary: &GroupSummary) -> bool {
        let mut released = Vec::new();
        // Seqs below `first_seq` were pruned: nothing to wait for there.
        let start = summary.delivered.max(summary.first_seq.saturating_sub(1));
        let inbox = self.inbox_starting_after(&summary.group, start);
        inbox.skip_to(start, &mut released);
        let needs_sync = inbox.is_behind(summary.last_seq);
        self.emit_messages(released);
        needs_sync
    }

    /// A live `msg` push.
    pub(super) fn on_push(&mut self, message: Message) {
        let group = message.group.clone();
        // A group first seen through a push was joined while online: what came before the
        // join is not this user's to receive.
        let inbox = self.inbox_starting_after(&group, message.seq.saturating_sub(1));
        let mut released = Vec::new();
        inbox.accept(message, &mut released);
        let has_gap = inbox.has_gap();
        self.emit_messages(released);
        if has_gap {
            self.start_sync(&group);
        }
    }

    /// Removes and returns the group of a sync in flight under `id`; leaves other entries.
    pub(super) fn take_sync(&mut self, id: u64) -> Option<String> {
        match self.in_flight.get(&id) {
            Some(InFlight::Sync { .. }) => match self.in_flight.remove(&id) {
                Some(InFlight::Sync { group }) => Some(group),
                _ => None,
            },
            _ => None,
        }
    }

    /// One page of the client's own sync of `group`: deliver it, then ask for the next one or end
    /// the round.
    pub(super) fn on_sync_page(
        &mut self,
        group: &str,
        messages: Vec<Message>,
        more: bool,
        first_seq: u64,
    ) {
        let last = messages.last().map(|m| m.seq);
        let inbox = self.inbox_starting_after(group, 0);
        let mut released = Vec::new();
        // Seqs below `first_seq` were pruned while the client was away: skip, do not wait.
        inbox.skip_to(first_seq.saturating_sub(1), &mut released);
        for message in messages {
            if message.group == group {
                inbox.accept(message, &mut released);
            }
        }
        self.emit_messages(released);
        match last {
            Some(last) if more => self.write_sync(group, last),
            _ => self.finish_sync(group),
        }
    }

    /// Starts a catch-up sync of `group` from its watermark, unless one is running.
    pub(super) fn start_sync(&mut self, group: &str) {
        if !self.connected || self.syncing.contains_key(group) {
            return;
        }
        let after = self.inbox_starting_after(group, 0).watermark();
        self.syncing.insert(group.to_owned(), after);
        self.write_sync(group, after);
    }

    /// A sync round reached the end. If a gap is still open (messages arrived above it while
    /// the round ran) another round follows, as long as the last one made progress; a round
    /// without progress means the server cannot fill the gap, and the gap is skipped so the
    /// group does not stall.
    fn finish_sync(&mut self, group: &str) {
        let started_at = self.syncing.remove(group).unwrap_or(0);
        let Some(inbox) = self.inboxes.get(group) else {
            return;
        };
        if !inbox.has_gap() {
            return;
        }
        if inbox.watermark() > started_at {
            self.start_sync(group);
        } else {
            self.abandon_sync(group);
        }
    }

    /// Gives up on filling the gap of `group`: releases what is held above it.
    pub(super) fn abandon_sync(&mut self, group: &str) {
        self.syncing.remove(group);
        let mut released = Vec::new();
        if let Some(inbox) = self.inboxes.get_mut(group) {
            if let Some(first) = inbox.first_held() {
                log::warn!(
                    "client: cannot fill the gap of group {group} after seq {}; skipping to {}",
                    inbox.watermark(),
                    first
                );
                inbox.skip_to(first.saturating_sub(1), &mut released);
            }
        }
        self.emit_messages(released);
    }

    fn write_sync(&mut self, group: &str, after: u64) {
        let frame = ClientFrame::Sync {
            id: None,
            group: group.to_owned(),
            after,
            limit: Some(self.sync_page),
        };
        let id = self.push_frame(frame);
        self.in_flight.insert(
            id,
            InFlight::Sync {
                group: group.to_owned(),
            },
        );
    }
}
