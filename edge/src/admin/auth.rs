//! Who may call the admin API: bearer tokens scoped to sites and verbs (`[admin]`), or, with
//! no tokens configured, a loopback client.
//!
//! A presented token is hashed (SHA-256) and compared with the hash of every configured
//! token in constant time, with no early exit: neither the time taken nor its length says
//! which token, if any, it is close to.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use ring::digest;
use shared::admin::AdminResponse;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::config::{AdminConfig, Verb};

/// The configured tokens, ready to compare.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    tokens: Vec<Token>,
}

#[derive(Debug)]
struct Token {
    name: String,
    digest: [u8; 32],
    sites: Vec<String>,
    verbs: Vec<Verb>,
}

/// The sites a request acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// None in particular (a reload).
    Edge,
    /// These hosts.
    Hosts(Vec<String>),
    /// Every site: an `all` purge, and a `tag` purge (a tag may be on any site's objects).
    AllSites,
}

/// Who is allowed: a named token, or a loopback client of an edge with no tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    Token(String),
    /// No tokens configured: the peer is trusted for being on this machine.
    Local(SocketAddr),
    /// No tokens configured and a verb that never needed one (reload).
    Anyone,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(name) => write!(f, "token {name:?}"),
            Self::Local(peer) => write!(f, "loopback client {peer}"),
            Self::Anyone => f.write_str("untokened client"),
        }
    }
}

impl Tokens {
    /// Reads every token (`token`, or `token_file`); the error names the key.
    pub(crate) fn load(config: &AdminConfig) -> anyhow::Result<Self> {
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for (i, t) in config.tokens.iter().enumerate() {
            let secret = match (&t.token, &t.token_file) {
                (Some(s), _) => s.expose().to_owned(),
                (None, Some(file)) => {
                    let text = std::fs::read_to_string(file).map_err(|e| {
                        anyhow::anyhow!(
                            "admin.tokens[{i}].token_file: cannot read {}: {e}",
                            file.display()
                        )
                    })?;
                    let secret = text.trim().to_owned();
                    crate::config::check_secret(&secret).map_err(|e| {
                        anyhow::anyhow!("admin.tokens[{i}].token_file {}: {e}", file.display())
                    })?;
                    secret
                }
                (None, None) => anyhow::bail!("admin.tokens[{i}]: set `token` or `token_file`"),
            };
            tokens.push(Token {
                name: t.name.clone(),
                digest: hash(&secret),
                sites: t.sites.iter().map(|s| s.to_ascii_lowercase()).collect(),
                verbs: t.verbs.clone(),
            });
        }
        Ok(Self { tokens })
    }

    /// Whether `headers` (from `peer`) may do `verb` on `scope`.
    pub(crate) fn authorize(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        verb: Verb,
        scope: &Scope,
    ) -> Result<Caller, Refusal> {
        if self.tokens.is_empty() {
            return match verb {
                Verb::Reload => Ok(Caller::Anyone),
                _ if peer.ip().is_loopback() => Ok(Caller::Local(peer)),
                _ => Err(Refusal::Forbidden(format!(
                    "no admin tokens are configured: {} is accepted only from a loopback client, not {}",
                    verb.as_str(),
                    peer.ip()
                ))),
            };
        }
        let presented = bearer(headers)?;
        let token = self.find(presented).ok_or(Refusal::Unauthorized {
            reason: "the bearer token is not one of this edge's tokens".into(),
            invalid: true,
        })?;
        if !token.verbs.contains(&verb) {
            return Err(Refusal::Forbidden(format!(
                "token {:?} may not {} (its verbs: {})",
                token.name,
                verb.as_str(),
                token
                    .verbs
                    .iter()
                    .map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(host) = token.outside(scope) {
            return Err(Refusal::Forbidden(format!(
                "token {:?} may not {} {host} (its sites: {})",
                token.name,
                verb.as_str(),
                token.sites.join(", ")
            )));
        }
        Ok(Caller::Token(token.name.clone()))
    }

    /// The token whose secret is `presented`: every token is compared, in constant time.
    fn find(&self, presented: &str) -> Option<&Token> {
        let presented = hash(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, t) in self.tokens.iter().enumerate() {
            let same = t.digest.ct_eq(&presented);
            index.conditional_assign(&(i as u32), same);
            found |= same;
        }
        bool::from(found).then(|| &self.tokens[index as usize])
    }
}

impl Token {
    /// The first part of `scope` this token's sites do not cover, as the refusal names it.
    fn outside(&self, scope: &Scope) -> Option<String> {
        let all = self.sites.iter().any(|s| s == "*");
        match scope {
            Scope::Edge => None,
            Scope::AllSites if all => None,
            Scope::AllSites => {
                Some("every site (a purge of all, or by tag, needs sites = [\"*\"])".into())
            }
            Scope::Hosts(hosts) => hosts
                .iter()
                .find(|h| !self.sites.iter().any(|s| site_matches(s, h)))
                .map(|h| format!("host {h:?}")),
        }
    }
}

/// Whether the token site pattern `pattern` (lowercase) covers `host`.
fn site_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        _ if pattern == "*" => true,
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        None => pattern == host,
    }
}

fn hash(secret: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    out
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let missing = |reason: &str| Refusal::Unauthorized {
        reason: reason.into(),
        invalid: false,
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| missing("no Authorization header: send `Authorization: Bearer <token>`"))?;
    let value = value
        .to_str()
        .map_err(|_| missing("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(missing("the Authorization header is not `Bearer <token>`")),
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401: no token, or one this edge does not know (`invalid`).
    Unauthorized { reason: String, invalid: bool },
    /// 403: a known token (or the loopback rule) that does not cover the request.
    Forbidden(String),
}

impl Refusal {
    pub(crate) fn response(&self) -> AdminResponse {
        match self {
            Self::Unauthorized { reason, invalid } => {
                // RFC 6750 3: the challenge, with `invalid_token` when one was presented.
                let challenge = match invalid {
                    true => "Bearer realm=\"quicdn\", error=\"invalid_token\"",
                    false => "Bearer realm=\"quicdn\"",
                };
                AdminResponse::json(StatusCode::UNAUTHORIZED, error_json(reason)).with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                )
            }
            Self::Forbidden(reason) => {
                AdminResponse::json(StatusCode::FORBIDDEN, error_json(reason))
            }
        }
    }
}

/// `{"error": reason}`.
pub(crate) fn error_json(reason: &str) -> String {
    serde_json::json!({ "error": reason }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenConfig};

    fn tokens() -> Tokens {
        let t = |name: &str, secret: &str, sites: &[&str], verbs: &[Verb]| TokenConfig {
            name: name.into(),
            token: Some(Secret::new(secret)),
            token_file: None,
            sites: sites.iter().map(|s| (*s).to_owned()).collect(),
            verbs: verbs.to_vec(),
        };
        Tokens::load(&AdminConfig {
            tokens: vec![
                t(
                    "site",
                    "site-token-0123456789",
                    &["cdn.example", "*.img.example"],
                    &[Verb::Purge],
                ),
                t(
                    "ops",
                    "ops-token-0123456789",
                    &["*"],
                    &[Verb::Purge, Verb::Reload],
                ),
            ],
            ..AdminConfig::default()
        })
        .unwrap()
    }

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    const REMOTE: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
        1,
    );
    const LOOPBACK: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[test]
    fn tokens_are_scoped_to_verbs_and_sites() {
        let t = tokens();
        let hosts = |h: &[&str]| Scope::Hosts(h.iter().map(|s| (*s).to_owned()).collect());
        let site = with("Bearer site-token-0123456789");
        let ops = with("bearer ops-token-0123456789");
        assert_eq!(
            t.authorize(
                &site,
                REMOTE,
                Verb::Purge,
                &hosts(&["CDN.example", "a.b.img.example"])
            ),
            Ok(Caller::Token("site".into()))
        );
        for (headers, verb, scope, want) in [
            (
                &site,
                Verb::Purge,
                hosts(&["other.example"]),
                "host \"other.example\"",
            ),
            (
                &site,
                Verb::Purge,
                hosts(&["img.example"]),
                "host \"img.example\"",
            ),
            (&site, Verb::Purge, Scope::AllSites, "every site"),
            (
                &site,
                Verb::Prewarm,
                hosts(&["cdn.example"]),
                "may not prewarm",
            ),
            (&site, Verb::Reload, Scope::Edge, "may not reload"),
        ] {
            match t.authorize(headers, REMOTE, verb, &scope) {
                Err(Refusal::Forbidden(reason)) => assert!(reason.contains(want), "{reason}"),
                other => panic!("{verb:?} {scope:?}: {other:?}"),
            }
        }
        assert!(
            t.authorize(&ops, REMOTE, Verb::Purge, &Scope::AllSites)
                .is_ok()
        );
        assert!(
            t.authorize(&ops, REMOTE, Verb::Reload, &Scope::Edge)
                .is_ok()
        );
    }

    #[test]
    fn a_missing_or_unknown_token_is_unauthorized_even_from_loopback() {
        let t = tokens();
        for (headers, invalid) in [
            (HeaderMap::new(), false),
            (with("Basic b3BzOng="), false),
            (with("Bearer "), false),
            (with("Bearer site-token-012345678"), true),
            (with("Bearer site-token-01234567890"), true),
        ] {
            match t.authorize(&headers, LOOPBACK, Verb::Purge, &Scope::Edge) {
                Err(Refusal::Unauthorized { invalid: i, .. }) => {
                    assert_eq!(i, invalid, "{headers:?}")
                }
                other => panic!("{headers:?}: {other:?}"),
            }
        }
        let response = Refusal::Unauthorized {
            reason: "x".into(),
            invalid: true,
        }
        .response();
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert!(response.headers.iter().any(
            |(n, v)| n == header::WWW_AUTHENTICATE && v.to_str().unwrap().starts_with("Bearer")
        ));
    }

    #[test]
    fn without_tokens_only_loopback_purges_and_reload_stays_open() {
        let t = Tokens::default();
        let none = HeaderMap::new();
        assert_eq!(
            t.authorize(&none, LOOPBACK, Verb::Purge, &Scope::AllSites),
            Ok(Caller::Local(LOOPBACK))
        );
        assert!(matches!(
            t.authorize(&none, REMOTE, Verb::Prewarm, &Scope::Edge),
            Err(Refusal::Forbidden(r)) if r.contains("loopback")
        ));
        assert_eq!(
            t.authorize(&none, REMOTE, Verb::Reload, &Scope::Edge),
            Ok(Caller::Anyone)
        );
    }

    #[test]
    fn a_token_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "file-token-0123456789\n").unwrap();
        let config = |path: std::path::PathBuf| AdminConfig {
            tokens: vec![TokenConfig {
                name: "f".into(),
                token: None,
                token_file: Some(path),
                sites: vec!["*".into()],
                verbs: vec![Verb::Purge],
            }],
            ..AdminConfig::default()
        };
        let t = Tokens::load(&config(file.clone())).unwrap();
        let ok = with("Bearer file-token-0123456789");
        assert!(
            t.authorize(&ok, REMOTE, Verb::Purge, &Scope::AllSites)
                .is_ok()
        );
        let err = Tokens::load(&config(dir.path().join("absent"))).unwrap_err();
        assert!(
            err.to_string().contains("admin.tokens[0].token_file"),
            "{err}"
        );
        std::fs::write(&file, "short").unwrap();
        let err = Tokens::load(&config(file)).unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
    }
}
