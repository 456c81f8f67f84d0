//! Parent tiers: edges whose misses go to another edge (the parent) before the origin. One
//! origin fetch for many children and clients, `Age` and `Cache-Status` carried through,
//! loops refused, and the fallback when the parent is down.

use std::time::Duration;

use edge::upstream::group::GroupOrigin;
use edge::upstream::parent::Fallback;
use futures_util::future::join_all;

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

/// Every `Cache-Status` entry, in order, as one list.
fn cache_status(r: &crate::support::client::Resp) -> String {
    let lines: Vec<&str> = r
        .headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    lines.join(", ")
}

pub(crate) fn parent_of(edge: &TestEdge) -> GroupOrigin {
    parent_at(edge.running.http_addr().unwrap().port())
}

fn parent_at(port: u16) -> GroupOrigin {
    GroupOrigin {
        url: format!("http://127.0.0.1:{port}"),
        priority: 0,
        weight: 1,
        host: None,
        first_byte_timeout: None,
        connect_timeout: None,
    }
}

async fn named(
    name: &str,
    origin: &TestOrigin,
    parents: Vec<GroupOrigin>,
    fallback: Fallback,
) -> TestEdge {
    let name = name.to_owned();
    TestEdge::start_with(&origin.url(), move |c| {
        c.name = name;
        c.sites[0].parents = parents;
        c.sites[0].fallback = fallback;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_children_times_fifty_clients_make_one_origin_fetch() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/new",
        Reply::ok("fresh object")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300)),
    );
    let parent = named("parent", &origin, Vec::new(), Fallback::Origin).await;
    let mut children = Vec::new();
    for name in ["child-a", "child-b", "child-c"] {
        children.push(named(name, &origin, vec![parent_of(&parent)], Fallback::Origin).await);
    }
    let requests = children.iter().flat_map(|child| {
        let client = child.client(Proto::H2);
        let url = child.url(Proto::H2, "/new");
        (0..50).map(move |_| {
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(&url).await }
        })
    });
    let answers = join_all(requests).await;
    for r in &answers {
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "fresh object")
        );
    }
    assert_eq!(
        origin.hits("/new"),
        1,
        "one origin fetch for 3 children x 50 clients"
    );
    // One entry per hop, the one nearest the origin first (RFC 9211).
    let status = cache_status(&answers[0]);
    let parent_at = status.find("parent;").expect(&status);
    let child_at = status.find("child-").expect(&status);
    assert!(parent_at < child_at, "{status}");
    for child in children {
        child.stop().await;
    }
    parent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_carries_through_the_tier_and_a_loop_is_refused() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/aged",
        Reply::ok("x")
            .header("cache-control", "max-age=100")
            .header("age", "30"),
    );
    let parent = named("parent", &origin, Vec::new(), Fallback::Origin).await;
    parent
        .client(Proto::H1)
        .get(&parent.url(Proto::H1, "/aged"))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let child = named("child", &origin, vec![parent_of(&parent)], Fallback::Origin).await;
    let r = child
        .client(Proto::H3)
        .get(&child.url(Proto::H3, "/aged"))
        .await;
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!(age >= 31, "the child counts the parent's time: age {age}");
    let status = cache_status(&r);
    let child_entry = status.rsplit(", ").next().unwrap();
    assert!(child_entry.starts_with("child; "), "{status}");
    assert!(
        child_entry.contains("ttl=6") || child_entry.contains("ttl=5"),
        "the lifetime left, not extended: {status}"
    );
    assert_eq!(origin.hits("/aged"), 1);
    let m = child.metrics().await;
    assert_eq!(metric(&m, "quicdn_parent_requests_total"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "quicdn_parent_hits_total"),
        1.0,
        "the parent had it"
    );
    child.stop().await;
    parent.stop().await;

    // Two edges that name each other as parent: the request comes back to the first, which
    // finds itself in CDN-Loop.
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (pa, pb) = (free(), free());
    let looping = |name: &'static str, own: u16, other: u16| {
        let parent = parent_at(other);
        move |c: &mut edge::config::EdgeConfig| {
            c.name = name.into();
            c.listen.http = Some(([127, 0, 0, 1], own).into());
            c.sites[0].parents = vec![parent];
            c.sites[0].fallback = Fallback::Error;
        }
    };
    let a = TestEdge::start_with(&origin.url(), looping("loop-a", pa, pb)).await;
    let b = TestEdge::start_with(&origin.url(), looping("loop-b", pb, pa)).await;
    let r = b.client(Proto::H1).get(&b.url(Proto::H1, "/loop")).await;
    assert_eq!(r.status, 508, "{}", r.text());
    assert!(r.text().contains("request loop"), "{}", r.text());
    assert_eq!(origin.hits("/loop"), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_down_falls_back_to_the_origin_or_to_an_error_as_configured() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/f",
        Reply::ok("from origin").header("cache-control", "no-store"),
    );
    let parent = named("parent", &origin, Vec::new(), Fallback::Origin).await;
    let entry = parent_of(&parent);
    parent.stop().await;
    let to_origin = named("child-o", &origin, vec![entry.clone()], Fallback::Origin).await;
    let r = to_origin
        .client(Proto::H2)
        .get(&to_origin.url(Proto::H2, "/f"))
        .await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "from origin"));
    let to_error = named("child-e", &origin, vec![entry], Fallback::Error).await;
    let r = to_error
        .client(Proto::H2)
        .get(&to_error.url(Proto::H2, "/f"))
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        origin.hits("/f"),
        1,
        "only the fallback to the origin reached it"
    );
    let m = to_origin.metrics().await;
    assert_eq!(metric(&m, "quicdn_parent_fallbacks_total"), 1.0, "{m}");
    assert_eq!(
        metric(&to_error.metrics().await, "quicdn_parent_fallbacks_total"),
        0.0
    );
    to_origin.stop().await;
    to_error.stop().await;
}

/// A seek at a child pulls one slice through the parent, not the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_at_a_child_pulls_one_slice_through_the_parent() {
    let origin = TestOrigin::start().await;
    let len = 8 * (1 << 20);
    origin.route(
        "/big",
        Reply::generated(len)
            .header("cache-control", "max-age=600")
            .header("accept-ranges", "bytes")
            .header("etag", "\"big\""),
    );
    let parent = named("parent", &origin, Vec::new(), Fallback::Origin).await;
    let child = named("child", &origin, vec![parent_of(&parent)], Fallback::Origin).await;
    let start = 5 * (1 << 20) + 100;
    let range = format!("bytes={start}-{}", start + 9);
    let r = child
        .client(Proto::H2)
        .get_with(&child.url(Proto::H2, "/big"), &[("range", range.as_str())])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 10);
    crate::support::origin::pattern_check(start, &r.body).expect("the right bytes");
    let sent = origin.bytes_sent("/big");
    assert!(
        sent <= 2 << 20,
        "the origin sent {sent} bytes of an 8 MiB object for one seek"
    );
    // The parent holds that slice: the same seek at another child costs the origin nothing.
    let other = named(
        "child-2",
        &origin,
        vec![parent_of(&parent)],
        Fallback::Origin,
    )
    .await;
    let r = other
        .client(Proto::H1)
        .get_with(&other.url(Proto::H1, "/big"), &[("range", range.as_str())])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(origin.bytes_sent("/big"), sent);
    for edge in [child, other, parent] {
        edge.stop().await;
    }
}

/// A parent that comes back (its probe answers) gets the misses again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_parent_is_used_again() {
    let origin = TestOrigin::start().await;
    for n in 0..60 {
        origin.route(
            &format!("/r/{n}"),
            Reply::ok("r").header("cache-control", "max-age=600"),
        );
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "child".into();
        c.sites[0].parents = vec![parent_at(port)];
        c.sites[0].origin_health.probe_path = Some("/.quicdn/health".into());
        c.sites[0].origin_health.probe_interval = Duration::from_millis(100);
    })
    .await;
    let get = async |n: usize| {
        let r = child
            .client(Proto::H1)
            .get(&child.url(Proto::H1, &format!("/r/{n}")))
            .await;
        assert_eq!(r.status, 200);
        cache_status(&r)
    };
    // No parent yet: the origin answers.
    assert!(!get(0).await.contains("parent;"));
    let parent = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "parent".into();
        c.listen.http = Some(([127, 0, 0, 1], port).into());
    })
    .await;
    // Each try a new URL (a miss at the child), until one goes through the parent.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut n = 1;
    while !get(n).await.contains("parent;") {
        assert!(
            std::time::Instant::now() < deadline && n < 59,
            "the parent is not used again"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.stop().await;
    parent.stop().await;
}

/// A parent on HTTPS and a child that names it as `https://PARENT_HOST:port` (no fallback),
/// trusting the parent's development certificate; `tweak` adjusts the child's config.
async fn https_parent_and_child(
    origin: &TestOrigin,
    parent_host: &'static str,
    tweak: impl FnOnce(&mut edge::config::EdgeConfig),
) -> (TestEdge, TestEdge) {
    let parent = named("parent", origin, Vec::new(), Fallback::Error).await;
    let port = parent.running.https_addr().unwrap().port();
    let ca = parent.cache_dir().join("tls/dev-cert.pem");
    let child = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "child".into();
        c.origin.ca_file = Some(ca);
        c.sites[0].parents = vec![GroupOrigin {
            url: format!("https://{parent_host}:{port}"),
            ..parent_at(port)
        }];
        c.sites[0].fallback = Fallback::Error;
        tweak(c);
    })
    .await;
    (parent, child)
}

/// A parent named by an `https://` URL is asked over HTTP/2 (ALPN), its certificate checked
/// against `origin.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_over_https_is_asked_over_http2() {
    let origin = TestOrigin::start().await;
    origin.route("/t", Reply::ok("t").header("cache-control", "max-age=600"));
    let (parent, child) = https_parent_and_child(&origin, "localhost", |_| {}).await;
    for _ in 0..2 {
        let r = child
            .client(Proto::H1)
            .get(&child.url(Proto::H1, "/t"))
            .await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "t"));
    }
    let m = parent.metrics().await;
    let h2_misses = r#"quicdn_requests_total{protocol="h2",cache="miss",status="2xx"}"#;
    assert_eq!(metric(&m, h2_misses), 1.0, "{m}");
    assert_eq!(origin.hits("/t"), 1);
    child.stop().await;
    parent.stop().await;
}

/// A parent named by its address (not by the site's host) over HTTP/2: the request's
/// `:authority` is the client's host, as `Host` is (a parent refuses the two differing), while
/// the connection and the certificate check are the parent's address. Probes of the parent
/// keep working (none ejects it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_at_an_address_gets_the_clients_host_as_its_authority() {
    let origin = TestOrigin::start().await;
    origin.route("/a", Reply::ok("a").header("cache-control", "max-age=600"));
    let (parent, child) = https_parent_and_child(&origin, "127.0.0.1", |c| {
        c.sites[0].origin_health.probe_path = Some("/.quicdn/health".into());
        c.sites[0].origin_health.probe_interval = Duration::from_millis(100);
    })
    .await;
    let child_port = child.running.http_addr().unwrap().port();
    for host in ["cdn.test".to_owned(), format!("localhost:{child_port}")] {
        let r = child
            .client(Proto::H1)
            .get_with(&child.url(Proto::H1, "/a"), &[("host", host.as_str())])
            .await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "a"),
            "{host}: {}",
            cache_status(&r)
        );
    }
    // Long enough for several probes, each of which would count a failure.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = parent.metrics().await;
    let h2_misses = r#"quicdn_requests_total{protocol="h2",cache="miss",status="2xx"}"#;
    assert_eq!(metric(&m, h2_misses), 2.0, "one miss per host: {m}");
    let c = child.metrics().await;
    let ejected = r#"quicdn_upstream_ejections_total{tier="parent"}"#;
    assert_eq!(metric(&c, ejected), 0.0, "{c}");
    assert_eq!(metric(&c, "quicdn_parent_requests_total"), 2.0, "{c}");
    child.stop().await;
    parent.stop().await;
}

async fn purge_here(edge: &TestEdge, url: &str) {
    use edge::control::command::{new_id, now_ms};
    use edge::control::{Mode, Purge, Selector};
    let purge = Purge {
        id: new_id(),
        selector: Selector::Url(url.into()),
        mode: Mode::Hard,
        issued_ms: now_ms(),
    };
    edge.running.service().purge(&purge).await;
}

/// The child's own entry in `Cache-Status` (the last) for `path` over HTTP/1.1, and the body.
async fn child_get(child: &TestEdge, path: &str) -> (String, String) {
    let r = child
        .client(Proto::H1)
        .get(&child.url(Proto::H1, path))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status = cache_status(&r);
    let own = status.rsplit(", ").next().unwrap_or_default().to_owned();
    (r.text(), own)
}

/// A purge that reached the child but not yet its parent: the parent's older copy is served
/// once more but never stored by the child; a copy the parent fetched after the purge is,
/// however long it then waited in the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_does_not_store_a_parent_copy_older_than_its_purge() {
    let origin = TestOrigin::start().await;
    origin.route("/q", Reply::ok("v1").header("cache-control", "max-age=600"));
    let parent = named("parent", &origin, Vec::new(), Fallback::Origin).await;
    let child = named("child", &origin, vec![parent_of(&parent)], Fallback::Origin).await;
    assert_eq!(child_get(&child, "/q").await.0, "v1");
    // Age has whole seconds and the fence a second of slack: v1 is then clearly older.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    origin.route("/q", Reply::ok("v2").header("cache-control", "max-age=600"));
    purge_here(&child, "http://localhost/q").await;
    for _ in 0..2 {
        let (body, own) = child_get(&child, "/q").await;
        // The parent still has v1; the child passes it on and asks again next time.
        assert_eq!(body, "v1");
        assert!(own.starts_with("child; fwd=uri-miss"), "{own}");
    }
    let m = child.metrics().await;
    assert_eq!(metric(&m, "quicdn_parent_requests_total"), 3.0, "{m}");

    // Both purged; the parent fetches v2 at once, and it waits there 2.5 s (Age 2) before the
    // child asks: made after the purge, the child keeps it.
    purge_here(&parent, "http://localhost/q").await;
    purge_here(&child, "http://localhost/q").await;
    let r = parent
        .client(Proto::H1)
        .get(&parent.url(Proto::H1, "/q"))
        .await;
    assert_eq!(r.text(), "v2");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (body, own) = child_get(&child, "/q").await;
    assert_eq!(body, "v2");
    assert!(own.starts_with("child; fwd=uri-miss"), "{own}");
    let (body, own) = child_get(&child, "/q").await;
    assert_eq!(body, "v2");
    assert!(own.starts_with("child; hit"), "stored: {own}");
    assert_eq!(origin.hits("/q"), 2);
    child.stop().await;
    parent.stop().await;
}

/// On the control bus, a purge submitted at a child reaches its parent too: the next request
/// at the child gets the origin's new content through the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_the_bus_reaches_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let nats = crate::support::nats::NatsServer::start(dir.path());
    let control = edge::config::ControlConfig {
        nats: vec![nats.url().to_owned()],
        replicas: 1,
        pops: vec!["child".into(), "parent".into()],
        ..edge::config::ControlConfig::default()
    };
    let origin = TestOrigin::start().await;
    origin.route("/b", Reply::ok("v1").header("cache-control", "max-age=600"));
    let on_bus = control.clone();
    let parent = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "parent".into();
        c.control = on_bus;
    })
    .await;
    let parents = vec![parent_of(&parent)];
    let child = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "child".into();
        c.control = control;
        c.sites[0].parents = parents;
    })
    .await;
    assert_eq!(child_get(&child, "/b").await.0, "v1");
    assert!(child_get(&child, "/b").await.1.starts_with("child; hit"));
    origin.route("/b", Reply::ok("v2").header("cache-control", "max-age=600"));
    let purge = edge::control::Command::Purge(edge::control::Purge {
        id: edge::control::command::new_id(),
        selector: edge::control::Selector::Url("http://localhost/b".into()),
        mode: edge::control::Mode::Hard,
        issued_ms: edge::control::command::now_ms(),
    });
    let s = child
        .running
        .control()
        .submit(purge, Some(Duration::from_secs(5)))
        .await;
    assert!(s.pending.is_empty() && s.error.is_none(), "{s:?}");
    let (body, own) = child_get(&child, "/b").await;
    assert_eq!(body, "v2", "{own}");
    assert_eq!(origin.hits("/b"), 2);
    assert!(child_get(&child, "/b").await.1.starts_with("child; hit"));
    child.stop().await;
    parent.stop().await;
}

/// A site served at an IPv6 literal: the child sends `Host: [::1]` (brackets again) to its
/// parent, which finds the same site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_host_goes_through_the_parent() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/6",
        Reply::ok("six").header("cache-control", "max-age=600"),
    );
    let with_v6 = |c: &mut edge::config::EdgeConfig| c.sites[0].hosts.push("::1".into());
    let parent = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "parent".into();
        with_v6(c);
    })
    .await;
    let parents = vec![parent_of(&parent)];
    let child = TestEdge::start_with(&origin.url(), move |c| {
        c.name = "child".into();
        c.sites[0].parents = parents;
        c.sites[0].fallback = Fallback::Error;
        with_v6(c);
    })
    .await;
    let port = child.running.http_addr().unwrap().port();
    let host = format!("[::1]:{port}");
    let r = child
        .client(Proto::H1)
        .get_with(&child.url(Proto::H1, "/6"), &[("host", host.as_str())])
        .await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "six"),
        "{}",
        cache_status(&r)
    );
    assert!(
        cache_status(&r).starts_with("parent; fwd=uri-miss"),
        "{}",
        cache_status(&r)
    );
    child.stop().await;
    parent.stop().await;
}
