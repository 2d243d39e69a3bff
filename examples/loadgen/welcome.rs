//! The `welcome` scenario (issue #14): how big and how slow is the first frame for a user in
//! many groups? One user is a member of `--groups` (5,000) groups of two; the other member
//! posts one message to each (pipelined), so every group has activity and one unread message.
//! The user then connects `--repeat` (5) times per configuration, each time measuring connect →
//! `welcome` and the frame's size in bytes:
//!
//! - `running`: right after the posts, every group's actor running (summaries from the actors);
//! - `stored`: after a restart with the server's `--welcome-groups` (default 200): no actor
//!   runs, every summary comes from the store;
//! - `all`: after a restart with `--welcome-groups` = `--welcome-groups` of this program
//!   (default: `--groups`, so every group is listed).
//!
//! It checks what `welcome` promises: at most `--welcome-groups` groups, the most recently
//! active first, `more_groups` when some are left out and `unread_total` over all of them. In
//! the `stored` configuration, the user then pages every group with `groups` (`limit`
//! `--groups-page`, 500) over the same connection: the time for all pages, their sizes, and
//! that they list each group once in ascending id order. (`groups --phase welcome` is a
//! different thing: the reconnect storm of every user of the `groups` layout.)

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::{in_parallel, run_id, Admin};
use crate::args::Args;
use crate::posting::{post, Sender, Totals};
use crate::report::{fig, fig_f, fmt_ms, micros, percentile, set_fig_prefix};
use crate::server::{finish_server, mint, server_flags, start_server, Server, ADMIN_TOKEN};
use crate::wire::{connect_welcome, Ws};
use crate::Error;

pub fn welcome(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("welcome starts and restarts its own server; drop --http".into());
    }
    let n_groups = args.groups_or(5000);
    let listed_all = args.welcome_groups.unwrap_or(n_groups);
    let default_limit = match args.server_flag("--welcome-groups") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|e| format!("--welcome-groups {v}: {e}"))?,
        None => 200,
    };
    if n_groups == 0 || n_groups > 999_999 || args.repeat == 0 || args.groups_page == 0 {
        return Err("need 0 < --groups <= 999,999, --repeat and --groups-page > 0".into());
    }
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs.max(1800));
    let (mut srv, _dir) = start_server(args)?;
    let admin = Admin::new(&srv.http, ADMIN_TOKEN)?;
    println!(
        "=== welcome: one user in {n_groups} groups; --welcome-groups {default_limit} (the \
         server's) and {listed_all}; {} connects each; groups pages of {} ===",
        args.repeat, args.groups_page
    );
    let id = run_id();
    let me = format!("{id}-me");
    let writer = format!("{id}-w");
    let threads = args.create_threads.max(1);
    admin.create_users(&[me.clone(), writer.clone()], 2, deadline)?;
    let group_ids: Vec<String> = (0..n_groups).map(|g| format!("{id}-w{g:06}")).collect();
    let t = Instant::now();
    let creator = admin.keep_alive(threads);
    in_parallel(&group_ids, threads, deadline, "creating groups", |g| {
        creator.post("/api/groups", json!({"id": g, "members": [&me, &writer]}))?;
        Ok(())
    })?;
    let create_s = t.elapsed().as_secs_f64();
    println!(
        "create   : {n_groups} groups of 2 in {create_s:.1} s ({:.0}/s)",
        n_groups as f64 / create_s
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let writer_url = format!(
        "ws://{}/ws?token={}",
        admin.host_port,
        mint(&srv.data, &writer)?
    );
    let sender = Sender {
        index: 0,
        url: writer_url,
        sends: (0..u32::try_from(n_groups)?).map(|g| (g, 0)).collect(),
        window: args.window,
        body: "x".repeat(args.body_bytes.unwrap_or(64)).into(),
        nodelay: !args.client_nagle,
    };
    let (outcomes, _, timed_out) = runtime.block_on(post(
        vec![sender],
        Arc::new(group_ids.clone()),
        tokio::time::Instant::from_std(deadline),
    ))?;
    let posted = Totals::of(&outcomes);
    println!(
        "post     : {} of {n_groups} messages in {:.1} s ({:.0}/s)",
        posted.stored,
        posted.span_s,
        posted.per_s()
    );
    let mut clean = !timed_out && posted.clean(n_groups as u64);
    let my_url = |srv: &Server| -> Result<String, Error> {
        Ok(format!(
            "ws://{}/ws?token={}",
            srv.http.trim_start_matches("http://"),
            mint(&srv.data, &me)?
        ))
    };
    let expect = Expect { n_groups, deadline };

    let running = runtime.block_on(connects(
        "running",
        &my_url(&srv)?,
        args.repeat,
        &expect,
        default_limit,
    ))?;
    srv.restart_with(server_flags(args, &[]))?;
    let stored = runtime.block_on(connects(
        "stored",
        &my_url(&srv)?,
        args.repeat,
        &expect,
        default_limit,
    ))?;
    let paged = runtime.block_on(page_all(&my_url(&srv)?, args.groups_page, &stored, &expect))?;
    let flags = ["--welcome-groups".to_string(), listed_all.to_string()];
    srv.restart_with(server_flags(args, &flags))?;
    let all = runtime.block_on(connects(
        "all",
        &my_url(&srv)?,
        args.repeat,
        &expect,
        listed_all,
    ))?;

    println!("--- result (welcome, one user in {n_groups} groups) ---");
    println!(
        "{:<8} {:>15} {:>12} {:>7} {:>6} {:>7} {:>22} {:>20}",
        "config",
        "--welcome-groups",
        "bytes",
        "listed",
        "more",
        "unread",
        "first connect→welcome",
        "median of the rest"
    );
    for (c, limit) in [
        (&running, default_limit),
        (&stored, default_limit),
        (&all, listed_all),
    ] {
        println!(
            "{:<8} {:>15} {:>12} {:>7} {:>6} {:>7} {:>19} ms {:>17} ms",
            c.label,
            limit,
            c.bytes,
            c.listed,
            c.more_groups,
            c.unread_total,
            fmt_ms(Some(c.first_us as f64 / 1000.0)),
            fmt_ms(percentile(&c.rest_us, 0.5))
        );
    }
    println!(
        "groups   : {} pages of ≤ {} in {:.1} ms ({} bytes in all, ≤ {} per page; page p50 {} ms, \
         max {} ms); {} groups listed, {} distinct, ascending: {}",
        paged.pages,
        args.groups_page,
        paged.total_us as f64 / 1000.0,
        paged.bytes,
        paged.max_page_bytes,
        fmt_ms(percentile(&paged.page_us, 0.5)),
        fmt_ms(percentile(&paged.page_us, 1.0)),
        paged.listed,
        paged.distinct,
        paged.ascending
    );
    println!(
        "order    : the {} groups of the `stored` welcome are the most recently active: {}",
        stored.listed, paged.welcome_most_recent
    );
    for c in [&running, &stored, &all] {
        for p in &c.problems {
            println!("  {}: {p}", c.label);
        }
        clean &= c.problems.is_empty();
    }
    for p in &paged.problems {
        println!("  groups: {p}");
    }
    clean &= paged.problems.is_empty();
    fig("groups", n_groups);
    fig_f("create_s", create_s);
    for c in [&running, &stored, &all] {
        set_fig_prefix(&format!("{}.", c.label));
        fig("welcome_bytes", c.bytes);
        fig("listed", c.listed);
        fig("more_groups", c.more_groups);
        fig("unread_total", c.unread_total);
        fig_f("first_ms", c.first_us as f64 / 1000.0);
        fig_f(
            "rest_p50_ms",
            percentile(&c.rest_us, 0.5).unwrap_or(f64::NAN),
        );
    }
    set_fig_prefix("groups_frames.");
    fig("pages", paged.pages);
    fig("bytes", paged.bytes);
    fig_f("total_ms", paged.total_us as f64 / 1000.0);
    fig_f(
        "page_p50_ms",
        percentile(&paged.page_us, 0.5).unwrap_or(f64::NAN),
    );
    fig("listed", paged.listed);
    set_fig_prefix("");
    println!("status   : {}", if clean { "ok" } else { "INCOMPLETE" });
    finish_server(srv);
    Ok(clean)
}

/// What every configuration is checked against.
struct Expect {
    n_groups: usize,
    deadline: Instant,
}

/// One configuration's connects.
struct Connects {
    label: &'static str,
    /// The first `welcome`'s size (every one is the same size but for `last_ts`-free fields).
    bytes: usize,
    listed: usize,
    more_groups: bool,
    unread_total: u64,
    /// The groups the first `welcome` listed, with their `last_ts`.
    welcome_groups: Vec<(String, u64)>,
    first_us: u64,
    /// The other connects, sorted.
    rest_us: Vec<u64>,
    problems: Vec<String>,
}

/// Connects `repeat` times, one after the other, timing connect → `welcome` and checking it.
async fn connects(
    label: &'static str,
    url: &str,
    repeat: usize,
    expect: &Expect,
    limit: usize,
) -> Result<Connects, Error> {
    let deadline = tokio::time::Instant::from_std(expect.deadline);
    let mut out = Connects {
        label,
        bytes: 0,
        listed: 0,
        more_groups: false,
        unread_total: 0,
        welcome_groups: Vec::new(),
        first_us: 0,
        rest_us: Vec::new(),
        problems: Vec::new(),
    };
    for i in 0..repeat {
        let t = Instant::now();
        let (mut ws, text) = connect_welcome(url, true, deadline).await?;
        let us = micros(t.elapsed());
        let _ = ws.close(None).await;
        if i > 0 {
            out.rest_us.push(us);
            continue;
        }
        out.first_us = us;
        out.bytes = text.len();
        let v: Value = serde_json::from_str(&text)?;
        out.welcome_groups = entries(&v["groups"]);
        out.listed = out.welcome_groups.len();
        out.more_groups = v["more_groups"].as_bool().unwrap_or(false);
        out.unread_total = v["unread_total"].as_u64().unwrap_or(0);
        let want_listed = limit.min(expect.n_groups);
        if out.listed != want_listed {
            out.problems.push(format!(
                "welcome lists {} groups, not {want_listed}",
                out.listed
            ));
        }
        if out.more_groups != (expect.n_groups > limit) {
            out.problems
                .push(format!("more_groups is {}", out.more_groups));
        }
        if out.unread_total != expect.n_groups as u64 {
            out.problems.push(format!(
                "unread_total {} (one unread message per group: {})",
                out.unread_total, expect.n_groups
            ));
        }
        if out.welcome_groups.windows(2).any(|w| w[0].1 < w[1].1) {
            out.problems
                .push("welcome is not ordered by last_ts, newest first".into());
        }
    }
    out.rest_us.sort_unstable();
    println!(
        "{label:<8} : welcome {} bytes, {} groups listed, more_groups {}, unread_total {}; \
         connect → welcome first {:.2} ms, then median {} ms",
        out.bytes,
        out.listed,
        out.more_groups,
        out.unread_total,
        out.first_us as f64 / 1000.0,
        fmt_ms(percentile(&out.rest_us, 0.5))
    );
    Ok(out)
}

/// The `(group, last_ts)` of each entry of a `groups` list.
fn entries(list: &Value) -> Vec<(String, u64)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    (
                        g["group"].as_str().unwrap_or_default().to_string(),
                        g["last_ts"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Paging every group with `groups`.
struct Paged {
    pages: usize,
    bytes: usize,
    max_page_bytes: usize,
    total_us: u64,
    page_us: Vec<u64>,
    listed: usize,
    distinct: usize,
    ascending: bool,
    /// Every group the welcome listed is at least as recent as every one it left out.
    welcome_most_recent: bool,
    problems: Vec<String>,
}

/// Connects, then asks `groups` page after page until `more` is false.
async fn page_all(
    url: &str,
    limit: usize,
    welcome: &Connects,
    expect: &Expect,
) -> Result<Paged, Error> {
    let deadline = tokio::time::Instant::from_std(expect.deadline);
    let (mut ws, _) = connect_welcome(url, true, deadline).await?;
    let mut all: Vec<(String, u64)> = Vec::with_capacity(expect.n_groups);
    let mut out = Paged {
        pages: 0,
        bytes: 0,
        max_page_bytes: 0,
        total_us: 0,
        page_us: Vec::new(),
        listed: 0,
        distinct: 0,
        ascending: true,
        welcome_most_recent: false,
        problems: Vec::new(),
    };
    let start = Instant::now();
    let mut after: Option<String> = None;
    loop {
        let request = out.pages + 1;
        let mut frame = json!({"type": "groups", "id": request, "limit": limit});
        if let Some(a) = &after {
            frame["after"] = json!(a);
        }
        let t = Instant::now();
        ws.send(Message::text(frame.to_string())).await?;
        let text = reply(&mut ws, request, deadline).await?;
        out.page_us.push(micros(t.elapsed()));
        out.pages += 1;
        out.bytes += text.len();
        out.max_page_bytes = out.max_page_bytes.max(text.len());
        let v: Value = serde_json::from_str(&text)?;
        let page = entries(&v["groups"]);
        if page.len() > limit {
            out.problems
                .push(format!("page {request} has {} groups", page.len()));
        }
        after = page.last().map(|(g, _)| g.clone());
        all.extend(page);
        if !v["more"].as_bool().unwrap_or(false) || after.is_none() {
            break;
        }
    }
    out.total_us = micros(start.elapsed());
    let _ = ws.close(None).await;
    out.page_us.sort_unstable();
    out.listed = all.len();
    out.distinct = all.iter().map(|(g, _)| g).collect::<HashSet<_>>().len();
    out.ascending = all.windows(2).all(|w| w[0].0 < w[1].0);
    if out.listed != expect.n_groups || out.distinct != expect.n_groups || !out.ascending {
        out.problems.push(format!(
            "{} listed, {} distinct (of {}), ascending {}",
            out.listed, out.distinct, expect.n_groups, out.ascending
        ));
    }
    // The welcome's groups must be the newest: none left out is more recent than the oldest
    // one listed.
    let listed: BTreeMap<&str, u64> = welcome
        .welcome_groups
        .iter()
        .map(|(g, ts)| (g.as_str(), *ts))
        .collect();
    let oldest_listed = listed.values().copied().min().unwrap_or(0);
    let newest_left_out = all
        .iter()
        .filter(|(g, _)| !listed.contains_key(g.as_str()))
        .map(|(_, ts)| *ts)
        .max()
        .unwrap_or(0);
    out.welcome_most_recent = newest_left_out <= oldest_listed;
    if !out.welcome_most_recent {
        out.problems.push(format!(
            "a group left out of the welcome (last_ts {newest_left_out}) is newer than one \
             listed ({oldest_listed})"
        ));
    }
    Ok(out)
}

/// Reads until the reply with request id `id`; an `error` is an error.
async fn reply(ws: &mut Ws, id: usize, deadline: tokio::time::Instant) -> Result<String, Error> {
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no reply before the deadline")?;
        match next {
            Some(Ok(Message::Text(text))) => {
                let v: Value = serde_json::from_str(text.as_str())?;
                if v["id"] == json!(id) {
                    if v["type"] == "error" {
                        return Err(format!("refused: {text}").into());
                    }
                    return Ok(text.as_str().to_owned());
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("connection ended: {other:?}").into()),
        }
    }
}
