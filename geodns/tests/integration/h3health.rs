//! Health probes over HTTP/3 against a real edge (certificate from a development CA).

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::support::{
    Ask, FRA, IAD, addresses, ask, config, counter, eventually, http_get, write_db,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_is_probed_over_http3_and_dropped_when_its_edge_stops() {
    let dir = tempfile::tempdir().unwrap();
    let ca = shared::tls::DevCa::generate("geodns test CA").unwrap();
    let leaf = ca.issue(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("edge.pem"),
        dir.path().join("edge-key.pem"),
        dir.path().join("ca.pem"),
    );
    leaf.write_pem(&cert, &key).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    let mut edge_config = edge::config::EdgeConfig::default();
    edge_config.listen.https = Some("127.0.0.1:0".parse().unwrap());
    edge_config.listen.http = None;
    edge_config.listen.admin = Some("127.0.0.1:0".parse().unwrap());
    edge_config.tls.cert = Some(cert);
    edge_config.tls.key = Some(key);
    edge_config.cache.dir = dir.path().join("cache");
    let edge = edge::server::Edge::start(edge_config).await.unwrap();
    let port = edge.h3_addr().unwrap().port();
    let admin = edge.admin_addr().unwrap();

    let db = write_db(dir.path());
    let url = format!("https://localhost:{port}/.quicdn/health");
    let mut cfg = config(&db, [&url, "http://127.0.0.1:9/", "http://127.0.0.1:9/"]);
    cfg.pops[1].health_url = None; // iad1 and sin1 always healthy
    cfg.pops[2].health_url = None;
    cfg.health.http3 = true;
    cfg.health.ca_file = Some(ca_file);
    let server = geodns::server::start(cfg, None).await.unwrap();
    let dns = server.dns_addr();
    let paris = Ask {
        tcp: false,
        edns: None,
        ecs: Some(("10.4.0.0", 24)),
    };
    // Probed over QUIC: the edge counts the probes as HTTP/3 requests.
    let h3_probes = async || {
        let text = http_get(admin, "/metrics").await;
        let h3 =
            |l: &str| l.starts_with("quicdn_requests_total{protocol=\"h3\",cache=\"synthetic\"");
        counter(&text, h3) > 0.0
    };
    assert!(
        eventually(Duration::from_secs(5), h3_probes).await,
        "no HTTP/3 probe reached the edge"
    );
    assert_eq!(
        addresses(&ask(dns, "www.cdn.test.", RecordType::A, paris).await),
        [FRA]
    );
    edge.shutdown().await;
    let moved = async || addresses(&ask(dns, "www.cdn.test.", RecordType::A, paris).await) == [IAD];
    assert!(
        eventually(Duration::from_secs(5), moved).await,
        "the stopped edge's clients move"
    );
    server.shutdown().await;
}
