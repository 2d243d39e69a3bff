//! The registry: group id → running group actor (started lazily from storage), and the
//! operations that span groups (creating users and groups, opening a direct conversation).
//!
//! Sessions and the HTTP layer reach groups only through [`Registry::group`], by id, every time:
//! nobody keeps a group actor's address across that actor's restart, so a stopped actor is
//! simply started again from the store on next use. Who is online lives below, in
//! [`Presence`], which the registry hands to every group actor it starts.
//!
//! Plain `std::sync::Mutex`es rather than a registry actor: every critical section is a hash-map
//! operation (or, once per group, loading its state), never held across an `.await`, and callers
//! get an answer without a mailbox round trip.
//!
//! Group actors run on a small pool of dedicated arbiters (one per core), chosen by hashing the
//! group id, so group work never competes with socket I/O on the HTTP workers.

use crate::presence::FrameText;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::commit::Committer;
use crate::config::Config;
use crate::group::{
    prune_batch, reply_channel, stored_summary, AddMember, Attached, By, DeleteGroup, GroupActor,
    GroupDeps, GroupError, MemberView, PersistCursors, Prune, Pruned, Retire, SetShareReads,
    HANDED_OUT_GRACE,
};
use crate::ids::{GroupId, UserId};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::protocol::{MemberEntry, UserEntry};
use crate::store::{
    now_ms, GroupKindRecord, GroupRecord, GroupSettingsRecord, MemberRecord, RoleRecord, Store,
    StoreError, UserRecord, UserSettingsRecord,
};

/// One group as [`Registry::summarize`] finds it.
pub enum Summarized {
    /// Its actor runs: attach to it and ask it.
    Running(Addr<GroupActor>),
    /// No actor runs: the summary, read from the store.
    Stored(Attached),
}

/// Messages one prune batch removes at most (a few ms of one group's time).
pub const PRUNE_BATCH: usize = 128;

/// How long after a user's last session closed they are announced offline, unless a session
/// opened again meanwhile (a reconnect sends nothing).
pub const OFFLINE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Shared server state: storage, the group actors, who is online.
pub struct Registry {
    store: Arc<dyn Store>,
    committer: Committer,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    presence: Arc<Presence>,
    arbiters: Vec<ArbiterHandle>,
    groups: Mutex<HashMap<GroupId, GroupSlot>>,
}

/// One group's place in the registry: its actor while running. Its own lock serializes loading
/// (and passivating) that group without holding the whole map.
type GroupSlot = Arc<Mutex<Slot>>;

#[derive(Default)]
struct Slot {
    running: Option<Addr<GroupActor>>,
    /// When the running actor's address was last handed out (see `group/passivation.rs`).
    handed_out: Option<Instant>,
}

impl Slot {
    /// The running actor's address, noted as handed out.
    fn hand_out(&mut self) -> Option<Addr<GroupActor>> {
        let addr = self.running.clone()?;
        self.handed_out = Some(Instant::now());
        Some(addr)
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (every critical
/// section leaves the maps consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Builds the registry; `arbiters` host the group actors (none: the current arbiter).
    pub fn new(
        store: Arc<dyn Store>,
        committer: Committer,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Arc<Registry> {
        let presence = Arc::new(Presence::new(
            config.send_rate,
            config.send_burst,
            config.max_sessions_per_user,
        ));
        Arc::new(Registry {
            store,
            committer,
            config,
            metrics,
            presence,
            arbiters,
            groups: Mutex::new(HashMap::new()),
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

    /// Who is online.
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// The slot of a group, made if the group exists; `None` if it does not. Only groups that
    /// exist get a slot, so unknown ids cost no memory.
    fn slot(&self, id: &GroupId) -> Result<Option<GroupSlot>, StoreError> {
        let mut groups = lock(&self.groups);
        if let Some(slot) = groups.get(id) {
            return Ok(Some(Arc::clone(slot)));
        }
        if self.store.group(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::clone(groups.entry(id.clone()).or_default())))
    }

    /// The running actor of a group, started from storage if needed; `None` if no such group.
    ///
    /// Loading a group reads its members and the deletions among its newest `--dedup-window`
    /// messages (each sender's resend entries come on their first send), so it
    /// happens under that group's own slot lock, never under the map's: other groups are served
    /// meanwhile.
    pub fn group(&self, id: &GroupId) -> Result<Option<Addr<GroupActor>>, StoreError> {
        let Some(slot) = self.slot(id)? else {
            return Ok(None);
        };
        let mut running = lock(&slot);
        if let Some(addr) = running.running.as_ref() {
            if addr.connected() {
                return Ok(running.hand_out());
            }
            // The actor died (a panic): its last writes may not be flushed yet. Flush, so the
            // head the new actor reads back is durable before anyone sees it. (A passivated
            // actor leaves the slot empty instead.)
            log::warn!("group {id}: actor had stopped; starting it again");
            self.store.flush()?;
        }
        let deps = GroupDeps {
            store: Arc::clone(&self.store),
            committer: self.committer.clone(),
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            presence: Arc::clone(&self.presence),
        };
        let Some(mut actor) = GroupActor::load(id.clone(), deps)? else {
            return Ok(None);
        };
        actor.passivate_with(retire_from(Arc::downgrade(&slot), self.config.group_idle));
        let addr = match self.arbiter_for(id) {
            Some(arbiter) => GroupActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        running.running = Some(addr);
        Ok(running.hand_out())
    }

    /// What `welcome` and `groups` show of one group without starting its actor: the running
    /// actor (to attach to and ask), or, when none runs, `user`'s summary read from the store
    /// under the group's slot lock (so none starts meanwhile). `None`: no such group, or `user`
    /// is not a member.
    pub fn summarize(&self, id: &GroupId, user: &UserId) -> Result<Option<Summarized>, StoreError> {
        let Some(slot) = self.slot(id)? else {
            return Ok(None);
        };
        {
            let mut running = lock(&slot);
            match running.running.as_ref() {
                None => {
                    return Ok(stored_summary(&*self.store, id, user)?.map(Summarized::Stored));
                }
                Some(addr) if addr.connected() => {
                    return Ok(running.hand_out().map(Summarized::Running));
                }
                // A dead actor: its last writes may not be durable; start a new one (which
                // flushes first).
                Some(_) => {}
            }
        }
        Ok(self.group(id)?.map(Summarized::Running))
    }

    /// The retention in force for a group: its own, else `--retention-secs`.
    pub fn retention_of(&self, id: &GroupId) -> Result<Option<Duration>, StoreError> {
        Ok(match self.store.group_retention(id)? {
            Some(own) => own.secs.map(Duration::from_secs),
            None => self.config.retention,
        })
    }

    /// Prunes one batch of group `id` (messages sent before `cutoff_ms`, at most `limit`): in
    /// its actor when it runs, otherwise here, under its slot lock (so none starts meanwhile).
    /// Pruning does not start a stopped group.
    pub async fn prune(
        &self,
        id: &GroupId,
        cutoff_ms: u64,
        limit: usize,
    ) -> Result<Pruned, GroupError> {
        let Some(slot) = self.slot(id)? else {
            return Ok(Pruned::NOTHING);
        };
        let addr = {
            let running = lock(&slot);
            match running.running.as_ref() {
                None => {
                    // Pruned under the slot's lock, held until this returns.
                    let first = self.store.first_seq(id)?.0;
                    let last = self.store.last_seq(id)?.0;
                    let pruned = prune_batch(&*self.store, id, cutoff_ms, first, last, limit)?;
                    self.metrics.messages_pruned.inc_by(pruned.pruned);
                    return Ok(pruned);
                }
                // Not noted as handed out: the pruner must not keep an idle group loaded. If the
                // actor retires before this batch reaches it, the batch is dropped unanswered
                // and the next pass prunes it.
                Some(addr) if addr.connected() => Some(addr.clone()),
                Some(_) => None,
            }
        };
        let addr = match addr {
            Some(addr) => addr,
            // A dead actor: start a new one (which flushes first).
            None => match self.group(id)? {
                Some(addr) => addr,
                None => return Ok(Pruned::NOTHING),
            },
        };
        addr.send(Prune { cutoff_ms, limit }).await?
    }

    /// One pass of the pruner: every group with a retention, pruned in batches of
    /// `PRUNE_BATCH` (each holds its group a few ms); returns how many messages went.
    pub async fn prune_all(&self) -> u64 {
        let now = now_ms();
        let mut after: Option<GroupId> = None;
        let mut total = 0;
        loop {
            let page = match self.store.groups(after.as_ref(), 500) {
                Ok(page) => page,
                Err(e) => {
                    log::error!("pruner: listing groups: {e}");
                    return total;
                }
            };
            let Some((last, _)) = page.last() else {
                return total;
            };
            after = Some(last.clone());
            for (id, _) in page {
                let retention = match self.retention_of(&id) {
                    Ok(Some(retention)) => retention,
                    Ok(None) => continue,
                    Err(e) => {
                        log::error!("pruner: the retention of {id}: {e}");
                        continue;
                    }
                };
                let cutoff =
                    now.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
                loop {
                    match self.prune(&id, cutoff, PRUNE_BATCH).await {
                        Ok(pruned) => {
                            total += pruned.pruned;
                            if !pruned.more {
                                break;
                            }
                        }
                        Err(e) => {
                            log::warn!("pruner: group {id}: {e:?}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The actors started so far (some may have stopped).
    fn started_groups(&self) -> Vec<Addr<GroupActor>> {
        let slots: Vec<GroupSlot> = lock(&self.groups).values().cloned().collect();
        slots
            .iter()
            .filter_map(|slot| lock(slot).hand_out())
            .collect()
    }

    fn arbiter_for(&self, id: &GroupId) -> Option<&ArbiterHandle> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let n = u64::try_from(self.arbiters.len()).ok().filter(|&n| n > 0)?;
        let at = usize::try_from(hasher.finish() % n).ok()?;
        self.arbiters.get(at)
    }

    /// Fails with `no_such_user` unless every one of `users` exists and is active: nobody is
    /// created because someone else named them.
    pub fn check_users(&self, users: &[UserId]) -> Result<(), GroupError> {
        for user in users {
            if self.store.user(user)?.is_none() {
                return Err(GroupError::NoSuchUser(format!("no user {user}")));
            }
            if self.store.account(user)?.is_some_and(|a| a.deactivated) {
                return Err(GroupError::NoSuchUser(format!("{user} is deactivated")));
            }
        }
        Ok(())
    }

    /// Users by id, for a listing; deactivated users are left out.
    pub fn user_entries(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<(Vec<UserEntry>, bool), StoreError> {
        let mut entries = Vec::new();
        let mut after = after.cloned();
        // Pages of the store until `limit` active users (or the end) are found.
        loop {
            let page = self.store.users(after.as_ref(), limit + 1)?;
            let exhausted = page.len() <= limit;
            for (id, record) in page {
                after = Some(id.clone());
                if self.store.account(&id)?.is_some_and(|a| a.deactivated) {
                    continue;
                }
                if entries.len() == limit {
                    return Ok((entries, true));
                }
                entries.push(UserEntry {
                    id: id.to_string(),
                    name: record.name,
                });
            }
            if exhausted {
                return Ok((entries, false));
            }
        }
    }

    /// A session of `user` registered: announce them online to the users they share a group
    /// with, unless they already were (a reconnect within [`OFFLINE_AFTER`]).
    pub fn session_opened(self: &Arc<Self>, user: &UserId) {
        if self.presence.announce_online(user) {
            let registry = Arc::clone(self);
            let user = user.clone();
            actix::spawn(async move { registry.announce(&user, true) });
        }
    }

    /// A session of `user` closed: once [`OFFLINE_AFTER`] passed without a new one, announce
    /// them offline.
    pub fn session_closed(self: &Arc<Self>, user: &UserId) {
        if self.presence.is_online(user) {
            return;
        }
        let registry = Arc::clone(self);
        let user = user.clone();
        actix::spawn(async move {
            actix::clock::sleep(OFFLINE_AFTER).await;
            if registry.presence.announce_offline(&user) {
                registry.announce(&user, false);
            }
        });
    }

    /// Sends `presence {user, online}` once to every online session of every other member of
    /// the user's groups (groups above `--presence-max-members` excepted).
    fn announce(&self, user: &UserId, online: bool) {
        let mut recipients: HashSet<UserId> = HashSet::new();
        let groups = match self.store.user_groups(user) {
            Ok(groups) => groups,
            Err(e) => {
                log::warn!("presence of {user}: listing groups: {e}");
                return;
            }
        };
        for group in groups {
            match self.store.members(&group) {
                Ok(members) if members.len() <= self.config.presence_max_members => {
                    if members.iter().any(|(u, _)| u == user) {
                        recipients.extend(members.into_iter().map(|(u, _)| u));
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("presence of {user}: members of {group}: {e}"),
            }
        }
        recipients.remove(user);
        let text: FrameText = FrameText::from(
            crate::protocol::ServerFrame::Presence {
                user: user.to_string(),
                online,
            }
            .to_text(),
        );
        let mut n_sent = 0;
        for recipient in &recipients {
            for session in self.presence.sessions_of(recipient) {
                // A full session misses it (it is behind; `members` tells it again).
                if session.offer("presence", &text).is_ok() {
                    n_sent += 1;
                }
            }
        }
        log::debug!(
            "{user} is {}: told {n_sent} sessions",
            if online { "online" } else { "offline" }
        );
    }

    /// Members as a `members` reply shows them, with their names, and who is online (nobody in
    /// groups above `--presence-max-members`).
    pub fn member_entries(
        &self,
        members: &[(UserId, MemberView)],
    ) -> Result<Vec<MemberEntry>, StoreError> {
        let presence = members.len() <= self.config.presence_max_members;
        members
            .iter()
            .map(|(user, view)| {
                Ok(MemberEntry {
                    user: user.to_string(),
                    name: self.display_name(user)?,
                    role: view.role.into(),
                    joined_seq: view.record.joined_seq,
                    online: presence && self.presence.is_online(user),
                })
            })
            .collect()
    }

    /// A user's name (their id when the record is missing).
    pub fn display_name(&self, user: &UserId) -> Result<String, StoreError> {
        Ok(self
            .store
            .user(user)?
            .map_or_else(|| user.to_string(), |r| r.name))
    }

    /// Deletes a group for good: its members hear `left` (`deleted`), and its id is never
    /// handed out again. Answers once durable.
    pub async fn delete_group(&self, id: &GroupId) -> Result<(), GroupError> {
        let addr = self
            .group(id)?
            .ok_or_else(|| GroupError::Storage(format!("group {id} vanished")))?;
        let (reply, answer) = reply_channel();
        addr.send(DeleteGroup { reply }).await?;
        answer.wait().await?;
        // The actor stops by itself; the next lookup finds no record.
        lock(&self.groups).remove(id);
        Ok(())
    }

    /// Makes sure a user record exists (name = id when new): a user with a valid token, on
    /// their first connect. Not flushed by itself: a user created so is created again on
    /// next use if a crash loses it.
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

    /// Creates a group with its first members and the default settings, answering once
    /// durable. `Ok(None)` when the id is taken.
    pub async fn create_group(
        &self,
        id: &GroupId,
        name: &str,
        kind: GroupKindRecord,
        members: &[UserId],
    ) -> Result<Option<Addr<GroupActor>>, GroupError> {
        let settings = GroupSettingsRecord::default();
        self.create_group_with(id, name, kind, members, settings, None)
            .await
    }

    /// [`Registry::create_group`] with the given settings (stored before the group's actor
    /// first starts, so it never runs with others) and `owner` (one of `members`) as its
    /// owner. The members must exist ([`Registry::check_users`]).
    pub async fn create_group_with(
        &self,
        id: &GroupId,
        name: &str,
        kind: GroupKindRecord,
        members: &[UserId],
        settings: GroupSettingsRecord,
        owner: Option<&UserId>,
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
        if settings != GroupSettingsRecord::default() {
            self.store.put_group_settings(id, &settings)?;
        }
        // The group record is durable before it is answered, even with no members.
        self.flush().await?;
        log::info!("group {id} created with {} members", members.len());
        let addr = self
            .group(id)?
            .ok_or_else(|| GroupError::Storage(format!("group {id} vanished")))?;
        // Every add is queued before any answer is awaited, so one flush covers them all (not
        // one flush per member).
        let mut answers = Vec::with_capacity(members.len());
        for user in members {
            let role = if Some(user) == owner {
                RoleRecord::Owner
            } else {
                RoleRecord::Member
            };
            let (reply, answer) = reply_channel();
            addr.send(AddMember {
                user: user.clone(),
                role,
                by: By::Admin,
                reply,
            })
            .await?;
            answers.push(answer);
        }
        for answer in answers {
            answer.wait().await?;
        }
        Ok(Some(addr))
    }

    /// The direct conversation of two users, created on first use. The other user must exist
    /// and be active.
    pub async fn open_direct(&self, me: &UserId, other: &UserId) -> Result<GroupId, GroupError> {
        self.check_users(std::slice::from_ref(other))?;
        let id = GroupId::direct(me, other);
        if let Some(addr) = self.group(&id)? {
            // Both stay members of a direct conversation; re-adding is a no-op.
            add_member(&addr, me.clone(), By::Admin).await?;
            add_member(&addr, other.clone(), By::Admin).await?;
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
                add_member(&addr, me.clone(), By::Admin).await?;
                add_member(&addr, other.clone(), By::Admin).await?;
            }
        }
        Ok(id)
    }

    /// Whether `user` shares their reads (`settings {}`).
    pub fn share_reads(&self, user: &UserId) -> Result<bool, GroupError> {
        Ok(self
            .store
            .user_settings(user)?
            .unwrap_or_default()
            .share_reads)
    }

    /// Changes whether `user` shares their reads, once durable, and tells each of their groups
    /// (loading it if needed, so none misses the change); returns the new setting.
    pub async fn set_share_reads(
        &self,
        user: &UserId,
        share_reads: bool,
    ) -> Result<bool, GroupError> {
        let settings = UserSettingsRecord { share_reads };
        self.store.put_user_settings(user, &settings)?;
        self.flush().await?;
        for id in self.store.user_groups(user)? {
            if let Some(addr) = self.group(&id)? {
                addr.send(SetShareReads {
                    user: user.clone(),
                    share_reads,
                })
                .await?;
            }
        }
        log::info!("user {user}: share_reads {share_reads}");
        Ok(share_reads)
    }

    /// Starts the groups whose scheduled reminders must fire without anyone opening them.
    pub fn start_scheduled_groups(&self) -> Result<usize, StoreError> {
        let groups = self.store.scheduled_groups()?;
        for id in &groups {
            self.group(id)?;
        }
        Ok(groups.len())
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
        let addr = lock(&slot).hand_out();
        addr.filter(|a| a.connected())
    }
}

/// The registry's side of passivation for the actor in `slot`: under the slot's lock, forget
/// the actor if it is still the one running and nobody was handed its address just now.
fn retire_from(slot: Weak<Mutex<Slot>>, idle: Option<Duration>) -> Retire {
    // Never longer than the idle time itself (tests run with idle times below a second).
    let grace = idle.map_or(HANDED_OUT_GRACE, |idle| idle.min(HANDED_OUT_GRACE));
    Arc::new(move |me: &Addr<GroupActor>| {
        let Some(slot) = slot.upgrade() else {
            return true;
        };
        let mut slot = lock(&slot);
        if slot.running.as_ref() != Some(me) {
            return false;
        }
        if slot.handed_out.is_some_and(|at| at.elapsed() < grace) {
            return false;
        }
        slot.running = None;
        true
    })
}

/// Adds a member (as `member`) through its group actor, waiting until it is durable.
pub async fn add_member(
    addr: &Addr<GroupActor>,
    user: UserId,
    by: By,
) -> Result<MemberRecord, GroupError> {
    let (reply, answer) = reply_channel();
    addr.send(AddMember {
        user,
        role: RoleRecord::Member,
        by,
        reply,
    })
    .await?;
    answer.wait().await
}
