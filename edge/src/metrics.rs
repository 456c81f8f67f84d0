//! Prometheus metrics of the edge, served as text on the admin listener.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::store::Store;
use crate::control::ControlMetrics;
use crate::headers::Outcome;
use crate::service::Protocol;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub protocol: &'static str,
    pub cache: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProtocolLabel {
    pub protocol: &'static str,
}

/// Every metric the edge exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    served_bytes: Family<ProtocolLabel, Counter>,
    /// `requests` and `served_bytes` counters, each resolved on first use: a family lookup
    /// (lock, SipHash of the label strings) would otherwise run twice per response.
    request_counters: Box<[OnceLock<Counter>]>,
    byte_counters: [OnceLock<Counter>; Protocol::ALL.len()],
    pub origin_bytes: Counter,
    pub origin_latency: Histogram,
    pub origin_errors: Counter,
    pub coalesced_waits: Counter,
    pub origin_fetches: Counter,
    pub fills_failed: Counter,
    pub prewarm_fetched: Counter,
    pub prewarm_failed: Counter,
    pub(crate) control: ControlMetrics,
    /// Requests a child sent to its parents, those the parent answered from its cache, and
    /// those that fell back to the origin because every parent failed.
    pub parent_requests: Counter,
    pub parent_hits: Counter,
    pub parent_fallbacks: Counter,
    /// Requests sent to a site's own origin (not to parents or peers): with `client_requests`
    /// the origin offload ratio.
    pub origin_requests: Counter,
    client_requests: Counter,
    /// Members ejected from their group, by tier (origin, parent, peer).
    ejections: Family<TierLabel, Counter>,
    /// Requests a cluster node sent on to the peer that owns the object, and those it served
    /// itself because that peer failed.
    pub peer_requests: Counter,
    pub peer_fallbacks: Counter,
    token_checks: TokenChecks,
    limited: crate::rules::limit::LimitCounters,
}

/// `quicdn_token_checks_total{format,result}`: signed URL and token checks, by format
/// (`native`, `cloudfront`, `akamai`; `none` when the request had no token) and result
/// (`ok`, `trusted`, or why it was refused).
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenChecks(Family<TokenLabels, Counter>);

impl TokenChecks {
    pub(crate) fn counter(&self, format: &'static str, result: &'static str) -> Counter {
        self.0
            .get_or_create(&TokenLabels { format, result })
            .clone()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    format: &'static str,
    result: &'static str,
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
        let [parent_requests, parent_hits, parent_fallbacks] =
            [(), (), ()].map(|()| Counter::default());
        registry.register(
            "parent_requests",
            "Upstream requests sent to parent caches (other edges)",
            parent_requests.clone(),
        );
        registry.register(
            "parent_hits",
            "Parent answers the parent served from its cache (its Cache-Status says hit)",
            parent_hits.clone(),
        );
        registry.register(
            "parent_fallbacks",
            "Requests that went to the origin because every parent of the object failed",
            parent_fallbacks.clone(),
        );
        let [
            origin_requests,
            client_requests,
            peer_requests,
            peer_fallbacks,
        ] = [(), (), (), ()].map(|()| Counter::default());
        registry.register(
            "origin_requests",
            "Requests sent to sites' own origins (not to parents or cluster peers)",
            origin_requests.clone(),
        );
        registry.register(
            "peer_requests",
            "Requests sent on to the cluster peer that owns the object",
            peer_requests.clone(),
        );
        registry.register(
            "peer_fallbacks",
            "Requests this node served itself because the peer owning the object failed",
            peer_fallbacks.clone(),
        );
        let ejections = Family::<TierLabel, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Origins, parents or cluster peers ejected from their group after failing",
            ejections.clone(),
        );
        registry.register_collector(Box::new(OffloadCollector {
            clients: client_requests.clone(),
            origin: origin_requests.clone(),
        }));
        let prewarm_fetched = Counter::default();
        registry.register(
            "prewarm_fetched",
            "URLs a pre-warm fetched into the cache (or found there)",
            prewarm_fetched.clone(),
        );
        let prewarm_failed = Counter::default();
        registry.register(
            "prewarm_failed",
            "URLs a pre-warm could not put in the cache (error, timeout, not cacheable)",
            prewarm_failed.clone(),
        );
        let token_checks = TokenChecks::default();
        registry.register(
            "token_checks",
            "Signed URL and token checks, by format and result (ok, trusted, or the refusal)",
            token_checks.0.clone(),
        );
        let limited = Family::<LimitLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 by a rate limit: on all requests, or on misses only",
            limited.clone(),
        );
        // One statement each: a family's read guard lives to the end of its statement, and a
        // second get_or_create in the same one would wait for it forever.
        let limited_requests = limited
            .get_or_create(&LimitLabel { limit: "requests" })
            .clone();
        let limited_misses = limited
            .get_or_create(&LimitLabel { limit: "misses" })
            .clone();
        let limited_admin = limited
            .get_or_create(&LimitLabel { limit: "admin" })
            .clone();
        let limited = crate::rules::limit::LimitCounters {
            requests: limited_requests,
            misses: limited_misses,
            admin: limited_admin,
        };
        let control = ControlMetrics::register(&mut registry);
        registry.register_collector(Box::new(StoreCollector(store)));
        Self {
            registry,
            requests,
            served_bytes,
            request_counters: (0..Protocol::ALL.len() * Outcome::ALL.len() * STATUS_CLASSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            byte_counters: Default::default(),
            origin_bytes,
            origin_latency,
            origin_errors,
            coalesced_waits,
            origin_fetches,
            fills_failed,
            prewarm_fetched,
            parent_requests,
            parent_hits,
            parent_fallbacks,
            prewarm_failed,
            control,
            origin_requests,
            client_requests,
            ejections,
            peer_requests,
            peer_fallbacks,
            token_checks,
            limited,
        }
    }

    /// The counters the site rules count with.
    pub(crate) fn rules(&self) -> crate::rules::RuleMetrics {
        crate::rules::RuleMetrics {
            token_checks: Some(self.token_checks.clone()),
            limited: self.limited.clone(),
        }
    }

    /// The ejection counter of one tier: `"origin"`, `"parent"` or `"peer"`.
    pub fn ejections(&self, tier: &'static str) -> Counter {
        self.ejections.get_or_create(&TierLabel { tier }).clone()
    }

    /// Counts one answered request and the body bytes sent for it.
    pub fn count_response(
        &self,
        protocol: Protocol,
        outcome: Outcome,
        status: http::StatusCode,
        bytes: u64,
    ) {
        self.client_requests.inc();
        let class = status_class_index(status);
        let slot = (protocol as usize * Outcome::ALL.len() + outcome as usize)
            * STATUS_CLASSES.len()
            + class;
        self.request_counters[slot]
            .get_or_init(|| {
                let labels = RequestLabels {
                    protocol: protocol.as_str(),
                    cache: outcome.as_str(),
                    status: STATUS_CLASSES[class],
                };
                self.requests.get_or_create(&labels).clone()
            })
            .inc();
        self.byte_counters[protocol as usize]
            .get_or_init(|| {
                let labels = ProtocolLabel {
                    protocol: protocol.as_str(),
                };
                self.served_bytes.get_or_create(&labels).clone()
            })
            .inc_by(bytes);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The `status` label's index in `STATUS_CLASSES`: the class keeps the label set small.
fn status_class_index(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Client requests per origin request, computed at scrape time (0 before the first origin
/// request). Across a fleet, sum the two counters instead: a cluster node that only delivers
/// sends nothing to the origin, its peers do.
#[derive(Debug)]
struct OffloadCollector {
    clients: Counter,
    origin: Counter,
}

impl Collector for OffloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let origin = self.origin.get();
        let ratio = match origin {
            0 => 0.0,
            n => self.clients.get() as f64 / n as f64,
        };
        let gauge = ConstGauge::new(ratio);
        let metric = encoder.encode_descriptor(
            "origin_offload_ratio",
            "Client requests answered per request sent to an origin, since start",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        gauge.encode(metric)
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
        let counters = [
            (
                "cache_evictions",
                "Entries evicted to stay within the disk budget",
                stats.evictions,
            ),
            (
                "cache_store_write_errors",
                "Chunk or index writes the store could not make (full or failing disk)",
                stats.write_errors,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let gauges = [
            (
                "cache_disk_budget_bytes",
                "Disk budget in force (lowered when the disk filled first)",
                stats.disk_budget as i64,
            ),
            (
                "cache_store_writable",
                "1 unless a store write failed in the last 30 s",
                i64::from(self.0.write_failure().is_none()),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::StoreLimits;
    use http::StatusCode;

    #[tokio::test]
    async fn resolved_counters_land_on_their_own_label_sets() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            disk_budget: 1 << 20,
            memory_budget: 1 << 20,
        };
        let metrics = Metrics::new(Store::open(dir.path(), limits).await.unwrap());
        for _ in 0..3 {
            metrics.count_response(Protocol::H2, Outcome::Hit, StatusCode::OK, 10);
        }
        metrics.count_response(Protocol::H3, Outcome::Synthetic, StatusCode::BAD_GATEWAY, 5);
        metrics.count_response(Protocol::H1, Outcome::VaryMiss, StatusCode::NOT_MODIFIED, 0);
        let text = metrics.render();
        for line in [
            r#"quicdn_requests_total{protocol="h2",cache="hit",status="2xx"} 3"#,
            r#"quicdn_requests_total{protocol="h3",cache="synthetic",status="5xx"} 1"#,
            r#"quicdn_requests_total{protocol="h1",cache="vary-miss",status="3xx"} 1"#,
            r#"quicdn_served_bytes_total{protocol="h2"} 30"#,
            r#"quicdn_served_bytes_total{protocol="h3"} 5"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert_eq!(text.matches("quicdn_requests_total{").count(), 3, "{text}");
    }
}
