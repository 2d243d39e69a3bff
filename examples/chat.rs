//! A terminal chat client on `rollcall::client`: prints one group's messages and sends each
//! line typed on standard input to it.
//!
//! ```text
//! cargo run --example chat -- --url ws://127.0.0.1:7600/ws --token "$TOKEN" --group eng
//! ```
//!
//! Incoming messages print as `[seq] from: body`, and every displayed message is marked read.
//! Standard input is read by a plain thread that forwards lines over a channel, because tokio's
//! `io-std` feature is not enabled in this crate (and a blocking read inside the runtime would
//! stall event printing). End with Ctrl-D.

use std::io::BufRead;

use clap::Parser;
use rollcall::client::{Client, ClientConfig, Event};
use tokio::sync::mpsc;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(about = "Chat in one Rollcall group from a terminal")]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7600/ws")]
    url: String,
    /// The user token (a JWT minted by the server's admin API).
    #[arg(long, env = "ROLLCALL_TOKEN", hide_env_values = true)]
    token: String,
    /// The group to chat in.
    #[arg(long)]
    group: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let client = Client::connect(ClientConfig::new(&args.url, &args.token)).await?;

    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
        // Dropping the sender tells the main loop that input ended.
    });

    loop {
        tokio::select! {
            event = client.next_event() => match event {
                Some(event) => show(&client, &args.group, event),
                None => break,
            },
            line = lines.recv() => match line {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    // Sending in its own task keeps incoming messages flowing while the server
                    // stores this one (or while the client reconnects).
                    let client = client.clone();
                    let group = args.group.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client.send(&group, &line).await {
                            eprintln!("! not sent: {e}");
                        }
                    });
                }
                None => break,
            },
        }
    }
    client.close().await;
    Ok(())
}

/// Prints one event and marks displayed messages read.
fn show(client: &Client, group: &str, event: Event) {
    match event {
        Event::Connected { user, groups } => match groups.iter().find(|g| g.group == group) {
            Some(g) => eprintln!(
                "* connected as {user}; {} ({}): {} messages, {} unread",
                g.group, g.name, g.last_seq, g.unread
            ),
            None => eprintln!("* connected as {user}; not (yet) a member of {group}"),
        },
        Event::Message(message) if message.group == group => {
            println!("[{}] {}: {}", message.seq, message.from, message.body);
            if let Err(e) = client.read(group, message.seq) {
                eprintln!("! cannot mark read: {e}");
            }
        }
        Event::Message(_) => {}
        Event::Receipt { group: g, items } if g == group => {
            for item in items {
                eprintln!(
                    "* [{}] read by {}/{}, delivered to {}/{}",
                    item.seq, item.read, item.recipients, item.delivered, item.recipients
                );
            }
        }
        Event::Receipt { .. } | Event::ReadSync { .. } => {}
        Event::ReadRefused { seq, code, .. } => {
            eprintln!("! read of {seq} refused: {}", code.as_str());
        }
        Event::Joined(summary) if summary.group == group => {
            eprintln!("* you were added to {} ({})", summary.name, summary.group)
        }
        Event::Left { group: g } if g == group => eprintln!("* you were removed from {g}"),
        Event::Joined(_) | Event::Left { .. } => {}
        Event::Reminder(r) => eprintln!(
            "* {} reminds you of [{}] in {}: {}: {}",
            r.by, r.seq, r.group, r.message.from, r.message.body
        ),
        Event::Reminded {
            group: g,
            seq,
            count,
            ..
        } => eprintln!("* {count} reminded of your message [{seq}] in {g}"),
        Event::GroupUpdated {
            group: g,
            name,
            receipts,
        } => eprintln!("* {g} is now \"{name}\", receipts {receipts:?}"),
        Event::MarkedUnread { .. } => {}
        Event::Disconnected => eprintln!("* disconnected; reconnecting..."),
    }
}
