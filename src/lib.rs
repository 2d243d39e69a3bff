//! Rollcall: a self-hosted group-chat server with durable, ordered group messages and read
//! receipts derived from per-member cursors.
//!
//! The components, from the socket inwards (ARCHITECTURE.md has the full map and invariants):
//!
//! - [`http`]: the admin API, the `/ws` upgrade, `/healthz`, `/metrics` and the web client.
//! - [`web`]: the built-in web client (HTML, CSS, JavaScript embedded in the binary).
//! - [`session`]: one actor per WebSocket connection, relaying frames to group actors.
//! - [`registry`]: group id → group actor (started lazily from storage); user id → sessions.
//! - [`group`]: one actor per group, the only writer of that group's messages and cursors; it
//!   assigns seqs, waits for durability, pushes, and aggregates receipts on a timer.
//! - [`commit`]: group commit; one flush answers every write queued before it.
//! - [`store`]: the storage boundary (a trait) and its sled implementation.
//! - [`protocol`]: the wire frames, the only place that knows JSON.
//! - [`auth`], [`config`], [`metrics`], [`ids`]: tokens, knobs, counters, identifier types.
//! - [`server`]: start-up and shutdown, used by the `rollcall` binary.
//! - [`demo`]: `serve --demo`: seeds users, a group and some history into an empty data dir.
//! - [`client`]: the Rust client (reconnect, resend by `client_id`, dedupe, batched acks,
//!   receipts), used by the tests and examples.

pub mod auth;
pub mod client;
pub mod commit;
pub mod config;
pub mod demo;
pub mod group;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod store;
pub mod web;
