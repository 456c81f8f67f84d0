//! The bus: one NATS connection per POP, kept for ever (reconnecting with backoff), that
//! publishes commands to the JetStream stream (and purges to the fast path too), carries
//! this POP's consumer (`consume.rs`) and fast-path subscriber (`fast.rs`), and collects the
//! acknowledgements of every POP for `submit`.
//!
//! Acknowledgements are plain NATS messages on `<subject>.ack.<pop>`, not stream messages:
//! they matter only to a `submit` waiting now, which subscribed before it published (one
//! subscription for the POP's lifetime, so none is missed and none is set up per purge).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::applied::{self, Applied, Claim};
use super::{Ack, BusStatus, Command, ControlError, ControlMetrics, Local, Path, Submitted};
use crate::config::ControlConfig;

/// The longest a publish waits for the stream to confirm it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest each step of a shutdown waits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The bus side of a [`Control`].
pub(super) struct Bus {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the bus's tasks share.
pub(super) struct Shared {
    pub(super) pop: String,
    pub(super) config: ControlConfig,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) local: Arc<dyn Local>,
    pub(super) metrics: ControlMetrics,
    /// The connection, as its events say.
    pub(super) link: watch::Receiver<Link>,
    pub(super) status: watch::Sender<BusStatus>,
    pub(super) stop: watch::Sender<bool>,
    /// The `submit`s waiting for acknowledgements, by command id.
    waiters: Mutex<HashMap<String, mpsc::UnboundedSender<Ack>>>,
    /// The commands applied lately, by either path.
    pub(super) applied: Applied,
}

/// What [`Shared::apply_once`] did.
pub(super) enum Once {
    /// Applied it now.
    Now(Ack),
    /// The other path had applied it: its acknowledgement then.
    Before(Ack),
}

impl Bus {
    pub(super) async fn start(
        pop: &str,
        config: &ControlConfig,
        local: Arc<dyn Local>,
        metrics: ControlMetrics,
    ) -> Result<Self, ControlError> {
        let (link_tx, link) = watch::channel(Link::default());
        local.set_bus_connected(false);
        // Suspect from the start, connected or not, until the first catch-up.
        local.set_cache_suspect(true);
        metrics.set_connected(false);
        let events = {
            let (local, metrics, servers) = (local.clone(), metrics.clone(), config.nats.clone());
            move |event: async_nats::Event| {
                on_event(&event, &link_tx, local.as_ref(), &metrics, &servers);
                async {}
            }
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("quicdn-edge {pop}"))
            // Connect in the background, and reconnect for ever: the edge serves without
            // the bus, and must rejoin it whenever it can.
            .retry_on_initial_connect()
            .max_reconnects(None)
            // The POP's own region's server first, as configured.
            .retain_servers_order()
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(events)
            .connect(config.nats.as_slice())
            .await
            .map_err(ControlError::Connect)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(client.clone());
        let shared = Arc::new(Shared {
            pop: pop.to_owned(),
            config: config.clone(),
            client,
            js,
            local,
            metrics,
            link,
            status: watch::channel(BusStatus::default()).0,
            stop: watch::channel(false).0,
            waiters: Mutex::new(HashMap::new()),
            applied: Applied::new(applied::KEPT),
        });
        let tasks = vec![
            tokio::spawn(collect_acks(shared.clone())),
            tokio::spawn(super::fast::run(shared.clone())),
            tokio::spawn(super::consume::run(shared.clone())),
        ];
        Ok(Self {
            shared,
            tasks: Mutex::new(tasks),
        })
    }

    /// Publishes `command` once and collects acknowledgements for it until every expected
    /// POP has sent one or `wait` runs out. If it cannot be published, this POP applies it
    /// alone and says so.
    ///
    /// The stream's confirmation is awaited alongside the acknowledgements, not before them:
    /// over the fast path every POP can have applied a purge before the stream's quorum
    /// write is confirmed (the confirmation takes a round trip to the stream's leader plus
    /// one from it to a follower, 380 ms from us-east with the testnet's stream led from
    /// ap-southeast). Once every POP has acknowledged, the purge is applied everywhere and
    /// the answer does not wait for the stream any longer: its `seq` is then 0 unless the
    /// confirmation was in, and a failed confirmation is only logged.
    pub(super) async fn submit(&self, command: Command, wait: Option<Duration>) -> Submitted {
        let id = command.id().to_owned();
        // The wait bounds the collection of acknowledgements.
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut pending = self.shared.config.expected_pops(&self.shared.pop);
        // Registered before the publish: an acknowledgement can come back before the
        // publish's own confirmation does.
        let waiter = wait.map(|_| Waiter::register(&self.shared, &id));
        let mut confirmation = match self.publish(&command).await {
            Ok(c) => Box::pin(confirmed(c)),
            Err(error) => return self.unpublished(&command, error, pending, Vec::new()).await,
        };
        let mut seq = None;
        let mut acks = Vec::new();
        if let (Some(mut waiter), Some(deadline)) = (waiter, deadline) {
            while !pending.is_empty() {
                let ack = tokio::select! {
                    c = &mut confirmation, if seq.is_none() => {
                        match c {
                            Ok(s) => seq = Some(s),
                            Err(e) => return self.unpublished(&command, e, pending, acks).await,
                        }
                        continue;
                    }
                    ack = tokio::time::timeout_at(deadline, waiter.rx.recv()) => ack,
                };
                let Ok(Some(ack)) = ack else { break };
                pending.retain(|p| *p != ack.pop);
                // A POP acknowledges once per apply, but a redelivery or a command that
                // reached it by both paths around a restart can bring a second: not news.
                if !acks.iter().any(|a: &Ack| a.pop == ack.pop) {
                    acks.push(ack);
                }
            }
        }
        let seq = match seq {
            Some(seq) => seq,
            None if wait.is_some() && pending.is_empty() => {
                tokio::spawn(async move {
                    if let Err(error) = confirmation.await {
                        tracing::warn!(id = command.id(), %error, "control: every POP applied the command, but the stream did not confirm it");
                    }
                });
                0
            }
            None => match confirmation.await {
                Ok(seq) => seq,
                Err(e) => return self.unpublished(&command, e, pending, acks).await,
            },
        };
        Submitted {
            id,
            seq,
            acks,
            pending,
            error: None,
        }
    }

    /// The answer for a command that could not be published: applied on this POP (unless
    /// the fast path did already, after a publish that timed out), with `acks` so far.
    async fn unpublished(
        &self,
        command: &Command,
        error: String,
        mut pending: Vec<String>,
        mut acks: Vec<Ack>,
    ) -> Submitted {
        let id = command.id().to_owned();
        tracing::warn!(id, %error, "control: command not published; applying it on this POP only");
        let ack = match self.shared.apply_once(command, 0, Path::Local).await {
            Once::Now(ack) | Once::Before(ack) => ack,
        };
        pending.retain(|p| *p != ack.pop);
        acks.retain(|a| a.pop != ack.pop);
        acks.push(ack);
        Submitted {
            id,
            seq: 0,
            acks,
            pending,
            error: Some(error),
        }
    }

    /// Publishes `command` to the stream, and a purge to the fast path too: the stream's
    /// confirmation to come. The command id is the message id, so JetStream drops a second
    /// publish of the same command (and each POP's applied set, a second fast message).
    async fn publish(&self, command: &Command) -> Result<PublishAckFuture, String> {
        if self.shared.client.connection_state() != async_nats::connection::State::Connected {
            // Not queued for later: a command the caller was told failed must not be
            // applied by the fleet at some later time.
            return Err("the control bus is not connected".into());
        }
        let payload: bytes::Bytes = serde_json::to_vec(command)
            .map_err(|e| e.to_string())?
            .into();
        // Both publishes are queued on the one connection back to back, so they leave in
        // the same write: the fast path is not after the stream's. Pre-warms stay on the
        // stream only (see fast.rs).
        if matches!(command, Command::Purge(_)) {
            let fast = self.shared.config.fast_subject();
            if let Err(error) = self.shared.client.publish(fast, payload.clone()).await {
                // The stream still carries it, a little later.
                tracing::debug!(%error, id = command.id(), "control: fast-path publish failed");
            }
        }
        let publish = PublishMessage::build()
            .payload(payload)
            .message_id(command.id());
        let subject = self.shared.config.command_subject();
        self.shared
            .js
            .send_publish(subject, publish)
            .await
            .map_err(|e| format!("publish failed: {e}"))
    }

    pub(super) async fn caught_up(&self, timeout: Duration) -> bool {
        let mut status = self.shared.status.subscribe();
        tokio::time::timeout(timeout, status.wait_for(|s| s.caught_up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(super) fn status(&self) -> BusStatus {
        BusStatus {
            connected: self.shared.link.borrow().up,
            ..self.shared.status.borrow().clone()
        }
    }

    pub(super) async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for mut task in tasks {
            // A command being applied finishes first; a session stuck setting up (a bus
            // that connects but does not answer) is cut off.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        // Sends what is buffered (the last acknowledgements) before closing; a connection
        // that is down has nothing to send.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, self.shared.client.drain()).await;
        if let Ok(Err(error)) = drained {
            tracing::debug!(%error, "control: draining the bus connection");
        }
    }
}

/// The stream's sequence for a published command, once the stream confirms it (within
/// [`PUBLISH_TIMEOUT`]).
async fn confirmed(confirmation: PublishAckFuture) -> Result<u64, String> {
    match confirmation.await {
        Ok(ack) => Ok(ack.sequence),
        Err(e) => Err(format!(
            "the stream did not confirm the publish ({e}); it may still reach other POPs"
        )),
    }
}

/// A `submit`'s registration for the acknowledgements of one command; removed on drop.
struct Waiter {
    shared: Arc<Shared>,
    id: String,
    rx: mpsc::UnboundedReceiver<Ack>,
}

impl Waiter {
    fn register(shared: &Arc<Shared>, id: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        shared.waiters().insert(id.to_owned(), tx);
        Self {
            shared: shared.clone(),
            id: id.to_owned(),
            rx,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared.waiters().remove(&self.id);
    }
}

impl Shared {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Ack>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `command` here unless it already was (or is being) applied by the other path,
    /// in which case it waits for that apply to finish: what the caller may then
    /// acknowledge to JetStream is applied.
    pub(super) async fn apply_once(&self, command: &Command, seq: u64, path: Path) -> Once {
        loop {
            match self.applied.claim(command.id()) {
                Claim::First(applying) => {
                    let (local, metrics) = (self.local.as_ref(), &self.metrics);
                    let ack = super::apply(&self.pop, local, metrics, command, seq, path).await;
                    applying.done(&ack);
                    return Once::Now(ack);
                }
                Claim::Taken(mut rx) => {
                    if let Ok(ack) = rx.wait_for(Option::is_some).await
                        && let Some(ack) = ack.clone()
                    {
                        return Once::Before(ack);
                    }
                    // That apply was cut off: claim it again.
                }
            }
        }
    }

    /// Publishes this POP's acknowledgement of a command (a plain NATS message: no one
    /// replays acknowledgements).
    pub(super) async fn acknowledge(&self, ack: &Ack) {
        let Ok(payload) = serde_json::to_vec(ack) else {
            return;
        };
        let subject = self.config.ack_subject(&self.pop);
        if let Err(error) = self.client.publish(subject, payload.into()).await {
            tracing::debug!(%error, id = ack.id, "control: acknowledgement not sent");
        }
    }
}

/// Hands every POP's acknowledgements to the `submit` waiting for them.
async fn collect_acks(shared: Arc<Shared>) {
    let subject = format!("{}.ack.*", shared.config.subject);
    let mut acks = match shared.client.subscribe(subject).await {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "control: cannot subscribe to acknowledgements; submit will not see any");
            return;
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            m = acks.next() => m,
        };
        let Some(message) = message else { return };
        match serde_json::from_slice::<Ack>(&message.payload) {
            Ok(ack) => {
                if let Some(tx) = shared.waiters().get(&ack.id) {
                    let _ = tx.send(ack);
                }
            }
            Err(error) => {
                tracing::debug!(%error, subject = %message.subject, "control: not an acknowledgement");
            }
        }
    }
}

/// The bus connection's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Link {
    pub(super) up: bool,
    /// Connections made so far: a consumer session belongs to one, and a reconnect quicker
    /// than the session could see the drop still ends it (and starts a catch-up).
    pub(super) connection: u64,
}

/// Logs each change of the connection's state once, and reports it.
fn on_event(
    event: &async_nats::Event,
    link: &watch::Sender<Link>,
    local: &dyn Local,
    metrics: &ControlMetrics,
    servers: &[String],
) {
    let up = match event {
        async_nats::Event::Connected => true,
        async_nats::Event::Disconnected => false,
        // Only a shutdown closes it (reconnects never end): nothing to warn about.
        async_nats::Event::Closed => {
            link.send_modify(|l| l.up = false);
            metrics.set_connected(false);
            tracing::info!("control: bus connection closed");
            return;
        }
        other => {
            tracing::debug!(event = %other, "control: bus event");
            return;
        }
    };
    let mut changed = false;
    link.send_modify(|l| {
        changed = l.up != up;
        l.up = up;
        l.connection += u64::from(up);
    });
    if !changed {
        return;
    }
    metrics.set_connected(up);
    local.set_bus_connected(up);
    match up {
        true => tracing::info!(?servers, "control: bus connected"),
        false => tracing::warn!(
            ?servers,
            "control: bus disconnected; serving from the cache, purges from other POPs wait until it reconnects"
        ),
    }
}

/// Reconnect backoff: at once, then doubling from 100 ms to at most 5 s.
fn reconnect_delay(attempts: usize) -> Duration {
    match attempts {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100u64 << (n - 2).min(6)).min(Duration::from_secs(5)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_five_seconds() {
        let delays: Vec<u64> = (1..=10)
            .map(|n| reconnect_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
    }
}
