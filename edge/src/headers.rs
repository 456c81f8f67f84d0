//! Header rules of a proxy: hop-by-hop removal, `Via`, `X-Forwarded-*`, and `Cache-Status`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

/// Hop-by-hop fields (RFC 9110 7.6.1), plus the non-standard ones proxies also strip. Kept as
/// `HeaderName`s: removal by `&str` would parse each name again on every response.
pub(crate) const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a header is hop-by-hop, and so never forwarded or stored.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        // `remove` on an absent name still hashes and probes; most responses have none.
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// The `received-protocol` of RFC 9110 7.6.3 for a message's version.
pub(crate) fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Appends `<version> <pseudonym>` to `Via`.
pub(crate) fn append_via(headers: &mut HeaderMap, version: Version, pseudonym: &str) {
    if let Some(value) = via_value(version, pseudonym) {
        headers.append(header::VIA, value);
    }
}

/// The `Via` entry this node adds for a message of `version`; None if the pseudonym cannot be
/// a header value (config validation prevents that).
pub(crate) fn via_value(version: Version, pseudonym: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{} {pseudonym}", protocol_version(version))).ok()
}

/// True when a `Via` entry already carries our pseudonym: the request has looped back to us.
pub(crate) fn via_contains(headers: &HeaderMap, pseudonym: &str) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.split_whitespace().nth(1) == Some(pseudonym))
}

/// What the last `Cache-Status` entry (the nearest cache's: each appends its own, RFC 9211)
/// says the cache did: `hit`, or its `fwd` reason (`uri-miss`, `stale`, `bypass`, …).
pub(crate) fn last_cache_outcome(headers: &HeaderMap) -> Option<&str> {
    let line = headers.get_all("cache-status").iter().next_back()?;
    let entry = line.to_str().ok()?.rsplit(',').next()?;
    entry
        .split(';')
        .skip(1)
        .map(str::trim)
        .find_map(|param| match param {
            "hit" => Some("hit"),
            p => p.strip_prefix("fwd="),
        })
}

/// The `CDN-Loop` field (RFC 8586), which CDNs must not strip: each CDN a request passes adds
/// its own member, so a configuration that loops through another CDN is caught too (`Via` is
/// often rewritten or dropped on the way).
pub(crate) static CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");

/// True when a `CDN-Loop` member names us (its id before any `;` parameters; ids compare
/// case-insensitively, as host names do).
pub(crate) fn cdn_loop_contains(headers: &HeaderMap, id: &str) -> bool {
    headers
        .get_all(&CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|member| {
            let name = member.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case(id)
        })
}

/// A normalised host (lowercase, no port, IPv6 without brackets) as it goes in `Host` or
/// `X-Forwarded-Host`: an IPv6 literal in brackets again (RFC 9110 7.2), or the next hop
/// (a parent edge) would refuse it as no valid authority.
pub(crate) fn host_value(host: &str) -> Option<HeaderValue> {
    match host.contains(':') {
        true => HeaderValue::from_str(&format!("[{host}]")).ok(),
        false => HeaderValue::from_str(host).ok(),
    }
}

/// Sets `X-Forwarded-For` (appending the peer), `X-Forwarded-Proto` (removed when `proto` is
/// `None`: the site shares entries across schemes, so the origin must not be told one) and
/// `X-Forwarded-Host`.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: Option<&str>,
    host: &str,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let chain = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {peer}"),
        _ => peer.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(xff, v);
    }
    let xfp = HeaderName::from_static("x-forwarded-proto");
    match proto {
        Some(proto) => {
            let value = if proto == "https" { "https" } else { "http" };
            headers.insert(xfp, HeaderValue::from_static(value));
        }
        // A client's own value would tell the origin a scheme the key does not hold.
        None => {
            headers.remove(xfp);
        }
    }
    if let Some(v) = host_value(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

/// How the cache handled a request: the `fwd` parameter of RFC 9211, or a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from cache without contacting the origin.
    Hit,
    /// Served stale from cache (stale-while-revalidate or stale-if-error).
    StaleHit,
    /// Not in cache.
    UriMiss,
    /// In cache, but no stored variant matched the request's Vary headers.
    VaryMiss,
    /// In cache but stale: validated with (or refetched from) the origin.
    Stale,
    /// The request method or directives bypass the cache.
    Bypass,
    /// The client asked to go to the origin (request no-cache / max-age=0).
    Request,
    /// Answered by the edge itself (health, errors before any cache step).
    Synthetic,
}

impl Outcome {
    pub const ALL: [Self; 8] = [
        Self::Hit,
        Self::StaleHit,
        Self::UriMiss,
        Self::VaryMiss,
        Self::Stale,
        Self::Bypass,
        Self::Request,
        Self::Synthetic,
    ];

    /// Label for metrics and access logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::StaleHit => "stale-hit",
            Self::UriMiss => "miss",
            Self::VaryMiss => "vary-miss",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
            Self::Request => "request",
            Self::Synthetic => "synthetic",
        }
    }

    fn fwd(self) -> Option<&'static str> {
        match self {
            Self::Hit | Self::StaleHit | Self::Synthetic => None,
            Self::UriMiss => Some("uri-miss"),
            Self::VaryMiss => Some("vary-miss"),
            Self::Stale => Some("stale"),
            Self::Bypass => Some("bypass"),
            Self::Request => Some("request"),
        }
    }
}

/// The fields of one `Cache-Status` entry (RFC 9211).
#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    pub outcome: Option<Outcome>,
    pub fwd_status: Option<StatusCode>,
    /// Remaining freshness; negative when stale.
    pub ttl: Option<i64>,
    pub stored: bool,
    /// This request waited on another request's origin fetch.
    pub collapsed: bool,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// Formats the entry, e.g. `quicdn; fwd=uri-miss; fwd-status=200; stored; ttl=60`.
    pub fn render(&self, cache_name: &str) -> String {
        let mut s = cache_name.to_owned();
        match self.outcome {
            Some(Outcome::Hit | Outcome::StaleHit) => s.push_str("; hit"),
            Some(o) => {
                if let Some(fwd) = o.fwd() {
                    let _ = write!(s, "; fwd={fwd}");
                }
            }
            None => {}
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(s, "; fwd-status={}", status.as_u16());
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            let _ = write!(s, "; detail={detail}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_is_the_last_cache_status_entry() {
        let mut h = HeaderMap::new();
        h.append("cache-status", "parent; hit".parse().unwrap());
        h.append(
            "cache-status",
            "pop; fwd=uri-miss; fwd-status=200; stored".parse().unwrap(),
        );
        assert_eq!(last_cache_outcome(&h), Some("uri-miss"));
        let mut h = HeaderMap::new();
        h.append("cache-status", "pop; hit; ttl=30".parse().unwrap());
        assert_eq!(last_cache_outcome(&h), Some("hit"));
        // Entries joined on one line: the last member counts.
        let mut h = HeaderMap::new();
        h.append(
            "cache-status",
            "parent; fwd=uri-miss, child; hit".parse().unwrap(),
        );
        assert_eq!(last_cache_outcome(&h), Some("hit"));
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn via_is_appended_and_loops_are_seen() {
        let mut h = HeaderMap::new();
        h.insert("via", "1.1 other".parse().unwrap());
        assert!(!via_contains(&h, "pop-a"));
        append_via(&mut h, Version::HTTP_2, "pop-a");
        assert!(via_contains(&h, "pop-a"));
        let all: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(all[1], "2 pop-a");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        add_forwarded(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            Some("https"),
            "cdn.example",
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "cdn.example");
        add_forwarded(&mut h, "192.0.2.7".parse().unwrap(), None, "2001:db8::1");
        assert_eq!(h["x-forwarded-host"], "[2001:db8::1]");
        assert_eq!(host_value("::1").unwrap(), "[::1]");
        assert_eq!(host_value("cdn.example").unwrap(), "cdn.example");
    }

    #[test]
    fn cache_status_renders_per_rfc_9211() {
        let miss = CacheStatus {
            outcome: Some(Outcome::UriMiss),
            fwd_status: Some(StatusCode::OK),
            ttl: Some(60),
            stored: true,
            ..CacheStatus::default()
        };
        assert_eq!(
            miss.render("pop"),
            "pop; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
        let hit = CacheStatus {
            outcome: Some(Outcome::StaleHit),
            ttl: Some(-3),
            detail: Some("stale-while-revalidate"),
            ..CacheStatus::default()
        };
        assert_eq!(
            hit.render("pop"),
            "pop; hit; ttl=-3; detail=stale-while-revalidate"
        );
    }
}
