//! The HTTP cache: lookup, freshness, revalidation, coalesced fills and serving from store.
//!
//! [`Cache::serve`] takes a GET or HEAD (the service passes every other method straight to the
//! origin) and answers it from the store when policy allows, otherwise through a *flight*: one
//! origin request per key, shared by every request that arrives while it is under way.
//!
//! - [`policy`]: pure RFC 9111 rules.
//! - [`store`]: bytes on disk and in memory.
//! - [`fill`]: one origin body streamed to many readers while it is stored.
//! - `coalesce.rs`: the coalescer, one fetch per key shared by every request that asks
//!   meanwhile, for whole objects and slices alike;
//! - `flight.rs`: the whole-object flight (ask the origin, then store or pass);
//!   `miss.rs`: misses, range discovery, revalidation and stale rules, pass-through;
//! - `respond.rs`: the responder (an entry or a fill as the response a request asked for);
//!   `slices.rs`: the slicer (sliced objects, slice by slice from store or origin).

pub(crate) mod budget;
mod coalesce;
pub(crate) mod fill;
mod flight;
pub mod key;
pub mod meta;
mod miss;
pub mod policy;
pub(crate) mod purge;
pub mod range;
mod respond;
mod slices;
pub(crate) mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;

use self::budget::ReadBudget;
use self::coalesce::Coalescer;
use self::fill::{Fill, FillError, FillLimits};
use self::meta::{FORMAT_VERSION, Meta};
use self::policy::{Conditional, Freshness, NotStorable, PolicyConfig, Vary};
use self::range::{ByteRange, RangeAnswer};
use self::respond::Responder;
use self::slices::{OriginTemplate, SliceError, Slicer};
use self::store::{Fence, Store};
use crate::body::{self, Body};
use crate::headers::{CacheStatus, Outcome};
use crate::origin::OriginError;

/// Where cache misses go: bound to a site ([`crate::upstream`]); tests may fake it.
pub trait Upstream: Send + Sync + 'static {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>>;
}

/// The wall clock the cache reads for HTTP dates, ages and freshness; unit tests pass a fake
/// one to move time without waiting.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
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
    flights: Coalescer<Landed>,
    /// Primary keys whose last response was not storable (hit-for-pass).
    passes: moka::sync::Cache<String, ()>,
    pass_seq: std::sync::atomic::AtomicU64,
    slicer: Arc<Slicer>,
    responder: Responder,
    counters: CacheCounters,
    clock: Arc<dyn Clock>,
    /// Set while the control plane catches up on purges: every hit revalidates.
    suspect: std::sync::atomic::AtomicBool,
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
        Self::with_clock(store, policy, limits, counters, Arc::new(SystemClock))
    }

    /// As [`Cache::new`], reading time from `clock`.
    pub fn with_clock(
        store: Arc<Store>,
        policy: PolicyConfig,
        limits: CacheLimits,
        counters: CacheCounters,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let passes = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(limits.pass_memory)
            .build();
        let slicer = Arc::new(Slicer::new(
            store.clone(),
            limits.slice_size,
            limits.slice_read_ahead,
            counters.origin_fetches.clone(),
        ));
        let flights = Coalescer::default();
        let parts = (store.clone(), slicer.clone(), flights.clone());
        let responder = Responder::new(parts, clock.clone(), policy, &limits);
        Self {
            inner: Arc::new(Inner {
                store,
                policy,
                limits,
                flights,
                passes,
                pass_seq: Default::default(),
                slicer,
                responder,
                counters,
                clock,
                suspect: Default::default(),
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
                        .responder
                        .serve_stored(lookup, meta, Outcome::Hit, Some(ttl), &origin)
                        .await
                }
                Freshness::Stale {
                    while_revalidate: true,
                    staleness,
                    ..
                } => {
                    let served = inner
                        .responder
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

fn accepts_ranges(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_RANGES)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|u| u.trim().eq_ignore_ascii_case("bytes")))
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

/// An error answered by the edge itself, with a plain-text body saying what happened.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Served {
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
