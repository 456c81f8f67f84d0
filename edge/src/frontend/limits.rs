//! What one client may hold: connections per IP address, and how long a connection may sit
//! silent (before its first byte, between requests) or stalled (a client that stops reading).
//!
//! - [`PerIp`] counts open connections per client address across every listener (TCP and
//!   QUIC); one past the cap is closed at once, so one host cannot fill `max_connections`.
//! - [`Watched`] wraps a connection's socket and records when it last read a byte and since
//!   when a write has been blocked; [`Activity::deadline`] turns that into the moment the
//!   connection is to be cut. hyper's own `header_read_timeout` only runs once it reads a
//!   request head; the protocol detection before it (HTTP/1.1 or an HTTP/2 preface), an idle
//!   HTTP/2 connection, and a client that never reads its response are covered here.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open connections per client address.
#[derive(Debug)]
pub(crate) struct PerIp {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// `cap` 0: no limit.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            open: Mutex::default(),
        })
    }

    /// Counts a connection from `ip` in; `None` when `ip` is at its cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = canonical(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if self.cap > 0 && *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address (dual-stack sockets).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One connection counted against its address; counted out on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long a TCP connection may be silent or stalled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From accept (or the end of the TLS handshake) to the first request. Bytes that make
    /// no request (a partial HTTP/2 preface, a TLS record) do not stop this clock.
    pub first_request: Duration,
    /// No request in flight and nothing read for this long: the connection is closed.
    pub idle: Duration,
    /// A write blocked (the client reads nothing) for this long: the connection is closed.
    pub send: Duration,
}

/// Milliseconds since the first call: a clock cheap enough to read on every socket read.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What a connection has done lately (shared by its socket wrapper, its requests and its
/// watchdog).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// When a byte was last read; 0: none yet.
    last_read: AtomicU64,
    /// Since when a write has been pending; 0: not blocked.
    blocked_since: AtomicU64,
    started: AtomicU64,
    /// A request has arrived: from then on the idle rule applies.
    asked: std::sync::atomic::AtomicBool,
    in_flight: AtomicUsize,
    /// Per response body in flight: since when it has had a frame taken by the protocol
    /// layer without being asked for the next one (0: it is being asked). HTTP/2 asks only
    /// when the stream's flow-control window has room, so a client that never opens its
    /// window leaves this growing while no socket write is ever blocked.
    owed: Mutex<Vec<Weak<AtomicU64>>>,
    /// Woken when the last request in flight ends: the idle deadline starts then.
    quiet: tokio::sync::Notify,
}

/// Why a connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep it; look again at this instant.
    Until(tokio::time::Instant),
    FirstRequest,
    Idle,
    Stalled,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        let activity = Self::default();
        activity.started.store(now_ms(), Ordering::Relaxed);
        Arc::new(activity)
    }

    /// Restarts the first-byte clock after a TLS handshake (whose own bytes do not count
    /// as a request's).
    pub(crate) fn restart(&self) {
        self.last_read.store(0, Ordering::Relaxed);
        self.started.store(now_ms(), Ordering::Relaxed);
    }

    /// Counts a request in until the guard is dropped (with the response body). A request is
    /// activity too, even one whose bytes arrived with the TLS handshake.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_read.store(now_ms(), Ordering::Relaxed);
        self.asked.store(true, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection should be cut now, and if not, when to look again.
    pub(crate) fn verdict(&self, t: &Timeouts) -> Verdict {
        let now = now_ms();
        let at = |ms: u64| {
            tokio::time::Instant::now() + Duration::from_millis(ms.saturating_sub(now).max(1))
        };
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        if blocked > 0 {
            let limit = blocked + t.send.as_millis() as u64;
            return match now >= limit {
                true => Verdict::Stalled,
                false => Verdict::Until(at(limit)),
            };
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let send = t.send.as_millis() as u64;
            if self.oldest_owed().is_some_and(|since| now >= since + send) {
                return Verdict::Stalled;
            }
            // A request is being answered (waiting for the origin, or streaming with writes
            // going through): its own timeouts apply. Look again when a stall could be due.
            return Verdict::Until(at(now + send / 2));
        }
        if !self.asked.load(Ordering::Relaxed) {
            let limit = self.started.load(Ordering::Relaxed) + t.first_request.as_millis() as u64;
            return match now >= limit {
                true => Verdict::FirstRequest,
                false => Verdict::Until(at(limit)),
            };
        }
        let limit = self.last_read.load(Ordering::Relaxed) + t.idle.as_millis() as u64;
        match now >= limit {
            true => Verdict::Idle,
            false => Verdict::Until(at(limit)),
        }
    }

    /// A slot for one response body to say since when it waits to be asked for more.
    pub(crate) fn body_slot(&self) -> Arc<AtomicU64> {
        let slot = Arc::new(AtomicU64::new(now_ms()));
        let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
        if owed.len() >= 2 * self.in_flight.load(Ordering::Relaxed) + 16 {
            owed.retain(|w| w.strong_count() > 0);
        }
        owed.push(Arc::downgrade(&slot));
        slot
    }

    fn oldest_owed(&self) -> Option<u64> {
        let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
        owed.retain(|w| w.strong_count() > 0);
        owed.iter()
            .filter_map(Weak::upgrade)
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|since| *since > 0)
            .min()
    }

    /// Waits until the connection is to be cut; returns why.
    pub(crate) async fn expired(&self, t: &Timeouts) -> Verdict {
        loop {
            match self.verdict(t) {
                // A request that starts stalling moves the deadline earlier than the one
                // computed now, so look again at least every half send timeout.
                Verdict::Until(at) => {
                    let soonest = tokio::time::Instant::now() + t.send / 2;
                    tokio::select! {
                        () = tokio::time::sleep_until(at.min(soonest)) => {}
                        () = self.quiet.notified() => {}
                    }
                }
                cut => return cut,
            }
        }
    }
}

/// Marks a body slot ([`Activity::body_slot`]) as asked for its next frame (`poll` starts)
/// or as owed to the client (a frame was handed over).
pub(crate) fn asked(slot: &AtomicU64) {
    slot.store(0, Ordering::Relaxed);
}

pub(crate) fn handed(slot: &AtomicU64) {
    slot.store(now_ms(), Ordering::Relaxed);
}

/// A request in flight on a connection; it keeps the idle timeout from cutting it.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.quiet.notify_one();
        }
    }
}

/// A socket that reports its reads and blocked writes to an [`Activity`].
#[derive(Debug)]
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        let since = &self.activity.blocked_since;
        match polled {
            Poll::Pending => {
                if since.load(Ordering::Relaxed) == 0 {
                    since.store(now_ms(), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => {
                if since.load(Ordering::Relaxed) != 0 {
                    since.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.last_read.store(now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_caps_count_in_and_out() {
        let table = PerIp::new(2);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let a = table.admit(ip).unwrap();
        let _b = table.admit(mapped).unwrap();
        assert!(
            table.admit(ip).is_none(),
            "mapped and plain are one address"
        );
        assert!(table.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        assert!(table.admit(ip).is_some());
        assert!(PerIp::new(0).admit(ip).is_some());
    }

    #[tokio::test]
    async fn silence_idleness_and_stalls_have_verdicts() {
        let t = Timeouts {
            first_request: Duration::from_millis(30),
            idle: Duration::from_millis(60),
            send: Duration::from_millis(40),
        };
        let activity = Activity::new();
        assert!(matches!(activity.verdict(&t), Verdict::Until(_)));
        let activity = Activity::new();
        // Bytes that make no request (a partial preface) do not keep it open.
        activity.last_read.store(now_ms(), Ordering::Relaxed);
        assert_eq!(activity.expired(&t).await, Verdict::FirstRequest);
        let request = activity.request();
        assert!(matches!(activity.verdict(&t), Verdict::Until(_)));
        drop(request);
        assert_eq!(activity.expired(&t).await, Verdict::Idle);
        let request = activity.request();
        // A body handed a frame and never asked again (a zero flow-control window).
        let slot = activity.body_slot();
        assert!(matches!(activity.verdict(&t), Verdict::Until(_)));
        assert_eq!(activity.expired(&t).await, Verdict::Stalled);
        asked(&slot);
        assert!(matches!(activity.verdict(&t), Verdict::Until(_)));
        drop((slot, request));
        let _request = activity.request();
        activity.blocked_since.store(now_ms(), Ordering::Relaxed);
        assert_eq!(activity.expired(&t).await, Verdict::Stalled);
    }
}
