//! Real clients from outside Rust over HTTP/3: headless Chromium and a Python QUIC stack.
//! Both are installed by the README's test command; when missing, these tests fail with a
//! message saying so (they never skip).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::edge::{TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

fn require(program: &str, hint: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{program} is not installed: {hint}"))
}

/// Runs a command with a deadline; returns stdout, panicking with stderr on failure.
fn run(mut cmd: Command, deadline: Duration) -> String {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("command starts");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_the_demo_page_over_http3() {
    let chromium = require(
        "chromium",
        "run ./scripts/test.sh, which installs Debian's chromium",
    );
    let edge = TestEdge::start_with("http://unused.invalid", |c| c.sites.clear()).await;
    let port = edge.running.https_addr().unwrap().port();
    let spki = edge.running.certificate().unwrap().spki_sha256().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-quic",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    // A non-public certificate never upgrades through Alt-Svc, so QUIC is forced for the
    // origin; all other names resolve nowhere (this machine has no internet).
    .arg(format!("--origin-to-force-quic-on=127.0.0.1:{port}"))
    .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
    .arg("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    .arg("--virtual-time-budget=3000")
    .arg("--dump-dom")
    .arg(format!("https://127.0.0.1:{port}/"));
    let dom = tokio::task::spawn_blocking(move || run(cmd, Duration::from_secs(60)))
        .await
        .unwrap();
    eprintln!(
        "chromium DOM: {}",
        dom.lines()
            .find(|l| l.contains("id=\"protocol\""))
            .unwrap_or("")
    );
    assert!(dom.contains("quicdn demo origin"), "{dom}");
    assert!(
        dom.contains(r#"<p id="protocol">h3</p>"#),
        "nextHopProtocol was not h3:\n{dom}"
    );
    let metrics = edge.metrics().await;
    let h3 = "quicdn_requests_total{protocol=\"h3\",cache=\"miss\",status=\"2xx\"}";
    assert!(metric(&metrics, h3) >= 1.0, "{metrics}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_quic_client_fetches_a_large_object_byte_exact() {
    let python = crate::support::test_python("niquests (qh3)");
    let origin = TestOrigin::start().await;
    let len: u64 = 6 << 20;
    origin.route(
        "/big",
        Reply::generated(len).header("cache-control", "max-age=60"),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let port = edge.running.https_addr().unwrap().port();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h3_fetch.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(format!("https://127.0.0.1:{port}/big"));
    let out = tokio::task::spawn_blocking(move || run(cmd, Duration::from_secs(120)))
        .await
        .unwrap();
    let expected = {
        use sha2_free::digest;
        digest(len)
    };
    eprintln!("python h3 client: {out}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"HTTP/3"), "{out}");
    assert_eq!(
        fields.get(1).copied(),
        Some(len.to_string().as_str()),
        "{out}"
    );
    assert_eq!(fields.get(2).copied(), Some(expected.as_str()), "{out}");
    let metrics = edge.metrics().await;
    let h3 = "quicdn_served_bytes_total{protocol=\"h3\"}";
    assert!(metric(&metrics, h3) >= len as f64, "{metrics}");
    edge.stop().await;
}

/// SHA-256 of the test origin's generated body, computed with ring (no extra crate).
mod sha2_free {
    pub(super) fn digest(len: u64) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(1 << 20) as usize;
            ctx.update(&crate::support::origin::pattern_chunk(offset, n));
            offset += n as u64;
        }
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
