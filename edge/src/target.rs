//! The request target as the edge uses it: one host and one normalised path, from which the
//! routing, the cache key and the origin request are all derived, so that none of them can
//! disagree with another about what was asked for.
//!
//! - The host comes from the URI authority (`:authority`, or an HTTP/1.1 absolute-form target,
//!   which overrides `Host` per RFC 9112 3.2.2), else from the single `Host` header. Two `Host`
//!   headers, user info (`evil@site`), or a `Host` that names another host than `:authority`
//!   over HTTP/2 or HTTP/3 (RFC 9113 8.3.1, RFC 9114 4.3.1) are refused. It is lowercased and
//!   loses a trailing dot, so `Site.test.` and `site.test` are one site and one cache entry.
//! - The path has its dot segments removed (RFC 3986 5.2.4), including percent-encoded ones
//!   (`%2e%2e`), which origins decode; a path that climbs above `/` is refused rather than
//!   clamped, so it can never reach the origin outside the site's path prefix. A `..` next to
//!   an encoded slash or a backslash (`/..%2f`, `/..\`, `/..%5c`) is refused too: origins that
//!   decode `%2f` or treat `\` as a separator (IIS, many frameworks) would climb with it, and
//!   no real name looks like that.

use std::borrow::Cow;

use http::header;
use http::request::Parts;
use http::{Version, uri::Authority};

/// Why a request target was refused (each answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("request has no host (Host header or :authority)")]
    NoHost,
    #[error("request has more than one Host header")]
    DuplicateHost,
    #[error("Host header is not a valid authority")]
    InvalidHost,
    #[error("the authority may not carry user info")]
    UserInfo,
    #[error("Host header and :authority name different hosts")]
    HostMismatch,
    #[error("request target must be an absolute path")]
    NotAbsolute,
    #[error("path climbs above the root with dot segments")]
    EscapesRoot,
    #[error("path hides a dot segment behind an encoded slash or a backslash")]
    HiddenDotSegment,
}

/// The request's host: lowercase, without port, brackets or trailing dot.
pub(crate) fn host(parts: &Parts) -> Result<String, TargetError> {
    let mut values = parts.headers.get_all(header::HOST).iter();
    let host_header = values.next();
    if values.next().is_some() {
        return Err(TargetError::DuplicateHost);
    }
    let from_header = host_header
        .map(|v| {
            let text = v.to_str().map_err(|_| TargetError::InvalidHost)?;
            text.trim()
                .parse::<Authority>()
                .map_err(|_| TargetError::InvalidHost)
        })
        .transpose()?;
    let authority = match (parts.uri.authority(), from_header) {
        (Some(uri), Some(header)) => {
            let multiplexed = matches!(parts.version, Version::HTTP_2 | Version::HTTP_3);
            if multiplexed && normalise(header.host())? != normalise(uri.host())? {
                return Err(TargetError::HostMismatch);
            }
            // HTTP/1.1 absolute-form: the target's authority wins; Host is ignored.
            check_user_info(&header)?;
            uri.clone()
        }
        (Some(uri), None) => uri.clone(),
        (None, Some(header)) => header,
        (None, None) => return Err(TargetError::NoHost),
    };
    check_user_info(&authority)?;
    normalise(authority.host())
}

fn check_user_info(authority: &Authority) -> Result<(), TargetError> {
    match authority.as_str().contains('@') {
        true => Err(TargetError::UserInfo),
        false => Ok(()),
    }
}

fn normalise(host: &str) -> Result<String, TargetError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !valid {
        return Err(TargetError::InvalidHost);
    }
    Ok(host.to_ascii_lowercase())
}

/// The path-and-query with dot segments removed. Borrowed (no work) when the path has no dot
/// and no percent sign, which is nearly every request.
pub(crate) fn path_and_query(target: &str) -> Result<Cow<'_, str>, TargetError> {
    if !target.starts_with('/') {
        return Err(TargetError::NotAbsolute);
    }
    let (path, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    if !path.contains(['.', '%']) {
        return Ok(Cow::Borrowed(target));
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match dot_segment(segment) {
            Some(Dot::One) => trailing_slash = i == last,
            Some(Dot::Two) => {
                if out.pop().is_none() {
                    return Err(TargetError::EscapesRoot);
                }
                trailing_slash = i == last;
            }
            None => {
                if hides_dot_segment(segment) {
                    return Err(TargetError::HiddenDotSegment);
                }
                out.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(target.len());
    for segment in &out {
        normal.push('/');
        normal.push_str(segment);
    }
    if trailing_slash || normal.is_empty() {
        normal.push('/');
    }
    normal.push_str(query);
    Ok(match normal == target {
        true => Cow::Borrowed(target),
        false => Cow::Owned(normal),
    })
}

enum Dot {
    One,
    Two,
}

/// A `..` among the parts of `segment` split at `\\`, `%2f` or `%5c` (any case).
fn hides_dot_segment(segment: &str) -> bool {
    if !segment.contains(['\\', '%']) {
        return false;
    }
    let bytes = segment.as_bytes();
    let mut parts = Vec::new();
    let (mut from, mut i) = (0, 0);
    while i < bytes.len() {
        let sep = match bytes[i] {
            b'\\' => 1,
            b'%' if bytes.len() >= i + 3
                && (bytes[i + 1] == b'2' && bytes[i + 2] | 0x20 == b'f'
                    || bytes[i + 1] == b'5' && bytes[i + 2] | 0x20 == b'c') =>
            {
                3
            }
            _ => 0,
        };
        if sep == 0 {
            i += 1;
            continue;
        }
        parts.push(&segment[from..i]);
        i += sep;
        from = i;
    }
    parts.push(&segment[from..]);
    parts.len() > 1
        && parts
            .iter()
            .any(|p| matches!(dot_segment(p), Some(Dot::Two)))
}

/// `.` or `..`, also when its dots are percent-encoded (`%2e`, `%2E`).
fn dot_segment(segment: &str) -> Option<Dot> {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
    }
    match dots {
        1 => Some(Dot::One),
        2 => Some(Dot::Two),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut builder = http::Request::builder().uri(uri).version(version);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap().into_parts().0
    }

    /// (target, version, Host headers, expected host)
    type HostCase = (
        &'static str,
        Version,
        &'static [&'static str],
        Result<&'static str, TargetError>,
    );

    #[test]
    fn host_from_authority_or_header() {
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        #[rustfmt::skip]
        let cases: [HostCase; 14] = [
            ("/x", h1, &["Site.Test:8080"], Ok("site.test")),
            ("/x", h1, &["site.test."], Ok("site.test")),
            ("/x", h1, &["[::1]:8443"], Ok("::1")),
            ("/x", h1, &[], Err(TargetError::NoHost)),
            ("/x", h1, &["a.test", "b.test"], Err(TargetError::DuplicateHost)),
            ("/x", h1, &["evil@site.test"], Err(TargetError::UserInfo)),
            ("/x", h1, &["bad host"], Err(TargetError::InvalidHost)),
            ("/x", h1, &["a.test/x"], Err(TargetError::InvalidHost)),
            // Absolute form: the target's authority, whatever Host says.
            ("http://site.test/x", h1, &["other.test"], Ok("site.test")),
            ("http://evil@site.test/x", h1, &[], Err(TargetError::UserInfo)),
            ("http://site.test/x", h1, &["evil@site.test"], Err(TargetError::UserInfo)),
            // HTTP/2: :authority and Host must agree.
            ("https://site.test/x", h2, &["site.test"], Ok("site.test")),
            ("https://site.test/x", h2, &["SITE.test."], Ok("site.test")),
            ("https://site.test/x", h2, &["other.test"], Err(TargetError::HostMismatch)),
        ];
        for (uri, version, hosts, want) in cases {
            let got = host(&parts(uri, version, hosts));
            assert_eq!(got.as_deref(), want.as_deref(), "{uri} {hosts:?}");
        }
    }

    #[test]
    fn dot_segments_are_removed_and_escapes_refused() {
        #[rustfmt::skip]
        let cases: [(&str, Result<&str, TargetError>); 21] = [
            ("/a/b?x=1", Ok("/a/b?x=1")),
            ("/a/./b", Ok("/a/b")),
            ("/a/../b", Ok("/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/%2e%2E/b", Ok("/b")),
            ("/a/.%2e/b?q=../..", Ok("/b?q=../..")),
            ("/a/..%2f", Err(TargetError::HiddenDotSegment)),
            ("/a/..%2F..%2Fetc", Err(TargetError::HiddenDotSegment)),
            ("/a/..\\x", Err(TargetError::HiddenDotSegment)),
            ("/a/x%5c..", Err(TargetError::HiddenDotSegment)),
            ("/a/%2e%2e%5cx", Err(TargetError::HiddenDotSegment)),
            ("/api/users%2F12", Ok("/api/users%2F12")),
            ("/a/b\\c.txt", Ok("/a/b\\c.txt")),
            ("/file.txt", Ok("/file.txt")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("/...", Ok("/...")),
            ("/..", Err(TargetError::EscapesRoot)),
            ("/../etc/passwd", Err(TargetError::EscapesRoot)),
            ("/a/%2e%2e/%2E%2E/b", Err(TargetError::EscapesRoot)),
            ("*", Err(TargetError::NotAbsolute)),
        ];
        for (target, want) in cases {
            let got = path_and_query(target);
            assert_eq!(got.as_deref(), want.as_deref(), "{target}");
        }
    }
}
