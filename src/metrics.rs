//! Counters exposed at `GET /metrics` (Prometheus text format, admin token required), built on
//! `prometheus-client`. They are how the load generator and the receipt measurement count
//! frames, flushes and latencies without timing anything inside tests.
//!
//! Each metric is updated where the event happens (the session for frames, the group actor for
//! stores and send→durable latency, the commit thread for flushes), with atomics only: no lock
//! is taken on the hot path. The rejected option, a registry lookup per update, would hash a
//! name on every frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The label of the per-frame-type counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabel {
    pub r#type: &'static str,
}

/// The frame types counted without a lookup in the family's map (which hashes the label under a
/// lock), the busiest first: a storm counts one `msg` per delivery. Other types (and any type
/// missing here) are counted through the family, with the same result.
const BUSY_FRAME_TYPES: [&str; 12] = [
    "msg",
    "read",
    "sent",
    "send",
    "ack",
    "receipt",
    "read_sync",
    "typing",
    "presence",
    "ping",
    "pong",
    "error",
];

/// Frames counted by `type`: a [`Family`] for `/metrics`, with the busy types' counters kept
/// at hand (each is the family's own counter, taken from it on first use).
#[derive(Default)]
pub struct FrameCounters {
    family: Family<FrameLabel, Counter>,
    busy: [OnceLock<Counter>; BUSY_FRAME_TYPES.len()],
}

impl FrameCounters {
    /// Counts one frame of `type`.
    pub fn inc(&self, r#type: &'static str) {
        self.inc_by(r#type, 1);
    }

    /// Counts `n` frames of `type`.
    pub fn inc_by(&self, r#type: &'static str, n: u64) {
        match BUSY_FRAME_TYPES.iter().position(|t| *t == r#type) {
            Some(at) => self.busy[at]
                .get_or_init(|| self.family.get_or_create(&FrameLabel { r#type }).clone())
                .inc_by(n),
            None => self.family.get_or_create(&FrameLabel { r#type }).inc_by(n),
        };
    }

    /// The family, for rendering.
    fn family(&self) -> Family<FrameLabel, Counter> {
        self.family.clone()
    }
}

/// Every metric the server keeps.
pub struct Metrics {
    /// Sled flushes (each one may cover many messages).
    pub flushes: Counter,
    /// Messages stored by each flush: 1, 2, 4, ... 4,096 (0 for flushes that made only cursors
    /// or admin changes durable).
    pub messages_per_flush: Histogram,
    /// Messages stored (duplicates excluded).
    pub messages_stored: Counter,
    /// Bytes of message bodies stored (duplicates excluded).
    pub message_bytes_stored: Counter,
    /// Seconds from the group actor accepting a send to the flush that makes it durable
    /// (when `sent` is answered): 50 µs to ~3.3 s.
    pub send_durable_seconds: Histogram,
    /// WebSocket frames received, by `type` (`invalid` for unparsable ones).
    pub frames_in: FrameCounters,
    /// WebSocket frames sent, by `type`.
    pub frames_out: FrameCounters,
    /// `receipt` frames sent (also in `frames_out{type="receipt"}`; kept apart because it is
    /// the figure the receipt design is judged by).
    pub receipt_frames_sent: Counter,
    /// Open WebSocket sessions.
    pub sessions: Gauge,
    /// Outbound queue overflows: sessions evicted (closed with 4000) because their outbound
    /// queue was full.
    pub outbound_queue_overflows: Counter,
    /// Group actors running.
    pub groups_loaded: Gauge,
    /// Group actors stopped after `--group-idle-secs` without a command.
    pub group_passivations: Counter,
    /// Messages pruned past their retention.
    pub messages_pruned: Counter,
    /// `messages_stored` when the previous flush began (for `messages_per_flush`).
    stored_at_last_flush: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            flushes: Counter::default(),
            messages_per_flush: Histogram::new(
                std::iter::once(0.0).chain(exponential_buckets(1.0, 2.0, 13)),
            ),
            messages_stored: Counter::default(),
            message_bytes_stored: Counter::default(),
            send_durable_seconds: Histogram::new(exponential_buckets(50e-6, 2.0, 17)),
            frames_in: FrameCounters::default(),
            frames_out: FrameCounters::default(),
            receipt_frames_sent: Counter::default(),
            sessions: Gauge::default(),
            outbound_queue_overflows: Counter::default(),
            groups_loaded: Gauge::default(),
            group_passivations: Counter::default(),
            messages_pruned: Counter::default(),
            stored_at_last_flush: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("rollcall");
        registry.register("flushes", "sled flushes", self.flushes.clone());
        registry.register(
            "messages_per_flush",
            "messages stored since the previous flush began, per flush",
            self.messages_per_flush.clone(),
        );
        registry.register(
            "messages_stored",
            "messages stored",
            self.messages_stored.clone(),
        );
        registry.register(
            "message_bytes_stored",
            "bytes of message bodies stored",
            self.message_bytes_stored.clone(),
        );
        registry.register(
            "send_durable_seconds",
            "group actor accepting a send -> the flush covering it (sent answered)",
            self.send_durable_seconds.clone(),
        );
        registry.register(
            "frames_in",
            "WebSocket frames received",
            self.frames_in.family(),
        );
        registry.register(
            "frames_out",
            "WebSocket frames sent",
            self.frames_out.family(),
        );
        registry.register(
            "receipt_frames_sent",
            "receipt frames sent",
            self.receipt_frames_sent.clone(),
        );
        registry.register("sessions", "open WebSocket sessions", self.sessions.clone());
        registry.register(
            "outbound_queue_overflows",
            "sessions evicted because their outbound queue was full",
            self.outbound_queue_overflows.clone(),
        );
        registry.register(
            "groups_loaded",
            "group actors running",
            self.groups_loaded.clone(),
        );
        registry.register(
            "group_passivations",
            "group actors stopped after --group-idle-secs without a command",
            self.group_passivations.clone(),
        );
        registry.register(
            "messages_pruned",
            "messages pruned past their retention",
            self.messages_pruned.clone(),
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            log::error!("rendering metrics failed: {e}");
        }
        out
    }

    /// Counts one frame received.
    pub fn frame_in(&self, r#type: &'static str) {
        self.frames_in.inc(r#type);
    }

    /// Counts one frame sent.
    pub fn frame_out(&self, r#type: &'static str) {
        self.frames_out(r#type, 1);
    }

    /// Counts `n` frames of `type` sent.
    pub fn frames_out(&self, r#type: &'static str, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.frames_out.inc_by(r#type, n);
        if r#type == "receipt" {
            self.receipt_frames_sent.inc_by(n);
        }
    }

    /// Counts one stored message of `body_bytes`.
    pub fn message_stored(&self, body_bytes: usize) {
        self.messages_stored.inc();
        self.message_bytes_stored
            .inc_by(u64::try_from(body_bytes).unwrap_or(u64::MAX));
    }

    /// Counts a flush that is about to begin: it covers the messages stored since the previous
    /// one began (an approximation: a message stored while a flush runs may be covered by it,
    /// and is then counted for the next one).
    pub fn flush_begins(&self) {
        self.flushes.inc();
        let stored = self.messages_stored.get();
        let before = self.stored_at_last_flush.swap(stored, Ordering::Relaxed);
        // Integer → float for a histogram observation; exact below 2^53 messages.
        self.messages_per_flush
            .observe(stored.saturating_sub(before) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_metric() {
        let m = Metrics::default();
        m.message_stored(10);
        m.message_stored(5);
        m.flush_begins();
        m.flush_begins();
        m.frame_out("receipt");
        m.send_durable_seconds.observe(0.001);
        let text = m.render();
        for name in [
            "rollcall_flushes_total 2",
            "rollcall_messages_stored_total 2",
            "rollcall_message_bytes_stored_total 15",
            "rollcall_receipt_frames_sent_total 1",
            "rollcall_messages_per_flush_sum 2.0",
            "rollcall_messages_per_flush_count 2",
            "rollcall_send_durable_seconds_count 1",
            "rollcall_outbound_queue_overflows_total 0",
            "rollcall_sessions 0",
            "rollcall_groups_loaded 0",
            "rollcall_group_passivations_total 0",
            "rollcall_messages_pruned_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
