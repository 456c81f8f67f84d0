//! `certs`: makes a development CA and leaf certificates. See the README's "Certificates".

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// quicdn development certificates: a local CA (made once, then reused) and leaf certificates
/// signed by it. Trust the CA once and every leaf is trusted.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory of the CA (ca.pem, ca-key.pem) and the leaves (NAME.pem, NAME-key.pem).
    #[arg(long, value_name = "DIR", default_value = certs::DEFAULT_DIR)]
    dir: PathBuf,
    /// A leaf to issue: NAME=SAN,SAN,... where SANs are DNS names, wildcards (*.example.test)
    /// or IP addresses. Repeatable. Default: localhost=localhost,127.0.0.1,::1 and
    /// testnet=cdn.quicdn.test,*.cdn.quicdn.test,*.quicdn.test,localhost,127.0.0.1.
    #[arg(long = "leaf", value_name = "NAME=SAN,...", value_parser = parse_leaf)]
    leaves: Vec<LeafSpec>,
}

#[derive(Debug, Clone)]
struct LeafSpec {
    name: String,
    sans: Vec<String>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's message already includes its cause.
            eprintln!("certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let leaves = if args.leaves.is_empty() {
        certs::DEFAULT_LEAVES
            .iter()
            .map(|(name, sans)| LeafSpec {
                name: (*name).to_owned(),
                sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect()
    } else {
        args.leaves
    };
    let ca = certs::Ca::load_or_create(&args.dir)?;
    if ca.created() {
        println!("created a new CA: {}", ca.cert_path().display());
    } else {
        println!("using the CA in {}", ca.cert_path().display());
    }
    println!(
        "  its key, {}, is private (mode 0600)",
        ca.key_path().display()
    );
    for leaf in &leaves {
        let files = ca.issue(&leaf.name, &leaf.sans)?;
        println!(
            "issued {}: {} (leaf + CA chain), key {}\n  names: {}",
            leaf.name,
            files.cert.display(),
            files.key.display(),
            leaf.sans.join(", ")
        );
    }
    print_trust_help(ca.cert_path());
    Ok(())
}

/// `NAME=SAN,SAN,...`, checked before anything is written.
fn parse_leaf(text: &str) -> Result<LeafSpec, String> {
    let (name, sans) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=SAN,SAN,... in {text:?}"))?;
    let sans: Vec<String> = sans.split(',').map(|s| s.trim().to_owned()).collect();
    certs::check_leaf_name(name).map_err(|e| e.to_string())?;
    let sans = certs::normalize_sans(name, &sans).map_err(|e| e.to_string())?;
    Ok(LeafSpec {
        name: name.to_owned(),
        sans,
    })
}

fn print_trust_help(ca: &Path) {
    let ca = ca.display();
    println!(
        "\nTrust the CA once; every leaf it issues (now or later) is then trusted:
  curl       curl --cacert {ca} https://localhost:8443/
  Debian     sudo cp {ca} /usr/local/share/ca-certificates/quicdn-dev.crt && sudo update-ca-certificates
             (curl, OpenSSL, wget; not Chromium or Firefox, which keep their own stores)
  Chromium   Settings > Privacy and security > Security > Manage certificates > Authorities
             (chrome://certificate-manager) > Import {ca}, trusted for websites; or
             certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n quicdn-dev -i {ca}  (libnss3-tools)
  Firefox    Settings > Privacy & Security > Certificates > View Certificates > Authorities >
             Import {ca}, trusted to identify websites
  geodns     [health] ca_file = \"{ca}\"
Keep the CA key private: whoever has it can make certificates this machine trusts."
    );
}
