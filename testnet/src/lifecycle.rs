//! `up`, `status` and `down`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::config::TestnetConfig;
use crate::files;
use crate::nats;
use crate::netns;
use crate::plan::{NATS_CLIENT_PORT, Plan, TAGGED_ORIGIN_PORT};
use crate::procs::State;

/// Where `up` finds what it needs and puts what it makes.
#[derive(Debug, Clone)]
pub struct Paths {
    /// State, configs, logs and caches of this testnet.
    pub state_dir: PathBuf,
    /// Where `edge` and `geodns` are (default: next to this binary).
    pub bin_dir: PathBuf,
    /// The development CA and leaves (the `certs` tool's folder).
    pub certs_dir: PathBuf,
}

/// The default state folder for a prefix.
pub fn default_state_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/quicdn-testnet/{prefix}"))
}

/// Fails clearly when not root: namespaces, TUN devices and port 53/443 all need it.
pub fn require_root() -> anyhow::Result<()> {
    if !netns::is_root() {
        bail!(
            "the testnet must run as root (it creates network namespaces and TUN devices): try `sudo testnet ...`"
        );
    }
    Ok(())
}

pub fn up(config: &TestnetConfig, paths: &Paths) -> anyhow::Result<State> {
    require_root()?;
    config.validate()?;
    let left = netns::existing(&config.prefix)?;
    if !left.is_empty() {
        bail!(
            "namespaces of testnet {:?} already exist ({}): run `testnet down` first",
            config.prefix,
            left.join(", ")
        );
    }
    for (tool, hint) in [
        ("unbound", "unbound"),
        ("dig", "dnsutils"),
        ("ping", "iputils-ping"),
        ("nats-server", "nats-server"),
    ] {
        if which(tool).is_none() {
            bail!("{tool} is not installed (Debian package {hint})");
        }
    }
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = paths.bin_dir.join(name);
        if !p.is_file() {
            bail!(
                "{} not found: build it first (cargo build -p edge -p geodns) or pass --bin-dir",
                p.display()
            );
        }
        Ok(p)
    };
    let (edge, geodns) = (bin("edge")?, bin("geodns")?);
    let plan = Plan::new(config);
    if paths.state_dir.exists() {
        std::fs::remove_dir_all(&paths.state_dir)
            .with_context(|| format!("cannot clear {}", paths.state_dir.display()))?;
    }
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("cannot create {}", paths.state_dir.display()))?;
    let dir = std::fs::canonicalize(&paths.state_dir)?;
    let ca = certs::Ca::load_or_create(&paths.certs_dir)?;
    let mut state = State {
        config: config.clone(),
        dir: dir.clone(),
        ca: std::fs::canonicalize(ca.cert_path())?,
        processes: Vec::new(),
    };
    state.save()?;
    let result = start_all(&mut state, &plan, &ca, &edge, &geodns);
    if let Err(e) = result {
        // Leave nothing half-made behind.
        let _ = down(&config.prefix, &dir);
        return Err(e);
    }
    Ok(state)
}

fn start_all(
    state: &mut State,
    plan: &Plan,
    ca: &certs::Ca,
    edge: &Path,
    geodns: &Path,
) -> anyhow::Result<()> {
    let config = state.config.clone();
    let dir = state.dir.clone();
    netns::build(plan)?;
    let files = write_files(&config, plan, ca, &dir)?;
    check_configs(&files, edge, geodns)?;

    let me = std::env::current_exe().context("cannot find the testnet binary")?;
    let me = me.to_string_lossy().into_owned();
    let spec = dir.join("emulator.json");
    let ready = dir.join("emulator.ready");
    std::fs::write(
        &spec,
        serde_json::to_vec_pretty(&plan.emulator_spec(&config))?,
    )?;
    let argv = vec![
        me.clone(),
        "emulate".into(),
        path_arg(&spec),
        "--ready".into(),
        path_arg(&ready),
    ];
    state.spawn("emulator", &plan.emulator_ns, argv)?;
    let emulator = state.process("emulator").expect("just started");
    emulator.wait_ready(Duration::from_secs(10), "create its TUN devices", || {
        Ok(ready.exists())
    })?;

    netns::add_wan_routes(plan)?;

    let origin_addr = SocketAddr::from((plan.origin.addr, 80));
    let argv = vec![
        me,
        "origin".into(),
        "--listen".into(),
        origin_addr.to_string(),
        "--tagged".into(),
        SocketAddr::from((plan.origin.addr, TAGGED_ORIGIN_PORT)).to_string(),
    ];
    start(state, "origin", &plan.origin.ns, argv, origin_addr)?;
    start_bus(state, plan, &files)?;
    for (k, r) in plan.regions.iter().enumerate() {
        let argv = vec![path_arg(edge), "--config".into(), path_arg(&files.edges[k])];
        start(
            state,
            &edge_role(&r.name),
            &r.pop.ns,
            argv,
            SocketAddr::from((r.pop.addr, 443)),
        )?;
    }
    let pops: Vec<String> = plan
        .regions
        .iter()
        .map(|r| files::pop_name(&r.name))
        .collect();
    let edges: Vec<_> = state
        .processes
        .iter()
        .filter(|p| p.role.starts_with("edge "))
        .cloned()
        .collect();
    let took = nats::bus_ready(plan, &pops, &edges, Duration::from_secs(30))?;
    tracing::info!(?took, "every edge joined the bus");
    let argv = vec![path_arg(geodns), "--config".into(), path_arg(&files.geodns)];
    start(
        state,
        "geodns",
        &plan.dns.ns,
        argv,
        SocketAddr::from((plan.dns.addr, 53)),
    )?;
    for (k, r) in plan.regions.iter().enumerate() {
        let argv = vec![
            "unbound".into(),
            "-d".into(),
            "-c".into(),
            path_arg(&files.unbound[k]),
        ];
        let listen = SocketAddr::from((r.resolver.addr, 53));
        start(
            state,
            &format!("unbound {}", r.name),
            &r.resolver.ns,
            argv,
            listen,
        )?;
    }
    Ok(())
}

/// One nats-server per region, then the wait until they have clustered: the edges' bus needs
/// a JetStream meta leader to create its stream and consumers.
fn start_bus(state: &mut State, plan: &Plan, files: &Written) -> anyhow::Result<()> {
    for (k, r) in plan.regions.iter().enumerate() {
        let argv = vec!["nats-server".into(), "-c".into(), path_arg(&files.nats[k])];
        let listen = SocketAddr::from((r.nats.addr, NATS_CLIENT_PORT));
        start(state, &nats_role(&r.name), &r.nats.ns, argv, listen)?;
    }
    let procs: Vec<_> = plan
        .regions
        .iter()
        .filter_map(|r| state.process(&nats_role(&r.name)).cloned())
        .collect();
    let took = nats::cluster_ready(plan, &procs, Duration::from_secs(30))?;
    tracing::info!(?took, "NATS cluster formed");
    Ok(())
}

/// The state's role name of region `region`'s NATS server.
pub fn nats_role(region: &str) -> String {
    format!("nats {region}")
}

/// The state's role name of region `region`'s edge.
pub fn edge_role(region: &str) -> String {
    format!("edge {region}")
}

/// Starts a stopped NATS server again and waits until the cluster has formed around it.
pub fn restart_nats(state: &mut State, plan: &Plan, region: usize) -> anyhow::Result<Duration> {
    let r = &plan.regions[region];
    restart(
        state,
        &nats_role(&r.name),
        SocketAddr::from((r.nats.addr, NATS_CLIENT_PORT)),
    )?;
    let procs: Vec<_> = state
        .processes
        .iter()
        .filter(|p| p.role.starts_with("nats "))
        .cloned()
        .collect();
    nats::cluster_ready(plan, &procs, Duration::from_secs(30))
}

fn start(
    state: &mut State,
    role: &str,
    ns: &str,
    argv: Vec<String>,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    state.spawn(role, ns, argv)?;
    let p = state.process(role).expect("just started").clone();
    crate::procs::wait_tcp(ns, listen, &p, Duration::from_secs(20))
}

/// Restarts one recorded process with the same command line (scenario 4 brings a POP back).
pub fn restart(state: &mut State, role: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let p = state
        .process(role)
        .with_context(|| format!("no process {role} in the state"))?
        .clone();
    p.stop(Duration::from_secs(3));
    start(state, role, &p.ns, p.argv, listen)
}

struct Written {
    geodns: PathBuf,
    edges: Vec<PathBuf>,
    unbound: Vec<PathBuf>,
    nats: Vec<PathBuf>,
}

fn write_files(
    config: &TestnetConfig,
    plan: &Plan,
    ca: &certs::Ca,
    dir: &Path,
) -> anyhow::Result<Written> {
    let mmdb = dir.join("testnet-city.mmdb");
    files::write_mmdb(plan, &mmdb)?;
    let geodns = dir.join("geodns.toml");
    write(
        &geodns,
        &files::geodns_toml(config, plan, &mmdb, ca.cert_path()),
    )?;
    let (mut edges, mut unbound, mut nats) = (Vec::new(), Vec::new(), Vec::new());
    for (k, r) in plan.regions.iter().enumerate() {
        let sans = vec![
            config.cdn_name.clone(),
            format!("*.{}", config.cdn_name),
            format!("pop-{}.{}", r.name, config.cdn_name),
            r.pop.addr.to_string(),
        ];
        let leaf = ca.issue(&format!("testnet-pop-{}", r.name), &sans)?;
        let path = dir.join(format!("edge-{}.toml", r.name));
        write(
            &path,
            &files::edge_toml(config, plan, k, dir, &leaf.cert, &leaf.key),
        )?;
        edges.push(path);
        let path = dir.join(format!("unbound-{}.conf", r.name));
        write(&path, &files::unbound_conf(config, plan, k, dir))?;
        unbound.push(path);
        let path = dir.join(format!("nats-{}.conf", r.name));
        write(&path, &files::nats_conf(plan, k, dir))?;
        nats.push(path);
    }
    Ok(Written {
        geodns,
        edges,
        unbound,
        nats,
    })
}

/// Each binary checks its own config, so a renamed key fails here, not as a silent default.
fn check_configs(files: &Written, edge: &Path, geodns: &Path) -> anyhow::Result<()> {
    let mut checks: Vec<(String, Vec<String>)> = Vec::new();
    for f in &files.edges {
        checks.push((
            path_arg(edge),
            vec!["--config".into(), path_arg(f), "--check-config".into()],
        ));
    }
    checks.push((
        path_arg(geodns),
        vec![
            "--config".into(),
            path_arg(&files.geodns),
            "--check-config".into(),
        ],
    ));
    for f in &files.unbound {
        checks.push(("unbound-checkconf".into(), vec![path_arg(f)]));
    }
    for f in &files.nats {
        checks.push((
            "nats-server".into(),
            vec!["-t".into(), "-c".into(), path_arg(f)],
        ));
    }
    for (program, args) in checks {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netns::run(&program, &args)
            .context("a generated config does not pass its binary's check")?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Stops every process and removes every namespace of `prefix`; safe to repeat, and works
/// without a state file (after a crash) by asking each of our namespaces for its PIDs.
pub fn down(prefix: &str, dir: &Path) -> anyhow::Result<()> {
    require_root()?;
    if let Ok(state) = State::load(dir) {
        for p in state.processes.iter().rev() {
            p.stop(Duration::from_secs(3));
        }
    }
    let namespaces = netns::existing(prefix)?;
    // Anything still running inside our namespaces is ours.
    let strays: Vec<u32> = namespaces.iter().flat_map(|ns| netns::pids(ns)).collect();
    for &pid in &strays {
        crate::procs::signal(pid, rustix::process::Signal::KILL);
    }
    let start = Instant::now();
    while strays.iter().any(|&pid| crate::procs::pid_alive(pid))
        && start.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut failed = Vec::new();
    for ns in namespaces.iter().rev() {
        if let Err(e) = netns::delete(ns) {
            failed.push(format!("{ns}: {e:#}"));
        }
    }
    let state_file = crate::procs::state_path(dir);
    if state_file.exists() {
        std::fs::remove_file(&state_file)
            .with_context(|| format!("cannot remove {}", state_file.display()))?;
    }
    if !failed.is_empty() {
        bail!("could not remove: {}", failed.join("; "));
    }
    Ok(())
}

/// One line per node: namespace, address, process and whether it runs.
pub fn status(prefix: &str, dir: &Path) -> anyhow::Result<String> {
    let namespaces = netns::existing(prefix)?;
    let Ok(state) = State::load(dir) else {
        if namespaces.is_empty() {
            return Ok(format!("testnet {prefix:?} is down\n"));
        }
        return Ok(format!(
            "testnet {prefix:?}: no state file, but namespaces exist ({}); run `testnet down`\n",
            namespaces.join(", ")
        ));
    };
    let mut out = format!(
        "testnet {prefix:?}: {} namespaces, state in {}\n",
        namespaces.len(),
        dir.display()
    );
    out += &format!(
        "{:<20} {:<28} {:>8}  {}\n",
        "process", "namespace", "pid", "state"
    );
    for p in &state.processes {
        let s = if p.is_running() { "running" } else { "STOPPED" };
        out += &format!("{:<20} {:<28} {:>8}  {s}\n", p.role, p.ns, p.pid);
    }
    if !namespaces.is_empty() {
        out += "control bus (NATS JetStream):\n";
        for line in nats::summary(&Plan::new(&state.config)) {
            out += &format!("  {line}\n");
        }
    }
    Ok(out)
}
