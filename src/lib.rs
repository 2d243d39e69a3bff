//! Rollcall: a self-hosted group-chat server with durable, ordered group messages and read
//! receipts derived from per-member cursors.
//!
//! The components, top to bottom (a module imports only those below it, and those beside;
//! ARCHITECTURE.md has the full map and invariants, `tests/layering.rs` checks the order):
//!
//! - `server`, `demo`: start-up and shutdown; `serve --demo` seeding.
//! - `http`: the admin API, the `/ws` upgrade, `/healthz`, `/metrics` and the web client's files
//!   (embedded by `http/embedded.rs` from `src/web/`).
//! - `session`: one actor per WebSocket connection, one function per client frame type;
//!   `backup`: the online backup (a snapshot written group by group through the group actors).
//! - `registry`: group id → group actor (started lazily from storage); cross-group operations.
//! - [`group`]: one actor per group, the only writer of that group's messages and cursors; it
//!   assigns seqs, waits for durability, pushes, and aggregates receipts on a timer.
//! - [`presence`]: who is online, and the handles a group pushes through; [`commit`]: group
//!   commit, one flush answering every write queued before it.
//! - [`store`]: the storage boundary (a trait) and its sled implementation.
//! - Beside all of them: [`protocol`] (the wire frames, the only place that knows JSON),
//!   [`ids`], [`config`], [`metrics`]; [`auth`] (tokens) sits just above the store.
//! - [`client`]: the Rust client (reconnect, over several URLs if given, resend by `client_id`,
//!   dedupe, batched acks, receipts), used by the tests and examples; it uses only `protocol`
//!   and `ids`.
//!
//! The public surface is what an embedder needs ([`server::run`], [`config`], [`protocol`],
//! [`client`], [`ids`], [`auth`] for the `token` command) plus the internals that the
//! property tests and benchmarks drive directly (hidden from the docs).

pub mod auth;
pub mod client;
pub mod config;
pub mod ids;
pub mod protocol;
pub mod server;

// Driven directly by tests/fuzz_group.rs and benches/hot_paths.rs; not an embedding API.
#[doc(hidden)]
pub mod commit;
#[doc(hidden)]
pub mod group;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod presence;
#[doc(hidden)]
pub mod registry;
#[doc(hidden)]
pub mod store;

mod accounts;
mod backup;
mod demo;
mod http;
mod session;
