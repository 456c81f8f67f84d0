//! Entries: committing a meta over the chunks a fill wrote, refreshing one after a 304, and
//! removing entries (purged, invalidated, corrupt).

use std::sync::Arc;

use bytes::Bytes;
use cacache::Integrity;

use super::{Fence, Store, StoreError};
use crate::cache::meta::{ChunkRef, Meta};

impl Store {
    /// Stores `meta` (whose chunks the caller holds references on) under `meta.key`, replacing
    /// any previous entry, then evicts down to the disk budget. `fence` was taken before the
    /// response was asked for: a purge that matches it since refuses it ([`StoreError::Purged`]).
    pub(crate) async fn commit(&self, meta: Meta, fence: Fence) -> Result<Arc<Meta>, StoreError> {
        // Checked first so that a refused entry costs no write; again under the lock, where
        // a purge cannot slip in between.
        Self::check_fence(&self.lock(), &meta, fence)?;
        // A failed write is reported (and makes room) where it failed, once.
        let meta_ref = self.write_meta(&meta).await?;
        let meta = Arc::new(meta);
        let released = {
            let mut index = self.lock();
            match Self::check_fence(&index, &meta, fence) {
                Ok(()) => {
                    let old = index.insert(meta.clone(), meta_ref.clone());
                    Ok(old
                        .map(|slot| index.release_slot(&slot))
                        .unwrap_or_default())
                }
                Err(e) => Err((e, index.unref(&meta_ref.sri))),
            }
        };
        let released = match released {
            Ok(released) => released,
            Err((e, unreferenced)) => {
                // The disk index now names the refused meta: drop that line (an older entry
                // of this key is then served until a restart, and not after: safe).
                self.remove_index_entry(&meta.key).await;
                if unreferenced {
                    self.delete_unreferenced(vec![meta_ref.sri]).await;
                }
                return Err(e);
            }
        };
        self.delete_unreferenced(released).await;
        self.enforce_budget(Some(&meta.key)).await;
        Ok(meta)
    }

    /// Replaces the head of an existing entry (a 304 refreshed it), keeping its body chunks.
    pub(crate) async fn update_meta(
        &self,
        mut meta: Meta,
        fence: Fence,
    ) -> Result<Arc<Meta>, StoreError> {
        let chunks = {
            let mut index = self.lock();
            let Some(slot) = index.entries.get(&meta.key) else {
                return Err(StoreError::NoEntry(meta.key));
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
        let committed = self.commit(meta, fence).await;
        if committed.is_err() {
            self.release(&chunks).await;
        }
        committed
    }

    pub(super) async fn write_meta(&self, meta: &Meta) -> Result<ChunkRef, StoreError> {
        let json = serde_json::to_vec(meta).map_err(|e| StoreError::EncodeMeta(Arc::new(e)))?;
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

    /// Drops a chunk that failed its integrity check, from memory and disk, with every entry
    /// that uses it.
    pub async fn drop_corrupt(&self, key: &str, sri: &Integrity) {
        self.hot.invalidate(sri);
        self.remove(key).await;
        let _ = cacache::remove_hash(&self.dir, sri).await;
    }

    pub(super) async fn remove_index_entry(&self, key: &str) {
        let opts = cacache::RemoveOpts::new().remove_fully(true);
        match opts.remove(&self.dir, key).await {
            Ok(()) => {}
            // Removed already (two removals of one key racing: a replaced entry and its
            // eviction): what removing it was for.
            Err(cacache::Error::IoError(e, _)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%key, error = %e, "cannot remove cache index entry"),
        }
    }
}
