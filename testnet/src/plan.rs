//! The testnet's shape: which namespaces exist, their addresses and the emulator's ports.
//!
//! Region `i` (1-based, in config order) owns 10.i.0.0/16:
//! - 10.i.0.0/24 is its datacenter LAN, a bridge in `PREFIX-rt-REGION` (gateway 10.i.0.1) with
//!   the POP (.10), the region's NATS server (.42), the resolver (.53), and the origin (.80) or
//!   GeoDNS (.5) if they live there;
//! - 10.i.100.0/24 is its client network: `PREFIX-client-REGION` (10.i.100.2) reaches the world
//!   only through the emulator, over the region's access link;
//! - the router reaches other regions through the emulator (its TUN has 10.i.255.1).
//!
//! Everything between two TUN ports crosses the emulator with that region pair's latency.

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::config::TestnetConfig;
use crate::emulator::{EmulatorSpec, LinkParams, LinkRule, PortSpec};

/// The TUN device name inside every namespace that has one.
pub const WAN_IF: &str = "wan0";

/// The NATS server's ports: clients (the region's edge), routes (the other regions' servers)
/// and HTTP monitoring (readiness and `status`).
pub const NATS_CLIENT_PORT: u16 = 4222;
pub const NATS_ROUTE_PORT: u16 = 6222;
pub const NATS_MONITOR_PORT: u16 = 8222;

/// The edge's admin listener, on loopback inside its POP's namespace: the purge API takes
/// commands from a loopback peer without a token, so the scenarios call it from there.
pub const EDGE_ADMIN_PORT: u16 = 9090;

/// The origin's second listener: objects with a surrogate key, for the purge scenarios.
pub const TAGGED_ORIGIN_PORT: u16 = 8080;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Index into `Plan::regions`.
    pub region: usize,
}

#[derive(Debug, Clone)]
pub struct RegionPlan {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    pub router_ns: String,
    pub router_wan: Ipv4Addr,
    pub lan: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub pop: Host,
    /// The region's `nats-server`, one node of the control bus's cluster.
    pub nats: Host,
    pub resolver: Host,
    pub client: Host,
    pub client_net: Ipv4Net,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub prefix: String,
    /// Holds only the emulator process, so `down` finds it even without a state file.
    pub emulator_ns: String,
    pub regions: Vec<RegionPlan>,
    pub origin: Host,
    pub dns: Host,
}

fn addr(i: usize, c: u8, d: u8) -> Ipv4Addr {
    // validate() caps regions at 50, so i fits the second octet.
    Ipv4Addr::new(10, i as u8, c, d)
}

fn net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(a, len).expect("prefix length <= 32").trunc()
}

impl Plan {
    pub fn new(config: &TestnetConfig) -> Self {
        let p = &config.prefix;
        let regions: Vec<RegionPlan> = config
            .regions
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let i = k + 1;
                let host = |role: &str, d| Host {
                    ns: format!("{p}-{role}-{}", r.name),
                    addr: addr(i, 0, d),
                    region: k,
                };
                RegionPlan {
                    name: r.name.clone(),
                    latitude: r.latitude,
                    longitude: r.longitude,
                    router_ns: format!("{p}-rt-{}", r.name),
                    router_wan: addr(i, 255, 1),
                    lan: net(addr(i, 0, 0), 24),
                    gateway: addr(i, 0, 1),
                    pop: host("pop", 10),
                    nats: host("nats", 42),
                    resolver: host("resolver", 53),
                    client: Host {
                        ns: format!("{p}-client-{}", r.name),
                        addr: addr(i, 100, 2),
                        region: k,
                    },
                    client_net: net(addr(i, 100, 0), 24),
                }
            })
            .collect();
        let index = |name: &str| {
            config
                .regions
                .iter()
                .position(|r| r.name == name)
                .expect("validated region reference")
        };
        let (o, d) = (index(&config.origin_region), index(&config.dns_region));
        Self {
            prefix: p.clone(),
            emulator_ns: format!("{p}-net"),
            origin: Host {
                ns: format!("{p}-origin"),
                addr: addr(o + 1, 0, 80),
                region: o,
            },
            dns: Host {
                ns: format!("{p}-dns"),
                addr: addr(d + 1, 0, 5),
                region: d,
            },
            regions,
        }
    }

    /// Hosts on a region's LAN bridge (veth into the router namespace).
    pub fn lan_hosts(&self, region: usize) -> Vec<&Host> {
        let r = &self.regions[region];
        let mut hosts = vec![&r.pop, &r.nats, &r.resolver];
        hosts.extend(
            [&self.origin, &self.dns]
                .into_iter()
                .filter(|h| h.region == region),
        );
        hosts
    }

    /// Every namespace, in creation order (`down` deletes in reverse).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.emulator_ns.clone()];
        v.extend(self.regions.iter().map(|r| r.router_ns.clone()));
        for r in &self.regions {
            v.extend([
                r.pop.ns.clone(),
                r.nats.ns.clone(),
                r.resolver.ns.clone(),
                r.client.ns.clone(),
            ]);
        }
        v.extend([self.origin.ns.clone(), self.dns.ns.clone()]);
        v
    }

    /// Which region an address belongs to (10.i.x.x), for reading DNS answers.
    pub fn region_of(&self, a: Ipv4Addr) -> Option<usize> {
        let o = a.octets();
        (o[0] == 10 && o[1] >= 1 && usize::from(o[1]) <= self.regions.len())
            .then(|| usize::from(o[1]) - 1)
    }

    /// The emulator's ports (a router and a client network per region) and its link table.
    pub fn emulator_spec(&self, config: &TestnetConfig) -> EmulatorSpec {
        let mut ports = Vec::new();
        for r in &self.regions {
            ports.push(PortSpec {
                netns: r.router_ns.clone(),
                ifname: WAN_IF.into(),
                site: r.name.clone(),
                address: net(r.router_wan, 32),
                prefixes: vec![r.lan, net(r.router_wan, 32)],
            });
            ports.push(PortSpec {
                netns: r.client.ns.clone(),
                ifname: WAN_IF.into(),
                site: r.name.clone(),
                address: Ipv4Net::new(r.client.addr, 24).expect("valid"),
                prefixes: vec![r.client_net],
            });
        }
        let mut links = Vec::new();
        for a in &self.regions {
            for b in &self.regions {
                let l = config.link(&a.name, &b.name).expect("validated link table");
                links.push(LinkRule {
                    from: a.name.clone(),
                    to: b.name.clone(),
                    params: link_params(l.rtt_ms, l.loss, l.rate_mbit),
                });
            }
        }
        EmulatorSpec { ports, links }
    }

    /// Region indexes ordered by great-circle distance from `from` (itself first).
    pub fn by_distance(&self, from: usize) -> Vec<usize> {
        let o = &self.regions[from];
        let mut v: Vec<(f64, usize)> = self
            .regions
            .iter()
            .enumerate()
            .map(|(k, r)| {
                (
                    haversine_km(o.latitude, o.longitude, r.latitude, r.longitude),
                    k,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, k)| k).collect()
    }
}

fn link_params(rtt_ms: f64, loss: f64, rate_mbit: Option<f64>) -> LinkParams {
    let delay = Duration::from_secs_f64(rtt_ms / 2000.0);
    let rate_bps = rate_mbit.map(|m| (m * 1e6) as u64);
    // A router buffer of about 100 ms at the link's rate, at least 64 KiB.
    let queue_bytes = rate_bps.map_or(1 << 20, |r| ((r / 80) as usize).max(64 << 10));
    LinkParams {
        delay,
        loss,
        rate_bps,
        queue_bytes,
    }
}

/// Independent of geodns' own code on purpose: the scenarios check its choice against this.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_addresses_and_names() {
        let plan = Plan::new(&TestnetConfig::default());
        let us = &plan.regions[0];
        assert_eq!(us.router_ns, "qdn-rt-us-east");
        assert_eq!(us.pop.addr, Ipv4Addr::new(10, 1, 0, 10));
        assert_eq!(us.client.addr, Ipv4Addr::new(10, 1, 100, 2));
        assert_eq!(plan.origin.addr, Ipv4Addr::new(10, 1, 0, 80));
        assert_eq!(plan.dns.addr, Ipv4Addr::new(10, 2, 0, 5));
        assert_eq!(us.nats.addr, Ipv4Addr::new(10, 1, 0, 42));
        assert_eq!(plan.regions[2].nats.ns, "qdn-nats-ap-southeast");
        assert_eq!(plan.lan_hosts(0).len(), 4);
        assert_eq!(plan.lan_hosts(1).len(), 4);
        assert_eq!(plan.lan_hosts(2).len(), 3);
        let ns = plan.namespaces();
        assert_eq!(ns.len(), 1 + 3 + 12 + 2);
        assert!(ns.iter().all(|n| n.starts_with("qdn-")));
        assert_eq!(plan.region_of(Ipv4Addr::new(10, 3, 0, 10)), Some(2));
        assert_eq!(plan.region_of(Ipv4Addr::new(10, 4, 0, 10)), None);
    }

    #[test]
    fn emulator_spec_covers_every_pair_both_ways() {
        let config = TestnetConfig::default();
        let spec = Plan::new(&config).emulator_spec(&config);
        assert_eq!(spec.ports.len(), 6);
        assert_eq!(spec.links.len(), 9);
        let eu_us = spec
            .links
            .iter()
            .find(|l| l.from == "eu-central" && l.to == "us-east")
            .unwrap();
        assert_eq!(eu_us.params.delay, Duration::from_millis(45));
    }

    #[test]
    fn distance_order_matches_geography() {
        let plan = Plan::new(&TestnetConfig::default());
        // Frankfurt: Virginia (~6,500 km) is nearer than Singapore (~10,300 km).
        assert_eq!(plan.by_distance(1), vec![1, 0, 2]);
        assert_eq!(plan.by_distance(2), vec![2, 1, 0]);
        let fra_iad = haversine_km(50.11, 8.68, 38.95, -77.45);
        assert!((6_400.0..6_700.0).contains(&fra_iad), "{fra_iad}");
    }
}
