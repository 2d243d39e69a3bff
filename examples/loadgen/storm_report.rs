//! The result of a single-group run (storm, throughput, receipts; the storms of fanout and
//! ceiling, the bare relay's included): the lines every such run prints, the figures it
//! records, the storm's result block, and whether the run was clean (the receipt check of
//! `policy.rs` included). The older scenarios' result blocks are in `older.rs`.

use std::sync::atomic::Ordering;

use crate::admin::Metrics;
use crate::args::{Plan, Receipts, Scenario};
use crate::member::{Outcome, Shared};
use crate::older;
use crate::policy::Check;
use crate::report::{fig, fig_f, fmt_ms, nproc, per, percentile, sorted_all, sum_errors};
use crate::storm::Measured;

/// What a run's result blocks print from.
pub struct Tally<'a> {
    pub plan: &'a Plan,
    pub outcomes: &'a [Outcome],
    pub before: &'a Metrics,
    pub after: &'a Metrics,
    /// Readers the senders wait for in their receipt counts.
    pub readers: u64,
    pub answered: u64,
    /// `msg` frames received by all members together.
    pub received: u64,
    /// First send → last answer.
    pub send_span_s: f64,
    /// First send → last `msg` arrival.
    pub delivery_span_s: f64,
    pub msgs_per_s: f64,
    pub deliveries_per_s: f64,
    /// Sorted latencies in µs: send → `sent`, send → `msg` at every online member, send → a
    /// receipt showing every reader read it.
    pub sent_lat: Vec<u64>,
    pub all_delivered: Vec<u64>,
    pub all_read: Vec<u64>,
    /// `/metrics` deltas.
    pub stored: f64,
    pub flushes: f64,
    pub in_total: f64,
    pub out_total: f64,
    /// The server's CPU seconds, this program's, and the server's VmHWM (KiB).
    pub cpu: f64,
    pub own_cpu: f64,
    pub hwm_kib: Option<u64>,
    /// The data directory's size before and after.
    pub data_before: Option<u64>,
    pub data_after: Option<u64>,
}

/// Prints the result block; returns whether the run completed cleanly.
pub fn report(
    plan: &Plan,
    shared: &Shared,
    m: Measured,
    data_before: Option<u64>,
    data_after: Option<u64>,
    check: Option<&Check>,
) -> bool {
    let nproc = nproc();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    let cmdline: Vec<String> = std::env::args().collect();
    let outcomes = &m.outcomes;

    let errors = sum_errors(outcomes.iter().map(|o| &o.errors));
    let lost: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.lost.as_ref().map(|l| format!("member {}: {l}", o.index)))
        .collect();
    let first_error = outcomes.iter().find_map(|o| o.first_error.clone());
    let duplicates: u64 = outcomes.iter().map(|o| o.duplicates).sum();

    let sent_lat = sorted_all(outcomes.iter().map(|o| &o.sent_latency_us));
    let answered = sent_lat.len() as u64;
    let first_send = outcomes.iter().filter_map(|o| o.first_send_us).min();
    let last_sent = outcomes.iter().filter_map(|o| o.last_sent_us).max();
    let send_span_s = match (first_send, last_sent) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => 0.0,
    };

    let (b, a) = (&m.before, &m.after);
    let flushes = b.delta(a, "rollcall_flushes_total");
    let stored = b.delta(a, "rollcall_messages_stored_total");
    let evictions = b.delta(a, "rollcall_outbound_queue_overflows_total");
    let out_by_type = b.frames_by_type(a, "out");
    let in_by_type = b.frames_by_type(a, "in");
    let out_total: f64 = out_by_type.values().sum();
    let in_total: f64 = in_by_type.values().sum();

    println!("=== rollcall loadgen: {:?} ===", plan.scenario);
    println!(
        "machine     : nproc={nproc} MemTotal={mem} loadavg(at end)={}",
        load.trim()
    );
    println!("command     : {}", cmdline.join(" "));
    println!(
        "setup       : members={} online={} senders={} messages={} window={} {}={} body={}B",
        plan.members,
        plan.online,
        plan.senders,
        plan.messages,
        plan.window,
        if plan.scenario == Scenario::Throughput {
            "ack_every"
        } else {
            "read_batch"
        },
        plan.cursor_every,
        plan.body.len()
    );
    if plan.receipts.is_some() || plan.private_readers > 0 {
        println!(
            "receipts    : policy {}, {} of {} online readers private (share_reads off)",
            plan.receipts.map_or("full", |r| r.as_str()),
            plan.private_readers,
            plan.n_readers()
        );
    }
    println!(
        "run         : active={:.2}s (go → all members done), timed_out={}",
        m.active.as_secs_f64(),
        m.timed_out
    );
    println!(
        "sends       : answered={answered}/{} stored(delta)={stored} duplicates={duplicates}",
        plan.messages
    );
    println!(
        "send→sent   : median={} ms p99={} ms max={} ms",
        fmt_ms(percentile(&sent_lat, 0.5)),
        fmt_ms(percentile(&sent_lat, 0.99)),
        fmt_ms(sent_lat.last().map(|&v| v as f64 / 1000.0))
    );
    let online = plan.online as u32;
    let mut all_delivered: Vec<u64> = (0..plan.messages as usize)
        .filter(|&i| shared.arrivals[i].load(Ordering::Relaxed) >= online)
        .filter_map(|i| {
            let s = shared.sent_at[i].load(Ordering::Relaxed);
            let l = shared.last_arrival[i].load(Ordering::Relaxed);
            (s > 0 && l >= s).then_some(l - s)
        })
        .collect();
    all_delivered.sort_unstable();
    println!(
        "send→msg@all: median={} ms p99={} ms ({} of {} messages reached all {} online sessions)",
        fmt_ms(percentile(&all_delivered, 0.5)),
        fmt_ms(percentile(&all_delivered, 0.99)),
        all_delivered.len(),
        plan.messages,
        plan.online
    );
    println!(
        "metrics Δ   : flushes={flushes} messages/flush={:.1} evictions={evictions}",
        per(stored, flushes)
    );
    println!("frames in Δ : total={in_total} {in_by_type:?}");
    println!("frames out Δ: total={out_total} {out_by_type:?}");

    // Figures shared by every single-group scenario (the JSON line).
    let messages = plan.messages as f64;
    let received: u64 = outcomes.iter().map(|o| o.received).sum();
    let first_send_us = (0..plan.messages as usize)
        .map(|i| shared.sent_at[i].load(Ordering::Relaxed))
        .filter(|&t| t > 0)
        .min();
    let last_arrival_us = (0..plan.messages as usize)
        .map(|i| shared.last_arrival[i].load(Ordering::Relaxed))
        .max();
    let delivery_span_s = match (first_send_us, last_arrival_us) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => f64::NAN,
    };
    let msgs_per_s = per(answered as f64, send_span_s);
    let deliveries_per_s = per(received as f64, delivery_span_s);
    let all_read = sorted_all(outcomes.iter().map(|o| &o.all_read_latency_us));
    let cpu = match (m.cpu_before, m.cpu_after) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let ms = |v: Option<f64>| v.unwrap_or(f64::NAN);
    fig("members", plan.members);
    fig("online", plan.online);
    fig("senders", plan.senders);
    fig("messages", plan.messages);
    if let Some(rate) = plan.rate {
        fig_f("rate", rate);
    } else {
        fig("window", plan.window);
    }
    fig("answered", answered);
    fig_f("msgs_per_s", msgs_per_s);
    fig_f("deliveries_per_s", deliveries_per_s);
    fig_f("sent_p50_ms", ms(percentile(&sent_lat, 0.5)));
    fig_f("sent_p99_ms", ms(percentile(&sent_lat, 0.99)));
    fig_f("sent_max_ms", ms(percentile(&sent_lat, 1.0)));
    fig_f("all_p50_ms", ms(percentile(&all_delivered, 0.5)));
    fig_f("all_p99_ms", ms(percentile(&all_delivered, 0.99)));
    fig_f("all_max_ms", ms(percentile(&all_delivered, 1.0)));
    fig("reached_all", all_delivered.len());
    if !plan.relay {
        let receipts = b.delta(a, "rollcall_receipt_frames_sent_total");
        fig_f("frames_in_per_msg", per(in_total, stored));
        fig_f("frames_out_per_msg", per(out_total, stored));
        fig_f("receipt_frames_per_msg", per(receipts, stored));
        // Per message it is far below the JSON's three decimals: the count too.
        fig_f("receipt_frames", receipts);
        fig_f("msgs_per_flush", per(stored, flushes));
        fig_f(
            "body_bytes_stored_per_msg",
            per(b.delta(a, "rollcall_message_bytes_stored_total"), stored),
        );
        if let (Some(x), Some(y)) = (data_before, data_after) {
            fig_f("disk_growth_per_msg", per(y as f64 - x as f64, stored));
        }
        fig("evictions", evictions);
        let durable_n = b.delta(a, "rollcall_send_durable_seconds_count");
        fig_f(
            "send_durable_mean_ms",
            1000.0 * per(b.delta(a, "rollcall_send_durable_seconds_sum"), durable_n),
        );
        fig_f("read_all_p50_ms", ms(percentile(&all_read, 0.5)));
        fig_f("read_all_p99_ms", ms(percentile(&all_read, 0.99)));
        fig("read_all_n", all_read.len());
    }
    fig_f("server_cpu_s", cpu);
    fig_f("server_cpu_s_per_1k_msgs", 1000.0 * per(cpu, messages));
    fig_f("loadgen_cpu_s", m.own_cpu);
    fig_f(
        "clients_bound_msgs_per_s",
        clients_bound(m.own_cpu, messages),
    );
    fig_f(
        "server_cpu_us_per_delivery",
        1e6 * per(cpu, received as f64),
    );
    if let Some(hwm) = m.hwm_kib {
        fig_f("server_peak_rss_mib", hwm as f64 / 1024.0);
        fig_f(
            "server_peak_rss_mib_per_1k_msgs",
            1000.0 * per(hwm as f64 / 1024.0, messages),
        );
    }
    let tally = Tally {
        plan,
        outcomes,
        before: b,
        after: a,
        readers: shared.readers,
        answered,
        received,
        send_span_s,
        delivery_span_s,
        msgs_per_s,
        deliveries_per_s,
        sent_lat,
        all_delivered,
        all_read,
        stored,
        flushes,
        in_total,
        out_total,
        cpu,
        own_cpu: m.own_cpu,
        hwm_kib: m.hwm_kib,
        data_before,
        data_after,
    };
    match plan.scenario {
        Scenario::Storm | Scenario::Ceiling | Scenario::Fanout => storm_result(&tally),
        Scenario::Throughput => older::throughput_result(&tally),
        Scenario::Receipts => older::receipts_result(&tally),
        _ => {}
    }

    if !errors.is_empty() {
        println!(
            "errors      : {errors:?} first: {}",
            first_error.unwrap_or_default()
        );
    }
    if !lost.is_empty() {
        println!("members not done or connection lost ({}):", lost.len());
        for l in lost.iter().take(10) {
            println!("  {l}");
        }
    }
    for line in check.map_or(&[][..], |c| &c.lines[..]) {
        println!("{line}");
    }
    let clean = !m.timed_out
        && lost.is_empty()
        && errors.is_empty()
        && answered == plan.messages
        && check.is_none_or(|c| c.ok);
    let status = match (check.is_none_or(|c| c.ok), clean) {
        (false, _) => "FAILED (receipt check)",
        (true, true) => "ok",
        (true, false) => "INCOMPLETE",
    };
    println!("status      : {status}");
    fig("clean", clean);
    clean
}

/// The storm's result block (Rollcall's or the bare relay's).
fn storm_result(t: &Tally) {
    let plan = t.plan;
    let (b, a) = (t.before, t.after);
    let (sent_lat, all_delivered, all_read) =
        (&t.sent_lat[..], &t.all_delivered[..], &t.all_read[..]);
    let (answered, received, send_span_s, delivery_span_s) =
        (t.answered, t.received, t.send_span_s, t.delivery_span_s);
    let (msgs_per_s, deliveries_per_s) = (t.msgs_per_s, t.deliveries_per_s);
    let (stored, flushes, in_total, out_total) = (t.stored, t.flushes, t.in_total, t.out_total);
    let (cpu, messages) = (t.cpu, plan.messages as f64);
    println!(
        "--- result ({}) ---",
        if plan.relay { "bare relay" } else { "storm" }
    );
    println!(
        "posted msgs/s (durable)   : {msgs_per_s:.0} ({answered} answered over {send_span_s:.2} s, first send → last answer){}",
        plan.rate.map_or(String::new(), |r| format!(" at --rate {r}"))
    );
    println!(
        "deliveries/s              : {deliveries_per_s:.0} ({received} msg frames received over {delivery_span_s:.2} s, first send → last arrival)"
    );
    println!(
        "send→sent                 : p50 {} / p99 {} / max {} ms",
        fmt_ms(percentile(sent_lat, 0.5)),
        fmt_ms(percentile(sent_lat, 0.99)),
        fmt_ms(percentile(sent_lat, 1.0))
    );
    println!(
        "send→received by all {:<4} : p50 {} / p99 {} / max {} ms",
        plan.online,
        fmt_ms(percentile(all_delivered, 0.5)),
        fmt_ms(percentile(all_delivered, 0.99)),
        fmt_ms(percentile(all_delivered, 1.0))
    );
    if !plan.relay {
        if plan.receipts == Some(Receipts::Off) {
            println!("send→read count           : none (receipts off: no receipt frames)");
        } else {
            println!(
                "send→read count {}        : p50 {} / p99 {} ms ({} messages; receipt tick {} ms)",
                t.readers,
                fmt_ms(percentile(all_read, 0.5)),
                fmt_ms(percentile(all_read, 0.99)),
                all_read.len(),
                plan.settle.as_millis().saturating_sub(200) / 2
            );
        }
        println!(
            "server frames per message : out {:.2}, in {:.2}, receipt {:.4}; messages/flush {:.1}",
            per(out_total, stored),
            per(in_total, stored),
            per(b.delta(a, "rollcall_receipt_frames_sent_total"), stored),
            per(stored, flushes)
        );
    }
    println!(
        "server CPU                : {cpu:.2} s ({:.3} s per 1,000 messages, {:.2} µs per delivery); peak RSS {}",
        1000.0 * per(cpu, messages),
        1e6 * per(cpu, received as f64),
        t.hwm_kib
            .map_or("n/a".into(), |h| format!("{:.1} MiB", h as f64 / 1024.0))
    );
    println!(
        "loadgen CPU (the clients) : {:.2} s over the same span; on this machine's {} cores they alone \
         allow at most {:.0} msgs/s (with a server that cost nothing)",
        t.own_cpu,
        nproc(),
        clients_bound(t.own_cpu, messages)
    );
}

/// The posting rate the clients' own CPU allows when they share this machine's cores with the
/// server: every core running clients only, at the CPU per message they used in this run.
fn clients_bound(own_cpu: f64, messages: f64) -> f64 {
    nproc().max(1) as f64 / per(own_cpu, messages)
}
