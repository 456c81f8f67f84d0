//! The per-thread answer cache: entries keyed by [`Key`], dropped when the zone state or the
//! health snapshot changes, and bounded. An [`Entry`] is the handler's response without ID,
//! question and OPT record; it is kept only if rebuilding the response from it gives the same
//! bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::query::{ECS, Key, Located, OPT, Query, be16};
use super::take_outcome;
use crate::health::HealthSnapshot;
use crate::server::State;

/// Entries per thread; beyond it the cache starts over (random names cannot grow it).
const CACHE_ENTRIES: usize = 16_384;

/// ahash: names come from clients, so the hasher stays keyed per process, but is cheaper than
/// SipHash at these rates.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Default)]
pub(super) struct Cache {
    map: Map<Key, Entry>,
    /// Per located address; a database lookup costs more than assembling a cached answer.
    located: Map<IpAddr, Located>,
    state: usize,
    health: usize,
}

impl Cache {
    pub(super) fn validate(&mut self, state: &Arc<State>, health: &Arc<HealthSnapshot>) {
        let (s, h) = (Arc::as_ptr(state) as usize, Arc::as_ptr(health) as usize);
        if (s, h) != (self.state, self.health) {
            self.map.clear();
            self.located.clear();
            (self.state, self.health) = (s, h);
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<&Entry> {
        self.map.get(key)
    }

    pub(super) fn insert(&mut self, key: Key, entry: Entry) {
        insert_bounded(&mut self.map, key, entry);
    }

    /// What `client` means to the geo selection, looked up once per address.
    pub(super) fn located(&mut self, state: &State, client: IpAddr) -> Located {
        if let Some(found) = self.located.get(&client) {
            return *found;
        }
        let over = state
            .config
            .overrides
            .iter()
            .position(|o| o.cidr.contains(&client));
        let location = state.locate(client).map(|l| {
            let coords = l.coords.map(|(a, b)| (a.to_bits(), b.to_bits()));
            (coords, l.prefix_len)
        });
        insert_bounded(&mut self.located, client, (over, location));
        (over, location)
    }
}

/// Beyond `CACHE_ENTRIES` a map starts over: random names or addresses cannot grow it.
fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &mut Map<K, V>, key: K, value: V) {
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}

/// A cached answer: the response without ID, question and OPT record.
pub(super) struct Entry {
    flags: [u8; 2],
    /// Answer, authority and additional counts (without OPT).
    counts: [u16; 3],
    records: Box<[u8]>,
    /// ECS scope prefix to answer with.
    scope: u8,
    pub(super) counter: Counter,
    /// The query name, when the answer was a fail-open one (every POP down): hits count and
    /// log it again.
    pub(super) failed_open: Option<Box<str>>,
}

impl Entry {
    pub(super) fn assemble(&self, q: &Query<'_>, key: &Key, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&q.id);
        out.extend_from_slice(&self.flags);
        let additional = self.counts[2] + u16::from(q.edns.is_some());
        for n in [1, self.counts[0], self.counts[1], additional] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(q.question);
        out.extend_from_slice(&self.records);
        if let (Some(e), Some((payload, _, _))) = (&q.edns, key.edns) {
            // OPT: root, type, class = our payload, TTL 0 (no extended RCODE, version 0, no DO).
            out.extend_from_slice(&[0, 0, 41]);
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            match e.ecs.as_ref().filter(|c| c.source > 0) {
                Some(c) => {
                    let len = 4 + c.addr.len() as u16;
                    out.extend_from_slice(&(4 + len).to_be_bytes());
                    out.extend_from_slice(&ECS.to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&c.family.to_be_bytes());
                    out.extend_from_slice(&[c.source, self.scope]);
                    out.extend_from_slice(c.addr);
                }
                None => out.extend_from_slice(&[0, 0]),
            }
        }
    }

    /// Splits the handler's response into an entry, if rebuilding it gives the same bytes.
    pub(super) fn from_response(q: &Query<'_>, key: &Key, resp: &[u8]) -> Option<Self> {
        let (counter, failed_open) = take_outcome()?;
        let flags = [*resp.get(2)?, *resp.get(3)?];
        // Truncated answers are rare and depend on sizes: leave them to the slow path.
        if flags[0] & 0x02 != 0 || be16(resp, 4)? != 1 {
            return None;
        }
        let (an, ns, ar) = (be16(resp, 6)?, be16(resp, 8)?, be16(resp, 10)?);
        let start = 12 + q.question.len();
        let mut at = start;
        let mut opt = None;
        for i in 0..usize::from(an) + usize::from(ns) + usize::from(ar) {
            let rr = at;
            at = skip_name(resp, at)?;
            let rtype = be16(resp, at)?;
            at += 10 + usize::from(be16(resp, at + 8)?);
            if rtype == OPT {
                // Only as the last additional record.
                if i + 1 != usize::from(an) + usize::from(ns) + usize::from(ar) {
                    return None;
                }
                opt = Some((rr, at));
            }
        }
        if at != resp.len() || opt.is_some() != q.edns.is_some() {
            return None;
        }
        let records_end = opt.map_or(at, |(rr, _)| rr);
        let scope = opt
            .and_then(|(rr, end)| ecs_scope(&resp[rr..end]))
            .unwrap_or(0);
        let entry = Self {
            flags,
            counts: [an, ns, ar - u16::from(opt.is_some())],
            records: resp.get(start..records_end)?.into(),
            scope,
            counter,
            failed_open: failed_open.then(|| wire_name(&key.qname).into()),
        };
        let mut rebuilt = Vec::with_capacity(resp.len());
        entry.assemble(q, key, &mut rebuilt);
        (rebuilt == resp).then_some(entry)
    }
}

/// `www.cdn.test.` from its uncompressed wire form.
pub(super) fn wire_name(wire: &[u8]) -> String {
    let mut name = String::new();
    let mut at = 0;
    while let Some(&len) = wire.get(at)
        && len > 0
    {
        let label = wire
            .get(at + 1..at + 1 + usize::from(len))
            .unwrap_or_default();
        name.push_str(&String::from_utf8_lossy(label));
        name.push('.');
        at += 1 + usize::from(len);
    }
    name
}

pub(super) fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len & 0xC0 {
            0xC0 => return Some(at + 2),
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// The scope prefix of the ECS option in an OPT record's bytes.
fn ecs_scope(opt_rr: &[u8]) -> Option<u8> {
    let mut at = 11;
    while at + 4 <= opt_rr.len() {
        let (code, len) = (be16(opt_rr, at)?, usize::from(be16(opt_rr, at + 2)?));
        if code == ECS {
            return opt_rr.get(at + 7).copied();
        }
        at += 4 + len;
    }
    None
}
