//! Group commit: one thread that turns many "make my writes durable" requests into few flushes.
//!
//! Group actors write to the store (memory only), then ask the [`Committer`] for a flush. The
//! committer thread takes one request, drains every other request already queued, calls
//! [`Store::flush`] once, and then answers all of them. While a flush runs, new requests pile up
//! and share the next one, so the number of flushes per second stays bounded by the disk while
//! the number of messages per flush grows with load. A sled flush covers every tree, so one flush
//! serves every group at once.
//!
//! A dedicated std thread rather than a task on an actix arbiter: `flush` blocks on the disk and
//! must not stall the actors that keep accepting the next batch.

use std::sync::mpsc;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::Store;

/// What a requester is told once the flush covering its writes has finished.
pub type FlushDone = Box<dyn FnOnce(bool) + Send>;

/// A handle for requesting flushes; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<FlushDone>,
}

impl Committer {
    /// Starts the committer thread. It ends when every handle is dropped.
    pub fn start(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Committer {
        let (requests, queue) = mpsc::channel::<FlushDone>();
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
        self.request(Box::new(move |ok| {
            let _ = tx.send(ok);
        }));
        rx.await.unwrap_or(false)
    }

    /// Asks for a flush covering every write made before this call; `done(ok)` runs on the
    /// committer thread once it finished.
    pub fn request(&self, done: FlushDone) {
        if let Err(mpsc::SendError(done)) = self.requests.send(done) {
            log::error!("commit thread is gone; reporting the flush as failed");
            done(false);
        }
    }
}

fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, queue: mpsc::Receiver<FlushDone>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        metrics.flush_begins();
        let ok = match store.flush() {
            Ok(()) => true,
            Err(e) => {
                log::error!("flush failed: {e}");
                false
            }
        };
        for done in batch {
            done(ok);
        }
    }
    log::debug!("commit thread stops");
}
