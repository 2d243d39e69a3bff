//! The `passivate` scenario (issue #14, "running for months"): does memory follow activity
//! rather than the number of groups ever touched? A fresh server with a short
//! `--group-idle-secs` (5); `--groups` (100,000) groups of two members (one of `--senders` (4)
//! sender users plus one of `--users` (200) others) created through the admin API from
//! `--create-threads` kept-alive connections. Then three rounds of "use every group once and
//! leave the server idle": each sender connects, sends one message to each of its groups
//! (pipelined, `--window` in flight) and disconnects; the server is left alone until
//! `rollcall_groups_loaded` is 0, then `--settle-secs` more.
//!
//! - `create`: right after creating the groups, in the same process (the measurement).
//! - `again`: the same process once more: does a second round of loading and passivating every
//!   group grow the memory (a leak) or reuse it?
//! - `restart`: after SIGTERM and a restart on the same data: the cost of loading every group
//!   without the creation before it.
//!
//! Each round reads the server's RSS (`/proc`) before, after the sends and after passivation,
//! and samples `/metrics` twice a second for the most group actors running at once. Creating a
//! group starts its actor, so the groups created first have passivated before the last are
//! created. The target: RSS after passivation ≤ the empty server's (read before anything is
//! created) + 64 MiB + sled's cache (`--cache-mb`, 64 unless `--server-arg=--cache-mb=N`).
//! Creation stops, as a failed run, when the data directory's disk has less than 4 GiB free.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::admin::{in_parallel, run_id, Admin, Metrics};
use crate::args::Args;
use crate::posting::{post, Sender, Totals};
use crate::report::{fig, fig_f, fmt_ms, percentile, set_fig_prefix};
use crate::server::{self, finish_server, mint, rss_mib, start_server_with, Server, ADMIN_TOKEN};
use crate::Error;

/// sled's page cache when no `--cache-mb` is given (the server's default).
const DEFAULT_CACHE_MB: f64 = 64.0;
/// What the target allows above the empty server and the cache.
const SLACK_MIB: f64 = 64.0;
/// Creation stops when the data directory's disk has less free space than this.
const MIN_FREE_BYTES: u64 = 4 << 30;

pub fn passivate(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("passivate starts its own server (with --group-idle-secs); drop --http".into());
    }
    let n_groups = args.groups_or(100_000);
    let n_senders = args.senders.unwrap_or(4);
    let n_pool = args.users;
    if n_groups == 0 || n_senders == 0 || n_pool == 0 || n_groups > 999_999 || args.window == 0 {
        return Err("need 0 < --groups <= 999,999, --senders, --users and --window > 0".into());
    }
    if args.group_idle_secs == 0 {
        return Err("--group-idle-secs 0 never passivates".into());
    }
    let cache_mb = match args.server_flag("--cache-mb") {
        Some(v) => v
            .parse::<f64>()
            .map_err(|e| format!("--cache-mb {v}: {e}"))?,
        None => DEFAULT_CACHE_MB,
    };
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs.max(3600));
    let flags = vec![
        "--group-idle-secs".to_string(),
        args.group_idle_secs.to_string(),
    ];
    let (mut srv, _dir) = start_server_with(args, &flags)?;
    let threads = args.create_threads.max(1);
    println!(
        "=== passivate: {n_groups} groups of 2 ({n_senders} senders, pool of {n_pool}), \
         --group-idle-secs {}, cache {cache_mb} MiB ===",
        args.group_idle_secs
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_empty = rss_mib(srv.pid);
    println!("rss empty      : {rss_empty:.1} MiB (before anything is created)");
    let bound = rss_empty + SLACK_MIB + cache_mb;

    let id = run_id();
    let senders: Vec<String> = (0..n_senders).map(|s| format!("{id}-s{s}")).collect();
    let pool: Vec<String> = (0..n_pool).map(|u| format!("{id}-u{u}")).collect();
    let group_ids: Arc<Vec<String>> =
        Arc::new((0..n_groups).map(|g| format!("{id}-p{g:06}")).collect());
    let plan = Plan {
        args,
        senders: &senders,
        group_ids: Arc::clone(&group_ids),
        deadline,
        rss_empty,
        bound,
    };

    // Metrics through new connections (`plain`): kept-alive ones may idle past the server's 5 s.
    let plain = Admin::new(&srv.http, ADMIN_TOKEN)?;
    let m0 = plain.metrics()?;
    let sampler = Sampler::start(srv.pid, plain.clone());
    let created = create(&srv, &plain, &plan, &pool, threads, &sampler)?;
    let mut rounds = vec![plan.use_all("create", 0, &srv, sampler, &m0)?];
    let m1 = plain.metrics()?;
    let sampler = Sampler::start(srv.pid, plain.clone());
    rounds.push(plan.use_all("again", 1, &srv, sampler, &m1)?);

    let stop = srv.stop();
    let healthz = srv.restart()?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_restarted = rss_mib(srv.pid);
    println!(
        "restart        : stopped in {:.2} s, /healthz after {:.2} s; RSS {rss_restarted:.1} MiB \
         (empty, {n_groups} groups on disk)",
        stop.as_secs_f64(),
        healthz.as_secs_f64()
    );
    let plain = Admin::new(&srv.http, ADMIN_TOKEN)?;
    let m2 = plain.metrics()?;
    let sampler = Sampler::start(srv.pid, plain.clone());
    rounds.push(plan.use_all("restart", 2, &srv, sampler, &m2)?);
    let disk = server::dir_bytes(&srv.data);

    println!(
        "--- result (passivate, {n_groups} groups, --group-idle-secs {}) ---",
        args.group_idle_secs
    );
    println!(
        "create         : {n_groups} groups in {:.1} s ({:.0}/s over all; {:.0}/s for the last \
         10%); data dir {:.1} MB after, {:.1} MB at the end",
        created.took_s,
        n_groups as f64 / created.took_s,
        created.last_tenth_per_s,
        created.disk as f64 / 1e6,
        disk as f64 / 1e6
    );
    println!("rss empty server: {rss_empty:.1} MiB; target: after ≤ {rss_empty:.1} + {SLACK_MIB} + cache {cache_mb} = {bound:.1} MiB");
    println!(
        "{:<8} {:>11} {:>22} {:>12} {:>12} {:>14} {:>9} {:>7}",
        "round",
        "RSS before",
        "peak loaded (RSS then)",
        "after sends",
        "after idle",
        "passivations",
        "sends/s",
        "target"
    );
    for r in &rounds {
        println!(
            "{:<8} {:>7.1} MiB {:>9} ({:>6.1} MiB) {:>8.1} MiB {:>8.1} MiB {:>8.1} MiB {:>13} {:>8.0} {:>7}",
            r.label,
            r.rss_before,
            r.peak.loaded,
            r.peak.rss_mib,
            r.rss_sent,
            r.rss_after,
            r.rss_trimmed,
            r.passivations,
            r.sends.per_s(),
            if r.rss_after <= bound {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    let first = &rounds[0];
    println!(
        "target (create round, the issue's): RSS after passivation {:.1} MiB vs {bound:.1} MiB: {}",
        first.rss_after,
        if first.rss_after <= bound {
            "met"
        } else {
            "MISSED"
        }
    );
    fig("groups", n_groups);
    fig("group_idle_secs", args.group_idle_secs);
    fig_f("create_s", created.took_s);
    fig_f("create_per_s", n_groups as f64 / created.took_s);
    fig_f("create_last_tenth_per_s", created.last_tenth_per_s);
    fig_f("disk_created_mb", created.disk as f64 / 1e6);
    fig_f("disk_mb", disk as f64 / 1e6);
    fig_f("rss_empty_mib", rss_empty);
    fig_f("rss_created_mib", created.rss);
    fig_f("rss_restarted_mib", rss_restarted);
    fig_f("rss_bound_mib", bound);
    fig("target_met", first.rss_after <= bound);
    let mut clean = true;
    for r in &rounds {
        set_fig_prefix(&format!("{}.", r.label));
        r.figures();
        clean &= r.clean(n_groups);
    }
    set_fig_prefix("");
    println!(
        "status         : {}",
        if clean { "ok" } else { "INCOMPLETE" }
    );
    finish_server(srv);
    Ok(clean)
}

/// What the rounds share.
struct Plan<'a> {
    args: &'a Args,
    senders: &'a [String],
    group_ids: Arc<Vec<String>>,
    deadline: Instant,
    /// The empty server's RSS, before anything was created.
    rss_empty: f64,
    /// The target for the RSS after passivation.
    bound: f64,
}

/// What creating the groups took.
struct Created {
    took_s: f64,
    /// Groups per second over the last tenth (creation slows down as groups accumulate).
    last_tenth_per_s: f64,
    rss: f64,
    disk: u64,
}

/// Creates the users and the groups: group g is its sender's (g mod senders) and one pool user's.
fn create(
    srv: &Server,
    plain: &Admin,
    plan: &Plan,
    pool: &[String],
    threads: usize,
    sampler: &Sampler,
) -> Result<Created, Error> {
    let admin = plain.keep_alive(threads);
    let everyone: Vec<String> = plan.senders.iter().chain(pool.iter()).cloned().collect();
    admin
        .create_users(&everyone, threads, plan.deadline)?
        .report(threads);
    let n_groups = plan.group_ids.len();
    let n_senders = plan.senders.len();
    let tenth = (n_groups / 10).max(1);
    let indexes: Vec<usize> = (0..n_groups).collect();
    let done = AtomicUsize::new(0);
    let tenth_at = Mutex::new(Duration::ZERO);
    let last_tenth = Mutex::new(Duration::ZERO);
    let t = Instant::now();
    in_parallel(&indexes, threads, plan.deadline, "creating groups", |&g| {
        let members = [
            &plan.senders[g % n_senders],
            &pool[(g / n_senders) % pool.len()],
        ];
        admin.post(
            "/api/groups",
            json!({"id": &plan.group_ids[g], "members": members}),
        )?;
        let done = done.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(1000) {
            check_free_space(&srv.data)?;
        }
        if done.is_multiple_of(tenth) {
            let now = t.elapsed();
            if let (Ok(mut at), Ok(mut last)) = (tenth_at.lock(), last_tenth.lock()) {
                *last = now.saturating_sub(*at);
                *at = now;
            }
            println!(
                "  created {done} groups in {:.1} s ({:.0}/s), {} actors running, RSS {:.1} MiB, \
                 data dir {:.0} MB",
                now.as_secs_f64(),
                done as f64 / now.as_secs_f64(),
                sampler.last_loaded(),
                rss_mib(srv.pid),
                server::dir_bytes(&srv.data) as f64 / 1e6
            );
        }
        Ok(())
    })?;
    let took_s = t.elapsed().as_secs_f64();
    let last = last_tenth.lock().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let created = Created {
        took_s,
        last_tenth_per_s: if last > 0.0 {
            tenth as f64 / last
        } else {
            f64::NAN
        },
        rss: rss_mib(srv.pid),
        disk: server::dir_bytes(&srv.data),
    };
    println!(
        "create         : {n_groups} groups in {took_s:.1} s ({:.0} groups/s, {threads} \
         connections); RSS {:.1} MiB, {} actors running; data dir {:.1} MB",
        n_groups as f64 / took_s,
        created.rss,
        plain.metrics()?.get("rollcall_groups_loaded"),
        created.disk as f64 / 1e6
    );
    Ok(created)
}

/// Fails when the disk under `data` has less than [`MIN_FREE_BYTES`] free.
fn check_free_space(data: &Path) -> Result<(), Error> {
    let free = fs2::available_space(data)?;
    if free < MIN_FREE_BYTES {
        return Err(format!(
            "stopping: {:.1} GiB free on the data directory's disk (each new group rewrites \
             sled's list of every tree)",
            free as f64 / f64::from(1u32 << 30)
        )
        .into());
    }
    Ok(())
}

/// One round: every group used once, then idle until every actor stopped.
struct Round {
    label: &'static str,
    rss_before: f64,
    sends: Totals,
    timed_out: bool,
    rss_sent: f64,
    loaded_after_send: f64,
    peak: Peak,
    /// Last `sent` → `rollcall_groups_loaded` 0.
    drained: Option<Duration>,
    rss_drained: f64,
    rss_after: f64,
    /// After `malloc_trim(0)` in the server (`--trim-probe`): what the allocator kept free.
    rss_trimmed: f64,
    hwm: f64,
    passivations: f64,
    loaded_after: f64,
}

impl Plan<'_> {
    fn use_all(
        &self,
        label: &'static str,
        round: u32,
        srv: &Server,
        sampler: Sampler,
        before: &Metrics,
    ) -> Result<Round, Error> {
        let (args, rss_empty, bound) = (self.args, self.rss_empty, self.bound);
        let n_senders = self.senders.len();
        let n_groups = self.group_ids.len();
        let plain = Admin::new(&srv.http, ADMIN_TOKEN)?;
        let rss_before = rss_mib(srv.pid);
        let body: Arc<str> = "x".repeat(args.body_bytes.unwrap_or(64)).into();
        let mut posting = Vec::with_capacity(n_senders);
        for (index, user) in self.senders.iter().enumerate() {
            let token = mint(&srv.data, user)?;
            posting.push(Sender {
                index,
                url: format!("ws://{}/ws?token={token}", plain.host_port),
                sends: (index..n_groups)
                    .step_by(n_senders)
                    .map(|g| (u32::try_from(g).unwrap_or(u32::MAX), round))
                    .collect(),
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
            Arc::clone(&self.group_ids),
            tokio::time::Instant::from_std(self.deadline),
        ))?;
        drop(runtime);
        let sends = Totals::of(&outcomes);
        let sent_at = Instant::now();
        let rss_sent = rss_mib(srv.pid);
        let loaded_after_send = plain.metrics()?.get("rollcall_groups_loaded");
        println!(
            "{label:<8} sends : {} of {n_groups} answered ({} stored, {} duplicates) in {:.1} s \
             ({:.0}/s; send→sent p50 {} ms, p99 {} ms); RSS {rss_before:.1} → {rss_sent:.1} MiB, \
             {loaded_after_send} actors running",
            sends.answered,
            sends.stored,
            sends.duplicates,
            sends.span_s,
            sends.per_s(),
            fmt_ms(percentile(&sends.latency_us, 0.5)),
            fmt_ms(percentile(&sends.latency_us, 0.99)),
        );
        let wait_limit = Duration::from_secs(4 * args.group_idle_secs + 120);
        let mut drained = None;
        while sent_at.elapsed() < wait_limit {
            if plain.metrics()?.get("rollcall_groups_loaded") == 0.0 {
                drained = Some(sent_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let rss_drained = rss_mib(srv.pid);
        std::thread::sleep(Duration::from_secs(args.settle_secs));
        let rss_after = rss_mib(srv.pid);
        let rss_trimmed = if args.trim_probe {
            trim_probe(srv.pid)
        } else {
            f64::NAN
        };
        let after = plain.metrics()?;
        let peak = sampler.stop();
        let round = Round {
            label,
            rss_before,
            sends,
            timed_out,
            rss_sent,
            loaded_after_send,
            peak,
            drained,
            rss_drained,
            rss_after,
            rss_trimmed,
            hwm: server::rss_kib(srv.pid).map_or(f64::NAN, |(_, h)| h as f64 / 1024.0),
            passivations: before.delta(&after, "rollcall_group_passivations_total"),
            loaded_after: after.get("rollcall_groups_loaded"),
        };
        println!(
            "{label:<8} idle  : every actor stopped {} after the last sent; RSS {rss_drained:.1} \
             MiB then, {rss_after:.1} MiB {} s later ({:+.1} MiB over the empty server; target \
             ≤ {bound:.1}: {}); VmHWM {:.1} MiB; most actors at once {} (RSS then {:.1} MiB); {} \
             passivations",
            drained.map_or("not within the wait".to_string(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            )),
            args.settle_secs,
            rss_after - rss_empty,
            if rss_after <= bound { "met" } else { "MISSED" },
            round.hwm,
            peak.loaded,
            peak.rss_mib,
            round.passivations
        );
        if args.trim_probe {
            println!(
                "{label:<8} trim  : RSS {rss_trimmed:.1} MiB after malloc_trim(0) in the server \
                 (gdb): glibc kept {:.1} MiB free",
                rss_after - rss_trimmed
            );
        }
        for e in round.sends.lost.iter().take(5) {
            println!("  {e}");
        }
        if let Some(e) = &round.sends.first_error {
            println!("  errors {:?}; first: {e}", round.sends.errors);
        }
        Ok(round)
    }
}

impl Round {
    fn figures(&self) {
        fig("sent", self.sends.answered);
        fig_f("sends_per_s", self.sends.per_s());
        fig_f("rss_before_mib", self.rss_before);
        fig_f("rss_sent_mib", self.rss_sent);
        fig_f("rss_drained_mib", self.rss_drained);
        fig_f("rss_after_mib", self.rss_after);
        fig_f("rss_hwm_mib", self.hwm);
        if self.rss_trimmed.is_finite() {
            fig_f("rss_trimmed_mib", self.rss_trimmed);
        }
        fig("peak_loaded", self.peak.loaded);
        fig_f("peak_loaded_rss_mib", self.peak.rss_mib);
        fig_f("loaded_after_send", self.loaded_after_send);
        fig_f("loaded_after", self.loaded_after);
        fig_f("passivations", self.passivations);
        fig_f(
            "drained_s",
            self.drained.map_or(f64::NAN, |d| d.as_secs_f64()),
        );
    }

    fn clean(&self, n_groups: usize) -> bool {
        !self.timed_out
            && self.sends.clean(n_groups as u64)
            && self.drained.is_some()
            && self.loaded_after == 0.0
    }
}

/// `--trim-probe`: calls glibc's `malloc_trim(0)` inside the server through gdb (root or
/// ptrace rights needed) and returns the RSS after it (NaN when that failed). The difference is
/// memory the server freed but the allocator kept, not memory in use.
fn trim_probe(pid: u32) -> f64 {
    let called = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int)malloc_trim(0)",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match called {
        Ok(status) if status.success() => rss_mib(pid),
        Ok(status) => {
            println!("trim probe: gdb exited with {status}");
            f64::NAN
        }
        Err(e) => {
            println!("trim probe: gdb: {e}");
            f64::NAN
        }
    }
}

/// The most group actors running at once, and the RSS at that reading.
#[derive(Clone, Copy, Default)]
struct Peak {
    loaded: u64,
    rss_mib: f64,
}

/// A thread reading `rollcall_groups_loaded` and the RSS twice a second.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Peak>>,
    last: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32, admin: Admin) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(Peak::default()));
        let last = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, peak, last) = (Arc::clone(&stop), Arc::clone(&peak), Arc::clone(&last));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = admin.metrics() {
                        let loaded = m.get("rollcall_groups_loaded").max(0.0) as u64;
                        last.store(usize::try_from(loaded).unwrap_or(0), Ordering::Relaxed);
                        if let Ok(mut p) = peak.lock() {
                            if loaded > p.loaded {
                                *p = Peak {
                                    loaded,
                                    rss_mib: rss_mib(pid),
                                };
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        Sampler {
            stop,
            peak,
            last,
            thread: Some(thread),
        }
    }

    /// The last reading of `rollcall_groups_loaded`.
    fn last_loaded(&self) -> usize {
        self.last.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.lock().map(|p| *p).unwrap_or_default()
    }
}
