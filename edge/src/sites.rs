//! Which origin serves a Host: exact names, `*.suffix` wildcards, then a catch-all `*`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Upstream;
use crate::config::{SchemePolicy, SiteConfig};
use crate::filter::Chain;
use crate::origin::{OriginUrl, OriginUrlError};

/// A configured site.
#[derive(Clone)]
pub struct Site {
    pub origin: OriginUrl,
    pub forward_host: bool,
    pub scheme: SchemePolicy,
    /// The site's own filters, run after the global ones in each phase.
    pub filters: Chain,
    /// Where its misses go.
    pub upstream: Arc<dyn Upstream>,
    /// Its path rules' patterns, in order (the rule filters hold what each rule does).
    pub rules: Arc<[crate::rules::PathPattern]>,
    /// Pass `Surrogate-Key` and `Cache-Tag` on to clients (default: removed).
    pub keep_surrogate_keys: bool,
}

impl Site {
    /// The first path rule whose pattern matches the path of `path_and_query`.
    pub fn rule_for(&self, path_and_query: &str) -> Option<usize> {
        crate::rules::first_match(&self.rules, path_and_query)
    }
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("origin", &self.origin)
            .field("forward_host", &self.forward_host)
            .field("scheme", &self.scheme)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// Why the sites could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SiteError {
    #[error("origin: {0}")]
    Origin(#[from] OriginUrlError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
}

/// Host name -> site routing table.
#[derive(Default)]
pub struct Sites {
    exact: HashMap<String, Arc<Site>>,
    /// (".example.com", site), longest suffix first.
    suffixes: Vec<(String, Arc<Site>)>,
    any: Option<Arc<Site>>,
}

impl Sites {
    /// The sites of `configs`, each with the upstream `upstream` makes for it (wrapped for
    /// its rules) and the filters of its rules; `https_port` is where HTTPS redirects point.
    pub(crate) fn new(
        configs: &[SiteConfig],
        https_port: Option<u16>,
        rule_metrics: &crate::rules::RuleMetrics,
        upstream: impl Fn(&SiteConfig, &OriginUrl) -> Result<Arc<dyn Upstream>, OriginUrlError>,
    ) -> Result<Self, SiteError> {
        let mut sites = Self::default();
        for config in configs {
            let origin = OriginUrl::parse(config.primary_origin())?;
            let parts =
                crate::rules::build(config, upstream(config, &origin)?, https_port, rule_metrics)?;
            let site = Arc::new(Site {
                upstream: parts.upstream,
                origin,
                forward_host: config.forward_host,
                scheme: config.scheme,
                filters: Chain::new(parts.filters),
                rules: parts.patterns,
                keep_surrogate_keys: config.keep_surrogate_keys,
            });
            for host in &config.hosts {
                let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
                if host == "*" {
                    sites.any = Some(site.clone());
                } else if let Some(suffix) = host.strip_prefix('*') {
                    sites.suffixes.push((suffix.to_owned(), site.clone()));
                } else {
                    sites.exact.insert(host, site.clone());
                }
            }
        }
        sites
            .suffixes
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(sites)
    }

    /// The site for a host name (no port; any case).
    pub fn find(&self, host: &str) -> Option<&Arc<Site>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(site) = self.exact.get(&host) {
            return Some(site);
        }
        self.suffixes
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
            .map(|(_, site)| site)
            .or(self.any.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty() && self.any.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl Upstream for Nowhere {
        fn fetch(
            &self,
            _: http::Request<crate::body::Body>,
        ) -> futures_util::future::BoxFuture<
            'static,
            Result<http::Response<crate::body::Body>, crate::origin::OriginError>,
        > {
            Box::pin(async { Err(crate::origin::OriginError::Connect("nowhere".into())) })
        }
    }

    fn nowhere(_: &SiteConfig, _: &OriginUrl) -> Result<Arc<dyn Upstream>, OriginUrlError> {
        Ok(Arc::new(Nowhere))
    }

    fn site(hosts: &[&str], origin: &str) -> SiteConfig {
        SiteConfig::new(hosts, origin)
    }

    #[test]
    fn exact_then_longest_suffix_then_any() {
        let sites = Sites::new(
            &[
                site(&["cdn.example.com"], "http://a"),
                site(&["*.example.com"], "http://b"),
                site(&["*.img.example.com"], "http://c"),
            ],
            None,
            &Default::default(),
            nowhere,
        )
        .unwrap();
        let origin = |h: &str| sites.find(h).map(|s| s.origin.to_string());
        assert_eq!(origin("CDN.example.com."), Some("http://a".into()));
        assert_eq!(origin("x.example.com"), Some("http://b".into()));
        assert_eq!(origin("x.img.example.com"), Some("http://c".into()));
        assert_eq!(origin("example.com"), None);
        assert_eq!(origin("evil.com"), None);
        let with_any = Sites::new(
            &[site(&["*"], "http://d")],
            None,
            &Default::default(),
            nowhere,
        )
        .unwrap();
        assert!(with_any.find("anything").is_some());
    }
}
