//! What the quicdn binaries (`edge`, `geodns`, `testnet`) share.
//!
//! - [`admin`]: the loopback admin listener (`/metrics`, `/health`).
//! - [`config`]: read a TOML file into a binary's config type with errors that name the file and
//!   the field.
//! - [`tls`]: certificates and keys from PEM files, a generated development certificate, rustls
//!   server configs on the ring provider, and the SPKI hash browsers pin.
//! - [`telemetry`]: one `tracing` subscriber setup for every binary.
//!
//! It deliberately holds no HTTP or DNS logic: that lives in the crate that serves it.

pub mod admin;
pub mod config;
pub mod telemetry;
pub mod tls;
