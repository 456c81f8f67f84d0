//! Edge integration tests: a real origin and the real edge on ephemeral ports, driven by real
//! HTTP clients over HTTP/1.1, HTTPS and HTTP/2. One test binary (faster to link, shared
//! fixtures); each test builds its own origin and edge so tests run in parallel.

#[path = "../support/mod.rs"]
mod support;

/// Runs `case` once per protocol, each with a fresh origin and edge (defined before the
/// modules that use it: a macro is in scope from its definition on).
macro_rules! per_protocol {
    ($name:ident, $case:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for proto in $crate::support::edge::Proto::ALL {
                let origin = $crate::support::origin::TestOrigin::start().await;
                let edge = $crate::support::edge::TestEdge::start(&origin.url()).await;
                let f = $case;
                f(proto, &origin, &edge).await;
                edge.stop().await;
            }
        }
    };
}

mod browser;
mod caching;
mod cluster;
mod coalescing;
mod control;
mod failover;
mod h3;
mod hardening;
mod limits;
mod media;
mod prewarm;
mod process;
mod purge;
mod purge_api;
mod ranges;
mod reload;
mod robustness;
mod rules;
mod tiers;
mod tokens;
