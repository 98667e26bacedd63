//! Applying patches: check the base, rebuild into a temp file beside the target, verify every
//! entry and (for exact patches) the whole file, then fsync and rename (spec/PATCH.md, "Applying").

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mf_format::{ArchiveWriter, AtomicFile, EntryOptions, Mtime, StoredLayout, WriterOptions};
use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{Error, Result};
use crate::report::{Change, EntryReport, Method, PatchReport};
use crate::source::Source;
use crate::wire::*;
use crate::{bsdiff, zref};

/// A block of a zstd payload, its frame located in the patch file.
#[derive(Debug, Clone)]
struct BlockRef {
    new_len: u64,
    old_start: u64,
    old_len: u64,
    blob_at: u64,
    blob_len: u64,
}

#[derive(Debug, Clone)]
enum PayloadRef {
    None,
    Inline(Vec<u8>),
    Blob { at: u64, len: u64, raw_len: u64 },
    Blocks(Vec<BlockRef>),
}

impl PayloadRef {
    fn patch_bytes(&self) -> u64 {
        match self {
            PayloadRef::None => 0,
            PayloadRef::Inline(raw) => raw.len() as u64,
            PayloadRef::Blob { len, .. } => *len,
            PayloadRef::Blocks(blocks) => blocks.iter().map(|b| b.blob_len).sum(),
        }
    }
}

#[derive(Debug, Clone)]
enum Storage {
    Verbatim,
    None,
    AllFrames,
    Bitmap(Vec<u8>),
}

/// One parsed entry record.
#[derive(Debug, Clone)]
struct Record {
    /// Offset of the record in the control stream, for errors.
    at: u64,
    op: u8,
    old_index: Option<u32>,
    path: Option<String>,
    mode: Option<u32>,
    mtime: Option<(i64, u32)>,
    size: u64,
    hash: u64,
    base_hash: Option<u64>,
    storage: Storage,
    payload: PayloadRef,
}

/// A parsed patch: header, settings and records. Blobs stay in the file.
pub struct Patch {
    path: PathBuf,
    file: File,
    header: PatchHeader,
    frame_size_log2: u8,
    level: i32,
    old_count: u64,
    records: Vec<Record>,
}

fn corrupt(path: &Path, section: &'static str, offset: u64, entry: Option<&str>, what: impl Into<String>) -> Error {
    Error::CorruptPatch { file: path.to_owned(), section, offset, entry: entry.map(str::to_owned), what: what.into() }
}

impl Patch {
    /// Opens a patch: checks the header, the whole body's checksum, and parses the control stream.
    /// Nothing about the old file is needed.
    pub fn open(path: &Path) -> Result<Patch> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = Vec::new();
        (&mut file).take(PATCH_HEADER_LEN).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
        let header = PatchHeader::parse(&head, file_len, path)?;
        // The body checksum first: a damaged patch is refused before any of it is interpreted.
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = PATCH_HEADER_LEN;
        while at < file_len {
            let n = ((file_len - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at).map_err(|e| Error::io(path, e))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        if hasher.digest() != header.body_hash {
            return Err(corrupt(path, "body", PATCH_HEADER_LEN, None, "body checksum mismatch (the patch is damaged)"));
        }
        file.seek(SeekFrom::Start(PATCH_HEADER_LEN)).map_err(|e| Error::io(path, e))?;
        let section = BufReader::new((&file).take(header.control_len));
        let mut decoder = zstd::stream::read::Decoder::with_buffer(section)
            .map_err(|e| corrupt(path, "control stream", 0, None, e.to_string()))?;
        decoder.window_log_max(31).map_err(|e| corrupt(path, "control stream", 0, None, e.to_string()))?;
        let decoder = decoder.single_frame();
        let mut reader = ControlReader::new(decoder, path);
        let blobs_start = PATCH_HEADER_LEN + header.control_len;
        let mut blob_cursor = blobs_start;
        let mut patch = Patch {
            path: path.to_owned(),
            file: file.try_clone().map_err(|e| Error::io(path, e))?,
            header,
            frame_size_log2: 0,
            level: 0,
            old_count: 0,
            records: Vec::new(),
        };
        if header.kind == KIND_ARCHIVE {
            patch.frame_size_log2 = reader.u8()?;
            patch.level = i32::from(reader.u8()? as i8);
            WriterOptions { level: patch.level, frame_size_log2: patch.frame_size_log2 }
                .validate()
                .map_err(|e| reader.corrupt(format!("writer settings: {e}")))?;
            patch.old_count = reader.bounded(u64::from(u32::MAX), "old entry count")?;
            let count = reader.bounded(u64::from(u32::MAX), "new entry count")?;
            let mut previous_old: i64 = -1;
            for _ in 0..count {
                let record =
                    parse_record(&mut reader, &header, &mut previous_old, &mut blob_cursor, patch.frame_size_log2)?;
                patch.records.push(record);
            }
        } else {
            let at = reader.offset;
            let op = reader.u8()?;
            if !matches!(op, OP_BSDIFF | OP_ZREF | OP_FULL) {
                reader.offset = at;
                return Err(reader.corrupt(format!("unknown operation {op}")));
            }
            let payload = parse_payload(&mut reader, op, header.new_len, &mut blob_cursor)?;
            patch.records.push(Record {
                at,
                op,
                old_index: None,
                path: None,
                mode: None,
                mtime: None,
                size: header.new_len,
                hash: header.new_hash,
                base_hash: None,
                storage: Storage::None,
                payload,
            });
        }
        reader.expect_end()?;
        if blob_cursor != blobs_start + header.blobs_len {
            return Err(corrupt(
                path,
                "blobs",
                blob_cursor - blobs_start,
                None,
                "blob lengths do not add up to the blob section",
            ));
        }
        Ok(patch)
    }

    pub fn header(&self) -> &PatchHeader {
        &self.header
    }

    /// Reads a blob (a zstd frame) from the patch file.
    fn blob(&self, at: u64, len: u64, entry: &str) -> Result<Vec<u8>> {
        let len = usize::try_from(len).map_err(|_| corrupt(&self.path, "blobs", at, Some(entry), "blob too large"))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
        buf.resize(len, 0);
        self.file.read_exact_at(&mut buf, at).map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }

    /// What the patch does, as far as it can be told without the old file: paths of entries copied
    /// under their old name are unknown (`path` is `None`; `old_index` says which old entry).
    pub fn report(&self) -> PatchReport {
        let mut entries: Vec<EntryReport> = self
            .records
            .iter()
            .map(|r| {
                let method = match r.op {
                    OP_COPY => Method::Copy,
                    OP_BSDIFF => Method::Bsdiff,
                    OP_ZREF => Method::ZstdRef,
                    _ => Method::Full,
                };
                let change = match (r.op, r.path.is_some()) {
                    (OP_COPY, false) => Change::Unchanged,
                    (OP_COPY, true) => Change::Renamed,
                    (OP_FULL, _) => Change::Added,
                    _ => Change::Changed,
                };
                EntryReport {
                    change,
                    path: r.path.clone(),
                    old_path: None,
                    old_index: r.old_index,
                    size: if r.op == OP_COPY { 0 } else { r.size },
                    old_size: None,
                    method,
                    patch_bytes: r.payload.patch_bytes(),
                }
            })
            .collect();
        if self.header.kind == KIND_ARCHIVE {
            let used: std::collections::HashSet<u32> = self.records.iter().filter_map(|r| r.old_index).collect();
            let removed = (self.old_count as usize).saturating_sub(used.len());
            // Old entries not used by any record: counted, their paths are only in the old archive.
            for _ in 0..removed.min(1 << 20) {
                entries.push(EntryReport {
                    change: Change::Removed,
                    path: None,
                    old_path: None,
                    old_index: None,
                    size: 0,
                    old_size: None,
                    method: Method::None,
                    patch_bytes: 0,
                });
            }
        }
        PatchReport {
            archive: self.header.kind == KIND_ARCHIVE,
            exact: self.header.exact(),
            old_len: self.header.old_len,
            new_len: self.header.new_len,
            new_hash: self.header.new_hash,
            patch_len: PATCH_HEADER_LEN + self.header.control_len + self.header.blobs_len,
            entries,
        }
    }
}

/// The largest entry size a patch can claim: entries are stored compressed within the new file,
/// and no zstd frame expands more than 65536-fold, so anything larger is a lie, not a big file.
fn max_entry_size(header: &PatchHeader) -> u64 {
    header.new_len.saturating_mul(1 << 16)
}

fn parse_record<R: Read>(
    reader: &mut ControlReader<R>,
    header: &PatchHeader,
    previous_old: &mut i64,
    blob_cursor: &mut u64,
    frame_size_log2: u8,
) -> Result<Record> {
    reader.entry = None;
    let at = reader.offset;
    let op = reader.u8()?;
    if op > OP_FULL {
        reader.offset = at;
        return Err(reader.corrupt(format!("unknown operation {op}")));
    }
    let flags = reader.u8()?;
    if flags & !EF_KNOWN != 0 || (flags & EF_VERBATIM != 0 && op != OP_COPY) {
        reader.offset = at + 1;
        return Err(reader.corrupt(format!("invalid record flags {flags:#x}")));
    }
    let old_index = if op != OP_FULL {
        let delta = unzigzag(reader.varint()?);
        let index = previous_old.checked_add(1).and_then(|p| p.checked_add(delta));
        let index =
            index.and_then(|i| u32::try_from(i).ok()).ok_or_else(|| reader.corrupt("old entry index out of range"))?;
        *previous_old = i64::from(index);
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
    } else if op == OP_FULL {
        return Err(reader.corrupt("a full entry must name its path"));
    } else {
        None
    };
    reader.entry = path.clone();
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
    let (size, hash) = if op != OP_COPY {
        let size = reader.bounded(max_entry_size(header), "entry size")?;
        (size, reader.u64le()?)
    } else {
        (0, 0)
    };
    let base_hash = if op == OP_BSDIFF || op == OP_ZREF { Some(reader.u64le()?) } else { None };
    let storage = if flags & EF_VERBATIM != 0 {
        Storage::Verbatim
    } else {
        let kind_at = reader.offset;
        match reader.u8()? {
            STORE_NONE => Storage::None,
            STORE_ALL_FRAMES => Storage::AllFrames,
            STORE_BITMAP => {
                // The frame count depends on the size, which copies take from the old entry; the
                // bitmap carries its own length.
                let len = reader
                    .bounded(max_entry_size(header).div_ceil(1 << frame_size_log2.max(12)) / 8 + 1, "bitmap length")?;
                Storage::Bitmap(reader.bytes(len)?)
            }
            other => {
                reader.offset = kind_at;
                return Err(reader.corrupt(format!("unknown storage kind {other}")));
            }
        }
    };
    let payload = if op == OP_COPY { PayloadRef::None } else { parse_payload(reader, op, size, blob_cursor)? };
    Ok(Record { at, op, old_index, path, mode, mtime, size, hash, base_hash, storage, payload })
}

fn parse_payload<R: Read>(
    reader: &mut ControlReader<R>,
    op: u8,
    size: u64,
    blob_cursor: &mut u64,
) -> Result<PayloadRef> {
    let mut take_blob = |reader: &mut ControlReader<R>, len: u64| -> Result<u64> {
        let at = *blob_cursor;
        *blob_cursor = at.checked_add(len).ok_or_else(|| reader.corrupt("blob lengths overflow"))?;
        Ok(at)
    };
    match op {
        OP_BSDIFF => {
            let where_at = reader.offset;
            match reader.u8()? {
                BS_INLINE => {
                    let len = reader.bounded(INLINE_MAX, "inline payload length")?;
                    Ok(PayloadRef::Inline(reader.bytes(len)?))
                }
                BS_BLOB => {
                    let len = reader.varint()?;
                    let raw_len = reader.bounded(size.saturating_mul(3).saturating_add(1 << 20), "payload length")?;
                    let at = take_blob(reader, len)?;
                    Ok(PayloadRef::Blob { at, len, raw_len })
                }
                other => {
                    reader.offset = where_at;
                    Err(reader.corrupt(format!("unknown payload location {other}")))
                }
            }
        }
        _ => {
            let count = reader.bounded(size.max(1), "block count")?;
            let mut blocks = Vec::new();
            let mut total = 0u64;
            for _ in 0..count {
                let new_len = reader.bounded(size, "block length")?;
                let (old_start, old_len) = if op == OP_ZREF { (reader.varint()?, reader.varint()?) } else { (0, 0) };
                let blob_len = reader.varint()?;
                let blob_at = take_blob(reader, blob_len)?;
                total = total.saturating_add(new_len);
                blocks.push(BlockRef { new_len, old_start, old_len, blob_at, blob_len });
            }
            if total != size {
                return Err(reader.corrupt("blocks do not add up to the entry's size"));
            }
            Ok(PayloadRef::Blocks(blocks))
        }
    }
}

/// How an apply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The output was checked to be byte-identical to the file the patch was made from.
    pub exact: bool,
    pub entries: usize,
    pub len: u64,
}

/// Applies `patch` to `old`, writing `target` atomically (`target` may be `old` itself).
/// `progress` is told about output bytes as entries are rebuilt.
pub fn apply_patch(patch: &Path, old: &Path, target: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyOutcome> {
    let patch = Patch::open(patch)?;
    if patch.header.kind == KIND_PLAIN {
        apply_plain(&patch, old, target, progress)
    } else {
        apply_archive(&patch, old, target, progress)
    }
}

/// True when `src` already is the patch's result (so the patch was applied already).
fn is_result(src: &Source, header: &PatchHeader) -> Result<bool> {
    Ok(src.len == header.new_len && src.whole_hash()? == header.new_hash)
}

fn apply_plain(patch: &Patch, old: &Path, target: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyOutcome> {
    let src = Source::open_plain(old)?;
    let header = &patch.header;
    if src.len != header.old_len || src.whole_hash()? != header.old_id {
        if is_result(&src, header)? {
            return Err(Error::AlreadyApplied { file: old.to_owned() });
        }
        return Err(Error::WrongBase {
            file: old.to_owned(),
            entry: None,
            what: format!(
                "its length or xxh3 differ from the base's ({} bytes, xxh3 {:016x})",
                header.old_len, header.old_id
            ),
        });
    }
    let record =
        patch.records.first().ok_or_else(|| corrupt(&patch.path, "control stream", 0, None, "no operation"))?;
    let mut out = AtomicFile::create(target).map_err(|e| Error::io(target, e))?;
    let (len, hash) = {
        let mut writer = HashingWriter::new(std::io::BufWriter::new(out.file()));
        let name = old.display().to_string();
        match &record.payload {
            PayloadRef::Blocks(blocks) => {
                for block in blocks {
                    let prefix = |start: u64, len: usize| src.read_exact_at(start, len);
                    let data = decode_block(patch, src.len, &prefix, block, &name)?;
                    writer.write_all(&data).map_err(|e| Error::io(target, e))?;
                    progress(data.len() as u64);
                }
            }
            payload => {
                let old_data = src.read_exact_at(0, usize::try_from(src.len).unwrap_or(usize::MAX))?;
                let data = apply_bsdiff(patch, payload, &old_data, record, &name)?;
                writer.write_all(&data).map_err(|e| Error::io(target, e))?;
                progress(data.len() as u64);
            }
        }
        writer.flush().map_err(|e| Error::io(target, e))?;
        (writer.len, writer.hasher.digest())
    };
    if len != header.new_len || hash != header.new_hash {
        return Err(Error::OutputMismatch {
            file: target.to_owned(),
            entry: None,
            what: format!(
                "result has {len} bytes, xxh3 {hash:016x}; the patch expects {} bytes, xxh3 {:016x}",
                header.new_len, header.new_hash
            ),
        });
    }
    out.commit().map_err(|e| Error::io(target, e))?;
    Ok(ApplyOutcome { exact: true, entries: 1, len })
}

fn apply_bsdiff(patch: &Patch, payload: &PayloadRef, old_data: &[u8], record: &Record, name: &str) -> Result<Vec<u8>> {
    let raw;
    let (bytes, section, base): (&[u8], &'static str, u64) = match payload {
        PayloadRef::Inline(bytes) => (bytes, "bsdiff payload (control stream)", record.at),
        PayloadRef::Blob { at, len, raw_len } => {
            let blob = patch.blob(*at, *len, name)?;
            raw = zref::decompress(&[], &blob, *raw_len).map_err(|e| {
                corrupt(&patch.path, "blobs", *at, Some(name), format!("bsdiff payload does not decode: {e}"))
            })?;
            (&raw, "bsdiff payload", *at)
        }
        _ => return Err(corrupt(&patch.path, "control stream", record.at, Some(name), "operation without payload")),
    };
    bsdiff::apply(old_data, bytes, record.size).map_err(|e| {
        corrupt(&patch.path, section, base, Some(name), format!("{} (payload offset {})", e.what, e.offset))
    })
}

/// Decodes one zstd block. `old_size` is the size of the base (the old entry, or the whole old file
/// of a plain patch) and `prefix` reads a window of it; a full block reads nothing.
fn decode_block(
    patch: &Patch,
    old_size: u64,
    prefix: &dyn Fn(u64, usize) -> Result<Vec<u8>>,
    block: &BlockRef,
    name: &str,
) -> Result<Vec<u8>> {
    if block.old_start.checked_add(block.old_len).is_none_or(|end| end > old_size) {
        return Err(corrupt(
            &patch.path,
            "blobs",
            block.blob_at,
            Some(name),
            "reference window lies outside the old content",
        ));
    }
    let prefix = if block.old_len == 0 { Vec::new() } else { prefix(block.old_start, block.old_len as usize)? };
    let frame = patch.blob(block.blob_at, block.blob_len, name)?;
    zref::decompress(&prefix, &frame, block.new_len).map_err(|e| {
        corrupt(&patch.path, "blobs", block.blob_at, Some(name), format!("zstd block does not decode: {e}"))
    })
}

/// An old entry as the old version describes it (its archive index, or a file table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldEntry {
    pub path: String,
    pub size: u64,
    /// xxh3 of the content, as the archive stores it.
    pub xxh3: u64,
    pub mode: u32,
    pub mtime: Option<Mtime>,
}

/// The old side of an archive patch, entry by entry in the old archive's data order: the archive
/// itself, or anything else holding the same contents (the files of an install folder described by
/// the old version's file table). The applier checks every entry it uses against `xxh3`, so a source
/// only has to say what its entries should be and hand out bytes.
pub trait OldEntries: Sync {
    /// Names the old content in errors.
    fn name(&self) -> &Path;
    /// Number of old entries.
    fn count(&self) -> u64;
    /// Entry `index` (data order), or `None` past the end.
    fn entry(&self, index: u32) -> Option<OldEntry>;
    /// Content bytes `[start, start + len)` of entry `index`, unverified.
    fn read_range(&self, index: u32, start: u64, len: usize) -> Result<Vec<u8>>;
    /// Checks entry `index`'s whole content against its `xxh3`. The default streams it in 1 MiB
    /// pieces through [`OldEntries::read_range`].
    fn verify(&self, index: u32) -> Result<()> {
        let entry = self.entry(index).ok_or_else(|| missing_old_entry(self.name(), index, self.count()))?;
        let mut hasher = Xxh3::new();
        let mut at = 0u64;
        while at < entry.size {
            let n = (entry.size - at).min(1 << 20) as usize;
            hasher.update(&self.read_range(index, at, n)?);
            at += n as u64;
        }
        check_old_hash(self.name(), &entry, hasher.digest())
    }
}

fn missing_old_entry(name: &Path, index: u32, count: u64) -> Error {
    Error::WrongBase {
        file: name.to_owned(),
        entry: Some(format!("#{index}")),
        what: format!("the patch uses old entry #{index} but there are {count} old entries"),
    }
}

fn check_old_hash(name: &Path, entry: &OldEntry, actual: u64) -> Result<()> {
    if actual != entry.xxh3 {
        return Err(Error::WrongBase {
            file: name.to_owned(),
            entry: Some(entry.path.clone()),
            what: format!("content xxh3 {actual:016x} is not the expected {:016x}", entry.xxh3),
        });
    }
    Ok(())
}

/// The content of a rebuilt entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewContent {
    /// The same bytes as old entry `index` (already checked against its hash): whoever holds the old
    /// content can keep or copy it without rewriting it.
    CopyOf(u32),
    /// The rebuilt bytes, checked against the patch's size and hash.
    Bytes(Vec<u8>),
}

/// One entry of the new archive as an archive patch rebuilds it, in the new archive's data order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub path: String,
    pub mode: u32,
    pub mtime: Option<Mtime>,
    pub size: u64,
    pub xxh3: u64,
    pub content: NewContent,
}

/// An entry of an archive opened as the old side of a patch.
struct ArchiveOld<'a> {
    src: &'a Source,
    archive: &'a mf_format::Archive,
}

impl OldEntries for ArchiveOld<'_> {
    fn name(&self) -> &Path {
        &self.src.path
    }

    fn count(&self) -> u64 {
        self.archive.len() as u64
    }

    fn entry(&self, index: u32) -> Option<OldEntry> {
        let entry = self.archive.entry(index)?;
        let record = entry.record();
        Some(OldEntry {
            path: entry.path().to_owned(),
            size: entry.size(),
            xxh3: entry.content_hash(),
            mode: entry.mode(),
            mtime: (record.mtime_secs != 0 || record.mtime_nanos != 0)
                .then_some(Mtime { secs: record.mtime_secs, nanos: record.mtime_nanos }),
        })
    }

    fn read_range(&self, index: u32, start: u64, len: usize) -> Result<Vec<u8>> {
        let entry = self.archive.entry(index).ok_or_else(|| missing_old_entry(self.name(), index, self.count()))?;
        self.src.read_range(&entry, start, len)
    }

    fn verify(&self, index: u32) -> Result<()> {
        match self.archive.entry(index) {
            Some(entry) => self.src.verify_entry(&entry),
            None => Err(missing_old_entry(self.name(), index, self.count())),
        }
    }
}

impl Patch {
    /// True for an archive patch (kind 0), which works entry by entry.
    pub fn is_archive(&self) -> bool {
        self.header.kind == KIND_ARCHIVE
    }

    /// Number of old entries an archive patch expects.
    pub fn old_entry_count(&self) -> u64 {
        self.old_count
    }

    /// Rebuilds the new entries of an archive patch from `old`, handing each to `visit` in the new
    /// archive's data order. Before the first entry, every old entry the patch uses is checked to
    /// exist, to have the base hash the patch names and to hold content matching its hash; every
    /// rebuilt entry is checked against the patch's size and hash. Memory: one old entry, one new
    /// entry and one payload at a time. The caller checks that `old` is the patch's base as a whole
    /// (e.g. its index hash against [`crate::wire::PatchHeader::old_id`]).
    pub fn apply_entries<E: From<Error>>(
        &self,
        old: &dyn OldEntries,
        mut visit: impl FnMut(NewEntry) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.walk_records(old, &self.path, |_, entry| visit(entry))
    }

    /// The record walk shared by [`Patch::apply_entries`] and archive apply: base checks, then
    /// each record's entry with its record (for the archive writer's storage decisions).
    fn walk_records<E: From<Error>>(
        &self,
        old: &dyn OldEntries,
        output: &Path,
        mut visit: impl FnMut(&Record, NewEntry) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if !self.is_archive() {
            return Err(Error::Unsupported {
                file: self.path.clone(),
                what: "a plain patch has no entries to apply one by one".into(),
            }
            .into());
        }
        if old.count() != self.old_count {
            return Err(Error::WrongBase {
                file: old.name().to_owned(),
                entry: None,
                what: format!("it has {} entries; the patch's base has {}", old.count(), self.old_count),
            }
            .into());
        }
        for record in &self.records {
            let Some(index) = record.old_index else { continue };
            let entry = old.entry(index).ok_or_else(|| missing_old_entry(old.name(), index, old.count()))?;
            if record.base_hash.is_some_and(|h| h != entry.xxh3) {
                return Err(Error::WrongBase {
                    file: old.name().to_owned(),
                    entry: Some(entry.path),
                    what: format!(
                        "content xxh3 {:016x} is not the base's {:016x}",
                        entry.xxh3,
                        record.base_hash.unwrap_or(0)
                    ),
                }
                .into());
            }
        }
        // Every old entry the patch reads is checked against its content hash before anything is built.
        let mut used: Vec<u32> = self.records.iter().filter_map(|r| r.old_index).collect();
        used.sort_unstable();
        used.dedup();
        used.par_iter().try_for_each(|&i| old.verify(i))?;

        for record in &self.records {
            let base = record.old_index.and_then(|i| old.entry(i).map(|e| (i, e)));
            let path = match (&record.path, &base) {
                (Some(p), _) => p.clone(),
                (None, Some((_, b))) => b.path.clone(),
                (None, None) => {
                    return Err(corrupt(&self.path, "control stream", record.at, None, "entry without a path").into())
                }
            };
            let mode = record.mode.or(base.as_ref().map(|(_, b)| b.mode)).unwrap_or(0o644);
            let mtime = match record.mtime {
                Some((secs, nanos)) => (secs != 0 || nanos != 0).then_some(Mtime { secs, nanos }),
                None => base.as_ref().and_then(|(_, b)| b.mtime),
            };
            let bad = |what: &str| corrupt(&self.path, "control stream", record.at, Some(&path), what);
            if record.op == OP_COPY {
                let (index, base) = base.ok_or_else(|| bad("copy without an old entry"))?;
                let entry = NewEntry {
                    path,
                    mode,
                    mtime,
                    size: base.size,
                    xxh3: base.xxh3,
                    content: NewContent::CopyOf(index),
                };
                visit(record, entry)?;
                continue;
            }
            let content = match &record.payload {
                PayloadRef::Blocks(blocks) => {
                    let base = match (record.op, &base) {
                        (OP_ZREF, Some((index, entry))) => Some((*index, entry.size)),
                        (OP_ZREF, None) => return Err(bad("zstd-ref without an old entry").into()),
                        _ => None,
                    };
                    let mut content = Vec::new();
                    for block in blocks {
                        let Some((index, size)) = base else {
                            if block.old_len > 0 {
                                return Err(bad("full entry with a reference window").into());
                            }
                            content.extend_from_slice(&decode_block(self, 0, &|_, _| Ok(Vec::new()), block, &path)?);
                            continue;
                        };
                        let prefix = |start: u64, len: usize| old.read_range(index, start, len);
                        content.extend_from_slice(&decode_block(self, size, &prefix, block, &path)?);
                    }
                    content
                }
                payload => {
                    let (index, base) = base.ok_or_else(|| bad("bsdiff without an old entry"))?;
                    let len = usize::try_from(base.size).map_err(|_| {
                        Error::io(old.name(), std::io::Error::other("old entry does not fit in memory"))
                    })?;
                    let old_data = old.read_range(index, 0, len)?;
                    check_old_hash(old.name(), &base, xxh3_64(&old_data))?;
                    apply_bsdiff(self, payload, &old_data, record, &path)?
                }
            };
            let actual = xxh3_64(&content);
            if content.len() as u64 != record.size || actual != record.hash {
                return Err(Error::OutputMismatch {
                    file: output.to_owned(),
                    entry: Some(path),
                    what: format!("rebuilt content has xxh3 {actual:016x}, the patch expects {:016x}", record.hash),
                }
                .into());
            }
            let entry = NewEntry {
                path,
                mode,
                mtime,
                size: record.size,
                xxh3: record.hash,
                content: NewContent::Bytes(content),
            };
            visit(record, entry)?;
        }
        Ok(())
    }
}

fn apply_archive(patch: &Patch, old: &Path, target: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyOutcome> {
    let src = Source::open_archive(old)?;
    let archive = src.archive.as_ref().expect("opened as an archive");
    let header = &patch.header;

    // The base: the old index must be the one the patch was made against.
    if archive.footer().index_hash != header.old_id || src.len != header.old_len {
        if is_result(&src, header)? {
            return Err(Error::AlreadyApplied { file: old.to_owned() });
        }
        for record in &patch.records {
            let Some(index) = record.old_index else { continue };
            let name = record.path.clone().unwrap_or_else(|| format!("#{index}"));
            let Some(entry) = archive.entry(index) else {
                return Err(Error::WrongBase {
                    file: old.to_owned(),
                    entry: Some(name),
                    what: format!("the patch uses old entry #{index} but the archive has {} entries", archive.len()),
                });
            };
            if record.base_hash.is_some_and(|h| h != entry.content_hash()) {
                return Err(Error::WrongBase {
                    file: old.to_owned(),
                    entry: Some(entry.path().to_owned()),
                    what: format!(
                        "content xxh3 {:016x} is not the base's {:016x}",
                        entry.content_hash(),
                        record.base_hash.unwrap_or(0)
                    ),
                });
            }
        }
        return Err(Error::WrongBase {
            file: old.to_owned(),
            entry: None,
            what: format!(
                "its index (xxh3 {:016x}, {} entries) is not the base's (xxh3 {:016x}, {} entries)",
                archive.footer().index_hash,
                archive.len(),
                header.old_id,
                patch.old_count
            ),
        });
    }
    // With the right index, every reference resolves; check anyway (the patch may be forged).
    for record in &patch.records {
        if let Some(index) = record.old_index {
            let entry = archive.entry(index).ok_or_else(|| {
                corrupt(
                    &patch.path,
                    "control stream",
                    record.at,
                    record.path.as_deref(),
                    "old entry index out of range",
                )
            })?;
            if record.base_hash.is_some_and(|h| h != entry.content_hash()) {
                return Err(corrupt(
                    &patch.path,
                    "control stream",
                    record.at,
                    Some(entry.path()),
                    "base hash differs from the old index",
                ));
            }
        }
    }

    let options = WriterOptions { level: patch.level, frame_size_log2: patch.frame_size_log2 };
    let frame_size = options.frame_size() as u64;
    let mut out = AtomicFile::create(target).map_err(|e| Error::io(target, e))?;
    let (len, hash) = {
        let sink = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, out.file()));
        let mut writer = ArchiveWriter::with_name(sink, options, target)?;
        let old_entries = ArchiveOld { src: &src, archive };
        patch.walk_records(&old_entries, target, |record, entry| -> Result<()> {
            let bad = |what: &str| corrupt(&patch.path, "control stream", record.at, Some(&entry.path), what);
            let entry_options = EntryOptions { mode: entry.mode, mtime: entry.mtime, ..EntryOptions::default() };
            match entry.content {
                NewContent::CopyOf(index) => {
                    let base = archive.entry(index).ok_or_else(|| bad("copy without an old entry"))?;
                    if matches!(record.storage, Storage::Verbatim) {
                        let ends = archive.frame_ends(&base);
                        let reader =
                            RangeReader { file: &src.file, at: base.offset(), end: base.offset() + base.stored_size() };
                        writer
                            .add_stored(
                                &entry.path,
                                entry_options,
                                StoredLayout {
                                    size: base.size(),
                                    content_hash: base.content_hash(),
                                    stored_len: base.stored_size(),
                                    frame_ends: &ends,
                                },
                                reader,
                            )
                            .map_err(|e| match e {
                                mf_format::Error::InvalidOption(what) => bad(&what),
                                other => other.into(),
                            })?;
                    } else {
                        let content = src.read_verified(&base)?;
                        let frames = frame_flags(&record.storage, base.size(), frame_size)
                            .ok_or_else(|| bad("storage bitmap does not fit the entry"))?;
                        writer.add_bytes_with_frames(&entry.path, &content, entry_options, &frames)?;
                    }
                }
                NewContent::Bytes(content) => {
                    let frames = frame_flags(&record.storage, entry.size, frame_size)
                        .ok_or_else(|| bad("storage bitmap does not fit the entry"))?;
                    writer.add_bytes_with_frames(&entry.path, &content, entry_options, &frames)?;
                }
            }
            progress(entry.size);
            Ok(())
        })?;
        let mut sink = writer.finish()?;
        sink.flush().map_err(|e| Error::io(target, e))?;
        (sink.len, sink.hasher.digest())
    };
    if header.exact() && (len != header.new_len || hash != header.new_hash) {
        return Err(Error::OutputMismatch {
            file: target.to_owned(),
            entry: None,
            what: format!(
                "the rebuilt archive has {len} bytes, xxh3 {hash:016x}; the patch expects {} bytes, xxh3 {:016x} (a different zstd build?)",
                header.new_len, header.new_hash
            ),
        });
    }
    out.commit().map_err(|e| Error::io(target, e))?;
    Ok(ApplyOutcome { exact: header.exact(), entries: patch.records.len(), len })
}

/// Per-frame compression decisions from a storage descriptor.
fn frame_flags(storage: &Storage, size: u64, frame_size: u64) -> Option<Vec<bool>> {
    let frames = usize::try_from(size.div_ceil(frame_size)).ok()?;
    match storage {
        Storage::None | Storage::Verbatim => Some(vec![false; frames]),
        Storage::AllFrames => Some(vec![true; frames]),
        Storage::Bitmap(bits) => {
            if bits.len() != frames.div_ceil(8) {
                return None;
            }
            Some((0..frames).map(|k| bits[k / 8] & (1 << (k % 8)) != 0).collect())
        }
    }
}

/// `Read` over a byte range of a file, by `pread`.
struct RangeReader<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = ((self.end - self.at) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
