//! Presence: who is online, and the handles through which anyone reaches an online session.
//!
//! It sits below the groups and the registry and imports neither: a group actor pushes through
//! a [`SessionHandle`] (a typed actix `Recipient`, not the session actor's type) and finds a
//! newly added member's sessions through [`Presence::sessions_of`], which it gets in its deps.
//! Rejected: keeping this directory in the registry, which made group ↔ registry ↔ session a
//! circle (and an `Arc` loop: registry → group actor → registry).
//!
//! Plain `std::sync::Mutex`es rather than an actor: every critical section is a hash-map
//! operation, never held across an `.await`, and callers get an answer without a mailbox round
//! trip. `limits.rs` holds the per-user session cap and write budget.

mod limits;

pub use limits::SessionPermit;

use limits::SessionCounts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::ids::UserId;

/// Throttle entries kept before the old ones are dropped.
const MAX_TYPING_ENTRIES: usize = 100_000;

/// A serialized frame: cheap to clone (a reference count), and written to a socket without a
/// copy per recipient.
pub type FrameText = bytestring::ByteString;

/// A frame for a session, from a group actor (or the server, at shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum Outbound {
    /// An already serialized frame (shared by every recipient of a push).
    Frame { kind: &'static str, text: FrameText },
    /// Several frames of one type, in order: the messages one flush made durable, pushed as one
    /// mailbox message (one envelope and one wake-up per session and flush, not per message).
    Frames {
        kind: &'static str,
        texts: Arc<[FrameText]>,
    },
    /// The session fell behind: close it so the client resyncs.
    Evict,
    /// The server is shutting down: close with 1001 (`going away`).
    GoingAway,
    /// Close with 1012 (service restart): this node stopped owning its groups (another node
    /// took over); the client reconnects, to another server if it knows one.
    Restart,
    /// The user's tokens were revoked or the account deactivated: close with 4001
    /// (`unauthorized`), saying why.
    Unauthorized(&'static str),
}

/// How a group reaches one online session.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub user: UserId,
    pub outbox: Recipient<Outbound>,
    pub backlog: Backlog,
}

/// The frames queued for one session and not yet handed to its socket, shared by every handle
/// of that session: the bound (`--session-queue`) is on frames, whether they came one per
/// mailbox message or many in one [`Outbound::Frames`].
#[derive(Clone)]
pub struct Backlog {
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Backlog {
    /// An empty backlog of at most `limit` frames.
    pub fn new(limit: usize) -> Backlog {
        Backlog {
            queued: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// The session handed `n` frames to its socket. (Saturating: a frame that was never
    /// counted must not make every later offer look full.)
    pub fn written(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(n))
            });
    }

    /// Frames queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Why [`SessionHandle::offer`] did not queue frames.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The session's queue would hold more than `--session-queue` frames.
    Full,
    /// The session is gone.
    Closed,
}

impl SessionHandle {
    /// Queues one frame (`try_send`: the caller never waits for a session).
    pub fn offer(&self, kind: &'static str, text: &FrameText) -> Result<(), Refused> {
        self.offer_counted(
            1,
            Outbound::Frame {
                kind,
                text: text.clone(),
            },
        )
    }

    /// Queues several frames of one type as one mailbox message.
    pub fn offer_all(&self, kind: &'static str, texts: &Arc<[FrameText]>) -> Result<(), Refused> {
        match texts.len() {
            0 => Ok(()),
            1 => self.offer(kind, &texts[0]),
            n => self.offer_counted(
                n,
                Outbound::Frames {
                    kind,
                    texts: Arc::clone(texts),
                },
            ),
        }
    }

    fn offer_counted(&self, n: usize, frames: Outbound) -> Result<(), Refused> {
        let queued = &self.backlog.queued;
        if queued.fetch_add(n, Ordering::Relaxed) + n > self.backlog.limit {
            queued.fetch_sub(n, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.outbox.try_send(frames).map_err(|e| {
            queued.fetch_sub(n, Ordering::Relaxed);
            match e {
                SendError::Full(_) => Refused::Full,
                SendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

/// The online sessions of every user, session ids, and the shutdown flag.
pub struct Presence {
    sessions: Mutex<HashMap<UserId, Vec<SessionHandle>>>,
    /// The users last announced online (`presence {online: true}`), for the debounce.
    announced: Mutex<HashSet<UserId>>,
    /// When each user's last `typing` per group was forwarded (the throttle, over all of the
    /// user's sessions).
    typing: Mutex<HashMap<(UserId, String), Instant>>,
    /// Set (under the `sessions` lock) when the server shuts down: no session registers after.
    closing: AtomicBool,
    next_session_id: AtomicU64,
    counts: Arc<SessionCounts>,
    max_sessions_per_user: usize,
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section leaves the map consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Presence {
    /// A directory admitting `max_sessions_per_user` sessions per user (0: no limit), each user
    /// with a write budget of `send_rate` per second in bursts of `send_burst`.
    pub fn new(send_rate: u32, send_burst: u32, max_sessions_per_user: usize) -> Presence {
        Presence {
            sessions: Mutex::new(HashMap::new()),
            announced: Mutex::new(HashSet::new()),
            typing: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            next_session_id: AtomicU64::new(1),
            counts: Arc::new(SessionCounts::new(send_rate, send_burst)),
            max_sessions_per_user,
        }
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits one more session of `user`, unless `--max-sessions-per-user` are already open.
    pub fn admit(&self, user: &UserId) -> Option<SessionPermit> {
        self.counts.admit(user, self.max_sessions_per_user)
    }

    /// Registers an online session; `false` once the server is shutting down, in which case the
    /// session must close itself.
    pub fn register(&self, session: SessionHandle) -> bool {
        let mut sessions = lock(&self.sessions);
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        // Room for one: most users have one session open, and an empty Vec's first push makes
        // room for four (192 bytes more per online user).
        sessions
            .entry(session.user.clone())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(session);
        true
    }

    pub fn unregister(&self, user: &UserId, session_id: u64) {
        let mut sessions = lock(&self.sessions);
        if let Some(list) = sessions.get_mut(user) {
            list.retain(|s| s.id != session_id);
            if list.is_empty() {
                sessions.remove(user);
            }
        }
    }

    /// At shutdown: tells every online session to close with 1001 (`going away`), and makes
    /// every later [`Presence::register`] refuse. Returns how many were told.
    pub fn close_all(&self) -> usize {
        self.close_all_with(Outbound::GoingAway)
    }

    /// [`Presence::close_all`] with 1012 (service restart) instead: the node was fenced.
    pub fn restart_all(&self) -> usize {
        self.close_all_with(Outbound::Restart)
    }

    fn close_all_with(&self, close: Outbound) -> usize {
        let sessions = lock(&self.sessions);
        self.closing.store(true, Ordering::SeqCst);
        let mut n_sessions = 0;
        for handle in sessions.values().flatten() {
            // `do_send`: a full mailbox must not keep a session open.
            handle.outbox.do_send(close.clone());
            n_sessions += 1;
        }
        n_sessions
    }

    /// Tells every online session of `user` to close with 4001 (`unauthorized`, `why`).
    /// Returns how many were told. A session registering concurrently checks its token again
    /// after registering, so none stays open with a token refused before.
    pub fn close_user(&self, user: &UserId, why: &'static str) -> usize {
        let sessions = self.sessions_of(user);
        for handle in &sessions {
            handle.outbox.do_send(Outbound::Unauthorized(why));
        }
        sessions.len()
    }

    /// Records `user` as announced online; `false` when they were already (a reconnect within
    /// the debounce: nothing to announce).
    pub fn announce_online(&self, user: &UserId) -> bool {
        lock(&self.announced).insert(user.clone())
    }

    /// Records `user` as announced offline, if they have no session now and were announced
    /// online; whether to announce it.
    pub fn announce_offline(&self, user: &UserId) -> bool {
        let sessions = lock(&self.sessions);
        !sessions.contains_key(user) && lock(&self.announced).remove(user)
    }

    /// Whether a `typing` of `user` in `group` may be forwarded now (none forwarded within
    /// `every`); records it if so.
    pub fn typing_allowed(&self, user: &UserId, group: &str, every: Duration) -> bool {
        let now = Instant::now();
        let mut typing = lock(&self.typing);
        let key = (user.clone(), group.to_owned());
        if typing
            .get(&key)
            .is_some_and(|last| now.duration_since(*last) < every)
        {
            return false;
        }
        if typing.len() >= MAX_TYPING_ENTRIES {
            typing.retain(|_, last| now.duration_since(*last) < every);
        }
        typing.insert(key, now);
        true
    }

    /// Forgets a recorded `typing` (it was refused, so the next one is answered too).
    pub fn typing_refused(&self, user: &UserId, group: &str) {
        lock(&self.typing).remove(&(user.clone(), group.to_owned()));
    }

    /// Whether `user` has a session open.
    pub fn is_online(&self, user: &UserId) -> bool {
        lock(&self.sessions).contains_key(user)
    }

    /// The online sessions of a user.
    pub fn sessions_of(&self, user: &UserId) -> Vec<SessionHandle> {
        lock(&self.sessions).get(user).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session that never runs its mailbox: every frame offered to it stays queued.
    struct Stalled;

    impl Actor for Stalled {
        type Context = Context<Self>;
    }

    impl Handler<Outbound> for Stalled {
        type Result = ();

        fn handle(&mut self, _msg: Outbound, _ctx: &mut Context<Self>) {}
    }

    fn texts(n: usize) -> Arc<[FrameText]> {
        (0..n).map(|i| FrameText::from(format!("{i}"))).collect()
    }

    #[test]
    fn the_session_queue_bounds_frames_not_mailbox_messages() {
        System::new().block_on(async {
            let handle = SessionHandle {
                id: 1,
                user: UserId::parse("alice").expect("user id"),
                outbox: Stalled.start().recipient(),
                backlog: Backlog::new(16),
            };
            // 10 + 6 frames in two mailbox messages fill a queue of 16 frames.
            assert_eq!(handle.offer_all("msg", &texts(10)), Ok(()));
            assert_eq!(handle.offer_all("msg", &texts(6)), Ok(()));
            assert_eq!(handle.backlog.queued(), 16);
            // One more frame, alone or in a batch, is refused, and counts nothing.
            assert_eq!(handle.offer("msg", &texts(1)[0]), Err(Refused::Full));
            assert_eq!(handle.offer_all("msg", &texts(2)), Err(Refused::Full));
            assert_eq!(handle.backlog.queued(), 16);
            // Once the session wrote some, there is room again for that many.
            handle.backlog.written(10);
            assert_eq!(handle.offer_all("msg", &texts(10)), Ok(()));
            assert_eq!(handle.offer("msg", &texts(1)[0]), Err(Refused::Full));
        });
    }
}
