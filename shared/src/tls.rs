//! TLS material: PEM loading, a generated development certificate, rustls server configs and
//! the SPKI hash that browsers can be told to trust.
//!
//! Everything uses the ring provider explicitly: with two providers compiled in (a dependency
//! may enable aws-lc), rustls' implicit default panics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
    #[error("cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring crypto provider every quicdn TLS config is built on.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsMaterial {
    /// Loads a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.to_owned(),
                what: "no CERTIFICATE block found".into(),
            });
        }
        let key_pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_error(key, e))?;
        Ok(Self {
            chain,
            key: key_der,
        })
    }

    /// Base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: the value Chromium's
    /// `--ignore-certificate-errors-spki-list` and HPKP-style pins take.
    pub fn spki_sha256(&self) -> Option<String> {
        let leaf = self.chain.first()?;
        let cert = leaf_spki(leaf)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &cert);
        Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
    }

    /// A rustls server config for this material, offering `alpn` in order.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
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

/// Loads every certificate of a PEM file (a CA bundle).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))
}

/// A self-signed development certificate kept in a directory so that its SPKI hash stays the
/// same across restarts.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    pub material: TlsMaterial,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl DevCertificate {
    /// Loads `dir/dev-cert.pem` and `dir/dev-key.pem`, or generates them for `names` (DNS names
    /// or IP addresses) when missing or unreadable.
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert_path = dir.join("dev-cert.pem");
        let key_path = dir.join("dev-key.pem");
        if let Ok(material) = TlsMaterial::from_pem_files(&cert_path, &key_path) {
            return Ok(Self {
                material,
                cert_path,
                key_path,
            });
        }
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names.to_vec())?;
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        write(&cert_path, cert.pem().as_bytes())?;
        write(&key_path, signing_key.serialize_pem().as_bytes())?;
        let material = TlsMaterial {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
        };
        Ok(Self {
            material,
            cert_path,
            key_path,
        })
    }
}

/// A development certificate authority: issues leaf certificates that clients trust through
/// the CA alone (a browser's or curl's CA file, geodns' `health.ca_file`). A self-signed leaf
/// cannot serve as a trust anchor for webpki-based clients; a CA can.
pub struct DevCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl DevCa {
    /// A new CA named `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The CA certificate in PEM, for clients to trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[String]) -> Result<TlsMaterial, TlsError> {
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(TlsMaterial {
            chain: vec![cert.der().clone(), self.issuer.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

impl TlsMaterial {
    /// Writes the chain and key as PEM files.
    pub fn write_pem(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let chain: String = self
            .chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect();
        write(cert, chain.as_bytes())?;
        write(
            key,
            pem_block("PRIVATE KEY", self.key.secret_der()).as_bytes(),
        )
    }
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

fn leaf_spki(leaf: &CertificateDer<'_>) -> Option<Vec<u8>> {
    // rustls does not expose the SPKI of a parsed certificate; a minimal DER walk finds it:
    // Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, sigAlg, issuer,
    // validity, subject, subjectPublicKeyInfo, ... }, ... }
    let (_, cert_body, _) = der_element(leaf.as_ref())?;
    let (_, mut tbs, _) = der_element(cert_body)?;
    let (tag, _, rest) = der_element(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..5 {
        let (_, _, rest) = der_element(tbs)?;
        tbs = rest;
    }
    let (_, _, rest) = der_element(tbs)?;
    Some(tbs[..tbs.len() - rest.len()].to_vec())
}

/// Splits one DER element off `input`: (tag, contents, remaining input).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let contents = input.get(header..header.checked_add(len)?)?;
    Some((tag, contents, &input[header + len..]))
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
mod tests {
    use super::*;

    #[test]
    fn dev_certificate_is_stable_across_loads_and_hashes_its_spki() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = DevCertificate::load_or_generate(dir.path(), &names).unwrap();
        let second = DevCertificate::load_or_generate(dir.path(), &names).unwrap();
        let spki = first.material.spki_sha256().unwrap();
        assert_eq!(spki, second.material.spki_sha256().unwrap());
        // The SPKI hash is over the public key alone: recompute it from the key pair.
        let key_pem = std::fs::read_to_string(&first.key_path).unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        assert_eq!(spki, expected);
        first.material.server_config(&[b"h2"]).unwrap();
    }

    #[test]
    fn a_dev_ca_issues_certificates_that_webpki_accepts_through_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate("test CA").unwrap();
        let leaf = ca.issue(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (cert, key, ca_file) = (
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("ca.pem"),
        );
        leaf.write_pem(&cert, &key).unwrap();
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let loaded = TlsMaterial::from_pem_files(&cert, &key).unwrap();
        assert_eq!(loaded.chain.len(), 2);
        loaded.server_config(&[b"h2"]).unwrap();
        // The leaf verifies against the CA as the only trust anchor.
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certificates(&ca_file).unwrap() {
            roots.add(c).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&loaded.chain[0], &loaded.chain[1..], &name, &[], now)
            .unwrap();
    }

    #[test]
    fn bad_pem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let err = TlsMaterial::from_pem_files(&cert, &cert)
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.pem"), "{err}");
    }
}
