//! The filter chain: what the edge does to a request besides caching it, in phases, global
//! then per site (in the spirit of pingora's `ProxyHttp` phases).
//!
//! ```text
//! on_request        peer and normalised target known, no site yet (health, target checks)
//! on_site           the site is known (method policy, loop detection)
//! cache_key         the site's key rule may rewrite what the cache key is built from
//! upstream_request  the origin request just before it leaves (Via, X-Forwarded-*)
//! on_response       the response head, before it is sent (Via, Alt-Svc)
//! logging           once the response has ended or its client left (access log)
//! ```
//!
//! A filter says which phases it takes part in ([`Filter::phases`]); a [`Chain`] keeps one list
//! per phase, so a phase no filter uses costs an empty loop and nothing is allocated for it.
//! Filters are synchronous: anything that must wait (an origin, a store) belongs to the cache
//! or an upstream, not here.

mod guards;
mod purge;

use std::sync::Arc;

use http::Response;

use crate::body::Body;
use crate::cache::Served;
use crate::headers::Outcome;
use crate::service::RequestCtx;
use crate::sites::Site;
use crate::target::TargetError;

pub(crate) use guards::{
    AccessLog, AltSvc, ConnectRefused, Forwarded, Health, HealthState, LoopDetect,
    RestoreCacheControl, TargetCheck, target_refused,
};
pub(crate) use purge::{ControlSlot, PurgeMethod};

/// What a filter sees of a request.
pub struct RequestInfo<'a> {
    pub ctx: &'a RequestCtx,
    pub parts: &'a http::request::Parts,
    /// The normalised host and path-and-query ([`crate::target`]), or why they were refused.
    pub target: Result<(&'a str, &'a str), &'a TargetError>,
    /// The site's path rule this request matches: set once the site is known
    /// ([`crate::sites::Site::rule_for`]), read by the site's rule filters.
    pub site_rule: std::sync::OnceLock<Option<usize>>,
}

impl RequestInfo<'_> {
    /// The index of the site's path rule for this request (none before the site is known).
    pub fn site_rule(&self) -> Option<usize> {
        self.site_rule.get().copied().flatten()
    }
}

/// What the cache key is built from; the `cache_key` phase may rewrite it.
pub struct KeyParts<'a> {
    /// Path and query as they enter the key (the origin still gets the request's own).
    pub path_and_query: std::borrow::Cow<'a, str>,
    /// Not cached at all: the request goes to the upstream and nothing is stored.
    pub bypass: bool,
}

/// A filter's decision in a phase that may answer the request itself.
pub enum Verdict {
    Continue,
    /// Answer with this response; later filters and the cache are not consulted.
    Respond(Served),
}

/// The end of a request, as the `logging` phase sees it.
pub struct LogRecord<'a> {
    pub ctx: &'a RequestCtx,
    pub method: &'a http::Method,
    /// Host and raw path: empty unless a logging filter is in the chain ([`Chain::logs`]).
    pub host: &'a str,
    pub path: &'a str,
    pub status: http::StatusCode,
    pub outcome: Outcome,
    /// Body bytes sent.
    pub bytes: u64,
    /// The whole body was sent (false: the client left, or the body failed).
    pub complete: bool,
}

/// The phases a filter takes part in: `Phases::ON_SITE`, or several with
/// `Phases::UPSTREAM_REQUEST.and(Phases::ON_RESPONSE)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    pub on_request: bool,
    pub on_site: bool,
    pub cache_key: bool,
    pub upstream_request: bool,
    pub on_response: bool,
    pub logging: bool,
}

impl Phases {
    const NONE: Self = Self {
        on_request: false,
        on_site: false,
        cache_key: false,
        upstream_request: false,
        on_response: false,
        logging: false,
    };
    pub const ON_REQUEST: Self = Self {
        on_request: true,
        ..Self::NONE
    };
    pub const ON_SITE: Self = Self {
        on_site: true,
        ..Self::NONE
    };
    pub const CACHE_KEY: Self = Self {
        cache_key: true,
        ..Self::NONE
    };
    pub const UPSTREAM_REQUEST: Self = Self {
        upstream_request: true,
        ..Self::NONE
    };
    pub const ON_RESPONSE: Self = Self {
        on_response: true,
        ..Self::NONE
    };
    pub const LOGGING: Self = Self {
        logging: true,
        ..Self::NONE
    };

    /// Both sets of phases.
    pub const fn and(self, other: Self) -> Self {
        Self {
            on_request: self.on_request || other.on_request,
            on_site: self.on_site || other.on_site,
            cache_key: self.cache_key || other.cache_key,
            upstream_request: self.upstream_request || other.upstream_request,
            on_response: self.on_response || other.on_response,
            logging: self.logging || other.logging,
        }
    }
}

/// One step of request handling that is not caching. Every phase defaults to doing nothing;
/// a filter overrides the ones it lists in [`Filter::phases`].
pub trait Filter: Send + Sync {
    /// Shown in logs and errors.
    fn name(&self) -> &'static str;

    fn phases(&self) -> Phases;

    fn on_request(&self, _req: &RequestInfo<'_>) -> Verdict {
        Verdict::Continue
    }

    fn on_site(&self, _req: &RequestInfo<'_>, _site: &Site) -> Verdict {
        Verdict::Continue
    }

    fn cache_key(&self, _req: &RequestInfo<'_>, _site: &Site, _key: &mut KeyParts<'_>) {}

    fn upstream_request(
        &self,
        _req: &RequestInfo<'_>,
        _site: &Site,
        _upstream: &mut http::request::Parts,
    ) {
    }

    fn on_response(
        &self,
        _req: &RequestInfo<'_>,
        _site: Option<&Site>,
        _response: &mut Response<Body>,
    ) {
    }

    fn logging(&self, _record: &LogRecord<'_>) {}
}

/// Filters in order, split by phase.
#[derive(Clone, Default)]
pub struct Chain {
    on_request: Vec<Arc<dyn Filter>>,
    on_site: Vec<Arc<dyn Filter>>,
    cache_key: Vec<Arc<dyn Filter>>,
    upstream_request: Vec<Arc<dyn Filter>>,
    on_response: Vec<Arc<dyn Filter>>,
    logging: Vec<Arc<dyn Filter>>,
    names: Vec<&'static str>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl Chain {
    pub fn new(filters: impl IntoIterator<Item = Arc<dyn Filter>>) -> Self {
        let mut chain = Self::default();
        for filter in filters {
            let p = filter.phases();
            let lists = [
                (p.on_request, &mut chain.on_request),
                (p.on_site, &mut chain.on_site),
                (p.cache_key, &mut chain.cache_key),
                (p.upstream_request, &mut chain.upstream_request),
                (p.on_response, &mut chain.on_response),
                (p.logging, &mut chain.logging),
            ];
            for (used, list) in lists {
                if used {
                    list.push(filter.clone());
                }
            }
            chain.names.push(filter.name());
        }
        chain
    }

    /// The filters' names, in order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Whether any filter takes part in the logging phase (the record's strings are built
    /// only then).
    pub fn logs(&self) -> bool {
        !self.logging.is_empty()
    }

    pub fn on_request(&self, req: &RequestInfo<'_>) -> Verdict {
        for f in &self.on_request {
            if let Verdict::Respond(served) = f.on_request(req) {
                return Verdict::Respond(served);
            }
        }
        Verdict::Continue
    }

    pub fn on_site(&self, req: &RequestInfo<'_>, site: &Site) -> Verdict {
        for f in &self.on_site {
            if let Verdict::Respond(served) = f.on_site(req, site) {
                return Verdict::Respond(served);
            }
        }
        Verdict::Continue
    }

    pub fn cache_key(&self, req: &RequestInfo<'_>, site: &Site, key: &mut KeyParts<'_>) {
        for f in &self.cache_key {
            f.cache_key(req, site, key);
        }
    }

    pub fn upstream_request(
        &self,
        req: &RequestInfo<'_>,
        site: &Site,
        upstream: &mut http::request::Parts,
    ) {
        for f in &self.upstream_request {
            f.upstream_request(req, site, upstream);
        }
    }

    pub fn on_response(
        &self,
        req: &RequestInfo<'_>,
        site: Option<&Site>,
        response: &mut Response<Body>,
    ) {
        for f in &self.on_response {
            f.on_response(req, site, response);
        }
    }

    pub fn logging(&self, record: &LogRecord<'_>) {
        for f in &self.logging {
            f.logging(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(Phases);

    impl Filter for Only {
        fn name(&self) -> &'static str {
            "only"
        }
        fn phases(&self) -> Phases {
            self.0
        }
    }

    #[test]
    fn a_filter_is_listed_only_in_its_phases() {
        let site_only = Phases::ON_SITE;
        let logs = Phases::LOGGING.and(Phases::ON_RESPONSE);
        let chain = Chain::new([
            Arc::new(Only(site_only)) as Arc<dyn Filter>,
            Arc::new(Only(logs)),
        ]);
        assert_eq!(chain.on_request.len(), 0);
        assert_eq!(chain.on_site.len(), 1);
        assert_eq!(chain.on_response.len(), 1);
        assert!(chain.logs());
        assert_eq!(chain.names(), ["only", "only"]);
        assert!(!Chain::default().logs());
    }
}
