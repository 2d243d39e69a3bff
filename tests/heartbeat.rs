//! Heartbeat: the server pings every `--heartbeat-ms` and closes a connection from which nothing
//! arrived for `--client-timeout-ms`; a client that answers pings stays connected.

mod common;

use std::time::{Duration, Instant};

use common::{raw_ws_upgrade, token, Server, TIMEOUT};
use tokio::io::AsyncReadExt;

const HEARTBEAT_MS: u64 = 250;
const CLIENT_TIMEOUT_MS: u64 = 1500;

/// Performs the WebSocket upgrade by hand, then never sends another byte; returns how long after
/// the upgrade the server ended the connection.
async fn silent_connection_lifetime(port: u16, token: &str) -> Duration {
    let (mut stream, _first_frames) = raw_ws_upgrade(port, token).await;
    let mut buf = [0u8; 4096];
    let upgraded = Instant::now();
    // Read (pings, welcome, finally a close frame) until EOF, answering nothing.
    loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Err(_) => panic!("a silent connection stayed open {TIMEOUT:?} past its timeout"),
            Ok(Ok(0)) | Ok(Err(_)) => return upgraded.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_live_ones_kept() {
    let server = Server::start_with(&[
        "--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
        "--client-timeout-ms",
        &CLIENT_TIMEOUT_MS.to_string(),
    ]);
    server.create_group("team", &["alice", "bob"]);
    // bob's client reads all the time, so it answers every ping, but sends no frame of its own.
    let mut bob = server.connect("bob").await;
    let bob_since = Instant::now();

    let alice_token = token("alice");
    let silent = silent_connection_lifetime(server.port, &alice_token);
    let lifetime = bob.pump_until(silent).await;
    assert!(
        lifetime >= Duration::from_millis(CLIENT_TIMEOUT_MS - HEARTBEAT_MS),
        "closed after {lifetime:?}, before the client timeout"
    );

    // bob has now been connected longer than the timeout, with only pongs going out; keep him
    // answering pings for one more timeout, then he must still be served.
    let more = Duration::from_millis(CLIENT_TIMEOUT_MS);
    bob.pump_until(tokio::time::sleep(more)).await;
    assert!(bob_since.elapsed() > Duration::from_millis(2 * CLIENT_TIMEOUT_MS));
    bob.ping().await;
    let mut alice = server.connect("alice").await;
    alice.send_msg("team", "hb", "are you there?").await;
    assert_eq!(bob.recv_msg("team").await["body"], "are you there?");
}
