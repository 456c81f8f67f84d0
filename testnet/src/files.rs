//! What the real binaries read: the MaxMind DB, the geodns and edge configs, unbound's and
//! nats-server's configs.
//!
//! The text is written here, then `up` checks each config with the binary's own
//! `--check-config`, so a renamed key fails loudly instead of silently using a default.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use geodns::citydb::CityNetwork;

use crate::config::TestnetConfig;
use crate::plan::{
    EDGE_ADMIN_PORT, NATS_CLIENT_PORT, NATS_MONITOR_PORT, NATS_ROUTE_PORT, Plan, TAGGED_ORIGIN_PORT,
};

/// A GeoIP2-City-shaped database with one network per region: its client subnet.
/// Nothing else is in it, so a resolver's own address (on the datacenter LAN) is unknown
/// and only EDNS Client Subnet can route its clients.
pub fn write_mmdb(plan: &Plan, path: &Path) -> anyhow::Result<()> {
    let networks: Vec<CityNetwork<'_>> = plan
        .regions
        .iter()
        .map(|r| CityNetwork {
            network: ipnet::IpNet::V4(r.client_net),
            latitude: r.latitude,
            longitude: r.longitude,
            accuracy_radius: 50,
            // Test data: the region's coordinates are what matters, not the country.
            country: "ZZ",
            continent: "ZZ",
        })
        .collect();
    let bytes = geodns::citydb::encode(&networks).context("cannot encode the MaxMind DB")?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

pub fn geodns_toml(config: &TestnetConfig, plan: &Plan, mmdb: &Path, ca: &Path) -> String {
    let ttl = config.dns_ttl.as_secs().max(1);
    let order: Vec<String> = plan
        .regions
        .iter()
        .map(|r| format!("{:?}", r.name))
        .collect();
    let mut s = format!(
        r#"# Written by `testnet up`.
default_order = [{order}]

[listen]
dns = "{dns}:53"
admin = "127.0.0.1:9153"

[geoip]
databases = [{mmdb:?}]

[health]
interval = "{interval}ms"
timeout = "{timeout}ms"
rise = {rise}
fall = {fall}
http3 = true
ca_file = {ca:?}

[log]
filter = "info,hickory_server=warn"
"#,
        order = order.join(", "),
        dns = plan.dns.addr,
        interval = config.health_interval.as_millis(),
        // A probe must end before the next one starts.
        timeout = (config.health_interval.as_millis() * 4 / 5).max(200),
        rise = config.health_rise,
        fall = config.health_fall,
    );
    for r in &plan.regions {
        let _ = write!(
            s,
            r#"
[[pop]]
name = {name:?}
latitude = {lat:?}
longitude = {lon:?}
ipv4 = ["{addr}"]
health_url = "https://{addr}/.quicdn/health"
"#,
            name = r.name,
            lat = r.latitude,
            lon = r.longitude,
            addr = r.pop.addr,
        );
    }
    let _ = write!(
        s,
        r#"
[[zone]]
name = "{cdn}."
ns = ["ns1.{cdn}."]
ttl = 300

[zone.soa]
mname = "ns1.{cdn}."
rname = "hostmaster.{cdn}."
serial = 1

[[zone.record]]
name = "ns1"
type = "A"
value = "{dns}"

[[zone.geo]]
name = "@"
ttl = {ttl}

[[zone.geo]]
name = "www"
ttl = {ttl}
"#,
        cdn = config.cdn_name,
        dns = plan.dns.addr,
    );
    s
}

pub fn edge_toml(
    config: &TestnetConfig,
    plan: &Plan,
    region: usize,
    dir: &Path,
    cert: &Path,
    key: &Path,
) -> String {
    let r = &plan.regions[region];
    format!(
        r#"# Written by `testnet up`.
name = "{pop}"

[listen]
https = "{addr}:443"
http = "{addr}:80"
admin = "127.0.0.1:{EDGE_ADMIN_PORT}"
shutdown_grace = "1s"

[tls]
cert = {cert:?}
key = {key:?}

[cache]
dir = {cache:?}
disk_budget = "1 GiB"
memory_budget = "64 MiB"

[origin]
connect_timeout = "3s"
first_byte_timeout = "10s"

# The control bus: purges sent to any POP's API reach every POP.
[control]
# This region's NATS server first, then the others nearest first: the edge fails over.
nats = [{nats}]
stream = "{stream}"
subject = "quicdn.control"
# Three copies of the stream (two keep a quorum when one region's server is down), fewer
# in a testnet of fewer regions.
replicas = {replicas}
# Whom a purge's `wait` waits for: every POP of the testnet.
pops = [{pops}]
catch_up_timeout = "5s"

[[site]]
hosts = ["{cdn}", "*.{cdn}", "{addr}"]
origin = "http://{origin}:80"

# The purge scenarios' objects, each with a surrogate key (`testnet origin`'s second port).
[[site]]
hosts = ["{tagged}"]
origin = "http://{origin}:{TAGGED_ORIGIN_PORT}"
"#,
        pop = pop_name(&r.name),
        addr = r.pop.addr,
        nats = quoted(&nats_urls(plan, region)),
        stream = crate::nats::STREAM,
        replicas = plan.regions.len().min(3),
        pops = quoted(
            &plan
                .regions
                .iter()
                .map(|r| pop_name(&r.name))
                .collect::<Vec<_>>()
        ),
        cache = dir.join(format!("cache-{}", r.name)),
        cdn = config.cdn_name,
        tagged = tagged_host(config),
        origin = plan.origin.addr,
    )
}

/// The edge's `name` in region `region`: what `Cache-Status`, `Via` and the bus's
/// acknowledgements call the POP.
pub fn pop_name(region: &str) -> String {
    format!("pop-{region}")
}

/// TOML strings, comma separated.
fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The host name of the tagged objects (an exact name wins over the first site's wildcard).
pub fn tagged_host(config: &TestnetConfig) -> String {
    format!("tagged.{}", config.cdn_name)
}

/// unbound as a region's recursive resolver: the CDN zone is delegated to geodns with a stub
/// zone (what an NS record does on the internet), and subnetcache sends each client's /24 as
/// EDNS Client Subnet.
pub fn unbound_conf(config: &TestnetConfig, plan: &Plan, region: usize, dir: &Path) -> String {
    let r = &plan.regions[region];
    format!(
        r#"# Written by `testnet up`.
server:
    interface: {addr}
    port: 53
    access-control: 10.0.0.0/8 allow
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: {dir:?}
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    so-reuseport: no
    qname-minimisation: no
    module-config: "subnetcache iterator"
    send-client-subnet: {dns}
    max-client-subnet-ipv4: 24
    client-subnet-always-forward: yes
{unblock}
stub-zone:
    name: "{cdn}."
    stub-addr: {dns}
    stub-prime: no
"#,
        addr = r.resolver.addr,
        dir = dir.display().to_string(),
        dns = plan.dns.addr,
        cdn = config.cdn_name,
        unblock = unblock_special_use(&config.cdn_name),
    )
}

/// unbound answers names under the RFC 6761 special-use TLDs (`.test`, `.invalid`) itself with
/// NXDOMAIN unless told otherwise; the testnet's name lives under `.test`.
fn unblock_special_use(cdn: &str) -> String {
    let tld = cdn
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    if ["test", "invalid", "localhost", "onion"].contains(&tld) {
        format!("    local-zone: \"{tld}.\" nodefault\n")
    } else {
        String::new()
    }
}

/// One node of the control bus: `nats-server` in region `region`, JetStream on, routed to every
/// other region's server over the emulated links (a full mesh, so no route depends on a third
/// region being up). A single region runs it unclustered: JetStream then needs no peers.
///
/// Each pair of servers has one soliciting side, the later region in config order: when both
/// dial each other at once over a long link, each closes one connection as a duplicate and the
/// pair can flap for seconds (seen at 80-110 ms one way). A server that restarts is dialled
/// again by its later peers and dials its earlier ones itself. Each also lists itself, which
/// nats-server skips: a clustered JetStream refuses to start with no configured route.
pub fn nats_conf(plan: &Plan, region: usize, dir: &Path) -> String {
    let r = &plan.regions[region];
    let mut s = format!(
        r#"# Written by `testnet up`.
server_name: "{name}"
listen: "{addr}:{NATS_CLIENT_PORT}"
# Monitoring: `testnet up` waits on /healthz (200 once JetStream has a meta leader) and
# /routez; `testnet status` reads /jsz.
http: "{addr}:{NATS_MONITOR_PORT}"

jetstream {{
    store_dir: {store:?}
    max_memory_store: 64MB
    max_file_store: 1GB
}}
"#,
        name = r.name,
        addr = r.nats.addr,
        store = dir.join(format!("nats-{}", r.name)).display().to_string(),
    );
    let routes: Vec<String> = plan.regions[..=region]
        .iter()
        .map(|o| format!("\"nats-route://{}:{NATS_ROUTE_PORT}\"", o.nats.addr))
        .collect();
    if plan.regions.len() > 1 {
        let _ = write!(
            s,
            r#"
cluster {{
    name: "quicdn-{prefix}"
    listen: "{addr}:{NATS_ROUTE_PORT}"
    routes: [{routes}]
}}
"#,
            prefix = plan.prefix,
            addr = r.nats.addr,
            routes = routes.join(", "),
        );
    }
    s
}

/// The bus as region `region`'s edge sees it: its own region's server first, then the others
/// nearest first, so it fails over to the closest one.
pub fn nats_urls(plan: &Plan, region: usize) -> Vec<String> {
    plan.by_distance(region)
        .into_iter()
        .map(|k| format!("nats://{}:{NATS_CLIENT_PORT}", plan.regions[k].nats.addr))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_routes_are_dialled_by_the_later_region_only() {
        let plan = Plan::new(&TestnetConfig::default());
        let dir = Path::new("/state");
        let routes = |k| {
            let conf = nats_conf(&plan, k, dir);
            let line = conf.lines().find(|l| l.contains("routes:")).unwrap();
            line.matches("nats-route://").count()
        };
        // Itself (skipped by nats-server) plus every earlier region.
        assert_eq!([routes(0), routes(1), routes(2)], [1, 2, 3]);
        let ap = nats_conf(&plan, 2, dir);
        assert!(ap.contains("server_name: \"ap-southeast\""), "{ap}");
        assert!(ap.contains("\"nats-route://10.1.0.42:6222\""), "{ap}");
        assert!(
            ap.contains("store_dir: \"/state/nats-ap-southeast\""),
            "{ap}"
        );

        let mut one = TestnetConfig::default();
        one.regions.truncate(1);
        one.links.truncate(1);
        one.dns_region = "us-east".into();
        one.validate().unwrap();
        let conf = nats_conf(&Plan::new(&one), 0, dir);
        assert!(!conf.contains("cluster"), "{conf}");
    }

    /// What `up`'s `edge --check-config` checks, without root: the real config type takes the
    /// generated text, and the bus section says what the scenarios rely on.
    #[test]
    fn edge_config_loads_with_the_real_type() {
        let config = TestnetConfig::default();
        let plan = Plan::new(&config);
        let (cert, key) = (Path::new("/c.pem"), Path::new("/k.pem"));
        let text = edge_toml(&config, &plan, 1, Path::new("/state"), cert, key);
        let edge: edge::config::EdgeConfig = shared::config::parse(&text).unwrap();
        edge.validate().unwrap();
        assert_eq!(edge.name, "pop-eu-central");
        assert_eq!(edge.control.nats, nats_urls(&plan, 1));
        assert_eq!(edge.control.stream, crate::nats::STREAM);
        assert_eq!(edge.control.replicas, 3);
        assert_eq!(
            edge.control.pops,
            ["pop-us-east", "pop-eu-central", "pop-ap-southeast"]
        );
        assert_eq!(edge.sites.len(), 2);
        assert_eq!(edge.sites[1].hosts, ["tagged.cdn.quicdn.test"]);
    }

    #[test]
    fn each_edge_lists_its_own_server_first_then_the_nearest() {
        let plan = Plan::new(&TestnetConfig::default());
        assert_eq!(
            nats_urls(&plan, 1),
            [
                "nats://10.2.0.42:4222",
                "nats://10.1.0.42:4222",
                "nats://10.3.0.42:4222"
            ]
        );
    }
}
