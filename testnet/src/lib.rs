//! quicdn testnet: simulated regions in Linux network namespaces, running the real binaries.
//! See the README's Testnet section and `plan` for the topology.

pub mod config;
pub mod emulator;
pub mod files;
pub mod http;
pub mod lifecycle;
pub mod nats;
pub mod netns;
pub mod origin;
pub mod plan;
pub mod probe;
pub mod procs;
pub mod scenarios;
