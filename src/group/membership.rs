//! Membership and roles: adding and removing members, roles (`owner`, `admin`, `member`),
//! leaving (a last owner hands ownership on), listing members, and deleting the group.
//!
//! Who may do what is [`check_change`], a pure function of the asker's and the target's roles
//! (property-tested below): owners and admins manage members and the name; only an owner makes
//! or unmakes an owner, so an admin can neither remove nor demote one; the server's admin may
//! do everything. Nobody changes the members of a direct conversation. A group always keeps an
//! owner while it has members and had one: the last owner cannot step down, and leaving hands
//! ownership to the longest-standing admin, else member.
//!
//! Roles are stored beside the members (`o` + user in the group's tree, absent for `member`);
//! every change answers once durable, like every other write.

use crate::presence::FrameText;

use actix::prelude::*;

use crate::ids::UserId;
use crate::protocol::{LeftReason, ServerFrame};
use crate::store::{GroupKindRecord, MemberRecord, RoleRecord};

use super::commit_queue::AfterFlush;
use super::{
    AddMember, By, DeleteGroup, GroupActor, GroupError, Leave, ListMembers, MemberView,
    RemoveMember, SetRole,
};

/// A change of a group's members, names or roles, for [`check_change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Add a member, rename, or change the receipt policy.
    Manage,
    /// Remove a member who has this role.
    Remove(RoleRecord),
    /// Change a member's role from one to another.
    SetRole { from: RoleRecord, to: RoleRecord },
}

/// Whether a member with role `asker` may make `change`; the sentence why not.
pub(super) fn check_change(asker: RoleRecord, change: Change) -> Result<(), String> {
    if asker == RoleRecord::Member {
        return Err("only the group's owners and admins can do that".into());
    }
    let touches_owner = match change {
        Change::Manage => false,
        Change::Remove(role) => role == RoleRecord::Owner,
        Change::SetRole { from, to } => from == RoleRecord::Owner || to == RoleRecord::Owner,
    };
    if touches_owner && asker != RoleRecord::Owner {
        return Err("only an owner can make, unmake or remove an owner".into());
    }
    Ok(())
}

impl GroupActor {
    pub(super) fn role_of(&self, user: &UserId) -> RoleRecord {
        self.roles.get(user).copied().unwrap_or_default()
    }

    fn n_owners(&self) -> usize {
        self.roles
            .values()
            .filter(|r| **r == RoleRecord::Owner)
            .count()
    }

    /// Fails unless `by` may make `change` in this group.
    pub(super) fn check_allowed(&self, by: &By, change: Change) -> Result<(), GroupError> {
        if self.deleted {
            return Err(GroupError::Deleted);
        }
        let By::User(user) = by else {
            return Ok(());
        };
        if self.record.kind == GroupKindRecord::Direct {
            return Err(GroupError::NotAllowed(
                "a direct conversation has no settings and its members cannot change".into(),
            ));
        }
        self.check_member(user)?;
        check_change(self.role_of(user), change).map_err(GroupError::NotAllowed)
    }

    /// Adds a member; returns its record and whether it is new.
    pub(super) fn add_member(
        &mut self,
        user: UserId,
        role: RoleRecord,
        by: &By,
    ) -> Result<(MemberRecord, bool), GroupError> {
        self.check_allowed(by, Change::Manage)?;
        if let Some(existing) = self.members.get(&user) {
            return Ok((*existing, false));
        }
        if role == RoleRecord::Owner && matches!(by, By::User(_)) {
            check_change(
                self.role_of_by(by),
                Change::SetRole {
                    from: RoleRecord::Member,
                    to: role,
                },
            )
            .map_err(GroupError::NotAllowed)?;
        }
        let last_seq = self.queue.last_seq();
        let record = MemberRecord {
            joined_seq: last_seq,
            delivered: last_seq,
            read: last_seq,
        };
        let shares = self
            .deps
            .store
            .user_settings(&user)?
            .unwrap_or_default()
            .share_reads;
        self.deps.store.writable()?;
        self.deps.store.add_member(&self.id, &user, &record)?;
        if role != RoleRecord::Member {
            self.deps.store.put_member_role(&self.id, &user, role)?;
            self.roles.insert(user.clone(), role);
        }
        self.queue.wrote();
        self.index.insert(&record, shares);
        if !shares {
            self.private_readers.insert(user.clone());
        }
        self.members.insert(user.clone(), record);
        log::info!("group {}: added member {user} ({role:?})", self.id);
        Ok((record, true))
    }

    fn role_of_by(&self, by: &By) -> RoleRecord {
        match by {
            By::Admin => RoleRecord::Owner,
            By::User(user) => self.role_of(user),
        }
    }

    /// Attaches the online sessions of a member added by a write that is now durable, and
    /// tells them with `joined`. Done after the flush, not at the add: messages sent before the
    /// member joined are still being released then and must not reach them, and by now
    /// `durable_seq >= joined_seq`, so the summary is consistent. (The member's index entry was
    /// written before this lookup: a session that registers later finds the group itself.)
    pub(super) fn attach_new_member(&mut self, user: &UserId, joined_seq: u64) {
        let Some(record) = self.members.get(user).copied() else {
            return; // removed again meanwhile
        };
        if record.joined_seq != joined_seq {
            // Removed and added again meanwhile: that later add attaches, after the messages
            // up to its own join point.
            return;
        }
        // Every message after the join point is pushed after this, whatever is durable by now.
        let summary = self.summary(user, &record, record.joined_seq).into();
        let text: FrameText = FrameText::from(ServerFrame::Joined { summary }.to_text());
        for session in self.deps.presence.sessions_of(user) {
            if self.fanout.is_attached(user, session.id) {
                continue; // attached by its own welcome meanwhile
            }
            if session.offer("joined", &text).is_ok() {
                self.fanout.attach(session);
            }
        }
    }

    /// Removes a member: their sessions stop getting pushes at once, and are told with `left`
    /// (`reason`) once the removal is durable, but `except` (the session that asked).
    fn remove_member(
        &mut self,
        user: &UserId,
        reason: LeftReason,
        except: Option<u64>,
    ) -> Result<(), GroupError> {
        let record = *self.check_member(user)?;
        self.deps.store.remove_member(&self.id, user)?;
        self.queue.wrote();
        self.index.remove(&record, self.shares_reads(user));
        self.private_readers.remove(user);
        self.members.remove(user);
        self.roles.remove(user);
        self.moved.remove(user);
        self.unwritten_cursors.remove(user);
        // Their flag and reminders go with them (a later add starts clean).
        if self.clear_marked_unread(user) {
            log::debug!("group {}: unread flag of {user} cleared", self.id);
        }
        self.drop_read_reminders(user, u64::MAX);
        // Stop pushing at once; tell the user's sessions once durable.
        let text: FrameText = FrameText::from(
            ServerFrame::Left {
                id: None,
                group: self.id.to_string(),
                reason,
            }
            .to_text(),
        );
        let sessions = self.fanout.take_user(user);
        self.deferred.push(AfterFlush::Farewell {
            sessions,
            text,
            except,
        });
        log::info!("group {}: member {user} gone ({reason:?})", self.id);
        Ok(())
    }

    /// Writes a member's role and tells their sessions with `group_updated` (`role`).
    fn write_role(&mut self, user: &UserId, role: RoleRecord) -> Result<(), GroupError> {
        self.deps.store.put_member_role(&self.id, user, role)?;
        self.queue.wrote();
        if role == RoleRecord::Member {
            self.roles.remove(user);
        } else {
            self.roles.insert(user.clone(), role);
        }
        let text: FrameText = FrameText::from(
            ServerFrame::GroupUpdated {
                id: None,
                group: self.id.to_string(),
                name: self.record.name.clone(),
                receipts: self.settings.receipts.into(),
                role: Some(role.into()),
            }
            .to_text(),
        );
        // After the flush: the role is durable when the member hears of it.
        let frames = vec![(user.clone(), text)];
        let kind = "group_updated";
        self.deferred.push(AfterFlush::Notify { kind, frames });
        log::info!("group {}: {user} is now {role:?}", self.id);
        Ok(())
    }

    fn set_role(&mut self, msg: &SetRole) -> Result<(), GroupError> {
        let from = self
            .check_member(&msg.user)
            .map(|_| self.role_of(&msg.user))?;
        self.check_allowed(&msg.by, Change::SetRole { from, to: msg.role })?;
        if from == msg.role {
            return Ok(());
        }
        if from == RoleRecord::Owner && self.n_owners() == 1 {
            return Err(GroupError::NotAllowed(format!(
                "{} is the group's last owner: make another member owner first",
                msg.user
            )));
        }
        self.deps.store.writable()?;
        self.write_role(&msg.user, msg.role)
    }

    fn remove(&mut self, msg: &RemoveMember) -> Result<(), GroupError> {
        let role = self
            .check_member(&msg.user)
            .map(|_| self.role_of(&msg.user))?;
        self.check_allowed(&msg.by, Change::Remove(role))?;
        self.deps.store.writable()?;
        // Only the server's admin can remove a last owner (an owner removes others, and
        // leaves with `leave`): ownership passes on as when they leave.
        self.hand_over_if_last_owner(&msg.user)?;
        self.remove_member(&msg.user, LeftReason::Removed, None)
    }

    /// The member who takes over from the last owner: the longest-standing admin, else member
    /// (earliest join; the lower id on a tie).
    fn successor(&self, leaving: &UserId) -> Option<UserId> {
        self.members
            .iter()
            .filter(|(user, _)| *user != leaving)
            .min_by_key(|(user, record)| {
                let not_admin = self.role_of(user) != RoleRecord::Admin;
                (not_admin, record.joined_seq, (*user).clone())
            })
            .map(|(user, _)| user.clone())
    }

    fn leave(&mut self, user: &UserId, session_id: Option<u64>) -> Result<(), GroupError> {
        self.check_allowed(&By::User(user.clone()), Change::Manage)
            .or_else(|e| match e {
                // Leaving needs no role, only membership (and not a direct conversation).
                GroupError::NotAllowed(_) if self.record.kind == GroupKindRecord::Group => Ok(()),
                e => Err(e),
            })?;
        self.deps.store.writable()?;
        self.hand_over_if_last_owner(user)?;
        self.remove_member(user, LeftReason::Left, session_id)
    }

    /// Before the last owner goes: makes the successor owner.
    fn hand_over_if_last_owner(&mut self, user: &UserId) -> Result<(), GroupError> {
        if self.role_of(user) == RoleRecord::Owner && self.n_owners() == 1 {
            if let Some(next) = self.successor(user) {
                self.write_role(&next, RoleRecord::Owner)?;
            }
        }
        Ok(())
    }

    /// Deletes everything of the group; members hear `left` (`deleted`) at once.
    fn delete(&mut self) -> Result<(), GroupError> {
        if self.deleted {
            return Err(GroupError::Deleted);
        }
        self.deps.store.writable()?;
        let text: FrameText = FrameText::from(
            ServerFrame::Left {
                id: None,
                group: self.id.to_string(),
                reason: LeftReason::Deleted,
            }
            .to_text(),
        );
        self.deps.store.delete_group(&self.id)?;
        self.queue.wrote();
        self.deleted = true;
        // Nobody gets pushes any more; everyone is told once the deletion is durable.
        let sessions = self.fanout.take_all();
        self.deferred.push(AfterFlush::Farewell {
            sessions,
            text,
            except: None,
        });
        // Nothing of the group may be written again (a write would bring its tree back).
        let n_members = self.members.len();
        self.members.clear();
        self.roles.clear();
        self.moved.clear();
        self.unwritten_cursors.clear();
        self.marked_unread.clear();
        self.private_readers.clear();
        self.reminders = Default::default();
        log::info!("group {}: deleted ({n_members} members)", self.id);
        Ok(())
    }

    /// The members with their roles, sorted by user id.
    pub(super) fn member_views(&self) -> Vec<(UserId, MemberView)> {
        let mut members: Vec<(UserId, MemberView)> = self
            .members
            .iter()
            .map(|(user, record)| {
                let role = self.role_of(user);
                (
                    user.clone(),
                    MemberView {
                        record: *record,
                        role,
                    },
                )
            })
            .collect();
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        members
    }

    /// Queues the pushes of the changes written so far behind their flush.
    fn queue_deferred(&mut self, ctx: &mut Context<Self>) {
        for action in std::mem::take(&mut self.deferred) {
            self.after_flush(action, ctx);
        }
    }

    /// Answers `reply` with `result` once the writes so far are durable.
    fn answer_when_durable(
        &mut self,
        result: Result<(), GroupError>,
        reply: super::Reply<()>,
        ctx: &mut Context<Self>,
    ) {
        self.queue_deferred(ctx);
        match result {
            Ok(()) => self.after_flush(AfterFlush::Done { reply }, ctx),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

impl Handler<AddMember> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: AddMember, ctx: &mut Context<Self>) {
        self.used();
        match self.add_member(msg.user.clone(), msg.role, &msg.by) {
            Ok((record, new)) => {
                if new {
                    let (user, joined_seq) = (msg.user, record.joined_seq);
                    self.after_flush(AfterFlush::AttachNewMember { user, joined_seq }, ctx);
                }
                self.after_flush(
                    AfterFlush::MemberAdded {
                        record,
                        reply: msg.reply,
                    },
                    ctx,
                );
            }
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

impl Handler<RemoveMember> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) {
        self.used();
        let result = self.remove(&msg);
        self.answer_when_durable(result, msg.reply, ctx);
    }
}

impl Handler<SetRole> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: SetRole, ctx: &mut Context<Self>) {
        self.used();
        let result = self.set_role(&msg);
        self.answer_when_durable(result, msg.reply, ctx);
    }
}

impl Handler<Leave> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.used();
        let result = self.leave(&msg.user, msg.session_id);
        self.answer_when_durable(result, msg.reply, ctx);
    }
}

impl Handler<DeleteGroup> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteGroup, ctx: &mut Context<Self>) {
        self.used();
        let deleted = self.delete();
        self.queue_deferred(ctx);
        match deleted {
            Ok(()) => self.after_flush(AfterFlush::Deleted { reply: msg.reply }, ctx),
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

impl Handler<ListMembers> for GroupActor {
    type Result = Result<Vec<(UserId, MemberView)>, GroupError>;

    fn handle(&mut self, msg: ListMembers, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        if self.deleted {
            return Err(GroupError::Deleted);
        }
        if let Some(user) = &msg.user {
            self.check_member(user)?;
        }
        Ok(self.member_views())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoleRecord::{Admin, Member, Owner};

    const ROLES: [RoleRecord; 3] = [Member, Admin, Owner];

    #[test]
    fn members_manage_nothing_admins_all_but_owners() {
        assert!(check_change(Member, Change::Manage).is_err());
        assert!(check_change(Admin, Change::Manage).is_ok());
        assert!(check_change(Admin, Change::Remove(Member)).is_ok());
        assert!(check_change(Admin, Change::Remove(Admin)).is_ok());
        assert!(check_change(Admin, Change::Remove(Owner)).is_err());
        assert!(check_change(
            Admin,
            Change::SetRole {
                from: Member,
                to: Admin
            }
        )
        .is_ok());
        assert!(check_change(
            Admin,
            Change::SetRole {
                from: Owner,
                to: Admin
            }
        )
        .is_err());
        assert!(check_change(
            Admin,
            Change::SetRole {
                from: Member,
                to: Owner
            }
        )
        .is_err());
        assert!(check_change(
            Owner,
            Change::SetRole {
                from: Owner,
                to: Member
            }
        )
        .is_ok());
    }

    proptest::proptest! {
        /// Whatever the change: members may not; owners may; an admin may exactly when no
        /// owner is made, unmade or removed.
        #[test]
        fn the_rules_follow_the_roles(asker in 0..3usize, from in 0..3usize, to in 0..3usize, kind in 0..3u8) {
            let (asker, from, to) = (ROLES[asker], ROLES[from], ROLES[to]);
            let change = match kind {
                0 => Change::Manage,
                1 => Change::Remove(from),
                _ => Change::SetRole { from, to },
            };
            let allowed = check_change(asker, change).is_ok();
            let touches_owner = match change {
                Change::Manage => false,
                Change::Remove(r) => r == Owner,
                Change::SetRole { from, to } => from == Owner || to == Owner,
            };
            let expected = match asker {
                Member => false,
                Owner => true,
                Admin => !touches_owner,
            };
            proptest::prop_assert_eq!(allowed, expected);
        }
    }
}
