//! `ack` and `read`: move the member's cursors forward; `mark_unread`: set the flag the next
//! `read` clears. No reply on success (the hot path); only errors are written.
//!
//! The `ack`s and `read`s of one burst of frames (what the socket had ready, up to actix's 16
//! frames per turn) are gathered per group and sent to the group as one [`AdvanceCursors`]
//! when the burst ends, or before any other frame is run, so no later frame's command overtakes
//! them. Cursors are max-registers: a client that reads one message at a time costs the group
//! one move per burst, not one per frame. Each refused move is still answered, with its own
//! frame's `id`: the group puts the `error` in the session's mailbox, so it comes before the
//! reply to any later frame (the group handles commands in order, and the session reads its
//! mailbox before the replies it waits for).

use actix::prelude::*;

use crate::group::{AdvanceCursors, Cursor, GroupActor, GroupError, MarkUnread};
use crate::protocol::RequestId;

use super::super::{group_error, refused, unavailable, Ctx, Refusal, Session};

/// Cursor moves read and not yet sent to their groups.
#[derive(Default)]
pub(in crate::session) struct CursorBatch {
    groups: Vec<GroupMoves>,
    /// A flush is queued behind the frames being read now.
    flush_queued: bool,
}

/// The moves for one group, with each frame's `id` at the same place.
struct GroupMoves {
    group: String,
    moves: Vec<(Cursor, u64)>,
    ids: Vec<Option<RequestId>>,
}

/// `ack` moves `delivered`, `read` moves `read` (and `delivered` with it): gathered, sent when
/// the burst of frames ends.
pub(super) fn advance(
    session: &mut Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    cursor: Cursor,
    seq: u64,
) -> Result<(), Refusal> {
    let batch = &mut session.cursor_batch;
    match batch.groups.iter_mut().find(|g| g.group == group) {
        Some(moves) => {
            moves.moves.push((cursor, seq));
            moves.ids.push(id);
        }
        None => batch.groups.push(GroupMoves {
            group,
            moves: vec![(cursor, seq)],
            ids: vec![id],
        }),
    }
    if !batch.flush_queued {
        batch.flush_queued = true;
        // Handled once the frames ready now were read: the mailbox is read after the stream's
        // turn. A message rather than a spawned future, whose completion would reorder the
        // session's other pending replies (actix keeps them in a vector and swap-removes).
        ctx.address().do_send(FlushCursors);
    }
    Ok(())
}

/// Sends the gathered cursor moves (queued by the session to itself after a burst of frames).
#[derive(Message)]
#[rtype(result = "()")]
pub(in crate::session) struct FlushCursors;

impl Handler<FlushCursors> for Session {
    type Result = ();

    fn handle(&mut self, _msg: FlushCursors, ctx: &mut Ctx) {
        flush(self, ctx);
    }
}

/// Sends the gathered moves to their groups; the groups put their refusals in this session's
/// mailbox.
pub(in crate::session) fn flush(session: &mut Session, ctx: &mut Ctx) {
    session.cursor_batch.flush_queued = false;
    for GroupMoves { group, moves, ids } in std::mem::take(&mut session.cursor_batch.groups) {
        let addr = match session.group(&group) {
            Ok(addr) => addr,
            Err(refusal) => {
                log::debug!(
                    "session {} of {}: {}: {}",
                    session.id,
                    session.user,
                    refusal.code.as_str(),
                    refusal.message
                );
                for id in ids {
                    session.send_frame(&refused(id, refusal.clone()), ctx);
                }
                continue;
            }
        };
        let command = command(session, ctx, moves, ids);
        // Queued now, so a later frame's command cannot overtake it, and without a reply to
        // wait for: the group puts its refusals in this session's mailbox, ahead of the replies
        // to later frames.
        match addr.try_send(command) {
            Ok(()) => {}
            // `send` on a fresh address queues past the bound too (one message per sender):
            // the same here, so the order is kept.
            Err(SendError::Full(command)) => addr.do_send(command),
            Err(SendError::Closed(command)) => {
                for id in command.ids {
                    session.send_frame(&unavailable(id), ctx);
                }
            }
        }
    }
}

/// Sends the gathered moves without waiting for answers (the session is closing).
pub(in crate::session) fn flush_closing(session: &mut Session, ctx: &mut Ctx) {
    for GroupMoves { group, moves, ids } in std::mem::take(&mut session.cursor_batch.groups) {
        if let Ok(addr) = session.group(&group) {
            addr.do_send(command(session, ctx, moves, ids));
        }
    }
}

/// The group command for one group's gathered moves; refusals go to this session's mailbox.
fn command(
    session: &Session,
    ctx: &mut Ctx,
    moves: Vec<(Cursor, u64)>,
    ids: Vec<Option<RequestId>>,
) -> AdvanceCursors {
    AdvanceCursors {
        user: session.user.clone(),
        moves,
        ids,
        session_id: Some(session.id),
        refusals_to: session.session_handle(ctx),
    }
}

pub(super) fn mark_unread(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
) -> Result<(), Refusal> {
    let command = MarkUnread {
        user: session.user.clone(),
        session_id: Some(session.id),
    };
    let request = session.group(group)?.send(command);
    answer_errors_only(session, ctx, id, request);
    Ok(())
}

/// Writes an `error` frame if the command fails; success has no reply.
fn answer_errors_only<M>(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    request: actix::dev::Request<GroupActor, M>,
) where
    M: actix::Message<Result = Result<(), GroupError>> + Send + 'static,
    GroupActor: actix::Handler<M>,
{
    ctx.spawn(
        request
            .into_actor(session)
            .map(move |result, act, ctx| match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => act.send_frame(&group_error(id, e), ctx),
                Err(_) => act.send_frame(&unavailable(id), ctx),
            }),
    );
}
