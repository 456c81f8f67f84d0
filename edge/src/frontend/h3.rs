//! HTTP/3 over QUIC (quinn + h3): the same [`Service`] as the TCP front-end, reached over UDP.
//!
//! This file only translates: QUIC connection -> h3 request streams -> `http::Request<Body>`,
//! and the service's response back onto the stream, frame by frame with h3's flow control as
//! backpressure. Limits: streams per connection (transport config), connections per endpoint,
//! header size (h3 builder). A stream that fails (client reset, garbage) ends alone; the
//! connection and its other streams carry on.
//!
//! An idle connection costs memory (about 45 KB, most of it quinn's own connection state), so
//! at `max_connections` a new handshake is not refused while some connection has nothing in
//! flight: the one idle the longest is closed (`H3_NO_ERROR`; a client reconnects when it
//! needs to) and the new one takes its place. Clients that hold connections open without
//! using them cannot keep new users out, and memory stays bounded by `max_connections`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use h3::server::RequestStream;
use http_body_util::BodyExt as _;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::body::{self, Body, BoxError};
use crate::config::{Congestion, QuicConfig};
use crate::service::{Protocol, RequestCtx, Service};

/// How long a drained connection waits for the client to close it before the edge does.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Request streams a connection may open before its first request: every allowed stream
/// costs the connection state up front, so an idle connection is given few; the first
/// request raises it to `max_concurrent_streams` (one round trip later for the client).
const FIRST_STREAMS: u32 = 16;

/// The connections with nothing in flight, longest idle first, so that one can be closed to
/// make room (module docs).
#[derive(Default)]
struct IdleConnections {
    inner: Mutex<IdleInner>,
}

#[derive(Default)]
struct IdleInner {
    /// Every established connection: its handle and the epoch it went idle at (`None`: busy).
    conns: HashMap<u64, (quinn::Connection, Option<u64>)>,
    /// (connection, epoch) in the order they went idle; stale entries are skipped.
    queue: VecDeque<(u64, u64)>,
    next: u64,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, IdleInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an established connection (idle) and returns its id.
    fn insert(&self, conn: quinn::Connection) -> u64 {
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.conns.insert(id, (conn, None));
        drop(inner);
        self.set_idle(id, true);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().conns.remove(&id);
    }

    fn set_idle(&self, id: u64, idle: bool) {
        let mut inner = self.lock();
        let epoch = inner.next;
        inner.next += 1;
        let Some(entry) = inner.conns.get_mut(&id) else {
            return;
        };
        entry.1 = idle.then_some(epoch);
        if idle {
            inner.queue.push_back((id, epoch));
            // Busy/idle flips leave stale entries behind; keep the queue near the live set.
            if inner.queue.len() > 2 * inner.conns.len() + 64 {
                let IdleInner { conns, queue, .. } = &mut *inner;
                queue.retain(|(id, e)| conns.get(id).is_some_and(|c| c.1 == Some(*e)));
            }
        }
    }

    /// Closes the connection idle the longest; false if every connection is busy.
    fn close_longest_idle(&self) -> bool {
        let mut inner = self.lock();
        while let Some((id, epoch)) = inner.queue.pop_front() {
            if let Some((conn, Some(e))) = inner.conns.get(&id)
                && *e == epoch
            {
                conn.close(
                    h3::error::Code::H3_NO_ERROR
                        .value()
                        .try_into()
                        .unwrap_or_default(),
                    b"idle connection closed to make room",
                );
                inner.conns.remove(&id);
                return true;
            }
        }
        false
    }
}

/// Builds the QUIC endpoint on `socket` with the edge's certificate and transport limits.
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    material: &shared::tls::TlsMaterial,
    config: &QuicConfig,
) -> anyhow::Result<quinn::Endpoint> {
    let mut tls = rustls::ServerConfig::builder_with_provider(shared::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // 0-RTT stays off: replayable early data is unsafe for anything but idempotent requests.
    tls.max_early_data_size = 0;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server.transport_config(Arc::new(transport(config)?));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(endpoint)
}

fn transport(c: &QuicConfig) -> anyhow::Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(c.max_concurrent_streams.min(FIRST_STREAMS).into())
        // HTTP/3 needs 3 unidirectional streams per side (control, QPACK encoder/decoder).
        .max_concurrent_uni_streams(8u32.into())
        .max_idle_timeout(Some(c.idle_timeout.try_into()?))
        .keep_alive_interval((!c.keep_alive.is_zero()).then_some(c.keep_alive))
        .stream_receive_window(quinn::VarInt::try_from(c.stream_receive_window.as_u64())?)
        .receive_window(quinn::VarInt::try_from(c.receive_window.as_u64())?)
        .send_window(c.send_window.as_u64())
        .enable_segmentation_offload(c.gso);
    match c.congestion {
        Congestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
        }
        Congestion::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()))
        }
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
        }
    };
    Ok(t)
}

/// Accepts connections until `shutdown` turns true; then every connection sends GOAWAY,
/// finishes its in-flight requests (up to `grace`), and the endpoint closes.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    config: QuicConfig,
    limits: QuicLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let grace = limits.shutdown_grace;
    let open = Arc::new(AtomicUsize::new(0));
    let idle = Arc::new(IdleConnections::default());
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|stop| *stop) => break,
            // Reap ended connections so the set stays as large as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        let now_open = open.load(Ordering::Relaxed);
        if now_open >= config.retry_above && !incoming.remote_address_validated() {
            // Under load, a handshake costs state only once its source address is proven.
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                incoming.ignore();
            }
            continue;
        }
        let Some(ip_slot) = limits.per_ip.admit(incoming.remote_address().ip()) else {
            incoming.refuse();
            continue;
        };
        // Full: room is made only for a handshake that is otherwise admitted.
        if now_open >= config.max_connections && !idle.close_longest_idle() {
            incoming.refuse();
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (service, open, stop) = (service.clone(), open.clone(), shutdown.clone());
        let limits = StreamLimits {
            max_header: config.max_header_size.as_u64(),
            head_timeout: limits.header_read_timeout,
            max_streams: config.max_concurrent_streams,
            idle: idle.clone(),
        };
        connections.spawn(async move {
            let peer = incoming.remote_address();
            // Boxed: only what a connection holds while idle stays in its task.
            if let Err(e) = Box::pin(connection(incoming, service, limits, stop)).await {
                tracing::debug!(%peer, error = %e, "QUIC connection ended with an error");
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(ip_slot);
        });
    }
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining QUIC connections");
    }
    endpoint.close(0u32.into(), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Limits of the HTTP/3 listener besides the transport's.
#[derive(Debug, Clone)]
pub(crate) struct QuicLimits {
    pub shutdown_grace: Duration,
    /// A handshake, and a request stream's HEADERS, must complete within this.
    pub header_read_timeout: Duration,
    /// Connections per client address, shared with the TCP listeners.
    pub per_ip: Arc<crate::frontend::limits::PerIp>,
}

struct StreamLimits {
    max_header: u64,
    head_timeout: Duration,
    /// `max_concurrent_streams`, granted once the first request arrives.
    max_streams: u32,
    idle: Arc<IdleConnections>,
}

/// Takes a connection out of [`IdleConnections`] when it ends.
struct Registered<'a>(&'a IdleConnections, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// One HTTP/3 connection from handshake to close. Long because it is one `select!` loop
/// whose arms share the connection's state (streams in flight, GOAWAY, the close linger).
async fn connection(
    incoming: quinn::Incoming,
    service: Arc<Service>,
    limits: StreamLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    // The futures of the handshake, of each accept and of GOAWAY are boxed: a connection's
    // task is as large as the largest state it awaits in, and it is held while idle.
    let (conn, mut h3) = Box::pin(handshake(incoming, &limits)).await?;
    let peer = conn.remote_address();
    let budget = service.connection_budget();
    let registered = Registered(&limits.idle, limits.idle.insert(conn.clone()));
    let mut widened = false;
    let mut was_idle = true;
    let mut requests = JoinSet::new();
    let mut stopping = false;
    // Armed once GOAWAY is sent and every accepted request has its response queued: those may
    // not be delivered yet, and closing discards unsent data. A live client closes by itself
    // once it has read its responses after GOAWAY; a vanished one never does and would hold
    // shutdown for the whole grace. So wait for the client's close, but only this long.
    let linger = tokio::time::sleep(CLOSE_LINGER);
    tokio::pin!(linger);
    let (mut armed, mut close) = (false, false);
    loop {
        let mut goaway = false;
        let lingering = armed && requests.is_empty();
        tokio::select! {
            // Reap finished streams as they end, so a long-lived connection does not collect
            // one finished task per request it ever served.
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            _ = stop.wait_for(|s| *s), if !stopping => goaway = true,
            () = &mut linger, if lingering => {
                close = true;
                break;
            }
            _ = conn.closed(), if lingering => {
                close = true;
                break;
            }
            // Still polled after GOAWAY: h3 then rejects (H3_REQUEST_REJECTED) the streams a
            // client opened before it saw the GOAWAY, so it retries them at once instead of
            // waiting for the close.
            accepted = Box::pin(h3.accept()) => match accepted {
                Ok(Some(resolver)) => {
                    if !widened {
                        conn.set_max_concurrent_bi_streams(limits.max_streams.into());
                        widened = true;
                    }
                    let service = service.clone();
                    let budget = budget.clone();
                    let head_timeout = limits.head_timeout;
                    requests.spawn(async move {
                        // A stream whose HEADERS never complete would hold its slot for ever.
                        let head = tokio::time::timeout(head_timeout, resolver.resolve_request());
                        match head.await {
                            Ok(Ok((req, stream))) => request(service, peer, budget, req, stream).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "bad HTTP/3 request"),
                            Err(_) => tracing::debug!(%peer, "HTTP/3 request head timed out"),
                        }
                    });
                    // A request still within the GOAWAY limit: its response gets a full linger.
                    armed = false;
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%peer, error = %e, "HTTP/3 connection closed");
                    }
                    break;
                }
            },
        }
        if requests.is_empty() != was_idle {
            was_idle = requests.is_empty();
            registered.0.set_idle(registered.1, was_idle);
        }
        if goaway {
            stopping = true;
            // GOAWAY: no new requests; those already accepted complete.
            Box::pin(h3.shutdown(0)).await?;
        }
        if stopping && !armed && requests.is_empty() {
            linger
                .as_mut()
                .reset(tokio::time::Instant::now() + CLOSE_LINGER);
            armed = true;
        }
    }
    while requests.join_next().await.is_some() {}
    if close {
        conn.close(
            h3::error::Code::H3_NO_ERROR.value().try_into()?,
            b"shutting down",
        );
    }
    Ok(())
}

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// The QUIC handshake (within `head_timeout`) and the HTTP/3 setup (SETTINGS).
async fn handshake(
    incoming: quinn::Incoming,
    limits: &StreamLimits,
) -> Result<(quinn::Connection, H3Connection), BoxError> {
    let conn = tokio::time::timeout(limits.head_timeout, incoming.accept()?)
        .await
        .map_err(|_| "QUIC handshake timed out")??;
    let h3 = h3::server::builder()
        .max_field_section_size(limits.max_header)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await?;
    Ok((conn, h3))
}

type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn request(
    service: Arc<Service>,
    peer: SocketAddr,
    budget: crate::cache::budget::ReadBudget,
    req: http::Request<()>,
    stream: Stream,
) {
    let ctx = RequestCtx {
        protocol: Protocol::H3,
        peer,
        secure: true,
        start: Instant::now(),
        budget,
    };
    let (mut send, recv) = stream.split();
    let req = req.map(|()| request_body(recv));
    // Boxed: the task spawned per stream is moved on spawn and completion; keep it small.
    let response = Box::pin(service.handle(ctx, req)).await;
    let (parts, mut body) = response.into_parts();
    if let Err(e) = send
        .send_response(http::Response::from_parts(parts, ()))
        .await
    {
        tracing::debug!(%peer, error = %e, "HTTP/3 client went away before the response head");
        return;
    }
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers are not forwarded over HTTP/3
            },
            Err(e) => {
                // The body failed (origin reset, corrupt cache chunk): reset the stream so the
                // client cannot mistake a truncated body for a complete one.
                tracing::debug!(%peer, error = %e, "response body failed; resetting stream");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = send.send_data(data).await {
            tracing::debug!(%peer, error = %e, "HTTP/3 client went away mid-body");
            return;
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(%peer, error = %e, "HTTP/3 stream finish failed");
    }
}

/// The request body as a [`Body`], read from the stream as the service polls it.
fn request_body(recv: RequestStream<h3_quinn::RecvStream, Bytes>) -> Body {
    let recv = RecvHalf { recv, ended: false };
    let stream = futures_util::stream::unfold(recv, |mut half| async move {
        match half.recv.recv_data().await {
            Ok(Some(mut buf)) => {
                let bytes = buf.copy_to_bytes(buf.remaining());
                Some((Ok(http_body::Frame::data(bytes)), half))
            }
            Ok(None) => {
                half.ended = true;
                drop(half);
                None
            }
            Err(e) => {
                half.ended = true;
                Some((Err(Box::new(e) as BoxError), half))
            }
        }
    });
    body::boxed(http_body_util::StreamBody::new(stream))
}

/// The receiving half of a request stream. When the service answers without reading the
/// request to its end (a GET whose FIN has not arrived yet, a rejected upload), the client is
/// told with STOP_SENDING and H3_NO_ERROR, as RFC 9114 4.1 allows, instead of quinn's bare
/// code 0.
struct RecvHalf {
    recv: RequestStream<h3_quinn::RecvStream, Bytes>,
    ended: bool,
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        if !self.ended {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}
