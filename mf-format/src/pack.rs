//! Packing many files from disk: small files are read and compressed in parallel, a bounded batch at
//! a time, large files stream frame by frame; everything is written in the order given, so the
//! archive does not depend on the thread count. While one batch of small files is written, the next
//! one is already being read and compressed, so the writes overlap with compression.
//!
//! Packing directories ([`collect_inputs`], [`pack_to_file`]) follows one set of rules, so a folder
//! packs to the same bytes whoever packs it: entries ordered for compression (or by path when asked),
//! excludes, store-extensions, modes normalised, mtimes only when asked, symlinks leaving the input
//! refused.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use crate::access_order::{order_by_trace, read_trace, TraceOrder};
use crate::error::{Error, Result};
use crate::path::entry_path_from_fs;
use crate::reuse::ReuseSource;
use crate::writer::{
    prepare_entry_keyed, ArchiveWriter, Compression, EntryOptions, PreparedEntry, ReuseReport, WriterOptions,
};

/// One file to pack.
#[derive(Debug, Clone)]
pub struct PackInput {
    /// Path inside the archive.
    pub entry_path: String,
    /// Where to read it.
    pub fs_path: PathBuf,
    /// Size seen when the file was listed; only used to plan batches.
    pub size_hint: u64,
    /// Compression, mode and mtime of the entry.
    pub options: EntryOptions,
}

/// Files up to this size are compressed whole in parallel batches; larger ones are streamed.
pub(crate) const SMALL_FILE_LIMIT: u64 = 4 << 20;
/// Bytes of small files read into memory at once. Two batches are in memory at a time (one being
/// written, the next being compressed).
const BATCH_BYTES: u64 = 48 << 20;
const BATCH_FILES: usize = 4096;

/// A batch of small files, compressed, waiting to be written in order.
struct ReadyBatch<'a> {
    inputs: &'a [PackInput],
    prepared: Vec<Result<PreparedEntry>>,
}

/// Adds `inputs` in order; `progress` is called after each entry with its size.
pub fn pack_inputs<W: Write>(
    writer: &mut ArchiveWriter<W>,
    inputs: &[PackInput],
    mut progress: impl FnMut(&PackInput, u64),
) -> Result<()> {
    let options = *writer.options();
    let reuse = writer.reuse().cloned();
    let shared = shared_sizes(inputs);
    let pool = BufferPool::default();
    let context = PrepareContext { options: &options, reuse: reuse.as_deref(), shared: &shared, pool: &pool };
    let mut rest = inputs;
    let mut ready: Option<ReadyBatch<'_>> = None;
    // Each step writes the batch prepared in the step before, then streams the large files that
    // follow it, while the rayon pool reads and compresses the next batch of small files. (A scope
    // of the current pool, so `--threads` and custom pools are honoured.)
    loop {
        let large = rest.iter().take_while(|input| input.size_hint > SMALL_FILE_LIMIT).count();
        let (large_files, after) = rest.split_at(large);
        let (batch, remaining) = after.split_at(small_batch_len(after));
        if ready.is_none() && large_files.is_empty() && batch.is_empty() {
            return Ok(());
        }
        let previous = ready.take();
        let mut prepared = Vec::new();
        rayon::in_place_scope(|scope| {
            if !batch.is_empty() {
                scope.spawn(|_| prepared = prepare_batch(batch, &context));
            }
            write_batch(writer, previous, &pool, &mut progress)?;
            for input in large_files {
                let keyed = shared.contains(&input.size_hint);
                writer.add_file_keyed(&input.entry_path, &input.fs_path, input.options, keyed)?;
                progress(input, input.size_hint);
            }
            Ok::<_, Error>(())
        })?;
        ready = (!batch.is_empty()).then_some(ReadyBatch { inputs: batch, prepared });
        rest = remaining;
    }
}

/// Sizes that more than one input has (when listed). Content of any other size can equal no other
/// entry's, so it needs no deduplication key: SHA-256 of every input was the largest single cost
/// of an incremental pack. (A file whose size changed after listing is keyed whatever its size.)
fn shared_sizes(inputs: &[PackInput]) -> HashSet<u64> {
    let mut seen = HashSet::with_capacity(inputs.len());
    inputs.iter().map(|input| input.size_hint).filter(|&size| !seen.insert(size)).collect()
}

/// What preparing a small file needs besides the file.
struct PrepareContext<'a> {
    options: &'a WriterOptions,
    reuse: Option<&'a ReuseSource>,
    shared: &'a HashSet<u64>,
    pool: &'a BufferPool,
}

/// Files from this size on are read into pooled buffers (smaller ones come from the allocator's
/// heap, which reuses its memory anyway).
const POOLED_MIN: u64 = 128 << 10;
/// Capacity the pool keeps at most: about what two batches in flight need.
const POOL_BYTES: usize = 2 * BATCH_BYTES as usize;

/// Read buffers of small files, handed back once their entry is written. Reading every file into a
/// fresh allocation made the kernel map and zero new pages for each (a tenth of an incremental
/// pack's time). Capacities are powers of two, so a buffer is at most twice its file and memory
/// stays bounded by the batch sizes; when the pool is full the oldest buffers go first, so a run of
/// files of another size (inputs are ordered by kind) does not find it full of useless ones.
#[derive(Default)]
struct BufferPool {
    /// Free buffers, oldest first, and the sum of their capacities.
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl BufferPool {
    /// An empty buffer for a file of `size` bytes: a pooled one of its capacity class, or a new one.
    fn take(&self, size: u64) -> Vec<u8> {
        if size < POOLED_MIN {
            return Vec::new();
        }
        let class = size.next_power_of_two() as usize;
        let mut guard = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (free, total) = &mut *guard;
        match free.iter().rposition(|buffer| buffer.capacity() == class) {
            Some(at) => {
                *total -= class;
                free.remove(at)
            }
            None => Vec::with_capacity(class),
        }
    }

    /// Keeps `buffer` for a later file (unless it is not of a pooled class), dropping the oldest
    /// buffers beyond [`POOL_BYTES`].
    fn put(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if (capacity as u64) < POOLED_MIN || !capacity.is_power_of_two() || capacity > POOL_BYTES {
            return;
        }
        buffer.clear();
        let mut guard = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (free, total) = &mut *guard;
        let excess = (*total + capacity).saturating_sub(POOL_BYTES);
        let mut dropped = 0;
        let oldest = free.iter().take_while(|old| {
            let drop_it = dropped < excess;
            dropped += old.capacity();
            drop_it
        });
        let oldest = oldest.count();
        *total -= free.drain(..oldest).map(|old| old.capacity()).sum::<usize>();
        *total += capacity;
        free.push(buffer);
    }
}

/// How many of the leading small files of `rest` form the next batch (at least one when `rest`
/// starts with a small file).
fn small_batch_len(rest: &[PackInput]) -> usize {
    let mut bytes = 0;
    rest.iter()
        .take(BATCH_FILES)
        .take_while(|input| {
            let fits = input.size_hint <= SMALL_FILE_LIMIT && bytes < BATCH_BYTES;
            bytes += input.size_hint;
            fits
        })
        .count()
}

fn prepare_batch(batch: &[PackInput], context: &PrepareContext<'_>) -> Vec<Result<PreparedEntry>> {
    batch
        .par_iter()
        .map(|input| {
            let mut data = context.pool.take(input.size_hint);
            let read = File::open(&input.fs_path).and_then(|mut file| file.read_to_end(&mut data));
            read.map_err(|e| Error::io(&input.fs_path, e))?;
            let size = data.len() as u64;
            let keyed = size != input.size_hint || context.shared.contains(&size);
            let PrepareContext { options, reuse, .. } = *context;
            prepare_entry_keyed(input.entry_path.clone(), data, input.options, options, reuse, keyed)
        })
        .collect()
}

fn write_batch<W: Write>(
    writer: &mut ArchiveWriter<W>,
    batch: Option<ReadyBatch<'_>>,
    pool: &BufferPool,
    progress: &mut impl FnMut(&PackInput, u64),
) -> Result<()> {
    let Some(batch) = batch else { return Ok(()) };
    for (input, entry) in batch.inputs.iter().zip(batch.prepared) {
        let entry = entry?;
        let size = entry.size();
        pool.put(writer.add_prepared_returning(entry)?);
        progress(input, size);
    }
    Ok(())
}

/// The order in which collected files are added (their data order; lookup is by path either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackOrder {
    /// Similar files together, so solid blocks compress across them: by kind (extension, ASCII
    /// case-folded), then file name, then path, all byte-wise ([`order_for_compression`]).
    #[default]
    Kind,
    /// Byte order of the entry paths.
    Path,
}

/// Sorts inputs by kind (extension), then file name, then path: deterministic, and it puts files
/// that share vocabulary (same format, same name in sibling directories) next to each other.
pub fn order_for_compression(inputs: &mut [PackInput]) {
    inputs.sort_by(|a, b| compression_order_key(&a.entry_path).cmp(&compression_order_key(&b.entry_path)));
}

/// The sort key of [`order_for_compression`]: extension (ASCII case-folded), file name, path.
pub(crate) fn compression_order_key(path: &str) -> (String, &str, &str) {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    };
    (extension, name, path)
}

/// The rules `mf pack` applies when it turns directories into an archive, so every packer of a
/// folder (the CLI, a publisher) produces the same bytes from the same folder.
#[derive(Debug, Clone, Default)]
pub struct DirPackOptions {
    /// The order entries are added in.
    pub order: PackOrder,
    /// zstd level and frame size.
    pub writer: WriterOptions,
    /// Extensions (without the dot, any case) stored uncompressed, besides what `Compression::Auto`
    /// already stores.
    pub store_extensions: Vec<String>,
    /// Globs matched against entry paths; a pattern without `/` also matches a name at any depth,
    /// as in `.gitignore`. A matching directory is skipped whole.
    pub excludes: Vec<String>,
    /// Pack exactly the files listed here (one path per line, relative to the single input
    /// directory) instead of walking it. The list must be a regular file of at most 256 MiB.
    pub files_from: Option<PathBuf>,
    /// Record modification times (off by default so archives are reproducible).
    pub keep_mtime: bool,
    /// Follow symlinks that lead outside their input directory (packing their targets). Without it
    /// such a link is an error; links that stay inside are followed either way.
    pub follow_symlinks: bool,
    /// An access trace (one JSON string per line, as `mf mount --record-trace` writes): the files
    /// it names come first, in its order, then the rest in [`order`](Self::order)
    /// ([`crate::access_order`]). At most [`crate::access_order::MAX_TRACE_BYTES`].
    pub order_from: Option<PathBuf>,
}

/// Largest `files_from` list accepted.
pub const MAX_LIST_BYTES: u64 = 256 << 20;

/// Why directories could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// An exclude pattern is not a valid glob.
    #[error("bad exclude pattern {pattern:?}: {message}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// The glob parser's complaint.
        message: String,
    },
    /// Two input directories hold the same entry path.
    #[error("'{entry}' comes from two inputs: {} and another directory", first.display())]
    TwoInputs {
        /// The entry path found twice.
        entry: String,
        /// Where it was found first.
        first: PathBuf,
    },
    /// A file list names paths relative to one directory.
    #[error("a file list takes exactly one DIR (its paths are relative to it)")]
    ListNeedsOneDir,
    /// An input that must be a directory is not.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The input that is not a directory.
        path: PathBuf,
    },
    /// The file list is larger than [`MAX_LIST_BYTES`].
    #[error("{}: a file list of more than {MAX_LIST_BYTES} bytes is refused", path.display())]
    ListTooLarge {
        /// The file list.
        path: PathBuf,
    },
    /// A symlink inside an input directory leads outside it.
    #[error(
        "{}: symlink to {}, outside {}: refusing to pack it (follow symlinks explicitly to pack their targets)",
        link.display(), target.display(), root.display()
    )]
    SymlinkOutside {
        /// The symlink.
        link: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The input directory it leaves.
        root: PathBuf,
    },
    /// An input that must be a regular file is not.
    #[error("{place}: {} is not a regular file", path.display())]
    NotRegular {
        /// Where the path came from (list file and line, or the walk).
        place: String,
        /// The path that is not a regular file.
        path: PathBuf,
    },
    /// An access trace line is not a JSON string (or the trace is too large or not text).
    #[error("{place}: {message}")]
    BadTrace {
        /// The trace file and line (line 0: the whole file).
        place: String,
        /// What is wrong.
        message: String,
    },
    /// A path cannot be an entry path.
    #[error("{place}: {error}")]
    BadPath {
        /// Where the path came from (list file and line, or the file).
        place: String,
        /// Why it cannot be an entry path.
        error: Error,
    },
    /// A file-system operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// Writing the archive failed.
    #[error(transparent)]
    Format(#[from] Error),
}

/// The files to pack, in the order they are to be added.
#[derive(Debug, Default)]
pub struct Collected {
    /// What to pack.
    pub inputs: Vec<PackInput>,
    /// Things in the input directories that are not regular files (FIFOs, sockets, devices), left out.
    pub skipped: Vec<PathBuf>,
    /// What the access trace did to the order, when one was given.
    pub trace: Option<TraceOrder>,
}

/// Collects the files of `dirs` (merged; an entry path may come from one only) by the rules of
/// `options`, leaving out `output` itself if it lies inside an input.
pub fn collect_inputs(
    dirs: &[PathBuf],
    output: Option<&Path>,
    options: &DirPackOptions,
) -> Result<Collected, PackError> {
    // Read first: a bad trace fails before the directories are walked.
    let trace = options.order_from.as_deref().map(read_trace).transpose()?;
    let mut collector = Collector {
        excludes: build_globs(&options.excludes)?,
        store: options.store_extensions.iter().map(|e| e.trim_start_matches('.').to_ascii_lowercase()).collect(),
        output: output.map(absolute),
        options,
        found: BTreeMap::new(),
        skipped: Vec::new(),
    };
    if let Some(list) = &options.files_from {
        let [dir] = dirs else { return Err(PackError::ListNeedsOneDir) };
        collector.read_list(dir, list)?;
    } else {
        for dir in dirs {
            collector.walk(dir)?;
        }
    }
    let mut inputs: Vec<PackInput> = collector.found.into_values().collect();
    if options.order == PackOrder::Kind {
        order_for_compression(&mut inputs);
    }
    let trace = trace.map(|trace| order_by_trace(&mut inputs, &trace));
    Ok(Collected { inputs, skipped: collector.skipped, trace })
}

/// Packs `inputs` into `output` all or nothing ([`crate::AtomicFile`], removing stale temp files of
/// a killed earlier pack of the same output); returns the entry count.
pub fn pack_to_file(
    inputs: &[PackInput],
    output: &Path,
    options: WriterOptions,
    progress: impl FnMut(&PackInput, u64),
) -> Result<usize, PackError> {
    Ok(pack_to_file_reusing(inputs, output, options, None, progress)?.entries)
}

/// Packs `inputs` as an archive streamed into `sink` (`name` is for messages); returns the sink
/// (unflushed) and the entry count.
pub fn pack_to_writer<W: Write>(
    inputs: &[PackInput],
    sink: W,
    name: &Path,
    options: WriterOptions,
    progress: impl FnMut(&PackInput, u64),
) -> Result<(W, usize), PackError> {
    let (sink, summary) = pack_to_writer_reusing(inputs, sink, name, options, None, progress)?;
    Ok((sink, summary.entries))
}

/// What a pack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackSummary {
    /// Entries in the archive.
    pub entries: usize,
    /// What was copied from the earlier archive instead of compressed (all zero without one).
    pub reused: ReuseReport,
    /// Frames of the earlier archive found damaged (they were compressed afresh instead).
    pub damaged_frames: u64,
}

/// [`pack_to_file`], copying frames of `reuse` (an earlier archive, see [`crate::reuse`]) where
/// they decode to the content being packed. The output is the same bytes as without `reuse`.
pub fn pack_to_file_reusing(
    inputs: &[PackInput],
    output: &Path,
    options: WriterOptions,
    reuse: Option<Arc<ReuseSource>>,
    progress: impl FnMut(&PackInput, u64),
) -> Result<PackSummary, PackError> {
    let io = |error| PackError::Io { path: output.to_owned(), error };
    let mut out = crate::AtomicFile::create_removing_stale(output).map_err(io)?;
    // A small buffer: frames (usually larger) then go to the file directly instead of being copied
    // into it first.
    let sink = std::io::BufWriter::with_capacity(64 << 10, WritebackFile::new(out.file()));
    let (sink, summary) = pack_to_writer_reusing(inputs, sink, output, options, reuse, progress)?;
    sink.into_inner().map_err(|e| io(e.into_error()))?;
    out.commit().map_err(io)?;
    Ok(summary)
}

/// Bytes written between two requests to start writing the output to disk.
const WRITEBACK_STEP: u64 = 32 << 20;

/// The output file, asking the kernel to start writing each [`WRITEBACK_STEP`] to disk as soon as
/// it is complete. Otherwise the kernel starts only once a tenth or so of memory is dirty, and the
/// final fsync waits for nearly the whole archive to reach the disk after everything else is done;
/// this way the disk works while the rest is read and compressed.
struct WritebackFile<'a> {
    file: &'a File,
    written: u64,
    started: u64,
}

impl<'a> WritebackFile<'a> {
    fn new(file: &'a File) -> Self {
        WritebackFile { file, written: 0, started: 0 }
    }
}

impl Write for WritebackFile<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            // POSIX_FADV_DONTNEED starts the writeback of the range's dirty pages without waiting
            // for it (and drops nothing that is still dirty). Only a hint: a failure changes nothing.
            let len = std::num::NonZeroU64::new(self.written - self.started);
            let _ = rustix::fs::fadvise(self.file, self.started, len, rustix::fs::Advice::DontNeed);
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// [`pack_to_writer`] with an earlier archive to reuse frames of, as [`pack_to_file_reusing`].
pub fn pack_to_writer_reusing<W: Write>(
    inputs: &[PackInput],
    sink: W,
    name: &Path,
    options: WriterOptions,
    reuse: Option<Arc<ReuseSource>>,
    progress: impl FnMut(&PackInput, u64),
) -> Result<(W, PackSummary), PackError> {
    let mut writer = ArchiveWriter::with_name(sink, options, name)?;
    if let Some(source) = &reuse {
        writer.set_reuse(source.clone());
    }
    pack_inputs(&mut writer, inputs, progress)?;
    let damaged_frames = reuse.as_deref().map_or(0, |r| r.damage().0);
    let summary = PackSummary { entries: writer.len(), reused: writer.reuse_report(), damaged_frames };
    Ok((writer.finish()?, summary))
}

struct Collector<'a> {
    excludes: GlobSet,
    store: Vec<String>,
    output: Option<PathBuf>,
    options: &'a DirPackOptions,
    found: BTreeMap<String, PackInput>,
    skipped: Vec<PathBuf>,
}

impl Collector<'_> {
    fn add(&mut self, entry_path: String, fs_path: PathBuf, metadata: &std::fs::Metadata) -> Result<(), PackError> {
        // Compare full paths only when the names match: `absolute` costs a getcwd per call.
        let is_output = self
            .output
            .as_ref()
            .is_some_and(|out| fs_path.file_name() == out.file_name() && absolute(&fs_path) == *out);
        if self.excludes.is_match(&entry_path) || is_output {
            return Ok(());
        }
        let mut options = EntryOptions::from_metadata(metadata, self.options.keep_mtime);
        if has_extension(&entry_path, &self.store) {
            options.compression = Compression::Store;
        }
        let input = PackInput { entry_path: entry_path.clone(), fs_path, size_hint: metadata.len(), options };
        if let Some(previous) = self.found.insert(entry_path.clone(), input) {
            return Err(PackError::TwoInputs { entry: entry_path, first: previous.fs_path });
        }
        Ok(())
    }

    /// Fails if `path` (reached inside `root`, whose canonical form is `canonical_root`) resolves to
    /// somewhere outside it, unless following such links was asked for.
    fn check_inside(&self, path: &Path, root: &Path, canonical_root: &Path) -> Result<(), PackError> {
        if self.options.follow_symlinks {
            return Ok(());
        }
        let target = path.canonicalize().map_err(|error| PackError::Io { path: path.to_owned(), error })?;
        if target.starts_with(canonical_root) {
            return Ok(());
        }
        Err(PackError::SymlinkOutside { link: path.to_owned(), target, root: root.to_owned() })
    }

    fn read_list(&mut self, dir: &Path, list: &Path) -> Result<(), PackError> {
        let io = |error| PackError::Io { path: list.to_owned(), error };
        let file = crate::fs::open_regular(list).map_err(io)?;
        if file.metadata().map_err(io)?.len() > MAX_LIST_BYTES {
            return Err(PackError::ListTooLarge { path: list.to_owned() });
        }
        let mut text = String::new();
        file.take(MAX_LIST_BYTES + 1).read_to_string(&mut text).map_err(io)?;
        if text.len() as u64 > MAX_LIST_BYTES {
            return Err(PackError::ListTooLarge { path: list.to_owned() }); // grew while read
        }
        let canonical_root = dir.canonicalize().map_err(|error| PackError::Io { path: dir.to_owned(), error })?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let place = format!("{}:{}", list.display(), number + 1);
            let entry_path = entry_path_from_fs(Path::new(line))
                .map_err(|error| PackError::BadPath { place: place.clone(), error })?;
            let fs_path = dir.join(line);
            let metadata = std::fs::metadata(&fs_path)
                .map_err(|error| PackError::Io { path: fs_path.clone(), error: with_place(error, &place) })?;
            if !metadata.is_file() {
                return Err(PackError::NotRegular { place, path: fs_path });
            }
            self.check_inside(&fs_path, dir, &canonical_root)?;
            self.add(entry_path, fs_path, &metadata)?;
        }
        Ok(())
    }

    fn walk(&mut self, dir: &Path) -> Result<(), PackError> {
        if !dir.is_dir() {
            return Err(PackError::NotADirectory { path: dir.to_owned() });
        }
        let canonical_root = dir.canonicalize().map_err(|error| PackError::Io { path: dir.to_owned(), error })?;
        let mut walker = walkdir::WalkDir::new(dir).follow_links(true).sort_by_file_name().into_iter();
        while let Some(item) = walker.next() {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(dir).to_owned();
                PackError::Io { path, error: e.into() }
            })?;
            let relative = item.path().strip_prefix(dir).unwrap_or(item.path());
            if relative.as_os_str().is_empty() {
                continue;
            }
            let place = || item.path().display().to_string();
            let entry_path =
                entry_path_from_fs(relative).map_err(|error| PackError::BadPath { place: place(), error })?;
            if item.path_is_symlink() {
                self.check_inside(item.path(), dir, &canonical_root)?;
            }
            if item.file_type().is_dir() {
                if self.excludes.is_match(&entry_path) {
                    walker.skip_current_dir();
                }
                continue;
            }
            if !item.file_type().is_file() {
                self.skipped.push(item.path().to_owned());
                continue;
            }
            let metadata =
                item.metadata().map_err(|e| PackError::Io { path: item.path().to_owned(), error: e.into() })?;
            self.add(entry_path, item.path().to_owned(), &metadata)?;
        }
        Ok(())
    }
}

fn with_place(error: std::io::Error, place: &str) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{place}: {error}"))
}

fn build_globs(patterns: &[String]) -> Result<GlobSet, PackError> {
    let bad = |pattern: &str, e: globset::Error| PackError::BadPattern {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    };
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern).map_err(|e| bad(pattern, e))?);
        // A pattern without '/' also matches a name at any depth, as in .gitignore.
        if !pattern.contains('/') {
            builder.add(Glob::new(&format!("**/{pattern}")).map_err(|e| bad(pattern, e))?);
        }
    }
    builder.build().map_err(|e| bad("", e))
}

pub(crate) fn has_extension(path: &str, extensions: &[String]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_pool_reuses_a_class_and_drops_its_oldest_beyond_its_bound() {
        let pool = BufferPool::default();
        assert_eq!(pool.take(POOLED_MIN - 1).capacity(), 0, "small files are not pooled");
        let mut first = pool.take(200 << 10);
        assert_eq!(first.capacity(), 256 << 10);
        first.extend_from_slice(b"content");
        let at = first.as_ptr();
        pool.put(first);
        let again = pool.take(130 << 10);
        assert_eq!((again.as_ptr(), again.len()), (at, 0), "the pooled buffer of its class, emptied");
        assert_eq!(pool.take(200 << 10).capacity(), 256 << 10, "a new one while that one is taken");
        pool.put(again);
        pool.put(Vec::with_capacity(300 << 10)); // not a pooled class
        for _ in 0..POOL_BYTES / (4 << 20) {
            pool.put(Vec::with_capacity(4 << 20));
        }
        let (free, total) = &*pool.free.lock().unwrap();
        assert_eq!(*total, free.iter().map(Vec::capacity).sum::<usize>());
        assert_eq!(*total, POOL_BYTES);
        assert!(free.iter().all(|b| b.capacity() == 4 << 20), "the oldest buffer made room");
    }

    #[test]
    fn only_sizes_two_inputs_have_are_shared() {
        let input = |size_hint| PackInput {
            entry_path: String::new(),
            fs_path: PathBuf::new(),
            size_hint,
            options: EntryOptions::default(),
        };
        let inputs: Vec<PackInput> = [5, 7, 5, 9, 7, 5].into_iter().map(input).collect();
        assert_eq!(shared_sizes(&inputs), HashSet::from([5, 7]));
    }
}
