//! Prometheus metrics of geodns.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::health::Health;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The query name when it is one of ours (bounded by the config), else "-".
    pub name: String,
    pub qtype: String,
    pub rcode: String,
    /// The first POP answered for a geo name, else "-".
    pub pop: String,
}

/// Every metric geodns exports.
pub struct Metrics {
    registry: Registry,
    pub queries: Family<QueryLabels, Counter>,
    pub failed_open: Counter,
    pub reloads: Counter,
    pub reload_errors: Counter,
    /// UDP queries answered from the answer cache, and by the full handler.
    pub udp_cache_hits: Counter,
    pub udp_cache_misses: Counter,
}

impl Metrics {
    /// `pops` lists the configured POP names at scrape time (the config can be reloaded).
    pub fn new(health: Health, pops: PopNames) -> Self {
        let mut registry = Registry::with_prefix("geodns");
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register("queries", "DNS queries answered", queries.clone());
        let failed_open = Counter::default();
        registry.register(
            "failed_open",
            "Geo answers given with every POP because none was healthy",
            failed_open.clone(),
        );
        let reloads = Counter::default();
        registry.register("reloads", "Config and database reloads", reloads.clone());
        let reload_errors = Counter::default();
        registry.register(
            "reload_errors",
            "Reloads rejected (the previous config stays in use)",
            reload_errors.clone(),
        );
        let udp_cache_hits = Counter::default();
        registry.register(
            "udp_cache_hits",
            "UDP queries answered from the answer cache",
            udp_cache_hits.clone(),
        );
        let udp_cache_misses = Counter::default();
        registry.register(
            "udp_cache_misses",
            "UDP queries answered by the full handler (new, unusual or uncacheable queries)",
            udp_cache_misses.clone(),
        );
        registry.register_collector(Box::new(HealthCollector { health, pops }));
        Self {
            registry,
            queries,
            failed_open,
            reloads,
            reload_errors,
            udp_cache_hits,
            udp_cache_misses,
        }
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The POP names of the config in use.
pub type PopNames = Box<dyn Fn() -> Vec<String> + Send + Sync>;

struct HealthCollector {
    health: Health,
    pops: PopNames,
}

impl std::fmt::Debug for HealthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCollector").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PopLabel {
    pop: String,
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.health.load();
        let mut family = encoder.encode_descriptor(
            "pop_healthy",
            "1 when the POP passes its health checks",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for pop in (self.pops)() {
            let gauge = ConstGauge::new(i64::from(snapshot.is_healthy(&pop)));
            gauge.encode(family.encode_family(&PopLabel { pop })?)?;
        }
        Ok(())
    }
}
