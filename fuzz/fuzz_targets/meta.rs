//! `edge::fuzzing::meta`: decoding a stored entry (the JSON the store writes next to a body and
//! reads back at startup, `serde_json::from_slice::<Meta>`), then what every hit reads from
//! it: status, header map, parsed facts, times.
//!
//! Input: the stored bytes, as found on disk.
#![no_main]

use edge::fuzzing::meta::{self, Meta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = serde_json::from_slice::<Meta>(data) else {
        return;
    };
    // Encoding is stable: what we write back decodes to the same entry and encodes the same.
    let json = serde_json::to_vec(&decoded).expect("a decoded Meta encodes");
    let again: Meta = serde_json::from_slice(&json).expect("an encoded Meta decodes");
    assert_eq!(again, decoded);
    assert_eq!(serde_json::to_vec(&again).unwrap(), json);

    let _ = decoded.status();
    let _ = decoded.request_time();
    let _ = decoded.response_time();
    let _ = decoded.overhead();
    let map = decoded.header_map();
    assert!(map.len() <= decoded.headers.len());
    let facts = decoded.facts();
    assert_eq!(facts.cc, edge::fuzzing::policy::CacheControl::parse(map));

    // The header lines survive a store round trip byte-exact (set_headers is what a 304
    // revalidation does to a stored entry).
    let mut updated = again.clone();
    updated.set_headers(map);
    assert_eq!(updated.header_map(), map);
    assert_eq!(meta::encode_headers(updated.header_map()), updated.headers);

    let t = decoded.request_time();
    assert_eq!(meta::millis(t), decoded.request_time);
});
