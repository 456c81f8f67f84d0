//! `checker`: a concurrency checker for the edge. It starts its own origin, whose objects
//! change version every few hundred milliseconds, puts the real `edge` binary in front of it,
//! and runs many clients (HTTP/1.1 plain and over TLS, HTTP/2 over TLS; whole objects, ranges
//! and conditionals; some hanging up part-way) that check every body byte against the version
//! the response's headers name.
//! Optionally it kills the edge with SIGKILL and restarts it on the same cache during the run.
//! See bench/checker/README.md.

pub mod client;
pub mod edge;
pub mod origin;
pub mod pattern;
pub mod stats;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::client::{ClientSettings, Proto, Restarts, Shared};
use crate::edge::{EdgeProcess, EdgeSetup};
use crate::origin::{Catalog, Origin, OriginConfig, SizeClass};
use crate::stats::{ReportCounts, Stats};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub edge_bin: PathBuf,
    pub duration: Duration,
    pub max_requests: u64,
    pub objects: usize,
    /// Only objects of these size classes, in turn (empty: the usual mix).
    pub classes: Vec<SizeClass>,
    pub clients: usize,
    pub protocols: Vec<Proto>,
    /// HTTP/2 streams (clients) per connection.
    pub h2_streams: usize,
    pub abort_share: f64,
    pub conditional_share: f64,
    /// The origin's `Cache-Control: max-age`.
    pub max_age: u32,
    /// Each object gets a new version after a pause drawn from this range.
    pub version_interval: (Duration, Duration),
    /// Versions of an object differ in length too (by up to 4 KiB).
    pub vary_length: bool,
    /// Share of origin responses sent slowly (16 KiB chunks, 2 ms apart).
    pub slow_share: f64,
    /// Self-test: share of origin responses the origin spoils on purpose (see
    /// [`OriginConfig::fault_share`]); the run must then report mismatched and corrupt bodies.
    pub fault_share: f64,
    pub slice_size: u64,
    pub disk_budget: u64,
    pub shared_scheme: bool,
    /// SIGKILL and restart the edge this often.
    pub kill_every: Option<Duration>,
    pub request_timeout: Duration,
    /// Seeds the object sizes and body salt (random when unset).
    pub seed: Option<u64>,
    /// Where the work dir (edge config, log, cache) is made; kept when the run fails.
    pub work_parent: Option<PathBuf>,
    pub keep_work_dir: bool,
    /// Print a progress line this often (to stderr).
    pub progress: Option<Duration>,
    pub edge_log_filter: String,
    /// Extra TOML appended to the edge's config.
    pub extra_toml: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            edge_bin: PathBuf::from("target/release/edge"),
            duration: Duration::from_secs(60),
            max_requests: 100_000_000,
            objects: 50,
            classes: Vec::new(),
            clients: 200,
            protocols: vec![Proto::H1, Proto::H2],
            h2_streams: 10,
            abort_share: 0.05,
            conditional_share: 0.1,
            max_age: 1,
            version_interval: (Duration::from_millis(50), Duration::from_millis(500)),
            vary_length: false,
            slow_share: 0.0,
            fault_share: 0.0,
            slice_size: 1 << 20,
            disk_budget: 1 << 30,
            shared_scheme: false,
            kill_every: None,
            request_timeout: Duration::from_secs(30),
            seed: None,
            work_parent: None,
            keep_work_dir: false,
            progress: Some(Duration::from_secs(10)),
            edge_log_filter: "info".into(),
            extra_toml: String::new(),
        }
    }
}

/// What the origin saw.
#[derive(Debug, Clone, Serialize)]
pub struct OriginReport {
    pub requests: u64,
    pub full: u64,
    pub partial: u64,
    pub not_modified: u64,
    pub unsatisfiable: u64,
    pub conditional: u64,
    pub if_range: u64,
    pub slow: u64,
    pub body_bytes: u64,
    pub version_bumps: u64,
    /// Responses spoilt on purpose (`--inject-faults`).
    pub faults: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    pub bin: String,
    pub starts: u32,
    /// Seconds from each kill to the restarted edge listening again.
    pub restart_s: Vec<f64>,
    pub warn_lines: u64,
    pub error_lines: u64,
    pub log_samples: Vec<String>,
    /// WARN/ERROR lines by level, target and message.
    pub log_groups: std::collections::BTreeMap<String, u64>,
    /// Whether the edge exited with status 0 on SIGTERM at the end.
    pub clean_exit: bool,
    /// The largest resident set of any edge process of the run (VmHWM), in KiB, sampled
    /// every 200 ms (a process killed between samples may have peaked higher).
    pub rss_peak_kib: u64,
    /// The edge's resident set at the end of the run, in KiB.
    pub rss_end_kib: u64,
    pub log: String,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: f64,
    pub requests_per_s: f64,
    #[serde(flatten)]
    pub counts: ReportCounts,
    pub origin: OriginReport,
    pub edge: EdgeReport,
    pub objects: ObjectsReport,
    /// The work dir, when it was kept.
    pub work_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectsReport {
    pub small: usize,
    pub medium: usize,
    pub large: usize,
    pub max_bytes: u64,
}

impl Report {
    /// Whether the edge served a wrong body (the checker's verdict).
    pub fn failed(&self) -> bool {
        self.counts.mismatched + self.counts.corrupt > 0
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "checker: {:.1} s, {} requests ({:.0}/s), {} responses, {:.1} GiB of body verified",
            self.duration_s,
            c.requests,
            self.requests_per_s,
            c.responses,
            c.bytes_verified as f64 / (1u64 << 30) as f64
        );
        let _ = writeln!(
            s,
            "  ok {} (200: {}, 206: {}), 304: {}, client aborts {}, ranges answered 200: {}",
            c.ok, c.ok_full, c.ok_partial, c.not_modified, c.aborted, c.range_as_full
        );
        let _ = writeln!(
            s,
            "  MISMATCHED {}  CORRUPT {}  (of them in bodies cut off or aborted: {})",
            c.mismatched, c.corrupt, c.bad_in_incomplete
        );
        for (shape, n) in &c.failure_shapes {
            let _ = writeln!(s, "    {n} x {shape}");
        }
        let _ = writeln!(
            s,
            "  errors {}: {}",
            c.errors.values().sum::<u64>(),
            fmt_map(&c.errors)
        );
        if self.edge.starts > 1 || !c.errors_during_restart.is_empty() {
            let _ = writeln!(
                s,
                "  errors explained by edge restarts {}: {}",
                c.errors_during_restart.values().sum::<u64>(),
                fmt_map(&c.errors_during_restart)
            );
        }
        let _ = writeln!(s, "  statuses: {}", fmt_map(&c.statuses));
        let _ = writeln!(s, "  cache-status: {}", fmt_map(&c.cache_status));
        let _ = writeln!(
            s,
            "  by protocol: {}; by kind: {}",
            fmt_map(&c.by_proto),
            fmt_map(&c.by_kind)
        );
        let o = &self.origin;
        let _ = writeln!(
            s,
            "  origin: {} requests (200: {}, 206: {}, 304: {}, 416: {}; slow {}; spoilt on purpose {}), {:.1} GiB, {} version changes",
            o.requests,
            o.full,
            o.partial,
            o.not_modified,
            o.unsatisfiable,
            o.slow,
            o.faults,
            o.body_bytes as f64 / (1u64 << 30) as f64,
            o.version_bumps
        );
        let _ = writeln!(
            s,
            "  objects: {} small, {} medium, {} large (up to {} bytes); seed {}",
            self.objects.small,
            self.objects.medium,
            self.objects.large,
            self.objects.max_bytes,
            self.seed
        );
        let e = &self.edge;
        let _ = writeln!(
            s,
            "  edge: {} (started {} times{}), RSS peak {:.0} MiB, at the end {:.0} MiB, log: {} WARN / {} ERROR lines, clean exit on SIGTERM: {}",
            e.bin,
            e.starts,
            if e.restart_s.is_empty() {
                String::new()
            } else {
                let max = e.restart_s.iter().copied().fold(0.0, f64::max);
                format!(", restart took up to {max:.2} s")
            },
            e.rss_peak_kib as f64 / 1024.0,
            e.rss_end_kib as f64 / 1024.0,
            e.warn_lines,
            e.error_lines,
            e.clean_exit
        );
        for (group, n) in &e.log_groups {
            let _ = writeln!(s, "    edge log: {n} x {group}");
        }
        for l in e
            .log_samples
            .iter()
            .filter(|l| l.contains(" ERROR "))
            .take(3)
        {
            let _ = writeln!(s, "    edge log: {l}");
        }
        for (kind, samples) in &c.error_samples {
            for m in samples {
                let _ = writeln!(s, "    {kind}: {m}");
            }
        }
        for f in &c.failures {
            let _ = writeln!(
                s,
                "  {} at {:.1}s: {} GET {} [{}] -> {} etag={} content-range={} content-length={} cache-status={:?} age={}",
                f.kind.to_uppercase(),
                f.at_s,
                f.proto,
                f.url,
                f.request,
                f.status,
                f.etag.as_deref().unwrap_or("-"),
                f.content_range.as_deref().unwrap_or("-"),
                f.content_length.as_deref().unwrap_or("-"),
                f.cache_status.as_deref().unwrap_or("-"),
                f.age.as_deref().unwrap_or("-"),
            );
            let _ = writeln!(
                s,
                "      expected bytes {}..{}, received {}{}; first wrong byte at {}, {} wrong bytes, belong to {}{}: {}",
                f.expected.0,
                f.expected.1,
                f.received,
                if f.complete { "" } else { " (incomplete)" },
                f.first_wrong.map_or("-".into(), |o| o.to_string()),
                f.wrong_bytes,
                f.belongs_to.as_deref().unwrap_or("no version"),
                if f.tail_is_other {
                    " (all the rest)"
                } else {
                    ""
                },
                f.detail
            );
        }
        if let Some(dir) = &self.work_dir {
            let _ = writeln!(s, "  work dir kept: {dir} (edge.toml, edge.log, cache/)");
        }
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.failed() {
                "FAIL: the edge served wrong bodies"
            } else {
                "PASS: no mismatched or corrupt body"
            }
        );
        s
    }
}

fn fmt_map<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the checker: origin, edge, clients, restarts; stops all of them and reports.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    anyhow::ensure!(config.objects > 0, "need at least one object");
    anyhow::ensure!(config.clients > 0, "need at least one client");
    anyhow::ensure!(!config.protocols.is_empty(), "need at least one protocol");
    anyhow::ensure!(
        (4096..=64 << 20).contains(&config.slice_size),
        "slice size must be 4 KiB .. 64 MiB"
    );
    let seed = config.seed.unwrap_or_else(rand::random);
    let catalog = Arc::new(Catalog::new(
        config.objects,
        config.slice_size,
        seed,
        config.vary_length,
        &config.classes,
    ));
    let origin = Origin::start(
        catalog.clone(),
        OriginConfig {
            max_age: config.max_age,
            version_interval: config.version_interval,
            slow_share: config.slow_share,
            slow_chunk: 16 * 1024,
            slow_pause: Duration::from_millis(2),
            fault_share: config.fault_share,
        },
    )
    .await?;

    let parent = config
        .work_parent
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)?;
    let work = tempfile::Builder::new()
        .prefix("quicdn-checker.")
        .tempdir_in(&parent)
        .context("making the work dir")?;
    let mut edge = EdgeProcess::new(EdgeSetup {
        bin: config.edge_bin.clone(),
        dir: work.path().to_owned(),
        origin: origin.addr,
        slice_size: config.slice_size,
        disk_budget: config.disk_budget,
        shared_scheme: config.shared_scheme,
        extra_toml: config.extra_toml.clone(),
        log_filter: config.edge_log_filter.clone(),
    });
    let result = drive(&config, &catalog, &origin, &mut edge).await;
    let clean_exit = edge.stop(Duration::from_secs(10)).await;
    origin.stop();
    let (counts, duration, restart_s, rss) = result?;

    let c = &origin.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let count = |class| catalog.objects.iter().filter(|o| o.class == class).count();
    let mut report = Report {
        seed,
        duration_s: duration.as_secs_f64(),
        requests_per_s: counts.requests as f64 / duration.as_secs_f64().max(1e-9),
        counts,
        origin: OriginReport {
            requests: get(&c.requests),
            full: get(&c.full),
            partial: get(&c.partial),
            not_modified: get(&c.not_modified),
            unsatisfiable: get(&c.unsatisfiable),
            conditional: get(&c.conditional),
            if_range: get(&c.if_range),
            slow: get(&c.slow),
            body_bytes: get(&c.body_bytes),
            version_bumps: get(&c.version_bumps),
            faults: get(&c.faults),
        },
        edge: EdgeReport {
            bin: config.edge_bin.display().to_string(),
            starts: edge.starts,
            restart_s,
            warn_lines: get(&edge.log.warn),
            error_lines: get(&edge.log.error),
            log_samples: edge
                .log
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            log_groups: edge
                .log
                .groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            clean_exit,
            rss_peak_kib: rss.peak_kib,
            rss_end_kib: rss.last_kib,
            log: edge.log_path().display().to_string(),
        },
        objects: ObjectsReport {
            small: count(SizeClass::Small),
            medium: count(SizeClass::Medium),
            large: count(SizeClass::Large),
            max_bytes: catalog
                .objects
                .iter()
                .map(|o| o.base_len)
                .max()
                .unwrap_or(0),
        },
        work_dir: None,
    };
    if config.keep_work_dir || report.failed() {
        report.work_dir = Some(work.keep().display().to_string());
    }
    Ok(report)
}

type Driven = (ReportCounts, Duration, Vec<f64>, Rss);

/// The edge's memory, sampled while the clients run.
#[derive(Debug, Default, Clone, Copy)]
struct Rss {
    peak_kib: u64,
    last_kib: u64,
}

impl Rss {
    fn sample(&mut self, edge: &EdgeProcess) {
        if let Some((rss, hwm)) = edge.memory_kib() {
            self.last_kib = rss;
            self.peak_kib = self.peak_kib.max(hwm).max(rss);
        }
    }
}

/// Starts the edge and the clients, restarts the edge when asked, waits for the clients.
async fn drive(
    config: &Config,
    catalog: &Arc<Catalog>,
    origin: &Origin,
    edge: &mut EdgeProcess,
) -> anyhow::Result<Driven> {
    let ports = edge.start().await?;
    let roots = shared::tls::ca_roots(&edge.dev_cert())
        .with_context(|| format!("loading {}", edge.dev_cert().display()))?;
    let connector = |alpn: &[u8]| -> anyhow::Result<TlsConnector> {
        let mut tls = rustls::ClientConfig::builder_with_provider(shared::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsConnector::from(Arc::new(tls)))
    };
    let h2_clients = config.clients.div_ceil(config.protocols.len());
    let h2_conns = h2_clients.div_ceil(config.h2_streams.max(1)).max(1);
    let stats = Arc::new(Stats::default());
    let restarts = Arc::new(Restarts::default());
    let started = Instant::now();
    let versions = {
        let catalog = catalog.clone();
        Arc::new(move || catalog.snapshot()) as Arc<dyn Fn() -> Vec<u64> + Send + Sync>
    };
    let shared = Arc::new(Shared {
        catalog: catalog.clone(),
        stats: stats.clone(),
        settings: ClientSettings {
            clients: config.clients,
            protocols: config.protocols.clone(),
            h2_streams: config.h2_streams,
            abort_share: config.abort_share,
            conditional_share: config.conditional_share,
            request_timeout: config.request_timeout,
            max_requests: config.max_requests,
            slice_size: config.slice_size,
        },
        ports,
        tls_h1: connector(b"http/1.1")?,
        tls_h2: connector(b"h2")?,
        restarts: restarts.clone(),
        deadline: started + config.duration,
        started,
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        versions,
        h2_slots: (0..h2_conns)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    });
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..config.clients {
        clients.spawn(client::run_client(shared.clone(), i));
    }
    let hard_stop = started + config.duration + config.request_timeout + Duration::from_secs(5);
    let mut next_kill = config.kill_every.map(|k| started + k);
    let mut next_progress = config.progress.map(|p| started + p);
    let mut restart_s = Vec::new();
    let mut rss = Rss::default();
    let mut failure = None;
    loop {
        tokio::select! {
            joined = clients.join_next() => {
                if joined.is_none() {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        rss.sample(edge);
        let now = Instant::now();
        if now >= hard_stop {
            clients.abort_all();
        }
        if let (Some(p), Some(every)) = (next_progress, config.progress)
            && now >= p
        {
            next_progress = Some(p + every);
            eprintln!("{}", progress(&stats, origin, started));
        }
        if let (Some(k), Some(every)) = (next_kill, config.kill_every)
            && now >= k
        {
            next_kill = Some(k + every);
            if now + Duration::from_secs(1) < shared.deadline {
                restarts.down.store(true, Ordering::Release);
                restarts.generation.fetch_add(1, Ordering::AcqRel);
                rss.sample(edge);
                let t = Instant::now();
                edge.kill().await;
                let mut last = None;
                for _ in 0..20 {
                    match edge.start().await {
                        Ok(p) if p == ports => {
                            last = None;
                            break;
                        }
                        Ok(p) => {
                            last =
                                Some(anyhow::anyhow!("the edge came back on other ports: {p:?}"));
                            break;
                        }
                        Err(e) => {
                            last = Some(e);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                restarts.down.store(false, Ordering::Release);
                restart_s.push(t.elapsed().as_secs_f64());
                eprintln!(
                    "checker: killed the edge (SIGKILL) and restarted it in {:.2} s",
                    t.elapsed().as_secs_f64()
                );
                if let Some(e) = last {
                    failure = Some(e.context("restarting the edge"));
                    shared.stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let duration = started.elapsed();
    rss.sample(edge);
    Ok((stats.report_parts(), duration, restart_s, rss))
}

fn progress(stats: &Stats, origin: &Origin, started: Instant) -> String {
    let c = stats.report_parts();
    let t = started.elapsed().as_secs_f64();
    format!(
        "[{t:>6.1}s] requests {} ({:.0}/s) ok {} aborted {} mismatched {} corrupt {} errors {} (restart {}) origin requests {}",
        c.requests,
        c.requests as f64 / t.max(1e-9),
        c.ok,
        c.aborted,
        c.mismatched,
        c.corrupt,
        stats.errors_total(),
        stats.restart_errors_total(),
        origin.counters.requests.load(Ordering::Relaxed)
    )
}
