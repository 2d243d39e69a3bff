//! `groups`, the load phase: each sender posts its groups' messages round-robin over one
//! connection with `--window` sends in flight across them; then the result block and figures.

use std::sync::Arc;
use std::time::Duration;

use super::Layout;
use crate::admin::Metrics;
use crate::posting::{post, Sender, SenderOutcome};
use crate::report::{fig, fig_f, fmt_ms, per, percentile, sorted_all, sum_errors};
use crate::Error;

/// Connects the senders, posts every message, returns what each sender saw, the time from
/// "go" until all were done, and whether the deadline cut the run short.
pub(super) async fn post_all(
    layout: &Layout,
    urls: Vec<String>,
    window: usize,
    body: Arc<str>,
    nodelay: bool,
    deadline: tokio::time::Instant,
) -> Result<(Vec<SenderOutcome>, Duration, bool), Error> {
    let group_ids: Arc<Vec<String>> =
        Arc::new((0..layout.groups).map(|g| layout.group(g)).collect());
    let senders = urls
        .into_iter()
        .enumerate()
        .map(|(index, url)| {
            // Round-robin: round r of every group of this sender, then round r + 1.
            let mine: Vec<u32> = (index..layout.groups)
                .step_by(layout.senders)
                .map(|g| g as u32)
                .collect();
            let sends: Vec<(u32, u32)> = (0..layout.messages as u32)
                .flat_map(|r| mine.iter().map(move |&g| (g, r)))
                .collect();
            Sender {
                index,
                url,
                sends,
                window,
                body: Arc::clone(&body),
                nodelay,
            }
        })
        .collect();
    post(senders, group_ids, deadline).await
}

/// The load phase's result block and figures; returns whether it was clean.
#[allow(clippy::too_many_arguments)]
pub(super) fn report_load(
    layout: &Layout,
    outcomes: &[SenderOutcome],
    active: Duration,
    timed_out: bool,
    b: &Metrics,
    a: &Metrics,
    disk_before: Option<u64>,
    disk_after: Option<u64>,
) -> bool {
    let expected = layout.groups as u64 * layout.messages;
    let answered: u64 = outcomes.iter().map(|o| o.answered).sum();
    let stored_replies: u64 = outcomes.iter().map(|o| o.stored).sum();
    let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();
    let msgs: u64 = outcomes.iter().map(|o| o.msgs).sum();
    let lat = sorted_all(outcomes.iter().map(|o| &o.latency_us));
    let first = outcomes.iter().filter_map(|o| o.first_send).min();
    let last = outcomes.iter().filter_map(|o| o.last_sent).max();
    let span = match (first, last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let errors = sum_errors(outcomes.iter().map(|o| &o.errors));
    let lost: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.lost.as_ref().map(|l| format!("sender {}: {l}", o.index)))
        .collect();
    let stored = b.delta(a, "rollcall_messages_stored_total");
    let flushes = b.delta(a, "rollcall_flushes_total");
    let out_total: f64 = b.frames_by_type(a, "out").values().sum();
    println!(
        "post        : active={:.2}s (go → all senders done), timed_out={timed_out}",
        active.as_secs_f64()
    );
    println!(
        "sends       : answered={answered}/{expected} stored(sent replies)={stored_replies} \
         stored(metrics Δ)={stored} duplicates={duplicates}"
    );
    println!(
        "metrics Δ   : flushes={flushes} messages/flush={:.1} evictions={} frames out={out_total} \
         ({:.2}/message; senders received {msgs} msg pushes)",
        per(stored, flushes),
        b.delta(a, "rollcall_outbound_queue_overflows_total"),
        per(out_total, stored)
    );
    println!(
        "groups      : {} group actors running",
        a.get("rollcall_groups_loaded")
    );
    fig("groups", layout.groups);
    fig("messages", expected);
    fig("answered", answered);
    fig_f("msgs_per_s", per(answered as f64, span));
    fig_f("sent_p50_ms", percentile(&lat, 0.5).unwrap_or(f64::NAN));
    fig_f("sent_p99_ms", percentile(&lat, 0.99).unwrap_or(f64::NAN));
    fig_f("sent_max_ms", percentile(&lat, 1.0).unwrap_or(f64::NAN));
    fig_f("msgs_per_flush", per(stored, flushes));
    if let (Some(_), Some(y)) = (disk_before, disk_after) {
        fig_f("disk_per_msg", per(y as f64, stored));
    }
    println!("--- result (load) ---");
    println!(
        "sends/s             : {:.0} ({answered} sent replies over {span:.2} s, first send → last sent)",
        per(answered as f64, span)
    );
    println!(
        "send→sent latency   : median {} ms, p99 {} ms, max {} ms",
        fmt_ms(percentile(&lat, 0.5)),
        fmt_ms(percentile(&lat, 0.99)),
        fmt_ms(lat.last().map(|&v| v as f64 / 1000.0))
    );
    if let (Some(x), Some(y)) = (disk_before, disk_after) {
        println!(
            "disk per message    : {:.0} B total ({y} B / {stored} messages); Δ while posting {:.0} B ({} B)",
            per(y as f64, stored),
            per(y as f64 - x as f64, stored),
            y as i64 - x as i64
        );
    }
    if !errors.is_empty() {
        let first = outcomes.iter().find_map(|o| o.first_error.clone());
        println!(
            "errors      : {errors:?} first: {}",
            first.unwrap_or_default()
        );
    }
    for l in &lost {
        println!("  {l}");
    }
    !timed_out && lost.is_empty() && errors.is_empty() && answered == expected
}
