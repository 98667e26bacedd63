//! The index rules of spec/FORMAT.md that span records: the frame table, each entry's storage, and
//! the sharing rules (identical or disjoint, no overlap, no unused frame), plus the conversion of a
//! 1.0 index to the 2.0 model. Every check is O(n log n) in the number of records, and every
//! allocation is bounded by the index length. Errors name the entry or frame and its record's offset.

use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{
    EntryRecord, FrameRecord, COMPRESSION_NONE, COMPRESSION_ZSTD, ENTRY_FLAGS_KNOWN, ENTRY_FLAG_SOLID, ENTRY_FLAG_X86,
    ENTRY_RECORD_LEN, FRAME_RECORD_LEN, MAX_MODE,
};
use crate::path::validate_path;

/// What the checks need to know about the index besides the records.
pub(crate) struct Tables<'a> {
    /// The archive's name, for errors.
    pub name: &'a Path,
    /// Absolute offset of the first entry record.
    pub records_at: u64,
    /// Absolute offset of the frame table.
    pub frames_at: u64,
    /// The data area.
    pub data: Range<u64>,
    /// Largest frame length.
    pub frame_size: u64,
    /// The string table.
    pub strings: &'a str,
}

impl Tables<'_> {
    fn record_at(&self, i: usize) -> u64 {
        self.records_at + i as u64 * ENTRY_RECORD_LEN
    }

    fn frame_at(&self, f: usize) -> u64 {
        self.frames_at + f as u64 * FRAME_RECORD_LEN
    }

    /// The record's path if it lies in the string table (validity is checked separately).
    fn path_of(&self, record: &EntryRecord) -> Option<&str> {
        let start = record.path_offset as usize;
        self.strings.get(start..start.checked_add(record.path_len as usize)?)
    }

    fn entry_error(&self, i: usize, record: &EntryRecord, what: impl Into<String>) -> Error {
        Error::corrupt(self.name, self.record_at(i), self.path_of(record), what)
    }

    fn frame_error(&self, f: usize, what: impl Into<String>) -> Error {
        Error::corrupt(self.name, self.frame_at(f), None, format!("frame {f}: {}", what.into()))
    }
}

/// Checks a 1.0 index's data-order and frame rules (spec Appendix A) and converts it: frame ends
/// become frame records with absolute offsets, zstd records get their frame count, empty entries
/// offset 0.
pub(crate) fn convert_v1(
    tables: &Tables<'_>,
    mut records: Vec<EntryRecord>,
    ends: &[u64],
) -> Result<(Vec<EntryRecord>, Vec<FrameRecord>)> {
    let mut frames = Vec::with_capacity(ends.len());
    let mut previous_end = tables.data.start;
    for (i, record) in records.iter_mut().enumerate() {
        let fail = |what: &str| tables.entry_error(i, record, what);
        // 1.0 keeps the stored size where 2.0 keeps the frame count.
        let stored_size = record.frame_count;
        let end = record.offset.checked_add(stored_size).ok_or_else(|| fail("extent overflows"))?;
        if record.offset < previous_end {
            return Err(fail("data extent overlaps the previous entry or the header"));
        }
        if end > tables.data.end {
            return Err(fail("data extent runs past the data area"));
        }
        previous_end = end;
        match record.compression {
            COMPRESSION_NONE if stored_size != record.size => {
                return Err(fail("uncompressed entry whose stored size differs from its size"))
            }
            COMPRESSION_NONE => record.frame_count = 0,
            COMPRESSION_ZSTD => {
                let count = record.size.div_ceil(tables.frame_size);
                if u64::from(record.first_frame) != frames.len() as u64 {
                    return Err(fail("first frame is not the next unused frame"));
                }
                let run = ends
                    .get(frames.len()..frames.len() + count as usize)
                    .ok_or_else(|| fail("frames run past the frame table"))?;
                let mut previous = 0u64;
                for (k, &frame_end) in run.iter().enumerate() {
                    let stored = frame_end.saturating_sub(previous);
                    let len = (record.size - k as u64 * tables.frame_size).min(tables.frame_size);
                    if frame_end <= previous || stored > len {
                        return Err(fail(&format!("frame {k} has an impossible stored length")));
                    }
                    frames.push(FrameRecord {
                        offset: record.offset + previous,
                        stored_len: stored as u32,
                        len: len as u32,
                    });
                    previous = frame_end;
                }
                if previous != stored_size {
                    return Err(fail("last frame end differs from the stored size"));
                }
                record.frame_count = count;
                if count == 0 {
                    record.compression = COMPRESSION_NONE; // an empty zstd entry: nothing stored
                }
            }
            other => return Err(fail(&format!("unknown compression method {other}"))),
        }
        if record.compression == COMPRESSION_NONE {
            record.first_frame = 0;
        }
        if record.size == 0 || record.compression == COMPRESSION_ZSTD {
            record.offset = 0; // an empty entry occupies nothing; a frames entry's skip is 0
        }
        record.flags = 0;
    }
    if frames.len() != ends.len() {
        return Err(Error::corrupt(tables.name, tables.records_at, None, "frame table has unused frames"));
    }
    Ok((records, frames))
}

/// Checks each frame record on its own; returns the decoded coordinate of each frame's start.
pub(crate) fn check_frames(tables: &Tables<'_>, frames: &[FrameRecord]) -> Result<Vec<u64>> {
    let mut starts = Vec::new();
    starts.try_reserve_exact(frames.len()).map_err(|e| Error::io(tables.name, std::io::Error::other(e)))?;
    let mut coordinate = 0u64;
    for (f, frame) in frames.iter().enumerate() {
        if frame.len == 0 || u64::from(frame.len) > tables.frame_size {
            let what = format!("length {} is outside 1..={} (the header's frame size)", frame.len, tables.frame_size);
            return Err(tables.frame_error(f, what));
        }
        if frame.stored_len == 0 || frame.stored_len > frame.len {
            return Err(
                tables.frame_error(f, format!("stored length {} is outside 1..={}", frame.stored_len, frame.len))
            );
        }
        let end = frame.offset.checked_add(u64::from(frame.stored_len));
        if frame.offset < tables.data.start || end.is_none_or(|end| end > tables.data.end) {
            return Err(tables.frame_error(f, format!("stored bytes at {} lie outside the data area", frame.offset)));
        }
        starts.push(coordinate);
        coordinate += u64::from(frame.len);
    }
    Ok(starts)
}

/// Checks each entry record on its own: path, mode, mtime, flags and storage fields.
pub(crate) fn check_entries(
    tables: &Tables<'_>,
    records: &[EntryRecord],
    frames: &[FrameRecord],
    starts: &[u64],
    check_flags: bool,
) -> Result<()> {
    for (i, record) in records.iter().enumerate() {
        let path = tables.path_of(record).ok_or_else(|| {
            let what = "path lies outside the string table or cuts a UTF-8 character in two";
            Error::corrupt(tables.name, tables.record_at(i), None, what)
        })?;
        let fail = |what: &str| tables.entry_error(i, record, what);
        validate_path(path).map_err(|e| fail(&e.to_string()))?;
        if record.mode > MAX_MODE {
            return Err(fail("mode has bits above 0o7777"));
        }
        if record.mtime_nanos >= 1_000_000_000 {
            return Err(fail("mtime nanoseconds out of range"));
        }
        if check_flags && (record.flags & !ENTRY_FLAGS_KNOWN != 0) {
            return Err(fail("unknown entry flags"));
        }
        if record.flags & ENTRY_FLAG_X86 != 0 && record.flags & ENTRY_FLAG_SOLID != 0 {
            return Err(fail("solid entry with the X86 filter flag (solid frames are never filtered)"));
        }
        match record.compression {
            COMPRESSION_NONE => {
                if record.frame_count != 0 || record.first_frame != 0 || record.flags != 0 {
                    return Err(fail("raw entry with a frame run, the solid flag or the X86 filter flag"));
                }
                if record.size == 0 {
                    if record.offset != 0 {
                        return Err(fail("empty entry with an offset other than 0"));
                    }
                } else {
                    let end = record.offset.checked_add(record.size);
                    if record.offset < tables.data.start || end.is_none_or(|end| end > tables.data.end) {
                        return Err(fail("data extent lies outside the data area"));
                    }
                }
            }
            COMPRESSION_ZSTD => check_run(record, frames, starts).map_err(|what| fail(&what))?,
            other => return Err(fail(&format!("unknown storage {other}"))),
        }
    }
    Ok(())
}

/// A frames entry's run: inside the table, minimal, and covering the content.
fn check_run(record: &EntryRecord, frames: &[FrameRecord], starts: &[u64]) -> std::result::Result<(), String> {
    if record.size == 0 {
        return Err("an empty entry must be raw".to_owned());
    }
    let first = u64::from(record.first_frame);
    let end = first.checked_add(record.frame_count).filter(|&end| record.frame_count > 0 && end <= frames.len() as u64);
    let Some(end) = end else {
        return Err(format!(
            "frame run {first}+{} lies outside the frame table ({} frames)",
            record.frame_count,
            frames.len()
        ));
    };
    let (first, last) = (first as usize, end as usize - 1);
    if record.offset >= u64::from(frames[first].len) {
        return Err(format!(
            "skip {} is not inside the first frame ({} bytes): the run is not minimal",
            record.offset, frames[first].len
        ));
    }
    let start = starts[first] + record.offset;
    let content_end = start.checked_add(record.size).ok_or("size overflows")?;
    let run_end = starts[last] + u64::from(frames[last].len);
    if content_end > run_end {
        return Err(format!(
            "content ({} bytes from skip {}) runs past its {} frames",
            record.size, record.offset, record.frame_count
        ));
    }
    if content_end <= starts[last] {
        return Err("the run's last frame holds none of the content: the run is not minimal".to_owned());
    }
    Ok(())
}

/// The sharing rules: frames entries' decoded ranges and raw extents identical (with equal content
/// hashes and flags) or disjoint, no two frames overlapping, no raw extent overlapping a frame, no
/// unused frame, and every entry using a frame agreeing on the X86 filter. Returns, per frame,
/// whether it is filtered.
pub(crate) fn check_sharing(
    tables: &Tables<'_>,
    records: &[EntryRecord],
    frames: &[FrameRecord],
    starts: &[u64],
) -> Result<Vec<bool>> {
    let path = |i: u32| tables.path_of(&records[i as usize]).unwrap_or("");
    // Frames entries, in decoded coordinates.
    let mut ranges: Vec<(u64, u64, u32)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.compression == COMPRESSION_ZSTD)
        .map(|(i, r)| {
            let start = starts[r.first_frame as usize] + r.offset;
            (start, start + r.size, i as u32)
        })
        .collect();
    ranges.sort_unstable();
    let distinct = identical_or_disjoint(tables, records, &ranges, "content range (in decoded frame coordinates)")?;
    let filtered = frame_filters(tables, records, frames.len(), &distinct)?;
    // Raw extents.
    let mut extents: Vec<(u64, u64, u32)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.compression == COMPRESSION_NONE && r.size > 0)
        .map(|(i, r)| (r.offset, r.offset + r.size, i as u32))
        .collect();
    extents.sort_unstable();
    let distinct_raw = identical_or_disjoint(tables, records, &extents, "data extent")?;
    // Frames against frames and raw extents: all disjoint.
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Owner {
        Frame(u32),
        Raw(u32),
    }
    let mut placed: Vec<(u64, u64, Owner)> = frames
        .iter()
        .enumerate()
        .map(|(f, frame)| (frame.offset, frame.offset + u64::from(frame.stored_len), Owner::Frame(f as u32)))
        .collect();
    placed.extend(distinct_raw.iter().map(|&i| {
        let r = &records[i as usize];
        (r.offset, r.offset + r.size, Owner::Raw(i))
    }));
    placed.sort_unstable();
    for pair in placed.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(match (a, b) {
                (Owner::Frame(f), Owner::Frame(g)) => {
                    tables.frame_error(g as usize, format!("its stored bytes overlap frame {f}"))
                }
                (Owner::Raw(i), Owner::Frame(f)) | (Owner::Frame(f), Owner::Raw(i)) => {
                    tables.entry_error(i as usize, &records[i as usize], format!("data extent overlaps frame {f}"))
                }
                (Owner::Raw(i), Owner::Raw(j)) => tables.entry_error(
                    j as usize,
                    &records[j as usize],
                    format!("data extent overlaps entry '{}'", path(i)),
                ),
            });
        }
    }
    Ok(filtered)
}

/// Per frame, whether the entries using it (one of each distinct range, so the work is bounded by
/// the frame count plus the entry count) carry the X86 filter flag; they must all agree, and every
/// frame must be used.
fn frame_filters(
    tables: &Tables<'_>,
    records: &[EntryRecord],
    frame_count: usize,
    distinct: &[u32],
) -> Result<Vec<bool>> {
    let mut filter: Vec<Option<(bool, u32)>> = vec![None; frame_count];
    for &i in distinct {
        let r = &records[i as usize];
        let x86 = r.flags & ENTRY_FLAG_X86 != 0;
        for slot in &mut filter[r.first_frame as usize..(u64::from(r.first_frame) + r.frame_count) as usize] {
            match *slot {
                Some((other, j)) if other != x86 => {
                    let other = tables.path_of(&records[j as usize]).unwrap_or("");
                    let what = format!("shares a frame with entry '{other}' but not its X86 filter flag");
                    return Err(tables.entry_error(i as usize, r, what));
                }
                Some(_) => {}
                None => *slot = Some((x86, i)),
            }
        }
    }
    if let Some(f) = filter.iter().position(Option::is_none) {
        return Err(tables.frame_error(f, "no entry uses it"));
    }
    Ok(filter.into_iter().map(|slot| slot.is_some_and(|(x86, _)| x86)).collect())
}

/// Walks ranges sorted by (start, end): each must equal the previous distinct one (then with the same
/// content hash) or start at or after its end. Returns one entry of each distinct range.
fn identical_or_disjoint(
    tables: &Tables<'_>,
    records: &[EntryRecord],
    sorted: &[(u64, u64, u32)],
    what: &str,
) -> Result<Vec<u32>> {
    let mut distinct: Vec<u32> = Vec::new();
    let mut current: Option<(u64, u64, u32)> = None;
    for &(start, end, i) in sorted {
        let record = &records[i as usize];
        match current {
            Some((s, e, j)) if (s, e) == (start, end) => {
                let owner = &records[j as usize];
                let other = tables.path_of(owner).unwrap_or("");
                if owner.content_hash != record.content_hash {
                    let message = format!("shares its {what} with entry '{other}' but their content hashes differ");
                    return Err(tables.entry_error(i as usize, record, message));
                }
                if (owner.flags ^ record.flags) & ENTRY_FLAG_X86 != 0 {
                    let message = format!("shares its {what} with entry '{other}' but not its X86 filter flag");
                    return Err(tables.entry_error(i as usize, record, message));
                }
            }
            Some((_, e, j)) if start < e => {
                let other = tables.path_of(&records[j as usize]).unwrap_or("");
                let message =
                    format!("{what} partially overlaps entry '{other}' (shared data must be identical or disjoint)");
                return Err(tables.entry_error(i as usize, record, message));
            }
            _ => {
                current = Some((start, end, i));
                distinct.push(i);
            }
        }
    }
    Ok(distinct)
}
