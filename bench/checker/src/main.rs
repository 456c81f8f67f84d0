//! `checker`: runs the concurrency checker (see bench/checker/README.md). Exits 1 when the
//! edge served a mismatched or corrupt body, 2 when the run itself failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use checker::Config;
use checker::client::Proto;
use checker::origin::SizeClass;
use clap::Parser;

/// Many clients through the real edge in front of an origin whose objects keep changing;
/// every body byte is checked against the version its ETag names.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The edge binary. Default: target/release/edge, else an `edge` next to this binary.
    #[arg(long)]
    edge_bin: Option<PathBuf>,
    /// How long the clients run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// Objects the origin serves (40 % small, 30 % ~300 KiB, 30 % 3-5 slices).
    #[arg(long, default_value_t = 50)]
    objects: usize,
    /// Only objects of these size classes, comma-separated, in turn: small, medium, large.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Protocols, comma-separated, shared round-robin by the clients: h1, h1tls, h2.
    #[arg(long, default_value = "h1,h2", value_delimiter = ',')]
    protocols: Vec<String>,
    /// HTTP/2 clients per shared connection.
    #[arg(long, default_value_t = 10)]
    h2_streams: usize,
    /// Share of responses the client stops reading part-way (0..1).
    #[arg(long, default_value_t = 0.05)]
    abort_share: f64,
    /// Share of whole-object requests sent with If-None-Match of an ETag seen before.
    #[arg(long, default_value_t = 0.1)]
    conditional_share: f64,
    /// The origin's Cache-Control max-age, in seconds.
    #[arg(long, default_value_t = 1)]
    max_age: u32,
    /// Each object changes version after a random pause in MIN-MAX milliseconds.
    #[arg(long, default_value = "50-500")]
    version_ms: String,
    /// Versions of an object differ in length too (by up to 4 KiB).
    #[arg(long)]
    vary_length: bool,
    /// Share of origin responses streamed slowly (16 KiB chunks 2 ms apart), so that versions
    /// change while the edge is still reading a body.
    #[arg(long, default_value_t = 0.0)]
    slow_share: f64,
    /// Self-test: share of origin responses the origin spoils on purpose (half end in the
    /// previous version's bytes, half have a byte flipped; the headers are right). A run with
    /// this above 0 must FAIL with mismatched and corrupt bodies; it proves the checker can.
    #[arg(long, default_value_t = 0.0)]
    inject_faults: f64,
    /// The edge's cache.slice_size in bytes (suffixes KiB, MiB allowed).
    #[arg(long, default_value = "1MiB")]
    slice_size: String,
    /// The edge's cache.disk_budget in bytes (suffixes KiB, MiB, GiB allowed).
    #[arg(long, default_value = "1GiB")]
    disk_budget: String,
    /// Set `scheme = "shared"` on the edge's site, so that http and https share entries.
    #[arg(long)]
    shared_scheme: bool,
    /// SIGKILL the edge and restart it on the same cache dir and ports every SECS seconds.
    #[arg(long)]
    kill_every: Option<f64>,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Seed for object sizes and bodies (random by default; printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// Make the work dir (edge config, log, cache) under this dir instead of $TMPDIR.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work dir (it is always kept when the run fails).
    #[arg(long)]
    keep: bool,
    /// Progress line interval in seconds (0: none).
    #[arg(long, default_value_t = 10.0)]
    progress: f64,
    /// The edge's log filter (RUST_LOG for the child).
    #[arg(long, default_value = "info")]
    edge_log: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim().replace(' ', "");
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| t.strip_suffix(suffix).map(|n| (n.to_owned(), *m)))
    .unwrap_or((t.clone(), 1));
    let n: u64 = num.parse().with_context(|| format!("not a size: {s:?}"))?;
    Ok(n * mult)
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(s.is_finite() && s >= 0.0, "{what}: not a number of seconds");
    Ok(Duration::from_secs_f64(s))
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let (lo, hi) = args
        .version_ms
        .split_once('-')
        .map_or((args.version_ms.as_str(), args.version_ms.as_str()), |p| p);
    let (lo, hi): (u64, u64) = (
        lo.trim().parse().context("--version-ms MIN")?,
        hi.trim().parse().context("--version-ms MAX")?,
    );
    anyhow::ensure!(
        lo > 0 && hi >= lo,
        "--version-ms: want MIN-MAX with 0 < MIN <= MAX"
    );
    let protocols = args
        .protocols
        .iter()
        .map(|p| Proto::parse(p.trim()).with_context(|| format!("unknown protocol {p:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (name, v) in [
        ("--abort-share", args.abort_share),
        ("--conditional-share", args.conditional_share),
        ("--slow-share", args.slow_share),
        ("--inject-faults", args.inject_faults),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name}: want 0..1");
    }
    Ok(Config {
        edge_bin: checker::edge::find_edge_bin(args.edge_bin.as_deref())?,
        duration: secs(args.duration, "--duration")?,
        max_requests: args.max_requests,
        objects: args.objects,
        classes: args
            .classes
            .iter()
            .map(|c| SizeClass::parse(c.trim()).with_context(|| format!("unknown class {c:?}")))
            .collect::<anyhow::Result<_>>()?,
        clients: args.clients,
        protocols,
        h2_streams: args.h2_streams.max(1),
        abort_share: args.abort_share,
        conditional_share: args.conditional_share,
        max_age: args.max_age,
        version_interval: (Duration::from_millis(lo), Duration::from_millis(hi)),
        vary_length: args.vary_length,
        slow_share: args.slow_share,
        fault_share: args.inject_faults,
        slice_size: parse_size(&args.slice_size)?,
        disk_budget: parse_size(&args.disk_budget)?,
        shared_scheme: args.shared_scheme,
        kill_every: args
            .kill_every
            .map(|s| secs(s, "--kill-every"))
            .transpose()?
            .filter(|d| !d.is_zero()),
        request_timeout: secs(args.request_timeout, "--request-timeout")?,
        seed: args.seed,
        work_parent: args.work_dir.clone(),
        keep_work_dir: args.keep,
        progress: Some(secs(args.progress, "--progress")?).filter(|d| !d.is_zero()),
        edge_log_filter: args.edge_log.clone(),
        extra_toml: String::new(),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = config(&args).and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(checker::run(config))
    });
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            if let Some(path) = &args.json {
                let written = serde_json::to_string_pretty(&report)
                    .map_err(anyhow::Error::from)
                    .and_then(|j| Ok(std::fs::write(path, j)?));
                if let Err(e) = written {
                    eprintln!("checker: writing {}: {e:#}", path.display());
                    return ExitCode::from(2);
                }
            }
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("checker: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
    }
}
