//! Counters shared by the clients, and the report made from them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// How many failure examples are kept of each kind (the counters count them all).
const MAX_FAILURES: usize = 12;
/// How many example messages are kept per error kind.
const MAX_ERROR_SAMPLES: usize = 3;

/// One response whose body or framing was wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// `mismatched` (bytes of another version of the object) or `corrupt` (bytes of no
    /// version, of another object, or a wrong length / range / validator).
    pub kind: &'static str,
    /// What kind of wrong, for counting: e.g. "the next version from a slice boundary to the
    /// end", "wrong Content-Range".
    pub shape: String,
    /// Seconds since the clients started.
    pub at_s: f64,
    pub proto: &'static str,
    pub url: String,
    /// The request's Range / If-Range / If-None-Match, as sent.
    pub request: String,
    pub status: u16,
    pub etag: Option<String>,
    pub content_range: Option<String>,
    pub content_length: Option<String>,
    pub cache_status: Option<String>,
    pub age: Option<String>,
    /// The byte range `[start, end)` of the object the response should have carried.
    pub expected: (u64, u64),
    /// Body bytes received.
    pub received: u64,
    /// Whether the body ended normally (not cut off by an error or by the client).
    pub complete: bool,
    pub first_wrong: Option<u64>,
    pub wrong_bytes: u64,
    /// The `<object>-v<version>` the first wrong bytes belong to.
    pub belongs_to: Option<String>,
    /// Every byte from `first_wrong` on belongs to `belongs_to`.
    pub tail_is_other: bool,
    pub detail: String,
}

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub ok: AtomicU64,
    pub ok_full: AtomicU64,
    pub ok_partial: AtomicU64,
    pub not_modified: AtomicU64,
    pub aborted: AtomicU64,
    /// Range requests answered with the whole object (allowed; If-Range mismatches do it).
    pub range_as_full: AtomicU64,
    pub mismatched: AtomicU64,
    pub corrupt: AtomicU64,
    /// Of `mismatched + corrupt`: in a body that was then cut off (or aborted by the client).
    pub bad_in_incomplete: AtomicU64,
    pub bytes_verified: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    restart_errors: Mutex<BTreeMap<String, u64>>,
    error_samples: Mutex<BTreeMap<String, Vec<String>>>,
    statuses: Mutex<BTreeMap<u16, u64>>,
    cache_status: Mutex<BTreeMap<String, u64>>,
    by_proto: Mutex<BTreeMap<&'static str, u64>>,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    failures: Mutex<Vec<Failure>>,
    shapes: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

fn copy<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<K, u64> {
    map.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Stats {
    /// An error of `kind`; `expected` when it is explained by an edge restart.
    pub fn error(&self, kind: &str, expected: bool, message: impl FnOnce() -> String) {
        if expected {
            bump(&self.restart_errors, kind.to_owned());
            return;
        }
        bump(&self.errors, kind.to_owned());
        let mut samples = self.error_samples.lock().unwrap_or_else(|p| p.into_inner());
        let list = samples.entry(kind.to_owned()).or_default();
        if list.len() < MAX_ERROR_SAMPLES {
            list.push(message());
        }
    }

    pub fn status(&self, code: u16) {
        bump(&self.statuses, code);
    }

    pub fn cache_status(&self, value: Option<&str>) {
        bump(&self.cache_status, classify_cache_status(value));
    }

    pub fn request(&self, proto: &'static str, kind: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        bump(&self.by_proto, proto);
        bump(&self.by_kind, kind);
    }

    pub fn failure(&self, f: Failure) {
        match f.kind {
            "mismatched" => &self.mismatched,
            _ => &self.corrupt,
        }
        .fetch_add(1, Ordering::Relaxed);
        if !f.complete {
            self.bad_in_incomplete.fetch_add(1, Ordering::Relaxed);
        }
        bump(&self.shapes, format!("{}: {}", f.kind, f.shape));
        let mut list = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if list.iter().filter(|g| g.kind == f.kind).count() < MAX_FAILURES {
            list.push(f);
        }
    }

    pub fn errors_total(&self) -> u64 {
        copy(&self.errors).values().sum()
    }

    pub fn restart_errors_total(&self) -> u64 {
        copy(&self.restart_errors).values().sum()
    }

    pub fn report_parts(&self) -> ReportCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReportCounts {
            requests: get(&self.requests),
            responses: get(&self.responses),
            ok: get(&self.ok),
            ok_full: get(&self.ok_full),
            ok_partial: get(&self.ok_partial),
            not_modified: get(&self.not_modified),
            aborted: get(&self.aborted),
            range_as_full: get(&self.range_as_full),
            mismatched: get(&self.mismatched),
            corrupt: get(&self.corrupt),
            bad_in_incomplete: get(&self.bad_in_incomplete),
            bytes_verified: get(&self.bytes_verified),
            errors: copy(&self.errors),
            errors_during_restart: copy(&self.restart_errors),
            error_samples: self
                .error_samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            statuses: copy(&self.statuses)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            cache_status: copy(&self.cache_status),
            by_proto: copy(&self.by_proto)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            by_kind: copy(&self.by_kind)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            failure_shapes: copy(&self.shapes),
            failures: self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// `hit`, `fwd=uri-miss`, `fwd=stale`, ... plus `+collapsed`, from a `Cache-Status` value.
fn classify_cache_status(value: Option<&str>) -> String {
    let Some(value) = value else {
        return "none".into();
    };
    let params: Vec<&str> = value.split(';').skip(1).map(str::trim).collect();
    let mut out = if params.contains(&"hit") {
        "hit".to_owned()
    } else {
        params
            .iter()
            .find(|p| p.starts_with("fwd="))
            .map_or_else(|| "other".to_owned(), |p| (*p).to_owned())
    };
    if params.contains(&"collapsed") {
        out.push_str("+collapsed");
    }
    if let Some(d) = params.iter().find(|p| p.starts_with("detail=")) {
        out.push(' ');
        out.push_str(d);
    }
    out
}

/// The client-side counts of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ReportCounts {
    /// Requests attempted (including ones whose connection failed).
    pub requests: u64,
    /// Responses whose head arrived.
    pub responses: u64,
    /// Complete 200/206 responses whose every byte, length and range checked out.
    pub ok: u64,
    pub ok_full: u64,
    pub ok_partial: u64,
    pub not_modified: u64,
    /// Bodies the client stopped reading on purpose (their bytes so far were checked).
    pub aborted: u64,
    pub range_as_full: u64,
    pub mismatched: u64,
    pub corrupt: u64,
    pub bad_in_incomplete: u64,
    pub bytes_verified: u64,
    pub errors: BTreeMap<String, u64>,
    /// Errors on connections that an edge restart (`--kill-every`) broke: expected.
    pub errors_during_restart: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, Vec<String>>,
    pub statuses: BTreeMap<String, u64>,
    pub cache_status: BTreeMap<String, u64>,
    pub by_proto: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
    /// Mismatched and corrupt responses by what was wrong.
    pub failure_shapes: BTreeMap<String, u64>,
    pub failures: Vec<Failure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_classes() {
        let c = |v| classify_cache_status(Some(v));
        assert_eq!(c("quicdn; hit; ttl=3"), "hit");
        assert_eq!(
            c("quicdn; fwd=uri-miss; fwd-status=206; stored; collapsed"),
            "fwd=uri-miss+collapsed"
        );
        assert_eq!(c("quicdn; fwd=stale; fwd-status=304"), "fwd=stale");
        assert_eq!(
            c("quicdn; hit; detail=not-modified"),
            "hit detail=not-modified"
        );
        assert_eq!(classify_cache_status(None), "none");
    }
}
