//! The checker against the real `edge` binary: 15 s of many clients on all three protocols,
//! versions changing every 50-500 ms, slow origin bodies, aborts, conditionals and one
//! `kill -9` + restart on the same cache, and not one mismatched or corrupt body; and a short
//! run through a lying origin, which must be caught (the check can fail).
//!
//! The edge binary is the one built next to this test's `checker` binary (`cargo test
//! --workspace` builds it; `cargo test -p checker` alone does not: build it first with
//! `cargo build -p edge`), or `QUICDN_EDGE_BIN`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use checker::Config;
use checker::client::Proto;

/// One edge at a time: the machine the workspace tests run on may have two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn edge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QUICDN_EDGE_BIN") {
        return p.into();
    }
    let dir = Path::new(env!("CARGO_BIN_EXE_checker"))
        .parent()
        .expect("the checker binary's directory");
    let bin = dir.join("edge");
    assert!(
        bin.is_file(),
        "edge is not built in {}: run `cargo build -p edge` (cargo test --workspace does), \
         or set QUICDN_EDGE_BIN",
        dir.display()
    );
    bin
}

fn base() -> Config {
    Config {
        edge_bin: edge_bin(),
        protocols: vec![Proto::H1, Proto::H1Tls, Proto::H2],
        objects: 30,
        // Smaller slices keep a debug build's byte checking cheap; the large objects are
        // still 3-5 slices.
        slice_size: 256 * 1024,
        vary_length: true,
        slow_share: 0.1,
        abort_share: 0.1,
        conditional_share: 0.2,
        request_timeout: Duration::from_secs(8),
        progress: None,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mixed_or_corrupt_bodies_in_15_s_with_a_kill() {
    let _one = ONE_AT_A_TIME.lock().await;
    let config = Config {
        duration: Duration::from_secs(15),
        clients: 60,
        kill_every: Some(Duration::from_secs(7)),
        ..base()
    };
    let report = checker::run(config).await.expect("the checker runs");
    println!("{}", report.summary());
    let c = &report.counts;
    assert_eq!(
        (c.mismatched, c.corrupt),
        (0, 0),
        "the edge served mixed-version or corrupt bodies:\n{}",
        report.summary()
    );
    assert!(c.ok >= 200, "too few checked responses: {}", c.ok);
    assert!(
        c.ok_partial > 0 && report.origin.partial > 0,
        "ranges were served and slices fetched by range"
    );
    for proto in ["h1", "h1tls", "h2"] {
        assert!(
            c.by_proto.get(proto).is_some_and(|&n| n > 20),
            "{proto} was used: {:?}",
            c.by_proto
        );
    }
    assert!(
        report.origin.version_bumps >= 500,
        "versions changed: {}",
        report.origin.version_bumps
    );
    assert!(
        report.origin.slow > 0 && c.aborted > 0,
        "slow bodies and aborts happened"
    );
    assert!(
        c.cache_status.contains_key("hit"),
        "some responses came from the cache: {:?}",
        c.cache_status
    );
    assert_eq!(
        (report.edge.starts, report.edge.restart_s.len()),
        (2, 1),
        "the edge was killed once and came back"
    );
    assert!(report.edge.clean_exit, "the edge exits cleanly on SIGTERM");
}

/// The origin spoils a share of its bodies behind correct headers (the tail of the previous
/// version, or a flipped byte): the checker must count them, through the real edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_origin_is_caught() {
    let _one = ONE_AT_A_TIME.lock().await;
    let config = Config {
        duration: Duration::from_secs(5),
        clients: 16,
        fault_share: 0.2,
        ..base()
    };
    let report = checker::run(config).await.expect("the checker runs");
    println!("{}", report.summary());
    let c = &report.counts;
    assert!(report.origin.faults > 0, "the origin spoilt bodies");
    assert!(report.failed(), "the verdict is FAIL");
    assert!(
        c.mismatched > 0 && c.corrupt > 0,
        "both kinds are counted: {} mismatched, {} corrupt",
        c.mismatched,
        c.corrupt
    );
    assert!(
        c.failure_shapes
            .keys()
            .any(|s| s.starts_with("mismatched: an earlier version")),
        "a tail of the previous version is named as such: {:?}",
        c.failure_shapes
    );
    assert!(
        c.failure_shapes
            .contains_key("corrupt: bytes of no version"),
        "a flipped byte is from no version: {:?}",
        c.failure_shapes
    );
    if let Some(dir) = &report.work_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
