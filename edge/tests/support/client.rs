//! Real HTTP/1.1 and HTTP/2 clients for integration tests, trusting exactly
//! the edge's self-signed development certificate.

// Every test binary compiles this module but uses only part of it, and in a
// test binary nothing is reachable from outside the crate.
#![allow(dead_code, unreachable_pub)]

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Accepts exactly one server certificate (byte-equal DER), i.e. pinning.
///
/// The edge's development certificate is a self-signed end-entity cert, which
/// webpki refuses to use as its own trust anchor, so a root store cannot
/// express "trust this cert". Handshake signatures are still verified against
/// it, so only the holder of its private key passes.
#[derive(Debug)]
pub struct PinnedCert {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    pub fn new(cert_der: &[u8]) -> Self {
        Self {
            cert: CertificateDer::from(cert_der.to_vec()),
            provider: Arc::new(ring::default_provider()),
        }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pinned bytes fix the names and validity too; nothing else to check.
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A ring-based client config that trusts only `cert_der` (or, with `None`,
/// nothing at all), without ALPN. Also usable for non-hyper clients.
pub fn pinned_client_config(cert_der: Option<&[u8]>) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    match cert_der {
        Some(der) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert::new(der)))
            .with_no_client_auth(),
        // An empty root store: plain http works, any https fails verification.
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Resp {
    /// The header's first value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A pooled keep-alive client for one HTTP version.
#[derive(Clone)]
pub struct Client {
    inner: Transport,
}

#[derive(Clone)]
enum Transport {
    Hyper(Box<HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>>),
    H3(Arc<super::h3client::H3Client>),
}

/// A response head and a body to read chunk by chunk, whatever the transport.
enum Streaming {
    Hyper(hyper::body::Incoming),
    H3(Box<super::h3client::H3Response>),
}

impl Streaming {
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            Self::Hyper(body) => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(chain(&e)),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
            Self::H3(resp) => resp.chunk().await,
        }
    }
}

impl Client {
    /// HTTP/1.1 only, for http:// and https:// (ALPN http/1.1), trusting only
    /// `ca_der` for https.
    pub fn h1(ca_der: Option<&[u8]>) -> Self {
        let mut tls = pinned_client_config(ca_der);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let inner = HyperClient::builder(TokioExecutor::new()).build(connector(tls));
        Self {
            inner: Transport::Hyper(Box::new(inner)),
        }
    }

    /// HTTP/1.1 (`ca_der`: over TLS too), HTTP/2 (`h2`, TLS) or HTTP/3 (`h3`) from the
    /// local address `local`: a client the edge sees at another address.
    pub fn from_address(kind: &str, ca_der: Option<&[u8]>, local: std::net::IpAddr) -> Self {
        if kind == "h3" {
            let ca = ca_der.expect("HTTP/3 needs the certificate");
            return Self {
                inner: Transport::H3(Arc::new(super::h3client::H3Client::new_from(ca, local))),
            };
        }
        let mut tls = pinned_client_config(ca_der);
        let builder = HyperClient::builder(TokioExecutor::new());
        let inner = match kind {
            "h2" => {
                tls.alpn_protocols = vec![b"h2".to_vec()];
                builder
                    .clone()
                    .http2_only(true)
                    .build(connector_from(tls, Some(local)))
            }
            _ => {
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                builder.build(connector_from(tls, Some(local)))
            }
        };
        Self {
            inner: Transport::Hyper(Box::new(inner)),
        }
    }

    /// HTTP/3 over QUIC, trusting only `ca_der`; one connection, many streams.
    pub fn h3(ca_der: &[u8]) -> Self {
        Self {
            inner: Transport::H3(Arc::new(super::h3client::H3Client::new(ca_der))),
        }
    }

    /// HTTP/2 only: ALPN h2 over https (trusting only `ca_der`), or h2c with
    /// prior knowledge over plain http.
    pub fn h2(ca_der: &[u8]) -> Self {
        let mut tls = pinned_client_config(Some(ca_der));
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let inner = HyperClient::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector(tls));
        Self {
            inner: Transport::Hyper(Box::new(inner)),
        }
    }

    /// GET `url` and collect the body; panics on any transport error.
    pub async fn get(&self, url: &str) -> Resp {
        self.get_with(url, &[]).await
    }

    /// GET `url` with extra request headers; panics on any transport error.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::default()).expect("valid GET request");
        match self.send(req).await {
            Ok(resp) => resp,
            Err(e) => panic!("GET {url} failed: {e}"),
        }
    }

    /// Sends `req` and collects the body; `Err` on transport or body errors.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        let what = format!("{} {}", req.method(), req.uri());
        let (parts, mut body) = self.exchange(req).await?;
        let mut collected = Vec::new();
        while let Some(chunk) = body
            .chunk()
            .await
            .map_err(|e| format!("{what}: body: {e}"))?
        {
            collected.extend_from_slice(&chunk);
        }
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::from(collected),
            version: parts.version,
        })
    }

    /// GETs `url`, handing each data chunk to `f` instead of keeping it;
    /// returns the head and the body length. A body error reports how many
    /// bytes arrived before it.
    pub async fn get_streaming(
        &self,
        url: &str,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(http::response::Parts, u64), String> {
        self.get_streaming_with(url, &[], |d| {
            f(d);
            true
        })
        .await
    }

    /// Like [`Client::get_streaming`] with request headers; `f` returning false stops
    /// reading and drops the response (a client that leaves mid-body).
    pub async fn get_streaming_with(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<(http::response::Parts, u64), String> {
        let mut req = Request::get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(Full::default())
            .map_err(|e| format!("GET {url}: {e}"))?;
        let (parts, mut body) = self.exchange(req).await?;
        let mut total = 0u64;
        loop {
            match body.chunk().await {
                Ok(Some(data)) => {
                    total += data.len() as u64;
                    if !f(&data) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(format!("GET {url}: body error after {total} bytes: {e}")),
            }
        }
        Ok((parts, total))
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Streaming), String> {
        let what = format!("{} {}", req.method(), req.uri());
        match &self.inner {
            Transport::Hyper(client) => {
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("{what}: {}", chain(&e)))?;
                let (parts, body) = resp.into_parts();
                Ok((parts, Streaming::Hyper(body)))
            }
            Transport::H3(client) => {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| format!("{what}: request body: {e}"))?
                    .to_bytes();
                let resp = client
                    .send(Request::from_parts(parts, body))
                    .await
                    .map_err(|e| format!("{what}: {e}"))?;
                let parts = resp.parts.clone();
                Ok((parts, Streaming::H3(Box::new(resp))))
            }
        }
    }
}

fn connector(tls: ClientConfig) -> HttpsConnector<HttpConnector> {
    connector_from(tls, None)
}

/// As [`connector`], connecting from `local` (e.g. 127.0.0.2, another loopback client).
fn connector_from(
    tls: ClientConfig,
    local: Option<std::net::IpAddr>,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_local_address(local);
    // The TLS layer decides per scheme; the TCP layer must accept https URIs.
    http.enforce_http(false);
    http.set_nodelay(true);
    // From<(connector, config)> keeps our ALPN list (the builder would reject
    // a preset one and sends none at all for HTTP/1.1-only).
    HttpsConnector::from((http, tls))
}

/// An error and its sources, since hyper's top-level messages are terse.
fn chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
