//! The GeoDNS configuration: one type, one `Default`, checked right after parsing.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shared::config::ConfigError;
use shared::telemetry::LogFormat;

/// Everything `geodns` needs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeoDnsConfig {
    pub listen: ListenConfig,
    pub geoip: GeoIpConfig,
    pub health: HealthConfig,
    pub log: LogConfig,
    /// Points of presence that geo-routed names answer with.
    #[serde(rename = "pop")]
    pub pops: Vec<PopConfig>,
    /// POP names in the order used when a client's location is unknown; default: config order.
    pub default_order: Vec<String>,
    /// Per-subnet overrides (checked before the database), like gdnsd's `nets`.
    #[serde(rename = "override")]
    pub overrides: Vec<OverrideConfig>,
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneConfig>,
}

/// Sockets.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// DNS over UDP and TCP on this address. A high port for local use; 53 in production.
    pub dns: SocketAddr,
    /// `/metrics` and `/health`; loopback by default.
    pub admin: Option<SocketAddr>,
    /// A TCP client idle for this long is disconnected.
    #[serde(with = "humantime_serde")]
    pub tcp_timeout: Duration,
    /// Largest UDP response we send, whatever EDNS offers: 1232 avoids IP fragmentation
    /// (DNS Flag Day 2020).
    pub max_udp_payload: u16,
    /// Threads (each with its own `SO_REUSEPORT` socket) serving UDP; 0: one per CPU this
    /// process may run on, at most 8.
    pub udp_threads: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            dns: ([127, 0, 0, 1], 5353).into(),
            admin: Some(([127, 0, 0, 1], 9153).into()),
            tcp_timeout: Duration::from_secs(10),
            max_udp_payload: 1232,
            udp_threads: 0,
        }
    }
}

/// MaxMind databases.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GeoIpConfig {
    /// GeoIP2/GeoLite2 City or Country files, or flat DB-IP style files (IPv4-only and
    /// IPv6-only files may both be listed: each address is looked up in the files of its
    /// family). Empty: every client gets the default order.
    pub databases: Vec<PathBuf>,
    /// Reload the databases and this config when a file changes (checked at this interval);
    /// 0 disables polling (SIGHUP still reloads).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

/// POP health checking.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that make a down POP healthy.
    pub rise: u32,
    /// Consecutive failures that make a healthy POP down.
    pub fall: u32,
    /// Extra PEM CA bundle trusted for health URLs (e.g. the testnet's dev CA).
    pub ca_file: Option<PathBuf>,
    /// Probe `https://` health URLs over HTTP/3 (QUIC, same host and port), the way browsers
    /// reach the edges: a POP whose UDP path is broken is then seen as down.
    pub http3: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 2,
            ca_file: None,
            http3: false,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
    /// One line per query under the `query` target (off by default: DNS rates are high).
    pub query_log: bool,
    /// Bad queries (undecodable, malformed EDNS options, invalid ECS) are logged under the
    /// `bad_input` target: the first from a client at once, then one line per client per
    /// interval with the count and the last reason.
    #[serde(with = "humantime_serde")]
    pub bad_input_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            // hickory-proto warns once per packet about some bad input; geodns logs bad input
            // itself, rate-limited (see `bad_input_interval`).
            filter: "info,hickory_server=warn,hickory_proto=error".into(),
            format: LogFormat::Text,
            query_log: false,
            bad_input_interval: Duration::from_secs(10),
        }
    }
}

/// One POP.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub ipv4: Vec<std::net::Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<std::net::Ipv6Addr>,
    /// Probed by the health checker (HTTP or HTTPS). Without it the POP is always healthy.
    #[serde(default)]
    pub health_url: Option<String>,
    /// Distances are divided by the weight: 2.0 draws clients from twice as far.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// Clients in `cidr` go to `pop`, whatever the database says.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    pub cidr: IpNet,
    pub pop: String,
}

/// One authoritative zone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `cdn.example.com.` (the trailing dot is optional).
    pub name: String,
    pub soa: SoaConfig,
    /// Name servers of the zone (absolute names).
    pub ns: Vec<String>,
    /// TTL of static records without their own.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default, rename = "record")]
    pub records: Vec<RecordConfig>,
    #[serde(default, rename = "geo")]
    pub geo: Vec<GeoNameConfig>,
}

fn default_ttl() -> u32 {
    3600
}

/// The zone's SOA fields.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    pub mname: String,
    /// Mailbox as a domain name (`hostmaster.example.com.`).
    pub rname: String,
    pub serial: u32,
    #[serde(default = "soa_refresh")]
    pub refresh: i32,
    #[serde(default = "soa_retry")]
    pub retry: i32,
    #[serde(default = "soa_expire")]
    pub expire: i32,
    /// Negative-caching TTL (RFC 2308).
    #[serde(default = "soa_minimum")]
    pub minimum: u32,
}

fn soa_refresh() -> i32 {
    3600
}
fn soa_retry() -> i32 {
    600
}
fn soa_expire() -> i32 {
    604_800
}
fn soa_minimum() -> u32 {
    60
}

/// A static record. `name` is relative to the zone (`www`), `@` for the apex, or absolute
/// (ending in a dot).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    pub name: String,
    /// A, AAAA, CNAME, TXT, MX, CAA, NS.
    #[serde(rename = "type")]
    pub rtype: String,
    /// Presentation format of the data: `192.0.2.1`, `10 mail.example.com.`,
    /// `0 issue "letsencrypt.org"`, a TXT string.
    pub value: String,
    pub ttl: Option<u32>,
}

/// A name answered per query with the nearest healthy POPs' addresses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeoNameConfig {
    pub name: String,
    /// POPs this name may answer with; empty: all.
    #[serde(default)]
    pub pops: Vec<String>,
    /// How many POPs to answer with, nearest first.
    #[serde(default = "one_answer")]
    pub answers: usize,
    /// Short, so that failover reaches clients quickly.
    #[serde(default = "geo_ttl")]
    pub ttl: u32,
}

fn one_answer() -> usize {
    1
}
fn geo_ttl() -> u32 {
    30
}

impl GeoDnsConfig {
    /// Loads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let config: Self = shared::config::load(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        for (i, pop) in self.pops.iter().enumerate() {
            if !names.insert(pop.name.as_str()) {
                return bad(format!("pop[{i}]: duplicate name {:?}", pop.name));
            }
            if !(-90.0..=90.0).contains(&pop.latitude) || !(-180.0..=180.0).contains(&pop.longitude)
            {
                return bad(format!(
                    "pop[{i}] {:?}: latitude/longitude out of range",
                    pop.name
                ));
            }
            if pop.ipv4.is_empty() && pop.ipv6.is_empty() {
                return bad(format!(
                    "pop[{i}] {:?}: needs ipv4 or ipv6 addresses",
                    pop.name
                ));
            }
            if pop.weight <= 0.0 || !pop.weight.is_finite() {
                return bad(format!("pop[{i}] {:?}: weight must be positive", pop.name));
            }
            if let Some(url) = &pop.health_url {
                let ok = url
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")));
                if !ok {
                    return bad(format!(
                        "pop[{i}] {:?}: health_url must be an http(s) URL",
                        pop.name
                    ));
                }
            }
        }
        let known = |n: &str| names.contains(n);
        for (i, name) in self.default_order.iter().enumerate() {
            if !known(name) {
                return bad(format!("default_order[{i}]: unknown pop {name:?}"));
            }
        }
        for (i, o) in self.overrides.iter().enumerate() {
            if !known(&o.pop) {
                return bad(format!("override[{i}]: unknown pop {:?}", o.pop));
            }
        }
        for (z, zone) in self.zones.iter().enumerate() {
            if zone.ns.is_empty() {
                return bad(format!("zone[{z}] {:?}: needs at least one ns", zone.name));
            }
            for (g, geo) in zone.geo.iter().enumerate() {
                if geo.answers == 0 {
                    return bad(format!("zone[{z}].geo[{g}]: answers must be at least 1"));
                }
                if let Some(p) = geo.pops.iter().find(|p| !known(p)) {
                    return bad(format!("zone[{z}].geo[{g}]: unknown pop {p:?}"));
                }
            }
        }
        if self.log.bad_input_interval.is_zero() {
            return bad("log.bad_input_interval must be positive".into());
        }
        if self.health.rise == 0 || self.health.fall == 0 {
            return bad("health.rise and health.fall must be at least 1".into());
        }
        if self.listen.udp_threads > 256 {
            return bad("listen.udp_threads: at most 256 (0 picks one per CPU)".into());
        }
        if self.listen.max_udp_payload < 512 {
            return bad("listen.max_udp_payload must be at least 512".into());
        }
        Ok(())
    }

    /// The override that applies to `ip`: the most specific network containing it.
    pub fn override_for(&self, ip: IpAddr) -> Option<&OverrideConfig> {
        self.overrides
            .iter()
            .filter(|o| o.cidr.contains(&ip))
            .max_by_key(|o| o.cidr.prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/examples/geodns.toml");

    #[test]
    fn the_example_loads_and_defaults_round_trip() {
        let c: GeoDnsConfig = shared::config::parse(EXAMPLE).unwrap();
        c.validate().unwrap();
        let text = shared::config::render(&GeoDnsConfig::default()).unwrap();
        assert_eq!(
            shared::config::parse::<GeoDnsConfig>(&text).unwrap(),
            GeoDnsConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        for section in ["", "[listen]\n", "[geoip]\n", "[health]\n", "[log]\n"] {
            let text = format!("{section}bogus_key = 1\n");
            let err = shared::config::parse::<GeoDnsConfig>(&text).unwrap_err();
            assert!(err.contains("bogus_key"), "{section}: {err}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c: GeoDnsConfig = shared::config::parse(EXAMPLE).unwrap();
        c.default_order.push("nowhere".into());
        assert!(c.validate().unwrap_err().to_string().contains("nowhere"));
        let mut c: GeoDnsConfig = shared::config::parse(EXAMPLE).unwrap();
        c.pops[0].latitude = 123.0;
        assert!(c.validate().unwrap_err().to_string().contains("latitude"));
    }

    #[test]
    fn the_most_specific_override_wins() {
        let mut c: GeoDnsConfig = shared::config::parse(EXAMPLE).unwrap();
        let a = c.pops[0].name.clone();
        let b = c.pops[1].name.clone();
        c.overrides = vec![
            OverrideConfig {
                cidr: "10.0.0.0/8".parse().unwrap(),
                pop: a.clone(),
            },
            OverrideConfig {
                cidr: "10.1.0.0/16".parse().unwrap(),
                pop: b.clone(),
            },
        ];
        let pop = |ip: &str| c.override_for(ip.parse().unwrap()).map(|o| o.pop.clone());
        assert_eq!(pop("10.1.2.3"), Some(b.clone()));
        assert_eq!(pop("10.2.2.3"), Some(a.clone()));
        assert_eq!(pop("192.0.2.1"), None);
    }
}
