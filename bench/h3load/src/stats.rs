//! What the workers of one thread count during the measured window; merged across threads
//! at the end.

use std::fmt;

use serde::Serialize;

use crate::histogram::Histogram;

/// Why a request did not count as a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The response status was not `--expect-status`.
    Status,
    /// The body length was not `--expect-length`.
    Length,
    /// The stream failed (reset by the server, refused, malformed) on a live connection.
    StreamReset,
    /// The request failed because its connection closed or was going away.
    ConnectionLost,
    /// Re-establishing a lost connection failed (one per attempt).
    Connect,
}

/// Errors by kind; the JSON `errors_by_kind` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub status: u64,
    pub length: u64,
    pub stream_reset: u64,
    pub connection_lost: u64,
    pub connect: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        let Self {
            status,
            length,
            stream_reset,
            connection_lost,
            connect,
        } = *self;
        status + length + stream_reset + connection_lost + connect
    }

    fn add(&mut self, kind: ErrorKind) {
        *match kind {
            ErrorKind::Status => &mut self.status,
            ErrorKind::Length => &mut self.length,
            ErrorKind::StreamReset => &mut self.stream_reset,
            ErrorKind::ConnectionLost => &mut self.connection_lost,
            ErrorKind::Connect => &mut self.connect,
        } += 1;
    }

    fn merge(&mut self, other: &Self) {
        self.status += other.status;
        self.length += other.length;
        self.stream_reset += other.stream_reset;
        self.connection_lost += other.connection_lost;
        self.connect += other.connect;
    }
}

impl fmt::Display for ErrorCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {}, length {}, stream reset {}, connection lost {}, reconnect failed {}",
            self.status, self.length, self.stream_reset, self.connection_lost, self.connect
        )
    }
}

/// Counters of one thread (or, merged, of the run).
#[derive(Clone)]
pub(crate) struct Stats {
    /// Successful requests; their latency is in `latency`.
    pub(crate) requests: u64,
    pub(crate) errors: ErrorCounts,
    /// Body bytes of every response read to its end, successful or not.
    pub(crate) body_bytes: u64,
    /// Microseconds from sending the request to the end of the body, successes only.
    pub(crate) latency: Histogram,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            requests: 0,
            errors: ErrorCounts::default(),
            body_bytes: 0,
            latency: Histogram::new(),
        }
    }

    pub(crate) fn success(&mut self, body_bytes: u64, micros: u64) {
        self.requests += 1;
        self.body_bytes += body_bytes;
        self.latency.record(micros);
    }

    pub(crate) fn failure(&mut self, kind: ErrorKind, body_bytes: u64) {
        self.errors.add(kind);
        self.body_bytes += body_bytes;
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors.merge(&other.errors);
        self.body_bytes += other.body_bytes;
        self.latency.merge(&other.latency);
    }
}
