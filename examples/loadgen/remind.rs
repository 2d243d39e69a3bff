//! The `remind` scenario (docs/PROTOCOL.md §4.3): one group of `--members` (5,000), `--online`
//! (1,000) of them connected, the first the sender. The sender posts one message; nobody reads
//! (nor acknowledges) it; once it reached every online member the sender sends `remind`. The
//! figures: `remind` → `reminded`, `remind` → the last `reminder` at the online non-readers,
//! the `count` in `reminded` (must be members − 1), the server's CPU for the remind (from
//! `/proc`, ticks of 10 ms, less the idle rate of the connected sessions measured just before)
//! and its memory. A second `remind` right after must be `rate_limited`.
//!
//! Creating the users and the group is setup, each timed apart. The server creates no user
//! for the admin implicitly, so the `--members` users come first: `POST /api/users` from
//! `--create-threads` threads (`user_exists` is fine: a re-run). One `POST /api/groups` with
//! the whole member list (`--members-via post`) is the simplest documented way to fill the
//! group. The default, `--members-via put`, posts the group with the sender only and adds the
//! others with `PUT /api/groups/{gid}/members/{uid}` from `--create-threads` threads, whose
//! flushes the group shares (about 1,500 flushes); before the server queued a `POST`'s adds
//! together it was the faster way (1.3× in the interleaved runs of BENCHMARKS.md), and it stays
//! the default so the figures stay comparable. Tokens are minted offline when loadgen started
//! the server (its JWT secret is known), else through the admin API.
//! The non-readers' clients are plain tasks on this program's runtime, connecting at most 256 at
//! a time; each only reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{blocking_metrics, in_parallel, run_id, Admin};
use crate::args::{Args, MembersVia, Receipts};
use crate::report::{fig, fig_f, fmt_ms, nproc, percentile};
use crate::server::{self, mint};
use crate::wire::{connect_welcome, Ws};
use crate::Error;

/// Runs the remind scenario against the server in `args`.
pub fn remind(args: &Args) -> Result<bool, Error> {
    let admin = args.admin()?;
    let members = args.members.unwrap_or(5_000);
    let online = args.online.unwrap_or(1_000);
    if online < 2 || online > members {
        return Err(format!("need 2 <= online ({online}) <= members ({members})").into());
    }
    let policy = args.receipts.unwrap_or(Receipts::Full);
    let deadline_std = Instant::now() + Duration::from_secs(args.deadline_secs);
    let id = run_id();
    let users: Vec<String> = (0..members).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");

    let created = admin.create_users(&users, args.create_threads, deadline_std)?;
    let flushes_before = admin.metrics()?;
    let t = Instant::now();
    create_group(&admin, args, &group, &users, policy, deadline_std)?;
    let create_s = t.elapsed().as_secs_f64();
    let create_flushes = flushes_before.delta(&admin.metrics()?, "rollcall_flushes_total");
    let t = Instant::now();
    let mut urls = Vec::with_capacity(online);
    for user in users.iter().take(online) {
        urls.push(match (&args.data_dir, args.own_server) {
            (Some(data), true) => admin.ws_url(&mint(data, user)?),
            _ => admin.user_ws_url(user)?,
        });
    }
    let tokens_s = t.elapsed().as_secs_f64();
    println!("=== rollcall loadgen: remind ===");
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
    println!(
        "setup       : group of {members} members (receipts {}) {}: {create_s:.3} s, {create_flushes} flushes; {online} tokens ({}): {tokens_s:.3} s",
        policy.as_str(),
        match args.members_via {
            MembersVia::Post => "in one POST /api/groups".to_string(),
            MembersVia::Put => format!(
                "by POST /api/groups + PUT …/members/{{uid}} from {} threads",
                args.create_threads.max(1)
            ),
        },
        if args.own_server { "minted offline" } else { "admin API" }
    );
    created.report(args.create_threads);
    fig("members", members);
    fig("online", online);
    fig("receipts", policy.as_str());
    fig_f("create_group_s", create_s);
    fig_f("create_group_flushes", create_flushes);
    fig(
        "members_via",
        format!("{:?}", args.members_via).to_lowercase(),
    );
    fig_f("tokens_s", tokens_s);

    let run = Run {
        admin,
        group,
        sender: users[0].clone(),
        members,
        policy,
        pid: args.server_pid,
        body: "x".repeat(args.body_bytes.unwrap_or(64)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let deadline = tokio::time::Instant::from_std(deadline_std);
    runtime.block_on(run.drive(urls, deadline))
}

/// Creates the group of `users` (the first is the sender; every one exists) the way
/// `--members-via` says: one `POST /api/groups` with every member, or a `POST` with the sender
/// only and one `PUT /api/groups/{gid}/members/{uid}` per other member from `--create-threads`
/// threads (the server answers each after a flush, and concurrent ones share their flushes).
fn create_group(
    admin: &Admin,
    args: &Args,
    group: &str,
    users: &[String],
    policy: Receipts,
    deadline: Instant,
) -> Result<(), Error> {
    let timeout = Duration::from_secs(args.deadline_secs);
    let first = match args.members_via {
        MembersVia::Post => users,
        MembersVia::Put => &users[..1],
    };
    let body =
        json!({"id": group, "name": "remind", "members": first, "receipts": policy.as_str()});
    admin.post_slow("/api/groups", body, timeout)?;
    let rest = &users[first.len()..];
    let add = |user: &String| -> Result<(), Error> {
        admin.put(&format!("/api/groups/{group}/members/{user}"), json!({}))?;
        Ok(())
    };
    in_parallel(rest, args.create_threads, deadline, "adding members", add)
}

/// What one run needs besides the connections.
struct Run {
    admin: Admin,
    group: String,
    /// The first member: it posts and reminds.
    sender: String,
    members: usize,
    policy: Receipts,
    pid: Option<u32>,
    body: String,
}

/// What a non-reader saw, as it happened.
enum Event {
    Ready(Result<(), String>),
    Msg,
    /// A `reminder` (`ok`: for this group, seq and sender, with the message in it).
    Reminder {
        at: Instant,
        ok: bool,
    },
    Error(String),
}

impl Run {
    async fn drive(self, urls: Vec<String>, deadline: tokio::time::Instant) -> Result<bool, Error> {
        let n_others = urls.len() - 1;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(256));
        let expect = Arc::new((self.group.clone(), self.sender.clone()));
        let t_connect = Instant::now();
        let mut urls = urls.into_iter();
        let sender_url = urls.next().ok_or("no sender")?;
        let mut tasks = Vec::with_capacity(n_others);
        for url in urls {
            tasks.push(tokio::spawn(non_reader(
                url,
                Arc::clone(&gate),
                Arc::clone(&expect),
                events_tx.clone(),
                stop_rx.clone(),
                deadline,
            )));
        }
        drop(events_tx);
        let (mut ws, _) = connect_welcome(&sender_url, true, deadline).await?;
        let mut ready = 0;
        while ready < n_others {
            match next_event(&mut events, deadline).await? {
                Event::Ready(Ok(())) => ready += 1,
                Event::Ready(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        let connect_s = t_connect.elapsed().as_secs_f64();
        println!(
            "connect     : {} sessions welcomed in {connect_s:.2} s",
            n_others + 1
        );
        fig_f("connect_s", connect_s);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The message, to everyone online.
        let t_send = Instant::now();
        let send = json!({"type": "send", "id": 1, "group": self.group,
            "client_id": "remind-1", "body": self.body});
        ws.send(Message::text(send.to_string())).await?;
        let seq = reply(&mut ws, 1, deadline).await?;
        let seq = seq["seq"]
            .as_u64()
            .ok_or_else(|| format!("no seq in {seq}"))?;
        let sent_ms = t_send.elapsed().as_secs_f64() * 1e3;
        let mut got_msg = 0;
        while got_msg < n_others {
            if let Event::Msg = next_event(&mut events, deadline).await? {
                got_msg += 1;
            }
        }
        let all_ms = t_send.elapsed().as_secs_f64() * 1e3;
        println!(
            "message     : seq {seq}: send→sent {sent_ms:.2} ms, send→msg at all {n_others} others {all_ms:.2} ms"
        );

        // The server's idle rate with every session connected, then the remind.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = Duration::from_secs(1);
        let idle_before = self.pid.and_then(server::cpu_seconds);
        tokio::time::sleep(idle).await;
        let idle_after = self.pid.and_then(server::cpu_seconds);
        let idle_rate = match (idle_before, idle_after) {
            (Some(a), Some(b)) => (b - a) / idle.as_secs_f64(),
            _ => f64::NAN,
        };
        let rss_before = self.pid.and_then(server::rss_kib);
        let metrics_before = blocking_metrics(&self.admin).await?;
        let cpu_before = self.pid.and_then(server::cpu_seconds);
        let t_remind = Instant::now();
        let remind = json!({"type": "remind", "id": 2, "group": self.group, "seq": seq});
        ws.send(Message::text(remind.to_string())).await?;
        let expect_reminders = if self.policy == Receipts::Off {
            0
        } else {
            n_others
        };
        let mut reminded: Option<(Value, Duration)> = None;
        let mut arrivals: Vec<u64> = Vec::with_capacity(n_others);
        let (mut bad_reminders, mut errors) = (0u64, Vec::new());
        while reminded.is_none() || arrivals.len() < expect_reminders {
            tokio::select! {
                frame = tokio::time::timeout_at(deadline, ws.next()) => {
                    let text = match frame {
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        Ok(other) => return Err(format!("sender connection ended: {other:?}").into()),
                        Err(_) => break,
                    };
                    let f: Value = serde_json::from_str(text.as_str())?;
                    if f["id"] == json!(2) {
                        reminded = Some((f, t_remind.elapsed()));
                    }
                }
                event = next_event(&mut events, deadline) => match event? {
                    Event::Reminder { at, ok } => {
                        arrivals.push(micros(at.saturating_duration_since(t_remind)));
                        bad_reminders += u64::from(!ok);
                    }
                    Event::Error(e) => errors.push(e),
                    _ => {}
                },
            }
        }
        let took = t_remind.elapsed();
        let cpu_after = self.pid.and_then(server::cpu_seconds);
        let rss_after = self.pid.and_then(server::rss_kib);
        let metrics_after = blocking_metrics(&self.admin).await?;
        let cpu = match (cpu_before, cpu_after) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };

        // A second remind within --remind-interval-secs must be refused.
        let again = json!({"type": "remind", "id": 3, "group": self.group, "seq": seq});
        ws.send(Message::text(again.to_string())).await?;
        let again = reply(&mut ws, 3, deadline).await?;
        let _ = ws.close(None).await;
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // Reminders that came after the loop ended (duplicates) are still in the channel.
        while let Ok(event) = events.try_recv() {
            match event {
                Event::Reminder { .. } => bad_reminders += 1,
                Event::Error(e) => errors.push(e),
                _ => {}
            }
        }

        arrivals.sort_unstable();
        let (answer, answer_at) = reminded.unwrap_or((Value::Null, took));
        let count = answer["count"].as_u64();
        let users = answer["users"].as_array().map(Vec::len);
        let want = u64::try_from(self.members - 1)?;
        let out = metrics_before.frames_by_type(&metrics_after, "out");
        let frames = |kind: &str| out.get(kind).copied().unwrap_or(0.0);
        println!("--- result (remind) ---");
        match self.policy {
            Receipts::Off => println!(
                "remind      : answered in {:.2} ms: {answer}",
                answer_at.as_secs_f64() * 1e3
            ),
            _ => println!(
                "remind      : remind→reminded {:.2} ms (count {}, users listed {}); remind→last reminder {} ms (p50 {} ms) at {} of {n_others} online non-readers",
                answer_at.as_secs_f64() * 1e3,
                count.map_or("none".into(), |c| c.to_string()),
                users.map_or("none".into(), |u| u.to_string()),
                fmt_ms(percentile(&arrivals, 1.0)),
                fmt_ms(percentile(&arrivals, 0.5)),
                arrivals.len()
            ),
        }
        println!(
            "frames out Δ: reminder {} reminded {} error {} (total {})",
            frames("reminder"),
            frames("reminded"),
            frames("error"),
            out.values().sum::<f64>()
        );
        println!(
            "server CPU  : {cpu:.2} s from remind to the last reminder ({:.2} s at the idle rate of {idle_rate:.3} s/s; /proc ticks are 10 ms); RSS {} → {} MiB, peak {} MiB",
            idle_rate * took.as_secs_f64(),
            rss_before.map_or("n/a".into(), |(r, _)| format!("{:.1}", r as f64 / 1024.0)),
            rss_after.map_or("n/a".into(), |(r, _)| format!("{:.1}", r as f64 / 1024.0)),
            rss_after.map_or("n/a".into(), |(_, h)| format!("{:.1}", h as f64 / 1024.0)),
        );
        println!("second remind: {again}");
        fig_f("remind_to_reminded_ms", answer_at.as_secs_f64() * 1e3);
        fig_f(
            "remind_to_last_reminder_ms",
            percentile(&arrivals, 1.0).unwrap_or(f64::NAN),
        );
        fig_f(
            "remind_to_reminder_p50_ms",
            percentile(&arrivals, 0.5).unwrap_or(f64::NAN),
        );
        fig("reminders_received", arrivals.len());
        fig("reminded_count", count.map_or(Value::Null, Value::from));
        fig("reminded_users", users.map_or(Value::Null, Value::from));
        fig_f("reminder_frames_out", frames("reminder"));
        fig_f("server_cpu_s", cpu);
        fig_f("server_idle_cpu_s_per_s", idle_rate);
        fig_f("server_cpu_net_s", cpu - idle_rate * took.as_secs_f64());
        if let (Some((r0, _)), Some((r1, hwm))) = (rss_before, rss_after) {
            fig_f("server_rss_before_mib", r0 as f64 / 1024.0);
            fig_f("server_rss_after_mib", r1 as f64 / 1024.0);
            fig_f("server_peak_rss_mib", hwm as f64 / 1024.0);
        }

        let mut failures = Vec::new();
        match self.policy {
            Receipts::Off => {
                if answer["code"] != json!("receipts_off") || !arrivals.is_empty() {
                    failures.push("with receipts off, remind must be refused with receipts_off");
                }
            }
            policy => {
                if count != Some(want) {
                    failures.push("reminded.count is not members - 1");
                }
                if policy == Receipts::Full && users != Some(self.members - 1) {
                    failures.push("reminded.users does not list members - 1");
                }
                if policy == Receipts::Counts && users.is_some() {
                    failures.push("reminded.users is listed under counts");
                }
                if arrivals.len() != n_others || frames("reminder") != n_others as f64 {
                    failures.push("not every online non-reader got one reminder");
                }
                if again["code"] != json!("rate_limited")
                    || again["retry_after_ms"].as_u64().is_none()
                {
                    failures.push("a second remind was not rate_limited with retry_after_ms");
                }
            }
        }
        if bad_reminders > 0 {
            failures.push("a reminder was repeated or had the wrong group, seq, by or message");
        }
        if !errors.is_empty() {
            println!("errors      : {} (first: {})", errors.len(), errors[0]);
            failures.push("a non-reader got an error or lost its connection");
        }
        for f in &failures {
            println!("FAILED      : {f}");
        }
        let clean = failures.is_empty();
        println!("status      : {}", if clean { "ok" } else { "FAILED" });
        fig("clean", clean);
        match failures.first() {
            None => Ok(true),
            Some(first) => Err(format!("the remind check failed: {first}").into()),
        }
    }
}

/// The next event from the non-readers, or an error at the deadline or once all ended.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: tokio::time::Instant,
) -> Result<Event, Error> {
    match tokio::time::timeout_at(deadline, events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err("every non-reader ended".into()),
        Err(_) => Err("deadline reached".into()),
    }
}

/// Reads the sender's frames until the reply to request `id` (skipping pushes).
async fn reply(ws: &mut Ws, id: u64, deadline: tokio::time::Instant) -> Result<Value, Error> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: Value = serde_json::from_str(t.as_str())?;
                if f["id"] == json!(id) {
                    return Ok(f);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(format!("sender connection ended: {other:?}").into()),
            Err(_) => return Err(format!("no reply to request {id} before the deadline").into()),
        }
    }
}

/// One online member that never reads: connects (at most 256 at a time), then reports every
/// `msg` and `reminder` (checked against `expect`: the group and the sender) until told to stop.
async fn non_reader(
    url: String,
    gate: Arc<Semaphore>,
    expect: Arc<(String, String)>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) {
    let connected = match gate.acquire().await {
        Ok(_permit) => connect_welcome(&url, true, deadline).await,
        Err(_) => Err("the gate closed".into()),
    };
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(e) => {
            let _ = events.send(Event::Ready(Err(e)));
            return;
        }
    };
    let _ = events.send(Event::Ready(Ok(())));
    let mut seen_reminder = false;
    loop {
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.changed() => break,
            frame = ws.next() => frame,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(_)) => continue,
            other => {
                let _ = events.send(Event::Error(format!("connection ended: {other:?}")));
                return;
            }
        };
        let at = Instant::now();
        let Ok(f) = serde_json::from_str::<Value>(text.as_str()) else {
            let _ = events.send(Event::Error(format!("unparsable frame: {text}")));
            continue;
        };
        match f["type"].as_str() {
            Some("msg") => {
                let _ = events.send(Event::Msg);
            }
            Some("reminder") => {
                let (group, sender) = (&expect.0, &expect.1);
                let ok = !seen_reminder
                    && f["group"] == json!(group)
                    && f["seq"].is_u64()
                    && f["message"]["seq"] == f["seq"]
                    && f["by"] == json!(sender)
                    && f["message"]["from"] == json!(sender)
                    && f["message"]["body"].is_string();
                seen_reminder = true;
                let _ = events.send(Event::Reminder { at, ok });
            }
            Some("error") => {
                let _ = events.send(Event::Error(format!("error frame: {f}")));
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
}

/// A duration in whole microseconds (for `percentile`).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
