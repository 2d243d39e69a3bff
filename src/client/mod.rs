//! The Rust client of Rollcall: one WebSocket session that survives reconnects.
//!
//! A [`Client`] is a cheap handle; one background tokio task (the worker, `worker.rs`) owns the
//! socket and the reconnect loop, and the handle talks to it over an unbounded mpsc channel of
//! commands. Replies come back on oneshot channels; pushed frames come back as [`Event`]s.
//! The worker's decisions live in a socket-free state machine (`engine.rs`, its code split by
//! mechanism under `engine/`), and the per-group delivery bookkeeping in two pure structs
//! (`inbox.rs`), so most of the logic is unit-tested without a server.
//!
//! What the client guarantees:
//! - **Sends survive reconnects.** [`Client::send`] gives every message a `client_id` and keeps
//!   it in an ordered outbox until the server answers `sent`; after a reconnect the outbox is
//!   resent, in order, with the same `client_id`s, and the server's dedupe answers with the
//!   original seq. Dropping the `send` future does not withdraw the message. A send refused for
//!   a passing reason (`rate_limited`, `storage`, `busy`: nothing was stored) is written again
//!   on the next ack tick with the same `client_id`; other refusals fail the call.
//! - **Each message once, in order.** Messages of a group reach [`Client::next_event`] exactly
//!   once, in ascending `seq` order without gaps, whether they came from a live `msg` push or a
//!   `sync` after a reconnect. On every (re)connect the client syncs each group of `welcome`
//!   from the higher of its own watermark and the server's `delivered` cursor.
//! - **Acks follow consumption.** The cumulative `ack` covers only messages the application has
//!   taken out of [`Client::next_event`]; it is sent every [`ClientConfig::ack_every`] messages
//!   or every [`ClientConfig::ack_interval`], whichever comes first.
//! - **Queries are retried, not failed, across reconnects.** Every query of the protocol is
//!   idempotent (`direct` returns the same group for the same pair), so a query whose connection
//!   dropped is sent again on the next connection instead of failing with a "disconnected"
//!   error. The rejected option, failing it, would make every caller write the retry loop
//!   itself. A caller that wants a deadline wraps the call in `tokio::time::timeout`.
//! - **Read marks survive reconnects.** The client remembers the highest `read` it was asked
//!   for per group and repeats it on reconnect when `welcome` shows the server has less.
//! - **Several servers.** Given [`ClientConfig::fallback_urls`] besides its `url`, the client
//!   goes round the list (`failover.rs`) until a node accepts it: past refused or failed
//!   attempts (a standby's `503`, a dead node), and on to the next URL after a drop or a close
//!   with 1012. A connection to any URL resumes like any reconnect; [`Client::url`] says
//!   which one is up.
//!
//! Beside the client, [`admin`] makes one admin API call over plain HTTP (for `rollcall backup`).
//!
//! Events are delivered through an unbounded channel, so the worker never blocks on a slow
//! application (a bounded one could deadlock a caller that awaits a reply without draining
//! events); an application that never drains events grows its memory instead.

pub mod admin;
mod engine;
mod failover;
mod inbox;
mod worker;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::protocol::{ClientFrame, ServerFrame};
pub use crate::protocol::{
    ErrorCode, GroupSummary, Message, Readers, ReceiptItem, ReceiptPolicy, Reminder,
};
use engine::{Command, Engine};

/// Connection settings and timings of a [`Client`].
#[derive(Clone)]
pub struct ClientConfig {
    /// The WebSocket URL, for example `ws://127.0.0.1:7600/ws`.
    pub url: String,
    /// The WebSocket URLs of further nodes of the same service (a standby that may take over),
    /// tried in turn after `url` when a node refuses the upgrade (a standby answers `503`), cannot
    /// be reached, or closes with 1012; empty by default. See [`ClientConfig::with_fallback_urls`].
    pub fallback_urls: Vec<String>,
    /// The user token, sent as `Authorization: Bearer <token>`.
    pub token: String,
    /// Send a cumulative `ack` after this many consumed messages of a group (at least 1).
    pub ack_every: usize,
    /// Send pending acks at least this often.
    pub ack_interval: Duration,
    /// Wait this long after a dropped connection or a failed attempt before connecting again.
    pub reconnect_delay: Duration,
    /// Page size of the `sync` requests the client makes on (re)connect.
    pub sync_page: usize,
    /// How long one connection attempt may take, up to and including the `welcome` frame.
    pub connect_timeout: Duration,
    /// Drop the connection (and reconnect) when nothing at all, not even a WebSocket ping,
    /// arrived for this long. After a third of it in silence the client sends a `ping` frame,
    /// so this works whatever the server's heartbeat period (10 s by default) is.
    pub idle_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with the default timings: acks every 20 messages or 200 ms, reconnect
    /// after 200 ms, sync pages of 100, 10 s to connect, 45 s of silence before reconnecting.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            fallback_urls: Vec::new(),
            token: token.into(),
            ack_every: 20,
            ack_interval: Duration::from_millis(200),
            reconnect_delay: Duration::from_millis(200),
            sync_page: crate::protocol::DEFAULT_PAGE,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(45),
        }
    }

    /// The same configuration with these [`ClientConfig::fallback_urls`] (replacing any given
    /// before): `ClientConfig::new(a, token).with_fallback_urls([b, c])` tries `a`, `b`, `c`.
    pub fn with_fallback_urls<I, U>(mut self, urls: I) -> ClientConfig
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.fallback_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Every URL the client may connect to, in the order it tries them: `url`, then
    /// `fallback_urls`.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.fallback_urls.iter().map(String::as_str))
    }
}

impl fmt::Debug for ClientConfig {
    /// Never prints the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("fallback_urls", &self.fallback_urls)
            .field("token", &"<redacted>")
            .field("ack_every", &self.ack_every)
            .field("ack_interval", &self.ack_interval)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("sync_page", &self.sync_page)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// The server refused the request with an `error` frame.
    Server { code: ErrorCode, message: String },
    /// The first connection could not be made (bad URL, refused, timed out, closed early); with
    /// several URLs, why the last one failed (each failure is logged at `warn`).
    Connect(String),
    /// The WebSocket upgrade was answered with this HTTP status (401: bad or expired token;
    /// 503: a standby node, which takes no sessions).
    Rejected { status: u16 },
    /// The client was closed (or its worker stopped) before the answer arrived.
    Closed,
    /// The server answered with a frame that does not fit the request.
    UnexpectedReply(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Server { code, message } => {
                write!(f, "server refused: {} ({message})", code.as_str())
            }
            ClientError::Connect(reason) => write!(f, "cannot connect: {reason}"),
            ClientError::Rejected { status } => {
                write!(f, "WebSocket upgrade refused: HTTP {status}")
            }
            ClientError::Closed => write!(f, "the client is closed"),
            ClientError::UnexpectedReply(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Something that happened on the session, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connection was (re)established; `groups` is the `welcome` frame's list.
    Connected {
        user: String,
        groups: Vec<GroupSummary>,
    },
    /// A group message, exactly once and in seq order per group (own messages included).
    Message(Message),
    /// Receipt counts of the user's own messages, pushed on the server's receipt timer.
    Receipt {
        group: String,
        items: Vec<ReceiptItem>,
    },
    /// Another session of the same user moved its read mark.
    ReadSync { group: String, seq: u64 },
    /// The user was added to a group while connected.
    Joined(GroupSummary),
    /// The user was removed from a group while connected.
    Left { group: String },
    /// The server refused a [`Client::read`].
    ReadRefused {
        group: String,
        seq: u64,
        code: ErrorCode,
        message: String,
    },
    /// Someone reminds the user of a message they have not read (also sent once per pending
    /// reminder after each `welcome`).
    Reminder(Reminder),
    /// A scheduled reminder of one of the user's messages fired.
    Reminded {
        group: String,
        seq: u64,
        count: u64,
        /// Who was reminded; `None` under the `counts` policy.
        users: Option<Vec<String>>,
    },
    /// A group's name or receipt policy changed.
    GroupUpdated {
        group: String,
        name: String,
        receipts: ReceiptPolicy,
    },
    /// The user marked a group unread, or cleared the mark, in another session.
    MarkedUnread { group: String, marked_unread: bool },
    /// A message's body was edited (by its sender).
    MessageEdited {
        group: String,
        seq: u64,
        body: String,
        edited_ts: u64,
    },
    /// A message was deleted.
    MessageDeleted { group: String, seq: u64 },
    /// Another member is typing in a group (show it for about 5 s).
    Typing { group: String, user: String },
    /// A user sharing a group came online or went offline.
    Presence { user: String, online: bool },
    /// The connection dropped; the client is reconnecting.
    Disconnected,
    /// The server refused the token for good (closed with 4001, or a reconnect answered 401:
    /// revoked, password changed, or deactivated). The client stops; sign in again.
    Unauthorized { reason: String },
}

/// The answer to [`Client::remind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminded {
    pub group: String,
    pub seq: u64,
    /// How many recipients were reminded.
    pub count: u64,
    /// Who, sorted; `None` under the `counts` policy.
    pub users: Option<Vec<String>>,
}

/// The server's answer to a [`Client::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub group: String,
    pub client_id: String,
    pub seq: u64,
    pub ts: u64,
    /// The server had already stored this `client_id` (a resend); `seq` and `ts` are the original.
    pub duplicate: bool,
}

/// One page of messages, the answer to [`Client::sync`] and [`Client::history`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub messages: Vec<Message>,
    /// Whether further messages exist beyond this page in the direction of paging.
    pub more: bool,
    /// The group's latest durable seq.
    pub last_seq: u64,
}

/// What the worker publishes for cheap synchronous reads by the handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) user: String,
    pub(crate) groups: Vec<GroupSummary>,
    pub(crate) connected: bool,
    /// The URL of the current (or last) connection.
    pub(crate) url: String,
}

/// Locks the snapshot; a poisoned lock still holds consistent plain data, so it is used as is.
pub(crate) fn lock(snapshot: &Mutex<Snapshot>) -> MutexGuard<'_, Snapshot> {
    snapshot
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A handle to one Rollcall session. Clones share the session; the session ends when
/// [`Client::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    events: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>>,
    snapshot: Arc<Mutex<Snapshot>>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Client {
    /// Connects, waits for `welcome`, and starts the background worker (on the current tokio
    /// runtime). Only this first attempt can fail; later connections are retried forever.
    /// With [`ClientConfig::fallback_urls`], the first attempt tries each URL once, in order,
    /// and fails only if none accepts (at once on a `401`: the token is the problem).
    /// The first event is [`Event::Connected`] with the `welcome` data.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let connection = worker::connect_first(&config).await?;
        let snapshot = Arc::new(Mutex::new(Snapshot {
            user: connection.user.clone(),
            groups: connection.groups.clone(),
            connected: true,
            url: connection.url.clone(),
        }));
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let engine = Engine::new(&config, event_tx, Arc::clone(&snapshot));
        let handle = tokio::spawn(worker::run(config, engine, command_rx, connection));
        Ok(Client {
            commands: command_tx,
            events: Arc::new(tokio::sync::Mutex::new(event_rx)),
            snapshot,
            worker: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// The authenticated user id, from the last `welcome`.
    pub fn user(&self) -> String {
        lock(&self.snapshot).user.clone()
    }

    /// The user's groups: those of the last `welcome`, plus those joined since (`joined`),
    /// minus those left since (`left`).
    pub fn groups(&self) -> Vec<GroupSummary> {
        lock(&self.snapshot).groups.clone()
    }

    /// Whether a connection is currently up.
    pub fn is_connected(&self) -> bool {
        lock(&self.snapshot).connected
    }

    /// The URL of the current connection (one of [`ClientConfig::urls`]), or of the last one
    /// while reconnecting.
    pub fn url(&self) -> String {
        lock(&self.snapshot).url.clone()
    }

    /// The next event; `None` once the client is closed and every event was taken.
    /// Taking an [`Event::Message`] counts it as delivered for the batched `ack`.
    pub async fn next_event(&self) -> Option<Event> {
        let event = self.events.lock().await.recv().await?;
        if let Event::Message(message) = &event {
            // A stopped worker has nothing left to acknowledge; ignoring the error is correct.
            let _ = self.commands.send(Command::Consumed {
                group: message.group.clone(),
                seq: message.seq,
            });
        }
        Some(event)
    }

    /// Sends a message with a generated `client_id` and waits until the server stored it.
    /// The send is retried across any number of reconnects until `sent` arrives; it fails only
    /// with the server's `error` (for example `not_member`, `too_large`) or when the client closes.
    pub async fn send(&self, group: &str, body: &str) -> Result<Sent, ClientError> {
        self.send_command(group, None, body, None).await
    }

    /// Like [`Client::send`], and the server reminds the recipients who have not read the
    /// message `remind_after_secs` (1 to 604,800) seconds after it stored it.
    pub async fn send_reminding(
        &self,
        group: &str,
        body: &str,
        remind_after_secs: u64,
    ) -> Result<Sent, ClientError> {
        self.send_command(group, None, body, Some(remind_after_secs))
            .await
    }

    /// Like [`Client::send`], with a caller-chosen `client_id` (1 to 128 characters): sending the
    /// same `client_id` again returns the original seq with `duplicate: true`.
    pub async fn send_with_client_id(
        &self,
        group: &str,
        client_id: &str,
        body: &str,
    ) -> Result<Sent, ClientError> {
        self.send_command(group, Some(client_id.to_owned()), body, None)
            .await
    }

    async fn send_command(
        &self,
        group: &str,
        client_id: Option<String>,
        body: &str,
        remind_after_secs: Option<u64>,
    ) -> Result<Sent, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Send {
                group: group.to_owned(),
                client_id,
                body: body.to_owned(),
                remind_after_secs,
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Messages of `group` with seq above `after`, ascending, at most `limit` (the server caps
    /// it at 1,000). This is a plain query: it does not feed [`Client::next_event`].
    pub async fn sync(&self, group: &str, after: u64, limit: usize) -> Result<Page, ClientError> {
        let frame = ClientFrame::Sync {
            id: None,
            group: group.to_owned(),
            after,
            limit: Some(limit),
        };
        page(self.request(frame).await?)
    }

    /// The `limit` messages of `group` just below `before` (default: the newest), ascending.
    pub async fn history(
        &self,
        group: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page, ClientError> {
        let frame = ClientFrame::History {
            id: None,
            group: group.to_owned(),
            before,
            limit: Some(limit),
        };
        page(self.request(frame).await?)
    }

    /// Moves the user's read mark of `group` to `seq` (which also acknowledges delivery).
    /// Fire-and-forget: it returns once queued; a refusal arrives as [`Event::ReadRefused`].
    /// While disconnected the mark is kept and sent on the next connection.
    pub fn read(&self, group: &str, seq: u64) -> Result<(), ClientError> {
        self.commands
            .send(Command::Read {
                group: group.to_owned(),
                seq,
            })
            .map_err(|_| ClientError::Closed)
    }

    /// The direct conversation with user `with` (created on first use); returns its group id.
    pub async fn direct(&self, with: &str) -> Result<String, ClientError> {
        let frame = ClientFrame::Direct {
            id: None,
            with: with.to_owned(),
        };
        match self.request(frame).await? {
            ServerFrame::Direct { group, .. } => Ok(group),
            other => Err(unexpected(&other)),
        }
    }

    /// Receipt counts of the user's own messages in `group` with seq above `after`, ascending,
    /// and whether more exist.
    pub async fn receipts_mine(
        &self,
        group: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<ReceiptItem>, bool), ClientError> {
        let frame = ClientFrame::Receipts {
            id: None,
            group: group.to_owned(),
            mine: true,
            seqs: None,
            after,
            limit: Some(limit),
        };
        match self.request(frame).await? {
            ServerFrame::Receipts { items, more, .. } => Ok((items, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// Receipt counts of the given messages of `group` (any member may ask), in the order asked.
    pub async fn receipts_for(
        &self,
        group: &str,
        seqs: &[u64],
    ) -> Result<Vec<ReceiptItem>, ClientError> {
        let frame = ClientFrame::Receipts {
            id: None,
            group: group.to_owned(),
            mine: false,
            seqs: Some(seqs.to_vec()),
            after: 0,
            limit: None,
        };
        match self.request(frame).await? {
            ServerFrame::Receipts { items, .. } => Ok(items),
            other => Err(unexpected(&other)),
        }
    }

    /// Exactly who has read, only received, or not received message `seq` of `group`.
    pub async fn readers(&self, group: &str, seq: u64) -> Result<Readers, ClientError> {
        let frame = ClientFrame::Readers {
            id: None,
            group: group.to_owned(),
            seq,
        };
        match self.request(frame).await? {
            ServerFrame::Readers { readers, .. } => Ok(readers),
            other => Err(unexpected(&other)),
        }
    }

    /// Reminds the recipients of my message `seq` who have not read it.
    pub async fn remind(&self, group: &str, seq: u64) -> Result<Reminded, ClientError> {
        let frame = ClientFrame::Remind {
            id: None,
            group: group.to_owned(),
            seq,
        };
        match self.request(frame).await? {
            ServerFrame::Reminded {
                group,
                seq,
                count,
                users,
                ..
            } => Ok(Reminded {
                group,
                seq,
                count,
                users,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads (`None`) or changes whether others see my reads; answers the setting now.
    pub async fn share_reads(&self, share_reads: Option<bool>) -> Result<bool, ClientError> {
        let frame = ClientFrame::Settings {
            id: None,
            share_reads,
        };
        match self.request(frame).await? {
            ServerFrame::Settings { share_reads, .. } => Ok(share_reads),
            other => Err(unexpected(&other)),
        }
    }

    /// Marks `group` unread without moving any cursor; my next [`Client::read`] there clears
    /// it. No answer: the server tells my other sessions.
    pub fn mark_unread(&self, group: &str) -> Result<(), ClientError> {
        self.commands
            .send(Command::MarkUnread {
                group: group.to_owned(),
            })
            .map_err(|_| ClientError::Closed)
    }

    /// Changes the body of my message `seq`, once durable.
    pub async fn edit(&self, group: &str, seq: u64, body: &str) -> Result<(), ClientError> {
        let frame = ClientFrame::Edit {
            id: None,
            group: group.to_owned(),
            seq,
            body: body.to_owned(),
        };
        match self.request(frame).await? {
            ServerFrame::Edited { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Deletes message `seq` (mine, or anyone's as an owner or admin), once durable.
    pub async fn delete(&self, group: &str, seq: u64) -> Result<(), ClientError> {
        let frame = ClientFrame::Delete {
            id: None,
            group: group.to_owned(),
            seq,
        };
        match self.request(frame).await? {
            ServerFrame::Deleted { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Tells the group's other online members that I am typing (no answer; the server
    /// forwards at most one per 2 s).
    pub fn typing(&self, group: &str) -> Result<(), ClientError> {
        self.commands
            .send(Command::Typing {
                group: group.to_owned(),
            })
            .map_err(|_| ClientError::Closed)
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(ClientFrame::Ping { id: None }).await? {
            ServerFrame::Pong { .. } => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Test hook: drops the current socket at once (no close handshake), as a network failure
    /// would; the client reconnects after [`ClientConfig::reconnect_delay`].
    pub fn disconnect_now(&self) {
        // A stopped worker has no socket to drop.
        let _ = self.commands.send(Command::DropConnection);
    }

    /// Closes the session (for every clone): sends a WebSocket close, fails unanswered calls
    /// with [`ClientError::Closed`], and waits for the worker to stop.
    pub async fn close(&self) {
        // A stopped worker is already closed.
        let _ = self.commands.send(Command::Close);
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                log::warn!("client worker ended abnormally: {e}");
            }
        }
    }

    /// Sends one query and waits for the frame that answers it; an `error` becomes
    /// [`ClientError::Server`].
    async fn request(&self, frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Query { frame, reply })
            .map_err(|_| ClientError::Closed)?;
        match answer.await.map_err(|_| ClientError::Closed)?? {
            ServerFrame::Error { code, message, .. } => Err(ClientError::Server { code, message }),
            frame => Ok(frame),
        }
    }
}

/// Unpacks a `messages` reply.
fn page(frame: ServerFrame) -> Result<Page, ClientError> {
    match frame {
        ServerFrame::Messages {
            messages,
            more,
            last_seq,
            ..
        } => Ok(Page {
            messages,
            more,
            last_seq,
        }),
        other => Err(unexpected(&other)),
    }
}

/// Describes a reply of the wrong type (by its type tag only: bodies stay out of errors).
fn unexpected(frame: &ServerFrame) -> ClientError {
    ClientError::UnexpectedReply(format!("a {} frame", frame.kind()))
}
