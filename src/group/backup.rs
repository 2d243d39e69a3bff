//! A group's part of an online backup (`POST /api/backup`, the flow is in `src/backup.rs`): the
//! actor copies its own tree into the snapshot while it holds it. The bulk, its messages and
//! their index entries, was copied before while the group kept serving (a precopy); under the
//! pause only the rest is copied, with the messages written, edited, deleted or pruned since,
//! so the pause depends on the members and the recent traffic, not on the history.
//!
//! The actor is the only writer of its group, so a copy made while it takes no commands is one
//! consistent state of the group: every message it acknowledged is in, with the cursors of that
//! same moment. It first writes the cursor moves it keeps in memory until the receipt tick, so
//! the copy misses none of them. Then it waits (`ctx.wait`) for the copy, which runs on the
//! blocking pool: the group's commands (sends included) queue up in its mailbox meanwhile and
//! run right after, while the other groups on the same arbiter keep running. The rejected
//! option, copying inside the handler, would have paused every group of the arbiter for the
//! copy of this one. The pause is measured and answered ([`GroupExported::pause`]). A backup is
//! not a use of the group: it does not restart the idle clock of passivation (an idle group
//! started for the backup stops again after `--group-idle-secs`).

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::{ExportGroup, GroupActor, GroupError, GroupExported};

impl Handler<ExportGroup> for GroupActor {
    type Result = ();

    fn handle(&mut self, msg: ExportGroup, ctx: &mut Context<Self>) {
        if self.deleted {
            let _ = msg.reply.send(Ok(None));
            return;
        }
        let started = Instant::now();
        self.persist_cursors();
        if !self.unwritten_cursors.is_empty() {
            // Refused writes (disk nearly full): a copy now would miss acknowledged moves.
            let _ = msg.reply.send(Err(GroupError::Storage(
                "cursor moves could not be written before the copy".into(),
            )));
            return;
        }
        let id = self.id.clone();
        let snapshot = Arc::clone(&msg.snapshot);
        let precopied = msg.precopied;
        let copy = tokio::task::spawn_blocking(move || snapshot.copy_group(&id, &precopied));
        let reply = msg.reply;
        ctx.wait(copy.into_actor(self).map(move |copied, actor, _ctx| {
            let pause = started.elapsed();
            let answer = match copied {
                Ok(Ok(copied)) => Ok(copied.map(|c| GroupExported {
                    messages: c.messages,
                    bytes: c.bytes,
                    pause,
                })),
                Ok(Err(e)) => {
                    log::error!("group {}: copying it into a backup: {e}", actor.id);
                    Err(e.into())
                }
                Err(e) => Err(GroupError::Unavailable(format!("the copy stopped: {e}"))),
            };
            log::debug!("group {}: copied into a backup, paused {pause:?}", actor.id);
            let _ = reply.send(answer);
        }));
    }
}
