//! Vary (RFC 9111 4.1): which request fields select among a response's variants, and the
//! secondary cache key built from them.

use http::header::{self, HeaderMap, HeaderName};

use super::fields::list_members;

/// Vary handling (RFC 9111 4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    None,
    Star,
    /// Lowercased, sorted and deduplicated field names from all Vary lines.
    Fields(Vec<HeaderName>),
}

/// Reads every Vary line. Members that are not valid field names are skipped: no request can
/// carry such a field, so it could never tell variants apart.
pub fn vary(resp_headers: &HeaderMap) -> Vary {
    let members = list_members(resp_headers, &header::VARY, false);
    if members.iter().any(|m| *m == b"*") {
        return Vary::Star;
    }
    let mut fields: Vec<HeaderName> = members
        .iter()
        .filter_map(|m| HeaderName::from_bytes(m).ok())
        .collect();
    if fields.is_empty() {
        return Vary::None;
    }
    fields.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    fields.dedup();
    Vary::Fields(fields)
}

/// The normalised request values for the Vary `fields`, as a secondary cache key.
///
/// Encoding, per field in sorted order: `name`, `\n`, then `!` for a missing header or `=`
/// followed by the values (all lines, list members trimmed and joined with ", "), then `\n`.
/// Bytes outside printable ASCII and `%` are %-escaped, so values never contain `\n` or NUL and
/// the key is unambiguous.
pub fn vary_key(fields: &[HeaderName], req_headers: &HeaderMap) -> String {
    let mut sorted: Vec<&HeaderName> = fields.iter().collect();
    sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    sorted.dedup();
    let mut key = String::new();
    for name in sorted {
        key.push_str(name.as_str());
        key.push('\n');
        match normalized_values(req_headers, name) {
            Some(values) => {
                key.push('=');
                key.push_str(&values);
            }
            None => key.push('!'),
        }
        key.push('\n');
    }
    key
}

/// All values of `name` joined with ", ", whitespace around commas normalised and empty list
/// members dropped (RFC 9110 5.6.1); None when the header is absent.
fn normalized_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    if !headers.contains_key(name) {
        return None;
    }
    let mut out = String::new();
    for value in headers.get_all(name) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            push_escaped(&mut out, member);
        }
    }
    Some(out)
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}
