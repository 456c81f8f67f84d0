//! Names and record data in presentation format, as the config writes them (RFC 1035 5.1 for
//! names, TXT, MX and CAA values).

use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::{CAA, MX, TXT};

/// A name in config: `@` is `origin`, a name ending in `.` is absolute, others are relative to
/// `origin` (RFC 1035 5.1).
pub(super) fn parse_name(text: &str, origin: &Name) -> Result<Name, String> {
    let text = text.trim();
    if text == "@" {
        return Ok(origin.clone());
    }
    let name = parse_text(text)?;
    if name.is_fqdn() {
        Ok(name)
    } else {
        name.append_domain(origin)
            .map_err(|e| format!("name {text:?} relative to {origin}: {e}"))
    }
}

/// A name that is absolute whether or not it ends in `.`.
pub(super) fn parse_absolute(text: &str) -> Result<Name, String> {
    let mut name = parse_text(text.trim())?;
    name.set_fqdn(true);
    Ok(name)
}

fn parse_text(text: &str) -> Result<Name, String> {
    if text.is_empty() {
        return Err("empty name".into());
    }
    let name = Name::from_str_relaxed(text).map_err(|e| format!("invalid name {text:?}: {e}"))?;
    // A `*` label would be served as a literal name, not as a wildcard (RFC 4592): refuse it
    // rather than surprise.
    if name.iter().any(|label| label == b"*") {
        return Err(format!("{text:?}: wildcards are not supported"));
    }
    Ok(name)
}

/// One string, split into character-strings of at most 255 octets (RFC 1035 3.3.14).
pub(super) fn parse_txt(value: &str) -> Result<TXT, String> {
    let bytes = value.as_bytes();
    let strings: Vec<&[u8]> = if bytes.is_empty() {
        vec![b""]
    } else {
        bytes.chunks(255).collect()
    };
    // RDLENGTH is 16 bits (RFC 1035 3.2.1): each string costs its length octet too.
    let rdlength = bytes.len() + strings.len();
    if rdlength > usize::from(u16::MAX) {
        return Err(format!(
            "TXT data of {} octets does not fit in one record",
            bytes.len()
        ));
    }
    Ok(TXT::from_bytes(strings))
}

/// `preference exchange` (RFC 1035 3.3.9).
pub(super) fn parse_mx(value: &str, origin: &Name) -> Result<MX, String> {
    let mut parts = value.split_whitespace();
    let (Some(preference), Some(exchange), None) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "value {value:?} is not \"preference exchange\", e.g. \"10 mail.example.com.\""
        ));
    };
    let preference = preference
        .parse::<u16>()
        .map_err(|_| format!("MX preference {preference:?} is not a number from 0 to 65535"))?;
    Ok(MX::new(preference, parse_name(exchange, origin)?))
}

/// `flags tag value` (RFC 8659 4.1.1) with the value quoted or a single word; no escapes.
pub(super) fn parse_caa(value: &str) -> Result<CAA, String> {
    let format_hint = || {
        format!("value {value:?} is not 'flags tag \"value\"', e.g. '0 issue \"letsencrypt.org\"'")
    };
    let (flags, rest) = value
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(format_hint)?;
    let (tag, property) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(format_hint)?;
    let flags: u8 = flags
        .parse()
        .map_err(|_| format!("CAA flags {flags:?} are not a number from 0 to 255"))?;
    // Only the issuer-critical bit is defined; the others must be 0 (RFC 8659 4.1).
    if flags & 0x7f != 0 {
        return Err(format!("CAA flags {flags}: only 0 and 128 are valid"));
    }
    let property = property.trim();
    let property = match property.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .filter(|inner| !inner.contains('"'))
            .ok_or_else(format_hint)?,
        None if property.contains(|c: char| c == '"' || c.is_whitespace()) => {
            return Err(format_hint());
        }
        None => property,
    };
    let tag = tag.to_ascii_lowercase();
    // Start from any CAA and set its public fields: the type has no constructor for raw
    // properties.
    let mut caa = CAA::new_issue(false, None, Vec::new());
    caa.issuer_critical = flags & 0x80 != 0;
    caa.reserved_flags = 0;
    caa.tag.clone_from(&tag);
    caa.value = property.as_bytes().to_vec();
    // Catch typos before a CA does (RFC 8659 4.2, 4.3, 4.4).
    let checked = match tag.as_str() {
        "issue" | "issuewild" => caa.value_as_issue().map(drop),
        "iodef" => caa.value_as_iodef().map(drop),
        _ => {
            return Err(format!(
                "CAA tag {tag:?}: supported: issue, issuewild, iodef"
            ));
        }
    };
    checked.map_err(|e| format!("CAA {tag} value {property:?}: {e}"))?;
    Ok(caa)
}
