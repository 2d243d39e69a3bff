//! `remind`: remind the recipients of a message who have not read it, answered with `reminded`
//! once the reminders are durable.

use crate::group::{reply_channel, Remind};
use crate::protocol::RequestId;

use super::super::{group_error, Ctx, Refusal, Session};

pub(super) fn remind(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    seq: u64,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    let (reply, answer) = reply_channel();
    addr.do_send(Remind {
        user: session.user.clone(),
        seq,
        reply,
    });
    session.reply_later(ctx, async move {
        match answer.wait().await {
            Ok(reminded) => reminded.into_frame(id),
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}
