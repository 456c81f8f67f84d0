//! `geodns`: the quicdn GeoDNS server. See the README's GeoDNS section.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use geodns::config::GeoDnsConfig;

/// quicdn GeoDNS: an authoritative DNS server that sends clients to the nearest healthy POP.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see `--print-config`).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Override listen.dns (UDP and TCP), e.g. 127.0.0.1:0 for an ephemeral port.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override listen.admin.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate the config (and open the databases) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geodns: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => GeoDnsConfig::load(path)?,
        None => GeoDnsConfig::default(),
    };
    if let Some(a) = args.listen {
        config.listen.dns = a;
    }
    if let Some(a) = args.admin {
        config.listen.admin = Some(a);
    }
    if args.print_config {
        print!("{}", shared::config::render(&config)?);
        return Ok(());
    }
    config.validate()?;
    if args.check_config {
        geodns::server::State::build(config)?;
        println!("config OK");
        return Ok(());
    }
    let _log = shared::telemetry::init(&config.log.filter, config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = geodns::server::start(config, args.config.clone()).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}
