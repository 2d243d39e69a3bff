//! `groups`, the welcome phase: every pool user connects at once; how long until every
//! `welcome` arrived, and whether each lists exactly the user's groups with their heads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::{print_rss, Layout};
use crate::admin::{blocking_metrics, Admin, Metrics};
use crate::crowd::wait_go;
use crate::report::{fmt_ms, percentile};
use crate::wire::connect_welcome;
use crate::Error;

/// The part of a `welcome` frame the storm checks.
#[derive(Deserialize)]
struct Welcome {
    groups: Vec<WelcomeGroup>,
}

#[derive(Deserialize)]
struct WelcomeGroup {
    group: String,
    last_seq: u64,
}

/// One user's welcome.
struct Welcomed {
    user: usize,
    /// From "go" until this user's `welcome` arrived.
    at: Duration,
    /// (group, last_seq) of every group listed.
    groups: Vec<(String, u64)>,
}

/// Every URL connects at once; answers each user's `welcome` in arrival order, then keeps
/// the connections open until `stop`.
async fn storm_user(
    user: usize,
    url: String,
    nodelay: bool,
    deadline: tokio::time::Instant,
    mut go: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Result<Welcomed, String>>,
) {
    if !wait_go(&mut go, deadline).await {
        return;
    }
    let go_at = Instant::now();
    let mut ws = match connect_welcome(&url, nodelay, deadline).await {
        Ok((ws, text)) => {
            let at = go_at.elapsed();
            let parsed = serde_json::from_str::<Welcome>(&text)
                .map(|w| Welcomed {
                    user,
                    at,
                    groups: w
                        .groups
                        .into_iter()
                        .map(|g| (g.group, g.last_seq))
                        .collect(),
                })
                .map_err(|e| format!("user {user}: bad welcome: {e}"));
            let _ = tx.send(parsed);
            ws
        }
        Err(e) => {
            let _ = tx.send(Err(format!("user {user}: {e}")));
            return;
        }
    };
    // Hold the session (reading, so pings are answered) until told to stop.
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.changed() => break,
            frame = ws.next() => if !matches!(frame, Some(Ok(_))) { return },
        }
    }
    let _ = ws.close(None).await;
}

/// What the reconnect storm saw.
pub(super) struct Storm {
    welcomed: Vec<Welcomed>,
    errors: Vec<String>,
    /// From "go" until the last `welcome` (or the deadline).
    span: Duration,
    /// Metrics and RSS taken while every session is still open.
    during: Option<Metrics>,
}

/// Connects every URL at once and collects the welcomes.
pub(super) async fn storm(
    admin: &Admin,
    urls: Vec<String>,
    nodelay: bool,
    deadline: tokio::time::Instant,
    pid: Option<u32>,
) -> Result<Storm, Error> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let n = urls.len();
    let mut tasks = Vec::with_capacity(n);
    for (user, url) in urls.into_iter().enumerate() {
        tasks.push(tokio::spawn(storm_user(
            user,
            url,
            nodelay,
            deadline,
            go_rx.clone(),
            stop_rx.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    // Let every task reach its "go" wait.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let go_at = Instant::now();
    let _ = go_tx.send(true);
    let mut welcomed = Vec::with_capacity(n);
    let mut errors = Vec::new();
    while welcomed.len() + errors.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(w))) => welcomed.push(w),
            Ok(Some(Err(e))) => errors.push(e),
            Ok(None) => break,
            Err(_) => {
                errors.push(format!(
                    "deadline: {} of {n} welcomes arrived",
                    welcomed.len()
                ));
                break;
            }
        }
    }
    let span = welcomed
        .iter()
        .map(|w| w.at)
        .max()
        .unwrap_or_else(|| go_at.elapsed());
    print_rss(pid, "after welcome storm");
    let during = blocking_metrics(admin).await.ok();
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    Ok(Storm {
        welcomed,
        errors,
        span,
        during,
    })
}

/// The welcome phase's result block; returns whether every user got the right welcome.
pub(super) fn report_storm(layout: &Layout, storm: &Storm, before: &Metrics) -> bool {
    let expected_groups = layout.groups_per_user();
    let prefix = layout.group_prefix();
    let mut ats: Vec<u64> = storm
        .welcomed
        .iter()
        .map(|w| u64::try_from(w.at.as_micros()).unwrap_or(u64::MAX))
        .collect();
    ats.sort_unstable();
    let mut heads: BTreeMap<&str, u64> = BTreeMap::new();
    let mut listed = 0usize;
    let mut wrong = Vec::new();
    for w in &storm.welcomed {
        let mine: Vec<&(String, u64)> = w
            .groups
            .iter()
            .filter(|(g, _)| g.starts_with(&prefix))
            .collect();
        listed += mine.len();
        if mine.len() != expected_groups[w.user] {
            wrong.push(format!(
                "user {}: welcome lists {} of its {} groups",
                w.user,
                mine.len(),
                expected_groups[w.user]
            ));
        }
        for (g, seq) in mine {
            heads.insert(g.as_str(), *seq);
        }
    }
    let in_groups: u64 = heads.values().sum();
    let expected_messages = layout.groups as u64 * layout.messages;
    println!(
        "storm       : {} of {} users welcomed; {} group entries listed (expected {})",
        storm.welcomed.len(),
        layout.users,
        listed,
        expected_groups.iter().sum::<usize>()
    );
    println!(
        "welcomes    : {} distinct groups, Σ last_seq = {in_groups} messages (after a full load: {expected_messages})",
        heads.len()
    );
    if let Some(d) = &storm.during {
        println!(
            "metrics     : group actors running {} → {}, sessions {} → {}, welcome frames Δ {}",
            before.get("rollcall_groups_loaded"),
            d.get("rollcall_groups_loaded"),
            before.get("rollcall_sessions"),
            d.get("rollcall_sessions"),
            before.frames(d, "out", "welcome")
        );
    }
    println!("--- result (welcome storm) ---");
    println!(
        "all welcomes in     : {:.3} s ({} users connecting at once; go → last welcome)",
        storm.span.as_secs_f64(),
        storm.welcomed.len()
    );
    println!(
        "welcome arrival     : median {} ms, p99 {} ms after go",
        fmt_ms(percentile(&ats, 0.5)),
        fmt_ms(percentile(&ats, 0.99))
    );
    for e in storm.errors.iter().chain(wrong.iter()).take(10) {
        println!("  {e}");
    }
    storm.errors.is_empty() && wrong.is_empty() && storm.welcomed.len() == layout.users
}
