//! Per-site rules: what a site owner configures beyond "host X comes from origin Y", in the
//! spirit of CloudFront's cache behaviours and what Varnish users write in VCL. Each site has
//! site-wide settings (an HTTPS redirect, header edits) and path rules, matched in order on
//! the normalised path, the first match winning. Everything here runs on the seams: site
//! filters ([`crate::filter`]) and a wrapper of the site's upstream ([`ttl::TtlUpstream`]).

mod errors;
mod headers;
mod key;
pub mod limit;
mod path;
pub mod token;
mod ttl;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::Upstream;
use crate::config::SiteConfig;
use crate::filter::Filter;

pub use errors::{ErrorPage, ErrorPages};
pub use headers::HeaderRules;
pub use key::KeyFilter;
pub use path::PathPattern;
pub use ttl::{ClientTtl, ORIGIN_CACHE_CONTROL, TtlUpstream};

/// Header edits: `set` replaces (or adds), `add` appends beside what is there, `remove` drops
/// (e.g. `Server`, `X-Powered-By`). Applied in that order: remove, set, add.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderEdits {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How long the edge keeps a response, and what browsers are told. Unset fields (`"none"`)
/// change nothing; the origin's `Cache-Control` otherwise rules (RFC 9111).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TtlRule {
    /// The edge's lifetime when the origin gives none (no `max-age`, `s-maxage`, `Expires`)
    /// and does not forbid storing.
    #[serde(with = "crate::config::unset::none")]
    pub default: Option<Duration>,
    /// Clamp the origin's lifetime to at least this (a storable response only).
    #[serde(with = "crate::config::unset::none")]
    pub min: Option<Duration>,
    /// Clamp the origin's lifetime to at most this.
    #[serde(with = "crate::config::unset::none")]
    pub max: Option<Duration>,
    /// Keep every 2xx/3xx response this long, whatever the origin's `Cache-Control` says
    /// (`no-store`, `private` and `no-cache` included). Never for a response that sets a
    /// cookie: that one is not stored.
    #[serde(rename = "override", with = "crate::config::unset::none")]
    pub override_ttl: Option<Duration>,
    /// Browsers are told `Cache-Control: max-age=<client>` (2xx and 3xx), whatever the edge
    /// keeps; unset, they see the origin's own `Cache-Control`.
    #[serde(with = "crate::config::unset::none")]
    pub client: Option<Duration>,
    /// Keep 404 and 410 answers this long (negative caching), unless the origin said
    /// `no-store` or `private`.
    #[serde(with = "crate::config::unset::none")]
    pub negative: Option<Duration>,
}

impl TtlRule {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What the query contributes to the cache key.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueryKey {
    /// As sent (after `include`/`exclude`).
    #[default]
    Keep,
    /// Parameters sorted by name (then value): `?b=1&a=2` and `?a=2&b=1` are one entry.
    Sort,
    /// No query at all in the key.
    Ignore,
}

/// The cache key rule. The origin always gets the request's own query; only the key changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct KeyRule {
    pub query: QueryKey,
    /// Parameters left out of the key, by name; `utm_*` is a prefix.
    pub exclude: Vec<String>,
    /// If not empty, only these parameters are in the key (names; `*` suffix for a prefix).
    pub include: Vec<String>,
    /// Request headers whose values join the key (e.g. a device class set by a front proxy).
    pub headers: Vec<String>,
    /// Cookies whose values join the key.
    pub cookies: Vec<String>,
}

impl KeyRule {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A path rule: where it applies and what it changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PathRule {
    /// The paths it applies to (without the query): `/static/*` (any path under /static/),
    /// `*.css`, `/robots.txt` (exactly); `*` matches any run of characters, `/` included.
    pub path: String,
    /// Never cache: every request goes to the origin, nothing is stored.
    pub bypass: bool,
    pub ttl: TtlRule,
    pub key: KeyRule,
    /// Added to, set on, removed from responses (after the site's own edits).
    pub response_headers: HeaderEdits,
    /// Set on requests to the origin (after the site's own edits).
    pub request_headers: HeaderEdits,
    /// Whether this path needs a signed token (`[site.token]`); unset, the site's
    /// `token.required` decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<bool>,
    /// This path's own request and miss limits (instead of the site's).
    #[serde(skip_serializing_if = "limit::RateLimitConfig::is_empty")]
    pub rate_limit: limit::RateLimitConfig,
}

/// Why a site's rules were refused: names the rule and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    #[error("{at}: {what}")]
    Invalid { at: String, what: String },
}

fn invalid(at: impl Into<String>, what: impl Into<String>) -> RuleError {
    RuleError::Invalid {
        at: at.into(),
        what: what.into(),
    }
}

/// Checks a site's rules (what config validation calls).
pub fn check(site: &SiteConfig) -> Result<(), RuleError> {
    Compiled::new(site, None, &RuleMetrics::default()).map(drop)
}

/// A site's rules compiled: its filters and how its upstream is wrapped.
struct Compiled {
    filters: Vec<Arc<dyn Filter>>,
    ttl: Option<Arc<ttl::TtlRules>>,
    patterns: Arc<[PathPattern]>,
    limits: Option<limit::SiteLimits>,
}

/// The counters a site's rules count with (unregistered ones when a config is only checked).
#[derive(Clone, Default)]
pub(crate) struct RuleMetrics {
    pub(crate) token_checks: Option<crate::metrics::TokenChecks>,
    pub(crate) limited: limit::LimitCounters,
}

impl Compiled {
    fn new(
        site: &SiteConfig,
        https_port: Option<u16>,
        metrics: &RuleMetrics,
    ) -> Result<Self, RuleError> {
        let mut patterns = Vec::with_capacity(site.rules.len());
        for (i, rule) in site.rules.iter().enumerate() {
            let at = format!("rule {} (path {:?})", i + 1, rule.path);
            patterns.push(PathPattern::parse(&rule.path).map_err(|e| invalid(&at, e))?);
            if rule.bypass && !rule.ttl.is_empty() {
                return Err(invalid(
                    &at,
                    "`bypass` with `ttl`: a bypassed path is never stored",
                ));
            }
            ttl::check(&rule.ttl).map_err(|e| invalid(format!("{at}, ttl"), e))?;
        }
        let mut filters: Vec<Arc<dyn Filter>> = Vec::new();
        // First: a client over its limit costs nothing more (no signature check, no lookup).
        let limits = limit::SiteLimits::new(site, &metrics.limited)?;
        if let Some(f) = limits.as_ref().and_then(limit::SiteLimits::filter) {
            filters.push(Arc::new(f));
        }
        if site.redirect_https {
            filters.push(Arc::new(headers::RedirectHttps {
                port: site.https_port.or(https_port),
            }));
        }
        let patterns: Arc<[PathPattern]> = patterns.into();
        // Before anything the request could cost: a refused token reaches no origin.
        if let Some(f) = token::TokenFilter::new(site, metrics.token_checks.clone())? {
            filters.push(Arc::new(f));
        }
        if let Some(f) = HeaderRules::new(site)? {
            filters.push(Arc::new(f));
        }
        if site.rules.iter().any(|r| r.bypass || !r.key.is_empty()) {
            filters.push(Arc::new(KeyFilter::new(site)?));
        }
        let ttl = match site.rules.iter().any(|r| !r.ttl.is_empty()) {
            true => Some(Arc::new(ttl::TtlRules::new(site, patterns.clone()))),
            false => None,
        };
        if let Some(rules) = &ttl {
            filters.push(Arc::new(ClientTtl {
                rules: rules.clone(),
            }));
        }
        // Last: a page replaces whatever body and headers the response has by then.
        if let Some(pages) = ErrorPages::load(&site.error_pages)? {
            filters.push(Arc::new(pages));
        }
        Ok(Self {
            filters,
            ttl,
            patterns,
            limits,
        })
    }
}

/// What a site's rules make of it.
pub struct SiteParts {
    pub filters: Vec<Arc<dyn Filter>>,
    /// The path rules' patterns ([`crate::sites::Site::rule_for`]).
    pub patterns: Arc<[PathPattern]>,
    /// The site's upstream, wrapped for its TTL rules if it has any.
    pub upstream: Arc<dyn Upstream>,
}

/// A site's filters and its upstream wrapped for its TTL rules. `https_port` is where an
/// HTTPS redirect points unless the site sets `https_port`.
pub(crate) fn build(
    site: &SiteConfig,
    upstream: Arc<dyn Upstream>,
    https_port: Option<u16>,
    metrics: &RuleMetrics,
) -> Result<SiteParts, RuleError> {
    let compiled = Compiled::new(site, https_port, metrics)?;
    let upstream = match compiled.ttl {
        Some(rules) => Arc::new(TtlUpstream {
            inner: upstream,
            rules,
        }) as Arc<dyn Upstream>,
        None => upstream,
    };
    // Outermost: a client over its miss limit is answered before anything is fetched.
    let upstream = match &compiled.limits {
        Some(limits) => limits.wrap(upstream),
        None => upstream,
    };
    Ok(SiteParts {
        filters: compiled.filters,
        patterns: compiled.patterns,
        upstream,
    })
}

/// The index of the first rule whose pattern matches the path of `path_and_query`.
pub(crate) fn first_match(patterns: &[PathPattern], path_and_query: &str) -> Option<usize> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    patterns.iter().position(|p| p.matches(path))
}
