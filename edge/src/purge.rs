//! A purge as the service applies it: its selector resolved, through the same target
//! normalisation, site routing and cache-key rules a request goes through, into the store's
//! terms ([`Scope`]), then applied to the cache.

use std::borrow::Cow;

use crate::cache::key;
use crate::cache::store::Scope;
use crate::config::SchemePolicy;
use crate::control::{Purge, Purged, Selector};
use crate::filter::{KeyParts, RequestInfo};
use crate::service::{RequestCtx, Service, State};

/// Why a selector names nothing the edge could hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    #[error("{0:?} is not a URL (http://host/path, https://host/path or host/path)")]
    NotUrl(String),
    #[error("{what}: {error}")]
    Target {
        what: String,
        error: crate::target::TargetError,
    },
    #[error("an empty surrogate key purges nothing")]
    EmptyTag,
}

impl Service {
    /// Applies a purge to this edge's cache; what it removed or marked stale. A selector that
    /// names no site of this edge purges nothing (another POP may serve it).
    pub async fn purge(&self, purge: &Purge) -> Purged {
        let scope = match scope(&self.state(), self, &purge.selector) {
            Ok(Some(scope)) => scope,
            Ok(None) => return Purged::default(),
            Err(e) => {
                // The API checks selectors before it publishes: only a command from another
                // version of the edge gets here.
                tracing::warn!(id = %purge.id, error = %e, "purge names nothing: ignored");
                return Purged::default();
            }
        };
        let purged = self.cache().purge(scope, purge.mode, purge.issued_ms).await;
        tracing::info!(id = %purge.id, selector = ?purge.selector, mode = ?purge.mode,
            objects = purged.objects, slices = purged.slices, bytes = purged.bytes,
            fenced = purged.fenced, "purged");
        purged
    }

    /// While `suspect`, the cache may hold what a purge this edge has not seen yet removed
    /// (the control plane is catching up): every hit revalidates with the origin first.
    pub fn set_cache_suspect(&self, suspect: bool) {
        self.cache().set_suspect(suspect);
    }
}

/// Checks a selector as the API receives it (the same parse the purge makes).
pub fn check(selector: &Selector) -> Result<(), SelectorError> {
    match selector {
        Selector::Url(url) | Selector::Prefix(url) => target(url).map(drop),
        Selector::Host(host) => target(host).map(drop),
        Selector::Tag(tag) if tag.trim().is_empty() => Err(SelectorError::EmptyTag),
        Selector::Tag(_) | Selector::All => Ok(()),
    }
}

/// The host a selector is about (`None`: a tag or everything), for scoping a token.
pub fn host_of(selector: &Selector) -> Result<Option<String>, SelectorError> {
    match selector {
        Selector::Url(url) | Selector::Prefix(url) | Selector::Host(url) => {
            target(url).map(|(host, _)| Some(host))
        }
        Selector::Tag(_) | Selector::All => Ok(None),
    }
}

/// A URL (or `host/path`) as request parts: host and normalised path-and-query, by the same
/// rules as a request's (crate::target).
fn target(url: &str) -> Result<(String, String), SelectorError> {
    let absolute: Cow<'_, str> = if url.starts_with("http://") || url.starts_with("https://") {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(format!("http://{url}"))
    };
    let uri: http::Uri = absolute
        .parse()
        .map_err(|_| SelectorError::NotUrl(url.to_owned()))?;
    let (parts, ()) = http::Request::builder()
        .uri(uri)
        .body(())
        .map_err(|_| SelectorError::NotUrl(url.to_owned()))?
        .into_parts();
    let wrap = |error| SelectorError::Target {
        what: url.to_owned(),
        error,
    };
    let host = crate::target::host(&parts).map_err(wrap)?;
    let raw = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = crate::target::path_and_query(raw).map_err(wrap)?;
    Ok((host, path.into_owned()))
}

/// The selector in the store's terms; `None` when it names a host no site serves.
fn scope(
    state: &State,
    service: &Service,
    selector: &Selector,
) -> Result<Option<Scope>, SelectorError> {
    let schemes = |host: &str| -> Option<Vec<String>> {
        let site = state.sites.find(host)?;
        Some(match site.scheme {
            SchemePolicy::Key => vec![
                key::primary(Some("http"), host, ""),
                key::primary(Some("https"), host, ""),
            ],
            SchemePolicy::Shared => vec![key::primary(None, host, "")],
        })
    };
    Ok(Some(match selector {
        Selector::All => Scope::All,
        Selector::Tag(tag) => Scope::Tag(tag.trim().to_owned()),
        Selector::Host(host) => {
            let (host, _) = target(host)?;
            let Some(hosts) = schemes(&host) else {
                return Ok(None);
            };
            Scope::Prefixes(hosts.into_iter().map(|h| h + "/").collect())
        }
        Selector::Prefix(url) => {
            let (host, path) = target(url)?;
            let Some(hosts) = schemes(&host) else {
                return Ok(None);
            };
            Scope::Prefixes(hosts.into_iter().map(|h| h + &path).collect())
        }
        Selector::Url(url) => {
            let (host, path) = target(url)?;
            let Some(hosts) = schemes(&host) else {
                return Ok(None);
            };
            let keyed = keyed_path(state, service, &host, &path);
            Scope::Urls(hosts.into_iter().map(|h| h + &keyed).collect())
        }
    }))
}

/// The path-and-query as the site's cache-key rules key it (query parameters dropped or
/// sorted), without the request-header and cookie parts: a purge of a URL takes every
/// variant of it, whatever those were.
fn keyed_path(state: &State, service: &Service, host: &str, path: &str) -> String {
    let Some(site) = state.sites.find(host) else {
        return path.to_owned();
    };
    let Ok(uri) = path.parse::<http::Uri>() else {
        return path.to_owned();
    };
    let Ok(request) = http::Request::builder()
        .uri(uri)
        .header(http::header::HOST, host)
        .body(())
    else {
        return path.to_owned();
    };
    let (parts, ()) = request.into_parts();
    let ctx = RequestCtx::internal(service, false);
    let info = RequestInfo {
        ctx: &ctx,
        parts: &parts,
        target: Ok((host, path)),
        site_rule: std::sync::OnceLock::from(site.rule_for(path)),
    };
    let mut parts_of_key = KeyParts {
        path_and_query: Cow::Borrowed(path),
        bypass: false,
    };
    state.chain.cache_key(&info, site, &mut parts_of_key);
    site.filters.cache_key(&info, site, &mut parts_of_key);
    let keyed = parts_of_key.path_and_query;
    match keyed.split_once(key::PART) {
        Some((bare, _)) => bare.to_owned(),
        None => keyed.into_owned(),
    }
}
