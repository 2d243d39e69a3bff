//! The group actor: one per group, the only writer of that group's messages and member records.
//!
//! Everything that changes a group (send, ack, read, membership) is serialized here, so sequence
//! numbers are assigned without locks and cursors move under one owner. The order of a send is
//! always **write → flush (group commit, `commit.rs`) → answer the sender → push to members**: a
//! [`Pending`] queue holds answers and pushes until the flush that covers their write comes back,
//! and is released strictly in order, so pushes leave in seq order.
//!
//! Read receipts are derived from cursors ([`receipts::ReceiptIndex`]). Cursor moves change
//! memory at once and are written to the store once per member per tick (not once per `ack`, which
//! would write a log record for every read of every message); each move is also recorded as one
//! dirty interval per member and cursor, and the timer (`--receipt-interval-ms`) turns those into
//! at most one `receipt` frame per online sender per tick, sent after the flush that makes the
//! cursors behind it durable.
//!
//! The actor's memory is rebuilt from the store when it starts (lazily, on first use): head seq,
//! members, the receipt index, each sender's seqs and the `(sender, client_id) → seq` resend map
//! of the last `--dedup-window` messages. It keeps no address of other actors; sessions are
//! reached through [`SessionHandle`]s with `try_send`, so a slow session never blocks a group: a
//! full session is evicted and resyncs from its cursor.

mod messages;
pub mod receipts;

pub use messages::*;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::commit::Committer;
use crate::config::Config;
use crate::ids::{GroupId, Seq, UserId};
use crate::metrics::Metrics;
use crate::protocol::{
    GroupKind, GroupSummary, Message, Readers, ReceiptItem, ServerFrame, MAX_PAGE, MAX_PAGE_BYTES,
};
use crate::registry::Registry;
use crate::session::{Outbound, SessionHandle};
use crate::store::{
    now_ms, Direction, GroupKindRecord, GroupRecord, MemberRecord, MessageRecord, Store, StoreError,
};

use receipts::ReceiptIndex;

/// How long to wait before retrying a failed flush.
const FLUSH_RETRY: Duration = Duration::from_millis(200);

/// What the actor needs from the rest of the server.
#[derive(Clone)]
pub struct GroupDeps {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
}

/// Work waiting for the flush that covers write number `generation`.
struct Pending {
    generation: u64,
    action: AfterFlush,
}

enum AfterFlush {
    /// Attach a new member's online sessions and send them `joined`.
    AttachNewMember { user: UserId, joined_seq: u64 },
    /// Answer a send; push the `msg` frame to every session unless it was a duplicate.
    Posted {
        posted: Posted,
        push: Option<Arc<str>>,
        reply: oneshot::Sender<Result<Posted, GroupError>>,
        /// When this actor took the send (for the send→durable histogram).
        accepted: Instant,
    },
    MemberAdded {
        record: MemberRecord,
        reply: oneshot::Sender<Result<MemberRecord, GroupError>>,
    },
    MemberRemoved {
        reply: oneshot::Sender<Result<(), GroupError>>,
    },
    /// Frames to users' sessions that describe durable state: receipt counts computed on a
    /// tick (sent once the cursors behind them are durable), `joined` after a membership add.
    Notify {
        kind: &'static str,
        frames: Vec<(UserId, Arc<str>)>,
    },
}

/// The cursor intervals one member moved since the last receipt tick: `(from, to]`.
#[derive(Debug, Default, Clone, Copy)]
struct Moved {
    delivered: Option<(u64, u64)>,
    read: Option<(u64, u64)>,
}

fn widen(interval: &mut Option<(u64, u64)>, from: u64, to: u64) {
    *interval = Some(match *interval {
        None => (from, to),
        Some((lo, hi)) => (lo.min(from), hi.max(to)),
    });
}

/// One group's actor.
pub struct GroupActor {
    id: GroupId,
    record: GroupRecord,
    deps: GroupDeps,
    /// The highest seq assigned (written, maybe not yet durable).
    last_seq: u64,
    /// The highest seq covered by a flush: the only seqs anyone may see.
    durable_seq: u64,
    members: HashMap<UserId, MemberRecord>,
    index: ReceiptIndex,
    /// Each sender's seqs, ascending (for `unread`, `mine` and receipt pushes).
    by_sender: HashMap<UserId, Vec<u64>>,
    /// `(sender, client_id) → (seq, ts)` for the last `dedup_window` messages.
    resend: HashMap<(UserId, String), (u64, u64)>,
    resend_order: VecDeque<(UserId, String)>,
    /// Online sessions of members, by user.
    sessions: HashMap<UserId, Vec<SessionHandle>>,
    /// Store writes made so far, and how many of them a flush covered.
    written: u64,
    durable: u64,
    flush_in_flight: bool,
    pending: VecDeque<Pending>,
    moved: HashMap<UserId, Moved>,
    /// Members whose cursors moved since they were last written.
    unwritten_cursors: HashSet<UserId>,
}

impl GroupActor {
    /// Rebuilds a group's actor state from the store; `None` when the group does not exist.
    pub fn load(id: GroupId, deps: GroupDeps) -> Result<Option<GroupActor>, StoreError> {
        let Some(record) = deps.store.group(&id)? else {
            return Ok(None);
        };
        let mut index = ReceiptIndex::default();
        let mut members = HashMap::new();
        for (user, member) in deps.store.members(&id)? {
            index.insert(&member);
            members.insert(user, member);
        }
        let last_seq = deps.store.last_seq(&id)?.0;
        let window_start =
            last_seq.saturating_sub(u64::try_from(deps.config.dedup_window).unwrap_or(u64::MAX));
        let mut by_sender: HashMap<UserId, Vec<u64>> = HashMap::new();
        let mut resend = HashMap::new();
        let mut resend_order = VecDeque::new();
        let mut corrupt = None;
        deps.store.scan_messages(
            &id,
            Seq(1),
            Seq(last_seq),
            Direction::Ascending,
            &mut |seq, m| {
                let Ok(from) = UserId::parse(&m.from) else {
                    corrupt = Some(seq);
                    return false;
                };
                by_sender.entry(from.clone()).or_default().push(seq.0);
                if seq.0 > window_start {
                    let key = (from, m.client_id);
                    resend.insert(key.clone(), (seq.0, m.ts));
                    resend_order.push_back(key);
                }
                true
            },
        )?;
        if let Some(seq) = corrupt {
            return Err(StoreError::Corrupt(format!(
                "sender of message {seq:?} in group {id}"
            )));
        }
        log::debug!(
            "group {id} loaded: {} members, last seq {last_seq}",
            members.len()
        );
        Ok(Some(GroupActor {
            id,
            record,
            deps,
            last_seq,
            durable_seq: last_seq,
            members,
            index,
            by_sender,
            resend,
            resend_order,
            sessions: HashMap::new(),
            written: 0,
            durable: 0,
            flush_in_flight: false,
            pending: VecDeque::new(),
            moved: HashMap::new(),
            unwritten_cursors: HashSet::new(),
        }))
    }

    fn kind(&self) -> GroupKind {
        match self.record.kind {
            GroupKindRecord::Group => GroupKind::Group,
            GroupKindRecord::Direct => GroupKind::Direct,
        }
    }

    fn check_member(&self, user: &UserId) -> Result<&MemberRecord, GroupError> {
        self.members.get(user).ok_or(GroupError::NotMember)
    }

    /// Fails unless `seq` names a durable message.
    fn check_seq(&self, seq: u64) -> Result<(), GroupError> {
        if seq == 0 || seq > self.durable_seq {
            Err(GroupError::InvalidSeq(format!(
                "seq {seq} is not a message of this group (last_seq is {})",
                self.durable_seq
            )))
        } else {
            Ok(())
        }
    }

    /// Counts the sender's own messages in `(after, upto]`.
    fn own_between(&self, user: &UserId, after: u64, upto: u64) -> u64 {
        let Some(seqs) = self.by_sender.get(user) else {
            return 0;
        };
        let lo = seqs.partition_point(|&s| s <= after);
        let hi = seqs.partition_point(|&s| s <= upto);
        u64::try_from(hi.saturating_sub(lo)).unwrap_or(0)
    }

    /// The group as `welcome` (or `joined`) shows it to `user`, as of `head`: the last seq whose
    /// `msg` the session will not get pushed.
    fn summary(&self, user: &UserId, member: &MemberRecord, head: u64) -> GroupSummary {
        let from = member.read.max(member.joined_seq).min(head);
        let unread = (head - from).saturating_sub(self.own_between(user, from, head));
        GroupSummary {
            group: self.id.to_string(),
            name: self.record.name.clone(),
            kind: self.kind(),
            last_seq: head,
            delivered: member.delivered,
            read: member.read,
            unread,
        }
    }

    fn receipt(&self, seq: u64, sender: &UserId) -> ReceiptItem {
        self.index.counts(seq, self.members.get(sender))
    }

    /// The sender of a durable message, read from the store.
    fn sender_of(&self, seq: u64) -> Result<UserId, GroupError> {
        let record = self
            .deps
            .store
            .message(&self.id, Seq(seq))?
            .ok_or_else(|| GroupError::Storage(format!("message {seq} missing")))?;
        UserId::parse(&record.from)
            .map_err(|_| GroupError::Storage(format!("bad sender of message {seq}")))
    }

    /// Sends a frame to every session of `user`, evicting sessions whose queue is full.
    fn send_to_user(
        &mut self,
        user: &UserId,
        kind: &'static str,
        text: &Arc<str>,
        except: Option<u64>,
    ) {
        let Some(handles) = self.sessions.get_mut(user) else {
            return;
        };
        let (group, metrics) = (&self.id, &self.deps.metrics);
        handles.retain(|handle| {
            if Some(handle.id) == except {
                return true;
            }
            match handle.outbox.try_send(Outbound::Frame {
                kind,
                text: Arc::clone(text),
            }) {
                Ok(()) => true,
                Err(SendError::Full(_)) => {
                    log::warn!(
                        "group {group}: session {} of {} is behind; evicting it",
                        handle.id,
                        handle.user
                    );
                    metrics.outbound_queue_overflows.inc();
                    handle.outbox.do_send(Outbound::Evict);
                    false
                }
                Err(SendError::Closed(_)) => false,
            }
        });
        if handles.is_empty() {
            self.sessions.remove(user);
        }
    }

    fn push_to_all(&mut self, kind: &'static str, text: &Arc<str>) {
        let users: Vec<UserId> = self.sessions.keys().cloned().collect();
        for user in users {
            self.send_to_user(&user, kind, text, None);
        }
    }

    /// Queues work behind the writes made so far and makes sure a flush will cover them.
    fn after_flush(&mut self, action: AfterFlush, ctx: &mut Context<Self>) {
        self.pending.push_back(Pending {
            generation: self.written,
            action,
        });
        self.release();
        self.request_flush(ctx);
    }

    fn request_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush_in_flight || self.written <= self.durable {
            return;
        }
        self.flush_in_flight = true;
        let generation = self.written;
        let seq = self.last_seq;
        let addr = ctx.address();
        self.deps.committer.request(Box::new(move |ok| {
            addr.do_send(Flushed {
                generation,
                seq,
                ok,
            })
        }));
    }

    /// Completes the pending work that the durable writes cover, in order.
    fn release(&mut self) {
        while let Some(front) = self.pending.front() {
            if front.generation > self.durable {
                break;
            }
            let Some(Pending { action, .. }) = self.pending.pop_front() else {
                break;
            };
            self.complete(action);
        }
    }

    fn complete(&mut self, action: AfterFlush) {
        match action {
            AfterFlush::Posted {
                posted,
                push,
                reply,
                accepted,
            } => {
                self.deps
                    .metrics
                    .send_durable_seconds
                    .observe(accepted.elapsed().as_secs_f64());
                let _ = reply.send(Ok(posted));
                if let Some(text) = push {
                    self.push_to_all("msg", &text);
                }
            }
            AfterFlush::AttachNewMember { user, joined_seq } => {
                self.attach_new_member(&user, joined_seq)
            }
            AfterFlush::MemberAdded { record, reply } => {
                let _ = reply.send(Ok(record));
            }
            AfterFlush::MemberRemoved { reply } => {
                let _ = reply.send(Ok(()));
            }
            AfterFlush::Notify { kind, frames } => {
                for (user, text) in frames {
                    self.send_to_user(&user, kind, &text, None);
                }
            }
        }
    }

    /// Records that `user` moved a cursor over `(from, to]`.
    fn note_moved(&mut self, user: &UserId, cursor: Cursor, from: u64, to: u64) {
        let moved = self.moved.entry(user.clone()).or_default();
        match cursor {
            Cursor::Delivered => widen(&mut moved.delivered, from, to),
            Cursor::Read => widen(&mut moved.read, from, to),
        }
    }

    /// Writes the cursors of members whose cursors moved since they were last written.
    fn persist_cursors(&mut self) {
        for user in std::mem::take(&mut self.unwritten_cursors) {
            let Some(record) = self.members.get(&user) else {
                continue;
            };
            match self.deps.store.put_cursors(&self.id, &user, record) {
                Ok(()) => self.written += 1,
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
    fn tick(&mut self, ctx: &mut Context<Self>) {
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
        let mut frames = Vec::new();
        for sender in self.sessions.keys() {
            let Some(seqs) = self.by_sender.get(sender) else {
                continue;
            };
            // The intervals moved by others than the sender, merged.
            let mut intervals: Vec<(u64, u64)> = moved
                .iter()
                .filter(|(mover, _)| *mover != sender)
                .flat_map(|(_, m)| [m.delivered, m.read])
                .flatten()
                .collect();
            if intervals.is_empty() {
                continue;
            }
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
            if items.is_empty() {
                continue;
            }
            // Bound the frame: the newest MAX_PAGE items; older ones can be pulled.
            let skip = items.len().saturating_sub(MAX_PAGE);
            let items: Vec<ReceiptItem> = items[skip..]
                .iter()
                .map(|&seq| self.receipt(seq, sender))
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

    fn post(&mut self, msg: PostMessage, ctx: &mut Context<Self>) {
        if self.check_member(&msg.from).is_err() {
            let _ = msg.reply.send(Err(GroupError::NotMember));
            return;
        }
        let key = (msg.from, msg.client_id);
        if let Some(&(seq, ts)) = self.resend.get(&key) {
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
        let seq = self.last_seq + 1;
        let ts = now_ms();
        let record = MessageRecord {
            from: from.to_string(),
            client_id,
            ts,
            body: msg.body,
        };
        if let Err(e) = self.deps.store.put_message(&self.id, Seq(seq), &record) {
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
        self.written += 1;
        self.last_seq = seq;
        self.deps.metrics.message_stored(record.body.len());
        self.by_sender.entry(from.clone()).or_default().push(seq);
        let text: Arc<str> = Arc::from(
            ServerFrame::Msg(Message {
                group: self.id.to_string(),
                seq,
                from: record.from,
                ts,
                body: record.body,
                client_id: record.client_id.clone(),
            })
            .to_text(),
        );
        let key = (from, record.client_id);
        self.resend.insert(key.clone(), (seq, ts));
        self.resend_order.push_back(key);
        while self.resend_order.len() > self.deps.config.dedup_window.max(1) {
            if let Some(old) = self.resend_order.pop_front() {
                self.resend.remove(&old);
            }
        }
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

    fn advance(&mut self, msg: AdvanceCursor) -> Result<(), GroupError> {
        let old = *self.check_member(&msg.user)?;
        if msg.seq > self.durable_seq {
            return Err(GroupError::InvalidSeq(format!(
                "seq {} is above last_seq {}",
                msg.seq, self.durable_seq
            )));
        }
        let mut new = old;
        match msg.cursor {
            Cursor::Delivered => new.delivered = new.delivered.max(msg.seq),
            Cursor::Read => {
                new.read = new.read.max(msg.seq);
                new.delivered = new.delivered.max(new.read);
            }
        }
        if new == old {
            return Ok(());
        }
        self.unwritten_cursors.insert(msg.user.clone());
        self.index.update(&old, &new);
        self.members.insert(msg.user.clone(), new);
        if new.delivered > old.delivered {
            self.note_moved(&msg.user, Cursor::Delivered, old.delivered, new.delivered);
        }
        if new.read > old.read {
            self.note_moved(&msg.user, Cursor::Read, old.read, new.read);
            let text: Arc<str> = Arc::from(
                ServerFrame::ReadSync {
                    group: self.id.to_string(),
                    seq: new.read,
                }
                .to_text(),
            );
            self.send_to_user(&msg.user, "read_sync", &text, msg.session_id);
        }
        Ok(())
    }

    fn fetch(&self, msg: FetchMessages) -> Result<MessagesPage, GroupError> {
        if let Some(user) = &msg.user {
            self.check_member(user)?;
        }
        let head = self.durable_seq;
        let (first, last, limit, direction) = match msg.page {
            Page::After { after, limit } => {
                (after.saturating_add(1), head, limit, Direction::Ascending)
            }
            Page::Before { before, limit } => {
                let below = before.unwrap_or(u64::MAX).min(head.saturating_add(1));
                (1, below.saturating_sub(1), limit, Direction::Descending)
            }
        };
        let mut messages = Vec::new();
        let mut bytes = 0;
        if first <= last && limit > 0 {
            self.deps.store.scan_messages(
                &self.id,
                Seq(first),
                Seq(last),
                direction,
                &mut |seq, m| {
                    bytes += m.body.len();
                    messages.push(Message {
                        group: self.id.to_string(),
                        seq: seq.0,
                        from: m.from,
                        ts: m.ts,
                        body: m.body,
                        client_id: m.client_id,
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
        Ok(MessagesPage {
            messages,
            more,
            last_seq: head,
        })
    }

    /// Adds a member; returns its record and whether it is new.
    fn add_member(&mut self, user: UserId) -> Result<(MemberRecord, bool), GroupError> {
        if let Some(existing) = self.members.get(&user) {
            return Ok((*existing, false));
        }
        let record = MemberRecord {
            joined_seq: self.last_seq,
            delivered: self.last_seq,
            read: self.last_seq,
        };
        self.deps.store.add_member(&self.id, &user, &record)?;
        self.written += 1;
        self.index.insert(&record);
        self.members.insert(user.clone(), record);
        log::info!("group {}: added member {user}", self.id);
        Ok((record, true))
    }

    /// Attaches the online sessions of a member added by a write that is now durable, and
    /// tells them with `joined`. Done after the flush, not at the add: messages sent before the
    /// member joined are still being released then and must not reach them, and by now
    /// `durable_seq >= joined_seq`, so the summary is consistent. (The member's index entry was
    /// written before this lookup: a session that registers later finds the group itself.)
    fn attach_new_member(&mut self, user: &UserId, joined_seq: u64) {
        let Some(record) = self.members.get(user).copied() else {
            return; // removed again meanwhile
        };
        if record.joined_seq != joined_seq {
            // Removed and added again meanwhile: that later add attaches, after the messages
            // up to its own join point.
            return;
        }
        // Every message after the join point is pushed after this, whatever is durable by now.
        let summary = self.summary(user, &record, record.joined_seq);
        let text: Arc<str> = Arc::from(ServerFrame::Joined { summary }.to_text());
        for session in self.deps.registry.sessions_of(user) {
            let known = self
                .sessions
                .get(user)
                .is_some_and(|handles| handles.iter().any(|h| h.id == session.id));
            if known {
                continue; // attached by its own welcome meanwhile
            }
            let joined = Outbound::Frame {
                kind: "joined",
                text: Arc::clone(&text),
            };
            if session.outbox.try_send(joined).is_ok() {
                self.attach(session);
            }
        }
    }

    fn remove_member(&mut self, user: &UserId) -> Result<(), GroupError> {
        let record = *self.check_member(user)?;
        self.deps.store.remove_member(&self.id, user)?;
        self.written += 1;
        self.index.remove(&record);
        self.members.remove(user);
        self.moved.remove(user);
        self.unwritten_cursors.remove(user);
        // Stop pushing at once, and tell the user's sessions.
        let text: Arc<str> = Arc::from(
            ServerFrame::Left {
                group: self.id.to_string(),
            }
            .to_text(),
        );
        self.send_to_user(user, "left", &text, None);
        self.sessions.remove(user);
        log::info!("group {}: removed member {user}", self.id);
        Ok(())
    }

    fn attach(&mut self, session: SessionHandle) {
        let handles = self.sessions.entry(session.user.clone()).or_default();
        if !handles.iter().any(|h| h.id == session.id) {
            handles.push(session);
        }
    }

    fn receipts(&self, msg: ListReceipts) -> Result<ReceiptsPage, GroupError> {
        self.check_member(&msg.user)?;
        match msg.query {
            ReceiptQuery::Mine { after, limit } => {
                let seqs = self
                    .by_sender
                    .get(&msg.user)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let start = seqs.partition_point(|&s| s <= after);
                let end = seqs.partition_point(|&s| s <= self.durable_seq);
                let page = seqs.get(start..end).unwrap_or_default();
                let items = page
                    .iter()
                    .take(limit)
                    .map(|&seq| self.receipt(seq, &msg.user))
                    .collect();
                Ok(ReceiptsPage {
                    items,
                    more: page.len() > limit,
                })
            }
            ReceiptQuery::Seqs(seqs) => {
                let mut items = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    self.check_seq(seq)?;
                    let sender = self.sender_of(seq)?;
                    items.push(self.receipt(seq, &sender));
                }
                Ok(ReceiptsPage { items, more: false })
            }
        }
    }

    fn readers(&self, msg: ListReaders) -> Result<Readers, GroupError> {
        if let Some(user) = &msg.user {
            self.check_member(user)?;
        }
        self.check_seq(msg.seq)?;
        let sender = self.sender_of(msg.seq)?;
        let mut members: Vec<(&UserId, &MemberRecord)> = self
            .members
            .iter()
            .filter(|(user, m)| **user != sender && m.joined_seq < msg.seq)
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut readers = Readers {
            group: self.id.to_string(),
            seq: msg.seq,
            read: Vec::new(),
            delivered: Vec::new(),
            unread: Vec::new(),
        };
        for (user, m) in members {
            let list = if m.read >= msg.seq {
                &mut readers.read
            } else if m.delivered >= msg.seq {
                &mut readers.delivered
            } else {
                &mut readers.unread
            };
            list.push(user.to_string());
        }
        Ok(readers)
    }
}

/// The committer's answer: writes up to `generation` (seqs up to `seq`) are durable (`ok`).
#[derive(Message)]
#[rtype(result = "()")]
struct Flushed {
    generation: u64,
    seq: u64,
    ok: bool,
}

impl Actor for GroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        // Members already online (this actor replaces one that stopped, or loads while they
        // connect) keep receiving pushes; attaching twice is harmless.
        let members: Vec<UserId> = self.members.keys().cloned().collect();
        for user in members {
            for session in self.deps.registry.sessions_of(&user) {
                self.attach(session);
            }
        }
        self.deps.metrics.groups_loaded.inc();
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
        self.flush_in_flight = false;
        if msg.ok {
            self.durable = self.durable.max(msg.generation);
            self.durable_seq = self.durable_seq.max(msg.seq);
            self.release();
            if !self.pending.is_empty() {
                self.request_flush(ctx);
            }
        } else if let Some(reason) = self.deps.store.failure() {
            // The store failed for good (see store::DiskGuard) and the server is stopping: no
            // later flush can cover these writes. Senders get `storage` and resend with the same
            // client_id after the restart; that answers the original seq if the write reached
            // the disk after all. Nothing unanswered is pushed.
            log::error!(
                "group {}: flush failed for good; failing {} waiting answers",
                self.id,
                self.pending.len()
            );
            for Pending { action, .. } in std::mem::take(&mut self.pending) {
                let failed = GroupError::Storage(format!("storage failed: {reason}"));
                match action {
                    AfterFlush::Posted { reply, .. } => drop(reply.send(Err(failed))),
                    AfterFlush::MemberAdded { reply, .. } => drop(reply.send(Err(failed))),
                    AfterFlush::MemberRemoved { reply } => drop(reply.send(Err(failed))),
                    AfterFlush::AttachNewMember { .. } | AfterFlush::Notify { .. } => {}
                }
            }
        } else {
            // The writes are applied (in memory) and will be visible once a flush succeeds, so
            // they are not failed: their answers and pushes wait, and the flush is retried.
            log::error!(
                "group {}: flush failed; {} answers wait; retrying in {FLUSH_RETRY:?}",
                self.id,
                self.pending.len()
            );
            ctx.run_later(FLUSH_RETRY, |actor, ctx| actor.request_flush(ctx));
        }
    }
}

impl Handler<AttachSession> for GroupActor {
    type Result = Option<GroupSummary>;

    fn handle(&mut self, msg: AttachSession, _ctx: &mut Context<Self>) -> Option<GroupSummary> {
        let member = *self.members.get(&msg.session.user)?;
        let summary = self.summary(&msg.session.user, &member, self.durable_seq);
        self.attach(msg.session);
        Some(summary)
    }
}

impl Handler<DetachSession> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: DetachSession, _ctx: &mut Context<Self>) {
        if let Some(handles) = self.sessions.get_mut(&msg.user) {
            handles.retain(|h| h.id != msg.session_id);
            if handles.is_empty() {
                self.sessions.remove(&msg.user);
            }
        }
    }
}

impl Handler<PostMessage> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: PostMessage, ctx: &mut Context<Self>) {
        self.post(msg, ctx);
    }
}

impl Handler<AdvanceCursor> for GroupActor {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, msg: AdvanceCursor, _ctx: &mut Context<Self>) -> Self::Result {
        self.advance(msg)
    }
}

impl Handler<FetchMessages> for GroupActor {
    type Result = Result<MessagesPage, GroupError>;

    fn handle(&mut self, msg: FetchMessages, _ctx: &mut Context<Self>) -> Self::Result {
        self.fetch(msg)
    }
}

impl Handler<AddMember> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: AddMember, ctx: &mut Context<Self>) {
        match self.add_member(msg.user.clone()) {
            Ok((record, new)) => {
                if new {
                    let (user, joined_seq) = (msg.user, record.joined_seq);
                    self.after_flush(AfterFlush::AttachNewMember { user, joined_seq }, ctx);
                }
                self.after_flush(
                    AfterFlush::MemberAdded {
                        record,
                        reply: msg.reply,
                    },
                    ctx,
                );
            }
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

impl Handler<RemoveMember> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) {
        match self.remove_member(&msg.user) {
            Ok(()) => self.after_flush(AfterFlush::MemberRemoved { reply: msg.reply }, ctx),
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
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
        let mut members: Vec<(UserId, MemberRecord)> =
            self.members.iter().map(|(u, m)| (u.clone(), *m)).collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        MessageResult(GroupView {
            name: self.record.name.clone(),
            kind: self.kind(),
            last_seq: self.durable_seq,
            members,
        })
    }
}

impl Handler<ListReceipts> for GroupActor {
    type Result = Result<ReceiptsPage, GroupError>;

    fn handle(&mut self, msg: ListReceipts, _ctx: &mut Context<Self>) -> Self::Result {
        self.receipts(msg)
    }
}

impl Handler<ListReaders> for GroupActor {
    type Result = Result<Readers, GroupError>;

    fn handle(&mut self, msg: ListReaders, _ctx: &mut Context<Self>) -> Self::Result {
        self.readers(msg)
    }
}
