//! `edge`: the quicdn edge node. See the README for the quick start.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use edge::config::{EdgeConfig, SiteConfig};
use edge::reload::ConfigSource;
use edge::server::Edge;

mod cli;

/// glibc's malloc trims and regrows the heap top under the churn of per-request futures
/// (HTTP/3 spawns one per stream), zeroing fresh pages each time; mimalloc keeps freed memory
/// for reuse and is faster for small allocations (bench/http/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// quicdn edge: an HTTP/3-first caching reverse proxy.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file (see `--print-config` for every key and its default).
    #[arg(short, long, global = true)]
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
    /// Override listen.admin (also where `reload` and `--check-config` reach a running edge).
    #[arg(long, global = true)]
    admin: Option<SocketAddr>,
    /// Override cache.dir.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate the config and exit; if an edge runs at the admin address, also list the
    /// changed keys that a reload would not apply (they need a restart).
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum Command {
    /// Ask the running edge (at --admin, else the config's listen.admin) to reload its config
    /// file; prints what it applied, or why it rejected the new config (exit status 1).
    Reload,
    /// Purge from every POP through the running edge's admin API (`POST /purge`); prints what
    /// each POP purged. Exit status 1 if refused, or if POPs are pending after --wait.
    Purge(cli::PurgeArgs),
    /// Fetch URLs into the cache of every POP (or those of --pop) through the running edge's
    /// admin API (`POST /prewarm`); prints each POP's result per URL. Exit status 1 if
    /// refused, if a URL failed, or if POPs are pending after --wait.
    Prewarm(cli::PrewarmArgs),
    /// Print a signed URL for a site with `[site.token]` keys (its key from --config, or
    /// --secret): quicdn's own format, for the URL or a path prefix.
    Sign(cli::SignArgs),
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
    match &args.command {
        Some(Command::Reload) => {
            return admin_call(&admin_config(&args)?, |addr| async move {
                let (status, text) =
                    edge::admin::request(addr, http::Method::POST, "/reload").await?;
                print!("{text}");
                anyhow::ensure!(status.is_success(), "the edge at {addr} answered {status}");
                Ok(())
            });
        }
        Some(Command::Purge(purge)) => {
            let request = purge.request()?;
            return admin_call(&admin_config(&args)?, |addr| {
                cli::send(addr, "/purge", request)
            });
        }
        Some(Command::Prewarm(prewarm)) => {
            let request = prewarm.request()?;
            return admin_call(&admin_config(&args)?, |addr| {
                cli::send(addr, "/prewarm", request)
            });
        }
        Some(Command::Sign(sign)) => {
            let config = args
                .config
                .as_ref()
                .map(|_| effective_config(&args))
                .transpose()?;
            println!("{}", sign.sign(config.as_ref())?);
            return Ok(());
        }
        None => {}
    }
    let config = effective_config(&args)?;
    if args.print_config {
        print!("{}", shared::config::render(&config)?);
        return Ok(());
    }
    config.validate()?;
    if args.check_config {
        println!("config OK");
        let checked = config.clone();
        let admin_given = args.admin.is_some();
        return admin_call(&checked, |addr| async move {
            match edge::admin::request(addr, http::Method::GET, "/config").await {
                Ok((status, text)) if status.is_success() => {
                    let running: EdgeConfig = toml::from_str(&text)
                        .context("the running edge's /config does not parse")?;
                    // --admin only says where the edge is: not a change to report.
                    let mut compared = config.clone();
                    if admin_given {
                        compared.listen.admin = running.listen.admin;
                    }
                    let restart = edge::config::restart_needed(&running, &compared);
                    match restart.is_empty() {
                        true => println!("a reload of the edge at {addr} applies every change"),
                        false => println!(
                            "changed keys that need a restart of the edge at {addr} (a reload keeps their running values): {}",
                            restart.join(", ")
                        ),
                    }
                }
                _ => println!("no running edge answers at {addr}: nothing to compare with"),
            }
            Ok(())
        });
    }
    let _log = shared::telemetry::init(&config.log.effective_filter(), config.log.format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let source_args = args.clone();
    let source = ConfigSource::new(args.config.clone(), move || effective_config(&source_args));
    runtime.block_on(async {
        let edge = Edge::start_with(config, Some(source)).await?;
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        edge.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The config that says where the running edge's admin listener is. With --admin, the
/// config file is the running edge's to judge, even a broken one.
fn admin_config(args: &Args) -> anyhow::Result<EdgeConfig> {
    match args.admin {
        Some(admin) => {
            let mut c = EdgeConfig::default();
            c.listen.admin = Some(admin);
            Ok(c)
        }
        None => effective_config(args),
    }
}

/// Runs `call` with the admin address of the running edge, on a small runtime.
fn admin_call<F, Fut>(config: &EdgeConfig, call: F) -> anyhow::Result<()>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let Some(addr) = config.listen.admin else {
        anyhow::bail!("no admin address: give --admin or set listen.admin");
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(call(addr))
}

fn effective_config(args: &Args) -> anyhow::Result<EdgeConfig> {
    let mut config = match &args.config {
        Some(path) => EdgeConfig::load(path)?,
        None => EdgeConfig::default(),
    };
    if let Some(origin) = &args.origin {
        config.sites = vec![SiteConfig::new(&["*"], origin)];
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
