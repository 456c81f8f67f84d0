//! What travels on the control plane: commands (purge, pre-warm) and the acknowledgements each
//! POP sends back. The same types serve the admin API, the bus (JSON on NATS JetStream) and a
//! single edge with no bus.

use serde::{Deserialize, Serialize};

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One URL (`https://host/path?query`, `http://…` or `host/path?query`): every variant
    /// and every slice of it, keyed as the site's cache-key rules key it.
    Url(String),
    /// A host and a path prefix (`host/static/`, or a URL of it): every object under it.
    Prefix(String),
    /// Every object whose `Surrogate-Key` or `Cache-Tag` response header named this key.
    Tag(String),
    /// Every object of one host (a whole site name).
    Host(String),
    /// Everything in the cache.
    All,
}

/// Hard: the objects are gone. Soft: they are marked stale, so the next request revalidates
/// (and `stale-while-revalidate` / `stale-if-error` still apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hard,
    Soft,
}

/// One purge as issued: by the admin API, the HTTP `PURGE` method or the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Unique per purge: acknowledgements name it.
    pub id: String,
    pub selector: Selector,
    #[serde(default)]
    pub mode: Mode,
    /// When it was issued (ms since the Unix epoch): a response older than this (by its
    /// `Date` and `Age`) is not stored afterwards, and the lag to each POP is measured from it.
    pub issued_ms: u64,
}

/// What one POP's purge removed (or, soft, marked stale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Whole responses and sliced objects (each variant counts once).
    pub objects: u64,
    /// Slices of sliced objects.
    pub slices: u64,
    /// Body bytes of what was purged.
    pub bytes: u64,
    /// Fills under way that were fenced off (not stored, not joined by later requests).
    pub fenced: u64,
}

/// Fetch these URLs into the cache of these POPs (empty: every POP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prewarm {
    pub id: String,
    pub urls: Vec<String>,
    #[serde(default)]
    pub pops: Vec<String>,
    pub issued_ms: u64,
}

impl Prewarm {
    /// Whether the POP named `pop` is to warm.
    pub fn includes(&self, pop: &str) -> bool {
        self.pops.is_empty() || self.pops.iter().any(|p| p == pop)
    }
}

/// How one pre-warmed URL went at one POP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warmed {
    pub url: String,
    /// The status the edge answered the fetch with, if it answered.
    pub status: Option<u16>,
    /// The cache's outcome (`hit`, `miss`, `stale`, …), as `Cache-Status` reports it.
    pub outcome: Option<String>,
    pub bytes: u64,
    /// Why it failed (`None`: it is in the cache now).
    pub error: Option<String>,
}

/// One POP's pre-warm result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prewarmed {
    pub fetched: u64,
    pub failed: u64,
    pub urls: Vec<Warmed>,
}

/// A command on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Purge(Purge),
    Prewarm(Prewarm),
}

impl Command {
    pub fn id(&self) -> &str {
        match self {
            Self::Purge(p) => &p.id,
            Self::Prewarm(p) => &p.id,
        }
    }

    pub fn issued_ms(&self) -> u64 {
        match self {
            Self::Purge(p) => p.issued_ms,
            Self::Prewarm(p) => p.issued_ms,
        }
    }
}

/// What a POP did with a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Purged(Purged),
    Prewarmed(Prewarmed),
    /// A pre-warm for other POPs.
    Skipped,
}

/// A POP's acknowledgement of one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The command's id.
    pub id: String,
    pub pop: String,
    /// The command's sequence number on the stream (a single edge counts its own). 0: not
    /// known where it was applied: a purge applied from the fast path, before the stream
    /// delivered it (the `submit`'s answer has the sequence from the publish), or a command
    /// that could not be published.
    pub seq: u64,
    /// When the POP had applied it (ms since the Unix epoch).
    pub applied_ms: u64,
    pub outcome: Outcome,
}

/// A fresh command id: random, so that POPs and API calls never collide.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Now, in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    crate::cache::meta::millis(std::time::SystemTime::now())
}
