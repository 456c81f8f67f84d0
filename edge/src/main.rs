//! `edge`: the quicdn edge node. See the README for the quick start.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use edge::config::{EdgeConfig, SiteConfig};
use edge::server::Edge;

/// glibc's malloc trims and regrows the heap top under the churn of per-request futures
/// (HTTP/3 spawns one per stream), zeroing fresh pages each time; mimalloc keeps freed memory
/// for reuse and is faster for small allocations (bench/http/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quicdn edge: an HTTP/3-first caching reverse proxy.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (see `--print-config` for every key and its default).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Quick start: serve every host from this origin URL (http:// or https://).
    #[arg(long)]
    origin: Option<String>,
    /// Override listen.https (e.g. 127.0.0.1:0 for an ephemeral port).
    #[arg(long)]
    listen_https: Option<SocketAddr>,
    /// Override listen.http.
    #[arg(long)]
    listen_http: Option<SocketAddr>,
    /// Override listen.admin.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Override cache.dir.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate the config and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = effective_config(&args)?;
    if args.print_config {
        print!("{}", shared::config::render(&config)?);
        return Ok(());
    }
    config.validate()?;
    if args.check_config {
        println!("config OK");
        return Ok(());
    }
    let _log = shared::telemetry::init(&config.log.filter, config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let edge = Edge::start(config).await?;
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        edge.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn effective_config(args: &Args) -> anyhow::Result<EdgeConfig> {
    let mut config = match &args.config {
        Some(path) => EdgeConfig::load(path)?,
        None => EdgeConfig::default(),
    };
    if let Some(origin) = &args.origin {
        config.sites = vec![SiteConfig {
            hosts: vec!["*".into()],
            origin: origin.clone(),
            forward_host: false,
            scheme: Default::default(),
        }];
    }
    if let Some(a) = args.listen_https {
        config.listen.https = Some(a);
    }
    if let Some(a) = args.listen_http {
        config.listen.http = Some(a);
    }
    if let Some(a) = args.admin {
        config.listen.admin = Some(a);
    }
    if let Some(dir) = &args.cache_dir {
        config.cache.dir = dir.clone();
    }
    Ok(config)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
