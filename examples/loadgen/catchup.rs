//! The `catchup` scenario: one member offline while `--messages` are posted to its group, then
//! it connects with the client module (`rollcall::client`) and syncs them in pages of `--page`.
//! The group's `--members` users are created first (`--create-threads` parallel requests).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rollcall::client::{Client, ClientConfig, Event};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::admin::run_id;
use crate::args::Args;
use crate::report::{fig, fig_f};
use crate::Error;

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

/// Runs the catchup scenario against the server in `args`.
pub fn catchup(args: &Args) -> Result<bool, Error> {
    let admin = args.admin()?;
    let n = args.messages.unwrap_or(10_000);
    let members = args.members.unwrap_or(200);
    let id = run_id();
    let users: Vec<String> = (0..members.max(2)).map(|i| format!("{id}-u{i}")).collect();
    let group = format!("{id}-g");
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    admin
        .create_users(&users, args.create_threads, deadline)?
        .report(args.create_threads);
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
