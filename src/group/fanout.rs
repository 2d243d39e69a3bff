//! Fan-out: the online sessions attached to one group, and pushing frames to them.
//!
//! A session is attached when its `welcome` (or `joined`) summary was taken, so it gets every
//! push after the head that summary showed and none before. Pushes use `try_send` on the
//! session's bounded mailbox: a group never waits for a session. A session whose queue is full
//! (`--session-queue` frames) is evicted (closed with 4000, it resyncs from its cursor) and
//! detached here. The frame text is serialized once and shared (`FrameText`) by every
//! recipient, and the messages one flush made durable go to each session as one mailbox message
//! ([`Fanout::push_all_to_all`]).

use crate::presence::FrameText;
use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::{GroupId, UserId};
use crate::metrics::Metrics;
use crate::presence::{Outbound, Refused, SessionHandle};

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
        handles.retain(|handle| {
            Some(handle.id) == except || kept(group, metrics, handle, handle.offer(kind, text))
        });
        if handles.is_empty() {
            self.sessions.remove(user);
        }
    }

    /// Sends a frame to every attached session.
    pub(super) fn push_to_all(&mut self, kind: &'static str, text: &FrameText) {
        let (group, metrics) = (&self.group, &self.metrics);
        self.sessions.retain(|_, handles| {
            handles.retain(|handle| kept(group, metrics, handle, handle.offer(kind, text)));
            !handles.is_empty()
        });
    }

    /// Sends several frames, in order, to every attached session: one mailbox message each.
    pub(super) fn push_all_to_all(&mut self, kind: &'static str, texts: &Arc<[FrameText]>) {
        let (group, metrics) = (&self.group, &self.metrics);
        self.sessions.retain(|_, handles| {
            handles.retain(|handle| kept(group, metrics, handle, handle.offer_all(kind, texts)));
            !handles.is_empty()
        });
    }
}

/// Whether a session stays attached after an offer: a full one is evicted (told to close with
/// 4000 and resync), a closed one is gone.
fn kept(
    group: &GroupId,
    metrics: &Metrics,
    handle: &SessionHandle,
    offered: Result<(), Refused>,
) -> bool {
    match offered {
        Ok(()) => true,
        Err(Refused::Full) => {
            evict(metrics, handle);
            log::warn!(
                "group {group}: session {} of {} is behind; evicting it",
                handle.id,
                handle.user
            );
            false
        }
        Err(Refused::Closed) => false,
    }
}

/// Tells a session that fell behind to close (4000) and resync.
pub(super) fn evict(metrics: &Metrics, handle: &SessionHandle) {
    metrics.outbound_queue_overflows.inc();
    handle.outbox.do_send(Outbound::Evict);
}
