//! Writes small GeoIP2-City-shaped MaxMind databases with just the fields geodns reads, for
//! tests, the testnet and benchmarks (real deployments use MaxMind's or DB-IP's files).

use ipnet::IpNet;
use serde::Serialize;

/// One network of the database and where it is.
#[derive(Debug, Clone)]
pub struct CityNetwork<'a> {
    pub network: IpNet,
    pub latitude: f64,
    pub longitude: f64,
    pub accuracy_radius: u16,
    /// ISO 3166-1 alpha-2.
    pub country: &'a str,
    /// Two-letter continent code.
    pub continent: &'a str,
}

#[derive(Serialize)]
struct Record<'a> {
    location: Location,
    country: IsoCode<'a>,
    continent: ContinentCode<'a>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct IsoCode<'a> {
    iso_code: &'a str,
}

#[derive(Serialize)]
struct ContinentCode<'a> {
    code: &'a str,
}

/// The encoded database (database type `GeoIP2-City`).
pub fn encode(networks: &[CityNetwork<'_>]) -> Result<Vec<u8>, mmdb_writer::Error> {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    for n in networks {
        let record = Record {
            location: Location {
                latitude: n.latitude,
                longitude: n.longitude,
                accuracy_radius: n.accuracy_radius,
            },
            country: IsoCode {
                iso_code: n.country,
            },
            continent: ContinentCode { code: n.continent },
        };
        w.insert(n.network, &record)?;
    }
    w.to_bytes()
}
