//! A real `nats-server` with JetStream for the control-plane tests: one node, or a cluster
//! of three on loopback. Each node gets its own store in a temp dir and an ephemeral client
//! port (read from its log), and is killed by its PID on drop.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One `nats-server` process.
pub struct NatsServer {
    child: Option<Child>,
    url: String,
    name: String,
    log: mpsc::Receiver<String>,
}

impl NatsServer {
    /// A single node with JetStream.
    pub fn start(dir: &Path) -> Self {
        Self::spawn(dir, "n1", None, None)
    }

    /// A single node on client port `port` (to start one where an edge is already trying
    /// to connect), its store under `dir`.
    pub fn start_on(dir: &Path, port: u16) -> Self {
        Self::spawn(dir, "n1", Some(port), None)
    }

    /// `nats-server -c <conf>` for node `name` (its store under `dir`) on client port `port`
    /// (`None`: any), in `cluster` if any: (this node's route port, every node's route port).
    fn spawn(dir: &Path, name: &str, port: Option<u16>, cluster: Option<(u16, &[u16])>) -> Self {
        let store = dir.join(name);
        std::fs::create_dir_all(&store).unwrap();
        // Small limits: the default takes most of the machine's memory and disk as its
        // ceiling, and a test stream holds a few kilobytes.
        let mut conf = format!(
            "server_name: {name}\nhost: 127.0.0.1\nport: {}\n\
             jetstream {{ store_dir: {store:?}, max_memory_store: 64MB, max_file_store: 256MB }}\n",
            port.map_or(-1, i32::from)
        );
        if let Some((port, ports)) = cluster {
            let routes: Vec<String> = ports
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            conf += &format!(
                "cluster {{ name: quicdn-test, host: 127.0.0.1, port: {port}, routes: [{}] }}\n",
                routes.join(", ")
            );
        }
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server ({}) does not start: {e}", binary()));
        let stderr = child.stderr.take().unwrap();
        let log = super::lines_of(stderr);
        let mut server = Self {
            child: Some(child),
            url: String::new(),
            name: name.to_owned(),
            log,
        };
        let listening = server.wait_for("Listening for client connections on ");
        let addr = listening
            .rsplit_once("connections on ")
            .map(|(_, a)| a.trim().to_owned())
            .unwrap();
        server.url = format!("nats://{addr}");
        server.wait_for("Server is ready");
        server
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits (at most 20 s) for a log line containing `text`; the line.
    pub fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "nats-server {}: no {text:?} in its log within 20 s",
                    self.name
                ),
            }
        }
    }

    /// Kills the process (SIGKILL, by its PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three clustered nodes with JetStream (so streams of 3 replicas), on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(dir: &Path) -> Self {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes: Vec<NatsServer> = (0..3)
            .map(|i| NatsServer::spawn(dir, &format!("n{}", i + 1), None, Some((ports[i], &ports))))
            .collect();
        // JetStream answers once the nodes have elected a meta leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        let elected = |node: &NatsServer| {
            std::iter::from_fn(|| node.log.try_recv().ok()).any(|l| l.contains("metadata leader"))
        };
        while !nodes.iter().any(elected) {
            assert!(
                Instant::now() < deadline,
                "the NATS cluster elected no JetStream meta leader within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_owned()).collect()
    }
}

/// A port free now (for route ports, which every node must know before any starts).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server binary: `NATS_SERVER` if set, else `nats-server` on the PATH (Debian's
/// package puts it in /usr/sbin).
fn binary() -> String {
    if let Ok(path) = std::env::var("NATS_SERVER") {
        return path;
    }
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let path = format!("{dir}/nats-server");
        if Path::new(&path).exists() {
            return path;
        }
    }
    "nats-server".into()
}
