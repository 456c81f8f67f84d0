//! Cache keys.
//!
//! A *primary* key names a resource: the scheme (for sites that key on it), the lowercase host
//! (without port) and the path-and-query. A
//! *variant* key adds the request header values its response's `Vary` names, so each variant
//! is its own entry. The two are joined with NUL, which cannot occur in either part.

/// Starts each request-header or cookie part that a site's cache-key rule appends to the path
/// of a primary key. U+0003 occurs in no request target and in no other separator here, so a
/// purge of a URL finds every keyed form of it (`purge_matches`).
pub const PART: char = '\u{3}';

/// Whether the primary key `key` is `url` (a primary key as a purge of it computes it), bare
/// or with header and cookie parts.
pub fn purge_matches(key: &str, url: &str) -> bool {
    key.strip_prefix(url)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(PART))
}

/// The host a primary key names (after its scheme, if it keys on one).
pub fn host_of(primary: &str) -> &str {
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| primary.strip_prefix(scheme))
        .unwrap_or(primary);
    rest.split('/').next().unwrap_or(rest)
}

/// The primary key for a request target: `https://host/path` when keyed on the scheme, else
/// `host/path` (a host never contains `://`, so the two forms cannot collide).
pub fn primary(scheme: Option<&str>, host: &str, path_and_query: &str) -> String {
    let scheme_len = scheme.map_or(0, |s| s.len() + 3);
    let mut key = String::with_capacity(scheme_len + host.len() + path_and_query.len());
    if let Some(scheme) = scheme {
        key.push_str(scheme);
        key.push_str("://");
    }
    key.push_str(&host.to_ascii_lowercase());
    key.push_str(path_and_query);
    key
}

/// The variant key: the primary key plus the normalised Vary values ("" when no Vary).
pub fn variant(primary: &str, vary_key: &str) -> String {
    format!("{primary}\0{vary_key}")
}

/// Whether `key` is `variant(primary, vary_key)`, without building it.
pub fn is_variant(key: &str, primary: &str, vary_key: &str) -> bool {
    key.strip_prefix(primary)
        .and_then(|rest| rest.strip_prefix('\0'))
        .is_some_and(|rest| rest == vary_key)
}

/// The key of slice `index` of a sliced object stored under `variant`. U+0001 keeps slice keys
/// apart from variant keys (which never contain it).
pub fn slice(variant: &str, index: u64) -> String {
    format!("{variant}\u{1}{index}")
}

/// Whether a key names a slice rather than a whole response.
pub fn is_slice(key: &str) -> bool {
    key.contains('\u{1}')
}

/// The object key a slice key belongs to; `None` for other keys.
pub fn object_of_slice(key: &str) -> Option<&str> {
    key.split_once('\u{1}').map(|(object, _)| object)
}

/// The primary part of a variant key.
pub fn primary_of(variant: &str) -> &str {
    variant.split('\0').next().unwrap_or(variant)
}

/// A key as logs show it: its NUL separators as spaces (a log line must stay one line of text).
pub fn shown(key: &str) -> String {
    key.replace('\0', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let p = primary(None, "CDN.Example", "/a?b=1");
        assert_eq!(p, "cdn.example/a?b=1");
        assert_eq!(
            primary(Some("https"), "cdn.example", "/a"),
            "https://cdn.example/a"
        );
        assert_ne!(
            primary(Some("http"), "c", "/"),
            primary(Some("https"), "c", "/")
        );
        let v = variant(&p, "accept-encoding\ngzip");
        assert_eq!(primary_of(&v), p);
        assert!(is_variant(&v, &p, "accept-encoding\ngzip"));
        assert!(is_variant(&variant(&p, ""), &p, ""));
        assert!(!is_variant(&v, &p, ""));
        assert!(!is_variant(&variant(&p, ""), &p, "accept-encoding\ngzip"));
        assert!(!is_variant(&variant("cdn.example/a?b=12", ""), &p, ""));
        assert_ne!(variant(&p, ""), p);
        let s = slice(&v, 7);
        assert!(is_slice(&s) && !is_slice(&v));
        assert_eq!(primary_of(&s), p);
        assert_eq!(object_of_slice(&s), Some(v.as_str()));
        assert_eq!(object_of_slice(&v), None);
    }
}
