//! The processes the testnet starts, its state file, and running code inside a namespace.
//!
//! Daemons are started with `ip netns exec NS program ...` (ip execs the program, so the PID we
//! record is the program's). Every PID goes into the state file as soon as it exists, so
//! `down` can stop it even after `up` or `run` crashed. Before a signal is sent, the PID's
//! command line is checked against what we started: a recycled PID is never signalled.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

use crate::config::TestnetConfig;

/// What `up` made, for `run`, `status` and `down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub config: TestnetConfig,
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub processes: Vec<Proc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Proc {
    /// e.g. "emulator", "origin", "geodns", "edge us-east", "unbound us-east".
    pub role: String,
    pub ns: String,
    pub pid: u32,
    pub argv: Vec<String>,
    pub log: PathBuf,
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl State {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = state_path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no testnet state at {} (is the testnet up?)",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("corrupt state file {}", path.display()))
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a state file.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = state_path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Starts `argv` inside `ns`, logs to DIR/logs/ROLE.log, records it and saves the state.
    pub fn spawn(&mut self, role: &str, ns: &str, argv: Vec<String>) -> anyhow::Result<u32> {
        let logs = self.dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}.log", role.replace(' ', "-")));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a Ctrl-C meant for `testnet up` does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {role} ({})", argv.join(" ")))?;
        let pid = child.id();
        self.processes.retain(|p| p.role != role);
        self.processes.push(Proc {
            role: role.into(),
            ns: ns.into(),
            pid,
            argv,
            log,
        });
        self.save()?;
        Ok(pid)
    }

    pub fn process(&self, role: &str) -> Option<&Proc> {
        self.processes.iter().find(|p| p.role == role)
    }
}

impl Proc {
    /// Alive and still the program we started (not a recycled PID, not a zombie).
    pub fn is_running(&self) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // Until ip has entered the namespace and exec'd, the process is still `ip netns exec`.
        let wrapped = [&b"ip"[..], b"netns", b"exec", self.ns.as_bytes()];
        let program = match args.strip_prefix(&wrapped[..]) {
            Some(rest) => rest.first(),
            None => args.first(),
        };
        program.copied() == self.argv.first().map(|a| a.as_bytes()) && pid_alive(self.pid)
    }

    /// The PID exists and is not a zombie. Unlike [`Self::is_running`] this holds during
    /// start-up, while the forked child is still becoming `ip` and then the program.
    pub fn is_alive(&self) -> bool {
        pid_alive(self.pid)
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub fn stop(&self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        signal(self.pid, Signal::TERM);
        if wait_gone(self, grace) {
            return;
        }
        signal(self.pid, Signal::KILL);
        wait_gone(self, Duration::from_secs(2));
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn wait_gone(p: &Proc, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !p.is_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !p.is_running()
}

/// The PID exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Signals a PID that we know belongs to us (checked by the caller).
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Runs `f` on a new thread that has entered namespace `ns`; sockets it opens live there.
pub fn in_ns<T, F>(ns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("no namespace {ns} ({path})"))?;
    let thread = std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            Ok::<_, std::io::Error>(f())
        })?;
    match thread.join() {
        Ok(r) => r.with_context(|| format!("cannot enter namespace {ns}")),
        Err(_) => bail!("a task inside namespace {ns} panicked"),
    }
}

/// Waits until a TCP listener accepts at `addr`, seen from inside `ns`, or `p` dies.
pub fn wait_tcp(
    ns: &str,
    addr: std::net::SocketAddr,
    p: &Proc,
    limit: Duration,
) -> anyhow::Result<()> {
    let ns = ns.to_owned();
    p.wait_ready(limit, &format!("listen on {addr}"), || {
        let ns = ns.clone();
        in_ns(&ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })
    })
}

impl Proc {
    /// Polls `ready` until it holds; fails with the log's tail if the process dies or `limit`
    /// passes first.
    pub fn wait_ready(
        &self,
        limit: Duration,
        what: &str,
        mut ready: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while !ready()? {
            if !self.is_alive() {
                let log = self.log_tail(15);
                bail!("{} exited during start-up; its log ends:\n{log}", self.role);
            }
            if start.elapsed() > limit {
                let log = self.log_tail(15);
                bail!(
                    "{} did not {what} within {limit:?}; its log ends:\n{log}",
                    self.role
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}
