//! Unit tests of the zone module: answers as tables of RFC cases, and the configs rejected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RData;

use super::answer::MAX_CNAME_CHAIN;
use super::*;
use crate::config::GeoDnsConfig;

const EXAMPLE: &str = include_str!("../../config/examples/geodns.toml");
const FRA_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const IAD_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const FRA_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);

fn zones_from(text: &str) -> Result<Zones, ZoneError> {
    let config: GeoDnsConfig = shared::config::parse(text).unwrap();
    Zones::new(&config.zones)
}

fn example() -> Zones {
    zones_from(EXAMPLE).unwrap()
}

/// The example plus `extra` appended to its (only) zone.
fn example_with(extra: &str) -> Result<Zones, ZoneError> {
    zones_from(&format!("{EXAMPLE}\n{extra}"))
}

fn lower(name: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(name).unwrap())
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

/// Two v4 addresses and one v6, like the example's fra1 and iad1.
fn stub_geo(_: &GeoTarget, family: RecordType) -> Vec<IpAddr> {
    match family {
        RecordType::A => vec![FRA_V4.into(), IAD_V4.into()],
        RecordType::AAAA => vec![FRA_V6.into()],
        _ => Vec::new(),
    }
}

fn ask(zones: &Zones, qname: &str, qtype: RecordType) -> Answer {
    zones.answer(&lower(qname), qtype, &mut stub_geo)
}

/// Records shown as text, TTL included (`Record`'s `==` ignores it).
fn texts(records: &[Record]) -> Vec<String> {
    records.iter().map(ToString::to_string).collect()
}

/// What an answer looks like in a table: kind, answers, authority, additionals, geo name.
#[derive(Debug, PartialEq)]
struct Shape {
    kind: &'static str,
    answers: Vec<String>,
    authority: Vec<String>,
    additionals: Vec<String>,
    geo: Option<String>,
}

fn shape(answer: &Answer) -> Shape {
    match answer {
        Answer::Refused => Shape {
            kind: "REFUSED",
            answers: vec![],
            authority: vec![],
            additionals: vec![],
            geo: None,
        },
        Answer::NxDomain { authority } => Shape {
            kind: "NXDOMAIN",
            answers: vec![],
            authority: texts(authority),
            additionals: vec![],
            geo: None,
        },
        Answer::Authoritative {
            answers,
            authority,
            additionals,
            geo,
        } => Shape {
            kind: "NOERROR",
            answers: texts(answers),
            authority: texts(authority),
            additionals: texts(additionals),
            geo: geo.as_ref().map(|g| g.name.to_string()),
        },
    }
}

fn rr(text: &str) -> String {
    text.to_owned()
}

const SOA_NEG: &str = "cdn.example.com. 60 IN SOA ns1.cdn.example.com. \
                           hostmaster.example.com. 2026112301 3600 600 604800 60";
const SOA_FULL: &str = "cdn.example.com. 3600 IN SOA ns1.cdn.example.com. \
                            hostmaster.example.com. 2026112301 3600 600 604800 60";

#[test]
fn answers_follow_rfc_1034_and_2308() {
    use RecordType::*;
    let zones = example();
    let www_a = [
        rr("www.cdn.example.com. 30 IN A 198.51.100.10"),
        rr("www.cdn.example.com. 30 IN A 198.51.100.20"),
    ];
    let www = Some(rr("www.cdn.example.com."));
    let noerror = |answers: Vec<String>, geo: Option<String>| Shape {
        kind: "NOERROR",
        answers,
        authority: vec![],
        additionals: vec![],
        geo,
    };
    let nodata = |geo: Option<String>| Shape {
        kind: "NOERROR",
        answers: vec![],
        authority: vec![rr(SOA_NEG)],
        additionals: vec![],
        geo,
    };
    let cases: Vec<(&str, RecordType, Shape)> = vec![
        (
            "ns1.cdn.example.com.",
            A,
            noerror(vec![rr("ns1.cdn.example.com. 3600 IN A 192.0.2.53")], None),
        ),
        (
            "cdn.example.com.",
            TXT,
            noerror(vec![rr("cdn.example.com. 3600 IN TXT v=spf1 -all")], None),
        ),
        (
            "cdn.example.com.",
            MX,
            noerror(
                vec![rr("cdn.example.com. 3600 IN MX 10 mail.example.com.")],
                None,
            ),
        ),
        (
            "cdn.example.com.",
            CAA,
            noerror(
                vec![rr(
                    "cdn.example.com. 3600 IN CAA 0 issue \"letsencrypt.org\"",
                )],
                None,
            ),
        ),
        // The CNAME, then the geo answer of its target.
        (
            "docs.cdn.example.com.",
            A,
            noerror(
                [rr(
                    "docs.cdn.example.com. 3600 IN CNAME www.cdn.example.com.",
                )]
                .into_iter()
                .chain(www_a.clone())
                .collect(),
                www.clone(),
            ),
        ),
        // Asked for the CNAME itself: not followed.
        (
            "docs.cdn.example.com.",
            CNAME,
            noerror(
                vec![rr(
                    "docs.cdn.example.com. 3600 IN CNAME www.cdn.example.com.",
                )],
                None,
            ),
        ),
        (
            "www.cdn.example.com.",
            A,
            noerror(www_a.to_vec(), www.clone()),
        ),
        (
            "www.cdn.example.com.",
            AAAA,
            noerror(
                vec![rr("www.cdn.example.com. 30 IN AAAA 2001:db8:10::1")],
                www.clone(),
            ),
        ),
        // Case does not matter (RFC 4343); answers carry the configured name.
        (
            "WWW.CDN.Example.COM.",
            A,
            noerror(www_a.to_vec(), www.clone()),
        ),
        (
            "cdn.example.com.",
            A,
            noerror(
                vec![
                    rr("cdn.example.com. 30 IN A 198.51.100.10"),
                    rr("cdn.example.com. 30 IN A 198.51.100.20"),
                ],
                Some(rr("cdn.example.com.")),
            ),
        ),
        ("ns1.cdn.example.com.", MX, nodata(None)),
        ("www.cdn.example.com.", TXT, nodata(None)),
        (
            "nope.cdn.example.com.",
            A,
            Shape {
                kind: "NXDOMAIN",
                answers: vec![],
                authority: vec![rr(SOA_NEG)],
                additionals: vec![],
                geo: None,
            },
        ),
        // Below an existing name is not an empty non-terminal.
        (
            "x.ns1.cdn.example.com.",
            A,
            Shape {
                kind: "NXDOMAIN",
                answers: vec![],
                authority: vec![rr(SOA_NEG)],
                additionals: vec![],
                geo: None,
            },
        ),
        ("cdn.example.com.", SOA, noerror(vec![rr(SOA_FULL)], None)),
        (
            "cdn.example.com.",
            NS,
            Shape {
                kind: "NOERROR",
                answers: vec![rr("cdn.example.com. 3600 IN NS ns1.cdn.example.com.")],
                authority: vec![],
                additionals: vec![rr("ns1.cdn.example.com. 3600 IN A 192.0.2.53")],
                geo: None,
            },
        ),
        // The SOA and NS exist only at the apex.
        ("ns1.cdn.example.com.", SOA, nodata(None)),
        ("example.org.", A, shape(&Answer::Refused)),
        ("example.com.", NS, shape(&Answer::Refused)),
        ("cdn.example.com.", AXFR, shape(&Answer::Refused)),
        ("cdn.example.com.", IXFR, shape(&Answer::Refused)),
    ];
    for (qname, qtype, want) in cases {
        assert_eq!(shape(&ask(&zones, qname, qtype)), want, "{qname} {qtype}");
    }
}

#[test]
fn a_geo_name_without_addresses_of_a_family_is_nodata() {
    let zones = example();
    let mut v4_only = |_: &GeoTarget, family: RecordType| match family {
        RecordType::A => vec![IpAddr::from(IAD_V4), IpAddr::from(FRA_V6)],
        _ => Vec::new(),
    };
    let answer = zones.answer(
        &lower("www.cdn.example.com."),
        RecordType::AAAA,
        &mut v4_only,
    );
    let Answer::Authoritative {
        answers,
        authority,
        geo,
        ..
    } = &answer
    else {
        panic!("{answer:?}");
    };
    assert!(answers.is_empty());
    // TTL = min(SOA TTL 3600, MINIMUM 60) (RFC 2308 3).
    assert_eq!(texts(authority), [SOA_NEG]);
    assert_eq!(authority[0].ttl, 60);
    // The answer still depends on where the client is.
    assert_eq!(geo.as_ref().map(|g| g.answers), Some(2));
    // An address of the other family is not put into the A RRset.
    let answer = zones.answer(&lower("www.cdn.example.com."), RecordType::A, &mut v4_only);
    assert_eq!(
        shape(&answer).answers,
        ["www.cdn.example.com. 30 IN A 198.51.100.20"]
    );
}

#[test]
fn the_geo_function_gets_the_configured_target() {
    let zones = example();
    let mut seen = Vec::new();
    let mut record = |target: &GeoTarget, family: RecordType| {
        seen.push((target.clone(), family));
        Vec::new()
    };
    zones.answer(&lower("docs.cdn.example.com."), RecordType::A, &mut record);
    zones.answer(&lower("ns1.cdn.example.com."), RecordType::A, &mut record);
    let want = GeoTarget {
        name: name("www.cdn.example.com."),
        pops: vec![],
        answers: 2,
        ttl: 30,
    };
    assert_eq!(seen, [(want, RecordType::A)]);
    assert!(zones.is_geo(&lower("WWW.cdn.example.com.")));
    assert!(zones.is_geo(&lower("cdn.example.com.")));
    assert!(!zones.is_geo(&lower("docs.cdn.example.com.")));
    assert!(!zones.is_geo(&lower("www.example.org.")));
    assert_eq!(zones.geo_targets().count(), 2);
}

#[test]
fn any_gets_one_rrset() {
    use RecordType::*;
    let zones = example_with(
        r#"
[[zone.record]]
name = "multi"
type = "TXT"
value = "hello"

[[zone.record]]
name = "multi"
type = "AAAA"
value = "2001:db8::5"

[[zone.record]]
name = "multi"
type = "A"
value = "192.0.2.5"
"#,
    )
    .unwrap();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        // A before AAAA before the rest, whatever the config order (RFC 8482 4.1).
        (
            "multi.cdn.example.com.",
            vec!["multi.cdn.example.com. 3600 IN A 192.0.2.5"],
        ),
        // The CNAME, not followed.
        (
            "docs.cdn.example.com.",
            vec!["docs.cdn.example.com. 3600 IN CNAME www.cdn.example.com."],
        ),
        // A geo name: its A answer, not its TXT, MX or CAA.
        (
            "cdn.example.com.",
            vec![
                "cdn.example.com. 30 IN A 198.51.100.10",
                "cdn.example.com. 30 IN A 198.51.100.20",
            ],
        ),
    ];
    for (qname, want) in cases {
        assert_eq!(shape(&ask(&zones, qname, ANY)).answers, want, "{qname}");
    }
    // A geo name without A addresses: its AAAA answer.
    let mut v6_only = |_: &GeoTarget, family: RecordType| match family {
        AAAA => vec![IpAddr::from(FRA_V6)],
        _ => Vec::new(),
    };
    let answer = zones.answer(&lower("www.cdn.example.com."), ANY, &mut v6_only);
    assert_eq!(
        shape(&answer).answers,
        ["www.cdn.example.com. 30 IN AAAA 2001:db8:10::1"]
    );
    // Without records at all (an empty non-terminal is tested elsewhere): one RRset of the
    // apex, not all of them.
    let mut none = |_: &GeoTarget, _: RecordType| Vec::new();
    let answer = zones.answer(&lower("cdn.example.com."), ANY, &mut none);
    assert_eq!(shape(&answer).answers.len(), 1, "{answer:?}");
}

#[test]
fn empty_non_terminals_exist() {
    let zones = example_with(
        r#"
[[zone.record]]
name = "a.b.c"
type = "A"
value = "192.0.2.7"
"#,
    )
    .unwrap();
    for qname in ["b.c.cdn.example.com.", "c.cdn.example.com."] {
        let got = shape(&ask(&zones, qname, RecordType::A));
        assert_eq!(got.kind, "NOERROR", "{qname}");
        assert!(got.answers.is_empty(), "{qname}");
        assert_eq!(got.authority, [SOA_NEG], "{qname}");
    }
    for qname in ["x.c.cdn.example.com.", "b.cdn.example.com."] {
        assert_eq!(
            shape(&ask(&zones, qname, RecordType::A)).kind,
            "NXDOMAIN",
            "{qname}"
        );
    }
    assert_eq!(
        shape(&ask(&zones, "a.b.c.cdn.example.com.", RecordType::A)).answers,
        ["a.b.c.cdn.example.com. 3600 IN A 192.0.2.7"]
    );
}

#[test]
fn cname_chains_end_where_our_data_ends() {
    let zones = example_with(
        r#"
[[zone.record]]
name = "loop1"
type = "CNAME"
value = "loop2"

[[zone.record]]
name = "loop2"
type = "CNAME"
value = "loop1.cdn.example.com."

[[zone.record]]
name = "away"
type = "CNAME"
value = "cdn.example.net."

[[zone.record]]
name = "dangling"
type = "CNAME"
value = "gone"

[[zone.record]]
name = "tomx"
type = "CNAME"
value = "@"
"#,
    )
    .unwrap();
    // A loop stops after each name once, an outside target is left to the resolver, a
    // missing target leaves no negative proof (the resolver asks for it and gets NXDOMAIN).
    let cases: Vec<(&str, RecordType, Vec<&str>, Vec<&str>)> = vec![
        (
            "loop1.cdn.example.com.",
            RecordType::A,
            vec![
                "loop1.cdn.example.com. 3600 IN CNAME loop2.cdn.example.com.",
                "loop2.cdn.example.com. 3600 IN CNAME loop1.cdn.example.com.",
            ],
            vec![],
        ),
        (
            "away.cdn.example.com.",
            RecordType::A,
            vec!["away.cdn.example.com. 3600 IN CNAME cdn.example.net."],
            vec![],
        ),
        (
            "dangling.cdn.example.com.",
            RecordType::A,
            vec!["dangling.cdn.example.com. 3600 IN CNAME gone.cdn.example.com."],
            vec![],
        ),
        // A chain to NODATA carries the SOA (RFC 2308 2.2).
        (
            "tomx.cdn.example.com.",
            RecordType::SRV,
            vec!["tomx.cdn.example.com. 3600 IN CNAME cdn.example.com."],
            vec![SOA_NEG],
        ),
    ];
    for (qname, qtype, answers, authority) in cases {
        let got = shape(&ask(&zones, qname, qtype));
        assert_eq!(got.kind, "NOERROR", "{qname}");
        assert_eq!(got.answers, answers, "{qname}");
        assert_eq!(got.authority, authority, "{qname}");
    }
    // MX after a CNAME: the chain, the MX, and the exchange's address when it is ours.
    let zones = example_with(
        r#"
[[zone.record]]
name = "m"
type = "MX"
value = "5 ns1"

[[zone.record]]
name = "mail"
type = "CNAME"
value = "m"
"#,
    )
    .unwrap();
    let got = shape(&ask(&zones, "mail.cdn.example.com.", RecordType::MX));
    assert_eq!(
        got.answers,
        [
            "mail.cdn.example.com. 3600 IN CNAME m.cdn.example.com.",
            "m.cdn.example.com. 3600 IN MX 5 ns1.cdn.example.com.",
        ]
    );
    assert_eq!(
        got.additionals,
        ["ns1.cdn.example.com. 3600 IN A 192.0.2.53"]
    );
}

#[test]
fn a_chain_of_more_than_eight_is_cut() {
    let mut extra = String::new();
    for i in 0..12 {
        extra.push_str(&format!(
            "[[zone.record]]\nname = \"c{i}\"\ntype = \"CNAME\"\nvalue = \"c{}\"\n\n",
            i + 1
        ));
    }
    let zones = example_with(&extra).unwrap();
    let got = shape(&ask(&zones, "c0.cdn.example.com.", RecordType::A));
    assert_eq!(got.answers.len(), MAX_CNAME_CHAIN, "{got:?}");
    assert!(got.authority.is_empty());
}

#[test]
fn the_most_specific_zone_answers() {
    let zones = zones_from(
        r#"
[[zone]]
name = "example.com"
ns = ["ns.example.com"]
[zone.soa]
mname = "ns.example.com"
rname = "hostmaster.example.com"
serial = 1
[[zone.record]]
name = "ns"
type = "AAAA"
value = "2001:db8::53"
[[zone.record]]
name = "to-sub"
type = "CNAME"
value = "www.sub"

[[zone]]
name = "sub.example.com."
ns = ["ns.example.com."]
ttl = 300
[zone.soa]
mname = "ns.example.com."
rname = "hostmaster.example.com."
serial = 2
minimum = 900
[[zone.record]]
name = "www"
type = "A"
value = "192.0.2.80"
"#,
    )
    .unwrap();
    assert_eq!(
        zones.apexes().map(ToString::to_string).collect::<Vec<_>>(),
        ["sub.example.com.", "example.com."]
    );
    let got = shape(&ask(&zones, "nope.sub.example.com.", RecordType::A));
    assert_eq!(got.kind, "NXDOMAIN");
    // min(300, 900): the zone's own SOA and TTL.
    assert_eq!(
        got.authority,
        [
            "sub.example.com. 300 IN SOA ns.example.com. hostmaster.example.com. 2 3600 600 \
              604800 900"
        ]
    );
    // The chain crosses into the other zone.
    assert_eq!(
        shape(&ask(&zones, "to-sub.example.com.", RecordType::A)).answers,
        [
            "to-sub.example.com. 3600 IN CNAME www.sub.example.com.",
            "www.sub.example.com. 300 IN A 192.0.2.80",
        ]
    );
    // Glue from the parent zone for the child's NS.
    let got = shape(&ask(&zones, "sub.example.com.", RecordType::NS));
    assert_eq!(got.answers, ["sub.example.com. 300 IN NS ns.example.com."]);
    assert_eq!(
        got.additionals,
        ["ns.example.com. 3600 IN AAAA 2001:db8::53"]
    );
}

#[test]
fn record_data_is_parsed_from_presentation_format() {
    let long = "x".repeat(300);
    let zones = example_with(&format!(
        r#"
[[zone.record]]
name = "long"
type = "TXT"
value = "{long}"

[[zone.record]]
name = "Mixed.Case.cdn.example.com."
type = "caa"
value = '128 iodef "mailto:security@example.com"'

[[zone.record]]
name = "@"
type = "NS"
value = "ns2.example.net."
ttl = 3600

[[zone.record]]
name = "ns1"
type = "A"
value = "192.0.2.53"
"#
    ))
    .unwrap();
    let Answer::Authoritative { answers, .. } =
        ask(&zones, "long.cdn.example.com.", RecordType::TXT)
    else {
        panic!("no TXT");
    };
    let RData::TXT(txt) = &answers[0].data else {
        panic!("{answers:?}");
    };
    let lengths: Vec<usize> = txt.txt_data.iter().map(|s| s.len()).collect();
    assert_eq!(lengths, [255, 45]);

    let Answer::Authoritative { answers, .. } =
        ask(&zones, "mixed.case.cdn.example.com.", RecordType::CAA)
    else {
        panic!("no CAA");
    };
    let RData::CAA(caa) = &answers[0].data else {
        panic!("{answers:?}");
    };
    assert!(caa.issuer_critical);
    assert_eq!(caa.tag, "iodef");
    assert_eq!(caa.value, b"mailto:security@example.com");
    assert_eq!(answers[0].name.to_string(), "mixed.case.cdn.example.com.");

    // The extra NS joins the apex RRset; the repeated A is the same record.
    let got = shape(&ask(&zones, "cdn.example.com.", RecordType::NS));
    assert_eq!(
        got.answers,
        [
            "cdn.example.com. 3600 IN NS ns1.cdn.example.com.",
            "cdn.example.com. 3600 IN NS ns2.example.net.",
        ]
    );
    assert_eq!(
        got.additionals,
        ["ns1.cdn.example.com. 3600 IN A 192.0.2.53"]
    );
}

#[test]
fn invalid_configs_name_the_field_and_the_problem() {
    let zone = |extra: &str| {
        format!(
            r#"
[[zone]]
name = "cdn.example.com."
ns = ["ns1.cdn.example.com."]
[zone.soa]
mname = "ns1.cdn.example.com."
rname = "hostmaster.example.com."
serial = 1
{extra}
"#
        )
    };
    // One `[[zone.record]]` or `[[zone.geo]]` table.
    let rec = |name: &str, rtype: &str, value: &str| {
        format!("[[zone.record]]\nname = {name:?}\ntype = {rtype:?}\nvalue = '{value}'\n")
    };
    let geo = |name: &str| format!("[[zone.geo]]\nname = {name:?}\n");
    let record = |name: &str, rtype: &str, value: &str| zone(&rec(name, rtype, value));
    let cname_www = rec("www", "CNAME", "x.example.net.");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{}{}", zone(""), zone("")),
            "zone[1] (cdn.example.com.): duplicate of zone[0]",
        ),
        (
            format!(
                "{}{}",
                zone(""),
                zone("").replace("\"cdn.example.com.\"", "\"CDN.example.com\"")
            ),
            "zone[1] (cdn.example.com.): duplicate of zone[0]",
        ),
        (
            zone("").replace("name = \"cdn.example.com.\"", "name = \"bad name\""),
            "zone[0].name \"bad name\"",
        ),
        (
            zone("").replace("ns = [\"ns1.cdn.example.com.\"]", "ns = []"),
            "zone[0].ns (cdn.example.com.): needs at least one name server",
        ),
        (
            zone("").replace("[\"ns1.cdn.example.com.\"]", "[\"\"]"),
            "zone[0].ns[0] \"\": empty name",
        ),
        (
            zone("").replace("\"hostmaster.example.com.\"", "\"hostmaster@example.com\""),
            "zone[0].soa.rname \"hostmaster@example.com\"",
        ),
        (
            zone("").replace("mname = \"ns1.cdn.example.com.\"", "mname = \"a..b\""),
            "zone[0].soa.mname \"a..b\"",
        ),
        (
            record("www", "A", "192.0.2.300"),
            "zone[0].record[0] (A at www): value \"192.0.2.300\" is not an IPv4 address",
        ),
        (
            record("www", "AAAA", "192.0.2.3"),
            "zone[0].record[0] (AAAA at www): value \"192.0.2.3\" is not an IPv6 address",
        ),
        (
            record("www", "SRV", "0 0 443 x."),
            "zone[0].record[0] (SRV at www): unsupported type \"SRV\"",
        ),
        (
            record("@", "SOA", "x"),
            "zone[0].record[0] (SOA at @): the SOA comes from [zone.soa]",
        ),
        (
            record("www.example.org.", "A", "192.0.2.1"),
            "zone[0].record[0] (A at www.example.org.): www.example.org. is outside the zone cdn.example.com.",
        ),
        (
            record("*", "A", "192.0.2.1"),
            "zone[0].record[0] (A at *): \"*\": wildcards are not supported",
        ),
        (
            record("a b", "A", "192.0.2.1"),
            "zone[0].record[0] (A at a b): invalid name \"a b\"",
        ),
        (
            record("sub", "NS", "ns.example.net."),
            "zone[0].record[0] (NS at sub): NS below the apex",
        ),
        (
            record("@", "CNAME", "x.example.net."),
            "zone[0].record[0] (CNAME at @): a CNAME cannot share its name with other data (RFC 1034 3.6.2",
        ),
        (
            record("@", "MX", "10"),
            "zone[0].record[0] (MX at @): value \"10\" is not \"preference exchange\"",
        ),
        (
            record("@", "MX", "high mail"),
            "zone[0].record[0] (MX at @): MX preference \"high\" is not a number",
        ),
        (
            record("@", "MX", "10 mail..x"),
            "zone[0].record[0] (MX at @): invalid name \"mail..x\"",
        ),
        (
            record("@", "CAA", "0 issue"),
            "zone[0].record[0] (CAA at @): value \"0 issue\" is not 'flags tag \"value\"'",
        ),
        (
            record("@", "CAA", "1 issue \"ca.example\""),
            "zone[0].record[0] (CAA at @): CAA flags 1: only 0 and 128 are valid",
        ),
        (
            record("@", "CAA", "x issue \"ca.example\""),
            "zone[0].record[0] (CAA at @): CAA flags \"x\"",
        ),
        (
            record("@", "CAA", "0 tbs \"x\""),
            "zone[0].record[0] (CAA at @): CAA tag \"tbs\": supported: issue, issuewild, iodef",
        ),
        (
            record("@", "CAA", "0 iodef \"not a url\""),
            "zone[0].record[0] (CAA at @): CAA iodef value \"not a url\"",
        ),
        (
            record("@", "CAA", "0 issue \"ca example\""),
            "zone[0].record[0] (CAA at @): CAA issue value \"ca example\"",
        ),
        (
            record("@", "CAA", "0 issue \"unterminated"),
            "zone[0].record[0] (CAA at @): value \"0 issue \\\"unterminated\"",
        ),
        (
            zone(&(cname_www.clone() + &rec("www", "TXT", "x"))),
            "zone[0].record[1] (TXT at www): the name has a CNAME, which cannot have other data (RFC 1034 3.6.2)",
        ),
        (
            zone(&(rec("www", "TXT", "x") + &cname_www)),
            "zone[0].record[1] (CNAME at www): a CNAME cannot share its name with other data",
        ),
        (
            zone(&(cname_www.clone() + &cname_www)),
            "zone[0].record[1] (CNAME at www): a name has at most one CNAME (RFC 2181 10.1)",
        ),
        (
            zone(&(rec("t", "TXT", "a") + &rec("t", "TXT", "b") + "ttl = 5\n")),
            "zone[0].record[1] (TXT at t): TTL 5 differs from the 3600 TTL of the other TXT records here",
        ),
        (
            zone(&(cname_www.clone() + &geo("www"))),
            "zone[0].geo[0] (www): www.cdn.example.com. has a CNAME",
        ),
        (
            zone(&(rec("www", "AAAA", "2001:db8::1") + &geo("www"))),
            "zone[0].geo[0] (www): www.cdn.example.com. also has static A/AAAA records",
        ),
        (
            zone(&(geo("www") + &geo("WWW.cdn.example.com."))),
            "zone[0].geo[1] (WWW.cdn.example.com.): www.cdn.example.com. is already a geo name",
        ),
        (
            zone(&geo("www.example.net.")),
            "zone[0].geo[0] (www.example.net.): www.example.net. is outside the zone cdn.example.com.",
        ),
        (
            zone(&(geo("www") + "answers = 0\n")),
            "zone[0].geo[0] (www): answers must be at least 1",
        ),
        (
            format!(
                "{}{}",
                zone(&rec("x.sub", "A", "192.0.2.1")),
                zone("").replace("\"cdn.example.com.\"", "\"sub.cdn.example.com.\"")
            ),
            "zone[0].record[0] (A at x.sub): x.sub.cdn.example.com. is inside the zone sub.cdn.example.com., which is configured separately",
        ),
    ];
    for (text, want) in cases {
        let err = match zones_from(&text) {
            Ok(_) => panic!("accepted, wanted {want:?}:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(want), "got {err:?}, wanted {want:?}");
    }
    // The same snippets without the mistake are fine, so the cases test what they say.
    zones_from(&zone("")).unwrap();
    zones_from(&record("www", "A", "192.0.2.1")).unwrap();
    zones_from(&record("@", "CAA", "0 issue \";\"")).unwrap();
    zones_from(&record("@", "CAA", "0 issuewild letsencrypt.org")).unwrap();
}
