//! The edge's configuration: one type, one `Default`, every knob with its reason.
//!
//! Loaded from TOML (`edge --config edge.toml`); `edge --print-config` prints the effective
//! config. Unknown keys are errors everywhere, so a typo never silently falls back to a default.

mod admin;
mod control;
pub(crate) mod unset;

pub use self::control::ControlConfig;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use shared::config::ConfigError;
use shared::telemetry::LogFormat;

pub(crate) use self::admin::check_secret;
pub use self::admin::{AdminConfig, PrewarmConfig, PurgeConfig, Secret, TokenConfig, Verb};

/// Everything the edge needs to run.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Name of this POP: appears in `Via`, `Cache-Status` and metrics.
    pub name: String,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub quic: QuicConfig,
    pub cache: CacheConfig,
    pub origin: OriginConfig,
    pub log: LogConfig,
    pub reload: ReloadConfig,
    /// The admin API's bearer tokens.
    pub admin: AdminConfig,
    /// The HTTP `PURGE` method on the public listeners.
    pub purge: PurgeConfig,
    /// How pre-warm fetches.
    pub prewarm: PrewarmConfig,
    /// The control plane's bus (NATS JetStream); without servers, purges stay on this edge.
    pub control: ControlConfig,
    /// The other edge nodes of this POP, sharing one cache by consistent hashing.
    pub cluster: crate::upstream::cluster::ClusterConfig,
    /// Sites: which Host names are served, and from which origin.
    #[serde(rename = "site")]
    pub sites: Vec<SiteConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            name: "quicdn".into(),
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            quic: QuicConfig::default(),
            cache: CacheConfig::default(),
            origin: OriginConfig::default(),
            log: LogConfig::default(),
            reload: ReloadConfig::default(),
            admin: AdminConfig::default(),
            purge: PurgeConfig::default(),
            prewarm: PrewarmConfig::default(),
            control: ControlConfig::default(),
            cluster: Default::default(),
            sites: Vec::new(),
        }
    }
}

/// Listener addresses. Any of them may be `"none"` to disable it (left out, it keeps its
/// default), except that at least one of `https` and `http` must be set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// TLS listener: HTTP/2 and HTTP/1.1 by ALPN.
    #[serde(with = "unset::none")]
    pub https: Option<SocketAddr>,
    /// Plain-text HTTP/1.1 (and prior-knowledge HTTP/2) listener.
    #[serde(with = "unset::none")]
    pub http: Option<SocketAddr>,
    /// Admin listener: `/metrics`, `/health`, `/config`, `POST /reload`. Loopback by default:
    /// metrics are not public, and a reload is for the operator.
    #[serde(with = "unset::none")]
    pub admin: Option<SocketAddr>,
    /// Path answered by the edge itself on the public listeners, whatever the Host, so health
    /// checkers (geodns) can probe the POP the way clients reach it.
    pub health_path: String,
    /// Longest a graceful shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most concurrent connections per listener; further connections wait in the kernel
    /// backlog.
    pub max_connections: usize,
    /// A client that sends no complete request head within this time is disconnected
    /// (slowloris protection).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection that sends no request within this time of being accepted (or of its TLS
    /// handshake, which `header_read_timeout` bounds) is closed: silent connections, or ones
    /// that send a few bytes (a partial HTTP/2 preface), would otherwise hold a
    /// `max_connections` slot for ever.
    #[serde(with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// A keep-alive connection (HTTP/1.1 or HTTP/2) with no request in flight that sends
    /// nothing for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection whose writes stay blocked this long (the client reads nothing: a zero
    /// flow-control window or a full TCP window) is closed, freeing what its responses hold.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Most connections open at once from one client address, over all listeners (TCP and
    /// QUIC); more are closed at once. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Concurrent requests (streams) one HTTP/2 connection may have open.
    pub h2_max_concurrent_streams: u32,
    /// Body bytes (chunks read from the store) the responses of one connection may hold
    /// while its client reads; further responses wait. Bounds what a client that does not
    /// read (a zero HTTP/2 window on every stream) can pin. Chunks up to 16 KiB are not
    /// counted.
    pub body_memory_per_connection: ByteSize,
    /// The same for all connections together.
    pub body_memory_total: ByteSize,
    /// TCP_NOTSENT_LOWAT: unsent bytes the kernel queues per connection before the edge writes
    /// more. Keeps the edge from writing (and fetching slices) far ahead of a client that is
    /// about to hang up, as players do on every seek; it does not limit bytes in flight.
    /// 0 leaves the kernel default.
    pub notsent_lowat: ByteSize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            // Unprivileged ports so the quick start needs no root; production uses 443/80.
            https: Some(([0, 0, 0, 0], 8443).into()),
            http: Some(([0, 0, 0, 0], 8080).into()),
            admin: Some(([127, 0, 0, 1], 9090).into()),
            health_path: "/.quicdn/health".into(),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            // nginx's client_header_timeout is 60 s; a browser sends its request at once
            // after connecting, so 10 s only cuts what is not a browser.
            first_request_timeout: Duration::from_secs(10),
            // nginx: keepalive_timeout 75 s; browsers close idle connections after ~5 min.
            idle_timeout: Duration::from_secs(75),
            // nginx's send_timeout.
            send_timeout: Duration::from_secs(60),
            // Enough for a large NAT (an office, a carrier-grade NAT's share of one address)
            // while one host cannot take more than a small part of max_connections.
            max_connections_per_ip: 256,
            // As for HTTP/3 (quic.max_concurrent_streams): browsers open up to ~100.
            h2_max_concurrent_streams: 100,
            // Four 1 MiB slices: a stream sends one while reading the next, and a
            // connection streams two large objects at full speed.
            body_memory_per_connection: ByteSize::mib(4),
            body_memory_total: ByteSize::mib(512),
            notsent_lowat: ByteSize::kib(128),
        }
    }
}

/// Certificates for the TLS listener. Without both paths a development certificate is made
/// (or reused) in `dev_cert_dir` and its SPKI hash is logged.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Where the development certificate lives; defaults to `<cache.dir>/tls`.
    pub dev_cert_dir: Option<PathBuf>,
    /// Extra names for the development certificate besides localhost, 127.0.0.1 and ::1.
    pub dev_cert_names: Vec<String>,
}

/// HTTP/3 over QUIC, served on UDP at the HTTPS listener's port with its certificate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Serve HTTP/3 (needs `listen.https`).
    pub enabled: bool,
    /// Send `Alt-Svc: h3=":PORT"; ma=...` on TCP responses so browsers upgrade.
    pub advertise: bool,
    /// The `ma` (max age) of the Alt-Svc advertisement.
    #[serde(with = "humantime_serde")]
    pub alt_svc_max_age: Duration,
    /// Port advertised in Alt-Svc when it differs from the bound one (behind NAT or a load
    /// balancer); 0 means the bound port.
    pub advertised_port: u16,
    /// Concurrent requests (bidirectional streams) one connection may have open.
    pub max_concurrent_streams: u32,
    /// Most QUIC connections at once. At the cap the connection idle the longest is closed to
    /// make room for a new handshake; only when every connection is busy is one refused.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// PING interval that keeps idle connections (and NAT bindings) alive; 0 disables. Off
    /// by default: the server's own PINGs would keep every idle client past `idle_timeout`
    /// (browsers keep alive the connections they want kept).
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// With this many QUIC connections open, a new handshake from an address not yet
    /// validated gets a Retry first (one round trip more; spoofed sources cannot answer it).
    /// 0: always.
    pub retry_above: usize,
    /// Flow-control window per stream: bounds what one request body can have in flight.
    pub stream_receive_window: ByteSize,
    /// Flow-control window per connection.
    pub receive_window: ByteSize,
    /// Unacknowledged bytes the edge may have in flight per connection.
    pub send_window: ByteSize,
    pub congestion: Congestion,
    /// UDP generic segmentation offload: many packets per syscall where the kernel has it.
    pub gso: bool,
    /// Largest request header section accepted.
    pub max_header_size: ByteSize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            advertise: true,
            alt_svc_max_age: Duration::from_secs(86_400),
            advertised_port: 0,
            // Browsers open up to ~100 parallel requests per origin; more is one client
            // monopolising the edge.
            max_concurrent_streams: 100,
            // An idle connection holds about 45 KB of RSS (most of it quinn's and rustls' own
            // state): 3,000 of them take about 140 MB.
            max_connections: 3_000,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::ZERO,
            // A third of max_connections: below it a handshake costs one round trip less.
            retry_above: 1_000,
            // 1 MiB per stream / 8 MiB per connection: enough for ~100 Mbit/s at 80 ms RTT
            // per connection, small enough that 10k connections cannot exhaust memory.
            stream_receive_window: ByteSize::mib(1),
            receive_window: ByteSize::mib(8),
            send_window: ByteSize::mib(8),
            congestion: Congestion::Cubic,
            gso: true,
            max_header_size: ByteSize::kib(64),
        }
    }
}

/// QUIC congestion controller.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    Cubic,
    NewReno,
    Bbr,
}

/// Storage and policy knobs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Directory of the content-addressed store (cacache layout).
    pub dir: PathBuf,
    /// Disk budget: least recently used entries are evicted above it.
    pub disk_budget: ByteSize,
    /// Bytes held by the in-memory hot tier.
    pub memory_budget: ByteSize,
    /// Objects up to this size are eligible for the hot tier.
    pub memory_object_max: ByteSize,
    /// Larger responses are passed through and not stored.
    pub max_object_size: ByteSize,
    /// The unit of storage and of range fetches. A body is stored as content-addressed pieces
    /// of this size; an object larger than one slice is *sliced*: each slice is its own cache
    /// entry, fetched from the origin with a `Range` request only when a client needs it. Each
    /// slice is verified whole before any of it is sent, so this also bounds per-response
    /// read memory.
    pub slice_size: ByteSize,
    /// Slices fetched ahead of a sequential reader of a sliced object (0: none).
    pub slice_read_ahead: u32,
    /// Most ranges honoured in one multi-range request; more are answered with the whole
    /// representation (RFC 9110 14.2 lets a server ignore an abusive Range).
    pub max_ranges: usize,
    /// Heuristic freshness (RFC 9111 4.2.2) as a fraction of (Date - Last-Modified), only for
    /// responses the RFC allows it for.
    pub heuristic_fraction: f64,
    /// Upper bound for heuristic freshness.
    #[serde(with = "humantime_serde")]
    pub heuristic_max: Duration,
    /// How long a "not storable" answer is remembered so that concurrent requests for it go
    /// straight to the origin instead of queueing behind each other (Varnish's hit-for-pass).
    #[serde(with = "humantime_serde")]
    pub pass_memory: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("quicdn-cache"),
            disk_budget: ByteSize::gib(10),
            memory_budget: ByteSize::mib(256),
            memory_object_max: ByteSize::mib(4),
            max_object_size: ByteSize::gib(8),
            // 1 MiB: see the README's "Video and large files" for the measurement. Large
            // enough that per-slice overhead (one origin request, one file, one hash) is small
            // next to the bytes; small enough that a seek pulls little beyond what is read.
            slice_size: ByteSize::mib(1),
            slice_read_ahead: 0,
            max_ranges: 16,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(24 * 3600),
            pass_memory: Duration::from_secs(120),
        }
    }
}

/// How the edge talks to origins.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// TCP connect timeout (a group's origin may set its own); the TLS handshake counts
    /// against `first_byte_timeout`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// From request sent to response head received.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest gap between two body chunks from the origin.
    #[serde(with = "humantime_serde")]
    pub idle_body_timeout: Duration,
    /// Idle pooled connections kept per origin.
    pub max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Most concurrent requests in flight to one origin; more wait for a slot.
    pub max_concurrent: usize,
    /// Extra PEM CA bundle trusted for HTTPS origins, besides the public web roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(30),
            idle_body_timeout: Duration::from_secs(30),
            max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(90),
            max_concurrent: 512,
            ca_file: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter used when `RUST_LOG` is unset.
    pub filter: String,
    pub format: LogFormat,
    /// One structured line per request under the `access` target.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

impl LogConfig {
    /// `filter` as the edge applies it: the NATS client's own lines (one per event, so one
    /// per reconnect attempt during an outage) only from warn on, unless the filter names
    /// it; the control plane logs each change of the bus once itself.
    pub fn effective_filter(&self) -> String {
        match self.filter.contains("async_nats") {
            true => self.filter.clone(),
            false => format!("{},async_nats=warn", self.filter),
        }
    }
}

/// Live reload: the config file is re-read on SIGHUP, on `edge reload` (`POST /reload` on the
/// admin listener) and when it changes. What a reload applies: `site` (every site and its
/// rules), `origin`, `log.access_log`, `reload` and `admin` (tokens rotate without a restart); any other changed key is reported as
/// needing a restart ([`restart_needed`]) and keeps its running value.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often the config file is checked for a change (modification time, length, inode:
    /// a file replaced by a rename counts); 0 turns file watching off.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        // One stat() per half second: a saved change is live within a second.
        Self {
            watch_interval: Duration::from_millis(500),
        }
    }
}

/// Config keys (and sections) that a reload applies; see [`ReloadConfig`].
const RELOADABLE: [&str; 6] = [
    "site",
    "origin",
    "log.access_log",
    "reload",
    "admin",
    "cluster",
];

/// The keys that differ between the running config and `new` and that only a restart applies
/// (listeners, TLS, QUIC, `cache.dir`, `cache.slice_size`, ...), as `section.key`.
pub fn restart_needed(running: &EdgeConfig, new: &EdgeConfig) -> Vec<String> {
    fn diff(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(a), toml::Value::Table(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let path = match prefix {
                        "" => k.clone(),
                        p => format!("{p}.{k}"),
                    };
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) => diff(&path, x, y, out),
                        _ => out.push(path),
                    }
                }
            }
            (a, b) if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (toml::Value::try_from(running), toml::Value::try_from(new)) else {
        return vec!["(the configs cannot be compared)".into()];
    };
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out.retain(|k| {
        !RELOADABLE
            .iter()
            .any(|r| k == r || k.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
    });
    out
}

impl EdgeConfig {
    /// `new` as a reload applies it on top of this running config: the reloadable keys from
    /// `new`, the others as they run now.
    pub fn reloaded_with(&self, new: &Self) -> Self {
        let mut next = self.clone();
        next.sites = new.sites.clone();
        next.origin = new.origin.clone();
        next.log.access_log = new.log.access_log;
        next.reload = new.reload.clone();
        next.admin = new.admin.clone();
        next.cluster = new.cluster.clone();
        next
    }
}

/// One site: the Host names it answers for and the origin it pulls from.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Host names (no port), matched case-insensitively. `*.example.com` matches one or more
    /// labels; `*` alone matches every host (used by the quick start).
    pub hosts: Vec<String>,
    /// Origin base URL, `http://` or `https://`, optionally with a path prefix. Or, instead,
    /// `origins`: an origin group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// An origin group (instead of `origin`): tried by priority, load-balanced by weight,
    /// with failover and health; see [`crate::upstream::group`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<crate::upstream::group::GroupOrigin>,
    /// When an origin counts as failed, and how it is ejected and probed.
    #[serde(default)]
    pub origin_health: crate::upstream::group::OriginHealth,
    /// How `origins` of one priority share the requests: `"rotate"` (default, a weighted
    /// rotation) or `"hash"` (each object to one origin by rendezvous hashing of its cache
    /// key: for a tier of parent caches).
    #[serde(default)]
    pub balance: crate::upstream::group::Balance,
    /// Parent caches (other edges) that misses go to before the origin: a shield (one, or
    /// several by `priority`), or a tier that shares objects by `parent_balance`. Each entry
    /// as in `origins`; parents always get the client's `Host`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<crate::upstream::group::GroupOrigin>,
    /// How parents of one priority share objects: `"hash"` (default: each object on one
    /// parent, by rendezvous hashing of its key) or `"rotate"`.
    #[serde(default = "hash_balance")]
    pub parent_balance: crate::upstream::group::Balance,
    /// When every parent of an object fails: `"origin"` (default: ask the origin directly)
    /// or `"error"` (answer with the failure).
    #[serde(default)]
    pub fallback: crate::upstream::parent::Fallback,
    /// Send the request's host to the origin (as `Host`) instead of the origin URL's
    /// authority: the host the edge routed and keyed the request by (lowercase, no port, no
    /// trailing dot), never a second one the client may have sent.
    #[serde(default)]
    pub forward_host: bool,
    /// Whether http and https share cache entries; see [`SchemePolicy`].
    #[serde(default)]
    pub scheme: SchemePolicy,
    /// Answer plain-HTTP requests with `308` to the same URL over HTTPS.
    #[serde(default)]
    pub redirect_https: bool,
    /// The port in that redirect (default, `"inherit"`: the port `listen.https` is bound to;
    /// 443 is left out of the URL). Set it when clients reach the edge through another port.
    #[serde(default, with = "unset::inherit")]
    pub https_port: Option<u16>,
    /// Header edits on every response of the site (CORS, HSTS, hiding `Server`, ...).
    #[serde(default)]
    pub response_headers: crate::rules::HeaderEdits,
    /// Header edits on every request to the origin (e.g. a shared secret it checks).
    #[serde(default)]
    pub request_headers: crate::rules::HeaderEdits,
    /// Path rules, the first match winning: TTLs, cache key, bypass, header edits.
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::rules::PathRule>,
    /// Static pages for 5xx answers (the origin's, or the edge's own 502/504).
    /// Request and miss limits per client ([`crate::rules::limit`]).
    #[serde(
        default,
        skip_serializing_if = "crate::rules::limit::RateLimitConfig::is_empty"
    )]
    pub rate_limit: crate::rules::limit::RateLimitConfig,
    /// Signed URLs and tokens ([`crate::rules::token`]).
    #[serde(
        default,
        skip_serializing_if = "crate::rules::token::TokenConfig::is_empty"
    )]
    pub token: crate::rules::token::TokenConfig,
    #[serde(default, rename = "error_page")]
    pub error_pages: Vec<crate::rules::ErrorPage>,
    /// Pass the origin's `Surrogate-Key` and `Cache-Tag` headers on to clients. By default
    /// they are removed: they name the keys a purge by tag uses, which clients have no use
    /// for (a parent tier for other edges sets this, so that its children index them too).
    #[serde(default)]
    pub keep_surrogate_keys: bool,
}

fn hash_balance() -> crate::upstream::group::Balance {
    crate::upstream::group::Balance::Hash
}

impl SiteConfig {
    /// The origin URL of `origin`, or of the group's first origin.
    pub fn primary_origin(&self) -> &str {
        match self.origins.first() {
            Some(first) if self.origin.is_empty() => &first.url,
            _ => &self.origin,
        }
    }

    /// A site for `hosts` from `origin`, everything else at its default.
    pub fn new(hosts: &[&str], origin: &str) -> Self {
        Self {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            origin: origin.to_owned(),
            origins: Vec::new(),
            origin_health: Default::default(),
            balance: Default::default(),
            parents: Vec::new(),
            parent_balance: crate::upstream::group::Balance::Hash,
            fallback: Default::default(),
            forward_host: false,
            scheme: SchemePolicy::default(),
            redirect_https: false,
            https_port: None,
            response_headers: Default::default(),
            request_headers: Default::default(),
            rules: Vec::new(),
            keep_surrogate_keys: false,
            error_pages: Vec::new(),
            token: Default::default(),
            rate_limit: Default::default(),
        }
    }
}

/// How a site treats the scheme (http or https) a request arrived with. An entry made for one
/// scheme must not be served for the other while the origin is told which one it was: an
/// origin that redirects http to https on `X-Forwarded-Proto` would loop its https users.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SchemePolicy {
    /// The scheme is part of the cache key, and the origin is told it (`X-Forwarded-Proto`).
    #[default]
    Key,
    /// One entry serves both schemes, and the origin is not told the scheme
    /// (no `X-Forwarded-Proto`): it must answer the same for both.
    Shared,
}

impl EdgeConfig {
    /// Checks what the types cannot: called right after parsing. A flat list of independent
    /// checks, one per key, each naming the key: longer than a function should be, simpler
    /// than splitting it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.https.is_none() && self.listen.http.is_none() {
            return bad("listen: at least one of `https` and `http` must be set".into());
        }
        if self.quic.enabled && self.listen.https.is_none() {
            return bad(
                "quic.enabled needs listen.https (HTTP/3 shares its port and certificate)".into(),
            );
        }
        if self.listen.h2_max_concurrent_streams == 0 {
            return bad("listen.h2_max_concurrent_streams must be at least 1".into());
        }
        for (name, value) in [
            ("first_request_timeout", self.listen.first_request_timeout),
            ("idle_timeout", self.listen.idle_timeout),
            ("send_timeout", self.listen.send_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("listen.{name} must be more than 0"));
            }
        }
        if self.quic.max_concurrent_streams == 0 {
            return bad("quic.max_concurrent_streams must be at least 1".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls: `cert` and `key` must be given together".into());
        }
        if !self.listen.health_path.starts_with('/') {
            return bad("listen.health_path must start with '/'".into());
        }
        let c = &self.cache;
        if c.slice_size.as_u64() < 4096 || c.slice_size.as_u64() > 64 * 1024 * 1024 {
            return bad("cache.slice_size must be between 4 KiB and 64 MiB".into());
        }
        if !(0.0..=1.0).contains(&c.heuristic_fraction) {
            return bad("cache.heuristic_fraction must be between 0 and 1".into());
        }
        if c.memory_object_max > c.memory_budget {
            return bad("cache.memory_object_max must not exceed cache.memory_budget".into());
        }
        if let Err(e) = admin::check(&self.admin, &self.prewarm) {
            return bad(e);
        }
        if self.origin.max_concurrent == 0 {
            return bad("origin.max_concurrent must be at least 1".into());
        }
        if let Err(e) = self.control.check(&self.name) {
            return bad(e);
        }
        if let Err(e) = self.cluster.check(&self.name) {
            return bad(e);
        }
        for (i, site) in self.sites.iter().enumerate() {
            if site.hosts.is_empty() {
                return bad(format!("site[{i}]: `hosts` is empty"));
            }
            match (site.origin.is_empty(), site.origins.is_empty()) {
                (true, true) => return bad(format!("site[{i}]: set `origin` or `origins`")),
                (false, false) => {
                    return bad(format!(
                        "site[{i}]: `origin` and `origins` both set: choose one"
                    ));
                }
                (false, true) => {
                    if let Err(e) = crate::origin::OriginUrl::parse(&site.origin) {
                        return bad(format!("site[{i}].origin: {e}"));
                    }
                }
                (true, false) => {
                    for (j, o) in site.origins.iter().enumerate() {
                        if let Err(e) = o.check() {
                            return bad(format!("site[{i}].origins[{j}].{e}"));
                        }
                    }
                }
            }
            for (j, o) in site.parents.iter().enumerate() {
                if let Err(e) = o.check() {
                    return bad(format!("site[{i}].parents[{j}].{e}"));
                }
            }
            if let Err(e) = site.origin_health.check() {
                return bad(format!("site[{i}]: {e}"));
            }
            if let Err(e) = crate::rules::check(site) {
                return bad(format!("site[{i}] ({}): {e}", site.hosts.join(", ")));
            }
        }
        Ok(())
    }

    /// Loads, parses and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let mut config: Self = shared::config::load(path)?;
        // Files named by the config are relative to it, wherever the edge runs from.
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        for token in &mut config.admin.tokens {
            if let Some(file) = token.token_file.as_mut().filter(|f| f.is_relative()) {
                *file = dir.join(&*file);
            }
        }
        for site in &mut config.sites {
            for page in &mut site.error_pages {
                if page.file.is_relative() {
                    page.file = dir.join(&page.file);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_listener_set_to_none_is_off_and_prints_as_none() {
        let c: EdgeConfig =
            toml::from_str("[listen]\nhttps = \"none\"\nadmin = \"none\"\n").unwrap();
        assert_eq!((c.listen.https, c.listen.admin), (None, None));
        assert_eq!(
            c.listen.http,
            ListenConfig::default().http,
            "left out: its default"
        );
        let printed = shared::config::render(&c).unwrap();
        assert!(printed.contains("https = \"none\""), "{printed}");
        let again: EdgeConfig = toml::from_str(&printed).unwrap();
        assert_eq!(again, c);
        let bad = toml::from_str::<EdgeConfig>("[listen]\nhttp = \"8080\"\n").unwrap_err();
        assert!(bad.to_string().contains("an address like"), "{bad}");
    }

    #[test]
    fn only_keys_a_reload_cannot_apply_need_a_restart() {
        let running = EdgeConfig::default();
        let mut new = running.clone();
        assert!(restart_needed(&running, &new).is_empty());
        new.sites
            .push(SiteConfig::new(&["a.test"], "http://127.0.0.1:1"));
        new.origin.connect_timeout = Duration::from_secs(1);
        new.log.access_log = false;
        new.reload.watch_interval = Duration::ZERO;
        new.cluster.peers = vec![crate::upstream::cluster::ClusterPeer {
            name: "quicdn".into(),
            url: "http://127.0.0.1:1".into(),
            weight: 1,
        }];
        assert!(restart_needed(&running, &new).is_empty());
        new.listen.https = None;
        new.cache.slice_size = ByteSize::mib(4);
        new.log.filter = "debug".into();
        new.control.nats = vec!["nats://127.0.0.1:4222".into()];
        assert_eq!(
            restart_needed(&running, &new),
            [
                "cache.slice_size",
                "control.nats",
                "listen.https",
                "log.filter"
            ]
        );
        let applied = running.reloaded_with(&new);
        assert_eq!(applied.sites, new.sites);
        assert_eq!(applied.cluster, new.cluster);
        assert!(!applied.log.access_log);
        assert_eq!(applied.listen, running.listen);
        assert_eq!(applied.cache, running.cache);
    }

    #[test]
    fn the_nats_client_logs_from_warn_unless_named() {
        let mut log = LogConfig::default();
        assert_eq!(log.effective_filter(), "info,async_nats=warn");
        log.filter = "debug,async_nats=debug".into();
        assert_eq!(log.effective_filter(), "debug,async_nats=debug");
    }

    #[test]
    fn defaults_render_and_parse_back() {
        let text = shared::config::render(&EdgeConfig::default()).unwrap();
        let parsed: EdgeConfig = shared::config::parse(&text).unwrap();
        assert_eq!(parsed, EdgeConfig::default());
    }

    #[test]
    fn unknown_keys_are_rejected_in_every_section() {
        for section in [
            "",
            "[listen]\n",
            "[tls]\n",
            "[cache]\n",
            "[origin]\n",
            "[log]\n",
            "[admin]\n",
            "[purge]\n",
            "[prewarm]\n",
            "[control]\n",
        ] {
            let text = format!("{section}bogus_key = 1\n");
            let err = shared::config::parse::<EdgeConfig>(&text).unwrap_err();
            assert!(err.contains("bogus_key"), "{section}: {err}");
        }
        let site = "[[site]]\nhosts=['a']\norigin='http://o'\nbogus_key=1\n";
        assert!(shared::config::parse::<EdgeConfig>(site).is_err());
    }

    #[test]
    fn sizes_and_durations_are_human() {
        let text = "[cache]\ndisk_budget = '2 GiB'\nslice_size = '512 KiB'\n\
                    [origin]\nconnect_timeout = '250ms'\n";
        let c: EdgeConfig = shared::config::parse(text).unwrap();
        assert_eq!(c.cache.disk_budget, ByteSize::gib(2));
        assert_eq!(c.cache.slice_size, ByteSize::kib(512));
        assert_eq!(c.origin.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = EdgeConfig::default();
        c.sites.push(SiteConfig::new(&["a"], "ftp://x"));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("site[0].origin"), "{err}");
        let mut c = EdgeConfig::default();
        c.cache.slice_size = ByteSize::b(10);
        assert!(c.validate().unwrap_err().to_string().contains("slice_size"));
        let mut c = EdgeConfig::default();
        c.tls.cert = Some("x".into());
        assert!(c.validate().unwrap_err().to_string().contains("tls"));
    }

    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let c =
                    EdgeConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // What --print-config shows loads back as the same config, and shows every
                // optional key of every site, set or not.
                let printed = shared::config::render(&c).unwrap();
                let again: EdgeConfig = toml::from_str(&printed).unwrap();
                assert_eq!(again, c, "{}", path.display());
                assert_every_optional_key_printed(&printed, &c, &path);
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs in {}", dir.display());
    }

    /// The keys of a site's `Option` fields, by where they are under `[[site]]`. The TTL
    /// rule is destructured: a new field fails to build here until it is listed.
    fn optional_keys() -> [(&'static str, &'static [&'static str]); 5] {
        let crate::rules::TtlRule {
            default: _,
            min: _,
            max: _,
            override_ttl: _,
            client: _,
            negative: _,
        } = crate::rules::TtlRule::default();
        [
            (
                "rule.ttl",
                &["default", "min", "max", "override", "client", "negative"],
            ),
            ("origin_health", &["probe_path"]),
            (
                "origins",
                &["host", "first_byte_timeout", "connect_timeout"],
            ),
            ("error_page", &["content_type"]),
            ("", &["https_port"]),
        ]
    }

    fn assert_every_optional_key_printed(printed: &str, c: &EdgeConfig, path: &Path) {
        let printed: toml::Table = toml::from_str(printed).unwrap();
        let sites = printed.get("site").and_then(|s| s.as_array());
        assert_eq!(
            sites.map_or(0, Vec::len),
            c.sites.len(),
            "{}",
            path.display()
        );
        // The tables at `at` (a dotted path; arrays of tables are entered) under a site.
        fn tables<'a>(v: &'a toml::Value, at: &[&str]) -> Vec<&'a toml::Table> {
            match (v, at.split_first()) {
                (toml::Value::Array(items), _) => {
                    items.iter().flat_map(|i| tables(i, at)).collect()
                }
                (toml::Value::Table(t), None) => vec![t],
                (toml::Value::Table(t), Some((k, rest))) => {
                    t.get(*k).map_or_else(Vec::new, |v| tables(v, rest))
                }
                _ => Vec::new(),
            }
        }
        for site in sites.into_iter().flatten() {
            for (at, keys) in optional_keys() {
                let at: Vec<&str> = at.split('.').filter(|k| !k.is_empty()).collect();
                for table in tables(site, &at) {
                    for key in keys {
                        assert!(
                            table.contains_key(*key),
                            "{}: {at:?} printed without {key:?}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
}
