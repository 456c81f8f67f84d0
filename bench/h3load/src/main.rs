//! `h3load`: HTTP/3 load generator for bench/ (see `h3load --help` and bench/h3load/README.md).

use std::process::ExitCode;

use clap::Parser as _;
use h3load::Cli;

/// The client's own cost per request must stay well below the server's; about a fifth of it
/// was glibc malloc/free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let report = match h3load::run(&cli.into_config()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("h3load: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("h3load: cannot write the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{report}");
    }
    if report.requests == 0 {
        eprintln!(
            "h3load: no request succeeded in {:.2} s: {} errors ({})",
            report.duration_s, report.errors, report.errors_by_kind
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
