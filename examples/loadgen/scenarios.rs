//! The scenarios that are not one group's storm: `groups` (a sweep over the number of groups),
//! `idle`, `catchup`, `cold`, `fanout` and `ceiling` (with the bare relay and the disk's fsync
//! rate). Each starts its own server(s) unless `--http` names one (`catchup` only), and records
//! its figures with `fig` for the final JSON line.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use futures_util::stream::FuturesUnordered;
use rollcall::auth::Auth;
use rollcall::client::{Client, ClientConfig, Event};
use rollcall::ids::UserId;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::server;
use super::*;

// ---------------------------------------------------------------------------------------------
// groups: G groups with traffic spread over them.

/// `groups` with a sweep (default 1, 10, 100, 1,000 groups): a fresh server per point, the
/// same total of messages (`--messages`, default 20,000) spread evenly over the groups.
pub fn groups_sweep(args: &Args) -> Result<bool, Error> {
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
        a.groups = g;
        a.messages = Some((total / g as u64).max(1));
        a.senders = Some(args.senders.unwrap_or(4).min(g));
        a.phase = Phase::Load;
        let (srv, _dir) = match &args.http {
            Some(_) => return Err("the groups sweep starts its own servers; drop --http".into()),
            None => start_server(args)?,
        };
        attach(&mut a, &srv);
        let cpu0 = server::cpu_seconds(srv.pid);
        clean &= groups::run(&a)?;
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

// ---------------------------------------------------------------------------------------------
// idle: many authenticated connections doing nothing.

/// Mints a token for `user` with the secret the started servers use.
fn mint(data: &Path, user: &str) -> Result<String, Error> {
    let user = UserId::parse(user).map_err(|e| format!("bad user id {user}: {e:?}"))?;
    Ok(Auth::mint_offline(
        data,
        Some(server::JWT_SECRET.to_string()),
        &user,
        3600,
    )?)
}

pub fn idle(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("idle starts its own server (it mints tokens with its secret)".into());
    }
    let sweep = if args.sweep.is_empty() {
        vec![args.connections]
    } else {
        args.sweep.clone()
    };
    let nofile = server::raise_nofile();
    println!(
        "=== idle: {sweep:?} connections (RLIMIT_NOFILE {nofile}, inherited by the server) ==="
    );
    let mut clean = true;
    for &c in &sweep {
        set_fig_prefix(&format!("c{c}."));
        let (srv, _dir) = start_server(args)?;
        let admin = Admin::new(&srv.http, server::ADMIN_TOKEN)?;
        let mut urls = Vec::with_capacity(usize::try_from(c)?);
        let ws = format!("ws://{}/ws", srv.http.trim_start_matches("http://"));
        for i in 0..c {
            urls.push(format!(
                "{ws}?token={}",
                mint(&srv.data, &format!("idle-u{i}"))?
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (rss0, _) = server::rss_kib(srv.pid).unwrap_or((0, 0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = runtime.block_on(open_idle(urls, args.deadline_secs));
        let (conns, latencies, took, failures) = result?;
        std::thread::sleep(Duration::from_millis(1000));
        let (rss1, hwm) = server::rss_kib(srv.pid).unwrap_or((0, 0));
        let sessions = admin.metrics()?.get("rollcall_sessions");
        let per_conn = (rss1 as f64 - rss0 as f64) * 1024.0 / c as f64;
        let mut lat = latencies;
        lat.sort_unstable();
        println!("--- result (idle, {c} connections) ---");
        println!(
            "accepted    : {} of {c} welcomed in {:.2} s ({failures} failed); server sessions gauge {sessions}",
            lat.len(),
            took.as_secs_f64()
        );
        println!(
            "welcome     : connect → welcome p50 {} / p99 {} / max {} ms (connections opened 256 at a time)",
            fmt_ms(percentile(&lat, 0.5)),
            fmt_ms(percentile(&lat, 0.99)),
            fmt_ms(percentile(&lat, 1.0))
        );
        println!(
            "server RSS  : {:.1} MiB idle → {:.1} MiB with {c} connections (VmHWM {:.1} MiB): {:.0} B ({:.1} KiB) per connection",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            hwm as f64 / 1024.0,
            per_conn,
            per_conn / 1024.0
        );
        fig("connections", c);
        fig("welcomed", lat.len());
        fig("failed", failures);
        fig_f("accept_all_s", took.as_secs_f64());
        fig_f("welcome_p50_ms", percentile(&lat, 0.5).unwrap_or(f64::NAN));
        fig_f("welcome_p99_ms", percentile(&lat, 0.99).unwrap_or(f64::NAN));
        fig_f("rss_idle_mib", rss0 as f64 / 1024.0);
        fig_f("rss_mib", rss1 as f64 / 1024.0);
        fig_f("rss_per_conn_kib", per_conn / 1024.0);
        fig_f("sessions_gauge", sessions);
        clean &= failures == 0 && lat.len() as u64 == c && sessions as u64 == c;
        drop(conns);
        finish_server(srv);
    }
    set_fig_prefix("");
    Ok(clean)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens every connection (at most 256 connecting at once) and waits for each `welcome`.
async fn open_idle(
    urls: Vec<String>,
    deadline_secs: u64,
) -> Result<(Vec<Ws>, Vec<u64>, Duration, u64), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(deadline_secs);
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut urls = urls.into_iter();
    let mut conns = Vec::new();
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let connect = |url: String| async move {
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t2))) if t2.as_str().contains("\"type\":\"welcome\"") => {
                    break
                }
                Some(Ok(_)) => {}
                other => return Err(format!("no welcome: {other:?}")),
            }
        }
        Ok::<_, String>((
            ws,
            u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
        ))
    };
    for url in urls.by_ref().take(256) {
        pending.push(connect(url));
    }
    let mut first_error = None;
    loop {
        let next = tokio::time::timeout_at(deadline, pending.next()).await;
        match next {
            Ok(Some(Ok((ws, us)))) => {
                conns.push(ws);
                latencies.push(us);
            }
            Ok(Some(Err(e))) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) => break,
            Err(_) => return Err("idle: deadline reached while connecting".into()),
        }
        if let Some(url) = urls.next() {
            pending.push(connect(url));
        }
    }
    if let Some(e) = first_error {
        println!("first connection error: {e}");
    }
    Ok((conns, latencies, start.elapsed(), failures))
}

// ---------------------------------------------------------------------------------------------
// catchup: an offline member reconnects and syncs.

/// Posts `n` messages to `group` over one connection with `window` sends in flight.
async fn post_messages(
    url: &str,
    group: &str,
    n: u64,
    window: u64,
    body: &str,
) -> Result<(), Error> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let (mut answered, mut next) = (0u64, 0u64);
    while answered < n {
        while next < n && next - answered < window {
            let frame = json!({"type": "send", "id": next, "group": group,
                "client_id": format!("c{next}"), "body": body});
            ws.feed(Message::text(frame.to_string())).await?;
            next += 1;
        }
        ws.flush().await?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if t.as_str().contains("\"type\":\"sent\"") {
                    answered += 1;
                } else if t.as_str().contains("\"type\":\"error\"") {
                    return Err(format!("send refused: {t}").into());
                }
            }
            Some(Ok(_)) => {}
            other => return Err(format!("sender connection ended: {other:?}").into()),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

pub fn catchup(args: &Args) -> Result<bool, Error> {
    let admin = args.admin()?;
    let n = args.messages.unwrap_or(10_000);
    let members = args.members.unwrap_or(200);
    let id = run_id();
    let users: Vec<String> = (0..members.max(2)).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");
    admin.post(
        "/api/groups",
        json!({"id": group, "name": "catchup", "members": users}),
    )?;
    let token = |u: &str| -> Result<String, Error> {
        let answer = admin.post(&format!("/api/users/{u}/tokens"), json!({}))?;
        Ok(answer["token"].as_str().ok_or("no token")?.to_string())
    };
    let sender_url = admin.ws_url(&token(&users[0])?);
    let offline_token = token(&users[1])?;
    let body = "x".repeat(args.body_bytes.unwrap_or(64));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    runtime.block_on(post_messages(&sender_url, &group, n, 64, &body))?;
    println!(
        "=== catchup: {n} messages posted to a group of {members} in {:.2} s while member 1 was offline ===",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = admin.metrics()?;
    let ws_url = format!("ws://{}/ws", admin.host_port);
    let mut config = ClientConfig::new(ws_url, offline_token);
    config.sync_page = args.page;
    let (took, got, to_welcome) = runtime.block_on(async {
        let t = Instant::now();
        let client = Client::connect(config).await?;
        let to_welcome = t.elapsed();
        let mut got = 0u64;
        let mut last = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.deadline_secs);
        while got < n {
            match tokio::time::timeout_at(deadline, client.next_event()).await {
                Ok(Some(Event::Message(m))) if m.group == group => {
                    got += 1;
                    last = m.seq;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        let took = t.elapsed();
        client.close().await;
        let _ = last;
        Ok::<_, Error>((took, got, to_welcome))
    })?;
    let after = admin.metrics()?;
    let pages = before.frames(&after, "in", "sync");
    println!("--- result (catchup) ---");
    println!(
        "synced      : {got} of {n} messages in {:.3} s from connect (welcome after {:.1} ms), {pages} sync pages of up to {} (rollcall::client)",
        took.as_secs_f64(),
        to_welcome.as_secs_f64() * 1000.0,
        args.page
    );
    println!(
        "rate        : {:.0} messages/s",
        got as f64 / took.as_secs_f64()
    );
    fig("messages", n);
    fig("synced", got);
    fig_f("sync_s", took.as_secs_f64());
    fig_f("welcome_ms", to_welcome.as_secs_f64() * 1000.0);
    fig_f("pages", pages);
    fig("page", args.page);
    Ok(got == n)
}

// ---------------------------------------------------------------------------------------------
// cold: restart with many messages stored.

pub fn cold(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("cold starts and restarts its own server; drop --http".into());
    }
    let total = args.messages.unwrap_or(1_000_000);
    let groups_n = args.groups;
    let mut a = args.clone();
    a.messages = Some((total / groups_n as u64).max(1));
    a.phase = Phase::Load;
    a.deadline_secs = args.deadline_secs.max(1200);
    let (mut srv, _dir) = start_server(args)?;
    attach(&mut a, &srv);
    println!("=== cold: building {total} messages in {groups_n} groups ===");
    let t = Instant::now();
    let built = groups::run(&a)?;
    println!("built in {:.1} s", t.elapsed().as_secs_f64());
    let disk = dir_bytes(&srv.data);
    let stop = srv.stop();
    println!(
        "stopped in {:.2} s; data dir {:.1} MB",
        stop.as_secs_f64(),
        disk as f64 / 1e6
    );
    // The first sync: user 0 of the layout and its first group (lg-u0000 is in lg-g00000).
    let user = format!("{}-u0000", args.prefix);
    let group = format!("{}-g00000", args.prefix);
    let token = mint(&srv.data, &user)?;
    let healthz = srv.restart()?;
    let ws = format!(
        "ws://{}/ws?token={token}",
        srv.http.trim_start_matches("http://")
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (welcome, synced, n_groups) = runtime.block_on(async {
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(ws, None, true).await?;
        let mut welcome = None;
        let mut n_groups = 0usize;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: Value = serde_json::from_str(text.as_str())?;
                    match v["type"].as_str() {
                        Some("welcome") => {
                            welcome = Some(t.elapsed());
                            n_groups = v["groups"].as_array().map_or(0, |g| g.len());
                            let frame = json!({"type": "sync", "id": 1, "group": group, "after": 0, "limit": 100});
                            ws.send(Message::text(frame.to_string())).await?;
                        }
                        Some("messages") => break,
                        Some("error") => return Err(format!("sync refused: {text}").into()),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                other => return Err(format!("connection ended: {other:?}").into()),
            }
        }
        Ok::<_, Error>((welcome.unwrap_or_default(), t.elapsed(), n_groups))
    })?;
    let (rss, hwm) = server::rss_kib(srv.pid).unwrap_or((0, 0));
    let loaded = Admin::new(&srv.http, server::ADMIN_TOKEN)?
        .metrics()?
        .get("rollcall_groups_loaded");
    println!("--- result (cold, {total} messages in {groups_n} groups) ---");
    println!(
        "restart → /healthz 200     : {:.3} s",
        healthz.as_secs_f64()
    );
    println!(
        "connect → welcome          : {:.3} s ({n_groups} groups listed; {loaded} group actors running after)",
        welcome.as_secs_f64()
    );
    println!(
        "restart → first sync reply : {:.3} s",
        healthz.as_secs_f64() + synced.as_secs_f64()
    );
    println!(
        "server RSS after           : {:.1} MiB (VmHWM {:.1})",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    fig("messages", total);
    fig("groups", groups_n);
    fig_f("disk_mb", disk as f64 / 1e6);
    fig_f("healthz_s", healthz.as_secs_f64());
    fig_f("welcome_s", welcome.as_secs_f64());
    fig_f("first_sync_s", healthz.as_secs_f64() + synced.as_secs_f64());
    fig("welcome_groups", n_groups);
    fig_f("groups_loaded_after", loaded);
    fig_f("rss_after_mib", rss as f64 / 1024.0);
    finish_server(srv);
    Ok(built)
}

// ---------------------------------------------------------------------------------------------
// fanout: cost per message as the group grows.

pub fn fanout(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("fanout starts its own servers; drop --http".into());
    }
    let sweep = if args.sweep.is_empty() {
        vec![10, 100, 1000, 5000]
    } else {
        args.sweep.clone()
    };
    let mut clean = true;
    for &members in &sweep {
        set_fig_prefix(&format!("m{members}."));
        let mut a = args.clone();
        a.members = Some(usize::try_from(members)?);
        a.messages = Some(args.messages.unwrap_or(2_000));
        let plan = a.plan_for(Scenario::Fanout)?;
        println!("=== fanout: {members} members, {} online ===", plan.online);
        let (srv, _dir) = start_server(args)?;
        attach(&mut a, &srv);
        clean &= run_plan(&a, &plan)?;
        finish_server(srv);
    }
    set_fig_prefix("");
    Ok(clean)
}

// ---------------------------------------------------------------------------------------------
// ceiling: the same storm against a bare relay, and the disk's fsync rate.

pub fn ceiling(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("ceiling starts its own server and relay; drop --http".into());
    }
    let plan = args.plan_for(Scenario::Storm)?;
    // 1. Rollcall.
    set_fig_prefix("rollcall.");
    let (srv, dir) = start_server(args)?;
    let mut a = args.clone();
    attach(&mut a, &srv);
    let ok_rollcall = run_plan(&a, &plan)?;
    let fsync_dir = dir.path().to_path_buf();
    finish_server(srv);
    let rollcall = figure("rollcall.deliveries_per_s");

    // 2. The bare relay, a separate process like the server, with the same clients.
    set_fig_prefix("relay.");
    let exe = std::env::current_exe()?;
    let mut relay = Command::new(exe)
        .arg("relay")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let pid = relay.id();
    let mut lines = BufReader::new(relay.stdout.take().ok_or("relay stdout")?).lines();
    let addr = lines
        .next()
        .transpose()?
        .and_then(|l| l.strip_prefix("relay listening on ").map(str::to_string))
        .ok_or("the relay did not start")?;
    std::thread::spawn(move || for _ in lines {});
    println!("relay       : loadgen relay (pid {pid}) on {addr}");
    let mut relay_plan = args.plan_for(Scenario::Storm)?;
    relay_plan.relay = true;
    relay_plan.scenario = Scenario::Ceiling;
    let urls = vec![format!("ws://{addr}/ws"); relay_plan.online];
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let (shared, measured) = drive_plan(
        &relay_plan,
        None,
        "relay".to_string(),
        urls,
        Some(pid),
        deadline,
    )?;
    let ok_relay = report(&relay_plan, &shared, measured, None, None);
    let _ = relay.kill();
    let _ = relay.wait();
    let relay_rate = figure("relay.deliveries_per_s");

    // 3. The disk.
    set_fig_prefix("disk.");
    let (fsync, fdatasync) = fsyncs_per_s(&fsync_dir)?;
    set_fig_prefix("");
    let ratio = rollcall / relay_rate;
    println!("--- result (ceiling) ---");
    println!("rollcall deliveries/s : {rollcall:.0}");
    println!("relay deliveries/s    : {relay_rate:.0} (no storage, no JSON parsing, same clients)");
    println!("ratio                 : {:.1}% of the relay", 100.0 * ratio);
    println!("disk                  : {fsync:.0} fsync/s, {fdatasync:.0} fdatasync/s (4 KiB pwrite + sync, 2 s each)");
    fig_f("ratio_deliveries", ratio);
    Ok(ok_rollcall && ok_relay)
}

/// A figure recorded so far (NaN when absent).
fn figure(key: &str) -> f64 {
    FIGURES
        .lock()
        .ok()
        .and_then(|f| {
            f.iter()
                .rev()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_f64())
        })
        .unwrap_or(f64::NAN)
}

/// Rewrites one 4 KiB block and syncs it, for 2 s each with `fsync` and `fdatasync`.
fn fsyncs_per_s(dir: &Path) -> Result<(f64, f64), Error> {
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = vec![7u8; 4096];
    let mut rates = [0.0; 2];
    for (i, rate) in rates.iter_mut().enumerate() {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(2) {
            file.write_all_at(&block, (n % 16) * 4096)?;
            if i == 0 {
                file.sync_all()?;
            } else {
                file.sync_data()?;
            }
            n += 1;
        }
        *rate = n as f64 / t.elapsed().as_secs_f64();
    }
    let _ = std::fs::remove_file(&path);
    fig_f("fsync_per_s", rates[0]);
    fig_f("fdatasync_per_s", rates[1]);
    Ok((rates[0], rates[1]))
}

/// The bare relay: accepts WebSockets, greets each with a `welcome`, and forwards every text
/// frame that contains `"type":"send"` (a substring test, not a parse) to every connection, the sender included. No
/// storage, no JSON parsing, no acknowledgement: the most a server could do with these clients
/// on this machine. Runs until killed.
pub fn serve_relay(addr: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        println!("relay listening on {}", listener.local_addr()?);
        let peers: Arc<Mutex<Vec<mpsc::UnboundedSender<Utf8Bytes>>>> = Arc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let peers = Arc::clone(&peers);
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
                if let Ok(mut p) = peers.lock() {
                    p.push(tx);
                }
                let writer = tokio::spawn(async move {
                    if sink
                        .send(Message::text("{\"type\":\"welcome\",\"groups\":[]}"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while let Some(text) = rx.recv().await {
                        if sink.feed(Message::Text(text)).await.is_err() {
                            return;
                        }
                        while let Ok(more) = rx.try_recv() {
                            if sink.feed(Message::Text(more)).await.is_err() {
                                return;
                            }
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                });
                while let Some(Ok(frame)) = stream.next().await {
                    if let Message::Text(text) = frame {
                        if text.as_str().contains("\"type\":\"send\"") {
                            if let Ok(mut p) = peers.lock() {
                                p.retain(|tx| tx.send(text.clone()).is_ok());
                            }
                        }
                    }
                }
                writer.abort();
            });
        }
    })
}
