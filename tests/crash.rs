//! Crash consistency under load: clients send, acknowledge and read continuously in several
//! groups while the server is killed with SIGKILL at random moments, again and again, and
//! restarted on the same data dir and port. Afterwards the whole history is checked against
//! every reply any client ever saw.
//!
//! What is asserted (each one is a promise of docs/PROTOCOL.md §3.3 / §4):
//! - every send that got a `sent` is stored exactly once, at the seq it was given; every send
//!   is eventually stored (clients resend unanswered sends with the same `client_id` after each
//!   crash, and a resend of a stored send answers the original seq with `duplicate: true`);
//! - seqs are 1..=last_seq with no hole, and no seq was ever given (in `sent` or `msg`) to two
//!   different sends; a session's sends to a group are stored in the order it wrote them;
//! - every seq a client saw (`sent`, `msg`) is still there after every later crash: each
//!   `welcome` lists a `last_seq` at least as high as any seq seen before the connect;
//! - cursors: a `welcome` read straight after a restart (before this user moved a cursor in the
//!   new run) shows the stored cursors; these never go backwards from one crash to the next,
//!   never exceed what the client sent, and keep `read ≤ delivered ≤ last_seq`. Every `welcome`
//!   shows cursors at least as high as a `receipt` that counted every recipient proved durable.
//!   (Moves made less than a receipt tick before a crash may be lost — the protocol lets the
//!   client repeat them — so moves the server never confirmed are only counted, not asserted.)
//!   Clients also send stale `ack`/`read` frames, which must lower nothing (`readers` check);
//! - receipts: counts a sender was pushed never go down after later crashes, and the receipts
//!   computed after the final restart (admin `GET …/receipts`) match the cursors in `welcome`;
//! - reminders (§4.3): clients now and then `remind` a message of theirs just acknowledged, or
//!   send with `remind_after_secs`. Every `reminded` is well formed (count = users, sorted, only
//!   recipients), comes only for the caller's own messages, a scheduled one fires at most once;
//!   every `reminder` (pushed or in `welcome.reminders`) names a message that was reminded, with
//!   its sender and body. No reminder is lost: each `welcome` lists every reminder a `reminded`
//!   named this user in, unless the user ever sent a `read` covering it; after the final
//!   restart also every due scheduled one for a member who never read it. None is resurrected:
//!   no `welcome` lists a reminder at or below its own read mark;
//! - receipt policy (§4.1): between kills the group `g0` is switched between `full`, `counts`
//!   and `off` (sometimes right before the kill); after every restart it has the policy of the
//!   last acknowledged `PUT`, and the other groups stay `full` in every `welcome`. In `g0` the
//!   clients accept `receipts_off` for a `remind` and for a scheduled send (which they resend
//!   unscheduled);
//! - membership and roles (§3.5): a manager holds one session per user `m0`..`m5` and, one
//!   change at a time, changes the members and roles of the group `mg` with `add_member`,
//!   `remove_member`, `set_role` and `leave` (allowed ones, and ones the rules refuse, from
//!   owners, admins and members alike), the admin's `PUT`/`DELETE` of members, and sends that
//!   move the join points. Each answer is checked against the rules (the roster in `members`,
//!   the successor of a last owner who goes). After every kill, before the manager changes
//!   anything, the stored roster (`GET /api/groups/mg`: members, roles, join points) is the
//!   last answered one, or what the one change in flight makes (an unanswered change may or may
//!   not have happened; a change made of two writes — a hand-over, then the removal; the
//!   admin's add, then the role — may also stop half-way), and it has an owner. A push seen for
//!   the change in flight (`joined`, `left`, `group_updated` with `role`) says it happened: the
//!   restarted server must show it. The welcomes after each restart list `mg` with the stored
//!   roles, and after the final restart the roster is exactly the last answered one.
//!
//! - edits and deletes (§3.6): now and then, after a `sent`, a client edits or deletes one of its
//!   own acknowledged messages (one change in flight per client; resent after a reconnect, where
//!   a repeat must answer the same and push nothing). After every restart, before changing
//!   anything, the client reads each message it ever changed back (`sync` of that seq): an
//!   acknowledged delete holds (`deleted: true`, no `body`), for good; a deleted message had a
//!   delete written; otherwise the body is the latest one known durable (`edited`, a `msg_edited`
//!   push, an earlier read) or a later one written since, with `edited_ts` exactly when edited.
//!   `msg_edited`/`msg_deleted` pushes name a change that was written, reach each client at most
//!   once per change (across crashes too), and prove it durable. Every `welcome`'s `unread`
//!   leaves out the deletes acknowledged before the connect; the final `readers` probes skip
//!   deleted seqs. After the final restart every change is exactly there, `unread` equals the
//!   count of others' live messages above the read mark, and the admin's receipts of a deleted
//!   seq are `invalid_seq`. (Reminded and scheduled messages are never changed: a delete drops
//!   their reminders, which the reminder checks count on.)
//!
//! - passivation and pruning (§3.7): the server runs with `--group-idle-ms 300`, so groups stop
//!   whenever their traffic pauses; a sleeper sends one message at a time to `zz` and idles
//!   past that between them, while its second user stays connected and must get each message
//!   pushed by the group's restarted actor. `zz` has a retention of 1 s: after every restart its
//!   stored history runs gapless from `first_seq` to `last_seq`, holds every acknowledged
//!   message at or above `first_seq` at its seq, and nothing else; the run must see both
//!   passivations and pruned messages.
//!
//! Sized for CI by default: 20 kills, 0.25–1 s of traffic before each, about 25 s on 2 cores in
//! a debug build. `ROLLCALL_CRASH_KILLS=N` runs N kills; `ROLLCALL_CRASH_SEED=S` replays a seed
//! (printed at the start; it fixes the kill schedule and the clients' choices, not their timing).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{Server, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const N_GROUPS: usize = 4;
const N_CLIENTS: usize = 8;
/// Each client is a member of this many groups (so each group has 6 members).
const GROUPS_PER_CLIENT: usize = 3;
/// Sends each client keeps in flight (written, no `sent` yet).
const WINDOW: usize = 3;
const DEFAULT_KILLS: u64 = 20;
/// Time between a restart and the next kill, in milliseconds (uniformly drawn).
const KILL_DELAY_MS: std::ops::Range<u64> = 250..1000;
/// Receipt tick of the server under test: short, so cursor moves become durable between kills.
const RECEIPT_INTERVAL_MS: &str = "100";
/// The group whose receipt policy the kill loop changes; the others stay `full`.
const POLICY_GROUP: &str = "g0";
const POLICIES: [&str; 3] = ["full", "counts", "off"];
/// The share of new sends that carry `remind_after_secs: SCHEDULE_SECS`.
const SCHEDULE_P: f64 = 0.08;
const SCHEDULE_SECS: u64 = 1;
/// The share of acknowledged (unscheduled) sends that the sender reminds right away.
const REMIND_P: f64 = 0.08;
/// The group whose members and roles the manager changes under the kills; the harness's
/// clients are not in it.
const MANAGED_GROUP: &str = "mg";
/// The users the manager moves in and out of `MANAGED_GROUP` (`m0`..), one session each.
const N_MANAGED_USERS: usize = 6;
/// The share of `sent` replies after which the client edits or deletes one of its messages
/// (the one just acknowledged or one it changed before), when no change is in flight.
const CHANGE_P: f64 = 0.03;
/// The share of those changes that are deletes.
const DELETE_P: f64 = 0.3;

/// The group of the sleeper (`run_sleeper`): idle between its rounds for longer than the
/// server's `--group-idle-ms`, so its actor passivates and starts again between kills, and with
/// a retention of its own of 1 s, so its old messages are pruned under the kills too.
const SLEEPY_GROUP: &str = "zz";
const SLEEPERS: [&str; 2] = ["z0", "z1"];
/// The server's group idle time in this test: groups passivate whenever traffic pauses.
const GROUP_IDLE_MS: u64 = 300;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn group_name(g: usize) -> String {
    format!("g{g}")
}

fn user_name(c: usize) -> String {
    format!("u{c}")
}

/// The groups client `c` is a member of.
fn groups_of(c: usize) -> Vec<String> {
    (0..GROUPS_PER_CLIENT)
        .map(|k| group_name((c + k) % N_GROUPS))
        .collect()
}

/// The members of a group named `g<index>`.
fn members_of_group(group: &str) -> Vec<String> {
    group[1..].parse().map(members_of).unwrap_or_default()
}

fn members_of(g: usize) -> Vec<String> {
    (0..N_CLIENTS)
        .filter(|&c| groups_of(c).contains(&group_name(g)))
        .map(user_name)
        .collect()
}

/// One send a client issued.
#[derive(Clone, Debug)]
struct Issued {
    user: String,
    group: String,
    /// The client's send counter: its sends to one group must be stored in this order.
    n: u64,
    body: String,
    /// `remind_after_secs` of the send as it is written now (cleared when refused `receipts_off`).
    remind_after: Option<u64>,
}

/// A message its sender edits or deletes (docs/PROTOCOL.md §3.6).
#[derive(Clone, Debug)]
struct Changed {
    sender: String,
    original: String,
    /// The bodies of the edits written, in order (each unique).
    edits: Vec<String>,
    /// How many of `edits` are known durable: an `edited`, a `msg_edited` or a read-back showed
    /// the last of them (or the original, for 0).
    durable_edits: usize,
    delete_written: bool,
    /// A `deleted`, a `msg_deleted` or a read-back showed it: it never comes back.
    delete_durable: bool,
}

/// Receipt counts of one message, as pushed to its sender.
#[derive(Clone, Copy, Default, Debug)]
struct Counts {
    delivered: u64,
    read: u64,
}

/// Everything the clients saw, shared by all of them; checked at the end.
#[derive(Default)]
struct Ledger {
    /// client_id → the send (client_ids are unique across users: `u3-17`).
    issued: HashMap<String, Issued>,
    /// client_id → (seq, ts) from every `sent` seen (all must agree).
    sent: HashMap<String, (u64, u64)>,
    /// (group, seq) → (sender, client_id) from every `sent` and `msg` seen.
    owner: HashMap<(String, u64), (String, String)>,
    /// group → highest seq seen in any `sent`, `msg` or page.
    max_seen: HashMap<String, u64>,
    /// (group, seq) → highest counts pushed to the sender in `receipt` frames.
    receipts: HashMap<(String, u64), Counts>,
    /// (group, user) → (delivered, read) the user's stored cursors are known to have reached:
    /// a `receipt` counting every recipient as delivered (read) for seq s is pushed only once
    /// every recipient's delivered (read) ≥ s is durable.
    floors: HashMap<(String, String), (u64, u64)>,
    /// client_ids ever written with `remind_after_secs` (a schedule may exist for them).
    ever_scheduled: HashSet<String>,
    /// (group, seq) of every message a `remind` was written for, or that was sent scheduled.
    remind_targets: HashSet<(String, u64)>,
    /// (group, seq) → users a `reminded` (reply or scheduled) named, in groups other than
    /// `POLICY_GROUP`: their reminders are durable.
    reminded_users: HashMap<(String, u64), HashSet<String>>,
    /// (group, seq) → scheduled `reminded` frames (without `id`) seen.
    fired: HashMap<(String, u64), u32>,
    /// (user, group) → the highest `read` the user ever sent.
    max_sent_read: HashMap<(String, String), u64>,
    /// `MANAGED_GROUP`'s roster as answered, and the change in flight.
    managed: Managed,
    /// (group, seq) → a message its sender edits or deletes.
    changed: HashMap<(String, u64), Changed>,
    /// Broken promises, with enough context to debug them.
    violations: Vec<String>,
    /// Figures for the report.
    n_sent_replies: u64,
    n_resends: u64,
    n_resends_duplicate: u64,
    n_msgs: u64,
    n_receipt_frames: u64,
    n_clean_welcomes: u64,
    n_welcomes: u64,
    /// Cursor values a client sent that a clean welcome after a crash no longer showed (moves
    /// the server had not made durable yet; the client repeats them).
    n_cursor_moves_lost: u64,
    n_reminds: u64,
    n_reminded_replies: u64,
    n_scheduled_sends: u64,
    n_scheduled_fired: u64,
    n_reminder_frames: u64,
    n_welcome_reminders: u64,
    /// Reminders a welcome was required to list (acknowledged, never read), all found.
    n_reminders_required: u64,
    n_receipts_off_refusals: u64,
    n_edits: u64,
    n_deletes: u64,
    /// Edits and deletes written again after a reconnect (unanswered before the crash).
    n_change_resends: u64,
    /// Changed messages read back after a reconnect, all as promised.
    n_change_checks: u64,
    /// Deletes found applied by a read-back before their answer came (in flight at a kill).
    n_deletes_found_before_answer: u64,
    n_msg_edited: u64,
    n_msg_deleted: u64,
    /// Welcomes whose `unread` had acknowledged deletes of others to leave out.
    n_unread_with_deletes: u64,
}

impl Ledger {
    /// Whether a delete of `(group, seq)` was ever written.
    fn delete_written(&self, group: &str, seq: u64) -> bool {
        self.changed
            .get(&(group.to_string(), seq))
            .is_some_and(|c| c.delete_written)
    }

    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.push(what);
    }

    fn saw_seq(&mut self, group: &str, seq: u64, from: &str, client_id: &str, via: &str) {
        let key = (group.to_string(), seq);
        let owner = (from.to_string(), client_id.to_string());
        match self.owner.get(&key) {
            Some(known) if *known != owner => {
                let what =
                    format!("{group} seq {seq} given to {known:?} and (in a {via}) to {owner:?}");
                self.violation(what);
            }
            Some(_) => {}
            None => {
                self.owner.insert(key, owner);
            }
        }
        let max = self.max_seen.entry(group.to_string()).or_default();
        *max = (*max).max(seq);
    }
}

impl Ledger {
    /// Checks a `reminder` frame or `welcome.reminders` entry against what was sent; `via` and
    /// `user` for the report.
    fn check_reminder(&mut self, reminder: &Value, user: &str, via: &str) {
        let group = reminder["group"].as_str().unwrap_or_default().to_string();
        let seq = reminder["seq"].as_u64().unwrap_or(0);
        let Some((sender, client_id)) = self.owner.get(&(group.clone(), seq)).cloned() else {
            // A message nobody has seen yet cannot be checked (its sender has not got `sent`).
            return;
        };
        let body = self.issued.get(&client_id).map(|i| i.body.clone());
        let message = &reminder["message"];
        let well_formed = reminder["by"] == sender.as_str()
            && message["from"] == sender.as_str()
            && message["seq"] == seq
            && body.is_some_and(|b| message["body"] == b.as_str())
            && reminder["ts"].as_u64().is_some()
            && message["ts"].as_u64().is_some();
        if !well_formed {
            self.violation(format!(
                "[{user}] {via} reminder does not match {group} seq {seq} ({client_id} by {sender}): {reminder}"
            ));
        }
        let target = (group.clone(), seq);
        if !self.remind_targets.contains(&target) && !self.ever_scheduled.contains(&client_id) {
            self.violation(format!(
                "[{user}] {via} reminder of {group} seq {seq}, which nobody reminded: {reminder}"
            ));
        }
    }
}

/// State shared by the kill loop and the clients.
struct Shared {
    ledger: Mutex<Ledger>,
    /// The number of kills started: a client that reads the same value before connecting and
    /// after its `welcome` knows which run answered.
    kills: AtomicU64,
    /// Set after the last kill under load: clients stop issuing new sends.
    stop_sending: AtomicBool,
    /// Clients whose every send has been answered after `stop_sending`.
    n_drained: AtomicUsize,
    /// Sends written and not yet answered, over all clients (sampled at each kill).
    in_flight: AtomicU64,
    /// The last kill after which the kill loop checked `MANAGED_GROUP`'s stored roster; the
    /// manager changes nothing on a new server before that.
    managed_checked: AtomicU64,
    ws_url: String,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A client's view of one group, kept across connections.
#[derive(Default, Clone)]
struct GroupView {
    /// Every seq up to here has been received (from pushes or pages).
    known: u64,
    /// Messages above `known + 1` received early (pushes before a catch-up page).
    early: BTreeMap<u64, ()>,
    /// The highest `read` this client decided on.
    local_read: u64,
    /// The highest values this client ever sent in `ack`/`read` (a read also delivers).
    max_sent_delivered: u64,
    max_sent_read: u64,
    /// Cursors of the last clean welcome (read straight after a restart).
    clean: Option<(u64, u64)>,
    /// The seqs of this client's own messages (it is no recipient of those).
    mine: HashSet<u64>,
}

/// One client: a user that sends, acknowledges and reads in its groups, reconnecting after
/// every crash.
struct Client {
    user: String,
    token: String,
    shared: Arc<Shared>,
    rng: StdRng,
    groups: Vec<String>,
    views: HashMap<String, GroupView>,
    next_n: u64,
    /// Sends without a `sent` yet, in the order they were issued: (client_id, group, written
    /// on an earlier connection).
    outstanding: VecDeque<(String, String, bool)>,
    /// The highest kill count read after any earlier `welcome`: that session talked to a server
    /// of this run or an earlier one, and may have moved cursors there.
    touched_run: u64,
    n_connects: u64,
    /// Every send of this client is answered after `stop_sending` (counted in `n_drained`).
    drained: bool,
    /// The edit or delete written and not answered yet: (group, seq, frame); written again
    /// after a reconnect.
    change: Option<(String, u64, Value)>,
    /// `msg_edited` (with the body) and `msg_deleted` (`None`) pushes this client got, over all
    /// its sessions: each change is pushed once.
    change_pushes: HashSet<(String, u64, Option<String>)>,
}

/// How one session ended.
enum SessionEnd {
    /// The connection failed or closed (a crash): connect again.
    Lost,
    /// Draining is over: every send is answered and every group caught up.
    Finished,
}

impl Client {
    fn new(index: usize, shared: Arc<Shared>, seed: u64) -> Client {
        let user = user_name(index);
        let groups = groups_of(index);
        let views = groups
            .iter()
            .map(|g| (g.clone(), GroupView::default()))
            .collect();
        Client {
            token: common::token(&user),
            user,
            shared,
            rng: StdRng::seed_from_u64(seed.wrapping_add(index as u64 + 1)),
            groups,
            views,
            next_n: 0,
            outstanding: VecDeque::new(),
            touched_run: 0,
            n_connects: 0,
            drained: false,
            change: None,
            change_pushes: HashSet::new(),
        }
    }

    async fn run(mut self) {
        loop {
            let before = self.shared.kills.load(Ordering::SeqCst);
            let (seen_before, floors, reminded_before, deleted_before) = {
                let ledger = self.shared.ledger();
                let mine: Vec<(String, u64)> = ledger
                    .reminded_users
                    .iter()
                    .filter(|(_, users)| users.contains(&self.user))
                    .map(|(target, _)| target.clone())
                    .collect();
                let deleted: HashSet<(String, u64)> = ledger
                    .changed
                    .iter()
                    .filter(|(_, c)| c.delete_durable)
                    .map(|(key, _)| key.clone())
                    .collect();
                (
                    ledger.max_seen.clone(),
                    ledger.floors.clone(),
                    mine,
                    deleted,
                )
            };
            let Some((mut ws, welcome)) = self.connect().await else {
                tokio::time::sleep(Duration::from_millis(15)).await;
                continue;
            };
            self.n_connects += 1;
            let after = self.shared.kills.load(Ordering::SeqCst);
            let clean = before == after && self.touched_run < before;
            self.check_welcome(&welcome, &seen_before, &floors, clean);
            self.check_welcome_unread(&welcome, &deleted_before);
            self.check_welcome_reminders(&welcome, &reminded_before);
            // This connection talks to one server process, of run `after` at the latest.
            self.touched_run = self.touched_run.max(after);
            let end = self.session(&mut ws).await;
            match end {
                SessionEnd::Finished => {
                    let _ = ws.close(None).await;
                    return;
                }
                SessionEnd::Lost => {
                    for entry in self.outstanding.iter_mut() {
                        entry.2 = true;
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Option<(Ws, Value)> {
        let mut request = self.shared.ws_url.as_str().into_client_request().ok()?;
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", self.token)).ok()?,
        );
        let connecting = tokio_tungstenite::connect_async(request);
        let (mut ws, _) = tokio::time::timeout(TIMEOUT, connecting).await.ok()?.ok()?;
        let welcome = loop {
            match tokio::time::timeout(TIMEOUT, ws.next()).await.ok()?? {
                Ok(Message::Text(text)) => break serde_json::from_str::<Value>(&text).ok()?,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                _ => return None,
            }
        };
        if welcome["type"] != "welcome" {
            self.shared.ledger().violation(format!(
                "[{}] first frame is not welcome: {welcome}",
                self.user
            ));
            return None;
        }
        Some((ws, welcome))
    }

    /// Checks a `welcome` against what was seen before the connect; `clean` when it was read
    /// straight after a restart, before this user moved any cursor in the new run.
    fn check_welcome(
        &mut self,
        welcome: &Value,
        seen_before: &HashMap<String, u64>,
        floors: &HashMap<(String, String), (u64, u64)>,
        clean: bool,
    ) {
        let mut ledger = self.shared.ledger();
        ledger.n_welcomes += 1;
        if clean {
            ledger.n_clean_welcomes += 1;
        }
        let listed = welcome["groups"].as_array().cloned().unwrap_or_default();
        for group in &self.groups {
            let Some(entry) = listed.iter().find(|g| g["group"] == group.as_str()) else {
                ledger.violation(format!(
                    "[{}] welcome without {group}: {welcome}",
                    self.user
                ));
                continue;
            };
            let last_seq = entry["last_seq"].as_u64().unwrap_or(0);
            let delivered = entry["delivered"].as_u64().unwrap_or(0);
            let read = entry["read"].as_u64().unwrap_or(0);
            let policy = entry["receipts"].as_str().unwrap_or_default();
            if !POLICIES.contains(&policy) || (group != POLICY_GROUP && policy != "full") {
                ledger.violation(format!(
                    "[{}] {group}: welcome shows receipts {policy:?}: {entry}",
                    self.user
                ));
            }
            let view = self.views.get_mut(group).expect("a view per group");
            let seen = seen_before.get(group).copied().unwrap_or(0);
            if last_seq < seen {
                ledger.violation(format!(
                    "[{}] welcome lists {group} last_seq {last_seq}, but seq {seen} was seen before the connect",
                    self.user
                ));
            }
            if !(read <= delivered && delivered <= last_seq) {
                ledger.violation(format!(
                    "[{}] {group}: welcome cursors out of order: read {read}, delivered {delivered}, last_seq {last_seq}",
                    self.user
                ));
            }
            let floor = floors
                .get(&(group.clone(), self.user.clone()))
                .copied()
                .unwrap_or_default();
            if delivered < floor.0 || read < floor.1 {
                ledger.violation(format!(
                    "[{}] {group}: welcome shows delivered {delivered} / read {read}, below {floor:?}, which receipts showed durable",
                    self.user
                ));
            }
            if delivered > view.max_sent_delivered || read > view.max_sent_read {
                ledger.violation(format!(
                    "[{}] {group}: welcome shows delivered {delivered} / read {read}, above what the client sent ({} / {})",
                    self.user, view.max_sent_delivered, view.max_sent_read
                ));
            }
            if clean {
                if let Some((was_delivered, was_read)) = view.clean {
                    if delivered < was_delivered || read < was_read {
                        ledger.violation(format!(
                            "[{}] {group}: stored cursors went backwards across a crash: delivered {was_delivered} → {delivered}, read {was_read} → {read}",
                            self.user
                        ));
                    }
                }
                view.clean = Some((delivered, read));
                // Moves sent in an earlier run that this crash lost (the client repeats them).
                if view.max_sent_delivered > delivered {
                    ledger.n_cursor_moves_lost += 1;
                }
            }
            // The client catches up from what it has; a lower cursor is repeated below.
            view.known = view.known.max(delivered);
            view.local_read = view.local_read.max(read);
        }
    }

    /// Checks that `unread` in a `welcome` leaves out the messages of others whose delete was
    /// durable before the connect: it is at most the seqs above the read mark that are neither
    /// this client's own nor such a delete (other seqs may be own sends not answered yet, or
    /// deletes in flight, so this is a bound; the final check is exact).
    fn check_welcome_unread(&mut self, welcome: &Value, deleted_before: &HashSet<(String, u64)>) {
        let listed = welcome["groups"].as_array().cloned().unwrap_or_default();
        let mut ledger = self.shared.ledger();
        for group in &self.groups {
            let Some(entry) = listed.iter().find(|g| g["group"] == group.as_str()) else {
                continue; // reported by check_welcome
            };
            let last_seq = entry["last_seq"].as_u64().unwrap_or(0);
            let read = entry["read"].as_u64().unwrap_or(0);
            let unread = entry["unread"].as_u64();
            let view = &self.views[group];
            let mut bound = 0u64;
            let mut n_deleted = 0u64;
            for seq in read + 1..=last_seq {
                if view.mine.contains(&seq) {
                    continue;
                }
                if deleted_before.contains(&(group.clone(), seq)) {
                    n_deleted += 1;
                } else {
                    bound += 1;
                }
            }
            if n_deleted > 0 {
                ledger.n_unread_with_deletes += 1;
            }
            if unread.is_none_or(|unread| unread > bound) {
                ledger.violation(format!(
                    "[{}] {group}: welcome shows unread {unread:?}, but above read {read} up to {last_seq} at most {bound} messages of others are not deleted ({n_deleted} deletes were acknowledged): {entry}",
                    self.user
                ));
            }
        }
    }

    /// Checks `welcome.reminders`: each is well formed and above the welcome's read mark of its
    /// group (a read deletes it), and every reminder a `reminded` acknowledged for this user
    /// before the connect is listed, unless the user ever sent a `read` covering it.
    fn check_welcome_reminders(&mut self, welcome: &Value, reminded_before: &[(String, u64)]) {
        let mut ledger = self.shared.ledger();
        let Some(listed) = welcome["reminders"].as_array() else {
            ledger.violation(format!(
                "[{}] welcome without reminders: {welcome}",
                self.user
            ));
            return;
        };
        let groups = welcome["groups"].as_array().cloned().unwrap_or_default();
        let mut present = HashSet::new();
        for reminder in listed {
            ledger.n_welcome_reminders += 1;
            ledger.check_reminder(reminder, &self.user, "welcome");
            let group = reminder["group"].as_str().unwrap_or_default().to_string();
            let seq = reminder["seq"].as_u64().unwrap_or(0);
            let read = groups
                .iter()
                .find(|g| g["group"] == group.as_str())
                .and_then(|g| g["read"].as_u64());
            if read.is_none_or(|read| seq <= read) {
                ledger.violation(format!(
                    "[{}] welcome lists a reminder of {group} seq {seq}, but the read mark there is {read:?}: {reminder}",
                    self.user
                ));
            }
            present.insert((group, seq));
        }
        for (group, seq) in reminded_before {
            let never_read = self
                .views
                .get(group)
                .is_some_and(|view| view.max_sent_read < *seq);
            if never_read {
                ledger.n_reminders_required += 1;
                if !present.contains(&(group.clone(), *seq)) {
                    ledger.violation(format!(
                        "[{}] lost: a reminded named me for {group} seq {seq}, I never read it, and welcome does not list it: {welcome}",
                        self.user
                    ));
                }
            }
        }
    }

    /// Serves one connection until it fails or draining is done.
    async fn session(&mut self, ws: &mut Ws) -> SessionEnd {
        // Sent cursors of this session: everything is repeated on a new connection.
        let mut acked_here: HashMap<String, u64> = HashMap::new();
        let mut read_here: HashMap<String, u64> = HashMap::new();
        let mut last_push: HashMap<String, u64> = HashMap::new();
        // Catch-up and drain pages in flight: request id → group.
        let mut syncing: HashMap<String, String> = HashMap::new();
        let mut next_request = 0u64;
        // After all clients drained: groups whose final page (more: false) came back.
        let mut final_pages_asked = false;
        let mut final_pages_done: HashSet<String> = HashSet::new();
        let mut final_moves_sent = false;
        // `readers` checks in flight: request id → (group, seq, expected list).
        let mut readers_asked: HashMap<String, (String, u64, &'static str, u32)> = HashMap::new();
        // `readers` checks to ask again (due time, group, seq, expected list, attempts so far).
        let mut readers_again: Vec<(Instant, String, u64, &'static str, u32)> = Vec::new();
        let mut in_flight = 0usize;
        // Read-backs of this client's changed messages in flight: request id → (group, seq).
        // The change in flight is written again, and new ones made, only after all came back.
        let mut checking: HashMap<String, (String, u64)> = HashMap::new();
        let mut change_resent = false;

        // Resend the unanswered sends first, in their original order.
        let resend: Vec<(String, String)> = self
            .outstanding
            .iter()
            .map(|(id, g, _)| (id.clone(), g.clone()))
            .collect();
        for (client_id, group) in resend {
            let (body, remind_after) = {
                let ledger = self.shared.ledger();
                let issued = &ledger.issued[&client_id];
                (issued.body.clone(), issued.remind_after)
            };
            let frame = send_frame(&client_id, &group, &body, remind_after);
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                return SessionEnd::Lost;
            }
            in_flight += 1;
            self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        for group in self.groups.clone() {
            let after = self.views[&group].known;
            next_request += 1;
            let id = format!("sync-{next_request}");
            syncing.insert(id.clone(), group.clone());
            let frame =
                json!({"type": "sync", "id": id, "group": group, "after": after, "limit": 1000});
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                self.forget_in_flight(in_flight);
                return SessionEnd::Lost;
            }
        }

        let to_check: Vec<(String, u64)> = {
            let ledger = self.shared.ledger();
            let mut keys: Vec<(String, u64)> = ledger
                .changed
                .iter()
                .filter(|(_, c)| c.sender == self.user)
                .map(|(key, _)| key.clone())
                .collect();
            keys.sort_unstable();
            keys
        };
        for (group, seq) in to_check {
            let id = format!("check-{group}-{seq}");
            let frame =
                json!({"type": "sync", "id": id, "group": group, "after": seq - 1, "limit": 1});
            checking.insert(id, (group, seq));
            if ws.send(Message::text(frame.to_string())).await.is_err() {
                self.forget_in_flight(in_flight);
                return SessionEnd::Lost;
            }
        }

        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let end = 'session: loop {
            if checking.is_empty() && !change_resent {
                change_resent = true;
                if let Some((_, _, frame)) = &self.change {
                    self.shared.ledger().n_change_resends += 1;
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        break 'session SessionEnd::Lost;
                    }
                }
            }
            // Top up the window with new sends.
            while !self.shared.stop_sending.load(Ordering::SeqCst) && in_flight < WINDOW {
                self.next_n += 1;
                let n = self.next_n;
                let group = self.groups[self.rng.gen_range(0..self.groups.len())].clone();
                let client_id = format!("{}-{n}", self.user);
                let body = format!("{} {group} {n}", self.user);
                let remind_after = self.rng.gen_bool(SCHEDULE_P).then_some(SCHEDULE_SECS);
                {
                    let mut ledger = self.shared.ledger();
                    ledger.issued.insert(
                        client_id.clone(),
                        Issued {
                            user: self.user.clone(),
                            group: group.clone(),
                            n,
                            body: body.clone(),
                            remind_after,
                        },
                    );
                    if remind_after.is_some() {
                        ledger.ever_scheduled.insert(client_id.clone());
                        ledger.n_scheduled_sends += 1;
                    }
                }
                self.outstanding
                    .push_back((client_id.clone(), group.clone(), false));
                let frame = send_frame(&client_id, &group, &body, remind_after);
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    break 'session SessionEnd::Lost;
                }
                in_flight += 1;
                self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            }
            if self.outstanding.is_empty()
                && self.change.is_none()
                && self.shared.stop_sending.load(Ordering::SeqCst)
            {
                if !self.drained {
                    self.drained = true;
                    self.shared.n_drained.fetch_add(1, Ordering::SeqCst);
                }
                // This client's sends are all answered; once every client's are, nothing new
                // is stored: page each group to its end, then stop.
                if !final_pages_asked
                    && self.shared.n_drained.load(Ordering::SeqCst) == N_CLIENTS
                    && syncing.is_empty()
                {
                    final_pages_asked = true;
                    for group in self.groups.clone() {
                        next_request += 1;
                        let id = format!("final-{next_request}");
                        syncing.insert(id.clone(), group.clone());
                        let after = self.views[&group].known;
                        let frame = json!({"type": "sync", "id": id, "group": group, "after": after, "limit": 1000});
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            break 'session SessionEnd::Lost;
                        }
                    }
                }
                if final_pages_asked
                    && final_pages_done.len() == self.groups.len()
                    && !final_moves_sent
                {
                    // Final cursor moves: everything delivered, read as far as decided; then
                    // stale moves, which must change nothing, and a `readers` check of that.
                    final_moves_sent = true;
                    for group in self.groups.clone() {
                        let view = &self.views[&group];
                        let (known, read) = (view.known, view.local_read);
                        // Every change is answered by now: a deleted seq has no readers.
                        let probe = {
                            let ledger = self.shared.ledger();
                            (1..=known).rev().find(|&s| {
                                !view.mine.contains(&s) && !ledger.delete_written(&group, s)
                            })
                        };
                        let Some(probe) = probe else {
                            continue;
                        };
                        let expect = if read >= probe { "read" } else { "delivered" };
                        next_request += 1;
                        let id = format!("readers-{next_request}");
                        readers_asked.insert(id.clone(), (group.clone(), probe, expect, 1));
                        let frames = [
                            json!({"type": "ack", "group": group, "seq": known}),
                            json!({"type": "read", "group": group, "seq": read}),
                            json!({"type": "ack", "group": group, "seq": 0}),
                            json!({"type": "ack", "group": group, "seq": probe - 1}),
                            json!({"type": "read", "group": group, "seq": read.min(1)}),
                            json!({"type": "readers", "id": id, "group": group, "seq": probe}),
                        ];
                        for frame in frames {
                            if ws.send(Message::text(frame.to_string())).await.is_err() {
                                break 'session SessionEnd::Lost;
                            }
                        }
                        self.note_sent_cursor(&group, known, false);
                        self.note_sent_cursor(&group, read, true);
                    }
                }
                if final_moves_sent && readers_asked.is_empty() && readers_again.is_empty() {
                    break SessionEnd::Finished;
                }
            }

            let frame = tokio::select! {
                next = ws.next() => match next {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(&text) {
                        Ok(frame) => frame,
                        Err(e) => {
                            self.shared.ledger().violation(format!("[{}] not JSON ({e}): {text}", self.user));
                            break SessionEnd::Lost;
                        }
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break SessionEnd::Lost,
                    Some(Ok(_)) => continue,
                },
                _ = tick.tick() => {
                    // After the final moves the cursors stay put, for the `readers` check.
                    if !final_moves_sent
                        && self.move_cursors(ws, &mut acked_here, &mut read_here).await.is_err()
                    {
                        break SessionEnd::Lost;
                    }
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        readers_again.drain(..).partition(|again| again.0 <= now);
                    readers_again = later;
                    for (_, group, probe, expect, attempts) in due {
                        next_request += 1;
                        let id = format!("readers-{next_request}");
                        let frame = json!({"type": "readers", "id": id, "group": group, "seq": probe});
                        readers_asked.insert(id, (group, probe, expect, attempts + 1));
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            break 'session SessionEnd::Lost;
                        }
                    }
                    continue;
                }
            };
            match frame["type"].as_str().unwrap_or_default() {
                "sent" => {
                    in_flight = in_flight.saturating_sub(1);
                    self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                    if let Some(remind) = self.on_sent(&frame) {
                        if ws.send(Message::text(remind.to_string())).await.is_err() {
                            break SessionEnd::Lost;
                        }
                    }
                    let may_change = change_resent
                        && self.change.is_none()
                        && !self.shared.stop_sending.load(Ordering::SeqCst);
                    if may_change && self.rng.gen_bool(CHANGE_P) {
                        if let Some(change) = self.new_change(&frame) {
                            if ws.send(Message::text(change.to_string())).await.is_err() {
                                break SessionEnd::Lost;
                            }
                        }
                    }
                }
                "edited" | "deleted" => self.on_changed(&frame),
                "msg_edited" | "msg_deleted" => self.on_change_pushed(&frame),
                "msg" => {
                    let group = frame["group"].as_str().unwrap_or_default().to_string();
                    let seq = frame["seq"].as_u64().unwrap_or(0);
                    let last = last_push.entry(group.clone()).or_default();
                    if seq <= *last {
                        self.shared.ledger().violation(format!(
                            "[{}] {group}: msg {seq} pushed after msg {last} on one session",
                            self.user
                        ));
                    }
                    *last = seq;
                    self.shared.ledger().n_msgs += 1;
                    self.ingest(&group, &frame, "msg");
                }
                "messages" => {
                    let id = frame["id"].as_str().unwrap_or_default().to_string();
                    if let Some((group, seq)) = checking.remove(&id) {
                        self.check_changed(&group, seq, &frame);
                        continue;
                    }
                    let Some(group) = syncing.remove(&id) else {
                        self.shared
                            .ledger()
                            .violation(format!("[{}] unexpected page {id}", self.user));
                        continue;
                    };
                    let messages = frame["messages"].as_array().cloned().unwrap_or_default();
                    for message in &messages {
                        self.ingest(&group, message, "page");
                    }
                    if frame["more"] == true {
                        next_request += 1;
                        let next_id =
                            format!("{}-{next_request}", id.split('-').next().unwrap_or("sync"));
                        syncing.insert(next_id.clone(), group.clone());
                        let after = self.views[&group].known;
                        let frame = json!({"type": "sync", "id": next_id, "group": group, "after": after, "limit": 1000});
                        if ws.send(Message::text(frame.to_string())).await.is_err() {
                            break SessionEnd::Lost;
                        }
                    } else if id.starts_with("final-") {
                        let last_seq = frame["last_seq"].as_u64().unwrap_or(0);
                        let view = &self.views[&group];
                        if view.known != last_seq || !view.early.is_empty() {
                            self.shared.ledger().violation(format!(
                                "[{}] {group}: caught up to {} but last_seq is {last_seq}",
                                self.user, view.known
                            ));
                        }
                        final_pages_done.insert(group);
                    }
                }
                "receipt" => self.on_receipt(&frame),
                "reminded" => self.on_reminded(&frame),
                "reminder" => {
                    let mut ledger = self.shared.ledger();
                    ledger.n_reminder_frames += 1;
                    ledger.check_reminder(&frame, &self.user, "pushed");
                }
                "readers" => {
                    let id = frame["id"].as_str().unwrap_or_default();
                    let Some((group, probe, expect, attempts)) = readers_asked.remove(id) else {
                        continue;
                    };
                    let listed = frame[expect]
                        .as_array()
                        .is_some_and(|list| list.iter().any(|u| u == self.user.as_str()));
                    // A session forwards `ack`/`read` and `readers` to the group without an
                    // order between them (PROTOCOL.md promises order for `send` only), so the
                    // check asks again for a while: once every move has arrived, in whatever
                    // order, the stale ones must not have lowered anything.
                    if !listed && attempts < 40 {
                        let due = Instant::now() + Duration::from_millis(50);
                        readers_again.push((due, group, probe, expect, attempts));
                    } else if !listed {
                        self.shared.ledger().violation(format!(
                            "[{}] {group} seq {probe}: after stale ack/read frames, readers should list me as {expect} ({attempts} tries): {frame}",
                            self.user
                        ));
                    }
                }
                "error" => {
                    if let Some(resend) = self.on_error(&frame) {
                        if ws.send(Message::text(resend.to_string())).await.is_err() {
                            break SessionEnd::Lost;
                        }
                    }
                }
                _ => {}
            }
        };
        if let SessionEnd::Lost = end {
            self.forget_in_flight(in_flight);
        }
        end
    }

    fn forget_in_flight(&self, in_flight: usize) {
        self.shared
            .in_flight
            .fetch_sub(in_flight as u64, Ordering::Relaxed);
    }

    /// Picks a change after a `sent`: an edit or a delete of the message just acknowledged or
    /// of one changed before (never a reminded or scheduled one, nor one with a delete
    /// written); records it and returns its frame.
    fn new_change(&mut self, sent: &Value) -> Option<Value> {
        let group = sent["group"].as_str().unwrap_or_default().to_string();
        let seq = sent["seq"].as_u64().unwrap_or(0);
        let client_id = sent["client_id"].as_str().unwrap_or_default();
        let mut ledger = self.shared.ledger();
        let earlier: Vec<(String, u64)> = ledger
            .changed
            .iter()
            .filter(|(_, c)| c.sender == self.user && !c.delete_written)
            .map(|(key, _)| key.clone())
            .collect();
        let fresh = seq > 0
            && !ledger.remind_targets.contains(&(group.clone(), seq))
            && !ledger.ever_scheduled.contains(client_id);
        let (group, seq) = if !earlier.is_empty() && (!fresh || self.rng.gen_bool(0.5)) {
            let mut earlier = earlier;
            earlier.sort_unstable();
            earlier.swap_remove(self.rng.gen_range(0..earlier.len()))
        } else if fresh {
            let original = ledger.issued.get(client_id)?.body.clone();
            ledger
                .changed
                .entry((group.clone(), seq))
                .or_insert_with(|| Changed {
                    sender: self.user.clone(),
                    original,
                    edits: Vec::new(),
                    durable_edits: 0,
                    delete_written: false,
                    delete_durable: false,
                });
            (group, seq)
        } else {
            return None;
        };
        let delete = self.rng.gen_bool(DELETE_P);
        let changed = ledger.changed.get_mut(&(group.clone(), seq))?;
        let frame = if delete {
            changed.delete_written = true;
            ledger.n_deletes += 1;
            json!({"type": "delete", "id": format!("delete-{group}-{seq}"), "group": group, "seq": seq})
        } else {
            let k = changed.edits.len();
            let body = format!("{} {group} {seq} edit {k}", self.user);
            changed.edits.push(body.clone());
            ledger.n_edits += 1;
            json!({"type": "edit", "id": format!("edit-{group}-{seq}-{k}"), "group": group, "seq": seq, "body": body})
        };
        self.change = Some((group, seq, frame.clone()));
        Some(frame)
    }

    /// Takes an `edited` or `deleted`: the change in flight is durable.
    fn on_changed(&mut self, frame: &Value) {
        let mut ledger = self.shared.ledger();
        let Some((group, seq, written)) = self.change.take() else {
            ledger.violation(format!(
                "[{}] an answer with no change in flight: {frame}",
                self.user
            ));
            return;
        };
        let reply = if written["type"] == "delete" {
            "deleted"
        } else {
            "edited"
        };
        let answers = frame["id"] == written["id"]
            && frame["group"] == group.as_str()
            && frame["seq"] == seq
            && frame["type"] == reply;
        if !answers {
            ledger.violation(format!("[{}] {frame} does not answer {written}", self.user));
        }
        let Some(changed) = ledger.changed.get_mut(&(group, seq)) else {
            return;
        };
        if written["type"] == "delete" {
            changed.delete_durable = true;
        } else {
            changed.durable_edits = changed.durable_edits.max(changed.edits.len());
        }
    }

    /// Takes a `msg_edited` or `msg_deleted`: a change that was written, now durable; each
    /// change reaches a client once.
    fn on_change_pushed(&mut self, frame: &Value) {
        let group = frame["group"].as_str().unwrap_or_default().to_string();
        let seq = frame["seq"].as_u64().unwrap_or(0);
        let body = frame["body"].as_str().map(str::to_string);
        let deleted = frame["type"] == "msg_deleted";
        let mut ledger = self.shared.ledger();
        if deleted {
            ledger.n_msg_deleted += 1;
        } else {
            ledger.n_msg_edited += 1;
        }
        if !self
            .change_pushes
            .insert((group.clone(), seq, body.clone().filter(|_| !deleted)))
        {
            ledger.violation(format!("[{}] pushed again: {frame}", self.user));
        }
        let Some(changed) = ledger.changed.get_mut(&(group.clone(), seq)) else {
            ledger.violation(format!(
                "[{}] a push for a message nobody changed: {frame}",
                self.user
            ));
            return;
        };
        let known = if deleted {
            changed.delete_written && frame.get("body").is_none()
        } else {
            let at = body
                .as_ref()
                .and_then(|b| changed.edits.iter().position(|e| e == b));
            if let Some(at) = at {
                changed.durable_edits = changed.durable_edits.max(at + 1);
            }
            at.is_some() && frame["edited_ts"].as_u64().is_some()
        };
        if deleted {
            changed.delete_durable = true;
        }
        if !known {
            ledger.violation(format!(
                "[{}] a push for a change never written: {frame}",
                self.user
            ));
        }
    }

    /// Checks a changed message read back after a reconnect (before this client changes
    /// anything on the new server) against what it knows durable.
    fn check_changed(&mut self, group: &str, seq: u64, page: &Value) {
        let mut ledger = self.shared.ledger();
        ledger.n_change_checks += 1;
        let entry = page["messages"].get(0).cloned().unwrap_or(Value::Null);
        let key = (group.to_string(), seq);
        let Some(changed) = ledger.changed.get(&key).cloned() else {
            return;
        };
        if entry["seq"] != seq {
            ledger.violation(format!(
                "[{}] {group} seq {seq} read back as {page}",
                self.user
            ));
            return;
        }
        if entry["deleted"] == true {
            let shape = entry.get("body").is_none() && entry.get("edited_ts").is_none();
            if !changed.delete_written || !shape {
                ledger.violation(format!(
                    "[{}] {group} seq {seq} is deleted (delete written: {}), or not like a deleted one: {entry}",
                    self.user, changed.delete_written
                ));
            }
            if !changed.delete_durable
                && self
                    .change
                    .as_ref()
                    .is_some_and(|c| c.0 == group && c.1 == seq)
            {
                ledger.n_deletes_found_before_answer += 1;
            }
            if let Some(c) = ledger.changed.get_mut(&key) {
                c.delete_durable = true;
            }
            return;
        }
        let body = entry["body"].as_str().unwrap_or_default();
        // 0: the original body; k: the body of edit k - 1.
        let at = if body == changed.original {
            Some(0)
        } else {
            changed.edits.iter().position(|e| e == body).map(|k| k + 1)
        };
        let edited_ts = entry["edited_ts"].as_u64();
        let ts = entry["ts"].as_u64().unwrap_or(0);
        let fine = entry.get("deleted").is_none_or(|d| *d == false)
            && at.is_some_and(|at| at >= changed.durable_edits)
            && (at == Some(0)) == edited_ts.is_none()
            && edited_ts.is_none_or(|e| e >= ts);
        if changed.delete_durable || !fine {
            ledger.violation(format!(
                "[{}] {group} seq {seq} came back as {entry}; acknowledged: delete {}, {} of the edits {:?} (original {:?})",
                self.user, changed.delete_durable, changed.durable_edits, changed.edits, changed.original
            ));
        }
        if let (Some(at), Some(c)) = (at, ledger.changed.get_mut(&key)) {
            c.durable_edits = c.durable_edits.max(at);
        }
    }

    /// Takes a `sent`; returns a `remind` frame to write when the client decides to remind the
    /// message at once.
    fn on_sent(&mut self, frame: &Value) -> Option<Value> {
        let client_id = frame["client_id"].as_str().unwrap_or_default().to_string();
        let group = frame["group"].as_str().unwrap_or_default().to_string();
        let seq = frame["seq"].as_u64().unwrap_or(0);
        let ts = frame["ts"].as_u64().unwrap_or(0);
        let duplicate = frame["duplicate"] == true;
        let mut ledger = self.shared.ledger();
        ledger.n_sent_replies += 1;
        let Some(pos) = self
            .outstanding
            .iter()
            .position(|(id, _, _)| *id == client_id)
        else {
            ledger.violation(format!(
                "[{}] a sent for {client_id}, which is not waiting: {frame}",
                self.user
            ));
            return None;
        };
        let (_, issued_group, resent) = self.outstanding.remove(pos).expect("position in range");
        if issued_group != group || seq == 0 {
            ledger.violation(format!("[{}] bad sent for {client_id}: {frame}", self.user));
        }
        if resent {
            ledger.n_resends += 1;
            if duplicate {
                ledger.n_resends_duplicate += 1;
            }
        } else if duplicate {
            ledger.violation(format!(
                "[{}] first send of {client_id} answered as a duplicate: {frame}",
                self.user
            ));
        }
        if let Some(&(was_seq, was_ts)) = ledger.sent.get(&client_id) {
            if (was_seq, was_ts) != (seq, ts) {
                ledger.violation(format!(
                    "[{}] {client_id} was sent as seq {was_seq} ts {was_ts}, now {frame}",
                    self.user
                ));
            }
        }
        ledger.sent.insert(client_id.clone(), (seq, ts));
        if let Some(view) = self.views.get_mut(&group) {
            view.mine.insert(seq);
        }
        let user = self.user.clone();
        ledger.saw_seq(&group, seq, &user, &client_id, "sent");
        let target = (group.clone(), seq);
        let scheduled = ledger.ever_scheduled.contains(&client_id);
        if ledger
            .issued
            .get(&client_id)
            .is_some_and(|i| i.remind_after.is_some())
        {
            ledger.remind_targets.insert(target);
            None
        } else if !scheduled && seq > 0 && self.rng.gen_bool(REMIND_P) {
            // Reminded once at most (a second one within the interval is `rate_limited`).
            ledger.remind_targets.insert(target);
            ledger.n_reminds += 1;
            Some(
                json!({"type": "remind", "id": format!("remind-{group}-{seq}"), "group": group, "seq": seq}),
            )
        } else {
            None
        }
    }

    /// Takes an `error`: `receipts_off` is expected in `POLICY_GROUP` for a `remind` and for a
    /// scheduled send, which is then written again unscheduled (returned; as a new write, it
    /// takes the next place in this client's order); anything else is a broken promise.
    fn on_error(&mut self, frame: &Value) -> Option<Value> {
        let code = frame["code"].as_str().unwrap_or_default();
        let id = frame["id"].as_str().unwrap_or_default().to_string();
        let mut ledger = self.shared.ledger();
        if code == "receipts_off" {
            if id.starts_with(&format!("remind-{POLICY_GROUP}-")) {
                ledger.n_receipts_off_refusals += 1;
                return None;
            }
            let pos = self.outstanding.iter().position(|(cid, _, _)| *cid == id);
            let issued = ledger.issued.get(&id).cloned();
            if let (Some(pos), Some(issued)) = (pos, issued) {
                if issued.group == POLICY_GROUP && issued.remind_after.is_some() {
                    self.next_n += 1;
                    let entry = ledger.issued.get_mut(&id).expect("issued");
                    entry.remind_after = None;
                    entry.n = self.next_n;
                    let waiting = self.outstanding.remove(pos).expect("position in range");
                    self.outstanding.push_back(waiting);
                    ledger.n_receipts_off_refusals += 1;
                    return Some(send_frame(&id, &issued.group, &issued.body, None));
                }
            }
        }
        ledger.violation(format!("[{}] error frame: {frame}", self.user));
        None
    }

    /// Takes a `reminded`: the reply to a `remind` (with `id`) or a scheduled one that fired.
    fn on_reminded(&mut self, frame: &Value) {
        let group = frame["group"].as_str().unwrap_or_default().to_string();
        let seq = frame["seq"].as_u64().unwrap_or(0);
        let scheduled = frame.get("id").is_none();
        let mut ledger = self.shared.ledger();
        let key = (group.clone(), seq);
        if scheduled {
            ledger.n_scheduled_fired += 1;
            let n = {
                let n = ledger.fired.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            if n > 1 {
                ledger.violation(format!(
                    "[{}] a scheduled reminder fired {n} times: {frame}",
                    self.user
                ));
            }
        } else {
            ledger.n_reminded_replies += 1;
        }
        match ledger.owner.get(&key).cloned() {
            Some((sender, _)) if sender != self.user => {
                ledger.violation(format!(
                    "[{}] reminded for {sender}'s message: {frame}",
                    self.user
                ));
            }
            Some((_, client_id)) if scheduled && !ledger.ever_scheduled.contains(&client_id) => {
                ledger.violation(format!(
                    "[{}] a scheduled reminder fired for unscheduled {client_id}: {frame}",
                    self.user
                ));
            }
            _ => {}
        }
        let count = frame["count"].as_u64();
        let Some(users) = frame["users"].as_array() else {
            if group != POLICY_GROUP || count.is_none() {
                ledger.violation(format!(
                    "[{}] reminded without users under full, or without a count: {frame}",
                    self.user
                ));
            }
            return;
        };
        let users: Vec<String> = users
            .iter()
            .map(|u| u.as_str().unwrap_or_default().to_string())
            .collect();
        let members = members_of_group(&group);
        let sorted = users.windows(2).all(|w| w[0] < w[1]);
        let recipients = users.iter().all(|u| *u != self.user && members.contains(u));
        if !sorted || !recipients || count != Some(users.len() as u64) {
            ledger.violation(format!(
                "[{}] reminded users not sorted, not recipients, or not counted: {frame}",
                self.user
            ));
        }
        if group != POLICY_GROUP {
            ledger.reminded_users.entry(key).or_default().extend(users);
        }
    }

    /// Takes a message from a push or a page: records its owner, advances `known`.
    fn ingest(&mut self, group: &str, message: &Value, via: &str) {
        let seq = message["seq"].as_u64().unwrap_or(0);
        let from = message["from"].as_str().unwrap_or_default();
        let client_id = message["client_id"].as_str().unwrap_or_default();
        self.shared
            .ledger()
            .saw_seq(group, seq, from, client_id, via);
        let Some(view) = self.views.get_mut(group) else {
            return;
        };
        if from == self.user {
            view.mine.insert(seq);
        }
        if seq > view.known {
            view.early.insert(seq, ());
        }
        while view.early.remove(&(view.known + 1)).is_some() {
            view.known += 1;
        }
        let known = view.known;
        view.early.retain(|&s, _| s > known);
    }

    /// Acknowledges and reads what arrived since the last tick (a read a few messages behind).
    async fn move_cursors(
        &mut self,
        ws: &mut Ws,
        acked_here: &mut HashMap<String, u64>,
        read_here: &mut HashMap<String, u64>,
    ) -> Result<(), ()> {
        for group in self.groups.clone() {
            let known = self.views[&group].known;
            if known == 0 {
                continue;
            }
            let acked = acked_here.get(&group).copied().unwrap_or(0);
            if known > acked {
                let frame = json!({"type": "ack", "group": group, "seq": known});
                ws.send(Message::text(frame.to_string()))
                    .await
                    .map_err(|_| ())?;
                acked_here.insert(group.clone(), known);
                self.note_sent_cursor(&group, known, false);
            }
            // Now and then a stale move (a late or repeated frame): the server must ignore it.
            if self.rng.gen_bool(0.05) {
                // Below what this client already decided, so it is stale for the server too.
                let back = self.rng.gen_range(1..20u64);
                let (kind, stale) = if self.rng.gen_bool(0.5) {
                    ("ack", known.saturating_sub(back))
                } else {
                    ("read", self.views[&group].local_read.saturating_sub(back))
                };
                let frame = json!({"type": kind, "group": group, "seq": stale});
                ws.send(Message::text(frame.to_string()))
                    .await
                    .map_err(|_| ())?;
            }
            let lag = self.rng.gen_range(0..4u64);
            let view = self.views.get_mut(&group).expect("a view per group");
            view.local_read = view.local_read.max(known.saturating_sub(lag));
            let read = view.local_read;
            if read > read_here.get(&group).copied().unwrap_or(0) {
                let frame = json!({"type": "read", "group": group, "seq": read});
                ws.send(Message::text(frame.to_string()))
                    .await
                    .map_err(|_| ())?;
                read_here.insert(group.clone(), read);
                self.note_sent_cursor(&group, read, true);
            }
        }
        Ok(())
    }

    fn note_sent_cursor(&mut self, group: &str, seq: u64, read: bool) {
        if let Some(view) = self.views.get_mut(group) {
            view.max_sent_delivered = view.max_sent_delivered.max(seq);
            if read {
                view.max_sent_read = view.max_sent_read.max(seq);
                let mut ledger = self.shared.ledger();
                let max = ledger
                    .max_sent_read
                    .entry((self.user.clone(), group.to_string()))
                    .or_default();
                *max = (*max).max(seq);
            }
        }
    }

    fn on_receipt(&mut self, frame: &Value) {
        let group = frame["group"].as_str().unwrap_or_default().to_string();
        let mut ledger = self.shared.ledger();
        ledger.n_receipt_frames += 1;
        for item in frame["items"].as_array().cloned().unwrap_or_default() {
            let seq = item["seq"].as_u64().unwrap_or(0);
            let counts = Counts {
                delivered: item["delivered"].as_u64().unwrap_or(0),
                read: item["read"].as_u64().unwrap_or(0),
            };
            let recipients = item["recipients"].as_u64().unwrap_or(0);
            if !(counts.read <= counts.delivered && counts.delivered <= recipients) {
                ledger.violation(format!(
                    "[{}] receipt counts out of order: {item}",
                    self.user
                ));
            }
            let max = ledger.receipts.entry((group.clone(), seq)).or_default();
            max.delivered = max.delivered.max(counts.delivered);
            max.read = max.read.max(counts.read);
            // Every recipient (no member joined late here) counted: each one's cursor is durable
            // at least this far.
            let members = members_of_group(&group);
            if recipients + 1 == members.len() as u64 {
                for member in members.iter().filter(|m| **m != self.user) {
                    let floor = ledger
                        .floors
                        .entry((group.clone(), member.clone()))
                        .or_default();
                    if counts.delivered == recipients {
                        floor.0 = floor.0.max(seq);
                    }
                    if counts.read == recipients {
                        floor.1 = floor.1.max(seq);
                    }
                }
            } else {
                ledger.violation(format!(
                    "[{}] {group}: wrong recipients count: {item}",
                    self.user
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The manager: membership and role changes under the kills (docs/PROTOCOL.md §3.5).

/// A user's place in `MANAGED_GROUP`: role and `joined_seq` (`None` where not known yet: a
/// member whose add is in flight joins at whatever `last_seq` is then).
type Roster = BTreeMap<String, (String, Option<u64>)>;

/// A push about `MANAGED_GROUP` that a change makes to one of the manager's sessions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Push {
    Joined,
    /// `left` with this reason.
    Left(String),
    /// `group_updated` with this role.
    Role(String),
}

/// What the kill loop and the manager know about `MANAGED_GROUP`'s roster (in the ledger).
#[derive(Default)]
struct Managed {
    /// The roster as last answered (`None` while an answered change's exact roster is being
    /// read back: the change is durable, so the old roster no longer counts).
    answered: Option<Roster>,
    /// What the roster may be after the change written and not yet answered: the whole change
    /// first, then the first of its two writes for a change made of two (a hand-over before a
    /// removal; an admin `PUT` of a new member with a role, which adds, then sets the role).
    in_flight: Vec<Roster>,
    /// The change in flight, in words.
    what: String,
    n_changes: u64,
    n_refusals: u64,
    n_hand_overs: u64,
    n_admin_changes: u64,
    n_sends: u64,
    n_kills_in_flight: u64,
    n_found_applied: u64,
    n_found_not_applied: u64,
    n_found_half_applied: u64,
    /// Pushes seen while their change was still unanswered, and checked after the crash.
    n_pushes_before_answer: u64,
}

impl Managed {
    /// Every roster the group may have now: the answered one and the outcomes in flight.
    fn allowed(&self) -> Vec<Roster> {
        self.answered
            .iter()
            .cloned()
            .chain(self.in_flight.iter().cloned())
            .collect()
    }
}

fn managed_user(i: usize) -> String {
    format!("m{i}")
}

fn managed_users() -> Vec<String> {
    (0..N_MANAGED_USERS).map(managed_user).collect()
}

/// The roster in a `members` reply or an admin group's `members`.
fn roster_of(members: &Value) -> Roster {
    members
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    let user = m["user"].as_str().unwrap_or_default().to_string();
                    let role = m["role"].as_str().unwrap_or_default().to_string();
                    (user, (role, m["joined_seq"].as_u64()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `actual` (exact) is `expected`: the same members with the same roles, and the same
/// join points where `expected` knows them.
fn roster_fits(actual: &Roster, expected: &Roster) -> bool {
    actual.len() == expected.len()
        && actual.iter().all(|(user, (role, joined))| {
            expected
                .get(user)
                .is_some_and(|(r, j)| r == role && (j.is_none() || j == joined))
        })
}

fn n_owners(roster: &Roster) -> usize {
    roster.values().filter(|(role, _)| role == "owner").count()
}

fn role_in<'a>(roster: &'a Roster, user: &str) -> &'a str {
    roster.get(user).map(|(r, _)| r.as_str()).unwrap_or("")
}

/// §3.5: members may not; owners may; admins may unless an owner is made, unmade or removed.
fn may_change(asker: &str, touches_owner: bool) -> bool {
    match asker {
        "owner" => true,
        "admin" => !touches_owner,
        _ => false,
    }
}

/// §3.5: the longest-standing admin, else member (the earliest `joined_seq`; the lower id on
/// a tie), other than `leaving`.
fn successor(roster: &Roster, leaving: &str) -> Option<String> {
    roster
        .iter()
        .filter(|(user, _)| *user != leaving)
        .min_by_key(|(user, (role, joined))| {
            (role != "admin", joined.unwrap_or(u64::MAX), (*user).clone())
        })
        .map(|(user, _)| user.clone())
}

/// `user` goes (leaves, or is removed by the admin): the roster after it, the half-way roster
/// when the last owner's going hands ownership on first, and the pushes.
fn without(
    roster: &Roster,
    user: &str,
    reason: &str,
) -> (Roster, Option<Roster>, Vec<(String, Push)>) {
    let mut after = roster.clone();
    let mut half = None;
    let mut pushes = vec![(user.to_string(), Push::Left(reason.to_string()))];
    if role_in(roster, user) == "owner" && n_owners(roster) == 1 {
        if let Some(next) = successor(roster, user) {
            if let Some(entry) = after.get_mut(&next) {
                entry.0 = "owner".to_string();
            }
            half = Some(after.clone());
            pushes.push((next, Push::Role("owner".to_string())));
        }
    }
    after.remove(user);
    (after, half, pushes)
}

/// How a planned change is answered.
#[derive(Clone, Debug)]
enum Expect {
    /// A `members` reply with the roster after the change.
    Members,
    /// `left {id, reason: "left"}`.
    Left,
    /// An `error` with this code; nothing changes.
    Refused(&'static str),
    /// An admin HTTP answer with this status.
    Status(u16),
    /// An admin HTTP refusal: status and code; nothing changes.
    StatusRefused(u16, &'static str),
    /// `sent` (a message in the group, so later members join at later seqs).
    Sent,
}

/// One change the manager makes, and what it expects of it.
struct Plan {
    what: String,
    /// The WebSocket frame and the session (user) that writes it; or an admin request.
    frame: Option<(String, Value)>,
    http: Option<(&'static str, String, Option<Value>)>,
    expect: Expect,
    /// The roster after it (`None` for a refusal or a send: unchanged), then a half-way one.
    outcomes: Vec<Roster>,
    /// Pushes it makes; a session may or may not get each (a crash may come first).
    pushes: Vec<(String, Push)>,
}

/// A change the actor's role does not allow: refused with `not_allowed`, nothing changes.
fn refused_plan(actor: &str, what: String, frame: Value) -> Plan {
    Plan {
        what,
        frame: Some((actor.to_string(), frame)),
        http: None,
        expect: Expect::Refused("not_allowed"),
        outcomes: Vec::new(),
        pushes: Vec::new(),
    }
}

/// How the manager's round with one server ended.
enum Round {
    Lost,
    Finished,
}

/// The manager: one session per user of `MANAGED_USERS`, changing `MANAGED_GROUP`'s members
/// and roles with the WebSocket frames (and now and then the admin API), one change at a time,
/// checking each answer against the rules, and after each crash what the group became.
struct Manager {
    shared: Arc<Shared>,
    rng: StdRng,
    http_base: String,
    next_request: u64,
    /// Pushes that answered changes made and the sessions have not read yet.
    owed: HashMap<(String, Push), u32>,
    /// The pushes the change in flight makes, and those of them already seen (before its
    /// answer: each one says the change happened).
    in_flight_pushes: Vec<(String, Push)>,
    seen_early: Vec<(String, Push)>,
}

type Sessions = BTreeMap<String, Ws>;

impl Manager {
    fn new(shared: Arc<Shared>, seed: u64) -> Manager {
        let http_base = shared
            .ws_url
            .replacen("ws://", "http://", 1)
            .trim_end_matches("/ws")
            .to_string();
        Manager {
            shared,
            rng: StdRng::seed_from_u64(seed ^ 0x6d67),
            http_base,
            next_request: 0,
            owed: HashMap::new(),
            in_flight_pushes: Vec::new(),
            seen_early: Vec::new(),
        }
    }

    fn violation(&self, what: String) {
        self.shared.ledger().violation(format!("[manager] {what}"));
    }

    async fn run(mut self) {
        loop {
            // After a crash, the kill loop reads the stored roster first: nothing may change it
            // before that.
            loop {
                let kills = self.shared.kills.load(Ordering::SeqCst);
                if self.shared.managed_checked.load(Ordering::SeqCst) >= kills {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let Some((mut sessions, welcomes)) = self.connect_all().await else {
                tokio::time::sleep(Duration::from_millis(15)).await;
                continue;
            };
            let round = match self.resolve(&mut sessions, &welcomes).await {
                Ok(()) => self.work(&mut sessions).await,
                Err(()) => Round::Lost,
            };
            match round {
                Round::Finished => {
                    for (_, mut ws) in sessions {
                        let _ = ws.close(None).await;
                    }
                    return;
                }
                Round::Lost => {
                    // Read what the sessions got before the crash: a push seen for the change
                    // in flight says it happened.
                    for (user, ws) in sessions.iter_mut() {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                        loop {
                            let left =
                                deadline.saturating_duration_since(tokio::time::Instant::now());
                            match next_frame(ws, left).await {
                                Ok(Some(frame)) => self.on_frame(user, &frame),
                                Ok(None) | Err(()) => break,
                            }
                        }
                    }
                }
            }
        }
    }

    async fn connect_all(&mut self) -> Option<(Sessions, BTreeMap<String, Value>)> {
        let mut sessions = Sessions::new();
        let mut welcomes = BTreeMap::new();
        for user in managed_users() {
            let Some((ws, welcome)) = connect_ws(&self.shared.ws_url, &common::token(&user)).await
            else {
                for (_, mut ws) in sessions {
                    let _ = ws.close(None).await;
                }
                return None;
            };
            sessions.insert(user.clone(), ws);
            welcomes.insert(user, welcome);
        }
        Some((sessions, welcomes))
    }

    /// At the start of a round: reads the roster back (`members`), checks it against what may
    /// be (the answered roster, or the change in flight, applied whole or half) and against
    /// every push seen for the change in flight, and against each session's `welcome`.
    async fn resolve(
        &mut self,
        sessions: &mut Sessions,
        welcomes: &BTreeMap<String, Value>,
    ) -> Result<(), ()> {
        let listed: BTreeMap<String, String> = welcomes
            .iter()
            .filter_map(|(user, welcome)| {
                let entry = welcome["groups"]
                    .as_array()?
                    .iter()
                    .find(|g| g["group"] == MANAGED_GROUP)?;
                Some((
                    user.clone(),
                    entry["role"].as_str().unwrap_or_default().to_string(),
                ))
            })
            .collect();
        let Some(reader) = listed.keys().next().cloned() else {
            self.violation(format!(
                "no user's welcome lists {MANAGED_GROUP}: {welcomes:?}"
            ));
            return Err(());
        };
        let members = self.members_of(sessions, &reader).await?;
        let now = roster_of(&members);
        let by_welcome: BTreeMap<String, String> = now
            .iter()
            .map(|(u, (r, _))| (u.clone(), r.clone()))
            .collect();
        if by_welcome != listed {
            self.violation(format!(
                "the welcomes list {MANAGED_GROUP} with roles {listed:?}, members answers {now:?}"
            ));
        }
        let (allowed, what) = {
            let ledger = self.shared.ledger();
            (ledger.managed.allowed(), ledger.managed.what.clone())
        };
        if !allowed.iter().any(|r| roster_fits(&now, r)) {
            self.violation(format!(
                "after a restart {MANAGED_GROUP} is {now:?}, which is neither the answered roster nor what the change in flight ({what}) may have made: {allowed:?}"
            ));
        }
        for (user, push) in std::mem::take(&mut self.seen_early) {
            let kept = match &push {
                Push::Joined => now.contains_key(&user),
                Push::Left(_) => !now.contains_key(&user),
                Push::Role(role) => role_in(&now, &user) == role,
            };
            self.shared.ledger().managed.n_pushes_before_answer += 1;
            if !kept {
                self.violation(format!(
                    "{user} was pushed {push:?} for the change in flight ({what}), but after the crash {MANAGED_GROUP} is {now:?}: the push came before the change was durable"
                ));
            }
        }
        self.settle(now);
        self.owed.clear();
        self.in_flight_pushes.clear();
        Ok(())
    }

    /// Changes the roster until the connection is lost, or until the clients stop sending.
    async fn work(&mut self, sessions: &mut Sessions) -> Round {
        loop {
            if self.shared.stop_sending.load(Ordering::SeqCst) {
                return Round::Finished;
            }
            let roster = self.shared.ledger().managed.answered.clone();
            let Some(roster) = roster else {
                self.violation("no answered roster to plan from".into());
                return Round::Finished;
            };
            let plan = self.plan(&roster);
            if self.execute(sessions, &roster, plan).await.is_err() {
                return Round::Lost;
            }
            for (user, ws) in sessions.iter_mut() {
                loop {
                    match next_frame(ws, Duration::ZERO).await {
                        Ok(Some(frame)) => self.on_frame(user, &frame),
                        Ok(None) => break,
                        Err(()) => return Round::Lost,
                    }
                }
            }
        }
    }

    /// A change drawn at random from what the roster allows and what it refuses.
    fn plan(&mut self, roster: &Roster) -> Plan {
        const ROLES: [&str; 3] = ["member", "admin", "owner"];
        let members: Vec<String> = roster.keys().cloned().collect();
        let outsiders: Vec<String> = managed_users()
            .into_iter()
            .filter(|u| !roster.contains_key(u))
            .collect();
        let pick = |rng: &mut StdRng, list: &[String]| list[rng.gen_range(0..list.len())].clone();
        let group = MANAGED_GROUP;
        loop {
            let actor = pick(&mut self.rng, &members);
            let asker = role_in(roster, &actor).to_string();
            match self.rng.gen_range(0..16) {
                0..=2 if !outsiders.is_empty() => {
                    let user = pick(&mut self.rng, &outsiders);
                    let frame = json!({"type": "add_member", "group": group, "user": user});
                    let what = format!("{actor} ({asker}) adds {user}");
                    if !may_change(&asker, false) {
                        return refused_plan(&actor, what, frame);
                    }
                    let mut after = roster.clone();
                    after.insert(user.clone(), ("member".into(), None));
                    return Plan {
                        what,
                        frame: Some((actor, frame)),
                        http: None,
                        expect: Expect::Members,
                        outcomes: vec![after],
                        pushes: vec![(user, Push::Joined)],
                    };
                }
                3..=4 if members.len() > 1 => {
                    let others: Vec<String> =
                        members.iter().filter(|u| **u != actor).cloned().collect();
                    let user = pick(&mut self.rng, &others);
                    let frame = json!({"type": "remove_member", "group": group, "user": user});
                    let what = format!(
                        "{actor} ({asker}) removes {user} ({})",
                        role_in(roster, &user)
                    );
                    if !may_change(&asker, role_in(roster, &user) == "owner") {
                        return refused_plan(&actor, what, frame);
                    }
                    if roster.len() <= 2 {
                        continue;
                    }
                    let mut after = roster.clone();
                    after.remove(&user);
                    return Plan {
                        what,
                        frame: Some((actor, frame)),
                        http: None,
                        expect: Expect::Members,
                        outcomes: vec![after],
                        pushes: vec![(user, Push::Left("removed".into()))],
                    };
                }
                5..=9 => {
                    let user = pick(&mut self.rng, &members);
                    let to = ROLES[self.rng.gen_range(0..ROLES.len())];
                    let from = role_in(roster, &user).to_string();
                    let frame =
                        json!({"type": "set_role", "group": group, "user": user, "role": to});
                    let what = format!("{actor} ({asker}) makes {user} ({from}) {to}");
                    let touches_owner = from == "owner" || to == "owner";
                    if !may_change(&asker, touches_owner)
                        || (from != to && from == "owner" && n_owners(roster) == 1)
                    {
                        return refused_plan(&actor, what, frame);
                    }
                    let mut after = roster.clone();
                    let mut pushes = Vec::new();
                    if from != to {
                        if let Some(entry) = after.get_mut(&user) {
                            entry.0 = to.to_string();
                        }
                        pushes.push((user, Push::Role(to.to_string())));
                    }
                    return Plan {
                        what,
                        frame: Some((actor, frame)),
                        http: None,
                        expect: Expect::Members,
                        outcomes: vec![after],
                        pushes,
                    };
                }
                10 if roster.len() > 2 => {
                    let (after, half, pushes) = without(roster, &actor, "left");
                    return Plan {
                        what: format!("{actor} ({asker}) leaves"),
                        frame: Some((actor, json!({"type": "leave", "group": group}))),
                        http: None,
                        expect: Expect::Left,
                        outcomes: std::iter::once(after).chain(half).collect(),
                        pushes,
                    };
                }
                11 | 12 => {
                    // The admin: PUT of any managed user with a role.
                    let user = pick(&mut self.rng, &managed_users());
                    let to = ROLES[self.rng.gen_range(0..ROLES.len())];
                    let path = format!("/api/groups/{group}/members/{user}");
                    let body = Some(json!({"role": to}));
                    let what =
                        format!("the admin puts {user} ({}) as {to}", role_in(roster, &user));
                    let mut after = roster.clone();
                    let mut outcomes = Vec::new();
                    let mut pushes = Vec::new();
                    let from = role_in(roster, &user).to_string();
                    let expect = if from.is_empty() {
                        after.insert(user.clone(), (to.to_string(), None));
                        outcomes.push(after);
                        pushes.push((user.clone(), Push::Joined));
                        if to != "member" {
                            let mut half = roster.clone();
                            half.insert(user.clone(), ("member".into(), None));
                            outcomes.push(half);
                            pushes.push((user, Push::Role(to.to_string())));
                        }
                        Expect::Status(200)
                    } else if from != to && from == "owner" && n_owners(roster) == 1 {
                        Expect::StatusRefused(403, "not_allowed")
                    } else {
                        if from != to {
                            if let Some(entry) = after.get_mut(&user) {
                                entry.0 = to.to_string();
                            }
                            pushes.push((user, Push::Role(to.to_string())));
                        }
                        outcomes.push(after);
                        Expect::Status(200)
                    };
                    return Plan {
                        what,
                        frame: None,
                        http: Some(("PUT", path, body)),
                        expect,
                        outcomes,
                        pushes,
                    };
                }
                13 if roster.len() > 2 => {
                    // The admin removes anyone, a last owner included (who hands over).
                    let user = pick(&mut self.rng, &members);
                    let (after, half, pushes) = without(roster, &user, "removed");
                    return Plan {
                        what: format!("the admin removes {user} ({})", role_in(roster, &user)),
                        frame: None,
                        http: Some((
                            "DELETE",
                            format!("/api/groups/{group}/members/{user}"),
                            None,
                        )),
                        expect: Expect::Status(204),
                        outcomes: std::iter::once(after).chain(half).collect(),
                        pushes,
                    };
                }
                14 => {
                    self.next_request += 1;
                    let client_id = format!("mg-{}", self.next_request);
                    let frame = json!({"type": "send", "group": group, "client_id": client_id, "body": "roster"});
                    return Plan {
                        what: format!("{actor} sends {client_id}"),
                        frame: Some((actor, frame)),
                        http: None,
                        expect: Expect::Sent,
                        outcomes: Vec::new(),
                        pushes: Vec::new(),
                    };
                }
                _ => {}
            }
        }
    }

    /// Makes one change and takes its answer; `Err` when the connection (or the server) is
    /// lost meanwhile, the change then in flight.
    async fn execute(
        &mut self,
        sessions: &mut Sessions,
        roster: &Roster,
        plan: Plan,
    ) -> Result<(), ()> {
        let changes = !matches!(plan.expect, Expect::Sent);
        if changes {
            let mut ledger = self.shared.ledger();
            ledger.managed.n_changes += 1;
            ledger.managed.in_flight = plan.outcomes.clone();
            ledger.managed.what = plan.what.clone();
        }
        self.in_flight_pushes = plan.pushes.clone();
        self.seen_early.clear();
        let answer = if let Some((actor, mut frame)) = plan.frame.clone() {
            self.next_request += 1;
            let id = format!("mg-{}", self.next_request);
            frame["id"] = json!(id);
            self.request(sessions, &actor, frame).await?
        } else if let Some((method, path, body)) = plan.http.clone() {
            self.shared.ledger().managed.n_admin_changes += 1;
            let url = format!("{}{path}", self.http_base);
            let answered = tokio::task::spawn_blocking(move || admin_request(method, &url, body))
                .await
                .map_err(|_| ())?;
            let (status, body) = answered?;
            json!({"status": status, "body": body})
        } else {
            return Ok(());
        };
        let unchanged = || roster.clone();
        let outcome = plan.outcomes.first().cloned().unwrap_or_else(unchanged);
        match (&plan.expect, answer["type"].as_str()) {
            (Expect::Members, Some("members")) => {
                let now = roster_of(&answer["members"]);
                if !roster_fits(&now, &outcome) {
                    self.violation(format!(
                        "{}: answered {now:?}, expected {outcome:?}",
                        plan.what
                    ));
                }
                self.settle(now);
            }
            (Expect::Left, Some("left")) if answer["reason"] == "left" => {
                self.narrow(outcome.clone());
                self.read_back(sessions, &outcome, &plan.what).await?;
            }
            (Expect::Refused(code), Some("error")) if answer["code"] == *code => {
                self.shared.ledger().managed.n_refusals += 1;
                self.settle(roster.clone());
            }
            (Expect::Sent, Some("sent")) => {
                self.shared.ledger().managed.n_sends += 1;
            }
            (Expect::Status(status), None) if answer["status"] == *status => {
                // A PUT answers the member, with the role it was given.
                let role = plan.http.as_ref().and_then(|(_, _, body)| body.as_ref());
                if role.is_some_and(|body| answer["body"]["role"] != body["role"]) {
                    self.violation(format!("{}: answered {answer}", plan.what));
                }
                self.narrow(outcome.clone());
                self.read_back(sessions, &outcome, &plan.what).await?;
            }
            (Expect::StatusRefused(status, code), None)
                if answer["status"] == *status && answer["body"]["error"]["code"] == *code =>
            {
                self.shared.ledger().managed.n_refusals += 1;
                self.settle(roster.clone());
            }
            _ => {
                self.violation(format!(
                    "{}: expected {:?}, answered {answer}",
                    plan.what, plan.expect
                ));
                // Learn what the group is now, to go on from there.
                let reader = roster.keys().next().cloned().unwrap_or_default();
                let members = self.members_of(sessions, &reader).await?;
                self.settle(roster_of(&members));
            }
        }
        let hands_over =
            matches!(plan.expect, Expect::Left | Expect::Status(204)) && plan.outcomes.len() == 2;
        if hands_over {
            self.shared.ledger().managed.n_hand_overs += 1;
        }
        // Its pushes not seen yet may still come.
        for push in std::mem::take(&mut self.in_flight_pushes) {
            if let Some(pos) = self.seen_early.iter().position(|p| *p == push) {
                self.seen_early.remove(pos);
            } else {
                *self.owed.entry(push).or_default() += 1;
            }
        }
        self.seen_early.clear();
        Ok(())
    }

    /// After an answered `leave` or admin change: the exact roster, which must be `expected`.
    async fn read_back(
        &mut self,
        sessions: &mut Sessions,
        expected: &Roster,
        what: &str,
    ) -> Result<(), ()> {
        let Some(reader) = expected.keys().next().cloned() else {
            return Ok(());
        };
        let members = self.members_of(sessions, &reader).await?;
        let now = roster_of(&members);
        if !roster_fits(&now, expected) {
            self.violation(format!(
                "{what}: answered, then members says {now:?}, expected {expected:?}"
            ));
        }
        self.settle(now);
        Ok(())
    }

    async fn members_of(&mut self, sessions: &mut Sessions, user: &str) -> Result<Value, ()> {
        self.next_request += 1;
        let frame = json!({"type": "members", "id": format!("mg-{}", self.next_request), "group": MANAGED_GROUP});
        let reply = self.request(sessions, user, frame).await?;
        if reply["type"] != "members" {
            self.violation(format!(
                "members of {MANAGED_GROUP} as {user} answered {reply}"
            ));
            return Err(());
        }
        Ok(reply["members"].clone())
    }

    /// Writes `frame` on `user`'s session and reads until its reply; other frames are pushes.
    async fn request(
        &mut self,
        sessions: &mut Sessions,
        user: &str,
        frame: Value,
    ) -> Result<Value, ()> {
        let id = frame["id"].clone();
        let ws = sessions.get_mut(user).ok_or(())?;
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|_| ())?;
        loop {
            match next_frame(ws, TIMEOUT).await? {
                Some(reply) if reply.get("id") == Some(&id) => return Ok(reply),
                Some(push) => self.on_frame(user, &push),
                None => {
                    self.violation(format!("{frame} as {user}: no answer within {TIMEOUT:?}"));
                    return Err(());
                }
            }
        }
    }

    /// A frame a session got besides a reply: a push about the group is owed by an answered
    /// change, or comes from the change in flight (then it says that change happened).
    fn on_frame(&mut self, user: &str, frame: &Value) {
        if frame["group"] != MANAGED_GROUP {
            return;
        }
        let push = match frame["type"].as_str().unwrap_or_default() {
            "joined" => Push::Joined,
            "left" if frame.get("id").is_none() => {
                Push::Left(frame["reason"].as_str().unwrap_or_default().to_string())
            }
            "group_updated" if frame.get("id").is_none() && frame.get("role").is_some() => {
                Push::Role(frame["role"].as_str().unwrap_or_default().to_string())
            }
            "error" => {
                self.violation(format!("[{user}] error frame: {frame}"));
                return;
            }
            _ => return,
        };
        let key = (user.to_string(), push);
        if let Some(owed) = self.owed.get_mut(&key).filter(|n| **n > 0) {
            *owed -= 1;
        } else if self.in_flight_pushes.contains(&key) && !self.seen_early.contains(&key) {
            self.seen_early.push(key);
        } else {
            self.violation(format!(
                "[{user}] a push no change made: {frame} (in flight: {:?})",
                self.in_flight_pushes
            ));
        }
    }

    /// The roster is known exactly: nothing is in flight.
    fn settle(&self, roster: Roster) {
        if !roster.is_empty() && n_owners(&roster) == 0 {
            self.violation(format!("{MANAGED_GROUP} has no owner: {roster:?}"));
        }
        let mut ledger = self.shared.ledger();
        ledger.managed.answered = Some(roster);
        ledger.managed.in_flight.clear();
    }

    /// The change was answered (durable), its exact roster not read yet: only that outcome
    /// counts from now on.
    fn narrow(&self, roster: Roster) {
        let mut ledger = self.shared.ledger();
        ledger.managed.answered = None;
        ledger.managed.in_flight = vec![roster];
    }
}

/// The next JSON frame within `wait` (`Ok(None)`: nothing came); `Err` when the connection
/// ended.
async fn next_frame(ws: &mut Ws, wait: Duration) -> Result<Option<Value>, ()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str(&text).map(Some).map_err(|_| ())
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
            Ok(_) => return Err(()),
        }
    }
}

/// A WebSocket session with its `welcome`; `None` when the server does not answer.
async fn connect_ws(ws_url: &str, token: &str) -> Option<(Ws, Value)> {
    let mut request = ws_url.into_client_request().ok()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    let connecting = tokio_tungstenite::connect_async(request);
    let (mut ws, _) = tokio::time::timeout(TIMEOUT, connecting).await.ok()?.ok()?;
    let welcome = next_frame(&mut ws, TIMEOUT).await.ok()??;
    (welcome["type"] == "welcome").then_some((ws, welcome))
}

/// One admin request (blocking); `Err` when the server cannot be reached (a crash).
fn admin_request(method: &str, url: &str, body: Option<Value>) -> Result<(u16, Value), ()> {
    let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
    let request = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {}", common::ADMIN_TOKEN));
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(_) => return Err(()),
    };
    let status = response.status();
    let text = response.into_string().map_err(|_| ())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, body))
}

/// A `send` frame; a scheduled one carries `remind_after_secs` and an `id` (its client_id), so a
/// `receipts_off` refusal can be matched to it.
fn send_frame(client_id: &str, group: &str, body: &str, remind_after: Option<u64>) -> Value {
    let mut frame = json!({"type": "send", "group": group, "client_id": client_id, "body": body});
    if let Some(secs) = remind_after {
        frame["remind_after_secs"] = json!(secs);
        frame["id"] = json!(client_id);
    }
    frame
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

/// Pages a group's whole history through the admin API.
fn admin_history(server: &Server, group: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = server.admin_expect(
            "GET",
            &format!("/api/groups/{group}/messages?after={after}&limit=1000"),
            None,
            200,
        );
        let messages = page["messages"].as_array().expect("messages").clone();
        if let Some(last) = messages.last() {
            after = common::seq(last);
        }
        all.extend(messages);
        if page["more"] != true {
            return all;
        }
    }
}

/// Pages a group's whole history backwards over WebSocket `history`, returned ascending.
async fn ws_history(client: &mut common::Client, group: &str) -> Vec<Value> {
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut frame = json!({"type": "history", "group": group, "limit": 1000});
        if let Some(before) = before {
            frame["before"] = json!(before);
        }
        let page = client.request(frame).await;
        assert_eq!(page["type"], "messages", "history answered with {page}");
        let messages = page["messages"].as_array().expect("messages").clone();
        if let Some(first) = messages.first() {
            before = Some(common::seq(first));
        }
        let more = page["more"] == true;
        pages.push(messages);
        if !more {
            break;
        }
    }
    pages.into_iter().rev().flatten().collect()
}

#[test]
fn kill_9_under_load_loses_and_duplicates_nothing() {
    let kills = env_u64("ROLLCALL_CRASH_KILLS").unwrap_or(DEFAULT_KILLS);
    let seed = env_u64("ROLLCALL_CRASH_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("crash test: seed {seed} (ROLLCALL_CRASH_SEED={seed} to replay), {kills} kills");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let idle_ms = GROUP_IDLE_MS.to_string();
    let mut server = Server::start_with(&[
        "--receipt-interval-ms",
        RECEIPT_INTERVAL_MS,
        "--group-idle-ms",
        &idle_ms,
        "--prune-interval-secs",
        "1",
    ]);
    server.create_group(SLEEPY_GROUP, &SLEEPERS);
    server.admin_expect(
        "PUT",
        &format!("/api/groups/{SLEEPY_GROUP}"),
        Some(json!({"retention_secs": 1})),
        200,
    );
    let sleepy = Arc::new(Mutex::new(Sleepy::default()));
    for g in 0..N_GROUPS {
        let members = members_of(g);
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        server.create_group(&group_name(g), &members);
    }
    // The managed group starts with an owner, an admin and a member.
    let managed = managed_users();
    let managed: Vec<&str> = managed.iter().map(String::as_str).collect();
    server.ensure_users(&managed);
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": MANAGED_GROUP, "members": &managed[..3], "owner": managed[0]})),
        201,
    );
    server.admin_expect(
        "PUT",
        &format!("/api/groups/{MANAGED_GROUP}/members/{}", managed[1]),
        Some(json!({"role": "admin"})),
        200,
    );
    let ledger = Ledger {
        managed: Managed {
            answered: Some(roster_of(&server.group(MANAGED_GROUP)["members"])),
            ..Managed::default()
        },
        ..Ledger::default()
    };
    let shared = Arc::new(Shared {
        ledger: Mutex::new(ledger),
        kills: AtomicU64::new(0),
        stop_sending: AtomicBool::new(false),
        n_drained: AtomicUsize::new(0),
        in_flight: AtomicU64::new(0),
        managed_checked: AtomicU64::new(0),
        ws_url: server.ws_url(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut clients: Vec<_> = (0..N_CLIENTS)
        .map(|c| runtime.spawn(Client::new(c, Arc::clone(&shared), seed).run()))
        .collect();
    clients.push(runtime.spawn(Manager::new(Arc::clone(&shared), seed).run()));
    clients.push(runtime.spawn(run_sleeper(Arc::clone(&shared), Arc::clone(&sleepy))));
    let (mut n_passivations, mut n_pruned) = (0, 0);

    // The crashes: SIGKILL at a random moment, restart on the same data dir and port. Before
    // half of them, at a random moment (right before the kill too), POLICY_GROUP gets a policy.
    let mut kills_with_sends_in_flight = 0;
    let mut policy = "full";
    let mut n_policy_changes = 0;
    for k in 1..=kills {
        let delay = rng.gen_range(KILL_DELAY_MS);
        if rng.gen_bool(0.5) {
            let at = rng.gen_range(0..=delay);
            std::thread::sleep(Duration::from_millis(at));
            policy = POLICIES[rng.gen_range(0..POLICIES.len())];
            let group = server.set_receipts(POLICY_GROUP, policy);
            assert_eq!(group["receipts"], policy, "{group}");
            n_policy_changes += 1;
            std::thread::sleep(Duration::from_millis(delay - at));
        } else {
            std::thread::sleep(Duration::from_millis(delay));
        }
        shared.kills.store(k, Ordering::SeqCst);
        if shared.in_flight.load(Ordering::Relaxed) > 0 {
            kills_with_sends_in_flight += 1;
        }
        let (passivated, pruned) = passivations_and_pruned(&server);
        n_passivations += passivated;
        n_pruned += pruned;
        server.kill9();
        if k == kills.div_ceil(2) && common::on_postgres() {
            // The database crashes too, once, halfway: the server comes back on what it
            // committed.
            common::postgres::cluster().stop();
            common::postgres::cluster().start_again();
            common::postgres::cluster().wait_ready();
        }
        // What MANAGED_GROUP may be now that the server is gone (a reply still unread in a
        // socket only confirms one of these).
        let (allowed, in_flight, answered, what) = {
            let ledger = shared.ledger();
            let managed = &ledger.managed;
            let answered = managed.answered.clone();
            (
                managed.allowed(),
                managed.in_flight.clone(),
                answered,
                managed.what.clone(),
            )
        };
        server.restart_on_same_port();
        check_managed(
            &server,
            &shared,
            k,
            seed,
            &allowed,
            &in_flight,
            answered.as_ref(),
            &what,
        );
        shared.managed_checked.store(k, Ordering::SeqCst);
        check_sleepy(
            &server,
            &shared,
            &sleepy,
            &format!("after kill {k} (seed {seed})"),
        );
        let now = server.group(POLICY_GROUP);
        assert_eq!(
            now["receipts"], policy,
            "{POLICY_GROUP} after kill {k} lost its last acknowledged policy (seed {seed}): {now}"
        );
        let violations = shared.ledger().violations.len();
        assert_eq!(
            violations, 0,
            "promises broken (seed {seed}); see VIOLATION lines"
        );
    }

    // Drain: no new sends; every client gets all its sends answered, then catches up. The
    // final `readers` checks need POLICY_GROUP under `full` again.
    std::thread::sleep(Duration::from_millis(rng.gen_range(KILL_DELAY_MS)));
    server.set_receipts(POLICY_GROUP, "full");
    shared.stop_sending.store(true, Ordering::SeqCst);
    // A client that is already drained and never gets another `sent` marks itself here.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (c, handle) in clients.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        runtime
            .block_on(async { tokio::time::timeout(left, handle).await })
            .unwrap_or_else(|_| panic!("client {c} did not finish draining (seed {seed})"))
            .unwrap_or_else(|e| panic!("client {c} panicked: {e} (seed {seed})"));
    }
    eprintln!("crash test: traffic done after {:?}", started.elapsed());

    let (passivated, pruned) = passivations_and_pruned(&server);
    n_passivations += passivated;
    n_pruned += pruned;
    // One more crash with nothing in flight, so the cursors below are read back from disk.
    server.restart_on_same_port();
    check_sleepy(
        &server,
        &shared,
        &sleepy,
        &format!("after the final restart (seed {seed})"),
    );
    let rounds = sleepy.lock().expect("sleepy").rounds;
    assert!(
        n_passivations > 0 && n_pruned > 0 && rounds > 0,
        "the run must passivate groups and prune {SLEEPY_GROUP}: {n_passivations} passivations, \
         {n_pruned} messages pruned, {rounds} sleeper rounds (seed {seed})"
    );
    eprintln!(
        "crash test: {n_passivations} passivations, {n_pruned} messages pruned, {rounds} rounds \
         of the sleeper in {SLEEPY_GROUP}, each pushed through a restarted actor"
    );
    let ledger = std::mem::take(&mut *shared.ledger());
    runtime.block_on(verify_managed(&server, &ledger.managed, seed));
    let report = runtime.block_on(verify(&server, &ledger, seed));
    eprintln!(
        "crash test: seed {seed}: {kills} kills ({kills_with_sends_in_flight} with sends in flight); \
         {} sends issued, {} acknowledged (all), {} found, 0 lost, 0 duplicated; \
         {} resends after a crash ({} answered duplicate: true with the original seq); \
         history {} messages in {N_GROUPS} groups; {} msg pushes, {} receipt frames; \
         {} welcomes ({} read straight after a restart), {} cursor moves lost in crashes and repeated, \
         {} (user, group) read cursors with a durable floor from receipts; \
         {n_policy_changes} policy changes of {POLICY_GROUP}, {} receipts_off refusals there; \
         {} reminds ({} reminded replies), {} scheduled sends ({} fired to an online sender), \
         {} reminder pushes, {} reminders listed in welcomes, {} required and found \
         (+{} after the final restart); \
         {MANAGED_GROUP}: {} membership and role changes ({} refused as the rules say, {} by the admin, {} hand-overs), \
         {} sends; a change in flight at {} kills: found applied {}, not applied {}, half applied {}; \
         {} pushes seen before their change was answered, all kept; \
         {} edits and {} deletes of own messages ({} written again after a crash, {} deletes found \
         applied before their answer), {} read back after restarts as promised, {} msg_edited and \
         {} msg_deleted pushes, {} welcomes with acknowledged deletes left out of unread; \
         {:?} in all",
        ledger.issued.len(),
        ledger.sent.len(),
        report.found,
        ledger.n_resends,
        ledger.n_resends_duplicate,
        report.history,
        ledger.n_msgs,
        ledger.n_receipt_frames,
        ledger.n_welcomes,
        ledger.n_clean_welcomes,
        ledger.n_cursor_moves_lost,
        ledger.floors.values().filter(|f| f.1 > 0).count(),
        ledger.n_receipts_off_refusals,
        ledger.n_reminds,
        ledger.n_reminded_replies,
        ledger.n_scheduled_sends,
        ledger.n_scheduled_fired,
        ledger.n_reminder_frames,
        ledger.n_welcome_reminders,
        ledger.n_reminders_required,
        report.reminders_required,
        ledger.managed.n_changes,
        ledger.managed.n_refusals,
        ledger.managed.n_admin_changes,
        ledger.managed.n_hand_overs,
        ledger.managed.n_sends,
        ledger.managed.n_kills_in_flight,
        ledger.managed.n_found_applied,
        ledger.managed.n_found_not_applied,
        ledger.managed.n_found_half_applied,
        ledger.managed.n_pushes_before_answer,
        ledger.n_edits,
        ledger.n_deletes,
        ledger.n_change_resends,
        ledger.n_deletes_found_before_answer,
        ledger.n_change_checks,
        ledger.n_msg_edited,
        ledger.n_msg_deleted,
        ledger.n_unread_with_deletes,
        started.elapsed(),
    );
}

/// After a kill (with the server started again, before the manager changes anything): the
/// stored roster of `MANAGED_GROUP` is one `allowed` before the restart, and has an owner.
#[allow(clippy::too_many_arguments)]
fn check_managed(
    server: &Server,
    shared: &Shared,
    k: u64,
    seed: u64,
    allowed: &[Roster],
    in_flight: &[Roster],
    answered: Option<&Roster>,
    what: &str,
) {
    let stored = server.group(MANAGED_GROUP);
    let roster = roster_of(&stored["members"]);
    let mut ledger = shared.ledger();
    if !allowed.iter().any(|r| roster_fits(&roster, r)) {
        ledger.violation(format!(
            "after kill {k} (seed {seed}) {MANAGED_GROUP} is {roster:?}; answered {answered:?}, \
             the change in flight ({what}) may make {in_flight:?}"
        ));
    }
    if roster.is_empty() || n_owners(&roster) == 0 {
        ledger.violation(format!(
            "after kill {k} (seed {seed}) {MANAGED_GROUP} has no owner: {stored}"
        ));
    }
    if !in_flight.is_empty() {
        let managed = &mut ledger.managed;
        managed.n_kills_in_flight += 1;
        if answered.is_some_and(|a| roster_fits(&roster, a)) {
            managed.n_found_not_applied += 1;
        } else if roster_fits(&roster, &in_flight[0]) {
            managed.n_found_applied += 1;
        } else if in_flight
            .get(1)
            .is_some_and(|half| roster_fits(&roster, half))
        {
            managed.n_found_half_applied += 1;
        }
    }
}

/// After the final restart: `MANAGED_GROUP` is exactly the last answered roster, and each
/// managed user's `welcome` lists it (with their role) exactly when they are a member.
async fn verify_managed(server: &Server, managed: &Managed, seed: u64) {
    assert!(
        managed.in_flight.is_empty(),
        "a change still in flight after draining: {}",
        managed.what
    );
    let answered = managed.answered.clone().expect("an answered roster");
    let stored = roster_of(&server.group(MANAGED_GROUP)["members"]);
    assert!(
        roster_fits(&stored, &answered) && n_owners(&stored) > 0,
        "{MANAGED_GROUP} after the final restart is {stored:?}, last answered {answered:?} (seed {seed})"
    );
    for user in managed_users() {
        let client = server.connect(&user).await;
        let role = client
            .welcome_group(MANAGED_GROUP)
            .map(|g| g["role"].as_str().unwrap_or_default().to_string());
        let expected = answered.get(&user).map(|(role, _)| role.clone());
        assert_eq!(
            role, expected,
            "[{user}] welcome after the final restart (seed {seed}): {}",
            client.welcome
        );
        client.close().await;
    }
}

struct Report {
    history: usize,
    found: usize,
    /// Reminders the welcomes after the final restart had to list (or push), all found.
    reminders_required: usize,
}

/// After the final restart, the reminders of `client`'s user: every one listed is above the read
/// mark (`welcomed`) and names a reminded message; every one that must exist is listed or
/// pushed now (a scheduled one that falls due fires once its group loaded): those a `reminded`
/// named the user in, and those of scheduled sends to the user's groups other than
/// `POLICY_GROUP` (whose schedules a policy `off` may have dropped), unless the user ever sent
/// a `read` covering them. Returns the number that had to exist.
async fn verify_reminders(
    client: &mut common::Client,
    ledger: &Ledger,
    welcomed: &HashMap<(String, String), (u64, u64)>,
    seed: u64,
) -> usize {
    let user = client.user.clone();
    let listed = client.welcome["reminders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut present: HashSet<(String, u64)> = HashSet::new();
    for reminder in &listed {
        let group = reminder["group"].as_str().expect("group").to_string();
        let seq = common::seq(reminder);
        let read = welcomed.get(&(user.clone(), group.clone())).map(|c| c.1);
        assert!(
            read.is_some_and(|read| seq > read),
            "[{user}] after the final restart, a reminder of {group} seq {seq} at read mark {read:?} (seed {seed})"
        );
        let client_id = ledger.owner.get(&(group.clone(), seq)).map(|o| o.1.clone());
        assert!(
            ledger.remind_targets.contains(&(group.clone(), seq))
                || client_id.is_some_and(|id| ledger.ever_scheduled.contains(&id)),
            "[{user}] a reminder of {group} seq {seq}, which nobody reminded (seed {seed})"
        );
        present.insert((group, seq));
    }
    let never_read = |group: &str, seq: u64| {
        ledger
            .max_sent_read
            .get(&(user.clone(), group.to_string()))
            .copied()
            .unwrap_or(0)
            < seq
    };
    let mut required: HashSet<(String, u64)> = ledger
        .reminded_users
        .iter()
        .filter(|(target, users)| users.contains(&user) && never_read(&target.0, target.1))
        .map(|(target, _)| target.clone())
        .collect();
    let groups = groups_of(user[1..].parse().expect("a client's user"));
    for (client_id, issued) in &ledger.issued {
        if issued.remind_after.is_none()
            || issued.user == user
            || issued.group == POLICY_GROUP
            || !groups.contains(&issued.group)
        {
            continue;
        }
        let seq = ledger.sent[client_id].0;
        if never_read(&issued.group, seq) {
            required.insert((issued.group.clone(), seq));
        }
    }
    for (group, seq) in &required {
        if present.contains(&(group.clone(), *seq)) {
            continue;
        }
        let pushed = client
            .recv_where(
                &format!("[{user}] the reminder of {group} seq {seq} (seed {seed})"),
                |f| f["type"] == "reminder" && f["group"] == group.as_str() && f["seq"] == *seq,
            )
            .await;
        assert_eq!(
            pushed["by"],
            ledger.owner[&(group.clone(), *seq)].0.as_str(),
            "{pushed}"
        );
    }
    required.len()
}

/// Checks the final stored state against everything the clients saw.
async fn verify(server: &Server, ledger: &Ledger, seed: u64) -> Report {
    assert!(
        ledger.violations.is_empty(),
        "promises broken (seed {seed}): {:#?}",
        ledger.violations
    );
    assert!(!ledger.issued.is_empty(), "no traffic at all");
    assert_eq!(
        ledger.sent.len(),
        ledger.issued.len(),
        "every send is answered after draining"
    );

    let mut found = 0;
    let mut history_size = 0;
    let mut seen_client_ids: HashSet<String> = HashSet::new();
    // Welcome cursors after the final restart, per (user, group).
    let mut welcomed: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut unread_welcomed: HashMap<(String, String), u64> = HashMap::new();
    let policy = server.group(POLICY_GROUP)["receipts"].clone();
    assert_eq!(
        policy, "full",
        "{POLICY_GROUP}'s last acknowledged policy (seed {seed})"
    );
    let mut reminders_required = 0;
    for c in 0..N_CLIENTS {
        let user = user_name(c);
        let mut client = server.connect(&user).await;
        for group in groups_of(c) {
            let entry = client
                .welcome_group(&group)
                .unwrap_or_else(|| panic!("{user}'s welcome lacks {group}"));
            let delivered = entry["delivered"].as_u64().expect("delivered");
            let read = entry["read"].as_u64().expect("read");
            welcomed.insert((user.clone(), group.clone()), (delivered, read));
            unread_welcomed.insert(
                (user.clone(), group.clone()),
                entry["unread"].as_u64().expect("unread"),
            );
            assert_eq!(
                entry["receipts"], "full",
                "{user}'s welcome: {entry} (seed {seed})"
            );
        }
        reminders_required += verify_reminders(&mut client, ledger, &welcomed, seed).await;
        client.close().await;
    }

    for g in 0..N_GROUPS {
        let group = group_name(g);
        let described = server.group(&group);
        let last_seq = described["last_seq"].as_u64().expect("last_seq");

        // The whole history, twice: admin pages forwards, WebSocket `history` backwards.
        let history = admin_history(server, &group);
        let member = members_of(g).remove(0);
        let mut reader = server.connect(&member).await;
        let paged_back = ws_history(&mut reader, &group).await;
        reader.close().await;
        assert_eq!(
            history, paged_back,
            "{group}: admin pages and WebSocket history differ"
        );
        let seqs = common::seqs(&history);
        assert_eq!(
            seqs,
            (1..=last_seq).collect::<Vec<_>>(),
            "{group}: history is not 1..={last_seq} in order without gaps (seed {seed})"
        );
        history_size += history.len();

        // Each stored message is a send a client issued, stored once, at the seq it was given.
        let mut last_n: HashMap<String, u64> = HashMap::new();
        for message in &history {
            let seq = common::seq(message);
            let client_id = message["client_id"].as_str().expect("client_id");
            let from = message["from"].as_str().expect("from");
            let issued = ledger.issued.get(client_id).unwrap_or_else(|| {
                panic!("{group} seq {seq}: {client_id} was never sent: {message}")
            });
            assert_eq!(
                (issued.user.as_str(), issued.group.as_str()),
                (from, group.as_str()),
                "{group} seq {seq} is not what {client_id} sent"
            );
            // Every change was answered: each is exactly there (PROTOCOL.md §3.6).
            let changed = ledger.changed.get(&(group.clone(), seq));
            let body = message.get("body").and_then(Value::as_str);
            let edited_ts = message.get("edited_ts").and_then(Value::as_u64);
            let deleted = message["deleted"] == true;
            match changed {
                Some(c) if c.delete_written => assert!(
                    deleted && body.is_none() && edited_ts.is_none(),
                    "{group} seq {seq}: the delete of {client_id} is not there (seed {seed}): {message}"
                ),
                Some(c) if !c.edits.is_empty() => assert!(
                    !deleted && body == c.edits.last().map(String::as_str) && edited_ts.is_some(),
                    "{group} seq {seq}: the last edit of {client_id}, {:?}, is not there (seed {seed}): {message}",
                    c.edits.last()
                ),
                _ => assert!(
                    !deleted && body == Some(issued.body.as_str()) && edited_ts.is_none(),
                    "{group} seq {seq} is not what {client_id} sent (seed {seed}): {message}"
                ),
            }
            assert!(
                seen_client_ids.insert(client_id.to_string()),
                "duplicated: {client_id} is stored twice (again at {group} seq {seq}, seed {seed})"
            );
            let acked = ledger.sent.get(client_id).map(|&(s, _)| s);
            assert_eq!(
                acked,
                Some(seq),
                "{client_id} was acknowledged as {acked:?} but is stored at {seq} (seed {seed})"
            );
            if let Some(owner) = ledger.owner.get(&(group.clone(), seq)) {
                assert_eq!(
                    (owner.0.as_str(), owner.1.as_str()),
                    (from, client_id),
                    "{group} seq {seq} was seen as another message"
                );
            }
            let previous = last_n.insert(from.to_string(), issued.n);
            assert!(
                previous.is_none_or(|p| p < issued.n),
                "{group}: {from}'s send {} stored after its send {previous:?} (seed {seed})",
                issued.n
            );
            found += 1;
        }
        // Unread counts leave out own and deleted messages.
        for member in members_of(g) {
            let read = welcomed[&(member.clone(), group.clone())].1;
            let expected = history
                .iter()
                .filter(|m| common::seq(m) > read && m["from"] != member.as_str())
                .filter(|m| m["deleted"] != true)
                .count() as u64;
            assert_eq!(
                unread_welcomed[&(member.clone(), group.clone())],
                expected,
                "[{member}] {group}: welcome unread after the final restart, read mark {read} (seed {seed})"
            );
        }
        // Every seq any client saw is in this history.
        let max_seen = ledger.max_seen.get(&group).copied().unwrap_or(0);
        assert!(
            max_seen <= last_seq,
            "{group}: seq {max_seen} was seen but last_seq is {last_seq}"
        );

        // Cursors: the admin API and the welcome after the restart agree; receipts computed
        // from them match the admin receipts, and never fell below what senders were pushed.
        let members = described["members"].as_array().expect("members").clone();
        let mut cursors: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new(); // joined, delivered, read
        for m in &members {
            let user = m["user"].as_str().expect("user").to_string();
            let joined = m["joined_seq"].as_u64().expect("joined_seq");
            let delivered = m["delivered"].as_u64().expect("delivered");
            let read = m["read"].as_u64().expect("read");
            assert_eq!(
                welcomed.get(&(user.clone(), group.clone())),
                Some(&(delivered, read)),
                "{group}: {user}'s cursors in welcome and in the admin API differ"
            );
            cursors.insert(user, (joined, delivered, read));
        }
        let expected = |seq: u64, sender: &str| {
            let mut lists = (Vec::new(), Vec::new(), Vec::new());
            for (user, &(joined, delivered, read)) in &cursors {
                if user == sender || joined >= seq {
                    continue;
                }
                if read >= seq {
                    lists.0.push(user.clone());
                } else if delivered >= seq {
                    lists.1.push(user.clone());
                } else {
                    lists.2.push(user.clone());
                }
            }
            lists
        };
        for message in &history {
            let seq = common::seq(message);
            let sender = message["from"].as_str().expect("from");
            let (read, delivered, _) = expected(seq, sender);
            if let Some(pushed) = ledger.receipts.get(&(group.clone(), seq)) {
                let now_delivered = (read.len() + delivered.len()) as u64;
                assert!(
                    pushed.read <= read.len() as u64 && pushed.delivered <= now_delivered,
                    "{group} seq {seq}: {sender} was pushed {pushed:?}, but after the crash read {} delivered {now_delivered} (seed {seed})",
                    read.len()
                );
            }
        }
        // Ask the admin API at every cursor boundary (where the lists change) and the ends.
        let mut probes: Vec<u64> = vec![1, last_seq];
        for &(_, delivered, read) in cursors.values() {
            probes.extend([delivered, delivered + 1, read, read + 1]);
        }
        probes.retain(|&s| s >= 1 && s <= last_seq);
        probes.sort_unstable();
        probes.dedup();
        for seq in probes {
            let message = &history[(seq - 1) as usize];
            if message["deleted"] == true {
                let answer = server.admin_expect(
                    "GET",
                    &format!("/api/groups/{group}/messages/{seq}/receipts"),
                    None,
                    400,
                );
                assert_eq!(
                    answer["error"]["code"], "invalid_seq",
                    "{group} seq {seq}: {answer}"
                );
                continue;
            }
            let sender = message["from"].as_str().expect("from");
            let (read, delivered, unread) = expected(seq, sender);
            let answer = server.admin_expect(
                "GET",
                &format!("/api/groups/{group}/messages/{seq}/receipts"),
                None,
                200,
            );
            let list = |key: &str| -> Vec<String> {
                answer[key]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .map(|v| v.as_str().expect("a user id").to_string())
                    .collect()
            };
            assert_eq!(
                (list("read"), list("delivered"), list("unread")),
                (read, delivered, unread),
                "{group} seq {seq}: receipts after the restart differ from the cursors in welcome"
            );
        }
    }
    assert_eq!(
        found,
        ledger.issued.len(),
        "lost: some sends are not stored"
    );
    Report {
        history: history_size,
        found,
        reminders_required,
    }
}

/// What the sleeper saw acknowledged in `SLEEPY_GROUP`.
#[derive(Default)]
struct Sleepy {
    /// seq → client_id, as `sent` answered.
    by_seq: BTreeMap<u64, String>,
    /// client_id → seq.
    by_client_id: HashMap<String, u64>,
    /// Rounds whose message was pushed to the other sleeper after the group had idled.
    rounds: u64,
}

/// This run's `rollcall_group_passivations_total` and `rollcall_messages_pruned_total`.
fn passivations_and_pruned(server: &Server) -> (u64, u64) {
    (
        server.metric("rollcall_group_passivations_total"),
        server.metric("rollcall_messages_pruned_total"),
    )
}

/// The next frame of type `kind` (`Ok(None)`: none within `wait`; `Err`: the socket ended).
async fn next_of(ws: &mut Ws, kind: &str, wait: Duration) -> Result<Option<Value>, ()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await? {
            None => return Ok(None),
            Some(frame) if frame["type"] == kind => return Ok(Some(frame)),
            Some(_) => {}
        }
    }
}

/// The sleeper: `z0` sends one message to `SLEEPY_GROUP`, `z1` (connected all along) must get it
/// pushed, then both idle past `--group-idle-ms`, so the group's actor passivates and the next
/// send starts it again. An unanswered send is resent with its `client_id` after a reconnect.
async fn run_sleeper(shared: Arc<Shared>, sleepy: Arc<Mutex<Sleepy>>) {
    let mut n = 0u64;
    let mut pending: Option<String> = None;
    let violation = |what: String| shared.ledger().violation(what);
    loop {
        if shared.stop_sending.load(Ordering::SeqCst) && pending.is_none() {
            return;
        }
        let sessions = async {
            let z0 = connect_ws(&shared.ws_url, &common::token(SLEEPERS[0])).await?;
            let z1 = connect_ws(&shared.ws_url, &common::token(SLEEPERS[1])).await?;
            Some((z0.0, z1.0))
        };
        let Some((mut z0, mut z1)) = sessions.await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        loop {
            let client_id = pending
                .get_or_insert_with(|| {
                    n += 1;
                    format!("zz-{n}")
                })
                .clone();
            let frame = send_frame(&client_id, SLEEPY_GROUP, "sleepy", None);
            if z0.send(Message::text(frame.to_string())).await.is_err() {
                break;
            }
            let Ok(Some(sent)) = next_of(&mut z0, "sent", TIMEOUT).await else {
                break; // the server went away
            };
            let seq = common::seq(&sent);
            {
                let mut sleepy = sleepy.lock().expect("sleepy");
                if let Some(&was) = sleepy.by_client_id.get(&client_id) {
                    if was != seq {
                        violation(format!(
                            "{SLEEPY_GROUP}: {client_id} answered {seq}, was {was}"
                        ));
                    }
                } else if let Some(other) = sleepy.by_seq.get(&seq) {
                    violation(format!(
                        "{SLEEPY_GROUP}: seq {seq} given to {client_id} and {other}"
                    ));
                } else {
                    sleepy.by_seq.insert(seq, client_id.clone());
                    sleepy.by_client_id.insert(client_id.clone(), seq);
                }
            }
            pending = None;
            // z1 stayed connected while the group was stopped: its restarted actor must find z1
            // in the online directory and push (a resend's original was pushed before).
            if sent["duplicate"] != true {
                match next_of(&mut z1, "msg", TIMEOUT).await {
                    Ok(Some(msg)) if msg["client_id"] == client_id.as_str() => {
                        sleepy.lock().expect("sleepy").rounds += 1;
                    }
                    Ok(Some(other)) => {
                        violation(format!(
                            "{SLEEPY_GROUP}: z1 was pushed {other}, not {client_id}"
                        ));
                    }
                    Ok(None) => violation(format!(
                        "{SLEEPY_GROUP}: seq {seq} was acknowledged but never pushed to z1"
                    )),
                    Err(()) => break,
                }
            }
            if shared.stop_sending.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(GROUP_IDLE_MS + 250)).await;
        }
    }
}

/// `SLEEPY_GROUP` as stored now: gapless from its oldest kept seq up, every message that `sent`
/// acknowledged before the check began is there at its seq unless it is older than that
/// (pruned), and no stored message contradicts an acknowledgement. (The sleeper keeps sending
/// meanwhile: what it learns during the check is not held against the store read before.)
fn check_sleepy(server: &Server, shared: &Shared, sleepy: &Mutex<Sleepy>, when: &str) {
    let (by_seq, by_client_id) = {
        let sleepy = sleepy.lock().expect("sleepy");
        (sleepy.by_seq.clone(), sleepy.by_client_id.clone())
    };
    let history = admin_history(server, SLEEPY_GROUP);
    let group = server.group(SLEEPY_GROUP);
    let seqs: Vec<u64> = history.iter().map(common::seq).collect();
    let mut ledger = shared.ledger();
    let Some(&first) = seqs.first() else {
        if !by_seq.is_empty() {
            ledger.violation(format!(
                "{SLEEPY_GROUP} {when}: empty, acknowledged {by_seq:?}"
            ));
        }
        return;
    };
    let expected: Vec<u64> = (first..first + seqs.len() as u64).collect();
    if seqs != expected {
        ledger.violation(format!(
            "{SLEEPY_GROUP} {when}: stored seqs {seqs:?} have a gap"
        ));
    }
    if group["first_seq"].as_u64().is_none_or(|f| f < first) {
        ledger.violation(format!(
            "{SLEEPY_GROUP} {when}: first_seq {} below the oldest stored {first}",
            group["first_seq"]
        ));
    }
    for message in &history {
        let seq = common::seq(message);
        let client_id = message["client_id"].as_str().unwrap_or_default();
        let known = by_seq.get(&seq).map(String::as_str);
        let elsewhere = by_client_id.get(client_id).is_some_and(|&s| s != seq);
        if known.is_some_and(|k| k != client_id) || elsewhere {
            ledger.violation(format!(
                "{SLEEPY_GROUP} {when}: seq {seq} holds {client_id}, acknowledged {known:?}"
            ));
        }
    }
    for (&seq, client_id) in by_seq.range(first..) {
        if !seqs.contains(&seq) {
            ledger.violation(format!(
                "{SLEEPY_GROUP} {when}: acknowledged {client_id} at {seq} is gone (stored {seqs:?})"
            ));
        }
    }
}
