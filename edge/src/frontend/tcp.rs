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
use crate::service::{Protocol, RequestCtx, Service};

/// Per-listener limits.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// TCP_NOTSENT_LOWAT in bytes; 0: kernel default.
    pub notsent_lowat: u32,
}

/// Accepts on `listener` until `shutdown` turns true, then lets in-flight requests finish
/// (up to the grace period). `tls` makes it an HTTPS listener.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    limits: TcpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(limits));
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
        let _ = stream.set_nodelay(true);
        if limits.notsent_lowat > 0 {
            // Best effort: kernels without the option just write ahead more.
            let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(limits.notsent_lowat);
        }
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(stream, peer, tls, service, &builder, watcher, limits).await;
            drop(permit);
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

fn builder(limits: TcpLimits) -> auto::Builder<TokioExecutor> {
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
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: Arc<Service>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: TcpLimits,
) {
    let secure = tls.is_some();
    let handler = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let service = service.clone();
        async move {
            let ctx = RequestCtx {
                protocol: Protocol::of(req.version()),
                peer,
                secure,
                start: Instant::now(),
            };
            let req = req.map(crate::body::boxed);
            // Boxed: hyper moves each request's future into a task, and again as the task
            // finishes; a pointer moves cheaper than the service's whole state machine.
            Ok::<_, Infallible>(Box::pin(service.handle(ctx, req)).await)
        }
    });
    let result = match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(
                limits.header_read_timeout,
                acceptor.accept(Coalesce::new(stream)),
            );
            let mut stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
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
    };
    if let Err(e) = result {
        // Client resets and malformed requests end up here; hyper has already answered
        // malformed heads with 400 where it could.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
