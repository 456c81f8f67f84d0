//! h3load against a real in-process edge serving its built-in demo origin (`/hello.txt`),
//! through the library ([`h3load::run`]) and once through the binary (flags and JSON keys
//! are what the bench harness depends on). Each test starts its own edge on ports chosen
//! by the kernel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use edge::config::EdgeConfig;
use edge::server::{Edge, RunningEdge};
use h3load::{LoadConfig, Report, Trust};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The edge with no site configured, so it serves the demo origin for every host.
struct DemoEdge {
    running: RunningEdge,
    dir: tempfile::TempDir,
}

impl DemoEdge {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EdgeConfig {
            name: "h3load-test".into(),
            ..EdgeConfig::default()
        };
        config.listen.https = Some(([127, 0, 0, 1], 0).into());
        config.listen.http = Some(([127, 0, 0, 1], 0).into());
        config.listen.admin = None;
        config.listen.shutdown_grace = Duration::from_secs(1);
        config.cache.dir = dir.path().join("cache");
        config.log.access_log = false;
        let running = Edge::start(config).await.expect("edge starts");
        Self { running, dir }
    }

    fn h3_addr(&self) -> SocketAddr {
        self.running.h3_addr().expect("HTTP/3 listener")
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.h3_addr().port())
    }

    /// The development certificate the edge made (self-signed: it is its own CA).
    fn ca(&self) -> PathBuf {
        self.dir.path().join("cache/tls/dev-cert.pem")
    }

    /// A small load through `--connect`, trusting only the edge's certificate.
    fn load(&self, path: &str) -> LoadConfig {
        LoadConfig {
            connect: Some(self.h3_addr()),
            trust: Trust::CaFile(self.ca()),
            connections: 2,
            streams: 4,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            ..LoadConfig::new(self.url(path).parse().unwrap())
        }
    }

    /// The body length of `path` as the edge serves it over plain HTTP/1.1.
    async fn body_len(&self, path: &str) -> u64 {
        let addr = self.running.http_addr().expect("http listener");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8(response).expect("a text response");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let (_, body) = text.split_once("\r\n\r\n").expect("a response head");
        body.len() as u64
    }
}

async fn run(config: LoadConfig) -> anyhow::Result<Report> {
    tokio::task::spawn_blocking(move || h3load::run(&config))
        .await
        .expect("h3load::run does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_load_counts_every_body_byte_without_errors() {
    let edge = DemoEdge::start().await;
    let len = edge.body_len("/hello.txt").await;
    let config = LoadConfig {
        expect_length: Some(len),
        ..edge.load("/hello.txt")
    };
    let report = run(config).await.expect("the load runs");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.body_bytes, report.requests * len);
    assert_eq!((report.connections, report.streams), (2, 4));
    assert!(
        (0.9..1.5).contains(&report.duration_s),
        "{}",
        report.duration_s
    );
    assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms);
    assert!(report.p99_ms <= report.max_ms);
    assert!(report.req_per_s > 0.0 && report.client_cpu_util >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_length_makes_every_response_an_error() {
    let edge = DemoEdge::start().await;
    let len = edge.body_len("/hello.txt").await;
    let config = LoadConfig {
        expect_length: Some(len + 1),
        trust: Trust::DangerAcceptAnyCertificate,
        threads: 2,
        duration: Duration::from_millis(500),
        ..edge.load("/hello.txt")
    };
    let report = run(config).await.expect("the load runs");
    assert_eq!(report.requests, 0, "{report:?}");
    assert!(report.errors > 0, "{report:?}");
    assert_eq!(report.errors_by_kind.length, report.errors);
    assert_eq!(report.body_bytes, report.errors * len);
    assert_eq!(report.threads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_is_a_status_error() {
    let edge = DemoEdge::start().await;
    let config = LoadConfig {
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        ..edge.load("/no-such-object")
    };
    let report = run(config).await.expect("the load runs");
    assert_eq!(report.requests, 0, "{report:?}");
    assert!(report.errors_by_kind.status > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_going_away_mid_run_is_counted_and_the_run_still_ends_on_time() {
    let edge = DemoEdge::start().await;
    let config = LoadConfig {
        warmup: Duration::ZERO,
        duration: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(300),
        ..edge.load("/hello.txt")
    };
    let started = Instant::now();
    let load = tokio::task::spawn_blocking(move || h3load::run(&config));
    tokio::time::sleep(Duration::from_millis(500)).await;
    edge.running.shutdown().await;
    let report = load.await.unwrap().expect("the run itself succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(report.requests > 0, "{report:?}");
    let lost = report.errors_by_kind.connection_lost + report.errors_by_kind.connect;
    assert!(lost > 0, "{report:?}");
    assert_eq!(
        report.errors_by_kind.status + report.errors_by_kind.length,
        0
    );
}

#[tokio::test]
async fn an_address_that_never_answers_fails_quickly_naming_it() {
    // A bound socket that never reads: no ICMP "unreachable", just silence.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let config = LoadConfig {
        connect: Some(addr),
        trust: Trust::DangerAcceptAnyCertificate,
        connections: 2,
        connect_timeout: Duration::from_millis(500),
        ..LoadConfig::new("https://cdn.example:443/x".parse().unwrap())
    };
    let started = Instant::now();
    let error = run(config).await.expect_err("nothing answers");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let message = format!("{error:#}");
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("cdn.example"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_the_json_keys_the_bench_harness_reads() {
    let edge = DemoEdge::start().await;
    let args = [
        format!("--url={}", edge.url("/hello.txt")),
        format!("--connect={}", edge.h3_addr()),
        format!("--ca={}", edge.ca().display()),
        "-c1".into(),
        "-s2".into(),
        "-d0.3".into(),
        "--warmup=0".into(),
        "--expect-status=200".into(),
        "--threads=1".into(),
        "--json".into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_h3load"))
            .args(&args)
            .output()
            .expect("h3load runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    for key in [
        "requests",
        "errors",
        "errors_by_kind",
        "duration_s",
        "req_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "body_bytes",
        "mb_per_s",
        "client_cpu_us_per_req",
        "client_cpu_util",
        "connections",
        "streams",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    assert!(json["requests"].as_u64().unwrap() > 0, "{json}");
    for kind in ["status", "length", "stream_reset", "connection_lost"] {
        assert_eq!(json["errors_by_kind"][kind], 0, "{json}");
    }
}

#[test]
fn the_binary_fails_with_a_message_when_it_cannot_connect() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_h3load"))
        .args([
            "--url=https://localhost/x",
            &format!("--connect={addr}"),
            "--insecure",
            "-c1",
            "--connect-timeout=0.3",
        ])
        .output()
        .expect("h3load runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&addr.to_string()) && stderr.contains("localhost"),
        "{stderr}"
    );
}
