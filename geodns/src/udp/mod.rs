//! DNS over UDP: one blocking thread per `SO_REUSEPORT` socket, with an answer cache.
//!
//! hickory's server spawns a task, decodes a full `Message` and builds records for every
//! query; at authoritative-server rates that bookkeeping, not the geography, is the cost
//! (bench/geodns: about 10 µs a query against gdnsd's 2.7). Almost every query is the same
//! shape, one question with at most an OPT record, and its answer depends only on a few
//! inputs, so:
//!
//! - each query is read with a small parser ([`Query::parse`](query::Query::parse)); anything
//!   unusual (other opcodes, several questions, compression in the question, EDNS versions
//!   other than 0, a bad ECS option...) goes to the hickory handler unchanged: the slow path;
//! - the answer's inputs form the cache [`Key`](query::Key): the question, the query flags,
//!   the EDNS payload and ECS family/prefix, and what the client address means to the geo
//!   selection (matching override, database location and network);
//! - on a miss the hickory handler answers; its encoded response is split into a cache
//!   entry, and the entry is kept only if rebuilding the response from it gives the very same
//!   bytes. A hit therefore answers exactly what the handler would have, copying the
//!   question, patching the ID and writing the OPT record (with the client's ECS) per query;
//! - entries are dropped when the zone state or the POP health snapshot changes (reload,
//!   a POP going down or up), and the cache is bounded.
//!
//! The files:
//! - this one: binding the sockets, starting and stopping the threads, and what the handler
//!   notes for the cache (the metric it counted, a fail-open answer);
//! - `worker.rs`: one thread's loop: `recvmmsg`, the cache or the handler, `sendmmsg`;
//! - `query.rs`: the fast path's query parser and the cache key built from it;
//! - `cache.rs`: the per-thread cache and its entries, split from and rebuilt into responses.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::health::Health;
use crate::server::{Handler, State};
use worker::Worker;

mod cache;
mod query;
mod worker;

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
            let worker = Worker::new(
                socket,
                handler.clone(),
                state.clone(),
                health.clone(),
                runtime.clone(),
            );
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

#[cfg(test)]
mod tests;
