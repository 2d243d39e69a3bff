//! `readers`: exactly who has read, only received, or not received one message.

use crate::group::ListReaders;
use crate::protocol::{RequestId, ServerFrame};

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

pub(super) fn readers(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    seq: u64,
) -> Result<(), Refusal> {
    let request = session.group(group)?.send(ListReaders {
        user: Some(session.user.clone()),
        seq,
    });
    session.reply_later(ctx, async move {
        match request.await {
            Ok(Ok(readers)) => ServerFrame::Readers {
                id,
                readers: readers.into(),
            },
            Ok(Err(e)) => group_error(id, e),
            Err(_) => unavailable(id),
        }
    });
    Ok(())
}
