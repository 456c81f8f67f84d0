//! Which port a packet leaves by: IPv4 header parsing and a longest-prefix-match table.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Longest-prefix-match table. A linear scan over routes sorted longest prefix first: the
/// emulator has one route per port prefix, a few dozen at most.
#[derive(Clone, Debug)]
pub(crate) struct RouteTable<T> {
    routes: Vec<(Ipv4Net, T)>,
}

impl<T> RouteTable<T> {
    /// Builds the table; host bits in the prefixes are ignored. With two equal prefixes the
    /// first one given wins (the plan rejects duplicates before this).
    pub(crate) fn new(routes: impl IntoIterator<Item = (Ipv4Net, T)>) -> Self {
        let mut routes: Vec<_> = routes
            .into_iter()
            .map(|(net, value)| (net.trunc(), value))
            .collect();
        routes.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Self { routes }
    }

    /// The value of the longest prefix that contains `addr`.
    pub(crate) fn lookup(&self, addr: Ipv4Addr) -> Option<&T> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, value)| value)
    }
}

/// The destination of an IPv4 packet, or `None` if it is not one (IPv6, or shorter than an
/// IPv4 header).
pub(crate) fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.first()? >> 4 != 4 {
        return None;
    }
    let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
    Some(Ipv4Addr::from(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let table = RouteTable::new([
            (net("10.0.0.0/8"), "wide"),
            (net("10.1.2.0/24"), "narrow"),
            (net("10.1.0.0/16"), "mid"),
        ]);
        assert_eq!(table.lookup("10.1.2.3".parse().unwrap()), Some(&"narrow"));
        assert_eq!(table.lookup("10.1.3.3".parse().unwrap()), Some(&"mid"));
        assert_eq!(table.lookup("10.9.0.1".parse().unwrap()), Some(&"wide"));
        assert_eq!(table.lookup("192.168.0.1".parse().unwrap()), None);
    }

    #[test]
    fn host_bits_are_ignored() {
        let table = RouteTable::new([(net("10.77.1.1/24"), 1)]);
        assert_eq!(table.lookup("10.77.1.200".parse().unwrap()), Some(&1));
    }

    #[test]
    fn default_route_matches_everything() {
        let table = RouteTable::new([(net("0.0.0.0/0"), 0), (net("10.0.0.1/32"), 1)]);
        assert_eq!(table.lookup("10.0.0.1".parse().unwrap()), Some(&1));
        assert_eq!(table.lookup("8.8.8.8".parse().unwrap()), Some(&0));
    }

    #[test]
    fn parses_ipv4_destination() {
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[16..20].copy_from_slice(&[10, 77, 2, 1]);
        assert_eq!(ipv4_destination(&packet), Some(Ipv4Addr::new(10, 77, 2, 1)));
    }

    #[test]
    fn rejects_non_ipv4_and_truncated_packets() {
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert_eq!(ipv4_destination(&v6), None);
        assert_eq!(ipv4_destination(&[0x45; 19]), None);
        assert_eq!(ipv4_destination(&[]), None);
    }
}
