//! The patch file's byte layout (spec/PATCH.md), declared once for the writer (diff.rs) and the
//! reader (apply.rs): the fixed header as a binrw struct, the operation and storage codes as enums,
//! the entry record and payload descriptors with one `write` and one `read` each, and a reader over
//! the decompressed control stream that tracks its offset for error messages, holds every count to
//! what the remaining bytes and the declared output can hold, and never allocates more than the bytes
//! actually present.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use binrw::{binrw, BinRead, BinWrite};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// `\x89MFP\r\n\x1a\n`.
pub const PATCH_MAGIC: [u8; 8] = *b"\x89MFP\r\n\x1a\n";
/// Header `version_major` this code writes; a reader refuses any other major version.
pub const PATCH_VERSION_MAJOR: u16 = 2;
/// Header `version_minor` this code writes (2.1: storage kinds solid and same-as, which a 2.0 reader
/// refuses as unknown; 2.2: the archive preamble carries the old and new content ids, so a patch
/// applies to any layout of its base, an archive edited in place included; 2.3: operation 4,
/// frames, which a 2.2 reader refuses as an unknown operation; 2.4: a delta payload's delta bytes are
/// coded as runs of zeros and literals, see [`DeltaCoding`]).
pub const PATCH_VERSION_MINOR: u16 = 4;
/// The first minor version that knows operation 4 ([`Op::Frames`]); an older patch using it is corrupt.
pub const FRAMES_MINOR: u16 = 3;
/// The first minor version whose delta payloads code their delta bytes as runs ([`DeltaCoding::Runs`]).
pub const RUNS_MINOR: u16 = 4;
/// Bytes of the fixed header; the control stream starts right after it.
pub const PATCH_HEADER_LEN: u64 = 80;

/// Patch kinds (header byte 12).
pub const KIND_ARCHIVE: u8 = 0;
/// A patch between two plain files (one op for the whole file, no entry records).
pub const KIND_PLAIN: u8 = 1;

/// Header flag: the result is byte-identical to the new file and `new_hash` is enforced.
pub const FLAG_EXACT: u8 = 1;
/// Header flag (archive patches): the old file is a Panda3D multifile; the patch's old archive is its
/// canonical mf conversion (what `mf convert --to mf` writes), which `apply` makes first.
pub const FLAG_OLD_PANDA3D: u8 = 2;
/// Header flag (archive patches): the new file was a Panda3D multifile; the patch rebuilds its
/// canonical mf conversion, and `apply` writes a Panda3D multifile by default.
pub const FLAG_NEW_PANDA3D: u8 = 4;
/// Header flag (archive patches, 2.2): the archive preamble carries the old and new content ids. A
/// 2.1 reader refuses the flag as unknown instead of misreading the preamble.
pub const FLAG_CONTENT_IDS: u8 = 8;
/// Every header flag this version knows.
pub const FLAGS_KNOWN: u8 = FLAG_EXACT | FLAG_OLD_PANDA3D | FLAG_NEW_PANDA3D | FLAG_CONTENT_IDS;

/// Entry record flags.
pub const EF_PATH: u8 = 1;
/// Entry record flag: a mode follows.
pub const EF_MODE: u8 = 2;
/// Entry record flag: an mtime follows (zigzag seconds, nanoseconds).
pub const EF_MTIME: u8 = 4;
/// Entry record flag: a copy that also keeps the base's stored bytes and frame layout (copies only).
pub const EF_VERBATIM: u8 = 8;
/// Every entry record flag this version knows; a record with others is corrupt.
pub const EF_KNOWN: u8 = EF_PATH | EF_MODE | EF_MTIME | EF_VERBATIM;

/// Largest `new_len` of a zstd-ref or full block: a block is decoded whole before it is written.
pub const MAX_BLOCK_LEN: u64 = 8 << 20;
/// Largest reference window of a zstd-ref block: the window is held in memory while it decodes.
pub const MAX_REF_WINDOW: u64 = 16 << 20;
/// Largest window log of the control stream, full blocks and delta streams (8 MiB), so no decoder
/// buffers more than that whatever a frame declares.
pub const STREAM_WINDOW_LOG_MAX: u32 = 23;
/// Largest window log of a zstd-ref block, whose window spans its reference prefix and output.
pub const REF_WINDOW_LOG_MAX: u32 = 25;
/// No zstd frame is shorter (magic, frame header, window or size byte, one block header).
pub const MIN_FRAME_LEN: u64 = 9;
/// Most bytes one payload byte of a record may decode to: a zstd-ref or full block of at most
/// [`MAX_BLOCK_LEN`] from a frame of [`MIN_FRAME_LEN`] bytes is under 2^20-fold, and a zstd stream
/// (a delta's delta and extra streams) expands less than 2^16-fold.
pub const MAX_PAYLOAD_EXPANSION: u64 = 1 << 20;
/// Each record of an archive patch adds at least one index record to the new archive.
pub const MIN_ENTRY_OUTPUT: u64 = mf_format::format::ENTRY_RECORD_LEN;

/// What rebuilds an entry (entry record `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// The base's content unchanged. No payload.
    Copy = 0,
    /// The bsdiff model: controls, delta bytes and extra bytes, three zstd streams (see [`crate::delta`]).
    Delta = 1,
    /// zstd blocks decoded with a window of the base's content as reference prefix.
    ZstdRef = 2,
    /// zstd blocks without a reference.
    Full = 3,
    /// (2.3) Runs of the base's frames kept as they are and runs rebuilt by a nested delta, zstd-ref
    /// or full payload (see [`FrameRun`]).
    Frames = 4,
}

impl Op {
    /// The op of an entry record's `op` byte; `None` for an unknown code.
    pub fn from_byte(byte: u8) -> Option<Op> {
        [Op::Copy, Op::Delta, Op::ZstdRef, Op::Full, Op::Frames].into_iter().find(|op| *op as u8 == byte)
    }

    /// Whether the record carries the base's content hash (`base_hash`): every op that reads the base.
    pub fn has_base_hash(self) -> bool {
        matches!(self, Op::Delta | Op::ZstdRef | Op::Frames)
    }

    /// Whether the op reads a base (old entry) and so has an `old_delta`.
    pub fn has_base(self) -> bool {
        self != Op::Full
    }
}

/// How an entry is stored in the new archive (entry record `storage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// VERBATIM copy: the base's stored bytes and frame ends (no storage byte on the wire).
    Verbatim,
    /// Byte 0: compression none.
    None,
    /// Byte 1: zstd frames, every frame compressed.
    AllFrames,
    /// Byte 2: zstd frames, bit `k` of the bitmap set when frame `k` is compressed.
    Bitmap(Vec<u8>),
    /// Byte 3 (2.1): appended to the writer's solid stream.
    Solid,
    /// Byte 4 (2.1): shares the data of the record this many records earlier (at least 1), whose
    /// content is the same.
    SameAs(u64),
}

impl Storage {
    const NONE: u8 = 0;
    const ALL_FRAMES: u8 = 1;
    const BITMAP: u8 = 2;
    const SOLID: u8 = 3;
    const SAME_AS: u8 = 4;

    /// Per-frame compression decisions for an entry of `size` bytes; `None` when a bitmap does not
    /// fit the entry's frame count.
    pub fn frame_flags(&self, size: u64, frame_size: u64) -> Option<Vec<bool>> {
        let frames = usize::try_from(size.div_ceil(frame_size)).ok()?;
        match self {
            Storage::None | Storage::Verbatim | Storage::Solid | Storage::SameAs(_) => Some(vec![false; frames]),
            Storage::AllFrames => Some(vec![true; frames]),
            Storage::Bitmap(bits) => {
                if bits.len() != frames.div_ceil(8) {
                    return None;
                }
                Some((0..frames).map(|k| bits[k / 8] & (1 << (k % 8)) != 0).collect())
            }
        }
    }

    /// The descriptor of an entry whose frames are compressed as `compressed` says.
    pub fn from_frames(stored_raw: bool, compressed: &[bool]) -> Storage {
        if stored_raw {
            Storage::None
        } else if compressed.iter().all(|&c| c) {
            Storage::AllFrames
        } else {
            let mut bitmap = vec![0u8; compressed.len().div_ceil(8)];
            for (k, _) in compressed.iter().enumerate().filter(|(_, &c)| c) {
                bitmap[k / 8] |= 1 << (k % 8);
            }
            Storage::Bitmap(bitmap)
        }
    }
}

/// A zstd-ref or full block: `new_len` bytes decoded from one blob, for zstd-ref with the base's
/// bytes `[old_start, old_start + old_len)` as reference prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDesc {
    /// Bytes the block decodes to (at most [`MAX_BLOCK_LEN`]).
    pub new_len: u64,
    /// zstd-ref: start of the reference window in the base's content (0 for full blocks).
    pub old_start: u64,
    /// zstd-ref: length of the reference window (at most [`MAX_REF_WINDOW`]; 0 for full blocks).
    pub old_len: u64,
    /// Bytes of the block's blob (one or more zstd frames) in the blob section.
    pub blob_len: u64,
    /// Where the blob starts in the patch file (set by the reader; ignored by the writer).
    pub blob_at: u64,
}

/// How a delta payload stores its delta bytes (wire code 0 or 1 from 2.4; raw before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaCoding {
    /// Code 0, and every delta payload before 2.4: the delta blob holds the `delta_len` delta bytes
    /// as they are. Writers use it where runs would break the reader's 2^20 expansion rule.
    Raw,
    /// Code 1 (2.4): a runs blob of varint pairs (zero bytes, then literal bytes) covering the `delta_len`
    /// delta bytes, and the delta blob holding the literal bytes only. A native binary's delta is
    /// 95% zeros: zstd then reads a twentieth of the bytes, so a strong level costs little.
    Runs {
        /// Σ literal bytes: the length of the delta blob's stream.
        literal_len: u64,
        /// Bytes of the runs blob (0 when `delta_len` is 0).
        runs_blob: u64,
    },
}

/// A delta payload: its blobs (controls, delta runs from 2.4, delta bytes, extra bytes), each one zstd
/// frame or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaDesc {
    /// Number of (add, copy, seek) controls in the controls stream.
    pub control_count: u64,
    /// Σ add: bytes of the delta stream. The extra stream holds the entry's size minus this.
    pub delta_len: u64,
    /// How the delta bytes are stored.
    pub coding: DeltaCoding,
    /// Bytes of the controls blob (0 when there are no controls).
    pub controls_blob: u64,
    /// Bytes of the delta-bytes blob (0 when its stream is empty).
    pub delta_blob: u64,
    /// Bytes of the extra-bytes blob (0 when the entry has no extra bytes).
    pub extra_blob: u64,
    /// Where the controls blob starts in the patch file (set by the reader); the other two follow it.
    pub blob_at: u64,
}

/// The payload descriptor of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadDesc {
    /// Copy: no payload.
    None,
    /// Delta: the three blobs of the bsdiff model.
    Delta(DeltaDesc),
    /// zstd-ref or full: one or more blocks, in output order.
    Blocks(Vec<BlockDesc>),
    /// (2.3) Frames: runs of new frames, in order, kept from the base or rebuilt.
    Frames(Vec<FrameRun>),
}

/// One run of a frames payload: the next `frames` frames of the new entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRun {
    /// Frames the run covers (at least 1).
    pub frames: u64,
    /// `None`: keep, the frames equal the base's frames at the same index. Otherwise how they are rebuilt.
    pub patch: Option<RunPatch>,
}

/// How a run of a frames payload is rebuilt: a nested delta, zstd-ref or full payload whose base is
/// the window `[old_start, old_start + old_len)` of the base's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPatch {
    /// [`Op::Delta`], [`Op::ZstdRef`] or [`Op::Full`].
    pub op: Op,
    /// xxh3-64 of the run's output, checked as soon as the run is produced.
    pub hash: u64,
    /// Start of the window of the base the nested payload reads (0 for full).
    pub old_start: u64,
    /// Length of that window (0 for full).
    pub old_len: u64,
    /// The nested payload, producing the run's bytes.
    pub payload: PayloadDesc,
}

/// Wire code of a kept run (a nested op's code otherwise).
const RUN_KEEP: u8 = 0;

/// Bytes of frames `[first, first + count)` of an entry of `size` bytes cut in frames of `frame_size`.
pub fn run_len(first: u64, count: u64, size: u64, frame_size: u64) -> u64 {
    let start = first.saturating_mul(frame_size).min(size);
    let end = first.saturating_add(count).saturating_mul(frame_size).min(size);
    end - start
}

/// Bytes of an entry of `size` bytes that a frames payload's rebuilt (`patch`) runs produce; the
/// kept runs hold the rest.
pub(crate) fn patched_bytes(runs: &[FrameRun], size: u64, frame_size: u64) -> u64 {
    let mut first = 0;
    let mut patched = 0;
    for run in runs {
        if run.patch.is_some() {
            patched += run_len(first, run.frames, size, frame_size);
        }
        first += run.frames;
    }
    patched
}

impl PayloadDesc {
    /// Blob bytes the payload takes in the patch.
    pub fn patch_bytes(&self) -> u64 {
        match self {
            PayloadDesc::None => 0,
            PayloadDesc::Delta(d) => d.controls_blob + d.runs_blob() + d.delta_blob + d.extra_blob,
            PayloadDesc::Blocks(blocks) => blocks.iter().map(|b| b.blob_len).sum(),
            PayloadDesc::Frames(runs) => {
                runs.iter().filter_map(|r| r.patch.as_ref()).map(|p| p.payload.patch_bytes()).sum()
            }
        }
    }

    fn write(&self, out: &mut Vec<u8>, op: Op) {
        match self {
            PayloadDesc::None => {}
            PayloadDesc::Delta(d) => {
                put_varint(out, d.control_count);
                put_varint(out, d.delta_len);
                match d.coding {
                    DeltaCoding::Raw => put_varint(out, 0),
                    DeltaCoding::Runs { literal_len, .. } => {
                        put_varint(out, 1);
                        put_varint(out, literal_len);
                    }
                }
                put_varint(out, d.controls_blob);
                if let DeltaCoding::Runs { runs_blob, .. } = d.coding {
                    put_varint(out, runs_blob);
                }
                put_varint(out, d.delta_blob);
                put_varint(out, d.extra_blob);
            }
            PayloadDesc::Blocks(blocks) => {
                put_varint(out, blocks.len() as u64);
                for block in blocks {
                    put_varint(out, block.new_len);
                    if op == Op::ZstdRef {
                        put_varint(out, block.old_start);
                        put_varint(out, block.old_len);
                    }
                    put_varint(out, block.blob_len);
                }
            }
            PayloadDesc::Frames(runs) => {
                put_varint(out, runs.len() as u64);
                for run in runs {
                    put_varint(out, run.frames);
                    match &run.patch {
                        None => out.push(RUN_KEEP),
                        Some(patch) => {
                            out.push(patch.op as u8);
                            out.extend_from_slice(&patch.hash.to_le_bytes());
                            if patch.op != Op::Full {
                                put_varint(out, patch.old_start);
                                put_varint(out, patch.old_len);
                            }
                            patch.payload.write(out, patch.op);
                        }
                    }
                }
            }
        }
    }

    /// Reads a frames payload (op 4) for an entry of `size` bytes in frames of `frame_size`: its runs
    /// cover the entry's frames exactly, each rebuilt run's size is held to what its own blob bytes
    /// can decode to, and kept bytes to `kept_max` (what the old archive can hold).
    fn read_frames<R: Read>(
        reader: &mut ControlReader<R>,
        size: u64,
        frame_size: u64,
        kept_max: u64,
        blobs: &mut BlobCursor,
        minor: u16,
    ) -> Result<PayloadDesc> {
        let total = size.div_ceil(frame_size);
        let count = reader.bounded(total, "frame run count")?;
        if count == 0 && total != 0 {
            return Err(reader.corrupt("a frames payload needs at least one run"));
        }
        let (mut runs, mut next, mut kept) = (Vec::new(), 0u64, 0u64);
        for _ in 0..count {
            let frames_at = reader.offset;
            let frames = reader.bounded(total - next, "frames in the run")?;
            if frames == 0 {
                return Err(reader.corrupt_at(frames_at, "a frame run of no frames"));
            }
            let len = run_len(next, frames, size, frame_size);
            let kind_at = reader.offset;
            let patch = match reader.u8()? {
                RUN_KEEP => {
                    kept = kept.saturating_add(len);
                    if kept > kept_max {
                        return Err(reader.corrupt_at(
                            frames_at,
                            format!("kept frames exceed what the old archive can hold ({kept_max} bytes)"),
                        ));
                    }
                    None
                }
                code => {
                    let op = Op::from_byte(code)
                        .filter(|op| matches!(op, Op::Delta | Op::ZstdRef | Op::Full))
                        .ok_or_else(|| reader.corrupt_at(kind_at, format!("unknown frame run operation {code}")))?;
                    let hash = reader.u64le()?;
                    let (old_start, old_len) =
                        if op == Op::Full { (0, 0) } else { (reader.varint()?, reader.varint()?) };
                    if old_start.checked_add(old_len).is_none() {
                        return Err(reader.corrupt("the run's base window overflows"));
                    }
                    let payload = PayloadDesc::read(reader, op, len, blobs, minor)?;
                    if len > payload.patch_bytes().saturating_mul(MAX_PAYLOAD_EXPANSION) {
                        return Err(
                            reader.corrupt_at(frames_at, "the run is larger than its payload bytes can decode to")
                        );
                    }
                    Some(RunPatch { op, hash, old_start, old_len, payload })
                }
            };
            next += frames;
            runs.try_reserve(1).map_err(|_| reader.corrupt("too many frame runs to hold in memory"))?;
            runs.push(FrameRun { frames, patch });
        }
        if next != total {
            return Err(reader.corrupt(format!("the frame runs cover {next} of the entry's {total} frames")));
        }
        Ok(PayloadDesc::Frames(runs))
    }

    /// Reads the payload of an `op` record producing `size` bytes in a patch of minor version
    /// `minor`, assigning its blobs.
    fn read<R: Read>(
        reader: &mut ControlReader<R>,
        op: Op,
        size: u64,
        blobs: &mut BlobCursor,
        minor: u16,
    ) -> Result<PayloadDesc> {
        match op {
            Op::Copy => Ok(PayloadDesc::None),
            // Frames payloads need the frame size: read by `read_frames`, never nested.
            Op::Frames => Err(reader.corrupt("a frames payload where it cannot be")),
            Op::Delta => {
                // A control produces at least one byte, except a final seek-only one.
                let control_count = reader.bounded(size.saturating_add(1), "control count")?;
                let delta_len = reader.bounded(size, "delta length")?;
                // The coding field (2.4): runs coding brings the literal stream's length.
                let literal_len = if minor < RUNS_MINOR {
                    None
                } else {
                    let at = reader.offset;
                    match reader.varint()? {
                        0 => None,
                        1 => Some(reader.bounded(delta_len, "delta literal length")?),
                        code => return Err(reader.corrupt_at(at, format!("unknown delta coding {code}"))),
                    }
                };
                let blob_at = blobs.cursor;
                let mut take = |reader: &mut ControlReader<R>, what: &str, content: u64| -> Result<u64> {
                    let len = reader.bounded(blobs.remaining(), what)?;
                    if (content == 0) != (len == 0) || (len != 0 && len < MIN_FRAME_LEN) {
                        return Err(reader.corrupt(format!("{what} {len} does not fit a stream of {content} bytes")));
                    }
                    blobs.take(len);
                    Ok(len)
                };
                let controls_blob = take(reader, "controls blob length", control_count)?;
                let coding = match literal_len {
                    Some(literal_len) => {
                        DeltaCoding::Runs { literal_len, runs_blob: take(reader, "delta runs blob length", delta_len)? }
                    }
                    None => DeltaCoding::Raw,
                };
                let delta_blob = take(reader, "delta blob length", literal_len.unwrap_or(delta_len))?;
                let extra_blob = take(reader, "extra blob length", size - delta_len)?;
                Ok(PayloadDesc::Delta(DeltaDesc {
                    control_count,
                    delta_len,
                    coding,
                    controls_blob,
                    delta_blob,
                    extra_blob,
                    blob_at,
                }))
            }
            Op::ZstdRef | Op::Full => {
                // Every block has a blob of at least one zstd frame: the count is held to the blob
                // bytes left before anything is allocated.
                let most =
                    (blobs.remaining() / MIN_FRAME_LEN).min(size.div_ceil(MAX_BLOCK_LEN).max(1).saturating_mul(64));
                let count = reader.bounded(most, "block count")?;
                if count == 0 {
                    return Err(reader.corrupt("a zstd payload needs at least one block"));
                }
                let mut blocks = Vec::with_capacity(count as usize);
                let mut total = 0u64;
                for _ in 0..count {
                    let new_len = reader.bounded(MAX_BLOCK_LEN.min(size - total), "block length")?;
                    total += new_len;
                    let (old_start, old_len) = if op == Op::ZstdRef {
                        (reader.varint()?, reader.bounded(MAX_REF_WINDOW, "reference window length")?)
                    } else {
                        (0, 0)
                    };
                    let blob_len = reader.bounded(blobs.remaining(), "block blob length")?;
                    if blob_len < MIN_FRAME_LEN {
                        return Err(
                            reader.corrupt(format!("block blob length {blob_len} is shorter than a zstd frame"))
                        );
                    }
                    let blob_at = blobs.take(blob_len);
                    blocks.push(BlockDesc { new_len, old_start, old_len, blob_len, blob_at });
                }
                if total != size {
                    return Err(reader.corrupt("blocks do not add up to the entry's size"));
                }
                Ok(PayloadDesc::Blocks(blocks))
            }
        }
    }
}

impl DeltaDesc {
    /// Bytes of the runs blob (0 before 2.4).
    pub fn runs_blob(&self) -> u64 {
        match self.coding {
            DeltaCoding::Raw => 0,
            DeltaCoding::Runs { runs_blob, .. } => runs_blob,
        }
    }
}

/// Where the next blob starts, and where the blob section ends.
pub(crate) struct BlobCursor {
    /// Patch-file offset of the next unassigned blob byte.
    pub(crate) cursor: u64,
    /// Patch-file offset one past the blob section (the file's end).
    pub(crate) end: u64,
}

impl BlobCursor {
    fn remaining(&self) -> u64 {
        self.end - self.cursor
    }

    /// Takes `len` bytes (already checked to be at most [`BlobCursor::remaining`]); returns their start.
    fn take(&mut self, len: u64) -> u64 {
        let at = self.cursor;
        self.cursor += len;
        at
    }
}

/// One entry record of an archive patch (spec/PATCH.md, "Entry record").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Offset of the record in the control stream (set by the reader; for errors).
    pub at: u64,
    /// How the entry is rebuilt.
    pub op: Op,
    /// The base's data-order index (written as a delta from the previous record's base).
    pub old_index: Option<u32>,
    /// The new path, when it differs from the base's (always set for full entries).
    pub path: Option<String>,
    /// The new mode, when it differs from the base's.
    pub mode: Option<u32>,
    /// The new mtime (seconds since the epoch, nanoseconds), when it differs from the base's.
    pub mtime: Option<(i64, u32)>,
    /// Content size and xxh3 (zero for copies, which take the base's).
    pub size: u64,
    /// xxh3-64 of the new content, checked once it is rebuilt.
    pub hash: u64,
    /// Delta and zstd-ref: xxh3-64 of the base's content, checked before it is used.
    pub base_hash: Option<u64>,
    /// How the rebuilt content is stored in the new archive.
    pub storage: Storage,
    /// Where the record's blobs are and how they decode.
    pub payload: PayloadDesc,
}

impl EntryRecord {
    /// A copy under its base's path, mode and mtime: the new entry is the old one, unchanged.
    pub fn is_copy_in_place(&self) -> bool {
        self.op == Op::Copy && self.path.is_none() && self.mode.is_none() && self.mtime.is_none()
    }

    fn flags(&self) -> u8 {
        (if self.path.is_some() { EF_PATH } else { 0 })
            | (if self.mode.is_some() { EF_MODE } else { 0 })
            | (if self.mtime.is_some() { EF_MTIME } else { 0 })
            | if self.storage == Storage::Verbatim { EF_VERBATIM } else { 0 }
    }

    /// Appends the record; `previous_old` is the base index of the last record that had one.
    pub fn write(&self, out: &mut Vec<u8>, previous_old: &mut i64) {
        out.push(self.op as u8);
        out.push(self.flags());
        if let Some(index) = self.old_index {
            put_varint(out, zigzag(i64::from(index) - (*previous_old + 1)));
            *previous_old = i64::from(index);
        }
        if let Some(path) = &self.path {
            put_varint(out, path.len() as u64);
            out.extend_from_slice(path.as_bytes());
        }
        if let Some(mode) = self.mode {
            put_varint(out, u64::from(mode));
        }
        if let Some((secs, nanos)) = self.mtime {
            put_varint(out, zigzag(secs));
            put_varint(out, u64::from(nanos));
        }
        if self.op != Op::Copy {
            put_varint(out, self.size);
            out.extend_from_slice(&self.hash.to_le_bytes());
        }
        if let Some(base_hash) = self.base_hash {
            out.extend_from_slice(&base_hash.to_le_bytes());
        }
        match &self.storage {
            Storage::Verbatim => {}
            Storage::None => out.push(Storage::NONE),
            Storage::AllFrames => out.push(Storage::ALL_FRAMES),
            Storage::Bitmap(bits) => {
                out.push(Storage::BITMAP);
                put_varint(out, bits.len() as u64);
                out.extend_from_slice(bits);
            }
            Storage::Solid => out.push(Storage::SOLID),
            Storage::SameAs(distance) => {
                out.push(Storage::SAME_AS);
                put_varint(out, *distance);
            }
        }
        self.payload.write(out, self.op);
    }

    /// Reads one record, checking it against everything read before it (`state`).
    // Over 80 lines: the record's fields in wire order (spec/PATCH.md "Entry record"), each bound
    // checked right where it is read, so the parser mirrors the table it implements.
    pub(crate) fn read<R: Read>(reader: &mut ControlReader<R>, state: &mut RecordState) -> Result<EntryRecord> {
        reader.entry = None;
        let at = reader.offset;
        let byte = reader.u8()?;
        let op = Op::from_byte(byte)
            .filter(|&op| op != Op::Frames || state.minor >= FRAMES_MINOR)
            .ok_or_else(|| reader.corrupt_at(at, format!("unknown operation {byte}")))?;
        let flags = reader.u8()?;
        if flags & !EF_KNOWN != 0 || (flags & EF_VERBATIM != 0 && op != Op::Copy) {
            return Err(reader.corrupt_at(at + 1, format!("invalid record flags {flags:#x}")));
        }
        let old_index = if op.has_base() {
            let delta = unzigzag(reader.varint()?);
            let index = state.previous_old.checked_add(1).and_then(|p| p.checked_add(delta));
            let index = index
                .and_then(|i| u32::try_from(i).ok())
                .filter(|&i| u64::from(i) < state.old_count)
                .ok_or_else(|| {
                    reader.corrupt(format!("old entry index out of range (the base has {} entries)", state.old_count))
                })?;
            state.previous_old = i64::from(index);
            Some(index)
        } else {
            None
        };
        let path = if flags & EF_PATH != 0 {
            let len = reader.bounded(mf_format::format::MAX_PATH_LEN as u64, "path length")?;
            let bytes = reader.bytes(len)?;
            let path = String::from_utf8(bytes).map_err(|_| reader.corrupt("path is not UTF-8"))?;
            mf_format::validate_path(&path).map_err(|e| reader.corrupt(e.to_string()))?;
            Some(path)
        } else if op == Op::Full {
            return Err(reader.corrupt("a full entry must name its path"));
        } else {
            None
        };
        reader.entry = path.clone().or_else(|| old_index.map(|i| format!("#{i} of the base")));
        state.claim(reader, path.as_deref(), old_index)?;
        let mode = if flags & EF_MODE != 0 {
            Some(reader.bounded(u64::from(mf_format::format::MAX_MODE), "mode")? as u32)
        } else {
            None
        };
        let mtime = if flags & EF_MTIME != 0 {
            let secs = unzigzag(reader.varint()?);
            let nanos = reader.bounded(999_999_999, "mtime nanoseconds")? as u32;
            Some((secs, nanos))
        } else {
            None
        };
        let size_at = reader.offset;
        let (size, hash) = if op != Op::Copy {
            let size = reader.bounded(state.content_left(), "entry size")?;
            (size, reader.u64le()?)
        } else {
            (0, 0)
        };
        state.content_used += size;
        let base_hash = if op.has_base_hash() { Some(reader.u64le()?) } else { None };
        let storage = if flags & EF_VERBATIM != 0 {
            Storage::Verbatim
        } else {
            let kind_at = reader.offset;
            match reader.u8()? {
                Storage::NONE => Storage::None,
                Storage::ALL_FRAMES => Storage::AllFrames,
                Storage::BITMAP => {
                    // Each frame stores at least one byte of the new archive, so the bitmap is held
                    // to the output bytes not yet accounted for.
                    let len = reader.bounded(state.output_left() / 8 + 1, "bitmap length")?;
                    state.output_used += len.saturating_sub(1) * 8;
                    Storage::Bitmap(reader.bytes(len)?)
                }
                Storage::SOLID => Storage::Solid,
                Storage::SAME_AS => {
                    let distance = reader.bounded(state.records_read, "shared-record distance")?;
                    if distance == 0 {
                        return Err(reader.corrupt_at(kind_at, "a record cannot share its own data"));
                    }
                    Storage::SameAs(distance)
                }
                other => return Err(reader.corrupt_at(kind_at, format!("unknown storage kind {other}"))),
            }
        };
        if storage == Storage::None {
            // Stored uncompressed: the content itself is part of the new archive.
            state.output_used = state.output_used.saturating_add(size);
        }
        if state.output_used > state.new_len {
            return Err(reader.corrupt(format!(
                "the records so far need at least {} bytes of output; the patch declares {}",
                state.output_used, state.new_len
            )));
        }
        let (payload, kept) = if op == Op::Frames {
            if state.frame_size_log2 == 0 {
                return Err(reader.corrupt("a frames record without a frame size"));
            }
            let kept_max = state.old_len.saturating_mul(1 << 16);
            let payload = PayloadDesc::read_frames(
                reader,
                size,
                1u64 << state.frame_size_log2,
                kept_max,
                &mut state.blobs,
                state.minor,
            )?;
            let patched = match &payload {
                PayloadDesc::Frames(runs) => patched_bytes(runs, size, 1u64 << state.frame_size_log2),
                _ => 0,
            };
            let kept = size - patched;
            (payload, kept)
        } else {
            (PayloadDesc::read(reader, op, size, &mut state.blobs, state.minor)?, 0)
        };
        // The applier sizes per-frame state from `size` before decoding anything, so `size` is held
        // to what this record's own blob bytes can decode to, not just to the declared output. Kept
        // frames come from the base: the applier checks them against the base's real size before
        // anything is sized from them.
        let most = payload.patch_bytes().saturating_mul(MAX_PAYLOAD_EXPANSION).saturating_add(kept);
        if size > most {
            return Err(reader.corrupt_at(
                size_at,
                format!(
                    "entry size {size} is more than its {} payload bytes can decode to (at most {most})",
                    payload.patch_bytes()
                ),
            ));
        }
        state.records_read += 1;
        Ok(EntryRecord { at, op, old_index, path, mode, mtime, size, hash, base_hash, storage, payload })
    }
}

/// What the records read so far have used up, for checking the next one.
pub(crate) struct RecordState {
    /// The new file's length as the header declares it: the ceiling for every output estimate.
    pub(crate) new_len: u64,
    /// Entries in the old archive; a base index must be below it.
    pub(crate) old_count: u64,
    /// Base index of the last record that had one (-1 before the first), the origin of the next delta.
    pub(crate) previous_old: i64,
    /// Lower bound of the new archive's length implied by the records so far.
    pub(crate) output_used: u64,
    /// Σ of the sizes of non-copy records.
    pub(crate) content_used: u64,
    /// Blob bytes assigned to records so far.
    pub(crate) blobs: BlobCursor,
    /// Records read before the current one (bounds a same-as distance).
    pub(crate) records_read: u64,
    /// The header's minor version: operations it does not know are errors.
    pub(crate) minor: u16,
    /// The old archive's declared length: bounds the bytes frame runs keep.
    pub(crate) old_len: u64,
    /// log2 of the new archive's frame size (from the preamble; 0 before it is known).
    pub(crate) frame_size_log2: u8,
    paths: HashSet<String>,
    /// Bases used under their own path (records without PATH).
    implicit: HashSet<u32>,
}

impl RecordState {
    /// The state before the first record of a patch with this header, over an old archive of `old_count` entries.
    pub(crate) fn new(header: &PatchHeader, old_count: u64) -> RecordState {
        let blobs_start = PATCH_HEADER_LEN + header.control_len;
        RecordState {
            new_len: header.new_len,
            old_count,
            previous_old: -1,
            output_used: 0,
            content_used: 0,
            blobs: BlobCursor { cursor: blobs_start, end: blobs_start + header.blobs_len },
            records_read: 0,
            minor: header.version_minor,
            old_len: header.old_len,
            frame_size_log2: 0,
            paths: HashSet::new(),
            implicit: HashSet::new(),
        }
    }

    fn output_left(&self) -> u64 {
        self.new_len.saturating_sub(self.output_used)
    }

    /// Entries are stored compressed within the new file, and no zstd frame expands more than
    /// 65536-fold, so content beyond that is a lie, not a big file.
    fn content_left(&self) -> u64 {
        self.new_len.saturating_mul(1 << 16).saturating_sub(self.content_used)
    }

    /// Accounts for one more entry and refuses a path named twice.
    fn claim<R: Read>(&mut self, reader: &ControlReader<R>, path: Option<&str>, base: Option<u32>) -> Result<()> {
        self.output_used = self.output_used.saturating_add(MIN_ENTRY_OUTPUT + path.map_or(0, |p| p.len() as u64));
        let fresh = match (path, base) {
            (Some(path), _) => self.paths.insert(path.to_owned()),
            (None, Some(index)) => self.implicit.insert(index),
            (None, None) => true,
        };
        if !fresh {
            return Err(reader.corrupt("the new archive would hold this path twice"));
        }
        Ok(())
    }
}

/// The fixed 80-byte header as it lies on disk.
#[binrw]
#[brw(little, magic = b"\x89MFP\r\n\x1a\n")]
#[derive(Debug, Clone, Copy)]
struct HeaderBlock {
    version_major: u16,
    version_minor: u16,
    kind: u8,
    flags: u8,
    reserved: u16,
    old_len: u64,
    old_id: u64,
    new_len: u64,
    new_hash: u64,
    control_len: u64,
    blobs_len: u64,
    body_hash: u64,
    header_hash: u64,
}

/// The fixed 80-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchHeader {
    /// Must equal [`PATCH_VERSION_MAJOR`].
    pub version_major: u16,
    /// Written as [`PATCH_VERSION_MINOR`]; later minors only give meaning to values that are errors here.
    pub version_minor: u16,
    /// [`KIND_ARCHIVE`] or [`KIND_PLAIN`].
    pub kind: u8,
    /// `FLAG_*` bits; unknown bits are corrupt.
    pub flags: u8,
    /// Length of the old file the patch applies to; a different length is refused before reading it.
    pub old_len: u64,
    /// Archive patches: the old archive's index hash (footer field). Plain patches: xxh3 of the old file.
    pub old_id: u64,
    /// Length of the file the patch rebuilds; the output may not grow past it.
    pub new_len: u64,
    /// xxh3-64 of the whole new file (enforced when [`FLAG_EXACT`] is set).
    pub new_hash: u64,
    /// Bytes of the compressed control stream.
    pub control_len: u64,
    /// Bytes of the blob section (the rest of the file).
    pub blobs_len: u64,
    /// xxh3-64 of the control stream and blob section, checked before anything is applied.
    pub body_hash: u64,
}

impl PatchHeader {
    /// Whether [`FLAG_EXACT`] is set: the rebuilt file must hash to `new_hash`.
    pub fn exact(&self) -> bool {
        self.flags & FLAG_EXACT != 0
    }

    fn block(&self, header_hash: u64) -> HeaderBlock {
        HeaderBlock {
            version_major: self.version_major,
            version_minor: self.version_minor,
            kind: self.kind,
            flags: self.flags,
            reserved: 0,
            old_len: self.old_len,
            old_id: self.old_id,
            new_len: self.new_len,
            new_hash: self.new_hash,
            control_len: self.control_len,
            blobs_len: self.blobs_len,
            body_hash: self.body_hash,
            header_hash,
        }
    }

    /// The 80 header bytes, with the header checksum (xxh3 of bytes 0..72) filled in.
    pub fn to_bytes(&self) -> [u8; PATCH_HEADER_LEN as usize] {
        let mut cursor = io::Cursor::new([0u8; PATCH_HEADER_LEN as usize]);
        self.block(0).write_le(&mut cursor).expect("the header fits its 80 bytes");
        let mut bytes = cursor.into_inner();
        let hash = xxh3_64(&bytes[..72]);
        bytes[72..80].copy_from_slice(&hash.to_le_bytes());
        bytes
    }

    /// Parses and checks a header; `file_len` is the patch file's length.
    pub fn parse(bytes: &[u8], file_len: u64, file: &Path) -> Result<PatchHeader> {
        let corrupt = |offset: u64, what: &str| Error::CorruptPatch {
            file: file.to_owned(),
            section: "header",
            offset,
            entry: None,
            what: what.to_owned(),
        };
        if bytes.len() < 8 || bytes[..8] != PATCH_MAGIC {
            return Err(Error::NotAPatch { file: file.to_owned() });
        }
        if (bytes.len() as u64) < PATCH_HEADER_LEN {
            return Err(corrupt(bytes.len() as u64, "patch is truncated (shorter than its header)"));
        }
        let block = HeaderBlock::read_le(&mut io::Cursor::new(&bytes[..PATCH_HEADER_LEN as usize]))
            .map_err(|e| corrupt(0, &e.to_string()))?;
        let header = PatchHeader {
            version_major: block.version_major,
            version_minor: block.version_minor,
            kind: block.kind,
            flags: block.flags,
            old_len: block.old_len,
            old_id: block.old_id,
            new_len: block.new_len,
            new_hash: block.new_hash,
            control_len: block.control_len,
            blobs_len: block.blobs_len,
            body_hash: block.body_hash,
        };
        if header.version_major != PATCH_VERSION_MAJOR {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                major: header.version_major,
                minor: header.version_minor,
            });
        }
        if xxh3_64(&bytes[..72]) != block.header_hash {
            return Err(corrupt(72, "header checksum mismatch (the header is damaged)"));
        }
        if header.kind != KIND_ARCHIVE && header.kind != KIND_PLAIN {
            return Err(corrupt(12, &format!("unknown patch kind {}", header.kind)));
        }
        if header.flags & !FLAGS_KNOWN != 0 || block.reserved != 0 {
            return Err(corrupt(13, "unknown flags or non-zero reserved bytes"));
        }
        if header.kind != KIND_ARCHIVE && header.flags & (FLAG_OLD_PANDA3D | FLAG_NEW_PANDA3D | FLAG_CONTENT_IDS) != 0 {
            return Err(corrupt(13, "archive flags on a plain patch"));
        }
        let expected = PATCH_HEADER_LEN.checked_add(header.control_len).and_then(|x| x.checked_add(header.blobs_len));
        if expected != Some(file_len) {
            return Err(corrupt(
                48,
                &format!(
                    "section lengths say the patch has {} bytes but the file has {file_len} (truncated or extended)",
                    expected.map(|e| e.to_string()).unwrap_or_else(|| "too many".into())
                ),
            ));
        }
        Ok(header)
    }
}

/// The settings that open an archive patch's control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivePreamble {
    /// log2 of the new archive's frame size ([`mf_format::WriterOptions::frame_size_log2`]).
    pub frame_size_log2: u8,
    /// zstd level the new archive's compressed frames are rebuilt at.
    pub level: i8,
    /// Entries in the old archive; the base indexes of records are below it.
    pub old_entry_count: u64,
    /// Entries in the new archive: the number of entry records that follow.
    pub new_entry_count: u64,
    /// 2.2: the content ids ([`crate::content_id()`]) of the old and new archives; `None` in 2.0 and
    /// 2.1 patches, which identify their base by its index hash alone.
    pub content_ids: Option<ContentIds>,
}

/// The content ids a 2.2 archive patch carries (spec/PATCH.md, "Content id").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentIds {
    /// The old archive's content id: the base check of a patch applied to an archive of any layout.
    pub old: u64,
    /// The new archive's content id: what the rebuilt entry list must hash to.
    pub new: u64,
}

impl ArchivePreamble {
    /// Appends the preamble to the (uncompressed) control stream.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.frame_size_log2);
        out.push(self.level as u8);
        put_varint(out, self.old_entry_count);
        put_varint(out, self.new_entry_count);
        if let Some(ids) = self.content_ids {
            out.extend_from_slice(&ids.old.to_le_bytes());
            out.extend_from_slice(&ids.new.to_le_bytes());
        }
    }

    /// Reads the preamble. Entry counts are held to what the old and new archives' lengths can
    /// index (an entry takes at least one 64-byte index record), so a count never sizes anything
    /// the declared files could not hold.
    pub(crate) fn read<R: Read>(reader: &mut ControlReader<R>, header: &PatchHeader) -> Result<ArchivePreamble> {
        let frame_size_log2 = reader.u8()?;
        let level = reader.u8()? as i8;
        mf_format::WriterOptions { level: i32::from(level), frame_size_log2 }
            .validate()
            .map_err(|e| reader.corrupt(format!("writer settings: {e}")))?;
        let most = |len: u64| (len / MIN_ENTRY_OUTPUT).min(u64::from(u32::MAX));
        let old_entry_count = reader.bounded(most(header.old_len), "old entry count")?;
        let new_entry_count = reader.bounded(most(header.new_len), "new entry count")?;
        let content_ids = if header.flags & FLAG_CONTENT_IDS != 0 {
            Some(ContentIds { old: reader.u64le()?, new: reader.u64le()? })
        } else {
            None
        };
        Ok(ArchivePreamble { frame_size_log2, level, old_entry_count, new_entry_count, content_ids })
    }
}

/// The control stream of a plain patch: one op and its payload for the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRecord {
    /// How the new file is rebuilt; never [`Op::Copy`].
    pub op: Op,
    /// Where the blobs are and how they decode.
    pub payload: PayloadDesc,
}

impl PlainRecord {
    /// Appends the record to the (uncompressed) control stream.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.op as u8);
        self.payload.write(out, self.op);
    }

    /// Reads the record and checks that its blobs fill the blob section exactly.
    pub(crate) fn read<R: Read>(reader: &mut ControlReader<R>, header: &PatchHeader) -> Result<PlainRecord> {
        let at = reader.offset;
        let byte = reader.u8()?;
        let op = Op::from_byte(byte)
            .filter(|&op| op != Op::Copy && op != Op::Frames)
            .ok_or_else(|| reader.corrupt_at(at, format!("unknown operation {byte}")))?;
        let mut state = RecordState::new(header, 0);
        let payload = PayloadDesc::read(reader, op, header.new_len, &mut state.blobs, state.minor)?;
        if state.blobs.cursor != state.blobs.end {
            return Err(reader.corrupt("blob lengths do not add up to the blob section"));
        }
        Ok(PlainRecord { op, payload })
    }
}

/// Appends `value` as a LEB128 varint (7 bits a byte, low bits first; at most 10 bytes).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Maps a signed delta to an unsigned varint value (0, -1, 1, -2 … → 0, 1, 2, 3 …) so small
/// negative deltas stay one byte; [`unzigzag`] inverts it.
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads a decompressed stream of the patch (the control stream, or a delta payload's controls),
/// tracking the offset for errors.
pub(crate) struct ControlReader<R: Read> {
    inner: R,
    /// Bytes consumed so far: the offset that errors name.
    pub(crate) offset: u64,
    file: PathBuf,
    section: &'static str,
    /// The entry being parsed, for errors.
    pub(crate) entry: Option<String>,
}

impl<R: Read> ControlReader<R> {
    /// A reader of `file`'s control stream.
    pub(crate) fn new(inner: R, file: &Path) -> Self {
        Self::for_section(inner, file, "control stream")
    }

    /// A reader whose errors name `section`.
    pub(crate) fn for_section(inner: R, file: &Path, section: &'static str) -> Self {
        ControlReader { inner, offset: 0, file: file.to_owned(), section, entry: None }
    }

    /// An error about the bytes at the current offset.
    pub(crate) fn corrupt(&self, what: impl Into<String>) -> Error {
        self.corrupt_at(self.offset, what)
    }

    /// An error about the bytes at `offset` of the stream.
    pub(crate) fn corrupt_at(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::CorruptPatch {
            file: self.file.clone(),
            section: self.section,
            offset,
            entry: self.entry.clone(),
            what: what.into(),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupt("the stream ends early")),
            Err(e) if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other => {
                Err(self.corrupt(format!("the stream does not decode: {e}")))
            }
            Err(e) => Err(Error::io(&self.file, e)),
        }
    }

    /// One byte; a short stream is a [`Error::CorruptPatch`].
    pub(crate) fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    /// A little-endian u64 (hashes).
    pub(crate) fn u64le(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A LEB128 varint; one longer than 10 bytes or past 64 bits is corrupt.
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let start = self.offset;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                self.offset = start;
                return Err(self.corrupt("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        self.offset = start;
        Err(self.corrupt("varint is longer than 10 bytes"))
    }

    /// A varint that must be at most `max` (a length or count about to size something).
    pub(crate) fn bounded(&mut self, max: u64, what: &str) -> Result<u64> {
        let at = self.offset;
        let value = self.varint()?;
        if value > max {
            self.offset = at;
            return Err(self.corrupt(format!("{what} {value} exceeds the limit {max}")));
        }
        Ok(value)
    }

    /// Reads `len` bytes, growing the buffer only as bytes actually arrive.
    pub(crate) fn bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let got = (&mut self.inner).take(len).read_to_end(&mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                self.corrupt(format!("the stream does not decode: {e}"))
            }
            _ => Error::io(&self.file, e),
        })?;
        if (got as u64) < len {
            self.offset += got as u64;
            return Err(self.corrupt("the stream ends early"));
        }
        self.offset += len;
        Ok(out)
    }

    /// The stream this reads from.
    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Checks that nothing follows the last record.
    pub(crate) fn expect_end(&mut self) -> Result<()> {
        let mut b = [0u8; 1];
        match self.inner.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.corrupt("trailing bytes after the last record")),
            Err(e) => Err(self.corrupt(format!("the stream does not decode: {e}"))),
        }
    }
}

/// A writer that hashes (xxh3) and counts what passes through, and refuses to pass `limit` bytes
/// (the output length a patch declares), so a lying patch fails as soon as it writes too much.
pub(crate) struct HashingWriter<W: Write> {
    /// Where the bytes go.
    pub(crate) inner: W,
    /// xxh3-64 of every byte written so far.
    pub(crate) hasher: xxhash_rust::xxh3::Xxh3,
    /// Bytes written so far.
    pub(crate) len: u64,
    /// Most bytes it lets through; a write past it fails with [`OVER_LIMIT`].
    pub(crate) limit: u64,
}

impl<W: Write> HashingWriter<W> {
    /// A writer that fails once more than `limit` bytes pass.
    pub(crate) fn with_limit(inner: W, limit: u64) -> Self {
        HashingWriter { inner, hasher: xxhash_rust::xxh3::Xxh3::new(), len: 0, limit }
    }
}

/// The message of the error [`HashingWriter`] returns past its limit.
pub(crate) const OVER_LIMIT: &str = "the output grows past the length the patch declares";

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, OVER_LIMIT));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overflow() {
        for value in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut reader = ControlReader::new(&buf[..], Path::new("p"));
            assert_eq!(reader.varint().unwrap(), value);
            reader.expect_end().unwrap();
        }
        let too_long = [0xffu8; 11];
        assert!(ControlReader::new(&too_long[..], Path::new("p")).varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(ControlReader::new(&overflow[..], Path::new("p")).varint().is_err());
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    fn archive_header(new_len: u64, control_len: u64, blobs_len: u64) -> PatchHeader {
        PatchHeader {
            version_major: PATCH_VERSION_MAJOR,
            version_minor: PATCH_VERSION_MINOR,
            kind: KIND_ARCHIVE,
            flags: 0,
            old_len: 1 << 20,
            old_id: 0,
            new_len,
            new_hash: 0,
            control_len,
            blobs_len,
            body_hash: 0,
        }
    }

    fn record(op: Op, old_index: Option<u32>, path: Option<&str>, payload: PayloadDesc) -> EntryRecord {
        EntryRecord {
            at: 0,
            op,
            old_index,
            path: path.map(str::to_owned),
            mode: Some(0o755),
            mtime: Some((-5, 7)),
            size: if op == Op::Copy { 0 } else { 100 },
            hash: if op == Op::Copy { 0 } else { 42 },
            base_hash: op.has_base_hash().then_some(43),
            storage: if op == Op::Copy { Storage::Verbatim } else { Storage::Bitmap(vec![1]) },
            payload,
        }
    }

    #[test]
    fn records_round_trip_through_one_declaration() {
        let delta = DeltaDesc {
            control_count: 2,
            delta_len: 60,
            coding: DeltaCoding::Runs { literal_len: 7, runs_blob: 11 },
            controls_blob: 10,
            delta_blob: 20,
            extra_blob: 30,
            blob_at: 0,
        };
        let block = |old_len| BlockDesc { new_len: 100, old_start: 3, old_len, blob_len: 12, blob_at: 0 };
        let records = vec![
            record(Op::Copy, Some(2), None, PayloadDesc::None),
            record(Op::Delta, Some(0), Some("a/b.txt"), PayloadDesc::Delta(delta)),
            record(Op::ZstdRef, Some(1), None, PayloadDesc::Blocks(vec![block(50)])),
            record(Op::Full, None, Some("new.bin"), PayloadDesc::Blocks(vec![BlockDesc { old_start: 0, ..block(0) }])),
            // 2.3: 10000 bytes in frames of 4096: frame 0 kept, frame 1 rebuilt, frame 2 (1808 bytes) kept.
            EntryRecord {
                size: 10_000,
                ..record(
                    Op::Frames,
                    Some(2),
                    Some("frames.bin"),
                    PayloadDesc::Frames(vec![
                        FrameRun { frames: 1, patch: None },
                        FrameRun {
                            frames: 1,
                            patch: Some(RunPatch {
                                op: Op::ZstdRef,
                                hash: 7,
                                old_start: 4000,
                                old_len: 300,
                                payload: PayloadDesc::Blocks(vec![BlockDesc { new_len: 4096, ..block(300) }]),
                            }),
                        },
                        FrameRun { frames: 1, patch: None },
                    ]),
                )
            },
        ];
        let mut control = Vec::new();
        let mut previous = -1;
        for r in &records {
            r.write(&mut control, &mut previous);
        }
        let header = archive_header(1 << 20, 0, 71 + 12 + 12 + 12);
        let mut state = RecordState::new(&header, 3);
        state.frame_size_log2 = 12;
        let mut reader = ControlReader::new(&control[..], Path::new("p"));
        let mut blob_at = PATCH_HEADER_LEN;
        for expected in &records {
            let got = EntryRecord::read(&mut reader, &mut state).unwrap();
            let mut expected = expected.clone();
            expected.at = got.at;
            match &mut expected.payload {
                PayloadDesc::Delta(d) => d.blob_at = blob_at,
                PayloadDesc::Blocks(blocks) => blocks[0].blob_at = blob_at,
                PayloadDesc::Frames(runs) => match &mut runs[1].patch.as_mut().unwrap().payload {
                    PayloadDesc::Blocks(blocks) => blocks[0].blob_at = blob_at,
                    _ => unreachable!(),
                },
                PayloadDesc::None => {}
            }
            blob_at += expected.payload.patch_bytes();
            assert_eq!(got, expected);
        }
        reader.expect_end().unwrap();
        assert_eq!(state.blobs.cursor, state.blobs.end);
    }

    #[test]
    fn raw_deltas_read_in_2_4_and_in_2_3_without_the_coding_field() {
        let raw = DeltaDesc {
            control_count: 2,
            delta_len: 60,
            coding: DeltaCoding::Raw,
            controls_blob: 10,
            delta_blob: 20,
            extra_blob: 30,
            blob_at: 0,
        };
        // 2.4 writes the coding (0: raw); 2.3 had no such field: drop its byte to get the 2.3 record.
        let mut control = Vec::new();
        record(Op::Delta, Some(0), Some("a"), PayloadDesc::Delta(raw.clone())).write(&mut control, &mut -1);
        let coding_at = control.len() - 4;
        assert_eq!(&control[coding_at..], &[0, 10, 20, 30]);
        let mut state = RecordState::new(&archive_header(1 << 20, 0, 60), 1);
        let got = EntryRecord::read(&mut ControlReader::new(&control[..], Path::new("p")), &mut state).unwrap();
        assert_eq!(got.payload, PayloadDesc::Delta(DeltaDesc { blob_at: PATCH_HEADER_LEN, ..raw.clone() }));

        control.remove(coding_at);
        let mut header = archive_header(1 << 20, 0, 60);
        header.version_minor = 3;
        let mut state = RecordState::new(&header, 1);
        let got = EntryRecord::read(&mut ControlReader::new(&control[..], Path::new("p")), &mut state).unwrap();
        assert_eq!(got.payload, PayloadDesc::Delta(DeltaDesc { blob_at: PATCH_HEADER_LEN, ..raw.clone() }));

        // An unknown coding is refused.
        let mut bad = control.clone();
        bad.insert(coding_at, 2);
        let mut state = RecordState::new(&archive_header(1 << 20, 0, 60), 1);
        let err = EntryRecord::read(&mut ControlReader::new(&bad[..], Path::new("p")), &mut state).unwrap_err();
        assert!(err.to_string().contains("unknown delta coding 2"), "{err}");
    }

    #[test]
    fn reading_refuses_duplicates_and_records_beyond_the_declared_output() {
        let mut control = Vec::new();
        let mut previous = -1;
        record(Op::Copy, Some(0), None, PayloadDesc::None).write(&mut control, &mut previous);
        record(Op::Copy, Some(0), None, PayloadDesc::None).write(&mut control, &mut previous);
        let header = archive_header(1 << 20, 0, 0);
        let mut state = RecordState::new(&header, 1);
        let mut reader = ControlReader::new(&control[..], Path::new("p"));
        EntryRecord::read(&mut reader, &mut state).unwrap();
        let err = EntryRecord::read(&mut reader, &mut state).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");

        // Two records need two 64-byte index records: 100 bytes of declared output hold one.
        let mut control = Vec::new();
        let mut previous = -1;
        record(Op::Copy, Some(0), None, PayloadDesc::None).write(&mut control, &mut previous);
        record(Op::Copy, Some(1), None, PayloadDesc::None).write(&mut control, &mut previous);
        let mut state = RecordState::new(&archive_header(100, 0, 0), 2);
        let mut reader = ControlReader::new(&control[..], Path::new("p"));
        EntryRecord::read(&mut reader, &mut state).unwrap();
        let err = EntryRecord::read(&mut reader, &mut state).unwrap_err().to_string();
        assert!(err.contains("the patch declares 100"), "{err}");

        // A block count beyond what the blob bytes left can hold fails before anything is allocated.
        let mut control = Vec::new();
        let huge = record(Op::Full, None, Some("x"), PayloadDesc::None);
        huge.write(&mut control, &mut -1);
        put_varint(&mut control, 1 << 40);
        let mut state = RecordState::new(&archive_header(1 << 20, 0, 90), 0);
        let err = EntryRecord::read(&mut ControlReader::new(&control[..], Path::new("p")), &mut state)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block count"), "{err}");
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = PatchHeader {
            version_major: PATCH_VERSION_MAJOR,
            version_minor: PATCH_VERSION_MINOR,
            kind: KIND_ARCHIVE,
            flags: FLAG_EXACT,
            old_len: 10,
            old_id: 11,
            new_len: 12,
            new_hash: 13,
            control_len: 5,
            blobs_len: 7,
            body_hash: 14,
        };
        let bytes = header.to_bytes();
        assert_eq!(PatchHeader::parse(&bytes, 92, Path::new("p")).unwrap(), header);
        assert!(matches!(PatchHeader::parse(&bytes, 91, Path::new("p")), Err(Error::CorruptPatch { .. })));
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert!(matches!(PatchHeader::parse(&damaged, 92, Path::new("p")), Err(Error::CorruptPatch { .. })));
        assert!(matches!(PatchHeader::parse(b"nope", 4, Path::new("p")), Err(Error::NotAPatch { .. })));
    }
}
