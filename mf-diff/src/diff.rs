//! Building patches: match entries by content hash and path, encode what changed in parallel under
//! the memory budget, write header, control stream and blobs (spec/PATCH.md).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use mf_format::{Archive, Entry, StoredAs};
use mf_panda3d::ArchiveFormat;
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::budget::Budget;
use crate::content_id::content_id;
use crate::delta::{DeltaParts, EncodedDelta};
use crate::error::{Error, Result};
use crate::matcher::{self, WindowPlan};
use crate::report::{Change, EntryReport, Method, PatchReport};
use crate::source::Source;
use crate::wire::*;
use crate::zref;

/// Settings of [`diff_files`].
#[derive(Debug, Clone, Copy)]
pub struct DiffOptions {
    /// Upper bound, in bytes, for the working sets of entries diffed at once.
    pub memory_limit: u64,
    /// OLD is the canonical mf conversion of a Panda3D multifile; recorded in the header
    /// ([`FLAG_OLD_PANDA3D`]) so `apply` converts its OLD the same way. Archive patches only.
    pub old_is_panda3d: bool,
    /// NEW is the canonical mf conversion of a Panda3D multifile ([`FLAG_NEW_PANDA3D`]).
    pub new_is_panda3d: bool,
}

impl DiffOptions {
    /// The header flags these options record ([`FLAG_OLD_PANDA3D`], [`FLAG_NEW_PANDA3D`]).
    pub fn panda3d_flags(&self) -> u8 {
        (if self.old_is_panda3d { FLAG_OLD_PANDA3D } else { 0 })
            | if self.new_is_panda3d { FLAG_NEW_PANDA3D } else { 0 }
    }
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            memory_limit: crate::budget::default_memory_limit(),
            old_is_panda3d: false,
            new_is_panda3d: false,
        }
    }
}

/// Entries up to this size are encoded every way at the final level and the smallest is kept:
/// cheap, and exact where an estimate would be noisy.
const EXACT_CHOICE_MAX: u64 = 1 << 20;
/// zstd level of the trial compressions that choose the encoding of larger entries.
const ESTIMATE_LEVEL: i32 = 3;
/// zstd level of the control stream.
const CONTROL_LEVEL: i32 = 19;
/// Block size floor and ceiling for bounded-memory encoding of large entries: a block's window (the
/// block plus half a block each side) stays within [`MAX_REF_WINDOW`], so apply holds it easily.
const MIN_BLOCK: u64 = 1 << 20;
const MAX_BLOCK: u64 = MAX_BLOCK_LEN;

/// zstd level for an entry's payload: strong for small entries, faster for large ones.
fn payload_level(size: u64) -> i32 {
    match size {
        0..=0x40_0000 => 19,
        0x40_0001..=0x400_0000 => 15,
        _ => 9,
    }
}

/// zstd level of a delta payload, by the bytes zstd reads (its runs, literals and extra bytes: about
/// twice the nonzero delta bytes plus the extra bytes), not by the entry's size: a native binary's
/// 60 MB delta is 95% zeros, so level 19 reads only a few MB and costs about a second. The matcher's
/// suffix array is freed by then, so level 19's tables fit in the memory it held.
fn delta_level(parts: &DeltaParts) -> i32 {
    let nonzero = parts.delta.literals().len() as u64;
    match 2 * nonzero + parts.extra.len() as u64 {
        0..=0x100_0000 => 19,
        0x100_0001..=0x400_0000 => 15,
        _ => 9,
    }
}

/// Working set of the whole-entry matcher (inputs, suffix array, delta and extra bytes) plus the
/// compression of its payload.
fn bsdiff_estimate(old: u64, new: u64, level: i32) -> u64 {
    matcher::estimate(old, new).saturating_add(new).saturating_add(zref::compress_overhead(level, new))
}

fn zref_estimate(old: u64, new: u64, level: i32) -> u64 {
    old.saturating_add(new.saturating_mul(2)).saturating_add(zref::compress_overhead(level, old + new))
}

/// A block of a zstd payload: `new_len` bytes decoded with `old[old_start..old_start + old_len]`
/// as prefix (empty for full content).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub new_len: u64,
    pub old_start: u64,
    pub old_len: u64,
    pub frame: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Delta(EncodedDelta),
    Zref(Vec<Block>),
    Full(Vec<Block>),
    /// Runs of frames kept from the base or rebuilt (patch format 2.3, op 4).
    Frames(Vec<RunPayload>),
}

/// One run of a frames payload.
#[derive(Debug, Clone)]
pub(crate) enum RunPayload {
    /// This many frames equal the base's at the same index.
    Keep(u64),
    /// This many frames rebuilt by `payload` against the base's window `[old_start, old_start + old_len)`.
    Patch { frames: u64, hash: u64, old_start: u64, old_len: u64, payload: Payload },
}

impl Payload {
    fn method(&self) -> Method {
        match self {
            Payload::Delta(_) => Method::Bsdiff,
            Payload::Zref(_) => Method::ZstdRef,
            Payload::Full(_) => Method::Full,
            Payload::Frames(_) => Method::Frames,
        }
    }

    fn op(&self) -> Op {
        match self {
            Payload::Delta(_) => Op::Delta,
            Payload::Zref(_) => Op::ZstdRef,
            Payload::Full(_) => Op::Full,
            Payload::Frames(_) => Op::Frames,
        }
    }
}

/// What one side of the diff is: a whole plain file, or an entry of an archive.
#[derive(Clone, Copy)]
enum Content<'a> {
    Entry(&'a Source, Entry<'a>),
    Plain(&'a Source),
    /// `len` bytes of an entry's content from `start` (a run of frames, or a window of the base).
    Part(&'a Source, Entry<'a>, u64, u64),
}

impl Content<'_> {
    fn size(&self) -> u64 {
        match self {
            Content::Entry(_, e) => e.size(),
            Content::Plain(s) => s.len,
            Content::Part(_, _, _, len) => *len,
        }
    }

    fn read_all(&self) -> Result<Vec<u8>> {
        match self {
            Content::Entry(s, e) => s.read_verified(e),
            Content::Plain(s) => s.read_exact_at(0, usize::try_from(s.len).unwrap_or(usize::MAX)),
            Content::Part(s, e, start, len) => s.read_range(e, *start, usize::try_from(*len).unwrap_or(usize::MAX)),
        }
    }

    fn read_range(&self, start: u64, len: u64) -> Result<Vec<u8>> {
        match self {
            Content::Entry(s, e) => s.read_range(e, start, len as usize),
            Content::Plain(s) => s.read_exact_at(start, len as usize),
            Content::Part(s, e, from, _) => s.read_range(e, from + start, len as usize),
        }
    }

    fn name(&self) -> String {
        match self {
            Content::Entry(_, e) | Content::Part(_, e, _, _) => e.path().to_owned(),
            Content::Plain(s) => s.path.display().to_string(),
        }
    }

    /// xxh3 of the whole content, read 4 MiB at a time.
    fn hash(&self) -> Result<u64> {
        let mut hasher = Xxh3::new();
        let mut at = 0;
        while at < self.size() {
            let len = (self.size() - at).min(4 << 20);
            hasher.update(&self.read_range(at, len)?);
            at += len;
        }
        Ok(hasher.digest())
    }
}

/// Encodes one changed or added entry: the method that makes it smallest among those that fit the
/// budget and the format's bounds (whole-entry zstd only for entries whose block and window fit
/// them), chosen by trial compression at a fast level (exactly, for small entries); only the chosen
/// method is encoded at the final level.
fn encode(
    old: Option<Content<'_>>,
    new: Content<'_>,
    budget: &Budget,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Payload> {
    let m = new.size();
    let n = old.map_or(0, |o| o.size());
    let level = payload_level(m);
    let io_err = |e: std::io::Error| Error::Io { file: new.name().into(), source: e };
    let zref_fits = m <= MAX_BLOCK_LEN && n <= MAX_REF_WINDOW && zref_estimate(n, m, level) <= budget.limit();
    let match_fits = old.is_some() && n > 0 && n <= matcher::MAX_OLD && bsdiff_estimate(n, m, level) <= budget.limit();
    // Old content past one standard window is matched in windows when the budget holds one: as
    // small a patch in a fraction of the memory (matcher::STANDARD_WINDOW).
    let windowed = old.is_some() && n > matcher::STANDARD_WINDOW && standard_plan(budget, level, n, m).is_some();
    if windowed || (!zref_fits && !match_fits) {
        let payload = encode_large(old, new, budget, level)?;
        progress(m);
        return Ok(payload);
    }
    let working_set = if match_fits { bsdiff_estimate(n, m, level) } else { 0 };
    let _permit = budget.acquire(working_set.max(if zref_fits { zref_estimate(n, m, level) } else { 0 }));
    let new_data = new.read_all()?;
    let old_data = match old {
        Some(o) if n > 0 => Some(o.read_all()?),
        _ => None,
    };
    let parts = match (&old_data, match_fits) {
        (Some(old_data), true) => {
            Some(matcher::diff(old_data, &new_data).map_err(|e| io_err(std::io::Error::other(e)))?)
        }
        _ => None,
    };
    let trial_level = if m <= EXACT_CHOICE_MAX { level } else { ESTIMATE_LEVEL };
    let whole = |old_len: u64, frame: Vec<u8>| vec![Block { new_len: m, old_start: 0, old_len, frame }];
    // Candidates by trial size; ties keep the earlier (cheaper to apply) method.
    let mut best: Option<Payload> = None;
    let consider = |best: &mut Option<Payload>, candidate: Payload| {
        if best.as_ref().is_none_or(|b| payload_score(&candidate) < payload_score(b)) {
            *best = Some(candidate);
        }
    };
    if let Some(parts) = &parts {
        consider(&mut best, Payload::Delta(parts.encode(trial_level).map_err(io_err)?));
    }
    if let (Some(old_data), true) = (&old_data, zref_fits) {
        let frame = zref::compress(old_data, &new_data, trial_level).map_err(io_err)?;
        consider(&mut best, Payload::Zref(whole(n, frame)));
    }
    if zref_fits && !full_cannot_win(best.as_ref(), &new_data, trial_level).map_err(io_err)? {
        let frame = zref::compress_plain(&new_data, trial_level).map_err(io_err)?;
        consider(&mut best, Payload::Full(whole(0, frame)));
    }
    // Unreachable in practice: without a whole-entry zstd fit, the matcher fit (else encode_large).
    let best = best.ok_or_else(|| io_err(std::io::Error::other("no encoding fits the memory budget")))?;
    // Small entries were tried at the final level: their trial encoding is the payload.
    let payload = match (best, parts, old_data) {
        (best, _, _) if trial_level == level => best,
        (Payload::Delta(_), Some(parts), _) => Payload::Delta(parts.encode(delta_level(&parts)).map_err(io_err)?),
        (Payload::Zref(_), _, Some(old_data)) => {
            Payload::Zref(whole(n, zref::compress(&old_data, &new_data, level).map_err(io_err)?))
        }
        _ => Payload::Full(whole(0, zref::compress_plain(&new_data, level).map_err(io_err)?)),
    };
    progress(m);
    Ok(payload)
}

/// Whether whole-entry zstd of `new_data` at `trial_level` cannot beat `best`, the smallest
/// candidate that uses the old content, judged from a pass at level 1: when `best` is under a quarter
/// of that, the trial level would have to compress four times better than level 1, which zstd's
/// levels do not (levels 19 and 1 differ by well under 2× on text and code). Saves the costliest
/// trial of a small changed entry (level 19), which a tiny delta makes pointless.
fn full_cannot_win(best: Option<&Payload>, new_data: &[u8], trial_level: i32) -> std::io::Result<bool> {
    let Some(best) = best.map(payload_score) else { return Ok(false) };
    if trial_level <= 1 {
        return Ok(false);
    }
    let fast = zref::compress_plain(new_data, 1)?.len() as u64 + 8;
    Ok(best.saturating_mul(4) < fast)
}

fn payload_score(payload: &Payload) -> u64 {
    match payload {
        Payload::Delta(encoded) => encoded.len() + 8,
        Payload::Zref(blocks) | Payload::Full(blocks) => blocks.iter().map(|b| b.frame.len() as u64 + 8).sum(),
        Payload::Frames(runs) => runs
            .iter()
            .map(|run| match run {
                RunPayload::Keep(_) => 2,
                RunPayload::Patch { payload, .. } => payload_score(payload) + 16,
            })
            .sum(),
    }
}

/// Entries of fewer frames are diffed whole: a frames payload pays off on large entries.
const MIN_RUN_FRAMES: usize = 4;

/// An entry's frames as stored: (offset, stored length, length) of frame `k`, from the frame table
/// or cut from a raw extent; `None` when the entry is solid or does not start at its first frame.
fn stored_frames(archive: &Archive, entry: &Entry<'_>) -> Option<Vec<(u64, u32, u32)>> {
    if entry.is_solid() {
        return None;
    }
    match entry.stored_as() {
        StoredAs::Raw => {
            let frame_size = archive.frame_size();
            let frames = entry.size().div_ceil(frame_size);
            Some(
                (0..frames)
                    .map(|k| {
                        let len = (entry.size() - k * frame_size).min(frame_size) as u32;
                        (entry.offset() + k * frame_size, len, len)
                    })
                    .collect(),
            )
        }
        StoredAs::Zstd if archive.entry_skip(entry) == 0 => Some(
            archive
                .entry_frames(entry)
                .map(|f| archive.frames()[f as usize])
                .map(|f| (f.offset, f.stored_len, f.len))
                .collect(),
        ),
        StoredAs::Zstd => None,
    }
}

/// Which frames of `new_entry` are stored exactly as the frames of `old_entry` at the same index
/// (same stored bytes, so the same content): compares stored bytes, decodes nothing. `None` when
/// the archives' frame sizes differ or either entry has no frames of its own.
fn unchanged_frames(
    old: &Source,
    old_entry: &Entry<'_>,
    new: &Source,
    new_entry: &Entry<'_>,
) -> Result<Option<Vec<bool>>> {
    let (Some(oa), Some(na)) = (old.archive.as_ref(), new.archive.as_ref()) else { return Ok(None) };
    if oa.frame_size() != na.frame_size() {
        return Ok(None);
    }
    let (Some(old_frames), Some(new_frames)) = (stored_frames(oa, old_entry), stored_frames(na, new_entry)) else {
        return Ok(None);
    };
    // The same stored bytes under another x86 filter decision are other content.
    if old_entry.has_x86_filter() != new_entry.has_x86_filter() {
        return Ok(None);
    }
    if new_frames.len() < MIN_RUN_FRAMES {
        return Ok(None);
    }
    let same = new_frames
        .par_iter()
        .enumerate()
        .map(|(k, &(at, stored, len))| match old_frames.get(k) {
            Some(&(old_at, old_stored, old_len)) if (old_stored, old_len) == (stored, len) => {
                Ok(old.read_exact_at(old_at, stored as usize)? == new.read_exact_at(at, stored as usize)?)
            }
            _ => Ok(false),
        })
        .collect::<Result<Vec<bool>>>()?;
    Ok(Some(same))
}

/// A frames payload for a changed entry when most of its frames are stored unchanged: the kept
/// runs cost a few bytes, and each changed run is encoded alone against the base's content around
/// it (the run's own length, at least 1 MiB, on each side). `None` when it does not pay.
fn encode_frames(
    old: &Source,
    old_entry: &Entry<'_>,
    new: &Source,
    new_entry: &Entry<'_>,
    budget: &Budget,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<Payload>> {
    let Some(same) = unchanged_frames(old, old_entry, new, new_entry)? else { return Ok(None) };
    let kept = same.iter().filter(|&&s| s).count();
    if kept == 0 || kept * 2 < same.len() {
        return Ok(None);
    }
    let frame_size = new.archive.as_ref().map_or(1, |a| a.frame_size());
    let (n, m) = (old_entry.size(), new_entry.size());
    let mut runs = Vec::new();
    let mut k = 0;
    while k < same.len() {
        let end = (k..same.len()).find(|&j| same[j] != same[k]).unwrap_or(same.len());
        let count = (end - k) as u64;
        let start = k as u64 * frame_size;
        let len = run_len(k as u64, count, m, frame_size);
        if same[k] {
            runs.push(RunPayload::Keep(count));
            progress(len);
        } else {
            let margin = len.max(1 << 20);
            let from = start.saturating_sub(margin).min(n);
            let to = start.saturating_add(len).saturating_add(margin).min(n).max(from);
            let window = (to > from).then_some(Content::Part(old, *old_entry, from, to - from));
            let part = Content::Part(new, *new_entry, start, len);
            let payload = encode(window, part, budget, progress)?;
            let (old_start, old_len) = if matches!(payload, Payload::Full(_)) { (0, 0) } else { (from, to - from) };
            runs.push(RunPayload::Patch { frames: count, hash: part.hash()?, old_start, old_len, payload });
        }
        k = end;
    }
    Ok(Some(Payload::Frames(runs)))
}

/// An entry too large for whole-entry methods under the budget: the windowed matcher when a
/// useful window fits, otherwise zstd blocks against proportionally placed windows.
fn encode_large(old: Option<Content<'_>>, new: Content<'_>, budget: &Budget, level: i32) -> Result<Payload> {
    let m = new.size();
    let n = old.map_or(0, |o| o.size());
    let plan = standard_plan(budget, level, n, m)
        .or_else(|| WindowPlan::for_budget(budget.limit().saturating_sub(zref::compress_overhead(level, m)), n, m));
    let (Some(old), Some(plan)) = (old.filter(|_| n > 0), plan) else {
        return encode_blocks(old, new, budget, level);
    };
    let permit = budget.acquire(matcher::windowed_estimate(plan, n) + zref::compress_overhead(level, m));
    let read_old = |start: u64, len: u64| old.read_range(start, len).map_err(into_io);
    let read_new = |start: u64, len: u64| new.read_range(start, len).map_err(into_io);
    let parts = match matcher::diff_windowed(n, m, &read_old, &read_new, plan) {
        Ok(parts) => parts,
        // Too different to hold the delta in the plan's memory: zstd blocks, which need none.
        Err(matcher::WindowError::TooDifferent { .. }) => {
            drop(permit);
            return encode_blocks(Some(old), new, budget, level);
        }
        Err(e) => {
            let source = match e {
                matcher::WindowError::Read(e) => e,
                other => std::io::Error::other(other),
            };
            return Err(Error::Io { file: new.name().into(), source });
        }
    };
    let level = delta_level(&parts);
    Ok(Payload::Delta(parts.encode(level).map_err(|e| Error::Io { file: new.name().into(), source: e })?))
}

/// The standard window plan for an entry, as many blocks at once as the budget and threads allow.
fn standard_plan(budget: &Budget, level: i32, n: u64, m: u64) -> Option<WindowPlan> {
    let budget = budget.limit().saturating_sub(zref::compress_overhead(level, m));
    WindowPlan::standard(budget, n, m, rayon::current_num_threads())
}

/// Carries a library error through the matcher's `io::Error` reads.
fn into_io(e: Error) -> std::io::Error {
    match e {
        Error::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

/// Bounded-memory encoding: the new content in blocks, each compressed with the proportionally
/// placed window of the old content (plus margins for insertions and deletions) as prefix.
fn encode_blocks(old: Option<Content<'_>>, new: Content<'_>, budget: &Budget, level: i32) -> Result<Payload> {
    let m = new.size();
    let n = old.map_or(0, |o| o.size());
    let overhead = zref::compress_overhead(level, 3 * MAX_BLOCK);
    // Working set of a block: old window (2 blocks), new block, output (1 block), zstd tables.
    let block = (budget.limit().saturating_sub(overhead) / 4).clamp(MIN_BLOCK, MAX_BLOCK);
    let count = m.div_ceil(block);
    let io_err = |e: std::io::Error| Error::Io { file: new.name().into(), source: e };
    let blocks: Vec<Block> = (0..count)
        .into_par_iter()
        .map(|i| {
            let start = i * block;
            let len = block.min(m - start);
            let _permit = budget.acquire(4 * len + overhead);
            let data = new.read_range(start, len)?;
            let (old_start, old_len) = match old {
                Some(_) if n > 0 => {
                    let centre = (start as u128 * n as u128 / m.max(1) as u128) as u64;
                    let from = centre.saturating_sub(block / 2);
                    let to = (centre + len + block / 2).min(n);
                    (from.min(to), to - from.min(to))
                }
                _ => (0, 0),
            };
            let prefix = match old {
                Some(o) if old_len > 0 => o.read_range(old_start, old_len)?,
                _ => Vec::new(),
            };
            let frame = zref::compress(&prefix, &data, level).map_err(io_err)?;
            Ok(Block { new_len: len, old_start, old_len, frame })
        })
        .collect::<Result<_>>()?;
    Ok(if old.is_some() && n > 0 { Payload::Zref(blocks) } else { Payload::Full(blocks) })
}

/// Whether a new entry's stored bytes and frames equal an old entry's, so apply may copy them.
fn stored_identical(old: &Source, old_entry: &Entry<'_>, new: &Source, new_entry: &Entry<'_>) -> Result<bool> {
    let (oa, na) = (old.archive.as_ref(), new.archive.as_ref());
    let (Some(oa), Some(na)) = (oa, na) else { return Ok(false) };
    // Only an entry with frames of its own (or a raw extent), contiguous in both files, can be
    // copied as stored bytes; solid frames also hold other entries.
    let own = |archive: &Archive, entry: &Entry<'_>| !entry.is_solid() && archive.frames_contiguous(entry);
    if oa.frame_size() != na.frame_size()
        || !own(oa, old_entry)
        || !own(na, new_entry)
        || old_entry.stored_as() != new_entry.stored_as()
        || old_entry.stored_size() != new_entry.stored_size()
        || oa.frame_ends(old_entry) != na.frame_ends(new_entry)
        || old_entry.has_x86_filter() != new_entry.has_x86_filter()
    {
        return Ok(false);
    }
    let step = 4u64 << 20;
    let mut at = 0u64;
    while at < new_entry.stored_size() {
        let len = (new_entry.stored_size() - at).min(step) as usize;
        if old.read_exact_at(old_entry.offset() + at, len)? != new.read_exact_at(new_entry.offset() + at, len)? {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// The storage descriptor of a new entry (spec: "Storage"); `shared_with` is the earlier entry whose
/// data it shares, if any.
fn storage_of(archive: &Archive, entry: &Entry<'_>, shared_with: Option<u32>) -> Storage {
    if let Some(owner) = shared_with {
        return Storage::SameAs(u64::from(entry.index() - owner));
    }
    if entry.is_solid() {
        return Storage::Solid;
    }
    let compressed: Vec<bool> = (0..archive.frame_count(entry)).map(|k| !archive.frame_is_raw(entry, k)).collect();
    Storage::from_frames(entry.stored_as() == StoredAs::Raw, &compressed)
}

/// One new entry's plan.
struct Plan {
    base: Option<u32>,
    change: Change,
    copy: bool,
    verbatim: bool,
}

/// A patch ready to be written.
struct Built {
    header: PatchHeader,
    control: Vec<u8>,
    blobs: Vec<Vec<u8>>,
    report: PatchReport,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn plan_archive(old: &Archive, new: &Archive) -> Vec<Plan> {
    let mut by_hash: HashMap<(u64, u64), u32> = HashMap::new();
    for entry in old.entries() {
        by_hash.entry((entry.content_hash(), entry.size())).or_insert(entry.index());
    }
    let new_paths: std::collections::HashSet<&str> = new.entries().map(|e| e.path()).collect();
    // Old entries whose path is gone, by file name: candidates for renamed-and-changed entries.
    let mut gone_by_name: HashMap<&str, Vec<u32>> = HashMap::new();
    for entry in old.entries() {
        if !new_paths.contains(entry.path()) {
            gone_by_name.entry(basename(entry.path())).or_default().push(entry.index());
        }
    }
    new.entries()
        .map(|entry| {
            let same_path = old.get(entry.path());
            let key = (entry.content_hash(), entry.size());
            if let Some(o) = same_path.filter(|o| (o.content_hash(), o.size()) == key) {
                return Plan { base: Some(o.index()), change: Change::Unchanged, copy: true, verbatim: false };
            }
            if let Some(&index) = by_hash.get(&key) {
                let change = if same_path.is_some() { Change::Changed } else { Change::Renamed };
                return Plan { base: Some(index), change, copy: true, verbatim: false };
            }
            if let Some(o) = same_path {
                return Plan { base: Some(o.index()), change: Change::Changed, copy: false, verbatim: false };
            }
            // A changed entry under a new path: the gone old entry with the same file name and the
            // closest size, if within a factor of two.
            let candidate = gone_by_name.get(basename(entry.path())).and_then(|list| {
                list.iter()
                    .filter_map(|&i| old.entry(i))
                    .filter(|o| o.size() / 2 <= entry.size() && entry.size() / 2 <= o.size())
                    .min_by_key(|o| (o.size().abs_diff(entry.size()), o.index()))
                    .map(|o| o.index())
            });
            match candidate {
                Some(index) => Plan { base: Some(index), change: Change::Changed, copy: false, verbatim: false },
                None => Plan { base: None, change: Change::Added, copy: false, verbatim: false },
            }
        })
        .collect()
}

fn build_archive_patch(
    old_src: &Source,
    new_src: &Source,
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Built> {
    let (Some(old), Some(new)) = (old_src.archive.as_ref(), new_src.archive.as_ref()) else {
        unreachable!("called with two archives")
    };
    let mut plans = plan_archive(old, new);
    let new_entries: Vec<Entry<'_>> = new.entries().collect();
    let payloads = encode_entries(old_src, new_src, &mut plans, &new_entries, options, progress)?;

    let writer_level = new.reference_level();
    let shared = new.shared_with();
    let level = writer_level.unwrap_or(mf_format::DEFAULT_LEVEL);
    let mut control = Vec::new();
    let preamble = ArchivePreamble {
        frame_size_log2: new.header().frame_size_log2,
        level: level as i8,
        old_entry_count: old.len() as u64,
        new_entry_count: new.len() as u64,
        content_ids: Some(ContentIds { old: content_id(old), new: content_id(new) }),
    };
    preamble.write(&mut control);
    let mut blobs = Vec::new();
    let mut report_entries = Vec::new();
    let mut previous_old: i64 = -1;
    for ((plan, entry), payload) in plans.iter().zip(&new_entries).zip(payloads) {
        let op = payload.as_ref().map_or(Op::Copy, Payload::op);
        // A full payload does not read the old entry; record no base for it.
        let base = plan.base.and_then(|i| old.entry(i)).filter(|_| op.has_base());
        let (base_path, base_mode, base_mtime) = match &base {
            Some(b) => (Some(b.path()), b.mode(), (b.record().mtime_secs, b.record().mtime_nanos)),
            None => (None, 0o644, (0, 0)),
        };
        let record = entry.record();
        let (payload_desc, patch_bytes) = match payload {
            None => (PayloadDesc::None, 0),
            Some(payload) => write_payload(payload, &mut blobs),
        };
        let entry_record = EntryRecord {
            at: 0,
            op,
            old_index: base.as_ref().map(|b| b.index()),
            path: (base_path != Some(entry.path())).then(|| entry.path().to_owned()),
            mode: (entry.mode() != base_mode).then_some(entry.mode()),
            mtime: ((record.mtime_secs, record.mtime_nanos) != base_mtime)
                .then_some((record.mtime_secs, record.mtime_nanos)),
            size: if op == Op::Copy { 0 } else { entry.size() },
            hash: if op == Op::Copy { 0 } else { entry.content_hash() },
            base_hash: base.as_ref().filter(|_| op.has_base_hash()).map(|b| b.content_hash()),
            storage: match shared[entry.index() as usize] {
                None if op == Op::Copy && plan.verbatim => Storage::Verbatim,
                owner => storage_of(new, entry, owner),
            },
            payload: payload_desc,
        };
        entry_record.write(&mut control, &mut previous_old);
        let change = if op == Op::Full && plan.change == Change::Changed { Change::Added } else { plan.change };
        let change = if op == Op::Copy && base_path == Some(entry.path()) { Change::Unchanged } else { change };
        report_entries.push(EntryReport {
            change,
            path: Some(entry.path().to_owned()),
            old_path: base.as_ref().map(|b| b.path().to_owned()),
            old_index: base.as_ref().map(|b| b.index()),
            size: entry.size(),
            old_size: base.as_ref().map(|b| b.size()),
            method: method_of(op),
            patch_bytes,
        });
    }
    report_entries.extend(removed_entries(old, new, &report_entries));
    let exact = writer_level.is_some();
    let new_hash = new_src.whole_hash()?;
    let report = PatchReport {
        archive: true,
        exact,
        old_len: old_src.len,
        new_len: new_src.len,
        new_hash,
        patch_len: 0,
        entries: report_entries,
    };
    Ok(Built { header: archive_header(old_src, new_src, exact, new_hash), control, blobs, report })
}

/// The header of an archive patch from `old_src` to `new_src`; the section lengths and body hash
/// are filled in when the patch is written.
fn archive_header(old_src: &Source, new_src: &Source, exact: bool, new_hash: u64) -> PatchHeader {
    let old = old_src.archive.as_ref().expect("called with two archives");
    PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: PATCH_VERSION_MINOR,
        kind: KIND_ARCHIVE,
        flags: FLAG_CONTENT_IDS | if exact { FLAG_EXACT } else { 0 },
        old_len: old_src.len,
        old_id: old.footer().index_hash,
        new_len: new_src.len,
        new_hash,
        control_len: 0,
        blobs_len: 0,
        body_hash: 0,
    }
}

/// The payload of every planned entry, in new data order (`None` for copies), encoded in parallel
/// under one memory budget; also settles which copies keep the stored bytes verbatim.
fn encode_entries(
    old_src: &Source,
    new_src: &Source,
    plans: &mut [Plan],
    new_entries: &[Entry<'_>],
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Option<Payload>>> {
    let old = old_src.archive.as_ref().expect("called with two archives");
    let budget = Budget::new(options.memory_limit);
    // Copies: decide whether stored bytes can be copied verbatim (cheap: compares stored bytes).
    plans.par_iter_mut().zip(new_entries.par_iter()).try_for_each(|(plan, entry)| -> Result<()> {
        if plan.copy {
            let base = plan.base.and_then(|i| old.entry(i)).expect("planned from the old archive");
            plan.verbatim = stored_identical(old_src, &base, new_src, entry)?;
            progress(entry.size());
        }
        Ok(())
    })?;
    plans
        .par_iter()
        .zip(new_entries.par_iter())
        .map(|(plan, entry)| {
            if plan.copy {
                return Ok(None);
            }
            let base_entry = plan.base.and_then(|i| old.entry(i));
            if let Some(base_entry) = &base_entry {
                if let Some(payload) = encode_frames(old_src, base_entry, new_src, entry, &budget, progress)? {
                    return Ok(Some(payload));
                }
            }
            let base = base_entry.map(|b| Content::Entry(old_src, b));
            encode(base, Content::Entry(new_src, *entry), &budget, progress).map(Some)
        })
        .collect()
}

/// The report's name for how `op` rebuilds an entry.
fn method_of(op: Op) -> Method {
    match op {
        Op::Copy => Method::Copy,
        Op::Delta => Method::Bsdiff,
        Op::ZstdRef => Method::ZstdRef,
        Op::Full => Method::Full,
        Op::Frames => Method::Frames,
    }
}

/// Report lines for the old entries the new archive neither uses nor names, in old data order.
fn removed_entries(old: &Archive, new: &Archive, reported: &[EntryReport]) -> Vec<EntryReport> {
    let used: std::collections::HashSet<u32> = reported.iter().filter_map(|e| e.old_index).collect();
    old.entries()
        .filter(|entry| !used.contains(&entry.index()) && new.get(entry.path()).is_none())
        .map(|entry| EntryReport {
            change: Change::Removed,
            path: None,
            old_path: Some(entry.path().to_owned()),
            old_index: Some(entry.index()),
            size: entry.size(),
            old_size: Some(entry.size()),
            method: Method::None,
            patch_bytes: 0,
        })
        .collect()
}

/// Moves a payload's frames to the blob list; returns its descriptor and the blob bytes it takes.
fn write_payload(payload: Payload, blobs: &mut Vec<Vec<u8>>) -> (PayloadDesc, u64) {
    match payload {
        Payload::Delta(encoded) => {
            let desc = PayloadDesc::Delta(encoded.desc());
            let len = encoded.len();
            let runs = encoded.runs.map(|(_, runs)| runs).unwrap_or_default();
            blobs.extend([encoded.controls, runs, encoded.delta, encoded.extra].into_iter().filter(|b| !b.is_empty()));
            (desc, len)
        }
        Payload::Zref(blocks) | Payload::Full(blocks) => {
            let mut total = 0;
            let descs = blocks
                .into_iter()
                .map(|block| {
                    let desc = BlockDesc {
                        new_len: block.new_len,
                        old_start: block.old_start,
                        old_len: block.old_len,
                        blob_len: block.frame.len() as u64,
                        blob_at: 0,
                    };
                    total += desc.blob_len;
                    blobs.push(block.frame);
                    desc
                })
                .collect();
            (PayloadDesc::Blocks(descs), total)
        }
        Payload::Frames(runs) => {
            let mut total = 0;
            let runs = runs
                .into_iter()
                .map(|run| match run {
                    RunPayload::Keep(frames) => FrameRun { frames, patch: None },
                    RunPayload::Patch { frames, hash, old_start, old_len, payload } => {
                        let op = payload.op();
                        let (payload, len) = write_payload(payload, blobs);
                        total += len;
                        FrameRun { frames, patch: Some(RunPatch { op, hash, old_start, old_len, payload }) }
                    }
                })
                .collect();
            (PayloadDesc::Frames(runs), total)
        }
    }
}

fn build_plain_patch(
    old_src: &Source,
    new_src: &Source,
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Built> {
    let budget = Budget::new(options.memory_limit);
    let old_hash = old_src.whole_hash()?;
    let new_hash = new_src.whole_hash()?;
    let old = (old_src.len > 0).then_some(Content::Plain(old_src));
    let payload = encode(old, Content::Plain(new_src), &budget, progress)?;
    let method = payload.method();
    let op = payload.op();
    let mut control = Vec::new();
    let mut blobs = Vec::new();
    let (desc, patch_bytes) = write_payload(payload, &mut blobs);
    PlainRecord { op, payload: desc }.write(&mut control);
    let header = PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: PATCH_VERSION_MINOR,
        kind: KIND_PLAIN,
        flags: FLAG_EXACT,
        old_len: old_src.len,
        old_id: old_hash,
        new_len: new_src.len,
        new_hash,
        control_len: 0,
        blobs_len: 0,
        body_hash: 0,
    };
    let change = if old_hash == new_hash && old_src.len == new_src.len { Change::Unchanged } else { Change::Changed };
    let report = PatchReport {
        archive: false,
        exact: true,
        old_len: old_src.len,
        new_len: new_src.len,
        new_hash,
        patch_len: 0,
        entries: vec![EntryReport {
            change,
            path: Some(new_src.path.display().to_string()),
            old_path: Some(old_src.path.display().to_string()),
            old_index: None,
            size: new_src.len,
            old_size: Some(old_src.len),
            method,
            patch_bytes,
        }],
    };
    Ok(Built { header, control, blobs, report })
}

/// True when the file starts with the archive magic.
fn is_archive(path: &Path) -> Result<bool> {
    Ok(ArchiveFormat::detect(path).map_err(|e| Error::io(path, e))? == Some(ArchiveFormat::Mf))
}

fn open_pair(old: &Path, new: &Path) -> Result<(Source, Source)> {
    let (old_is, new_is) = (is_archive(old)?, is_archive(new)?);
    if old_is && new_is {
        Ok((Source::open_archive(old)?, Source::open_archive(new)?))
    } else {
        Ok((Source::open_plain(old)?, Source::open_plain(new)?))
    }
}

fn build(old: &Path, new: &Path, options: &DiffOptions, progress: &(dyn Fn(u64) + Sync)) -> Result<Built> {
    if options.memory_limit < (16 << 20) {
        return Err(Error::InvalidOption(format!("memory limit {} is below 16 MiB", options.memory_limit)));
    }
    let (old_src, new_src) = open_pair(old, new)?;
    if old_src.archive.is_some() {
        build_archive_patch(&old_src, &new_src, options, progress)
    } else {
        build_plain_patch(&old_src, &new_src, options, progress)
    }
}

/// Total bytes `progress` will be told about for this pair (new content sizes).
pub fn progress_total(old: &Path, new: &Path) -> Result<u64> {
    let (_, new_src) = open_pair(old, new)?;
    Ok(match &new_src.archive {
        Some(a) => a.total_size(),
        None => new_src.len,
    })
}

/// Compares two archives (or two plain files) without writing a patch. The report's `patch_len` is
/// what the patch would take.
pub fn diff_stat(
    old: &Path,
    new: &Path,
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PatchReport> {
    let built = build(old, new, options, progress)?;
    let control = compress_control(&built.control)?;
    let mut report = built.report;
    report.patch_len =
        PATCH_HEADER_LEN + control.len() as u64 + built.blobs.iter().map(|b| b.len() as u64).sum::<u64>();
    Ok(report)
}

fn compress_control(control: &[u8]) -> Result<Vec<u8>> {
    zref::compress_plain(control, CONTROL_LEVEL).map_err(|e| Error::io("<control stream>", e))
}

/// Writes a patch turning `old` into `new` to `out`. Both inputs are archives (detected by magic)
/// or both are treated as plain files.
pub fn write_patch(
    old: &Path,
    new: &Path,
    out: &mut impl Write,
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PatchReport> {
    let built = build(old, new, options, progress)?;
    let panda3d_flags = options.panda3d_flags();
    if panda3d_flags != 0 && built.header.kind != KIND_ARCHIVE {
        return Err(Error::InvalidOption("Panda3D flags need two mf archives".into()));
    }
    let control = compress_control(&built.control)?;
    let mut header = built.header;
    header.flags |= panda3d_flags;
    header.control_len = control.len() as u64;
    header.blobs_len = built.blobs.iter().map(|b| b.len() as u64).sum();
    let mut hasher = Xxh3::new();
    hasher.update(&control);
    for blob in &built.blobs {
        hasher.update(blob);
    }
    header.body_hash = hasher.digest();
    let name = Path::new("<patch output>");
    out.write_all(&header.to_bytes()).map_err(|e| Error::io(name, e))?;
    out.write_all(&control).map_err(|e| Error::io(name, e))?;
    for blob in &built.blobs {
        out.write_all(blob).map_err(|e| Error::io(name, e))?;
    }
    out.flush().map_err(|e| Error::io(name, e))?;
    let mut report = built.report;
    report.patch_len = PATCH_HEADER_LEN + header.control_len + header.blobs_len;
    Ok(report)
}

/// Writes a patch file atomically (temp file beside `patch`, fsync, rename).
pub fn diff_files(
    old: &Path,
    new: &Path,
    patch: &Path,
    options: &DiffOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PatchReport> {
    let mut out = mf_format::AtomicFile::create(patch).map_err(|e| Error::io(patch, e))?;
    let report = {
        let mut writer = std::io::BufWriter::new(out.file());
        let report = write_patch(old, new, &mut writer, options, progress).map_err(|e| rename_output(e, patch))?;
        writer.flush().map_err(|e| Error::io(patch, e))?;
        report
    };
    out.commit().map_err(|e| Error::io(patch, e))?;
    Ok(report)
}

fn rename_output(err: Error, patch: &Path) -> Error {
    match err {
        Error::Io { file, source } if file == Path::new("<patch output>") => Error::io(patch, source),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zref_of(frame_len: usize) -> Payload {
        Payload::Zref(vec![Block { new_len: 0, old_start: 0, old_len: 0, frame: vec![0; frame_len] }])
    }

    #[test]
    fn whole_entry_zstd_is_skipped_only_when_the_old_content_already_won_by_far() {
        let text: Vec<u8> =
            (0..4000u32).flat_map(|i| format!("line {i} of a script, {}\n", i * 7).into_bytes()).collect();
        let fast = zref::compress_plain(&text, 1).unwrap().len();
        let level = payload_level(text.len() as u64);
        // A delta of a few dozen bytes: level 19 cannot make the plain text that small.
        assert!(full_cannot_win(Some(&zref_of(40)), &text, level).unwrap());
        // Within 4x of the fast plain size: the trial at the real level still runs.
        assert!(!full_cannot_win(Some(&zref_of(fast / 4 + 1)), &text, level).unwrap());
        assert!(!full_cannot_win(Some(&zref_of(fast * 2)), &text, level).unwrap());
        // Nothing to compare with, or a trial level no stronger than the pass itself.
        assert!(!full_cannot_win(None, &text, level).unwrap());
        assert!(!full_cannot_win(Some(&zref_of(1)), &text, 1).unwrap());
        // The skip never hides a smaller whole-entry encoding where it applies.
        let full = zref::compress_plain(&text, level).unwrap().len() as u64 + 8;
        assert!(payload_score(&zref_of(40)) < full);
    }
}
