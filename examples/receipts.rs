//! Read receipts climbing live: a sender watches the read count of its message rise as other
//! clients read it one by one.
//!
//! Self-contained against a running server: it creates its own users and group through the
//! admin API (ids suffixed randomly, so it can run again), then connects a sender and N readers
//! with `rollcall::client`.
//!
//! ```text
//! cargo run --example receipts -- --http http://127.0.0.1:7600 --admin-token "$ADMIN" --readers 4
//! ```
//!
//! The admin calls use blocking `ureq` before the tokio runtime starts, rather than inside it,
//! so no runtime thread ever blocks on HTTP.

use std::time::Duration;

use clap::Parser;
use rollcall::client::{Client, ClientConfig, Event};
use serde_json::{json, Value};

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(about = "Watch the read count of one message climb")]
struct Args {
    /// The server's HTTP base URL (the WebSocket URL is derived from it).
    #[arg(long, default_value = "http://127.0.0.1:7600")]
    http: String,
    /// The admin token.
    #[arg(long, env = "ROLLCALL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// How many readers to connect.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Pause between two readers' reads, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pause_ms: u64,
}

/// A user created for the demo.
struct DemoUser {
    id: String,
    token: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let base = args.http.trim_end_matches('/').to_owned();
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);

    let sender = create_user(&base, &args.admin_token, &format!("sender-{suffix}"))?;
    let mut readers = Vec::new();
    for i in 1..=args.readers {
        readers.push(create_user(
            &base,
            &args.admin_token,
            &format!("reader{i}-{suffix}"),
        )?);
    }
    let group = format!("receipts-{suffix}");
    let mut members = vec![sender.id.clone()];
    members.extend(readers.iter().map(|r| r.id.clone()));
    admin_post(
        &base,
        &args.admin_token,
        "/api/groups",
        json!({"id": group, "name": "Receipts demo", "members": members}),
    )?;
    println!("group {group}: {} and {} readers", sender.id, readers.len());

    let ws_url = format!(
        "{}/ws",
        base.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(watch(ws_url, group, sender, readers, args.pause_ms))
}

/// Connects everyone, sends one message, lets the readers read it one by one, and prints the
/// receipts the sender is pushed.
async fn watch(
    ws_url: String,
    group: String,
    sender: DemoUser,
    readers: Vec<DemoUser>,
    pause_ms: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = |user: &DemoUser| {
        let mut config = ClientConfig::new(&ws_url, &user.token);
        config.ack_every = 1;
        config
    };
    let sender_client = Client::connect(config(&sender)).await?;
    let mut reader_clients = Vec::new();
    for reader in &readers {
        reader_clients.push((reader.id.clone(), Client::connect(config(reader)).await?));
    }

    let sent = sender_client
        .send(&group, "Lunch at noon, who's in?")
        .await?;
    println!("{} sent seq {}", sender.id, sent.seq);

    // Each reader first receives the message (taking it from its events acknowledges delivery),
    // then they read it one after another.
    let reading = {
        let group = group.clone();
        let reader_clients = reader_clients.clone();
        tokio::spawn(async move {
            for (_, client) in &reader_clients {
                wait_for_message(client, &group, sent.seq).await;
            }
            for (id, client) in &reader_clients {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                match client.read(&group, sent.seq) {
                    Ok(()) => println!("  {id} reads it"),
                    Err(e) => eprintln!("  {id} cannot read: {e}"),
                }
            }
        })
    };

    let n_readers = u64::try_from(readers.len()).unwrap_or(u64::MAX);
    let deadline = Duration::from_millis(
        pause_ms
            .saturating_mul(n_readers.saturating_add(2))
            .saturating_add(5_000),
    );
    let watched = tokio::time::timeout(deadline, async {
        while let Some(event) = sender_client.next_event().await {
            let Event::Receipt { group: g, items } = event else {
                continue;
            };
            if g != group {
                continue;
            }
            for item in items.iter().filter(|item| item.seq == sent.seq) {
                println!(
                    "seq {}: read {}/{}, delivered {}/{}",
                    item.seq, item.read, item.recipients, item.delivered, item.recipients
                );
                if item.recipients > 0 && item.read == item.recipients {
                    return true;
                }
            }
        }
        false
    })
    .await;
    match watched {
        Ok(true) => println!("everyone has read it"),
        _ => println!("gave up waiting for every reader"),
    }
    if let Err(e) = reading.await {
        eprintln!("the readers' task failed: {e}");
    }

    let readers_now = sender_client.readers(&group, sent.seq).await?;
    println!(
        "read: {:?}; delivered only: {:?}; not delivered: {:?}",
        readers_now.read, readers_now.delivered, readers_now.unread
    );
    sender_client.close().await;
    for (_, client) in &reader_clients {
        client.close().await;
    }
    Ok(())
}

/// Takes events until message `seq` of `group` arrived.
async fn wait_for_message(client: &Client, group: &str, seq: u64) {
    while let Some(event) = client.next_event().await {
        if let Event::Message(message) = event {
            if message.group == group && message.seq >= seq {
                return;
            }
        }
    }
}

/// Creates a user through the admin API.
fn create_user(
    base: &str,
    admin_token: &str,
    id: &str,
) -> Result<DemoUser, Box<dyn std::error::Error>> {
    let created = admin_post(base, admin_token, "/api/users", json!({"id": id}))?;
    let token = created
        .get("token")
        .and_then(Value::as_str)
        .ok_or("the server's answer has no token")?;
    Ok(DemoUser {
        id: id.to_owned(),
        token: token.to_owned(),
    })
}

/// POSTs JSON to the admin API and returns the JSON answer; an error status becomes an error
/// carrying the server's error body.
fn admin_post(
    base: &str,
    admin_token: &str,
    path: &str,
    body: Value,
) -> Result<Value, Box<dyn std::error::Error>> {
    let response = ureq::post(&format!("{base}{path}"))
        .set("Authorization", &format!("Bearer {admin_token}"))
        .send_json(body);
    match response {
        Ok(response) => Ok(response.into_json()?),
        Err(ureq::Error::Status(status, response)) => {
            let detail = response.into_string().unwrap_or_default();
            Err(format!("POST {path}: HTTP {status}: {detail}").into())
        }
        Err(e) => Err(format!("POST {path}: {e}").into()),
    }
}
