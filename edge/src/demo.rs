//! The built-in demo origin.
//!
//! When the edge starts with no origin configured it runs this tiny HTTP
//! origin on loopback and proxies to it, so a first run shows real cache
//! behaviour (hits, revalidation, stale-while-revalidate, uncacheable
//! responses, a large ranged download) with nothing to set up.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Length of `/big.bin` (256 MiB).
pub const BIG_LEN: u64 = 256 * 1024 * 1024;
const BIG_ETAG: &str = "\"big-v1\"";
const FRAME: usize = 64 * 1024;
/// `/big.bin` repeats with this prime period: every frame is then a zero-copy
/// slice of one small table, and no frame-sized offset bug can go unnoticed.
const BIG_PERIOD: usize = 65_521;

type DemoBody = BoxBody<Bytes, Infallible>;

/// Byte `i` of `/big.bin`.
pub fn big_byte(i: u64) -> u8 {
    big_table()[(i % BIG_PERIOD as u64) as usize]
}

/// One period plus one frame, so any frame is a contiguous slice.
fn big_table() -> &'static Bytes {
    static TABLE: OnceLock<Bytes> = OnceLock::new();
    TABLE.get_or_init(|| {
        let len = BIG_PERIOD + FRAME;
        let v: Vec<u8> = (0..len)
            .map(|j| ((j % BIG_PERIOD) as u32).wrapping_mul(0x9E37_79B1) >> 24)
            .map(|b| b as u8)
            .collect();
        Bytes::from(v)
    })
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>quicdn demo origin</title></head>
<body>
<h1>quicdn demo origin</h1>
<p>You are looking at the built-in demo origin, served to you through the quicdn edge
because no origin is configured. Configure one to proxy your own site instead.</p>
<p>Open your browser's network tools and watch the response headers:
<code>Cache-Status</code> says whether the edge answered from its cache (hit) or went
to the origin (miss, revalidated), <code>Age</code> says how long the response has
been cached, and <code>Via</code> names the edge that handled the request.</p>
<ul>
<li><a href="/hello.txt">/hello.txt</a>: small text, cacheable for 5 minutes</li>
<li><a href="/time">/time</a>: fresh for 5 s, then served stale while the edge revalidates</li>
<li><a href="/private">/private</a>: <code>Cache-Control: private</code>, never cached by the edge</li>
<li><a href="/big.bin">/big.bin</a>: 256 MiB of binary data, with range requests</li>
</ul>
<p>Protocol between your browser and the edge:</p>
<p id="protocol"></p>
<script>
const nav = performance.getEntriesByType('navigation')[0];
document.getElementById('protocol').textContent = nav ? nav.nextHopProtocol : 'unknown';
</script>
</body>
</html>
"#;

const HELLO_TXT: &str = "hello from the quicdn demo origin\n";

/// A fixed resource with validators.
struct Page {
    body: Bytes,
    etag: String,
    content_type: &'static str,
    cache_control: &'static str,
}

impl Page {
    fn new(body: &'static str, content_type: &'static str, cache_control: &'static str) -> Self {
        // FNV-1a: a stable content hash without another dependency.
        let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self {
            body: Bytes::from_static(body.as_bytes()),
            etag: format!("\"{hash:016x}\""),
            content_type,
            cache_control,
        }
    }
}

struct Demo {
    index: Page,
    hello: Page,
    /// Whole seconds, so If-Modified-Since comparisons are exact.
    started: SystemTime,
    last_modified: String,
}

/// The running demo origin; dropping it stops the server and its connections.
pub struct DemoOrigin {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DemoOrigin {
    /// Binds `addr` (normally 127.0.0.1:0) and starts serving.
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let started = UNIX_EPOCH + Duration::from_secs(secs);
        let demo = Arc::new(Demo {
            index: Page::new(INDEX_HTML, "text/html; charset=utf-8", "public, max-age=60"),
            hello: Page::new(HELLO_TXT, "text/plain; charset=utf-8", "max-age=300"),
            started,
            last_modified: httpdate::fmt_http_date(started),
        });
        let task = tokio::spawn(serve(listener, demo));
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, demo: Arc<Demo>) {
    // Connections live in the set so that aborting this task closes them too.
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of descriptors: back off instead of spinning.
                tracing::debug!(%error, "demo origin: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let demo = demo.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let resp = demo.handle(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder.serve_connection(TokioIo::new(tcp), svc).await {
                tracing::debug!(%peer, %error, "demo origin: connection error");
            }
        });
    }
}

impl Demo {
    fn handle<B>(&self, req: &Request<B>) -> Response<DemoBody> {
        let head = req.method() == Method::HEAD;
        if !head && req.method() != Method::GET {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n", None);
            let allow = HeaderValue::from_static("GET, HEAD");
            resp.headers_mut().insert(header::ALLOW, allow);
            return resp;
        }
        let h = req.headers();
        let now = httpdate::fmt_http_date(SystemTime::now());
        let resp = match req.uri().path() {
            "/" => self.page(&self.index, h),
            "/hello.txt" => self.page(&self.hello, h),
            "/time" => {
                let cc = "max-age=5, stale-while-revalidate=30";
                text(StatusCode::OK, format!("origin time: {now}\n"), Some(cc))
            }
            "/private" => {
                let body = format!("private, never cached by the edge: {now}\n");
                text(StatusCode::OK, body, Some("private"))
            }
            "/big.bin" => self.big(h),
            _ => text(StatusCode::NOT_FOUND, "not found\n", None),
        };
        // HEAD keeps every header, Content-Length included, and drops the body.
        if head { resp.map(|_| empty()) } else { resp }
    }

    fn validators(&self, etag: &str, cache_control: &str) -> Vec<(HeaderName, String)> {
        vec![
            (header::ETAG, etag.to_owned()),
            (header::LAST_MODIFIED, self.last_modified.clone()),
            (header::CACHE_CONTROL, cache_control.to_owned()),
        ]
    }

    fn not_modified(&self, h: &HeaderMap, etag: &str) -> bool {
        if let Some(inm) = h.get(header::IF_NONE_MATCH) {
            // Weak comparison, as RFC 9110 requires for If-None-Match.
            let inm = inm.to_str().unwrap_or("");
            return inm
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
        }
        let since = h
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok());
        since
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| self.started <= since)
    }

    fn page(&self, page: &Page, h: &HeaderMap) -> Response<DemoBody> {
        let mut headers = self.validators(&page.etag, page.cache_control);
        if self.not_modified(h, &page.etag) {
            return build(StatusCode::NOT_MODIFIED, headers, empty());
        }
        headers.push((header::CONTENT_TYPE, page.content_type.to_owned()));
        headers.push((header::CONTENT_LENGTH, page.body.len().to_string()));
        build(
            StatusCode::OK,
            headers,
            Full::new(page.body.clone()).boxed(),
        )
    }

    fn big(&self, h: &HeaderMap) -> Response<DemoBody> {
        let mut headers = self.validators(BIG_ETAG, "max-age=86400");
        headers.push((header::ACCEPT_RANGES, "bytes".to_owned()));
        if self.not_modified(h, BIG_ETAG) {
            return build(StatusCode::NOT_MODIFIED, headers, empty());
        }
        headers.push((header::CONTENT_TYPE, "application/octet-stream".to_owned()));
        // If-Range with another validator means "my copy changed: send it all".
        let if_range = h.get(header::IF_RANGE).and_then(|v| v.to_str().ok());
        let range_applies = if_range.is_none_or(|v| v == BIG_ETAG || v == self.last_modified);
        let range = h
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| range_applies);
        let (status, start, end) = match range.and_then(|r| parse_range(r, BIG_LEN)) {
            None => (StatusCode::OK, 0, BIG_LEN),
            Some(Some((first, last))) => {
                headers.push((
                    header::CONTENT_RANGE,
                    format!("bytes {first}-{last}/{BIG_LEN}"),
                ));
                (StatusCode::PARTIAL_CONTENT, first, last + 1)
            }
            Some(None) => {
                headers.push((header::CONTENT_RANGE, format!("bytes */{BIG_LEN}")));
                (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0)
            }
        };
        headers.push((header::CONTENT_LENGTH, (end - start).to_string()));
        build(status, headers, big_body(start, end))
    }
}

/// `None`: serve everything (no, invalid or multiple ranges); `Some(None)`:
/// unsatisfiable; `Some(Some((first, last)))`: inclusive byte range.
fn parse_range(value: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let n: u64 = last.parse().ok()?;
        return Some((n > 0 && len > 0).then(|| (len.saturating_sub(n), len - 1)));
    }
    let first: u64 = first.parse().ok()?;
    let last = if last.is_empty() {
        u64::MAX
    } else {
        last.parse().ok()?
    };
    if last < first {
        return None;
    }
    Some((first < len).then(|| (first, last.min(len - 1))))
}

/// `/big.bin` bytes `start..end`, produced one frame at a time.
fn big_body(start: u64, end: u64) -> DemoBody {
    let frames = futures_util::stream::iter((start..end).step_by(FRAME)).map(move |offset| {
        let len = (end - offset).min(FRAME as u64) as usize;
        let at = (offset % BIG_PERIOD as u64) as usize;
        Ok(Frame::data(big_table().slice(at..at + len)))
    });
    BodyExt::boxed(StreamBody::new(frames))
}

fn empty() -> DemoBody {
    Empty::new().boxed()
}

fn text(status: StatusCode, body: impl Into<String>, cc: Option<&str>) -> Response<DemoBody> {
    let body = body.into();
    let mut headers = vec![
        (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        (header::CONTENT_LENGTH, body.len().to_string()),
    ];
    if let Some(cc) = cc {
        headers.push((header::CACHE_CONTROL, cc.to_owned()));
    }
    build(status, headers, Full::new(Bytes::from(body)).boxed())
}

fn build(
    status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: DemoBody,
) -> Response<DemoBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for (name, value) in headers {
        // Every value is built above from ASCII; skipping beats panicking.
        if let Ok(value) = HeaderValue::try_from(value) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;

    /// Sends `request` ("METHOD /path") with one `header` ("name: value");
    /// returns the status, the value of header `want`, and the body.
    async fn fetch(
        o: &DemoOrigin,
        request: &str,
        header: &str,
        want: &str,
    ) -> (u16, String, Bytes) {
        let (method, path) = request.split_once(' ').expect("METHOD /path");
        let (name, value) = header.split_once(": ").expect("name: value");
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", o.url()));
        let req = req
            .header(name, value)
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let client = Client::builder(TokioExecutor::new()).build_http();
        let (parts, body) = client.request(req).await.expect("answer").into_parts();
        let got = parts
            .headers
            .get(want)
            .map(|v| v.to_str().expect("ASCII header"));
        let body = body.collect().await.expect("complete body").to_bytes();
        (parts.status.as_u16(), got.unwrap_or("").to_owned(), body)
    }

    #[tokio::test]
    async fn serves_pages_ranges_head_and_304() {
        let o = DemoOrigin::start(([127, 0, 0, 1], 0).into())
            .await
            .expect("start");
        let (status, etag, body) = fetch(&o, "GET /", "accept: */*", "etag").await;
        let html = String::from_utf8_lossy(&body);
        assert_eq!(status, 200);
        assert!(html.contains("<title>quicdn demo origin</title>"));
        assert!(html.contains(r#"<p id="protocol"></p>"#));
        let inm = format!("if-none-match: {etag}");
        #[rustfmt::skip] // a table reads best one case per line
        let cases = [
            ("GET /", inm.as_str(), 304, "etag", etag.as_str()),
            ("GET /big.bin", "if-none-match: W/\"big-v1\"", 304, "etag", BIG_ETAG),
            ("HEAD /big.bin", "accept: */*", 200, "content-length", "268435456"),
            ("GET /big.bin", "range: bytes=300000000-", 416, "content-range", "bytes */268435456"),
            ("POST /hello.txt", "accept: */*", 405, "allow", "GET, HEAD"),
            ("GET /hello.txt", "accept: */*", 200, "cache-control", "max-age=300"),
            ("GET /private", "accept: */*", 200, "cache-control", "private"),
            ("GET /nope", "accept: */*", 404, "content-length", "10"),
        ];
        for (request, header, status, name, value) in cases {
            let got = fetch(&o, request, header, name).await;
            assert_eq!(
                (got.0, got.1.as_str()),
                (status, value),
                "{request} {header}"
            );
            if request.starts_with("HEAD") || status == 304 {
                assert!(got.2.is_empty(), "{request} {header}: body must be empty");
            }
        }
        for (range, first, len) in [("65000-200000", 65_000, 135_001), ("-10", BIG_LEN - 10, 10)] {
            let want = format!("bytes {first}-{}/{BIG_LEN}", first + len - 1);
            let header = format!("range: bytes={range}");
            let (status, cr, body) = fetch(&o, "GET /big.bin", &header, "content-range").await;
            assert_eq!((status, cr, body.len() as u64), (206, want, len));
            let ok = body.iter().zip(first..).all(|(b, i)| *b == big_byte(i));
            assert!(ok, "{range}: wrong bytes");
        }
    }

    #[test]
    fn range_parsing() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=90-1000", 100), Some(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Some(Some((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(None));
        assert_eq!(parse_range("bytes=-0", 100), Some(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
