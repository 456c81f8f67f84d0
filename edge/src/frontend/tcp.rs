//! HTTPS (HTTP/2 and HTTP/1.1 by ALPN) and plain HTTP over TCP, via hyper-util's auto builder.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::coalesce::Coalesce;
use super::limits::{self, Activity, InFlight, PerIp, Timeouts, Verdict, Watched};
use crate::body::{Body, BoxError};
use crate::service::{Protocol, RequestCtx, Service};

/// Per-listener limits.
#[derive(Debug, Clone)]
pub(crate) struct TcpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// TCP_NOTSENT_LOWAT in bytes; 0: kernel default.
    pub notsent_lowat: u32,
    pub timeouts: Timeouts,
    pub h2_max_concurrent_streams: u32,
    /// Connections per client address, shared with every other listener.
    pub per_ip: Arc<PerIp>,
}

/// Accepts on `listener` until `shutdown` turns true, then lets in-flight requests finish
/// (up to the grace period). `tls` makes it an HTTPS listener.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    limits: TcpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(ip_slot) = limits.per_ip.admit(peer.ip()) else {
            // Closed at once: the client's other connections are its share.
            tracing::debug!(%peer, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        if limits.notsent_lowat > 0 {
            // Best effort: kernels without the option just write ahead more.
            let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(limits.notsent_lowat);
        }
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let timeouts = limits.timeouts;
        let handshake = limits.header_read_timeout;
        tokio::spawn(async move {
            connection(
                stream, peer, tls, service, &builder, watcher, handshake, timeouts,
            )
            .await;
            drop((permit, ip_slot));
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

fn builder(limits: &TcpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Bounds what one client can have in flight on one connection.
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// One TCP connection: TLS, protocol choice, and its timeouts. Long because its limits
/// (first request, idle, send) wrap one hyper connection future in one place.
#[allow(clippy::too_many_arguments)] // one connection's inputs, passed once per accept
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    handshake_timeout: Duration,
    timeouts: Timeouts,
) {
    let secure = tls.is_some();
    let activity = Activity::new();
    let stream = Watched::new(stream, activity.clone());
    let requests = activity.clone();
    let connection_budget = service.connection_budget();
    let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let service = service.clone();
        let budget = connection_budget.clone();
        let in_flight = requests.request();
        let requests = requests.clone();
        async move {
            let ctx = RequestCtx {
                protocol: Protocol::of(req.version()),
                peer,
                secure,
                start: Instant::now(),
                budget,
            };
            let req = req.map(crate::body::boxed);
            // Boxed: hyper moves each request's future into a task, and again as the task
            // finishes; a pointer moves cheaper than the service's whole state machine.
            let response = Box::pin(service.handle(ctx, req)).await;
            let slot = requests.body_slot();
            Ok::<_, Infallible>(response.map(|body| Tracked {
                inner: body,
                slot,
                _in_flight: in_flight,
            }))
        }
    });
    let serve = async {
        match tls {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(handshake_timeout, acceptor.accept(Coalesce::new(stream)));
                let mut stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return Ok(());
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return Ok(());
                    }
                };
                activity.restart();
                let (socket, tls) = stream.get_mut();
                if tls.alpn_protocol() == Some(b"h2") {
                    socket.enable();
                }
                let conn = builder.serve_connection(TokioIo::new(stream), handler);
                watcher.watch(conn.into_owned()).await
            }
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), handler);
                watcher.watch(conn.into_owned()).await
            }
        }
    };
    let result = tokio::select! {
        result = serve => result,
        verdict = activity.expired(&timeouts) => {
            // Dropping the connection closes the socket; whatever it held is freed.
            let why = match verdict {
                Verdict::FirstRequest => "no request within first_request_timeout",
                Verdict::Idle => "idle for idle_timeout",
                Verdict::Stalled => "client read nothing for send_timeout",
                Verdict::Until(_) => "",
            };
            tracing::debug!(%peer, why, "connection closed");
            Ok(())
        }
    };
    if let Err(e) = result {
        // Client resets and malformed requests end up here; hyper has already answered
        // malformed heads with 400 where it could.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight until it is done, and
    /// tells the watchdog how long it has waited to be asked for its next frame.
    struct Tracked {
        #[pin]
        inner: Body,
        slot: Arc<std::sync::atomic::AtomicU64>,
        _in_flight: InFlight,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let this = self.project();
        limits::asked(this.slot);
        let polled = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            limits::handed(this.slot);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
