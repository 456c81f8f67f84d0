use std::net::IpAddr;

use super::*;

const NOW: u64 = 1_800_000_000;

fn native_keys() -> native::NativeKeys {
    let mut keys = HashMap::new();
    keys.insert(
        "k1".to_owned(),
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef"),
    );
    native::NativeKeys { keys }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn opts(expires: u64) -> SignOptions {
    SignOptions {
        key_id: "k1".into(),
        expires,
        ..SignOptions::default()
    }
}

#[test]
fn a_native_url_checks_out_and_every_change_is_refused() {
    let keys = native_keys();
    let url = sign(b"0123456789abcdef", "/v/a.mp4?x=1", &opts(NOW + 60));
    assert!(url.starts_with("/v/a.mp4?x=1&exp="), "{url}");
    let check = |u: &str| keys.check_query(u, ip("192.0.2.1"), NOW).unwrap();
    let grant = check(&url).unwrap();
    assert!(grant.prefix.is_none() && grant.cookie.is_none());
    for tampered in [
        url.replace("/v/a.mp4", "/v/b.mp4"),
        url.replace("x=1", "x=2"),
        url.replace(&format!("exp={}", NOW + 60), &format!("exp={}", NOW + 6000)),
    ] {
        assert_eq!(
            check(&tampered).unwrap_err(),
            Refusal::BadSignature,
            "{tampered}"
        );
    }
    assert_eq!(
        check(&url.replace("kid=k1", "kid=k9")).unwrap_err(),
        Refusal::UnknownKey
    );
    let expired = sign(b"0123456789abcdef", "/v/a.mp4", &opts(NOW));
    assert_eq!(check(&expired).unwrap_err(), Refusal::Expired);
    // No token at all, or a `sig` that is not the last parameter: no native token.
    assert!(
        keys.check_query("/v/a.mp4?x=1", ip("192.0.2.1"), NOW)
            .is_none()
    );
    assert!(
        keys.check_query(&format!("{url}&y=2"), ip("192.0.2.1"), NOW)
            .is_none()
    );
}

#[test]
fn a_native_token_limits_the_start_and_the_client_address() {
    let keys = native_keys();
    let o = SignOptions {
        starts: Some(NOW + 10),
        ip: Some("198.51.100.0/24".into()),
        ..opts(NOW + 60)
    };
    let url = sign(b"0123456789abcdef", "/a", &o);
    let at = |addr: &str, now: u64| keys.check_query(&url, ip(addr), now).unwrap();
    assert_eq!(at("198.51.100.7", NOW).unwrap_err(), Refusal::NotYetValid);
    assert!(at("198.51.100.7", NOW + 10).is_ok());
    assert_eq!(at("203.0.113.1", NOW + 10).unwrap_err(), Refusal::WrongIp);
}

#[test]
fn a_native_prefix_token_covers_its_prefix_and_comes_back_as_a_cookie() {
    let keys = native_keys();
    let o = SignOptions {
        prefix: Some("/hls/show/".into()),
        ..opts(NOW + 60)
    };
    let url = sign(b"0123456789abcdef", "/hls/show/master.m3u8", &o);
    let grant = keys
        .check_query(&url, ip("192.0.2.1"), NOW)
        .unwrap()
        .unwrap();
    assert!(grant.covers("/hls/show/seg-1.ts") && !grant.covers("/hls/other/seg-1.ts"));
    let cookie = grant.cookie.unwrap();
    assert_eq!(cookie.path, "/hls/show/");
    // The same parameters on another path under the prefix still check out.
    let moved = url.replace("master.m3u8", "seg-9.ts");
    assert!(
        keys.check_query(&moved, ip("192.0.2.1"), NOW)
            .unwrap()
            .is_ok()
    );
    let from_cookie = keys
        .check_cookie(&cookie.value, ip("192.0.2.1"), NOW)
        .unwrap();
    assert!(from_cookie.covers("/hls/show/seg-2.ts") && from_cookie.cookie.is_none());
    let forged = cookie.value.replace("exp=", "exp=9");
    assert_eq!(
        keys.check_cookie(&forged, ip("192.0.2.1"), NOW)
            .unwrap_err(),
        Refusal::BadSignature
    );
}

#[test]
fn akamai_acl_and_url_tokens() {
    // What akamai-edgeauth makes: hmac over the fields before it (+ url= for URL tokens).
    let secret = b"\xab\xcd\xef\x01\x23\x45\x67\x89";
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let keys = akamai::AkamaiKeys {
        keys: vec![key.clone()],
        field_delimiter: '~',
        acl_delimiter: '!',
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let source = format!("st={}~exp={}~acl=/v/*!/w/*", NOW - 1, NOW + 60);
    let token = format!(
        "{source}~hmac={}",
        hex(ring::hmac::sign(&key, source.as_bytes()).as_ref())
    );
    let grant = keys
        .check(&token, "/v/a.ts", ip("192.0.2.1"), NOW, true)
        .unwrap();
    assert!(grant.covers("/v/a.ts") && grant.covers("/w/b.ts") && !grant.covers("/x/c.ts"));
    assert_eq!(grant.cookie.unwrap().path, "/v/");
    let tampered = token.replace("acl=/v/*", "acl=/*");
    assert_eq!(
        keys.check(&tampered, "/x", ip("192.0.2.1"), NOW, true)
            .unwrap_err(),
        Refusal::BadSignature
    );
    let url_source = format!("exp={}", NOW + 60);
    let signed = format!("{url_source}~url=/v/one.mp4");
    let url_token = format!(
        "{url_source}~hmac={}",
        hex(ring::hmac::sign(&key, signed.as_bytes()).as_ref())
    );
    assert!(
        keys.check(&url_token, "/v/one.mp4", ip("192.0.2.1"), NOW, true)
            .is_ok()
    );
    assert_eq!(
        keys.check(&url_token, "/v/two.mp4", ip("192.0.2.1"), NOW, true)
            .unwrap_err(),
        Refusal::BadSignature
    );
    assert_eq!(
        keys.check(&url_token, "/v/one.mp4", ip("192.0.2.1"), NOW + 60, true)
            .unwrap_err(),
        Refusal::Expired
    );
}

#[test]
fn cloudfront_canned_policy_is_the_signers_bytes() {
    assert_eq!(
        canned_policy("https://d.example/a.jpg?x=1", 1_700_000_000),
        r#"{"Statement":[{"Resource":"https://d.example/a.jpg?x=1","Condition":{"DateLessThan":{"AWS:EpochTime":1700000000}}}]}"#
    );
}

#[test]
fn config_errors_name_the_field() {
    let mut site: SiteConfig = toml::from_str(
        r#"hosts = ["a"]
origin = "http://o"
[token]
required = true
"#,
    )
    .unwrap();
    let err = |s: &SiteConfig| TokenFilter::new(s, None).err().unwrap().to_string();
    assert!(
        err(&site).contains("no key is configured"),
        "{}",
        err(&site)
    );
    site.token.keys.push(NativeKey {
        id: "k1".into(),
        secret: Secret::new("hex:00ff"),
    });
    assert!(err(&site).contains("at least 16"), "{}", err(&site));
    site.token.keys[0].secret = Secret::new("0123456789abcdef0123");
    assert!(err(&site).contains("hex: or base64:"), "{}", err(&site));
    site.token.keys[0].secret = Secret::new("base64:MDEyMzQ1Njc4OWFiY2RlZg==");
    assert!(TokenFilter::new(&site, None).unwrap().is_some());
    // A printed config shows the placeholder, which is refused as a secret.
    let printed = toml::to_string(&site).unwrap();
    assert!(
        !printed.contains("MDEy") && printed.contains("(redacted)"),
        "{printed}"
    );
    let pasted: SiteConfig = toml::from_str(&printed).unwrap();
    assert!(
        err(&pasted).contains("redacted placeholder"),
        "{}",
        err(&pasted)
    );
    site.token.expired_status = 404;
    assert!(err(&site).contains("403 or 410"), "{}", err(&site));
}

#[test]
fn percent_decoding_keeps_bad_escapes() {
    assert_eq!(percent_decode("10.0.0.0%2F8"), "10.0.0.0/8");
    assert_eq!(percent_decode("a%zzb%4"), "a%zzb%4");
}
