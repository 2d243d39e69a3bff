//! Fuzzing the group actor: random sequences of client operations against the REAL
//! `GroupActor`, reached through the real `Registry` with a real sled store and the real
//! group-commit thread, compared after every operation with a small model of the protocol
//! (docs/PROTOCOL.md §1, §3.3, §4).
//!
//! In-process rather than over WebSocket so that a case costs milliseconds and hundreds of
//! sequences run in `cargo test`; the wire layer has its own suites. Online sessions are played by
//! recorder actors registered in the registry like real sessions, so pushes are checked too.
//!
//! Operations: bursts of sends (fresh and repeated `client_id`s, several in one flush), `ack` and
//! `read` with seqs 0, in range, `last_seq + 1` and `u64::MAX`, member add/remove, `sync` and
//! `history` pages (as a member, a non-member and the admin), `receipts` (`mine` and `seqs`),
//! `readers`, a welcome-style attach, and a restart of the group (a graceful stop: a new actor
//! system, registry and committer over the same store; the actor rebuilds its state from the
//! store).
//!
//! Checked after every operation: the answer (seq, `duplicate`, ts of the original, page, counts,
//! lists) or the exact error code equals the model's; the group's `last_seq` and every member's
//! `joined_seq`/`delivered`/`read` equal the model (which keeps cursors as max-registers);
//! `joined_seq <= read <= delivered <= last_seq`. At the end of each run of the actor: every
//! stored message (seqs gapless from 1, sender, `client_id`, body, ts) and member record as read
//! back from the store; each member's pushes (`msg` in seq order for exactly the messages sent
//! while a member, `left`, `joined`, `read_sync`) in order; every `receipt` push consistent
//! (`read <= delivered <= recipients`, only the sender's own messages).
//!
//! `PROPTEST_CASES=500 cargo test --test fuzz_group` runs longer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use rollcall::commit::Committer;
use rollcall::config::{Config, Durability};
use rollcall::group::{
    reply_channel, AddMember, AdvanceCursor, Answer as Waiting, AttachSession, By, Cursor,
    DescribeGroup, FetchMessages, GroupError, ListReaders, ListReceipts, Page, PostMessage, Posted,
    ReceiptQuery, RemoveMember,
};
use rollcall::ids::{GroupId, UserId};
use rollcall::metrics::Metrics;
use rollcall::presence::{Outbound, SessionHandle};
use rollcall::protocol::{page_limit, ErrorCode, GroupSummary, Readers, ReceiptItem, ServerFrame};
use rollcall::registry::Registry;
use rollcall::store::{Direction, MemberRecord, SledStore, Store};

/// The users; sorted, so an index order is the id order.
const USERS: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];
/// Members at the start (added as the first operations).
const FIRST_MEMBERS: [usize; 3] = [0, 1, 2];
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
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => (0..USERS.len(), 0u8..4).prop_map(|(u, c)| Item::Send(u, c)),
        1 => (0..USERS.len()).prop_map(Item::Add),
        1 => (0..USERS.len()).prop_map(Item::Remove),
        2 => (0..USERS.len(), any::<bool>(), seq_pick()).prop_map(|(u, r, s)| Item::Cursor(u, r, s)),
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
    body: String,
    ts: u64,
}

/// A push the model expects a member's session to get, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Push {
    Msg(u64),
    Left,
    /// `joined` with this `last_seq` (the join point).
    Joined(u64),
    ReadSync(u64),
}

/// Work the actor does once the flush covering a burst's writes is back, in order.
#[derive(Debug, Clone, Copy)]
enum Release {
    /// Push `msg` to every attached session.
    Msg(u64),
    /// A member added with this join point: attach their session and send `joined`, unless that
    /// membership is over (removed, or removed and added again) by then.
    Attach(usize, u64),
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
}

impl Model {
    fn last(&self) -> u64 {
        u64::try_from(self.messages.len()).expect("few messages")
    }

    fn message(&self, seq: u64) -> &ModelMessage {
        &self.messages[usize::try_from(seq - 1).expect("small seq")]
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
            ts: 0,
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
                    .filter(|&s| self.message(s).from == user)
                    .collect();
                let items = own.iter().take(*limit).map(|&s| self.counts(s)).collect();
                Ok((items, own.len() > *limit))
            }
            ReceiptQuery::Seqs(seqs) => {
                let mut items = Vec::new();
                for &seq in seqs {
                    self.check_seq(seq)?;
                    items.push(self.counts(seq));
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
        self.check_seq(seq)?;
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
            .filter(|&s| self.message(s).from != user)
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
            role: Default::default(),
        })
    }
}

/// Plays one online session: records every frame a group pushes to it.
struct Recorder {
    frames: Arc<Mutex<Vec<(String, String)>>>,
}

impl Actor for Recorder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Large enough that no test ever fills it (a full session would be evicted).
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl Handler<Outbound> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _ctx: &mut Context<Self>) {
        let frame = match msg {
            Outbound::Frame { kind, text } => (kind.to_string(), text.to_string()),
            Outbound::Evict => ("evict".to_string(), String::new()),
            Outbound::GoingAway => ("going_away".to_string(), String::new()),
            Outbound::Unauthorized(why) => ("unauthorized".to_string(), why.to_string()),
        };
        self.frames.lock().expect("frames").push(frame);
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
        let addr = Recorder {
            frames: Arc::clone(&frames),
        }
        .start();
        let handle = SessionHandle {
            id: registry.presence().next_session_id(),
            user: uid(user),
            outbox: addr.clone().recipient(),
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
                            addr.do_send(AddMember {
                                user: uid(user),
                                role: Default::default(),
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
                            let want = model.message(m.seq);
                            prop_assert_eq!(&m.from, USERS[want.from]);
                            prop_assert_eq!(&m.client_id, &want.client_id);
                            prop_assert_eq!(&m.body, &want.body);
                            prop_assert_eq!(m.ts, want.ts);
                            prop_assert_eq!(m.group.as_str(), GROUP);
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
                let got = got.map(|attached| GroupSummary::from(attached.summary));
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
fn check_pushes(
    user: usize,
    frames: &[(String, String)],
    model: &Model,
) -> Result<(), TestCaseError> {
    let mut got = Vec::new();
    for (kind, text) in frames {
        prop_assert!(kind != "evict", "{} was evicted", USERS[user]);
        let frame = ServerFrame::parse(text).map_err(|e| fail(format!("{e}: {text}")))?;
        prop_assert_eq!(frame.kind(), kind.as_str());
        match frame {
            ServerFrame::Msg(m) => {
                let want = model.message(m.seq);
                prop_assert_eq!(&m.from, USERS[want.from]);
                prop_assert_eq!(&m.body, &want.body);
                prop_assert_eq!(&m.client_id, &want.client_id);
                prop_assert_eq!(m.ts, want.ts);
                got.push(Push::Msg(m.seq));
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
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open(&dir.path().join("db"), 8 << 20, Durability::Process)
            .map_err(|e| fail(e.to_string()))?,
    );
    let mut model = Model {
        dedup_window,
        messages: Vec::new(),
        members: BTreeMap::new(),
        resend: HashMap::new(),
        pushes: vec![Vec::new(); USERS.len()],
        attached: vec![false; USERS.len()],
        release: Vec::new(),
        bodies: 0,
    };
    let mut all = vec![Op::Burst(
        FIRST_MEMBERS.iter().map(|&u| Item::Add(u)).collect(),
    )];
    all.extend(ops);
    for (n, run) in all.split(|op| matches!(op, Op::Restart)).enumerate() {
        let system = System::new();
        system.block_on(run_actor(
            Arc::clone(&store),
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
