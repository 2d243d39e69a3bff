//! Reminders (DingTalk's DING): the sender of a message reminds the recipients who have not
//! read it, now (`remind`) or after a delay chosen at `send` (`remind_after_secs`).
//!
//! Who is reminded follows the receipts: every recipient not counted as having read `seq` is
//! in the answer's list (so a member who does not share reads is listed whether or not they
//! read it, and the list reveals nothing), but a `reminder` frame goes only to those who really
//! have not read it. A reminder is a record in the group's tree (`r` + seq + user), durable
//! before it is answered or pushed, shown in `welcome` until its user's read mark reaches the
//! seq, then deleted. A schedule is a record too (`s` + seq), written with its message, so
//! `sent` means the schedule is durable; the actor arms a timer for each when it starts. The
//! interval between two reminders of one message (`--remind-interval-secs`) is kept in memory:
//! a restart forgets it, which at worst allows one reminder early.

use crate::presence::FrameText;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::ids::{Seq, UserId};
use crate::protocol::{Reminder, RequestId, ServerFrame};
use crate::store::{now_ms, MessageRecord, ReceiptPolicyRecord, ReminderRecord, ScheduleRecord};

use super::commit_queue::AfterFlush;
use super::{GroupActor, GroupError, Remind, Reminded, ReminderView, Reply};

/// A group's pending reminders, schedules, and when each message was last reminded of.
#[derive(Default)]
pub(super) struct Reminders {
    /// user → seq → reminder: the durable ones, not read yet.
    pending: HashMap<UserId, BTreeMap<u64, ReminderRecord>>,
    /// seq → when its scheduled reminder fires (ms since the epoch).
    scheduled: BTreeMap<u64, u64>,
    /// seq → when a reminder of it was last sent.
    last_sent: HashMap<u64, Instant>,
}

impl Reminders {
    pub(super) fn add(&mut self, user: UserId, seq: u64, record: ReminderRecord) {
        self.pending.entry(user).or_default().insert(seq, record);
    }

    /// Messages below `first_seq` were pruned (their records with them): forget their
    /// reminders and schedules.
    pub(super) fn forget_below(&mut self, first_seq: u64) {
        for by_seq in self.pending.values_mut() {
            *by_seq = by_seq.split_off(&first_seq);
        }
        self.pending.retain(|_, by_seq| !by_seq.is_empty());
        self.scheduled = self.scheduled.split_off(&first_seq);
        self.last_sent.retain(|&seq, _| seq >= first_seq);
    }

    /// Whether a scheduled reminder is armed (its timer lives in the actor).
    pub(super) fn has_schedules(&self) -> bool {
        !self.scheduled.is_empty()
    }

    pub(super) fn add_schedule(&mut self, seq: u64, due_ms: u64) {
        self.scheduled.insert(seq, due_ms);
    }

    /// The pending reminders of `user`, by seq.
    pub(super) fn of(&self, user: &UserId) -> impl Iterator<Item = (u64, &ReminderRecord)> {
        self.pending
            .get(user)
            .into_iter()
            .flat_map(|by_seq| by_seq.iter().map(|(&seq, record)| (seq, record)))
    }

    /// Whether `user` has a pending reminder of `seq`.
    #[cfg(test)]
    fn has(&self, user: &UserId, seq: u64) -> bool {
        self.pending
            .get(user)
            .is_some_and(|by_seq| by_seq.contains_key(&seq))
    }

    /// Forgets the reminders of `user` up to `read` (now read); returns their seqs.
    pub(super) fn take_read(&mut self, user: &UserId, read: u64) -> Vec<u64> {
        let Some(by_seq) = self.pending.get_mut(user) else {
            return Vec::new();
        };
        let unread = by_seq.split_off(&(read.saturating_add(1)));
        let done: Vec<u64> = std::mem::replace(by_seq, unread).into_keys().collect();
        if by_seq.is_empty() {
            self.pending.remove(user);
        }
        done
    }

    /// How long until `seq` may be reminded of again, if it is too soon.
    fn too_soon(&self, seq: u64, now: Instant, interval: Duration) -> Option<Duration> {
        let last = self.last_sent.get(&seq)?;
        interval
            .checked_sub(now.duration_since(*last))
            .filter(|wait| !wait.is_zero())
    }
}

/// What a flush must cover before reminders are pushed and answered.
pub(super) struct RemindersSent {
    seq: u64,
    /// The users who have not read `seq`: they get the frame.
    to: Vec<UserId>,
    /// The one record written for each of them.
    record: ReminderRecord,
    frame: FrameText,
    outcome: Reminded,
    /// The `remind` waiting for its answer; `None` for a scheduled reminder, whose sender's
    /// sessions are told with a `reminded` frame instead.
    reply: Option<Reply<Reminded>>,
    by: UserId,
}

impl RemindersSent {
    pub(super) fn fail(self, error: GroupError) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(error));
        }
    }
}

impl GroupActor {
    /// A `remind` from a member.
    pub(super) fn remind(&mut self, msg: Remind, ctx: &mut Context<Self>) {
        let checked = self.check_remind(&msg.user, msg.seq);
        match checked {
            Ok(()) => self.send_reminders(msg.seq, msg.user, Some(msg.reply), ctx),
            Err(e) => {
                let _ = msg.reply.send(Err(e));
            }
        }
    }

    fn check_remind(&self, user: &UserId, seq: u64) -> Result<(), GroupError> {
        self.check_member(user)?;
        if self.settings.receipts == ReceiptPolicyRecord::Off {
            return Err(GroupError::ReceiptsOff);
        }
        self.check_live_seq(seq)?;
        if self.sender_of(seq)? != *user {
            return Err(GroupError::NotAllowed(format!(
                "only the sender of message {seq} may remind for it"
            )));
        }
        let interval = self.deps.config.remind_interval;
        if let Some(wait) = self.reminders.too_soon(seq, Instant::now(), interval) {
            return Err(GroupError::RateLimited {
                message: format!(
                    "message {seq} was reminded of less than {}s ago",
                    interval.as_secs()
                ),
                wait,
            });
        }
        Ok(())
    }

    /// Writes a reminder of `seq` for each recipient who has not read it, then (after the
    /// flush) pushes them and answers `reply` (or tells the sender's sessions).
    fn send_reminders(
        &mut self,
        seq: u64,
        by: UserId,
        reply: Option<Reply<Reminded>>,
        ctx: &mut Context<Self>,
    ) {
        match self.write_reminders(seq, by) {
            Ok(mut sent) => {
                // A remind that reached nobody (all have seen it) does not start the interval.
                if !sent.to.is_empty() {
                    self.reminders.last_sent.insert(seq, Instant::now());
                }
                sent.reply = reply;
                self.after_flush(AfterFlush::RemindersSent(Box::new(sent)), ctx);
            }
            Err(e) => {
                log::debug!("group {}: reminding of {seq} failed: {e:?}", self.id);
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// Writes the reminders of `seq` from `by`; what to do once they are durable (no reply yet).
    fn write_reminders(&mut self, seq: u64, by: UserId) -> Result<RemindersSent, GroupError> {
        self.deps.store.writable()?;
        let message = self
            .deps
            .store
            .message(&self.id, Seq(seq))?
            .ok_or_else(|| GroupError::Storage(format!("message {seq} missing")))?;
        let mut listed = Vec::new();
        let mut to = Vec::new();
        let record = ReminderRecord {
            by: by.to_string(),
            ts: now_ms(),
        };
        let mut recipients: Vec<(&UserId, u64)> = self
            .members
            .iter()
            .filter(|(user, m)| **user != by && m.joined_seq < seq)
            .map(|(user, m)| (user, m.read))
            .collect();
        recipients.sort_unstable();
        for (user, read) in recipients {
            if !(read >= seq && self.shares_reads(user)) {
                listed.push(user.clone());
            }
            if read < seq {
                to.push(user.clone());
            }
        }
        for user in &to {
            self.deps
                .store
                .put_reminder(&self.id, Seq(seq), user, &record)?;
            self.queue.wrote();
        }
        let view = self.reminder_view(seq, &record, message);
        let frame = FrameText::from(ServerFrame::Reminder(Reminder::from(view)).to_text());
        let outcome = Reminded {
            group: self.id.clone(),
            seq,
            count: u64::try_from(listed.len()).unwrap_or(u64::MAX),
            users: (self.settings.receipts == ReceiptPolicyRecord::Full).then_some(listed),
        };
        Ok(RemindersSent {
            seq,
            to,
            record,
            frame,
            outcome,
            reply: None,
            by,
        })
    }

    /// The reminders of a `RemindersSent` are durable: keep, push and answer them.
    pub(super) fn reminders_durable(&mut self, sent: RemindersSent) {
        for user in sent.to {
            if self.members.get(&user).is_some_and(|m| m.read < sent.seq) {
                self.reminders
                    .add(user.clone(), sent.seq, sent.record.clone());
                self.fanout
                    .send_to_user(&user, "reminder", &sent.frame, None);
            } else if let Err(e) = self
                .deps
                .store
                .remove_reminder(&self.id, Seq(sent.seq), &user)
            {
                // Read (or left) before the flush: nothing is pushed, and the record goes now
                // (or, if refused, when the group next loads).
                log::debug!("group {}: deleting a reminder read meanwhile: {e}", self.id);
            } else {
                self.queue.wrote();
            }
        }
        match sent.reply {
            Some(reply) => {
                let _ = reply.send(Ok(sent.outcome));
            }
            None => {
                let text: FrameText = FrameText::from(sent.outcome.into_frame(None).to_text());
                self.fanout.send_to_user(&sent.by, "reminded", &text, None);
            }
        }
    }

    fn reminder_view(
        &self,
        seq: u64,
        record: &ReminderRecord,
        message: MessageRecord,
    ) -> ReminderView {
        ReminderView {
            group: self.id.clone(),
            seq,
            by: record.by.clone(),
            ts: record.ts,
            from: message.from,
            sent_ts: message.ts,
            body: message.body,
        }
    }

    /// The pending reminders of `user`, as `welcome` shows them.
    pub(super) fn reminder_views(&self, user: &UserId) -> Vec<ReminderView> {
        let mut views = Vec::new();
        for (seq, record) in self.reminders.of(user) {
            match self.deps.store.message(&self.id, Seq(seq)) {
                Ok(Some(message)) => views.push(self.reminder_view(seq, record, message)),
                Ok(None) => {}
                Err(e) => log::error!("group {}: reading message {seq}: {e}", self.id),
            }
        }
        views
    }

    /// Message `seq` was deleted: its reminders and schedule go.
    pub(super) fn drop_reminders_of(&mut self, seq: u64) {
        let users: Vec<UserId> = self
            .reminders
            .pending
            .iter_mut()
            .filter_map(|(user, by_seq)| by_seq.remove(&seq).map(|_| user.clone()))
            .collect();
        self.reminders
            .pending
            .retain(|_, by_seq| !by_seq.is_empty());
        for user in users {
            if let Err(e) = self.deps.store.remove_reminder(&self.id, Seq(seq), &user) {
                log::debug!(
                    "group {}: deleting a reminder of deleted {seq}: {e}",
                    self.id
                );
            }
        }
        if self.reminders.scheduled.remove(&seq).is_some() {
            if let Err(e) = self.deps.store.remove_schedule(&self.id, Seq(seq)) {
                log::debug!(
                    "group {}: deleting the schedule of deleted {seq}: {e}",
                    self.id
                );
            }
        }
    }

    /// `user` read up to `read`: their reminders up to it are done.
    pub(super) fn drop_read_reminders(&mut self, user: &UserId, read: u64) {
        for seq in self.reminders.take_read(user, read) {
            if let Err(e) = self.deps.store.remove_reminder(&self.id, Seq(seq), user) {
                // Left behind, it is dropped when the group loads next (its user read it).
                log::debug!("group {}: deleting a read reminder: {e}", self.id);
            } else {
                self.queue.wrote();
            }
        }
    }

    /// Writes the schedule of message `seq` (before its flush, so `sent` covers it).
    pub(super) fn write_schedule(&mut self, seq: u64, after: Duration) -> Result<u64, GroupError> {
        let after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let due_ms = now_ms().saturating_add(after_ms);
        let schedule = ScheduleRecord { due_ms };
        self.deps
            .store
            .put_schedule(&self.id, Seq(seq), &schedule)?;
        self.queue.wrote();
        self.reminders.add_schedule(seq, due_ms);
        Ok(due_ms)
    }

    /// Arms the timer of the scheduled reminder of `seq`.
    pub(super) fn arm_schedule(&self, seq: u64, due_ms: u64, ctx: &mut Context<Self>) {
        let delay = Duration::from_millis(due_ms.saturating_sub(now_ms()));
        ctx.run_later(delay, move |actor, ctx| actor.fire_schedule(seq, ctx));
    }

    fn fire_schedule(&mut self, seq: u64, ctx: &mut Context<Self>) {
        if self.reminders.scheduled.remove(&seq).is_none() {
            return;
        }
        match self.deps.store.remove_schedule(&self.id, Seq(seq)) {
            Ok(()) => self.queue.wrote(),
            Err(e) => {
                // Kept: it fires again after the next start.
                log::warn!("group {}: removing the schedule of {seq}: {e}", self.id);
            }
        }
        if self.settings.receipts == ReceiptPolicyRecord::Off {
            log::debug!(
                "group {}: receipts off; scheduled reminder of {seq} dropped",
                self.id
            );
            self.request_flush(ctx);
            return;
        }
        match self.sender_of(seq) {
            Ok(sender) => self.send_reminders(seq, sender, None, ctx),
            Err(e) => log::error!("group {}: scheduled reminder of {seq}: {e:?}", self.id),
        }
        self.request_flush(ctx);
    }

    /// Arms every loaded schedule (on start).
    pub(super) fn arm_schedules(&self, ctx: &mut Context<Self>) {
        let scheduled: Vec<(u64, u64)> = self
            .reminders
            .scheduled
            .iter()
            .map(|(&s, &d)| (s, d))
            .collect();
        for (seq, due_ms) in scheduled {
            self.arm_schedule(seq, due_ms, ctx);
        }
    }
}

impl Reminded {
    /// The `reminded` frame, answering request `id` (none for a scheduled reminder).
    pub fn into_frame(self, id: Option<RequestId>) -> ServerFrame {
        let r = self;
        ServerFrame::Reminded {
            id,
            group: r.group.to_string(),
            seq: r.seq,
            count: r.count,
            users: r
                .users
                .map(|users| users.iter().map(UserId::to_string).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ReminderRecord {
        ReminderRecord {
            by: "alice".into(),
            ts: 1,
        }
    }

    #[test]
    fn reading_drops_the_reminders_up_to_the_read_mark() {
        let bob = UserId::parse("bob").unwrap();
        let mut reminders = Reminders::default();
        for seq in [3, 5, 9] {
            reminders.add(bob.clone(), seq, record());
        }
        assert_eq!(reminders.take_read(&bob, 5), [3, 5]);
        assert!(reminders.has(&bob, 9) && !reminders.has(&bob, 5));
        assert_eq!(reminders.take_read(&bob, 100), [9]);
        assert_eq!(reminders.of(&bob).count(), 0);
        assert!(reminders.take_read(&bob, 100).is_empty());
    }

    #[test]
    fn a_message_is_reminded_of_at_most_once_per_interval() {
        let mut reminders = Reminders::default();
        let start = Instant::now();
        let interval = Duration::from_secs(300);
        assert_eq!(reminders.too_soon(4, start, interval), None);
        reminders.last_sent.insert(4, start);
        let wait = reminders.too_soon(4, start + Duration::from_secs(100), interval);
        assert_eq!(wait, Some(Duration::from_secs(200)));
        assert_eq!(reminders.too_soon(4, start + interval, interval), None);
        assert_eq!(reminders.too_soon(5, start, interval), None);
    }
}
