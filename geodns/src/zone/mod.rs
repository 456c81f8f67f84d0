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
//!
//! The files:
//! - this one: the types ([`Zones`], [`Answer`], [`GeoTarget`], [`ZoneError`] and the zone
//!   data inside) and their small accessors;
//! - `answer.rs`: [`Zones::answer`], the RFC 1034 4.3.2 lookup with CNAME chains, negative
//!   answers, ANY and glue;
//! - `build.rs`: [`Zones::new`], zones from config and the rules that reject a config;
//! - `parse.rs`: names and record data in presentation format.

use std::borrow::Cow;
use std::collections::HashMap;

use hickory_proto::rr::{LowerName, Name, Record, RecordType};

mod answer;
mod build;
mod parse;

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

    /// The zone with the longest apex that is `name` or an ancestor of it.
    fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|zone| zone.apex.zone_of(name))
    }
}

impl Node {
    fn rrset(&self, rtype: RecordType) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
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

#[cfg(test)]
mod tests;
