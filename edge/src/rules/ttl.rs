//! TTL rules. The edge's lifetime is decided when the response arrives from the upstream (as
//! Varnish sets `beresp.ttl`): [`TtlUpstream`] rewrites the response's `Cache-Control` for the
//! cache (`s-maxage`, which a shared cache obeys before `max-age`) and keeps the origin's own
//! value in [`ORIGIN_CACHE_CONTROL`]; on the way out the origin's value is put back
//! ([`crate::filter::RestoreCacheControl`]) or replaced by the client TTL ([`ClientTtl`]).
//! `Age` and `Cache-Status: ttl=` then show what the edge stored and for how long.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use super::{PathPattern, TtlRule, first_match};
use crate::body::Body;
use crate::cache::Upstream;
use crate::cache::policy::{self, CacheControl, PolicyConfig};
use crate::config::SiteConfig;
use crate::filter::{Filter, Phases, RequestInfo};
use crate::origin::OriginError;
use crate::sites::Site;

/// Where the origin's `Cache-Control` is kept in a stored response whose lifetime a rule
/// changed (empty: the origin sent none). Never sent to clients.
pub const ORIGIN_CACHE_CONTROL: HeaderName = HeaderName::from_static("quicdn-origin-cache-control");

/// Refuses contradictions a site owner would not mean.
pub(super) fn check(rule: &TtlRule) -> Result<(), String> {
    if let (Some(min), Some(max)) = (rule.min, rule.max)
        && min > max
    {
        return Err(format!("min ({min:?}) is above max ({max:?})"));
    }
    let zero = [rule.default, rule.override_ttl, rule.negative, rule.max]
        .iter()
        .flatten()
        .any(Duration::is_zero);
    match zero {
        true => Err("a TTL of 0 stores nothing: use `bypass = true` instead".into()),
        false => Ok(()),
    }
}

/// The TTL rules of a site's path rules, by pattern.
#[derive(Debug)]
pub struct TtlRules {
    patterns: Arc<[PathPattern]>,
    rules: Vec<TtlRule>,
    /// Per rule, its client TTL as the header value browsers get (built once).
    client: Vec<Option<HeaderValue>>,
}

impl TtlRules {
    pub fn new(site: &SiteConfig, patterns: Arc<[PathPattern]>) -> Self {
        let client = site
            .rules
            .iter()
            .map(|r| {
                let ttl = r.ttl.client?;
                HeaderValue::from_str(&format!("max-age={}", ttl.as_secs())).ok()
            })
            .collect();
        Self {
            patterns,
            rules: site.rules.iter().map(|r| r.ttl.clone()).collect(),
            client,
        }
    }

    fn rule(&self, path_and_query: &str) -> Option<&TtlRule> {
        self.rules.get(first_match(&self.patterns, path_and_query)?)
    }
}

/// The site's upstream, with its responses' lifetimes set by the TTL rules.
pub struct TtlUpstream {
    pub inner: Arc<dyn Upstream>,
    pub rules: Arc<TtlRules>,
}

impl Upstream for TtlUpstream {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Some(rule) = self.rules.rule(path).cloned() else {
            return self.inner.fetch(req);
        };
        let fetched = self.inner.fetch(req);
        Box::pin(async move {
            let mut response = fetched.await?;
            let status = response.status();
            apply(&rule, status, response.headers_mut());
            Ok(response)
        })
    }
}

/// 404 and 410: the answers negative caching keeps.
fn is_negative(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::GONE
}

/// The lifetime `rule` gives a response with these headers, if it changes it.
fn edge_ttl(rule: &TtlRule, status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let cc = CacheControl::parse(headers);
    let shareable = !(cc.no_store || cc.private);
    if is_negative(status) {
        return rule.negative.filter(|_| shareable);
    }
    if !(status.is_success() || status.is_redirection()) {
        return None;
    }
    if let Some(ttl) = rule.override_ttl {
        // A response that sets a cookie is never stored by a rule: it would hand one
        // user's cookie to everyone.
        return (!headers.contains_key(header::SET_COOKIE)).then_some(ttl);
    }
    if !shareable || cc.no_cache || cc.invalid {
        return None;
    }
    let explicit =
        cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(header::EXPIRES);
    if !explicit {
        return rule.default;
    }
    let lifetime = policy::freshness_lifetime(status, headers, SystemTime::now(), &NO_HEURISTIC).0;
    let clamped = rule
        .min
        .map_or(lifetime, |min| lifetime.max(min))
        .min(rule.max.unwrap_or(Duration::MAX));
    (clamped != lifetime).then_some(clamped)
}

const NO_HEURISTIC: PolicyConfig = PolicyConfig {
    heuristic_fraction: 0.0,
    heuristic_max: Duration::ZERO,
};

/// Rewrites `Cache-Control` for the edge's lifetime, keeping the origin's value aside.
fn apply(rule: &TtlRule, status: StatusCode, headers: &mut HeaderMap) {
    let Some(ttl) = edge_ttl(rule, status, headers) else {
        return;
    };
    let origin: Vec<u8> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b", "[..]);
    let negative = is_negative(status);
    let overridden = rule.override_ttl.is_some() && !negative;
    // What still applies at the edge: the stale rules and must-revalidate, unless overridden.
    let mut kept: Vec<String> = policy::list_members(headers, &header::CACHE_CONTROL, true)
        .into_iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .filter(|d| {
            let name = d
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let timing = matches!(name.as_str(), "s-maxage" | "max-age");
            let storage = matches!(name.as_str(), "no-store" | "no-cache" | "private");
            !timing && !((overridden || negative) && storage)
        })
        .collect();
    kept.push(format!("s-maxage={}", ttl.as_secs()));
    let (Ok(value), Ok(saved)) = (
        HeaderValue::from_str(&kept.join(", ")),
        HeaderValue::from_bytes(&origin),
    ) else {
        return;
    };
    headers.insert(header::CACHE_CONTROL, value);
    headers.insert(ORIGIN_CACHE_CONTROL, saved);
    // Expires would otherwise disagree with the new lifetime for anyone who reads it.
    headers.remove(header::EXPIRES);
}

/// What browsers are told: `Cache-Control: max-age=<client>` on 2xx and 3xx responses.
pub struct ClientTtl {
    pub rules: Arc<TtlRules>,
}

impl Filter for ClientTtl {
    fn name(&self) -> &'static str {
        "client-ttl"
    }

    fn phases(&self) -> Phases {
        Phases::ON_RESPONSE
    }

    fn on_response(&self, req: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        let rules = &self.rules;
        if let Some(value) = req
            .site_rule()
            .and_then(|i| rules.client.get(i))
            .and_then(Option::as_ref)
        {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    fn after(rule: &TtlRule, status: u16, cc: Option<&str>) -> (Option<String>, Option<String>) {
        let mut h = HeaderMap::new();
        if let Some(cc) = cc {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
        }
        apply(rule, StatusCode::from_u16(status).unwrap(), &mut h);
        let get = |n: &HeaderName| h.get(n).map(|v| v.to_str().unwrap().to_owned());
        (get(&header::CACHE_CONTROL), get(&ORIGIN_CACHE_CONTROL))
    }

    #[test]
    fn the_edge_lifetime_follows_the_rule_and_the_origins_value_is_kept() {
        let clamp = TtlRule {
            min: secs(60),
            max: secs(3600),
            default: secs(300),
            ..TtlRule::default()
        };
        assert_eq!(
            after(&clamp, 200, Some("max-age=5, stale-while-revalidate=30")),
            (
                Some("stale-while-revalidate=30, s-maxage=60".into()),
                Some("max-age=5, stale-while-revalidate=30".into())
            )
        );
        assert_eq!(
            after(&clamp, 200, Some("max-age=86400")).0.as_deref(),
            Some("s-maxage=3600")
        );
        assert_eq!(
            after(&clamp, 200, Some("max-age=600")),
            (Some("max-age=600".into()), None)
        );
        assert_eq!(
            after(&clamp, 200, None),
            (Some("s-maxage=300".into()), Some(String::new()))
        );
        assert_eq!(
            after(&clamp, 200, Some("no-store")).1,
            None,
            "no-store stays"
        );
        let force = TtlRule {
            override_ttl: secs(120),
            negative: secs(30),
            ..TtlRule::default()
        };
        assert_eq!(
            after(&force, 200, Some("private, no-store")).0.as_deref(),
            Some("s-maxage=120")
        );
        assert_eq!(after(&force, 404, None).0.as_deref(), Some("s-maxage=30"));
        assert_eq!(after(&force, 404, Some("no-store")).1, None);
        assert_eq!(after(&force, 500, None).1, None);
        assert!(
            check(&TtlRule {
                min: secs(10),
                max: secs(5),
                ..TtlRule::default()
            })
            .is_err()
        );
        assert!(
            check(&TtlRule {
                default: secs(0),
                ..TtlRule::default()
            })
            .is_err()
        );
    }
}
