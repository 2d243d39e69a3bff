//! The single-group run: one group, its members created over the admin API (the users first,
//! from `--create-threads` threads, then the group with all of them), `--online` of them
//! connected, every one started together and measured between two `/metrics` snapshots. This is
//! `storm` and the older `throughput` and `receipts`; `fanout` and `ceiling` run their storms
//! through `run_plan` and `drive_plan` (the latter against the bare relay too). The group's
//! receipt policy and private readers (`--receipts`, `--private-readers`) are set up and
//! checked by `policy.rs`.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::admin::{blocking_metrics, run_id, Admin, Metrics};
use crate::args::{Args, Plan, Scenario};
use crate::crowd::Crowd;
use crate::member::{run_member, Outcome, Role, Shared};
use crate::policy;
use crate::server::{self, dir_bytes};
use crate::storm_report::report;
use crate::Error;

/// The single-group scenarios (storm, throughput, receipts) against the server in `args`.
pub fn run(args: &Args) -> Result<bool, Error> {
    let plan = args.plan()?;
    run_plan(args, &plan)
}

/// The group a single-group run created, and its online members' URLs.
struct Setup {
    group: String,
    /// Every member, in order: the senders first, then the online readers, then the offline.
    users: Vec<String>,
    urls: Vec<String>,
}

/// Creates the members and their group (with the plan's receipt policy), makes the plan's
/// private readers stop sharing reads and mints the online members' tokens.
fn setup_group(
    admin: &Admin,
    plan: &Plan,
    threads: usize,
    deadline_std: Instant,
) -> Result<Setup, Error> {
    let id = run_id();
    let users: Vec<String> = (0..plan.members).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");
    admin
        .create_users(&users, threads, deadline_std)?
        .report(threads);
    let mut body = json!({"id": group, "name": "loadgen", "members": users});
    if let Some(receipts) = plan.receipts {
        body["receipts"] = receipts.as_str().into();
    }
    admin.post("/api/groups", body)?;
    policy::make_private(admin, policy::private_readers(plan, &users))?;
    let mut urls = Vec::with_capacity(plan.online);
    for user in users.iter().take(plan.online) {
        if Instant::now() > deadline_std {
            return Err("deadline reached during setup".into());
        }
        urls.push(admin.user_ws_url(user)?);
    }
    Ok(Setup { group, users, urls })
}

/// Creates the group, runs `plan` against the server in `args`, checks the receipt counts and
/// prints its result block; returns whether it was clean (an error if the receipts were wrong).
pub fn run_plan(args: &Args, plan: &Plan) -> Result<bool, Error> {
    let admin = args.admin()?;
    let started = Instant::now();
    let deadline_std = started + Duration::from_secs(args.deadline_secs);
    let setup = setup_group(&admin, plan, args.create_threads, deadline_std)?;
    let data_before = args.data_dir.as_deref().map(dir_bytes);
    let (shared, measured) = drive_plan(
        plan,
        Some(&admin),
        setup.group.clone(),
        setup.urls,
        args.server_pid,
        deadline_std,
    )?;
    let data_after = args.data_dir.as_deref().map(dir_bytes);
    let check = policy::check(&admin, plan, &setup.group, &setup.users, &measured);
    let ok = report(
        plan,
        &shared,
        measured,
        data_before,
        data_after,
        Some(&check),
    );
    if !check.ok {
        return Err("the receipt check failed (see the lines above)".into());
    }
    Ok(ok)
}

/// Runs one plan's members against `urls` (Rollcall, or the relay when `admin` is None).
pub fn drive_plan(
    plan: &Plan,
    admin: Option<&Admin>,
    group: String,
    urls: Vec<String>,
    pid: Option<u32>,
    deadline_std: Instant,
) -> Result<(Arc<Shared>, Measured), Error> {
    let shared = Arc::new(Shared {
        start: Instant::now(),
        group,
        sent_at: (0..plan.messages).map(|_| AtomicU64::new(0)).collect(),
        last_arrival: (0..plan.messages).map(|_| AtomicU64::new(0)).collect(),
        arrivals: (0..plan.messages).map(|_| AtomicU32::new(0)).collect(),
        readers: match plan.scenario {
            _ if plan.relay => 0,
            Scenario::Receipts => (plan.online - 1) as u64,
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout => plan.n_sharing_readers(),
            _ => 0,
        },
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(drive(
        plan,
        admin,
        urls,
        Arc::clone(&shared),
        deadline_std,
        pid,
    ))?;
    Ok((shared, measured))
}

/// What a run measured besides the members' own timestamps.
pub struct Measured {
    pub before: Metrics,
    pub after: Metrics,
    /// The server's CPU seconds at the two snapshots, and its VmHWM (KiB) at the end.
    pub cpu_before: Option<f64>,
    pub cpu_after: Option<f64>,
    /// This program's own CPU seconds over the same span (the clients' cost).
    pub own_cpu: f64,
    pub hwm_kib: Option<u64>,
    pub outcomes: Vec<Outcome>,
    /// From "go" until every member was done.
    pub active: Duration,
    pub timed_out: bool,
}

/// Connects every member, snapshots `/metrics` and `/proc`, starts them together, waits until
/// all are done (then two receipt ticks), snapshots again and collects the outcomes.
async fn drive(
    plan: &Plan,
    admin: Option<&Admin>,
    urls: Vec<String>,
    shared: Arc<Shared>,
    deadline_std: Instant,
    pid: Option<u32>,
) -> Result<Measured, Error> {
    let deadline = tokio::time::Instant::from_std(deadline_std);
    let mut crowd = Crowd::new("member");

    let mut tasks = Vec::with_capacity(urls.len());
    for (index, url) in urls.into_iter().enumerate() {
        let (sends, cursor, expect, wait_all_read) = match plan.scenario {
            Scenario::Throughput => {
                let sends: Vec<u64> = if index < plan.senders {
                    (index as u64..plan.messages)
                        .step_by(plan.senders)
                        .collect()
                } else {
                    Vec::new()
                };
                (
                    sends,
                    Some(("ack", plan.cursor_every)),
                    plan.messages,
                    false,
                )
            }
            Scenario::Receipts if index == 0 => {
                ((0..plan.messages).collect(), None, plan.messages, true)
            }
            Scenario::Receipts => (
                Vec::new(),
                Some(("read", plan.cursor_every)),
                plan.messages,
                false,
            ),
            // Storm-like: the first `senders` members post (their own messages come back as
            // `msg` too); the others read everything in batches.
            _ if index < plan.senders => (
                (index as u64..plan.messages)
                    .step_by(plan.senders)
                    .collect(),
                None,
                plan.messages,
                !plan.relay,
            ),
            _ => (
                Vec::new(),
                Some(("read", plan.cursor_every)),
                plan.messages,
                false,
            ),
        };
        let sender = index < plan.senders;
        let role = Role {
            index,
            url,
            sends,
            window: plan.window,
            pace: if plan.scenario == Scenario::Receipts && index == 0 {
                plan.pace
            } else {
                None
            },
            rate: plan
                .rate
                .filter(|_| sender)
                .map(|r| r / plan.senders as f64),
            cursor,
            cursor_period: if sender { None } else { plan.cursor_period },
            expect,
            wait_all_read,
            body: Arc::clone(&plan.body),
            nodelay: plan.nodelay,
        };
        tasks.push(tokio::spawn(run_member(
            role,
            Arc::clone(&shared),
            deadline,
            crowd.channels(),
        )));
    }

    // Every member connected and got `welcome`?
    crowd.ready(tasks.len(), deadline).await?;
    // Let the welcome bursts drain before the "before" snapshot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = match admin {
        Some(admin) => blocking_metrics(admin).await?,
        None => Metrics::default(),
    };
    let cpu_before = pid.and_then(server::cpu_seconds);
    let own_cpu_before = server::cpu_seconds(std::process::id());

    let (active, timed_out) = crowd.go(tasks.len(), deadline).await;
    // Two receipt ticks, so the last cursor moves are flushed and their receipts pushed.
    if !timed_out {
        let settle_until = (tokio::time::Instant::now() + plan.settle).min(deadline);
        tokio::time::sleep_until(settle_until).await;
    }
    let cpu_after = pid.and_then(server::cpu_seconds);
    let own_cpu = match (own_cpu_before, server::cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let hwm_kib = pid.and_then(server::rss_kib).map(|(_, hwm)| hwm);
    let after = match admin {
        Some(admin) => blocking_metrics(admin).await?,
        None => Metrics::default(),
    };
    crowd.stop();
    let outcomes = crowd.join(tasks).await?;
    Ok(Measured {
        before,
        after,
        cpu_before,
        cpu_after,
        own_cpu,
        hwm_kib,
        outcomes,
        active,
        timed_out,
    })
}
