//! The diff matcher: turns an old and a new byte string into the bsdiff model (controls, delta
//! bytes, extra bytes) that spec/PATCH.md's delta payload carries.
//!
//! The old content is indexed by a suffix array (the private `suffix` module); the new content is covered by
//! stretches of old content found, grown and merged by the private `cover` module. Output depends only on the
//! inputs, never on the thread count.

mod cover;
mod suffix;
mod window;

pub use window::{diff_windowed, parts_allowance, windowed_estimate, WindowError, WindowPlan, STANDARD_WINDOW};

use suffix::SuffixIndex;

// The bsdiff model is the delta payload's (spec/PATCH.md, "delta"), declared once in `delta`.
pub use crate::delta::{Control, DeltaParts};

/// Why the matcher could not run.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// The old content exceeds what a 32-bit suffix array indexes (callers diff such content in windows, [`diff_windowed`]).
    #[error("old content of {len} bytes is too large for one suffix array (limit 2 GiB)")]
    OldTooLarge {
        /// The old content's length in bytes.
        len: u64,
    },
    /// The suffix array library failed (its message).
    #[error("suffix array construction failed: {0}")]
    SuffixArray(String),
}

/// Working set of [`diff`] in bytes: the old content, its suffix array and its probe filter (5.5
/// bytes per old byte), the new content, and the delta's runs and literals and the extra bytes
/// (together at most one byte per new byte, far less for similar content).
pub fn estimate(old_len: u64, new_len: u64) -> u64 {
    old_len
        .saturating_mul(5)
        .saturating_add(suffix::filter_bytes(old_len))
        .saturating_add(new_len.saturating_mul(2))
        .saturating_add(1 << 20)
}

/// Largest old content [`diff`] indexes at once.
pub const MAX_OLD: u64 = i32::MAX as u64;

/// The bsdiff model turning `old` into `new`; the same for any number of threads.
pub fn diff(old: &[u8], new: &[u8]) -> Result<DeltaParts, MatchError> {
    let index = SuffixIndex::build(old)?;
    let covers = cover::find_covers(&index, new);
    Ok(parts_from_covers(old, new, &covers, 0))
}

/// Controls, delta and extra for `covers` (sorted, not overlapping, inside both inputs).
/// `old_base` is added to every old position: the covers index a window starting there.
fn parts_from_covers(old: &[u8], new: &[u8], covers: &[cover::Cover], old_base: usize) -> DeltaParts {
    let covered: usize = covers.iter().map(|c| c.len).sum();
    let mut parts = DeltaParts {
        controls: Vec::with_capacity(covers.len() + 1),
        delta: Default::default(),
        extra: Vec::with_capacity(new.len() - covered.min(new.len())),
    };
    let first_new = covers.first().map_or(new.len(), |c| c.new_start);
    let first_old = covers.first().map_or(0, |c| c.old_start + old_base);
    if first_new > 0 || first_old > 0 {
        parts.controls.push(Control { add: 0, copy: first_new as u64, seek: first_old as i64 });
        parts.extra.extend_from_slice(&new[..first_new]);
    }
    for (k, cover) in covers.iter().enumerate() {
        let end = cover.new_start + cover.len;
        let (next_new, next_old) = covers.get(k + 1).map_or((new.len(), end), |n| (n.new_start, n.old_start));
        let old_slice = &old[cover.old_start..cover.old_start + cover.len];
        let new_slice = &new[cover.new_start..end];
        parts.delta.push_difference(new_slice, old_slice);
        parts.extra.extend_from_slice(&new[end..next_new]);
        let seek = if k + 1 < covers.len() { next_old as i64 - (cover.old_start + cover.len) as i64 } else { 0 };
        parts.controls.push(Control { add: cover.len as u64, copy: (next_new - end) as u64, seek });
    }
    parts
}

/// Appends `next`, which reads from old position 0 on, to `parts`: the seek back from where
/// `parts` leaves the reading position is folded into its last control.
pub(crate) fn append_parts(parts: &mut DeltaParts, next: DeltaParts) {
    let at = end_position(parts);
    if let Some(last) = parts.controls.last_mut() {
        last.seek -= at;
    }
    parts.controls.extend(next.controls);
    parts.delta.append(&next.delta);
    parts.extra.extend_from_slice(&next.extra);
}

/// Where the reading position ends after `parts` runs from old position 0.
pub(crate) fn end_position(parts: &DeltaParts) -> i64 {
    parts.controls.iter().fold(0i64, |p, c| p + c.add as i64 + c.seek)
}

#[cfg(test)]
mod tests;
