//! The HTTP cache: lookup, freshness, revalidation, coalesced fills and serving from store.
//!
//! [`Cache::serve`] takes a GET or HEAD (the service passes every other method straight to the
//! origin) and answers it from the store when policy allows, otherwise through a *flight*: one
//! origin request per key, shared by every request that arrives while it is under way.
//!
//! - [`policy`]: pure RFC 9111 rules.
//! - [`store`]: bytes on disk and in memory.
//! - [`fill`]: one origin body streamed to many readers while it is stored.

pub mod fill;
pub mod key;
pub mod meta;
pub mod policy;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;

use self::fill::{Fill, FillLimits};
use self::meta::{FORMAT_VERSION, Meta};
use self::policy::{Conditional, Freshness, NotStorable, PolicyConfig, Vary};
use self::store::Store;
use crate::body::{self, Body};
use crate::headers::{CacheStatus, Outcome};
use crate::origin::OriginError;

/// Where cache misses go. The service implements it over the origin client; tests may fake it.
pub trait Upstream: Send + Sync + 'static {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>>;
}

/// Sizes and knobs of the cache, from config.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub chunk_size: usize,
    pub max_object_size: u64,
    pub memory_object_max: u64,
    pub pass_memory: Duration,
}

/// The client request as the cache sees it.
pub struct Lookup<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub host: &'a str,
    pub path_and_query: &'a str,
}

/// A response and what the cache did to produce it.
pub struct Served {
    pub response: Response<Body>,
    pub status: CacheStatus,
}

/// Counters the cache keeps (shared with the metrics registry).
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    pub coalesced_waits: Counter,
    pub origin_fetches: Counter,
    pub fills_failed: Counter,
}

/// The cache. Cheap to share: everything inside is behind `Arc`s.
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    policy: PolicyConfig,
    limits: CacheLimits,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// Primary keys whose last response was not storable (hit-for-pass).
    passes: moka::sync::Cache<String, ()>,
    pass_seq: std::sync::atomic::AtomicU64,
    counters: CacheCounters,
}

/// The outcome of one origin request, shared with every request that waited for it.
#[derive(Clone)]
enum Landed {
    /// A storable response whose body is being filled into the store.
    Fill { fill: Arc<Fill>, head: Arc<Meta> },
    /// The origin said 304: the stored entry's head was refreshed.
    Refreshed(Arc<Meta>),
    /// Not storable: only the request that started the flight has the body.
    Pass { status: StatusCode },
    /// The origin could not be reached or failed before a response head.
    Failed {
        status: StatusCode,
        message: Arc<str>,
    },
}

struct Flight {
    landed: tokio::sync::watch::Receiver<Option<Landed>>,
}

impl Cache {
    pub fn new(
        store: Arc<Store>,
        policy: PolicyConfig,
        limits: CacheLimits,
        counters: CacheCounters,
    ) -> Self {
        let passes = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(limits.pass_memory)
            .build();
        Self {
            inner: Arc::new(Inner {
                store,
                policy,
                limits,
                flights: Mutex::default(),
                passes,
                pass_seq: Default::default(),
                counters,
            }),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    pub fn counters(&self) -> &CacheCounters {
        &self.inner.counters
    }

    /// Answers a GET or HEAD. `origin_req` is the request to send to the origin on a miss
    /// (absolute URI, proxy headers already applied); the cache adjusts its conditionals.
    pub async fn serve(
        &self,
        lookup: &Lookup<'_>,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
    ) -> Served {
        let inner = &self.inner;
        let primary = key::primary(lookup.host, lookup.path_and_query);
        // A corrupt entry is dropped by `serve_stored`, which then yields `None`; the second
        // pass finds no entry and fetches. Two passes always suffice.
        for _ in 0..2 {
            let found = inner.find(&primary, lookup.headers);
            if lookup.headers.contains_key(header::RANGE) {
                // Ranges are answered from fresh full entries; otherwise the origin answers
                // them and nothing is stored (sliced range caching is its own layer).
                if let Some((_, meta)) = &found
                    && let Freshness::Fresh { ttl } = inner.freshness(lookup.headers, meta)
                {
                    match inner
                        .serve_stored(lookup, meta.clone(), Outcome::Hit, Some(ttl))
                        .await
                    {
                        Some(served) => return served,
                        None => continue,
                    }
                }
                return inner.pass(origin_req, upstream, "range").await;
            }
            let Some((variant, meta)) = found else {
                return inner.miss(lookup, &primary, origin_req, upstream).await;
            };
            let served = match inner.freshness(lookup.headers, &meta) {
                Freshness::Fresh { ttl } => {
                    inner
                        .serve_stored(lookup, meta, Outcome::Hit, Some(ttl))
                        .await
                }
                Freshness::Stale {
                    while_revalidate: true,
                    staleness,
                    ..
                } => {
                    let served = inner
                        .serve_stored(lookup, meta.clone(), Outcome::StaleHit, None)
                        .await;
                    served.map(|mut served| {
                        inner.revalidate_in_background(&variant, &origin_req, &upstream, meta);
                        served.status.ttl = Some(-(staleness.as_secs() as i64));
                        served.status.detail = Some("stale-while-revalidate");
                        served
                    })
                }
                Freshness::Stale { .. } => {
                    let outcome = if request_forces_validation(lookup.headers) {
                        Outcome::Request
                    } else {
                        Outcome::Stale
                    };
                    let flight = FlightSpec {
                        key: variant,
                        stale: Some(meta),
                        outcome,
                    };
                    return inner
                        .clone()
                        .fetch(lookup, flight, origin_req, upstream)
                        .await;
                }
            };
            if let Some(served) = served {
                return served;
            }
        }
        error_response(StatusCode::BAD_GATEWAY, "cache entry unusable").into_bypass()
    }

    /// Drops every stored variant of a resource (RFC 9111 4.4); returns how many.
    pub async fn invalidate(&self, host: &str, path_and_query: &str) -> usize {
        let primary = key::primary(host, path_and_query);
        self.inner.passes.invalidate(&primary);
        self.inner.store.remove_primary(&primary).await
    }
}

/// Which flight a request joins and why.
struct FlightSpec {
    key: String,
    stale: Option<Arc<Meta>>,
    outcome: Outcome,
}

impl Inner {
    /// No stored variant matches: fetch, coalesced with concurrent misses for the resource,
    /// unless it recently proved not storable (then each request goes alone).
    async fn miss(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        primary: &str,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
    ) -> Served {
        let vary_miss = !self.store.variants(primary).is_empty();
        let outcome = if vary_miss {
            Outcome::VaryMiss
        } else {
            Outcome::UriMiss
        };
        let hit_for_pass = self.passes.contains_key(primary);
        let key = if hit_for_pass {
            // A key no other request shares: no coalescing, but still stored if it has
            // become storable.
            let n = self
                .pass_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{primary}\0\0pass-{n}")
        } else {
            match self
                .store
                .variants(primary)
                .first()
                .and_then(|v| self.store.get(v))
            {
                // Coalesce on the variant this request would get under the stored Vary.
                Some(existing) => self.variant_for(lookup, &existing),
                None => key::variant(primary, ""),
            }
        };
        let flight = FlightSpec {
            key,
            stale: None,
            outcome,
        };
        let mut served = self
            .clone()
            .fetch(lookup, flight, origin_req, upstream)
            .await;
        if hit_for_pass && served.status.detail.is_none() {
            served.status.detail = Some("hit-for-pass");
        }
        served
    }

    /// The stored variant matching the request's Vary values.
    fn find(&self, primary: &str, req: &HeaderMap) -> Option<(String, Arc<Meta>)> {
        for variant in self.store.variants(primary) {
            let Some(meta) = self.store.get(&variant) else {
                continue;
            };
            let wanted = match policy::vary(&meta.header_map()) {
                Vary::Fields(fields) => key::variant(primary, &policy::vary_key(&fields, req)),
                Vary::None => key::variant(primary, ""),
                Vary::Star => continue,
            };
            if wanted == variant {
                return Some((variant, meta));
            }
        }
        None
    }

    fn freshness(&self, req: &HeaderMap, meta: &Meta) -> Freshness {
        policy::freshness(
            req,
            &meta.header_map(),
            meta.status(),
            meta.request_time(),
            meta.response_time(),
            SystemTime::now(),
            &self.policy,
        )
    }

    /// Sends the request through an existing flight for `key`, or starts one. `stale` is the
    /// stored entry being revalidated, if any.
    async fn fetch(
        self: Arc<Self>,
        lookup: &Lookup<'_>,
        flight: FlightSpec,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
    ) -> Served {
        let FlightSpec {
            key,
            stale,
            outcome,
        } = flight;
        let (mut landed, leader) = self.join_or_start(&key, &origin_req, &upstream, stale.clone());
        let collapsed = leader.is_none();
        if collapsed {
            self.counters.coalesced_waits.inc();
        }
        let result = loop {
            if let Some(result) = landed.borrow_and_update().clone() {
                break result;
            }
            if landed.changed().await.is_err() {
                break Landed::Failed {
                    status: StatusCode::BAD_GATEWAY,
                    message: "origin fetch abandoned".into(),
                };
            }
        };
        let mut served = match result {
            Landed::Fill { fill, head } => {
                let own = self.variant_for(lookup, &head);
                if own != head.key {
                    // The response varies on a header this request has a different value
                    // of: it needs its own variant, through its own flight.
                    let flight = FlightSpec {
                        key: own,
                        stale: None,
                        outcome: Outcome::VaryMiss,
                    };
                    return Box::pin(self.fetch(lookup, flight, origin_req, upstream)).await;
                }
                let mut served = self.serve_fill(lookup, &fill, &head);
                served.status.stored = true;
                served.status.fwd_status = Some(head.status());
                served
            }
            Landed::Refreshed(meta) => {
                let ttl = match self.freshness(lookup.headers, &meta) {
                    Freshness::Fresh { ttl } => Some(ttl),
                    Freshness::Stale { .. } => None,
                };
                let Some(mut served) = self.serve_stored(lookup, meta, outcome, ttl).await else {
                    return self.pass(origin_req, upstream, "corrupt-entry").await;
                };
                served.status.fwd_status = Some(StatusCode::NOT_MODIFIED);
                served
            }
            Landed::Pass { status } => {
                let leader_response = match leader {
                    Some(rx) => rx.await.ok(),
                    None => None,
                };
                if status.is_server_error()
                    && let Some(served) = self.stale_if_error(lookup, &stale, status).await
                {
                    return served;
                }
                match leader_response {
                    Some(response) => Served {
                        response,
                        status: CacheStatus {
                            fwd_status: Some(status),
                            ..CacheStatus::default()
                        },
                    },
                    // Waiters of a non-storable response each ask the origin themselves.
                    None => return self.pass(origin_req, upstream, "collapsed-pass").await,
                }
            }
            Landed::Failed { status, message } => {
                if let Some(served) = self.stale_if_error(lookup, &stale, status).await {
                    return served;
                }
                error_response(status, &message)
            }
        };
        served.status.outcome = Some(outcome);
        served.status.collapsed = collapsed;
        served
    }

    /// Joins the flight for `key`, or starts one. The starter also gets a channel on which a
    /// non-storable response (which only it can use) is handed over.
    #[allow(clippy::type_complexity)]
    fn join_or_start(
        self: &Arc<Self>,
        key: &str,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Option<Arc<Meta>>,
    ) -> (
        tokio::sync::watch::Receiver<Option<Landed>>,
        Option<tokio::sync::oneshot::Receiver<Response<Body>>>,
    ) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(key) {
            return (flight.landed.clone(), None);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let (pass_tx, pass_rx) = tokio::sync::oneshot::channel();
        flights.insert(key.to_owned(), Arc::new(Flight { landed: rx.clone() }));
        drop(flights);
        let req = fill_request(origin_req, stale.as_deref());
        let this = self.clone();
        let key = key.to_owned();
        let upstream = upstream.clone();
        // Spawned so that the fetch outlives the request that started it (a client abort must
        // not strand the requests waiting on this flight).
        tokio::spawn(async move {
            this.fly(&key, req, upstream, stale, tx, pass_tx).await;
            this.flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        (rx, Some(pass_rx))
    }

    /// The flight itself: one origin request, its outcome published to every waiter, and a
    /// fill run to completion when the response is storable.
    async fn fly(
        self: &Arc<Self>,
        key: &str,
        req: Request<Body>,
        upstream: Arc<dyn Upstream>,
        stale: Option<Arc<Meta>>,
        landed: tokio::sync::watch::Sender<Option<Landed>>,
        pass_tx: tokio::sync::oneshot::Sender<Response<Body>>,
    ) {
        let request_time = SystemTime::now();
        let method = Method::GET;
        let req_headers = req.headers().clone();
        self.counters.origin_fetches.inc();
        let response = match upstream.fetch(req).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(key = %key.replace('\0', " "), error = %e, "origin fetch failed");
                let _ = landed.send(Some(Landed::Failed {
                    status: e.status(),
                    message: e.to_string().into(),
                }));
                return;
            }
        };
        let response_time = SystemTime::now();
        let (mut parts, body) = response.into_parts();
        crate::headers::strip_hop_by_hop(&mut parts.headers);
        ensure_date(&mut parts.headers, response_time);

        if parts.status == StatusCode::NOT_MODIFIED
            && let Some(stale) =
                stale.filter(|s| policy::not_modified_matches(&s.header_map(), &parts.headers))
        {
            let result = self
                .refresh(&stale, &parts.headers, request_time, response_time)
                .await;
            let _ = landed.send(Some(result));
            return;
        }
        let primary = key::primary_of(key).to_owned();
        let verdict = storable(&method, &req_headers, parts.status, &parts.headers)
            .and_then(|()| self.within_size(&parts.headers));
        match verdict {
            Ok(()) => {
                self.passes.invalidate(&primary);
                let variant = match policy::vary(&parts.headers) {
                    Vary::Fields(fields) => {
                        key::variant(&primary, &policy::vary_key(&fields, &req_headers))
                    }
                    _ => key::variant(&primary, ""),
                };
                let announced = content_length(&parts.headers);
                let head = Meta {
                    format: FORMAT_VERSION,
                    key: variant,
                    status: parts.status.as_u16(),
                    headers: meta::encode_headers(&parts.headers),
                    request_time: meta::millis(request_time),
                    response_time: meta::millis(response_time),
                    body_len: announced.unwrap_or(0),
                    chunks: Vec::new(),
                    vary: Vec::new(),
                };
                let fill = Fill::new(self.store.clone());
                let limits = FillLimits {
                    chunk_size: self.limits.chunk_size,
                    max_object_size: self.limits.max_object_size,
                    keep_hot: announced.is_some_and(|n| n <= self.limits.memory_object_max),
                };
                let head = Arc::new(head);
                let _ = landed.send(Some(Landed::Fill {
                    fill: fill.clone(),
                    head: head.clone(),
                }));
                let body = body::boxed(body);
                if let Err(e) = fill.run(body, announced, (*head).clone(), limits).await {
                    self.counters.fills_failed.inc();
                    tracing::warn!(key = %key.replace('\0', " "), error = %e, "cache fill failed; nothing stored");
                }
            }
            Err(reason) => {
                if !parts.status.is_server_error() && reason != NotStorable::Status {
                    self.passes.insert(primary, ());
                }
                tracing::debug!(key = %key.replace('\0', " "), reason = reason.as_str(), "not storable");
                let _ = landed.send(Some(Landed::Pass {
                    status: parts.status,
                }));
                let _ = pass_tx.send(Response::from_parts(parts, body::boxed(body)));
            }
        }
    }

    async fn refresh(
        &self,
        stale: &Meta,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Landed {
        let merged = policy::merge_not_modified(&stale.header_map(), not_modified);
        let mut meta = stale.clone();
        meta.set_headers(&merged);
        meta.request_time = meta::millis(request_time);
        meta.response_time = meta::millis(response_time);
        match self.store.update_meta(meta.clone()).await {
            Ok(updated) => Landed::Refreshed(updated),
            // The entry was evicted meanwhile: still answer from the refreshed head.
            Err(_) => Landed::Refreshed(Arc::new(meta)),
        }
    }

    fn within_size(&self, headers: &HeaderMap) -> Result<(), NotStorable> {
        match content_length(headers) {
            Some(n) if n > self.limits.max_object_size => Err(NotStorable::Status),
            _ => Ok(()),
        }
    }

    fn variant_for(&self, lookup: &Lookup<'_>, head: &Meta) -> String {
        let primary = key::primary(lookup.host, lookup.path_and_query);
        match policy::vary(&head.header_map()) {
            Vary::Fields(fields) => {
                key::variant(&primary, &policy::vary_key(&fields, lookup.headers))
            }
            _ => key::variant(&primary, ""),
        }
    }

    fn revalidate_in_background(
        self: &Arc<Self>,
        key: &str,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Arc<Meta>,
    ) {
        // Starting (or joining) the flight is enough: it runs to completion on its own.
        let _ = self.join_or_start(key, origin_req, upstream, Some(stale));
    }

    /// Serves a stale entry because the origin failed, when stale-if-error allows it.
    async fn stale_if_error(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        stale: &Option<Arc<Meta>>,
        status: StatusCode,
    ) -> Option<Served> {
        let meta = stale.clone()?;
        let allowed = matches!(
            self.freshness(lookup.headers, &meta),
            Freshness::Stale { if_error: true, .. }
        );
        if !allowed {
            return None;
        }
        let staleness = match self.freshness(&HeaderMap::new(), &meta) {
            Freshness::Stale { staleness, .. } => staleness,
            Freshness::Fresh { .. } => Duration::ZERO,
        };
        let mut served = self
            .serve_stored(lookup, meta, Outcome::Stale, None)
            .await?;
        served.status.fwd_status = Some(status);
        served.status.ttl = Some(-(staleness.as_secs() as i64));
        served.status.detail = Some("stale-if-error");
        Some(served)
    }

    /// Forwards a request without coalescing; the response is stored if storable.
    async fn pass(
        self: &Arc<Self>,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
        detail: &'static str,
    ) -> Served {
        let req = if detail == "range" {
            Request::from_parts(origin_req, body::empty())
        } else {
            fill_request(&origin_req, None)
        };
        let result = upstream.fetch(req).await;
        self.counters.origin_fetches.inc();
        match result {
            Ok(mut response) => {
                crate::headers::strip_hop_by_hop(response.headers_mut());
                let status = CacheStatus {
                    outcome: Some(Outcome::Bypass),
                    fwd_status: Some(response.status()),
                    detail: Some(detail),
                    ..CacheStatus::default()
                };
                Served { response, status }
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin fetch failed");
                let mut served = error_response(e.status(), &e.to_string());
                served.status.outcome = Some(Outcome::Bypass);
                served
            }
        }
    }

    /// Answers from a stored entry: a 304 when the client's conditional matches, else the
    /// body read chunk by chunk with every chunk verified. The first chunk is read before the
    /// head is sent, so a corrupt small entry becomes a miss instead of a broken response.
    async fn serve_stored(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        meta: Arc<Meta>,
        outcome: Outcome,
        ttl: Option<Duration>,
    ) -> Option<Served> {
        let mut status = CacheStatus {
            outcome: Some(outcome),
            ttl: ttl.map(|t| t.as_secs() as i64),
            ..CacheStatus::default()
        };
        let stored_headers = meta.header_map();
        let age = policy::current_age(
            &stored_headers,
            meta.request_time(),
            meta.response_time(),
            SystemTime::now(),
        );
        if policy::evaluate_conditional(lookup.method, lookup.headers, &stored_headers)
            == Conditional::NotModified
        {
            status.detail = Some("not-modified");
            let response = not_modified(&stored_headers, age);
            return Some(Served { response, status });
        }
        let keep_hot = meta.body_len <= self.limits.memory_object_max;
        let body = if *lookup.method == Method::HEAD || meta.chunks.is_empty() {
            body::empty()
        } else {
            let first = match self.store.read_chunk(&meta.chunks[0], keep_hot).await {
                Ok(first) => first,
                Err(e) => {
                    tracing::error!(key = %meta.key.replace('\0', " "), error = %e, "corrupt cache entry removed");
                    self.store
                        .drop_corrupt(&meta.key, &meta.chunks[0].sri)
                        .await;
                    return None;
                }
            };
            chunk_body(self.store.clone(), meta.clone(), first, keep_hot)
        };
        let mut response = Response::new(body);
        *response.status_mut() = meta.status();
        *response.headers_mut() = stored_headers;
        set_age(response.headers_mut(), age);
        set_length(response.headers_mut(), meta.body_len);
        Some(Served { response, status })
    }

    /// Answers from a fill under way.
    fn serve_fill(self: &Arc<Self>, lookup: &Lookup<'_>, fill: &Arc<Fill>, head: &Meta) -> Served {
        let headers = head.header_map();
        let (lifetime, _) =
            policy::freshness_lifetime(head.status(), &headers, head.response_time(), &self.policy);
        let age = policy::current_age(
            &headers,
            head.request_time(),
            head.response_time(),
            SystemTime::now(),
        );
        let status = CacheStatus {
            ttl: Some(lifetime.as_secs() as i64 - age.as_secs() as i64),
            ..CacheStatus::default()
        };
        if policy::evaluate_conditional(lookup.method, lookup.headers, &headers)
            == Conditional::NotModified
        {
            return Served {
                response: not_modified(&headers, age),
                status,
            };
        }
        let body = if *lookup.method == Method::HEAD {
            body::empty()
        } else {
            fill.reader()
        };
        let mut response = Response::new(body);
        *response.status_mut() = head.status();
        *response.headers_mut() = headers;
        set_age(response.headers_mut(), age);
        Served { response, status }
    }
}

/// RFC 9111 3 plus one rule of our own: a response that sets a cookie is stored only when the
/// origin explicitly marked it shareable (`public` or `s-maxage`), as Varnish does by default.
fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
) -> Result<(), NotStorable> {
    policy::storable(method, req, status, resp)?;
    if resp.contains_key(header::SET_COOKIE) {
        let cc = policy::CacheControl::parse(resp);
        if !cc.public && cc.s_maxage.is_none() {
            return Err(NotStorable::Private);
        }
    }
    Ok(())
}

fn request_forces_validation(req: &HeaderMap) -> bool {
    let cc = policy::CacheControl::parse(req);
    cc.no_cache || cc.max_age == Some(0)
}

/// The request a flight sends: the client's, minus its own conditionals and range (the cache
/// wants the whole current object), as a GET, plus our validators when revalidating.
fn fill_request(parts: &http::request::Parts, stale: Option<&Meta>) -> Request<Body> {
    let mut req = Request::new(body::empty());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = http::Version::HTTP_11;
    let mut headers = parts.headers.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(name);
    }
    if let Some(stale) = stale {
        headers.extend(policy::validation_headers(&stale.header_map()));
    }
    *req.headers_mut() = headers;
    req
}

/// A streaming body over an entry's chunks; `first` is already read.
fn chunk_body(store: Arc<Store>, meta: Arc<Meta>, first: bytes::Bytes, keep_hot: bool) -> Body {
    let state = (store, meta, 0usize, Some(first));
    let stream = futures_util::stream::unfold(state, move |(store, meta, i, first)| async move {
        if let Some(first) = first {
            return Some((Ok(http_body::Frame::data(first)), (store, meta, 1, None)));
        }
        let chunk = meta.chunks.get(i)?.clone();
        match store.read_chunk(&chunk, keep_hot).await {
            Ok(bytes) => Some((
                Ok(http_body::Frame::data(bytes)),
                (store, meta, i + 1, None),
            )),
            Err(e) => {
                // Bytes already sent cannot be taken back; the client sees a truncated response
                // (the length does not match) and the entry is gone for the next request.
                tracing::error!(key = %meta.key.replace('\0', " "), error = %e, "corrupt cache entry removed mid-response");
                store.drop_corrupt(&meta.key, &chunk.sri).await;
                let end = meta.chunks.len();
                Some((Err(Box::new(e) as body::BoxError), (store, meta, end, None)))
            }
        }
    });
    body::boxed(http_body_util::StreamBody::new(stream))
}

fn not_modified(stored: &HeaderMap, age: Duration) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    // RFC 9110 15.4.5: the fields a 200 would have sent that describe the representation.
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    set_age(response.headers_mut(), age);
    response
}

impl Served {
    fn into_bypass(mut self) -> Self {
        self.status.outcome = Some(Outcome::Bypass);
        self
    }
}

/// An error answered by the edge itself, with a plain-text body saying what happened.
pub fn error_response(status: StatusCode, message: &str) -> Served {
    let text = format!(
        "{} {}\nquicdn: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(body::full(text.clone()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    set_length(h, text.len() as u64);
    Served {
        response,
        status: CacheStatus {
            outcome: Some(Outcome::Synthetic),
            detail: Some("edge-error"),
            ..CacheStatus::default()
        },
    }
}

fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
}

fn set_length(headers: &mut HeaderMap, len: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

fn ensure_date(headers: &mut HeaderMap, now: SystemTime) {
    // RFC 9110 6.6.1: a recipient with a clock adds Date when forwarding a message without one.
    if !headers.contains_key(header::DATE)
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(now))
    {
        headers.insert(header::DATE, v);
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
