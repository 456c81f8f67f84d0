//! The checker's own origin: N objects whose versions keep changing while clients read them.
//!
//! Every request is answered for the version current when it arrives (a response never
//! changes version part-way): `ETag: "<object>-v<version>"`, a `Last-Modified` that is
//! distinct per version and grows with it, `Cache-Control: max-age=N`, `Accept-Ranges: bytes`,
//! single ranges (`a-b`, `a-`, `-n`; anything else gets the whole object), `If-Range`,
//! `If-None-Match` and `If-Modified-Since`. In slow mode a share of the responses is sent in
//! small chunks with pauses, so versions change while the edge is still reading a body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::pattern;

/// Size classes of the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    /// A few KiB.
    Small,
    /// About 300 KiB: one chunk, below the slice size.
    Medium,
    /// 3 to 5 slices: stored sliced by the edge.
    Large,
}

impl SizeClass {
    pub fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Small, Self::Medium, Self::Large]
            .into_iter()
            .find(|c| c.name() == s)
    }
}

/// One object the origin serves.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectSpec {
    pub path: String,
    pub class: SizeClass,
    /// Its length (with `vary_length`, the shortest of its versions).
    pub base_len: u64,
}

/// The objects, their current versions, and how each version's body and headers look.
pub struct Catalog {
    pub salt: u64,
    pub objects: Vec<ObjectSpec>,
    versions: Vec<AtomicU64>,
    /// Version `v` was "last modified" at `epoch + v` seconds.
    epoch: SystemTime,
    vary_length: bool,
}

/// How much a version's length can exceed the object's base length with `vary_length`.
const LENGTH_JITTER: u64 = 4096;

impl Catalog {
    /// `count` objects: 40 % small, 30 % medium, 30 % large (3 to 5 slices of `slice_size`,
    /// the first ones exactly on, one byte past and one byte short of a slice boundary); or,
    /// when `only` names some classes, those in turn.
    pub fn new(
        count: usize,
        slice_size: u64,
        seed: u64,
        vary_length: bool,
        only: &[SizeClass],
    ) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut large = 0u64;
        let objects = (0..count)
            .map(|i| {
                let class = match (only, i % 10) {
                    ([], 0..=3) => SizeClass::Small,
                    ([], 4..=6) => SizeClass::Medium,
                    ([], _) => SizeClass::Large,
                    (only, _) => only[i % only.len()],
                };
                let base_len = match class {
                    SizeClass::Small => rng.random_range(1024..8 * 1024 + 1),
                    // Below the slice size, so stored whole.
                    SizeClass::Medium if slice_size > 350 * 1024 => {
                        rng.random_range(250 * 1024..350 * 1024)
                    }
                    SizeClass::Medium => rng.random_range(slice_size / 4..slice_size / 2),
                    SizeClass::Large => {
                        large += 1;
                        match large {
                            1 => 3 * slice_size,
                            2 => 4 * slice_size + 1,
                            3 => 5 * slice_size - 1,
                            _ => rng.random_range(3 * slice_size..5 * slice_size),
                        }
                    }
                };
                ObjectSpec {
                    path: format!("/obj/{i}-{}.bin", class.name()),
                    class,
                    base_len,
                }
            })
            .collect();
        Self {
            salt: rng.random(),
            objects,
            versions: (0..count).map(|_| AtomicU64::new(0)).collect(),
            // Far enough back that no run's versions reach the present.
            // Whole seconds, so that the dates in headers are exact.
            epoch: SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                        .saturating_sub(60 * 86_400),
                ),
            vary_length,
        }
    }

    pub fn current(&self, object: u32) -> u64 {
        self.versions[object as usize].load(Ordering::Acquire)
    }

    /// The current version of every object.
    pub fn snapshot(&self) -> Vec<u64> {
        self.versions
            .iter()
            .map(|v| v.load(Ordering::Acquire))
            .collect()
    }

    fn bump(&self, object: usize) {
        self.versions[object].fetch_add(1, Ordering::AcqRel);
    }

    /// The length of `(object, version)`.
    pub fn len(&self, object: u32, version: u64) -> u64 {
        let base = self.objects[object as usize].base_len;
        if self.vary_length {
            base + pattern::seed(self.salt ^ 0x1e7, object, version) % LENGTH_JITTER
        } else {
            base
        }
    }

    pub fn etag(object: u32, version: u64) -> String {
        format!("\"{object}-v{version}\"")
    }

    /// `"<object>-v<version>"` (strong) back to its parts.
    pub fn parse_etag(value: &str) -> Option<(u32, u64)> {
        let inner = value.strip_prefix('"')?.strip_suffix('"')?;
        let (object, version) = inner.split_once("-v")?;
        Some((object.parse().ok()?, version.parse().ok()?))
    }

    pub fn last_modified(&self, version: u64) -> SystemTime {
        self.epoch + Duration::from_secs(version)
    }

    /// The object a request path names.
    pub fn object_of(&self, path: &str) -> Option<u32> {
        let rest = path.strip_prefix("/obj/")?;
        let (index, _) = rest.split_once('-')?;
        let index: u32 = index.parse().ok()?;
        (self.objects.get(index as usize)?.path == path).then_some(index)
    }
}

/// What the origin did, for the summary.
#[derive(Debug, Default)]
pub struct OriginCounters {
    pub requests: AtomicU64,
    pub full: AtomicU64,
    pub partial: AtomicU64,
    pub not_modified: AtomicU64,
    pub unsatisfiable: AtomicU64,
    pub conditional: AtomicU64,
    pub if_range: AtomicU64,
    pub slow: AtomicU64,
    pub body_bytes: AtomicU64,
    pub version_bumps: AtomicU64,
    /// Responses spoilt on purpose (`fault_share`).
    pub faults: AtomicU64,
}

/// The origin's behaviour.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub max_age: u32,
    /// Each object gets a new version after a random pause in this range.
    pub version_interval: (Duration, Duration),
    /// The share of responses with a body sent slowly (small chunks, pauses).
    pub slow_share: f64,
    pub slow_chunk: usize,
    pub slow_pause: Duration,
    /// Self-test only: the share of responses with a body that the origin spoils (half of
    /// them end in the previous version's bytes, half have one byte flipped) while their
    /// headers name the current version. A checker run with this set must fail.
    pub fault_share: f64,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub counters: Arc<OriginCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Origin {
    /// Binds 127.0.0.1:0 and starts serving `catalog` and changing its versions.
    pub async fn start(catalog: Arc<Catalog>, config: OriginConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(OriginCounters::default());
        let mut tasks = Vec::new();
        let (lo, hi) = config.version_interval;
        for object in 0..catalog.objects.len() {
            let (catalog, counters) = (catalog.clone(), counters.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(catalog.salt ^ object as u64);
                loop {
                    let pause = if hi > lo {
                        rng.random_range(lo..hi)
                    } else {
                        lo
                    };
                    tokio::time::sleep(pause).await;
                    catalog.bump(object);
                    counters.version_bumps.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let state = Arc::new(State {
            catalog,
            config,
            counters: counters.clone(),
        });
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        }));
        Ok(Self {
            addr,
            counters,
            tasks,
        })
    }

    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

struct State {
    catalog: Arc<Catalog>,
    config: OriginConfig,
    counters: Arc<OriginCounters>,
}

impl State {
    fn handle(&self, req: &Request<Incoming>) -> Response<GenBody> {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let Some(object) = self.catalog.object_of(req.uri().path()) else {
            return status(StatusCode::NOT_FOUND);
        };
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return status(StatusCode::METHOD_NOT_ALLOWED),
        };
        // The version at the moment the request arrives; the whole response is of it.
        let version = self.catalog.current(object);
        let len = self.catalog.len(object, version);
        let etag = Catalog::etag(object, version);
        let modified = self.catalog.last_modified(version);
        let mut headers = HeaderMap::new();
        let mut set = |name, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        set(header::ETAG, etag.clone());
        set(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
        set(
            header::CACHE_CONTROL,
            format!("max-age={}", self.config.max_age),
        );
        set(header::ACCEPT_RANGES, "bytes".into());
        set(header::CONTENT_TYPE, "application/octet-stream".into());

        if not_modified(req.headers(), &etag, modified) {
            c.conditional.fetch_add(1, Ordering::Relaxed);
            c.not_modified.fetch_add(1, Ordering::Relaxed);
            return respond(StatusCode::NOT_MODIFIED, headers, GenBody::empty());
        }
        if req.headers().contains_key(header::IF_NONE_MATCH)
            || req.headers().contains_key(header::IF_MODIFIED_SINCE)
        {
            c.conditional.fetch_add(1, Ordering::Relaxed);
        }

        let mut range = None;
        if let Some(spec) = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
        {
            let if_range = req.headers().get(header::IF_RANGE);
            if if_range.is_some() {
                c.if_range.fetch_add(1, Ordering::Relaxed);
            }
            if if_range.is_none_or(|v| if_range_matches(v, &etag, modified)) {
                match parse_range(spec, len) {
                    Parsed::Range(a, b) => range = Some((a, b)),
                    Parsed::Unsatisfiable => {
                        c.unsatisfiable.fetch_add(1, Ordering::Relaxed);
                        headers.insert(
                            header::CONTENT_RANGE,
                            HeaderValue::from_str(&format!("bytes */{len}"))
                                .unwrap_or(HeaderValue::from_static("bytes */0")),
                        );
                        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                        return respond(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            headers,
                            GenBody::empty(),
                        );
                    }
                    Parsed::Ignore => {}
                }
            }
        }
        let (code, start, end) = match range {
            Some((a, b)) => {
                c.partial.fetch_add(1, Ordering::Relaxed);
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {a}-{b}/{len}"))
                        .unwrap_or(HeaderValue::from_static("bytes */0")),
                );
                (StatusCode::PARTIAL_CONTENT, a, b + 1)
            }
            None => {
                c.full.fetch_add(1, Ordering::Relaxed);
                (StatusCode::OK, 0, len)
            }
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        if head {
            return respond(code, headers, GenBody::empty());
        }
        let slow = self.config.slow_share > 0.0 && rand::rng().random_bool(self.config.slow_share);
        if slow {
            c.slow.fetch_add(1, Ordering::Relaxed);
        }
        c.body_bytes.fetch_add(end - start, Ordering::Relaxed);
        let seed = pattern::seed(self.catalog.salt, object, version);
        let mut body = if slow {
            GenBody::new(
                seed,
                start,
                end,
                self.config.slow_chunk,
                Some(self.config.slow_pause),
            )
        } else {
            GenBody::new(seed, start, end, 64 * 1024, None)
        };
        if self.config.fault_share > 0.0 && rand::rng().random_bool(self.config.fault_share) {
            c.faults.fetch_add(1, Ordering::Relaxed);
            let mut rng = rand::rng();
            let at = rng.random_range(start..end);
            body.fault = Some(if version > 0 && rng.random_bool(0.5) {
                // The shape of the original finding: the right head and length, the tail of
                // another version (with equal lengths; else it is only partly that version).
                Fault::TailOf(at, pattern::seed(self.catalog.salt, object, version - 1))
            } else {
                Fault::Flip(at)
            });
        }
        respond(code, headers, body)
    }
}

fn status(code: StatusCode) -> Response<GenBody> {
    let mut r = Response::new(GenBody::empty());
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    r
}

fn respond(code: StatusCode, headers: HeaderMap, body: GenBody) -> Response<GenBody> {
    let mut r = Response::new(body);
    *r.status_mut() = code;
    *r.headers_mut() = headers;
    r
}

/// RFC 9110 13.1.2 / 13.1.3 for a GET: `If-None-Match` (weak comparison) takes precedence
/// over `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        return inm.split(',').map(str::trim).any(|t| {
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.trim_start_matches("W/")
        });
    }
    if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        return modified <= ims;
    }
    false
}

/// RFC 9110 13.1.5: a strong ETag must match exactly; a date must equal Last-Modified.
fn if_range_matches(value: &HeaderValue, etag: &str, modified: SystemTime) -> bool {
    let Ok(v) = value.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with("W/") {
        return false;
    }
    if v.starts_with('"') {
        return v == etag;
    }
    httpdate::parse_http_date(v).is_ok_and(|d| d == modified)
}

enum Parsed {
    /// Inclusive first and last byte.
    Range(u64, u64),
    Unsatisfiable,
    /// Not a single valid byte range: the whole object is sent.
    Ignore,
}

fn parse_range(spec: &str, len: u64) -> Parsed {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Parsed::Ignore;
    };
    if set.contains(',') {
        return Parsed::Ignore;
    }
    let Some((a, b)) = set.trim().split_once('-') else {
        return Parsed::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Parsed::Ignore;
        };
        if n == 0 || len == 0 {
            return Parsed::Unsatisfiable;
        }
        return Parsed::Range(len.saturating_sub(n), len - 1);
    }
    let Ok(first) = a.parse::<u64>() else {
        return Parsed::Ignore;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l,
            _ => return Parsed::Ignore,
        }
    };
    if first >= len {
        return Parsed::Unsatisfiable;
    }
    Parsed::Range(first, last.min(len - 1))
}

/// A deliberate error in a body (self-test, `fault_share`).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// From this offset on, the bytes of the body with this seed.
    TailOf(u64, u64),
    /// The byte at this offset inverted.
    Flip(u64),
}

/// A generated body: bytes `pos..end` of the body with `seed`, in chunks, optionally with a
/// pause before every chunk but the first.
pub struct GenBody {
    seed: u64,
    pos: u64,
    end: u64,
    chunk: usize,
    pause: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    started: bool,
    fault: Option<Fault>,
}

impl GenBody {
    fn new(seed: u64, pos: u64, end: u64, chunk: usize, pause: Option<Duration>) -> Self {
        Self {
            seed,
            pos,
            end,
            chunk: chunk.max(1),
            pause,
            sleep: None,
            started: false,
            fault: None,
        }
    }

    fn empty() -> Self {
        Self::new(0, 0, 0, 1, None)
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        if let Some(pause) = this.pause
            && this.started
        {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.started = true;
        let n = (this.end - this.pos).min(this.chunk as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        pattern::fill(this.seed, this.pos, &mut buf);
        let end = this.pos + n as u64;
        match this.fault {
            Some(Fault::TailOf(at, other)) if at < end => {
                let from = at.max(this.pos);
                pattern::fill(other, from, &mut buf[(from - this.pos) as usize..]);
            }
            Some(Fault::Flip(at)) if (this.pos..end).contains(&at) => {
                buf[(at - this.pos) as usize] ^= 0xff;
            }
            _ => {}
        }
        this.pos = end;
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s, len| match parse_range(s, len) {
            Parsed::Range(a, b) => Some(Some((a, b))),
            Parsed::Unsatisfiable => Some(None),
            Parsed::Ignore => None,
        };
        assert_eq!(r("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Some(Some((90, 99))));
        assert_eq!(r("bytes=90-500", 100), Some(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Some(Some((90, 99))));
        assert_eq!(r("bytes=-500", 100), Some(Some((0, 99))));
        assert_eq!(r("bytes=100-", 100), Some(None));
        assert_eq!(r("bytes=-0", 100), Some(None));
        assert_eq!(r("bytes=5-1", 100), None);
        assert_eq!(r("bytes=0-1,5-6", 100), None);
        assert_eq!(r("items=0-1", 100), None);
    }

    #[test]
    fn etags_round_trip_and_paths_resolve() {
        assert_eq!(
            Catalog::parse_etag(&Catalog::etag(12, 345)),
            Some((12, 345))
        );
        assert_eq!(Catalog::parse_etag("W/\"1-v2\""), None);
        let c = Catalog::new(20, 1 << 20, 1, false, &[]);
        for (i, o) in c.objects.iter().enumerate() {
            assert_eq!(c.object_of(&o.path), Some(i as u32));
        }
        assert_eq!(c.object_of("/obj/3-large.bin.x"), None);
        assert_eq!(c.objects[7].base_len, 3 << 20);
        assert_eq!(c.objects[8].base_len, (4 << 20) + 1);
        assert_eq!(c.objects[9].base_len, (5 << 20) - 1);
    }

    #[test]
    fn conditionals() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"1-v2\""));
        assert!(not_modified(&h, "\"1-v2\"", t));
        assert!(!not_modified(&h, "\"1-v3\"", t));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"1-v1\", \"1-v2\""),
        );
        assert!(not_modified(&h, "\"1-v2\"", t));
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap(),
        );
        assert!(not_modified(&h, "\"x\"", t));
        assert!(!not_modified(&h, "\"x\"", t + Duration::from_secs(1)));
        let lm = HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap();
        assert!(if_range_matches(&lm, "\"a\"", t));
        assert!(!if_range_matches(&lm, "\"a\"", t + Duration::from_secs(1)));
        assert!(if_range_matches(
            &HeaderValue::from_static("\"a\""),
            "\"a\"",
            t
        ));
        assert!(!if_range_matches(
            &HeaderValue::from_static("W/\"a\""),
            "\"a\"",
            t
        ));
    }
}
