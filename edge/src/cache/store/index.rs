//! The in-memory index: every entry's meta, the recency order eviction follows, the chunk
//! references, and the variant and slice lists of each key.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use cacache::Integrity;

use crate::cache::key;
use crate::cache::meta::{ChunkRef, Meta};

#[derive(Default)]
pub(super) struct Index {
    pub(super) entries: HashMap<String, Slot>,
    /// Recency order: tick -> key. The smallest tick is the least recently used.
    pub(super) lru: BTreeMap<u64, String>,
    pub(super) tick: u64,
    pub(super) chunks: HashMap<Integrity, ChunkUse>,
    /// Primary key -> variant keys stored for it.
    pub(super) variants: HashMap<String, HashSet<String>>,
    /// Object key -> its slice keys (kept apart so a lookup never walks a file's slices).
    pub(super) slices: HashMap<String, HashSet<String>>,
    /// Every primary key in `variants`, in order: a purge by prefix or host walks a range of
    /// it, never every key.
    pub(super) primaries: BTreeSet<String>,
    /// Surrogate key -> the variant keys whose response named it.
    pub(super) tags: HashMap<String, HashSet<String>>,
    pub(super) disk_bytes: u64,
    pub(super) evictions: u64,
    /// Recent purges, which fence fills under way.
    pub(super) purges: super::purge::PurgeLog,
}

impl Index {
    pub(super) fn touch(&mut self, key: &str) -> Option<Arc<Meta>> {
        touch(&mut self.entries, &mut self.lru, &mut self.tick, key)
    }

    /// Inserts an entry whose chunk references the caller already holds; returns the slot it
    /// replaced.
    pub(super) fn insert(&mut self, meta: Arc<Meta>, meta_ref: ChunkRef) -> Option<Slot> {
        let key = meta.key.clone();
        let old = self.remove(&key);
        self.tick += 1;
        self.lru.insert(self.tick, key.clone());
        for tag in &meta.tags {
            self.tags
                .entry(tag.clone())
                .or_default()
                .insert(key.clone());
        }
        if key::object_of_slice(&key).is_none() {
            let primary = key::primary_of(&key);
            if !self.variants.contains_key(primary) {
                self.primaries.insert(primary.to_owned());
            }
        }
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

    pub(super) fn remove(&mut self, key: &str) -> Option<Slot> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.tick);
        for tag in &slot.meta.tags {
            if let Some(set) = self.tags.get_mut(tag) {
                set.remove(key);
                if set.is_empty() {
                    self.tags.remove(tag);
                }
            }
        }
        let is_slice = key::object_of_slice(key).is_some();
        let (groups, group) = self.group_of(key);
        if let Some(set) = groups.get_mut(&group) {
            set.remove(key);
            if set.is_empty() {
                groups.remove(&group);
                if !is_slice {
                    self.primaries.remove(&group);
                }
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

    /// An object's key followed by its slices' keys (a sliced object's whole footprint).
    pub(super) fn with_slices(&self, object: &str) -> Vec<String> {
        let mut keys = vec![object.to_owned()];
        keys.extend(self.slices.get(object).into_iter().flatten().cloned());
        keys
    }

    /// Drops a slot's references; returns chunks that are now unreferenced.
    pub(super) fn release_slot(&mut self, slot: &Slot) -> Vec<Integrity> {
        std::iter::once(&slot.meta_ref)
            .chain(slot.meta.chunks.iter())
            .filter(|c| self.unref(&c.sri))
            .map(|c| c.sri.clone())
            .collect()
    }

    /// Drops one reference; true when none are left.
    pub(super) fn unref(&mut self, sri: &Integrity) -> bool {
        match self.chunks.get_mut(sri) {
            Some(used) => {
                used.refs = used.refs.saturating_sub(1);
                used.refs == 0
            }
            None => false,
        }
    }

    pub(super) fn add_ref(&mut self, sri: &Integrity, len: u64) {
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

/// Marks `key` recently used and returns its meta. An entry already among the most recent
/// eighth is left where it is: eviction takes from the other end, and a hot object would
/// otherwise move in the recency tree (and copy its key) on every hit.
pub(super) fn touch(
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

pub(super) struct Slot {
    pub(super) meta: Arc<Meta>,
    pub(super) meta_ref: ChunkRef,
    pub(super) tick: u64,
}

pub(super) struct ChunkUse {
    pub(super) refs: u32,
    pub(super) len: u64,
}
