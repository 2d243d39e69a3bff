//! The web client given a second server (`/?servers=host:port`), in a real browser: Debian's
//! Chromium through chromedriver (`fantoccini`), on the driver of tests/browser.rs
//! (`tests/browser_driver/`), against two real server processes.
//!
//! The page is opened on server A with B in `?servers=`; A is killed; the page must go on to B
//! by itself (its connection line names B), and a message typed then must be stored there (a
//! member connected to B receives it, and the page shows it sent, with B's seq). The two servers
//! share the JWT secret but not their data: each has alice, bob and `team`, seeded apart.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (scripts/test.sh installs them);
//! without them the test FAILS, it does not skip.

mod browser_driver;
mod common;

use common::{token, Server};
use serde_json::{json, Value};

use browser_driver::*;

/// The connection line: `[state, text]`.
const CONNECTION_JS: &str = "const el = document.getElementById('connection');
    return [el.dataset.state, el.textContent];";

/// The open conversation's messages as `[seq, body, pending]`, in page order.
const MESSAGES_JS: &str = "return [...document.querySelectorAll('#message-list li.msg')]
    .map(li => [Number(li.dataset.seq || 0), li.querySelector('.body').textContent,
                li.classList.contains('pending')]);";

#[tokio::test]
async fn the_page_moves_to_the_next_server_when_its_own_dies() {
    let _serial = SERIAL.lock().await;
    let mut a = Server::start();
    let b = Server::start();
    for server in [&a, &b] {
        server.create_group("team", &["alice", "bob"]);
    }
    let b_host = format!("127.0.0.1:{}", b.port);

    let mut driver = Driver::start();
    let alice = driver.page("alice").await;
    alice
        .goto(&a.url(&format!("/?token={}&servers={b_host}", token("alice"))))
        .await;
    // On its own server first: the line says just "Online".
    alice
        .wait_until("online on A", CONNECTION_JS, vec![], |v| {
            *v == json!(["online", "Online"])
        })
        .await;
    alice.open_conversation("team").await;

    a.kill9();
    let on_b = format!("Online ({b_host})");
    alice
        .wait_until("online on B", CONNECTION_JS, vec![], |v| {
            *v == json!(["online", on_b])
        })
        .await;

    // A message typed now is stored on B: bob, on B, gets it, and the page shows it sent.
    let mut bob = b.connect("bob").await;
    let text = "Still here, on the standby.";
    alice.type_into("#composer-input", text).await;
    alice.click("#send").await;
    let pushed = bob.recv_msg("team").await;
    assert_eq!(pushed["body"], text, "{pushed}");
    assert_eq!(pushed["from"], "alice", "{pushed}");
    let seq = pushed["seq"].clone();
    alice
        .wait_until(
            "the message shown sent",
            MESSAGES_JS,
            vec![],
            |v: &Value| *v == json!([[seq, text, false]]),
        )
        .await;

    // And what bob sends on B shows live.
    bob.send_msg("team", "b-1", "Got it.").await;
    alice
        .wait_until("bob's answer", MESSAGES_JS, vec![], |v: &Value| {
            v.as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|row| row[1] == "Got it." && row[2] == false)
            })
        })
        .await;
    alice.close().await;
}
