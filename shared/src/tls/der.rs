//! The few X.509 fields quicdn reads: rustls does not expose a parsed certificate, and rcgen
//! parses only with a feature that pulls in a full ASN.1 stack. A minimal DER walk suffices.

/// Tags of the DER elements read here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;

/// id-ce-basicConstraints, id-ce-keyUsage, id-ce-subjectKeyIdentifier (2.5.29.x).
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];

/// Parts of a certificate, as slices of its DER.
pub(super) struct CertParts<'a> {
    /// The subject Name, whole element (tag and length included).
    pub(super) subject: &'a [u8],
    /// The SubjectPublicKeyInfo, whole element: what SPKI pins hash.
    pub(super) spki: &'a [u8],
    /// (extension OID, contents of its OCTET STRING value).
    extensions: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> CertParts<'a> {
    /// Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, sigAlg,
    /// issuer, validity, subject, subjectPublicKeyInfo, [1], [2], [3] extensions }, .. }
    pub(super) fn parse(cert: &'a [u8]) -> Option<Self> {
        let (SEQUENCE, body, _) = element(cert)? else {
            return None;
        };
        let (SEQUENCE, tbs, _) = element(body)? else {
            return None;
        };
        let fields = elements(tbs)?;
        let first = usize::from(fields.first()?.tag == VERSION);
        let (subject, spki) = (fields.get(first + 4)?, fields.get(first + 5)?);
        if subject.tag != SEQUENCE || spki.tag != SEQUENCE {
            return None;
        }
        let mut extensions = Vec::new();
        if let Some(list) = fields[first + 6..].iter().find(|f| f.tag == EXTENSIONS) {
            let (SEQUENCE, list, _) = element(list.contents)? else {
                return None;
            };
            for ext in elements(list)? {
                // Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
                // extnValue OCTET STRING }
                let parts = elements(ext.contents)?;
                let (oid, value) = (parts.first()?, parts.last()?);
                if oid.tag != OID || value.tag != OCTET_STRING {
                    return None;
                }
                extensions.push((oid.contents, value.contents));
            }
        }
        Some(Self {
            subject: subject.whole,
            spki: spki.whole,
            extensions,
        })
    }

    fn extension(&self, oid: &[u8]) -> Option<&'a [u8]> {
        self.extensions.iter().find(|e| e.0 == oid).map(|e| e.1)
    }

    /// BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL }
    pub(super) fn is_ca(&self) -> bool {
        let Some(value) = self.extension(BASIC_CONSTRAINTS) else {
            return false;
        };
        let Some((SEQUENCE, constraints, _)) = element(value) else {
            return false;
        };
        matches!(element(constraints), Some((BOOLEAN, [flag], _)) if *flag != 0)
    }

    /// True without a key usage extension (no restriction) or with keyCertSign (bit 5).
    pub(super) fn may_sign_certificates(&self) -> bool {
        let Some(value) = self.extension(KEY_USAGE) else {
            return true;
        };
        matches!(element(value), Some((BIT_STRING, [_unused, bits, ..], _)) if bits & 0x04 != 0)
    }

    pub(super) fn subject_key_id(&self) -> Option<&'a [u8]> {
        match element(self.extension(SUBJECT_KEY_ID)?)? {
            (OCTET_STRING, id, _) => Some(id),
            _ => None,
        }
    }
}

/// The rcgen form of a DER Name, when rcgen can write it back identically: one attribute
/// per RDN, each type once, string values in UTF8String, PrintableString or IA5String.
pub(super) fn distinguished_name(name: &[u8]) -> Option<rcgen::DistinguishedName> {
    let (SEQUENCE, rdns, _) = element(name)? else {
        return None;
    };
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in elements(rdns)? {
        let [attribute] = elements(rdn.contents)?[..] else {
            return None;
        };
        let [oid, value] = elements(attribute.contents)?[..] else {
            return None;
        };
        if rdn.tag != SET || attribute.tag != SEQUENCE || oid.tag != OID {
            return None;
        }
        let kind = rcgen::DnType::from_oid(&oid_arcs(oid.contents)?);
        let text = std::str::from_utf8(value.contents).ok()?;
        let value = match value.tag {
            UTF8_STRING => rcgen::DnValue::Utf8String(text.to_owned()),
            PRINTABLE_STRING => rcgen::DnValue::PrintableString(text.try_into().ok()?),
            IA5_STRING => rcgen::DnValue::Ia5String(text.try_into().ok()?),
            _ => return None,
        };
        if dn.get(&kind).is_some() {
            return None;
        }
        dn.push(kind, value);
    }
    Some(dn)
}

/// The arcs of an OBJECT IDENTIFIER's contents (`55 1d 13` -> 2.5.29.19).
fn oid_arcs(contents: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for byte in contents {
        acc = acc.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.extend([first, acc - first * 40]);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    (contents.last()? & 0x80 == 0).then_some(arcs)
}

/// One DER element of a sequence.
#[derive(Clone, Copy)]
struct Element<'a> {
    tag: u8,
    /// Tag, length and contents.
    whole: &'a [u8],
    contents: &'a [u8],
}

/// All the elements of `input`, in order.
fn elements(mut input: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tag, contents, rest) = element(input)?;
        out.push(Element {
            tag,
            whole: &input[..input.len() - rest.len()],
            contents,
        });
        input = rest;
    }
    Some(out)
}

/// Splits one DER element off `input`: (tag, contents, remaining input).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
            2 + n,
        )
    };
    let contents = input.get(header..header.checked_add(len)?)?;
    Some((tag, contents, &input[header + len..]))
}
