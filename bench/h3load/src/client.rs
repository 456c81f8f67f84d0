//! The HTTP/3 client side: one UDP endpoint per thread, connections with large receive
//! windows, and a GET that counts the body without keeping it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::{Buf as _, Bytes};
use h3::error::StreamError;

use crate::config::Target;
use crate::stats::ErrorKind;
use crate::tls::{self, Trust};

/// HTTP/3 `H3_NO_ERROR` (RFC 9114 8.1): the code of a clean close.
pub(crate) const H3_NO_ERROR: u32 = 0x100;
/// Sent on every request so the edge's access log tells load from other clients.
const USER_AGENT: &str = concat!("quicdn-h3load/", env!("CARGO_PKG_VERSION"));
/// Per-stream receive window: a whole 16 MiB object in flight without a window update.
const STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection receive window: several large objects in flight on one connection.
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Longer than any run's quiet moment; the run closes its connections itself.
const IDLE_TIMEOUT_MS: u32 = 30_000;
/// Socket buffers asked for, so bursts from the server are not dropped before quinn reads
/// them; the kernel caps this at `net.core.rmem_max`/`wmem_max`.
const SOCKET_BUFFER: usize = 8 << 20;

pub(crate) type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
pub(crate) type Driver = h3::client::Connection<h3_quinn::Connection, Bytes>;

/// The quinn client config shared by every connection of the run.
pub(crate) fn client_config(trust: &Trust) -> anyhow::Result<quinn::ClientConfig> {
    let mut client = quinn::ClientConfig::new(Arc::new(tls::client_config(trust)?));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        // The server opens no request streams towards a client.
        .max_concurrent_bidi_streams(0u32.into())
        .max_idle_timeout(Some(quinn::VarInt::from_u32(IDLE_TIMEOUT_MS).into()))
        .keep_alive_interval(None);
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// A client endpoint on a fresh UDP socket of `peer`'s address family, port 0. Must run
/// inside the tokio runtime that will drive it.
pub(crate) fn endpoint(peer: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let bind: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket =
        std::net::UdpSocket::bind(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    if let Ok(state) = quinn::udp::UdpSocketState::new((&socket).into()) {
        // Best effort: a smaller buffer only costs drops under bursts.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
    }
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("cannot create the QUIC endpoint")?;
    Ok(endpoint)
}

/// A QUIC connection to the target with HTTP/3 on it, within `timeout`. Errors name the
/// address and the server name.
pub(crate) async fn connect(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    target: &Target,
    timeout: Duration,
) -> anyhow::Result<(Driver, Sender)> {
    let (addr, name) = (target.addr, target.server_name.as_str());
    let setup = async {
        let conn = endpoint
            .connect_with(client.clone(), addr, name)
            .with_context(|| {
                format!("cannot start a QUIC connection to {addr} (server name {name})")
            })?
            .await
            .with_context(|| format!("QUIC handshake with {addr} (server name {name}) failed"))?;
        h3::client::builder()
            // Grease tests servers' tolerance, not their speed.
            .send_grease(false)
            .build(h3_quinn::Connection::new(conn))
            .await
            .with_context(|| format!("HTTP/3 setup with {addr} (server name {name}) failed"))
    };
    tokio::time::timeout(timeout, setup).await.map_err(|_| {
        anyhow!(
            "cannot connect to {addr} (server name {name}): no QUIC handshake within {timeout:?}; \
             is an HTTP/3 server listening on that UDP address?"
        )
    })?
}

/// One GET of `url`: the response status and the body length, read to the end and dropped
/// chunk by chunk.
pub(crate) async fn get(
    sender: &mut Sender,
    url: &http::Uri,
) -> Result<(http::StatusCode, u64), StreamError> {
    let mut request = http::Request::new(());
    *request.uri_mut() = url.clone();
    request.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    );
    let mut stream = sender.send_request(request).await?;
    // A server may answer before reading the request's end and stop the stream (RFC 9114
    // 4.1); the response is still valid, so a failed finish is not an error.
    let _ = stream.finish().await;
    let head = stream.recv_response().await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.recv_data().await? {
        bytes += chunk.remaining() as u64;
    }
    Ok((head.status(), bytes))
}

/// Whether a failed request took its connection down with it.
pub(crate) fn classify(error: &StreamError) -> ErrorKind {
    match error {
        StreamError::ConnectionError { .. } | StreamError::RemoteClosing { .. } => {
            ErrorKind::ConnectionLost
        }
        _ => ErrorKind::StreamReset,
    }
}
