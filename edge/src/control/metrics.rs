//! The control plane's metrics, registered with the edge's (`quicdn_control_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Command;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppliedLabels {
    kind: &'static str,
    path: &'static str,
}

/// How a command reached the POP that applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// The durable consumer, in stream order (live or catching up).
    Stream,
    /// The fast path: a plain NATS message, applied on first sight (purges only).
    Fast,
    /// No bus: this edge alone, or a command that could not be published.
    Local,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Fast => "fast",
            Self::Local => "local",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhenLabel {
    when: &'static str,
}

/// Handles to the control plane's metrics. The default is unregistered (counts nothing
/// anyone reads): a control plane built outside an edge.
#[derive(Clone, Debug)]
pub(crate) struct ControlMetrics {
    received: Counter,
    applied: Family<AppliedLabels, Counter>,
    lag: Histogram,
    purged_objects: Counter,
    replayed: Family<WhenLabel, Counter>,
    connected: Gauge,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self {
            received: Counter::default(),
            applied: Family::default(),
            lag: lag_histogram(),
            purged_objects: Counter::default(),
            replayed: Family::default(),
            connected: Gauge::default(),
        }
    }
}

/// 1 ms .. ~16 s: a purge applied on the POP that published it takes about a millisecond,
/// one across the world a few hundred, one replayed after an outage seconds or more.
fn lag_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl ControlMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "control_commands_received",
            "Control commands (purge, pre-warm) this POP received, from the bus or alone",
            m.received.clone(),
        );
        registry.register(
            "control_commands_applied",
            "Control commands this POP applied, by kind and by path (stream, fast, local)",
            m.applied.clone(),
        );
        registry.register(
            "control_apply_lag_seconds",
            "Time from a command's issue to its apply on this POP",
            m.lag.clone(),
        );
        registry.register(
            "control_purged_objects",
            "Objects the control plane's purges removed or marked stale on this POP",
            m.purged_objects.clone(),
        );
        registry.register(
            "control_commands_replayed",
            "Commands applied while catching up with the stream, at startup or after a reconnect",
            m.replayed.clone(),
        );
        registry.register(
            "control_bus_connected",
            "1 while this POP is connected to the control bus (NATS)",
            m.connected.clone(),
        );
        m
    }

    pub(crate) fn received(&self) {
        self.received.inc();
    }

    /// One command applied at `applied_ms`, reached by `path`, having purged `objects`. The
    /// lag histogram takes every path: it is the time to apply, however it came.
    pub(crate) fn applied(&self, command: &Command, path: Path, applied_ms: u64, objects: u64) {
        let kind = match command {
            Command::Purge(_) => "purge",
            Command::Prewarm(_) => "prewarm",
        };
        let labels = AppliedLabels {
            kind,
            path: path.as_str(),
        };
        self.applied.get_or_create(&labels).inc();
        let lag_ms = applied_ms.saturating_sub(command.issued_ms());
        self.lag.observe(lag_ms as f64 / 1000.0);
        self.purged_objects.inc_by(objects);
    }

    /// `n` commands replayed in one catch-up, `startup` or after a `reconnect`.
    pub(crate) fn replayed(&self, when: &'static str, n: u64) {
        self.replayed.get_or_create(&WhenLabel { when }).inc_by(n);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }
}
