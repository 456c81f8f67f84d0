//! Keeps docker/ in step with the binaries: `docker-compose config` accepts
//! docker/compose.yaml, every docker/*.toml loads and validates with the real config types
//! (unknown keys are errors, so a renamed key fails here), and the addresses, ports and paths
//! the configs name agree with compose.yaml and the Dockerfile's health checks.
//!
//! Without docker-compose (or `docker compose`) the compose check is skipped with a message,
//! unless the `CI` environment variable is set: then it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use edge::config::EdgeConfig;
use geodns::config::GeoDnsConfig;

/// Where the image keeps its cache and the tls volume (docker/Dockerfile, compose.yaml).
const CACHE_DIR: &str = "/var/cache/quicdn";
const TLS_DIR: &str = "/etc/quicdn/tls";

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testnet is inside the repository")
        .join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// docker/*.toml split by the config type that reads them: (edge files, geodns files).
fn config_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut edges, mut geodns) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(docker_dir()).expect("docker/ exists") {
        let path = entry.expect("readable docker/").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        if name.starts_with("edge") {
            edges.push(path);
        } else if name.starts_with("geodns") {
            geodns.push(path);
        } else {
            panic!("docker/{name}: name it edge*.toml or geodns*.toml so that this test checks it");
        }
    }
    edges.sort();
    geodns.sort();
    (edges, geodns)
}

fn load_edge(path: &Path) -> EdgeConfig {
    EdgeConfig::load(path).unwrap_or_else(|e| panic!("{e}"))
}

fn load_geodns(path: &Path) -> GeoDnsConfig {
    GeoDnsConfig::load(path).unwrap_or_else(|e| panic!("{e}"))
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The lines of a service's block in compose.yaml, after its `  name:` line.
fn service(compose: &str, name: &str) -> String {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| *l != header);
    assert!(lines.next().is_some(), "compose.yaml has no service {name}");
    let block: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    block.join("\n")
}

/// The Dockerfile's health check URL for a final stage (`FROM runtime AS <target>`).
fn health_url(dockerfile: &str, target: &str) -> String {
    let stage = dockerfile
        .split("\nFROM ")
        .find(|s| {
            s.lines()
                .next()
                .is_some_and(|l| l.trim_end().ends_with(&format!(" AS {target}")))
        })
        .unwrap_or_else(|| panic!("Dockerfile has no stage {target}"));
    let url = stage
        .lines()
        .find_map(|l| l.strip_prefix("ENV QUICDN_HEALTH_URL="))
        .unwrap_or_else(|| panic!("Dockerfile stage {target} sets no QUICDN_HEALTH_URL"));
    url.trim().to_owned()
}

fn admin_url(admin: Option<SocketAddr>, what: &str) -> String {
    let admin = admin.unwrap_or_else(|| panic!("{what}: the HEALTHCHECK needs listen.admin"));
    assert!(
        admin.ip().is_loopback(),
        "{what}: keep the admin listener on loopback"
    );
    format!("http://{admin}/health")
}

#[test]
fn compose_file_parses() {
    let found = [("docker-compose", &[][..]), ("docker", &["compose"][..])]
        .into_iter()
        .find(|(program, args)| {
            Command::new(program)
                .args(*args)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some((program, args)) = found else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but neither docker-compose nor `docker compose` is installed: \
             install docker-compose (Debian package) to check docker/compose.yaml"
        );
        eprintln!(
            "SKIPPED compose_file_parses: neither docker-compose nor `docker compose` is \
             installed (with CI set this fails)"
        );
        return;
    };
    let out = Command::new(program)
        .args(args)
        .arg("-f")
        .arg(docker_dir().join("compose.yaml"))
        .arg("config")
        .output()
        .expect("compose runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} config: {stderr}");
    let config = String::from_utf8_lossy(&out.stdout);
    for name in ["origin", "tls-init", "nats", "edge-a", "edge-b", "geodns"] {
        assert!(
            config.contains(&format!("\n  {name}:\n")),
            "service {name}:\n{config}"
        );
    }
    // The files this test validates are the ones compose mounts.
    for file in [
        "edge-a.toml:/etc/quicdn/edge.toml",
        "edge-b.toml:/etc/quicdn/edge.toml",
        "geodns.toml:/etc/quicdn/geodns.toml",
        "nginx/origin.conf:/etc/nginx/conf.d/default.conf",
        "nats.conf:/etc/nats/quicdn.conf",
    ] {
        assert!(
            config.contains(&format!("/docker/{file}:ro")),
            "{file}:\n{config}"
        );
    }
}

#[test]
fn every_docker_config_loads_with_the_real_config_types() {
    let (edges, geodns) = config_files();
    assert!(
        edges.len() >= 3,
        "edge.toml, edge-a.toml, edge-b.toml: {edges:?}"
    );
    assert_eq!(geodns.len(), 1, "{geodns:?}");
    for path in &edges {
        let config = load_edge(path);
        assert_eq!(config.cache.dir, Path::new(CACHE_DIR), "{}", path.display());
    }
    for path in &geodns {
        load_geodns(path);
    }
}

#[test]
fn configs_compose_and_dockerfile_agree() {
    let compose = read(&docker_dir().join("compose.yaml"));
    let dockerfile = read(&docker_dir().join("Dockerfile"));
    let (edge_files, geodns_files) = config_files();

    let edge_health = health_url(&dockerfile, "edge");
    let mut pops = Vec::new();
    for path in &edge_files {
        let config = load_edge(path);
        let what = path.display().to_string();
        assert_eq!(admin_url(config.listen.admin, &what), edge_health, "{what}");
        let name = stem(path);
        if name == "edge" {
            continue; // the image's default config, not a compose service
        }
        assert_eq!(config.name, name, "{what}: name the POP after its service");
        let block = service(&compose, &name);
        assert!(
            block.contains(&format!("./{name}.toml:/etc/quicdn/edge.toml:ro")),
            "{block}"
        );
        assert!(block.contains(&format!("tls:{TLS_DIR}:ro")), "{block}");
        for key in [&config.tls.cert, &config.tls.key] {
            let key = key
                .as_deref()
                .expect("the compose edges use the certs tool's leaf");
            assert!(key.starts_with(TLS_DIR), "{what}: {}", key.display());
            let file = key.file_name().unwrap().to_string_lossy();
            assert!(
                compose.contains(&format!("/tls/{file}")),
                "tls-init writes {file}"
            );
        }
        for site in &config.sites {
            let host = site.origin.trim_start_matches("http://");
            let origin = host.split(':').next().unwrap();
            service(&compose, origin);
        }
        let https = config.listen.https.expect("https").port();
        let address = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("ipv4_address: "))
            .unwrap_or_else(|| panic!("{name} has no fixed address:\n{block}"));
        if block.contains("ports:") {
            for proto in ["tcp", "udp"] {
                assert!(
                    block.contains(&format!(":{https}/{proto}\"")),
                    "{name}: publish {https}/{proto}:\n{block}"
                );
            }
        }
        // The bus: compose's one NATS node, one replica, and both edges acknowledge.
        let control = &config.control;
        assert_eq!(control.nats, ["nats://nats:4222"], "{what}");
        assert_eq!(
            control.replicas, 1,
            "{what}: one NATS node holds one replica"
        );
        assert_eq!(control.pops, ["edge-a", "edge-b"], "{what}");
        // Every edge takes the x-edge defaults, which start it after nats is healthy.
        assert!(block.contains("<<: *edge"), "{name}:\n{block}");
        let defaults = compose
            .split_once("x-edge: &edge\n")
            .and_then(|(_, rest)| rest.split_once("\nservices:"))
            .map(|(anchor, _)| anchor)
            .expect("compose.yaml has x-edge defaults before services");
        assert!(
            defaults.contains("    nats:\n      condition: service_healthy"),
            "x-edge:\n{defaults}"
        );
        pops.push((name, address.to_owned(), https, config.listen.health_path));
    }
    assert_eq!(pops.len(), 2, "edge-a and edge-b");
    service(&compose, "nats");

    let geodns_health = health_url(&dockerfile, "geodns");
    let block = service(&compose, "geodns");
    for path in &geodns_files {
        let config = load_geodns(path);
        let what = path.display().to_string();
        assert_eq!(admin_url(config.listen.admin, &what), geodns_health);
        let dns = config.listen.dns.port();
        for proto in ["udp", "tcp"] {
            assert!(block.contains(&format!(":{dns}/{proto}\"")), "{block}");
        }
        let ca = config.health.ca_file.expect("health.ca_file: the dev CA");
        assert_eq!(ca, Path::new(TLS_DIR).join("ca.pem"));
        assert!(compose.contains("/tls/ca.pem"), "tls-init copies ca.pem");
        assert_eq!(config.pops.len(), pops.len(), "one POP per compose edge");
        for (name, address, https, health_path) in &pops {
            let pop = config.pops.iter().find(|p| &p.name == name);
            let pop = pop.unwrap_or_else(|| panic!("{what}: no pop {name}"));
            let ips: Vec<String> = pop.ipv4.iter().map(|ip| ip.to_string()).collect();
            assert_eq!(ips, std::slice::from_ref(address), "{what}: pop {name}");
            let port = if *https == 443 {
                String::new()
            } else {
                format!(":{https}")
            };
            let url = format!("https://{address}{port}{health_path}");
            assert_eq!(pop.health_url.as_deref(), Some(&*url), "{what}: pop {name}");
        }
        for db in &config.geoip.databases {
            assert!(db.starts_with("/var/lib/GeoIP"), "{}", db.display());
        }
        assert!(block.contains(":/var/lib/GeoIP:ro"), "{block}");
    }
}

/// docker/nats.conf passes `nats-server -t`, and compose runs the server with it. Without
/// nats-server the check is skipped with a message, unless `CI` is set.
#[test]
fn nats_config_is_valid_and_mounted() {
    let conf = docker_dir().join("nats.conf");
    let compose = read(&docker_dir().join("compose.yaml"));
    let block = service(&compose, "nats");
    assert!(
        block.contains("./nats.conf:/etc/nats/quicdn.conf:ro")
            && block.contains(r#""--config", "/etc/nats/quicdn.conf""#),
        "{block}"
    );
    // The store is a volume: a stream that survives the container lets an edge replay.
    let text = read(&conf);
    assert!(text.contains(r#"store_dir: "/data""#), "{text}");
    assert!(block.contains("- nats-data:/data"), "{block}");
    match Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "nats-server -t: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but nats-server cannot run ({e}): install it (Debian package nats-server)"
            );
            eprintln!("SKIPPED the nats-server -t check: {e}");
        }
    }
}
