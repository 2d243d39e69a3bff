//! The commit queue: what a group actor has written, what a flush has made durable, and the
//! work (answers, pushes) waiting for the flush that covers it.
//!
//! Every store write bumps a generation; a flush request carries the generation (and head seq)
//! written so far, and its answer makes exactly that much durable. [`Written`] and [`Durable`]
//! are different types, so "assigned" and "visible" seqs cannot be mixed up: only a `Durable`
//! can say what may be shown, and a pending action is released only when a `Durable` covers the
//! `Written` it was queued behind. Release is strictly in queue order, which keeps pushes in seq
//! order. At most one flush request per group is in flight; the commit thread (`commit.rs`)
//! batches the requests of every group into one flush.

use crate::presence::FrameText;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::commit::FlushOutcome;
use crate::ids::UserId;
use crate::presence::{Outbound, SessionHandle};
use crate::store::MemberRecord;

use super::reminders::RemindersSent;
use super::{GroupActor, GroupError, GroupView, Posted, Reply};

/// How long to wait before retrying a failed flush.
const FLUSH_RETRY: Duration = Duration::from_millis(200);

/// How much a group actor has written: store writes made, and the highest seq assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    generation: u64,
    seq: u64,
}

/// How much of it a flush covered: only seqs up to `seq` may be seen by anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Durable {
    generation: u64,
    seq: u64,
}

impl Durable {
    fn covers(&self, written: Written) -> bool {
        written.generation <= self.generation
    }
}

/// Work waiting for the flush that covers the writes made before it was queued.
struct Pending {
    behind: Written,
    action: AfterFlush,
}

/// What to do once the writes before it are durable.
pub(super) enum AfterFlush {
    /// Attach a new member's online sessions and send them `joined`.
    AttachNewMember { user: UserId, joined_seq: u64 },
    /// Answer a send; push the `msg` frame to every session unless it was a duplicate.
    Posted {
        posted: Posted,
        push: Option<FrameText>,
        reply: oneshot::Sender<Result<Posted, GroupError>>,
        /// When this actor took the send (for the send→durable histogram).
        accepted: Instant,
    },
    MemberAdded {
        record: MemberRecord,
        reply: oneshot::Sender<Result<MemberRecord, GroupError>>,
    },
    /// Answer a command that has nothing to say but "done" (remove, set a role, leave).
    Done {
        reply: oneshot::Sender<Result<(), GroupError>>,
    },
    /// Answer a `DeleteGroup`; the actor stops after.
    Deleted {
        reply: oneshot::Sender<Result<(), GroupError>>,
    },
    /// Frames to users' sessions that describe durable state: receipt counts computed on a
    /// tick (sent once the cursors behind them are durable), `group_updated`.
    Notify {
        kind: &'static str,
        frames: Vec<(UserId, FrameText)>,
    },
    /// Answer an `UpdateGroup`.
    GroupUpdated {
        view: GroupView,
        reply: Reply<GroupView>,
    },
    /// Keep, push and answer reminders.
    RemindersSent(Box<RemindersSent>),
    /// Tell sessions already detached from the group (a removed member's, or everyone's when
    /// the group was deleted) with `left`, but `except` (the session that asked: it gets the
    /// answer).
    Farewell {
        sessions: Vec<SessionHandle>,
        text: FrameText,
        except: Option<u64>,
    },
}

impl AfterFlush {
    /// After a flush whose outcome is unknown (the database failed; the writes are kept and
    /// retried): answers a waiting command with `error` now, and returns what still waits for
    /// the writes to become durable (pushes and notifications, never an answer).
    fn answer_failed(self, error: GroupError) -> Option<AfterFlush> {
        match self {
            AfterFlush::Posted {
                posted,
                push: Some(text),
                reply,
                accepted,
            } => {
                let _ = reply.send(Err(error));
                let (reply, _) = oneshot::channel();
                Some(AfterFlush::Posted {
                    posted,
                    push: Some(text),
                    reply,
                    accepted,
                })
            }
            keep @ (AfterFlush::AttachNewMember { .. }
            | AfterFlush::Notify { .. }
            | AfterFlush::Farewell { .. }) => Some(keep),
            answer => {
                answer.fail(error);
                None
            }
        }
    }

    /// Answers a waiting command with `error`; actions nobody waits for are dropped.
    fn fail(self, error: GroupError) {
        match self {
            AfterFlush::Posted { reply, .. } => drop(reply.send(Err(error))),
            AfterFlush::MemberAdded { reply, .. } => drop(reply.send(Err(error))),
            AfterFlush::Done { reply } | AfterFlush::Deleted { reply } => {
                drop(reply.send(Err(error)))
            }
            AfterFlush::GroupUpdated { reply, .. } => drop(reply.send(Err(error))),
            AfterFlush::RemindersSent(sent) => sent.fail(error),
            AfterFlush::AttachNewMember { .. }
            | AfterFlush::Notify { .. }
            | AfterFlush::Farewell { .. } => {}
        }
    }
}

/// One group's writes, their durability, and the work waiting on it.
pub(super) struct CommitQueue {
    written: Written,
    durable: Durable,
    flush_in_flight: bool,
    pending: VecDeque<Pending>,
}

impl CommitQueue {
    /// A queue for a group whose stored head is `last_seq` (durable: it was read back).
    pub(super) fn new(last_seq: u64) -> CommitQueue {
        CommitQueue {
            written: Written {
                generation: 0,
                seq: last_seq,
            },
            durable: Durable {
                generation: 0,
                seq: last_seq,
            },
            flush_in_flight: false,
            pending: VecDeque::new(),
        }
    }

    /// Records a store write that assigns no seq (a member record, cursors).
    pub(super) fn wrote(&mut self) {
        self.written.generation += 1;
    }

    /// Records the write of message `seq`, the new head.
    pub(super) fn wrote_message(&mut self, seq: u64) {
        self.written.generation += 1;
        self.written.seq = seq;
    }

    /// The highest seq assigned (written, maybe not durable yet).
    pub(super) fn last_seq(&self) -> u64 {
        self.written.seq
    }

    /// The highest seq a flush covered: the only seqs anyone may see.
    pub(super) fn durable_seq(&self) -> u64 {
        self.durable.seq
    }

    pub(super) fn n_pending(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waits: every write is durable, no flush is in flight, nothing is queued.
    pub(super) fn is_settled(&self) -> bool {
        !self.flush_in_flight && self.pending.is_empty() && self.durable.covers(self.written)
    }

    fn push(&mut self, action: AfterFlush) {
        self.pending.push_back(Pending {
            behind: self.written,
            action,
        });
    }

    /// The next action whose writes are durable, in queue order.
    fn pop_ready(&mut self) -> Option<AfterFlush> {
        let front = self.pending.front()?;
        if !self.durable.covers(front.behind) {
            return None;
        }
        self.pending.pop_front().map(|p| p.action)
    }

    /// What a flush request should cover, unless one is in flight or nothing is unflushed.
    fn start_flush(&mut self) -> Option<Written> {
        if self.flush_in_flight || self.durable.covers(self.written) {
            return None;
        }
        self.flush_in_flight = true;
        Some(self.written)
    }

    /// A flush covering `written` succeeded.
    fn flushed(&mut self, written: Written) {
        self.flush_in_flight = false;
        self.durable.generation = self.durable.generation.max(written.generation);
        self.durable.seq = self.durable.seq.max(written.seq);
    }
}

/// The committer's answer: the writes of `written` are durable (`ok`), or the flush failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Flushed {
    written: Written,
    outcome: FlushOutcome,
}

impl GroupActor {
    /// Queues work behind the writes made so far and makes sure a flush will cover them.
    pub(super) fn after_flush(&mut self, action: AfterFlush, ctx: &mut Context<Self>) {
        self.queue.push(action);
        self.release();
        self.request_flush(ctx);
    }

    /// Asks the committer for a flush of everything written, unless one is already coming.
    pub(super) fn request_flush(&mut self, ctx: &mut Context<Self>) {
        let Some(written) = self.queue.start_flush() else {
            return;
        };
        let addr = ctx.address();
        self.deps.committer.request(
            Some((self.id.clone(), self.epoch)),
            Box::new(move |outcome| addr.do_send(Flushed { written, outcome })),
        );
    }

    /// Completes the pending work that the durable writes cover, in order. The messages it
    /// makes durable are pushed together (one mailbox message per session, not one per
    /// message), before any other work that comes after them.
    fn release(&mut self) {
        let mut pushes = Vec::new();
        while let Some(action) = self.queue.pop_ready() {
            self.complete(action, &mut pushes);
        }
        self.push_messages(&mut pushes);
    }

    /// Answers `sent` for a durable message.
    fn answer_posted(&self, posted: Posted, reply: Reply<Posted>, accepted: Instant) {
        self.deps
            .metrics
            .send_durable_seconds
            .observe(accepted.elapsed().as_secs_f64());
        let _ = reply.send(Ok(posted));
    }

    /// Pushes the durable messages gathered by [`GroupActor::release`], in seq order.
    fn push_messages(&mut self, pushes: &mut Vec<FrameText>) {
        match pushes.len() {
            0 => {}
            1 => self.fanout.push_to_all("msg", &pushes[0]),
            _ => self
                .fanout
                .push_all_to_all("msg", &Arc::from(std::mem::take(pushes))),
        }
        pushes.clear();
    }

    /// Completes one action. A durable message is answered and its push gathered in `pushes`;
    /// any other action first pushes what was gathered, so it comes after those messages.
    fn complete(&mut self, action: AfterFlush, pushes: &mut Vec<FrameText>) {
        if !matches!(action, AfterFlush::Posted { .. }) {
            self.push_messages(pushes);
        }
        match action {
            AfterFlush::Posted {
                posted,
                push,
                reply,
                accepted,
            } => {
                self.answer_posted(posted, reply, accepted);
                pushes.extend(push);
            }
            AfterFlush::AttachNewMember { user, joined_seq } => {
                self.attach_new_member(&user, joined_seq)
            }
            AfterFlush::MemberAdded { record, reply } => {
                let _ = reply.send(Ok(record));
            }
            AfterFlush::Done { reply } | AfterFlush::Deleted { reply } => {
                let _ = reply.send(Ok(()));
            }
            AfterFlush::Notify { kind, frames } => {
                for (user, text) in frames {
                    self.fanout.send_to_user(&user, kind, &text, None);
                }
            }
            AfterFlush::GroupUpdated { view, reply } => {
                let _ = reply.send(Ok(view));
            }
            AfterFlush::RemindersSent(sent) => self.reminders_durable(*sent),
            AfterFlush::Farewell {
                sessions,
                text,
                except,
            } => {
                for session in sessions.iter().filter(|s| Some(s.id) != except) {
                    if session.offer("left", &text).is_err() {
                        // Behind: it resyncs, and its next welcome no longer lists the group.
                        session.outbox.do_send(Outbound::Evict);
                    }
                }
            }
        }
    }

    /// The committer answered a flush request.
    pub(super) fn on_flushed(&mut self, msg: Flushed, ctx: &mut Context<Self>) {
        if msg.outcome == FlushOutcome::Fenced {
            // Another claim of the group came after this actor's: none of its writes may be
            // answered as durable. Its senders retry (`internal`) and reach the new owner.
            log::error!(
                "group {}: fenced at epoch {}; failing {} waiting answers and stopping",
                self.id,
                self.epoch,
                self.queue.n_pending()
            );
            for Pending { action, .. } in std::mem::take(&mut self.queue.pending) {
                action.fail(GroupError::Unavailable(
                    "another owner took over the group".into(),
                ));
            }
            self.queue.flush_in_flight = false;
            ctx.stop();
            return;
        }
        if msg.outcome == FlushOutcome::Durable {
            self.queue.flushed(msg.written);
            self.release();
            if self.queue.n_pending() > 0 {
                self.request_flush(ctx);
            } else if self.deleted {
                ctx.stop();
            }
            return;
        }
        self.queue.flush_in_flight = false;
        if let Some(reason) = self.deps.store.failure() {
            // The store failed for good (see store::DiskGuard) and the server is stopping: no
            // later flush can cover these writes. Senders get `storage` and resend with the same
            // client_id after the restart; that answers the original seq if the write reached
            // the disk after all. Nothing unanswered is pushed.
            log::error!(
                "group {}: flush failed for good; failing {} waiting answers",
                self.id,
                self.queue.n_pending()
            );
            for Pending { action, .. } in std::mem::take(&mut self.queue.pending) {
                action.fail(GroupError::Storage(format!("storage failed: {reason}")));
            }
        } else {
            // The writes are applied (in memory) and kept by the store for its next flush (a
            // database that did not answer), so the outcome is unknown: the waiting commands
            // are answered `storage` now (a sender resends with the same client_id, which
            // finds the message if it was stored after all), while pushes wait for the flush,
            // retried until it succeeds. Nothing is shown before it is durable.
            log::error!(
                "group {}: flush failed; answering {} waiting commands `storage`; retrying in \
                 {FLUSH_RETRY:?}",
                self.id,
                self.queue.n_pending()
            );
            let error = GroupError::Storage(
                "the write may not be stored; resend it (the same client_id is stored once)".into(),
            );
            let pending = std::mem::take(&mut self.queue.pending);
            for Pending { behind, action } in pending {
                if let Some(action) = action.answer_failed(error.clone()) {
                    self.queue.pending.push_back(Pending { behind, action });
                }
            }
            ctx.run_later(FLUSH_RETRY, |actor, ctx| actor.request_flush(ctx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify() -> AfterFlush {
        AfterFlush::Notify {
            kind: "receipt",
            frames: Vec::new(),
        }
    }

    #[test]
    fn work_waits_for_the_flush_that_covers_the_writes_before_it() {
        let mut queue = CommitQueue::new(5);
        // Nothing written: the work is ready at once, and no flush is needed.
        queue.push(notify());
        assert!(queue.pop_ready().is_some());
        assert_eq!(queue.start_flush(), None);

        queue.wrote_message(6);
        queue.push(notify());
        assert_eq!((queue.last_seq(), queue.durable_seq()), (6, 5));
        assert!(queue.pop_ready().is_none(), "released before its flush");
        let first = queue.start_flush().expect("a flush is needed");
        // One request in flight at a time; writes meanwhile wait for the next one.
        queue.wrote_message(7);
        queue.push(notify());
        assert_eq!(queue.start_flush(), None);

        queue.flushed(first);
        assert_eq!(queue.durable_seq(), 6);
        assert!(queue.pop_ready().is_some());
        assert!(queue.pop_ready().is_none(), "message 7 is not durable yet");
        let second = queue.start_flush().expect("message 7 needs a flush");
        queue.flushed(second);
        assert_eq!(queue.durable_seq(), 7);
        assert!(queue.pop_ready().is_some());
        assert_eq!(queue.n_pending(), 0);
    }

    #[test]
    fn a_late_answer_for_an_older_flush_never_lowers_what_is_durable() {
        let mut queue = CommitQueue::new(0);
        queue.wrote_message(1);
        let old = queue.start_flush().expect("flush");
        queue.flushed(old);
        queue.wrote_message(2);
        let new = queue.start_flush().expect("flush");
        queue.flushed(new);
        queue.flushed(old);
        assert_eq!(queue.durable_seq(), 2);
    }
}
