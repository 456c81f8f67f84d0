//! RFC 9111 behaviour as a client sees it. Every case runs over each protocol the edge speaks
//! (one origin and edge per protocol), so the protocols share one set of expectations.

use std::time::Duration;

use http::{Method, Request};
use http_body_util::Full;

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

fn cache_status(resp: &crate::support::client::Resp) -> String {
    resp.header("cache-status").unwrap_or_default().to_owned()
}

per_protocol!(
    miss_then_hit_with_age_and_cache_status,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/a",
            Reply::ok("alpha").header("cache-control", "max-age=60"),
        );
        let c = edge.client(proto);
        {
            let first = c.get(&edge.url(proto, "/a")).await;
            assert_eq!(first.status, 200);
            assert_eq!(first.text(), "alpha");
            let cs = cache_status(&first);
            assert!(
                cs.starts_with("edge-test; fwd=uri-miss; fwd-status=200"),
                "{proto:?}: {cs}"
            );
            assert!(cs.contains("stored"), "{cs}");
            assert!(first.header("via").unwrap().contains("edge-test"));
            let second = c.get(&edge.url(proto, "/a")).await;
            assert_eq!(second.text(), "alpha");
            let cs = cache_status(&second);
            assert!(cs.starts_with("edge-test; hit; ttl="), "{proto:?}: {cs}");
            let age: u64 = second.header("age").unwrap().parse().unwrap();
            assert!(age <= 1, "age {age}");
            assert_eq!(origin.hits("/a"), 1, "{proto:?}");
            let hits = format!(
                "quicdn_requests_total{{protocol=\"{}\",cache=\"hit\",status=\"2xx\"}}",
                proto.label()
            );
            // Counted when the response has ended on the edge's side, which can be just after
            // the client has the last byte (an HTTP/3 stream's end).
            let mut metrics = edge.metrics().await;
            for _ in 0..50 {
                if metric(&metrics, &hits) == 1.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                metrics = edge.metrics().await;
            }
            assert_eq!(metric(&metrics, &hits), 1.0, "{metrics}");
        }
    }
);

per_protocol!(
    age_counts_origin_age_and_residence,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/aged",
            Reply::ok("x")
                .header("cache-control", "max-age=100")
                .header("age", "30"),
        );
        let c = edge.client(proto);
        {
            c.get(&edge.url(proto, "/aged")).await;
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let hit = c.get(&edge.url(proto, "/aged")).await;
            let age: u64 = hit.header("age").unwrap().parse().unwrap();
            assert!((31..=32).contains(&age), "age {age}");
            let cs = cache_status(&hit);
            assert!(cs.contains("ttl=6"), "100 - 31 or 32 s left: {cs}");
        }
    }
);

per_protocol!(
    no_store_private_and_authorization_are_not_stored,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route("/ns", Reply::ok("n").header("cache-control", "no-store"));
        origin.route(
            "/priv",
            Reply::ok("p").header("cache-control", "private, max-age=60"),
        );
        origin.route(
            "/auth",
            Reply::ok("a").header("cache-control", "max-age=60"),
        );
        origin.route(
            "/auth-public",
            Reply::ok("a").header("cache-control", "public, max-age=60"),
        );
        let c = edge.client(proto);
        {
            for path in ["/ns", "/priv"] {
                c.get(&edge.url(proto, path)).await;
                let again = c.get(&edge.url(proto, path)).await;
                assert!(
                    !cache_status(&again).contains("; hit"),
                    "{path}: {}",
                    cache_status(&again)
                );
                assert_eq!(origin.hits(path), 2, "{path}");
            }
            for path in ["/auth", "/auth-public"] {
                for _ in 0..2 {
                    let req = Request::get(edge.url(proto, path))
                        .header("authorization", "Bearer t")
                        .body(Full::default())
                        .unwrap();
                    c.send(req).await.unwrap();
                }
            }
            assert_eq!(
                origin.hits("/auth"),
                2,
                "Authorization without public: not shared"
            );
            assert_eq!(origin.hits("/auth-public"), 1, "public allows sharing");
        }
    }
);

per_protocol!(
    s_maxage_wins_over_max_age_and_expires,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/s",
            Reply::ok("s")
                .header("cache-control", "max-age=0, s-maxage=60")
                .header("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(10));
        origin.route("/expired", Reply::ok("e").header("expires", &past));
        let c = edge.client(proto);
        {
            c.get(&edge.url(proto, "/s")).await;
            let hit = c.get(&edge.url(proto, "/s")).await;
            assert!(
                cache_status(&hit).contains("; hit"),
                "{}",
                cache_status(&hit)
            );
            c.get(&edge.url(proto, "/expired")).await;
            let again = c.get(&edge.url(proto, "/expired")).await;
            assert!(
                !cache_status(&again).contains("; hit"),
                "{}",
                cache_status(&again)
            );
            assert_eq!(origin.hits("/expired"), 2);
        }
    }
);

per_protocol!(
    vary_keeps_one_entry_per_variant,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/v",
            Reply::dynamic(|req| {
                let lang = req
                    .headers
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                Reply::ok(format!("lang={lang}"))
                    .header("cache-control", "max-age=60")
                    .header("vary", "Accept-Language")
            }),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/v");
            for (lang, round) in [("en", 0), ("de", 0), ("en", 1), ("de", 1)] {
                let r = c.get_with(&url, &[("accept-language", lang)]).await;
                assert_eq!(r.text(), format!("lang={lang}"));
                let cs = cache_status(&r);
                if round == 1 {
                    assert!(cs.contains("; hit"), "{lang}: {cs}");
                } else if lang == "de" {
                    assert!(cs.contains("fwd=vary-miss"), "{lang}: {cs}");
                }
            }
            let none = c.get(&url).await;
            assert_eq!(none.text(), "lang=none");
            assert_eq!(origin.hits("/v"), 3);
        }
    }
);

per_protocol!(
    stale_entries_are_revalidated_and_a_304_refreshes_them,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/r",
            Reply::dynamic(|req| {
                if req
                    .headers
                    .get("if-none-match")
                    .is_some_and(|v| v == "\"v1\"")
                {
                    Reply::status(304)
                        .header("etag", "\"v1\"")
                        .header("cache-control", "max-age=1")
                        .header("x-refreshed", "yes")
                } else {
                    Reply::ok("body-v1")
                        .header("etag", "\"v1\"")
                        .header("cache-control", "max-age=1")
                }
            }),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/r");
            c.get(&url).await;
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let revalidated = c.get(&url).await;
            assert_eq!(revalidated.status, 200);
            assert_eq!(revalidated.text(), "body-v1");
            assert_eq!(
                revalidated.header("x-refreshed"),
                Some("yes"),
                "304 headers merged"
            );
            let cs = cache_status(&revalidated);
            assert!(
                cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
                "{cs}"
            );
            let reqs = origin.requests("/r");
            assert_eq!(reqs.len(), 2);
            assert_eq!(reqs[1].header("if-none-match"), Some("\"v1\""));
            let hit = c.get(&url).await;
            assert!(
                cache_status(&hit).contains("; hit"),
                "refreshed entry is fresh again"
            );
        }
    }
);

per_protocol!(
    if_modified_since_is_used_without_etag,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
        origin.route(
            "/lm",
            Reply::dynamic(move |req| {
                if req
                    .headers
                    .get("if-modified-since")
                    .is_some_and(|v| v == lm)
                {
                    Reply::status(304).header("cache-control", "max-age=0")
                } else {
                    Reply::ok("lm-body")
                        .header("last-modified", lm)
                        .header("cache-control", "max-age=0")
                }
            }),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/lm");
            c.get(&url).await;
            let again = c.get(&url).await;
            assert_eq!(again.text(), "lm-body");
            assert!(
                cache_status(&again).contains("fwd-status=304"),
                "{}",
                cache_status(&again)
            );
        }
    }
);

per_protocol!(
    no_cache_responses_are_validated_every_time,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/nc",
            Reply::dynamic(|req| {
                if req.headers.contains_key("if-none-match") {
                    Reply::status(304).header("etag", "\"n\"")
                } else {
                    Reply::ok("nc")
                        .header("etag", "\"n\"")
                        .header("cache-control", "no-cache, max-age=600")
                }
            }),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/nc");
            for _ in 0..3 {
                assert_eq!(c.get(&url).await.text(), "nc");
            }
            assert_eq!(origin.hits("/nc"), 3, "every use is validated");
            assert_eq!(
                origin.requests("/nc")[2].header("if-none-match"),
                Some("\"n\"")
            );
        }
    }
);

per_protocol!(
    stale_while_revalidate_serves_stale_and_refreshes_in_background,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/swr",
            Reply::sequence(vec![
                Reply::ok("old").header("cache-control", "max-age=1, stale-while-revalidate=30"),
                Reply::ok("new").header("cache-control", "max-age=60"),
            ]),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/swr");
            assert_eq!(c.get(&url).await.text(), "old");
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let stale = c.get(&url).await;
            assert_eq!(stale.text(), "old", "served stale at once");
            let cs = cache_status(&stale);
            assert!(
                cs.contains("; hit") && cs.contains("stale-while-revalidate"),
                "{cs}"
            );
            let mut fresh = String::new();
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                fresh = c.get(&url).await.text();
                if fresh == "new" {
                    break;
                }
            }
            assert_eq!(fresh, "new", "background revalidation replaced the entry");
            assert_eq!(origin.hits("/swr"), 2);
        }
    }
);

per_protocol!(
    stale_if_error_serves_stale_while_the_origin_is_down,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/sie",
            Reply::ok("kept").header("cache-control", "max-age=1, stale-if-error=60"),
        );
        origin.route(
            "/plain",
            Reply::ok("gone").header("cache-control", "max-age=1"),
        );
        let c = edge.client(proto);
        {
            c.get(&edge.url(proto, "/sie")).await;
            c.get(&edge.url(proto, "/plain")).await;
            tokio::time::sleep(Duration::from_millis(2100)).await;
            origin.shutdown().await;
            let stale = c.get(&edge.url(proto, "/sie")).await;
            assert_eq!(stale.status, 200);
            assert_eq!(stale.text(), "kept");
            let cs = cache_status(&stale);
            assert!(
                cs.contains("stale-if-error") && cs.contains("fwd-status=502"),
                "{cs}"
            );
            let failed = c.get(&edge.url(proto, "/plain")).await;
            assert_eq!(
                failed.status, 502,
                "no stale-if-error: the error is passed on"
            );
            assert!(
                failed.text().contains("origin unreachable"),
                "{}",
                failed.text()
            );
            origin.restart().await;
        }
    }
);

per_protocol!(
    must_revalidate_forbids_serving_stale_on_error,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/mr",
            Reply::sequence(vec![
                Reply::ok("v").header(
                    "cache-control",
                    "max-age=1, must-revalidate, stale-if-error=60",
                ),
                Reply::status(503).body("down"),
            ]),
        );
        let c = edge.client(proto);
        {
            c.get(&edge.url(proto, "/mr")).await;
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let r = c.get(&edge.url(proto, "/mr")).await;
            assert_eq!(r.status, 503);
        }
    }
);

per_protocol!(
    client_conditionals_are_answered_from_cache,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/cond",
            Reply::ok("conditional")
                .header("etag", "W/\"c1\"")
                .header("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")
                .header("cache-control", "max-age=60"),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/cond");
            c.get(&url).await;
            let inm = c.get_with(&url, &[("if-none-match", "\"c1\"")]).await;
            assert_eq!(inm.status, 304);
            assert!(inm.body.is_empty());
            assert_eq!(inm.header("etag"), Some("W/\"c1\""));
            let ims = c
                .get_with(
                    &url,
                    &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
                )
                .await;
            assert_eq!(ims.status, 304);
            let other = c.get_with(&url, &[("if-none-match", "\"zzz\"")]).await;
            assert_eq!(other.status, 200);
            assert_eq!(origin.hits("/cond"), 1, "all answered from cache");
        }
    }
);

per_protocol!(
    client_no_cache_forces_revalidation,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/force",
            Reply::ok("f").header("cache-control", "max-age=60"),
        );
        let c = edge.client(proto);
        {
            let url = edge.url(proto, "/force");
            c.get(&url).await;
            let forced = c.get_with(&url, &[("cache-control", "no-cache")]).await;
            assert!(
                cache_status(&forced).contains("fwd=request"),
                "{}",
                cache_status(&forced)
            );
            assert_eq!(origin.hits("/force"), 2);
        }
    }
);

per_protocol!(
    unsafe_methods_invalidate,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/item",
            Reply::ok("item").header("cache-control", "max-age=60"),
        );
        origin.route(
            "/list",
            Reply::ok("list").header("cache-control", "max-age=60"),
        );
        let c = edge.client(proto);
        {
            c.get(&edge.url(proto, "/item")).await;
            c.get(&edge.url(proto, "/list")).await;
            origin.route(
                "/item",
                Reply::status(204).header("content-location", "/list"),
            );
            let post = Request::builder()
                .method(Method::POST)
                .uri(edge.url(proto, "/item"))
                .body(Full::from("payload"))
                .unwrap();
            let r = c.send(post).await.unwrap();
            assert_eq!(r.status, 204);
            assert_eq!(
                origin.requests("/item").last().unwrap().body_len,
                7,
                "body forwarded"
            );
            origin.route(
                "/item",
                Reply::ok("item-2").header("cache-control", "max-age=60"),
            );
            origin.route(
                "/list",
                Reply::ok("list-2").header("cache-control", "max-age=60"),
            );
            assert_eq!(c.get(&edge.url(proto, "/item")).await.text(), "item-2");
            assert_eq!(
                c.get(&edge.url(proto, "/list")).await.text(),
                "list-2",
                "Content-Location invalidated"
            );
        }
    }
);

per_protocol!(
    head_is_served_from_a_stored_get,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/h",
            Reply::ok("0123456789").header("cache-control", "max-age=60"),
        );
        let c = edge.client(proto);
        {
            let head = Request::head(edge.url(proto, "/h"))
                .body(Full::default())
                .unwrap();
            let r = c.send(head).await.unwrap();
            assert_eq!(r.status, 200);
            assert!(r.body.is_empty());
            assert_eq!(r.header("content-length"), Some("10"));
            assert_eq!(c.get(&edge.url(proto, "/h")).await.text(), "0123456789");
            assert_eq!(
                origin.hits("/h"),
                1,
                "the HEAD miss filled the cache with a GET"
            );
            assert_eq!(origin.requests("/h")[0].method, Method::GET);
        }
    }
);

per_protocol!(
    heuristic_freshness_only_with_last_modified,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        let old =
            httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100_000));
        origin.route("/heur", Reply::ok("h").header("last-modified", &old));
        origin.route("/bare", Reply::ok("b"));
        origin.route(
            "/heur-302",
            Reply::status(302)
                .header("location", "/x")
                .header("last-modified", &old),
        );
        let c = edge.client(proto);
        {
            for path in ["/heur", "/bare", "/heur-302"] {
                c.get(&edge.url(proto, path)).await;
                c.get(&edge.url(proto, path)).await;
            }
            assert_eq!(
                origin.hits("/heur"),
                1,
                "10% of 100000 s is heuristically fresh"
            );
            assert_eq!(origin.hits("/bare"), 2, "no validator, no freshness");
            assert_eq!(
                origin.hits("/heur-302"),
                2,
                "302 is not heuristically cacheable"
            );
        }
    }
);

per_protocol!(
    proxy_headers_reach_the_origin,
    async |proto: Proto, origin: &TestOrigin, edge: &TestEdge| {
        origin.route(
            "/hdr",
            Reply::ok("h")
                .header("connection", "x-hop")
                .header("x-hop", "secret"),
        );
        let c = edge.client(proto);
        {
            let r = c
                .get_with(
                    &edge.url(proto, "/hdr"),
                    &[("x-forwarded-for", "203.0.113.9"), ("te", "trailers")],
                )
                .await;
            assert_eq!(r.header("x-hop"), None, "Connection-named field removed");
            let seen = &origin.requests("/hdr")[0];
            assert_eq!(
                seen.header("x-forwarded-for"),
                Some("203.0.113.9, 127.0.0.1")
            );
            assert!(
                seen.header("via").unwrap().ends_with("edge-test"),
                "{:?}",
                seen.header("via")
            );
            assert_eq!(seen.header("te"), None);
            assert_eq!(
                seen.header("host"),
                Some(origin.addr().to_string().as_str())
            );
        }
    }
);
