//! Storability (RFC 9111 3): may a shared cache store this response to this request?

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use super::cache_control::CacheControl;
use super::vary::{Vary, vary};

/// Status codes whose caching semantics we implement (for `must-understand`, RFC 9111 5.2.2.3).
const UNDERSTOOD: &[u16] = &[
    200, 203, 204, 206, 300, 301, 302, 303, 304, 307, 308, 404, 405, 410, 414, 451, 501,
];

/// RFC 9110 15.1: status codes that are heuristically cacheable.
const HEURISTIC: &[u16] = &[
    200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501,
];

/// Why a response may not be stored (RFC 9111 section 3). Used in logs and Cache-Status
/// `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    Status,
    RequestNoStore,
    NoStore,
    Private,
    Authorization,
    VaryStar,
    NoFreshnessInfo,
    PartialContent,
    MustUnderstandUnknownStatus,
}

impl NotStorable {
    /// Short kebab-case reason, e.g. `no-store`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::RequestNoStore => "request-no-store",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::VaryStar => "vary-star",
            Self::NoFreshnessInfo => "no-freshness-info",
            Self::PartialContent => "partial-content",
            Self::MustUnderstandUnknownStatus => "must-understand",
        }
    }
}

/// Whether we implement the caching semantics of `status` (RFC 9111 5.2.2.3).
pub fn understood_status(status: StatusCode) -> bool {
    UNDERSTOOD.contains(&status.as_u16())
}

/// Whether `status` may get a heuristic freshness lifetime (RFC 9110 15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    HEURISTIC.contains(&status.as_u16())
}

/// RFC 9111 3: may a shared cache store this response to this request?
///
/// Only GET responses are stored: a HEAD answer has no body, so it could never serve a GET,
/// while a HEAD is served from the stored GET.
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    check_status(status)?;
    if CacheControl::parse(req_headers).no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let cc = CacheControl::parse(resp_headers);
    check_no_store(&cc, status)?;
    if cc.private {
        return Err(NotStorable::Private);
    }
    // RFC 9111 3.5: only an explicit shared-cache directive makes an authenticated answer
    // shareable.
    let shareable = cc.must_revalidate || cc.public || cc.s_maxage.is_some();
    if req_headers.contains_key(header::AUTHORIZATION) && !shareable {
        return Err(NotStorable::Authorization);
    }
    if vary(resp_headers) == Vary::Star {
        return Err(NotStorable::VaryStar);
    }
    if !has_freshness_info(&cc, status, resp_headers) {
        return Err(NotStorable::NoFreshnessInfo);
    }
    Ok(())
}

/// The status must be final; 206 and 304 are never stored whole here.
fn check_status(status: StatusCode) -> Result<(), NotStorable> {
    match status.as_u16() {
        206 => Err(NotStorable::PartialContent),
        304 => Err(NotStorable::Status),
        _ if status.is_informational() => Err(NotStorable::Status),
        _ => Ok(()),
    }
}

/// RFC 9111 5.2.2.3: must-understand limits storage to understood status codes, and for those
/// it overrides no-store (which is only there for caches that ignore must-understand).
fn check_no_store(cc: &CacheControl, status: StatusCode) -> Result<(), NotStorable> {
    if cc.must_understand {
        return if understood_status(status) {
            Ok(())
        } else {
            Err(NotStorable::MustUnderstandUnknownStatus)
        };
    }
    if cc.no_store {
        Err(NotStorable::NoStore)
    } else {
        Ok(())
    }
}

/// RFC 9111 3: explicit expiration, `public`, or a heuristically cacheable status.
fn has_freshness_info(cc: &CacheControl, status: StatusCode, headers: &HeaderMap) -> bool {
    headers.contains_key(header::EXPIRES)
        || cc.max_age.is_some()
        || cc.s_maxage.is_some()
        || cc.public
        || heuristically_cacheable(status)
}
