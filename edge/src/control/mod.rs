//! The control plane: purge and pre-warm commands, from the admin API (and the HTTP `PURGE`
//! method) to every POP.
//!
//! Without `[control]` configured, a command applies to this edge only: one machine needs no
//! bus. With it, each command is published once to a NATS JetStream stream; every POP applies
//! the stream in order through its durable consumer and publishes an [`Ack`].
//!
//! - `command.rs`: the commands and acknowledgements (the API's, the bus's and the store's
//!   common language).

pub mod command;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use self::command::{Ack, Command, Mode, Outcome, Prewarm, Prewarmed, Purge, Purged, Selector};

/// What a POP does with a command: implemented by the edge (its cache and its service).
pub trait Local: Send + Sync + 'static {
    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, Purged>;
    fn prewarm<'a>(&'a self, prewarm: &'a Prewarm) -> BoxFuture<'a, Prewarmed>;
}

/// The answer to a command submitted through the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Submitted {
    pub id: String,
    /// The stream sequence (a single edge numbers its own commands).
    pub seq: u64,
    /// Acknowledgements received within the wait, this POP's included.
    pub acks: Vec<Ack>,
    /// POPs expected to acknowledge that had not when the wait ended.
    pub pending: Vec<String>,
}

/// Where commands go: this edge alone, or the fleet over the bus.
pub struct Control {
    pop: String,
    local: Arc<dyn Local>,
    seq: AtomicU64,
}

impl Control {
    /// A control plane for this edge alone.
    pub fn local(pop: &str, local: Arc<dyn Local>) -> Self {
        Self {
            pop: pop.to_owned(),
            local,
            seq: AtomicU64::new(0),
        }
    }

    /// This POP's name (the edge's `name`).
    pub fn pop(&self) -> &str {
        &self.pop
    }

    /// Applies `command` everywhere it is for, waiting up to `wait` for acknowledgements
    /// (none: return once it is published, or, alone, applied).
    pub async fn submit(&self, command: Command, _wait: Option<Duration>) -> Submitted {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let outcome = self.apply(&command).await;
        let ack = Ack {
            id: command.id().to_owned(),
            pop: self.pop.clone(),
            seq,
            applied_ms: command::now_ms(),
            outcome,
        };
        Submitted {
            id: ack.id.clone(),
            seq,
            acks: vec![ack],
            pending: Vec::new(),
        }
    }

    /// Applies one command here.
    async fn apply(&self, command: &Command) -> Outcome {
        match command {
            Command::Purge(p) => Outcome::Purged(self.local.purge(p).await),
            Command::Prewarm(p) if p.includes(&self.pop) => {
                Outcome::Prewarmed(self.local.prewarm(p).await)
            }
            Command::Prewarm(_) => Outcome::Skipped,
        }
    }
}
