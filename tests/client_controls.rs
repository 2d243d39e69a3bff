//! The Rust client's receipt controls against a real server: `remind` and the `reminder` event
//! (also replayed after a reconnect's `welcome`), scheduled reminders through `send_reminding`,
//! `share_reads`, `mark_unread` seen by another session, and `group_updated`.

mod common;

use common::rust_client::{self, next_event};
use common::Server;
use rollcall::client::{Client, ClientError, ErrorCode, Event, ReceiptPolicy};
use serde_json::json;

async fn connect(server: &Server, user: &str) -> Client {
    rust_client::connect(rust_client::config(server, user)).await
}

/// The next event that `pick` accepts (others are skipped).
async fn wait_for<T>(client: &Client, mut pick: impl FnMut(Event) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(next_event(client).await) {
            return found;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_settings_and_unread_marks_through_the_client() {
    let server = Server::start_with(&["--remind-interval-secs", "600"]);
    server.create_group("team", &["alice", "bob", "carol"]);
    let alice = connect(&server, "alice").await;
    let bob = connect(&server, "bob").await;

    let sent = alice.send("team", "standup at 10").await.expect("sent");
    let reminded = alice.remind("team", sent.seq).await.expect("reminded");
    assert_eq!(
        (reminded.count, reminded.users.clone()),
        (2, Some(vec!["bob".to_owned(), "carol".to_owned()]))
    );
    let reminder = wait_for(&bob, |e| match e {
        Event::Reminder(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!((reminder.seq, reminder.by.as_str()), (sent.seq, "alice"));
    assert_eq!(reminder.message.body, "standup at 10");

    // Once per interval; and only the sender may remind.
    match alice.remind("team", sent.seq).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("a second remind within the interval: {other:?}"),
    }
    match bob.remind("team", sent.seq).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::NotAllowed),
        other => panic!("bob reminded for alice's message: {other:?}"),
    }

    // Carol was offline: her reminder comes with the welcome, as an event after Connected.
    let carol = connect(&server, "carol").await;
    let offline = wait_for(&carol, |e| match e {
        Event::Reminder(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(offline.seq, sent.seq);

    // Private reads: bob stops sharing, and the setting reads back.
    assert!(bob.share_reads(None).await.expect("settings"));
    assert!(!bob.share_reads(Some(false)).await.expect("settings"));
    assert!(!bob.share_reads(None).await.expect("settings"));

    // A second session of bob's sees his unread mark come and go.
    let bob_phone = connect(&server, "bob").await;
    bob.mark_unread("team").expect("mark_unread");
    let marked = wait_for(&bob_phone, |e| match e {
        Event::MarkedUnread {
            group,
            marked_unread,
        } => Some((group, marked_unread)),
        _ => None,
    })
    .await;
    assert_eq!(marked, ("team".to_owned(), true));
    bob.read("team", sent.seq).expect("read");
    let cleared = wait_for(&bob_phone, |e| match e {
        Event::MarkedUnread { marked_unread, .. } => Some(marked_unread),
        _ => None,
    })
    .await;
    assert!(!cleared);

    // A scheduled reminder fires at carol, and alice is told.
    let scheduled = alice
        .send_reminding("team", "did you see this?", 1)
        .await
        .expect("sent");
    let fired = wait_for(&carol, |e| match e {
        Event::Reminder(r) if r.seq == scheduled.seq => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(fired.by, "alice");
    let told = wait_for(&alice, |e| match e {
        Event::Reminded { seq, count, .. } if seq == scheduled.seq => Some(count),
        _ => None,
    })
    .await;
    assert_eq!(
        told, 2,
        "bob (private) and carol are counted as not having read it"
    );

    // The admin changes the policy: every member's client hears of it.
    let (status, _) = server.admin("PUT", "/api/groups/team", Some(json!({"receipts": "off"})));
    assert_eq!(status, 200);
    let updated = wait_for(&carol, |e| match e {
        Event::GroupUpdated { receipts, .. } => Some(receipts),
        _ => None,
    })
    .await;
    assert_eq!(updated, ReceiptPolicy::Off);
    match alice.remind("team", scheduled.seq).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, ErrorCode::ReceiptsOff),
        other => panic!("remind with receipts off: {other:?}"),
    }
    for client in [alice, bob, bob_phone, carol] {
        client.close().await;
    }
}
