//! `send`: store a message, answered with `sent` once it is durable.

use actix::prelude::*;

use crate::group::{reply_channel, PostMessage};
use crate::protocol::{check_send, ErrorCode, RequestId, ServerFrame};

use super::super::{group_error, Ctx, Refusal, Session};

pub(super) fn send(
    session: &mut Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    client_id: String,
    body: String,
) -> Result<(), Refusal> {
    check_send(&client_id, &body, session.registry.config().max_body_bytes)?;
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    // `do_send` ignores the group's mailbox bound, so bound what one session may have queued
    // there; the client retries after some `sent` replies.
    let limit = session.registry.config().session_queue;
    if session.sends_in_flight >= limit {
        return Err(Refusal::new(
            ErrorCode::Busy,
            format!("{limit} sends are waiting for `sent`; retry later"),
        ));
    }
    let addr = session.group(&group)?;
    let (reply, answer) = reply_channel();
    // `do_send` keeps the client's order of sends.
    addr.do_send(PostMessage {
        from: session.user.clone(),
        client_id: client_id.clone(),
        body,
        reply,
    });
    session.sends_in_flight += 1;
    let answered = async move {
        match answer.wait().await {
            Ok(posted) => ServerFrame::Sent {
                id,
                group,
                client_id,
                seq: posted.seq,
                ts: posted.ts,
                duplicate: posted.duplicate,
            },
            Err(e) => group_error(id, e),
        }
    };
    ctx.spawn(answered.into_actor(session).map(|frame, act, ctx| {
        act.sends_in_flight = act.sends_in_flight.saturating_sub(1);
        act.send_frame(&frame, ctx);
    }));
    Ok(())
}
