//! Which origin serves a Host: exact names, `*.suffix` wildcards, then a catch-all `*`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::SiteConfig;
use crate::origin::{OriginUrl, OriginUrlError};

/// A configured site.
#[derive(Debug, Clone)]
pub struct Site {
    pub origin: OriginUrl,
    pub forward_host: bool,
}

/// Host name -> site routing table.
#[derive(Debug, Default)]
pub struct Sites {
    exact: HashMap<String, Arc<Site>>,
    /// (".example.com", site), longest suffix first.
    suffixes: Vec<(String, Arc<Site>)>,
    any: Option<Arc<Site>>,
}

impl Sites {
    pub fn new(configs: &[SiteConfig]) -> Result<Self, OriginUrlError> {
        let mut sites = Self::default();
        for config in configs {
            let site = Arc::new(Site {
                origin: OriginUrl::parse(&config.origin)?,
                forward_host: config.forward_host,
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

/// The host name of a request: the URI authority (HTTP/2, HTTP/3, absolute-form) or else the
/// Host header, without port. `None` when absent or malformed.
pub fn request_host(req: &http::request::Parts) -> Option<String> {
    let from_uri = req.uri.authority().map(|a| a.host().to_owned());
    let host = match from_uri {
        Some(h) => h,
        None => {
            let value = req.headers.get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.trim().parse().ok()?;
            authority.host().to_owned()
        }
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(hosts: &[&str], origin: &str) -> SiteConfig {
        SiteConfig {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            origin: origin.into(),
            forward_host: false,
        }
    }

    #[test]
    fn exact_then_longest_suffix_then_any() {
        let sites = Sites::new(&[
            site(&["cdn.example.com"], "http://a"),
            site(&["*.example.com"], "http://b"),
            site(&["*.img.example.com"], "http://c"),
        ])
        .unwrap();
        let origin = |h: &str| sites.find(h).map(|s| s.origin.to_string());
        assert_eq!(origin("CDN.example.com."), Some("http://a".into()));
        assert_eq!(origin("x.example.com"), Some("http://b".into()));
        assert_eq!(origin("x.img.example.com"), Some("http://c".into()));
        assert_eq!(origin("example.com"), None);
        assert_eq!(origin("evil.com"), None);
        let with_any = Sites::new(&[site(&["*"], "http://d")]).unwrap();
        assert!(with_any.find("anything").is_some());
    }

    #[test]
    fn host_comes_from_authority_or_header() {
        let (parts, ()) = http::Request::get("http://Example.com:8080/x")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts).as_deref(), Some("Example.com"));
        let (parts, ()) = http::Request::get("/x")
            .header("host", "a.test:443")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts).as_deref(), Some("a.test"));
        let (parts, ()) = http::Request::get("/x")
            .header("host", "[::1]:8443")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts).as_deref(), Some("::1"));
        let (parts, ()) = http::Request::get("/x").body(()).unwrap().into_parts();
        assert_eq!(request_host(&parts), None);
        let (parts, ()) = http::Request::get("/x")
            .header("host", "bad host")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(request_host(&parts), None);
    }
}
