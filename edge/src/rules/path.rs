//! Path patterns: literal text and `*` (any run of characters, `/` included), matched against
//! the whole normalised path (RFC 3986 dot segments already removed, so `/static/../admin`
//! cannot match `/static/*`).

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// The literal pieces between the `*`s; `parts.len() - 1` stars.
    parts: Vec<String>,
}

impl PathPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !(text.starts_with('/') || text.starts_with('*')) {
            return Err(format!(
                "path {text:?} must start with / or * (a path, without scheme or host)"
            ));
        }
        if text.contains('?') {
            return Err(format!(
                "path {text:?} contains '?': patterns match the path only (see `key` for the query)"
            ));
        }
        Ok(Self {
            parts: text.split('*').map(str::to_owned).collect(),
        })
    }

    /// A pattern from any text (a token's ACL, a policy's resource): `*` is the only wildcard.
    pub(crate) fn glob(text: &str) -> Self {
        Self {
            parts: text.split('*').map(str::to_owned).collect(),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return false;
        };
        let Some(mut tail) = path.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        // Each middle piece at its first occurrence (leftmost matching is enough for `*`),
        // then the last piece at the very end.
        for piece in middle {
            match tail.find(piece.as_str()) {
                Some(at) => tail = &tail[at + piece.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn stars_match_any_run_literals_match_exactly() {
        assert!(m("/robots.txt", "/robots.txt"));
        assert!(!m("/robots.txt", "/robots.txt2"));
        assert!(m("/static/*", "/static/a/b.css"));
        assert!(m("/static/*", "/static/"));
        assert!(!m("/static/*", "/static"));
        assert!(m("*.css", "/a/b.css"));
        assert!(!m("*.css", "/a/b.css.map"));
        assert!(m("/img/*/thumb-*.jpg", "/img/2026/12/thumb-1.jpg"));
        assert!(!m("/img/*/thumb-*.jpg", "/img/thumb-1.jpg"));
        assert!(m("*", "/anything"));
        assert!(m("/a*a", "/aa") && !m("/a*aa", "/aa"));
    }

    #[test]
    fn a_pattern_is_a_path() {
        assert!(PathPattern::parse("static/*").is_err());
        assert!(PathPattern::parse("/a?b=1").is_err());
    }
}
