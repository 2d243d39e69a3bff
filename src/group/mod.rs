//! The group actor: one per group, the only writer of that group's messages and member records.
//!
//! Everything that changes a group (send, ack, read, membership) is serialized here, so sequence
//! numbers are assigned without locks and cursors move under one owner. The order of a send is
//! always **write → flush (group commit) → answer the sender → push to members**.
//!
//! This file holds the actor's state and its command handlers; the mechanisms live beside it:
//! - `commit_queue.rs`: written vs durable, and the answers and pushes waiting for a flush;
//! - `fanout.rs`: the sessions attached to this group and pushing to them (`try_send`, evict);
//! - `tick.rs`: cursor moves → at most one `receipt` frame per online sender per tick;
//! - `load.rs`: rebuilding the state from the store on start;
//! - `resend.rs`: the resend map, each sender's part loaded on their first send after a start;
//! - `stored.rs`: a summary straight from the store, for a group whose actor is not running;
//! - `queries.rs`: summaries, pages of messages, receipts, readers;
//! - `receipts.rs`: the receipt index, counts in O(log members) (pure, property-tested);
//! - `controls.rs`: name and receipt policy, private reads, "marked unread";
//! - `edits.rs`: editing and deleting messages (unread and receipts skip deleted ones), typing;
//! - `membership.rs`: members, roles and who may change them, leaving, deleting the group;
//! - `reminders.rs`: reminders of non-readers, now or scheduled;
//! - `retention.rs`: pruning messages past their retention, in small batches;
//! - `passivation.rs`: stopping after `--group-idle-secs` without a command, nothing lost;
//! - `backup.rs`: copying the group into an online backup's snapshot while the actor holds it;
//! - `audit.rs`: the receipt audit, the index's counts against the definition over the stored cursors;
//! - `messages.rs`: the commands, and the replies (actor types, converted to wire types at the edge).
//!
//! It keeps no address of other actors and no registry: sessions are reached through
//! [`SessionHandle`](crate::presence::SessionHandle)s, and a newly added member's online sessions are found in
//! [`Presence`](crate::presence::Presence), which it gets in its [`GroupDeps`].

mod audit;
mod backup;
mod commit_queue;
mod controls;
mod edits;
mod fanout;
mod load;
mod membership;
mod messages;
mod passivation;
mod queries;
pub mod receipts;
mod reminders;
mod resend;
mod retention;
mod stored;
mod tick;

pub use messages::*;
pub use passivation::{Retire, HANDED_OUT_GRACE};
pub use retention::{prune_batch, Prune, Pruned};
pub use stored::stored_summary;

use crate::presence::FrameText;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use crate::commit::Committer;
use crate::config::Config;
use crate::ids::{GroupId, Seq, UserId};
use crate::metrics::Metrics;
use crate::presence::{Presence, Refused};
use crate::protocol::{Message, Refusal, ServerFrame};
use crate::store::{
    now_ms, GroupRecord, GroupSettingsRecord, MemberRecord, MessageRecord, Note,
    ReceiptPolicyRecord, RetentionRecord, RoleRecord, Store, StoreError,
};

use commit_queue::{AfterFlush, CommitQueue, Flushed};
use fanout::Fanout;
use receipts::ReceiptIndex;
use reminders::Reminders;
use resend::ResendMap;
use tick::Moved;

/// What the actor needs from the rest of the server.
#[derive(Clone)]
pub struct GroupDeps {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub presence: Arc<Presence>,
}

/// One group's actor.
pub struct GroupActor {
    id: GroupId,
    /// The owner epoch this actor claimed at its start; every flush it asks for names it.
    epoch: u64,
    record: GroupRecord,
    settings: GroupSettingsRecord,
    deps: GroupDeps,
    /// Written vs durable, and the work waiting for a flush.
    queue: CommitQueue,
    members: HashMap<UserId, MemberRecord>,
    /// Members who do not share their reads (counted as delivered, never as read).
    private_readers: HashSet<UserId>,
    /// Members who marked the conversation unread.
    marked_unread: HashSet<UserId>,
    index: ReceiptIndex,
    reminders: Reminders,
    /// The oldest stored seq (older messages were pruned); `last_seq + 1` while there are none.
    first_seq: u64,
    /// When the newest message was sent (ms; 0: none yet).
    last_ts: u64,
    /// The group's own retention (`None`: the server's).
    retention: Option<RetentionRecord>,
    /// `(sender, client_id) → (seq, ts)` for the last `dedup_window` messages, each sender's
    /// loaded on their first send (see `resend.rs`).
    resend: ResendMap,
    /// Online sessions of members, attached to this group.
    fanout: Fanout,
    /// Cursor intervals moved since the last receipt tick.
    moved: HashMap<UserId, Moved>,
    /// Members whose cursors moved since they were last written.
    unwritten_cursors: HashSet<UserId>,
    /// Members whose role is not `member`.
    roles: HashMap<UserId, RoleRecord>,
    /// Pushes of membership and role changes written and not yet queued behind their flush
    /// (see `membership.rs`).
    deferred: Vec<AfterFlush>,
    /// Deleted messages (their seqs stay; unread counts and receipts skip them).
    deleted_seqs: BTreeSet<u64>,
    /// The group was deleted: nothing is written any more, and the actor stops once the
    /// deletion is durable.
    deleted: bool,
    /// When the last command arrived (see `passivation.rs`).
    last_used: Instant,
    /// The registry's side of passivation; `None`: never passivates.
    retire: Option<Retire>,
}

impl GroupActor {
    fn check_member(&self, user: &UserId) -> Result<&MemberRecord, GroupError> {
        self.members.get(user).ok_or(GroupError::NotMember)
    }

    /// Fails unless `seq` names a durable message.
    fn check_seq(&self, seq: u64) -> Result<(), GroupError> {
        let durable_seq = self.queue.durable_seq();
        if seq == 0 || seq > durable_seq {
            Err(GroupError::InvalidSeq(format!(
                "seq {seq} is not a message of this group (last_seq is {durable_seq})"
            )))
        } else {
            Ok(())
        }
    }

    fn post(&mut self, msg: PostMessage, ctx: &mut Context<Self>) {
        if self.check_member(&msg.from).is_err() {
            let _ = msg.reply.send(Err(GroupError::NotMember));
            return;
        }
        if msg.remind_after.is_some() && self.settings.receipts == ReceiptPolicyRecord::Off {
            let _ = msg.reply.send(Err(GroupError::ReceiptsOff));
            return;
        }
        if let Some(reply_to) = msg.reply_to {
            if let Err(e) = self.check_live_seq(reply_to) {
                let _ = msg.reply.send(Err(e));
                return;
            }
        }
        if let Err(e) = self.load_resends_of(&msg.from) {
            // Nothing stored: the client resends, and the load is tried again.
            log::error!(
                "group {}: loading the resend entries of {}: {e}",
                self.id,
                msg.from
            );
            let _ = msg.reply.send(Err(e.into()));
            return;
        }
        let key = (msg.from, msg.client_id);
        if let Some((seq, ts)) = self.resend.get(&key, self.queue.last_seq()) {
            log::debug!("group {}: duplicate send {} from {}", self.id, seq, key.0);
            let posted = Posted {
                seq,
                ts,
                duplicate: true,
            };
            // The original may not be durable yet: answer behind the writes made so far.
            self.after_flush(
                AfterFlush::Posted {
                    posted,
                    push: None,
                    reply: msg.reply,
                    accepted: Instant::now(),
                },
                ctx,
            );
            return;
        }
        let accepted = Instant::now();
        let (from, client_id) = key;
        let seq = self.queue.last_seq() + 1;
        let ts = now_ms();
        let record = MessageRecord {
            from: from.to_string(),
            client_id,
            ts,
            body: msg.body,
        };
        // A message with a schedule is two writes: refuse up front while writes are refused, so
        // a `sent` does not come without its schedule.
        let writable = match (msg.remind_after, msg.reply_to) {
            (None, None) => Ok(()),
            _ => self.deps.store.writable(),
        };
        if let Err(e) =
            writable.and_then(|()| self.deps.store.put_message(&self.id, Seq(seq), &record))
        {
            if matches!(e, StoreError::Unwritable(_)) {
                log::debug!("group {}: message from {from} refused: {e}", self.id);
            } else {
                log::error!(
                    "group {}: storing a message from {from} failed: {e}",
                    self.id
                );
            }
            let _ = msg.reply.send(Err(e.into()));
            return;
        }
        self.queue.wrote_message(seq);
        self.last_ts = ts;
        if let Some(reply_to) = msg.reply_to {
            // After the message: a note never outlives the message it is about.
            if let Err(e) = self
                .deps
                .store
                .put_note(&self.id, Note::ReplyTo, Seq(seq), reply_to)
            {
                log::error!("group {}: noting the reply of {seq}: {e}", self.id);
            }
        }
        if let Some(after) = msg.remind_after {
            // Written before the flush that answers `sent`, so `sent` covers the schedule too.
            match self.write_schedule(seq, after) {
                Ok(due_ms) => self.arm_schedule(seq, due_ms, ctx),
                Err(e) => log::error!("group {}: scheduling a reminder of {seq}: {e:?}", self.id),
            }
        }
        self.deps.metrics.message_stored(record.body.len());
        let text: FrameText = FrameText::from(
            ServerFrame::Msg(Message {
                group: self.id.to_string(),
                seq,
                from: record.from,
                ts,
                body: record.body,
                client_id: record.client_id.clone(),
                reply_to: msg.reply_to,
                ..Message::default()
            })
            .to_text(),
        );
        self.resend.insert((from, record.client_id), seq, ts, seq);
        log::trace!("group {}: stored message {seq}", self.id);
        self.after_flush(
            AfterFlush::Posted {
                posted: Posted {
                    seq,
                    ts,
                    duplicate: false,
                },
                push: Some(text),
                reply: msg.reply,
                accepted,
            },
            ctx,
        );
    }

    /// One move: [`GroupActor::advance_all`] of one.
    fn advance(&mut self, msg: AdvanceCursor) -> Result<(), GroupError> {
        let moves = [(msg.cursor, msg.seq)];
        match self.advance_all(&msg.user, &moves, msg.session_id).pop() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// Applies a burst of moves as the one move they add up to; returns the refused ones, by
    /// their place in `moves`.
    fn advance_all(
        &mut self,
        user: &UserId,
        moves: &[(Cursor, u64)],
        session_id: Option<u64>,
    ) -> Vec<(usize, GroupError)> {
        if self.check_member(user).is_err() {
            return (0..moves.len())
                .map(|at| (at, GroupError::NotMember))
                .collect();
        }
        let durable_seq = self.queue.durable_seq();
        let (mut delivered, mut read, mut refused) = (None, None, Vec::new());
        for (at, &(cursor, seq)) in moves.iter().enumerate() {
            if seq > durable_seq {
                refused.push((at, above_last_seq(seq, durable_seq)));
                continue;
            }
            let highest = match cursor {
                Cursor::Delivered => &mut delivered,
                Cursor::Read => &mut read,
            };
            *highest = Some(highest.map_or(seq, |h: u64| h.max(seq)));
        }
        if delivered.is_some() || read.is_some() {
            self.move_cursors(user, delivered, read, session_id);
        }
        refused
    }

    /// Moves a member's cursors forward to `delivered` and `read` (a `read` moves `delivered`
    /// with it; lower values are ignored). The caller checked membership and the seqs.
    fn move_cursors(
        &mut self,
        user: &UserId,
        delivered: Option<u64>,
        read: Option<u64>,
        session_id: Option<u64>,
    ) {
        let Some(&old) = self.members.get(user) else {
            return;
        };
        let mut new = old;
        if let Some(seq) = delivered {
            new.delivered = new.delivered.max(seq);
        }
        if let Some(seq) = read {
            new.read = new.read.max(seq);
            new.delivered = new.delivered.max(new.read);
        }
        // Any `read` clears "marked unread", also one that does not move the mark.
        let cleared = read.is_some() && self.clear_marked_unread(user);
        if new != old {
            self.unwritten_cursors.insert(user.clone());
            let shares = self.shares_reads(user);
            self.index.update(&old, &new, shares);
            self.members.insert(user.clone(), new);
            if new.delivered > old.delivered {
                self.note_moved(user, Cursor::Delivered, old.delivered, new.delivered);
            }
            if new.read > old.read {
                self.note_moved(user, Cursor::Read, old.read, new.read);
                self.drop_read_reminders(user, new.read);
            }
        }
        if new.read > old.read || cleared {
            let marked_unread = cleared.then_some(false);
            self.read_sync(user, new.read, marked_unread, session_id);
        }
    }
}

/// The refusal of a cursor move past the newest durable message.
fn above_last_seq(seq: u64, durable_seq: u64) -> GroupError {
    GroupError::InvalidSeq(format!("seq {seq} is above last_seq {durable_seq}"))
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        // Members already online (this actor replaces one that stopped, or loads while they
        // connect) keep receiving pushes; attaching twice is harmless.
        let members: Vec<UserId> = self.members.keys().cloned().collect();
        for user in members {
            for session in self.deps.presence.sessions_of(&user) {
                self.fanout.attach(session);
            }
        }
        self.deps.metrics.groups_loaded.inc();
        self.arm_schedules(ctx);
        self.arm_idle_check(ctx);
        ctx.run_interval(self.deps.config.receipt_interval, |actor, ctx| {
            actor.tick(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.deps.metrics.groups_loaded.dec();
    }
}

impl Handler<Flushed> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: Flushed, ctx: &mut Context<Self>) {
        self.on_flushed(msg, ctx);
    }
}

impl Handler<AttachSession> for GroupActor {
    type Result = Option<Attached>;

    fn handle(&mut self, msg: AttachSession, _ctx: &mut Context<Self>) -> Option<Attached> {
        let user = msg.session.user.clone();
        let member = *self.members.get(&user)?;
        let summary = self.summary(&user, &member, self.queue.durable_seq());
        self.fanout.attach(msg.session);
        Some(Attached {
            summary,
            reminders: self.reminder_views(&user),
        })
    }
}

impl Handler<DetachSession> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: DetachSession, _ctx: &mut Context<Self>) {
        self.fanout.detach(&msg.user, msg.session_id);
    }
}

impl Handler<PostMessage> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) {
        self.used();
        self.post(msg, ctx);
    }
}

impl Handler<AdvanceCursor> for GroupActor {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, msg: AdvanceCursor, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.advance(msg)
    }
}

impl Handler<AdvanceCursors> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: AdvanceCursors, _ctx: &mut Context<Self>) {
        self.used();
        let refused = self.advance_all(&msg.user, &msg.moves, msg.session_id);
        for (at, e) in refused {
            let id = msg.ids.get(at).cloned().flatten();
            let text = FrameText::from(ServerFrame::refused(id, Refusal::from(e)).to_text());
            if msg.refusals_to.offer("error", &text) == Err(Refused::Full) {
                fanout::evict(&self.deps.metrics, &msg.refusals_to);
                log::warn!(
                    "group {}: session of {} is behind; evicting it",
                    self.id,
                    msg.user
                );
            }
        }
    }
}

impl Handler<FetchMessages> for GroupActor {
    type Result = Result<MessagesPage, GroupError>;

    fn handle(&mut self, msg: FetchMessages, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.fetch(msg)
    }
}

impl Handler<PersistCursors> for GroupActor {
    type Result = ();

    fn handle(&mut self, _msg: PersistCursors, _ctx: &mut Context<Self>) {
        self.persist_cursors();
    }
}

impl Handler<DescribeGroup> for GroupActor {
    type Result = MessageResult<DescribeGroup>;

    fn handle(&mut self, _msg: DescribeGroup, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        MessageResult(self.describe())
    }
}

impl Handler<ListReceipts> for GroupActor {
    type Result = Result<ReceiptsPage, GroupError>;

    fn handle(&mut self, msg: ListReceipts, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.receipts(msg)
    }
}

impl Handler<ListReaders> for GroupActor {
    type Result = Result<ReaderLists, GroupError>;

    fn handle(&mut self, msg: ListReaders, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.readers(msg)
    }
}

impl Handler<UpdateGroup> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateGroup, ctx: &mut Context<Self>) {
        self.used();
        self.update_group(msg, ctx);
    }
}

impl Handler<SetShareReads> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: SetShareReads, _ctx: &mut Context<Self>) {
        self.used();
        self.set_share_reads(&msg.user, msg.share_reads);
    }
}

impl Handler<MarkUnread> for GroupActor {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, msg: MarkUnread, ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.mark_unread(msg, ctx)
    }
}

impl Handler<Remind> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: Remind, ctx: &mut Context<Self>) {
        self.used();
        self.remind(msg, ctx);
    }
}
