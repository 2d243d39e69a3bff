//! `ack` and `read`: move the member's cursors forward; `mark_unread`: set the flag the next
//! `read` clears. No reply on success (the hot path); only errors are written.

use actix::prelude::*;

use crate::group::{AdvanceCursor, Cursor, GroupActor, GroupError, MarkUnread};
use crate::protocol::RequestId;

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

/// `ack` moves `delivered`, `read` moves `read` (and `delivered` with it).
pub(super) fn advance(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    cursor: Cursor,
    seq: u64,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    let command = AdvanceCursor {
        user: session.user.clone(),
        cursor,
        seq,
        session_id: Some(session.id),
    };
    // Queued now, so a later frame's command cannot overtake it.
    answer_errors_only(session, ctx, id, addr.send(command));
    Ok(())
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
