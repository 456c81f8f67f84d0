//! The edge's built-in filters: the checks and headers every request gets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Version};

use super::{Filter, LogRecord, Phases, RequestInfo, Verdict};
use crate::body::{self, Body};
use crate::cache::store::Store;
use crate::cache::{self, Served};
use crate::config::SchemePolicy;
use crate::headers::{self, CacheStatus, Outcome};
use crate::service::Protocol;
use crate::sites::Site;

/// Whether the edge takes traffic: draining (shutting down) or a store that cannot write;
/// and what else is degraded, as the parts concerned report it.
pub(crate) struct HealthState {
    draining: AtomicBool,
    store: Arc<Store>,
    /// By who reports it (`control`): what is degraded, as a line of the report.
    notes: Mutex<BTreeMap<&'static str, String>>,
}

impl HealthState {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            store,
            notes: Mutex::new(BTreeMap::new()),
        }
    }

    /// `source` reports what is degraded (`None`: nothing any more).
    pub(crate) fn set_degraded(&self, source: &'static str, note: Option<String>) {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        match note {
            Some(note) => notes.insert(source, note),
            None => notes.remove(source),
        };
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// What the health endpoints answer: 503 while draining, else 200 with what is degraded.
    pub(crate) fn report(&self) -> (StatusCode, String) {
        if self.is_draining() {
            return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned());
        }
        // Still 200 whatever is degraded: every request is served (misses pass through
        // uncached, hits are served without the bus), so health checkers keep sending
        // clients; the body and the metrics say what is wrong.
        let mut text = "ok\n".to_owned();
        if let Some(failure) = self.store.write_failure() {
            text += &format!(
                "degraded: cache store not writable ({}, {} s ago); misses are served uncached\n",
                failure.error,
                failure.ago.as_secs()
            );
        }
        let notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        for note in notes.values() {
            text += &format!("degraded: {note}\n");
        }
        (StatusCode::OK, text)
    }
}

/// Answers the health path on every host, before anything else (a probe needs no site).
pub(crate) struct Health {
    pub path: String,
    pub state: Arc<HealthState>,
}

impl Filter for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    fn on_request(&self, req: &RequestInfo<'_>) -> Verdict {
        if req.parts.uri.path() != self.path {
            return Verdict::Continue;
        }
        let (status, text) = self.state.report();
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Verdict::Respond(Served {
            response,
            status: CacheStatus {
                outcome: Some(Outcome::Synthetic),
                detail: Some("health"),
                ..CacheStatus::default()
            },
        })
    }
}

/// The answer to a target that did not normalise: 400 with the reason.
pub(crate) fn target_refused(e: &crate::target::TargetError) -> Served {
    cache::error_response(StatusCode::BAD_REQUEST, &e.to_string())
}

/// Refuses a request whose target did not normalise (RFC 9112 3.2, RFC 3986 5.2.4).
pub(crate) struct TargetCheck;

impl Filter for TargetCheck {
    fn name(&self) -> &'static str {
        "target-check"
    }

    fn phases(&self) -> Phases {
        Phases::ON_REQUEST
    }

    fn on_request(&self, req: &RequestInfo<'_>) -> Verdict {
        match req.target {
            Ok(_) => Verdict::Continue,
            Err(e) => Verdict::Respond(target_refused(e)),
        }
    }
}

/// A reverse proxy does not tunnel.
pub(crate) struct ConnectRefused;

impl Filter for ConnectRefused {
    fn name(&self) -> &'static str {
        "connect-refused"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
    }

    fn on_site(&self, req: &RequestInfo<'_>, _site: &Site) -> Verdict {
        match req.parts.method == Method::CONNECT {
            true => Verdict::Respond(cache::error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not supported: this is a reverse proxy",
            )),
            false => Verdict::Continue,
        }
    }
}

/// 508 when this edge already appears in the request's `Via` (a request loop).
pub(crate) struct LoopDetect {
    pub name: String,
}

impl Filter for LoopDetect {
    fn name(&self) -> &'static str {
        "loop-detect"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
    }

    fn on_site(&self, req: &RequestInfo<'_>, _site: &Site) -> Verdict {
        let looped = if headers::via_contains(&req.parts.headers, &self.name) {
            "Via"
        } else if headers::cdn_loop_contains(&req.parts.headers, &self.name) {
            "CDN-Loop"
        } else {
            return Verdict::Continue;
        };
        Verdict::Respond(cache::error_response(
            StatusCode::LOOP_DETECTED,
            &format!("request loop: this edge already appears in {looped}"),
        ))
    }
}

/// `Via` on both sides and `X-Forwarded-For/-Host/-Proto` to the origin.
pub(crate) struct Forwarded {
    name: String,
    /// This node's `CDN-Loop` member (none if the name cannot be a header value).
    cdn_loop: Option<HeaderValue>,
    /// This node's `Via` entry per response version, built once rather than per response.
    via: Vec<(Version, HeaderValue)>,
}

impl Forwarded {
    pub(crate) fn new(name: &str) -> Self {
        let via = [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ]
        .into_iter()
        .filter_map(|v| Some((v, headers::via_value(v, name)?)))
        .collect();
        Self {
            name: name.to_owned(),
            cdn_loop: HeaderValue::from_str(name).ok(),
            via,
        }
    }
}

impl Filter for Forwarded {
    fn name(&self) -> &'static str {
        "forwarded"
    }

    fn phases(&self) -> Phases {
        Phases::UPSTREAM_REQUEST.and(Phases::ON_RESPONSE)
    }

    fn upstream_request(
        &self,
        req: &RequestInfo<'_>,
        site: &Site,
        upstream: &mut http::request::Parts,
    ) {
        headers::append_via(&mut upstream.headers, req.parts.version, &self.name);
        if let Some(member) = &self.cdn_loop {
            // A line of its own: members already there (other CDNs', a parent's) stay.
            upstream
                .headers
                .append(headers::CDN_LOOP.clone(), member.clone());
        }
        let proto = match site.scheme {
            SchemePolicy::Key => Some(if req.ctx.secure { "https" } else { "http" }),
            SchemePolicy::Shared => None,
        };
        let host = req.target.map(|(host, _)| host).unwrap_or_default();
        headers::add_forwarded(&mut upstream.headers, req.ctx.peer.ip(), proto, host);
    }

    fn on_response(&self, _req: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        let version = response.version();
        if let Some((_, via)) = self.via.iter().find(|(v, _)| *v == version) {
            response.headers_mut().append(header::VIA, via.clone());
        }
    }
}

/// Advertises HTTP/3 on responses over TCP.
pub(crate) struct AltSvc {
    pub value: HeaderValue,
}

impl Filter for AltSvc {
    fn name(&self) -> &'static str {
        "alt-svc"
    }

    fn phases(&self) -> Phases {
        Phases::ON_RESPONSE
    }

    fn on_response(&self, req: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        if req.ctx.protocol != Protocol::H3 {
            response
                .headers_mut()
                .insert(header::ALT_SVC, self.value.clone());
        }
    }
}

/// One access-log line per request (target `access`), written when its response ends.
pub(crate) struct AccessLog;

impl Filter for AccessLog {
    fn name(&self) -> &'static str {
        "access-log"
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    fn logging(&self, r: &LogRecord<'_>) {
        tracing::info!(
            target: "access",
            method = %r.method,
            host = %r.host,
            path = %r.path,
            status = r.status.as_u16(),
            bytes = r.bytes,
            cache = r.outcome.as_str(),
            protocol = r.ctx.protocol.as_str(),
            duration_ms = r.ctx.start.elapsed().as_secs_f64() * 1000.0,
            peer = %r.ctx.peer,
            complete = r.complete,
        );
    }
}

/// Puts back the origin's `Cache-Control` where a TTL rule changed it for the edge
/// ([`crate::rules`]): browsers see what the origin said (or, after this, a rule's client
/// TTL). Global, so entries stored under rules that a reload removed are restored too.
pub(crate) struct RestoreCacheControl;

impl Filter for RestoreCacheControl {
    fn name(&self) -> &'static str {
        "restore-cache-control"
    }

    fn phases(&self) -> Phases {
        Phases::ON_RESPONSE
    }

    fn on_response(&self, _: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        let h = response.headers_mut();
        let Some(origin) = h.remove(crate::rules::ORIGIN_CACHE_CONTROL) else {
            return;
        };
        h.remove(header::CACHE_CONTROL);
        if !origin.is_empty() {
            h.insert(header::CACHE_CONTROL, origin);
        }
    }
}
