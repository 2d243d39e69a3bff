//! Editing and deleting messages, and typing.
//!
//! An edit rewrites the message's record under its seq and notes when (`e` + seq); a delete
//! notes when (`x` + seq) and rewrites the record without its body, so the body is gone from
//! storage, not hidden. Seqs stay gapless; nothing is assigned anew. Both answer once durable
//! and are pushed (`msg_edited`, `msg_deleted`) after that, to every online member, the
//! author's own sessions included. Repeating one answers the same and pushes nothing.
//!
//! A deleted seq leaves the counts: it is in `deleted` (unread counts subtract it) and no
//! longer in its sender's index (receipt pushes and `receipts mine` skip it). Its
//! reminders and schedule go with it.

use crate::presence::FrameText;

use actix::prelude::*;

use crate::ids::{Seq, UserId};
use crate::protocol::ServerFrame;
use crate::store::{now_ms, MessageRecord, Note, RoleRecord};

use super::commit_queue::AfterFlush;
use super::{By, DeleteMessage, EditMessage, GroupActor, GroupError, Typing};

impl GroupActor {
    /// Fails unless `seq` names a durable message that is not deleted.
    pub(super) fn check_live_seq(&self, seq: u64) -> Result<(), GroupError> {
        self.check_seq(seq)?;
        if self.deleted_seqs.contains(&seq) {
            return Err(GroupError::InvalidSeq(format!("message {seq} was deleted")));
        }
        if seq < self.first_seq {
            return Err(GroupError::InvalidSeq(format!(
                "message {seq} was pruned (first_seq is {})",
                self.first_seq
            )));
        }
        Ok(())
    }

    /// Deleted messages in `(after, upto]`.
    pub(super) fn deleted_between(&self, after: u64, upto: u64) -> u64 {
        if after >= upto {
            return 0;
        }
        let n = self.deleted_seqs.range(after + 1..=upto).count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    fn stored(&self, seq: u64) -> Result<MessageRecord, GroupError> {
        self.deps
            .store
            .message(&self.id, Seq(seq))?
            .ok_or_else(|| GroupError::Storage(format!("message {seq} missing")))
    }

    /// Pushes `frame` to every attached session once the writes so far are durable.
    fn push_when_durable(
        &mut self,
        kind: &'static str,
        frame: ServerFrame,
        ctx: &mut Context<Self>,
    ) {
        let text: FrameText = FrameText::from(frame.to_text());
        let frames = self
            .fanout
            .online_users()
            .map(|user| (user.clone(), text.clone()))
            .collect();
        self.after_flush(AfterFlush::Notify { kind, frames }, ctx);
    }

    /// Writes an edit; `Ok(false)` when the body is unchanged (nothing to push).
    fn edit(&mut self, msg: &EditMessage) -> Result<Option<u64>, GroupError> {
        self.check_member(&msg.user)?;
        self.check_live_seq(msg.seq)?;
        let mut record = self.stored(msg.seq)?;
        if record.from != msg.user.as_str() {
            return Err(GroupError::NotAllowed(format!(
                "only the sender of message {} may edit it",
                msg.seq
            )));
        }
        if record.body == msg.body {
            return Ok(None);
        }
        self.deps.store.writable()?;
        let edited_ts = now_ms();
        self.deps
            .store
            .put_note(&self.id, Note::Edited, Seq(msg.seq), edited_ts)?;
        record.body.clone_from(&msg.body);
        self.deps
            .store
            .put_message(&self.id, Seq(msg.seq), &record)?;
        self.queue.wrote();
        log::debug!("group {}: message {} edited", self.id, msg.seq);
        Ok(Some(edited_ts))
    }

    /// Writes a delete; `Ok(false)` when it was deleted already.
    fn delete_message(&mut self, msg: &DeleteMessage) -> Result<bool, GroupError> {
        if let By::User(user) = &msg.by {
            self.check_member(user)?;
        }
        self.check_seq(msg.seq)?;
        if self.deleted_seqs.contains(&msg.seq) {
            return Ok(false);
        }
        let mut record = self.stored(msg.seq)?;
        if let By::User(user) = &msg.by {
            if record.from != user.as_str() && self.role_of(user) == RoleRecord::Member {
                return Err(GroupError::NotAllowed(format!(
                    "only the sender of message {}, or the group's owners and admins, may \
                     delete it",
                    msg.seq
                )));
            }
        }
        self.deps.store.writable()?;
        // The note first: a crash between the two writes leaves it deleted, never half.
        self.deps
            .store
            .put_note(&self.id, Note::Deleted, Seq(msg.seq), now_ms())?;
        record.body.clear();
        self.deps
            .store
            .put_message(&self.id, Seq(msg.seq), &record)?;
        self.queue.wrote();
        self.deleted_seqs.insert(msg.seq);
        if let Ok(sender) = UserId::parse(&record.from) {
            // Its index entry goes: a sender whose entries are loaded later would miss it, so
            // the map keeps it now (a resend of a deleted message is still a duplicate).
            let last_seq = self.queue.last_seq();
            self.resend.insert(
                (sender.clone(), record.client_id.clone()),
                msg.seq,
                record.ts,
                last_seq,
            );
            // Last: a crash before it leaves an index entry of a deleted message, which the
            // group's start removes (it checks the newest deletions).
            if let Err(e) = self
                .deps
                .store
                .index_sent(&self.id, &sender, Seq(msg.seq), None)
            {
                log::error!("group {}: unindexing message {}: {e}", self.id, msg.seq);
            }
        }
        self.drop_reminders_of(msg.seq);
        log::debug!("group {}: message {} deleted", self.id, msg.seq);
        Ok(true)
    }
}

impl Handler<EditMessage> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: EditMessage, ctx: &mut Context<Self>) {
        self.used();
        match self.edit(&msg) {
            Ok(edited) => {
                if let Some(edited_ts) = edited {
                    let frame = ServerFrame::MsgEdited {
                        group: self.id.to_string(),
                        seq: msg.seq,
                        body: msg.body,
                        edited_ts,
                    };
                    self.push_when_durable("msg_edited", frame, ctx);
                }
                self.after_flush(AfterFlush::Done { reply: msg.reply }, ctx);
            }
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

impl Handler<DeleteMessage> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteMessage, ctx: &mut Context<Self>) {
        self.used();
        match self.delete_message(&msg) {
            Ok(deleted) => {
                if deleted {
                    let frame = ServerFrame::MsgDeleted {
                        group: self.id.to_string(),
                        seq: msg.seq,
                    };
                    self.push_when_durable("msg_deleted", frame, ctx);
                }
                self.after_flush(AfterFlush::Done { reply: msg.reply }, ctx);
            }
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }
}

impl Handler<Typing> for GroupActor {
    type Result = Result<(), GroupError>;

    fn handle(&mut self, msg: Typing, _ctx: &mut Context<Self>) -> Self::Result {
        self.used();
        self.check_member(&msg.user)?;
        if self.members.len() > self.deps.config.presence_max_members {
            return Ok(());
        }
        let text: FrameText = FrameText::from(
            ServerFrame::Typing {
                group: self.id.to_string(),
                user: msg.user.to_string(),
            }
            .to_text(),
        );
        let others: Vec<UserId> = self
            .fanout
            .online_users()
            .filter(|user| **user != msg.user)
            .cloned()
            .collect();
        for user in others {
            self.fanout.send_to_user(&user, "typing", &text, None);
        }
        Ok(())
    }
}
