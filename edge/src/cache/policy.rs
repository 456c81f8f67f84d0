//! Pure HTTP caching policy for a shared cache.
//!
//! RFC 9111 (storage, freshness, age, validation, invalidation), RFC 5861
//! (`stale-while-revalidate`, `stale-if-error`) and RFC 9110 13 (conditional requests). No I/O
//! and no clock: callers pass `now`. Header parsing is tolerant: malformed values never panic
//! and are read in the direction that serves fewer or older responses from cache.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};

/// RFC 9111 1.2.2: a delta-seconds too large to represent is taken as 2^31; we cap every value
/// there so that later arithmetic cannot overflow.
const MAX_DELTA: u64 = 1 << 31;

/// Status codes whose caching semantics we implement (for `must-understand`, RFC 9111 5.2.2.3).
const UNDERSTOOD: &[u16] = &[
    200, 203, 204, 206, 300, 301, 302, 303, 304, 307, 308, 404, 405, 410, 414, 451, 501,
];

/// RFC 9110 15.1: status codes that are heuristically cacheable.
const HEURISTIC: &[u16] = &[
    200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501,
];

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
    fn revalidate_required(&self) -> bool {
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
fn delta_seconds(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = s.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some(value.map_or(MAX_DELTA, |v| v.min(MAX_DELTA)))
}

/// Knobs from config.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    /// Share of (Date - Last-Modified) used as heuristic lifetime (RFC 9111 4.2.2; 0.1 typical).
    pub heuristic_fraction: f64,
    /// Upper bound of any heuristic lifetime.
    pub heuristic_max: Duration,
}

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

/// What freshness and age rules read from a stored response's header fields, parsed once per
/// stored entry: a hit would otherwise parse Cache-Control twice and Date and Age each time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFacts {
    pub cc: CacheControl,
    date: Option<SystemTime>,
    /// The Age field; a missing or invalid one counts as 0.
    age: Duration,
    expires: Expires,
    last_modified: Option<SystemTime>,
    pub vary: Vary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expires {
    Absent,
    /// Invalid, or several lines: "already expired" (RFC 9111 5.3, 4.2.1).
    Expired,
    At(SystemTime),
}

impl StoredFacts {
    pub fn parse(headers: &HeaderMap) -> Self {
        let expires = match headers.get_all(header::EXPIRES).iter().count() {
            0 => Expires::Absent,
            1 => http_date(headers, &header::EXPIRES).map_or(Expires::Expired, Expires::At),
            _ => Expires::Expired,
        };
        Self {
            cc: CacheControl::parse(headers),
            date: http_date(headers, &header::DATE),
            age: headers
                .get(header::AGE)
                .and_then(|v| delta_seconds(v.as_bytes().trim_ascii()))
                .map_or(Duration::ZERO, Duration::from_secs),
            expires,
            last_modified: http_date(headers, &header::LAST_MODIFIED),
            vary: vary(headers),
        }
    }

    /// Freshness lifetime for a shared cache, RFC 9111 4.2.1: s-maxage, else max-age, else
    /// Expires - Date, else a heuristic (4.2.2). Returns (lifetime, heuristic).
    pub fn lifetime(
        &self,
        status: StatusCode,
        response_time: SystemTime,
        cfg: &PolicyConfig,
    ) -> (Duration, bool) {
        if self.cc.invalid {
            return (Duration::ZERO, false);
        }
        if let Some(secs) = self.cc.s_maxage.or(self.cc.max_age) {
            return (Duration::from_secs(secs), false);
        }
        match self.expires {
            Expires::Absent => {}
            Expires::Expired => return (Duration::ZERO, false),
            Expires::At(expires) => {
                return (since(expires, self.date_or(response_time)), false);
            }
        }
        if (heuristically_cacheable(status) || self.cc.public)
            && let Some(lifetime) = self.heuristic_lifetime(response_time, cfg)
        {
            return (lifetime, true);
        }
        (Duration::ZERO, false)
    }

    /// RFC 9111 4.2.2: a fraction of the time since Last-Modified, capped; None without
    /// Last-Modified.
    fn heuristic_lifetime(
        &self,
        response_time: SystemTime,
        cfg: &PolicyConfig,
    ) -> Option<Duration> {
        let unchanged_for = since(self.date_or(response_time), self.last_modified?);
        let fraction = cfg.heuristic_fraction;
        if fraction.is_nan() || fraction <= 0.0 {
            return Some(Duration::ZERO);
        }
        // try_from_secs_f64 fails only on overflow here (negatives are excluded above): cap it.
        let lifetime = Duration::try_from_secs_f64(unchanged_for.as_secs_f64() * fraction);
        Some(lifetime.map_or(cfg.heuristic_max, |l| l.min(cfg.heuristic_max)))
    }

    /// RFC 9111 4.2.3 current_age. A missing Date counts as `response_time`; every
    /// subtraction saturates at 0 (clock skew never makes age negative).
    pub fn current_age(
        &self,
        request_time: SystemTime,
        response_time: SystemTime,
        now: SystemTime,
    ) -> Duration {
        let apparent_age = since(response_time, self.date_or(response_time));
        let response_delay = since(response_time, request_time);
        let corrected_age_value = self.age.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        corrected_initial_age.saturating_add(since(now, response_time))
    }

    /// The response's Date, or `fallback` when it is missing or invalid (RFC 9111 4.2.3).
    fn date_or(&self, fallback: SystemTime) -> SystemTime {
        self.date.unwrap_or(fallback)
    }
}

/// [`StoredFacts::lifetime`] straight from header fields.
pub fn freshness_lifetime(
    status: StatusCode,
    resp_headers: &HeaderMap,
    response_time: SystemTime,
    cfg: &PolicyConfig,
) -> (Duration, bool) {
    StoredFacts::parse(resp_headers).lifetime(status, response_time, cfg)
}

/// [`StoredFacts::current_age`] straight from header fields.
pub fn current_age(
    resp_headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
) -> Duration {
    StoredFacts::parse(resp_headers).current_age(request_time, response_time, now)
}

/// What to do with a stored response for this request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Serve from cache. `ttl` = lifetime - age (what Cache-Status ttl= reports).
    Fresh { ttl: Duration },
    /// Must be validated with the origin before use. Fields tell what the stale rules allow
    /// meanwhile.
    Stale {
        /// How far past its lifetime the response is (negative ttl in Cache-Status terms).
        staleness: Duration,
        /// RFC 5861: may serve stale now and revalidate in the background.
        while_revalidate: bool,
        /// RFC 5861 stale-if-error: may serve stale if revalidation fails (5xx or unreachable).
        if_error: bool,
    },
}

/// Combines stored response headers, ages and request directives (RFC 9111 4.2, 5.2.1; RFC
/// 5861). Request-driven validation (no-cache, Pragma, max-age, min-fresh) never allows
/// stale-while-revalidate: the client asked for something fresher than what we have.
pub fn freshness(
    req_headers: &HeaderMap,
    resp_headers: &HeaderMap,
    status: StatusCode,
    request_time: SystemTime,
    response_time: SystemTime,
    now: SystemTime,
    cfg: &PolicyConfig,
) -> Freshness {
    let stored = StoredFacts::parse(resp_headers);
    stored_freshness(
        req_headers,
        &stored,
        status,
        (request_time, response_time),
        now,
        cfg,
    )
}

/// [`freshness`] of a stored response whose header facts are already parsed; `times` are its
/// request and response times.
pub fn stored_freshness(
    req_headers: &HeaderMap,
    stored: &StoredFacts,
    status: StatusCode,
    times: (SystemTime, SystemTime),
    now: SystemTime,
    cfg: &PolicyConfig,
) -> Freshness {
    let (request_time, response_time) = times;
    let resp = &stored.cc;
    let req = request_directives(req_headers);
    let (lifetime, _) = stored.lifetime(status, response_time, cfg);
    let age = stored.current_age(request_time, response_time, now);
    let rules = StaleRules {
        resp,
        req: &req,
        staleness: age.saturating_sub(lifetime),
    };
    // A malformed request directive is read as the strictest thing it could have meant.
    if resp.no_cache || req.no_cache || req.invalid {
        return rules.validate();
    }
    if req.max_age.is_some_and(|n| age > Duration::from_secs(n)) {
        return rules.validate();
    }
    if age < lifetime {
        let ttl = lifetime - age;
        if req.min_fresh.is_some_and(|n| ttl < Duration::from_secs(n)) {
            return rules.validate();
        }
        return Freshness::Fresh { ttl };
    }
    if rules.max_stale_allows() {
        return Freshness::Fresh {
            ttl: Duration::ZERO,
        };
    }
    rules.stale()
}

/// Request Cache-Control, with `Pragma: no-cache` honoured only when the request has no
/// Cache-Control at all (RFC 9111 5.4).
fn request_directives(req_headers: &HeaderMap) -> CacheControl {
    let mut cc = CacheControl::parse(req_headers);
    let pragma_no_cache = list_members(req_headers, &header::PRAGMA, true)
        .iter()
        .any(|m| m.eq_ignore_ascii_case(b"no-cache"));
    if pragma_no_cache && !req_headers.contains_key(header::CACHE_CONTROL) {
        cc.no_cache = true;
    }
    cc
}

/// The rules for using a stale (or must-validate) response.
struct StaleRules<'a> {
    resp: &'a CacheControl,
    req: &'a CacheControl,
    staleness: Duration,
}

impl StaleRules<'_> {
    /// Validation forced before use: no background revalidation.
    fn validate(&self) -> Freshness {
        Freshness::Stale {
            staleness: self.staleness,
            while_revalidate: false,
            if_error: self.if_error(),
        }
    }

    fn stale(&self) -> Freshness {
        Freshness::Stale {
            staleness: self.staleness,
            while_revalidate: self.while_revalidate(),
            if_error: self.if_error(),
        }
    }

    /// RFC 5861 3, limited by RFC 9111 4.2.4: must-/proxy-revalidate forbid serving stale
    /// (no-cache responses never get here: `freshness` sends them to `validate`).
    fn while_revalidate(&self) -> bool {
        !self.resp.revalidate_required() && covers(self.resp.stale_while_revalidate, self.staleness)
    }

    /// RFC 5861 4 applies "regardless of other freshness information", except that
    /// must-revalidate may never be ignored (RFC 9111 5.2.2.2).
    fn if_error(&self) -> bool {
        !self.resp.revalidate_required()
            && (covers(self.resp.stale_if_error, self.staleness)
                || covers(self.req.stale_if_error, self.staleness))
    }

    /// RFC 9111 5.2.1.2 max-stale is the client's permission, which RFC 9111 4.2.4 says an
    /// explicit no-cache, must-/proxy-revalidate or (for a shared cache) s-maxage overrides.
    fn max_stale_allows(&self) -> bool {
        let forbidden =
            self.resp.no_cache || self.resp.revalidate_required() || self.resp.s_maxage.is_some();
        !forbidden
            && match self.req.max_stale {
                None => false,
                Some(None) => true,
                Some(Some(n)) => self.staleness <= Duration::from_secs(n),
            }
    }
}

/// Whether a stale window of `window` seconds covers `staleness`.
fn covers(window: Option<u64>, staleness: Duration) -> bool {
    window.is_some_and(|n| staleness <= Duration::from_secs(n))
}

/// Vary handling (RFC 9111 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    None,
    Star,
    /// Lowercased, sorted and deduplicated field names from all Vary lines.
    Fields(Vec<HeaderName>),
}

/// Reads every Vary line. Members that are not valid field names are skipped: no request can
/// carry such a field, so it could never tell variants apart.
pub fn vary(resp_headers: &HeaderMap) -> Vary {
    let members = list_members(resp_headers, &header::VARY, false);
    if members.iter().any(|m| *m == b"*") {
        return Vary::Star;
    }
    let mut fields: Vec<HeaderName> = members
        .iter()
        .filter_map(|m| HeaderName::from_bytes(m).ok())
        .collect();
    if fields.is_empty() {
        return Vary::None;
    }
    fields.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    fields.dedup();
    Vary::Fields(fields)
}

/// The normalised request values for the Vary `fields`, as a secondary cache key.
///
/// Encoding, per field in sorted order: `name`, `\n`, then `!` for a missing header or `=`
/// followed by the values (all lines, list members trimmed and joined with ", "), then `\n`.
/// Bytes outside printable ASCII and `%` are %-escaped, so values never contain `\n` or NUL and
/// the key is unambiguous.
pub fn vary_key(fields: &[HeaderName], req_headers: &HeaderMap) -> String {
    let mut sorted: Vec<&HeaderName> = fields.iter().collect();
    sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    sorted.dedup();
    let mut key = String::new();
    for name in sorted {
        key.push_str(name.as_str());
        key.push('\n');
        match normalized_values(req_headers, name) {
            Some(values) => {
                key.push('=');
                key.push_str(&values);
            }
            None => key.push('!'),
        }
        key.push('\n');
    }
    key
}

/// All values of `name` joined with ", ", whitespace around commas normalised and empty list
/// members dropped (RFC 9110 5.6.1); None when the header is absent.
fn normalized_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    if !headers.contains_key(name) {
        return None;
    }
    let mut out = String::new();
    for value in headers.get_all(name) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            push_escaped(&mut out, member);
        }
    }
    Some(out)
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}

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

/// Whether a request may be answered from cache at all; other methods bypass the cache.
pub fn cacheable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

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

fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    parse_date(headers.get(name)?)
}

/// `later - earlier`, saturating at zero.
fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Conditional::{NotModified, Proceed};
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_700_000_000;

    const CFG: PolicyConfig = PolicyConfig {
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(3600),
    };

    /// T0 + `offset` seconds.
    fn at(offset: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0.checked_add_signed(offset).unwrap())
    }

    fn date(offset: i64) -> String {
        httpdate::fmt_http_date(at(offset))
    }

    /// Headers from `"name: value | name: value"`; a value `@N` is the HTTP-date of T0 + N.
    fn h(spec: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for field in spec.split(" | ").filter(|f| !f.is_empty()) {
            let (name, value) = field.split_once(':').unwrap();
            let value = value.strip_prefix(' ').unwrap_or(value);
            let value = match value.strip_prefix('@') {
                Some(offset) => date(offset.parse().unwrap()),
                None => value.to_owned(),
            };
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(&value).unwrap());
        }
        map
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    fn cc(set: impl FnOnce(&mut CacheControl)) -> CacheControl {
        let mut cc = CacheControl::default();
        set(&mut cc);
        cc
    }

    fn names(list: &[&str]) -> Vec<HeaderName> {
        list.iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn cache_control_parse() {
        let cases = [
            ("", CacheControl::default()),
            (
                "cache-control: public, max-age=60 \
                 | Cache-Control: S-MAXAGE=\"120\", Must-Revalidate",
                cc(|c| {
                    c.public = true;
                    c.max_age = Some(60);
                    c.s_maxage = Some(120);
                    c.must_revalidate = true;
                }),
            ),
            (
                "cache-control: max-age=60, max-age=30 | cache-control: max-age=90",
                cc(|c| c.max_age = Some(30)),
            ),
            (
                "cache-control: no-cache=\"set-cookie, x-a\", private=\"x\"",
                cc(|c| {
                    c.no_cache = true;
                    c.private = true;
                }),
            ),
            // The comma and no-store are inside a quoted string with an escaped quote.
            (
                "cache-control: x-ext=\"a\\\", no-store\"",
                CacheControl::default(),
            ),
            (
                "cache-control: proxy-revalidate,must-understand,no-transform,\
                 ,immutable,only-if-cached",
                cc(|c| {
                    c.proxy_revalidate = true;
                    c.must_understand = true;
                    c.no_transform = true;
                    c.immutable = true;
                    c.only_if_cached = true;
                }),
            ),
            (
                "cache-control: no-store, stale-while-revalidate=30, \
                 stale-if-error=600, min-fresh=5",
                cc(|c| {
                    c.no_store = true;
                    c.stale_while_revalidate = Some(30);
                    c.stale_if_error = Some(600);
                    c.min_fresh = Some(5);
                }),
            ),
            ("cache-control: max-stale", cc(|c| c.max_stale = Some(None))),
            (
                "cache-control: max-stale, max-stale=20 | cache-control: max-stale=10, max-stale",
                cc(|c| c.max_stale = Some(Some(10))),
            ),
            (
                "cache-control: max-age=abc, public",
                cc(|c| {
                    c.public = true;
                    c.invalid = true;
                }),
            ),
            ("cache-control: max-age", cc(|c| c.invalid = true)),
            ("cache-control: max-age=-1", cc(|c| c.invalid = true)),
            ("cache-control: max-stale=x", cc(|c| c.invalid = true)),
            (
                "cache-control: max-age=99999999999999999999999",
                cc(|c| c.max_age = Some(MAX_DELTA)),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(CacheControl::parse(&h(spec)), want, "{spec}");
        }
    }

    #[test]
    fn cache_control_tolerates_non_ascii_bytes() {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"x=\xff\xfe, no-store").unwrap();
        headers.insert(header::CACHE_CONTROL, value);
        assert!(CacheControl::parse(&headers).no_store);
    }

    #[test]
    fn storable_rules() {
        use NotStorable as N;
        let (get, head, post) = (&Method::GET, &Method::HEAD, &Method::POST);
        let unknown = Err(N::MustUnderstandUnknownStatus);
        let auth = "authorization: Bearer x";
        let mu = "cache-control: must-understand, no-store, max-age=60";
        #[rustfmt::skip]
        let cases = [
            (get,  "",   200, "",                                    Ok(())),
            (head, "",   200, "",                                    Err(N::Method)),
            (post, "",   200, "cache-control: max-age=60",           Err(N::Method)),
            (get,  "",   100, "",                                    Err(N::Status)),
            (get,  "",   304, "",                                    Err(N::Status)),
            (get,  "",   206, "",                                    Err(N::PartialContent)),
            (get,  "cache-control: no-store", 200, "",               Err(N::RequestNoStore)),
            (get,  "",   200, "cache-control: no-store, max-age=60", Err(N::NoStore)),
            (get,  "",   200, "cache-control: private, max-age=60",  Err(N::Private)),
            (get,  auth, 200, "cache-control: max-age=60",           Err(N::Authorization)),
            (get,  auth, 200, "cache-control: public",               Ok(())),
            (get,  auth, 200, "cache-control: s-maxage=60",          Ok(())),
            (get,  auth, 200, "cache-control: must-revalidate",      Ok(())),
            (get,  "",   200, "vary: accept | vary: *",              Err(N::VaryStar)),
            (get,  "",   302, "",                                    Err(N::NoFreshnessInfo)),
            (get,  "",   500, "",                                    Err(N::NoFreshnessInfo)),
            (get,  "",   302, "cache-control: max-age=abc",          Err(N::NoFreshnessInfo)),
            (get,  "",   302, "cache-control: max-age=60",           Ok(())),
            (get,  "",   307, "cache-control: s-maxage=60",          Ok(())),
            (get,  "",   303, "cache-control: public",               Ok(())),
            (get,  "",   500, "expires: garbage",                    Ok(())),
            (get,  "",   404, "",                                    Ok(())),
            (get,  "",   200, "set-cookie: a=b",                     Ok(())),
            // must-understand overrides no-store only for a status we understand.
            (get,  "",   200, mu,                                    Ok(())),
            (get,  "",   418, mu,                                    unknown),
            (get,  "",   418, "cache-control: must-understand",      unknown),
            (get,  "",   418, "cache-control: max-age=60",           Ok(())),
        ];
        for (method, req, code, resp, want) in cases {
            let got = storable(method, &h(req), status(code), &h(resp));
            assert_eq!(got, want, "{method} {code} req [{req}] resp [{resp}]");
        }
    }

    #[test]
    fn not_storable_names() {
        let cases = [
            (NotStorable::Method, "method"),
            (NotStorable::Status, "status"),
            (NotStorable::RequestNoStore, "request-no-store"),
            (NotStorable::NoStore, "no-store"),
            (NotStorable::Private, "private"),
            (NotStorable::Authorization, "authorization"),
            (NotStorable::VaryStar, "vary-star"),
            (NotStorable::NoFreshnessInfo, "no-freshness-info"),
            (NotStorable::PartialContent, "partial-content"),
            (NotStorable::MustUnderstandUnknownStatus, "must-understand"),
        ];
        for (reason, name) in cases {
            assert_eq!(reason.as_str(), name);
        }
    }

    #[test]
    fn lifetime_rules() {
        let zero = (Duration::ZERO, false);
        let lm = "date: @0 | last-modified: @-1000";
        #[rustfmt::skip]
        let cases = [
            (200, "cache-control: s-maxage=10, max-age=20 | expires: @30",   (secs(10), false)),
            (200, "cache-control: max-age=20 | date: @0 | expires: @30",     (secs(20), false)),
            (200, "date: @0 | expires: @30",                                 (secs(30), false)),
            // Date missing: response_time stands in.
            (200, "expires: @40",                                            (secs(40), false)),
            (200, "date: @0 | expires: @-30",                                zero),
            (200, "date: @0 | expires: 0 | last-modified: @-1000",           zero),
            (200, "expires: @30 | expires: @60",                             zero),
            (200, "cache-control: max-age=abc, s-maxage=50",                 zero),
            (200, "cache-control: max-age=0",                                zero),
            // Heuristic: 10% of 1000 s, for heuristically cacheable statuses or public.
            (200, lm,                                                        (secs(100), true)),
            (404, lm,                                                        (secs(100), true)),
            (302, lm,                                                        zero),
            (302, "cache-control: public | date: @0 | last-modified: @-1000", (secs(100), true)),
            // Capped at heuristic_max.
            (200, "date: @0 | last-modified: @-1000000",                     (secs(3600), true)),
            // Only with a valid Last-Modified.
            (200, "date: @0",                                                zero),
            (200, "date: @0 | last-modified: yesterday",                     zero),
            // Last-Modified after Date.
            (200, "date: @0 | last-modified: @1000",                         (secs(0), true)),
        ];
        for (code, spec, want) in cases {
            let got = freshness_lifetime(status(code), &h(spec), at(0), &CFG);
            assert_eq!(got, want, "{code} [{spec}]");
        }
    }

    #[test]
    fn heuristic_fraction_edge_values() {
        let headers = h("date: @0 | last-modified: @-1000");
        let cases = [
            (0.0, Duration::ZERO),
            (-1.0, Duration::ZERO),
            (f64::NAN, Duration::ZERO),
            (f64::INFINITY, secs(3600)),
            (0.5, secs(500)),
        ];
        for (fraction, want) in cases {
            let cfg = PolicyConfig {
                heuristic_fraction: fraction,
                ..CFG
            };
            let got = freshness_lifetime(StatusCode::OK, &headers, at(0), &cfg);
            assert_eq!(got, (want, true), "{fraction}");
        }
    }

    #[test]
    fn age_calculation() {
        // (headers, request_time, response_time, now, expected age), times relative to T0.
        #[rustfmt::skip]
        let cases = [
            ("date: @0",             0, 0,    0,   0),
            // Resident time.
            ("date: @0",             0, 0,   25,  25),
            // Age header plus response delay plus resident time.
            ("date: @0 | age: 100", -3, 0,   10, 113),
            // Apparent age exceeds the corrected Age.
            ("date: @-50 | age: 10", -1, 0,   0,  50),
            // Clock skew: a Date after response_time counts as apparent age 0.
            ("date: @500",           0, 0,    5,   5),
            // Missing Date is response_time; invalid Age is 0.
            ("age: soon",           -2, 0,    1,   3),
            ("age: -5",              0, 0,    0,   0),
            // now before response_time saturates.
            ("",                     0, 0, -100,   0),
        ];
        for (spec, req, resp, now, want) in cases {
            let got = current_age(&h(spec), at(req), at(resp), at(now));
            assert_eq!(got, secs(want), "[{spec}] {req} {resp} {now}");
        }
    }

    fn stale(staleness: u64, while_revalidate: bool, if_error: bool) -> Freshness {
        Freshness::Stale {
            staleness: secs(staleness),
            while_revalidate,
            if_error,
        }
    }

    fn fresh(ttl: u64) -> Freshness {
        Freshness::Fresh { ttl: secs(ttl) }
    }

    #[test]
    fn freshness_rules() {
        let swr = "max-age=100, stale-while-revalidate=60";
        let sie = "max-age=100, stale-if-error=300";
        let both = "max-age=100, stale-while-revalidate=60, stale-if-error=60";
        let must = &format!("{both}, must-revalidate");
        let proxy = &format!("{both}, proxy-revalidate");
        let no_cache = &format!("no-cache, {swr}");
        let (req_sie, req_no_cache) = (
            "cache-control: stale-if-error=60",
            "cache-control: no-cache",
        );
        let (max_stale, max_stale_50) = ("cache-control: max-stale", "cache-control: max-stale=50");
        // (request headers, response Cache-Control, seconds since the response, expected)
        #[rustfmt::skip]
        let cases = [
            ("", "max-age=100", 40,  fresh(60)),
            ("", "max-age=100", 100, stale(0, false, false)),
            ("", "max-age=100", 130, stale(30, false, false)),
            ("", "max-age=0",   0,   stale(0, false, false)),
            // stale-while-revalidate inside and outside its window.
            ("", swr, 160, stale(60, true, false)),
            ("", swr, 161, stale(61, false, false)),
            // stale-if-error from the response, inside and outside its window.
            ("", sie, 400, stale(300, false, true)),
            ("", sie, 401, stale(301, false, false)),
            ("", both, 130, stale(30, true, true)),
            // must-revalidate / proxy-revalidate disable both.
            ("", must, 130, stale(30, false, false)),
            ("", proxy, 130, stale(30, false, false)),
            (req_sie, "max-age=100, must-revalidate", 130, stale(30, false, false)),
            // s-maxage does not cancel the origin's own stale grants.
            ("", "s-maxage=100, stale-while-revalidate=60", 130, stale(30, true, false)),
            // stale-if-error from the request.
            (req_sie, "max-age=100", 130, stale(30, false, true)),
            ("cache-control: stale-if-error=10", "max-age=100", 130, stale(30, false, false)),
            // A no-cache response is validated on every use, even while fresh; never swr.
            ("", no_cache, 10, stale(0, false, false)),
            ("", "no-cache, max-age=100, stale-if-error=60", 130, stale(30, false, true)),
            // Request no-cache and Pragma force validation; stale-if-error still applies.
            (req_no_cache, swr, 10, stale(0, false, false)),
            (req_no_cache, sie, 10, stale(0, false, true)),
            ("pragma: no-cache", "max-age=100", 10, stale(0, false, false)),
            // Pragma is ignored when the request has Cache-Control.
            ("pragma: no-cache | cache-control: max-stale=5", "max-age=100", 10, fresh(90)),
            // Request max-age.
            ("cache-control: max-age=0",  swr,           10,  stale(0, false, false)),
            ("cache-control: max-age=0",  "max-age=100", 0,   fresh(100)),
            ("cache-control: max-age=20", "max-age=100", 20,  fresh(80)),
            ("cache-control: max-age=20", "max-age=100", 21,  stale(0, false, false)),
            ("cache-control: max-age=20", swr,           130, stale(30, false, false)),
            // A malformed request directive forces validation.
            ("cache-control: max-age=soon", "max-age=100", 10, stale(0, false, false)),
            // min-fresh.
            ("cache-control: min-fresh=30", "max-age=100", 70, fresh(30)),
            ("cache-control: min-fresh=30", "max-age=100", 71, stale(0, false, false)),
            // max-stale, and the response directives that forbid it.
            (max_stale,    "max-age=100",                  10_000, fresh(0)),
            (max_stale_50, "max-age=100",                  150,    fresh(0)),
            (max_stale_50, "max-age=100",                  151,    stale(51, false, false)),
            (max_stale,    "max-age=100, must-revalidate",  150,    stale(50, false, false)),
            (max_stale,    "max-age=100, proxy-revalidate", 150,    stale(50, false, false)),
            (max_stale,    "max-age=100, no-cache",         150,    stale(50, false, false)),
            (max_stale,    "s-maxage=100",                  150,    stale(50, false, false)),
            // An invalid response max-age makes the response stale at once.
            ("", "max-age=abc, stale-while-revalidate=60", 1, stale(1, true, false)),
        ];
        for (req, resp_cc, elapsed, want) in cases {
            let resp = h(&format!("cache-control: {resp_cc} | date: @0"));
            let now = at(elapsed);
            let got = freshness(&h(req), &resp, StatusCode::OK, at(0), at(0), now, &CFG);
            assert_eq!(got, want, "req [{req}] resp [{resp_cc}] after {elapsed}s");
        }
    }

    #[test]
    fn freshness_uses_age_header_and_heuristics() {
        let cases = [
            (
                "cache-control: max-age=100 | age: 90 | date: @0",
                5,
                fresh(5),
            ),
            ("date: @0 | last-modified: @-1000", 40, fresh(60)),
            ("date: @0", 0, stale(0, false, false)),
        ];
        for (spec, elapsed, want) in cases {
            let got = freshness(
                &h(""),
                &h(spec),
                StatusCode::OK,
                at(0),
                at(0),
                at(elapsed),
                &CFG,
            );
            assert_eq!(got, want, "[{spec}]");
        }
    }

    #[test]
    fn vary_parsing() {
        let cases = [
            ("", Vary::None),
            ("vary: ", Vary::None),
            ("vary: *", Vary::Star),
            ("vary: Accept, *", Vary::Star),
            (
                "vary: Accept-Encoding, accept | vary: ACCEPT-ENCODING,Origin",
                Vary::Fields(names(&["accept", "accept-encoding", "origin"])),
            ),
            ("vary: bad name, ,accept", Vary::Fields(names(&["accept"]))),
        ];
        for (spec, want) in cases {
            assert_eq!(vary(&h(spec)), want, "[{spec}]");
        }
    }

    #[test]
    fn vary_keys() {
        let fields = names(&["accept-encoding", "origin"]);
        let key = |spec: &str| vary_key(&fields, &h(spec));
        let req = "accept-encoding: gzip ,br | accept-encoding: zstd | origin: https://a.example";
        assert_eq!(
            key(req),
            "accept-encoding\n=gzip, br, zstd\norigin\n=https://a.example\n"
        );
        // The order of the Vary listing does not matter.
        let reversed = names(&["origin", "accept-encoding", "origin"]);
        assert_eq!(vary_key(&reversed, &h(req)), key(req));
        // A missing header differs from an empty one.
        assert_eq!(key("origin: o"), "accept-encoding\n!\norigin\n=o\n");
        assert_eq!(
            key("accept-encoding: | origin: o"),
            "accept-encoding\n=\norigin\n=o\n"
        );
        // Whitespace around commas is normalised; one line and two lines agree.
        assert_eq!(
            key("accept-encoding: gzip,  br | origin: o"),
            key("accept-encoding: gzip | accept-encoding:  br  | origin: o")
        );
        assert_ne!(key("origin: a"), key("origin: b"));
        // Non-ASCII bytes are escaped, never lost or merged.
        let mut odd = HeaderMap::new();
        odd.insert(header::ORIGIN, HeaderValue::from_bytes(b"a\xff%").unwrap());
        assert_eq!(vary_key(&names(&["origin"]), &odd), "origin\n=a%FF%25\n");
        assert_eq!(vary_key(&[], &h(req)), "");
    }

    #[test]
    fn validators_for_revalidation() {
        let cases = [
            (
                "etag: W/\"v1\" | last-modified: @0 | content-type: text/plain",
                "if-none-match: W/\"v1\" | if-modified-since: @0",
            ),
            ("etag: \"v1\"", "if-none-match: \"v1\""),
            ("last-modified: @-5", "if-modified-since: @-5"),
            ("date: @0", ""),
        ];
        for (stored, want) in cases {
            assert_eq!(validation_headers(&h(stored)), h(want), "[{stored}]");
        }
    }

    #[test]
    fn merge_after_not_modified() {
        let stored = h(
            "content-length: 1234 | content-type: text/html | cache-control: max-age=10 \
             | etag: \"v1\" | x-old: kept | x-multi: a",
        );
        let not_modified = h("content-length: 0 | cache-control: max-age=600 | date: @0 \
             | x-multi: b | x-multi: c | connection: x-hop | x-hop: 1 \
             | transfer-encoding: chunked | content-range: bytes 0-0/1 | keep-alive: timeout=5");
        let want = h(
            "content-length: 1234 | content-type: text/html | cache-control: max-age=600 \
             | etag: \"v1\" | x-old: kept | x-multi: b | x-multi: c | date: @0",
        );
        assert_eq!(merge_not_modified(&stored, &not_modified), want);
    }

    #[test]
    fn not_modified_selection() {
        // (stored headers, 304 headers, matches)
        #[rustfmt::skip]
        let cases = [
            ("etag: \"a\"",   "etag: \"a\"",   true),
            ("etag: \"a\"",   "etag: W/\"a\"", true),
            ("etag: W/\"a\"", "etag: \"a\"",   true),
            ("etag: \"a\"",   "etag: \"b\"",   false),
            ("",              "etag: \"a\"",   false),
            // An ETag decides even when Last-Modified agrees.
            ("etag: \"a\" | last-modified: @0", "etag: \"b\" | last-modified: @0", false),
            ("last-modified: @0",   "last-modified: @0",   true),
            ("last-modified: @0",   "last-modified: @1",   false),
            ("last-modified: junk", "last-modified: junk", true),
            ("",                    "last-modified: @0",   false),
            // Neither validator in the 304: fine unless we hold a strong ETag.
            ("",                  "", true),
            ("etag: W/\"a\"",     "", true),
            ("last-modified: @0", "", true),
            ("etag: \"a\"",       "", false),
        ];
        for (stored, not_modified, want) in cases {
            let got = not_modified_matches(&h(stored), &h(not_modified));
            assert_eq!(got, want, "stored [{stored}] 304 [{not_modified}]");
        }
    }

    #[test]
    fn a_bare_304_to_our_revalidation_selects_what_we_validated() {
        // A 304 with no validator answers the one set of validators the edge sent.
        assert!(not_modified_selects(&h("etag: \"a\""), &h("")));
        assert!(not_modified_selects(
            &h("etag: \"a\""),
            &h("cache-control: max-age=5")
        ));
        assert!(not_modified_selects(&h("etag: \"a\""), &h("etag: \"a\"")));
        // One that names another version selects nothing: the edge fetches again.
        assert!(!not_modified_selects(&h("etag: \"a\""), &h("etag: \"b\"")));
        assert!(!not_modified_selects(
            &h("last-modified: @0"),
            &h("last-modified: @1")
        ));
    }

    #[test]
    fn client_conditionals() {
        let stored = &h("etag: W/\"v1\" | last-modified: @0 | date: @100");
        let untagged = &h("last-modified: @0");
        let dated = &h("date: @0");
        let empty = &h("");
        let (get, head, post, put) = (Method::GET, Method::HEAD, Method::POST, Method::PUT);
        #[rustfmt::skip]
        let cases = [
            (&get,  "",                                             stored, Proceed),
            (&get,  "if-none-match: *",                             stored, NotModified),
            (&get,  "if-none-match: \"v1\"",                        stored, NotModified),
            (&head, "if-none-match: W/\"v1\"",                      stored, NotModified),
            (&get,  "if-none-match: \"x\", \"v1\"",                 stored, NotModified),
            (&get,  "if-none-match: \"x\" | if-none-match: W/\"v1\"", stored, NotModified),
            (&get,  "if-none-match: \"a,b\", \"v2\"",               stored, Proceed),
            (&get,  "if-none-match: \"v2\"",                        stored, Proceed),
            (&post, "if-none-match: *",                             stored, Proceed),
            // If-Modified-Since is ignored when If-None-Match is present.
            (&get,  "if-none-match: \"v2\" | if-modified-since: @0", stored, Proceed),
            (&get,  "if-modified-since: @0",                        stored, NotModified),
            (&get,  "if-modified-since: @1",                        stored, NotModified),
            (&get,  "if-modified-since: @-1",                       stored, Proceed),
            (&get,  "if-modified-since: not a date",                stored, Proceed),
            (&get,  "if-modified-since: @0 | if-modified-since: @0", stored, Proceed),
            (&put,  "if-modified-since: @0",                        stored, Proceed),
            // Without Last-Modified the stored Date stands in.
            (&get,  "if-modified-since: @0",                        dated,  NotModified),
            (&get,  "if-modified-since: @0",                        empty,  Proceed),
            // Without a stored ETag only `*` matches.
            (&get,  "if-none-match: \"v1\"",                        untagged, Proceed),
            (&get,  "if-none-match: *",                             untagged, NotModified),
        ];
        for (method, req, stored, want) in cases {
            let got = evaluate_conditional(method, &h(req), stored);
            assert_eq!(got, want, "{method} [{req}] against {stored:?}");
        }
    }

    #[test]
    fn unsafe_methods_invalidate() {
        let cases = [
            (Method::POST, 200, true),
            (Method::PUT, 204, true),
            (Method::DELETE, 301, true),
            (Method::from_bytes(b"PURGEX").unwrap(), 200, true),
            (Method::PATCH, 404, false),
            (Method::POST, 500, false),
            (Method::POST, 100, false),
            (Method::GET, 200, false),
            (Method::HEAD, 200, false),
            (Method::OPTIONS, 200, false),
            (Method::TRACE, 200, false),
        ];
        for (method, code, want) in cases {
            assert_eq!(invalidates(&method, status(code)), want, "{method} {code}");
        }
    }

    #[test]
    fn invalidation_target_paths() {
        #[rustfmt::skip]
        let cases: [(&str, &[&str]); 11] = [
            ("location: /a/b?x=1",                   &["/a/b?x=1"]),
            ("location: /a#frag",                    &["/a"]),
            ("location: https://CDN.example/c?q",    &["/c?q"]),
            ("content-location: http://cdn.example", &["/"]),
            ("location: https://other.example/c",    &[]),
            ("location: https://cdn.example:8443/c", &[]),
            ("location: //cdn.example/c",            &[]),
            ("location: ftp://cdn.example/c",        &[]),
            ("location: relative/path",              &[]),
            ("location: /a b",                       &[]),
            ("location: /a | content-location: https://cdn.example/b | content-location: /a",
                                                     &["/a", "/b"]),
        ];
        for (spec, want) in cases {
            assert_eq!(
                invalidation_targets(&h(spec), "cdn.example"),
                want,
                "[{spec}]"
            );
        }
    }

    #[test]
    fn cacheable_methods() {
        let cases = [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::POST, false),
            (Method::OPTIONS, false),
        ];
        for (method, want) in cases {
            assert_eq!(cacheable_method(&method), want, "{method}");
        }
    }
}
