//! `[admin]` (the API's bearer tokens), `[purge]` (the HTTP `PURGE` method) and `[prewarm]`
//! (the pre-warm engine).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::unset;

/// The admin API's access. With no tokens, `POST /purge` and `POST /prewarm` are accepted
/// only from a loopback client (the admin listener is on loopback by default) and
/// `POST /reload` from anyone who reaches the listener, as before tokens existed. With
/// tokens, each of these needs a token with its verb (and, for purge and pre-warm, its
/// sites). `/metrics`, `/health` and `/config` need none.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub tokens: Vec<TokenConfig>,
    /// Write calls per client address: `POST /purge`, `/prewarm`, `/reload` and the `PURGE`
    /// method, each answered `429` beyond it (`"none"`: no limit). A bad token costs a call
    /// too, so guessing is held to this rate.
    #[serde(with = "unset::none")]
    pub rate_limit: Option<crate::rules::limit::Rate>,
    /// Calls beyond the rate one client may make at once.
    pub rate_burst: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            rate_limit: "20/s".parse().ok(),
            rate_burst: 100,
        }
    }
}

/// One bearer token (`Authorization: Bearer <token>`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs and errors; the secret never is.
    pub name: String,
    /// The secret itself, or instead `token_file`. Printed redacted (`--print-config`,
    /// `/config`).
    #[serde(default, with = "unset::none")]
    pub token: Option<Secret>,
    /// A file holding the secret (surrounding whitespace ignored), read at start and reload.
    #[serde(default, with = "unset::none")]
    pub token_file: Option<PathBuf>,
    /// Site names (hosts) the token may purge and pre-warm: exact hosts, `*.example.com`
    /// (one or more labels), or `*` for every site (needed for `all` and `tag` purges).
    pub sites: Vec<String>,
    pub verbs: Vec<Verb>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Purge,
    Prewarm,
    Reload,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purge => "purge",
            Self::Prewarm => "prewarm",
            Self::Reload => "reload",
        }
    }
}

/// A secret from the config: compared by value, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// What `--print-config` and `/config` show instead of a secret. Refused as a token, so a
    /// printed config pasted back cannot start with a known secret.
    pub const REDACTED: &'static str = "(redacted)";

    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

/// As a plain field (a site's signing keys): printed redacted, like the optional ones.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl unset::Value for Secret {
    const EXPECTING: &'static str = "a token";

    fn write<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::REDACTED)
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(Self(text.to_owned()))
    }
}

/// The HTTP `PURGE` method on the public listeners (one URL per request, the Varnish and
/// nginx convention).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PurgeConfig {
    /// Client networks allowed to send `PURGE` (e.g. `["127.0.0.1/32", "::1/128"]`); others
    /// get 403. Empty (the default): `PURGE` is answered 405 and never reaches an origin.
    pub allow_from: Vec<IpNet>,
}

/// The pre-warm engine: how each POP fetches the URLs of a `POST /prewarm`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrewarmConfig {
    /// URLs fetched at once per pre-warm, so the origin is not flooded.
    pub concurrency: usize,
    /// Longest one URL's fetch (head and whole body) may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for PrewarmConfig {
    fn default() -> Self {
        Self {
            // A browser's connection count to one origin, times a little: enough to warm
            // hundreds of URLs in seconds, few enough for any origin.
            concurrency: 8,
            // As origin.first_byte_timeout: a large object may need the rest for its body.
            timeout: Duration::from_secs(30),
        }
    }
}

/// Shortest token accepted: a guessable token is no better than none.
const MIN_TOKEN_LEN: usize = 16;

/// Checks `[admin]` and `[prewarm]`; the error names the key.
pub(super) fn check(admin: &AdminConfig, prewarm: &PrewarmConfig) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, t) in admin.tokens.iter().enumerate() {
        let at = format!("admin.tokens[{i}]");
        if t.name.trim().is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("{at}.name: {:?} is used twice", t.name));
        }
        match (&t.token, &t.token_file) {
            (None, None) => return Err(format!("{at}: set `token` or `token_file`")),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: `token` and `token_file` both set: choose one"
                ));
            }
            (Some(secret), None) => {
                check_secret(secret.expose()).map_err(|e| format!("{at}.token: {e}"))?
            }
            (None, Some(_)) => {}
        }
        if t.sites.is_empty() {
            return Err(format!(
                "{at}.sites: empty (list site hosts, or \"*\" for all)"
            ));
        }
        if let Some(bad) = t.sites.iter().find(|s| !valid_site_pattern(s)) {
            return Err(format!(
                "{at}.sites: {bad:?} is not a host, \"*.domain\" or \"*\""
            ));
        }
        if t.verbs.is_empty() {
            return Err(format!("{at}.verbs: empty (of purge, prewarm, reload)"));
        }
    }
    if prewarm.concurrency == 0 {
        return Err("prewarm.concurrency must be at least 1".into());
    }
    if prewarm.timeout.is_zero() {
        return Err("prewarm.timeout must be more than 0".into());
    }
    Ok(())
}

/// Whether `secret` may be a token: long enough, not the redaction placeholder, and sendable
/// in an `Authorization` header.
pub(crate) fn check_secret(secret: &str) -> Result<(), String> {
    if secret == Secret::REDACTED {
        return Err("is the redaction placeholder of a printed config: give the real token".into());
    }
    if secret.len() < MIN_TOKEN_LEN {
        return Err(format!("shorter than {MIN_TOKEN_LEN} characters"));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII characters (no spaces) can travel in a header".into());
    }
    Ok(())
}

fn valid_site_pattern(s: &str) -> bool {
    let host = s.strip_prefix("*.").unwrap_or(s);
    s == "*"
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(f: impl FnOnce(&mut TokenConfig)) -> AdminConfig {
        let mut t = TokenConfig {
            name: "bot".into(),
            token: Some(Secret::new("0123456789abcdef")),
            token_file: None,
            sites: vec!["cdn.example".into()],
            verbs: vec![Verb::Purge],
        };
        f(&mut t);
        AdminConfig {
            tokens: vec![t],
            ..AdminConfig::default()
        }
    }

    #[test]
    fn each_bad_token_is_named_by_its_key() {
        let p = PrewarmConfig::default();
        assert_eq!(check(&token(|_| {}), &p), Ok(()));
        for (admin, want) in [
            (token(|t| t.token = None), "admin.tokens[0]: set `token`"),
            (token(|t| t.token_file = Some("/x".into())), "both set"),
            (
                token(|t| t.token = Some(Secret::new("short"))),
                "admin.tokens[0].token: shorter",
            ),
            (
                token(|t| t.token = Some(Secret::new(Secret::REDACTED))),
                "redaction placeholder",
            ),
            (token(|t| t.sites.clear()), "admin.tokens[0].sites"),
            (
                token(|t| t.sites = vec!["a/b".into()]),
                "admin.tokens[0].sites: \"a/b\"",
            ),
            (token(|t| t.verbs.clear()), "admin.tokens[0].verbs"),
            (token(|t| t.name = " ".into()), "admin.tokens[0].name"),
        ] {
            let err = check(&admin, &p).unwrap_err();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        let mut twice = token(|_| {});
        twice.tokens.push(twice.tokens[0].clone());
        assert!(
            check(&twice, &p)
                .unwrap_err()
                .contains("admin.tokens[1].name")
        );
        let zero = PrewarmConfig {
            concurrency: 0,
            ..p
        };
        assert!(
            check(&token(|_| {}), &zero)
                .unwrap_err()
                .contains("prewarm.concurrency")
        );
    }

    #[test]
    fn a_secret_is_never_printed() {
        let admin = token(|_| {});
        let printed = shared::config::render(&admin).unwrap();
        assert!(!printed.contains("0123456789abcdef"), "{printed}");
        assert!(printed.contains("token = \"(redacted)\""), "{printed}");
        assert!(printed.contains("token_file = \"none\""), "{printed}");
        assert!(!format!("{admin:?}").contains("0123456789abcdef"));
        let parsed: AdminConfig = shared::config::parse(
            "[[tokens]]\nname='a'\ntoken='0123456789abcdef'\nsites=['*']\nverbs=['purge','reload']\n",
        )
        .unwrap();
        assert_eq!(
            parsed.tokens[0].token.as_ref().map(Secret::expose),
            Some("0123456789abcdef")
        );
    }
}
