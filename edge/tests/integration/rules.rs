//! Per-site rules as a client sees them, over every protocol: TTL clamps, override, default,
//! client TTL and negative caching (Age and Cache-Status show what was stored for how long),
//! the cache key rule, bypass, header edits and the HTTPS redirect.

use std::time::Duration;

use edge::config::{EdgeConfig, SiteConfig};
use edge::rules::{HeaderEdits, KeyRule, PathRule, TtlRule};

use crate::support::client::Resp;
use crate::support::edge::{Proto, TestEdge};
use crate::support::origin::{Reply, TestOrigin};

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

fn rule(path: &str) -> PathRule {
    PathRule {
        path: path.into(),
        ..PathRule::default()
    }
}

fn cache_status(r: &Resp) -> &str {
    r.header("cache-status").unwrap_or_default()
}

fn assert_hit(proto: Proto, r: &Resp) {
    let cs = cache_status(r);
    assert!(cs.contains("; hit"), "{proto:?}: {cs}");
}

/// The `ttl=` of a Cache-Status entry.
fn ttl(r: &Resp) -> i64 {
    let cs = cache_status(r);
    cs.split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ttl in {cs:?}"))
}

fn ttl_rules(c: &mut EdgeConfig) {
    let site = &mut c.sites[0];
    site.rules = vec![
        PathRule {
            ttl: TtlRule {
                min: secs(60),
                max: secs(30 * 60),
                ..TtlRule::default()
            },
            ..rule("/clamp/*")
        },
        PathRule {
            ttl: TtlRule {
                override_ttl: secs(120),
                client: secs(10),
                ..TtlRule::default()
            },
            ..rule("/forced/*")
        },
        PathRule {
            ttl: TtlRule {
                default: secs(300),
                negative: secs(45),
                ..TtlRule::default()
            },
            ..rule("*")
        },
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_rules_set_what_the_edge_keeps_and_what_browsers_are_told() {
    for proto in Proto::ALL {
        let origin = TestOrigin::start().await;
        for (path, cc) in [
            ("/clamp/short", "max-age=1"),
            ("/clamp/long", "max-age=86400"),
            ("/forced/private", "private, no-store"),
        ] {
            origin.route(path, Reply::ok(path).header("cache-control", cc));
        }
        origin.route("/plain", Reply::ok("no cache-control"));
        origin.route("/missing", Reply::status(404).body("not here"));
        let edge = TestEdge::start_with(&origin.url(), ttl_rules).await;
        let c = edge.client(proto);
        let get = |path: &str| {
            let url = edge.url(proto, path);
            let c = &c;
            async move { c.get(&url).await }
        };

        // min: max-age=1 kept for 60 s; browsers still see the origin's max-age=1.
        let first = get("/clamp/short").await;
        assert!(
            cache_status(&first).contains("ttl=60"),
            "{proto:?}: {}",
            cache_status(&first)
        );
        assert_eq!(first.header("cache-control"), Some("max-age=1"));
        assert!(first.header("quicdn-origin-cache-control").is_none());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let again = get("/clamp/short").await;
        assert_hit(proto, &again);
        assert!(again.header("age").unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(again.header("cache-control"), Some("max-age=1"));
        assert_eq!(origin.hits("/clamp/short"), 1, "{proto:?}");
        // max: a day is cut to 30 minutes.
        let long = get("/clamp/long").await;
        assert!(
            (1790..=1800).contains(&ttl(&long)),
            "{proto:?}: {}",
            cache_status(&long)
        );
        assert_eq!(long.header("cache-control"), Some("max-age=86400"));
        // override: stored despite private, no-store; browsers get the client TTL.
        get("/forced/private").await;
        let forced = get("/forced/private").await;
        assert_hit(proto, &forced);
        assert!((115..=120).contains(&ttl(&forced)));
        assert_eq!(forced.header("cache-control"), Some("max-age=10"));
        assert_eq!(origin.hits("/forced/private"), 1);
        // default: nothing from the origin -> 300 s; no Cache-Control invented for browsers.
        get("/plain").await;
        let plain = get("/plain").await;
        assert_hit(proto, &plain);
        assert!((295..=300).contains(&ttl(&plain)));
        assert_eq!(plain.header("cache-control"), None);
        // negative: a 404 is kept 45 s.
        let missing = get("/missing").await;
        assert_eq!(missing.status, 404);
        let missing = get("/missing").await;
        assert_eq!(missing.status, 404);
        assert_hit(proto, &missing);
        assert!((40..=45).contains(&ttl(&missing)));
        assert_eq!(origin.hits("/missing"), 1);
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_rule_drops_tracking_parameters_and_bypass_skips_the_cache() {
    for proto in Proto::ALL {
        let origin = TestOrigin::start().await;
        let first = "/k?id=1&utm_source=news&fbclid=x";
        let second = "/k?utm_medium=mail&id=1";
        for path in [first, second, "/k?id=2", "/nocache/a"] {
            origin.route(path, Reply::ok(path).header("cache-control", "max-age=600"));
        }
        let edge = TestEdge::start_with(&origin.url(), |c| {
            c.sites[0].rules = vec![
                PathRule {
                    bypass: true,
                    ..rule("/nocache/*")
                },
                PathRule {
                    key: KeyRule {
                        exclude: vec!["utm_*".into(), "fbclid".into()],
                        ..KeyRule::default()
                    },
                    ..rule("/k")
                },
            ];
        })
        .await;
        let c = edge.client(proto);
        let a = c.get(&edge.url(proto, first)).await;
        let b = c.get(&edge.url(proto, second)).await;
        assert_eq!(b.text(), first, "{proto:?}: one entry for both");
        assert_hit(proto, &b);
        assert_eq!(a.text(), first);
        assert_eq!(origin.hits(first), 1, "the origin got the request as sent");
        assert_eq!(origin.hits(second), 0);
        assert_eq!(c.get(&edge.url(proto, "/k?id=2")).await.text(), "/k?id=2");
        for _ in 0..2 {
            let r = c.get(&edge.url(proto, "/nocache/a")).await;
            assert!(
                cache_status(&r).contains("bypass") && cache_status(&r).contains("detail=rule"),
                "{}",
                cache_status(&r)
            );
        }
        assert_eq!(
            origin.hits("/nocache/a"),
            2,
            "{proto:?}: bypass stores nothing"
        );
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_edit_both_sides_and_plain_http_is_redirected() {
    let mut set = std::collections::BTreeMap::new();
    set.insert(
        "strict-transport-security".to_owned(),
        "max-age=63072000".to_owned(),
    );
    let mut secret = std::collections::BTreeMap::new();
    secret.insert("x-origin-secret".to_owned(), "s3cr3t".to_owned());
    let mut cors = std::collections::BTreeMap::new();
    cors.insert("access-control-allow-origin".to_owned(), "*".to_owned());
    for proto in Proto::ALL {
        let origin = TestOrigin::start().await;
        for path in ["/page", "/fonts/a.woff2"] {
            origin.route(
                path,
                Reply::ok("x")
                    .header("cache-control", "max-age=600")
                    .header("server", "Apache/2.4.1")
                    .header("x-powered-by", "PHP/5.6"),
            );
        }
        let (set, secret, cors) = (set.clone(), secret.clone(), cors.clone());
        let edge = TestEdge::start_with(&origin.url(), move |c| {
            let site = &mut c.sites[0];
            site.redirect_https = proto == Proto::H1;
            site.response_headers = HeaderEdits {
                set,
                remove: vec!["server".into(), "x-powered-by".into()],
                ..HeaderEdits::default()
            };
            site.request_headers = HeaderEdits {
                set: secret,
                ..HeaderEdits::default()
            };
            site.rules = vec![PathRule {
                response_headers: HeaderEdits {
                    add: cors,
                    ..HeaderEdits::default()
                },
                ..rule("/fonts/*")
            }];
        })
        .await;
        let c = edge.client(proto);
        if proto == Proto::H1 {
            // Plain HTTP: 308 to the same URL on the HTTPS port; the origin is not asked.
            let r = c.get(&edge.url(proto, "/page?a=1")).await;
            assert_eq!(r.status, 308);
            let https = edge.url(Proto::H2, "/page?a=1");
            assert_eq!(r.header("location"), Some(https.as_str()));
            assert_eq!(origin.hits("/page"), 0);
            edge.stop().await;
            continue;
        }
        for _ in 0..2 {
            let r = c.get(&edge.url(proto, "/page")).await;
            assert_eq!(r.status, 200, "{proto:?}");
            assert_eq!(
                r.header("strict-transport-security"),
                Some("max-age=63072000")
            );
            assert!(r.header("server").is_none() && r.header("x-powered-by").is_none());
            assert!(r.header("access-control-allow-origin").is_none());
        }
        let font = c.get(&edge.url(proto, "/fonts/a.woff2")).await;
        assert_eq!(font.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            font.header("strict-transport-security"),
            Some("max-age=63072000")
        );
        let sent = &origin.requests("/page")[0];
        assert_eq!(sent.headers.get("x-origin-secret").unwrap(), "s3cr3t");
        edge.stop().await;
    }
}

#[test]
fn a_bad_rule_is_refused_naming_the_site_the_rule_and_the_field() {
    let mut c = EdgeConfig::default();
    let mut site = SiteConfig::new(&["a.test", "b.test"], "http://127.0.0.1:1");
    site.rules = vec![rule("/ok/*"), rule("static/*")];
    c.sites.push(site);
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("site[0] (a.test, b.test): rule 2 (path \"static/*\")"),
        "{err}"
    );
    c.sites[0].rules = vec![PathRule {
        ttl: TtlRule {
            min: secs(10),
            max: secs(5),
            ..TtlRule::default()
        },
        ..rule("/x")
    }];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("rule 1 (path \"/x\"), ttl: min"), "{err}");
    c.sites[0].rules = vec![];
    c.sites[0].response_headers.remove = vec!["bad header".into()];
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("response_headers: \"bad header\" is not a header name"),
        "{err}"
    );
    c.sites[0].response_headers.remove = vec!["cache-status".into()];
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("set by the edge itself")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_replace_5xx_bodies_under_the_same_status() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("5xx.html");
    std::fs::write(&page, "<h1>We will be right back</h1>").unwrap();
    for proto in Proto::ALL {
        let origin = TestOrigin::start().await;
        origin.route(
            "/busy",
            Reply::status(503)
                .body("stack trace of the origin")
                .header("etag", "\"e\""),
        );
        origin.route("/broken", Reply::ok("never sent").reset_after(0));
        origin.route("/fine", Reply::ok("fine"));
        let page = page.clone();
        let edge = TestEdge::start_with(&origin.url(), move |c| {
            c.sites[0].error_pages = vec![edge::rules::ErrorPage {
                status: vec![502, 503, 504],
                file: page,
                content_type: None,
            }];
        })
        .await;
        let c = edge.client(proto);
        let busy = c.get(&edge.url(proto, "/busy")).await;
        assert_eq!(busy.status, 503, "{proto:?}");
        assert_eq!(busy.text(), "<h1>We will be right back</h1>");
        assert_eq!(
            busy.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(busy.header("etag").is_none());
        let broken = c.get(&edge.url(proto, "/broken")).await;
        assert_eq!(
            broken.status, 502,
            "{proto:?}: the edge's own 502 gets the page too"
        );
        assert_eq!(broken.text(), "<h1>We will be right back</h1>");
        assert_eq!(c.get(&edge.url(proto, "/fine")).await.text(), "fine");
        edge.stop().await;
    }
    let mut c = EdgeConfig::default();
    let mut site = SiteConfig::new(&["a.test"], "http://127.0.0.1:1");
    site.error_pages = vec![edge::rules::ErrorPage {
        status: vec![503],
        file: dir.path().join("missing.html"),
        content_type: None,
    }];
    c.sites.push(site);
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("error_page 1") && err.contains("cannot read the file"),
        "{err}"
    );
}
