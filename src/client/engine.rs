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
//! without a server or a runtime (see `engine/tests.rs`). The cost is one indirection: a
//! handler cannot await its own write, so a write failure is noticed by the worker, which then
//! calls `on_disconnected`; that is also the only place the engine needs to recover anyway.
//!
//! The engine is one struct whose `impl` is split by mechanism, one file each:
//! - this file: the commands, the state, the session's life (connect, disconnect, shutdown,
//!   groups joined and left), and request ids;
//! - `engine/dispatch.rs`: which request a server frame answers (by id), and queries;
//! - `engine/outbox.rs`: sends, kept until `sent` and resent by `client_id`;
//! - `engine/sync.rs`: delivery into the per-group inboxes: pushes, catch-up sync in pages, gaps;
//! - `engine/marks.rs`: the cursor frames that get no reply, batched `ack`s and `read` marks.
//!
//! The rejected option was one struct per mechanism, each owning its frames: the mechanisms share
//! the request table and the outgoing queue, and the reply to one drives another (a sync page
//! fills an inbox, a `welcome` resets the acks), so every call would take half the engine as
//! arguments. Splitting the `impl` keeps one owner of the state, with the code grouped by idea.
//! Only the outbox, whose entries no other mechanism reads, is a struct of its own.
//!
//! Request ids are integers from one counter that never restarts, so a late reply from an old
//! connection can never be mistaken for the answer to a new request.

mod dispatch;
mod marks;
mod outbox;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::failover::loggable;
use super::inbox::{AckBatch, Inbox};
use super::{lock, ClientConfig, ClientError, Event, Sent, Snapshot};
use crate::protocol::{
    page_limit, ClientFrame, GroupSummary, Message, Reminder, RequestId, ServerFrame,
};
use dispatch::QueuedQuery;
use marks::Unanswered;
use outbox::{NewSend, Outbox};

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
        /// Ask the server to remind the non-readers after this many seconds.
        remind_after_secs: Option<u64>,
        reply: SendReply,
    },
    /// Mark a group unread (not repeated after a reconnect: the server keeps the flag).
    MarkUnread {
        group: String,
    },
    Typing {
        group: String,
    },
    /// Send a query frame (its `id` is set by the engine) and answer with the reply frame.
    Query {
        frame: ClientFrame,
        reply: QueryReply,
    },
    /// Move the read mark of a group.
    Read {
        group: String,
        seq: u64,
    },
    /// The application took this message out of the event stream.
    Consumed {
        group: String,
        seq: u64,
    },
    /// Drop the current socket at once (a test hook); handled by the worker.
    DropConnection,
    /// Close the session; handled by the worker.
    Close,
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

/// The client's state machine (see the module documentation).
pub(crate) struct Engine {
    ack_every: usize,
    sync_page: usize,
    events: mpsc::UnboundedSender<Event>,
    snapshot: Arc<Mutex<Snapshot>>,
    connected: bool,
    next_frame_id: u64,
    /// Sends not yet answered, in the order they were made.
    outbox: Outbox,
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
            outbox: Outbox::new(),
            queued_queries: Vec::new(),
            in_flight: HashMap::new(),
            unanswered: BTreeMap::new(),
            inboxes: HashMap::new(),
            syncing: HashMap::new(),
            acks: HashMap::new(),
            read_marks: HashMap::new(),
            outgoing: Vec::new(),
        }
    }

    /// The frames to write now, in order.
    pub(crate) fn take_outgoing(&mut self) -> Vec<ClientFrame> {
        std::mem::take(&mut self.outgoing)
    }

    /// A connection is up and its `welcome` arrived: catch up every group, resend the outbox,
    /// repeat read marks the server lacks, and send the queries that waited.
    /// `url` is the one connected (of several, the node that accepted the session); nothing
    /// else depends on which: every connection resumes from the same cursors.
    pub(crate) fn on_connected(
        &mut self,
        url: &str,
        user: String,
        groups: Vec<GroupSummary>,
        reminders: Vec<Reminder>,
    ) {
        self.connected = true;
        {
            let mut snapshot = lock(&self.snapshot);
            snapshot.user = user.clone();
            snapshot.groups = groups.clone();
            snapshot.connected = true;
            snapshot.url = url.to_owned();
        }
        log::info!(
            "client: connected to {} as {user} with {} groups",
            loggable(url),
            groups.len()
        );
        self.emit(Event::Connected {
            user,
            groups: groups.clone(),
        });
        for reminder in reminders {
            self.emit(Event::Reminder(reminder));
        }

        for summary in &groups {
            let needs_sync = self.resume_inbox(summary);
            self.resume_marks(summary);
            if needs_sync {
                self.start_sync(&summary.group);
            }
        }

        self.write_outbox();
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
        self.outbox.forget_retries();
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
    /// The token was refused for good: tells the application.
    pub(crate) fn on_unauthorized(&mut self, reason: String) {
        self.emit(Event::Unauthorized { reason });
    }

    pub(crate) fn shutdown(&mut self) {
        self.connected = false;
        lock(&self.snapshot).connected = false;
        self.outgoing.clear();
        self.outbox.close();
        for (_, entry) in self.in_flight.drain() {
            if let InFlight::Query { reply, .. } = entry {
                // The caller may be gone; then there is nobody to tell.
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
                remind_after_secs,
                reply,
            } => {
                let send = NewSend {
                    group,
                    client_id,
                    body,
                    remind_after_secs,
                };
                self.on_send(send, reply)
            }
            Command::MarkUnread { group } => {
                if self.connected {
                    self.outgoing
                        .push(ClientFrame::MarkUnread { id: None, group });
                }
            }
            Command::Typing { group } => {
                if self.connected {
                    self.outgoing.push(ClientFrame::Typing { id: None, group });
                }
            }
            Command::Query { frame, reply } => self.on_query(frame, reply),
            Command::Read { group, seq } => self.on_read(group, seq),
            Command::Consumed { group, seq } => self.on_consumed(group, seq),
            Command::DropConnection | Command::Close => {}
        }
    }

    /// The ack timer ticked: write again the sends refused for now, and acknowledge every group
    /// with newly consumed messages.
    pub(crate) fn on_tick(&mut self) {
        if !self.connected {
            return;
        }
        self.write_retries();
        self.write_due_acks();
    }

    /// The user was added to a group while online: receive what follows its join point.
    fn on_joined(&mut self, summary: GroupSummary) {
        let group = summary.group.clone();
        let needs_sync = self
            .inbox_starting_after(&group, summary.delivered)
            .is_behind(summary.last_seq);
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

    /// Gives the frame a fresh id and queues it for writing; returns the id.
    fn push_frame(&mut self, mut frame: ClientFrame) -> u64 {
        let id = self.next_frame_id;
        self.next_frame_id += 1;
        frame.set_id(wire_id(id));
        self.outgoing.push(frame);
        id
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

/// The integer request id of a frame (the client only ever sends integer ids).
///
/// This and [`wire_id`] are the only code in the engine that knows the wire type of a request
/// id: every id read from a frame goes through here, every id written through `wire_id`.
fn frame_id(id: Option<&RequestId>) -> Option<u64> {
    id.and_then(RequestId::as_u64)
}

/// The wire form of the request id `id` (see [`frame_id`]).
fn wire_id(id: u64) -> RequestId {
    RequestId::from(id)
}
