//! The packet path: one ingress task per port reads packets and asks the link for a verdict;
//! one egress task per ordered pair of ports (A, B) drains a FIFO delay line into B.
//!
//! Delivery instants on one pair never decrease (the delay is constant and departures are
//! monotonic), so a FIFO queue plus a sleep until its head is due is an exact delay line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tun_rs::AsyncDevice;

use super::PortCounters;
use super::link::{DropReason, Link, Verdict};
use super::plan::Plan;
use super::route::{RouteTable, ipv4_destination};

/// Read buffer size: the largest IP packet. Ports have MTU 1500 and no offloads, so reads are
/// normally at most 1500 bytes.
const READ_BUFFER: usize = 65_535;

/// A created port: its device and its counters.
pub(crate) struct Port {
    /// `netns/ifname`, for logs.
    pub(crate) label: String,
    pub(crate) device: Arc<AsyncDevice>,
    pub(crate) stats: Arc<PortStats>,
}

/// Counters of one port, updated by the tasks. Drops are counted on the port the packet came
/// in by, except send errors, which belong to the port that failed to send.
#[derive(Debug, Default)]
pub(crate) struct PortStats {
    received: AtomicU64,
    sent: AtomicU64,
    not_ipv4: AtomicU64,
    no_route: AtomicU64,
    hairpin: AtomicU64,
    loss: AtomicU64,
    queue_full: AtomicU64,
    delay_line_full: AtomicU64,
    send_errors: AtomicU64,
}

impl PortStats {
    pub(crate) fn snapshot(&self) -> PortCounters {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PortCounters {
            received: read(&self.received),
            sent: read(&self.sent),
            dropped_not_ipv4: read(&self.not_ipv4),
            dropped_no_route: read(&self.no_route),
            dropped_hairpin: read(&self.hairpin),
            dropped_loss: read(&self.loss),
            dropped_queue_full: read(&self.queue_full),
            dropped_delay_line_full: read(&self.delay_line_full),
            send_errors: read(&self.send_errors),
        }
    }

    fn count_drop(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Loss => &self.loss,
            DropReason::QueueFull => &self.queue_full,
            DropReason::DelayLineFull => &self.delay_line_full,
        };
        bump(counter);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type SharedLink = Arc<Mutex<Link<SmallRng>>>;

/// A packet on its way to a port.
struct InFlight {
    deliver_at: Instant,
    packet: Vec<u8>,
}

/// The sending side of the delay line from one port to another.
#[derive(Clone)]
struct Lane {
    link: SharedLink,
    queue: mpsc::UnboundedSender<InFlight>,
}

/// Spawns every ingress and egress task on the current runtime. The tasks stop when the
/// returned set is dropped.
pub(crate) fn spawn(plan: Plan, ports: &[Port]) -> JoinSet<()> {
    let links: Vec<SharedLink> = plan
        .links
        .iter()
        .map(|(_, _, params)| {
            Arc::new(Mutex::new(Link::new(
                *params,
                SmallRng::from_rng(&mut rand::rng()),
            )))
        })
        .collect();
    let mut tasks = JoinSet::new();
    let mut lanes: Vec<Vec<Option<Lane>>> = Vec::with_capacity(ports.len());
    for from in 0..ports.len() {
        let row = (0..ports.len())
            .map(|to| {
                let link = links[plan.link_of(from, to)?].clone();
                let (queue, rx) = mpsc::unbounded_channel();
                tasks.spawn(egress(
                    rx,
                    link.clone(),
                    ports[to].device.clone(),
                    ports[to].stats.clone(),
                ));
                Some(Lane { link, queue })
            })
            .collect();
        lanes.push(row);
    }
    let routes = Arc::new(plan.routes);
    for (port, row) in ports.iter().zip(lanes) {
        let ingress = Ingress {
            label: port.label.clone(),
            stats: port.stats.clone(),
            routes: routes.clone(),
            lanes: row,
        };
        tasks.spawn(ingress.run(port.device.clone()));
    }
    tasks
}

/// The read side of one port.
struct Ingress {
    label: String,
    stats: Arc<PortStats>,
    routes: Arc<RouteTable<usize>>,
    /// Indexed by destination port; `None` for this port itself.
    lanes: Vec<Option<Lane>>,
}

impl Ingress {
    async fn run(self, device: Arc<AsyncDevice>) {
        let mut buf = vec![0; READ_BUFFER];
        loop {
            match device.recv(&mut buf).await {
                Ok(len) => self.forward(&buf[..len]),
                Err(err) => {
                    // A TUN read fails only when the device is gone (its namespace was
                    // deleted); the other ports keep running.
                    tracing::warn!(port = %self.label, %err, "reading a port failed; it no longer forwards");
                    return;
                }
            }
        }
    }

    fn forward(&self, packet: &[u8]) {
        bump(&self.stats.received);
        let Some(dst) = ipv4_destination(packet) else {
            return bump(&self.stats.not_ipv4);
        };
        let Some(&to) = self.routes.lookup(dst) else {
            return bump(&self.stats.no_route);
        };
        let Some(lane) = &self.lanes[to] else {
            return bump(&self.stats.hairpin);
        };
        let verdict = lock(&lane.link).admit(Instant::now(), packet.len());
        match verdict {
            Verdict::Drop(reason) => self.stats.count_drop(reason),
            Verdict::DeliverAt(deliver_at) => {
                let packet = packet.to_vec();
                let len = packet.len();
                if lane.queue.send(InFlight { deliver_at, packet }).is_err() {
                    // The egress task has stopped: we are shutting down.
                    lock(&lane.link).delivered(len);
                }
            }
        }
    }
}

/// Drains one delay line into `device`.
async fn egress(
    mut queue: mpsc::UnboundedReceiver<InFlight>,
    link: SharedLink,
    device: Arc<AsyncDevice>,
    stats: Arc<PortStats>,
) {
    while let Some(InFlight { deliver_at, packet }) = queue.recv().await {
        if deliver_at > Instant::now() {
            tokio::time::sleep_until(deliver_at.into()).await;
        }
        match device.send(&packet).await {
            Ok(_) => bump(&stats.sent),
            Err(err) => {
                bump(&stats.send_errors);
                tracing::debug!(%err, "writing a packet to a port failed");
            }
        }
        lock(&link).delivered(packet.len());
    }
}

/// Locks a link; a panic elsewhere cannot leave a link's counters half-updated, so a
/// poisoned lock is still usable.
fn lock(link: &SharedLink) -> std::sync::MutexGuard<'_, Link<SmallRng>> {
    link.lock().unwrap_or_else(PoisonError::into_inner)
}
