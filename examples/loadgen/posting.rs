//! Pipelined posting: one sender connection posts a list of (group, round) in order with at
//! most `window` sends unanswered across its groups (round-robin over groups, or many rounds to
//! one), counting `sent` replies, duplicates, refusals and the `msg` pushes it gets back. The
//! `groups` load phase, `cold`, `passivate`, `biggroup` and `welcome` build their data with it;
//! the storm has its own clients (readers and receipts), which this one does not need.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::crowd::{enter, Channels, Crowd};
use crate::report::{per, sorted_all, sum_errors};
use crate::wire::{feed, flush, frame_text, note_error, parse_frame, Read};
use crate::Error;

/// One sender: its connection and what it posts.
pub struct Sender {
    pub index: usize,
    pub url: String,
    /// (group index, round) in sending order; the `client_id` is `m<round>`.
    pub sends: Vec<(u32, u32)>,
    pub window: usize,
    pub body: Arc<str>,
    pub nodelay: bool,
}

/// What one sender saw.
#[derive(Default)]
pub struct SenderOutcome {
    pub index: usize,
    pub answered: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub latency_us: Vec<u64>,
    pub first_send: Option<Instant>,
    pub last_sent: Option<Instant>,
    pub msgs: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub lost: Option<String>,
    pub done: bool,
}

/// Runs one sender until it is done and told to stop (or the deadline).
async fn run_sender(
    s: Sender,
    group_ids: Arc<Vec<String>>,
    deadline: tokio::time::Instant,
    mut ch: Channels,
) -> SenderOutcome {
    let mut out = SenderOutcome {
        index: s.index,
        ..SenderOutcome::default()
    };
    let Some(ws) = enter(&s.url, s.nodelay, deadline, &mut ch, "sender", s.index).await else {
        return out;
    };
    let (mut sink, mut stream) = ws.split();

    let total = s.sends.len() as u64;
    let mut next = 0usize;
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(s.window * 2);
    loop {
        // 1. Fill the window, across as many groups as it spans.
        let mut fed = 0;
        while next < s.sends.len() && in_flight.len() < s.window && out.lost.is_none() {
            let (g, round) = s.sends[next];
            let frame = json!({
                "type": "send", "id": next, "group": &group_ids[g as usize],
                "client_id": format!("m{round}"), "body": &*s.body,
            });
            let now = Instant::now();
            out.first_send.get_or_insert(now);
            in_flight.insert(next as u64, now);
            if !feed(&mut sink, &frame, &mut out.lost).await {
                break;
            }
            next += 1;
            fed += 1;
        }
        flush(&mut sink, fed, &mut out.lost).await;
        // 2. Done? (Keep reading pushes until told to stop.)
        if !out.done && (out.answered == total || out.lost.is_some()) {
            out.done = true;
            let _ = ch.done_tx.send(s.index);
        }
        // 3. The next frame.
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ch.stop.changed() => break,
            frame = stream.next() => frame,
        };
        let text = match frame_text(frame, &mut out.lost, out.done) {
            Read::Text(text) => text,
            Read::Skip => continue,
            Read::Stop => break,
        };
        let Some(f) = parse_frame(&text, &mut out.errors, &mut out.first_error) else {
            continue;
        };
        match f.kind {
            "sent" => {
                let Some(id) = f.id else { continue };
                if let Some(at) = in_flight.remove(&id) {
                    out.answered += 1;
                    out.latency_us
                        .push(u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX));
                    out.last_sent = Some(Instant::now());
                    if text.as_str().contains("\"duplicate\":true") {
                        out.duplicates += 1;
                    } else {
                        out.stored += 1;
                    }
                }
            }
            "msg" => out.msgs += 1,
            "error" => {
                note_error(&f, &mut out.errors, &mut out.first_error);
                if let Some(id) = f.id {
                    if in_flight.remove(&id).is_some() {
                        out.answered += 1; // refused: answered, counted as an error
                    }
                }
            }
            _ => {}
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    if !out.done {
        out.lost
            .get_or_insert("deadline reached before done".into());
    }
    out
}

/// Connects every sender, says "go" once all are welcomed, waits until all are done; returns
/// what each saw, the time from "go" until all were done, and whether the deadline cut it short.
pub async fn post(
    senders: Vec<Sender>,
    group_ids: Arc<Vec<String>>,
    deadline: tokio::time::Instant,
) -> Result<(Vec<SenderOutcome>, Duration, bool), Error> {
    let mut crowd = Crowd::new("sender");
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        tasks.push(tokio::spawn(run_sender(
            sender,
            Arc::clone(&group_ids),
            deadline,
            crowd.channels(),
        )));
    }
    crowd.ready(tasks.len(), deadline).await?;
    let (active, timed_out) = crowd.go(tasks.len(), deadline).await;
    crowd.stop();
    let outcomes = crowd.join(tasks).await?;
    Ok((outcomes, active, timed_out))
}

/// Every sender's outcome added up.
pub struct Totals {
    pub answered: u64,
    /// `sent` replies that stored a new message (not duplicates).
    pub stored: u64,
    pub duplicates: u64,
    /// send → `sent`, microseconds, sorted.
    pub latency_us: Vec<u64>,
    /// First send → last `sent`, seconds.
    pub span_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// "sender N: why" for each sender that lost its connection or did not finish.
    pub lost: Vec<String>,
}

impl Totals {
    pub fn of(outcomes: &[SenderOutcome]) -> Totals {
        let first = outcomes.iter().filter_map(|o| o.first_send).min();
        let last = outcomes.iter().filter_map(|o| o.last_sent).max();
        Totals {
            answered: outcomes.iter().map(|o| o.answered).sum(),
            stored: outcomes.iter().map(|o| o.stored).sum(),
            duplicates: outcomes.iter().map(|o| o.duplicates).sum(),
            latency_us: sorted_all(outcomes.iter().map(|o| &o.latency_us)),
            span_s: match (first, last) {
                (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
                _ => 0.0,
            },
            errors: sum_errors(outcomes.iter().map(|o| &o.errors)),
            first_error: outcomes.iter().find_map(|o| o.first_error.clone()),
            lost: outcomes
                .iter()
                .filter_map(|o| o.lost.as_ref().map(|l| format!("sender {}: {l}", o.index)))
                .collect(),
        }
    }

    /// `sent` replies per second, first send → last `sent`.
    pub fn per_s(&self) -> f64 {
        per(self.answered as f64, self.span_s)
    }

    /// Every send answered with `sent`, none refused, no connection lost.
    pub fn clean(&self, expected: u64) -> bool {
        self.answered == expected && self.errors.is_empty() && self.lost.is_empty()
    }
}
