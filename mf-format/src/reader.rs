//! The archive reader: maps the file, validates header, commit slots, footer and index at open (both
//! format versions; 1.0 indexes are converted to the 2.0 model), and serves entry data from the
//! mapping. Entry data is only touched when read or verified.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, Result};
use crate::format::{
    self, CommitSlot, EntryRecord, Footer, FrameRecord, Header, IndexHeader, COMPRESSION_NONE, COMPRESSION_ZSTD,
    DATA_START, END_MAGIC, ENTRY_RECORD_LEN, FOOTER_LEN, FRAME_END_LEN, FRAME_RECORD_LEN, HEADER_LEN, INDEX_HEADER_LEN,
    LOOKUP_LEN, MAGIC, MAX_FRAME_SIZE_LOG2, MIN_FRAME_SIZE_LOG2, SLOT_LEN, VERSION_MAJOR, VERSION_MAJOR_1,
};
use crate::mapping::{Backing, PreadFile};
use crate::validate;

/// Where an open archive's bytes come from: a [`Backing`] (mapped or in memory, shared with the
/// Panda3D reader), or the file read on demand with `pread`.
enum Source {
    Whole(Backing),
    Pread(PreadFile),
}

impl Source {
    /// The whole archive as a slice, when it is mapped or in memory.
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Source::Whole(backing) => Some(backing.bytes()),
            Source::Pread(_) => None,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Source::Pread(file) => file.len(),
            _ => self.bytes().map_or(0, |b| b.len() as u64),
        }
    }

    /// Bytes of the header, index or footer (always held in memory).
    fn meta(&self, range: Range<u64>) -> Option<&[u8]> {
        match self {
            Source::Pread(file) => file.held(range),
            _ => {
                let (start, end) = (usize::try_from(range.start).ok()?, usize::try_from(range.end).ok()?);
                self.bytes()?.get(start..end)
            }
        }
    }

    /// Data bytes `start..start + len`: borrowed when mapped, read from the file otherwise.
    fn data(&self, start: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        if let Some(bytes) = self.meta(start..start.saturating_add(len)) {
            return Ok(Cow::Borrowed(bytes));
        }
        let Source::Pread(file) = self else { return Err(io::ErrorKind::UnexpectedEof.into()) };
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(io::Error::other)?;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, start)?;
        Ok(Cow::Owned(buf))
    }

    /// Fills `buf` with data bytes from `start`, without allocating.
    fn read_into(&self, start: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Source::Pread(file) => file.read_exact_at(buf, start),
            _ => {
                let bytes = self.meta(start..start + buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// How many times its stored bytes an entry's recorded size may be before
/// [`Archive::size_is_plausible`] calls it implausible. zstd at the levels writers use rarely beats
/// 30:1 on real content; an entry beyond this still reads, through a buffer that grows as it decodes.
pub const PLAUSIBLE_RATIO: u64 = 32;

/// How an entry's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAs {
    /// Contiguous, uncompressed: readable as a slice of the archive.
    Raw,
    /// A run of independent frames (zstd or raw), decodable one at a time; possibly shared with other
    /// entries (a solid block, or deduplicated content).
    Zstd,
}

/// An entry of an open archive: its index record and path.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    index: u32,
    path: &'a str,
    record: &'a EntryRecord,
    placement: &'a Placement,
}

/// Where an entry's stored bytes start and how many there are, computed once at open.
#[derive(Debug, Clone, Copy, Default)]
struct Placement {
    /// Raw: the content's offset; frames: the first frame's offset.
    offset: u64,
    /// Raw: the size; frames: the sum of the run's stored lengths (shared frames count for each entry).
    stored_size: u64,
}

impl<'a> Entry<'a> {
    /// Position in the archive's record order (0-based); stable for a given archive file.
    pub fn index(&self) -> u32 {
        self.index
    }
    /// The entry's path (validated: relative, `/`-separated, no `.`/`..`).
    pub fn path(&self) -> &'a str {
        self.path
    }
    /// Uncompressed size in bytes.
    pub fn size(&self) -> u64 {
        self.record.size
    }
    /// Stored bytes of the entry's data: the size for raw entries, the sum of its frames' stored
    /// lengths otherwise (frames shared with other entries count in full for each).
    pub fn stored_size(&self) -> u64 {
        self.placement.stored_size
    }
    /// Absolute offset of the entry's data (raw) or of its first frame (frames).
    pub fn offset(&self) -> u64 {
        self.placement.offset
    }
    /// Whether the content is a raw extent or a run of frames.
    pub fn stored_as(&self) -> StoredAs {
        if self.record.compression == COMPRESSION_ZSTD {
            StoredAs::Zstd
        } else {
            StoredAs::Raw
        }
    }

    /// Whether the entry's compressed frames hold its content through the x86 branch filter (flag
    /// `X86`, 2.1); reads undo it.
    pub fn has_x86_filter(&self) -> bool {
        self.record.flags & format::ENTRY_FLAG_X86 != 0
    }

    /// Whether the writer put the entry in its solid stream (flag `SOLID`).
    pub fn is_solid(&self) -> bool {
        self.record.flags & format::ENTRY_FLAG_SOLID != 0
    }
    /// The zstd level recorded by the writer (0 for raw entries).
    pub fn level(&self) -> i8 {
        self.record.level
    }
    /// Unix permission bits.
    pub fn mode(&self) -> u32 {
        self.record.mode
    }
    /// True when any executable bit is set.
    pub fn is_executable(&self) -> bool {
        self.record.mode & 0o111 != 0
    }
    /// Modification time, if the archive kept it (`None` when recorded as 0).
    pub fn mtime(&self) -> Option<crate::Mtime> {
        (self.record.mtime_secs != 0 || self.record.mtime_nanos != 0)
            .then_some(crate::Mtime { secs: self.record.mtime_secs, nanos: self.record.mtime_nanos })
    }
    /// xxh3-64 of the uncompressed content.
    pub fn content_hash(&self) -> u64 {
        self.record.content_hash
    }
    /// The index record, in 2.0 form (a 1.0 record is converted at open).
    pub fn record(&self) -> &'a EntryRecord {
        self.record
    }
}

/// Distinguishes open archives in the thread-local frame cache.
static NEXT_ARCHIVE_ID: AtomicU64 = AtomicU64::new(1);

/// An open archive. Cheap to share between threads (`&Archive` is `Sync`).
pub struct Archive {
    id: u64,
    name: PathBuf,
    backing: Source,
    header: Header,
    footer: Footer,
    /// The commit generation the footer was found through (0: no commit slot in use).
    generation: u64,
    records: Vec<EntryRecord>,
    placements: Vec<Placement>,
    frames: Vec<FrameRecord>,
    /// Decoded coordinate of each frame's first byte (prefix sums of `len` in table order).
    frame_starts: Vec<u64>,
    /// Per frame, whether its entries carry the X86 filter flag (then a compressed frame decodes
    /// through [`crate::x86::decode`]).
    x86_frames: Vec<bool>,
    /// The string table, validated as UTF-8 once at open.
    strings: Box<str>,
    lookup_table: Range<usize>,
    frame_size: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("name", &self.name).field("entries", &self.records.len()).finish()
    }
}

/// Byte counts of how an archive's data area is used (see [`Archive::space`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceUse {
    /// Bytes of the data area (from the end of the header and slots to the index).
    pub data_area: u64,
    /// Distinct stored bytes: each raw extent and each frame counted once.
    pub stored: u64,
    /// Bytes of the data area no entry or frame uses (holes and alignment padding).
    pub dead: u64,
    /// Entries whose data is shared with an earlier entry (deduplicated).
    pub shared_entries: u64,
    /// Uncompressed bytes those shared entries did not need to store again.
    pub shared_bytes: u64,
    /// Entries in solid blocks.
    pub solid_entries: u64,
    /// Frames holding solid entries.
    pub solid_frames: u64,
    /// Frames in the frame table.
    pub frames: u64,
}

impl Archive {
    /// Maps and opens an archive file, validating header, footer and index (not entry data).
    pub fn open(path: impl AsRef<Path>) -> Result<Archive> {
        let path = path.as_ref();
        Self::from_backing(path.to_owned(), Source::Whole(Backing::open(path)?), None)
    }

    /// Maps and opens an archive from a file already open for reading (`name` is used in errors), so
    /// a caller that locked or checked that file reads exactly it, never what the path names later.
    pub fn from_file(file: &std::fs::File, name: impl Into<PathBuf>) -> Result<Archive> {
        let name = name.into();
        Self::from_backing(name.clone(), Source::Whole(Backing::from_file(file, &name)?), None)
    }

    /// Opens the version of `file` whose footer is at `footer_at`, committed as `generation`,
    /// whatever the commit slots say: the in-place editor reads the older commit slot's version, and
    /// checks a new version before it commits it. Every rule is checked as for the winning version.
    pub(crate) fn open_version(file: &std::fs::File, name: &Path, footer_at: u64, generation: u64) -> Result<Archive> {
        let backing = Source::Whole(Backing::from_file(file, name)?);
        Self::from_backing(name.to_owned(), backing, Some((footer_at, generation)))
    }

    /// Opens an archive file like [`open`](Self::open), but reads entry data with `pread` instead
    /// of mapping the file: for long-lived readers of files that may change while open (a mount).
    /// If the file is truncated later, reads of the missing region are errors naming the entry and
    /// offset, where a mapping would kill the process with SIGBUS. Header, index and footer are read
    /// into memory at open. [`raw_bytes`](Self::raw_bytes) is `None` and
    /// [`stored_bytes`](Self::stored_bytes) empty for such an archive; every other read works.
    pub fn open_pread(path: impl AsRef<Path>) -> Result<Archive> {
        let path = path.as_ref();
        // open_regular: a FIFO or device is refused, never blocked on.
        let file = crate::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = vec![0u8; DATA_START.min(len) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).map_err(|e| Error::io(path, e))?;
        // Where the footer is follows from the header and slots alone; anything wrong is refused by
        // `from_backing`, which then sees the head (and at most the footer) only.
        let footer_at = match locate_footer(&head, len, path) {
            Ok(at) => at,
            Err(_) => len.saturating_sub(FOOTER_LEN),
        };
        let mut index_offset = [0u8; 8];
        let footer_end = footer_at.saturating_add(FOOTER_LEN).min(len);
        let read = std::os::unix::fs::FileExt::read_exact_at(&file, &mut index_offset, footer_at);
        let index_offset = if read.is_ok() { u64::from_le_bytes(index_offset) } else { footer_at };
        // Only an index that fits between header and footer is read.
        let tail_start = if (HEADER_LEN..footer_at).contains(&index_offset) { index_offset } else { footer_at };
        let backing = PreadFile::new(file, path, len, DATA_START, tail_start..footer_end)?;
        Self::from_backing(path.to_owned(), Source::Pread(backing), None)
    }

    /// Opens an archive held in memory. `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Archive> {
        Self::from_backing(name.into(), Source::Whole(Backing::Owned(bytes)), None)
    }

    /// Opens the version the commit slots name, or (`version`: footer offset and generation) the one
    /// given.
    fn from_backing(name: PathBuf, backing: Source, version: Option<(u64, u64)>) -> Result<Archive> {
        let file_len = backing.len();
        let corrupt = |offset: u64, what: &str| Error::corrupt(&name, offset, None, what);

        let head = backing.meta(0..file_len.min(DATA_START)).unwrap_or_default();
        if !head.starts_with(&MAGIC) {
            return Err(Error::NotAnArchive { file: name });
        }
        let Some(header_bytes) = backing.meta(0..HEADER_LEN) else {
            return Err(corrupt(file_len, "file is truncated (shorter than header and footer)"));
        };
        let header: Header = format::from_bytes(header_bytes).ok_or_else(|| corrupt(0, "unreadable header"))?;
        if header.version_major != VERSION_MAJOR && header.version_major != VERSION_MAJOR_1 {
            return Err(Error::UnsupportedVersion {
                file: name,
                major: header.version_major,
                minor: header.version_minor,
            });
        }
        if header.header_hash != header.compute_hash() {
            return Err(corrupt(24, "header checksum mismatch (the header is damaged)"));
        }
        if !(MIN_FRAME_SIZE_LOG2..=MAX_FRAME_SIZE_LOG2).contains(&header.frame_size_log2) {
            return Err(corrupt(12, "frame size out of range"));
        }
        let v1 = header.version_major == VERSION_MAJOR_1;
        let data_start = if v1 { HEADER_LEN } else { DATA_START };
        if file_len < data_start + FOOTER_LEN {
            return Err(corrupt(file_len, "file is truncated (shorter than header and footer)"));
        }
        let (footer_at, generation) = match version {
            Some((at, generation)) if at.checked_add(FOOTER_LEN).is_some_and(|end| end <= file_len) => (at, generation),
            Some((at, _)) => return Err(corrupt(at, "the footer lies outside the file")),
            None => locate_footer_and_generation(head, file_len, &name)?,
        };
        let footer_end = footer_at + FOOTER_LEN;
        let footer: Footer = format::from_bytes(backing.meta(footer_at..footer_end).unwrap_or_default())
            .ok_or_else(|| corrupt(footer_at, "unreadable footer"))?;
        if footer.end_magic != END_MAGIC {
            let what = if generation == 0 {
                "no end magic: the file is truncated or has trailing data"
            } else {
                "the committed footer has no end magic (the commit slot points at garbage)"
            };
            return Err(corrupt(footer_end - 8, what));
        }
        if footer.footer_hash != footer.compute_hash() {
            return Err(corrupt(footer_at + 24, "footer checksum mismatch (the footer is damaged)"));
        }
        let index_end = footer.index_offset.checked_add(footer.index_len);
        if footer.index_offset < data_start || index_end != Some(footer_at) {
            return Err(corrupt(footer_at, "the footer's index extent does not end where the footer starts"));
        }
        let index = backing
            .meta(footer.index_offset..footer_at)
            .ok_or_else(|| corrupt(footer.index_offset, "the index is not where the footer says"))?;
        if xxh3_64(index) != footer.index_hash {
            return Err(corrupt(footer.index_offset, "index checksum mismatch (the index is damaged)"));
        }

        // From here the index bytes are exactly what the writer produced, or a deliberately forged
        // index: every count is still checked against the real length before use.
        let index_header: IndexHeader = format::from_bytes(index)
            .ok_or_else(|| corrupt(footer.index_offset, "index is shorter than its header"))?;
        let frame_record_len = if v1 { FRAME_END_LEN } else { FRAME_RECORD_LEN };
        let layout = IndexLayout::new(&index_header, footer.index_len, frame_record_len)
            .ok_or_else(|| corrupt(footer.index_offset, "index counts do not add up to the index length"))?;
        if !v1 && (index_header.dictionary_count != 0 || index_header.reserved != 0) {
            return Err(corrupt(footer.index_offset + 24, "index header has a dictionary count or reserved bits set"));
        }

        let base = footer.index_offset;
        let records: Vec<EntryRecord> = index[layout.records.clone()]
            .chunks_exact(ENTRY_RECORD_LEN as usize)
            .map(|chunk| format::from_bytes(chunk).unwrap_or_default())
            .collect();
        let strings: Box<str> = std::str::from_utf8(&index[layout.strings.clone()])
            .map_err(|e| corrupt(base + (layout.strings.start + e.valid_up_to()) as u64, "string table is not UTF-8"))?
            .into();
        let frame_size = 1u64 << header.frame_size_log2;
        let table = validate::Tables {
            name: &name,
            records_at: base + layout.records.start as u64,
            frames_at: base + layout.frames.start as u64,
            data: data_start..footer.index_offset,
            frame_size,
            strings: &strings,
        };
        let (records, frames) = if v1 {
            let ends: Vec<u64> = index[layout.frames.clone()]
                .chunks_exact(FRAME_END_LEN as usize)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            validate::convert_v1(&table, records, &ends)?
        } else {
            let frames: Vec<FrameRecord> = index[layout.frames.clone()]
                .chunks_exact(FRAME_RECORD_LEN as usize)
                .map(|chunk| format::from_bytes(chunk).unwrap_or_default())
                .collect();
            (records, frames)
        };
        let frame_starts = validate::check_frames(&table, &frames)?;
        validate::check_entries(&table, &records, &frames, &frame_starts, !v1)?;
        let x86_frames = validate::check_sharing(&table, &records, &frames, &frame_starts)?;
        // Prefix sums keep this O(1) an entry: many entries may share one long run.
        let mut stored_prefix = Vec::with_capacity(frames.len() + 1);
        stored_prefix.push(0u64);
        for frame in &frames {
            stored_prefix.push(stored_prefix[stored_prefix.len() - 1] + u64::from(frame.stored_len));
        }
        let placements = records
            .iter()
            .map(|r| match r.compression {
                COMPRESSION_NONE => Placement { offset: r.offset, stored_size: r.size },
                _ => {
                    let (first, end) = (r.first_frame as usize, (u64::from(r.first_frame) + r.frame_count) as usize);
                    Placement { offset: frames[first].offset, stored_size: stored_prefix[end] - stored_prefix[first] }
                }
            })
            .collect();

        let archive = Archive {
            id: NEXT_ARCHIVE_ID.fetch_add(1, Ordering::Relaxed),
            name,
            header,
            footer,
            generation,
            records,
            placements,
            frames,
            frame_starts,
            x86_frames,
            strings,
            lookup_table: (base as usize + layout.lookup.start)..(base as usize + layout.lookup.end),
            frame_size,
            backing,
        };
        archive.validate_lookup()?;
        Ok(archive)
    }

    /// Checks that the lookup table orders paths strictly (so it is a permutation without
    /// duplicates) and that no entry path is also an implied directory.
    fn validate_lookup(&self) -> Result<()> {
        let count = self.records.len();
        let mut previous: Option<&str> = None;
        for position in 0..count {
            let at = (self.lookup_table.start + position * LOOKUP_LEN as usize) as u64;
            let index = self.lookup_index(position);
            let path = index
                .filter(|&i| (i as usize) < count)
                .map(|i| self.entry_at(i).path)
                .ok_or_else(|| Error::corrupt(&self.name, at, None, "lookup table names no entry"))?;
            if let Some(previous) = previous {
                if previous >= path {
                    let what = if previous == path { "duplicate path" } else { "lookup table is not sorted" };
                    return Err(Error::corrupt(&self.name, at, Some(path), what));
                }
            }
            previous = Some(path);
        }
        // A path `p` conflicts with any path starting with `p/`; those sort contiguously after `p`,
        // though not always right after it: bytes below '/' ("p-x", "p.x") sort first.
        let mut prefix = String::new();
        for position in 0..count {
            let path = self.lookup_entry(position).map(|e| e.path).unwrap_or_default();
            let next = self.lookup_entry(position + 1).map(|e| e.path).unwrap_or_default();
            // Fast path (no binary search): if the next path does not continue `p` with a byte at or
            // below '/', every `p/…` would have to sort between `p` and it, so there is none.
            if !next.as_bytes().starts_with(path.as_bytes())
                || next.as_bytes().get(path.len()).is_none_or(|&b| b > b'/')
            {
                continue;
            }
            prefix.clear();
            prefix.push_str(path);
            prefix.push('/');
            let start = self.lower_bound(&prefix);
            if let Some(other) = self.lookup_entry(start).filter(|e| e.path.starts_with(prefix.as_str())) {
                let at = (self.lookup_table.start + position * LOOKUP_LEN as usize) as u64;
                return Err(Error::corrupt(
                    &self.name,
                    at,
                    Some(path),
                    format!("'{path}' is an entry and also a directory of '{}'", other.path),
                ));
            }
        }
        Ok(())
    }

    /// The file name (or the name given to [`from_bytes`](Self::from_bytes)).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The format version `(major, minor)` of the file (1.0 or 2.x).
    pub fn version(&self) -> (u16, u16) {
        (self.header.version_major, self.header.version_minor)
    }

    /// The commit generation the index was found through; 0 when no commit slot is in use (a
    /// streamed archive, or a 1.0 one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Largest uncompressed length of a frame (the header's frame size).
    pub fn frame_size(&self) -> u64 {
        self.frame_size
    }

    /// Length of the archive file in bytes (at open).
    pub fn file_len(&self) -> u64 {
        self.backing.len()
    }

    /// Offset and length of the index.
    pub fn index_extent(&self) -> (u64, u64) {
        (self.footer.index_offset, self.footer.index_len)
    }

    /// The parsed header (validated at open).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The parsed footer (validated at open); `footer().index_hash` identifies the whole index.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The frame table (a 1.0 archive's frame ends converted to records).
    pub fn frames(&self) -> &[FrameRecord] {
        &self.frames
    }

    /// The frame-table indexes of an entry's run (empty for raw entries).
    pub fn entry_frames(&self, entry: &Entry<'_>) -> Range<u32> {
        match entry.stored_as() {
            StoredAs::Raw => 0..0,
            StoredAs::Zstd => entry.record.first_frame..entry.record.first_frame + entry.record.frame_count as u32,
        }
    }

    /// Where a frames entry's content starts within its first frame's decoded bytes (0 for raw
    /// entries and for entries with frames of their own).
    pub fn entry_skip(&self, entry: &Entry<'_>) -> u64 {
        match entry.stored_as() {
            StoredAs::Raw => 0,
            StoredAs::Zstd => entry.record.offset,
        }
    }

    /// The frame holding byte `offset` of a frames entry, as (frame-table index, offset within that
    /// frame's decoded bytes); `None` for raw entries and offsets at or past the end.
    pub fn frame_of(&self, entry: &Entry<'_>, offset: u64) -> Option<(u32, u64)> {
        if entry.stored_as() == StoredAs::Raw || offset >= entry.size() {
            return None;
        }
        let run = self.entry_frames(entry);
        let coordinate = self.frame_starts[run.start as usize] + entry.record.offset + offset;
        let starts = &self.frame_starts[run.start as usize..run.end as usize];
        // The last frame starting at or before the coordinate (validated: the run covers it).
        let k = starts.partition_point(|&start| start <= coordinate) - 1;
        Some((run.start + k as u32, coordinate - starts[k]))
    }

    /// The cumulative stored lengths of an entry's frames (empty for raw entries). When the run is
    /// contiguous in the file ([`frames_contiguous`](Self::frames_contiguous)), these are the frame
    /// ends relative to [`Entry::offset`], which with [`stored_bytes`](Self::stored_bytes) is
    /// everything needed to copy the entry verbatim
    /// (see [`ArchiveWriter::add_stored`](crate::ArchiveWriter::add_stored)).
    pub fn frame_ends(&self, entry: &Entry<'_>) -> Vec<u64> {
        let mut end = 0u64;
        self.entry_frames(entry)
            .map(|f| {
                end += u64::from(self.frames[f as usize].stored_len);
                end
            })
            .collect()
    }

    /// Whether a frames entry's run lies back to back in the file, in table order (true for raw
    /// entries).
    pub fn frames_contiguous(&self, entry: &Entry<'_>) -> bool {
        let run = self.entry_frames(entry);
        run.clone().skip(1).all(|f| {
            let previous = self.frames[f as usize - 1];
            previous.offset + u64::from(previous.stored_len) == self.frames[f as usize].offset
        })
    }

    /// The stored bytes attributable to an entry: its raw extent, or its frames with each frame it
    /// shares with other entries (a solid block) split by the uncompressed bytes each holds in it.
    /// [`Entry::stored_size`] counts a shared frame in full for every entry in it, which is what a
    /// reader must fetch; this is what the entry costs, for listings and size reports. A
    /// deduplicated copy counts its extent again, as `stored_size` does.
    pub fn stored_share(&self, entry: &Entry<'_>) -> u64 {
        let run = self.entry_frames(entry);
        if run.is_empty() {
            return entry.stored_size();
        }
        // Validated at open: the run covers exactly [skip, skip + size) of its frames' decoded bytes,
        // so only the first and the last frame can be held in part.
        let (first, last) = (run.start as usize, run.end as usize - 1);
        let part = |f: usize, held: u64| {
            let frame = self.frames[f];
            let len = u128::from(frame.len.max(1));
            ((u128::from(frame.stored_len) * u128::from(held) + len / 2) / len) as u64
        };
        let skip = entry.record.offset;
        let first_len = u64::from(self.frames[first].len);
        if first == last {
            return part(first, entry.size().min(first_len.saturating_sub(skip)));
        }
        let last_start = self.frame_starts[last].saturating_sub(self.frame_starts[first]);
        let held_last = skip.saturating_add(entry.size()).saturating_sub(last_start);
        let whole = entry
            .stored_size()
            .saturating_sub(u64::from(self.frames[first].stored_len))
            .saturating_sub(u64::from(self.frames[last].stored_len));
        part(first, first_len.saturating_sub(skip)) + whole + part(last, held_last)
    }

    /// Whether frame `k` of an entry's run is stored raw (its stored length equals its length).
    pub fn frame_is_raw(&self, entry: &Entry<'_>, k: u64) -> bool {
        self.run_frame(entry, k).is_some_and(|f| f.stored_len == f.len)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Entries in record order (the order the writer added them).
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        (0..self.records.len() as u32).map(move |i| self.entry_at(i))
    }

    /// Entries in path order (the lookup table's order).
    pub fn entries_by_path(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        (0..self.records.len()).filter_map(move |position| self.lookup_entry(position))
    }

    /// The entry at a record-order index.
    pub fn entry(&self, index: u32) -> Option<Entry<'_>> {
        ((index as usize) < self.records.len()).then(|| self.entry_at(index))
    }

    /// Finds an entry by path: a binary search of the lookup table, O(log n).
    pub fn get(&self, path: &str) -> Option<Entry<'_>> {
        let position = self.lower_bound(path);
        self.lookup_entry(position).filter(|e| e.path == path)
    }

    /// Number of entries whose path is lexicographically below `key`, by binary search.
    pub fn lower_bound(&self, key: &str) -> usize {
        let (mut low, mut high) = (0usize, self.records.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match self.lookup_entry(mid) {
                Some(entry) if entry.path < key => low = mid + 1,
                _ => high = mid,
            }
        }
        low
    }

    /// The entry at a position of the lookup (path) order.
    pub fn lookup_entry(&self, position: usize) -> Option<Entry<'_>> {
        self.lookup_index(position).and_then(|index| self.entry(index))
    }

    fn lookup_index(&self, position: usize) -> Option<u32> {
        let at = self.lookup_table.start.checked_add(position.checked_mul(LOOKUP_LEN as usize)?)?;
        let bytes = self
            .backing
            .meta(at as u64..(at as u64).checked_add(LOOKUP_LEN)?)
            .filter(|_| at < self.lookup_table.end)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn entry_at(&self, index: u32) -> Entry<'_> {
        let record = &self.records[index as usize];
        let range = record.path_offset as usize..record.path_offset as usize + record.path_len as usize;
        // Validated at open; the fallback only guards the validator itself.
        let path = self.strings.get(range).unwrap_or("");
        Entry { index, path, record, placement: &self.placements[index as usize] }
    }

    /// Number of frames in an entry's run (0 for raw entries).
    pub fn frame_count(&self, entry: &Entry<'_>) -> u64 {
        match entry.stored_as() {
            StoredAs::Raw => 0,
            StoredAs::Zstd => entry.record.frame_count,
        }
    }

    /// Uncompressed length of frame `k` of an entry's run (the whole frame, which in a solid block
    /// also holds other entries' bytes); 0 past the run.
    pub fn frame_len(&self, entry: &Entry<'_>, k: u64) -> u64 {
        self.run_frame(entry, k).map_or(0, |f| u64::from(f.len))
    }

    fn run_frame(&self, entry: &Entry<'_>, k: u64) -> Option<FrameRecord> {
        let run = self.entry_frames(entry);
        let f = u64::from(run.start) + k;
        (f < u64::from(run.end)).then(|| self.frames[f as usize])
    }

    fn unreadable(&self, entry: Option<&str>, at: u64, len: u64, e: io::Error) -> Error {
        let why = if e.kind() == io::ErrorKind::UnexpectedEof {
            "the file ends before them (was it truncated while open?)".to_owned()
        } else {
            e.to_string()
        };
        Error::corrupt(&self.name, at, entry, format!("cannot read {len} stored bytes: {why}"))
    }

    /// The stored bytes of an entry, borrowed from the mapping, unverified: a raw entry's content, or
    /// a frames entry's run when it is contiguous (else empty). Empty for an archive opened with
    /// [`open_pread`](Self::open_pread).
    pub fn stored_bytes(&self, entry: &Entry<'_>) -> &[u8] {
        if !self.frames_contiguous(entry) {
            return &[];
        }
        let start = entry.offset();
        self.backing.meta(start..start.saturating_add(entry.stored_size())).unwrap_or_default()
    }

    /// The content of a raw entry as a slice of the mapping (unverified); `None` for frames entries
    /// and for archives opened with [`open_pread`](Self::open_pread) (use [`read_at`](Self::read_at)).
    pub fn raw_bytes(&self, entry: &Entry<'_>) -> Option<&[u8]> {
        if matches!(self.backing, Source::Pread(_)) || entry.stored_as() != StoredAs::Raw {
            return None;
        }
        let start = entry.offset();
        Some(self.backing.meta(start..start.saturating_add(entry.size())).unwrap_or_default())
    }

    /// Decodes frame `k` of an entry's run, whole, into `out` (replacing its contents). The entry's
    /// bytes in it start at [`entry_skip`](Self::entry_skip) for `k == 0`, at 0 after.
    pub fn decode_frame(&self, entry: &Entry<'_>, k: u64, out: &mut Vec<u8>) -> Result<()> {
        let run = self.entry_frames(entry);
        let f = u64::from(run.start) + k;
        if f >= u64::from(run.end) {
            return Err(Error::OutOfRange { entry: entry.path().to_owned(), offset: k, size: run.len() as u64 });
        }
        self.decode_frame_for(f as u32, Some(entry.path()), out)
    }

    /// The stored bytes of frame `frame` of the frame table (borrowed when mapped), unverified.
    pub fn stored_frame(&self, frame: u32) -> Result<Cow<'_, [u8]>> {
        let Some(record) = self.frames.get(frame as usize).copied() else {
            return Err(Error::InvalidOption(format!("frame {frame} is past the frame table")));
        };
        let len = u64::from(record.stored_len);
        self.backing.data(record.offset, len).map_err(|e| self.unreadable(None, record.offset, len, e))
    }

    /// Reads the stored bytes of frame `frame` into `out` (resized to them), unverified: no
    /// allocation when `out` is already large enough, also for an archive opened with `pread`.
    pub(crate) fn stored_frame_into(&self, frame: u32, out: &mut Vec<u8>) -> Result<()> {
        let Some(record) = self.frames.get(frame as usize).copied() else {
            return Err(Error::InvalidOption(format!("frame {frame} is past the frame table")));
        };
        let len = u64::from(record.stored_len);
        out.resize(record.stored_len as usize, 0);
        self.backing.read_into(record.offset, out).map_err(|e| self.unreadable(None, record.offset, len, e))
    }

    /// Decodes `stored`, the stored bytes of frame `frame` (from
    /// [`stored_frame_into`](Self::stored_frame_into)), into `out`, which is the frame's length;
    /// checked as every decode is.
    pub(crate) fn decode_stored_frame(&self, frame: u32, stored: &[u8], out: &mut [u8]) -> Result<()> {
        let record = self.frames.get(frame as usize).copied().filter(|r| r.len as usize == out.len());
        let Some(record) = record else {
            return Err(Error::InvalidOption(format!("frame {frame}: no frame of {} bytes", out.len())));
        };
        if stored.len() == out.len() {
            out.copy_from_slice(stored);
            return Ok(());
        }
        self.decompress_checked(frame, record, None, stored, out)
    }

    /// Decodes frame `frame` of the frame table into `out` (replacing its contents), checked.
    pub fn decode_frame_at(&self, frame: u32, out: &mut Vec<u8>) -> Result<()> {
        self.decode_frame_for(frame, None, out)
    }

    fn decode_frame_for(&self, frame: u32, entry: Option<&str>, out: &mut Vec<u8>) -> Result<()> {
        let Some(record) = self.frames.get(frame as usize).copied() else {
            let what = format!("frame {frame} is past the frame table ({} frames)", self.frames.len());
            return Err(Error::InvalidOption(what));
        };
        let stored = self.checked_stored_frame(frame, record, entry)?;
        let len = record.len as usize;
        out.clear();
        out.try_reserve_exact(len).map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
        if stored.len() == len {
            out.extend_from_slice(&stored);
            return Ok(());
        }
        out.resize(len, 0);
        self.decompress_checked(frame, record, entry, &stored, out)
    }

    /// The stored bytes of frame `frame` (whose record is `record`), with a compressed frame's declared
    /// length checked against the record before any buffer is sized for it (writers always record
    /// it): a forged frame then costs no allocation at all.
    fn checked_stored_frame(&self, frame: u32, record: FrameRecord, entry: Option<&str>) -> Result<Cow<'_, [u8]>> {
        let stored_len = u64::from(record.stored_len);
        let stored = self
            .backing
            .data(record.offset, stored_len)
            .map_err(|e| self.unreadable(entry, record.offset, stored_len, e))?;
        if stored.len() == record.len as usize {
            return Ok(stored);
        }
        let fail = |what: String| Error::corrupt(&self.name, record.offset, entry, format!("frame {frame} {what}"));
        match zstd::zstd_safe::get_frame_content_size(&stored) {
            Ok(Some(declared)) if declared != u64::from(record.len) => {
                Err(fail(format!("does not decode to its length: it declares {declared} bytes, not {}", record.len)))
            }
            Ok(_) => Ok(stored),
            Err(_) => Err(fail("does not decode: no valid zstd frame header".to_owned())),
        }
    }

    /// Decodes the compressed frame `stored` (from [`checked_stored_frame`](Self::checked_stored_frame))
    /// into `out`, which is exactly the frame's length.
    fn decompress_checked(
        &self,
        frame: u32,
        record: FrameRecord,
        entry: Option<&str>,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let fail = |what: String| Error::corrupt(&self.name, record.offset, entry, format!("frame {frame} {what}"));
        let decoded = decompress_frame(stored, out).map_err(|e| fail(format!("does not decode: {e}")))?;
        if decoded != out.len() {
            return Err(fail(format!("decodes to {decoded} bytes instead of {}", out.len())));
        }
        // Every decode of a compressed frame comes through here, so this is the one place the
        // filter is undone (raw frames hold the content itself).
        if self.x86_frames.get(frame as usize).copied().unwrap_or(false) {
            crate::x86::decode(out);
        }
        Ok(())
    }

    /// Decodes frame `frame` straight into `out` (exactly its length), checked: the frame cache is
    /// neither used nor disturbed.
    fn decode_frame_into(&self, frame: u32, entry: &str, out: &mut [u8]) -> Result<()> {
        let record = self.frames[frame as usize];
        let stored = self.checked_stored_frame(frame, record, Some(entry))?;
        if stored.len() == out.len() {
            out.copy_from_slice(&stored);
            return Ok(());
        }
        self.decompress_checked(frame, record, Some(entry), &stored, out)
    }

    /// Gives the bytes of a frames entry from `offset` to its end to `sink`, piece by piece (at most
    /// one frame each), decoding each frame once through the thread's frame cache.
    fn pieces(
        &self,
        entry: &Entry<'_>,
        offset: u64,
        end: u64,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut position = offset;
        while position < end {
            let Some((frame, within)) = self.frame_of(entry, position) else { break };
            FRAME_CACHE.with(|cell| -> Result<()> {
                let mut cache = cell.borrow_mut();
                if cache.key != Some((self.id, frame)) {
                    cache.key = None;
                    self.decode_frame_for(frame, Some(entry.path()), &mut cache.bytes)?;
                    cache.key = Some((self.id, frame));
                }
                let available = cache.bytes.len() as u64 - within;
                let take = available.min(end - position) as usize;
                sink(&cache.bytes[within as usize..within as usize + take])?;
                position += take as u64;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Reads a whole entry and verifies its checksum. Raw entries are borrowed from the mapping.
    pub fn read(&self, entry: &Entry<'_>) -> Result<Cow<'_, [u8]>> {
        if entry.stored_as() == StoredAs::Raw {
            let content = self
                .backing
                .data(entry.offset(), entry.size())
                .map_err(|e| self.unreadable(Some(entry.path()), entry.offset(), entry.size(), e))?;
            self.check_hash(entry, xxh3_64(&content))?;
            return Ok(content);
        }
        let size = usize::try_from(entry.size()).map_err(|_| {
            Error::io(&self.name, io::Error::other(format!("entry '{}' does not fit in memory", entry.path())))
        })?;
        let mut out = Vec::new();
        if self.size_is_plausible(entry) {
            out.try_reserve_exact(size).map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
            out.resize(size, 0);
            self.read_into(entry, &mut out)?;
            return Ok(Cow::Owned(out));
        }
        // A size far beyond what the stored bytes plausibly decode to: the buffer grows frame by
        // frame as frames decode, so a lie costs at most one frame before it is caught.
        self.pieces(entry, 0, entry.size(), |piece| {
            out.try_reserve(piece.len()).map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
            out.extend_from_slice(piece);
            Ok(())
        })?;
        self.check_hash(entry, xxh3_64(&out))?;
        Ok(Cow::Owned(out))
    }

    /// Whether an entry's recorded size is one its stored bytes can plausibly decode to: at most
    /// [`PLAUSIBLE_RATIO`] times them, or one frame (always, for raw entries). The size comes from
    /// the index, which open checks only against the frame table's lengths, so a forged archive can
    /// claim 64 MiB for every stored byte; sizing a buffer for an implausible claim up front would let
    /// a small file demand gigabytes. Callers of [`read_into`](Self::read_into) allocate the size
    /// only when this holds, and otherwise use [`read`](Self::read), which grows its buffer as
    /// frames actually decode.
    pub fn size_is_plausible(&self, entry: &Entry<'_>) -> bool {
        entry.size() <= entry.stored_size().saturating_mul(PLAUSIBLE_RATIO).max(self.frame_size)
    }

    /// Reads a whole entry into `out`, which must be exactly [`Entry::size`] bytes long, and verifies
    /// its checksum; no intermediate buffer. Frames lying wholly inside the entry decode straight into
    /// `out`; only frames shared with other entries (a solid block's) go through the thread's frame
    /// cache, so consecutive small entries decode their frame once. Each piece is hashed as it is
    /// written, while still in cache. After an error `out` holds unverified bytes.
    ///
    /// Size `out` from the index only when [`size_is_plausible`](Self::size_is_plausible) holds.
    pub fn read_into(&self, entry: &Entry<'_>, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != entry.size() {
            let (entry, len, size) = (entry.path().to_owned(), out.len() as u64, entry.size());
            return Err(Error::BufferSize { entry, len, size });
        }
        let hash = match entry.stored_as() {
            StoredAs::Raw => {
                self.read_raw_into(entry, 0, out)?;
                xxh3_64(out)
            }
            StoredAs::Zstd => self.decode_entry_into(entry, out)?,
        };
        self.check_hash(entry, hash)
    }

    /// Decodes a frames entry into `out` (its size, checked by the caller), frame by frame; returns
    /// the content's xxh3.
    fn decode_entry_into(&self, entry: &Entry<'_>, out: &mut [u8]) -> Result<u64> {
        let run = self.entry_frames(entry);
        let size = out.len() as u64;
        // Where the entry's byte 0 lies in the frames' decoded coordinates.
        let base = self.frame_starts[run.start as usize] + entry.record.offset;
        let mut hasher = Xxh3::new();
        let mut position = 0u64;
        for frame in run {
            let frame_start = self.frame_starts[frame as usize];
            let len = u64::from(self.frames[frame as usize].len);
            // The run is validated at open (minimal, covering the content), so this frame starts at
            // or before `position` and ends past it.
            let end = (frame_start + len).saturating_sub(base).min(size);
            if end <= position {
                continue;
            }
            let piece = &mut out[position as usize..end as usize];
            if frame_start == base + position && end - position == len {
                self.decode_frame_into(frame, entry.path(), piece)?;
            } else {
                let mut filled = 0;
                self.pieces(entry, position, end, |bytes| {
                    piece[filled..filled + bytes.len()].copy_from_slice(bytes);
                    filled += bytes.len();
                    Ok(())
                })?;
            }
            hasher.update(piece);
            position = end;
        }
        if position != size {
            let what = format!("its frames hold {position} of its {size} bytes");
            return Err(Error::corrupt(&self.name, entry.offset(), Some(entry.path()), what));
        }
        Ok(hasher.digest())
    }

    /// Reads entry bytes starting at `offset` into `buf`, decoding only the frames that cover them.
    /// Returns the number of bytes read (less than `buf.len()` only at the end of the entry). Does
    /// not verify the entry checksum (zstd frames still check their own).
    pub fn read_at(&self, entry: &Entry<'_>, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = entry.size();
        if offset > size {
            return Err(Error::OutOfRange { entry: entry.path().to_owned(), offset, size });
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        let buf = &mut buf[..len];
        match entry.stored_as() {
            StoredAs::Raw => self.read_raw_into(entry, offset, buf)?,
            StoredAs::Zstd => {
                let mut done = 0usize;
                self.pieces(entry, offset, offset + len as u64, |piece| {
                    buf[done..done + piece.len()].copy_from_slice(piece);
                    done += piece.len();
                    Ok(())
                })?;
            }
        }
        Ok(len)
    }

    /// Fills `buf` with a raw entry's bytes from `offset` (within the entry), without allocating.
    fn read_raw_into(&self, entry: &Entry<'_>, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = entry.offset().saturating_add(offset);
        self.backing.read_into(at, buf).map_err(|e| self.unreadable(Some(entry.path()), at, buf.len() as u64, e))
    }

    /// A streaming reader over an entry's content that verifies the checksum when it reaches the
    /// end (a mismatch is reported as an `InvalidData` error from `read`). Memory: one frame.
    pub fn reader<'a>(&'a self, entry: &Entry<'a>) -> EntryReader<'a> {
        EntryReader {
            archive: self,
            entry: *entry,
            position: 0,
            frame: Vec::new(),
            frame_start: 0,
            hasher: Xxh3::new(),
            empty_checked: false,
        }
    }

    /// Decodes and checks one entry, streaming (memory: one frame).
    pub fn verify_entry(&self, entry: &Entry<'_>) -> Result<()> {
        let mut hasher = Xxh3::new();
        match entry.stored_as() {
            StoredAs::Raw if !matches!(self.backing, Source::Pread(_)) => {
                hasher.update(self.raw_bytes(entry).unwrap_or_default())
            }
            StoredAs::Raw => {
                // In pieces: a pread archive would otherwise hold a whole raw entry in memory.
                let mut piece = vec![0u8; (entry.size().min(1 << 20)) as usize];
                let mut offset = 0;
                while offset < entry.size() {
                    let n = (entry.size() - offset).min(piece.len() as u64) as usize;
                    self.read_raw_into(entry, offset, &mut piece[..n])?;
                    hasher.update(&piece[..n]);
                    offset += n as u64;
                }
            }
            StoredAs::Zstd => self.pieces(entry, 0, entry.size(), |piece| {
                hasher.update(piece);
                Ok(())
            })?,
        }
        self.check_hash(entry, hasher.digest())
    }

    /// Verifies every entry in parallel; returns the errors of damaged entries in record order
    /// (empty when the archive is intact). Header, footer and index were verified at open. Entries
    /// are taken in frame order in chunks, so a frame shared by a solid block is decoded about once.
    pub fn verify(&self) -> Vec<Error> {
        let mut order: Vec<u32> = (0..self.records.len() as u32).collect();
        order.sort_by_key(|&i| {
            let r = &self.records[i as usize];
            (r.compression, r.first_frame, r.offset)
        });
        let mut results: Vec<(u32, Error)> = order
            .par_chunks(64)
            .flat_map_iter(|chunk| {
                chunk
                    .iter()
                    .filter_map(|&i| self.verify_entry(&self.entry_at(i)).err().map(|e| (i, e)))
                    .collect::<Vec<_>>()
            })
            .collect();
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, e)| e).collect()
    }

    fn check_hash(&self, entry: &Entry<'_>, actual: u64) -> Result<()> {
        if actual != entry.content_hash() {
            return Err(Error::ChecksumMismatch {
                file: self.name.clone(),
                entry: entry.path().to_owned(),
                expected: entry.content_hash(),
                actual,
            });
        }
        Ok(())
    }

    /// Sum of the entries' uncompressed sizes.
    pub fn total_size(&self) -> u64 {
        self.records.iter().map(|r| r.size).fold(0u64, u64::saturating_add)
    }

    /// Distinct stored bytes: each raw extent and each frame counted once (shared data once).
    pub fn total_stored_size(&self) -> u64 {
        self.space().stored
    }

    /// How the data area is used: distinct stored bytes, dead bytes (holes and padding), and what
    /// deduplication and solid blocks shared.
    pub fn space(&self) -> SpaceUse {
        let data_start = if self.header.version_major == VERSION_MAJOR_1 { HEADER_LEN } else { DATA_START };
        let data_area = self.footer.index_offset - data_start;
        let frames_stored: u64 = self.frames.iter().map(|f| u64::from(f.stored_len)).sum();
        let mut seen = std::collections::HashSet::new();
        let mut space = SpaceUse { data_area, frames: self.frames.len() as u64, ..SpaceUse::default() };
        let mut raw_stored = 0u64;
        let mut solid_frames = std::collections::HashSet::new();
        for record in &self.records {
            if record.size == 0 {
                continue;
            }
            let key = (record.compression, record.first_frame, record.frame_count, record.offset);
            if !seen.insert(key) {
                space.shared_entries += 1;
                space.shared_bytes += record.size;
            } else if record.compression == COMPRESSION_NONE {
                raw_stored += record.size;
            }
            if record.flags & format::ENTRY_FLAG_SOLID != 0 {
                space.solid_entries += 1;
                solid_frames.extend(record.first_frame..record.first_frame + record.frame_count as u32);
            }
        }
        space.solid_frames = solid_frames.len() as u64;
        space.stored = raw_stored + frames_stored;
        space.dead = data_area.saturating_sub(space.stored);
        space
    }
}

/// Byte ranges of the index's tables, relative to the index start, computed with overflow checks.
struct IndexLayout {
    records: Range<usize>,
    frames: Range<usize>,
    lookup: Range<usize>,
    strings: Range<usize>,
}

impl IndexLayout {
    fn new(header: &IndexHeader, index_len: u64, frame_record_len: u64) -> Option<IndexLayout> {
        if header.entry_count > u64::from(u32::MAX) || header.frame_count > u64::from(u32::MAX) {
            return None;
        }
        let records_len = header.entry_count.checked_mul(ENTRY_RECORD_LEN)?;
        let frames_len = header.frame_count.checked_mul(frame_record_len)?;
        let lookup_len = header.entry_count.checked_mul(LOOKUP_LEN)?;
        let total = INDEX_HEADER_LEN
            .checked_add(records_len)?
            .checked_add(frames_len)?
            .checked_add(lookup_len)?
            .checked_add(header.strings_len)?;
        if total != index_len {
            return None;
        }
        let at = |start: u64, len: u64| start as usize..(start + len) as usize;
        let records = at(INDEX_HEADER_LEN, records_len);
        let frames = at(records.end as u64, frames_len);
        let lookup = at(frames.end as u64, lookup_len);
        let strings = at(lookup.end as u64, header.strings_len);
        Some(IndexLayout { records, frames, lookup, strings })
    }
}

/// Finds the footer from the header and commit slots (`head`: the file's first bytes, `file_len`
/// its length): the winning slot's footer, or the last 40 bytes when no slot is valid (always for
/// 1.0). Returns the footer's offset and the generation it was committed with (0 without a slot).
fn locate_footer_and_generation(head: &[u8], file_len: u64, name: &Path) -> Result<(u64, u64)> {
    let streamed = file_len
        .checked_sub(FOOTER_LEN)
        .ok_or_else(|| Error::corrupt(name, file_len, None, "file is truncated (shorter than header and footer)"))?;
    if head.get(8..10) == Some(&VERSION_MAJOR_1.to_le_bytes()[..]) {
        return Ok((streamed, 0));
    }
    let mut best: Option<(u64, CommitSlot)> = None;
    for i in 0..2u64 {
        let at = HEADER_LEN + i * SLOT_LEN;
        let Some(slot) = head.get(at as usize..(at + SLOT_LEN) as usize).and_then(format::from_bytes::<CommitSlot>)
        else {
            return Err(Error::corrupt(name, at, None, "file is truncated (shorter than its commit slots)"));
        };
        if slot.generation == 0 || slot.slot_hash != slot.compute_hash() {
            continue; // empty, or torn by a crash during its write
        }
        match best {
            Some((_, other)) if other.generation == slot.generation => {
                let what = format!("both commit slots claim generation {}", slot.generation);
                return Err(Error::corrupt(name, at, None, what));
            }
            Some((_, other)) if other.generation > slot.generation => {}
            _ => best = Some((at, slot)),
        }
    }
    let Some((at, slot)) = best else { return Ok((streamed, 0)) };
    if slot.reserved != 0 {
        return Err(Error::corrupt(name, at + 16, None, "commit slot has reserved bits set"));
    }
    let fits = slot.footer_offset >= DATA_START
        && slot.footer_offset.checked_add(FOOTER_LEN).is_some_and(|end| end <= file_len);
    if !fits {
        let what = format!("commit slot (generation {}) points at a footer outside the file", slot.generation);
        return Err(Error::corrupt(name, at + 8, None, what));
    }
    Ok((slot.footer_offset, slot.generation))
}

/// The generation a fresh open of `file` would find (0 for a streamed or 1.0 archive), from its
/// header and commit slots alone (one read of 96 bytes): how a long-lived reader notices a newer
/// commit cheaply (spec "Readers that keep a version open"). `name` is used in errors.
pub fn committed_generation(file: &std::fs::File, name: &Path) -> Result<u64> {
    let len = file.metadata().map_err(|e| Error::io(name, e))?.len();
    let mut head = vec![0u8; DATA_START.min(len) as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut head, 0).map_err(|e| Error::io(name, e))?;
    if !head.starts_with(&MAGIC) {
        return Err(Error::NotAnArchive { file: name.to_owned() });
    }
    locate_footer_and_generation(&head, len, name).map(|(_, generation)| generation)
}

/// [`locate_footer_and_generation`]'s offset alone.
fn locate_footer(head: &[u8], file_len: u64, name: &Path) -> Result<u64> {
    locate_footer_and_generation(head, file_len, name).map(|(at, _)| at)
}

/// The last frame decoded on this thread, keyed by (archive id, frame index): neighbouring small
/// entries of a solid block are then served from one decode.
struct FrameCache {
    key: Option<(u64, u32)>,
    bytes: Vec<u8>,
}

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static FRAME_CACHE: RefCell<FrameCache> = const { RefCell::new(FrameCache { key: None, bytes: Vec::new() }) };
}

/// Decodes one zstd frame into `out`, never writing past it; returns the decoded length.
fn decompress_frame(stored: &[u8], out: &mut [u8]) -> io::Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        let decompressor = slot.as_mut().ok_or_else(|| io::Error::other("no zstd context"))?;
        decompressor.decompress_to_buffer(stored, out)
    })
}

/// Streaming reader over one entry; see [`Archive::reader`].
pub struct EntryReader<'a> {
    archive: &'a Archive,
    entry: Entry<'a>,
    position: u64,
    frame: Vec<u8>,
    /// Entry position of `frame[0]` (may be "before" the entry: a solid entry's first frame starts
    /// with other entries' bytes, so this is `position - within` as a signed quantity).
    frame_start: i128,
    hasher: Xxh3,
    empty_checked: bool,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.entry.size();
        if self.position >= size || buf.is_empty() {
            if size == 0 && !self.empty_checked {
                // An empty entry still has a recorded hash; a forged one must not pass silently.
                self.empty_checked = true;
                self.archive.check_hash(&self.entry, self.hasher.digest())?;
            }
            return Ok(0);
        }
        let n = match self.entry.stored_as() {
            StoredAs::Raw => {
                let n = (buf.len() as u64).min(size - self.position) as usize;
                self.archive.read_raw_into(&self.entry, self.position, &mut buf[..n])?;
                n
            }
            StoredAs::Zstd => {
                let position = i128::from(self.position);
                let loaded = position >= self.frame_start && position < self.frame_start + self.frame.len() as i128;
                if !loaded {
                    let (frame, within) = self
                        .archive
                        .frame_of(&self.entry, self.position)
                        .ok_or_else(|| io::Error::other("position outside the entry"))?;
                    self.frame.clear();
                    self.archive.decode_frame_for(frame, Some(self.entry.path()), &mut self.frame)?;
                    self.frame_start = position - i128::from(within);
                }
                let within = (position - self.frame_start) as usize;
                let left_in_entry = (size - self.position) as usize;
                let n = buf.len().min(self.frame.len() - within).min(left_in_entry);
                buf[..n].copy_from_slice(&self.frame[within..within + n]);
                n
            }
        };
        self.hasher.update(&buf[..n]);
        self.position += n as u64;
        if self.position == size {
            self.archive.check_hash(&self.entry, self.hasher.digest())?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchiveWriter, EntryOptions, WriterOptions};

    /// An archive of `paths` whose string table then has `from` replaced by `to` (same length), with
    /// the index and footer checksums recomputed, as a forger would.
    fn forged(paths: &[&str], from: &str, to: &str) -> Vec<u8> {
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
        for path in paths {
            writer.add_bytes(path, path.as_bytes(), EntryOptions::default()).unwrap();
        }
        let mut bytes = writer.finish().unwrap();
        let footer_at = bytes.len() - FOOTER_LEN as usize;
        let footer: Footer = format::from_bytes(&bytes[footer_at..]).unwrap();
        let index = footer.index_offset as usize..footer_at;
        let strings_at = bytes[index.clone()].windows(from.len()).rposition(|w| w == from.as_bytes()).unwrap();
        let at = index.start + strings_at;
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        let hash = xxh3_64(&bytes[index.clone()]);
        let footer = Footer::new(footer.index_offset, footer.index_len, hash);
        bytes[footer_at..].copy_from_slice(&format::to_bytes(&footer));
        bytes
    }

    #[test]
    fn open_rejects_an_entry_that_is_also_a_directory() {
        // "a0c" becomes "a/c" (still sorted after "a" and "a-b"): "a" is then a file and a directory.
        for paths in [&["a", "a0c"][..], &["a", "a-b", "a0c"], &["a", "a-b", "a.x", "a0c", "b"]] {
            let bytes = forged(paths, "a0c", "a/c");
            let err = Archive::from_bytes(bytes, "forged.mf").unwrap_err().to_string();
            assert!(err.contains("'a' is an entry and also a directory of 'a/c'"), "{paths:?}: {err}");
        }
        // Untouched, the same archives open.
        for paths in [&["a", "a-b", "a0c"][..], &["ab", "abc/d", "b"]] {
            let bytes = forged(paths, "b", "b");
            assert!(Archive::from_bytes(bytes, "ok.mf").is_ok(), "{paths:?}");
        }
    }

    #[test]
    fn a_pread_archive_reads_like_a_mapped_one_and_a_truncated_file_is_an_error() {
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions { level: 3, frame_size_log2: 12 }).unwrap();
        let text: Vec<u8> = (0..40_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let noise: Vec<u8> = (0..30_000u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect();
        writer.add_bytes("a.txt", &text, EntryOptions::default()).unwrap();
        writer
            .add_bytes(
                "b.bin",
                &noise,
                EntryOptions { compression: crate::Compression::Store, ..EntryOptions::default() },
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.mf");
        std::fs::write(&path, writer.finish().unwrap()).unwrap();

        let mapped = Archive::open(&path).unwrap();
        let pread = Archive::open_pread(&path).unwrap();
        assert_eq!(pread.file_len(), mapped.file_len());
        assert!(pread.verify().is_empty());
        for (m, p) in mapped.entries().zip(pread.entries()) {
            assert_eq!(m.path(), p.path());
            assert_eq!(mapped.read(&m).unwrap(), pread.read(&p).unwrap());
            let (mut a, mut b) = (vec![0u8; 5000], vec![0u8; 5000]);
            assert_eq!(mapped.read_at(&m, 4000, &mut a).unwrap(), pread.read_at(&p, 4000, &mut b).unwrap());
            assert_eq!(a, b);
            assert!(pread.raw_bytes(&p).is_none(), "nothing borrowed from a pread archive");
        }

        let noise_entry = pread.get("b.bin").unwrap();
        assert_eq!(noise_entry.stored_as(), StoredAs::Raw);
        let cut = noise_entry.offset() + 10_000;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(pread.read_at(&noise_entry, 0, &mut buf).unwrap(), 4096, "before the cut still reads");
        let err = pread.read_at(&noise_entry, 20_000, &mut buf).unwrap_err();
        assert!(err.is_corruption());
        let message = err.to_string();
        assert!(message.contains("b.bin") && message.contains("truncated"), "{message}");
        assert!(pread.get("a.txt").is_some(), "the index is held in memory");
    }
}
