//! Validation: revalidating a stored response with the origin (RFC 9111 4.3) and answering a
//! client's conditional request from it (RFC 9110 13).

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};

use super::cacheable_method;
use super::fields::{http_date, list_members, parse_date};

/// Headers for revalidating a stored response (RFC 9111 4.3.1): If-None-Match from ETag and
/// If-Modified-Since from Last-Modified, each only when the stored response has it.
pub fn validation_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(etag) = stored.get(header::ETAG) {
        out.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(last_modified) = stored.get(header::LAST_MODIFIED) {
        out.insert(header::IF_MODIFIED_SINCE, last_modified.clone());
    }
    out
}

/// RFC 9111 3.2 / 4.3.4: the stored headers updated from a 304. Each field the 304 carries
/// replaces the stored one, except Content-Length, Content-Range and Transfer-Encoding (they
/// describe the stored body, not the 304's) and hop-by-hop fields, including any the 304's
/// Connection names.
pub fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    let connection = list_members(not_modified, &header::CONNECTION, false);
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        let kept = *name == header::CONTENT_LENGTH
            || *name == header::CONTENT_RANGE
            || crate::headers::is_hop_by_hop(name)
            || connection
                .iter()
                .any(|c| c.eq_ignore_ascii_case(name.as_str().as_bytes()));
        if kept {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

/// RFC 9111 4.3.4: does a 304 apply to the stored response? An ETag in the 304 must equal the
/// stored one (weak comparison); else its Last-Modified must equal the stored one; a 304 with
/// neither applies unless the stored response has a strong ETag it would have had to echo.
pub fn not_modified_matches(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    if let Some(tag) = not_modified.get(header::ETAG) {
        return stored
            .get(header::ETAG)
            .is_some_and(|s| weak_match(s.as_bytes(), tag.as_bytes()));
    }
    if let Some(modified) = not_modified.get(header::LAST_MODIFIED) {
        return stored
            .get(header::LAST_MODIFIED)
            .is_some_and(|s| same_date(s, modified));
    }
    !stored
        .get(header::ETAG)
        .is_some_and(|tag| is_strong(tag.as_bytes()))
}

/// Whether a 304 to the edge's own revalidation selects the stored response it validated. The
/// edge sends the validators of exactly one stored response, so a 304 that carries no
/// validator at all can only mean that one (origins such as nginx send bare 304s); one that
/// carries a validator must match it ([`not_modified_matches`]).
pub fn not_modified_selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    let bare = !not_modified.contains_key(header::ETAG)
        && !not_modified.contains_key(header::LAST_MODIFIED);
    bare || not_modified_matches(stored, not_modified)
}

/// Dates compare by instant when both parse, else byte for byte.
fn same_date(a: &HeaderValue, b: &HeaderValue) -> bool {
    match (parse_date(a), parse_date(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.as_bytes().trim_ascii() == b.as_bytes().trim_ascii(),
    }
}

/// Outcome of a client's conditional GET/HEAD against a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    Proceed,
    NotModified,
}

/// Client conditional GET/HEAD against a stored response (RFC 9110 13.2.2 order):
/// If-None-Match (weak comparison, `*`, lists, `W/`) when present, otherwise If-Modified-Since
/// against Last-Modified (or else Date). Only meaningful for a stored 2xx response (RFC 9110
/// 13.2.1), which the caller ensures.
pub fn evaluate_conditional(
    method: &Method,
    req_headers: &HeaderMap,
    stored: &HeaderMap,
) -> Conditional {
    let hit = cacheable_method(method)
        && if req_headers.contains_key(header::IF_NONE_MATCH) {
            if_none_match_hits(req_headers, stored)
        } else {
            if_modified_since_hits(req_headers, stored)
        };
    if hit {
        Conditional::NotModified
    } else {
        Conditional::Proceed
    }
}

/// RFC 9110 13.1.2: `*` matches any stored representation; otherwise any listed tag that
/// weakly matches the stored ETag.
fn if_none_match_hits(req_headers: &HeaderMap, stored: &HeaderMap) -> bool {
    let stored_tag = stored.get(header::ETAG).map(HeaderValue::as_bytes);
    list_members(req_headers, &header::IF_NONE_MATCH, false)
        .into_iter()
        .any(|m| m == b"*" || stored_tag.is_some_and(|s| weak_match(s, m)))
}

/// RFC 9110 13.1.3: ignored unless it is exactly one valid HTTP-date.
fn if_modified_since_hits(req_headers: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = req_headers.get_all(header::IF_MODIFIED_SINCE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(since) = parse_date(line) else {
        return false;
    };
    let modified =
        http_date(stored, &header::LAST_MODIFIED).or_else(|| http_date(stored, &header::DATE));
    modified.is_some_and(|m| m <= since)
}

/// The opaque part of an entity-tag, for weak comparison (RFC 9110 8.8.3.2).
fn opaque_tag(tag: &[u8]) -> &[u8] {
    let tag = tag.trim_ascii();
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

fn weak_match(a: &[u8], b: &[u8]) -> bool {
    let a = opaque_tag(a);
    !a.is_empty() && a == opaque_tag(b)
}

fn is_strong(tag: &[u8]) -> bool {
    !tag.trim_ascii().starts_with(b"W/")
}
