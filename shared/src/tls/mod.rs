//! TLS material: PEM loading, a generated development certificate, a development CA that can
//! be saved and loaded back ([`DevCa`], used by the `certs` tool), rustls server and client
//! configs, and the SPKI hash that browsers can be told to trust.
//!
//! Everything uses the ring provider explicitly: with two providers compiled in (a dependency
//! may enable aws-lc), rustls' implicit default panics.
//!
//! The files:
//! - this one: [`TlsError`], the provider, client configs and root stores from CA files, and
//!   reading and writing PEM;
//! - `material.rs`: [`TlsMaterial`] (a chain and its key: PEM files, server configs, the SPKI
//!   hash) and the self-signed [`DevCertificate`];
//! - `ca.rs`: [`DevCa`], the development CA, and certificate validity dates;
//! - `der.rs`: the few X.509 fields read from DER.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

mod ca;
mod der;
mod material;

pub use ca::DevCa;
pub use material::{DevCertificate, TlsMaterial};

/// Why TLS material could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("not a usable development CA: {what}")]
    InvalidCa { what: String },
    #[error("cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring crypto provider every quicdn TLS config is built on.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client config trusting the public web roots plus, optionally, the CAs of a PEM file
/// (an operator's internal CA, the testnet's development CA).
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certificates(path)? {
            // A bad extra anchor is the operator's to fix; the error names the problem.
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A root store holding only the CAs of a PEM file: for clients that must trust a private CA
/// and nothing else (the testnet's probes, benchmarks). An empty file is an error.
pub fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = load_certificates(path)?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "CA file holds no certificate".into(),
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("unusable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Loads every certificate of a PEM file (a CA bundle).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    String::from_utf8(read(path)?).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "not a text (PEM) file".into(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    std::fs::write(path, data).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        what: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
