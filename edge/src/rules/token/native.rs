//! quicdn's own signed URLs: HMAC-SHA256 over the URL (or over a path prefix), with an
//! expiry, an optional start, an optional client address or CIDR, and a key id for rotation.
//!
//! ```text
//! exact:  /v/a.mp4?x=1&exp=1767225600&kid=k1&sig=SIG
//!         SIG = base64url(HMAC-SHA256(key k1, "/v/a.mp4?x=1&exp=1767225600&kid=k1"))
//! prefix: /v/a.mp4?prefix=L3Yv&exp=1767225600&kid=k1&sig=SIG
//!         SIG = base64url(HMAC-SHA256(key k1, "prefix=L3Yv&exp=1767225600&kid=k1"))
//!         (prefix is base64url of "/v/"; any path under it; parameters before it unsigned)
//! ```
//!
//! `sig` is always the last parameter; `st` (start) and `ip` (address or CIDR) may join the
//! signed ones. A prefix token is also accepted as a cookie (`quicdn_token=prefix=…&sig=…`),
//! which the edge can set on the response that a query token unlocked (HLS, DASH).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Claims, Grant, Refusal, number, percent_decode, split_params};

pub(super) const PARAMS: [&str; 6] = ["prefix", "exp", "st", "ip", "kid", "sig"];

/// The HMAC keys by id.
pub(super) struct NativeKeys {
    pub(super) keys: HashMap<String, ring::hmac::Key>,
}

impl NativeKeys {
    /// Checks a query's token (`query` without the `?`); `None` when it carries none.
    pub(super) fn check_query(
        &self,
        raw_target: &str,
        ip: IpAddr,
        now: u64,
    ) -> Option<Result<Grant, Refusal>> {
        let (path, query) = raw_target.split_once('?')?;
        let (signed_end, _) = sig_param(query)?;
        let prefix_at = split_params(query)
            .find(|(n, _, _)| *n == "prefix")
            .map(|(_, _, at)| at);
        let message = match prefix_at {
            // The prefix form signs its own parameters only: the path may be any under it.
            Some(at) => &query[at..signed_end],
            None => &raw_target[..path.len() + 1 + signed_end],
        };
        Some(self.check(message, &query[prefix_at.unwrap_or(0)..], ip, now))
    }

    /// Checks a cookie's token: a prefix token as the query form has it (`prefix=…&sig=…`).
    pub(super) fn check_cookie(&self, value: &str, ip: IpAddr, now: u64) -> Result<Grant, Refusal> {
        let Some((signed_end, _)) = sig_param(value) else {
            return Err(Refusal::Malformed("the cookie's token has no sig"));
        };
        if !value.starts_with("prefix=") {
            return Err(Refusal::Malformed("a cookie token must start with prefix="));
        }
        let mut grant = self.check(&value[..signed_end], value, ip, now)?;
        // It came as a cookie: nothing to set.
        grant.cookie = None;
        Ok(grant)
    }

    /// `message` is what was signed; `token` the parameters from the first signed one to `sig`.
    fn check(&self, message: &str, token: &str, ip: IpAddr, now: u64) -> Result<Grant, Refusal> {
        let mut claims = Claims::default();
        let mut kid = None;
        let mut sig = None;
        for (name, value, _) in split_params(token) {
            let value = percent_decode(value);
            match name {
                "exp" => claims.expires = Some(number(&value, "exp")?),
                "st" => claims.starts = Some(number(&value, "st")?),
                "ip" => claims.ip = Some(super::parse_net(&value)?),
                "prefix" => {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(value.as_bytes())
                        .map_err(|_| Refusal::Malformed("prefix is not base64url"))?;
                    let prefix = String::from_utf8(bytes)
                        .map_err(|_| Refusal::Malformed("prefix is not UTF-8"))?;
                    if !prefix.starts_with('/') {
                        return Err(Refusal::Malformed("prefix must be a path"));
                    }
                    claims.prefix = Some(prefix);
                }
                "kid" => kid = Some(value.into_owned()),
                "sig" => sig = Some(value.into_owned()),
                _ => {}
            }
        }
        let key = kid.ok_or(Refusal::Malformed("no kid"))?;
        let key = self.keys.get(&key).ok_or(Refusal::UnknownKey)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig.unwrap_or_default().as_bytes())
            .map_err(|_| Refusal::Malformed("sig is not base64url"))?;
        // Constant-time comparison (ring's verify), before anything else is looked at.
        ring::hmac::verify(key, message.as_bytes(), &sig).map_err(|_| Refusal::BadSignature)?;
        if claims.expires.is_none() {
            return Err(Refusal::Malformed("no exp"));
        }
        claims.check(ip, now)?;
        let cookie = claims.prefix.as_ref().map(|prefix| super::CookieGrant {
            value: token.to_owned(),
            path: super::cookie_path(prefix),
            expires: claims.expires.unwrap_or(now),
        });
        Ok(Grant {
            prefix: claims.prefix,
            acl: Vec::new(),
            cookie,
        })
    }
}

/// Where `sig` starts (the `&` before it, or 0) and its value, when it is the last parameter.
fn sig_param(query: &str) -> Option<(usize, &str)> {
    let (name, value, at) = split_params(query).last()?;
    (name == "sig").then_some((at.saturating_sub(1), value))
}

/// What `edge sign` signs with.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    pub key_id: String,
    pub expires: u64,
    pub starts: Option<u64>,
    /// An address or CIDR the URL is limited to.
    pub ip: Option<String>,
    /// Sign a path prefix instead of the one URL.
    pub prefix: Option<String>,
}

/// Signs `path_and_query` (e.g. `/v/a.mp4?x=1`) with `secret`: the same URL with the token
/// parameters appended.
pub fn sign(secret: &[u8], path_and_query: &str, options: &SignOptions) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut token = String::new();
    if let Some(prefix) = &options.prefix {
        token += &format!("prefix={}&", URL_SAFE_NO_PAD.encode(prefix.as_bytes()));
    }
    token += &format!("exp={}", options.expires);
    if let Some(st) = options.starts {
        token += &format!("&st={st}");
    }
    if let Some(ip) = &options.ip {
        token += &format!("&ip={}", ip.replace('/', "%2F"));
    }
    token += &format!("&kid={}", options.key_id);
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{path_and_query}{sep}{token}");
    let message = match options.prefix {
        Some(_) => token.as_str(),
        None => url.as_str(),
    };
    let sig = ring::hmac::sign(&key, message.as_bytes());
    format!("{url}&sig={}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}
