//! Signed URLs and tokens with real signers: `edge sign` (quicdn's format), botocore's
//! `CloudFrontSigner` and the `akamai-edgeauth` package (in the venv `scripts/test.sh` makes),
//! checked by real clients over HTTP/1.1 and HTTP/2.

use std::path::{Path, PathBuf};
use std::process::Command;

use edge::rules::PathRule;
use edge::rules::token::{AkamaiConfig, CloudFrontKey, NativeKey, TokenConfig};

use crate::support::edge::{Proto, TestEdge, metric};
use crate::support::origin::{Reply, TestOrigin};

const SECRET: &str = "hex:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const AKAMAI_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `edge sign` with the test secret.
fn edge_sign(url: &str, args: &[&str]) -> String {
    output(
        Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(["sign", url, "--key", "k1", "--secret", SECRET])
            .args(args),
    )
}

/// The venv's Python running `tests/sign_tokens.py`.
fn signer(args: &[&str]) -> String {
    let python = crate::support::test_python("botocore, rsa and akamai-edgeauth");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sign_tokens.py");
    output(Command::new(python).arg(script).args(args))
}

/// Objects the edge may keep 10 minutes, each answering `body`.
fn objects(origin: &TestOrigin, paths: &[&str], body: &'static str) {
    for path in paths {
        origin.route(path, Reply::ok(body).header("cache-control", "max-age=600"));
    }
}

fn native() -> TokenConfig {
    TokenConfig {
        required: true,
        keys: vec![NativeKey {
            id: "k1".into(),
            secret: edge::config::Secret::new(SECRET),
        }],
        ..TokenConfig::default()
    }
}

async fn edge_with(origin: &TestOrigin, token: TokenConfig, rules: Vec<PathRule>) -> TestEdge {
    TestEdge::start_with(&origin.url(), move |c| {
        c.sites[0].token = token;
        c.sites[0].rules = rules;
        // One object over http and https, so fetches count signatures, not schemes.
        c.sites[0].scheme = edge::config::SchemePolicy::Shared;
    })
    .await
}

/// The path and query of a URL the signers made (`http://localhost:PORT/…`).
fn path_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    url[after..].find('/').map_or("/", |i| &url[after + i..])
}

async fn get(edge: &TestEdge, proto: Proto, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = edge
        .client(proto)
        .get_with(&edge.url(proto, path), headers)
        .await;
    (r.status.as_u16(), r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_signed_urls_from_edge_sign_are_checked_and_keyed_without_the_signature() {
    let origin = TestOrigin::start().await;
    objects(&origin, &["/v/a.mp4"], "video");
    objects(&origin, &["/public/x"], "open");
    let open = PathRule {
        path: "/public/*".into(),
        token: Some(false),
        ..PathRule::default()
    };
    let edge = edge_with(&origin, native(), vec![open]).await;
    for (i, proto) in [Proto::H1, Proto::H2].into_iter().enumerate() {
        // Two valid signatures (different expiries) of one object: one object, one fetch.
        let signed = edge_sign("/v/a.mp4", &["--expires", &format!("{}m", 10 + i)]);
        assert_eq!(
            get(&edge, proto, &signed, &[]).await,
            (200, "video".into()),
            "{signed}"
        );
        let (status, body) = get(&edge, proto, &signed.replace("/v/a.mp4", "/v/b.mp4"), &[]).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("signature does not match"), "{body}");
    }
    assert_eq!(
        origin.hits("/v/a.mp4"),
        1,
        "the signature is not part of the key"
    );
    let expired = edge_sign("/v/a.mp4", &["--expires", &(now() - 1).to_string()]);
    let (status, body) = get(&edge, Proto::H1, &expired, &[]).await;
    assert_eq!(status, 410, "{body}");
    assert!(body.contains("expired"), "{body}");
    let (status, body) = get(&edge, Proto::H1, "/v/a.mp4", &[]).await;
    assert_eq!(status, 403);
    assert!(body.contains("has none"), "{body}");
    let elsewhere = edge_sign("/v/a.mp4", &["--expires", "1m", "--ip", "192.0.2.0/24"]);
    let (status, body) = get(&edge, Proto::H1, &elsewhere, &[]).await;
    assert_eq!(status, 403);
    assert!(body.contains("another client address"), "{body}");
    let not_yet = edge_sign("/v/a.mp4", &["--expires", "2h", "--starts", "1h"]);
    assert_eq!(get(&edge, Proto::H1, &not_yet, &[]).await.0, 410);
    assert_eq!(get(&edge, Proto::H1, "/public/x", &[]).await.0, 200);
    // No refusal cost the origin a request.
    assert_eq!(origin.total_hits(), 2);
    let m = edge.metrics().await;
    let checks = |format: &str, result: &str| {
        metric(
            &m,
            &format!(r#"quicdn_token_checks_total{{format="{format}",result="{result}"}}"#),
        )
    };
    assert_eq!(checks("native", "ok"), 2.0, "{m}");
    assert_eq!(checks("native", "bad_signature"), 2.0, "{m}");
    assert_eq!(checks("native", "expired"), 1.0, "{m}");
    assert_eq!(checks("native", "not_yet_valid"), 1.0, "{m}");
    assert_eq!(checks("native", "wrong_ip"), 1.0, "{m}");
    assert_eq!(checks("none", "missing"), 1.0, "{m}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sign_takes_the_key_from_the_sites_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[site]]
hosts = ["*.example.com"]
origin = "http://127.0.0.1:9"
[site.token]
required = true
[[site.token.key]]
id = "old"
secret = "{SECRET}"
[[site.token.key]]
id = "new"
secret = "base64:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"#
        ),
    )
    .unwrap();
    let sign = |extra: &[&str]| {
        output(
            Command::new(env!("CARGO_BIN_EXE_edge"))
                .arg("--config")
                .arg(&config)
                .args(["sign", "https://cdn.example.com/a?b=1", "--expires", "1h"])
                .args(extra),
        )
    };
    let first = sign(&[]);
    assert!(
        first.starts_with("https://cdn.example.com/a?b=1&exp=") && first.contains("&kid=old&sig="),
        "{first}"
    );
    assert!(sign(&["--key", "new"]).contains("&kid=new&sig="));
    let refused = Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("--config")
        .arg(&config)
        .args(["sign", "https://other.test/a", "--expires", "1h"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no site in the config serves other.test"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_token_on_the_manifest_unlocks_its_segments_by_cookie() {
    let origin = TestOrigin::start().await;
    let paths = [
        "/hls/show/master.m3u8",
        "/hls/show/seg-1.ts",
        "/hls/other/seg-1.ts",
    ];
    objects(&origin, &paths, "m");
    let token = TokenConfig {
        set_cookie: true,
        ..native()
    };
    let edge = edge_with(&origin, token, Vec::new()).await;
    let manifest = edge_sign(
        "/hls/show/master.m3u8",
        &["--expires", "10m", "--prefix", "/hls/show/"],
    );
    for proto in [Proto::H1, Proto::H2] {
        let r = edge.client(proto).get(&edge.url(proto, &manifest)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cookie = r.header("set-cookie").expect("a Set-Cookie").to_owned();
        assert!(cookie.starts_with("quicdn_token=prefix="), "{cookie}");
        assert!(cookie.contains("; Path=/hls/show/; Max-Age="), "{cookie}");
        let (name_value, _) = cookie.split_once(';').unwrap();
        let with = [("cookie", name_value)];
        assert_eq!(get(&edge, proto, "/hls/show/seg-1.ts", &with).await.0, 200);
        assert_eq!(get(&edge, proto, "/hls/show/seg-1.ts", &[]).await.0, 403);
        let (status, body) = get(&edge, proto, "/hls/other/seg-1.ts", &with).await;
        assert_eq!(status, 403);
        assert!(body.contains("does not cover this path"), "{body}");
        // The cookie came back: no new one.
        let again = edge
            .client(proto)
            .get_with(&edge.url(proto, "/hls/show/seg-1.ts"), &with)
            .await;
        assert!(again.header("set-cookie").is_none());
    }
    assert_eq!(origin.hits("/hls/other/seg-1.ts"), 0);
    edge.stop().await;
}

/// A CloudFront key pair made by the `rsa` package: the private key's path and the public
/// key as `BEGIN PUBLIC KEY` (what CloudFront takes), converted by openssl.
fn cloudfront_keys(dir: &Path) -> (PathBuf, PathBuf) {
    signer(&["cf-keygen", dir.to_str().unwrap()]);
    let spki = dir.join("cf-public-spki.pem");
    output(
        Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_in", "-pubout", "-in"])
            .arg(dir.join("cf-public.pem"))
            .arg("-out")
            .arg(&spki),
    );
    (dir.join("cf-private.pem"), spki)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudfront_signed_urls_and_cookies_made_by_botocore() {
    let origin = TestOrigin::start().await;
    objects(
        &origin,
        &["/img/a.jpg", "/img/b.jpg", "/img/c.jpg?w=100"],
        "jpg",
    );
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = cloudfront_keys(dir.path());
    // One key as a file (SPKI), the other inline (PKCS#1, what `rsa` writes).
    let inline = std::fs::read_to_string(dir.path().join("cf-public.pem")).unwrap();
    let token = TokenConfig {
        required: true,
        cloudfront: vec![
            CloudFrontKey {
                key_pair_id: "K2JCJMDEHXQW5F".into(),
                public_key: public.to_string_lossy().into_owned(),
            },
            CloudFrontKey {
                key_pair_id: "KINLINE".into(),
                public_key: inline,
            },
        ],
        ..TokenConfig::default()
    };
    let edge = edge_with(&origin, token, Vec::new()).await;
    let private = private.to_str().unwrap();
    let cf =
        |cmd: &str, key: &str, args: &[&str]| signer(&[&[cmd, key, private][..], args].concat());
    let exp = (now() + 600).to_string();
    let base = edge.url(Proto::H1, "");
    let (id, a, b, all) = (
        "K2JCJMDEHXQW5F",
        format!("{base}/img/a.jpg"),
        format!("{base}/img/b.jpg"),
        format!("{base}/img/*"),
    );
    let canned = cf("cf-canned", id, &[&a, &exp]);
    assert!(canned.contains("Expires=") && canned.contains("Key-Pair-Id=K2JCJMDEHXQW5F"));
    assert_eq!(
        get(&edge, Proto::H1, path_of(&canned), &[]).await,
        (200, "jpg".into())
    );
    // With the application's own query, which the canned policy covers.
    let with_query = cf(
        "cf-canned",
        "KINLINE",
        &[&format!("{base}/img/c.jpg?w=100"), &exp],
    );
    assert_eq!(
        get(&edge, Proto::H1, path_of(&with_query), &[]).await.0,
        200
    );
    let (status, body) = get(
        &edge,
        Proto::H1,
        &path_of(&with_query).replace("w=100", "w=900"),
        &[],
    )
    .await;
    assert_eq!(
        (status, body.contains("signature does not match")),
        (403, true),
        "{body}"
    );
    // A custom policy with a wildcard resource covers every image; an IP condition elsewhere.
    let custom = cf("cf-custom", id, &[&b, &all, &exp]);
    assert!(custom.contains("Policy="));
    assert_eq!(get(&edge, Proto::H1, path_of(&custom), &[]).await.0, 200);
    let other_ip = cf("cf-custom", id, &[&b, &all, &exp, "203.0.113.0/24"]);
    let (status, body) = get(&edge, Proto::H1, path_of(&other_ip), &[]).await;
    assert_eq!(
        (status, body.contains("another client address")),
        (403, true),
        "{body}"
    );
    let expired = cf("cf-canned", id, &[&a, &(now() - 5).to_string()]);
    assert_eq!(get(&edge, Proto::H1, path_of(&expired), &[]).await.0, 410);
    // Signed cookies for a whole path, over HTTP/2.
    let h2_base = edge.url(Proto::H2, "");
    let cookies = cf("cf-cookie", id, &[&format!("{h2_base}/img/*"), &exp]);
    assert_eq!(
        get(&edge, Proto::H2, "/img/a.jpg", &[("cookie", &cookies)])
            .await
            .0,
        200
    );
    assert_eq!(get(&edge, Proto::H2, "/img/a.jpg", &[]).await.0, 403);
    // A URL signed for another host is not this request's.
    let foreign = cf(
        "cf-canned",
        id,
        &["https://d111.cloudfront.net/img/a.jpg", &exp],
    );
    assert_eq!(get(&edge, Proto::H1, path_of(&foreign), &[]).await.0, 403);
    assert_eq!(
        origin.hits("/img/a.jpg"),
        1,
        "one fetch for every valid signature"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn akamai_tokens_made_by_edgeauth_in_query_cookie_and_header() {
    let origin = TestOrigin::start().await;
    objects(&origin, &["/v/one.mp4", "/v/two.mp4", "/w/x.mp4"], "mp4");
    let token = TokenConfig {
        required: true,
        akamai: Some(AkamaiConfig {
            keys: vec![
                edge::config::Secret::new("00".repeat(16)),
                edge::config::Secret::new(AKAMAI_KEY),
            ],
            ..AkamaiConfig::default()
        }),
        ..TokenConfig::default()
    };
    let edge = edge_with(&origin, token, Vec::new()).await;
    let exp = (now() + 600).to_string();
    let acl = signer(&["akamai-acl", AKAMAI_KEY, "/v/*", &exp]);
    assert!(acl.contains("acl=/v/*") && acl.contains("~hmac="), "{acl}");
    let q = format!("/v/one.mp4?__token__={acl}");
    assert_eq!(get(&edge, Proto::H1, &q, &[]).await, (200, "mp4".into()));
    let cookie = format!("__token__={acl}");
    assert_eq!(
        get(&edge, Proto::H2, "/v/two.mp4", &[("cookie", &cookie)])
            .await
            .0,
        200
    );
    assert_eq!(
        get(&edge, Proto::H1, "/v/two.mp4", &[("__token__", &acl)])
            .await
            .0,
        200
    );
    let (status, body) = get(&edge, Proto::H1, &format!("/w/x.mp4?__token__={acl}"), &[]).await;
    assert_eq!(
        (status, body.contains("does not cover")),
        (403, true),
        "{body}"
    );
    let widened = acl.replace("acl=/v/*", "acl=/*");
    assert_eq!(
        get(
            &edge,
            Proto::H1,
            &format!("/w/x.mp4?__token__={widened}"),
            &[]
        )
        .await
        .0,
        403
    );
    let url_token = signer(&["akamai-url", AKAMAI_KEY, "/w/x.mp4", &exp]);
    assert_eq!(
        get(
            &edge,
            Proto::H1,
            &format!("/w/x.mp4?__token__={url_token}"),
            &[]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get(
            &edge,
            Proto::H1,
            &format!("/v/one.mp4?__token__={url_token}"),
            &[]
        )
        .await
        .0,
        403
    );
    let bound = signer(&["akamai-acl", AKAMAI_KEY, "/v/*", &exp, "192.0.2.9"]);
    assert_eq!(
        get(
            &edge,
            Proto::H1,
            &format!("/v/one.mp4?__token__={bound}"),
            &[]
        )
        .await
        .0,
        403
    );
    let other_key = signer(&["akamai-acl", "ff".repeat(16).as_str(), "/v/*", &exp]);
    assert_eq!(
        get(
            &edge,
            Proto::H1,
            &format!("/v/one.mp4?__token__={other_key}"),
            &[]
        )
        .await
        .0,
        403
    );
    assert_eq!(origin.hits("/v/one.mp4"), 1);
    assert_eq!(origin.total_hits(), 3, "refusals cost no origin request");
    edge.stop().await;
}

/// A child passes the token on to its parent, which checks it as well (the origin gets the
/// URL without it); a parent that trusts its children by address does not check it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_checks_the_token_its_child_passes_on_unless_it_trusts_the_child() {
    let origin = TestOrigin::start().await;
    objects(&origin, &["/t/a", "/t/b"], "t");
    for trust in [false, true] {
        let mut token = native();
        if trust {
            token.trust_from = vec!["127.0.0.0/8".parse().unwrap()];
        }
        let parent = TestEdge::start_with(&origin.url(), move |c| {
            c.name = "parent".into();
            c.sites[0].token = token;
        })
        .await;
        let up = crate::tiers::parent_of(&parent);
        let child = TestEdge::start_with(&origin.url(), move |c| {
            c.name = "child".into();
            c.sites[0].token = native();
            c.sites[0].parents = vec![up];
            c.sites[0].fallback = edge::upstream::parent::Fallback::Error;
        })
        .await;
        let path = if trust { "/t/b" } else { "/t/a" };
        let signed = edge_sign(path, &["--expires", "5m"]);
        let r = child
            .client(Proto::H1)
            .get(&child.url(Proto::H1, &signed))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let status = r.header("cache-status").unwrap_or_default().to_owned();
        assert!(status.starts_with("parent; fwd=uri-miss"), "{status}");
        let m = parent.metrics().await;
        let result = if trust { "trusted" } else { "ok" };
        let format = if trust { "none" } else { "native" };
        let series = format!(r#"quicdn_token_checks_total{{format="{format}",result="{result}"}}"#);
        assert_eq!(metric(&m, &series), 1.0, "{m}");
        assert_eq!(
            origin.hits(path),
            1,
            "the origin sees the URL without the token"
        );
        child.stop().await;
        parent.stop().await;
    }
}
