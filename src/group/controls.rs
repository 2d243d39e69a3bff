//! What members and the admin control about receipts and a conversation: the group's name and
//! receipt policy (`full`, `counts`, `off`), whether a member shares its reads, and a member's
//! "marked unread" flag.
//!
//! The policy and the flag are stored beside the group's records (`c`, `f` + user in its tree);
//! the sharing setting is the user's (the registry stores it and tells each of the user's
//! groups). Receipts stay derived: changing who shares rewrites nothing, it moves the member
//! between the receipt index's vectors, and marks the member's read interval as moved so the
//! senders' counts are pushed again on the next tick.

use crate::presence::FrameText;

use actix::prelude::*;

use crate::ids::UserId;
use crate::protocol::ServerFrame;
use crate::store::{GroupRecord, GroupSettingsRecord, MemberFlagsRecord, ReceiptPolicyRecord};

use super::commit_queue::AfterFlush;
use super::membership::Change;
use super::{Cursor, GroupActor, GroupError, MarkUnread, UpdateGroup};

impl GroupActor {
    /// Whether `user` shares its reads (everyone does unless they turned it off).
    pub(super) fn shares_reads(&self, user: &UserId) -> bool {
        !self.private_readers.contains(user)
    }

    /// Fails unless receipts may be shown: `lists` for who read, otherwise counts.
    pub(super) fn check_receipts_shown(&self, lists: bool) -> Result<(), GroupError> {
        match self.settings.receipts {
            ReceiptPolicyRecord::Off => Err(GroupError::ReceiptsOff),
            ReceiptPolicyRecord::Counts if lists => Err(GroupError::ReceiptsHidden),
            _ => Ok(()),
        }
    }

    pub(super) fn update_group(&mut self, msg: UpdateGroup, ctx: &mut Context<Self>) {
        if let Err(e) = self.check_allowed(&msg.by, Change::Manage) {
            let _ = msg.reply.send(Err(e));
            return;
        }
        let name = msg.name.filter(|name| *name != self.record.name);
        let receipts = msg.receipts.filter(|r| *r != self.settings.receipts);
        let retention = msg.retention.filter(|r| Some(*r) != self.retention);
        if let Some(retention) = retention {
            // Not pushed to members: only what `first_seq` shows changes, once pruned.
            let written = self
                .deps
                .store
                .writable()
                .and_then(|()| self.deps.store.put_group_retention(&self.id, &retention));
            if let Err(e) = written {
                let _ = msg.reply.send(Err(e.into()));
                return;
            }
            self.queue.wrote();
            self.retention = Some(retention);
            log::info!("group {}: retention {:?}", self.id, retention.secs);
        }
        if name.is_none() && receipts.is_none() {
            // Nothing changes, nothing is pushed; answered behind earlier writes all the same.
            let view = self.describe();
            let reply = msg.reply;
            self.after_flush(AfterFlush::GroupUpdated { view, reply }, ctx);
            return;
        }
        let written = (|| -> Result<(), GroupError> {
            self.deps.store.writable()?;
            if let Some(name) = &name {
                let record = GroupRecord {
                    name: name.clone(),
                    ..self.record.clone()
                };
                self.deps.store.put_group(&self.id, &record)?;
                self.queue.wrote();
                self.record = record;
            }
            if let Some(receipts) = receipts {
                let settings = GroupSettingsRecord { receipts };
                self.deps.store.put_group_settings(&self.id, &settings)?;
                self.queue.wrote();
                self.settings = settings;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = msg.reply.send(Err(e));
            return;
        }
        log::info!(
            "group {}: updated (name {:?}, receipts {:?})",
            self.id,
            self.record.name,
            self.settings.receipts
        );
        let text: FrameText = FrameText::from(
            ServerFrame::GroupUpdated {
                id: None,
                group: self.id.to_string(),
                name: self.record.name.clone(),
                receipts: self.settings.receipts.into(),
                role: None,
            }
            .to_text(),
        );
        let frames = self
            .fanout
            .online_users()
            .map(|user| (user.clone(), text.clone()))
            .collect();
        let kind = "group_updated";
        self.after_flush(AfterFlush::Notify { kind, frames }, ctx);
        let view = self.describe();
        self.after_flush(
            AfterFlush::GroupUpdated {
                view,
                reply: msg.reply,
            },
            ctx,
        );
    }

    /// A member's sharing setting changed: move it in the receipt index.
    pub(super) fn set_share_reads(&mut self, user: &UserId, share_reads: bool) {
        let Some(member) = self.members.get(user).copied() else {
            return;
        };
        let was = self.shares_reads(user);
        if was == share_reads {
            return;
        }
        self.index.set_shares_reads(&member, was, share_reads);
        if share_reads {
            self.private_readers.remove(user);
        } else {
            self.private_readers.insert(user.clone());
        }
        // Every message it had read counts differently now: push the senders' new counts.
        if member.read > member.joined_seq {
            self.note_moved(user, Cursor::Read, member.joined_seq, member.read);
        }
    }

    pub(super) fn mark_unread(
        &mut self,
        msg: MarkUnread,
        ctx: &mut Context<Self>,
    ) -> Result<(), GroupError> {
        let read = self.check_member(&msg.user)?.read;
        if self.marked_unread.contains(&msg.user) {
            return Ok(());
        }
        self.write_flags(&msg.user, true)?;
        self.marked_unread.insert(msg.user.clone());
        self.request_flush(ctx);
        self.read_sync(&msg.user, read, Some(true), msg.session_id);
        Ok(())
    }

    /// Clears the unread flag of `user` (their `read`); whether it was set.
    pub(super) fn clear_marked_unread(&mut self, user: &UserId) -> bool {
        if !self.marked_unread.contains(user) {
            return false;
        }
        match self.write_flags(user, false) {
            Ok(()) => {
                self.marked_unread.remove(user);
                true
            }
            Err(e) => {
                log::debug!(
                    "group {}: clearing the unread flag of {user}: {e:?}",
                    self.id
                );
                false
            }
        }
    }

    fn write_flags(&mut self, user: &UserId, marked_unread: bool) -> Result<(), GroupError> {
        let flags = MemberFlagsRecord { marked_unread };
        self.deps.store.put_member_flags(&self.id, user, &flags)?;
        self.queue.wrote();
        Ok(())
    }

    /// Tells the user's other sessions about their read mark (and unread flag).
    pub(super) fn read_sync(
        &mut self,
        user: &UserId,
        seq: u64,
        marked_unread: Option<bool>,
        except: Option<u64>,
    ) {
        // The hot path (one session per user): nobody else to tell, nothing to serialize.
        if !self.fanout.has_other_session(user, except) {
            return;
        }
        let text: FrameText = FrameText::from(
            ServerFrame::ReadSync {
                group: self.id.to_string(),
                seq,
                marked_unread,
            }
            .to_text(),
        );
        self.fanout.send_to_user(user, "read_sync", &text, except);
    }
}
