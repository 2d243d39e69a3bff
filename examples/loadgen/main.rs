//! Load generator for Rollcall (loopback only): real WebSocket clients against a real server.
//!
//! ```text
//! cargo run --release --example loadgen -- <scenario> [options]
//! ```
//!
//! By default it starts its own server (`rollcall` beside this program, `serve --addr
//! 127.0.0.1:0` with a temporary data directory; see `server.rs`), reads its CPU time and memory
//! from `/proc`, and stops it at the end; `--http URL --admin-token TOKEN` drives an external
//! one. Every run is bounded by a message count and `--deadline-secs`, prints a human summary
//! and, last, one JSON line of figures. Scenarios (details and results in BENCHMARKS.md):
//!
//! - `storm` (default): one group of `--members` (200), `--online` (40) of them connected: one
//!   sender (`--senders`) posts `--messages` (20,000) closed-loop with `--window` (64) unanswered
//!   sends, or open-loop at `--rate` msgs/s; every reader reads every message, sending a
//!   cumulative `read` every `--read-batch` (5) messages or after `--read-ms` (20) ms without
//!   one. Reports posted msgs/s, deliveries/s, send→sent, send→received-by-all and send→read
//!   count (receipt) latencies, frames per message from `/metrics`, CPU and peak RSS. The storm
//!   family (storm, ceiling, fanout) takes the group's receipt policy (`--receipts
//!   full|counts|off`) and `--private-readers N` (readers with `share_reads` off), and checks
//!   the receipts that result (`policy.rs`): none with `off`, exact read counts otherwise.
//! - `ceiling`: the storm against Rollcall, then the same clients against a bare relay (this
//!   program run as `loadgen relay`, a separate process), then the disk's fsyncs per second.
//! - `groups`: a sweep over the number of groups (`--sweep`, default 1,10,100,1000), the same
//!   total of messages spread over them. Without `--sweep` and with `--http`, the older single
//!   run: `--groups` (1,000) groups of `--members` (20) drawn from `--users` (200), `--messages`
//!   (100) per group, then a reconnect storm of every user (`--phase load|welcome|all`).
//! - `idle`: `--connections` (or `--sweep`) idle authenticated connections: memory per
//!   connection, time to accept them, `welcome` latency.
//! - `catchup`: a member offline while `--messages` (10,000) are posted, then it connects with
//!   the client module (`rollcall::client`) and syncs in pages of `--page`.
//! - `cold`: `--messages` (1,000,000) in `--groups` (1,000) groups, then a restart: time until
//!   `/healthz` answers and until the first `sync` returns.
//! - `fanout`: the storm at `--sweep` (10,100,1000,5000) members with 20% online.
//! - `remind`: one unread message in a group of `--members` (5,000) with `--online` (1,000)
//!   connected, then `remind`: time until every online non-reader got its `reminder`, the
//!   `count` in `reminded`, the server's CPU and memory for it.
//! - `presence`: `--connections` (10,000) users in groups of `--members` (20), all connected:
//!   presence frames per connect and per disconnect, then a restart and a mass reconnect (time
//!   until every `welcome`, presence frames, server CPU), and RSS.
//! - `typing`: one group of `--members` (500), all online, `--senders` (100) typing every
//!   `--typing-ms` (300): typing frames forwarded and dropped by the throttle, CPU per frame.
//! - `passivate`: `--groups` (100,000) groups of two with `--group-idle-secs` (5), each used
//!   once by one `send`, then idle (three rounds: after creating, again, after a restart): the
//!   server's RSS empty, at its peak and after every actor passivated, against the #14 target
//!   (empty + 64 MiB + `--cache-mb`); `--trim-probe` tells freed-but-kept memory from live.
//! - `biggroup`: one group with `--messages` (1,000,000), then `--restarts` (5) restarts, each
//!   timing the first `send` → `sent` (the actor starts on that path) and the RSS after it,
//!   against a group of `--baseline-messages` (1,000).
//! - `welcome`: one user in `--groups` (5,000) groups: the `welcome` frame's size and time
//!   with the server's `--welcome-groups` (200) and with all listed, and paging every group
//!   with `groups` (`--groups-page`, 500).
//! - `throughput`, `receipts`: the older scenarios (`--scenario NAME` still works).
//!
//! Counters come from the server's `/metrics`, so run against a server nobody else is using.
//! The storm clients speak the protocol directly (tokio-tungstenite) rather than through the
//! client module, so that the very same client code can drive the bare relay in `ceiling` and
//! so that every timestamp is taken where the frame is read.
//!
//! This file holds the command-line dispatch only: the flags are in `args.rs`, the servers in
//! `server.rs`, the admin API and `/metrics` in `admin.rs`, the figures in `report.rs`, the
//! clients' wire in `wire.rs` and `crowd.rs`, the pipelined senders that build data in
//! `posting.rs`; a file per scenario family after that.

use clap::Parser;

use crate::args::{Args, Scenario};
use crate::report::{fig, print_figures};
use crate::server::{attach, finish_server, start_server};

mod admin;
mod args;
mod backup;
mod biggroup;
mod catchup;
mod ceiling;
mod cold;
mod crowd;
mod fanout;
mod groups;
mod idle;
mod member;
mod older;
mod passivate;
mod policy;
mod posting;
mod presence;
mod remind;
mod report;
mod server;
mod storm;
mod storm_report;
mod typing;
mod welcome;
mod wire;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let scenario = args.scenario();
    if scenario == Scenario::Relay {
        return match ceiling::serve_relay(&args.relay_addr) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen relay: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let nofile = server::raise_nofile();
    fig("scenario", format!("{scenario:?}").to_lowercase());
    fig("nofile", nofile);
    let result = with_server(&args, |args| match scenario {
        Scenario::Groups if args.sweep.is_empty() && args.http_given() => groups::run(args),
        Scenario::Groups => groups::sweep(args),
        Scenario::Idle => idle::idle(args),
        Scenario::Catchup => catchup::catchup(args),
        Scenario::Cold => cold::cold(args),
        Scenario::Fanout => fanout::fanout(args),
        Scenario::Ceiling => ceiling::ceiling(args),
        Scenario::Remind => remind::remind(args),
        Scenario::Presence => presence::presence(args),
        Scenario::Typing => typing::typing(args),
        Scenario::Passivate => passivate::passivate(args),
        Scenario::Biggroup => biggroup::biggroup(args),
        Scenario::Backup => backup::backup(args),
        Scenario::Welcome => welcome::welcome(args),
        _ => storm::run(args),
    });
    let code = match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            fig("status", "incomplete");
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            fig("status", "error");
            fig("error", e.to_string());
            std::process::ExitCode::FAILURE
        }
    };
    print_figures();
    code
}

/// Runs `f` against the external server (`--http`) or against a server started for it.
fn with_server(args: &Args, f: impl FnOnce(&Args) -> Result<bool, Error>) -> Result<bool, Error> {
    if args.http.is_some() {
        return f(args);
    }
    // Scenarios that start servers themselves (several, or restarted) get none here.
    if matches!(
        args.scenario(),
        Scenario::Groups
            | Scenario::Fanout
            | Scenario::Cold
            | Scenario::Idle
            | Scenario::Ceiling
            | Scenario::Presence
            | Scenario::Passivate
            | Scenario::Biggroup
            | Scenario::Backup
            | Scenario::Welcome
    ) {
        return f(args);
    }
    let (server, _dir) = start_server(args)?;
    let mut args = args.clone();
    attach(&mut args, &server);
    let out = f(&args);
    finish_server(server);
    out
}
