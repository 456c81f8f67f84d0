//! The protocol-neutral request core: every front-end (HTTP/1.1, HTTP/2, HTTP/3) converts its
//! request to `http::Request<Body>`, calls [`Service::handle`], and sends back what it returns.
//!
//! Here a request is routed to its site, checked (host known, no proxy loop, sane target),
//! turned into the origin request (hop-by-hop headers out, `Via` and `X-Forwarded-*` in), and
//! answered by the cache (GET/HEAD) or passed to the origin (everything else, with cache
//! invalidation for unsafe methods). The response gets `Cache-Status` and `Via`, and its body is
//! wrapped so the access-log line and byte metrics are written when the last byte leaves.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use crate::body::{self, Body};
use crate::cache::budget::{ReadBudget, TotalBudget};
use crate::cache::{self, Cache, Lookup, Served, Upstream};
use crate::config::SchemePolicy;
use crate::config::SiteConfig;
use crate::filter::{self, Chain, Filter, HealthState, KeyParts, LogRecord, RequestInfo, Verdict};
use crate::headers::{self, CacheStatus, Outcome};
use crate::metrics::Metrics;
use crate::origin::OriginClient;
use crate::sites::{Site, SiteError, Sites};
use crate::target;
use crate::upstream::cluster::{Cluster, Route};

/// The protocol a request arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    pub const ALL: [Self; 3] = [Self::H1, Self::H2, Self::H3];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }

    pub fn of(version: Version) -> Self {
        match version {
            Version::HTTP_2 => Self::H2,
            Version::HTTP_3 => Self::H3,
            _ => Self::H1,
        }
    }
}

/// What a front-end knows about a request besides the request itself.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    /// Arrived over TLS (HTTPS or QUIC).
    pub secure: bool,
    pub start: Instant,
    /// The memory its connection's responses may hold ([`Service::connection_budget`]).
    pub budget: ReadBudget,
}

impl RequestCtx {
    /// The context of a request the edge makes of itself (a pre-warm, a purge's key): from
    /// loopback, over HTTP/1.1, with a connection's share of the body memory.
    pub(crate) fn internal(service: &Service, secure: bool) -> Self {
        Self {
            protocol: Protocol::H1,
            peer: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
            secure,
            start: Instant::now(),
            budget: service.connection_budget(),
        }
    }
}

/// Settings of the service taken from config.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub name: String,
    pub health_path: String,
    pub access_log: bool,
    /// `Alt-Svc` value added to responses over TCP (advertises HTTP/3).
    pub alt_svc: Option<HeaderValue>,
    /// Bytes the responses of one connection may hold while their client reads.
    pub body_memory_per_connection: u64,
    /// Bytes all responses together may hold.
    pub body_memory_total: u64,
    /// The port the HTTPS listener is bound to (where HTTPS redirects point by default).
    pub https_port: Option<u16>,
    /// Clients that may send `PURGE` (`[purge] allow_from`).
    pub purge_allow_from: Vec<ipnet::IpNet>,
    /// The limit of admin writes and `PURGE` per client (`[admin] rate_limit`).
    pub admin_limit: Option<Arc<crate::rules::limit::Limiter>>,
}

/// What a request runs on from its start to its end: the sites, the global filter chain and
/// the origin client. Swapped whole on reload ([`Service::swap_state`]); a request holds the
/// one it started with until its response body has ended.
pub struct State {
    /// Each with its upstream (the origin client lives in them).
    pub sites: Sites,
    pub chain: Chain,
    /// The other nodes of this POP, if it is a cluster.
    pub cluster: Option<Arc<Cluster>>,
}

/// The edge's request core.
pub struct Service {
    settings: ServiceSettings,
    state: ArcSwap<State>,
    cache: Cache,
    metrics: Arc<Metrics>,
    health: Arc<HealthState>,
    body_memory: TotalBudget,
    /// The control plane, for the `PURGE` method ([`Service::set_control`]).
    control: Arc<filter::ControlSlot>,
}

impl Service {
    pub fn new(
        settings: ServiceSettings,
        sites: &[SiteConfig],
        cluster: Option<Arc<Cluster>>,
        cache: Cache,
        origin: OriginClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SiteError> {
        let health = Arc::new(HealthState::new(cache.store().clone()));
        let mut service = Self {
            body_memory: TotalBudget::new(settings.body_memory_total),
            state: ArcSwap::from_pointee(State {
                sites: Sites::default(),
                chain: Chain::default(),
                cluster: None,
            }),
            settings,
            cache,
            metrics,
            health,
            control: Arc::default(),
        };
        let access_log = service.settings.access_log;
        let state = service.state_for(sites, cluster, &origin, access_log)?;
        service.state = ArcSwap::from_pointee(state);
        Ok(service)
    }

    /// A state for these sites, their upstreams on `origin`, the cluster, and this service's
    /// fixed settings.
    pub fn state_for(
        &self,
        sites: &[SiteConfig],
        cluster: Option<Arc<Cluster>>,
        origin: &OriginClient,
        access_log: bool,
    ) -> Result<State, SiteError> {
        let settings = ServiceSettings {
            access_log,
            ..self.settings.clone()
        };
        let rule_metrics = self.metrics.rules();
        let sites = Sites::new(
            sites,
            self.settings.https_port,
            &rule_metrics,
            |config, url| crate::upstream::for_site(config, url, origin, &self.metrics),
        )?;
        Ok(State {
            sites,
            chain: Chain::new(global_filters(&settings, &self.health, &self.control)),
            cluster,
        })
    }

    /// Gives the `PURGE` method the control plane it submits to: set once, after the control
    /// plane (which holds this service) is built.
    pub fn set_control(&self, control: &Arc<crate::control::Control>) {
        self.control.set(control);
    }

    /// The state new requests start on.
    pub(crate) fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Makes `state` the one new requests start on; requests under way finish on theirs.
    pub fn swap_state(&self, state: State) {
        self.state.store(Arc::new(state));
    }

    /// The budget of one more connection's responses (a front-end calls it per connection).
    pub fn connection_budget(&self) -> ReadBudget {
        self.body_memory
            .connection(self.settings.body_memory_per_connection)
    }

    pub(crate) fn admin_limit(&self) -> Option<&Arc<crate::rules::limit::Limiter>> {
        self.settings.admin_limit.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the edge as shutting down: the health endpoint answers 503 so that health
    /// checkers send clients elsewhere while in-flight requests finish.
    pub fn start_draining(&self) {
        self.health.start_draining();
    }

    pub fn is_draining(&self) -> bool {
        self.health.is_draining()
    }

    /// Answers one request. Never fails: every problem becomes a response with a clear status.
    pub async fn handle(&self, mut ctx: RequestCtx, req: Request<Body>) -> Response<Body> {
        let state = self.state.load_full();
        let (parts, req_body) = req.into_parts();
        if let Some(cluster) = &state.cluster
            && cluster.from_peer(&parts.headers)
            && let Some(proto) = parts.headers.get("x-forwarded-proto")
        {
            // A peer's hop may be plain HTTP: the scheme that keys the object, redirects and
            // is told to the origin is the client's, which the peer sent on.
            ctx.secure = proto.as_bytes() == b"https";
        }
        let raw_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target = target::host(&parts).and_then(|host| {
            let path = target::path_and_query(raw_target)?;
            Ok((host, path))
        });
        let info = RequestInfo {
            ctx: &ctx,
            parts: &parts,
            target: target.as_ref().map(|(h, p)| (h.as_str(), p.as_ref())),
            site_rule: std::sync::OnceLock::new(),
        };
        let (mut served, site) = match (state.chain.on_request(&info), &target) {
            (Verdict::Respond(served), _) => (served, None),
            (Verdict::Continue, Ok((host, path))) => {
                self.route(&state, &info, host, path, req_body).await
            }
            // Without the target-check filter, a target that cannot be routed is still refused.
            (Verdict::Continue, Err(e)) => (filter::target_refused(e), None),
        };
        self.finish(&state, &info, site.as_deref(), &mut served);
        let complete = http_body::Body::is_end_stream(served.response.body());
        let logs = state.chain.logs();
        let mut record = AccessRecord {
            method: parts.method,
            // Only logging filters read these: no allocations for them when there are none.
            host: match (logs, &target) {
                (true, Ok((host, _))) => host.clone(),
                _ => String::new(),
            },
            path: match logs {
                true => raw_target.to_owned(),
                false => String::new(),
            },
            status: served.response.status(),
            outcome: served.status.outcome.unwrap_or(Outcome::Synthetic),
            bytes: 0,
            // An empty body may never be polled; it is complete from the start.
            complete,
            metrics: self.metrics.clone(),
            ctx,
            state,
        };
        served.response.map(|inner| {
            body::tap(inner, move |t| {
                // The whole record moves in (not copies of its fields): it is written by its
                // Drop, when the body is done or dropped.
                let record = &mut record;
                match t {
                    body::Tapped::Data(n) => record.bytes += n as u64,
                    body::Tapped::End => record.complete = true,
                }
            })
        })
    }

    /// `host` and `path_and_query` are the normalised target ([`target`]): the routing, the
    /// cache key and the origin request all come from them.
    async fn route(
        &self,
        state: &State,
        info: &RequestInfo<'_>,
        host: &str,
        path_and_query: &str,
        req_body: Body,
    ) -> (Served, Option<Arc<Site>>) {
        let Some(site) = state.sites.find(host) else {
            let refused = cache::error_response(
                StatusCode::MISDIRECTED_REQUEST,
                &format!("no site is configured for host {host:?}"),
            );
            return (refused, None);
        };
        let site = site.clone();
        let _ = info.site_rule.set(site.rule_for(path_and_query));
        let verdict = match state.chain.on_site(info, &site) {
            Verdict::Continue => site.filters.on_site(info, &site),
            respond => respond,
        };
        if let Verdict::Respond(served) = verdict {
            return (served, Some(site));
        }
        let served = self
            .serve(state, info, &site, host, path_and_query, req_body)
            .await;
        (served, Some(site))
    }

    async fn serve(
        &self,
        state: &State,
        info: &RequestInfo<'_>,
        site: &Site,
        host: &str,
        path_and_query: &str,
        req_body: Body,
    ) -> Served {
        // The upstream gets the target as a URI: refuse here what cannot be one. A target that
        // normalisation left as it was is the request's own, already parsed: no new parse.
        let target = match info.parts.uri.path_and_query() {
            Some(own) if own.as_str() == path_and_query => Ok(http::Uri::from(own.clone())),
            _ => path_and_query.parse::<http::Uri>(),
        };
        let target = match target {
            Ok(uri) => uri,
            Err(e) => {
                return cache::error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot map the request to the origin: {e}"),
                );
            }
        };
        let scheme = match site.scheme {
            SchemePolicy::Key => Some(if info.ctx.secure { "https" } else { "http" }),
            SchemePolicy::Shared => None,
        };
        let mut key = KeyParts {
            path_and_query: Cow::Borrowed(path_and_query),
            bypass: false,
        };
        state.chain.cache_key(info, site, &mut key);
        site.filters.cache_key(info, site, &mut key);
        // Built only if the origin is needed: most requests are hits.
        let origin_req = || origin_parts(state, info, site, host, target.clone());
        let lookup = Lookup {
            method: &info.parts.method,
            headers: &info.parts.headers,
            scheme,
            host,
            path_and_query: &key.path_and_query,
            budget: &info.ctx.budget,
        };
        if key.bypass {
            // Boxed: keeps the origin client's state out of every cache hit's future.
            return Box::pin(self.pass(&site.upstream, &lookup, origin_req(), req_body, "rule"))
                .await;
        }
        let cacheable = cache::policy::cacheable_method(&info.parts.method);
        if cacheable
            && let Some(cluster) = &state.cluster
            && !cluster.from_peer(&info.parts.headers)
            && let Route::Peer(peer) =
                cluster.route(&cache::key::primary(scheme, host, &key.path_and_query))
            && let Some(served) = Box::pin(to_peer(cluster, peer, origin_req())).await
        {
            return served;
        }
        if cacheable {
            self.cache
                .serve(&lookup, &origin_req, site.upstream.clone())
                .await
        } else {
            // Boxed: keeps the origin client's state out of every cache hit's future.
            Box::pin(self.pass(&site.upstream, &lookup, origin_req(), req_body, "method")).await
        }
    }

    /// Passes a request to the upstream uncached (a method the cache does not answer, or a
    /// bypass rule: `why`) and applies RFC 9111 4.4 invalidation on success.
    async fn pass(
        &self,
        upstream: &Arc<dyn Upstream>,
        lookup: &Lookup<'_>,
        origin_req: http::request::Parts,
        req_body: Body,
        why: &'static str,
    ) -> Served {
        let method = origin_req.method.clone();
        let response = match upstream
            .fetch(Request::from_parts(
                origin_req,
                crate::origin::client_body(req_body),
            ))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                match e.is_origin_fault() {
                    true => {
                        tracing::warn!(host = %lookup.host, path = %lookup.path_and_query, error = %e, "origin request failed")
                    }
                    false => {
                        tracing::debug!(host = %lookup.host, path = %lookup.path_and_query, error = %e, "request failed")
                    }
                }
                return cache::error_response(e.status(), &e.to_string());
            }
        };
        let mut status = CacheStatus {
            outcome: Some(Outcome::Bypass),
            fwd_status: Some(response.status()),
            detail: Some(why),
            ..CacheStatus::default()
        };
        if cache::policy::invalidates(&method, response.status()) {
            let mut removed = self.cache.invalidate(lookup, lookup.path_and_query).await;
            for target in cache::policy::invalidation_targets(response.headers(), lookup.host) {
                removed += self.cache.invalidate(lookup, &target).await;
            }
            if removed > 0 {
                status.detail = Some("invalidated");
            }
        }
        Served { response, status }
    }

    /// What the health endpoints answer: 503 while draining, else 200 with what is degraded.
    pub fn health_report(&self) -> (StatusCode, String) {
        self.health.report()
    }

    /// `source` reports what is degraded (`None`: nothing any more), a line of the health
    /// report.
    pub(crate) fn set_degraded(&self, source: &'static str, note: Option<String>) {
        self.health.set_degraded(source, note);
    }

    /// Adds the edge's own headers to whatever answered the request.
    fn finish(
        &self,
        state: &State,
        info: &RequestInfo<'_>,
        site: Option<&Site>,
        served: &mut Served,
    ) {
        let response = &mut served.response;
        headers::strip_hop_by_hop(response.headers_mut());
        if !site.is_some_and(|s| s.keep_surrogate_keys) {
            // They are for the edge's purges, not for clients (Fastly's and Cloudflare's rule).
            cache::purge::strip_surrogate_keys(response.headers_mut());
        }
        let entry = served.status.render(&self.settings.name);
        if let Ok(v) = HeaderValue::from_str(&entry) {
            response
                .headers_mut()
                .append(HeaderName::from_static("cache-status"), v);
        }
        state.chain.on_response(info, site, response);
        // The owning peer has the same sites and applied their response rules already (an
        // `add` would add twice).
        if let Some(site) = site
            && served.status.detail != Some(PEER_DETAIL)
        {
            site.filters.on_response(info, Some(site), response);
        }
        if info.parts.method == Method::HEAD {
            // A HEAD answer never has a body (hyper's HTTP/2 would reset the stream).
            *response.body_mut() = body::empty();
        }
    }
}

/// The edge's own filters, in order: health first (a probe needs nothing else), then the
/// request checks, then the headers of both sides, then the access log.
fn global_filters(
    settings: &ServiceSettings,
    health: &Arc<HealthState>,
    control: &Arc<filter::ControlSlot>,
) -> Vec<Arc<dyn Filter>> {
    let mut filters: Vec<Arc<dyn Filter>> = vec![
        Arc::new(filter::Health {
            path: settings.health_path.clone(),
            state: health.clone(),
        }),
        Arc::new(filter::TargetCheck),
        Arc::new(filter::ConnectRefused),
        Arc::new(filter::LoopDetect {
            name: settings.name.clone(),
        }),
        // Before anything that could send the request on: a PURGE never reaches an origin.
        Arc::new(filter::PurgeMethod {
            allow_from: settings.purge_allow_from.clone(),
            limit: settings.admin_limit.clone(),
            control: control.clone(),
        }),
        Arc::new(filter::Forwarded::new(&settings.name)),
        Arc::new(filter::RestoreCacheControl),
    ];
    if let Some(value) = &settings.alt_svc {
        filters.push(Arc::new(filter::AltSvc {
            value: value.clone(),
        }));
    }
    if settings.access_log {
        filters.push(Arc::new(filter::AccessLog));
    }
    filters
}

/// Detail of the `Cache-Status` entry of a request another cluster node answered.
const PEER_DETAIL: &str = "cluster-peer";

/// Sends a GET or HEAD on to the cluster peer that owns its object and answers with what it
/// said; `None` when the peer failed (the caller serves the request itself). The body is
/// not sent: the cache ignores a GET's body, so the owner would too.
async fn to_peer(cluster: &Cluster, peer: usize, parts: http::request::Parts) -> Option<Served> {
    let response = cluster
        .forward(peer, Request::from_parts(parts, body::empty()))
        .await
        .ok()?;
    let status = CacheStatus {
        // RFC 9211: this cache was configured not to handle the request; its owner did.
        outcome: Some(Outcome::Bypass),
        fwd_status: Some(response.status()),
        detail: Some(PEER_DETAIL),
        ..CacheStatus::default()
    };
    Some(Served { response, status })
}

/// The request for the site's upstream: the client's, minus what is only for this hop, with
/// the normalised target (its path and query as the URI, the host it was routed and keyed by
/// as `Host`, never a second one the client sent), then whatever the filters'
/// `upstream_request` phase adds. The upstream maps it onto its origin
/// ([`crate::upstream::OriginUpstream`]).
fn origin_parts(
    state: &State,
    info: &RequestInfo<'_>,
    site: &Site,
    host: &str,
    target: http::Uri,
) -> http::request::Parts {
    let parts = info.parts;
    let mut headers = parts.headers.clone();
    headers::strip_hop_by_hop(&mut headers);
    // The edge answers 100-continue itself; the origin client does not speak it.
    headers.remove(header::EXPECT);
    headers.remove(header::HOST);
    if let Some(v) = headers::host_value(host) {
        headers.insert(header::HOST, v);
    }
    let (mut out, ()) = Request::new(()).into_parts();
    // Who the fetch is for: a site's miss limits count it against them.
    out.extensions.insert(crate::rules::limit::ClientOf {
        ip: info.ctx.peer.ip(),
        rule: info.site_rule(),
    });
    out.method = parts.method.clone();
    out.uri = target;
    out.version = Version::HTTP_11;
    out.headers = headers;
    state.chain.upstream_request(info, site, &mut out);
    site.filters.upstream_request(info, site, &mut out);
    out
}

/// The per-request metrics and the logging phase, run when the response body ends or is
/// dropped (client gone). Holds the request's state, so the request ends on the state it
/// started with.
struct AccessRecord {
    ctx: RequestCtx,
    method: Method,
    host: String,
    path: String,
    status: StatusCode,
    outcome: Outcome,
    bytes: u64,
    complete: bool,
    metrics: Arc<Metrics>,
    state: Arc<State>,
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        self.metrics
            .count_response(self.ctx.protocol, self.outcome, self.status, self.bytes);
        self.state.chain.logging(&LogRecord {
            ctx: &self.ctx,
            method: &self.method,
            host: &self.host,
            path: &self.path,
            status: self.status,
            outcome: self.outcome,
            bytes: self.bytes,
            complete: self.complete,
        });
    }
}
