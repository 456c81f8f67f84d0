//! The control bus as the testnet sees it: one `nats-server` per region, clustered over the
//! emulated links, read through each server's HTTP monitoring port.
//!
//! `up` waits for [`cluster_ready`] before it starts the edges (their bus creates the stream
//! and its consumers, which needs a JetStream meta leader), and `status` prints
//! [`Node::line`] per region.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::http::get_in;
use crate::plan::{NATS_MONITOR_PORT, Plan};
use crate::procs::Proc;

/// What one server reports.
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
}

impl Node {
    /// One status line, e.g.
    /// `nats us-east: healthy, routes 2/2, meta leader eu-central; QUICDN_CONTROL seq 51 (leader us-east), consumers pop-us-east@51 ...`.
    pub fn line(&self, peers: usize) -> String {
        if let Some(e) = &self.error {
            return format!("nats {}: DOWN ({e})", self.region);
        }
        let mut s = format!(
            "nats {}: {}, routes {}/{peers}, meta leader {}",
            self.region,
            if self.healthy { "healthy" } else { "NOT READY" },
            self.routes,
            self.meta_leader.as_deref().unwrap_or("none")
        );
        for st in &self.streams {
            s += &format!(
                "; {} seq {} ({} msgs, leader {})",
                st.name,
                st.last_seq,
                st.messages,
                st.leader.as_deref().unwrap_or("none")
            );
            let consumers: Vec<String> = st
                .consumers
                .iter()
                .map(|c| format!("{} acked {} pending {}", c.name, c.ack_floor, c.pending))
                .collect();
            if !consumers.is_empty() {
                s += &format!(", consumers: {}", consumers.join(", "));
            }
        }
        s
    }
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
