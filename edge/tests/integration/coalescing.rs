//! Concurrent misses for one key make one origin request.

use std::time::Duration;

use futures_util::future::join_all;

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

async fn hundred_concurrent_misses(proto: Proto) {
    let origin = TestOrigin::start().await;
    let body: String = (0..50_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    origin.route(
        "/hot",
        Reply::ok(body.clone())
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300)),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let client = edge.client(proto);
    let url = edge.url(proto, "/hot");
    let responses = join_all((0..100).map(|_| client.get(&url))).await;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), body, "every waiter gets the whole body");
    }
    assert_eq!(
        origin.hits("/hot"),
        1,
        "{proto:?}: exactly one origin request"
    );
    let status = |r: &crate::support::client::Resp| r.header("cache-status").unwrap().to_owned();
    let collapsed = responses
        .iter()
        .filter(|r| status(r).contains("collapsed"))
        .count();
    // On a loaded machine a client may connect only after the fill ended: it gets a hit,
    // which is no second origin request either.
    let late_hits = responses
        .iter()
        .filter(|r| status(r).contains("; hit"))
        .count();
    assert_eq!(collapsed + late_hits, 99, "{proto:?}");
    assert!(
        collapsed >= 50,
        "{proto:?}: most waited on the one fetch ({collapsed})"
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "quicdn_coalesced_waits_total"),
        collapsed as f64
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_make_one_origin_request_h1() {
    hundred_concurrent_misses(Proto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_make_one_origin_request_h2() {
    hundred_concurrent_misses(Proto::H2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_an_uncacheable_response_each_get_their_own() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/per-user",
        Reply::ok("private stuff")
            .header("cache-control", "private")
            .delay(Duration::from_millis(200)),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let client = edge.client(Proto::H2);
    let url = edge.url(Proto::H2, "/per-user");
    let responses = join_all((0..10).map(|_| client.get(&url))).await;
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "private stuff");
    }
    assert_eq!(
        origin.hits("/per-user"),
        10,
        "a private response is never shared"
    );
    // Remembered as not storable: later requests go straight to the origin.
    let later = client.get(&url).await;
    assert!(
        later
            .header("cache-status")
            .unwrap()
            .contains("hit-for-pass"),
        "{:?}",
        later.header("cache-status")
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_cancel_the_fill_others_wait_on() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/big",
        Reply::generated(8 << 20).header("cache-control", "max-age=60"),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let client = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, "/big");
    // The first client reads a little and leaves.
    let leaver = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move {
            let mut seen = 0u64;
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                client.get_streaming(&url, |d| seen += d.len() as u64),
            )
            .await;
        }
    });
    leaver.await.unwrap();
    let mut ok = true;
    let mut offset = 0u64;
    let (_, len) = client
        .get_streaming(&url, |d| {
            ok &= crate::support::origin::pattern_check(offset, d).is_ok();
            offset += d.len() as u64;
        })
        .await
        .unwrap();
    assert_eq!(len, 8 << 20);
    assert!(ok, "bytes match the origin's");
    assert_eq!(origin.hits("/big"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_make_one_origin_request_h3_streams() {
    hundred_concurrent_misses(Proto::H3).await;
}
