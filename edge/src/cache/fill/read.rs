//! The readers of a fill: each follows it by byte offset, from the recent chunks, the store,
//! the frames being assembled, or the chunks a passing fill holds.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::{Fill, FillError, State};
use crate::body::{Body, BoxError};
use crate::cache::budget::ReadBudget;
use crate::cache::meta::ChunkRef;

enum Step {
    Data(Bytes),
    /// Read a stored chunk and send bytes `skip..until` of it.
    Read(ChunkRef, usize, usize),
    Wait,
    Done,
    Failed(FillError),
}

impl Fill {
    /// A body streaming this fill from its first byte.
    #[cfg(test)]
    pub(crate) fn reader(self: &Arc<Self>) -> Body {
        self.reader_range(0, u64::MAX, ReadBudget::unlimited())
    }

    /// A body streaming bytes `start..end` of this fill as they arrive; what it reads back
    /// from the store counts against `budget`.
    #[cfg(test)]
    pub(crate) fn reader_range(self: &Arc<Self>, start: u64, end: u64, budget: ReadBudget) -> Body {
        self.reader_from(start, end, budget)
            .unwrap_or_else(|| crate::body::boxed(http_body_util::Empty::new()))
    }

    /// Like [`Self::reader_range`], but `None` when a passing fill no longer holds the bytes
    /// from `start` on (decided under the lock that registers the reader, so no chunk it
    /// needs is dropped after the check).
    pub(crate) fn reader_from(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        budget: ReadBudget,
    ) -> Option<Body> {
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
                        return Some(Err(Box::new(FillError::Vanished)));
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
