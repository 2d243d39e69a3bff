//! The conversation itself in the web client (issue #13 §4), in a real browser: Debian's
//! Chromium through chromedriver (`fantoccini`), against a real server process, like
//! tests/browser.rs and tests/browser_accounts.rs (whose Driver and Page helpers are copied
//! here, so each file stays one test binary without a shared module of dead code).
//!
//! What is checked, each through what a person would see (`data-*` attributes and texts of the
//! page) after real clicks and key presses: messages grouped by sender with day separators,
//! clickable http(s) links and nothing else turned into markup, mentions of you highlighted,
//! the open conversation in the address surviving a reload; replies (the quote, and jumping to
//! an old quoted message through history), edits and deletions (own, and others' as an admin)
//! applied live on every page, with the unread counts following a deletion; the member list
//! with presence, presence dots in direct conversations and "X is typing…"; desktop
//! notifications for direct messages and mentions while the page is hidden (the permission is
//! granted to the test profile through chromedriver's CDP `Browser.grantPermissions` after the
//! page showed that it did not ask on load), mutes and the title count; a notice instead of a
//! blank pane when the open group is gone after a reconnect; one header row on a phone.
//!
//! Notifications are real `Notification` objects of the page (nothing is wrapped): the page
//! counts each one it showed on `<html data-notifications>` when the browser fires its `show`
//! event.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (scripts/test.sh installs them);
//! without them the tests FAIL, they do not skip. Screenshots go to `target/browser-artifacts/`
//! (`conversation.png`, `narrow-conversation.png`); with `ROLLCALL_UPDATE_SCREENSHOT=1` the
//! first is also copied to `docs/`.

mod browser_driver;
mod common;

use std::time::{Duration, Instant};

use common::Server;
use fantoccini::Locator;
use serde_json::{json, Value};

use browser_driver::*;

/// More of the page, for these tests.
impl Page {
    /// The `textContent` of the element with this id (`null` if there is none).
    async fn text(&self, id: &str) -> Value {
        self.js(
            "const el = document.getElementById(arguments[0]); return el ? el.textContent : null;",
            vec![json!(id)],
        )
        .await
    }

    /// Waits until the element with this id says something `accept` takes; returns the text.
    async fn wait_text(&self, id: &str, what: &str, accept: impl Fn(&str) -> bool) -> String {
        let value = self
            .wait_until(
                what,
                "const el = document.getElementById(arguments[0]);
                 return el && !el.closest('[hidden]') ? el.textContent : null;",
                vec![json!(id)],
                |v| v.as_str().is_some_and(&accept),
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Empties an input, then types `text` into it.
    async fn fill(&self, css: &str, text: &str) {
        let element = self
            .browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name));
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("{}: clearing {css}: {e}", self.name));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: typing into {css}: {e}", self.name));
    }

    /// The address bar.
    async fn url(&self) -> String {
        let value = self.js("return location.href;", vec![]).await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Whether the page is wider than the window (something does not wrap).
    async fn overflows(&self) -> Value {
        self.js(
            "const d = document.documentElement;
             const wide = [...document.querySelectorAll('body *')].filter(el => {
               const r = el.getBoundingClientRect();
               return r.width > 0 && r.right > d.clientWidth + 1 && !el.closest('.table-wrap, dialog:not([open])');
             }).slice(0, 5).map(el => el.id || el.className || el.tagName);
             return d.scrollWidth > d.clientWidth + 1 || wide.length ? wide : null;",
            vec![],
        )
        .await
    }

    /// The conversation list: `[group id, title]` in page order.
    async fn conversations(&self) -> Value {
        self.js(
            "return [...document.querySelectorAll('#conversations .conversation')]
               .map(b => [b.dataset.group, b.querySelector('.title').textContent]);",
            vec![],
        )
        .await
    }
}

/// Yet more of the page: the conversation (#13).
impl Page {
    /// Runs an asynchronous script: it ends by calling its last argument with the result.
    async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.browser
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.name))
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`).
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self
            .browser
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        let url = format!(
            "http://127.0.0.1:{}/session/{session}/goog/cdp/execute",
            self.driver_port
        );
        let answer: Value = ureq::post(&url)
            .timeout(WAIT)
            .send_json(json!({"cmd": cmd, "params": params}))
            .unwrap_or_else(|e| panic!("{}: CDP {cmd}: {e}", self.name))
            .into_json()
            .unwrap_or_else(|e| panic!("{}: CDP {cmd} answer: {e}", self.name));
        answer["value"].clone()
    }

    /// The open conversation's messages as `[seq, from, body]`, in page order.
    async fn wait_bodies(&self, bodies: &[&str]) -> Value {
        let expected: Vec<Value> = bodies.iter().map(|b| json!(b)).collect();
        self.wait_until(
            &format!("exactly the messages {bodies:?}"),
            "return [...document.querySelectorAll('#message-list li.msg[data-seq]')]
               .map(li => li.querySelector('.body').textContent);",
            vec![],
            |v| v.as_array() == Some(&expected),
        )
        .await
    }

    /// One message of the open conversation as drawn (see [`MESSAGE_JS`]), or null.
    async fn message(&self, seq: u64) -> Value {
        self.js(MESSAGE_JS, vec![json!(seq)]).await
    }

    /// Waits until message `seq` is drawn as `accept` wants; returns it.
    async fn wait_message(&self, seq: u64, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(what, MESSAGE_JS, vec![json!(seq)], |v| {
            !v.is_null() && accept(v)
        })
        .await
    }

    /// Clicks a control of message `seq` (`.act-reply`, `.act-edit`, `.quote`, ...).
    async fn click_in_message(&self, seq: u64, css: &str) {
        self.click(&format!("#message-list li[data-seq=\"{seq}\"] {css}"))
            .await;
    }

    /// The badge count of a conversation in the list (0 when none shows).
    async fn badge(&self, group: &str) -> Value {
        self.js(BADGE_JS, vec![json!(group)]).await
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

    /// Opens another tab in front (this page is hidden then) at `/healthz`; returns the handle
    /// of this page's tab, for [`Page::back_to`].
    async fn hide_behind_a_tab(&self, server: &Server) -> fantoccini::wd::WindowHandle {
        let first = self.browser.window().await.expect("the first tab");
        let tab = self.browser.new_window(true).await.expect("opening a tab");
        self.browser
            .switch_to_window(tab.handle)
            .await
            .expect("switching tabs");
        self.goto(&server.url("/healthz")).await;
        first
    }

    /// Closes the tab in front and goes back to `tab`.
    async fn back_to(&self, tab: fantoccini::wd::WindowHandle) {
        self.browser.close_window().await.expect("closing the tab");
        self.browser
            .switch_to_window(tab)
            .await
            .expect("switching tabs");
    }

    /// How many notifications the page showed, and the last one's "title\nbody".
    async fn notifications(&self) -> (u64, String) {
        let value = self
            .js(
                "const d = document.documentElement.dataset;
                 return [Number(d.notifications || 0), d.lastNotification || ''];",
                vec![],
            )
            .await;
        (
            value[0].as_u64().unwrap_or(0),
            value[1].as_str().unwrap_or_default().to_string(),
        )
    }

    async fn title(&self) -> String {
        let value = self.js("return document.title;", vec![]).await;
        value.as_str().unwrap_or_default().to_string()
    }
}

/// One message as drawn: `{body, from, grouped, meta, deleted, edited, quote: [seq, from, words]
/// | null, reply, edit, delete, links: [[href, text, rel, target]], marks, tags, mentioned}`.
const MESSAGE_JS: &str = "const li = document.querySelector(
      `#message-list li.msg[data-seq=\"${arguments[0]}\"]`);
    if (!li) return null;
    const q = li.querySelector('.quote');
    const shown = (el) => !!el && !el.hidden && !el.closest('[hidden]') && getComputedStyle(el).display !== 'none';
    const body = li.querySelector('.body');
    return {body: body.textContent, from: li.dataset.from, grouped: li.dataset.grouped === 'true',
      meta: shown(li.querySelector('.meta')), deleted: li.dataset.deleted === 'true',
      edited: shown(li.querySelector('.edited')),
      quote: q.hidden ? null : [Number(q.dataset.replyTo), q.querySelector('.quote-from').textContent,
        q.querySelector('.quote-body').textContent],
      reply: shown(li.querySelector('.act-reply')), edit: shown(li.querySelector('.act-edit')),
      delete: shown(li.querySelector('.act-delete')),
      receipt: shown(li.querySelector('.receipt')),
      links: [...body.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.textContent, a.rel, a.target]),
      marks: [...body.querySelectorAll('mark.mention')].map(m => m.textContent),
      tags: [...body.querySelectorAll('*')].map(e => e.tagName.toLowerCase()),
      mentioned: li.classList.contains('mentioned')};";

/// The message list from the top: `['day', label, key]`, `['new']` (the "New messages" line)
/// and `['msg', seq, grouped, name and time shown]`.
const TIMELINE_JS: &str = "return [...document.querySelectorAll('#message-list > li')].map(li => {
      if (li.classList.contains('day')) return ['day', li.textContent, li.dataset.day];
      if (li.classList.contains('separator')) return ['new'];
      return ['msg', Number(li.dataset.seq || 0), li.dataset.grouped === 'true',
              getComputedStyle(li.querySelector('.meta') || li).display !== 'none'];
    });";

const BADGE_JS: &str = "const b = document.querySelector(
      `.conversation[data-group=\"${arguments[0]}\"] .badge`);
    return b && !b.hidden ? Number(b.querySelector('.count').textContent) : 0;";

/// The member list beside the open group: `[[user, online state]]` in page order.
const MEMBERS_JS: &str = "const p = document.getElementById('members-panel');
    if (p.hidden || getComputedStyle(p).display === 'none') return null;
    return [...document.querySelectorAll('#member-list li')].map(li => [li.dataset.user, li.dataset.online]);";

/// The presence dot of a direct conversation in the list (`online`, `offline`, `unknown`).
const DOT_JS: &str = "const d = document.querySelector(
      `.conversation[data-group=\"${arguments[0]}\"] .presence`);
    return d ? d.dataset.online : null;";

/// Creates users with display names, then a group of them named "Release team".
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

/// The stored messages of a group (admin API), in seq order.
fn stored(server: &Server, group: &str) -> Vec<Value> {
    let page = server.admin_expect(
        "GET",
        &format!("/api/groups/{group}/messages?after=0&limit=1000"),
        None,
        200,
    );
    page["messages"].as_array().cloned().unwrap_or_default()
}

/// Waits until `user`'s delivery mark in `group` reaches `seq` (the page got the messages:
/// it acknowledges what arrives, hidden or not).
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

const TEAM: &[(&str, &str)] = &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")];

#[tokio::test]
async fn messages_are_grouped_by_day_and_sender_links_and_mentions_are_marked_and_a_reload_keeps_the_conversation(
) {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(&server, "team", TEAM);
    server.post("team", "bob", "Morning all.");
    server.post(
        "team",
        "bob",
        "Release notes: https://example.org/notes?v=2&x=1. And (see https://example.org/a_(b)).",
    );
    server.post(
        "team",
        "carol",
        "@alice can you check? cc @alicea and bob@alice.example",
    );
    server.post(
        "team",
        "carol",
        "<b>bold</b> <img src=x onerror=alert(1)> javascript:alert(1) ftp://example.org/f",
    );
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    alice
        .wait_until("four messages", TIMELINE_JS, vec![], |v| {
            v.as_array().is_some_and(|rows| rows.len() == 6)
        })
        .await;

    // One day separator ("Today") above the first message (and the "New messages" line); Bob's
    // two messages and Carol's two are each one run: one name and time each.
    let timeline = alice.js(TIMELINE_JS, vec![]).await;
    assert_eq!(timeline[1][0], "new", "{timeline}");
    let timeline = json!(timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[0] != "new")
        .collect::<Vec<_>>());
    assert_eq!(timeline[0][0], "day", "{timeline}");
    assert_eq!(timeline[0][1], "Today", "{timeline}");
    let rows: Vec<(u64, bool, bool)> = timeline.as_array().unwrap()[1..]
        .iter()
        .map(|r| {
            (
                r[1].as_u64().unwrap(),
                r[2].as_bool().unwrap(),
                r[3].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, false, true),
            (2, true, false),
            (3, false, true),
            (4, true, false)
        ],
        "[seq, grouped, name shown]"
    );

    // Links: http(s) only, trailing punctuation left out, balanced parentheses kept.
    let m = alice.message(2).await;
    assert_eq!(
        m["links"],
        json!([
            [
                "https://example.org/notes?v=2&x=1",
                "https://example.org/notes?v=2&x=1",
                "noopener noreferrer",
                "_blank"
            ],
            [
                "https://example.org/a_(b)",
                "https://example.org/a_(b)",
                "noopener noreferrer",
                "_blank"
            ]
        ]),
        "{m}"
    );
    assert_eq!(
        m["body"],
        "Release notes: https://example.org/notes?v=2&x=1. And (see https://example.org/a_(b))."
    );
    // Mentions: only `@alice` (not `@alicea`, not an e-mail address) is marked, and the bubble
    // is highlighted.
    let m = alice.message(3).await;
    assert_eq!(m["marks"], json!(["@alice"]), "{m}");
    assert_eq!(m["mentioned"], true, "{m}");
    assert_eq!(m["tags"], json!(["mark"]), "{m}");
    assert_eq!(alice.message(1).await["mentioned"], false);
    // Nothing else becomes markup: the text is shown as typed.
    let m = alice.message(4).await;
    assert_eq!(m["tags"], json!([]), "{m}");
    assert_eq!(
        m["body"],
        "<b>bold</b> <img src=x onerror=alert(1)> javascript:alert(1) ftp://example.org/f"
    );
    // A real click on the link opens a new tab (target=_blank), the page stays.
    let handles = alice.browser.windows().await.expect("the tabs").len();
    alice
        .click("#message-list li[data-seq=\"2\"] .body a")
        .await;
    let started = Instant::now();
    while alice.browser.windows().await.expect("the tabs").len() == handles {
        assert!(started.elapsed() < WAIT, "the link opened no tab");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The address names the conversation; a reload opens it again.
    assert!(
        alice.url().await.ends_with("/#/c/team"),
        "{}",
        alice.url().await
    );
    alice.browser.refresh().await.expect("reloading");
    alice.wait_connection("online").await;
    alice
        .wait_until(
            "team open after the reload",
            "return document.querySelector('.conversation[aria-current=\"true\"]')?.dataset.group ?? null;",
            vec![],
            |v| v == "team",
        )
        .await;
    let bodies: Vec<String> = stored(&server, "team")
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect();
    let bodies: Vec<&str> = bodies.iter().map(String::as_str).collect();
    alice.wait_bodies(&bodies).await;

    // Other days: the page's own rules (format.js) on messages of two days ago and yesterday,
    // drawn by the page: one separator per day, and no run across midnight.
    alice
        .js_async(
            "const done = arguments[arguments.length - 1];
             Promise.all([import('/model.js'), import('/view.js')]).then(([model, view]) => {
               const g = model.group('team');
               const day = 24 * 3600 * 1000;
               g.msgs.get(1).ts -= 2 * day;
               g.msgs.get(2).ts -= day;
               view.render();
               done(null);
             });",
            vec![],
        )
        .await;
    let timeline = alice.js(TIMELINE_JS, vec![]).await;
    let timeline = json!(timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[0] != "new")
        .collect::<Vec<_>>());
    let labels: Vec<String> = timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[0] == "day")
        .map(|r| r[1].as_str().unwrap().to_string())
        .collect();
    assert_eq!(labels.len(), 3, "{timeline}");
    assert_eq!(labels[1], "Yesterday", "{timeline}");
    assert_eq!(labels[2], "Today", "{timeline}");
    assert_ne!(labels[0], "Today", "{timeline}");
    assert_eq!(timeline[2][0], "day", "{timeline}");
    assert_eq!(
        timeline[3],
        json!(["msg", 2, false, true]),
        "the first message of a day starts a run: {timeline}"
    );
    alice.close().await;
}

#[tokio::test]
async fn replies_edits_and_deletions_show_on_every_page_live_and_a_deleted_message_leaves_the_unread_count(
) {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(&server, "team", TEAM); // Alice, the first member, is its owner
    server.admin_expect(
        "PUT",
        "/api/groups/team/members/carol",
        Some(json!({"role": "member"})),
        200,
    );
    let mut driver = Driver::start();
    let bob = driver.open_as(&server, "bob").await;
    let carol = driver.open_as(&server, "carol").await;
    bob.wait_connection("online").await;
    carol.wait_connection("online").await;
    bob.open_conversation("team").await;
    carol.open_conversation("team").await;

    // Bob writes; Carol replies to it from the bubble's "Reply".
    bob.type_into("#composer-input", "Deploy at 3?\u{E007}")
        .await;
    carol.wait_bodies(&["Deploy at 3?"]).await;
    let m = carol.message(1).await;
    assert_eq!(
        (&m["reply"], &m["edit"], &m["delete"]),
        (&json!(true), &json!(false), &json!(false)),
        "a member replies to another's message, and neither edits nor deletes it: {m}"
    );
    carol.click_in_message(1, ".act-reply").await;
    carol
        .wait_text("composer-what", "the reply bar", |t| t == "Replying to Bob")
        .await;
    carol
        .type_into("#composer-input", "Make it 4.\u{E007}")
        .await;
    for (page, who) in [(&bob, "You"), (&carol, "Bob")] {
        let reply = page
            .wait_message(2, "the reply with its quote", |m| !m["quote"].is_null())
            .await;
        assert_eq!(reply["quote"], json!([1, who, "Deploy at 3?"]), "{reply}");
        assert_eq!(reply["body"], "Make it 4.");
    }
    assert_eq!(stored(&server, "team")[1]["reply_to"], 1);
    assert_eq!(
        carol
            .js(
                "return document.getElementById('composer-context').hidden;",
                vec![]
            )
            .await,
        true,
        "the reply bar goes once sent"
    );

    // Bob edits his message (the bubble's "Edit" puts it in the composer; Enter saves): both
    // pages show the new text, "edited", and the quote follows.
    let m = bob.message(1).await;
    assert_eq!(
        (&m["edit"], &m["delete"]),
        (&json!(true), &json!(true)),
        "{m}"
    );
    bob.click_in_message(1, ".act-edit").await;
    bob.wait_text("composer-what", "the edit bar", |t| {
        t == "Editing your message"
    })
    .await;
    bob.fill("#composer-input", "Deploy at 5?").await;
    bob.type_into("#composer-input", "\u{E007}").await;
    for page in [&bob, &carol] {
        let m = page
            .wait_message(1, "the edited text", |m| m["body"] == "Deploy at 5?")
            .await;
        assert_eq!(m["edited"], true, "{m}");
        page.wait_message(2, "the quote follows the edit", |m| {
            m["quote"][2] == "Deploy at 5?"
        })
        .await;
    }
    let kept = stored(&server, "team");
    assert_eq!(kept[0]["body"], "Deploy at 5?");
    assert!(kept[0]["edited_ts"].as_u64().is_some(), "{kept:?}");
    assert_eq!(kept.len(), 2, "an edit is no new message");

    // Made an admin (a `group_updated` with her role), Carol may delete Bob's message, live.
    server.admin_expect(
        "PUT",
        "/api/groups/team/members/carol",
        Some(json!({"role": "admin"})),
        200,
    );
    carol
        .wait_message(1, "Delete offered to an admin", |m| m["delete"] == true)
        .await;
    assert_eq!(
        carol.message(1).await["edit"],
        false,
        "nobody edits another's message"
    );
    server.admin_expect(
        "PUT",
        "/api/groups/team/members/carol",
        Some(json!({"role": "member"})),
        200,
    );
    carol
        .wait_message(1, "Delete withdrawn from a member", |m| {
            m["delete"] == false
        })
        .await;

    // Alice's page, opened now, sees the edit from history; as the owner she may delete
    // Carol's message, and Bob may not.
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    let m = alice
        .wait_message(1, "the edited message", |m| m["edited"] == true)
        .await;
    assert_eq!(m["body"], "Deploy at 5?");
    let m = alice.message(2).await;
    assert_eq!(
        (&m["edit"], &m["delete"]),
        (&json!(false), &json!(true)),
        "{m}"
    );
    assert_eq!(bob.message(2).await["delete"], false);

    // Bob deletes his message (with the confirmation in the bubble): "message deleted"
    // everywhere, the quote says so too, and the server keeps no body.
    bob.click_in_message(1, ".act-delete").await;
    bob.click_in_message(1, ".act-delete-yes").await;
    for page in [&alice, &bob, &carol] {
        let m = page
            .wait_message(1, "message deleted", |m| m["deleted"] == true)
            .await;
        assert_eq!(m["body"], "message deleted", "{m}");
        assert_eq!(
            (&m["reply"], &m["edit"], &m["delete"]),
            (&json!(false), &json!(false), &json!(false)),
            "{m}"
        );
        page.wait_message(2, "the quote of a deleted message", |m| {
            m["quote"][2] == "message deleted"
        })
        .await;
    }
    let kept = stored(&server, "team");
    assert_eq!(kept[0]["deleted"], true, "{kept:?}");
    assert!(kept[0].get("body").is_none(), "{kept:?}");

    // Unread counts leave deleted messages out. Bob looks at another conversation; Carol
    // writes twice, and Alice (owner) deletes one of them: Bob's badge and title go 2 -> 1.
    bob.click("#mark-unread").await;
    carol.type_into("#composer-input", "First.\u{E007}").await;
    carol.type_into("#composer-input", "Second.\u{E007}").await;
    bob.wait_badge("team", 2).await;
    assert_eq!(bob.title().await, "(2) Rollcall");
    alice
        .wait_message(4, "Carol's second message", |m| m["body"] == "Second.")
        .await;
    alice.click_in_message(4, ".act-delete").await;
    alice.click_in_message(4, ".act-delete-yes").await;
    bob.wait_badge("team", 1).await;
    assert_eq!(bob.title().await, "(1) Rollcall");
    carol
        .wait_message(4, "deleted by the owner", |m| m["deleted"] == true)
        .await;
    // A reload of Bob's page counts from the server: still 1.
    bob.browser.refresh().await.expect("reloading");
    bob.wait_connection("online").await;
    bob.wait_badge("team", 1).await;

    // Alice edits with the keyboard: Up in the empty composer edits her last message.
    alice
        .type_into("#composer-input", "Owner here.\u{E007}")
        .await;
    let seq = 5;
    alice
        .wait_message(seq, "Alice's message", |m| m["body"] == "Owner here.")
        .await;
    alice.type_into("#composer-input", "\u{E013}").await; // ArrowUp
    alice
        .wait_text("composer-what", "the edit bar", |t| {
            t == "Editing your message"
        })
        .await;
    alice.fill("#composer-input", "Owner here, edited.").await;
    alice.type_into("#composer-input", "\u{E007}").await;
    carol
        .wait_message(seq, "the keyboard edit", |m| {
            m["body"] == "Owner here, edited." && m["edited"] == true
        })
        .await;

    alice.screenshot("edits.png", None).await;
    for page in [alice, bob, carol] {
        page.close().await;
    }
}

#[tokio::test]
async fn a_reply_to_an_old_message_jumps_to_it_loading_earlier_pages() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(&server, "team", TEAM);
    server.post("team", "carol", "The very first plan.");
    for i in 2..=80 {
        server.post("team", "carol", &format!("Filler {i}."));
    }
    let mut bob = server.connect("bob").await;
    let sent = bob
        .request(json!({"type": "send", "group": "team", "client_id": "r1",
                        "body": "Back to the first plan?", "reply_to": 1}))
        .await;
    assert_eq!(sent["type"], "sent", "{sent}");
    let reply_seq = sent["seq"].as_u64().unwrap();
    // Alice has read everything (in another client): the conversation opens at the end,
    // without message 1.
    let mut elsewhere = server.connect("alice").await;
    elsewhere
        .send_json(json!({"type": "read", "group": "team", "seq": reply_seq}))
        .await;
    elsewhere.ping().await;
    elsewhere.close().await;
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    let m = alice
        .wait_message(reply_seq, "the reply", |m| !m["quote"].is_null())
        .await;
    assert!(
        alice.message(1).await.is_null(),
        "message 1 is not loaded yet"
    );
    assert_eq!(m["quote"][0], 1, "{m}");
    assert_eq!(
        m["quote"][2], "An earlier message (click to load it)",
        "{m}"
    );

    alice.click_in_message(reply_seq, ".quote").await;
    alice
        .wait_until(
            "message 1 loaded, shown and highlighted",
            "const li = document.querySelector('#message-list li.msg[data-seq=\"1\"]');
             if (!li || li.dataset.jumped !== '1') return null;
             const root = document.getElementById('messages').getBoundingClientRect();
             const r = li.getBoundingClientRect();
             return r.top >= root.top && r.bottom <= root.bottom;",
            vec![],
            |v| v == true,
        )
        .await;
    let m = alice.message(reply_seq).await;
    assert_eq!(
        m["quote"],
        json!([1, "Carol", "The very first plan."]),
        "{m}"
    );
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn the_member_list_shows_who_is_online_direct_conversations_have_a_dot_and_typing_shows_for_a_while(
) {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(&server, "team", TEAM);
    let mut opener = server.connect("alice").await;
    let direct = opener
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    assert_eq!(direct["group"], "dm:alice:bob", "{direct}");
    opener.close().await;
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    let bob = driver.open_as(&server, "bob").await;
    alice.wait_connection("online").await;
    bob.wait_connection("online").await;
    alice.open_conversation("team").await;
    bob.open_conversation("team").await;

    // The member list: online first, then by name; Carol is offline.
    let online = |who: &'static str, state: &'static str| {
        move |v: &Value| {
            v.as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0] == who && r[1] == state))
        }
    };
    let list = alice
        .wait_until(
            "Bob online in the list",
            MEMBERS_JS,
            vec![],
            online("bob", "online"),
        )
        .await;
    assert_eq!(
        list,
        json!([["alice", "online"], ["bob", "online"], ["carol", "offline"]])
    );
    assert_eq!(alice.text("members-count").await, "2 online");
    // Carol connects (another client): a `presence` push turns her dot on, live; she leaves
    // and it turns off again (the server announces it some 5 s later).
    let carol = server.connect("carol").await;
    let list = alice
        .wait_until(
            "Carol online",
            MEMBERS_JS,
            vec![],
            online("carol", "online"),
        )
        .await;
    assert_eq!(
        list,
        json!([["alice", "online"], ["bob", "online"], ["carol", "online"]])
    );
    carol.close().await;
    alice
        .wait_until(
            "Carol offline",
            MEMBERS_JS,
            vec![],
            online("carol", "offline"),
        )
        .await;

    // Typing: Bob types (no Enter) one key at a time; Alice sees "Bob is typing…" for about
    // 5 s, and his page sent one `typing` for all those keys (at most one per 2 s).
    let typing_before = server.metric("rollcall_frames_in_total{type=\"typing\"}");
    for key in ["S", "h", "i", "p"] {
        bob.type_into("#composer-input", key).await;
    }
    let started = Instant::now();
    let shown = alice
        .wait_text("typing", "Bob is typing", |t| !t.is_empty())
        .await;
    assert_eq!(shown, "Bob is typing\u{2026}");
    assert_eq!(
        server.metric("rollcall_frames_in_total{type=\"typing\"}") - typing_before,
        1,
        "one typing frame for four keys within 2 s"
    );
    alice
        .wait_text("typing", "the typing line to clear", |t| t.is_empty())
        .await;
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(3) && lasted <= Duration::from_secs(9),
        "shown for {lasted:?}, not about 5 s"
    );
    // Typing again, then sending: the line goes with the message, before the 5 s.
    tokio::time::sleep(Duration::from_millis(2100)).await; // past Bob's 2 s throttle
    bob.type_into("#composer-input", " it").await;
    alice
        .wait_text("typing", "Bob is typing again", |t| !t.is_empty())
        .await;
    bob.type_into("#composer-input", "\u{E007}").await;
    alice.wait_bodies(&["Ship it"]).await;
    let line = alice.text("typing").await;
    assert_eq!(line, "", "the message ended the typing line");

    // The direct conversation: a dot for Bob in the list and beside the title.
    assert_eq!(
        alice.js(DOT_JS, vec![json!("dm:alice:bob")]).await,
        "online"
    );
    alice.open_conversation("dm:alice:bob").await;
    assert_eq!(
        alice
            .js(
                "return document.getElementById('pane-presence').dataset.online;",
                vec![]
            )
            .await,
        "online"
    );
    assert_eq!(
        alice.js(MEMBERS_JS, vec![]).await,
        Value::Null,
        "no member list in a direct conversation"
    );
    bob.close().await;
    alice
        .wait_until("Bob's dot off", DOT_JS, vec![json!("dm:alice:bob")], |v| {
            v == "offline"
        })
        .await;
    alice.close().await;
}

#[tokio::test]
async fn desktop_notifications_for_direct_messages_and_mentions_while_hidden_unless_muted() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(&server, "team", TEAM);
    let mut bob = server.connect("bob").await;
    let direct = bob
        .request(json!({"type": "direct", "with": "alice"}))
        .await;
    assert_eq!(direct["group"], "dm:alice:bob", "{direct}");
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;

    // Nothing is asked on load: the permission is still undecided, and a button offers it.
    assert_eq!(
        alice.js("return Notification.permission;", vec![]).await,
        "default",
        "the page asked for the permission on load"
    );
    assert_eq!(
        alice
            .js(
                "return document.getElementById('notify-enable').hidden;",
                vec![]
            )
            .await,
        false
    );
    // The test profile grants it (as the user would in the prompt), then the click asks.
    let origin = server.url("");
    let origin = origin.trim_end_matches('/');
    alice
        .cdp(
            "Browser.grantPermissions",
            json!({"origin": origin, "permissions": ["notifications"]}),
        )
        .await;
    alice.click("#notify-enable").await;
    alice
        .wait_until(
            "notifications on",
            "return document.getElementById('notify-box').dataset.permission;",
            vec![],
            |v| v == "granted",
        )
        .await;
    assert_eq!(
        alice
            .js(
                "return document.getElementById('notify-enable').hidden;",
                vec![]
            )
            .await,
        true
    );

    // While the page is in front, a direct message notifies nobody.
    alice.open_conversation("team").await;
    bob.send_msg("dm:alice:bob", "d1", "Are you there?").await;
    alice.wait_badge("dm:alice:bob", 1).await;
    assert_eq!(alice.title().await, "(1) Rollcall");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alice.notifications().await.0,
        0,
        "a notification while looking"
    );

    // Hidden behind another tab: a direct message notifies, a group message does not, a
    // mention of Alice in the group does.
    let tab = alice.hide_behind_a_tab(&server).await;
    bob.send_msg("dm:alice:bob", "d2", "Lunch at noon?").await;
    bob.send_msg("team", "g1", "Standup moved to 10.").await;
    bob.send_msg("team", "g2", "@alice please review the notes")
        .await;
    wait_delivered(&server, "dm:alice:bob", "alice", 2).await;
    wait_delivered(&server, "team", "alice", 2).await;
    alice.back_to(tab).await;
    let (n, last) = alice.notifications().await;
    assert_eq!(
        (n, last.as_str()),
        (2, "Bob in Release team\n@alice please review the notes"),
        "one for the direct message, one for the mention, none for the plain group message"
    );
    // The title counts the unread: the two direct messages (the open group is read now that
    // the page is in front again).
    alice
        .wait_until("the title count", "return document.title;", vec![], |v| {
            v == "(2) Rollcall"
        })
        .await;

    // Muted: the direct conversation neither notifies nor counts in the title, across a
    // reload (localStorage).
    alice.open_conversation("dm:alice:bob").await;
    alice.wait_badge("dm:alice:bob", 0).await;
    let started = Instant::now();
    while server.member("dm:alice:bob", "alice")["read"].as_u64() != Some(2) {
        assert!(
            started.elapsed() < WAIT,
            "the direct messages were never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.click("#mute").await;
    alice
        .wait_until(
            "the conversation muted",
            "return document.querySelector('.conversation[data-group=\"dm:alice:bob\"]').dataset.muted;",
            vec![],
            |v| v == "true",
        )
        .await;
    alice.open_conversation("team").await;
    alice.browser.refresh().await.expect("reloading");
    alice.wait_connection("online").await;
    alice
        .wait_until(
            "still muted after the reload",
            "const b = document.querySelector('.conversation[data-group=\"dm:alice:bob\"]');
             return b ? b.dataset.muted : null;",
            vec![],
            |v| v == "true",
        )
        .await;
    let tab = alice.hide_behind_a_tab(&server).await;
    bob.send_msg("dm:alice:bob", "d3", "Muted, so quiet.").await;
    bob.send_msg("team", "g3", "Thanks @alice!").await;
    wait_delivered(&server, "dm:alice:bob", "alice", 3).await;
    wait_delivered(&server, "team", "alice", 3).await;
    alice.back_to(tab).await;
    alice.wait_badge("dm:alice:bob", 1).await;
    let (n, last) = alice.notifications().await;
    assert_eq!(
        (n, last.as_str()),
        (1, "Bob in Release team\nThanks @alice!"),
        "the muted conversation did not notify (the count starts again after the reload)"
    );
    // The open group is read once the page is in front again; the muted conversation's
    // unread message is not counted.
    alice.wait_badge("team", 0).await;
    alice
        .wait_until(
            "the title without a count",
            "return document.title;",
            vec![],
            |v| v == "Rollcall",
        )
        .await;
    assert_eq!(alice.badge("dm:alice:bob").await, 1);
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn a_group_gone_while_offline_or_not_there_leaves_a_notice_and_a_phone_keeps_one_header_row()
{
    let _serial = SERIAL.lock().await;
    let mut server = Server::start();
    setup(&server, "team", TEAM);
    server.post("team", "bob", "Before the outage.");
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    alice.wait_bodies(&["Before the outage."]).await;

    // The server goes down; while the page waits to reconnect (its backoff has grown to
    // about 8 s), it comes back and Alice is removed: the `left` push never reached the page,
    // the next `welcome` no longer lists the group.
    server.kill9();
    alice
        .wait_until(
            "a long reconnect wait",
            "const t = document.getElementById('connection').textContent;
             const m = /reconnecting in (\\d+) s/.exec(t);
             return m ? Number(m[1]) : 0;",
            vec![],
            |v| v.as_u64().is_some_and(|s| s >= 6),
        )
        .await;
    server.restart_on_same_port();
    server.admin_expect("DELETE", "/api/groups/team/members/alice", None, 204);
    alice.wait_connection("online").await;
    let notice = alice
        .wait_until(
            "the notice",
            "const n = document.getElementById('pane-notice');
             return n.hidden ? null : [n.dataset.reason, n.textContent,
               document.getElementById('pane-title').textContent, location.hash];",
            vec![],
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(notice[0], "gone", "{notice}");
    assert!(
        notice[1]
            .as_str()
            .is_some_and(|t| t.starts_with("You are no longer a member of Release team")),
        "{notice}"
    );
    assert_eq!(notice[2], "Release team", "{notice}");
    assert_eq!(notice[3], "", "the address no longer names it: {notice}");
    assert_eq!(
        alice.conversations().await,
        json!([]),
        "the conversation left the list"
    );

    // An address naming a conversation that is not there: a notice too.
    alice.goto(&server.url("/#/c/nosuch")).await;
    alice.browser.refresh().await.expect("reloading");
    alice.wait_connection("online").await;
    let notice = alice
        .wait_until(
            "the notice",
            "const n = document.getElementById('pane-notice');
             return n.hidden ? null : [n.dataset.reason, document.getElementById('pane-title').textContent];",
            vec![],
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(notice, json!(["missing", "Conversation not available"]));

    // A phone: the header keeps one row, "Sign out" included, and nothing is wider than the
    // screen.
    server.admin_expect(
        "PUT",
        "/api/groups/team/members/alice",
        Some(json!({"role": "member"})),
        200,
    );
    alice
        .browser
        .set_window_size(360, 740)
        .await
        .expect("resizing");
    alice.goto(&server.url("/#/c/team")).await; // (the same page: the address changes)
    alice.wait_connection("online").await;
    alice.wait_bodies(&["Before the outage."]).await;
    let rows = alice
        .js(
            "const bar = document.querySelector('.topbar').getBoundingClientRect();
             const items = ['h1', '#connection', '#me', '#change-password', '#sign-out']
               .map(css => document.querySelector('.topbar ' + css).getBoundingClientRect());
             return {bar: bar.height, tops: items.map(r => Math.round(r.top)),
                     bottoms: items.map(r => Math.round(r.bottom)),
                     right: Math.round(items[4].right), width: document.documentElement.clientWidth,
                     signOut: Math.round(items[4].height)};",
            vec![],
        )
        .await;
    let tops: Vec<i64> = rows["tops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let (low, high) = (tops.iter().min().unwrap(), tops.iter().max().unwrap());
    assert!(high - low <= 12, "the header wrapped: {rows}");
    assert!(
        rows["bar"].as_f64().unwrap() < 56.0,
        "the header is taller than one row: {rows}"
    );
    assert!(
        rows["signOut"].as_f64().unwrap() < 40.0,
        "\"Sign out\" wrapped inside its button: {rows}"
    );
    assert!(
        rows["right"].as_i64().unwrap() <= rows["width"].as_i64().unwrap(),
        "{rows}"
    );
    assert_eq!(alice.overflows().await, Value::Null);
    alice.screenshot("narrow-conversation.png", None).await;
    alice.close().await;
}

#[tokio::test]
async fn a_conversation_with_everything_in_it_for_the_readme() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    setup(
        &server,
        "team",
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
        ],
    );
    server.post("team", "carol", "Release candidate 2 is tagged.");
    server.post(
        "team",
        "carol",
        "Changelog: https://example.org/rollcall/rc2",
    );
    server.post("team", "bob", "Smoke tests are green on staging.");
    let mut bob_ws = server.connect("bob").await;
    let sent = bob_ws
        .request(json!({"type": "send", "group": "team", "client_id": "s1",
                        "body": "Ship it tomorrow at 10?", "reply_to": 1}))
        .await;
    let ship = sent["seq"].as_u64().unwrap();
    bob_ws
        .request(json!({"type": "edit", "group": "team", "seq": ship,
                        "body": "Ship it tomorrow at 9?"}))
        .await;
    let oops = bob_ws
        .request(json!({"type": "send", "group": "team", "client_id": "s2",
                        "body": "wrong channel, sorry"}))
        .await;
    bob_ws
        .request(json!({"type": "delete", "group": "team", "seq": oops["seq"]}))
        .await;
    let last = bob_ws
        .request(json!({"type": "send", "group": "team", "client_id": "s3",
                        "body": "@alice can you write the announcement?"}))
        .await;
    bob_ws.close().await;
    // Alice has read it all elsewhere (no "New messages" line in the picture).
    let mut elsewhere = server.connect("alice").await;
    elsewhere
        .send_json(json!({"type": "read", "group": "team", "seq": last["seq"]}))
        .await;
    elsewhere.ping().await;
    elsewhere.close().await;
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    alice
        .browser
        .set_window_size(1100, 900)
        .await
        .expect("resizing");
    let bob = driver.open_as(&server, "bob").await;
    let carol = server.connect("carol").await;
    alice.wait_connection("online").await;
    bob.wait_connection("online").await;
    bob.open_conversation("team").await;
    alice.open_conversation("team").await;
    alice
        .wait_message(ship + 2, "the mention", |m| m["mentioned"] == true)
        .await;
    alice
        .type_into("#composer-input", "On it, draft in 10 minutes.\u{E007}")
        .await;
    alice
        .wait_bodies(&[
            "Release candidate 2 is tagged.",
            "Changelog: https://example.org/rollcall/rc2",
            "Smoke tests are green on staging.",
            "Ship it tomorrow at 9?",
            "message deleted",
            "@alice can you write the announcement?",
            "On it, draft in 10 minutes.",
        ])
        .await;
    // Yesterday's messages: the first two are moved back a day in the page (the server
    // stamps every message now), so the picture shows a day separator.
    alice
        .js_async(
            "const done = arguments[arguments.length - 1];
             Promise.all([import('/model.js'), import('/view.js')]).then(([model, view]) => {
               const g = model.group('team');
               for (const seq of [1, 2]) g.msgs.get(seq).ts -= 24 * 3600 * 1000;
               view.render();
               done(null);
             });",
            vec![],
        )
        .await;
    alice
        .wait_until("Carol online", MEMBERS_JS, vec![], |v| {
            v.as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0] == "carol" && r[1] == "online"))
        })
        .await;
    bob.type_into("#composer-input", "Thanks").await;
    alice
        .wait_text("typing", "Bob is typing", |t| t == "Bob is typing\u{2026}")
        .await;
    let m = alice.message(ship).await;
    assert_eq!(
        m["quote"],
        json!([1, "Carol", "Release candidate 2 is tagged."]),
        "{m}"
    );
    assert_eq!(m["edited"], true, "{m}");
    alice
        .screenshot("conversation.png", Some("conversation.png"))
        .await;
    carol.close().await;
    bob.close().await;
    alice.close().await;
}
