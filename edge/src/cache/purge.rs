//! Purges at the cache level: the store's purge ([`Store::purge`]) plus what lives outside
//! the store: fetches under way (fenced off, so that a request after the purge starts a fresh
//! one), hit-for-pass marks, and the surrogate keys a response is indexed by.

use std::sync::atomic::Ordering;

use http::HeaderMap;
use http::header::HeaderName;

use super::store::Scope;
use super::{Cache, Landed};
use crate::control::{Mode, Purged};

/// The response headers whose members are surrogate keys (Fastly's and Cloudflare's names).
pub(crate) static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub(crate) static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// Keys per response and bytes per key: a response cannot make the index grow without bound.
const MAX_TAGS: usize = 256;
const MAX_TAG_LEN: usize = 1024;

/// The surrogate keys a response names in `Surrogate-Key` and `Cache-Tag` (space or comma
/// separated, several lines allowed), deduplicated, in order of appearance.
pub(crate) fn surrogate_keys(headers: &HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    let values = headers
        .get_all(&SURROGATE_KEY)
        .iter()
        .chain(headers.get_all(&CACHE_TAG).iter());
    for value in values {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for tag in text.split([' ', ',', '\t']).filter(|t| !t.is_empty()) {
            if tags.len() == MAX_TAGS {
                return tags;
            }
            if tag.len() <= MAX_TAG_LEN && !tags.iter().any(|t| t == tag) {
                tags.push(tag.to_owned());
            }
        }
    }
    tags
}

/// Removes the surrogate-key headers from a response a client gets.
pub(crate) fn strip_surrogate_keys(headers: &mut HeaderMap) {
    headers.remove(&SURROGATE_KEY);
    headers.remove(&CACHE_TAG);
}

impl Cache {
    /// Purges `scope`: fetches under way that it may take are fenced off first (a request
    /// after this one starts a fresh fetch, and the old one is not stored), then the store
    /// removes or marks stale what it holds. `issued_ms` is when the purge was issued.
    pub(crate) async fn purge(&self, scope: Scope, mode: Mode, issued_ms: u64) -> Purged {
        let inner = &self.inner;
        let whole = inner.flights.evict(|key, landed| {
            let tags = landed.map(|l| match l {
                Landed::Fill { head, .. } => head.tags.as_slice(),
                Landed::Stored { meta, .. } | Landed::Refreshed(meta) => meta.tags.as_slice(),
                Landed::Pass { .. } | Landed::Failed { .. } => &[],
            });
            scope.may_match(key, tags)
        });
        let slices = inner.slicer.evict(&scope);
        // A hit-for-pass mark would keep the next request from storing the new version of a
        // purged URL. Marks under a prefix or a tag are left to expire (`pass_memory`): moka
        // would test every mark against each such purge, at up to thousands a second.
        match &scope {
            Scope::All => inner.passes.invalidate_all(),
            Scope::Urls(urls) => urls.iter().for_each(|u| inner.passes.invalidate(u)),
            Scope::Prefixes(_) | Scope::Tag(_) => {}
        }
        let now = inner.clock.now();
        let mut purged = inner.store.purge(scope, mode, (issued_ms, now)).await;
        purged.fenced = whole + slices;
        purged
    }

    /// While `suspect`, every hit revalidates first (see [`crate::control`]: the control plane
    /// is catching up on purges this edge may have missed).
    pub(crate) fn set_suspect(&self, suspect: bool) {
        self.inner.suspect.store(suspect, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_keys_split_on_spaces_and_commas_across_both_headers() {
        let mut h = HeaderMap::new();
        h.append("surrogate-key", "a  b,c".parse().unwrap());
        h.append("surrogate-key", "b d".parse().unwrap());
        h.append("cache-tag", "e,a".parse().unwrap());
        assert_eq!(surrogate_keys(&h), ["a", "b", "c", "d", "e"]);
        assert!(surrogate_keys(&HeaderMap::new()).is_empty());
        let many: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let mut h = HeaderMap::new();
        h.insert("cache-tag", many.join(" ").parse().unwrap());
        assert_eq!(surrogate_keys(&h).len(), MAX_TAGS);
    }
}
