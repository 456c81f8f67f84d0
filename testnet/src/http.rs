//! A small plain-HTTP/1.1 client for the testnet's own calls: the edges' admin API (purge,
//! metrics) and nats-server's monitoring endpoints, each reached from inside a namespace.
//!
//! One connection per [`Client`], kept alive across requests, so a series of purges measures
//! the API and the bus, not TCP handshakes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::procs::in_ns;

/// A response, whole (everything the testnet asks for is small).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("HTTP {}: not JSON: {}", self.status, self.text()))
    }
}

/// One kept-alive HTTP/1.1 connection to `addr`.
pub struct Client {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    timeout: Duration,
}

impl Client {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr}: timed out after {timeout:?}"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1.1 with {addr}"))?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            addr,
            sender,
            timeout,
        })
    }

    /// `method path` with an optional JSON body; the whole reply.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<Reply> {
        let what = || format!("{method} http://{}{path}", self.addr);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        let body = match json {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v)?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body))?;
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Reply { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("{}: no reply within {:?}", what(), self.timeout))?
            .with_context(what)
    }
}

/// Runs `f` on a current-thread runtime, on a thread inside namespace `ns`.
pub fn block_in<T, F, Fut>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
{
    in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })?
}

/// One GET from inside `ns`.
pub fn get_in(ns: &str, addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Reply> {
    let path = path.to_owned();
    block_in(ns, move || async move {
        let mut client = Client::connect(addr, timeout).await?;
        client.send(Method::GET, &path, None).await
    })
}
