//! Misses and revalidation: which flight a miss joins, range discovery, refreshes, stale
//! rules (RFC 5861) and passing a request through uncached.

use super::*;

impl Inner {
    /// No stored variant matches: fetch, coalesced with concurrent misses for the resource,
    /// unless it recently proved not storable (then each request goes alone).
    pub(super) async fn miss(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        primary: &str,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
        discover: Option<u64>,
    ) -> Served {
        let vary_miss = !self.store.variants(primary).is_empty();
        let outcome = if vary_miss {
            Outcome::VaryMiss
        } else {
            Outcome::UriMiss
        };
        let hit_for_pass = self.passes.contains_key(primary);
        let key = if hit_for_pass {
            // A key no other request shares: no coalescing, but still stored if it has
            // become storable.
            let n = self
                .pass_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{primary}\0\0pass-{n}")
        } else {
            match self
                .store
                .variants(primary)
                .first()
                .and_then(|v| self.store.get(v))
            {
                // Coalesce on the variant this request would get under the stored Vary.
                Some(existing) => self.variant_for(lookup, &existing),
                None => key::variant(primary, ""),
            }
        };
        let flight = FlightSpec {
            key,
            stale: None,
            outcome,
            discover,
            moved: false,
        };
        let mut served = self
            .clone()
            .fetch(lookup, flight, origin_req, upstream)
            .await;
        if hit_for_pass && served.status.detail.is_none() {
            served.status.detail = Some("hit-for-pass");
        }
        served
    }

    /// The stored variant matching the request's Vary values. Its key is the entry's `key`.
    pub(super) fn find(&self, primary: &str, req: &HeaderMap) -> Option<Arc<Meta>> {
        self.store
            .find(primary, |variant, meta| match &meta.facts().vary {
                Vary::None => key::is_variant(variant, primary, ""),
                Vary::Fields(fields) => {
                    key::is_variant(variant, primary, &policy::vary_key(fields, req))
                }
                Vary::Star => false,
            })
    }

    pub(super) fn freshness(&self, req: &HeaderMap, meta: &Meta) -> Freshness {
        let now = self.clock.now();
        let freshness = policy::stored_freshness_until(
            req,
            meta.facts(),
            meta.status(),
            (meta.request_time(), meta.response_time()),
            (now, meta.stale_since.map(meta::from_millis)),
            &self.policy,
        );
        if !self.suspect.load(std::sync::atomic::Ordering::Relaxed) {
            return freshness;
        }
        // The control plane is catching up on purges this edge may have missed: nothing is
        // served before the origin confirms it (or fails, where stale-if-error allows it).
        match freshness {
            Freshness::Fresh { .. } => match policy::stored_freshness_until(
                req,
                meta.facts(),
                meta.status(),
                (meta.request_time(), meta.response_time()),
                (now, Some(now)),
                &self.policy,
            ) {
                Freshness::Stale { if_error, .. } => Freshness::Stale {
                    staleness: Duration::ZERO,
                    while_revalidate: false,
                    if_error,
                },
                fresh => fresh,
            },
            stale => stale,
        }
    }

    /// A range miss was answered with 206: learn the object's length from Content-Range and
    /// store it sliced, or, when the slice held the whole object, hand it back as a 200.
    pub(super) async fn discovered(
        &self,
        primary: &str,
        index: u64,
        client: &HeaderMap,
        parts: &mut http::response::Parts,
        body: Body,
        (times, fence): ((SystemTime, SystemTime), Fence),
    ) -> Discovery {
        let size = self.limits.slice_size as u64;
        let parsed = parts
            .headers
            .get(header::CONTENT_RANGE)
            .and_then(range::parse_content_range);
        let Some((span, Some(total))) = parsed else {
            return Discovery::pass(parts.status);
        };
        if span != range::slice_range(index, size, total) {
            return Discovery::pass(parts.status);
        }
        if index == 0 && total <= size {
            parts.status = StatusCode::OK;
            parts.headers.remove(header::CONTENT_RANGE);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            return Discovery::Whole(body);
        }
        let as_whole = storable(&Method::GET, client, StatusCode::OK, &parts.headers);
        if as_whole.is_err()
            || !slices::has_validator(&parts.headers)
            || total > self.limits.max_object_size
        {
            return Discovery::pass(parts.status);
        }
        let variant = match policy::vary(&parts.headers) {
            Vary::Fields(fields) => key::variant(primary, &policy::vary_key(&fields, client)),
            _ => key::variant(primary, ""),
        };
        match self
            .slicer
            .begin(variant, parts, (total, index), body, (times, fence))
            .await
        {
            Ok(object) => Discovery::Landed(Landed::Stored {
                meta: object,
                fwd: Some(StatusCode::PARTIAL_CONTENT),
            }),
            // The store could not take it (a full disk): every request, the one that asked
            // included, fetches its own range, uncached. An origin failure mid-slice is an
            // error like any other.
            Err(SliceError::Store(why)) => {
                tracing::debug!(%why, "sliced object not stored; ranges pass through");
                Discovery::pass(parts.status)
            }
            Err(e) => Discovery::Landed(Landed::Failed {
                status: e.status(),
                message: e.to_string().into(),
            }),
        }
    }

    /// How a range request for an unknown object is fetched: the slice a single `a-b` or `a-`
    /// starts in, the suffix range as it is, or (anything else) the whole object.
    pub(super) fn discovery_slice(&self, headers: &HeaderMap) -> RangeMiss {
        let Some(value) = headers.get(header::RANGE) else {
            return RangeMiss::Whole;
        };
        let Some(spec) = value.to_str().ok().map(str::trim) else {
            return RangeMiss::Whole;
        };
        let Some(spec) = spec.get(6..).filter(|_| {
            spec.get(..6)
                .is_some_and(|u| u.eq_ignore_ascii_case("bytes="))
        }) else {
            return RangeMiss::Whole;
        };
        if spec.contains(',') {
            return RangeMiss::Whole;
        }
        let limits = respond::range_limits(&self.limits);
        match range::evaluate(Some(value), u64::MAX, limits) {
            RangeAnswer::Single(_) if spec.trim_start().starts_with('-') => RangeMiss::Suffix,
            RangeAnswer::Single(r) => RangeMiss::Slice(r.start / self.limits.slice_size as u64),
            _ => RangeMiss::Whole,
        }
    }

    pub(super) async fn refresh(
        &self,
        stale: &Meta,
        not_modified: &HeaderMap,
        (request_time, response_time): (SystemTime, SystemTime),
        fence: Fence,
    ) -> Landed {
        let merged = policy::merge_not_modified(stale.header_map(), not_modified);
        let mut meta = stale.clone();
        meta.set_headers(&merged);
        meta.tags = purge::surrogate_keys(&merged);
        // Revalidated: whatever a soft purge said is answered.
        meta.stale_since = None;
        meta.request_time = meta::millis(request_time);
        meta.response_time = meta::millis(response_time);
        match self.store.update_meta(meta.clone(), fence).await {
            Ok(updated) => Landed::Refreshed(updated),
            // The entry was evicted meanwhile: still answer from the refreshed head.
            Err(_) => Landed::Refreshed(Arc::new(meta)),
        }
    }

    pub(super) fn within_size(&self, headers: &HeaderMap) -> Result<(), NotStorable> {
        match content_length(headers) {
            Some(n) if n > self.limits.max_object_size => Err(NotStorable::Status),
            _ => Ok(()),
        }
    }

    pub(super) fn variant_for(&self, lookup: &Lookup<'_>, head: &Meta) -> String {
        let primary = key::primary(lookup.scheme, lookup.host, lookup.path_and_query);
        match &head.facts().vary {
            Vary::Fields(fields) => {
                key::variant(&primary, &policy::vary_key(fields, lookup.headers))
            }
            _ => key::variant(&primary, ""),
        }
    }

    pub(super) fn revalidate_in_background(
        self: &Arc<Self>,
        key: &str,
        client: &HeaderMap,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Arc<Meta>,
    ) {
        // Starting (or joining) the flight is enough: it runs to completion on its own.
        let _ = self.join_or_start(key, client, origin_req, upstream, Some(stale), None);
    }

    /// Serves a stale entry because the origin failed, when stale-if-error allows it.
    pub(super) async fn stale_if_error(
        self: &Arc<Self>,
        lookup: &Lookup<'_>,
        stale: &Option<Arc<Meta>>,
        status: StatusCode,
        origin: &OriginTemplate,
    ) -> Option<Served> {
        let meta = stale.clone()?;
        let allowed = matches!(
            self.freshness(lookup.headers, &meta),
            Freshness::Stale { if_error: true, .. }
        );
        if !allowed {
            return None;
        }
        let staleness = match self.freshness(&HeaderMap::new(), &meta) {
            Freshness::Stale { staleness, .. } => staleness,
            Freshness::Fresh { .. } => Duration::ZERO,
        };
        let mut served = self
            .responder
            .serve_stored(lookup, meta, Outcome::Stale, None, origin)
            .await?;
        served.status.fwd_status = Some(status);
        served.status.ttl = Some(-(staleness.as_secs() as i64));
        served.status.detail = Some("stale-if-error");
        Some(served)
    }

    /// Forwards a request without coalescing; the response is stored if storable.
    pub(super) async fn pass(
        self: &Arc<Self>,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
        detail: &'static str,
    ) -> Served {
        let req = if detail == "range" {
            Request::from_parts(origin_req, body::empty())
        } else {
            fill_request(&origin_req, None)
        };
        let result = upstream.fetch(req).await;
        self.counters.origin_fetches.inc();
        match result {
            Ok(mut response) => {
                crate::headers::strip_hop_by_hop(response.headers_mut());
                let status = CacheStatus {
                    outcome: Some(Outcome::Bypass),
                    fwd_status: Some(response.status()),
                    detail: Some(detail),
                    ..CacheStatus::default()
                };
                Served { response, status }
            }
            Err(e) => {
                tracing::warn!(error = %e, "origin fetch failed");
                let mut served = error_response(e.status(), &e.to_string());
                served.status.outcome = Some(Outcome::Bypass);
                served
            }
        }
    }
}
