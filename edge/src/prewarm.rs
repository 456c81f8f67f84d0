//! The pre-warm engine ([`Prewarmer`]), which the edge's side of the control plane
//! (`control::EdgeLocal`) runs for a pre-warm command.
//!
//! Each URL of a pre-warm is fetched through this edge's own [`Service::handle`], as a
//! synthetic GET with the URL's host and path: the site's rules, cache key and coalescing
//! apply as for a client, so the origin sees at most one fetch per URL however many requests
//! (pre-warm or client) want it at once. Its body is read to the end, which is what stores
//! it. At most `[prewarm] concurrency` URLs are fetched at once, so the origin is not
//! flooded.

use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt as _};
use http::{Request, header};
use http_body_util::BodyExt as _;

use crate::body;
use crate::config::PrewarmConfig;
use crate::control::{Prewarm, Prewarmed, command::Warmed};
use crate::service::{RequestCtx, Service};

/// Fetches pre-warm URLs through the edge's own service.
pub(crate) struct Prewarmer {
    pub service: Arc<Service>,
    pub settings: PrewarmConfig,
}

impl Prewarmer {
    /// Fetches every URL of `prewarm` into the cache, at most `concurrency` at once.
    pub(crate) async fn warm_all(&self, prewarm: &Prewarm) -> Prewarmed {
        let start = Instant::now();
        // `buffered` keeps the answer in the request's order.
        let urls: Vec<Warmed> =
            stream::iter(prewarm.urls.iter().cloned().map(|url| self.warm(url)))
                .buffered(self.settings.concurrency.max(1))
                .collect()
                .await;
        let failed = urls.iter().filter(|w| w.error.is_some()).count() as u64;
        let fetched = urls.len() as u64 - failed;
        let metrics = self.service.metrics();
        metrics.prewarm_fetched.inc_by(fetched);
        metrics.prewarm_failed.inc_by(failed);
        tracing::info!(id = %prewarm.id, fetched, failed, ms = start.elapsed().as_millis() as u64, "pre-warm done");
        Prewarmed {
            fetched,
            failed,
            urls,
        }
    }

    /// Fetches one URL into the cache, within the per-URL timeout.
    /// (Owns `url`: a borrowed one trips the compiler's `Send` inference for the stream.)
    async fn warm(&self, url: String) -> Warmed {
        let mut warmed = Warmed {
            url: url.clone(),
            status: None,
            outcome: None,
            bytes: 0,
            error: None,
        };
        let request = match synthetic_get(&url) {
            Ok(r) => r,
            Err(e) => {
                warmed.error = Some(e);
                return warmed;
            }
        };
        let ctx = RequestCtx::internal(&self.service, url.starts_with("https:"));
        let fetch = async {
            let response = self.service.handle(ctx, request).await;
            warmed.status = Some(response.status().as_u16());
            warmed.outcome =
                crate::headers::last_cache_outcome(response.headers()).map(str::to_owned);
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| format!("the body failed after {} bytes: {e}", warmed.bytes))?;
                warmed.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Ok::<_, String>(())
        };
        let result = match tokio::time::timeout(self.settings.timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no complete answer within {}",
                humantime_serde::re::humantime::format_duration(self.settings.timeout)
            )),
        };
        warmed.error = result.err().or_else(|| refusal(&warmed));
        if let Some(e) = &warmed.error {
            tracing::debug!(%url, error = %e, "pre-warm of a URL failed");
        }
        warmed
    }
}

/// `GET <path>` with `Host: <authority>`: what a client of the URL sends.
fn synthetic_get(url: &str) -> Result<Request<body::Body>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let (Some(authority), Some("http" | "https")) = (uri.authority(), uri.scheme_str()) else {
        return Err("not an http:// or https:// URL".into());
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::USER_AGENT, "quicdn-prewarm")
        .body(body::empty())
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// Why an answer means the URL is not in the cache now, if it does.
fn refusal(w: &Warmed) -> Option<String> {
    match (w.status, w.outcome.as_deref()) {
        (Some(s), _) if s >= 400 => Some(format!("answered {s}")),
        (_, Some("bypass")) => {
            Some("not cacheable: the edge passed it to the origin uncached".into())
        }
        (_, None) => Some("not answered from the cache (no Cache-Status outcome)".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_get_carries_the_urls_host_and_path() {
        let r = synthetic_get("https://cdn.example:8443/a/b?c=1").unwrap();
        assert_eq!(r.uri(), "/a/b?c=1");
        assert_eq!(r.headers()[header::HOST], "cdn.example:8443");
        assert!(synthetic_get("cdn.example/a").is_err());
        assert!(synthetic_get("ftp://cdn.example/a").is_err());
    }

    #[test]
    fn errors_bypasses_and_missing_outcomes_are_failures() {
        let w = |status, outcome: Option<&str>| Warmed {
            url: String::new(),
            status: Some(status),
            outcome: outcome.map(str::to_owned),
            bytes: 0,
            error: None,
        };
        assert_eq!(refusal(&w(200, Some("uri-miss"))), None);
        assert_eq!(refusal(&w(200, Some("hit"))), None);
        assert!(refusal(&w(404, Some("uri-miss"))).unwrap().contains("404"));
        assert!(
            refusal(&w(200, Some("bypass")))
                .unwrap()
                .contains("not cacheable")
        );
        assert!(refusal(&w(421, None)).is_some());
    }
}
