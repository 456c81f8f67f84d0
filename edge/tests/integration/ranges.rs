//! Range requests (RFC 9110 14) and sliced storage of large objects.

use std::time::Duration;

use bytesize::ByteSize;
use futures_util::future::join_all;
use http::{Method, Request};
use http_body_util::Full;

use crate::support::client::Resp;
use crate::support::edge::{Proto, TestEdge};
use crate::support::origin::{Reply, TestOrigin, pattern_check};

const SLICE: u64 = 64 * 1024;

/// An edge with 64 KiB slices, so small test objects are sliced.
/// Slices shared by http and https (`scheme = "shared"`), so that one entry serves every
/// protocol these tests loop over.
async fn sliced_edge(origin: &TestOrigin) -> TestEdge {
    TestEdge::start_with(&origin.url(), |c| {
        c.cache.slice_size = ByteSize::b(SLICE);
        c.sites[0].scheme = edge::config::SchemePolicy::Shared;
    })
    .await
}

fn ranged(len: u64, etag: &str) -> Reply {
    Reply::generated(len)
        .header("accept-ranges", "bytes")
        .header("etag", etag)
        .header("cache-control", "max-age=600")
}

fn assert_pattern(r: &Resp, offset: u64) {
    if let Err(at) = pattern_check(offset, &r.body) {
        panic!("wrong byte at offset {at}");
    }
}

/// The origin's `Range` request headers for a path, in order.
fn origin_ranges(origin: &TestOrigin, path: &str) -> Vec<String> {
    origin
        .requests(path)
        .iter()
        .map(|r| r.header("range").unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_form_from_a_cached_object() {
    for proto in Proto::ALL {
        let origin = TestOrigin::start().await;
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        origin.route(
            "/r",
            Reply::ok(body.clone())
                .header("etag", "\"r1\"")
                .header("content-type", "text/plain")
                .header("cache-control", "max-age=600"),
        );
        let edge = TestEdge::start(&origin.url()).await;
        let c = edge.client(proto);
        let url = edge.url(proto, "/r");
        let full = c.get(&url).await;
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        let get = async |range: &str| c.get_with(&url, &[("range", range)]).await;

        let r = get("bytes=0-9").await;
        assert_eq!(
            (r.status.as_u16(), r.header("content-range")),
            (206, Some("bytes 0-9/100000"))
        );
        assert_eq!(&r.body[..], &body[..10]);
        let r = get("bytes=99990-").await;
        assert_eq!(r.header("content-range"), Some("bytes 99990-99999/100000"));
        assert_eq!(&r.body[..], &body[99_990..]);
        let r = get("bytes=-5").await;
        assert_eq!(&r.body[..], &body[99_995..]);
        let r = get("bytes=0-999999").await;
        assert_eq!(
            r.header("content-range"),
            Some("bytes 0-99999/100000"),
            "clipped"
        );

        let r = get("bytes=100000-").await;
        assert_eq!(r.status, 416, "{proto:?}");
        assert_eq!(r.header("content-range"), Some("bytes */100000"));
        let r = get("bytes=5-1").await;
        assert_eq!(
            (r.status.as_u16(), r.body.len()),
            (200, 100_000),
            "invalid → whole"
        );

        let r = get("bytes=0-1, 50000-50003").await;
        assert_eq!(r.status, 206);
        let ct = r.header("content-type").unwrap().to_owned();
        let boundary = ct
            .strip_prefix("multipart/byteranges; boundary=")
            .expect(&ct);
        let expected = [
            format!("--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/100000\r\n\r\n").into_bytes(),
            body[..2].to_vec(),
            format!("\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 50000-50003/100000\r\n\r\n").into_bytes(),
            body[50_000..50_004].to_vec(),
            format!("\r\n--{boundary}--\r\n").into_bytes(),
        ]
        .concat();
        assert_eq!(
            r.body.to_vec(),
            expected,
            "{proto:?}: multipart byte for byte"
        );
        assert_eq!(
            r.header("content-length"),
            Some(expected.len().to_string().as_str())
        );

        let r = c
            .get_with(&url, &[("range", "bytes=0-9"), ("if-range", "\"r1\"")])
            .await;
        assert_eq!(r.status, 206, "If-Range with the current strong ETag");
        let r = c
            .get_with(&url, &[("range", "bytes=0-9"), ("if-range", "\"old\"")])
            .await;
        assert_eq!(
            (r.status.as_u16(), r.body.len()),
            (200, 100_000),
            "stale If-Range → whole"
        );
        let head = Request::builder()
            .method(Method::HEAD)
            .uri(&url)
            .header("range", "bytes=0-9")
            .body(Full::default())
            .unwrap();
        let r = c.send(head).await.unwrap();
        assert_eq!(
            (r.status.as_u16(), r.body.len()),
            (200, 0),
            "HEAD ignores Range"
        );
        assert_eq!(origin.hits("/r"), 1, "{proto:?}: all from cache");
        edge.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_miss_fetches_only_the_slices_it_touches() {
    let origin = TestOrigin::start().await;
    origin.route("/big", ranged(1 << 20, "\"b1\""));
    let edge = sliced_edge(&origin).await;
    for (i, proto) in [Proto::H1, Proto::H2, Proto::H3].into_iter().enumerate() {
        let c = edge.client(proto);
        let url = edge.url(proto, "/big");
        let r = c.get_with(&url, &[("range", "bytes=300000-300099")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some("bytes 300000-300099/1048576")
        );
        assert_pattern(&r, 300_000);
        assert_eq!(
            origin.hits("/big"),
            1,
            "{proto:?}: slice 4 once, then from cache ({i})"
        );
    }
    assert_eq!(origin_ranges(&origin, "/big"), ["bytes=262144-327679"]);
    assert!(origin.bytes_sent("/big") <= SLICE);
    // Slices 4..=6: 4 is cached, 5 and 6 are fetched.
    let c = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, "/big");
    let r = c.get_with(&url, &[("range", "bytes=300000-400000")]).await;
    assert_eq!(r.body.len(), 100_001);
    assert_pattern(&r, 300_000);
    assert_eq!(
        origin_ranges(&origin, "/big")[1..],
        ["bytes=327680-393215", "bytes=393216-458751"]
    );
    // The whole object: the 13 missing slices are fetched, the 3 cached ones are not.
    let (head, len) = c.get_streaming(&url, |_| {}).await.unwrap();
    assert_eq!((head.status.as_u16(), len), (200, 1 << 20));
    assert_eq!(origin.hits("/big"), 16);
    let again = c.get(&url).await;
    assert_pattern(&again, 0);
    assert_eq!(origin.hits("/big"), 16, "every slice is cached now");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_miss_of_a_large_object_is_stored_as_slices() {
    let origin = TestOrigin::start().await;
    origin.route("/whole", ranged(10 * SLICE + 123, "\"w1\""));
    let edge = sliced_edge(&origin).await;
    let c = edge.client(Proto::H2);
    let url = edge.url(Proto::H2, "/whole");
    let full = c.get(&url).await;
    assert_eq!(full.body.len() as u64, 10 * SLICE + 123);
    assert_pattern(&full, 0);
    let r = c.get_with(&url, &[("range", "bytes=655300-655400")]).await;
    assert_eq!(
        r.header("content-range"),
        Some("bytes 655300-655400/655483")
    );
    assert_pattern(&r, 655_300);
    assert_eq!(origin.hits("/whole"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_of_two_versions_are_never_mixed() {
    let origin = TestOrigin::start().await;
    origin.route("/obj", ranged(8 * SLICE, "\"v1\""));
    let edge = sliced_edge(&origin).await;
    let c = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, "/obj");
    let old = c.get_with(&url, &[("range", "bytes=0-99")]).await;
    assert_pattern(&old, 0);
    // The origin object changes (same length, new ETag, other bytes).
    origin.route(
        "/obj",
        Reply::ok(vec![0xAAu8; 8 * SLICE as usize])
            .header("accept-ranges", "bytes")
            .header("etag", "\"v2\"")
            .header("cache-control", "max-age=600"),
    );
    let new = c.get_with(&url, &[("range", "bytes=200000-200099")]).await;
    assert_eq!(new.status, 206);
    assert!(
        new.body.iter().all(|b| *b == 0xAA),
        "only the new version's bytes"
    );
    // The old slice 0 was dropped with its object: the start is the new version too.
    let start = c.get_with(&url, &[("range", "bytes=0-99")]).await;
    assert!(
        start.body.iter().all(|b| *b == 0xAA),
        "no old slice survives"
    );
    let all = c.get(&url).await;
    assert_eq!(all.body.len() as u64, 8 * SLICE);
    assert!(
        all.body.iter().all(|b| *b == 0xAA),
        "a whole read is one version"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_ignores_range_is_streamed_into_slices() {
    let origin = TestOrigin::start().await;
    // No Accept-Ranges: the test origin answers every request with the whole 200.
    origin.route(
        "/norange",
        Reply::generated(8 * SLICE)
            .header("etag", "\"n1\"")
            .header("cache-control", "max-age=600"),
    );
    let edge = sliced_edge(&origin).await;
    let c = edge.client(Proto::H2);
    let url = edge.url(Proto::H2, "/norange");
    let r = c.get_with(&url, &[("range", "bytes=100000-100099")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 100000-100099/524288")
    );
    assert_pattern(&r, 100_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.get_with(&url, &[("range", "bytes=400000-400099")]).await;
    assert_pattern(&r, 400_000);
    assert_eq!(
        origin.hits("/norange"),
        1,
        "the one full response filled every slice"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_one_slice_make_one_origin_request() {
    let origin = TestOrigin::start().await;
    origin.route("/co", ranged(16 * SLICE, "\"c1\""));
    let edge = sliced_edge(&origin).await;
    let c = edge.client(Proto::H2);
    let url = edge.url(Proto::H2, "/co");
    // Unknown object: 20 range misses share the discovery request.
    let rs = join_all((0..20).map(|_| c.get_with(&url, &[("range", "bytes=70000-70099")]))).await;
    rs.iter().for_each(|r| assert_pattern(r, 70_000));
    assert_eq!(origin.hits("/co"), 1);
    // Known object, uncached slice 9: 20 readers, one slice request.
    let rs = join_all((0..20).map(|_| c.get_with(&url, &[("range", "bytes=600000-600099")]))).await;
    rs.iter().for_each(|r| assert_pattern(r, 600_000));
    assert_eq!(origin.hits("/co"), 2);
    assert_eq!(origin_ranges(&origin, "/co")[1], "bytes=589824-655359");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_stops_the_slice_fetching() {
    let origin = TestOrigin::start().await;
    let len = 4 << 20;
    origin.route("/movie", ranged(len, "\"m1\""));
    let edge = sliced_edge(&origin).await;
    let c = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, "/movie");
    // A player reads the start of `bytes=0-` and aborts, as ffmpeg does on every seek.
    let mut got = 0u64;
    let _ = c
        .get_streaming_with(&url, &[("range", "bytes=0-")], |d| {
            got += d.len() as u64;
            got < 100_000
        })
        .await;
    let after_abort = origin.bytes_sent("/movie");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = origin.bytes_sent("/movie");
    eprintln!("client read {got} B; origin sent {after_abort} B, then {later} B");
    assert!(got > 0);
    assert!(
        later < len / 2,
        "the edge must not pull the whole object: {later} B"
    );
    // Every slice that was fetched was stored whole: reading them again costs nothing.
    let hits = origin.hits("/movie");
    let fetched = hits as u64 * SLICE;
    let r = c
        .get_with(&url, &[("range", &format!("bytes=0-{}", fetched - 1))])
        .await;
    assert_pattern(&r, 0);
    assert_eq!(origin.hits("/movie"), hits);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_fetches_the_next_slices_when_enabled() {
    let origin = TestOrigin::start().await;
    origin.route("/seq", ranged(16 * SLICE, "\"s1\""));
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.cache.slice_size = ByteSize::b(SLICE);
        c.cache.slice_read_ahead = 2;
    })
    .await;
    let c = edge.client(Proto::H1);
    let url = edge.url(Proto::H1, "/seq");
    // Slice 1 is discovered; reading it starts slices 2 and 3 in the background.
    let r = c.get_with(&url, &[("range", "bytes=70000-70099")]).await;
    assert_pattern(&r, 70_000);
    for _ in 0..50 {
        if origin.hits("/seq") >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ranges = origin_ranges(&origin, "/seq");
    ranges.sort();
    assert_eq!(
        ranges,
        [
            "bytes=131072-196607",
            "bytes=196608-262143",
            "bytes=65536-131071"
        ]
    );
    let r = c.get_with(&url, &[("range", "bytes=131072-262143")]).await;
    assert_pattern(&r, 131_072);
    // Slices 2 and 3 came from the cache (read-ahead moves on to 4 and 5 meanwhile).
    let ranges = origin_ranges(&origin, "/seq");
    for slice in ["bytes=131072-196607", "bytes=196608-262143"] {
        let fetched = ranges.iter().filter(|r| *r == slice).count();
        assert_eq!(fetched, 1, "{slice} fetched once: {ranges:?}");
    }
    edge.stop().await;
}
