//! [`start`] and [`RunningGeoDns`]: the DNS listeners (UDP threads and hickory's TCP server on
//! one port), the admin listener, health checks, the bad-input report and the reload watcher,
//! and their shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use shared::admin::{AdminRequest, AdminResponse};
use shared::reload::{Reloader, Trigger};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::reload::GeoReload;
use super::{Handler, State};
use crate::config::GeoDnsConfig;
use crate::health::{Checker, Health, HealthSnapshot};
use crate::metrics::Metrics;
use crate::udp::UdpServer;

/// A running geodns.
pub struct RunningGeoDns {
    dns: SocketAddr,
    admin: Option<SocketAddr>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    udp: Option<UdpServer>,
}

impl RunningGeoDns {
    /// The UDP and TCP address DNS is served on.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Re-reads the config file (when started from one) and the databases.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.reloader.reload(Trigger::Request).await.map(drop)
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Some(udp) = self.udp {
            let _ = tokio::task::spawn_blocking(move || udp.shutdown()).await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// hickory's server owns its handler; the UDP threads share the same one.
struct SharedHandler(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for SharedHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Starts geodns: binds UDP and TCP (same port), the admin listener, health checks and the
/// reload watcher. `config_path` is what reloads re-read.
pub async fn start(
    config: GeoDnsConfig,
    config_path: Option<PathBuf>,
) -> anyhow::Result<RunningGeoDns> {
    let state = Arc::new(ArcSwap::from_pointee(State::build(config)?));
    let config = state.load().config.clone();
    let health: Health = Arc::new(ArcSwap::from_pointee(HealthSnapshot::default()));
    let metrics = metrics(&state, &health);
    let checker = Checker::start(&config.pops, &config.health, health.clone())?;
    let reloader = Reloader::new(Arc::new(GeoReload::new(
        config_path,
        state.clone(),
        health.clone(),
        checker,
        metrics.clone(),
    )));

    let (sockets, tcp) = bind_dns(config.listen.dns, config.listen.udp_threads).await?;
    let dns = sockets[0].local_addr()?;
    let handler = Arc::new(Handler::new(state.clone(), health.clone(), metrics.clone()));
    let udp = UdpServer::start(
        sockets,
        handler.clone(),
        state.clone(),
        health.clone(),
        tokio::runtime::Handle::current(),
    )?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![serve_tcp(
        handler.clone(),
        tcp,
        config.listen.tcp_timeout,
        stopped.clone(),
    )];
    let admin = match config.listen.admin {
        Some(addr) => {
            let (local, task) =
                serve_admin(addr, metrics.clone(), reloader.clone(), stopped.clone()).await?;
            tasks.push(task);
            Some(local)
        }
        None => None,
    };
    tasks.push(tokio::spawn(report_bad_input(
        handler.clone(),
        state.clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(reloader.clone().watch(stopped)));
    for (name, addr) in [("dns", Some(dns)), ("admin", admin)] {
        if let Some(addr) = addr {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    Ok(RunningGeoDns {
        dns,
        admin,
        state,
        health,
        reloader,
        stop,
        tasks,
        udp: Some(udp),
    })
}

/// The metrics, labelled with the POP names of the state in use.
fn metrics(state: &Arc<ArcSwap<State>>, health: &Health) -> Arc<Metrics> {
    let names_state = state.clone();
    Arc::new(Metrics::new(
        health.clone(),
        Box::new(move || {
            names_state
                .load()
                .config
                .pops
                .iter()
                .map(|p| p.name.clone())
                .collect()
        }),
    ))
}

/// hickory serves TCP (UDP has its own threads, see `udp/`) until `stopped`, then shuts down
/// gracefully.
fn serve_tcp(
    handler: Arc<Handler>,
    tcp: TcpListener,
    timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut server = hickory_server::Server::new(SharedHandler(handler));
    // 64 KiB of buffered responses per TCP connection is plenty for one resolver.
    server.register_listener(tcp, timeout, 64);
    tokio::spawn(async move {
        let stopped = tokio::select! {
            result = server.block_until_done() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "DNS server stopped");
                }
                false
            }
            _ = stopped.wait_for(|s| *s) => true,
        };
        if stopped {
            let _ = server.shutdown_gracefully().await;
        }
    })
}

/// The admin listener on `addr` (`/metrics`, `/health`, `POST /reload`): its bound address
/// and its task.
async fn serve_admin(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for admin on {addr}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(shared::admin::serve(
        listener,
        move |req: AdminRequest| {
            let (metrics, reloader) = (metrics.clone(), reloader.clone());
            async move {
                match req.path.as_str() {
                    "/metrics" => AdminResponse::metrics(metrics.render()),
                    "/health" => AdminResponse::text(http::StatusCode::OK, "ok\n"),
                    "/reload" => shared::admin::reload_answer(&reloader, &req.method).await,
                    _ => AdminResponse::not_found(),
                }
            }
        },
        stopped,
    ));
    Ok((local, task))
}

/// The UDP sockets and the TCP listener, on one port. TCP takes the port UDP got; when the
/// config asks for port 0 and that port is taken for TCP (e.g. by an outgoing connection's
/// local port), a few other ports are tried.
async fn bind_dns(
    addr: SocketAddr,
    threads: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sockets = crate::udp::bind(addr, threads)
            .with_context(|| format!("cannot listen for DNS on UDP {addr}"))?;
        let dns = sockets[0].local_addr()?;
        match TcpListener::bind(dns).await {
            Ok(tcp) => return Ok((sockets, tcp)),
            Err(e) if addr.port() == 0 && attempt < 16 => {
                tracing::debug!(%dns, error = %e, "TCP port taken; binding another port");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for DNS on TCP {dns}"));
            }
        }
    }
}

/// Writes the bad-input counts every `log.bad_input_interval` (as configured now: a reload
/// takes effect from the next report), and once more on shutdown.
async fn report_bad_input(
    handler: Arc<Handler>,
    state: Arc<ArcSwap<State>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let interval = state.load().config.log.bad_input_interval;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(interval) => {}
        }
        handler.bad_input().flush();
    }
    handler.bad_input().flush();
}
