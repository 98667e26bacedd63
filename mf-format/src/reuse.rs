//! Incremental packing (`mf pack --reuse OLD`): the zstd frames of an earlier archive stand in for
//! compressing the same bytes again, so packing a large tree after a small change costs reading and
//! hashing it, not compressing it.
//!
//! The output must be the bytes a fresh pack writes (spec/FORMAT.md, "What writers do"). So reuse
//! changes no decision of the writer: which entries are shared, solid, raw or in frames of their own,
//! and for each frame of its own whether it is raw (the entropy test and the fast probe still run),
//! are decided exactly as in a fresh pack. Only the last step, compressing a frame at the archive's
//! level, is replaced by copying a frame of OLD, and only when
//!
//! - OLD has the writer's frame size, and the old entry was written at the writer's level in frames
//!   of its own (not solid) cut at the same boundaries, with the new entry's x86 filter decision
//!   (the `X86` flag: the same zstd frame means other content under the other decision), and
//! - that frame of OLD is one complete zstd frame declaring its content size and a checksum (as this
//!   writer makes them) and **decodes to exactly the chunk being packed** (compared byte for byte:
//!   OLD is untrusted and a 64-bit hash alone is never trusted).
//!
//! A frame OLD stored raw is taken the same way when it is byte for byte the chunk being packed and
//! the new entry's plan would probe the chunk at the fast level first: OLD's writer, at the same
//! level, then already found this chunk not worth compressing, so a fresh pack stores it raw too and
//! neither the probe nor the compression runs. (Without the probe in the plan, a raw frame of OLD
//! says nothing: OLD's path may have been probed where the new one is compressed directly.)
//!
//! Frames that fail the checks are compressed afresh. One that does not decode at all is counted as
//! damaged ([`ReuseSource::damage`]) so the caller can warn; the output is correct either way. Byte
//! identity with a fresh pack then rests on one assumption, stated here because it cannot be checked
//! without the compression it saves: zstd at a given level turns a given chunk into the same bytes
//! for every writer of OLD (true for archives written by `mf pack` of this zstd version; an OLD
//! written by another encoder still gives a correct, valid archive, possibly not byte-identical).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::Result;
use crate::format::{EntryRecord, FrameRecord, ENTRY_FLAG_SOLID};
use crate::reader::{Archive, Entry, StoredAs};
use crate::writer::WriterOptions;

/// An earlier archive whose frames a writer may copy instead of compressing (see the module docs).
/// Shared by the threads that compress (`&ReuseSource` is `Sync`).
pub struct ReuseSource {
    archive: Archive,
    /// The writer's level as recorded in entry records.
    level: i8,
    /// False when OLD's frame size differs from the writer's: then nothing is reused.
    same_frame_size: bool,
    /// Entries eligible for reuse by (size, xxh3): the first in record order.
    by_content: HashMap<(u64, u64), u32>,
    /// Sizes of eligible entries: only a file of such a size is worth hashing before it is packed.
    sizes: HashSet<u64>,
    damaged: AtomicU64,
    first_damage: Mutex<Option<String>>,
    /// Raw frames of OLD found equal to the chunk being packed (stored raw without the probe).
    raw_matched: AtomicU64,
}

/// The frames of one old entry offered for one new entry: frame `k` of the new entry may be
/// frame `first + k` of OLD.
#[derive(Clone, Copy)]
pub(crate) struct Donor<'a> {
    source: &'a ReuseSource,
    first: u32,
    count: u32,
    /// OLD's entry has the X86 filter flag: its compressed frames are copied only into an entry
    /// that is filtered too.
    x86: bool,
}

impl ReuseSource {
    /// Opens OLD for a writer with `options`. OLD's data is read with `pread`, never mapped, so a
    /// file truncated while it is read gives errors (counted as damage), not a crash. A file that
    /// is not a readable archive (header, footer, index) is an error naming it.
    pub fn open(path: impl AsRef<Path>, options: &WriterOptions) -> Result<ReuseSource> {
        Ok(Self::from_archive(Archive::open_pread(path)?, options))
    }

    /// Uses an open archive as the source for a writer with `options`.
    pub fn from_archive(archive: Archive, options: &WriterOptions) -> ReuseSource {
        let level = options.level.clamp(-128, 127) as i8;
        let same_frame_size = archive.frame_size() == options.frame_size() as u64;
        let mut source = ReuseSource {
            archive,
            level,
            same_frame_size,
            by_content: HashMap::new(),
            sizes: HashSet::new(),
            damaged: AtomicU64::new(0),
            first_damage: Mutex::new(None),
            raw_matched: AtomicU64::new(0),
        };
        if same_frame_size {
            let mut by_content = HashMap::new();
            let mut sizes = HashSet::new();
            for entry in source.archive.entries().filter(|e| source.eligible(e)) {
                by_content.entry((entry.size(), entry.content_hash())).or_insert(entry.index());
                sizes.insert(entry.size());
            }
            source.by_content = by_content;
            source.sizes = sizes;
        }
        source
    }

    /// The archive frames are taken from.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Frames found damaged (not decodable) so far, and the first such error's message.
    pub fn damage(&self) -> (u64, Option<String>) {
        let first = self.first_damage.lock().map(|g| g.clone()).unwrap_or_default();
        (self.damaged.load(Ordering::Relaxed), first)
    }

    /// Raw frames of OLD found equal to the chunk being packed, which were then stored raw without
    /// probing or compressing them (see the module docs).
    pub fn raw_frames_matched(&self) -> u64 {
        self.raw_matched.load(Ordering::Relaxed)
    }

    /// Whether an entry of `size` bytes not found by path could be found by content (then its
    /// content hash is worth taking before it is packed).
    pub(crate) fn has_size(&self, size: u64) -> bool {
        self.sizes.contains(&size)
    }

    /// Whether OLD has an entry at `path` eligible for reuse with exactly `size` bytes.
    pub(crate) fn has_path_of_size(&self, path: &str, size: u64) -> bool {
        self.archive.get(path).is_some_and(|e| self.eligible(&e) && e.size() == size)
    }

    /// The old frames to offer for new content at `path`: by path first when that entry has the
    /// same size, then by size and content hash (`content`, when known), then by path whatever its
    /// size (its leading frames may still match). `None` when nothing is eligible.
    pub(crate) fn donor(&self, path: &str, content: Option<(u64, u64)>) -> Option<Donor<'_>> {
        let by_path = self.archive.get(path).filter(|e| self.eligible(e));
        let same_size = |e: &Entry<'_>| content.is_none_or(|(size, _)| e.size() == size);
        let entry = match by_path {
            Some(e) if same_size(&e) => Some(e),
            _ => content.and_then(|key| self.by_content.get(&key)).and_then(|&i| self.archive.entry(i)).or(by_path),
        }?;
        let run = self.archive.entry_frames(&entry);
        Some(Donor { source: self, first: run.start, count: run.end - run.start, x86: entry.has_x86_filter() })
    }

    /// An entry written by this writer's rules in frames of its own at the writer's level and
    /// frame size: every frame but the last full, the content starting at the first.
    fn eligible(&self, entry: &Entry<'_>) -> bool {
        let record: &EntryRecord = entry.record();
        if !self.same_frame_size
            || entry.stored_as() != StoredAs::Zstd
            || record.flags & ENTRY_FLAG_SOLID != 0
            || record.level != self.level
            || record.offset != 0
        {
            return false;
        }
        let frame_size = self.archive.frame_size();
        let run = self.archive.entry_frames(entry);
        u64::from(run.end - run.start) == entry.size().div_ceil(frame_size)
    }

    fn record_damage(&self, frame: u32, why: String) {
        self.damaged.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_damage.lock() {
            first.get_or_insert_with(|| format!("frame {frame}: {why}"));
        }
    }
}

thread_local! {
    // One old frame's stored bytes and its decoding, per compressing thread: reuse reads and decodes
    // a frame for every frame it offers, and fresh buffers of a frame's size would cost an
    // allocation and page faults each time. Each holds at most one frame (the archive's frame size).
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Donor<'_> {
    /// Frame `k` of OLD's entry with its record, when it exists and holds `len` bytes.
    fn old_frame(&self, k: usize, len: usize) -> Option<(u32, FrameRecord)> {
        let k = u32::try_from(k).ok().filter(|&k| k < self.count)?;
        let frame = self.first + k;
        let record: FrameRecord = *self.source.archive.frames().get(frame as usize)?;
        (record.len as usize == len).then_some((frame, record))
    }

    /// OLD's stored bytes of `frame` (in the thread's buffer, given to `then`), or `None` counted as
    /// damage when they cannot be read.
    fn with_stored<T>(&self, frame: u32, then: impl FnOnce(&[u8]) -> Option<T>) -> Option<T> {
        STORED.with(|cell| {
            let mut stored = cell.borrow_mut();
            if let Err(e) = self.source.archive.stored_frame_into(frame, &mut stored) {
                self.source.record_damage(frame, e.to_string());
                return None;
            }
            then(&stored)
        })
    }

    /// OLD's stored bytes for frame `k` of the new entry when they are a zstd frame that decodes to
    /// exactly `chunk` (see the module docs) and OLD's entry agrees with the new one (`x86`) on the
    /// x86 filter; `None` otherwise. The frame is read once, decoded from those bytes (the filter
    /// undone), and compared.
    pub(crate) fn frame(&self, k: usize, chunk: &[u8], x86: bool) -> Option<Vec<u8>> {
        let (frame, record) = self.old_frame(k, chunk.len())?;
        if record.stored_len >= record.len || self.x86 != x86 {
            return None;
        }
        self.with_stored(frame, |stored| {
            if !is_writer_frame(stored, chunk.len()) {
                return None;
            }
            DECODED.with(|cell| {
                let mut decoded = cell.borrow_mut();
                if decoded.len() < chunk.len() {
                    decoded.resize(chunk.len(), 0);
                }
                let decoded = &mut decoded[..chunk.len()];
                if let Err(e) = self.source.archive.decode_stored_frame(frame, stored, decoded) {
                    self.source.record_damage(frame, e.to_string());
                    return None;
                }
                (*decoded == *chunk).then(|| stored.to_vec())
            })
        })
    }

    /// Whether frame `k` of OLD's entry is stored raw and is exactly `chunk` (compared byte for
    /// byte). OLD's entry was written in frames of its own at this writer's level and frame size
    /// (the donor's conditions) with compression on (an entry of raw frames only is stored as a raw
    /// extent), so its writer found this very chunk not worth compressing at this level: either
    /// the fast probe saved too little, or the level itself saved too little (under 1/32, or
    /// nothing). When the new entry's plan probes the chunk too, a fresh pack therefore stores it
    /// raw as well, and the caller may skip both the probe and the compression.
    pub(crate) fn raw_frame_is(&self, k: usize, chunk: &[u8]) -> bool {
        let Some((frame, record)) = self.old_frame(k, chunk.len()) else { return false };
        if record.stored_len != record.len {
            return false;
        }
        let same = self.with_stored(frame, |stored| Some(stored == chunk)).unwrap_or(false);
        if same {
            self.source.raw_matched.fetch_add(1, Ordering::Relaxed);
        }
        same
    }
}

/// Whether `stored` is exactly one zstd frame that declares `len` bytes of content and a content
/// checksum, as the writer's frames do (another encoder's frames are not taken for ours).
fn is_writer_frame(stored: &[u8], len: usize) -> bool {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    const CHECKSUM_FLAG: u8 = 1 << 2;
    let whole = zstd::zstd_safe::find_frame_compressed_size(stored).is_ok_and(|n| n == stored.len());
    let declared = zstd::zstd_safe::get_frame_content_size(stored).ok().flatten() == Some(len as u64);
    let checksum = stored.get(4).is_some_and(|descriptor| descriptor & CHECKSUM_FLAG != 0);
    stored.starts_with(&MAGIC) && whole && declared && checksum
}
