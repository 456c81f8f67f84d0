//! The whole testnet end to end: `up`, `run` (every scenario must pass), `down`, and nothing
//! left behind. Needs root (CI runs as root) plus unbound, dig, ping and nats-server, and the
//! `edge` and `geodns` binaries next to `testnet` (`cargo test --workspace` builds them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn testnet(args: &[&str], prefix: &str, state: &Path, certs: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .args(args)
        .args(["--prefix", prefix])
        .arg("--state-dir")
        .arg(state)
        .arg("--certs-dir")
        .arg(certs)
        .output()
        .expect("run testnet");
    println!(
        "$ testnet {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn our_namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// Runs `down` however the test ends, so a failed assertion leaves no namespace behind.
struct Down {
    prefix: String,
    state: PathBuf,
    certs: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        testnet(&["down"], &self.prefix, &self.state, &self.certs);
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn up_run_down_leaves_nothing_behind() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the testnet test needs root, and CI runs as root"
        );
        eprintln!("skipped: the testnet needs root (run the test suite as root to include it)");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_testnet")).parent().unwrap();
    for bin in ["edge", "geodns"] {
        assert!(
            bin_dir.join(bin).is_file(),
            "{bin} is not built in {}: run `cargo build -p edge -p geodns` (cargo test --workspace does)",
            bin_dir.display()
        );
    }
    // Unique per process, at most 8 characters.
    let prefix = format!("qt{}", std::process::id() % 100_000);
    let tmp = tempfile::tempdir().unwrap();
    let (state, certs) = (tmp.path().join("state"), tmp.path().join("certs"));
    let guard = Down {
        prefix: prefix.clone(),
        state: state.clone(),
        certs: certs.clone(),
    };

    let up = testnet(&["up"], &prefix, &state, &certs);
    assert!(up.status.success(), "testnet up failed");
    assert_eq!(
        our_namespaces(&prefix).len(),
        18,
        "{:?}",
        our_namespaces(&prefix)
    );
    let status = testnet(&["status"], &prefix, &state, &certs);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.status.success() && !text.contains("STOPPED"),
        "{text}"
    );
    let pids: Vec<u32> = text
        .lines()
        .filter(|l| l.ends_with("running"))
        .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .collect();
    // emulator, origin, geodns, and an edge, a nats-server and an unbound per region.
    assert_eq!(pids.len(), 3 + 3 * 3, "{text}");
    // The bus: every region's server is up, routed to the two others.
    let bus: Vec<&str> = text.lines().filter(|l| l.contains("nats ")).collect();
    assert_eq!(
        bus.iter()
            .filter(|l| l.contains("healthy, routes 2/2"))
            .count(),
        3,
        "{text}"
    );

    let run = testnet(&["run"], &prefix, &state, &certs);
    let table = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "a scenario failed:\n{table}");
    for scenario in [
        "1 resolve",
        "2 fetch h3",
        "3 failover",
        "4 recovery",
        "5 purge tag",
        "6 purge lag",
        "7 pop down",
        "8 nats down",
    ] {
        assert!(
            table.contains(scenario),
            "{scenario} missing from:\n{table}"
        );
    }
    assert!(!table.contains("FAIL"), "{table}");

    // As after a crash: no state file. `down` must still find and remove everything.
    std::fs::remove_file(state.join("state.json")).unwrap();
    let down = testnet(&["down"], &prefix, &state, &certs);
    assert!(down.status.success());
    assert!(
        our_namespaces(&prefix).is_empty(),
        "left behind: {:?}",
        our_namespaces(&prefix)
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "pid {pid} still runs: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        );
    }
    // Idempotent.
    let again = testnet(&["down"], &prefix, &state, &certs);
    assert!(again.status.success());
    drop(guard);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn bad_config_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, "origin_region = \"mars\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_testnet"))
        .arg("--config")
        .arg(&path)
        .arg("print-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("origin_region") && err.contains("mars"),
        "{err}"
    );
}
