//! The web client with more groups than one `welcome` lists (`--welcome-groups`, issue #14), in
//! a real browser: Debian's Chromium through chromedriver (`fantoccini`), against a real server
//! process, on the driver of tests/browser.rs (`tests/browser_driver/`).
//!
//! What is checked, through what a person sees (the conversation list's buttons, their badges
//! and reminder flags, the tab title): a user in 4 groups whose welcome lists 2 sees all 4, with
//! the unread counts of all 4 in their badges and in the title, the reminder of a group the
//! welcome left out, a new message in such a group live; a reload with one of them in the
//! address opens it; and a group removed while the page was offline leaves the list only
//! once the whole listing is in.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (scripts/test.sh installs them);
//! without them the tests FAIL, they do not skip.

mod browser_driver;
mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

use browser_driver::*;

/// The conversation list: `[[group id, title, badge count, reminded]]` in page order.
const LIST_JS: &str =
    "return [...document.querySelectorAll('#conversations .conversation')].map(b => {
      const badge = b.querySelector('.badge');
      return [b.dataset.group, b.querySelector('.title').textContent,
              badge.hidden ? 0 : Number(badge.querySelector('.count').textContent || 0),
              b.dataset.reminded === 'true'];
    });";

/// The title and the page's unread count (`<html data-unread>`).
const TITLE_JS: &str =
    "return [document.title, Number(document.documentElement.dataset.unread || 0)];";

impl Page {
    async fn wait_list(&self, what: &str, expected: &Value) -> Value {
        self.wait_until(what, LIST_JS, vec![], |v| v == expected)
            .await
    }

    async fn wait_title(&self, title: &str, unread: u64) {
        self.wait_until(&format!("the title {title:?}"), TITLE_JS, vec![], |v| {
            *v == json!([title, unread])
        })
        .await;
    }
}

/// Four groups of alice's and bob's, in the order of their activity (the last one the most
/// recent): name and how many of bob's messages it gets.
const GROUPS: &[(&str, &str, u64)] = &[
    ("g1", "Alpha", 1),
    ("g2", "Bravo", 2),
    ("g3", "Charlie", 3),
    ("g4", "Delta", 1),
];

#[tokio::test]
async fn every_group_shows_when_the_welcome_lists_only_the_most_recent_ones() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start_with(&["--welcome-groups", "2"]);
    server.ensure_users(&["alice", "bob"]);
    for &(id, name, _) in GROUPS {
        server.admin_expect(
            "POST",
            "/api/groups",
            Some(json!({"id": id, "name": name, "members": ["alice", "bob"]})),
            201,
        );
    }
    for &(id, _, n) in GROUPS {
        for i in 1..=n {
            server.post(id, "bob", &format!("{id} message {i}"));
        }
        // Distinct times, so the welcome's two are g4 and g3.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // bob reminds alice of g1's message: a reminder in a group the welcome does not list.
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.welcome["more_groups"], true, "{}", bob.welcome);
    let reminded = bob.remind("g1", 1).await;
    assert_eq!(reminded["type"], "reminded", "{reminded}");
    let alice_welcome = server.connect("alice").await.welcome;
    let listed: Vec<&Value> = alice_welcome["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| &g["group"])
        .collect();
    assert_eq!(listed, vec!["g4", "g3"], "{alice_welcome}");

    // All four, by title, with their unread counts; g1 flagged; the title counts all 7.
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice
        .wait_list(
            "all four groups in the list",
            &json!([
                ["g1", "Alpha", 1, true],
                ["g2", "Bravo", 2, false],
                ["g3", "Charlie", 3, false],
                ["g4", "Delta", 1, false],
            ]),
        )
        .await;
    alice.wait_title("(7) Rollcall", 7).await;

    // A message in a group the welcome left out arrives live.
    let sent = bob.send_msg("g2", "b-late", "g2 late").await;
    assert_eq!(sent["seq"], 3, "{sent}");
    alice.wait_title("(8) Rollcall", 8).await;
    alice
        .wait_list(
            "g2's badge at 3",
            &json!([
                ["g1", "Alpha", 1, true],
                ["g2", "Bravo", 3, false],
                ["g3", "Charlie", 3, false],
                ["g4", "Delta", 1, false],
            ]),
        )
        .await;

    // A reload with a group the welcome does not list in the address opens it.
    alice.goto(&server.url("/#/c/g2")).await;
    alice.browser.refresh().await.expect("reloading");
    alice.wait_connection("online").await;
    alice
        .wait_until(
            "g2 open with its messages",
            "const open = document.querySelector('.conversation[aria-current=\"true\"]');
             return [open ? open.dataset.group : null, document.getElementById('pane-title').textContent,
                     [...document.querySelectorAll('#message-list li.msg .body')].map(b => b.textContent)];",
            vec![],
            |v| *v == json!(["g2", "Bravo", ["g2 message 1", "g2 message 2", "g2 late"]]),
        )
        .await;

    // While the page is offline, alice is removed from g1 (which no welcome lists now): the
    // server goes down, comes up on another port for the change, then back on the page's.
    let port = server.port;
    server.kill9();
    alice.wait_connection("offline").await;
    server.restart();
    server.admin_expect("DELETE", "/api/groups/g1/members/alice", None, 204);
    server.kill9();
    server.port = port;
    server.restart_on_same_port();
    alice.wait_connection("online").await;
    let list = alice
        .wait_until("g1 gone from the list", LIST_JS, vec![], |v| {
            v.as_array().is_some_and(|l| l.len() == 3)
        })
        .await;
    let ids: Vec<&Value> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| &c[0])
        .collect();
    assert_eq!(ids, vec!["g2", "g3", "g4"], "{list}");
    alice.close().await;
}
