//! What to load and how hard: [`LoadConfig`] (the library's input, one `impl Default`-like
//! constructor holding every default) and [`Cli`], the command line that fills it.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;

use crate::tls::Trust;

/// A closed-loop HTTP/3 load: `connections` QUIC connections, each keeping `streams` GETs of
/// `url` in flight, for `warmup` (not counted) and then `duration` (measured).
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `https://HOST[:PORT]/PATH`; HOST is the TLS server name and the `:authority`.
    pub url: http::Uri,
    /// Where to send UDP; `None` resolves HOST:PORT (port 443 when the URL has none).
    pub connect: Option<SocketAddr>,
    /// Which server certificates to accept.
    pub trust: Trust,
    pub connections: usize,
    /// Requests in flight per connection.
    pub streams: usize,
    /// The measured window.
    pub duration: Duration,
    /// Load before the measured window, not counted (connections warm up, caches fill).
    pub warmup: Duration,
    /// Every response must have this status, or it counts as an error; `None` accepts any.
    pub expect_status: Option<http::StatusCode>,
    /// Every response body must be this long, or it counts as an error.
    pub expect_length: Option<u64>,
    /// OS threads, each with its own current-thread runtime and UDP endpoint; connections
    /// are shared out evenly. More threads than connections are not started.
    pub threads: usize,
    /// How long the QUIC + HTTP/3 setup of one connection may take.
    pub connect_timeout: Duration,
}

impl LoadConfig {
    /// The defaults of the command line for `url`: 16 connections x 10 streams, 10 s after
    /// 1 s of warm-up, status 200 expected, one thread, web roots trusted.
    pub fn new(url: http::Uri) -> Self {
        Self {
            url,
            connect: None,
            trust: Trust::WebRoots,
            connections: 16,
            streams: 10,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            expect_status: Some(http::StatusCode::OK),
            expect_length: None,
            threads: 1,
            // Loopback and LAN handshakes take milliseconds; 5 s also covers a slow WAN path
            // while still failing fast when nothing listens (QUIC gets no "refused").
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("connections", self.connections),
            ("streams", self.streams),
            ("threads", self.threads),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if self.duration.is_zero() {
            bail!("duration must be more than 0 s");
        }
        Ok(())
    }
}

/// Where the load goes: the resolved UDP address and the TLS server name.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) url: http::Uri,
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: String,
}

impl Target {
    pub(crate) fn resolve(config: &LoadConfig) -> anyhow::Result<Self> {
        let url = &config.url;
        if url.scheme_str() != Some("https") {
            bail!("URL {url} must be https:// (HTTP/3 only)");
        }
        let host = url.host().ok_or_else(|| anyhow!("URL {url} has no host"))?;
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = match config.connect {
            Some(addr) => addr,
            None => {
                let port = url.port_u16().unwrap_or(443);
                (server_name.as_str(), port)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {server_name}:{port}"))?
                    .next()
                    .ok_or_else(|| anyhow!("{server_name}:{port} resolves to no address"))?
            }
        };
        Ok(Self {
            url: url.clone(),
            addr,
            server_name,
        })
    }
}

/// Closed-loop HTTP/3 load generator (quinn + h3): C connections x S concurrent GETs of one
/// URL; prints requests, errors, req/s, latency percentiles, MB/s and its own CPU per request.
#[derive(Debug, Parser)]
#[command(name = "h3load", version)]
pub struct Cli {
    /// https://HOST[:PORT]/PATH to GET; HOST is the TLS server name and :authority.
    #[arg(long, value_name = "URL")]
    url: http::Uri,
    /// UDP destination (default: resolve HOST:PORT from the URL).
    #[arg(long, value_name = "IP:PORT")]
    connect: Option<SocketAddr>,
    /// Trust only the CA certificates in this PEM file (default: the public web roots).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,
    /// DANGER, benchmarks only: accept any server certificate for any name (the server must
    /// still prove it holds the certificate's key).
    #[arg(long)]
    insecure: bool,
    /// QUIC connections.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 16, value_parser = at_least_one)]
    connections: u32,
    /// Concurrent requests per connection.
    #[arg(short = 's', long, value_name = "N", default_value_t = 10, value_parser = at_least_one)]
    streams: u32,
    /// Measured seconds (fractions allowed).
    #[arg(short = 'd', long, value_name = "SECS", default_value = "10", value_parser = positive_secs)]
    duration: Duration,
    /// Seconds of load before the measured window; not counted.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = secs)]
    warmup: Duration,
    /// Status every response must have, or `any`; a mismatch counts as an error.
    #[arg(long, value_name = "CODE", default_value = "200", value_parser = expected_status)]
    expect_status: ExpectStatus,
    /// Body length every response must have; a mismatch counts as an error.
    #[arg(long, value_name = "BYTES")]
    expect_length: Option<u64>,
    /// Load threads, each a single-threaded tokio runtime with its own UDP endpoint;
    /// connections are dealt out over them (never more threads than connections).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    threads: u32,
    /// Seconds one connection's QUIC + HTTP/3 setup may take before the run fails.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = positive_secs)]
    connect_timeout: Duration,
    /// Print one JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    pub fn into_config(self) -> LoadConfig {
        let trust = match (self.ca, self.insecure) {
            (Some(ca), _) => Trust::CaFile(ca),
            (None, true) => Trust::DangerAcceptAnyCertificate,
            (None, false) => Trust::WebRoots,
        };
        LoadConfig {
            connect: self.connect,
            trust,
            connections: self.connections as usize,
            streams: self.streams as usize,
            duration: self.duration,
            warmup: self.warmup,
            expect_status: self.expect_status.0,
            expect_length: self.expect_length,
            threads: self.threads as usize,
            connect_timeout: self.connect_timeout,
            ..LoadConfig::new(self.url)
        }
    }
}

/// `--expect-status`: a code, or `any` for no check.
#[derive(Clone, Debug)]
struct ExpectStatus(Option<http::StatusCode>);

fn expected_status(s: &str) -> Result<ExpectStatus, String> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(ExpectStatus(None));
    }
    http::StatusCode::from_bytes(s.as_bytes())
        .map(|c| ExpectStatus(Some(c)))
        .map_err(|_| format!("{s:?} is not an HTTP status code (100-999) or `any`"))
}

fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a whole number of at least 1")),
        Ok(n) => Ok(n),
    }
}

fn secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn positive_secs(s: &str) -> Result<Duration, String> {
    match secs(s)? {
        d if d.is_zero() => Err("must be more than 0 seconds".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LoadConfig, clap::Error> {
        let argv = ["h3load"].iter().chain(args);
        Cli::try_parse_from(argv).map(Cli::into_config)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = parse(&["--url", "https://cdn.test/x"]).unwrap();
        let d = LoadConfig::new("https://cdn.test/x".parse().unwrap());
        assert_eq!(
            (c.connections, c.streams, c.duration, c.warmup, c.threads),
            (d.connections, d.streams, d.duration, d.warmup, d.threads)
        );
        assert_eq!((c.connections, c.streams), (16, 10));
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert_eq!(c.expect_status, Some(http::StatusCode::OK));
        assert_eq!(c.trust, Trust::WebRoots);
    }

    #[test]
    fn every_flag_the_bench_harness_uses_parses() {
        let c = parse(&[
            "--url=https://localhost:4433/hello.txt",
            "--connect=127.0.0.1:4433",
            "--insecure",
            "-c",
            "2",
            "-s",
            "4",
            "-d",
            "0.5",
            "--warmup",
            "0",
            "--expect-status",
            "any",
            "--expect-length",
            "34",
            "--threads",
            "2",
            "--json",
        ])
        .unwrap();
        assert_eq!(c.connect, Some("127.0.0.1:4433".parse().unwrap()));
        assert_eq!(c.trust, Trust::DangerAcceptAnyCertificate);
        assert_eq!((c.connections, c.streams, c.threads), (2, 4, 2));
        assert_eq!(c.duration, Duration::from_millis(500));
        assert_eq!(c.warmup, Duration::ZERO);
        assert_eq!((c.expect_status, c.expect_length), (None, Some(34)));
        let long = parse(&[
            "--url=https://a/",
            "--ca=ca.pem",
            "--connections=3",
            "--streams=5",
            "--duration=2",
        ])
        .unwrap();
        assert_eq!(long.trust, Trust::CaFile("ca.pem".into()));
        assert_eq!((long.connections, long.streams), (3, 5));
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["--url=https://a/", "-c", "0"][..],
            &["--url=https://a/", "-d", "0"],
            &["--url=https://a/", "-d", "-1"],
            &["--url=https://a/", "--expect-status", "twohundred"],
            &["--url=https://a/", "--ca=x.pem", "--insecure"],
            &[],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn target_needs_https_and_takes_the_connect_address() {
        let mut c = LoadConfig::new("http://localhost/".parse().unwrap());
        assert!(Target::resolve(&c).is_err());
        c.url = "https://[::1]:8443/x".parse().unwrap();
        let t = Target::resolve(&c).unwrap();
        assert_eq!(t.server_name, "::1");
        assert_eq!(t.addr, "[::1]:8443".parse().unwrap());
        c.connect = Some("127.0.0.1:9".parse().unwrap());
        assert_eq!(Target::resolve(&c).unwrap().addr.port(), 9);
    }
}
