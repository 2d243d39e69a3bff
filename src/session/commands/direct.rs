//! `direct`: the direct conversation with another (existing, active) user, created on first use.

use std::sync::Arc;

use crate::ids::UserId;
use crate::protocol::{ErrorCode, RequestId, ServerFrame};

use super::super::{group_error, Ctx, Refusal, Session};

pub(super) fn direct(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    with: &str,
) -> Result<(), Refusal> {
    let other =
        UserId::parse(with).map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
    let user = session.user.clone();
    if other == user {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            "a direct conversation needs another user",
        ));
    }
    // Opening a new conversation writes (a group, two members): it counts against the same
    // budget as a send. The other user must exist (`no_such_user`): nobody is created because
    // someone else named them.
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let registry = Arc::clone(&session.registry);
    session.reply_later(ctx, async move {
        match registry.open_direct(&user, &other).await {
            Ok(group) => ServerFrame::Direct {
                id,
                group: group.to_string(),
            },
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}
