//! The real `edge` binary as a child process: its config written into the work dir, its
//! ports read from the `listening` lines it logs at startup, killed and restarted on the same
//! cache dir and ports on demand.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How the edge is set up.
#[derive(Debug, Clone)]
pub struct EdgeSetup {
    pub bin: PathBuf,
    /// Work dir: config, log and `cache/` go here.
    pub dir: PathBuf,
    pub origin: SocketAddr,
    pub slice_size: u64,
    pub disk_budget: u64,
    /// `scheme = "shared"` in the site, so http and https clients share entries.
    pub shared_scheme: bool,
    /// Extra TOML appended to the config (top-level tables, e.g. `[cache]` keys are not
    /// allowed twice, so this is for tables the checker does not write).
    pub extra_toml: String,
    /// The edge's log filter (`RUST_LOG`).
    pub log_filter: String,
}

/// The ports of a running edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

/// Counts of the edge's log lines, across restarts.
#[derive(Debug, Default)]
pub struct LogStats {
    pub warn: AtomicU64,
    pub error: AtomicU64,
    /// The first few WARN/ERROR lines.
    pub samples: Mutex<Vec<String>>,
    /// WARN/ERROR lines by level, target and message (the words before the first field).
    pub groups: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// `WARN edge::cache: sliced object unavailable` from a text log line.
fn group_of(line: &str) -> String {
    let mut words = line
        .split_whitespace()
        .skip_while(|w| *w != "WARN" && *w != "ERROR");
    let mut out: Vec<&str> = words.next().into_iter().collect();
    out.extend(words.take_while(|w| !w.contains('=')));
    out.join(" ")
}

pub struct EdgeProcess {
    setup: EdgeSetup,
    child: Option<Child>,
    pub ports: Option<Ports>,
    pub log: Arc<LogStats>,
    pub starts: u32,
}

impl EdgeProcess {
    pub fn new(setup: EdgeSetup) -> Self {
        Self {
            setup,
            child: None,
            ports: None,
            log: Arc::default(),
            starts: 0,
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.setup.dir.join("cache")
    }

    /// The development certificate the edge writes (and reuses after a restart).
    pub fn dev_cert(&self) -> PathBuf {
        self.cache_dir().join("tls").join("dev-cert.pem")
    }

    pub fn log_path(&self) -> PathBuf {
        self.setup.dir.join("edge.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The running edge's `(VmRSS, VmHWM)` in KiB, from /proc (Linux).
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn config_text(&self, ports: Option<Ports>) -> String {
        let s = &self.setup;
        let addr =
            |a: Option<SocketAddr>| a.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut text = format!(
            r#"# Written by the checker (bench/checker).
name = "checker"

[listen]
https = "{https}"
http = "{http}"
admin = "{admin}"
shutdown_grace = "2s"

[quic]
enabled = false

[cache]
dir = {cache:?}
disk_budget = "{disk} B"
slice_size = "{slice} B"

[log]
filter = {filter:?}
access_log = false

[[site]]
hosts = ["*"]
origin = "http://{origin}"
"#,
            https = addr(ports.map(|p| p.https)),
            http = addr(ports.map(|p| p.http)),
            admin = addr(ports.map(|p| p.admin)),
            cache = self.cache_dir().display().to_string(),
            disk = s.disk_budget,
            slice = s.slice_size,
            filter = s.log_filter,
            origin = s.origin,
        );
        if s.shared_scheme {
            text.push_str("scheme = \"shared\"\n");
        }
        if !s.extra_toml.is_empty() {
            text.push('\n');
            text.push_str(&s.extra_toml);
            text.push('\n');
        }
        text
    }

    /// Starts the edge: on ports the kernel picks the first time, on the same ports after.
    pub async fn start(&mut self) -> anyhow::Result<Ports> {
        anyhow::ensure!(self.child.is_none(), "the edge is already running");
        let config = self.setup.dir.join("edge.toml");
        std::fs::write(&config, self.config_text(self.ports))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut child = Command::new(&self.setup.bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", &self.setup.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.setup.bin.display()))?;
        self.starts += 1;
        let stderr = child.stderr.take().context("the edge's stderr")?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log_path = self.log_path();
        let stats = self.log.clone();
        let start_no = self.starts;
        tokio::spawn(async move {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .ok();
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "---- checker: edge start #{start_no} ----");
            }
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // Cache keys hold NUL and other separators.
                let line: String = line
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let level = if line.contains(" ERROR ") {
                    Some(&stats.error)
                } else if line.contains(" WARN ") {
                    Some(&stats.warn)
                } else {
                    None
                };
                if let Some(counter) = level {
                    // The development-certificate warning is expected on every start.
                    if !line.contains("development certificate") {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let mut samples = stats.samples.lock().unwrap_or_else(|p| p.into_inner());
                        // Up to five of each level.
                        let error = line.contains(" ERROR ");
                        let same = samples
                            .iter()
                            .filter(|l| l.contains(" ERROR ") == error)
                            .count();
                        if same < 5 {
                            samples.push(line.clone());
                        }
                        drop(samples);
                        *stats
                            .groups
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(group_of(&line))
                            .or_default() += 1;
                    }
                }
                let _ = tx.send(line);
            }
        });
        let mut addrs = HashMap::new();
        let mut recent = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !["https", "http", "admin"]
            .iter()
            .all(|k| addrs.contains_key(*k))
        {
            let line = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    let status = child.wait().await.ok();
                    bail!(
                        "the edge exited before listening ({status:?}); its last lines:\n{}",
                        recent.join("\n")
                    );
                }
                Err(_) => {
                    let _ = child.kill().await;
                    bail!(
                        "the edge printed no listening lines within 30 s; its last lines:\n{}",
                        recent.join("\n")
                    );
                }
            };
            if let Some((name, addr)) = parse_listening(&line) {
                addrs.insert(name, addr);
            }
            recent.push(line);
            if recent.len() > 20 {
                recent.remove(0);
            }
        }
        let ports = Ports {
            https: addrs["https"],
            http: addrs["http"],
            admin: addrs["admin"],
        };
        // Later log lines are only counted and written to the file.
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        self.child = Some(child);
        self.ports = Some(ports);
        Ok(ports)
    }

    /// `kill -9` (our own child, by its handle) and reap it.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL. Returns whether it exited
    /// cleanly (status 0) on SIGTERM.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Some(pid) = child.id().and_then(rustix_pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
                return status.success();
            }
        }
        let _ = child.kill().await;
        false
    }
}

fn rustix_pid(pid: u32) -> Option<rustix::process::Pid> {
    rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Parses `... listening listener=https addr=127.0.0.1:1234`.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    if !line.contains("listening") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let name = field("listener=")?;
    let addr = field("addr=")?.parse().ok()?;
    Some((name, addr))
}

/// The edge binary to use: `explicit` if given, else `target/release/edge` under the current
/// directory, else an `edge` next to this executable (the same target dir's profile).
pub fn find_edge_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--edge-bin {}: no such file", p.display());
        return Ok(p.to_owned());
    }
    let mut tried = Vec::new();
    let mut candidates = vec![PathBuf::from("target/release/edge")];
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("edge"));
        // Test binaries live one level down, in deps/.
        if let Some(up) = dir.parent() {
            candidates.push(up.join("edge"));
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    bail!(
        "no edge binary found (tried {}): build it with `cargo build --release -p edge` or pass --edge-bin",
        tried.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        let line = "2026-12-03T10:00:00Z  INFO edge::server: listening listener=\"https\" addr=127.0.0.1:40000";
        assert_eq!(
            parse_listening(line),
            Some(("https".into(), "127.0.0.1:40000".parse().unwrap()))
        );
        assert_eq!(parse_listening("INFO listening soon"), None);
    }

    #[test]
    fn log_groups() {
        let line = "2026-12-03T12:38:04.472342Z  WARN edge::cache: sliced object unavailable key=http://localhost/obj/17-large.bin  error=x";
        assert_eq!(
            group_of(line),
            "WARN edge::cache: sliced object unavailable"
        );
    }
}
