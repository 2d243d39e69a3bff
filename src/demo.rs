//! `rollcall serve --demo`: a newcomer's first run. Into a data directory without users it seeds a few
//! users (each with the password [`PASSWORD`]), a group owned by alice and a direct
//! conversation with some history and read marks; on every demo start it prints one login link
//! per demo user for the built-in web client.
//!
//! Seeding goes through the same registry and group-actor commands as the admin HTTP API
//! (`create_user`, `create_group`, `PostMessage`, `AdvanceCursor`), so the seeded messages get
//! real seqs, are durable before the links are printed, and their receipts are consistent.
//! (Rejected: writing records into the store directly, which would bypass the one writer of a
//! group's tree and could hand out seqs the actor does not know.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::auth::DEFAULT_TOKEN_TTL_SECS;
use crate::group::{reply_channel, AdvanceCursor, Cursor, GroupError, PostMessage};
use crate::ids::{GroupId, UserId};
use crate::registry::Registry;
use crate::store::{GroupKindRecord, GroupSettingsRecord};

/// Every demo user's password (for the sign-in form; printed with the links).
pub const PASSWORD: &str = "rollcall-demo";

/// The demo users: (id, display name).
pub const USERS: &[(&str, &str)] = &[
    ("alice", "Alice"),
    ("bob", "Bob"),
    ("carol", "Carol"),
    ("dave", "Dave"),
];

/// The demo group's id.
pub const GROUP: &str = "team";

/// The group's history: (sender, body).
const HISTORY: &[(&str, &str)] = &[
    (
        "alice",
        "Welcome to Rollcall! This group was made by `rollcall serve --demo`.",
    ),
    (
        "bob",
        "Every message here has a gapless seq and is stored exactly once.",
    ),
    (
        "carol",
        "Read receipts come from two cursors per member, not a row per reader.",
    ),
    (
        "dave",
        "Open the same login link in a second tab: reading in one clears the badge in the other.",
    ),
    (
        "alice",
        "Click \u{201c}Read by\u{201d} under one of your messages to see who has read it.",
    ),
    (
        "bob",
        "Stop the server and start it again: the page reconnects and resyncs by itself.",
    ),
];

/// How far each member has received and read the group's history (seqs; alice wrote 1 and 5).
const CURSORS: &[(&str, u64, u64)] = &[
    ("alice", 6, 5),
    ("bob", 6, 6),
    ("carol", 5, 3),
    ("dave", 2, 1),
];

/// The direct conversation between alice and bob: (sender, body).
const DIRECT: &[(&str, &str)] = &[
    (
        "bob",
        "Hi Alice, this is a direct conversation (dm:alice:bob).",
    ),
    (
        "alice",
        "Start one with anyone from the \u{201c}New direct conversation\u{201d} box.",
    ),
];

/// Seeds the demo users, group and direct conversation, each step answered once durable.
pub async fn seed(registry: &Arc<Registry>, accounts: &Accounts) -> Result<(), GroupError> {
    let mut users = Vec::new();
    for (id, name) in USERS {
        let user = parse_user(id)?;
        accounts
            .create_user(&user, name, Some(PASSWORD.to_owned()))
            .await
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        users.push(user);
    }
    let group = GroupId::parse_plain(GROUP)
        .map_err(|e| GroupError::Storage(format!("demo group id: {e}")))?;
    let settings = GroupSettingsRecord::default();
    let owner = users.first().cloned();
    let addr = registry
        .create_group_with(
            &group,
            "Team Rollcall",
            GroupKindRecord::Group,
            &users,
            settings,
            owner.as_ref(),
        )
        .await?
        .ok_or_else(|| GroupError::Storage(format!("group {group} exists already")))?;
    for (i, (from, body)) in HISTORY.iter().enumerate() {
        post(&addr, from, &format!("demo-{i}"), body).await?;
    }
    for (user, delivered, read) in CURSORS {
        advance(&addr, user, Cursor::Delivered, *delivered).await?;
        advance(&addr, user, Cursor::Read, *read).await?;
    }
    let direct = registry
        .open_direct(&parse_user("alice")?, &parse_user("bob")?)
        .await?;
    let addr = registry
        .group(&direct)?
        .ok_or_else(|| GroupError::Storage(format!("group {direct} vanished")))?;
    for (i, (from, body)) in DIRECT.iter().enumerate() {
        post(&addr, from, &format!("demo-dm-{i}"), body).await?;
    }
    advance(&addr, "bob", Cursor::Read, 2).await?;
    advance(&addr, "alice", Cursor::Read, 1).await?;
    // Cursor moves are written on the receipt tick; write and flush them now, so the seeded
    // read marks are durable before the links are printed.
    registry.persist_cursors().await;
    registry.flush().await?;
    log::info!(
        "demo data created: {} users, group {group}, {direct}",
        USERS.len()
    );
    Ok(())
}

/// One login link per demo user that exists, for a server listening on `listening`.
pub fn login_links(
    registry: &Registry,
    accounts: &Accounts,
    listening: SocketAddr,
) -> Result<Vec<(String, String)>, GroupError> {
    let base = page_url(listening);
    let mut links = Vec::new();
    for (id, _) in USERS {
        let user = parse_user(id)?;
        if registry.store().user(&user)?.is_none() {
            continue;
        }
        let token = accounts
            .token(&user, DEFAULT_TOKEN_TTL_SECS)
            .map_err(|e| GroupError::Storage(format!("signing a token: {e}")))?;
        links.push((user.to_string(), format!("{base}?token={token}")));
    }
    Ok(links)
}

/// `http://HOST:PORT/` for a listening address; an unspecified address (0.0.0.0, ::) is
/// reachable on this machine through loopback.
pub fn page_url(listening: SocketAddr) -> String {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, listening.port()))
}

fn parse_user(id: &str) -> Result<UserId, GroupError> {
    UserId::parse(id).map_err(|e| GroupError::Storage(format!("demo user id: {e}")))
}

async fn post(
    addr: &actix::Addr<crate::group::GroupActor>,
    from: &str,
    client_id: &str,
    body: &str,
) -> Result<u64, GroupError> {
    let (reply, answer) = reply_channel();
    addr.send(PostMessage {
        remind_after: None,
        reply_to: None,
        from: parse_user(from)?,
        client_id: client_id.to_owned(),
        body: body.to_owned(),
        reply,
    })
    .await?;
    Ok(answer.wait().await?.seq)
}

async fn advance(
    addr: &actix::Addr<crate::group::GroupActor>,
    user: &str,
    cursor: Cursor,
    seq: u64,
) -> Result<(), GroupError> {
    addr.send(AdvanceCursor {
        user: parse_user(user)?,
        cursor,
        seq,
        session_id: None,
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_a_reachable_address() {
        let any: SocketAddr = "0.0.0.0:7600".parse().unwrap();
        assert_eq!(page_url(any), "http://127.0.0.1:7600/");
        let v6: SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(page_url(v6), "http://[::1]:80/");
        let lan: SocketAddr = "192.0.2.7:7600".parse().unwrap();
        assert_eq!(page_url(lan), "http://192.0.2.7:7600/");
    }

    #[test]
    fn seeded_cursors_respect_the_invariants() {
        let last = u64::try_from(HISTORY.len()).unwrap();
        for (user, delivered, read) in CURSORS {
            assert!(read <= delivered && *delivered <= last, "{user}");
            assert!(USERS.iter().any(|(id, _)| id == user));
        }
        for (from, _) in HISTORY.iter().chain(DIRECT) {
            assert!(USERS.iter().any(|(id, _)| id == from));
        }
    }
}
