//! Where a site's misses go: an [`Upstream`] bound to its site. The cache hands it the
//! request as the client made it (the normalised path and query as its URI, `Host` = the host it
//! was routed and keyed by, proxy headers added by the filter chain) and the cache key as a
//! request extension ([`UpstreamKey`]); the upstream decides where that goes. The origin
//! upstream maps it onto the site's origin URL; a parent tier is another upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::{Frame, SizeHint};

use crate::body::{self, Body, BoxError};
use crate::cache::Upstream;
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginError, OriginUrl};

/// The cache key of the object an upstream request is for (the primary key: scheme, host,
/// path and query), so an upstream can choose by object (a parent tier hashes on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKey(pub Arc<str>);

/// A site's origin: the request's path under the origin URL's prefix, and the origin URL's
/// authority as `Host` unless the site forwards the client's.
pub struct OriginUpstream {
    pub origin: OriginUrl,
    pub forward_host: bool,
    pub client: OriginClient,
    pub metrics: Arc<Metrics>,
}

impl OriginUpstream {
    /// The request as it leaves for the origin.
    fn rewrite(&self, req: &mut Request<Body>) -> Result<(), OriginError> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = self
            .origin
            .join(path)
            .map_err(|e| OriginError::Request(format!("cannot map {path:?} to the origin: {e}")))?;
        *req.uri_mut() = uri;
        if !self.forward_host {
            let host = HeaderValue::from_str(self.origin.authority.as_str())
                .map_err(|e| OriginError::Request(format!("origin authority as Host: {e}")))?;
            req.headers_mut().insert(header::HOST, host);
        }
        Ok(())
    }
}

impl Upstream for OriginUpstream {
    fn fetch(
        &self,
        mut req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let rewritten = self.rewrite(&mut req);
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            rewritten?;
            let start = Instant::now();
            match client.send(req).await {
                Ok(response) => {
                    metrics
                        .origin_latency
                        .observe(start.elapsed().as_secs_f64());
                    let counter = metrics.origin_bytes.clone();
                    Ok(response.map(|b| body::boxed(Counted { inner: b, counter })))
                }
                Err(e) => {
                    if e.is_origin_fault() {
                        metrics.origin_errors.inc();
                    }
                    Err(e)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// Counts data bytes into a Prometheus counter as they pass.
    struct Counted {
        #[pin]
        inner: Body,
        counter: prometheus_client::metrics::counter::Counter,
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.counter.inc_by(data.len() as u64);
        }
        polled
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
    use crate::cache::store::{Store, StoreLimits};
    use crate::config::OriginConfig;

    async fn upstream(origin: &str, forward_host: bool) -> OriginUpstream {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            disk_budget: 1 << 20,
            memory_budget: 1 << 20,
        };
        let store = Store::open(dir.path(), limits).await.unwrap();
        OriginUpstream {
            origin: OriginUrl::parse(origin).unwrap(),
            forward_host,
            client: OriginClient::new(&OriginConfig::default()).unwrap(),
            metrics: Arc::new(Metrics::new(store)),
        }
    }

    fn client_request(target: &str, host: &str) -> Request<Body> {
        Request::builder()
            .uri(target)
            .header(header::HOST, host)
            .body(body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn the_target_goes_under_the_origin_prefix_with_the_origins_host() {
        let mut req = client_request("/a/b.mp4?x=1", "cdn.example.com");
        let media = upstream("http://10.0.0.20:8080/media", false).await;
        media.rewrite(&mut req).unwrap();
        assert_eq!(req.uri(), "http://10.0.0.20:8080/media/a/b.mp4?x=1");
        assert_eq!(req.headers()[header::HOST], "10.0.0.20:8080");
        let mut req = client_request("/a", "cdn.example.com");
        let forwarding = upstream("https://origin.test", true).await;
        forwarding.rewrite(&mut req).unwrap();
        assert_eq!(req.uri(), "https://origin.test/a");
        assert_eq!(req.headers()[header::HOST], "cdn.example.com");
    }
}
