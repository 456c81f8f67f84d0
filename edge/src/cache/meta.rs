//! What is stored about a cached response besides its body chunks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cacache::Integrity;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::policy::StoredFacts;

/// Bumped when the stored format changes; entries of another version are dropped at startup.
/// 2: primary keys carry the scheme for sites that key on it.
/// 3: cache-key rule parts start with U+0003 (U+0001 marked them as slices); tags.
pub const FORMAT_VERSION: u32 = 3;

/// Headers a response may gain over its stored ones without the map growing.
const RESPONSE_HEADROOM: usize = 12;

/// One content-addressed piece of a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub sri: Integrity,
    pub len: u64,
}

/// A stored response: head, timing and the chunks of its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    /// The variant key this entry is stored under (checked on load).
    pub key: String,
    pub status: u16,
    /// Header lines in order. Values are kept byte-exact as Latin-1 strings: header values may
    /// carry obs-text bytes that are not UTF-8.
    pub headers: Vec<(String, String)>,
    /// Milliseconds since the Unix epoch when the origin request was sent / answered
    /// (RFC 9111 4.2.3 `request_time` and `response_time`).
    pub request_time: u64,
    pub response_time: u64,
    pub body_len: u64,
    pub chunks: Vec<ChunkRef>,
    /// Set on a sliced object: its body is not in `chunks` but in slice entries of this size
    /// (see `key::slice`), each fetched when first needed.
    #[serde(default)]
    pub sliced: Option<u64>,
    /// Surrogate keys (`Surrogate-Key`, `Cache-Tag`) a purge by tag finds this entry by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Set by a soft purge (ms since the Unix epoch): the entry counts as expired since then,
    /// so the next request revalidates (and `stale-while-revalidate` / `stale-if-error` still
    /// apply). A refresh by a 304 clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<u64>,
    /// `headers` parsed once: every lookup, freshness check and response reads them.
    #[serde(skip)]
    pub parsed: std::sync::OnceLock<Parsed>,
}

/// What every hit reads from a stored head, parsed on first use.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    map: HeaderMap,
    facts: StoredFacts,
}

impl Meta {
    /// The stored status, falling back to 500 for a corrupt value (never expected: the meta is
    /// integrity-checked on load).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stored headers, parsed on first use.
    pub fn header_map(&self) -> &HeaderMap {
        &self.parsed().map
    }

    /// The stored headers as the start of a response, with room for what the edge adds on
    /// the way out (Age, Accept-Ranges, Via, Cache-Status, Alt-Svc) and a site's header
    /// edits: one growth of the clone here, where each of those crossing its capacity would
    /// reallocate it again (a clone's entries have no spare capacity).
    pub fn response_headers(&self) -> HeaderMap {
        let mut map = self.header_map().clone();
        map.reserve(RESPONSE_HEADROOM);
        map
    }

    /// What freshness, age and Vary rules need from the stored headers, parsed on first use.
    pub fn facts(&self) -> &StoredFacts {
        &self.parsed().facts
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| {
            let map = self.parse_headers();
            let facts = StoredFacts::parse(&map);
            Parsed { map, facts }
        })
    }

    fn parse_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let bytes: Vec<u8> = value.chars().map(|c| c as u32 as u8).collect();
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                map.append(name, value);
            }
        }
        map
    }

    pub fn set_headers(&mut self, headers: &HeaderMap) {
        self.headers = encode_headers(headers);
        self.parsed = std::sync::OnceLock::new();
    }

    pub fn request_time(&self) -> SystemTime {
        from_millis(self.request_time)
    }

    pub fn response_time(&self) -> SystemTime {
        from_millis(self.response_time)
    }

    /// Bytes this entry costs on disk beyond its chunks (approximate: the serialized meta).
    pub fn overhead(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 8)
            .sum();
        (headers + self.key.len() + self.chunks.len() * 80 + 256) as u64
    }
}

/// Header lines as stored in [`Meta::headers`].
pub fn encode_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let latin1: String = v.as_bytes().iter().map(|&b| b as char).collect();
            (n.as_str().to_owned(), latin1)
        })
        .collect()
}

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_byte_exact() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", "b=2".parse().unwrap());
        let mut meta = Meta {
            format: FORMAT_VERSION,
            key: "k".into(),
            status: 200,
            headers: Vec::new(),
            request_time: 1,
            response_time: 2,
            body_len: 0,
            chunks: Vec::new(),
            sliced: None,
            tags: Vec::new(),
            stale_since: None,
            parsed: Default::default(),
        };
        meta.set_headers(&h);
        let json = serde_json::to_vec(&meta).unwrap();
        let back: Meta = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.header_map(), &h);
    }
}
