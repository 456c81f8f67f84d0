//! The cache core against a fake upstream and a fake clock: coalescing, revalidation, the
//! stale rules and slice fetches, in milliseconds (no sockets, no sleeping for time to pass).

use std::sync::Mutex as StdMutex;

use http_body_util::BodyExt as _;

use super::*;
use crate::cache::budget::ReadBudget;
use crate::cache::store::StoreLimits;
use crate::control;

/// Time that moves only when told to.
struct FakeClock(StdMutex<SystemTime>);

impl FakeClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

type Answer = dyn Fn(&Request<Body>) -> Response<Body> + Send + Sync;

/// An upstream that records what it was asked and answers with `answer`; while `gate` has no
/// permits, answers wait (to hold a flight open).
struct FakeUpstream {
    asked: StdMutex<Vec<http::request::Parts>>,
    answer: Box<Answer>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl FakeUpstream {
    fn new(answer: impl Fn(&Request<Body>) -> Response<Body> + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            asked: StdMutex::default(),
            answer: Box::new(answer),
            gate: None,
        })
    }

    fn asked(&self) -> Vec<http::request::Parts> {
        let asked = self.asked.lock().unwrap();
        asked
            .iter()
            .map(|p| {
                let mut copy = Request::new(()).into_parts().0;
                copy.method = p.method.clone();
                copy.uri = p.uri.clone();
                copy.headers = p.headers.clone();
                copy
            })
            .collect()
    }
}

impl Upstream for Arc<FakeUpstream> {
    fn fetch(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, OriginError>> {
        let this = self.clone();
        Box::pin(async move {
            if let Some(gate) = &this.gate {
                let _ = gate.acquire().await.map(|p| p.forget());
            }
            let response = (this.answer)(&req);
            this.asked.lock().unwrap().push(req.into_parts().0);
            Ok(response)
        })
    }
}

fn response(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        r.headers_mut().append(
            header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

struct Fixture {
    cache: Cache,
    clock: Arc<FakeClock>,
    _dir: tempfile::TempDir,
}

async fn fixture(slice_size: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let limits = StoreLimits {
        disk_budget: 64 << 20,
        memory_budget: 16 << 20,
    };
    let store = Store::open(dir.path(), limits).await.unwrap();
    // On a whole second, as HTTP dates are: ages then come out exact.
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let clock = Arc::new(FakeClock(StdMutex::new(start)));
    let cache = Cache::with_clock(
        store,
        PolicyConfig {
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86400),
        },
        CacheLimits {
            slice_size,
            slice_read_ahead: 0,
            max_ranges: 16,
            max_object_size: 1 << 30,
            memory_object_max: 1 << 20,
            pass_memory: Duration::from_secs(60),
        },
        CacheCounters::default(),
        clock.clone(),
    );
    Fixture {
        cache,
        clock,
        _dir: dir,
    }
}

/// A GET of `path` through the cache, with the request headers `extra`: status, the
/// Cache-Status entry and the body.
async fn get(
    f: &Fixture,
    upstream: &Arc<FakeUpstream>,
    path: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut headers = HeaderMap::new();
    for (n, v) in extra {
        headers.insert(
            header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let budget = ReadBudget::unlimited();
    let lookup = Lookup {
        method: &Method::GET,
        headers: &headers,
        scheme: None,
        host: "t.test",
        budget: &budget,
        path_and_query: path,
    };
    let origin_req = || {
        let mut parts = Request::get(path).body(()).unwrap().into_parts().0;
        parts.headers = headers.clone();
        parts
    };
    let served = f
        .cache
        .serve(&lookup, &origin_req, Arc::new(upstream.clone()))
        .await;
    let status = served.response.status();
    let body = served
        .response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        served.status.render("c"),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn concurrent_misses_share_one_upstream_request() {
    let f = fixture(1 << 20).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let upstream = Arc::new(FakeUpstream {
        asked: StdMutex::default(),
        answer: Box::new(|_| response(200, &[("cache-control", "max-age=60")], "one")),
        gate: Some(gate.clone()),
    });
    let waiting = futures_util::future::join_all((0..10).map(|_| get(&f, &upstream, "/a", &[])));
    let release = async {
        // Every request is queued on the flight before the upstream answers.
        tokio::task::yield_now().await;
        gate.add_permits(1);
    };
    let (answers, ()) = tokio::join!(waiting, release);
    assert!(answers.iter().all(|(s, _, b)| *s == 200 && b == "one"));
    assert_eq!(upstream.asked().len(), 1);
    assert!(answers.iter().any(|(_, cs, _)| cs.contains("fwd=uri-miss")));
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let f = fixture(1 << 20).await;
    let upstream = FakeUpstream::new(|req| match req.headers().get("if-none-match") {
        Some(_) => response(
            304,
            &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
            "",
        ),
        None => response(
            200,
            &[("etag", "\"v1\""), ("cache-control", "max-age=60")],
            "body",
        ),
    });
    assert_eq!(get(&f, &upstream, "/r", &[]).await.2, "body");
    let (_, cs, _) = get(&f, &upstream, "/r", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    f.clock.advance(Duration::from_secs(61));
    let (status, cs, body) = get(&f, &upstream, "/r", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "body"), "{cs}");
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    let asked = upstream.asked();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].headers["if-none-match"], "\"v1\"");
    // Refreshed: fresh again for 60 s from now.
    let (_, cs, _) = get(&f, &upstream, "/r", &[]).await;
    assert!(cs.contains("hit") && cs.contains("ttl=60"), "{cs}");
}

#[tokio::test]
async fn stale_while_revalidate_serves_stale_and_refreshes_behind() {
    let f = fixture(1 << 20).await;
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    let upstream = FakeUpstream::new(move |_| {
        let body = match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => "old",
            _ => "new",
        };
        response(
            200,
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            body,
        )
    });
    assert_eq!(get(&f, &upstream, "/s", &[]).await.2, "old");
    f.clock.advance(Duration::from_secs(20));
    let (_, cs, body) = get(&f, &upstream, "/s", &[]).await;
    assert_eq!(body, "old", "served stale at once: {cs}");
    assert!(cs.contains("hit"), "{cs}");
    // The background revalidation lands; then the new version is served.
    for _ in 0..100 {
        if upstream.asked().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(upstream.asked().len(), 2);
    let mut last = String::new();
    for _ in 0..100 {
        last = get(&f, &upstream, "/s", &[]).await.2;
        if last == "new" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(last, "new");
    // Past the stale window, no stale answer: a request waits for the origin.
    f.clock.advance(Duration::from_secs(200));
    let (_, cs, _) = get(&f, &upstream, "/s", &[]).await;
    assert!(cs.contains("fwd=stale"), "{cs}");
}

#[tokio::test]
async fn a_range_of_an_unknown_object_fetches_one_slice() {
    const SLICE: usize = 1024;
    let f = fixture(SLICE).await;
    let data: &'static str = Box::leak("0123456789".repeat(500).into_boxed_str());
    let upstream = FakeUpstream::new(move |req| {
        let range = req.headers()["range"].to_str().unwrap().to_owned();
        let (a, b) = range
            .trim_start_matches("bytes=")
            .split_once('-')
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        let b = b.min(data.len() - 1);
        let content_range = format!("bytes {a}-{b}/{}", data.len());
        response(
            206,
            &[
                ("etag", "\"s1\""),
                ("cache-control", "max-age=60"),
                ("content-range", &content_range),
            ],
            &data[a..=b],
        )
    });
    let (status, cs, body) = get(&f, &upstream, "/big", &[("range", "bytes=2050-2059")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{cs}");
    assert_eq!(body, &data[2050..2060]);
    let asked = upstream.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].headers["range"], "bytes=2048-3071",
        "the slice it falls in"
    );
    // Another range in the same slice is a hit; one in the next slice fetches that slice.
    let (_, cs, body) = get(&f, &upstream, "/big", &[("range", "bytes=3000-3009")]).await;
    assert_eq!(body, &data[3000..3010]);
    assert!(cs.contains("hit"), "{cs}");
    get(&f, &upstream, "/big", &[("range", "bytes=3100-3109")]).await;
    let asked = upstream.asked();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].headers["range"], "bytes=3072-4095");
}

fn url(path: &str) -> store::Scope {
    store::Scope::Urls(vec![format!("t.test{path}")])
}

#[tokio::test]
async fn a_purge_fences_a_fetch_under_way_and_a_later_request_starts_its_own() {
    let f = fixture(1 << 20).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    let upstream = Arc::new(FakeUpstream {
        asked: StdMutex::default(),
        answer: Box::new(move |_| {
            let v = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let body: &'static str = if v == 1 { "v1" } else { "v2" };
            response(200, &[("cache-control", "max-age=60")], body)
        }),
        gate: Some(gate.clone()),
    });
    let before = get(&f, &upstream, "/a", &[]);
    let purge = async {
        // Once the first request's flight has asked the origin (the test runtime has one
        // thread: the flight's task runs to the gate while this one yields).
        while f.cache.inner.flights.is_empty() {
            tokio::task::yield_now().await;
        }
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let purged = f.cache.purge(url("/a"), control::Mode::Hard, 0).await;
        assert_eq!(purged.fenced, 1);
        gate.add_permits(1);
    };
    let ((_, _, body), ()) = tokio::join!(before, purge);
    assert_eq!(
        body, "v1",
        "the request from before the purge still gets its answer"
    );
    // Arrived after the purge: its own fetch, not the old one; v1 was not stored.
    gate.add_permits(1);
    let (_, cs, body) = get(&f, &upstream, "/a", &[]).await;
    assert_eq!(body, "v2", "{cs}");
    assert!(cs.contains("fwd=uri-miss"), "v1 was not stored: {cs}");
    let (_, cs, body) = get(&f, &upstream, "/a", &[]).await;
    assert!(cs.contains("hit") && body == "v2", "{cs}");
    assert_eq!(upstream.asked().len(), 2);
}

#[tokio::test]
async fn soft_purge_revalidates_and_keeps_stale_while_revalidate() {
    let f = fixture(1 << 20).await;
    let upstream = FakeUpstream::new(|req| {
        let cc = if req.uri().path() == "/swr" {
            "max-age=600, stale-while-revalidate=30"
        } else {
            "max-age=600"
        };
        match req.headers().get("if-none-match") {
            Some(_) => response(304, &[("etag", "\"v1\""), ("cache-control", cc)], ""),
            None => response(200, &[("etag", "\"v1\""), ("cache-control", cc)], "body"),
        }
    });
    get(&f, &upstream, "/s", &[]).await;
    get(&f, &upstream, "/swr", &[]).await;
    let purged = f
        .cache
        .purge(
            store::Scope::Prefixes(vec!["t.test/".into()]),
            control::Mode::Soft,
            0,
        )
        .await;
    assert_eq!(purged.objects, 2);
    let (status, cs, body) = get(&f, &upstream, "/s", &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "body"));
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    assert_eq!(upstream.asked()[2].headers["if-none-match"], "\"v1\"");
    // The 304 answered the purge: fresh again.
    let (_, cs, _) = get(&f, &upstream, "/s", &[]).await;
    assert!(cs.contains("hit") && cs.contains("ttl=600"), "{cs}");
    // Within its stale-while-revalidate window, a soft-purged entry is served stale at once
    // while it revalidates behind.
    f.clock.advance(Duration::from_secs(5));
    let (_, cs, _) = get(&f, &upstream, "/swr", &[]).await;
    assert!(cs.contains("stale-while-revalidate"), "{cs}");
}

#[tokio::test]
async fn tags_come_from_the_response_and_a_suspect_cache_revalidates_every_hit() {
    let f = fixture(1 << 20).await;
    let upstream = FakeUpstream::new(|req| {
        let tag = if req.uri().path() == "/t" {
            "t1 shared"
        } else {
            "t2, shared"
        };
        match req.headers().get("if-none-match") {
            Some(_) => response(
                304,
                &[("etag", "\"v1\""), ("cache-control", "max-age=600")],
                "",
            ),
            None => response(
                200,
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=600"),
                    ("surrogate-key", tag),
                ],
                "body",
            ),
        }
    });
    get(&f, &upstream, "/t", &[]).await;
    get(&f, &upstream, "/u", &[]).await;
    let purged = f
        .cache
        .purge(store::Scope::Tag("t1".into()), control::Mode::Hard, 0)
        .await;
    assert_eq!(purged.objects, 1);
    let (_, cs, _) = get(&f, &upstream, "/u", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    let (_, cs, _) = get(&f, &upstream, "/t", &[]).await;
    assert!(cs.contains("fwd=uri-miss"), "{cs}");
    f.cache.set_suspect(true);
    let (_, cs, _) = get(&f, &upstream, "/u", &[]).await;
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=304"),
        "{cs}"
    );
    f.cache.set_suspect(false);
    let (_, cs, _) = get(&f, &upstream, "/u", &[]).await;
    assert!(cs.contains("hit"), "{cs}");
    let purged = f
        .cache
        .purge(store::Scope::Tag("shared".into()), control::Mode::Hard, 0)
        .await;
    assert_eq!(purged.objects, 2);
}

#[tokio::test]
async fn a_url_purge_forgets_its_hit_for_pass_mark() {
    let f = fixture(1 << 20).await;
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = n.clone();
    let upstream = FakeUpstream::new(move |_| {
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 | 1 => response(200, &[("cache-control", "no-store")], "private"),
            _ => response(200, &[("cache-control", "max-age=60")], "public"),
        }
    });
    get(&f, &upstream, "/p", &[]).await;
    let (_, cs, _) = get(&f, &upstream, "/p", &[]).await;
    assert!(cs.contains("hit-for-pass"), "{cs}");
    f.cache.purge(url("/p"), control::Mode::Hard, 0).await;
    let (_, cs, body) = get(&f, &upstream, "/p", &[]).await;
    assert!(cs.contains("stored") && body == "public", "{cs}");
}
