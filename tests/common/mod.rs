//! Test harness shared by every integration test: the constants every test server runs with, and
//! the re-exports that let a test `use common::{...}` whatever it needs from the parts:
//!
//! - [`server`]: a real `rollcall` server process on a temp data dir (starting, restarting,
//!   killing, its stdout lines and its log);
//! - [`ws`]: a raw WebSocket client that speaks JSON frames;
//! - [`http`]: HTTP requests to the server, the admin API helpers and the error-body helpers;
//! - [`auth`]: user tokens signed with the test servers' secret;
//! - [`controls`]: receipt policy, private reads, reminders and mark-unread helpers;
//! - [`raw_store`]: writing a stopped server's database behind its back (corruption on purpose).
//!
//! The server runs as a separate process (not in-process) so that durability tests can kill it with
//! SIGKILL and start it again on the same data dir, exactly as a crash would. Each test starts its
//! own server on an ephemeral port, so tests run in parallel without sharing state.

#![allow(dead_code, unused_imports)]

use std::time::Duration;

pub mod auth;
pub mod controls;
pub mod http;
pub mod postgres;
pub mod raw_store;
pub mod rust_client;
pub mod server;
pub mod ws;

pub use auth::{now_secs, sign, token, token_with};
pub use http::{http_error_code, member_of};
pub use postgres::{on_postgres, sled_only};
pub use server::{Server, ServerOptions};
pub use ws::{raw_ws_upgrade, raw_ws_upgrade_over, seq, seqs, Client, WireEnd};

/// The admin bearer token every test server is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token-5f1c";
/// The HS256 secret every test server signs and checks user tokens with.
pub const JWT_SECRET: &str = "test-jwt-secret-9d2e-0123456789abcdef";
/// How long any single expected event (a frame, a server start, an HTTP answer) may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
