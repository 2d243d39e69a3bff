//! Groups managed by their members: `create_group`, `add_member`, `remove_member`, `set_role`,
//! `rename_group`, `set_receipts`, `leave` and `members`. Who may do what is the group actor's
//! decision (`group/membership.rs`); here frames are checked, named users must exist, and each
//! answer is written once the change is durable.

use std::sync::Arc;

use actix::Addr;

use crate::group::{
    reply_channel, AddMember, Answer, By, GroupActor, GroupError, Leave, ListMembers, RemoveMember,
    SetRole, UpdateGroup,
};
use crate::ids::{GroupId, UserId};
use crate::protocol::{
    check_name, ErrorCode, LeftReason, ReceiptPolicy, RequestId, Role, ServerFrame,
};
use crate::registry::Registry;
use crate::store::{GroupKindRecord, GroupSettingsRecord, MemberRecord, RoleRecord};

/// A membership command queued at the group, whose answer the reply future waits for.
enum Queued {
    Added(Answer<MemberRecord>),
    Done(Answer<()>),
}

use super::super::{group_error, unavailable, Ctx, Refusal, Session};

/// The most members a `create_group` may name.
pub const MAX_CREATE_MEMBERS: usize = 1000;

fn user_id(user: &str) -> Result<UserId, Refusal> {
    UserId::parse(user).map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))
}

/// The `members` reply of a group, as it is now.
async fn members_frame(
    registry: &Registry,
    addr: &Addr<GroupActor>,
    id: Option<RequestId>,
    group: &GroupId,
    user: Option<UserId>,
) -> ServerFrame {
    let members = match addr.send(ListMembers { user }).await {
        Ok(Ok(members)) => members,
        Ok(Err(e)) => return group_error(id, e),
        Err(_) => return unavailable(id),
    };
    match registry.member_entries(&members) {
        Ok(members) => ServerFrame::Members {
            id,
            group: group.to_string(),
            members,
        },
        Err(e) => group_error(id, e.into()),
    }
}

pub(super) fn create_group(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    name: &str,
    members: &[String],
) -> Result<(), Refusal> {
    if !session.registry.config().user_groups {
        return Err(Refusal::new(
            ErrorCode::NotAllowed,
            "on this server only the admin creates groups (--user-groups false)",
        ));
    }
    let name = check_name(name)?;
    if members.len() > MAX_CREATE_MEMBERS {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            format!("at most {MAX_CREATE_MEMBERS} members at creation; add more later"),
        ));
    }
    // The creator first: the owner.
    let mut users = vec![session.user.clone()];
    for member in members {
        let member = user_id(member)?;
        if !users.contains(&member) {
            users.push(member);
        }
    }
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let registry = Arc::clone(&session.registry);
    let owner = session.user.clone();
    session.reply_later(ctx, async move {
        if let Err(e) = registry.check_users(&users) {
            return group_error(id, e);
        }
        let group = GroupId::generate();
        let created = registry
            .create_group_with(
                &group,
                &name,
                GroupKindRecord::Group,
                &users,
                GroupSettingsRecord::default(),
                Some(&owner),
            )
            .await;
        match created {
            Ok(Some(_)) => {
                log::info!("{owner} created group {group} with {} members", users.len());
                ServerFrame::GroupCreated {
                    id,
                    group: group.to_string(),
                }
            }
            Ok(None) => group_error(id, GroupError::Storage("a generated id was taken".into())),
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

/// What `add_member`, `remove_member` and `set_role` change.
pub(super) enum MemberChange {
    Add,
    Remove,
    SetRole(Role),
}

pub(super) fn change_member(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    user: &str,
    change: MemberChange,
) -> Result<(), Refusal> {
    let target = user_id(user)?;
    if target == session.user && matches!(change, MemberChange::Remove) {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            "to leave a group, send leave",
        ));
    }
    let addr = session.group(group)?;
    let group =
        GroupId::parse(group).map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let by = By::User(session.user.clone());
    let registry = Arc::clone(&session.registry);
    let me = session.user.clone();
    // Queued now (before any await), so a later frame's command cannot overtake this one.
    let done = match change {
        MemberChange::Add => match registry.check_users(std::slice::from_ref(&target)) {
            Ok(()) => {
                let (reply, answer) = reply_channel();
                addr.do_send(AddMember {
                    user: target.clone(),
                    role: RoleRecord::Member,
                    by: by.clone(),
                    reply,
                });
                Ok(Queued::Added(answer))
            }
            Err(e) => Err(e),
        },
        MemberChange::Remove => {
            let (reply, answer) = reply_channel();
            addr.do_send(RemoveMember {
                user: target.clone(),
                by: by.clone(),
                reply,
            });
            Ok(Queued::Done(answer))
        }
        MemberChange::SetRole(role) => {
            let (reply, answer) = reply_channel();
            addr.do_send(SetRole {
                user: target.clone(),
                role: role.into(),
                by: by.clone(),
                reply,
            });
            Ok(Queued::Done(answer))
        }
    };
    session.reply_later(ctx, async move {
        let result = match done {
            Ok(Queued::Done(answer)) => answer.wait().await,
            Ok(Queued::Added(answer)) => answer.wait().await.map(drop),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => members_frame(&registry, &addr, id, &group, Some(me)).await,
            // Removing yourself is refused above; a non-member target reads as such.
            Err(GroupError::NotMember) => ServerFrame::error(
                id,
                ErrorCode::NotMember,
                "that user (or you) is not a member of this group",
            ),
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

/// `rename_group` and `set_receipts`: answered with `group_updated {id}`.
pub(super) fn update_group(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
    name: Option<&str>,
    receipts: Option<ReceiptPolicy>,
) -> Result<(), Refusal> {
    let name = name.map(check_name).transpose()?;
    let addr = session.group(group)?;
    if !super::take_write(session, ctx, &id) {
        return Ok(());
    }
    let (reply, answer) = reply_channel();
    addr.do_send(UpdateGroup {
        retention: None,
        name,
        receipts: receipts.map(Into::into),
        by: By::User(session.user.clone()),
        reply,
    });
    let group = group.to_owned();
    session.reply_later(ctx, async move {
        match answer.wait().await {
            Ok(view) => ServerFrame::GroupUpdated {
                id,
                group,
                name: view.name,
                receipts: view.receipts.into(),
                role: None,
            },
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

pub(super) fn leave(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    let (reply, answer) = reply_channel();
    addr.do_send(Leave {
        user: session.user.clone(),
        session_id: Some(session.id),
        reply,
    });
    let group = group.to_owned();
    session.reply_later(ctx, async move {
        match answer.wait().await {
            Ok(()) => ServerFrame::Left {
                id,
                group,
                reason: LeftReason::Left,
            },
            Err(e) => group_error(id, e),
        }
    });
    Ok(())
}

pub(super) fn members(
    session: &Session,
    ctx: &mut Ctx,
    id: Option<RequestId>,
    group: &str,
) -> Result<(), Refusal> {
    let addr = session.group(group)?;
    let group =
        GroupId::parse(group).map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
    let registry = Arc::clone(&session.registry);
    let user = session.user.clone();
    session.reply_later(ctx, async move {
        members_frame(&registry, &addr, id, &group, Some(user)).await
    });
    Ok(())
}
