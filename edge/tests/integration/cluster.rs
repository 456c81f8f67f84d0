//! A cluster: edge nodes of one POP that share one cache by consistent hashing. Each object
//! is stored on exactly one node, the others fetch it from that node; losing a node keeps
//! every request served and moves only its objects.

use std::time::{Duration, Instant};

use edge::config::EdgeConfig;
use edge::upstream::cluster::ClusterPeer;
use futures_util::future::join_all;

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::nats::free_port;
use crate::support::origin::{Reply, TestOrigin};

const OBJECTS: usize = 40;

/// The cluster of `ports` (one node per port, named `node-<i>`), as each node's config says.
fn peers(ports: &[u16]) -> Vec<ClusterPeer> {
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| ClusterPeer {
            name: format!("node-{i}"),
            url: format!("http://127.0.0.1:{port}"),
            weight: 1,
        })
        .collect()
}

/// Node `i` of the cluster on `ports`, with probes quick enough for a test.
async fn node(i: usize, ports: &[u16], origin: &TestOrigin) -> TestEdge {
    let (name, port, peers) = (format!("node-{i}"), ports[i], peers(ports));
    TestEdge::start_with(&origin.url(), move |c: &mut EdgeConfig| {
        c.name = name;
        c.listen.http = Some(([127, 0, 0, 1], port).into());
        c.cluster.peers = peers;
        c.cluster.health.eject_after = 1;
        c.cluster.health.eject_for = Duration::from_secs(30);
        c.cluster.health.probe_interval = Duration::from_millis(200);
    })
    .await
}

/// node-0 probed node-1 before it listened and ejected it; a probe since has brought it
/// back (a few probe intervals).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

async fn get(edge: &TestEdge, path: &str) -> (u16, String, String) {
    let r = edge.client(Proto::H1).get(&edge.url(Proto::H1, path)).await;
    let status: Vec<&str> = r
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (r.status.as_u16(), r.text(), status.join(", "))
}

/// Objects stored on `edge`'s disk, once the fills under way have landed.
async fn entries(edge: &TestEdge) -> f64 {
    metric(
        &edge.metrics().await,
        r#"quicdn_cache_entries{tier="disk"}"#,
    )
}

fn object(i: usize) -> String {
    format!("/o/{i}")
}

/// `OBJECTS` cacheable objects at the origin, each body naming its object.
fn serve_objects(origin: &TestOrigin) {
    for i in 0..OBJECTS {
        origin.route(
            &object(i),
            Reply::ok(format!("object {i}")).header("cache-control", "max-age=600"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_is_stored_on_one_node_and_losing_a_node_loses_no_request() {
    let origin = TestOrigin::start().await;
    serve_objects(&origin);
    origin.route(
        "/hot",
        Reply::ok("hot")
            .header("cache-control", "max-age=600")
            .delay(Duration::from_millis(300)),
    );
    let ports = [free_port(), free_port()];
    let a = node(0, &ports, &origin).await;
    let b = node(1, &ports, &origin).await;
    settle().await;

    // Every object asked of both nodes, each node first for half of them.
    let mut owned_by_b = Vec::new();
    for i in 0..OBJECTS {
        let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
        for edge in order {
            let (status, body, cache_status) = get(edge, &object(i)).await;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("object {i}").as_str())
            );
            if std::ptr::eq(edge, &a) && cache_status.contains("detail=cluster-peer") {
                // Answered by node-1 first, then passed on by node-0, in that order.
                let (owner, delivery) = cache_status.split_once(", ").expect(&cache_status);
                assert!(owner.starts_with("node-1; "), "{cache_status}");
                assert!(delivery.starts_with("node-0; fwd=bypass"), "{cache_status}");
                owned_by_b.push(i);
            }
        }
        assert_eq!(
            origin.hits(&object(i)),
            1,
            "one origin fetch for {}",
            object(i)
        );
    }
    let (on_a, on_b) = (entries(&a).await, entries(&b).await);
    assert_eq!(
        on_a + on_b,
        OBJECTS as f64,
        "each object on exactly one node"
    );
    assert_eq!(on_b, owned_by_b.len() as f64);
    // 40 objects over two equal nodes: both hold a share (all on one: p = 2^-39).
    assert!(on_a > 0.0 && on_b > 0.0, "a: {on_a}, b: {on_b}");

    // Fifty clients at once for a new object, half at each node: one origin request.
    let clients = (0..50).map(|n| {
        let edge = if n % 2 == 0 { &a } else { &b };
        async move { get(edge, "/hot").await }
    });
    for (status, body, _) in join_all(clients).await {
        assert_eq!((status, body.as_str()), (200, "hot"));
    }
    assert_eq!(origin.hits("/hot"), 1);

    // node-1 stops: every request at node-0 is still served, node-1's objects now from
    // node-0 itself (one more origin fetch each); node-0's own objects are untouched.
    let ejections = r#"quicdn_upstream_ejections_total{tier="peer"}"#;
    let ejected_before = metric(&a.metrics().await, ejections);
    b.stop().await;
    for i in 0..OBJECTS {
        let (status, body, _) = get(&a, &object(i)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("object {i}").as_str())
        );
        let want = if owned_by_b.contains(&i) { 2 } else { 1 };
        assert_eq!(origin.hits(&object(i)), want, "{}", object(i));
    }
    // Draining, node-1's health said 503 and a probe ejected it (or a failed request did,
    // which node-0 then served itself: a fallback).
    let m = a.metrics().await;
    assert_eq!(metric(&m, ejections), ejected_before + 1.0, "{m}");
    // Ejected: the next request for node-1's object does not try it.
    let forwarded = metric(&m, "quicdn_peer_requests_total");
    let (status, _, cache_status) = get(&a, &object(owned_by_b[0])).await;
    assert_eq!(status, 200);
    assert!(cache_status.starts_with("node-0; hit"), "{cache_status}");
    let m = a.metrics().await;
    assert_eq!(metric(&m, "quicdn_peer_requests_total"), forwarded, "{m}");

    // node-1 comes back (an empty cache, same address): a probe finds it and node-0 sends
    // node-1's objects there again.
    let b = node(1, &ports, &origin).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, cache_status) = get(&a, &object(owned_by_b[0])).await;
        assert_eq!(status, 200);
        if cache_status.contains("detail=cluster-peer") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-1 not used again: {cache_status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_a_peer_is_never_sent_on_and_keeps_the_clients_scheme() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/s",
        Reply::dynamic(|req| {
            let proto = req
                .headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Reply::ok(proto).header("cache-control", "max-age=600")
        }),
    );
    let ports = [free_port(), free_port()];
    let a = node(0, &ports, &origin).await;
    let b = node(1, &ports, &origin).await;
    settle().await;
    // Whichever node owns /s, over HTTPS at either node the origin is told https (the peer
    // hop is plain HTTP), and the object is keyed as https there.
    for edge in [&a, &b] {
        let r = edge.client(Proto::H2).get(&edge.url(Proto::H2, "/s")).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "https"));
    }
    assert_eq!(origin.hits("/s"), 1);
    // A client claiming to be node-1 at node-0 is served by node-0 itself, never sent on:
    // two nodes that disagree on an owner cannot pass a request back and forth.
    let r = a
        .client(Proto::H1)
        .get_with(&a.url(Proto::H1, "/s"), &[("cdn-loop", "node-1")])
        .await;
    assert_eq!(r.status, 200);
    let status = r.header("cache-status").unwrap_or_default();
    assert!(!status.contains("cluster-peer"), "{status}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_cluster_that_does_not_list_this_node_is_refused() {
    let mut config = EdgeConfig {
        name: "node-9".into(),
        ..EdgeConfig::default()
    };
    config.cluster.peers = peers(&[1000, 1001]);
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("must list this node"), "{err}");
    config.cluster.peers.push(ClusterPeer {
        name: "node-9".into(),
        url: "http://127.0.0.1:1000".into(),
        weight: 1,
    });
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("listed twice"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_fails_a_request_is_ejected_and_the_request_served_here() {
    let origin = TestOrigin::start().await;
    serve_objects(&origin);
    // node-1 never starts, and node-0 does not probe: only a request finds it down.
    let ports = [free_port(), free_port()];
    let (port, peers) = (ports[0], peers(&ports));
    let a = TestEdge::start_with(&origin.url(), move |c: &mut EdgeConfig| {
        c.name = "node-0".into();
        c.listen.http = Some(([127, 0, 0, 1], port).into());
        c.cluster.peers = peers;
        c.cluster.health.eject_after = 1;
        c.cluster.health.probe_path = None;
    })
    .await;
    for i in 0..OBJECTS {
        let (status, body, _) = get(&a, &object(i)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("object {i}").as_str())
        );
    }
    let m = a.metrics().await;
    // The first of node-1's objects found it refusing; ejected, the others did not try it.
    assert_eq!(metric(&m, "quicdn_peer_requests_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "quicdn_peer_fallbacks_total"), 1.0, "{m}");
    assert_eq!(
        metric(&m, r#"quicdn_upstream_ejections_total{tier="peer"}"#),
        1.0
    );
    assert_eq!(entries(&a).await, OBJECTS as f64);
    a.stop().await;
}
