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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use cacache::Integrity;

use super::key;
use super::meta::{ChunkRef, FORMAT_VERSION, Meta};

/// Store failures. `Corrupt` and `Missing` mean the entry must not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cached content {0} failed its integrity check")]
    Corrupt(Integrity),
    #[error("cached content {0} is missing")]
    Missing(Integrity),
    #[error("cache I/O error: {0}")]
    Io(String),
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

/// The last write the store could not make, while it is recent (health reports it).
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub ago: std::time::Duration,
    pub error: String,
}

/// How long after a failed write the store reports itself as not writable.
const WRITE_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
struct WriteHealth {
    failures: std::sync::atomic::AtomicU64,
    /// A budget learned from a failed write; u64::MAX: none.
    cap: std::sync::atomic::AtomicU64,
    last: Mutex<Option<(std::time::Instant, String)>>,
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

#[derive(Default)]
struct Index {
    entries: HashMap<String, Slot>,
    /// Recency order: tick -> key. The smallest tick is the least recently used.
    lru: BTreeMap<u64, String>,
    tick: u64,
    chunks: HashMap<Integrity, ChunkUse>,
    /// Primary key -> variant keys stored for it.
    variants: HashMap<String, HashSet<String>>,
    /// Object key -> its slice keys (kept apart so a lookup never walks a file's slices).
    slices: HashMap<String, HashSet<String>>,
    disk_bytes: u64,
    evictions: u64,
}

impl Index {
    fn touch(&mut self, key: &str) -> Option<Arc<Meta>> {
        touch(&mut self.entries, &mut self.lru, &mut self.tick, key)
    }
}

/// Marks `key` recently used and returns its meta. An entry already among the most recent
/// eighth is left where it is: eviction takes from the other end, and a hot object would
/// otherwise move in the recency tree (and copy its key) on every hit.
fn touch(
    entries: &mut HashMap<String, Slot>,
    lru: &mut BTreeMap<u64, String>,
    tick: &mut u64,
    key: &str,
) -> Option<Arc<Meta>> {
    let slack = entries.len() as u64 / 8;
    let slot = entries.get_mut(key)?;
    if *tick - slot.tick > slack {
        lru.remove(&slot.tick);
        *tick += 1;
        slot.tick = *tick;
        lru.insert(slot.tick, key.to_owned());
    }
    Some(slot.meta.clone())
}

struct Slot {
    meta: Arc<Meta>,
    meta_ref: ChunkRef,
    tick: u64,
}

struct ChunkUse {
    refs: u32,
    len: u64,
}

impl Store {
    /// Opens (or creates) the store in `dir`, rebuilding the in-memory index from disk. Entries
    /// whose meta is unreadable, of another format, or whose chunks are missing are removed, as
    /// are chunks no entry references (left by a crash mid-fill).
    pub async fn open(dir: &Path, limits: StoreLimits) -> Result<Arc<Self>, StoreError> {
        let dir_owned = dir.to_owned();
        let index = tokio::task::spawn_blocking(move || load_index(&dir_owned))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))??;
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
        let mut keys = Vec::new();
        for variant in index.variants.get(primary).into_iter().flatten() {
            keys.push(variant.clone());
            keys.extend(index.slices.get(variant).into_iter().flatten().cloned());
        }
        keys
    }

    /// Reads one chunk, from memory or from disk with its hash checked. `keep_hot` puts a
    /// chunk read from disk into the memory tier.
    pub async fn read_chunk(&self, chunk: &ChunkRef, keep_hot: bool) -> Result<Bytes, StoreError> {
        if let Some(bytes) = self.hot.get(&chunk.sri) {
            return Ok(bytes);
        }
        // Boxed: cacache's read future is large and would otherwise grow every hit's future.
        Box::pin(self.read_disk(chunk, keep_hot)).await
    }

    async fn read_disk(&self, chunk: &ChunkRef, keep_hot: bool) -> Result<Bytes, StoreError> {
        let data = cacache::read_hash(&self.dir, &chunk.sri)
            .await
            .map_err(|e| read_error(&chunk.sri, e))?;
        if data.len() as u64 != chunk.len {
            return Err(StoreError::Corrupt(chunk.sri.clone()));
        }
        let bytes = Bytes::from(data);
        if keep_hot {
            self.hot.insert(chunk.sri.clone(), bytes.clone());
        }
        Ok(bytes)
    }

    /// Writes one chunk and takes a reference on it for the caller (a fill). The reference is
    /// handed to the entry by [`Store::commit`] or given back by [`Store::release`].
    pub async fn write_chunk(&self, data: Bytes, keep_hot: bool) -> Result<ChunkRef, StoreError> {
        let sri = Integrity::from(&data);
        let chunk = ChunkRef {
            sri: sri.clone(),
            len: data.len() as u64,
        };
        let stripe = self.stripe(&sri).lock().await;
        let present = {
            let mut index = self.lock();
            match index.chunks.get_mut(&sri) {
                Some(used) => {
                    used.refs += 1;
                    true
                }
                None => false,
            }
        };
        if !present {
            let (bytes, expect) = (data.clone(), sri.clone());
            let written = self
                .blocking(move |dir| write_content(dir, &bytes, expect))
                .await;
            if let Err(e) = written {
                // Released first: making room deletes chunks, and a victim on this stripe
                // would wait for it for ever (tokio's mutex is not reentrant).
                drop(stripe);
                self.write_failed(&e).await;
                return Err(e);
            }
            let mut index = self.lock();
            index.chunks.insert(
                sri.clone(),
                ChunkUse {
                    refs: 1,
                    len: chunk.len,
                },
            );
            index.disk_bytes += chunk.len;
        }
        if keep_hot {
            self.hot.insert(sri, data);
        }
        Ok(chunk)
    }

    /// Gives back references taken by [`Store::write_chunk`] (a fill that failed or was not
    /// committed); chunks nobody else uses are deleted.
    pub async fn release(&self, chunks: &[ChunkRef]) {
        let candidates: Vec<Integrity> = {
            let mut index = self.lock();
            chunks
                .iter()
                .filter(|c| index.unref(&c.sri))
                .map(|c| c.sri.clone())
                .collect()
        };
        self.delete_unreferenced(candidates).await;
    }

    /// Stores `meta` (whose chunks the caller holds references on) under `meta.key`, replacing
    /// any previous entry, then evicts down to the disk budget.
    pub async fn commit(&self, meta: Meta) -> Result<Arc<Meta>, StoreError> {
        // A failed write is reported (and makes room) where it failed, once.
        let meta_ref = self.write_meta(&meta).await?;
        let meta = Arc::new(meta);
        let released = {
            let mut index = self.lock();
            let old = index.insert(meta.clone(), meta_ref.clone());
            old.map(|slot| index.release_slot(&slot))
                .unwrap_or_default()
        };
        self.delete_unreferenced(released).await;
        self.enforce_budget(Some(&meta.key)).await;
        Ok(meta)
    }

    /// Replaces the head of an existing entry (a 304 refreshed it), keeping its body chunks.
    pub async fn update_meta(&self, mut meta: Meta) -> Result<Arc<Meta>, StoreError> {
        let chunks = {
            let mut index = self.lock();
            let Some(slot) = index.entries.get(&meta.key) else {
                return Err(StoreError::Io(format!("no entry {:?} to update", meta.key)));
            };
            meta.chunks = slot.meta.chunks.clone();
            meta.body_len = slot.meta.body_len;
            // The new slot holds its own references; commit releases the old slot's.
            for c in &meta.chunks {
                if let Some(used) = index.chunks.get_mut(&c.sri) {
                    used.refs += 1;
                }
            }
            meta.chunks.clone()
        };
        let committed = self.commit(meta).await;
        if committed.is_err() {
            self.release(&chunks).await;
        }
        committed
    }

    /// Removes one entry (corrupt, purged or invalidated).
    pub async fn remove(&self, key: &str) {
        let released = {
            let mut index = self.lock();
            match index.remove(key) {
                Some(slot) => index.release_slot(&slot),
                None => return,
            }
        };
        self.remove_index_entry(key).await;
        self.delete_unreferenced(released).await;
    }

    /// Removes every variant stored under a primary key (RFC 9111 4.4 invalidation).
    pub async fn remove_primary(&self, primary: &str) -> usize {
        let keys = self.keys_of(primary);
        for key in &keys {
            self.remove(key).await;
        }
        keys.len()
    }

    /// Whether `meta` is still the entry stored under its key.
    pub fn is_current(&self, meta: &Arc<Meta>) -> bool {
        self.lock()
            .entries
            .get(&meta.key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.meta, meta))
    }

    /// Drops a chunk that failed its integrity check, from memory and disk, with every entry
    /// that uses it.
    pub async fn drop_corrupt(&self, key: &str, sri: &Integrity) {
        self.hot.invalidate(sri);
        self.remove(key).await;
        let _ = cacache::remove_hash(&self.dir, sri).await;
    }

    /// A write failed: remember it for health and metrics, and make room. A disk that filled
    /// before the budget was reached (a budget larger than the filesystem, or another user of
    /// it) teaches the store a smaller budget: 10 % below what it holds now.
    async fn write_failed(&self, error: &StoreError) {
        use std::sync::atomic::Ordering::Relaxed;
        self.writes.failures.fetch_add(1, Relaxed);
        *self.writes.last.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), error.to_string()));
        let held = self.lock().disk_bytes;
        let cap = held / 10 * 9;
        if cap < self.disk_budget() {
            tracing::warn!(error = %error, budget = cap, "cache write failed; disk budget lowered to make room");
            self.writes.cap.store(cap, Relaxed);
        } else {
            tracing::warn!(error = %error, "cache write failed");
        }
        self.enforce_budget(None).await;
    }

    fn disk_budget(&self) -> u64 {
        let cap = self.writes.cap.load(std::sync::atomic::Ordering::Relaxed);
        self.limits.disk_budget.min(cap)
    }

    /// The last failed write, if it was recent: the store may not be taking new entries.
    pub fn write_failure(&self) -> Option<WriteFailure> {
        let last = self.writes.last.lock().unwrap_or_else(|p| p.into_inner());
        let (at, error) = last.as_ref()?;
        let ago = at.elapsed();
        (ago < WRITE_FAILURE_MEMORY).then(|| WriteFailure {
            ago,
            error: error.clone(),
        })
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

    async fn write_meta(&self, meta: &Meta) -> Result<ChunkRef, StoreError> {
        let json = serde_json::to_vec(meta).map_err(|e| StoreError::Io(e.to_string()))?;
        let meta_ref = self.write_chunk(Bytes::from(json), false).await?;
        let opts = cacache::WriteOpts::new()
            .integrity(meta_ref.sri.clone())
            .size(meta_ref.len as usize);
        let key = meta.key.clone();
        let inserted = self
            .blocking(move |dir| cacache::index::insert(dir, &key, opts))
            .await;
        if let Err(e) = inserted {
            self.release(std::slice::from_ref(&meta_ref)).await;
            self.write_failed(&e).await;
            return Err(e);
        }
        Ok(meta_ref)
    }

    /// Runs cacache's synchronous API on the blocking pool, in one hop: its async API takes a
    /// hop per step (directories, temp file, each write, close).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> cacache::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| StoreError::Io(e.to_string()))?
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    async fn enforce_budget(&self, keep: Option<&str>) {
        loop {
            let victim = {
                let index = self.lock();
                if index.disk_bytes <= self.disk_budget() {
                    return;
                }
                index
                    .lru
                    .values()
                    .find(|k| Some(k.as_str()) != keep)
                    .cloned()
            };
            let Some(victim) = victim else { return };
            self.lock().evictions += 1;
            tracing::debug!(key = %victim, "evicting to stay within the disk budget");
            self.remove(&victim).await;
        }
    }

    async fn delete_unreferenced(&self, candidates: Vec<Integrity>) {
        for sri in candidates {
            let _stripe = self.stripe(&sri).lock().await;
            let gone = {
                let mut index = self.lock();
                match index.chunks.get(&sri) {
                    Some(used) if used.refs == 0 => {
                        let len = used.len;
                        index.chunks.remove(&sri);
                        index.disk_bytes = index.disk_bytes.saturating_sub(len);
                        true
                    }
                    _ => false,
                }
            };
            if gone {
                self.hot.invalidate(&sri);
                match cacache::remove_hash(&self.dir, &sri).await {
                    Ok(()) => {}
                    // Already gone (a corrupt chunk removed on read, a slice dropped twice):
                    // what deleting it was for.
                    Err(cacache::Error::IoError(e, _))
                        if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(%sri, error = %e, "cannot delete cached content"),
                }
            }
        }
    }

    async fn remove_index_entry(&self, key: &str) {
        let opts = cacache::RemoveOpts::new().remove_fully(true);
        match opts.remove(&self.dir, key).await {
            Ok(()) => {}
            // Removed already (two removals of one key racing: a replaced entry and its
            // eviction): what removing it was for.
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%key, error = %e, "cannot remove cache index entry"),
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

impl Index {
    /// Inserts an entry whose chunk references the caller already holds; returns the slot it
    /// replaced.
    fn insert(&mut self, meta: Arc<Meta>, meta_ref: ChunkRef) -> Option<Slot> {
        let key = meta.key.clone();
        let old = self.remove(&key);
        self.tick += 1;
        self.lru.insert(self.tick, key.clone());
        let (groups, group) = self.group_of(&key);
        groups.entry(group).or_default().insert(key.clone());
        self.entries.insert(
            key,
            Slot {
                meta,
                meta_ref,
                tick: self.tick,
            },
        );
        old
    }

    fn remove(&mut self, key: &str) -> Option<Slot> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.tick);
        let (groups, group) = self.group_of(key);
        if let Some(set) = groups.get_mut(&group) {
            set.remove(key);
            if set.is_empty() {
                groups.remove(&group);
            }
        }
        Some(slot)
    }

    /// Where a key is listed: slices under their object, everything else under its primary.
    fn group_of(&mut self, key: &str) -> (&mut HashMap<String, HashSet<String>>, String) {
        match key::object_of_slice(key) {
            Some(object) => (&mut self.slices, object.to_owned()),
            None => (&mut self.variants, key::primary_of(key).to_owned()),
        }
    }

    /// Drops a slot's references; returns chunks that are now unreferenced.
    fn release_slot(&mut self, slot: &Slot) -> Vec<Integrity> {
        std::iter::once(&slot.meta_ref)
            .chain(slot.meta.chunks.iter())
            .filter(|c| self.unref(&c.sri))
            .map(|c| c.sri.clone())
            .collect()
    }

    /// Drops one reference; true when none are left.
    fn unref(&mut self, sri: &Integrity) -> bool {
        match self.chunks.get_mut(sri) {
            Some(used) => {
                used.refs = used.refs.saturating_sub(1);
                used.refs == 0
            }
            None => false,
        }
    }

    fn add_ref(&mut self, sri: &Integrity, len: u64) {
        let used = self
            .chunks
            .entry(sri.clone())
            .or_insert(ChunkUse { refs: 0, len });
        if used.refs == 0 {
            self.disk_bytes += len;
        }
        used.refs += 1;
    }
}

/// Writes one chunk's content file (checked against the hash the caller computed). Without
/// a size hint cacache writes a plain file rather than a memory map: fewer syscalls and faults.
fn write_content(dir: &Path, data: &[u8], sri: Integrity) -> cacache::Result<Integrity> {
    let mut writer = cacache::WriteOpts::new()
        .integrity(sri)
        .open_hash_sync(dir)?;
    std::io::Write::write_all(&mut writer, data)
        .map_err(|e| cacache::Error::IoError(e, "writing cache content".into()))?;
    writer.commit()
}

fn read_error(sri: &Integrity, e: cacache::Error) -> StoreError {
    match e {
        cacache::Error::IntegrityError(_) | cacache::Error::SizeMismatch(..) => {
            StoreError::Corrupt(sri.clone())
        }
        cacache::Error::IoError(io, _) if io.kind() == std::io::ErrorKind::NotFound => {
            StoreError::Missing(sri.clone())
        }
        cacache::Error::EntryNotFound(..) => StoreError::Missing(sri.clone()),
        other => StoreError::Io(other.to_string()),
    }
}

/// Rebuilds the index from the cacache directory (blocking; runs at startup).
fn load_index(dir: &Path) -> Result<Index, StoreError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", dir.display())))?;
    // Half-written temporary files from a previous run are never valid content.
    let _ = std::fs::remove_dir_all(dir.join("tmp"));
    let mut listed: Vec<cacache::Metadata> =
        cacache::list_sync(dir).filter_map(Result::ok).collect();
    listed.sort_by_key(|m| m.time);
    let mut index = Index::default();
    let mut dropped = 0usize;
    for entry in listed {
        match load_entry(dir, &entry) {
            Some((meta, meta_ref)) => {
                index.add_ref(&meta_ref.sri, meta_ref.len);
                for c in &meta.chunks {
                    index.add_ref(&c.sri, c.len);
                }
                if let Some(old) = index.insert(Arc::new(meta), meta_ref) {
                    let _ = index.release_slot(&old);
                }
            }
            None => {
                dropped += 1;
                let _ = cacache::RemoveOpts::new()
                    .remove_fully(true)
                    .remove_sync(dir, &entry.key);
            }
        }
    }
    let orphans = remove_orphans(dir, &index);
    if dropped > 0 || orphans > 0 {
        tracing::warn!(
            dropped_entries = dropped,
            orphan_chunks = orphans,
            "cache store repaired at startup"
        );
    }
    tracing::info!(
        entries = index.entries.len(),
        bytes = index.disk_bytes,
        dir = %dir.display(),
        "cache store opened"
    );
    Ok(index)
}

fn load_entry(dir: &Path, entry: &cacache::Metadata) -> Option<(Meta, ChunkRef)> {
    let data = cacache::read_hash_sync(dir, &entry.integrity).ok()?;
    let meta: Meta = serde_json::from_slice(&data).ok()?;
    if meta.format != FORMAT_VERSION || meta.key != entry.key {
        return None;
    }
    let all_present = meta
        .chunks
        .iter()
        .all(|c| content_path(dir, &c.sri).is_some_and(|p| p.is_file()));
    if !all_present {
        return None;
    }
    let meta_ref = ChunkRef {
        sri: entry.integrity.clone(),
        len: data.len() as u64,
    };
    Some((meta, meta_ref))
}

/// Where cacache keeps a content hash: `content-v2/<algo>/<2 hex>/<2 hex>/<rest>`.
fn content_path(dir: &Path, sri: &Integrity) -> Option<PathBuf> {
    let (algo, hex) = sri.to_hex();
    if hex.len() < 5 {
        return None;
    }
    Some(
        dir.join("content-v2")
            .join(algo.to_string())
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(&hex[4..]),
    )
}

/// Deletes content files that no entry references.
fn remove_orphans(dir: &Path, index: &Index) -> usize {
    let wanted: HashSet<PathBuf> = index
        .chunks
        .keys()
        .filter_map(|sri| content_path(dir, sri))
        .collect();
    let mut removed = 0;
    let mut stack = vec![dir.join("content-v2")];
    while let Some(path) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in read.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if !wanted.contains(&p) && std::fs::remove_file(&p).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::meta::FORMAT_VERSION;

    fn limits(disk: u64) -> StoreLimits {
        StoreLimits {
            disk_budget: disk,
            memory_budget: 1 << 20,
        }
    }

    async fn put(store: &Store, key: &str, parts: &[&[u8]]) -> Arc<Meta> {
        let mut chunks = Vec::new();
        for p in parts {
            chunks.push(
                store
                    .write_chunk(Bytes::copy_from_slice(p), false)
                    .await
                    .unwrap(),
            );
        }
        let meta = Meta {
            format: FORMAT_VERSION,
            key: key.into(),
            status: 200,
            headers: vec![("etag".into(), "\"x\"".into())],
            request_time: 1,
            response_time: 2,
            body_len: parts.iter().map(|p| p.len() as u64).sum(),
            chunks,
            sliced: None,
            parsed: Default::default(),
        };
        store.commit(meta).await.unwrap()
    }

    #[tokio::test]
    async fn entries_survive_reopen_and_identical_chunks_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        put(&store, "a\0", &[b"same bytes", b"tail a"]).await;
        put(&store, "b\0", &[b"same bytes", b"tail b"]).await;
        let bytes = store.stats().disk_bytes;
        drop(store);
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        assert_eq!(store.stats().entries, 2);
        assert_eq!(store.stats().disk_bytes, bytes);
        let meta = store.get("b\0").unwrap();
        let first = store.read_chunk(&meta.chunks[0], false).await.unwrap();
        assert_eq!(&first[..], b"same bytes");
        // Removing one entry keeps the shared chunk for the other.
        store.remove("a\0").await;
        let meta = store.get("b\0").unwrap();
        assert!(store.read_chunk(&meta.chunks[0], false).await.is_ok());
    }

    /// A write that fails makes room by evicting; a victim chunk on the failed write's own
    /// stripe once deadlocked the store (the stripe was still held).
    #[tokio::test]
    async fn a_failed_write_makes_room_without_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        let victim = put(&store, "old\0", &[b"the oldest entry"]).await;
        put(&store, "new\0", &[b"a newer entry"]).await;
        // Bytes whose chunk falls on the victim's stripe.
        let stripe =
            |data: &[u8]| std::ptr::from_ref(store.stripe(&Integrity::from(data))) as usize;
        let target = std::ptr::from_ref(store.stripe(&victim.chunks[0].sri)) as usize;
        let data = (0u32..)
            .map(|n| format!("failing write {n}").into_bytes())
            .find(|d| stripe(d) == target)
            .unwrap();
        // Writes fail: cacache's temporary directory is a file (root ignores permissions).
        let tmp = dir.path().join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::write(&tmp, b"not a directory").unwrap();
        let written = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.write_chunk(Bytes::from(data), false),
        )
        .await
        .expect("the failed write returns instead of waiting on its own stripe");
        assert!(written.is_err());
        assert!(store.write_failure().is_some());
        assert!(store.get("old\0").is_none(), "the oldest entry made room");
    }

    #[tokio::test]
    async fn corrupt_content_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        let meta = put(&store, "k\0", &[b"precious bytes"]).await;
        let path = content_path(dir.path(), &meta.chunks[0].sri).unwrap();
        std::fs::write(&path, b"precious bytez").unwrap();
        let err = store.read_chunk(&meta.chunks[0], false).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        store.drop_corrupt("k\0", &meta.chunks[0].sri).await;
        assert!(store.get("k\0").is_none());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn least_recently_used_entries_are_evicted_over_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(8 * 1024)).await.unwrap();
        put(&store, "1\0", &[&[1u8; 2000]]).await;
        put(&store, "2\0", &[&[2u8; 2000]]).await;
        store.get("1\0"); // 1 is now more recent than 2
        put(&store, "3\0", &[&[3u8; 2000]]).await;
        put(&store, "4\0", &[&[4u8; 2000]]).await;
        assert!(store.stats().disk_bytes <= 8 * 1024);
        assert!(
            store.get("2\0").is_none(),
            "the least recently used goes first"
        );
        assert!(store.get("4\0").is_some());
        assert!(store.stats().evictions >= 1);
    }

    #[tokio::test]
    async fn hits_on_recent_entries_leave_the_recency_order_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        for i in 0..16 {
            put(&store, &format!("{i}\0"), &[format!("body {i}").as_bytes()]).await;
        }
        let order = |store: &Store| -> Vec<String> { store.lock().lru.values().cloned().collect() };
        let before = order(&store);
        assert_eq!(before.first().map(String::as_str), Some("0\0"));
        // Within the most recent eighth (2 of 16): no move.
        store.get("15\0").unwrap();
        store.get("14\0").unwrap();
        assert_eq!(order(&store), before);
        // Older entries move to the recent end, through get and through find.
        store.get("0\0").unwrap();
        let found = store.find("1", |key, _| key == "1\0").unwrap();
        assert_eq!(found.key, "1\0");
        let after = order(&store);
        assert_eq!(after.len(), 16);
        assert_eq!(after[0], "2\0", "the least recently used is now 2");
        assert_eq!(&after[14..], ["0\0", "1\0"]);
    }

    #[tokio::test]
    async fn released_fill_chunks_and_orphans_leave_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        let c = store
            .write_chunk(Bytes::from_static(b"half a fill"), false)
            .await
            .unwrap();
        let path = content_path(dir.path(), &c.sri).unwrap();
        assert!(path.exists());
        store.release(&[c]).await;
        assert!(!path.exists());
        assert_eq!(store.stats().disk_bytes, 0);
        // A chunk written before a crash, never committed, is removed at the next start.
        let c = store
            .write_chunk(Bytes::from_static(b"crash"), false)
            .await
            .unwrap();
        drop(store);
        let path = content_path(dir.path(), &c.sri).unwrap();
        assert!(path.exists());
        let _store = Store::open(dir.path(), limits(1 << 30)).await.unwrap();
        assert!(!path.exists());
    }
}
