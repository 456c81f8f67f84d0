//! Bad input from clients (queries that do not decode, malformed EDNS options, invalid ECS),
//! logged rate-limited: a flood of bad packets must not turn into a flood of log lines.
//!
//! Per client address, the first bad query is logged at once; later ones are counted and
//! [`BadInputLog::flush`] (every `log.bad_input_interval`) writes one line per client with the
//! count and the last reason. A client stays tracked while it keeps sending bad input, so a
//! steady stream costs one line per interval. At most [`MAX_CLIENTS`] addresses are tracked
//! (spoofed sources cannot grow the table); bad queries from further addresses are counted
//! together and reported in one "other clients" line per interval.
//!
//! hickory-proto itself writes a warning per packet for some bad input (e.g. "incomplete or
//! poorly formatted EDNS options"); the UDP path decodes with [`decode_quietly`], which takes
//! such a warning as the reason instead of letting it through.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use hickory_server::net::xfer::Protocol;

/// Client addresses tracked one by one.
pub(crate) const MAX_CLIENTS: usize = 1024;
/// Longest reason kept (hickory's messages can quote packet bytes).
const MAX_REASON: usize = 160;

/// The rate-limited log of bad input.
pub(crate) struct BadInputLog {
    max_clients: usize,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    clients: HashMap<IpAddr, Counted, ahash::RandomState>,
    /// Bad queries from addresses beyond `max_clients`, this interval.
    others: Counted,
}

#[derive(Default)]
struct Counted {
    /// Bad queries not yet written to the log.
    count: u64,
    last: String,
    protocol: Option<Protocol>,
}

impl Counted {
    fn count(&mut self, protocol: Protocol, reason: &dyn fmt::Display) {
        self.count += 1;
        self.protocol = Some(protocol);
        self.last.clear();
        let _ = write!(self.last, "{reason}");
        if self.last.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !self.last.is_char_boundary(cut) {
                cut -= 1;
            }
            self.last.truncate(cut);
            self.last.push('…');
        }
    }
}

fn proto(p: Option<Protocol>) -> &'static str {
    match p {
        Some(Protocol::Tcp) => "tcp",
        Some(Protocol::Udp) => "udp",
        _ => "-",
    }
}

impl Default for BadInputLog {
    fn default() -> Self {
        Self::new(MAX_CLIENTS)
    }
}

impl BadInputLog {
    pub(crate) fn new(max_clients: usize) -> Self {
        Self {
            max_clients,
            window: Mutex::new(Window::default()),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A bad query from `client`; `reason` is formatted only when it is kept or written.
    pub(crate) fn note(&self, client: IpAddr, protocol: Protocol, reason: &dyn fmt::Display) {
        let mut w = self.window();
        let full = w.clients.len() >= self.max_clients;
        match w.clients.get_mut(&client) {
            Some(seen) => seen.count(protocol, reason),
            None if full => w.others.count(protocol, reason),
            None => {
                w.clients.insert(client, Counted::default());
                drop(w);
                tracing::warn!(
                    target: "bad_input",
                    %client,
                    proto = proto(Some(protocol)),
                    reason = %reason,
                    "bad DNS query (more from this client are counted and logged once per interval)"
                );
            }
        }
    }

    /// Writes one line per client with bad queries since the last flush, and forgets the
    /// clients that sent none. Returns the number of lines written.
    pub(crate) fn flush(&self) -> usize {
        let mut lines = Vec::new();
        let others = {
            let mut w = self.window();
            w.clients.retain(|client, seen| {
                if seen.count == 0 {
                    return false;
                }
                lines.push((*client, std::mem::take(seen)));
                true
            });
            std::mem::take(&mut w.others)
        };
        // Written outside the lock: the UDP threads wait on it.
        for (client, seen) in &lines {
            tracing::warn!(
                target: "bad_input",
                %client,
                proto = proto(seen.protocol),
                count = seen.count,
                last_reason = %seen.last,
                "bad DNS queries from this client since the last report"
            );
        }
        if others.count > 0 {
            tracing::warn!(
                target: "bad_input",
                client = "other",
                proto = proto(others.protocol),
                count = others.count,
                last_reason = %others.last,
                tracked = self.max_clients,
                "bad DNS queries from clients beyond the tracked ones since the last report"
            );
        }
        lines.len() + usize::from(others.count > 0)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.window().clients.len()
    }
}

thread_local! {
    /// The first warning an event wrote during [`decode_quietly`] on this thread.
    static WARNING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A `tracing` subscriber that keeps the first WARN or ERROR event's message (in [`WARNING`])
/// and drops everything else.
struct KeepWarning;

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl tracing::Subscriber for KeepWarning {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.enabled(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= tracing::Level::WARN
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        WARNING.with(|w| {
            let mut w = w.borrow_mut();
            if w.is_none() {
                let mut text = String::new();
                event.record(&mut Message(&mut text));
                *w = Some(text);
            }
        });
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `decode` with the warnings it writes (hickory-proto's, about the packet) kept instead
/// of logged; returns its result and the first warning.
pub(crate) fn decode_quietly<T>(decode: impl FnOnce() -> T) -> (T, Option<String>) {
    static DISPATCH: OnceLock<tracing::Dispatch> = OnceLock::new();
    let dispatch = DISPATCH.get_or_init(|| tracing::Dispatch::new(KeepWarning));
    WARNING.with(|w| w.borrow_mut().take());
    let out = tracing::dispatcher::with_default(dispatch, decode);
    (out, WARNING.with(|w| w.borrow_mut().take()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn counts_per_client_and_forgets_quiet_ones() {
        let log = BadInputLog::new(4);
        // First from a client: logged at once, nothing left to flush.
        log.note(ip(1), Protocol::Udp, &"a");
        assert_eq!(log.flush(), 0);
        // ... and forgotten, so the next one is logged at once again.
        assert_eq!(log.tracked(), 0);
        log.note(ip(1), Protocol::Udp, &"a");
        for _ in 0..99 {
            log.note(ip(1), Protocol::Udp, &"b");
        }
        log.note(ip(2), Protocol::Tcp, &"c");
        {
            let w = log.window();
            assert_eq!(w.clients[&ip(1)].count, 99);
            assert_eq!(w.clients[&ip(1)].last, "b");
            assert_eq!(w.clients[&ip(2)].count, 0);
        }
        assert_eq!(log.flush(), 1);
        // ip(1) was busy: still tracked (its next bad query is only counted); ip(2) is not.
        assert_eq!(log.tracked(), 1);
        log.note(ip(1), Protocol::Udp, &"d");
        assert_eq!(log.window().clients[&ip(1)].count, 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let log = BadInputLog::new(4);
        for i in 0..200 {
            log.note(ip(i), Protocol::Udp, &format_args!("bad {i}"));
        }
        assert_eq!(log.tracked(), 4);
        assert_eq!(log.window().others.count, 196);
        assert_eq!(log.window().others.last, "bad 199");
        assert_eq!(log.flush(), 1);
        assert_eq!(log.window().others.count, 0);
    }

    #[test]
    fn reasons_are_cut_short() {
        let log = BadInputLog::new(1);
        log.note(ip(1), Protocol::Udp, &"x");
        log.note(ip(1), Protocol::Udp, &"é".repeat(500));
        let w = log.window();
        let last = &w.clients[&ip(1)].last;
        assert!(last.len() <= MAX_REASON + '…'.len_utf8());
        assert!(last.ends_with('…'));
    }

    #[test]
    fn decoding_keeps_warnings_instead_of_logging_them() {
        let (n, warning) = decode_quietly(|| {
            tracing::info!("not kept");
            tracing::warn!("poorly formatted: {}", 7);
            tracing::warn!("second");
            5
        });
        assert_eq!(n, 5);
        assert_eq!(warning.as_deref(), Some("poorly formatted: 7"));
        assert_eq!(decode_quietly(|| ()).1, None);
    }
}
