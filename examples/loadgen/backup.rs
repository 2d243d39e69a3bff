//! The `backup` scenario (issue #14): online backups under a stream of sends. A fresh server
//! (its defaults: `--durability power`), one group of `--senders` (4) members, each posting
//! `--messages` / senders messages pipelined (`--window` in flight); run twice on the same data,
//! once without backups and once with `POST /api/backup` back to back for as long as the sends
//! last. Reported: send → `sent` p50 / p99 / max of both runs, the backups taken and their
//! `longest_pause_ms` (the longest time one group's writes waited for its copy) median and max,
//! and every send answered in both runs. Backups are deleted as soon as they answered (disk).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::admin::{run_id, Admin};
use crate::args::Args;
use crate::posting::{post, Sender, Totals};
use crate::report::{fmt_ms, median, percentile};
use crate::server::{finish_server, mint, start_server_with, ADMIN_TOKEN};
use crate::Error;

/// Returns whether the run was clean (every send answered in both runs).
pub fn backup(args: &Args) -> Result<bool, Error> {
    let n_senders = args.senders.unwrap_or(4).max(1);
    let per_run = args.messages.unwrap_or(20_000).max(1);
    let (srv, _dir) = start_server_with(args, &[])?;
    let admin = Admin::new(&srv.http, ADMIN_TOKEN)?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs.max(600));
    let id = run_id();
    let senders: Vec<String> = (0..n_senders).map(|s| format!("{id}-s{s}")).collect();
    let group = format!("{id}-g");
    admin.create_users(&senders, senders.len(), deadline)?;
    admin.post("/api/groups", json!({"id": &group, "members": &senders}))?;
    let body: Arc<str> = "x".repeat(args.body_bytes.unwrap_or(200)).into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for (run, with_backups) in [(0u32, false), (1, true)] {
        let share = per_run / n_senders as u64;
        let mut posting = Vec::with_capacity(n_senders);
        for (index, user) in senders.iter().enumerate() {
            let token = mint(&srv.data, user)?;
            let first = u32::try_from(run as u64 * per_run)?;
            let n = u32::try_from(share)?;
            posting.push(Sender {
                index,
                url: format!("ws://{}/ws?token={token}", admin.host_port),
                sends: (first..first + n).map(|r| (0, r)).collect(),
                window: args.window,
                body: Arc::clone(&body),
                nodelay: !args.client_nagle,
            });
        }
        let done = Arc::new(AtomicBool::new(false));
        let pauses = Arc::new(Mutex::new(Vec::<f64>::new()));
        let backups = with_backups.then(|| {
            let (done, pauses, admin) = (Arc::clone(&done), Arc::clone(&pauses), admin.clone());
            std::thread::spawn(move || -> Result<(), String> {
                while !done.load(Ordering::SeqCst) {
                    let answer = admin
                        .post_slow("/api/backup", json!({}), Duration::from_secs(300))
                        .map_err(|e| e.to_string())?;
                    if let Some(pause) = answer["longest_pause_ms"].as_f64() {
                        pauses.lock().map_err(|e| e.to_string())?.push(pause);
                    }
                    if let Some(path) = answer["path"].as_str() {
                        let _ = std::fs::remove_dir_all(path);
                    }
                }
                Ok(())
            })
        });
        let (outcomes, _, timed_out) = runtime.block_on(post(
            posting,
            Arc::new(vec![group.clone()]),
            tokio::time::Instant::from_std(deadline),
        ))?;
        done.store(true, Ordering::SeqCst);
        if let Some(thread) = backups {
            thread
                .join()
                .map_err(|_| "the backup thread panicked")?
                .map_err(|e| format!("a backup failed: {e}"))?;
        }
        let totals = Totals::of(&outcomes);
        let expected = share * n_senders as u64;
        let mut pauses = pauses.lock().map_err(|e| e.to_string())?.clone();
        pauses.sort_by(f64::total_cmp);
        let label = if with_backups { "backups" } else { "none" };
        println!(
            "{label:<7}: {} of {expected} sends answered in {:.1} s; send→sent p50 {} / p99 {} / max {} ms; \
             {} backups, longest pause median {:.2} ms, max {:.2} ms{}",
            totals.answered,
            totals.span_s,
            fmt_ms(percentile(&totals.latency_us, 0.50)),
            fmt_ms(percentile(&totals.latency_us, 0.99)),
            fmt_ms(totals.latency_us.last().map(|&v| v as f64 / 1000.0)),
            pauses.len(),
            median(&pauses),
            pauses.last().copied().unwrap_or(0.0),
            if timed_out { " (deadline reached)" } else { "" },
        );
        results.push((label, totals.clean(expected) && !timed_out, totals, pauses));
    }
    finish_server(srv);
    let clean = results.iter().all(|r| r.1);
    let (_, _, plain, _) = &results[0];
    let (_, _, loaded, pauses) = &results[1];
    let p99 = |t: &Totals| percentile(&t.latency_us, 0.99).unwrap_or(0.0);
    println!("status      : {}", if clean { "ok" } else { "INCOMPLETE" });
    println!(
        "{}",
        json!({
            "scenario": "backup",
            "messages_per_run": per_run,
            "senders": n_senders,
            "backups": pauses.len(),
            "pause_median_ms": median(pauses),
            "pause_max_ms": pauses.last().copied().unwrap_or(0.0),
            "sent_p99_ms_without": p99(plain),
            "sent_p99_ms_with": p99(loaded),
            "clean": clean,
        })
    );
    Ok(clean)
}
