//! One UDP thread: takes a burst of queries with `recvmmsg`, answers each from the cache or
//! through the hickory handler (the slow path, whose response may become a cache entry), and
//! sends the replies with `sendmmsg`.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::cache::{Cache, Entry};
use super::query::Query;
use super::take_outcome;
use crate::health::Health;
use crate::server::{Handler, State};

/// Queries taken per `recvmmsg` when they queue up, as gdnsd does: one system call for a
/// burst instead of one per query.
const BATCH: usize = 32;
/// Longest query read; a longer datagram is cut short and then fails to parse.
const MAX_QUERY: usize = 4096;

pub(super) struct Worker {
    socket: UdpSocket,
    handler: Arc<Handler>,
    state: Arc<ArcSwap<State>>,
    health: Health,
    runtime: tokio::runtime::Handle,
    cache: Cache,
    out: Vec<u8>,
}

impl Worker {
    pub(super) fn new(
        socket: UdpSocket,
        handler: Arc<Handler>,
        state: Arc<ArcSwap<State>>,
        health: Health,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            socket,
            handler,
            state,
            health,
            runtime,
            cache: Cache::default(),
            out: Vec::with_capacity(1500),
        }
    }

    pub(super) fn run(mut self, stop: &AtomicBool) {
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
        if let Some(entry) = self.cache.get(&key) {
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
