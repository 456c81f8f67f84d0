//! quicdn edge: an HTTP/3-first caching reverse proxy.
//!
//! Front-ends ([`frontend`]) translate protocols into `http::Request<Body>`; one
//! protocol-neutral [`service::Service`] routes each request to its site, answers it from the
//! [`cache`] or the [`origin`], and adds the edge's headers ([`headers`]). [`server::Edge`]
//! wires config, listeners and the admin endpoint ([`admin`], [`metrics`]) together.
//!
//! It is deliberately not a general-purpose proxy: it only forwards to configured origins
//! ([`sites`]), never to a host a client names.

pub mod admin;
pub mod body;
pub mod cache;
pub mod config;
pub mod demo;
pub mod filter;
pub mod frontend;
pub mod headers;
pub mod metrics;
pub mod origin;
pub mod reload;
pub mod rules;
pub mod server;
pub mod service;
pub mod sites;
pub mod target;
pub mod upstream;
