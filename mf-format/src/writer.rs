//! The streaming archive writer (format 2.0, spec/FORMAT.md "What writers do").
//!
//! Data is written once, front to back; only the index (about 100 bytes an entry, plus 48 bytes of
//! deduplication key) is held in memory until [`ArchiveWriter::finish`]. Entries with the content of
//! an earlier entry share its data; small compressible entries go into the solid stream, whose frames
//! are compressed a fixed batch at a time; other entries get frames of their own. Frames are
//! compressed in parallel on the rayon pool and written in order, so the output does not depend on
//! the thread count.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::format::{
    self, EntryRecord, Footer, FrameRecord, Header, IndexHeader, COMPRESSION_NONE, COMPRESSION_ZSTD, DATA_START,
    ENTRY_FLAG_SOLID, ENTRY_FLAG_X86, MAX_FRAME_SIZE_LOG2, MIN_FRAME_SIZE_LOG2,
};
use crate::path::validate_path;
use crate::policy;
use crate::reuse::{Donor, ReuseSource};

/// Entry data starts at a multiple of this (spec: "What writers do").
pub const DATA_ALIGNMENT: u64 = 16;
/// Default zstd level: a good ratio at a speed that keeps packing I/O-bound on typical asset folders.
pub const DEFAULT_LEVEL: i32 = 9;
/// Default frame size: 256 KiB.
pub const DEFAULT_FRAME_SIZE_LOG2: u8 = 18;
/// Entries up to this size (bytes) with automatic compression go into the solid stream when they
/// look compressible.
pub const SOLID_LIMIT: u64 = 64 << 10;
/// Complete solid frames buffered before they are compressed and written (a fixed count, so the
/// layout does not depend on the thread count).
pub const SOLID_BATCH_FRAMES: usize = 16;

/// Archive-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// zstd level for compressed entries (1 to 22; negative levels are zstd's fast modes).
    pub level: i32,
    /// log2 of the frame size, 12 to 26.
    pub frame_size_log2: u8,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { level: DEFAULT_LEVEL, frame_size_log2: DEFAULT_FRAME_SIZE_LOG2 }
    }
}

/// zstd level of the release-build preset ([`WriterOptions::best`]).
pub const BEST_LEVEL: i32 = 12;
/// log2 of the release-build preset's frame size: 4 MiB.
pub const BEST_FRAME_SIZE_LOG2: u8 = 22;

impl WriterOptions {
    /// The release-build preset (`mf pack --best`): a higher level and 4 MiB frames, chosen from
    /// bench/ measurements (bench/notes/pack.md): 1.08× `tar | zstd -19 --long` on a native-library
    /// tree and 1.11× on a media-heavy one, packing in under half of `mksquashfs`'s time (higher
    /// levels that reach 1.10× on both take over twice its time). Larger frames cost random reads:
    /// a read decodes up to a whole frame.
    pub fn best() -> Self {
        WriterOptions { level: BEST_LEVEL, frame_size_log2: BEST_FRAME_SIZE_LOG2 }
    }

    fn check(&self) -> Result<()> {
        if !(MIN_FRAME_SIZE_LOG2..=MAX_FRAME_SIZE_LOG2).contains(&self.frame_size_log2) {
            return Err(Error::InvalidOption(format!(
                "frame size 2^{} is outside 2^{MIN_FRAME_SIZE_LOG2}..=2^{MAX_FRAME_SIZE_LOG2}",
                self.frame_size_log2
            )));
        }
        let levels = zstd::compression_level_range();
        if !levels.contains(&self.level) || self.level == 0 {
            return Err(Error::InvalidOption(format!(
                "zstd level {} is outside {}..={} (0 is not a level)",
                self.level,
                levels.start(),
                levels.end()
            )));
        }
        Ok(())
    }

    /// The frame size in bytes.
    pub fn frame_size(&self) -> usize {
        1usize << self.frame_size_log2
    }

    /// Checks the settings (level and frame size ranges) without starting a writer.
    pub fn validate(&self) -> Result<()> {
        self.check()
    }
}

/// How one entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Compress frame by frame, keeping a frame raw when zstd saves less than 1/32 of it. Frames of
    /// already-compressed formats (by extension) and frames of high byte entropy are first tried at a
    /// fast level and only compressed properly when that saves 1/32, so incompressible data costs
    /// little time.
    #[default]
    Auto,
    /// Never compress.
    Store,
    /// Compress every frame that zstd makes any shorter, whatever the extension, in frames of the
    /// entry's own.
    Zstd,
    /// Append the content to the solid stream whatever its size (the writer does this itself for
    /// small compressible entries under `Auto`); used to rebuild an archive's layout exactly.
    Solid,
}

/// A modification time; only recorded when the caller asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mtime {
    /// Seconds since the Unix epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, below 10⁹.
    pub nanos: u32,
}

impl Mtime {
    /// As a `SystemTime`; `None` when the platform cannot represent it (a hostile archive's value).
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        use std::time::{Duration, UNIX_EPOCH};
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        let whole = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(self.secs as u64))
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
        };
        whole?.checked_add(nanos)
    }
}

/// Per-entry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOptions {
    /// How to store the content.
    pub compression: Compression,
    /// Unix permission bits (at most `0o7777`).
    pub mode: u32,
    /// `None` records mtime 0, keeping archives reproducible.
    pub mtime: Option<Mtime>,
}

impl Default for EntryOptions {
    fn default() -> Self {
        EntryOptions { compression: Compression::Auto, mode: 0o644, mtime: None }
    }
}

impl EntryOptions {
    /// Options taken from a file's metadata: mode normalised to `0o755` when any executable bit is
    /// set, else `0o644` (as git does), and the mtime only when `keep_mtime`.
    pub fn from_metadata(metadata: &std::fs::Metadata, keep_mtime: bool) -> Self {
        use std::os::unix::fs::MetadataExt;
        let mode = if metadata.mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        let mtime = keep_mtime
            .then(|| Mtime { secs: metadata.mtime(), nanos: u32::try_from(metadata.mtime_nsec()).unwrap_or(0) });
        EntryOptions { compression: Compression::Auto, mode, mtime }
    }
}

/// The stored form of an entry given to [`ArchiveWriter::add_stored`].
#[derive(Debug, Clone, Copy)]
pub struct StoredLayout<'a> {
    /// Uncompressed size.
    pub size: u64,
    /// xxh3 of the uncompressed content (taken on trust: the caller has verified it).
    pub content_hash: u64,
    /// Bytes of stored data that follow.
    pub stored_len: u64,
    /// Frame ends relative to the entry's start; empty for an uncompressed entry. Frame `k` holds
    /// uncompressed bytes `k·frame_size ..` (the writer's frame size).
    pub frame_ends: &'a [u64],
    /// The compressed frames hold the content through the x86 filter (the source entry's flag,
    /// [`Entry::has_x86_filter`](crate::Entry::has_x86_filter)); ignored for an uncompressed entry.
    pub x86_filter: bool,
}

/// For [`ArchiveWriter::add_reader_with_frames_copying`]: the stored bytes to write for frame `k`,
/// given the bytes zstd would compress for it (the chunk, x86-filtered when the entry is), or `None`
/// to compress them.
pub type FrameCopy<'a> = dyn Fn(usize, &[u8]) -> Option<Vec<u8>> + Sync + 'a;

/// One frame as it will be written.
pub(crate) enum StoredFrame {
    /// The chunk itself.
    Raw,
    /// Compressed here.
    Zstd(Vec<u8>),
    /// Copied from an earlier archive's frame that decodes to the chunk (see [`crate::reuse`]).
    Reused(Vec<u8>),
}

impl StoredFrame {
    /// The bytes to store for `chunk`, the frame's uncompressed content.
    pub(crate) fn bytes<'a>(&'a self, chunk: &'a [u8]) -> &'a [u8] {
        match self {
            StoredFrame::Raw => chunk,
            StoredFrame::Zstd(bytes) | StoredFrame::Reused(bytes) => bytes,
        }
    }
}

/// What an incremental pack took from the earlier archive instead of compressing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReuseReport {
    /// Entries written with at least one copied frame.
    pub entries: u64,
    /// Entries all of whose stored frames were copied.
    pub whole_entries: u64,
    /// Frames copied.
    pub frames: u64,
    /// Uncompressed bytes of those frames (what was not compressed again).
    pub bytes: u64,
    /// Stored bytes of those frames.
    pub stored_bytes: u64,
}

/// How the writer stores one entry's content.
enum Placing {
    /// Nothing stored (size 0).
    Empty,
    /// Appended to the solid stream.
    Solid,
    /// Frames of its own, compressed already (by [`prepare_entry`]), and whether through the x86
    /// filter.
    Frames(Vec<StoredFrame>, bool),
}

/// An entry compressed in memory, ready to be written. Made by [`prepare_entry`] on any thread, so
/// many small files can be compressed (and hashed) in parallel and then written in a fixed order.
pub struct PreparedEntry {
    path: String,
    options: EntryOptions,
    data: Vec<u8>,
    placing: Placing,
    content_hash: u64,
    /// SHA-256 of the content; `None` when the preparer knew no other entry has its size, so it
    /// can share data with none (see [`prepare_entry_keyed`]).
    digest: Option<[u8; 32]>,
}

impl PreparedEntry {
    /// The entry path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The content size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Whether content goes into the solid stream: forced, or automatic for a small entry of a kind that
/// is not already compressed and whose bytes do not look random.
pub(crate) fn goes_solid(path: &str, data: &[u8], compression: Compression) -> bool {
    match compression {
        Compression::Solid => !data.is_empty(),
        Compression::Auto => {
            !data.is_empty()
                && data.len() as u64 <= SOLID_LIMIT
                && !policy::is_precompressed(path)
                && policy::byte_entropy_bits(data) <= policy::PROBE_ENTROPY_BITS
        }
        Compression::Store | Compression::Zstd => false,
    }
}

/// Compresses (and hashes) a whole entry held in memory. Pure: the result depends only on the
/// arguments. Solid-stream entries are left for the writer, which compresses the stream in batches.
pub fn prepare_entry(
    path: String,
    data: Vec<u8>,
    options: EntryOptions,
    writer_options: &WriterOptions,
) -> Result<PreparedEntry> {
    prepare_entry_reusing(path, data, options, writer_options, None)
}

/// As [`prepare_entry`], copying frames of `reuse` that decode to the content's chunks instead of
/// compressing them (the result is the same; see [`crate::reuse`]).
pub fn prepare_entry_reusing(
    path: String,
    data: Vec<u8>,
    options: EntryOptions,
    writer_options: &WriterOptions,
    reuse: Option<&ReuseSource>,
) -> Result<PreparedEntry> {
    prepare_entry_keyed(path, data, options, writer_options, reuse, true)
}

/// As [`prepare_entry_reusing`]; without `keyed` the deduplication key (SHA-256 of the content, the
/// costliest hash) is not taken and the entry shares no data with another: for a caller that knows
/// no other entry has this content's size (`pack_inputs` knows every input's size).
pub(crate) fn prepare_entry_keyed(
    path: String,
    data: Vec<u8>,
    options: EntryOptions,
    writer_options: &WriterOptions,
    reuse: Option<&ReuseSource>,
    keyed: bool,
) -> Result<PreparedEntry> {
    validate_path(&path)?;
    check_entry_options(&options)?;
    let content_hash = xxhash_rust::xxh3::xxh3_64(&data);
    let placing = if data.is_empty() {
        Placing::Empty
    } else if goes_solid(&path, &data, options.compression) {
        Placing::Solid
    } else {
        let plan = FramePlan::new(&path, &options, writer_options).with_head(&data);
        let donor = reuse.and_then(|r| r.donor(&path, Some((data.len() as u64, content_hash))));
        let frames = data
            .chunks(writer_options.frame_size())
            .enumerate()
            .map(|(k, chunk)| plan.encode(chunk, donor.map(|d| (d, k))))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| Error::io(&path, e))?;
        Placing::Frames(frames, plan.x86)
    };
    let digest = keyed.then(|| Sha256::digest(&data).into());
    Ok(PreparedEntry { path, options, data, placing, content_hash, digest })
}

pub(crate) fn check_entry_options(options: &EntryOptions) -> Result<()> {
    if options.mode > format::MAX_MODE {
        return Err(Error::InvalidOption(format!("mode {:o} has bits above 0o7777", options.mode)));
    }
    if let Some(mtime) = options.mtime {
        if mtime.nanos >= 1_000_000_000 {
            return Err(Error::InvalidOption(format!("mtime nanoseconds {} ≥ 10^9", mtime.nanos)));
        }
    }
    Ok(())
}

/// The per-entry compression decision, applied frame by frame.
pub(crate) struct FramePlan {
    compress: bool,
    only_if_useful: bool,
    /// Try a fast level first and store the frame raw unless that already saves enough (also done
    /// for any frame of high byte entropy when `only_if_useful`).
    probe_first: bool,
    level: i32,
    /// Compress each frame through the x86 branch filter (raw frames stay the content itself).
    pub(crate) x86: bool,
}

impl FramePlan {
    pub(crate) fn new(path: &str, options: &EntryOptions, writer_options: &WriterOptions) -> Self {
        let (compress, only_if_useful, probe_first) = match options.compression {
            Compression::Store => (false, true, false),
            Compression::Auto | Compression::Solid => (true, true, policy::is_precompressed(path)),
            Compression::Zstd => (true, false, false),
        };
        FramePlan { compress, only_if_useful, probe_first, level: writer_options.level, x86: false }
    }

    /// The plan for content that starts with `head` (its first frame or more): compressed frames go
    /// through the x86 filter when the content is an x86 executable (spec: "What writers do").
    pub(crate) fn with_head(mut self, head: &[u8]) -> Self {
        self.x86 = self.compress && crate::x86::is_x86_executable(head);
        self
    }

    /// The frame a fresh pack stores for `chunk`. With a donor (frame `k` of an earlier archive's
    /// entry), every decision is still taken here; only the final compression at the archive's level
    /// is replaced by the donor's frame when that decodes to `chunk`.
    pub(crate) fn encode(&self, chunk: &[u8], donor: Option<(Donor<'_>, usize)>) -> io::Result<StoredFrame> {
        if !self.compress {
            return Ok(StoredFrame::Raw);
        }
        let worth_probing =
            self.probe_first || (self.only_if_useful && policy::byte_entropy_bits(chunk) > policy::PROBE_ENTROPY_BITS);
        if worth_probing && self.level > policy::PROBE_LEVEL {
            // OLD stored this very chunk raw at this level, and a fresh pack would too (see
            // `Donor::raw_frame_is`): neither the probe nor the compression needs to run.
            if donor.is_some_and(|(donor, k)| donor.raw_frame_is(k, chunk)) {
                return Ok(StoredFrame::Raw);
            }
            let fast = compress_frame(chunk, policy::PROBE_LEVEL)?;
            if !policy::compression_is_useful(chunk.len(), fast.len()) {
                return Ok(StoredFrame::Raw);
            }
        }
        if let Some(reused) = donor.and_then(|(donor, k)| donor.frame(k, chunk, self.x86)) {
            if self.keeps(chunk.len(), reused.len()) {
                return Ok(StoredFrame::Reused(reused));
            }
        }
        let compressed = compress_frame(&zstd_input(chunk, self.x86), self.level)?;
        let keep = self.keeps(chunk.len(), compressed.len());
        Ok(if keep { StoredFrame::Zstd(compressed) } else { StoredFrame::Raw })
    }

    /// Whether a frame compressed to `compressed_len` bytes is stored compressed.
    fn keeps(&self, raw_len: usize, compressed_len: usize) -> bool {
        if self.only_if_useful {
            policy::compression_is_useful(raw_len, compressed_len)
        } else {
            policy::compression_is_shorter(raw_len, compressed_len)
        }
    }
}

/// What zstd compresses for a frame holding `chunk`: the chunk, or its x86-filtered copy.
pub(crate) fn zstd_input(chunk: &[u8], x86: bool) -> std::borrow::Cow<'_, [u8]> {
    if !x86 {
        return std::borrow::Cow::Borrowed(chunk);
    }
    let mut filtered = chunk.to_vec();
    crate::x86::encode(&mut filtered);
    std::borrow::Cow::Owned(filtered)
}

/// Encodes `block` (whole frames but at the end) frame by frame in parallel; with a donor, frame `k`
/// of the block is frame `first + k` of the entry.
fn encode_block(
    plan: &FramePlan,
    block: &[u8],
    frame_size: usize,
    donor: Option<(Donor<'_>, usize)>,
) -> io::Result<Vec<StoredFrame>> {
    block
        .par_chunks(frame_size)
        .enumerate()
        .map(|(k, chunk)| plan.encode(chunk, donor.map(|(d, first)| (d, first + k))))
        .collect()
}

/// Hashes `block` and encodes its frames (as [`encode_block`]), both on the rayon pool.
fn hash_and_encode(
    plan: &FramePlan,
    block: &[u8],
    hasher: &mut ContentHasher,
    donor: Option<(Donor<'_>, usize)>,
    frame_size: usize,
) -> io::Result<Vec<StoredFrame>> {
    rayon::join(|| hasher.update(block), || encode_block(plan, block, frame_size, donor)).1
}

/// A solid frame: zstd at the archive's level when that is shorter, else raw (spec: "What writers
/// do"; `mf apply` relies on this rule to rebuild solid frames).
pub(crate) fn encode_solid(chunk: &[u8], level: i32) -> io::Result<StoredFrame> {
    let compressed = compress_frame(chunk, level)?;
    Ok(if policy::compression_is_shorter(chunk.len(), compressed.len()) {
        StoredFrame::Zstd(compressed)
    } else {
        StoredFrame::Raw
    })
}

thread_local! {
    // zstd contexts are costly to create (hundreds of KiB at higher levels); one per thread and level
    // is reused across frames. A writer uses at most two levels (its own and the probe level); a few
    // more slots cover several writers with different levels on one pool.
    static COMPRESSORS: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
}

const COMPRESSOR_SLOTS: usize = 4;

fn compress_frame(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    COMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let at = match slots.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                let mut compressor = zstd::bulk::Compressor::new(level)?;
                compressor.include_checksum(true)?;
                compressor.include_contentsize(true)?;
                if slots.len() == COMPRESSOR_SLOTS {
                    slots.remove(0);
                }
                slots.push((level, compressor));
                slots.len() - 1
            }
        };
        slots[at].1.compress(data)
    })
}

/// The key under which content is deduplicated: size and SHA-256 (a 64-bit hash alone is never
/// trusted to decide that two contents are equal).
type ContentKey = (u64, [u8; 32]);

/// The solid stream: small entries' bytes back to back, cut into frames of the frame size and
/// compressed a batch of [`SOLID_BATCH_FRAMES`] at a time. The writer and the in-place editor both
/// use it, so an edit cuts and compresses its small entries exactly as a fresh pack would.
#[derive(Default)]
pub(crate) struct SolidStream {
    /// Bytes appended and not yet written (less than a batch of frames after each entry).
    pending: Vec<u8>,
    /// Bytes appended so far.
    len: u64,
    /// Frames written so far, in stream order (their table index is offset at `finish`).
    pub(crate) frames: Vec<FrameRecord>,
}

/// A batch of solid frames ready to store: the bytes cut off the stream and each frame's encoding.
pub(crate) struct SolidBatch {
    bytes: Vec<u8>,
    encoded: Vec<StoredFrame>,
    frame_size: usize,
}

impl SolidBatch {
    /// Each frame's stored bytes and its uncompressed length, in stream order.
    pub(crate) fn frames(&self) -> impl Iterator<Item = (&[u8], u32)> {
        self.encoded
            .iter()
            .zip(self.bytes.chunks(self.frame_size))
            .map(|(frame, chunk)| (frame.bytes(chunk), chunk.len() as u32))
    }
}

impl SolidStream {
    /// Appends `data`; returns where it starts in the stream.
    pub(crate) fn push(&mut self, data: &[u8]) -> u64 {
        let start = self.len;
        self.pending.extend_from_slice(data);
        self.len += data.len() as u64;
        start
    }

    /// Bytes appended so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The record of the `size` (≥ 1) bytes at `start` of the stream, `first_frame` counted in the
    /// stream's frames.
    pub(crate) fn record(start: u64, size: u64, content_hash: u64, options: &WriterOptions) -> EntryRecord {
        let frame_size = options.frame_size() as u64;
        let skip = start % frame_size;
        EntryRecord {
            compression: COMPRESSION_ZSTD,
            level: options.level.clamp(-128, 127) as i8,
            flags: ENTRY_FLAG_SOLID,
            first_frame: (start / frame_size) as u32,
            frame_count: (skip + size).div_ceil(frame_size),
            offset: skip,
            size,
            content_hash,
            ..EntryRecord::default()
        }
    }

    /// The next batch to store, compressed on every core: a whole batch while there is one, or
    /// (`all`, at the end) everything left, the last frame possibly short. `None` when there is
    /// nothing (more) to store. The caller stores the frames in order and pushes their records.
    pub(crate) fn take_batch(&mut self, all: bool, options: &WriterOptions) -> Option<io::Result<SolidBatch>> {
        let frame_size = options.frame_size();
        let batch = SOLID_BATCH_FRAMES * frame_size;
        let ready = self.pending.len() >= batch || (all && !self.pending.is_empty());
        if !ready {
            return None;
        }
        let take = self.pending.len().min(batch);
        let rest = self.pending.split_off(take);
        let bytes = std::mem::replace(&mut self.pending, rest);
        let level = options.level;
        let encoded = bytes.par_chunks(frame_size).map(|chunk| encode_solid(chunk, level)).collect::<io::Result<_>>();
        Some(encoded.map(|encoded| SolidBatch { bytes, encoded, frame_size }))
    }
}

/// Streams entries into an archive. Call [`finish`](Self::finish) to write the index and footer; an
/// archive whose writer is dropped unfinished is incomplete and unreadable. After an error, discard
/// the output.
pub struct ArchiveWriter<W: Write> {
    out: W,
    /// Name used in errors about the output.
    name: PathBuf,
    options: WriterOptions,
    pos: u64,
    records: Vec<EntryRecord>,
    paths: Vec<String>,
    /// Frames of entries with frames of their own, in the order written.
    frames: Vec<FrameRecord>,
    solid: SolidStream,
    deduplicate: bool,
    /// Where each content stored so far lies (a template record: storage fields only).
    stored: HashMap<ContentKey, EntryRecord>,
    /// Sizes of those contents: a file is hashed ahead only when its size was seen.
    sizes: HashSet<u64>,
    /// Record index of each path.
    files: HashMap<String, u32>,
    dirs: HashSet<String>,
    /// Reused read buffers for streamed entries.
    buffer: Vec<u8>,
    next_buffer: Vec<u8>,
    /// An earlier archive whose frames may be copied instead of compressed (incremental pack).
    reuse: Option<Arc<ReuseSource>>,
    reused: ReuseReport,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive on `out`, writing the header (and two empty commit slots) at once.
    pub fn new(out: W, options: WriterOptions) -> Result<Self> {
        Self::with_name(out, options, "<output>")
    }

    /// As [`new`](Self::new), naming the output in errors.
    pub fn with_name(mut out: W, options: WriterOptions, name: impl Into<PathBuf>) -> Result<Self> {
        options.check()?;
        let name = name.into();
        let mut head = format::to_bytes(&Header::new(options.frame_size_log2));
        head.resize(DATA_START as usize, 0); // both commit slots empty
        out.write_all(&head).map_err(|e| Error::io(&name, e))?;
        Ok(ArchiveWriter {
            out,
            name,
            options,
            pos: DATA_START,
            records: Vec::new(),
            paths: Vec::new(),
            frames: Vec::new(),
            solid: SolidStream::default(),
            deduplicate: true,
            stored: HashMap::new(),
            sizes: HashSet::new(),
            files: HashMap::new(),
            dirs: HashSet::new(),
            buffer: Vec::new(),
            next_buffer: Vec::new(),
            reuse: None,
            reused: ReuseReport::default(),
        })
    }

    /// Copies frames of `source` that decode to the content being packed instead of compressing
    /// that content again. The output stays what it would be without (see [`crate::reuse`]).
    pub fn set_reuse(&mut self, source: Arc<ReuseSource>) {
        self.reuse = Some(source);
    }

    /// The earlier archive set with [`set_reuse`](Self::set_reuse).
    pub fn reuse(&self) -> Option<&Arc<ReuseSource>> {
        self.reuse.as_ref()
    }

    /// What was copied from the earlier archive so far.
    pub fn reuse_report(&self) -> ReuseReport {
        self.reused
    }

    /// The archive-wide settings.
    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// Turns automatic deduplication on (the default) or off. Off, an entry shares data only when
    /// added with [`add_duplicate`](Self::add_duplicate): for rebuilding an archive's exact layout.
    pub fn set_deduplicate(&mut self, on: bool) {
        self.deduplicate = on;
    }

    /// Number of entries added so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no entry was added yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Adds an entry from memory: shared with an earlier entry of the same content, appended to the
    /// solid stream, or compressed in frames of its own (in parallel, a bounded batch at a time).
    pub fn add_bytes(&mut self, path: &str, data: &[u8], options: EntryOptions) -> Result<()> {
        check_entry_options(&options)?;
        validate_path(path)?;
        let key = (data.len() as u64, Sha256::digest(data).into());
        let content_hash = xxhash_rust::xxh3::xxh3_64(data);
        if self.add_if_stored(path, options, &key, content_hash)? {
            return Ok(());
        }
        self.claim_entry(path, &options)?;
        if data.is_empty() {
            self.push_record(path, options, empty_record(content_hash));
        } else if goes_solid(path, data, options.compression) {
            let record = self.append_solid(data, content_hash)?;
            self.push_stored(path, options, record, key);
        } else {
            let plan = FramePlan::new(path, &options, &self.options).with_head(data);
            let reuse = self.reuse.clone();
            let donor = reuse.as_deref().and_then(|r| r.donor(path, Some((data.len() as u64, content_hash))));
            let mut entry = self.begin_entry()?;
            entry.x86 = plan.x86;
            for block in data.chunks(self.batch_bytes()) {
                self.write_block(&mut entry, &plan, path, block, donor)?;
            }
            let record = self.end_frames(entry, data.len() as u64, content_hash);
            self.push_stored(path, options, record, key);
        }
        Ok(())
    }

    /// Adds an entry by streaming `reader` to its end. Content of up to [`SOLID_LIMIT`] bytes is
    /// handled as by [`add_bytes`](Self::add_bytes); longer content is compressed a bounded batch
    /// of frames at a time in parallel (memory: a few frames per thread whatever the size) and is
    /// not deduplicated against earlier entries (its bytes are written before its hash is known).
    /// With [`Compression::Solid`] the content is appended to the solid stream whatever its size.
    pub fn add_reader(&mut self, path: &str, reader: impl Read, options: EntryOptions) -> Result<()> {
        self.add_reader_known(path, reader, options, None, true)
    }

    /// [`add_reader`](Self::add_reader) of content whose size and xxh3 may be known already
    /// (`content`), so that an earlier archive's frames can be found by content. Without `keyed`,
    /// streamed content gets no deduplication key (see [`prepare_entry_keyed`]).
    fn add_reader_known(
        &mut self,
        path: &str,
        mut reader: impl Read,
        options: EntryOptions,
        content: Option<(u64, u64)>,
        keyed: bool,
    ) -> Result<()> {
        let mut head = Vec::new();
        (&mut reader).take(SOLID_LIMIT + 1).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
        if head.len() as u64 <= SOLID_LIMIT {
            return self.add_bytes(path, &head, options);
        }
        self.claim_entry(path, &options)?;
        let mut hasher = if keyed { ContentHasher::default() } else { ContentHasher::unkeyed() };
        let mut rest = io::Cursor::new(head).chain(reader);
        let record = if options.compression == Compression::Solid {
            self.stream_solid(path, &mut rest, &mut hasher)?
        } else {
            self.stream_frames(path, &mut rest, options, &mut hasher, content)?
        };
        let (key, content_hash) = hasher.finish_keyed();
        self.push_keyed(path, options, EntryRecord { content_hash, ..record }, key);
        Ok(())
    }

    /// Adds a file from disk under the entry path `path`. A file whose size equals an earlier
    /// entry's is hashed first, so identical large files are stored once; the hash is taken again
    /// while the file is written, and a file that changed in between is an error.
    pub fn add_file(&mut self, path: &str, fs_path: &Path, options: EntryOptions) -> Result<()> {
        self.add_file_keyed(path, fs_path, options, true)
    }

    /// [`add_file`](Self::add_file); without `keyed`, content not hashed first gets no
    /// deduplication key (for a caller that knows no other entry has its size).
    pub(crate) fn add_file_keyed(
        &mut self,
        path: &str,
        fs_path: &Path,
        options: EntryOptions,
        keyed: bool,
    ) -> Result<()> {
        let file = crate::fs::open_regular(fs_path).map_err(|e| Error::io(fs_path, e))?;
        let size = file.metadata().map_err(|e| Error::io(fs_path, e))?.len();
        let reopen = || -> io::Result<std::fs::File> {
            let mut again = file.try_clone()?;
            again.rewind()?;
            Ok(again)
        };
        self.add_rereadable_keyed(path, fs_path, size, reopen, options, keyed)
    }

    /// Adds `size` bytes of content that `open` can read from the start more than once (a file, an
    /// entry of another archive), exactly as [`add_file`](Self::add_file) adds a file of that size:
    /// content whose size an earlier entry has is read once to hash it (shared if equal), then
    /// again to store it. `name` is used in errors.
    pub fn add_rereadable<R: Read>(
        &mut self,
        path: &str,
        name: &Path,
        size: u64,
        open: impl FnMut() -> io::Result<R>,
        options: EntryOptions,
    ) -> Result<()> {
        self.add_rereadable_keyed(path, name, size, open, options, true)
    }

    /// [`add_rereadable`](Self::add_rereadable), as [`add_file_keyed`](Self::add_file_keyed).
    fn add_rereadable_keyed<R: Read>(
        &mut self,
        path: &str,
        name: &Path,
        size: u64,
        mut open: impl FnMut() -> io::Result<R>,
        options: EntryOptions,
        keyed: bool,
    ) -> Result<()> {
        if size <= SOLID_LIMIT || !self.hash_first(path, size) {
            let reader = open().map_err(|e| Error::io(name, e))?;
            return self.add_reader_known(path, reader, options, None, keyed);
        }
        let mut hasher = ContentHasher::default();
        let reader = open().map_err(|e| Error::io(name, e))?;
        io::copy(&mut reader.take(size), &mut hasher).map_err(|e| Error::io(name, e))?;
        let (key, content_hash) = hasher.finish();
        check_entry_options(&options)?;
        validate_path(path)?;
        if key.0 == size && self.add_if_stored(path, options, &key, content_hash)? {
            return Ok(());
        }
        let reader = open().map_err(|e| Error::io(name, e))?;
        self.add_reader_checked(path, name, reader, options, Some((key, content_hash)))
    }

    /// Whether a file of `size` bytes is hashed before it is written: an earlier entry has its size
    /// (it may be stored already), or the earlier archive being reused has an entry of its size
    /// that it would find by content only.
    fn hash_first(&self, path: &str, size: u64) -> bool {
        (self.deduplicate && self.sizes.contains(&size))
            || self.reuse.as_deref().is_some_and(|r| r.has_size(size) && !r.has_path_of_size(path, size))
    }

    /// [`add_reader`](Self::add_reader), failing if the content's key differs from `expected`'s (a
    /// key and xxh3 taken before).
    fn add_reader_checked(
        &mut self,
        path: &str,
        name: &Path,
        reader: impl Read,
        options: EntryOptions,
        expected: Option<(ContentKey, u64)>,
    ) -> Result<()> {
        let content = expected.map(|((size, _), xxh3)| (size, xxh3));
        let expected = expected.map(|(key, _)| key);
        self.add_reader_known(path, reader, options, content, true)?;
        let written = self.records.last().map(|r| r.content_hash);
        if let (Some(expected), Some(_)) = (expected, written) {
            let matches = self.stored.get(&expected).is_some_and(|r| r.size == expected.0);
            if !matches {
                let what = "the file changed while it was being packed";
                return Err(Error::io(name, io::Error::other(what)));
            }
        }
        Ok(())
    }

    /// Adds an entry whose content equals the entry already added at `of` (same size and content):
    /// it shares that entry's data. The caller vouches for the equality (the content hash is copied).
    pub fn add_duplicate(&mut self, path: &str, options: EntryOptions, of: &str) -> Result<()> {
        let Some(&index) = self.files.get(of) else {
            return Err(Error::InvalidOption(format!("entry '{path}' duplicates '{of}', which was not added")));
        };
        let template = self.records[index as usize];
        self.claim_entry(path, &options)?;
        self.push_record(path, options, template);
        Ok(())
    }

    /// Writes an entry compressed by [`prepare_entry`].
    pub fn add_prepared(&mut self, prepared: PreparedEntry) -> Result<()> {
        self.add_prepared_returning(prepared).map(drop)
    }

    /// [`add_prepared`](Self::add_prepared), returning the entry's content buffer for the caller
    /// to read the next entry into.
    pub(crate) fn add_prepared_returning(&mut self, prepared: PreparedEntry) -> Result<Vec<u8>> {
        let PreparedEntry { path, options, data, placing, content_hash, digest } = prepared;
        if let Placing::Frames(frames, _) = &placing {
            if frames.len() != data.chunks(self.options.frame_size()).len() {
                return Err(Error::InvalidOption(format!("entry '{path}' was prepared with another frame size")));
            }
        }
        let key = digest.map(|digest| (data.len() as u64, digest));
        if let Some(key) = &key {
            if self.add_if_stored(&path, options, key, content_hash)? {
                return Ok(data);
            }
        }
        self.claim_entry(&path, &options)?;
        let record = match placing {
            Placing::Empty => empty_record(content_hash),
            Placing::Solid => self.append_solid(&data, content_hash)?,
            Placing::Frames(frames, x86) => {
                let mut entry = self.begin_entry()?;
                entry.x86 = x86;
                for (frame, chunk) in frames.iter().zip(data.chunks(self.options.frame_size())) {
                    self.write_frame(&mut entry, frame, chunk)?;
                }
                self.end_frames(entry, data.len() as u64, content_hash)
            }
        };
        self.push_keyed(&path, options, record, key);
        Ok(data)
    }

    /// If deduplication is on and content with `key` is stored, adds the entry sharing it.
    fn add_if_stored(
        &mut self,
        path: &str,
        options: EntryOptions,
        key: &ContentKey,
        content_hash: u64,
    ) -> Result<bool> {
        let Some(template) = self.stored.get(key).copied().filter(|_| self.deduplicate && key.0 > 0) else {
            return Ok(false);
        };
        self.claim_entry(path, &options)?;
        self.push_record(path, options, EntryRecord { content_hash, ..template });
        Ok(true)
    }

    /// Adds an entry whose per-frame storage is decided by the caller instead of the compression
    /// policy: `compressed[k]` says whether frame `k` of its own frames is zstd-compressed (at the
    /// writer's level) or stored raw; an entry with no compressed frame is stored raw. A frame marked
    /// compressed that zstd cannot make shorter is stored raw, as the spec requires. Never shared with
    /// an earlier entry. Used to rebuild an archive byte for byte from another archive's frame table
    /// (`mf apply`).
    pub fn add_bytes_with_frames(
        &mut self,
        path: &str,
        data: &[u8],
        options: EntryOptions,
        compressed: &[bool],
    ) -> Result<()> {
        let frame_size = self.options.frame_size();
        if compressed.len() != data.len().div_ceil(frame_size) {
            return Err(Error::InvalidOption(format!(
                "entry '{path}': {} frame decisions for {} frames",
                compressed.len(),
                data.len().div_ceil(frame_size)
            )));
        }
        self.add_reader_with_frames(path, data, options, compressed)
    }

    /// As [`add_bytes_with_frames`](Self::add_bytes_with_frames), streaming the content from
    /// `reader` a bounded batch of frames at a time (compressed in parallel while the next batch is
    /// read), so memory (two batches) does not grow with the entry's size. The reader must yield
    /// exactly as many frames as `compressed` has decisions; a read error or a frame count that
    /// differs fails the entry.
    pub fn add_reader_with_frames(
        &mut self,
        path: &str,
        reader: impl Read,
        options: EntryOptions,
        compressed: &[bool],
    ) -> Result<()> {
        self.add_reader_with_frames_copying(path, reader, options, compressed, &|_, _| None)
    }

    /// As [`add_reader_with_frames`](Self::add_reader_with_frames), storing for a compressed frame
    /// `k` the bytes `copy(k, chunk)` returns instead of compressing `chunk` (a patch applier copies
    /// an old archive's frame that it checked decodes to `chunk`).
    pub fn add_reader_with_frames_copying(
        &mut self,
        path: &str,
        mut reader: impl Read,
        options: EntryOptions,
        compressed: &[bool],
        copy: &FrameCopy<'_>,
    ) -> Result<()> {
        self.claim_entry(path, &options)?;
        if compressed.is_empty() {
            // No frames: the content must be empty, and an empty entry stores nothing (no padding).
            let mut probe = [0u8; 1];
            if read_full(&mut reader, &mut probe).map_err(|e| Error::io(path, e))? != 0 {
                let what = format!("entry '{path}': its content does not have 0 frames");
                return Err(Error::InvalidOption(what));
            }
            let (key, content_hash) = ContentHasher::default().finish();
            self.push_stored(path, options, empty_record(content_hash), key);
            return Ok(());
        }
        let level = self.options.level;
        let frame_size = self.options.frame_size();
        let mut entry = self.begin_entry()?;
        // A batch never needs more than the entry's frames and one more (where content longer than
        // they hold shows): an apply rebuilds mostly small entries, and two full 4 MiB batches
        // for each doubled its peak memory.
        let batch = (self.batch_bytes() / frame_size).max(1).min(compressed.len().saturating_add(1)) * frame_size;
        let mut current = std::mem::take(&mut self.buffer);
        let mut next = std::mem::take(&mut self.next_buffer);
        current.resize(batch, 0);
        // The deduplication key (SHA-256) only matters to a writer that shares data by content.
        let mut hasher = if self.deduplicate { ContentHasher::default() } else { ContentHasher::unkeyed() };
        let wrong_count =
            || Error::InvalidOption(format!("entry '{path}': its content does not have {} frames", compressed.len()));
        let read = |reader: &mut _, buffer: &mut Vec<u8>| read_full(reader, buffer).map_err(|e| Error::io(path, e));
        let mut filled = read(&mut reader, &mut current)?;
        // The writer's rule (spec: "What writers do"), so a rebuild filters as a fresh pack.
        entry.x86 = crate::x86::is_x86_executable(&current[..filled]);
        let x86 = entry.x86;
        let mut first = 0usize;
        loop {
            let block = &current[..filled];
            let frames_in = filled.div_ceil(frame_size);
            let flags = compressed.get(first..first + frames_in).ok_or_else(wrong_count)?;
            let last = filled < batch;
            // The reader makes the next batch on this thread (a patch applier decodes the old
            // content and applies the delta there) while the pool compresses this one: both take
            // seconds on a large entry, and one after the other they left a core idle.
            let mut encoded = Ok(Vec::new());
            let mut next_filled = Ok(0);
            rayon::in_place_scope(|scope| {
                scope.spawn(|_| {
                    let encode = || {
                        block
                            .par_chunks(frame_size)
                            .zip(flags.par_iter())
                            .enumerate()
                            .map(|(i, (chunk, &compress))| {
                                if !compress {
                                    return Ok(StoredFrame::Raw);
                                }
                                let input = zstd_input(chunk, x86);
                                if let Some(bytes) = copy(first + i, &input) {
                                    return Ok(StoredFrame::Reused(bytes));
                                }
                                let bytes = compress_frame(&input, level)?;
                                Ok(if policy::compression_is_shorter(chunk.len(), bytes.len()) {
                                    StoredFrame::Zstd(bytes)
                                } else {
                                    StoredFrame::Raw
                                })
                            })
                            .collect::<io::Result<Vec<_>>>()
                    };
                    encoded = rayon::join(|| hasher.update(block), encode).1;
                });
                if !last {
                    next.resize(batch, 0);
                    next_filled = read(&mut reader, &mut next);
                }
            });
            let frames = encoded.map_err(|e| Error::io(path, e))?;
            self.write_frames(&mut entry, frames, block)?;
            first += frames_in;
            if last {
                break;
            }
            filled = next_filled?;
            std::mem::swap(&mut current, &mut next);
        }
        self.buffer = current;
        self.next_buffer = next;
        if first != compressed.len() {
            return Err(wrong_count());
        }
        let size = hasher.len;
        let (key, content_hash) = hasher.finish_keyed();
        let record = if size == 0 { empty_record(content_hash) } else { self.end_frames(entry, size, content_hash) };
        self.push_keyed(path, options, record, key);
        Ok(())
    }

    /// Adds an entry from its stored form, `stored_len` bytes streamed from `stored` and copied
    /// verbatim (for instance from another archive with the same frame size, via
    /// [`Archive::stored_bytes`](crate::Archive::stored_bytes) and
    /// [`Archive::frame_ends`](crate::Archive::frame_ends) of an entry with frames of its own). The
    /// layout is checked against the spec's rules; the content hash is taken on trust (the caller
    /// has verified it), and the entry's level is recorded as the writer's. Never shared.
    pub fn add_stored(
        &mut self,
        path: &str,
        options: EntryOptions,
        layout: StoredLayout<'_>,
        mut stored: impl Read,
    ) -> Result<()> {
        let StoredLayout { size, content_hash, stored_len, frame_ends, x86_filter } = layout;
        let frame_size = self.options.frame_size() as u64;
        let bad = |what: &str| Error::InvalidOption(format!("stored entry '{path}': {what}"));
        if frame_ends.is_empty() {
            if stored_len != size {
                return Err(bad("uncompressed data whose length differs from its size"));
            }
        } else {
            if frame_ends.len() as u64 != size.div_ceil(frame_size) {
                return Err(bad("frame count does not match the size and frame size"));
            }
            let mut previous = 0u64;
            for (k, &end) in frame_ends.iter().enumerate() {
                let frame_len = (size - k as u64 * frame_size).min(frame_size);
                if end <= previous || end - previous > frame_len {
                    return Err(bad(&format!("frame {k} has an impossible stored length")));
                }
                previous = end;
            }
            if previous != stored_len {
                return Err(bad("last frame end differs from the stored length"));
            }
        }
        self.claim_entry(path, &options)?;
        if size == 0 {
            self.push_record(path, options, empty_record(content_hash));
            return Ok(());
        }
        let mut entry = self.begin_entry()?;
        entry.x86 = x86_filter;
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(1 << 20, 0);
        let mut copied = 0u64;
        while copied < stored_len {
            let want = (stored_len - copied).min(buffer.len() as u64) as usize;
            let got = read_full(&mut stored, &mut buffer[..want]).map_err(|e| Error::io(path, e))?;
            if got < want {
                return Err(Error::io(path, io::Error::new(io::ErrorKind::UnexpectedEof, "stored data ends early")));
            }
            self.write(&buffer[..got])?;
            copied += got as u64;
        }
        self.buffer = buffer;
        let mut previous = 0u64;
        for (k, &end) in frame_ends.iter().enumerate() {
            let len = (size - k as u64 * frame_size).min(frame_size) as u32;
            let stored_len = (end - previous) as u32;
            self.frames.push(FrameRecord { offset: entry.offset + previous, stored_len, len });
            entry.all_raw &= stored_len == len;
            previous = end;
        }
        // An entry whose frames are all raw would not be stored in frames by this writer.
        let record = self.end_frames(entry, size, content_hash);
        self.push_record(path, options, record);
        Ok(())
    }

    /// Writes the rest of the solid stream, the index and the footer, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.flush_solid(true)?;
        let own_frames = self.frames.len() as u32;
        for record in &mut self.records {
            if record.flags & ENTRY_FLAG_SOLID != 0 {
                record.first_frame += own_frames;
            }
        }
        let solid_frames = std::mem::take(&mut self.solid.frames);
        self.frames.extend(solid_frames);
        let index = build_index(&mut self.records, &self.paths, &self.frames)?;
        let index_offset = self.pos;
        let index_hash = xxhash_rust::xxh3::xxh3_64(&index);
        let footer = Footer::new(index_offset, index.len() as u64, index_hash);
        self.write(&index)?;
        self.write(&format::to_bytes(&footer))?;
        self.out.flush().map_err(|e| Error::io(&self.name, e))?;
        Ok(self.out)
    }

    /// Bytes of a streamed entry compressed at once: several frames per thread, so threads rarely
    /// wait for the slowest frame of a batch, but at most about 8 MiB unless frames are larger.
    /// (Only the work split depends on it, never the output.)
    fn batch_bytes(&self) -> usize {
        let threads = rayon::current_num_threads();
        let frame_size = self.options.frame_size();
        let frames = (2 * threads).max(4).max((8 * threads).min((8 << 20) / frame_size));
        frames * frame_size
    }

    /// Checks an entry's options and path, then reserves the path. Rejects duplicate paths and paths
    /// that would make one name both a file and a directory. Everything that can refuse the entry is
    /// checked before the path is reserved, so a refused entry can be added again once corrected.
    fn claim_entry(&mut self, path: &str, options: &EntryOptions) -> Result<()> {
        check_entry_options(options)?;
        validate_path(path)?;
        if self.files.contains_key(path) {
            return Err(Error::DuplicatePath { path: path.to_owned() });
        }
        if self.dirs.contains(path) {
            let other = self.paths.iter().find(|p| p.starts_with(path) && p.as_bytes()[path.len()] == b'/');
            return Err(Error::PathConflict {
                path: path.to_owned(),
                other: other.cloned().unwrap_or_else(|| format!("{path}/…")),
            });
        }
        let mut ancestors = Vec::new();
        for (i, byte) in path.bytes().enumerate() {
            if byte == b'/' {
                let dir = &path[..i];
                if self.files.contains_key(dir) {
                    return Err(Error::PathConflict { path: path.to_owned(), other: dir.to_owned() });
                }
                ancestors.push(dir);
            }
        }
        for dir in ancestors {
            if !self.dirs.contains(dir) {
                self.dirs.insert(dir.to_owned());
            }
        }
        // The record index this path will get (the record is pushed once its data is written).
        self.files.insert(path.to_owned(), self.records.len() as u32);
        Ok(())
    }

    /// Starts an entry's own data at the next aligned offset.
    fn begin_entry(&mut self) -> Result<OpenEntry> {
        self.align()?;
        Ok(OpenEntry {
            offset: self.pos,
            first_frame: self.frames.len(),
            all_raw: true,
            x86: false,
            compressed_here: 0,
            reused: ReuseReport::default(),
        })
    }

    fn align(&mut self) -> Result<()> {
        let padding = (DATA_ALIGNMENT - self.pos % DATA_ALIGNMENT) % DATA_ALIGNMENT;
        self.write(&[0u8; DATA_ALIGNMENT as usize][..padding as usize])
    }

    /// Encodes `block` (the entry's next bytes, whole frames but at the end) and writes its frames.
    fn write_block(
        &mut self,
        entry: &mut OpenEntry,
        plan: &FramePlan,
        path: &str,
        block: &[u8],
        donor: Option<Donor<'_>>,
    ) -> Result<()> {
        let first = self.frames.len() - entry.first_frame;
        let frames = encode_block(plan, block, self.options.frame_size(), donor.map(|d| (d, first)));
        self.write_frames(entry, frames.map_err(|e| Error::io(path, e))?, block)
    }

    /// Writes the frames `block` was encoded to.
    fn write_frames(&mut self, entry: &mut OpenEntry, frames: Vec<StoredFrame>, block: &[u8]) -> Result<()> {
        for (frame, chunk) in frames.iter().zip(block.chunks(self.options.frame_size())) {
            self.write_frame(entry, frame, chunk)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, entry: &mut OpenEntry, frame: &StoredFrame, chunk: &[u8]) -> Result<()> {
        let offset = self.pos;
        match frame {
            StoredFrame::Raw => self.write(chunk)?,
            StoredFrame::Zstd(bytes) => {
                entry.all_raw = false;
                entry.compressed_here += 1;
                self.write(bytes)?;
            }
            StoredFrame::Reused(bytes) => {
                entry.all_raw = false;
                entry.reused.frames += 1;
                entry.reused.bytes += chunk.len() as u64;
                entry.reused.stored_bytes += bytes.len() as u64;
                self.write(bytes)?;
            }
        }
        let stored_len = (self.pos - offset) as u32;
        self.frames.push(FrameRecord { offset, stored_len, len: chunk.len() as u32 });
        Ok(())
    }

    /// The record of an entry whose frames were just written: a raw extent when every frame is raw
    /// (the content is then contiguous), else its run of frames.
    fn end_frames(&mut self, entry: OpenEntry, size: u64, content_hash: u64) -> EntryRecord {
        if entry.reused.frames > 0 {
            self.reused.entries += 1;
            self.reused.whole_entries += u64::from(entry.compressed_here == 0);
            self.reused.frames += entry.reused.frames;
            self.reused.bytes += entry.reused.bytes;
            self.reused.stored_bytes += entry.reused.stored_bytes;
        }
        if entry.all_raw {
            self.frames.truncate(entry.first_frame);
            return EntryRecord {
                compression: COMPRESSION_NONE,
                size,
                offset: entry.offset,
                content_hash,
                ..EntryRecord::default()
            };
        }
        EntryRecord {
            compression: COMPRESSION_ZSTD,
            level: self.level_byte(),
            flags: if entry.x86 { ENTRY_FLAG_X86 } else { 0 },
            first_frame: entry.first_frame as u32,
            frame_count: (self.frames.len() - entry.first_frame) as u64,
            size,
            content_hash,
            ..EntryRecord::default()
        }
    }

    fn level_byte(&self) -> i8 {
        self.options.level.clamp(-128, 127) as i8
    }

    /// Appends content to the solid stream; returns its record (first frame in stream numbering).
    fn append_solid(&mut self, data: &[u8], content_hash: u64) -> Result<EntryRecord> {
        let start = self.solid.push(data);
        self.flush_solid(false)?;
        Ok(self.solid_record(start, data.len() as u64, content_hash))
    }

    /// Streams `reader` to its end into the solid stream (memory: one batch of frames).
    fn stream_solid(&mut self, path: &str, reader: &mut impl Read, hasher: &mut ContentHasher) -> Result<EntryRecord> {
        let start = self.solid.len();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(1 << 20, 0);
        loop {
            let filled = read_full(reader, &mut buffer).map_err(|e| Error::io(path, e))?;
            hasher.update(&buffer[..filled]);
            self.solid.push(&buffer[..filled]);
            self.flush_solid(false)?;
            if filled < buffer.len() {
                break;
            }
        }
        self.buffer = buffer;
        Ok(self.solid_record(start, self.solid.len() - start, 0))
    }

    fn solid_record(&self, start: u64, size: u64, content_hash: u64) -> EntryRecord {
        if size == 0 {
            return empty_record(content_hash);
        }
        SolidStream::record(start, size, content_hash, &self.options)
    }

    /// Writes buffered solid frames: whole batches of [`SOLID_BATCH_FRAMES`] while there are, or
    /// (`all`, at the end) everything left, the last frame possibly short.
    fn flush_solid(&mut self, all: bool) -> Result<()> {
        while let Some(batch) = self.solid.take_batch(all, &self.options) {
            let batch = batch.map_err(|e| Error::io(&self.name, e))?;
            self.align()?;
            for (bytes, len) in batch.frames() {
                let offset = self.pos;
                self.write(bytes)?;
                self.solid.frames.push(FrameRecord { offset, stored_len: bytes.len() as u32, len });
            }
        }
        Ok(())
    }

    /// Streams `reader` into frames of the entry's own, by the compression policy. While one block's
    /// frames are written on this thread, the next block (already read) is hashed and encoded on
    /// the rayon pool: with frames copied from a reuse source, reading and writing were half of
    /// the work and left the pool idle. Memory: two blocks.
    fn stream_frames(
        &mut self,
        path: &str,
        reader: &mut impl Read,
        options: EntryOptions,
        hasher: &mut ContentHasher,
        content: Option<(u64, u64)>,
    ) -> Result<EntryRecord> {
        let mut plan = FramePlan::new(path, &options, &self.options);
        let reuse = self.reuse.clone();
        let donor = reuse.as_deref().and_then(|r| r.donor(path, content));
        let mut entry = self.begin_entry()?;
        let batch = self.batch_bytes();
        let frame_size = self.options.frame_size();
        let mut current = std::mem::take(&mut self.buffer);
        let mut next = std::mem::take(&mut self.next_buffer);
        current.resize(batch, 0);
        next.resize(batch, 0);
        let read = |reader: &mut _, buffer: &mut Vec<u8>| read_full(reader, buffer).map_err(|e| Error::io(path, e));
        let mut filled = read(reader, &mut current)?;
        plan = plan.with_head(&current[..filled]);
        entry.x86 = plan.x86;
        let mut frames = hash_and_encode(&plan, &current[..filled], hasher, donor.map(|d| (d, 0)), frame_size);
        let mut size = filled as u64;
        let mut next_first = filled.div_ceil(frame_size);
        while filled == batch {
            let next_filled = read(reader, &mut next)?;
            let block = &next[..next_filled];
            let mut next_frames = Ok(Vec::new());
            let next_donor = donor.map(|d| (d, next_first));
            rayon::in_place_scope(|scope| {
                scope.spawn(|_| next_frames = hash_and_encode(&plan, block, hasher, next_donor, frame_size));
                self.write_frames(&mut entry, frames.map_err(|e| Error::io(path, e))?, &current[..filled])
            })?;
            std::mem::swap(&mut current, &mut next);
            (frames, filled) = (next_frames, next_filled);
            size += filled as u64;
            next_first += filled.div_ceil(frame_size);
        }
        self.write_frames(&mut entry, frames.map_err(|e| Error::io(path, e))?, &current[..filled])?;
        self.buffer = current;
        self.next_buffer = next;
        Ok(self.end_frames(entry, size, 0))
    }

    /// Records an entry (path already claimed) with the storage fields of `template`.
    fn push_record(&mut self, path: &str, options: EntryOptions, template: EntryRecord) {
        let mtime = options.mtime.unwrap_or_default();
        self.records.push(EntryRecord {
            path_offset: 0,
            path_len: path.len() as u32,
            mode: options.mode,
            mtime_secs: mtime.secs,
            mtime_nanos: mtime.nanos,
            ..template
        });
        self.paths.push(path.to_owned());
    }

    /// Records an entry whose data was just stored, remembering where content `key` lies.
    fn push_stored(&mut self, path: &str, options: EntryOptions, record: EntryRecord, key: ContentKey) {
        self.push_keyed(path, options, record, Some(key));
    }

    /// [`push_stored`](Self::push_stored) of an entry whose key may not have been taken (then no
    /// later entry can share its data).
    fn push_keyed(&mut self, path: &str, options: EntryOptions, record: EntryRecord, key: Option<ContentKey>) {
        if let Some(key) = key.filter(|key| key.0 > 0) {
            self.sizes.insert(key.0);
            self.stored.entry(key).or_insert(record);
        }
        self.push_record(path, options, record);
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(&self.name, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

/// Serialises an index (spec "Index"): `records` in order (their `path_offset`s are set here),
/// `paths` alongside, then the frame table, the lookup table and the string table. Shared by the
/// streaming writer and the in-place editor.
pub(crate) fn build_index(records: &mut [EntryRecord], paths: &[String], frames: &[FrameRecord]) -> Result<Vec<u8>> {
    let too_many = |what: &str| Error::InvalidOption(format!("too many {what} for one archive"));
    u32::try_from(records.len()).map_err(|_| too_many("entries"))?;
    u32::try_from(frames.len()).map_err(|_| too_many("frames"))?;
    let strings_len: usize = paths.iter().map(String::len).sum();
    u32::try_from(strings_len).map_err(|_| too_many("path bytes"))?;

    let mut lookup: Vec<u32> = (0..records.len() as u32).collect();
    lookup.sort_unstable_by(|&a, &b| paths[a as usize].cmp(&paths[b as usize]));

    let header = IndexHeader {
        entry_count: records.len() as u64,
        frame_count: frames.len() as u64,
        strings_len: strings_len as u64,
        dictionary_count: 0,
        reserved: 0,
    };
    let capacity = 32 + records.len() * 68 + frames.len() * 16 + strings_len;
    let mut index = Vec::with_capacity(capacity);
    index.extend_from_slice(&format::to_bytes(&header));
    let mut path_offset = 0u32;
    for (record, path) in records.iter_mut().zip(paths) {
        record.path_offset = path_offset;
        path_offset += path.len() as u32;
        index.extend_from_slice(&format::to_bytes(record));
    }
    for frame in frames {
        index.extend_from_slice(&format::to_bytes(frame));
    }
    for entry in &lookup {
        index.extend_from_slice(&entry.to_le_bytes());
    }
    for path in paths {
        index.extend_from_slice(path.as_bytes());
    }
    Ok(index)
}

/// An entry whose own data is being written.
struct OpenEntry {
    offset: u64,
    first_frame: usize,
    all_raw: bool,
    /// Its compressed frames go through the x86 filter.
    x86: bool,
    /// Frames compressed by this writer (not copied).
    compressed_here: u64,
    /// Frames copied from the reuse source (`entries` unused here).
    reused: ReuseReport,
}

/// The record fields of an empty entry.
fn empty_record(content_hash: u64) -> EntryRecord {
    EntryRecord { compression: COMPRESSION_NONE, content_hash, ..EntryRecord::default() }
}

/// Takes the xxh3 and (unless [`unkeyed`](Self::unkeyed)) the deduplication key of content as it
/// streams past.
struct ContentHasher {
    xxh3: Xxh3,
    sha: Option<Sha256>,
    len: u64,
}

impl Default for ContentHasher {
    fn default() -> Self {
        ContentHasher { xxh3: Xxh3::new(), sha: Some(Sha256::new()), len: 0 }
    }
}

impl ContentHasher {
    /// A hasher that takes the xxh3 only.
    fn unkeyed() -> Self {
        ContentHasher { sha: None, ..ContentHasher::default() }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.xxh3.update(bytes);
        if let Some(sha) = &mut self.sha {
            sha.update(bytes);
        }
        self.len += bytes.len() as u64;
    }

    /// The deduplication key and the xxh3, of a hasher made keyed.
    fn finish(self) -> (ContentKey, u64) {
        let (key, xxh3) = self.finish_keyed();
        (key.unwrap_or((0, [0; 32])), xxh3)
    }

    /// The deduplication key (when taken) and the xxh3.
    fn finish_keyed(self) -> (Option<ContentKey>, u64) {
        let len = self.len;
        (self.sha.map(|sha| (len, sha.finalize().into())), self.xxh3.digest())
    }
}

impl Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
pub(crate) fn read_full(reader: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Archive, StoredAs};
    use mf_test_support::noise;

    fn pack(entries: &[(&str, &[u8])]) -> Archive {
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
        for (path, data) in entries {
            writer.add_bytes(path, data, EntryOptions::default()).unwrap();
        }
        Archive::from_bytes(writer.finish().unwrap(), "test").unwrap()
    }

    #[test]
    fn media_extensions_are_compressed_only_when_it_pays() {
        let text = "a compressible line of text\n".repeat(20_000);
        let archive = pack(&[("clip.mp4", text.as_bytes()), ("noise.png", &noise(600_000, 7))]);
        let clip = archive.get("clip.mp4").unwrap();
        assert_eq!(clip.stored_as(), StoredAs::Zstd);
        assert!(clip.stored_size() < clip.size() / 10, "{}", clip.stored_size());
        assert_eq!(archive.read(&clip).unwrap().as_ref(), text.as_bytes());
        let noise_entry = archive.get("noise.png").unwrap();
        assert_eq!(noise_entry.stored_as(), StoredAs::Raw);
        assert_eq!(noise_entry.stored_size(), 600_000);
    }

    #[test]
    fn random_data_is_stored_raw_under_any_name_and_text_is_compressed() {
        let text = "let x = compute(y);\n".repeat(3000);
        let archive = pack(&[("random.bin", &noise(300_000, 11)), ("code.rs", text.as_bytes())]);
        assert_eq!(archive.get("random.bin").unwrap().stored_as(), StoredAs::Raw);
        assert_eq!(archive.get("code.rs").unwrap().stored_as(), StoredAs::Zstd);
        // Compression::Zstd still compresses whatever zstd shrinks at all, without the probe.
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
        let options = EntryOptions { compression: Compression::Zstd, ..EntryOptions::default() };
        writer.add_bytes("forced.png", text.as_bytes(), options).unwrap();
        let archive = Archive::from_bytes(writer.finish().unwrap(), "test").unwrap();
        assert_eq!(archive.get("forced.png").unwrap().stored_as(), StoredAs::Zstd);
    }

    #[test]
    fn media_entries_mix_raw_and_compressed_frames() {
        // First frame incompressible, second compressible: only the second is compressed.
        let frame = WriterOptions::default().frame_size();
        let data = [noise(frame, 3), vec![b'x'; frame]].concat();
        let archive = pack(&[("mixed.ogg", &data)]);
        let entry = archive.get("mixed.ogg").unwrap();
        assert_eq!(entry.stored_as(), StoredAs::Zstd);
        assert_eq!(archive.frame_count(&entry), 2);
        assert!(entry.stored_size() > frame as u64 && entry.stored_size() < frame as u64 + 1000);
        assert_eq!(archive.read(&entry).unwrap().as_ref(), &data[..]);
    }
}
