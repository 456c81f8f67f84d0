//! The testnet's config: regions, where the origin and the GeoDNS live, and the latency table.
//!
//! Every default makes a working three-region world; `testnet --print-config` shows it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The whole testnet description.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestnetConfig {
    /// Namespace names start with `PREFIX-` (at most 8 characters: a-z, 0-9).
    pub prefix: String,
    /// The name the GeoDNS answers for and the POPs serve.
    pub cdn_name: String,
    /// TTL of the geo answer: failover reaches clients within health detection plus this.
    #[serde(with = "humantime_secs")]
    pub dns_ttl: Duration,
    /// GeoDNS health checks of the POPs (over HTTP/3).
    #[serde(with = "humantime_secs")]
    pub health_interval: Duration,
    pub health_rise: u32,
    pub health_fall: u32,
    /// Region whose datacenter holds the origin.
    pub origin_region: String,
    /// Region whose datacenter holds the GeoDNS.
    pub dns_region: String,
    #[serde(rename = "region")]
    pub regions: Vec<RegionConfig>,
    /// Round trips between regions. A region's link to itself is its clients' access network.
    #[serde(rename = "link")]
    pub links: Vec<LinkConfig>,
}

/// One simulated region: a datacenter (router, POP, resolver) and a client network.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// A symmetric link between two regions (or one region and itself).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub between: [String; 2],
    /// Round-trip time; each direction gets half.
    pub rtt_ms: f64,
    /// Packet loss per direction, 0.0 to 1.0.
    #[serde(default)]
    pub loss: f64,
    /// Rate limit per direction in Mbit/s; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mbit: Option<f64>,
}

impl Default for TestnetConfig {
    fn default() -> Self {
        let region = |name: &str, latitude, longitude| RegionConfig {
            name: name.into(),
            latitude,
            longitude,
        };
        let link = |a: &str, b: &str, rtt_ms| LinkConfig {
            between: [a.into(), b.into()],
            rtt_ms,
            loss: 0.0,
            rate_mbit: None,
        };
        Self {
            prefix: "qdn".into(),
            cdn_name: "cdn.quicdn.test".into(),
            dns_ttl: Duration::from_secs(5),
            health_interval: Duration::from_secs(1),
            health_rise: 2,
            health_fall: 2,
            origin_region: "us-east".into(),
            dns_region: "eu-central".into(),
            regions: vec![
                region("us-east", 38.95, -77.45),
                region("eu-central", 50.11, 8.68),
                region("ap-southeast", 1.35, 103.82),
            ],
            // Typical public-internet round trips between these places.
            links: vec![
                link("us-east", "us-east", 8.0),
                link("eu-central", "eu-central", 8.0),
                link("ap-southeast", "ap-southeast", 8.0),
                link("us-east", "eu-central", 90.0),
                link("us-east", "ap-southeast", 220.0),
                link("eu-central", "ap-southeast", 160.0),
            ],
        }
    }
}

impl TestnetConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, references between sections, a complete latency table.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = &self.prefix;
        if p.is_empty()
            || p.len() > 8
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("prefix {p:?}: use 1 to 8 characters a-z, 0-9");
        }
        if !(1..=50).contains(&self.regions.len()) {
            bail!(
                "region: between 1 and 50 regions, got {}",
                self.regions.len()
            );
        }
        let mut names = BTreeSet::new();
        for r in &self.regions {
            let ok = !r.name.is_empty()
                && r.name.len() <= 20
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                bail!(
                    "region name {:?}: use 1 to 20 characters a-z, 0-9, -",
                    r.name
                );
            }
            if !names.insert(r.name.as_str()) {
                bail!("region {:?} is listed twice", r.name);
            }
            if !(-90.0..=90.0).contains(&r.latitude) || !(-180.0..=180.0).contains(&r.longitude) {
                bail!("region {:?}: latitude/longitude out of range", r.name);
            }
        }
        for (field, region) in [
            ("origin_region", &self.origin_region),
            ("dns_region", &self.dns_region),
        ] {
            if !names.contains(region.as_str()) {
                bail!("{field} = {region:?} is not a region");
            }
        }
        if self.dns_ttl.is_zero() || self.health_interval.is_zero() {
            bail!("dns_ttl and health_interval must be above zero");
        }
        if self.health_rise == 0 || self.health_fall == 0 {
            bail!("health_rise and health_fall must be at least 1");
        }
        self.validate_links(&names)
    }

    fn validate_links(&self, names: &BTreeSet<&str>) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        for l in &self.links {
            let [a, b] = &l.between;
            for n in [a, b] {
                if !names.contains(n.as_str()) {
                    bail!("link between {a:?} and {b:?}: {n:?} is not a region");
                }
            }
            if !(0.0..=10_000.0).contains(&l.rtt_ms) {
                bail!("link {a}/{b}: rtt_ms must be 0 to 10000");
            }
            if !(0.0..=1.0).contains(&l.loss) {
                bail!("link {a}/{b}: loss must be 0.0 to 1.0");
            }
            if l.rate_mbit.is_some_and(|r| !(r > 0.0 && r <= 100_000.0)) {
                bail!("link {a}/{b}: rate_mbit must be above 0 and at most 100000");
            }
            let key = if a <= b { (a, b) } else { (b, a) };
            if !seen.insert(key) {
                bail!("link {a}/{b} is listed twice");
            }
        }
        for a in names {
            for b in names {
                if a <= b && !seen.contains(&(&a.to_string(), &b.to_string())) {
                    bail!(
                        "link: no entry between {a:?} and {b:?} (each pair, and each region with itself, needs one)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The link between two regions, in either order.
    pub fn link(&self, a: &str, b: &str) -> Option<&LinkConfig> {
        self.links.iter().find(|l| {
            let [x, y] = &l.between;
            (x == a && y == b) || (x == b && y == a)
        })
    }

    pub fn region(&self, name: &str) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// Durations as whole or fractional seconds ("5s", "1.5s", "500ms") via the shared parser.
mod humantime_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?}: expected e.g. \"5s\" or \"500ms\""))
        })
    }

    fn parse(text: &str) -> Option<Duration> {
        let t = text.trim();
        let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0)
        } else {
            return None;
        };
        let v: f64 = num.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = TestnetConfig::default();
        c.validate().unwrap();
        let text = toml::to_string(&c).unwrap();
        let back: TestnetConfig = toml::from_str(&text).unwrap();
        back.validate().unwrap();
        assert_eq!(back.regions, c.regions);
        assert_eq!(back.dns_ttl, c.dns_ttl);
    }

    const TWO_REGIONS_ONE_LINK_MISSING: &str = r#"
        origin_region = "a"
        dns_region = "a"
        [[region]]
        name = "a"
        latitude = 0.0
        longitude = 0.0
        [[region]]
        name = "b"
        latitude = 1.0
        longitude = 1.0
        [[link]]
        between = ["a", "a"]
        rtt_ms = 1.0
        [[link]]
        between = ["b", "b"]
        rtt_ms = 1.0
    "#;

    #[test]
    fn errors_name_the_problem() {
        let cases: [(&str, &str); 5] = [
            ("prefix = \"Bad_Prefix\"", "prefix"),
            ("origin_region = \"mars\"", "origin_region"),
            ("dns_ttl = \"five\"", "dns_ttl"),
            (
                TWO_REGIONS_ONE_LINK_MISSING,
                "no entry between \"a\" and \"b\"",
            ),
            ("bogus = 1", "bogus"),
        ];
        for (text, needle) in cases {
            let err = match toml::from_str::<TestnetConfig>(text) {
                Err(e) => e.to_string(),
                Ok(c) => format!("{:#}", c.validate().unwrap_err()),
            };
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let c = TestnetConfig::load(&path).unwrap();
        assert_eq!(c.regions.len(), 4);
        let lossy = c.link("sa-east", "sa-east").unwrap();
        assert_eq!((lossy.loss, lossy.rate_mbit), (0.01, Some(20.0)));
    }

    #[test]
    fn link_lookup_is_symmetric() {
        let c = TestnetConfig::default();
        assert_eq!(c.link("eu-central", "us-east").unwrap().rtt_ms, 90.0);
        assert_eq!(c.link("us-east", "eu-central").unwrap().rtt_ms, 90.0);
    }
}
