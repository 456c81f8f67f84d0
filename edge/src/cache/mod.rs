//! The HTTP cache: lookup, freshness, revalidation, coalesced fills and serving from store.
//!
//! [`Cache::serve`] takes a GET or HEAD (the service passes every other method straight to the
//! origin) and answers it from the store when policy allows, otherwise through a *flight*: one
//! origin request per key, shared by every request that arrives while it is under way.
//!
//! - [`policy`]: pure RFC 9111 rules.
//! - [`store`]: bytes on disk and in memory.
//! - [`fill`]: one origin body streamed to many readers while it is stored.

pub mod budget;
pub mod fill;
pub mod key;
pub mod meta;
pub mod policy;
pub mod range;
mod slices;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;

use self::budget::ReadBudget;
use self::fill::{Fill, FillError, FillLimits};
use self::meta::{FORMAT_VERSION, Meta};
use self::policy::{Conditional, Freshness, NotStorable, PolicyConfig, Vary};
use self::range::{ByteRange, RangeAnswer};
use self::slices::{OriginTemplate, SliceError};
use self::store::Store;
use crate::body::{self, Body};
use crate::headers::{CacheStatus, Outcome};
use crate::origin::OriginError;

/// Where cache misses go: bound to a site ([`crate::upstream`]); tests may fake it.
pub trait Upstream: Send + Sync + 'static {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>>;
}

/// Sizes and knobs of the cache, from config.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub slice_size: usize,
    pub slice_read_ahead: u32,
    pub max_ranges: usize,
    pub max_object_size: u64,
    pub memory_object_max: u64,
    pub pass_memory: Duration,
}

/// The client request as the cache sees it.
pub struct Lookup<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The scheme, when the site keys on it (`None`: http and https share entries).
    pub scheme: Option<&'a str>,
    /// Lowercase host without port or trailing dot.
    pub host: &'a str,
    /// What the response may hold in memory while its client reads (its connection's share).
    pub budget: &'a ReadBudget,
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
    slice_flights: slices::SliceFlights,
    counters: CacheCounters,
}

/// The outcome of one origin request, shared with every request that waited for it.
#[derive(Clone)]
enum Landed {
    /// A storable response whose body is being filled into the store.
    Fill { fill: Arc<Fill>, head: Arc<Meta> },
    /// Served from the store: a sliced object whose head and first slice a range request
    /// just stored (`fwd`: 206), or an entry that landed between this request's lookup and
    /// its joining (`fwd`: none; the flight that stored it is gone).
    Stored {
        meta: Arc<Meta>,
        fwd: Option<StatusCode>,
    },
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

/// What one flight sends and what it needs to file the answer.
struct FlightRequest {
    req: Request<Body>,
    /// The headers of the client request that started the flight: the source of its variant.
    client: HeaderMap,
    /// The stored entry being revalidated, if any.
    stale: Option<Arc<Meta>>,
    /// A range miss: the slice asked for (which also tells the object's length).
    discover: Option<u64>,
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
                slice_flights: Default::default(),
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

    /// Answers a GET or HEAD. `origin_req` builds the request to send to the origin on a miss
    /// (the client's path and query as the URI and its host as `Host`, proxy headers applied; the upstream maps it onto
    /// its origin, the cache adjusts its conditionals and adds the key as [`crate::upstream::UpstreamKey`]). It
    /// is called only when the origin may be needed: a fresh hit on a whole object never
    /// builds it.
    pub async fn serve(
        &self,
        lookup: &Lookup<'_>,
        origin_req: &(dyn Fn() -> http::request::Parts + Send + Sync),
        upstream: Arc<dyn Upstream>,
    ) -> Served {
        let inner = &self.inner;
        let primary = key::primary(lookup.scheme, lookup.host, lookup.path_and_query);
        // Every upstream request carries the object's key; built only when one is made.
        let keyed = || {
            let mut parts = origin_req();
            let key = crate::upstream::UpstreamKey(Arc::from(primary.as_str()));
            parts.extensions.insert(key);
            parts
        };
        let origin_req: &(dyn Fn() -> http::request::Parts + Send + Sync) = &keyed;
        // A corrupt entry is dropped by `serve_stored`, which then yields `None`; the second
        // pass finds no entry and fetches. An entry replaced while being read also yields
        // `None`, and the second pass finds the new one; past two, the origin answers.
        for _ in 0..2 {
            let Some(meta) = inner.find(&primary, lookup.headers) else {
                if lookup.headers.contains_key(header::RANGE) {
                    // A range of an unknown object: ask the origin for the slice it starts
                    // in, which also tells the object's length. A suffix range goes to the
                    // origin as it is (one range: it costs the origin at most the object).
                    // Anything else (several ranges, overlapping or not) fetches the whole
                    // object like a plain miss and is answered from it under the same rules
                    // as a cached object: never forwarded, so one request cannot make the
                    // origin send the object once per range.
                    match inner.discovery_slice(lookup.headers) {
                        RangeMiss::Slice(index) => {
                            return Box::pin(inner.miss(
                                lookup,
                                &primary,
                                origin_req(),
                                upstream,
                                Some(index),
                            ))
                            .await;
                        }
                        RangeMiss::Suffix => {
                            return Box::pin(inner.pass(origin_req(), upstream, "range")).await;
                        }
                        RangeMiss::Whole => {}
                    }
                }
                // Cold paths are boxed so that their large state machines do not inflate the
                // future of every hit, which is moved into a task per request.
                return Box::pin(inner.miss(lookup, &primary, origin_req(), upstream, None)).await;
            };
            let origin = OriginTemplate {
                parts: meta.sliced.map(|_| Arc::new(origin_req())),
                upstream: upstream.clone(),
            };
            let served = match inner.freshness(lookup.headers, &meta) {
                Freshness::Fresh { ttl } => {
                    inner
                        .serve_stored(lookup, meta, Outcome::Hit, Some(ttl), &origin)
                        .await
                }
                Freshness::Stale {
                    while_revalidate: true,
                    staleness,
                    ..
                } => {
                    let served = inner
                        .serve_stored(lookup, meta.clone(), Outcome::StaleHit, None, &origin)
                        .await;
                    served.map(|mut served| {
                        let key = meta.key.clone();
                        inner.revalidate_in_background(
                            &key,
                            lookup.headers,
                            &origin_req(),
                            &upstream,
                            meta,
                        );
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
                        key: meta.key.clone(),
                        stale: Some(meta),
                        outcome,
                        discover: None,
                        moved: false,
                    };
                    return Box::pin(inner.clone().fetch(lookup, flight, origin_req(), upstream))
                        .await;
                }
            };
            if let Some(served) = served {
                return served;
            }
        }
        // Twice an entry that could not be served (replaced by new versions as fast as it
        // was found, or a sliced object whose slices changed at the origin): the client
        // still gets an answer, straight from the origin (several ranges become one whole
        // answer: never forwarded, as for a miss).
        let mut req = origin_req();
        if req
            .headers
            .get(header::RANGE)
            .is_some_and(|r| r.as_bytes().contains(&b','))
        {
            req.headers.remove(header::RANGE);
        }
        Box::pin(inner.pass(req, upstream, "entry-unusable")).await
    }

    /// Drops every stored variant of `path_and_query` on the lookup's host (RFC 9111 4.4), for
    /// both schemes when the site keys on the scheme; returns how many.
    pub async fn invalidate(&self, lookup: &Lookup<'_>, path_and_query: &str) -> usize {
        let schemes: &[Option<&str>] = match lookup.scheme {
            Some(_) => &[Some("http"), Some("https")],
            None => &[None],
        };
        let mut removed = 0;
        for scheme in schemes {
            let primary = key::primary(*scheme, lookup.host, path_and_query);
            self.inner.passes.invalidate(&primary);
            removed += self.inner.store.remove_primary(&primary).await;
        }
        removed
    }
}

/// How a range request for an object not in the cache is fetched.
enum RangeMiss {
    /// The slice the range starts in (which also tells the object's length).
    Slice(u64),
    /// A suffix range, forwarded as it is.
    Suffix,
    /// The whole object, as for a plain GET; the range is answered from it.
    Whole,
}

/// What a 206 answer to a range miss turned into.
enum Discovery {
    Landed(Landed),
    Whole(Body),
}

impl Discovery {
    /// Not usable for the cache: every waiter asks for its own range.
    fn pass(status: StatusCode) -> Self {
        Self::Landed(Landed::Pass { status })
    }
}

/// Which flight a request joins and why.
struct FlightSpec {
    key: String,
    stale: Option<Arc<Meta>>,
    outcome: Outcome,
    /// A range miss: fetch this slice (which also tells the object's length).
    discover: Option<u64>,
    /// This request already moved once to the flight of its own variant: it does not move
    /// again (a second mismatch passes to the origin instead of looping).
    moved: bool,
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
        discover: Option<u64>,
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
            discover,
            moved: false,
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

    /// The stored variant matching the request's Vary values. Its key is the entry's `key`.
    fn find(&self, primary: &str, req: &HeaderMap) -> Option<Arc<Meta>> {
        self.store
            .find(primary, |variant, meta| match &meta.facts().vary {
                Vary::None => key::is_variant(variant, primary, ""),
                Vary::Fields(fields) => {
                    key::is_variant(variant, primary, &policy::vary_key(fields, req))
                }
                Vary::Star => false,
            })
    }

    fn freshness(&self, req: &HeaderMap, meta: &Meta) -> Freshness {
        policy::stored_freshness(
            req,
            meta.facts(),
            meta.status(),
            (meta.request_time(), meta.response_time()),
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
            discover,
            moved,
        } = flight;
        let (mut landed, leader) = self.join_or_start(
            &key,
            lookup.headers,
            &origin_req,
            &upstream,
            stale.clone(),
            discover,
        );
        let origin = OriginTemplate {
            parts: Some(Arc::new(origin_req.clone())),
            upstream: upstream.clone(),
        };
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
                    // of: it needs its own variant, through its own flight. Variants are
                    // computed from client headers on both sides, so that flight's fill is
                    // this request's variant; `moved` still bounds it to one move.
                    if moved {
                        return self.pass(origin_req, upstream, "vary-mismatch").await;
                    }
                    let flight = FlightSpec {
                        key: own,
                        stale: None,
                        outcome: Outcome::VaryMiss,
                        discover: None,
                        moved: true,
                    };
                    return Box::pin(self.fetch(lookup, flight, origin_req, upstream)).await;
                }
                let Some(mut served) = self.serve_fill(lookup, &fill, &head, &origin).await else {
                    // The fill passes through and has moved past what this request needs.
                    return self.pass(origin_req, upstream, "not-stored").await;
                };
                served.status.stored = true;
                served.status.fwd_status = Some(head.status());
                served
            }
            Landed::Stored { meta: object, fwd } => {
                let ttl = match self.freshness(lookup.headers, &object) {
                    Freshness::Fresh { ttl } => Some(ttl),
                    Freshness::Stale { .. } => None,
                };
                let Some(mut served) = self
                    .serve_stored(lookup, object, outcome, ttl, &origin)
                    .await
                else {
                    return self.pass(origin_req, upstream, "range").await;
                };
                served.status.stored = fwd.is_some();
                served.status.fwd_status = fwd;
                served
            }
            Landed::Refreshed(meta) => {
                let ttl = match self.freshness(lookup.headers, &meta) {
                    Freshness::Fresh { ttl } => Some(ttl),
                    Freshness::Stale { .. } => None,
                };
                let Some(mut served) = self.serve_stored(lookup, meta, outcome, ttl, &origin).await
                else {
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
                    && let Some(served) = self.stale_if_error(lookup, &stale, status, &origin).await
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
                    None => {
                        let detail = if discover.is_some() {
                            "range"
                        } else {
                            "collapsed-pass"
                        };
                        return self.pass(origin_req, upstream, detail).await;
                    }
                }
            }
            Landed::Failed { status, message } => {
                if let Some(served) = self.stale_if_error(lookup, &stale, status, &origin).await {
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
        client: &HeaderMap,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Option<Arc<Meta>>,
        discover: Option<u64>,
    ) -> (
        tokio::sync::watch::Receiver<Option<Landed>>,
        Option<tokio::sync::oneshot::Receiver<Response<Body>>>,
    ) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(key) {
            return (flight.landed.clone(), None);
        }
        if stale.is_none()
            && let Some(meta) = self.store.get(key)
            && matches!(self.freshness(client, &meta), Freshness::Fresh { .. })
        {
            // A flight for this key landed and ended after this request looked it up: serve
            // what it stored rather than ask the origin again.
            let (_tx, rx) = tokio::sync::watch::channel(Some(Landed::Stored { meta, fwd: None }));
            return (rx, None);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let (pass_tx, pass_rx) = tokio::sync::oneshot::channel();
        flights.insert(key.to_owned(), Arc::new(Flight { landed: rx.clone() }));
        drop(flights);
        let mut req = fill_request(origin_req, stale.as_deref());
        if let Some(index) = discover {
            let size = self.limits.slice_size as u64;
            let value = format!("bytes={}-{}", index * size, (index + 1) * size - 1);
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(header::RANGE, v);
            }
        }
        let this = self.clone();
        let key = key.to_owned();
        let upstream = upstream.clone();
        // The variant is computed from the client's headers, never from the origin request
        // (which lacks hop-by-hop fields and has proxy headers added): every waiter computes
        // its own variant from its client headers, so both sides must use the same source.
        let client = client.clone();
        // Spawned so that the fetch outlives the request that started it (a client abort must
        // not strand the requests waiting on this flight).
        tokio::spawn(async move {
            let flight = FlightRequest {
                req,
                client,
                stale,
                discover,
            };
            this.fly(&key, flight, upstream, tx, pass_tx).await;
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
        flight: FlightRequest,
        upstream: Arc<dyn Upstream>,
        landed: tokio::sync::watch::Sender<Option<Landed>>,
        pass_tx: tokio::sync::oneshot::Sender<Response<Body>>,
    ) {
        let FlightRequest {
            req,
            client,
            stale,
            discover,
        } = flight;
        let method = Method::GET;
        let req_headers = req.headers().clone();
        let (req_parts, _) = req.into_parts();
        // At most two origin requests: the second only when a revalidation's 304 selects no
        // stored response, and then without validators (so it cannot be a 304 again).
        let mut conditional = stale.is_some();
        let (request_time, response_time, mut parts, body) = loop {
            let mut parts = req_parts.clone();
            if !conditional {
                parts.headers.remove(header::IF_NONE_MATCH);
                parts.headers.remove(header::IF_MODIFIED_SINCE);
            }
            let request_time = SystemTime::now();
            self.counters.origin_fetches.inc();
            let response = match upstream
                .fetch(Request::from_parts(parts, body::empty()))
                .await
            {
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
            if parts.status != StatusCode::NOT_MODIFIED {
                break (request_time, response_time, parts, body);
            }
            // RFC 9111 4.3.3/4.3.4: a 304 answers our own conditional request; it is never
            // passed to a client, which asked for the resource, not for our validation.
            match stale.as_ref().filter(|_| conditional) {
                Some(stale) if policy::not_modified_selects(stale.header_map(), &parts.headers) => {
                    let result = self
                        .refresh(stale, &parts.headers, request_time, response_time)
                        .await;
                    let _ = landed.send(Some(result));
                    return;
                }
                Some(_) => {
                    tracing::debug!(key = %key.replace('\0', " "), "304 names another version; fetching unconditionally");
                    conditional = false;
                }
                None => {
                    tracing::warn!(key = %key.replace('\0', " "), "origin answered 304 to an unconditional request");
                    let _ = landed.send(Some(Landed::Failed {
                        status: StatusCode::BAD_GATEWAY,
                        message: "origin answered 304 Not Modified to an unconditional request"
                            .into(),
                    }));
                    return;
                }
            }
        };

        let primary = key::primary_of(key).to_owned();
        let mut body = body::boxed(body);
        if let Some(index) = discover
            && parts.status == StatusCode::PARTIAL_CONTENT
        {
            let times = (request_time, response_time);
            match self
                .discovered(&primary, index, &client, &mut parts, body, times)
                .await
            {
                Discovery::Landed(result) => {
                    let _ = landed.send(Some(result));
                    return;
                }
                // The whole object fitted in the slice: store it like any response.
                Discovery::Whole(whole) => body = whole,
            }
        } else if discover.is_some() && parts.status != StatusCode::OK {
            // The answer to our slice probe (a 416, a 404 for a range, an error): it says
            // nothing storable about the URL, so only the request that asked gets it.
            let _ = landed.send(Some(Landed::Pass {
                status: parts.status,
            }));
            let _ = pass_tx.send(Response::from_parts(parts, body));
            return;
        }
        let verdict = storable(&method, &req_headers, parts.status, &parts.headers)
            .and_then(|()| self.within_size(&parts.headers));
        match verdict {
            Ok(()) => {
                self.passes.invalidate(&primary);
                let variant = match policy::vary(&parts.headers) {
                    Vary::Fields(fields) => {
                        key::variant(&primary, &policy::vary_key(&fields, &client))
                    }
                    _ => key::variant(&primary, ""),
                };
                let announced = content_length(&parts.headers);
                let sliced = announced.is_some_and(|n| n > self.limits.slice_size as u64)
                    && slices::has_validator(&parts.headers);
                let head = Meta {
                    format: FORMAT_VERSION,
                    key: variant,
                    status: parts.status.as_u16(),
                    headers: meta::encode_headers(&parts.headers),
                    request_time: meta::millis(request_time),
                    response_time: meta::millis(response_time),
                    body_len: announced.unwrap_or(0),
                    chunks: Vec::new(),
                    sliced: sliced.then_some(self.limits.slice_size as u64),
                    parsed: Default::default(),
                };
                let fill = Fill::new(self.store.clone());
                let limits = FillLimits {
                    chunk_size: self.limits.slice_size,
                    max_object_size: self.limits.max_object_size,
                    keep_hot: announced.is_some_and(|n| n <= self.limits.memory_object_max),
                    // Only an origin that says it serves ranges can give us the rest later;
                    // otherwise reading on is cheaper than a second full response.
                    stop_when_unread: sliced && accepts_ranges(&parts.headers),
                };
                let head = Arc::new(head);
                let _ = landed.send(Some(Landed::Fill {
                    fill: fill.clone(),
                    head: head.clone(),
                }));
                let result = fill.run(body, announced, (*head).clone(), limits).await;
                if let Err(FillError::Passed { why, too_large }) = &result {
                    self.counters.fills_failed.inc();
                    if *too_large {
                        // Like a response that says it is too large: the next requests pass.
                        self.passes.insert(primary.clone(), ());
                    }
                    tracing::debug!(key = %key.replace('\0', " "), %why, "fill passed through; nothing stored");
                } else if let Err(FillError::Abandoned) = result {
                    tracing::debug!(key = %key.replace('\0', " "), "fill of a sliced object stopped: no reader left");
                } else if let Err(e) = result {
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
                let _ = pass_tx.send(Response::from_parts(parts, body));
            }
        }
    }

    /// A range miss was answered with 206: learn the object's length from Content-Range and
    /// store it sliced, or, when the slice held the whole object, hand it back as a 200.
    async fn discovered(
        &self,
        primary: &str,
        index: u64,
        client: &HeaderMap,
        parts: &mut http::response::Parts,
        body: Body,
        times: (SystemTime, SystemTime),
    ) -> Discovery {
        let size = self.limits.slice_size as u64;
        let parsed = parts
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(range::parse_content_range);
        let Some((span, Some(total))) = parsed else {
            return Discovery::pass(parts.status);
        };
        if span != range::slice_range(index, size, total) {
            return Discovery::pass(parts.status);
        }
        if index == 0 && total <= size {
            parts.status = StatusCode::OK;
            parts.headers.remove(header::CONTENT_RANGE);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            return Discovery::Whole(body);
        }
        let as_whole = storable(&Method::GET, client, StatusCode::OK, &parts.headers);
        if as_whole.is_err()
            || !slices::has_validator(&parts.headers)
            || total > self.limits.max_object_size
        {
            return Discovery::pass(parts.status);
        }
        let variant = match policy::vary(&parts.headers) {
            Vary::Fields(fields) => key::variant(primary, &policy::vary_key(&fields, client)),
            _ => key::variant(primary, ""),
        };
        match self
            .begin_sliced(variant, parts, total, index, body, times)
            .await
        {
            Ok(object) => Discovery::Landed(Landed::Stored {
                meta: object,
                fwd: Some(StatusCode::PARTIAL_CONTENT),
            }),
            // The store could not take it (a full disk): every request, the one that asked
            // included, fetches its own range, uncached. An origin failure mid-slice is an
            // error like any other.
            Err(SliceError::Store(why)) => {
                tracing::debug!(%why, "sliced object not stored; ranges pass through");
                Discovery::pass(parts.status)
            }
            Err(e) => Discovery::Landed(Landed::Failed {
                status: StatusCode::BAD_GATEWAY,
                message: e.to_string().into(),
            }),
        }
    }

    /// How a range request for an unknown object is fetched: the slice a single `a-b` or `a-`
    /// starts in, the suffix range as it is, or (anything else) the whole object.
    fn discovery_slice(&self, headers: &HeaderMap) -> RangeMiss {
        let Some(value) = headers.get(header::RANGE) else {
            return RangeMiss::Whole;
        };
        let Some(spec) = value.to_str().ok().map(str::trim) else {
            return RangeMiss::Whole;
        };
        let Some(spec) = spec.get(6..).filter(|_| {
            spec.get(..6)
                .is_some_and(|u| u.eq_ignore_ascii_case("bytes="))
        }) else {
            return RangeMiss::Whole;
        };
        if spec.contains(',') {
            return RangeMiss::Whole;
        }
        match range::evaluate(Some(value), u64::MAX, self.range_limits()) {
            RangeAnswer::Single(_) if spec.trim_start().starts_with('-') => RangeMiss::Suffix,
            RangeAnswer::Single(r) => RangeMiss::Slice(r.start / self.limits.slice_size as u64),
            _ => RangeMiss::Whole,
        }
    }

    fn range_limits(&self) -> range::RangeLimits {
        range::RangeLimits {
            max_ranges: self.limits.max_ranges,
            ..range::RangeLimits::default()
        }
    }

    async fn refresh(
        &self,
        stale: &Meta,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Landed {
        let merged = policy::merge_not_modified(stale.header_map(), not_modified);
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
        let primary = key::primary(lookup.scheme, lookup.host, lookup.path_and_query);
        match &head.facts().vary {
            Vary::Fields(fields) => {
                key::variant(&primary, &policy::vary_key(fields, lookup.headers))
            }
            _ => key::variant(&primary, ""),
        }
    }

    fn revalidate_in_background(
        self: &Arc<Self>,
        key: &str,
        client: &HeaderMap,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Arc<Meta>,
    ) {
        // Starting (or joining) the flight is enough: it runs to completion on its own.
        let _ = self.join_or_start(key, client, origin_req, upstream, Some(stale), None);
    }

    /// Serves a stale entry because the origin failed, when stale-if-error allows it.
    async fn stale_if_error(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        stale: &Option<Arc<Meta>>,
        status: StatusCode,
        origin: &OriginTemplate,
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
            .serve_stored(lookup, meta, Outcome::Stale, None, origin)
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
    /// whole body or the requested ranges of it. The first piece of every part is read (and
    /// verified, or fetched for a sliced object) before the head is sent, so a corrupt entry
    /// or a changed origin object becomes a miss (`None`) instead of a broken response.
    async fn serve_stored(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        meta: Arc<Meta>,
        outcome: Outcome,
        ttl: Option<Duration>,
        origin: &OriginTemplate,
    ) -> Option<Served> {
        let mut status = CacheStatus {
            outcome: Some(outcome),
            ttl: ttl.map(|t| t.as_secs() as i64),
            ..CacheStatus::default()
        };
        let stored_headers = meta.header_map().clone();
        let age =
            meta.facts()
                .current_age(meta.request_time(), meta.response_time(), SystemTime::now());
        if policy::evaluate_conditional(lookup.method, lookup.headers, &stored_headers)
            == Conditional::NotModified
        {
            status.detail = Some("not-modified");
            let response = not_modified(&stored_headers, age);
            return Some(Served { response, status });
        }
        let answer = self.range_answer(lookup, &stored_headers, meta.status(), meta.body_len);
        // The fill under way for this key may be of a newer version than the entry this
        // request found: read from it only if it fills this very version.
        let source = match self.active_fill(&meta.key) {
            Some(fill)
                if meta.sliced.is_some()
                    && fill.object().is_some_and(|o| {
                        slices::same_version(
                            meta.header_map(),
                            meta.body_len,
                            o.header_map(),
                            o.body_len,
                        )
                    }) =>
            {
                Source::Fill(fill)
            }
            _ => Source::Stored(meta.clone()),
        };
        let mut response = self
            .respond(
                lookup,
                &source,
                stored_headers,
                meta.status(),
                meta.body_len,
                answer,
                origin,
            )
            .await?;
        set_age(response.headers_mut(), age);
        Some(Served { response, status })
    }

    /// Answers from a fill under way.
    async fn serve_fill(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        fill: &Arc<Fill>,
        head: &Meta,
        origin: &OriginTemplate,
    ) -> Option<Served> {
        let headers = head.header_map().clone();
        let facts = head.facts();
        let (lifetime, _) = facts.lifetime(head.status(), head.response_time(), &self.policy);
        let age = facts.current_age(head.request_time(), head.response_time(), SystemTime::now());
        let status = CacheStatus {
            ttl: Some(lifetime.as_secs() as i64 - age.as_secs() as i64),
            ..CacheStatus::default()
        };
        if policy::evaluate_conditional(lookup.method, lookup.headers, &headers)
            == Conditional::NotModified
        {
            return Some(Served {
                response: not_modified(&headers, age),
                status,
            });
        }
        // Without a Content-Length the length is unknown until the end: ranges wait for none.
        let length = content_length(&headers);
        let answer = match length {
            Some(len) => self.range_answer(lookup, &headers, head.status(), len),
            None => RangeAnswer::Full,
        };
        let source = Source::Fill(fill.clone());
        let len = length.unwrap_or(u64::MAX);
        let response = self
            .respond(lookup, &source, headers, head.status(), len, answer, origin)
            .await;
        let mut response = response?;
        if length.is_none() {
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        set_age(response.headers_mut(), age);
        Some(Served { response, status })
    }

    /// What the request's Range asks of a representation (Full for HEAD, non-200, If-Range
    /// mismatches and invalid or abusive ranges).
    fn range_answer(
        &self,
        lookup: &Lookup<'_>,
        stored: &HeaderMap,
        status: StatusCode,
        len: u64,
    ) -> RangeAnswer {
        if status != StatusCode::OK {
            return RangeAnswer::Full;
        }
        range::evaluate_request(
            lookup.method,
            lookup.headers,
            stored,
            len,
            self.range_limits(),
        )
    }

    /// Builds the response (200, 206 single or multipart, or 416) from a body source.
    #[allow(clippy::too_many_arguments)]
    async fn respond(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        source: &Source,
        mut headers: HeaderMap,
        status: StatusCode,
        len: u64,
        answer: RangeAnswer,
        origin: &OriginTemplate,
    ) -> Option<Response<Body>> {
        let head_only = *lookup.method == Method::HEAD;
        if status == StatusCode::OK {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        let (status, body, body_len) = match answer {
            RangeAnswer::Full => {
                let body = match head_only {
                    true => body::empty(),
                    false => {
                        self.span(
                            source,
                            ByteRange { start: 0, end: len },
                            origin,
                            lookup.budget,
                        )
                        .await?
                    }
                };
                (status, body, len)
            }
            RangeAnswer::Single(r) => {
                let body = match head_only {
                    true => body::empty(),
                    false => self.span(source, r, origin, lookup.budget).await?,
                };
                if let Ok(v) = HeaderValue::from_str(&r.content_range(len)) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, body, r.len())
            }
            RangeAnswer::Multi(ranges) => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let seed = self
                    .pass_seq
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ^ meta::millis(SystemTime::now()).rotate_left(17);
                let plan = range::Multipart::new(&ranges, len, content_type.as_deref(), seed);
                let mut parts = Vec::new();
                for (part_head, r) in &plan.parts {
                    parts.push(body::full(part_head.clone()));
                    parts.push(self.span(source, *r, origin, lookup.budget).await?);
                }
                parts.push(body::full(plan.closing.clone()));
                if let Ok(v) = HeaderValue::from_str(&plan.content_type()) {
                    headers.insert(header::CONTENT_TYPE, v);
                }
                (StatusCode::PARTIAL_CONTENT, concat(parts), plan.body_len())
            }
            RangeAnswer::Unsatisfiable => {
                let mut response = Response::new(body::empty());
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let h = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_range(len)) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                for name in [header::ETAG, header::LAST_MODIFIED, header::DATE] {
                    if let Some(v) = headers.get(&name) {
                        h.insert(name, v.clone());
                    }
                }
                h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                set_length(h, 0);
                return Some(response);
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        set_length(response.headers_mut(), body_len);
        Some(response)
    }

    /// Bytes `span` of a body source. The first piece is read before returning, so a failure
    /// there (corrupt chunk, changed origin object) is `None` and nothing has been sent.
    async fn span(
        self: &Arc<Self>,
        source: &Source,
        span: ByteRange,
        origin: &OriginTemplate,
        budget: &ReadBudget,
    ) -> Option<Body> {
        if span.start >= span.end {
            return Some(body::empty());
        }
        match source {
            // None when a fill passing through no longer holds these bytes: the caller
            // then fetches for itself.
            Source::Fill(fill) => fill.reader_from(span.start, span.end, budget.clone()),
            Source::Stored(meta) if meta.sliced.is_some() => {
                let size = meta.sliced.unwrap_or(1).max(1);
                let first =
                    budget.hold(size, Box::pin(self.slice(meta, span.start / size, origin)));
                match first.await {
                    Ok(first) => Some(self.slice_body(
                        meta.clone(),
                        span,
                        first,
                        (origin.clone(), budget.clone()),
                    )),
                    Err(e) => {
                        tracing::warn!(key = %meta.key.replace('\0', " "), error = %e, "sliced object unavailable");
                        None
                    }
                }
            }
            Source::Stored(meta) => {
                let keep_hot = meta.body_len <= self.limits.memory_object_max;
                let (index, offset) = chunk_at(meta, span.start)?;
                let chunk = &meta.chunks[index];
                match budget
                    .hold(chunk.len, self.store.read_chunk(chunk, keep_hot))
                    .await
                {
                    Ok(first) => Some(chunk_body(
                        (self.store.clone(), budget.clone()),
                        meta.clone(),
                        (index, offset, first),
                        span,
                        keep_hot,
                    )),
                    Err(e) if !self.store.is_current(meta) => {
                        // Replaced (a new version committed) between lookup and read, which
                        // released this chunk: not corruption, and the new entry stays.
                        tracing::debug!(key = %meta.key.replace('\0', " "), error = %e, "entry replaced while being read");
                        None
                    }
                    Err(e) => {
                        tracing::error!(key = %meta.key.replace('\0', " "), error = %e, "corrupt cache entry removed");
                        Box::pin(self.store.drop_corrupt(&meta.key, &chunk.sri)).await;
                        None
                    }
                }
            }
        }
    }

    /// The fill under way for a key, if its flight is filling.
    fn active_fill(&self, key: &str) -> Option<Arc<Fill>> {
        let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let landed = flights.get(key)?.landed.borrow().clone();
        match landed {
            Some(Landed::Fill { fill, .. }) if fill.usable() => Some(fill),
            _ => None,
        }
    }
}

/// Where a response's bytes come from.
enum Source {
    Stored(Arc<Meta>),
    Fill(Arc<Fill>),
}

/// The chunk holding byte `offset` of a stored (unsliced) body, and the offset inside it.
fn chunk_at(meta: &Meta, offset: u64) -> Option<(usize, u64)> {
    let mut start = 0u64;
    for (i, chunk) in meta.chunks.iter().enumerate() {
        if offset < start + chunk.len {
            return Some((i, offset - start));
        }
        start += chunk.len;
    }
    None
}

fn accepts_ranges(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_RANGES)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|u| u.trim().eq_ignore_ascii_case("bytes")))
}

/// Bodies one after the other.
fn concat(parts: Vec<Body>) -> Body {
    let streams = parts.into_iter().map(http_body_util::BodyStream::new);
    let stream = futures_util::stream::iter(streams).flatten();
    body::boxed(http_body_util::StreamBody::new(stream))
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
    *req.extensions_mut() = parts.extensions.clone();
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
        headers.extend(policy::validation_headers(stale.header_map()));
    }
    *req.headers_mut() = headers;
    req
}

/// A streaming body over bytes `span` of an entry's chunks; `first` is (index, offset in it,
/// bytes) of the chunk the span starts in, already read.
fn chunk_body(
    io: (Arc<Store>, ReadBudget),
    meta: Arc<Meta>,
    first: (usize, u64, bytes::Bytes),
    span: ByteRange,
    keep_hot: bool,
) -> Body {
    let (index, offset, bytes) = first;
    let chunk_start = span.start - offset;
    let state = (Arc::new(io), meta, index, chunk_start, Some(bytes));
    let stream = futures_util::stream::unfold(
        state,
        move |(io, meta, i, start, first)| async move {
            let (store, budget) = &*io;
            if start >= span.end {
                return None;
            }
            let chunk = meta.chunks.get(i)?.clone();
            let bytes = match first {
                Some(bytes) => bytes,
                None => match budget
                    .hold(chunk.len, store.read_chunk(&chunk, keep_hot))
                    .await
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        // Bytes already sent cannot be taken back; the client sees a truncated
                        // response (the length does not match) and the entry is gone for the next
                        // request.
                        tracing::error!(key = %meta.key.replace('\0', " "), error = %e, "corrupt cache entry removed mid-response");
                        store.drop_corrupt(&meta.key, &chunk.sri).await;
                        let end = span.end;
                        return Some((
                            Err(Box::new(e) as body::BoxError),
                            (io, meta, i, end, None),
                        ));
                    }
                },
            };
            let from = span.start.saturating_sub(start) as usize;
            let to = ((span.end - start) as usize).min(bytes.len());
            let part = bytes.slice(from.min(to)..to);
            let next = start + chunk.len;
            Some((
                Ok(http_body::Frame::data(part)),
                (io, meta, i + 1, next, None),
            ))
        },
    );
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
