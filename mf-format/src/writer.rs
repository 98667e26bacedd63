//! The streaming archive writer.
//!
//! Data is written once, front to back; only the index (about 100 bytes an entry) is held in memory
//! until [`ArchiveWriter::finish`]. Frames of an entry are compressed in parallel on the rayon pool, a
//! bounded batch at a time, and written in order, so the output does not depend on the thread count.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::format::{
    self, EntryRecord, Footer, Header, IndexHeader, COMPRESSION_NONE, COMPRESSION_ZSTD, HEADER_LEN,
    MAX_FRAME_SIZE_LOG2, MIN_FRAME_SIZE_LOG2,
};
use crate::path::validate_path;
use crate::policy;

/// Entry data starts at a multiple of this (spec: "What writers do").
pub const DATA_ALIGNMENT: u64 = 16;
/// Default zstd level: a good ratio at a speed that keeps packing I/O-bound on typical asset folders.
pub const DEFAULT_LEVEL: i32 = 9;
/// Default frame size: 256 KiB.
pub const DEFAULT_FRAME_SIZE_LOG2: u8 = 18;

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

impl WriterOptions {
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
    /// Compress every frame that zstd makes any shorter, whatever the extension.
    Zstd,
}

/// A modification time; only recorded when the caller asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mtime {
    pub secs: i64,
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
    /// Frame ends relative to the entry's start; empty for an uncompressed entry.
    pub frame_ends: &'a [u64],
}

/// One frame as it will be written.
enum StoredFrame {
    /// Index range into the entry's uncompressed data.
    Raw,
    Zstd(Vec<u8>),
}

/// An entry compressed in memory, ready to be written. Made by [`prepare_entry`] on any thread, so
/// many small files can be compressed in parallel and then written in a fixed order.
pub struct PreparedEntry {
    path: String,
    options: EntryOptions,
    data: Vec<u8>,
    frames: Vec<StoredFrame>,
    content_hash: u64,
}

impl PreparedEntry {
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// Compresses a whole entry held in memory. Pure: the result depends only on the arguments.
pub fn prepare_entry(
    path: String,
    data: Vec<u8>,
    options: EntryOptions,
    writer_options: &WriterOptions,
) -> Result<PreparedEntry> {
    validate_path(&path)?;
    check_entry_options(&options)?;
    let plan = FramePlan::new(&path, &options, writer_options);
    let frames = data
        .chunks(writer_options.frame_size())
        .map(|chunk| plan.encode(chunk))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| Error::io(&path, e))?;
    let content_hash = xxhash_rust::xxh3::xxh3_64(&data);
    Ok(PreparedEntry { path, options, data, frames, content_hash })
}

fn check_entry_options(options: &EntryOptions) -> Result<()> {
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
struct FramePlan {
    compress: bool,
    only_if_useful: bool,
    /// Try a fast level first and store the frame raw unless that already saves enough (also done
    /// for any frame of high byte entropy when `only_if_useful`).
    probe_first: bool,
    level: i32,
}

impl FramePlan {
    fn new(path: &str, options: &EntryOptions, writer_options: &WriterOptions) -> Self {
        let (compress, only_if_useful, probe_first) = match options.compression {
            Compression::Store => (false, true, false),
            Compression::Auto => (true, true, policy::is_precompressed(path)),
            Compression::Zstd => (true, false, false),
        };
        FramePlan { compress, only_if_useful, probe_first, level: writer_options.level }
    }

    fn encode(&self, chunk: &[u8]) -> io::Result<StoredFrame> {
        if !self.compress {
            return Ok(StoredFrame::Raw);
        }
        let worth_probing =
            self.probe_first || (self.only_if_useful && policy::byte_entropy_bits(chunk) > policy::PROBE_ENTROPY_BITS);
        if worth_probing && self.level > policy::PROBE_LEVEL {
            let fast = compress_frame(chunk, policy::PROBE_LEVEL)?;
            if !policy::compression_is_useful(chunk.len(), fast.len()) {
                return Ok(StoredFrame::Raw);
            }
        }
        let compressed = compress_frame(chunk, self.level)?;
        let keep = if self.only_if_useful {
            policy::compression_is_useful(chunk.len(), compressed.len())
        } else {
            policy::compression_is_shorter(chunk.len(), compressed.len())
        };
        Ok(if keep { StoredFrame::Zstd(compressed) } else { StoredFrame::Raw })
    }
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
    frame_ends: Vec<u64>,
    files: HashSet<String>,
    dirs: HashSet<String>,
    /// Reused read buffer for streamed entries.
    buffer: Vec<u8>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive on `out`, writing the header at once.
    pub fn new(out: W, options: WriterOptions) -> Result<Self> {
        Self::with_name(out, options, "<output>")
    }

    /// As [`new`](Self::new), naming the output in errors.
    pub fn with_name(mut out: W, options: WriterOptions, name: impl Into<PathBuf>) -> Result<Self> {
        options.check()?;
        let name = name.into();
        out.write_all(&format::to_bytes(&Header::new(options.frame_size_log2))).map_err(|e| Error::io(&name, e))?;
        Ok(ArchiveWriter {
            out,
            name,
            options,
            pos: HEADER_LEN,
            records: Vec::new(),
            paths: Vec::new(),
            frame_ends: Vec::new(),
            files: HashSet::new(),
            dirs: HashSet::new(),
            buffer: Vec::new(),
        })
    }

    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// Number of entries added so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Adds an entry from memory.
    pub fn add_bytes(&mut self, path: &str, data: &[u8], options: EntryOptions) -> Result<()> {
        self.claim_entry(path, &options)?;
        let plan = FramePlan::new(path, &options, &self.options);
        let mut entry = self.begin_entry(path, options)?;
        let mut hasher = Xxh3::new();
        hasher.update(data);
        let batch = self.batch_bytes();
        for block in data.chunks(batch) {
            self.write_block(&mut entry, &plan, block)?;
        }
        self.end_entry(entry, data.len() as u64, hasher.digest());
        Ok(())
    }

    /// Adds an entry by streaming `reader` to its end, compressing a bounded batch of frames at a
    /// time in parallel. Memory stays at a few frames per thread whatever the entry's size.
    pub fn add_reader(&mut self, path: &str, mut reader: impl Read, options: EntryOptions) -> Result<()> {
        self.claim_entry(path, &options)?;
        let plan = FramePlan::new(path, &options, &self.options);
        let mut entry = self.begin_entry(path, options)?;
        let mut hasher = Xxh3::new();
        let batch = self.batch_bytes();
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(batch, 0);
        let mut size = 0u64;
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(|e| Error::io(path, e))?;
            hasher.update(&buffer[..filled]);
            size += filled as u64;
            self.write_block(&mut entry, &plan, &buffer[..filled])?;
            if filled < batch {
                break;
            }
        }
        self.buffer = buffer;
        self.end_entry(entry, size, hasher.digest());
        Ok(())
    }

    /// Adds a file from disk under the entry path `path`.
    pub fn add_file(&mut self, path: &str, fs_path: &Path, options: EntryOptions) -> Result<()> {
        let file = crate::fs::open_regular(fs_path).map_err(|e| Error::io(fs_path, e))?;
        self.add_reader(path, file, options)
    }

    /// Writes an entry compressed by [`prepare_entry`].
    pub fn add_prepared(&mut self, prepared: PreparedEntry) -> Result<()> {
        if prepared.frames.len() != prepared.data.chunks(self.options.frame_size()).len() {
            return Err(Error::InvalidOption(format!(
                "entry '{}' was prepared with another frame size",
                prepared.path
            )));
        }
        self.claim_entry(&prepared.path, &prepared.options)?;
        let mut entry = self.begin_entry(&prepared.path, prepared.options)?;
        let chunks = prepared.data.chunks(self.options.frame_size());
        for (frame, chunk) in prepared.frames.iter().zip(chunks) {
            self.write_frame(&mut entry, frame, chunk)?;
        }
        self.end_entry(entry, prepared.data.len() as u64, prepared.content_hash);
        Ok(())
    }

    /// Adds an entry whose per-frame storage is decided by the caller instead of the compression
    /// policy: `compressed[k]` says whether frame `k` is zstd-compressed (at the writer's level) or
    /// stored raw; an entry with no compressed frame is recorded as compression none. A frame marked
    /// compressed that zstd cannot make shorter is stored raw, as the spec requires. Used to rebuild
    /// an archive byte for byte from another archive's frame table (`mf apply`).
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
    /// `reader` a bounded batch of frames at a time (compressed in parallel), so memory does not grow
    /// with the entry's size. The reader must yield exactly as many frames as `compressed` has
    /// decisions; a read error or a frame count that differs fails the entry.
    pub fn add_reader_with_frames(
        &mut self,
        path: &str,
        mut reader: impl Read,
        options: EntryOptions,
        compressed: &[bool],
    ) -> Result<()> {
        self.claim_entry(path, &options)?;
        let level = self.options.level;
        let frame_size = self.options.frame_size();
        let mut entry = self.begin_entry(path, options)?;
        let batch_frames = (self.batch_bytes() / frame_size).max(1);
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.resize(batch_frames * frame_size, 0);
        let mut hasher = Xxh3::new();
        let (mut size, mut frame_index) = (0u64, 0usize);
        let wrong_count =
            || Error::InvalidOption(format!("entry '{path}': its content does not have {} frames", compressed.len()));
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(|e| Error::io(path, e))?;
            let block = &buffer[..filled];
            let frames_in = filled.div_ceil(frame_size);
            let flags = compressed.get(frame_index..frame_index + frames_in).ok_or_else(wrong_count)?;
            hasher.update(block);
            let frames: Vec<StoredFrame> = block
                .par_chunks(frame_size)
                .zip(flags.par_iter())
                .map(|(chunk, &compress)| {
                    if !compress {
                        return Ok(StoredFrame::Raw);
                    }
                    let bytes = compress_frame(chunk, level)?;
                    Ok(if policy::compression_is_shorter(chunk.len(), bytes.len()) {
                        StoredFrame::Zstd(bytes)
                    } else {
                        StoredFrame::Raw
                    })
                })
                .collect::<io::Result<_>>()
                .map_err(|e| Error::io(path, e))?;
            for (frame, chunk) in frames.iter().zip(block.chunks(frame_size)) {
                self.write_frame(&mut entry, frame, chunk)?;
            }
            size += filled as u64;
            frame_index += frames_in;
            if filled < buffer.len() {
                break;
            }
        }
        self.buffer = buffer;
        if frame_index != compressed.len() {
            return Err(wrong_count());
        }
        self.end_entry(entry, size, hasher.digest());
        Ok(())
    }

    /// Adds an entry from its stored form, `stored_len` bytes streamed from `stored` and copied
    /// verbatim (for instance from another archive with the same frame size, via
    /// [`Archive::stored_bytes`](crate::Archive::stored_bytes) and
    /// [`Archive::frame_ends`](crate::Archive::frame_ends)). `frame_ends` is empty for an
    /// uncompressed entry, else one end per frame, relative to the entry's start. The layout is
    /// checked against the spec's rules; the content hash is taken on trust (the caller has
    /// verified it), and the entry's level is recorded as the writer's.
    pub fn add_stored(
        &mut self,
        path: &str,
        options: EntryOptions,
        layout: StoredLayout<'_>,
        mut stored: impl Read,
    ) -> Result<()> {
        let StoredLayout { size, content_hash, stored_len, frame_ends } = layout;
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
        let mut entry = self.begin_entry(path, options)?;
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
        for &end in frame_ends {
            self.frame_ends.push(end);
        }
        // An entry whose frames are all raw would not be recorded as zstd by this writer; keep the
        // caller's framing as given only when some frame is compressed.
        let all_raw = frame_ends.is_empty() || stored_len == size;
        if !all_raw {
            entry.all_raw = false;
        }
        self.end_entry(entry, size, content_hash);
        Ok(())
    }

    /// Writes the index and footer, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        let index = self.build_index()?;
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
        if self.files.contains(path) {
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
                if self.files.contains(dir) {
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
        self.files.insert(path.to_owned());
        Ok(())
    }

    fn begin_entry(&mut self, path: &str, options: EntryOptions) -> Result<OpenEntry> {
        let padding = (DATA_ALIGNMENT - self.pos % DATA_ALIGNMENT) % DATA_ALIGNMENT;
        self.write(&[0u8; DATA_ALIGNMENT as usize][..padding as usize])?;
        Ok(OpenEntry {
            path: path.to_owned(),
            options,
            offset: self.pos,
            first_frame: self.frame_ends.len(),
            all_raw: true,
        })
    }

    fn write_block(&mut self, entry: &mut OpenEntry, plan: &FramePlan, block: &[u8]) -> Result<()> {
        let frame_size = self.options.frame_size();
        let frames: Vec<StoredFrame> = block
            .par_chunks(frame_size)
            .map(|chunk| plan.encode(chunk))
            .collect::<io::Result<_>>()
            .map_err(|e| Error::io(&entry.path, e))?;
        for (frame, chunk) in frames.iter().zip(block.chunks(frame_size)) {
            self.write_frame(entry, frame, chunk)?;
        }
        Ok(())
    }

    fn write_frame(&mut self, entry: &mut OpenEntry, frame: &StoredFrame, chunk: &[u8]) -> Result<()> {
        match frame {
            StoredFrame::Raw => self.write(chunk)?,
            StoredFrame::Zstd(bytes) => {
                entry.all_raw = false;
                self.write(bytes)?;
            }
        }
        self.frame_ends.push(self.pos - entry.offset);
        Ok(())
    }

    fn end_entry(&mut self, entry: OpenEntry, size: u64, content_hash: u64) {
        let stored_size = self.pos - entry.offset;
        let (compression, level, first_frame) = if entry.all_raw {
            // Every frame is raw: the content is contiguous, so record it as uncompressed and drop
            // its frame ends.
            self.frame_ends.truncate(entry.first_frame);
            (COMPRESSION_NONE, 0, 0)
        } else {
            (COMPRESSION_ZSTD, self.options.level.clamp(-128, 127) as i8, entry.first_frame as u32)
        };
        let mtime = entry.options.mtime.unwrap_or_default();
        self.records.push(EntryRecord {
            path_offset: 0,
            path_len: entry.path.len() as u32,
            compression,
            level,
            reserved: 0,
            mode: entry.options.mode,
            mtime_secs: mtime.secs,
            mtime_nanos: mtime.nanos,
            first_frame,
            size,
            stored_size,
            offset: entry.offset,
            content_hash,
        });
        self.paths.push(entry.path);
    }

    fn build_index(&mut self) -> Result<Vec<u8>> {
        let too_many = |what: &str| Error::InvalidOption(format!("too many {what} for one archive"));
        u32::try_from(self.records.len()).map_err(|_| too_many("entries"))?;
        u32::try_from(self.frame_ends.len()).map_err(|_| too_many("frames"))?;
        let strings_len: usize = self.paths.iter().map(String::len).sum();
        u32::try_from(strings_len).map_err(|_| too_many("path bytes"))?;

        let mut lookup: Vec<u32> = (0..self.records.len() as u32).collect();
        lookup.sort_unstable_by(|&a, &b| self.paths[a as usize].cmp(&self.paths[b as usize]));

        let header = IndexHeader {
            entry_count: self.records.len() as u64,
            frame_count: self.frame_ends.len() as u64,
            strings_len: strings_len as u64,
            reserved: 0,
        };
        let capacity = 32 + self.records.len() * 68 + self.frame_ends.len() * 8 + strings_len;
        let mut index = Vec::with_capacity(capacity);
        index.extend_from_slice(&format::to_bytes(&header));
        let mut path_offset = 0u32;
        for (record, path) in self.records.iter_mut().zip(&self.paths) {
            record.path_offset = path_offset;
            path_offset += path.len() as u32;
            index.extend_from_slice(&format::to_bytes(record));
        }
        for end in &self.frame_ends {
            index.extend_from_slice(&end.to_le_bytes());
        }
        for entry in &lookup {
            index.extend_from_slice(&entry.to_le_bytes());
        }
        for path in &self.paths {
            index.extend_from_slice(path.as_bytes());
        }
        Ok(index)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(&self.name, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

struct OpenEntry {
    path: String,
    options: EntryOptions,
    offset: u64,
    first_frame: usize,
    all_raw: bool,
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
