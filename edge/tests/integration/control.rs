//! The control plane over a real NATS JetStream (`nats-server`, one node or a cluster of
//! three): commands published once reach every POP, each POP acknowledges, purges take the
//! fast path and are applied once however many paths bring them, a POP that was away
//! replays what it missed with its cache suspect meanwhile, and a cluster node down loses
//! nothing. Fake POPs ([`Recorder`]) where the exact applies
//! matter, real edges where the edge's wiring does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge::config::{ControlConfig, EdgeConfig};
use edge::control::{
    Ack, Command, Control, Local, Mode, Outcome, Prewarm, Prewarmed, Purge, Purged, Selector,
    Submitted, command,
};
use edge::server::{Edge, RunningEdge};
use futures_util::future::BoxFuture;

use crate::support::client::Client;
use crate::support::edge::{metric, test_config};
use crate::support::nats::{NatsCluster, NatsServer, free_port};
use crate::support::origin::{Reply, TestOrigin};

/// What a fake POP was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Purge(String),
    Prewarm(String),
    Suspect(bool),
}

/// What [`Recorder`] records for a soft purge of everything.
const STALE_ALL: &str = "(all, soft)";

/// A POP that records what the control plane makes it do.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    /// If set, a pre-warm holds up its caller (the stream consumer) until this is true.
    prewarm_gate: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The ids purged, in order.
    fn purged(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Purge(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Waits (at most `within`) until `n` purges were applied; the ids.
    async fn await_purged(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        while self.purged().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.purged()
    }
}

impl Local for Recorder {
    fn purge<'a>(&'a self, purge: &'a Purge) -> BoxFuture<'a, Purged> {
        // The catch-up's own purge (everything, soft) has no id anyone published.
        let id = match (&purge.selector, purge.mode) {
            (Selector::All, Mode::Soft) => STALE_ALL.to_owned(),
            _ => purge.id.clone(),
        };
        self.events.lock().unwrap().push(Event::Purge(id));
        Box::pin(async {
            Purged {
                objects: 1,
                ..Purged::default()
            }
        })
    }

    fn prewarm<'a>(&'a self, prewarm: &'a Prewarm) -> BoxFuture<'a, Prewarmed> {
        let id = prewarm.id.clone();
        self.events.lock().unwrap().push(Event::Prewarm(id));
        let gate = self.prewarm_gate.clone();
        Box::pin(async move {
            if let Some(mut gate) = gate {
                let _ = gate.wait_for(|open| *open).await;
            }
            Prewarmed::default()
        })
    }

    fn set_cache_suspect(&self, suspect: bool) {
        let mut events = self.events.lock().unwrap();
        // Repeats carry nothing (a session ending re-asserts "not suspect").
        if events.iter().rev().find_map(|e| match e {
            Event::Suspect(s) => Some(*s),
            _ => None,
        }) != Some(suspect)
        {
            events.push(Event::Suspect(suspect));
        }
    }

    fn set_bus_connected(&self, _connected: bool) {}
}

fn bus(servers: &[String], pops: &[&str], replicas: usize) -> ControlConfig {
    ControlConfig {
        nats: servers.to_vec(),
        replicas,
        pops: pops.iter().map(|p| (*p).to_owned()).collect(),
        ..ControlConfig::default()
    }
}

fn purge_url(url: &str) -> Command {
    Command::Purge(Purge {
        id: command::new_id(),
        selector: Selector::Url(url.to_owned()),
        mode: Mode::Hard,
        issued_ms: command::now_ms(),
    })
}

/// A fake POP on the bus, caught up.
async fn fake_pop(name: &str, config: &ControlConfig) -> (Control, Arc<Recorder>) {
    fake_pop_with(name, config, Recorder::default()).await
}

async fn fake_pop_with(
    name: &str,
    config: &ControlConfig,
    recorder: Recorder,
) -> (Control, Arc<Recorder>) {
    let recorder = Arc::new(recorder);
    let control = Control::bus(name, config, recorder.clone()).await.unwrap();
    assert!(
        control.caught_up(Duration::from_secs(20)).await,
        "{name} catches up with the stream within 20 s"
    );
    (control, recorder)
}

fn acked_by(s: &Submitted) -> Vec<String> {
    let mut pops: Vec<String> = s.acks.iter().map(|a| a.pop.clone()).collect();
    pops.sort();
    pops
}

#[tokio::test]
async fn every_pop_applies_every_command_once_and_acks_it() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let pops = ["ap-southeast", "eu-central", "us-east"];
    let config = bus(&[nats.url().to_owned()], &pops, 1);
    let mut fleet = Vec::new();
    for pop in pops {
        fleet.push(fake_pop(pop, &config).await);
    }
    // Ten purges from each POP at once: each POP applies each once, by whichever path
    // brought it first (in any order: purges commute).
    let fleet = Arc::new(fleet);
    let mut submits = Vec::new();
    for i in 0..30 {
        let fleet = fleet.clone();
        submits.push(tokio::spawn(async move {
            let control = &fleet[i % 3].0;
            let command = purge_url(&format!("https://cdn.test/{i}"));
            control.submit(command, Some(Duration::from_secs(10))).await
        }));
    }
    let mut published = Vec::new();
    for submit in submits {
        let s = submit.await.unwrap();
        assert_eq!(s.error, None);
        assert!(s.pending.is_empty(), "{s:?}");
        assert_eq!(acked_by(&s), pops, "{s:?}");
        for ack in &s.acks {
            // 0: applied from the fast path, before the stream delivered it. (The answer's
            // own seq is 0 if every POP acknowledged before the stream confirmed.)
            assert!(
                ack.seq == 0 || ack.seq == s.seq || s.seq == 0,
                "{ack:?} of {s:?}"
            );
            assert!(matches!(ack.outcome, Outcome::Purged(p) if p.objects == 1));
        }
        published.push(s.id);
    }
    published.sort();
    for (control, recorder) in fleet.iter() {
        // Both paths delivered every purge; the stream's must not have applied it again.
        let all_delivered = |status: &edge::control::BusStatus| status.last_applied >= 30;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_delivered(&control.status().unwrap()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(all_delivered(&control.status().unwrap()));
        let mut purged = recorder.purged();
        purged.sort();
        assert_eq!(purged, published, "{} applied each once", control.pop());
    }
    // A POP expected but not running is named as pending when the wait ends.
    let config = bus(
        &[nats.url().to_owned()],
        &["us-east", "eu-central", "ap-southeast", "sa-east"],
        1,
    );
    let (control, _) = fake_pop("us-east", &config).await;
    let started = Instant::now();
    let s = control
        .submit(
            purge_url("https://cdn.test/late"),
            Some(Duration::from_millis(700)),
        )
        .await;
    assert_eq!(s.pending, ["sa-east"], "{s:?}");
    assert_eq!(acked_by(&s), pops);
    assert!(started.elapsed() >= Duration::from_millis(700));
    // Without a wait, the answer comes once the stream has the command.
    let s = control
        .submit(purge_url("https://cdn.test/nowait"), None)
        .await;
    assert!(s.seq > 0 && s.acks.is_empty() && s.error.is_none(), "{s:?}");
    // A pre-warm for one POP: it warms, the others acknowledge it as skipped.
    let warm = Command::Prewarm(Prewarm {
        id: command::new_id(),
        urls: vec!["https://cdn.test/a".into()],
        pops: vec!["eu-central".into()],
        issued_ms: command::now_ms(),
    });
    let s = fleet[0].0.submit(warm, Some(Duration::from_secs(10))).await;
    assert_eq!(acked_by(&s), pops, "{s:?}");
    for ack in &s.acks {
        match ack.pop.as_str() {
            "eu-central" => assert!(matches!(ack.outcome, Outcome::Prewarmed(_)), "{ack:?}"),
            _ => assert_eq!(ack.outcome, Outcome::Skipped),
        }
    }
    for (control, _) in fleet.iter() {
        control.shutdown().await;
    }
}

/// A purge reaches a POP by the fast path while its stream consumer is held up (by a slow
/// pre-warm before it), is acknowledged from there at once, and is not applied again when
/// the consumer gets to it.
#[tokio::test]
async fn a_purge_takes_the_fast_path_past_a_held_up_consumer_and_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let config = bus(&[nats.url().to_owned()], &["us-east", "eu-central"], 1);
    let (us, _) = fake_pop("us-east", &config).await;
    let (gate, held) = tokio::sync::watch::channel(false);
    let slow = Recorder {
        prewarm_gate: Some(held),
        ..Recorder::default()
    };
    let (eu, recorder) = fake_pop_with("eu-central", &config, slow).await;
    let warm = Command::Prewarm(Prewarm {
        id: command::new_id(),
        urls: vec!["https://cdn.test/a".into()],
        pops: Vec::new(),
        issued_ms: command::now_ms(),
    });
    let warming = Event::Prewarm(warm.id().to_owned());
    us.submit(warm, None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorder.events().contains(&warming) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        recorder.events().contains(&warming),
        "eu-central's consumer is inside the pre-warm, and stays there"
    );
    let started = Instant::now();
    let s = us
        .submit(
            purge_url("https://cdn.test/x"),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(s.pending.is_empty() && s.error.is_none(), "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{s:?}");
    let eu_ack = s.acks.iter().find(|a| a.pop == "eu-central").unwrap();
    assert_eq!(eu_ack.seq, 0, "applied from the fast path: {eu_ack:?}");
    assert_eq!(recorder.purged(), std::slice::from_ref(&s.id));
    // A fresh stream: the pre-warm is its first command, the purge its second.
    let seq = 2;
    assert!(s.seq == seq || s.seq == 0, "{s:?}");
    assert!(
        eu.status().unwrap().last_applied < seq,
        "its consumer is still held up"
    );
    // Released, the consumer reads the purge from the stream and acknowledges it to
    // JetStream without applying it again.
    gate.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while eu.status().unwrap().last_applied < seq && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(eu.status().unwrap().last_applied, seq);
    assert_eq!(recorder.purged(), [s.id]);
    us.shutdown().await;
    eu.shutdown().await;
}

/// The two paths driven by hand: a purge only on the fast path is applied on first sight
/// and acknowledged with seq 0; the stream bringing it later does not apply it again (nor
/// acknowledge it again). One only in the stream is applied by the consumer; its fast
/// message coming late does not apply it again, but acknowledges it again as it was (a
/// retried submit waits for acknowledgements too). A pre-warm on the fast path is ignored.
#[tokio::test]
async fn whichever_path_brings_a_purge_first_applies_it_the_other_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let config = bus(&[nats.url().to_owned()], &["us-east"], 1);
    let (us, recorder) = fake_pop("us-east", &config).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut acks = client
        .subscribe(format!("{}.ack.*", config.subject))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let payload = |c: &Command| bytes::Bytes::from(serde_json::to_vec(c).unwrap());
    let to_stream = async |c: &Command| {
        let published = js.publish(config.command_subject(), payload(c)).await;
        published.unwrap().await.unwrap().sequence
    };

    let fast = purge_url("https://cdn.test/fast-first");
    let fast_subject = config.fast_subject();
    client
        .publish(fast_subject.clone(), payload(&fast))
        .await
        .unwrap();
    let ack = next_ack(&mut acks).await;
    assert_eq!((ack.id.as_str(), ack.seq), (fast.id(), 0), "{ack:?}");
    let seq = to_stream(&fast).await;

    let streamed = purge_url("https://cdn.test/stream-first");
    let streamed_seq = to_stream(&streamed).await;
    // The next acknowledgement is this one's: the consumer, in order, sent none for the
    // fast-first purge before it.
    let ack = next_ack(&mut acks).await;
    assert_eq!(
        (ack.id.as_str(), ack.seq),
        (streamed.id(), streamed_seq),
        "{ack:?}"
    );
    assert!(seq < streamed_seq);
    client
        .publish(fast_subject.clone(), payload(&streamed))
        .await
        .unwrap();
    assert_eq!(
        next_ack(&mut acks).await,
        ack,
        "acknowledged again, as it was"
    );

    let warm = Command::Prewarm(Prewarm {
        id: command::new_id(),
        urls: vec!["https://cdn.test/a".into()],
        pops: Vec::new(),
        issued_ms: command::now_ms(),
    });
    client
        .publish(fast_subject.clone(), payload(&warm))
        .await
        .unwrap();
    let last = purge_url("https://cdn.test/last");
    client.publish(fast_subject, payload(&last)).await.unwrap();
    assert_eq!(next_ack(&mut acks).await.id, last.id());
    let want = [fast.id(), streamed.id(), last.id()].map(str::to_owned);
    assert_eq!(recorder.purged(), want);
    assert!(
        !recorder
            .events()
            .iter()
            .any(|e| matches!(e, Event::Prewarm(_))),
        "a pre-warm is taken from the stream only"
    );
    us.shutdown().await;
}

/// The next acknowledgement on `acks` (within 5 s).
async fn next_ack(acks: &mut async_nats::Subscriber) -> Ack {
    let next = futures_util::StreamExt::next(acks);
    let message = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("an acknowledgement within 5 s")
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

/// Also the fast path's miss: a POP that was down when purges were sent (their fast
/// messages went past it) applies them from the stream when it comes back.
#[tokio::test]
async fn a_stopped_pop_replays_what_it_missed_suspect_until_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let config = bus(&[nats.url().to_owned()], &["us-east", "eu-central"], 1);
    let (us, _) = fake_pop("us-east", &config).await;
    let (eu, before) = fake_pop("eu-central", &config).await;
    let first = us
        .submit(
            purge_url("https://cdn.test/0"),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(first.pending.is_empty(), "{first:?}");
    assert_eq!(before.purged(), std::slice::from_ref(&first.id));
    eu.shutdown().await;
    let mut missed = Vec::new();
    for i in 1..=5 {
        let s = us
            .submit(
                purge_url(&format!("https://cdn.test/{i}")),
                Some(Duration::from_millis(200)),
            )
            .await;
        assert_eq!(s.pending, ["eu-central"], "{s:?}");
        missed.push(s.id);
    }
    // The same name is the same durable consumer: it resumes after what it acknowledged.
    let (eu, after) = fake_pop("eu-central", &config).await;
    let mut want = vec![Event::Suspect(true)];
    want.extend(missed.iter().cloned().map(Event::Purge));
    want.push(Event::Suspect(false));
    assert_eq!(after.events(), want);
    let status = eu.status().unwrap();
    assert!(status.connected && status.caught_up, "{status:?}");
    assert_eq!(status.replayed, 5);
    // Caught up, it follows live: no suspect mark for a command applied as it comes.
    let live = us
        .submit(
            purge_url("https://cdn.test/live"),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(live.pending.is_empty(), "{live:?}");
    assert_eq!(after.events().last(), Some(&Event::Purge(live.id)));
    us.shutdown().await;
    eu.shutdown().await;
}

#[tokio::test]
async fn a_command_lost_in_flight_is_read_from_the_stream_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let config = bus(&[nats.url().to_owned()], &["us-east", "eu-central"], 1);
    let (us, _) = fake_pop("us-east", &config).await;
    let (eu, _) = fake_pop("eu-central", &config).await;
    eu.shutdown().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let s = us
            .submit(
                purge_url(&format!("https://cdn.test/{i}")),
                Some(Duration::from_millis(100)),
            )
            .await;
        ids.push(s.id);
    }
    // The first of them is delivered to eu-central's consumer and never acknowledged, as
    // when a connection drops with it in flight: JetStream redelivers it only after
    // ack_wait (30 s), and hands the next pull the two after it first.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&config.stream).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("eu-central").await.unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let lost = futures_util::StreamExt::next(&mut batch)
        .await
        .unwrap()
        .unwrap();
    assert!(lost.payload.windows(16).any(|w| w == ids[0].as_bytes()));
    drop(batch);
    let started = Instant::now();
    let (eu, after) = fake_pop("eu-central", &config).await;
    assert_eq!(
        after.purged(),
        ids,
        "the stream's order, the lost one first"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not after ack_wait"
    );
    assert_eq!(eu.status().unwrap().replayed, 3);
    us.shutdown().await;
    eu.shutdown().await;
}

#[tokio::test]
async fn a_pop_away_longer_than_the_stream_keeps_commands_marks_its_cache_stale() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let mut config = bus(&[nats.url().to_owned()], &["us-east", "eu-central"], 1);
    config.max_messages = 2;
    let (us, _) = fake_pop("us-east", &config).await;
    let (eu, _) = fake_pop("eu-central", &config).await;
    eu.shutdown().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let command = purge_url(&format!("https://cdn.test/{i}"));
        ids.push(
            us.submit(command, Some(Duration::from_millis(100)))
                .await
                .id,
        );
    }
    // The stream kept the last two: the first two are gone before eu-central saw them.
    let (eu, after) = fake_pop("eu-central", &config).await;
    let want = vec![
        Event::Suspect(true),
        Event::Purge(STALE_ALL.into()),
        Event::Purge(ids[2].clone()),
        Event::Purge(ids[3].clone()),
        Event::Suspect(false),
    ];
    assert_eq!(after.events(), want);
    us.shutdown().await;
    eu.shutdown().await;
}

/// A real edge on the bus as POP `name`, its cache in `cache_dir`.
async fn edge_on(
    name: &str,
    origin: &str,
    cache_dir: &std::path::Path,
    control: &ControlConfig,
) -> RunningEdge {
    let mut config: EdgeConfig = test_config(origin, cache_dir);
    config.name = name.into();
    config.control = control.clone();
    Edge::start(config).await.expect("edge starts")
}

async fn admin_text(edge: &RunningEdge, path: &str) -> String {
    let url = format!("http://{}{path}", edge.admin_addr().unwrap());
    Client::h1(None).get(&url).await.text()
}

#[tokio::test]
async fn real_edges_apply_a_purge_submitted_at_one_and_replay_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let origin = TestOrigin::start().await;
    origin.route(
        "/app.js",
        Reply::ok("v1").header("cache-control", "max-age=600"),
    );
    let pops = ["us-east", "eu-central", "ap-southeast"];
    let control = bus(&[nats.url().to_owned()], &pops, 1);
    let mut edges = Vec::new();
    for pop in pops {
        let cache = dir.path().join(pop);
        edges.push(edge_on(pop, &origin.url(), &cache, &control).await);
    }
    for edge in &edges {
        assert!(edge.control().status().unwrap().caught_up);
        assert_eq!(admin_text(edge, "/health").await, "ok\n");
        fetch(edge, "/app.js").await;
        assert!(fetch(edge, "/app.js").await.contains("hit"));
    }
    let s = edges[0]
        .control()
        .submit(
            purge_url("http://localhost/app.js"),
            Some(Duration::from_secs(5)),
        )
        .await;
    assert!(s.pending.is_empty() && s.error.is_none(), "{s:?}");
    let mut want: Vec<String> = pops.iter().map(|p| (*p).to_owned()).collect();
    want.sort();
    assert_eq!(acked_by(&s), want);
    for ack in &s.acks {
        assert!(
            matches!(ack.outcome, Outcome::Purged(p) if p.objects == 1),
            "{ack:?}"
        );
    }
    for edge in &edges {
        // Acknowledged means applied: the next request is a miss.
        assert!(fetch(edge, "/app.js").await.contains("miss"));
        let m = admin_text(edge, "/metrics").await;
        // Once, by either path (on loopback the fast one nearly always wins).
        let applied = |path: &str| {
            let series =
                format!(r#"quicdn_control_commands_applied_total{{kind="purge",path="{path}"}}"#);
            metric(&m, &series)
        };
        assert_eq!(applied("fast") + applied("stream"), 1.0, "{m}");
        assert_eq!(metric(&m, "quicdn_control_purged_objects_total"), 1.0);
        assert_eq!(metric(&m, "quicdn_control_bus_connected"), 1.0);
        assert_eq!(metric(&m, "quicdn_control_apply_lag_seconds_count"), 1.0);
    }
    assert_eq!(origin.hits("/app.js"), 6);
    // ap-southeast stops holding /app.js; three purges go out, one of it; it starts again on
    // the same cache and replays them before its start returns (catch_up_timeout).
    let stopped = edges.pop().unwrap();
    stopped.shutdown().await;
    for path in ["/app.js", "/0", "/1"] {
        let s = edges[1]
            .control()
            .submit(
                purge_url(&format!("http://localhost{path}")),
                Some(Duration::from_millis(300)),
            )
            .await;
        assert_eq!(s.pending, ["ap-southeast"], "{s:?}");
    }
    let again = edge_on(
        "ap-southeast",
        &origin.url(),
        &dir.path().join("ap-southeast"),
        &control,
    )
    .await;
    let status = again.control().status().unwrap();
    assert!(status.caught_up, "{status:?}");
    assert_eq!(status.replayed, 3);
    let m = admin_text(&again, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            r#"quicdn_control_commands_replayed_total{when="startup"}"#
        ),
        3.0,
        "{m}"
    );
    // Its first request for the object purged while it was down is a miss.
    assert!(fetch(&again, "/app.js").await.contains("miss"));
    assert_eq!(origin.hits("/app.js"), 7);
    edges.push(again);
    // Through the admin API at any POP, with a wait: every POP's acknowledgement in the
    // answer.
    let body = r#"{"url": "http://localhost/app.js", "wait": "5s"}"#;
    let (status, answer) = post(&edges[2], "/purge", body).await;
    assert_eq!(status, 200, "{answer}");
    let mut acked: Vec<&str> = answer["pops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pop"].as_str().unwrap())
        .collect();
    acked.sort();
    assert_eq!(acked, want, "{answer}");
    assert_eq!(answer["pending"], serde_json::json!([]));
    assert_eq!(answer["local"]["objects"], 1, "{answer}");
    for edge in edges {
        edge.shutdown().await;
    }
}

/// `POST <path>` with `body` on the admin listener (loopback: no token needed): the status
/// and the JSON answer.
async fn post(edge: &RunningEdge, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}{path}", edge.admin_addr().unwrap());
    let req = http::Request::post(url)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .unwrap();
    let r = Client::h1(None).send(req).await.expect("admin answers");
    let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status.as_u16(), json)
}

/// GETs `path` from `edge` over HTTP/1.1: its `Cache-Status`.
async fn fetch(edge: &RunningEdge, path: &str) -> String {
    let url = format!(
        "http://localhost:{}{path}",
        edge.http_addr().unwrap().port()
    );
    let r = Client::h1(None).get(&url).await;
    assert_eq!(r.status, 200, "{url}");
    r.header("cache-status").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_edge_starts_without_its_bus_serves_and_catches_up_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start().await;
    origin.route("/a", Reply::ok("a").header("cache-control", "max-age=600"));
    let port = free_port();
    let mut control = bus(&[format!("nats://127.0.0.1:{port}")], &["us-east"], 1);
    control.catch_up_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let edge = edge_on(
        "us-east",
        &origin.url(),
        &dir.path().join("cache"),
        &control,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the start waits catch_up_timeout, not for the bus"
    );
    let health = admin_text(&edge, "/health").await;
    assert!(
        health.contains("degraded: control bus (NATS) unreachable"),
        "{health}"
    );
    // Not caught up: the cache is suspect, and the edge says so.
    assert!(
        health.contains("degraded: catching up with the control bus"),
        "{health}"
    );
    let url = format!("http://localhost:{}/a", edge.http_addr().unwrap().port());
    assert_eq!(Client::h1(None).get(&url).await.text(), "a");
    // Suspect: what it stored is not served before the origin is asked again.
    let status = fetch(&edge, "/a").await;
    assert!(status.contains("fwd=stale"), "{status}");
    assert_eq!(origin.hits("/a"), 2);
    // A purge without the bus applies here and says why it went no further.
    let s = edge
        .control()
        .submit(
            purge_url("https://localhost/a"),
            Some(Duration::from_secs(1)),
        )
        .await;
    assert_eq!(s.seq, 0);
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("not connected")),
        "{s:?}"
    );
    assert_eq!(acked_by(&s), ["us-east"]);
    // The bus comes up where the edge looks for it: it connects and catches up.
    let _nats = NatsServer::start_on(dir.path(), port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !edge.control().status().unwrap().caught_up && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        edge.control().status().unwrap().caught_up,
        "caught up within 15 s of the bus starting"
    );
    assert_eq!(admin_text(&edge, "/health").await, "ok\n");
    // Caught up, the cache is trusted again (the purge above took /a: stored anew first).
    assert!(fetch(&edge, "/a").await.contains("fwd=uri-miss"));
    let status = fetch(&edge, "/a").await;
    assert!(
        status.contains("hit") && !status.contains("fwd="),
        "{status}"
    );
    let m = admin_text(&edge, "/metrics").await;
    assert_eq!(metric(&m, "quicdn_control_bus_connected"), 1.0);
    edge.shutdown().await;
}

#[tokio::test]
async fn with_a_cluster_node_down_commands_still_reach_every_pop() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path());
    let urls = cluster.urls();
    let pops = ["us-east", "eu-central", "ap-southeast"];
    let mut fleet = Vec::new();
    for (i, pop) in pops.iter().enumerate() {
        // Each POP lists all three servers, its own region's first.
        let mut servers = urls.clone();
        servers.rotate_left(i);
        fleet.push(fake_pop(pop, &bus(&servers, &pops, 3)).await);
    }
    let s = fleet[1]
        .0
        .submit(
            purge_url("https://cdn.test/before"),
            Some(Duration::from_secs(10)),
        )
        .await;
    assert!(s.pending.is_empty() && s.error.is_none(), "{s:?}");
    // us-east's own server goes down: it fails over to another, and the stream (3
    // replicas) keeps a quorum.
    let before_kill = fleet[0].1.events().len();
    cluster.nodes[0].kill();
    let mut published = vec![s.id];
    for i in 0..5 {
        let command = purge_url(&format!("https://cdn.test/after/{i}"));
        // While the stream elects a new leader a publish can fail; the same command again
        // is the same message id, which JetStream keeps once. Once it is stored, a second
        // publish delivers nothing new (no new acks): the applies below are the proof.
        let deadline = Instant::now() + Duration::from_secs(40);
        let s = loop {
            let s = fleet[2]
                .0
                .submit(command.clone(), Some(Duration::from_secs(10)))
                .await;
            if s.error.is_none() || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(s.error.is_none(), "{s:?}");
        published.push(s.id);
    }
    for (control, recorder) in &fleet {
        // A POP whose consumer's leader was on the killed node resumes once its pull's
        // heartbeats are missed and the consumer has a new leader: seconds, on a loaded
        // machine more.
        let purged = recorder
            .await_purged(published.len(), Duration::from_secs(40))
            .await;
        for id in &published {
            assert!(
                purged.contains(id),
                "{} applied {id}: {purged:?}",
                control.pop()
            );
        }
        assert!(
            control.status().unwrap().connected,
            "{} reconnected",
            control.pop()
        );
    }
    // us-east caught up again after its reconnect, its cache suspect meanwhile. (The
    // purges above may all have come by the fast path: its consumer can take longer.)
    assert!(
        fleet[0].0.caught_up(Duration::from_secs(40)).await,
        "us-east's consumer caught up again"
    );
    let since: Vec<Event> = fleet[0].1.events().split_off(before_kill);
    let suspect = since.iter().position(|e| *e == Event::Suspect(true));
    let trusted = since.iter().rposition(|e| *e == Event::Suspect(false));
    assert!(
        matches!((suspect, trusted), (Some(s), Some(t)) if s < t),
        "{since:?}"
    );
    for (control, _) in &fleet {
        control.shutdown().await;
    }
}

/// A pre-warm of 200 URLs sent to one POP's API reaches every POP: each fetches them all,
/// once, and then serves each as a hit; the origin sees each URL once per POP.
#[tokio::test]
async fn a_prewarm_at_one_pop_fills_every_pop_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let origin = TestOrigin::start().await;
    let urls: Vec<String> = (0..200).map(|i| format!("/w/{i}")).collect();
    for path in &urls {
        origin.route(
            path,
            Reply::ok(path.clone()).header("cache-control", "max-age=600"),
        );
    }
    let pops = ["us-east", "eu-central", "ap-southeast"];
    let control = bus(&[nats.url().to_owned()], &pops, 1);
    let mut edges = Vec::new();
    for pop in pops {
        edges.push(edge_on(pop, &origin.url(), &dir.path().join(pop), &control).await);
    }
    let full: Vec<String> = urls
        .iter()
        .map(|p| format!("http://localhost{p}"))
        .collect();
    let body = serde_json::json!({ "urls": full, "wait": "60s" }).to_string();
    let (status, answer) = post(&edges[0], "/prewarm", &body).await;
    assert_eq!(status, 200, "{answer}");
    let acks = answer["pops"].as_array().unwrap();
    assert_eq!(acks.len(), 3, "{answer}");
    for ack in acks {
        assert_eq!(ack["prewarmed"]["fetched"], 200, "{ack}");
        assert_eq!(ack["prewarmed"]["failed"], 0, "{ack}");
    }
    for edge in &edges {
        for path in &urls {
            let status = fetch(edge, path).await;
            assert!(status.contains("; hit"), "{path}: {status}");
        }
    }
    for path in &urls {
        assert_eq!(origin.hits(path), 3, "{path}: once per POP");
    }
}
