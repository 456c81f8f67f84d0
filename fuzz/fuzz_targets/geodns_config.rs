//! `geodns::config::GeoDnsConfig` from TOML text: parse and `validate`, then build the zones
//! (`geodns::zone::Zones::new`, which also runs for configs that fail validation: it is
//! pure) and, for a valid config, the whole query state (`geodns::server::State::build`,
//! with the database list emptied so no fuzzed path is opened). Each zone built is asked for
//! its apex SOA and NS and a few other names.
//!
//! Input: the config file's bytes (non-UTF-8 input is skipped, as `load` rejects it).
#![no_main]

use geodns::config::GeoDnsConfig;
use geodns::zone::{Answer, Zones};
use hickory_proto::rr::{LowerName, Name, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = shared::config::parse::<GeoDnsConfig>(text) else {
        return;
    };
    let valid = config.validate().is_ok();
    if let Ok(zones) = Zones::new(&config.zones) {
        ask(&zones);
    }
    if valid {
        config.geoip.databases.clear();
        let _ = geodns::server::State::build(config.clone());
        let rendered = shared::config::render(&config).expect("a valid config renders");
        let back: GeoDnsConfig = shared::config::parse(&rendered)
            .unwrap_or_else(|e| panic!("rendered config does not parse: {e}\n{rendered}"));
        assert_eq!(back, config, "render/parse round trip differs:\n{rendered}");
    }
});

fn ask(zones: &Zones) {
    let mut geo = |_: &geodns::zone::GeoTarget, rtype: RecordType| match rtype {
        RecordType::A => vec!["192.0.2.1".parse().unwrap()],
        _ => vec!["2001:db8::1".parse().unwrap()],
    };
    let apexes: Vec<LowerName> = zones.apexes().cloned().collect();
    for apex in &apexes {
        // The apex always has its SOA (and NS): a zone that cannot answer them is broken.
        for qtype in [RecordType::SOA, RecordType::NS] {
            match zones.answer(apex, qtype, &mut geo) {
                Answer::Authoritative { answers, .. } => {
                    assert!(!answers.is_empty(), "no {qtype} at apex {apex}")
                }
                other => panic!("{qtype} at apex {apex}: {other:?}"),
            }
        }
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::ANY,
            RecordType::TXT,
        ] {
            let _ = zones.answer(apex, qtype, &mut geo);
        }
        let www = LowerName::from(
            Name::from_ascii("www")
                .unwrap()
                .append_domain(&Name::from(apex))
                .unwrap(),
        );
        let _ = zones.answer(&www, RecordType::A, &mut geo);
    }
    for target in zones.geo_targets() {
        let name = LowerName::from(&target.name);
        assert!(zones.is_geo(&name), "geo target {name} is not geo");
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let _ = zones.answer(&name, qtype, &mut geo);
        }
    }
}
