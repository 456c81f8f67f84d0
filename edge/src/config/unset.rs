//! Optional keys as `--print-config` writes them. TOML has no null, and a key left out of the
//! printed config would hide that it exists; so an unset key is written as a word that none
//! of its values can be, and that word reads back as unset:
//!
//! - `"none"`: nothing of the kind applies (a TTL rule, health probes);
//! - `"inherit"`: the value comes from another key or from the request (an origin's timeouts
//!   from `[origin]`, its `Host` from its URL, the redirect port from `listen.https`);
//! - `"auto"`: the value is derived (an error page's content type from its file name).
//!
//! Use: `#[serde(default, with = "crate::config::unset::none")]` on an `Option` of a
//! [`Value`] type.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// A type an optional key can hold, and how TOML writes it.
pub(crate) trait Value: Sized {
    /// For errors: "a duration like \"30s\"".
    const EXPECTING: &'static str;

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;

    fn from_text(text: &str) -> Result<Self, String> {
        Err(format!("{text:?}"))
    }

    fn from_integer(n: i64) -> Result<Self, String> {
        Err(n.to_string())
    }
}

impl Value for Duration {
    const EXPECTING: &'static str = "a duration like \"30s\"";

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*self))
    }

    fn from_text(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
    }
}

impl Value for String {
    const EXPECTING: &'static str = "a string";

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl Value for std::path::PathBuf {
    const EXPECTING: &'static str = "a file path";

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.display())
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(Self::from(text))
    }
}

impl Value for u16 {
    const EXPECTING: &'static str = "a port number";

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(*self)
    }

    fn from_integer(n: i64) -> Result<Self, String> {
        Self::try_from(n).map_err(|_| format!("{n} is out of range"))
    }
}

impl Value for std::net::SocketAddr {
    const EXPECTING: &'static str = "an address like \"0.0.0.0:8443\"";

    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e| format!("{text:?}: {e}"))
    }
}

fn write<V: Value, S: Serializer>(value: &Option<V>, word: &str, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => v.write(s),
        None => s.serialize_str(word),
    }
}

fn read<'de, V: Value, D: Deserializer<'de>>(
    d: D,
    word: &'static str,
) -> Result<Option<V>, D::Error> {
    d.deserialize_any(Read {
        word,
        value: PhantomData,
    })
}

struct Read<V> {
    word: &'static str,
    value: PhantomData<V>,
}

impl<V: Value> Read<V> {
    fn bad<E: de::Error>(&self, what: String) -> E {
        E::custom(format!(
            "{what}: expected {} or {:?} (unset)",
            V::EXPECTING,
            self.word
        ))
    }
}

impl<V: Value> Visitor<'_> for Read<V> {
    type Value = Option<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or {:?} (unset)", V::EXPECTING, self.word)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        if text == self.word {
            return Ok(None);
        }
        V::from_text(text).map(Some).map_err(|e| self.bad(e))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        V::from_integer(n).map(Some).map_err(|e| self.bad(e))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        match i64::try_from(n) {
            Ok(n) => self.visit_i64(n),
            Err(_) => Err(self.bad(n.to_string())),
        }
    }
}

/// A module for `#[serde(with = ...)]` that writes unset as `$word`.
macro_rules! word {
    ($(#[$doc:meta])* $name:ident = $word:literal) => {
        $(#[$doc])*
        pub(crate) mod $name {
            use super::Value;

            pub(crate) fn serialize<V: Value, S: serde::Serializer>(
                value: &Option<V>,
                s: S,
            ) -> Result<S::Ok, S::Error> {
                super::write(value, $word, s)
            }

            pub(crate) fn deserialize<'de, V: Value, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Option<V>, D::Error> {
                super::read(d, $word)
            }
        }
    };
}

word!(
    /// Unset is `"none"`: nothing of the kind applies.
    none = "none"
);
word!(
    /// Unset is `"inherit"`: the value comes from another key or the request.
    inherit = "inherit"
);
word!(
    /// Unset is `"auto"`: the value is derived.
    auto = "auto"
);

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        #[serde(with = "none")]
        ttl: Option<Duration>,
        #[serde(with = "inherit")]
        port: Option<u16>,
        #[serde(with = "auto")]
        kind: Option<String>,
    }

    #[test]
    fn unset_keys_are_printed_as_their_word_and_read_back_unset() {
        let text = shared::config::render(&Sample::default()).unwrap();
        assert_eq!(
            text,
            "ttl = \"none\"\nport = \"inherit\"\nkind = \"auto\"\n"
        );
        assert_eq!(
            shared::config::parse::<Sample>(&text).unwrap(),
            Sample::default()
        );
        let set = Sample {
            ttl: Some(Duration::from_secs(90)),
            port: Some(8443),
            kind: Some("text/html".into()),
        };
        let text = shared::config::render(&set).unwrap();
        assert_eq!(
            text,
            "ttl = \"1m 30s\"\nport = 8443\nkind = \"text/html\"\n"
        );
        assert_eq!(shared::config::parse::<Sample>(&text).unwrap(), set);
        // Left out is unset too.
        assert_eq!(
            shared::config::parse::<Sample>("").unwrap(),
            Sample::default()
        );
    }

    #[test]
    fn a_bad_value_names_what_was_expected() {
        for (text, want) in [
            ("ttl = \"soon\"", "a duration like \"30s\" or \"none\""),
            ("ttl = 5", "a duration like \"30s\" or \"none\""),
            ("port = 70000", "70000 is out of range"),
            ("port = \"none\"", "a port number or \"inherit\""),
            ("kind = 3", "a string or \"auto\""),
        ] {
            let err = shared::config::parse::<Sample>(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
