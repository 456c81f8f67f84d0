//! [`TlsMaterial`], a certificate chain and its key: loaded from and written to PEM files,
//! turned into a rustls server config, hashed into the SPKI pin browsers take; and
//! [`DevCertificate`], a self-signed one kept on disk so that its pin survives restarts.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{TlsError, der, pem_block, pem_error, provider, read, write};

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
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

    /// Writes the chain and key as PEM files.
    pub fn write_pem(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write(cert, self.chain_pem().as_bytes())?;
        write(key, self.key_pem().as_bytes())
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect()
    }

    /// The private key as PEM, labelled for its format (PKCS#8, PKCS#1 or SEC1).
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_block(label, self.key.secret_der())
    }
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn leaf_spki(leaf: &CertificateDer<'_>) -> Option<Vec<u8>> {
    der::CertParts::parse(leaf).map(|p| p.spki.to_vec())
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
