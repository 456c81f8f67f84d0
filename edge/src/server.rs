//! Wiring: config in, listeners bound, tasks running; and an orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shared::reload::{Reloader, Trigger};
use shared::tls::{DevCertificate, TlsMaterial};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::policy::PolicyConfig;
use crate::cache::store::{Store, StoreLimits};
use crate::cache::{Cache, CacheCounters, CacheLimits};
use crate::config::{EdgeConfig, SiteConfig};
use crate::control::{Control, EdgeLocal};
use crate::demo::DemoOrigin;
use crate::frontend::tcp::{self, TcpLimits};
use crate::metrics::Metrics;
use crate::origin::OriginClient;
use crate::reload::{ConfigSource, EdgeReload};
use crate::service::{Service, ServiceSettings};

/// Entry point of the edge.
pub struct Edge;

/// A running edge. Dropping it does not stop it; call [`RunningEdge::shutdown`].
pub struct RunningEdge {
    https: Option<SocketAddr>,
    h3: Option<SocketAddr>,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    certificate: Option<TlsMaterial>,
    service: Arc<Service>,
    control: Arc<Control>,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _demo: Option<DemoOrigin>,
}

impl Edge {
    /// Validates `config`, opens the store, binds every listener and starts serving.
    pub async fn start(config: EdgeConfig) -> anyhow::Result<RunningEdge> {
        Self::start_with(config, None).await
    }

    /// As [`Edge::start`]; reloads (SIGHUP, a change of the config file, `POST /reload`)
    /// read the config again from `source`.
    ///
    /// Long but linear: each listener is bound, then each task started, in the order the
    /// next step needs (Alt-Svc needs the bound UDP port, the service needs Alt-Svc).
    pub async fn start_with(
        mut config: EdgeConfig,
        source: Option<ConfigSource>,
    ) -> anyhow::Result<RunningEdge> {
        config.validate()?;
        let demo = if config.sites.is_empty() {
            let demo = DemoOrigin::start(([127, 0, 0, 1], 0).into())
                .await
                .context("cannot start the demo origin")?;
            tracing::info!(origin = %demo.url(), "no origin configured: serving the built-in demo origin for every host");
            config.sites.push(SiteConfig::new(&["*"], &demo.url()));
            Some(demo)
        } else {
            None
        };
        // Bind everything first: the Alt-Svc header needs the UDP port actually bound.
        let https_listener = match config.listen.https {
            Some(addr) => Some(bind(addr, "https").await?),
            None => None,
        };
        let https = https_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let quic_socket = match https {
            Some(tcp) if config.quic.enabled => Some(
                std::net::UdpSocket::bind(tcp)
                    .with_context(|| format!("cannot listen for HTTP/3 on UDP {tcp}"))?,
            ),
            _ => None,
        };
        let http_listener = match config.listen.http {
            Some(addr) => Some(bind(addr, "http").await?),
            None => None,
        };
        let http = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let admin_listener = match config.listen.admin {
            Some(addr) => Some(bind(addr, "admin").await?),
            None => None,
        };
        let admin = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let h3 = quic_socket.as_ref().map(|s| s.local_addr()).transpose()?;
        let alt_svc = match h3 {
            Some(udp) if config.quic.advertise => {
                let port = match config.quic.advertised_port {
                    0 => udp.port(),
                    p => p,
                };
                let max_age = config.quic.alt_svc_max_age.as_secs();
                Some(http::HeaderValue::from_str(&format!(
                    "h3=\":{port}\"; ma={max_age}"
                ))?)
            }
            _ => None,
        };
        let https_port = https.map(|a| a.port());
        let service = Arc::new(build_service(&config, alt_svc, https_port).await?);
        let control = Arc::new(start_control(&config, &service).await?);
        service.set_control(&control);
        let demo_site = demo.as_ref().map(|_| config.sites[0].clone());
        let reload = Arc::new(EdgeReload::new(
            service.clone(),
            source,
            config.clone(),
            demo_site,
        )?);
        let reloader = Reloader::new(reload.clone());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(reloader.clone().watch(stopped.clone()))];
        let per_ip = crate::frontend::limits::PerIp::new(config.listen.max_connections_per_ip);
        let limits = TcpLimits {
            max_connections: config.listen.max_connections,
            header_read_timeout: config.listen.header_read_timeout,
            shutdown_grace: config.listen.shutdown_grace,
            notsent_lowat: u32::try_from(config.listen.notsent_lowat.as_u64()).unwrap_or(u32::MAX),
            timeouts: crate::frontend::limits::Timeouts {
                first_request: config.listen.first_request_timeout,
                idle: config.listen.idle_timeout,
                send: config.listen.send_timeout,
            },
            h2_max_concurrent_streams: config.listen.h2_max_concurrent_streams,
            per_ip: per_ip.clone(),
        };
        let material = match https_listener {
            Some(_) => Some(tls_material(&config)?),
            None => None,
        };
        if let (Some(listener), Some(material)) = (https_listener, &material) {
            let tls = material.server_config(&[b"h2", b"http/1.1"])?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            tasks.push(tokio::spawn(tcp::serve(
                listener,
                Some(acceptor),
                service.clone(),
                limits.clone(),
                stopped.clone(),
            )));
        }
        if let (Some(socket), Some(material)) = (quic_socket, &material) {
            let endpoint = crate::frontend::h3::endpoint(socket, material, &config.quic)?;
            tasks.push(tokio::spawn(crate::frontend::h3::serve(
                endpoint,
                service.clone(),
                config.quic.clone(),
                crate::frontend::h3::QuicLimits {
                    shutdown_grace: config.listen.shutdown_grace,
                    header_read_timeout: config.listen.header_read_timeout,
                    per_ip: per_ip.clone(),
                },
                stopped.clone(),
            )));
        }
        if let Some(listener) = http_listener {
            tasks.push(tokio::spawn(tcp::serve(
                listener,
                None,
                service.clone(),
                limits,
                stopped.clone(),
            )));
        }
        if let Some(listener) = admin_listener {
            let admin = crate::admin::Admin {
                service: service.clone(),
                reload: reload.clone(),
                reloader: reloader.clone(),
                control: control.clone(),
            };
            tasks.push(tokio::spawn(crate::admin::serve(
                listener,
                admin,
                stopped.clone(),
            )));
        }
        let certificate = material;
        // These lines are a contract: tests and scripts read the bound ports from them.
        for (name, addr) in [
            ("https", https),
            ("h3", h3),
            ("http", http),
            ("admin", admin),
        ] {
            if let Some(addr) = addr {
                tracing::info!(listener = name, %addr, "listening");
            }
        }
        Ok(RunningEdge {
            https,
            h3,
            http,
            admin,
            certificate,
            service,
            control,
            reloader,
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

    /// The UDP address HTTP/3 is served on.
    pub fn h3_addr(&self) -> Option<SocketAddr> {
        self.h3
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

    /// Where purges and pre-warms go: this edge alone, or every POP over the bus.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Reads the config again and applies it, as SIGHUP and `POST /reload` do.
    pub async fn reload(&self) -> anyhow::Result<String> {
        self.reloader.reload(Trigger::Request).await
    }

    /// Stops accepting, lets in-flight requests finish within the grace period, and returns
    /// when every listener is closed.
    pub async fn shutdown(self) {
        self.service.start_draining();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // After the listeners: a purge submitted by a request still in flight is published.
        self.control.shutdown().await;
    }
}

/// The control plane from `[control]`: over the bus, or this edge alone. With a bus, waits
/// up to `catch_up_timeout` for the first catch-up with the stream, so that the usual start
/// serves from the cache at once; past it the edge starts anyway, its cache suspect (every
/// hit revalidates) until it has caught up.
async fn start_control(config: &EdgeConfig, service: &Arc<Service>) -> anyhow::Result<Control> {
    let local = Arc::new(EdgeLocal::new(service.clone(), config.prewarm.clone()));
    let metrics = service.metrics().control.clone();
    let control = Control::start(&config.name, &config.control, local, metrics).await?;
    let timeout = config.control.catch_up_timeout;
    if config.control.enabled() && !control.caught_up(timeout).await {
        tracing::warn!(
            timeout = %humantime_serde::re::humantime::format_duration(timeout),
            servers = ?config.control.nats,
            "control: not caught up with the bus in time; serving, revalidating every hit until caught up"
        );
    }
    Ok(control)
}

async fn build_service(
    config: &EdgeConfig,
    alt_svc: Option<http::HeaderValue>,
    https_port: Option<u16>,
) -> anyhow::Result<Service> {
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
        slice_size: c.slice_size.as_u64() as usize,
        slice_read_ahead: c.slice_read_ahead,
        max_ranges: c.max_ranges,
        max_object_size: c.max_object_size.as_u64(),
        memory_object_max: c.memory_object_max.as_u64(),
        pass_memory: c.pass_memory,
    };
    let cache = Cache::new(store, policy, limits, counters);
    let origin = OriginClient::new(&config.origin)?;
    let settings = ServiceSettings {
        name: config.name.clone(),
        health_path: config.listen.health_path.clone(),
        access_log: config.log.access_log,
        alt_svc,
        body_memory_per_connection: config.listen.body_memory_per_connection.as_u64(),
        body_memory_total: config.listen.body_memory_total.as_u64(),
        https_port,
        purge_allow_from: config.purge.allow_from.clone(),
        admin_limit: crate::rules::limit::Limiter::admin(&config.admin, &metrics.rules().limited),
    };
    let cluster = crate::upstream::cluster::Cluster::new(config, &origin, &metrics)?;
    Ok(Service::new(
        settings,
        &config.sites,
        cluster,
        cache,
        origin,
        metrics,
    )?)
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
