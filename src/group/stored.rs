//! A group's summary read straight from the store, for a group whose actor is not running (it
//! passivated, or never started since boot): `welcome` and `groups` must not start an actor per
//! group of the user. The registry calls it under the group's slot lock, so no actor starts and
//! writes meanwhile, and whatever the store holds is durable (an actor stops only once settled).
//! The figures are the ones the actor's own summary (`queries.rs`) gives.

use crate::ids::{GroupId, Seq, UserId};
use crate::store::{Direction, MemberRecord, Note, Store, StoreError};

use super::{Attached, ReminderView, Summary};

/// Where a member's unread messages start: after their read mark, their join point and what was
/// pruned, never after the head.
pub(super) fn unread_after(member: &MemberRecord, first_seq: u64, head: u64) -> u64 {
    member
        .read
        .max(member.joined_seq)
        .max(first_seq.saturating_sub(1))
        .min(head)
}

/// Messages in `(from, head]` that are neither the member's own nor deleted (own messages are
/// never counted as deleted: deleted ones leave the sender index).
pub(super) fn unread(head: u64, from: u64, own: u64, deleted: u64) -> u64 {
    head.saturating_sub(from)
        .saturating_sub(own)
        .saturating_sub(deleted)
}

/// `user`'s summary of group `id` and their pending reminders in it, from the store; `None`
/// when the group is gone or `user` is not a member.
pub fn stored_summary(
    store: &dyn Store,
    id: &GroupId,
    user: &UserId,
) -> Result<Option<Attached>, StoreError> {
    let Some(record) = store.group(id)? else {
        return Ok(None);
    };
    let Some(member) = store.member(id, user)? else {
        return Ok(None);
    };
    let settings = store.group_settings(id)?.unwrap_or_default();
    let head = store.last_seq(id)?.0;
    let first_seq = store.first_seq(id)?.0;
    let from = unread_after(&member, first_seq, head);
    let mut own = 0u64;
    store.scan_sent(
        id,
        user,
        Seq(from),
        Seq(head),
        Direction::Ascending,
        &mut |_| {
            own += 1;
            true
        },
    )?;
    let deleted = if from < head {
        store
            .notes(id, Note::Deleted, Seq(from + 1), Seq(head))?
            .len()
    } else {
        0
    };
    let role = store
        .member_roles(id)?
        .into_iter()
        .find(|(u, _)| u == user)
        .map(|(_, role)| role)
        .unwrap_or_default();
    let marked_unread = store
        .member_flags(id)?
        .into_iter()
        .any(|(u, flags)| &u == user && flags.marked_unread);
    let last_ts = store.message(id, Seq(head))?.map_or(0, |m| m.ts);
    let mut reminders = Vec::new();
    for (seq, reminded, by) in store.reminders(id)? {
        if &reminded != user || seq.0 <= member.read {
            continue;
        }
        if let Some(message) = store.message(id, seq)? {
            reminders.push(ReminderView {
                group: id.clone(),
                seq: seq.0,
                by: by.by,
                ts: by.ts,
                from: message.from,
                sent_ts: message.ts,
                body: message.body,
            });
        }
    }
    Ok(Some(Attached {
        summary: Summary {
            group: id.clone(),
            name: record.name,
            kind: record.kind,
            last_seq: head,
            delivered: member.delivered,
            read: member.read,
            unread: unread(head, from, own, u64::try_from(deleted).unwrap_or(u64::MAX)),
            receipts: settings.receipts,
            marked_unread,
            role,
            first_seq: first_seq.min(head + 1),
            last_ts,
        },
        reminders,
    }))
}
