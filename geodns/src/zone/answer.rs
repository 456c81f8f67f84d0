//! [`Zones::answer`]: the lookup of RFC 1034 4.3.2 over the built zones. It follows CNAMEs
//! while they stay in our zones, answers NXDOMAIN and NODATA with the SOA (RFC 2308), picks one
//! RRset for ANY (RFC 8482), asks the caller's geo function for geo names, and adds the glue of
//! NS and MX targets.

use std::borrow::Cow;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS};
use hickory_proto::rr::{LowerName, RData, Record, RecordType};

use super::{Answer, GeoTarget, Node, Zones, fqdn};

/// CNAMEs followed inside our zones before leaving the rest of the chain to the resolver: a
/// longer chain is a config mistake, and stopping bounds the work per query.
pub(super) const MAX_CNAME_CHAIN: usize = 8;

impl Zones {
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
