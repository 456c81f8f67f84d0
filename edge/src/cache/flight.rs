//! Coalescing: one origin request per key however many clients ask (`join_or_start`),
//! the flight that makes it (`fly`), and what a request does with what landed (`fetch`).

use super::*;

impl Inner {
    /// Sends the request through an existing flight for `key`, or starts one. `stale` is the
    /// stored entry being revalidated, if any. Long: one match over what the flight landed,
    /// each arm serving, passing or moving to another variant with this request's own state.
    pub(super) async fn fetch(
        self: Arc<Self>,
        lookup: &Lookup<'_>,
        flight: FlightSpec,
        origin_req: http::request::Parts,
        upstream: Arc<dyn Upstream>,
    ) -> Served {
        let FlightSpec {
            key,
            stale,
            outcome,
            discover,
            moved,
        } = flight;
        let (mut landed, leader) = self.join_or_start(
            &key,
            lookup.headers,
            &origin_req,
            &upstream,
            stale.clone(),
            discover,
        );
        let origin = OriginTemplate {
            parts: Some(Arc::new(origin_req.clone())),
            upstream: upstream.clone(),
        };
        let collapsed = leader.is_none();
        if collapsed {
            self.counters.coalesced_waits.inc();
        }
        let result = loop {
            if let Some(result) = landed.borrow_and_update().clone() {
                break result;
            }
            if landed.changed().await.is_err() {
                break Landed::Failed {
                    status: StatusCode::BAD_GATEWAY,
                    message: "origin fetch abandoned".into(),
                };
            }
        };
        let mut served = match result {
            Landed::Fill { fill, head } => {
                let own = self.variant_for(lookup, &head);
                if own != head.key {
                    // The response varies on a header this request has a different value
                    // of: it needs its own variant, through its own flight. Variants are
                    // computed from client headers on both sides, so that flight's fill is
                    // this request's variant; `moved` still bounds it to one move.
                    if moved {
                        return self.pass(origin_req, upstream, "vary-mismatch").await;
                    }
                    let flight = FlightSpec {
                        key: own,
                        stale: None,
                        outcome: Outcome::VaryMiss,
                        discover: None,
                        moved: true,
                    };
                    return Box::pin(self.fetch(lookup, flight, origin_req, upstream)).await;
                }
                let Some(mut served) = self.serve_fill(lookup, &fill, &head, &origin).await else {
                    // The fill passes through and has moved past what this request needs.
                    return self.pass(origin_req, upstream, "not-stored").await;
                };
                served.status.stored = true;
                served.status.fwd_status = Some(head.status());
                served
            }
            Landed::Stored { meta: object, fwd } => {
                let ttl = match self.freshness(lookup.headers, &object) {
                    Freshness::Fresh { ttl } => Some(ttl),
                    Freshness::Stale { .. } => None,
                };
                let Some(mut served) = self
                    .serve_stored(lookup, object, outcome, ttl, &origin)
                    .await
                else {
                    return self.pass(origin_req, upstream, "range").await;
                };
                served.status.stored = fwd.is_some();
                served.status.fwd_status = fwd;
                served
            }
            Landed::Refreshed(meta) => {
                let ttl = match self.freshness(lookup.headers, &meta) {
                    Freshness::Fresh { ttl } => Some(ttl),
                    Freshness::Stale { .. } => None,
                };
                let Some(mut served) = self.serve_stored(lookup, meta, outcome, ttl, &origin).await
                else {
                    return self.pass(origin_req, upstream, "corrupt-entry").await;
                };
                served.status.fwd_status = Some(StatusCode::NOT_MODIFIED);
                served
            }
            Landed::Pass { status } => {
                let leader_response = match leader {
                    Some(rx) => rx.await.ok(),
                    None => None,
                };
                if status.is_server_error()
                    && let Some(served) = self.stale_if_error(lookup, &stale, status, &origin).await
                {
                    return served;
                }
                match leader_response {
                    Some(response) => Served {
                        response,
                        status: CacheStatus {
                            fwd_status: Some(status),
                            ..CacheStatus::default()
                        },
                    },
                    // Waiters of a non-storable response each ask the origin themselves.
                    None => {
                        let detail = if discover.is_some() {
                            "range"
                        } else {
                            "collapsed-pass"
                        };
                        return self.pass(origin_req, upstream, detail).await;
                    }
                }
            }
            Landed::Failed { status, message } => {
                if let Some(served) = self.stale_if_error(lookup, &stale, status, &origin).await {
                    return served;
                }
                error_response(status, &message)
            }
        };
        served.status.outcome = Some(outcome);
        served.status.collapsed = collapsed;
        served
    }

    /// Joins the flight for `key`, or starts one. The starter also gets a channel on which a
    /// non-storable response (which only it can use) is handed over.
    #[allow(clippy::type_complexity)]
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        key: &str,
        client: &HeaderMap,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Option<Arc<Meta>>,
        discover: Option<u64>,
    ) -> (
        tokio::sync::watch::Receiver<Option<Landed>>,
        Option<tokio::sync::oneshot::Receiver<Response<Body>>>,
    ) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(key) {
            return (flight.landed.clone(), None);
        }
        if stale.is_none()
            && let Some(meta) = self.store.get(key)
            && matches!(self.freshness(client, &meta), Freshness::Fresh { .. })
        {
            // A flight for this key landed and ended after this request looked it up: serve
            // what it stored rather than ask the origin again.
            let (_tx, rx) = tokio::sync::watch::channel(Some(Landed::Stored { meta, fwd: None }));
            return (rx, None);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let (pass_tx, pass_rx) = tokio::sync::oneshot::channel();
        flights.insert(key.to_owned(), Arc::new(Flight { landed: rx.clone() }));
        drop(flights);
        let mut req = fill_request(origin_req, stale.as_deref());
        if let Some(index) = discover {
            let size = self.limits.slice_size as u64;
            let value = format!("bytes={}-{}", index * size, (index + 1) * size - 1);
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(header::RANGE, v);
            }
        }
        let this = self.clone();
        let key = key.to_owned();
        let upstream = upstream.clone();
        // The variant is computed from the client's headers, never from the origin request
        // (which lacks hop-by-hop fields and has proxy headers added): every waiter computes
        // its own variant from its client headers, so both sides must use the same source.
        let client = client.clone();
        // Spawned so that the fetch outlives the request that started it (a client abort must
        // not strand the requests waiting on this flight).
        tokio::spawn(async move {
            let flight = FlightRequest {
                req,
                client,
                stale,
                discover,
            };
            this.fly(&key, flight, upstream, tx, pass_tx).await;
            this.flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
        (rx, Some(pass_rx))
    }

    /// The flight itself: one origin request, its outcome published to every waiter, and a
    /// fill run to completion when the response is storable. Long (to be split with the
    /// coalescer type): request, at most one unconditional retry after a 304, then store or
    /// pass, every step publishing on the same `landed` channel.
    pub(super) async fn fly(
        self: &Arc<Self>,
        key: &str,
        flight: FlightRequest,
        upstream: Arc<dyn Upstream>,
        landed: tokio::sync::watch::Sender<Option<Landed>>,
        pass_tx: tokio::sync::oneshot::Sender<Response<Body>>,
    ) {
        let FlightRequest {
            req,
            client,
            stale,
            discover,
        } = flight;
        let method = Method::GET;
        let req_headers = req.headers().clone();
        let (req_parts, _) = req.into_parts();
        // At most two origin requests: the second only when a revalidation's 304 selects no
        // stored response, and then without validators (so it cannot be a 304 again).
        let mut conditional = stale.is_some();
        let (request_time, response_time, mut parts, body) = loop {
            let mut parts = req_parts.clone();
            if !conditional {
                parts.headers.remove(header::IF_NONE_MATCH);
                parts.headers.remove(header::IF_MODIFIED_SINCE);
            }
            let request_time = self.clock.now();
            self.counters.origin_fetches.inc();
            let response = match upstream
                .fetch(Request::from_parts(parts, body::empty()))
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    tracing::warn!(key = %key.replace('\0', " "), error = %e, "origin fetch failed");
                    let _ = landed.send(Some(Landed::Failed {
                        status: e.status(),
                        message: e.to_string().into(),
                    }));
                    return;
                }
            };
            let response_time = self.clock.now();
            let (mut parts, body) = response.into_parts();
            crate::headers::strip_hop_by_hop(&mut parts.headers);
            ensure_date(&mut parts.headers, response_time);
            if parts.status != StatusCode::NOT_MODIFIED {
                break (request_time, response_time, parts, body);
            }
            // RFC 9111 4.3.3/4.3.4: a 304 answers our own conditional request; it is never
            // passed to a client, which asked for the resource, not for our validation.
            match stale.as_ref().filter(|_| conditional) {
                Some(stale) if policy::not_modified_selects(stale.header_map(), &parts.headers) => {
                    let result = self
                        .refresh(stale, &parts.headers, request_time, response_time)
                        .await;
                    let _ = landed.send(Some(result));
                    return;
                }
                Some(_) => {
                    tracing::debug!(key = %key.replace('\0', " "), "304 names another version; fetching unconditionally");
                    conditional = false;
                }
                None => {
                    tracing::warn!(key = %key.replace('\0', " "), "origin answered 304 to an unconditional request");
                    let _ = landed.send(Some(Landed::Failed {
                        status: StatusCode::BAD_GATEWAY,
                        message: "origin answered 304 Not Modified to an unconditional request"
                            .into(),
                    }));
                    return;
                }
            }
        };

        let primary = key::primary_of(key).to_owned();
        let mut body = body::boxed(body);
        if let Some(index) = discover
            && parts.status == StatusCode::PARTIAL_CONTENT
        {
            let times = (request_time, response_time);
            match self
                .discovered(&primary, index, &client, &mut parts, body, times)
                .await
            {
                Discovery::Landed(result) => {
                    let _ = landed.send(Some(result));
                    return;
                }
                // The whole object fitted in the slice: store it like any response.
                Discovery::Whole(whole) => body = whole,
            }
        } else if discover.is_some() && parts.status != StatusCode::OK {
            // The answer to our slice probe (a 416, a 404 for a range, an error): it says
            // nothing storable about the URL, so only the request that asked gets it.
            let _ = landed.send(Some(Landed::Pass {
                status: parts.status,
            }));
            let _ = pass_tx.send(Response::from_parts(parts, body));
            return;
        }
        let verdict = storable(&method, &req_headers, parts.status, &parts.headers)
            .and_then(|()| self.within_size(&parts.headers));
        match verdict {
            Ok(()) => {
                self.passes.invalidate(&primary);
                let variant = match policy::vary(&parts.headers) {
                    Vary::Fields(fields) => {
                        key::variant(&primary, &policy::vary_key(&fields, &client))
                    }
                    _ => key::variant(&primary, ""),
                };
                let announced = content_length(&parts.headers);
                let sliced = announced.is_some_and(|n| n > self.limits.slice_size as u64)
                    && slices::has_validator(&parts.headers);
                let head = Meta {
                    format: FORMAT_VERSION,
                    key: variant,
                    status: parts.status.as_u16(),
                    headers: meta::encode_headers(&parts.headers),
                    request_time: meta::millis(request_time),
                    response_time: meta::millis(response_time),
                    body_len: announced.unwrap_or(0),
                    chunks: Vec::new(),
                    sliced: sliced.then_some(self.limits.slice_size as u64),
                    parsed: Default::default(),
                };
                let fill = Fill::new(self.store.clone());
                let limits = FillLimits {
                    chunk_size: self.limits.slice_size,
                    max_object_size: self.limits.max_object_size,
                    keep_hot: announced.is_some_and(|n| n <= self.limits.memory_object_max),
                    // Only an origin that says it serves ranges can give us the rest later;
                    // otherwise reading on is cheaper than a second full response.
                    stop_when_unread: sliced && accepts_ranges(&parts.headers),
                };
                let head = Arc::new(head);
                let _ = landed.send(Some(Landed::Fill {
                    fill: fill.clone(),
                    head: head.clone(),
                }));
                let result = fill.run(body, announced, (*head).clone(), limits).await;
                if let Err(FillError::Passed { why, too_large }) = &result {
                    self.counters.fills_failed.inc();
                    if *too_large {
                        // Like a response that says it is too large: the next requests pass.
                        self.passes.insert(primary.clone(), ());
                    }
                    tracing::debug!(key = %key.replace('\0', " "), %why, "fill passed through; nothing stored");
                } else if let Err(FillError::Abandoned) = result {
                    tracing::debug!(key = %key.replace('\0', " "), "fill of a sliced object stopped: no reader left");
                } else if let Err(e) = result {
                    self.counters.fills_failed.inc();
                    tracing::warn!(key = %key.replace('\0', " "), error = %e, "cache fill failed; nothing stored");
                }
            }
            Err(reason) => {
                if !parts.status.is_server_error() && reason != NotStorable::Status {
                    self.passes.insert(primary, ());
                }
                tracing::debug!(key = %key.replace('\0', " "), reason = reason.as_str(), "not storable");
                let _ = landed.send(Some(Landed::Pass {
                    status: parts.status,
                }));
                let _ = pass_tx.send(Response::from_parts(parts, body));
            }
        }
    }
}
