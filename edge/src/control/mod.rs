//! The control plane: purge and pre-warm commands, from the admin API (and the HTTP `PURGE`
//! method) to every POP.
//!
//! Without `[control]` configured, a command applies to this edge only: one machine needs no
//! bus. With it, each command is published once to a NATS JetStream stream; every POP applies
//! the stream in order through its durable consumer and publishes an [`Ack`]. A purge also
//! travels as a plain NATS message, published with it, that every POP applies on first
//! sight (`fast.rs`): the stream's quorum write is not in its path. Whichever path brings a
//! command first applies it; the other only acknowledges it (`applied.rs`).
//!
//! - `command.rs`: the commands and acknowledgements (the API's, the bus's and the store's
//!   common language).
//! - `bus.rs`: the connection, publishing, and the acknowledgements `submit` waits for.
//! - `consume.rs`: this POP's durable consumer: apply in order, acknowledge, catch up.
//! - `fast.rs`: the purges' fast path, and why applying them out of stream order is safe.
//! - `applied.rs`: the commands applied lately, so that each is applied once.
//! - `order.rs`: what a delivery means (new, redelivered, after a gap).
//! - `edge.rs`: [`Local`] for the edge (its cache and service); `metrics.rs`: its metrics.

mod applied;
mod bus;
pub mod command;
mod consume;
mod edge;
mod fast;
mod metrics;
mod order;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use self::command::{Ack, Command, Mode, Outcome, Prewarm, Prewarmed, Purge, Purged, Selector};
pub(crate) use self::edge::EdgeLocal;
pub(crate) use self::metrics::ControlMetrics;
use self::metrics::Path;
use crate::config::ControlConfig;

/// What a POP does with a command: implemented by the edge (its cache and its service).
pub trait Local: Send + Sync + 'static {
    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, Purged>;
    fn prewarm<'a>(&'a self, prewarm: &'a Prewarm) -> BoxFuture<'a, Prewarmed>;

    /// While `suspect`, the cache may hold what a purge this POP has not received yet
    /// removed (it is catching up with the stream): the edge revalidates every hit. No
    /// default: a POP that ignored it would serve what a missed purge removed.
    fn set_cache_suspect(&self, suspect: bool);

    /// Whether the bus is reachable, for the edge's health report.
    fn set_bus_connected(&self, connected: bool);
}

/// The answer to a command submitted through the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Submitted {
    pub id: String,
    /// The stream sequence (a single edge numbers its own commands). 0: not published, or
    /// every POP had acknowledged before the stream confirmed the publish (the answer does
    /// not wait for the stream then: the command is applied everywhere).
    pub seq: u64,
    /// Acknowledgements received within the wait, this POP's included.
    pub acks: Vec<Ack>,
    /// POPs expected to acknowledge that had not when the wait ended.
    pub pending: Vec<String>,
    /// Why the command could not be published to the bus: it was applied on this POP only
    /// (after a publish that timed out, it may still reach the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The bus side as it is now: for tests, logs and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BusStatus {
    pub connected: bool,
    /// Caught up with the stream since the start (and not catching up again now).
    pub caught_up: bool,
    /// The last stream sequence applied here.
    pub last_applied: u64,
    /// Commands applied while catching up, since the start.
    pub replayed: u64,
}

/// Where commands go: this edge alone, or the fleet over the bus.
pub struct Control {
    pop: String,
    local: Arc<dyn Local>,
    metrics: ControlMetrics,
    via: Via,
}

enum Via {
    /// No bus: this edge numbers its own commands.
    Alone(AtomicU64),
    Bus(bus::Bus),
}

/// The control plane could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("cannot set up the control bus connection: {0}")]
    Connect(#[source] async_nats::ConnectError),
}

impl Control {
    /// A control plane for this edge alone.
    pub fn local(pop: &str, local: Arc<dyn Local>) -> Self {
        Self::alone(pop, local, ControlMetrics::default())
    }

    /// A control plane over the bus in `config` (which must name servers). Returns at once:
    /// the connection is made, and kept, in the background; see [`Control::caught_up`].
    pub async fn bus(
        pop: &str,
        config: &ControlConfig,
        local: Arc<dyn Local>,
    ) -> Result<Self, ControlError> {
        Self::start(pop, config, local, ControlMetrics::default()).await
    }

    /// The edge's control plane: over the bus if `config` names servers, else alone.
    pub(crate) async fn start(
        pop: &str,
        config: &ControlConfig,
        local: Arc<dyn Local>,
        metrics: ControlMetrics,
    ) -> Result<Self, ControlError> {
        if !config.enabled() {
            return Ok(Self::alone(pop, local, metrics));
        }
        let bus = bus::Bus::start(pop, config, local.clone(), metrics.clone()).await?;
        Ok(Self {
            pop: pop.to_owned(),
            local,
            metrics,
            via: Via::Bus(bus),
        })
    }

    fn alone(pop: &str, local: Arc<dyn Local>, metrics: ControlMetrics) -> Self {
        Self {
            pop: pop.to_owned(),
            local,
            metrics,
            via: Via::Alone(AtomicU64::new(0)),
        }
    }

    /// This POP's name (the edge's `name`).
    pub fn pop(&self) -> &str {
        &self.pop
    }

    /// Applies `command` everywhere it is for, waiting up to `wait` for acknowledgements
    /// (none: return once it is published, or, alone, applied).
    pub async fn submit(&self, command: Command, wait: Option<Duration>) -> Submitted {
        match &self.via {
            Via::Alone(seq) => {
                let seq = seq.fetch_add(1, Ordering::Relaxed) + 1;
                let ack = self.apply(&command, seq).await;
                Submitted {
                    id: ack.id.clone(),
                    seq,
                    acks: vec![ack],
                    pending: Vec::new(),
                    error: None,
                }
            }
            Via::Bus(bus) => bus.submit(command, wait).await,
        }
    }

    /// Whether the bus side has caught up with the stream, waiting up to `timeout` for it.
    /// Alone, there is nothing to catch up with.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        match &self.via {
            Via::Alone(_) => true,
            Via::Bus(bus) => bus.caught_up(timeout).await,
        }
    }

    /// The bus side now (`None`: no bus).
    pub fn status(&self) -> Option<BusStatus> {
        match &self.via {
            Via::Alone(_) => None,
            Via::Bus(bus) => Some(bus.status()),
        }
    }

    /// Stops consuming (a command being applied is finished and acknowledged first) and
    /// closes the connection.
    pub async fn shutdown(&self) {
        if let Via::Bus(bus) = &self.via {
            bus.shutdown().await;
        }
    }

    /// Applies one command here (not from the bus), numbered `seq`.
    async fn apply(&self, command: &Command, seq: u64) -> Ack {
        let local = self.local.as_ref();
        apply(&self.pop, local, &self.metrics, command, seq, Path::Local).await
    }
}

/// Applies one command on the POP `pop`, reached by `path`: what it acknowledges.
async fn apply(
    pop: &str,
    local: &dyn Local,
    metrics: &ControlMetrics,
    command: &Command,
    seq: u64,
    path: Path,
) -> Ack {
    metrics.received();
    let outcome = match command {
        Command::Purge(p) => Outcome::Purged(local.purge(p).await),
        Command::Prewarm(p) if p.includes(pop) => Outcome::Prewarmed(local.prewarm(p).await),
        Command::Prewarm(_) => Outcome::Skipped,
    };
    let applied_ms = command::now_ms();
    let objects = match &outcome {
        Outcome::Purged(p) => p.objects,
        _ => 0,
    };
    if outcome != Outcome::Skipped {
        metrics.applied(command, path, applied_ms, objects);
    }
    Ack {
        id: command.id().to_owned(),
        pop: pop.to_owned(),
        seq,
        applied_ms,
        outcome,
    }
}
