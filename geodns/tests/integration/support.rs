//! Fixtures: a test MaxMind DB, health endpoints the test turns on and off, a DNS client.

// In a test binary nothing is reachable from outside the crate.
#![allow(unreachable_pub)]

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use geodns::citydb::CityNetwork;
use geodns::config::GeoDnsConfig;
use geodns::server::RunningGeoDns;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// POP addresses, by POP.
pub const FRA: &str = "198.51.100.10";
pub const IAD: &str = "198.51.100.20";
pub const SIN: &str = "198.51.100.30";
pub const FRA6: &str = "2001:db8:10::1";

/// A GeoIP2-City-shaped database: 10.1/16 Frankfurt, 10.2/16 Ashburn, 10.3/16 Singapore,
/// 10.4/16 Paris (nearest Frankfurt), 2001:db8:1::/48 Frankfurt.
pub fn write_db(dir: &Path) -> PathBuf {
    let city = |net: &str, latitude, longitude, country, continent| CityNetwork {
        network: net.parse().unwrap(),
        latitude,
        longitude,
        accuracy_radius: 20,
        country,
        continent,
    };
    let networks = [
        city("10.1.0.0/16", 50.11, 8.68, "DE", "EU"),
        city("10.2.0.0/16", 39.04, -77.49, "US", "NA"),
        city("10.3.0.0/16", 1.29, 103.85, "SG", "AS"),
        city("10.4.0.0/16", 48.86, 2.35, "FR", "EU"),
        city("2001:db8:1::/48", 50.11, 8.68, "DE", "EU"),
    ];
    let path = dir.join("test-city.mmdb");
    std::fs::write(&path, geodns::citydb::encode(&networks).unwrap()).unwrap();
    path
}

/// A health endpoint that answers 200 while up and 503 while down.
pub struct HealthServer {
    pub url: String,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.quicdn/health", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let flag = flag.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let status = if flag.load(Ordering::Relaxed) {
                            200
                        } else {
                            503
                        };
                        async move {
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"ok"),
                            ));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { url, up, task }
    }

    /// Three endpoints, for the test config's POPs (fra, iad, sin).
    pub async fn three() -> [Self; 3] {
        [
            Self::start().await,
            Self::start().await,
            Self::start().await,
        ]
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The test world (tests/data/test-config.toml, which the fuzz targets serve too).
const TEST_CONFIG: &str = include_str!("../data/test-config.toml");

/// The test zone and POPs, health URLs from `health` (fra, iad, sin), a fast checker.
pub fn config(db: &Path, health: [&str; 3]) -> GeoDnsConfig {
    let mut cfg: GeoDnsConfig = shared::config::parse(TEST_CONFIG).unwrap();
    cfg.geoip.databases = vec![db.to_owned()];
    let pops: Vec<String> = cfg
        .pops
        .iter()
        .map(|p| {
            let addrs = p.ipv4.iter().map(ToString::to_string);
            let addrs = addrs.chain(p.ipv6.iter().map(ToString::to_string));
            format!("{} {}", p.name, addrs.collect::<Vec<_>>().join(" "))
        })
        .collect();
    let named = [
        format!("fra1 {FRA} {FRA6}"),
        format!("iad1 {IAD}"),
        format!("sin1 {SIN}"),
    ];
    assert_eq!(
        pops, named,
        "the POPs of tests/data/test-config.toml, as named here"
    );
    for (pop, url) in cfg.pops.iter_mut().zip(health) {
        pop.health_url = Some(url.to_owned());
    }
    cfg
}

/// A running geodns with its three health endpoints and DB.
pub struct Fixture {
    pub server: RunningGeoDns,
    pub health: [HealthServer; 3],
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the config changed by `edit` first.
    pub async fn start_with(edit: impl FnOnce(&mut GeoDnsConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = write_db(dir.path());
        let health = HealthServer::three().await;
        let mut cfg = config(&db, [&health[0].url, &health[1].url, &health[2].url]);
        edit(&mut cfg);
        let server = geodns::server::start(cfg, None).await.unwrap();
        Self {
            server,
            health,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.dns_addr()
    }
}

/// The geodns binary on a config file written to `dir`, `RUST_LOG=info`, its log read by a
/// thread (so it never blocks on a full pipe). Killed when dropped.
pub struct Binary {
    pub child: Child,
    /// The UDP and TCP address it logged.
    pub dns: SocketAddr,
    /// The log lines read so far (see [`Binary::read`]).
    pub log: Vec<String>,
    lines: Receiver<String>,
}

impl Binary {
    pub fn start(dir: &Path, cfg: &GeoDnsConfig) -> Self {
        let path = dir.join("geodns.toml");
        std::fs::write(&path, shared::config::render(cfg).unwrap()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_geodns"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
            let dns = (line.contains("listening") && line.contains("dns"))
                .then(|| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                })
                .flatten()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            log.push(line);
            if let Some(dns) = dns {
                return Self {
                    child,
                    dns,
                    log,
                    lines,
                };
            }
        }
        let _ = child.kill();
        let status = child.wait();
        panic!(
            "geodns did not log its DNS address ({status:?}); its log:\n{}",
            log.join("\n")
        );
    }

    /// Takes the lines written so far, waiting up to `wait` for more.
    pub fn read(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(line);
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    pub tcp: bool,
    /// EDNS with this UDP payload size; None: no EDNS (unless `ecs` needs it).
    pub edns: Option<u16>,
    pub ecs: Option<(&'static str, u8)>,
}

pub fn message(name: &str, qtype: RecordType, ask: Ask) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if ask.edns.is_some() || ask.ecs.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(ask.edns.unwrap_or(1232));
        if let Some((addr, prefix)) = ask.ecs {
            let addr: IpAddr = addr.parse().unwrap();
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        }
        m.set_edns(edns);
    }
    m
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    h.finish() as u16
}

/// Sends raw bytes and returns the raw answer (None on timeout).
pub async fn exchange_raw(server: SocketAddr, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let deadline = Duration::from_secs(3);
    if tcp {
        let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        s.write_all(&framed).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(deadline, s.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(deadline, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf)
    } else {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(bytes, server).await.unwrap();
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

/// Asks one question and decodes the answer.
pub async fn ask(server: SocketAddr, name: &str, qtype: RecordType, how: Ask) -> Message {
    let query = message(name, qtype, how);
    let bytes = query.to_vec().unwrap();
    let raw = exchange_raw(server, &bytes, how.tcp)
        .await
        .unwrap_or_else(|| panic!("no answer to {name} {qtype}"));
    let reply = Message::from_vec(&raw).unwrap();
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

/// The A/AAAA addresses in the answer section, as text.
pub fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The ECS option of a reply: (source prefix, scope prefix).
pub fn ecs(m: &Message) -> Option<(u8, u8)> {
    match m
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(cs) => Some((cs.source_prefix(), cs.scope_prefix())),
        _ => None,
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A minimal HTTP/1.1 GET (the admin listener, the edge's metrics).
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The sum of the Prometheus samples whose lines match `select`.
pub fn counter(metrics: &str, select: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && select(l))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
