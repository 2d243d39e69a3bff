//! Counters exposed at `GET /metrics` (Prometheus text format, admin token required), built on
//! `prometheus-client`. They are how the load generator and the receipt measurement count
//! frames and flushes without timing anything inside tests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of the per-frame-type counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FrameLabel {
    pub r#type: &'static str,
}

/// Every metric the server keeps.
#[derive(Default)]
pub struct Metrics {
    /// Sled flushes (each one may cover many messages).
    pub flushes: Counter,
    /// Messages stored (duplicates excluded).
    pub messages_stored: Counter,
    /// WebSocket frames received, by `type` (`invalid` for unparsable ones).
    pub frames_in: Family<FrameLabel, Counter>,
    /// WebSocket frames sent, by `type`.
    pub frames_out: Family<FrameLabel, Counter>,
    /// Open WebSocket sessions.
    pub sessions: Gauge,
    /// Sessions closed because their outbound queue was full.
    pub evictions: Counter,
    /// Group actors running.
    pub groups_loaded: Gauge,
}

impl Metrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("rollcall");
        registry.register("flushes", "sled flushes", self.flushes.clone());
        registry.register(
            "messages_stored",
            "messages stored",
            self.messages_stored.clone(),
        );
        registry.register(
            "frames_in",
            "WebSocket frames received",
            self.frames_in.clone(),
        );
        registry.register(
            "frames_out",
            "WebSocket frames sent",
            self.frames_out.clone(),
        );
        registry.register("sessions", "open WebSocket sessions", self.sessions.clone());
        registry.register(
            "evictions",
            "sessions closed for a full outbound queue",
            self.evictions.clone(),
        );
        registry.register(
            "groups_loaded",
            "group actors running",
            self.groups_loaded.clone(),
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            log::error!("rendering metrics failed: {e}");
        }
        out
    }

    /// Counts one frame received.
    pub fn frame_in(&self, r#type: &'static str) {
        self.frames_in.get_or_create(&FrameLabel { r#type }).inc();
    }

    /// Counts one frame sent.
    pub fn frame_out(&self, r#type: &'static str) {
        self.frames_out.get_or_create(&FrameLabel { r#type }).inc();
    }
}
