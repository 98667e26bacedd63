//! Entries too large to index whole under the memory budget: the new content is diffed block by
//! block, each block against the window of old content that a sparse index says it came from
//! (not the proportionally placed one), with the full suffix-array matcher inside the window.
//!
//! Blocks are independent once the index is built: up to [`WindowPlan::parallel`] are matched at
//! once, and their deltas are joined in order, so the output does not depend on how many ran together.
//!
//! The sparse index keeps content-defined anchors of the old content: positions where a gear
//! rolling hash has its top bits clear, so equal content yields the same anchors in old and new
//! whatever its offset. A new block's anchors vote for old positions; the window holding the most
//! votes wins.

use std::collections::HashMap;
use std::io;

use rayon::prelude::*;

use super::{append_parts, cover, parts_from_covers, suffix::SuffixIndex, DeltaParts, MatchError};

/// One anchor per this many bytes on average (a power of two).
const ANCHOR_SPACING_LOG2: u32 = 9;
/// Share of a block that exact matches grown from its anchors must cover to skip the suffix array.
/// Measured: the bench's 512 MiB generated entry (scattered edits) has every 12 MiB block covered
/// 99.88–100%; matching it took 20 s with suffix arrays, 3.1 s at 99.9%, 18 s at 99.99%. A native
/// binary's changed blocks (a relocated address every few bytes) fall far below.
const FAST_PATH_SHARE: f64 = 0.999;
/// Most pieces (grown exact matches) those may be: the block was edited in a few places. The
/// generated entry's blocks have 2–9 pieces. xgboost's library has quiet blocks above 99.9% made of
/// 6–72 pieces (code moved in many places); skipping the suffix array there made its patch 2%
/// larger (531,646 against 521,588 bytes: the suffix array finds better sources for the last bytes)
/// for 35% less diff time. With this limit all but its quietest blocks go to the suffix array.
const FAST_PATH_MAX_PIECES: usize = 16;
/// Bytes of old content read at a time while building the index.
const SCAN_STEP: u64 = 8 << 20;
/// Bytes per index entry (hash key, position, table overhead).
const INDEX_ENTRY_BYTES: u64 = 32;

const fn gear_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut i = 0;
    while i < 256 {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        table[i] = z ^ (z >> 31);
        i += 1;
    }
    table
}

static GEAR: [u64; 256] = gear_table();

/// Calls `found(position after the anchor, hash)` for every anchor of `data`, continuing the
/// rolling `hash` from a previous piece. The hash depends on the last 64 bytes only.
fn anchors(data: &[u8], hash: &mut u64, mut found: impl FnMut(usize, u64)) {
    for (i, &b) in data.iter().enumerate() {
        *hash = (*hash << 1).wrapping_add(GEAR[usize::from(b)]);
        if *hash >> (64 - ANCHOR_SPACING_LOG2) == 0 {
            found(i + 1, *hash);
        }
    }
}

/// Window and block sizes for a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPlan {
    /// Old bytes indexed per block.
    pub window: u64,
    /// New bytes diffed per block.
    pub block: u64,
    /// Blocks matched at once (memory only: the output is the same for any value).
    pub parallel: usize,
    /// Bytes the joined delta may hold before [`diff_windowed`] gives up ([`parts_allowance`]).
    pub parts_allowance: u64,
}

/// Window of [`WindowPlan::standard`] (blocks are three quarters of it). Measured on the bench's
/// native libraries (duckdb's 62 MB, xgboost's 250 MB), against one suffix array of the whole entry:
/// 16 MiB windows made patches 1.4% and 0.2% smaller (matches stay near, so seeks and diagonals
/// compress better), in 1.5 and 2.6 times less time and 1.9 and 7 times less memory; 32 MiB windows
/// were slower and larger, and 8 MiB windows made xgboost's patch 3.4 times larger.
pub const STANDARD_WINDOW: u64 = 16 << 20;

impl WindowPlan {
    /// The plan for entries whose old content exceeds [`STANDARD_WINDOW`] when the budget allows:
    /// 16 MiB windows for 12 MiB blocks, as many blocks at once as `threads` and `budget` allow;
    /// `None` when not even one fits.
    pub fn standard(budget: u64, old_len: u64, new_len: u64, threads: usize) -> Option<WindowPlan> {
        let one = WindowPlan {
            window: STANDARD_WINDOW,
            block: STANDARD_WINDOW * 3 / 4,
            parallel: 1,
            parts_allowance: parts_allowance(new_len),
        };
        let fixed = windowed_estimate(one, old_len) - block_estimate(one);
        let fit = budget.checked_sub(fixed)? / block_estimate(one);
        (fit >= 1).then(|| WindowPlan { parallel: (fit as usize).min(threads.max(1)), ..one })
    }

    /// The largest plan whose working set, beside the delta's allowance ([`parts_allowance`]) and the
    /// sparse index, fits `budget`; `None` below a useful window (16 MiB).
    pub fn for_budget(budget: u64, old_len: u64, new_len: u64) -> Option<WindowPlan> {
        let fixed = parts_allowance(new_len) + index_estimate(old_len) + (8 << 20);
        let left = budget.checked_sub(fixed)?;
        // Per block: window, its suffix array and probe filter (5.5 bytes a byte), the new block
        // and its share of the output while it is built (2 bytes a byte), block = window / 2.
        let window = (left * 2 / 13).saturating_sub(64).min(super::MAX_OLD);
        (window >= 16 << 20).then_some(WindowPlan {
            window,
            block: window / 2,
            parallel: 1,
            parts_allowance: parts_allowance(new_len),
        })
    }
}

fn index_estimate(old_len: u64) -> u64 {
    (old_len >> ANCHOR_SPACING_LOG2) * INDEX_ENTRY_BYTES
}

/// Working set of [`diff_windowed`] with `plan`.
pub fn windowed_estimate(plan: WindowPlan, old_len: u64) -> u64 {
    plan.parts_allowance + index_estimate(old_len) + (8 << 20) + plan.parallel as u64 * block_estimate(plan)
}

/// Memory the delta may take while blocks are joined (runs, literals, extra bytes, controls):
/// [`diff_windowed`] gives up with [`WindowError::TooDifferent`] past it. Similar content needs a
/// small fraction of its size (xgboost's 250 MB library: under 4 MB); reserving the whole new size
/// kept a 512 MiB entry from being matched at all under a 512 MiB budget.
pub fn parts_allowance(new_len: u64) -> u64 {
    new_len.min((64 << 20) + new_len / 8)
}

/// Bytes `parts` holds in memory.
fn parts_bytes(parts: &DeltaParts) -> u64 {
    parts.delta.held_bytes() + parts.extra.len() as u64 + 24 * parts.controls.len() as u64
}

/// Working set of one block: its window, the window's suffix array and probe filter, the block and
/// its share of the output while it is built.
fn block_estimate(plan: WindowPlan) -> u64 {
    5 * plan.window + super::suffix::filter_bytes(plan.window) + 2 * plan.block
}

/// Failure reading an input or running the matcher.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// \`read_old\` or \`read_new\` failed.
    #[error(transparent)]
    Read(#[from] io::Error),
    /// The matcher failed on a window.
    #[error(transparent)]
    Match(#[from] MatchError),
    /// The delta outgrew the plan's `parts_allowance`: the contents are too different for its memory.
    #[error("the delta outgrew its memory allowance of {allowance} bytes")]
    TooDifferent {
        /// The allowance.
        allowance: u64,
    },
}

/// The bsdiff model of new content against old content read piecewise through `read_old(start,
/// len)` and `read_new(start, len)`, in the memory of `plan`.
pub fn diff_windowed(
    old_len: u64,
    new_len: u64,
    read_old: &(dyn Fn(u64, u64) -> io::Result<Vec<u8>> + Sync),
    read_new: &(dyn Fn(u64, u64) -> io::Result<Vec<u8>> + Sync),
    plan: WindowPlan,
) -> Result<DeltaParts, WindowError> {
    // Old anchors by hash; the first occurrence wins so the index is deterministic.
    let mut index: HashMap<u64, u64> = HashMap::new();
    let mut hash = 0u64;
    let mut at = 0u64;
    while at < old_len {
        let piece = read_old(at, SCAN_STEP.min(old_len - at))?;
        anchors(&piece, &mut hash, |end, h| {
            index.entry(h).or_insert(at + end as u64);
        });
        at += piece.len() as u64;
    }
    let block_at = |start: u64| -> Result<DeltaParts, WindowError> {
        let block = read_new(start, plan.block.min(new_len - start))?;
        let found = found_anchors(&index, &block);
        let (window_start, window_len) = choose_window(&found, &block, start, new_len, old_len, plan.window);
        let window = read_old(window_start, window_len)?;
        // The anchors placed inside the window, as exact matches to grow: a block changed in a few
        // places is then matched without a suffix array. An anchor's last byte is new[end - 1],
        // old[old_end - 1].
        let hits: Vec<(usize, usize)> = found
            .into_iter()
            .filter_map(|(end, old_end)| {
                let at = old_end.checked_sub(window_start + 1).filter(|&at| at < window_len)? as usize;
                (block[end - 1] == window[at]).then_some((end - 1, at))
            })
            .collect();
        let covers = match cover::covers_from_anchors(&window, &block, hits, FAST_PATH_SHARE, FAST_PATH_MAX_PIECES) {
            Some(covers) => covers,
            None => cover::find_covers(&SuffixIndex::build(&window)?, &block),
        };
        Ok(parts_from_covers(&window, &block, &covers, window_start as usize))
    };
    let starts: Vec<u64> = (0..new_len.div_ceil(plan.block.max(1))).map(|k| k * plan.block).collect();
    let mut parts = DeltaParts::default();
    for batch in starts.chunks(plan.parallel.max(1)) {
        let done: Vec<Result<DeltaParts, WindowError>> = batch.par_iter().map(|&start| block_at(start)).collect();
        for block_parts in done {
            append_parts(&mut parts, block_parts?);
        }
        let allowance = plan.parts_allowance;
        if parts_bytes(&parts) > allowance {
            return Err(WindowError::TooDifferent { allowance });
        }
    }
    Ok(parts)
}

/// The anchors of `block` that the index knows: (end in the block, end in the old content) each.
fn found_anchors(index: &HashMap<u64, u64>, block: &[u8]) -> Vec<(usize, u64)> {
    let mut found = Vec::new();
    let mut hash = 0u64;
    anchors(block, &mut hash, |end, h| {
        if let Some(&old_end) = index.get(&h) {
            found.push((end, old_end));
        }
    });
    found
}

/// The old window for a new block at `block_start`: the `window`-long stretch holding the most old
/// positions its anchors (`found`) point to, centred on them; proportionally placed without votes.
fn choose_window(
    found: &[(usize, u64)],
    block: &[u8],
    block_start: u64,
    new_len: u64,
    old_len: u64,
    window: u64,
) -> (u64, u64) {
    let window = window.min(old_len);
    // Each anchor votes for the old position matching the block's start, clamped into the old content.
    let mut votes: Vec<u64> =
        found.iter().map(|&(end, old_end)| old_end.saturating_sub(end as u64).min(old_len)).collect();
    votes.sort_unstable();
    let (mut best_count, mut best_from, mut best_to) = (0usize, 0u64, 0u64);
    let mut lo = 0;
    for hi in 0..votes.len() {
        while votes[hi] - votes[lo] > window.saturating_sub(block.len() as u64) {
            lo += 1;
        }
        if hi + 1 - lo > best_count {
            (best_count, best_from, best_to) = (hi + 1 - lo, votes[lo], votes[hi]);
        }
    }
    let centre = if best_count == 0 {
        (u128::from(block_start) * u128::from(old_len) / u128::from(new_len.max(1))) as u64 + block.len() as u64 / 2
    } else {
        best_from + (best_to - best_from + block.len() as u64) / 2
    };
    let from = centre.saturating_sub(window / 2).min(old_len - window);
    (from, window)
}
