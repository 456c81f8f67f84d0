//! Helpers shared by the fuzz targets: turning fuzz bytes into numbers and header maps.
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
}

/// The geodns config the DNS targets serve: the integration tests' zone (static records of
/// every supported type, a CNAME chain, TXT big enough to truncate, two geo names) and POPs
/// without health URLs, so that answers never change while a target runs. `{db}` is the path
/// of the database [`write_city_db`] writes.
pub const GEODNS_CONFIG: &str = r#"
default_order = ["iad1", "fra1", "sin1"]
[listen]
dns = "127.0.0.1:0"
udp_threads = 1
[geoip]
databases = ["{db}"]
watch_interval = "0s"
[[pop]]
name = "fra1"
latitude = 50.11
longitude = 8.68
ipv4 = ["198.51.100.10"]
ipv6 = ["2001:db8:10::1"]
[[pop]]
name = "iad1"
latitude = 38.95
longitude = -77.45
ipv4 = ["198.51.100.20", "198.51.100.21"]
[[pop]]
name = "sin1"
latitude = 1.35
longitude = 103.82
ipv4 = ["198.51.100.30"]
ipv6 = ["2001:db8:30::1"]
weight = 1.5
[[override]]
cidr = "127.0.0.2/32"
pop = "sin1"
[[override]]
cidr = "10.9.0.0/16"
pop = "fra1"
[[zone]]
name = "cdn.test."
ns = ["ns1.cdn.test.", "ns2.example.net."]
ttl = 3600
[zone.soa]
mname = "ns1.cdn.test."
rname = "hostmaster.cdn.test."
serial = 7
minimum = 60
[[zone.record]]
name = "ns1"
type = "A"
value = "192.0.2.53"
[[zone.record]]
name = "ns1"
type = "AAAA"
value = "2001:db8::53"
[[zone.record]]
name = "@"
type = "TXT"
value = "hello"
[[zone.record]]
name = "@"
type = "MX"
value = "10 mail.example.net."
[[zone.record]]
name = "@"
type = "CAA"
value = '0 issue "letsencrypt.org"'
[[zone.record]]
name = "docs"
type = "CNAME"
value = "www"
[[zone.record]]
name = "a.b.deep"
type = "CNAME"
value = "docs"
[[zone.record]]
name = "out"
type = "CNAME"
value = "elsewhere.example.net."
[[zone.record]]
name = "big"
type = "TXT"
value = "{big1}"
[[zone.record]]
name = "big"
type = "TXT"
value = "{big2}"
[[zone.record]]
name = "big"
type = "TXT"
value = "{big3}"
[[zone.geo]]
name = "www"
[[zone.geo]]
name = "two"
answers = 2
ttl = 20
[[zone.geo]]
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
"#;

/// [`GEODNS_CONFIG`] with its database path filled in, parsed.
pub fn geodns_config(db: &std::path::Path) -> geodns::config::GeoDnsConfig {
    let text = GEODNS_CONFIG
        .replace("{db}", &db.display().to_string())
        .replace("{big1}", &"a".repeat(250))
        .replace("{big2}", &"b".repeat(250))
        .replace("{big3}", &"c".repeat(250));
    let mut config: geodns::config::GeoDnsConfig =
        shared::config::parse(&text).expect("the fuzz geodns config parses");
    // No admin listener (the default is a fixed port, and the DNS target starts two servers).
    config.listen.admin = None;
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
