//! Signed URLs and tokens per site and path rule: quicdn's own format ([`native`]),
//! CloudFront signed URLs and cookies ([`cloudfront`]) and Akamai EdgeAuth tokens
//! ([`akamai`]), so that sites can move here without rewriting their signers.
//!
//! A site with `[site.token]` checks every request (or those of the path rules that say
//! `token = true`; `token = false` opens a path). The token's parameters never enter the cache
//! key: two valid signatures for one object are one object and one origin fetch. They stay on
//! the request that goes upstream, so that a parent tier with the same site checks them too
//! (or trusts its children by address: `trust_from`). Refusals are `403` with the reason in
//! the body, or `410 Gone` for an expired token (`expired_status`), and are counted in
//! `quicdn_token_checks_total{format,result}`.

mod akamai;
mod cloudfront;
mod native;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

pub use cloudfront::canned_policy;
pub use native::{SignOptions, sign};

use super::{PathPattern, RuleError, invalid};
use crate::body::Body;
use crate::config::{Secret, SiteConfig};
use crate::filter::{Filter, KeyParts, Phases, RequestInfo, Verdict};
use crate::headers::{CacheStatus, Outcome};
use crate::metrics::TokenChecks;
use crate::sites::Site;

/// `[site.token]`: which signatures a site accepts, and whether it needs one.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Every request needs a valid token, unless its path rule says `token = false`.
    /// Off, only the path rules with `token = true` need one.
    pub required: bool,
    /// quicdn's own HMAC-SHA256 keys (`[[site.token.key]]`), by id: several during a rotation.
    #[serde(rename = "key", skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<NativeKey>,
    /// CloudFront public keys (`[[site.token.cloudfront]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cloudfront: Vec<CloudFrontKey>,
    /// Akamai EdgeAuth (`[site.token.akamai]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub akamai: Option<AkamaiConfig>,
    /// Answer a request that a prefix token in its query unlocked with that token as a cookie
    /// (`Path` the prefix, expiring with it), so that an HLS or DASH player's segment requests
    /// carry it. For quicdn's prefix tokens and Akamai ACL tokens.
    pub set_cookie: bool,
    /// The cookie of quicdn's own prefix tokens.
    pub cookie: String,
    /// The status of an expired (or not yet valid) token: 410 (Gone: the player should get a
    /// new URL) or 403.
    pub expired_status: u16,
    /// Requests from these addresses are not checked: the edges of this fleet (children,
    /// cluster peers) that checked them already. Their clients' addresses are not this hop's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust_from: Vec<IpNet>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            required: false,
            keys: Vec::new(),
            cloudfront: Vec::new(),
            akamai: None,
            set_cookie: false,
            cookie: "quicdn_token".into(),
            expired_status: 410,
            trust_from: Vec::new(),
        }
    }
}

impl TokenConfig {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.cloudfront.is_empty() && self.akamai.is_none()
    }
}

/// One of quicdn's own keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NativeKey {
    /// What URLs name it by (`kid=`).
    pub id: String,
    /// `hex:…` or `base64:…`, at least 16 bytes (32 random bytes: `openssl rand -hex 32`).
    /// Printed redacted (`--print-config`, `/config`).
    pub secret: Secret,
}

impl NativeKey {
    /// The secret's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let secret = self.secret.expose();
        let bytes = if let Some(h) = secret.strip_prefix("hex:") {
            akamai::key_bytes(h).ok_or("not hex")?
        } else if let Some(b) = secret.strip_prefix("base64:") {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|_| "not base64")?
        } else if secret == Secret::REDACTED {
            return Err("is the redacted placeholder of a printed config, not the secret".into());
        } else {
            return Err("must start with hex: or base64:".into());
        };
        match bytes.len() {
            0..16 => Err(format!("{} bytes: at least 16 are needed", bytes.len())),
            _ => Ok(bytes),
        }
    }
}

/// A CloudFront public key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CloudFrontKey {
    /// The `Key-Pair-Id` URLs carry (a public key id, or a legacy key pair id).
    pub key_pair_id: String,
    /// The public key: a PEM file's path, or the PEM itself.
    pub public_key: String,
}

/// Akamai EdgeAuth settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AkamaiConfig {
    /// The hex secrets (several during a rotation), printed redacted.
    pub keys: Vec<Secret>,
    /// The query parameter, cookie and header the token comes in.
    pub name: String,
    pub field_delimiter: char,
    pub acl_delimiter: char,
}

impl Default for AkamaiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            name: "__token__".into(),
            field_delimiter: '~',
            acl_delimiter: '!',
        }
    }
}

/// Why a token was refused (the `result` label and the body's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    Malformed(&'static str),
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIp,
    WrongPath,
}

impl Refusal {
    fn label(self) -> usize {
        match self {
            Self::Missing => 2,
            Self::Malformed(_) => 3,
            Self::UnknownKey => 4,
            Self::BadSignature => 5,
            Self::Expired => 6,
            Self::NotYetValid => 7,
            Self::WrongIp => 8,
            Self::WrongPath => 9,
        }
    }

    fn reason(self) -> Cow<'static, str> {
        match self {
            Self::Missing => "this URL needs a signed token, and the request has none".into(),
            Self::Malformed(what) => format!("the token is malformed: {what}").into(),
            Self::UnknownKey => "the token names a key this site does not have".into(),
            Self::BadSignature => "the token's signature does not match".into(),
            Self::Expired => "the token has expired".into(),
            Self::NotYetValid => "the token is not valid yet".into(),
            Self::WrongIp => "the token is for another client address".into(),
            Self::WrongPath => "the token does not cover this path".into(),
        }
    }
}

/// The `result` label's values, by [`Refusal::label`] (0 and 1 for the others).
pub(crate) const RESULTS: [&str; 10] = [
    "ok",
    "trusted",
    "missing",
    "malformed",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_ip",
    "wrong_path",
];
/// The `format` label's values.
pub(crate) const FORMATS: [&str; 4] = ["none", "native", "cloudfront", "akamai"];

/// What a token limits a request to, once its signature checked out.
#[derive(Debug, Default)]
struct Claims {
    expires: Option<u64>,
    starts: Option<u64>,
    ip: Option<IpNet>,
    prefix: Option<String>,
}

impl Claims {
    fn check(&self, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        if self.expires.is_some_and(|e| now >= e) {
            return Err(Refusal::Expired);
        }
        if self.starts.is_some_and(|s| now < s) {
            return Err(Refusal::NotYetValid);
        }
        if self.ip.is_some_and(|net| !net.contains(&ip)) {
            return Err(Refusal::WrongIp);
        }
        Ok(())
    }
}

/// A valid token's paths (none: the URL it signed, checked by the signature).
#[derive(Debug, Default)]
struct Grant {
    prefix: Option<String>,
    acl: Vec<PathPattern>,
    cookie: Option<CookieGrant>,
}

impl Grant {
    fn covers(&self, path: &str) -> bool {
        let prefix_ok = self.prefix.as_ref().is_none_or(|p| path.starts_with(p));
        let acl_ok = self.acl.is_empty() || self.acl.iter().any(|p| p.matches(path));
        prefix_ok && acl_ok
    }
}

/// A cookie that carries a query's prefix token to the requests under its prefix.
#[derive(Debug)]
struct CookieGrant {
    value: String,
    path: String,
    expires: u64,
}

/// The path a prefix token's cookie is sent for: the prefix up to its last `/`.
fn cookie_path(prefix: &str) -> String {
    match prefix.rfind('/') {
        Some(at) => prefix[..=at].to_owned(),
        None => "/".into(),
    }
}

/// `name`, raw `value`, and the byte offset of `name` in `query`, for each `&`-separated
/// parameter.
fn split_params(query: &str) -> impl Iterator<Item = (&str, &str, usize)> {
    let mut at = 0;
    query.split('&').map(move |pair| {
        let start = at;
        at += pair.len() + 1;
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (name, value, start)
    })
}

/// `%XX` decoded (an invalid escape is kept as it is).
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn number(value: &str, what: &'static str) -> Result<u64, Refusal> {
    value.parse().map_err(|_| Refusal::Malformed(what))
}

/// An address (a /32 or /128) or a CIDR.
fn parse_net(text: &str) -> Result<IpNet, Refusal> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| Refusal::Malformed("ip is neither an address nor a CIDR"))
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A site's token check, as a filter: `on_site` refuses, `cache_key` leaves the token out,
/// `on_response` sets the cookie.
pub struct TokenFilter {
    native: Option<native::NativeKeys>,
    cloudfront: Option<cloudfront::CloudFrontKeys>,
    akamai: Option<(akamai::AkamaiKeys, String)>,
    required: bool,
    /// Each path rule's `token` (none: the site's `required`).
    rules: Vec<Option<bool>>,
    expired: StatusCode,
    set_cookie: bool,
    cookie: String,
    trust_from: Vec<IpNet>,
    params: TokenParams,
    checks: Option<TokenChecks>,
    counters: [[OnceLock<Counter>; RESULTS.len()]; FORMATS.len()],
}

impl TokenFilter {
    /// The filter of a site with tokens (`None` when it has none).
    pub(crate) fn new(
        site: &SiteConfig,
        checks: Option<TokenChecks>,
    ) -> Result<Option<Self>, RuleError> {
        let config = &site.token;
        let rules: Vec<Option<bool>> = site.rules.iter().map(|r| r.token).collect();
        let needed = config.required || rules.contains(&Some(true));
        if config.is_empty() {
            if needed {
                return Err(invalid(
                    "token",
                    "tokens are required but no key is configured (token.key, token.cloudfront or token.akamai)",
                ));
            }
            return Ok(None);
        }
        let expired = match config.expired_status {
            403 => StatusCode::FORBIDDEN,
            410 => StatusCode::GONE,
            other => {
                return Err(invalid(
                    "token.expired_status",
                    format!("{other}: 403 or 410"),
                ));
            }
        };
        let mut native = HashMap::new();
        for key in &config.keys {
            let at = format!("token.key {:?}", key.id);
            let bytes = key
                .bytes()
                .map_err(|e| invalid(&at, format!("secret: {e}")))?;
            if key.id.is_empty() || key.id.contains(['&', '=', '%', ' ']) {
                return Err(invalid(at, "id: not empty, without & = % or spaces"));
            }
            if native
                .insert(
                    key.id.clone(),
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
                )
                .is_some()
            {
                return Err(invalid(at, "a second key with this id"));
            }
        }
        let mut cloudfront = HashMap::new();
        for key in &config.cloudfront {
            let at = format!("token.cloudfront {:?}", key.key_pair_id);
            let pem = match key.public_key.contains("-----BEGIN") {
                true => key.public_key.clone(),
                false => std::fs::read_to_string(&key.public_key)
                    .map_err(|e| invalid(&at, format!("public_key {:?}: {e}", key.public_key)))?,
            };
            cloudfront.insert(
                key.key_pair_id.clone(),
                cloudfront::rsa_public_key(&pem, &at)?,
            );
        }
        let akamai = match &config.akamai {
            None => None,
            Some(a) => {
                let keys = a
                    .keys
                    .iter()
                    .map(|k| {
                        akamai::key_bytes(k.expose())
                            .filter(|b| !b.is_empty())
                            .map(|b| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &b))
                            .ok_or_else(|| invalid("token.akamai.keys", "each a hex secret"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if keys.is_empty() || a.name.is_empty() {
                    return Err(invalid("token.akamai", "needs keys and a name"));
                }
                Some((
                    akamai::AkamaiKeys {
                        keys,
                        field_delimiter: a.field_delimiter,
                        acl_delimiter: a.acl_delimiter,
                    },
                    a.name.clone(),
                ))
            }
        };
        Ok(Some(Self {
            native: (!native.is_empty()).then_some(native::NativeKeys { keys: native }),
            cloudfront: (!cloudfront.is_empty())
                .then_some(cloudfront::CloudFrontKeys { keys: cloudfront }),
            akamai,
            required: config.required,
            rules,
            expired,
            set_cookie: config.set_cookie,
            cookie: config.cookie.clone(),
            trust_from: config.trust_from.clone(),
            params: TokenParams::of(config).unwrap_or_default(),
            checks,
            counters: Default::default(),
        }))
    }

    fn required(&self, req: &RequestInfo<'_>) -> bool {
        req.site_rule()
            .and_then(|i| self.rules.get(i).copied().flatten())
            .unwrap_or(self.required)
    }

    fn count(&self, format: usize, result: usize) {
        if let Some(checks) = &self.checks {
            self.counters[format][result]
                .get_or_init(|| checks.counter(FORMATS[format], RESULTS[result]))
                .inc();
        }
    }

    /// The request's token, checked: its format (an index of [`FORMATS`]) and what it
    /// grants; `None` when it carries none this site takes.
    fn check(&self, req: &RequestInfo<'_>, ip: IpAddr) -> Option<(usize, Result<Grant, Refusal>)> {
        let raw = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let (raw_path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        let now = now();
        let headers = &req.parts.headers;
        let cookie = |name: &str| super::key::cookie_value(headers, name).map(str::to_owned);
        if let Some(native) = &self.native
            && let Some(checked) = native.check_query(raw, ip, now)
        {
            return Some((1, checked));
        }
        if let Some(cf) = &self.cloudfront {
            let url = cloudfront_url(req, raw_path, query);
            if let Some(checked) = cf.check(query, &cookie, &url, ip, now) {
                return Some((2, checked));
            }
        }
        if let Some((akamai, name)) = &self.akamai {
            let in_query = query
                .into_iter()
                .flat_map(split_params)
                .find_map(|(n, v, _)| (n == name.as_str()).then(|| percent_decode(v).into_owned()));
            let from_query = in_query.is_some();
            let token = in_query.or_else(|| cookie(name)).or_else(|| {
                headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            });
            if let Some(token) = token {
                return Some((3, akamai.check(&token, raw_path, ip, now, from_query)));
            }
        }
        if let Some(native) = &self.native
            && let Some(value) = cookie(&self.cookie)
        {
            return Some((1, native.check_cookie(&value, ip, now)));
        }
        None
    }

    fn refuse(&self, format: usize, refusal: Refusal) -> Verdict {
        self.count(format, refusal.label());
        let status = match refusal {
            Refusal::Expired | Refusal::NotYetValid => self.expired,
            _ => StatusCode::FORBIDDEN,
        };
        let mut served =
            crate::cache::error_response(status, &format!("refused: {}", refusal.reason()));
        served.status = CacheStatus {
            outcome: Some(Outcome::Synthetic),
            detail: Some("token"),
            ..CacheStatus::default()
        };
        Verdict::Respond(served)
    }
}

/// The query parameters of the tokens a site takes: left out of the cache key, and of the
/// request to the site's own origin (parents and cluster peers get them, to check them too).
#[derive(Debug, Clone, Default)]
pub struct TokenParams {
    native: bool,
    cloudfront: bool,
    akamai: Option<String>,
}

impl TokenParams {
    /// Those of a site's `[site.token]` (`None` when it takes no token).
    pub fn of(config: &TokenConfig) -> Option<Self> {
        (!config.is_empty()).then(|| Self {
            native: !config.keys.is_empty(),
            cloudfront: !config.cloudfront.is_empty(),
            akamai: config.akamai.as_ref().map(|a| a.name.clone()),
        })
    }

    /// `path_and_query` without the token's parameters (native ones only beside a `sig`,
    /// CloudFront's beside a `Signature`: an application's own `exp` stays).
    pub fn strip<'a>(&self, path_and_query: &'a str) -> Cow<'a, str> {
        let Some((path, query)) = path_and_query.split_once('?') else {
            return Cow::Borrowed(path_and_query);
        };
        let names = || split_params(query).map(|(n, _, _)| n);
        let native = self.native && names().any(|n| n == "sig");
        let cloudfront = self.cloudfront && names().any(|n| n == "Signature");
        let is_token = |name: &str| {
            (native && native::PARAMS.contains(&name))
                || (cloudfront && cloudfront::PARAMS.contains(&name))
                || self.akamai.as_deref() == Some(name)
        };
        if !names().any(is_token) {
            return Cow::Borrowed(path_and_query);
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !is_token(pair.split_once('=').map_or(*pair, |(n, _)| n)))
            .collect();
        match kept.is_empty() {
            true => Cow::Owned(path.to_owned()),
            false => Cow::Owned(format!("{path}?{}", kept.join("&"))),
        }
    }
}

/// The URL a CloudFront policy signs: scheme, the host as the client sent it, the path as
/// sent, and the query without CloudFront's own parameters.
fn cloudfront_url(req: &RequestInfo<'_>, raw_path: &str, query: Option<&str>) -> String {
    let scheme = if req.ctx.secure { "https" } else { "http" };
    let authority = req
        .parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    let rest: Vec<&str> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !cloudfront::PARAMS.contains(&name)
        })
        .collect();
    match rest.is_empty() {
        true => format!("{scheme}://{authority}{raw_path}"),
        false => format!("{scheme}://{authority}{raw_path}?{}", rest.join("&")),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Filter for TokenFilter {
    fn name(&self) -> &'static str {
        "token"
    }

    fn phases(&self) -> Phases {
        Phases::ON_SITE
            .and(Phases::CACHE_KEY)
            .and(Phases::ON_RESPONSE)
    }

    fn on_site(&self, req: &RequestInfo<'_>, _: &Site) -> Verdict {
        if !self.required(req) {
            return Verdict::Continue;
        }
        let ip = canonical(req.ctx.peer.ip());
        if self.trust_from.iter().any(|n| n.contains(&ip)) {
            self.count(0, 1);
            return Verdict::Continue;
        }
        let path = match req.target {
            Ok((_, target)) => target.split_once('?').map_or(target, |(p, _)| p),
            Err(_) => return self.refuse(0, Refusal::Malformed("no path")),
        };
        match self.check(req, ip) {
            None => self.refuse(0, Refusal::Missing),
            Some((format, Err(refusal))) => self.refuse(format, refusal),
            Some((format, Ok(grant))) if grant.covers(path) => {
                self.count(format, 0);
                Verdict::Continue
            }
            Some((format, Ok(_))) => self.refuse(format, Refusal::WrongPath),
        }
    }

    fn cache_key(&self, _: &RequestInfo<'_>, _: &Site, key: &mut KeyParts<'_>) {
        if let Cow::Owned(stripped) = self.params.strip(&key.path_and_query) {
            key.path_and_query = Cow::Owned(stripped);
        }
    }

    fn on_response(&self, req: &RequestInfo<'_>, _: Option<&Site>, response: &mut Response<Body>) {
        if !self.set_cookie || !response.status().is_success() || !self.required(req) {
            return;
        }
        let ip = canonical(req.ctx.peer.ip());
        let Some((
            format,
            Ok(Grant {
                cookie: Some(grant),
                ..
            }),
        )) = self.check(req, ip)
        else {
            return;
        };
        let name = match format {
            3 => self.akamai.as_ref().map_or("", |(_, n)| n.as_str()),
            _ => self.cookie.as_str(),
        };
        let max_age = grant.expires.saturating_sub(now());
        let secure = match req.ctx.secure {
            // A player on another site sends it only with SameSite=None, which needs Secure.
            true => "; Secure; SameSite=None",
            false => "",
        };
        let cookie = format!(
            "{name}={}; Path={}; Max-Age={max_age}; HttpOnly{secure}",
            grant.value, grant.path
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests;
