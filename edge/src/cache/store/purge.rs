//! Purges: which entries a purge takes ([`Scope`]), removing or marking them stale, and the
//! log of recent purges that fences fills under way ([`Fence`]).
//!
//! A fill takes a [`Fence`] before it asks the origin; its commit is refused if a purge that
//! matches it ran since (the response may predate the purge), or if the response's `Date`
//! minus its `Age` shows it older than a matching purge (a parent tier that had not applied it
//! yet; only a response with an `Age` came from a cache). Both checks run under the index
//! lock, as the purge does: no commit slips between.

use std::collections::VecDeque;
use std::sync::Arc;

use cacache::Integrity;

use super::index::Index;
use super::{Store, StoreError};
use crate::cache::key;
use crate::cache::meta::{Meta, millis};
use crate::control::{Mode, Purged};

/// Which entries a purge takes, in the store's terms (the service resolves URLs and hosts
/// through the site's rules into these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Primary keys that are one of these, bare or with cache-key rule parts: a URL.
    Urls(Vec<String>),
    /// Primary keys that start with one of these: a path prefix (`host/` is a whole host).
    Prefixes(Vec<String>),
    /// Entries whose response named this surrogate key.
    Tag(String),
    All,
}

impl Scope {
    /// Whether the entry `key` (a variant or a slice key) with these tags is in scope.
    pub(crate) fn matches(&self, key: &str, tags: &[String]) -> bool {
        let primary = key::primary_of(key);
        match self {
            Self::Urls(urls) => urls.iter().any(|u| key::purge_matches(primary, u)),
            Self::Prefixes(prefixes) => prefixes.iter().any(|p| primary.starts_with(p.as_str())),
            Self::Tag(tag) => tags.iter().any(|t| t == tag),
            Self::All => true,
        }
    }

    /// Whether a fetch under way for `key` may be one this purge takes: a tag is known only
    /// from a response, so before one has arrived every fetch may be.
    pub(crate) fn may_match(&self, key: &str, tags: Option<&[String]>) -> bool {
        match (self, tags) {
            (Self::Tag(_), None) => true,
            (_, tags) => self.matches(key, tags.unwrap_or_default()),
        }
    }
}

/// Taken before a fetch asks the origin: its commit is refused if a matching purge ran since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fence(u64);

/// Purges kept for fencing (about 150 bytes each): a fill that outlives this many purges is
/// not stored, since it may have missed one. 16 s of a sustained 1,000 purges per second.
const LOG_LEN: usize = 16384;

/// A response's `Date` has whole seconds: one generated in the second a purge ran, after it,
/// may show a Date up to a second before it. Only a response older by more than this is
/// refused.
const DATE_SLACK_MS: u64 = 1000;

struct Logged {
    seq: u64,
    issued_ms: u64,
    scope: Arc<Scope>,
}

/// Recent purges, oldest first.
#[derive(Default)]
pub(super) struct PurgeLog {
    entries: VecDeque<Logged>,
    seq: u64,
}

impl PurgeLog {
    fn record(&mut self, scope: Arc<Scope>, issued_ms: u64) {
        self.seq += 1;
        if self.entries.len() == LOG_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(Logged {
            seq: self.seq,
            issued_ms,
            scope,
        });
    }

    /// Whether `meta`, fetched under `fence`, must not be stored: a matching purge ran since
    /// the fetch began, or was issued after the response was generated.
    pub(super) fn refuses(&self, meta: &Meta, fence: Fence, object_tags: &[String]) -> bool {
        let oldest = self.entries.front().map_or(self.seq + 1, |e| e.seq);
        if fence.0 + 1 < oldest {
            // Purges this fill may have missed are no longer listed: refuse to be safe. Only a
            // fill that outlived LOG_LEN purges gets here.
            return true;
        }
        let birth = generated_ms(meta);
        let tags = if meta.tags.is_empty() {
            object_tags
        } else {
            &meta.tags
        };
        // Newest first; purges arrive roughly in issue order, so the walk stops at the first
        // purge that neither fence nor date concerns.
        for entry in self.entries.iter().rev() {
            let since_fence = entry.seq > fence.0;
            let after_birth = birth.is_some_and(|b| entry.issued_ms > b + DATE_SLACK_MS);
            if !since_fence && !after_birth {
                break;
            }
            if entry.scope.matches(&meta.key, tags) {
                return true;
            }
        }
        false
    }
}

/// When the origin generated a response that a cache served, on this edge's clock: when it
/// arrived here minus its `Age`, the time it spent in caches (RFC 9111 4.2.3). Not its
/// `Date` minus its `Age`: a cache keeps the origin's `Date`, so that would count the time
/// in caches twice, and a parent's copy fetched after a purge would look older than it once
/// it had aged. `None` for a response without `Age`, straight from an origin: it was made
/// when it was asked for, after any purge the fence did not see.
fn generated_ms(meta: &Meta) -> Option<u64> {
    if !meta.header_map().contains_key(http::header::AGE) {
        return None;
    }
    let arrived = millis(meta.response_time());
    Some(arrived.saturating_sub(meta.facts().age().as_millis() as u64))
}

impl Store {
    /// The fence a fetch takes before it asks the origin.
    pub(crate) fn fence(&self) -> Fence {
        Fence(self.lock().purges.seq)
    }

    /// Removes (hard) or marks stale (soft) every entry in `scope`, and records the purge so
    /// that fills under way do not store what it took; `issued_ms` is when it was issued,
    /// `now` when a soft purge marks entries stale.
    pub(crate) async fn purge(
        &self,
        scope: Scope,
        mode: Mode,
        (issued_ms, now): (u64, std::time::SystemTime),
    ) -> Purged {
        let scope = Arc::new(scope);
        let now = millis(now);
        let (purged, removed, released, stale) = {
            let mut index = self.lock();
            index.purges.record(scope.clone(), issued_ms);
            let objects = index.in_scope(&scope);
            let mut purged = Purged::default();
            let mut removed = Vec::new();
            let mut released = Vec::new();
            let mut stale = Vec::new();
            for object in objects {
                let Some(slot) = index.entries.get_mut(&object) else {
                    continue;
                };
                purged.objects += 1;
                purged.bytes += slot.meta.body_len;
                if mode == Mode::Soft {
                    if slot.meta.stale_since.is_none() {
                        let mut marked = (*slot.meta).clone();
                        marked.stale_since = Some(now);
                        slot.meta = Arc::new(marked);
                        stale.push(slot.meta.clone());
                    }
                    continue;
                }
                for key in index.with_slices(&object) {
                    if let Some(slot) = index.remove(&key) {
                        if key::is_slice(&key) {
                            purged.slices += 1;
                        }
                        released.extend(index.release_slot(&slot));
                        removed.push(key);
                    }
                }
            }
            (purged, removed, released, stale)
        };
        for key in &removed {
            self.remove_index_entry(key).await;
        }
        self.delete_unreferenced(released).await;
        for meta in stale {
            self.persist_stale(meta).await;
        }
        purged
    }

    /// Writes a soft-purged entry's meta, so that it is still stale after a restart. The
    /// entry may have been replaced meanwhile (a refresh, a new fill): then it is left alone.
    async fn persist_stale(&self, meta: Arc<Meta>) {
        let meta_ref = match self.write_meta(&meta).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key::shown(&meta.key), error = %e, "cannot persist a soft purge");
                return;
            }
        };
        let released: Vec<Integrity> = {
            let mut index = self.lock();
            match index.entries.get_mut(&meta.key) {
                Some(slot) if Arc::ptr_eq(&slot.meta, &meta) => {
                    let old = std::mem::replace(&mut slot.meta_ref, meta_ref);
                    index
                        .unref(&old.sri)
                        .then_some(old.sri)
                        .into_iter()
                        .collect()
                }
                _ => {
                    index.unref(&meta_ref.sri);
                    vec![meta_ref.sri]
                }
            }
        };
        self.delete_unreferenced(released).await;
    }

    /// Refuses a commit that a purge fenced off; `StoreError::Purged` then.
    pub(super) fn check_fence(index: &Index, meta: &Meta, fence: Fence) -> Result<(), StoreError> {
        // A slice carries no tags: its object's say whether a tag purge took it.
        let object_tags = key::object_of_slice(&meta.key)
            .and_then(|object| index.entries.get(object))
            .map(|slot| slot.meta.tags.as_slice())
            .unwrap_or_default();
        match index.purges.refuses(meta, fence, object_tags) {
            true => Err(StoreError::Purged(meta.key.clone())),
            false => Ok(()),
        }
    }
}

impl Index {
    /// The primary keys that start with `prefix`: one range of the ordered index.
    fn starting_with<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        use std::ops::Bound;
        self.primaries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |p| p.starts_with(prefix))
    }

    /// The variant keys (objects, not their slices) in `scope`.
    fn in_scope(&self, scope: &Scope) -> Vec<String> {
        let primaries: Vec<&String> = match scope {
            Scope::All => return self.variants.values().flatten().cloned().collect(),
            Scope::Tag(tag) => {
                return self
                    .tags
                    .get(tag)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
            }
            Scope::Urls(urls) => urls
                .iter()
                .flat_map(|u| {
                    self.starting_with(u)
                        .filter(move |p| key::purge_matches(p, u))
                })
                .collect(),
            Scope::Prefixes(prefixes) => prefixes
                .iter()
                .flat_map(|pre| self.starting_with(pre))
                .collect(),
        };
        primaries
            .into_iter()
            .filter_map(|p| self.variants.get(p))
            .flatten()
            .cloned()
            .collect()
    }
}
