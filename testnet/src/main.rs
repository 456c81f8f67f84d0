//! `testnet`: simulated regions on one machine, running the real edge and geodns.
//! See the README's Testnet section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use testnet::config::TestnetConfig;
use testnet::lifecycle::{self, Paths};
use testnet::procs::State;

/// quicdn testnet: regions with real latency between them, in Linux network namespaces.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config (regions, latency table, where origin and GeoDNS live); see --print-config.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Namespace prefix (overrides the config's), so several testnets can coexist.
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Folder for state, generated configs, logs and caches [default: /run/quicdn-testnet/PREFIX].
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Folder holding the `edge` and `geodns` binaries [default: this binary's folder].
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// The development CA's folder (made by the `certs` tool if missing).
    #[arg(long, global = true, default_value = certs::DEFAULT_DIR)]
    certs_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the namespaces and links, write configs and start every process.
    Up,
    /// Play the scenarios from every client and print the table (exit 1 if any fails).
    Run {
        /// The region whose POP scenario 3 stops [default: the second region].
        #[arg(long)]
        fail: Option<String>,
    },
    /// Show the namespaces and processes.
    Status,
    /// Stop every process and remove every namespace (safe to repeat, also after a crash).
    Down,
    /// Print the effective config as TOML.
    PrintConfig,
    /// (internal) The link emulator; `up` starts it inside PREFIX-net.
    #[command(hide = true)]
    Emulate {
        spec: PathBuf,
        #[arg(long)]
        ready: PathBuf,
    },
    /// (internal) The demo origin; `up` starts it inside PREFIX-origin.
    #[command(hide = true)]
    Origin {
        #[arg(long)]
        listen: SocketAddr,
        /// Where to serve the tagged objects of the purge scenarios.
        #[arg(long)]
        tagged: SocketAddr,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("testnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => TestnetConfig::load(path)?,
        None => TestnetConfig::default(),
    };
    if let Some(p) = &args.prefix {
        config.prefix.clone_from(p);
    }
    config.validate()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| lifecycle::default_state_dir(&config.prefix));
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no folder")?
            .to_path_buf(),
    };
    match args.command {
        Cmd::Up => {
            let _log = shared::telemetry::init("warn", shared::telemetry::LogFormat::Text);
            let paths = Paths {
                state_dir,
                bin_dir,
                certs_dir: args.certs_dir,
            };
            let state = lifecycle::up(&config, &paths)?;
            print!("{}", lifecycle::status(&config.prefix, &state.dir)?);
            println!(
                "CA: {}  (curl --cacert it; see the README)",
                state.ca.display()
            );
            println!("next: testnet run, then testnet down");
        }
        Cmd::Run { fail } => {
            let mut state = State::load(&state_dir)?;
            let report = testnet::scenarios::run(&mut state, fail.as_deref())?;
            println!();
            print!("{}", report.table());
            let failed = report.failures();
            if failed > 0 {
                println!(
                    "{failed} check(s) FAILED; logs in {}",
                    state.dir.join("logs").display()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!("all {} checks passed", report.rows.len());
        }
        Cmd::Status => print!("{}", lifecycle::status(&config.prefix, &state_dir)?),
        Cmd::Down => {
            lifecycle::down(&config.prefix, &state_dir)?;
            println!("testnet {:?} is down", config.prefix);
        }
        Cmd::PrintConfig => print!("{}", toml::to_string(&config)?),
        Cmd::Emulate { spec, ready } => {
            let _log = shared::telemetry::init("info", shared::telemetry::LogFormat::Text);
            let text =
                std::fs::read(&spec).with_context(|| format!("cannot read {}", spec.display()))?;
            let spec: testnet::emulator::EmulatorSpec = serde_json::from_slice(&text)?;
            testnet::emulator::run(&spec, || {
                if let Err(error) = std::fs::write(&ready, b"ready\n") {
                    tracing::error!(%error, path = %ready.display(), "cannot mark the emulator ready");
                }
            })?;
        }
        Cmd::Origin { listen, tagged } => {
            let _log = shared::telemetry::init("info", shared::telemetry::LogFormat::Text);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let origin = edge::demo::DemoOrigin::start(listen).await?;
                tracing::info!(addr = %origin.addr(), "demo origin listening");
                let tagged = testnet::origin::start_tagged(tagged).await?;
                tracing::info!(addr = %tagged, "tagged origin listening");
                tokio::signal::ctrl_c().await?;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
