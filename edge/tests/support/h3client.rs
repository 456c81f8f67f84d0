//! An HTTP/3 client for tests (quinn + h3), pinned to the edge's certificate like the TCP
//! clients. One QUIC connection per client, reused for every request (so concurrent requests
//! are concurrent streams on one connection).

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use http::Request;
use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::Mutex;

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// HTTP/3 client over one reusable QUIC connection.
pub struct H3Client {
    endpoint: quinn::Endpoint,
    tls: Arc<QuicClientConfig>,
    conn: Mutex<Option<(SocketAddr, Sender)>>,
}

/// A response head and its body as a stream of chunks.
pub struct H3Response {
    pub parts: http::response::Parts,
    pub stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
}

impl H3Response {
    /// The next body chunk; `Ok(None)` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self.stream.recv_data().await {
            Ok(Some(mut buf)) => Ok(Some(buf.copy_to_bytes(buf.remaining()))),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("HTTP/3 body: {e}")),
        }
    }
}

impl H3Client {
    pub fn new(cert_der: &[u8]) -> Self {
        Self::new_from(cert_der, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// A client whose UDP socket is bound to `local` (the edge sees that address).
    pub fn new_from(cert_der: &[u8], local: std::net::IpAddr) -> Self {
        let mut tls = super::client::pinned_client_config(Some(cert_der));
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let tls = Arc::new(QuicClientConfig::try_from(tls).expect("TLS 1.3 client config"));
        let endpoint = quinn::Endpoint::client(SocketAddr::new(local, 0)).expect("UDP bind");
        Self {
            endpoint,
            tls,
            conn: Mutex::new(None),
        }
    }

    /// Sends `req` (absolute https URL) with `body`, returning once the head has arrived.
    pub async fn send(&self, req: Request<Bytes>) -> Result<H3Response, String> {
        let mut sender = self.sender(req.uri()).await?;
        let (parts, body) = req.into_parts();
        let mut stream = sender
            .send_request(Request::from_parts(parts, ()))
            .await
            .map_err(|e| format!("HTTP/3 send_request: {e}"))?;
        if !body.is_empty() {
            stream
                .send_data(body)
                .await
                .map_err(|e| format!("HTTP/3 send_data: {e}"))?;
        }
        // A server may answer before it has read the request's end and then stop the request
        // stream (RFC 9114 4.1); the response is still valid, so a failed finish is not fatal.
        let _ = stream.finish().await;
        let head = stream
            .recv_response()
            .await
            .map_err(|e| format!("HTTP/3 response: {e}"))?;
        let (parts, ()) = head.into_parts();
        Ok(H3Response { parts, stream })
    }

    async fn sender(&self, uri: &http::Uri) -> Result<Sender, String> {
        let host = uri.host().ok_or("URL has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("resolve {host}: {e}"))?
            .find(SocketAddr::is_ipv4)
            .ok_or("no IPv4 address")?;
        let mut slot = self.conn.lock().await;
        if let Some((a, sender)) = slot.as_ref()
            && *a == addr
        {
            return Ok(sender.clone());
        }
        let config = quinn::ClientConfig::new(self.tls.clone());
        let conn = self
            .endpoint
            .connect_with(config, addr, &host)
            .map_err(|e| format!("QUIC connect: {e}"))?
            .await
            .map_err(|e| format!("QUIC handshake: {e}"))?;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .map_err(|e| format!("HTTP/3 setup: {e}"))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        *slot = Some((addr, sender.clone()));
        Ok(sender)
    }
}
