//! The WAN emulator between two real network namespaces: delay (ping RTT), loss (some pings
//! lost), rate (TCP throughput) and error reporting. Needs root; without it the tests say so
//! and pass, unless `CI` is set, where they fail.
//!
//! Each test makes its own namespaces `emu-<pid>-<n>-{a,b}` (10.77.1.1/24 and 10.77.2.1/24,
//! each with a `wan0` port) and deletes them on drop, failure included.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use testnet::emulator::{EmulatorSpec, LinkParams, LinkRule, PortSpec, Report, run_report};

const ADDR_A: &str = "10.77.1.1";
const ADDR_B: &str = "10.77.2.1";

#[test]
fn delay_sets_ping_rtt() {
    if !root() {
        return;
    }
    let net = TwoSites::new();
    let emulator = net.start(link(20, 0.0, None), link(20, 0.0, None));
    let out = net.a.ping(ADDR_B, 5, "0.2");
    let (min, avg) = rtt(&out);
    eprintln!("20 ms each way: rtt min {min} ms, avg {avg} ms");
    assert!(min >= 40.0, "min RTT {min} ms < 40 ms\n{out}");
    assert!(avg < 60.0, "avg RTT {avg} ms >= 60 ms\n{out}");
    let report = emulator.stop();
    let a = &report.ports[0].counters;
    assert!(a.sent >= 5 && a.dropped_loss == 0, "{report:?}");
}

#[test]
fn loss_drops_some_pings() {
    if !root() {
        return;
    }
    let net = TwoSites::new();
    let emulator = net.start(link(5, 0.3, None), link(5, 0.3, None));
    let out = net.a.ping(ADDR_B, 20, "0.05");
    let received = received(&out);
    // A round trip survives with 0.7² = 0.49: all or none of 20 is a ~1e-6 event.
    eprintln!("30% loss each way: {received}/20 pings answered");
    assert!((1..20).contains(&received), "{received}/20 answered\n{out}");
    let report = emulator.stop();
    let lost: u64 = report.ports.iter().map(|p| p.counters.dropped_loss).sum();
    // Every unanswered ping lost its request or its reply, never both.
    assert_eq!(lost, 20 - received as u64, "{report:?}");
}

#[test]
fn rate_limits_tcp_throughput() {
    if !root() {
        return;
    }
    const RATE: u64 = 8_000_000;
    const BYTES: usize = 2_000_000;
    let net = TwoSites::new();
    let emulator = net.start(link(5, 0.0, Some(RATE)), link(5, 0.0, None));
    let bps = tcp_throughput(&net, BYTES);
    eprintln!("8 Mbit/s link: TCP goodput {:.2} Mbit/s", bps / 1_000_000.0);
    let report = emulator.stop();
    eprintln!("{:?}", report.ports[0].counters);
    let ratio = bps / RATE as f64;
    assert!((0.75..=1.25).contains(&ratio), "goodput {bps} bit/s");
}

#[test]
fn existing_device_is_named() {
    if !root() {
        return;
    }
    let net = TwoSites::new();
    let _first = net.start(link(0, 0.0, None), link(0, 0.0, None));
    let spec = two_ports(&net, LinkParams::default(), LinkParams::default());
    let err = run_report(&spec, || panic!("ready twice"), async {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("wan0") && msg.contains(&net.a.name), "{msg}");
}

/// Whether the tests can run; panics under CI without root.
fn root() -> bool {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "the emulator tests need root (network namespaces and TUN devices); run them as root in CI"
        );
        eprintln!("skipped: the emulator tests need root (network namespaces and TUN devices)");
    }
    root
}

fn link(delay_ms: u64, loss: f64, rate_bps: Option<u64>) -> LinkParams {
    LinkParams {
        delay: Duration::from_millis(delay_ms),
        loss,
        rate_bps,
        queue_bytes: 64 * 1024,
    }
}

/// Namespaces `a` and `b`, deleted on drop.
struct TwoSites {
    a: Netns,
    b: Netns,
}

impl TwoSites {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("emu-{}-{n}", std::process::id());
        Self {
            a: Netns::new(format!("{prefix}-a")),
            b: Netns::new(format!("{prefix}-b")),
        }
    }

    /// Starts the emulator with `a_to_b` and `b_to_a` between the two.
    fn start(&self, a_to_b: LinkParams, b_to_a: LinkParams) -> Emulator {
        Emulator::start(two_ports(self, a_to_b, b_to_a), self)
    }
}

fn two_ports(net: &TwoSites, a_to_b: LinkParams, b_to_a: LinkParams) -> EmulatorSpec {
    let port = |netns: &Netns, site: &str, address: &str| PortSpec {
        netns: netns.name.clone(),
        ifname: "wan0".into(),
        site: site.into(),
        address: format!("{address}/24").parse().unwrap(),
        prefixes: vec![format!("{address}/24").parse().unwrap()],
    };
    let rule = |from: &str, to: &str, params| LinkRule {
        from: from.into(),
        to: to.into(),
        params,
    };
    EmulatorSpec {
        ports: vec![port(&net.a, "a", ADDR_A), port(&net.b, "b", ADDR_B)],
        links: vec![rule("a", "b", a_to_b), rule("b", "a", b_to_a)],
    }
}

struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn ping(&self, dst: &str, count: u32, interval: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-n", "-q"])
            .args(["-c", &count.to_string(), "-i", interval, "-W", "2", dst])
            .output()
            .expect("run ping (apt install iputils-ping)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("could not delete namespace {}", self.name);
        }
    }
}

/// Moves the calling thread into namespace `name` for good.
fn enter_netns(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("open netns");
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).expect("setns");
}

fn ip(args: &[&str]) {
    let out: Output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The emulator on its own thread; stopped (and its devices gone) on drop.
struct Emulator {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<Report>>>,
}

impl Emulator {
    /// Starts it and routes each namespace's 10.77/16 into its port.
    fn start(spec: EmulatorSpec, net: &TwoSites) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            run_report(&spec, move || ready_tx.send(()).unwrap(), async move {
                let _ = stop_rx.await;
            })
        });
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let result = thread.join().expect("emulator thread panicked");
            panic!("emulator did not start: {:?}", result.map(drop));
        }
        for netns in [&net.a, &net.b] {
            netns.ip(&["route", "add", "10.77.0.0/16", "dev", "wan0"]);
        }
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Report {
        self.shutdown().expect("emulator failed")
    }

    fn shutdown(&mut self) -> anyhow::Result<Report> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take().expect("stopped twice");
        thread.join().expect("emulator thread panicked")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// `(min, avg)` from ping's `rtt min/avg/max/mdev = a/b/c/d ms` line.
fn rtt(out: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|line| line.starts_with("rtt"))
        .unwrap_or_else(|| panic!("no rtt line in ping output:\n{out}"));
    let values = line.split('=').nth(1).expect("rtt values").trim();
    let mut numbers = values
        .trim_end_matches(" ms")
        .split('/')
        .map(|n| n.parse::<f64>().expect("rtt number"));
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// N from ping's `M packets transmitted, N received, ...`.
fn received(out: &str) -> usize {
    let line = out
        .lines()
        .find(|line| line.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary in ping output:\n{out}"));
    line.split(", ")
        .nth(1)
        .and_then(|part| part.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad summary: {line}"))
}

/// Sends `bytes` over TCP from namespace a to b; bits per second seen by the receiver from
/// its first byte to the end of the stream.
fn tcp_throughput(net: &TwoSites, bytes: usize) -> f64 {
    let addr: SocketAddr = format!("{ADDR_B}:5201").parse().unwrap();
    let (bound_tx, bound_rx) = mpsc::channel();
    let b = net.b.name.clone();
    let server = std::thread::spawn(move || {
        enter_netns(&b);
        let listener = TcpListener::bind(addr).expect("bind in b");
        bound_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        let mut first = None;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n;
        }
        (total, first.expect("no data").elapsed())
    });
    bound_rx.recv().expect("server did not bind");
    let a = net.a.name.clone();
    let client = std::thread::spawn(move || {
        enter_netns(&a);
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.write_all(&vec![7; bytes]).expect("write");
        stream.shutdown(Shutdown::Write).expect("shutdown");
    });
    client.join().expect("client panicked");
    let (total, elapsed) = server.join().expect("server panicked");
    assert_eq!(total, bytes);
    total as f64 * 8.0 / elapsed.as_secs_f64()
}
