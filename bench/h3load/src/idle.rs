//! `h3idle`: many QUIC connections that do (almost) nothing, for bench/attack.
//!
//! [`run_idle`] completes `connections` QUIC handshakes (ALPN h3) to one server, at most
//! `concurrency` at a time, and then holds them for `hold` without sending anything else
//! ([`IdleMode::Handshake`]), or after opening the HTTP/3 control stream and `streams` request
//! streams that each carry only the start of a HEADERS frame, never finished
//! ([`IdleMode::PartialHeaders`]). It records when the server closes a connection or ends a
//! stream, and meanwhile, every `probe_interval`, makes a fresh connection from another UDP
//! socket and GETs `probe_url`, to tell whether new clients are still served.
//!
//! Everything runs on one current-thread runtime; the client never sends keep-alives of its
//! own, and its idle timeout is longer than the hold, so a connection that stays open does so
//! because the server keeps it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinSet, LocalSet};

use crate::client::{self, H3_NO_ERROR};
use crate::config::Target;
use crate::tls::{self, Trust};

/// Client idle timeout: longer than any hold, so only the server ends idle connections.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// HTTP/3 frame type HEADERS (RFC 9114 7.2.2).
const FRAME_HEADERS: u8 = 0x01;
/// Declared HEADERS payload length (two-byte varint 0x4100 = 256); only PARTIAL_BYTES follow.
const PARTIAL_LENGTH: [u8; 2] = [0x41, 0x00];
const PARTIAL_BYTES: usize = 16;

/// What each held connection does after its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleMode {
    /// Nothing at all: no HTTP/3 control stream, no request.
    Handshake,
    /// The control stream (empty SETTINGS), then request streams each with a HEADERS frame
    /// header declaring 256 bytes and only 16 of them sent.
    PartialHeaders,
}

/// Input of [`run_idle`].
#[derive(Clone, Debug)]
pub struct IdleConfig {
    pub connect: SocketAddr,
    /// Local addresses to send from, connections dealt out round-robin (each its own UDP
    /// socket); empty: one socket on the unspecified address. The probes always use a socket
    /// of their own on the unspecified address.
    pub bind: Vec<IpAddr>,
    pub server_name: String,
    pub trust: Trust,
    pub connections: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub hold: Duration,
    pub mode: IdleMode,
    /// Request streams per connection in [`IdleMode::PartialHeaders`].
    pub streams: usize,
    pub probe_url: Option<http::Uri>,
    pub probe_interval: Duration,
    pub connect_timeout: Duration,
}

/// Min, median and max of a set of seconds (0 when empty).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    pub count: usize,
    pub min_s: f64,
    pub p50_s: f64,
    pub max_s: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        Self {
            count: values.len(),
            min_s: values[0],
            p50_s: values[values.len() / 2],
            max_s: values[values.len() - 1],
        }
    }
}

/// New-client probes made during the hold.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Probes {
    pub attempts: usize,
    pub ok: usize,
    /// Handshake + GET + body, of the successful ones.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: BTreeMap<String, usize>,
}

/// The outcome, printed as one JSON object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleReport {
    pub mode: Option<IdleMode>,
    pub connect: String,
    pub requested: usize,
    pub established: usize,
    pub failed: usize,
    pub failures: BTreeMap<String, usize>,
    /// Wall time to set up all connections.
    pub setup_s: f64,
    pub hold_s: f64,
    /// Connections the server closed (or lost) before the end of the hold; seconds after
    /// their handshake.
    pub closed_by_server: Spread,
    pub close_reasons: BTreeMap<String, usize>,
    /// Connections still open when the hold ended.
    pub open_at_end: usize,
    pub streams_opened: usize,
    /// Partial request streams the server ended (reset, stop-sending, answered, or the
    /// connection went); seconds after the stream was opened.
    pub streams_ended_by_server: Spread,
    pub stream_end_kinds: BTreeMap<String, usize>,
    pub probes: Probes,
}

#[derive(Default)]
struct State {
    report: IdleReport,
    closed_after: Vec<f64>,
    stream_ended_after: Vec<f64>,
    probe_ms: Vec<f64>,
    connections: Vec<quinn::Connection>,
    holding: bool,
}

type Shared = Rc<RefCell<State>>;

fn bump(map: &mut BTreeMap<String, usize>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

fn close_kind(e: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match e {
        E::VersionMismatch => "version-mismatch".into(),
        E::TransportError(t) => format!("transport-error {}", t.code),
        E::ConnectionClosed(c) => format!("connection-closed {}", c.error_code),
        E::ApplicationClosed(c) => format!("application-closed {}", c.error_code),
        E::Reset => "reset".into(),
        E::TimedOut => "timed-out".into(),
        E::LocallyClosed => "locally-closed".into(),
        E::CidsExhausted => "cids-exhausted".into(),
    }
}

fn transport() -> anyhow::Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(0u32.into())
        .max_idle_timeout(Some(CLIENT_IDLE_TIMEOUT.try_into()?))
        .keep_alive_interval(None);
    Ok(t)
}

/// Runs the idle connections described by `config` (blocks the calling thread).
pub fn run_idle(config: &IdleConfig) -> anyhow::Result<IdleReport> {
    anyhow::ensure!(config.connections > 0, "connections must be at least 1");
    anyhow::ensure!(config.concurrency > 0, "concurrency must be at least 1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let local = LocalSet::new();
    local.block_on(&runtime, main(config.clone()))
}

async fn main(config: IdleConfig) -> anyhow::Result<IdleReport> {
    let mut client = quinn::ClientConfig::new(Arc::new(tls::client_config(&config.trust)?));
    client.transport_config(Arc::new(transport()?));
    let endpoints = if config.bind.is_empty() {
        vec![client::endpoint(config.connect)?]
    } else {
        config
            .bind
            .iter()
            .map(|ip| bound_endpoint(*ip))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let state: Shared = Rc::new(RefCell::new(State::default()));
    {
        let mut s = state.borrow_mut();
        s.report.mode = Some(config.mode);
        s.report.connect = config.connect.to_string();
        s.report.requested = config.connections;
    }
    let setup_start = Instant::now();
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut setups = JoinSet::new();
    for i in 0..config.connections {
        let permit = slots.clone().acquire_owned().await?;
        let (endpoint, client, state, config) = (
            endpoints[i % endpoints.len()].clone(),
            client.clone(),
            state.clone(),
            config.clone(),
        );
        setups.spawn_local(async move {
            set_up_one(&endpoint, &client, &config, &state).await;
            drop(permit);
        });
    }
    while setups.join_next().await.is_some() {}
    let setup_s = setup_start.elapsed().as_secs_f64();
    state.borrow_mut().holding = true;

    let hold_start = Instant::now();
    let probing = config.probe_url.clone().map(|url| {
        let (state, config) = (state.clone(), config.clone());
        tokio::task::spawn_local(async move { probe_loop(url, &config, &state, hold_start).await })
    });
    tokio::time::sleep(config.hold).await;
    state.borrow_mut().holding = false;
    if let Some(p) = probing {
        p.abort();
        let _ = p.await;
    }
    let hold_s = hold_start.elapsed().as_secs_f64();

    let connections = {
        let mut s = state.borrow_mut();
        let connections = std::mem::take(&mut s.connections);
        s.report.open_at_end = connections
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count();
        connections
    };
    for c in &connections {
        c.close(H3_NO_ERROR.into(), b"done");
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for e in &endpoints {
            e.wait_idle().await;
        }
    })
    .await;
    for e in &endpoints {
        e.close(H3_NO_ERROR.into(), b"");
    }

    let mut s = state.borrow_mut();
    let closed = std::mem::take(&mut s.closed_after);
    let ended = std::mem::take(&mut s.stream_ended_after);
    let probe_ms = std::mem::take(&mut s.probe_ms);
    let mut report = std::mem::take(&mut s.report);
    report.setup_s = setup_s;
    report.hold_s = hold_s;
    report.closed_by_server = Spread::of(closed);
    report.streams_ended_by_server = Spread::of(ended);
    let mut ms = probe_ms;
    ms.sort_by(f64::total_cmp);
    if !ms.is_empty() {
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        report.probes.p50_ms = at(0.5);
        report.probes.p99_ms = at(0.99);
        report.probes.max_ms = ms[ms.len() - 1];
    }
    Ok(report)
}

/// A client endpoint on a UDP socket bound to `ip`, port 0.
fn bound_endpoint(ip: IpAddr) -> anyhow::Result<quinn::Endpoint> {
    let socket =
        std::net::UdpSocket::bind((ip, 0)).with_context(|| format!("cannot bind UDP {ip}"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("cannot create the QUIC endpoint")
}

async fn set_up_one(
    endpoint: &quinn::Endpoint,
    client: &quinn::ClientConfig,
    config: &IdleConfig,
    state: &Shared,
) {
    let connecting =
        match endpoint.connect_with(client.clone(), config.connect, &config.server_name) {
            Ok(c) => c,
            Err(e) => {
                let mut s = state.borrow_mut();
                s.report.failed += 1;
                bump(&mut s.report.failures, format!("connect: {e}"));
                return;
            }
        };
    let conn = match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let mut s = state.borrow_mut();
            s.report.failed += 1;
            bump(&mut s.report.failures, close_kind(&e));
            return;
        }
        Err(_) => {
            let mut s = state.borrow_mut();
            s.report.failed += 1;
            bump(&mut s.report.failures, "handshake timeout");
            return;
        }
    };
    let established = Instant::now();
    {
        let mut s = state.borrow_mut();
        s.report.established += 1;
        s.connections.push(conn.clone());
    }
    let watcher = {
        let (conn, state) = (conn.clone(), state.clone());
        async move {
            let e = conn.closed().await;
            if matches!(e, quinn::ConnectionError::LocallyClosed) {
                return;
            }
            let mut s = state.borrow_mut();
            s.closed_after.push(established.elapsed().as_secs_f64());
            bump(&mut s.report.close_reasons, close_kind(&e));
        }
    };
    tokio::task::spawn_local(watcher);
    if config.mode == IdleMode::PartialHeaders {
        // The client's control stream with an empty SETTINGS frame, as HTTP/3 requires; kept
        // open (closing it is a connection error).
        match conn.open_uni().await {
            Ok(mut control) => {
                let _ = control.write_all(&[0x00, 0x04, 0x00]).await;
                tokio::task::spawn_local(async move {
                    let _ = control.stopped().await;
                });
            }
            Err(_) => return,
        }
        for _ in 0..config.streams {
            let Ok((mut send, mut recv)) = conn.open_bi().await else {
                break;
            };
            let mut partial = vec![FRAME_HEADERS, PARTIAL_LENGTH[0], PARTIAL_LENGTH[1]];
            partial.extend(std::iter::repeat_n(0u8, PARTIAL_BYTES));
            if send.write_all(&partial).await.is_err() {
                break;
            }
            state.borrow_mut().report.streams_opened += 1;
            let state = state.clone();
            tokio::task::spawn_local(async move {
                let opened = Instant::now();
                let mut buf = [0u8; 4096];
                let mut answered = 0usize;
                let kind = loop {
                    tokio::select! {
                        read = recv.read(&mut buf) => match read {
                            Ok(Some(n)) => answered += n,
                            Ok(None) => break format!("finished after {answered} bytes"),
                            Err(quinn::ReadError::Reset(code)) => break format!("reset {code}"),
                            Err(quinn::ReadError::ConnectionLost(_)) => break "connection lost".into(),
                            Err(e) => break format!("read error: {e}"),
                        },
                        stopped = send.stopped() => match stopped {
                            Ok(Some(code)) => break format!("stop-sending {code}"),
                            Ok(None) => break "stopped".into(),
                            Err(_) => break "connection lost".into(),
                        },
                    }
                };
                let mut s = state.borrow_mut();
                if kind == "connection lost" && !s.holding {
                    return;
                }
                s.stream_ended_after.push(opened.elapsed().as_secs_f64());
                bump(&mut s.report.stream_end_kinds, kind);
            });
        }
    }
}

/// A fresh connection (new handshake, own UDP socket) and one GET every `probe_interval`.
async fn probe_loop(url: http::Uri, config: &IdleConfig, state: &Shared, start: Instant) {
    let Ok(endpoint) = client::endpoint(config.connect) else {
        return;
    };
    let Ok(client) = client::client_config(&config.trust) else {
        return;
    };
    let target = Target {
        url: url.clone(),
        addr: config.connect,
        server_name: config.server_name.clone(),
    };
    let mut next = start;
    loop {
        next += config.probe_interval;
        let began = Instant::now();
        let outcome = tokio::time::timeout(config.connect_timeout, async {
            let (mut driver, mut sender) =
                client::connect(&endpoint, &client, &target, config.connect_timeout)
                    .await
                    .map_err(|e| format!("connect: {}", e.root_cause()))?;
            let drive = tokio::task::spawn_local(async move {
                let _ = driver.wait_idle().await;
            });
            let result = client::get(&mut sender, &url).await;
            drop(sender);
            drive.abort();
            match result {
                Ok((status, _)) if status == http::StatusCode::OK => Ok(()),
                Ok((status, _)) => Err(format!("status {status}")),
                Err(e) => Err(format!("stream: {e}")),
            }
        })
        .await
        .unwrap_or_else(|_| Err("timeout".into()));
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        {
            let mut s = state.borrow_mut();
            s.report.probes.attempts += 1;
            match outcome {
                Ok(()) => {
                    s.report.probes.ok += 1;
                    s.probe_ms.push(ms);
                }
                Err(e) => bump(&mut s.report.probes.errors, e),
            }
        }
        tokio::time::sleep_until(next.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.count, s.min_s, s.p50_s, s.max_s), (4, 1.0, 3.0, 10.0));
        assert_eq!(Spread::of(Vec::new()).count, 0);
    }
}
