//! Live reload of the edge binary: SIGHUP, a change of the config file and `edge reload` all
//! apply a new config without dropping a request, within a second; a broken config is
//! rejected with its reason and the running one stays.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge::config::{EdgeConfig, SiteConfig};
use http_body_util::Full;

use crate::support::client::Client;
use crate::support::edge::{EdgeProcess, test_config};
use crate::support::origin::{Reply, TestOrigin};

async fn origin_saying(name: &'static str) -> TestOrigin {
    let origin = TestOrigin::start().await;
    origin.route("/who", Reply::ok(name).header("cache-control", "no-store"));
    origin.route(
        "/static",
        Reply::ok("static").header("cache-control", "max-age=600"),
    );
    origin
}

/// Writes `config` where the edge reads it, by a rename (as editors and config management
/// do), so a watcher never reads half a file.
fn write_config(path: &Path, config: &EdgeConfig) {
    let text = shared::config::render(config).unwrap();
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn site(host: &str, origin: &str) -> SiteConfig {
    SiteConfig::new(&[host], origin)
}

/// GET `url`, with a `Host` header when the host is not the URL's (HTTP/1.1 only: HTTP/2
/// and HTTP/3 take the authority from the URL).
fn get(url: &str, host: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut req = http::Request::get(url);
    if let Some(host) = host {
        req = req.header(http::header::HOST, host);
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

/// `edge --admin ADDR reload`: its exit status and output.
fn edge_reload(admin: std::net::SocketAddr) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--admin", &admin.to_string(), "reload"])
        .output()
        .expect("edge reload runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// SIGHUP to the edge we started, by its PID.
fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[derive(Clone, Copy, Debug)]
enum How {
    Signal,
    File,
    Command,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_drop_no_request() {
    let (a, b) = (origin_saying("A").await, origin_saying("B").await);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut config = test_config(&a.url(), &cache);
    // File watching off while SIGHUP and `edge reload` are tested, so each change is theirs.
    config.reload.watch_interval = Duration::ZERO;
    let path: PathBuf = cache.with_extension("toml");
    let edge = EdgeProcess::spawn(&config);
    let plain = format!("http://localhost:{}", edge.http.port());
    let secure = format!("https://localhost:{}", edge.https.port());
    let cert = shared::tls::load_certificates(&cache.join("tls/dev-cert.pem")).unwrap();
    let cert = cert[0].as_ref().to_vec();

    // The load: h1, h2c and h3 clients, each asking for a passed and a cached object.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for (client, base) in [
        (Client::h1(None), plain.clone()),
        (Client::h2(&cert), plain.clone()),
        (Client::h3(&cert), secure.clone()),
    ] {
        let (stop, ok, failed, failures) =
            (stop.clone(), ok.clone(), failed.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let path = if n.is_multiple_of(2) {
                    "/who"
                } else {
                    "/static"
                };
                n += 1;
                match client.send(get(&format!("{base}{path}"), None)).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{base}{path}: {}", r.status));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("{base}{path}: {e}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let probe = Client::h1(None);
    let who = |host: &'static str| {
        let (probe, plain) = (&probe, plain.clone());
        async move {
            match probe.send(get(&format!("{plain}/who"), Some(host))).await {
                // The body, and the version a site rule stamps on responses.
                Ok(r) if r.status == 200 => match r.header("x-config-version") {
                    Some(v) => format!("{} v{v}", String::from_utf8_lossy(&r.body)),
                    None => String::from_utf8_lossy(&r.body).into_owned(),
                },
                Ok(r) => r.status.as_str().to_owned(),
                Err(e) => e,
            }
        }
    };
    assert_eq!(who("localhost").await, "A");
    let mut slowest = Duration::ZERO;
    for i in 0..20usize {
        let how = match i {
            0..=6 => How::Signal,
            7..=13 => How::Command,
            _ => How::File,
        };
        // Each change swaps the origin of `localhost`, adds a site `siteN.test`...
        let (origin, expect) = if i.is_multiple_of(2) {
            (&b, "B")
        } else {
            (&a, "A")
        };
        config.sites[0].origin = origin.url();
        config.sites.push(site(&format!("site{i}.test"), &a.url()));
        // ...and changes a rule: the header it sets on localhost's responses.
        config.sites[0]
            .response_headers
            .set
            .insert("x-config-version".into(), i.to_string());
        if let How::File = how {
            config.reload.watch_interval = edge::config::ReloadConfig::default().watch_interval;
        }
        write_config(&path, &config);
        let changed = Instant::now();
        match how {
            How::Signal => hangup(edge.pid()),
            How::Command => {
                let (success, text) = edge_reload(edge.admin);
                assert!(success, "edge reload: {text}");
                assert!(text.contains("reloaded"), "{text}");
            }
            // The first file change turns watching on: SIGHUP applies that one.
            How::File if i == 14 => hangup(edge.pid()),
            How::File => {}
        }
        let host: &'static str = Box::leak(format!("site{i}.test").into_boxed_str());
        loop {
            if who("localhost").await == format!("{expect} v{i}") && who(host).await == "A" {
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "change {i} ({how:?}) not visible within 1 s: localhost says {}, {host} says {}",
                who("localhost").await,
                who(host).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slowest = slowest.max(changed.elapsed());
        if i == 10 {
            // A broken config: rejected with its reason, and the running one stays.
            std::fs::write(&path, "[[site]]\nhosts = [\"x.test\"]\norigin = 7\n").unwrap();
            let (success, text) = edge_reload(edge.admin);
            assert!(!success, "a broken config is rejected: {text}");
            assert!(
                text.contains("reload rejected") && text.contains("origin"),
                "{text}"
            );
            assert_eq!(
                who("localhost").await,
                format!("{expect} v{i}"),
                "still on the running config"
            );
            write_config(&path, &config);
        }
        // 20 changes over about 20 s of load.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("reloads: 20, slowest visible after {slowest:?}; load: {ok} ok, {failed} failed");
    assert!(ok > 300, "the load ran: {ok} requests");
    assert_eq!(
        failed,
        0,
        "no request failed: {:?}",
        failures.lock().unwrap()
    );
    let log = edge.drain_log().join("\n");
    assert!(log.contains("reload rejected"), "the rejection is logged");
    for trigger in ["SIGHUP", "file change", "reload request"] {
        assert!(
            log.contains(&format!("trigger=\"{trigger}\"")),
            "a reload by {trigger}: {log}"
        );
    }
    edge.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_the_keys_that_need_a_restart() {
    let origin = origin_saying("A").await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = test_config(&origin.url(), &cache);
    let edge = EdgeProcess::spawn(&config);
    let mut next = config.clone();
    next.sites.push(site("more.test", &origin.url()));
    next.cache.slice_size = bytesize::ByteSize::mib(4);
    next.listen.http = Some(([127, 0, 0, 1], 1).into());
    let file = dir.path().join("next.toml");
    write_config(&file, &next);
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("--config")
        .arg(&file)
        .args(["--admin", &edge.admin.to_string(), "--check-config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("need a restart") && text.contains("cache.slice_size, listen.http"),
        "{text}"
    );
    assert!(!text.contains("site"), "sites are reloaded: {text}");
    edge.stop();
}
