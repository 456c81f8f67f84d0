//! Wiring: config in, listeners bound, tasks running; and an orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shared::tls::{DevCertificate, TlsMaterial};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::policy::PolicyConfig;
use crate::cache::store::{Store, StoreLimits};
use crate::cache::{Cache, CacheCounters, CacheLimits};
use crate::config::{EdgeConfig, SiteConfig};
use crate::demo::DemoOrigin;
use crate::frontend::tcp::{self, TcpLimits};
use crate::metrics::Metrics;
use crate::origin::OriginClient;
use crate::service::{Service, ServiceSettings};
use crate::sites::Sites;

/// Entry point of the edge.
pub struct Edge;

/// A running edge. Dropping it does not stop it; call [`RunningEdge::shutdown`].
pub struct RunningEdge {
    https: Option<SocketAddr>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    certificate: Option<TlsMaterial>,
    service: Arc<Service>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _demo: Option<DemoOrigin>,
}

impl Edge {
    /// Validates `config`, opens the store, binds every listener and starts serving.
    pub async fn start(mut config: EdgeConfig) -> anyhow::Result<RunningEdge> {
        config.validate()?;
        let demo = if config.sites.is_empty() {
            let demo = DemoOrigin::start(([127, 0, 0, 1], 0).into())
                .await
                .context("cannot start the demo origin")?;
            tracing::info!(origin = %demo.url(), "no origin configured: serving the built-in demo origin for every host");
            config.sites.push(SiteConfig {
                hosts: vec!["*".into()],
                origin: demo.url(),
                forward_host: false,
            });
            Some(demo)
        } else {
            None
        };
        let service = Arc::new(build_service(&config).await?);
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let limits = TcpLimits {
            max_connections: config.listen.max_connections,
            header_read_timeout: config.listen.header_read_timeout,
            shutdown_grace: config.listen.shutdown_grace,
        };
        let mut certificate = None;
        let https = match config.listen.https {
            Some(addr) => {
                let material = tls_material(&config)?;
                let tls = material.server_config(&[b"h2", b"http/1.1"])?;
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
                let listener = bind(addr, "https").await?;
                let local = listener.local_addr()?;
                tasks.push(tokio::spawn(tcp::serve(
                    listener,
                    Some(acceptor),
                    service.clone(),
                    limits,
                    stopped.clone(),
                )));
                certificate = Some(material);
                Some(local)
            }
            None => None,
        };
        let http = match config.listen.http {
            Some(addr) => {
                let listener = bind(addr, "http").await?;
                let local = listener.local_addr()?;
                tasks.push(tokio::spawn(tcp::serve(
                    listener,
                    None,
                    service.clone(),
                    limits,
                    stopped.clone(),
                )));
                Some(local)
            }
            None => None,
        };
        let admin = match config.listen.admin {
            Some(addr) => {
                let listener = bind(addr, "admin").await?;
                let local = listener.local_addr()?;
                tasks.push(tokio::spawn(crate::admin::serve(
                    listener,
                    service.clone(),
                    stopped.clone(),
                )));
                Some(local)
            }
            None => None,
        };
        // These lines are a contract: tests and scripts read the bound ports from them.
        for (name, addr) in [("https", https), ("http", http), ("admin", admin)] {
            if let Some(addr) = addr {
                tracing::info!(listener = name, %addr, "listening");
            }
        }
        Ok(RunningEdge {
            https,
            http,
            admin,
            certificate,
            service,
            stop,
            tasks,
            _demo: demo,
        })
    }
}

impl RunningEdge {
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The TLS certificate served on the HTTPS listener.
    pub fn certificate(&self) -> Option<&TlsMaterial> {
        self.certificate.as_ref()
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and returns
    /// when every listener is closed.
    pub async fn shutdown(self) {
        self.service.start_draining();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn build_service(config: &EdgeConfig) -> anyhow::Result<Service> {
    let c = &config.cache;
    let store = Store::open(
        &c.dir,
        StoreLimits {
            disk_budget: c.disk_budget.as_u64(),
            memory_budget: c.memory_budget.as_u64(),
        },
    )
    .await
    .with_context(|| format!("cannot open the cache in {}", c.dir.display()))?;
    let metrics = Arc::new(Metrics::new(store.clone()));
    let counters = CacheCounters {
        coalesced_waits: metrics.coalesced_waits.clone(),
        origin_fetches: metrics.origin_fetches.clone(),
        fills_failed: metrics.fills_failed.clone(),
    };
    let policy = PolicyConfig {
        heuristic_fraction: c.heuristic_fraction,
        heuristic_max: c.heuristic_max,
    };
    let limits = CacheLimits {
        chunk_size: c.chunk_size.as_u64() as usize,
        max_object_size: c.max_object_size.as_u64(),
        memory_object_max: c.memory_object_max.as_u64(),
        pass_memory: c.pass_memory,
    };
    let cache = Cache::new(store, policy, limits, counters);
    let origin = OriginClient::new(&config.origin)?;
    let sites = Sites::new(&config.sites)?;
    let settings = ServiceSettings {
        name: config.name.clone(),
        health_path: config.listen.health_path.clone(),
        access_log: config.log.access_log,
    };
    Ok(Service::new(settings, sites, cache, origin, metrics))
}

fn tls_material(config: &EdgeConfig) -> anyhow::Result<TlsMaterial> {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        let material = TlsMaterial::from_pem_files(cert, key)?;
        tracing::info!(cert = %cert.display(), spki_sha256 = material.spki_sha256().unwrap_or_default(), "TLS certificate loaded");
        return Ok(material);
    }
    let dir = config
        .tls
        .dev_cert_dir
        .clone()
        .unwrap_or_else(|| config.cache.dir.join("tls"));
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    names.extend(config.tls.dev_cert_names.iter().cloned());
    let dev = DevCertificate::load_or_generate(&dir, &names)?;
    tracing::warn!(
        cert = %dev.cert_path.display(),
        spki_sha256 = dev.material.spki_sha256().unwrap_or_default(),
        "no TLS certificate configured: using a self-signed development certificate"
    );
    Ok(dev.material)
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {name} on {addr}"))
}
