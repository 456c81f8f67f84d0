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

/// How probes reach the edges.
#[derive(Clone)]
enum Transport {
    Tcp(Box<HttpClient>),
    Quic(H3Prober),
}

impl Checker {
    /// Starts one probe loop per POP that has a `health_url`.
    pub fn start(
        pops: &[PopConfig],
        config: &HealthConfig,
        health: Health,
    ) -> Result<Self, shared::tls::TlsError> {
        let transport = if config.http3 {
            Transport::Quic(H3Prober::new(config)?)
        } else {
            Transport::Tcp(Box::new(client(config)?))
        };
        let mut tasks = JoinSet::new();
        for pop in pops {
            let Some(url) = pop.health_url.clone() else {
                continue;
            };
            let probe = Probe {
                pop: pop.name.clone(),
                url,
                config: config.clone(),
                transport: transport.clone(),
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
    transport: Transport,
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
        let attempt = async {
            match &self.transport {
                Transport::Quic(h3) if uri.scheme_str() == Some("https") => h3.get(&uri).await,
                Transport::Quic(_) => Err("HTTP/3 probes need an https:// URL".to_owned()),
                Transport::Tcp(client) => tcp_get(client, uri).await,
            }
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

async fn tcp_get(client: &HttpClient, uri: http::Uri) -> Result<http::StatusCode, String> {
    let req = http::Request::get(uri)
        .header(http::header::USER_AGENT, "quicdn-geodns-health")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = client.request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    // Drain the (small) body so the connection can be reused.
    let _ = response.into_body().collect().await;
    Ok(status)
}

/// Health probes over HTTP/3: one QUIC connection per probe, so a probe measures what a
/// new client would meet (handshake included).
#[derive(Clone)]
struct H3Prober {
    endpoint: quinn::Endpoint,
    tls: Arc<quinn::crypto::rustls::QuicClientConfig>,
}

impl H3Prober {
    fn new(config: &HealthConfig) -> Result<Self, shared::tls::TlsError> {
        let mut tls = shared::tls::client_config(config.ca_file.as_deref())?;
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| shared::tls::TlsError::Rustls(rustls_error(e)))?;
        let endpoint = quinn::Endpoint::client((std::net::Ipv6Addr::UNSPECIFIED, 0).into())
            .or_else(|_| quinn::Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into()))
            .map_err(|e| shared::tls::TlsError::Write {
                path: "udp socket".into(),
                source: e,
            })?;
        Ok(Self {
            endpoint,
            tls: Arc::new(tls),
        })
    }

    async fn get(&self, uri: &http::Uri) -> Result<http::StatusCode, String> {
        let host = uri.host().ok_or("health URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or("no address")?;
        let addr = match addr {
            // The endpoint is dual-stack: reach IPv4 through its mapped form.
            std::net::SocketAddr::V4(v4)
                if self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6()) =>
            {
                std::net::SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            other => other,
        };
        let config = quinn::ClientConfig::new(self.tls.clone());
        let conn = self
            .endpoint
            .connect_with(config, addr, host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("QUIC handshake: {e}"))?;
        let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let drive = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let req = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "quicdn-geodns-health")
            .body(())
            .map_err(|e| e.to_string())?;
        let result = async {
            let mut stream = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let _ = stream.finish().await;
            let head = stream.recv_response().await.map_err(|e| e.to_string())?;
            while let Ok(Some(_)) = stream.recv_data().await {}
            Ok(head.status())
        }
        .await;
        conn.close(0u32.into(), b"done");
        drive.abort();
        result
    }
}

fn rustls_error(e: impl std::fmt::Display) -> rustls::Error {
    rustls::Error::General(e.to_string())
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
