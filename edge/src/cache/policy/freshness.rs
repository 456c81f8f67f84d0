//! Freshness and age (RFC 9111 4.2) and the stale rules that go with them (RFC 9111 4.2.4,
//! 5.2; RFC 5861): how long a stored response stays fresh, how old it is now, and what a
//! request may do with it.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap};

use super::cache_control::{CacheControl, delta_seconds};
use super::fields::{http_date, list_members, since};
use super::storable::heuristically_cacheable;
use super::vary::{Vary, vary};

/// Knobs from config.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    /// Share of (Date - Last-Modified) used as heuristic lifetime (RFC 9111 4.2.2; 0.1 typical).
    pub heuristic_fraction: f64,
    /// Upper bound of any heuristic lifetime.
    pub heuristic_max: Duration,
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

    /// The response's Date, if valid.
    pub fn date(&self) -> Option<SystemTime> {
        self.date
    }

    /// The response's Age (0 when missing or invalid).
    pub fn age(&self) -> Duration {
        self.age
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
    stored_freshness_until(req_headers, stored, status, times, (now, None), cfg)
}

/// [`stored_freshness`] of a response that a soft purge expired at `expired_at` (if set):
/// its lifetime ends there at the latest, so it is stale from then on, by as much time as
/// has passed since, and the stale rules (`stale-while-revalidate`, `stale-if-error`) apply.
pub fn stored_freshness_until(
    req_headers: &HeaderMap,
    stored: &StoredFacts,
    status: StatusCode,
    times: (SystemTime, SystemTime),
    (now, expired_at): (SystemTime, Option<SystemTime>),
    cfg: &PolicyConfig,
) -> Freshness {
    let (request_time, response_time) = times;
    let resp = &stored.cc;
    let req = request_directives(req_headers);
    let (mut lifetime, _) = stored.lifetime(status, response_time, cfg);
    if let Some(at) = expired_at {
        lifetime = lifetime.min(stored.current_age(request_time, response_time, at));
    }
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
