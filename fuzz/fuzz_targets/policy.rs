//! `edge::fuzzing::policy`: Cache-Control, Vary, freshness, age, storability, conditional
//! requests, 304 merging and invalidation, all from header maps; with the cache keys built
//! from the Vary key (`edge::fuzzing::key`) and hop-by-hop stripping (`edge::headers`).
//!
//! Input: a first line of numbers `status request_ms response_ms now_ms fraction_permille
//! heuristic_max_s method`, a second line with the request authority, then three header
//! sections separated by empty lines: the request, the stored response, a 304 response.
#![no_main]

use std::time::Duration;

use edge::fuzzing::key;
use edge::fuzzing::meta::from_millis;
use edge::fuzzing::policy::{
    self, CacheControl, Freshness, PolicyConfig, StoredFacts, Vary, freshness, stored_freshness,
};
use http::header::HeaderName;
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use quicdn_fuzz::{first_line, headers, numbers, sections};

/// RFC 9111 1.2.2 cap the parser applies to every delta-seconds.
const MAX_DELTA: u64 = 1 << 31;

fuzz_target!(|data: &[u8]| {
    let (line, rest) = first_line(data);
    let n = numbers(line, 7);
    let (authority, rest) = first_line(rest);
    let authority = String::from_utf8_lossy(authority);
    let status = StatusCode::from_u16((n[0] % 500 + 100) as u16).unwrap();
    // Times as the cache has them: milliseconds since the epoch from a stored Meta, and now.
    let request_time = from_millis(n[1]);
    let response_time = from_millis(n[2]);
    let now = from_millis(n[3]);
    // As config allows: `cache.heuristic_fraction` is validated to 0..=1.
    let cfg = PolicyConfig {
        heuristic_fraction: (n[4] % 1001) as f64 / 1000.0,
        heuristic_max: Duration::from_secs(n[5]),
    };
    let method = match n[6] % 5 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        3 => Method::DELETE,
        _ => Method::OPTIONS,
    };
    let parts = sections(rest, 3);
    let req = headers(parts[0]);
    let resp = headers(parts[1]);
    let not_modified = headers(parts[2]);

    for h in [&req, &resp, &not_modified] {
        let cc = CacheControl::parse(h);
        for v in [
            cc.max_age,
            cc.s_maxage,
            cc.stale_while_revalidate,
            cc.stale_if_error,
            cc.min_fresh,
            cc.max_stale.flatten(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(v <= MAX_DELTA, "delta-seconds {v} above the cap");
        }
    }

    // Vary: sorted, deduplicated, and the key does not depend on the order of the fields.
    let vary = policy::vary(&resp);
    if let Vary::Fields(fields) = &vary {
        assert!(!fields.is_empty());
        assert!(fields.windows(2).all(|w| w[0].as_str() < w[1].as_str()));
        let key = policy::vary_key(fields, &req);
        let reversed: Vec<HeaderName> = fields.iter().rev().cloned().collect();
        assert_eq!(policy::vary_key(&reversed, &req), key);
        check_keys(&authority, &key, n[1]);
    }
    check_keys(&authority, "", n[2]);

    // Hop-by-hop fields, and every field Connection names, never survive.
    let mut forwarded = resp.clone();
    edge::fuzzing::strip_hop_by_hop(&mut forwarded);
    for name in forwarded.keys() {
        assert!(!edge::fuzzing::is_hop_by_hop(name), "{name} kept");
        for listed in resp.get_all(http::header::CONNECTION) {
            let listed = listed.to_str().unwrap_or("");
            assert!(
                !listed
                    .split(',')
                    .any(|l| l.trim().eq_ignore_ascii_case(name.as_str())),
                "{name} is named by Connection: {listed:?}"
            );
        }
    }

    let facts = StoredFacts::parse(&resp);
    assert_eq!(facts.vary, vary);
    assert_eq!(facts.cc, CacheControl::parse(&resp));
    let (lifetime, heuristic) = facts.lifetime(status, response_time, &cfg);
    if heuristic {
        assert!(lifetime <= cfg.heuristic_max);
    }
    assert_eq!(
        policy::freshness_lifetime(status, &resp, response_time, &cfg),
        (lifetime, heuristic)
    );
    let age = facts.current_age(request_time, response_time, now);
    assert_eq!(
        policy::current_age(&resp, request_time, response_time, now),
        age
    );
    let fresh = freshness(&req, &resp, status, request_time, response_time, now, &cfg);
    assert_eq!(
        stored_freshness(
            &req,
            &facts,
            status,
            (request_time, response_time),
            now,
            &cfg
        ),
        fresh
    );
    match fresh {
        Freshness::Fresh { ttl } => assert!(ttl <= lifetime, "ttl {ttl:?} > lifetime {lifetime:?}"),
        Freshness::Stale { .. } => {}
    }

    let storable = policy::storable(&method, &req, status, &resp);
    if storable.is_ok() {
        assert_eq!(method, Method::GET);
        assert_ne!(vary, Vary::Star);
    }
    if let Err(why) = storable {
        assert!(!why.as_str().is_empty());
    }

    let _ = policy::evaluate_conditional(&method, &req, &resp);
    let validation = policy::validation_headers(&resp);
    assert!(validation.len() <= 2);
    let merged = policy::merge_not_modified(&resp, &not_modified);
    // The stored head's headers that the 304 does not name survive the merge.
    for name in resp.keys() {
        if !not_modified.contains_key(name) {
            assert_eq!(
                merged.get_all(name).iter().count(),
                resp.get_all(name).iter().count()
            );
        }
    }
    let _ = policy::not_modified_matches(&resp, &not_modified);
    let _ = policy::invalidates(&method, status);
    for target in policy::invalidation_targets(&resp, &authority) {
        assert!(target.starts_with('/'), "invalidation target {target:?}");
    }
    let _ = policy::cacheable_method(&method);
    let _ = policy::understood_status(status);
});

/// Cache keys built from a request's authority and a Vary key split back into their parts:
/// the NUL and U+0001 separators cannot occur in an authority or a header value.
fn check_keys(authority: &str, vary_key: &str, index: u64) {
    let Ok(authority) = authority.parse::<http::uri::Authority>() else {
        return;
    };
    for scheme in [None, Some("https")] {
        let primary = key::primary(scheme, authority.host(), "/a/b?c=d");
        let variant = key::variant(&primary, vary_key);
        assert_eq!(key::primary_of(&variant), primary, "{variant:?}");
        assert!(key::is_variant(&variant, &primary, vary_key));
        assert!(!key::is_slice(&variant), "{variant:?}");
        let slice = key::slice(&variant, index);
        assert!(key::is_slice(&slice));
        assert_eq!(key::object_of_slice(&slice), Some(variant.as_str()));
    }
}
