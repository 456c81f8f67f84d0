//! The purges' fast path: every purge is also published as a plain NATS message on
//! `<subject>.fast`, with its stream publish, and every POP applies it on first sight and
//! acknowledges it at once (`Ack::seq` 0: the stream sequence is not known here yet). The
//! stream's way to a POP goes through a quorum write (a long round trip) and the consumer's
//! raft leader (maybe a third region); a plain message goes from the publisher's server
//! straight to each POP's. The stream stays the durable, ordered log: the consumer still
//! reads every purge, applies it if the fast message never came (a POP that was down or cut
//! off, a message lost), and otherwise only acknowledges it to JetStream.
//!
//! Why applying purges out of stream order is safe:
//! - Purges commute with each other. Hard or soft, whatever the selectors, a purge only
//!   removes objects or marks them stale, and a fetch after either kind gets fresh content;
//!   so any order of the same purges leaves the same objects servable.
//! - A purge applied before a pre-warm submitted earlier is still correct: the pre-warm,
//!   applied later from the stream, fetches content that is fresh as of then, which is what
//!   the purge asked for.
//! - A purge applied while the POP is catching up (its cache suspect) only removes more.
//!
//! Pre-warms stay on the stream only: they are not latency-critical (fetching the URLs
//! takes longer than the stream's delay), and in stream order a pre-warm is applied after
//! every purge submitted before it, at every POP. Were it applied first, that purge would
//! then remove what the pre-warm fetched: not wrong, but the warming wasted.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::Command;
use super::applied::Claim;
use super::bus::Shared;
use super::metrics::Path;

/// Applies the purges that arrive by the fast path, until the bus is stopped. The
/// subscription is made at once and lasts the connection's life: the client renews it
/// after each reconnect (what was sent meanwhile comes by the stream).
pub(super) async fn run(shared: Arc<Shared>) {
    let subject = shared.config.fast_subject();
    let mut messages = match shared.client.subscribe(subject).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "control: cannot subscribe to the fast path; purges arrive by the stream only");
            return;
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            m = messages.next() => m,
        };
        let Some(message) = message else { return };
        match serde_json::from_slice::<Command>(&message.payload) {
            Ok(command @ Command::Purge(_)) => take(&shared, &command).await,
            Ok(other) => {
                tracing::debug!(
                    id = other.id(),
                    "control: only purges take the fast path; ignored"
                );
            }
            Err(error) => tracing::debug!(%error, "control: not a command on the fast path"),
        }
    }
}

/// Applies a purge on first sight and acknowledges it. One applied before (the stream
/// brought it first, or this is a retried submit of the same id) is acknowledged again, as
/// it was then: a retry waits for acknowledgements too, and no stream delivery will bring
/// them (JetStream keeps the same message id once). One being applied now is left to that
/// apply, which acknowledges it.
async fn take(shared: &Shared, command: &Command) {
    let applying = match shared.applied.claim(command.id()) {
        Claim::First(applying) => applying,
        Claim::Taken(rx) => {
            let before = rx.borrow().clone();
            if let Some(ack) = before {
                tracing::debug!(
                    id = ack.id,
                    "control: fast path: applied before; acknowledged again"
                );
                shared.acknowledge(&ack).await;
            }
            return;
        }
    };
    let (local, metrics) = (shared.local.as_ref(), &shared.metrics);
    let ack = super::apply(&shared.pop, local, metrics, command, 0, Path::Fast).await;
    applying.done(&ack);
    tracing::debug!(id = ack.id, "control: applied from the fast path");
    shared.acknowledge(&ack).await;
}
