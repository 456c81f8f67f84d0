//! The development CA on disk, and its leaves as real clients see them: rustls
//! (`shared::tls::client_config`), curl, and the `certs` binary.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use certs::{Ca, CertsError, Leaf};
use shared::tls::TlsMaterial;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TESTNET_SANS: [&str; 5] = [
    "cdn.quicdn.test",
    "*.cdn.quicdn.test",
    "*.quicdn.test",
    "localhost",
    "127.0.0.1",
];

fn sans(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A TLS server on 127.0.0.1:0 serving `leaf`, answering every request `200 ok`. It stops
/// with the test's runtime.
async fn serve(leaf: &Leaf) -> SocketAddr {
    let material = TlsMaterial::from_pem_files(&leaf.cert, &leaf.key).unwrap();
    assert_eq!(material.chain.len(), 2, "leaf then CA");
    let acceptor = TlsAcceptor::from(Arc::new(material.server_config(&[b"http/1.1"]).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response =
                    "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// A rustls handshake with `name`, trusting the public roots plus `ca`.
async fn handshake(ca: &Path, addr: SocketAddr, name: &str) -> std::io::Result<()> {
    let config = shared::tls::client_config(Some(ca)).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map(drop)
}

#[test]
fn a_created_ca_is_reloaded_unchanged_and_keys_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/out");
    let ca = Ca::load_or_create(&out).unwrap();
    assert!(ca.created());
    assert_eq!(ca.cert_path(), out.join("ca.pem"));
    assert_eq!(mode(ca.key_path()), 0o600);
    let cert = std::fs::read(ca.cert_path()).unwrap();

    let again = Ca::load_or_create(&out).unwrap();
    assert!(!again.created());
    assert_eq!(std::fs::read(again.cert_path()).unwrap(), cert);
    assert_eq!(again.dev_ca().cert_pem(), ca.dev_ca().cert_pem());
    assert_eq!(again.dev_ca().key_pem(), ca.dev_ca().key_pem());

    // Issuing replaces older files, and a key made readable by mistake becomes private again.
    let first = again.issue("site", &sans(&["site.test"])).unwrap();
    assert_eq!(first.cert, out.join("site.pem"));
    assert_eq!(first.key, out.join("site-key.pem"));
    std::fs::set_permissions(&first.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let old_key = std::fs::read(&first.key).unwrap();
    let second = again.issue("site", &sans(&["site.test"])).unwrap();
    assert_eq!(second, first);
    assert_ne!(std::fs::read(&second.key).unwrap(), old_key);
    assert_eq!(mode(&second.key), 0o600);
    assert_eq!(mode(&second.cert), 0o644);
}

#[tokio::test]
async fn leaves_verify_against_the_ca_for_names_wildcards_and_ips() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let testnet = ca.issue("testnet", &sans(&TESTNET_SANS)).unwrap();
    // A CA loaded back from disk issues leaves the saved ca.pem still verifies.
    let reloaded = Ca::load_or_create(dir.path()).unwrap();
    let local = reloaded
        .issue("localhost", &sans(&["localhost", "127.0.0.1", "::1"]))
        .unwrap();

    let addr = serve(&testnet).await;
    for name in [
        "cdn.quicdn.test",
        "www.cdn.quicdn.test",
        "a.quicdn.test",
        "127.0.0.1",
    ] {
        handshake(ca.cert_path(), addr, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for wrong in ["quicdn.test", "a.b.cdn.quicdn.test", "127.0.0.2"] {
        assert!(
            handshake(ca.cert_path(), addr, wrong).await.is_err(),
            "{wrong}"
        );
    }
    let addr = serve(&local).await;
    for name in ["localhost", "127.0.0.1"] {
        handshake(ca.cert_path(), addr, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Another CA's clients do not trust it.
    let other = tempfile::tempdir().unwrap();
    let other_ca = Ca::load_or_create(other.path()).unwrap();
    assert!(
        handshake(other_ca.cert_path(), addr, "localhost")
            .await
            .is_err()
    );
}

#[test]
fn a_half_present_or_garbled_ca_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let (cert, key) = (ca.cert_path().to_owned(), ca.key_path().to_owned());
    let good_key = std::fs::read(&key).unwrap();

    std::fs::remove_file(&key).unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, CertsError::HalfCa { .. }), "{err}");
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
    std::fs::write(&key, &good_key).unwrap();

    let saved_cert = std::fs::read(&cert).unwrap();
    std::fs::remove_file(&cert).unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca.pem exists") || err.contains("ca-key.pem exists"),
        "{err}"
    );

    std::fs::write(&cert, "garbage\n").unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&*cert.to_string_lossy()), "{err}");
    std::fs::write(&cert, &saved_cert).unwrap();

    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&*key.to_string_lossy()), "{err}");

    // The other CA's key does not match this certificate.
    let other = tempfile::tempdir().unwrap();
    Ca::load_or_create(other.path()).unwrap();
    std::fs::copy(other.path().join("ca-key.pem"), &key).unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca-key.pem") && err.contains("public key"),
        "{err}"
    );
}

#[test]
fn bad_leaf_names_and_sans_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    for name in ["ca", "../x", "X", "a-key", ""] {
        let err = ca.issue(name, &sans(&["a.test"])).unwrap_err();
        assert!(
            matches!(err, CertsError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    let err = ca.issue("x", &sans(&["a.*.test"])).unwrap_err();
    assert!(err.to_string().contains("a.*.test"), "{err}");
    assert!(matches!(ca.issue("x", &[]), Err(CertsError::NoSans { .. })));
    assert!(!dir.path().join("x.pem").exists());
}

#[tokio::test]
async fn curl_trusts_the_leaf_through_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let testnet = ca.issue("testnet", &sans(&TESTNET_SANS)).unwrap();
    let port = serve(&testnet).await.port();
    let curl = |url: String, extra: Vec<String>| {
        let cacert = ca.cert_path().to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
                .arg(cacert)
                .args(extra)
                .arg(url)
                .output()
                .expect("curl must be installed for this test (apt-get install curl)")
        })
    };
    let resolve = format!("www.cdn.quicdn.test:{port}:127.0.0.1");
    for (url, extra) in [
        (format!("https://localhost:{port}/"), vec![]),
        (format!("https://127.0.0.1:{port}/"), vec![]),
        (
            format!("https://www.cdn.quicdn.test:{port}/"),
            vec!["--resolve".to_owned(), resolve],
        ),
    ] {
        let out = curl(url.clone(), extra).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl {url}: {stderr}");
        assert_eq!(out.stdout, b"ok\n", "{url}");
    }
    // Without the CA, curl refuses the leaf: the trust really comes from ca.pem.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", "/dev/null"])
            .arg(format!("https://127.0.0.1:{port}/"))
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_binary_issues_the_default_leaves_and_explains_trust() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_certs"))
            .arg("--dir")
            .arg(&out_dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "ca.pem",
        "localhost.pem",
        "localhost-key.pem",
        "testnet.pem",
        "testnet-key.pem",
    ] {
        assert!(out_dir.join(file).exists(), "{file}");
    }
    assert!(stdout.contains("created a new CA"), "{stdout}");
    assert!(stdout.contains("update-ca-certificates") && stdout.contains("--cacert"));

    let out = run(&[
        "--leaf",
        "edge-a=edge-a.test,10.0.0.1",
        "--leaf",
        "b=b.test",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("using the CA"),
        "{stdout}"
    );
    assert!(out_dir.join("edge-a.pem").exists() && out_dir.join("b-key.pem").exists());

    let out = run(&["--leaf", "no-equals-sign"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=SAN"));

    std::fs::write(out_dir.join("ca.pem"), "garbage").unwrap();
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("certs: ") && stderr.contains("ca.pem"),
        "{stderr}"
    );
}
