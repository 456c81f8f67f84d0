//! Startup: rebuilding the in-memory index from the cacache directory, dropping what a crash
//! or another format left behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cacache::Integrity;

use super::StoreError;
use super::index::Index;
use crate::cache::meta::{ChunkRef, FORMAT_VERSION, Meta};

/// Rebuilds the index from the cacache directory (blocking; runs at startup).
pub(super) fn load_index(dir: &Path) -> Result<Index, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir {
        path: dir.to_owned(),
        source: Arc::new(e),
    })?;
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
pub(super) fn content_path(dir: &Path, sri: &Integrity) -> Option<PathBuf> {
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
