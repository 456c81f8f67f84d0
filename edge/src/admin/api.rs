//! The bodies of `POST /purge` and `POST /prewarm`, checked into commands, and the answers
//! built from what [`crate::control::Control::submit`] returned.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::Scope;
use crate::control::{
    Ack, Command, Mode, Outcome, Prewarm, Prewarmed, Purge, Purged, Selector, Submitted, command,
};

/// The longest `wait` of a purge: acknowledgements take milliseconds; a caller that waits
/// longer is waiting for a POP that is down, which `pending` reports.
pub(crate) const PURGE_WAIT_MAX: Duration = Duration::from_secs(30);

/// The longest `wait` of a pre-warm: fetching many URLs at a bounded concurrency takes a
/// while; past this the caller learns which POPs are still at it.
pub(crate) const PREWARM_WAIT_MAX: Duration = Duration::from_secs(300);

/// Most URLs in one pre-warm (each is an origin fetch per POP).
const PREWARM_URLS_MAX: usize = 10_000;

/// `POST /purge`: exactly one selector, a mode, how long to wait for acknowledgements.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    host: Option<String>,
    all: Option<bool>,
    #[serde(default)]
    mode: Mode,
    wait: Option<String>,
}

/// `POST /prewarm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrewarmBody {
    urls: Vec<String>,
    #[serde(default)]
    pops: Vec<String>,
    wait: Option<String>,
}

/// A checked API request: the command, the sites it acts on, how long to wait.
#[derive(Debug)]
pub(crate) struct Checked {
    pub command: Command,
    pub scope: Scope,
    pub wait: Option<Duration>,
}

/// Parses and checks a `POST /purge` body; the error says what is wrong with it.
pub(crate) fn purge(body: &[u8]) -> Result<Checked, String> {
    let b: PurgeBody = serde_json::from_slice(body).map_err(|e| format!("bad purge body: {e}"))?;
    let given = [
        b.url.as_ref().map(|_| "url"),
        b.prefix.as_ref().map(|_| "prefix"),
        b.tag.as_ref().map(|_| "tag"),
        b.host.as_ref().map(|_| "host"),
        b.all.map(|_| "all"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if given.len() != 1 {
        return Err(format!(
            "give exactly one selector of url, prefix, tag, host, all (got {})",
            match given.is_empty() {
                true => "none".to_owned(),
                false => given.join(", "),
            }
        ));
    }
    let selector = match (b.url, b.prefix, b.tag, b.host, b.all) {
        (Some(url), ..) => Selector::Url(url.trim().to_owned()),
        (_, Some(prefix), ..) => Selector::Prefix(prefix.trim().to_owned()),
        (_, _, Some(tag), ..) => {
            let tag = tag.trim();
            if tag.contains([' ', ',', '\t']) {
                return Err(format!(
                    "tag {tag:?}: one surrogate key, no spaces or commas"
                ));
            }
            Selector::Tag(tag.to_owned())
        }
        (_, _, _, Some(host), _) => {
            if host.contains(['/', '?']) {
                return Err(format!(
                    "host {host:?}: a site name, without a path (purge a path with \"prefix\")"
                ));
            }
            Selector::Host(host.trim().to_owned())
        }
        (.., Some(true)) => Selector::All,
        (.., Some(false)) | (.., None) => {
            return Err("all: only `true` means something (purge everything)".into());
        }
    };
    let scope = scope_of(&selector)?;
    Ok(Checked {
        command: Command::Purge(Purge {
            id: command::new_id(),
            selector,
            mode: b.mode,
            issued_ms: command::now_ms(),
        }),
        scope,
        wait: wait(b.wait, PURGE_WAIT_MAX)?,
    })
}

/// Parses and checks a `POST /prewarm` body.
pub(crate) fn prewarm(body: &[u8]) -> Result<Checked, String> {
    let b: PrewarmBody =
        serde_json::from_slice(body).map_err(|e| format!("bad prewarm body: {e}"))?;
    if b.urls.is_empty() {
        return Err("urls: empty".into());
    }
    if b.urls.len() > PREWARM_URLS_MAX {
        return Err(format!(
            "urls: {} of them, at most {PREWARM_URLS_MAX}",
            b.urls.len()
        ));
    }
    let mut hosts = Vec::new();
    for url in &b.urls {
        let uri = url.parse::<http::Uri>().ok();
        if !matches!(
            uri.as_ref().and_then(|u| u.scheme_str()),
            Some("http" | "https")
        ) {
            return Err(format!("url {url:?}: not an http:// or https:// URL"));
        }
        if let Scope::Hosts(of_url) = scope_of(&Selector::Url(url.clone()))? {
            for host in of_url {
                if !hosts.contains(&host) {
                    hosts.push(host);
                }
            }
        }
    }
    if let Some(p) = b.pops.iter().find(|p| p.trim().is_empty()) {
        return Err(format!("pops: {p:?} is not a POP name"));
    }
    Ok(Checked {
        command: Command::Prewarm(Prewarm {
            id: command::new_id(),
            urls: b.urls,
            pops: b.pops,
            issued_ms: command::now_ms(),
        }),
        scope: Scope::Hosts(hosts),
        wait: wait(b.wait, PREWARM_WAIT_MAX)?,
    })
}

/// `wait` (humantime: `"2s"`, `"1m 30s"`), capped at `max`.
fn wait(text: Option<String>, max: Duration) -> Result<Option<Duration>, String> {
    text.map(|t| {
        humantime_serde::re::humantime::parse_duration(t.trim())
            .map(|w| w.min(max))
            .map_err(|e| format!("wait {t:?}: {e} (a duration like \"2s\")"))
    })
    .transpose()
}

/// The sites a selector acts on, checked by the same parse the purge makes
/// ([`crate::purge`]). A tag is not tied to a site: only a token for every site may purge by
/// tag, so a site's token never reaches another site's tagged objects.
fn scope_of(selector: &Selector) -> Result<Scope, String> {
    if let Selector::Url(url) | Selector::Prefix(url) = selector
        && let Some((scheme, _)) = url.split_once("://")
        && !matches!(scheme, "http" | "https")
    {
        return Err(format!(
            "{url:?}: only http:// and https:// URLs (or host/path)"
        ));
    }
    crate::purge::check(selector).map_err(|e| e.to_string())?;
    match crate::purge::host_of(selector).map_err(|e| e.to_string())? {
        Some(host) => Ok(Scope::Hosts(vec![host])),
        None => Ok(Scope::AllSites),
    }
}

/// The answer to a purge or a pre-warm.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Answer {
    pub id: String,
    pub seq: u64,
    /// What this POP did: its [`Purged`] or [`Prewarmed`] itself, `{"skipped": true}` for
    /// a pre-warm of other POPs (none: it did not apply it within the wait).
    pub local: Option<LocalOutcome>,
    /// Every POP that acknowledged within the wait, this one included.
    pub pops: Vec<PopAck>,
    /// POPs expected to acknowledge that had not when the wait ended.
    pub pending: Vec<String>,
    /// Why the command could not be published to the bus (it was applied on this POP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One POP's acknowledgement.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PopAck {
    pub pop: String,
    pub applied: bool,
    pub applied_ms: u64,
    /// From the command's issue to this POP's apply.
    pub lag_ms: u64,
    #[serde(flatten)]
    pub outcome: PopOutcome,
}

/// What a POP did with the command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PopOutcome {
    Purged(Purged),
    Prewarmed(Prewarmed),
    /// A pre-warm for other POPs.
    Skipped(bool),
}

/// [`PopOutcome`] without its name: `local` is the POP's own answer, and the API says which
/// command it answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LocalOutcome {
    Purged(Purged),
    Prewarmed(Prewarmed),
    Skipped { skipped: bool },
}

impl From<PopOutcome> for LocalOutcome {
    fn from(o: PopOutcome) -> Self {
        match o {
            PopOutcome::Purged(p) => Self::Purged(p),
            PopOutcome::Prewarmed(p) => Self::Prewarmed(p),
            PopOutcome::Skipped(skipped) => Self::Skipped { skipped },
        }
    }
}

impl Answer {
    /// Built from what `Control::submit` returned for a command issued at `issued_ms` on the
    /// POP `pop`.
    pub(crate) fn new(submitted: Submitted, pop: &str, issued_ms: u64) -> Self {
        let pops: Vec<PopAck> = submitted
            .acks
            .into_iter()
            .map(|a| PopAck::new(a, issued_ms))
            .collect();
        Self {
            id: submitted.id,
            seq: submitted.seq,
            local: pops
                .iter()
                .find(|a| a.pop == pop)
                .map(|a| a.outcome.clone().into()),
            pops,
            pending: submitted.pending,
            error: submitted.error,
        }
    }
}

impl PopAck {
    fn new(ack: Ack, issued_ms: u64) -> Self {
        Self {
            pop: ack.pop,
            applied: true,
            applied_ms: ack.applied_ms,
            lag_ms: ack.applied_ms.saturating_sub(issued_ms),
            outcome: match ack.outcome {
                Outcome::Purged(p) => PopOutcome::Purged(p),
                Outcome::Prewarmed(p) => PopOutcome::Prewarmed(p),
                Outcome::Skipped => PopOutcome::Skipped(true),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(body: &str) -> Result<(Selector, Scope), String> {
        purge(body.as_bytes()).map(|c| match c.command {
            Command::Purge(p) => (p.selector, c.scope),
            other => panic!("{other:?}"),
        })
    }

    fn hosts(h: &str) -> Scope {
        Scope::Hosts(vec![h.to_owned()])
    }

    #[test]
    fn each_selector_parses_with_its_scope() {
        for (body, want, scope) in [
            (
                r#"{"url":"https://CDN.example:8443/app.js?v=1"}"#,
                Selector::Url("https://CDN.example:8443/app.js?v=1".into()),
                hosts("cdn.example"),
            ),
            (
                r#"{"url":"cdn.example/app.js"}"#,
                Selector::Url("cdn.example/app.js".into()),
                hosts("cdn.example"),
            ),
            (
                r#"{"prefix":"cdn.example/static/"}"#,
                Selector::Prefix("cdn.example/static/".into()),
                hosts("cdn.example"),
            ),
            (
                r#"{"tag":"product-42"}"#,
                Selector::Tag("product-42".into()),
                Scope::AllSites,
            ),
            (
                r#"{"host":"cdn.example"}"#,
                Selector::Host("cdn.example".into()),
                hosts("cdn.example"),
            ),
            (r#"{"all":true}"#, Selector::All, Scope::AllSites),
        ] {
            assert_eq!(selector(body), Ok((want, scope)), "{body}");
        }
        let c = purge(br#"{"url":"cdn.example/a","mode":"soft","wait":"2s"}"#).unwrap();
        assert_eq!(c.wait, Some(Duration::from_secs(2)));
        assert!(matches!(
            c.command,
            Command::Purge(Purge {
                mode: Mode::Soft,
                ..
            })
        ));
        let capped = purge(br#"{"all":true,"wait":"1h"}"#).unwrap();
        assert_eq!(capped.wait, Some(PURGE_WAIT_MAX));
    }

    #[test]
    fn bad_purge_bodies_say_why() {
        for (body, want) in [
            (
                r#"{"url":"cdn.example/a","host":"cdn.example"}"#,
                "exactly one selector of url, prefix, tag, host, all (got url, host)",
            ),
            (r#"{"mode":"soft"}"#, "(got none)"),
            (
                r#"{"url":"cdn.example/a","colour":"red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"url":"ftp://cdn.example/a"}"#,
                "only http:// and https://",
            ),
            (
                r#"{"url":"https://u@cdn.example/a"}"#,
                "https://u@cdn.example/a",
            ),
            (r#"{"url":"/a"}"#, "is not a URL"),
            (r#"{"prefix":""}"#, "is not a URL"),
            (r#"{"host":"cdn.example/x"}"#, "without a path"),
            (r#"{"tag":" "}"#, "empty surrogate key"),
            (r#"{"tag":"a b"}"#, "one surrogate key"),
            (r#"{"all":false}"#, "only `true`"),
            (r#"{"all":true,"wait":"soon"}"#, "wait"),
            (
                r#"{"all":true,"mode":"gentle"}"#,
                "unknown variant `gentle`",
            ),
            ("not json", "bad purge body"),
        ] {
            let err = selector(body).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn prewarm_bodies_are_checked() {
        let c = prewarm(br#"{"urls":["https://a.example/x","http://B.example/y","https://a.example/z"],"pops":["p1"],"wait":"10m"}"#).unwrap();
        assert_eq!(
            c.scope,
            Scope::Hosts(vec!["a.example".into(), "b.example".into()])
        );
        assert_eq!(c.wait, Some(PREWARM_WAIT_MAX));
        for (body, want) in [
            (r#"{"urls":[]}"#, "urls: empty"),
            (
                r#"{"urls":["a.example/x"]}"#,
                "not an http:// or https:// URL",
            ),
            (r#"{"urls":["https://a.example/x"],"pops":[""]}"#, "pops"),
            (r#"{"url":["https://a.example/x"]}"#, "unknown field"),
        ] {
            let err = prewarm(body.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn the_answer_names_the_local_outcome_and_the_lag() {
        let purged = Purged {
            objects: 2,
            slices: 0,
            bytes: 10,
            fenced: 0,
        };
        let submitted = Submitted {
            id: "i".into(),
            seq: 3,
            acks: vec![Ack {
                id: "i".into(),
                pop: "p1".into(),
                seq: 3,
                applied_ms: 1_050,
                outcome: Outcome::Purged(purged),
            }],
            pending: vec!["p2".into()],
            error: None,
        };
        let a = Answer::new(submitted, "p1", 1_000);
        assert_eq!(a.local, Some(LocalOutcome::Purged(purged)));
        assert_eq!(a.pops[0].lag_ms, 50);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["pops"][0]["purged"]["objects"], 2);
        assert_eq!(json["local"]["bytes"], 10);
        assert_eq!(json["pending"][0], "p2");
        let back: Answer = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }
}
