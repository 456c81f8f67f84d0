//! The clients: closed-loop tasks asking the edge for random objects over HTTP/1.1 (plain or
//! TLS) and HTTP/2 over TLS, whole or by range, some giving up part-way, every byte checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::edge::Ports;
use crate::origin::{Catalog, SizeClass};
use crate::pattern::Verifier;
use crate::stats::{Failure, Stats};

/// How a client reaches the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// HTTP/1.1 over plain TCP.
    H1,
    /// HTTP/1.1 over TLS.
    H1Tls,
    /// HTTP/2 over TLS.
    H2,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H1Tls => "h1tls",
            Self::H2 => "h2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "h1" => Some(Self::H1),
            "h1tls" => Some(Self::H1Tls),
            "h2" => Some(Self::H2),
            _ => None,
        }
    }
}

/// What the clients do.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub clients: usize,
    /// Client `i` speaks `protocols[i % len]`.
    pub protocols: Vec<Proto>,
    /// HTTP/2 clients share connections, this many per connection.
    pub h2_streams: usize,
    /// Share of responses the client stops reading part-way.
    pub abort_share: f64,
    /// Share of whole-object requests sent conditional on a version seen before
    /// (`If-None-Match` with its ETag, or `If-Modified-Since` with its Last-Modified).
    pub conditional_share: f64,
    pub request_timeout: Duration,
    pub max_requests: u64,
    pub slice_size: u64,
}

/// Edge restarts, so that the errors they cause are told apart from others.
#[derive(Debug, Default)]
pub struct Restarts {
    /// Bumped when the edge is killed.
    pub generation: AtomicU64,
    /// While the edge is down.
    pub down: AtomicBool,
}

impl Restarts {
    fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a failure on a connection made in `generation` is explained by a restart.
    fn explains(&self, generation: u64) -> bool {
        self.down.load(Ordering::Acquire) || self.current() != generation
    }
}

/// Everything the client tasks share.
pub struct Shared {
    pub catalog: Arc<Catalog>,
    pub stats: Arc<Stats>,
    pub settings: ClientSettings,
    pub ports: Ports,
    pub tls_h1: TlsConnector,
    pub tls_h2: TlsConnector,
    pub restarts: Arc<Restarts>,
    pub deadline: Instant,
    pub started: Instant,
    pub issued: AtomicU64,
    /// Set to stop the clients early.
    pub stop: AtomicBool,
    pub versions: Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
    pub h2_slots: Vec<tokio::sync::Mutex<Option<H2Conn>>>,
}

#[derive(Clone)]
pub struct H2Conn {
    sender: http2::SendRequest<Empty<Bytes>>,
    generation: u64,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// What one request asks for.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Whole,
    /// `bytes=a-`
    From(u64),
    /// `bytes=a-b`
    Span(u64, u64),
    /// `bytes=-n`
    Suffix(u64),
}

impl Ask {
    fn header(self) -> Option<String> {
        match self {
            Self::Whole => None,
            Self::From(a) => Some(format!("bytes={a}-")),
            Self::Span(a, b) => Some(format!("bytes={a}-{b}")),
            Self::Suffix(n) => Some(format!("bytes=-{n}")),
        }
    }

    /// `[start, end)` of an object of `len` bytes (the range must be satisfiable).
    fn resolve(self, len: u64) -> (u64, u64) {
        match self {
            Self::Whole => (0, len),
            Self::From(a) => (a, len),
            Self::Span(a, b) => (a, (b + 1).min(len)),
            Self::Suffix(n) => (len - n.min(len), len),
        }
    }
}

/// A validator of a version seen before, sent as a precondition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validator {
    /// Its ETag.
    Tag(u64),
    /// Its Last-Modified date.
    Date(u64),
}

impl Validator {
    fn version(self) -> u64 {
        match self {
            Self::Tag(v) | Self::Date(v) => v,
        }
    }

    fn value(self, object: u32, catalog: &Catalog) -> String {
        match self {
            Self::Tag(v) => Catalog::etag(object, v),
            Self::Date(v) => httpdate::fmt_http_date(catalog.last_modified(v)),
        }
    }
}

/// One planned request.
struct Plan {
    object: u32,
    kind: &'static str,
    ask: Ask,
    /// `If-Range` with this validator: a 206 must be of exactly that version.
    if_range: Option<Validator>,
    /// `If-None-Match` (a tag) or `If-Modified-Since` (a date): a 304 must be of that
    /// version (a tag) or of no later one (a date).
    condition: Option<Validator>,
    /// Stop reading after this share of the body.
    abort_at: Option<f64>,
}

impl Shared {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn plan(&self, rng: &mut SmallRng, seen: &HashMap<u32, u64>) -> Plan {
        let object = rng.random_range(0..self.catalog.objects.len() as u32);
        let spec = &self.catalog.objects[object as usize];
        let len = spec.base_len;
        let slice = self.settings.slice_size;
        let span_len = |rng: &mut SmallRng, max: u64| -> u64 {
            let cap = match rng.random_range(0..3) {
                0 => 100,
                1 => 64 * 1024,
                _ => 2 * 1024 * 1024,
            };
            rng.random_range(1..=cap.min(max).max(1))
        };
        let mut if_range = None;
        let mut condition = None;
        let validator = |rng: &mut SmallRng, v: u64| {
            if rng.random_bool(0.7) {
                Validator::Tag(v)
            } else {
                Validator::Date(v)
            }
        };
        let roll = rng.random_range(0..100);
        let (kind, ask) = match roll {
            0..30 => ("whole", Ask::Whole),
            30..55 => {
                // Open-ended, like a video player: from 0, a slice boundary, or anywhere.
                let a = match rng.random_range(0..4) {
                    0 => 0,
                    1 if len > slice => rng.random_range(0..=(len - 1) / slice) * slice,
                    _ => rng.random_range(0..len),
                };
                ("open", Ask::From(a))
            }
            55..70 if spec.class == SizeClass::Large => {
                // Across a slice boundary.
                let k = rng.random_range(1..=(len - 1) / slice);
                let a = k * slice - rng.random_range(1..=64 * 1024);
                let b = (k * slice + rng.random_range(0..64 * 1024)).min(len - 1);
                ("cross", Ask::Span(a, b))
            }
            70..75 => ("suffix", Ask::Suffix(span_len(rng, len))),
            75..80 if seen.contains_key(&object) => {
                let a = rng.random_range(0..len);
                let n = span_len(rng, len - a);
                if_range = seen.get(&object).map(|&v| validator(rng, v));
                ("if-range", Ask::Span(a, a + n - 1))
            }
            _ => {
                let a = rng.random_range(0..len);
                let n = span_len(rng, len - a);
                ("span", Ask::Span(a, a + n - 1))
            }
        };
        if matches!(ask, Ask::Whole) && rng.random_bool(self.settings.conditional_share) {
            condition = seen.get(&object).map(|&v| validator(rng, v));
        }
        let abort_at = rng
            .random_bool(self.settings.abort_share)
            .then(|| rng.random_range(0.0..1.0));
        Plan {
            object,
            kind,
            ask,
            if_range,
            condition,
            abort_at,
        }
    }
}

/// Runs client `index` until the deadline, the request budget or `stop`.
pub async fn run_client(shared: Arc<Shared>, index: usize) {
    let protos = &shared.settings.protocols;
    let proto = protos[index % protos.len()];
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut h1: Option<(http1::SendRequest<Empty<Bytes>>, u64)> = None;
    let h2_slot = index / protos.len() / shared.settings.h2_streams.max(1);
    // The last version of each object this client got.
    let mut seen: HashMap<u32, u64> = HashMap::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= shared.deadline {
            return;
        }
        if shared.issued.fetch_add(1, Ordering::Relaxed) >= shared.settings.max_requests {
            return;
        }
        let plan = shared.plan(&mut rng, &seen);
        shared.stats.request(proto.name(), plan.kind);
        // A connection: this client's own for HTTP/1.1, a shared one for HTTP/2.
        let (mut sender, generation) = match proto {
            Proto::H1 | Proto::H1Tls => {
                // An idle connection the edge closed is replaced without counting an error.
                let idle = match h1.take() {
                    Some((mut s, g)) if !s.is_closed() => s.ready().await.is_ok().then_some((s, g)),
                    _ => None,
                };
                let (s, g) = match idle {
                    Some(c) => c,
                    None => match connect_h1(&shared, proto).await {
                        Ok(c) => c,
                        Err((kind, e)) => {
                            connect_failed(&shared, kind, &e).await;
                            continue;
                        }
                    },
                };
                (Sender::H1(s), g)
            }
            Proto::H2 => match h2_sender(&shared, h2_slot).await {
                Ok(c) => (Sender::H2(c.sender), c.generation),
                Err((kind, e)) => {
                    connect_failed(&shared, kind, &e).await;
                    continue;
                }
            },
        };
        let outcome = tokio::time::timeout(
            shared.settings.request_timeout,
            exchange(&shared, proto, &mut sender, &plan, generation, &mut seen),
        )
        .await;
        let keep = match outcome {
            Ok(keep) => keep,
            Err(_) => {
                shared
                    .stats
                    .error("timeout", shared.restarts.explains(generation), || {
                        format!("{} {:?}", plan_url(&shared, plan.object), plan.ask)
                    });
                false
            }
        };
        match sender {
            Sender::H1(s) if keep => h1 = Some((s, generation)),
            Sender::H1(_) => {}
            Sender::H2(_) if keep => {}
            Sender::H2(_) => drop_h2(&shared, h2_slot, generation).await,
        }
    }
}

fn plan_url(shared: &Shared, object: u32) -> String {
    shared.catalog.objects[object as usize].path.clone()
}

async fn connect_failed(shared: &Shared, kind: &'static str, e: &str) {
    let expected = shared.restarts.down.load(Ordering::Acquire);
    shared.stats.error(kind, expected, || e.to_owned());
    // Do not spin while the edge is down.
    tokio::time::sleep(Duration::from_millis(if expected { 50 } else { 10 })).await;
}

type ConnectError = (&'static str, String);

async fn tcp(addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| ("connect", format!("connect {addr}: timed out")))?
        .map_err(|e| ("connect", format!("connect {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn tls(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let tcp = tcp(addr).await?;
    let name = ServerName::try_from("localhost").map_err(|e| ("tls", e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| ("tls", "TLS handshake timed out".to_owned()))?
        .map_err(|e| ("tls", format!("TLS handshake: {e}")))
}

async fn connect_h1(
    shared: &Shared,
    proto: Proto,
) -> Result<(http1::SendRequest<Empty<Bytes>>, u64), ConnectError> {
    let generation = shared.restarts.current();
    let handshake = |e: hyper::Error| ("connect", format!("HTTP/1.1 handshake: {e}"));
    let sender = if proto == Proto::H1Tls {
        let stream = tls(&shared.tls_h1, shared.ports.https).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(handshake)?;
        tokio::spawn(conn);
        sender
    } else {
        let stream = tcp(shared.ports.http).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(handshake)?;
        tokio::spawn(conn);
        sender
    };
    Ok((sender, generation))
}

async fn h2_sender(shared: &Shared, slot: usize) -> Result<H2Conn, ConnectError> {
    let slot = &shared.h2_slots[slot % shared.h2_slots.len()];
    let mut guard = slot.lock().await;
    if let Some(c) = guard.as_ref()
        && !c.sender.is_closed()
    {
        return Ok(c.clone());
    }
    *guard = None;
    let generation = shared.restarts.current();
    let stream = tls(&shared.tls_h2, shared.ports.https).await?;
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2") {
        return Err(("tls", format!("ALPN: the edge chose {alpn:?}, not h2")));
    }
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ("connect", format!("HTTP/2 handshake: {e}")))?;
    tokio::spawn(conn);
    let c = H2Conn { sender, generation };
    *guard = Some(c.clone());
    Ok(c)
}

/// Forgets the shared HTTP/2 connection of `slot` if it is still the one from `generation`
/// and it is closed (a stream error leaves the connection usable).
async fn drop_h2(shared: &Shared, slot: usize, generation: u64) {
    let slot = &shared.h2_slots[slot % shared.h2_slots.len()];
    let mut guard = slot.lock().await;
    if guard
        .as_ref()
        .is_some_and(|c| c.generation == generation && c.sender.is_closed())
    {
        *guard = None;
    }
}

/// Sends `plan`, checks the response; returns whether the connection can be reused.
async fn exchange(
    shared: &Shared,
    proto: Proto,
    sender: &mut Sender,
    plan: &Plan,
    generation: u64,
    seen: &mut HashMap<u32, u64>,
) -> bool {
    let path = plan_url(shared, plan.object);
    let mut request = match proto {
        Proto::H1 => Request::get(&path).header(
            header::HOST,
            format!("localhost:{}", shared.ports.http.port()),
        ),
        Proto::H1Tls => Request::get(&path).header(
            header::HOST,
            format!("localhost:{}", shared.ports.https.port()),
        ),
        Proto::H2 => Request::get(format!(
            "https://localhost:{}{path}",
            shared.ports.https.port()
        )),
    };
    let mut described = Vec::new();
    if let Some(r) = plan.ask.header() {
        described.push(format!("Range: {r}"));
        request = request.header(header::RANGE, r);
    }
    if let Some(v) = plan.if_range {
        let t = v.value(plan.object, &shared.catalog);
        described.push(format!("If-Range: {t}"));
        request = request.header(header::IF_RANGE, t);
    }
    if let Some(v) = plan.condition {
        let t = v.value(plan.object, &shared.catalog);
        let name = match v {
            Validator::Tag(_) => header::IF_NONE_MATCH,
            Validator::Date(_) => header::IF_MODIFIED_SINCE,
        };
        described.push(format!("{name}: {t}"));
        request = request.header(name, t);
    }
    let Ok(request) = request.body(Empty::<Bytes>::new()) else {
        return true;
    };
    let sent = match sender {
        Sender::H1(s) => s.send_request(request).await,
        Sender::H2(s) => s.send_request(request).await,
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            shared
                .stats
                .error("request", shared.restarts.explains(generation), || {
                    format!(
                        "{} {path} {}: {:#}",
                        proto.name(),
                        described.join(", "),
                        anyhow::Error::new(e)
                    )
                });
            return false;
        }
    };
    shared.stats.responses.fetch_add(1, Ordering::Relaxed);
    let check = Check {
        shared,
        proto,
        plan,
        path,
        request: described.join(", "),
        generation,
    };
    check.response(response, seen).await
}

struct Check<'a> {
    shared: &'a Shared,
    proto: Proto,
    plan: &'a Plan,
    path: String,
    request: String,
    generation: u64,
}

fn header_str(r: &Response<Incoming>, name: header::HeaderName) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// `bytes a-b/len` to `(a, b + 1, len)`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (span, len) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, len): (u64, u64, u64) = (a.parse().ok()?, b.parse().ok()?, len.parse().ok()?);
    (a <= b && b < len).then_some((a, b + 1, len))
}

impl Check<'_> {
    fn failure(
        &self,
        (kind, shape): (&'static str, &str),
        r: &Response<Incoming>,
        expected: (u64, u64),
        detail: String,
    ) -> Failure {
        Failure {
            kind,
            shape: shape.to_owned(),
            at_s: self.shared.elapsed(),
            proto: self.proto.name(),
            url: self.path.clone(),
            request: self.request.clone(),
            status: r.status().as_u16(),
            etag: header_str(r, header::ETAG),
            content_range: header_str(r, header::CONTENT_RANGE),
            content_length: header_str(r, header::CONTENT_LENGTH),
            cache_status: header_str(r, header::HeaderName::from_static("cache-status")),
            age: header_str(r, header::AGE),
            expected,
            received: 0,
            complete: true,
            first_wrong: None,
            wrong_bytes: 0,
            belongs_to: None,
            tail_is_other: false,
            detail,
        }
    }

    async fn response(&self, response: Response<Incoming>, seen: &mut HashMap<u32, u64>) -> bool {
        let stats = &self.shared.stats;
        let status = response.status();
        stats.status(status.as_u16());
        stats.cache_status(
            response
                .headers()
                .get("cache-status")
                .and_then(|v| v.to_str().ok()),
        );
        let explained = self.shared.restarts.explains(self.generation);
        match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED => {}
            s => {
                let kind = if s.is_server_error() {
                    "status_5xx"
                } else if s.is_client_error() {
                    "status_4xx"
                } else {
                    "status_other"
                };
                let cs = header_str(&response, header::HeaderName::from_static("cache-status"));
                stats.error(kind, explained, || {
                    format!(
                        "{} {} {} -> {s} (cache-status: {})",
                        self.proto.name(),
                        self.path,
                        self.request,
                        cs.unwrap_or_default()
                    )
                });
                return drain(response).await;
            }
        }
        let object = self.plan.object;
        let etag = header_str(&response, header::ETAG);
        let Some((tag_object, version)) = etag.as_deref().and_then(Catalog::parse_etag) else {
            stats.failure(self.failure(
                ("corrupt", "no usable ETag"),
                &response,
                (0, 0),
                format!("no ETag of the form \"<object>-v<version>\": {etag:?}"),
            ));
            return drain(response).await;
        };
        if tag_object != object {
            stats.failure(self.failure(
                ("corrupt", "ETag of another object"),
                &response,
                (0, 0),
                format!("the ETag names object {tag_object}"),
            ));
            return drain(response).await;
        }
        let catalog = &self.shared.catalog;
        if version > catalog.current(object) {
            stats.failure(self.failure(
                ("corrupt", "ETag of a version not made yet"),
                &response,
                (0, 0),
                format!(
                    "the ETag names version {version}, the origin is at {}",
                    catalog.current(object)
                ),
            ));
            return drain(response).await;
        }
        // The other validator must name the same version as the ETag.
        let last_modified = header_str(&response, header::LAST_MODIFIED);
        if let Some(lm) = &last_modified
            && httpdate::parse_http_date(lm).ok() != Some(catalog.last_modified(version))
        {
            stats.failure(self.failure(
                ("corrupt", "Last-Modified of another version"),
                &response,
                (0, 0),
                format!(
                    "Last-Modified {lm}, version {version}'s is {}",
                    httpdate::fmt_http_date(catalog.last_modified(version))
                ),
            ));
            return drain(response).await;
        }
        seen.insert(object, version);
        if status == StatusCode::NOT_MODIFIED {
            // Only a conditional request may get a 304, and it must confirm what was sent:
            // If-None-Match its very version, If-Modified-Since a version no later than it.
            let confirms = match self.plan.condition {
                Some(Validator::Tag(v)) => version == v,
                Some(Validator::Date(v)) => version <= v,
                None => false,
            };
            if confirms {
                stats.not_modified.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.failure(self.failure(
                    ("corrupt", "304 not matching the request"),
                    &response,
                    (0, 0),
                    format!(
                        "304 of version {version} for a request with {:?}",
                        self.request
                    ),
                ));
            }
            return drain(response).await;
        }
        if status == StatusCode::PARTIAL_CONTENT
            && let Some(sent) = self.plan.if_range
            && sent.version() != version
        {
            // RFC 9110 13.1.5: a range of another version than If-Range names must not be sent.
            stats.failure(self.failure(
                ("mismatched", "206 of another version than If-Range"),
                &response,
                (0, 0),
                format!(
                    "206 for If-Range {}, of version {version}",
                    sent.value(object, catalog)
                ),
            ));
            return drain(response).await;
        }
        let len = self.shared.catalog.len(object, version);
        let content_length = header_str(&response, header::CONTENT_LENGTH);
        let expected = if status == StatusCode::PARTIAL_CONTENT {
            let want = self.plan.ask.resolve(len);
            let got = header_str(&response, header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range);
            match got {
                Some((a, b, total)) if (a, b) == want && total == len => want,
                _ => {
                    stats.failure(self.failure(
                        ("corrupt", "wrong Content-Range"),
                        &response,
                        want,
                        format!(
                            "Content-Range does not match the request for version {version} (length {len})"
                        ),
                    ));
                    return drain(response).await;
                }
            }
        } else {
            if !matches!(self.plan.ask, Ask::Whole) {
                stats.range_as_full.fetch_add(1, Ordering::Relaxed);
            }
            (0, len)
        };
        if let Some(cl) = &content_length
            && cl.parse::<u64>().ok() != Some(expected.1 - expected.0)
        {
            stats.failure(self.failure(
                ("corrupt", "wrong Content-Length"),
                &response,
                expected,
                format!(
                    "Content-Length {cl}, but the range is {} bytes",
                    expected.1 - expected.0
                ),
            ));
            return drain(response).await;
        }
        self.body(response, object, version, expected).await
    }

    /// Reads and checks the body; returns whether the connection can be reused.
    async fn body(
        &self,
        mut response: Response<Incoming>,
        object: u32,
        version: u64,
        expected: (u64, u64),
    ) -> bool {
        let stats = &self.shared.stats;
        let catalog = &self.shared.catalog;
        let (start, end) = expected;
        let mut verifier = Verifier::new(
            catalog.salt,
            object,
            version,
            start,
            self.shared.versions.clone(),
        );
        let abort_after = self
            .plan
            .abort_at
            .map(|f| start + ((end - start) as f64 * f) as u64);
        let mut outcome: Result<(), String> = Ok(());
        let mut aborted = false;
        let body = response.body_mut();
        loop {
            if let Some(stop) = abort_after
                && verifier.position() >= stop
                && verifier.position() < end
            {
                aborted = true;
                break;
            }
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = end.saturating_sub(verifier.position()) as usize;
                        if data.len() > room {
                            verifier.feed(&data[..room]);
                            outcome =
                                Err(format!("more body than the {} bytes expected", end - start));
                            break;
                        }
                        verifier.feed(&data);
                    }
                }
                Some(Err(e)) => {
                    outcome = Err(format!("body cut off: {:#}", anyhow::Error::new(e)));
                    break;
                }
            }
        }
        let received = verifier.position() - start;
        stats.bytes_verified.fetch_add(received, Ordering::Relaxed);
        let finding = verifier.finish();
        let complete = !aborted && outcome.is_ok();
        let mut f = self.failure(("corrupt", ""), &response, expected, String::new());
        f.received = received;
        f.complete = complete;
        if let Some(first) = finding.first_wrong {
            f.first_wrong = Some(first);
            f.wrong_bytes = finding.wrong_bytes;
            f.tail_is_other = finding.tail_is_other;
            match finding.belongs_to {
                Some(o) if o.object == object => {
                    f.kind = "mismatched";
                    f.belongs_to = Some(format!("{}-v{}", o.object, o.version));
                    f.detail = format!(
                        "bytes from offset {first} are version {} (identified by {} bytes), the response says {version}",
                        o.version, finding.identified_by
                    );
                    let which = match o.version.cmp(&version) {
                        std::cmp::Ordering::Greater if o.version == version + 1 => {
                            "the next version"
                        }
                        std::cmp::Ordering::Greater => "a later version",
                        _ => "an earlier version",
                    };
                    let slice = self.shared.settings.slice_size;
                    let from = if first == start {
                        "from the first byte"
                    } else if first.is_multiple_of(slice) {
                        "from a slice boundary"
                    } else {
                        "from inside a slice"
                    };
                    let rest = if finding.tail_is_other {
                        "to the end"
                    } else {
                        "in parts"
                    };
                    f.shape = format!("{which} {from} {rest}");
                }
                Some(o) => {
                    f.belongs_to = Some(format!("{}-v{}", o.object, o.version));
                    f.detail = format!("bytes from offset {first} are object {}'s", o.object);
                    f.shape = "bytes of another object".into();
                }
                None => {
                    f.detail = format!("bytes from offset {first} are from no version");
                    f.shape = "bytes of no version".into();
                }
            }
            if let Err(e) = &outcome {
                f.detail.push_str(&format!("; then {e}"));
            }
            stats.failure(f);
            return false;
        }
        if aborted {
            stats.aborted.fetch_add(1, Ordering::Relaxed);
            // Dropping the body resets the HTTP/2 stream; an HTTP/1.1 connection is lost.
            return matches!(self.proto, Proto::H2);
        }
        match outcome {
            Ok(()) if start + received == end => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                if response.status() == StatusCode::PARTIAL_CONTENT {
                    stats.ok_partial.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.ok_full.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Ok(()) => {
                f.detail = format!(
                    "the body ended cleanly after {received} of {} bytes",
                    end - start
                );
                f.shape = "short body ended cleanly".into();
                stats.failure(f);
                false
            }
            Err(e) if e.starts_with("more body") => {
                f.detail = e;
                f.shape = "body longer than its length".into();
                stats.failure(f);
                false
            }
            Err(e) => {
                stats.error(
                    "truncated",
                    self.shared.restarts.explains(self.generation),
                    || {
                        format!(
                            "{} {} {} {}: {e} after {received} of {} bytes (cache-status: {})",
                            self.proto.name(),
                            self.path,
                            self.request,
                            f.etag.clone().unwrap_or_default(),
                            end - start,
                            f.cache_status.clone().unwrap_or_default()
                        )
                    },
                );
                false
            }
        }
    }
}

/// Reads and discards the rest of a body; whether the connection can be reused.
async fn drain(response: Response<Incoming>) -> bool {
    response.into_body().collect().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 10, 100)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
    }

    #[test]
    fn asks_resolve() {
        assert_eq!(Ask::Whole.resolve(10), (0, 10));
        assert_eq!(Ask::From(3).resolve(10), (3, 10));
        assert_eq!(Ask::Span(3, 4).resolve(10), (3, 5));
        assert_eq!(Ask::Span(3, 40).resolve(10), (3, 10));
        assert_eq!(Ask::Suffix(4).resolve(10), (6, 10));
        assert_eq!(Ask::Suffix(40).resolve(10), (0, 10));
    }
}
