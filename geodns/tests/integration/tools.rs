//! The server as a process, queried with dig.

use std::process::Command;
use std::time::Duration;

use crate::support::{Binary, FRA, HealthServer, SIN, config, write_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_dig_with_ecs_over_udp_and_tcp() {
    let dig =
        which("dig").expect("dig is not installed: run ./scripts/test.sh (it installs dnsutils)");
    let dir = tempfile::tempdir().unwrap();
    let db = write_db(dir.path());
    let h = HealthServer::three().await;
    let cfg = config(&db, [&h[0].url, &h[1].url, &h[2].url]);
    let mut geodns = Binary::start(dir.path(), &cfg);
    let port = geodns.dns.port();
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
        .args(["-TERM", &geodns.child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while geodns.child.try_wait().unwrap().is_none() {
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
