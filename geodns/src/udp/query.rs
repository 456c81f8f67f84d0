//! The fast path's reading of a query: [`Query::parse`] takes the common shape (one question,
//! at most an OPT record with an ECS option) and leaves everything else to the hickory handler,
//! and [`Query::key`] turns it into the cache [`Key`].

use std::net::IpAddr;

pub(super) const OPT: u16 = 41;
pub(super) const ECS: u16 = 8;

/// What a located address means to the geo selection: the matching override and the
/// database location (coordinates as bits, network prefix).
pub(super) type Located = (Option<usize>, Option<(Option<(u64, u64)>, u8)>);

/// Everything the handler's answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub(super) qname: Vec<u8>,
    qtype: u16,
    qclass: u16,
    flags: u16,
    pub(super) edns: Option<EdnsKey>,
    /// Index of the override that matches the located address.
    over: Option<usize>,
    /// Database location of the located address: coordinates (bits) and network prefix.
    location: Option<(Option<(u64, u64)>, u8)>,
}

/// Clamped payload, DO bit, and ECS (family, source prefix), when the query has EDNS.
pub(super) type EdnsKey = (u16, bool, Option<(u16, u8)>);

/// A query the fast path understands.
#[derive(Debug)]
pub(super) struct Query<'a> {
    pub(super) id: [u8; 2],
    flags: u16,
    /// The question as sent: name, type, class.
    pub(super) question: &'a [u8],
    pub(super) qname_lower: Vec<u8>,
    qtype: u16,
    qclass: u16,
    pub(super) edns: Option<Edns<'a>>,
}

#[derive(Debug)]
pub(super) struct Edns<'a> {
    pub(super) payload: u16,
    dnssec_ok: bool,
    pub(super) ecs: Option<Ecs<'a>>,
}

#[derive(Debug)]
pub(super) struct Ecs<'a> {
    pub(super) family: u16,
    pub(super) source: u8,
    /// The address bytes as sent (ceil(source / 8) of them).
    pub(super) addr: &'a [u8],
}

pub(super) fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl<'a> Query<'a> {
    /// The common shape only; `None` sends the query to the slow path.
    pub(super) fn parse(raw: &'a [u8]) -> Option<Self> {
        let flags = be16(raw, 2)?;
        // QR = 0, opcode QUERY; one question, no answers or authority, at most the OPT record.
        let counts = (be16(raw, 4)?, be16(raw, 6)?, be16(raw, 8)?, be16(raw, 10)?);
        if flags & 0xF800 != 0 || counts.0 != 1 || counts.1 != 0 || counts.2 != 0 || counts.3 > 1 {
            return None;
        }
        let mut at = 12;
        let mut qname_lower = Vec::with_capacity(32);
        loop {
            let len = usize::from(*raw.get(at)?);
            // No compression or extended labels in a question we handle.
            if len & 0xC0 != 0 {
                return None;
            }
            qname_lower.push(len as u8);
            at += 1;
            if len == 0 {
                break;
            }
            qname_lower.extend(raw.get(at..at + len)?.iter().map(u8::to_ascii_lowercase));
            at += len;
            if qname_lower.len() > 255 {
                return None;
            }
        }
        let (qtype, qclass) = (be16(raw, at)?, be16(raw, at + 2)?);
        at += 4;
        let question = &raw[12..at];
        let edns = if counts.3 == 1 {
            let (edns, end) = Self::parse_opt(raw, at)?;
            at = end;
            Some(edns)
        } else {
            None
        };
        // Trailing bytes: let hickory decide what they mean.
        if at != raw.len() {
            return None;
        }
        Some(Self {
            id: [raw[0], raw[1]],
            flags,
            question,
            qname_lower,
            qtype,
            qclass,
            edns,
        })
    }

    fn parse_opt(raw: &'a [u8], at: usize) -> Option<(Edns<'a>, usize)> {
        // Root name, type OPT, class = payload, TTL = extended RCODE, version, flags.
        if *raw.get(at)? != 0 || be16(raw, at + 1)? != OPT {
            return None;
        }
        let payload = be16(raw, at + 3)?;
        let (ext_rcode, version) = (*raw.get(at + 5)?, *raw.get(at + 6)?);
        if ext_rcode != 0 || version != 0 {
            return None;
        }
        let dnssec_ok = raw.get(at + 7)? & 0x80 != 0;
        let rdlen = usize::from(be16(raw, at + 9)?);
        let mut opt = at + 11;
        let end = opt + rdlen;
        let mut ecs = None;
        while opt < end {
            let (code, len) = (be16(raw, opt)?, usize::from(be16(raw, opt + 2)?));
            let data = raw.get(opt + 4..opt + 4 + len)?;
            if code == ECS {
                if ecs.is_some() || data.len() < 4 {
                    return None;
                }
                let (family, source, scope) = (be16(data, 0)?, data[2], data[3]);
                let max = match family {
                    1 => 32,
                    2 => 128,
                    _ => return None,
                };
                // Invalid options are FORMERR, which the slow path answers.
                if source > max || scope != 0 || data.len() - 4 != usize::from(source).div_ceil(8) {
                    return None;
                }
                ecs = Some(Ecs {
                    family,
                    source,
                    addr: &data[4..],
                });
            }
            opt += 4 + len;
        }
        (opt == end && end <= raw.len()).then_some((
            Edns {
                payload,
                dnssec_ok,
                ecs,
            },
            end,
        ))
    }

    /// The address the handler locates: the ECS address, else the resolver's.
    pub(super) fn locate(&self, src: IpAddr) -> IpAddr {
        match self.edns.as_ref().and_then(|e| e.ecs.as_ref()) {
            Some(ecs) if ecs.source > 0 => {
                let mut b = [0u8; 16];
                let n = ecs.addr.len().min(if ecs.family == 1 { 4 } else { 16 });
                b[..n].copy_from_slice(&ecs.addr[..n]);
                if ecs.family == 1 {
                    IpAddr::from([b[0], b[1], b[2], b[3]])
                } else {
                    IpAddr::from(b)
                }
            }
            _ => src,
        }
    }

    /// The cache key; takes the lowercased name out of the query (it is not needed again).
    pub(super) fn key(&mut self, (over, location): Located, max_udp: u16) -> Key {
        Key {
            qname: std::mem::take(&mut self.qname_lower),
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
            edns: self.edns.as_ref().map(|e| {
                let ecs = e.ecs.as_ref().map(|c| (c.family, c.source));
                (e.payload.clamp(512, max_udp), e.dnssec_ok, ecs)
            }),
            over,
            location,
        }
    }
}
