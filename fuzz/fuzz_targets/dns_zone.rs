//! `geodns::zone::Zones::answer`, the authoritative answer function without sockets, over
//! the fuzz config's zones (see `geodns_config` in src/lib.rs).
//!
//! Input: two bytes of query type (big-endian), one byte choosing the name's form (even: text,
//! relative names are taken under `cdn.test.`; odd: DNS wire format), then the name.
#![no_main]

use std::sync::OnceLock;

use geodns::zone::{Answer, GeoTarget, Zones};
use hickory_proto::rr::{LowerName, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use libfuzzer_sys::fuzz_target;

fn zones() -> &'static Zones {
    static ZONES: OnceLock<Zones> = OnceLock::new();
    ZONES.get_or_init(|| {
        let config = quicdn_fuzz::geodns_config(std::path::Path::new("/nonexistent"));
        Zones::new(&config.zones).expect("the fuzz zones build")
    })
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, form, name @ ..] = data else {
        return;
    };
    let qtype = RecordType::from(u16::from_be_bytes([*hi, *lo]));
    let name = if form % 2 == 0 {
        let Ok(text) = std::str::from_utf8(name) else {
            return;
        };
        let Ok(mut name) = Name::from_ascii(text) else {
            return;
        };
        if !name.is_fqdn() {
            let Ok(under) = name.append_domain(&Name::from_ascii("cdn.test.").unwrap()) else {
                return;
            };
            name = under;
        }
        name
    } else {
        let mut decoder = BinDecoder::new(name);
        let Ok(name) = Name::read(&mut decoder) else {
            return;
        };
        name
    };
    let qname = LowerName::from(&name);
    let zones = zones();
    let mut geo = |target: &GeoTarget, rtype: RecordType| {
        // Documented: called for a geo name with A or AAAA only.
        assert!(
            matches!(rtype, RecordType::A | RecordType::AAAA),
            "geo asked for {rtype} of {} (query {qtype})",
            target.name
        );
        match rtype {
            RecordType::A => vec!["192.0.2.1".parse().unwrap()],
            _ => vec!["2001:db8::1".parse().unwrap()],
        }
    };
    let answer = zones.answer(&qname, qtype, &mut geo);
    let ours = zones.apexes().any(|apex| apex.zone_of(&qname));
    match &answer {
        Answer::Refused => assert!(
            !ours || matches!(qtype, RecordType::AXFR | RecordType::IXFR),
            "{qname} {qtype} refused inside our zones"
        ),
        Answer::NxDomain { authority } => {
            assert!(ours, "{qname}: NXDOMAIN outside our zones");
            assert_eq!(authority.len(), 1);
            assert_eq!(authority[0].record_type(), RecordType::SOA);
        }
        Answer::Authoritative {
            answers,
            authority,
            geo,
            ..
        } => {
            assert!(ours, "{qname}: answered outside our zones");
            if answers.is_empty() {
                // NODATA: the SOA goes in authority (RFC 2308 2.2).
                assert!(
                    authority.iter().any(|r| r.record_type() == RecordType::SOA),
                    "{qname} {qtype}: NODATA without SOA"
                );
            }
            if let Some(target) = geo {
                assert!(zones.is_geo(&LowerName::from(&target.name)));
            }
        }
    }
});
