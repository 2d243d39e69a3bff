//! A terminal chat client on `rollcall::client`: prints one group's messages and sends each
//! line typed on standard input to it.
//!
//! ```text
//! cargo run --example chat -- --url ws://127.0.0.1:7600/ws --token "$TOKEN" --group eng
//! ```
//!
//! Several `--url`s (the flag repeated, or one comma-separated list) are the nodes of one
//! service: the client connects to the first that accepts it, and moves on to the next when that
//! one goes down or steps down to standby (`ClientConfig::fallback_urls`).
//!
//! On start it prints the group's last 20 messages (a `history` query), then every new one as it
//! arrives, each as `[seq] from: body`; every displayed message is marked read. Refusals are said
//! in words: a token the server does not accept (HTTP 401), a send to a group you are not a
//! member of, or one that does not exist.
//! Standard input is read by a plain thread that forwards lines over a channel, because tokio's
//! `io-std` feature is not enabled in this crate (and a blocking read inside the runtime would
//! stall event printing). End with Ctrl-D.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Parser;
use rollcall::client::{Client, ClientConfig, ClientError, ErrorCode, Event, Message};
use tokio::sync::mpsc;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(about = "Chat in one Rollcall group from a terminal")]
struct Args {
    /// The server's WebSocket URL; several (repeated, or comma-separated) are tried in turn.
    #[arg(long, default_value = "ws://127.0.0.1:7600/ws", value_delimiter = ',')]
    url: Vec<String>,
    /// The user token (a JWT from `rollcall token <user>` or the server's admin API).
    #[arg(long, env = "ROLLCALL_TOKEN", hide_env_values = true)]
    token: String,
    /// The group to chat in.
    #[arg(long)]
    group: String,
}

/// How many earlier messages are shown on start.
const HISTORY_ON_START: usize = 20;

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let mut urls = args
        .url
        .iter()
        .map(|url| url.trim())
        .filter(|url| !url.is_empty());
    let Some(first) = urls.next() else {
        eprintln!("! no --url given");
        return ExitCode::FAILURE;
    };
    let config = ClientConfig::new(first, &args.token).with_fallback_urls(urls);
    let client = match Client::connect(config).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("! {}", explain_connect(&args.url.join(", "), &e));
            return ExitCode::FAILURE;
        }
    };

    // The first event is `Connected`, with the `welcome` data: shown before the history.
    if let Some(event) = client.next_event().await {
        show(&client, &args.group, event);
    }

    // The client syncs only what this user has not yet received, so the recent past comes from
    // a `history` query. Messages up to `shown` are on screen; a live one at or below it (the
    // client's own sync can overlap the history page) is not printed again.
    let mut shown = 0;
    match client.history(&args.group, None, HISTORY_ON_START).await {
        Ok(page) => {
            if page.more {
                eprintln!("* earlier messages are not shown");
            }
            for message in &page.messages {
                print_message(message);
            }
            if let Some(last) = page.messages.last() {
                shown = last.seq;
                mark_read(&client, &args.group, shown);
            }
        }
        Err(e) => eprintln!("! cannot show {}: {}", args.group, explain(&args.group, &e)),
    }

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
                Some(Event::Message(m)) if m.group == args.group && m.seq <= shown => {}
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
                            eprintln!("! not sent: {}", explain(&group, &e));
                        }
                    });
                }
                None => break,
            },
        }
    }
    client.close().await;
    ExitCode::SUCCESS
}

/// Why the first connection failed, in words.
fn explain_connect(url: &str, error: &ClientError) -> String {
    match error {
        ClientError::Rejected { status: 401 } => "the server refused the token (HTTP 401): mint a \
            new one with `rollcall token <user>` or the admin API"
            .to_owned(),
        ClientError::Rejected { status: 429 } => "the server refused the connection (HTTP 429): \
            this user has as many sessions open as the server allows"
            .to_owned(),
        ClientError::Rejected { status: 503 } => format!(
            "the server refused the connection (HTTP 503): {url} is a standby or unavailable; \
             give the active node's URL too (--url a,b)"
        ),
        ClientError::Rejected { status } => {
            format!("the server refused the connection (HTTP {status}); is {url} Rollcall's /ws?")
        }
        ClientError::Connect(reason) => format!("cannot connect to {url}: {reason}"),
        other => other.to_string(),
    }
}

/// Why a request about `group` failed, in words.
fn explain(group: &str, error: &ClientError) -> String {
    match error {
        ClientError::Server {
            code: ErrorCode::NotMember,
            ..
        } => format!(
            "you are not a member of {group}; an admin can add you \
             (PUT /api/groups/{group}/members/<you>)"
        ),
        ClientError::Server {
            code: ErrorCode::NoSuchGroup,
            ..
        } => format!("there is no group {group}; check its id (--group)"),
        ClientError::Server {
            code: ErrorCode::TooLarge,
            ..
        } => "the message is longer than the server allows".to_owned(),
        other => other.to_string(),
    }
}

/// Prints one message of the group.
fn print_message(message: &Message) {
    println!("[{}] {}: {}", message.seq, message.from, message.body);
}

/// Marks the group read up to `seq`.
fn mark_read(client: &Client, group: &str, seq: u64) {
    if let Err(e) = client.read(group, seq) {
        eprintln!("! cannot mark read: {e}");
    }
}

/// Prints one event and marks displayed messages read.
fn show(client: &Client, group: &str, event: Event) {
    match event {
        Event::Connected { user, groups } => match groups.iter().find(|g| g.group == group) {
            Some(g) => eprintln!(
                "* connected to {} as {user}; {} ({}): {} messages, {} unread",
                client.url(),
                g.group,
                g.name,
                g.last_seq,
                g.unread
            ),
            None => eprintln!(
                "* connected to {} as {user}; not (yet) a member of {group}",
                client.url()
            ),
        },
        Event::Message(message) if message.group == group => {
            print_message(&message);
            mark_read(client, group, message.seq);
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
        Event::MessageEdited {
            group: g,
            seq,
            body,
            ..
        } if g == group => eprintln!("* [{seq}] edited: {body}"),
        Event::MessageDeleted { group: g, seq } if g == group => {
            eprintln!("* [{seq}] was deleted")
        }
        Event::Typing { group: g, user } if g == group => eprintln!("* {user} is typing…"),
        Event::MessageEdited { .. } | Event::MessageDeleted { .. } | Event::Typing { .. } => {}
        Event::Presence { user, online } => {
            eprintln!("* {user} is {}", if online { "online" } else { "offline" })
        }
        Event::Unauthorized { reason } => eprintln!(
            "! the server no longer accepts this token ({reason}): sign in again for a new one"
        ),
        Event::Disconnected => eprintln!("* disconnected; reconnecting..."),
    }
}
