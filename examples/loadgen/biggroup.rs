//! The `biggroup` scenario (issue #14): a group's start must cost O(members + deletions in the
//! dedup window), not O(history). One group of `--senders` (4) members is filled with `--messages`
//! (1,000,000) as fast as the server takes them (every sender pipelined, `--window` in flight,
//! the server started with `--durability process` for the build: sled's flush without fsync,
//! and `--session-queue 65536` so that no sender, which gets every message pushed too, is
//! evicted as lagging; the write budget is off in every server loadgen starts). Then `--restarts` (5) times: SIGTERM,
//! a restart on the same data with the measured flags (the server's defaults, so `power`
//! durability, plus `--server-arg`), a probe member connects (its `welcome` comes from the store and
//! starts no actor) and sends once: the time from writing that `send` until its `sent` includes
//! starting the group's actor from the store. The probe is a member that posted nothing in the
//! build. A second `send` right after times the same with the actor running (the fsync and the
//! round trip). The RSS after the restart, after the `welcome` and after the first send shows
//! what the start costs in memory. The same is measured for a group of
//! `--baseline-messages` (1,000) in a fresh server, to compare: memory must not depend on the
//! message count. Target: first send → `sent` ≤ 20 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{run_id, Admin};
use crate::args::Args;
use crate::posting::{post, Sender, Totals};
use crate::report::{fig, fig_f, fmt_ms, median, micros, percentile, set_fig_prefix};
use crate::server::{
    self, finish_server, mint, rss_mib, server_flags, start_server_with, ADMIN_TOKEN,
};
use crate::wire::connect_welcome;
use crate::Error;

/// The server's `--session-queue` while the group is built (its default is 1,024 frames).
const BUILD_SESSION_QUEUE: &str = "65536";

/// The target for the first send after a restart.
const TARGET_MS: f64 = 20.0;

pub fn biggroup(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("biggroup starts and restarts its own server; drop --http".into());
    }
    let big = args.messages.unwrap_or(1_000_000);
    let n_senders = args.senders.unwrap_or(4);
    if big == 0 || args.baseline_messages == 0 || n_senders == 0 || args.restarts == 0 {
        return Err("--messages, --baseline-messages, --senders and --restarts must be > 0".into());
    }
    println!(
        "=== biggroup: one group of {n_senders} members with {big} messages (and {} to compare), \
         {} restarts each ===",
        args.baseline_messages, args.restarts
    );
    let big_run = measure(args, "big", big, n_senders)?;
    let base_run = measure(args, "base", args.baseline_messages, n_senders)?;

    println!("--- result (biggroup) ---");
    println!(
        "{:<5} {:>9} {:>10} {:>9} {:>10} {:>19} {:>11} {:>12} {:>33}",
        "group",
        "messages",
        "build/s",
        "disk MB",
        "healthz s",
        "first send p50/max",
        "warm p50",
        "welcome p50",
        "RSS restarted → welcomed → sent"
    );
    for r in [&big_run, &base_run] {
        println!(
            "{:<5} {:>9} {:>10.0} {:>9.1} {:>10.3} {:>9} / {:>7} ms {:>8} ms {:>9} ms {:>9.1} → {:>6.1} → {:>6.1} MiB",
            r.label,
            r.messages,
            r.build.per_s(),
            r.disk as f64 / 1e6,
            median(&r.healthz_s),
            fmt_ms(percentile(&r.first_us, 0.5)),
            fmt_ms(percentile(&r.first_us, 1.0)),
            fmt_ms(percentile(&r.warm_us, 0.5)),
            fmt_ms(percentile(&r.welcome_us, 0.5)),
            median(&r.rss_before),
            median(&r.rss_welcomed),
            median(&r.rss_after)
        );
    }
    let first_p50 = percentile(&big_run.first_us, 0.5).unwrap_or(f64::NAN);
    let first_max = percentile(&big_run.first_us, 1.0).unwrap_or(f64::NAN);
    let rss_ratio = median(&big_run.rss_after) / median(&base_run.rss_after);
    println!(
        "target: first send → sent ≤ {TARGET_MS} ms with {big} messages: median {first_p50:.2} ms \
         {}, max {first_max:.2} ms {}",
        if first_p50 <= TARGET_MS {
            "met"
        } else {
            "MISSED"
        },
        if first_max <= TARGET_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "memory: RSS after the first send {:.1} MiB with {big} messages vs {:.1} MiB with {} \
         ({rss_ratio:.2}×); the actor's start (welcomed → sent) added {:+.1} vs {:+.1} MiB; \
         the restarted server before any connect: {:.1} vs {:.1} MiB",
        median(&big_run.rss_after),
        median(&base_run.rss_after),
        args.baseline_messages,
        median(&big_run.rss_after) - median(&big_run.rss_welcomed),
        median(&base_run.rss_after) - median(&base_run.rss_welcomed),
        median(&big_run.rss_before),
        median(&base_run.rss_before)
    );
    fig_f("first_send_p50_ms", first_p50);
    fig_f("first_send_max_ms", first_max);
    fig(
        "target_met",
        first_p50 <= TARGET_MS && first_max <= TARGET_MS,
    );
    fig_f("rss_ratio_big_to_base", rss_ratio);
    let mut clean = true;
    for r in [&big_run, &base_run] {
        set_fig_prefix(&format!("{}.", r.label));
        r.figures();
        clean &= r.clean;
    }
    set_fig_prefix("");
    println!("status: {}", if clean { "ok" } else { "INCOMPLETE" });
    Ok(clean)
}

/// One group's build and restarts.
struct Run {
    label: &'static str,
    messages: u64,
    build: Totals,
    disk: u64,
    healthz_s: Vec<f64>,
    /// Connect → `welcome`, µs, sorted.
    welcome_us: Vec<u64>,
    /// The first `send` after a restart → its `sent`, µs, sorted.
    first_us: Vec<u64>,
    /// The second `send` (actor running) → its `sent`, µs, sorted.
    warm_us: Vec<u64>,
    rss_before: Vec<f64>,
    /// After the `welcome`, before the first send.
    rss_welcomed: Vec<f64>,
    rss_after: Vec<f64>,
    clean: bool,
}

impl Run {
    fn figures(&self) {
        fig("messages", self.messages);
        fig_f("build_per_s", self.build.per_s());
        fig_f("build_s", self.build.span_s);
        fig_f("disk_mb", self.disk as f64 / 1e6);
        fig_f("healthz_s", median(&self.healthz_s));
        for (key, v) in [
            ("welcome", &self.welcome_us),
            ("first_send", &self.first_us),
            ("warm_send", &self.warm_us),
        ] {
            fig_f(
                &format!("{key}_p50_ms"),
                percentile(v, 0.5).unwrap_or(f64::NAN),
            );
            fig_f(
                &format!("{key}_max_ms"),
                percentile(v, 1.0).unwrap_or(f64::NAN),
            );
        }
        fig_f("rss_before_mib", median(&self.rss_before));
        fig_f("rss_welcomed_mib", median(&self.rss_welcomed));
        fig_f("rss_after_mib", median(&self.rss_after));
    }
}

/// Builds a group of `messages`, then restarts the server `--restarts` times and times the
/// first send after each.
fn measure(
    args: &Args,
    label: &'static str,
    messages: u64,
    n_senders: usize,
) -> Result<Run, Error> {
    // The build's senders are members that get every message pushed; a deep outbound queue
    // keeps a sender that is busy sending from being evicted as lagging (4000).
    let build_flags = [
        "--durability",
        "process",
        "--session-queue",
        BUILD_SESSION_QUEUE,
    ]
    .map(String::from);
    let (mut srv, _dir) = start_server_with(args, &build_flags)?;
    let admin = Admin::new(&srv.http, ADMIN_TOKEN)?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs.max(3600));
    let id = run_id();
    let senders: Vec<String> = (0..n_senders).map(|s| format!("{id}-s{s}")).collect();
    // The probe is a member that posts nothing during the build, so its `welcome` counts no
    // own messages (a member's stored summary counts its own messages since its read cursor).
    let probe_user = format!("{id}-probe");
    let mut members = senders.clone();
    members.push(probe_user.clone());
    let group = format!("{id}-big");
    admin.create_users(&members, members.len(), deadline)?;
    admin.post("/api/groups", json!({"id": &group, "members": &members}))?;

    let body: Arc<str> = "x".repeat(args.body_bytes.unwrap_or(64)).into();
    let share = messages / n_senders as u64;
    let mut posting = Vec::with_capacity(n_senders);
    for (index, user) in senders.iter().enumerate() {
        let mine = if index == 0 {
            share + messages % n_senders as u64
        } else {
            share
        };
        let token = mint(&srv.data, user)?;
        posting.push(Sender {
            index,
            url: format!("ws://{}/ws?token={token}", admin.host_port),
            sends: (0..u32::try_from(mine)?).map(|r| (0, r)).collect(),
            window: args.window,
            body: Arc::clone(&body),
            nodelay: !args.client_nagle,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (outcomes, _, timed_out) = runtime.block_on(post(
        posting,
        Arc::new(vec![group.clone()]),
        tokio::time::Instant::from_std(deadline),
    ))?;
    let build = Totals::of(&outcomes);
    println!(
        "{label:<5} build : {} of {messages} stored in {:.1} s ({:.0} msgs/s, {n_senders} senders × \
         {} in flight, --durability process --session-queue {BUILD_SESSION_QUEUE}); send→sent p50 {} ms",
        build.stored,
        build.span_s,
        build.per_s(),
        args.window,
        fmt_ms(percentile(&build.latency_us, 0.5))
    );
    let mut clean = !timed_out && build.clean(messages) && build.stored == messages;
    for e in build.lost.iter().take(5) {
        println!("  {e}");
    }

    let measured = server_flags(args, &[]);
    let token = mint(&srv.data, &probe_user)?;
    let mut run = Run {
        label,
        messages,
        build,
        disk: 0,
        healthz_s: Vec::new(),
        welcome_us: Vec::new(),
        first_us: Vec::new(),
        warm_us: Vec::new(),
        rss_before: Vec::new(),
        rss_welcomed: Vec::new(),
        rss_after: Vec::new(),
        clean: true,
    };
    for r in 0..args.restarts {
        let healthz = srv.restart_with(measured.clone())?;
        if r == 0 {
            run.disk = server::dir_bytes(&srv.data);
        }
        let admin = Admin::new(&srv.http, ADMIN_TOKEN)?;
        std::thread::sleep(Duration::from_millis(300));
        let rss_before = rss_mib(srv.pid);
        let loaded_before = admin.metrics()?.get("rollcall_groups_loaded");
        let url = format!("ws://{}/ws?token={token}", admin.host_port);
        let probe = runtime.block_on(probe(&url, &group, r, srv.pid, deadline));
        let loaded_after = admin.metrics()?.get("rollcall_groups_loaded");
        match probe {
            Ok(p) => {
                println!(
                    "{label:<5} restart {r}: /healthz {:.3} s; welcome {:.2} ms; first send → sent \
                     {:.2} ms, second {:.2} ms; RSS {rss_before:.1} → {:.1} (welcomed) → {:.1} MiB \
                     (first sent); actors running {loaded_before} → {loaded_after}",
                    healthz.as_secs_f64(),
                    p.welcome_us as f64 / 1000.0,
                    p.first_us as f64 / 1000.0,
                    p.warm_us as f64 / 1000.0,
                    p.rss_welcomed,
                    p.rss_after
                );
                run.healthz_s.push(healthz.as_secs_f64());
                run.welcome_us.push(p.welcome_us);
                run.first_us.push(p.first_us);
                run.warm_us.push(p.warm_us);
                run.rss_before.push(rss_before);
                run.rss_welcomed.push(p.rss_welcomed);
                run.rss_after.push(p.rss_after);
                clean &= loaded_before == 0.0 && loaded_after == 1.0;
            }
            Err(e) => {
                println!("{label:<5} restart {r}: {e}");
                clean = false;
            }
        }
    }
    for v in [&mut run.welcome_us, &mut run.first_us, &mut run.warm_us] {
        v.sort_unstable();
    }
    run.clean = clean;
    finish_server(srv);
    Ok(run)
}

/// What one probe after a restart measured.
struct Probe {
    welcome_us: u64,
    first_us: u64,
    warm_us: u64,
    /// Right after the `welcome`.
    rss_welcomed: f64,
    /// Right after the first `sent`.
    rss_after: f64,
}

/// Connects, waits for the `welcome`, sends twice (one after the other) and times each `sent`.
async fn probe(
    url: &str,
    group: &str,
    restart: usize,
    pid: u32,
    deadline: Instant,
) -> Result<Probe, Error> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let t = Instant::now();
    let (mut ws, _) = connect_welcome(url, true, deadline).await?;
    let welcome_us = micros(t.elapsed());
    let rss_welcomed = rss_mib(pid);
    let mut times = [0u64; 2];
    let mut rss_after = f64::NAN;
    for (i, slot) in times.iter_mut().enumerate() {
        let frame = json!({
            "type": "send", "id": i + 1, "group": group,
            "client_id": format!("probe{restart}-{i}"), "body": "first after restart",
        });
        let t = Instant::now();
        ws.send(Message::text(frame.to_string())).await?;
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| "no sent before the deadline")?;
            let Some(Ok(Message::Text(text))) = next else {
                match next {
                    Some(Ok(_)) => continue,
                    other => return Err(format!("connection ended: {other:?}").into()),
                }
            };
            let v: Value = serde_json::from_str(text.as_str())?;
            match v["type"].as_str() {
                Some("sent") if v["id"] == json!(i + 1) => break,
                Some("error") => return Err(format!("send refused: {text}").into()),
                _ => {}
            }
        }
        *slot = micros(t.elapsed());
        if i == 0 {
            rss_after = rss_mib(pid);
        }
    }
    let _ = ws.close(None).await;
    Ok(Probe {
        welcome_us,
        first_us: times[0],
        warm_us: times[1],
        rss_welcomed,
        rss_after,
    })
}
