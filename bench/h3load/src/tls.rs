//! The client's TLS: TLS 1.3 with ALPN `h3`, trusting the web roots, one CA file, or (bench
//! only) any certificate at all.

use std::path::PathBuf;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Which server certificates the client accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// Certificates that chain to the public web roots (the default).
    #[default]
    WebRoots,
    /// Only certificates that chain to a CA of this PEM file.
    CaFile(PathBuf),
    /// DANGER: any certificate for any name. The handshake signature is still checked, so
    /// the handshake costs what a verified one does, minus the chain validation.
    DangerAcceptAnyCertificate,
}

/// The QUIC client crypto for `trust`.
pub(crate) fn client_config(trust: &Trust) -> anyhow::Result<QuicClientConfig> {
    let provider = shared::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        // QUIC negotiates TLS 1.3 only, whatever else the config would allow.
        Trust::WebRoots => shared::tls::client_config(None)?,
        Trust::CaFile(path) => builder
            .with_root_certificates(shared::tls::ca_roots(path)?)
            .with_no_client_auth(),
        Trust::DangerAcceptAnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(DangerAcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    Ok(QuicClientConfig::try_from(tls)?)
}

/// Accepts every certificate chain; checks only that the server holds the key it presents.
#[derive(Debug)]
struct DangerAcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for DangerAcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
