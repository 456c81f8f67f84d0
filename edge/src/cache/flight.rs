//! Whole-object flights: joining or starting one on the [`Coalescer`] (`join_or_start`),
//! the flight itself (`fly`: ask the origin, then store or pass what it said), and what a
//! request does with what landed (`fetch`).

use tokio::sync::oneshot;

use super::coalesce::{Joined, Leader, Waiter};
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
        let (landed, leader) = self.join_or_start(
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
        let result = landed.outcome().await.unwrap_or_else(|| Landed::Failed {
            status: StatusCode::BAD_GATEWAY,
            message: "origin fetch abandoned".into(),
        });
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
                let Some(mut served) = self
                    .responder
                    .serve_fill(lookup, &fill, &head, &origin)
                    .await
                else {
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
                    .responder
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
                let served = self
                    .responder
                    .serve_stored(lookup, meta, outcome, ttl, &origin);
                let Some(mut served) = served.await else {
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
    pub(super) fn join_or_start(
        self: &Arc<Self>,
        key: &str,
        client: &HeaderMap,
        origin_req: &http::request::Parts,
        upstream: &Arc<dyn Upstream>,
        stale: Option<Arc<Meta>>,
        discover: Option<u64>,
    ) -> (Waiter<Landed>, Option<oneshot::Receiver<Response<Body>>>) {
        // A flight for this key may have landed and ended after this request looked it up:
        // serve what it stored rather than ask the origin again.
        let landed = || {
            let meta = self.store.get(key).filter(|_| stale.is_none())?;
            matches!(self.freshness(client, &meta), Freshness::Fresh { .. }).then_some(meta)
        };
        let (leader, waiter) = match self.flights.join_or_lead(key, landed) {
            Joined::Waiting(waiter) => return (waiter, None),
            Joined::Settled(meta) => {
                return (Waiter::ready(Landed::Stored { meta, fwd: None }), None);
            }
            Joined::Leading(leader, waiter) => (leader, waiter),
        };
        let (pass_tx, pass_rx) = oneshot::channel();
        let mut req = fill_request(origin_req, stale.as_deref());
        if let Some(index) = discover {
            let size = self.limits.slice_size as u64;
            let value = format!("bytes={}-{}", index * size, (index + 1) * size - 1);
            if let Ok(v) = HeaderValue::from_str(&value) {
                req.headers_mut().insert(header::RANGE, v);
            }
        }
        let flight = FlightRequest {
            req,
            // The variant is computed from the client's headers, never from the origin
            // request (which lacks hop-by-hop fields and has proxy headers added): every
            // waiter computes its own variant from its client headers, so both sides must
            // use the same source.
            client: client.clone(),
            stale,
            discover,
        };
        let (this, key, upstream) = (self.clone(), key.to_owned(), upstream.clone());
        // Spawned so that the fetch outlives the request that started it (a client abort must
        // not strand the requests waiting on this flight). The leader, dropped at the end,
        // takes the key out of the map once the fill is done.
        tokio::spawn(async move {
            this.fly(&key, flight, upstream, (leader, pass_tx)).await;
        });
        (waiter, Some(pass_rx))
    }

    /// The flight itself: one origin request (two after a 304 that names no stored
    /// response), its outcome published to every waiter, and a fill run to completion when
    /// the response is storable.
    async fn fly(
        self: &Arc<Self>,
        key: &str,
        flight: FlightRequest,
        upstream: Arc<dyn Upstream>,
        (leader, pass_tx): (Leader<Landed>, oneshot::Sender<Response<Body>>),
    ) {
        let FlightRequest {
            req,
            client,
            stale,
            discover,
        } = flight;
        let req_headers = req.headers().clone();
        // Before the origin is asked: a purge from now on keeps what it says out of the store.
        let fence = self.store.fence();
        let answer = match self
            .ask_origin(key, req, (stale.as_deref(), fence), &upstream)
            .await
        {
            Ok(answer) => answer,
            Err(landed) => return leader.publish(landed),
        };
        let OriginAnswer {
            times,
            mut parts,
            body,
        } = answer;
        let primary = key::primary_of(key).to_owned();
        let mut body = body::boxed(body);
        if let Some(index) = discover
            && parts.status == StatusCode::PARTIAL_CONTENT
        {
            match self
                .discovered(&primary, index, &client, &mut parts, body, (times, fence))
                .await
            {
                Discovery::Landed(result) => return leader.publish(result),
                // The whole object fitted in the slice: store it like any response.
                Discovery::Whole(whole) => body = whole,
            }
        } else if discover.is_some() && parts.status != StatusCode::OK {
            // The answer to our slice probe (a 416, a 404 for a range, an error): it says
            // nothing storable about the URL, so only the request that asked gets it.
            leader.publish(Landed::Pass {
                status: parts.status,
            });
            let _ = pass_tx.send(Response::from_parts(parts, body));
            return;
        }
        let verdict = storable(&Method::GET, &req_headers, parts.status, &parts.headers)
            .and_then(|()| self.within_size(&parts.headers));
        match verdict {
            Ok(()) => {
                let answer = OriginAnswer { times, parts, body };
                self.fill(key, &client, answer, (leader, fence)).await;
            }
            Err(reason) => {
                if !parts.status.is_server_error() && reason != NotStorable::Status {
                    self.passes.insert(primary, ());
                }
                tracing::debug!(key = %key::shown(key), reason = reason.as_str(), "not storable");
                leader.publish(Landed::Pass {
                    status: parts.status,
                });
                let _ = pass_tx.send(Response::from_parts(parts, body));
            }
        }
    }

    /// Sends the flight's request; at most two origin requests: the second only when a
    /// revalidation's 304 selects no stored response, and then without validators (so it
    /// cannot be a 304 again). `Err` is what the flight lands without a response to file:
    /// a failure, or a 304 that refreshed the stored entry.
    async fn ask_origin(
        &self,
        key: &str,
        req: Request<Body>,
        (stale, fence): (Option<&Meta>, Fence),
        upstream: &Arc<dyn Upstream>,
    ) -> Result<OriginAnswer<Body>, Landed> {
        let (req_parts, _) = req.into_parts();
        let mut conditional = stale.is_some();
        loop {
            let mut parts = req_parts.clone();
            if !conditional {
                parts.headers.remove(header::IF_NONE_MATCH);
                parts.headers.remove(header::IF_MODIFIED_SINCE);
            }
            let request_time = self.clock.now();
            self.counters.origin_fetches.inc();
            let response = upstream
                .fetch(Request::from_parts(parts, body::empty()))
                .await
                .map_err(|e| {
                    tracing::warn!(key = %key::shown(key), error = %e, "origin fetch failed");
                    Landed::Failed {
                        status: e.status(),
                        message: e.to_string().into(),
                    }
                })?;
            let response_time = self.clock.now();
            let (mut parts, body) = response.into_parts();
            crate::headers::strip_hop_by_hop(&mut parts.headers);
            ensure_date(&mut parts.headers, response_time);
            if parts.status != StatusCode::NOT_MODIFIED {
                let times = (request_time, response_time);
                return Ok(OriginAnswer { times, parts, body });
            }
            // RFC 9111 4.3.3/4.3.4: a 304 answers our own conditional request; it is never
            // passed to a client, which asked for the resource, not for our validation.
            match stale.filter(|_| conditional) {
                Some(stale) if policy::not_modified_selects(stale.header_map(), &parts.headers) => {
                    let times = (request_time, response_time);
                    return Err(self.refresh(stale, &parts.headers, times, fence).await);
                }
                Some(_) => {
                    tracing::debug!(key = %key::shown(key), "304 names another version; fetching unconditionally");
                    conditional = false;
                }
                None => {
                    tracing::warn!(key = %key::shown(key), "origin answered 304 to an unconditional request");
                    return Err(Landed::Failed {
                        status: StatusCode::BAD_GATEWAY,
                        message: "origin answered 304 Not Modified to an unconditional request"
                            .into(),
                    });
                }
            }
        }
    }

    /// Stores a storable answer: publishes the fill (so every waiter streams from it as it
    /// arrives) and runs it to its end; the flight ends with the fill.
    async fn fill(
        &self,
        key: &str,
        client: &HeaderMap,
        answer: OriginAnswer<Body>,
        (leader, fence): (Leader<Landed>, Fence),
    ) {
        let OriginAnswer { times, parts, body } = answer;
        let primary = key::primary_of(key);
        self.passes.invalidate(primary);
        let variant = match policy::vary(&parts.headers) {
            Vary::Fields(fields) => key::variant(primary, &policy::vary_key(&fields, client)),
            _ => key::variant(primary, ""),
        };
        let announced = content_length(&parts.headers);
        let sliced = announced.is_some_and(|n| n > self.limits.slice_size as u64)
            && slices::has_validator(&parts.headers);
        let head = Arc::new(Meta {
            format: FORMAT_VERSION,
            key: variant,
            status: parts.status.as_u16(),
            headers: meta::encode_headers(&parts.headers),
            request_time: meta::millis(times.0),
            response_time: meta::millis(times.1),
            body_len: announced.unwrap_or(0),
            chunks: Vec::new(),
            sliced: sliced.then_some(self.limits.slice_size as u64),
            tags: purge::surrogate_keys(&parts.headers),
            stale_since: None,
            parsed: Default::default(),
        });
        let fill = Fill::new(self.store.clone(), fence);
        let limits = FillLimits {
            chunk_size: self.limits.slice_size,
            max_object_size: self.limits.max_object_size,
            keep_hot: announced.is_some_and(|n| n <= self.limits.memory_object_max),
            // Only an origin that says it serves ranges can give us the rest later;
            // otherwise reading on is cheaper than a second full response.
            stop_when_unread: sliced && accepts_ranges(&parts.headers),
        };
        leader.publish(Landed::Fill {
            fill: fill.clone(),
            head: head.clone(),
        });
        // The flight leaves the coalescer when the fill ends, before the last bytes reach a
        // reader: a request sent after a complete response then finds the stored entry.
        fill.on_end(move || drop(leader));
        let result = fill.run(body, announced, (*head).clone(), limits).await;
        match result {
            Ok(_) => {}
            Err(FillError::Passed { why, too_large }) => {
                self.counters.fills_failed.inc();
                if too_large {
                    // Like a response that says it is too large: the next requests pass.
                    self.passes.insert(primary.to_owned(), ());
                }
                tracing::debug!(key = %key::shown(key), %why, "fill passed through; nothing stored");
            }
            Err(FillError::Abandoned) => {
                tracing::debug!(key = %key::shown(key), "fill of a sliced object stopped: no reader left");
            }
            Err(e) => {
                self.counters.fills_failed.inc();
                tracing::warn!(key = %key::shown(key), error = %e, "cache fill failed; nothing stored");
            }
        }
    }
}

/// A response head from the origin, when it was asked and answered, and its body.
struct OriginAnswer<B> {
    times: (SystemTime, SystemTime),
    parts: http::response::Parts,
    body: B,
}
