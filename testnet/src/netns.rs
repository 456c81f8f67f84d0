//! Namespaces, veths, bridges and routes, through iproute2 (`ip`), the tool operators know.

use std::process::{Command, Output};

use anyhow::{Context as _, bail};

use crate::plan::{Plan, WAN_IF};

/// Runs a command; a failure carries the command line and its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = output(program, args)?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))
}

pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// `sysctl -w` inside a namespace (each namespace has its own net.* tree).
fn sysctl(ns: &str, setting: &str) -> anyhow::Result<()> {
    ip(&["netns", "exec", ns, "sysctl", "-q", "-w", setting]).map(drop)
}

/// Our namespaces that exist now (also those left by a crashed run).
pub fn existing(prefix: &str) -> anyhow::Result<Vec<String>> {
    let text = ip(&["netns", "list"])?;
    let mine = format!("{prefix}-");
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&mine))
        .map(str::to_owned)
        .collect())
}

/// PIDs of every process inside a namespace.
pub fn pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

pub fn delete(ns: &str) -> anyhow::Result<()> {
    ip(&["netns", "del", ns]).map(drop)
}

/// Creates every namespace, the LAN of each region, and the sysctls the topology needs.
/// Interfaces to the emulator (TUN) are made by the emulator; see [`add_wan_routes`].
pub fn build(plan: &Plan) -> anyhow::Result<()> {
    for ns in plan.namespaces() {
        ip(&["netns", "add", &ns]).with_context(|| format!("cannot create namespace {ns}"))?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // IPv4 only: no router solicitations or DAD noise through the emulator.
        sysctl(&ns, "net.ipv6.conf.all.disable_ipv6=1")?;
        sysctl(&ns, "net.ipv6.conf.default.disable_ipv6=1")?;
    }
    for (k, r) in plan.regions.iter().enumerate() {
        let rt = r.router_ns.as_str();
        sysctl(rt, "net.ipv4.ip_forward=1")?;
        ip(&["-n", rt, "link", "add", "br0", "type", "bridge"])?;
        let gw = format!("{}/{}", r.gateway, r.lan.prefix_len());
        ip(&["-n", rt, "addr", "add", &gw, "dev", "br0"])?;
        ip(&["-n", rt, "link", "set", "br0", "up"])?;
        for (n, host) in plan.lan_hosts(k).into_iter().enumerate() {
            // Names are per namespace, so every run and region can reuse them.
            let port = format!("lan{n}");
            ip(&[
                "-n", rt, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &host.ns,
            ])?;
            ip(&["-n", rt, "link", "set", &port, "master", "br0", "up"])?;
            let a = format!("{}/{}", host.addr, r.lan.prefix_len());
            ip(&["-n", &host.ns, "addr", "add", &a, "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &host.ns,
                "route",
                "add",
                "default",
                "via",
                &r.gateway.to_string(),
            ])?;
        }
    }
    Ok(())
}

/// Routes through the emulator's TUN devices, once the emulator has made them.
pub fn add_wan_routes(plan: &Plan) -> anyhow::Result<()> {
    for r in &plan.regions {
        // The LAN route is more specific, so only other 10.x traffic leaves through the WAN.
        ip(&[
            "-n",
            &r.router_ns,
            "route",
            "add",
            "10.0.0.0/8",
            "dev",
            WAN_IF,
        ])?;
        ip(&["-n", &r.client.ns, "route", "add", "default", "dev", WAN_IF])?;
    }
    Ok(())
}

/// Whether this process may create namespaces (root, or CAP_SYS_ADMIN + CAP_NET_ADMIN).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
