//! HTTP/3 probe client used by the scenarios.
//!
//! [`fetch_h3`] opens one QUIC connection to a POP (ALPN `h3`, TLS 1.3, trusting only the
//! scenario's CA), sends a number of sequential GETs for one URL on it and reports what a
//! client would see: handshake time, negotiated ALPN, and per fetch the status, `Cache-Status`,
//! `Age`, body size, time to first byte and total time. Bodies are streamed and counted, never
//! held whole, so a probe can fetch large objects.
//!
//! The probe does not resolve names: the scenario has already asked geodns and passes the
//! POP's address in [`ProbeTarget::connect`]; the URL's host is used only for SNI, certificate
//! verification and `:authority`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::{Buf as _, Bytes};
use quinn::crypto::rustls::QuicClientConfig;
use serde::{Deserialize, Serialize};
use tokio::time::timeout_at;

/// HTTP/3 `H3_NO_ERROR` (RFC 9114 8.1): the code of a clean close.
const H3_NO_ERROR: u32 = 0x100;
/// How long closing may take after the last fetch, outside the probe deadline: long enough
/// for the CONNECTION_CLOSE to reach the server (a few RTTs), short enough that a lost one
/// does not hold a scenario up.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Sent on every request so the edge's access log tells probes apart from other clients.
const USER_AGENT: &str = concat!("quicdn-testnet-probe/", env!("CARGO_PKG_VERSION"));

type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// Where and what to probe.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The URL to fetch, e.g. `https://cdn.quicdn.test/hello.txt`; its authority is the SNI
    /// name, the name verified in the certificate and the `:authority` sent.
    pub url: http::Uri,
    /// Where to send UDP: the POP's address (from DNS), port usually 443.
    pub connect: SocketAddr,
    /// PEM CA bundle to trust; nothing else is trusted (no system or web roots).
    pub ca: PathBuf,
    /// Deadline for the whole probe: handshake and every fetch.
    pub timeout: Duration,
}

/// One GET as the client saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fetch {
    pub status: u16,
    /// The `Cache-Status` header, e.g. `pop; hit; ttl=299`.
    pub cache_status: Option<String>,
    /// The `Age` header in seconds.
    pub age: Option<u64>,
    /// Body bytes received.
    pub bytes: u64,
    /// From sending the request to the response head.
    pub ttfb_ms: f64,
    /// From sending the request to the end of the body.
    pub total_ms: f64,
}

/// The outcome of [`fetch_h3`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeReport {
    /// QUIC + TLS handshake time (until the connection is established).
    pub handshake_ms: f64,
    /// The negotiated ALPN protocol (`h3`).
    pub alpn: String,
    /// One entry per GET, in order.
    pub fetches: Vec<Fetch>,
}

/// One QUIC connection (ALPN h3, TLS 1.3, verifying the certificate for url's host against
/// `ca`), then `count` sequential GETs of the same URL on it; each Fetch reads the whole body
/// (streamed, counting bytes, never buffered whole) and timestamps first response byte
/// (headers) and end.
///
/// The connection is closed with `H3_NO_ERROR` at the end (also after an error), so the
/// server logs no connection error. Errors name the stage, the address and the server name.
pub async fn fetch_h3(target: &ProbeTarget, count: usize) -> anyhow::Result<ProbeReport> {
    let deadline = tokio::time::Instant::now() + target.timeout;
    let host = server_name(&target.url)?;
    let tls = client_tls(&target.ca)?;
    let endpoint = client_endpoint(target.connect, tls)?;
    let result = probe(&endpoint, target, &host, count, deadline).await;
    endpoint.close(H3_NO_ERROR.into(), b"");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    result
}

async fn probe(
    endpoint: &quinn::Endpoint,
    target: &ProbeTarget,
    host: &str,
    count: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<ProbeReport> {
    let addr = target.connect;
    let started = Instant::now();
    let connecting = endpoint
        .connect(addr, host)
        .with_context(|| format!("cannot start a QUIC connection to {addr} ({host})"))?;
    let conn = timeout_at(deadline, connecting)
        .await
        .map_err(|_| {
            anyhow!(
                "QUIC handshake with {addr} (server name {host}) timed out: no answer within {:?}",
                target.timeout
            )
        })?
        .with_context(|| format!("QUIC handshake with {addr} (server name {host}) failed"))?;
    let handshake_ms = ms(started.elapsed());
    let alpn = negotiated_alpn(&conn);
    let (mut driver, sender) = timeout_at(
        deadline,
        h3::client::new(h3_quinn::Connection::new(conn.clone())),
    )
    .await
    .map_err(|_| anyhow!("HTTP/3 setup with {addr} ({host}) timed out"))?
    .with_context(|| format!("HTTP/3 setup with {addr} ({host}) failed"))?;
    // The driver runs the control streams alongside the fetches, in this task so that
    // dropping the probe drops the connection too. Once the fetches are done the sender is
    // gone, and the driver closes the connection with H3_NO_ERROR.
    let fetches = tokio::select! {
        biased;
        fetches = fetch_all(sender, target, count, deadline) => fetches,
        closed = driver.wait_idle() => {
            Err(anyhow!("connection to {addr} ({host}) closed: {closed}"))
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, driver.wait_idle()).await;
    conn.close(H3_NO_ERROR.into(), b"");
    Ok(ProbeReport {
        handshake_ms,
        alpn,
        fetches: fetches?,
    })
}

/// Runs the GETs one after another; the sender is dropped at the end, which starts the close.
async fn fetch_all(
    mut sender: Sender,
    target: &ProbeTarget,
    count: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Vec<Fetch>> {
    let mut fetches = Vec::with_capacity(count);
    for i in 1..=count {
        let what = || format!("GET {} ({i}/{count}) via {}", target.url, target.connect);
        let fetch = timeout_at(deadline, fetch_one(&mut sender, &target.url))
            .await
            .map_err(|_| {
                anyhow!(
                    "{}: timed out (probe deadline {:?})",
                    what(),
                    target.timeout
                )
            })?
            .with_context(what)?;
        fetches.push(fetch);
    }
    Ok(fetches)
}

async fn fetch_one(sender: &mut Sender, url: &http::Uri) -> anyhow::Result<Fetch> {
    let request = http::Request::get(url.clone())
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(())?;
    let started = Instant::now();
    let mut stream = sender
        .send_request(request)
        .await
        .context("cannot send the request")?;
    // A server may answer before reading the request's end and stop the stream (RFC 9114
    // 4.1); the response is still valid, so a failed finish is not an error.
    let _ = stream.finish().await;
    let head = stream
        .recv_response()
        .await
        .context("no response head (stream reset or connection lost)")?;
    let ttfb = started.elapsed();
    let mut bytes = 0u64;
    while let Some(chunk) = stream
        .recv_data()
        .await
        .with_context(|| format!("response body broken after {bytes} bytes"))?
    {
        bytes += chunk.remaining() as u64;
    }
    let total = started.elapsed();
    let header = |name: &str| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Ok(Fetch {
        status: head.status().as_u16(),
        cache_status: header("cache-status"),
        age: header("age").and_then(|a| a.trim().parse().ok()),
        bytes,
        ttfb_ms: ms(ttfb),
        total_ms: ms(total),
    })
}

/// The name for SNI and certificate verification: the URL's host, without IPv6 brackets.
fn server_name(url: &http::Uri) -> anyhow::Result<String> {
    if url.scheme_str() != Some("https") {
        bail!("probe URL {url} must be https://");
    }
    let host = url
        .host()
        .ok_or_else(|| anyhow!("probe URL {url} has no host"))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned())
}

/// TLS 1.3 (QUIC needs it), ALPN h3, trusting only the CAs in `ca`. Not
/// `shared::tls::client_config`: that one adds the public web roots.
fn client_tls(ca: &Path) -> anyhow::Result<QuicClientConfig> {
    let roots = shared::tls::ca_roots(ca)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(shared::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    Ok(QuicClientConfig::try_from(tls)?)
}

/// A client endpoint on the wildcard address of `connect`'s family, port 0 (the caller may
/// run it inside a network namespace).
fn client_endpoint(connect: SocketAddr, tls: QuicClientConfig) -> anyhow::Result<quinn::Endpoint> {
    let bind: SocketAddr = match connect {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut endpoint =
        quinn::Endpoint::client(bind).with_context(|| format!("cannot bind UDP {bind}"))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(tls)));
    Ok(endpoint)
}

fn negotiated_alpn(conn: &quinn::Connection) -> String {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .map(|p| String::from_utf8_lossy(&p).into_owned())
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
