//! Embedding: `server::run(config, shutdown)` runs in-process and stops when the future it was
//! given resolves — no signal involved — after writing everything it acknowledged.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use rollcall::config::Config;
use serde_json::{json, Value};

const ADMIN: &str = "embed-admin-token";

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Starts the server on its own actix system; sending on the returned channel stops it.
fn start(
    data: &std::path::Path,
    port: u16,
) -> (
    tokio::sync::oneshot::Sender<()>,
    thread::JoinHandle<std::io::Result<()>>,
) {
    let mut config = Config::new(data);
    config.addr = ([127, 0, 0, 1], port).into();
    config.admin_token = Some(ADMIN.into());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = thread::spawn(move || {
        actix_web::rt::System::new().block_on(rollcall::server::run(config, async move {
            let _ = stopped.await;
        }))
    });
    (stop, server)
}

fn admin(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let request = ureq::request(method, &format!("http://127.0.0.1:{port}{path}"))
        .set("Authorization", &format!("Bearer {ADMIN}"))
        .timeout(Duration::from_secs(10));
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    }
    .map_err(|e| format!("{method} {path}: {e}"))?;
    Ok(response.into_json().unwrap_or(Value::Null))
}

fn wait_until_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the embedded server never came up"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_embedded_server_stops_on_its_shutdown_future_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let (stop, server) = start(dir.path(), port);
    wait_until_up(port);
    for user in ["alice", "bob"] {
        admin(port, "POST", "/api/users", Some(json!({"id": user}))).expect("create a user");
    }
    admin(
        port,
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "members": ["alice", "bob"]})),
    )
    .expect("create a group");
    let sent = admin(
        port,
        "POST",
        "/api/groups/team/messages",
        Some(json!({"from": "alice", "body": "before the stop"})),
    )
    .expect("post a message");
    assert_eq!(sent["seq"], 1);

    stop.send(()).expect("the server is still waiting");
    let result = server.join().expect("the server thread");
    assert!(result.is_ok(), "run returned {result:?}");
    assert!(
        ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
            .call()
            .is_err(),
        "still answering after run returned"
    );

    // Started again on the same data, it has the acknowledged message.
    let (stop, server) = start(dir.path(), port);
    wait_until_up(port);
    let page = admin(port, "GET", "/api/groups/team/messages", None).expect("read messages");
    assert_eq!(page["messages"][0]["body"], "before the stop");
    assert_eq!(page["last_seq"], 1);
    stop.send(()).expect("the server is still waiting");
    assert!(server.join().expect("the server thread").is_ok());
}
