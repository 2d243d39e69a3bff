//! `receipts`: pulled receipt counts, for the caller's own messages (`mine`) or given seqs.

use crate::group::{ListReceipts, ReceiptQuery};
use crate::protocol::{page_limit, ErrorCode, RequestId, ServerFrame, MAX_PAGE};

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

#[allow(clippy::too_many_arguments)] // the frame's fields, one by one
pub(super) fn receipts(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: String,
    mine: bool,
    seqs: Option<Vec<u64>>,
    after: u64,
    limit: Option<usize>,
) -> Result<(), Refusal> {
    let query = match (seqs, mine) {
        (Some(seqs), _) if seqs.len() > MAX_PAGE => {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_PAGE} seqs per request"),
            ))
        }
        (Some(seqs), _) => ReceiptQuery::Seqs(seqs),
        (None, true) => ReceiptQuery::Mine {
            after,
            limit: page_limit(limit),
        },
        (None, false) => {
            return Err(Refusal::new(
                ErrorCode::BadFrame,
                "receipts needs \"mine\": true or \"seqs\"",
            ))
        }
    };
    // Queued now, in frame order (inside the future it would wait for a poll).
    let request = session.group(&group)?.send(ListReceipts {
        user: session.user.clone(),
        query,
    });
    session.reply_later(ctx, async move {
        match request.await {
            Ok(Ok(page)) => ServerFrame::Receipts {
                id,
                group,
                items: page.items.into_iter().map(Into::into).collect(),
                more: page.more,
            },
            Ok(Err(e)) => group_error(id, e),
            Err(_) => unavailable(id),
        }
    });
    Ok(())
}
