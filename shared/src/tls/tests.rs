//! Unit tests of the TLS module: development certificates and CAs, PEM round trips, dates.

use rustls::pki_types::PrivateKeyDer;

use super::ca::civil_from_days;
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
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
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
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
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
