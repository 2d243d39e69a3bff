//! The client's state machine: everything the worker decides, with no socket and no clock.
//!
//! The engine owns the session state that outlives one connection (the outbox of unacknowledged
//! sends, queries waiting for a connection, per-group inboxes, ack batches and read marks) and
//! the state of the current connection (frames in flight by request id, running syncs). It is
//! driven by the worker (`worker.rs`) through a handful of calls (`on_connected`, `on_frame`,
//! `on_command`, `on_tick`, `on_disconnected`) and answers by queueing outgoing frames, which
//! the worker drains with `take_outgoing` and writes, and by emitting [`Event`]s.
//!
//! It is shaped this way, rather than as one async loop that reads and writes the socket
//! inline, so that reconnect, resend, dedupe and ack behaviour can be unit-tested frame by frame
//! without a server or a runtime (see the tests at the bottom). The cost is one indirection: a
//! handler cannot await its own write, so a write failure is noticed by the worker, which then
//! calls `on_disconnected`; that is also the only place the engine needs to recover anyway.
//!
//! Request ids are integers from one counter that never restarts, so a late reply from an old
//! connection can never be mistaken for the answer to a new request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::inbox::{AckBatch, Inbox};
use super::{lock, ClientConfig, ClientError, Event, Sent, Snapshot};
use crate::protocol::{
    page_limit, ClientFrame, ErrorCode, GroupSummary, Message, RequestId, ServerFrame,
};

/// How many fire-and-forget frames (`read`, `ack`) are remembered for matching an `error`.
/// They get no reply on success, so the oldest are forgotten beyond this bound.
const MAX_UNANSWERED: usize = 1024;

/// Where the answer to a query goes: the reply frame (an `error` included) or a client error.
pub(crate) type QueryReply = oneshot::Sender<Result<ServerFrame, ClientError>>;

/// Where the answer to a send goes.
pub(crate) type SendReply = oneshot::Sender<Result<Sent, ClientError>>;

/// What a [`super::Client`] handle asks of the worker.
pub(crate) enum Command {
    /// Store a message; answer with the server's `sent`.
    Send {
        group: String,
        /// `None`: the engine generates one.
        client_id: Option<String>,
        body: String,
        reply: SendReply,
    },
    /// Send a query frame (its `id` is set by the engine) and answer with the reply frame.
    Query {
        frame: ClientFrame,
        reply: QueryReply,
    },
    /// Move the read mark of a group.
    Read { group: String, seq: u64 },
    /// The application took this message out of the event stream.
    Consumed { group: String, seq: u64 },
    /// Drop the current socket at once (a test hook); handled by the worker.
    DropConnection,
    /// Close the session; handled by the worker.
    Close,
}

/// A message waiting for its `sent`.
struct OutboxEntry {
    group: String,
    client_id: String,
    body: String,
    /// `None` once the caller is gone or was answered.
    reply: Option<SendReply>,
}

/// A query waiting for a connection.
struct QueuedQuery {
    frame: ClientFrame,
    reply: QueryReply,
}

/// A frame written on the current connection that expects a reply with its id.
enum InFlight {
    Query {
        frame: ClientFrame,
        reply: QueryReply,
    },
    /// A send; the number is its key in the outbox.
    Send { number: u64 },
    /// One page of the client's own catch-up sync of a group.
    Sync { group: String },
}

/// A frame that gets no reply on success, remembered to attribute an `error`.
enum Unanswered {
    Read { group: String, seq: u64 },
    Ack { group: String, seq: u64 },
}

/// The client's state machine (see the module documentation).
pub(crate) struct Engine {
    ack_every: usize,
    sync_page: usize,
    events: mpsc::UnboundedSender<Event>,
    snapshot: Arc<Mutex<Snapshot>>,
    connected: bool,
    next_frame_id: u64,
    /// Random per client, so generated `client_id`s of two clients never collide.
    client_nonce: u64,
    n_generated_client_ids: u64,
    next_send_number: u64,
    /// Sends not yet answered, in the order they were made.
    outbox: BTreeMap<u64, OutboxEntry>,
    /// Queries waiting for a connection, in the order they were made.
    queued_queries: Vec<QueuedQuery>,
    in_flight: HashMap<u64, InFlight>,
    unanswered: BTreeMap<u64, Unanswered>,
    inboxes: HashMap<String, Inbox>,
    /// Groups with a catch-up sync running, with the watermark the round started from.
    syncing: HashMap<String, u64>,
    acks: HashMap<String, AckBatch>,
    /// The highest read mark asked for per group, repeated after a reconnect if needed.
    read_marks: HashMap<String, u64>,
    /// Sends refused for a passing reason (`rate_limited`, `storage`, `busy`), still in the
    /// outbox, written again on the next tick.
    retry_sends: Vec<u64>,
    outgoing: Vec<ClientFrame>,
}

impl Engine {
    /// A disconnected engine; the worker calls [`Engine::on_connected`] with the first `welcome`.
    pub(crate) fn new(
        config: &ClientConfig,
        events: mpsc::UnboundedSender<Event>,
        snapshot: Arc<Mutex<Snapshot>>,
    ) -> Engine {
        Engine {
            ack_every: config.ack_every.max(1),
            sync_page: page_limit(Some(config.sync_page)),
            events,
            snapshot,
            connected: false,
            next_frame_id: 1,
            client_nonce: rand::random(),
            n_generated_client_ids: 0,
            next_send_number: 0,
            outbox: BTreeMap::new(),
            queued_queries: Vec::new(),
            in_flight: HashMap::new(),
            unanswered: BTreeMap::new(),
            inboxes: HashMap::new(),
            syncing: HashMap::new(),
            acks: HashMap::new(),
            read_marks: HashMap::new(),
            retry_sends: Vec::new(),
            outgoing: Vec::new(),
        }
    }

    /// The frames to write now, in order.
    pub(crate) fn take_outgoing(&mut self) -> Vec<ClientFrame> {
        std::mem::take(&mut self.outgoing)
    }

    /// A connection is up and its `welcome` arrived: catch up every group, resend the outbox,
    /// repeat read marks the server lacks, and send the queries that waited.
    pub(crate) fn on_connected(&mut self, user: String, groups: Vec<GroupSummary>) {
        self.connected = true;
        {
            let mut snapshot = lock(&self.snapshot);
            snapshot.user = user.clone();
            snapshot.groups = groups.clone();
            snapshot.connected = true;
        }
        log::info!("client: connected as {user} with {} groups", groups.len());
        self.emit(Event::Connected {
            user,
            groups: groups.clone(),
        });

        for summary in &groups {
            let group = &summary.group;
            let mut released = Vec::new();
            let inbox = self
                .inboxes
                .entry(group.clone())
                .or_insert_with(|| Inbox::starting_after(summary.delivered));
            inbox.skip_to(summary.delivered, &mut released);
            let needs_sync = summary.last_seq > inbox.watermark() || inbox.has_gap();
            self.emit_messages(released);
            self.acks
                .entry(group.clone())
                .or_default()
                .on_server_cursor(summary.delivered);
            if let Some(&mark) = self.read_marks.get(group) {
                if mark > summary.read {
                    self.write_read(group.clone(), mark);
                }
            }
            if needs_sync {
                self.start_sync(group);
            }
        }

        let numbers: Vec<u64> = self.outbox.keys().copied().collect();
        for number in numbers {
            self.write_send(number);
        }
        for query in std::mem::take(&mut self.queued_queries) {
            self.write_query(query.frame, query.reply);
        }
    }

    /// The connection dropped: forget what was in flight on it, keep what must be retried.
    pub(crate) fn on_disconnected(&mut self) {
        self.connected = false;
        lock(&self.snapshot).connected = false;
        self.outgoing.clear();
        self.syncing.clear();
        self.unanswered.clear();
        // The whole outbox is written again on connect.
        self.retry_sends.clear();
        let mut in_flight: Vec<(u64, InFlight)> = self.in_flight.drain().collect();
        in_flight.sort_by_key(|(id, _)| *id);
        let mut retried = Vec::new();
        for (_, entry) in in_flight {
            // Sends stay in the outbox and syncs restart from the watermark on reconnect.
            if let InFlight::Query { frame, reply } = entry {
                retried.push(QueuedQuery { frame, reply });
            }
        }
        retried.append(&mut self.queued_queries);
        self.queued_queries = retried;
        log::info!(
            "client: disconnected; {} sends and {} queries wait for the next connection",
            self.outbox.len(),
            self.queued_queries.len()
        );
        self.emit(Event::Disconnected);
    }

    /// The session ends: every caller still waiting gets [`ClientError::Closed`].
    pub(crate) fn shutdown(&mut self) {
        self.connected = false;
        lock(&self.snapshot).connected = false;
        self.outgoing.clear();
        for (_, entry) in std::mem::take(&mut self.outbox) {
            if let Some(reply) = entry.reply {
                // The caller may be gone; then there is nobody to tell.
                let _ = reply.send(Err(ClientError::Closed));
            }
        }
        for (_, entry) in self.in_flight.drain() {
            if let InFlight::Query { reply, .. } = entry {
                let _ = reply.send(Err(ClientError::Closed));
            }
        }
        for query in self.queued_queries.drain(..) {
            let _ = query.reply.send(Err(ClientError::Closed));
        }
    }

    /// A request from the handle.
    pub(crate) fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                group,
                client_id,
                body,
                reply,
            } => {
                let client_id = client_id.unwrap_or_else(|| self.generate_client_id());
                let number = self.next_send_number;
                self.next_send_number += 1;
                self.outbox.insert(
                    number,
                    OutboxEntry {
                        group,
                        client_id,
                        body,
                        reply: Some(reply),
                    },
                );
                if self.connected {
                    self.write_send(number);
                }
            }
            Command::Query { frame, reply } => {
                if self.connected {
                    self.write_query(frame, reply);
                } else {
                    self.queued_queries.push(QueuedQuery { frame, reply });
                }
            }
            Command::Read { group, seq } => {
                let mark = self.read_marks.entry(group.clone()).or_default();
                *mark = (*mark).max(seq);
                if self.connected {
                    self.write_read(group, seq);
                }
            }
            Command::Consumed { group, seq } => {
                let batch = self.acks.entry(group.clone()).or_default();
                // Taken while disconnected, the ack is lost; the server cursor in the next
                // `welcome` resets the batch so that it is repeated.
                if let Some(ack) = batch.on_consumed(seq, self.ack_every) {
                    if self.connected {
                        self.write_ack(group, ack);
                    }
                }
            }
            Command::DropConnection | Command::Close => {}
        }
    }

    /// The ack timer ticked: acknowledge every group with newly consumed messages.
    pub(crate) fn on_tick(&mut self) {
        if !self.connected {
            return;
        }
        for number in std::mem::take(&mut self.retry_sends) {
            self.write_send(number);
        }
        let mut due: Vec<(String, u64)> = self
            .acks
            .iter_mut()
            .filter_map(|(group, batch)| batch.take().map(|seq| (group.clone(), seq)))
            .collect();
        due.sort();
        for (group, seq) in due {
            self.write_ack(group, seq);
        }
    }

    /// A frame that could not be parsed; `id` is its request id if one could be read.
    pub(crate) fn on_unparsed(&mut self, id: Option<u64>, reason: String) {
        let Some(entry) = id.and_then(|id| self.in_flight.remove(&id)) else {
            // Unknown frame types are to be ignored (PROTOCOL.md §1).
            log::debug!("client: ignoring a frame: {reason}");
            return;
        };
        log::warn!("client: unreadable reply: {reason}");
        match entry {
            InFlight::Query { reply, .. } => {
                let _ = reply.send(Err(ClientError::UnexpectedReply(reason)));
            }
            InFlight::Send { number } => {
                if let Some(entry) = self.outbox.remove(&number) {
                    if let Some(reply) = entry.reply {
                        let _ = reply.send(Err(ClientError::UnexpectedReply(reason)));
                    }
                }
            }
            InFlight::Sync { group } => self.abandon_sync(&group),
        }
    }

    /// One frame from the server.
    pub(crate) fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Welcome { user, .. } => {
                log::warn!("client: ignoring a second welcome (user {user}) on one connection");
            }
            ServerFrame::Sent {
                id,
                group,
                client_id,
                seq,
                ts,
                duplicate,
            } => self.on_sent(
                frame_id(&id),
                Sent {
                    group,
                    client_id,
                    seq,
                    ts,
                    duplicate,
                },
            ),
            ServerFrame::Msg(message) => self.on_push(message),
            ServerFrame::Messages {
                id,
                group,
                messages,
                more,
                last_seq,
            } => {
                let id = frame_id(&id);
                if let Some(sync_group) = id.and_then(|id| self.take_sync(id)) {
                    if sync_group != group {
                        log::warn!("client: sync of {sync_group} answered for {group}");
                    }
                    self.on_sync_page(&sync_group, messages, more);
                } else {
                    self.answer(
                        id,
                        ServerFrame::Messages {
                            id: None,
                            group,
                            messages,
                            more,
                            last_seq,
                        },
                    );
                }
            }
            ServerFrame::Direct { ref id, .. }
            | ServerFrame::Receipts { ref id, .. }
            | ServerFrame::Readers { ref id, .. }
            | ServerFrame::Users { ref id, .. }
            | ServerFrame::Pong { ref id } => self.answer(frame_id(id), frame),
            ServerFrame::Receipt { group, items } => self.emit(Event::Receipt { group, items }),
            ServerFrame::ReadSync { group, seq } => self.emit(Event::ReadSync { group, seq }),
            ServerFrame::Joined { summary } => self.on_joined(summary),
            ServerFrame::Left { group } => self.on_left(group),
            ServerFrame::Error {
                id, code, message, ..
            } => self.on_error(frame_id(&id), code, message),
            ServerFrame::Unknown => log::debug!("client: ignoring a frame of an unknown type"),
        }
    }

    /// The user was added to a group while online: receive what follows its join point.
    fn on_joined(&mut self, summary: GroupSummary) {
        let group = summary.group.clone();
        let inbox = self
            .inboxes
            .entry(group.clone())
            .or_insert_with(|| Inbox::starting_after(summary.delivered));
        let needs_sync = summary.last_seq > inbox.watermark() || inbox.has_gap();
        {
            let mut snapshot = lock(&self.snapshot);
            snapshot.groups.retain(|g| g.group != group);
            snapshot.groups.push(summary.clone());
        }
        self.emit(Event::Joined(summary));
        if needs_sync {
            self.start_sync(&group);
        }
    }

    /// The user was removed from a group while online.
    fn on_left(&mut self, group: String) {
        lock(&self.snapshot).groups.retain(|g| g.group != group);
        self.inboxes.remove(&group);
        self.acks.remove(&group);
        self.emit(Event::Left { group });
    }

    fn on_sent(&mut self, id: Option<u64>, sent: Sent) {
        let mut number = None;
        if let Some(id) = id {
            if let Some(InFlight::Send { number: n }) = self.in_flight.get(&id) {
                number = Some(*n);
                self.in_flight.remove(&id);
            }
        }
        // Without a matching id (a reply from an older connection), match by client_id.
        let number = number.or_else(|| {
            self.outbox
                .iter()
                .find(|(_, entry)| entry.group == sent.group && entry.client_id == sent.client_id)
                .map(|(number, _)| *number)
        });
        let Some(entry) = number.and_then(|number| self.outbox.remove(&number)) else {
            log::debug!(
                "client: sent for group {} client_id {} matches no pending send",
                sent.group,
                sent.client_id
            );
            return;
        };
        log::debug!(
            "client: group {} stored client_id {} as seq {} (duplicate: {})",
            sent.group,
            sent.client_id,
            sent.seq,
            sent.duplicate
        );
        if let Some(reply) = entry.reply {
            // The caller may have stopped waiting; the message is stored either way.
            let _ = reply.send(Ok(sent));
        }
    }

    fn on_push(&mut self, message: Message) {
        let group = message.group.clone();
        // A group first seen through a push was joined while online: what came before the
        // join is not this user's to receive.
        let inbox = self
            .inboxes
            .entry(group.clone())
            .or_insert_with(|| Inbox::starting_after(message.seq.saturating_sub(1)));
        let mut released = Vec::new();
        inbox.accept(message, &mut released);
        let has_gap = inbox.has_gap();
        self.emit_messages(released);
        if has_gap {
            self.start_sync(&group);
        }
    }

    fn on_sync_page(&mut self, group: &str, messages: Vec<Message>, more: bool) {
        let last = messages.last().map(|m| m.seq);
        let inbox = self
            .inboxes
            .entry(group.to_owned())
            .or_insert_with(|| Inbox::starting_after(0));
        let mut released = Vec::new();
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

    fn on_error(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        let Some(id) = id else {
            log::warn!(
                "client: server error without id: {} ({message})",
                code.as_str()
            );
            return;
        };
        if let Some(entry) = self.in_flight.remove(&id) {
            match entry {
                InFlight::Query { reply, .. } => {
                    let _ = reply.send(Ok(ServerFrame::error(None, code, message)));
                }
                InFlight::Send { number } if is_passing(code) => {
                    // Nothing was stored: write it again, same client_id, on the next tick.
                    log::debug!("client: send refused for now ({}); retrying", code.as_str());
                    self.retry_sends.push(number);
                }
                InFlight::Send { number } => {
                    if let Some(entry) = self.outbox.remove(&number) {
                        log::warn!(
                            "client: send to group {} refused: {} ({message})",
                            entry.group,
                            code.as_str()
                        );
                        if let Some(reply) = entry.reply {
                            let _ = reply.send(Err(ClientError::Server { code, message }));
                        }
                    }
                }
                InFlight::Sync { group } => {
                    log::warn!(
                        "client: sync of group {group} refused: {} ({message})",
                        code.as_str()
                    );
                    self.abandon_sync(&group);
                }
            }
            return;
        }
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

    /// Hands a query's reply to its caller.
    fn answer(&mut self, id: Option<u64>, frame: ServerFrame) {
        match id.and_then(|id| self.in_flight.remove(&id)) {
            Some(InFlight::Query { reply, .. }) => {
                let _ = reply.send(Ok(frame));
            }
            Some(other) => {
                // A reply type that does not fit what was asked. A send keeps waiting for its
                // `sent` (or its resend after a reconnect); a sync gives up on its gap.
                log::warn!("client: reply of the wrong type for request {id:?}");
                match other {
                    InFlight::Send { number } => {
                        if let Some(id) = id {
                            self.in_flight.insert(id, InFlight::Send { number });
                        }
                    }
                    InFlight::Sync { group } => self.abandon_sync(&group),
                    InFlight::Query { .. } => {}
                }
            }
            None => log::debug!("client: reply for unknown request {id:?}"),
        }
    }

    /// Removes and returns the group of a sync in flight under `id`; leaves other entries.
    fn take_sync(&mut self, id: u64) -> Option<String> {
        match self.in_flight.get(&id) {
            Some(InFlight::Sync { .. }) => match self.in_flight.remove(&id) {
                Some(InFlight::Sync { group }) => Some(group),
                _ => None,
            },
            _ => None,
        }
    }

    /// Starts a catch-up sync of `group` from its watermark, unless one is running.
    fn start_sync(&mut self, group: &str) {
        if !self.connected || self.syncing.contains_key(group) {
            return;
        }
        let after = self
            .inboxes
            .entry(group.to_owned())
            .or_insert_with(|| Inbox::starting_after(0))
            .watermark();
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
    fn abandon_sync(&mut self, group: &str) {
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

    fn write_send(&mut self, number: u64) {
        let Some(entry) = self.outbox.get(&number) else {
            return;
        };
        let frame = ClientFrame::Send {
            id: None,
            group: entry.group.clone(),
            client_id: entry.client_id.clone(),
            body: entry.body.clone(),
        };
        let id = self.push_frame(frame);
        self.in_flight.insert(id, InFlight::Send { number });
    }

    fn write_query(&mut self, frame: ClientFrame, reply: QueryReply) {
        if reply.is_closed() {
            // The caller stopped waiting.
            return;
        }
        let id = self.push_frame(frame.clone());
        self.in_flight.insert(id, InFlight::Query { frame, reply });
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

    fn write_read(&mut self, group: String, seq: u64) {
        let frame = ClientFrame::Read {
            id: None,
            group: group.clone(),
            seq,
        };
        let id = self.push_frame(frame);
        self.remember_unanswered(id, Unanswered::Read { group, seq });
    }

    fn write_ack(&mut self, group: String, seq: u64) {
        let frame = ClientFrame::Ack {
            id: None,
            group: group.clone(),
            seq,
        };
        let id = self.push_frame(frame);
        self.remember_unanswered(id, Unanswered::Ack { group, seq });
    }

    fn remember_unanswered(&mut self, id: u64, what: Unanswered) {
        self.unanswered.insert(id, what);
        while self.unanswered.len() > MAX_UNANSWERED {
            self.unanswered.pop_first();
        }
    }

    /// Gives the frame a fresh id and queues it for writing; returns the id.
    fn push_frame(&mut self, mut frame: ClientFrame) -> u64 {
        let id = self.next_frame_id;
        self.next_frame_id += 1;
        frame.set_id(Value::from(id));
        self.outgoing.push(frame);
        id
    }

    fn generate_client_id(&mut self) -> String {
        self.n_generated_client_ids += 1;
        format!("{:016x}-{}", self.client_nonce, self.n_generated_client_ids)
    }

    fn emit_messages(&self, messages: Vec<Message>) {
        for message in messages {
            log::trace!(
                "client: message {}#{} from {}: {}",
                message.group,
                message.seq,
                message.from,
                message.body
            );
            self.emit(Event::Message(message));
        }
    }

    fn emit(&self, event: Event) {
        // The receiver lives in the handle; once every handle is gone nobody is listening.
        let _ = self.events.send(event);
    }
}

/// The integer request id of a reply (the client only ever sends integer ids).
/// Errors after which the same send succeeds later: the client retries instead of failing.
fn is_passing(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited | ErrorCode::Storage | ErrorCode::Busy
    )
}

fn frame_id(id: &Option<RequestId>) -> Option<u64> {
    id.as_ref().and_then(RequestId::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::GroupKind;

    struct Harness {
        engine: Engine,
        events: mpsc::UnboundedReceiver<Event>,
    }

    fn harness(ack_every: usize) -> Harness {
        let mut config = ClientConfig::new("ws://unused/ws", "t");
        config.ack_every = ack_every;
        config.sync_page = 2;
        let (tx, rx) = mpsc::unbounded_channel();
        Harness {
            engine: Engine::new(&config, tx, Arc::new(Mutex::new(Snapshot::default()))),
            events: rx,
        }
    }

    impl Harness {
        fn events(&mut self) -> Vec<Event> {
            let mut out = Vec::new();
            while let Ok(event) = self.events.try_recv() {
                out.push(event);
            }
            out
        }

        fn message_seqs(&mut self) -> Vec<u64> {
            self.events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Message(m) => Some(m.seq),
                    _ => None,
                })
                .collect()
        }

        fn connect(&mut self, groups: Vec<GroupSummary>) -> Vec<ClientFrame> {
            self.engine.on_connected("me".into(), groups);
            self.engine.take_outgoing()
        }
    }

    fn summary(group: &str, last_seq: u64, delivered: u64, read: u64) -> GroupSummary {
        GroupSummary {
            group: group.into(),
            name: group.into(),
            kind: GroupKind::Group,
            last_seq,
            delivered,
            read,
            unread: 0,
        }
    }

    fn message(group: &str, seq: u64) -> Message {
        Message {
            group: group.into(),
            seq,
            from: "other".into(),
            ts: 1000 + seq,
            body: format!("body {seq}"),
            client_id: format!("c{seq}"),
        }
    }

    fn id_of(frame: &ClientFrame) -> u64 {
        frame
            .id()
            .and_then(RequestId::as_u64)
            .expect("every frame has an id")
    }

    fn page(id: u64, group: &str, seqs: std::ops::RangeInclusive<u64>, more: bool) -> ServerFrame {
        ServerFrame::Messages {
            id: Some(RequestId::from(id)),
            group: group.into(),
            messages: seqs.map(|s| message(group, s)).collect(),
            more,
            last_seq: 0,
        }
    }

    #[test]
    fn a_send_is_resent_with_the_same_client_id_after_a_reconnect() {
        let mut h = harness(20);
        h.connect(vec![summary("g", 0, 0, 0)]);
        let (reply, mut answer) = oneshot::channel();
        h.engine.on_command(Command::Send {
            group: "g".into(),
            client_id: None,
            body: "hello".into(),
            reply,
        });
        let first = h.engine.take_outgoing();
        let [ClientFrame::Send { client_id, .. }] = first.as_slice() else {
            panic!("expected one send, got {first:?}");
        };
        let client_id = client_id.clone();

        // Two drops in a row: the send survives both.
        h.engine.on_disconnected();
        h.connect(vec![summary("g", 0, 0, 0)]);
        h.engine.on_disconnected();
        let frames = h.connect(vec![summary("g", 1, 0, 0)]);
        let resent: Vec<&ClientFrame> = frames
            .iter()
            .filter(|f| matches!(f, ClientFrame::Send { .. }))
            .collect();
        assert_eq!(resent.len(), 1);
        let ClientFrame::Send {
            client_id: again, ..
        } = resent[0]
        else {
            unreachable!()
        };
        assert_eq!(again, &client_id);
        assert!(answer.try_recv().is_err(), "no answer before sent");

        h.engine.on_frame(ServerFrame::Sent {
            id: Some(RequestId::from(id_of(resent[0]))),
            group: "g".into(),
            client_id: client_id.clone(),
            seq: 1,
            ts: 5,
            duplicate: true,
        });
        let sent = answer.try_recv().expect("answered").expect("stored");
        assert_eq!((sent.seq, sent.duplicate), (1, true));
        // Nothing left to resend.
        h.engine.on_disconnected();
        let frames = h.connect(vec![summary("g", 1, 1, 0)]);
        assert!(!frames.iter().any(|f| matches!(f, ClientFrame::Send { .. })));
    }

    #[test]
    fn sends_made_while_disconnected_go_out_in_order_on_connect() {
        let mut h = harness(20);
        let mut answers = Vec::new();
        for body in ["one", "two", "three"] {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            h.engine.on_command(Command::Send {
                group: "g".into(),
                client_id: None,
                body: body.into(),
                reply,
            });
        }
        assert!(h.engine.take_outgoing().is_empty());
        let frames = h.connect(vec![summary("g", 0, 0, 0)]);
        let bodies: Vec<&str> = frames
            .iter()
            .filter_map(|f| match f {
                ClientFrame::Send { body, .. } => Some(body.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, vec!["one", "two", "three"]);
        // A sent without an id is matched by client_id.
        let ClientFrame::Send { client_id, .. } = &frames[1] else {
            panic!("expected a send")
        };
        h.engine.on_frame(ServerFrame::Sent {
            id: None,
            group: "g".into(),
            client_id: client_id.clone(),
            seq: 2,
            ts: 1,
            duplicate: false,
        });
        assert_eq!(
            answers[1].try_recv().expect("answered").map(|s| s.seq),
            Ok(2)
        );
    }

    #[test]
    fn a_refused_send_fails_and_is_not_resent() {
        let mut h = harness(20);
        h.connect(vec![]);
        let (reply, mut answer) = oneshot::channel();
        h.engine.on_command(Command::Send {
            group: "nope".into(),
            client_id: Some("x".into()),
            body: "b".into(),
            reply,
        });
        let frames = h.engine.take_outgoing();
        h.engine.on_frame(ServerFrame::Error {
            id: Some(RequestId::from(id_of(&frames[0]))),
            code: ErrorCode::NotMember,
            message: "no".into(),
            retry_after_ms: None,
        });
        assert_eq!(
            answer.try_recv().expect("answered"),
            Err(ClientError::Server {
                code: ErrorCode::NotMember,
                message: "no".into()
            })
        );
        h.engine.on_disconnected();
        assert!(h.connect(vec![]).is_empty());
    }

    #[test]
    fn a_send_refused_for_now_is_retried_on_the_next_tick_with_the_same_client_id() {
        let mut h = harness(20);
        h.connect(vec![summary("g", 0, 0, 0)]);
        let (reply, mut answer) = oneshot::channel();
        h.engine.on_command(Command::Send {
            group: "g".into(),
            client_id: Some("c1".into()),
            body: "b".into(),
            reply,
        });
        for code in [ErrorCode::RateLimited, ErrorCode::Storage, ErrorCode::Busy] {
            let frames = h.engine.take_outgoing();
            assert_eq!(frames.len(), 1, "{frames:?}");
            h.engine.on_frame(ServerFrame::Error {
                id: Some(RequestId::from(id_of(&frames[0]))),
                code,
                message: "later".into(),
                retry_after_ms: Some(10),
            });
            assert!(answer.try_recv().is_err(), "the caller still waits");
            assert!(h.engine.take_outgoing().is_empty(), "not before the tick");
            h.engine.on_tick();
            let again = h.engine.take_outgoing();
            let Some(ClientFrame::Send { client_id, .. }) = again.first() else {
                panic!("expected the send again, got {again:?}");
            };
            assert_eq!(client_id, "c1");
            h.engine.outgoing = again;
        }
    }

    #[test]
    fn reconnect_syncs_from_the_higher_watermark_and_holds_pushes_until_the_gap_fills() {
        let mut h = harness(20);
        let frames = h.connect(vec![summary("g", 5, 2, 0)]);
        let [ClientFrame::Sync { after: 2, .. }] = frames.as_slice() else {
            panic!("expected a sync after 2, got {frames:?}");
        };
        let sync_id = id_of(&frames[0]);
        // A push of a newer message arrives before the sync answer: it is held.
        h.engine.on_frame(ServerFrame::Msg(message("g", 6)));
        assert!(h.message_seqs().is_empty());
        h.engine.on_frame(page(sync_id, "g", 3..=4, true));
        assert_eq!(h.message_seqs(), vec![3, 4]);
        let frames = h.engine.take_outgoing();
        let [ClientFrame::Sync { after: 4, .. }] = frames.as_slice() else {
            panic!("expected the next page after 4, got {frames:?}");
        };
        // The last page overlaps the held push; each message still comes once, in order.
        h.engine
            .on_frame(page(id_of(&frames[0]), "g", 5..=6, false));
        assert_eq!(h.message_seqs(), vec![5, 6]);
        h.engine.on_frame(ServerFrame::Msg(message("g", 6)));
        h.engine.on_frame(ServerFrame::Msg(message("g", 7)));
        assert_eq!(h.message_seqs(), vec![7]);
        assert!(h.engine.take_outgoing().is_empty());

        // After a drop the local watermark (7) beats the server's delivered cursor (3).
        h.engine.on_disconnected();
        let frames = h.connect(vec![summary("g", 9, 3, 0)]);
        let [ClientFrame::Sync { after: 7, .. }] = frames.as_slice() else {
            panic!("expected a sync after 7, got {frames:?}");
        };
        h.engine
            .on_frame(page(id_of(&frames[0]), "g", 1..=9, false));
        let seqs = h.message_seqs();
        assert_eq!(seqs, vec![8, 9]);
    }

    #[test]
    fn a_group_joined_while_online_starts_at_its_first_push() {
        let mut h = harness(20);
        h.connect(vec![]);
        h.engine.on_frame(ServerFrame::Msg(message("dm:a:b", 1)));
        h.engine.on_frame(ServerFrame::Msg(message("late", 41)));
        h.engine.on_frame(ServerFrame::Msg(message("late", 42)));
        assert_eq!(h.message_seqs(), vec![1, 41, 42]);
        assert!(h.engine.take_outgoing().is_empty());
    }

    #[test]
    fn a_gap_in_pushes_starts_a_sync_and_an_unfillable_gap_is_skipped() {
        let mut h = harness(20);
        h.connect(vec![summary("g", 1, 1, 0)]);
        h.engine.on_frame(ServerFrame::Msg(message("g", 4)));
        let frames = h.engine.take_outgoing();
        let [ClientFrame::Sync { after: 1, .. }] = frames.as_slice() else {
            panic!("expected a gap sync, got {frames:?}");
        };
        // The server has nothing to fill the gap with.
        h.engine
            .on_frame(page(id_of(&frames[0]), "g", 4..=4, false));
        assert_eq!(h.message_seqs(), vec![4]);
        h.engine.on_frame(ServerFrame::Msg(message("g", 5)));
        assert_eq!(h.message_seqs(), vec![5]);
    }

    #[test]
    fn queries_in_flight_are_retried_on_the_next_connection() {
        let mut h = harness(20);
        h.connect(vec![]);
        let (reply, mut answer) = oneshot::channel();
        h.engine.on_command(Command::Query {
            frame: ClientFrame::Ping { id: None },
            reply,
        });
        let first = id_of(&h.engine.take_outgoing()[0]);
        h.engine.on_disconnected();
        // A late pong for the old id is not mistaken for anything.
        let frames = h.connect(vec![]);
        let second = id_of(&frames[0]);
        assert_ne!(first, second);
        h.engine.on_frame(ServerFrame::Pong {
            id: Some(RequestId::from(second)),
        });
        assert!(matches!(
            answer.try_recv(),
            Ok(Ok(ServerFrame::Pong { .. }))
        ));
    }

    #[test]
    fn shutdown_fails_every_waiting_caller() {
        let mut h = harness(20);
        let (reply, mut send_answer) = oneshot::channel();
        h.engine.on_command(Command::Send {
            group: "g".into(),
            client_id: None,
            body: "b".into(),
            reply,
        });
        let (reply, mut query_answer) = oneshot::channel();
        h.engine.on_command(Command::Query {
            frame: ClientFrame::Ping { id: None },
            reply,
        });
        h.engine.shutdown();
        assert_eq!(send_answer.try_recv(), Ok(Err(ClientError::Closed)));
        assert_eq!(query_answer.try_recv(), Ok(Err(ClientError::Closed)));
    }

    #[test]
    fn acks_follow_consumption_and_repeat_after_a_lost_ack() {
        let mut h = harness(3);
        h.connect(vec![summary("g", 0, 0, 0)]);
        for seq in 1..=4 {
            h.engine.on_command(Command::Consumed {
                group: "g".into(),
                seq,
            });
        }
        let acks = |frames: Vec<ClientFrame>| -> Vec<u64> {
            frames
                .into_iter()
                .filter_map(|f| match f {
                    ClientFrame::Ack { seq, .. } => Some(seq),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(acks(h.engine.take_outgoing()), vec![3]);
        h.engine.on_tick();
        assert_eq!(acks(h.engine.take_outgoing()), vec![4]);
        h.engine.on_tick();
        assert!(h.engine.take_outgoing().is_empty());
        // The ack of 4 was lost with the connection.
        h.engine.on_disconnected();
        h.connect(vec![summary("g", 4, 3, 0)]);
        h.engine.on_tick();
        assert_eq!(acks(h.engine.take_outgoing()), vec![4]);
    }

    #[test]
    fn read_marks_repeat_after_reconnect_and_refusals_surface() {
        let mut h = harness(20);
        h.connect(vec![summary("g", 9, 9, 0)]);
        h.engine.on_command(Command::Read {
            group: "g".into(),
            seq: 5,
        });
        assert_eq!(h.engine.take_outgoing().len(), 1);
        h.engine.on_disconnected();
        let frames = h.connect(vec![summary("g", 9, 9, 2)]);
        let [ClientFrame::Read { seq: 5, .. }] = frames.as_slice() else {
            panic!("expected the read mark again, got {frames:?}");
        };
        h.events();
        h.engine.on_command(Command::Read {
            group: "g".into(),
            seq: 50,
        });
        let frames = h.engine.take_outgoing();
        h.engine.on_frame(ServerFrame::Error {
            id: Some(RequestId::from(id_of(&frames[0]))),
            code: ErrorCode::InvalidSeq,
            message: "too high".into(),
            retry_after_ms: None,
        });
        assert!(matches!(
            h.events().as_slice(),
            [Event::ReadRefused {
                seq: 50,
                code: ErrorCode::InvalidSeq,
                ..
            }]
        ));
        // The refused mark is not repeated.
        h.engine.on_disconnected();
        assert!(h.connect(vec![summary("g", 9, 9, 5)]).is_empty());
    }
}
