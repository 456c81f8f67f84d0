//! The link model, with no I/O and no clock: the caller passes `now` and the RNG.
//!
//! One [`Link`] is one directional site pair (`from` → `to`). A packet offered to it is lost
//! with probability `loss`; otherwise, if the link has a rate, it waits behind the bytes
//! already queued (a single shared bottleneck per pair) and is serialized at that rate; it
//! then arrives `delay` after it left. Everything the link holds (queued + on the wire) is
//! counted so memory stays bounded.

use std::time::{Duration, Instant};

use rand::{Rng, RngExt as _};

use super::LinkParams;

/// Bytes a link without a rate may hold in its delay line. A userspace forwarder moves at
/// most a few Gbit/s, and 32 MiB covers 1 Gbit/s over a 250 ms one-way delay.
pub(crate) const UNLIMITED_DELAY_LINE_BYTES: usize = 32 << 20;
/// Room above `queue_bytes + rate * delay` on a rate-limited link, for packets that wait
/// past their delivery time because the delivering task ran late (timer ticks are 1 ms).
const DELAY_LINE_SLACK_BYTES: usize = 1 << 20;

/// What happens to one packet offered to a [`Link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand the packet to the destination port at this instant.
    DeliverAt(Instant),
    /// Drop the packet.
    Drop(DropReason),
}

/// Why a link dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Random loss (`LinkParams::loss`).
    Loss,
    /// More than `queue_bytes` were already waiting for the rate limiter (tail drop).
    QueueFull,
    /// The delay line holds its maximum (see [`max_in_flight_bytes`]).
    DelayLineFull,
}

/// State of one directional site pair.
#[derive(Debug)]
pub(crate) struct Link<R> {
    params: LinkParams,
    /// When the rate limiter finishes sending everything admitted so far.
    busy_until: Option<Instant>,
    /// Bytes admitted and not yet delivered (queue + delay line).
    in_flight: usize,
    max_in_flight: usize,
    rng: R,
}

impl<R: Rng> Link<R> {
    pub(crate) fn new(params: LinkParams, rng: R) -> Self {
        Self {
            params,
            busy_until: None,
            in_flight: 0,
            max_in_flight: max_in_flight_bytes(&params),
            rng,
        }
    }

    /// Decides the fate of a `size`-byte packet offered at `now`. A packet that is to be
    /// delivered counts as in flight until [`Link::delivered`] is called for it.
    pub(crate) fn admit(&mut self, now: Instant, size: usize) -> Verdict {
        if lost(self.params.loss, &mut self.rng) {
            return Verdict::Drop(DropReason::Loss);
        }
        let departure = match self.params.rate_bps {
            None => now,
            Some(rate) => {
                let backlog = backlog_bytes(now, self.busy_until, rate);
                if !fits_queue(backlog, size, self.params.queue_bytes) {
                    return Verdict::Drop(DropReason::QueueFull);
                }
                departure(now, self.busy_until, size, rate)
            }
        };
        if self.in_flight + size > self.max_in_flight {
            return Verdict::Drop(DropReason::DelayLineFull);
        }
        if self.params.rate_bps.is_some() {
            self.busy_until = Some(departure);
        }
        self.in_flight += size;
        Verdict::DeliverAt(departure + self.params.delay)
    }

    /// Releases a packet admitted earlier once it has been handed to its port.
    pub(crate) fn delivered(&mut self, size: usize) {
        self.in_flight = self.in_flight.saturating_sub(size);
    }

    /// Bytes admitted and not yet delivered.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Whether a packet is randomly lost. `loss` outside `0..=1` is clamped.
pub(crate) fn lost(loss: f64, rng: &mut impl Rng) -> bool {
    loss > 0.0 && rng.random_bool(loss.min(1.0))
}

/// When the last bit of a `size`-byte packet leaves a link of `rate_bps` that is busy until
/// `busy_until`: it starts once the link is idle, then takes `size * 8 / rate` to send.
pub(crate) fn departure(
    now: Instant,
    busy_until: Option<Instant>,
    size: usize,
    rate_bps: u64,
) -> Instant {
    let start = busy_until.map_or(now, |busy| busy.max(now));
    start + transmission_time(size, rate_bps)
}

/// Time to serialize `size` bytes at `rate_bps` (rounded down to the nanosecond).
pub(crate) fn transmission_time(size: usize, rate_bps: u64) -> Duration {
    let nanos = size as u128 * 8 * 1_000_000_000 / u128::from(rate_bps.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Bytes still waiting to be sent at `now` by a link busy until `busy_until` (the
/// untransmitted part of the packet on the wire included).
pub(crate) fn backlog_bytes(now: Instant, busy_until: Option<Instant>, rate_bps: u64) -> usize {
    let Some(busy) = busy_until.filter(|busy| *busy > now) else {
        return 0;
    };
    let bytes = (busy - now).as_nanos() * u128::from(rate_bps) / 8 / 1_000_000_000;
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Tail drop: a packet joins the queue if the queue then holds at most `queue_bytes`. An idle
/// link always takes one packet, so a `queue_bytes` below the MTU does not black-hole it.
pub(crate) fn fits_queue(backlog: usize, size: usize, queue_bytes: usize) -> bool {
    backlog == 0 || backlog.saturating_add(size) <= queue_bytes
}

/// The most bytes a link may hold between admission and delivery: the queue plus what the
/// rate can put on the wire during one delay, plus slack; a fixed cap without a rate.
pub(crate) fn max_in_flight_bytes(params: &LinkParams) -> usize {
    let Some(rate) = params.rate_bps else {
        return UNLIMITED_DELAY_LINE_BYTES;
    };
    let on_wire = params.delay.as_nanos() * u128::from(rate) / 8 / 1_000_000_000;
    usize::try_from(on_wire)
        .unwrap_or(usize::MAX)
        .saturating_add(params.queue_bytes)
        .saturating_add(DELAY_LINE_SLACK_BYTES)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;
    use rand::rngs::SmallRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn params(delay_ms: u64, loss: f64, rate_bps: Option<u64>, queue_bytes: usize) -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(delay_ms),
            loss,
            rate_bps,
            queue_bytes,
        }
    }

    fn link(params: LinkParams) -> Link<SmallRng> {
        Link::new(params, SmallRng::seed_from_u64(7))
    }

    #[test]
    fn transmission_time_is_size_over_rate() {
        assert_eq!(transmission_time(1000, 8_000_000), MS);
        assert_eq!(
            transmission_time(1500, 1_000_000_000),
            Duration::from_nanos(12_000)
        );
        assert_eq!(transmission_time(0, 1), Duration::ZERO);
    }

    #[test]
    fn departure_waits_for_a_busy_link() {
        let now = Instant::now();
        assert_eq!(departure(now, None, 1000, 8_000_000), now + MS);
        assert_eq!(
            departure(now, Some(now + 5 * MS), 1000, 8_000_000),
            now + 6 * MS
        );
        // A link that went idle in the past starts at `now`.
        assert_eq!(
            departure(now + 10 * MS, Some(now), 1000, 8_000_000),
            now + 11 * MS
        );
    }

    #[test]
    fn backlog_counts_bytes_not_yet_sent() {
        let now = Instant::now();
        assert_eq!(backlog_bytes(now, None, 8_000_000), 0);
        assert_eq!(backlog_bytes(now, Some(now), 8_000_000), 0);
        assert_eq!(backlog_bytes(now + MS, Some(now), 8_000_000), 0);
        assert_eq!(backlog_bytes(now, Some(now + 2 * MS), 8_000_000), 2000);
    }

    #[test]
    fn queue_tail_drops_but_idle_link_takes_one_packet() {
        assert!(fits_queue(0, 9000, 100));
        assert!(fits_queue(500, 500, 1000));
        assert!(!fits_queue(501, 500, 1000));
    }

    #[test]
    fn unlimited_link_delays_every_packet_by_the_delay() {
        let mut link = link(params(20, 0.0, None, 0));
        let now = Instant::now();
        for i in 0..100 {
            assert_eq!(link.admit(now, 1500 + i), Verdict::DeliverAt(now + 20 * MS));
        }
        assert_eq!(link.in_flight(), 100 * 1500 + (0..100).sum::<usize>());
    }

    #[test]
    fn rate_limited_link_spaces_packets_and_keeps_fifo_order() {
        // 8 Mbit/s: 1000 bytes take 1 ms.
        let mut link = link(params(10, 0.0, Some(8_000_000), 10_000));
        let now = Instant::now();
        let times: Vec<_> = (0..5).map(|_| link.admit(now, 1000)).collect();
        let expected: Vec<_> = (1..=5)
            .map(|i| Verdict::DeliverAt(now + 10 * MS + i * MS))
            .collect();
        assert_eq!(times, expected);
        // Later arrivals still queue behind the earlier ones.
        assert_eq!(
            link.admit(now + 2 * MS, 1000),
            Verdict::DeliverAt(now + 16 * MS)
        );
    }

    #[test]
    fn rate_limited_link_tail_drops_beyond_queue_bytes() {
        let mut link = link(params(0, 0.0, Some(8_000_000), 3000));
        let now = Instant::now();
        // Idle: taken. Backlog 1000 + 1000 fits, 2000 + 1000 fits, 3000 + 1000 does not.
        for _ in 0..3 {
            assert!(matches!(link.admit(now, 1000), Verdict::DeliverAt(_)));
        }
        assert_eq!(link.admit(now, 1000), Verdict::Drop(DropReason::QueueFull));
        // Two packets' worth has drained 2 ms later.
        assert!(matches!(
            link.admit(now + 2 * MS, 1000),
            Verdict::DeliverAt(_)
        ));
    }

    #[test]
    fn delay_line_is_bounded_and_released_on_delivery() {
        let mut link = link(params(1000, 0.0, None, 0));
        let now = Instant::now();
        let size = 60_000;
        let fit = UNLIMITED_DELAY_LINE_BYTES / size;
        for _ in 0..fit {
            assert!(matches!(link.admit(now, size), Verdict::DeliverAt(_)));
        }
        assert_eq!(
            link.admit(now, size),
            Verdict::Drop(DropReason::DelayLineFull)
        );
        link.delivered(size);
        assert!(matches!(link.admit(now, size), Verdict::DeliverAt(_)));
    }

    #[test]
    fn max_in_flight_covers_queue_and_wire() {
        let p = params(100, 0.0, Some(8_000_000), 50_000);
        // 8 Mbit/s * 100 ms = 100 kB on the wire.
        assert_eq!(
            max_in_flight_bytes(&p),
            100_000 + 50_000 + DELAY_LINE_SLACK_BYTES
        );
        assert_eq!(
            max_in_flight_bytes(&params(100, 0.0, None, 50_000)),
            UNLIMITED_DELAY_LINE_BYTES
        );
    }

    #[test]
    fn loss_follows_probability() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..1000).all(|_| !lost(0.0, &mut rng)));
        assert!((0..1000).all(|_| lost(1.0, &mut rng)));
        assert!((0..1000).all(|_| lost(2.0, &mut rng)));
        let dropped = (0..10_000).filter(|_| lost(0.3, &mut rng)).count();
        assert!((2700..3300).contains(&dropped), "{dropped}");
    }

    #[test]
    fn lost_packets_use_no_queue_or_rate() {
        let mut link = link(params(0, 1.0, Some(8_000_000), 0));
        let now = Instant::now();
        assert_eq!(link.admit(now, 1000), Verdict::Drop(DropReason::Loss));
        assert_eq!(link.in_flight(), 0);
        assert_eq!(backlog_bytes(now, link.busy_until, 8_000_000), 0);
    }
}
