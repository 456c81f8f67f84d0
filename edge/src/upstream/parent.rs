//! A site's parent tier: its misses go to other edges first (a shield, or a tier chosen per
//! object by rendezvous hashing: an origin group of edges), and, when every parent of the
//! object fails, to the site's own origin or to an error, as `fallback` says.
//!
//! A parent is an edge like any other: it gets the client's `Host` (so it finds the same
//! site), answers from its cache or goes to the origin, and adds its own `Via`, `CDN-Loop`
//! and `Cache-Status` entry. The child treats its answer like an origin's: `Age` carries the
//! time spent in the parent, so the child never extends the lifetime the origin gave.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::cache::Upstream;
use crate::origin::OriginError;

/// What a child does when every parent of an object fails.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Go to the site's origin directly.
    #[default]
    Origin,
    /// Answer with the parents' failure (502/504): the origin only takes the parents.
    Error,
}

/// Parents first, then per `fallback` the origin.
pub struct TieredUpstream {
    pub parents: Arc<dyn Upstream>,
    pub origin: Arc<dyn Upstream>,
    pub fallback: Fallback,
    /// Parent answers that count as the parent failing (the site's `origin_health.retry_on`).
    pub retry_on: Vec<StatusCode>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Upstream for TieredUpstream {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        // A body can be sent once: such a request has no fallback.
        let replay = (self.fallback == Fallback::Origin
            && http_body::Body::is_end_stream(req.body()))
        .then(|| super::group::replay(&req));
        let parents = self.parents.fetch(req);
        let origin = self.origin.clone();
        let retry_on = self.retry_on.clone();
        let metrics = self.metrics.clone();
        metrics.parent_requests.inc();
        Box::pin(async move {
            let failure = match parents.await {
                Ok(r) if !retry_on.contains(&r.status()) => {
                    // The last entry is the parent's own.
                    if crate::headers::last_cache_outcome(r.headers()) == Some("hit") {
                        metrics.parent_hits.inc();
                    }
                    return Ok(r);
                }
                Ok(r) => Ok(r),
                Err(e) if e.is_retryable() => Err(e),
                Err(e) => return Err(e),
            };
            let Some(req) = replay else {
                return failure;
            };
            match &failure {
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "every parent failed; asking the origin")
                }
                Err(e) => tracing::warn!(error = %e, "every parent failed; asking the origin"),
            }
            metrics.parent_fallbacks.inc();
            origin.fetch(req).await
        })
    }
}
