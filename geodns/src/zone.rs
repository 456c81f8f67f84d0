//! Authoritative answers from the configured zones: given a question, the response code and the
//! answer, authority and additional sections.
//!
//! This is pure logic over hickory-proto types, with no sockets: the server turns an [`Answer`]
//! into a message. Geo-routed names are answered through a function the caller passes in,
//! because only the server knows the client and the health of the POPs.
//!
//! Choices that resolvers can see:
//! - Owner names are the configured names (lowercased by parsing), not the case the client asked
//!   with: names compare case-insensitively (RFC 4343), and the question section, which 0x20
//!   resolvers check, is copied from the request by the server.
//! - Responses are minimal: no NS RRset in the authority section of positive answers (it is
//!   optional; gdnsd and Knot leave it out too).
//! - Zone transfers (AXFR, IXFR) are refused: the zones come from config, not from a primary.
//! - ANY gets one RRset, not all of them (RFC 8482).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::{GeoNameConfig, RecordConfig, ZoneConfig};

/// CNAMEs followed inside our zones before leaving the rest of the chain to the resolver: a
/// longer chain is a config mistake, and stopping bounds the work per query.
const MAX_CNAME_CHAIN: usize = 8;

/// Zones built from config, ready to answer.
#[derive(Debug)]
pub struct Zones {
    /// Most specific apex first, so that the first zone containing a name is the longest match.
    zones: Vec<Zone>,
}

/// A zone config that cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// Names the zone, record or geo name by index and the problem, e.g.
    /// `zone[0].record[2] (TXT at www): ...`.
    #[error("{0}")]
    Invalid(String),
}

/// A geo-routed name as the caller needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoTarget {
    /// The owner name of the answers.
    pub name: Name,
    /// POPs this name may answer with; empty: all.
    pub pops: Vec<String>,
    /// How many POPs to answer with, nearest first.
    pub answers: usize,
    /// TTL of the A/AAAA answers.
    pub ttl: u32,
}

/// What to respond.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Not inside any of our zones: REFUSED (we are not a resolver). Also zone transfers.
    Refused,
    /// The name does not exist: NXDOMAIN, SOA in authority (RFC 2308), AA set.
    NxDomain { authority: Vec<Record> },
    /// Authoritative answer (possibly NODATA when `answers` is empty: then `authority` has the
    /// SOA).
    Authoritative {
        answers: Vec<Record>,
        authority: Vec<Record>,
        additionals: Vec<Record>,
        /// The geo function was asked (the server sets the ECS scope and counts it), even if it
        /// had no address of the family asked for.
        geo: Option<GeoTarget>,
    },
}

#[derive(Debug)]
struct Zone {
    apex: LowerName,
    /// The SOA for negative answers: its TTL is min(SOA TTL, MINIMUM) (RFC 2308 3).
    negative_soa: Record,
    /// Every name that exists, including the apex and empty non-terminals (RFC 8020: a name
    /// with descendants exists even without records of its own).
    nodes: HashMap<LowerName, Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// In the order ANY picks from: CNAME, A, AAAA, then by type code.
    rrsets: Vec<RrSet>,
    geo: Option<GeoTarget>,
}

#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    /// One TTL for the whole RRset (RFC 2181 5.2).
    ttl: u32,
    records: Vec<Record>,
}

impl Zones {
    /// Parses names and record data (presentation format) from config.
    ///
    /// Owner names and names inside record data (CNAME, MX and NS targets) are relative to the
    /// zone apex unless they end in `.`, like in a zone file (RFC 1035 5.1); `@` is the apex.
    /// Apexes, `ns` entries and SOA names are absolute, with or without the final dot.
    ///
    /// Record types: A, AAAA, CNAME, TXT (the value is one string, split into 255-octet
    /// character-strings), MX (`pref exchange`), CAA (`flags tag "value"`, tags `issue`,
    /// `issuewild`, `iodef`) and NS at the apex (extra name servers; delegation below the apex
    /// is not supported).
    ///
    /// Rejects: CNAME with other data at the same name (RFC 1034 3.6.2), geo names that collide
    /// with a CNAME or static A/AAAA, duplicate zones and geo names, names outside their zone or
    /// inside another configured zone, wildcards, and RRsets whose records differ in TTL.
    pub fn new(zones: &[ZoneConfig]) -> Result<Self, ZoneError> {
        let mut apexes: Vec<Name> = Vec::with_capacity(zones.len());
        for (z, zc) in zones.iter().enumerate() {
            let apex = parse_absolute(&zc.name)
                .map_err(|e| invalid(format!("zone[{z}].name {:?}: {e}", zc.name)))?;
            if let Some(prev) = apexes.iter().position(|a| *a == apex) {
                return Err(invalid(format!(
                    "zone[{z}] ({apex}): duplicate of zone[{prev}]"
                )));
            }
            apexes.push(apex);
        }
        let mut built = zones
            .iter()
            .zip(&apexes)
            .enumerate()
            .map(|(z, (zc, apex))| build_zone(z, zc, apex, &apexes))
            .collect::<Result<Vec<_>, _>>()?;
        built.sort_by_key(|zone| std::cmp::Reverse(zone.apex.num_labels()));
        Ok(Self { zones: built })
    }

    /// Whether `name` is a geo-routed name (for metrics).
    pub fn is_geo(&self, name: &LowerName) -> bool {
        let name = fqdn(name);
        self.zone_for(&name)
            .and_then(|zone| zone.nodes.get(&*name))
            .is_some_and(|node| node.geo.is_some())
    }

    /// All geo-routed names, e.g. to check their POPs at startup.
    pub fn geo_targets(&self) -> impl Iterator<Item = &GeoTarget> {
        self.zones
            .iter()
            .flat_map(|zone| zone.nodes.values())
            .filter_map(|node| node.geo.as_ref())
    }

    /// The apexes of the zones, most specific first.
    pub fn apexes(&self) -> impl Iterator<Item = &LowerName> {
        self.zones.iter().map(|zone| &zone.apex)
    }

    /// Answers `qname`/`qtype`. `geo` gives the addresses of one family (`qtype` is A or AAAA)
    /// for a geo-routed name, nearest first; it is called only when a geo name is answered.
    pub fn answer(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        geo: &mut dyn FnMut(&GeoTarget, RecordType) -> Vec<IpAddr>,
    ) -> Answer {
        // The zones come from config and we offer no transfers (RFC 5936, RFC 1995): REFUSED
        // is the policy answer, with zone transfer as its example (RFC 1035 4.1.1).
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Answer::Refused;
        }
        let mut name = fqdn(qname);
        let Some(mut zone) = self.zone_for(&name) else {
            return Answer::Refused;
        };
        let mut answers = Vec::new();
        let mut geo_used = None;
        let mut visited: Vec<LowerName> = Vec::new();
        // RFC 1034 4.3.2: match the name, follow CNAMEs while they stay in our zones.
        loop {
            let Some(node) = zone.nodes.get(&*name) else {
                if answers.is_empty() {
                    return Answer::NxDomain {
                        authority: vec![zone.negative_soa.clone()],
                    };
                }
                // The chain ends at a name that does not exist. RFC 6604 3 would make this
                // NXDOMAIN, but an answer with the chain and no SOA is also correct: nothing is
                // cached negatively and the resolver asks for the target, which gets NXDOMAIN.
                return positive(answers, Vec::new(), Vec::new(), geo_used);
            };
            if qtype != RecordType::CNAME
                && let Some(cname) = node.rrset(RecordType::CNAME)
            {
                answers.extend(cname.records.iter().cloned());
                // RFC 8482: for ANY the CNAME is the one RRset; it is not followed.
                if qtype == RecordType::ANY {
                    break;
                }
                let Some(target) = cname.records.first().and_then(cname_target) else {
                    break;
                };
                visited.push(name.into_owned());
                if visited.len() >= MAX_CNAME_CHAIN || visited.contains(&target) {
                    break;
                }
                // Outside our zones the resolver follows the chain itself.
                let Some(next) = self.zone_for(&target) else {
                    break;
                };
                zone = next;
                name = Cow::Owned(target);
                continue;
            }
            let found = node.lookup(qtype, geo, &mut geo_used);
            if found.is_empty() {
                // NODATA, at the name asked or at the end of a chain (RFC 2308 2.2).
                return positive(
                    answers,
                    vec![zone.negative_soa.clone()],
                    Vec::new(),
                    geo_used,
                );
            }
            answers.extend(found);
            break;
        }
        let additionals = self.glue(&answers);
        positive(answers, Vec::new(), additionals, geo_used)
    }

    /// The zone with the longest apex that is `name` or an ancestor of it.
    fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|zone| zone.apex.zone_of(name))
    }

    /// Additional-section processing for NS (RFC 1035 3.3.11) and MX (RFC 1035 3.3.9): the
    /// addresses of targets in our zones. Static records only: a geo name's addresses depend on
    /// the client, and resolvers look targets up anyway.
    fn glue(&self, answers: &[Record]) -> Vec<Record> {
        let mut glue: Vec<Record> = Vec::new();
        for record in answers {
            let target = match &record.data {
                RData::NS(NS(target)) => target,
                RData::MX(mx) => &mx.exchange,
                _ => continue,
            };
            let target = LowerName::new(target);
            let Some(node) = self
                .zone_for(&target)
                .and_then(|zone| zone.nodes.get(&target))
            else {
                continue;
            };
            for rtype in [RecordType::A, RecordType::AAAA] {
                for r in node.rrset(rtype).into_iter().flat_map(|s| &s.records) {
                    if !glue.contains(r) {
                        glue.push(r.clone());
                    }
                }
            }
        }
        glue
    }
}

impl Node {
    fn rrset(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }

    /// The records of `qtype` here (no CNAME processing).
    fn lookup(
        &self,
        qtype: RecordType,
        geo: &mut dyn FnMut(&GeoTarget, RecordType) -> Vec<IpAddr>,
        geo_used: &mut Option<GeoTarget>,
    ) -> Vec<Record> {
        if let Some(target) = &self.geo
            && matches!(qtype, RecordType::A | RecordType::AAAA)
        {
            *geo_used = Some(target.clone());
            return geo_records(target, qtype, geo);
        }
        if qtype == RecordType::ANY {
            // RFC 8482 4.1: one RRset that exists is enough; for a geo name, its addresses.
            if let Some(target) = &self.geo {
                *geo_used = Some(target.clone());
                for family in [RecordType::A, RecordType::AAAA] {
                    let records = geo_records(target, family, geo);
                    if !records.is_empty() {
                        return records;
                    }
                }
            }
            return self
                .rrsets
                .first()
                .map(|s| s.records.clone())
                .unwrap_or_default();
        }
        self.rrset(qtype)
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }
}

fn positive(
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
    geo: Option<GeoTarget>,
) -> Answer {
    Answer::Authoritative {
        answers,
        authority,
        additionals,
        geo,
    }
}

/// A/AAAA records for a geo name from the caller's addresses of the `family` asked for.
fn geo_records(
    target: &GeoTarget,
    family: RecordType,
    geo: &mut dyn FnMut(&GeoTarget, RecordType) -> Vec<IpAddr>,
) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    for ip in geo(target, family) {
        let data = match (family, ip) {
            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(v4)),
            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
            // Another family than asked: not part of this RRset.
            _ => continue,
        };
        let record = Record::from_rdata(target.name.clone(), target.ttl, data);
        // An RRset has no duplicate records (RFC 2181 5).
        if !records.contains(&record) {
            records.push(record);
        }
    }
    records
}

fn cname_target(record: &Record) -> Option<LowerName> {
    match &record.data {
        RData::CNAME(CNAME(target)) => Some(LowerName::new(target)),
        _ => None,
    }
}

/// Queries from the wire are fully qualified; a relative name (from a caller's test, say) is
/// made so, because the zone's names are and `LowerName` hashes the difference.
fn fqdn(name: &LowerName) -> Cow<'_, LowerName> {
    if name.is_fqdn() {
        Cow::Borrowed(name)
    } else {
        let mut name = Name::from(name);
        name.set_fqdn(true);
        Cow::Owned(LowerName::new(&name))
    }
}

fn invalid(message: String) -> ZoneError {
    ZoneError::Invalid(message)
}

fn build_zone(z: usize, zc: &ZoneConfig, apex: &Name, all: &[Name]) -> Result<Zone, ZoneError> {
    let soa = &zc.soa;
    let mname = parse_absolute(&soa.mname)
        .map_err(|e| invalid(format!("zone[{z}].soa.mname {:?}: {e}", soa.mname)))?;
    let rname = parse_absolute(&soa.rname).map_err(|e| {
        invalid(format!(
            "zone[{z}].soa.rname {:?}: {e} (the mailbox is written as a name: \
             hostmaster.example.com.)",
            soa.rname
        ))
    })?;
    let soa_data = SOA::new(
        mname,
        rname,
        soa.serial,
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum,
    );
    let soa_record = Record::from_rdata(apex.clone(), zc.ttl, RData::SOA(soa_data));
    let mut negative_soa = soa_record.clone();
    negative_soa.ttl = zc.ttl.min(soa.minimum);

    let mut nodes: HashMap<LowerName, Node> = HashMap::new();
    insert(&mut nodes, soa_record).map_err(|e| invalid(format!("zone[{z}].soa: {e}")))?;
    // Resolvers need the apex NS RRset (RFC 1034 4.2.1).
    if zc.ns.is_empty() {
        return Err(invalid(format!(
            "zone[{z}].ns ({apex}): needs at least one name server"
        )));
    }
    for (i, ns) in zc.ns.iter().enumerate() {
        let ctx = |e: String| invalid(format!("zone[{z}].ns[{i}] {ns:?}: {e}"));
        let target = parse_absolute(ns).map_err(ctx)?;
        let record = Record::from_rdata(apex.clone(), zc.ttl, RData::NS(NS(target)));
        insert(&mut nodes, record).map_err(ctx)?;
    }
    for (i, rc) in zc.records.iter().enumerate() {
        add_record(&mut nodes, rc, zc.ttl, apex, all).map_err(|e| {
            invalid(format!(
                "zone[{z}].record[{i}] ({} at {}): {e}",
                rc.rtype, rc.name
            ))
        })?;
    }
    for (g, gc) in zc.geo.iter().enumerate() {
        add_geo(&mut nodes, gc, apex, all)
            .map_err(|e| invalid(format!("zone[{z}].geo[{g}] ({}): {e}", gc.name)))?;
    }

    // Empty non-terminals exist (RFC 8020): NODATA for them, not NXDOMAIN.
    let apex = LowerName::new(apex);
    let names: Vec<LowerName> = nodes.keys().cloned().collect();
    for name in names {
        let mut parent = name.base_name();
        while parent != apex && apex.zone_of(&parent) {
            let next = parent.base_name();
            nodes.entry(parent).or_default();
            parent = next;
        }
    }
    for node in nodes.values_mut() {
        node.rrsets.sort_by_key(|s| any_rank(s.rtype));
    }
    Ok(Zone {
        apex,
        negative_soa,
        nodes,
    })
}

/// The order in which ANY picks an RRset (see [`Node::rrsets`]).
fn any_rank(rtype: RecordType) -> u32 {
    match rtype {
        RecordType::CNAME => 0,
        RecordType::A => 1,
        RecordType::AAAA => 2,
        other => 3 + u32::from(u16::from(other)),
    }
}

fn add_record(
    nodes: &mut HashMap<LowerName, Node>,
    rc: &RecordConfig,
    zone_ttl: u32,
    apex: &Name,
    all: &[Name],
) -> Result<(), String> {
    let owner = parse_name(&rc.name, apex)?;
    check_inside(&owner, apex, all)?;
    let data = match rc.rtype.to_ascii_uppercase().as_str() {
        "A" => {
            let ip = rc
                .value
                .trim()
                .parse()
                .map_err(|_| format!("value {:?} is not an IPv4 address", rc.value))?;
            RData::A(A(ip))
        }
        "AAAA" => {
            let ip = rc
                .value
                .trim()
                .parse()
                .map_err(|_| format!("value {:?} is not an IPv6 address", rc.value))?;
            RData::AAAA(AAAA(ip))
        }
        "CNAME" => RData::CNAME(CNAME(parse_name(&rc.value, apex)?)),
        "TXT" => RData::TXT(parse_txt(&rc.value)?),
        "MX" => RData::MX(parse_mx(&rc.value, apex)?),
        "CAA" => RData::CAA(parse_caa(&rc.value)?),
        "NS" => {
            if owner != *apex {
                return Err(
                    "NS below the apex would delegate a subzone, which is not supported".into(),
                );
            }
            RData::NS(NS(parse_name(&rc.value, apex)?))
        }
        "SOA" => return Err("the SOA comes from [zone.soa]".into()),
        _ => {
            return Err(format!(
                "unsupported type {:?}; supported: A, AAAA, CNAME, TXT, MX, CAA, NS",
                rc.rtype
            ));
        }
    };
    insert(
        nodes,
        Record::from_rdata(owner, rc.ttl.unwrap_or(zone_ttl), data),
    )
}

/// Adds a record to its RRset, keeping a CNAME alone at its name (RFC 1034 3.6.2).
fn insert(nodes: &mut HashMap<LowerName, Node>, record: Record) -> Result<(), String> {
    let node = nodes.entry(LowerName::new(&record.name)).or_default();
    let rtype = record.record_type();
    let has_cname = node.rrset(RecordType::CNAME).is_some();
    if rtype == RecordType::CNAME {
        if has_cname {
            return Err("a name has at most one CNAME (RFC 2181 10.1)".into());
        }
        if !node.rrsets.is_empty() || node.geo.is_some() {
            return Err(
                "a CNAME cannot share its name with other data (RFC 1034 3.6.2; at the apex: \
                 the SOA and NS)"
                    .into(),
            );
        }
    } else if has_cname {
        return Err("the name has a CNAME, which cannot have other data (RFC 1034 3.6.2)".into());
    }
    match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
        Some(set) => {
            if set.ttl != record.ttl {
                return Err(format!(
                    "TTL {} differs from the {} TTL of the other {rtype} records here \
                     (RFC 2181 5.2: one TTL per RRset)",
                    record.ttl, set.ttl
                ));
            }
            // A repeated record is the same record (RFC 2181 5).
            if !set.records.contains(&record) {
                set.records.push(record);
            }
        }
        None => node.rrsets.push(RrSet {
            rtype,
            ttl: record.ttl,
            records: vec![record],
        }),
    }
    Ok(())
}

fn add_geo(
    nodes: &mut HashMap<LowerName, Node>,
    gc: &GeoNameConfig,
    apex: &Name,
    all: &[Name],
) -> Result<(), String> {
    let name = parse_name(&gc.name, apex)?;
    check_inside(&name, apex, all)?;
    if gc.answers == 0 {
        return Err("answers must be at least 1".into());
    }
    let node = nodes.entry(LowerName::new(&name)).or_default();
    if node.geo.is_some() {
        return Err(format!("{name} is already a geo name"));
    }
    if node.rrset(RecordType::CNAME).is_some() {
        return Err(format!(
            "{name} has a CNAME, which cannot have other data (RFC 1034 3.6.2)"
        ));
    }
    if node.rrset(RecordType::A).is_some() || node.rrset(RecordType::AAAA).is_some() {
        return Err(format!(
            "{name} also has static A/AAAA records; a geo name's addresses come from the POPs"
        ));
    }
    node.geo = Some(GeoTarget {
        name,
        pops: gc.pops.clone(),
        answers: gc.answers,
        ttl: gc.ttl,
    });
    Ok(())
}

/// A name in config: `@` is `origin`, a name ending in `.` is absolute, others are relative to
/// `origin` (RFC 1035 5.1).
fn parse_name(text: &str, origin: &Name) -> Result<Name, String> {
    let text = text.trim();
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = parse_text(text)?;
    if name.is_fqdn() {
        Ok(name)
    } else {
        name.append_domain(origin)
            .map_err(|e| format!("name {text:?} relative to {origin}: {e}"))
    }
}

/// A name that is absolute whether or not it ends in `.`.
fn parse_absolute(text: &str) -> Result<Name, String> {
    let mut name = parse_text(text.trim())?;
    name.set_fqdn(true);
    Ok(name)
}

fn parse_text(text: &str) -> Result<Name, String> {
    if text.is_empty() {
        return Err("empty name".into());
    }
    let name = Name::from_str_relaxed(text).map_err(|e| format!("invalid name {text:?}: {e}"))?;
    // A `*` label would be served as a literal name, not as a wildcard (RFC 4592): refuse it
    // rather than surprise.
    if name.iter().any(|label| label == b"*") {
        return Err(format!("{text:?}: wildcards are not supported"));
    }
    Ok(name)
}

/// `name` must be in the zone at `apex` and not in a more specific configured zone, which would
/// answer for it instead.
fn check_inside(name: &Name, apex: &Name, all: &[Name]) -> Result<(), String> {
    if !apex.zone_of(name) {
        return Err(format!("{name} is outside the zone {apex}"));
    }
    match all
        .iter()
        .find(|other| *other != apex && apex.zone_of(other) && other.zone_of(name))
    {
        Some(other) => Err(format!(
            "{name} is inside the zone {other}, which is configured separately"
        )),
        None => Ok(()),
    }
}

/// One string, split into character-strings of at most 255 octets (RFC 1035 3.3.14).
fn parse_txt(value: &str) -> Result<TXT, String> {
    let bytes = value.as_bytes();
    let strings: Vec<&[u8]> = if bytes.is_empty() {
        vec![b""]
    } else {
        bytes.chunks(255).collect()
    };
    // RDLENGTH is 16 bits (RFC 1035 3.2.1): each string costs its length octet too.
    let rdlength = bytes.len() + strings.len();
    if rdlength > usize::from(u16::MAX) {
        return Err(format!(
            "TXT data of {} octets does not fit in one record",
            bytes.len()
        ));
    }
    Ok(TXT::from_bytes(strings))
}

/// `preference exchange` (RFC 1035 3.3.9).
fn parse_mx(value: &str, origin: &Name) -> Result<MX, String> {
    let mut parts = value.split_whitespace();
    let (Some(preference), Some(exchange), None) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "value {value:?} is not \"preference exchange\", e.g. \"10 mail.example.com.\""
        ));
    };
    let preference = preference
        .parse::<u16>()
        .map_err(|_| format!("MX preference {preference:?} is not a number from 0 to 65535"))?;
    Ok(MX::new(preference, parse_name(exchange, origin)?))
}

/// `flags tag value` (RFC 8659 4.1.1) with the value quoted or a single word; no escapes.
fn parse_caa(value: &str) -> Result<CAA, String> {
    let format_hint = || {
        format!("value {value:?} is not 'flags tag \"value\"', e.g. '0 issue \"letsencrypt.org\"'")
    };
    let (flags, rest) = value
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(format_hint)?;
    let (tag, property) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(format_hint)?;
    let flags: u8 = flags
        .parse()
        .map_err(|_| format!("CAA flags {flags:?} are not a number from 0 to 255"))?;
    // Only the issuer-critical bit is defined; the others must be 0 (RFC 8659 4.1).
    if flags & 0x7f != 0 {
        return Err(format!("CAA flags {flags}: only 0 and 128 are valid"));
    }
    let property = property.trim();
    let property = match property.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .filter(|inner| !inner.contains('"'))
            .ok_or_else(format_hint)?,
        None if property.contains(|c: char| c == '"' || c.is_whitespace()) => {
            return Err(format_hint());
        }
        None => property,
    };
    let tag = tag.to_ascii_lowercase();
    // Start from any CAA and set its public fields: the type has no constructor for raw
    // properties.
    let mut caa = CAA::new_issue(false, None, Vec::new());
    caa.issuer_critical = flags & 0x80 != 0;
    caa.reserved_flags = 0;
    caa.tag.clone_from(&tag);
    caa.value = property.as_bytes().to_vec();
    // Catch typos before a CA does (RFC 8659 4.2, 4.3, 4.4).
    let checked = match tag.as_str() {
        "issue" | "issuewild" => caa.value_as_issue().map(drop),
        "iodef" => caa.value_as_iodef().map(drop),
        _ => {
            return Err(format!(
                "CAA tag {tag:?}: supported: issue, issuewild, iodef"
            ));
        }
    };
    checked.map_err(|e| format!("CAA {tag} value {property:?}: {e}"))?;
    Ok(caa)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::GeoDnsConfig;

    const EXAMPLE: &str = include_str!("../config/examples/geodns.toml");
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
}
