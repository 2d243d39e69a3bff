//! One function per client frame type, as mini-redis's `cmd/` has one file per command. Each
//! validates its frame, turns it into a group command (or answers it here), and either writes
//! its reply later, when the group answers, or returns a [`Refusal`] that the session sends as
//! an `error` frame. A refusal changes nothing stored.
//!
//! Commands are queued to their group as the frame is read (`do_send`/`send` before any
//! `.await`), so a later frame's command cannot overtake an earlier one.

mod cursor;
mod direct;
mod edits;
mod fetch;
mod groups;
mod membership;
mod readers;
mod receipts;
mod remind;
mod send;
mod settings;
mod users;

use std::time::Duration;

pub(super) use cursor::{flush_closing as flush_cursors_closing, CursorBatch};
pub(super) use groups::summaries;

use crate::group::Cursor;
use crate::protocol::{ClientFrame, RequestId, ServerFrame};

use super::{Ctx, Refusal, Session};

/// Runs one parsed client frame.
pub(super) fn dispatch(
    session: &mut Session,
    frame: ClientFrame,
    ctx: &mut Ctx,
) -> Result<(), Refusal> {
    if !matches!(frame, ClientFrame::Ack { .. } | ClientFrame::Read { .. }) {
        // Gathered `ack`s and `read`s go first: frames are run in the order they came.
        cursor::flush(session, ctx);
    }
    match frame {
        ClientFrame::Ping { id } => {
            session.send_frame(&ServerFrame::Pong { id }, ctx);
            Ok(())
        }
        ClientFrame::Send {
            id,
            group,
            client_id,
            body,
            remind_after_secs,
            reply_to,
        } => {
            let send = send::Send {
                group,
                client_id,
                body,
                remind_after_secs,
                reply_to,
            };
            send::send(session, ctx, id, send)
        }
        ClientFrame::Ack { id, group, seq } => {
            cursor::advance(session, ctx, id, group, Cursor::Delivered, seq)
        }
        ClientFrame::Read { id, group, seq } => {
            cursor::advance(session, ctx, id, group, Cursor::Read, seq)
        }
        ClientFrame::Sync {
            id,
            group,
            after,
            limit,
        } => fetch::sync(session, ctx, id, group, after, limit),
        ClientFrame::History {
            id,
            group,
            before,
            limit,
        } => fetch::history(session, ctx, id, group, before, limit),
        ClientFrame::Direct { id, with } => direct::direct(session, ctx, id, &with),
        ClientFrame::Receipts {
            id,
            group,
            mine,
            seqs,
            after,
            limit,
        } => receipts::receipts(session, ctx, id, group, mine, seqs, after, limit),
        ClientFrame::Users { id, after, limit } => users::users(session, ctx, id, after, limit),
        ClientFrame::Groups { id, after, limit } => groups::groups(session, ctx, id, after, limit),
        ClientFrame::Readers { id, group, seq } => readers::readers(session, ctx, id, &group, seq),
        ClientFrame::Settings { id, share_reads } => {
            settings::settings(session, ctx, id, share_reads);
            Ok(())
        }
        ClientFrame::Remind { id, group, seq } => remind::remind(session, ctx, id, &group, seq),
        ClientFrame::MarkUnread { id, group } => cursor::mark_unread(session, ctx, id, &group),
        ClientFrame::Edit {
            id,
            group,
            seq,
            body,
        } => edits::edit(session, ctx, id, &group, seq, body),
        ClientFrame::Delete { id, group, seq } => edits::delete(session, ctx, id, &group, seq),
        ClientFrame::Typing { id, group } => edits::typing(session, ctx, id, &group),
        ClientFrame::CreateGroup { id, name, members } => {
            membership::create_group(session, ctx, id, &name, &members)
        }
        ClientFrame::AddMember { id, group, user } => {
            let change = membership::MemberChange::Add;
            membership::change_member(session, ctx, id, &group, &user, change)
        }
        ClientFrame::RemoveMember { id, group, user } => {
            let change = membership::MemberChange::Remove;
            membership::change_member(session, ctx, id, &group, &user, change)
        }
        ClientFrame::SetRole {
            id,
            group,
            user,
            role,
        } => {
            let change = membership::MemberChange::SetRole(role);
            membership::change_member(session, ctx, id, &group, &user, change)
        }
        ClientFrame::RenameGroup { id, group, name } => {
            membership::update_group(session, ctx, id, &group, Some(&name), None)
        }
        ClientFrame::SetReceipts {
            id,
            group,
            receipts,
        } => membership::update_group(session, ctx, id, &group, None, Some(receipts)),
        ClientFrame::Leave { id, group } => membership::leave(session, ctx, id, &group),
        ClientFrame::Members { id, group } => membership::members(session, ctx, id, &group),
    }
}

/// Takes one write from the user's budget, or answers `rate_limited` and returns `false`.
fn take_write(session: &Session, ctx: &mut Ctx, id: &Option<RequestId>) -> bool {
    match session.permit.take_write(std::time::Instant::now()) {
        Ok(()) => true,
        Err(wait) => {
            rate_limited(session, ctx, id.clone(), wait);
            false
        }
    }
}

/// Answers a write over the user's budget with `rate_limited`.
fn rate_limited(session: &Session, ctx: &mut Ctx, id: Option<RequestId>, wait: Duration) {
    let config = session.registry.config();
    let message = format!(
        "more than {} writes per second (burst {}); retry later",
        config.send_rate, config.send_burst
    );
    session.send_frame(
        &super::refused(id, Refusal::rate_limited(message, wait)),
        ctx,
    );
}
