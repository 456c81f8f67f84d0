//! Prometheus metrics of the edge, served as text on the admin listener.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub cache: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

/// Every metric the edge exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub served_bytes: Family<ProtocolLabel, Counter>,
    pub origin_bytes: Counter,
    pub origin_latency: Histogram,
    pub origin_errors: Counter,
    pub coalesced_waits: Counter,
    pub origin_fetches: Counter,
    pub fills_failed: Counter,
}

impl Metrics {
    pub fn new(store: Arc<Store>) -> Self {
        let mut registry = Registry::with_prefix("quicdn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by protocol, cache outcome and status class",
            requests.clone(),
        );
        let served_bytes = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "served_bytes",
            "Response body bytes sent to clients",
            served_bytes.clone(),
        );
        let origin_bytes = Counter::default();
        registry.register(
            "origin_fetched_bytes",
            "Response body bytes received from origins",
            origin_bytes.clone(),
        );
        // 1 ms .. ~33 s: origin time to first byte spans LAN caches to slow app servers.
        let origin_latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "origin_first_byte_seconds",
            "Time from origin request sent to response head received",
            origin_latency.clone(),
        );
        let origin_errors = Counter::default();
        registry.register(
            "origin_errors",
            "Origin requests that failed before a response head",
            origin_errors.clone(),
        );
        let coalesced_waits = Counter::default();
        registry.register(
            "coalesced_waits",
            "Requests that waited on another request's origin fetch instead of making their own",
            coalesced_waits.clone(),
        );
        let origin_fetches = Counter::default();
        registry.register(
            "cache_origin_fetches",
            "Origin fetches made by the cache (misses, revalidations, passes)",
            origin_fetches.clone(),
        );
        let fills_failed = Counter::default();
        registry.register(
            "cache_fills_failed",
            "Cache fills abandoned (origin body failed, length mismatch, store error)",
            fills_failed.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store)));
        Self {
            registry,
            requests,
            served_bytes,
            origin_bytes,
            origin_latency,
            origin_errors,
            coalesced_waits,
            origin_fetches,
            fills_failed,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The `status` label: the status class, which keeps the label set small.
pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Cache sizes read from the store at scrape time.
#[derive(Debug)]
struct StoreCollector(Arc<Store>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let gauges = [
            (
                "cache_entries",
                "Objects (memory: chunks) held per storage tier",
                stats.entries,
                stats.memory_chunks,
            ),
            (
                "cache_bytes",
                "Bytes held per storage tier",
                stats.disk_bytes,
                stats.memory_bytes,
            ),
        ];
        for (name, help, disk, memory) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (tier, value) in [("disk", disk), ("memory", memory)] {
                let gauge = ConstGauge::new(value as i64);
                gauge.encode(family.encode_family(&TierLabel { tier })?)?;
            }
        }
        let evictions = ConstCounter::new(stats.evictions);
        let metric = encoder.encode_descriptor(
            "cache_evictions",
            "Entries evicted to stay within the disk budget",
            None,
            evictions.metric_type(),
        )?;
        evictions.encode(metric)
    }
}
