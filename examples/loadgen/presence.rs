//! The `presence` scenario (docs/PROTOCOL.md §3.2, §3.6): `--connections` (10,000) users in
//! groups of `--members` (20), laid out `--layout disjoint` (each user in one group, with 19
//! others) or `ring` (a group starts every 10 users: each user in two groups that share half
//! their members, 29 others), every user connected once. Then:
//!
//! 1. the first connect of everyone (`--connect-window`, 256, opening at once): presence frames
//!    sent while they came online, and the server's RSS with all of them;
//! 2. `--sample` (100) users, no two sharing a group, disconnect: presence frames per disconnect
//!    (each must tell exactly its online co-members, once, some 5 s later);
//! 3. the same users connect again: presence frames per connect (the same count);
//! 4. the same users disconnect and reconnect at once (within the server's 5 s): none may be sent;
//! 5. the server is stopped (SIGTERM) and started on the same data, and every user reconnects
//!    (`--connect-window` at once): the time until every client has its `welcome`, the presence
//!    frames sent, the server's CPU seconds and RSS.
//!
//! Frames sent come from `/metrics` (`rollcall_frames_out_total{type="presence"}`) and are
//! checked against what the clients received. The users are created with `POST /api/users` (a
//! group's members must exist), the groups with one `POST /api/groups` each, both from
//! `--create-threads`; tokens are minted offline with the started server's secret, and stay
//! valid across the restart. Every client is a task of this program's runtime that only reads.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{blocking_metrics, in_parallel, run_id, Admin, Metrics};
use crate::args::{Args, Layout};
use crate::report::{fig, fig_f, fmt_ms, nproc, per, percentile};
use crate::server::{self, finish_server, mint, start_server, Server};
use crate::wire::connect_welcome;
use crate::Error;

/// How long the server waits after a user's last session closed before it says so
/// (`OFFLINE_AFTER` in src/registry.rs).
const OFFLINE_AFTER: Duration = Duration::from_secs(5);

/// Runs the presence scenario against a server it starts (and restarts).
pub fn presence(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("presence starts and restarts its own server; drop --http".into());
    }
    let n_users = usize::try_from(args.connections.unwrap_or(10_000))?;
    let n_members = args.members.unwrap_or(20);
    let groups = Groups::new(n_users, n_members, args.layout)?;
    let sample = groups.sample(args.sample);
    let deadline_std = Instant::now() + Duration::from_secs(args.deadline_secs);
    let nofile = server::raise_nofile();
    let (srv, _dir) = start_server(args)?;
    let admin = Admin::new(&srv.http, server::ADMIN_TOKEN)?;
    println!("=== rollcall loadgen: presence ===");
    println!(
        "machine     : nproc={} loadavg(at start)={} RLIMIT_NOFILE {nofile} (inherited by the server)",
        nproc(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "command     : {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "layout      : {n_users} users, {} groups of {n_members} ({:?}): each user shares a group with {}–{} others, {} co-member pairs",
        groups.members.len(),
        args.layout,
        groups.others.iter().min().copied().unwrap_or(0),
        groups.others.iter().max().copied().unwrap_or(0),
        groups.pairs()
    );
    fig("users", n_users);
    fig("members", n_members);
    fig("groups", groups.members.len());
    fig("layout", format!("{:?}", args.layout).to_lowercase());
    fig("sample", sample.len());
    fig("connect_window", args.connect_window);

    let id = run_id();
    let users: Vec<String> = (0..n_users).map(|i| format!("{id}-u{i}")).collect();
    let created = admin.create_users(&users, args.create_threads, deadline_std)?;
    created.report(args.create_threads);
    let t = Instant::now();
    let group_ids: Vec<usize> = (0..groups.members.len()).collect();
    in_parallel(
        &group_ids,
        args.create_threads,
        deadline_std,
        "creating groups",
        |&g| {
            let members: Vec<&String> = groups.members[g].iter().map(|&u| &users[u]).collect();
            admin.post(
                "/api/groups",
                json!({"id": format!("{id}-g{g}"), "name": "presence", "members": members}),
            )?;
            Ok(())
        },
    )?;
    let create_groups_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tokens = users
        .iter()
        .map(|u| mint(&srv.data, u))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "setup       : {} groups created in {create_groups_s:.2} s ({} threads); {n_users} tokens minted offline in {:.2} s",
        groups.members.len(),
        args.create_threads.max(1),
        t.elapsed().as_secs_f64()
    );
    fig_f("create_groups_s", create_groups_s);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = Run {
        groups,
        sample,
        tokens,
        window: args.connect_window.max(1),
        deadline: tokio::time::Instant::from_std(deadline_std),
        counts: Arc::new(Counts::default()),
    };
    let (clean, srv) = runtime.block_on(run.drive(srv, admin))?;
    finish_server(srv);
    Ok(clean)
}

/// The groups of the layout, and how many others each user shares a group with.
struct Groups {
    /// The members (user indexes) of each group.
    members: Vec<Vec<usize>>,
    /// The groups of each user.
    of_user: Vec<Vec<usize>>,
    /// How many distinct others each user shares a group with.
    others: Vec<usize>,
}

impl Groups {
    fn new(n_users: usize, n_members: usize, layout: Layout) -> Result<Groups, Error> {
        let step = match layout {
            Layout::Disjoint => n_members,
            Layout::Ring => n_members / 2,
        };
        if n_members < 2 || step == 0 || n_users < 2 * n_members || !n_users.is_multiple_of(step) {
            return Err(format!(
                "need --members >= 2 and --connections a multiple of {step}, at least 2 × --members"
            )
            .into());
        }
        let members: Vec<Vec<usize>> = (0..n_users / step)
            .map(|g| (0..n_members).map(|k| (g * step + k) % n_users).collect())
            .collect();
        let mut of_user = vec![Vec::new(); n_users];
        for (g, list) in members.iter().enumerate() {
            for &u in list {
                of_user[u].push(g);
            }
        }
        let others = (0..n_users)
            .map(|u| {
                let set: BTreeSet<usize> = of_user[u]
                    .iter()
                    .flat_map(|&g| members[g].iter().copied())
                    .filter(|&v| v != u)
                    .collect();
                set.len()
            })
            .collect();
        Ok(Groups {
            members,
            of_user,
            others,
        })
    }

    /// Co-member pairs: the presence frames of a first connect of everyone, one by one (each
    /// user tells the co-members already online); twice that when every pair connects together.
    fn pairs(&self) -> usize {
        self.others.iter().sum::<usize>() / 2
    }

    /// Up to `n` users spread over the ring, no two of which share a group (or a co-member).
    fn sample(&self, n: usize) -> Vec<usize> {
        let n_users = self.of_user.len();
        let mut taken: BTreeSet<usize> = BTreeSet::new();
        let mut out = Vec::new();
        let stride = (n_users / n.max(1)).max(1);
        for u in (0..n_users).step_by(stride) {
            if out.len() == n {
                break;
            }
            let groups: BTreeSet<usize> = self.of_user[u].iter().copied().collect();
            let reach: BTreeSet<usize> = groups
                .iter()
                .flat_map(|&g| {
                    self.members[g]
                        .iter()
                        .flat_map(|&v| self.of_user[v].clone())
                })
                .collect();
            if reach.is_disjoint(&taken) {
                taken.extend(groups);
                out.push(u);
            }
        }
        out
    }
}

/// What every client received (all clients together).
#[derive(Default)]
struct Counts {
    online: AtomicU64,
    offline: AtomicU64,
    errors: AtomicU64,
    /// Connections the server ended (or that broke) while the client was not closing.
    lost: AtomicU64,
}

impl Counts {
    fn note(&self, text: &str) {
        let Ok(f) = serde_json::from_str::<Value>(text) else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match (f["type"].as_str(), f["online"].as_bool()) {
            (Some("presence"), Some(true)) => self.online.fetch_add(1, Ordering::Relaxed),
            (Some("presence"), _) => self.offline.fetch_add(1, Ordering::Relaxed),
            (Some("error"), _) => self.errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// (online, offline) presence frames received so far.
    fn presence(&self) -> (u64, u64) {
        (
            self.online.load(Ordering::Relaxed),
            self.offline.load(Ordering::Relaxed),
        )
    }
}

/// One client task (connects, then reads until closed or until the server ends it).
struct Client {
    close: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Client {
    async fn close(self) {
        let _ = self.close.send(());
        let _ = self.task.await;
    }
}

/// A client's connect: its user index and connect → `welcome` in microseconds, or why not.
type Ready = (usize, Result<u64, String>);

struct Run {
    groups: Groups,
    sample: Vec<usize>,
    tokens: Vec<String>,
    window: usize,
    deadline: tokio::time::Instant,
    counts: Arc<Counts>,
}

/// The readings around one step: presence frames sent (from `/metrics`) and received (by the
/// clients), the server's CPU seconds, and the time.
struct Step {
    sent: f64,
    received: (u64, u64),
    cpu: f64,
    took: Duration,
}

impl Run {
    async fn drive(self, mut srv: Server, admin: Admin) -> Result<(bool, Server), Error> {
        let n_users = self.tokens.len();
        let mut failures: Vec<String> = Vec::new();
        let (rss_idle, _) = server::rss_kib(srv.pid).unwrap_or((0, 0));

        // 1. Everyone connects for the first time.
        let mark = self.mark(&admin, srv.pid).await?;
        let all: Vec<usize> = (0..n_users).collect();
        let (mut clients, lat, welcomed) = self.connect(&admin, &all).await?;
        let first = self.settle(&admin, srv.pid, &mark, Duration::ZERO).await?;
        let (rss, hwm) = server::rss_kib(srv.pid).unwrap_or((0, 0));
        let pairs = self.groups.pairs() as f64;
        println!("--- result (presence, {n_users} users) ---");
        println!(
            "first connect: {n_users} welcomed in {:.2} s (p50 {} / p99 {} ms); presence frames sent {} ({:.2} per connect; co-member pairs {pairs}: one per pair when users come one by one, two when both come together), received {}; server CPU {:.2} s",
            welcomed.as_secs_f64(),
            fmt_ms(percentile(&lat, 0.5)),
            fmt_ms(percentile(&lat, 0.99)),
            first.sent,
            first.sent / n_users as f64,
            first.received.0,
            first.cpu
        );
        let per_conn = (rss as f64 - rss_idle as f64) * 1024.0 / n_users as f64;
        println!(
            "server RSS  : {:.1} MiB idle → {:.1} MiB with {n_users} sessions (VmHWM {:.1} MiB): {:.1} KiB per session",
            rss_idle as f64 / 1024.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            per_conn / 1024.0
        );
        fig_f("first_connect_s", welcomed.as_secs_f64());
        fig_f(
            "first_welcome_p99_ms",
            percentile(&lat, 0.99).unwrap_or(f64::NAN),
        );
        fig_f("first_presence_sent", first.sent);
        fig_f("first_presence_per_connect", first.sent / n_users as f64);
        fig_f("first_cpu_s", first.cpu);
        fig_f("pairs", pairs);
        fig_f("rss_idle_mib", rss_idle as f64 / 1024.0);
        fig_f("rss_mib", rss as f64 / 1024.0);
        fig_f("rss_per_session_kib", per_conn / 1024.0);
        if first.sent < pairs || first.sent > 2.0 * pairs {
            failures.push(format!(
                "the first connect sent {} presence frames, outside [{pairs}, {}]",
                first.sent,
                2.0 * pairs
            ));
        }

        // 2.–4. The sample: disconnect, connect, and both within the server's 5 s.
        let k = self.sample.len();
        let expect: usize = self.sample.iter().map(|&u| self.groups.others[u]).sum();
        let mark = self.mark(&admin, srv.pid).await?;
        for u in &self.sample {
            if let Some(c) = clients.remove(u) {
                c.close().await;
            }
        }
        let off = self.settle(&admin, srv.pid, &mark, OFFLINE_AFTER).await?;
        let mark = self.mark(&admin, srv.pid).await?;
        let (back, _, _) = self.connect(&admin, &self.sample).await?;
        clients.extend(back);
        let on = self.settle(&admin, srv.pid, &mark, Duration::ZERO).await?;
        let mark = self.mark(&admin, srv.pid).await?;
        for u in &self.sample {
            if let Some(c) = clients.remove(u) {
                c.close().await;
            }
        }
        let (back, _, _) = self.connect(&admin, &self.sample).await?;
        clients.extend(back);
        let quick = self
            .settle(
                &admin,
                srv.pid,
                &mark,
                OFFLINE_AFTER + Duration::from_secs(1),
            )
            .await?;
        let kf = k as f64;
        println!(
            "disconnect  : {k} users (no two sharing a group): {} presence frames sent ({:.2} per disconnect; their online co-members: {:.2}), {} offline received; server CPU {:.2} s",
            off.sent,
            per(off.sent, kf),
            per(expect as f64, kf),
            off.received.1,
            off.cpu
        );
        println!(
            "connect     : the same {k} again: {} sent ({:.2} per connect), {} online received; server CPU {:.2} s",
            on.sent,
            per(on.sent, kf),
            on.received.0,
            on.cpu
        );
        println!(
            "quick       : the same {k} disconnect and reconnect at once (within 5 s): {} sent (none expected), received {:?}",
            quick.sent, quick.received
        );
        fig_f("presence_per_disconnect", per(off.sent, kf));
        fig_f("presence_per_connect", per(on.sent, kf));
        fig_f("co_members_per_sample_user", per(expect as f64, kf));
        fig_f("quick_reconnect_presence_sent", quick.sent);
        let expect = expect as f64;
        if off.sent != expect || off.received != (0, expect as u64) {
            failures.push(format!(
                "disconnects sent {} / received {:?}, not {expect} offline",
                off.sent, off.received
            ));
        }
        if on.sent != expect || on.received != (expect as u64, 0) {
            failures.push(format!(
                "connects sent {} / received {:?}, not {expect} online",
                on.sent, on.received
            ));
        }
        if quick.sent != 0.0 || quick.received != (0, 0) {
            failures.push("a reconnect within 5 s sent presence".into());
        }

        // 5. Restart, and everyone reconnects.
        let lost_before = self.counts.lost.load(Ordering::Relaxed);
        if lost_before > 0 {
            failures.push(format!("{lost_before} connections lost before the restart"));
        }
        let stop = tokio::task::block_in_place(|| srv.stop());
        for (_, c) in clients.drain() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.task).await;
        }
        let dropped = self.counts.lost.load(Ordering::Relaxed) - lost_before;
        let healthz = tokio::task::block_in_place(|| srv.restart())?;
        let admin = Admin::new(&srv.http, server::ADMIN_TOKEN)?;
        let mark = self.mark(&admin, srv.pid).await?;
        let (clients, lat, welcomed) = self.connect(&admin, &all).await?;
        let cpu_welcomed = server::cpu_seconds(srv.pid).unwrap_or(f64::NAN) - mark.cpu;
        let again = self.settle(&admin, srv.pid, &mark, Duration::ZERO).await?;
        let (rss2, hwm2) = server::rss_kib(srv.pid).unwrap_or((0, 0));
        println!(
            "restart     : SIGTERM → exit {:.2} s ({dropped} connections ended by it); start → /healthz 200 {:.3} s",
            stop.as_secs_f64(),
            healthz.as_secs_f64()
        );
        println!(
            "reconnect   : all {n_users} at once ({} connecting at a time): every welcome in {:.2} s (p50 {} / p99 {} / max {} ms), server CPU {cpu_welcomed:.2} s; presence done {:.2} s after the start: {} frames sent ({:.2} per user), {} received; server CPU {:.2} s in all",
            self.window,
            welcomed.as_secs_f64(),
            fmt_ms(percentile(&lat, 0.5)),
            fmt_ms(percentile(&lat, 0.99)),
            fmt_ms(percentile(&lat, 1.0)),
            again.took.as_secs_f64(),
            again.sent,
            again.sent / n_users as f64,
            again.received.0,
            again.cpu
        );
        println!(
            "server RSS  : {:.1} MiB after the reconnect (VmHWM {:.1} MiB)",
            rss2 as f64 / 1024.0,
            hwm2 as f64 / 1024.0
        );
        fig_f("stop_s", stop.as_secs_f64());
        fig_f("healthz_s", healthz.as_secs_f64());
        fig_f("reconnect_welcomed_s", welcomed.as_secs_f64());
        fig_f(
            "reconnect_welcome_p50_ms",
            percentile(&lat, 0.5).unwrap_or(f64::NAN),
        );
        fig_f(
            "reconnect_welcome_p99_ms",
            percentile(&lat, 0.99).unwrap_or(f64::NAN),
        );
        fig_f("reconnect_cpu_to_welcomed_s", cpu_welcomed);
        fig_f("reconnect_presence_done_s", again.took.as_secs_f64());
        fig_f("reconnect_presence_sent", again.sent);
        fig_f("reconnect_presence_per_user", again.sent / n_users as f64);
        fig_f("reconnect_cpu_s", again.cpu);
        fig_f("reconnect_rss_mib", rss2 as f64 / 1024.0);
        fig_f("reconnect_hwm_mib", hwm2 as f64 / 1024.0);
        if again.sent < pairs || again.sent > 2.0 * pairs {
            failures.push(format!(
                "the reconnect sent {} presence frames, outside [{pairs}, {}]",
                again.sent,
                2.0 * pairs
            ));
        }
        for (what, step) in [("first connect", &first), ("reconnect", &again)] {
            if step.received != (step.sent as u64, 0) {
                failures.push(format!(
                    "{what}: {} presence frames sent, received {:?}",
                    step.sent, step.received
                ));
            }
        }
        if dropped != n_users as u64 {
            failures.push(format!("the stop ended {dropped} of {n_users} connections"));
        }
        for c in clients.into_values() {
            c.close().await;
        }
        let errors = self.counts.errors.load(Ordering::Relaxed);
        if errors > 0 {
            failures.push(format!("{errors} error frames"));
        }
        for f in &failures {
            println!("FAILED      : {f}");
        }
        let clean = failures.is_empty();
        println!("status      : {}", if clean { "ok" } else { "FAILED" });
        fig("clean", clean);
        Ok((clean, srv))
    }

    /// Connects the users `which` (at most `--connect-window` at once) and waits for every
    /// `welcome`; returns the clients, their connect → `welcome` latencies (sorted, µs) and the
    /// time until the last.
    async fn connect(
        &self,
        admin: &Admin,
        which: &[usize],
    ) -> Result<(HashMap<usize, Client>, Vec<u64>, Duration), Error> {
        let (ready_tx, mut ready) = mpsc::unbounded_channel::<Ready>();
        let gate = Arc::new(Semaphore::new(self.window));
        let t = Instant::now();
        let mut clients = HashMap::with_capacity(which.len());
        for &u in which {
            let url = admin.ws_url(&self.tokens[u]);
            let client = spawn_client(
                u,
                url,
                Arc::clone(&gate),
                Arc::clone(&self.counts),
                ready_tx.clone(),
                self.deadline,
            );
            clients.insert(u, client);
        }
        drop(ready_tx);
        let mut latencies = Vec::with_capacity(which.len());
        let mut first_error = None;
        while latencies.len() + usize::from(first_error.is_some()) < which.len() {
            match tokio::time::timeout_at(self.deadline, ready.recv()).await {
                Ok(Some((_, Ok(us)))) => latencies.push(us),
                Ok(Some((u, Err(e)))) => {
                    first_error = Some(format!("user {u}: {e}"));
                    break;
                }
                Ok(None) => break,
                Err(_) => return Err("deadline reached while connecting".into()),
            }
        }
        if let Some(e) = first_error {
            return Err(format!(
                "{} of {} welcomed; first failure {e}",
                latencies.len(),
                which.len()
            )
            .into());
        }
        let took = t.elapsed();
        latencies.sort_unstable();
        Ok((clients, latencies, took))
    }

    /// The readings at the start of a step.
    async fn mark(&self, admin: &Admin, pid: u32) -> Result<Mark, Error> {
        Ok(Mark {
            metrics: blocking_metrics(admin).await?,
            received: self.counts.presence(),
            cpu: server::cpu_seconds(pid).unwrap_or(f64::NAN),
            at: Instant::now(),
        })
    }

    /// Waits `at_least`, then until no presence frame was sent for a second (polling
    /// `/metrics`), and returns the step since `mark`.
    async fn settle(
        &self,
        admin: &Admin,
        pid: u32,
        mark: &Mark,
        at_least: Duration,
    ) -> Result<Step, Error> {
        tokio::time::sleep_until(tokio::time::Instant::from_std(mark.at + at_least)).await;
        let quiet = Duration::from_secs(1);
        let mut last = blocking_metrics(admin).await?;
        let mut changed_at = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tokio::time::Instant::now() > self.deadline {
                return Err("deadline reached while presence settled".into());
            }
            let now = blocking_metrics(admin).await?;
            let at = Instant::now();
            if last.frames(&now, "out", "presence") != 0.0 {
                changed_at = at;
            } else if at.duration_since(changed_at) >= quiet {
                break;
            }
            last = now;
        }
        let cpu = server::cpu_seconds(pid).unwrap_or(f64::NAN) - mark.cpu;
        let (on, off) = self.counts.presence();
        Ok(Step {
            sent: mark.metrics.frames(&last, "out", "presence"),
            received: (on - mark.received.0, off - mark.received.1),
            cpu,
            // The last poll that saw a presence frame sent (100 ms polls).
            took: changed_at.duration_since(mark.at),
        })
    }
}

/// The readings at the start of a step.
struct Mark {
    metrics: Metrics,
    received: (u64, u64),
    cpu: f64,
    at: Instant,
}

/// Starts one client: connects (holding a permit of `gate` until its `welcome`), reports on
/// `ready`, then counts what it receives until closed or ended by the server.
fn spawn_client(
    user: usize,
    url: String,
    gate: Arc<Semaphore>,
    counts: Arc<Counts>,
    ready: mpsc::UnboundedSender<Ready>,
    deadline: tokio::time::Instant,
) -> Client {
    let (close, mut closing) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let connected = match gate.acquire().await {
            Ok(_permit) => {
                let t = Instant::now();
                connect_welcome(&url, true, deadline)
                    .await
                    .map(|(ws, _)| (ws, u64::try_from(t.elapsed().as_micros()).unwrap_or(0)))
            }
            Err(_) => Err("the gate closed".into()),
        };
        let mut ws = match connected {
            Ok((ws, us)) => {
                let _ = ready.send((user, Ok(us)));
                ws
            }
            Err(e) => {
                let _ = ready.send((user, Err(e)));
                return;
            }
        };
        loop {
            tokio::select! {
                _ = &mut closing => {
                    let _ = ws.close(None).await;
                    return;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => counts.note(text.as_str()),
                    Some(Ok(_)) => {}
                    _ => {
                        counts.lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            }
        }
    });
    Client { close, task }
}
