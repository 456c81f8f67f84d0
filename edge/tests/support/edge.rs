//! The edge under test: in-process ([`TestEdge`]) for behaviour tests, or as the real binary
//! ([`EdgeProcess`]) where a process boundary matters (restart, memory, CLI).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edge::config::{EdgeConfig, SiteConfig};
use edge::server::{Edge, RunningEdge};

use super::client::Client;

/// Host names the test site answers for.
pub const SITE_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "cdn.test"];

/// A config for tests: ephemeral ports on loopback, the given cache dir, one site.
pub fn test_config(origin: &str, cache_dir: &Path) -> EdgeConfig {
    let mut c = EdgeConfig {
        name: "edge-test".into(),
        ..EdgeConfig::default()
    };
    c.listen.https = Some(([127, 0, 0, 1], 0).into());
    c.listen.http = Some(([127, 0, 0, 1], 0).into());
    c.listen.admin = Some(([127, 0, 0, 1], 0).into());
    c.listen.shutdown_grace = Duration::from_secs(2);
    c.cache.dir = cache_dir.to_owned();
    c.sites = vec![SiteConfig::new(&SITE_HOSTS, origin)];
    c
}

/// How a test reaches the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over plain TCP.
    H1,
    /// HTTP/1.1 over TLS.
    H1Tls,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

impl Proto {
    pub const ALL: [Self; 4] = [Self::H1, Self::H1Tls, Self::H2, Self::H3];

    /// The `protocol` label the edge reports for requests over this.
    pub fn label(self) -> &'static str {
        match self {
            Self::H1 | Self::H1Tls => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// An in-process edge with its own cache directory.
pub struct TestEdge {
    pub running: RunningEdge,
    pub config: EdgeConfig,
    dir: tempfile::TempDir,
}

impl TestEdge {
    pub async fn start(origin: &str) -> Self {
        Self::start_with(origin, |_| {}).await
    }

    pub async fn start_with(origin: &str, tweak: impl FnOnce(&mut EdgeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(origin, &dir.path().join("cache"));
        tweak(&mut config);
        let running = Edge::start(config.clone()).await.expect("edge starts");
        Self {
            running,
            config,
            dir,
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.config.cache.dir.clone()
    }

    pub fn cert_der(&self) -> Vec<u8> {
        let material = self.running.certificate().expect("https listener");
        material.chain[0].as_ref().to_vec()
    }

    /// A client speaking `proto` to this edge.
    pub fn client(&self, proto: Proto) -> Client {
        match proto {
            Proto::H1 => Client::h1(None),
            Proto::H1Tls => Client::h1(Some(&self.cert_der())),
            Proto::H2 => Client::h2(&self.cert_der()),
            Proto::H3 => Client::h3(&self.cert_der()),
        }
    }

    /// The URL of `path` over `proto` (host `localhost`, which the test site serves).
    pub fn url(&self, proto: Proto, path: &str) -> String {
        match proto {
            Proto::H1 => format!(
                "http://localhost:{}{path}",
                self.running.http_addr().unwrap().port()
            ),
            Proto::H1Tls | Proto::H2 | Proto::H3 => format!(
                "https://localhost:{}{path}",
                self.running.https_addr().unwrap().port()
            ),
        }
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.running.admin_addr().unwrap());
        Client::h1(None).get(&url).await.text()
    }

    /// Stops the edge and hands back its directory (the cache survives for a restart).
    pub async fn stop(self) -> tempfile::TempDir {
        self.running.shutdown().await;
        self.dir
    }
}

/// One sample of a metric from Prometheus text, e.g. `quicdn_coalesced_waits_total`, or with
/// labels `quicdn_requests_total{protocol="h1",cache="hit",status="2xx"}`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The `edge` binary as a child process, its ports read from its "listening" log lines.
pub struct EdgeProcess {
    child: Child,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl EdgeProcess {
    /// Runs `edge --config <file>` with `config` written next to the cache.
    pub fn spawn(config: &EdgeConfig) -> Self {
        let text = shared::config::render(config).expect("config renders");
        let path = config.cache.dir.with_extension("toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info,access=off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edge binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = super::lines_of(stderr);
        let mut addrs = std::collections::HashMap::new();
        while !["https", "http", "admin"]
            .iter()
            .all(|k| addrs.contains_key(*k))
        {
            let line = log
                .recv_timeout(Duration::from_secs(30))
                .expect("edge prints its listening lines within 30 s");
            if let Some((name, addr)) = parse_listening(&line) {
                addrs.insert(name, addr);
            }
        }
        Self {
            child,
            https: addrs["https"],
            http: addrs["http"],
            admin: addrs["admin"],
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Lines the process has logged so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "edge did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `... listening listener=https addr=127.0.0.1:1234`.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let name = field("listener=")?;
    let addr = field("addr=")?.parse().ok()?;
    Some((name, addr))
}
