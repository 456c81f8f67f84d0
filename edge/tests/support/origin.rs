//! A scripted HTTP/1.1 + h2c origin that integration tests point the edge at.
//!
//! Tests script replies per path with [`Reply`] and then inspect what the
//! origin saw ([`TestOrigin::hits`], [`TestOrigin::requests`]) and what it
//! actually wrote ([`TestOrigin::bytes_sent`]).

// Every test binary compiles this module but uses only part of it, and in a
// test binary nothing is reachable from outside the crate.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Size of the data frames the origin writes.
const FRAME: usize = 64 * 1024;

/// Period of the generated pattern: a prime, so no power-of-two or frame-sized
/// offset mistake can line up with a repetition and go unnoticed.
const PATTERN_PERIOD: usize = 1_000_003;

/// The pattern table: one period plus one frame, so any frame-sized window is
/// a contiguous zero-copy slice.
fn pattern_table() -> &'static Bytes {
    static TABLE: OnceLock<Bytes> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut v: Vec<u8> = (0u64..)
            .flat_map(|w| splitmix64(w).to_le_bytes())
            .take(PATTERN_PERIOD)
            .collect();
        v.extend_from_within(..FRAME);
        Bytes::from(v)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte `i` of every [`Reply::generated`] body.
pub fn pattern_byte(i: u64) -> u8 {
    pattern_table()[(i % PATTERN_PERIOD as u64) as usize]
}

/// `len <= FRAME` pattern bytes starting at `offset`, without copying.
fn pattern_slice(offset: u64, len: usize) -> Bytes {
    debug_assert!(len <= FRAME);
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    pattern_table().slice(start..start + len)
}

/// Pattern bytes `offset..offset + len`.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = offset;
    while out.len() < len {
        let take = (len - out.len()).min(FRAME);
        out.extend_from_slice(&pattern_slice(pos, take));
        pos += take as u64;
    }
    out
}

/// Checks `data` against the pattern starting at `offset`; on mismatch returns
/// the absolute offset of the first wrong byte. Fast enough for GiB bodies.
pub fn pattern_check(offset: u64, data: &[u8]) -> Result<(), u64> {
    let mut pos = offset;
    for piece in data.chunks(FRAME) {
        let expected = pattern_slice(pos, piece.len());
        if piece != &expected[..] {
            let i = piece
                .iter()
                .zip(expected.iter())
                .take_while(|(a, b)| a == b)
                .count();
            return Err(pos + i as u64);
        }
        pos += piece.len() as u64;
    }
    Ok(())
}

/// What the origin answers for a path. Builder style; cheap to clone.
#[derive(Clone)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Source,
    delay_head: Option<Duration>,
    reset_after: Option<u64>,
    script: Option<Script>,
    chunked: bool,
    trickle: Option<(usize, Duration)>,
}

#[derive(Clone)]
enum Source {
    Bytes(Bytes),
    Generated(u64),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::Generated(len) => *len,
        }
    }
}

type DynamicFn = dyn Fn(&http::request::Parts) -> Reply + Send + Sync;

#[derive(Clone)]
enum Script {
    Hang,
    Sequence(Arc<[Reply]>),
    Dynamic(Arc<DynamicFn>),
}

impl Reply {
    /// 200 with `body` and a matching Content-Length.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::status(200).body(body)
    }

    /// `code` with an empty body.
    pub fn status(code: u16) -> Self {
        Self {
            status: StatusCode::from_u16(code).expect("Reply::status: invalid status code"),
            headers: Vec::new(),
            body: Source::Bytes(Bytes::new()),
            delay_head: None,
            reset_after: None,
            script: None,
            chunked: false,
            trickle: None,
        }
    }

    /// Appends a header (repeat the call for multi-valued headers). A
    /// Content-Length given here replaces the computed one.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = Source::Bytes(b.into());
        self
    }

    /// 200 with `len` bytes of [`pattern_byte`], produced frame by frame.
    pub fn generated(len: u64) -> Self {
        Self {
            body: Source::Generated(len),
            ..Self::status(200)
        }
    }

    /// Sends the body without Content-Length (chunked over HTTP/1.1).
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Sends the body in frames of `frame` bytes, `gap` apart (the first at once): a body
    /// still streaming while other requests come.
    pub fn trickle(mut self, frame: usize, gap: Duration) -> Self {
        self.trickle = Some((frame.max(1), gap));
        self
    }

    /// Waits `d` before sending the response head.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay_head = Some(d);
        self
    }

    /// Sends the head and the first `n` body bytes, then fails the body, which
    /// makes hyper drop the connection (h1) or reset the stream (h2). Has no
    /// effect when the body is not longer than `n`.
    pub fn reset_after(mut self, n: u64) -> Self {
        self.reset_after = Some(n);
        self
    }

    /// Never answers; the request stays open until the client gives up.
    pub fn hang() -> Self {
        Self {
            script: Some(Script::Hang),
            ..Self::status(200)
        }
    }

    /// The k-th request since [`TestOrigin::route`] gets `replies[k]`; the
    /// last one repeats. Headers, delay and reset set on the sequence itself
    /// apply to every reply.
    pub fn sequence(replies: Vec<Self>) -> Self {
        assert!(
            !replies.is_empty(),
            "Reply::sequence needs at least one reply"
        );
        Self {
            script: Some(Script::Sequence(replies.into())),
            ..Self::status(200)
        }
    }

    /// Computes the reply from the request head. Headers, delay and reset set
    /// on the dynamic reply itself apply to every computed reply.
    pub fn dynamic(f: impl Fn(&http::request::Parts) -> Self + Send + Sync + 'static) -> Self {
        Self {
            script: Some(Script::Dynamic(Arc::new(f))),
            ..Self::status(200)
        }
    }

    /// Turns scripts into a concrete reply; `None` means hang.
    fn resolve(mut self, k: usize, req: &http::request::Parts) -> Option<Self> {
        let inner = match self.script.take() {
            None => return Some(self),
            Some(Script::Hang) => return None,
            Some(Script::Sequence(list)) => list[k.min(list.len() - 1)].clone(),
            Some(Script::Dynamic(f)) => f(req),
        };
        let mut inner = inner.resolve(k, req)?;
        inner.headers.extend(self.headers);
        inner.delay_head = inner.delay_head.or(self.delay_head);
        inner.reset_after = inner.reset_after.or(self.reset_after);
        inner.chunked |= self.chunked;
        inner.trickle = inner.trickle.or(self.trickle);
        Some(inner)
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn accepts_ranges(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("accept-ranges") && v.to_ascii_lowercase().contains("bytes")
        })
    }
}

/// A request head as the origin received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Request body length; 0 until the body has been read completely.
    pub body_len: u64,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Route {
    reply: Reply,
    /// Requests answered by this script so far; indexes sequences.
    served: usize,
}

#[derive(Default)]
struct PathStats {
    hits: usize,
    bytes_sent: u64,
    requests: Vec<RecordedRequest>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    stats: HashMap<String, PathStats>,
    total_hits: usize,
    /// Requests whose response head is not yet sent, and the most there have been at once.
    in_flight: usize,
    max_in_flight: usize,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not hide the origin's state from the others.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The scripted origin. Dropping it stops the server.
pub struct TestOrigin {
    addr: SocketAddr,
    state: Shared,
    server: Mutex<Option<Server>>,
}

impl TestOrigin {
    /// Starts listening on 127.0.0.1 on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("test origin: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("test origin: local_addr");
        let state = Shared::default();
        let server = spawn_server(listener, state.clone());
        Self {
            addr,
            state,
            server: Mutex::new(Some(server)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts `path` (path and query, exact match). Replaces the previous
    /// script and restarts its sequence; counters are kept.
    pub fn route(&self, path: &str, reply: Reply) {
        let route = Route { reply, served: 0 };
        lock(&self.state).routes.insert(path.to_owned(), route);
    }

    /// Requests received for `path`, any method.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state).stats.get(path).map_or(0, |s| s.hits)
    }

    pub fn total_hits(&self) -> usize {
        lock(&self.state).total_hits
    }

    /// The most requests the origin has had at once between arrival and response head (a
    /// `delay` on the reply makes that window wide).
    pub fn max_in_flight(&self) -> usize {
        lock(&self.state).max_in_flight
    }

    /// Response body bytes handed to hyper for `path`, counted frame by frame
    /// as they are polled. hyper polls only when it has room to write, so this
    /// is the wire count plus at most hyper's and the kernel's buffers, and it
    /// stops growing once the client goes away.
    pub fn bytes_sent(&self, path: &str) -> u64 {
        lock(&self.state)
            .stats
            .get(path)
            .map_or(0, |s| s.bytes_sent)
    }

    /// Request heads received for `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<RecordedRequest> {
        lock(&self.state)
            .stats
            .get(path)
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Closes the listener and every open connection; returns once they are
    /// closed, so connects are refused afterwards. Idempotent.
    pub async fn shutdown(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            // The task may already have ended if the runtime is going down.
            let _ = server.stop.send(());
            let _ = server.task.await;
        }
    }

    /// Listens again on the same port after [`Self::shutdown`]. No-op while
    /// running.
    pub async fn restart(&self) {
        if self
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let listener = rebind(self.addr).await;
        let server = spawn_server(listener, self.state.clone());
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        // Aborting drops the task's JoinSet, which aborts every connection.
        if let Some(server) = self
            .server
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            server.task.abort();
        }
    }
}

/// An origin address whose TCP handshake never completes: a listener with a backlog of 0
/// that never accepts, its queue already holding one connection. Linux drops the SYNs of a
/// listener whose accept queue is full, so a connect to it hangs until the connector's own
/// timeout (no reset, no refusal), deterministically and on loopback.
pub struct UnansweredOrigin {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl UnansweredOrigin {
    pub fn start() -> Self {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        listener.bind(&any.into()).expect("bind 127.0.0.1:0");
        listener.listen(0).expect("listen");
        let addr = listener
            .local_addr()
            .expect("local_addr")
            .as_socket()
            .expect("an IP address");
        // Connect until one attempt hangs: then the queue is full (one connection, on Linux).
        let mut queued = Vec::new();
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => panic!("filling the listen queue: {e}"),
            }
            assert!(queued.len() < 8, "the listen queue never filled");
        }
        Self {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    // Retries because closed connections may briefly keep the port busy.
    let mut last_err = None;
    for _ in 0..100 {
        let socket = TcpSocket::new_v4().expect("test origin: create socket");
        socket
            .set_reuseaddr(true)
            .expect("test origin: SO_REUSEADDR");
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return listener,
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("test origin: cannot listen on {addr} again: {last_err:?}");
}

fn spawn_server(listener: TcpListener, state: Shared) -> Server {
    let (stop, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, state, stop_rx));
    Server { stop, task }
}

async fn accept_loop(listener: TcpListener, state: Shared, mut stop: oneshot::Receiver<()>) {
    // Connections live in this set so that stopping the loop closes them too.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let state = state.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| handle(state.clone(), req));
                        // Clients aborting mid-response is normal in these tests.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
                // Transient (e.g. out of descriptors): back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

fn path_key(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned()
}

/// Counts a request in flight until its head is answered (or the request is dropped).
struct InFlight(Shared);

impl InFlight {
    fn new(state: &Shared) -> Self {
        let mut st = lock(state);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).in_flight -= 1;
    }
}

async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    let _in_flight = InFlight::new(&state);
    let (parts, mut body) = req.into_parts();
    let key = path_key(&parts.uri);
    let (index, script) = {
        let mut st = lock(&state);
        st.total_hits += 1;
        let stats = st.stats.entry(key.clone()).or_default();
        stats.hits += 1;
        stats.requests.push(RecordedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body_len: 0,
        });
        let index = stats.requests.len() - 1;
        let script = st.routes.get_mut(&key).map(|route| {
            route.served += 1;
            (route.reply.clone(), route.served - 1)
        });
        (index, script)
    };

    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        body_len += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    if let Some(r) = lock(&state)
        .stats
        .get_mut(&key)
        .and_then(|s| s.requests.get_mut(index))
    {
        r.body_len = body_len;
    }

    let reply = match script {
        None => Reply::status(404).body(format!("test origin: no route for {key}\n")),
        Some((reply, k)) => match reply.resolve(k, &parts) {
            Some(reply) => reply,
            // Dropped with the connection when the client or shutdown closes it.
            None => std::future::pending().await,
        },
    };
    if let Some(d) = reply.delay_head {
        tokio::time::sleep(d).await;
    }
    Ok(respond(reply, &parts, state, key))
}

enum RangeOutcome {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// Single `bytes=` ranges only; anything else means "send it all".
fn parse_range(value: &str, len: u64) -> RangeOutcome {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeOutcome::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                return RangeOutcome::Unsatisfiable;
            }
            (len.saturating_sub(n), len - 1)
        }
        _ => return RangeOutcome::Full,
    };
    if start >= len {
        RangeOutcome::Unsatisfiable
    } else {
        RangeOutcome::Partial(start, end)
    }
}

fn respond(
    reply: Reply,
    req: &http::request::Parts,
    state: Shared,
    key: String,
) -> Response<OriginBody> {
    let total = reply.body.len();
    let mut status = reply.status;
    let (mut start, mut end) = (0, total);
    let mut content_range = None;
    let range = req.headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    if let Some(range) = range.filter(|_| status == StatusCode::OK && reply.accepts_ranges()) {
        match parse_range(range, total) {
            RangeOutcome::Full => {}
            RangeOutcome::Partial(s, e) => {
                status = StatusCode::PARTIAL_CONTENT;
                (start, end) = (s, e + 1);
                content_range = Some(format!("bytes {s}-{e}/{total}"));
            }
            RangeOutcome::Unsatisfiable => {
                status = StatusCode::RANGE_NOT_SATISFIABLE;
                end = 0;
                content_range = Some(format!("bytes */{total}"));
            }
        }
    }

    let mut builder = Response::builder().status(status);
    let headers = builder.headers_mut().expect("fresh response builder");
    for (name, value) in &reply.headers {
        let name = HeaderName::try_from(name.as_str()).expect("Reply::header: invalid name");
        let value = HeaderValue::try_from(value.as_str()).expect("Reply::header: invalid value");
        headers.append(name, value);
    }
    if let Some(cr) = content_range {
        let value = HeaderValue::try_from(cr).expect("content-range is ASCII");
        headers.insert(header::CONTENT_RANGE, value);
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !bodiless && !reply.has_header("content-length") && !reply.chunked {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    if req.method == Method::HEAD || bodiless {
        end = start;
    }
    let fail_at = reply
        .reset_after
        .map(|n| start.saturating_add(n))
        .filter(|&at| at < end);
    let body = OriginBody {
        source: reply.body,
        pos: start,
        end,
        fail_at,
        pause: None,
        trickle: reply.trickle.map(|(frame, gap)| (frame, gap, None)),
        meter: (state, key),
    };
    builder.body(body).expect("response parts are valid")
}

type Gap = Pin<Box<tokio::time::Sleep>>;

/// The response body: slices of the scripted bytes or the pattern, counted
/// into `bytes_sent` as hyper takes them.
struct OriginBody {
    source: Source,
    pos: u64,
    end: u64,
    fail_at: Option<u64>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Frame size, gap, and the gap being waited (`None` before the first frame).
    trickle: Option<(usize, Duration, Option<Gap>)>,
    meter: (Shared, String),
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.fail_at == Some(this.pos) {
            // Pause first: hyper flushes while the body is pending, so the
            // bytes already produced reach the client before the reset.
            let pause = this
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(50))));
            ready!(pause.as_mut().poll(cx));
            this.fail_at = None;
            this.end = this.pos;
            let msg = "test origin: scripted reset_after";
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                msg,
            ))));
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let mut frame = FRAME;
        if let Some((size, gap, wait)) = &mut this.trickle {
            if let Some(sleep) = wait {
                ready!(sleep.as_mut().poll(cx));
            }
            *wait = Some(Box::pin(tokio::time::sleep(*gap)));
            frame = (*size).min(FRAME);
        }
        let limit = this.fail_at.unwrap_or(this.end);
        let len = (limit - this.pos).min(frame as u64) as usize;
        let data = match &this.source {
            Source::Bytes(b) => {
                let at = this.pos as usize;
                b.slice(at..at + len)
            }
            Source::Generated(_) => pattern_slice(this.pos, len),
        };
        this.pos += len as u64;
        let (state, key) = &this.meter;
        if let Some(stats) = lock(state).stats.get_mut(key) {
            stats.bytes_sent += len as u64;
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.fail_at.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Unknown on purpose: hyper then trusts the Content-Length header,
        // which tests may set to anything.
        SizeHint::default()
    }
}
