//! Bad input and bad origins: each gets a clear status, nothing half-done stays in the cache.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin, pattern_check};

/// Sends raw bytes to the plain HTTP listener and returns what comes back.
async fn raw(edge: &TestEdge, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(edge.running.http_addr().unwrap())
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn files_under(dir: &Path) -> usize {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn unknown_hosts_are_refused_and_never_proxied() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start(&origin.url()).await;
    let reply = raw(
        &edge,
        b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 421"), "{reply}");
    assert!(
        reply.contains("no site is configured for host \"other.test\""),
        "{reply}"
    );
    // Absolute-form naming another host: still routed by that host, so refused.
    let reply = raw(
        &edge,
        b"GET http://example.org/x HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 421"), "{reply}");
    let reply = raw(&edge, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "no Host: {reply}");
    assert_eq!(origin.total_hits(), 0);
    edge.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_edge_keeps_serving() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/ok",
        Reply::ok("fine").header("cache-control", "max-age=60"),
    );
    let edge = TestEdge::start(&origin.url()).await;
    for garbage in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ] {
        let reply = raw(&edge, garbage).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 400"),
            "{garbage:?}: {reply}"
        );
    }
    let reply = raw(
        &edge,
        b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("fine"),
        "{reply}"
    );
    let reply = raw(
        &edge,
        b"CONNECT localhost:22 HTTP/1.1\r\nHost: localhost:22\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 405"), "CONNECT: {reply}");
    let looped = raw(
        &edge,
        b"GET /ok HTTP/1.1\r\nHost: localhost\r\nVia: 1.1 edge-test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(looped.starts_with("HTTP/1.1 508"), "{looped}");
    // RFC 8586: our id among other CDNs' members, with parameters, in any case.
    for cdn_loop in [
        "edge-test",
        "other-cdn, Edge-Test; v=2",
        "a\r\nCDN-Loop: edge-test",
    ] {
        let request = format!(
            "GET /ok HTTP/1.1\r\nHost: localhost\r\nCDN-Loop: {cdn_loop}\r\nConnection: close\r\n\r\n"
        );
        let looped = raw(&edge, request.as_bytes()).await;
        assert!(looped.starts_with("HTTP/1.1 508"), "{cdn_loop:?}: {looped}");
        assert!(looped.contains("CDN-Loop"), "{looped}");
    }
    edge.stop().await;
}

#[tokio::test]
async fn a_hanging_origin_gets_504_and_leaves_no_entry() {
    let origin = TestOrigin::start().await;
    origin.route("/hang", Reply::hang());
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.origin.first_byte_timeout = Duration::from_millis(500);
    })
    .await;
    let client = edge.client(Proto::H2);
    let started = std::time::Instant::now();
    let r = client.get(&edge.url(Proto::H2, "/hang")).await;
    assert_eq!(r.status, 504);
    assert!(r.text().contains("no response head"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    origin.route(
        "/hang",
        Reply::ok("late but fine").header("cache-control", "max-age=60"),
    );
    let r = client.get(&edge.url(Proto::H2, "/hang")).await;
    assert_eq!(r.text(), "late but fine");
    assert!(r.header("cache-status").unwrap().contains("fwd=uri-miss"));
    edge.stop().await;
}

#[tokio::test]
async fn an_origin_body_that_stalls_is_cut_off_by_the_idle_timeout() {
    // A raw origin: a valid head and part of the body, then silence with the socket open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let head =
            "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\nCache-Control: max-age=60\r\n\r\n";
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&[b'x'; 1000]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let edge = TestEdge::start_with(&format!("http://{addr}"), |c| {
        c.origin.idle_body_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    let mut got = 0u64;
    let r = edge
        .client(Proto::H1)
        .get_streaming(&edge.url(Proto::H1, "/stall"), |d| got += d.len() as u64)
        .await;
    assert!(
        r.is_err(),
        "a truncated body is an error for the client, not a short 200"
    );
    assert!(got <= 1000);
    assert!(started.elapsed() < Duration::from_secs(10));
    let metrics = edge.metrics().await;
    assert_eq!(metric(&metrics, "quicdn_cache_entries{tier=\"disk\"}"), 0.0);
    server.abort();
    edge.stop().await;
}

async fn reset_mid_body(proto: Proto) {
    let origin = TestOrigin::start().await;
    origin.route(
        "/reset",
        Reply::generated(3 << 20)
            .header("cache-control", "max-age=60")
            .reset_after(1_500_000),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let client = edge.client(proto);
    let url = edge.url(proto, "/reset");
    let mut offset = 0u64;
    let mut intact = true;
    let r = client
        .get_streaming(&url, |d| {
            intact &= pattern_check(offset, d).is_ok();
            offset += d.len() as u64;
        })
        .await;
    assert!(r.is_err(), "{proto:?}: the client must see the failure");
    assert!(intact, "what did arrive is the origin's bytes");
    assert!(offset <= 1_500_000);
    // Nothing stored: the next request is a miss that goes to the origin again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "quicdn_cache_entries{tier=\"disk\"}"),
        0.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "quicdn_cache_bytes{tier=\"disk\"}"), 0.0);
    assert_eq!(metric(&metrics, "quicdn_cache_fills_failed_total"), 1.0);
    assert_eq!(
        files_under(&edge.cache_dir().join("content-v2")),
        0,
        "no chunk left behind"
    );
    origin.route(
        "/reset",
        Reply::generated(3 << 20).header("cache-control", "max-age=60"),
    );
    let (_, len) = client.get_streaming(&url, |_| {}).await.unwrap();
    assert_eq!(len, 3 << 20);
    assert_eq!(origin.hits("/reset"), 2);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reset_mid_body_fails_the_client_and_stores_nothing_h1() {
    reset_mid_body(Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reset_mid_body_fails_the_client_and_stores_nothing_h2() {
    reset_mid_body(Proto::H2).await;
}

#[tokio::test]
async fn an_unreachable_origin_gets_502() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start(&origin.url()).await;
    origin.shutdown().await;
    let r = edge
        .client(Proto::H1Tls)
        .get(&edge.url(Proto::H1Tls, "/x"))
        .await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("origin unreachable"), "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_byte_for_byte_on_miss_and_hit() {
    let origin = TestOrigin::start().await;
    let len: u64 = 20 << 20;
    origin.route(
        "/large",
        Reply::generated(len).header("cache-control", "max-age=60"),
    );
    // One entry for http and https, so every protocol after the first is a hit.
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].scheme = edge::config::SchemePolicy::Shared;
    })
    .await;
    for proto in Proto::ALL {
        let client = edge.client(proto);
        let mut offset = 0u64;
        let mut first_bad = None;
        let (head, got) = client
            .get_streaming(&edge.url(proto, "/large"), |d| {
                if let Err(at) = pattern_check(offset, d) {
                    first_bad.get_or_insert(at);
                }
                offset += d.len() as u64;
            })
            .await
            .unwrap();
        assert_eq!(got, len, "{proto:?}");
        assert_eq!(first_bad, None, "{proto:?}");
        assert_eq!(head.headers["content-length"], len.to_string().as_str());
    }
    assert_eq!(origin.hits("/large"), 1);
    edge.stop().await;
}

#[tokio::test]
async fn health_answers_on_public_and_admin_listeners() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start(&origin.url()).await;
    let c = edge.client(Proto::H2);
    let r = c.get(&edge.url(Proto::H2, "/.quicdn/health")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    let admin = format!("http://{}/health", edge.running.admin_addr().unwrap());
    assert_eq!(
        crate::support::client::Client::h1(None)
            .get(&admin)
            .await
            .status,
        200
    );
    assert_eq!(origin.total_hits(), 0);
    edge.running.service().start_draining();
    assert_eq!(
        c.get(&edge.url(Proto::H2, "/.quicdn/health")).await.status,
        503
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reset_mid_body_fails_the_client_and_stores_nothing_h3() {
    reset_mid_body(Proto::H3).await;
}

#[tokio::test]
async fn alt_svc_advertises_http3_on_tcp_only() {
    let origin = TestOrigin::start().await;
    origin.route("/a", Reply::ok("a").header("cache-control", "max-age=60"));
    let edge = TestEdge::start(&origin.url()).await;
    let port = edge.running.h3_addr().unwrap().port();
    assert_eq!(
        port,
        edge.running.https_addr().unwrap().port(),
        "h3 shares the HTTPS port"
    );
    let expected = format!("h3=\":{port}\"; ma=86400");
    for proto in [Proto::H1, Proto::H1Tls, Proto::H2] {
        let r = edge.client(proto).get(&edge.url(proto, "/a")).await;
        assert_eq!(r.header("alt-svc"), Some(expected.as_str()), "{proto:?}");
    }
    let r = edge.client(Proto::H3).get(&edge.url(Proto::H3, "/a")).await;
    assert_eq!(r.version, http::Version::HTTP_3);
    assert_eq!(r.header("alt-svc"), None);
    edge.stop().await;
}

/// RFC 8586: the origin sees our `CDN-Loop` member after those of the CDNs before us, over
/// every protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_loop_carries_every_cdn_on_the_way_to_the_origin() {
    let origin = TestOrigin::start().await;
    origin.route("/l", Reply::ok("l").header("cache-control", "no-store"));
    let edge = TestEdge::start(&origin.url()).await;
    for proto in Proto::ALL {
        let r = edge
            .client(proto)
            .get_with(&edge.url(proto, "/l"), &[("cdn-loop", "other-cdn; v=1")])
            .await;
        assert_eq!(r.status, 200, "{proto:?}");
        let seen = origin.requests("/l").pop().unwrap();
        let members: Vec<&str> = seen
            .headers
            .get_all("cdn-loop")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        assert_eq!(members, ["other-cdn; v=1", "edge-test"], "{proto:?}");
    }
    edge.stop().await;
}
