//! Where is an IP address? Lookups in MaxMind DB files (GeoIP2/GeoLite2 City and Country, and
//! flat DB-IP / @ip-location-db style files), with country and continent centroids for
//! records that carry no coordinates.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A client location.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Coordinates `(latitude, longitude)` when known: from the database record, else the
    /// centroid of its country, else of its continent.
    pub coords: Option<(f64, f64)>,
    /// ISO 3166-1 alpha-2, uppercase.
    pub country: Option<String>,
    /// Two-letter continent code (AF AN AS EU NA OC SA).
    pub continent: Option<String>,
    /// Prefix length of the database network that matched (for the ECS scope in answers), in
    /// the address family of the address passed to [`GeoDb::lookup`]: an IPv4-mapped IPv6
    /// address is looked up as IPv4, and its prefix is reported as 96 + the IPv4 prefix.
    pub prefix_len: u8,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The file could not be read, or is not a MaxMind DB.
    #[error("GeoIP database {}: {message}", path.display())]
    Open { path: PathBuf, message: String },
}

/// One opened file.
struct Source {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

/// One or more MaxMind DB files, queried in order; the first with data for the address wins.
pub struct GeoDb {
    sources: Vec<Source>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The readers hold whole files: show only which ones.
        f.debug_list()
            .entries(self.sources.iter().map(|s| &s.path))
            .finish()
    }
}

impl GeoDb {
    /// Opens every file. Each is read into memory rather than mapped, because a reload may
    /// replace the file while the old database is still answering queries.
    pub fn open(paths: &[PathBuf]) -> Result<Self, GeoError> {
        let sources = paths
            .iter()
            .map(|path| open_one(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { sources })
    }

    /// An empty database: every lookup is `None`.
    pub fn empty() -> Self {
        Self {
            sources: Vec::new(),
        }
    }

    /// True when no file is loaded.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Where `ip` is, from the first file with a usable record for it; `None` when no file
    /// knows it.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        // Clients on dual-stack sockets and ECS options may carry IPv4 as ::ffff:a.b.c.d; the
        // IPv4 lookup works in IPv4-only files too.
        let (query, mapped) = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), true),
                None => (ip, false),
            },
            IpAddr::V4(_) => (ip, false),
        };
        for source in &self.sources {
            // An IPv4-only file rejects IPv6 lookups with an error: skip it.
            if query.is_ipv6() && source.reader.metadata().ip_version == 4 {
                continue;
            }
            match source.lookup(query) {
                Ok(Some(mut location)) => {
                    if mapped {
                        location.prefix_len += 96;
                    }
                    return Some(location);
                }
                Ok(None) => {}
                // One bad record should not stop the next file from answering; debug level
                // because this runs per query.
                Err(e) => {
                    tracing::debug!(path = %source.path.display(), %ip, "GeoIP lookup failed: {e}")
                }
            }
        }
        None
    }

    /// Metadata for logs, one line per file.
    pub fn describe(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| {
                let m = s.reader.metadata();
                format!(
                    "{}: {} (IPv{}, {} nodes, built {})",
                    s.path.display(),
                    m.database_type,
                    m.ip_version,
                    m.node_count,
                    m.build_epoch
                )
            })
            .collect()
    }
}

fn open_one(path: &Path) -> Result<Source, GeoError> {
    let err = |message: String| GeoError::Open {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let reader = Reader::from_source(bytes).map_err(|e| err(e.to_string()))?;
    match reader.metadata().ip_version {
        4 | 6 => Ok(Source {
            path: path.to_path_buf(),
            reader,
        }),
        v => Err(err(format!("unsupported ip_version {v}"))),
    }
}

impl Source {
    /// `Ok(None)` when the file has no usable record for `ip`.
    fn lookup(&self, ip: IpAddr) -> Result<Option<Location>, maxminddb::MaxMindDbError> {
        let result = self.reader.lookup(ip)?;
        let Some(record) = result.decode::<Record<'_>>()? else {
            return Ok(None);
        };
        let host_len: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match result.network() {
            Ok(net) if net.is_ipv4() == ip.is_ipv4() => net.prefix(),
            // An IPv4 address matched above the IPv4 subtree of an IPv6 file (a network wider
            // than ::/96): the whole IPv4 space shares the record.
            Ok(net) if ip.is_ipv4() => net.prefix().saturating_sub(96).min(32),
            // Cannot happen for the lookups made here; the host length is the safe scope.
            _ => host_len,
        };
        Ok(record.into_location(prefix_len.min(host_len)))
    }
}

/// The fields read from any of the supported schemas; everything else in a record is skipped.
#[derive(Deserialize)]
struct Record<'a> {
    /// GeoIP2 City.
    location: Option<Loc>,
    /// GeoIP2 City and Country.
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    registered_country: Option<Country<'a>>,
    #[serde(borrow)]
    continent: Option<Continent<'a>>,
    /// Flat schema (@ip-location-db, DB-IP style).
    #[serde(default, deserialize_with = "coordinate")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "coordinate")]
    longitude: Option<f64>,
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Loc {
    #[serde(default, deserialize_with = "coordinate")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "coordinate")]
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Continent<'a> {
    code: Option<&'a str>,
}

impl Record<'_> {
    fn into_location(self, prefix_len: u8) -> Option<Location> {
        let coords = self
            .location
            .and_then(|l| valid_coords(l.latitude, l.longitude))
            .or_else(|| valid_coords(self.latitude, self.longitude));
        let country = [
            self.country.and_then(|c| c.iso_code),
            self.registered_country.and_then(|c| c.iso_code),
            self.country_code,
        ]
        .into_iter()
        .flatten()
        .find_map(two_letters);
        let continent = self.continent.and_then(|c| c.code).and_then(two_letters);
        let coords = coords
            .or_else(|| country.as_deref().and_then(country_centroid))
            .or_else(|| continent.as_deref().and_then(continent_centroid));
        if coords.is_none() && country.is_none() && continent.is_none() {
            return None;
        }
        Some(Location {
            coords,
            country,
            continent,
            prefix_len,
        })
    }
}

/// Both coordinates, when present and on the globe (some files use out-of-range placeholders).
fn valid_coords(lat: Option<f64>, lon: Option<f64>) -> Option<(f64, f64)> {
    let (lat, lon) = (lat?, lon?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

/// An uppercase two-letter code, or `None` for anything else (empty strings, placeholders).
fn two_letters(code: &str) -> Option<String> {
    (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// Reads a coordinate stored as a double, a 32-bit float (the @ip-location-db files), an
/// integer or a numeric string. maxminddb's typed `f64` decoding accepts only doubles.
fn coordinate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    struct Number;
    impl Visitor<'_> for Number {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v).filter(|v| v.is_finite()))
        }
        fn visit_f32<E: de::Error>(self, v: f32) -> Result<Self::Value, E> {
            self.visit_f64(f64::from(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Number)
}

/// Approximate centers of the seven continents, for records with only a continent code.
pub fn continent_centroid(code: &str) -> Option<(f64, f64)> {
    let c = match code.to_ascii_uppercase().as_str() {
        "AF" => (1.5, 17.3),
        "AN" => (-82.9, 135.0),
        "AS" => (43.7, 87.3),
        "EU" => (54.9, 25.3),
        "NA" => (48.4, -100.4),
        "OC" => (-22.7, 140.0),
        "SA" => (-15.6, -56.1),
        _ => return None,
    };
    Some(c)
}

/// Approximate geographic center of a country (ISO 3166-1 alpha-2, any case).
pub fn country_centroid(iso: &str) -> Option<(f64, f64)> {
    let iso = iso.to_ascii_uppercase();
    COUNTRY_CENTROIDS
        .binary_search_by(|(code, _, _)| (*code).cmp(iso.as_str()))
        .ok()
        .map(|i| (COUNTRY_CENTROIDS[i].1, COUNTRY_CENTROIDS[i].2))
}

/// `(ISO 3166-1 alpha-2, latitude, longitude)`, sorted by code for binary search: every
/// ISO 3166-1 country plus XK (Kosovo, used by MaxMind). Mostly after Google's DSPL
/// `countries.csv`, rounded to 0.01°; Sudan moved north after South Sudan's split.
#[rustfmt::skip]
static COUNTRY_CENTROIDS: &[(&str, f64, f64)] = &[
    ("AD", 42.55, 1.60), ("AE", 23.42, 53.85), ("AF", 33.94, 67.71), ("AG", 17.06, -61.80),
    ("AI", 18.22, -63.07), ("AL", 41.15, 20.17), ("AM", 40.07, 45.04), ("AO", -11.20, 17.87),
    ("AQ", -75.25, -0.07), ("AR", -38.42, -63.62), ("AS", -14.27, -170.13), ("AT", 47.52, 14.55),
    ("AU", -25.27, 133.78), ("AW", 12.52, -69.97), ("AX", 60.18, 19.92), ("AZ", 40.14, 47.58),
    ("BA", 43.92, 17.68), ("BB", 13.19, -59.54), ("BD", 23.68, 90.36), ("BE", 50.50, 4.47),
    ("BF", 12.24, -1.56), ("BG", 42.73, 25.49), ("BH", 25.93, 50.64), ("BI", -3.37, 29.92),
    ("BJ", 9.31, 2.32), ("BL", 17.90, -62.83), ("BM", 32.32, -64.76), ("BN", 4.54, 114.73),
    ("BO", -16.29, -63.59), ("BQ", 12.18, -68.24), ("BR", -14.24, -51.93), ("BS", 25.03, -77.40),
    ("BT", 27.51, 90.43), ("BV", -54.42, 3.41), ("BW", -22.33, 24.68), ("BY", 53.71, 27.95),
    ("BZ", 17.19, -88.50), ("CA", 56.13, -106.35), ("CC", -12.16, 96.87), ("CD", -4.04, 21.76),
    ("CF", 6.61, 20.94), ("CG", -0.23, 15.83), ("CH", 46.82, 8.23), ("CI", 7.54, -5.55),
    ("CK", -21.24, -159.78), ("CL", -35.68, -71.54), ("CM", 7.37, 12.35), ("CN", 35.86, 104.20),
    ("CO", 4.57, -74.30), ("CR", 9.75, -83.75), ("CU", 21.52, -77.78), ("CV", 16.00, -24.01),
    ("CW", 12.17, -68.99), ("CX", -10.45, 105.69), ("CY", 35.13, 33.43), ("CZ", 49.82, 15.47),
    ("DE", 51.17, 10.45), ("DJ", 11.83, 42.59), ("DK", 56.26, 9.50), ("DM", 15.41, -61.37),
    ("DO", 18.74, -70.16), ("DZ", 28.03, 1.66), ("EC", -1.83, -78.18), ("EE", 58.60, 25.01),
    ("EG", 26.82, 30.80), ("EH", 24.22, -12.89), ("ER", 15.18, 39.78), ("ES", 40.46, -3.75),
    ("ET", 9.14, 40.49), ("FI", 61.92, 25.75), ("FJ", -16.58, 179.41), ("FK", -51.80, -59.52),
    ("FM", 7.43, 150.55), ("FO", 61.89, -6.91), ("FR", 46.23, 2.21), ("GA", -0.80, 11.61),
    ("GB", 55.38, -3.44), ("GD", 12.26, -61.60), ("GE", 42.32, 43.36), ("GF", 3.93, -53.13),
    ("GG", 49.47, -2.59), ("GH", 7.95, -1.02), ("GI", 36.14, -5.35), ("GL", 71.71, -42.60),
    ("GM", 13.44, -15.31), ("GN", 9.95, -9.70), ("GP", 17.00, -62.07), ("GQ", 1.65, 10.27),
    ("GR", 39.07, 21.82), ("GS", -54.43, -36.59), ("GT", 15.78, -90.23), ("GU", 13.44, 144.79),
    ("GW", 11.80, -15.18), ("GY", 4.86, -58.93), ("HK", 22.40, 114.11), ("HM", -53.08, 73.50),
    ("HN", 15.20, -86.24), ("HR", 45.10, 15.20), ("HT", 18.97, -72.29), ("HU", 47.16, 19.50),
    ("ID", -0.79, 113.92), ("IE", 53.41, -8.24), ("IL", 31.05, 34.85), ("IM", 54.24, -4.55),
    ("IN", 20.59, 78.96), ("IO", -6.34, 71.88), ("IQ", 33.22, 43.68), ("IR", 32.43, 53.69),
    ("IS", 64.96, -19.02), ("IT", 41.87, 12.57), ("JE", 49.21, -2.13), ("JM", 18.11, -77.30),
    ("JO", 30.59, 36.24), ("JP", 36.20, 138.25), ("KE", -0.02, 37.91), ("KG", 41.20, 74.77),
    ("KH", 12.57, 104.99), ("KI", -3.37, -168.73), ("KM", -11.88, 43.87), ("KN", 17.36, -62.78),
    ("KP", 40.34, 127.51), ("KR", 35.91, 127.77), ("KW", 29.31, 47.48), ("KY", 19.51, -80.57),
    ("KZ", 48.02, 66.92), ("LA", 19.86, 102.50), ("LB", 33.85, 35.86), ("LC", 13.91, -60.98),
    ("LI", 47.17, 9.56), ("LK", 7.87, 80.77), ("LR", 6.43, -9.43), ("LS", -29.61, 28.23),
    ("LT", 55.17, 23.88), ("LU", 49.82, 6.13), ("LV", 56.88, 24.60), ("LY", 26.34, 17.23),
    ("MA", 31.79, -7.09), ("MC", 43.75, 7.41), ("MD", 47.41, 28.37), ("ME", 42.71, 19.37),
    ("MF", 18.07, -63.05), ("MG", -18.77, 46.87), ("MH", 7.13, 171.18), ("MK", 41.61, 21.75),
    ("ML", 17.57, -4.00), ("MM", 21.91, 95.96), ("MN", 46.86, 103.85), ("MO", 22.20, 113.54),
    ("MP", 17.33, 145.38), ("MQ", 14.64, -61.02), ("MR", 21.01, -10.94), ("MS", 16.74, -62.19),
    ("MT", 35.94, 14.38), ("MU", -20.35, 57.55), ("MV", 3.20, 73.22), ("MW", -13.25, 34.30),
    ("MX", 23.63, -102.55), ("MY", 4.21, 101.98), ("MZ", -18.67, 35.53), ("NA", -22.96, 18.49),
    ("NC", -20.90, 165.62), ("NE", 17.61, 8.08), ("NF", -29.04, 167.95), ("NG", 9.08, 8.68),
    ("NI", 12.87, -85.21), ("NL", 52.13, 5.29), ("NO", 60.47, 8.47), ("NP", 28.39, 84.12),
    ("NR", -0.52, 166.93), ("NU", -19.05, -169.87), ("NZ", -40.90, 174.89), ("OM", 21.51, 55.92),
    ("PA", 8.54, -80.78), ("PE", -9.19, -75.02), ("PF", -17.68, -149.41), ("PG", -6.31, 143.96),
    ("PH", 12.88, 121.77), ("PK", 30.38, 69.35), ("PL", 51.92, 19.15), ("PM", 46.94, -56.27),
    ("PN", -24.70, -127.44), ("PR", 18.22, -66.59), ("PS", 31.95, 35.23), ("PT", 39.40, -8.22),
    ("PW", 7.51, 134.58), ("PY", -23.44, -58.44), ("QA", 25.35, 51.18), ("RE", -21.12, 55.54),
    ("RO", 45.94, 24.97), ("RS", 44.02, 21.01), ("RU", 61.52, 105.32), ("RW", -1.94, 29.87),
    ("SA", 23.89, 45.08), ("SB", -9.65, 160.16), ("SC", -4.68, 55.49), ("SD", 15.50, 30.00),
    ("SE", 60.13, 18.64), ("SG", 1.35, 103.82), ("SH", -24.14, -10.03), ("SI", 46.15, 15.00),
    ("SJ", 77.55, 23.67), ("SK", 48.67, 19.70), ("SL", 8.46, -11.78), ("SM", 43.94, 12.46),
    ("SN", 14.50, -14.45), ("SO", 5.15, 46.20), ("SR", 3.92, -56.03), ("SS", 7.00, 30.00),
    ("ST", 0.19, 6.61), ("SV", 13.79, -88.90), ("SX", 18.04, -63.06), ("SY", 34.80, 39.00),
    ("SZ", -26.52, 31.47), ("TC", 21.69, -71.80), ("TD", 15.45, 18.73), ("TF", -49.28, 69.35),
    ("TG", 8.62, 0.82), ("TH", 15.87, 100.99), ("TJ", 38.86, 71.28), ("TK", -8.97, -171.86),
    ("TL", -8.87, 125.73), ("TM", 38.97, 59.56), ("TN", 33.89, 9.54), ("TO", -21.18, -175.20),
    ("TR", 38.96, 35.24), ("TT", 10.69, -61.22), ("TV", -7.11, 177.65), ("TW", 23.70, 120.96),
    ("TZ", -6.37, 34.89), ("UA", 48.38, 31.17), ("UG", 1.37, 32.29), ("UM", 19.28, 166.65),
    ("US", 37.09, -95.71), ("UY", -32.52, -55.77), ("UZ", 41.38, 64.59), ("VA", 41.90, 12.45),
    ("VC", 12.98, -61.29), ("VE", 6.42, -66.59), ("VG", 18.42, -64.64), ("VI", 18.34, -64.90),
    ("VN", 14.06, 108.28), ("VU", -15.38, 166.96), ("WF", -13.77, -177.16),
    ("WS", -13.76, -172.10), ("XK", 42.60, 20.90), ("YE", 15.55, 48.52), ("YT", -12.83, 45.17),
    ("ZA", -30.56, 22.94), ("ZM", -13.13, 27.85), ("ZW", -19.02, 29.15),
];

#[cfg(test)]
mod tests {
    use ipnet::IpNet;
    use mmdb_writer::{IpVersion, Writer};
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct IsoCode {
        iso_code: &'static str,
    }
    #[derive(Serialize)]
    struct ContinentCode {
        code: &'static str,
    }
    #[derive(Serialize)]
    struct CountryRecord {
        country: Option<IsoCode>,
        registered_country: Option<IsoCode>,
        continent: Option<ContinentCode>,
    }
    /// As in the @ip-location-db files: 32-bit floats, no continent.
    #[derive(Serialize)]
    struct FlatRecord {
        country_code: &'static str,
        latitude: f32,
        longitude: f32,
        city: &'static str,
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Writes `writer` to a file in `dir` and returns its path.
    fn save(dir: &tempfile::TempDir, name: &str, writer: &Writer) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, writer.to_bytes().expect("serialize db")).expect("write db");
        path
    }

    fn city_db(dir: &tempfile::TempDir) -> PathBuf {
        let city = |net: &str, latitude, longitude, accuracy_radius, country, continent| {
            crate::citydb::CityNetwork {
                network: net.parse().expect("test network"),
                latitude,
                longitude,
                accuracy_radius,
                country,
                continent,
            }
        };
        let networks = [
            city("10.1.0.0/16", 50.1109, 8.6821, 20, "DE", "EU"),
            city("2001:db8::/32", 1.2897, 103.8501, 50, "SG", "AS"),
        ];
        let path = dir.path().join("city.mmdb");
        let bytes = crate::citydb::encode(&networks).expect("serialize db");
        std::fs::write(&path, bytes).expect("write db");
        path
    }

    fn open(paths: &[PathBuf]) -> GeoDb {
        GeoDb::open(paths).expect("open test db")
    }

    #[test]
    fn city_schema_ipv4_ipv6_and_mapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&[city_db(&dir)]);

        let de = db.lookup(ip("10.1.2.3")).expect("10.1.2.3 is in the db");
        assert_eq!(
            de,
            Location {
                coords: Some((50.1109, 8.6821)),
                country: Some("DE".into()),
                continent: Some("EU".into()),
                prefix_len: 16,
            }
        );

        let sg = db
            .lookup(ip("2001:db8:1::5"))
            .expect("2001:db8:1::5 is in the db");
        assert_eq!(sg.coords, Some((1.2897, 103.8501)));
        assert_eq!(sg.country.as_deref(), Some("SG"));
        assert_eq!(sg.continent.as_deref(), Some("AS"));
        assert_eq!(sg.prefix_len, 32);

        // IPv4-mapped: looked up as IPv4, prefix in IPv6 terms.
        let mapped = db.lookup(ip("::ffff:10.1.0.9")).expect("mapped address");
        assert_eq!(mapped.country.as_deref(), Some("DE"));
        assert_eq!(mapped.prefix_len, 96 + 16);
    }

    #[test]
    fn missing_address_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(&[city_db(&dir)]);
        assert_eq!(db.lookup(ip("10.2.0.1")), None);
        assert_eq!(db.lookup(ip("192.0.2.1")), None);
        assert_eq!(db.lookup(ip("2001:db9::1")), None);
        assert_eq!(db.lookup(ip("::ffff:192.0.2.1")), None);
        assert_eq!(GeoDb::empty().lookup(ip("10.1.2.3")), None);
        assert!(GeoDb::empty().is_empty());
    }

    #[test]
    fn ipv4_in_ipv6_tree_reports_ipv4_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new("GeoIP2-City");
        let rec = CountryRecord {
            country: Some(IsoCode { iso_code: "NL" }),
            registered_country: None,
            continent: None,
        };
        w.insert(net("10.1.128.0/17"), &rec).expect("insert");
        let db = open(&[save(&dir, "v6.mmdb", &w)]);
        assert_eq!(db.describe().len(), 1);
        assert!(db.describe()[0].contains("IPv6"), "{:?}", db.describe());
        let loc = db.lookup(ip("10.1.200.1")).expect("found");
        assert_eq!(loc.prefix_len, 17);
        assert_eq!(db.lookup(ip("10.1.1.1")), None);
    }

    #[test]
    fn country_schema_uses_country_centroid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new("GeoIP2-Country");
        let fr = CountryRecord {
            country: Some(IsoCode { iso_code: "FR" }),
            registered_country: Some(IsoCode { iso_code: "FR" }),
            continent: Some(ContinentCode { code: "EU" }),
        };
        // Only the registered country (e.g. an anycast network): still a country.
        let registered = CountryRecord {
            country: None,
            registered_country: Some(IsoCode { iso_code: "jp" }),
            continent: None,
        };
        // Only a continent: its centroid.
        let continent_only = CountryRecord {
            country: None,
            registered_country: None,
            continent: Some(ContinentCode { code: "SA" }),
        };
        let nothing = CountryRecord {
            country: None,
            registered_country: None,
            continent: None,
        };
        w.insert(net("10.1.0.0/24"), &fr).expect("insert");
        w.insert(net("10.1.1.0/24"), &registered).expect("insert");
        w.insert(net("10.1.2.0/24"), &continent_only)
            .expect("insert");
        w.insert(net("10.1.3.0/24"), &nothing).expect("insert");
        let db = open(&[save(&dir, "country.mmdb", &w)]);

        let fr = db.lookup(ip("10.1.0.1")).expect("FR");
        assert_eq!(fr.coords, country_centroid("FR"));
        assert!(fr.coords.is_some());
        assert_eq!(fr.country.as_deref(), Some("FR"));
        assert_eq!(fr.prefix_len, 24);

        let jp = db.lookup(ip("10.1.1.1")).expect("JP");
        assert_eq!(jp.country.as_deref(), Some("JP"));
        assert_eq!(jp.coords, country_centroid("JP"));
        assert_eq!(jp.continent, None);

        let sa = db.lookup(ip("10.1.2.1")).expect("SA");
        assert_eq!(sa.country, None);
        assert_eq!(sa.continent.as_deref(), Some("SA"));
        assert_eq!(sa.coords, continent_centroid("SA"));
        assert!(sa.coords.is_some());

        assert_eq!(db.lookup(ip("10.1.3.1")), None);
    }

    #[test]
    fn flat_schema_with_f32_coordinates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = Writer::new("geolite2-city-ipv6");
        let rec = FlatRecord {
            country_code: "GB",
            latitude: 51.4036,
            longitude: -0.7618,
            city: "Bracknell",
        };
        w.insert(net("10.1.0.0/25"), &rec).expect("insert");
        w.insert(net("2001:db8::/48"), &rec).expect("insert");
        let db = open(&[save(&dir, "flat.mmdb", &w)]);
        for addr in ["10.1.0.100", "2001:db8::1"] {
            let loc = db.lookup(ip(addr)).expect("flat record");
            let (lat, lon) = loc.coords.expect("coordinates");
            assert!(
                (lat - 51.4036).abs() < 1e-4 && (lon + 0.7618).abs() < 1e-4,
                "{loc:?}"
            );
            assert_eq!(loc.country.as_deref(), Some("GB"));
            assert_eq!(loc.continent, None);
        }
        assert_eq!(db.lookup(ip("10.1.0.100")).map(|l| l.prefix_len), Some(25));
        assert_eq!(db.lookup(ip("10.1.0.200")), None);
    }

    #[test]
    fn ipv4_only_file_is_skipped_for_ipv6() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v4 = Writer::builder("geolite2-city-ipv4")
            .ip_version(IpVersion::V4)
            .build();
        let rec = FlatRecord {
            country_code: "US",
            latitude: 37.751,
            longitude: -97.822,
            city: "",
        };
        v4.insert(net("10.1.0.0/16"), &rec).expect("insert");
        let v4_path = save(&dir, "v4.mmdb", &v4);
        let db = open(&[v4_path.clone(), city_db(&dir)]);
        assert!(db.describe()[0].contains("IPv4"), "{:?}", db.describe());

        let us = db.lookup(ip("10.1.0.1")).expect("from the IPv4 file");
        assert_eq!(us.country.as_deref(), Some("US"));
        assert_eq!(us.prefix_len, 16);
        // Mapped addresses reach the IPv4-only file.
        let mapped = db.lookup(ip("::ffff:10.1.0.1")).expect("mapped");
        assert_eq!(mapped.country.as_deref(), Some("US"));
        assert_eq!(mapped.prefix_len, 112);
        // IPv6 skips the IPv4 file and is answered by the second.
        let sg = db.lookup(ip("2001:db8::1")).expect("from the IPv6 file");
        assert_eq!(sg.country.as_deref(), Some("SG"));

        // And with the IPv4 file alone, IPv6 is simply unknown.
        let only_v4 = open(&[v4_path]);
        assert_eq!(only_v4.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn first_file_with_data_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = Writer::new("GeoIP2-Country");
        let nl = CountryRecord {
            country: Some(IsoCode { iso_code: "NL" }),
            registered_country: None,
            continent: Some(ContinentCode { code: "EU" }),
        };
        first.insert(net("10.9.0.0/16"), &nl).expect("insert");
        first.insert(net("10.1.2.0/24"), &nl).expect("insert");
        let first = save(&dir, "first.mmdb", &first);
        let db = open(&[first, city_db(&dir)]);
        // Not in the first file: the second answers.
        assert_eq!(
            db.lookup(ip("10.1.9.9")).and_then(|l| l.country),
            Some("DE".into())
        );
        // In both: the first wins.
        assert_eq!(
            db.lookup(ip("10.1.2.3")).and_then(|l| l.country),
            Some("NL".into())
        );
        assert_eq!(db.lookup(ip("10.9.0.1")).map(|l| l.prefix_len), Some(16));
        assert_eq!(db.describe().len(), 2);
    }

    #[test]
    fn open_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.mmdb");
        let corrupt = dir.path().join("corrupt.mmdb");
        std::fs::write(&corrupt, b"not a maxmind database").expect("write");
        let good = city_db(&dir);
        for bad in [missing, corrupt] {
            let err = GeoDb::open(&[good.clone(), bad.clone()]).expect_err("must fail");
            let GeoError::Open { path, .. } = &err;
            assert_eq!(path, &bad);
            assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
        }
        assert!(GeoDb::open(&[]).expect("no files").is_empty());
    }

    #[test]
    fn centroids() {
        // Sorted, unique and on the globe, or binary search and distances go wrong.
        assert!(COUNTRY_CENTROIDS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(COUNTRY_CENTROIDS.len() >= 249);
        for &(code, lat, lon) in COUNTRY_CENTROIDS {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(
                (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon),
                "{code}"
            );
        }
        let de = country_centroid("de").expect("DE");
        assert!((de.0 - 51.17).abs() < 0.5 && (de.1 - 10.45).abs() < 0.5);
        assert_eq!(country_centroid("ZZ"), None);
        assert_eq!(country_centroid(""), None);
        for c in ["AF", "AN", "AS", "EU", "NA", "OC", "SA"] {
            assert!(continent_centroid(c).is_some(), "{c}");
        }
        assert_eq!(continent_centroid("XX"), None);
    }
}
