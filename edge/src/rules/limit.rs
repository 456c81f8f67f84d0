//! Rate limits per client address or prefix, per site and per path rule: all requests (a
//! filter, before anything else of the site runs) and misses only (the site's upstream
//! wrapped: what a client may cost the origin). GCRA from `governor`, in a store bounded by
//! `max_clients` (moka evicts the clients seen least recently; a client's state is dropped
//! anyway once it would have refilled its whole burst, when it is the same as a new one's).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use super::{RuleError, invalid};
use crate::body::{self, Body};
use crate::cache::{Served, Upstream};
use crate::config::SiteConfig;
use crate::filter::{Filter, Phases, RequestInfo, Verdict};
use crate::headers::{CacheStatus, Outcome};
use crate::origin::OriginError;
use crate::sites::Site;

/// A rate: `100/s`, `6000/min`, `50/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: a rate is COUNT/s, COUNT/min or COUNT/h (e.g. 100/s)");
        let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Self { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl crate::config::unset::Value for Rate {
    const EXPECTING: &'static str = "a rate like \"20/s\"";

    fn write<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What one limit counts clients by.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    /// Each address.
    #[default]
    Ip,
    /// Each /24 (IPv4) or /56 (IPv6): one host's many addresses, or a small network, share it.
    Prefix,
}

/// `rate_limit` of a site or a path rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per client (any outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Requests beyond the rate a client may send at once (default: the rate's count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
    /// Misses per client: requests that cost the origin a fetch (hits and coalesced waits do
    /// not count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub misses: Option<Rate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub miss_burst: Option<NonZeroU32>,
    pub by: LimitBy,
    /// Clients tracked at most (memory: about 100 bytes each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<u64>,
}

impl RateLimitConfig {
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.misses.is_none()
    }
}

const DEFAULT_MAX_CLIENTS: u64 = 100_000;

/// The GCRA state of each client, in a bounded cache.
struct Clients(moka::sync::Cache<u128, Arc<InMemoryState>>);

impl StateStore for Clients {
    type Key = u128;

    fn measure_and_replace<T, F, E>(&self, key: &u128, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let state = self.0.get_with(*key, || Arc::new(InMemoryState::default()));
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// One limit: a rate and burst per client key.
pub struct Limiter {
    limiter: RateLimiter<u128, Clients, DefaultClock>,
    by: LimitBy,
    rate: Rate,
    burst: NonZeroU32,
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
    policy: HeaderValue,
    refused: Counter,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({}, burst {})", self.rate, self.burst)
    }
}

impl Limiter {
    /// The admin API's limit (`[admin] rate_limit`), per client address.
    pub(crate) fn admin(
        config: &crate::config::AdminConfig,
        counters: &LimitCounters,
    ) -> Option<Arc<Self>> {
        let rate = config.rate_limit?;
        let burst = NonZeroU32::new(config.rate_burst);
        Self::new(
            rate,
            burst,
            LimitBy::Ip,
            DEFAULT_MAX_CLIENTS,
            "admin",
            counters.admin.clone(),
        )
        .ok()
        .map(Arc::new)
    }

    fn new(
        rate: Rate,
        burst: Option<NonZeroU32>,
        by: LimitBy,
        max_clients: u64,
        name: &str,
        refused: Counter,
    ) -> Result<Self, String> {
        let burst = burst.unwrap_or(rate.count);
        let period = rate.per / rate.count.get();
        let quota = Quota::with_period(period)
            .ok_or("the rate is too high (under a nanosecond a request)")?
            .allow_burst(burst);
        // After this long a client has its whole burst again: its state says nothing more.
        let refill = period
            .saturating_mul(burst.get())
            .max(Duration::from_secs(1));
        let clients = moka::sync::Cache::builder()
            .max_capacity(max_clients)
            .time_to_idle(refill)
            .build();
        let window = rate.per.as_secs().max(1);
        let policy = HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", rate.count))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            limiter: RateLimiter::new(quota, Clients(clients), DefaultClock::default()),
            by,
            rate,
            burst,
            policy,
            refused,
        })
    }

    /// `None` if `ip` may go on, else how long until it may.
    pub(crate) fn check(&self, ip: IpAddr) -> Option<Duration> {
        match self.limiter.check_key(&client_key(ip, self.by)) {
            Ok(()) => None,
            Err(not_until) => {
                self.refused.inc();
                Some(not_until.wait_time_from(self.limiter.clock().now()))
            }
        }
    }

    /// The edge's answer to a refused request (`Cache-Status` detail `rate-limit`).
    pub(crate) fn served(&self, wait: Duration, what: &str) -> Served {
        Served {
            response: self.refusal(wait, what),
            status: CacheStatus {
                outcome: Some(Outcome::Synthetic),
                detail: Some("rate-limit"),
                ..CacheStatus::default()
            },
        }
    }

    /// `429 Too Many Requests` with `Retry-After` and the `RateLimit` fields.
    pub(crate) fn refusal(&self, wait: Duration, what: &str) -> Response<Body> {
        let (text, headers) = self.refusal_parts(wait, what);
        let mut response = Response::new(body::full(text));
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let h = response.headers_mut();
        h.extend(headers);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The body of a refusal and its `Retry-After`, `RateLimit-Policy` and `RateLimit`
    /// (draft-ietf-httpapi-ratelimit-headers).
    pub(crate) fn refusal_parts(
        &self,
        wait: Duration,
        what: &str,
    ) -> (String, Vec<(Option<HeaderName>, HeaderValue)>) {
        // Whole seconds, rounded up: a client that waits this long gets through.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let text = format!(
            "429 Too Many Requests\nquicdn: {what} from this client beyond {} (burst {}); retry in {secs} s\n",
            self.rate, self.burst
        );
        let mut headers = vec![
            (Some(header::RETRY_AFTER), HeaderValue::from(secs)),
            (
                Some(HeaderName::from_static("ratelimit-policy")),
                self.policy.clone(),
            ),
        ];
        let name = self
            .policy
            .to_str()
            .ok()
            .and_then(|p| p.split(';').next())
            .unwrap_or("\"limit\"")
            .to_owned();
        if let Ok(v) = HeaderValue::from_str(&format!("{name};r=0;t={secs}")) {
            headers.push((Some(HeaderName::from_static("ratelimit")), v));
        }
        (text, headers)
    }
}

/// The key of a client: its address (IPv4-mapped IPv6 as IPv4), or its /24 or /56.
fn client_key(ip: IpAddr, by: LimitBy) -> u128 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, by) {
        // The IPv4-mapped range keeps the two families apart.
        (IpAddr::V4(v4), LimitBy::Ip) => u128::from(v4.to_ipv6_mapped()),
        (IpAddr::V4(v4), LimitBy::Prefix) => u128::from(v4.to_ipv6_mapped()) & !0xff,
        (IpAddr::V6(v6), LimitBy::Ip) => u128::from(v6),
        (IpAddr::V6(v6), LimitBy::Prefix) => u128::from(v6) & !((1u128 << 72) - 1),
    }
}

/// The counters of refused requests, by what was limited.
#[derive(Clone, Debug, Default)]
pub(crate) struct LimitCounters {
    pub(crate) requests: Counter,
    pub(crate) misses: Counter,
    pub(crate) admin: Counter,
}

/// The request and miss limits of a site and its path rules.
pub(crate) struct SiteLimits {
    /// The site's, then each path rule's (none: the site's applies).
    requests: Vec<Option<Arc<Limiter>>>,
    misses: Vec<Option<Arc<Limiter>>>,
}

impl SiteLimits {
    pub(crate) fn new(
        site: &SiteConfig,
        counters: &LimitCounters,
    ) -> Result<Option<Self>, RuleError> {
        let configs = std::iter::once(("rate_limit".to_owned(), &site.rate_limit)).chain(
            site.rules.iter().enumerate().map(|(i, r)| {
                (
                    format!("rule {} (path {:?}), rate_limit", i + 1, r.path),
                    &r.rate_limit,
                )
            }),
        );
        let (mut requests, mut misses) = (Vec::new(), Vec::new());
        for (i, (at, c)) in configs.enumerate() {
            let max = c.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
            if max == 0 {
                return Err(invalid(at, "max_clients must be above 0"));
            }
            let name = if i == 0 {
                "site".to_owned()
            } else {
                format!("rule{i}")
            };
            let make = |rate: Option<Rate>, burst, counter: &Counter, name: String| {
                rate.map(|r| {
                    Limiter::new(r, burst, c.by, max, &name, counter.clone())
                        .map(Arc::new)
                        .map_err(|e| invalid(&at, e))
                })
                .transpose()
            };
            requests.push(make(c.rate, c.burst, &counters.requests, name.clone())?);
            misses.push(make(
                c.misses,
                c.miss_burst,
                &counters.misses,
                format!("{name}-misses"),
            )?);
        }
        if requests.iter().chain(&misses).all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Self { requests, misses }))
    }

    /// The limit of a request under path rule `rule` (its own, else the site's).
    fn pick(list: &[Option<Arc<Limiter>>], rule: Option<usize>) -> Option<&Arc<Limiter>> {
        rule.and_then(|i| list.get(i + 1)?.as_ref())
            .or_else(|| list.first()?.as_ref())
    }

    /// The filter of the request limits (none if there are none).
    pub(crate) fn filter(&self) -> Option<RequestLimit> {
        self.requests
            .iter()
            .any(Option::is_some)
            .then(|| RequestLimit {
                limits: self.requests.clone(),
            })
    }

    /// The site's upstream with the miss limits in front (as it was if there are none).
    pub(crate) fn wrap(&self, inner: Arc<dyn Upstream>) -> Arc<dyn Upstream> {
        match self.misses.iter().any(Option::is_some) {
            true => Arc::new(MissLimit {
                inner,
                limits: self.misses.clone(),
            }),
            false => inner,
        }
    }
}

/// The request limits of a site, as its first filter.
pub(crate) struct RequestLimit {
    limits: Vec<Option<Arc<Limiter>>>,
}

impl Filter for RequestLimit {
    fn name(&self) -> &'static str {
        "rate-limit"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
    }

    fn on_site(&self, req: &RequestInfo<'_>, _: &Site) -> Verdict {
        let Some(limit) = SiteLimits::pick(&self.limits, req.site_rule()) else {
            return Verdict::Continue;
        };
        match limit.check(req.ctx.peer.ip()) {
            None => Verdict::Continue,
            Some(wait) => Verdict::Respond(limit.served(wait, "requests")),
        }
    }
}

/// The client of an upstream request and the path rule it matched, for the miss limits
/// (a request extension `origin_parts` adds).
#[derive(Debug, Clone, Copy)]
pub struct ClientOf {
    pub ip: IpAddr,
    pub rule: Option<usize>,
}

/// A site's upstream behind its miss limits: each fetch counts against the client that
/// caused it (a coalesced wait does not fetch, so it does not count).
struct MissLimit {
    inner: Arc<dyn Upstream>,
    limits: Vec<Option<Arc<Limiter>>>,
}

impl Upstream for MissLimit {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        // Internal requests (pre-warm, probes) carry no client and are not limited.
        if let Some(client) = req.extensions().get::<ClientOf>().copied()
            && let Some(limit) = SiteLimits::pick(&self.limits, client.rule)
            && let Some(wait) = limit.check(client.ip)
        {
            let response = limit.refusal(wait, "misses");
            return Box::pin(async move { Ok(response) });
        }
        self.inner.fetch(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!((r.count.get(), r.per), (100, Duration::from_secs(1)));
        assert_eq!("6000/min".parse::<Rate>().unwrap().to_string(), "6000/min");
        assert_eq!(
            "5/h".parse::<Rate>().unwrap().per,
            Duration::from_secs(3600)
        );
        for bad in ["100", "0/s", "10/d", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_not_affected() {
        let limit = Limiter::new(
            "2/s".parse().unwrap(),
            NonZeroU32::new(3),
            LimitBy::Ip,
            10,
            "site",
            Counter::default(),
        )
        .unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.check(a), None);
        }
        let wait = limit.check(a).expect("over its burst");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(limit.check("192.0.2.2".parse().unwrap()), None);
        let refused = limit.refusal(wait, "requests");
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(refused.headers()["ratelimit-policy"], "\"site\";q=2;w=1");
        assert_eq!(refused.headers()["ratelimit"], "\"site\";r=0;t=1");
    }

    #[test]
    fn prefixes_share_a_limit_and_mapped_addresses_are_ipv4() {
        let same = |a: &str, b: &str, by| {
            client_key(a.parse().unwrap(), by) == client_key(b.parse().unwrap(), by)
        };
        assert!(same("198.51.100.7", "198.51.100.200", LimitBy::Prefix));
        assert!(!same("198.51.100.7", "198.51.100.200", LimitBy::Ip));
        assert!(same("::ffff:198.51.100.7", "198.51.100.7", LimitBy::Ip));
        assert!(same(
            "2001:db8:0:ff::1",
            "2001:db8:0:ff:1::2",
            LimitBy::Prefix
        ));
        assert!(!same(
            "2001:db8:0:ff::1",
            "2001:db8:0:100::1",
            LimitBy::Prefix
        ));
    }
}
