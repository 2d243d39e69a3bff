//! `settings`: read (`settings {}`) or change the user's settings (today `share_reads`).

use std::sync::Arc;

use crate::protocol::{RequestId, ServerFrame};

use super::super::{group_error, Ctx, Session};

pub(super) fn settings(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    share_reads: Option<bool>,
) {
    let registry = Arc::clone(&session.registry);
    let user = session.user.clone();
    session.reply_later(ctx, async move {
        let result = match share_reads {
            Some(share_reads) => registry.set_share_reads(&user, share_reads).await,
            None => registry.share_reads(&user),
        };
        match result {
            Ok(share_reads) => ServerFrame::Settings { id, share_reads },
            Err(e) => group_error(id, e),
        }
    });
}
