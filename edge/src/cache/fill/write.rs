//! The origin side of a fill: frames assembled into chunks, each written to the store (and,
//! for a sliced object, committed as a slice) or, passing through, held in memory.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use super::{Fill, FillError, FillLimits, RECENT_CHUNKS};
use crate::body::Body;
use crate::cache::meta::ChunkRef;

impl Fill {
    pub(super) async fn pump(
        &self,
        body: &mut Body,
        announced: Option<u64>,
        limits: FillLimits,
    ) -> Result<u64, FillError> {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FillError::Origin(Arc::from(e)))?;
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
            let slice = crate::cache::slices::slice_meta(&object, index, written.clone());
            if let Err(e) = self.store.commit(slice, self.fence).await {
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
