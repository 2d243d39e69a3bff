//! `send`: store a message, answered with `sent` once it is durable (with its scheduled
//! reminder, when `remind_after_secs` asks for one).

use std::time::Duration;

use actix::prelude::*;

use crate::group::{reply_channel, PostMessage};
use crate::protocol::{check_send, ErrorCode, RequestId, ServerFrame, MAX_REMIND_AFTER_SECS};

use super::super::{group_error, Ctx, Refusal, Session};

/// The fields of a `send` frame.
pub(super) struct Send {
    pub group: String,
    pub client_id: String,
    pub body: String,
    pub remind_after_secs: Option<u64>,
    pub reply_to: Option<u64>,
}

pub(super) fn send(
    session: &mut Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    send: Send,
) -> Result<(), Refusal> {
    let Send {
        group,
        client_id,
        body,
        remind_after_secs,
        reply_to,
    } = send;
    check_send(&client_id, &body, session.registry.config().max_body_bytes)?;
    let remind_after = match remind_after_secs {
        None => None,
        Some(secs @ 1..=MAX_REMIND_AFTER_SECS) => Some(Duration::from_secs(secs)),
        Some(secs) => {
            return Err(Refusal::new(
                ErrorCode::BadFrame,
                format!("remind_after_secs must be 1-{MAX_REMIND_AFTER_SECS}, not {secs}"),
            ))
        }
    };
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
        remind_after,
        reply_to,
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
