//! The origin's second listener: objects that carry a surrogate key, for the purge scenarios.
//!
//! `GET /tag/TAG/NAME` answers 200 with `Surrogate-Key: TAG`, `Cache-Control: max-age=300` and
//! a fixed `ETag`, so an edge caches it, indexes it under TAG, and after a soft purge
//! revalidates it (a matching `If-None-Match` gets 304). The demo origin (`edge::demo`) serves
//! everything else on the first listener; it has no tagged objects and is the edge's, not ours.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves tagged objects on `listener` until the task is dropped.
pub async fn serve_tagged(listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(error) => {
                // Out of descriptors or similar: back off rather than spin.
                tracing::warn!(%error, "tagged origin: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = service_fn(|req| async move { Ok::<_, Infallible>(respond(&req)) });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = conn.await {
                tracing::debug!(%error, %peer, "tagged origin: connection ended");
            }
        });
    }
}

/// Binds `addr` and serves tagged objects in the background.
pub async fn start_tagged(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve_tagged(listener));
    Ok(bound)
}

fn respond<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
    }
    let Some((tag, name)) = parse(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "use /tag/TAG/NAME\n");
    };
    let etag = format!("\"{tag}-{name}-v1\"");
    let revalidated = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let (status, body) = if revalidated {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        let text = format!("object {name}, surrogate key {tag}\n");
        (StatusCode::OK, Bytes::from(text))
    };
    let len = body.len();
    let mut resp = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    h.insert(
        header::DATE,
        value(&httpdate::fmt_http_date(SystemTime::now())),
    );
    h.insert(header::ETAG, value(&etag));
    h.insert("surrogate-key", value(tag));
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

/// `/tag/TAG/NAME` with both parts non-empty and header-safe (letters, digits, `-`, `_`, `.`).
fn parse(path: &str) -> Option<(&str, &str)> {
    let (tag, name) = path.strip_prefix("/tag/")?.split_once('/')?;
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (safe(tag) && safe(name)).then_some((tag, name))
}

fn value(s: &str) -> HeaderValue {
    // Every caller passes text built from `parse`d, header-safe parts or an HTTP date.
    HeaderValue::from_str(s).expect("header-safe text")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    fn get(path: &str, inm: Option<&str>) -> Response<Full<Bytes>> {
        let mut req = Request::get(path);
        if let Some(v) = inm {
            req = req.header(header::IF_NONE_MATCH, v);
        }
        respond(&req.body(()).unwrap())
    }

    #[tokio::test]
    async fn tagged_object_then_revalidation() {
        let resp = get("/tag/t1/a.txt", None);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["surrogate-key"], "t1");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "max-age=300");
        let etag = resp.headers()[header::ETAG].to_str().unwrap().to_owned();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"object a.txt, surrogate key t1\n");

        let resp = get("/tag/t1/a.txt", Some(&etag));
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(resp.headers()[header::ETAG], etag.as_str());
        let resp = get("/tag/t1/a.txt", Some("\"other\""));
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn only_safe_tag_paths() {
        for bad in [
            "/",
            "/tag/",
            "/tag/t1",
            "/tag/t1/",
            "/tag//a",
            "/tag/t%201/a",
            "/tag/t:1/a",
            "/x/t1/a",
        ] {
            assert_eq!(get(bad, None).status(), StatusCode::NOT_FOUND, "{bad}");
        }
        assert_eq!(parse("/tag/t-1/a/b"), None, "a name has no slash");
    }
}
