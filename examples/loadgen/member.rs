//! One member of a single-group run (storm, throughput, receipts, and the storms of fanout and
//! ceiling): a WebSocket client that sends its share of the messages within a window (or paced,
//! or open-loop at a rate), reads every `msg`, sends its cumulative `ack`/`read` cursor and
//! timestamps every frame where it is read. The same code drives the bare relay.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::crowd::{enter, Channels};
use crate::wire::{feed, flush, frame_text, note_error, parse_frame, Read, Sink};

/// State shared by every member task of a run.
pub struct Shared {
    pub start: Instant,
    pub group: String,
    /// Per message (by global index): when it was sent, µs since `start` (0: not yet).
    pub sent_at: Vec<AtomicU64>,
    /// Per message: the latest arrival of its `msg` at any member, µs since `start`.
    pub last_arrival: Vec<AtomicU64>,
    /// Per message: how many members received its `msg`.
    pub arrivals: Vec<AtomicU32>,
    /// Readers the receipts sender waits for in its receipt counts.
    pub readers: u64,
}

impl Shared {
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// What one member does.
pub struct Role {
    pub index: usize,
    pub url: String,
    /// Global message indexes this member sends (`client_id` = `m<index>`).
    pub sends: Vec<u64>,
    pub window: usize,
    pub pace: Option<Duration>,
    /// Open loop: this member's share of the rate, in messages per second.
    pub rate: Option<f64>,
    /// `Some(("ack"|"read", every))`: the cursor frame sent after every N received messages.
    pub cursor: Option<(&'static str, u64)>,
    /// Also send the cursor frame at this period when it moved.
    pub cursor_period: Option<Duration>,
    /// `msg` frames this member waits for before it is done.
    pub expect: u64,
    /// Receipts sender: done only when a receipt shows every reader read the last message.
    pub wait_all_read: bool,
    pub body: Arc<str>,
    pub nodelay: bool,
}

/// What one member saw.
#[derive(Default)]
pub struct Outcome {
    pub index: usize,
    pub sent_latency_us: Vec<u64>,
    pub first_send_us: Option<u64>,
    pub last_sent_us: Option<u64>,
    pub received: u64,
    pub cursor_frames: u64,
    pub receipt_frames: u64,
    /// Receipts sender: per message, send → first receipt showing all readers read it (µs).
    pub all_read_latency_us: Vec<u64>,
    /// The highest `read` count in any `receipt` item this member got.
    pub receipt_max_read: u64,
    /// The highest seq in any `receipt` item, and its `read` count in the latest item for it.
    pub receipt_last: Option<(u64, u64)>,
    /// The highest seq of this member's own messages (from `sent`).
    pub my_last_seq: Option<u64>,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub duplicates: u64,
    /// Why the connection ended before the member was done (eviction, close, I/O error).
    pub lost: Option<String>,
    pub done: bool,
}

/// Runs one member until it is done and told to stop (or the deadline); returns what it saw.
pub async fn run_member(
    role: Role,
    shared: Arc<Shared>,
    deadline: tokio::time::Instant,
    mut ch: Channels,
) -> Outcome {
    let mut out = Outcome {
        index: role.index,
        ..Outcome::default()
    };
    // Ready only once `welcome` arrived, so no setup frame lands in the measurement.
    let Some(ws) = enter(
        &role.url,
        role.nodelay,
        deadline,
        &mut ch,
        "member",
        role.index,
    )
    .await
    else {
        return out;
    };
    let (mut sink, mut stream) = ws.split();

    let group = shared.group.as_str();
    let total_sends = role.sends.len();
    let mut next_send = 0usize; // position in role.sends
    let mut answered = 0usize;
    let mut in_flight: HashMap<u64, Instant> = HashMap::with_capacity(role.window * 2);
    let mut sent_us_by_seq: HashMap<u64, u64> = HashMap::new(); // own seq → send time (µs)
    let mut last_seq = 0u64;
    let mut acked_seq = 0u64;
    let go_at = Instant::now();
    let pace_period = match role.rate {
        Some(_) => Some(Duration::from_millis(1)),
        None => role.pace,
    };
    let mut pace = pace_period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut last_cursor_at = Instant::now();
    let mut cursor_tick = role.cursor_period.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut pace_credit = 0usize;
    let mut all_read_seq: Option<u64> = None; // highest seq seen with read == readers
    let mut my_last_seq: Option<u64> = None;

    loop {
        // 1. Send what the window (and pacing) allows.
        let mut fed = 0;
        while next_send < total_sends && in_flight.len() < role.window {
            if pace.is_some() {
                if pace_credit == 0 {
                    break;
                }
                pace_credit -= 1;
            }
            let global = role.sends[next_send];
            let frame = json!({
                "type": "send", "id": global, "group": group,
                "client_id": format!("m{global}"), "body": &*role.body,
            });
            in_flight.insert(global, Instant::now());
            let t = shared.now_us();
            shared.sent_at[global as usize].store(t, Ordering::Relaxed);
            out.first_send_us.get_or_insert(t);
            if !feed(&mut sink, &frame, &mut out.lost).await {
                break;
            }
            next_send += 1;
            fed += 1;
        }
        flush(&mut sink, fed, &mut out.lost).await;
        // 2. Send the final cumulative cursor once everything expected arrived.
        if let Some((kind, _)) = role.cursor {
            if out.received >= role.expect && last_seq > acked_seq && out.lost.is_none() {
                let _ = send_cursor(
                    &mut sink,
                    (kind, group, last_seq),
                    &mut acked_seq,
                    &mut out.cursor_frames,
                )
                .await;
            }
        }
        // 3. Done?
        if !out.done {
            let sends_done = answered == total_sends;
            let recv_done = out.received >= role.expect;
            let cursor_done = role.cursor.is_none() || acked_seq >= last_seq;
            let read_done = !role.wait_all_read
                || shared.readers == 0
                || matches!((all_read_seq, my_last_seq), (Some(a), Some(m)) if a >= m);
            if (sends_done && recv_done && cursor_done && read_done) || out.lost.is_some() {
                out.done = true;
                let _ = ch.done_tx.send(role.index);
            }
        }

        // 4. Wait for the next event.
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ch.stop.changed() => break,
            _ = async { pace.as_mut().expect("guarded").tick().await },
                if pace.is_some() && next_send < total_sends => {
                match role.rate {
                    // Open loop: whatever is due by now, whether earlier sends were answered or not.
                    Some(rate) => {
                        let due = (go_at.elapsed().as_secs_f64() * rate) as usize;
                        pace_credit = due.min(total_sends).saturating_sub(next_send);
                    }
                    None => pace_credit += 1,
                }
                continue;
            }
            _ = async { cursor_tick.as_mut().expect("guarded").tick().await },
                if cursor_tick.is_some() => {
                // "N messages or T ms": only when no cursor frame went out for a whole period.
                let quiet = role
                    .cursor_period
                    .is_some_and(|p| last_cursor_at.elapsed() >= p);
                if let (Some((kind, _)), true) = (role.cursor, quiet) {
                    if last_seq > acked_seq && out.lost.is_none() {
                        let sent = send_cursor(
                            &mut sink,
                            (kind, group, last_seq),
                            &mut acked_seq,
                            &mut out.cursor_frames,
                        );
                        match sent.await {
                            Err(e) => {
                                out.lost.get_or_insert(format!("write: {e}"));
                            }
                            Ok(()) => last_cursor_at = Instant::now(),
                        }
                    }
                }
                continue;
            }
            frame = stream.next() => frame,
        };
        // An ended connection: the next turn marks the member done, the one after stops it.
        let text = match frame_text(frame, &mut out.lost, out.done) {
            Read::Text(text) => text,
            Read::Skip => continue,
            Read::Stop => break,
        };
        let Some(f) = parse_frame(&text, &mut out.errors, &mut out.first_error) else {
            continue;
        };
        // The bare relay echoes `send` frames to everyone, the sender included: for the sender
        // the echo is its answer, for everyone it is the `msg` (seq: the message's index + 1).
        let (kind, seq) = match f.kind {
            "send" => {
                if let Some(global) = f.id {
                    if in_flight.remove(&global).is_some() {
                        answered += 1;
                        let at = shared.sent_at[global as usize].load(Ordering::Relaxed);
                        let now = shared.now_us();
                        out.sent_latency_us.push(now.saturating_sub(at));
                        out.last_sent_us = Some(now);
                    }
                }
                ("msg", f.id.map(|g| g + 1))
            }
            other => (other, f.seq),
        };
        match kind {
            "sent" => {
                let Some(global) = f.id else { continue };
                if let Some(at) = in_flight.remove(&global) {
                    answered += 1;
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    out.sent_latency_us.push(us);
                    out.last_sent_us = Some(shared.now_us());
                    if text.as_str().contains("\"duplicate\":true") {
                        out.duplicates += 1;
                    }
                    if let Some(seq) = f.seq {
                        let sent_us = shared.sent_at[global as usize].load(Ordering::Relaxed);
                        sent_us_by_seq.insert(seq, sent_us);
                        my_last_seq = Some(my_last_seq.map_or(seq, |m: u64| m.max(seq)));
                    }
                }
            }
            "msg" => {
                out.received += 1;
                let seq = seq.unwrap_or(0);
                last_seq = last_seq.max(seq);
                if let Some(global) = f
                    .client_id
                    .and_then(|c| c.strip_prefix('m'))
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&g| g < shared.arrivals.len())
                {
                    shared.last_arrival[global].fetch_max(shared.now_us(), Ordering::Relaxed);
                    shared.arrivals[global].fetch_add(1, Ordering::Relaxed);
                }
                if let Some((kind, every)) = role.cursor {
                    if out.received.is_multiple_of(every) && last_seq > acked_seq {
                        let sent = send_cursor(
                            &mut sink,
                            (kind, group, last_seq),
                            &mut acked_seq,
                            &mut out.cursor_frames,
                        );
                        if let Err(e) = sent.await {
                            out.lost.get_or_insert(format!("write: {e}"));
                        }
                        last_cursor_at = Instant::now();
                    }
                }
            }
            "receipt" => {
                out.receipt_frames += 1;
                let now = shared.now_us();
                for item in f.items.unwrap_or_default() {
                    out.receipt_max_read = out.receipt_max_read.max(item.read);
                    if out.receipt_last.is_none_or(|(seq, _)| item.seq >= seq) {
                        out.receipt_last = Some((item.seq, item.read));
                    }
                    if shared.readers > 0 && item.read >= shared.readers {
                        if let Some(sent_us) = sent_us_by_seq.remove(&item.seq) {
                            out.all_read_latency_us.push(now.saturating_sub(sent_us));
                        }
                        all_read_seq =
                            Some(all_read_seq.map_or(item.seq, |a: u64| a.max(item.seq)));
                    }
                }
            }
            "error" => {
                note_error(&f, &mut out.errors, &mut out.first_error);
                if let Some(global) = f.id {
                    if in_flight.remove(&global).is_some() {
                        answered += 1; // a refused send is answered (and counted as an error)
                    }
                }
            }
            _ => {}
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    out.my_last_seq = my_last_seq;
    if !out.done {
        out.lost
            .get_or_insert("deadline reached before done".into());
    }
    out
}

/// An `ack` or `read` frame.
#[derive(serde::Serialize)]
struct CursorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    group: &'a str,
    seq: u64,
}

/// Sends the cumulative cursor frame `(kind, group, seq)` (`kind`: `ack` or `read`); once it
/// went out, `acked` is `seq` and `frames` counts it.
async fn send_cursor(
    sink: &mut Sink,
    (kind, group, seq): (&str, &str, u64),
    acked: &mut u64,
    frames: &mut u64,
) -> Result<(), tungstenite::Error> {
    // Written directly rather than through a `serde_json::Value`: with one `read` per message
    // this is the busiest thing a reader does.
    let frame = CursorFrame { kind, group, seq };
    let text = serde_json::to_string(&frame).map_err(|e| tungstenite::Error::Io(e.into()))?;
    sink.send(Message::text(text)).await?;
    *acked = seq;
    *frames += 1;
    Ok(())
}
