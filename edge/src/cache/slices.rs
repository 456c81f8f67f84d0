//! Sliced objects: a large body stored as fixed-size slices, each its own cache entry, fetched
//! from the origin with a `Range` request the first time a client needs it.
//!
//! The object entry holds the head (status 200, full length, validators) and no chunks; slice
//! `i` lives under `key::slice(object, i)`. Every slice carries the object's validators and
//! every origin answer is checked against them (strong ETag, else Last-Modified, and always the
//! length), so slices of two versions of an object are never mixed: a mismatch drops the object
//! and all its slices. Concurrent readers of one slice share one origin request. A reader asks
//! for a slice only when it gets to it, so a client that stops reading (a video player seeking)
//! stops the fetching too; the slice already under way completes and is stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::watch;

use super::meta::{self, ChunkRef, FORMAT_VERSION, Meta};
use super::range::{self, ByteRange};
use super::{Inner, Upstream, fill_request, key};
use crate::body::{self, Body, BoxError};

/// Why a slice could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(super) enum SliceError {
    #[error("the origin's object changed while it was being read; cached slices dropped")]
    Changed,
    #[error("origin answered a slice request with {0}")]
    Status(StatusCode),
    #[error("slice fetch failed: {0}")]
    Fetch(Arc<str>),
    #[error("the store cannot take the object: {0}")]
    Store(Arc<str>),
}

type SliceResult = Result<Bytes, SliceError>;

/// Slice fetches under way, by slice key *and version* ([`flight_key`]): a reader of one
/// version of an object never joins the fetch of another version's slice.
#[derive(Default)]
pub(super) struct SliceFlights {
    map: Mutex<HashMap<String, watch::Receiver<Option<SliceResult>>>>,
}

/// What a slice fetch needs to reach the origin. `parts` is `None` for objects that are not
/// sliced: a hit on them never goes to the origin, so the request is not built.
#[derive(Clone)]
pub(super) struct OriginTemplate {
    pub(super) parts: Option<Arc<http::request::Parts>>,
    pub(super) upstream: Arc<dyn Upstream>,
}

/// The entry for slice `index` of `object`, holding `chunk`.
pub(super) fn slice_meta(object: &Meta, index: u64, chunk: ChunkRef) -> Meta {
    let size = object.sliced.unwrap_or(chunk.len);
    let span = range::slice_range(index, size, object.body_len);
    let mut headers = validators(object.header_map());
    if let Ok(v) = HeaderValue::from_str(&span.content_range(object.body_len)) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    Meta {
        format: FORMAT_VERSION,
        key: key::slice(&object.key, index),
        status: StatusCode::PARTIAL_CONTENT.as_u16(),
        headers: meta::encode_headers(&headers),
        request_time: object.request_time,
        response_time: object.response_time,
        body_len: chunk.len,
        chunks: vec![chunk],
        sliced: None,
        parsed: Default::default(),
    }
}

/// The key of the fetch of slice `index` of this version of `object`: the slice key, plus the
/// validator and length that `same_version` compares. Keyed by the slice alone, a reader that
/// started on version N could be handed the slice a reader of N+1 fetched (checked against
/// N+1's validators), and send a body that ends in the next version.
fn flight_key(object: &Meta, index: u64) -> String {
    let headers = object.header_map();
    let tag = strong_etag(headers)
        .or_else(|| headers.get(header::LAST_MODIFIED))
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    format!(
        "{}\u{2}{}\u{2}{}",
        key::slice(&object.key, index),
        String::from_utf8_lossy(tag),
        object.body_len
    )
}

/// The validators that identify a version of an object.
fn validators(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out
}

/// A strong ETag, else Last-Modified: what slicing needs to tell versions apart.
pub(super) fn has_validator(headers: &HeaderMap) -> bool {
    strong_etag(headers).is_some() || headers.contains_key(header::LAST_MODIFIED)
}

fn strong_etag(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .get(header::ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
}

/// Whether a response with `theirs` headers and `total` length is the version `ours` describes.
pub(super) fn same_version(ours: &HeaderMap, len: u64, theirs: &HeaderMap, total: u64) -> bool {
    if len != total {
        return false;
    }
    match strong_etag(ours) {
        Some(etag) => strong_etag(theirs) == Some(etag),
        None => match ours.get(header::LAST_MODIFIED) {
            Some(lm) => theirs.get(header::LAST_MODIFIED) == Some(lm),
            None => false,
        },
    }
}

impl Inner {
    /// Bytes `span` of a sliced object as a body; `first` is the first touched slice,
    /// already fetched (so errors before the head can still become a miss).
    pub(super) fn slice_body(
        self: &Arc<Self>,
        object: Arc<Meta>,
        span: ByteRange,
        first: Bytes,
        (origin, budget): (OriginTemplate, super::budget::ReadBudget),
    ) -> Body {
        let size = object.sliced.unwrap_or(1).max(1);
        let state = (
            self.clone(),
            object,
            span.start,
            Some(first),
            (origin, budget),
        );
        let stream = futures_util::stream::unfold(
            state,
            move |(inner, object, pos, first, (origin, budget))| async move {
                if pos >= span.end {
                    return None;
                }
                let index = pos / size;
                let bytes = match first {
                    Some(bytes) => Ok(bytes),
                    None => {
                        budget
                            .hold(size, inner.slice(&object, index, &origin))
                            .await
                    }
                };
                inner.read_ahead(&object, index, &origin);
                match bytes {
                    Ok(bytes) => {
                        let from = (pos - index * size) as usize;
                        let to = ((span.end - index * size) as usize).min(bytes.len());
                        let part = bytes.slice(from.min(to)..to);
                        let next = pos + part.len() as u64;
                        if part.is_empty() {
                            let short = SliceError::Fetch("slice shorter than expected".into());
                            let end = (inner, object, span.end, None, (origin, budget));
                            return Some((Err(Box::new(short) as BoxError), end));
                        }
                        Some((
                            Ok(http_body::Frame::data(part)),
                            (inner, object, next, None, (origin, budget)),
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(key = %object.key.replace('\0', " "), index, error = %e, "slice unavailable; response cut short");
                        Some((
                            Err(Box::new(e) as BoxError),
                            (inner, object, span.end, None, (origin, budget)),
                        ))
                    }
                }
            },
        );
        body::boxed(http_body_util::StreamBody::new(stream))
    }

    /// Slice `index` of `object`: from the store if it is there and of this version, else from
    /// the origin (one request however many readers want it).
    pub(super) async fn slice(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        index: u64,
        origin: &OriginTemplate,
    ) -> SliceResult {
        // Twice at most: a fetch that completes between the store lookup and the flight
        // lookup has stored its slice, which the second pass reads.
        for _ in 0..2 {
            if let Some(bytes) = self.stored_slice(object, index).await {
                return Ok(bytes);
            }
            let Some(mut rx) = self.start_slice(object, index, origin) else {
                continue;
            };
            loop {
                if let Some(result) = rx.borrow_and_update().clone() {
                    return result;
                }
                if rx.changed().await.is_err() {
                    return Err(SliceError::Fetch("slice fetch abandoned".into()));
                }
            }
        }
        Err(SliceError::Fetch("slice stored but unreadable".into()))
    }

    /// The stored entry of slice `index` if it is of `object`'s version.
    fn stored_slice_meta(&self, object: &Meta, index: u64) -> Option<Arc<Meta>> {
        let stored = self.store.get(&key::slice(&object.key, index))?;
        let total = stored
            .header_map()
            .get(header::CONTENT_RANGE)
            .and_then(range::parse_content_range)
            .and_then(|(_, total)| total)?;
        same_version(
            object.header_map(),
            object.body_len,
            stored.header_map(),
            total,
        )
        .then_some(stored)
    }

    /// Slice `index` from the store, if it is there, of this version and intact.
    async fn stored_slice(&self, object: &Meta, index: u64) -> Option<Bytes> {
        let key = key::slice(&object.key, index);
        let Some(stored) = self.stored_slice_meta(object, index) else {
            // Another version's slice: it is replaced when this one is stored. (Removing it
            // here raced with the fill of the new version, whose chunk it could delete.)
            return None;
        };
        let chunk = stored.chunks.first()?;
        match self.store.read_chunk(chunk, false).await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::error!(%key, error = %e, "corrupt slice removed");
                self.store.drop_corrupt(&key, &chunk.sri).await;
                None
            }
        }
    }

    /// Starts fetching the slices after `index` that read-ahead asks for.
    fn read_ahead(self: &Arc<Self>, object: &Arc<Meta>, index: u64, origin: &OriginTemplate) {
        let size = object.sliced.unwrap_or(1).max(1);
        let slices = object.body_len.div_ceil(size);
        for next in (index + 1..slices).take(self.limits.slice_read_ahead as usize) {
            if self.stored_slice_meta(object, next).is_none() {
                let _ = self.start_slice(object, next, origin);
            }
        }
    }

    /// Joins or starts the origin fetch of one slice; `None` when it is stored meanwhile (a
    /// flight stores its slice before it leaves the map, so the check under the lock sees it).
    fn start_slice(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        index: u64,
        origin: &OriginTemplate,
    ) -> Option<watch::Receiver<Option<SliceResult>>> {
        let key = flight_key(object, index);
        let mut flights = self
            .slice_flights
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = flights.get(&key) {
            return Some(rx.clone());
        }
        if self.stored_slice_meta(object, index).is_some() {
            return None;
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.clone(), rx.clone());
        drop(flights);
        let (inner, object, origin) = (self.clone(), object.clone(), origin.clone());
        // Spawned: a slice under way completes (and is stored) even if its reader leaves.
        tokio::spawn(async move {
            let result = inner.fetch_slice(&object, index, &origin).await;
            if let Err(SliceError::Changed) = &result {
                tracing::warn!(key = %object.key.replace('\0', " "), "origin object changed; dropping its slices");
                inner
                    .store
                    .remove_primary(key::primary_of(&object.key))
                    .await;
            }
            let _ = tx.send(Some(result));
            inner.forget_slice_flight(&object, index);
        });
        Some(rx)
    }

    async fn fetch_slice(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        index: u64,
        origin: &OriginTemplate,
    ) -> SliceResult {
        let size = object.sliced.unwrap_or(1).max(1);
        let want = range::slice_range(index, size, object.body_len);
        let Some(origin_parts) = &origin.parts else {
            return Err(SliceError::Fetch(
                "no origin request for this object".into(),
            ));
        };
        let mut req: Request<Body> = fill_request(origin_parts, None);
        let value = format!("bytes={}-{}", want.start, want.end - 1);
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers_mut().insert(header::RANGE, v);
        }
        self.counters.origin_fetches.inc();
        let response = origin
            .upstream
            .fetch(req)
            .await
            .map_err(|e| SliceError::Fetch(e.to_string().into()))?;
        let (parts, body) = response.into_parts();
        let ours = object.header_map();
        match parts.status {
            StatusCode::PARTIAL_CONTENT => {
                let got = parts
                    .headers
                    .get(header::CONTENT_RANGE)
                    .and_then(range::parse_content_range);
                let Some((span, Some(total))) = got else {
                    return Err(SliceError::Fetch(
                        "206 without a usable Content-Range".into(),
                    ));
                };
                if span != want || !same_version(ours, object.body_len, &parts.headers, total) {
                    return Err(SliceError::Changed);
                }
                let bytes = read_exact(body, want.len()).await?;
                self.store_slice(object, index, bytes.clone()).await;
                Ok(bytes)
            }
            StatusCode::OK => {
                let total = super::content_length(&parts.headers).unwrap_or(u64::MAX);
                if !same_version(ours, object.body_len, &parts.headers, total) {
                    return Err(SliceError::Changed);
                }
                self.slices_from_full_body(object, index, body).await
            }
            status => Err(SliceError::Status(status)),
        }
    }

    /// The origin ignored `Range` and sent the whole object: store every slice from the
    /// stream (so it is read once), and hand back slice `wanted` as soon as it has passed.
    /// The stream is read to its end in the background, on the flight that asked for it.
    /// Long because the background reader's state (the slice being filled, the waiters) is
    /// local to it.
    async fn slices_from_full_body(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        wanted: u64,
        mut body: Body,
    ) -> SliceResult {
        let size = object.sliced.unwrap_or(1).max(1) as usize;
        let count = object.body_len.div_ceil(size as u64);
        // Later slices will pass by on this stream: readers of them wait for it instead of
        // asking the origin (which would send the whole object again).
        let mut waiting: HashMap<u64, watch::Sender<Option<SliceResult>>> = HashMap::new();
        {
            let mut flights = self
                .slice_flights
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for j in wanted + 1..count {
                let key = flight_key(object, j);
                if let std::collections::hash_map::Entry::Vacant(slot) = flights.entry(key) {
                    let (tx, rx) = watch::channel(None);
                    slot.insert(rx);
                    waiting.insert(j, tx);
                }
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel::<SliceResult>();
        let (inner, object) = (self.clone(), object.clone());
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut index = 0u64;
            let mut buf = BytesMut::with_capacity(size);
            let mut total = 0u64;
            let mut failure = None;
            'read: loop {
                let frame = match body.frame().await {
                    None => break,
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        failure = Some(crate::origin::error_chain(&*e));
                        break;
                    }
                };
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                total += data.len() as u64;
                if total > object.body_len {
                    failure = Some("origin sent more than the object's length".into());
                    break 'read;
                }
                while !data.is_empty() {
                    let take = (size - buf.len()).min(data.len());
                    buf.extend_from_slice(&data.split_to(take));
                    let last = index * size as u64 + buf.len() as u64 == object.body_len;
                    if buf.len() == size || last {
                        let bytes = std::mem::replace(&mut buf, BytesMut::with_capacity(size));
                        let bytes = bytes.freeze();
                        inner.store_slice(&object, index, bytes.clone()).await;
                        if index == wanted
                            && let Some(tx) = tx.take()
                        {
                            let _ = tx.send(Ok(bytes.clone()));
                        }
                        if let Some(waiter) = waiting.remove(&index) {
                            let _ = waiter.send(Some(Ok(bytes)));
                            inner.forget_slice_flight(&object, index);
                        }
                        index += 1;
                    }
                }
            }
            let failure = failure.unwrap_or_else(|| {
                format!("origin body ended at {total} of {} bytes", object.body_len)
            });
            let err = SliceError::Fetch(failure.into());
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(err.clone()));
            }
            for (j, waiter) in waiting {
                let _ = waiter.send(Some(Err(err.clone())));
                inner.forget_slice_flight(&object, j);
            }
        });
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(SliceError::Fetch("full-body reader stopped".into())),
        }
    }

    fn forget_slice_flight(&self, object: &Meta, index: u64) {
        self.slice_flights
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&flight_key(object, index));
    }

    async fn store_slice(&self, object: &Meta, index: u64, bytes: Bytes) {
        let chunk = match self.store.write_chunk(bytes, false).await {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store slice");
                return;
            }
        };
        if let Err(e) = self
            .store
            .commit(slice_meta(object, index, chunk.clone()))
            .await
        {
            tracing::warn!(error = %e, "cannot store slice");
            self.store.release(&[chunk]).await;
        }
    }

    /// Stores a sliced object's head from a 206 answer that told its length, plus the slice
    /// that answer carried. Returns the object entry.
    pub(super) async fn begin_sliced(
        &self,
        variant: String,
        parts: &http::response::Parts,
        total: u64,
        index: u64,
        body: Body,
        times: (SystemTime, SystemTime),
    ) -> Result<Arc<Meta>, SliceError> {
        let size = self.limits.slice_size as u64;
        let mut headers = parts.headers.clone();
        headers.remove(header::CONTENT_RANGE);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
        let object = Meta {
            format: FORMAT_VERSION,
            key: variant,
            status: StatusCode::OK.as_u16(),
            headers: meta::encode_headers(&headers),
            request_time: meta::millis(times.0),
            response_time: meta::millis(times.1),
            body_len: total,
            chunks: Vec::new(),
            sliced: Some(size),
            parsed: Default::default(),
        };
        let want = range::slice_range(index, size, total);
        let bytes = read_exact(body, want.len()).await?;
        // The slice before the head: a request that finds the head must find this slice too,
        // or it would fetch the slice again (a second origin request for one range miss).
        self.store_slice(&object, index, bytes).await;
        self.store
            .commit(object)
            .await
            .map_err(|e| SliceError::Store(e.to_string().into()))
    }
}

/// Reads a body that must be exactly `len` bytes (at most one slice: bounded memory).
async fn read_exact(mut body: Body, len: u64) -> SliceResult {
    let mut buf = BytesMut::with_capacity(len as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SliceError::Fetch(crate::origin::error_chain(&*e).into()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > len {
                return Err(SliceError::Fetch("origin sent more than the slice".into()));
            }
            buf.extend_from_slice(&data);
        }
    }
    if buf.len() as u64 != len {
        return Err(SliceError::Fetch(
            format!("origin sent {} of {len} slice bytes", buf.len()).into(),
        ));
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn versions_compare_by_strong_etag_else_last_modified_and_always_length() {
        let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
        let ours = h(&[("etag", "\"v1\""), ("last-modified", lm)]);
        assert!(same_version(&ours, 10, &h(&[("etag", "\"v1\"")]), 10));
        assert!(!same_version(&ours, 10, &h(&[("etag", "\"v1\"")]), 11));
        assert!(!same_version(
            &ours,
            10,
            &h(&[("etag", "\"v2\""), ("last-modified", lm)]),
            10
        ));
        assert!(!same_version(&ours, 10, &h(&[("etag", "W/\"v1\"")]), 10));
        let weak = h(&[("etag", "W/\"v1\""), ("last-modified", lm)]);
        assert!(same_version(&weak, 10, &h(&[("last-modified", lm)]), 10));
        assert!(!same_version(&weak, 10, &h(&[("last-modified", "x")]), 10));
        assert!(
            !same_version(&h(&[]), 10, &h(&[]), 10),
            "no validator: never the same"
        );
        assert!(has_validator(&weak) && !has_validator(&h(&[("etag", "W/\"a\"")])));
    }
}
