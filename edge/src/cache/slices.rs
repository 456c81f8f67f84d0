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
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use prometheus_client::metrics::counter::Counter;

use super::budget::ReadBudget;
use super::coalesce::{Coalescer, Joined, Leader, Waiter};
use super::meta::{self, ChunkRef, FORMAT_VERSION, Meta};
use super::range::{self, ByteRange};
use super::store::{Fence, Scope, Store, StoreError};
use super::{Upstream, fill_request, key};
use crate::body::{self, Body, BoxError};
use crate::origin::OriginError;

/// Why a slice could not be had, by who failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(super) enum SliceError {
    /// The origin now serves another version (validators or length differ).
    #[error("the origin's object changed while it was being read; cached slices dropped")]
    Changed,
    /// The origin refused the range (a status other than 200 or 206).
    #[error("origin answered a slice request with {0}")]
    Status(StatusCode),
    /// No response head from the origin.
    #[error("slice fetch failed: {0}")]
    Origin(Arc<OriginError>),
    /// The origin's body broke off or was not the length it said.
    #[error("origin slice body failed: {0}")]
    Body(Arc<str>),
    /// The origin's answer cannot be a slice (a 206 without a usable `Content-Range`).
    #[error("origin answered a slice request with {0}")]
    Malformed(&'static str),
    /// The edge stopped fetching (its task ended without an answer).
    #[error("slice fetch abandoned")]
    Abandoned,
    /// The store holds no usable slice and no origin request could be made for it.
    #[error("no origin request for this object")]
    NoOrigin,
    /// The store failed to take the object.
    #[error("the store cannot take the object: {0}")]
    Store(Arc<StoreError>),
    /// The slice was stored, but twice could not be read back (replaced as fast as found).
    #[error("slice stored but unreadable")]
    Unreadable,
}

impl SliceError {
    /// What a client is told when the slice is its first byte: 504 for an origin timeout,
    /// 502 for anything else (the origin's fault or the store's, never the client's).
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Self::Origin(e) => e.status(),
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

type SliceResult = Result<Bytes, SliceError>;

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
        // A slice is found through its object: the tags are the object's.
        tags: Vec::new(),
        stale_since: None,
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

/// The slicer: reads sliced objects slice by slice, from the store or (one request per slice
/// however many readers want it) from the origin, and stores what it fetched.
pub(super) struct Slicer {
    store: Arc<Store>,
    flights: Coalescer<SliceResult>,
    slice_size: u64,
    read_ahead: u32,
    origin_fetches: Counter,
}

impl Slicer {
    pub(super) fn new(
        store: Arc<Store>,
        slice_size: usize,
        read_ahead: u32,
        origin_fetches: Counter,
    ) -> Self {
        Self {
            store,
            flights: Coalescer::default(),
            slice_size: slice_size as u64,
            read_ahead,
            origin_fetches,
        }
    }

    /// Fences off the slice fetches a purge of `scope` may take (see [`Coalescer::evict`]).
    pub(super) fn evict(&self, scope: &Scope) -> u64 {
        self.flights.evict(|key, _| scope.may_match(key, None))
    }

    /// Bytes `span` of a sliced object as a body; `first` is the first touched slice,
    /// already fetched (so errors before the head can still become a miss).
    pub(super) fn body(
        self: &Arc<Self>,
        object: Arc<Meta>,
        span: ByteRange,
        first: Bytes,
        (origin, budget): (OriginTemplate, ReadBudget),
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
            move |(slicer, object, pos, first, (origin, budget))| async move {
                if pos >= span.end {
                    return None;
                }
                let index = pos / size;
                let bytes = match first {
                    Some(bytes) => Ok(bytes),
                    None => {
                        budget
                            .hold(size, slicer.slice(&object, index, &origin))
                            .await
                    }
                };
                slicer.read_ahead(&object, index, &origin);
                let part = bytes.and_then(|bytes| {
                    let from = (pos - index * size) as usize;
                    let to = ((span.end - index * size) as usize).min(bytes.len());
                    let part = bytes.slice(from.min(to)..to);
                    match part.is_empty() {
                        true => Err(SliceError::Body("slice shorter than expected".into())),
                        false => Ok(part),
                    }
                });
                match part {
                    Ok(part) => {
                        let next = pos + part.len() as u64;
                        Some((
                            Ok(http_body::Frame::data(part)),
                            (slicer, object, next, None, (origin, budget)),
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(key = %key::shown(&object.key), index, error = %e, "slice unavailable; response cut short");
                        let end = (slicer, object, span.end, None, (origin, budget));
                        Some((Err(Box::new(e) as BoxError), end))
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
            let Some(waiter) = self.start_slice(object, index, origin) else {
                continue;
            };
            return waiter.outcome().await.unwrap_or(Err(SliceError::Abandoned));
        }
        Err(SliceError::Unreadable)
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
        for next in (index + 1..slices).take(self.read_ahead as usize) {
            if self.stored_slice_meta(object, next).is_none() {
                let _ = self.start_slice(object, next, origin);
            }
        }
    }

    /// Joins or starts the origin fetch of one slice; `None` when it is stored meanwhile (a
    /// fetch stores its slice before its leader leaves, so the check under the lock sees it).
    fn start_slice(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        index: u64,
        origin: &OriginTemplate,
    ) -> Option<Waiter<SliceResult>> {
        let key = flight_key(object, index);
        let stored = || self.stored_slice_meta(object, index).map(drop);
        let (leader, waiter) = match self.flights.join_or_lead(&key, stored) {
            Joined::Waiting(waiter) => return Some(waiter),
            Joined::Settled(()) => return None,
            Joined::Leading(leader, waiter) => (leader, waiter),
        };
        let (slicer, object, origin) = (self.clone(), object.clone(), origin.clone());
        // Spawned: a slice under way completes (and is stored) even if its reader leaves.
        tokio::spawn(async move {
            let result = slicer.fetch_slice(&object, index, &origin).await;
            if let Err(SliceError::Changed) = &result {
                tracing::warn!(key = %key::shown(&object.key), "origin object changed; dropping its slices");
                slicer
                    .store
                    .remove_primary(key::primary_of(&object.key))
                    .await;
            }
            leader.publish(result);
        });
        Some(waiter)
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
            return Err(SliceError::NoOrigin);
        };
        let mut req: Request<Body> = fill_request(origin_parts, None);
        let fence = self.store.fence();
        let value = format!("bytes={}-{}", want.start, want.end - 1);
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers_mut().insert(header::RANGE, v);
        }
        self.origin_fetches.inc();
        let response = origin
            .upstream
            .fetch(req)
            .await
            .map_err(|e| SliceError::Origin(Arc::new(e)))?;
        let (parts, body) = response.into_parts();
        let ours = object.header_map();
        match parts.status {
            StatusCode::PARTIAL_CONTENT => {
                let got = parts
                    .headers
                    .get(header::CONTENT_RANGE)
                    .and_then(range::parse_content_range);
                let Some((span, Some(total))) = got else {
                    return Err(SliceError::Malformed("206 without a usable Content-Range"));
                };
                if span != want || !same_version(ours, object.body_len, &parts.headers, total) {
                    return Err(SliceError::Changed);
                }
                let bytes = read_exact(body, want.len()).await?;
                self.store_slice(object, index, bytes.clone(), fence).await;
                Ok(bytes)
            }
            StatusCode::OK => {
                let total = super::content_length(&parts.headers).unwrap_or(u64::MAX);
                if !same_version(ours, object.body_len, &parts.headers, total) {
                    return Err(SliceError::Changed);
                }
                self.slices_from_full_body(object, index, body, fence).await
            }
            status => Err(SliceError::Status(status)),
        }
    }

    /// The origin ignored `Range` and sent the whole object: store every slice from the
    /// stream (so it is read once), and hand back slice `wanted` as soon as it has passed.
    /// The stream is read to its end in the background, on the fetch that asked for it;
    /// readers of later slices wait for it instead of asking the origin (which would send
    /// the whole object again).
    async fn slices_from_full_body(
        self: &Arc<Self>,
        object: &Arc<Meta>,
        wanted: u64,
        body: Body,
        fence: Fence,
    ) -> SliceResult {
        let count = object.body_len.div_ceil(object.sliced.unwrap_or(1).max(1));
        let waiting: HashMap<u64, Leader<SliceResult>> = (wanted + 1..count)
            .filter_map(|j| Some((j, self.flights.lead_if_vacant(&flight_key(object, j))?)))
            .collect();
        let (tx, rx) = tokio::sync::oneshot::channel::<SliceResult>();
        let (slicer, object) = (self.clone(), object.clone());
        tokio::spawn(async move {
            slicer
                .split_full_body(&object, body, (wanted, tx), waiting, fence)
                .await
        });
        rx.await.unwrap_or(Err(SliceError::Abandoned))
    }

    /// Cuts a whole-object body into slices, stores each, and hands each to whoever waits
    /// for it (`wanted` over `tx`, the others through their leaders).
    async fn split_full_body(
        &self,
        object: &Meta,
        mut body: Body,
        (wanted, tx): (u64, tokio::sync::oneshot::Sender<SliceResult>),
        mut waiting: HashMap<u64, Leader<SliceResult>>,
        fence: Fence,
    ) {
        let size = object.sliced.unwrap_or(1).max(1) as usize;
        let mut tx = Some(tx);
        let mut index = 0u64;
        let mut buf = BytesMut::with_capacity(size);
        let mut total = 0u64;
        let failure = loop {
            let frame = match body.frame().await {
                None => break format!("origin body ended at {total} of {} bytes", object.body_len),
                Some(Ok(frame)) => frame,
                Some(Err(e)) => break crate::origin::error_chain(&*e),
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > object.body_len {
                break "origin sent more than the object's length".into();
            }
            while !data.is_empty() {
                let take = (size - buf.len()).min(data.len());
                buf.extend_from_slice(&data.split_to(take));
                let last = index * size as u64 + buf.len() as u64 == object.body_len;
                if buf.len() == size || last {
                    let bytes = std::mem::replace(&mut buf, BytesMut::with_capacity(size));
                    let bytes = bytes.freeze();
                    self.store_slice(object, index, bytes.clone(), fence).await;
                    if index == wanted
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Ok(bytes.clone()));
                    }
                    if let Some(leader) = waiting.remove(&index) {
                        leader.publish(Ok(bytes));
                    }
                    index += 1;
                }
            }
        };
        // Whatever was not handed out by now never will be: the body is over.
        let err = SliceError::Body(failure.into());
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(err.clone()));
        }
        for leader in waiting.into_values() {
            leader.publish(Err(err.clone()));
        }
    }

    async fn store_slice(&self, object: &Meta, index: u64, bytes: Bytes, fence: Fence) {
        let chunk = match self.store.write_chunk(bytes, false).await {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store slice");
                return;
            }
        };
        if let Err(e) = self
            .store
            .commit(slice_meta(object, index, chunk.clone()), fence)
            .await
        {
            tracing::warn!(error = %e, "cannot store slice");
            self.store.release(&[chunk]).await;
        }
    }

    /// Stores a sliced object's head from a 206 answer that told its length, plus the slice
    /// that answer carried. Returns the object entry.
    pub(super) async fn begin(
        &self,
        variant: String,
        parts: &http::response::Parts,
        (total, index): (u64, u64),
        body: Body,
        (times, fence): ((SystemTime, SystemTime), Fence),
    ) -> Result<Arc<Meta>, SliceError> {
        let size = self.slice_size;
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
            tags: super::purge::surrogate_keys(&headers),
            stale_since: None,
            parsed: Default::default(),
        };
        let want = range::slice_range(index, size, total);
        let bytes = read_exact(body, want.len()).await?;
        // The slice before the head: a request that finds the head must find this slice too,
        // or it would fetch the slice again (a second origin request for one range miss).
        self.store_slice(&object, index, bytes, fence).await;
        self.store
            .commit(object, fence)
            .await
            .map_err(|e| SliceError::Store(Arc::new(e)))
    }
}

/// Reads a body that must be exactly `len` bytes (at most one slice: bounded memory).
async fn read_exact(mut body: Body, len: u64) -> SliceResult {
    let mut buf = BytesMut::with_capacity(len as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SliceError::Body(crate::origin::error_chain(&*e).into()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() as u64 + data.len() as u64 > len {
                return Err(SliceError::Body("origin sent more than the slice".into()));
            }
            buf.extend_from_slice(&data);
        }
    }
    if buf.len() as u64 != len {
        return Err(SliceError::Body(
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
