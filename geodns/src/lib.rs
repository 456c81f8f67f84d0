//! quicdn GeoDNS: an authoritative DNS server that answers each client with the nearest
//! healthy POP.
//!
//! - [`zone`]: authoritative semantics (NXDOMAIN, NODATA, REFUSED, CNAME, ANY) over the
//!   configured zones; pure, no sockets.
//! - [`geo`]: where a client is, from MaxMind databases (GeoIP2 City/Country and flat DB-IP
//!   style files).
//! - [`select`]: nearest healthy POPs by great-circle distance.
//! - [`health`]: the POP health checker and its lock-free snapshot.
//! - [`server`]: hickory-server on UDP and TCP, EDNS Client Subnet, reloads, admin.
//!
//! It is not a resolver: names outside its zones are REFUSED.

mod badinput;
pub mod citydb;
pub mod config;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod select;
pub mod server;
mod udp;
pub mod zone;
