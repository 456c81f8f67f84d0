//! What the real binaries read: the MaxMind DB, the geodns and edge configs, unbound's config.
//!
//! The text is written here, then `up` checks each config with the binary's own
//! `--check-config`, so a renamed key fails loudly instead of silently using a default.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use geodns::citydb::CityNetwork;

use crate::config::TestnetConfig;
use crate::plan::Plan;

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
name = "pop-{name}"

[listen]
https = "{addr}:443"
http = "{addr}:80"
admin = "127.0.0.1:9090"
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

[[site]]
hosts = ["{cdn}", "*.{cdn}", "{addr}"]
origin = "http://{origin}:80"
"#,
        name = r.name,
        addr = r.pop.addr,
        cache = dir.join(format!("cache-{}", r.name)),
        cdn = config.cdn_name,
        origin = plan.origin.addr,
    )
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
