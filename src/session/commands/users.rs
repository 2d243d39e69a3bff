//! `users`: a page of active users in id order (to pick the other side of a `direct`, or
//! members); deactivated users are left out.

use crate::ids::UserId;
use crate::protocol::{page_limit, ErrorCode, RequestId, ServerFrame};

use super::super::{Ctx, Refusal, Session};

pub(super) fn users(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    after: Option<String>,
    limit: Option<usize>,
) -> Result<(), Refusal> {
    let after = after
        .map(|a| UserId::parse(&a))
        .transpose()
        .map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
    let limit = page_limit(limit);
    let (users, more) = match session.registry.user_entries(after.as_ref(), limit) {
        Ok(page) => page,
        Err(e) => {
            log::error!("listing users for {} failed: {e}", session.user);
            return Err(Refusal::new(
                ErrorCode::Storage,
                "the users could not be read; retry later",
            ));
        }
    };
    session.send_frame(&ServerFrame::Users { id, users, more }, ctx);
    Ok(())
}
