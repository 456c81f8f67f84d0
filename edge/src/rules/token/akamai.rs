//! Akamai EdgeAuth tokens (token auth 2.0), as the `akamai-edgeauth` packages make them:
//! `ip=…~st=…~exp=…~acl=/v/*~id=…~data=…~hmac=HEX` in a query parameter, a cookie or a header
//! (each named `__token__` by default). The HMAC-SHA256, keyed with the hex secret, covers
//! the fields before `hmac`, plus `url=PATH` for a URL token (one without `acl`).

use std::net::IpAddr;

use super::{Claims, Grant, Refusal, number};
use crate::rules::PathPattern;

pub(super) struct AkamaiKeys {
    pub(super) keys: Vec<ring::hmac::Key>,
    pub(super) field_delimiter: char,
    pub(super) acl_delimiter: char,
}

impl AkamaiKeys {
    /// Checks one token; `raw_path` is the request's path as sent (what a URL token signs).
    pub(super) fn check(
        &self,
        token: &str,
        raw_path: &str,
        ip: IpAddr,
        now: u64,
        from_query: bool,
    ) -> Result<Grant, Refusal> {
        let d = self.field_delimiter;
        let (source, hmac) = match token.strip_prefix("hmac=") {
            Some(_) => return Err(Refusal::Malformed("the token has no fields before hmac")),
            None => token
                .rsplit_once(&format!("{d}hmac="))
                .ok_or(Refusal::Malformed("the token has no hmac"))?,
        };
        let hmac = hex(hmac).ok_or(Refusal::Malformed("hmac is not hex"))?;
        let mut claims = Claims::default();
        let mut acl = None;
        let mut ip_field = None;
        for field in source.split(d) {
            let (name, value) = field.split_once('=').unwrap_or((field, ""));
            match name {
                "exp" => claims.expires = Some(number(value, "exp")?),
                "st" => claims.starts = Some(number(value, "st")?),
                "acl" => acl = Some(value),
                "ip" => ip_field = Some(value),
                // `id` and `data` are signed but mean nothing to the edge.
                _ => {}
            }
        }
        let message = match acl {
            Some(_) => source.to_owned(),
            None => format!("{source}{d}url={raw_path}"),
        };
        // Several keys during a rotation; ring's verify compares in constant time.
        if !self
            .keys
            .iter()
            .any(|k| ring::hmac::verify(k, message.as_bytes(), &hmac).is_ok())
        {
            return Err(Refusal::BadSignature);
        }
        if claims.expires.is_none() {
            return Err(Refusal::Malformed("no exp"));
        }
        if let Some(ip_field) = ip_field {
            // Akamai binds a token to one address.
            let addr: IpAddr = ip_field
                .parse()
                .map_err(|_| Refusal::Malformed("ip is not an address"))?;
            claims.ip = Some(addr.into());
        }
        claims.check(ip, now)?;
        let acl: Vec<PathPattern> = acl
            .map(|a| a.split(self.acl_delimiter).map(PathPattern::glob).collect())
            .unwrap_or_default();
        let cookie = match (
            from_query,
            acl.first(),
            acl_prefix(source, d, self.acl_delimiter),
        ) {
            (true, Some(_), Some(path)) => Some(super::CookieGrant {
                value: token.to_owned(),
                path,
                expires: claims.expires.unwrap_or(now),
            }),
            _ => None,
        };
        Ok(Grant {
            prefix: None,
            acl,
            cookie,
        })
    }
}

/// The cookie path of an ACL token: its first ACL's text before the first wildcard.
fn acl_prefix(source: &str, d: char, acl_delimiter: char) -> Option<String> {
    let text = source
        .split(d)
        .find_map(|f| f.strip_prefix("acl="))?
        .split(acl_delimiter)
        .next()?;
    let literal = text.split('*').next()?;
    Some(super::cookie_path(literal))
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The key bytes of a hex secret (what Akamai's property manager shows).
pub(super) fn key_bytes(secret: &str) -> Option<Vec<u8>> {
    hex(secret.trim())
}
