//! Header edits on both sides, and the HTTP-to-HTTPS redirect.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::{HeaderEdits, RuleError, invalid};
use crate::body::{self, Body};
use crate::cache::Served;
use crate::config::SiteConfig;
use crate::filter::{Filter, Phases, RequestInfo, Verdict};
use crate::headers::{CacheStatus, Outcome};
use crate::sites::Site;

/// [`HeaderEdits`] parsed once.
#[derive(Debug, Default)]
struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

/// Headers the edge owns on the way out: a rule that could forge them would lie about what
/// the cache did or break the connection.
const PROTECTED: [&str; 5] = [
    "cache-status",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-range",
];

impl Edits {
    fn parse(edits: &HeaderEdits, at: &str) -> Result<Self, RuleError> {
        let name = |n: &str| {
            let name = HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| invalid(at, format!("{n:?} is not a header name")))?;
            match PROTECTED.contains(&name.as_str()) {
                true => Err(invalid(at, format!("{n:?} is set by the edge itself"))),
                false => Ok(name),
            }
        };
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(n, v)| {
                    let value = HeaderValue::from_str(v).map_err(|_| {
                        invalid(at, format!("the value of {n:?} is not a header value"))
                    })?;
                    Ok((name(n)?, value))
                })
                .collect::<Result<Vec<_>, RuleError>>()
        };
        Ok(Self {
            remove: edits
                .remove
                .iter()
                .map(|n| name(n))
                .collect::<Result<_, _>>()?,
            set: pairs(&edits.set)?,
            add: pairs(&edits.add)?,
        })
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// The site's header edits, then those of the first path rule that matches.
pub struct HeaderRules {
    site_request: Edits,
    site_response: Edits,
    /// Per rule: (request edits, response edits).
    rules: Vec<(Edits, Edits)>,
}

impl HeaderRules {
    /// `None` when the site edits no header anywhere.
    pub fn new(site: &SiteConfig) -> Result<Option<Self>, RuleError> {
        let any = !site.request_headers.is_empty()
            || !site.response_headers.is_empty()
            || site
                .rules
                .iter()
                .any(|r| !r.request_headers.is_empty() || !r.response_headers.is_empty());
        if !any {
            return Ok(None);
        }
        let mut rules = Vec::with_capacity(site.rules.len());
        for (i, rule) in site.rules.iter().enumerate() {
            let at = format!("rule {} (path {:?})", i + 1, rule.path);
            rules.push((
                Edits::parse(&rule.request_headers, &format!("{at}, request_headers"))?,
                Edits::parse(&rule.response_headers, &format!("{at}, response_headers"))?,
            ));
        }
        Ok(Some(Self {
            site_request: Edits::parse(&site.request_headers, "request_headers")?,
            site_response: Edits::parse(&site.response_headers, "response_headers")?,
            rules,
        }))
    }

    fn rule(&self, req: &RequestInfo<'_>) -> Option<&(Edits, Edits)> {
        self.rules.get(req.site_rule()?)
    }
}

impl Filter for HeaderRules {
    fn name(&self) -> &'static str {
        "header-rules"
    }

    fn phases(&self) -> Phases {
        Phases::UPSTREAM_REQUEST.and(Phases::ON_RESPONSE)
    }

    fn upstream_request(
        &self,
        req: &RequestInfo<'_>,
        _: &Site,
        upstream: &mut http::request::Parts,
    ) {
        self.site_request.apply(&mut upstream.headers);
        if let Some((edits, _)) = self.rule(req) {
            edits.apply(&mut upstream.headers);
        }
    }

    fn on_response(&self, req: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        self.site_response.apply(response.headers_mut());
        if let Some((_, edits)) = self.rule(req) {
            edits.apply(response.headers_mut());
        }
    }
}

/// Requests over plain HTTP get `308 Permanent Redirect` to the same URL over HTTPS (308
/// keeps the method and body, unlike 301).
pub(super) struct RedirectHttps {
    /// The HTTPS port in the `Location` (none for 443).
    pub(super) port: Option<u16>,
}

impl Filter for RedirectHttps {
    fn name(&self) -> &'static str {
        "redirect-https"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
    }

    fn on_site(&self, req: &RequestInfo<'_>, _: &Site) -> Verdict {
        let Ok((host, path)) = req.target else {
            return Verdict::Continue;
        };
        if req.ctx.secure {
            return Verdict::Continue;
        }
        let host = match host.contains(':') {
            true => format!("[{host}]"),
            false => host.to_owned(),
        };
        let location = match self.port {
            None | Some(443) => format!("https://{host}{path}"),
            Some(port) => format!("https://{host}:{port}{path}"),
        };
        let Ok(location) = HeaderValue::from_str(&location) else {
            return Verdict::Continue;
        };
        let mut response = Response::new(body::full(format!(
            "Redirecting to {}\n",
            location.to_str().unwrap_or("")
        )));
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        let h = response.headers_mut();
        h.insert(header::LOCATION, location);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Verdict::Respond(Served {
            response,
            status: CacheStatus {
                outcome: Some(Outcome::Synthetic),
                detail: Some("redirect-https"),
                ..CacheStatus::default()
            },
        })
    }
}
