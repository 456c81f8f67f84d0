//! The HTTP/3 probe against a real in-process edge on loopback (no namespaces, no root).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge::config::{EdgeConfig, SiteConfig};
use edge::demo::DemoOrigin;
use edge::server::{Edge, RunningEdge};
use shared::tls::DevCa;
use testnet::probe::{ProbeTarget, fetch_h3};

const HOST: &str = "cdn.quicdn.test";
/// The demo origin's `/hello.txt`.
const HELLO: &str = "hello from the quicdn demo origin\n";

/// A demo origin behind an edge serving HTTP/3 for [`HOST`] with a certificate from a dev CA.
struct Fixture {
    edge: RunningEdge,
    ca: PathBuf,
    dir: tempfile::TempDir,
    _origin: DemoOrigin,
}

impl Fixture {
    async fn start() -> Self {
        let origin = DemoOrigin::start(([127, 0, 0, 1], 0).into())
            .await
            .expect("demo origin starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = write_ca(dir.path(), "ca", Some(HOST));
        let edge = Edge::start(edge_config(dir.path(), &origin.url()))
            .await
            .expect("edge starts");
        Self {
            edge,
            ca,
            dir,
            _origin: origin,
        }
    }

    fn target(&self, ca: PathBuf, timeout: Duration) -> ProbeTarget {
        ProbeTarget {
            url: format!("https://{HOST}/hello.txt").parse().unwrap(),
            connect: self.edge.h3_addr().expect("HTTP/3 listener"),
            ca,
            timeout,
        }
    }
}

/// Writes a new CA's PEM as `dir/<name>.pem`; with `leaf`, also a certificate and key for
/// that name (`dir/leaf.pem`, `dir/leaf-key.pem`).
fn write_ca(dir: &Path, name: &str, leaf: Option<&str>) -> PathBuf {
    let ca = DevCa::generate(&format!("testnet {name}")).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, ca.cert_pem()).unwrap();
    if let Some(host) = leaf {
        let material = ca.issue(&[host.to_owned()]).unwrap();
        material
            .write_pem(&dir.join("leaf.pem"), &dir.join("leaf-key.pem"))
            .unwrap();
    }
    path
}

fn edge_config(dir: &Path, origin: &str) -> EdgeConfig {
    let mut c = EdgeConfig {
        name: "probe-test".into(),
        ..EdgeConfig::default()
    };
    c.listen.https = Some(([127, 0, 0, 1], 0).into());
    c.listen.http = None;
    c.listen.admin = None;
    c.listen.shutdown_grace = Duration::from_secs(1);
    c.tls.cert = Some(dir.join("leaf.pem"));
    c.tls.key = Some(dir.join("leaf-key.pem"));
    c.quic.enabled = true;
    c.cache.dir = dir.join("cache");
    c.log.access_log = false;
    c.sites = vec![SiteConfig::new(&[HOST], origin)];
    c
}

#[tokio::test]
async fn three_fetches_on_one_connection_miss_then_hit() {
    let fx = Fixture::start().await;
    let report = fetch_h3(&fx.target(fx.ca.clone(), Duration::from_secs(5)), 3)
        .await
        .expect("probe succeeds");
    assert_eq!(report.alpn, "h3");
    assert!(report.handshake_ms > 0.0, "{report:?}");
    assert_eq!(report.fetches.len(), 3);
    for (i, f) in report.fetches.iter().enumerate() {
        assert_eq!(f.status, 200, "fetch {i}: {f:?}");
        assert_eq!(f.bytes, HELLO.len() as u64, "fetch {i}: {f:?}");
        assert!(
            f.ttfb_ms > 0.0 && f.ttfb_ms <= f.total_ms,
            "fetch {i}: {f:?}"
        );
        let status = f.cache_status.as_deref().unwrap_or_default();
        // The edge renders RFC 9211: `probe-test; fwd=uri-miss; ...` or `probe-test; hit; ...`.
        assert!(status.starts_with("probe-test;"), "fetch {i}: {status}");
        if i == 0 {
            assert!(status.contains("fwd=uri-miss"), "fetch {i}: {status}");
        } else {
            assert!(status.contains("; hit"), "fetch {i}: {status}");
            assert!(f.age.is_some(), "a hit carries Age: {f:?}");
        }
    }
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"alpn\":\"h3\""), "{json}");
    fx.edge.shutdown().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_rejected() {
    let fx = Fixture::start().await;
    let other = write_ca(fx.dir.path(), "other-ca", None);
    let err = fetch_h3(&fx.target(other, Duration::from_secs(5)), 1)
        .await
        .expect_err("the edge's certificate is not from this CA");
    let msg = format!("{err:#}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains(HOST), "{msg}");
    assert!(
        msg.contains(&fx.edge.h3_addr().unwrap().to_string()),
        "{msg}"
    );
    fx.edge.shutdown().await;
}

#[tokio::test]
async fn nothing_listening_fails_within_the_timeout_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path(), "ca", None);
    // A port that was free a moment ago: nothing answers there.
    let connect: SocketAddr = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let target = ProbeTarget {
        url: format!("https://{HOST}/hello.txt").parse().unwrap(),
        connect,
        ca,
        timeout: Duration::from_millis(500),
    };
    let started = Instant::now();
    let err = fetch_h3(&target, 1).await.expect_err("nobody answers");
    let elapsed = started.elapsed();
    let msg = format!("{err:#}");
    assert!(msg.contains(&connect.to_string()), "{msg}");
    assert!(msg.contains("timed out"), "{msg}");
    // The deadline plus the bounded close.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}: {msg}");
}
