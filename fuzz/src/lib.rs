//! Helpers shared by the fuzz targets: turning fuzz bytes into numbers and header maps, and the
//! geodns config and database the DNS targets serve.
//!
//! The input formats are line-based text so that seeds are readable and libFuzzer's
//! mutations (which splice and copy byte runs) keep producing well-formed-looking headers.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Splits `data` at the first `\n`: (first line, rest).
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The whitespace-separated decimal numbers of `line`, `n` of them: missing ones are 0, an
/// unparsable or overflowing word counts as `u64::MAX` (so huge values are easy to reach).
pub fn numbers(line: &[u8], n: usize) -> Vec<u64> {
    let mut out: Vec<u64> = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .take(n)
        .map(|w| {
            std::str::from_utf8(w)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX)
        })
        .collect();
    out.resize(n, 0);
    out
}

/// Sections separated by an empty line (`\n\n`); at most `n`, the last one takes the rest.
pub fn sections(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(2).position(|w| w == b"\n\n") {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => break,
        }
    }
    out.push(rest);
    out.resize(n, &[]);
    out
}

/// A header map from `name: value` lines. Lines whose name or value `http` rejects are
/// skipped, as a real HTTP parser would never hand them to the cache; repeated names are
/// appended (several field lines), which the parsers must handle.
pub fn headers(section: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in section.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
        // HeaderMap grows without bound otherwise; libFuzzer inputs are small anyway.
        if map.len() > 256 {
            break;
        }
    }
    map
}

/// The geodns integration tests' world (geodns/tests/data/test-config.toml): three POPs, an
/// override, the zone `cdn.test.` with static records of every supported type, a CNAME to a
/// geo name, TXT big enough to truncate, two geo names.
pub const GEODNS_TEST_CONFIG: &str = include_str!("../../geodns/tests/data/test-config.toml");

/// What the DNS targets serve besides [`GEODNS_TEST_CONFIG`]: `record` and `geo` go into its
/// `cdn.test.` zone (an AAAA glue record, a CNAME chain, a CNAME out of the zone, a geo name
/// limited to one POP), `zone` and `override` are added (a child zone served beside it, an
/// override for the second source address the UDP target sends from).
pub const FUZZ_EXTRAS: &str = r#"
[[record]]
name = "ns1"
type = "AAAA"
value = "2001:db8::53"
[[record]]
name = "a.b.deep"
type = "CNAME"
value = "docs"
[[record]]
name = "out"
type = "CNAME"
value = "elsewhere.example.net."
[[geo]]
name = "eu"
pops = ["fra1"]
[[zone]]
name = "sub.cdn.test."
ns = ["ns1.cdn.test."]
[zone.soa]
mname = "ns1.cdn.test."
rname = "hostmaster.cdn.test."
serial = 1
[[zone.geo]]
name = "@"
answers = 3
[[override]]
cidr = "127.0.0.2/32"
pop = "sin1"
"#;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Extras {
    record: Vec<geodns::config::RecordConfig>,
    geo: Vec<geodns::config::GeoNameConfig>,
    zone: Vec<geodns::config::ZoneConfig>,
    #[serde(rename = "override")]
    overrides: Vec<geodns::config::OverrideConfig>,
}

/// The config the DNS targets serve: [`GEODNS_TEST_CONFIG`] with its database `db` (as
/// [`write_city_db`] writes it), [`FUZZ_EXTRAS`], a second name server out of the zone, a
/// second address for iad1, IPv6 and a weight for sin1; and nothing that changes while a
/// target runs or needs a fixed port: no health URLs (the tests add theirs), no database
/// watching, no admin listener.
pub fn geodns_config(db: &std::path::Path) -> geodns::config::GeoDnsConfig {
    let mut config: geodns::config::GeoDnsConfig =
        shared::config::parse(GEODNS_TEST_CONFIG).expect("the geodns test config parses");
    let extras: Extras = shared::config::parse(FUZZ_EXTRAS).expect("the fuzz extras parse");
    let cdn = &mut config.zones[0];
    assert_eq!(cdn.name, "cdn.test.", "the test config's zone");
    cdn.records.extend(extras.record);
    cdn.geo.extend(extras.geo);
    cdn.ns.push("ns2.example.net.".into());
    config.zones.extend(extras.zone);
    config.overrides.extend(extras.overrides);
    let iad = &mut config.pops[1];
    assert_eq!(iad.name, "iad1", "the test config's second POP");
    iad.ipv4.push("198.51.100.21".parse().unwrap());
    let sin = &mut config.pops[2];
    assert_eq!(sin.name, "sin1", "the test config's third POP");
    sin.ipv6.push("2001:db8:30::1".parse().unwrap());
    sin.weight = 1.5;
    config.geoip.databases = vec![db.to_owned()];
    config.geoip.watch_interval = std::time::Duration::ZERO;
    config.listen.admin = None;
    config.listen.udp_threads = 1;
    config
}

/// A GeoIP2-City-shaped database (as the integration tests write): 10.1/16 Frankfurt, 10.2/16
/// Ashburn, 10.3/16 Singapore, 127.0.0.0/24 Paris (the fuzzers' own address), 2001:db8:1::/48
/// Frankfurt. Written under the system temp directory, one file per process.
pub fn write_city_db() -> std::path::PathBuf {
    use geodns::citydb::CityNetwork;
    let city = |net: &str, latitude, longitude, country, continent| CityNetwork {
        network: net.parse().unwrap(),
        latitude,
        longitude,
        accuracy_radius: 20,
        country,
        continent,
    };
    let networks = [
        city("10.1.0.0/16", 50.11, 8.68, "DE", "EU"),
        city("10.2.0.0/16", 39.04, -77.49, "US", "NA"),
        city("10.3.0.0/16", 1.29, 103.85, "SG", "AS"),
        city("127.0.0.0/24", 48.86, 2.35, "FR", "EU"),
        city("2001:db8:1::/48", 50.11, 8.68, "DE", "EU"),
    ];
    let dir = std::env::temp_dir().join(format!("quicdn-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("city.mmdb");
    std::fs::write(&path, geodns::citydb::encode(&networks).unwrap()).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(numbers(b"1 x  3", 4), vec![1, u64::MAX, 3, 0]);
        assert_eq!(
            sections(b"a\n\nb\n\nc\n\nd", 3),
            vec![&b"a"[..], b"b", b"c\n\nd"]
        );
        let h = headers(b"range: bytes=0-1\nbad line\nx-a:  two\nx-a:b");
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["range"], "bytes=0-1");
        assert_eq!(h.get_all("x-a").iter().next().unwrap(), " two");
    }

    #[test]
    fn the_geodns_config_is_the_test_world_and_the_extras() {
        let config = geodns_config(std::path::Path::new("/nonexistent.mmdb"));
        config.validate().unwrap();
        let zones: Vec<_> = config.zones.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(zones, ["cdn.test.", "sub.cdn.test."]);
        let cdn = &config.zones[0];
        for name in ["big", "docs", "a.b.deep", "out"] {
            assert!(cdn.records.iter().any(|r| r.name == name), "{name}");
        }
        assert!(cdn.geo.iter().any(|g| g.name == "eu"));
        geodns::zone::Zones::new(&config.zones).unwrap();
    }
}
