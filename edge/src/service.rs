//! The protocol-neutral request core: every front-end (HTTP/1.1, HTTP/2, HTTP/3) converts its
//! request to `http::Request<Body>`, calls [`Service::handle`], and sends back what it returns.
//!
//! Here a request is routed to its site, checked (host known, no proxy loop, sane target),
//! turned into the origin request (hop-by-hop headers out, `Via` and `X-Forwarded-*` in), and
//! answered by the cache (GET/HEAD) or passed to the origin (everything else, with cache
//! invalidation for unsafe methods). The response gets `Cache-Status` and `Via`, and its body is
//! wrapped so the access-log line and byte metrics are written when the last byte leaves.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};

use crate::body::{self, Body, BoxError};
use crate::cache::budget::{ReadBudget, TotalBudget};
use crate::cache::{self, Cache, Lookup, Served, Upstream};
use crate::config::SchemePolicy;
use crate::headers::{self, CacheStatus, Outcome};
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginError};
use crate::sites::{Site, Sites};
use crate::target;

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
}

/// The edge's request core.
pub struct Service {
    settings: ServiceSettings,
    sites: Sites,
    cache: Cache,
    upstream: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    body_memory: TotalBudget,
    /// This node's `Via` entry per response version, built once rather than per response.
    via: Vec<(Version, HeaderValue)>,
}

impl Service {
    pub fn new(
        settings: ServiceSettings,
        sites: Sites,
        cache: Cache,
        origin: OriginClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        let upstream = Arc::new(OriginUpstream {
            client: origin,
            metrics: metrics.clone(),
        });
        let via = [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ]
        .into_iter()
        .filter_map(|v| Some((v, headers::via_value(v, &settings.name)?)))
        .collect();
        Self {
            via,
            body_memory: TotalBudget::new(settings.body_memory_total),
            settings,
            sites,
            cache,
            upstream,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The budget of one more connection's responses (a front-end calls it per connection).
    pub fn connection_budget(&self) -> ReadBudget {
        self.body_memory
            .connection(self.settings.body_memory_per_connection)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Marks the edge as shutting down: the health endpoint answers 503 so that health
    /// checkers send clients elsewhere while in-flight requests finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Answers one request. Never fails: every problem becomes a response with a clear status.
    pub async fn handle(&self, ctx: RequestCtx, req: Request<Body>) -> Response<Body> {
        let (parts, req_body) = req.into_parts();
        let raw_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let target = target::host(&parts).and_then(|host| {
            let path = target::path_and_query(raw_target)?;
            Ok((host, path))
        });
        let mut served = match &target {
            Ok((host, path)) => self.route(&ctx, &parts, host, path, req_body).await,
            // A health probe needs no host.
            Err(_) if parts.uri.path() == self.settings.health_path => self.health(),
            Err(e) => cache::error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        self.finish(ctx.protocol, &parts, &mut served);
        let complete = http_body::Body::is_end_stream(served.response.body());
        let access_log = self.settings.access_log;
        let record = AccessRecord {
            ctx,
            method: parts.method,
            // Only the access log reads these: no allocations for them when it is off.
            host: match (access_log, &target) {
                (true, Ok((host, _))) => host.clone(),
                _ => String::new(),
            },
            path: match access_log {
                true => raw_target.to_owned(),
                false => String::new(),
            },
            status: served.response.status(),
            outcome: served.status.outcome.unwrap_or(Outcome::Synthetic),
            bytes: 0,
            // An empty body may never be polled; it is complete from the start.
            complete,
            metrics: self.metrics.clone(),
            access_log,
        };
        served.response.map(|body| {
            body::boxed(Observed {
                inner: body,
                record,
            })
        })
    }

    /// `host` and `path_and_query` are the normalised target ([`target`]): the routing, the
    /// cache key and the origin request all come from them.
    async fn route(
        &self,
        ctx: &RequestCtx,
        parts: &http::request::Parts,
        host: &str,
        path_and_query: &str,
        req_body: Body,
    ) -> Served {
        if parts.uri.path() == self.settings.health_path {
            return self.health();
        }
        let Some(site) = self.sites.find(host) else {
            return cache::error_response(
                StatusCode::MISDIRECTED_REQUEST,
                &format!("no site is configured for host {host:?}"),
            );
        };
        if parts.method == Method::CONNECT {
            return cache::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this is a reverse proxy",
            );
        }
        if headers::via_contains(&parts.headers, &self.settings.name) {
            return cache::error_response(
                StatusCode::LOOP_DETECTED,
                "request loop: this edge already appears in Via",
            );
        }
        let uri = match site.origin.join(path_and_query) {
            Ok(uri) => uri,
            Err(e) => {
                return cache::error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot map the request to the origin: {e}"),
                );
            }
        };
        let scheme = match site.scheme {
            SchemePolicy::Key => Some(if ctx.secure { "https" } else { "http" }),
            SchemePolicy::Shared => None,
        };
        // Built only if the origin is needed: most requests are hits.
        let origin_req = || self.origin_parts(ctx, site, host, parts, uri.clone());
        let lookup = Lookup {
            method: &parts.method,
            headers: &parts.headers,
            scheme,
            host,
            path_and_query,
            budget: &ctx.budget,
        };
        if cache::policy::cacheable_method(&parts.method) {
            self.cache
                .serve(&lookup, &origin_req, self.upstream.clone())
                .await
        } else {
            // Boxed: keeps the origin client's state out of every cache hit's future.
            Box::pin(self.forward(&lookup, origin_req(), req_body)).await
        }
    }

    /// Passes a request with a body (or any non-GET/HEAD) to the origin and applies RFC 9111
    /// 4.4 invalidation on success.
    async fn forward(
        &self,
        lookup: &Lookup<'_>,
        origin_req: http::request::Parts,
        req_body: Body,
    ) -> Served {
        let method = origin_req.method.clone();
        let response = match self
            .upstream
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
            detail: Some("method"),
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

    fn origin_parts(
        &self,
        ctx: &RequestCtx,
        site: &Site,
        host: &str,
        parts: &http::request::Parts,
        uri: http::Uri,
    ) -> http::request::Parts {
        let mut headers = parts.headers.clone();
        headers::strip_hop_by_hop(&mut headers);
        // The edge answers 100-continue itself; the origin client does not speak it.
        headers.remove(header::EXPECT);
        // The origin sees exactly the host the request was routed and keyed by: never the
        // client's Host header, which may differ from the authority that was used.
        let host_value = match site.forward_host {
            true => HeaderValue::from_str(host),
            false => HeaderValue::from_str(site.origin.authority.as_str()),
        };
        headers.remove(header::HOST);
        if let Ok(v) = host_value {
            headers.insert(header::HOST, v);
        }
        headers::append_via(&mut headers, parts.version, &self.settings.name);
        let proto = match site.scheme {
            SchemePolicy::Key => Some(if ctx.secure { "https" } else { "http" }),
            SchemePolicy::Shared => None,
        };
        headers::add_forwarded(&mut headers, ctx.peer.ip(), proto, host);
        let (mut out, ()) = Request::new(()).into_parts();
        out.method = parts.method.clone();
        out.uri = uri;
        out.version = Version::HTTP_11;
        out.headers = headers;
        out
    }

    fn health(&self) -> Served {
        let (status, text) = self.health_report();
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Served {
            response,
            status: CacheStatus {
                outcome: Some(Outcome::Synthetic),
                detail: Some("health"),
                ..CacheStatus::default()
            },
        }
    }

    /// What the health endpoints answer: 503 while draining, else 200 with what is degraded.
    pub fn health_report(&self) -> (StatusCode, String) {
        match (self.is_draining(), self.cache.store().write_failure()) {
            (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned()),
            // Still 200: every request is served (misses pass through uncached), so health
            // checkers keep sending clients; the body and the metrics say what is wrong.
            (false, Some(failure)) => (
                StatusCode::OK,
                format!(
                    "ok\ndegraded: cache store not writable ({}, {} s ago); misses are served uncached\n",
                    failure.error,
                    failure.ago.as_secs()
                ),
            ),
            (false, None) => (StatusCode::OK, "ok\n".to_owned()),
        }
    }

    /// Adds the edge's own headers to whatever answered the request.
    fn finish(&self, protocol: Protocol, parts: &http::request::Parts, served: &mut Served) {
        let response = &mut served.response;
        let version = response.version();
        let h = response.headers_mut();
        headers::strip_hop_by_hop(h);
        if let Some((_, via)) = self.via.iter().find(|(v, _)| *v == version) {
            h.append(header::VIA, via.clone());
        }
        let entry = served.status.render(&self.settings.name);
        if let Ok(v) = HeaderValue::from_str(&entry) {
            h.append(HeaderName::from_static("cache-status"), v);
        }
        if let Some(alt_svc) = &self.settings.alt_svc
            && protocol != Protocol::H3
        {
            h.insert(header::ALT_SVC, alt_svc.clone());
        }
        if parts.method == Method::HEAD {
            // A HEAD answer never has a body (hyper's HTTP/2 would reset the stream).
            *response.body_mut() = body::empty();
        }
    }
}

/// The origin client as the cache's upstream, with origin metrics.
struct OriginUpstream {
    client: OriginClient,
    metrics: Arc<Metrics>,
}

impl Upstream for OriginUpstream {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let start = Instant::now();
            match client.send(req).await {
                Ok(response) => {
                    metrics
                        .origin_latency
                        .observe(start.elapsed().as_secs_f64());
                    let counter = metrics.origin_bytes.clone();
                    Ok(response.map(|b| body::boxed(Counted { inner: b, counter })))
                }
                Err(e) => {
                    if e.is_origin_fault() {
                        metrics.origin_errors.inc();
                    }
                    Err(e)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// Counts data bytes into a Prometheus counter as they pass.
    struct Counted {
        #[pin]
        inner: Body,
        counter: prometheus_client::metrics::counter::Counter,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One access-log line and the per-request metrics, written when the response body ends or
/// is dropped (client gone).
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
    access_log: bool,
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let protocol = self.ctx.protocol.as_str();
        self.metrics
            .count_response(self.ctx.protocol, self.outcome, self.status, self.bytes);
        if self.access_log {
            tracing::info!(
                target: "access",
                method = %self.method,
                host = %self.host,
                path = %self.path,
                status = self.status.as_u16(),
                bytes = self.bytes,
                cache = self.outcome.as_str(),
                protocol,
                duration_ms = self.ctx.start.elapsed().as_secs_f64() * 1000.0,
                peer = %self.ctx.peer,
                complete = self.complete,
            );
        }
    }
}

pin_project_lite::pin_project! {
    struct Observed {
        #[pin]
        inner: Body,
        record: AccessRecord,
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.record.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
