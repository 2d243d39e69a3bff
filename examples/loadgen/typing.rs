//! The `typing` scenario (docs/PROTOCOL.md §3.1, §3.6): one group of `--members` (500, the
//! default `--presence-max-members`: the largest group that carries typing), `--online` (all)
//! of them connected, `--senders` (100) of them sending `typing` every `--typing-ms` (300 ms,
//! their first ones spread evenly over the 2.1 s throttle cycle) for 3 s of warm-up and then `--run-secs` (20)
//! measured. The server forwards at most one `typing` per user per group per 2 s and drops the
//! rest silently, so a typer every 300 ms is forwarded once per 2.1 s (every 7th) and each
//! forwarded one becomes a frame to each other online member.
//!
//! Figures over the measured window: `typing` frames the typers sent (the clients' count and
//! `/metrics` in), forwarded (frames out ÷ the other online members) and dropped by the
//! throttle, frames received per second (all clients, and per client), and the server's CPU per
//! forwarded `typing` and per frame sent, less its idle rate with every session connected
//! (measured for 1 s before). The users are created with `POST /api/users`, the group with one
//! `POST /api/groups`; tokens are minted offline when loadgen started the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{blocking_metrics, run_id};
use crate::args::Args;
use crate::report::{fig, fig_f, nproc, per};
use crate::server::{self, mint};
use crate::wire::connect_welcome;
use crate::Error;

/// The throttle of the server (`TYPING_EVERY` in src/session/commands/edits.rs).
const TYPING_EVERY: Duration = Duration::from_secs(2);
const WARM_UP: Duration = Duration::from_secs(3);

/// Runs the typing scenario against the server in `args`.
pub fn typing(args: &Args) -> Result<bool, Error> {
    let admin = args.admin()?;
    let members = args.members.unwrap_or(500);
    let online = args.online.unwrap_or(members);
    let typers = args.senders.unwrap_or(100);
    if typers == 0 || typers > online || online > members || online < 2 {
        return Err(format!(
            "need 0 < senders ({typers}) <= online ({online}) <= members ({members}), online >= 2"
        )
        .into());
    }
    let period = Duration::from_millis(args.typing_ms.max(1));
    let deadline_std = Instant::now() + Duration::from_secs(args.deadline_secs);
    let id = run_id();
    let users: Vec<String> = (0..members).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");
    let created = admin.create_users(&users, args.create_threads, deadline_std)?;
    let t = Instant::now();
    admin.post_slow(
        "/api/groups",
        json!({"id": group, "name": "typing", "members": users}),
        Duration::from_secs(args.deadline_secs),
    )?;
    let create_s = t.elapsed().as_secs_f64();
    let mut urls = Vec::with_capacity(online);
    for user in users.iter().take(online) {
        urls.push(match (&args.data_dir, args.own_server) {
            (Some(data), true) => admin.ws_url(&mint(data, user)?),
            _ => admin.user_ws_url(user)?,
        });
    }
    println!("=== rollcall loadgen: typing ===");
    println!(
        "machine     : nproc={} loadavg(at start)={}",
        nproc(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "command     : {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    created.report(args.create_threads);
    println!(
        "setup       : group of {members} created in {create_s:.2} s (one POST /api/groups); {online} online, {typers} typing every {} ms",
        period.as_millis()
    );
    fig("members", members);
    fig("online", online);
    fig("typers", typers);
    fig("typing_ms", args.typing_ms);
    fig_f("create_group_s", create_s);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = Run {
        admin,
        group,
        typers,
        period,
        window: Duration::from_secs(args.run_secs.max(1)),
        pid: args.server_pid,
        deadline: tokio::time::Instant::from_std(deadline_std),
    };
    runtime.block_on(run.drive(urls))
}

struct Run {
    admin: crate::admin::Admin,
    group: String,
    typers: usize,
    period: Duration,
    window: Duration,
    pid: Option<u32>,
    deadline: tokio::time::Instant,
}

/// What the clients did and received, all together.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
}

impl Run {
    /// How often one typer is forwarded: it sends every `period`, and the throttle lets
    /// through the first one at least `TYPING_EVERY` after the last it let through.
    fn cycle(&self) -> Duration {
        let n = (TYPING_EVERY.as_secs_f64() / self.period.as_secs_f64()).ceil();
        self.period.mul_f64(n.max(1.0))
    }

    async fn drive(self, urls: Vec<String>) -> Result<bool, Error> {
        let online = urls.len();
        let counts = Arc::new(Counts::default());
        let gate = Arc::new(Semaphore::new(256));
        let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<(), String>>();
        let (typing_tx, typing_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(online);
        for (i, url) in urls.into_iter().enumerate() {
            // Typer i's first `typing` goes out i/typers of a throttle cycle (2.1 s at 300 ms)
            // after the start, so the forwarded ones are spread evenly over the cycle and the
            // window's edges cut as many cycles as they start.
            let phase =
                (i < self.typers).then(|| self.cycle().mul_f64(i as f64 / self.typers as f64));
            tasks.push(tokio::spawn(client(Client {
                url,
                group: self.group.clone(),
                phase,
                period: self.period,
                gate: Arc::clone(&gate),
                counts: Arc::clone(&counts),
                ready: ready_tx.clone(),
                typing: typing_rx.clone(),
                stop: stop_rx.clone(),
                deadline: self.deadline,
            })));
        }
        drop(ready_tx);
        let t = Instant::now();
        for _ in 0..online {
            match tokio::time::timeout_at(self.deadline, ready.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => return Err(format!("a client did not connect: {e}").into()),
                Ok(None) => return Err("every client ended".into()),
                Err(_) => return Err("deadline reached while connecting".into()),
            }
        }
        println!(
            "connect     : {online} sessions welcomed in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = || self.pid.and_then(server::cpu_seconds).unwrap_or(f64::NAN);
        let idle = Duration::from_secs(1);
        let c0 = cpu();
        tokio::time::sleep(idle).await;
        let idle_rate = (cpu() - c0) / idle.as_secs_f64();

        let _ = typing_tx.send(true);
        tokio::time::sleep(WARM_UP).await;
        let m0 = blocking_metrics(&self.admin).await?;
        let (sent0, received0) = (
            counts.sent.load(Ordering::Relaxed),
            counts.received.load(Ordering::Relaxed),
        );
        let (cpu0, t0) = (cpu(), Instant::now());
        tokio::time::sleep(self.window).await;
        let m1 = blocking_metrics(&self.admin).await?;
        let (sent1, received1) = (
            counts.sent.load(Ordering::Relaxed),
            counts.received.load(Ordering::Relaxed),
        );
        let (cpu1, secs) = (cpu(), t0.elapsed().as_secs_f64());
        let rss = self.pid.and_then(server::rss_kib);
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }

        let sent = (sent1 - sent0) as f64;
        let received = (received1 - received0) as f64;
        let frames_in = m0.frames(&m1, "in", "typing");
        let frames_out = m0.frames(&m1, "out", "typing");
        let forwarded = frames_out / (online - 1) as f64;
        let dropped = frames_in - forwarded;
        let server_cpu = cpu1 - cpu0;
        let net_cpu = server_cpu - idle_rate * secs;
        let per_forward = self.cycle().as_secs_f64();
        let expect_forwarded = self.typers as f64 * secs / per_forward;
        println!("--- result (typing, {secs:.1} s measured) ---");
        println!(
            "typing in   : {:.1}/s sent by the {} typers ({:.1}/s in /metrics)",
            sent / secs,
            self.typers,
            frames_in / secs
        );
        println!(
            "throttle    : {:.2}/s forwarded ({:.1}% of those in; {:.2}/s expected: one per typer per {:.1} s), {:.1}/s dropped",
            forwarded / secs,
            100.0 * per(forwarded, frames_in),
            expect_forwarded / secs,
            per_forward,
            dropped / secs
        );
        println!(
            "typing out  : {:.0} frames/s sent ({} others each), {:.0}/s received by all clients, {:.1}/s per client",
            frames_out / secs,
            online - 1,
            received / secs,
            received / secs / online as f64
        );
        println!(
            "server CPU  : {server_cpu:.2} s over the window ({:.1}% of one core; idle rate {idle_rate:.3} s/s): {:.1} µs per forwarded typing, {:.2} µs per frame sent (idle rate taken off)",
            100.0 * server_cpu / secs,
            1e6 * per(net_cpu, forwarded),
            1e6 * per(net_cpu, frames_out)
        );
        if let Some((r, h)) = rss {
            println!(
                "server RSS  : {:.1} MiB (VmHWM {:.1} MiB)",
                r as f64 / 1024.0,
                h as f64 / 1024.0
            );
            fig_f("server_rss_mib", r as f64 / 1024.0);
        }
        fig_f("secs", secs);
        fig_f("typing_sent_per_s", sent / secs);
        fig_f("typing_in_per_s", frames_in / secs);
        fig_f("forwarded_per_s", forwarded / secs);
        fig_f("forwarded_expected_per_s", expect_forwarded / secs);
        fig_f("dropped_per_s", dropped / secs);
        fig_f("typing_out_per_s", frames_out / secs);
        fig_f("received_per_s", received / secs);
        fig_f("received_per_client_per_s", received / secs / online as f64);
        fig_f("server_cpu_s", server_cpu);
        fig_f("server_idle_cpu_s_per_s", idle_rate);
        fig_f("cpu_us_per_forwarded", 1e6 * per(net_cpu, forwarded));
        fig_f("cpu_us_per_frame_out", 1e6 * per(net_cpu, frames_out));

        let mut failures = Vec::new();
        let errors = counts.errors.load(Ordering::Relaxed);
        let lost = counts.lost.load(Ordering::Relaxed);
        if errors > 0 || lost > 0 {
            failures.push(format!("{errors} error frames, {lost} connections lost"));
        }
        // (Frames out need not be a multiple of the others: a snapshot can fall inside a
        // fan-out, so that is not checked.)
        // Each typer is forwarded at most once per 2 s (+1 for a window edge).
        let most = self.typers as f64 * (secs / TYPING_EVERY.as_secs_f64()).ceil() + 1.0;
        if forwarded > most {
            failures.push(format!(
                "{forwarded} forwarded, above the throttle's {most}"
            ));
        }
        for f in &failures {
            println!("FAILED      : {f}");
        }
        let clean = failures.is_empty();
        println!("status      : {}", if clean { "ok" } else { "FAILED" });
        fig("clean", clean);
        Ok(clean)
    }
}

/// One online member: `phase` is set for a typer (when its first `typing` goes, after the start).
struct Client {
    url: String,
    group: String,
    phase: Option<Duration>,
    period: Duration,
    gate: Arc<Semaphore>,
    counts: Arc<Counts>,
    ready: mpsc::UnboundedSender<Result<(), String>>,
    typing: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
}

/// Connects (at most 256 at a time), then counts the `typing` frames it receives and, for a
/// typer once typing started, sends `typing` every period until told to stop.
async fn client(mut c: Client) {
    let connected = match c.gate.acquire().await {
        Ok(_permit) => connect_welcome(&c.url, true, c.deadline).await,
        Err(_) => Err("the gate closed".into()),
    };
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(e) => {
            let _ = c.ready.send(Err(e));
            return;
        }
    };
    let _ = c.ready.send(Ok(()));
    let frame = Message::text(json!({"type": "typing", "group": c.group}).to_string());
    let mut next: Option<tokio::time::Instant> = None;
    loop {
        let tick = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = c.stop.changed() => break,
            changed = c.typing.changed(), if next.is_none() && c.phase.is_some() => {
                if changed.is_err() {
                    break;
                }
                next = c.phase.map(|p| tokio::time::Instant::now() + p);
            }
            _ = tick => {
                if ws.send(frame.clone()).await.is_err() {
                    c.counts.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                c.counts.sent.fetch_add(1, Ordering::Relaxed);
                next = next.map(|at| at + c.period);
            }
            read = ws.next() => match read {
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<Value>(text.as_str()) {
                        Ok(f) if f["type"] == "typing" => {
                            c.counts.received.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(f) if f["type"] == "error" => {
                            c.counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            c.counts.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => {
                    c.counts.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
    let _ = ws.close(None).await;
}
