//! The registry: group id → running group actor (started lazily from storage), and user id →
//! online sessions.
//!
//! Sessions and the HTTP layer reach groups only through [`Registry::group`], by id, every time:
//! nobody keeps a group actor's address across that actor's restart, so a stopped actor is
//! simply started again from the store on next use.
//!
//! Plain `std::sync::Mutex`es rather than a registry actor: every critical section is a hash-map
//! operation (or, once per group, loading its state), never held across an `.await`, and callers
//! get an answer without a mailbox round trip.
//!
//! Group actors run on a small pool of dedicated arbiters (one per core), chosen by hashing the
//! group id, so group work never competes with socket I/O on the HTTP workers.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;

use crate::commit::Committer;
use crate::config::Config;
use crate::group::{reply_channel, AddMember, GroupActor, GroupDeps, GroupError, PersistCursors};
use crate::ids::{GroupId, UserId};
use crate::metrics::Metrics;
use crate::session::{Outbound, SessionCounts, SessionHandle, SessionPermit};
use crate::store::{
    now_ms, GroupKindRecord, GroupRecord, MemberRecord, Store, StoreError, UserRecord,
};

/// Shared server state: storage, the group actors, the online sessions.
pub struct Registry {
    store: Arc<dyn Store>,
    committer: Committer,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    arbiters: Vec<ArbiterHandle>,
    groups: Mutex<HashMap<GroupId, GroupSlot>>,
    sessions: Mutex<HashMap<UserId, Vec<SessionHandle>>>,
    /// Set (under the `sessions` lock) when the server shuts down: no session registers after.
    closing: AtomicBool,
    next_session_id: AtomicU64,
    session_counts: Arc<SessionCounts>,
}

/// One group's place in the registry: its actor once started. Its own lock serializes loading
/// that group without holding the whole map.
type GroupSlot = Arc<Mutex<Option<Addr<GroupActor>>>>;

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section leaves the maps consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Builds the registry; `arbiters` host the group actors (at least one).
    pub fn new(
        store: Arc<dyn Store>,
        committer: Committer,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Arc<Registry> {
        let session_counts = Arc::new(SessionCounts::new(config.send_rate, config.send_burst));
        Arc::new(Registry {
            store,
            committer,
            config,
            metrics,
            arbiters,
            groups: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            next_session_id: AtomicU64::new(1),
            session_counts,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The running actor of a group, started from storage if needed; `None` if no such group.
    ///
    /// Loading a group scans its messages, so it happens under that group's own slot lock,
    /// never under the map's: other groups are served meanwhile.
    pub fn group(self: &Arc<Self>, id: &GroupId) -> Result<Option<Addr<GroupActor>>, StoreError> {
        let slot = {
            let mut groups = lock(&self.groups);
            match groups.get(id) {
                Some(slot) => Arc::clone(slot),
                None => {
                    // Only groups that exist get a slot, so unknown ids cost no memory.
                    if self.store.group(id)?.is_none() {
                        return Ok(None);
                    }
                    Arc::clone(groups.entry(id.clone()).or_default())
                }
            }
        };
        let mut running = lock(&slot);
        if let Some(addr) = running.as_ref() {
            if addr.connected() {
                return Ok(Some(addr.clone()));
            }
            // The actor died (a panic): its last writes may not be flushed yet. Flush, so the
            // head the new actor reads back is durable before anyone sees it.
            log::warn!("group {id}: actor had stopped; starting it again");
            self.store.flush()?;
        }
        let deps = GroupDeps {
            store: Arc::clone(&self.store),
            committer: self.committer.clone(),
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            registry: Arc::clone(self),
        };
        let Some(actor) = GroupActor::load(id.clone(), deps)? else {
            return Ok(None);
        };
        let addr = match self.arbiter_for(id) {
            Some(arbiter) => GroupActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        *running = Some(addr.clone());
        Ok(Some(addr))
    }

    /// The actors started so far (some may have stopped).
    fn started_groups(&self) -> Vec<Addr<GroupActor>> {
        let slots: Vec<GroupSlot> = lock(&self.groups).values().cloned().collect();
        slots.iter().filter_map(|slot| lock(slot).clone()).collect()
    }

    fn arbiter_for(&self, id: &GroupId) -> Option<&ArbiterHandle> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let n = u64::try_from(self.arbiters.len()).ok().filter(|&n| n > 0)?;
        let at = usize::try_from(hasher.finish() % n).ok()?;
        self.arbiters.get(at)
    }

    /// Creates a user unless it exists, answering once durable; returns whether it was created.
    pub async fn create_user(&self, id: &UserId, name: &str) -> Result<bool, GroupError> {
        let created = self.store.create_user(
            id,
            &UserRecord {
                name: name.to_owned(),
                created_ms: now_ms(),
            },
        )?;
        if created {
            self.flush().await?;
            log::info!("user {id} created");
        }
        Ok(created)
    }

    /// Makes sure a user record exists (name = id when new). Not flushed by itself: a user
    /// created implicitly (first connect, a member or a `direct` peer) is flushed with the
    /// membership that needs it, or created again on next use.
    pub fn ensure_user(&self, id: &UserId) -> Result<(), StoreError> {
        if self.store.user(id)?.is_none() {
            let record = UserRecord {
                name: id.to_string(),
                created_ms: now_ms(),
            };
            if self.store.create_user(id, &record)? {
                log::info!("user {id} created on first use");
            }
        }
        Ok(())
    }

    /// Waits for a flush covering every write made so far.
    pub async fn flush(&self) -> Result<(), GroupError> {
        if self.committer.flush().await {
            Ok(())
        } else {
            Err(GroupError::Storage("flush failed".into()))
        }
    }

    /// Creates a group with its first members, answering once durable. `Ok(None)` when the id
    /// is taken.
    pub async fn create_group(
        self: &Arc<Self>,
        id: &GroupId,
        name: &str,
        kind: GroupKindRecord,
        members: &[UserId],
    ) -> Result<Option<Addr<GroupActor>>, GroupError> {
        let record = GroupRecord {
            name: name.to_owned(),
            kind,
            created_ms: now_ms(),
        };
        // Refuse up front while writes are refused, rather than store a group whose members
        // then fail: a retry would meet `group_exists`. (Members of an existing group can be
        // added again: `PUT` is idempotent.)
        self.store.writable()?;
        if !self.store.create_group(id, &record)? {
            return Ok(None);
        }
        // The group record is durable before it is answered, even with no members.
        self.flush().await?;
        log::info!("group {id} created with {} members", members.len());
        let addr = self
            .group(id)?
            .ok_or_else(|| GroupError::Storage(format!("group {id} vanished")))?;
        for user in members {
            self.ensure_user(user)?;
            add_member(&addr, user.clone()).await?;
        }
        Ok(Some(addr))
    }

    /// The direct conversation of two users, created on first use.
    pub async fn open_direct(
        self: &Arc<Self>,
        me: &UserId,
        other: &UserId,
    ) -> Result<GroupId, GroupError> {
        let id = GroupId::direct(me, other);
        if let Some(addr) = self.group(&id)? {
            // Both stay members of a direct conversation; re-adding is a no-op.
            add_member(&addr, me.clone()).await?;
            add_member(&addr, other.clone()).await?;
            return Ok(id);
        }
        let name = format!("{me}, {other}");
        let members = [me.clone(), other.clone()];
        if self
            .create_group(&id, &name, GroupKindRecord::Direct, &members)
            .await?
            .is_none()
        {
            // Created concurrently by the other side: make sure both are in.
            if let Some(addr) = self.group(&id)? {
                add_member(&addr, me.clone()).await?;
                add_member(&addr, other.clone()).await?;
            }
        }
        Ok(id)
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits one more session of `user`, unless `--max-sessions-per-user` are already open.
    pub fn admit_session(&self, user: &UserId) -> Option<SessionPermit> {
        self.session_counts
            .admit(user, self.config.max_sessions_per_user)
    }

    /// Registers an online session; `false` once the server is shutting down, in which case the
    /// session must close itself.
    pub fn register_session(&self, session: SessionHandle) -> bool {
        let mut sessions = lock(&self.sessions);
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        sessions
            .entry(session.user.clone())
            .or_default()
            .push(session);
        true
    }

    /// At shutdown: tells every online session to close with 1001 (`going away`), and makes
    /// every later [`Registry::register_session`] refuse. Returns how many were told.
    pub fn close_sessions(&self) -> usize {
        let sessions = lock(&self.sessions);
        self.closing.store(true, Ordering::SeqCst);
        let mut n_sessions = 0;
        for handle in sessions.values().flatten() {
            // `do_send`: a full mailbox must not keep a session open.
            handle.outbox.do_send(Outbound::GoingAway);
            n_sessions += 1;
        }
        n_sessions
    }

    pub fn unregister_session(&self, user: &UserId, session_id: u64) {
        let mut sessions = lock(&self.sessions);
        if let Some(list) = sessions.get_mut(user) {
            list.retain(|s| s.id != session_id);
            if list.is_empty() {
                sessions.remove(user);
            }
        }
    }

    /// The online sessions of a user.
    pub fn sessions_of(&self, user: &UserId) -> Vec<SessionHandle> {
        lock(&self.sessions).get(user).cloned().unwrap_or_default()
    }

    /// Writes every group's pending cursor moves (at shutdown, before the final flush).
    pub async fn persist_cursors(&self) {
        for addr in self.started_groups() {
            let _ = addr.send(PersistCursors).await;
        }
    }

    /// The running actor of a group, without starting one.
    pub fn running_group(&self, id: &GroupId) -> Option<Addr<GroupActor>> {
        let slot = lock(&self.groups).get(id).cloned()?;
        let addr = lock(&slot).clone();
        addr.filter(|a| a.connected())
    }
}

/// Adds a member through its group actor, waiting until it is durable.
pub async fn add_member(addr: &Addr<GroupActor>, user: UserId) -> Result<MemberRecord, GroupError> {
    let (reply, answer) = reply_channel();
    addr.send(AddMember { user, reply }).await?;
    answer.wait().await
}
