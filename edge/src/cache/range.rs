//! HTTP range requests (RFC 9110 14) answered from stored representations of known length.
//!
//! Parsing `Range` (14.1, 14.2), `If-Range` (13.1.5) and response `Content-Range` (14.4),
//! planning single (15.3.7) and multipart/byteranges (14.6) 206 answers and 416s (15.5.17), and
//! the arithmetic of fixed-size slices. No I/O and no clock. Malformed input never panics: an
//! unusable `Range` is ignored (the full representation is served), an unusable `If-Range`
//! likewise.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// RFC 9110 14.2 lets a server coalesce ranges separated by a gap smaller than the overhead of
/// sending another part; a multipart part header is about this long.
const COALESCE_GAP: u64 = 80;

/// Length of a generated multipart boundary (RFC 2046 5.1.1 allows 1 to 70 characters).
const BOUNDARY_LEN: usize = 32;

const BOUNDARY_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A satisfiable byte range, inclusive start, exclusive end (end > start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// `bytes START-END/TOTAL` for Content-Range (END inclusive, RFC 9110 14.4).
    pub fn content_range(&self, total: u64) -> String {
        format!(
            "bytes {}-{}/{total}",
            self.start,
            self.end.saturating_sub(1)
        )
    }
}

/// Limits against abusive Range headers (RFC 9110 14.2 and 17.15: many small or overlapping
/// ranges can cost the server far more than the client).
#[derive(Debug, Clone, Copy)]
pub struct RangeLimits {
    /// Most range-specs a Range header may list (satisfiable or not).
    pub max_ranges: usize,
    /// Most satisfiable ranges that may overlap another range of the same request; RFC 9110
    /// 14.2 names "more than two overlapping ranges" as a sign of abuse.
    pub max_overlaps: usize,
}

impl Default for RangeLimits {
    fn default() -> Self {
        Self {
            max_ranges: 16,
            max_overlaps: 2,
        }
    }
}

/// What to answer a request's Range header with, for a representation of `total` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No Range header, not a GET, unit other than "bytes", a syntactically invalid header
    /// (RFC 9110 14.2: ignore it), or an abusive one (too many ranges / too many overlaps):
    /// serve the whole representation with 200.
    Full,
    /// One range: 206 with Content-Range.
    Single(ByteRange),
    /// Several ranges: 206 multipart/byteranges, in request order, after overlapping or
    /// nearly adjacent ranges (gap < 80 bytes) were coalesced (RFC 9110 14.2); a request that
    /// coalesces to one range is answered [`RangeAnswer::Single`].
    Multi(Vec<ByteRange>),
    /// No range is satisfiable: 416 with `Content-Range: bytes */TOTAL`.
    Unsatisfiable,
}

/// One range-spec of a `bytes` range-set (RFC 9110 14.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    Int(u64, Option<u64>),
    /// `-length`.
    Suffix(u64),
}

impl Spec {
    /// The bytes selected from a `total`-byte representation; `None` when unsatisfiable
    /// (RFC 9110 14.1.1: an int-range whose first-pos is at or past the end, or a zero-length
    /// suffix). `last` beyond the end and suffixes longer than the representation are clipped.
    fn resolve(self, total: u64) -> Option<ByteRange> {
        match self {
            Self::Int(first, last) => {
                if first >= total {
                    return None;
                }
                let last = last.map_or(total - 1, |last| last.min(total - 1));
                Some(ByteRange {
                    start: first,
                    end: last + 1,
                })
            }
            Self::Suffix(length) => (length > 0 && total > 0).then(|| ByteRange {
                start: total - length.min(total),
                end: total,
            }),
        }
    }
}

/// Parses `Range` for a GET of a `total`-byte representation. Forms: `bytes=a-b`, `bytes=a-`,
/// `bytes=-n` (suffix; -0 is unsatisfiable), lists separated by commas with optional
/// whitespace, unit name case-insensitive. `a-b` with b >= total is clipped to total-1. a > b
/// makes the whole header invalid (→ Full). A range with a >= total is unsatisfiable; if ALL
/// are unsatisfiable → Unsatisfiable, else the unsatisfiable ones are dropped. Numbers that
/// overflow u64 → invalid → Full.
///
/// For `total == 0` every int-range and `-0` are unsatisfiable; a non-zero suffix-range is
/// satisfiable there (RFC 9110 14.1.1) but no Content-Range can describe zero bytes, so a
/// header holding one is ignored (→ Full, an empty 200).
///
/// The caller checks the method and that Range occurs on one line; [`evaluate_request`] does
/// all of it.
pub fn evaluate(range: Option<&HeaderValue>, total: u64, limits: RangeLimits) -> RangeAnswer {
    let Some(value) = range else {
        return RangeAnswer::Full;
    };
    let Some(specs) = parse_range(value.as_bytes(), limits.max_ranges) else {
        return RangeAnswer::Full;
    };
    let ranges: Vec<ByteRange> = specs.iter().filter_map(|s| s.resolve(total)).collect();
    if ranges.is_empty() {
        let empty_but_satisfiable =
            total == 0 && specs.iter().any(|s| matches!(s, Spec::Suffix(n) if *n > 0));
        return if empty_but_satisfiable {
            RangeAnswer::Full
        } else {
            RangeAnswer::Unsatisfiable
        };
    }
    if overlapping(&ranges) > limits.max_overlaps {
        return RangeAnswer::Full;
    }
    let merged = coalesce(&ranges);
    if let [one] = merged[..] {
        return RangeAnswer::Single(one);
    }
    RangeAnswer::Multi(merged)
}

/// The whole decision for a request against a stored representation of `total` bytes: only a
/// GET's Range is honoured (RFC 9110 14.2), a Range on several lines is invalid (it is not a
/// list-based field that may be split, 5.3), a failing If-Range means "send it all" (13.1.5);
/// then [`evaluate`].
pub fn evaluate_request(
    method: &Method,
    req: &HeaderMap,
    stored: &HeaderMap,
    total: u64,
    limits: RangeLimits,
) -> RangeAnswer {
    if method != Method::GET || !if_range_allows(req, stored) {
        return RangeAnswer::Full;
    }
    match one_line(req, &header::RANGE) {
        Some(range) => evaluate(Some(range), total, limits),
        None => RangeAnswer::Full,
    }
}

/// The range-specs of a `bytes` ranges-specifier (RFC 9110 14.1.2); `None` when the header is
/// invalid, of another unit, empty, or lists more than `max` specs.
fn parse_range(value: &[u8], max: usize) -> Option<Vec<Spec>> {
    let mut halves = trim_ows(value).splitn(2, |&b| b == b'=');
    let (Some(unit), Some(set)) = (halves.next(), halves.next()) else {
        return None;
    };
    // RFC 9110 14.1: range units are compared case-insensitively.
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(|&b| b == b',') {
        let element = trim_ows(element);
        // RFC 9110 5.6.1: empty list elements are ignored, but 1#range-spec needs one.
        if element.is_empty() {
            continue;
        }
        if specs.len() == max {
            return None;
        }
        specs.push(parse_spec(element)?);
    }
    (!specs.is_empty()).then_some(specs)
}

/// `first-pos "-" [ last-pos ]` or `"-" suffix-length` (RFC 9110 14.1.2). An int-range whose
/// last-pos is below its first-pos is invalid (14.1.1), which invalidates the whole header.
fn parse_spec(spec: &[u8]) -> Option<Spec> {
    let mut halves = spec.splitn(2, |&b| b == b'-');
    let (Some(first), Some(last)) = (halves.next(), halves.next()) else {
        return None;
    };
    if first.is_empty() {
        return digits(last).map(Spec::Suffix);
    }
    let first = digits(first)?;
    if last.is_empty() {
        return Some(Spec::Int(first, None));
    }
    let last = digits(last)?;
    (first <= last).then_some(Spec::Int(first, Some(last)))
}

/// `1*DIGIT` as a u64; `None` on anything else or on overflow (RFC 9110 14.1.1 warns that
/// large numerals must not cause conversion errors).
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// How many ranges overlap (share a byte with) at least one other range. Sorted by start, a
/// range overlaps an earlier one exactly when it starts before the furthest end seen in its
/// chain, so every member of a chain of two or more overlaps some other member.
fn overlapping(ranges: &[ByteRange]) -> usize {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable_by_key(|r| r.start);
    let mut count = 0;
    let mut chain = 0;
    let mut reach = 0;
    for r in sorted {
        if chain > 0 && r.start < reach {
            chain += 1;
            reach = reach.max(r.end);
        } else {
            if chain > 1 {
                count += chain;
            }
            chain = 1;
            reach = r.end;
        }
    }
    if chain > 1 {
        count += chain;
    }
    count
}

/// Merges overlapping ranges and those less than [`COALESCE_GAP`] apart (RFC 9110 14.2), then
/// orders the results by the earliest request position among their members: 14.6 wants parts
/// in request order.
fn coalesce(ranges: &[ByteRange]) -> Vec<ByteRange> {
    let mut by_start: Vec<(ByteRange, usize)> = ranges.iter().copied().zip(0..).collect();
    by_start.sort_unstable_by_key(|&(r, position)| (r.start, position));
    let mut groups: Vec<(ByteRange, usize)> = Vec::with_capacity(by_start.len());
    for (r, position) in by_start {
        match groups.last_mut() {
            Some((group, first)) if r.start < group.end.saturating_add(COALESCE_GAP) => {
                group.end = group.end.max(r.end);
                *first = (*first).min(position);
            }
            _ => groups.push((r, position)),
        }
    }
    groups.sort_unstable_by_key(|&(_, first)| first);
    groups.into_iter().map(|(r, _)| r).collect()
}

/// RFC 9110 13.1.5: If-Range. Returns true when the Range header may be honoured: no If-Range
/// header → true. If-Range with an entity-tag: true only if it is a strong tag (not W/) that
/// equals the stored ETag, which must also be strong (strong comparison, 8.8.3.2). If-Range
/// with an HTTP-date: true only if the stored Last-Modified is present, parses, equals the date
/// exactly, and is a strong validator, which (8.8.2.2) requires the stored Date to be at least
/// one second after Last-Modified (a missing Date makes it weak → false). An unparsable or
/// repeated If-Range → false (serve the full representation).
pub fn if_range_allows(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if !req.contains_key(header::IF_RANGE) {
        return true;
    }
    let Some(condition) = one_line(req, &header::IF_RANGE) else {
        return false;
    };
    let condition = trim_ows(condition.as_bytes());
    // 13.1.5: an entity-tag is told from an HTTP-date by its first characters (DQUOTE or W/).
    if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
        let Some(tag) = strong_tag(condition) else {
            return false;
        };
        one_line(stored, &header::ETAG)
            .and_then(|etag| strong_tag(trim_ows(etag.as_bytes())))
            .is_some_and(|etag| etag == tag)
    } else {
        let Some(date) = parse_date(condition) else {
            return false;
        };
        let modified =
            one_line(stored, &header::LAST_MODIFIED).and_then(|v| parse_date(v.as_bytes()));
        let sent = one_line(stored, &header::DATE).and_then(|v| parse_date(v.as_bytes()));
        let (Some(modified), Some(sent)) = (modified, sent) else {
            return false;
        };
        modified == date
            && modified
                .checked_add(Duration::from_secs(1))
                .is_some_and(|strong_from| sent >= strong_from)
    }
}

/// The opaque-tag of a strong entity-tag (RFC 9110 8.8.3: DQUOTE *etagc DQUOTE); `None` for a
/// weak or malformed one.
fn strong_tag(tag: &[u8]) -> Option<&[u8]> {
    let inner = tag.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    inner
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        .then_some(tag)
}

fn parse_date(value: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(trim_ows(value)).ok()?).ok()
}

/// The field's value when it occurs on exactly one line; `None` when absent or repeated.
fn one_line<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut lines = headers.get_all(name).iter();
    match (lines.next(), lines.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Strips optional whitespace (RFC 9110 5.6.3: SP and HTAB).
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A multipart/byteranges body plan (RFC 9110 14.6): the boundary, and per part the header
/// block to send before the part's data; plus the closing delimiter. The total length is
/// known up front so the response can carry Content-Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub boundary: String,
    /// (part header block, range). The first block is `--BOUNDARY\r\n…\r\n\r\n`, later ones
    /// start with `\r\n--BOUNDARY\r\n` (RFC 2046 5.1.1: the CRLF before a delimiter belongs to
    /// it). A block holds `Content-Type: CT\r\n` (when known) and `Content-Range: bytes a-b/T\r\n`.
    pub parts: Vec<(Bytes, ByteRange)>,
    /// `\r\n--BOUNDARY--\r\n`.
    pub closing: Bytes,
}

impl Multipart {
    /// `content_type` of the representation (None → omit that line in part headers). `seed`
    /// makes the boundary unique per response (e.g. a counter or time-derived value); the
    /// boundary is 32 characters of [0-9a-zA-Z] derived from the seed alone, so the content
    /// cannot predict it.
    pub fn new(ranges: &[ByteRange], total: u64, content_type: Option<&str>, seed: u64) -> Self {
        Self::with_boundary(boundary(seed), ranges, total, content_type)
    }

    /// As [`Multipart::new`] with a given boundary, which must be 1 to 70 characters of RFC
    /// 2046 `bchars` and occur in no part's data.
    pub fn with_boundary(
        boundary: String,
        ranges: &[ByteRange],
        total: u64,
        content_type: Option<&str>,
    ) -> Self {
        // A Content-Type with control characters (CR, LF) would let it forge part headers;
        // HeaderValue::to_str never yields one, so dropping the line only guards misuse.
        let content_type =
            content_type.filter(|ct| ct.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)));
        let parts = ranges
            .iter()
            .enumerate()
            .map(|(i, range)| {
                let lead = if i == 0 { "" } else { "\r\n" };
                let mut block = format!("{lead}--{boundary}\r\n");
                if let Some(ct) = content_type {
                    block.push_str("Content-Type: ");
                    block.push_str(ct);
                    block.push_str("\r\n");
                }
                block.push_str("Content-Range: ");
                block.push_str(&range.content_range(total));
                block.push_str("\r\n\r\n");
                (Bytes::from(block), *range)
            })
            .collect::<Vec<_>>();
        let lead = if parts.is_empty() { "" } else { "\r\n" };
        let closing = Bytes::from(format!("{lead}--{boundary}--\r\n"));
        Self {
            boundary,
            parts,
            closing,
        }
    }

    /// Content-Type header value for the response: `multipart/byteranges; boundary=...`.
    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }

    /// Total body length: all part headers + data + closing.
    pub fn body_len(&self) -> u64 {
        self.parts
            .iter()
            .map(|(block, range)| (block.len() as u64).saturating_add(range.len()))
            .fold(self.closing.len() as u64, u64::saturating_add)
    }
}

/// [`BOUNDARY_LEN`] alphanumerics from a SplitMix64 stream over `seed`: distinct seeds give
/// unrelated boundaries, so consecutive counter values do not yield similar ones.
fn boundary(seed: u64) -> String {
    let mut state = seed;
    let mut out = String::with_capacity(BOUNDARY_LEN);
    while out.len() < BOUNDARY_LEN {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 62^8 < 2^64, so eight digits per word are all well mixed.
        for _ in 0..8 {
            out.push(char::from(BOUNDARY_ALPHABET[(z % 62) as usize]));
            z /= 62;
        }
    }
    out
}

/// `bytes */TOTAL` for a 416 (RFC 9110 14.4, 15.5.17).
pub fn unsatisfied_range(total: u64) -> String {
    format!("bytes */{total}")
}

/// The slice indices [first, last] (inclusive) that bytes [range.start, range.end) touch, for
/// fixed slices of `slice_size` bytes (slice i covers i*size .. (i+1)*size). A `slice_size` of
/// zero is taken as one; an empty range touches the slice holding its start.
pub fn slices_touched(range: ByteRange, slice_size: u64) -> (u64, u64) {
    let size = slice_size.max(1);
    let last_byte = range.end.saturating_sub(1).max(range.start);
    (range.start / size, last_byte / size)
}

/// The byte range of slice `index` in a representation of `total` bytes (last slice shorter).
/// A slice past the end, or a `slice_size` of zero, gives an empty range.
pub fn slice_range(index: u64, slice_size: u64, total: u64) -> ByteRange {
    let start = index.saturating_mul(slice_size).min(total);
    ByteRange {
        start,
        end: start.saturating_add(slice_size).min(total),
    }
}

/// Parses a response `Content-Range: bytes a-b/T` → (ByteRange{a, b+1}, Some(T)), or
/// `bytes a-b/*` → (range, None); `bytes */T` → None. Invalid → None, including b < a and
/// T <= b (RFC 9110 14.4).
pub fn parse_content_range(value: &HeaderValue) -> Option<(ByteRange, Option<u64>)> {
    let mut halves = trim_ows(value.as_bytes()).splitn(2, |&b| b == b' ');
    let (Some(unit), Some(resp)) = (halves.next(), halves.next()) else {
        return None;
    };
    if !unit.eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut halves = trim_ows(resp).splitn(2, |&b| b == b'/');
    let (Some(range), Some(complete)) = (halves.next(), halves.next()) else {
        return None;
    };
    let complete = match complete {
        b"*" => None,
        length => Some(digits(length)?),
    };
    let mut halves = range.splitn(2, |&b| b == b'-');
    let (Some(first), Some(last)) = (halves.next(), halves.next()) else {
        return None;
    };
    let (first, last) = (digits(first)?, digits(last)?);
    if last < first || complete.is_some_and(|length| length <= last) {
        return None;
    }
    let range = ByteRange {
        start: first,
        end: last.checked_add(1)?,
    };
    Some((range, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const T0: u64 = 1_700_000_000;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    /// The HTTP-date of T0 + `offset` seconds.
    fn date(offset: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(T0 + offset))
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
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), hv(&value));
        }
        map
    }

    /// `bytes=` followed by `n` ranges of 10 bytes, 100 bytes apart.
    fn spaced(n: u64) -> String {
        let specs: Vec<String> = (0..n)
            .map(|i| format!("{}-{}", i * 100, i * 100 + 9))
            .collect();
        format!("bytes={}", specs.join(","))
    }

    #[test]
    fn evaluate_forms() {
        use RangeAnswer::{Full, Multi, Single, Unsatisfiable};
        let max = u64::MAX;
        let big = "18446744073709551616"; // u64::MAX + 1
        #[rustfmt::skip]
        let cases: Vec<(String, u64, RangeAnswer)> = vec![
            // a-b, a-, -n
            ("bytes=0-499".into(),           1000, Single(r(0, 500))),
            ("bytes=0-0".into(),             1000, Single(r(0, 1))),
            ("bytes=500-".into(),            1000, Single(r(500, 1000))),
            ("bytes=999-".into(),            1000, Single(r(999, 1000))),
            ("bytes=0-".into(),              1000, Single(r(0, 1000))),
            ("bytes=-200".into(),            1000, Single(r(800, 1000))),
            ("bytes=-1000".into(),           1000, Single(r(0, 1000))),
            ("bytes=-2000".into(),           1000, Single(r(0, 1000))),
            ("bytes=007-009".into(),         1000, Single(r(7, 10))),
            // -0 is unsatisfiable
            ("bytes=-0".into(),              1000, Unsatisfiable),
            // last-pos at or beyond the end is clipped
            ("bytes=990-999".into(),         1000, Single(r(990, 1000))),
            ("bytes=990-1000".into(),        1000, Single(r(990, 1000))),
            ("bytes=990-5000".into(),        1000, Single(r(990, 1000))),
            (format!("bytes=0-{max}"),       1000, Single(r(0, 1000))),
            // a > b invalidates the whole header
            ("bytes=500-499".into(),         1000, Full),
            ("bytes=0-9,20-5".into(),        1000, Full),
            ("bytes=2000-1000".into(),       1000, Full),
            // a >= total
            ("bytes=1000-".into(),           1000, Unsatisfiable),
            ("bytes=1000-1000".into(),       1000, Unsatisfiable),
            ("bytes=5000-6000,1000-".into(), 1000, Unsatisfiable),
            ("bytes=1000-,-0".into(),        1000, Unsatisfiable),
            // mixed: unsatisfiable ones are dropped
            ("bytes=0-9,2000-3000".into(),   1000, Single(r(0, 10))),
            ("bytes=2000-,-0,0-9".into(),    1000, Single(r(0, 10))),
            ("bytes=2000-,0-9,500-509".into(), 1000, Multi(vec![r(0, 10), r(500, 510)])),
            // whitespace around list elements
            ("bytes=0-9, 500-509".into(),    1000, Multi(vec![r(0, 10), r(500, 510)])),
            ("bytes= 0-9 ,\t500-509 ".into(), 1000, Multi(vec![r(0, 10), r(500, 510)])),
            ("  bytes=0-9".into(),           1000, Single(r(0, 10))),
            // unit case
            ("BYTES=0-9".into(),             1000, Single(r(0, 10))),
            ("Bytes=0-9".into(),             1000, Single(r(0, 10))),
            // other units and garbage
            ("items=0-9".into(),             1000, Full),
            ("byte=0-9".into(),              1000, Full),
            ("bytes 0-9".into(),             1000, Full),
            ("bytes =0-9".into(),            1000, Full),
            ("=0-9".into(),                  1000, Full),
            ("0-9".into(),                   1000, Full),
            ("bytes=abc".into(),             1000, Full),
            ("bytes=0-9x".into(),            1000, Full),
            ("bytes=0-9,x".into(),           1000, Full),
            ("bytes=0 - 9".into(),           1000, Full),
            ("bytes=+0-9".into(),            1000, Full),
            ("bytes=--5".into(),             1000, Full),
            ("bytes=0--5".into(),            1000, Full),
            ("bytes=0-5-".into(),            1000, Full),
            ("bytes=-".into(),               1000, Full),
            ("bytes=-5-".into(),             1000, Full),
            ("bytes=0-9;x".into(),           1000, Full),
            ("bytes=0=9".into(),             1000, Full),
            // overflow
            (format!("bytes={big}-"),        1000, Full),
            (format!("bytes=0-{big}"),       1000, Full),
            (format!("bytes=-{big}"),        1000, Full),
            (format!("bytes=-{max}"),        1000, Single(r(0, 1000))),
            // empty list (empty elements alone do not make a range-set)
            ("bytes=".into(),                1000, Full),
            ("bytes=,".into(),               1000, Full),
            ("bytes= , ,".into(),            1000, Full),
            ("bytes=,0-9,,".into(),          1000, Single(r(0, 10))),
            ("".into(),                      1000, Full),
            // too many ranges (the limit counts range-specs, satisfiable or not)
            (spaced(16),                     2000, Multi((0..16).map(|i| r(i * 100, i * 100 + 10)).collect())),
            (spaced(17),                     2000, Full),
            (format!("{},5000-", spaced(16)), 2000, Full),
            // overlaps: two may overlap, a third is abuse
            ("bytes=0-99,50-149".into(),     1000, Single(r(0, 150))),
            ("bytes=0-99,50-149,60-69".into(), 1000, Full),
            ("bytes=0-9,0-9,0-9".into(),     1000, Full),
            ("bytes=0-9,500-599,550-649,900-909,905-999".into(), 1000, Full),
            ("bytes=-500,0-".into(),         1000, Single(r(0, 1000))),
            // coalescing: adjacent, gap < 80, gap of 80, request order
            ("bytes=0-9,10-19".into(),       1000, Single(r(0, 20))),
            ("bytes=10-19,0-9".into(),       1000, Single(r(0, 20))),
            ("bytes=0-9,89-99".into(),       1000, Single(r(0, 100))),
            ("bytes=0-9,90-99".into(),       1000, Multi(vec![r(0, 10), r(90, 100)])),
            ("bytes=500-599,0-9,100-109".into(), 1000, Multi(vec![r(500, 600), r(0, 10), r(100, 110)])),
            ("bytes=900-909,0-9,905-,500-509".into(), 1000, Multi(vec![r(900, 1000), r(0, 10), r(500, 510)])),
            ("bytes=300-309,0-9,200-209,50-59".into(), 1000, Multi(vec![r(300, 310), r(0, 60), r(200, 210)])),
            ("bytes=0-9,50-59,120-129".into(), 1000, Single(r(0, 130))),
            ("bytes=-10,0-9".into(),         1000, Multi(vec![r(990, 1000), r(0, 10)])),
            // total == 0
            ("bytes=0-".into(),              0, Unsatisfiable),
            ("bytes=0-0".into(),             0, Unsatisfiable),
            ("bytes=0-99".into(),            0, Unsatisfiable),
            ("bytes=-0".into(),              0, Unsatisfiable),
            ("bytes=-5".into(),              0, Full),
            ("bytes=0-,-5".into(),           0, Full),
            ("bytes=5-1".into(),             0, Full),
            ("items=0-".into(),              0, Full),
            ("bytes=x".into(),               0, Full),
            // total == 1
            ("bytes=0-0".into(),             1, Single(r(0, 1))),
            ("bytes=-1".into(),              1, Single(r(0, 1))),
            ("bytes=1-".into(),              1, Unsatisfiable),
        ];
        for (value, total, want) in cases {
            let value = HeaderValue::from_str(&value).unwrap();
            let got = evaluate(Some(&value), total, RangeLimits::default());
            assert_eq!(got, want, "Range: {value:?}, total {total}");
        }
        assert_eq!(evaluate(None, 1000, RangeLimits::default()), Full);
        let non_utf8 = HeaderValue::from_bytes(b"bytes=0-9\xff").unwrap();
        assert_eq!(
            evaluate(Some(&non_utf8), 1000, RangeLimits::default()),
            Full
        );
    }

    #[test]
    fn evaluate_custom_limits() {
        use RangeAnswer::{Full, Multi};
        let limits = |max_ranges, max_overlaps| RangeLimits {
            max_ranges,
            max_overlaps,
        };
        #[rustfmt::skip]
        let cases = [
            ("bytes=0-9",                0, 0, Full),
            ("bytes=0-9,500-509",        1, 2, Full),
            ("bytes=0-9,500-509",        2, 0, Multi(vec![r(0, 10), r(500, 510)])),
            ("bytes=0-9,5-9",            2, 1, Full),
            ("bytes=0-99,50-59,60-69",   3, 3, RangeAnswer::Single(r(0, 100))),
        ];
        for (value, max_ranges, max_overlaps, want) in cases {
            let got = evaluate(Some(&hv(value)), 1000, limits(max_ranges, max_overlaps));
            assert_eq!(
                got, want,
                "Range: {value}, limits {max_ranges}/{max_overlaps}"
            );
        }
    }

    #[test]
    fn evaluate_request_rules() {
        use RangeAnswer::{Full, Single};
        let stored = h("etag: \"v1\" | last-modified: @0 | date: @10");
        #[rustfmt::skip]
        let cases = [
            (Method::GET,  "range: bytes=0-9",                        Single(r(0, 10))),
            (Method::GET,  "",                                        Full),
            (Method::HEAD, "range: bytes=0-9",                        Full),
            (Method::POST, "range: bytes=0-9",                        Full),
            // several Range lines are invalid, even if each alone is fine
            (Method::GET,  "range: bytes=0-9 | range: bytes=20-29",   Full),
            (Method::GET,  "range: bytes=0-9 | if-range: \"v1\"",     Single(r(0, 10))),
            (Method::GET,  "range: bytes=0-9 | if-range: \"v2\"",     Full),
            (Method::GET,  "range: bytes=0-9 | if-range: @0",         Single(r(0, 10))),
            (Method::GET,  "range: bytes=0-9 | if-range: @1",         Full),
            (Method::GET,  "range: bytes=5000- | if-range: \"v1\"",   RangeAnswer::Unsatisfiable),
        ];
        for (method, req, want) in cases {
            let got = evaluate_request(&method, &h(req), &stored, 1000, RangeLimits::default());
            assert_eq!(got, want, "{method} {req}");
        }
    }

    #[test]
    fn if_range() {
        #[rustfmt::skip]
        let cases = [
            // no If-Range
            ("",                                  "etag: \"v1\"",                              true),
            ("",                                  "",                                          true),
            // entity-tags: strong comparison only
            ("if-range: \"v1\"",                  "etag: \"v1\"",                              true),
            ("if-range:  \"v1\" ",                "etag: \"v1\"",                              true),
            ("if-range: \"\"",                    "etag: \"\"",                                true),
            ("if-range: W/\"v1\"",                "etag: \"v1\"",                              false),
            ("if-range: W/\"v1\"",                "etag: W/\"v1\"",                            false),
            ("if-range: \"v1\"",                  "etag: W/\"v1\"",                            false),
            ("if-range: \"v1\"",                  "etag: \"v2\"",                              false),
            ("if-range: \"v1\"",                  "etag: \"V1\"",                              false),
            ("if-range: \"v1\"",                  "",                                          false),
            ("if-range: \"v1\"",                  "last-modified: @0 | date: @10",             false),
            ("if-range: \"v1\"",                  "etag: v1",                                  false),
            ("if-range: \"v1",                    "etag: \"v1\"",                              false),
            ("if-range: \"v\"1\"",                "etag: \"v\"1\"",                            false),
            ("if-range: \"v1\", \"v2\"",          "etag: \"v1\"",                              false),
            ("if-range: \"v1\" | if-range: \"v1\"", "etag: \"v1\"",                            false),
            // dates: exact match with a strong Last-Modified (Date at least 1 s later)
            ("if-range: @0",                      "last-modified: @0 | date: @1",              true),
            ("if-range: @0",                      "last-modified: @0 | date: @3600",           true),
            ("if-range: @0",                      "etag: \"v1\" | last-modified: @0 | date: @1", true),
            ("if-range: @0",                      "last-modified: @0 | date: @0",              false),
            ("if-range: @0",                      "last-modified: @0",                         false),
            ("if-range: @0",                      "last-modified: @0 | date: nonsense",        false),
            ("if-range: @0",                      "last-modified: @1 | date: @10",             false),
            ("if-range: @1",                      "last-modified: @0 | date: @10",             false),
            ("if-range: @0",                      "date: @10",                                 false),
            ("if-range: @0",                      "last-modified: nonsense | date: @10",       false),
            ("if-range: @0",                      "etag: \"v1\"",                              false),
            // garbage
            ("if-range: nonsense",                "etag: \"v1\" | last-modified: @0 | date: @10", false),
            ("if-range: v1",                      "etag: v1",                                  false),
            ("if-range: ",                        "etag: \"v1\"",                              false),
            ("if-range: *",                       "etag: \"v1\"",                              false),
        ];
        for (req, stored, want) in cases {
            assert_eq!(
                if_range_allows(&h(req), &h(stored)),
                want,
                "{req} against {stored}"
            );
        }
        // Other HTTP-date formats name the same instant (RFC 9110 5.6.7).
        let rfc850 = h("if-range: Tuesday, 14-Nov-23 22:13:20 GMT");
        assert!(if_range_allows(&rfc850, &h("last-modified: @0 | date: @1")));
    }

    #[test]
    fn multipart_exact_body() {
        let data = b"0123456789";
        let ranges = [r(0, 3), r(7, 10)];
        let plan = Multipart::with_boundary("BOUNDARY".into(), &ranges, 10, Some("text/plain"));
        let mut body = Vec::new();
        for (block, range) in &plan.parts {
            body.extend_from_slice(block);
            body.extend_from_slice(&data[range.start as usize..range.end as usize]);
        }
        body.extend_from_slice(&plan.closing);
        let want = "--BOUNDARY\r\n\
                    Content-Type: text/plain\r\n\
                    Content-Range: bytes 0-2/10\r\n\
                    \r\n\
                    012\r\n\
                    --BOUNDARY\r\n\
                    Content-Type: text/plain\r\n\
                    Content-Range: bytes 7-9/10\r\n\
                    \r\n\
                    789\r\n\
                    --BOUNDARY--\r\n";
        assert_eq!(String::from_utf8(body.clone()).unwrap(), want);
        assert_eq!(plan.body_len(), body.len() as u64);
        assert_eq!(
            plan.content_type(),
            "multipart/byteranges; boundary=BOUNDARY"
        );
        assert_eq!(plan.parts.iter().map(|p| p.1).collect::<Vec<_>>(), ranges);
    }

    #[test]
    fn multipart_without_content_type() {
        let ranges = [r(0, 1), r(5, 6)];
        for content_type in [None, Some("text/plain\r\nX-Evil: 1")] {
            let plan = Multipart::with_boundary("b".into(), &ranges, 6, content_type);
            assert_eq!(
                &plan.parts[0].0[..],
                b"--b\r\nContent-Range: bytes 0-0/6\r\n\r\n"
            );
            assert_eq!(
                &plan.parts[1].0[..],
                b"\r\n--b\r\nContent-Range: bytes 5-5/6\r\n\r\n"
            );
            assert_eq!(&plan.closing[..], b"\r\n--b--\r\n");
            assert_eq!(plan.body_len(), 35 + 1 + 37 + 1 + 9);
        }
    }

    #[test]
    fn multipart_boundaries() {
        let ranges = [r(0, 10), r(100, 110)];
        let a = Multipart::new(&ranges, 200, Some("text/html"), 1);
        let b = Multipart::new(&ranges, 200, Some("text/html"), 2);
        let again = Multipart::new(&ranges, 200, Some("text/html"), 1);
        for plan in [&a, &b] {
            assert!(
                (20..=40).contains(&plan.boundary.len()),
                "{}",
                plan.boundary
            );
            assert!(plan.boundary.bytes().all(|c| c.is_ascii_alphanumeric()));
            assert!(
                plan.parts[0]
                    .0
                    .starts_with(format!("--{}\r\n", plan.boundary).as_bytes())
            );
        }
        assert_ne!(a.boundary, b.boundary);
        assert_eq!(a, again);
        let zero = Multipart::new(&ranges, 200, None, 0);
        assert_eq!(zero.boundary.len(), BOUNDARY_LEN);
        assert_ne!(zero.boundary, "0".repeat(BOUNDARY_LEN));
    }

    #[test]
    fn byte_range_formatting() {
        assert_eq!(r(0, 500).len(), 500);
        assert!(!r(0, 500).is_empty());
        assert!(r(5, 5).is_empty());
        assert_eq!(r(0, 500).content_range(1000), "bytes 0-499/1000");
        assert_eq!(r(999, 1000).content_range(1000), "bytes 999-999/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
        assert_eq!(unsatisfied_range(0), "bytes */0");
    }

    #[test]
    fn slices() {
        #[rustfmt::skip]
        let touched = [
            (r(0, 1),       100, (0, 0)),
            (r(0, 100),     100, (0, 0)),
            (r(0, 101),     100, (0, 1)),
            (r(99, 101),    100, (0, 1)),
            (r(100, 200),   100, (1, 1)),
            (r(150, 950),   100, (1, 9)),
            (r(950, 1000),  100, (9, 9)),
            (r(7, 7),       100, (0, 0)),
            (r(5, 10),      0,   (5, 9)),
        ];
        for (range, size, want) in touched {
            assert_eq!(slices_touched(range, size), want, "{range:?} / {size}");
        }
        #[rustfmt::skip]
        let ranges = [
            (0,  100, 1050, r(0, 100)),
            (1,  100, 1050, r(100, 200)),
            (9,  100, 1050, r(900, 1000)),
            (10, 100, 1050, r(1000, 1050)),
            (11, 100, 1050, r(1050, 1050)),
            (9,  100, 1000, r(900, 1000)),
            (10, 100, 1000, r(1000, 1000)),
            (0,  100, 30,   r(0, 30)),
            (u64::MAX, u64::MAX, 1000, r(1000, 1000)),
            (3,  0,   1000, r(0, 0)),
        ];
        for (index, size, total, want) in ranges {
            assert_eq!(
                slice_range(index, size, total),
                want,
                "slice {index} of {size} in {total}"
            );
        }
        // Every byte of a range lies in the slices it touches.
        let total = 1050;
        let (first, last) = slices_touched(r(150, 1050), 100);
        assert_eq!(slice_range(first, 100, total).start, 100);
        assert_eq!(slice_range(last, 100, total).end, 1050);
    }

    type Parsed = Option<(ByteRange, Option<u64>)>;

    #[test]
    fn content_range_forms() {
        let max = u64::MAX;
        #[rustfmt::skip]
        let cases: Vec<(String, Parsed)> = vec![
            ("bytes 0-499/1000".into(),     Some((r(0, 500), Some(1000)))),
            ("bytes 999-999/1000".into(),   Some((r(999, 1000), Some(1000)))),
            ("bytes 0-0/1".into(),          Some((r(0, 1), Some(1)))),
            ("bytes 0-499/*".into(),        Some((r(0, 500), None))),
            ("BYTES 0-499/1000".into(),     Some((r(0, 500), Some(1000)))),
            (" bytes 0-499/1000 ".into(),   Some((r(0, 500), Some(1000)))),
            ("bytes */1000".into(),         None),
            ("bytes */*".into(),            None),
            ("bytes 500-499/1000".into(),   None),
            ("bytes 0-1000/1000".into(),    None),
            ("bytes 0-499/499".into(),      None),
            ("bytes 0-499".into(),          None),
            ("bytes 0-/1000".into(),        None),
            ("bytes -499/1000".into(),      None),
            ("bytes=0-499/1000".into(),     None),
            ("items 0-499/1000".into(),     None),
            ("bytes 0-499/1000x".into(),    None),
            ("bytes 0 - 499/1000".into(),   None),
            ("bytes 0-499/-1".into(),       None),
            ("".into(),                     None),
            (format!("bytes 0-{max}/*"),    None),
            ("bytes 0-18446744073709551616/*".into(), None),
            (format!("bytes 0-{}/{max}", max - 1), Some((r(0, max), Some(max)))),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_content_range(&hv(&value)),
                want,
                "Content-Range: {value:?}"
            );
        }
    }
}
