//! Health checking: a POP whose health endpoint fails loses its clients to the next nearest,
//! and gets them back when it recovers; reloads swap config and database without dropping
//! queries.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{Ask, FRA, Fixture, IAD, SIN, addresses, ask, counter, eventually, http_get};

fn from(subnet: &'static str) -> Ask {
    Ask {
        tcp: false,
        edns: None,
        ecs: Some((subnet, 24)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_pop_loses_its_clients_and_gets_them_back() {
    let f = Fixture::start().await;
    let addr = f.addr();
    let www =
        async |subnet| addresses(&ask(addr, "www.cdn.test.", RecordType::A, from(subnet)).await);
    assert_eq!(www("10.4.0.0").await, [FRA]);
    f.health[0].set_up(false);
    // fall = 2 probes at 100 ms: well within a second.
    assert!(
        eventually(Duration::from_secs(3), async || www("10.4.0.0").await
            == [IAD])
        .await,
        "Paris moves to the next nearest POP"
    );
    assert_eq!(www("10.3.0.0").await, [SIN], "other regions are unaffected");
    f.health[0].set_up(true);
    assert!(
        eventually(Duration::from_secs(3), async || www("10.4.0.0").await
            == [FRA])
        .await,
        "and comes back after rise = 2 good probes"
    );
    let metrics = http_get(f.server.admin_addr().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("geodns_pop_healthy{pop=\"fra1\"} 1"),
        "{metrics}"
    );
    let fra_answers = counter(&metrics, |l| {
        l.starts_with("geodns_queries_total{name=\"www.cdn.test.\",qtype=\"A\"")
            && l.contains("pop=\"fra1\"")
    });
    assert!(
        fra_answers >= 2.0,
        "queries counted by name, type and POP: {metrics}"
    );
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_pop_down_answers_fail_open() {
    let f = Fixture::start().await;
    let addr = f.addr();
    for h in &f.health {
        h.set_up(false);
    }
    let down = async || {
        let snapshot = f.server.health().load();
        ["fra1", "iad1", "sin1"]
            .iter()
            .all(|p| !snapshot.is_healthy(p))
    };
    assert!(eventually(Duration::from_secs(3), down).await);
    let r = ask(addr, "www.cdn.test.", RecordType::A, from("10.3.0.0")).await;
    assert_eq!(
        addresses(&r),
        [SIN],
        "all down: answer as if all were up (nearest)"
    );
    let metrics = http_get(f.server.admin_addr().unwrap(), "/metrics").await;
    let failed_open = counter(&metrics, |l| l.starts_with("geodns_failed_open_total "));
    assert!(
        failed_open >= 1.0,
        "fail-open answers are counted: {metrics}"
    );
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_is_picked_up_without_a_restart() {
    let f = Fixture::start().await;
    let path = f.dir.path().join("geodns.toml");
    let mut cfg = f.server.state().config.clone();
    let text = shared::config::render(&cfg).unwrap();
    std::fs::write(&path, &text).unwrap();
    // A server started from the file (reload re-reads it).
    cfg.listen.dns = "127.0.0.1:0".parse().unwrap();
    cfg.listen.admin = None;
    let server = geodns::server::start(cfg.clone(), Some(path.clone()))
        .await
        .unwrap();
    let addr = server.dns_addr();
    assert_eq!(
        addresses(&ask(addr, "www.cdn.test.", RecordType::A, from("10.1.0.0")).await),
        [FRA]
    );
    cfg.pops[0].ipv4 = vec!["198.51.100.99".parse().unwrap()];
    std::fs::write(&path, shared::config::render(&cfg).unwrap()).unwrap();
    let moved = async || {
        addresses(&ask(addr, "www.cdn.test.", RecordType::A, from("10.1.0.0")).await)
            == ["198.51.100.99"]
    };
    assert!(
        eventually(Duration::from_secs(5), moved).await,
        "file change reloaded"
    );
    // A broken file is rejected and the running config stays.
    std::fs::write(&path, "this is = not [valid").unwrap();
    assert!(server.reload().await.is_err());
    assert!(moved().await);
    server.shutdown().await;
    f.server.shutdown().await;
}
