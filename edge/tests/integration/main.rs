//! Edge integration tests: a real origin and the real edge on ephemeral ports, driven by real
//! HTTP clients over HTTP/1.1, HTTPS and HTTP/2. One test binary (faster to link, shared
//! fixtures); each test builds its own origin and edge so tests run in parallel.

#[path = "../support/mod.rs"]
mod support;

mod browser;
mod caching;
mod coalescing;
mod control;
mod failover;
mod h3;
mod hardening;
mod media;
mod process;
mod ranges;
mod reload;
mod robustness;
mod rules;
