//! The cache key rule: which query parameters, request headers and cookies make two requests
//! the same object, and `bypass`. Only the key changes: the origin gets the request as sent.

use std::borrow::Cow;

use http::header::{self, HeaderName};

use super::{KeyRule, QueryKey, RuleError, invalid};
use crate::config::SiteConfig;
use crate::filter::{Filter, KeyParts, Phases, RequestInfo};
use crate::sites::Site;

/// A parameter name pattern: exact, or a prefix (`utm_*`).
#[derive(Debug, Clone)]
enum Name {
    Exact(String),
    Prefix(String),
}

impl Name {
    fn parse(text: &str, at: &str) -> Result<Self, RuleError> {
        match text.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(invalid(
                at,
                format!("{text:?}: only a trailing * is allowed"),
            )),
            Some(prefix) => Ok(Self::Prefix(prefix.to_owned())),
            None if text.contains('*') => Err(invalid(
                at,
                format!("{text:?}: only a trailing * is allowed"),
            )),
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n == name,
            Self::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
struct Compiled {
    bypass: bool,
    query: QueryKey,
    exclude: Vec<Name>,
    include: Vec<Name>,
    headers: Vec<HeaderName>,
    cookies: Vec<String>,
}

impl Compiled {
    fn new(rule: &KeyRule, bypass: bool, at: &str) -> Result<Self, RuleError> {
        let names = |list: &[String], field: &str| {
            list.iter()
                .map(|n| Name::parse(n, &format!("{at}, key.{field}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let headers = rule
            .headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    invalid(
                        format!("{at}, key.headers"),
                        format!("{h:?} is not a header name"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            bypass,
            query: rule.query,
            exclude: names(&rule.exclude, "exclude")?,
            include: names(&rule.include, "include")?,
            headers,
            cookies: rule.cookies.clone(),
        })
    }

    /// Whether this rule leaves the key as it is.
    fn is_identity(&self) -> bool {
        self.query == QueryKey::Keep
            && self.exclude.is_empty()
            && self.include.is_empty()
            && self.headers.is_empty()
            && self.cookies.is_empty()
    }

    /// Whether the key of `path_and_query` is itself: no query to rewrite and nothing added
    /// (the common hit on a static file), so no new key is built.
    fn keeps(&self, path_and_query: &str) -> bool {
        !path_and_query.contains('?') && self.headers.is_empty() && self.cookies.is_empty()
    }

    fn key(&self, path_and_query: &str, req: &http::request::Parts) -> String {
        let (path, query) = path_and_query
            .split_once('?')
            .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
        let mut params: Vec<&str> = match self.query {
            QueryKey::Ignore => Vec::new(),
            _ => query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !self.exclude.iter().any(|n| n.matches(name))
                        && (self.include.is_empty() || self.include.iter().any(|n| n.matches(name)))
                })
                .collect(),
        };
        if self.query == QueryKey::Sort {
            params.sort_unstable();
        }
        let mut key = String::with_capacity(path_and_query.len() + 16);
        key.push_str(path);
        if !params.is_empty() {
            key.push('?');
            key.push_str(&params.join("&"));
        }
        // The separator cannot occur in a request target (these parts never collide with a
        // path), nor in the cache's own key separators (a slice's, a variant's).
        for name in &self.headers {
            key.push(crate::cache::key::PART);
            key.push_str("h:");
            key.push_str(name.as_str());
            key.push('=');
            let values: Vec<&[u8]> = req
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            key.push_str(&String::from_utf8_lossy(&values.join(&b","[..])));
        }
        for cookie in &self.cookies {
            key.push(crate::cache::key::PART);
            key.push_str("c:");
            key.push_str(cookie);
            key.push('=');
            if let Some(value) = cookie_value(&req.headers, cookie) {
                key.push_str(value);
            }
        }
        key
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 5.4 syntax).
pub(super) fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

/// The key rules (and bypass) of a site's path rules.
pub struct KeyFilter {
    rules: Vec<Compiled>,
}

impl KeyFilter {
    pub fn new(site: &SiteConfig) -> Result<Self, RuleError> {
        let rules = site
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Compiled::new(
                    &r.key,
                    r.bypass,
                    &format!("rule {} (path {:?})", i + 1, r.path),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }
}

impl Filter for KeyFilter {
    fn name(&self) -> &'static str {
        "key-rules"
    }

    fn phases(&self) -> Phases {
        Phases::CACHE_KEY
    }

    fn cache_key(&self, req: &RequestInfo<'_>, _: &Site, key: &mut KeyParts<'_>) {
        let Some(rule) = req.site_rule().and_then(|i| self.rules.get(i)) else {
            return;
        };
        key.bypass |= rule.bypass;
        if !rule.is_identity() && !rule.keeps(&key.path_and_query) {
            key.path_and_query = Cow::Owned(rule.key(&key.path_and_query, req.parts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(query: QueryKey, exclude: &[&str], include: &[&str]) -> Compiled {
        let r = KeyRule {
            query,
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            include: include.iter().map(|s| s.to_string()).collect(),
            headers: vec!["x-device".into()],
            cookies: vec!["lang".into()],
        };
        Compiled::new(&r, false, "test").unwrap()
    }

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder();
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_parameters_are_dropped_sorted_or_kept_and_headers_and_cookies_join() {
        let none = parts(&[]);
        let keep = rule(QueryKey::Keep, &["utm_*", "fbclid"], &[]);
        assert_eq!(
            keep.key("/a?utm_source=x&id=1&fbclid=2&utm_medium=y", &none),
            "/a?id=1\u{3}h:x-device=\u{3}c:lang="
        );
        assert_eq!(
            keep.key("/a?utm_source=x", &none),
            "/a\u{3}h:x-device=\u{3}c:lang="
        );
        let sort = rule(QueryKey::Sort, &[], &[]);
        assert_eq!(sort.key("/a?b=1&a=2", &none), sort.key("/a?a=2&b=1", &none));
        let only = rule(QueryKey::Keep, &[], &["id", "v*"]);
        assert!(
            only.key("/a?x=1&id=2&ver=3", &none)
                .starts_with("/a?id=2&ver=3\u{3}")
        );
        let ignore = rule(QueryKey::Ignore, &[], &[]);
        let with = parts(&[("x-device", "mobile"), ("cookie", "a=1; lang=de")]);
        assert_eq!(
            ignore.key("/a?z=1", &with),
            "/a\u{3}h:x-device=mobile\u{3}c:lang=de"
        );
        assert!(Name::parse("u*m", "t").is_err());
    }
}
