//! Chunk I/O: the memory tier, reads from disk checked against their hash, writes that take a
//! reference for the caller, and deletion of chunks nobody references.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cacache::Integrity;

use super::index::ChunkUse;
use super::{Store, StoreError};
use crate::cache::meta::ChunkRef;

impl Store {
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

    pub(super) async fn delete_unreferenced(&self, candidates: Vec<Integrity>) {
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

    /// Runs cacache's synchronous API on the blocking pool, in one hop: its async API takes a
    /// hop per step (directories, temp file, each write, close).
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> cacache::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || f(&dir))
            .await
            .map_err(|e| StoreError::Task(Arc::new(e)))?
            .map_err(|e| StoreError::Io(Arc::new(e)))
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
        other => StoreError::Io(Arc::new(other)),
    }
}
