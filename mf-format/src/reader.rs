//! The archive reader: maps the file, validates header, footer and index at open, and serves entry
//! data from the mapping. Entry data is only touched when read or verified.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, Result};
use crate::format::{
    self, EntryRecord, Footer, Header, IndexHeader, COMPRESSION_NONE, COMPRESSION_ZSTD, END_MAGIC, ENTRY_RECORD_LEN,
    FOOTER_LEN, FRAME_END_LEN, HEADER_LEN, INDEX_HEADER_LEN, LOOKUP_LEN, MAGIC, MAX_FRAME_SIZE_LOG2, MAX_MODE,
    MIN_FRAME_SIZE_LOG2, VERSION_MAJOR,
};
use crate::mapping::{Backing, PreadFile};
use crate::path::validate_path;

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

    /// Entry bytes `start..start + len`: borrowed when mapped, read from the file otherwise.
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

    /// Fills `buf` with entry bytes from `start`, without allocating.
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

/// How an entry's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAs {
    /// Contiguous, uncompressed: readable as a slice of the archive.
    Raw,
    /// Independent zstd frames (some may be raw), decodable one at a time.
    Zstd,
}

/// An entry of an open archive: its index record and path.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    index: u32,
    path: &'a str,
    record: &'a EntryRecord,
}

impl<'a> Entry<'a> {
    /// Position in the archive's data order (0-based); stable for a given archive file.
    pub fn index(&self) -> u32 {
        self.index
    }
    pub fn path(&self) -> &'a str {
        self.path
    }
    /// Uncompressed size in bytes.
    pub fn size(&self) -> u64 {
        self.record.size
    }
    /// Bytes the entry occupies in the archive.
    pub fn stored_size(&self) -> u64 {
        self.record.stored_size
    }
    /// Absolute offset of the entry's data in the archive file.
    pub fn offset(&self) -> u64 {
        self.record.offset
    }
    pub fn stored_as(&self) -> StoredAs {
        if self.record.compression == COMPRESSION_ZSTD {
            StoredAs::Zstd
        } else {
            StoredAs::Raw
        }
    }
    /// The zstd level recorded by the writer (0 for raw entries).
    pub fn level(&self) -> i8 {
        self.record.level
    }
    /// Unix permission bits.
    pub fn mode(&self) -> u32 {
        self.record.mode
    }
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
    /// The raw index record.
    pub fn record(&self) -> &'a EntryRecord {
        self.record
    }
}

/// An open archive. Cheap to share between threads (`&Archive` is `Sync`).
pub struct Archive {
    name: PathBuf,
    backing: Source,
    header: Header,
    footer: Footer,
    records: Vec<EntryRecord>,
    /// The string table, validated as UTF-8 once at open.
    strings: Box<str>,
    frame_table: Range<usize>,
    lookup_table: Range<usize>,
    frame_size: u64,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("name", &self.name).field("entries", &self.records.len()).finish()
    }
}

impl Archive {
    /// Maps and opens an archive file, validating header, footer and index (not entry data).
    pub fn open(path: impl AsRef<Path>) -> Result<Archive> {
        let path = path.as_ref();
        Self::from_backing(path.to_owned(), Source::Whole(Backing::open(path)?))
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
        if len < HEADER_LEN + FOOTER_LEN {
            return Self::open(path); // the same refusal as a mapped open
        }
        let footer_at = len - FOOTER_LEN;
        let mut index_offset = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut index_offset, footer_at)
            .map_err(|e| Error::io(path, e))?;
        // Only an index that fits between header and footer is read; any other footer is refused
        // by the checks in `from_backing`, which then see the footer alone.
        let index_offset = u64::from_le_bytes(index_offset);
        let tail_start = if (HEADER_LEN..footer_at).contains(&index_offset) { index_offset } else { footer_at };
        let backing = PreadFile::new(file, path, len, HEADER_LEN, tail_start)?;
        Self::from_backing(path.to_owned(), Source::Pread(backing))
    }

    /// Opens an archive held in memory. `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Archive> {
        Self::from_backing(name.into(), Source::Whole(Backing::Owned(bytes)))
    }

    fn from_backing(name: PathBuf, backing: Source) -> Result<Archive> {
        let file_len = backing.len();
        let corrupt = |offset: u64, what: &str| Error::corrupt(&name, offset, None, what);

        let head = backing.meta(0..file_len.min(HEADER_LEN)).unwrap_or_default();
        if !head.starts_with(&MAGIC) {
            return Err(Error::NotAnArchive { file: name });
        }
        let Some(header_bytes) = backing.meta(0..HEADER_LEN) else {
            return Err(corrupt(file_len, "file is truncated (shorter than header and footer)"));
        };
        let header: Header = format::from_bytes(header_bytes).ok_or_else(|| corrupt(0, "unreadable header"))?;
        if header.version_major != VERSION_MAJOR {
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

        if file_len < HEADER_LEN + FOOTER_LEN {
            return Err(corrupt(file_len, "file is truncated (shorter than header and footer)"));
        }
        let footer_at = file_len - FOOTER_LEN;
        let footer: Footer = format::from_bytes(backing.meta(footer_at..file_len).unwrap_or_default())
            .ok_or_else(|| corrupt(footer_at, "unreadable footer"))?;
        if footer.end_magic != END_MAGIC {
            return Err(corrupt(file_len - 8, "no end magic: the file is truncated or has trailing data"));
        }
        if footer.footer_hash != footer.compute_hash() {
            return Err(corrupt(footer_at + 24, "footer checksum mismatch (the footer is damaged)"));
        }
        let index_end = footer.index_offset.checked_add(footer.index_len);
        if footer.index_offset < HEADER_LEN || index_end != Some(footer_at) {
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
        let layout = IndexLayout::new(&index_header, footer.index_len)
            .ok_or_else(|| corrupt(footer.index_offset, "index counts do not add up to the index length"))?;

        let base = footer.index_offset as usize;
        let records: Vec<EntryRecord> = index[layout.records.clone()]
            .chunks_exact(ENTRY_RECORD_LEN as usize)
            .map(|chunk| format::from_bytes(chunk).unwrap_or_default())
            .collect();
        let strings = std::str::from_utf8(&index[layout.strings.clone()])
            .map_err(|e| corrupt((base + layout.strings.start + e.valid_up_to()) as u64, "string table is not UTF-8"))?
            .into();

        let archive = Archive {
            name,
            header,
            footer,
            records,
            strings,
            frame_table: base + layout.frames.start..base + layout.frames.end,
            lookup_table: base + layout.lookup.start..base + layout.lookup.end,
            frame_size: 1u64 << header.frame_size_log2,
            backing,
        };
        archive.validate_entries(layout.records.start as u64 + footer.index_offset)?;
        archive.validate_lookup()?;
        Ok(archive)
    }

    /// Checks every entry record against the spec's rules, in one pass in data order.
    fn validate_entries(&self, records_at: u64) -> Result<()> {
        let data_end = self.footer.index_offset;
        let mut previous_end = HEADER_LEN;
        let mut next_frame = 0u64;
        let frame_count = (self.frame_table.len() as u64) / FRAME_END_LEN;
        for (i, record) in self.records.iter().enumerate() {
            let at = records_at + i as u64 * ENTRY_RECORD_LEN;
            let path_range = (record.path_offset as usize)
                .checked_add(record.path_len as usize)
                .map(|end| record.path_offset as usize..end);
            let path = path_range.and_then(|range| self.strings.get(range)).ok_or_else(|| {
                let what = "path lies outside the string table or cuts a UTF-8 character in two";
                Error::corrupt(&self.name, at, None, what)
            })?;
            let fail = |what: &str| Error::corrupt(&self.name, at, Some(path), what);
            validate_path(path).map_err(|e| fail(&e.to_string()))?;
            let end = record.offset.checked_add(record.stored_size).ok_or_else(|| fail("extent overflows"))?;
            if record.offset < previous_end {
                return Err(fail("data extent overlaps the previous entry or the header"));
            }
            if end > data_end {
                return Err(fail("data extent runs past the data area"));
            }
            previous_end = end;
            if record.mode > MAX_MODE {
                return Err(fail("mode has bits above 0o7777"));
            }
            if record.mtime_nanos >= 1_000_000_000 {
                return Err(fail("mtime nanoseconds out of range"));
            }
            match record.compression {
                COMPRESSION_NONE => {
                    if record.stored_size != record.size {
                        return Err(fail("uncompressed entry whose stored size differs from its size"));
                    }
                }
                COMPRESSION_ZSTD => {
                    let frames = record.size.div_ceil(self.frame_size);
                    if u64::from(record.first_frame) != next_frame {
                        return Err(fail("first frame is not the next unused frame"));
                    }
                    next_frame += frames;
                    if next_frame > frame_count {
                        return Err(fail("frames run past the frame table"));
                    }
                    let entry = self.entry_at(i as u32);
                    let mut previous = 0u64;
                    for k in 0..frames {
                        let end = self.frame_end(&entry, k);
                        let stored = end.saturating_sub(previous);
                        let uncompressed = self.frame_len(&entry, k);
                        if stored == 0 || stored > uncompressed {
                            return Err(fail(&format!("frame {k} has an impossible stored length")));
                        }
                        previous = end;
                    }
                    if previous != record.stored_size {
                        return Err(fail("last frame end differs from the stored size"));
                    }
                }
                other => return Err(fail(&format!("unknown compression method {other}"))),
            }
        }
        if next_frame != frame_count {
            return Err(Error::corrupt(&self.name, records_at, None, "frame table has unused frames"));
        }
        Ok(())
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

    pub fn version(&self) -> (u16, u16) {
        (self.header.version_major, self.header.version_minor)
    }

    /// Uncompressed frame size of zstd entries.
    pub fn frame_size(&self) -> u64 {
        self.frame_size
    }

    /// Length of the archive file in bytes.
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

    /// The frame ends of a zstd entry, relative to its offset (empty for raw entries). With
    /// [`stored_bytes`](Self::stored_bytes) this is everything needed to copy the entry verbatim
    /// (see [`ArchiveWriter::add_stored`](crate::ArchiveWriter::add_stored)).
    pub fn frame_ends(&self, entry: &Entry<'_>) -> Vec<u64> {
        (0..self.frame_count(entry)).map(|k| self.frame_end(entry, k)).collect()
    }

    /// Whether frame `k` of a zstd entry is stored raw (its stored length equals its length).
    pub fn frame_is_raw(&self, entry: &Entry<'_>, k: u64) -> bool {
        let (start, end) = self.frame_extent(entry, k);
        end.saturating_sub(start) == self.frame_len(entry, k)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Entries in data order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        (0..self.records.len() as u32).map(move |i| self.entry_at(i))
    }

    /// Entries in path order (the lookup table's order).
    pub fn entries_by_path(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        (0..self.records.len()).filter_map(move |position| self.lookup_entry(position))
    }

    /// The entry at a data-order index.
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
        Entry { index, path, record }
    }

    /// Number of frames of an entry (0 for raw entries).
    pub fn frame_count(&self, entry: &Entry<'_>) -> u64 {
        match entry.stored_as() {
            StoredAs::Raw => 0,
            StoredAs::Zstd => entry.size().div_ceil(self.frame_size),
        }
    }

    /// Uncompressed length of frame `k` of a zstd entry.
    pub fn frame_len(&self, entry: &Entry<'_>, k: u64) -> u64 {
        let start = k.saturating_mul(self.frame_size);
        entry.size().saturating_sub(start).min(self.frame_size)
    }

    fn frame_end(&self, entry: &Entry<'_>, k: u64) -> u64 {
        let slot = u64::from(entry.record.first_frame) + k;
        let at = (slot as usize)
            .checked_mul(FRAME_END_LEN as usize)
            .and_then(|x| x.checked_add(self.frame_table.start))
            .filter(|&at| at + FRAME_END_LEN as usize <= self.frame_table.end);
        at.and_then(|at| self.backing.meta(at as u64..at as u64 + 8))
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    }

    /// Start and end of frame `k`'s stored bytes, relative to the entry's offset.
    fn frame_extent(&self, entry: &Entry<'_>, k: u64) -> (u64, u64) {
        let start = if k == 0 { 0 } else { self.frame_end(entry, k - 1) };
        (start, self.frame_end(entry, k))
    }

    /// Stored bytes of frame `k`: borrowed when mapped, read from the file otherwise.
    fn frame_stored(&self, entry: &Entry<'_>, k: u64) -> Result<Cow<'_, [u8]>> {
        let (start, end) = self.frame_extent(entry, k);
        self.entry_data(entry, start, end.saturating_sub(start))
    }

    /// `len` stored bytes of an entry from `start` (relative to its offset). A failure (a pread
    /// archive whose file shrank or fails) names the entry and the offset.
    fn entry_data(&self, entry: &Entry<'_>, start: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let at = entry.offset().saturating_add(start);
        self.backing.data(at, len).map_err(|e| self.unreadable(entry, at, len, e))
    }

    fn unreadable(&self, entry: &Entry<'_>, at: u64, len: u64, e: io::Error) -> Error {
        let why = if e.kind() == io::ErrorKind::UnexpectedEof {
            "the file ends before them (was it truncated while open?)".to_owned()
        } else {
            e.to_string()
        };
        Error::corrupt(&self.name, at, Some(entry.path()), format!("cannot read {len} stored bytes: {why}"))
    }

    /// The stored bytes of an entry: for raw entries, its content, borrowed from the mapping, with no
    /// checksum verification. Empty for an archive opened with [`open_pread`](Self::open_pread).
    pub fn stored_bytes(&self, entry: &Entry<'_>) -> &[u8] {
        let start = entry.offset();
        self.backing.meta(start..start.saturating_add(entry.stored_size())).unwrap_or_default()
    }

    /// The content of a raw entry as a slice of the mapping (unverified); `None` for zstd entries
    /// and for archives opened with [`open_pread`](Self::open_pread) (use [`read_at`](Self::read_at)).
    pub fn raw_bytes(&self, entry: &Entry<'_>) -> Option<&[u8]> {
        if matches!(self.backing, Source::Pread(_)) {
            return None;
        }
        (entry.stored_as() == StoredAs::Raw).then(|| self.stored_bytes(entry))
    }

    /// Decodes frame `k` of a zstd entry into `out` (replacing its contents).
    pub fn decode_frame(&self, entry: &Entry<'_>, k: u64, out: &mut Vec<u8>) -> Result<()> {
        let len = self.frame_len(entry, k) as usize;
        let stored = self.frame_stored(entry, k)?;
        self.check_frame_header(entry, k, &stored, len)?;
        out.clear();
        out.resize(len, 0);
        self.decode_frame_into(entry, k, &stored, out)
    }

    /// Checks, before any buffer is sized for it, that a compressed frame declares the length the
    /// index expects (writers always record it): a forged size then costs no allocation at all.
    fn check_frame_header(&self, entry: &Entry<'_>, k: u64, stored: &[u8], len: usize) -> Result<()> {
        if stored.len() == len {
            return Ok(()); // a raw frame
        }
        let fail = |what: String| {
            let frame_offset = entry.offset() + if k == 0 { 0 } else { self.frame_end(entry, k - 1) };
            Err(Error::corrupt(&self.name, frame_offset, Some(entry.path()), what))
        };
        match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(declared)) if declared != len as u64 => {
                fail(format!("frame {k} does not decode to its length: it declares {declared} bytes, not {len}"))
            }
            Ok(_) => Ok(()),
            Err(_) => fail(format!("frame {k} does not decode: no valid zstd frame header")),
        }
    }

    /// Decodes frame `k` (its `stored` bytes) into `out`, which must be exactly the frame's
    /// uncompressed length.
    fn decode_frame_into(&self, entry: &Entry<'_>, k: u64, stored: &[u8], out: &mut [u8]) -> Result<()> {
        let frame_offset = entry.offset() + if k == 0 { 0 } else { self.frame_end(entry, k - 1) };
        if stored.len() == out.len() {
            out.copy_from_slice(stored);
            return Ok(());
        }
        let decoded = decompress_frame(stored, out).map_err(|e| {
            Error::corrupt(&self.name, frame_offset, Some(entry.path()), format!("frame {k} does not decode: {e}"))
        })?;
        if decoded != out.len() {
            return Err(Error::corrupt(
                &self.name,
                frame_offset,
                Some(entry.path()),
                format!("frame {k} decodes to {decoded} bytes instead of {}", out.len()),
            ));
        }
        Ok(())
    }

    /// Reads a whole entry and verifies its checksum. Raw entries are borrowed from the mapping.
    pub fn read(&self, entry: &Entry<'_>) -> Result<Cow<'_, [u8]>> {
        let content: Cow<'_, [u8]> = match entry.stored_as() {
            StoredAs::Raw => self.entry_data(entry, 0, entry.stored_size())?,
            StoredAs::Zstd => {
                let size = usize::try_from(entry.size()).map_err(|_| {
                    Error::io(&self.name, io::Error::other(format!("entry '{}' does not fit in memory", entry.path())))
                })?;
                // The recorded size is only checked against the frame table at open, and a forged
                // one can claim 64 MiB for every stored byte. So the buffer grows frame by frame
                // as frames decode: a lie costs at most one frame before it is caught.
                let first_guess = entry.stored_size().saturating_mul(32).max(self.frame_size);
                let mut out = Vec::new();
                out.try_reserve_exact(size.min(first_guess as usize))
                    .map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
                for k in 0..self.frame_count(entry) {
                    let start = out.len();
                    let len = self.frame_len(entry, k) as usize;
                    let stored = self.frame_stored(entry, k)?;
                    self.check_frame_header(entry, k, &stored, len)?;
                    out.try_reserve(len).map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
                    out.resize(start + len, 0);
                    self.decode_frame_into(entry, k, &stored, &mut out[start..])?;
                }
                Cow::Owned(out)
            }
        };
        self.check_hash(entry, xxh3_64(&content))?;
        Ok(content)
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
                while done < len {
                    let position = offset + done as u64;
                    let k = position / self.frame_size;
                    let within = (position % self.frame_size) as usize;
                    let frame_len = self.frame_len(entry, k) as usize;
                    let take = (frame_len - within).min(len - done);
                    if within == 0 && take == frame_len {
                        let stored = self.frame_stored(entry, k)?;
                        self.decode_frame_into(entry, k, &stored, &mut buf[done..done + take])?;
                    } else {
                        SCRATCH.with(|scratch| -> Result<()> {
                            let mut scratch = scratch.borrow_mut();
                            self.decode_frame(entry, k, &mut scratch)?;
                            buf[done..done + take].copy_from_slice(&scratch[within..within + take]);
                            Ok(())
                        })?;
                    }
                    done += take;
                }
            }
        }
        Ok(len)
    }

    /// Fills `buf` with a raw entry's bytes from `offset` (within the entry), without allocating.
    fn read_raw_into(&self, entry: &Entry<'_>, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = entry.offset().saturating_add(offset);
        self.backing.read_into(at, buf).map_err(|e| self.unreadable(entry, at, buf.len() as u64, e))
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
            StoredAs::Raw if !matches!(self.backing, Source::Pread(_)) => hasher.update(self.stored_bytes(entry)),
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
            StoredAs::Zstd => {
                let mut frame = Vec::new();
                for k in 0..self.frame_count(entry) {
                    self.decode_frame(entry, k, &mut frame)?;
                    hasher.update(&frame);
                }
            }
        }
        self.check_hash(entry, hasher.digest())
    }

    /// Verifies every entry in parallel; returns the errors of damaged entries in data order
    /// (empty when the archive is intact). Header, footer and index were verified at open.
    pub fn verify(&self) -> Vec<Error> {
        let results: Vec<Option<Error>> = (0..self.records.len() as u32)
            .into_par_iter()
            .map(|i| self.verify_entry(&self.entry_at(i)).err())
            .collect();
        results.into_iter().flatten().collect()
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

    /// Sum of the entries' stored sizes.
    pub fn total_stored_size(&self) -> u64 {
        self.records.iter().map(|r| r.stored_size).fold(0u64, u64::saturating_add)
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
    fn new(header: &IndexHeader, index_len: u64) -> Option<IndexLayout> {
        if header.entry_count > u64::from(u32::MAX) {
            return None;
        }
        let records_len = header.entry_count.checked_mul(ENTRY_RECORD_LEN)?;
        let frames_len = header.frame_count.checked_mul(FRAME_END_LEN)?;
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

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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
    frame_start: u64,
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
                let frame_size = self.archive.frame_size;
                let within_loaded =
                    self.position >= self.frame_start && self.position < self.frame_start + self.frame.len() as u64;
                if !within_loaded {
                    let k = self.position / frame_size;
                    self.archive.decode_frame(&self.entry, k, &mut self.frame)?;
                    self.frame_start = k * frame_size;
                }
                let within = (self.position - self.frame_start) as usize;
                let n = buf.len().min(self.frame.len() - within);
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
