//! `edge::fuzzing::range`: Range / If-Range evaluation, Content-Range parsing, multipart plans
//! and slice arithmetic.
//!
//! Input: a first line of numbers `total max_ranges max_overlaps slice_size seed method`, then
//! the request's header lines, an empty line, the stored response's header lines.
#![no_main]

use edge::fuzzing::range::{
    self, ByteRange, Multipart, RangeAnswer, RangeLimits, evaluate, evaluate_request,
    parse_content_range,
};
use http::Method;
use http::header::{self, HeaderValue};
use libfuzzer_sys::fuzz_target;
use quicdn_fuzz::{first_line, headers, numbers, sections};

fuzz_target!(|data: &[u8]| {
    let (line, rest) = first_line(data);
    let n = numbers(line, 6);
    // Small totals find the edge cases; huge ones the overflow ones: take both.
    let total = n[0];
    let limits = RangeLimits {
        // As from config (`cache.max_ranges`), bounded so a plan stays small.
        max_ranges: (n[1] % 65) as usize,
        max_overlaps: (n[2] % 65) as usize,
    };
    let slice_size = n[3];
    let seed = n[4];
    let method = match n[5] % 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        _ => Method::POST,
    };
    let parts = sections(rest, 2);
    let req = headers(parts[0]);
    let stored = headers(parts[1]);

    // The plain evaluation of every Range line, one at a time.
    for value in req.get_all(header::RANGE) {
        let answer = evaluate(Some(value), total, limits);
        check_answer(&answer, total, limits);
        plan(&answer, total, &stored, seed, slice_size);
    }
    assert_eq!(evaluate(None, total, limits), RangeAnswer::Full);

    // The whole request decision.
    let answer = evaluate_request(&method, &req, &stored, total, limits);
    check_answer(&answer, total, limits);
    if method != Method::GET {
        assert_eq!(answer, RangeAnswer::Full, "non-GET got {answer:?}");
    }
    if answer != RangeAnswer::Full {
        // Only a GET whose If-Range allows it and whose Range is on one line gets here, and
        // then the answer is exactly `evaluate`'s.
        assert!(range::if_range_allows(&req, &stored));
        let lines: Vec<_> = req.get_all(header::RANGE).iter().collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(evaluate(Some(lines[0]), total, limits), answer);
    }
    plan(&answer, total, &stored, seed, slice_size);

    // Content-Range parsing of whatever the stored response (an origin's 206) carries, and of
    // the request's Range values (garbage for this parser).
    for value in stored
        .get_all(header::CONTENT_RANGE)
        .iter()
        .chain(req.get_all(header::RANGE).iter())
    {
        if let Some((r, complete)) = parse_content_range(value) {
            assert!(r.start < r.end, "{value:?} parsed to empty {r:?}");
            if let Some(t) = complete {
                assert!(r.end <= t, "{value:?}: {r:?} beyond {t}");
                let again = HeaderValue::from_str(&r.content_range(t)).unwrap();
                assert_eq!(parse_content_range(&again), Some((r, Some(t))));
            }
        }
    }
    let unsatisfied = range::unsatisfied_range(total);
    assert_eq!(
        parse_content_range(&HeaderValue::from_str(&unsatisfied).unwrap()),
        None
    );
});

/// Every returned range lies inside the representation, is non-empty, and a multi-range
/// answer is coalesced (no two ranges closer than the 80-byte gap) and within the limits.
fn check_answer(answer: &RangeAnswer, total: u64, limits: RangeLimits) {
    let inside = |r: &ByteRange| {
        assert!(r.start < r.end, "empty range {r:?} in {answer:?}");
        assert!(r.end <= total, "range {r:?} beyond total {total}");
        assert_eq!(r.len(), r.end - r.start);
        assert!(!r.is_empty());
    };
    match answer {
        RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
        RangeAnswer::Single(r) => inside(r),
        RangeAnswer::Multi(ranges) => {
            assert!(ranges.len() >= 2, "Multi with {} ranges", ranges.len());
            assert!(
                ranges.len() <= limits.max_ranges,
                "{answer:?} over the limit"
            );
            ranges.iter().for_each(inside);
            let mut sorted = ranges.clone();
            sorted.sort_by_key(|r| r.start);
            for pair in sorted.windows(2) {
                assert!(
                    pair[1].start >= pair[0].end.saturating_add(80),
                    "not coalesced: {pair:?}"
                );
            }
        }
    }
}

/// What the cache builds from an answer: Content-Range values, a multipart plan, the slices.
fn plan(answer: &RangeAnswer, total: u64, stored: &http::HeaderMap, seed: u64, slice_size: u64) {
    let ranges: Vec<ByteRange> = match answer {
        RangeAnswer::Single(r) => vec![*r],
        RangeAnswer::Multi(v) => v.clone(),
        RangeAnswer::Full | RangeAnswer::Unsatisfiable => return,
    };
    for r in &ranges {
        // What we send must parse back as exactly this range (an edge in front of an edge).
        let value = HeaderValue::from_str(&r.content_range(total)).unwrap();
        assert_eq!(parse_content_range(&value), Some((*r, Some(total))));

        let (first, last) = range::slices_touched(*r, slice_size);
        assert!(first <= last);
        if slice_size > 0 {
            let a = range::slice_range(first, slice_size, total);
            let b = range::slice_range(last, slice_size, total);
            assert!(a.start <= r.start && r.start < a.end, "{r:?}: first {a:?}");
            assert!(b.start < r.end && r.end <= b.end, "{r:?}: last {b:?}");
        }
    }
    if ranges.len() > 1 {
        let ct = stored
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mp = Multipart::new(&ranges, total, ct, seed);
        assert!((1..=70).contains(&mp.boundary.len()));
        // Saturating, as body_len is: the ranges of a huge representation may sum past u64.
        let blocks = mp
            .parts
            .iter()
            .map(|(b, r)| (b.len() as u64).saturating_add(r.len()))
            .fold(mp.closing.len() as u64, u64::saturating_add);
        assert_eq!(mp.body_len(), blocks);
        assert_eq!(mp.parts.len(), ranges.len());
        assert!(HeaderValue::from_str(&mp.content_type()).is_ok());
    }
}
