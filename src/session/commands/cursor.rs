//! `ack` and `read`: move the member's cursors forward. No reply on success (the hot path);
//! only errors are written.

use actix::prelude::*;

use crate::group::{AdvanceCursor, Cursor};
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
    let request = addr.send(command);
    ctx.spawn(
        request
            .into_actor(session)
            .map(move |result, act, ctx| match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => act.send_frame(&group_error(id, e), ctx),
                Err(_) => act.send_frame(&unavailable(id), ctx),
            }),
    );
    Ok(())
}
