//! `edge purge` and `edge prewarm`: the admin API's client, and how its answers are printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use edge::admin::api::{Answer, PopOutcome};

/// Environment variable holding the bearer token when --token is not given (a token on the
/// command line is visible to every user of the machine in the process list).
const TOKEN_ENV: &str = "QUICDN_TOKEN";

/// What the client waits beyond `--wait` for the answer to come back.
const ANSWER_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("selector").required(true).multiple(false)
    .args(["url", "prefix", "tag", "host", "all"])))]
pub(crate) struct PurgeArgs {
    /// One URL (https://host/path, http://… or host/path): every variant and slice of it.
    #[arg(long)]
    url: Option<String>,
    /// Every object under a host and path prefix (host/static/).
    #[arg(long)]
    prefix: Option<String>,
    /// Every object whose Surrogate-Key or Cache-Tag named this key (needs a token for "*").
    #[arg(long)]
    tag: Option<String>,
    /// Every object of one site.
    #[arg(long)]
    host: Option<String>,
    /// Everything (needs a token for "*").
    #[arg(long)]
    all: bool,
    /// Mark stale instead of removing: the next request revalidates.
    #[arg(long)]
    soft: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PrewarmArgs {
    /// URLs to fetch into the cache (https://host/path).
    urls: Vec<String>,
    /// A file of URLs, one a line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    file: Option<PathBuf>,
    /// A POP to warm (repeat for more; default every POP).
    #[arg(long = "pop")]
    pops: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// How long the edge waits for every POP's acknowledgement (e.g. 2s; the edge caps it).
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    wait: Option<Duration>,
    /// The admin API's bearer token (default: the QUICDN_TOKEN environment variable; none is
    /// needed from loopback when the edge has no tokens configured).
    #[arg(long)]
    token: Option<String>,
}

/// A request body, the wait, and the token.
type Request = (serde_json::Value, Option<Duration>, Option<String>);

impl Common {
    fn finish(&self, mut body: serde_json::Value) -> Request {
        if let Some(wait) = self.wait {
            body["wait"] = format!("{}ms", wait.as_millis()).into();
        }
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()));
        (body, self.wait, token)
    }
}

impl PurgeArgs {
    pub(crate) fn request(&self) -> anyhow::Result<Request> {
        let mut body = match (&self.url, &self.prefix, &self.tag, &self.host) {
            (Some(url), ..) => serde_json::json!({ "url": url }),
            (_, Some(prefix), ..) => serde_json::json!({ "prefix": prefix }),
            (_, _, Some(tag), _) => serde_json::json!({ "tag": tag }),
            (_, _, _, Some(host)) => serde_json::json!({ "host": host }),
            _ => serde_json::json!({ "all": self.all }),
        };
        body["mode"] = if self.soft { "soft" } else { "hard" }.into();
        Ok(self.common.finish(body))
    }
}

impl PrewarmArgs {
    pub(crate) fn request(&self) -> anyhow::Result<Request> {
        let mut urls = self.urls.clone();
        if let Some(file) = &self.file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            urls.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        anyhow::ensure!(
            !urls.is_empty(),
            "no URLs: give them as arguments or with --file"
        );
        let body = serde_json::json!({ "urls": urls, "pops": self.pops });
        Ok(self.common.finish(body))
    }
}

/// Sends the command, prints the answer; an error if it was refused, a POP is pending or a
/// URL failed.
pub(crate) async fn send(
    addr: SocketAddr,
    path: &str,
    (body, wait, token): Request,
) -> anyhow::Result<()> {
    let mut headers = Vec::new();
    if let Some(token) = token {
        headers.push((http::header::AUTHORIZATION, format!("Bearer {token}")));
    }
    let (status, text) = edge::admin::request_with(
        addr,
        http::Method::POST,
        path,
        &headers,
        body.to_string().into(),
        wait.unwrap_or_default() + ANSWER_MARGIN,
    )
    .await?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        anyhow::bail!("the edge at {addr} answered {status}: {}", reason.trim());
    }
    let answer: Answer = serde_json::from_str(&text)
        .with_context(|| format!("the edge at {addr} answered {status} with: {text}"))?;
    let failed = print(&answer);
    if let Some(error) = &answer.error {
        anyhow::bail!("not published to the other POPs (applied at {addr} only): {error}");
    }
    anyhow::ensure!(
        answer.pending.is_empty(),
        "{} POP(s) had not applied it when the wait ended: {}",
        answer.pending.len(),
        answer.pending.join(", ")
    );
    anyhow::ensure!(failed == 0, "{failed} URL(s) failed to pre-warm");
    Ok(())
}

/// Prints the answer, a line per POP (and per failed URL); returns how many URLs failed.
fn print(answer: &Answer) -> u64 {
    println!("id {} (seq {})", answer.id, answer.seq);
    let mut failed = 0;
    for pop in &answer.pops {
        let what = match &pop.outcome {
            PopOutcome::Purged(p) => format!(
                "purged {} object(s), {} slice(s), {} byte(s); {} fill(s) fenced",
                p.objects, p.slices, p.bytes, p.fenced
            ),
            PopOutcome::Prewarmed(p) => {
                failed += p.failed;
                format!("pre-warmed {} URL(s), {} failed", p.fetched, p.failed)
            }
            PopOutcome::Skipped(_) => "not a POP to warm".to_owned(),
        };
        println!(
            "  {:<16} applied after {:>5} ms: {what}",
            pop.pop, pop.lag_ms
        );
        if let PopOutcome::Prewarmed(p) = &pop.outcome {
            for w in &p.urls {
                let outcome = w.outcome.as_deref().unwrap_or("-");
                let status = w.status.map_or("-".to_owned(), |s| s.to_string());
                match &w.error {
                    None => println!("    ok   {status} {outcome:<9} {:>9} B  {}", w.bytes, w.url),
                    Some(e) => println!("    FAIL {status} {outcome:<9} {}: {e}", w.url),
                }
            }
        }
    }
    for pop in &answer.pending {
        println!("  {pop:<16} pending");
    }
    failed
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SignArgs {
    /// The URL to sign (https://host/path?query, or /path?query with --secret).
    url: String,
    /// How long it stays valid (1h, 30m) or when it expires (seconds since the epoch).
    #[arg(long)]
    expires: String,
    /// When it becomes valid, as --expires (default: at once).
    #[arg(long)]
    starts: Option<String>,
    /// Limit it to one client address or CIDR.
    #[arg(long)]
    ip: Option<String>,
    /// Sign a path prefix (e.g. /hls/show/) instead of the one URL.
    #[arg(long)]
    prefix: Option<String>,
    /// The key id (default: the site's first key).
    #[arg(long)]
    key: Option<String>,
    /// The secret (hex:… or base64:…) instead of the site's key from --config; needs --key.
    /// Default: the QUICDN_SIGN_SECRET environment variable.
    #[arg(long)]
    secret: Option<String>,
}

/// Environment variable holding the signing secret when --secret is not given.
const SECRET_ENV: &str = "QUICDN_SIGN_SECRET";

impl SignArgs {
    /// The signed URL, with the key from `config`'s site for the URL's host or from --secret.
    pub(crate) fn sign(&self, config: Option<&edge::config::EdgeConfig>) -> anyhow::Result<String> {
        use edge::rules::token::{NativeKey, SignOptions, sign};
        let (origin, path) = split_url(&self.url)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let secret = self
            .secret
            .clone()
            .or_else(|| std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty()));
        let key = match (secret, config) {
            (Some(secret), _) => NativeKey {
                id: self.key.clone().context("--secret needs --key (its id)")?,
                secret: edge::config::Secret::new(secret),
            },
            (None, Some(config)) => {
                let host = origin
                    .and_then(|o| o.split("://").nth(1))
                    .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
                    .context("give the URL with its host (https://host/path) to find its site")?;
                let site = config
                    .sites
                    .iter()
                    .find(|s| s.hosts.iter().any(|h| host_matches(h, &host)))
                    .with_context(|| format!("no site in the config serves {host}"))?;
                let keys = &site.token.keys;
                match &self.key {
                    Some(id) => keys.iter().find(|k| &k.id == id).cloned(),
                    None => keys.first().cloned(),
                }
                .with_context(|| format!("the site of {host} has no such token.key"))?
            }
            (None, None) => anyhow::bail!("give --config (the site's keys) or --secret and --key"),
        };
        let secret = key
            .bytes()
            .map_err(|e| anyhow::anyhow!("key {:?}: secret: {e}", key.id))?;
        let options = SignOptions {
            key_id: key.id.clone(),
            expires: when(&self.expires, now)?,
            starts: self.starts.as_deref().map(|s| when(s, now)).transpose()?,
            ip: self.ip.clone(),
            prefix: self.prefix.clone(),
        };
        if let Some(prefix) = &options.prefix {
            let bare = path.split('?').next().unwrap_or_default();
            anyhow::ensure!(
                bare.starts_with(prefix.as_str()),
                "the URL's path {bare} is not under --prefix {prefix}"
            );
        }
        Ok(format!(
            "{}{}",
            origin.unwrap_or_default(),
            sign(&secret, path, &options)
        ))
    }
}

/// `https://host` and `/path?query` of a URL (no origin for a bare path).
fn split_url(url: &str) -> anyhow::Result<(Option<&str>, &str)> {
    if url.starts_with('/') {
        return Ok((None, url));
    }
    let after = url
        .find("://")
        .map(|i| i + 3)
        .context("the URL needs http:// or https://, or to be a /path")?;
    Ok(match url[after..].find('/') {
        Some(i) => (Some(&url[..after + i]), &url[after + i..]),
        None => anyhow::bail!("the URL has no path: {url}/ perhaps"),
    })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// Seconds since the epoch from a duration after `now` (`1h`) or a timestamp.
fn when(text: &str, now: u64) -> anyhow::Result<u64> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.parse()?);
    }
    let d = humantime_serde::re::humantime::parse_duration(text)
        .with_context(|| format!("{text:?}: a duration (1h) or seconds since the epoch"))?;
    Ok(now + d.as_secs())
}
