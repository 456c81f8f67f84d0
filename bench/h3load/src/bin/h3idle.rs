//! `h3idle`: holds many idle HTTP/3 (QUIC) connections open and reports, as one JSON object,
//! when the server closed them and whether new clients were still served meanwhile. Used by
//! bench/attack (see bench/attack/README.md and `h3idle --help`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use h3load::Trust;
use h3load::idle::{IdleConfig, IdleMode, run_idle};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// QUIC handshake only, then nothing.
    Handshake,
    /// HTTP/3 control stream, then request streams holding an unfinished HEADERS frame.
    PartialHeaders,
}

/// Many idle QUIC connections to one server (attack tool for bench/attack; loopback use).
#[derive(Debug, Parser)]
#[command(name = "h3idle", version)]
struct Cli {
    /// UDP address of the server.
    #[arg(long, value_name = "IP:PORT")]
    connect: SocketAddr,
    /// Local addresses to send from (comma-separated; connections dealt out round-robin),
    /// e.g. to stay under a per-address connection cap. Default: the unspecified address.
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// TLS server name.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    server_name: String,
    /// Trust only the CA certificates in this PEM file (default: accept any certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Connections to hold.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 1000)]
    connections: usize,
    /// Handshakes in flight at once.
    #[arg(long, value_name = "N", default_value_t = 200)]
    concurrency: usize,
    /// Seconds to hold the connections once all are set up.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    hold: f64,
    #[arg(long, value_enum, default_value = "handshake")]
    mode: Mode,
    /// Partial request streams per connection (partial-headers mode).
    #[arg(long, value_name = "N", default_value_t = 10)]
    streams: usize,
    /// During the hold, GET this URL on a fresh connection every --probe-interval.
    #[arg(long, value_name = "URL")]
    probe_url: Option<http::Uri>,
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    probe_interval: f64,
    /// Seconds one handshake (or one probe) may take.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    connect_timeout: f64,
}

fn secs(v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{v} is not a number of seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = (|| -> Result<IdleConfig, String> {
        Ok(IdleConfig {
            connect: cli.connect,
            bind: cli.bind,
            server_name: cli.server_name,
            trust: cli
                .ca
                .map_or(Trust::DangerAcceptAnyCertificate, Trust::CaFile),
            connections: cli.connections,
            concurrency: cli.concurrency,
            hold: secs(cli.hold)?,
            mode: match cli.mode {
                Mode::Handshake => IdleMode::Handshake,
                Mode::PartialHeaders => IdleMode::PartialHeaders,
            },
            streams: cli.streams,
            probe_url: cli.probe_url,
            probe_interval: secs(cli.probe_interval)?,
            connect_timeout: secs(cli.connect_timeout)?,
        })
    })();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("h3idle: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run_idle(&config) {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("h3idle: cannot write the report: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("h3idle: {e:#}");
            ExitCode::FAILURE
        }
    }
}
