//! Invalidation (RFC 9111 4.4): which unsafe requests invalidate which stored URIs.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};

/// RFC 9111 4.4: an unsafe method with a 2xx or 3xx answer invalidates the target URI.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    !method.is_safe() && (status.is_success() || status.is_redirection())
}

/// Path-and-query strings from Location and Content-Location that are same-origin for
/// `authority` (RFC 9111 4.4): absolute-path references, and http(s) URIs whose authority
/// equals `authority` ignoring case. Others, and unparsable values, are ignored.
pub fn invalidation_targets(resp_headers: &HeaderMap, authority: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        for value in resp_headers.get_all(&name) {
            let Some(path) = same_origin_path(value, authority) else {
                continue;
            };
            if !targets.contains(&path) {
                targets.push(path);
            }
        }
    }
    targets
}

fn same_origin_path(value: &HeaderValue, authority: &str) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    // A fragment is never sent to a server, so it is not part of any cache key.
    let text = text.split('#').next().unwrap_or_default();
    if text.starts_with('/') && !text.starts_with("//") {
        let path: PathAndQuery = text.parse().ok()?;
        return Some(path.as_str().to_owned());
    }
    let uri: Uri = text.parse().ok()?;
    let http_scheme = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let same_authority = uri
        .authority()
        .is_some_and(|a| a.as_str().eq_ignore_ascii_case(authority));
    if !(http_scheme && same_authority) {
        return None;
    }
    Some(
        uri.path_and_query()
            .map_or("/", PathAndQuery::as_str)
            .to_owned(),
    )
}
