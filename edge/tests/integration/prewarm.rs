//! Pre-warm (`POST /prewarm`) on one edge: every URL fetched once into the cache through the
//! edge's own service, at the configured concurrency, with failures reported per URL.

use std::time::Duration;

use http::StatusCode;

use super::purge_api::api;
use crate::support::client::Client;
use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

const CONCURRENCY: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_urls_are_fetched_once_each_at_the_configured_concurrency() {
    let origin = TestOrigin::start().await;
    let paths: Vec<String> = (0..200).map(|i| format!("/w/{i}")).collect();
    for p in &paths {
        // A wide window between arrival and answer, so concurrent fetches overlap.
        origin.route(
            p,
            Reply::ok(format!("warm {p}"))
                .header("cache-control", "max-age=600")
                .delay(Duration::from_millis(10)),
        );
    }
    origin.route("/broken", Reply::status(503));
    origin.route("/slow", Reply::hang());
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.prewarm.concurrency = CONCURRENCY;
        c.prewarm.timeout = Duration::from_secs(2);
    })
    .await;
    let url = |p: &str| edge.url(Proto::H1, p);
    let mut urls: Vec<String> = paths.iter().map(|p| url(p)).collect();
    urls.push(url("/broken"));
    urls.push(url("/slow"));
    let body = serde_json::json!({ "urls": urls, "wait": "60s" }).to_string();
    let (status, answer, _) = api(&edge, "POST", "/prewarm", &body, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let local = &answer["local"];
    assert_eq!(local["fetched"], 200, "{}", local["urls"]);
    assert_eq!(local["failed"], 2);
    let results = local["urls"].as_array().unwrap();
    assert_eq!(results.len(), 202, "one result per URL, in order");
    for (r, p) in results.iter().zip(&paths) {
        assert_eq!(r["url"], url(p));
        assert_eq!(
            (r["status"].as_u64(), &r["error"]),
            (Some(200), &serde_json::Value::Null),
            "{r}"
        );
        assert_eq!(r["outcome"], "uri-miss", "{r}");
        assert_eq!(r["bytes"], format!("warm {p}").len(), "{r}");
    }
    let broken = &results[200];
    assert_eq!(broken["status"], 503, "{broken}");
    assert!(
        broken["error"].as_str().unwrap().contains("answered 503"),
        "{broken}"
    );
    let slow = &results[201];
    assert!(
        slow["error"]
            .as_str()
            .unwrap()
            .contains("no complete answer within 2s"),
        "{slow}"
    );
    let most = origin.max_in_flight();
    assert!(
        (2..=CONCURRENCY).contains(&most),
        "the origin had {most} requests at once (concurrency {CONCURRENCY})"
    );
    let client = Client::h1(None);
    for p in &paths {
        assert_eq!(origin.hits(p), 1, "{p}: fetched once");
        let r = client.get(&url(p)).await;
        assert!(r.header("cache-status").unwrap().contains("; hit"), "{p}");
    }
    // Warmed again: all hits now, and still one origin fetch each.
    let again = serde_json::json!({ "urls": &urls[..10] }).to_string();
    let (_, answer, _) = api(&edge, "POST", "/prewarm", &again, None).await;
    assert!(
        answer["local"]["urls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "hit"),
        "{answer}"
    );
    assert!(paths.iter().all(|p| origin.hits(p) == 1));
    let metrics = edge.metrics().await;
    assert_eq!(metric(&metrics, "quicdn_prewarm_fetched_total"), 210.0);
    assert_eq!(metric(&metrics, "quicdn_prewarm_failed_total"), 2.0);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_for_other_pops_fetches_nothing_here_and_bad_bodies_are_400() {
    let origin = TestOrigin::start().await;
    origin.route("/x", Reply::ok("x").header("cache-control", "max-age=600"));
    let edge = TestEdge::start(&origin.url()).await;
    let body = serde_json::json!({ "urls": [edge.url(Proto::H1, "/x")], "pops": ["elsewhere"] });
    let (status, answer, _) = api(&edge, "POST", "/prewarm", &body.to_string(), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["local"]["skipped"], true, "{answer}");
    assert_eq!(origin.hits("/x"), 0);
    for (body, reason) in [
        (r#"{"urls":[]}"#, "urls: empty"),
        (
            r#"{"urls":["localhost/x"]}"#,
            "not an http:// or https:// URL",
        ),
        (
            r#"{"urls":["http://localhost/x"],"concurrency":3}"#,
            "unknown field `concurrency`",
        ),
    ] {
        let (status, answer, _) = api(&edge, "POST", "/prewarm", body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["error"].as_str().unwrap().contains(reason),
            "{body}: {answer}"
        );
    }
    edge.stop().await;
}
