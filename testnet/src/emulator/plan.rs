//! Checks an [`EmulatorSpec`] and turns it into lookup tables: destination → port, and
//! (port, port) → link. Everything that can be wrong in a spec is reported here, before any
//! namespace is touched.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context as _, bail, ensure};
use ipnet::Ipv4Net;

use super::route::RouteTable;
use super::{EmulatorSpec, LinkParams, PortSpec};

/// Linux `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

/// The checked spec.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Destination address → index of the port that owns it.
    pub(crate) routes: RouteTable<usize>,
    /// One entry per directional site pair some pair of ports uses: `(from, to, params)`.
    pub(crate) links: Vec<(String, String, LinkParams)>,
    /// `pair_links[from * ports + to]`: index into `links`; `None` when `from == to`.
    pair_links: Vec<Option<usize>>,
    ports: usize,
}

impl Plan {
    pub(crate) fn new(spec: &EmulatorSpec) -> anyhow::Result<Self> {
        ensure!(!spec.ports.is_empty(), "emulator spec has no ports");
        for port in &spec.ports {
            check_port(port)?;
        }
        check_unique_devices(&spec.ports)?;
        let routes = routes(&spec.ports)?;
        let rules = rules(spec)?;
        let (links, pair_links) = pair_links(&spec.ports, &rules)?;
        Ok(Self {
            routes,
            links,
            pair_links,
            ports: spec.ports.len(),
        })
    }

    /// The link packets from port `from` to port `to` take; `None` for a port to itself.
    pub(crate) fn link_of(&self, from: usize, to: usize) -> Option<usize> {
        self.pair_links[from * self.ports + to]
    }
}

fn check_port(port: &PortSpec) -> anyhow::Result<()> {
    let name = &port.netns;
    ensure!(
        !name.is_empty() && !name.contains('/') && name != "." && name != "..",
        "port {}: invalid namespace name {name:?}",
        port.ifname
    );
    let ifname = &port.ifname;
    ensure!(
        !ifname.is_empty()
            && ifname.len() <= MAX_IFNAME_LEN
            && !ifname.contains(['/', ':'])
            && !ifname.contains(char::is_whitespace),
        "namespace {name}: invalid device name {ifname:?} (1..={MAX_IFNAME_LEN} bytes, no '/', ':' or spaces)"
    );
    Ok(())
}

fn check_unique_devices(ports: &[PortSpec]) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for port in ports {
        ensure!(
            seen.insert((&port.netns, &port.ifname)),
            "device {} in namespace {} is listed twice",
            port.ifname,
            port.netns
        );
    }
    Ok(())
}

/// The routing table; the same prefix on two ports is an error since the choice would be
/// arbitrary.
fn routes(ports: &[PortSpec]) -> anyhow::Result<RouteTable<usize>> {
    let mut owner: HashMap<Ipv4Net, usize> = HashMap::new();
    for (index, port) in ports.iter().enumerate() {
        for prefix in &port.prefixes {
            let prefix = prefix.trunc();
            if let Some(&other) = owner.get(&prefix)
                && other != index
            {
                bail!(
                    "prefix {prefix} is claimed by both {} and {}",
                    label(&ports[other]),
                    label(port)
                );
            }
            owner.insert(prefix, index);
        }
    }
    Ok(RouteTable::new(owner))
}

/// The link rules by `(from, to)`, each checked.
fn rules(spec: &EmulatorSpec) -> anyhow::Result<HashMap<(&str, &str), LinkParams>> {
    let mut rules = HashMap::new();
    for rule in &spec.links {
        let key = (rule.from.as_str(), rule.to.as_str());
        check_params(&rule.params)
            .with_context(|| format!("link from site {} to site {}", rule.from, rule.to))?;
        ensure!(
            rules.insert(key, rule.params).is_none(),
            "link from site {} to site {} is given twice",
            rule.from,
            rule.to
        );
    }
    Ok(rules)
}

fn check_params(params: &LinkParams) -> anyhow::Result<()> {
    ensure!(
        (0.0..=1.0).contains(&params.loss),
        "loss {} is not within 0..=1",
        params.loss
    );
    ensure!(
        params.rate_bps != Some(0),
        "rate_bps is 0 (use null for unlimited)"
    );
    Ok(())
}

type PairLinks = (Vec<(String, String, LinkParams)>, Vec<Option<usize>>);

/// Resolves the link of every ordered pair of distinct ports; names every missing site pair.
fn pair_links(
    ports: &[PortSpec],
    rules: &HashMap<(&str, &str), LinkParams>,
) -> anyhow::Result<PairLinks> {
    let mut links = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut pair_links = Vec::with_capacity(ports.len() * ports.len());
    let mut missing = BTreeSet::new();
    for (a, from) in ports.iter().enumerate() {
        for (b, to) in ports.iter().enumerate() {
            let key = (from.site.as_str(), to.site.as_str());
            let link = match (a == b, rules.get(&key)) {
                (true, _) => None,
                (false, None) => {
                    missing.insert(format!("{} -> {}", key.0, key.1));
                    None
                }
                (false, Some(params)) => Some(*index.entry(key).or_insert_with(|| {
                    links.push((key.0.to_owned(), key.1.to_owned(), *params));
                    links.len() - 1
                })),
            };
            pair_links.push(link);
        }
    }
    if !missing.is_empty() {
        let missing: Vec<_> = missing.into_iter().collect();
        bail!("no link rule for site pair(s): {}", missing.join(", "));
    }
    Ok((links, pair_links))
}

/// `netns/ifname`, for messages.
pub(crate) fn label(port: &PortSpec) -> String {
    format!("{}/{}", port.netns, port.ifname)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::LinkRule;
    use super::*;

    fn port(netns: &str, site: &str, prefix: &str) -> PortSpec {
        PortSpec {
            netns: netns.into(),
            ifname: "wan0".into(),
            site: site.into(),
            address: "10.0.0.1/32".parse().unwrap(),
            prefixes: vec![prefix.parse().unwrap()],
        }
    }

    fn rule(from: &str, to: &str, delay_ms: u64) -> LinkRule {
        LinkRule {
            from: from.into(),
            to: to.into(),
            params: LinkParams {
                delay: Duration::from_millis(delay_ms),
                ..LinkParams::default()
            },
        }
    }

    fn spec(ports: Vec<PortSpec>, links: Vec<LinkRule>) -> EmulatorSpec {
        EmulatorSpec { ports, links }
    }

    fn error(spec: &EmulatorSpec) -> String {
        format!("{:#}", Plan::new(spec).unwrap_err())
    }

    #[test]
    fn resolves_directional_links_and_routes() {
        let plan = Plan::new(&spec(
            vec![
                port("a", "eu", "10.1.0.0/16"),
                port("b", "us", "10.2.0.0/16"),
                port("c", "us", "10.2.3.0/24"),
            ],
            vec![
                rule("eu", "us", 40),
                rule("us", "eu", 41),
                rule("us", "us", 1),
                rule("ap", "eu", 99),
            ],
        ))
        .unwrap();
        let delay = |from, to| plan.links[plan.link_of(from, to).unwrap()].2.delay;
        assert_eq!(delay(0, 1), Duration::from_millis(40));
        assert_eq!(delay(1, 0), Duration::from_millis(41));
        assert_eq!(delay(1, 2), Duration::from_millis(1));
        // Ports of the same sites share one link (one bottleneck per site pair).
        assert_eq!(plan.link_of(0, 1), plan.link_of(0, 2));
        assert_eq!(plan.link_of(1, 1), None);
        // eu -> us, us -> eu, us -> us; the unused "ap" rule gets no link.
        assert_eq!(plan.links.len(), 3);
        assert_eq!(plan.routes.lookup("10.2.3.4".parse().unwrap()), Some(&2));
        assert_eq!(plan.routes.lookup("10.2.4.4".parse().unwrap()), Some(&1));
    }

    #[test]
    fn names_every_missing_site_pair() {
        let msg = error(&spec(
            vec![
                port("a", "eu", "10.1.0.0/16"),
                port("b", "us", "10.2.0.0/16"),
            ],
            vec![],
        ));
        assert!(
            msg.contains("eu -> us") && msg.contains("us -> eu"),
            "{msg}"
        );
    }

    #[test]
    fn same_site_ports_need_a_site_to_itself_rule() {
        let msg = error(&spec(
            vec![
                port("a", "eu", "10.1.0.0/16"),
                port("b", "eu", "10.2.0.0/16"),
            ],
            vec![],
        ));
        assert!(msg.contains("eu -> eu"), "{msg}");
    }

    #[test]
    fn rejects_bad_specs() {
        let two = || vec![port("a", "x", "10.1.0.0/16"), port("b", "y", "10.2.0.0/16")];
        let links = || vec![rule("x", "y", 1), rule("y", "x", 1)];
        assert!(error(&spec(vec![], vec![])).contains("no ports"));

        let mut ports = two();
        ports[1].prefixes = vec!["10.1.0.0/16".parse().unwrap()];
        let msg = error(&spec(ports, links()));
        assert!(msg.contains("a/wan0") && msg.contains("b/wan0"), "{msg}");

        let mut ports = two();
        ports[1].netns = "a".into();
        assert!(error(&spec(ports, links())).contains("listed twice"));

        let mut ports = two();
        ports[0].ifname = "a-very-long-ifname".into();
        assert!(error(&spec(ports, links())).contains("invalid device name"));

        let mut ports = two();
        ports[0].netns = "../etc".into();
        assert!(error(&spec(ports, links())).contains("invalid namespace"));

        let mut bad = links();
        bad[0].params.loss = 1.5;
        let msg = error(&spec(two(), bad));
        assert!(
            msg.contains("from site x to site y") && msg.contains("loss"),
            "{msg}"
        );

        let mut bad = links();
        bad[1].params.rate_bps = Some(0);
        assert!(error(&spec(two(), bad)).contains("rate_bps"));

        let mut bad = links();
        bad.push(rule("x", "y", 5));
        assert!(error(&spec(two(), bad)).contains("given twice"));
    }
}
