//! Applying patches: check the base, rebuild into a temp file beside the target, verify every
//! rebuilt entry and (for exact patches) the whole file, then fsync and rename (spec/PATCH.md,
//! "Applying"). Old entries are checked beforehand only where their bytes would reach the result
//! unchecked; after a failure all of them are, so a damaged base is the error named.
//!
//! Memory does not grow with entry size: every entry is produced as a stream (old content read by
//! random access, a delta's three streams decoded side by side, zstd blocks of at most 8 MiB with
//! windows of at most 16 MiB) and handed to the archive writer, which compresses a bounded batch of
//! frames at a time on every core.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mf_format::{ArchiveWriter, AtomicFile, Compression, EntryOptions, Mtime, StoredLayout, WriterOptions};
use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::content_id::{content_id, ContentIdBuilder, IdEntry};
use crate::delta::{DeltaReader, OldCursor};
use crate::error::{Error, Result};
use crate::report::{Change, EntryReport, Method, PatchReport};
use crate::source::{RangeReader, Source};
use crate::wire::*;
use crate::zref;

/// A parsed patch: header, settings and records. Blobs stay in the file.
pub struct Patch {
    path: PathBuf,
    file: File,
    header: PatchHeader,
    preamble: ArchivePreamble,
    records: Vec<EntryRecord>,
    plain: Option<PlainRecord>,
}

fn corrupt(path: &Path, section: &'static str, offset: u64, entry: Option<&str>, what: impl Into<String>) -> Error {
    Error::CorruptPatch { file: path.to_owned(), section, offset, entry: entry.map(str::to_owned), what: what.into() }
}

impl Patch {
    /// Opens a patch: checks the header, the whole body's checksum, and parses the control stream,
    /// holding every count to what the remaining bytes and the declared output can hold.
    /// Nothing about the old file is needed.
    pub fn open(path: &Path) -> Result<Patch> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
        if !metadata.is_file() {
            return Err(Error::Unsupported { file: path.to_owned(), what: "not a regular file".into() });
        }
        let file_len = metadata.len();
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
        // The window bound keeps the decoder's buffer small whatever the frame header declares.
        decoder
            .window_log_max(STREAM_WINDOW_LOG_MAX)
            .map_err(|e| corrupt(path, "control stream", 0, None, e.to_string()))?;
        let mut reader = ControlReader::new(decoder.single_frame(), path);
        let mut patch = Patch {
            path: path.to_owned(),
            file: file.try_clone().map_err(|e| Error::io(path, e))?,
            header,
            preamble: ArchivePreamble {
                frame_size_log2: 0,
                level: 0,
                old_entry_count: 0,
                new_entry_count: 0,
                content_ids: None,
            },
            records: Vec::new(),
            plain: None,
        };
        if header.kind == KIND_ARCHIVE {
            patch.preamble = ArchivePreamble::read(&mut reader, &header)?;
            let mut state = RecordState::new(&header, patch.preamble.old_entry_count);
            state.frame_size_log2 = patch.preamble.frame_size_log2;
            for _ in 0..patch.preamble.new_entry_count {
                let record = EntryRecord::read(&mut reader, &mut state)?;
                patch.records.try_reserve(1).map_err(|_| reader.corrupt("too many records to hold in memory"))?;
                patch.records.push(record);
            }
            reader.entry = None;
            if state.blobs.cursor != state.blobs.end {
                return Err(reader.corrupt("blob lengths do not add up to the blob section"));
            }
        } else {
            patch.plain = Some(PlainRecord::read(&mut reader, &header)?);
        }
        reader.expect_end()?;
        Ok(patch)
    }

    /// The checked header (kind, flags, lengths, hashes).
    pub fn header(&self) -> &PatchHeader {
        &self.header
    }

    /// What the patch does, as far as it can be told without the old file: paths of entries copied
    /// under their old name are unknown (`path` is `None`; `old_index` says which old entry).
    pub fn report(&self) -> PatchReport {
        let method = |op: Op| match op {
            Op::Copy => Method::Copy,
            Op::Delta => Method::Bsdiff,
            Op::ZstdRef => Method::ZstdRef,
            Op::Full => Method::Full,
            Op::Frames => Method::Frames,
        };
        let mut entries: Vec<EntryReport> = self
            .records
            .iter()
            .map(|r| {
                let change = match (r.op, r.path.is_some()) {
                    (Op::Copy, false) => Change::Unchanged,
                    (Op::Copy, true) => Change::Renamed,
                    (Op::Full, _) => Change::Added,
                    _ => Change::Changed,
                };
                EntryReport {
                    change,
                    path: r.path.clone(),
                    old_path: None,
                    old_index: r.old_index,
                    size: r.size,
                    old_size: None,
                    method: method(r.op),
                    patch_bytes: r.payload.patch_bytes(),
                }
            })
            .collect();
        if let Some(plain) = &self.plain {
            entries.push(EntryReport {
                change: Change::Changed,
                path: None,
                old_path: None,
                old_index: None,
                size: self.header.new_len,
                old_size: Some(self.header.old_len),
                method: method(plain.op),
                patch_bytes: plain.payload.patch_bytes(),
            });
        }
        if self.header.kind == KIND_ARCHIVE {
            let used: std::collections::HashSet<u32> = self.records.iter().filter_map(|r| r.old_index).collect();
            let removed = (self.preamble.old_entry_count as usize).saturating_sub(used.len());
            // Old entries not used by any record: counted, their paths are only in the old archive.
            for _ in 0..removed {
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

/// How an archive was recognised as a patch's base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseMatch {
    /// Byte for byte the archive the patch was made from (its length and index hash).
    Canonical,
    /// The same entries in the same record order (content id), laid out differently.
    Content,
}

/// How an apply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The output was checked to be byte-identical to the file the patch was made from.
    pub exact: bool,
    /// Entry records applied (1 for a plain patch: the whole file).
    pub entries: usize,
    /// Bytes written: the new file's length.
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
    let record = patch.plain.as_ref().ok_or_else(|| corrupt(&patch.path, "control stream", 0, None, "no operation"))?;
    let name = old.display().to_string();
    let old_side = OldCursor::new(src.len, |start, len| src.read_exact_at(start, len));
    let producer = patch.producer(record.op, &record.payload, header.new_len, old_side, &name)?;
    let mut stream = EntryStream::new(producer, header.new_len, header.new_hash, target, &name);
    let mut out = AtomicFile::create(target).map_err(|e| Error::io(target, e))?;
    let len = {
        let mut writer =
            HashingWriter::with_limit(std::io::BufWriter::with_capacity(1 << 20, out.file()), header.new_len);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stream.read(&mut buf).map_err(|e| stream.take_failure().unwrap_or_else(|| Error::io(target, e)))?;
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n]).map_err(|e| Error::io(target, e))?;
            progress(n as u64);
        }
        writer.flush().map_err(|e| Error::io(target, e))?;
        writer.len
    };
    out.commit().map_err(|e| Error::io(target, e))?;
    Ok(ApplyOutcome { exact: true, entries: 1, len })
}

/// Produces an entry's content a buffer at a time; `Ok(0)` at its end.
trait Produce {
    fn produce(&mut self, buf: &mut [u8]) -> Result<usize>;
}

impl Produce for DeltaReader<'_> {
    fn produce(&mut self, buf: &mut [u8]) -> Result<usize> {
        DeltaReader::produce(self, buf)
    }
}

/// A copy: the old content as it is.
struct CopyProducer<'a> {
    old: OldCursor<'a>,
    at: u64,
}

impl Produce for CopyProducer<'_> {
    fn produce(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.at >= self.old.size() {
            return Ok(0);
        }
        let chunk = self.old.at(self.at)?;
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.at += n as u64;
        Ok(n)
    }
}

/// zstd-ref and full blocks, each decoded whole (at most [`MAX_BLOCK_LEN`] bytes, with a reference
/// window of at most [`MAX_REF_WINDOW`] bytes) and then handed out.
struct BlocksProducer<'a> {
    patch: &'a Patch,
    blocks: &'a [BlockDesc],
    with_window: bool,
    old: OldCursor<'a>,
    name: String,
    next: usize,
    current: Vec<u8>,
    pos: usize,
}

impl Produce for BlocksProducer<'_> {
    fn produce(&mut self, buf: &mut [u8]) -> Result<usize> {
        while self.pos == self.current.len() {
            let Some(block) = self.blocks.get(self.next) else { return Ok(0) };
            self.next += 1;
            self.current = self.decode(block)?;
            self.pos = 0;
        }
        let n = (self.current.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BlocksProducer<'_> {
    fn decode(&mut self, block: &BlockDesc) -> Result<Vec<u8>> {
        let bad = |what: String| corrupt(&self.patch.path, "blobs", block.blob_at, Some(&self.name), what);
        if !self.with_window && block.old_len > 0 {
            return Err(bad("a full block with a reference window".into()));
        }
        if block.old_start.checked_add(block.old_len).is_none_or(|end| end > self.old.size()) {
            return Err(bad("reference window lies outside the old content".into()));
        }
        let prefix = if block.old_len == 0 {
            Vec::new()
        } else {
            self.old.read_exact(block.old_start, block.old_len as usize)?
        };
        let range = RangeReader { file: &self.patch.file, at: block.blob_at, end: block.blob_at + block.blob_len };
        let window = if self.with_window { REF_WINDOW_LOG_MAX } else { STREAM_WINDOW_LOG_MAX };
        zref::decompress_from(&prefix, BufReader::with_capacity(64 << 10, range), block.new_len, window)
            .map_err(|e| bad(format!("zstd block does not decode: {e}")))
    }
}

/// A frames payload (op 4): kept runs copied from the base's content at the same position (or, with
/// `skip_kept`, left out: the in-place applier keeps those frames where they are), rebuilt runs
/// produced by their nested payload against a window of the base and checked against their own
/// xxh3 as soon as each ends.
struct FramesProducer<'a> {
    patch: &'a Patch,
    runs: &'a [FrameRun],
    frame_size: u64,
    size: u64,
    skip_kept: bool,
    old: OldCursor<'a>,
    output: PathBuf,
    name: String,
    next_run: usize,
    next_frame: u64,
    current: RunState<'a>,
}

/// Where a [`FramesProducer`] is within its current run.
enum RunState<'a> {
    /// Between runs.
    Idle,
    /// Copying base bytes `[at, end)`.
    Keep { at: u64, end: u64 },
    /// Producing a rebuilt run of `len` bytes whose xxh3 must be `hash`.
    Patch(Box<RebuiltRun<'a>>),
}

/// A rebuilt run being produced: `len` bytes whose xxh3 must be `hash`.
struct RebuiltRun<'a> {
    producer: Box<dyn Produce + 'a>,
    hasher: Xxh3,
    produced: u64,
    len: u64,
    hash: u64,
    /// First and last frame of the run, for errors.
    frames: (u64, u64),
}

impl<'a> FramesProducer<'a> {
    /// Checks every run against the base before anything is produced: a kept run's frames must
    /// exist in the base with the same lengths as the new ones, a rebuilt run's window must lie
    /// inside the base.
    #[allow(clippy::too_many_arguments)]
    fn new(
        patch: &'a Patch,
        runs: &'a [FrameRun],
        size: u64,
        old: OldCursor<'a>,
        skip_kept: bool,
        output: &Path,
        name: &str,
    ) -> Result<Self> {
        let frame_size = 1u64 << patch.preamble.frame_size_log2;
        let mut first = 0u64;
        for (index, run) in runs.iter().enumerate() {
            let last = first + run.frames - 1;
            let bad = |what: String| Error::WrongBase {
                file: output.to_owned(),
                entry: Some(name.to_owned()),
                what: format!("frame run {index} (frames {first}..={last}): {what}"),
            };
            match &run.patch {
                None => {
                    let (new_len, old_len) =
                        (run_len(last, 1, size, frame_size), run_len(last, 1, old.size(), frame_size));
                    if new_len != old_len {
                        return Err(bad(format!(
                            "keeps frame {last} of the base, which has {old_len} bytes there (the base has {} bytes), not {new_len}",
                            old.size()
                        )));
                    }
                }
                Some(p) if p.old_start.checked_add(p.old_len).is_none_or(|end| end > old.size()) => {
                    return Err(bad(format!("its base window ends past the base's {} bytes", old.size())));
                }
                Some(_) => {}
            }
            first += run.frames;
        }
        Ok(FramesProducer {
            patch,
            runs,
            frame_size,
            size,
            skip_kept,
            old,
            output: output.to_owned(),
            name: name.to_owned(),
            next_run: 0,
            next_frame: 0,
            current: RunState::Idle,
        })
    }

    /// Moves to the next run; false after the last.
    fn start_run(&mut self) -> Result<bool> {
        let Some(run) = self.runs.get(self.next_run) else { return Ok(false) };
        let first = self.next_frame;
        let start = first * self.frame_size;
        let len = run_len(first, run.frames, self.size, self.frame_size);
        self.next_run += 1;
        self.next_frame += run.frames;
        self.current = match &run.patch {
            None if self.skip_kept => RunState::Idle,
            None => RunState::Keep { at: start, end: start + len },
            Some(p) => {
                let window = self.old.window(p.old_start, p.old_len).ok_or_else(|| {
                    corrupt(&self.patch.path, "control stream", 0, Some(&self.name), "run window outside the base")
                })?;
                RunState::Patch(Box::new(RebuiltRun {
                    producer: self.patch.producer(p.op, &p.payload, len, window, &self.name)?,
                    hasher: Xxh3::new(),
                    produced: 0,
                    len,
                    hash: p.hash,
                    frames: (first, first + run.frames - 1),
                }))
            }
        };
        Ok(true)
    }
}

impl Produce for FramesProducer<'_> {
    fn produce(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match &mut self.current {
                RunState::Idle => {
                    if !self.start_run()? {
                        return Ok(0);
                    }
                }
                RunState::Keep { at, end } => {
                    if at == end {
                        self.current = RunState::Idle;
                        continue;
                    }
                    let want = (*end - *at).min(buf.len() as u64) as usize;
                    let chunk = self.old.at(*at)?;
                    let n = chunk.len().min(want);
                    buf[..n].copy_from_slice(&chunk[..n]);
                    *at += n as u64;
                    return Ok(n);
                }
                RunState::Patch(run) => {
                    let RebuiltRun { producer, hasher, produced, len, hash, frames } = &mut **run;
                    let n = producer.produce(buf)?;
                    *produced += n as u64;
                    hasher.update(&buf[..n]);
                    if n > 0 && *produced <= *len {
                        return Ok(n);
                    }
                    let actual = hasher.digest();
                    if *produced != *len || actual != *hash {
                        return Err(Error::OutputMismatch {
                            file: self.output.clone(),
                            entry: Some(self.name.clone()),
                            what: format!(
                                "frames {}..={} rebuilt {} bytes, xxh3 {actual:016x}; the patch expects {len} bytes, xxh3 {hash:016x}",
                                frames.0, frames.1, produced
                            ),
                        });
                    }
                    self.current = RunState::Idle;
                }
            }
        }
    }
}

/// An entry's content as `Read`, checked as it streams: never more than `size` bytes, and at its
/// end exactly `size` bytes with the expected hash. The real error of a failed read is kept for
/// [`EntryStream::take_failure`] (the archive writer only sees an I/O error).
pub(crate) struct EntryStream<'a> {
    producer: Box<dyn Produce + 'a>,
    size: u64,
    hash: u64,
    produced: u64,
    hasher: Xxh3,
    check_hash: bool,
    output: PathBuf,
    name: String,
    failure: Option<Error>,
}

impl<'a> EntryStream<'a> {
    fn new(producer: Box<dyn Produce + 'a>, size: u64, hash: u64, output: &Path, name: &str) -> Self {
        EntryStream {
            producer,
            size,
            hash,
            produced: 0,
            hasher: Xxh3::new(),
            check_hash: true,
            output: output.to_owned(),
            name: name.to_owned(),
            failure: None,
        }
    }

    /// A stream checked for its length only (the in-place applier's kept-frames case, whose
    /// producer checks each rebuilt run's hash itself).
    fn unhashed(producer: Box<dyn Produce + 'a>, size: u64, output: &Path, name: &str) -> Self {
        EntryStream { check_hash: false, ..EntryStream::new(producer, size, 0, output, name) }
    }

    pub(crate) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    fn mismatch(&self, what: String) -> Error {
        Error::OutputMismatch { file: self.output.clone(), entry: Some(self.name.clone()), what }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = self.producer.produce(buf)?;
        self.produced += n as u64;
        if self.produced > self.size {
            return Err(self.mismatch(format!("the rebuilt content grows past its {} bytes", self.size)));
        }
        if n == 0 {
            let actual = self.hasher.digest();
            if self.produced != self.size || (self.check_hash && actual != self.hash) {
                return Err(self.mismatch(format!(
                    "rebuilt content has {} bytes, xxh3 {actual:016x}; the patch expects {} bytes, xxh3 {:016x}",
                    self.produced, self.size, self.hash
                )));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Read for EntryStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.failure.is_some() {
            return Err(std::io::Error::other("the entry failed"));
        }
        self.fill(buf).map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            self.failure = Some(e);
            io
        })
    }
}

impl Patch {
    /// The producer of an `op` payload's content against `old`.
    fn producer<'a>(
        &'a self,
        op: Op,
        payload: &'a PayloadDesc,
        size: u64,
        old: OldCursor<'a>,
        name: &str,
    ) -> Result<Box<dyn Produce + 'a>> {
        Ok(match (op, payload) {
            (Op::Copy, _) => Box::new(CopyProducer { old, at: 0 }),
            (Op::Delta, PayloadDesc::Delta(desc)) => {
                Box::new(DeltaReader::new(&self.file, &self.path, desc, size, old, name)?)
            }
            (Op::ZstdRef | Op::Full, PayloadDesc::Blocks(blocks)) => Box::new(BlocksProducer {
                patch: self,
                blocks,
                with_window: op == Op::ZstdRef,
                old,
                name: name.to_owned(),
                next: 0,
                current: Vec::new(),
                pos: 0,
            }),
            _ => return Err(corrupt(&self.path, "control stream", 0, Some(name), "operation without its payload")),
        })
    }
}

/// An old entry as the old version describes it (its archive index, or a file table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldEntry {
    /// The entry's path in the old version.
    pub path: String,
    /// Content size in bytes (decompressed).
    pub size: u64,
    /// xxh3 of the content, as the archive stores it.
    pub xxh3: u64,
    /// Unix permission bits (0o644 or 0o755 in archives mf writes).
    pub mode: u32,
    /// Modification time, when the old version recorded one.
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
    /// log2 of the frame size the old entries are stored in, when they are stored in frames (an
    /// archive); `None` for content from elsewhere.
    fn frame_size_log2(&self) -> Option<u8> {
        None
    }
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
    /// The entry's path in the new archive.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, when the new archive records one.
    pub mtime: Option<Mtime>,
    /// Content size in bytes (decompressed).
    pub size: u64,
    /// xxh3-64 of the content; the bytes were checked against it.
    pub xxh3: u64,
    /// The content, or which old entry already holds it.
    pub content: NewContent,
}

/// An entry of an archive opened as the old side of a patch.
pub(crate) struct ArchiveOld<'a> {
    pub(crate) src: &'a Source,
    pub(crate) archive: &'a mf_format::Archive,
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

    fn frame_size_log2(&self) -> Option<u8> {
        Some(self.archive.header().frame_size_log2)
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

/// A rebuilt entry as the record walk hands it out: what it is, and its content as a checked stream.
pub(crate) struct WalkedEntry<'s, 'a> {
    pub(crate) meta: NewEntry,
    pub(crate) stream: &'s mut EntryStream<'a>,
}

impl Patch {
    /// True for an archive patch (kind 0), which works entry by entry.
    pub fn is_archive(&self) -> bool {
        self.header.kind == KIND_ARCHIVE
    }

    /// Number of old entries an archive patch expects.
    pub fn old_entry_count(&self) -> u64 {
        self.preamble.old_entry_count
    }

    /// Rebuilds the new entries of an archive patch from `old`, handing each to `visit` in the new
    /// archive's data order. Before the first entry, every old entry the patch uses is checked to
    /// exist, to have the base hash the patch names and to hold content matching its hash; every
    /// rebuilt entry is checked against the patch's size and hash. Memory: one rebuilt entry at a
    /// time (copies are handed out as [`NewContent::CopyOf`], not read). The caller checks that
    /// `old` is the patch's base as a whole (e.g. its index hash against
    /// [`crate::wire::PatchHeader::old_id`]).
    pub fn apply_entries<E: From<Error>>(
        &self,
        old: &dyn OldEntries,
        mut visit: impl FnMut(NewEntry) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        self.walk_records(old, &self.path, Verify::EveryBase, &[], |_, walked| {
            let WalkedEntry { mut meta, stream } = walked;
            if !matches!(meta.content, NewContent::CopyOf(_)) {
                let mut content = Vec::new();
                let size = usize::try_from(meta.size).map_err(|_| too_large(&self.path, &meta.path))?;
                content.try_reserve_exact(size).map_err(|_| too_large(&self.path, &meta.path))?;
                stream
                    .read_to_end(&mut content)
                    .map_err(|e| stream.take_failure().unwrap_or_else(|| Error::io(&self.path, e)))?;
                meta.content = NewContent::Bytes(content);
            }
            visit(meta)
        })
    }

    /// The checked stream of a record's content (`expected`: its size and xxh3). With `skip_kept`, a
    /// frames record streams only its rebuilt runs, each checked against its own hash (the in-place
    /// applier keeps the other frames where they are; spec/PATCH.md "Applying in place").
    #[allow(clippy::too_many_arguments)]
    fn entry_stream<'a>(
        &'a self,
        record: &'a EntryRecord,
        expected: (u64, u64),
        old_side: OldCursor<'a>,
        old: &dyn OldEntries,
        skip_kept: bool,
        output: &Path,
        path: &str,
    ) -> Result<EntryStream<'a>> {
        let (size, xxh3) = expected;
        let PayloadDesc::Frames(runs) = &record.payload else {
            let producer = self.producer(record.op, &record.payload, size, old_side, path)?;
            return Ok(EntryStream::new(producer, size, xxh3, output, path));
        };
        self.check_frame_size(old, path)?;
        let producer = Box::new(FramesProducer::new(self, runs, size, old_side, skip_kept, output, path)?);
        Ok(if skip_kept {
            let patched = patched_bytes(runs, size, 1u64 << self.preamble.frame_size_log2);
            EntryStream::unhashed(producer, patched, output, path)
        } else {
            EntryStream::new(producer, size, xxh3, output, path)
        })
    }

    /// A frames record keeps the base's frames by index: an archive base must be cut in frames of
    /// the patch's frame size (content from elsewhere, such as installed files, is cut by position).
    fn check_frame_size(&self, old: &dyn OldEntries, path: &str) -> Result<()> {
        match old.frame_size_log2() {
            Some(log2) if log2 != self.preamble.frame_size_log2 => Err(Error::WrongBase {
                file: old.name().to_owned(),
                entry: Some(path.to_owned()),
                what: format!(
                    "the patch keeps frames of 2^{} bytes but the archive's frames have 2^{log2} bytes",
                    self.preamble.frame_size_log2
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Checks that `old` holds every base the records name, with the base hashes they name.
    fn check_bases(&self, old: &dyn OldEntries) -> Result<()> {
        if old.count() != self.preamble.old_entry_count {
            return Err(Error::WrongBase {
                file: old.name().to_owned(),
                entry: None,
                what: format!("it has {} entries; the patch's base has {}", old.count(), self.preamble.old_entry_count),
            });
        }
        for record in &self.records {
            let Some(index) = record.old_index else { continue };
            let entry = old.entry(index).ok_or_else(|| missing_old_entry(old.name(), index, old.count()))?;
            if let Some(expected) = record.base_hash.filter(|&h| h != entry.xxh3) {
                return Err(Error::WrongBase {
                    file: old.name().to_owned(),
                    entry: Some(entry.path),
                    what: format!("content xxh3 {:016x} is not the base's {expected:016x}", entry.xxh3),
                });
            }
        }
        Ok(())
    }

    /// The record walk shared by [`Patch::apply_entries`] and archive apply: base checks, then each
    /// record's entry with its record (for the archive writer's storage decisions). Copies count
    /// towards the declared output like every other record: their content may not pass what a new
    /// archive of `new_len` bytes can hold.
    pub(crate) fn walk_records<E: From<Error>>(
        &self,
        old: &dyn OldEntries,
        output: &Path,
        verify: Verify,
        skip_kept: &[bool],
        mut visit: impl FnMut(&EntryRecord, WalkedEntry<'_, '_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if !self.is_archive() {
            return Err(Error::Unsupported {
                file: self.path.clone(),
                what: "a plain patch has no entries to apply one by one".into(),
            }
            .into());
        }
        self.check_bases(old)?;
        // The old entries `verify` names are checked against their content hash before anything is built.
        self.verify_bases(old, verify)?;

        let content_limit = self.header.new_len.saturating_mul(1 << 16);
        let (mut content_total, mut raw_total) = (0u64, 0u64);
        // Parsing refused explicit paths named twice and bases copied twice under their own path;
        // an explicit path equal to a base's path is only known here.
        let mut paths = std::collections::HashSet::new();
        let mut new_id = ContentIdBuilder::default();
        for (position, record) in self.records.iter().enumerate() {
            let base = record.old_index.and_then(|i| old.entry(i).map(|e| (i, e)));
            let path = match (&record.path, &base) {
                (Some(p), _) => p.clone(),
                (None, Some((_, b))) => b.path.clone(),
                (None, None) => {
                    return Err(corrupt(&self.path, "control stream", record.at, None, "entry without a path").into())
                }
            };
            let bad = |what: &str| corrupt(&self.path, "control stream", record.at, Some(&path), what);
            if !paths.insert(path.clone()) {
                return Err(bad("the new archive would hold this path twice").into());
            }
            let mode = record.mode.or(base.as_ref().map(|(_, b)| b.mode)).unwrap_or(0o644);
            let mtime = match record.mtime {
                Some((secs, nanos)) => (secs != 0 || nanos != 0).then_some(Mtime { secs, nanos }),
                None => base.as_ref().and_then(|(_, b)| b.mtime),
            };
            let (size, xxh3, content) = match (record.op, &base) {
                (Op::Copy, Some((index, b))) => (b.size, b.xxh3, NewContent::CopyOf(*index)),
                (Op::Copy, None) => return Err(bad("copy without an old entry").into()),
                (Op::Full, _) => (record.size, record.hash, NewContent::Bytes(Vec::new())),
                (_, None) => return Err(bad("a delta without an old entry").into()),
                (_, Some(_)) => (record.size, record.hash, NewContent::Bytes(Vec::new())),
            };
            content_total = content_total.saturating_add(size);
            if record.storage == Storage::None {
                raw_total = raw_total.saturating_add(size);
            }
            if content_total > content_limit || raw_total > self.header.new_len {
                return Err(bad("the entries so far hold more than the declared output can").into());
            }
            let old_side = match &base {
                Some((index, b)) => {
                    let index = *index;
                    OldCursor::new(b.size, move |start, len| old.read_range(index, start, len))
                }
                None => OldCursor::new(0, |_, _| Ok(Vec::new())),
            };
            let skip = skip_kept.get(position).copied().unwrap_or(false);
            let mut stream = self.entry_stream(record, (size, xxh3), old_side, old, skip, output, &path)?;
            let (mtime_secs, mtime_nanos) = mtime.map_or((0, 0), |m| (m.secs, m.nanos));
            new_id.push(IdEntry { path: &path, size, content_hash: xxh3, mode, mtime_secs, mtime_nanos });
            let meta = NewEntry { path, mode, mtime, size, xxh3, content };
            visit(record, WalkedEntry { meta, stream: &mut stream })?;
        }
        // 2.2: the entry list rebuilt (paths, sizes, hashes, modes, mtimes, in order) is the new one.
        if let Some(ids) = self.preamble.content_ids {
            let rebuilt = new_id.finish();
            if rebuilt != ids.new {
                return Err(Error::OutputMismatch {
                    file: output.to_owned(),
                    entry: None,
                    what: format!(
                        "the rebuilt entry list has content id {rebuilt:016x}; the patch expects {:016x}",
                        ids.new
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Checks the old entries `verify` selects against their content hashes, on every core; the
    /// error is the first damaged entry's in old data order, whatever the thread count.
    pub(crate) fn verify_bases(&self, old: &dyn OldEntries, verify: Verify) -> Result<()> {
        let mut used: Vec<u32> = self.records.iter().filter(|r| verify.checks(r)).filter_map(|r| r.old_index).collect();
        used.sort_unstable();
        used.dedup();
        let results: Vec<Result<()>> = used.par_iter().map(|&i| old.verify(i)).collect();
        results.into_iter().collect()
    }

    /// Whether `archive` (the file `src`) is this archive patch's base: byte-identical to it (its
    /// length and index hash, as 2.0 and 2.1 patches check) or, for 2.2 patches, the same entries
    /// in the same record order whatever the layout (its content id). Otherwise the most specific
    /// reason, or [`Error::AlreadyApplied`].
    pub(crate) fn check_archive_base(
        &self,
        src: &Source,
        archive: &mf_format::Archive,
        old: &Path,
    ) -> Result<BaseMatch> {
        if archive.footer().index_hash == self.header.old_id && src.len == self.header.old_len {
            return Ok(BaseMatch::Canonical);
        }
        if let Some(ids) = self.preamble.content_ids {
            let id = content_id(archive);
            if id == ids.old && archive.len() as u64 == self.preamble.old_entry_count {
                return Ok(BaseMatch::Content);
            }
            if id == ids.new {
                return Err(Error::AlreadyApplied { file: old.to_owned() });
            }
        }
        Err(wrong_base(self, src, archive, old))
    }

    /// The records, in the new archive's record order.
    pub(crate) fn records(&self) -> &[EntryRecord] {
        &self.records
    }

    /// The patch file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// log2 of the new archive's frame size (archive patches).
    pub(crate) fn frame_size_log2(&self) -> u8 {
        self.preamble.frame_size_log2
    }

    /// The content ids of a 2.2 archive patch.
    pub fn content_ids(&self) -> Option<ContentIds> {
        self.preamble.content_ids
    }
}

fn too_large(patch: &Path, entry: &str) -> Error {
    Error::Unsupported { file: patch.to_owned(), what: format!("entry '{entry}' is too large to hold in memory") }
}

/// When the old archive is not the patch's base: the most specific reason that can be given.
fn wrong_base(patch: &Patch, src: &Source, archive: &mf_format::Archive, old: &Path) -> Error {
    let header = &patch.header;
    match is_result(src, header) {
        Ok(true) => return Error::AlreadyApplied { file: old.to_owned() },
        Ok(false) => {}
        Err(e) => return e,
    }
    for record in &patch.records {
        let Some(index) = record.old_index else { continue };
        let name = record.path.clone().unwrap_or_else(|| format!("#{index}"));
        let Some(entry) = archive.entry(index) else {
            return Error::WrongBase {
                file: old.to_owned(),
                entry: Some(name),
                what: format!("the patch uses old entry #{index} but the archive has {} entries", archive.len()),
            };
        };
        if let Some(expected) = record.base_hash.filter(|&h| h != entry.content_hash()) {
            return Error::WrongBase {
                file: old.to_owned(),
                entry: Some(entry.path().to_owned()),
                what: format!("content xxh3 {:016x} is not the base's {expected:016x}", entry.content_hash()),
            };
        }
    }
    Error::WrongBase {
        file: old.to_owned(),
        entry: None,
        what: format!(
            "its index (xxh3 {:016x}, {} entries) is not the base's (xxh3 {:016x}, {} entries)",
            archive.footer().index_hash,
            archive.len(),
            header.old_id,
            patch.preamble.old_entry_count
        ),
    }
}

fn apply_archive(patch: &Patch, old: &Path, target: &Path, progress: &(dyn Fn(u64) + Sync)) -> Result<ApplyOutcome> {
    let src = Source::open_archive(old)?;
    let archive = src.archive.as_ref().expect("opened as an archive");
    let header = &patch.header;
    // The base: the old archive itself, or (2.2) any archive with its entries in its record order.
    patch.check_archive_base(&src, archive, old)?;

    let mut out = AtomicFile::create(target).map_err(|e| Error::io(target, e))?;
    let old_entries = ArchiveOld { src: &src, archive };
    // Checking every base before the rebuild would decode the whole old archive; instead each byte
    // of the result is bound by its entry's hash as it streams or, for an exact patch, by the final
    // check against `new_hash` (verbatim copies are not hashed on the way). Only if the rebuild
    // fails are the bases checked, so a damaged old entry is still the error named.
    let verify = if header.exact() { Verify::Nothing } else { Verify::VerbatimCopies };
    let rebuilt = rebuild_archive(patch, &old_entries, verify, &mut out, target, progress);
    if let Err(err) = rebuilt {
        if !matches!(err, Error::WrongBase { .. }) {
            patch.verify_bases(&old_entries, Verify::EveryBase)?;
        }
        return Err(err);
    }
    let len = rebuilt?;
    out.commit().map_err(|e| Error::io(target, e))?;
    Ok(ApplyOutcome { exact: header.exact(), entries: patch.records.len(), len })
}

/// Writes the archive `patch` rebuilds from `old_entries` into `out`, checking first the bases
/// `verify` names and last, for an exact patch, the whole result; its length.
fn rebuild_archive(
    patch: &Patch,
    old_entries: &ArchiveOld<'_>,
    verify: Verify,
    out: &mut AtomicFile,
    target: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let (src, archive) = (old_entries.src, old_entries.archive);
    let header = &patch.header;
    let options =
        WriterOptions { level: i32::from(patch.preamble.level), frame_size_log2: patch.preamble.frame_size_log2 };
    let frame_size = options.frame_size() as u64;
    // An exact patch declares its output's length: writing past it fails at once.
    let limit = if header.exact() { header.new_len } else { u64::MAX };
    let (len, hash) = {
        let sink = HashingWriter::with_limit(std::io::BufWriter::with_capacity(1 << 20, out.file()), limit);
        let mut writer = ArchiveWriter::with_name(sink, options, target)?;
        // Shared data is rebuilt only where the patch says so (storage "same as"), never by chance.
        writer.set_deduplicate(false);
        let mut added: Vec<(String, u64, u64)> = Vec::new();
        patch.walk_records(old_entries, target, verify, &[], |record, walked| -> Result<()> {
            let WalkedEntry { meta, stream } = walked;
            let bad = |what: &str| corrupt(&patch.path, "control stream", record.at, Some(&meta.path), what);
            let entry_options = EntryOptions { mode: meta.mode, mtime: meta.mtime, ..EntryOptions::default() };
            let result = match (&meta.content, &record.storage) {
                (NewContent::CopyOf(index), Storage::Verbatim) => {
                    let base = archive.entry(*index).ok_or_else(|| bad("copy without an old entry"))?;
                    let ends = archive.frame_ends(&base);
                    let reader = stored_reader(&src.file, archive, &base);
                    let layout = StoredLayout {
                        size: base.size(),
                        content_hash: base.content_hash(),
                        stored_len: base.stored_size(),
                        frame_ends: &ends,
                        x86_filter: base.has_x86_filter(),
                    };
                    writer.add_stored(&meta.path, entry_options, layout, reader).map_err(|e| match e {
                        mf_format::Error::InvalidOption(what) => bad(&what),
                        other => other.into(),
                    })
                }
                (_, Storage::SameAs(distance)) => {
                    let owner = (added.len() as u64).checked_sub(*distance).map(|i| &added[i as usize]);
                    let (owner_path, owner_size, owner_hash) =
                        owner.ok_or_else(|| bad("shares the data of a record before the first"))?;
                    if (*owner_size, *owner_hash) != (meta.size, meta.xxh3) {
                        return Err(bad(&format!("shares the data of '{owner_path}', whose content differs")));
                    }
                    // The content still streams through its checks (size and hash) before it is shared.
                    std::io::copy(&mut *stream, &mut std::io::sink()).map_err(|e| Error::io(target, e))?;
                    writer.add_duplicate(&meta.path, entry_options, owner_path).map_err(Error::from)
                }
                (_, Storage::Solid) => {
                    let solid = EntryOptions { compression: Compression::Solid, ..entry_options };
                    writer.add_reader(&meta.path, &mut *stream, solid).map_err(Error::from)
                }
                (_, storage) => {
                    let frames = storage
                        .frame_flags(meta.size, frame_size)
                        .ok_or_else(|| bad("storage bitmap does not fit the entry"))?;
                    let copier = FrameCopier::new(patch, record, src, archive);
                    let copy = |k: usize, chunk: &[u8]| copier.as_ref().and_then(|c| c.copy(k, chunk));
                    writer
                        .add_reader_with_frames_copying(&meta.path, &mut *stream, entry_options, &frames, &copy)
                        .map_err(Error::from)
                }
            };
            result.map_err(|e| stream.take_failure().unwrap_or(e)).map_err(|e| over_limit(e, target))?;
            added.push((meta.path.clone(), meta.size, meta.xxh3));
            progress(meta.size);
            Ok(())
        })?;
        let mut sink = writer.finish().map_err(|e| over_limit(e.into(), target))?;
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
    Ok(len)
}

/// The kept frames of a frames record whose compressed bytes the rebuild copies from the base
/// instead of compressing them again: frame `k` of the base when the record keeps it, the base
/// stores it compressed at the patch's level in a run of its own, and its zstd frame decodes to
/// exactly the bytes the writer would compress (checked here, so a base changed meanwhile is never
/// copied blindly; the writer gives the x86-filtered chunk for a filtered entry, so a frame of a
/// base entry under the other filter decision does not match).
struct FrameCopier<'a> {
    file: &'a File,
    keep: Vec<bool>,
    /// (offset, stored length, length) of the base's frames, in content order.
    frames: Vec<(u64, u32, u32)>,
}

impl<'a> FrameCopier<'a> {
    fn new(patch: &Patch, record: &EntryRecord, src: &'a Source, archive: &mf_format::Archive) -> Option<Self> {
        let PayloadDesc::Frames(runs) = &record.payload else { return None };
        let base = archive.entry(record.old_index?)?;
        let own = base.stored_as() == mf_format::StoredAs::Zstd && !base.is_solid() && archive.entry_skip(&base) == 0;
        if !own
            || base.level() != patch.preamble.level
            || archive.header().frame_size_log2 != patch.preamble.frame_size_log2
        {
            return None;
        }
        let frames = archive
            .entry_frames(&base)
            .map(|f| archive.frames()[f as usize])
            .map(|f| (f.offset, f.stored_len, f.len))
            .collect();
        let keep = runs.iter().flat_map(|r| std::iter::repeat_n(r.patch.is_none(), r.frames as usize)).collect();
        Some(FrameCopier { file: &src.file, keep, frames })
    }

    /// `chunk`: what the writer would compress for frame `k` (see [`mf_format::writer::FrameCopy`]).
    fn copy(&self, k: usize, chunk: &[u8]) -> Option<Vec<u8>> {
        let &(offset, stored, len) = self.frames.get(k).filter(|_| self.keep.get(k) == Some(&true))?;
        if stored == len || len as usize != chunk.len() {
            return None;
        }
        let mut bytes = vec![0u8; stored as usize];
        self.file.read_exact_at(&mut bytes, offset).ok()?;
        let decoded = zstd::bulk::decompress(&bytes, chunk.len()).ok()?;
        (decoded == chunk).then_some(bytes)
    }
}

/// The stored bytes of `entry` as one stream: its raw extent, or its frames one after another
/// wherever they lie (an archive edited in place need not keep an entry's frames back to back).
fn stored_reader<'a>(file: &'a File, archive: &mf_format::Archive, entry: &mf_format::Entry<'_>) -> Box<dyn Read + 'a> {
    if entry.stored_as() == mf_format::StoredAs::Raw || archive.frames_contiguous(entry) {
        return Box::new(RangeReader { file, at: entry.offset(), end: entry.offset() + entry.stored_size() });
    }
    let extents: Vec<(u64, u64)> = archive
        .entry_frames(entry)
        .map(|f| archive.frames()[f as usize])
        .map(|frame| (frame.offset, frame.offset + u64::from(frame.stored_len)))
        .collect();
    Box::new(ExtentsReader { file, extents, next: 0, current: None })
}

/// Byte ranges of a file read one after another.
struct ExtentsReader<'a> {
    file: &'a File,
    extents: Vec<(u64, u64)>,
    next: usize,
    current: Option<RangeReader<'a>>,
}

impl Read for ExtentsReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(range) = &mut self.current {
                let n = range.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
            }
            let Some(&(at, end)) = self.extents.get(self.next) else { return Ok(0) };
            self.next += 1;
            self.current = Some(RangeReader { file: self.file, at, end });
        }
    }
}

/// Which old entries the record walk checks against their content hash before building anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Every base any record uses (entries handed to a caller, who may keep copies as they are).
    EveryBase,
    /// Only the bases an in-place apply reads: every base but those of copies left where they are
    /// (under their base's path, mode and mtime), which it neither reads nor writes.
    ReadBases,
    /// Only the bases whose bytes a rebuild takes into its result without hashing them: the stored
    /// bytes of verbatim copies. Every other record streams through its entry's hash check.
    VerbatimCopies,
    /// None: a rebuild of an `EXACT` patch, whose every byte is bound by its entry's hash check or
    /// by the final check of the whole result against `new_hash`.
    Nothing,
}

impl Verify {
    /// Whether the base of `record` is checked before the walk.
    fn checks(self, record: &EntryRecord) -> bool {
        match self {
            Verify::EveryBase => true,
            Verify::ReadBases => !(record.is_copy_in_place() || record.op == Op::Frames),
            Verify::VerbatimCopies => record.op == Op::Copy && record.storage == Storage::Verbatim,
            Verify::Nothing => false,
        }
    }
}

/// The writer's error when the output passed the declared length, said as what it is.
fn over_limit(err: Error, target: &Path) -> Error {
    let text = err.to_string();
    if text.contains(OVER_LIMIT) {
        return Error::OutputMismatch { file: target.to_owned(), entry: None, what: OVER_LIMIT.into() };
    }
    err
}
