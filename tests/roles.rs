//! Groups managed by their members, end to end (docs/PROTOCOL.md §3.1, §3.2, §3.5, and the admin
//! equivalents of §2): `create_group`, `add_member`, `remove_member`, `set_role`,
//! `rename_group`, `set_receipts`, `leave` and `members` over WebSocket with every role rule and
//! refusal; `POST /api/groups` with `owner`, `PUT`/`DELETE` of members and `DELETE` of a group
//! over HTTP. Every refusal is checked to store nothing (the admin's `GET` of the group, or of
//! the group listing, is the same before and after), and every change to survive a SIGKILL.

mod common;

use std::time::Duration;

use common::{http_error_code, Client, Server};
use serde_json::{json, Value};

/// Creates users with display names that differ from their ids, so replies show which is which.
fn named_users(server: &Server, users: &[(&str, &str)]) {
    for (id, name) in users {
        server.admin_expect(
            "POST",
            "/api/users",
            Some(json!({"id": id, "name": name})),
            201,
        );
    }
}

/// `POST /api/groups` with an owner; must answer 201.
fn group_with_owner(server: &Server, id: &str, members: &[&str], owner: &str) -> Value {
    server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": id, "members": members, "owner": owner})),
        201,
    )
}

/// `PUT /api/groups/{gid}/members/{uid}` with `{"role"}`; must answer 200 (the member).
fn put_role(server: &Server, group: &str, user: &str, role: &str) -> Value {
    server.admin_expect(
        "PUT",
        &format!("/api/groups/{group}/members/{user}"),
        Some(json!({"role": role})),
        200,
    )
}

/// The whole group listing (`GET /api/groups`), to show that a refused creation stored nothing.
fn listing(server: &Server) -> Value {
    server.admin_expect("GET", "/api/groups?limit=1000", None, 200)
}

/// `(user, role)` of every member of an admin group object, sorted by user.
fn roles(group: &Value) -> Vec<(String, String)> {
    group["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {group}"))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().expect("user").to_string(),
                m["role"].as_str().expect("role").to_string(),
            )
        })
        .collect()
}

/// `(user, role)` pairs written briefly.
fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

/// One entry of a `members` reply.
fn entry(user: &str, name: &str, role: &str, joined_seq: u64) -> Value {
    json!({"user": user, "name": name, "role": role, "joined_seq": joined_seq})
}

/// Sends a frame that must be refused with `code`, and checks that the group as the admin sees
/// it is exactly as before.
async fn refused(server: &Server, client: &mut Client, group: &str, frame: Value, code: &str) {
    let before = server.group(group);
    client.expect_error(frame.clone(), code).await;
    // A round trip through the group, so a change the refusal made anyway would be visible.
    client.ping().await;
    assert_eq!(
        server.group(group),
        before,
        "[{}] {frame} was refused with {code} but changed the group",
        client.user
    );
}

/// A request that must be answered with a `members` reply; returns its `members` list.
async fn members_reply(client: &mut Client, frame: Value) -> Value {
    let reply = client.request(frame.clone()).await;
    assert_eq!(
        reply["type"], "members",
        "[{}] {frame} answered with {reply}",
        client.user
    );
    assert_eq!(reply["group"], frame["group"], "{reply}");
    // Presence (`online`) is tests/conversation.rs's: the entries here are compared without it.
    let mut members = reply["members"].clone();
    for member in members.as_array_mut().into_iter().flatten() {
        let online = member
            .as_object_mut()
            .and_then(|m| m.remove("online"))
            .unwrap_or_else(|| panic!("a members entry without online: {reply}"));
        assert!(online.is_boolean(), "{reply}");
    }
    members
}

/// The `(user, role)` pairs of a `members` list.
fn reply_roles(members: &Value) -> Vec<(String, String)> {
    roles(&json!({ "members": members }))
}

/// The next frame of `frame_type` about `group`.
async fn recv_about(client: &mut Client, frame_type: &str, group: &str) -> Value {
    client
        .recv_where(&format!("a {frame_type} of {group}"), |f| {
            f["type"] == frame_type && f["group"] == group
        })
        .await
}

/// After a round trip, checks that no frame of `frame_type` about `group` arrived.
async fn assert_none_about(client: &mut Client, frame_type: &str, group: &str) {
    client.ping().await;
    client.drain_for(Duration::from_millis(200)).await;
    if let Some(frame) = client
        .pending()
        .iter()
        .find(|f| f["type"] == frame_type && f["group"] == group)
    {
        panic!("[{}] unexpected {frame_type}: {frame}", client.user);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_group_makes_the_creator_owner_and_tells_every_online_member() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")],
    );
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let before = listing(&server);
    assert_eq!(before["groups"], json!([]));

    // The creator is named again in `members`, and bob twice: each is a member once.
    let created = alice
        .request(json!({
            "type": "create_group", "id": "c1", "name": "  Launch  ",
            "members": ["bob", "carol", "alice", "bob"]
        }))
        .await;
    assert_eq!(created["type"], "group_created", "{created}");
    assert_eq!(created["id"], "c1", "{created}");
    let group = created["group"].as_str().expect("a group id").to_string();
    assert!(
        group.len() == 14
            && group.starts_with("g-")
            && group[2..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "a generated group id is g- and 12 lowercase letters or digits: {group}"
    );

    // Every online member, the creator included, is told with `joined` and their role.
    let joined = recv_about(&mut alice, "joined", &group).await;
    assert_eq!(
        joined,
        json!({
            "type": "joined", "group": group, "name": "Launch", "kind": "group",
            "last_seq": 0, "delivered": 0, "read": 0, "unread": 0,
            "receipts": "full", "marked_unread": false, "role": "owner",
            "first_seq": 1, "last_ts": 0
        })
    );
    let joined = recv_about(&mut bob, "joined", &group).await;
    assert_eq!(joined["role"], "member", "{joined}");
    assert_eq!(joined["name"], "Launch", "{joined}");

    // `members` (any member may ask): names and roles, sorted by id.
    let members = members_reply(&mut bob, json!({"type": "members", "group": group})).await;
    assert_eq!(
        members,
        json!([
            entry("alice", "Alice", "owner", 0),
            entry("bob", "Bob", "member", 0),
            entry("carol", "Carol", "member", 0),
        ])
    );
    let described = server.group(&group);
    assert_eq!(described["name"], "Launch");
    assert_eq!(described["kind"], "group");
    assert_eq!(
        roles(&described),
        pairs(&[("alice", "owner"), ("bob", "member"), ("carol", "member")])
    );
    let after = listing(&server);
    assert_eq!(after["groups"].as_array().map(Vec::len), Some(1), "{after}");
    assert_eq!(after["groups"][0]["id"], group.as_str());
    assert_eq!(after["groups"][0]["members"], 3);

    // A new session of the creator lists the group as owner; carol, offline then, as member.
    let alice_again = server.connect("alice").await;
    let listed = alice_again.welcome_group(&group).expect("the new group");
    assert_eq!(listed["role"], "owner", "{listed}");
    assert_eq!(listed["name"], "Launch", "{listed}");
    let carol = server.connect("carol").await;
    assert_eq!(
        carol.welcome_group(&group).expect("the new group")["role"],
        "member"
    );

    // The group works: a message reaches the members.
    alice.send_msg(&group, "c1", "kick-off").await;
    assert_eq!(bob.recv_msg(&group).await["body"], "kick-off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_group_refusals_create_nothing() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("dave", "Dave")],
    );
    server.admin_expect(
        "PUT",
        "/api/users/dave",
        Some(json!({"deactivated": true})),
        200,
    );
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let before = listing(&server);
    let long = "x".repeat(101);
    let cases = [
        (
            json!({"name": "Typo", "members": ["bob", "nobody"]}),
            "no_such_user",
        ),
        (json!({"name": "Gone", "members": ["dave"]}), "no_such_user"),
        (json!({"name": "", "members": ["bob"]}), "bad_frame"),
        (json!({"name": "   ", "members": ["bob"]}), "bad_frame"),
        (json!({"name": long, "members": ["bob"]}), "bad_frame"),
        (json!({"members": ["bob"]}), "bad_frame"),
        (
            json!({"name": "Bad id", "members": ["has space"]}),
            "bad_frame",
        ),
    ];
    for (mut frame, code) in cases {
        frame["type"] = json!("create_group");
        alice.expect_error(frame.clone(), code).await;
        assert_eq!(
            listing(&server),
            before,
            "{frame} was refused with {code} but a group was stored"
        );
    }
    // Nobody was created because a group named them, and bob was told of no group.
    let (status, body) = server.admin("GET", "/api/users/nobody", None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_user")
    );
    bob.ping().await;
    bob.drain_for(Duration::from_millis(200)).await;
    assert!(
        !bob.pending().iter().any(|f| f["type"] == "joined"),
        "bob heard of a refused group: {:?}",
        bob.pending()
    );

    // 100 characters after trimming is still a name; the creator alone is a group.
    let name = format!("  {}  ", "y".repeat(100));
    let created = alice
        .request(json!({"type": "create_group", "name": name, "members": []}))
        .await;
    assert_eq!(created["type"], "group_created", "{created}");
    let group = created["group"].as_str().expect("group");
    assert_eq!(server.group(group)["name"], "y".repeat(100));
    assert_eq!(roles(&server.group(group)), pairs(&[("alice", "owner")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_user_groups_off_only_the_admin_creates_groups() {
    let server = Server::start_with(&["--user-groups", "false"]);
    named_users(&server, &[("alice", "Alice"), ("bob", "Bob")]);
    let mut alice = server.connect("alice").await;
    let before = listing(&server);
    alice
        .expect_error(
            json!({"type": "create_group", "name": "Mine", "members": ["bob"]}),
            "not_allowed",
        )
        .await;
    assert_eq!(
        listing(&server),
        before,
        "a refused create_group stored a group"
    );

    // The admin still creates groups, and their owners still manage them.
    group_with_owner(&server, "team", &["alice"], "alice");
    let members = members_reply(
        &mut alice,
        json!({"type": "add_member", "group": "team", "user": "bob"}),
    )
    .await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "owner"), ("bob", "member")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_add_remove_and_set_roles() {
    let server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
            ("erin", "Erin"),
        ],
    );
    group_with_owner(&server, "team", &["alice", "bob", "carol"], "alice");
    server.post("team", "alice", "before dave");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    let mut erin = server.connect("erin").await;

    // The owner adds dave: the reply is the members with names and roles; dave is told.
    let members = members_reply(
        &mut alice,
        json!({"type": "add_member", "id": 7, "group": "team", "user": "dave"}),
    )
    .await;
    assert_eq!(
        members,
        json!([
            entry("alice", "Alice", "owner", 0),
            entry("bob", "Bob", "member", 0),
            entry("carol", "Carol", "member", 0),
            entry("dave", "Dave", "member", 1),
        ])
    );
    let joined = recv_about(&mut dave, "joined", "team").await;
    assert_eq!(
        (&joined["role"], &joined["last_seq"]),
        (&json!("member"), &json!(1)),
        "{joined}"
    );
    // Adding a member again changes nothing and tells nobody.
    let again = members_reply(
        &mut alice,
        json!({"type": "add_member", "group": "team", "user": "dave"}),
    )
    .await;
    assert_eq!(again, members);
    assert_none_about(&mut dave, "joined", "team").await;

    // The owner makes bob admin; bob hears his new role as group_updated.
    let members = members_reply(
        &mut alice,
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "admin"}),
    )
    .await;
    assert_eq!(members[1], entry("bob", "Bob", "admin", 0));
    let updated = recv_about(&mut bob, "group_updated", "team").await;
    assert_eq!(
        updated,
        json!({"type": "group_updated", "group": "team", "name": "team", "receipts": "full", "role": "admin"})
    );

    // The admin adds erin, makes her admin and member again, and removes carol.
    members_reply(
        &mut bob,
        json!({"type": "add_member", "group": "team", "user": "erin"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut erin, "joined", "team").await["role"],
        "member"
    );
    let members = members_reply(
        &mut bob,
        json!({"type": "set_role", "group": "team", "user": "erin", "role": "admin"}),
    )
    .await;
    assert_eq!(members[4], entry("erin", "Erin", "admin", 1));
    assert_eq!(
        recv_about(&mut erin, "group_updated", "team").await["role"],
        "admin"
    );
    members_reply(
        &mut bob,
        json!({"type": "set_role", "group": "team", "user": "erin", "role": "member"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut erin, "group_updated", "team").await["role"],
        "member"
    );
    let members = members_reply(
        &mut bob,
        json!({"type": "remove_member", "group": "team", "user": "carol"}),
    )
    .await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[
            ("alice", "owner"),
            ("bob", "admin"),
            ("dave", "member"),
            ("erin", "member")
        ])
    );
    let left = recv_about(&mut carol, "left", "team").await;
    assert_eq!(
        left,
        json!({"type": "left", "group": "team", "reason": "removed"})
    );
    carol
        .expect_error(
            json!({"type": "send", "group": "team", "client_id": "c1", "body": "still here?"}),
            "not_member",
        )
        .await;

    // The owner removes the admin, and makes dave a second owner, who then unmakes her.
    members_reply(
        &mut alice,
        json!({"type": "remove_member", "group": "team", "user": "bob"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut bob, "left", "team").await["reason"],
        "removed"
    );
    // Added again, he starts over as a member: the role went with the membership.
    let members = members_reply(
        &mut alice,
        json!({"type": "add_member", "group": "team", "user": "bob"}),
    )
    .await;
    assert_eq!(members[1], entry("bob", "Bob", "member", 1));
    assert_eq!(
        recv_about(&mut bob, "joined", "team").await["role"],
        "member"
    );
    members_reply(
        &mut alice,
        json!({"type": "remove_member", "group": "team", "user": "bob"}),
    )
    .await;
    members_reply(
        &mut alice,
        json!({"type": "set_role", "group": "team", "user": "dave", "role": "owner"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut dave, "group_updated", "team").await["role"],
        "owner"
    );
    let members = members_reply(
        &mut dave,
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "member"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut alice, "group_updated", "team").await["role"],
        "member"
    );
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "member"), ("dave", "owner"), ("erin", "member")])
    );
    // What was answered is what is stored.
    assert_eq!(roles(&server.group("team")), reply_roles(&members));
    // Their new sessions list the roles too.
    let welcome = server.connect("dave").await;
    assert_eq!(
        welcome.welcome_group("team").expect("team")["role"],
        "owner"
    );
    let welcome = server.connect("carol").await;
    assert!(
        welcome.welcome_group("team").is_none(),
        "{}",
        welcome.welcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_may_not_manage_the_group() {
    let server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
        ],
    );
    group_with_owner(&server, "team", &["alice", "bob", "carol"], "alice");
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    let frames = [
        json!({"type": "add_member", "group": "team", "user": "dave"}),
        json!({"type": "remove_member", "group": "team", "user": "carol"}),
        json!({"type": "remove_member", "group": "team", "user": "alice"}),
        json!({"type": "set_role", "group": "team", "user": "carol", "role": "admin"}),
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "admin"}),
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "owner"}),
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "member"}),
        json!({"type": "rename_group", "group": "team", "name": "Bob's"}),
        json!({"type": "set_receipts", "group": "team", "receipts": "off"}),
    ];
    for frame in frames {
        refused(&server, &mut bob, "team", frame, "not_allowed").await;
    }
    assert_none_about(&mut dave, "joined", "team").await;
    assert_none_about(&mut carol, "left", "team").await;
    assert_none_about(&mut carol, "group_updated", "team").await;
    // A member may still list the members and leave (below, in leave's own test).
    let members = members_reply(&mut bob, json!({"type": "members", "group": "team"})).await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "owner"), ("bob", "member"), ("carol", "member")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_cannot_remove_demote_or_make_owners() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")],
    );
    group_with_owner(&server, "team", &["alice", "bob", "carol"], "alice");
    put_role(&server, "team", "bob", "admin");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let frames = [
        json!({"type": "remove_member", "group": "team", "user": "alice"}),
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "admin"}),
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "member"}),
        json!({"type": "set_role", "group": "team", "user": "carol", "role": "owner"}),
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "owner"}),
    ];
    for frame in frames {
        refused(&server, &mut bob, "team", frame, "not_allowed").await;
    }
    assert_none_about(&mut alice, "left", "team").await;
    assert_none_about(&mut alice, "group_updated", "team").await;
    assert_none_about(&mut carol, "group_updated", "team").await;
    // What an admin may do to a non-owner still works.
    let members = members_reply(
        &mut bob,
        json!({"type": "set_role", "group": "team", "user": "carol", "role": "admin"}),
    )
    .await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "owner"), ("bob", "admin"), ("carol", "admin")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_owner_cannot_step_down() {
    let server = Server::start();
    named_users(&server, &[("alice", "Alice"), ("bob", "Bob")]);
    group_with_owner(&server, "team", &["alice", "bob"], "alice");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    for role in ["member", "admin"] {
        let frame = json!({"type": "set_role", "group": "team", "user": "alice", "role": role});
        refused(&server, &mut alice, "team", frame, "not_allowed").await;
    }
    // The admin API keeps the same rule: the last owner is not demoted.
    let before = server.group("team");
    let (status, body) = server.admin(
        "PUT",
        "/api/groups/team/members/alice",
        Some(json!({"role": "member"})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (403, "not_allowed")
    );
    assert_eq!(server.group("team"), before);
    // Setting the role one has is no change, and allowed.
    let members = members_reply(
        &mut alice,
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "owner"}),
    )
    .await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "owner"), ("bob", "member")])
    );

    // With another owner first, alice may step down; then bob is the last owner.
    members_reply(
        &mut alice,
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "owner"}),
    )
    .await;
    let members = members_reply(
        &mut alice,
        json!({"type": "set_role", "group": "team", "user": "alice", "role": "member"}),
    )
    .await;
    assert_eq!(
        reply_roles(&members),
        pairs(&[("alice", "member"), ("bob", "owner")])
    );
    let frame = json!({"type": "set_role", "group": "team", "user": "bob", "role": "admin"});
    refused(&server, &mut bob, "team", frame, "not_allowed").await;
    assert_eq!(
        roles(&server.group("team")),
        pairs(&[("alice", "member"), ("bob", "owner")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_misdirected_member_changes_store_nothing() {
    let server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("dave", "Dave"),
            ("zed", "Zed"),
        ],
    );
    server.admin_expect(
        "PUT",
        "/api/users/zed",
        Some(json!({"deactivated": true})),
        200,
    );
    group_with_owner(&server, "team", &["alice", "bob"], "alice");
    let mut alice = server.connect("alice").await;
    let cases = [
        // Removing yourself is `leave`.
        (
            json!({"type": "remove_member", "group": "team", "user": "alice"}),
            "bad_frame",
        ),
        (
            json!({"type": "set_role", "group": "team", "user": "bob", "role": "boss"}),
            "bad_frame",
        ),
        (
            json!({"type": "set_role", "group": "team", "user": "bob"}),
            "bad_frame",
        ),
        (
            json!({"type": "add_member", "group": "team", "user": "has space"}),
            "bad_frame",
        ),
        (json!({"type": "add_member", "group": "team"}), "bad_frame"),
        (
            json!({"type": "add_member", "group": "team", "user": "nobody"}),
            "no_such_user",
        ),
        (
            json!({"type": "add_member", "group": "team", "user": "zed"}),
            "no_such_user",
        ),
        (
            json!({"type": "remove_member", "group": "team", "user": "dave"}),
            "not_member",
        ),
        (
            json!({"type": "set_role", "group": "team", "user": "dave", "role": "admin"}),
            "not_member",
        ),
    ];
    for (frame, code) in cases {
        refused(&server, &mut alice, "team", frame, code).await;
    }
    let (status, _) = server.admin("GET", "/api/users/nobody", None);
    assert_eq!(status, 404, "add_member of an unknown user created them");
    for frame in [
        json!({"type": "add_member", "group": "nosuch", "user": "bob"}),
        json!({"type": "remove_member", "group": "nosuch", "user": "bob"}),
        json!({"type": "set_role", "group": "nosuch", "user": "bob", "role": "admin"}),
        json!({"type": "rename_group", "group": "nosuch", "name": "N"}),
        json!({"type": "leave", "group": "nosuch"}),
        json!({"type": "members", "group": "nosuch"}),
    ] {
        alice.expect_error(frame, "no_such_group").await;
    }
    let (status, _) = server.admin("GET", "/api/groups/nosuch", None);
    assert_eq!(status, 404, "a frame to an unknown group created it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_group_and_set_receipts_answer_and_tell_the_members() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")],
    );
    group_with_owner(&server, "team", &["alice", "bob", "carol"], "alice");
    put_role(&server, "team", "bob", "admin");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;

    let reply = alice
        .request(json!({"type": "rename_group", "id": "r1", "group": "team", "name": "  Eng  "}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "group_updated", "id": "r1", "group": "team", "name": "Eng", "receipts": "full"})
    );
    for client in [&mut bob, &mut carol] {
        let pushed = recv_about(client, "group_updated", "team").await;
        assert_eq!(
            pushed,
            json!({"type": "group_updated", "group": "team", "name": "Eng", "receipts": "full"})
        );
    }
    // An admin changes the receipt policy.
    let reply = bob
        .request(json!({"type": "set_receipts", "id": "p1", "group": "team", "receipts": "counts"}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "group_updated", "id": "p1", "group": "team", "name": "Eng", "receipts": "counts"})
    );
    for client in [&mut alice, &mut carol] {
        let pushed = client
            .recv_where("group_updated with counts", |f| {
                f["type"] == "group_updated" && f["receipts"] == "counts"
            })
            .await;
        assert_eq!(pushed["name"], "Eng", "{pushed}");
    }
    let described = server.group("team");
    assert_eq!(
        (&described["name"], &described["receipts"]),
        (&json!("Eng"), &json!("counts"))
    );

    let long = "n".repeat(101);
    for name in ["", "   ", long.as_str()] {
        let frame = json!({"type": "rename_group", "group": "team", "name": name});
        refused(&server, &mut alice, "team", frame, "bad_frame").await;
    }
    let frame = json!({"type": "set_receipts", "group": "team", "receipts": "some"});
    refused(&server, &mut alice, "team", frame, "bad_frame").await;
    let frame = json!({"type": "rename_group", "group": "team", "name": "Carol's"});
    refused(&server, &mut carol, "team", frame, "not_allowed").await;
    assert_eq!(
        server
            .connect("carol")
            .await
            .welcome_group("team")
            .expect("team")["name"],
        "Eng"
    );

    // Nobody renames or manages the members of a direct conversation.
    let direct = alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    let dm = direct["group"]
        .as_str()
        .expect("a direct group")
        .to_string();
    assert_eq!(dm, "dm:alice:bob");
    for frame in [
        json!({"type": "rename_group", "group": dm, "name": "Us"}),
        json!({"type": "add_member", "group": dm, "user": "carol"}),
        json!({"type": "remove_member", "group": dm, "user": "bob"}),
        json!({"type": "set_role", "group": dm, "user": "bob", "role": "admin"}),
    ] {
        refused(&server, &mut alice, &dm, frame, "not_allowed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_answers_left_and_the_last_owner_hands_ownership_on() {
    let server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
        ],
    );
    // Join points 0 (alice), 1 (bob), 2 (carol), 3 (dave): carol and dave are admins, bob,
    // the longest-standing after alice, only a member.
    group_with_owner(&server, "team", &["alice"], "alice");
    for (n, user) in ["bob", "carol", "dave"].iter().enumerate() {
        server.post("team", "alice", &format!("before {user}"));
        let member = server.admin_expect(
            "PUT",
            &format!("/api/groups/team/members/{user}"),
            None,
            200,
        );
        assert_eq!(member["joined_seq"], n as u64 + 1);
    }
    put_role(&server, "team", "dave", "admin");
    put_role(&server, "team", "carol", "admin");
    let mut alice = server.connect("alice").await;
    let mut alice_too = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;

    // alice leaves: the reply is `left` with the id; her other session hears it without.
    let left = alice
        .request(json!({"type": "leave", "id": "bye", "group": "team"}))
        .await;
    assert_eq!(
        left,
        json!({"type": "left", "id": "bye", "group": "team", "reason": "left"})
    );
    assert_eq!(
        recv_about(&mut alice_too, "left", "team").await,
        json!({"type": "left", "group": "team", "reason": "left"})
    );
    // The longest-standing admin takes over (carol, joined at 2), not the earlier member bob.
    let updated = recv_about(&mut carol, "group_updated", "team").await;
    assert_eq!(
        updated,
        json!({"type": "group_updated", "group": "team", "name": "team", "receipts": "full", "role": "owner"})
    );
    assert_none_about(&mut bob, "group_updated", "team").await;
    assert_none_about(&mut dave, "group_updated", "team").await;
    assert_eq!(
        roles(&server.group("team")),
        pairs(&[("bob", "member"), ("carol", "owner"), ("dave", "admin")])
    );
    // She is gone: no more pushes, no more frames, and leaving again is not_member.
    carol.send_msg("team", "c1", "after alice").await;
    assert_eq!(bob.recv_msg("team").await["body"], "after alice");
    alice.drain_for(Duration::from_millis(200)).await;
    alice.assert_no_msg("team");
    alice
        .expect_error(json!({"type": "leave", "group": "team"}), "not_member")
        .await;
    alice
        .expect_error(json!({"type": "members", "group": "team"}), "not_member")
        .await;
    assert!(server
        .connect("alice")
        .await
        .welcome_group("team")
        .is_none());

    // carol leaves too: dave is the only admin left.
    let left = carol
        .request(json!({"type": "leave", "group": "team"}))
        .await;
    assert_eq!(left["type"], "left", "{left}");
    assert_eq!(
        recv_about(&mut dave, "group_updated", "team").await["role"],
        "owner"
    );
    // A non-last owner leaving hands nothing on.
    members_reply(
        &mut dave,
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "owner"}),
    )
    .await;
    assert_eq!(
        recv_about(&mut bob, "group_updated", "team").await["role"],
        "owner"
    );
    let left = dave
        .request(json!({"type": "leave", "group": "team"}))
        .await;
    assert_eq!(left["reason"], "left", "{left}");
    assert_none_about(&mut bob, "group_updated", "team").await;
    assert_eq!(roles(&server.group("team")), pairs(&[("bob", "owner")]));

    // Without admins, the longest-standing member takes over, whatever the ids say.
    named_users(&server, &[("aaron", "Aaron"), ("zoe", "Zoe")]);
    group_with_owner(&server, "seniority", &["bob", "zoe"], "bob");
    server.post("seniority", "bob", "before aaron");
    server.admin_expect("PUT", "/api/groups/seniority/members/aaron", None, 200);
    let mut zoe = server.connect("zoe").await;
    bob.request(json!({"type": "leave", "group": "seniority"}))
        .await;
    assert_eq!(
        recv_about(&mut zoe, "group_updated", "seniority").await["role"],
        "owner"
    );
    assert_eq!(
        roles(&server.group("seniority")),
        pairs(&[("aaron", "member"), ("zoe", "owner")])
    );
    // On a tie of join points, the lower id.
    group_with_owner(&server, "tie", &["zoe", "dave", "carol"], "zoe");
    zoe.request(json!({"type": "leave", "group": "tie"})).await;
    assert_eq!(
        roles(&server.group("tie")),
        pairs(&[("carol", "owner"), ("dave", "member")])
    );

    // Nobody leaves a direct conversation.
    let direct = bob.request(json!({"type": "direct", "with": "dave"})).await;
    let dm = direct["group"].as_str().expect("group").to_string();
    refused(
        &server,
        &mut bob,
        &dm,
        json!({"type": "leave", "group": dm}),
        "not_allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_get_not_member_for_everything() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("mallory", "Mallory")],
    );
    group_with_owner(&server, "team", &["alice", "bob"], "alice");
    let mut mallory = server.connect("mallory").await;
    for frame in [
        json!({"type": "members", "group": "team"}),
        json!({"type": "add_member", "group": "team", "user": "mallory"}),
        json!({"type": "remove_member", "group": "team", "user": "bob"}),
        json!({"type": "set_role", "group": "team", "user": "mallory", "role": "owner"}),
        json!({"type": "set_role", "group": "team", "user": "bob", "role": "admin"}),
        json!({"type": "rename_group", "group": "team", "name": "Mine"}),
        json!({"type": "set_receipts", "group": "team", "receipts": "off"}),
        json!({"type": "leave", "group": "team"}),
    ] {
        refused(&server, &mut mallory, "team", frame, "not_member").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_roles_names_and_deletions_survive_a_crash() {
    let mut server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
        ],
    );
    let mut alice = server.connect("alice").await;
    let created = alice
        .request(json!({"type": "create_group", "name": "Crew", "members": ["bob", "carol"]}))
        .await;
    let crew = created["group"].as_str().expect("group").to_string();
    alice.send_msg(&crew, "c1", "first").await;
    members_reply(
        &mut alice,
        json!({"type": "add_member", "group": crew, "user": "dave"}),
    )
    .await;
    members_reply(
        &mut alice,
        json!({"type": "set_role", "group": crew, "user": "bob", "role": "admin"}),
    )
    .await;
    members_reply(
        &mut alice,
        json!({"type": "set_role", "group": crew, "user": "dave", "role": "owner"}),
    )
    .await;
    let reply = alice
        .request(json!({"type": "rename_group", "group": crew, "name": "Crew 2"}))
        .await;
    assert_eq!(reply["type"], "group_updated", "{reply}");
    let reply = alice
        .request(json!({"type": "set_receipts", "group": crew, "receipts": "off"}))
        .await;
    assert_eq!(reply["type"], "group_updated", "{reply}");
    let mut bob = server.connect("bob").await;
    let answered = members_reply(
        &mut bob,
        json!({"type": "remove_member", "group": crew, "user": "carol"}),
    )
    .await;
    assert_eq!(
        reply_roles(&answered),
        pairs(&[("alice", "owner"), ("bob", "admin"), ("dave", "owner")])
    );
    // alice, the first owner, leaves; dave is the other owner, so nothing is handed on.
    let left = alice.request(json!({"type": "leave", "group": crew})).await;
    assert_eq!(left["type"], "left", "{left}");
    let mut dave = server.connect("dave").await;
    let answered_after_leave =
        members_reply(&mut dave, json!({"type": "members", "group": crew})).await;
    assert_eq!(
        answered_after_leave,
        json!([
            entry("bob", "Bob", "admin", 0),
            entry("dave", "Dave", "owner", 1),
        ])
    );
    // A group deleted before the crash stays deleted.
    group_with_owner(&server, "doomed", &["bob", "dave"], "dave");
    assert_eq!(server.admin("DELETE", "/api/groups/doomed", None).0, 204);
    // A last owner removed by the admin hands over, durably.
    group_with_owner(&server, "handed", &["carol", "dave"], "carol");
    assert_eq!(
        server
            .admin("DELETE", "/api/groups/handed/members/carol", None)
            .0,
        204
    );
    // A last owner who leaves hands over, durably.
    group_with_owner(&server, "passed", &["carol", "bob"], "carol");
    let mut carol = server.connect("carol").await;
    let left = carol
        .request(json!({"type": "leave", "group": "passed"}))
        .await;
    assert_eq!(left["type"], "left", "{left}");
    drop((alice, bob, carol, dave));

    server.restart(); // SIGKILL
    assert_eq!(roles(&server.group("passed")), pairs(&[("bob", "owner")]));
    let described = server.group(&crew);
    assert_eq!(
        (&described["name"], &described["receipts"]),
        (&json!("Crew 2"), &json!("off"))
    );
    assert_eq!(
        roles(&described),
        reply_roles(&answered_after_leave),
        "after the crash: {described}"
    );
    let joined: Vec<u64> = described["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["joined_seq"].as_u64().expect("joined_seq"))
        .collect();
    assert_eq!(joined, vec![0, 1]);
    assert_eq!(roles(&server.group("handed")), pairs(&[("dave", "owner")]));
    let (status, _) = server.admin("GET", "/api/groups/doomed", None);
    assert_eq!(status, 404);
    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "doomed", "members": ["bob"]})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (409, "group_exists")
    );
    for (user, role) in [
        ("bob", Some("admin")),
        ("dave", Some("owner")),
        ("alice", None),
        ("carol", None),
    ] {
        let client = server.connect(user).await;
        let listed = client.welcome_group(&crew).map(|g| g["role"].clone());
        assert_eq!(
            listed,
            role.map(|r| json!(r)),
            "{user}'s welcome: {}",
            client.welcome
        );
        if let Some(entry) = client.welcome_group(&crew) {
            assert_eq!(entry["name"], "Crew 2");
            assert_eq!(entry["receipts"], "off");
        }
        assert!(
            client.welcome_group("doomed").is_none(),
            "{}",
            client.welcome
        );
    }
    let mut dave = server.connect("dave").await;
    let members = members_reply(&mut dave, json!({"type": "members", "group": crew})).await;
    assert_eq!(members, answered_after_leave);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_post_groups_names_the_owner() {
    let server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")],
    );
    let team = group_with_owner(&server, "team", &["alice", "bob"], "bob");
    assert_eq!(
        roles(&team),
        pairs(&[("alice", "member"), ("bob", "owner")])
    );
    let mut bob = server.connect("bob").await;
    assert_eq!(bob.welcome_group("team").expect("team")["role"], "owner");
    // The owner named by the admin manages the group.
    members_reply(
        &mut bob,
        json!({"type": "add_member", "group": "team", "user": "carol"}),
    )
    .await;

    let before = listing(&server);
    for (body, why) in [
        (
            json!({"id": "x", "members": ["alice"], "owner": "carol"}),
            "an owner who is not a member",
        ),
        (
            json!({"id": "x", "members": ["alice"], "owner": "nobody"}),
            "an owner who does not exist",
        ),
        (
            json!({"id": "x", "members": ["alice"], "owner": "has space"}),
            "a bad owner id",
        ),
        (
            json!({"id": "x", "members": [], "owner": "alice"}),
            "no members",
        ),
        (
            json!({"id": "x", "members": ["alice"], "owner": 7}),
            "an owner that is no string",
        ),
    ] {
        let (status, reply) = server.admin("POST", "/api/groups", Some(body.clone()));
        assert_eq!(
            (status, http_error_code(&reply).as_str()),
            (400, "bad_request"),
            "{why}: {body} → {reply}"
        );
        assert_eq!(
            listing(&server),
            before,
            "{why}: a refused POST stored a group"
        );
    }
    // Without an owner, the first listed member is the owner (not the lowest id).
    let eng = server.admin_expect(
        "POST",
        "/api/groups",
        Some(json!({"id": "eng", "members": ["carol", "alice"]})),
        201,
    );
    assert_eq!(
        roles(&eng),
        pairs(&[("alice", "member"), ("carol", "owner")])
    );
    assert_eq!(server.group("eng"), eng);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sets_roles_and_removing_the_last_owner_hands_over() {
    let server = Server::start();
    named_users(
        &server,
        &[
            ("alice", "Alice"),
            ("bob", "Bob"),
            ("carol", "Carol"),
            ("dave", "Dave"),
        ],
    );
    group_with_owner(&server, "team", &["alice", "bob", "carol"], "alice");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;

    // PUT with a role sets it on an existing member, who hears it.
    let member = put_role(&server, "team", "carol", "admin");
    assert_eq!(
        member,
        json!({"user": "carol", "name": "Carol", "role": "admin", "joined_seq": 0, "delivered": 0, "read": 0})
    );
    assert_eq!(
        recv_about(&mut carol, "group_updated", "team").await["role"],
        "admin"
    );
    // PUT without a body leaves the role as it is.
    let again = server.admin_expect("PUT", "/api/groups/team/members/carol", None, 200);
    assert_eq!(again["role"], "admin");
    // PUT of a new member with a role adds them with it; they learn both.
    server.post("team", "alice", "before dave");
    let member = put_role(&server, "team", "dave", "owner");
    assert_eq!(
        (&member["role"], &member["joined_seq"]),
        (&json!("owner"), &json!(1))
    );
    let joined = recv_about(&mut dave, "joined", "team").await;
    if joined["role"] != "owner" {
        assert_eq!(
            recv_about(&mut dave, "group_updated", "team").await["role"],
            "owner",
            "dave joined as {joined} and was never told he is owner"
        );
    }
    // The admin may demote an owner while another owner remains.
    put_role(&server, "team", "dave", "member");
    assert_eq!(
        recv_about(&mut dave, "group_updated", "team").await["role"],
        "member"
    );

    // Refusals store nothing.
    let before = server.group("team");
    for (method, path, body, status, code) in [
        (
            "PUT",
            "/api/groups/team/members/bob",
            Some(json!({"role": "boss"})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/groups/team/members/bob",
            Some(json!({"role": "admin", "admin": true})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/groups/team/members/nobody",
            Some(json!({"role": "admin"})),
            404,
            "no_such_user",
        ),
        (
            "PUT",
            "/api/groups/team/members/alice",
            Some(json!({"role": "admin"})),
            403,
            "not_allowed",
        ),
        (
            "PUT",
            "/api/groups/nosuch/members/bob",
            Some(json!({"role": "admin"})),
            404,
            "no_such_group",
        ),
        (
            "DELETE",
            "/api/groups/team/members/nobody",
            None,
            404,
            "not_member",
        ),
    ] {
        let (got, reply) = server.admin(method, path, body.clone());
        assert_eq!(
            (got, http_error_code(&reply).as_str()),
            (status, code),
            "{method} {path} {body:?} → {reply}"
        );
        assert_eq!(
            server.group("team"),
            before,
            "{method} {path} {body:?} changed the group"
        );
    }
    assert_none_about(&mut bob, "group_updated", "team").await;
    assert_none_about(&mut alice, "group_updated", "team").await;

    // DELETE of the last owner: the longest-standing admin (carol) takes over, over bob.
    let (status, body) = server.admin("DELETE", "/api/groups/team/members/alice", None);
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        recv_about(&mut alice, "left", "team").await["reason"],
        "removed"
    );
    assert_eq!(
        recv_about(&mut carol, "group_updated", "team").await["role"],
        "owner"
    );
    assert_eq!(
        roles(&server.group("team")),
        pairs(&[("bob", "member"), ("carol", "owner"), ("dave", "member")])
    );
    // The admin may remove any owner, and a member who is no owner hands nothing on.
    assert_eq!(
        server
            .admin("DELETE", "/api/groups/team/members/bob", None)
            .0,
        204
    );
    assert_none_about(&mut carol, "group_updated", "team").await;

    // Direct conversations: no members added, removed or given roles.
    let direct = bob.request(json!({"type": "direct", "with": "dave"})).await;
    let dm = direct["group"].as_str().expect("group").to_string();
    let before = server.group(&dm);
    for (method, path, body) in [
        ("PUT", format!("/api/groups/{dm}/members/carol"), None),
        (
            "PUT",
            format!("/api/groups/{dm}/members/bob"),
            Some(json!({"role": "owner"})),
        ),
        ("DELETE", format!("/api/groups/{dm}/members/bob"), None),
    ] {
        let (status, reply) = server.admin(method, &path, body);
        assert_eq!(
            (status, http_error_code(&reply).as_str()),
            (403, "not_allowed"),
            "{method} {path} → {reply}"
        );
    }
    assert_eq!(server.group(&dm), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_deletes_a_group_for_good() {
    let mut server = Server::start();
    named_users(
        &server,
        &[("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")],
    );
    group_with_owner(&server, "team", &["alice", "bob"], "alice");
    group_with_owner(&server, "other", &["alice", "carol"], "carol");
    server.post("team", "alice", "soon gone");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let direct = alice
        .request(json!({"type": "direct", "with": "bob"}))
        .await;
    let dm = direct["group"].as_str().expect("group").to_string();

    let (status, body) = server.admin("DELETE", "/api/groups/team", None);
    assert_eq!((status, &body), (204, &Value::Null), "{body}");
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            recv_about(client, "left", "team").await,
            json!({"type": "left", "group": "team", "reason": "deleted"})
        );
    }
    let (status, body) = server.admin("GET", "/api/groups/team", None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_group")
    );
    let (status, body) = server.admin("DELETE", "/api/groups/team", None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (404, "no_such_group")
    );
    let listed: Vec<Value> = listing(&server)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["id"].clone())
        .collect();
    assert_eq!(listed, vec![json!(dm), json!("other")]);
    // Its id is never handed out again, so a client's (group, seq) cache stays valid.
    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "members": ["alice"]})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (409, "group_exists")
    );
    // Frames about it are about no group.
    alice
        .expect_error(
            json!({"type": "send", "group": "team", "client_id": "c1", "body": "hello?"}),
            "no_such_group",
        )
        .await;
    alice
        .expect_error(json!({"type": "members", "group": "team"}), "no_such_group")
        .await;
    // The other groups are untouched.
    alice.send_msg("other", "o1", "still here").await;

    // A direct conversation is not deleted.
    let before = server.group(&dm);
    let (status, body) = server.admin("DELETE", &format!("/api/groups/{dm}"), None);
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (403, "not_allowed")
    );
    assert_eq!(server.group(&dm), before);

    // Gone from welcome after reconnecting, also after a crash.
    let alice_again = server.connect("alice").await;
    assert!(
        alice_again.welcome_group("team").is_none(),
        "{}",
        alice_again.welcome
    );
    assert!(alice_again.welcome_group("other").is_some());
    drop((alice, bob, alice_again));
    server.restart();
    let (status, _) = server.admin("GET", "/api/groups/team", None);
    assert_eq!(status, 404, "a deleted group came back after a crash");
    let (status, body) = server.admin(
        "POST",
        "/api/groups",
        Some(json!({"id": "team", "members": ["bob"]})),
    );
    assert_eq!(
        (status, http_error_code(&body).as_str()),
        (409, "group_exists")
    );
    for user in ["alice", "bob"] {
        let client = server.connect(user).await;
        assert!(client.welcome_group("team").is_none(), "{}", client.welcome);
        assert!(client.welcome_group(&dm).is_some(), "{}", client.welcome);
    }
    let listed = listing(&server);
    assert!(
        !listed["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["id"] == "team"),
        "{listed}"
    );
}

/// A client that writes several changes without waiting (a settings dialog that adds a member
/// and makes them admin at once) gets them applied in the order it wrote them, as the session
/// queues each change before reading the next frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_member_changes_apply_in_the_order_written() {
    let server = Server::start();
    named_users(&server, &[("alice", "Alice")]);
    group_with_owner(&server, "team", &["alice"], "alice");
    let mut alice = server.connect("alice").await;
    for round in 0..30 {
        let user = format!("user{round}");
        named_users(&server, &[(user.as_str(), "U")]);
        let frames = [
            json!({"type": "add_member", "id": format!("a{round}"), "group": "team", "user": user}),
            json!({"type": "set_role", "id": format!("b{round}"), "group": "team", "user": user, "role": "admin"}),
        ];
        for frame in &frames {
            alice.send_json(frame.clone()).await;
        }
        for frame in &frames {
            let id = frame["id"].clone();
            let reply = alice
                .recv_where(&format!("the reply to {frame}"), |f| {
                    f.get("id") == Some(&id)
                })
                .await;
            assert_eq!(
                reply["type"], "members",
                "round {round}: {frame} answered with {reply}"
            );
        }
    }
}

/// What a membership push tells a user has happened for good: a user who was told `joined`,
/// a new role, `left` (removed, left in another session, or deleted) or that ownership passed
/// to them finds the same after a SIGKILL that comes the moment the push arrives ("persist,
/// flush, answer, push"). Each kind is tried a few times, since the crash must fall between
/// the push and the flush that covers the change to catch a push sent too early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_push_means_the_change_is_durable() {
    const ROUNDS: usize = 6;
    let mut server = Server::start();
    named_users(&server, &[("alice", "Alice"), ("bob", "Bob")]);
    let kinds = ["joined", "role", "hand-over", "removed", "left", "deleted"];
    let mut broken = Vec::new();
    for kind in kinds {
        for round in 0..ROUNDS {
            let group = format!("{kind}-{round}");
            let members: &[&str] = if kind == "joined" {
                &["alice"]
            } else {
                &["alice", "bob"]
            };
            group_with_owner(&server, &group, members, "alice");
            let mut alice = server.connect("alice").await;
            let mut bob = server.connect("bob").await;
            let mut bob_too = server.connect("bob").await;
            let mut deleting = None;
            let (told, expected): (Value, Option<Vec<(String, String)>>) = match kind {
                "joined" => {
                    alice
                        .send_json(json!({"type": "add_member", "group": group, "user": "bob"}))
                        .await;
                    let told = recv_about(&mut bob, "joined", &group).await;
                    (told, Some(pairs(&[("alice", "owner"), ("bob", "member")])))
                }
                "role" => {
                    let frame =
                        json!({"type": "set_role", "group": group, "user": "bob", "role": "admin"});
                    alice.send_json(frame).await;
                    let told = recv_about(&mut bob, "group_updated", &group).await;
                    (told, Some(pairs(&[("alice", "owner"), ("bob", "admin")])))
                }
                "hand-over" => {
                    alice
                        .send_json(json!({"type": "leave", "group": group}))
                        .await;
                    let told = recv_about(&mut bob, "group_updated", &group).await;
                    (told, Some(pairs(&[("bob", "owner")])))
                }
                "removed" => {
                    alice
                        .send_json(json!({"type": "remove_member", "group": group, "user": "bob"}))
                        .await;
                    let told = recv_about(&mut bob, "left", &group).await;
                    (told, Some(pairs(&[("alice", "owner")])))
                }
                "left" => {
                    bob_too
                        .send_json(json!({"type": "leave", "group": group}))
                        .await;
                    let told = recv_about(&mut bob, "left", &group).await;
                    (told, Some(pairs(&[("alice", "owner")])))
                }
                _ => {
                    let url = server.url(&format!("/api/groups/{group}"));
                    deleting = Some(std::thread::spawn(move || {
                        let _ = ureq::delete(&url)
                            .set("Authorization", &format!("Bearer {}", common::ADMIN_TOKEN))
                            .call();
                    }));
                    let told = recv_about(&mut bob, "left", &group).await;
                    (told, None)
                }
            };
            server.kill9();
            if let Some(deleting) = deleting {
                let _ = deleting.join();
            }
            drop((alice, bob, bob_too));
            server.restart();
            let (status, stored) = server.admin("GET", &format!("/api/groups/{group}"), None);
            let kept = match &expected {
                Some(expected) => status == 200 && roles(&stored) == *expected,
                None => status == 404,
            };
            if !kept {
                broken.push(format!(
                    "{kind}, round {round}: bob was told {told}, then a crash undid it: \
                     GET answers {status} {stored}, expected {expected:?} (None: 404)"
                ));
                break;
            }
        }
    }
    assert!(
        broken.is_empty(),
        "pushes sent before the change was durable:\n{}",
        broken.join("\n")
    );
}

/// The session that sends `leave` is answered with `left {id}` and pushed nothing more; the
/// user's other sessions get `left` without an id (§3.2: "they left in another session").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_that_leaves_gets_only_its_reply() {
    let server = Server::start();
    named_users(&server, &[("alice", "Alice"), ("bob", "Bob")]);
    group_with_owner(&server, "team", &["alice", "bob"], "alice");
    let mut bob = server.connect("bob").await;
    let mut bob_too = server.connect("bob").await;
    let left = bob
        .request(json!({"type": "leave", "id": "bye", "group": "team"}))
        .await;
    assert_eq!(
        left,
        json!({"type": "left", "id": "bye", "group": "team", "reason": "left"})
    );
    assert_eq!(
        recv_about(&mut bob_too, "left", "team").await,
        json!({"type": "left", "group": "team", "reason": "left"})
    );
    bob.ping().await;
    bob.drain_for(Duration::from_millis(200)).await;
    let pushed: Vec<&Value> = bob
        .pending()
        .iter()
        .filter(|f| f["type"] == "left")
        .collect();
    assert!(
        pushed.is_empty(),
        "the session that sent leave got, besides its reply {left}, {pushed:?}"
    );
}
