//! The origin side: where a site's content comes from, and the pooled client that fetches it.
//!
//! One [`OriginClient`] serves every origin: a keep-alive pool (HTTP/1.1, or HTTP/2 where the
//! origin's TLS offers it), connect / first-byte / idle-body timeouts, and a cap on concurrent
//! requests per origin so one slow origin cannot take every connection slot. An origin with a
//! connect timeout of its own (an origin group member's) connects through a handle of the same
//! client ([`OriginClient::with_connect_timeout`]), whose pool is shared by every origin with
//! that timeout.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::body::{Body, BoxError};
use crate::config::OriginConfig;

/// An origin base URL: scheme, authority and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix without a trailing slash ("" for none).
    pub prefix: String,
}

/// Why an origin URL was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginUrlError {
    #[error("not a URL: {0}")]
    Syntax(String),
    #[error("scheme must be http or https")]
    Scheme,
    #[error("a query string is not allowed in an origin URL")]
    Query,
}

impl OriginUrl {
    /// Parses `http://host[:port][/prefix]` or `https://…`.
    pub fn parse(text: &str) -> Result<Self, OriginUrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|e: http::uri::InvalidUri| OriginUrlError::Syntax(e.to_string()))?;
        let scheme = uri.scheme().cloned().ok_or(OriginUrlError::Scheme)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(OriginUrlError::Scheme);
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| OriginUrlError::Syntax("missing host".into()))?;
        if uri.query().is_some() {
            return Err(OriginUrlError::Query);
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            prefix,
        })
    }

    /// The absolute URI for a client's path-and-query on this origin.
    pub fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
    }
}

impl std::fmt::Display for OriginUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

/// An origin request that failed. Each kind maps to one client-facing status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    #[error("origin connect timed out")]
    ConnectTimeout,
    #[error("origin unreachable: {0}")]
    Connect(String),
    #[error("origin sent no response head within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("origin request failed: {0}")]
    Protocol(String),
    #[error("cannot build the origin request: {0}")]
    Request(String),
    #[error("origin body failed before its first byte: {0}")]
    Body(String),
    /// The client's request body failed while it was being forwarded (bad chunked encoding,
    /// client gone): the client's fault, not the origin's.
    #[error("request body invalid: {0}")]
    ClientBody(String),
}

impl OriginError {
    /// 504 for timeouts, 400 for the client's own body, 502 for everything else the origin
    /// did wrong.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::ConnectTimeout | Self::FirstByteTimeout(_) => http::StatusCode::GATEWAY_TIMEOUT,
            Self::Request(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            Self::ClientBody(_) => http::StatusCode::BAD_REQUEST,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the origin is at fault (counted in the origin error metric).
    pub fn is_origin_fault(&self) -> bool {
        !matches!(self, Self::ClientBody(_) | Self::Request(_))
    }

    /// Whether another origin (or a later try) may succeed where this one failed: the
    /// origin's own failures, not a request that cannot be built or a client's bad body.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ConnectTimeout
            | Self::Connect(_)
            | Self::FirstByteTimeout(_)
            | Self::Protocol(_)
            | Self::Body(_) => true,
            Self::Request(_) | Self::ClientBody(_) => false,
        }
    }
}

/// The origin body stopped for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("origin body idle for more than {0:?}")]
pub(crate) struct IdleBodyTimeout(pub Duration);

type Pooled = Client<HttpsConnector<Destination>, Body>;

/// Where a pool's connections go: the request URI's authority, or, for an upstream that is
/// sent another host than its own (a parent or peer edge, an origin with `forward_host` or a
/// `host` of its own), always the upstream's address. Such a request's URI carries the host
/// it is for, so that HTTP/2's `:authority` says the same as `Host` (RFC 9113 8.3.1: a
/// server may refuse a request where they differ, and an edge does); the connection, and the
/// name its TLS certificate is checked against, are the upstream's.
#[derive(Clone)]
struct Destination {
    tcp: HttpConnector,
    to: Option<Uri>,
}

impl tower_service::Service<Uri> for Destination {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(self.to.clone().unwrap_or(uri));
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// Pooled client for all origins. Cloning it is cheap: clones share the pools and the
/// per-origin concurrency caps.
#[derive(Clone)]
pub struct OriginClient {
    /// The pool this handle connects through (its connect timeout's).
    client: Pooled,
    config: OriginConfig,
    limits: Arc<Mutex<HashMap<Authority, Arc<Semaphore>>>>,
    /// One pool per connect timeout and fixed destination in use (`origin.connect_timeout`
    /// to wherever the URI says included): a connector's timeout and destination are fixed
    /// when it is built, and hyper hands it only the URI.
    pools: Arc<Mutex<HashMap<PoolKey, Pooled>>>,
    tls: Arc<rustls::ClientConfig>,
    /// This handle's connect timeout.
    connect_timeout: Duration,
    /// The fixed destination of this handle's pool (see [`Destination`]), which its
    /// concurrency cap counts by; `None`: the URI's authority.
    destination: Option<OriginUrl>,
}

type PoolKey = (Duration, Option<OriginUrl>);

impl OriginClient {
    /// Builds the client; fails only if `ca_file` cannot be read.
    pub fn new(config: &OriginConfig) -> Result<Self, shared::tls::TlsError> {
        let tls = Arc::new(shared::tls::client_config(config.ca_file.as_deref())?);
        let client = pool(config, &tls, config.connect_timeout, None);
        let pools = HashMap::from([((config.connect_timeout, None), client.clone())]);
        Ok(Self {
            client,
            config: config.clone(),
            limits: Arc::default(),
            pools: Arc::new(Mutex::new(pools)),
            tls,
            connect_timeout: config.connect_timeout,
            destination: None,
        })
    }

    /// A handle on the pool of `key` (made on first use), sharing everything else.
    fn handle(&self, key: PoolKey) -> Self {
        let client = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| pool(&self.config, &self.tls, key.0, key.1.as_ref()))
            .clone();
        Self {
            client,
            connect_timeout: key.0,
            destination: key.1,
            ..self.clone()
        }
    }

    /// This client, connecting every request to `to` whatever authority its URI names (see
    /// [`Destination`]): for an upstream sent another host than its own. Called when a site's
    /// upstream is built, never per request.
    pub fn to_destination(&self, to: &OriginUrl) -> Self {
        self.handle((self.connect_timeout, Some(to.clone())))
    }

    /// This client, connecting with `connect_timeout` instead of `origin.connect_timeout`:
    /// called when a site's upstream is built, never per request. Handles with one timeout
    /// share one pool; the concurrency cap per origin is shared by all.
    pub fn with_connect_timeout(&self, connect_timeout: Duration) -> Self {
        self.handle((connect_timeout, self.destination.clone()))
    }

    /// Sends `req` (absolute URI) and returns the response head with a body guarded by the
    /// idle-body timeout and holding the origin's concurrency slot until it ends.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, OriginError> {
        self.send_within(req, None).await
    }

    /// As [`OriginClient::send`], with this origin's own first-byte timeout if given.
    pub async fn send_within(
        &self,
        req: Request<Body>,
        first_byte_timeout: Option<Duration>,
    ) -> Result<Response<Body>, OriginError> {
        let authority = match &self.destination {
            Some(to) => to.authority.clone(),
            None => req
                .uri()
                .authority()
                .cloned()
                .ok_or_else(|| OriginError::Request("origin URI has no authority".into()))?,
        };
        let timeout = first_byte_timeout.unwrap_or(self.config.first_byte_timeout);
        let deadline = Instant::now() + timeout;
        let permit = tokio::time::timeout_at(deadline, self.slot(authority))
            .await
            .map_err(|_| OriginError::FirstByteTimeout(timeout))?;
        let response = tokio::time::timeout_at(deadline, self.client.request(req))
            .await
            .map_err(|_| OriginError::FirstByteTimeout(timeout))?
            .map_err(classify)?;
        let idle = self.config.idle_body_timeout;
        let (parts, body) = response.into_parts();
        let guarded = crate::body::boxed(IdleGuard {
            inner: body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
        });
        // A body that fails before its first byte fails the request here, while the edge
        // can still answer 502 instead of a head followed by nothing.
        let body = crate::body::primed(guarded)
            .await
            .map_err(|e| OriginError::Body(error_chain(&*e)))?;
        Ok(Response::from_parts(parts, body))
    }

    async fn slot(&self, authority: Authority) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(authority)
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_concurrent)))
                .clone()
        };
        // The semaphore is never closed, so acquisition cannot fail.
        semaphore
            .acquire_owned()
            .await
            .expect("origin semaphore is never closed")
    }
}

/// A pool whose connections are made within `connect_timeout` (TCP; TLS is bounded by the
/// first-byte timeout).
fn pool(
    config: &OriginConfig,
    tls: &rustls::ClientConfig,
    connect_timeout: Duration,
    to: Option<&OriginUrl>,
) -> Pooled {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http();
    let builder = match to {
        // The certificate is the destination's, whatever host the request is for.
        Some(to) => {
            let host = to
                .authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            match rustls::pki_types::ServerName::try_from(host.to_owned()) {
                Ok(name) => builder
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
                Err(_) => builder,
            }
        }
        None => builder,
    };
    let destination = Destination {
        tcp: http,
        to: to.and_then(|to| {
            Uri::builder()
                .scheme(to.scheme.clone())
                .authority(to.authority.clone())
                .path_and_query("/")
                .build()
                .ok()
        }),
    };
    let connector = builder
        .enable_http1()
        .enable_http2()
        .wrap_connector(destination);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.max_idle_per_host)
        .build(connector)
}

/// Marks errors of a client's request body on its way to the origin, so that they are told
/// apart from the origin's own failures ([`OriginError::ClientBody`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ClientBodyError(String);

/// A client's request body, ready to forward: its failures become [`OriginError::ClientBody`].
pub(crate) fn client_body(body: Body) -> Body {
    use http_body_util::BodyExt as _;
    body.map_err(|e| Box::new(ClientBodyError(error_chain(&*e))) as BoxError)
        .boxed_unsync()
}

fn classify(err: hyper_util::client::legacy::Error) -> OriginError {
    let client_fault =
        std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .find_map(|e| e.downcast_ref::<ClientBodyError>());
    if let Some(e) = client_fault {
        return OriginError::ClientBody(e.0.clone());
    }
    if err.is_connect() {
        let timed_out =
            std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            });
        if timed_out {
            return OriginError::ConnectTimeout;
        }
        return OriginError::Connect(error_chain(&err));
    }
    OriginError::Protocol(error_chain(&err))
}

/// "outer: inner: innermost", for logs and error bodies.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

pin_project_lite::pin_project! {
    /// Fails the body when the origin sends nothing for `idle`; holds the concurrency permit.
    struct IdleGuard<B> {
        #[pin]
        inner: B,
        idle: Duration,
        timer: Pin<Box<Sleep>>,
        _permit: OwnedSemaphorePermit,
    }
}

impl<B> http_body::Body for IdleGuard<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleBodyTimeout(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_origins_own_failures_are_retried_elsewhere() {
        assert!(OriginError::ConnectTimeout.is_retryable());
        assert!(OriginError::FirstByteTimeout(Duration::from_secs(1)).is_retryable());
        assert!(OriginError::Connect("refused".into()).is_retryable());
        assert!(!OriginError::ClientBody("bad chunk".into()).is_retryable());
        assert!(!OriginError::Request("no authority".into()).is_retryable());
    }

    #[test]
    fn origin_urls_parse_and_join() {
        let o = OriginUrl::parse("https://origin.example.com:8443/assets/").unwrap();
        assert_eq!(o.prefix, "/assets");
        assert_eq!(
            o.join("/a.css?v=1").unwrap().to_string(),
            "https://origin.example.com:8443/assets/a.css?v=1"
        );
        let plain = OriginUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            plain.join("/").unwrap().to_string(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            OriginUrl::parse("ftp://x").unwrap_err(),
            OriginUrlError::Scheme
        );
        assert_eq!(
            OriginUrl::parse("http://x/?q").unwrap_err(),
            OriginUrlError::Query
        );
        assert!(OriginUrl::parse("not a url").is_err());
        assert!(OriginUrl::parse("/relative").is_err());
    }

    #[tokio::test]
    async fn refused_connection_is_a_bad_gateway() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = OriginClient::new(&OriginConfig::default()).unwrap();
        let req = Request::get(format!("http://{addr}/"))
            .body(crate::body::empty())
            .unwrap();
        let err = client.send(req).await.unwrap_err();
        assert!(matches!(err, OriginError::Connect(_)), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn silent_origin_hits_the_first_byte_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let config = OriginConfig {
            first_byte_timeout: Duration::from_millis(200),
            ..OriginConfig::default()
        };
        let client = OriginClient::new(&config).unwrap();
        let req = Request::get(format!("http://{addr}/"))
            .body(crate::body::empty())
            .unwrap();
        let err = client.send(req).await.unwrap_err();
        assert!(matches!(err, OriginError::FirstByteTimeout(_)), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
        hold.abort();
    }
}
