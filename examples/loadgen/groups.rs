//! The `groups` scenario: many groups of `--members` drawn from a pool of `--users`, a few
//! pipelined senders posting `--messages` to each (`groups/load.rs`), then a reconnect storm of
//! every user (`groups/welcome.rs`). The load phase creates the pool's users before the groups
//! (`POST /api/users`, `--create-threads` at a time). `--phase` picks either or both; without
//! `--sweep` and with `--http` it is one run against that server, otherwise a sweep over the
//! number of groups with a fresh server per point. `cold` builds its data directory with the
//! load phase. Group ids follow `--prefix`, so a second load phase against the same server
//! needs a new prefix (the existing users are fine, an existing group is `group_exists`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::admin::{in_parallel, Admin};
use crate::args::{Args, Phase};
use crate::report::{fig_f, nproc, set_fig_prefix};
use crate::server::{self, attach, dir_bytes, finish_server, start_server};
use crate::Error;

mod load;
mod welcome;

/// Who is in which group. Deterministic, so `--phase welcome` knows what `--phase load` made.
struct Layout {
    prefix: String,
    groups: usize,
    members: usize,
    users: usize,
    senders: usize,
    /// Messages per group.
    messages: u64,
}

impl Layout {
    fn user(&self, u: usize) -> String {
        format!("{}-u{u:04}", self.prefix)
    }

    fn group(&self, g: usize) -> String {
        format!("{}-g{g:05}", self.prefix)
    }

    fn group_prefix(&self) -> String {
        format!("{}-g", self.prefix)
    }

    /// The member (a pool index) that posts group `g`'s messages.
    fn sender_of(&self, g: usize) -> usize {
        g % self.senders
    }

    /// Group `g`'s members (pool indexes, sorted): its sender plus `members - 1` others drawn
    /// from the pool by a partial shuffle seeded with `g`.
    fn members_of(&self, g: usize) -> Vec<usize> {
        let sender = self.sender_of(g);
        let mut pool: Vec<usize> = (0..self.users).filter(|&u| u != sender).collect();
        let mut state = (g as u64).wrapping_add(0x5EED);
        let mut chosen = vec![sender];
        for k in 0..self.members - 1 {
            let j = k + (splitmix64(&mut state) % (pool.len() - k) as u64) as usize;
            pool.swap(k, j);
            chosen.push(pool[k]);
        }
        chosen.sort_unstable();
        chosen
    }

    /// How many groups each pool user belongs to.
    fn groups_per_user(&self) -> Vec<usize> {
        let mut counts = vec![0; self.users];
        for g in 0..self.groups {
            for u in self.members_of(g) {
                counts[u] += 1;
            }
        }
        counts
    }
}

/// The SplitMix64 step: a small deterministic generator for the layout's shuffles.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Prints the server's VmRSS and VmHWM (when `--server-pid` was given).
fn print_rss(pid: Option<u32>, label: &str) {
    let Some(pid) = pid else { return };
    match server::rss_kib(pid) {
        Some((rss, hwm)) => println!(
            "rss {label:<24}: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        None => println!("rss {label:<24}: /proc/{pid}/status unreadable"),
    }
}

/// Prints the data directory's size (when `--data-dir` was given) and returns it.
fn print_disk(dir: Option<&Path>, label: &str) -> Option<u64> {
    let bytes = dir.map(dir_bytes)?;
    println!(
        "disk {label:<23}: {bytes} B ({:.1} MiB)",
        bytes as f64 / 1048576.0
    );
    Some(bytes)
}

/// Creates every group (with its members, who exist) from `threads` parallel admin connections.
fn create_groups(
    admin: &Admin,
    layout: &Layout,
    threads: usize,
    deadline: Instant,
) -> Result<(), Error> {
    let groups: Vec<usize> = (0..layout.groups).collect();
    in_parallel(&groups, threads, deadline, "creating groups", |&g| {
        let members: Vec<String> = layout
            .members_of(g)
            .into_iter()
            .map(|u| layout.user(u))
            .collect();
        admin.post(
            "/api/groups",
            json!({"id": layout.group(g), "members": members}),
        )?;
        Ok(())
    })
}

/// A WebSocket URL (with a fresh token) for each pool user in `users`.
fn ws_urls(
    admin: &Admin,
    layout: &Layout,
    users: impl Iterator<Item = usize>,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    let mut urls = Vec::new();
    for u in users {
        if Instant::now() > deadline {
            return Err("deadline reached while minting tokens".into());
        }
        urls.push(admin.user_ws_url(&layout.user(u))?);
    }
    Ok(urls)
}

/// Whether user and group ids made from `prefix` are valid ids.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 40
        && !prefix.starts_with("dm:")
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c))
}

/// One `groups` run (the phases `--phase` names) against the server in `args`.
pub fn run(args: &Args) -> Result<bool, Error> {
    let layout = Layout {
        prefix: args.prefix.clone(),
        groups: args.groups_or(1000),
        members: args.members.unwrap_or(20),
        users: args.users,
        senders: args.senders.unwrap_or(4),
        messages: args.messages.unwrap_or(100),
    };
    if !valid_prefix(&layout.prefix) {
        return Err("--prefix: 1-40 characters from A-Z a-z 0-9 _ . @ -".into());
    }
    if layout.groups == 0
        || layout.members == 0
        || layout.senders == 0
        || layout.members > layout.users
        || layout.senders > layout.users
        || layout.senders > layout.groups
        || layout.groups > 99_999
        || layout.users > 9_999
        || layout.messages == 0
        || layout.messages > u64::from(u32::MAX)
        || args.window == 0
    {
        return Err(format!(
            "need 0 < groups ({}) <= 99,999, 0 < members ({}) <= users ({}) <= 9,999, \
             0 < senders ({}) <= min(users, groups), messages and window > 0",
            layout.groups, layout.members, layout.users, layout.senders
        )
        .into());
    }
    let admin = args.admin()?;
    let deadline_std = Instant::now() + Duration::from_secs(args.deadline_secs);
    let deadline = tokio::time::Instant::from_std(deadline_std);
    let body: Arc<str> = "x".repeat(args.body_bytes.unwrap_or(200)).into();
    let nodelay = !args.client_nagle;
    let pid = args.server_pid;
    let data_dir = args.data_dir.as_deref();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let nproc = nproc();
    let cmdline: Vec<String> = std::env::args().collect();
    println!("=== rollcall loadgen: Groups ({:?}) ===", args.phase);
    println!("machine     : nproc={nproc}");
    println!("command     : {}", cmdline.join(" "));
    println!(
        "setup       : groups={} members/group={} users={} senders={} messages/group={} \
         (total {}) window/sender={} body={}B prefix={}",
        layout.groups,
        layout.members,
        layout.users,
        layout.senders,
        layout.messages,
        layout.groups as u64 * layout.messages,
        args.window,
        body.len(),
        layout.prefix
    );
    let mut clean = true;

    if args.phase != Phase::Welcome {
        print_rss(pid, "at start");
        print_disk(data_dir, "at start");
        // The pool's users first: the server makes no member a user implicitly.
        let pool: Vec<String> = (0..layout.users).map(|u| layout.user(u)).collect();
        admin
            .create_users(&pool, args.create_threads, deadline_std)?
            .report(args.create_threads);
        let t = Instant::now();
        create_groups(&admin, &layout, args.create_threads, deadline_std)?;
        let took = t.elapsed().as_secs_f64();
        println!(
            "create      : {} groups x {} members in {took:.2} s ({:.0} groups/s, {} threads)",
            layout.groups,
            layout.members,
            layout.groups as f64 / took,
            args.create_threads
        );
        let before = admin.metrics()?;
        print_rss(pid, "after group creation");
        let disk_before = print_disk(data_dir, "after group creation");
        let urls = ws_urls(&admin, &layout, 0..layout.senders, deadline_std)?;
        let (outcomes, active, timed_out) = runtime.block_on(load::post_all(
            &layout,
            urls,
            args.window,
            Arc::clone(&body),
            nodelay,
            deadline,
        ))?;
        let after = admin.metrics()?;
        print_rss(pid, "after posting");
        let disk_after = print_disk(data_dir, "after posting");
        clean &= load::report_load(
            &layout,
            &outcomes,
            active,
            timed_out,
            &before,
            &after,
            disk_before,
            disk_after,
        );
    }

    if args.phase != Phase::Load {
        let before = admin.metrics()?;
        print_rss(pid, "before welcome storm");
        if args.phase == Phase::Welcome {
            print_disk(data_dir, "before welcome storm");
        }
        let t = Instant::now();
        let urls = ws_urls(&admin, &layout, 0..layout.users, deadline_std)?;
        println!(
            "tokens      : {} minted in {:.2} s (before the storm, not timed)",
            urls.len(),
            t.elapsed().as_secs_f64()
        );
        let storm = runtime.block_on(welcome::storm(&admin, urls, nodelay, deadline, pid))?;
        clean &= welcome::report_storm(&layout, &storm, &before);
    }
    println!("status      : {}", if clean { "ok" } else { "INCOMPLETE" });
    Ok(clean)
}

/// `groups` with a sweep (default 1, 10, 100, 1,000 groups): a fresh server per point, the
/// same total of messages (`--messages`, default 20,000) spread evenly over the groups.
pub fn sweep(args: &Args) -> Result<bool, Error> {
    let sweep = if args.sweep.is_empty() {
        vec![1, 10, 100, 1000]
    } else {
        args.sweep.clone()
    };
    let total = args.messages.unwrap_or(20_000);
    let mut clean = true;
    println!("=== groups sweep: {sweep:?} groups, {total} messages in all ===");
    for &g in &sweep {
        let g = usize::try_from(g)?;
        set_fig_prefix(&format!("g{g}."));
        let mut a = args.clone();
        a.groups = Some(g);
        a.messages = Some((total / g as u64).max(1));
        a.senders = Some(args.senders.unwrap_or(4).min(g));
        a.phase = Phase::Load;
        let (srv, _dir) = match &args.http {
            Some(_) => return Err("the groups sweep starts its own servers; drop --http".into()),
            None => start_server(args)?,
        };
        attach(&mut a, &srv);
        let cpu0 = server::cpu_seconds(srv.pid);
        clean &= run(&a)?;
        let cpu1 = server::cpu_seconds(srv.pid);
        if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
            fig_f("server_cpu_s", c1 - c0);
        }
        if let Some((_, hwm)) = server::rss_kib(srv.pid) {
            fig_f("server_peak_rss_mib", hwm as f64 / 1024.0);
        }
        finish_server(srv);
    }
    set_fig_prefix("");
    Ok(clean)
}
