//! Per-group delivery bookkeeping: which messages the application has been handed, and which
//! delivery mark the client may acknowledge.
//!
//! This module owns two small pure structs, kept free of sockets, channels and clocks so that
//! their invariants can be tested exhaustively (unit tests and property tests below):
//!
//! - [`Inbox`] turns the messages of one group, which arrive from two sources (live `msg` pushes
//!   and `sync` pages) with overlaps and gaps, into a stream the application sees exactly once
//!   and in ascending `seq` order without gaps. It keeps the highest contiguous seq handed out
//!   (the watermark) and holds the messages seen above a gap until the gap is filled.
//!   The rejected option was to hand out-of-order messages to the application at once and only
//!   remember their seqs: that is simpler, but every chat front end would then have to re-sort,
//!   and "the app sees seq 12 before seq 9 after a reconnect" is a bug a user notices. Holding
//!   is safe because the engine starts a `sync` for every gap, and gives up on a gap that a
//!   completed sync could not fill (see [`Inbox::skip_to`]), so a group never stalls.
//! - [`AckBatch`] decides when to send a cumulative `ack`: every `every` consumed messages, or
//!   on the caller's timer tick, and never beyond the highest seq the application has consumed.

use std::collections::BTreeMap;

use crate::protocol::Message;

/// Delivery state of one group: the watermark and the messages held above a gap.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inbox {
    /// Every seq at or below this has been handed out (or was skipped as already delivered).
    watermark: u64,
    /// Messages received above `watermark + 1`, held until the gap below them is filled.
    held: BTreeMap<u64, Message>,
}

impl Inbox {
    /// An inbox that considers every seq up to and including `watermark` as already delivered.
    pub(crate) fn starting_after(watermark: u64) -> Inbox {
        Inbox {
            watermark,
            held: BTreeMap::new(),
        }
    }

    /// The highest seq such that it and every seq below it have been handed out.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Whether messages are held above a gap (so a `sync` from the watermark is needed).
    pub(crate) fn has_gap(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether a `sync` is needed to hand out every seq up to `last_seq`, the group's latest:
    /// some are beyond the watermark, or messages are held above a gap.
    pub(crate) fn is_behind(&self, last_seq: u64) -> bool {
        last_seq > self.watermark || self.has_gap()
    }

    /// The lowest held seq, if any.
    pub(crate) fn first_held(&self) -> Option<u64> {
        self.held.keys().next().copied()
    }

    /// How many messages are held above a gap.
    #[cfg(test)]
    pub(crate) fn n_held(&self) -> usize {
        self.held.len()
    }

    /// Takes one received message. Appends to `out`, in ascending seq order, every message that
    /// may now be handed to the application; a duplicate appends nothing.
    pub(crate) fn accept(&mut self, message: Message, out: &mut Vec<Message>) {
        if message.seq <= self.watermark {
            return;
        }
        if message.seq == self.watermark + 1 {
            self.watermark = message.seq;
            out.push(message);
            self.release(out);
        } else {
            self.held.entry(message.seq).or_insert(message);
        }
    }

    /// Moves the watermark up to `seq` without handing out the messages at or below it (they
    /// count as delivered elsewhere, or as lost beyond repair), then releases what became
    /// contiguous. A `seq` at or below the watermark changes nothing.
    pub(crate) fn skip_to(&mut self, seq: u64, out: &mut Vec<Message>) {
        if seq > self.watermark {
            self.watermark = seq;
        }
        self.release(out);
    }

    /// Drops held duplicates and hands out held messages that follow the watermark directly.
    fn release(&mut self, out: &mut Vec<Message>) {
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= self.watermark {
                entry.remove();
            } else if seq == self.watermark + 1 {
                self.watermark = seq;
                out.push(entry.remove());
            } else {
                break;
            }
        }
    }
}

/// When to acknowledge one group's delivery mark.
#[derive(Debug, Clone, Default)]
pub(crate) struct AckBatch {
    /// The highest seq the application has consumed.
    consumed: u64,
    /// The highest seq acknowledged to the server (or known to be its cursor).
    acked: u64,
    /// Messages consumed since the last ack decision.
    n_since_ack: usize,
}

impl AckBatch {
    /// Records that the application consumed `seq`; returns the seq to acknowledge when this
    /// message completes a batch of `every` messages.
    pub(crate) fn on_consumed(&mut self, seq: u64, every: usize) -> Option<u64> {
        self.consumed = self.consumed.max(seq);
        self.n_since_ack += 1;
        if self.n_since_ack >= every.max(1) {
            self.take()
        } else {
            None
        }
    }

    /// Ends the current batch (the timer ticked): the seq to acknowledge, if anything new was
    /// consumed since the last ack.
    pub(crate) fn take(&mut self) -> Option<u64> {
        self.n_since_ack = 0;
        if self.consumed > self.acked {
            self.acked = self.consumed;
            Some(self.consumed)
        } else {
            None
        }
    }

    /// Records the server's delivery cursor as stated on (re)connect. It replaces what the client
    /// believed it had acknowledged, because an `ack` written just before a connection dropped
    /// may never have arrived; the next [`AckBatch::take`] then repeats it.
    pub(crate) fn on_server_cursor(&mut self, delivered: u64) {
        self.acked = delivered;
    }

    /// The highest seq acknowledged so far.
    #[cfg(test)]
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(seq: u64) -> Message {
        Message {
            group: "g".into(),
            seq,
            from: "a".into(),
            ts: seq,
            body: format!("m{seq}"),
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    fn seqs(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn in_order_messages_pass_through_and_duplicates_are_dropped() {
        let mut inbox = Inbox::starting_after(0);
        let mut out = Vec::new();
        for seq in [1, 2, 2, 1, 3] {
            inbox.accept(message(seq), &mut out);
        }
        assert_eq!(seqs(&out), vec![1, 2, 3]);
        assert_eq!(inbox.watermark(), 3);
        assert!(!inbox.has_gap());
    }

    #[test]
    fn messages_above_a_gap_are_held_until_it_fills() {
        let mut inbox = Inbox::starting_after(4);
        let mut out = Vec::new();
        inbox.accept(message(7), &mut out);
        inbox.accept(message(8), &mut out);
        inbox.accept(message(7), &mut out);
        assert!(out.is_empty());
        assert_eq!(inbox.first_held(), Some(7));
        assert_eq!(inbox.n_held(), 2);
        inbox.accept(message(5), &mut out);
        assert_eq!(seqs(&out), vec![5]);
        inbox.accept(message(6), &mut out);
        assert_eq!(seqs(&out), vec![5, 6, 7, 8]);
        assert!(!inbox.has_gap());
    }

    #[test]
    fn seqs_at_or_below_the_start_are_never_handed_out() {
        let mut inbox = Inbox::starting_after(10);
        let mut out = Vec::new();
        inbox.accept(message(3), &mut out);
        inbox.accept(message(10), &mut out);
        assert!(out.is_empty());
        inbox.accept(message(11), &mut out);
        assert_eq!(seqs(&out), vec![11]);
    }

    #[test]
    fn skip_to_releases_what_became_contiguous_and_drops_what_it_passed() {
        let mut inbox = Inbox::starting_after(0);
        let mut out = Vec::new();
        for seq in [3, 5, 6] {
            inbox.accept(message(seq), &mut out);
        }
        inbox.skip_to(4, &mut out);
        assert_eq!(seqs(&out), vec![5, 6]);
        assert_eq!(inbox.watermark(), 6);
        // Skipping backwards changes nothing.
        inbox.skip_to(2, &mut out);
        assert_eq!(inbox.watermark(), 6);
        assert_eq!(seqs(&out), vec![5, 6]);
    }

    #[test]
    fn acks_are_batched_by_count_and_by_tick() {
        let mut batch = AckBatch::default();
        assert_eq!(batch.on_consumed(1, 3), None);
        assert_eq!(batch.on_consumed(2, 3), None);
        assert_eq!(batch.on_consumed(3, 3), Some(3));
        assert_eq!(batch.on_consumed(4, 3), None);
        assert_eq!(batch.take(), Some(4));
        // A tick with nothing new sends nothing.
        assert_eq!(batch.take(), None);
        assert_eq!(batch.acked(), 4);
    }

    #[test]
    fn the_server_cursor_on_reconnect_makes_a_lost_ack_repeat() {
        let mut batch = AckBatch::default();
        for seq in 1..=5 {
            batch.on_consumed(seq, 100);
        }
        assert_eq!(batch.take(), Some(5));
        // The connection dropped before the ack arrived: the server still says 2.
        batch.on_server_cursor(2);
        assert_eq!(batch.take(), Some(5));
        // Another session of the user acknowledged further: nothing to send.
        batch.on_server_cursor(9);
        assert_eq!(batch.take(), None);
    }

    proptest! {
        /// Whatever the order and repetition of arrivals, once every seq has arrived the
        /// application has seen each exactly once, in ascending order.
        #[test]
        fn every_message_is_handed_out_once_and_in_order(
            start in 0u64..5,
            n in 1u64..60,
            arrivals in proptest::collection::vec(0u64..70, 0..200),
        ) {
            let mut inbox = Inbox::starting_after(start);
            let mut out = Vec::new();
            // Random arrivals (with duplicates and seqs outside the range)...
            for seq in arrivals {
                inbox.accept(message(seq % (start + n + 1)), &mut out);
                let handed = seqs(&out);
                prop_assert!(handed.windows(2).all(|w| w[1] == w[0] + 1));
                prop_assert_eq!(handed.last().copied().unwrap_or(start), inbox.watermark());
            }
            // ...then every seq once, as a sync would deliver them.
            for seq in 1..=start + n {
                inbox.accept(message(seq), &mut out);
            }
            let expected: Vec<u64> = (start + 1..=start + n).collect();
            prop_assert_eq!(seqs(&out), expected);
            prop_assert!(!inbox.has_gap());
        }

        /// Acks only grow, never pass what was consumed, and a batch of `every` consumed
        /// messages always ends in an ack of everything consumed.
        #[test]
        fn acks_grow_and_never_pass_what_was_consumed(
            every in 1usize..6,
            ops in proptest::collection::vec((0u8..3, 1u64..4), 0..200),
        ) {
            let mut batch = AckBatch::default();
            let mut consumed = 0u64;
            let mut last_ack = 0u64;
            let mut n_unacked = 0usize;
            for (op, step) in ops {
                let ack = match op {
                    0 | 1 => {
                        consumed += step;
                        n_unacked += 1;
                        let ack = batch.on_consumed(consumed, every);
                        if n_unacked >= every {
                            prop_assert_eq!(ack, Some(consumed));
                        }
                        ack
                    }
                    _ => batch.take(),
                };
                if let Some(seq) = ack {
                    prop_assert!(seq > last_ack);
                    prop_assert!(seq <= consumed);
                    last_ack = seq;
                    n_unacked = 0;
                }
                if op == 2 {
                    n_unacked = 0;
                    prop_assert_eq!(batch.acked(), consumed);
                }
            }
        }
    }
}
