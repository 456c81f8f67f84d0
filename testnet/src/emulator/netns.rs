//! Creating a TUN device inside a named network namespace from this process.
//!
//! A TUN device belongs to the namespace of the thread that opens `/dev/net/tun`, and tun-rs
//! configures it (address, MTU, up) through sockets that thread creates. So the calling thread
//! joins the namespace (`setns`), builds the device, and joins its original namespace again.
//! The open file descriptor keeps working from any namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::PortSpec;

/// Where `ip netns add NAME` mounts its namespaces.
const NETNS_DIR: &str = "/run/netns";
/// MTU of every port; the usual Ethernet size, so paths behave like the real Internet.
const MTU: u16 = 1500;

/// Creates `port`'s TUN device (address, MTU 1500, up) in its namespace. Must run inside a
/// tokio runtime context (the device registers with its reactor).
pub(crate) fn create_device(port: &PortSpec) -> anyhow::Result<AsyncDevice> {
    in_netns(&port.netns, || {
        if device_exists(&port.ifname)? {
            bail!(
                "device {} already exists in namespace {}",
                port.ifname,
                port.netns
            );
        }
        DeviceBuilder::new()
            .name(&port.ifname)
            .ipv4(port.address.addr(), port.address.prefix_len(), None)
            .mtu(MTU)
            .build_async()
            .map_err(|err| device_error(port, err))
    })
}

/// Runs `f` with the calling thread in network namespace `name`, then moves the thread back.
fn in_netns<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let original = File::open("/proc/thread-self/ns/net")
        .context("cannot open this thread's network namespace (/proc/thread-self/ns/net)")?;
    let path = netns_path(name);
    let target = File::open(&path).with_context(|| {
        format!(
            "network namespace {name} not found ({} does not open; create it with `ip netns add {name}`)",
            path.display()
        )
    })?;
    move_into_link_name_space(target.as_fd(), Some(LinkNameSpaceType::Network)).with_context(
        || format!("cannot enter network namespace {name} (setns needs root / CAP_SYS_ADMIN)"),
    )?;
    let result = f();
    move_into_link_name_space(original.as_fd(), Some(LinkNameSpaceType::Network)).map_err(
        |err| anyhow!("cannot return from network namespace {name} to the original one: {err}"),
    )?;
    result
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether the calling thread's namespace has a device called `ifname`. `/proc/thread-self/net`
/// shows the namespace of the thread, unlike `/sys/class/net`, which shows the one sysfs was
/// mounted in.
fn device_exists(ifname: &str) -> anyhow::Result<bool> {
    let devices = std::fs::read_to_string("/proc/thread-self/net/dev")
        .context("cannot read /proc/thread-self/net/dev")?;
    Ok(listed_devices(&devices).any(|name| name == ifname))
}

/// Device names in the text of `/proc/net/dev` (two header lines, then `name: counters`).
fn listed_devices(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
}

fn device_error(port: &PortSpec, err: io::Error) -> anyhow::Error {
    let hint = match err.raw_os_error() {
        Some(code) if code == rustix::io::Errno::PERM.raw_os_error() => {
            " (needs root / CAP_NET_ADMIN)"
        }
        Some(code) if code == rustix::io::Errno::BUSY.raw_os_error() => {
            " (a device of that name is in use)"
        }
        _ => "",
    };
    anyhow!(
        "cannot create TUN device {} with address {} in namespace {}: {err}{hint}",
        port.ifname,
        port.address,
        port.netns
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 0 0 0\n  wan0: 1 2 3\n";
        assert_eq!(listed_devices(text).collect::<Vec<_>>(), ["lo", "wan0"]);
    }

    #[test]
    fn own_namespace_lists_loopback() {
        assert!(device_exists("lo").unwrap());
        assert!(!device_exists("no-such-dev0").unwrap());
    }

    #[test]
    fn missing_namespace_is_named() {
        let err = in_netns("emu-no-such-namespace", || Ok(())).unwrap_err();
        assert!(err.to_string().contains("emu-no-such-namespace"), "{err:#}");
    }
}
