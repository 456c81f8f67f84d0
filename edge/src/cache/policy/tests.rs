//! Table tests of the policy rules, one table per rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::cache_control::MAX_DELTA;
use super::*;
use Conditional::{NotModified, Proceed};

const T0: u64 = 1_700_000_000;

const CFG: PolicyConfig = PolicyConfig {
    heuristic_fraction: 0.1,
    heuristic_max: Duration::from_secs(3600),
};

/// T0 + `offset` seconds.
fn at(offset: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0.checked_add_signed(offset).unwrap())
}

fn date(offset: i64) -> String {
    httpdate::fmt_http_date(at(offset))
}

/// Headers from `"name: value | name: value"`; a value `@N` is the HTTP-date of T0 + N.
fn h(spec: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for field in spec.split(" | ").filter(|f| !f.is_empty()) {
        let (name, value) = field.split_once(':').unwrap();
        let value = value.strip_prefix(' ').unwrap_or(value);
        let value = match value.strip_prefix('@') {
            Some(offset) => date(offset.parse().unwrap()),
            None => value.to_owned(),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        map.append(name, HeaderValue::from_str(&value).unwrap());
    }
    map
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap()
}

fn cc(set: impl FnOnce(&mut CacheControl)) -> CacheControl {
    let mut cc = CacheControl::default();
    set(&mut cc);
    cc
}

fn names(list: &[&str]) -> Vec<HeaderName> {
    list.iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
        .collect()
}

#[test]
fn cache_control_parse() {
    let cases = [
        ("", CacheControl::default()),
        (
            "cache-control: public, max-age=60 \
             | Cache-Control: S-MAXAGE=\"120\", Must-Revalidate",
            cc(|c| {
                c.public = true;
                c.max_age = Some(60);
                c.s_maxage = Some(120);
                c.must_revalidate = true;
            }),
        ),
        (
            "cache-control: max-age=60, max-age=30 | cache-control: max-age=90",
            cc(|c| c.max_age = Some(30)),
        ),
        (
            "cache-control: no-cache=\"set-cookie, x-a\", private=\"x\"",
            cc(|c| {
                c.no_cache = true;
                c.private = true;
            }),
        ),
        // The comma and no-store are inside a quoted string with an escaped quote.
        (
            "cache-control: x-ext=\"a\\\", no-store\"",
            CacheControl::default(),
        ),
        (
            "cache-control: proxy-revalidate,must-understand,no-transform,\
             ,immutable,only-if-cached",
            cc(|c| {
                c.proxy_revalidate = true;
                c.must_understand = true;
                c.no_transform = true;
                c.immutable = true;
                c.only_if_cached = true;
            }),
        ),
        (
            "cache-control: no-store, stale-while-revalidate=30, \
             stale-if-error=600, min-fresh=5",
            cc(|c| {
                c.no_store = true;
                c.stale_while_revalidate = Some(30);
                c.stale_if_error = Some(600);
                c.min_fresh = Some(5);
            }),
        ),
        ("cache-control: max-stale", cc(|c| c.max_stale = Some(None))),
        (
            "cache-control: max-stale, max-stale=20 | cache-control: max-stale=10, max-stale",
            cc(|c| c.max_stale = Some(Some(10))),
        ),
        (
            "cache-control: max-age=abc, public",
            cc(|c| {
                c.public = true;
                c.invalid = true;
            }),
        ),
        ("cache-control: max-age", cc(|c| c.invalid = true)),
        ("cache-control: max-age=-1", cc(|c| c.invalid = true)),
        ("cache-control: max-stale=x", cc(|c| c.invalid = true)),
        (
            "cache-control: max-age=99999999999999999999999",
            cc(|c| c.max_age = Some(MAX_DELTA)),
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(CacheControl::parse(&h(spec)), want, "{spec}");
    }
}

#[test]
fn cache_control_tolerates_non_ascii_bytes() {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_bytes(b"x=\xff\xfe, no-store").unwrap();
    headers.insert(header::CACHE_CONTROL, value);
    assert!(CacheControl::parse(&headers).no_store);
}

#[test]
fn storable_rules() {
    use NotStorable as N;
    let (get, head, post) = (&Method::GET, &Method::HEAD, &Method::POST);
    let unknown = Err(N::MustUnderstandUnknownStatus);
    let auth = "authorization: Bearer x";
    let mu = "cache-control: must-understand, no-store, max-age=60";
    #[rustfmt::skip]
    let cases = [
        (get,  "",   200, "",                                    Ok(())),
        (head, "",   200, "",                                    Err(N::Method)),
        (post, "",   200, "cache-control: max-age=60",           Err(N::Method)),
        (get,  "",   100, "",                                    Err(N::Status)),
        (get,  "",   304, "",                                    Err(N::Status)),
        (get,  "",   206, "",                                    Err(N::PartialContent)),
        (get,  "cache-control: no-store", 200, "",               Err(N::RequestNoStore)),
        (get,  "",   200, "cache-control: no-store, max-age=60", Err(N::NoStore)),
        (get,  "",   200, "cache-control: private, max-age=60",  Err(N::Private)),
        (get,  auth, 200, "cache-control: max-age=60",           Err(N::Authorization)),
        (get,  auth, 200, "cache-control: public",               Ok(())),
        (get,  auth, 200, "cache-control: s-maxage=60",          Ok(())),
        (get,  auth, 200, "cache-control: must-revalidate",      Ok(())),
        (get,  "",   200, "vary: accept | vary: *",              Err(N::VaryStar)),
        (get,  "",   302, "",                                    Err(N::NoFreshnessInfo)),
        (get,  "",   500, "",                                    Err(N::NoFreshnessInfo)),
        (get,  "",   302, "cache-control: max-age=abc",          Err(N::NoFreshnessInfo)),
        (get,  "",   302, "cache-control: max-age=60",           Ok(())),
        (get,  "",   307, "cache-control: s-maxage=60",          Ok(())),
        (get,  "",   303, "cache-control: public",               Ok(())),
        (get,  "",   500, "expires: garbage",                    Ok(())),
        (get,  "",   404, "",                                    Ok(())),
        (get,  "",   200, "set-cookie: a=b",                     Ok(())),
        // must-understand overrides no-store only for a status we understand.
        (get,  "",   200, mu,                                    Ok(())),
        (get,  "",   418, mu,                                    unknown),
        (get,  "",   418, "cache-control: must-understand",      unknown),
        (get,  "",   418, "cache-control: max-age=60",           Ok(())),
    ];
    for (method, req, code, resp, want) in cases {
        let got = storable(method, &h(req), status(code), &h(resp));
        assert_eq!(got, want, "{method} {code} req [{req}] resp [{resp}]");
    }
}

#[test]
fn not_storable_names() {
    let cases = [
        (NotStorable::Method, "method"),
        (NotStorable::Status, "status"),
        (NotStorable::RequestNoStore, "request-no-store"),
        (NotStorable::NoStore, "no-store"),
        (NotStorable::Private, "private"),
        (NotStorable::Authorization, "authorization"),
        (NotStorable::VaryStar, "vary-star"),
        (NotStorable::NoFreshnessInfo, "no-freshness-info"),
        (NotStorable::PartialContent, "partial-content"),
        (NotStorable::MustUnderstandUnknownStatus, "must-understand"),
    ];
    for (reason, name) in cases {
        assert_eq!(reason.as_str(), name);
    }
}

#[test]
fn lifetime_rules() {
    let zero = (Duration::ZERO, false);
    let lm = "date: @0 | last-modified: @-1000";
    #[rustfmt::skip]
    let cases = [
        (200, "cache-control: s-maxage=10, max-age=20 | expires: @30",   (secs(10), false)),
        (200, "cache-control: max-age=20 | date: @0 | expires: @30",     (secs(20), false)),
        (200, "date: @0 | expires: @30",                                 (secs(30), false)),
        // Date missing: response_time stands in.
        (200, "expires: @40",                                            (secs(40), false)),
        (200, "date: @0 | expires: @-30",                                zero),
        (200, "date: @0 | expires: 0 | last-modified: @-1000",           zero),
        (200, "expires: @30 | expires: @60",                             zero),
        (200, "cache-control: max-age=abc, s-maxage=50",                 zero),
        (200, "cache-control: max-age=0",                                zero),
        // Heuristic: 10% of 1000 s, for heuristically cacheable statuses or public.
        (200, lm,                                                        (secs(100), true)),
        (404, lm,                                                        (secs(100), true)),
        (302, lm,                                                        zero),
        (302, "cache-control: public | date: @0 | last-modified: @-1000", (secs(100), true)),
        // Capped at heuristic_max.
        (200, "date: @0 | last-modified: @-1000000",                     (secs(3600), true)),
        // Only with a valid Last-Modified.
        (200, "date: @0",                                                zero),
        (200, "date: @0 | last-modified: yesterday",                     zero),
        // Last-Modified after Date.
        (200, "date: @0 | last-modified: @1000",                         (secs(0), true)),
    ];
    for (code, spec, want) in cases {
        let got = freshness_lifetime(status(code), &h(spec), at(0), &CFG);
        assert_eq!(got, want, "{code} [{spec}]");
    }
}

#[test]
fn heuristic_fraction_edge_values() {
    let headers = h("date: @0 | last-modified: @-1000");
    let cases = [
        (0.0, Duration::ZERO),
        (-1.0, Duration::ZERO),
        (f64::NAN, Duration::ZERO),
        (f64::INFINITY, secs(3600)),
        (0.5, secs(500)),
    ];
    for (fraction, want) in cases {
        let cfg = PolicyConfig {
            heuristic_fraction: fraction,
            ..CFG
        };
        let got = freshness_lifetime(StatusCode::OK, &headers, at(0), &cfg);
        assert_eq!(got, (want, true), "{fraction}");
    }
}

#[test]
fn age_calculation() {
    // (headers, request_time, response_time, now, expected age), times relative to T0.
    #[rustfmt::skip]
    let cases = [
        ("date: @0",             0, 0,    0,   0),
        // Resident time.
        ("date: @0",             0, 0,   25,  25),
        // Age header plus response delay plus resident time.
        ("date: @0 | age: 100", -3, 0,   10, 113),
        // Apparent age exceeds the corrected Age.
        ("date: @-50 | age: 10", -1, 0,   0,  50),
        // Clock skew: a Date after response_time counts as apparent age 0.
        ("date: @500",           0, 0,    5,   5),
        // Missing Date is response_time; invalid Age is 0.
        ("age: soon",           -2, 0,    1,   3),
        ("age: -5",              0, 0,    0,   0),
        // now before response_time saturates.
        ("",                     0, 0, -100,   0),
    ];
    for (spec, req, resp, now, want) in cases {
        let got = current_age(&h(spec), at(req), at(resp), at(now));
        assert_eq!(got, secs(want), "[{spec}] {req} {resp} {now}");
    }
}

fn stale(staleness: u64, while_revalidate: bool, if_error: bool) -> Freshness {
    Freshness::Stale {
        staleness: secs(staleness),
        while_revalidate,
        if_error,
    }
}

fn fresh(ttl: u64) -> Freshness {
    Freshness::Fresh { ttl: secs(ttl) }
}

#[test]
fn freshness_rules() {
    let swr = "max-age=100, stale-while-revalidate=60";
    let sie = "max-age=100, stale-if-error=300";
    let both = "max-age=100, stale-while-revalidate=60, stale-if-error=60";
    let must = &format!("{both}, must-revalidate");
    let proxy = &format!("{both}, proxy-revalidate");
    let no_cache = &format!("no-cache, {swr}");
    let (req_sie, req_no_cache) = (
        "cache-control: stale-if-error=60",
        "cache-control: no-cache",
    );
    let (max_stale, max_stale_50) = ("cache-control: max-stale", "cache-control: max-stale=50");
    // (request headers, response Cache-Control, seconds since the response, expected)
    #[rustfmt::skip]
    let cases = [
        ("", "max-age=100", 40,  fresh(60)),
        ("", "max-age=100", 100, stale(0, false, false)),
        ("", "max-age=100", 130, stale(30, false, false)),
        ("", "max-age=0",   0,   stale(0, false, false)),
        // stale-while-revalidate inside and outside its window.
        ("", swr, 160, stale(60, true, false)),
        ("", swr, 161, stale(61, false, false)),
        // stale-if-error from the response, inside and outside its window.
        ("", sie, 400, stale(300, false, true)),
        ("", sie, 401, stale(301, false, false)),
        ("", both, 130, stale(30, true, true)),
        // must-revalidate / proxy-revalidate disable both.
        ("", must, 130, stale(30, false, false)),
        ("", proxy, 130, stale(30, false, false)),
        (req_sie, "max-age=100, must-revalidate", 130, stale(30, false, false)),
        // s-maxage does not cancel the origin's own stale grants.
        ("", "s-maxage=100, stale-while-revalidate=60", 130, stale(30, true, false)),
        // stale-if-error from the request.
        (req_sie, "max-age=100", 130, stale(30, false, true)),
        ("cache-control: stale-if-error=10", "max-age=100", 130, stale(30, false, false)),
        // A no-cache response is validated on every use, even while fresh; never swr.
        ("", no_cache, 10, stale(0, false, false)),
        ("", "no-cache, max-age=100, stale-if-error=60", 130, stale(30, false, true)),
        // Request no-cache and Pragma force validation; stale-if-error still applies.
        (req_no_cache, swr, 10, stale(0, false, false)),
        (req_no_cache, sie, 10, stale(0, false, true)),
        ("pragma: no-cache", "max-age=100", 10, stale(0, false, false)),
        // Pragma is ignored when the request has Cache-Control.
        ("pragma: no-cache | cache-control: max-stale=5", "max-age=100", 10, fresh(90)),
        // Request max-age.
        ("cache-control: max-age=0",  swr,           10,  stale(0, false, false)),
        ("cache-control: max-age=0",  "max-age=100", 0,   fresh(100)),
        ("cache-control: max-age=20", "max-age=100", 20,  fresh(80)),
        ("cache-control: max-age=20", "max-age=100", 21,  stale(0, false, false)),
        ("cache-control: max-age=20", swr,           130, stale(30, false, false)),
        // A malformed request directive forces validation.
        ("cache-control: max-age=soon", "max-age=100", 10, stale(0, false, false)),
        // min-fresh.
        ("cache-control: min-fresh=30", "max-age=100", 70, fresh(30)),
        ("cache-control: min-fresh=30", "max-age=100", 71, stale(0, false, false)),
        // max-stale, and the response directives that forbid it.
        (max_stale,    "max-age=100",                  10_000, fresh(0)),
        (max_stale_50, "max-age=100",                  150,    fresh(0)),
        (max_stale_50, "max-age=100",                  151,    stale(51, false, false)),
        (max_stale,    "max-age=100, must-revalidate",  150,    stale(50, false, false)),
        (max_stale,    "max-age=100, proxy-revalidate", 150,    stale(50, false, false)),
        (max_stale,    "max-age=100, no-cache",         150,    stale(50, false, false)),
        (max_stale,    "s-maxage=100",                  150,    stale(50, false, false)),
        // An invalid response max-age makes the response stale at once.
        ("", "max-age=abc, stale-while-revalidate=60", 1, stale(1, true, false)),
    ];
    for (req, resp_cc, elapsed, want) in cases {
        let resp = h(&format!("cache-control: {resp_cc} | date: @0"));
        let now = at(elapsed);
        let got = freshness(&h(req), &resp, StatusCode::OK, at(0), at(0), now, &CFG);
        assert_eq!(got, want, "req [{req}] resp [{resp_cc}] after {elapsed}s");
    }
}

#[test]
fn freshness_uses_age_header_and_heuristics() {
    let cases = [
        (
            "cache-control: max-age=100 | age: 90 | date: @0",
            5,
            fresh(5),
        ),
        ("date: @0 | last-modified: @-1000", 40, fresh(60)),
        ("date: @0", 0, stale(0, false, false)),
    ];
    for (spec, elapsed, want) in cases {
        let got = freshness(
            &h(""),
            &h(spec),
            StatusCode::OK,
            at(0),
            at(0),
            at(elapsed),
            &CFG,
        );
        assert_eq!(got, want, "[{spec}]");
    }
}

#[test]
fn vary_parsing() {
    let cases = [
        ("", Vary::None),
        ("vary: ", Vary::None),
        ("vary: *", Vary::Star),
        ("vary: Accept, *", Vary::Star),
        (
            "vary: Accept-Encoding, accept | vary: ACCEPT-ENCODING,Origin",
            Vary::Fields(names(&["accept", "accept-encoding", "origin"])),
        ),
        ("vary: bad name, ,accept", Vary::Fields(names(&["accept"]))),
    ];
    for (spec, want) in cases {
        assert_eq!(vary(&h(spec)), want, "[{spec}]");
    }
}

#[test]
fn vary_keys() {
    let fields = names(&["accept-encoding", "origin"]);
    let key = |spec: &str| vary_key(&fields, &h(spec));
    let req = "accept-encoding: gzip ,br | accept-encoding: zstd | origin: https://a.example";
    assert_eq!(
        key(req),
        "accept-encoding\n=gzip, br, zstd\norigin\n=https://a.example\n"
    );
    // The order of the Vary listing does not matter.
    let reversed = names(&["origin", "accept-encoding", "origin"]);
    assert_eq!(vary_key(&reversed, &h(req)), key(req));
    // A missing header differs from an empty one.
    assert_eq!(key("origin: o"), "accept-encoding\n!\norigin\n=o\n");
    assert_eq!(
        key("accept-encoding: | origin: o"),
        "accept-encoding\n=\norigin\n=o\n"
    );
    // Whitespace around commas is normalised; one line and two lines agree.
    assert_eq!(
        key("accept-encoding: gzip,  br | origin: o"),
        key("accept-encoding: gzip | accept-encoding:  br  | origin: o")
    );
    assert_ne!(key("origin: a"), key("origin: b"));
    // Non-ASCII bytes are escaped, never lost or merged.
    let mut odd = HeaderMap::new();
    odd.insert(header::ORIGIN, HeaderValue::from_bytes(b"a\xff%").unwrap());
    assert_eq!(vary_key(&names(&["origin"]), &odd), "origin\n=a%FF%25\n");
    assert_eq!(vary_key(&[], &h(req)), "");
}

#[test]
fn validators_for_revalidation() {
    let cases = [
        (
            "etag: W/\"v1\" | last-modified: @0 | content-type: text/plain",
            "if-none-match: W/\"v1\" | if-modified-since: @0",
        ),
        ("etag: \"v1\"", "if-none-match: \"v1\""),
        ("last-modified: @-5", "if-modified-since: @-5"),
        ("date: @0", ""),
    ];
    for (stored, want) in cases {
        assert_eq!(validation_headers(&h(stored)), h(want), "[{stored}]");
    }
}

#[test]
fn merge_after_not_modified() {
    let stored = h(
        "content-length: 1234 | content-type: text/html | cache-control: max-age=10 \
         | etag: \"v1\" | x-old: kept | x-multi: a",
    );
    let not_modified = h("content-length: 0 | cache-control: max-age=600 | date: @0 \
         | x-multi: b | x-multi: c | connection: x-hop | x-hop: 1 \
         | transfer-encoding: chunked | content-range: bytes 0-0/1 | keep-alive: timeout=5");
    let want = h(
        "content-length: 1234 | content-type: text/html | cache-control: max-age=600 \
         | etag: \"v1\" | x-old: kept | x-multi: b | x-multi: c | date: @0",
    );
    assert_eq!(merge_not_modified(&stored, &not_modified), want);
}

#[test]
fn not_modified_selection() {
    // (stored headers, 304 headers, matches)
    #[rustfmt::skip]
    let cases = [
        ("etag: \"a\"",   "etag: \"a\"",   true),
        ("etag: \"a\"",   "etag: W/\"a\"", true),
        ("etag: W/\"a\"", "etag: \"a\"",   true),
        ("etag: \"a\"",   "etag: \"b\"",   false),
        ("",              "etag: \"a\"",   false),
        // An ETag decides even when Last-Modified agrees.
        ("etag: \"a\" | last-modified: @0", "etag: \"b\" | last-modified: @0", false),
        ("last-modified: @0",   "last-modified: @0",   true),
        ("last-modified: @0",   "last-modified: @1",   false),
        ("last-modified: junk", "last-modified: junk", true),
        ("",                    "last-modified: @0",   false),
        // Neither validator in the 304: fine unless we hold a strong ETag.
        ("",                  "", true),
        ("etag: W/\"a\"",     "", true),
        ("last-modified: @0", "", true),
        ("etag: \"a\"",       "", false),
    ];
    for (stored, not_modified, want) in cases {
        let got = not_modified_matches(&h(stored), &h(not_modified));
        assert_eq!(got, want, "stored [{stored}] 304 [{not_modified}]");
    }
}

#[test]
fn a_bare_304_to_our_revalidation_selects_what_we_validated() {
    // A 304 with no validator answers the one set of validators the edge sent.
    assert!(not_modified_selects(&h("etag: \"a\""), &h("")));
    assert!(not_modified_selects(
        &h("etag: \"a\""),
        &h("cache-control: max-age=5")
    ));
    assert!(not_modified_selects(&h("etag: \"a\""), &h("etag: \"a\"")));
    // One that names another version selects nothing: the edge fetches again.
    assert!(!not_modified_selects(&h("etag: \"a\""), &h("etag: \"b\"")));
    assert!(!not_modified_selects(
        &h("last-modified: @0"),
        &h("last-modified: @1")
    ));
}

#[test]
fn client_conditionals() {
    let stored = &h("etag: W/\"v1\" | last-modified: @0 | date: @100");
    let untagged = &h("last-modified: @0");
    let dated = &h("date: @0");
    let empty = &h("");
    let (get, head, post, put) = (Method::GET, Method::HEAD, Method::POST, Method::PUT);
    #[rustfmt::skip]
    let cases = [
        (&get,  "",                                             stored, Proceed),
        (&get,  "if-none-match: *",                             stored, NotModified),
        (&get,  "if-none-match: \"v1\"",                        stored, NotModified),
        (&head, "if-none-match: W/\"v1\"",                      stored, NotModified),
        (&get,  "if-none-match: \"x\", \"v1\"",                 stored, NotModified),
        (&get,  "if-none-match: \"x\" | if-none-match: W/\"v1\"", stored, NotModified),
        (&get,  "if-none-match: \"a,b\", \"v2\"",               stored, Proceed),
        (&get,  "if-none-match: \"v2\"",                        stored, Proceed),
        (&post, "if-none-match: *",                             stored, Proceed),
        // If-Modified-Since is ignored when If-None-Match is present.
        (&get,  "if-none-match: \"v2\" | if-modified-since: @0", stored, Proceed),
        (&get,  "if-modified-since: @0",                        stored, NotModified),
        (&get,  "if-modified-since: @1",                        stored, NotModified),
        (&get,  "if-modified-since: @-1",                       stored, Proceed),
        (&get,  "if-modified-since: not a date",                stored, Proceed),
        (&get,  "if-modified-since: @0 | if-modified-since: @0", stored, Proceed),
        (&put,  "if-modified-since: @0",                        stored, Proceed),
        // Without Last-Modified the stored Date stands in.
        (&get,  "if-modified-since: @0",                        dated,  NotModified),
        (&get,  "if-modified-since: @0",                        empty,  Proceed),
        // Without a stored ETag only `*` matches.
        (&get,  "if-none-match: \"v1\"",                        untagged, Proceed),
        (&get,  "if-none-match: *",                             untagged, NotModified),
    ];
    for (method, req, stored, want) in cases {
        let got = evaluate_conditional(method, &h(req), stored);
        assert_eq!(got, want, "{method} [{req}] against {stored:?}");
    }
}

#[test]
fn unsafe_methods_invalidate() {
    let cases = [
        (Method::POST, 200, true),
        (Method::PUT, 204, true),
        (Method::DELETE, 301, true),
        (Method::from_bytes(b"PURGEX").unwrap(), 200, true),
        (Method::PATCH, 404, false),
        (Method::POST, 500, false),
        (Method::POST, 100, false),
        (Method::GET, 200, false),
        (Method::HEAD, 200, false),
        (Method::OPTIONS, 200, false),
        (Method::TRACE, 200, false),
    ];
    for (method, code, want) in cases {
        assert_eq!(invalidates(&method, status(code)), want, "{method} {code}");
    }
}

#[test]
fn invalidation_target_paths() {
    #[rustfmt::skip]
    let cases: [(&str, &[&str]); 11] = [
        ("location: /a/b?x=1",                   &["/a/b?x=1"]),
        ("location: /a#frag",                    &["/a"]),
        ("location: https://CDN.example/c?q",    &["/c?q"]),
        ("content-location: http://cdn.example", &["/"]),
        ("location: https://other.example/c",    &[]),
        ("location: https://cdn.example:8443/c", &[]),
        ("location: //cdn.example/c",            &[]),
        ("location: ftp://cdn.example/c",        &[]),
        ("location: relative/path",              &[]),
        ("location: /a b",                       &[]),
        ("location: /a | content-location: https://cdn.example/b | content-location: /a",
                                                 &["/a", "/b"]),
    ];
    for (spec, want) in cases {
        assert_eq!(
            invalidation_targets(&h(spec), "cdn.example"),
            want,
            "[{spec}]"
        );
    }
}

#[test]
fn cacheable_methods() {
    let cases = [
        (Method::GET, true),
        (Method::HEAD, true),
        (Method::POST, false),
        (Method::OPTIONS, false),
    ];
    for (method, want) in cases {
        assert_eq!(cacheable_method(&method), want, "{method}");
    }
}
