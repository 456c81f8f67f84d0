//! A fill: one origin body being written into the store while any number of clients stream
//! it.
//!
//! The fill task runs on its own, at the origin's pace, whatever its readers do: a client that
//! disconnects does not cancel it, a slow one does not stall the others. Readers follow the
//! fill by byte offset: bytes already written come from the store (or the last chunks kept in
//! memory), bytes of the chunk being assembled come straight from the origin's frames, and past
//! that a reader waits for progress. Memory per fill is bounded by about three chunks.
//!
//! A fill that cannot store (the object grows past `max_object_size` without having said its
//! length, or the store fails to write: a full disk) does not fail its readers: it *passes
//! through*. It stops writing, keeps the chunks it still has to hand out in memory, and reads
//! on from the origin only as fast as its slowest reader takes them (at most
//! [`PASS_WINDOW`] chunks ahead), so the readers it already has get the whole body while
//! nothing is stored. New requests do not join it.
//!
//! By file:
//!
//! - `mod.rs`: [`Fill`], its state, and the fill task from first frame to commit ([`Fill::run`]);
//! - `write.rs`: the origin side, frames assembled into chunks and written (or held);
//! - `pass.rs`: passing through, and the room a passing fill leaves its slowest reader;
//! - `read.rs`: the readers, each following the fill by byte offset.

mod pass;
mod read;
#[cfg(test)]
mod tests;
mod write;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

use super::meta::{ChunkRef, Meta};
use super::store::{Fence, Store, StoreError};
use crate::body::Body;

/// Why a fill did not produce an entry.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FillError {
    /// The origin's body broke off. Its error is boxed and not `Clone`, hence the `Arc`; the
    /// text carries its whole source chain, as logs show it.
    #[error("origin body failed: {}", crate::origin::error_chain(&**.0))]
    Origin(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("origin sent {got} body bytes but announced {announced}")]
    Length { announced: u64, got: u64 },
    #[error("cache write failed: {0}")]
    Store(#[source] StoreError),
    #[error("object grew past the {0}-byte maximum; not stored")]
    TooLarge(u64),
    #[error("every reader left; the rest of the sliced object is fetched when asked for")]
    Abandoned,
    /// The readers got the whole body, but it was not stored (`why`); `too_large`: because
    /// of its size, so the next request should not try again.
    #[error("passed through without storing: {why}")]
    Passed { why: String, too_large: bool },
    /// A reader's fill went away without ending (its progress channel closed). A reader holds
    /// its fill, so this is not expected; it is an error rather than a panic.
    #[error("fill abandoned")]
    Vanished,
}

/// How a fill stores what it reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillLimits {
    pub chunk_size: usize,
    pub max_object_size: u64,
    /// Keep the chunks in the memory tier too (small objects).
    pub keep_hot: bool,
    /// Stop pulling from the origin once every reader has left (a sliced object whose origin
    /// serves ranges: the rest can be fetched by range when someone asks).
    pub stop_when_unread: bool,
}

/// Shared state of one fill.
pub(crate) struct Fill {
    store: Arc<Store>,
    /// Taken before the origin was asked: a purge since then keeps this fill out of the store.
    fence: Fence,
    /// The sliced object this fill commits slices of, if it is one.
    slices: Mutex<Option<Arc<Meta>>>,
    /// Readers streaming this fill now, and whether any ever did: a sliced fill stops pulling
    /// from the origin when its last reader leaves (the slices stored so far stay).
    readers: Arc<std::sync::atomic::AtomicUsize>,
    had_readers: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    progress: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// Run once when the fill ends, before its readers get their last bytes ([`Fill::on_end`]).
    on_end: Option<Box<dyn FnOnce() + Send>>,
    /// Chunks written so far, with the offset each starts at.
    chunks: Vec<(u64, ChunkRef)>,
    /// The last chunks written, kept so readers just behind the fill skip the disk.
    recent: VecDeque<(usize, Bytes)>,
    written: u64,
    /// Frames of the chunk being assembled, starting at offset `written`.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Readers may not see bytes from here on until the fill has ended: the last frame of a
    /// body is held back until the entry is committed, so a client that has every byte can
    /// count on its next request being a hit.
    held_from: Option<u64>,
    end: Option<Result<(), FillError>>,
    /// Passing through (see the module docs): why, and the chunks still held in memory, by
    /// index, which replace the store from the switch on.
    passing: Option<String>,
    too_large: bool,
    passed: VecDeque<(usize, Bytes)>,
    /// Every chunk index that was passed (never written), for the release at the end.
    passed_indices: Vec<usize>,
    /// A pass-through ended: give the written chunks back when the fill is dropped.
    release_on_drop: bool,
    /// Where each reader is, so a passing fill drops no chunk a reader still needs.
    positions: std::collections::HashMap<u64, u64>,
    next_reader: u64,
}

impl State {
    fn available(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    /// The chunks this fill wrote to the store (passed ones never were).
    fn written_chunks(&self) -> Vec<ChunkRef> {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| self.passed_indices.binary_search(i).is_err())
            .map(|(_, (_, c))| c.clone())
            .collect()
    }
}

const RECENT_CHUNKS: usize = 2;

/// Chunks a passing fill may hold ahead of its slowest reader.
pub(crate) const PASS_WINDOW: usize = 4;

/// How long a passing fill waits for its first reader.
const FIRST_READER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Fill {
    pub(crate) fn new(store: Arc<Store>, fence: Fence) -> Arc<Self> {
        let (progress, _) = watch::channel(0);
        Arc::new(Self {
            store,
            fence,
            slices: Mutex::default(),
            readers: Arc::default(),
            had_readers: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::default(),
            progress,
        })
    }

    /// Reads the origin body to its end, writing chunks to the store, then commits `meta`
    /// (with its chunks and length filled in). On any failure every chunk written is released
    /// and no entry is created.
    ///
    /// A sliced object (`meta.sliced`) is committed first, and each chunk is committed as a
    /// slice entry as soon as it is written: a failure then keeps the whole slices already
    /// stored (each one complete and of this version), and the rest is fetched by range later.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut body: Body,
        announced: Option<u64>,
        mut meta: Meta,
        limits: FillLimits,
    ) -> Result<Arc<Meta>, FillError> {
        if meta.sliced.is_some() {
            // A clone: if the store cannot take it, the fill goes on without it.
            let object = self
                .store
                .commit(meta.clone(), self.fence)
                .await
                .map_err(FillError::Store);
            match object {
                Ok(object) => {
                    *self.slices.lock().unwrap_or_else(|p| p.into_inner()) = Some(object.clone());
                    let result = self.pump(&mut body, announced, limits).await;
                    return self.end_with(result).map(|_| object);
                }
                Err(FillError::Store(e)) => self.start_passing(e.to_string()),
                Err(e) => {
                    self.finish(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        let result = self.pump(&mut body, announced, limits).await;
        let passing = self.lock().passing.clone();
        if let Some(why) = passing {
            let result = self.end_with(result.map(|_| ()));
            // The chunks written before the switch are released when the last reader is
            // done with them (on drop), not now: a reader behind may still read them.
            self.lock().release_on_drop = true;
            let too_large = self.lock().too_large;
            return result.and(Err(FillError::Passed { why, too_large }));
        }
        let committed = match result {
            Ok(total) => {
                let chunks = self.lock().chunks.iter().map(|(_, c)| c.clone()).collect();
                meta.chunks = chunks;
                meta.body_len = total;
                self.store
                    .commit(meta, self.fence)
                    .await
                    .map_err(FillError::Store)
            }
            Err(e) => Err(e),
        };
        if let Err(FillError::Store(StoreError::Purged(_))) = &committed {
            // Fenced off by a purge: the readers that joined before it still get the whole
            // body, from the chunks written, which are released once they are done.
            self.lock().release_on_drop = true;
            self.finish(Ok(()));
            return committed;
        }
        if committed.is_err() {
            self.release_written().await;
        }
        self.finish(committed.as_ref().map(|_| ()).map_err(Clone::clone));
        committed
    }

    /// Ends the fill for its readers: a pass-through that got to the end is a success for
    /// them, whatever was (not) stored.
    fn end_with<T>(&self, result: Result<T, FillError>) -> Result<T, FillError> {
        self.finish(result.as_ref().map(|_| ()).map_err(Clone::clone));
        result
    }

    /// Gives back the chunks this fill wrote (placeholders of passed chunks are not in the
    /// store and are skipped by it).
    async fn release_written(&self) {
        let chunks = self.lock().written_chunks();
        self.store.release(&chunks).await;
    }

    /// Registers what must happen when the fill ends and before any reader gets the bytes
    /// held back until then: a client that has every byte may send its next request at once,
    /// and that request must find the entry, not a fill that is over (its flight leaves the
    /// coalescer here).
    pub(crate) fn on_end(&self, f: impl FnOnce() + Send + 'static) {
        self.lock().on_end = Some(Box::new(f));
    }

    fn finish(&self, end: Result<(), FillError>) {
        let mut state = self.lock();
        state.end = Some(end);
        let on_end = state.on_end.take();
        drop(state);
        if let Some(on_end) = on_end {
            on_end();
        }
        let mut state = self.lock();
        state.held_from = None;
        drop(state);
        self.progress.send_modify(|v| *v += 1);
    }

    /// Waits until the fill has ended; true if it committed an entry.
    #[cfg(test)]
    pub(crate) async fn finished(&self) -> bool {
        let mut rx = self.progress.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(end) = &self.lock().end {
                return end.is_ok();
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    }

    /// The sliced object this fill stores slices of (its version), once committed.
    pub(crate) fn object(&self) -> Option<Arc<Meta>> {
        self.slices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// False once the fill has failed or passes through: new readers must not start on it.
    pub(crate) fn usable(&self) -> bool {
        let state = self.lock();
        state.passing.is_none() && !matches!(state.end, Some(Err(_)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if !state.release_on_drop {
            return;
        }
        let chunks = state.written_chunks();
        if chunks.is_empty() {
            return;
        }
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { store.release(&chunks).await });
        }
    }
}
