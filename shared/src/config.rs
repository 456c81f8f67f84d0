//! Loading TOML configuration files.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that could not be used; the message names the file and, where TOML knows it,
/// the line and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Reads and parses `path` as `T`. Unknown keys are errors when `T` says
/// `deny_unknown_fields`, which every quicdn config type does.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses TOML text as `T`; the error is TOML's own message, which quotes the offending line.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// Renders a config back to TOML, for `--print-config`.
pub fn render<T: serde::Serialize>(config: &T) -> Result<String, ConfigError> {
    toml::to_string_pretty(config).map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = parse::<Sample>("name = 'a'\ncolour = 'blue'\n").unwrap_err();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "name = 3").unwrap();
        let err = load::<Sample>(&path).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("name"), "{err}");
        let missing = load::<Sample>(&dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }

    #[test]
    fn render_round_trips() {
        let s = Sample { name: "a".into() };
        assert_eq!(parse::<Sample>(&render(&s).unwrap()).unwrap(), s);
    }
}
