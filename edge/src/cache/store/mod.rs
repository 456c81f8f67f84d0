//! Bytes on disk and in memory. Knows keys, metas and chunks; knows nothing of HTTP rules.
//!
//! - Disk: a cacache directory. Body chunks are content-addressed (identical chunks are stored
//!   once, whichever responses they belong to); each entry's [`Meta`] is content too, and the
//!   cacache index maps the entry key to it.
//! - Memory: every entry's `Meta` is held in an in-memory index (so a lookup never touches
//!   disk), and a byte-bounded hot tier (moka) holds the chunks of small objects.
//! - Budget: chunks are reference-counted across entries; when the bytes on disk exceed the
//!   budget, least recently used entries are removed and chunks nobody references are deleted.
//! - Integrity: every chunk read from disk is checked against its hash before it is returned;
//!   a mismatch is [`StoreError::Corrupt`] and the caller drops the entry.
//!
//! By file:
//!
//! - `mod.rs`: the [`Store`] and its lookups;
//! - `index.rs`: the in-memory index (entries, recency, chunk references, variant lists);
//! - `chunks.rs`: chunk I/O (the memory tier, reads checked against their hash, writes,
//!   deletion of chunks nobody references);
//! - `entries.rs`: committing, updating and removing entries;
//! - `health.rs`: the disk budget, eviction, and what a failed write teaches;
//! - `load.rs`: rebuilding the index from disk at startup;
//! - `purge.rs`: purges by URL, prefix, tag, host or all, hard or soft, and the fence they
//!   put on fills under way.

mod chunks;
mod entries;
mod health;
mod index;
mod load;
mod purge;
#[cfg(test)]
mod purge_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use cacache::Integrity;

use self::health::WriteHealth;
use self::index::{Index, touch};
use self::load::load_index;
pub(crate) use self::purge::{Fence, Scope};
use super::meta::Meta;

/// Store failures. `Corrupt` and `Missing` mean the entry must not be served. Foreign errors
/// are held in an `Arc` so that this stays `Clone`: a failed fill hands its error to every
/// reader.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cached content {0} failed its integrity check")]
    Corrupt(Integrity),
    #[error("cached content {0} is missing")]
    Missing(Integrity),
    /// cacache could not read or write the store's directory (a full or failing disk).
    #[error("cache I/O error: {0}")]
    Io(#[source] Arc<cacache::Error>),
    /// The store's directory could not be created at startup.
    #[error("cache I/O error: cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An entry's meta could not be encoded for the disk.
    #[error("cache I/O error: {0}")]
    EncodeMeta(#[source] Arc<serde_json::Error>),
    /// A blocking store task panicked or was cancelled (a runtime shutting down).
    #[error("cache I/O error: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    /// A 304 refreshed an entry that was removed meanwhile (evicted, purged).
    #[error("cache I/O error: no entry {0:?} to update")]
    NoEntry(String),
    /// A purge ran while the response was fetched, or the response is older than one: it
    /// must not be stored (see [`Fence`]).
    #[error("not stored: {0:?} was purged while it was fetched, or is older than a purge")]
    Purged(String),
}

/// Sizes the store works within.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub disk_budget: u64,
    pub memory_budget: u64,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub entries: u64,
    pub disk_bytes: u64,
    pub memory_chunks: u64,
    pub memory_bytes: u64,
    pub evictions: u64,
    /// Chunk or index writes that failed (a full or failing disk).
    pub write_errors: u64,
    /// The disk budget in force: the configured one, or less once a write failed for lack of
    /// room (the store then keeps 10 % below what it held).
    pub disk_budget: u64,
}

/// The cache's storage.
pub struct Store {
    dir: PathBuf,
    limits: StoreLimits,
    index: Mutex<Index>,
    hot: moka::sync::Cache<Integrity, Bytes>,
    /// Writers and deleters of one chunk serialize on its stripe, so a chunk being deleted
    /// cannot be re-referenced by a concurrent writer who then finds the file gone.
    stripes: Vec<tokio::sync::Mutex<()>>,
    writes: WriteHealth,
}

impl Store {
    /// Opens (or creates) the store in `dir`, rebuilding the in-memory index from disk. Entries
    /// whose meta is unreadable, of another format, or whose chunks are missing are removed, as
    /// are chunks no entry references (left by a crash mid-fill).
    pub async fn open(dir: &Path, limits: StoreLimits) -> Result<Arc<Self>, StoreError> {
        let dir_owned = dir.to_owned();
        let index = tokio::task::spawn_blocking(move || load_index(&dir_owned))
            .await
            .map_err(|e| StoreError::Task(Arc::new(e)))??;
        let hot = moka::sync::Cache::builder()
            .max_capacity(limits.memory_budget)
            .weigher(|_k: &Integrity, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
            .build();
        let store = Arc::new(Self {
            dir: dir.to_owned(),
            limits,
            index: Mutex::new(index),
            hot,
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            writes: WriteHealth {
                cap: std::sync::atomic::AtomicU64::new(u64::MAX),
                ..WriteHealth::default()
            },
        });
        store.enforce_budget(None).await;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored entry for `key`, marking it recently used.
    pub fn get(&self, key: &str) -> Option<Arc<Meta>> {
        let mut index = self.lock();
        index.touch(key)
    }

    /// The variant stored under `primary` that `matches` accepts (given its key and meta),
    /// marking it recently used. One lock, no copies of the variant list: this is every hit.
    pub fn find(
        &self,
        primary: &str,
        mut matches: impl FnMut(&str, &Meta) -> bool,
    ) -> Option<Arc<Meta>> {
        let mut guard = self.lock();
        let index = &mut *guard;
        let entries = &index.entries;
        let found = index.variants.get(primary)?.iter().find(|variant| {
            entries
                .get(variant.as_str())
                .is_some_and(|slot| matches(variant, &slot.meta))
        })?;
        touch(&mut index.entries, &mut index.lru, &mut index.tick, found)
    }

    /// The variant keys stored under a primary key (whole responses and sliced objects, not
    /// their slices).
    pub fn variants(&self, primary: &str) -> Vec<String> {
        self.lock()
            .variants
            .get(primary)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every key stored under a primary key, slices included.
    pub fn keys_of(&self, primary: &str) -> Vec<String> {
        let index = self.lock();
        let variants = index.variants.get(primary).into_iter().flatten();
        variants.flat_map(|v| index.with_slices(v)).collect()
    }

    /// Whether `meta` is still the entry stored under its key.
    pub fn is_current(&self, meta: &Arc<Meta>) -> bool {
        self.lock()
            .entries
            .get(&meta.key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.meta, meta))
    }

    pub fn stats(&self) -> StoreStats {
        let write_errors = self
            .writes
            .failures
            .load(std::sync::atomic::Ordering::Relaxed);
        let disk_budget = self.disk_budget();
        let index = self.lock();
        StoreStats {
            entries: index.entries.len() as u64,
            disk_bytes: index.disk_bytes,
            memory_chunks: self.hot.entry_count(),
            memory_bytes: self.hot.weighted_size(),
            evictions: index.evictions,
            write_errors,
            disk_budget,
        }
    }

    fn stripe(&self, sri: &Integrity) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sri.hash(&mut h);
        &self.stripes[(h.finish() % self.stripes.len() as u64) as usize]
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic elsewhere while holding the lock leaves the index consistent enough to use:
        // every mutation is a few map operations.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}
