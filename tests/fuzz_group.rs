//! Fuzzing the group actor: random sequences of client operations against the REAL
//! `GroupActor`, reached through the real `Registry` with a real sled store and the real
//! group-commit thread, compared after every operation with a small model of the protocol
//! (docs/PROTOCOL.md §1, §3.3, §3.6, §4).
//!
//! In-process rather than over WebSocket so that a case costs milliseconds and hundreds of
//! sequences run in `cargo test`; the wire layer has its own suites. Online sessions are played by
//! recorder actors registered in the registry like real sessions, so pushes are checked too.
//!
//! Operations: bursts of sends (fresh and repeated `client_id`s, several in one flush), `ack` and
//! `read` with seqs 0, in range, `last_seq + 1` and `u64::MAX`, member add/remove, `sync` and
//! `history` pages (as a member, a non-member and the admin), `receipts` (`mine` and `seqs`),
//! `readers`, `edit` and `delete` in bursts (by the sender, by another member: `not_allowed`, by
//! the group's admin `dan` and the server's admin; of unknown, not yet durable and deleted seqs;
//! repeated, and an edit to the body the message has), a welcome-style attach, and a restart of the group (a graceful stop: a new actor
//! system, registry and committer over the same store; the actor rebuilds its state from the
//! store).
//!
//! Checked after every operation: the answer (seq, `duplicate`, ts of the original, page, counts,
//! lists) or the exact error code equals the model's (pages: an edited message has its latest
//! body and an `edited_ts` that every push and page agree on, a deleted one an empty body and
//! `deleted`; unread counts and `receipts` leave deleted messages out, `readers` of one is
//! `invalid_seq`); the group's `last_seq` and every member's
//! `joined_seq`/`delivered`/`read` equal the model (which keeps cursors as max-registers);
//! `joined_seq <= read <= delivered <= last_seq`. At the end of each run of the actor: every
//! stored message (seqs gapless from 1, sender, `client_id`, body, ts) and member record as read
//! back from the store; each member's pushes (`msg` in seq order for exactly the messages sent
//! while a member, `left`, `joined`, `read_sync`, `msg_edited`/`msg_deleted` once per effective
//! change to those online at the change) in order; every `msg`, `msg_edited` and `msg_deleted`
//! arrived after a flush covered its write (the store is wrapped to tell); every `receipt` push
//! consistent (`read <= delivered <= recipients`, only the sender's own messages, none for a
//! seq after its `msg_deleted`).
//!
//! `PROPTEST_CASES=500 cargo test --test fuzz_group` runs longer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use rollcall::commit::Committer;
use rollcall::config::{Config, Durability};
use rollcall::group::{
    reply_channel, AddMember, AdvanceCursor, Answer as Waiting, AttachSession, By, Cursor,
    DeleteMessage, DescribeGroup, EditMessage, FetchMessages, GroupError, ListReaders,
    ListReceipts, Page, PostMessage, Posted, ReceiptQuery, RemoveMember,
};
use rollcall::ids::{GroupId, Seq, UserId};
use rollcall::metrics::Metrics;
use rollcall::presence::{Backlog, Outbound, SessionHandle};
use rollcall::protocol::{
    page_limit, ErrorCode, GroupSummary, Readers, ReceiptItem, Role, ServerFrame,
};
use rollcall::registry::Registry;
use rollcall::store::{
    AccountRecord, Direction, GroupRecord, GroupSettingsRecord, MemberFlagsRecord, MemberRecord,
    MessageRecord, Note, ReminderRecord, RetentionRecord, RoleRecord, ScheduleRecord, SentRecord,
    SledStore, Snapshot, Store, StoreError, UserRecord, UserSettingsRecord,
};

/// The users; sorted, so an index order is the id order.
const USERS: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];
/// Members at the start (added as the first operations).
const FIRST_MEMBERS: [usize; 3] = [0, 1, 2];
/// The one user added with the role `admin` (whenever added): may delete others' messages.
const GROUP_ADMIN: usize = 3;
const GROUP: &str = "g";

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn uid(user: usize) -> UserId {
    UserId::parse(USERS[user]).expect("valid user id")
}

fn gid() -> GroupId {
    GroupId::parse(GROUP).expect("valid group id")
}

/// A seq relative to the group's `last_seq` at the time the operation runs.
#[derive(Debug, Clone, Copy)]
enum SeqPick {
    Zero,
    Last,
    /// `last_seq + 1`: not a message yet.
    Next,
    Huge,
    /// Somewhere in `1..=last_seq` (0 when there is no message).
    In(u8),
}

impl SeqPick {
    fn at(self, last: u64) -> u64 {
        match self {
            SeqPick::Zero => 0,
            SeqPick::Last => last,
            SeqPick::Next => last + 1,
            SeqPick::Huge => u64::MAX,
            SeqPick::In(k) if last == 0 => u64::from(k) % 2,
            SeqPick::In(k) => 1 + (last - 1) * u64::from(k) / 255,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Sends and membership changes, all queued before any answer arrives (so several share a
    /// flush, and membership changes land between a message's write and its push).
    Burst(Vec<Item>),
    Ack(usize, SeqPick),
    Read(usize, SeqPick),
    /// `sync` (`None`: the admin).
    Sync(Option<usize>, SeqPick, usize),
    /// `history` (`None`: the admin), `before` absent or picked.
    History(Option<usize>, Option<SeqPick>, usize),
    ReceiptsMine(usize, SeqPick, usize),
    ReceiptsSeqs(usize, Vec<SeqPick>),
    /// `readers` (`None`: the admin).
    Readers(Option<usize>, SeqPick),
    /// What `welcome` shows the user for the group.
    Welcome(usize),
    Restart,
}

/// One command of a burst.
#[derive(Debug, Clone, Copy)]
enum Item {
    /// `(user, client_id number)`.
    Send(usize, u8),
    Add(usize),
    Remove(usize),
    /// `ack` (`false`) or `read` (`true`), the seq picked against `last_seq` before the burst.
    Cursor(usize, bool, SeqPick),
    /// `edit` by the user, to a fresh body (`false`) or to the message's body now (`true`).
    Edit(usize, Target, bool),
    /// `delete` by a user (`None`: the server's admin, `By::Admin`).
    Delete(Option<usize>, Target),
}

/// The message an edit or delete names, resolved against `last_seq` before the burst.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// One of the acting user's own messages (deleted ones included); any seq if none.
    Own(u8),
    Any(SeqPick),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => any::<u8>().prop_map(Target::Own),
        1 => seq_pick().prop_map(Target::Any),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (0..USERS.len(), 0u8..4).prop_map(|(u, c)| Item::Send(u, c)),
        1 => (0..USERS.len()).prop_map(Item::Add),
        1 => (0..USERS.len()).prop_map(Item::Remove),
        2 => (0..USERS.len(), any::<bool>(), seq_pick()).prop_map(|(u, r, s)| Item::Cursor(u, r, s)),
        2 => (0..USERS.len(), target(), proptest::bool::weighted(0.2))
            .prop_map(|(u, t, same)| Item::Edit(u, t, same)),
        1 => (proptest::option::weighted(0.85, 0..USERS.len()), target())
            .prop_map(|(u, t)| Item::Delete(u, t)),
    ]
}

fn seq_pick() -> impl Strategy<Value = SeqPick> {
    prop_oneof![
        1 => Just(SeqPick::Zero),
        2 => Just(SeqPick::Last),
        1 => Just(SeqPick::Next),
        1 => Just(SeqPick::Huge),
        4 => any::<u8>().prop_map(SeqPick::In),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS.len();
    let maybe_user = proptest::option::weighted(0.8, 0..USERS.len());
    let limit = 0usize..6;
    prop_oneof![
        16 => proptest::collection::vec(item(), 1..6).prop_map(Op::Burst),
        5 => (user.clone(), seq_pick()).prop_map(|(u, s)| Op::Ack(u, s)),
        5 => (user.clone(), seq_pick()).prop_map(|(u, s)| Op::Read(u, s)),
        3 => (maybe_user.clone(), seq_pick(), limit.clone())
            .prop_map(|(u, s, l)| Op::Sync(u, s, l)),
        2 => (maybe_user.clone(), proptest::option::of(seq_pick()), limit.clone())
            .prop_map(|(u, s, l)| Op::History(u, s, l)),
        2 => (user.clone(), seq_pick(), limit).prop_map(|(u, s, l)| Op::ReceiptsMine(u, s, l)),
        2 => (user.clone(), proptest::collection::vec(seq_pick(), 0..4))
            .prop_map(|(u, s)| Op::ReceiptsSeqs(u, s)),
        2 => (maybe_user, seq_pick()).prop_map(|(u, s)| Op::Readers(u, s)),
        2 => user.prop_map(Op::Welcome),
        1 => Just(Op::Restart),
    ]
}

/// A stored message as the model knows it.
#[derive(Debug, Clone)]
struct ModelMessage {
    from: usize,
    client_id: String,
    /// The latest body; empty once deleted.
    body: String,
    /// The body as sent (what `msg` carried).
    sent_body: String,
    ts: u64,
    /// Edited at least once (to another body), and not deleted since.
    edited: bool,
    deleted: bool,
}

/// A push the model expects a member's session to get, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Push {
    Msg(u64),
    Left,
    /// `joined` with this `last_seq` (the join point).
    Joined(u64),
    ReadSync(u64),
    /// `msg_edited` with the new body.
    Edited(u64, String),
    Deleted(u64),
}

/// Work the actor does once the flush covering a burst's writes is back, in order.
#[derive(Debug, Clone)]
enum Release {
    /// Push `msg` to every attached session.
    Msg(u64),
    /// A member added with this join point: attach their session and send `joined`, unless that
    /// membership is over (removed, or removed and added again) by then.
    Attach(usize, u64),
    /// `msg_edited` or `msg_deleted` to the users whose sessions were attached at the change,
    /// if they still are.
    Notify(Push, Vec<usize>),
}

/// The protocol, naively: every count is a scan.
struct Model {
    dedup_window: u64,
    messages: Vec<ModelMessage>,
    members: BTreeMap<usize, MemberRecord>,
    /// `(sender, client_id)` → the seq it was last stored under.
    resend: HashMap<(usize, String), u64>,
    /// Pushes expected by each user's session during the current run of the actor.
    pushes: Vec<Vec<Push>>,
    /// Whether each user's session receives the group's pushes.
    attached: Vec<bool>,
    /// What the current burst does after its flush.
    release: Vec<Release>,
    /// Makes every body unique, so a resend with another body is told apart from the original.
    bodies: u64,
    /// `(seq, body)` of an edit → its `edited_ts`, once a push or a page showed it.
    edited_ts: HashMap<(u64, String), u64>,
}

impl Model {
    fn last(&self) -> u64 {
        u64::try_from(self.messages.len()).expect("few messages")
    }

    fn message(&self, seq: u64) -> &ModelMessage {
        &self.messages[usize::try_from(seq - 1).expect("small seq")]
    }

    fn message_mut(&mut self, seq: u64) -> &mut ModelMessage {
        &mut self.messages[usize::try_from(seq - 1).expect("small seq")]
    }

    /// The users whose sessions get the group's pushes now.
    fn online(&self) -> Vec<usize> {
        (0..USERS.len()).filter(|&u| self.attached[u]).collect()
    }

    /// Records an `edited_ts` seen for the edit that set `body`; all sightings must agree.
    fn saw_edit(&mut self, seq: u64, body: &str, edited_ts: u64) -> Result<(), TestCaseError> {
        let ts = self.message(seq).ts;
        prop_assert!(
            edited_ts >= ts,
            "message {} edited at {} before it was sent at {}",
            seq,
            edited_ts,
            ts
        );
        let known = *self
            .edited_ts
            .entry((seq, body.to_string()))
            .or_insert(edited_ts);
        prop_assert_eq!(known, edited_ts, "edited_ts of {} ({})", seq, body);
        Ok(())
    }

    fn member(&self, user: usize) -> Result<MemberRecord, ErrorCode> {
        self.members.get(&user).copied().ok_or(ErrorCode::NotMember)
    }

    fn check_seq(&self, seq: u64) -> Result<(), ErrorCode> {
        if seq == 0 || seq > self.last() {
            Err(ErrorCode::InvalidSeq)
        } else {
            Ok(())
        }
    }

    /// The seq an edit or delete by `user` (`None`: the admin) names; `last` is `last_seq`
    /// before the burst.
    fn resolve(&self, user: Option<usize>, target: Target, last: u64) -> u64 {
        match (user, target) {
            (Some(user), Target::Own(k)) => {
                let own: Vec<u64> = (1..=last)
                    .filter(|&s| self.message(s).from == user)
                    .collect();
                match own.len() {
                    0 => SeqPick::In(k).at(last),
                    n => own[usize::from(k) % n],
                }
            }
            (None, Target::Own(k)) => SeqPick::In(k).at(last),
            (_, Target::Any(pick)) => pick.at(last),
        }
    }

    /// Fails unless `seq` names a message that is not deleted.
    fn check_live_seq(&self, seq: u64) -> Result<(), ErrorCode> {
        self.check_seq(seq)?;
        if self.message(seq).deleted {
            return Err(ErrorCode::InvalidSeq);
        }
        Ok(())
    }

    /// PROTOCOL.md §3.6: only the sender edits a durable, live message; the same body again
    /// changes and pushes nothing.
    fn edit(&mut self, user: usize, seq: u64, body: &str, durable: u64) -> Result<(), ErrorCode> {
        self.member(user)?;
        if seq == 0 || seq > durable || self.message(seq).deleted {
            return Err(ErrorCode::InvalidSeq);
        }
        if self.message(seq).from != user {
            return Err(ErrorCode::NotAllowed);
        }
        if self.message(seq).body == body {
            return Ok(());
        }
        let online = self.online();
        let m = self.message_mut(seq);
        m.body = body.to_string();
        m.edited = true;
        let push = Push::Edited(seq, body.to_string());
        self.release.push(Release::Notify(push, online));
        Ok(())
    }

    /// PROTOCOL.md §3.6: the sender, the group's admins and the server's admin (`by: None`)
    /// delete; a delete of a deleted message answers the same and pushes nothing.
    fn delete(&mut self, by: Option<usize>, seq: u64, durable: u64) -> Result<(), ErrorCode> {
        if let Some(user) = by {
            self.member(user)?;
        }
        if seq == 0 || seq > durable {
            return Err(ErrorCode::InvalidSeq);
        }
        if self.message(seq).deleted {
            return Ok(());
        }
        if let Some(user) = by {
            if self.message(seq).from != user && user != GROUP_ADMIN {
                return Err(ErrorCode::NotAllowed);
            }
        }
        let online = self.online();
        let m = self.message_mut(seq);
        m.body.clear();
        m.deleted = true;
        m.edited = false;
        self.release
            .push(Release::Notify(Push::Deleted(seq), online));
        Ok(())
    }

    /// A send: `(seq, duplicate)`; `ts` is filled in from the actor's answer for a new message.
    fn send(&mut self, user: usize, client_id: &str, body: &str) -> Result<(u64, bool), ErrorCode> {
        self.member(user)?;
        let key = (user, client_id.to_string());
        let last = self.last();
        if let Some(&seq) = self.resend.get(&key) {
            if seq + self.dedup_window > last {
                return Ok((seq, true));
            }
        }
        self.messages.push(ModelMessage {
            from: user,
            client_id: client_id.to_string(),
            body: body.to_string(),
            sent_body: body.to_string(),
            ts: 0,
            edited: false,
            deleted: false,
        });
        let seq = self.last();
        self.resend.insert(key, seq);
        self.release.push(Release::Msg(seq));
        Ok((seq, false))
    }

    /// A cursor move; `durable` is the last seq a flush covered (the visible `last_seq`).
    fn advance(
        &mut self,
        user: usize,
        cursor: Cursor,
        seq: u64,
        durable: u64,
    ) -> Result<(), ErrorCode> {
        let old = self.member(user)?;
        if seq > durable {
            return Err(ErrorCode::InvalidSeq);
        }
        let mut new = old;
        match cursor {
            Cursor::Delivered => new.delivered = new.delivered.max(seq),
            Cursor::Read => {
                new.read = new.read.max(seq);
                new.delivered = new.delivered.max(new.read);
            }
        }
        if new.read > old.read && self.attached[user] {
            self.pushes[user].push(Push::ReadSync(new.read));
        }
        self.members.insert(user, new);
        Ok(())
    }

    fn add(&mut self, user: usize) -> MemberRecord {
        if let Some(existing) = self.members.get(&user) {
            return *existing;
        }
        let last = self.last();
        let record = MemberRecord {
            joined_seq: last,
            delivered: last,
            read: last,
        };
        self.members.insert(user, record);
        self.release.push(Release::Attach(user, last));
        record
    }

    fn remove(&mut self, user: usize) -> Result<(), ErrorCode> {
        self.member(user)?;
        self.members.remove(&user);
        // Pushes stop at once; an attached session is told.
        if std::mem::take(&mut self.attached[user]) {
            self.pushes[user].push(Push::Left);
        }
        Ok(())
    }

    /// PROTOCOL.md §3.3: pushes leave in seq order to the members' sessions; a member added
    /// while online gets `joined`, then exactly the messages after their join point.
    fn release_all(&mut self) {
        for release in std::mem::take(&mut self.release) {
            match release {
                Release::Msg(seq) => {
                    for user in 0..USERS.len() {
                        if self.attached[user] {
                            self.pushes[user].push(Push::Msg(seq));
                        }
                    }
                }
                Release::Attach(user, joined_seq) => {
                    let current = self.members.get(&user).map(|m| m.joined_seq);
                    if current == Some(joined_seq) && !self.attached[user] {
                        self.attached[user] = true;
                        self.pushes[user].push(Push::Joined(joined_seq));
                    }
                }
                Release::Notify(push, users) => {
                    for user in users {
                        if self.attached[user] {
                            self.pushes[user].push(push.clone());
                        }
                    }
                }
            }
        }
    }

    /// `(seqs, more)` of a page; `user: None` is the admin.
    fn page(&self, user: Option<usize>, page: Page) -> Result<(Vec<u64>, bool), ErrorCode> {
        if let Some(user) = user {
            self.member(user)?;
        }
        let last = self.last();
        Ok(match page {
            Page::After { after, limit } => {
                let seqs: Vec<u64> = (after.saturating_add(1)..=last).take(limit).collect();
                let more = seqs.last().is_some_and(|&s| s < last);
                (seqs, more)
            }
            Page::Before { before, limit } => {
                let below = before.unwrap_or(u64::MAX).min(last + 1);
                let all: Vec<u64> = (1..below).collect();
                let seqs = all[all.len().saturating_sub(limit)..].to_vec();
                let more = seqs.first().is_some_and(|&s| s > 1);
                (seqs, more)
            }
        })
    }

    /// PROTOCOL.md §4: recipients are the current members that joined before the message,
    /// minus its sender.
    fn recipients(&self, seq: u64) -> Vec<(usize, MemberRecord)> {
        let sender = self.message(seq).from;
        self.members
            .iter()
            .filter(|(&u, m)| u != sender && m.joined_seq < seq)
            .map(|(&u, &m)| (u, m))
            .collect()
    }

    fn counts(&self, seq: u64) -> ReceiptItem {
        let recipients = self.recipients(seq);
        let count = |f: &dyn Fn(&MemberRecord) -> bool| {
            u64::try_from(recipients.iter().filter(|(_, m)| f(m)).count()).expect("few")
        };
        ReceiptItem {
            seq,
            recipients: count(&|_| true),
            delivered: count(&|m| m.delivered >= seq),
            read: count(&|m| m.read >= seq),
        }
    }

    fn receipts(
        &self,
        user: usize,
        query: &ReceiptQuery,
    ) -> Result<(Vec<ReceiptItem>, bool), ErrorCode> {
        self.member(user)?;
        match query {
            ReceiptQuery::Mine { after, limit } => {
                let own: Vec<u64> = (after.saturating_add(1)..=self.last())
                    .filter(|&s| self.message(s).from == user && !self.message(s).deleted)
                    .collect();
                let items = own.iter().take(*limit).map(|&s| self.counts(s)).collect();
                Ok((items, own.len() > *limit))
            }
            ReceiptQuery::Seqs(seqs) => {
                let mut items = Vec::new();
                for &seq in seqs {
                    self.check_seq(seq)?;
                    // A deleted message has no receipts: left out.
                    if !self.message(seq).deleted {
                        items.push(self.counts(seq));
                    }
                }
                Ok((items, false))
            }
        }
    }

    /// `(read, delivered, unread)` user lists of one message.
    fn readers(&self, user: Option<usize>, seq: u64) -> Result<[Vec<String>; 3], ErrorCode> {
        if let Some(user) = user {
            self.member(user)?;
        }
        self.check_live_seq(seq)?;
        let mut lists: [Vec<String>; 3] = Default::default();
        for (u, m) in self.recipients(seq) {
            let at = if m.read >= seq {
                0
            } else if m.delivered >= seq {
                1
            } else {
                2
            };
            lists[at].push(USERS[u].to_string());
        }
        Ok(lists)
    }

    fn summary(&self, user: usize) -> Option<GroupSummary> {
        let m = self.members.get(&user)?;
        let head = self.last();
        let from = m.read.max(m.joined_seq).min(head);
        let unread = ((from + 1)..=head)
            .filter(|&s| self.message(s).from != user && !self.message(s).deleted)
            .count();
        Some(GroupSummary {
            group: GROUP.into(),
            name: "G".into(),
            kind: rollcall::protocol::GroupKind::Group,
            last_seq: head,
            delivered: m.delivered,
            read: m.read,
            unread: u64::try_from(unread).expect("few"),
            receipts: Default::default(),
            marked_unread: false,
            role: if user == GROUP_ADMIN {
                Role::Admin
            } else {
                Role::Member
            },
            first_seq: 1,
            last_ts: 0,
        })
    }
}

/// Tells when a message record (a seq with a body) became durable: every `put_message` is
/// numbered, and a successful flush covers the writes numbered before it began. Pushes of
/// messages, edits and deletes are checked against it as the recorder gets them ("persist,
/// then ack, then push").
#[derive(Default)]
struct FlushProbe {
    writes: AtomicU64,
    durable: AtomicU64,
    /// `(seq, body)` → the number of the first write of that record (bodies are unique per
    /// effective write; a delete writes the empty body, once).
    numbered: Mutex<HashMap<(u64, String), u64>>,
}

impl FlushProbe {
    fn is_durable(&self, seq: u64, body: &str) -> bool {
        let numbered = self.numbered.lock().expect("numbered");
        numbered
            .get(&(seq, body.to_string()))
            .is_some_and(|&n| n <= self.durable.load(Ordering::SeqCst))
    }
}

/// The real sled store, watched by a [`FlushProbe`]; everything else is passed through.
struct ProbedStore {
    inner: SledStore,
    probe: Arc<FlushProbe>,
    /// While set, reading one sender's index entries fails (a sender's first send after the
    /// start reads them for the resend map).
    fail_sent_entries: AtomicBool,
}

impl Store for ProbedStore {
    fn user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.inner.user(user)
    }
    fn create_user(&self, user: &UserId, record: &UserRecord) -> Result<bool, StoreError> {
        self.inner.create_user(user, record)
    }
    fn put_user(&self, user: &UserId, record: &UserRecord) -> Result<(), StoreError> {
        self.inner.put_user(user, record)
    }
    fn account(&self, user: &UserId) -> Result<Option<AccountRecord>, StoreError> {
        self.inner.account(user)
    }
    fn put_account(&self, user: &UserId, account: &AccountRecord) -> Result<(), StoreError> {
        self.inner.put_account(user, account)
    }
    fn users(
        &self,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, UserRecord)>, StoreError> {
        self.inner.users(after, limit)
    }
    fn group(&self, group: &GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.inner.group(group)
    }
    fn create_group(&self, group: &GroupId, record: &GroupRecord) -> Result<bool, StoreError> {
        self.inner.create_group(group, record)
    }
    fn groups(
        &self,
        after: Option<&GroupId>,
        limit: usize,
    ) -> Result<Vec<(GroupId, GroupRecord)>, StoreError> {
        self.inner.groups(after, limit)
    }
    fn delete_group(&self, group: &GroupId) -> Result<(), StoreError> {
        self.inner.delete_group(group)
    }
    fn put_group(&self, group: &GroupId, record: &GroupRecord) -> Result<(), StoreError> {
        self.inner.put_group(group, record)
    }
    fn group_settings(&self, group: &GroupId) -> Result<Option<GroupSettingsRecord>, StoreError> {
        self.inner.group_settings(group)
    }
    fn put_group_settings(
        &self,
        group: &GroupId,
        settings: &GroupSettingsRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_group_settings(group, settings)
    }
    fn user_settings(&self, user: &UserId) -> Result<Option<UserSettingsRecord>, StoreError> {
        self.inner.user_settings(user)
    }
    fn put_user_settings(
        &self,
        user: &UserId,
        settings: &UserSettingsRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_user_settings(user, settings)
    }
    fn member_flags(
        &self,
        group: &GroupId,
    ) -> Result<Vec<(UserId, MemberFlagsRecord)>, StoreError> {
        self.inner.member_flags(group)
    }
    fn put_member_flags(
        &self,
        group: &GroupId,
        user: &UserId,
        flags: &MemberFlagsRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_member_flags(group, user, flags)
    }
    fn member_roles(&self, group: &GroupId) -> Result<Vec<(UserId, RoleRecord)>, StoreError> {
        self.inner.member_roles(group)
    }
    fn put_member_role(
        &self,
        group: &GroupId,
        user: &UserId,
        role: RoleRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_member_role(group, user, role)
    }
    fn reminders(&self, group: &GroupId) -> Result<Vec<(Seq, UserId, ReminderRecord)>, StoreError> {
        self.inner.reminders(group)
    }
    fn put_reminder(
        &self,
        group: &GroupId,
        seq: Seq,
        user: &UserId,
        reminder: &ReminderRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_reminder(group, seq, user, reminder)
    }
    fn remove_reminder(&self, group: &GroupId, seq: Seq, user: &UserId) -> Result<(), StoreError> {
        self.inner.remove_reminder(group, seq, user)
    }
    fn schedules(&self, group: &GroupId) -> Result<Vec<(Seq, ScheduleRecord)>, StoreError> {
        self.inner.schedules(group)
    }
    fn put_schedule(
        &self,
        group: &GroupId,
        seq: Seq,
        schedule: &ScheduleRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_schedule(group, seq, schedule)
    }
    fn remove_schedule(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError> {
        self.inner.remove_schedule(group, seq)
    }
    fn scheduled_groups(&self) -> Result<Vec<GroupId>, StoreError> {
        self.inner.scheduled_groups()
    }
    fn members(&self, group: &GroupId) -> Result<Vec<(UserId, MemberRecord)>, StoreError> {
        self.inner.members(group)
    }
    fn add_member(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError> {
        self.inner.add_member(group, user, record)
    }
    fn put_cursors(
        &self,
        group: &GroupId,
        user: &UserId,
        record: &MemberRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_cursors(group, user, record)
    }
    fn remove_member(&self, group: &GroupId, user: &UserId) -> Result<(), StoreError> {
        self.inner.remove_member(group, user)
    }
    fn user_groups(&self, user: &UserId) -> Result<Vec<GroupId>, StoreError> {
        self.inner.user_groups(user)
    }
    fn put_message(
        &self,
        group: &GroupId,
        seq: Seq,
        record: &MessageRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_message(group, seq, record)?;
        // Numbered after the write: a flush that begins later covers it.
        let n = self.probe.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut numbered = self.probe.numbered.lock().expect("numbered");
        numbered.entry((seq.0, record.body.clone())).or_insert(n);
        Ok(())
    }
    fn scan_messages(
        &self,
        group: &GroupId,
        first: Seq,
        last: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq, MessageRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.inner
            .scan_messages(group, first, last, direction, visit)
    }
    fn message(&self, group: &GroupId, seq: Seq) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.message(group, seq)
    }
    fn put_note(
        &self,
        group: &GroupId,
        note: Note,
        seq: Seq,
        value: u64,
    ) -> Result<(), StoreError> {
        self.inner.put_note(group, note, seq, value)
    }
    fn notes(
        &self,
        group: &GroupId,
        note: Note,
        first: Seq,
        last: Seq,
    ) -> Result<Vec<(Seq, u64)>, StoreError> {
        self.inner.notes(group, note, first, last)
    }
    fn last_seq(&self, group: &GroupId) -> Result<Seq, StoreError> {
        self.inner.last_seq(group)
    }
    fn format(&self) -> Result<Option<u32>, StoreError> {
        self.inner.format()
    }
    fn scan_user_groups(
        &self,
        visit: &mut dyn FnMut(UserId, GroupId) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_user_groups(visit)
    }
    fn begin_snapshot(&self, dir: &Path) -> Result<Arc<dyn Snapshot>, StoreError> {
        self.inner.begin_snapshot(dir)
    }
    fn member(&self, group: &GroupId, user: &UserId) -> Result<Option<MemberRecord>, StoreError> {
        self.inner.member(group, user)
    }
    fn first_seq(&self, group: &GroupId) -> Result<Seq, StoreError> {
        self.inner.first_seq(group)
    }
    fn scan_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        direction: Direction,
        visit: &mut dyn FnMut(Seq) -> bool,
    ) -> Result<(), StoreError> {
        self.inner
            .scan_sent(group, sender, after, upto, direction, visit)
    }
    fn scan_sent_window(
        &self,
        group: &GroupId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(&UserId, Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_sent_window(group, after, upto, visit)
    }
    fn scan_sent_entries(
        &self,
        group: &GroupId,
        sender: &UserId,
        after: Seq,
        upto: Seq,
        visit: &mut dyn FnMut(Seq, Option<SentRecord>) -> bool,
    ) -> Result<(), StoreError> {
        if self.fail_sent_entries.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt(
                "injected: reading the sender index".into(),
            ));
        }
        self.inner
            .scan_sent_entries(group, sender, after, upto, visit)
    }
    fn index_sent(
        &self,
        group: &GroupId,
        sender: &UserId,
        seq: Seq,
        entry: Option<&SentRecord>,
    ) -> Result<(), StoreError> {
        self.inner.index_sent(group, sender, seq, entry)
    }
    fn group_retention(&self, group: &GroupId) -> Result<Option<RetentionRecord>, StoreError> {
        self.inner.group_retention(group)
    }
    fn put_group_retention(
        &self,
        group: &GroupId,
        retention: &RetentionRecord,
    ) -> Result<(), StoreError> {
        self.inner.put_group_retention(group, retention)
    }
    fn prune_message(&self, group: &GroupId, seq: Seq) -> Result<(), StoreError> {
        self.inner.prune_message(group, seq)
    }
    fn sent_indexed(&self, group: &GroupId) -> Result<bool, StoreError> {
        self.inner.sent_indexed(group)
    }
    fn mark_sent_indexed(&self, group: &GroupId) -> Result<(), StoreError> {
        self.inner.mark_sent_indexed(group)
    }
    fn flush(&self) -> Result<(), StoreError> {
        let covered = self.probe.writes.load(Ordering::SeqCst);
        self.inner.flush()?;
        self.probe.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
    fn claim_group(&self, group: &GroupId) -> Result<u64, StoreError> {
        self.inner.claim_group(group)
    }
    fn flush_claimed(&self, claims: &[(GroupId, u64)]) -> Result<Vec<GroupId>, StoreError> {
        let covered = self.probe.writes.load(Ordering::SeqCst);
        let fenced = self.inner.flush_claimed(claims)?;
        self.probe.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(fenced)
    }
    fn fenced(&self) -> Option<String> {
        self.inner.fenced()
    }
    fn writable(&self) -> Result<(), StoreError> {
        self.inner.writable()
    }
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }
}

/// One frame a session got: its kind, its text, and whether the message record it tells of
/// (`msg`, `msg_edited`, `msg_deleted`) was durable when it arrived (true for other kinds).
type Recorded = (String, String, bool);

/// Plays one online session: records every frame a group pushes to it.
struct Recorder {
    frames: Arc<Mutex<Vec<Recorded>>>,
    probe: Arc<FlushProbe>,
    backlog: Backlog,
}

/// A recorder's queue bound: large enough that no test ever fills it (a full session would be
/// evicted).
const RECORDER_QUEUE: usize = 1 << 16;

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(RECORDER_QUEUE);
    }
}

impl Handler<Outbound> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _ctx: &mut Context<Self>) {
        let recorded = match msg {
            Outbound::Frame { kind, text } => vec![self.record(kind, &text)],
            Outbound::Frames { kind, texts } => {
                texts.iter().map(|text| self.record(kind, text)).collect()
            }
            Outbound::Evict => vec![("evict".to_string(), String::new(), true)],
            Outbound::GoingAway => vec![("going_away".to_string(), String::new(), true)],
            Outbound::Restart => vec![("restart".to_string(), String::new(), true)],
            Outbound::Unauthorized(why) => {
                vec![("unauthorized".to_string(), why.to_string(), true)]
            }
        };
        self.frames.lock().expect("frames").extend(recorded);
    }
}

impl Recorder {
    /// One pushed frame, and whether what it shows was durable when it arrived.
    fn record(&self, kind: &str, text: &str) -> Recorded {
        self.backlog.written(1);
        let durable = match ServerFrame::parse(text) {
            Ok(ServerFrame::Msg(m)) => self.probe.is_durable(m.seq, &m.body),
            Ok(ServerFrame::MsgEdited { seq, body, .. }) => self.probe.is_durable(seq, &body),
            Ok(ServerFrame::MsgDeleted { seq, .. }) => self.probe.is_durable(seq, ""),
            _ => true,
        };
        (kind.to_string(), text.to_string(), durable)
    }
}

/// Answered after every frame queued before it was recorded.
#[derive(Message)]
#[rtype(result = "()")]
struct Barrier;

impl Handler<Barrier> for Recorder {
    type Result = ();

    fn handle(&mut self, _msg: Barrier, _ctx: &mut Context<Self>) {}
}

fn code(e: &GroupError) -> ErrorCode {
    e.code()
}

fn fail(what: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(what.into())
}

/// The pending answer to one burst item.
enum Answer {
    Send(String, String, Waiting<Posted>),
    Add(Waiting<MemberRecord>),
    Remove(Waiting<()>),
    /// The seq and body asked for.
    Edit(u64, String, Waiting<()>),
    Delete(u64, Waiting<()>),
    Cursor(
        Cursor,
        u64,
        actix::dev::Request<rollcall::group::GroupActor, AdvanceCursor>,
    ),
}

/// Compares one burst item's answer with the model, which applies the item.
/// `durable` is `last_seq` before the burst: its own messages are not durable before its end.
async fn check_answer(
    model: &mut Model,
    item: Item,
    answer: Answer,
    durable: u64,
) -> Result<(), TestCaseError> {
    match (item, answer) {
        (Item::Send(user, _), Answer::Send(client_id, body, answer)) => {
            let got = answer.wait().await;
            let expected = model.send(user, &client_id, &body);
            match (got, expected) {
                (Ok(posted), Ok((seq, duplicate))) => {
                    prop_assert_eq!(
                        (posted.seq, posted.duplicate),
                        (seq, duplicate),
                        "send {} by {}",
                        client_id,
                        USERS[user]
                    );
                    if duplicate {
                        prop_assert_eq!(
                            posted.ts,
                            model.message(seq).ts,
                            "a duplicate answers the original ts"
                        );
                    } else {
                        let at = usize::try_from(seq - 1).expect("small");
                        model.messages[at].ts = posted.ts;
                    }
                }
                (Err(e), Err(expected)) => prop_assert_eq!(code(&e), expected),
                (got, expected) => {
                    return Err(fail(format!(
                        "send {client_id} by {}: got {got:?}, model {expected:?}",
                        USERS[user]
                    )))
                }
            }
        }
        (Item::Add(user), Answer::Add(answer)) => {
            let got = answer
                .wait()
                .await
                .map_err(|e| fail(format!("add {}: {e:?}", USERS[user])))?;
            prop_assert_eq!(got, model.add(user), "add {}", USERS[user]);
        }
        (Item::Remove(user), Answer::Remove(answer)) => {
            let got = answer.wait().await.map_err(|e| code(&e));
            prop_assert_eq!(got, model.remove(user), "remove {}", USERS[user]);
        }
        (Item::Edit(user, ..), Answer::Edit(seq, body, answer)) => {
            let got = answer.wait().await.map_err(|e| code(&e));
            let expected = model.edit(user, seq, &body, durable);
            prop_assert_eq!(got, expected, "edit {} by {}", seq, USERS[user]);
        }
        (Item::Delete(by, _), Answer::Delete(seq, answer)) => {
            let got = answer.wait().await.map_err(|e| code(&e));
            let expected = model.delete(by, seq, durable);
            let who = by.map_or("the admin", |u| USERS[u]);
            prop_assert_eq!(got, expected, "delete {} by {}", seq, who);
        }
        (Item::Cursor(user, ..), Answer::Cursor(cursor, seq, request)) => {
            let got = request
                .await
                .map_err(|e| fail(format!("mailbox: {e}")))?
                .map_err(|e| code(&e));
            let expected = model.advance(user, cursor, seq, durable);
            prop_assert_eq!(got, expected, "{:?} {} by {}", cursor, seq, USERS[user]);
        }
        (item, _) => return Err(fail(format!("answer mixed up for {item:?}"))),
    }
    Ok(())
}

/// One run of the actor (between restarts): a new actor system, committer and registry over the
/// same store.
async fn run_actor(
    store: Arc<dyn Store>,
    probe: &Arc<FlushProbe>,
    data_dir: &Path,
    model: &mut Model,
    ops: &[Op],
    first_run: bool,
) -> Result<(), TestCaseError> {
    let metrics = Arc::new(Metrics::default());
    let committer = Committer::start(Arc::clone(&store), Arc::clone(&metrics));
    let mut config = Config::new(data_dir);
    // A short tick, so cursor writes and receipt pushes interleave with the operations.
    config.receipt_interval = Duration::from_millis(3);
    config.dedup_window = usize::try_from(model.dedup_window).expect("small window");
    let registry = Registry::new(
        Arc::clone(&store),
        committer,
        Arc::new(config),
        metrics,
        Vec::new(),
    );
    // Every user is online with one session, registered before the group actor starts (so a
    // restarted actor attaches its members' sessions itself, as after a real restart).
    let mut sessions = Vec::new();
    for user in 0..USERS.len() {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let backlog = Backlog::new(RECORDER_QUEUE);
        let addr = Recorder {
            frames: Arc::clone(&frames),
            probe: Arc::clone(probe),
            backlog: backlog.clone(),
        }
        .start();
        let handle = SessionHandle {
            id: registry.presence().next_session_id(),
            user: uid(user),
            outbox: addr.clone().recipient(),
            backlog,
        };
        registry.presence().register(handle.clone());
        sessions.push((addr, handle, frames));
    }
    for pushes in &mut model.pushes {
        pushes.clear();
    }
    // The actor attaches its members' registered sessions when it starts.
    for user in 0..USERS.len() {
        model.attached[user] = model.members.contains_key(&user);
    }
    if first_run {
        let created = registry
            .create_group(&gid(), "G", rollcall::store::GroupKindRecord::Group, &[])
            .await
            .map_err(|e| fail(format!("creating the group: {e:?}")))?;
        prop_assert!(created.is_some(), "the group existed already");
    }
    // A restarted actor starts from what the store holds, and that is the model.
    let addr = registry
        .group(&gid())
        .map_err(|e| fail(format!("loading the group: {e}")))?
        .ok_or_else(|| fail("the group vanished"))?;
    check_state(&addr, model).await?;

    for op in ops {
        let addr = registry
            .group(&gid())
            .map_err(|e| fail(format!("loading the group: {e}")))?
            .ok_or_else(|| fail("the group vanished"))?;
        let last = model.last();
        match op {
            Op::Restart => unreachable!("restarts split the runs"),
            Op::Burst(items) => {
                let mut answers = Vec::new();
                // Bodies the burst's edits ask for so far, by seq.
                let mut planned: HashMap<u64, String> = HashMap::new();
                for &item in items {
                    let answer = match item {
                        Item::Send(user, n) => {
                            model.bodies += 1;
                            let client_id = format!("c{n}");
                            let body = format!("{}-{client_id}-{}", USERS[user], model.bodies);
                            let (reply, answer) = reply_channel();
                            addr.do_send(PostMessage {
                                remind_after: None,
                                reply_to: None,
                                from: uid(user),
                                client_id: client_id.clone(),
                                body: body.clone(),
                                reply,
                            });
                            Answer::Send(client_id, body, answer)
                        }
                        Item::Add(user) => {
                            let (reply, answer) = reply_channel();
                            let role = if user == GROUP_ADMIN {
                                RoleRecord::Admin
                            } else {
                                RoleRecord::Member
                            };
                            addr.do_send(AddMember {
                                user: uid(user),
                                role,
                                by: By::Admin,
                                reply,
                            });
                            Answer::Add(answer)
                        }
                        Item::Remove(user) => {
                            let (reply, answer) = reply_channel();
                            addr.do_send(RemoveMember {
                                user: uid(user),
                                by: By::Admin,
                                reply,
                            });
                            Answer::Remove(answer)
                        }
                        Item::Cursor(user, read, pick) => {
                            let cursor = if read {
                                Cursor::Read
                            } else {
                                Cursor::Delivered
                            };
                            let seq = pick.at(last);
                            let request = addr.send(AdvanceCursor {
                                user: uid(user),
                                cursor,
                                seq,
                                session_id: None,
                            });
                            Answer::Cursor(cursor, seq, request)
                        }
                        Item::Edit(user, target, same) => {
                            let seq = model.resolve(Some(user), target, last);
                            // The same body: what the message has at this point of the burst.
                            let now = planned.get(&seq).cloned().or_else(|| {
                                (seq >= 1 && seq <= model.last())
                                    .then(|| model.message(seq).body.clone())
                            });
                            let body = match now {
                                Some(body) if same => body,
                                _ => {
                                    model.bodies += 1;
                                    format!("{}-edit-{}", USERS[user], model.bodies)
                                }
                            };
                            planned.insert(seq, body.clone());
                            let (reply, answer) = reply_channel();
                            addr.do_send(EditMessage {
                                user: uid(user),
                                seq,
                                body: body.clone(),
                                reply,
                            });
                            Answer::Edit(seq, body, answer)
                        }
                        Item::Delete(user, target) => {
                            let seq = model.resolve(user, target, last);
                            let (reply, answer) = reply_channel();
                            addr.do_send(DeleteMessage {
                                by: user.map_or(By::Admin, |u| By::User(uid(u))),
                                seq,
                                reply,
                            });
                            Answer::Delete(seq, answer)
                        }
                    };
                    answers.push((item, answer));
                }
                for (item, answer) in answers {
                    check_answer(model, item, answer, last).await?;
                }
                model.release_all();
            }
            Op::Ack(user, pick) | Op::Read(user, pick) => {
                let cursor = if matches!(op, Op::Ack(..)) {
                    Cursor::Delivered
                } else {
                    Cursor::Read
                };
                let seq = pick.at(last);
                let got = addr
                    .send(AdvanceCursor {
                        user: uid(*user),
                        cursor,
                        seq,
                        session_id: None,
                    })
                    .await
                    .map_err(|e| fail(format!("mailbox: {e}")))?;
                let expected = model.advance(*user, cursor, seq, last);
                prop_assert_eq!(got.map_err(|e| code(&e)), expected, "{:?} {}", cursor, seq);
            }
            Op::Sync(user, _, limit) | Op::History(user, _, limit) => {
                let limit = page_limit(Some(*limit));
                let page = match op {
                    Op::Sync(_, after, _) => Page::After {
                        after: after.at(last),
                        limit,
                    },
                    Op::History(_, before, _) => Page::Before {
                        before: before.map(|b| b.at(last)),
                        limit,
                    },
                    _ => unreachable!(),
                };
                let got = addr
                    .send(FetchMessages {
                        user: user.map(uid),
                        page,
                    })
                    .await
                    .map_err(|e| fail(format!("mailbox: {e}")))?;
                match (got, model.page(*user, page)) {
                    (Ok(got), Ok((seqs, more))) => {
                        let got_seqs: Vec<u64> = got.messages.iter().map(|m| m.seq).collect();
                        prop_assert_eq!(&got_seqs, &seqs, "{:?}", page);
                        prop_assert_eq!(got.more, more, "more of {:?}", page);
                        prop_assert_eq!(got.last_seq, last);
                        for m in &got.messages {
                            let want = model.message(m.seq).clone();
                            prop_assert_eq!(&m.from, USERS[want.from]);
                            prop_assert_eq!(&m.client_id, &want.client_id);
                            // The latest body; empty once deleted.
                            prop_assert_eq!(&m.body, &want.body, "body of {}", m.seq);
                            prop_assert_eq!(m.deleted, want.deleted, "deleted: {}", m.seq);
                            prop_assert_eq!(m.ts, want.ts);
                            prop_assert_eq!(m.group.as_str(), GROUP);
                            prop_assert_eq!(m.reply_to, None);
                            match m.edited_ts {
                                Some(edited_ts) if want.edited => {
                                    model.saw_edit(m.seq, &m.body, edited_ts)?
                                }
                                edited_ts => prop_assert!(
                                    !want.edited && edited_ts.is_none(),
                                    "edited_ts {:?} of {} (edited: {})",
                                    edited_ts,
                                    m.seq,
                                    want.edited
                                ),
                            }
                        }
                    }
                    (Err(e), Err(expected)) => prop_assert_eq!(code(&e), expected),
                    (got, expected) => {
                        return Err(fail(format!(
                            "{page:?}: got {:?}, model {expected:?}",
                            got.map(|p| p.messages.len())
                        )))
                    }
                }
            }
            Op::ReceiptsMine(..) | Op::ReceiptsSeqs(..) => {
                let (user, query) = match op {
                    Op::ReceiptsMine(user, after, limit) => (
                        *user,
                        ReceiptQuery::Mine {
                            after: after.at(last),
                            limit: page_limit(Some(*limit)),
                        },
                    ),
                    Op::ReceiptsSeqs(user, seqs) => (
                        *user,
                        ReceiptQuery::Seqs(seqs.iter().map(|s| s.at(last)).collect()),
                    ),
                    _ => unreachable!(),
                };
                let got = addr
                    .send(ListReceipts {
                        user: uid(user),
                        query: query.clone(),
                    })
                    .await
                    .map_err(|e| fail(format!("mailbox: {e}")))?;
                // Actor replies convert into the wire types clients see.
                let got = got
                    .map(|p| (p.items.into_iter().map(ReceiptItem::from).collect(), p.more))
                    .map_err(|e| code(&e));
                let expected = model.receipts(user, &query);
                prop_assert_eq!(&got, &expected, "receipts {:?} for {}", query, USERS[user]);
                if let Ok((items, _)) = &got {
                    for item in items {
                        prop_assert!(
                            item.read <= item.delivered && item.delivered <= item.recipients
                        );
                    }
                }
            }
            Op::Readers(user, pick) => {
                let seq = pick.at(last);
                let got = addr
                    .send(ListReaders {
                        user: user.map(uid),
                        seq,
                    })
                    .await
                    .map_err(|e| fail(format!("mailbox: {e}")))?;
                let got = got
                    .map(|r| {
                        let r = Readers::from(r);
                        assert_eq!((r.group.as_str(), r.seq), (GROUP, seq));
                        [r.read, r.delivered, r.unread]
                    })
                    .map_err(|e| code(&e));
                prop_assert_eq!(got, model.readers(*user, seq), "readers of {}", seq);
            }
            Op::Welcome(user) => {
                let got = addr
                    .send(AttachSession {
                        session: sessions[*user].1.clone(),
                    })
                    .await
                    .map_err(|e| fail(format!("mailbox: {e}")))?;
                // The model keeps no timestamps: `last_ts` is not compared.
                let got = got.map(|attached| GroupSummary {
                    last_ts: 0,
                    ..GroupSummary::from(attached.summary)
                });
                prop_assert_eq!(got, model.summary(*user), "welcome of {}", USERS[*user]);
                if model.members.contains_key(user) {
                    model.attached[*user] = true;
                }
            }
        }
        check_state(&addr, model).await?;
    }

    // A graceful stop, as the server's: write pending cursor moves, flush.
    registry.persist_cursors().await;
    store.flush().map_err(|e| fail(format!("flush: {e}")))?;
    check_store(store.as_ref(), model)?;
    for (user, (addr, _, frames)) in sessions.iter().enumerate() {
        addr.send(Barrier)
            .await
            .map_err(|e| fail(format!("recorder: {e}")))?;
        let frames = frames.lock().expect("frames").clone();
        check_pushes(user, &frames, model)?;
    }
    Ok(())
}

/// The actor's view of the group equals the model; cursors are ordered.
async fn check_state(
    addr: &Addr<rollcall::group::GroupActor>,
    model: &Model,
) -> Result<(), TestCaseError> {
    let view = addr
        .send(DescribeGroup)
        .await
        .map_err(|e| fail(format!("mailbox: {e}")))?;
    prop_assert_eq!(view.last_seq, model.last(), "last_seq");
    let members: Vec<(String, MemberRecord)> = view
        .members
        .iter()
        .map(|(u, m)| (u.to_string(), m.record))
        .collect();
    let expected: Vec<(String, MemberRecord)> = model
        .members
        .iter()
        .map(|(&u, &m)| (USERS[u].to_string(), m))
        .collect();
    prop_assert_eq!(&members, &expected, "members and cursors");
    for (user, m) in &members {
        prop_assert!(
            m.joined_seq <= m.read && m.read <= m.delivered && m.delivered <= view.last_seq,
            "cursors of {} out of order: {:?} (last_seq {})",
            user,
            m,
            view.last_seq
        );
    }
    Ok(())
}

/// What the store holds equals the model: the truth a restarted actor rebuilds from.
fn check_store(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    let group = gid();
    prop_assert_eq!(
        store.last_seq(&group).map_err(|e| fail(e.to_string()))?.0,
        model.last()
    );
    let mut stored = Vec::new();
    store
        .scan_messages(
            &group,
            rollcall::ids::Seq(1),
            rollcall::ids::Seq(u64::MAX),
            Direction::Ascending,
            &mut |seq, m| {
                stored.push((seq.0, m));
                true
            },
        )
        .map_err(|e| fail(e.to_string()))?;
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    let gapless: Vec<u64> = (1..=model.last()).collect();
    prop_assert_eq!(seqs, gapless, "stored seqs are gapless from 1");
    for (seq, m) in &stored {
        let want = model.message(*seq);
        prop_assert_eq!(&m.from, USERS[want.from]);
        prop_assert_eq!(&m.client_id, &want.client_id);
        prop_assert_eq!(&m.body, &want.body);
        prop_assert_eq!(m.ts, want.ts);
    }
    let members: Vec<(String, MemberRecord)> = store
        .members(&group)
        .map_err(|e| fail(e.to_string()))?
        .into_iter()
        .map(|(u, m)| (u.to_string(), m))
        .collect();
    let expected: Vec<(String, MemberRecord)> = model
        .members
        .iter()
        .map(|(&u, &m)| (USERS[u].to_string(), m))
        .collect();
    prop_assert_eq!(members, expected, "stored members after a graceful stop");
    for &user in model.members.keys() {
        let groups = store
            .user_groups(&uid(user))
            .map_err(|e| fail(e.to_string()))?;
        prop_assert!(
            groups.contains(&group),
            "{} lacks the index entry",
            USERS[user]
        );
    }
    Ok(())
}

/// One session's pushes during a run of the actor.
fn check_pushes(user: usize, frames: &[Recorded], model: &mut Model) -> Result<(), TestCaseError> {
    let mut got = Vec::new();
    // Seqs whose `msg_deleted` this session got: no `receipt` names them after that.
    let mut deleted = Vec::new();
    for (kind, text, durable) in frames {
        prop_assert!(kind != "evict", "{} was evicted", USERS[user]);
        prop_assert!(
            *durable,
            "{} got {} before it was durable",
            USERS[user],
            text
        );
        let frame = ServerFrame::parse(text).map_err(|e| fail(format!("{e}: {text}")))?;
        prop_assert_eq!(frame.kind(), kind.as_str());
        match frame {
            ServerFrame::Msg(m) => {
                let want = model.message(m.seq);
                prop_assert_eq!(&m.from, USERS[want.from]);
                prop_assert_eq!(&m.body, &want.sent_body);
                prop_assert_eq!(&m.client_id, &want.client_id);
                prop_assert_eq!(m.ts, want.ts);
                prop_assert_eq!((m.edited_ts, m.deleted), (None, false));
                got.push(Push::Msg(m.seq));
            }
            ServerFrame::MsgEdited {
                group,
                seq,
                body,
                edited_ts,
            } => {
                prop_assert_eq!(group, GROUP);
                prop_assert!(seq >= 1 && seq <= model.last(), "msg_edited {}", seq);
                model.saw_edit(seq, &body, edited_ts)?;
                got.push(Push::Edited(seq, body));
            }
            ServerFrame::MsgDeleted { group, seq } => {
                prop_assert_eq!(group, GROUP);
                deleted.push(seq);
                got.push(Push::Deleted(seq));
            }
            ServerFrame::Left { group, .. } => {
                prop_assert_eq!(group, GROUP);
                got.push(Push::Left);
            }
            ServerFrame::Joined { summary } => {
                prop_assert_eq!(&summary.group, GROUP);
                prop_assert_eq!(
                    (summary.delivered, summary.read, summary.unread),
                    (summary.last_seq, summary.last_seq, 0)
                );
                got.push(Push::Joined(summary.last_seq));
            }
            ServerFrame::ReadSync { group, seq, .. } => {
                prop_assert_eq!(group, GROUP);
                got.push(Push::ReadSync(seq));
            }
            ServerFrame::Receipt { group, items } => {
                // Pushed on a timer: only its consistency is checked.
                prop_assert_eq!(group, GROUP);
                for item in items {
                    prop_assert!(item.seq >= 1 && item.seq <= model.last(), "{:?}", item);
                    prop_assert!(
                        !deleted.contains(&item.seq),
                        "a receipt for {} after its msg_deleted: {:?}",
                        item.seq,
                        item
                    );
                    prop_assert_eq!(
                        model.message(item.seq).from,
                        user,
                        "not the sender's: {:?}",
                        item
                    );
                    prop_assert!(
                        item.read <= item.delivered
                            && item.delivered <= item.recipients
                            && item.recipients < u64::try_from(USERS.len()).expect("few"),
                        "{:?}",
                        item
                    );
                }
            }
            other => return Err(fail(format!("unexpected push {other:?}"))),
        }
    }
    prop_assert_eq!(&got, &model.pushes[user], "pushes to {}", USERS[user]);
    Ok(())
}

fn run_case(dedup_window: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let probe = Arc::new(FlushProbe::default());
    let store: Arc<dyn Store> = Arc::new(ProbedStore {
        inner: SledStore::open(&dir.path().join("db"), 8 << 20, Durability::Process)
            .map_err(|e| fail(e.to_string()))?,
        probe: Arc::clone(&probe),
        fail_sent_entries: AtomicBool::new(false),
    });
    let mut model = Model {
        dedup_window,
        messages: Vec::new(),
        members: BTreeMap::new(),
        resend: HashMap::new(),
        pushes: vec![Vec::new(); USERS.len()],
        attached: vec![false; USERS.len()],
        release: Vec::new(),
        bodies: 0,
        edited_ts: HashMap::new(),
    };
    let mut all = vec![Op::Burst(
        FIRST_MEMBERS.iter().map(|&u| Item::Add(u)).collect(),
    )];
    all.extend(ops);
    for (n, run) in all.split(|op| matches!(op, Op::Restart)).enumerate() {
        let system = System::new();
        system.block_on(run_actor(
            Arc::clone(&store),
            &probe,
            dir.path(),
            &mut model,
            run,
            n == 0,
        ))?;
        // Dropping the system drops the actors: the next run loads the group from the store.
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn group_actor_matches_the_model(
        dedup_window in prop_oneof![Just(2u64), Just(5u64), Just(10_000u64)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run_case(dedup_window, ops)?;
    }
}

/// A member added, removed and added again while the first add's flush is pending: their
/// session is attached for the second membership only, so no message at or below its join
/// point is pushed after `joined` (ARCHITECTURE.md: "its first `msg` is `joined_seq + 1`").
#[test]
fn a_member_re_added_within_one_flush_gets_only_messages_after_the_join_point() {
    let ops = vec![Op::Burst(vec![
        Item::Add(3),
        Item::Send(0, 0),
        Item::Remove(3),
        Item::Add(3),
        Item::Send(0, 1),
    ])];
    if let Err(e) = run_case(10_000, ops) {
        panic!("{e}");
    }
}

/// Edit and delete, each rule once (PROTOCOL.md §3.6), whatever the random cases draw: the
/// sender edits (again with the same body: no push), others may not; a delete by someone else
/// is refused, by the group's admin and the server's admin allowed, repeated harmlessly; a
/// deleted message cannot be edited and has no readers; all of it survives a restart.
#[test]
fn edits_and_deletes_follow_the_rules_and_survive_a_restart() {
    let own = Target::Own(0);
    let at = |k| Target::Any(SeqPick::In(k));
    let ops = vec![
        Op::Burst(vec![
            Item::Add(GROUP_ADMIN),
            Item::Send(0, 0),
            Item::Send(1, 0),
            Item::Send(0, 1),
            Item::Send(2, 0),
        ]),
        Op::Read(1, SeqPick::Zero),
        Op::Burst(vec![
            Item::Edit(0, own, false),
            Item::Edit(0, own, true),
            Item::Edit(1, at(0), false),
            Item::Edit(0, Target::Any(SeqPick::Next), false),
            Item::Delete(Some(2), at(0)),
            Item::Delete(Some(1), own),
            Item::Delete(Some(1), own),
            Item::Edit(1, own, false),
        ]),
        Op::Burst(vec![
            Item::Delete(Some(GROUP_ADMIN), at(255)),
            Item::Delete(None, at(170)),
            Item::Delete(Some(4), own),
        ]),
        Op::Readers(Some(0), SeqPick::Last),
        Op::ReceiptsSeqs(0, vec![SeqPick::In(0), SeqPick::Last]),
        Op::ReceiptsMine(0, SeqPick::Zero, 5),
        Op::Welcome(1),
        Op::Welcome(2),
        Op::Sync(Some(0), SeqPick::Zero, 5),
        Op::Restart,
        Op::Sync(None, SeqPick::Zero, 5),
        Op::History(Some(1), None, 5),
        Op::Welcome(0),
        Op::Burst(vec![Item::Edit(0, own, false), Item::Delete(Some(0), own)]),
        Op::Readers(None, SeqPick::In(0)),
    ];
    if let Err(e) = run_case(10_000, ops) {
        panic!("{e}");
    }
}

/// An in-process registry on `store` (no arbiters: actors run on the test's system).
fn registry_on(store: Arc<dyn Store>, dir: &std::path::Path) -> Arc<Registry> {
    let metrics = Arc::new(Metrics::default());
    let committer = Committer::start(Arc::clone(&store), Arc::clone(&metrics));
    Registry::new(
        store,
        committer,
        Arc::new(Config::new(dir)),
        metrics,
        Vec::new(),
    )
}

/// Creates the group `gid()` with user 0 as its member; its running actor.
async fn group_of_user_0(registry: &Registry) -> Addr<rollcall::group::GroupActor> {
    registry
        .create_group(&gid(), "G", rollcall::store::GroupKindRecord::Group, &[])
        .await
        .expect("create")
        .expect("created");
    let addr = registry.group(&gid()).expect("load").expect("group");
    let (reply, answer) = reply_channel();
    addr.do_send(AddMember {
        user: uid(0),
        role: RoleRecord::Member,
        by: By::Admin,
        reply,
    });
    answer.wait().await.expect("added");
    addr
}

/// A send of user 0 to a running group actor, with its answer.
fn post(
    addr: &Addr<rollcall::group::GroupActor>,
    client_id: &str,
) -> impl std::future::Future<Output = Result<Posted, GroupError>> {
    let (reply, answer) = reply_channel();
    addr.do_send(PostMessage {
        remind_after: None,
        reply_to: None,
        from: uid(0),
        client_id: client_id.into(),
        body: format!("body of {client_id}"),
        reply,
    });
    answer.wait()
}

/// A storage error while a sender's resend entries are read (on their first send after the
/// group's start) answers that send `storage` and stores nothing; the client's resend then
/// reads them and is answered as the duplicate of the message sent before the restart.
#[test]
fn a_failed_read_of_a_senders_resends_answers_storage_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(ProbedStore {
        inner: SledStore::open(&dir.path().join("db"), 8 << 20, Durability::Process)
            .expect("store"),
        probe: Arc::new(FlushProbe::default()),
        fail_sent_entries: AtomicBool::new(false),
    });
    let registry =
        |store: &Arc<ProbedStore>| registry_on(Arc::clone(store) as Arc<dyn Store>, dir.path());
    System::new().block_on(async {
        let registry = registry(&store);
        let addr = group_of_user_0(&registry).await;
        let sent = post(&addr, "c1").await.expect("sent");
        assert_eq!((sent.seq, sent.duplicate), (1, false));
    });
    // A restart: a new actor over the same store.
    System::new().block_on(async {
        let registry = registry(&store);
        let addr = registry.group(&gid()).expect("load").expect("group");
        store.fail_sent_entries.store(true, Ordering::SeqCst);
        let refused = post(&addr, "c2").await;
        assert!(
            matches!(refused, Err(GroupError::Storage(_))),
            "{refused:?}"
        );
        store.fail_sent_entries.store(false, Ordering::SeqCst);
        let again = post(&addr, "c1").await.expect("resent");
        assert_eq!((again.seq, again.duplicate), (1, true), "the resend of c1");
        let new = post(&addr, "c2").await.expect("sent");
        assert_eq!(
            (new.seq, new.duplicate),
            (2, false),
            "the refused c2 stored nothing"
        );
    });
}

/// The fenced path on sled: another claim of the group behind its running actor (as a second
/// owner would make) fences the actor's next flush. The send is answered `internal` (retry),
/// never `sent`, and the actor stops; the next request starts a new actor (a new claim), which
/// answers the resend with the seq the fenced actor had written (sled had stored it: its only
/// other claimer is in the same process).
#[test]
fn a_claim_behind_a_running_actor_fences_its_next_flush() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&dir.path().join("db"), 8 << 20, Durability::Process).expect("store"),
    );
    let registry = registry_on(Arc::clone(&store), dir.path());
    System::new().block_on(async {
        let addr = group_of_user_0(&registry).await;
        let sent = post(&addr, "c1").await.expect("sent");
        assert_eq!(sent.seq, 1);

        let theirs = store.claim_group(&gid()).expect("a second claim");
        let fenced = post(&addr, "c2").await;
        assert!(
            matches!(fenced, Err(GroupError::Unavailable(_))),
            "a fenced send is `internal`, never `sent`: {fenced:?}"
        );
        for _ in 0..100 {
            if !addr.connected() {
                break;
            }
            actix::clock::sleep(Duration::from_millis(10)).await;
        }
        assert!(!addr.connected(), "the fenced actor stopped");

        let addr = registry.group(&gid()).expect("load").expect("a new actor");
        let again = post(&addr, "c2").await.expect("the resend");
        assert_eq!((again.seq, again.duplicate), (2, true), "{again:?}");
        assert!(
            store.claim_group(&gid()).expect("claim") > theirs + 1,
            "the new actor claimed after the second claim"
        );
    });
}
