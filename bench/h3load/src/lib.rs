//! `h3load`: a closed-loop HTTP/3 load generator for quicdn's benchmarks.
//!
//! [`run`] opens `connections` QUIC connections (quinn + h3, TLS 1.3 over rustls/ring) to
//! one URL and keeps `streams` GETs in flight on each: when a response's body has been read
//! to its end (counted, never buffered) the next request starts. After a warm-up that is not
//! counted it measures a window and returns a [`Report`]: successful requests, errors by
//! kind ([`ErrorCounts`]), req/s, latency percentiles from a fixed log-bucket histogram, body
//! MB/s, and what the client itself cost (CPU µs per request, cores busy), so a benchmark
//! can tell whether the client or the server was the bottleneck.
//!
//! It is deliberately not a browser-like client: one URL, GET only, no redirects, no
//! connection per request, no request bodies. Load is spread over `threads` OS threads,
//! each a single-threaded tokio runtime with its own UDP endpoint.
//!
//! Main types: [`LoadConfig`] (input; [`Cli`] is its command line), [`Trust`], [`Report`].

mod client;
mod config;
mod cpu;
mod histogram;
pub mod idle;
mod load;
mod report;
mod stats;
mod tls;

pub use config::{Cli, LoadConfig};
pub use load::run;
pub use report::Report;
pub use stats::{ErrorCounts, ErrorKind};
pub use tls::Trust;
