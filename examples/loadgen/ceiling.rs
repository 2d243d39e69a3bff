//! The `ceiling` scenario: the storm against Rollcall, then the very same clients against a
//! bare WebSocket relay (this program run as `loadgen relay`, a separate process: no storage, no
//! JSON parsing), then the disk's fsyncs per second: how close Rollcall comes to what these
//! clients and this machine allow. The relay itself is here too.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::args::{Args, Scenario};
use crate::report::{fig_f, figure, set_fig_prefix};
use crate::server::{attach, finish_server, start_server};
use crate::storm::{drive_plan, run_plan};
use crate::storm_report::report;
use crate::Error;

/// Runs the storm against Rollcall and the relay, then measures the disk.
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
    let ok_relay = report(&relay_plan, &shared, measured, None, None, None);
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
/// frame that contains `"type":"send"` (a substring test, not a parse) to every connection, the
/// sender included. No storage, no JSON parsing, no acknowledgement: the most a server could do
/// with these clients on this machine. Runs until killed.
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
