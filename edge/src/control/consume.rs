//! This POP's durable pull consumer: every command of the stream, applied in the stream's
//! order through [`Local`], then acknowledged to JetStream and to the fleet. A purge the
//! fast path (`fast.rs`) applied first is not applied again: it is acknowledged to
//! JetStream once that apply has finished, so an acknowledged command is an applied one.
//!
//! Catch-up policy. A POP that was stopped or cut off may hold objects that purges it has
//! not seen yet removed. So from the start until its consumer has caught up with the
//! stream's last command, and again from each reconnect until it has caught up, its cache is
//! *suspect*: every hit revalidates with the origin instead of being served as it is
//! (`Local::set_cache_suspect`). Revalidating rather than refusing keeps the POP serving
//! while it replays, and a revalidation costs a round trip, not a full fetch. While the bus
//! is unreachable the POP serves from its cache normally: it cannot know what it is missing,
//! and refusing every hit for the length of a partition would turn it into an origin
//! amplifier. A POP away longer than the stream keeps commands (`max_age`, `max_messages`)
//! marks its whole cache stale, since it cannot replay what aged out.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::bus::{Link, Once, Shared};
use super::metrics::Path;
use super::order::{Order, Step};
use super::{Command, Mode, Purge, Selector};

/// How a session with the stream ended, when nothing failed.
enum Ended {
    Stopped,
    Disconnected,
}

/// Why a session with the stream ended early: what to log before trying again.
type SessionError = String;

/// Sessions with the stream, one per connection, until the bus is stopped.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut link = shared.link.clone();
    let mut last_error: Option<String> = None;
    let mut failures = 0u32;
    // Whether the start's catch-up is done.
    let mut started = false;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = link.wait_for(|l| l.up) => if r.is_err() { return },
        }
        let mut session = Session::new(&shared, started);
        let ended = session.run(&mut stop, &mut link).await;
        started |= session.reached;
        // Off the suspect mark whatever ended the session, once the start's catch-up is
        // done: without the bus the POP serves normally (it cannot know what it misses).
        if started {
            shared.local.set_cache_suspect(false);
        }
        match ended {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Disconnected) => failures = 0,
            Err(error) => {
                failures += 1;
                // Each distinct failure once; a repeat of the same is not news.
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "control: consuming the stream failed; retrying");
                    last_error = Some(error);
                }
            }
        }
        let pause = Duration::from_millis(100 << failures.min(6)).min(Duration::from_secs(5));
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A session's view of the stream.
struct Open {
    stream: stream::Stream,
    consumer: PullConsumer,
    messages: consumer::pull::Stream,
    order: Order,
    /// The stream's first sequence when the session opened.
    first_kept: u64,
    /// The last command in the stream when the session opened: caught up once there.
    target: u64,
}

/// One connection's worth of consuming.
struct Session<'a> {
    shared: &'a Shared,
    /// Whether this session catches up after a reconnect (else: at startup).
    reconnect: bool,
    /// Applied while catching up.
    replayed: u64,
    /// Whether it caught up.
    reached: bool,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, reconnect: bool) -> Self {
        Self {
            shared,
            reconnect,
            replayed: 0,
            reached: false,
        }
    }

    async fn run(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        link: &mut watch::Receiver<Link>,
    ) -> Result<Ended, SessionError> {
        let connection = link.borrow().connection;
        self.shared.local.set_cache_suspect(true);
        self.shared.status.send_modify(|s| s.caught_up = false);
        let mut open = self.open().await?;
        let mut catching_up = true;
        if open.order.last() >= open.target {
            self.caught_up(open.order.last());
            catching_up = false;
        }
        loop {
            let next = tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
                _ = link.wait_for(|l| !l.up || l.connection != connection) => {
                    return Ok(Ended::Disconnected);
                }
                m = open.messages.next() => Some(m),
                // While catching up, a quiet second asks whether anything is left (the
                // target may have been deleted before this POP reached it).
                _ = tokio::time::sleep(Duration::from_secs(1)), if catching_up => None,
            };
            let message = match next {
                None => {
                    let info = open.consumer.get_info().await;
                    if info.is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0) {
                        self.caught_up(open.order.last());
                        catching_up = false;
                    }
                    continue;
                }
                Some(None) => return Err("the pull ended".into()),
                Some(Some(Err(e))) => return Err(format!("pull: {e}")),
                Some(Some(Ok(m))) => m,
            };
            self.take(&mut open, &message, catching_up).await?;
            if catching_up && open.order.last() >= open.target {
                self.caught_up(open.order.last());
                catching_up = false;
            }
        }
    }

    /// The stream and this POP's consumer, where the POP is in it, and the pull.
    async fn open(&self) -> Result<Open, SessionError> {
        let stream = self.stream().await?;
        let consumer = self.consumer(&stream).await?;
        let kept = stream
            .get_info()
            .await
            .map_err(|e| format!("stream info: {e}"))?;
        let floor = consumer
            .get_info()
            .await
            .map_err(|e| format!("consumer info: {e}"))?
            .ack_floor
            .stream_sequence;
        let order = Order::new(floor);
        let first_kept = kept.state.first_sequence;
        if order.missed_expired(first_kept) {
            self.stale_all(floor, first_kept).await;
        }
        let target = self.last_command(&stream).await?;
        self.shared.status.send_modify(|s| s.last_applied = floor);
        let messages = consumer
            .stream()
            .max_messages_per_batch(256)
            // Well under `expires`: a dead connection shows within 10 s even if no event
            // says so.
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| format!("pull: {e}"))?;
        Ok(Open {
            stream,
            consumer,
            messages,
            order,
            first_kept,
            target,
        })
    }

    /// One delivery: applied (after any commands lost before it) unless applied before,
    /// then acknowledged to JetStream.
    async fn take(
        &mut self,
        open: &mut Open,
        message: &jetstream::Message,
        catching_up: bool,
    ) -> Result<(), SessionError> {
        let seq = message
            .info()
            .map_err(|e| format!("message info: {e}"))?
            .stream_sequence;
        if let Step::Apply { missing } = open.order.step(seq, open.first_kept) {
            for gap in missing {
                // Lost in flight on a reconnect: read from the stream, in order.
                match open.stream.get_raw_message(gap).await {
                    Ok(m) => self.apply(&m.payload, gap, catching_up).await,
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(format!("reading command {gap}: {e}")),
                }
                open.order.applied(gap);
            }
            self.apply(&message.payload, seq, catching_up).await;
            open.order.applied(seq);
        }
        message
            .ack()
            .await
            .map_err(|e| format!("acknowledging {seq}: {e}"))?;
        let last = open.order.last();
        self.shared.status.send_modify(|s| s.last_applied = last);
        Ok(())
    }

    /// The stream, created as configured if missing (an existing one is used as it is).
    async fn stream(&self) -> Result<stream::Stream, SessionError> {
        let c = &self.shared.config;
        let config = stream::Config {
            name: c.stream.clone(),
            description: Some("quicdn control commands (purge, pre-warm)".into()),
            subjects: vec![c.command_subject()],
            // Limits, not work-queue: every POP's consumer reads every command.
            retention: RetentionPolicy::Limits,
            max_age: c.max_age,
            max_messages: c.max_messages,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: c.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.shared
            .js
            .get_or_create_stream(config)
            .await
            .map_err(|e| {
                format!(
                    "stream {} (control.replicas = {}): {e}",
                    c.stream, c.replicas
                )
            })
    }

    /// This POP's durable consumer, named after it: it remembers across restarts what the
    /// POP has acknowledged.
    async fn consumer(&self, stream: &stream::Stream) -> Result<PullConsumer, SessionError> {
        let name = self.shared.pop.clone();
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("quicdn POP {name}")),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            // A purge of a large cache can take a while; a redelivery meanwhile is harmless
            // (see order.rs) but wasted.
            ack_wait: Duration::from_secs(30),
            filter_subject: self.shared.config.command_subject(),
            ..Default::default()
        };
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| format!("consumer {name}: {e}"))
    }

    /// The stream sequence of the last command published (0: none): caught up once there.
    async fn last_command(&self, stream: &stream::Stream) -> Result<u64, SessionError> {
        let subject = self.shared.config.command_subject();
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(format!("last command: {e}")),
        }
    }

    /// Applies the command in `payload` (the stream's `seq`) and acknowledges it to the
    /// fleet, unless the fast path applied it. One that does not parse is logged and passed
    /// over: it must not stop the POP.
    async fn apply(&mut self, payload: &[u8], seq: u64, catching_up: bool) {
        let command: Command = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(seq, %error, "control: not a command; skipped");
                return;
            }
        };
        let s = self.shared;
        // A purge the fast path applied is only acknowledged to JetStream (by the caller);
        // the fleet had its acknowledgement from there.
        let ack = match s.apply_once(&command, seq, Path::Stream).await {
            Once::Now(ack) => ack,
            Once::Before(_) => {
                tracing::debug!(
                    seq,
                    id = command.id(),
                    "control: applied from the fast path already"
                );
                return;
            }
        };
        if catching_up {
            self.replayed += 1;
        }
        tracing::debug!(seq, id = ack.id, replay = catching_up, "control: applied");
        s.acknowledge(&ack).await;
    }

    /// Caught up with the stream at `last`: the cache is trusted again.
    fn caught_up(&mut self, last: u64) {
        self.reached = true;
        let s = self.shared;
        let when = match self.reconnect {
            true => "reconnect",
            false => "startup",
        };
        s.metrics.replayed(when, self.replayed);
        s.status.send_modify(|st| {
            st.caught_up = true;
            st.last_applied = last;
            st.replayed += self.replayed;
        });
        s.local.set_cache_suspect(false);
        tracing::info!(
            replayed = self.replayed,
            last_seq = last,
            at = when,
            "control: caught up with the stream"
        );
    }

    /// Commands this POP never saw aged out of the stream: mark the whole cache stale.
    async fn stale_all(&self, floor: u64, first_kept: u64) {
        tracing::warn!(
            last_applied = floor,
            first_kept,
            "control: commands aged out of the stream before this POP applied them; marking the whole cache stale"
        );
        let purge = Purge {
            id: super::command::new_id(),
            selector: Selector::All,
            mode: Mode::Soft,
            issued_ms: super::command::now_ms(),
        };
        self.shared.local.purge(&purge).await;
    }
}
