//! `sync` (pages after a seq, ascending) and `history` (the page before a seq): both answered
//! with `messages`, durable messages only.

use crate::group::{FetchMessages, Page};
use crate::protocol::{page_limit, RequestId, ServerFrame};

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

pub(super) fn sync(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    after: u64,
    limit: Option<usize>,
) -> Result<(), Refusal> {
    let limit = page_limit(limit);
    fetch(session, ctx, id, group, Page::After { after, limit })
}

pub(super) fn history(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    before: Option<u64>,
    limit: Option<usize>,
) -> Result<(), Refusal> {
    let limit = page_limit(limit);
    fetch(session, ctx, id, group, Page::Before { before, limit })
}

fn fetch(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    page: Page,
) -> Result<(), Refusal> {
    let request = session.group(&group)?.send(FetchMessages {
        user: Some(session.user.clone()),
        page,
    });
    session.reply_later(ctx, async move {
        match request.await {
            Ok(Ok(page)) => ServerFrame::Messages {
                id,
                group,
                messages: page.messages.into_iter().map(Into::into).collect(),
                more: page.more,
                last_seq: page.last_seq,
                first_seq: page.first_seq,
            },
            Ok(Err(e)) => group_error(id, e),
            Err(_) => unavailable(id),
        }
    });
    Ok(())
}
