//! Starting many client tasks together: each reports `ready` once connected and welcomed, waits
//! for "go", reports `done` when its share is finished and keeps reading until `stop`. The storm's
//! members and the `groups` senders are such crowds.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::wire::{connect_welcome, Ws};
use crate::Error;

/// One task's ends of the crowd's channels.
pub struct Channels {
    /// `Ok(index)` once connected and welcomed, or why it could not.
    pub ready_tx: mpsc::UnboundedSender<Result<usize, String>>,
    pub go: watch::Receiver<bool>,
    /// `index` once the task's share is done.
    pub done_tx: mpsc::UnboundedSender<usize>,
    pub stop: watch::Receiver<bool>,
}

/// A task's start: connects and reads up to the `welcome`, reports ready (or, as `"{who}
/// {index}: …"`, why not) and waits for "go". None: the task ends here.
pub async fn enter(
    url: &str,
    nodelay: bool,
    deadline: tokio::time::Instant,
    ch: &mut Channels,
    who: &str,
    index: usize,
) -> Option<Ws> {
    let ws = match connect_welcome(url, nodelay, deadline).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            let _ = ch.ready_tx.send(Err(format!("{who} {index}: {e}")));
            return None;
        }
    };
    let _ = ch.ready_tx.send(Ok(index));
    // Start together; a dropped sender (the run gave up) or the deadline ends the task.
    if !wait_go(&mut ch.go, deadline).await {
        return None;
    }
    Some(ws)
}

/// Waits for "go"; false when the run gave up (the sender dropped) or the deadline passed.
pub async fn wait_go(go: &mut watch::Receiver<bool>, deadline: tokio::time::Instant) -> bool {
    while !*go.borrow() {
        match tokio::time::timeout_at(deadline, go.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
    true
}

/// The run's ends of the channels of a crowd of tasks called `who` ("member", "sender").
pub struct Crowd {
    who: &'static str,
    ready_tx: Option<mpsc::UnboundedSender<Result<usize, String>>>,
    ready_rx: mpsc::UnboundedReceiver<Result<usize, String>>,
    done_tx: Option<mpsc::UnboundedSender<usize>>,
    done_rx: mpsc::UnboundedReceiver<usize>,
    go_tx: watch::Sender<bool>,
    go_rx: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

impl Crowd {
    pub fn new(who: &'static str) -> Crowd {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (go_tx, go_rx) = watch::channel(false);
        Crowd {
            who,
            ready_tx: Some(ready_tx),
            ready_rx,
            done_tx: Some(done_tx),
            done_rx,
            go_tx,
            go_rx,
            stop_tx,
            stop_rx,
        }
    }

    /// The channels for one more task (before `ready`).
    pub fn channels(&self) -> Channels {
        Channels {
            ready_tx: self.ready_tx.clone().expect("channels before ready"),
            go: self.go_rx.clone(),
            done_tx: self.done_tx.clone().expect("channels before ready"),
            stop: self.stop_rx.clone(),
        }
    }

    /// Waits until `n` tasks are connected and welcomed; on a failure or at the deadline tells
    /// every task to stop and returns the error.
    pub async fn ready(&mut self, n: usize, deadline: tokio::time::Instant) -> Result<(), Error> {
        // Only the tasks hold senders now: a closed channel means every task ended.
        self.ready_tx = None;
        self.done_tx = None;
        let mut ready = 0;
        while ready < n {
            match tokio::time::timeout_at(deadline, self.ready_rx.recv()).await {
                Ok(Some(Ok(_))) => ready += 1,
                Ok(Some(Err(e))) => {
                    self.stop();
                    return Err(e.into());
                }
                Ok(None) | Err(_) => {
                    self.stop();
                    return Err(format!("{}s did not connect before the deadline", self.who).into());
                }
            }
        }
        Ok(())
    }

    /// Says "go" and waits until `n` tasks are done (or all ended); returns the time from "go"
    /// until then and whether the deadline came first.
    pub async fn go(&mut self, n: usize, deadline: tokio::time::Instant) -> (Duration, bool) {
        let go_at = Instant::now();
        let _ = self.go_tx.send(true);
        let mut done = 0;
        let mut timed_out = false;
        while done < n {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some(_)) => done += 1,
                Ok(None) => break, // every task ended
                Err(_) => {
                    timed_out = true;
                    break;
                }
            }
        }
        (go_at.elapsed(), timed_out)
    }

    /// Tells every task to stop.
    pub fn stop(&self) {
        let _ = self.stop_tx.send(true);
    }

    /// Collects what every task returns (each gets 10 s to stop).
    pub async fn join<T>(&self, tasks: Vec<JoinHandle<T>>) -> Result<Vec<T>, Error> {
        let who = self.who;
        let mut outcomes = Vec::with_capacity(tasks.len());
        for task in tasks {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(outcome)) => outcomes.push(outcome),
                Ok(Err(e)) => return Err(format!("{who} task failed: {e}").into()),
                Err(_) => return Err(format!("a {who} task did not stop").into()),
            }
        }
        Ok(outcomes)
    }
}
