//! The disk budget and write health: eviction down to the budget, and the smaller budget a
//! failed write teaches.

use std::sync::Mutex;

use super::{Store, StoreError};

/// The last write the store could not make, while it is recent (health reports it).
#[derive(Debug, Clone)]
pub struct WriteFailure {
    pub ago: std::time::Duration,
    pub error: String,
}

/// How long after a failed write the store reports itself as not writable.
const WRITE_FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    pub(super) failures: std::sync::atomic::AtomicU64,
    /// A budget learned from a failed write; u64::MAX: none.
    pub(super) cap: std::sync::atomic::AtomicU64,
    pub(super) last: Mutex<Option<(std::time::Instant, String)>>,
}

impl Store {
    /// A write failed: remember it for health and metrics, and make room. A disk that filled
    /// before the budget was reached (a budget larger than the filesystem, or another user of
    /// it) teaches the store a smaller budget: 10 % below what it holds now.
    pub(super) async fn write_failed(&self, error: &StoreError) {
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

    pub(super) fn disk_budget(&self) -> u64 {
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

    pub(super) async fn enforce_budget(&self, keep: Option<&str>) {
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
}
