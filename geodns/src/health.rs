//! POP health: a checker probes each POP's health URL and publishes a snapshot that the query
//! path reads without locks (arc-swap).
//!
//! A POP turns down after `fall` consecutive failures and up again after `rise` consecutive
//! successes, so one lost probe does not move traffic. POPs start healthy: a freshly started
//! server answers at once, and the first failing probes take a POP out within
//! `fall * interval`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use crate::config::{HealthConfig, PopConfig};

/// Which POPs are healthy, by name. Names missing from the map count as healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    pub down: HashMap<String, bool>,
}

impl HealthSnapshot {
    pub fn is_healthy(&self, pop: &str) -> bool {
        !self.down.get(pop).copied().unwrap_or(false)
    }
}

/// Shared, lock-free health state.
pub type Health = Arc<ArcSwap<HealthSnapshot>>;

/// Probes every POP with a health URL until dropped.
pub struct Checker {
    tasks: JoinSet<()>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

impl Checker {
    /// Starts one probe loop per POP that has a `health_url`.
    pub fn start(
        pops: &[PopConfig],
        config: &HealthConfig,
        health: Health,
    ) -> Result<Self, shared::tls::TlsError> {
        let client = client(config)?;
        let mut tasks = JoinSet::new();
        for pop in pops {
            let Some(url) = pop.health_url.clone() else {
                continue;
            };
            let probe = Probe {
                pop: pop.name.clone(),
                url,
                config: config.clone(),
                client: client.clone(),
                health: health.clone(),
            };
            tasks.spawn(probe.run());
        }
        Ok(Self { tasks })
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

struct Probe {
    pop: String,
    url: String,
    config: HealthConfig,
    client: HttpClient,
    health: Health,
}

impl Probe {
    async fn run(self) {
        let mut streak: i64 = 0; // > 0: consecutive successes, < 0: consecutive failures
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let ok = self.probe_once().await;
            streak = match (ok, streak) {
                (true, s) if s > 0 => s + 1,
                (true, _) => 1,
                (false, s) if s < 0 => s - 1,
                (false, _) => -1,
            };
            let healthy = self.health.load().is_healthy(&self.pop);
            if healthy && streak <= -(self.config.fall as i64) {
                self.set(false);
            } else if !healthy && streak >= self.config.rise as i64 {
                self.set(true);
            }
        }
    }

    async fn probe_once(&self) -> bool {
        let Ok(uri) = self.url.parse::<http::Uri>() else {
            return false;
        };
        let req = http::Request::get(uri)
            .header(http::header::USER_AGENT, "quicdn-geodns-health")
            .body(Empty::new());
        let Ok(req) = req else { return false };
        let attempt = async {
            let response = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Drain the (small) body so the connection can be reused.
            let _ = response.into_body().collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(self.config.timeout, attempt).await {
            Ok(Ok(status)) if status.is_success() => true,
            Ok(Ok(status)) => {
                tracing::debug!(pop = %self.pop, %status, "health probe failed");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(pop = %self.pop, error = %e, "health probe failed");
                false
            }
            Err(_) => {
                tracing::debug!(pop = %self.pop, "health probe timed out");
                false
            }
        }
    }

    fn set(&self, healthy: bool) {
        self.health.rcu(|snapshot| {
            let mut next = (**snapshot).clone();
            next.down.insert(self.pop.clone(), !healthy);
            next
        });
        if healthy {
            tracing::warn!(pop = %self.pop, url = %self.url, "POP is healthy again");
        } else {
            tracing::error!(pop = %self.pop, url = %self.url, "POP is DOWN: its clients go to the next nearest POP");
        }
    }
}

fn client(config: &HealthConfig) -> Result<HttpClient, shared::tls::TlsError> {
    let tls = shared::tls::client_config(config.ca_file.as_deref())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(config.timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
