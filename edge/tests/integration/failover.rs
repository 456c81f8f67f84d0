//! Origin groups: failover when the primary is down or answers 503, passive ejection, active
//! probes bringing it back, and weights, over every protocol.

use std::time::{Duration, Instant};

use edge::config::EdgeConfig;
use edge::upstream::group::{GroupOrigin, OriginHealth};

use crate::support::edge::{Proto, TestEdge};
use crate::support::origin::{Reply, TestOrigin, UnansweredOrigin};

fn member(url: &str, priority: u32, weight: u32) -> GroupOrigin {
    GroupOrigin {
        url: url.into(),
        priority,
        weight,
        host: None,
        first_byte_timeout: None,
        connect_timeout: None,
    }
}

/// A URL nothing listens on (the port was just free).
fn dead_origin() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn group(c: &mut EdgeConfig, origins: Vec<GroupOrigin>, health: OriginHealth) {
    let site = &mut c.sites[0];
    site.origin.clear();
    site.origins = origins;
    site.origin_health = health;
}

async fn saying(name: &'static str) -> TestOrigin {
    let origin = TestOrigin::start().await;
    origin.route("/who", Reply::ok(name).header("cache-control", "no-store"));
    origin.route("/health", Reply::ok("ok"));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_fails_over_to_the_next_priority() {
    let secondary = saying("secondary").await;
    for proto in Proto::ALL {
        let dead = dead_origin();
        let edge = TestEdge::start_with(&secondary.url(), |c| {
            group(
                c,
                vec![member(&dead, 0, 1), member(&secondary.url(), 1, 1)],
                OriginHealth::default(),
            );
        })
        .await;
        let client = edge.client(proto);
        for _ in 0..4 {
            let r = client.get(&edge.url(proto, "/who")).await;
            assert_eq!(
                (r.status.as_u16(), r.text()),
                (200, "secondary".into()),
                "{proto:?}"
            );
        }
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_is_ejected_then_probed_back() {
    for proto in Proto::ALL {
        let (primary, secondary) = (saying("primary").await, saying("secondary").await);
        primary.route("/who", Reply::status(503).body("overloaded"));
        primary.route("/health", Reply::status(503));
        let health = OriginHealth {
            eject_after: 2,
            eject_for: Duration::from_secs(60),
            probe_path: Some("/health".into()),
            probe_interval: Duration::from_millis(100),
            ..OriginHealth::default()
        };
        let edge = TestEdge::start_with(&primary.url(), |c| {
            group(
                c,
                vec![member(&primary.url(), 0, 1), member(&secondary.url(), 1, 1)],
                health,
            );
        })
        .await;
        let client = edge.client(proto);
        for _ in 0..6 {
            let r = client.get(&edge.url(proto, "/who")).await;
            assert_eq!(
                (r.status.as_u16(), r.text()),
                (200, "secondary".into()),
                "{proto:?}"
            );
        }
        // Ejected after two failures (requests or probes): no longer asked for content.
        assert!(
            primary.hits("/who") <= 2,
            "{proto:?}: {}",
            primary.hits("/who")
        );
        // It recovers: the probes see it and the group uses it again, well before eject_for.
        primary.route(
            "/who",
            Reply::ok("primary").header("cache-control", "no-store"),
        );
        primary.route("/health", Reply::ok("ok"));
        let start = Instant::now();
        loop {
            let r = client.get(&edge.url(proto, "/who")).await;
            if r.text() == "primary" {
                break;
            }
            assert_eq!(r.text(), "secondary");
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "{proto:?}: primary not back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(primary.hits("/health") >= 2, "probed");
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_of_one_priority_share_requests_by_weight() {
    let (a, b) = (saying("a").await, saying("b").await);
    let edge = TestEdge::start_with(&a.url(), |c| {
        group(
            c,
            vec![member(&a.url(), 0, 3), member(&b.url(), 0, 1)],
            OriginHealth::default(),
        );
    })
    .await;
    let client = edge.client(Proto::H2);
    for _ in 0..40 {
        let r = client.get(&edge.url(Proto::H2, "/who")).await;
        assert_eq!(r.status, 200);
    }
    let (to_a, to_b) = (a.hits("/who"), b.hits("/who"));
    assert_eq!(to_a + to_b, 40);
    assert!(
        (25..=35).contains(&to_a) && to_b >= 5,
        "3:1 expected, got {to_a}:{to_b}"
    );
    edge.stop().await;
}

#[test]
fn a_group_and_an_origin_are_exclusive() {
    let mut c = EdgeConfig::default();
    let mut site = edge::config::SiteConfig::new(&["a.test"], "http://127.0.0.1:1");
    site.origins = vec![member("http://127.0.0.1:2", 0, 1)];
    c.sites.push(site);
    assert!(c.validate().unwrap_err().to_string().contains("both set"));
    c.sites[0].origin.clear();
    c.sites[0].origins[0].url = "ftp://x".into();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("site[0].origins[0].url")
    );
    c.sites[0].origins.clear();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("set `origin` or `origins`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_origin_times_out_on_its_own_first_byte_timeout() {
    let (slow, fast) = (saying("slow").await, saying("fast").await);
    slow.route("/who", Reply::hang());
    let mut primary = member(&slow.url(), 0, 1);
    primary.first_byte_timeout = Some(Duration::from_millis(300));
    let edge = TestEdge::start_with(&slow.url(), |c| {
        group(
            c,
            vec![primary, member(&fast.url(), 1, 1)],
            OriginHealth::default(),
        );
    })
    .await;
    let client = edge.client(Proto::H1);
    let start = Instant::now();
    let r = client.get(&edge.url(Proto::H1, "/who")).await;
    assert_eq!(r.text(), "fast");
    // The global first-byte timeout is 30 s: the origin's own 300 ms moved it on.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(slow.hits("/who"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_connect_fails_over_on_the_origins_own_connect_timeout() {
    let fast = saying("fast").await;
    let unanswered = UnansweredOrigin::start();
    let own = Duration::from_millis(200);
    let global = Duration::from_secs(10);
    let mut primary = member(&unanswered.url(), 0, 1);
    primary.connect_timeout = Some(own);
    let edge = TestEdge::start_with(&fast.url(), |c| {
        c.origin.connect_timeout = global;
        group(
            c,
            vec![primary.clone(), member(&fast.url(), 1, 1)],
            OriginHealth::default(),
        );
        // A second site with the unanswered origin alone: its failure is the edge's own.
        let mut alone = c.sites[0].clone();
        alone.hosts = vec!["alone.test".into()];
        alone.origins = vec![primary];
        c.sites.push(alone);
    })
    .await;
    let client = edge.client(Proto::H1);
    let start = Instant::now();
    let r = client.get(&edge.url(Proto::H1, "/who")).await;
    let failover = start.elapsed();
    assert_eq!((r.status.as_u16(), r.text()), (200, "fast".into()));
    eprintln!("failed over after {failover:?} (connect_timeout {own:?}, global {global:?})");
    // It waited for the handshake (the address neither refused nor answered) and gave up on
    // its own timeout, far below the global one.
    assert!(failover >= own, "{failover:?}");
    assert!(failover < own + Duration::from_millis(800), "{failover:?}");

    // The timeout is a connect timeout: 504, as the global one is, not 502.
    let start = Instant::now();
    let r = client
        .get_with(&edge.url(Proto::H1, "/who"), &[("host", "alone.test")])
        .await;
    let gave_up = start.elapsed();
    assert_eq!(r.status.as_u16(), 504, "{}", r.text());
    assert!(
        gave_up >= own && gave_up < own + Duration::from_millis(800),
        "{gave_up:?}"
    );
    edge.stop().await;
}

/// `balance = "hash"`: each object always goes to one origin of the group (chosen by its
/// cache key), the objects spread over all of them, and when one is down only its objects
/// move; back up, they return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_balance_sends_each_object_to_one_origin_and_moves_only_a_dead_ones() {
    let names = ["a", "b", "c"];
    let mut origins = Vec::new();
    for name in names {
        let origin = TestOrigin::start().await;
        origin.route("/health", Reply::ok("ok"));
        for i in 0..30 {
            // Not stored: every request goes to the group, which shows where it went.
            origin.route(
                &format!("/o/{i}"),
                Reply::ok(name).header("cache-control", "no-store"),
            );
        }
        origins.push(origin);
    }
    let edge = TestEdge::start_with(&origins[0].url(), |c| {
        group(
            c,
            origins.iter().map(|o| member(&o.url(), 0, 1)).collect(),
            OriginHealth {
                probe_path: Some("/health".into()),
                probe_interval: Duration::from_millis(100),
                ..OriginHealth::default()
            },
        );
        c.sites[0].balance = edge::upstream::group::Balance::Hash;
    })
    .await;
    let client = edge.client(Proto::H2);
    let owner = async |i: usize| {
        client
            .get(&edge.url(Proto::H2, &format!("/o/{i}")))
            .await
            .text()
    };
    let mut first = Vec::new();
    for i in 0..30 {
        let who = owner(i).await;
        assert_eq!(owner(i).await, who, "/o/{i} stays on one origin");
        first.push(who);
    }
    for name in names {
        assert!(
            first.iter().any(|w| w == name),
            "every origin has objects: {first:?}"
        );
    }
    origins[1].shutdown().await;
    for (i, before) in first.iter().enumerate() {
        let now = owner(i).await;
        match before.as_str() {
            "b" => assert_ne!(now, "b", "/o/{i} moved off the dead origin"),
            _ => assert_eq!(&now, before, "/o/{i} did not move"),
        }
    }
    origins[1].restart().await;
    // Its probe brings it back, and its objects with it; the others never moved.
    let deadline = Instant::now() + Duration::from_secs(5);
    let back = first.iter().position(|w| w == "b").unwrap();
    while owner(back).await != "b" {
        assert!(Instant::now() < deadline, "/o/{back} did not return to b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, before) in first.iter().enumerate() {
        assert_eq!(&owner(i).await, before, "/o/{i}");
    }
    edge.stop().await;
}
