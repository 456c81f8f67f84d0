//! Rate limits per client: all requests, misses only (origin protection), per path rule,
//! by address and by prefix, with real clients at several loopback addresses.

use std::net::IpAddr;

use edge::rules::PathRule;
use edge::rules::limit::{LimitBy, RateLimitConfig};

use crate::support::client::Client;
use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

fn limit(rate: &str, burst: u32) -> RateLimitConfig {
    RateLimitConfig {
        rate: Some(rate.parse().unwrap()),
        burst: std::num::NonZeroU32::new(burst),
        ..RateLimitConfig::default()
    }
}

fn from(addr: &str, edge: &TestEdge, proto: Proto) -> Client {
    let ip: IpAddr = addr.parse().unwrap();
    match proto {
        Proto::H2 => Client::from_address("h2", Some(&edge.cert_der()), ip),
        Proto::H3 => Client::from_address("h3", Some(&edge.cert_der()), ip),
        _ => Client::from_address("h1", None, ip),
    }
}

async fn status(client: &Client, edge: &TestEdge, proto: Proto, path: &str) -> u16 {
    client.get(&edge.url(proto, path)).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_its_burst_gets_429_while_another_is_served() {
    let origin = TestOrigin::start().await;
    origin.route("/a", Reply::ok("a").header("cache-control", "max-age=600"));
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].rate_limit = limit("1/min", 3);
    })
    .await;
    for proto in [Proto::H1, Proto::H2, Proto::H3] {
        // A fresh address per protocol: each gets its own burst.
        let n = match proto {
            Proto::H1 => 1,
            Proto::H2 => 2,
            _ => 3,
        };
        let greedy = from(&format!("127.0.{n}.1"), &edge, proto);
        for _ in 0..3 {
            assert_eq!(status(&greedy, &edge, proto, "/a").await, 200, "{proto:?}");
        }
        let r = greedy.get(&edge.url(proto, "/a")).await;
        assert_eq!(r.status, 429, "{proto:?}: {}", r.text());
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(r.header("ratelimit-policy"), Some("\"site\";q=1;w=60"));
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"site\";r=0;t={retry}").as_str())
        );
        assert!(
            r.text()
                .contains("requests from this client beyond 1/min (burst 3)")
        );
        let other = from(&format!("127.0.{n}.2"), &edge, proto);
        assert_eq!(status(&other, &edge, proto, "/a").await, 200, "{proto:?}");
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, r#"quicdn_rate_limited_total{limit="requests"}"#),
        3.0,
        "{m}"
    );
    // One fetch over http, one over https (the site keys by scheme): none for a refusal.
    assert_eq!(origin.hits("/a"), 2);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_limit_protects_the_origin_and_leaves_hits_alone() {
    let origin = TestOrigin::start().await;
    for i in 0..6 {
        origin.route(
            &format!("/o{i}"),
            Reply::ok("o").header("cache-control", "max-age=600"),
        );
    }
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].rate_limit = RateLimitConfig {
            misses: Some("1/min".parse().unwrap()),
            miss_burst: std::num::NonZeroU32::new(2),
            ..RateLimitConfig::default()
        };
    })
    .await;
    let crawler = from("127.0.9.1", &edge, Proto::H1);
    assert_eq!(status(&crawler, &edge, Proto::H1, "/o0").await, 200);
    assert_eq!(status(&crawler, &edge, Proto::H1, "/o1").await, 200);
    let r = crawler.get(&edge.url(Proto::H1, "/o2")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.text().contains("misses from this client"), "{}", r.text());
    // Hits cost the origin nothing: not limited.
    for _ in 0..5 {
        assert_eq!(status(&crawler, &edge, Proto::H1, "/o0").await, 200);
    }
    // The refused miss was not stored: another client fetches it.
    let reader = from("127.0.9.2", &edge, Proto::H1);
    assert_eq!(status(&reader, &edge, Proto::H1, "/o2").await, 200);
    assert_eq!(origin.hits("/o2"), 1);
    assert_eq!(origin.total_hits(), 3);
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, r#"quicdn_rate_limited_total{limit="misses"}"#),
        1.0,
        "{m}"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_rule_has_its_own_limit_and_a_prefix_shares_one() {
    let origin = TestOrigin::start().await;
    origin.route("/api/x", Reply::ok("x").header("cache-control", "no-store"));
    origin.route(
        "/page",
        Reply::ok("p").header("cache-control", "max-age=600"),
    );
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].rules = vec![PathRule {
            path: "/api/*".into(),
            rate_limit: RateLimitConfig {
                by: LimitBy::Prefix,
                ..limit("1/min", 2)
            },
            ..PathRule::default()
        }];
    })
    .await;
    // Two addresses of one /24 share the API's limit; the rest of the site has none.
    let a = from("127.0.20.1", &edge, Proto::H1);
    let b = from("127.0.20.77", &edge, Proto::H1);
    assert_eq!(status(&a, &edge, Proto::H1, "/api/x").await, 200);
    assert_eq!(status(&b, &edge, Proto::H1, "/api/x").await, 200);
    assert_eq!(status(&a, &edge, Proto::H1, "/api/x").await, 429);
    assert_eq!(status(&b, &edge, Proto::H1, "/api/x").await, 429);
    let c = from("127.0.21.1", &edge, Proto::H1);
    assert_eq!(status(&c, &edge, Proto::H1, "/api/x").await, 200);
    for _ in 0..10 {
        assert_eq!(status(&a, &edge, Proto::H1, "/page").await, 200);
    }
    edge.stop().await;
}

/// Admin writes are limited per caller (a wrong token costs a call too, so guessing is
/// bounded), and so is the `PURGE` method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_and_purge_are_held_to_their_own_limit() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.admin.rate_limit = Some("1/min".parse().unwrap());
        c.admin.rate_burst = 2;
        c.purge.allow_from = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let body = r#"{"url":"http://localhost/x"}"#;
    let purge = || crate::purge_api::api(&edge, "POST", "/purge", body, None);
    assert!(purge().await.0.is_success());
    assert!(purge().await.0.is_success());
    let (status, _, headers) = purge().await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(
        headers["ratelimit-policy"].to_str().unwrap(),
        "\"admin\";q=1;w=60"
    );
    // The PURGE method from another address has a limit of its own address.
    let other = from("127.0.30.1", &edge, Proto::H1);
    let method = http::Method::from_bytes(b"PURGE").unwrap();
    for expected in [200, 200, 429] {
        let req = http::Request::builder()
            .method(method.clone())
            .uri(edge.url(Proto::H1, "/x"))
            .body(http_body_util::Full::default())
            .unwrap();
        let r = other.send(req).await.unwrap();
        assert_eq!(r.status.as_u16(), expected, "{}", r.text());
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, r#"quicdn_rate_limited_total{limit="admin"}"#),
        2.0,
        "{m}"
    );
    edge.stop().await;
}
