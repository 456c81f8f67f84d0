//! Cache-Control parsing (RFC 9111 5.2): every line of the field combined into one
//! [`CacheControl`], with the delta-seconds rules of RFC 9111 1.2.2.

use http::header::{self, HeaderMap};

use super::fields::list_members;

/// RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31; we cap every value
/// there so that later arithmetic cannot overflow.
pub(super) const MAX_DELTA: u64 = 1 << 31;

/// Parsed Cache-Control (all Cache-Control header lines combined, directives case-insensitive,
/// quoted-string arguments accepted, e.g. `max-age="60"`). Duplicate conflicting numeric
/// directives keep the smallest value (conservative). `no-cache` / `private` with a field-name
/// list (`no-cache="set-cookie"`) are treated as the unqualified directive (allowed, conservative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub only_if_cached: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub min_fresh: Option<u64>,
    /// Request max-stale: `Some(None)` = any staleness accepted, `Some(Some(n))` = up to n s.
    pub max_stale: Option<Option<u64>>,
    /// A directive was present but its argument was not a valid delta-seconds (e.g.
    /// `max-age=abc`): callers treat the response as stale.
    pub invalid: bool,
}

impl CacheControl {
    /// Parses every Cache-Control line of `headers`; unknown directives are ignored
    /// (RFC 9111 5.2.3).
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        for directive in list_members(headers, &header::CACHE_CONTROL, true) {
            cc.apply(directive);
        }
        cc
    }

    fn apply(&mut self, directive: &[u8]) {
        let (name, arg) = match directive.iter().position(|&b| b == b'=') {
            Some(eq) => (
                directive[..eq].trim_ascii(),
                Some(unquote(directive[eq + 1..].trim_ascii())),
            ),
            None => (directive, None),
        };
        match name.to_ascii_lowercase().as_slice() {
            b"no-store" => self.no_store = true,
            b"no-cache" => self.no_cache = true,
            b"private" => self.private = true,
            b"public" => self.public = true,
            b"must-revalidate" => self.must_revalidate = true,
            b"proxy-revalidate" => self.proxy_revalidate = true,
            b"must-understand" => self.must_understand = true,
            b"no-transform" => self.no_transform = true,
            b"immutable" => self.immutable = true,
            b"only-if-cached" => self.only_if_cached = true,
            b"max-age" => merge_seconds(&mut self.max_age, &mut self.invalid, arg),
            b"s-maxage" => merge_seconds(&mut self.s_maxage, &mut self.invalid, arg),
            b"stale-while-revalidate" => {
                merge_seconds(&mut self.stale_while_revalidate, &mut self.invalid, arg);
            }
            b"stale-if-error" => merge_seconds(&mut self.stale_if_error, &mut self.invalid, arg),
            b"min-fresh" => merge_seconds(&mut self.min_fresh, &mut self.invalid, arg),
            b"max-stale" => self.merge_max_stale(arg),
            _ => {}
        }
    }

    /// A bounded max-stale is stricter than an unbounded one, so it wins.
    fn merge_max_stale(&mut self, arg: Option<&[u8]>) {
        let Some(arg) = arg else {
            self.max_stale.get_or_insert(None);
            return;
        };
        match delta_seconds(arg) {
            Some(n) => {
                let bound = self.max_stale.flatten().map_or(n, |old| old.min(n));
                self.max_stale = Some(Some(bound));
            }
            None => self.invalid = true,
        }
    }

    /// must-revalidate, or its shared-cache twin proxy-revalidate (RFC 9111 5.2.2.2, 5.2.2.8).
    pub(super) fn revalidate_required(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate
    }
}

/// Stores a numeric directive, keeping the smallest of duplicates; a missing or malformed
/// argument marks the whole header invalid.
fn merge_seconds(slot: &mut Option<u64>, invalid: &mut bool, arg: Option<&[u8]>) {
    match arg.and_then(delta_seconds) {
        Some(n) => *slot = Some(slot.map_or(n, |old| old.min(n))),
        None => *invalid = true,
    }
}

/// Strips the quotes of a quoted-string argument. Escapes are left in place, which makes a
/// numeric argument invalid: digits never need quoting-by-backslash.
fn unquote(arg: &[u8]) -> &[u8] {
    match arg.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) {
        Some(inner) => inner,
        None => arg,
    }
}

/// RFC 9111 1.2.2 delta-seconds: digits only, capped at 2^31.
pub(super) fn delta_seconds(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some(value.map_or(MAX_DELTA, |v| v.min(MAX_DELTA)))
}
