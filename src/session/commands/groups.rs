//! `groups`: a page of the user's groups in ascending id order (stable while activity changes),
//! and the summaries `welcome` is built from. Neither starts a group's actor: a group whose
//! actor is not running is summarized from the store (`Registry::summarize`).

use std::sync::Arc;

use crate::group::{AttachSession, Attached};
use crate::ids::{GroupId, UserId};
use crate::presence::SessionHandle;
use crate::protocol::{page_limit, ErrorCode, RequestId, ServerFrame};
use crate::registry::{Registry, Summarized};

use super::super::{Ctx, Refusal, Session};

/// The summaries of `ids` for `session`'s user, in the order given. A running group attaches
/// the session as it answers; one that is not running starts later with the session attached
/// from the online directory, where it is registered already.
pub(in crate::session) async fn summaries(
    registry: Arc<Registry>,
    session: SessionHandle,
    ids: Vec<GroupId>,
) -> Vec<Attached> {
    let user: &UserId = &session.user;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match registry.summarize(&id, user) {
            Ok(Some(Summarized::Stored(attached))) => out.push(attached),
            Ok(Some(Summarized::Running(addr))) => {
                let asked = addr.send(AttachSession {
                    session: session.clone(),
                });
                if let Ok(Some(attached)) = asked.await {
                    out.push(attached);
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("summarizing group {id} for {user} failed: {e}"),
        }
    }
    out
}

pub(super) fn groups(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    after: Option<String>,
    limit: Option<usize>,
) -> Result<(), Refusal> {
    let after = after
        .map(|a| GroupId::parse(&a))
        .transpose()
        .map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
    let limit = page_limit(limit);
    let ids = session
        .registry
        .store()
        .user_groups(&session.user)
        .map_err(|e| {
            log::error!("listing the groups of {} failed: {e}", session.user);
            Refusal::new(
                ErrorCode::Storage,
                "the groups could not be read; retry later",
            )
        })?;
    let mut ids: Vec<GroupId> = ids
        .into_iter()
        .filter(|g| after.as_ref().is_none_or(|a| g > a))
        .collect();
    ids.sort();
    let registry = Arc::clone(&session.registry);
    let handle = session.session_handle(ctx);
    session.reply_later(ctx, async move {
        // The index is a superset of the memberships: page until `limit` real ones are found.
        let mut groups = Vec::with_capacity(limit);
        let mut rest = ids.into_iter();
        loop {
            let batch: Vec<GroupId> = rest.by_ref().take(limit - groups.len()).collect();
            if batch.is_empty() {
                break;
            }
            let found = summaries(Arc::clone(&registry), handle.clone(), batch).await;
            groups.extend(found.into_iter().map(|a| a.summary.into()));
            if groups.len() >= limit {
                break;
            }
        }
        let more = rest.next().is_some();
        ServerFrame::Groups { id, groups, more }
    });
    Ok(())
}
