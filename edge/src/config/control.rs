//! `[control]`: the NATS JetStream bus that carries purges and pre-warms to every POP.
//! Unset (`nats = []`), the edge applies commands to itself only: one machine needs no bus.

use std::str::FromStr as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the control plane's bus is, and how its stream is made. Read at start only: a
/// change needs a restart (the consumer, the stream and the connection are made once).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// NATS servers, the POP's own region's first (tried in this order, then the ones the
    /// cluster advertises). Empty: no bus.
    pub nats: Vec<String>,
    /// The JetStream stream of commands; created if missing.
    pub stream: String,
    /// Commands are published on `<subject>.cmd` (the stream), purges also on
    /// `<subject>.fast` (plain NATS, the fast path), acknowledgements on `<subject>.ack.<pop>`.
    pub subject: String,
    /// Stream replicas, when this edge is the one that creates the stream (a single
    /// nats-server takes 1 only; a fleet's three-node cluster wants 3).
    pub replicas: usize,
    /// The POPs a `wait` waits for. Empty: this POP only.
    pub pops: Vec<String>,
    /// How long the edge's start waits for the first catch-up with the stream; past it the
    /// edge serves anyway, revalidating every hit until it has caught up.
    #[serde(with = "humantime_serde")]
    pub catch_up_timeout: Duration,
    /// The stream keeps commands this long: a POP away for longer cannot replay what it
    /// missed, and marks its whole cache stale instead.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// And at most this many commands (the oldest go first), with the same consequence.
    pub max_messages: i64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            nats: Vec::new(),
            stream: "QUICDN_CONTROL".into(),
            subject: "quicdn.control".into(),
            replicas: 1,
            pops: Vec::new(),
            catch_up_timeout: Duration::from_secs(5),
            // A day covers a POP down overnight; longer outages start over with a stale
            // cache, which costs revalidations, not correctness.
            max_age: Duration::from_secs(24 * 3600),
            // A day of purges at about one per second, with room for bursts.
            max_messages: 1_000_000,
        }
    }
}

impl ControlConfig {
    /// Whether a bus is configured.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// The subject commands are published on.
    pub fn command_subject(&self) -> String {
        format!("{}.cmd", self.subject)
    }

    /// The subject purges' fast path uses: plain NATS, outside the stream's subjects.
    pub fn fast_subject(&self) -> String {
        format!("{}.fast", self.subject)
    }

    /// The subject `pop` acknowledges on.
    pub fn ack_subject(&self, pop: &str) -> String {
        format!("{}.ack.{pop}", self.subject)
    }

    /// The POPs a `wait` waits for, for an edge named `pop`.
    pub fn expected_pops(&self, pop: &str) -> Vec<String> {
        match self.pops.is_empty() {
            true => vec![pop.to_owned()],
            false => self.pops.clone(),
        }
    }

    /// The rules the types cannot express, each error naming its key. `pop` is the edge's
    /// `name`: with a bus it is a subject token and the durable consumer's name.
    pub(crate) fn check(&self, pop: &str) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if !is_token(pop) {
            return Err(format!(
                "name {pop:?}: with [control] it names this POP on the bus, so only letters, digits, '-' and '_'"
            ));
        }
        for (i, url) in self.nats.iter().enumerate() {
            if let Err(e) = async_nats::ServerAddr::from_str(url) {
                return Err(format!("control.nats[{i}] {url:?}: {e}"));
            }
        }
        if !is_token(&self.stream) {
            return Err(format!(
                "control.stream {:?}: only letters, digits, '-' and '_'",
                self.stream
            ));
        }
        if self.subject.is_empty() || !self.subject.split('.').all(is_token) {
            return Err(format!(
                "control.subject {:?}: dot-separated tokens of letters, digits, '-' and '_' (no wildcards)",
                self.subject
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err("control.replicas must be between 1 and 5 (JetStream's limits)".into());
        }
        if let Some(bad) = self.pops.iter().find(|p| !is_token(p)) {
            return Err(format!(
                "control.pops: {bad:?} is not a POP name (letters, digits, '-' and '_')"
            ));
        }
        if self.catch_up_timeout.is_zero() {
            return Err("control.catch_up_timeout must be more than 0".into());
        }
        if self.max_age.is_zero() {
            return Err("control.max_age must be more than 0".into());
        }
        if self.max_messages < 1 {
            return Err("control.max_messages must be at least 1".into());
        }
        Ok(())
    }
}

/// A NATS subject token and a JetStream name at once.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bus() -> ControlConfig {
        ControlConfig {
            nats: vec!["nats://127.0.0.1:4222".into()],
            ..ControlConfig::default()
        }
    }

    #[test]
    fn without_servers_nothing_is_checked() {
        let c = ControlConfig {
            stream: "bad.name".into(),
            ..ControlConfig::default()
        };
        assert!(!c.enabled());
        assert_eq!(c.check("any name at all"), Ok(()));
    }

    #[test]
    fn each_bad_key_is_named() {
        assert_eq!(with_bus().check("us-east"), Ok(()));
        type Tweak = fn(&mut ControlConfig);
        let cases: [(Tweak, &str); 7] = [
            (|c| c.nats.push("nats://[::1".into()), "control.nats[1]"),
            (|c| c.stream = "A.B".into(), "control.stream"),
            (|c| c.subject = "quicdn.*".into(), "control.subject"),
            (|c| c.replicas = 0, "control.replicas"),
            (|c| c.pops = vec!["eu central".into()], "control.pops"),
            (
                |c| c.catch_up_timeout = Duration::ZERO,
                "control.catch_up_timeout",
            ),
            (|c| c.max_messages = 0, "control.max_messages"),
        ];
        for (tweak, key) in cases {
            let mut c = with_bus();
            tweak(&mut c);
            let err = c.check("us-east").unwrap_err();
            assert!(err.starts_with(key), "{key}: {err}");
        }
        let err = with_bus().check("us.east").unwrap_err();
        assert!(err.starts_with("name \"us.east\""), "{err}");
    }

    #[test]
    fn wait_defaults_to_this_pop() {
        let mut c = with_bus();
        assert_eq!(c.expected_pops("us-east"), ["us-east"]);
        c.pops = vec!["a".into(), "b".into()];
        assert_eq!(c.expected_pops("us-east"), ["a", "b"]);
        assert_eq!(c.ack_subject("a"), "quicdn.control.ack.a");
        assert_eq!(c.command_subject(), "quicdn.control.cmd");
    }
}
