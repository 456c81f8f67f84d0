//! The outcome of a run: the JSON object of `--json` and the human summary.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::config::{LoadConfig, Target};
use crate::cpu::CpuTime;
use crate::stats::{ErrorCounts, Stats};

/// Everything measured in the window (warm-up excluded). Serialized as is for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Requests that completed with the expected status and length.
    pub requests: u64,
    pub errors: u64,
    pub errors_by_kind: ErrorCounts,
    /// The measured window (wall clock).
    pub duration_s: f64,
    /// `requests / duration_s`.
    pub req_per_s: f64,
    /// Latency of successful requests, from sending the request to the end of its body.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Body bytes of every response read in the window.
    pub body_bytes: u64,
    /// `body_bytes / duration_s` in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// This process's CPU time (user + system, every thread) in the window per successful
    /// request; 0 when none succeeded.
    pub client_cpu_us_per_req: f64,
    /// CPU seconds per wall second in the window (1.0 = one core busy).
    pub client_cpu_util: f64,
    pub client_cpu_user_s: f64,
    pub client_cpu_system_s: f64,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    pub warmup_s: f64,
    pub url: String,
    /// The UDP address the load went to.
    pub connect: String,
}

impl Report {
    pub(crate) fn new(
        config: &LoadConfig,
        target: &Target,
        threads: usize,
        stats: &Stats,
        window: Duration,
        cpu: CpuTime,
    ) -> Self {
        let secs = window.as_secs_f64().max(1e-9);
        let ms = |micros: u64| micros as f64 / 1000.0;
        let latency = &stats.latency;
        let cpu_per_req = match stats.requests {
            0 => 0.0,
            n => cpu.total_s() * 1e6 / n as f64,
        };
        Self {
            requests: stats.requests,
            errors: stats.errors.total(),
            errors_by_kind: stats.errors,
            duration_s: secs,
            req_per_s: stats.requests as f64 / secs,
            p50_ms: ms(latency.quantile(0.50)),
            p90_ms: ms(latency.quantile(0.90)),
            p99_ms: ms(latency.quantile(0.99)),
            max_ms: ms(latency.max()),
            mean_ms: latency.mean() / 1000.0,
            body_bytes: stats.body_bytes,
            mb_per_s: stats.body_bytes as f64 / 1e6 / secs,
            client_cpu_us_per_req: cpu_per_req,
            client_cpu_util: cpu.total_s() / secs,
            client_cpu_user_s: cpu.user_s,
            client_cpu_system_s: cpu.system_s,
            connections: config.connections,
            streams: config.streams,
            threads,
            warmup_s: config.warmup.as_secs_f64(),
            url: target.url.to_string(),
            connect: target.addr.to_string(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "h3load {} via {}: {} connections x {} streams, {} thread(s), {:.2} s (+{:.2} s warm-up)",
            self.url,
            self.connect,
            self.connections,
            self.streams,
            self.threads,
            self.duration_s,
            self.warmup_s
        )?;
        writeln!(
            f,
            "  requests   {} ok, {} errors ({})",
            self.requests, self.errors, self.errors_by_kind
        )?;
        writeln!(
            f,
            "  throughput {:.0} req/s, {:.2} MB/s ({} body bytes)",
            self.req_per_s, self.mb_per_s, self.body_bytes
        )?;
        writeln!(
            f,
            "  latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.mean_ms
        )?;
        writeln!(
            f,
            "  client CPU {:.1} us/req, {:.2} cores busy (user {:.2} s, system {:.2} s)",
            self.client_cpu_us_per_req,
            self.client_cpu_util,
            self.client_cpu_user_s,
            self.client_cpu_system_s
        )
    }
}
