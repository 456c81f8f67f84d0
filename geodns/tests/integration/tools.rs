//! The server as a process, queried with dig.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{FRA, HealthServer, SIN, config, write_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_dig_with_ecs_over_udp_and_tcp() {
    let dig =
        which("dig").expect("dig is not installed: run ./scripts/test.sh (it installs dnsutils)");
    let dir = tempfile::tempdir().unwrap();
    let db = write_db(dir.path());
    let h = [
        HealthServer::start().await,
        HealthServer::start().await,
        HealthServer::start().await,
    ];
    let cfg = config(&db, [&h[0].url, &h[1].url, &h[2].url]);
    let path = dir.path().join("geodns.toml");
    std::fs::write(&path, shared::config::render(&cfg).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_geodns"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A thread keeps draining the log so the server never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut port = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if line.contains("listening") && line.contains("dns") && line.contains("addr=") {
            port = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port());
            break;
        }
    }
    if port.is_none() {
        let _ = child.kill();
    }
    let port = port.expect("geodns logs its DNS address");
    let run = |args: &[&str]| {
        let out = Command::new(&dig)
            .args(["@127.0.0.1", "-p", &port.to_string(), "+tries=1", "+time=3"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = run(&["www.cdn.test", "A", "+subnet=10.1.2.0/24"]);
    assert!(out.contains(FRA), "{out}");
    assert!(out.contains("CLIENT-SUBNET: 10.1.2.0/24/16"), "{out}");
    assert!(out.contains(" aa"), "authoritative flag: {out}");
    let out = run(&["www.cdn.test", "A", "+tcp", "+subnet=10.3.0.0/24"]);
    assert!(out.contains(SIN), "{out}");
    let out = run(&["nope.cdn.test", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let out = run(&["example.org", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = run(&["big.cdn.test", "TXT", "+noedns", "+ignore"]);
    assert!(
        out.contains(" tc"),
        "truncated over UDP without EDNS: {out}"
    );
    let out = run(&["big.cdn.test", "TXT", "+noedns"]);
    assert!(
        out.matches("\"aaaa").count() >= 1 && out.contains("ANSWER: 3"),
        "dig retried over TCP: {out}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "geodns exits on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
