//! Group commit: one thread that turns many "make my writes durable" requests into few flushes.
//!
//! Group actors write to the store (memory only), then ask the [`Committer`] for a flush. The
//! committer thread takes one request, drains every other request already queued, calls
//! [`Store::flush`] once, and then answers all of them. While a flush runs, new requests pile up
//! and share the next one, so the number of flushes per second stays bounded by the disk while
//! the number of messages per flush grows with load. A sled flush covers every tree, so one flush
//! serves every group at once.
//!
//! A group actor's request names the owner epoch it holds ([`Store::claim_group`]), so the
//! flush can tell it when another claim fenced it ([`FlushOutcome::Fenced`]).
//!
//! A dedicated std thread rather than a task on an actix arbiter: `flush` blocks on the disk and
//! must not stall the actors that keep accepting the next batch.

use std::sync::mpsc;
use std::sync::Arc;

use crate::ids::GroupId;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// How a flush ended for one requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// Every write made before the request is durable.
    Durable,
    /// The flush failed; the writes may or may not be durable.
    Failed,
    /// Another claim of the requester's group came after its own: its writes are not (or, on
    /// sled, not any more) the group's; the actor must stop.
    Fenced,
}

/// What a requester is told once the flush covering its writes has finished.
pub type FlushDone = Box<dyn FnOnce(FlushOutcome) + Send>;

/// One request: the group and owner epoch of the actor asking (`None`: not an actor).
struct Request {
    claim: Option<(GroupId, u64)>,
    done: FlushDone,
}

/// A handle for requesting flushes; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer thread. It ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Committer {
        let (requests, queue) = mpsc::channel::<Request>();
        let spawned = std::thread::Builder::new()
            .name("rollcall-commit".into())
            .spawn(move || run(store, metrics, queue));
        if let Err(e) = spawned {
            // Without the thread every request is answered at once with failure (see `request`).
            log::error!("cannot start the commit thread: {e}");
        }
        Committer { requests }
    }

    /// Waits for a flush covering every write made before this call; false if it failed.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.request(
            None,
            Box::new(move |outcome| {
                let _ = tx.send(outcome == FlushOutcome::Durable);
            }),
        );
        rx.await.unwrap_or(false)
    }

    /// Asks for a flush covering every write made before this call, for the actor holding
    /// `claim` (its group and owner epoch) if any; `done(outcome)` runs on the committer
    /// thread once it finished.
    pub fn request(&self, claim: Option<(GroupId, u64)>, done: FlushDone) {
        if let Err(mpsc::SendError(request)) = self.requests.send(Request { claim, done }) {
            log::error!("commit thread is gone; reporting the flush as failed");
            (request.done)(FlushOutcome::Failed);
        }
    }
}

fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, queue: mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        metrics.flush_begins();
        let claims: Vec<(GroupId, u64)> = batch.iter().filter_map(|r| r.claim.clone()).collect();
        let fenced = match store.flush_claimed(&claims) {
            Ok(fenced) => Ok(fenced),
            Err(StoreError::Fenced(reason)) => {
                log::error!("flush refused: fenced ({reason})");
                Err(FlushOutcome::Fenced)
            }
            Err(e) => {
                log::error!("flush failed: {e}");
                Err(FlushOutcome::Failed)
            }
        };
        for request in batch {
            let outcome = match &fenced {
                Err(outcome) => *outcome,
                Ok(groups) => match &request.claim {
                    Some((group, _)) if groups.contains(group) => FlushOutcome::Fenced,
                    _ => FlushOutcome::Durable,
                },
            };
            (request.done)(outcome);
        }
    }
    log::debug!("commit thread stops");
}
