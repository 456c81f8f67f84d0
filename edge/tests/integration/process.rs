//! The real `edge` binary: restarts, corrupt files on disk, memory under a 1 GiB miss, CLI.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::support::client::Client;
use crate::support::edge::{EdgeProcess, test_config};
use crate::support::origin::{Reply, TestOrigin, pattern_check};

fn url(edge: &EdgeProcess, path: &str) -> String {
    format!("http://localhost:{}{path}", edge.http.port())
}

/// Every content file in the store, largest first.
fn content_files(cache: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![cache.join("content-v2")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((entry.metadata().unwrap().len(), path));
            }
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_entries_survive_a_restart() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/keep",
        Reply::ok("kept across restarts").header("cache-control", "max-age=600"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&origin.url(), &dir.path().join("cache"));
    let client = Client::h1(None);

    let edge = EdgeProcess::spawn(&config);
    let first = client.get(&url(&edge, "/keep")).await;
    assert!(
        first
            .header("cache-status")
            .unwrap()
            .contains("fwd=uri-miss")
    );
    assert!(edge.stop().success(), "SIGTERM is a clean exit");

    let edge = EdgeProcess::spawn(&config);
    let again = client.get(&url(&edge, "/keep")).await;
    assert_eq!(again.text(), "kept across restarts");
    let cs = again.header("cache-status").unwrap();
    assert!(cs.contains("; hit"), "{cs}");
    assert_eq!(origin.hits("/keep"), 1);
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_content_file_is_never_served() {
    let origin = TestOrigin::start().await;
    let body = "the real bytes ".repeat(10_000);
    origin.route(
        "/c",
        Reply::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = test_config(&origin.url(), &cache);
    let client = Client::h1(None);

    let edge = EdgeProcess::spawn(&config);
    assert_eq!(client.get(&url(&edge, "/c")).await.text(), body);
    edge.stop();

    // Flip bytes in the body's content file (the largest one), keeping its length.
    let (_, path) = content_files(&cache).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100..110].copy_from_slice(b"CORRUPTED!");
    std::fs::write(&path, bytes).unwrap();

    let edge = EdgeProcess::spawn(&config);
    let r = client.get(&url(&edge, "/c")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        body,
        "the origin's bytes, not the corrupted file's"
    );
    assert_eq!(origin.hits("/c"), 2, "the corrupt entry was a miss");
    let logs = edge.drain_log().join("\n");
    assert!(logs.contains("corrupt cache entry removed"), "{logs}");
    let again = client.get(&url(&edge, "/c")).await;
    assert!(again.header("cache-status").unwrap().contains("; hit"));
    assert_eq!(again.text(), body);
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_miss_streams_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let origin = TestOrigin::start().await;
    origin.route(
        "/gib",
        Reply::generated(GIB).header("cache-control", "max-age=600"),
    );
    origin.route(
        "/small",
        Reply::ok("warm").header("cache-control", "max-age=600"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&origin.url(), &dir.path().join("cache"));
    let edge = EdgeProcess::spawn(&config);
    let client = Client::h1(None);
    client.get(&url(&edge, "/small")).await;
    let baseline = edge.rss();

    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let pid = edge.pid();
    let sampler = std::thread::spawn({
        let peak = peak.clone();
        let done = done.clone();
        move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    let kib: u64 = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0);
                    peak.fetch_max(kib * 1024, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let mut offset = 0u64;
    let mut first_bad = None;
    let (head, len) = client
        .get_streaming(&url(&edge, "/gib"), |d| {
            if first_bad.is_none()
                && let Err(at) = pattern_check(offset, d)
            {
                first_bad = Some(at);
            }
            offset += d.len() as u64;
        })
        .await
        .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(len, GIB);
    assert_eq!(first_bad, None, "byte-exact");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("1 GiB miss: RSS baseline {baseline} B, growth {growth} B");
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
    edge.stop();
}

#[test]
fn print_config_round_trips_and_bad_configs_are_named() {
    let exe = env!("CARGO_BIN_EXE_edge");
    let out = Command::new(exe).arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: edge::config::EdgeConfig = shared::config::parse(&text).unwrap();
    assert_eq!(parsed, edge::config::EdgeConfig::default());

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cache]\ndisk_budgett = '1 GiB'\n").unwrap();
    let out = Command::new(exe)
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("disk_budgett"),
        "{err}"
    );

    std::fs::write(&bad, "[[site]]\nhosts = ['a']\norigin = 'gopher://x'\n").unwrap();
    let out = Command::new(exe)
        .args(["--check-config", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("site[0].origin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_origin_the_demo_origin_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config("http://unused.invalid", &dir.path().join("cache"));
    config.sites.clear();
    let edge = EdgeProcess::spawn(&config);
    let client = Client::h1(None);
    let page = client.get(&url(&edge, "/")).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("quicdn demo origin"));
    let hello = client.get(&url(&edge, "/hello.txt")).await;
    assert!(
        hello
            .text()
            .starts_with("hello from the quicdn demo origin")
    );
    let again = client.get(&url(&edge, "/hello.txt")).await;
    assert!(again.header("cache-status").unwrap().contains("; hit"));
    edge.stop();
}
