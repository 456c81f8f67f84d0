//! The query path and the process around it: hickory-server on UDP and TCP, the answer
//! function, health checking, reloads and the admin listener.
//!
//! The files:
//! - this one: [`State`], everything a query needs, swapped whole on reload;
//! - `handler.rs`: [`Handler`], the one answer function for UDP and TCP: the question, the
//!   client (EDNS Client Subnet or the resolver), the zone's answer with the POPs chosen for
//!   geo names, the ECS scope, and the query metrics;
//! - `run.rs`: [`start`] and [`RunningGeoDns`]: binding the DNS and admin listeners, the
//!   tasks and threads, shutdown;
//! - `reload.rs`: the config and databases reloaded through [`shared::reload`].

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::GeoDnsConfig;
use crate::geo::GeoDb;
use crate::zone::Zones;

mod handler;
mod reload;
mod run;

pub use handler::Handler;
pub use run::{RunningGeoDns, start};

/// Everything a query needs, swapped whole on reload.
pub struct State {
    pub config: GeoDnsConfig,
    zones: Zones,
    geo: GeoDb,
    default_order: Vec<usize>,
}

impl State {
    /// Builds zones and opens the databases; any error leaves the caller's state in use.
    pub fn build(config: GeoDnsConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let zones = Zones::new(&config.zones)?;
        let geo = GeoDb::open(&config.geoip.databases)?;
        for line in geo.describe() {
            tracing::info!(database = %line, "MaxMind database loaded");
        }
        let index: HashMap<&str, usize> = config
            .pops
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let default_order = config
            .default_order
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .collect();
        Ok(Self {
            config,
            zones,
            geo,
            default_order,
        })
    }
}

impl State {
    /// The database location of an address (see [`GeoDb::lookup`]).
    pub(crate) fn locate(&self, ip: IpAddr) -> Option<crate::geo::Location> {
        self.geo.lookup(ip)
    }
}
