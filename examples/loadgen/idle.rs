//! The `idle` scenario: `--connections` (or each `--sweep` point) authenticated connections
//! doing nothing, against a fresh server per point: the server's memory per connection, the
//! time to accept them all and connect → `welcome` latency. Tokens are minted offline with the
//! started server's secret, so 10,000 connections need no 10,000 admin requests; a token signed
//! with the server's JWT secret creates its user on that user's own first connect, so the idle
//! users need no `POST /api/users` either (they join no group).

use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::admin::Admin;
use crate::args::Args;
use crate::report::{fig, fig_f, fmt_ms, percentile, set_fig_prefix};
use crate::server::{self, finish_server, mint, start_server};
use crate::wire::Ws;
use crate::Error;

/// Runs the idle scenario at each sweep point.
pub fn idle(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("idle starts its own server (it mints tokens with its secret)".into());
    }
    let sweep = if args.sweep.is_empty() {
        vec![args.connections.unwrap_or(1000)]
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
        // Settled: the server's allocator gives back what its start freed within a second.
        std::thread::sleep(Duration::from_millis(1500));
        let (rss0, _) = server::rss_kib(srv.pid).unwrap_or((0, 0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = runtime.block_on(open_idle(urls, args.source_addrs, args.deadline_secs));
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

/// Opens every connection (at most 256 connecting at once) and waits for each `welcome`.
async fn open_idle(
    urls: Vec<String>,
    source_addrs: u8,
    deadline_secs: u64,
) -> Result<(Vec<Ws>, Vec<u64>, Duration, u64), Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(deadline_secs);
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut urls = urls.into_iter().enumerate();
    let mut conns = Vec::new();
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let connect = |(i, url): (usize, String)| async move {
        let t = Instant::now();
        let source =
            std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(source_addrs.max(1))) as u8);
        let mut ws = connect_from(source, &url).await?;
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

/// Opens a WebSocket to `url` (a `ws://127.0.0.1:PORT/...` address) from the loopback address
/// `source`, so that many source addresses multiply the ephemeral ports available.
async fn connect_from(source: std::net::Ipv4Addr, url: &str) -> Result<Ws, String> {
    let authority = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default();
    let server: std::net::SocketAddr =
        authority.parse().map_err(|e| format!("{authority}: {e}"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .map_err(|e| format!("binding {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(ws)
}
