//! Half-open connections: a client that stops reading while pushes pile up in its socket is
//! closed by the server within `--client-timeout-ms` plus a few seconds, and what it held (its
//! session, its socket, its place under `--max-sessions-per-user`) is freed, while the other
//! members are served as usual.
//!
//! The stalled client is a real socket on loopback, where the peer's kernel keeps acknowledging
//! (its receive window is just zero): the case the heartbeat alone cannot catch, because the
//! session actor is not run while its socket takes no more bytes.

mod common;

use std::time::{Duration, Instant};

use common::{raw_ws_upgrade_over, seqs, token, Server, TIMEOUT};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const HEARTBEAT_MS: u64 = 500;
const CLIENT_TIMEOUT_MS: u64 = 2000;
/// The "few seconds" PROTOCOL.md allows past the client timeout.
const SLACK: Duration = Duration::from_secs(4);

/// Connects with a small receive buffer and performs the WebSocket upgrade; the caller then
/// reads nothing (not even `welcome`) and sends nothing.
async fn stalled_reader(port: u16, token: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("setting SO_RCVBUF");
    let stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connecting");
    raw_ws_upgrade_over(stream, port, token).await.0
}

/// The inode of the server's end of the loopback connection from `client_port`, read from
/// `/proc/net/tcp` (both ends of a loopback connection are listed there).
fn server_socket_inode(server_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (port_of(local) == Some(server_port) && port_of(remote) == Some(client_port))
            .then(|| inode.to_string())
    })
}

/// Whether the server process still has a file descriptor on the socket with this inode.
fn server_holds_socket(server: &Server, inode: &str) -> bool {
    let pid = server.pid().expect("a running server");
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing the server's descriptors")
        .filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == &*wanted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_its_session_freed() {
    let server = Server::start_with(&[
        "--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
        "--client-timeout-ms",
        &CLIENT_TIMEOUT_MS.to_string(),
        "--session-queue",
        "16",
        "--max-sessions-per-user",
        "1",
    ]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    let mut bob = stalled_reader(server.port, &token("bob")).await;
    let bob_port = bob.local_addr().expect("bob's address").port();
    let inode =
        server_socket_inode(server.port, bob_port).expect("the server's end of bob's socket");
    let deadline = Instant::now() + TIMEOUT;
    while server.metric("rollcall_sessions") < 3 {
        assert!(Instant::now() < deadline, "bob's session did not open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // ~6 MB of pushes: far more than bob's socket buffers hold. carol reads them as they come.
    const N: u64 = 100;
    let body = "x".repeat(64_000);
    let carol_reads = tokio::spawn(async move {
        let msgs = carol.recv_msgs("team", N as usize).await;
        (carol, seqs(&msgs))
    });
    let stalled_since = Instant::now();
    for sent in alice.send_in_windows("team", N, 6, &body).await {
        assert_eq!(sent["duplicate"], false);
    }
    let (mut carol, carol_seqs) = carol_reads.await.expect("carol's reader");
    assert_eq!(
        carol_seqs,
        (1..=N).collect::<Vec<_>>(),
        "a reading member missed messages while another one was stalled"
    );
    eprintln!("sending took {:?}", stalled_since.elapsed());

    // The server gives up on bob: his session is gone (/metrics) and so is the server's socket.
    // alice and carol keep reading meanwhile, so they answer the heartbeat.
    let bound = Duration::from_millis(CLIENT_TIMEOUT_MS) + SLACK;
    let waiting = async {
        let (mut session_gone, mut socket_gone) = (None, None);
        while session_gone.is_none() || socket_gone.is_none() {
            let waited = stalled_since.elapsed();
            if session_gone.is_none() && server.metric("rollcall_sessions") == 2 {
                session_gone = Some(waited);
            }
            if socket_gone.is_none() && !server_holds_socket(&server, &inode) {
                socket_gone = Some(waited);
            }
            assert!(
                waited < bound,
                "a client that stopped reading was still connected {waited:?} after the pushes \
                 began (session closed after {session_gone:?}, socket after {socket_gone:?}; \
                 the bound is the client timeout {CLIENT_TIMEOUT_MS} ms + {SLACK:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (session_gone, socket_gone)
    };
    let (session_gone, socket_gone) = alice.pump_until(carol.pump_until(waiting)).await;
    eprintln!(
        "bob's session closed {session_gone:?} and the server's socket {socket_gone:?} after \
         the pushes began"
    );

    // When bob reads again he gets what was buffered, then the end of the connection.
    let mut buf = vec![0u8; 64 * 1024];
    let mut n_bytes = 0;
    let end = loop {
        match tokio::time::timeout(TIMEOUT, bob.read(&mut buf)).await {
            Err(_) => panic!("bob's connection is still open after {n_bytes} bytes"),
            Ok(Ok(0)) => break "end of stream".to_string(),
            Ok(Ok(n)) => n_bytes += n,
            Ok(Err(e)) => break e.to_string(),
        }
    };
    eprintln!("bob read {n_bytes} bytes, then: {end}");

    // His place under --max-sessions-per-user 1 is free: he connects again and catches up.
    let mut bob = server.connect("bob").await;
    let team = bob.welcome_group("team").expect("team").clone();
    assert_eq!(team["last_seq"], N, "{team}");
    let delivered = team["delivered"].as_u64().expect("delivered");
    let rest = bob.sync_all_in_pages("team", delivered, 10).await;
    assert_eq!(seqs(&rest), (delivered + 1..=N).collect::<Vec<_>>());

    // The others were never disturbed.
    alice.ping().await;
    carol.ping().await;
    alice.send_msg("team", "after", "still here").await;
    assert_eq!(carol.recv_msg("team").await["body"], "still here");
    assert_eq!(bob.recv_msg("team").await["body"], "still here");
}
