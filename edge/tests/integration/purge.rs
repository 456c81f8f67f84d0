//! Purges on one edge (no bus), seen by real clients over every protocol: each selector and
//! mode, variants and slices, surrogate keys hidden from clients, and the fence on a fetch
//! that was under way. The admin API and the bus are tested in their own files; these call
//! the service's purge directly, which is what both end in.

use std::time::Duration;

use edge::control::command::{new_id, now_ms};
use edge::control::{Mode, Purge, Purged, Selector};

use crate::support::edge::{Proto, TestEdge};
use crate::support::origin::{Reply, TestOrigin};

async fn purge(edge: &TestEdge, selector: Selector, mode: Mode) -> Purged {
    let purge = Purge {
        id: new_id(),
        selector,
        mode,
        issued_ms: now_ms(),
    };
    edge.running.service().purge(&purge).await
}

fn cs(resp: &crate::support::client::Resp) -> String {
    resp.header("cache-status").unwrap_or_default().to_owned()
}

async fn hit(edge: &TestEdge, proto: Proto, path: &str, headers: &[(&str, &str)]) -> String {
    let r = edge
        .client(proto)
        .get_with(&edge.url(proto, path), headers)
        .await;
    assert_eq!(r.status, 200, "{proto:?} {path}: {}", r.text());
    cs(&r)
}

per_protocol!(
    a_url_purge_takes_every_variant_and_leaves_its_neighbours,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/v",
            Reply::ok("varies")
                .header("cache-control", "max-age=600")
                .header("vary", "accept-language"),
        );
        origin.route(
            "/v2",
            Reply::ok("other").header("cache-control", "max-age=600"),
        );
        for lang in ["de", "fr"] {
            hit(edge, proto, "/v", &[("accept-language", lang)]).await;
        }
        hit(edge, proto, "/v2", &[]).await;
        let purged = purge(edge, Selector::Url("http://localhost/v".into()), Mode::Hard).await;
        assert_eq!(purged.objects, 2, "{proto:?}: both languages");
        for lang in ["de", "fr"] {
            let status = hit(edge, proto, "/v", &[("accept-language", lang)]).await;
            assert!(status.contains("-miss"), "{proto:?} {lang}: {status}");
        }
        assert!(hit(edge, proto, "/v2", &[]).await.contains("hit"));
        assert_eq!(origin.hits("/v"), 4);
        // A URL on a host no site serves purges nothing, and says so.
        let none = purge(
            edge,
            Selector::Url("http://elsewhere.test/v".into()),
            Mode::Hard,
        )
        .await;
        assert_eq!(none, Purged::default());
    }
);

per_protocol!(
    tags_are_indexed_hidden_from_clients_and_purged_together,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        let tagged = |body: &'static str, tags: &str| {
            Reply::ok(body)
                .header("cache-control", "max-age=600")
                .header("surrogate-key", tags)
        };
        origin.route("/t/a", tagged("a", "t1 product-42"));
        origin.route("/t/b", tagged("b", "t2"));
        origin.route(
            "/t/c",
            Reply::ok("c")
                .header("cache-control", "max-age=600")
                .header("cache-tag", "t2,t1"),
        );
        let c = edge.client(proto);
        for path in ["/t/a", "/t/b", "/t/c"] {
            let r = c.get(&edge.url(proto, path)).await;
            assert!(r.header("surrogate-key").is_none() && r.header("cache-tag").is_none());
        }
        let purged = purge(edge, Selector::Tag("t1".into()), Mode::Hard).await;
        assert_eq!(purged.objects, 2, "{proto:?}");
        assert!(hit(edge, proto, "/t/a", &[]).await.contains("fwd=uri-miss"));
        assert!(hit(edge, proto, "/t/c", &[]).await.contains("fwd=uri-miss"));
        assert!(hit(edge, proto, "/t/b", &[]).await.contains("hit"));
        // Refetched, a/c are indexed again.
        assert_eq!(
            purge(edge, Selector::Tag("t2".into()), Mode::Hard)
                .await
                .objects,
            2
        );
    }
);

per_protocol!(
    prefix_host_and_all,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        for path in ["/static/a.js", "/static/b.css", "/index.html"] {
            origin.route(path, Reply::ok("x").header("cache-control", "max-age=600"));
            hit(edge, proto, path, &[]).await;
        }
        let purged = purge(
            edge,
            Selector::Prefix("localhost/static/".into()),
            Mode::Hard,
        )
        .await;
        assert_eq!(purged.objects, 2, "{proto:?}");
        assert!(hit(edge, proto, "/index.html", &[]).await.contains("hit"));
        assert!(
            hit(edge, proto, "/static/a.js", &[])
                .await
                .contains("fwd=uri-miss")
        );
        // Another host of the site is another key space.
        assert_eq!(
            purge(edge, Selector::Host("cdn.test".into()), Mode::Hard)
                .await
                .objects,
            0
        );
        assert_eq!(
            purge(edge, Selector::Host("localhost".into()), Mode::Hard)
                .await
                .objects,
            2
        );
        hit(edge, proto, "/index.html", &[]).await;
        assert_eq!(purge(edge, Selector::All, Mode::Hard).await.objects, 1);
        assert!(
            hit(edge, proto, "/index.html", &[])
                .await
                .contains("fwd=uri-miss")
        );
    }
);

per_protocol!(
    soft_purge_revalidates_with_the_stored_validators,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/s",
            Reply::dynamic(|req| match req.headers.get("if-none-match") {
                Some(_) => Reply::status(304)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=600"),
                None => Reply::ok("soft")
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=600"),
            }),
        );
        hit(edge, proto, "/s", &[]).await;
        let purged = purge(edge, Selector::Url("localhost/s".into()), Mode::Soft).await;
        assert_eq!(purged.objects, 1);
        let status = hit(edge, proto, "/s", &[]).await;
        assert!(
            status.contains("fwd=stale") && status.contains("fwd-status=304"),
            "{proto:?}: {status}"
        );
        let asked = origin.requests("/s");
        assert_eq!(
            asked.last().unwrap().header("if-none-match"),
            Some("\"v1\"")
        );
        assert!(hit(edge, proto, "/s", &[]).await.contains("hit"));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_purge_takes_the_slices_of_a_sliced_object() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start(&origin.url()).await;
    // Three 1 MiB slices and a bit.
    let len = 3 * (1 << 20) + 1000;
    origin.route(
        "/big",
        Reply::generated(len)
            .header("cache-control", "max-age=600")
            .header("etag", "\"big\""),
    );
    let range = [("range", "bytes=2097152-2097161")];
    for proto in [Proto::H1, Proto::H2, Proto::H3] {
        let r = edge
            .client(proto)
            .get_with(&edge.url(proto, "/big"), &range)
            .await;
        assert_eq!(r.status, 206, "{proto:?}");
    }
    let before = origin.hits("/big");
    let purged = purge(&edge, Selector::Url("localhost/big".into()), Mode::Hard).await;
    // The site keys on the scheme: the http and the https object, and their slices.
    assert_eq!(purged.objects, 2, "{purged:?}");
    assert!(purged.slices >= 2, "{purged:?}");
    assert_eq!(purged.bytes, 2 * len);
    for proto in [Proto::H1, Proto::H2, Proto::H3] {
        let r = edge
            .client(proto)
            .get_with(&edge.url(proto, "/big"), &range)
            .await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body.len(), 10);
    }
    assert_eq!(
        origin.hits("/big"),
        before + 2,
        "one slice from the origin per scheme"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_under_way_when_the_purge_runs_is_not_stored() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start(&origin.url()).await;
    origin.route(
        "/slow",
        Reply::ok("old")
            .header("cache-control", "max-age=600")
            .delay(Duration::from_millis(600)),
    );
    let url = edge.url(Proto::H1, "/slow");
    let client = edge.client(Proto::H1);
    let slow = tokio::spawn(async move { client.get(&url).await.text() });
    // The origin has the request, and holds its answer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while origin.hits("/slow") == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let purged = purge(&edge, Selector::Url("localhost/slow".into()), Mode::Hard).await;
    assert_eq!(purged.fenced, 1);
    origin.route(
        "/slow",
        Reply::ok("new").header("cache-control", "max-age=600"),
    );
    // Sent while the old fetch is still under way: it does not join it.
    let r = edge
        .client(Proto::H1)
        .get(&edge.url(Proto::H1, "/slow"))
        .await;
    assert_eq!(r.text(), "new", "{}", cs(&r));
    assert_eq!(
        slow.await.unwrap(),
        "old",
        "the client that asked before still gets its answer"
    );
    for proto in Proto::ALL {
        let r = edge.client(proto).get(&edge.url(proto, "/slow")).await;
        assert_eq!(r.text(), "new", "{proto:?}: {}", cs(&r));
    }
    // old (not stored), new over http, new over https (another key).
    assert_eq!(origin.hits("/slow"), 3);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_can_keep_its_surrogate_keys_for_clients() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start_with(&origin.url(), |c| c.sites[0].keep_surrogate_keys = true).await;
    origin.route(
        "/k",
        Reply::ok("k")
            .header("cache-control", "max-age=600")
            .header("surrogate-key", "t1"),
    );
    for proto in Proto::ALL {
        let r = edge.client(proto).get(&edge.url(proto, "/k")).await;
        assert_eq!(r.header("surrogate-key"), Some("t1"), "{proto:?}");
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_purge_finds_what_the_cache_key_rule_keyed() {
    use edge::rules::{KeyRule, PathRule, QueryKey};
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.sites[0].rules = vec![PathRule {
            path: "/k/*".into(),
            key: KeyRule {
                query: QueryKey::Sort,
                exclude: vec!["utm_*".into()],
                headers: vec!["x-device".into()],
                ..KeyRule::default()
            },
            ..PathRule::default()
        }];
    })
    .await;
    origin.route(
        "/k/a?b=2&a=1",
        Reply::ok("k").header("cache-control", "max-age=600"),
    );
    for device in ["mobile", "desktop"] {
        hit(&edge, Proto::H2, "/k/a?b=2&a=1", &[("x-device", device)]).await;
    }
    // Another query order and a tracking parameter: the same object to the key rule.
    let url = "https://localhost/k/a?a=1&utm_source=x&b=2";
    let purged = purge(&edge, Selector::Url(url.into()), Mode::Hard).await;
    assert_eq!(purged.objects, 2, "both devices");
    let status = hit(&edge, Proto::H2, "/k/a?b=2&a=1", &[("x-device", "mobile")]).await;
    assert!(status.contains("fwd=uri-miss"), "{status}");
    edge.stop().await;
}
