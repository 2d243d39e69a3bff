//! `users`: a page of users in id order (to pick the other side of a `direct`).

use crate::ids::UserId;
use crate::protocol::{page_limit, ErrorCode, RequestId, ServerFrame, UserEntry};

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
    // One more than asked tells whether another page exists.
    let mut page = match session.registry.store().users(after.as_ref(), limit + 1) {
        Ok(page) => page,
        Err(e) => {
            log::error!("listing users for {} failed: {e}", session.user);
            return Err(Refusal::new(
                ErrorCode::Internal,
                "storage failure; retry later",
            ));
        }
    };
    let more = page.len() > limit;
    page.truncate(limit);
    let users = page
        .into_iter()
        .map(|(id, record)| UserEntry {
            id: id.to_string(),
            name: record.name,
        })
        .collect();
    session.send_frame(&ServerFrame::Users { id, users, more }, ctx);
    Ok(())
}
