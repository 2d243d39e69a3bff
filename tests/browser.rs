//! The built-in web client in a real browser: Debian's Chromium, driven through chromedriver
//! (WebDriver, with the `fantoccini` crate), against a real server process.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver` packages), which `scripts/test.sh` installs. Without them these tests FAIL
//! with a message saying so: a browser test that silently skips proves nothing.
//!
//! Each test starts its own chromedriver on a free port and one Chromium per user, each with a
//! fresh profile directory. The tests take a lock so that only one runs at a time: Chromium is
//! heavy, and the machines we test on have two cores. Pages are observed through small
//! JavaScript queries of the DOM (`data-*` attributes the page sets for exactly that) and
//! driven with real clicks and key presses.
//!
//! Screenshots go to `target/browser-artifacts/`: the receipt view (`receipts.png`), a
//! narrow-screen conversation (`narrow.png`), a backlog opened at its "New messages" line
//! (`new-messages.png`) and a reminded message (`reminder.png`, and the conversation list's
//! flag in `reminder-list.png`). With `ROLLCALL_UPDATE_SCREENSHOT=1` the README's are also
//! copied to `docs/` (`screenshot.png`, `new-messages.png`, `reminder.png`).

mod browser_driver;
mod common;

use std::time::{Duration, Instant};

use common::Server;
use fantoccini::Locator;
use serde_json::{json, Value};

use browser_driver::*;

/// More of the page, for these tests.
impl Page {
    /// The open conversation's messages as `[seq, from, body]`, in page order.
    async fn messages(&self) -> Vec<(u64, String, String)> {
        let value = self.js(MESSAGES_JS, vec![]).await;
        parse_messages(&value)
    }

    /// Waits until the open conversation shows exactly `bodies` (in order), each once, with
    /// gapless seqs, and nothing pending.
    async fn wait_messages(&self, bodies: &[&str]) -> Vec<(u64, String, String)> {
        self.wait_messages_ordered(bodies, true).await
    }

    /// Like `wait_messages`, for messages whose order depends on a race (a resend after a
    /// reconnect and another client's send).
    async fn wait_messages_in_any_order(&self, bodies: &[&str]) -> Vec<(u64, String, String)> {
        self.wait_messages_ordered(bodies, false).await
    }

    async fn wait_messages_ordered(
        &self,
        bodies: &[&str],
        ordered: bool,
    ) -> Vec<(u64, String, String)> {
        let mut expected: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
        if !ordered {
            expected.sort();
        }
        let value = self
            .wait_until(
                &format!("exactly the messages {expected:?}"),
                MESSAGES_JS,
                vec![],
                |v| {
                    let mut shown: Vec<String> =
                        parse_messages(v).into_iter().map(|(_, _, b)| b).collect();
                    if !ordered {
                        shown.sort();
                    }
                    shown == expected
                },
            )
            .await;
        let shown = parse_messages(&value);
        let seqs: Vec<u64> = shown.iter().map(|(s, _, _)| *s).collect();
        let first = seqs.first().copied().unwrap_or(1);
        let gapless: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(seqs, gapless, "{}: seqs with a gap or a repeat", self.name);
        let pending = self
            .js(
                "return document.querySelectorAll('#message-list li.pending').length;",
                vec![],
            )
            .await;
        assert_eq!(pending, 0, "{}: a send is still pending", self.name);
        shown
    }

    async fn wait_badge(&self, group: &str, n: u64) {
        self.wait_until(
            &format!("the badge of {group} to show {n}"),
            BADGE_JS,
            vec![json!(group)],
            |v| v.as_u64() == Some(n),
        )
        .await;
    }

    /// Waits until my message with `body` shows receipt counts that `accept` takes; returns
    /// `{read, delivered, recipients, text}`.
    async fn wait_receipt(&self, body: &str, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, RECEIPT_JS, vec![json!(body)], |v| {
            !v.is_null() && accept(v)
        })
        .await
    }

    /// The seqs of the open conversation's messages at least half on screen now.
    async fn on_screen(&self) -> Vec<u64> {
        let value = self.js(ON_SCREEN_JS, vec![]).await;
        value
            .as_array()
            .map(|seqs| seqs.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    }
}

const ON_SCREEN_JS: &str =
    "const root = document.getElementById('messages').getBoundingClientRect();
    return [...document.querySelectorAll('#message-list li.msg[data-seq]')].filter(li => {
      const r = li.getBoundingClientRect();
      const h = Math.min(r.bottom, root.bottom) - Math.max(r.top, root.top);
      return h > 0 && (h >= r.height / 2 || h >= root.height / 2);
    }).map(li => Number(li.dataset.seq));";

/// A conversation in the list: `{reminded, marked, flag, dot}` (its `data-*` and what shows).
const CONVERSATION_JS: &str = "const b = document.querySelector(
      `.conversation[data-group=\"${arguments[0]}\"]`);
    if (!b) return null;
    const badge = b.querySelector('.badge');
    return {reminded: b.dataset.reminded === 'true', marked: b.dataset.marked === 'true',
            flag: !b.querySelector('.flag').hidden, dot: !badge.hidden && badge.classList.contains('dot')};";

/// The read mark of `user` in `group`, from the admin API.
fn read_mark(server: &Server, group: &str, user: &str) -> u64 {
    server.member(group, user)["read"].as_u64().unwrap_or(0)
}

/// Waits until the stored read mark of `user` in `group` is `seq`.
async fn wait_read_mark(server: &Server, group: &str, user: &str, seq: u64) {
    let started = Instant::now();
    loop {
        let read = read_mark(server, group, user);
        if read == seq {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{user}'s read mark in {group} stayed {read}, not {seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `user`'s delivery mark in `group` reaches `seq` (the page got the messages).
async fn wait_delivered(server: &Server, group: &str, user: &str, seq: u64) {
    let started = Instant::now();
    while server.member(group, user)["delivered"]
        .as_u64()
        .unwrap_or(0)
        < seq
    {
        assert!(
            started.elapsed() < WAIT,
            "{user} never acknowledged {seq} in {group}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Longer than the page's read batching (300 ms) and the receipt tick (100 ms in these tests):
/// a `read` the page was going to send would have arrived by then.
const QUIET: Duration = Duration::from_millis(1500);

const MESSAGES_JS: &str = "return [...document.querySelectorAll('#message-list li.msg[data-seq]')]
    .map(li => [Number(li.dataset.seq), li.dataset.from, li.querySelector('.body').textContent]);";

const BADGE_JS: &str = "const b = document.querySelector(
      `.conversation[data-group=\"${arguments[0]}\"] .badge`);
    return b && !b.hidden ? Number(b.querySelector('.count').textContent) : 0;";

const RECEIPT_JS: &str = "const li = [...document.querySelectorAll('#message-list li.msg.mine[data-seq]')]
      .find(li => li.querySelector('.body').textContent === arguments[0]);
    const r = li && li.querySelector('.receipt');
    if (!r || r.dataset.read === undefined) return null;
    return {read: Number(r.dataset.read), delivered: Number(r.dataset.delivered),
            recipients: Number(r.dataset.recipients), text: r.textContent, seq: Number(li.dataset.seq)};";

const READERS_JS: &str = "const d = document.getElementById('readers-dialog');
    // Open, and the `readers` reply rendered (the dialog opens before it arrives).
    if (!d.open || !document.querySelector('#readers-body section')) return null;
    return ['read', 'delivered', 'unread'].map(k =>
      [...document.querySelectorAll(`#readers-body .readers-${k} li[data-user]`)]
        .map(li => li.dataset.user));";

fn parse_messages(value: &Value) -> Vec<(u64, String, String)> {
    value
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    (
                        row[0].as_u64().unwrap_or(0),
                        row[1].as_str().unwrap_or_default().to_string(),
                        row[2].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Creates users with display names, then a group of them.
fn setup(server: &Server, group: &str, users: &[(&str, &str)]) {
    for (id, name) in users {
        server.admin_expect(
            "POST",
            "/api/users",
            Some(json!({"id": id, "name": name})),
            201,
        );
    }
    let ids: Vec<&str> = users.iter().map(|(id, _)| *id).collect();
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": group, "name": "Release team", "members": ids})),
        201,
    );
}

/// The bodies stored in a group, in seq order.
fn stored_bodies(server: &Server, group: &str) -> Vec<String> {
    let page = server.admin_expect(
        "GET",
        &format!("/api/groups/{group}/messages?after=0&limit=1000"),
        None,
        200,
    );
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

const TEAM: &[(&str, &str)] = &[
    ("alice", "Alice"),
    ("bob", "Bob"),
    ("carol", "Carol"),
    ("dave", "Dave"),
];

#[tokio::test]
async fn two_users_chat_and_the_sender_sees_who_has_read() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", TEAM);
    server.post("team", "bob", "Morning! Release check at noon.");
    server.post("team", "carol", "The changelog is ready for review.");
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    let bob = driver.open_as(&server, "bob").await;
    alice.wait_connection("online").await;
    bob.wait_connection("online").await;
    // Carol is online with another client: she receives, but does not read.
    let mut carol = server.connect("carol").await;

    alice.open_conversation("team").await;
    alice
        .wait_messages(&[
            "Morning! Release check at noon.",
            "The changelog is ready for review.",
        ])
        .await;
    let text = "Tagging v1.0 now. Shout if anything blocks it.";
    alice.type_into("#composer-input", text).await;
    alice.click("#send").await;
    let receipt = alice
        .wait_receipt(text, "the new message's receipt", |r| r["recipients"] == 3)
        .await;
    assert_eq!(receipt["read"], 0, "{receipt}");
    let seq = receipt["seq"].as_u64().expect("a seq");
    assert_eq!(seq, 3);

    // Bob has not opened the group: two unread messages from others, live.
    bob.wait_badge("team", 2).await;
    bob.open_conversation("team").await;
    let shown = bob
        .wait_messages(&[
            "Morning! Release check at noon.",
            "The changelog is ready for review.",
            text,
        ])
        .await;
    assert_eq!(shown[2].1, "alice");
    bob.wait_badge("team", 0).await;

    // Bob's page marked it read: Alice's count climbs.
    let receipt = alice
        .wait_receipt(text, "Seen by 1 of 3", |r| r["read"] == 1)
        .await;
    assert!(
        receipt["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Seen by 1 of 3")),
        "{receipt}"
    );
    // Carol's client acknowledges delivery: delivered climbs, read does not.
    carol
        .send_json(json!({"type": "ack", "group": "team", "seq": seq}))
        .await;
    let receipt = alice
        .wait_receipt(text, "delivered to 2", |r| {
            r["delivered"] == 2 && r["read"] == 1
        })
        .await;
    assert_eq!(
        receipt["text"], "Seen by 1 of 3 \u{b7} delivered to 1 more",
        "the words add up: one seen, one more has it, one has not"
    );

    // The lists: Bob read it, Carol received it, Dave has not received it.
    alice
        .click(&format!("#message-list li[data-seq=\"{seq}\"] .receipt"))
        .await;
    let lists = alice
        .wait_until("the readers lists", READERS_JS, vec![], |v| !v.is_null())
        .await;
    assert_eq!(lists, json!([["bob"], ["carol"], ["dave"]]));
    alice
        .screenshot("receipts.png", Some("screenshot.png"))
        .await;
    alice.click("#readers-close").await;

    // Bob answers with the keyboard (Enter sends); Alice sees it arrive, announced.
    let reply = "Nothing blocking from me.";
    bob.type_into("#composer-input", &format!("{reply}\u{E007}"))
        .await;
    let shown = alice
        .wait_messages(&[
            "Morning! Release check at noon.",
            "The changelog is ready for review.",
            text,
            reply,
        ])
        .await;
    assert_eq!(shown[3].1, "bob");
    alice
        .wait_until(
            "the announcement of Bob's message",
            "return document.getElementById('live').textContent;",
            vec![],
            |v| v.as_str().is_some_and(|t| t.contains(reply)),
        )
        .await;

    // A direct conversation, opened from the page.
    alice.type_into("#direct-input", "bob").await;
    alice.click("#direct-form button[type=\"submit\"]").await;
    alice
        .wait_until(
            "the direct conversation open",
            "return document.getElementById('pane-title').textContent;",
            vec![],
            |v| v == "Bob",
        )
        .await;
    alice.type_into("#composer-input", "Lunch after?").await;
    alice.click("#send").await;
    alice.wait_messages(&["Lunch after?"]).await;
    bob.wait_badge("dm:alice:bob", 1).await;
    assert_eq!(stored_bodies(&server, "dm:alice:bob"), ["Lunch after?"]);

    carol.close().await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_second_tab_of_the_same_user_clears_its_badge_when_the_first_reads() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", &TEAM[..2]);
    let mut driver = Driver::start();
    let first = driver.open_as(&server, "bob").await;
    first.wait_connection("online").await;

    // The second tab shares the first's localStorage: it is signed in as Bob at once. (A pasted
    // token, and a refused one, are tested in tests/browser_accounts.rs.)
    let tab = first.browser.new_window(true).await.expect("opening a tab");
    let first_handle = first.browser.window().await.expect("the first tab");
    first
        .browser
        .switch_to_window(tab.handle.clone())
        .await
        .expect("switching tabs");
    let second = Page {
        browser: first.browser.clone(),
        name: "bob (second tab)".into(),
        driver_port: first.driver_port,
    };
    second.goto(&server.url("/")).await;
    second.wait_connection("online").await;

    server.post("team", "alice", "Can someone review #42?");
    let seq = server.post("team", "alice", "It is small, promise.");
    second.wait_badge("team", 2).await;
    first
        .browser
        .switch_to_window(first_handle.clone())
        .await
        .expect("switching tabs");
    first.wait_badge("team", 2).await;

    // Reading in the second tab clears the first tab's badge (read_sync).
    first
        .browser
        .switch_to_window(tab.handle.clone())
        .await
        .expect("switching tabs");
    // Narrow screen: one column at a time.
    second
        .browser
        .set_window_size(420, 800)
        .await
        .expect("resizing");
    second.open_conversation("team").await;
    second
        .wait_messages(&["Can someone review #42?", "It is small, promise."])
        .await;
    let sidebar_shown = second
        .js(
            "return getComputedStyle(document.getElementById('sidebar')).display !== 'none';",
            vec![],
        )
        .await;
    assert_eq!(sidebar_shown, false, "narrow screens show one column");
    let png = second.browser.screenshot().await.expect("a screenshot");
    std::fs::write(artifacts_dir().join("narrow.png"), png).expect("saving the screenshot");
    second.wait_badge("team", 0).await;
    first
        .browser
        .switch_to_window(first_handle)
        .await
        .expect("switching tabs");
    first.wait_badge("team", 0).await;

    // The server has the read mark too.
    let started = Instant::now();
    while server.member("team", "bob")["read"] != seq {
        assert!(
            started.elapsed() < WAIT,
            "bob's read mark never reached {seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.close().await;
}

#[tokio::test]
async fn after_a_server_restart_the_page_shows_no_duplicate_and_no_gap() {
    let _serial = SERIAL.lock().await;
    let mut server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", &TEAM[..2]);
    for body in ["one", "two", "three"] {
        server.post("team", "bob", body);
    }
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    alice.wait_messages(&["one", "two", "three"]).await;
    alice.type_into("#composer-input", "four").await;
    alice.click("#send").await;
    alice.wait_messages(&["one", "two", "three", "four"]).await;

    // The server crashes; the page notices, and a message written meanwhile waits.
    server.kill9();
    alice.wait_connection("offline").await;
    alice.type_into("#composer-input", "five").await;
    alice.click("#send").await;
    alice
        .wait_until(
            "the pending message",
            "return document.querySelector('#message-list li.pending .status')?.textContent ?? null;",
            vec![],
            |v| v.as_str().is_some_and(|t| t.starts_with("Waiting")),
        )
        .await;

    // Back on the same port; others write while the page is still reconnecting.
    server.restart_on_same_port();
    server.post("team", "bob", "six");
    alice.wait_connection("online").await;
    server.post("team", "bob", "seven");
    let all = ["one", "two", "three", "four", "five", "six", "seven"];
    let shown = alice.wait_messages_in_any_order(&all).await;
    assert_eq!(shown.len(), 7);
    let mut stored = stored_bodies(&server, "team");
    stored.sort();
    let mut expected = all.map(String::from).to_vec();
    expected.sort();
    assert_eq!(stored, expected, "the resent message was stored once");
    let shown_bodies: Vec<String> = shown.iter().map(|(_, _, b)| b.clone()).collect();
    assert_eq!(
        shown_bodies,
        stored_bodies(&server, "team"),
        "page order is seq order"
    );

    // A quick second restart (the page may not even see it down): still exact.
    server.restart_on_same_port();
    server.post("team", "bob", "eight");
    let mut all = all.to_vec();
    all.push("eight");
    alice.wait_messages_in_any_order(&all).await;
    let messages = alice.messages().await;
    assert_eq!(messages.last().map(|m| m.0), Some(8));

    // A long conversation without unread messages (her own notes) opens at its latest page
    // and scrolls back through history.
    server.create_group("archive", &["alice", "bob"]);
    let bodies: Vec<String> = (1..=60).map(|i| format!("note {i}")).collect();
    for body in &bodies {
        server.post("archive", "alice", body);
    }
    alice.open_conversation("archive").await;
    let latest: Vec<&str> = bodies[10..].iter().map(String::as_str).collect();
    let shown = alice.wait_messages(&latest).await;
    assert_eq!(shown.first().map(|m| m.0), Some(11));
    let older_shown = alice
        .js("return !document.getElementById('older').hidden;", vec![])
        .await;
    assert_eq!(older_shown, true, "no way to load earlier messages");
    // Scrolling to the top loads the earlier page (as the button would).
    alice
        .js("document.getElementById('messages').scrollTop = 0;", vec![])
        .await;
    let every: Vec<&str> = bodies.iter().map(String::as_str).collect();
    alice.wait_messages(&every).await;
    alice.close().await;
}

#[tokio::test]
async fn a_backlog_opens_at_the_first_unread_and_only_what_was_on_screen_is_read() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", &TEAM[..3]);
    let bodies: Vec<String> = (1..=40)
        .map(|i| format!("Backlog item {i}: a status line to catch up on."))
        .collect();
    for body in &bodies {
        server.post("team", "bob", body);
    }
    let mut driver = Driver::start();
    let bob = driver.open_as(&server, "bob").await;
    let alice = driver.open_as(&server, "alice").await;
    alice
        .browser
        .set_window_size(900, 560)
        .await
        .expect("resizing");
    alice.wait_connection("online").await;
    alice.wait_badge("team", 40).await;
    alice.open_conversation("team").await;
    let every: Vec<&str> = bodies.iter().map(String::as_str).collect();
    alice.wait_messages(&every).await;

    // It opens at the first unread message, under "New messages", with "Jump to latest".
    let first = alice
        .wait_until(
            "the New messages line above message 1",
            "const s = document.querySelector('#message-list .separator');
             return s && s.nextElementSibling ? Number(s.nextElementSibling.dataset.seq) : null;",
            vec![],
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(first, 1, "the line goes above the first unread message");
    let jump = alice
        .js("return !document.getElementById('jump').hidden;", vec![])
        .await;
    assert_eq!(jump, true, "no Jump to latest");

    // Only what was on screen is read: the stored mark is the newest message shown.
    let started = Instant::now();
    let mut read = read_mark(&server, "team", "alice");
    while read == 0 {
        assert!(started.elapsed() < WAIT, "nothing on screen was read");
        tokio::time::sleep(Duration::from_millis(100)).await;
        read = read_mark(&server, "team", "alice");
    }
    tokio::time::sleep(QUIET).await;
    let read = read_mark(&server, "team", "alice");
    let shown = alice.on_screen().await;
    assert_eq!(
        shown.first(),
        Some(&1),
        "the page scrolled away from message 1"
    );
    assert_eq!(
        Some(&read),
        shown.last(),
        "the read mark is the newest message on screen"
    );
    assert!(read < 20, "read {read} of 40 in a small window");
    alice.wait_badge("team", 40 - read).await;
    alice
        .screenshot("new-messages.png", Some("new-messages.png"))
        .await;

    // The sender's page says so: seen where it was shown, delivered (not seen) beyond.
    bob.wait_connection("online").await;
    bob.open_conversation("team").await;
    let early = bob
        .wait_receipt(&bodies[0], "message 1 seen", |r| r["read"] == 1)
        .await;
    assert_eq!(early["text"], "Seen by 1 of 2", "{early}");
    let late = bob
        .wait_receipt(&bodies[39], "message 40 delivered", |r| r["delivered"] == 1)
        .await;
    assert_eq!(late["read"], 0, "message 40 was never on screen: {late}");
    assert_eq!(late["text"], "Delivered to 1 of 2", "{late}");

    // Jump to latest: everything up to 40 has been on screen now.
    alice.click("#jump").await;
    wait_read_mark(&server, "team", "alice", 40).await;
    alice.wait_badge("team", 0).await;
    bob.wait_receipt(&bodies[39], "message 40 seen", |r| r["read"] == 1)
        .await;

    // Mark as unread: the conversation is left, its badge shows a dot, the server keeps the
    // flag; opening it again clears it.
    alice.click("#mark-unread").await;
    alice
        .wait_until(
            "the conversation left, with a dot",
            CONVERSATION_JS,
            vec![json!("team")],
            |v| v["marked"] == true && v["dot"] == true,
        )
        .await;
    let title = alice
        .js(
            "return document.getElementById('pane-title').textContent;",
            vec![],
        )
        .await;
    assert_eq!(title, "Pick a conversation");
    wait_marked_unread(&server, "team", "alice", true).await;
    assert_eq!(read_mark(&server, "team", "alice"), 40, "no cursor moved");
    alice.open_conversation("team").await;
    alice
        .wait_until("the dot gone", CONVERSATION_JS, vec![json!("team")], |v| {
            v["marked"] == false && v["dot"] == false
        })
        .await;
    wait_marked_unread(&server, "team", "alice", false).await;
    alice.close().await;
    bob.close().await;
}

/// Waits until a fresh session of `user` is welcomed with `marked_unread` = `marked` in `group`.
async fn wait_marked_unread(server: &Server, group: &str, user: &str, marked: bool) {
    let started = Instant::now();
    loop {
        let client = server.connect(user).await;
        let flag = client
            .welcome_group(group)
            .map(|g| g["marked_unread"] == true);
        client.close().await;
        if flag == Some(marked) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{user}'s welcome never said marked_unread = {marked} in {group}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_unfocused_page_or_a_background_tab_reads_nothing() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", &TEAM[..2]);
    server.post("team", "bob", "Before lunch.");
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    alice.wait_messages(&["Before lunch."]).await;
    wait_read_mark(&server, "team", "alice", 1).await;

    // The window loses the focus (another application is in front): visible, not focused.
    alice
        .js(
            "document.hasFocus = () => false; window.dispatchEvent(new Event('blur'));",
            vec![],
        )
        .await;
    server.post("team", "bob", "One.");
    let seq = server.post("team", "bob", "Two.");
    alice
        .wait_messages(&["Before lunch.", "One.", "Two."])
        .await;
    wait_delivered(&server, "team", "alice", seq).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        read_mark(&server, "team", "alice"),
        1,
        "an unfocused page moved the read mark"
    );
    assert_eq!(
        alice.on_screen().await,
        [1, 2, 3],
        "the messages were on screen all along"
    );
    // The focus comes back: what is on screen is read now.
    alice
        .js(
            "delete document.hasFocus; window.dispatchEvent(new Event('focus'));",
            vec![],
        )
        .await;
    wait_read_mark(&server, "team", "alice", seq).await;

    // Another tab in front: the page is hidden.
    let first_tab = alice.browser.window().await.expect("the first tab");
    let tab = alice.browser.new_window(true).await.expect("opening a tab");
    alice
        .browser
        .switch_to_window(tab.handle)
        .await
        .expect("switching tabs");
    alice.goto(&server.url("/healthz")).await;
    server.post("team", "bob", "Three.");
    let seq = server.post("team", "bob", "Four.");
    wait_delivered(&server, "team", "alice", seq).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        read_mark(&server, "team", "alice"),
        seq - 2,
        "a background tab moved the read mark"
    );
    // Back in front: read.
    alice
        .browser
        .switch_to_window(first_tab)
        .await
        .expect("switching tabs");
    alice
        .wait_messages(&["Before lunch.", "One.", "Two.", "Three.", "Four."])
        .await;
    wait_read_mark(&server, "team", "alice", seq).await;
    alice.close().await;
}

#[tokio::test]
async fn a_reminder_from_the_receipts_dialog_reaches_the_other_page() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    setup(&server, "team", &TEAM[..3]);
    server.post("team", "bob", "Morning!");
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    let bob = driver.open_as(&server, "bob").await;
    alice.wait_connection("online").await;
    bob.wait_connection("online").await;

    alice.open_conversation("team").await;
    let text = "Please sign off the release notes by 3 pm.";
    alice.type_into("#composer-input", text).await;
    alice.click("#send").await;
    let receipt = alice
        .wait_receipt(text, "delivered to Bob", |r| {
            r["recipients"] == 2 && r["delivered"] == 1
        })
        .await;
    assert_eq!(receipt["text"], "Delivered to 1 of 2", "{receipt}");
    let seq = receipt["seq"].as_u64().expect("a seq");

    // The dialog quotes the message and lists who has it and who does not.
    alice
        .click(&format!("#message-list li[data-seq=\"{seq}\"] .receipt"))
        .await;
    let lists = alice
        .wait_until("the receipts lists", READERS_JS, vec![], |v| !v.is_null())
        .await;
    assert_eq!(lists, json!([[], ["bob"], ["carol"]]));
    let dialog = alice
        .js(
            "return [document.getElementById('readers-quote').textContent,
                     [...document.querySelectorAll('#readers-body h3')].map(h => h.textContent),
                     document.getElementById('remind').textContent];",
            vec![],
        )
        .await;
    assert_eq!(
        dialog,
        json!([
            text,
            [
                "Seen (0)",
                "Delivered, not seen (1)",
                "Not delivered yet (1)"
            ],
            "Remind the 2 who haven\u{2019}t seen it"
        ])
    );
    alice.click("#remind").await;
    alice
        .wait_until(
            "the reminded result",
            "return document.getElementById('remind-status').textContent;",
            vec![],
            |v| v == "Reminded Bob, Carol.",
        )
        .await;

    // Bob's page (another conversation's list) flags the group.
    bob.wait_until(
        "the reminder flag",
        CONVERSATION_JS,
        vec![json!("team")],
        |v| v["reminded"] == true && v["flag"] == true,
    )
    .await;
    bob.screenshot("reminder-list.png", None).await;
    // Opening it shows the message highlighted; once seen, the flag goes. (For the picture,
    // the window first loses the focus, so the flag stays while the message is on screen.)
    bob.js("document.hasFocus = () => false;", vec![]).await;
    bob.open_conversation("team").await;
    bob.wait_until(
        "the highlighted message",
        "const li = document.querySelector('#message-list li.msg.reminded');
         return li ? [Number(li.dataset.seq), li.querySelector('.reminder-note').textContent] : null;",
        vec![],
        |v| !v.is_null(),
    )
    .await;
    let note = bob
        .js(
            "return document.querySelector('#message-list li.msg.reminded .reminder-note').textContent;",
            vec![],
        )
        .await;
    assert_eq!(note, " Alice reminded you");
    let flag = bob.js(CONVERSATION_JS, vec![json!("team")]).await;
    assert_eq!(flag["flag"], true, "not seen yet while unfocused: {flag}");
    bob.screenshot("reminder.png", Some("reminder.png")).await;
    bob.js(
        "delete document.hasFocus; window.dispatchEvent(new Event('focus'));",
        vec![],
    )
    .await;
    wait_read_mark(&server, "team", "bob", seq).await;
    bob.wait_until("the flag gone", CONVERSATION_JS, vec![json!("team")], |v| {
        v["reminded"] == false
    })
    .await;

    // Alice's dialog follows; reminding again so soon is refused, in words.
    alice
        .wait_until("Bob in Seen", READERS_JS, vec![], |v| {
            *v == json!([["bob"], [], ["carol"]])
        })
        .await;
    alice.click("#remind").await;
    alice
        .wait_until(
            "the refusal",
            "return document.getElementById('remind-status').textContent;",
            vec![],
            |v| {
                v.as_str()
                    .is_some_and(|t| t.starts_with("Already reminded"))
            },
        )
        .await;
    bob.close().await;

    // Carol was offline: her page learns of the reminder from `welcome`.
    let carol = driver.open_as(&server, "carol").await;
    carol
        .wait_until(
            "the reminder flag from welcome",
            CONVERSATION_JS,
            vec![json!("team")],
            |v| v["reminded"] == true,
        )
        .await;
    carol.close().await;
    alice.close().await;
}

#[tokio::test]
async fn under_counts_the_dialog_shows_numbers_only_and_policy_changes_apply_live() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    for (id, name) in &TEAM[..3] {
        server.admin_expect(
            "POST",
            "/api/users",
            Some(json!({"id": id, "name": name})),
            201,
        );
    }
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(
            json!({"id": "team", "name": "Release team", "members": ["alice", "bob", "carol"],
                    "receipts": "counts"}),
        ),
        201,
    );
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    let text = "Counts only in this group.";
    alice.type_into("#composer-input", text).await;
    alice.click("#send").await;
    let seq = alice
        .wait_receipt(text, "the receipt", |r| r["recipients"] == 2)
        .await["seq"]
        .as_u64()
        .expect("a seq");
    let mut bob = server.connect("bob").await;
    bob.send_json(json!({"type": "read", "group": "team", "seq": seq}))
        .await;
    let receipt = alice
        .wait_receipt(text, "seen by Bob", |r| r["read"] == 1)
        .await;
    assert_eq!(receipt["text"], "Seen by 1 of 2");

    // "Remind non-readers after 10 min" goes out with the next send (and only that one).
    alice
        .js(
            "const send = WebSocket.prototype.send;
             window.sentFrames = [];
             WebSocket.prototype.send = function (data) {
               window.sentFrames.push(JSON.parse(data));
               return send.call(this, data);
             };",
            vec![],
        )
        .await;
    alice
        .browser
        .find(Locator::Css("#remind-after"))
        .await
        .expect("the remind select")
        .select_by_value("600")
        .await
        .expect("choosing 10 min");
    let later = "Remind them if they have not seen this in ten minutes.";
    alice.type_into("#composer-input", later).await;
    alice.click("#send").await;
    alice
        .wait_receipt(later, "the scheduled message sent", |r| {
            r["recipients"] == 2
        })
        .await;
    let sends = alice
        .js(
            "return window.sentFrames.filter(f => f.type === 'send')
               .map(f => [f.body, f.remind_after_secs ?? null]);",
            vec![],
        )
        .await;
    assert_eq!(sends, json!([[later, 600]]));
    let reset = alice
        .js(
            "return document.getElementById('remind-after').value;",
            vec![],
        )
        .await;
    assert_eq!(reset, "", "the choice is for one send");

    // The dialog: numbers, no names, and no `readers` asked.
    alice
        .click(&format!("#message-list li[data-seq=\"{seq}\"] .receipt"))
        .await;
    let counts = alice
        .wait_until(
            "the counts",
            "const b = document.getElementById('readers-body');
             if (!document.getElementById('readers-dialog').open || b.dataset.mode !== 'counts') return null;
             return [[...b.querySelectorAll('section')].map(s => Number(s.dataset.count)),
                     b.querySelectorAll('li').length];",
            vec![],
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(counts, json!([[1, 0, 1], 0]), "counts, and no list items");
    assert_eq!(
        server.metric("rollcall_frames_in_total{type=\"readers\"}"),
        0,
        "the page asked for readers under counts"
    );
    alice.click("#remind").await;
    alice
        .wait_until(
            "the reminded count",
            "return document.getElementById('remind-status').textContent;",
            vec![],
            |v| v == "Reminded 1 person.",
        )
        .await;

    // The admin turns receipts off and renames the group: the page follows at once.
    server.admin_expect(
        "PUT",
        "/api/groups/team",
        Some(json!({"receipts": "off", "name": "Launch"})),
        200,
    );
    let state = alice
        .wait_until(
            "receipts off",
            "const r = document.querySelector('#message-list li.msg.mine .receipt');
             return [document.getElementById('pane-title').textContent, r.textContent, r.disabled,
                     document.getElementById('readers-dialog').open,
                     document.getElementById('remind-after').disabled];",
            vec![],
            |v| v[0] == "Launch",
        )
        .await;
    assert_eq!(state, json!(["Launch", "Sent", true, false, true]));
    // And back to full: the counts return (pulled again).
    server.admin_expect(
        "PUT",
        "/api/groups/team",
        Some(json!({"receipts": "full"})),
        200,
    );
    alice
        .wait_receipt(text, "counts again", |r| r["read"] == 1)
        .await;
    bob.close().await;
    alice.close().await;
}
