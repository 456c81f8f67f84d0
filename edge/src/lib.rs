//! quicdn edge: an HTTP/3-first caching reverse proxy.
//!
//! Front-ends ([`frontend`]) translate protocols into `http::Request<Body>`; one
//! protocol-neutral [`service::Service`] routes each request to its site, answers it from the
//! [`cache`] or the [`origin`], and adds the edge's headers ([`headers`]). [`server::Edge`]
//! wires config, listeners and the admin endpoint ([`admin`], [`metrics`]) together.
//!
//! It is deliberately not a general-purpose proxy: it only forwards to configured origins
//! ([`sites`]), never to a host a client names.

// Private modules, so that the dead-code and `unreachable_pub` lints see the whole crate;
// what other crates use is public below (the config schema, the server, the demo origin) or
// re-exported for the fuzz targets ([`fuzzing`]).
#![warn(unreachable_pub)]
pub mod admin;
mod body;
mod cache;
pub mod config;
pub mod control;
pub mod demo;
mod filter;
mod frontend;
mod headers;
mod metrics;
mod origin;
mod prewarm;
pub mod purge;
pub mod reload;
pub mod rules;
pub mod server;
mod service;
mod sites;
mod target;
pub mod upstream;

/// Internals the fuzz targets (`fuzz/`) exercise directly: not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cache::{key, meta, policy, range};
    pub use crate::headers::{is_hop_by_hop, strip_hop_by_hop};
}
