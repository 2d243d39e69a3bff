//! Retention: pruning the oldest messages of a group once they are older than its retention (its
//! own `retention_secs`, else the server's `--retention-secs`), in small batches.
//!
//! A batch prunes at most `limit` messages from `first_seq` up, oldest first, stopping at the
//! first one that is young enough, and never the newest durable message: seqs stay gapless from
//! the new `first_seq` to `last_seq`. Everything about a pruned message goes with it (sender
//! index entry, notes, reminders, schedule), so unread counts and receipts, which only ever look
//! at seqs from `first_seq` up, never count it. A running group prunes inside its actor (one
//! batch per command, so the actor is held a few ms at a time); a group whose actor is not
//! running is pruned by the registry under its slot lock with the same function.

use actix::prelude::*;

use crate::ids::{GroupId, Seq};
use crate::store::{Direction, Store, StoreError};

use super::{GroupActor, GroupError};

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Messages pruned.
    pub pruned: u64,
    /// The oldest seq kept now.
    pub first_seq: u64,
    /// The batch was full: older messages may be left.
    pub more: bool,
}

impl Pruned {
    /// Nothing pruned, nothing left.
    pub const NOTHING: Pruned = Pruned {
        pruned: 0,
        first_seq: 0,
        more: false,
    };
}

/// Prunes up to `limit` messages older than `cutoff_ms` from `first_seq` up, keeping `last_seq`
/// (the newest durable message) and everything above it.
pub fn prune_batch(
    store: &dyn Store,
    id: &GroupId,
    cutoff_ms: u64,
    first_seq: u64,
    last_seq: u64,
    limit: usize,
) -> Result<Pruned, StoreError> {
    let mut seqs = Vec::new();
    let mut young = false;
    store.scan_messages(
        id,
        Seq(first_seq),
        Seq(last_seq.saturating_sub(1)),
        Direction::Ascending,
        &mut |seq, message| {
            if message.ts >= cutoff_ms {
                young = true;
                return false;
            }
            seqs.push(seq.0);
            seqs.len() < limit
        },
    )?;
    for &seq in &seqs {
        store.prune_message(id, Seq(seq))?;
    }
    let first_seq = seqs.last().map_or(first_seq, |&last| last + 1);
    Ok(Pruned {
        pruned: u64::try_from(seqs.len()).unwrap_or(u64::MAX),
        first_seq,
        more: !young && seqs.len() == limit,
    })
}

/// Prunes one batch of a running group (see [`prune_batch`]).
#[derive(Message)]
#[rtype(result = "Result<Pruned, GroupError>")]
pub struct Prune {
    pub cutoff_ms: u64,
    pub limit: usize,
}

impl Handler<Prune> for GroupActor {
    type Result = Result<Pruned, GroupError>;

    fn handle(&mut self, msg: Prune, ctx: &mut Context<Self>) -> Self::Result {
        if self.deleted {
            return Err(GroupError::Deleted);
        }
        // The pruner is not a user: pruning does not keep an idle group loaded.
        let result = prune_batch(
            &*self.deps.store,
            &self.id,
            msg.cutoff_ms,
            self.first_seq,
            self.queue.durable_seq(),
            msg.limit,
        );
        let pruned = match result {
            Ok(pruned) => pruned,
            Err(e) => {
                // Part of the batch may be gone: read back where the messages start now.
                if let Ok(first) = self.deps.store.first_seq(&self.id) {
                    self.forget_below(first.0);
                }
                return Err(e.into());
            }
        };
        if pruned.pruned > 0 {
            self.forget_below(pruned.first_seq);
            self.deps.metrics.messages_pruned.inc_by(pruned.pruned);
            self.queue.wrote();
            self.request_flush(ctx);
            log::debug!(
                "group {}: pruned {} messages; first_seq {}",
                self.id,
                pruned.pruned,
                pruned.first_seq
            );
        }
        Ok(pruned)
    }
}

impl GroupActor {
    /// Messages below `first_seq` were pruned: forget what memory holds about them.
    fn forget_below(&mut self, first_seq: u64) {
        self.first_seq = self.first_seq.max(first_seq);
        self.deleted_seqs = self.deleted_seqs.split_off(&self.first_seq);
        self.reminders.forget_below(self.first_seq);
    }
}
