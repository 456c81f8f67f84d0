//! The query path and the process around it: hickory-server on UDP and TCP, the answer
//! function, health checking, reloads and the admin listener.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{LowerName, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use shared::reload::{Reload, ReloadFuture, Reloader, Trigger};
use tokio::sync::{Mutex, watch};

use crate::badinput::BadInputLog;
use crate::config::GeoDnsConfig;
use crate::geo::GeoDb;
use crate::health::{Checker, Health, HealthSnapshot};
use crate::metrics::{Metrics, QueryLabels};
use crate::select::{self, Candidate};
use crate::zone::{Answer, GeoTarget, Zones};

/// Everything a query needs, swapped whole on reload.
pub struct State {
    pub config: GeoDnsConfig,
    zones: Zones,
    geo: GeoDb,
    default_order: Vec<usize>,
}

impl State {
    /// Builds zones and opens the databases; any error leaves the caller's state in use.
    pub fn build(config: GeoDnsConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let zones = Zones::new(&config.zones)?;
        let geo = GeoDb::open(&config.geoip.databases)?;
        for line in geo.describe() {
            tracing::info!(database = %line, "MaxMind database loaded");
        }
        let index: HashMap<&str, usize> = config
            .pops
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let default_order = config
            .default_order
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .collect();
        Ok(Self {
            config,
            zones,
            geo,
            default_order,
        })
    }
}

impl State {
    /// The database location of an address (see [`GeoDb::lookup`]).
    pub(crate) fn locate(&self, ip: IpAddr) -> Option<crate::geo::Location> {
        self.geo.lookup(ip)
    }
}

/// Where an answer's client location came from, for the ECS scope.
struct Chosen {
    addrs: Vec<IpAddr>,
    first_pop: Option<String>,
    /// Prefix length the answer is valid for (RFC 7871 SCOPE PREFIX-LENGTH).
    scope: Option<u8>,
}

/// hickory's request handler: one answer function for UDP and TCP.
pub struct Handler {
    state: Arc<ArcSwap<State>>,
    health: Health,
    metrics: Arc<Metrics>,
    /// Last time (unix seconds) a fail-open answer was logged, so a POP outage does not log
    /// once per query.
    failed_open_logged: AtomicU64,
    /// Bad queries, logged rate-limited per client.
    bad_input: BadInputLog,
}

impl Handler {
    fn choose(
        &self,
        state: &State,
        target: &GeoTarget,
        rtype: RecordType,
        client: IpAddr,
    ) -> Chosen {
        let health = self.health.load();
        let pops = &state.config.pops;
        let allowed = |name: &str| target.pops.is_empty() || target.pops.iter().any(|p| p == name);
        if let Some(o) = state.config.override_for(client)
            && allowed(&o.pop)
            && health.is_healthy(&o.pop)
            && let Some(pop) = pops.iter().find(|p| p.name == o.pop)
        {
            return Chosen {
                addrs: addresses(pop, rtype),
                first_pop: Some(pop.name.clone()),
                scope: Some(o.cidr.prefix_len()),
            };
        }
        let location = state.geo.lookup(client);
        let candidates: Vec<Candidate> = pops
            .iter()
            .enumerate()
            .filter(|(_, p)| allowed(&p.name))
            .map(|(index, p)| Candidate {
                index,
                lat: p.latitude,
                lon: p.longitude,
                weight: p.weight,
                healthy: health.is_healthy(&p.name),
            })
            .collect();
        let from = location.as_ref().and_then(|l| l.coords);
        let selection = select::nearest(&candidates, from, target.answers, &state.default_order);
        if selection.failed_open {
            self.metrics.failed_open.inc();
            crate::udp::note_failed_open();
            self.log_failed_open(&target.name);
        }
        let addrs = selection
            .indices
            .iter()
            .flat_map(|&i| addresses(&pops[i], rtype))
            .collect();
        Chosen {
            addrs,
            first_pop: selection.indices.first().map(|&i| pops[i].name.clone()),
            scope: location.map(|l| l.prefix_len),
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn bad_input(&self) -> &BadInputLog {
        &self.bad_input
    }

    /// A cached fail-open answer was served again: count and (rate-limited) log it.
    pub(crate) fn failed_open_again(&self, name: &str) {
        self.metrics.failed_open.inc();
        self.log_failed_open(&name);
    }

    /// Takes the name as `Display` so nothing is formatted unless the line is written.
    fn log_failed_open(&self, name: &dyn std::fmt::Display) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.failed_open_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .failed_open_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(name = %name, "no POP is healthy: answering with all of them (fail open)");
        }
    }
}

fn addresses(pop: &crate::config::PopConfig, rtype: RecordType) -> Vec<IpAddr> {
    match rtype {
        RecordType::A => pop.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
        RecordType::AAAA => pop.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
        _ => Vec::new(),
    }
}

/// The client address to locate, from EDNS Client Subnet or the resolver's own address.
enum Client {
    Subnet(ClientSubnet),
    Resolver(IpAddr),
    /// An ECS option whose prefix is longer than its address family allows (RFC 7871 7.1.2).
    Invalid,
}

fn client_of(request: &Request) -> Client {
    let subnet = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(cs) => Some(*cs),
            _ => None,
        });
    let resolver = request.src().ip();
    match subnet {
        Some(cs) => {
            let max = if cs.addr().is_ipv4() { 32 } else { 128 };
            if cs.source_prefix() > max || cs.scope_prefix() != 0 {
                Client::Invalid
            } else if cs.source_prefix() == 0 {
                // The resolver asks us not to use any client address information.
                Client::Resolver(resolver)
            } else {
                Client::Subnet(cs)
            }
        }
        None => Client::Resolver(resolver),
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let state = self.state.load();
        let mut meta = Metadata::response_from_request(&request.metadata);
        let builder = MessageResponseBuilder::from_message_request(request);
        let max_udp = state.config.listen.max_udp_payload;
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, max_udp));
            e
        });
        let query = match request.request_info() {
            Ok(info) if request.metadata.op_code == OpCode::Query => Ok(info.query.clone()),
            Ok(_) => Err(ResponseCode::NotImp),
            Err(_) => Err(ResponseCode::FormErr),
        };
        let client = client_of(request);
        let found = match (query, &client) {
            (Err(code), _) => Err(code),
            // An ECS prefix longer than its family allows is malformed (RFC 7871 7.1.2).
            (Ok(_), Client::Invalid) => Err(ResponseCode::FormErr),
            (Ok(q), Client::Subnet(cs)) => Ok((q, cs.addr())),
            (Ok(q), Client::Resolver(ip)) => Ok((q, *ip)),
        };
        let (query, locate) = match found {
            Ok(found) => found,
            Err(code) => {
                if code == ResponseCode::FormErr {
                    let reason = match client {
                        Client::Invalid => {
                            "ECS source prefix longer than its address family or scope prefix set"
                        }
                        _ => "not exactly one question",
                    };
                    self.bad_input
                        .note(request.src().ip(), request.protocol(), &reason);
                }
                return self
                    .error(request, builder, edns, code, response_handle)
                    .await;
            }
        };
        let qname: &LowerName = query.name();
        let qtype = query.query_type();
        let mut chosen: Option<Chosen> = None;
        let answer = state.zones.answer(qname, qtype, &mut |target, rtype| {
            let c = self.choose(&state, target, rtype, locate);
            let addrs = c.addrs.clone();
            chosen = Some(c);
            addrs
        });
        let (code, answers, authority, additionals, known) = match answer {
            Answer::Refused => (ResponseCode::Refused, vec![], vec![], vec![], false),
            Answer::NxDomain { authority } => {
                (ResponseCode::NXDomain, vec![], authority, vec![], false)
            }
            Answer::Authoritative {
                answers,
                authority,
                additionals,
                ..
            } => (ResponseCode::NoError, answers, authority, additionals, true),
        };
        meta.response_code = code;
        meta.authoritative = code != ResponseCode::Refused;
        let mut edns = edns;
        if let (Some(e), Client::Subnet(cs)) = (edns.as_mut(), &client) {
            // A geo answer holds for the database network it came from; anything else holds
            // for every client (scope 0), which lets resolvers cache it once.
            // A geo answer for an address the database does not know holds for the client's
            // whole source network: never scope 0, which would let a resolver hand the
            // fallback POP to all its clients.
            let scope = match &chosen {
                Some(c) => c.scope.unwrap_or(cs.source_prefix()),
                None => 0,
            };
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                cs.addr(),
                cs.source_prefix(),
                scope,
            )));
        }
        let mut builder = builder;
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.build(
            meta,
            answers.iter(),
            authority.iter(),
            std::iter::empty::<&Record>(),
            additionals.iter(),
        );
        let pop = chosen
            .and_then(|c| c.first_pop)
            .unwrap_or_else(|| "-".into());
        self.count(qname, known, qtype, code, pop, &state.config);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send DNS response");
                failed(meta)
            }
        }
    }
}

impl Handler {
    async fn error<R: ResponseHandler>(
        &self,
        request: &Request,
        mut builder: MessageResponseBuilder<'_>,
        edns: Option<Edns>,
        code: ResponseCode,
        mut response_handle: R,
    ) -> ResponseInfo {
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = builder.error_msg(&request.metadata, code);
        self.metrics
            .queries
            .get_or_create(&QueryLabels {
                name: "-".into(),
                qtype: "-".into(),
                rcode: code.to_string(),
                pop: "-".into(),
            })
            .inc();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = code;
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => failed(meta),
        }
    }

    fn count(
        &self,
        qname: &LowerName,
        known: bool,
        qtype: RecordType,
        code: ResponseCode,
        pop: String,
        config: &GeoDnsConfig,
    ) {
        let name = if known { qname.to_string() } else { "-".into() };
        if config.log.query_log {
            tracing::info!(target: "query", %name, %qtype, rcode = %code, %pop);
        }
        let counter = self
            .metrics
            .queries
            .get_or_create(&QueryLabels {
                name,
                qtype: qtype.to_string(),
                rcode: code.to_string(),
                pop,
            })
            .clone();
        counter.inc();
        crate::udp::note_outcome(counter);
    }
}

fn failed(metadata: Metadata) -> ResponseInfo {
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .into()
}

/// A running geodns.
pub struct RunningGeoDns {
    dns: SocketAddr,
    admin: Option<SocketAddr>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    udp: Option<crate::udp::UdpServer>,
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
    let names_state = state.clone();
    let metrics = Arc::new(Metrics::new(
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
    ));
    let checker = Checker::start(&config.pops, &config.health, health.clone())?;
    let reloader = Reloader::new(Arc::new(GeoReload {
        path: config_path,
        state: state.clone(),
        health: health.clone(),
        checker: Mutex::new(checker),
        metrics: metrics.clone(),
    }));

    let (sockets, tcp) = bind_dns(config.listen.dns, config.listen.udp_threads).await?;
    let dns = sockets[0].local_addr()?;
    let handler = Arc::new(Handler {
        state: state.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        failed_open_logged: AtomicU64::new(0),
        bad_input: BadInputLog::default(),
    });
    let udp = crate::udp::UdpServer::start(
        sockets,
        handler.clone(),
        state.clone(),
        health.clone(),
        tokio::runtime::Handle::current(),
    )?;
    // hickory serves TCP; UDP has its own threads (see udp.rs).
    let mut server = hickory_server::Server::new(SharedHandler(handler.clone()));
    // 64 KiB of buffered responses per TCP connection is plenty for one resolver.
    server.register_listener(tcp, config.listen.tcp_timeout, 64);

    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut dns_stop = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let stopped = tokio::select! {
            result = server.block_until_done() => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "DNS server stopped");
                }
                false
            }
            _ = dns_stop.wait_for(|s| *s) => true,
        };
        if stopped {
            let _ = server.shutdown_gracefully().await;
        }
    }));
    let admin = match config.listen.admin {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for admin on {addr}"))?;
            let local = listener.local_addr()?;
            let metrics = metrics.clone();
            tasks.push(tokio::spawn(shared::admin::serve(
                listener,
                move |path| match path {
                    "/metrics" => shared::admin::AdminResponse::metrics(metrics.render()),
                    "/health" => shared::admin::AdminResponse::text(http::StatusCode::OK, "ok\n"),
                    _ => shared::admin::AdminResponse::not_found(),
                },
                Some(reloader.clone()),
                stopped.clone(),
            )));
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

/// The UDP sockets and the TCP listener, on one port. TCP takes the port UDP got; when the
/// config asks for port 0 and that port is taken for TCP (e.g. by an outgoing connection's
/// local port), a few other ports are tried.
async fn bind_dns(
    addr: SocketAddr,
    threads: usize,
) -> anyhow::Result<(Vec<std::net::UdpSocket>, tokio::net::TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sockets = crate::udp::bind(addr, threads)
            .with_context(|| format!("cannot listen for DNS on UDP {addr}"))?;
        let dns = sockets[0].local_addr()?;
        match tokio::net::TcpListener::bind(dns).await {
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
        handler.bad_input.flush();
    }
    handler.bad_input.flush();
}

/// The config and databases, reloaded through [`shared::reload`] (SIGHUP, a change of the
/// config or a database file, `POST /reload` on the admin listener).
struct GeoReload {
    path: Option<PathBuf>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    checker: Mutex<Checker>,
    metrics: Arc<Metrics>,
}

impl Reload for GeoReload {
    fn reload(&self) -> ReloadFuture<'_> {
        Box::pin(async move {
            let config = match &self.path {
                Some(path) => GeoDnsConfig::load(path),
                None => Ok(self.state.load().config.clone()),
            };
            let result = match config {
                Ok(config) => self.apply(config).await,
                Err(e) => Err(e.into()),
            };
            match &result {
                Ok(()) => self.metrics.reloads.inc(),
                Err(_) => self.metrics.reload_errors.inc(),
            };
            result.map(|()| "config and databases".to_owned())
        })
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let state = self.state.load();
        self.path
            .iter()
            .chain(state.config.geoip.databases.iter())
            .cloned()
            .collect()
    }

    fn watch_interval(&self) -> Duration {
        self.state.load().config.geoip.watch_interval
    }
}

impl GeoReload {
    async fn apply(&self, config: GeoDnsConfig) -> anyhow::Result<()> {
        // Built off the query path; queries keep using the old state until the swap.
        let next = tokio::task::spawn_blocking(move || State::build(config)).await??;
        let checker = Checker::start(&next.config.pops, &next.config.health, self.health.clone())?;
        let names: Vec<String> = next.config.pops.iter().map(|p| p.name.clone()).collect();
        self.health.rcu(|h| {
            let mut kept = (**h).clone();
            kept.down.retain(|name, _| names.contains(name));
            kept
        });
        self.state.store(Arc::new(next));
        *self.checker.lock().await = checker;
        Ok(())
    }
}
