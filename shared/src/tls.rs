//! TLS material: PEM loading, a generated development certificate, a development CA that can
//! be saved and loaded back ([`DevCa`], used by the `certs` tool), rustls server and client
//! configs, and the SPKI hash that browsers can be told to trust.
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
///
/// The CA certificate has critical basic constraints (a CA with path length 0: it signs leaves
/// only) and the key usages keyCertSign and cRLSign, which browsers and OpenSSL require of an
/// anchor. Leaves carry their names as subject alternative names (DNS names, wildcards, IP
/// addresses), the serverAuth extended key usage and a validity browsers accept. A CA can be
/// saved ([`cert_pem`](Self::cert_pem), [`key_pem`](Self::key_pem)) and loaded back
/// ([`from_pem`](Self::from_pem)) to go on issuing leaves that the same anchor verifies.
pub struct DevCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert: CertificateDer<'static>,
}

/// A development CA is trusted once per machine: ten years spares re-importing it.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Under the 398 days browsers accept from public CAs (Apple platforms apply a limit to local
/// anchors too), so no client policy on lifetimes rejects a leaf.
const LEAF_VALIDITY_DAYS: i64 = 397;
/// `notBefore` is backdated for clients whose clocks run a little behind.
const BACKDATE_DAYS: i64 = 1;
/// A CA's key usages; CrlSign also lets rcgen sign revocation lists with it.
const CA_KEY_USAGES: [rcgen::KeyUsagePurpose; 3] = [
    rcgen::KeyUsagePurpose::KeyCertSign,
    rcgen::KeyUsagePurpose::CrlSign,
    rcgen::KeyUsagePurpose::DigitalSignature,
];

impl DevCa {
    /// A new CA named `name` (its subject common name).
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = CA_KEY_USAGES.to_vec();
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Self {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        })
    }

    /// Loads a CA saved as [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem). Checks
    /// that the certificate is a CA, that the key is its key, and that the leaves it issues
    /// will name it as their issuer byte for byte (its subject must use UTF8String,
    /// PrintableString or IA5String values, one attribute per RDN).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::parse(cert_pem, key_pem).map_err(|(part, what)| TlsError::InvalidCa {
            what: format!("{}: {what}", part.noun()),
        })
    }

    /// [`from_pem`](Self::from_pem) on two files; errors name the file at fault.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_text(cert)?;
        let key_pem = read_text(key)?;
        Self::parse(&cert_pem, &key_pem).map_err(|(part, what)| TlsError::Pem {
            path: match part {
                CaPart::Certificate => cert,
                CaPart::Key => key,
            }
            .to_owned(),
            what,
        })
    }

    /// The CA certificate in PEM, for clients to trust.
    pub fn cert_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.cert)
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA's private key as PKCS#8 PEM: keep it private (mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a server certificate for `names`: DNS names, wildcards (`*.cdn.example.com`) or
    /// IP addresses (`127.0.0.1`, `::1`, `[::1]`). The chain is the leaf, then the CA.
    pub fn issue(&self, names: &[String]) -> Result<TlsMaterial, TlsError> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| subject_alt_name(n))
            .collect::<Result<_, _>>()?;
        // Clients match the SANs only; a common name just makes the leaf readable in viewers.
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first().filter(|n| !n.is_empty() && n.len() <= 64) {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.trim());
        }
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY_DAYS);
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(TlsMaterial {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    fn parse(cert_pem: &str, key_pem: &str) -> Result<Self, (CaPart, String)> {
        use rcgen::PublicKeyData as _;
        let cert_err = |what: &str| (CaPart::Certificate, what.to_owned());
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => cert_err("no CERTIFICATE block found"),
            e => (CaPart::Certificate, e.to_string()),
        })?;
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| {
            (
                CaPart::Key,
                format!("not a usable PKCS#8 private key ({e})"),
            )
        })?;
        let parts = der::CertParts::parse(&cert)
            .ok_or_else(|| cert_err("not a well-formed X.509 certificate"))?;
        if !parts.is_ca() {
            return Err(cert_err(
                "not a CA certificate (no basic constraints with cA)",
            ));
        }
        if !parts.may_sign_certificates() {
            return Err(cert_err("its key usage does not allow keyCertSign"));
        }
        if parts.spki != key.subject_public_key_info() {
            return Err((
                CaPart::Key,
                "is not the key of the CA certificate (its public key differs)".into(),
            ));
        }
        let unreproducible = "its subject uses encodings quicdn cannot reproduce in the leaves";
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name =
            der::distinguished_name(parts.subject).ok_or_else(|| cert_err(unreproducible))?;
        params.key_usages = CA_KEY_USAGES.to_vec();
        if let Some(id) = parts.subject_key_id() {
            // The leaves' authority key identifier must be the CA's own identifier.
            params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(id.to_vec());
        }
        // Leaves chain to the CA only if their issuer equals its subject byte for byte: check
        // the encoding on a throwaway certificate.
        let probe = params
            .self_signed(&key)
            .map_err(|e| (CaPart::Key, e.to_string()))?;
        let same = der::CertParts::parse(probe.der()).is_some_and(|p| p.subject == parts.subject);
        if !same {
            return Err(cert_err(unreproducible));
        }
        let cert = cert.into_owned();
        Ok(Self {
            issuer: rcgen::Issuer::new(params, key),
            cert,
        })
    }
}

/// Which of a CA's two PEM inputs a problem is in.
#[derive(Debug, Clone, Copy)]
enum CaPart {
    Certificate,
    Key,
}

impl CaPart {
    fn noun(self) -> &'static str {
        match self {
            Self::Certificate => "CA certificate",
            Self::Key => "CA key",
        }
    }
}

/// One subject alternative name: an IP address (brackets allowed around IPv6) or a DNS name.
fn subject_alt_name(name: &str) -> Result<rcgen::SanType, TlsError> {
    let name = name.trim();
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    Ok(match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => rcgen::SanType::IpAddress(ip),
        Err(_) => rcgen::SanType::DnsName(name.try_into()?),
    })
}

/// Makes `params` valid from `BACKDATE_DAYS` ago (midnight UTC) for `days` days.
fn set_validity(params: &mut rcgen::CertificateParams, days: i64) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let start = i64::try_from(since_epoch).unwrap_or(0) - BACKDATE_DAYS;
    let (y, m, d) = civil_from_days(start);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(start + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so that certificate dates need no calendar dependency.
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Day and month are in 1..=31 and 1..=12 by construction; the year fits for any date
    // a certificate can carry.
    (year as i32, month as u8, day as u8)
}

impl TlsMaterial {
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
    der::CertParts::parse(leaf).map(|p| p.spki.to_vec())
}

/// The few X.509 fields quicdn reads: rustls does not expose a parsed certificate, and rcgen
/// parses only with a feature that pulls in a full ASN.1 stack. A minimal DER walk suffices.
mod der {
    /// Tags of the DER elements read here.
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const BOOLEAN: u8 = 0x01;
    const BIT_STRING: u8 = 0x03;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    const VERSION: u8 = 0xa0;
    const EXTENSIONS: u8 = 0xa3;

    /// id-ce-basicConstraints, id-ce-keyUsage, id-ce-subjectKeyIdentifier (2.5.29.x).
    const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];

    /// Parts of a certificate, as slices of its DER.
    pub(super) struct CertParts<'a> {
        /// The subject Name, whole element (tag and length included).
        pub(super) subject: &'a [u8],
        /// The SubjectPublicKeyInfo, whole element: what SPKI pins hash.
        pub(super) spki: &'a [u8],
        /// (extension OID, contents of its OCTET STRING value).
        extensions: Vec<(&'a [u8], &'a [u8])>,
    }

    impl<'a> CertParts<'a> {
        /// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, sigAlg,
        /// issuer, validity, subject, subjectPublicKeyInfo, [1], [2], [3] extensions }, .. }
        pub(super) fn parse(cert: &'a [u8]) -> Option<Self> {
            let (SEQUENCE, body, _) = element(cert)? else {
                return None;
            };
            let (SEQUENCE, tbs, _) = element(body)? else {
                return None;
            };
            let fields = elements(tbs)?;
            let first = usize::from(fields.first()?.tag == VERSION);
            let (subject, spki) = (fields.get(first + 4)?, fields.get(first + 5)?);
            if subject.tag != SEQUENCE || spki.tag != SEQUENCE {
                return None;
            }
            let mut extensions = Vec::new();
            if let Some(list) = fields[first + 6..].iter().find(|f| f.tag == EXTENSIONS) {
                let (SEQUENCE, list, _) = element(list.contents)? else {
                    return None;
                };
                for ext in elements(list)? {
                    // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
                    // extnValue OCTET STRING }
                    let parts = elements(ext.contents)?;
                    let (oid, value) = (parts.first()?, parts.last()?);
                    if oid.tag != OID || value.tag != OCTET_STRING {
                        return None;
                    }
                    extensions.push((oid.contents, value.contents));
                }
            }
            Some(Self {
                subject: subject.whole,
                spki: spki.whole,
                extensions,
            })
        }

        fn extension(&self, oid: &[u8]) -> Option<&'a [u8]> {
            self.extensions.iter().find(|e| e.0 == oid).map(|e| e.1)
        }

        /// BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL }
        pub(super) fn is_ca(&self) -> bool {
            let Some(value) = self.extension(BASIC_CONSTRAINTS) else {
                return false;
            };
            let Some((SEQUENCE, constraints, _)) = element(value) else {
                return false;
            };
            matches!(element(constraints), Some((BOOLEAN, [flag], _)) if *flag != 0)
        }

        /// True without a key usage extension (no restriction) or with keyCertSign (bit 5).
        pub(super) fn may_sign_certificates(&self) -> bool {
            let Some(value) = self.extension(KEY_USAGE) else {
                return true;
            };
            matches!(element(value), Some((BIT_STRING, [_unused, bits, ..], _)) if bits & 0x04 != 0)
        }

        pub(super) fn subject_key_id(&self) -> Option<&'a [u8]> {
            match element(self.extension(SUBJECT_KEY_ID)?)? {
                (OCTET_STRING, id, _) => Some(id),
                _ => None,
            }
        }
    }

    /// The rcgen form of a DER Name, when rcgen can write it back identically: one attribute
    /// per RDN, each type once, string values in UTF8String, PrintableString or IA5String.
    pub(super) fn distinguished_name(name: &[u8]) -> Option<rcgen::DistinguishedName> {
        let (SEQUENCE, rdns, _) = element(name)? else {
            return None;
        };
        let mut dn = rcgen::DistinguishedName::new();
        for rdn in elements(rdns)? {
            let [attribute] = elements(rdn.contents)?[..] else {
                return None;
            };
            let [oid, value] = elements(attribute.contents)?[..] else {
                return None;
            };
            if rdn.tag != SET || attribute.tag != SEQUENCE || oid.tag != OID {
                return None;
            }
            let kind = rcgen::DnType::from_oid(&oid_arcs(oid.contents)?);
            let text = std::str::from_utf8(value.contents).ok()?;
            let value = match value.tag {
                UTF8_STRING => rcgen::DnValue::Utf8String(text.to_owned()),
                PRINTABLE_STRING => rcgen::DnValue::PrintableString(text.try_into().ok()?),
                IA5_STRING => rcgen::DnValue::Ia5String(text.try_into().ok()?),
                _ => return None,
            };
            if dn.get(&kind).is_some() {
                return None;
            }
            dn.push(kind, value);
        }
        Some(dn)
    }

    /// The arcs of an OBJECT IDENTIFIER's contents (`55 1d 13` -> 2.5.29.19).
    fn oid_arcs(contents: &[u8]) -> Option<Vec<u64>> {
        let mut arcs = Vec::new();
        let mut acc: u64 = 0;
        for byte in contents {
            acc = acc.checked_mul(128)? | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                if arcs.is_empty() {
                    let first = (acc / 40).min(2);
                    arcs.extend([first, acc - first * 40]);
                } else {
                    arcs.push(acc);
                }
                acc = 0;
            }
        }
        (contents.last()? & 0x80 == 0).then_some(arcs)
    }

    /// One DER element of a sequence.
    #[derive(Clone, Copy)]
    struct Element<'a> {
        tag: u8,
        /// Tag, length and contents.
        whole: &'a [u8],
        contents: &'a [u8],
    }

    /// All the elements of `input`, in order.
    fn elements(mut input: &[u8]) -> Option<Vec<Element<'_>>> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (tag, contents, rest) = element(input)?;
            out.push(Element {
                tag,
                whole: &input[..input.len() - rest.len()],
                contents,
            });
            input = rest;
        }
        Some(out)
    }

    /// Splits one DER element off `input`: (tag, contents, remaining input).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
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
    fn ca_roots_hold_only_the_file_and_reject_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, DevCa::generate("roots CA").unwrap().cert_pem()).unwrap();
        assert_eq!(ca_roots(&ca_path).unwrap().len(), 1);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = ca_roots(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
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

    /// Verifies `chain` for `name` with webpki, trusting only `ca`.
    fn verify(ca: &CertificateDer<'static>, chain: &[CertificateDer<'static>], name: &str) {
        use rustls::client::danger::ServerCertVerifier as _;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    #[test]
    fn a_dev_ca_survives_a_pem_round_trip_and_keeps_issuing_for_the_same_anchor() {
        let ca = DevCa::generate("round trip CA").unwrap();
        let reloaded = DevCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        assert_eq!(reloaded.key_pem(), ca.key_pem());
        let names: Vec<String> = ["localhost", "*.cdn.quicdn.test", "127.0.0.1", "[::1]"]
            .map(String::from)
            .into();
        let leaf = reloaded.issue(&names).unwrap();
        assert_eq!(&leaf.chain[1], ca.cert_der());
        for name in ["localhost", "www.cdn.quicdn.test", "127.0.0.1", "::1"] {
            verify(ca.cert_der(), &leaf.chain, name);
        }
    }

    #[test]
    fn leaves_are_not_cas_and_name_their_issuer() {
        let ca = DevCa::generate("issuer CA").unwrap();
        let leaf = ca.issue(&["leaf.test".into()]).unwrap();
        let parts = der::CertParts::parse(&leaf.chain[0]).unwrap();
        assert!(!parts.is_ca());
        assert!(!parts.may_sign_certificates());
        let ca_parts = der::CertParts::parse(ca.cert_der()).unwrap();
        assert!(ca_parts.is_ca() && ca_parts.may_sign_certificates());
        // A leaf cannot be loaded as a CA.
        let fake = DevCa::from_pem(&pem_block("CERTIFICATE", &leaf.chain[0]), &leaf.key_pem());
        let err = fake.err().expect("a leaf is not a CA").to_string();
        assert!(err.contains("not a CA certificate"), "{err}");
    }

    #[test]
    fn from_pem_rejects_garbage_and_a_foreign_key() {
        let ca = DevCa::generate("one").unwrap();
        let other = DevCa::generate("two").unwrap();
        let err = |c: &str, k: &str| DevCa::from_pem(c, k).err().unwrap().to_string();
        let e = err("garbage", &ca.key_pem());
        assert!(e.contains("CA certificate"), "{e}");
        let e = err(&ca.cert_pem(), "garbage");
        assert!(e.contains("CA key"), "{e}");
        let e = err(&ca.cert_pem(), &other.key_pem());
        assert!(
            e.contains("CA key") && e.contains("public key differs"),
            "{e}"
        );
    }

    #[test]
    fn from_pem_files_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
        let ca = DevCa::generate("files").unwrap();
        std::fs::write(&cert, ca.cert_pem()).unwrap();
        std::fs::write(&key, ca.key_pem()).unwrap();
        DevCa::from_pem_files(&cert, &key).unwrap();
        std::fs::write(&key, DevCa::generate("x").unwrap().key_pem()).unwrap();
        let e = DevCa::from_pem_files(&cert, &key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca-key.pem"), "{e}");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = DevCa::from_pem_files(&cert, &key)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca.pem") && !e.contains("ca-key.pem"), "{e}");
    }

    #[test]
    fn subjects_in_other_string_types_round_trip() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::OrganizationName,
            rcgen::DnValue::PrintableString("Example Org".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Ünïcode CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = DevCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
        let leaf = ca.issue(&["a.test".into()]).unwrap();
        verify(ca.cert_der(), &leaf.chain, "a.test");
    }

    #[test]
    fn material_pem_round_trips() {
        let ca = DevCa::generate("pem").unwrap();
        let leaf = ca.issue(&["a.test".into()]).unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(leaf.chain_pem().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chain, leaf.chain);
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem().as_bytes()).unwrap();
        assert_eq!(key.secret_der(), leaf.key.secret_der());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
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
