//! Development CA and leaf certificates for quicdn.
//!
//! One development CA lives in a directory ([`DEFAULT_DIR`], `certs/out`): `ca.pem` and
//! `ca-key.pem`. [`Ca::issue`] signs leaf certificates with it and writes `NAME.pem` (the leaf,
//! then the CA: a full chain for the edge's `tls.cert`) and `NAME-key.pem`. Trust `ca.pem` once
//! (curl `--cacert`, a browser's authorities, Debian's `update-ca-certificates`, geodns'
//! `health.ca_file`, `shared::tls::client_config`) and every leaf it issues is trusted, even
//! after re-issuing.
//!
//! This is deliberately not a CA for production: no revocation, no ACME, no name
//! constraints. The certificates themselves are made by [`shared::tls::DevCa`]; this crate
//! keeps them on disk (private keys mode 0600, files replaced atomically) and checks leaf
//! names and subject alternative names before anything is written.
//!
//! Main types: [`Ca`], [`Leaf`], [`CertsError`].

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use shared::tls::{DevCa, TlsError};

/// Where the `certs` tool keeps the CA and the leaves, relative to the repository root.
pub const DEFAULT_DIR: &str = "certs/out";

/// Subject common name of a CA made by [`Ca::load_or_create`]: how it shows in trust stores.
pub const CA_NAME: &str = "quicdn development CA";

/// The leaves the `certs` tool issues when none is asked for: (name, subject alternative names).
pub const DEFAULT_LEAVES: &[(&str, &[&str])] = &[
    ("localhost", &["localhost", "127.0.0.1", "::1"]),
    (
        "testnet",
        &[
            "cdn.quicdn.test",
            "*.cdn.quicdn.test",
            "*.quicdn.test",
            "localhost",
            "127.0.0.1",
        ],
    ),
];

/// File modes: certificates are public, private keys are for their owner only.
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

/// Why a CA or a leaf could not be loaded, made or written. Every message names the file or
/// the input at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertsError {
    #[error(
        "{present} exists but {missing} does not: restore {missing}, or remove {present} to \
         make a new CA (clients then have to trust the new one)"
    )]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot check whether {path} exists: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Loading or generating the CA, or signing a leaf (file errors name the file).
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "invalid leaf name {name:?}: use a simple file stem of a-z, 0-9, '.', '_' and '-' \
         (not \"ca\", not ending in \"-key\")"
    )]
    InvalidName { name: String },
    #[error("leaf {name:?}: no subject alternative names given")]
    NoSans { name: String },
    #[error("leaf {name:?}: {san:?} is neither an IP address nor a valid DNS name: {reason}")]
    InvalidSan {
        name: String,
        san: String,
        reason: &'static str,
    },
}

/// The development CA of a directory.
pub struct Ca {
    ca: DevCa,
    dir: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
    created: bool,
}

/// A leaf's files, as written by [`Ca::issue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// `dir/NAME.pem`: the leaf certificate, then the CA certificate.
    pub cert: PathBuf,
    /// `dir/NAME-key.pem`: its PKCS#8 private key, mode 0600.
    pub key: PathBuf,
}

impl Ca {
    /// Loads dir/ca.pem + dir/ca-key.pem, or creates them (and dir) if neither exists.
    /// Only one of the two present, or unparsable -> error naming the file. Key file mode 0600.
    pub fn load_or_create(dir: &Path) -> Result<Self, CertsError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let (ca, created) = match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => (DevCa::from_pem_files(&cert_path, &key_path)?, false),
            (false, false) => {
                std::fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
                    path: dir.to_owned(),
                    source,
                })?;
                let ca = DevCa::generate(CA_NAME)?;
                // Key first: a crash between the two leaves a half CA, reported as such.
                write_file(&key_path, &ca.key_pem(), KEY_MODE)?;
                write_file(&cert_path, &ca.cert_pem(), CERT_MODE)?;
                (ca, true)
            }
            (present_cert, _) => {
                let (present, missing) = if present_cert {
                    (cert_path, key_path)
                } else {
                    (key_path, cert_path)
                };
                return Err(CertsError::HalfCa { present, missing });
            }
        };
        Ok(Self {
            ca,
            dir: dir.to_owned(),
            cert_path,
            key_path,
            created,
        })
    }

    /// dir/ca.pem
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// dir/ca-key.pem
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The directory of the CA and its leaves.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when [`load_or_create`](Self::load_or_create) made a new CA rather than loading one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The CA itself, to issue certificates in memory (tests, the testnet).
    pub fn dev_ca(&self) -> &DevCa {
        &self.ca
    }

    /// Issues a leaf for `sans` (DNS names, wildcards like *.cdn.quicdn.test, or IP addresses given
    /// as text) and writes dir/{name}.pem (leaf then CA: a full chain) and dir/{name}-key.pem (0600),
    /// replacing older ones. `name` must be a simple file stem ([a-z0-9._-]).
    pub fn issue(&self, name: &str, sans: &[String]) -> Result<Leaf, CertsError> {
        check_leaf_name(name)?;
        let sans = normalize_sans(name, sans)?;
        let material = self.ca.issue(&sans)?;
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        };
        write_file(&leaf.key, &material.key_pem(), KEY_MODE)?;
        write_file(&leaf.cert, &material.chain_pem(), CERT_MODE)?;
        Ok(leaf)
    }
}

impl std::fmt::Debug for Ca {
    // The key stays out of logs: paths only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Checks that `name` can be a leaf's file stem: `[a-z0-9._-]+`, not hidden, and not clashing
/// with the CA's files (`ca`) or another leaf's key (`*-key`).
pub fn check_leaf_name(name: &str) -> Result<(), CertsError> {
    let simple = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if simple && name != "ca" && !name.ends_with("-key") {
        Ok(())
    } else {
        Err(CertsError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Checks and normalizes a leaf's subject alternative names: IP addresses in their canonical
/// text (brackets around IPv6 allowed), DNS names lowercased without a trailing dot, a
/// wildcard only as the whole leftmost label; duplicates dropped.
pub fn normalize_sans(name: &str, sans: &[String]) -> Result<Vec<String>, CertsError> {
    let mut out: Vec<String> = Vec::new();
    for san in sans {
        let normalized = normalize_san(san).map_err(|reason| CertsError::InvalidSan {
            name: name.to_owned(),
            san: san.clone(),
            reason,
        })?;
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    if out.is_empty() {
        return Err(CertsError::NoSans {
            name: name.to_owned(),
        });
    }
    Ok(out)
}

fn normalize_san(san: &str) -> Result<String, &'static str> {
    let san = san.trim();
    let bare = san
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(san);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let dns = san.strip_suffix('.').unwrap_or(san).to_ascii_lowercase();
    if dns.is_empty() {
        return Err("it is empty");
    }
    if dns.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = dns.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" && i == 0 {
            if labels.len() < 3 {
                return Err("a wildcard needs at least two labels after it (*.example.com)");
            }
            continue;
        }
        if label.contains('*') {
            return Err("a wildcard must be the whole leftmost label (*.example.com)");
        }
        let valid = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err("labels are 1 to 63 letters, digits or inner hyphens");
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("it looks like an IP address but is not one");
    }
    Ok(dns)
}

fn exists(path: &Path) -> Result<bool, CertsError> {
    path.try_exists().map_err(|source| CertsError::Stat {
        path: path.to_owned(),
        source,
    })
}

/// Writes `path` through a temporary file in the same directory and a rename, so that readers
/// never see half a file and the mode is right from the first byte.
fn write_file(path: &Path, data: &str, mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let write = |file: &mut File| {
        // A leftover temporary file keeps its old mode through `open`: set it explicitly.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(data.as_bytes())?;
        file.sync_all()
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    if let Err(e) = write(&mut file).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_names_are_simple_file_stems() {
        for ok in ["localhost", "testnet", "edge-a", "a.b_c", "0"] {
            check_leaf_name(ok).unwrap();
        }
        for bad in [
            "", "ca", "x-key", "../x", "a/b", ".hidden", "Upper", "a b", "é",
        ] {
            assert!(check_leaf_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sans_are_normalized_or_rejected_with_a_reason() {
        let sans: Vec<String> = [
            "LocalHost.",
            "[::1]",
            "127.0.0.1",
            "*.cdn.quicdn.test",
            "localhost",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            normalize_sans("x", &sans).unwrap(),
            ["localhost", "::1", "127.0.0.1", "*.cdn.quicdn.test"]
        );
        for bad in [
            "",
            "*.test",
            "a.*.test",
            "w*.a.test",
            "-a.test",
            "a_b.test",
            "1.2.3.256",
        ] {
            let err = normalize_sans("x", &[bad.to_owned()]).unwrap_err();
            assert!(
                matches!(err, CertsError::InvalidSan { .. }),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            normalize_sans("x", &[]),
            Err(CertsError::NoSans { .. })
        ));
    }
}
