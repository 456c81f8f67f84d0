//! [`Zones::new`]: zones from config. Records go into their RRsets, CNAMEs stay alone at their
//! names, geo names are checked against the static data, empty non-terminals are added, and a
//! config that cannot be served is rejected with an error naming the zone, record or geo name
//! at fault.

use std::collections::HashMap;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::parse::{parse_absolute, parse_caa, parse_mx, parse_name, parse_txt};
use super::{GeoTarget, Node, RrSet, Zone, ZoneError, Zones};
use crate::config::{GeoNameConfig, RecordConfig, ZoneConfig};

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
