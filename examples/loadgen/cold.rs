//! The `cold` scenario: `--messages` in `--groups` groups (built with the `groups` load phase),
//! then a restart on the same data directory: the time until `/healthz` answers, until the
//! first `welcome` and until the first `sync` returns.

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::admin::Admin;
use crate::args::{Args, Phase};
use crate::groups;
use crate::report::{fig, fig_f};
use crate::server::{self, attach, dir_bytes, finish_server, mint, start_server};
use crate::Error;

/// Builds the data directory, restarts the server on it and times the way back.
pub fn cold(args: &Args) -> Result<bool, Error> {
    if args.http.is_some() {
        return Err("cold starts and restarts its own server; drop --http".into());
    }
    let total = args.messages.unwrap_or(1_000_000);
    let groups_n = args.groups_or(1000);
    let mut a = args.clone();
    a.groups = Some(groups_n);
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
