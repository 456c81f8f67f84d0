//! A cluster: the edge nodes of one POP sharing one cache. Each object belongs to one node,
//! chosen by weighted rendezvous hashing of its cache key over the healthy nodes; a node that
//! gets a request for another node's object sends it on to that node and stores nothing
//! itself (Fastly's delivery and fetch nodes). The POP then holds one copy of each object
//! and makes one upstream request for it, whichever node its clients reach. When a node
//! leaves, only its objects move (each to the next node in its hash order).
//!
//! Every node lists the same peers (itself included, under its `name`), so all agree on
//! each object's owner. A request that came from a peer (a peer's name in its `CDN-Loop`) is
//! always served locally: if two nodes briefly disagree on an owner (one has ejected a node
//! the other has not yet), a request moves once, never back and forth. A client that forges
//! that `CDN-Loop` member only makes the node it reached keep its own copy of what it asked
//! for, which is what a node without a cluster does.
//!
//! When the owner fails (refused, timed out, or a `retry_on` answer), the node counts the
//! failure towards the owner's ejection and serves the request itself, from its cache or its
//! upstream: stopping a node never fails a request.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use serde::{Deserialize, Serialize};

use super::group::{GroupOrigin, GroupUpstream, Member, OriginHealth};
use super::{OriginUpstream, Tier};
use crate::body::Body;
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginUrl};

/// `[cluster]`: the nodes of this POP.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every node of the cluster, this one included (the one whose `name` is this edge's).
    /// Empty: no cluster.
    pub peers: Vec<ClusterPeer>,
    /// When a peer counts as failed, how long it is ejected, and its probes (by default its
    /// health endpoint every second). Keys left out keep these defaults, not
    /// `origin_health`'s (which does not probe).
    #[serde(deserialize_with = "over_cluster_defaults")]
    pub health: OriginHealth,
}

/// `[cluster.health]` as given, over the cluster's defaults rather than `OriginHealth`'s: a
/// table that sets only `eject_after` must not turn the probes off.
fn over_cluster_defaults<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OriginHealth, D::Error> {
    use serde::de::Error as _;
    let given = toml::Table::deserialize(d)?;
    let mut merged =
        toml::Table::try_from(ClusterConfig::default().health).map_err(D::Error::custom)?;
    merged.extend(given);
    toml::Value::Table(merged)
        .try_into()
        .map_err(D::Error::custom)
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            health: OriginHealth {
                probe_path: Some("/.quicdn/health".into()),
                probe_interval: std::time::Duration::from_secs(1),
                probe_timeout: std::time::Duration::from_secs(1),
                ..OriginHealth::default()
            },
        }
    }
}

/// One node of the cluster.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterPeer {
    /// The node's top-level `name` (what its `Via`, `CDN-Loop` and `Cache-Status` say).
    pub name: String,
    /// Where the other nodes reach it: `https://` (HTTP/2 over TLS) or `http://`.
    pub url: String,
    /// Its share of the objects (a node with twice the disk takes 2).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl ClusterConfig {
    /// What the types cannot check; `Err` says what, naming the key.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if self.peers.is_empty() {
            return Ok(());
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if let Err(e) = OriginUrl::parse(&peer.url) {
                return Err(format!("cluster.peers[{i}].url: {e}"));
            }
            if peer.weight == 0 {
                return Err(format!("cluster.peers[{i}].weight must be at least 1"));
            }
            if self.peers[..i].iter().any(|p| p.name == peer.name) {
                return Err(format!("cluster.peers: {:?} is listed twice", peer.name));
            }
            if self.peers[..i].iter().any(|p| p.url == peer.url) {
                return Err(format!("cluster.peers: {:?} is listed twice", peer.url));
            }
        }
        if !self.peers.iter().any(|p| p.name == name) {
            return Err(format!(
                "cluster.peers must list this node (name = {name:?}): every node hashes over the same list"
            ));
        }
        self.health
            .check()
            .map_err(|e| format!("cluster.health: {e}"))
    }
}

/// Where a request for an object goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node owns it (or every other candidate is down): the cache answers.
    Local,
    /// The peer at this index owns it.
    Peer(usize),
}

/// A running cluster (rebuilt on reload, with its probes).
pub struct Cluster {
    nodes: GroupUpstream,
    /// This node's index in `nodes`.
    me: usize,
    names: Vec<String>,
    /// Answers that count as the peer failing (`cluster.health.retry_on`).
    retry_on: Arc<[http::StatusCode]>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// `None` without peers. Needs a runtime (the probes start here).
    pub fn new(
        config: &crate::config::EdgeConfig,
        client: &OriginClient,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, crate::origin::OriginUrlError> {
        let cluster = &config.cluster;
        let Some(me) = cluster.peers.iter().position(|p| p.name == config.name) else {
            return Ok(None);
        };
        let members = cluster
            .peers
            .iter()
            .map(|p| {
                let upstream = OriginUpstream::new(
                    OriginUrl::parse(&p.url)?,
                    // A peer serves the same sites: it gets the client's host.
                    true,
                    None,
                    client,
                    metrics,
                    Tier::Peer,
                );
                let as_member = GroupOrigin {
                    url: p.url.clone(),
                    priority: 0,
                    weight: p.weight,
                    host: None,
                    first_byte_timeout: None,
                    connect_timeout: None,
                };
                Ok(Member::new(upstream, &as_member))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = GroupUpstream::new(
            members,
            cluster.health.clone(),
            super::group::Balance::Hash,
            metrics.ejections(Tier::Peer.as_str()),
        );
        Ok(Some(Arc::new(Self {
            nodes,
            me,
            names: cluster.peers.iter().map(|p| p.name.clone()).collect(),
            retry_on: cluster
                .health
                .retry_on
                .iter()
                .filter_map(|c| http::StatusCode::from_u16(*c).ok())
                .collect(),
            metrics: metrics.clone(),
        })))
    }

    /// The owner of the object with primary key `key`, as this node sees the cluster now.
    pub fn route(&self, key: &str) -> Route {
        match self.nodes.owner(key) {
            (i, true) if i != self.me => Route::Peer(i),
            // Itself, or every node is ejected: serve it here rather than not at all.
            _ => Route::Local,
        }
    }

    /// Whether a request came through another node of this cluster (its `CDN-Loop`).
    pub fn from_peer(&self, headers: &HeaderMap) -> bool {
        self.names
            .iter()
            .enumerate()
            .any(|(i, n)| i != self.me && crate::headers::cdn_loop_contains(headers, n))
    }

    /// The name of the node at `index`.
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// Sends `req` to the peer at `index`. `Err` when the peer failed (the request is then
    /// the caller's to serve itself): an error, or an answer its health rules call a failure.
    pub fn forward(
        &self,
        index: usize,
        req: Request<Body>,
    ) -> BoxFuture<'static, Result<Response<Body>, ForwardFailed>> {
        self.metrics.peer_requests.inc();
        let sent = self.nodes.fetch_from(index, req);
        let failure = self
            .nodes
            .member(index)
            .map(|m| m.upstream.origin.to_string())
            .unwrap_or_default();
        let fails_on = self.retry_on.clone();
        let fallbacks = self.metrics.peer_fallbacks.clone();
        Box::pin(async move {
            let why = match sent.await {
                Ok(r) if !fails_on.contains(&r.status()) => return Ok(r),
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            fallbacks.inc();
            tracing::warn!(peer = %failure, reason = %why, "cluster peer failed; serving the request here");
            Err(ForwardFailed)
        })
    }
}

/// The owning peer did not answer usably: serve the request locally.
#[derive(Debug)]
pub struct ForwardFailed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_health_table_keeps_the_cluster_defaults() {
        let config: ClusterConfig = toml::from_str(
            "peers = [{ name = \"a\", url = \"http://10.0.0.1\" }]\n[health]\neject_after = 5\n",
        )
        .unwrap();
        assert_eq!(config.health.eject_after, 5);
        assert_eq!(config.health.probe_path.as_deref(), Some("/.quicdn/health"));
        assert_eq!(
            config.health.probe_interval,
            std::time::Duration::from_secs(1)
        );
        let off: ClusterConfig = toml::from_str("[health]\nprobe_path = \"none\"\n").unwrap();
        assert_eq!(off.health.probe_path, None);
        let typo = toml::from_str::<ClusterConfig>("[health]\neject_aftr = 5\n");
        assert!(typo.is_err());
    }
}
