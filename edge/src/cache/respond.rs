//! The responder: a stored entry or an active fill as a response (conditionals, ranges,
//! `Age`), and the bodies that stream it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::coalesce::Coalescer;
use super::slices::Slicer;
use super::*;

/// Turns what the cache holds (an entry, or a fill under way) into the response one request
/// asked for. It never goes to the origin itself: the slicer does, for sliced objects.
pub(super) struct Responder {
    store: Arc<Store>,
    slicer: Arc<Slicer>,
    /// The whole-object flights, to read a fill under way of the version being served.
    flights: Coalescer<Landed>,
    clock: Arc<dyn Clock>,
    policy: PolicyConfig,
    range_limits: range::RangeLimits,
    memory_object_max: u64,
    /// Varies multipart boundaries between responses.
    boundary_seq: AtomicU64,
}

impl Responder {
    pub(super) fn new(
        (store, slicer, flights): (Arc<Store>, Arc<Slicer>, Coalescer<Landed>),
        clock: Arc<dyn Clock>,
        policy: PolicyConfig,
        limits: &CacheLimits,
    ) -> Self {
        Self {
            store,
            slicer,
            flights,
            clock,
            policy,
            range_limits: range_limits(limits),
            memory_object_max: limits.memory_object_max,
            boundary_seq: AtomicU64::new(0),
        }
    }

    /// Answers from a stored entry: a 304 when the client's conditional matches, else the
    /// whole body or the requested ranges of it. The first piece of every part is read (and
    /// verified, or fetched for a sliced object) before the head is sent, so a corrupt entry
    /// or a changed origin object becomes a miss (`None`) instead of a broken response.
    pub(super) async fn serve_stored(
        &self,
        lookup: &Lookup<'_>,
        meta: Arc<Meta>,
        outcome: Outcome,
        ttl: Option<Duration>,
        origin: &OriginTemplate,
    ) -> Option<Served> {
        let mut status = CacheStatus {
            outcome: Some(outcome),
            ttl: ttl.map(|t| t.as_secs() as i64),
            ..CacheStatus::default()
        };
        let stored_headers = meta.response_headers();
        let age =
            meta.facts()
                .current_age(meta.request_time(), meta.response_time(), self.clock.now());
        if policy::evaluate_conditional(lookup.method, lookup.headers, &stored_headers)
            == Conditional::NotModified
        {
            status.detail = Some("not-modified");
            let response = not_modified(&stored_headers, age);
            return Some(Served { response, status });
        }
        let answer = self.range_answer(lookup, &stored_headers, meta.status(), meta.body_len);
        // The fill under way for this key may be of a newer version than the entry this
        // request found: read from it only if it fills this very version.
        let source = match self.active_fill(&meta.key) {
            Some(fill)
                if meta.sliced.is_some()
                    && fill.object().is_some_and(|o| {
                        slices::same_version(
                            meta.header_map(),
                            meta.body_len,
                            o.header_map(),
                            o.body_len,
                        )
                    }) =>
            {
                Source::Fill(fill)
            }
            _ => Source::Stored(meta.clone()),
        };
        let mut response = self
            .respond(
                lookup,
                &source,
                stored_headers,
                meta.status(),
                meta.body_len,
                answer,
                origin,
            )
            .await?;
        set_age(response.headers_mut(), age);
        Some(Served { response, status })
    }

    /// Answers from a fill under way.
    pub(super) async fn serve_fill(
        &self,
        lookup: &Lookup<'_>,
        fill: &Arc<Fill>,
        head: &Meta,
        origin: &OriginTemplate,
    ) -> Option<Served> {
        let headers = head.response_headers();
        let facts = head.facts();
        let (lifetime, _) = facts.lifetime(head.status(), head.response_time(), &self.policy);
        let age = facts.current_age(head.request_time(), head.response_time(), self.clock.now());
        let status = CacheStatus {
            ttl: Some(lifetime.as_secs() as i64 - age.as_secs() as i64),
            ..CacheStatus::default()
        };
        if policy::evaluate_conditional(lookup.method, lookup.headers, &headers)
            == Conditional::NotModified
        {
            return Some(Served {
                response: not_modified(&headers, age),
                status,
            });
        }
        // Without a Content-Length the length is unknown until the end: ranges wait for none.
        let length = content_length(&headers);
        let answer = match length {
            Some(len) => self.range_answer(lookup, &headers, head.status(), len),
            None => RangeAnswer::Full,
        };
        let source = Source::Fill(fill.clone());
        let len = length.unwrap_or(u64::MAX);
        let response = self
            .respond(lookup, &source, headers, head.status(), len, answer, origin)
            .await;
        let mut response = response?;
        if length.is_none() {
            response.headers_mut().remove(header::CONTENT_LENGTH);
        }
        set_age(response.headers_mut(), age);
        Some(Served { response, status })
    }

    /// What the request's Range asks of a representation (Full for HEAD, non-200, If-Range
    /// mismatches and invalid or abusive ranges).
    fn range_answer(
        &self,
        lookup: &Lookup<'_>,
        stored: &HeaderMap,
        status: StatusCode,
        len: u64,
    ) -> RangeAnswer {
        if status != StatusCode::OK {
            return RangeAnswer::Full;
        }
        range::evaluate_request(
            lookup.method,
            lookup.headers,
            stored,
            len,
            self.range_limits,
        )
    }

    /// Builds the response (200, 206 single or multipart, or 416) from a body source. One
    /// decision over the range answer, each arm building its body and headers together.
    #[allow(clippy::too_many_arguments)]
    async fn respond(
        &self,
        lookup: &Lookup<'_>,
        source: &Source,
        mut headers: HeaderMap,
        status: StatusCode,
        len: u64,
        answer: RangeAnswer,
        origin: &OriginTemplate,
    ) -> Option<Response<Body>> {
        let head_only = *lookup.method == Method::HEAD;
        if status == StatusCode::OK {
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        let (status, body, body_len) = match answer {
            RangeAnswer::Full => {
                let body = match head_only {
                    true => body::empty(),
                    false => {
                        self.span(
                            source,
                            ByteRange { start: 0, end: len },
                            origin,
                            lookup.budget,
                        )
                        .await?
                    }
                };
                (status, body, len)
            }
            RangeAnswer::Single(r) => {
                let body = match head_only {
                    true => body::empty(),
                    false => self.span(source, r, origin, lookup.budget).await?,
                };
                if let Ok(v) = HeaderValue::from_str(&r.content_range(len)) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
                (StatusCode::PARTIAL_CONTENT, body, r.len())
            }
            RangeAnswer::Multi(ranges) => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let seed = self.boundary_seq.fetch_add(1, Ordering::Relaxed)
                    ^ meta::millis(SystemTime::now()).rotate_left(17);
                let plan = range::Multipart::new(&ranges, len, content_type.as_deref(), seed);
                let mut parts = Vec::new();
                for (part_head, r) in &plan.parts {
                    parts.push(body::full(part_head.clone()));
                    parts.push(self.span(source, *r, origin, lookup.budget).await?);
                }
                parts.push(body::full(plan.closing.clone()));
                if let Ok(v) = HeaderValue::from_str(&plan.content_type()) {
                    headers.insert(header::CONTENT_TYPE, v);
                }
                (StatusCode::PARTIAL_CONTENT, concat(parts), plan.body_len())
            }
            RangeAnswer::Unsatisfiable => {
                let mut response = Response::new(body::empty());
                *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let h = response.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&range::unsatisfied_range(len)) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                for name in [header::ETAG, header::LAST_MODIFIED, header::DATE] {
                    if let Some(v) = headers.get(&name) {
                        h.insert(name, v.clone());
                    }
                }
                h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                set_length(h, 0);
                return Some(response);
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        set_length(response.headers_mut(), body_len);
        Some(response)
    }

    /// Bytes `span` of a body source. The first piece is read before returning, so a failure
    /// there (corrupt chunk, changed origin object) is `None` and nothing has been sent.
    async fn span(
        &self,
        source: &Source,
        span: ByteRange,
        origin: &OriginTemplate,
        budget: &ReadBudget,
    ) -> Option<Body> {
        if span.start >= span.end {
            return Some(body::empty());
        }
        match source {
            // None when a fill passing through no longer holds these bytes: the caller
            // then fetches for itself.
            Source::Fill(fill) => fill.reader_from(span.start, span.end, budget.clone()),
            Source::Stored(meta) if meta.sliced.is_some() => {
                let size = meta.sliced.unwrap_or(1).max(1);
                let index = span.start / size;
                let first = budget.hold(size, Box::pin(self.slicer.slice(meta, index, origin)));
                match first.await {
                    Ok(first) => Some(self.slicer.body(
                        meta.clone(),
                        span,
                        first,
                        (origin.clone(), budget.clone()),
                    )),
                    Err(e) => {
                        tracing::warn!(key = %key::shown(&meta.key), error = %e, "sliced object unavailable");
                        None
                    }
                }
            }
            Source::Stored(meta) => {
                let keep_hot = meta.body_len <= self.memory_object_max;
                let (index, offset) = chunk_at(meta, span.start)?;
                let chunk = &meta.chunks[index];
                match budget
                    .hold(chunk.len, self.store.read_chunk(chunk, keep_hot))
                    .await
                {
                    Ok(first) => Some(chunk_body(
                        (self.store.clone(), budget.clone()),
                        meta.clone(),
                        (index, offset, first),
                        span,
                        keep_hot,
                    )),
                    Err(e) if !self.store.is_current(meta) => {
                        // Replaced (a new version committed) between lookup and read, which
                        // released this chunk: not corruption, and the new entry stays.
                        tracing::debug!(key = %key::shown(&meta.key), error = %e, "entry replaced while being read");
                        None
                    }
                    Err(e) => {
                        tracing::error!(key = %key::shown(&meta.key), error = %e, "corrupt cache entry removed");
                        Box::pin(self.store.drop_corrupt(&meta.key, &chunk.sri)).await;
                        None
                    }
                }
            }
        }
    }

    /// The fill under way for a key, if its flight is filling.
    fn active_fill(&self, key: &str) -> Option<Arc<Fill>> {
        match self.flights.peek(key)? {
            Landed::Fill { fill, .. } if fill.usable() => Some(fill),
            _ => None,
        }
    }
}

/// The range rules of the config.
pub(super) fn range_limits(limits: &CacheLimits) -> range::RangeLimits {
    range::RangeLimits {
        max_ranges: limits.max_ranges,
        ..range::RangeLimits::default()
    }
}

/// Where a response's bytes come from.
enum Source {
    Stored(Arc<Meta>),
    Fill(Arc<Fill>),
}

/// The chunk holding byte `offset` of a stored (unsliced) body, and the offset inside it.
fn chunk_at(meta: &Meta, offset: u64) -> Option<(usize, u64)> {
    let mut start = 0u64;
    for (i, chunk) in meta.chunks.iter().enumerate() {
        if offset < start + chunk.len {
            return Some((i, offset - start));
        }
        start += chunk.len;
    }
    None
}

/// Bodies one after the other.
fn concat(parts: Vec<Body>) -> Body {
    let streams = parts.into_iter().map(http_body_util::BodyStream::new);
    let stream = futures_util::stream::iter(streams).flatten();
    body::boxed(http_body_util::StreamBody::new(stream))
}

/// A streaming body over bytes `span` of an entry's chunks; `first` is (index, offset in it,
/// bytes) of the chunk the span starts in, already read.
fn chunk_body(
    io: (Arc<Store>, ReadBudget),
    meta: Arc<Meta>,
    first: (usize, u64, bytes::Bytes),
    span: ByteRange,
    keep_hot: bool,
) -> Body {
    let (index, offset, bytes) = first;
    let chunk_start = span.start - offset;
    let state = (Arc::new(io), meta, index, chunk_start, Some(bytes));
    let stream = futures_util::stream::unfold(
        state,
        move |(io, meta, i, start, first)| async move {
            let (store, budget) = &*io;
            if start >= span.end {
                return None;
            }
            let chunk = meta.chunks.get(i)?.clone();
            let bytes = match first {
                Some(bytes) => bytes,
                None => match budget
                    .hold(chunk.len, store.read_chunk(&chunk, keep_hot))
                    .await
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        // Bytes already sent cannot be taken back; the client sees a truncated
                        // response (the length does not match) and the entry is gone for the next
                        // request.
                        tracing::error!(key = %key::shown(&meta.key), error = %e, "corrupt cache entry removed mid-response");
                        store.drop_corrupt(&meta.key, &chunk.sri).await;
                        let end = span.end;
                        return Some((
                            Err(Box::new(e) as body::BoxError),
                            (io, meta, i, end, None),
                        ));
                    }
                },
            };
            let from = span.start.saturating_sub(start) as usize;
            let to = ((span.end - start) as usize).min(bytes.len());
            let part = bytes.slice(from.min(to)..to);
            let next = start + chunk.len;
            Some((
                Ok(http_body::Frame::data(part)),
                (io, meta, i + 1, next, None),
            ))
        },
    );
    body::boxed(http_body_util::StreamBody::new(stream))
}

fn not_modified(stored: &HeaderMap, age: Duration) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    // RFC 9110 15.4.5: the fields a 200 would have sent that describe the representation.
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for value in stored.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    set_age(response.headers_mut(), age);
    response
}

fn set_age(headers: &mut HeaderMap, age: Duration) {
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
}
