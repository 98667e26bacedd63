//! Suffix array of the old content (built by libsais, SA-IS class, on one thread) and the
//! longest-match query the cover search asks at each position of the new content.

use super::MatchError;

/// Longest prefix of the new content compared in one query. Longer matches are found by
/// extending along the diagonal afterwards, which is linear; comparing whole long runs inside the
/// binary search would make repetitive data (zero pages) quadratic.
const PROBE: usize = 1024;
/// How many suffixes with the same best length are examined to pick the one nearest the expected
/// old position (small seeks and continuing diagonals compress better).
const NEAREST_SCAN: usize = 16;

/// Bytes a [`SuffixIndex::may_match`] probe hashes: the shortest match the cover search seeds from.
pub const FILTER_LEN: usize = 8;
/// Filter bits per old byte.
const FILTER_BITS_PER_BYTE: u64 = 4;

/// Bytes of the filter of `old_len` bytes of old content (half a byte a byte).
pub const fn filter_bytes(old_len: u64) -> u64 {
    (old_len * FILTER_BITS_PER_BYTE).div_ceil(64) * 8
}

pub struct SuffixIndex<'a> {
    old: &'a [u8],
    sa: Vec<i32>,
    /// One bit per hash of every [`FILTER_LEN`]-byte string of the old content (about four bits a
    /// position): a clear bit proves a string absent without the binary search, whose cache misses
    /// dominate a diff of a native binary (most probes in its changed stretches find nothing).
    filter: Vec<u64>,
    /// `buckets[k]..buckets[k + 1]` is the range of suffixes whose first two bytes are `k` (big
    /// endian); the one-byte suffix at the end sorts first in the bucket of `(byte, 0)`.
    buckets: Vec<u32>,
}

/// The filter bit of the first [`FILTER_LEN`] bytes of `bytes` among `bits` (multiply-shift: any
/// number of bits, not only powers of two).
fn filter_bit(bytes: &[u8], bits: u64) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..FILTER_LEN]);
    let hash = u64::from_le_bytes(word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((u128::from(hash ^ (hash >> 29)) * u128::from(bits)) >> 64) as u64
}

impl<'a> SuffixIndex<'a> {
    /// Builds the index (one thread: callers already search several entries and chunks at once).
    pub fn build(old: &'a [u8]) -> Result<Self, MatchError> {
        if old.len() > i32::MAX as usize {
            return Err(MatchError::OldTooLarge { len: old.len() as u64 });
        }
        let sa: Vec<i32> = if old.is_empty() {
            Vec::new()
        } else {
            let construction = libsais::SuffixArrayConstruction::for_text(old).in_owned_buffer32();
            let result = construction.single_threaded().run();
            result.map_err(|e| MatchError::SuffixArray(format!("{e:?}")))?.into_vec()
        };
        let mut buckets = vec![0u32; (1 << 16) + 1];
        for (i, &b) in old.iter().enumerate() {
            let next = old.get(i + 1).copied().unwrap_or(0);
            buckets[(usize::from(b) << 8 | usize::from(next)) + 1] += 1;
        }
        for k in 1..buckets.len() {
            buckets[k] += buckets[k - 1];
        }
        let mut filter = vec![0u64; (filter_bytes(old.len() as u64) / 8).max(1) as usize];
        let bits = filter.len() as u64 * 64;
        for window in old.windows(FILTER_LEN) {
            let bit = filter_bit(window, bits);
            filter[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        Ok(SuffixIndex { old, sa, buckets, filter })
    }

    /// Whether `probe` ([`FILTER_LEN`] bytes) may occur in the old content; `false` is certain.
    pub fn may_match(&self, probe: &[u8]) -> bool {
        let bit = filter_bit(probe, self.filter.len() as u64 * 64);
        self.filter[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    pub fn old(&self) -> &'a [u8] {
        self.old
    }

    fn common_prefix(&self, start: usize, needle: &[u8]) -> usize {
        self.old[start..].iter().zip(needle).take_while(|(a, b)| a == b).count()
    }

    /// The longest match of a prefix of `needle` in the old content (up to [`PROBE`] bytes), as
    /// `(old position, length)`; among equally long matches the one nearest `near`. `(0, 0)` when
    /// not even two bytes match.
    pub fn longest_match(&self, needle: &[u8], near: usize) -> (usize, usize) {
        if needle.len() < 2 {
            return (0, 0);
        }
        let needle = &needle[..needle.len().min(PROBE)];
        let key = usize::from(needle[0]) << 8 | usize::from(needle[1]);
        let (start, end) = (self.buckets[key] as usize, self.buckets[key + 1] as usize);
        if start == end {
            return (0, 0);
        }
        // First suffix in the bucket not smaller than the needle.
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let suffix = &self.old[self.sa[mid] as usize..];
            let len = suffix.len().min(needle.len());
            if suffix[..len] < needle[..len] || (suffix[..len] == needle[..len] && suffix.len() < needle.len()) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let lcp_at = |i: usize| self.common_prefix(self.sa[i] as usize, needle);
        let below = if lo > start { lcp_at(lo - 1) } else { 0 };
        let above = if lo < end { lcp_at(lo) } else { 0 };
        let best = below.max(above);
        if best < 2 {
            return (0, 0);
        }
        // Suffixes sharing `best` bytes are contiguous around the insertion point.
        let mut chosen = if above == best { self.sa[lo] as usize } else { self.sa[lo - 1] as usize };
        let mut consider = |i: usize| {
            let pos = self.sa[i] as usize;
            if pos.abs_diff(near) < chosen.abs_diff(near)
                || (pos.abs_diff(near) == chosen.abs_diff(near) && pos < chosen)
            {
                chosen = pos;
            }
        };
        for i in (start..lo).rev().take(NEAREST_SCAN).take_while(|&i| lcp_at(i) == best) {
            consider(i);
        }
        for i in (lo..end).take(NEAREST_SCAN).take_while(|&i| lcp_at(i) == best) {
            consider(i);
        }
        (chosen, best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute_longest(old: &[u8], needle: &[u8]) -> usize {
        let needle = &needle[..needle.len().min(PROBE)];
        (0..old.len()).map(|s| old[s..].iter().zip(needle).take_while(|(a, b)| a == b).count()).max().unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn finds_the_longest_match(old in proptest::collection::vec(0u8..4, 0..400),
                                   needle in proptest::collection::vec(0u8..4, 0..40),
                                   near in 0usize..400) {
            let index = SuffixIndex::build(&old).unwrap();
            let (pos, len) = index.longest_match(&needle, near);
            let expected = brute_longest(&old, &needle);
            if expected < 2 {
                prop_assert_eq!(len, 0);
            } else {
                prop_assert_eq!(len, expected);
                prop_assert_eq!(&old[pos..pos + len], &needle[..len]);
            }
        }
    }

    #[test]
    fn suffixes_are_sorted() {
        let old: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8).collect();
        let index = SuffixIndex::build(&old).unwrap();
        assert_eq!(index.sa.len(), old.len());
        assert!(index.sa.windows(2).all(|w| old[w[0] as usize..] < old[w[1] as usize..]));
    }
}
