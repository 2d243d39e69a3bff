//! Passivation: a group actor that received no command for `--group-idle-secs` stops, so memory
//! follows activity, not the number of groups ever touched.
//!
//! It stops only when nothing is pending: every write durable, no flush in flight, no answer or
//! push queued, no cursor move unwritten or untold (a tick writes and flushes them first), no
//! scheduled reminder armed (its timer lives here), and the group not being deleted. What it
//! holds is then exactly what the store holds, and the next use starts it again from there
//! (`load.rs`), attaching the online sessions of its members from the online directory.
//!
//! The hand-over with the registry is one call, [`Retire`], made under the group's slot lock:
//! the registry forgets the actor only if it is still the one in the slot and nobody was handed
//! its address within [`HANDED_OUT_GRACE`]. Every address is used at once by whoever asked for
//! it (nothing keeps one), so no command can be on its way to an actor that retires, and a new
//! actor never starts while the old one could still write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::GroupActor;

/// How long after the registry last handed out an actor's address the actor may not retire
/// (a holder uses the address within microseconds; this is a wide margin), or the idle time
/// when that is shorter.
pub const HANDED_OUT_GRACE: Duration = Duration::from_secs(1);

/// The registry's side of passivation: forgets `me` and answers true, or answers false (it was
/// handed out just now, or is not the running actor) and the actor stays.
pub type Retire = Arc<dyn Fn(&Addr<GroupActor>) -> bool + Send + Sync>;

impl GroupActor {
    /// Lets this actor passivate through `retire` (without it, it runs until stopped).
    pub fn passivate_with(&mut self, retire: Retire) {
        self.retire = Some(retire);
    }

    /// A command arrived: the idle clock starts again.
    pub(super) fn used(&mut self) {
        self.last_used = Instant::now();
    }

    /// Arms the idle check (at a quarter of `--group-idle-secs`, between 100 ms and 30 s).
    pub(super) fn arm_idle_check(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.deps.config.group_idle else {
            return;
        };
        if self.retire.is_none() {
            return;
        }
        let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        ctx.run_interval(every, |actor, ctx| actor.maybe_passivate(ctx));
    }

    /// Nothing is pending: stopping now loses nothing.
    fn settled(&self) -> bool {
        !self.deleted
            && self.queue.is_settled()
            && self.unwritten_cursors.is_empty()
            && self.moved.is_empty()
            && self.deferred.is_empty()
            && !self.reminders.has_schedules()
    }

    fn maybe_passivate(&mut self, ctx: &mut Context<Self>) {
        let Some(idle) = self.deps.config.group_idle else {
            return;
        };
        if self.last_used.elapsed() < idle {
            return;
        }
        if !self.settled() {
            log::trace!(
                "group {}: idle but not settled (queue settled {}, unwritten {}, moved {}, \
                 deferred {}, schedules {}, deleted {})",
                self.id,
                self.queue.is_settled(),
                self.unwritten_cursors.len(),
                self.moved.len(),
                self.deferred.len(),
                self.reminders.has_schedules(),
                self.deleted
            );
            return;
        }
        let Some(retire) = self.retire.as_ref() else {
            return;
        };
        if !retire(&ctx.address()) {
            log::trace!("group {}: idle, but the registry keeps it", self.id);
            return;
        }
        self.deps.metrics.group_passivations.inc();
        log::debug!(
            "group {}: idle for {:?}; passivated",
            self.id,
            self.last_used.elapsed()
        );
        ctx.stop();
    }
}
