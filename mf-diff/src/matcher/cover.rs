//! Cover search: which stretches of the new content are taken from the old content, and where.
//!
//! A cover is a stretch of new content coded as old content at a fixed offset (a diagonal) plus
//! byte differences. Unlike classic bsdiff's one greedy pass, the search runs in three steps, in
//! the spirit of HDiffPatch's cover search:
//! 1. **Seeds**: exact matches from the suffix array, found in fixed-size chunks of the new content
//!    in parallel (chunk bounds do not depend on the thread count, so the result does not either).
//!    A match on a new diagonal must beat the current diagonal by a margin, so code whose addresses
//!    shifted keeps one diagonal with sparse differences instead of many short covers.
//! 2. **Extension**: each cover grows forward and backward into its gaps while the bytes on its
//!    diagonal are cheap often enough (approximate matches): equal to the old byte, or with a delta
//!    that repeats 4 or 8 bytes back; where two grown covers meet, the split point keeps the most
//!    cheap bytes.
//! 3. **Merging**: neighbouring covers on the same diagonal become one when the gap between them is
//!    small, saving a control.

use rayon::prelude::*;

use super::suffix::SuffixIndex;

/// New content searched per parallel task. Fixed, so covers do not depend on the thread count.
const CHUNK: usize = 1 << 20;
/// Shortest exact match that starts a cover on a new diagonal.
const MIN_SEED: usize = super::suffix::FILTER_LEN;
/// A seed on another diagonal must match this many more bytes than the current diagonal has cheap
/// bytes over the same stretch. Swept on the bench's native libraries (duckdb 62 MB, xgboost 250 MB;
/// patch bytes) when bytes were scored by exact matches: 3 → 2.35 MB / 663 KB, 4 to 7 → 2.23–2.27 MB
/// / 653–655 KB, 8 → 2.32 MB / 672 KB, 10 and above → 2.6–3.1 MB / 1.3 MB; again with the cheap
/// score: 3 → 2.21 MB / 540 KB, 5 → 2.12 MB / 532 KB, 8 → 2.25 MB / 550 KB.
const SWITCH_MARGIN: usize = 5;
/// Same-diagonal covers separated by at most this many bytes are merged.
const MERGE_GAP: usize = 24;

/// `new[new_start..new_start + len]` is coded against `old[old_start..old_start + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cover {
    pub new_start: usize,
    pub old_start: usize,
    pub len: usize,
}

impl Cover {
    fn new_end(&self) -> usize {
        self.new_start + self.len
    }

    fn diagonal(&self) -> i64 {
        self.old_start as i64 - self.new_start as i64
    }
}

/// Whether new byte `j` equals the old byte on `diagonal`.
fn hit(old: &[u8], new: &[u8], diagonal: i64, j: usize) -> bool {
    delta_at(old, new, diagonal, j) == Some(0)
}

/// The delta byte (new minus old) of new byte `j` on `diagonal`, if the old byte exists.
fn delta_at(old: &[u8], new: &[u8], diagonal: i64, j: usize) -> Option<u8> {
    let o = j as i64 + diagonal;
    (o >= 0 && (o as usize) < old.len()).then(|| new[j].wrapping_sub(old[o as usize]))
}

/// Whether new byte `j` costs (almost) nothing on `diagonal`: it equals the old byte, or its delta
/// repeats the delta 4 or 8 bytes back. The second case is a table of offsets or addresses that all
/// moved by the same amount: its deltas are periodic, which the coder's compressor stores for
/// nearly nothing, while the same table on a diagonal one entry off matches as many bytes but has
/// irregular deltas (binaries' `.eh_frame_hdr` and relocation tables, where one inserted entry
/// shifts the rest).
fn cheap(old: &[u8], new: &[u8], diagonal: i64, j: usize) -> bool {
    delta_at(old, new, diagonal, j).is_some_and(|delta| cheap_delta(old, new, diagonal, j, delta))
}

/// [`cheap`] for a byte whose delta on `diagonal` is known to be `delta`.
fn cheap_delta(old: &[u8], new: &[u8], diagonal: i64, j: usize, delta: u8) -> bool {
    delta == 0 || [4, 8].iter().any(|&back| j >= back && delta_at(old, new, diagonal, j - back) == Some(delta))
}

/// Bytes of `new[from..to]` that are [`cheap`] on `diagonal` (positions outside old count as
/// mismatches).
fn matches_on(old: &[u8], new: &[u8], diagonal: i64, from: usize, to: usize) -> usize {
    (from..to).filter(|&j| cheap(old, new, diagonal, j)).count()
}

/// Exact run on `diagonal` starting at new position `at`.
fn run_on(old: &[u8], new: &[u8], diagonal: i64, at: usize) -> usize {
    let o = at as i64 + diagonal;
    if o < 0 || o as usize >= old.len() {
        return 0;
    }
    old[o as usize..].iter().zip(&new[at..]).take_while(|(a, b)| a == b).count()
}

/// Step 1 for one chunk `new[from..to]`: seeds may run past `to`; the caller trims overlaps.
fn seed_chunk(index: &SuffixIndex<'_>, new: &[u8], from: usize, to: usize) -> Vec<Cover> {
    let old = index.old();
    let mut covers = Vec::new();
    let mut diagonal: Option<i64> = None;
    let mut i = from;
    while i < to {
        // Fast path: the current diagonal goes on matching; no search needed.
        if let Some(d) = diagonal {
            let run = run_on(old, new, d, i);
            if run >= MIN_SEED {
                covers.push(Cover { new_start: i, old_start: (i as i64 + d) as usize, len: run });
                i += run;
                continue;
            }
        }
        if i + MIN_SEED <= new.len() && !index.may_match(&new[i..i + MIN_SEED]) {
            // No seed starts here: no old string has these bytes.
            i += 1;
            continue;
        }
        let near = diagonal.map_or(i, |d| (i as i64 + d).max(0) as usize);
        let (pos, len) = index.longest_match(&new[i..], near);
        if len < MIN_SEED {
            i += 1;
            continue;
        }
        let d = pos as i64 - i as i64;
        // The search stops at its probe length; the diagonal continues the run.
        let len = len.max(run_on(old, new, d, i));
        if let Some(current) = diagonal.filter(|&c| c != d) {
            if len < matches_on(old, new, current, i, i + len) + SWITCH_MARGIN {
                // The current diagonal covers this stretch nearly as well: extension will take it.
                i += 1;
                continue;
            }
        }
        covers.push(Cover { new_start: i, old_start: pos, len });
        diagonal = Some(d);
        i += len;
    }
    covers
}

/// Best forward growth of a cover ending at `end` into `new[end..limit]`: the length maximising
/// twice the matching bytes minus the length (bsdiff's criterion: at least half must match).
// `j` indexes both inputs (old through the diagonal), so a range loop is the clear form.
#[allow(clippy::needless_range_loop)]
fn grow_forward(old: &[u8], new: &[u8], diagonal: i64, end: usize, limit: usize) -> usize {
    let (mut score, mut best_score, mut best) = (0i64, 0i64, 0usize);
    for j in end..limit {
        let Some(delta) = delta_at(old, new, diagonal, j) else { break };
        score += if cheap_delta(old, new, diagonal, j, delta) { 1 } else { -1 };
        if score > best_score {
            best_score = score;
            best = j + 1 - end;
        }
    }
    best
}

/// Mirror of [`grow_forward`]: growth of a cover starting at `start` back into `new[limit..start]`.
// `j` indexes both inputs (old through the diagonal), so a range loop is the clear form.
#[allow(clippy::needless_range_loop)]
fn grow_backward(old: &[u8], new: &[u8], diagonal: i64, start: usize, limit: usize) -> usize {
    let (mut score, mut best_score, mut best) = (0i64, 0i64, 0usize);
    for j in (limit..start).rev() {
        let Some(delta) = delta_at(old, new, diagonal, j) else { break };
        score += if cheap_delta(old, new, diagonal, j, delta) { 1 } else { -1 };
        if score > best_score {
            best_score = score;
            best = start - j;
        }
    }
    best
}

/// Steps 2 and 3 over covers sorted by new position and not overlapping.
fn extend_and_merge(old: &[u8], new: &[u8], covers: Vec<Cover>) -> Vec<Cover> {
    let mut out: Vec<Cover> = Vec::with_capacity(covers.len());
    for mut next in covers {
        let Some(last) = out.last_mut() else {
            let back = grow_backward(old, new, next.diagonal(), next.new_start, 0);
            next.new_start -= back;
            next.old_start -= back;
            next.len += back;
            out.push(next);
            continue;
        };
        let gap_start = last.new_end();
        let gap_end = next.new_start;
        if last.diagonal() == next.diagonal()
            && (gap_end - gap_start <= MERGE_GAP
                || 2 * matches_on(old, new, last.diagonal(), gap_start, gap_end) >= gap_end - gap_start)
        {
            last.len = next.new_end() - last.new_start;
            continue;
        }
        let forward = grow_forward(old, new, last.diagonal(), gap_start, gap_end);
        let backward = grow_backward(old, new, next.diagonal(), gap_end, gap_start);
        let (mut fwd_end, mut back_start) = (gap_start + forward, gap_end - backward);
        if fwd_end > back_start {
            // Overlap: split where the two diagonals together match the most bytes. Moving the
            // split past byte j gains j's match on the earlier diagonal and loses it on the later.
            let (ld, nd) = (last.diagonal(), next.diagonal());
            let (mut score, mut best) = (0i64, (0i64, back_start));
            for j in back_start..fwd_end {
                score += i64::from(cheap(old, new, ld, j)) - i64::from(cheap(old, new, nd, j));
                if score > best.0 {
                    best = (score, j + 1);
                }
            }
            fwd_end = best.1;
            back_start = best.1;
        }
        last.len = fwd_end - last.new_start;
        let shift = next.new_start - back_start;
        next.new_start -= shift;
        next.old_start -= shift;
        next.len += shift;
        out.push(next);
    }
    if let Some(last) = out.last_mut() {
        last.len += grow_forward(old, new, last.diagonal(), last.new_end(), new.len());
    }
    out.retain(|c| c.len > 0);
    out
}

/// Covers grown from exact matches already known (`(new position, old position)` pairs where
/// the bytes agree, in any order), when at most `max_pieces` of them cover at least `min_share` of
/// `new`: content that changed in a few places does not need a suffix array to be matched. `None`
/// otherwise.
pub fn covers_from_anchors(
    old: &[u8],
    new: &[u8],
    mut hits: Vec<(usize, usize)>,
    min_share: f64,
    max_pieces: usize,
) -> Option<Vec<Cover>> {
    hits.sort_unstable();
    let mut seeds: Vec<Cover> = Vec::new();
    for (at, from) in hits {
        if seeds.last().is_some_and(|c| c.new_end() > at) {
            continue;
        }
        let diagonal = from as i64 - at as i64;
        let forward = run_on(old, new, diagonal, at);
        let limit = seeds.last().map_or(0, |c| c.new_end());
        let back = (limit..at).rev().take_while(|&j| hit(old, new, diagonal, j)).count();
        let cover = Cover { new_start: at - back, old_start: from - back, len: back + forward };
        if cover.len >= MIN_SEED {
            seeds.push(cover);
        }
    }
    let covered: usize = seeds.iter().map(|c| c.len).sum();
    (covered as f64 >= min_share * new.len() as f64 && seeds.len() <= max_pieces)
        .then(|| extend_and_merge(old, new, seeds))
}

/// The covers of `new` against the indexed old content, sorted by new position, not overlapping,
/// each inside both inputs.
pub fn find_covers(index: &SuffixIndex<'_>, new: &[u8]) -> Vec<Cover> {
    let chunks: Vec<Vec<Cover>> = (0..new.len().div_ceil(CHUNK))
        .into_par_iter()
        .map(|k| seed_chunk(index, new, k * CHUNK, ((k + 1) * CHUNK).min(new.len())))
        .collect();
    // Seeds of one chunk may run into the next chunk's: trim the later ones.
    let mut seeds: Vec<Cover> = Vec::new();
    for mut cover in chunks.into_iter().flatten() {
        let covered = seeds.last().map_or(0, |c| c.new_end());
        if cover.new_end() <= covered {
            continue;
        }
        if cover.new_start < covered {
            let cut = covered - cover.new_start;
            cover.new_start += cut;
            cover.old_start += cut;
            cover.len -= cut;
        }
        seeds.push(cover);
    }
    extend_and_merge(index.old(), new, seeds)
}
