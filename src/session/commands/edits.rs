//! `edit` and `delete` of a message (answered once durable), and `typing` (no answer; at most
//! one per user per group per [`TYPING_EVERY`], over all of the user's sessions, reaches the
//! group; extra ones are dropped).

use std::time::Duration;

use actix::prelude::*;

use crate::group::{reply_channel, By, DeleteMessage, EditMessage, Typing};
use crate::protocol::{check_send, RequestId, ServerFrame};

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

/// The least time between two `typing` of one user in one group that are forwarded.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);

pub(super) fn edit(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    seq: u64,
    body: String,
) -> Result<(), Refusal> {
    // The same limits as a send's body (the client_id is not the edit's).
    check_send("edit", &body, session.registry.config().max_body_bytes)?;
    let addr = session.group(group)?;
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let (reply, answer) = reply_channel();
    addr.do_send(EditMessage {
        user: session.user.clone(),
        seq,
        body,
        reply,
    });
    let group = group.to_owned();
    session.reply_later(ctx, async move {
        match answer.wait().await {
            Ok(()) => ServerFrame::Edited { id, group, seq },
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

pub(super) fn delete(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    seq: u64,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let (reply, answer) = reply_channel();
    addr.do_send(DeleteMessage {
        by: By::User(session.user.clone()),
        seq,
        reply,
    });
    let group = group.to_owned();
    session.reply_later(ctx, async move {
        match answer.wait().await {
            Ok(()) => ServerFrame::Deleted { id, group, seq },
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

pub(super) fn typing(
    session: &mut Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    let presence = session.registry.presence();
    if !presence.typing_allowed(&session.user, group, TYPING_EVERY) {
        return Ok(()); // dropped silently
    }
    let answer = addr.send(Typing {
        user: session.user.clone(),
    });
    let group = group.to_owned();
    let refused = async move {
        match answer.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(group_error(id, e)),
            Err(_) => Some(unavailable(id)),
        }
    };
    ctx.spawn(refused.into_actor(session).map(move |refused, act, ctx| {
        if let Some(frame) = refused {
            // A refused one does not count against the throttle: the next is refused too.
            act.registry.presence().typing_refused(&act.user, &group);
            act.send_frame(&frame, ctx);
        }
    }));
    Ok(())
}
