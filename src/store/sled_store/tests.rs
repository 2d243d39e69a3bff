//! Unit tests of the sled store.

use super::*;
use crate::store::{GroupCopy, GroupKindRecord};

fn msg(body: &str) -> MessageRecord {
    MessageRecord {
        from: "alice".into(),
        client_id: body.into(),
        ts: 1,
        body: body.into(),
    }
}

#[test]
fn users_page_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    for id in ["carol", "alice", "bob", "al"] {
        let record = UserRecord {
            name: id.to_uppercase(),
            created_ms: 1,
        };
        store
            .create_user(&UserId::parse(id).unwrap(), &record)
            .unwrap();
    }
    let ids = |page: Vec<(UserId, UserRecord)>| -> Vec<String> {
        page.into_iter().map(|(u, _)| u.to_string()).collect()
    };
    assert_eq!(
        ids(store.users(None, 10).unwrap()),
        ["al", "alice", "bob", "carol"]
    );
    let first = store.users(None, 2).unwrap();
    assert_eq!(first[1].1.name, "ALICE");
    let after = first[1].0.clone();
    assert_eq!(
        ids(store.users(Some(&after), 10).unwrap()),
        ["bob", "carol"]
    );
    assert!(store
        .users(Some(&UserId::parse("carol").unwrap()), 10)
        .unwrap()
        .is_empty());
}

#[test]
fn groups_do_not_see_each_others_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let ab = GroupId::parse("ab").unwrap();
    let abc = GroupId::parse("abc").unwrap();
    for s in 1..=3 {
        store
            .put_message(&ab, Seq(s), &msg(&format!("ab{s}")))
            .unwrap();
    }
    store.put_message(&abc, Seq(1), &msg("abc1")).unwrap();
    assert_eq!(store.last_seq(&ab).unwrap(), Seq(3));
    assert_eq!(store.last_seq(&abc).unwrap(), Seq(1));
    assert_eq!(
        store.last_seq(&GroupId::parse("a").unwrap()).unwrap(),
        Seq(0)
    );
    let mut seen = Vec::new();
    store
        .scan_messages(
            &ab,
            Seq(2),
            Seq(u64::MAX),
            Direction::Descending,
            &mut |s, m| {
                seen.push((s.0, m.body));
                true
            },
        )
        .unwrap();
    assert_eq!(seen, vec![(3, "ab3".to_string()), (2, "ab2".to_string())]);
}

#[test]
fn members_and_index_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = GroupId::parse("eng").unwrap();
    let alice = UserId::parse("alice").unwrap();
    let rec = MemberRecord {
        joined_seq: 0,
        delivered: 4,
        read: 2,
    };
    {
        let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
        assert!(store
            .create_group(
                &g,
                &GroupRecord {
                    name: "Eng".into(),
                    kind: super::super::GroupKindRecord::Group,
                    created_ms: 0
                }
            )
            .unwrap());
        store.add_member(&g, &alice, &rec).unwrap();
        store.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.members(&g).unwrap(), vec![(alice.clone(), rec)]);
    assert_eq!(store.user_groups(&alice).unwrap(), vec![g.clone()]);
    store.remove_member(&g, &alice).unwrap();
    assert!(store.members(&g).unwrap().is_empty());
    assert!(store.user_groups(&alice).unwrap().is_empty());
}

#[test]
fn settings_flags_reminders_and_schedules_round_trip_beside_the_messages() {
    use crate::store::{
        GroupKindRecord, GroupSettingsRecord, MemberFlagsRecord, ReceiptPolicyRecord,
        ReminderRecord, ScheduleRecord, UserSettingsRecord,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let g = GroupId::parse("g").unwrap();
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let record = GroupRecord {
        name: "G".into(),
        kind: GroupKindRecord::Group,
        created_ms: 1,
    };
    store.create_group(&g, &record).unwrap();
    assert_eq!(store.group_settings(&g).unwrap(), None);
    let off = GroupSettingsRecord {
        receipts: ReceiptPolicyRecord::Off,
    };
    store.put_group_settings(&g, &off).unwrap();
    assert_eq!(store.group_settings(&g).unwrap(), Some(off));
    let renamed = GroupRecord {
        name: "H".into(),
        ..record
    };
    store.put_group(&g, &renamed).unwrap();
    assert_eq!(store.group(&g).unwrap(), Some(renamed));

    assert_eq!(store.user_settings(&alice).unwrap(), None);
    let private = UserSettingsRecord { share_reads: false };
    store.put_user_settings(&alice, &private).unwrap();
    assert_eq!(store.user_settings(&alice).unwrap(), Some(private));

    let marked = MemberFlagsRecord {
        marked_unread: true,
    };
    store.put_member_flags(&g, &bob, &marked).unwrap();
    assert_eq!(store.member_flags(&g).unwrap(), vec![(bob.clone(), marked)]);

    let reminder = ReminderRecord {
        by: "alice".into(),
        ts: 9,
    };
    store.put_reminder(&g, Seq(300), &bob, &reminder).unwrap();
    store.put_reminder(&g, Seq(2), &alice, &reminder).unwrap();
    let listed = store.reminders(&g).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|(s, u, _)| (s.0, u.as_str()))
            .collect::<Vec<_>>(),
        [(2, "alice"), (300, "bob")]
    );
    store.remove_reminder(&g, Seq(2), &alice).unwrap();
    assert_eq!(store.reminders(&g).unwrap().len(), 1);

    store
        .put_schedule(&g, Seq(5), &ScheduleRecord { due_ms: 77 })
        .unwrap();
    store
        .put_schedule(&g, Seq(6), &ScheduleRecord { due_ms: 78 })
        .unwrap();
    assert_eq!(
        store.schedules(&g).unwrap()[0],
        (Seq(5), ScheduleRecord { due_ms: 77 })
    );
    assert_eq!(store.scheduled_groups().unwrap(), vec![g.clone()]);
    store.remove_schedule(&g, Seq(5)).unwrap();
    assert_eq!(
        store.scheduled_groups().unwrap(),
        vec![g.clone()],
        "one is left"
    );
    store.remove_schedule(&g, Seq(6)).unwrap();
    assert!(store.schedules(&g).unwrap().is_empty());
    assert!(store.scheduled_groups().unwrap().is_empty());

    // None of it is a message or a member.
    assert_eq!(store.last_seq(&g).unwrap(), Seq(0));
    assert!(store.members(&g).unwrap().is_empty());
}

#[test]
fn a_deleted_group_is_gone_and_its_id_stays_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let (g, alice) = (
        GroupId::parse("team").unwrap(),
        UserId::parse("alice").unwrap(),
    );
    let record = GroupRecord {
        name: "Team".into(),
        kind: GroupKindRecord::Group,
        created_ms: 1,
    };
    assert!(store.create_group(&g, &record).unwrap());
    let member = MemberRecord {
        joined_seq: 0,
        delivered: 0,
        read: 0,
    };
    store.add_member(&g, &alice, &member).unwrap();
    store
        .put_member_role(&g, &alice, RoleRecord::Owner)
        .unwrap();
    store.put_message(&g, Seq(1), &msg("hi")).unwrap();
    let other = GroupId::parse("other").unwrap();
    assert!(store.create_group(&other, &record).unwrap());
    let listed: Vec<String> = store
        .groups(None, 10)
        .unwrap()
        .into_iter()
        .map(|(g, _)| g.to_string())
        .collect();
    assert_eq!(listed, ["other", "team"]);
    assert_eq!(store.groups(Some(&other), 10).unwrap().len(), 1);

    store.delete_group(&g).unwrap();
    assert_eq!(store.group(&g).unwrap(), None);
    assert!(store.user_groups(&alice).unwrap().is_empty());
    assert!(store.members(&g).unwrap().is_empty());
    assert!(store.member_roles(&g).unwrap().is_empty());
    assert_eq!(store.message(&g, Seq(1)).unwrap(), None);
    assert_eq!(store.groups(None, 10).unwrap().len(), 1);
    // Never handed out again, also after a restart.
    assert!(!store.create_group(&g, &record).unwrap());
    drop(store);
    let store = reopen(dir.path());
    assert!(!store.create_group(&g, &record).unwrap());
}

/// Opens the store again after a drop: sled's flusher thread may hold the directory's lock a
/// moment longer.
fn reopen(dir: &std::path::Path) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(dir, 1 << 20, Durability::Power) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reopening: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("reopening the store: {e}"),
        }
    }
}

#[test]
fn roles_and_accounts_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let (g, alice, bob) = (
        GroupId::parse("team").unwrap(),
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    store
        .put_member_role(&g, &alice, RoleRecord::Owner)
        .unwrap();
    store.put_member_role(&g, &bob, RoleRecord::Admin).unwrap();
    assert_eq!(
        store.member_roles(&g).unwrap(),
        [
            (alice.clone(), RoleRecord::Owner),
            (bob.clone(), RoleRecord::Admin)
        ]
    );
    store.put_member_role(&g, &bob, RoleRecord::Member).unwrap();
    assert_eq!(store.member_roles(&g).unwrap().len(), 1);
    // Removing a member removes its role.
    store.remove_member(&g, &alice).unwrap();
    assert!(store.member_roles(&g).unwrap().is_empty());

    assert_eq!(store.account(&alice).unwrap(), None);
    let account = AccountRecord {
        password: Some("$argon2id$...".into()),
        token_gen: 3,
        revoked_at_secs: 9,
        deactivated: true,
        links_minted: 2,
        links_used: 1,
    };
    store.put_account(&alice, &account).unwrap();
    assert_eq!(store.account(&alice).unwrap(), Some(account));
    let renamed = UserRecord {
        name: "Alice A.".into(),
        created_ms: 5,
    };
    store.put_user(&alice, &renamed).unwrap();
    assert_eq!(store.user(&alice).unwrap(), Some(renamed));
}

#[test]
fn a_snapshot_is_an_openable_copy_of_every_group_and_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("live"), 1 << 20, Durability::Process).unwrap();
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    let user = UserRecord {
        name: "Alice".into(),
        created_ms: 1,
    };
    store.create_user(&alice, &user).unwrap();
    store
        .put_user_settings(&bob, &UserSettingsRecord { share_reads: false })
        .unwrap();
    let record = GroupRecord {
        name: "Eng".into(),
        kind: GroupKindRecord::Group,
        created_ms: 2,
    };
    let (eng, gone, later) = (
        GroupId::parse("eng").unwrap(),
        GroupId::parse("gone").unwrap(),
        GroupId::parse("later").unwrap(),
    );
    for g in [&eng, &gone] {
        store.create_group(g, &record).unwrap();
    }
    for seq in 1..=3 {
        store.put_message(&eng, Seq(seq), &msg("m")).unwrap();
    }
    store.put_note(&eng, Note::Edited, Seq(2), 9).unwrap();
    let cursors = MemberRecord {
        joined_seq: 0,
        delivered: 3,
        read: 2,
    };
    store.add_member(&eng, &alice, &cursors).unwrap();
    store
        .put_schedule(&eng, Seq(3), &ScheduleRecord { due_ms: 5 })
        .unwrap();
    store.delete_group(&gone).unwrap();

    let snapshot = store.begin_snapshot(&dir.path().join("copy")).unwrap();
    assert!(
        store.begin_snapshot(&dir.path().join("copy")).is_err(),
        "an existing database"
    );
    let copied = snapshot
        .copy_group(&eng, &GroupCopy::default())
        .unwrap()
        .expect("eng exists");
    assert_eq!(copied.messages, 3);
    assert!(copied.bytes > 0);
    assert_eq!(
        snapshot.copy_group(&gone, &GroupCopy::default()).unwrap(),
        None
    );
    // Made after the group was copied: not in the copy.
    store.put_message(&eng, Seq(4), &msg("late")).unwrap();
    store.create_group(&later, &record).unwrap();
    snapshot.copy_global().unwrap();
    snapshot.finish().unwrap();
    drop(snapshot);

    let copy = reopen(&dir.path().join("copy"));
    assert_eq!(copy.format().unwrap(), Some(FORMAT_VERSION));
    assert_eq!(copy.last_seq(&eng).unwrap(), Seq(3));
    assert_eq!(copy.group(&eng).unwrap(), Some(record));
    assert_eq!(copy.group(&later).unwrap(), None);
    assert_eq!(copy.group(&gone).unwrap(), None);
    assert!(
        !copy.create_group(&gone, &msg_group()).unwrap(),
        "a deleted id stays taken"
    );
    assert_eq!(copy.members(&eng).unwrap(), vec![(alice.clone(), cursors)]);
    assert_eq!(copy.user_groups(&alice).unwrap(), vec![eng.clone()]);
    assert_eq!(
        copy.notes(&eng, Note::Edited, Seq(1), Seq(9)).unwrap(),
        vec![(Seq(2), 9)]
    );
    assert_eq!(copy.scheduled_groups().unwrap(), vec![eng.clone()]);
    assert_eq!(copy.user(&alice).unwrap(), Some(user));
    assert_eq!(
        copy.user_settings(&bob).unwrap(),
        Some(UserSettingsRecord { share_reads: false })
    );
    let report = crate::store::check::check(&copy);
    assert!(report.is_ok(), "{:?}", report.violations);
}

fn msg_group() -> GroupRecord {
    GroupRecord {
        name: "again".into(),
        kind: GroupKindRecord::Group,
        created_ms: 3,
    }
}

#[test]
fn a_snapshot_cut_short_records_no_format_and_check_opens_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("live"), 1 << 20, Durability::Process).unwrap();
    let snapshot = store.begin_snapshot(&dir.path().join("copy")).unwrap();
    snapshot.copy_global().unwrap();
    drop(snapshot);
    let copy = SledStore::open_to_check(&dir.path().join("copy"), 1 << 20).unwrap();
    assert_eq!(copy.format().unwrap(), None);
    assert!(SledStore::open_to_check(&dir.path().join("nothing"), 1 << 20).is_err());
    assert!(!dir.path().join("nothing").exists());
}

#[test]
fn the_sender_index_answers_ranges_per_sender() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let g = GroupId::parse("g").unwrap();
    let (al, alice) = (
        UserId::parse("al").unwrap(),
        UserId::parse("alice").unwrap(),
    );
    for s in 1..=6 {
        // al sends the odd seqs, alice the even ones: ids that share a prefix stay apart.
        let from = if s % 2 == 1 { "al" } else { "alice" };
        let record = MessageRecord {
            from: from.into(),
            ..msg(&format!("m{s}"))
        };
        store.put_message(&g, Seq(s), &record).unwrap();
    }
    let seqs = |user: &UserId, after: u64, upto: u64, direction: Direction| {
        let mut out = Vec::new();
        store
            .scan_sent(&g, user, Seq(after), Seq(upto), direction, &mut |s| {
                out.push(s.0);
                true
            })
            .unwrap();
        out
    };
    assert_eq!(seqs(&al, 0, 6, Direction::Ascending), [1, 3, 5]);
    assert_eq!(seqs(&alice, 0, 6, Direction::Ascending), [2, 4, 6]);
    assert_eq!(seqs(&alice, 2, 5, Direction::Descending), [4]);
    assert_eq!(seqs(&al, 3, 3, Direction::Ascending), Vec::<u64>::new());
    store.index_sent(&g, &al, Seq(3), None).unwrap();
    assert_eq!(seqs(&al, 0, 6, Direction::Descending), [5, 1]);
    assert_eq!(store.first_seq(&g).unwrap(), Seq(1));
    let empty = GroupId::parse("empty").unwrap();
    assert_eq!(store.first_seq(&empty).unwrap(), Seq(1));
    assert!(!store.sent_indexed(&g).unwrap());
    store.mark_sent_indexed(&g).unwrap();
    assert!(store.sent_indexed(&g).unwrap());
}

/// An entry [`Store::scan_sent_window`] visits: sender, seq, and `(client_id, ts)` if any.
type Visited = (String, u64, Option<(String, u64)>);

/// Every entry [`Store::scan_sent_window`] visits.
fn window(store: &SledStore, g: &GroupId, after: u64, upto: u64) -> Vec<Visited> {
    let mut out = Vec::new();
    store
        .scan_sent_window(g, Seq(after), Seq(upto), &mut |sender, seq, entry| {
            out.push((
                sender.to_string(),
                seq.0,
                entry.map(|e| (e.client_id, e.ts)),
            ));
            true
        })
        .unwrap();
    out
}

#[test]
fn the_sent_window_lists_every_senders_entries_with_their_client_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let g = GroupId::parse("g").unwrap();
    assert_eq!(window(&store, &g, 0, 9), [], "an empty group");
    // Senders whose ids share a prefix, one ("zed") with nothing in the window, and many
    // entries of one ("bob") before the window: the skip from sender to sender passes them.
    let from = |s: u64| match s % 3 {
        0 => "al",
        1 => "alice",
        _ => "bob",
    };
    store
        .put_message(
            &g,
            Seq(1),
            &MessageRecord {
                from: "zed".into(),
                ..msg("z")
            },
        )
        .unwrap();
    for s in 2..=40 {
        let record = MessageRecord {
            from: from(s).into(),
            client_id: format!("c{s}"),
            ts: 100 + s,
            body: "hi".into(),
        };
        store.put_message(&g, Seq(s), &record).unwrap();
    }
    let expect = |seqs: &[u64]| -> Vec<Visited> {
        seqs.iter()
            .map(|&s| (from(s).to_owned(), s, Some((format!("c{s}"), 100 + s))))
            .collect()
    };
    // Sender by sender in key order (length, then bytes: al, bob, alice), newest first.
    assert_eq!(
        window(&store, &g, 34, 40),
        expect(&[39, 36, 38, 35, 40, 37])
    );
    assert_eq!(window(&store, &g, 38, 39), expect(&[39]));
    assert_eq!(window(&store, &g, 39, 39), [], "an empty range");
    assert_eq!(window(&store, &g, 40, 9), [], "a reversed range");
    assert_eq!(
        window(&store, &g, 0, 1),
        [("zed".to_owned(), 1, Some(("z".to_owned(), 1)))]
    );
    // A deleted message has no entry; an entry an older build wrote holds `()`.
    store
        .index_sent(&g, &UserId::parse("bob").unwrap(), Seq(38), None)
        .unwrap();
    store
        .tree(&g)
        .unwrap()
        .insert(keys::sent("alice", Seq(37)), encode(&()).unwrap())
        .unwrap();
    let found = window(&store, &g, 34, 40);
    assert_eq!(found.len(), 5, "{found:?}");
    assert!(found.contains(&("alice".to_owned(), 37, None)), "{found:?}");
    assert!(!found.iter().any(|(_, s, _)| *s == 38), "{found:?}");
    // The visit stops the scan.
    let mut visited = 0;
    store
        .scan_sent_window(&g, Seq(0), Seq(40), &mut |_, _, _| {
            visited += 1;
            visited < 3
        })
        .unwrap();
    assert_eq!(visited, 3);
    // A value that is neither is corruption, not an old entry.
    store
        .tree(&g)
        .unwrap()
        .insert(keys::sent("al", Seq(36)), vec![1, 7])
        .unwrap();
    assert!(matches!(
        store.scan_sent_window(&g, Seq(34), Seq(40), &mut |_, _, _| true),
        Err(StoreError::Corrupt(_))
    ));
}

/// Every entry [`Store::scan_sent_entries`] visits for `sender`: seq and `(client_id, ts)`.
fn entries_of(
    store: &SledStore,
    g: &GroupId,
    sender: &str,
    after: u64,
    upto: u64,
) -> Vec<(u64, Option<(String, u64)>)> {
    let mut out = Vec::new();
    store
        .scan_sent_entries(
            g,
            &UserId::parse(sender).unwrap(),
            Seq(after),
            Seq(upto),
            &mut |seq, entry| {
                out.push((seq.0, entry.map(|e| (e.client_id, e.ts))));
                true
            },
        )
        .unwrap();
    out
}

#[test]
fn one_senders_entries_come_newest_first_with_their_values_and_no_one_elses() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20, Durability::Power).unwrap();
    let g = GroupId::parse("g").unwrap();
    assert_eq!(entries_of(&store, &g, "al", 0, 9), [], "an empty group");
    // "al" is a prefix of "alice": her entries are not his.
    for s in 1..=10 {
        let record = MessageRecord {
            from: if s % 2 == 0 { "al" } else { "alice" }.into(),
            client_id: format!("c{s}"),
            ts: 100 + s,
            body: "hi".into(),
        };
        store.put_message(&g, Seq(s), &record).unwrap();
    }
    let valued = |seqs: &[u64]| -> Vec<(u64, Option<(String, u64)>)> {
        seqs.iter()
            .map(|&s| (s, Some((format!("c{s}"), 100 + s))))
            .collect()
    };
    assert_eq!(entries_of(&store, &g, "al", 3, 8), valued(&[8, 6, 4]));
    assert_eq!(
        entries_of(&store, &g, "alice", 0, 10),
        valued(&[9, 7, 5, 3, 1])
    );
    assert_eq!(entries_of(&store, &g, "al", 4, 4), [], "an empty range");
    assert_eq!(entries_of(&store, &g, "al", 8, 2), [], "a reversed range");
    assert_eq!(entries_of(&store, &g, "bob", 0, 10), [], "no messages");
    // An entry an older build wrote holds `()`; a removed one is gone.
    store
        .tree(&g)
        .unwrap()
        .insert(keys::sent("al", Seq(6)), encode(&()).unwrap())
        .unwrap();
    store
        .index_sent(&g, &UserId::parse("al").unwrap(), Seq(4), None)
        .unwrap();
    assert_eq!(
        entries_of(&store, &g, "al", 0, 10),
        [
            (10, Some(("c10".to_owned(), 110))),
            (8, Some(("c8".to_owned(), 108))),
            (6, None),
            (2, Some(("c2".to_owned(), 102)))
        ]
    );
    // The visit stops the scan; a value that is neither is corruption.
    let mut visited = 0;
    store
        .scan_sent_entries(
            &g,
            &UserId::parse("al").unwrap(),
            Seq(0),
            Seq(10),
            &mut |_, _| {
                visited += 1;
                visited < 2
            },
        )
        .unwrap();
    assert_eq!(visited, 2);
    store
        .tree(&g)
        .unwrap()
        .insert(keys::sent("al", Seq(8)), vec![1, 7])
        .unwrap();
    assert!(matches!(
        store.scan_sent_entries(
            &g,
            &UserId::parse("al").unwrap(),
            Seq(0),
            Seq(10),
            &mut |_, _| true
        ),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn a_precopy_then_a_copy_catches_up_on_edits_deletes_prunes_and_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db"), 1 << 20, Durability::Power).unwrap();
    let g = GroupId::parse("g").unwrap();
    let (alice, bob) = (
        UserId::parse("alice").unwrap(),
        UserId::parse("bob").unwrap(),
    );
    store.create_group(&g, &msg_group()).unwrap();
    let from = |s: u64| if s % 2 == 1 { "alice" } else { "bob" };
    let at = |s: u64, body: &str| MessageRecord {
        from: from(s).into(),
        ..msg(body)
    };
    for s in 1..=4 {
        store.put_message(&g, Seq(s), &at(s, "first")).unwrap();
    }
    let snapshot = store.begin_snapshot(&dir.path().join("copy")).unwrap();
    let pre = snapshot.precopy_group(&g, &GroupCopy::default()).unwrap();
    assert_eq!((pre.messages, pre.upto), (4, 4), "a first round");
    store.put_message(&g, Seq(5), &at(5, "first")).unwrap();
    let pre = snapshot.precopy_group(&g, &pre).unwrap();
    assert_eq!(
        (pre.messages, pre.upto),
        (5, 5),
        "a second round takes what came since"
    );
    // Meanwhile (the group kept serving): 1 pruned, 2 edited, 3 deleted, 6 sent.
    store.prune_message(&g, Seq(1)).unwrap();
    // An edit keeps the client id and ts (the index entry repeats them).
    let edited = MessageRecord {
        body: "edited".into(),
        ..at(2, "first")
    };
    store.put_message(&g, Seq(2), &edited).unwrap();
    store.put_note(&g, Note::Edited, Seq(2), 7).unwrap();
    store.put_note(&g, Note::Deleted, Seq(3), 8).unwrap();
    store.put_message(&g, Seq(3), &at(3, "")).unwrap();
    store.index_sent(&g, &alice, Seq(3), None).unwrap();
    store.put_message(&g, Seq(6), &at(6, "new")).unwrap();
    let copied = snapshot.copy_group(&g, &pre).unwrap().expect("g exists");
    assert_eq!(copied.messages, 5, "2..=6");
    snapshot.copy_global().unwrap();
    snapshot.finish().unwrap();
    drop(snapshot);

    let copy = reopen(&dir.path().join("copy"));
    assert_eq!(
        (copy.first_seq(&g).unwrap(), copy.last_seq(&g).unwrap()),
        (Seq(2), Seq(6))
    );
    assert_eq!(copy.message(&g, Seq(2)).unwrap().unwrap().body, "edited");
    assert_eq!(copy.message(&g, Seq(3)).unwrap().unwrap().body, "");
    assert_eq!(copy.message(&g, Seq(1)).unwrap(), None);
    let sent = |user: &UserId| {
        let mut out = Vec::new();
        copy.scan_sent(&g, user, Seq(0), Seq(9), Direction::Ascending, &mut |s| {
            out.push(s.0);
            true
        })
        .unwrap();
        out
    };
    assert_eq!(sent(&alice), [5], "1 pruned, 3 deleted");
    assert_eq!(sent(&bob), [2, 4, 6]);
    let report = crate::store::check::check(&copy);
    assert!(report.is_ok(), "{:?}", report.violations);
}

#[test]
fn a_group_tree_names_its_group_and_a_shared_tree_none() {
    assert_eq!(
        group_of_tree(b"group:team").map(|g| g.to_string()),
        Some("team".into())
    );
    assert_eq!(
        group_of_tree(group_tree(&GroupId::parse("dm:a:b").expect("id")).as_bytes())
            .map(|g| g.to_string()),
        Some("dm:a:b".into())
    );
    assert_eq!(group_of_tree(b"users"), None);
}
