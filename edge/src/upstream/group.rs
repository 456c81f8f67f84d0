//! Origin groups: several origins for one site, by priority (the primary first, the next
//! when every origin before it is down) and by weight within a priority (load-balanced).
//! A request that fails on one origin (connect error, timeout, or an answer listed in
//! `retry_on`) moves to the next; an origin that fails `eject_after` times in a row is
//! ejected for `eject_for` (passive health), and active probes of `probe_path` bring it back
//! as soon as it answers again.
//!
//! Within a priority, requests are spread by a weighted rotation (`balance = "rotate"`), or
//! each object goes to one origin by weighted rendezvous hashing of its cache key
//! (`balance = "hash"`): every edge that lists the same origins picks the same one for an
//! object, and when one leaves only its share of the objects moves (the next by hash order
//! takes each). That is what a tier of parent caches needs: one copy of an object, on one
//! parent, for the whole fleet.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use super::OriginUpstream;
use crate::body::{self, Body};
use crate::cache::Upstream;
use crate::origin::{OriginError, OriginUrl};

/// One origin of a group.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupOrigin {
    /// Base URL, as `origin` (`http://` or `https://`, optional path prefix).
    pub url: String,
    /// 0 is the primary tier; a higher priority is used only while every origin of the lower
    /// ones is down.
    #[serde(default)]
    pub priority: u32,
    /// Share of the requests among the healthy origins of its priority.
    #[serde(default = "one")]
    pub weight: u32,
    /// `Host` sent to this origin (default, `"inherit"`: as for `origin`: its URL's
    /// authority, or the client's host with `forward_host`).
    #[serde(default, with = "crate::config::unset::inherit")]
    pub host: Option<String>,
    /// Request sent to response head, for this origin (default, `"inherit"`:
    /// `origin.first_byte_timeout`).
    #[serde(default, with = "crate::config::unset::inherit")]
    pub first_byte_timeout: Option<Duration>,
    /// TCP connect, for this origin (default, `"inherit"`: `origin.connect_timeout`): a short
    /// one moves a request on quickly from an origin whose address does not answer at all.
    #[serde(default, with = "crate::config::unset::inherit")]
    pub connect_timeout: Option<Duration>,
}

fn one() -> u32 {
    1
}

/// How a group spreads requests among the healthy origins of one priority.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// A weighted rotation: each request starts at the next origin of the wheel.
    #[default]
    Rotate,
    /// Weighted rendezvous hashing of the request's cache key: one origin per object.
    Hash,
}

/// Health rules of a site's origins.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginHealth {
    /// Answers that count as a failure and move the request to the next origin.
    pub retry_on: Vec<u16>,
    /// Consecutive failures (requests or probes) that eject an origin.
    pub eject_after: u32,
    /// How long an ejected origin is skipped (unless a probe finds it well before).
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
    /// Path probed with GET on every origin of the group (2xx or 3xx = up); `"none"`:
    /// passive health only.
    #[serde(with = "crate::config::unset::none")]
    pub probe_path: Option<String>,
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for OriginHealth {
    fn default() -> Self {
        Self {
            retry_on: vec![502, 503, 504],
            eject_after: 3,
            eject_for: Duration::from_secs(10),
            probe_path: None,
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

impl GroupOrigin {
    /// What validation checks beyond the types; `Err` names the key.
    pub fn check(&self) -> Result<(), String> {
        if let Err(e) = OriginUrl::parse(&self.url) {
            return Err(format!("url: {e}"));
        }
        if let Some(host) = &self.host
            && http::HeaderValue::from_str(host).is_err()
        {
            return Err("host: not a header value".into());
        }
        for (key, timeout) in [
            ("first_byte_timeout", self.first_byte_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_some_and(|t| t.is_zero()) {
                return Err(format!("{key} must be more than 0"));
            }
        }
        Ok(())
    }
}

impl OriginHealth {
    pub fn check(&self) -> Result<(), String> {
        if self.eject_after == 0 {
            return Err("origin_health.eject_after must be at least 1".into());
        }
        if let Some(code) = self.retry_on.iter().find(|c| !(100..=599).contains(*c)) {
            return Err(format!(
                "origin_health.retry_on: {code} is not a status code"
            ));
        }
        if let Some(path) = &self.probe_path
            && !path.starts_with('/')
        {
            return Err(format!(
                "origin_health.probe_path {path:?} must start with /"
            ));
        }
        if self.probe_interval.is_zero() || self.probe_timeout.is_zero() {
            return Err("origin_health.probe_interval and probe_timeout must be above 0".into());
        }
        Ok(())
    }
}

/// One origin of a running group and what its health is.
pub struct Member {
    pub upstream: OriginUpstream,
    pub priority: u32,
    pub weight: u32,
    pub first_byte_timeout: Option<Duration>,
    failures: AtomicU32,
    /// Milliseconds since the group's epoch until which it is skipped; 0: not ejected.
    ejected_until: AtomicU64,
}

impl Member {
    pub fn new(upstream: OriginUpstream, config: &GroupOrigin) -> Self {
        Self {
            upstream,
            priority: config.priority,
            weight: config.weight.max(1),
            first_byte_timeout: config.first_byte_timeout,
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }
}

struct Inner {
    members: Vec<Member>,
    health: OriginHealth,
    balance: Balance,
    retry_on: Vec<StatusCode>,
    epoch: Instant,
    /// Rotates the start among the origins of one priority (weighted).
    next: AtomicUsize,
    /// Counts each ejection (the metric of this group's tier: origins, parents or peers).
    ejections: Counter,
}

/// A site's origin group as its upstream.
pub struct GroupUpstream {
    inner: Arc<Inner>,
    probes: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for GroupUpstream {
    fn drop(&mut self) {
        // The group's state was replaced (reload) or the edge stops: its probes end with it.
        if let Some(probes) = &self.probes {
            probes.abort();
        }
    }
}

impl GroupUpstream {
    /// Starts the probes too, if the health rules name a probe path (needs a runtime).
    /// `ejections` counts every member this group ejects.
    pub fn new(
        members: Vec<Member>,
        health: OriginHealth,
        balance: Balance,
        ejections: Counter,
    ) -> Self {
        let retry_on = health
            .retry_on
            .iter()
            .filter_map(|c| StatusCode::from_u16(*c).ok())
            .collect();
        let inner = Arc::new(Inner {
            members,
            health,
            balance,
            retry_on,
            epoch: Instant::now(),
            next: AtomicUsize::new(0),
            ejections,
        });
        let probes = inner
            .health
            .probe_path
            .is_some()
            .then(|| tokio::spawn(probe(Arc::downgrade(&inner))));
        Self { inner, probes }
    }

    /// The member `key` belongs to (the first by rendezvous order among the healthy ones;
    /// with every member ejected, the first of all) and whether it is up.
    pub(crate) fn owner(&self, key: &str) -> (usize, bool) {
        let first = self.inner.order(Some(key)).first().copied().unwrap_or(0);
        let up = self
            .inner
            .members
            .get(first)
            .is_some_and(|m| self.inner.is_up(m));
        (first, up)
    }

    /// The member at `index`.
    pub(crate) fn member(&self, index: usize) -> Option<&Member> {
        self.inner.members.get(index)
    }

    /// Sends `req` to the member at `index` only, counting the outcome in its health: a
    /// failure (error, timeout, or an answer in `retry_on`) is returned for the caller to
    /// handle, never retried elsewhere.
    pub(crate) fn fetch_from(
        &self,
        index: usize,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(member) = inner.members.get(index) else {
                return Err(OriginError::Request(format!(
                    "no member {index} in the group"
                )));
            };
            let result = member
                .upstream
                .fetch_within(req, member.first_byte_timeout)
                .await;
            match &result {
                Ok(r) if inner.retry_on.contains(&r.status()) => {
                    inner.failed(member, r.status().as_str())
                }
                Ok(_) => inner.succeeded(member),
                Err(e) if e.is_retryable() => inner.failed(member, &e.to_string()),
                Err(_) => {}
            }
            result
        })
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_up(&self, m: &Member) -> bool {
        m.ejected_until.load(Ordering::Relaxed) <= self.now_ms()
    }

    fn succeeded(&self, m: &Member) {
        m.failures.store(0, Ordering::Relaxed);
        if m.ejected_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(origin = %m.upstream.origin, "origin back in its group");
        }
    }

    fn failed(&self, m: &Member, why: &str) {
        let failures = m.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.health.eject_after && self.is_up(m) {
            let until = self.now_ms()
                + u64::try_from(self.health.eject_for.as_millis()).unwrap_or(u64::MAX / 2);
            m.ejected_until.store(until.max(1), Ordering::Relaxed);
            self.ejections.inc();
            tracing::warn!(origin = %m.upstream.origin, failures, reason = why, eject_for = ?self.health.eject_for, "origin ejected from its group");
        }
    }

    /// The order to try the origins in: healthy ones by priority, each priority starting at a
    /// weighted rotation, or (`Balance::Hash`, with a key) in the key's rendezvous order; then
    /// the ejected ones (better a try than a certain error).
    fn order(&self, key: Option<&str>) -> Vec<usize> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let mut up: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.is_up(&self.members[i]))
            .collect();
        let mut down: Vec<usize> = (0..self.members.len())
            .filter(|&i| !self.is_up(&self.members[i]))
            .collect();
        up.sort_by_key(|&i| self.members[i].priority);
        down.sort_by_key(|&i| self.members[i].priority);
        let mut order = Vec::with_capacity(self.members.len());
        if let (Balance::Hash, Some(key)) = (self.balance, key) {
            // Highest score first within each priority: the first is the object's origin,
            // the rest the order it moves in when that one is down.
            let scores: Vec<f64> = self
                .members
                .iter()
                .map(|m| rendezvous(key, &m.upstream.origin.to_string(), m.weight))
                .collect();
            let by_score = |v: &mut Vec<usize>| {
                v.sort_by(|&a, &b| {
                    let (ma, mb) = (&self.members[a], &self.members[b]);
                    ma.priority
                        .cmp(&mb.priority)
                        .then(scores[b].total_cmp(&scores[a]))
                });
            };
            by_score(&mut up);
            by_score(&mut down);
            up.extend(down);
            return up;
        }
        for tier in up.chunk_by(|&a, &b| self.members[a].priority == self.members[b].priority) {
            // Weighted: each origin appears `weight` times in the wheel; the turn picks the
            // first, the rest follow in their configured order.
            let wheel: Vec<usize> = tier
                .iter()
                .flat_map(|&i| std::iter::repeat_n(i, self.members[i].weight as usize))
                .collect();
            let first = wheel[turn % wheel.len()];
            order.push(first);
            order.extend(tier.iter().copied().filter(|&i| i != first));
        }
        order.extend(down);
        order
    }
}

/// An origin's weighted rendezvous score for `key` (Schindelhauer and Schomaker's
/// `-weight / ln(h)`, h uniform in (0, 1)). The hash is SHA-256 of the key and the origin's
/// URL: the same on every edge and every build, as a fleet choosing one parent needs (std's
/// hasher promises neither).
fn rendezvous(key: &str, origin: &str, weight: u32) -> f64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(origin.as_bytes());
    ctx.update(b"\0");
    ctx.update(key.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    // (n + 1) / (2^64 + 1): strictly inside (0, 1), so ln is finite and negative.
    let h = (u64::from_be_bytes(first) as f64 + 1.0) / (u64::MAX as f64 + 2.0);
    -f64::from(weight) / h.ln()
}

/// A copy of a request without a body (only requests without one are retried).
pub(super) fn replay(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

impl Upstream for GroupUpstream {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let inner = self.inner.clone();
        let key = req
            .extensions()
            .get::<super::UpstreamKey>()
            .map(|k| k.0.clone());
        Box::pin(async move {
            let order = inner.order(key.as_deref());
            // A body can be sent once: such a request gets one origin.
            let retryable = http_body::Body::is_end_stream(req.body());
            let mut req = Some(req);
            let mut last = None;
            for (n, &i) in order.iter().enumerate() {
                let member = &inner.members[i];
                let more = retryable && n + 1 < order.len();
                let Some(this) = req.take() else { break };
                if more {
                    req = Some(replay(&this));
                }
                let attempt = member
                    .upstream
                    .fetch_within(this, member.first_byte_timeout);
                match attempt.await {
                    Ok(response) if inner.retry_on.contains(&response.status()) => {
                        inner.failed(member, response.status().as_str());
                        if !more {
                            return Ok(response);
                        }
                        tracing::debug!(origin = %member.upstream.origin, status = %response.status(), "trying the next origin of the group");
                    }
                    Ok(response) => {
                        inner.succeeded(member);
                        return Ok(response);
                    }
                    Err(e) if e.is_retryable() => {
                        inner.failed(member, &e.to_string());
                        if !more {
                            return Err(e);
                        }
                        tracing::debug!(origin = %member.upstream.origin, error = %e, "trying the next origin of the group");
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or_else(|| OriginError::Request("the origin group is empty".into())))
        })
    }
}

/// Probes every origin of the group every interval until the group is gone.
async fn probe(group: Weak<Inner>) {
    loop {
        let Some(inner) = group.upgrade() else { return };
        let interval = inner.health.probe_interval;
        let Some(path) = inner.health.probe_path.clone() else {
            return;
        };
        let checks = inner.members.iter().map(|m| {
            let req = Request::get(path.as_str())
                .header(http::header::USER_AGENT, "quicdn-probe")
                .body(body::empty());
            let timeout = inner.health.probe_timeout;
            async move {
                let Ok(req) = req else { return (m, false) };
                let up = matches!(
                    tokio::time::timeout(timeout, m.upstream.fetch_within(req, Some(timeout))).await,
                    Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
                );
                (m, up)
            }
        });
        for (m, up) in futures_util::future::join_all(checks).await {
            match up {
                true => inner.succeeded(m),
                false => inner.failed(m, "probe failed"),
            }
        }
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The origin `rendezvous` picks for `key` among `origins` (url, weight).
    fn pick(key: &str, origins: &[(&str, u32)]) -> usize {
        let scores: Vec<f64> = origins
            .iter()
            .map(|(u, w)| rendezvous(key, u, *w))
            .collect();
        (0..origins.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap()
    }

    #[test]
    fn rendezvous_spreads_by_weight_and_moves_only_the_share_of_one_that_leaves() {
        let three = [
            ("https://a:443", 1),
            ("https://b:443", 1),
            ("https://c:443", 2),
        ];
        let keys: Vec<String> = (0..4000).map(|i| format!("cdn.test/obj/{i}")).collect();
        let mut counts = [0usize; 3];
        for k in &keys {
            counts[pick(k, &three)] += 1;
        }
        // Expected 1000 / 1000 / 2000; a few percent either way.
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
        assert!((900..1100).contains(&counts[1]), "{counts:?}");
        assert!((1850..2150).contains(&counts[2]), "{counts:?}");
        // Without b, a and c keep every object they had; only b's move.
        let two = [three[0], three[2]];
        for k in &keys {
            let before = pick(k, &three);
            let after = pick(k, &two);
            match before {
                0 => assert_eq!(after, 0, "{k}"),
                2 => assert_eq!(after, 1, "{k}"),
                _ => {}
            }
        }
        // The same on every call (every edge agrees).
        assert_eq!(pick("cdn.test/x", &three), pick("cdn.test/x", &three));
    }

    #[test]
    fn health_rules_are_checked() {
        assert!(OriginHealth::default().check().is_ok());
        let bad = OriginHealth {
            eject_after: 0,
            ..OriginHealth::default()
        };
        assert!(bad.check().is_err());
        let bad = OriginHealth {
            retry_on: vec![700],
            ..OriginHealth::default()
        };
        assert!(bad.check().unwrap_err().contains("700"));
    }

    #[test]
    fn an_origins_own_timeouts_are_above_zero() {
        let mut origin = GroupOrigin {
            url: "http://127.0.0.1:1".into(),
            priority: 0,
            weight: 1,
            host: None,
            first_byte_timeout: None,
            connect_timeout: Some(Duration::from_millis(200)),
        };
        assert!(origin.check().is_ok());
        origin.connect_timeout = Some(Duration::ZERO);
        assert!(origin.check().unwrap_err().starts_with("connect_timeout"));
        origin.connect_timeout = None;
        origin.first_byte_timeout = Some(Duration::ZERO);
        assert!(
            origin
                .check()
                .unwrap_err()
                .starts_with("first_byte_timeout")
        );
        origin.first_byte_timeout = None;
        origin.host = Some("bad\nhost".into());
        assert!(origin.check().unwrap_err().starts_with("host"));
    }
}
