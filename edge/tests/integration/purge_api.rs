//! The control API on the admin listener (`POST /purge`), its tokens, and the HTTP `PURGE`
//! method on the public listeners, driven by real HTTP clients; and `edge purge` as a
//! process. Whether an object went is seen the way a client sees it: its next request is a
//! miss (hard) or a revalidation (soft), and a refused request leaves it a hit.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use edge::config::{EdgeConfig, Secret, TokenConfig, Verb};
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use crate::support::client::Client;
use crate::support::edge::{EdgeProcess, Proto, TestEdge, test_config};
use crate::support::origin::{Reply, TestOrigin};

const SITE_TOKEN: &str = "site-token-0123456789";
const OTHER_SITE_TOKEN: &str = "other-token-0123456789";
const PREWARM_TOKEN: &str = "prewarm-token-0123456789";
const OPS_TOKEN: &str = "ops-token-0123456789";

/// Another loopback address: a client the edge sees as not 127.0.0.1.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// `POST <path>` on the admin listener: status, JSON body (`null` if not JSON), headers.
pub(crate) async fn api(
    edge: &TestEdge,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, Value, HeaderMap) {
    let url = format!("http://{}{path}", edge.running.admin_addr().unwrap());
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let r = Client::h1(None).send(req).await.expect("admin answers");
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json, r.headers)
}

/// GET `path` of `host` over plain HTTP/1.1: its `Cache-Status`.
async fn get(edge: &TestEdge, host: &str, path: &str) -> String {
    let url = format!(
        "http://127.0.0.1:{}{path}",
        edge.running.http_addr().unwrap().port()
    );
    let req = Request::get(url)
        .header(header::HOST, host)
        .body(Full::default())
        .unwrap();
    let r = Client::h1(None).send(req).await.unwrap();
    assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
    r.header("cache-status").unwrap_or_default().to_owned()
}

/// Fetches until `host/path` is a hit.
async fn cached(edge: &TestEdge, host: &str, path: &str) {
    get(edge, host, path).await;
    let status = get(edge, host, path).await;
    assert!(
        status.contains("; hit"),
        "{host}{path} not cached: {status}"
    );
}

fn routes(origin: &TestOrigin) {
    for (path, tag) in [("/s/a", "t1"), ("/s/b", "t2"), ("/t", "t1")] {
        origin.route(
            path,
            Reply::ok(format!("body of {path}"))
                .header("cache-control", "max-age=600")
                .header("surrogate-key", tag),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_selector_purges_through_the_api_what_it_names_and_nothing_else() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start(&origin.url()).await;
    let everything = [
        ("localhost", "/s/a"),
        ("localhost", "/s/b"),
        ("localhost", "/t"),
        ("cdn.test", "/s/a"),
    ];
    let mut seq = 0;
    for (body, gone) in [
        (
            r#"{"url":"http://localhost/s/a"}"#,
            &[("localhost", "/s/a")][..],
        ),
        (
            r#"{"prefix":"localhost/s/"}"#,
            &[("localhost", "/s/a"), ("localhost", "/s/b")],
        ),
        (
            r#"{"tag":"t1"}"#,
            &[
                ("localhost", "/s/a"),
                ("localhost", "/t"),
                ("cdn.test", "/s/a"),
            ],
        ),
        (r#"{"host":"localhost"}"#, &everything[..3]),
        (r#"{"all":true}"#, &everything[..]),
    ] {
        for (host, path) in everything {
            cached(&edge, host, path).await;
        }
        let (status, answer, _) = api(&edge, "POST", "/purge", body, None).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
        assert_eq!(answer["local"]["objects"], gone.len(), "{body}: {answer}");
        assert_eq!(answer["pops"][0]["pop"], "edge-test", "{answer}");
        assert_eq!(answer["pops"][0]["applied"], true, "{answer}");
        assert_eq!(
            answer["pops"][0]["purged"]["objects"],
            gone.len(),
            "{answer}"
        );
        assert_eq!(answer["pending"], serde_json::json!([]), "{answer}");
        assert!(
            answer["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{answer}"
        );
        let next = answer["seq"].as_u64().unwrap();
        assert!(next > seq, "{answer}: seq grows");
        seq = next;
        for (host, path) in everything {
            let status = get(&edge, host, path).await;
            match gone.contains(&(host, path)) {
                true => assert!(
                    status.contains("fwd=uri-miss"),
                    "{body}: {host}{path} {status}"
                ),
                false => assert!(status.contains("; hit"), "{body}: {host}{path} {status}"),
            }
        }
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_revalidates_and_wait_answers_with_the_pops_that_applied() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start(&origin.url()).await;
    cached(&edge, "localhost", "/s/a").await;
    let body = r#"{"url":"localhost/s/a","mode":"soft","wait":"2s"}"#;
    let (status, answer, _) = api(&edge, "POST", "/purge", body, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let pop = &answer["pops"][0];
    assert_eq!(pop["applied"], true, "{answer}");
    assert!(pop["applied_ms"].as_u64().unwrap() > 0, "{answer}");
    assert!(pop["lag_ms"].as_u64().unwrap() < 2_000, "{answer}");
    assert_eq!(answer["local"]["objects"], 1, "{answer}");
    let status = get(&edge, "localhost", "/s/a").await;
    assert!(
        status.contains("fwd=stale"),
        "soft: the next request revalidates: {status}"
    );
    assert_eq!(origin.hits("/s/a"), 2);
    edge.stop().await;
}

fn token(name: &str, secret: &str, sites: &[&str], verbs: &[Verb]) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        token: Some(Secret::new(secret)),
        token_file: None,
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        verbs: verbs.to_vec(),
    }
}

fn with_tokens(c: &mut EdgeConfig) {
    c.admin.tokens = vec![
        token("site", SITE_TOKEN, &["localhost"], &[Verb::Purge]),
        token(
            "other-site",
            OTHER_SITE_TOKEN,
            &["other.example"],
            &[Verb::Purge, Verb::Prewarm],
        ),
        token("warmer", PREWARM_TOKEN, &["*"], &[Verb::Prewarm]),
        token("ops", OPS_TOKEN, &["*"], &[Verb::Purge, Verb::Reload]),
    ];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_purges_say_why_and_purge_nothing() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start_with(&origin.url(), with_tokens).await;
    cached(&edge, "localhost", "/s/a").await;
    let url = r#"{"url":"http://localhost/s/a"}"#;
    for (body, token, want, reason) in [
        (
            url,
            None,
            StatusCode::UNAUTHORIZED,
            "no Authorization header",
        ),
        (
            url,
            Some("not-a-token-0123456789"),
            StatusCode::UNAUTHORIZED,
            "not one of this edge's tokens",
        ),
        (
            url,
            Some(OTHER_SITE_TOKEN),
            StatusCode::FORBIDDEN,
            "may not purge host \"localhost\"",
        ),
        (
            url,
            Some(PREWARM_TOKEN),
            StatusCode::FORBIDDEN,
            "may not purge (its verbs: prewarm)",
        ),
        (
            r#"{"tag":"t1"}"#,
            Some(SITE_TOKEN),
            StatusCode::FORBIDDEN,
            "every site",
        ),
        (
            r#"{"all":true}"#,
            Some(SITE_TOKEN),
            StatusCode::FORBIDDEN,
            "every site",
        ),
    ] {
        let (status, answer, headers) = api(&edge, "POST", "/purge", body, token).await;
        assert_eq!(status, want, "{body} {token:?}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{body} {token:?}: {error}");
        if want == StatusCode::UNAUTHORIZED {
            let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
        let status = get(&edge, "localhost", "/s/a").await;
        assert!(
            status.contains("; hit"),
            "{body} {token:?}: purged anyway: {status}"
        );
    }
    assert_eq!(origin.hits("/s/a"), 1);
    // The site's own token purges its URL; the operator's purges by tag.
    let (status, answer, _) = api(&edge, "POST", "/purge", url, Some(SITE_TOKEN)).await;
    assert_eq!(
        (status, &answer["local"]["objects"]),
        (StatusCode::OK, &1.into()),
        "{answer}"
    );
    cached(&edge, "localhost", "/t").await;
    let (status, answer, _) =
        api(&edge, "POST", "/purge", r#"{"tag":"t1"}"#, Some(OPS_TOKEN)).await;
    assert_eq!(
        (status, &answer["local"]["objects"]),
        (StatusCode::OK, &1.into()),
        "{answer}"
    );
    // With tokens, a reload needs one with the verb (this in-process edge has no config
    // file to read again: 422 once it is allowed).
    let (status, _, _) = api(&edge, "POST", "/reload", "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = api(&edge, "POST", "/reload", "", Some(SITE_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api(&edge, "POST", "/reload", "", Some(OPS_TOKEN)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // /metrics and /health need no token.
    let (status, _, _) = api(&edge, "GET", "/health", "", None).await;
    assert_eq!(status, StatusCode::OK);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_with_the_reason_and_other_methods_405() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start(&origin.url()).await;
    cached(&edge, "localhost", "/s/a").await;
    for (body, reason) in [
        (
            r#"{"url":"localhost/s/a","host":"localhost"}"#,
            "exactly one selector",
        ),
        (r#"{}"#, "(got none)"),
        (
            r#"{"url":"localhost/s/a","force":true}"#,
            "unknown field `force`",
        ),
        (
            r#"{"url":"ftp://localhost/s/a"}"#,
            "only http:// and https://",
        ),
        (r#"{"url":"localhost/s/a","wait":"soon"}"#, "wait \"soon\""),
        (
            r#"{"url":"localhost/s/a","mode":"gentle"}"#,
            "unknown variant `gentle`",
        ),
        ("{", "bad purge body"),
    ] {
        let (status, answer, _) = api(&edge, "POST", "/purge", body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{body}: {error}");
    }
    for path in ["/purge", "/prewarm"] {
        let (status, _, headers) = api(&edge, "GET", path, "", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(headers[header::ALLOW], "POST");
    }
    let huge = format!(
        r#"{{"url":"localhost/{}"}}"#,
        "a".repeat(shared::admin::MAX_BODY)
    );
    let (status, _, _) = api(&edge, "POST", "/purge", &huge, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(get(&edge, "localhost", "/s/a").await.contains("; hit"));
    edge.stop().await;
}

/// `PURGE <url>` from `from` over `proto`.
async fn purge_method(
    edge: &TestEdge,
    proto: Proto,
    from: IpAddr,
    path: &str,
    soft: bool,
) -> (StatusCode, String) {
    let cert = edge.cert_der();
    let client = match proto {
        Proto::H1 => Client::from_address("h1", None, from),
        Proto::H1Tls => Client::from_address("h1", Some(&cert), from),
        Proto::H2 => Client::from_address("h2", Some(&cert), from),
        Proto::H3 => Client::from_address("h3", Some(&cert), from),
    };
    let mut req = Request::builder()
        .method("PURGE")
        .uri(edge.url(proto, path));
    if soft {
        req = req.header("soft-purge", "1");
    }
    let r = client
        .send(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_method_purges_for_allowed_clients_over_every_protocol() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.purge.allow_from = vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()];
    })
    .await;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for proto in [Proto::H1, Proto::H2, Proto::H3] {
        cached(&edge, "localhost", "/s/a").await;
        let (status, text) = purge_method(&edge, proto, OTHER_CLIENT, "/s/a", false).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{proto:?}: {text}");
        assert!(
            text.contains("not allowed from 127.0.0.2"),
            "{proto:?}: {text}"
        );
        assert!(
            get(&edge, "localhost", "/s/a").await.contains("; hit"),
            "{proto:?}"
        );
        let (status, text) = purge_method(&edge, proto, localhost, "/s/a", false).await;
        assert_eq!(status, StatusCode::OK, "{proto:?}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["local"]["objects"], 1, "{proto:?}: {answer}");
        assert_eq!(answer["pops"][0]["pop"], "edge-test", "{proto:?}: {answer}");
        assert!(
            get(&edge, "localhost", "/s/a")
                .await
                .contains("fwd=uri-miss"),
            "{proto:?}"
        );
    }
    // Soft: marked stale, the next request revalidates.
    cached(&edge, "localhost", "/s/b").await;
    let (status, text) = purge_method(&edge, Proto::H1, localhost, "/s/b", true).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(get(&edge, "localhost", "/s/b").await.contains("fwd=stale"));
    // The origin never saw the method.
    for path in ["/s/a", "/s/b"] {
        assert!(
            origin
                .requests(path)
                .iter()
                .all(|r| r.method == http::Method::GET),
            "{path}"
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_from_the_purge_method_is_405_and_reaches_no_origin() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    let edge = TestEdge::start(&origin.url()).await;
    cached(&edge, "localhost", "/s/a").await;
    for proto in [Proto::H1, Proto::H2, Proto::H3] {
        let (status, text) =
            purge_method(&edge, proto, IpAddr::V4(Ipv4Addr::LOCALHOST), "/s/a", false).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{proto:?}: {text}");
    }
    assert!(get(&edge, "localhost", "/s/a").await.contains("; hit"));
    assert_eq!(origin.requests("/s/a").len(), 1);
    edge.stop().await;
}

/// `edge --admin ADDR <args>` with `QUICDN_TOKEN=token`: exit success and output.
/// Whether `url` is a hit now.
async fn is_hit(client: &Client, url: &str) -> bool {
    let r = client.get(url).await;
    r.header("cache-status")
        .unwrap_or_default()
        .contains("; hit")
}

fn edge_cli(admin: std::net::SocketAddr, token: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .env("QUICDN_TOKEN", token)
        .output()
        .expect("edge runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_purge_and_prewarm_talk_to_the_api_and_fail_when_refused() {
    let origin = TestOrigin::start().await;
    routes(&origin);
    origin.route("/missing", Reply::status(404));
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&origin.url(), &dir.path().join("cache"));
    // A token file: a config the binary reads cannot carry the secret itself (printed
    // configs are redacted).
    let token_file = dir.path().join("ops.token");
    std::fs::write(&token_file, format!("{OPS_TOKEN}\n")).unwrap();
    let mut ops = token("ops", OPS_TOKEN, &["*"], &[Verb::Purge, Verb::Prewarm]);
    ops.token = None;
    ops.token_file = Some(token_file);
    config.admin.tokens = vec![ops];
    let process = EdgeProcess::spawn(&config);
    let plain = |path: &str| format!("http://localhost:{}{path}", process.http.port());
    let client = Client::h1(None);
    let (ok, text) = edge_cli(
        process.admin,
        OPS_TOKEN,
        &["prewarm", &plain("/s/a"), &plain("/t")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("pre-warmed 2 URL(s), 0 failed"), "{text}");
    assert!(is_hit(&client, &plain("/s/a")).await);
    let (ok, text) = edge_cli(
        process.admin,
        OPS_TOKEN,
        &["purge", "--url", "localhost/s/a", "--wait", "2s"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("edge-test") && text.contains("purged 1 object(s)"),
        "{text}"
    );
    let (ok, text) = edge_cli(
        process.admin,
        "wrong-token-0123456789",
        &["purge", "--tag", "t1"],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("401") && text.contains("not one of this edge's tokens"),
        "{text}"
    );
    assert!(is_hit(&client, &plain("/t")).await);
    let (ok, text) = edge_cli(
        process.admin,
        OPS_TOKEN,
        &["purge", "--tag", "t1", "--soft"],
    );
    assert!(ok, "{text}");
    assert!(
        client
            .get(&plain("/t"))
            .await
            .header("cache-status")
            .unwrap()
            .contains("fwd=stale")
    );
    let (ok, text) = edge_cli(process.admin, OPS_TOKEN, &["prewarm", &plain("/missing")]);
    assert!(!ok, "a failed URL fails the command: {text}");
    assert!(
        text.contains("FAIL 404") && text.contains("answered 404"),
        "{text}"
    );
    let (ok, text) = edge_cli(
        process.admin,
        OPS_TOKEN,
        &["purge", "--url", "a", "--host", "b"],
    );
    assert!(!ok && text.contains("cannot be used with"), "{text}");
    process.stop();
}
