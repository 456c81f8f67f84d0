//! A small HTTP/1.1 admin listener: each binary answers its own paths (`/metrics`, `/health`,
//! an API) from an [`AdminRequest`], and routes `POST /reload` to [`reload_answer`] with its
//! [`Reloader`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::reload::{Reloader, Trigger};

/// Largest request body the admin listener reads: an API call (a purge, a list of URLs to
/// pre-warm) is small; more is refused with 413 before the handler runs.
pub const MAX_BODY: usize = 1024 * 1024;

/// One admin request, its body read whole (at most [`MAX_BODY`]).
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The client's address: the API trusts a loopback peer when no tokens are configured.
    pub peer: SocketAddr,
    pub body: Bytes,
}

/// One admin answer.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Headers besides `Content-Type` (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

impl AdminResponse {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON document already serialized.
    pub fn json(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            content_type: "application/json",
            ..Self::text(status, body)
        }
    }

    /// Prometheus text exposition.
    pub fn metrics(body: String) -> Self {
        Self {
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ..Self::text(StatusCode::OK, body)
        }
    }

    pub fn not_found() -> Self {
        Self::text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /health\n",
        )
    }

    /// 405 naming the method the path takes.
    pub fn method_not_allowed(path: &str, allowed: Method) -> Self {
        let mut a = Self::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path}: use {allowed}\n"),
        );
        if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
            a.headers.push((header::ALLOW, v));
        }
        a
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Serves `answer(request)` for every request until `shutdown` turns true. A body larger
/// than [`MAX_BODY`] is answered 413 without calling `answer`.
pub async fn serve<F, Fut>(listener: TcpListener, answer: F, mut shutdown: watch::Receiver<bool>)
where
    F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = AdminResponse> + Send + 'static,
{
    let answer = Arc::new(answer);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (answer, builder) = (answer.clone(), builder.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let answer = answer.clone();
                async move {
                    let a = match read(req, peer).await {
                        Ok(req) => answer(req).await,
                        Err(refused) => refused,
                    };
                    Ok::<_, Infallible>(to_response(a))
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The request with its body read, or the answer that refuses it.
async fn read(
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Result<AdminRequest, AdminResponse> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(AdminResponse::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY} bytes\n"),
            ));
        }
        Err(e) => {
            return Err(AdminResponse::text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}\n"),
            ));
        }
    };
    Ok(AdminRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        peer,
        body,
    })
}

/// `POST /reload`: 200 with what was applied, 422 with why the new config was rejected, 405
/// for another method.
pub async fn reload_answer(reloader: &Reloader, method: &Method) -> AdminResponse {
    if method != Method::POST {
        return AdminResponse::method_not_allowed("/reload", Method::POST);
    }
    match reloader.reload(Trigger::Request).await {
        Ok(summary) => AdminResponse::text(StatusCode::OK, format!("reloaded: {summary}\n")),
        Err(e) => AdminResponse::text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload rejected, the running configuration stays in use: {e:#}\n"),
        ),
    }
}

fn to_response(a: AdminResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(a.body)));
    *response.status_mut() = a.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    for (name, value) in a.headers {
        headers.append(name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start<F, Fut>(answer: F) -> (SocketAddr, watch::Sender<bool>)
    where
        F: Fn(AdminRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AdminResponse> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(listener, answer, stopped));
        (addr, stop)
    }

    /// A raw HTTP/1.1 exchange: the status line and the body.
    async fn exchange(addr: SocketAddr, request: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_handler_sees_method_path_query_headers_peer_and_body() {
        let (addr, _stop) = start(|req: AdminRequest| async move {
            let seen = format!(
                "{} {} {:?} {} {} {}",
                req.method,
                req.path,
                req.query,
                req.headers.get("x-k").map_or("-", |v| v.to_str().unwrap()),
                req.peer.ip(),
                String::from_utf8_lossy(&req.body),
            );
            AdminResponse::json(StatusCode::CREATED, seen)
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
        })
        .await;
        let got = exchange(
            addr,
            b"POST /p?a=1 HTTP/1.1\r\nhost: x\r\nx-k: v\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbody"
                .to_vec(),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 201"), "{got}");
        assert!(got.contains("www-authenticate: Bearer"), "{got}");
        assert!(got.contains("content-type: application/json"), "{got}");
        assert!(
            got.ends_with("POST /p Some(\"a=1\") v 127.0.0.1 body"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_before_the_handler() {
        let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = called.clone();
        let (addr, _stop) = start(move |_req| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            async { AdminResponse::text(StatusCode::OK, "ok") }
        })
        .await;
        let mut req = format!(
            "POST /purge HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            MAX_BODY + 1
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b'a', MAX_BODY + 1));
        let got = exchange(addr, req).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{}", &got[..80]);
        assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    }
}
