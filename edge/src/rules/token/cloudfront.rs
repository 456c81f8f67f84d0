//! CloudFront signed URLs and signed cookies, as AWS's signers make them (botocore's
//! `CloudFrontSigner`, the AWS SDKs): a canned policy (`Expires`) or a custom one (`Policy`),
//! `Signature` (RSA-SHA1 over the policy JSON) and `Key-Pair-Id` naming a public key, each in
//! CloudFront's base64 (`+` `=` `/` written `-` `_` `~`).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Claims, Grant, Refusal, RuleError, invalid, percent_decode, split_params};
use crate::rules::PathPattern;

pub(super) const PARAMS: [&str; 4] = ["Expires", "Policy", "Signature", "Key-Pair-Id"];
const COOKIES: [&str; 4] = [
    "CloudFront-Expires",
    "CloudFront-Policy",
    "CloudFront-Signature",
    "CloudFront-Key-Pair-Id",
];

/// The public keys by key pair (or public key) id: each the DER of an RSAPublicKey.
pub(super) struct CloudFrontKeys {
    pub(super) keys: HashMap<String, Vec<u8>>,
}

/// The four values, from the query or from cookies.
#[derive(Default)]
struct Signed<'a> {
    expires: Option<&'a str>,
    policy: Option<&'a str>,
    signature: Option<&'a str>,
    key_pair_id: Option<&'a str>,
}

impl CloudFrontKeys {
    /// Checks a request's CloudFront signature: in the query, else in `CloudFront-*` cookies;
    /// `None` when it carries neither. `url` is the request's URL without the four
    /// parameters (`https://host/path?rest`), what the policy's resource must match.
    pub(super) fn check(
        &self,
        query: Option<&str>,
        cookie: &dyn Fn(&str) -> Option<String>,
        url: &str,
        ip: IpAddr,
        now: u64,
    ) -> Option<Result<Grant, Refusal>> {
        let mut from_query = Signed::default();
        for (name, value, _) in query.into_iter().flat_map(split_params) {
            match name {
                "Expires" => from_query.expires = Some(value),
                "Policy" => from_query.policy = Some(value),
                "Signature" => from_query.signature = Some(value),
                "Key-Pair-Id" => from_query.key_pair_id = Some(value),
                _ => {}
            }
        }
        if from_query.signature.is_some() {
            return Some(self.verify(&from_query, url, ip, now));
        }
        let values: Vec<Option<String>> = COOKIES.iter().map(|n| cookie(n)).collect();
        values[2].as_ref()?;
        let from_cookies = Signed {
            expires: values[0].as_deref(),
            policy: values[1].as_deref(),
            signature: values[2].as_deref(),
            key_pair_id: values[3].as_deref(),
        };
        Some(self.verify(&from_cookies, url, ip, now))
    }

    fn verify(
        &self,
        signed: &Signed<'_>,
        url: &str,
        ip: IpAddr,
        now: u64,
    ) -> Result<Grant, Refusal> {
        let id = signed
            .key_pair_id
            .ok_or(Refusal::Malformed("no Key-Pair-Id"))?;
        let key = self
            .keys
            .get(percent_decode(id).as_ref())
            .ok_or(Refusal::UnknownKey)?;
        let signature = decode(signed.signature.unwrap_or_default())
            .ok_or(Refusal::Malformed("Signature is not CloudFront base64"))?;
        let (policy, canned) = match (signed.policy, signed.expires) {
            (Some(p), _) => (
                decode(p).ok_or(Refusal::Malformed("Policy is not CloudFront base64"))?,
                false,
            ),
            (None, Some(e)) => {
                let expires: u64 = e.parse().map_err(|_| Refusal::Malformed("Expires"))?;
                (canned_policy(url, expires).into_bytes(), true)
            }
            (None, None) => return Err(Refusal::Malformed("neither Expires nor Policy")),
        };
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            key,
        )
        .verify(&policy, &signature)
        .map_err(|_| Refusal::BadSignature)?;
        let (claims, resource) = parse_policy(&policy)?;
        // A canned policy names the very URL it was signed for, checked by the signature.
        if !canned
            && let Some(resource) = resource
            && !PathPattern::glob(&resource).matches(url)
        {
            return Err(Refusal::WrongPath);
        }
        claims.check(ip, now)?;
        Ok(Grant::default())
    }
}

/// The canned policy CloudFront signs for `url` expiring at `expires` (its exact bytes: the
/// signers make it with no whitespace, in this order).
pub fn canned_policy(url: &str, expires: u64) -> String {
    let resource = serde_json::to_string(url).unwrap_or_default();
    format!(
        r#"{{"Statement":[{{"Resource":{resource},"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    )
}

/// The conditions and resource of a policy (one statement, as CloudFront allows).
fn parse_policy(policy: &[u8]) -> Result<(Claims, Option<String>), Refusal> {
    let bad = Refusal::Malformed("the policy is not CloudFront's JSON");
    let v: serde_json::Value = serde_json::from_slice(policy).map_err(|_| bad)?;
    let statement = match v.get("Statement").and_then(|s| s.as_array()) {
        Some(list) if list.len() == 1 => &list[0],
        _ => return Err(bad),
    };
    let condition = statement.get("Condition").ok_or(bad)?;
    let epoch = |name: &str| {
        condition
            .get(name)
            .and_then(|c| c.get("AWS:EpochTime"))
            .and_then(serde_json::Value::as_u64)
    };
    let mut claims = Claims {
        expires: Some(epoch("DateLessThan").ok_or(bad)?),
        starts: epoch("DateGreaterThan"),
        ..Claims::default()
    };
    if let Some(source) = condition
        .get("IpAddress")
        .and_then(|c| c.get("AWS:SourceIp"))
    {
        claims.ip = Some(super::parse_net(source.as_str().ok_or(bad)?)?);
    }
    let resource = match statement.get("Resource") {
        None => None,
        Some(r) => Some(r.as_str().ok_or(bad)?.to_owned()),
    };
    Ok((claims, resource))
}

/// CloudFront's base64: `-` `_` `~` for `+` `=` `/`.
fn decode(text: &str) -> Option<Vec<u8>> {
    let text: String = percent_decode(text)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            c => c,
        })
        .collect();
    STANDARD.decode(text).ok()
}

/// The RSAPublicKey DER inside a PEM public key: `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo,
/// what CloudFront's console takes) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
pub(super) fn rsa_public_key(pem: &str, at: &str) -> Result<Vec<u8>, RuleError> {
    let bad = |what: &str| invalid(at, format!("public_key: {what}"));
    let body = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin)? + begin.len();
        let stop = pem[start..].find(&end)? + start;
        let b64: String = pem[start..stop].split_whitespace().collect();
        STANDARD.decode(b64).ok()
    };
    if let Some(der) = body("RSA PUBLIC KEY") {
        return Ok(der);
    }
    let der = body("PUBLIC KEY").ok_or_else(|| bad("no PEM public key in it"))?;
    // SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING }
    let (spki, _) = der_item(&der, 0x30).ok_or_else(|| bad("not a SubjectPublicKeyInfo"))?;
    let (algorithm, rest) = der_item(spki, 0x30).ok_or_else(|| bad("no algorithm"))?;
    const RSA_ENCRYPTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    if !algorithm.starts_with(RSA_ENCRYPTION) {
        return Err(bad("not an RSA key (CloudFront keys are RSA 2048)"));
    }
    let (bits, _) = der_item(rest, 0x03).ok_or_else(|| bad("no key bits"))?;
    match bits.split_first() {
        Some((0, key)) => Ok(key.to_vec()),
        _ => Err(bad("bad key bits")),
    }
}

/// The contents of the DER item of `tag` at the start of `der`, and what follows it.
fn der_item(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = der.split_first()?;
    if t != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = match len {
        n if n < 0x80 => usize::from(n),
        0x81..=0x84 => {
            let n = usize::from(len & 0x7f);
            let (bytes, after) = rest.split_at_checked(n)?;
            rest = after;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        }
        _ => return None,
    };
    rest.split_at_checked(len)
}
