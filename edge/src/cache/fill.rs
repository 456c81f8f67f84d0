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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use tokio::sync::watch;

use super::budget::ReadBudget;
use super::meta::{ChunkRef, Meta};
use super::store::{Store, StoreError};
use crate::body::{Body, BoxError};

/// Why a fill did not produce an entry.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FillError {
    #[error("origin body failed: {0}")]
    Origin(String),
    #[error("origin sent {got} body bytes but announced {announced}")]
    Length { announced: u64, got: u64 },
    #[error("cache write failed: {0}")]
    Store(String),
    #[error("object grew past the {0}-byte maximum; not stored")]
    TooLarge(u64),
    #[error("every reader left; the rest of the sliced object is fetched when asked for")]
    Abandoned,
    /// The readers got the whole body, but it was not stored (`why`); `too_large`: because
    /// of its size, so the next request should not try again.
    #[error("passed through without storing: {why}")]
    Passed { why: String, too_large: bool },
}

/// How a fill stores what it reads.
#[derive(Debug, Clone, Copy)]
pub struct FillLimits {
    pub chunk_size: usize,
    pub max_object_size: u64,
    /// Keep the chunks in the memory tier too (small objects).
    pub keep_hot: bool,
    /// Stop pulling from the origin once every reader has left (a sliced object whose origin
    /// serves ranges: the rest can be fetched by range when someone asks).
    pub stop_when_unread: bool,
}

/// Shared state of one fill.
pub struct Fill {
    store: Arc<Store>,
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

enum Step {
    Data(Bytes),
    /// Read a stored chunk and send bytes `skip..until` of it.
    Read(ChunkRef, usize, usize),
    Wait,
    Done,
    Failed(FillError),
}

const RECENT_CHUNKS: usize = 2;

/// Chunks a passing fill may hold ahead of its slowest reader.
pub const PASS_WINDOW: usize = 4;

/// How long a passing fill waits for its first reader.
const FIRST_READER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Fill {
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let (progress, _) = watch::channel(0);
        Arc::new(Self {
            store,
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
    pub async fn run(
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
                .commit(meta.clone())
                .await
                .map_err(|e| FillError::Store(e.to_string()));
            match object {
                Ok(object) => {
                    *self.slices.lock().unwrap_or_else(|p| p.into_inner()) = Some(object.clone());
                    let result = self.pump(&mut body, announced, limits).await;
                    return self.end_with(result).map(|_| object);
                }
                Err(FillError::Store(why)) => self.start_passing(why),
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
                    .commit(meta)
                    .await
                    .map_err(|e| FillError::Store(e.to_string()))
            }
            Err(e) => Err(e),
        };
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

    /// Stops storing; what is still to be handed out stays in memory (module docs).
    fn start_passing(&self, why: String) {
        let mut state = self.lock();
        if state.passing.is_none() {
            tracing::debug!(why = %why, "fill passes through without storing");
            state.passing = Some(why);
        }
    }

    /// Waits until no reader needs the oldest chunk held in memory, or every reader has
    /// gone (then `false`: there is no one to pass the body to). Before the first reader has
    /// come (the request that started the fill joins it just after it starts), it waits for
    /// one, but not for ever: a client that left at once has no one to pass the body to.
    async fn make_room(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut rx = self.progress.subscribe();
        let first_reader_by = tokio::time::Instant::now() + FIRST_READER_WAIT;
        enum Next {
            Room(bool),
            AwaitFirstReader,
            AwaitProgress,
        }
        loop {
            rx.borrow_and_update();
            let next = {
                let mut state = self.lock();
                if state.positions.is_empty() {
                    if self.had_readers.load(Relaxed)
                        || tokio::time::Instant::now() >= first_reader_by
                    {
                        Next::Room(false)
                    } else {
                        Next::AwaitFirstReader
                    }
                } else if state.passed.len() < PASS_WINDOW {
                    Next::Room(true)
                } else {
                    let slowest = state.positions.values().copied().min().unwrap_or(u64::MAX);
                    let (index, _) = state.passed[0];
                    let end = state
                        .chunks
                        .get(index + 1)
                        .map_or(state.written, |(start, _)| *start);
                    if slowest >= end {
                        state.passed.pop_front();
                        Next::Room(true)
                    } else {
                        Next::AwaitProgress
                    }
                }
            };
            match next {
                Next::Room(room) => return room,
                Next::AwaitFirstReader => {
                    let _ = tokio::time::timeout_at(first_reader_by, rx.changed()).await;
                }
                Next::AwaitProgress => {
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    async fn pump(
        &self,
        body: &mut Body,
        announced: Option<u64>,
        limits: FillLimits,
    ) -> Result<u64, FillError> {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FillError::Origin(crate::origin::error_chain(&*e)))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not stored
            };
            let start = total;
            total += data.len() as u64;
            if announced == Some(total) {
                self.lock().held_from = Some(start);
            }
            if announced.is_some_and(|a| total > a) {
                return Err(FillError::Length {
                    announced: announced.unwrap_or(0),
                    got: total,
                });
            }
            if total > limits.max_object_size {
                let why = FillError::TooLarge(limits.max_object_size).to_string();
                self.lock().too_large = true;
                self.start_passing(why);
            }
            self.push(data);
            while self.lock().pending_len >= limits.chunk_size {
                self.flush(limits.chunk_size, limits.keep_hot).await?;
                if limits.stop_when_unread && self.abandoned() {
                    return Err(FillError::Abandoned);
                }
            }
        }
        if let Some(announced) = announced.filter(|a| *a != total) {
            return Err(FillError::Length {
                announced,
                got: total,
            });
        }
        let rest = self.lock().pending_len;
        if rest > 0 {
            self.flush(rest, limits.keep_hot).await?;
        }
        Ok(total)
    }

    /// A sliced fill whose readers have all gone: nobody asked for the rest.
    fn abandoned(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let sliced = self
            .slices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        sliced && self.had_readers.load(Relaxed) && self.readers.load(Relaxed) == 0
    }

    /// The sliced object this fill stores slices of (its version), once committed.
    pub fn object(&self) -> Option<Arc<Meta>> {
        self.slices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// False once the fill has failed or passes through: new readers must not start on it.
    pub fn usable(&self) -> bool {
        let state = self.lock();
        state.passing.is_none() && !matches!(state.end, Some(Err(_)))
    }

    fn push(&self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.pending_len += data.len();
        state.pending.push(data);
        drop(state);
        self.progress.send_modify(|v| *v += 1);
    }

    /// Writes the first `len` pending bytes as one chunk (or, passing through, keeps it in
    /// memory once the slowest reader leaves room).
    async fn flush(&self, len: usize, keep_hot: bool) -> Result<(), FillError> {
        if self.lock().passing.is_some() && !self.make_room().await {
            return Err(FillError::Abandoned);
        }
        let data = {
            let state = self.lock();
            let mut buf = BytesMut::with_capacity(len);
            for frame in &state.pending {
                let take = (len - buf.len()).min(frame.len());
                buf.extend_from_slice(&frame[..take]);
                if buf.len() == len {
                    break;
                }
            }
            buf.freeze()
        };
        let passing = self.lock().passing.is_some();
        let mut chunk = match passing {
            true => None,
            false => match self.store.write_chunk(data.clone(), keep_hot).await {
                Ok(chunk) => Some(chunk),
                Err(e) => {
                    // A full or failing disk: the readers still get the body.
                    self.start_passing(e.to_string());
                    None
                }
            },
        };
        let object = self
            .slices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (Some(object), Some(written)) = (object, &chunk) {
            let index = self.lock().chunks.len() as u64;
            let slice = super::slices::slice_meta(&object, index, written.clone());
            if let Err(e) = self.store.commit(slice).await {
                // The slices stored so far stay; the rest is passed through.
                tracing::warn!(error = %e, "cannot store slice");
                self.store.release(std::slice::from_ref(written)).await;
                self.start_passing(e.to_string());
                chunk = None;
            }
        }
        let mut state = self.lock();
        let offset = state.written;
        let index = state.chunks.len();
        let chunk = match chunk {
            Some(chunk) => chunk,
            None => {
                // Held in memory instead; the entry in `chunks` only records the length.
                state.passed.push_back((index, data.clone()));
                state.passed_indices.push(index);
                ChunkRef {
                    sri: cacache::Integrity::from(b"".as_slice()),
                    len: len as u64,
                }
            }
        };
        state.chunks.push((offset, chunk));
        state.recent.push_back((index, data));
        if state.recent.len() > RECENT_CHUNKS {
            state.recent.pop_front();
        }
        state.written += len as u64;
        state.pending_len -= len;
        drop_prefix(&mut state.pending, len);
        drop(state);
        self.progress.send_modify(|v| *v += 1);
        Ok(())
    }

    fn finish(&self, end: Result<(), FillError>) {
        let mut state = self.lock();
        state.end = Some(end);
        state.held_from = None;
        drop(state);
        self.progress.send_modify(|v| *v += 1);
    }

    /// A body streaming this fill from its first byte.
    pub fn reader(self: &Arc<Self>) -> Body {
        self.reader_range(0, u64::MAX, ReadBudget::unlimited())
    }

    /// A body streaming bytes `start..end` of this fill as they arrive; what it reads back
    /// from the store counts against `budget`.
    pub fn reader_range(self: &Arc<Self>, start: u64, end: u64, budget: ReadBudget) -> Body {
        self.reader_from(start, end, budget)
            .unwrap_or_else(|| crate::body::boxed(http_body_util::Empty::new()))
    }

    /// Like [`Self::reader_range`], but `None` when a passing fill no longer holds the bytes
    /// from `start` on (decided under the lock that registers the reader, so no chunk it
    /// needs is dropped after the check).
    pub fn reader_from(self: &Arc<Self>, start: u64, end: u64, budget: ReadBudget) -> Option<Body> {
        use std::sync::atomic::Ordering::Relaxed;
        let id = {
            let mut state = self.lock();
            if state.passing.is_some() && start < state.written {
                let i = state.chunks.partition_point(|(s, _)| *s <= start) - 1;
                let stored = state.passed_indices.binary_search(&i).is_err();
                if !stored && !state.passed.iter().any(|(held, _)| *held == i) {
                    return None;
                }
            }
            self.readers.fetch_add(1, Relaxed);
            self.had_readers.store(true, Relaxed);
            let id = state.next_reader;
            state.next_reader += 1;
            state.positions.insert(id, start);
            id
        };
        // A passing fill may be waiting for its first reader.
        self.progress.send_modify(|_| {});
        let reader = Reader {
            fill: self.clone(),
            pos: start,
            end,
            rx: self.progress.subscribe(),
            budget,
            _count: ReaderCount(self.readers.clone()),
            id,
        };
        let stream = futures_util::stream::unfold(reader, |mut r| async move {
            r.next()
                .await
                .map(|item| (item.map(http_body::Frame::data), r))
        });
        Some(crate::body::boxed(http_body_util::StreamBody::new(stream)))
    }

    /// Waits until the fill has ended; true if it committed an entry.
    pub async fn finished(&self) -> bool {
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

    /// What `reader` gets at `pos`; records `pos` as where it is (it has taken everything
    /// before), under the lock the step takes anyway, and wakes a passing fill waiting for
    /// room when the reader moved.
    fn step(&self, reader: u64, pos: u64) -> Step {
        let (step, wake) = {
            let mut state = self.lock();
            let moved = state.positions.insert(reader, pos) != Some(pos);
            (Self::step_in(&state, pos), moved && state.passing.is_some())
        };
        if wake {
            self.progress.send_modify(|_| {});
        }
        step
    }

    fn step_in(state: &State, pos: u64) -> Step {
        let limit = state.held_from.unwrap_or(u64::MAX);
        if pos < state.written.min(limit) {
            let i = state.chunks.partition_point(|(start, _)| *start <= pos) - 1;
            let (start, chunk) = &state.chunks[i];
            let skip = (pos - start) as usize;
            let until = (limit - start).min(chunk.len) as usize;
            if let Some((_, bytes)) = state.recent.iter().find(|(idx, _)| *idx == i) {
                return Step::Data(bytes.slice(skip..until));
            }
            if let Some((_, bytes)) = state.passed.iter().find(|(idx, _)| *idx == i) {
                return Step::Data(bytes.slice(skip..until));
            }
            if state.passed_indices.binary_search(&i).is_ok() {
                // Never stored, and no longer held: this reader joined too late.
                return Step::Failed(FillError::Passed {
                    why: "the bytes asked for are gone".into(),
                    too_large: false,
                });
            }
            return Step::Read(chunk.clone(), skip, until);
        }
        if pos < state.available().min(limit) {
            let mut offset = state.written;
            for frame in &state.pending {
                let end = offset + frame.len() as u64;
                if pos < end {
                    let until = (end.min(limit) - offset) as usize;
                    return Step::Data(frame.slice((pos - offset) as usize..until));
                }
                offset = end;
            }
        }
        match &state.end {
            Some(Ok(())) => Step::Done,
            Some(Err(e)) => Step::Failed(e.clone()),
            None => Step::Wait,
        }
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

/// Removes `len` bytes from the front of a frame list.
fn drop_prefix(frames: &mut Vec<Bytes>, mut len: usize) {
    let mut whole = 0;
    for frame in frames.iter_mut() {
        if len >= frame.len() {
            len -= frame.len();
            whole += 1;
        } else {
            *frame = frame.slice(len..);
            break;
        }
    }
    frames.drain(..whole);
}

struct Reader {
    fill: Arc<Fill>,
    pos: u64,
    end: u64,
    rx: watch::Receiver<u64>,
    budget: ReadBudget,
    _count: ReaderCount,
    /// This reader's slot in the fill's positions.
    id: u64,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.fill.lock().positions.remove(&self.id);
        // A passing fill may be waiting for this reader.
        self.fill.progress.send_modify(|_| {});
    }
}

/// Counts a reader out when its body is dropped (finished or abandoned by the client).
struct ReaderCount(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ReaderCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            if self.pos >= self.end {
                return None;
            }
            self.rx.borrow_and_update();
            let data = match self.fill.step(self.id, self.pos) {
                Step::Data(bytes) => bytes,
                Step::Read(chunk, skip, until) => {
                    let read = self.fill.store.read_chunk(&chunk, false);
                    match self.budget.hold(chunk.len, read).await {
                        Ok(bytes) => bytes.slice(skip.min(bytes.len())..until.min(bytes.len())),
                        Err(e) => return Some(Err(Box::new(e) as BoxError)),
                    }
                }
                Step::Done => return None,
                Step::Failed(e) => return Some(Err(Box::new(e))),
                Step::Wait => {
                    if self.rx.changed().await.is_err() {
                        let gone = StoreError::Io("fill abandoned".into());
                        return Some(Err(Box::new(gone)));
                    }
                    continue;
                }
            };
            let data = data.slice(..data.len().min((self.end - self.pos) as usize));
            self.pos += data.len() as u64;
            return Some(Ok(data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::meta::FORMAT_VERSION;
    use crate::cache::store::StoreLimits;

    fn meta() -> Meta {
        Meta {
            format: FORMAT_VERSION,
            key: "k\0".into(),
            status: 200,
            headers: Vec::new(),
            request_time: 0,
            response_time: 0,
            body_len: 0,
            chunks: Vec::new(),
            sliced: None,
            parsed: Default::default(),
        }
    }

    fn limits() -> FillLimits {
        FillLimits {
            chunk_size: 4096,
            max_object_size: 1 << 30,
            keep_hot: false,
            stop_when_unread: false,
        }
    }

    async fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            disk_budget: 1 << 30,
            memory_budget: 1 << 20,
        };
        let store = Store::open(dir.path(), limits).await.unwrap();
        (dir, store)
    }

    /// A body fed frame by frame by the test, so readers can join mid-fill.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|item| (item.map(http_body::Frame::data), rx))
        });
        (
            tx,
            crate::body::boxed(http_body_util::StreamBody::new(stream)),
        )
    }

    async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn early_and_late_readers_get_every_byte_and_the_entry_is_stored() {
        let (_dir, store) = store().await;
        let fill = Fill::new(store.clone());
        let (tx, body) = channel_body();
        let expected: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let early = tokio::spawn(collect(fill.reader()));
        let task = tokio::spawn(fill.clone().run(body, Some(20_000), meta(), limits()));
        for piece in expected.chunks(3000).take(4) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
        }
        // Joins after several chunks were written to the store.
        tokio::task::yield_now().await;
        let late = tokio::spawn(collect(fill.reader()));
        for piece in expected.chunks(3000).skip(4) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
        }
        drop(tx);
        let stored = task.await.unwrap().unwrap();
        assert_eq!(early.await.unwrap().unwrap(), expected);
        assert_eq!(late.await.unwrap().unwrap(), expected);
        assert_eq!(collect(fill.reader()).await.unwrap(), expected);
        assert_eq!(stored.body_len, 20_000);
        assert_eq!(stored.chunks.len(), 5);
        assert!(store.get("k\0").is_some());
        assert!(fill.finished().await);
    }

    #[tokio::test]
    async fn a_broken_origin_body_fails_readers_and_stores_nothing() {
        let (dir, store) = store().await;
        let fill = Fill::new(store.clone());
        let (tx, body) = channel_body();
        let reader = tokio::spawn(collect(fill.reader()));
        let task = tokio::spawn(fill.clone().run(body, Some(50_000), meta(), limits()));
        tx.send(Ok(Bytes::from(vec![7u8; 10_000]))).await.unwrap();
        tx.send(Err("connection reset".into())).await.unwrap();
        assert!(matches!(task.await.unwrap(), Err(FillError::Origin(_))));
        assert!(reader.await.unwrap().is_err());
        assert!(store.get("k\0").is_none());
        assert_eq!(store.stats().disk_bytes, 0);
        let content = walk(&dir.path().join("content-v2"));
        assert_eq!(content, 0, "no chunk files may remain");
    }

    #[tokio::test]
    async fn a_short_body_is_not_stored() {
        let (_dir, store) = store().await;
        let fill = Fill::new(store.clone());
        let (tx, body) = channel_body();
        let task = tokio::spawn(fill.clone().run(body, Some(100), meta(), limits()));
        tx.send(Ok(Bytes::from_static(b"only a part")))
            .await
            .unwrap();
        drop(tx);
        assert!(matches!(
            task.await.unwrap(),
            Err(FillError::Length {
                announced: 100,
                got: 11
            })
        ));
        assert!(store.get("k\0").is_none());
    }

    fn walk(dir: &std::path::Path) -> usize {
        let Ok(read) = std::fs::read_dir(dir) else {
            return 0;
        };
        read.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }
}
