//! What the quicdn binaries (`edge`, `geodns`, `testnet`) share.
//!
//! - [`admin`]: the loopback admin listener (`/metrics`, `/health`).
//! - [`config`]: read a TOML file into a binary's config type with errors that name the file and
//!   the field.
//! - [`reload`]: one reload mechanism (SIGHUP, watched files, `POST /reload` on the admin
//!   listener), one reload at a time, a failed reload leaving the running state as it was.
//! - [`tls`]: certificates and keys from PEM files, a generated development certificate, rustls
//!   server configs on the ring provider, and the SPKI hash browsers pin.
//! - [`telemetry`]: one `tracing` subscriber setup for every binary.
//!
//! It deliberately holds no HTTP or DNS logic: that lives in the crate that serves it.

pub mod admin;
pub mod config;
pub mod reload;
pub mod telemetry;
pub mod tls;
