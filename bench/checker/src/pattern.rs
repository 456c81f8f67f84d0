//! The bodies the origin serves: deterministic per (object, version), cheap to make and to
//! check at any offset without storing anything.
//!
//! The body of `(object, version)` is a sequence of little-endian 64-bit words; word `i`
//! (bytes `8i .. 8i+8`) is [`word`]`(salt, object, version, i)`, and the body is cut to the
//! object's length. Any byte can be checked on its own, and eight bytes name the version they
//! came from (searched over every version the origin has served, see [`Verifier`]).

/// SplitMix64's finaliser: a bijective mix with good avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one version of one object; `salt` makes every run's bodies different.
#[inline]
pub fn seed(salt: u64, object: u32, version: u64) -> u64 {
    mix(salt ^ mix((u64::from(object) << 40) ^ version ^ 0x5eed_0000_0000_0000))
}

/// Word `index` of the body with this seed.
#[inline]
pub fn word_at(seed: u64, index: u64) -> u64 {
    mix(seed.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// Word `index` of the body of `(object, version)`.
#[inline]
pub fn word(salt: u64, object: u32, version: u64, index: u64) -> u64 {
    word_at(seed(salt, object, version), index)
}

/// Writes bytes `offset .. offset + out.len()` of the body with this seed into `out`.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    // Unaligned head.
    while i < out.len() && !pos.is_multiple_of(8) {
        out[i] = word_at(seed, pos / 8).to_le_bytes()[(pos % 8) as usize];
        i += 1;
        pos += 1;
    }
    // Whole words.
    let mut chunks = out[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word_at(seed, pos / 8).to_le_bytes());
        pos += 8;
    }
    // Tail.
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = word_at(seed, pos / 8).to_le_bytes();
        rest.copy_from_slice(&w[..rest.len()]);
    }
}

/// Where some wrong bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Origin {
    pub object: u32,
    pub version: u64,
}

/// Finds which `(object, version)` has `bytes` at word `index` starting at byte `lo` of the
/// word (`lo + bytes.len() <= 8`), among objects `0..versions.len()` and versions
/// `0..=versions[o]`. The expected object is tried first.
pub fn identify(
    salt: u64,
    versions: &[u64],
    prefer: u32,
    index: u64,
    lo: usize,
    bytes: &[u8],
) -> Option<Origin> {
    let matches = |object: u32, version: u64| {
        let w = word(salt, object, version, index).to_le_bytes();
        w[lo..lo + bytes.len()] == *bytes
    };
    let order = std::iter::once(prefer).chain((0..versions.len() as u32).filter(|&o| o != prefer));
    for object in order {
        let Some(&max) = versions.get(object as usize) else {
            continue;
        };
        // Newest first: a wrong version is most likely a neighbour of the current one.
        for version in (0..=max).rev() {
            if matches(object, version) {
                return Some(Origin { object, version });
            }
        }
    }
    None
}

/// What a [`Verifier`] found in one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    /// Absolute offset (in the object) of the first byte that is not the expected version's.
    pub first_wrong: Option<u64>,
    /// How many bytes were wrong in all.
    pub wrong_bytes: u64,
    /// The version (of which object) the first wrong word belongs to, if any.
    pub belongs_to: Option<Origin>,
    /// How many bytes of the first wrong word identification used (8 unless the body or a
    /// range ended inside it).
    pub identified_by: usize,
    /// Whether every byte from `first_wrong` to the end of what was received is
    /// `belongs_to`'s (a clean tail of another version, as against scattered garbage).
    pub tail_is_other: bool,
}

/// Streaming check of a body (or a range of it) against one expected version.
pub struct Verifier {
    expected_seed: u64,
    /// Absolute offset of the next byte fed.
    pos: u64,
    /// Bytes of the word `pos / 8` received so far, with `pos % 8` of them valid.
    carry: [u8; 8],
    /// Where the carry's valid bytes begin in its word (non-zero for an unaligned start).
    carry_lo: usize,
    carry_len: usize,
    finding: Finding,
    /// Set once a wrong word is seen: the seed of the version it was identified as, and
    /// whether every later byte is from it.
    other_seed: Option<u64>,
    /// The first wrong word did not name a version for sure (it was partial, or of no
    /// version): the next whole wrong word is identified instead.
    pending_identify: bool,
    salt: u64,
    object: u32,
    versions: std::sync::Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
}

impl Verifier {
    /// Checks bytes from offset `start` of `(object, version)`. `versions` gives the current
    /// version of every object, for naming the version of wrong bytes.
    pub fn new(
        salt: u64,
        object: u32,
        version: u64,
        start: u64,
        versions: std::sync::Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
    ) -> Self {
        Self {
            expected_seed: seed(salt, object, version),
            pos: start,
            carry: [0; 8],
            carry_lo: (start % 8) as usize,
            carry_len: 0,
            finding: Finding::default(),
            other_seed: None,
            pending_identify: false,
            salt,
            object,
            versions,
        }
    }

    /// Bytes received so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.carry_len == 0 && self.carry_lo == 0 && self.pos.is_multiple_of(8) {
                // Fast path: whole words straight from the input.
                let whole = data.len() / 8 * 8;
                if whole > 0 {
                    let (words, rest) = data.split_at(whole);
                    for (index, c) in (self.pos / 8..).zip(words.chunks_exact(8)) {
                        let got: [u8; 8] = c.try_into().unwrap_or_default();
                        if u64::from_le_bytes(got) != word_at(self.expected_seed, index) {
                            self.check_word(index, 0, &got);
                        } else if self.other_seed.is_some() {
                            self.finding.tail_is_other = false;
                            self.other_seed = None;
                        }
                    }
                    self.pos += whole as u64;
                    data = rest;
                    continue;
                }
            }
            // Slow path: fill the carry up to the end of its word.
            let room = 8 - self.carry_lo - self.carry_len;
            let take = room.min(data.len());
            let at = self.carry_lo + self.carry_len;
            self.carry[at..at + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            self.pos += take as u64;
            data = &data[take..];
            if self.carry_lo + self.carry_len == 8 {
                self.flush_carry();
            }
        }
    }

    /// Checks the partial word left at the end and returns what was found.
    pub fn finish(mut self) -> Finding {
        if self.carry_len > 0 {
            self.flush_carry();
        }
        if self.pending_identify {
            self.finding.belongs_to = None;
        }
        self.finding
    }

    fn flush_carry(&mut self) {
        let (lo, len) = (self.carry_lo, self.carry_len);
        // The word the carry is part of: pos is just past its last byte.
        let index = (self.pos - 1) / 8;
        let got = self.carry;
        let expected = word_at(self.expected_seed, index).to_le_bytes();
        if got[lo..lo + len] != expected[lo..lo + len] {
            self.check_word_part(index, lo, &got[lo..lo + len]);
        } else if self.other_seed.is_some() {
            self.finding.tail_is_other = false;
            self.other_seed = None;
        }
        self.carry_lo = 0;
        self.carry_len = 0;
    }

    fn check_word(&mut self, index: u64, lo: usize, got: &[u8; 8]) {
        self.check_word_part(index, lo, &got[lo..]);
    }

    /// `got` is bytes `lo..lo+got.len()` of word `index` and differs from the expected ones.
    fn check_word_part(&mut self, index: u64, lo: usize, got: &[u8]) {
        let expected = word_at(self.expected_seed, index).to_le_bytes();
        let wrong = got
            .iter()
            .zip(&expected[lo..])
            .filter(|(a, b)| a != b)
            .count() as u64;
        self.finding.wrong_bytes += wrong;
        if self.finding.first_wrong.is_none() {
            let first = got
                .iter()
                .zip(&expected[lo..])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            self.finding.first_wrong = Some(index * 8 + (lo + first) as u64);
            self.identify(index, lo, got);
            return;
        }
        if self.pending_identify && got.len() == 8 {
            // The first wrong word was partial; name the version from this whole one.
            self.identify(index, lo, got);
            return;
        }
        match self.other_seed {
            Some(other) if word_at(other, index).to_le_bytes()[lo..lo + got.len()] == *got => {}
            _ => {
                self.finding.tail_is_other = false;
                self.other_seed = None;
            }
        }
    }

    fn identify(&mut self, index: u64, lo: usize, got: &[u8]) {
        let versions = (self.versions)();
        let found = identify(self.salt, &versions, self.object, index, lo, got);
        self.finding.belongs_to = found;
        self.finding.identified_by = got.len();
        // A partial word names a version only weakly, and a whole word of no version may
        // straddle the point where another version begins (its first bytes still the
        // expected ones): either way the next whole wrong word decides.
        self.pending_identify = got.len() < 8 || found.is_none();
        match found {
            Some(o) => {
                self.other_seed = Some(seed(self.salt, o.object, o.version));
                self.finding.tail_is_other = true;
            }
            None => {
                self.other_seed = None;
                self.finding.tail_is_other = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn body(salt: u64, object: u32, version: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(seed(salt, object, version), 0, &mut v);
        v
    }

    fn versions(v: Vec<u64>) -> Arc<dyn Fn() -> Vec<u64> + Send + Sync> {
        Arc::new(move || v.clone())
    }

    #[test]
    fn fill_matches_words_at_any_offset() {
        let s = seed(7, 3, 9);
        let whole = {
            let mut v = vec![0; 100];
            fill(s, 0, &mut v);
            v
        };
        for start in 0..30 {
            for len in 0..40 {
                let mut part = vec![0; len];
                fill(s, start as u64, &mut part);
                assert_eq!(part, whole[start..start + len], "{start}+{len}");
            }
        }
    }

    #[test]
    fn a_correct_body_in_any_chunking_passes() {
        let b = body(1, 2, 3, 1000);
        for start in [0usize, 1, 7, 8, 13] {
            for chunk in [1usize, 3, 8, 9, 64, 1000] {
                let mut v = Verifier::new(1, 2, 3, start as u64, versions(vec![5; 4]));
                for c in b[start..].chunks(chunk) {
                    v.feed(c);
                }
                assert_eq!(v.position(), 1000);
                assert_eq!(v.finish(), Finding::default(), "{start} {chunk}");
            }
        }
    }

    #[test]
    fn a_tail_of_the_next_version_is_named() {
        let mut b = body(1, 2, 3, 5000);
        let next = body(1, 2, 4, 5000);
        b[4096..].copy_from_slice(&next[4096..]);
        for chunk in [7usize, 4096, 5000] {
            let mut v = Verifier::new(1, 2, 3, 0, versions(vec![5; 4]));
            for c in b.chunks(chunk) {
                v.feed(c);
            }
            let f = v.finish();
            assert_eq!(f.first_wrong, Some(4096));
            assert_eq!(
                f.belongs_to,
                Some(Origin {
                    object: 2,
                    version: 4
                })
            );
            assert!(f.tail_is_other, "{f:?}");
            assert!(f.wrong_bytes > 850 && f.wrong_bytes <= 904, "{f:?}");
        }
    }

    #[test]
    fn another_version_from_inside_a_word_is_named() {
        // Version 4 from byte 4099 on: the word at 4096 is half version 3, half version 4.
        let mut b = body(1, 2, 3, 5000);
        let next = body(1, 2, 4, 5000);
        b[4099..].copy_from_slice(&next[4099..]);
        for chunk in [5usize, 4096, 5000] {
            let mut v = Verifier::new(1, 2, 3, 0, versions(vec![5; 4]));
            for c in b.chunks(chunk) {
                v.feed(c);
            }
            let f = v.finish();
            assert!((4099..4104).contains(&f.first_wrong.unwrap()), "{f:?}");
            assert_eq!(
                f.belongs_to,
                Some(Origin {
                    object: 2,
                    version: 4
                }),
                "{f:?}"
            );
            assert_eq!(f.identified_by, 8);
        }
    }

    #[test]
    fn bytes_of_another_object_are_named() {
        let mut b = body(1, 2, 3, 3000);
        b[1024..].copy_from_slice(&body(1, 0, 1, 3000)[1024..]);
        let mut v = Verifier::new(1, 2, 3, 0, versions(vec![2; 4]));
        v.feed(&b);
        let f = v.finish();
        assert_eq!(f.first_wrong, Some(1024));
        assert_eq!(
            f.belongs_to,
            Some(Origin {
                object: 0,
                version: 1
            })
        );
        assert!(f.tail_is_other);
    }

    #[test]
    fn a_zeroed_tail_is_wrong_and_from_no_version() {
        let mut b = body(5, 1, 1, 2000);
        b[1500..].fill(0);
        let mut v = Verifier::new(5, 1, 1, 0, versions(vec![3, 3]));
        v.feed(&b);
        let f = v.finish();
        assert_eq!(f.first_wrong, Some(1500));
        assert!(f.wrong_bytes >= 490, "{f:?}");
        assert_eq!(f.belongs_to, None);
    }

    #[test]
    fn garbage_is_from_no_version() {
        let mut b = body(1, 0, 0, 64);
        b[21] ^= 0xff;
        let mut v = Verifier::new(1, 0, 0, 0, versions(vec![3, 3]));
        v.feed(&b);
        let f = v.finish();
        assert_eq!(f.first_wrong, Some(21));
        assert_eq!(f.wrong_bytes, 1);
        assert_eq!(f.belongs_to, None);
        assert!(!f.tail_is_other);
    }

    #[test]
    fn an_unaligned_range_of_another_version_is_named_from_a_whole_word() {
        let other = body(9, 1, 2, 200);
        // Bytes 13..200 of version 2 checked as version 1: the first word is partial.
        let mut v = Verifier::new(9, 1, 1, 13, versions(vec![0, 2]));
        v.feed(&other[13..]);
        let f = v.finish();
        assert_eq!(f.first_wrong.map(|o| (13..16).contains(&o)), Some(true));
        assert_eq!(
            f.belongs_to,
            Some(Origin {
                object: 1,
                version: 2
            })
        );
        assert_eq!(f.identified_by, 8);
        assert!(f.tail_is_other);
    }
}
