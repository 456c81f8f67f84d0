//! Header field reading shared by the policy rules: list-valued fields (RFC 9110 5.6.1) and
//! HTTP-dates.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Members of a list-valued field over all its lines (RFC 9110 5.6.1: a list may be split
/// across lines), trimmed, empty ones dropped, commas inside quoted strings kept.
pub fn list_members<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    quoted_pairs: bool,
) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| split_list(v.as_bytes(), quoted_pairs))
        .collect()
}

/// Splits on commas outside double quotes. With `quoted_pairs`, a backslash inside quotes
/// escapes the next byte (quoted-string, RFC 9110 5.6.4); entity-tags have no escapes.
fn split_list(value: &[u8], quoted_pairs: bool) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let (mut start, mut in_quotes, mut escaped) = (0, false, false);
    for (i, &b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes && quoted_pairs => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                members.push(value[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(value[start..].trim_ascii());
    members.retain(|m| !m.is_empty());
    members
}

pub(super) fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

pub(super) fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    parse_date(headers.get(name)?)
}

/// `later - earlier`, saturating at zero.
pub(super) fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}
