//! The web client's accounts, groups managed by their members, and the admin page (issue #12),
//! in a real browser: Debian's Chromium through chromedriver (`fantoccini`), against a real
//! server process, like tests/browser.rs (whose Driver and Page helpers are copied here, so each
//! file stays one test binary without a shared module of dead code).
//!
//! Each test signs in the way a person would (the sign-in form with a password, a token link,
//! a one-time sign-in link, the admin token typed into /admin), drives the page with real clicks
//! and key presses, observes it through `data-*` attributes and element texts, and checks the
//! server's side through the admin API. Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`
//! (scripts/test.sh installs them); without them the tests FAIL, they do not skip.
//!
//! Screenshots go to `target/browser-artifacts/` (`sign-in.png`, `group-settings.png`,
//! `admin.png`, and `narrow-settings.png` / `narrow-admin.png` at phone width); with
//! `ROLLCALL_UPDATE_SCREENSHOT=1` the first three are also copied to `docs/`.

mod browser_driver;
mod common;

use std::time::{Duration, Instant};

use common::{token, Client, Server, ADMIN_TOKEN};
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

    /// Chooses the option with `value` in a `<select>`.
    async fn choose(&self, css: &str, value: &str) {
        self.browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name))
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("{}: choosing {value} in {css}: {e}", self.name));
    }

    /// Signs in with the form: user and password, then the submit button.
    async fn sign_in(&self, user: &str, password: &str) {
        self.fill("#login-user", user).await;
        self.fill("#login-password", password).await;
        self.click("#login-form button[type=\"submit\"]").await;
    }

    /// Waits for the sign-in form; returns the message it shows (empty when none).
    async fn wait_signed_out(&self, what: &str) -> String {
        let value = self
            .wait_until(
                what,
                "if (document.getElementById('signin').hidden) return null;
                 const m = document.getElementById('signin-message');
                 return m.hidden ? '' : m.textContent;",
                vec![],
                |v| v.is_string(),
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// The token the page keeps in localStorage (`null` when none).
    async fn stored_token(&self) -> Value {
        self.js("return localStorage.getItem('rollcall.token');", vec![])
            .await
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

    /// Waits until the conversation list satisfies `accept`.
    async fn wait_conversations(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(
            what,
            "return [...document.querySelectorAll('#conversations .conversation')]
               .map(b => [b.dataset.group, b.querySelector('.title').textContent]);",
            vec![],
            accept,
        )
        .await
    }
}

/// Whether `list` (from [`Page::conversations`]) holds `group`.
fn lists(list: &Value, group: &str) -> bool {
    list.as_array()
        .is_some_and(|rows| rows.iter().any(|row| row[0] == group))
}

/// The settings dialog as shown: `{open, manage, role, rename, add, receipts, members: [[user,
/// role, has a role select, has a remove button]]}`.
const SETTINGS_JS: &str = "const d = document.getElementById('settings-dialog');
    if (!d.open) return null;
    const shown = (id) => !document.getElementById(id).hidden;
    return {open: d.open, manage: d.dataset.manage === 'true', role: d.dataset.role,
            title: document.getElementById('settings-title').textContent,
            rename: shown('rename-form'), add: shown('add-member-form'), policy: shown('receipts-form'),
            receipts: document.getElementById('settings-receipts').textContent,
            members: [...document.querySelectorAll('#settings-members li')].map(li =>
              [li.dataset.user, li.dataset.role, !!li.querySelector('select'),
               !!li.querySelector('.remove-member')])};";

/// `POST /api/users` with a password; must answer 201.
fn create_user(server: &Server, id: &str, name: &str, password: Option<&str>) {
    let mut body = json!({"id": id, "name": name});
    if let Some(password) = password {
        body["password"] = json!(password);
    }
    server.admin_expect("POST", "/api/users", Some(body), 201);
}

/// `POST /api/login` with a password: the status.
fn login_status(server: &Server, user: &str, password: &str) -> u16 {
    server
        .http(
            "POST",
            "/api/login",
            None,
            Some(json!({"user": user, "password": password})),
        )
        .0
}

/// The upgrade's answer to a token: `Ok` (101, then welcome) or the HTTP status it refused with.
async fn upgrade(server: &Server, token: &str) -> Result<(), u16> {
    match Client::try_connect(&server.ws_url(), Some(token)).await {
        Ok(client) => {
            client.close().await;
            Ok(())
        }
        Err(status) => Err(status),
    }
}

/// Waits until `user`'s membership in `group` (by the admin API) is `role`, or absent (`None`).
async fn wait_member(server: &Server, group: &str, user: &str, role: Option<&str>) {
    let started = Instant::now();
    loop {
        let body = server.group(group);
        let now = common::member_of(&body, user).map(|m| m["role"].clone());
        if now.as_ref().and_then(Value::as_str) == role {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{user} in {group}: {now:?}, never {role:?}; {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ALICE_PASSWORD: &str = "alice-first-password";

#[tokio::test]
async fn a_password_signs_in_a_wrong_one_is_refused_and_signing_out_forgets_the_token() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    create_user(&server, "alice", "Alice", Some(ALICE_PASSWORD));
    create_user(&server, "bob", "Bob", None);
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "name": "Release team", "members": ["alice", "bob"]})),
        201,
    );
    let mut driver = Driver::start();
    let page = driver.page("alice").await;
    page.goto(&server.url("/")).await;
    assert_eq!(page.wait_signed_out("the sign-in form").await, "");
    let note = page
        .js(
            "return document.querySelector('#signin > .note').textContent.replace(/\\s+/g, ' ');",
            vec![],
        )
        .await;
    assert!(
        note.as_str().is_some_and(|t| t.contains("local storage")),
        "the page says where the token is kept: {note}"
    );

    // A wrong password: refused in words, still signed out, nothing stored.
    page.sign_in("alice", "not-her-password").await;
    page.wait_text("login-error", "the refusal", |t| {
        t == "Wrong user or password."
    })
    .await;
    assert_eq!(page.stored_token().await, Value::Null);
    assert_eq!(page.wait_signed_out("still the form").await, "");
    page.screenshot("sign-in.png", Some("sign-in.png")).await;

    // The right one: signed in, the token in localStorage and not in the address bar.
    page.sign_in("alice", ALICE_PASSWORD).await;
    page.wait_connection("online").await;
    assert_eq!(page.text("me").await, "Signed in as alice");
    page.wait_conversations("the group listed", |v| lists(v, "team"))
        .await;
    let stored = page.stored_token().await;
    let stored = stored.as_str().expect("a stored token").to_string();
    assert!(!page.url().await.contains("token"), "{}", page.url().await);
    upgrade(&server, &stored)
        .await
        .expect("the stored token is good");

    // A reload (or a new tab) stays signed in.
    page.goto(&server.url("/")).await;
    page.wait_connection("online").await;
    assert_eq!(page.stored_token().await, json!(stored));

    // Sign out: the form, and the token forgotten (a reload stays signed out).
    page.click("#sign-out").await;
    assert_eq!(page.wait_signed_out("the form after signing out").await, "");
    assert_eq!(page.stored_token().await, Value::Null);
    assert_eq!(
        page.js(
            "return document.querySelectorAll('#conversations li').length;",
            vec![]
        )
        .await,
        0
    );
    page.goto(&server.url("/")).await;
    page.wait_signed_out("the form after a reload").await;

    // A pasted token still works; a bad one is refused beside the field.
    page.click(".token-signin summary").await;
    page.type_into("#token-input", "not-a-token").await;
    page.click("#signin-form button[type=\"submit\"]").await;
    page.wait_text("signin-error", "the refused token", |t| {
        t.contains("refused")
    })
    .await;
    page.type_into("#token-input", &token("bob")).await;
    page.click("#signin-form button[type=\"submit\"]").await;
    page.wait_connection("online").await;
    assert_eq!(page.text("me").await, "Signed in as bob");
    page.close().await;
}

#[tokio::test]
async fn after_a_password_change_the_page_stays_connected_with_the_new_token() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    create_user(&server, "alice", "Alice", Some(ALICE_PASSWORD));
    create_user(&server, "bob", "Bob", None);
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "name": "Release team", "members": ["alice", "bob"]})),
        201,
    );
    let mut bob = server.connect("bob").await;
    let mut driver = Driver::start();
    let page = driver.page("alice").await;
    page.goto(&server.url("/")).await;
    page.wait_signed_out("the sign-in form").await;
    page.sign_in("alice", ALICE_PASSWORD).await;
    page.wait_connection("online").await;
    let old = page.stored_token().await;
    let old = old.as_str().expect("a token").to_string();

    // A wrong current password is refused, and changes nothing.
    page.click("#change-password").await;
    page.type_into("#password-old", "not-the-password").await;
    page.type_into("#password-new", "alice-second-password")
        .await;
    page.click("#password-form button[type=\"submit\"]").await;
    page.wait_text("password-error", "the refusal", |t| {
        t == "The current password is wrong."
    })
    .await;
    assert_eq!(login_status(&server, "alice", ALICE_PASSWORD), 200);

    // The right one: the server closes the socket with 4001, the page reconnects with the
    // new token, and never shows the sign-in form.
    page.fill("#password-old", ALICE_PASSWORD).await;
    page.click("#password-form button[type=\"submit\"]").await;
    page.wait_until(
        "the dialog closed",
        "return document.getElementById('password-dialog').open;",
        vec![],
        |v| v == false,
    )
    .await;
    let new = page
        .wait_until(
            "a new stored token",
            "return localStorage.getItem('rollcall.token');",
            vec![],
            |v| v.as_str().is_some_and(|t| t != old),
        )
        .await;
    let new = new.as_str().unwrap_or_default().to_string();
    page.wait_connection("online").await;
    assert_eq!(
        page.js("return document.getElementById('signin').hidden;", vec![])
            .await,
        true,
        "the page signed out"
    );
    assert_eq!(
        upgrade(&server, &old).await,
        Err(401),
        "the old token is refused"
    );
    upgrade(&server, &new).await.expect("the new token is good");
    assert_eq!(login_status(&server, "alice", ALICE_PASSWORD), 401);
    assert_eq!(login_status(&server, "alice", "alice-second-password"), 200);

    // Still connected: a message from the page reaches Bob.
    page.open_conversation("team").await;
    page.type_into("#composer-input", "Sent after the password change.\u{E007}")
        .await;
    let msg = bob.recv_msg("team").await;
    assert_eq!(msg["body"], "Sent after the password change.");
    assert_eq!(msg["from"], "alice");
    bob.close().await;
    page.close().await;
}

#[tokio::test]
async fn a_revoked_or_deactivated_account_lands_on_the_sign_in_form_saying_why() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    create_user(&server, "carol", "Carol", None);
    create_user(&server, "dave", "Dave", Some("dave-password-1"));
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "name": "Release team", "members": ["carol", "dave"]})),
        201,
    );
    let mut driver = Driver::start();
    let carol = driver.open_as(&server, "carol").await;
    let dave = driver.page("dave").await;
    dave.goto(&server.url("/")).await;
    dave.wait_signed_out("the sign-in form").await;
    dave.sign_in("dave", "dave-password-1").await;
    carol.wait_connection("online").await;
    dave.wait_connection("online").await;

    server.admin_expect("POST", "/api/users/carol/revoke", None, 204);
    let message = carol.wait_signed_out("carol signed out").await;
    assert!(message.contains("revoked"), "{message}");
    assert_eq!(carol.stored_token().await, Value::Null);
    assert_eq!(carol.text("me").await, "");
    // A reload does not try the refused token again.
    carol.goto(&server.url("/")).await;
    carol.wait_signed_out("still signed out").await;

    server.admin_expect(
        "PUT",
        "/api/users/dave",
        Some(json!({"deactivated": true})),
        200,
    );
    let message = dave.wait_signed_out("dave signed out").await;
    assert!(message.contains("deactivated"), "{message}");
    assert_eq!(dave.stored_token().await, Value::Null);
    // Signing in again is refused while deactivated, and works once reactivated.
    dave.sign_in("dave", "dave-password-1").await;
    dave.wait_text("login-error", "the refusal", |t| {
        t == "Wrong user or password."
    })
    .await;
    server.admin_expect(
        "PUT",
        "/api/users/dave",
        Some(json!({"deactivated": false})),
        200,
    );
    dave.sign_in("dave", "dave-password-1").await;
    dave.wait_connection("online").await;
    carol.close().await;
    dave.close().await;
}

#[tokio::test]
async fn token_links_and_one_time_links_sign_in_and_leave_no_token_in_the_address_bar() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    create_user(&server, "alice", "Alice", None);
    create_user(&server, "bob", "Bob", None);
    let mut driver = Driver::start();

    let alice_token = token("alice");
    let alice = driver.page("alice").await;
    alice
        .goto(&server.url(&format!("/?token={alice_token}")))
        .await;
    alice.wait_connection("online").await;
    assert_eq!(alice.url().await, server.url("/"));
    assert_eq!(alice.stored_token().await, json!(alice_token));

    let link = server.admin_expect("POST", "/api/users/bob/login-link", Some(json!({})), 200);
    let path = link["path"].as_str().expect("a path").to_string();
    assert!(path.starts_with("/?link="), "{link}");
    let bob = driver.page("bob").await;
    bob.goto(&server.url(&path)).await;
    bob.wait_connection("online").await;
    assert_eq!(bob.text("me").await, "Signed in as bob");
    assert_eq!(bob.url().await, server.url("/"));
    let stored = bob.stored_token().await;
    let stored = stored.as_str().expect("a stored token");
    assert_ne!(stored, link["link"], "the link is exchanged, not kept");
    upgrade(&server, stored)
        .await
        .expect("the session token is good");

    // The link again, in another browser: refused, in words, and gone from the address bar.
    let again = driver.page("someone else").await;
    again.goto(&server.url(&path)).await;
    let message = again.wait_signed_out("the refusal").await;
    assert!(message.contains("already used"), "{message}");
    assert_eq!(again.url().await, server.url("/"));
    assert_eq!(again.stored_token().await, Value::Null);

    // A kept token revoked while no page was open: the upgrade is answered 401, and the next
    // visit lands on the sign-in form saying why, the token forgotten.
    alice.goto(&server.url("/healthz")).await;
    server.admin_expect("POST", "/api/users/alice/revoke", None, 204);
    alice.goto(&server.url("/")).await;
    let message = alice.wait_signed_out("the refused kept token").await;
    assert!(
        message.contains("refused") && message.contains("revoked"),
        "{message}"
    );
    assert_eq!(alice.stored_token().await, Value::Null);
    alice.close().await;
    bob.close().await;
    again.close().await;
}

#[tokio::test]
async fn a_group_created_in_the_page_appears_for_the_picked_members() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    for (id, name) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        create_user(&server, id, name, None);
    }
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    let bob = driver.open_as(&server, "bob").await;
    alice.wait_connection("online").await;
    bob.wait_connection("online").await;

    alice.click("#new-group").await;
    alice.type_into("#new-group-name", "Launch crew").await;
    // The picker lists everyone else; the filter narrows it.
    alice
        .wait_until(
            "the people to pick",
            "return [...document.querySelectorAll('#new-group-people input')].map(i => i.dataset.user);",
            vec![],
            |v| *v == json!(["bob", "carol"]),
        )
        .await;
    alice.type_into("#new-group-filter", "bo").await;
    let shown = alice
        .js(
            "return [...document.querySelectorAll('#new-group-people li')].filter(li => !li.hidden)
               .map(li => li.querySelector('input').dataset.user);",
            vec![],
        )
        .await;
    assert_eq!(shown, json!(["bob"]));
    alice
        .click("#new-group-people input[data-user=\"bob\"]")
        .await;
    alice.click("#new-group-form button[type=\"submit\"]").await;

    // Alice's page opens the new group; Bob's lists it; Carol is not in it.
    let group = alice
        .wait_until(
            "the new group open",
            "return document.getElementById('pane-title').textContent === 'Launch crew'
               ? document.querySelector('.conversation[aria-current=\"true\"]')?.dataset.group ?? null : null;",
            vec![],
            |v| v.is_string(),
        )
        .await;
    let group = group.as_str().unwrap_or_default().to_string();
    bob.wait_conversations("the group in Bob's list", |v| {
        v.as_array()
            .is_some_and(|rows| rows.iter().any(|r| *r == json!([group, "Launch crew"])))
    })
    .await;
    let stored = server.group(&group);
    let roles: Vec<(String, String)> = stored["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap_or_default().to_string(),
                m["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("alice".to_string(), "owner".to_string()),
            ("bob".into(), "member".into())
        ]
    );
    // And it is a conversation: Bob sees what Alice writes.
    alice
        .type_into("#composer-input", "Welcome aboard.\u{E007}")
        .await;
    bob.open_conversation(&group).await;
    bob.wait_until(
        "the message",
        "return [...document.querySelectorAll('#message-list li.msg .body')].map(b => b.textContent);",
        vec![],
        |v| *v == json!(["Welcome aboard."]),
    )
    .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn owners_and_admins_manage_a_group_in_its_settings_and_the_others_see_it() {
    let _serial = SERIAL.lock().await;
    let server = Server::start_with(&["--receipt-interval-ms", "100"]);
    for (id, name) in [
        ("alice", "Alice"),
        ("bob", "Bob"),
        ("carol", "Carol"),
        ("dave", "Dave"),
        ("erin", "Erin"),
    ] {
        create_user(&server, id, name, None);
    }
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(
            json!({"id": "team", "name": "Release team", "members": ["alice", "bob", "dave"],
                    "owner": "alice"}),
        ),
        201,
    );
    let mut driver = Driver::start();
    let alice = driver.open_as(&server, "alice").await;
    let bob = driver.open_as(&server, "bob").await;
    let carol = driver.open_as(&server, "carol").await;
    for page in [&alice, &bob, &carol] {
        page.wait_connection("online").await;
    }

    // A member sees the members, read-only: no rename, no add, no roles, no remove.
    bob.open_conversation("team").await;
    bob.wait_text("group-settings", "the Members button", |t| t == "Members")
        .await;
    bob.click("#group-settings").await;
    let seen = bob
        .wait_until("bob's read-only list", SETTINGS_JS, vec![], |v| {
            v["members"].as_array().is_some_and(|m| m.len() == 3)
        })
        .await;
    assert_eq!(seen["manage"], false, "{seen}");
    assert_eq!(seen["rename"], false, "{seen}");
    assert_eq!(seen["add"], false, "{seen}");
    assert_eq!(seen["policy"], false, "{seen}");
    assert_eq!(
        seen["members"],
        json!([
            ["alice", "owner", false, false],
            ["bob", "member", false, false],
            ["dave", "member", false, false]
        ])
    );
    bob.click("#settings-close").await;

    // The owner renames the group: Bob's page shows the new name at once.
    alice.open_conversation("team").await;
    alice
        .wait_text("group-settings", "the Settings button", |t| t == "Settings")
        .await;
    alice.click("#group-settings").await;
    let seen = alice
        .wait_until("alice's settings", SETTINGS_JS, vec![], |v| {
            v["members"].as_array().is_some_and(|m| m.len() == 3)
        })
        .await;
    assert_eq!(seen["manage"], true, "{seen}");
    assert_eq!(
        seen["members"],
        json!([
            ["alice", "owner", false, false],
            ["bob", "member", true, true],
            ["dave", "member", true, true]
        ])
    );
    alice.fill("#rename-input", "Launch crew").await;
    alice.click("#rename-form button[type=\"submit\"]").await;
    bob.wait_text("pane-title", "the new name on Bob's page", |t| {
        t == "Launch crew"
    })
    .await;
    assert_eq!(server.group("team")["name"], "Launch crew");

    // Adds Carol: her page lists the group.
    alice.choose("#add-member-select", "carol").await;
    alice
        .click("#add-member-form button[type=\"submit\"]")
        .await;
    carol
        .wait_conversations("the group in Carol's list", |v| lists(v, "team"))
        .await;
    alice
        .wait_until("carol in the list", SETTINGS_JS, vec![], |v| {
            v["members"].as_array().is_some_and(|m| m.len() == 4)
        })
        .await;
    wait_member(&server, "team", "carol", Some("member")).await;

    // The receipt policy: counts only, for everyone.
    alice.choose("#receipts-select", "counts").await;
    alice
        .wait_text("settings-receipts", "counts only", |t| {
            t.contains("counts only")
        })
        .await;
    assert_eq!(server.group("team")["receipts"], "counts");

    // Makes Bob an admin: his page gets the settings controls (not over the owner).
    alice
        .choose("#settings-members li[data-user=\"bob\"] select", "admin")
        .await;
    wait_member(&server, "team", "bob", Some("admin")).await;
    bob.wait_text("group-settings", "Bob's Settings button", |t| {
        t == "Settings"
    })
    .await;
    alice
        .wait_until("bob shown as admin", SETTINGS_JS, vec![], |v| {
            v["members"][1] == json!(["bob", "admin", true, true])
        })
        .await;
    alice
        .browser
        .set_window_size(1100, 860)
        .await
        .expect("resizing");
    alice
        .screenshot("group-settings.png", Some("group-settings.png"))
        .await;
    bob.click("#group-settings").await;
    let seen = bob
        .wait_until("bob's settings as admin", SETTINGS_JS, vec![], |v| {
            v["manage"] == true && v["members"].as_array().is_some_and(|m| m.len() == 4)
        })
        .await;
    assert_eq!(seen["rename"], true, "{seen}");
    assert!(
        seen["receipts"]
            .as_str()
            .is_some_and(|t| t.contains("counts only")),
        "{seen}"
    );
    assert_eq!(
        seen["members"][0],
        json!(["alice", "owner", false, false]),
        "an admin gets no control over the owner"
    );
    bob.click("#settings-close").await;

    // Removes Carol while she has it open: her pane says why instead of going blank.
    carol.open_conversation("team").await;
    alice
        .click("#settings-members li[data-user=\"carol\"] .remove-member")
        .await;
    let notice = carol
        .wait_text("pane-notice", "the removal notice", |t| !t.is_empty())
        .await;
    assert_eq!(notice, "You were removed from Launch crew.");
    assert!(!lists(&carol.conversations().await, "team"));
    wait_member(&server, "team", "carol", None).await;

    // Bob leaves (after a confirmation): his list loses it; Alice's next look shows him gone.
    bob.click("#group-settings").await;
    bob.wait_until("bob's settings", SETTINGS_JS, vec![], |v| !v.is_null())
        .await;
    bob.click("#leave-group").await;
    bob.click("#leave-yes").await;
    let notice = bob
        .wait_text("pane-notice", "the leave notice", |t| !t.is_empty())
        .await;
    assert_eq!(notice, "You left Launch crew.");
    assert!(!lists(&bob.conversations().await, "team"));
    wait_member(&server, "team", "bob", None).await;
    alice.click("#settings-close").await;
    alice.click("#group-settings").await;
    alice
        .wait_until("bob gone from the list", SETTINGS_JS, vec![], |v| {
            v["members"]
                == json!([
                    ["alice", "owner", false, false],
                    ["dave", "member", true, true]
                ])
        })
        .await;

    // Phone width: the dialog fits.
    alice
        .browser
        .set_window_size(400, 800)
        .await
        .expect("resizing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        alice.overflows().await,
        Value::Null,
        "something is wider than the screen"
    );
    alice.screenshot("narrow-settings.png", None).await;
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

/// The admin page's users table: `[[id, deactivated]]` of the page shown.
const USERS_JS: &str = "return [...document.querySelectorAll('#users-body tr[data-user]')]
    .map(tr => [tr.dataset.user, tr.dataset.deactivated === 'true']);";

/// The admin page's groups table: `[[id, name, members]]`.
const GROUPS_JS: &str = "return [...document.querySelectorAll('#groups-body tr[data-group]')]
    .map(tr => [tr.dataset.group, tr.querySelector('.name').textContent,
                Number(tr.querySelector('.count').textContent)]);";

/// Clicks a button in the row of `user` on the admin page.
async fn user_action(admin: &Page, user: &str, class: &str) {
    admin
        .click(&format!(
            "#users-body tr[data-user=\"{user}\"] button.{class}"
        ))
        .await;
}

#[tokio::test]
async fn the_admin_page_manages_users_and_groups() {
    let _serial = SERIAL.lock().await;
    let server = Server::start();
    create_user(&server, "alice", "Alice", None);
    create_user(&server, "bob", "Bob", None);
    for n in 1..=20 {
        create_user(&server, &format!("user{n:02}"), &format!("User {n}"), None);
    }
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(
            json!({"id": "team", "name": "Release team", "members": ["alice", "bob"],
                    "owner": "alice"}),
        ),
        201,
    );
    let mut driver = Driver::start();
    let admin = driver.page("admin").await;
    admin.goto(&server.url("/admin")).await;

    // The admin token goes into a form, never the URL; a wrong one is refused.
    admin
        .type_into("#admin-token-input", "not-the-admin-token")
        .await;
    admin
        .click("#admin-signin-form button[type=\"submit\"]")
        .await;
    admin
        .wait_text("admin-signin-error", "the refusal", |t| {
            t == "That is not the admin token."
        })
        .await;
    admin.fill("#admin-token-input", ADMIN_TOKEN).await;
    admin
        .click("#admin-signin-form button[type=\"submit\"]")
        .await;
    let first = admin
        .wait_until("the first page of users", USERS_JS, vec![], |v| {
            v.as_array().is_some_and(|rows| rows.len() == 20)
        })
        .await;
    assert_eq!(first[0], json!(["alice", false]));
    assert_eq!(admin.url().await, server.url("/admin"));
    assert_eq!(
        admin
            .js(
                "return sessionStorage.getItem('rollcall.admin-token');",
                vec![]
            )
            .await,
        ADMIN_TOKEN
    );
    admin.click("#users-next").await;
    admin
        .wait_until("the second page", USERS_JS, vec![], |v| {
            *v == json!([["user19", false], ["user20", false]])
        })
        .await;
    admin.click("#users-prev").await;
    admin
        .wait_until("the first page again", USERS_JS, vec![], |v| *v == first)
        .await;

    // Creates a user with a password: that user signs in with it.
    admin.type_into("#new-user-id", "erin").await;
    admin.type_into("#new-user-name", "Erin").await;
    admin
        .type_into("#new-user-password", "erin-password-1")
        .await;
    admin
        .click("#create-user-form button[type=\"submit\"]")
        .await;
    admin
        .wait_until("erin listed", USERS_JS, vec![], |v| {
            v.as_array()
                .is_some_and(|rows| rows.iter().any(|r| r[0] == "erin"))
        })
        .await;
    let user = driver.page("user").await;
    user.goto(&server.url("/")).await;
    user.wait_signed_out("the sign-in form").await;
    user.sign_in("erin", "erin-password-1").await;
    user.wait_connection("online").await;
    assert_eq!(user.text("me").await, "Signed in as erin");

    // Revokes Erin: her page lands on the sign-in form, saying so.
    user_action(&admin, "erin", "revoke").await;
    let message = user.wait_signed_out("erin revoked").await;
    assert!(message.contains("revoked"), "{message}");

    // Resets her password: the old one is refused, the new one signs in.
    user_action(&admin, "erin", "reset").await;
    admin.type_into("#reset-password", "erin-password-2").await;
    admin.click("#reset-form button[type=\"submit\"]").await;
    admin
        .wait_text("admin-status", "the reset said", |t| {
            t.starts_with("New password set for erin")
        })
        .await;
    assert_eq!(login_status(&server, "erin", "erin-password-1"), 401);
    user.sign_in("erin", "erin-password-2").await;
    user.wait_connection("online").await;
    user.click("#sign-out").await;
    user.wait_signed_out("signed out").await;

    // Creates a user without a password: a one-time sign-in link to hand over, which works.
    admin.type_into("#new-user-id", "frank").await;
    admin
        .click("#create-user-form button[type=\"submit\"]")
        .await;
    let link = admin
        .wait_until(
            "the sign-in link",
            "const d = document.getElementById('link-dialog');
             return d.open && d.dataset.user === 'frank' ? document.getElementById('link-output').value : null;",
            vec![],
            |v| v.is_string(),
        )
        .await;
    let link = link.as_str().unwrap_or_default().to_string();
    assert!(link.starts_with(&server.url("/?link=")), "{link}");
    admin.click("#link-close").await;
    user.goto(&link).await;
    user.wait_connection("online").await;
    assert_eq!(user.text("me").await, "Signed in as frank");
    assert_eq!(user.url().await, server.url("/"));

    // Deactivates Frank: his page lands on the sign-in form; reactivated, the row says so.
    user_action(&admin, "frank", "deactivate").await;
    let message = user.wait_signed_out("frank deactivated").await;
    assert!(message.contains("deactivated"), "{message}");
    admin
        .wait_until("frank shown deactivated", USERS_JS, vec![], |v| {
            v.as_array()
                .is_some_and(|rows| rows.iter().any(|r| *r == json!(["frank", true])))
        })
        .await;
    assert_eq!(
        server.admin_expect("GET", "/api/users/frank", None, 200)["deactivated"],
        true
    );
    user_action(&admin, "frank", "reactivate").await;
    admin
        .wait_until("frank active again", USERS_JS, vec![], |v| {
            v.as_array()
                .is_some_and(|rows| rows.iter().any(|r| *r == json!(["frank", false])))
        })
        .await;
    assert_eq!(
        server.admin_expect("GET", "/api/users/frank", None, 200)["deactivated"],
        false
    );

    // Groups: listed with their members; renamed; deleted after a confirmation, and the
    // member who has it open is told.
    let alice = driver.open_as(&server, "alice").await;
    alice.wait_connection("online").await;
    alice.open_conversation("team").await;
    admin
        .wait_until("the groups", GROUPS_JS, vec![], |v| {
            *v == json!([["team", "Release team", 2]])
        })
        .await;
    admin
        .click("#groups-body tr[data-group=\"team\"] button.members")
        .await;
    let members = admin
        .wait_until(
            "the members",
            "return [...document.querySelectorAll('tr[data-members-of=\"team\"]:not([hidden]) li')]
               .map(li => [li.dataset.user, li.dataset.role]);",
            vec![],
            |v| v.as_array().is_some_and(|m| !m.is_empty()),
        )
        .await;
    assert_eq!(members, json!([["alice", "owner"], ["bob", "member"]]));
    admin
        .click("#groups-body tr[data-group=\"team\"] button.rename")
        .await;
    admin.fill("#admin-rename-input", "Launch").await;
    admin
        .click("#admin-rename-form button[type=\"submit\"]")
        .await;
    admin
        .wait_until("the new name", GROUPS_JS, vec![], |v| {
            *v == json!([["team", "Launch", 2]])
        })
        .await;
    alice
        .wait_text("pane-title", "the new name on Alice's page", |t| {
            t == "Launch"
        })
        .await;
    admin
        .click("#groups-body tr[data-group=\"team\"] button.members")
        .await;
    // The picture: the last page of users (short), and the group's members below.
    admin.click("#users-next").await;
    admin
        .wait_until("the last page", USERS_JS, vec![], |v| {
            v.as_array().is_some_and(|rows| rows.len() == 4)
        })
        .await;
    admin
        .browser
        .set_window_size(1100, 900)
        .await
        .expect("resizing");
    admin.js("window.scrollTo(0, 0);", vec![]).await;
    admin.screenshot("admin.png", Some("admin.png")).await;

    admin
        .click("#groups-body tr[data-group=\"team\"] button.delete")
        .await;
    admin.click("#delete-no").await;
    assert_eq!(
        server.group("team")["name"],
        "Launch",
        "cancelled: still there"
    );
    admin
        .click("#groups-body tr[data-group=\"team\"] button.delete")
        .await;
    admin
        .wait_text("delete-what", "the confirmation", |t| {
            t.starts_with("Launch (team)")
        })
        .await;
    admin.click("#delete-yes").await;
    admin
        .wait_until("the group gone", GROUPS_JS, vec![], |v| *v == json!([]))
        .await;
    assert_eq!(server.admin("GET", "/api/groups/team", None).0, 404);
    let notice = alice
        .wait_text("pane-notice", "the deletion notice", |t| !t.is_empty())
        .await;
    assert_eq!(notice, "Launch was deleted.");

    // Phone width: the page fits (the tables become stacked rows).
    admin
        .browser
        .set_window_size(400, 800)
        .await
        .expect("resizing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        admin.overflows().await,
        Value::Null,
        "something is wider than the screen"
    );
    admin.screenshot("narrow-admin.png", None).await;

    // Signing out of the admin page forgets the token.
    admin.click("#admin-sign-out").await;
    assert_eq!(
        admin
            .js(
                "return sessionStorage.getItem('rollcall.admin-token');",
                vec![]
            )
            .await,
        Value::Null
    );
    admin.close().await;
    user.close().await;
    alice.close().await;
}
