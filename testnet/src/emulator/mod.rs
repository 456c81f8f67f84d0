//! Userspace WAN emulator: one process, one TUN device ("port") per network namespace, and a
//! delay / loss / rate model per directional pair of sites between them.
//!
//! The kernel here has no netem (see `shared/notes/verified-facts.md` §4), so links are
//! emulated in userspace. Each [`PortSpec`] becomes a TUN device inside its namespace; the
//! namespace routes traffic for other sites into it (the caller adds those routes). A packet
//! read from port A is sent out of the port B whose [`PortSpec::prefixes`] match its
//! destination (longest prefix wins), after the [`LinkParams`] of `(site(A), site(B))`:
//!
//! 1. lost with probability `loss`;
//! 2. if `rate_bps` is set, queued behind the bytes already waiting on that site pair (one
//!    shared bottleneck per directional site pair), tail-dropped when more than
//!    `queue_bytes` wait, and serialized at the rate;
//! 3. delivered `delay` after it left, in FIFO order per pair of ports.
//!
//! Only IPv4 is forwarded. IPv6 (the kernel's router solicitations on a fresh device),
//! packets for addresses no port owns, and packets whose destination is the port they came
//! from are dropped and counted in the [`Report`].
//!
//! Timing: a packet is never delivered early, and typically about 1 ms late per direction
//! (tokio's timer has 1 ms ticks); 20 ms each way measured 41.8–43 ms of ping RTT. Memory is
//! bounded per directional site pair by `queue_bytes + rate × delay` plus 1 MiB of slack, or
//! 32 MiB without a rate; beyond it packets are dropped and counted.
//!
//! What it is not: no jitter, no reordering, no duplication, no corruption, and no IPv6.
//!
//! The caller's part, after `ready()`: route the other sites' prefixes into the port in each
//! namespace (`ip -n NS route add 10.0.0.0/8 dev wan0`). Packets arrive on the port with
//! the remote source address, so with strict `rp_filter` that source must also route back
//! through the port. IPv6 on the ports is harmless (it is dropped and counted); set
//! `net.ipv6.conf.wan0.disable_ipv6=1` in the namespace to silence it.
//!
//! The link model (`link`), the routing table (`route`) and spec checking (`plan`) are
//! plain code with unit tests; `netns` and `forward` do the I/O.

mod forward;
mod link;
mod netns;
mod plan;
mod route;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use self::forward::{Port, PortStats};
use self::plan::{Plan, label};

/// `queue_bytes` when a spec leaves it out: 100 full-size packets, about one
/// bandwidth-delay product of 10 Mbit/s over a 120 ms round trip.
pub const DEFAULT_QUEUE_BYTES: usize = 150_000;

/// One TUN device the emulator creates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Namespace name as in `/run/netns/NAME` (`ip netns add NAME`).
    pub netns: String,
    /// TUN device to create inside it, e.g. `wan0`; it must not exist yet.
    pub ifname: String,
    /// Site (region) the port belongs to, the key into the link rules.
    pub site: String,
    /// Address given to the device inside the namespace, with its prefix as given (a `/24`
    /// also gives the namespace a connected route for that `/24` through the device).
    pub address: ipnet::Ipv4Net,
    /// Destinations behind this port: a packet leaves by the port whose prefix matches its
    /// destination, longest prefix first. The same prefix on two ports is an error.
    pub prefixes: Vec<ipnet::Ipv4Net>,
}

/// How one direction between two sites behaves.
///
/// Serialized as `{"delay_ms": 20.0, "loss": 0.01, "rate_bps": 8000000, "queue_bytes":
/// 150000}`; every field is optional (see [`LinkParams::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkParams {
    /// One-way delay. Serialized as `delay_ms`, milliseconds as a float.
    #[serde(rename = "delay_ms", with = "delay_ms")]
    pub delay: Duration,
    /// Drop probability per packet, `0.0..=1.0`.
    pub loss: f64,
    /// Bits per second; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Bytes that may wait for the rate limiter; packets beyond it are dropped (tail drop).
    /// Unused without a rate.
    pub queue_bytes: usize,
}

impl Default for LinkParams {
    /// A perfect wire: no delay, no loss, no rate limit, [`DEFAULT_QUEUE_BYTES`].
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            loss: 0.0,
            rate_bps: None,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

/// The behaviour of packets from ports of site `from` to ports of site `to`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRule {
    /// Site the packets come from ([`PortSpec::site`] of the port that read them).
    pub from: String,
    /// Site they go to ([`PortSpec::site`] of the port that owns their destination).
    pub to: String,
    pub params: LinkParams,
}

/// Everything the emulator runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorSpec {
    pub ports: Vec<PortSpec>,
    /// Directional rules. Every ordered pair of sites of two distinct ports needs one (a
    /// `site → site` rule too when a site has two ports); a missing pair is an error at start
    /// that names it. Rules for sites no port uses are ignored.
    pub links: Vec<LinkRule>,
}

/// What each port saw, returned by [`run_report`] and logged at exit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// In the order of [`EmulatorSpec::ports`].
    pub ports: Vec<PortReport>,
}

/// Counters of one port.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortReport {
    pub netns: String,
    pub ifname: String,
    pub site: String,
    pub counters: PortCounters,
}

/// Packet counters of one port. Drops count on the port the packet was read from; send
/// errors on the port that could not send it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Packets read from this port.
    pub received: u64,
    /// Packets written to this port (forwarded to it).
    pub sent: u64,
    /// Not IPv4 (typically IPv6 neighbour discovery of the device itself).
    pub dropped_not_ipv4: u64,
    /// No port's prefix matches the destination.
    pub dropped_no_route: u64,
    /// The destination belongs to this same port.
    pub dropped_hairpin: u64,
    /// Random loss of the link.
    pub dropped_loss: u64,
    /// Tail drop: the link's rate queue was full.
    pub dropped_queue_full: u64,
    /// The link's delay line held its maximum.
    pub dropped_delay_line_full: u64,
    /// Writing to this port failed.
    pub send_errors: u64,
}

impl PortCounters {
    /// Every packet read from this port and not forwarded.
    pub fn dropped(&self) -> u64 {
        self.dropped_not_ipv4
            + self.dropped_no_route
            + self.dropped_hairpin
            + self.dropped_loss
            + self.dropped_queue_full
            + self.dropped_delay_line_full
    }
}

/// Creates every port's TUN device in its namespace, calls `ready()` once all exist, then
/// forwards packets until SIGTERM or SIGINT and returns `Ok(())`. The devices disappear when
/// it returns.
///
/// Runs on the calling thread (a single-threaded tokio runtime), which briefly joins each
/// namespace while creating its device. Errors name the namespace or device at fault (missing
/// namespace, existing device, not root) or the site pair without a link rule.
pub fn run(spec: &EmulatorSpec, ready: impl FnOnce()) -> anyhow::Result<()> {
    run_inner(spec, ready, termination).map(drop)
}

/// [`run`], stopping when `shutdown` resolves instead of on a signal.
pub fn run_until(
    spec: &EmulatorSpec,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_report(spec, ready, shutdown).map(drop)
}

/// [`run_until`], returning the per-port counters.
pub fn run_report(
    spec: &EmulatorSpec,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    run_inner(spec, ready, || Ok(shutdown))
}

/// `shutdown` makes the stop future inside the runtime, before `ready()` is called, so a
/// signal sent right after readiness is not missed.
fn run_inner<F: Future<Output = ()>>(
    spec: &EmulatorSpec,
    ready: impl FnOnce(),
    shutdown: impl FnOnce() -> anyhow::Result<F>,
) -> anyhow::Result<Report> {
    let plan = Plan::new(spec)?;
    let links = plan.links.len();
    // One thread is plenty: per packet the work is a lookup, a lock and a copy.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the emulator's tokio runtime")?;
    let ports = {
        let _context = runtime.enter();
        create_ports(spec)?
    };
    let stats: Vec<_> = ports.iter().map(|port| port.stats.clone()).collect();
    let port_count = ports.len();
    runtime.block_on(async move {
        let shutdown = shutdown()?;
        let _tasks = forward::spawn(plan, &ports);
        drop(ports);
        tracing::info!(ports = port_count, links, "emulator started");
        ready();
        shutdown.await;
        anyhow::Ok(())
    })?;
    // Dropping the runtime drops the tasks and with them the devices.
    drop(runtime);
    let report = Report::new(spec, &stats);
    report.log();
    Ok(report)
}

fn create_ports(spec: &EmulatorSpec) -> anyhow::Result<Vec<Port>> {
    spec.ports
        .iter()
        .map(|port| {
            let device = netns::create_device(port)?;
            tracing::debug!(port = %label(port), address = %port.address, "port created");
            Ok(Port {
                label: label(port),
                device: Arc::new(device),
                stats: Arc::default(),
            })
        })
        .collect()
}

/// Resolves on the first SIGTERM or SIGINT.
fn termination() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "emulator stopping");
    })
}

impl Report {
    fn new(spec: &EmulatorSpec, stats: &[Arc<PortStats>]) -> Self {
        let ports = spec
            .ports
            .iter()
            .zip(stats)
            .map(|(port, stats)| PortReport {
                netns: port.netns.clone(),
                ifname: port.ifname.clone(),
                site: port.site.clone(),
                counters: stats.snapshot(),
            })
            .collect();
        Self { ports }
    }

    fn log(&self) {
        for port in &self.ports {
            let c = &port.counters;
            tracing::info!(
                netns = %port.netns,
                ifname = %port.ifname,
                site = %port.site,
                received = c.received,
                forwarded_to = c.sent,
                dropped = c.dropped(),
                loss = c.dropped_loss,
                queue_full = c.dropped_queue_full,
                delay_line_full = c.dropped_delay_line_full,
                no_route = c.dropped_no_route,
                not_ipv4 = c.dropped_not_ipv4,
                hairpin = c.dropped_hairpin,
                send_errors = c.send_errors,
                "emulator port summary"
            );
        }
    }
}

/// Serde for [`LinkParams::delay`]: milliseconds as a float.
mod delay_ms {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(delay: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(delay.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|_| D::Error::custom(format!("delay_ms {ms} is not a non-negative number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_ports(links: Vec<LinkRule>) -> EmulatorSpec {
        let port = |netns: &str, site: &str, prefix: &str| PortSpec {
            netns: netns.into(),
            ifname: "wan0".into(),
            site: site.into(),
            address: prefix.parse().unwrap(),
            prefixes: vec![prefix.parse().unwrap()],
        };
        EmulatorSpec {
            ports: vec![
                port("emu-missing-a", "a", "10.1.0.1/24"),
                port("emu-missing-b", "b", "10.2.0.1/24"),
            ],
            links,
        }
    }

    fn rule(from: &str, to: &str) -> LinkRule {
        LinkRule {
            from: from.into(),
            to: to.into(),
            params: LinkParams::default(),
        }
    }

    #[test]
    fn link_params_json_uses_delay_ms_and_defaults() {
        let params: LinkParams =
            serde_json::from_str(r#"{"delay_ms": 20.5, "loss": 0.1}"#).unwrap();
        assert_eq!(params.delay, Duration::from_micros(20_500));
        assert_eq!(params.loss, 0.1);
        assert_eq!(params.rate_bps, None);
        assert_eq!(params.queue_bytes, DEFAULT_QUEUE_BYTES);
        let json = serde_json::to_value(params).unwrap();
        assert_eq!(json["delay_ms"], 20.5);
        assert_eq!(serde_json::from_value::<LinkParams>(json).unwrap(), params);
    }

    #[test]
    fn link_params_json_rejects_bad_values() {
        assert!(serde_json::from_str::<LinkParams>(r#"{"delay_ms": -1}"#).is_err());
        assert!(serde_json::from_str::<LinkParams>(r#"{"delay": 1}"#).is_err());
    }

    #[test]
    fn spec_json_round_trips() {
        let spec = two_ports(vec![rule("a", "b"), rule("b", "a")]);
        let json = serde_json::to_string(&spec).unwrap();
        let back: EmulatorSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ports[1].prefixes, spec.ports[1].prefixes);
        assert_eq!(back.links[0].params, spec.links[0].params);
    }

    #[test]
    fn missing_link_fails_before_touching_namespaces() {
        let err = run_until(
            &two_ports(vec![rule("a", "b")]),
            || panic!("not ready"),
            async {},
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("b -> a"), "{err:#}");
    }

    #[test]
    fn missing_namespace_is_named() {
        let spec = two_ports(vec![rule("a", "b"), rule("b", "a")]);
        let err = run_until(&spec, || panic!("not ready"), async {}).unwrap_err();
        assert!(format!("{err:#}").contains("emu-missing-a"), "{err:#}");
    }
}
