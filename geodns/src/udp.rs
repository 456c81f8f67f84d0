//! DNS over UDP: one blocking thread per `SO_REUSEPORT` socket, with an answer cache.
//!
//! hickory's server spawns a task, decodes a full `Message` and builds records for every
//! query; at authoritative-server rates that bookkeeping, not the geography, is the cost
//! (bench/geodns: about 10 µs a query against gdnsd's 2.7). Almost every query is the same
//! shape, one question with at most an OPT record, and its answer depends only on a few
//! inputs, so:
//!
//! - each query is read with a small parser ([`Query::parse`]); anything unusual (other
//!   opcodes, several questions, compression in the question, EDNS versions other than 0, a bad
//!   ECS option...) goes to the hickory handler unchanged: the slow path;
//! - the answer's inputs form the cache [`Key`]: the question, the query flags, the EDNS
//!   payload and ECS family/prefix, and what the client address means to the geo selection
//!   (matching override, database location and network);
//! - on a miss the hickory handler answers; its encoded response is split into a cache
//!   entry, and the entry is kept only if rebuilding the response from it gives the very same
//!   bytes. A hit therefore answers exactly what the handler would have, copying the
//!   question, patching the ID and writing the OPT record (with the client's ECS) per query;
//! - entries are dropped when the zone state or the POP health snapshot changes (reload,
//!   a POP going down or up), and the cache is bounded.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use prometheus_client::metrics::counter::Counter;

use crate::health::Health;
use crate::server::{Handler, State};

/// Entries per thread; beyond it the cache starts over (random names cannot grow it).
const CACHE_ENTRIES: usize = 16_384;
/// Queries taken per `recvmmsg` when they queue up, as gdnsd does: one system call for a
/// burst instead of one per query.
const BATCH: usize = 32;
/// Longest query read; a longer datagram is cut short and then fails to parse.
const MAX_QUERY: usize = 4096;
const OPT: u16 = 41;
const ECS: u16 = 8;

/// Binds `threads` UDP sockets to one address with `SO_REUSEPORT`, so the kernel spreads
/// queries over them (0: one per CPU this process may use, at most 8).
pub(crate) fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<UdpSocket>> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    };
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(threads);
    for _ in 0..threads {
        // All on the port the first one got (they differ only for port 0).
        let at = sockets.first().map_or(Ok(addr), UdpSocket::local_addr)?;
        let domain = socket2::Domain::for_address(at);
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_port(true)?;
        s.bind(&at.into())?;
        sockets.push(s.into());
    }
    Ok(sockets)
}

thread_local! {
    /// What the handler counted for the query it just answered on this thread, so a cache
    /// entry can count its hits on the same metric.
    static OUTCOME: RefCell<Option<Counter>> = const { RefCell::new(None) };
    static FAILED_OPEN: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn note_outcome(counter: Counter) {
    OUTCOME.with(|o| *o.borrow_mut() = Some(counter));
}

pub(crate) fn note_failed_open() {
    FAILED_OPEN.with(|f| f.set(true));
}

fn take_outcome() -> Option<(Counter, bool)> {
    let failed_open = FAILED_OPEN.with(|f| f.replace(false));
    OUTCOME
        .with(|o| o.borrow_mut().take())
        .map(|c| (c, failed_open))
}

/// Receives the handler's response as bytes, encoded as hickory's UDP server would.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().ok()?.take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        // RFC 1035 4.2.1: 512 bytes without EDNS; records that do not fit set TC.
        encoder.set_max_size(response.edns().map_or(512, |e| e.max_payload()));
        let info = response.destructive_emit(&mut encoder)?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(bytes);
        }
        Ok(info)
    }
}

/// The UDP threads of a running server.
pub(crate) struct UdpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    pub(crate) fn start(
        sockets: Vec<UdpSocket>,
        handler: Arc<Handler>,
        state: Arc<ArcSwap<State>>,
        health: Health,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, socket) in sockets.into_iter().enumerate() {
            // The stop flag is checked at least this often.
            socket.set_read_timeout(Some(Duration::from_millis(200)))?;
            let worker = Worker {
                socket,
                handler: handler.clone(),
                state: state.clone(),
                health: health.clone(),
                runtime: runtime.clone(),
                cache: Cache::default(),
                out: Vec::with_capacity(1500),
            };
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || worker.run(&stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the threads (each within its read timeout) and waits for them.
    pub(crate) fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Worker {
    socket: UdpSocket,
    handler: Arc<Handler>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    runtime: tokio::runtime::Handle,
    cache: Cache,
    out: Vec<u8>,
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
        let fd = self.socket.as_raw_fd();
        let mut bufs = Box::new([[0u8; MAX_QUERY]; BATCH]);
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut replies: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
        let mut dests = Vec::with_capacity(BATCH);
        while !stop.load(Ordering::Relaxed) {
            got.clear();
            {
                let mut slices = bufs.each_mut().map(|b| [std::io::IoSliceMut::new(b)]);
                // WAITFORONE: block (up to the read timeout) for the first query only, then
                // take whatever else is already queued.
                match recvmmsg(
                    fd,
                    &mut headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(msgs) => {
                        got.extend(msgs.filter_map(|m| Some((m.bytes, socket_addr(&m.address?)?))))
                    }
                    // The read timeout: time to look at the stop flag.
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "DNS UDP receive failed");
                        continue;
                    }
                }
            }
            dests.clear();
            for (buf, &(len, src)) in bufs.iter().zip(&got) {
                if self.respond(&buf[..len.min(MAX_QUERY)], src) {
                    // The reply moves to its slot; `respond` clears what it writes into.
                    std::mem::swap(&mut self.out, &mut replies[dests.len()]);
                    dests.push(rustix::net::SocketAddrAny::from(src));
                }
            }
            self.send(&replies[..dests.len()], &dests);
        }
    }

    /// Sends a batch of replies with `sendmmsg`; a reply that cannot be sent is skipped (the
    /// client retries, as for any lost datagram) and the rest still go out.
    fn send(&self, replies: &[Vec<u8>], dests: &[rustix::net::SocketAddrAny]) {
        use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
        let mut from = 0;
        while from < replies.len() {
            let iovs: Vec<[std::io::IoSlice<'_>; 1]> = replies[from..]
                .iter()
                .map(|r| [std::io::IoSlice::new(r)])
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = iovs
                .iter()
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut msgs: Vec<MMsgHdr<'_>> = iovs
                .iter()
                .zip(&dests[from..])
                .zip(controls.iter_mut())
                .map(|((iov, dest), control)| MMsgHdr::new_with_addr(dest, iov, control))
                .collect();
            match sendmmsg(&self.socket, &mut msgs, SendFlags::empty()) {
                Ok(sent) => from += sent.max(1),
                Err(e) => {
                    tracing::debug!(error = %e, dest = ?dests[from], "cannot send DNS response");
                    from += 1;
                }
            }
        }
    }

    /// Writes the response to `self.out`; false when nothing is to be sent.
    fn respond(&mut self, raw: &[u8], src: SocketAddr) -> bool {
        let state = self.state.load();
        let health = self.health.load();
        self.cache.validate(&state, &health);
        let fast = (!state.config.log.query_log)
            .then(|| Query::parse(raw))
            .flatten();
        let Some(mut query) = fast else {
            return self.slow(raw, src);
        };
        let located = self.cache.located(&state, query.locate(src.ip()));
        let key = query.key(located, state.config.listen.max_udp_payload);
        if let Some(entry) = self.cache.map.get(&key) {
            entry.assemble(&query, &key, &mut self.out);
            entry.counter.inc();
            self.handler.metrics().udp_cache_hits.inc();
            if let Some(name) = &entry.failed_open {
                self.handler.failed_open_again(name);
            }
            return true;
        }
        take_outcome();
        if !self.slow(raw, src) {
            return false;
        }
        if let Some(entry) = Entry::from_response(&query, &key, &self.out) {
            self.cache.insert(key, entry);
        }
        true
    }

    /// The hickory handler, as hickory's own UDP server would call it.
    fn slow(&mut self, raw: &[u8], src: SocketAddr) -> bool {
        self.handler.metrics().udp_cache_misses.inc();
        self.out.clear();
        if raw.len() < 12 || raw[2] & 0x80 != 0 {
            // Not a query (or not even a header): never answer, no reflection.
            return false;
        }
        // hickory-proto warns about some bad input (malformed EDNS options, which it drops)
        // once per packet: that goes to the rate-limited bad-input log instead.
        let (request, warning) = crate::badinput::decode_quietly(|| {
            Request::from_bytes(raw.to_vec(), src, Protocol::Udp)
        });
        let bad = self.handler.bad_input();
        let request = match request {
            Ok(request) => {
                if let Some(warning) = warning {
                    bad.note(src.ip(), Protocol::Udp, &warning);
                }
                request
            }
            Err(e) => {
                bad.note(src.ip(), Protocol::Udp, &format_args!("undecodable: {e}"));
                formerr(raw, &mut self.out);
                return true;
            }
        };
        let capture = Capture::default();
        self.runtime.block_on(
            self.handler
                .handle_request::<_, TokioTime>(&request, capture.clone()),
        );
        match capture.take() {
            Some(bytes) => {
                self.out = bytes;
                true
            }
            None => false,
        }
    }
}

fn socket_addr(addr: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::from(*v4)),
        (_, Some(v6)) => Some(SocketAddr::from(*v6)),
        _ => None,
    }
}

/// A header-only FORMERR for a query hickory cannot decode (as hickory's server does).
fn formerr(raw: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&raw[..2]);
    // QR, the query's opcode and RD; RCODE 1.
    out.push(0x80 | (raw[2] & 0x79));
    out.push(0x01);
    out.extend_from_slice(&[0; 8]);
}

/// What a located address means to the geo selection: the matching override and the
/// database location (coordinates as bits, network prefix).
type Located = (Option<usize>, Option<(Option<(u64, u64)>, u8)>);

/// ahash: names come from clients, so the hasher stays keyed per process, but is cheaper than
/// SipHash at these rates.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Default)]
struct Cache {
    map: Map<Key, Entry>,
    /// Per located address; a database lookup costs more than assembling a cached answer.
    located: Map<IpAddr, Located>,
    state: usize,
    health: usize,
}

impl Cache {
    fn validate(&mut self, state: &Arc<State>, health: &Arc<crate::health::HealthSnapshot>) {
        let (s, h) = (Arc::as_ptr(state) as usize, Arc::as_ptr(health) as usize);
        if (s, h) != (self.state, self.health) {
            self.map.clear();
            self.located.clear();
            (self.state, self.health) = (s, h);
        }
    }

    fn insert(&mut self, key: Key, entry: Entry) {
        insert_bounded(&mut self.map, key, entry);
    }

    /// What `client` means to the geo selection, looked up once per address.
    fn located(&mut self, state: &State, client: IpAddr) -> Located {
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

/// Everything the handler's answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    qname: Vec<u8>,
    qtype: u16,
    qclass: u16,
    flags: u16,
    edns: Option<EdnsKey>,
    /// Index of the override that matches the located address.
    over: Option<usize>,
    /// Database location of the located address: coordinates (bits) and network prefix.
    location: Option<(Option<(u64, u64)>, u8)>,
}

/// Clamped payload, DO bit, and ECS (family, source prefix), when the query has EDNS.
type EdnsKey = (u16, bool, Option<(u16, u8)>);

/// A query the fast path understands.
#[derive(Debug)]
struct Query<'a> {
    id: [u8; 2],
    flags: u16,
    /// The question as sent: name, type, class.
    question: &'a [u8],
    qname_lower: Vec<u8>,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns<'a>>,
}

#[derive(Debug)]
struct Edns<'a> {
    payload: u16,
    dnssec_ok: bool,
    ecs: Option<Ecs<'a>>,
}

#[derive(Debug)]
struct Ecs<'a> {
    family: u16,
    source: u8,
    /// The address bytes as sent (ceil(source / 8) of them).
    addr: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl<'a> Query<'a> {
    /// The common shape only; `None` sends the query to the slow path.
    fn parse(raw: &'a [u8]) -> Option<Self> {
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
    fn locate(&self, src: IpAddr) -> IpAddr {
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
    fn key(&mut self, (over, location): Located, max_udp: u16) -> Key {
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

/// A cached answer: the response without ID, question and OPT record.
struct Entry {
    flags: [u8; 2],
    /// Answer, authority and additional counts (without OPT).
    counts: [u16; 3],
    records: Box<[u8]>,
    /// ECS scope prefix to answer with.
    scope: u8,
    counter: Counter,
    /// The query name, when the answer was a fail-open one (every POP down): hits count and
    /// log it again.
    failed_open: Option<Box<str>>,
}

impl Entry {
    fn assemble(&self, q: &Query<'_>, key: &Key, out: &mut Vec<u8>) {
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
    fn from_response(q: &Query<'_>, key: &Key, resp: &[u8]) -> Option<Self> {
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
fn wire_name(wire: &[u8]) -> String {
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

fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for label in name {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(rdata) = opt {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
            q.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            q.extend_from_slice(rdata);
        }
        q
    }

    #[test]
    fn parses_the_common_shapes() {
        let q = query(&["WWW", "Cdn", "test"], 1, None);
        let p = Query::parse(&q).unwrap();
        assert_eq!(p.qname_lower, b"\x03www\x03cdn\x04test\x00");
        assert_eq!(p.question.len(), 14 + 4);
        assert!(p.edns.is_none());
        let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2];
        let q = query(&["www", "cdn", "test"], 28, Some(&ecs));
        let p = Query::parse(&q).unwrap();
        let e = p.edns.unwrap();
        assert_eq!(e.payload, 1232);
        let c = e.ecs.unwrap();
        assert_eq!((c.family, c.source, c.addr), (1, 24, &[10, 1, 2][..]));
    }

    #[test]
    fn unusual_queries_go_to_the_slow_path() {
        let base = query(&["a", "test"], 1, None);
        let mut response = base.clone();
        response[2] |= 0x80;
        let mut notify = base.clone();
        notify[2] |= 4 << 3;
        let mut two = base.clone();
        two[5] = 2;
        let mut trailing = base.clone();
        trailing.push(0);
        let bad_scope = query(
            &["a", "test"],
            1,
            Some(&[0, 8, 0, 7, 0, 1, 24, 8, 10, 1, 2]),
        );
        let long_source = query(&["a", "test"], 1, Some(&[0, 8, 0, 5, 0, 1, 33, 0, 10]));
        let short_addr = query(&["a", "test"], 1, Some(&[0, 8, 0, 6, 0, 1, 24, 0, 10, 1]));
        let mut compressed = base.clone();
        compressed[12] = 0xC0;
        for (what, q) in [
            ("response", response),
            ("opcode", notify),
            ("two questions", two),
            ("trailing byte", trailing),
            ("ECS scope set", bad_scope),
            ("ECS source > 32", long_source),
            ("ECS address length", short_addr),
            ("compressed name", compressed),
            ("truncated", base[..14].to_vec()),
        ] {
            assert!(Query::parse(&q).is_none(), "{what}");
        }
    }

    #[test]
    fn wire_names_read_back() {
        assert_eq!(wire_name(b"\x03www\x03cdn\x04test\x00"), "www.cdn.test.");
        assert_eq!(wire_name(b"\x00"), "");
    }

    #[test]
    fn names_skip_labels_and_pointers() {
        let b = [3, b'w', b'w', b'w', 0xC0, 12, 0];
        assert_eq!(skip_name(&b, 0), Some(6));
        assert_eq!(skip_name(&[0], 0), Some(1));
        assert_eq!(skip_name(&[0x80], 0), None);
        assert_eq!(skip_name(&[5, b'a'], 0), None);
    }
}
