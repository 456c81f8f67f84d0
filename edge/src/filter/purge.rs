//! The HTTP `PURGE` method on the public listeners (the Varnish and nginx convention): one
//! URL, the request's own, purged on every POP through the control plane. Only clients in
//! `[purge] allow_from` may send it (403 for others; 405 when the list is empty), and it never
//! reaches an origin. `Soft-Purge: 1` makes it soft (marked stale, not removed).

use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use ipnet::IpNet;

use super::{Filter, Phases, RequestInfo, Verdict};
use crate::admin::api::Answer;
use crate::body;
use crate::cache::{self, Served};
use crate::control::{Command, Control, Mode, Purge, Selector, command};
use crate::headers::{CacheStatus, Outcome};
use crate::sites::Site;

/// The request header that makes a `PURGE` soft, when its value is `1`.
pub(crate) const SOFT_PURGE: &str = "soft-purge";

/// Where the filter finds the control plane, set once it is built. Weak: the control
/// plane's [`crate::control::Local`] holds the service that holds this, and a strong
/// reference would keep both alive for ever.
#[derive(Default)]
pub(crate) struct ControlSlot(OnceLock<Weak<Control>>);

impl ControlSlot {
    /// Sets the control plane (once; later calls are ignored).
    pub(crate) fn set(&self, control: &Arc<Control>) {
        let _ = self.0.set(Arc::downgrade(control));
    }

    fn get(&self) -> Option<Arc<Control>> {
        self.0.get().and_then(Weak::upgrade)
    }
}

/// Answers `PURGE`.
pub(crate) struct PurgeMethod {
    pub allow_from: Vec<IpNet>,
    pub control: Arc<ControlSlot>,
    pub limit: Option<Arc<crate::rules::limit::Limiter>>,
}

impl Filter for PurgeMethod {
    fn name(&self) -> &'static str {
        "purge-method"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
    }

    fn on_site(&self, req: &RequestInfo<'_>, _site: &Site) -> Verdict {
        if req.parts.method.as_str() != "PURGE" {
            return Verdict::Continue;
        }
        let refuse = |status, why: &str| Verdict::Respond(cache::error_response(status, why));
        if self.allow_from.is_empty() {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "PURGE is not enabled on this edge (see [purge] allow_from)",
            );
        }
        let client = req.ctx.peer.ip().to_canonical();
        if let Some(limit) = &self.limit
            && let Some(wait) = limit.check(client)
        {
            return Verdict::Respond(limit.served(wait, "PURGE requests"));
        }
        if !self.allow_from.iter().any(|net| net.contains(&client)) {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("PURGE is not allowed from {client}"),
            );
        }
        let (Ok((host, path)), Some(control)) = (req.target, self.control.get()) else {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane is not running",
            );
        };
        let soft = req
            .parts
            .headers
            .get(SOFT_PURGE)
            .is_some_and(|v| v.as_bytes() == b"1");
        // No scheme: one URL is forgotten however it was fetched (http or https).
        let purge = Purge {
            id: command::new_id(),
            selector: Selector::Url(format!("{host}{path}")),
            mode: if soft { Mode::Soft } else { Mode::Hard },
            issued_ms: command::now_ms(),
        };
        tracing::info!(client = %client, url = %format!("{host}{path}"), soft, id = %purge.id, "PURGE accepted");
        Verdict::Respond(submit(control, purge))
    }
}

/// Filters are synchronous, so the purge runs as its own task, started now (it completes
/// even if the client leaves), and the response body is its answer once it is there.
fn submit(control: Arc<Control>, purge: Purge) -> Served {
    let issued_ms = purge.issued_ms;
    let task = tokio::spawn(async move {
        let pop = control.pop().to_owned();
        let submitted = control.submit(Command::Purge(purge), None).await;
        Answer::new(submitted, &pop, issued_ms)
    });
    let json = async move {
        let text = match task.await {
            Ok(answer) => serde_json::to_string(&answer).unwrap_or_default(),
            Err(e) => crate::admin::error_json(&format!("the purge failed: {e}")),
        };
        Ok::<_, body::BoxError>(http_body::Frame::data(Bytes::from(text + "\n")))
    };
    let stream = futures_util::stream::once(json);
    let mut response = Response::new(body::boxed(http_body_util::StreamBody::new(stream)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Served {
        response,
        status: CacheStatus {
            outcome: Some(Outcome::Synthetic),
            detail: Some("purged"),
            ..CacheStatus::default()
        },
    }
}
