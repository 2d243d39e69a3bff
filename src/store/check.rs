//! The consistency check of a whole store (`rollcall check --data DIR`): run on the data
//! directory of a stopped server, or on a snapshot (`POST /api/backup`).
//!
//! It reads only through the [`Store`] trait, so it runs unchanged against any store; the sled
//! part is [`check_data_dir`], which opens a data directory's database without writing to it,
//! and the CLI (`main.rs`) only prints the [`Report`]. What is checked, each a promise of
//! ARCHITECTURE.md (*Invariants*, *Storage layout*):
//!
//! - the storage format is recorded, and is one this build reads;
//! - every group's messages are gapless from `first_seq` to `last_seq`: `first_seq` is the
//!   lowest stored seq (retention may prune older messages; a group without messages is empty),
//!   and every message decodes and names a valid sender;
//! - every member has `joined_seq ≤ read ≤ delivered ≤ last_seq` and is a user;
//! - a direct conversation has exactly two members, the two people its id names;
//! - the user → groups index lists every membership (a missing entry leaves the group out of
//!   that member's `welcome`). An entry without a membership is only a *warning*: the index is a
//!   superset by design (a membership change writes the entry first and removes it last, so a
//!   crash in between leaves one behind), and the member records are the truth;
//! - the per-sender index of every group whose index is complete ([`Store::sent_indexed`]; a
//!   group written before the index existed gets it at its next start) holds exactly one entry
//!   per live (not deleted) message, under whoever it names ([`Store::scan_sent_window`] over
//!   all seqs), and an entry's `client_id` and `ts` are its message's (the resend map after a
//!   start is built from them, each sender's on their first send; an entry an older build wrote holds no value, which is fine).
//!   A crash can cut off only a group's last write, so two differences are
//!   only warnings: the newest message without its entry (written just after the message; the
//!   group's start adds it), and the newest deletion's entry still there (removed just after the
//!   deletion; the start removes it when the message is among its newest `--dedup-window`). So
//!   is an entry below `first_seq`, left by a prune cut short (the message goes first), which
//!   nothing reads.
//!
//! A finding names the group, the key (readable: `m/<seq>`, `u/<user>`, `b/<user>/<seq>`,
//! `user_groups/<user>/<group>`, `format`) and what is wrong, one line each. The check reads
//! everything once and holds the memberships and the index in memory: O(members) memory,
//! O(messages) time.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;

use super::FORMAT_VERSION;
use super::{
    Direction, GroupKindRecord, GroupRecord, Note, SentRecord, SledStore, Store, StoreError,
};
use crate::ids::{GroupId, Seq, UserId};

/// How many users or groups one listing call reads.
const PAGE: usize = 1000;

/// One thing found wrong (or, as a warning, odd but harmless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The group it is in; `None` for the store as a whole.
    pub group: Option<GroupId>,
    /// The key, readable (see the module doc).
    pub key: String,
    /// What is wrong, as a sentence.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(group) => write!(f, "group {group}: key {}: {}", self.key, self.problem),
            None => write!(f, "store: key {}: {}", self.key, self.problem),
        }
    }
}

/// What [`check`] found, and what it looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The recorded storage format (`None`: none recorded).
    pub format: Option<u32>,
    pub users: u64,
    pub groups: u64,
    pub direct_groups: u64,
    pub messages: u64,
    pub members: u64,
    pub index_entries: u64,
    /// Groups whose per-sender index was checked.
    pub sender_indexes: u64,
    /// Groups whose per-sender index is not built yet (built at the group's next start).
    pub sender_indexes_not_built: u64,
    /// What is wrong: `rollcall check` exits 1 when there is any.
    pub violations: Vec<Finding>,
    /// What is odd but harmless.
    pub warnings: Vec<Finding>,
}

impl Report {
    /// No violations (warnings allowed).
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line: what was checked, and how many findings.
    pub fn summary(&self) -> String {
        let format = self
            .format
            .map_or_else(|| "none".to_owned(), |f| f.to_string());
        let sender_index = format!(
            "checked in {} groups ({} not built yet)",
            self.sender_indexes, self.sender_indexes_not_built
        );
        format!(
            "format {format}; {} users; {} groups ({} direct); {} messages; {} members; {} index \
             entries; per-sender index: {sender_index}; {} violations, {} warnings",
            self.users,
            self.groups,
            self.direct_groups,
            self.messages,
            self.members,
            self.index_entries,
            self.violations.len(),
            self.warnings.len(),
        )
    }

    fn violation(&mut self, group: Option<&GroupId>, key: impl Into<String>, problem: String) {
        self.violations.push(Finding {
            group: group.cloned(),
            key: key.into(),
            problem,
        });
    }

    fn warning(&mut self, group: Option<&GroupId>, key: impl Into<String>, problem: String) {
        self.warnings.push(Finding {
            group: group.cloned(),
            key: key.into(),
            problem,
        });
    }
}

/// Opens the database of the data directory `data_dir` (`<data>/db`) without writing to it, and
/// checks it. `Err` when it cannot be opened at all (none there, or in use by a running server).
pub fn check_data_dir(data_dir: &Path, cache_bytes: u64) -> Result<Report, StoreError> {
    let store = SledStore::open_to_check(&data_dir.join("db"), cache_bytes)?;
    Ok(check(&store))
}

/// Checks a PostgreSQL database (`--store postgres://…`): a read-only copy of it, taken in
/// one repeatable-read transaction, so it may run beside the active node. `Err` when it
/// cannot be read.
pub fn check_postgres(url: &str, cache_bytes: u64) -> Result<Report, StoreError> {
    let pg = super::Postgres::connect_to_read(url)?;
    let scratch = std::env::temp_dir().join(format!("rollcall-check-{}", std::process::id()));
    let store = pg.snapshot_store(cache_bytes, &scratch)?;
    let report = check(store.as_ref());
    drop(store);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(report)
}

/// Copies a stopped server's sled data directory (`<data>/db`) into an empty PostgreSQL
/// database (`rollcall migrate`); returns the number of records copied.
pub fn migrate_to_postgres(
    data_dir: &Path,
    url: &str,
    cache_bytes: u64,
) -> Result<u64, StoreError> {
    let source = SledStore::open_to_check(&data_dir.join("db"), cache_bytes)?;
    match source.format()? {
        Some(format) if format <= super::FORMAT_VERSION => {}
        Some(found) => {
            return Err(StoreError::NewerFormat {
                found,
                supported: super::FORMAT_VERSION,
            })
        }
        None => {
            return Err(StoreError::Corrupt(
                "the data directory records no storage format (an unfinished backup?)".into(),
            ))
        }
    }
    let report = check(&source);
    if !report.is_ok() {
        return Err(StoreError::Corrupt(format!(
            "rollcall check finds violations in {}: {}; fix them before migrating",
            data_dir.display(),
            report.summary()
        )));
    }
    let pg = super::Postgres::connect_to_read(url)?;
    pg.copy_from(&source)
}

/// Checks a whole store (see the module doc). Never fails: what cannot be read is a violation.
pub fn check(store: &dyn Store) -> Report {
    let mut checker = Checker {
        store,
        report: Report::default(),
        users: HashSet::new(),
        index: HashSet::new(),
        index_complete: true,
        memberships: HashSet::new(),
        groups: HashSet::new(),
    };
    if !checker.format() {
        return checker.report;
    }
    checker.users();
    checker.index();
    checker.groups();
    checker.stale_index_entries();
    checker.report
}

struct Checker<'a> {
    store: &'a dyn Store,
    report: Report,
    users: HashSet<UserId>,
    /// Every entry of the user → groups index.
    index: HashSet<(UserId, GroupId)>,
    /// Whether `index` was read to its end (if not, a missing entry proves nothing).
    index_complete: bool,
    /// Every membership, as found in the groups.
    memberships: HashSet<(UserId, GroupId)>,
    groups: HashSet<GroupId>,
}

impl Checker<'_> {
    /// Checks the format; false when the rest cannot be read (a newer format).
    fn format(&mut self) -> bool {
        match self.store.format() {
            Ok(Some(format)) if format > FORMAT_VERSION => {
                self.report.format = Some(format);
                self.report.violation(
                    None,
                    "format",
                    format!(
                        "storage format {format} was written by a newer Rollcall; this build \
                         reads formats up to {FORMAT_VERSION}, so nothing else was checked"
                    ),
                );
                false
            }
            Ok(Some(0)) => {
                self.report.format = Some(0);
                self.report
                    .violation(None, "format", "storage format 0 does not exist".into());
                true
            }
            Ok(Some(format)) => {
                self.report.format = Some(format);
                true
            }
            Ok(None) => {
                self.report.violation(
                    None,
                    "format",
                    "absent: no storage format recorded (a snapshot cut short, or not a \
                     Rollcall database)"
                        .into(),
                );
                true
            }
            Err(e) => {
                self.report
                    .violation(None, "format", format!("unreadable: {e}"));
                true
            }
        }
    }

    fn users(&mut self) {
        let mut after: Option<UserId> = None;
        loop {
            let page = match self.store.users(after.as_ref(), PAGE) {
                Ok(page) => page,
                Err(e) => {
                    let key = format!("users/{}", after.as_ref().map_or("", UserId::as_str));
                    self.report.violation(
                        None,
                        key,
                        format!("unreadable (users after it not checked): {e}"),
                    );
                    return;
                }
            };
            let full = page.len() == PAGE;
            for (user, _) in page {
                after = Some(user.clone());
                self.users.insert(user);
            }
            if !full {
                break;
            }
        }
        self.report.users = u64::try_from(self.users.len()).unwrap_or(u64::MAX);
    }

    fn index(&mut self) {
        let mut entries = Vec::new();
        let read = self.store.scan_user_groups(&mut |user, group| {
            entries.push((user, group));
            true
        });
        if let Err(e) = read {
            self.index_complete = false;
            self.report.violation(
                None,
                "user_groups",
                format!("unreadable after {} entries: {e}", entries.len()),
            );
        }
        self.index = entries.into_iter().collect();
        self.report.index_entries = u64::try_from(self.index.len()).unwrap_or(u64::MAX);
    }

    fn groups(&mut self) {
        let mut after: Option<GroupId> = None;
        loop {
            let page = match self.store.groups(after.as_ref(), PAGE) {
                Ok(page) => page,
                Err(e) => {
                    let key = format!("groups/{}", after.as_ref().map_or("", GroupId::as_str));
                    self.report.violation(
                        None,
                        key,
                        format!("unreadable (groups after it not checked): {e}"),
                    );
                    return;
                }
            };
            let full = page.len() == PAGE;
            for (group, record) in page {
                after = Some(group.clone());
                self.group(&group, &record);
                self.groups.insert(group);
            }
            if !full {
                break;
            }
        }
    }

    fn group(&mut self, id: &GroupId, record: &GroupRecord) {
        self.report.groups += 1;
        let indexed = match self.store.sent_indexed(id) {
            Ok(indexed) => indexed,
            Err(e) => {
                self.report
                    .violation(Some(id), "B", format!("unreadable: {e}"));
                false
            }
        };
        let Some(messages) = self.messages(id, indexed) else {
            return;
        };
        self.members(id, record, messages.last_seq);
        if indexed {
            self.sender_index(id, &messages);
        } else {
            self.report.sender_indexes_not_built += 1;
        }
    }

    /// Checks a group's per-sender index against its live messages (see the module doc).
    fn sender_index(&mut self, id: &GroupId, messages: &Messages) {
        self.report.sender_indexes += 1;
        let deleted = match self.store.notes(id, Note::Deleted, Seq(1), Seq(u64::MAX)) {
            Ok(deleted) => deleted,
            Err(e) => {
                self.report
                    .violation(Some(id), "x", format!("unreadable: {e}"));
                return;
            }
        };
        // Each deletion's note holds when it happened: the newest one was the last write.
        let newest_deletion = deleted
            .iter()
            .max_by_key(|(_, ms)| *ms)
            .map(|(seq, _)| *seq);
        let deleted: HashSet<Seq> = deleted.into_iter().map(|(seq, _)| seq).collect();
        let mut entries = Vec::new();
        let mut values = Vec::new();
        let scanned =
            self.store
                .scan_sent_window(id, Seq(0), Seq(u64::MAX), &mut |sender, seq, entry| {
                    entries.push((sender.clone(), seq));
                    if let Some(entry) = entry {
                        values.push((sender.clone(), seq, entry));
                    }
                    true
                });
        if let Err(e) = scanned {
            let after = entries
                .last()
                .map_or_else(String::new, |(sender, seq)| format!("/{sender}/{}", seq.0));
            self.report.violation(
                Some(id),
                format!("b{after}"),
                format!("unreadable (the index after it not checked): {e}"),
            );
            return;
        }
        let live: Vec<(Seq, String)> = messages
            .senders
            .iter()
            .filter(|m| !deleted.contains(&m.seq))
            .map(|m| (m.seq, m.from.clone()))
            .collect();
        values.retain(|(_, seq, _)| !deleted.contains(seq));
        self.sender_index_values(id, messages, &values);
        for diff in sender_index_diffs(&live, &entries) {
            let key = format!("b/{}/{}", diff.sender, diff.seq.0);
            let (seq, sender) = (diff.seq.0, &diff.sender);
            if diff.missing {
                let problem =
                    format!("missing: live message {seq} from {sender} has no sender index entry");
                if seq == messages.last_seq {
                    self.report.warning(
                        Some(id),
                        key,
                        format!(
                            "{problem} (the newest message: a crash between it and its entry; \
                             the group's start adds it)"
                        ),
                    );
                } else {
                    self.report.violation(Some(id), key, problem);
                }
            } else {
                let problem = format!("stale: there is no live message {seq} from {sender}");
                if seq < messages.first_seq {
                    self.report.warning(
                        Some(id),
                        key,
                        format!(
                            "{problem} (below first_seq {}: left by a prune cut short; nothing \
                             reads below first_seq)",
                            messages.first_seq
                        ),
                    );
                } else if Some(diff.seq) == newest_deletion {
                    self.report.warning(
                        Some(id),
                        key,
                        format!(
                            "{problem} (the newest deletion: a crash before its entry was \
                             removed; the group's start removes it if the message is among its \
                             newest --dedup-window)"
                        ),
                    );
                } else {
                    self.report.violation(Some(id), key, problem);
                }
            }
        }
    }

    /// Checks that each index entry's value is its live message's `client_id` and `ts` (an
    /// entry without a live message, or under another sender, is a difference of
    /// [`sender_index_diffs`]).
    fn sender_index_values(
        &mut self,
        id: &GroupId,
        messages: &Messages,
        values: &[(UserId, Seq, SentRecord)],
    ) {
        for (sender, seq, entry) in values {
            let Ok(at) = messages.senders.binary_search_by_key(seq, |m| m.seq) else {
                continue;
            };
            let message = &messages.senders[at];
            if message.from != sender.as_str() || message.sent == *entry {
                continue;
            }
            self.report.violation(
                Some(id),
                format!("b/{sender}/{}", seq.0),
                format!(
                    "the entry holds client_id {:?} and ts {}, its message client_id {:?} and ts \
                     {} (a resend after the group's start would be misread)",
                    entry.client_id, entry.ts, message.sent.client_id, message.sent.ts
                ),
            );
        }
    }

    /// Checks a group's messages; `None` when they could not be read at all.
    fn messages(&mut self, id: &GroupId, keep_senders: bool) -> Option<Messages> {
        let mut first: Option<u64> = None;
        let mut previous = 0u64;
        let mut n_messages = 0u64;
        let mut gaps = Vec::new();
        let mut bad_senders = Vec::new();
        let mut senders = Vec::new();
        let scanned = self.store.scan_messages(
            id,
            Seq(1),
            Seq(u64::MAX),
            Direction::Ascending,
            &mut |seq, message| {
                if first.is_none() {
                    first = Some(seq.0);
                } else if seq.0 != previous + 1 {
                    gaps.push((previous + 1, seq.0 - 1));
                }
                previous = seq.0;
                n_messages += 1;
                if UserId::parse(&message.from).is_err() {
                    bad_senders.push(seq.0);
                }
                if keep_senders {
                    senders.push(MessageHead {
                        seq,
                        sent: SentRecord::from(&message),
                        from: message.from,
                    });
                }
                true
            },
        );
        self.report.messages += n_messages;
        let first_seq = first.unwrap_or(0);
        for (from, to) in gaps {
            let key = if from == to {
                format!("m/{from}")
            } else {
                format!("m/{from}..{to}")
            };
            let which = if from == to {
                format!("message {from} is")
            } else {
                format!("messages {from} to {to} are")
            };
            self.report.violation(
                Some(id),
                key,
                format!(
                    "missing: {which} absent (first_seq {first_seq}, last_seq {previous}: seqs \
                     must be gapless)"
                ),
            );
        }
        for seq in bad_senders {
            self.report.violation(
                Some(id),
                format!("m/{seq}"),
                "the sender is not a valid user id (the group cannot be loaded)".into(),
            );
        }
        if let Err(e) = scanned {
            self.report.violation(
                Some(id),
                format!("m/{}", previous + 1),
                format!("unreadable (messages after {previous} not checked): {e}"),
            );
            return None;
        }
        Some(Messages {
            first_seq,
            last_seq: previous,
            senders,
        })
    }

    /// Checks a group's members.
    fn members(&mut self, id: &GroupId, record: &GroupRecord, last_seq: u64) {
        let members = match self.store.members(id) {
            Ok(members) => members,
            Err(e) => {
                self.report
                    .violation(Some(id), "u", format!("unreadable: {e}"));
                return;
            }
        };
        self.report.members += u64::try_from(members.len()).unwrap_or(u64::MAX);
        for (user, m) in &members {
            let key = format!("u/{user}");
            let mut wrong = |problem: String| {
                self.report.violation(Some(id), key.clone(), problem);
            };
            if m.joined_seq > m.read {
                wrong(format!(
                    "joined_seq {} is above read {}",
                    m.joined_seq, m.read
                ));
            }
            if m.read > m.delivered {
                wrong(format!(
                    "read {} is above delivered {}",
                    m.read, m.delivered
                ));
            }
            if m.delivered > last_seq {
                wrong(format!(
                    "delivered {} is above last_seq {last_seq}",
                    m.delivered
                ));
            }
            if !self.users.contains(user) {
                wrong(format!("{user} is a member but not a user"));
            }
            let membership = (user.clone(), id.clone());
            if self.index_complete && !self.index.contains(&membership) {
                self.report.violation(
                    Some(id),
                    format!("user_groups/{user}/{id}"),
                    format!(
                        "missing: {user} is a member, but the user → groups index does not \
                         list the group (it is left out of their welcome)"
                    ),
                );
            }
            self.memberships.insert(membership);
        }
        if record.kind == GroupKindRecord::Direct {
            self.report.direct_groups += 1;
            let names: Vec<&str> = members.iter().map(|(user, _)| user.as_str()).collect();
            match members.as_slice() {
                [(a, _), (b, _)] if GroupId::direct(a, b) == *id => {}
                [_, _] => self.report.violation(
                    Some(id),
                    "u",
                    format!(
                        "a direct conversation's members {} are not the two people its id names",
                        names.join(", ")
                    ),
                ),
                _ => self.report.violation(
                    Some(id),
                    "u",
                    format!(
                        "a direct conversation has {} members ({}), not 2",
                        members.len(),
                        names.join(", ")
                    ),
                ),
            }
        }
    }

    /// Index entries without a membership: warnings (see the module doc).
    fn stale_index_entries(&mut self) {
        let mut stale: Vec<&(UserId, GroupId)> = self.index.difference(&self.memberships).collect();
        stale.sort();
        let mut warnings = Vec::new();
        for (user, group) in stale {
            let problem = if self.groups.contains(group) {
                format!("stale: {user} is not a member of {group} (harmless: ignored at connect)")
            } else {
                format!("stale: there is no group {group} (harmless: ignored at connect)")
            };
            warnings.push((
                group.clone(),
                format!("user_groups/{user}/{group}"),
                problem,
            ));
        }
        for (group, key, problem) in warnings {
            self.report.warning(Some(&group), key, problem);
        }
    }
}

/// What [`Checker::messages`] hands on.
struct Messages {
    /// The lowest stored seq (0: none).
    first_seq: u64,
    /// The highest stored seq (0: none).
    last_seq: u64,
    /// Each message's seq, sender, `client_id` and `ts`, by seq, when asked for.
    senders: Vec<MessageHead>,
}

/// What the per-sender index repeats of a message.
struct MessageHead {
    seq: Seq,
    from: String,
    sent: SentRecord,
}

/// One difference between a group's per-sender index and its live messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct IndexDiff {
    sender: String,
    seq: Seq,
    /// A live message without its entry (else: an entry without a live message).
    missing: bool,
}

/// Compares a group's per-sender index (`entries`) with its live messages (`live`: seq and
/// sender of every message not deleted): every live message has its entry, and no entry lacks
/// a live message. By sender, then seq.
fn sender_index_diffs(live: &[(Seq, String)], entries: &[(UserId, Seq)]) -> Vec<IndexDiff> {
    let expected: BTreeSet<(&str, Seq)> = live
        .iter()
        .map(|(seq, from)| (from.as_str(), *seq))
        .collect();
    let actual: BTreeSet<(&str, Seq)> = entries
        .iter()
        .map(|(user, seq)| (user.as_str(), *seq))
        .collect();
    let diff = |a: &BTreeSet<(&str, Seq)>, b: &BTreeSet<(&str, Seq)>, missing: bool| {
        a.difference(b)
            .map(|&(sender, seq)| IndexDiff {
                sender: sender.to_owned(),
                seq,
                missing,
            })
            .collect::<Vec<_>>()
    };
    let mut diffs = diff(&expected, &actual, true);
    diffs.extend(diff(&actual, &expected, false));
    diffs.sort();
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::{MemberRecord, MessageRecord};

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn message(from: &str) -> MessageRecord {
        MessageRecord {
            from: from.into(),
            client_id: "c".into(),
            ts: 1,
            body: "hi".into(),
        }
    }

    /// The index entry of a [`message`] from `from`.
    fn sent(from: &str) -> SentRecord {
        SentRecord::from(&message(from))
    }

    fn member(joined_seq: u64, delivered: u64, read: u64) -> MemberRecord {
        MemberRecord {
            joined_seq,
            delivered,
            read,
        }
    }

    #[test]
    fn the_sender_index_must_list_exactly_the_live_messages() {
        let live = vec![(Seq(1), "alice".to_owned()), (Seq(3), "bob".to_owned())];
        assert!(
            sender_index_diffs(&live, &[(uid("alice"), Seq(1)), (uid("bob"), Seq(3))]).is_empty()
        );
        let diffs = sender_index_diffs(
            &live,
            // 3 is bob's, not alice's; 2 is deleted (not live), so its entry is stale too.
            &[
                (uid("alice"), Seq(1)),
                (uid("alice"), Seq(3)),
                (uid("bob"), Seq(2)),
            ],
        );
        let found: Vec<(&str, u64, bool)> = diffs
            .iter()
            .map(|d| (d.sender.as_str(), d.seq.0, d.missing))
            .collect();
        assert_eq!(
            found,
            [("alice", 3, false), ("bob", 2, false), ("bob", 3, true)]
        );
    }

    #[test]
    fn a_consistent_store_passes_and_each_break_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), 1 << 20, Durability::Process).unwrap();
        let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
        for user in [&alice, &bob, &carol] {
            let record = crate::store::UserRecord {
                name: user.to_string(),
                created_ms: 1,
            };
            store.create_user(user, &record).unwrap();
        }
        let group = |kind| GroupRecord {
            name: "g".into(),
            kind,
            created_ms: 1,
        };
        let eng = GroupId::parse("eng").unwrap();
        store
            .create_group(&eng, &group(GroupKindRecord::Group))
            .unwrap();
        let dm = GroupId::direct(&alice, &bob);
        store
            .create_group(&dm, &group(GroupKindRecord::Direct))
            .unwrap();
        for seq in 1..=3 {
            store
                .put_message(&eng, Seq(seq), &message("alice"))
                .unwrap();
        }
        store.add_member(&eng, &alice, &member(0, 3, 3)).unwrap();
        store.add_member(&eng, &bob, &member(1, 2, 1)).unwrap();
        store.add_member(&dm, &alice, &member(0, 0, 0)).unwrap();
        store.add_member(&dm, &bob, &member(0, 0, 0)).unwrap();
        let report = check(&store);
        assert!(report.is_ok(), "{:?}", report.violations);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(
            (
                report.users,
                report.groups,
                report.direct_groups,
                report.messages,
                report.members
            ),
            (3, 2, 1, 3, 4)
        );
        assert_eq!(
            (report.sender_indexes, report.sender_indexes_not_built),
            (2, 0)
        );

        // A gap (5 without 4), cursors out of order or past the head, a third person in the
        // direct conversation; alice's message 2 out of the sender index, an entry for a
        // message bob never sent, and bob's newest message without its entry (a crash's cut).
        store.put_message(&eng, Seq(5), &message("bob")).unwrap();
        store.put_cursors(&eng, &bob, &member(1, 2, 4)).unwrap();
        store.add_member(&dm, &carol, &member(0, 0, 0)).unwrap();
        store.add_member(&eng, &carol, &member(0, 0, 0)).unwrap();
        store.put_cursors(&eng, &carol, &member(6, 7, 6)).unwrap();
        // And alice's 1 with another client_id than its message's.
        store.index_sent(&eng, &alice, Seq(2), None).unwrap();
        store
            .index_sent(&eng, &bob, Seq(1), Some(&sent("bob")))
            .unwrap();
        store.index_sent(&eng, &bob, Seq(5), None).unwrap();
        let other = SentRecord {
            client_id: "other".into(),
            ts: 1,
        };
        store
            .index_sent(&eng, &alice, Seq(1), Some(&other))
            .unwrap();
        let report = check(&store);
        let lines: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
        let expect = [
            "group eng: key m/4: missing",
            "group eng: key u/bob: read 4 is above delivered 2",
            "group eng: key u/carol: delivered 7 is above last_seq 5",
            "group dm:alice:bob: key u: a direct conversation has 3 members (alice, bob, carol)",
            "group eng: key b/alice/2: missing: live message 2 from alice has no sender index",
            "group eng: key b/bob/1: stale: there is no live message 1 from bob",
            "group eng: key b/alice/1: the entry holds client_id \"other\" and ts 1, its message \
             client_id \"c\" and ts 1",
        ];
        for expected in expect {
            assert!(
                lines.iter().any(|line| line.starts_with(expected)),
                "no {expected:?} in {lines:#?}"
            );
        }
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("group eng: key b/bob/5: missing")
                && warnings[0].contains("newest message"),
            "{warnings:#?}"
        );

        // The newest deletion's entry left behind is a warning; an older one's a violation.
        store
            .index_sent(&eng, &bob, Seq(5), Some(&sent("bob")))
            .unwrap();
        store.put_note(&eng, Note::Deleted, Seq(1), 10).unwrap();
        store.put_note(&eng, Note::Deleted, Seq(3), 20).unwrap();
        let report = check(&store);
        let warnings: Vec<String> = report.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(
            warnings[0].starts_with("group eng: key b/alice/3: stale"),
            "{warnings:#?}"
        );
        assert!(
            report.violations.iter().any(|v| v.key == "b/alice/1"),
            "{:#?}",
            report.violations
        );

        // A prune cut short after the message went: its entry is below first_seq, a warning.
        let fresh = GroupId::parse("fresh").unwrap();
        store
            .create_group(&fresh, &group(GroupKindRecord::Group))
            .unwrap();
        for seq in 1..=3 {
            store
                .put_message(&fresh, Seq(seq), &message("alice"))
                .unwrap();
        }
        store.prune_message(&fresh, Seq(1)).unwrap();
        store
            .index_sent(&fresh, &alice, Seq(1), Some(&sent("alice")))
            .unwrap();
        let report = check(&store);
        assert!(
            report.warnings.iter().any(|w| w.to_string().starts_with(
                "group fresh: key b/alice/1: stale: there is no live message 1 from alice (below \
                 first_seq 2"
            )),
            "{:#?}",
            report.warnings
        );
        assert!(
            !report
                .violations
                .iter()
                .any(|v| v.group.as_ref() == Some(&fresh)),
            "{:#?}",
            report.violations
        );
    }
}
