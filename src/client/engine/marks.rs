//! The cursor frames: batched delivery `ack`s and `read` marks.
//!
//! Both move a per-user cursor on the server and get no reply on success, so they share one
//! shape: written with a fresh request id and remembered under it ([`Unanswered`]) only so that
//! an `error` can be attributed. That memory is bounded ([`MAX_UNANSWERED`]) and forgotten on a
//! drop; the rejected option, remembering every mark until the connection ends, would grow
//! without bound on a long session that only receives.
//!
//! Acks follow consumption: an `AckBatch` (`inbox.rs`) per group decides
//! when (every `ack_every` consumed messages, or on the tick), and on every (re)connect the
//! server's `delivered` cursor replaces what the client believed it had acknowledged, so an ack
//! lost with a connection is repeated. Read marks are asked for by the application; the highest
//! per group is kept and written again on reconnect when `welcome` shows the server has less,
//! unless the server refused it.

use super::Engine;
use crate::client::Event;
use crate::protocol::{ClientFrame, ErrorCode, GroupSummary};

/// How many fire-and-forget frames (`read`, `ack`) are remembered for matching an `error`.
/// They get no reply on success, so the oldest are forgotten beyond this bound.
const MAX_UNANSWERED: usize = 1024;

/// A frame that gets no reply on success, remembered to attribute an `error`.
pub(super) enum Unanswered {
    Read { group: String, seq: u64 },
    Ack { group: String, seq: u64 },
}

impl Unanswered {
    /// The frame that moves this mark (without an id).
    fn frame(&self) -> ClientFrame {
        match self {
            Unanswered::Read { group, seq } => ClientFrame::Read {
                id: None,
                group: group.clone(),
                seq: *seq,
            },
            Unanswered::Ack { group, seq } => ClientFrame::Ack {
                id: None,
                group: group.clone(),
                seq: *seq,
            },
        }
    }
}

impl Engine {
    /// On (re)connect: take the server's delivery cursor as the acknowledged mark, and repeat a
    /// read mark the server lacks.
    pub(super) fn resume_marks(&mut self, summary: &GroupSummary) {
        let group = &summary.group;
        self.acks
            .entry(group.clone())
            .or_default()
            .on_server_cursor(summary.delivered);
        if let Some(&mark) = self.read_marks.get(group) {
            if mark > summary.read {
                self.write_unanswered(Unanswered::Read {
                    group: group.clone(),
                    seq: mark,
                });
            }
        }
    }

    /// The application moved its read mark of `group`.
    pub(super) fn on_read(&mut self, group: String, seq: u64) {
        let mark = self.read_marks.entry(group.clone()).or_default();
        *mark = (*mark).max(seq);
        if self.connected {
            self.write_unanswered(Unanswered::Read { group, seq });
        }
    }

    /// The application took message `seq` of `group` out of the event stream.
    pub(super) fn on_consumed(&mut self, group: String, seq: u64) {
        let batch = self.acks.entry(group.clone()).or_default();
        // Taken while disconnected, the ack is lost; the server cursor in the next
        // `welcome` resets the batch so that it is repeated.
        if let Some(ack) = batch.on_consumed(seq, self.ack_every) {
            if self.connected {
                self.write_unanswered(Unanswered::Ack { group, seq: ack });
            }
        }
    }

    /// The tick: acknowledge every group with newly consumed messages, in group order.
    pub(super) fn write_due_acks(&mut self) {
        let mut due: Vec<(String, u64)> = self
            .acks
            .iter_mut()
            .filter_map(|(group, batch)| batch.take().map(|seq| (group.clone(), seq)))
            .collect();
        due.sort();
        for (group, seq) in due {
            self.write_unanswered(Unanswered::Ack { group, seq });
        }
    }

    /// An `error` for request `id`, which is no request in flight: a refused mark, or unknown.
    pub(super) fn on_mark_refused(&mut self, id: u64, code: ErrorCode, message: String) {
        match self.unanswered.remove(&id) {
            Some(Unanswered::Read { group, seq }) => {
                log::warn!(
                    "client: read of group {group} seq {seq} refused: {}",
                    code.as_str()
                );
                // Do not repeat a refused mark after the next reconnect.
                if self.read_marks.get(&group) == Some(&seq) {
                    self.read_marks.remove(&group);
                }
                self.emit(Event::ReadRefused {
                    group,
                    seq,
                    code,
                    message,
                });
            }
            Some(Unanswered::Ack { group, seq }) => {
                log::warn!(
                    "client: ack of group {group} seq {seq} refused: {} ({message})",
                    code.as_str()
                );
            }
            None => log::warn!(
                "client: error for unknown request {id}: {} ({message})",
                code.as_str()
            ),
        }
    }

    /// Writes the frame of `what` and remembers it under its id, within the bound.
    fn write_unanswered(&mut self, what: Unanswered) {
        let id = self.push_frame(what.frame());
        self.unanswered.insert(id, what);
        while self.unanswered.len() > MAX_UNANSWERED {
            self.unanswered.pop_first();
        }
    }
}
