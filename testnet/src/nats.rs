//! The control bus as the testnet sees it: one `nats-server` per region, clustered over the
//! emulated links, read through each server's HTTP monitoring port.
//!
//! `up` waits for [`cluster_ready`] before it starts the edges (their bus creates the stream
//! and its consumers, which needs a JetStream meta leader), then for [`bus_ready`] (the stream
//! and every POP's consumer exist); `status` prints [`Node::line`] per region.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::http::get_in;
use crate::plan::{NATS_MONITOR_PORT, Plan};
use crate::procs::Proc;

/// What one server reports. Server names are region names (files.rs), so a leader named in
/// a report is a region.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub region: String,
    /// `/healthz` answered 200: JetStream is on and has a meta leader.
    pub healthy: bool,
    /// Routes up to other servers (`/routez`).
    pub routes: usize,
    /// The JetStream meta leader's server name, as this server sees it.
    pub meta_leader: Option<String>,
    pub streams: Vec<Stream>,
    /// Why the server could not be read (stopped, unreachable).
    pub error: Option<String>,
}

/// A stream as this server holds it (`/jsz?streams=true&consumers=true`).
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub name: String,
    pub messages: u64,
    pub last_seq: u64,
    /// The server that leads the stream's raft group.
    pub leader: Option<String>,
    pub consumers: Vec<Consumer>,
}

#[derive(Debug, Clone, Default)]
pub struct Consumer {
    pub name: String,
    /// Stream sequence acknowledged by the consumer (everything up to it is applied).
    pub ack_floor: u64,
    /// Messages not yet delivered to it.
    pub pending: u64,
    /// The server that leads the consumer's raft group: its report is the current one.
    pub leader: Option<String>,
}

impl Node {
    /// One status line, e.g. `nats us-east: healthy, routes 2/2, meta leader eu-central`.
    pub fn line(&self, peers: usize) -> String {
        if let Some(e) = &self.error {
            return format!("nats {}: DOWN ({e})", self.region);
        }
        format!(
            "nats {}: {}, routes {}/{peers}, meta leader {}",
            self.region,
            if self.healthy { "healthy" } else { "NOT READY" },
            self.routes,
            self.meta_leader.as_deref().unwrap_or("none")
        )
    }
}

impl Stream {
    /// e.g. `stream QUICDN_CONTROL: seq 51, 51 msgs, leader us-east; consumers pop-us-east
    /// acked 51 pending 0 (led by eu-central), ...`. Where each raft group's leader sits
    /// decides how many long links a purge crosses.
    pub fn line(&self) -> String {
        let consumers: Vec<String> = self
            .consumers
            .iter()
            .map(|c| {
                let leader = c.leader.as_deref().unwrap_or("none");
                format!(
                    "{} acked {} pending {} (led by {leader})",
                    c.name, c.ack_floor, c.pending
                )
            })
            .collect();
        format!(
            "stream {}: seq {}, {} msgs, leader {}; consumers {}",
            self.name,
            self.last_seq,
            self.messages,
            self.leader.as_deref().unwrap_or("none"),
            if consumers.is_empty() {
                "none".into()
            } else {
                consumers.join(", ")
            }
        )
    }
}

/// The bus in a few lines: a server per region, then each stream once. Every replica reports
/// the stream, but a follower's view of a consumer lags, so each consumer is taken from the
/// server that leads it (the stream from its own leader, else the first report).
pub fn summary(plan: &Plan) -> Vec<String> {
    let peers = plan.regions.len() - 1;
    let nodes: Vec<Node> = (0..plan.regions.len()).map(|k| node(plan, k)).collect();
    let mut lines: Vec<String> = nodes.iter().map(|n| n.line(peers)).collect();
    lines.extend(merged_streams(&nodes).iter().map(Stream::line));
    lines
}

fn merged_streams(nodes: &[Node]) -> Vec<Stream> {
    let mut names: Vec<&str> = nodes
        .iter()
        .flat_map(|n| n.streams.iter().map(|s| s.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let reports: Vec<(&Node, &Stream)> = nodes
                .iter()
                .flat_map(|n| n.streams.iter().map(move |s| (n, s)))
                .filter(|(_, s)| s.name == name)
                .collect();
            let own = reports
                .iter()
                .find(|(n, s)| s.leader.as_deref() == Some(n.region.as_str()));
            let mut stream = own.or_else(|| reports.first())?.1.clone();
            for c in &mut stream.consumers {
                let led = reports
                    .iter()
                    .flat_map(|(n, s)| s.consumers.iter().map(move |x| (n, x)))
                    .find(|(n, x)| x.name == c.name && x.leader.as_deref() == Some(&n.region));
                if let Some((_, x)) = led {
                    *c = x.clone();
                }
            }
            Some(stream)
        })
        .collect()
}

fn monitor(plan: &Plan, region: usize) -> SocketAddr {
    SocketAddr::from((plan.regions[region].nats.addr, NATS_MONITOR_PORT))
}

/// Reads one server's health, routes and streams; a server that cannot be read is a `Node`
/// with `error` set, not an `Err`.
pub fn node(plan: &Plan, region: usize) -> Node {
    let r = &plan.regions[region];
    let mut node = Node {
        region: r.name.clone(),
        ..Node::default()
    };
    let addr = monitor(plan, region);
    let get = |path: &str| get_in(&r.nats.ns, addr, path, Duration::from_secs(2));
    match get("/healthz") {
        Ok(reply) => node.healthy = reply.status == 200,
        Err(e) => {
            node.error = Some(format!("{e:#}"));
            return node;
        }
    }
    let json = |path: &str| get(path).ok().and_then(|r| r.json().ok());
    if let Some(v) = json("/routez") {
        node.routes = v["num_routes"].as_u64().unwrap_or(0) as usize;
    }
    if let Some(v) = json("/jsz?streams=true&consumers=true") {
        node.meta_leader = v["meta_cluster"]["leader"].as_str().map(str::to_owned);
        node.streams = streams(&v);
    }
    node
}

fn streams(jsz: &Value) -> Vec<Stream> {
    let accounts = jsz["account_details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    accounts
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .map(|s| Stream {
            name: s["name"].as_str().unwrap_or("?").to_owned(),
            messages: u(&s["state"]["messages"]),
            last_seq: u(&s["state"]["last_seq"]),
            leader: s["cluster"]["leader"].as_str().map(str::to_owned),
            consumers: s["consumer_detail"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| Consumer {
                            name: c["name"].as_str().unwrap_or("?").to_owned(),
                            ack_floor: u(&c["ack_floor"]["stream_seq"]),
                            pending: u(&c["num_pending"]),
                            leader: c["cluster"]["leader"].as_str().map(str::to_owned),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// Every server is healthy (JetStream with a meta leader) and routed to every other one.
pub fn cluster_formed(plan: &Plan) -> (bool, Vec<Node>) {
    let peers = plan.regions.len() - 1;
    let nodes: Vec<Node> = (0..plan.regions.len()).map(|k| node(plan, k)).collect();
    let ok = nodes
        .iter()
        .all(|n| n.error.is_none() && n.healthy && n.routes >= peers);
    (ok, nodes)
}

/// Waits until the cluster has formed; fails naming the servers that are not ready, or a
/// server that exited.
pub fn cluster_ready(plan: &Plan, procs: &[Proc], limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let peers = plan.regions.len() - 1;
    loop {
        let (ok, nodes) = cluster_formed(plan);
        if ok {
            return Ok(start.elapsed());
        }
        if let Some(p) = procs.iter().find(|p| !p.is_alive()) {
            bail!(
                "{} exited while the cluster formed; its log ends:\n{}",
                p.role,
                p.log_tail(15)
            );
        }
        if start.elapsed() > limit {
            let lines: Vec<String> = nodes.iter().map(|n| n.line(peers)).collect();
            bail!(
                "the NATS cluster did not form within {limit:?}:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stream the edges' `[control]` names (files.rs writes it).
pub const STREAM: &str = "QUICDN_CONTROL";

/// Waits until every server is healthy and holds the stream with a durable consumer for each
/// of `pops`: then every edge has joined the bus, and `run` starts from a settled fleet.
pub fn bus_ready(
    plan: &Plan,
    pops: &[String],
    procs: &[Proc],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let peers = plan.regions.len() - 1;
    loop {
        let nodes: Vec<Node> = (0..plan.regions.len()).map(|k| node(plan, k)).collect();
        let ready = nodes.iter().all(|n| {
            n.error.is_none()
                && n.healthy
                && n.streams.iter().any(|s| {
                    s.name == STREAM
                        && s.leader.is_some()
                        && pops
                            .iter()
                            .all(|p| s.consumers.iter().any(|c| &c.name == p))
                })
        });
        if ready {
            return Ok(start.elapsed());
        }
        if let Some(p) = procs.iter().find(|p| !p.is_alive()) {
            bail!(
                "{} exited while joining the bus; its log ends:\n{}",
                p.role,
                p.log_tail(15)
            );
        }
        if start.elapsed() > limit {
            let mut lines: Vec<String> = nodes.iter().map(|n| n.line(peers)).collect();
            lines.extend(
                nodes
                    .iter()
                    .flat_map(|n| n.streams.iter().map(Stream::line)),
            );
            bail!(
                "the edges did not all join the bus (stream {STREAM}, a consumer per POP) within {limit:?}:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str, acked: u64, leader: &str) -> Consumer {
        Consumer {
            name: name.into(),
            ack_floor: acked,
            pending: 9 - acked,
            leader: Some(leader.into()),
        }
    }

    fn node(region: &str, consumers: Vec<Consumer>) -> Node {
        Node {
            region: region.into(),
            healthy: true,
            routes: 1,
            meta_leader: Some("a".into()),
            streams: vec![Stream {
                name: STREAM.into(),
                messages: 9,
                last_seq: 9,
                leader: Some("a".into()),
                consumers,
            }],
            error: None,
        }
    }

    #[test]
    fn each_consumer_comes_from_its_leader() {
        // Server a leads the stream and consumer pa; server b leads pb. Each one's view of
        // the other's consumer lags.
        let a = node("a", vec![consumer("pa", 9, "a"), consumer("pb", 2, "b")]);
        let b = node("b", vec![consumer("pa", 5, "a"), consumer("pb", 9, "b")]);
        let merged = merged_streams(&[b, a]);
        assert_eq!(merged.len(), 1);
        let acked: Vec<(String, u64)> = merged[0]
            .consumers
            .iter()
            .map(|c| (c.name.clone(), c.ack_floor))
            .collect();
        assert_eq!(acked, [("pa".into(), 9), ("pb".into(), 9)]);
        assert_eq!(
            merged[0].line(),
            "stream QUICDN_CONTROL: seq 9, 9 msgs, leader a; consumers pa acked 9 pending 0 (led by a), pb acked 9 pending 0 (led by b)"
        );
    }
}
