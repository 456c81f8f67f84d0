//! [`DevCa`], a development certificate authority: generated or loaded back from PEM, it
//! issues server certificates that clients trust through the CA alone. Also the validity
//! dates of the certificates it makes.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::material::TlsMaterial;
use super::{TlsError, der, pem_block, read_text};

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
pub(super) fn civil_from_days(days: i64) -> (i32, u8, u8) {
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
