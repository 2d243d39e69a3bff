//! Fan-out: the online sessions attached to one group, and pushing a frame to them.
//!
//! A session is attached when its `welcome` (or `joined`) summary was taken, so it gets every
//! push after the head that summary showed and none before. Pushes use `try_send` on the
//! session's bounded mailbox: a group never waits for a session. A session whose queue is full
//! is evicted (closed with 4000, it resyncs from its cursor) and detached here. The frame text is
//! serialized once and shared (`FrameText`) by every recipient.

use crate::presence::FrameText;
use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::{Recipient, SendError};

use crate::ids::{GroupId, UserId};
use crate::metrics::Metrics;
use crate::presence::{Outbound, SessionHandle};

/// The sessions attached to one group, by user.
pub(super) struct Fanout {
    group: GroupId,
    metrics: Arc<Metrics>,
    sessions: HashMap<UserId, Vec<SessionHandle>>,
}

impl Fanout {
    pub(super) fn new(group: GroupId, metrics: Arc<Metrics>) -> Fanout {
        Fanout {
            group,
            metrics,
            sessions: HashMap::new(),
        }
    }

    /// Attaches a session (attaching twice is harmless).
    pub(super) fn attach(&mut self, session: SessionHandle) {
        let handles = self.sessions.entry(session.user.clone()).or_default();
        if !handles.iter().any(|h| h.id == session.id) {
            handles.push(session);
        }
    }

    pub(super) fn detach(&mut self, user: &UserId, session_id: u64) {
        if let Some(handles) = self.sessions.get_mut(user) {
            handles.retain(|h| h.id != session_id);
            if handles.is_empty() {
                self.sessions.remove(user);
            }
        }
    }

    /// Detaches every session of `user` (removed from the group) and returns them.
    pub(super) fn take_user(&mut self, user: &UserId) -> Vec<SessionHandle> {
        self.sessions.remove(user).unwrap_or_default()
    }

    /// Detaches every session and returns them.
    pub(super) fn take_all(&mut self) -> Vec<SessionHandle> {
        self.sessions
            .drain()
            .flat_map(|(_, handles)| handles)
            .collect()
    }

    pub(super) fn is_attached(&self, user: &UserId, session_id: u64) -> bool {
        self.sessions
            .get(user)
            .is_some_and(|handles| handles.iter().any(|h| h.id == session_id))
    }

    /// The users with at least one attached session.
    pub(super) fn online_users(&self) -> impl Iterator<Item = &UserId> {
        self.sessions.keys()
    }

    /// Whether `user` has an attached session other than `except` (so a frame for them is worth
    /// serializing).
    pub(super) fn has_other_session(&self, user: &UserId, except: Option<u64>) -> bool {
        self.sessions
            .get(user)
            .is_some_and(|handles| handles.iter().any(|h| Some(h.id) != except))
    }

    /// Sends a frame to every attached session of `user` but `except`, evicting sessions whose
    /// queue is full.
    pub(super) fn send_to_user(
        &mut self,
        user: &UserId,
        kind: &'static str,
        text: &FrameText,
        except: Option<u64>,
    ) {
        let Some(handles) = self.sessions.get_mut(user) else {
            return;
        };
        let (group, metrics) = (&self.group, &self.metrics);
        handles
            .retain(|handle| Some(handle.id) == except || push(group, metrics, handle, kind, text));
        if handles.is_empty() {
            self.sessions.remove(user);
        }
    }

    /// Sends a frame to every attached session.
    pub(super) fn push_to_all(&mut self, kind: &'static str, text: &FrameText) {
        let (group, metrics) = (&self.group, &self.metrics);
        self.sessions.retain(|_, handles| {
            handles.retain(|handle| push(group, metrics, handle, kind, text));
            !handles.is_empty()
        });
    }
}

/// Queues a frame for one session; `false` when the session is gone or was evicted (its queue
/// was full), so the caller detaches it.
fn push(
    group: &GroupId,
    metrics: &Metrics,
    handle: &SessionHandle,
    kind: &'static str,
    text: &FrameText,
) -> bool {
    match send_to(metrics, &handle.outbox, kind, text) {
        Ok(()) => true,
        Err(Undelivered::Evicted) => {
            log::warn!(
                "group {group}: session {} of {} is behind; evicting it",
                handle.id,
                handle.user
            );
            false
        }
        Err(Undelivered::Closed) => false,
    }
}

/// Why [`send_to`] did not queue a frame.
pub(super) enum Undelivered {
    /// The session's mailbox was full: it is told to close (4000) and resync.
    Evicted,
    /// The session is gone.
    Closed,
}

/// Queues a frame in a session's mailbox with `try_send` (a group never waits for a session);
/// a full mailbox evicts the session.
pub(super) fn send_to(
    metrics: &Metrics,
    outbox: &Recipient<Outbound>,
    kind: &'static str,
    text: &FrameText,
) -> Result<(), Undelivered> {
    match outbox.try_send(Outbound::Frame {
        kind,
        text: text.clone(),
    }) {
        Ok(()) => Ok(()),
        Err(SendError::Full(_)) => {
            metrics.outbound_queue_overflows.inc();
            outbox.do_send(Outbound::Evict);
            Err(Undelivered::Evicted)
        }
        Err(SendError::Closed(_)) => Err(Undelivered::Closed),
    }
}
