//! Archives changed in place (spec/FORMAT.md "Updating in place").
//!
//! An [`Editor`] holds an exclusive lock on the archive file, collects removals and new content,
//! and [`commit`](Editor::commit)s them as a new version: new data goes into holes that no version a
//! reader may still hold uses, or after the end of the file; then a new index and footer are
//! appended, synced, and the commit slot not holding the current version is written with the next
//! generation and synced. A crash at any point leaves the old version or the new one.
//!
//! Unchanged entries are not touched; an entry replaced by content that differs only in some frames
//! keeps the frames that are identical, so a small edit in the middle of a large entry writes only
//! the frames around it. [`compact`] rewrites an archive without holes, byte for byte as a fresh
//! pack of its content would be.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::format::{
    self, CommitSlot, EntryRecord, Footer, FrameRecord, COMPRESSION_NONE, COMPRESSION_ZSTD, DATA_START, ENTRY_FLAG_X86,
    FOOTER_LEN, HEADER_LEN, SLOT_LEN, VERSION_MAJOR,
};
use crate::path::validate_path;
use crate::reader::{Archive, StoredAs};
use crate::writer::{
    self, check_entry_options, goes_solid, read_full, EntryOptions, FramePlan, SolidStream, StoredFrame, WriterOptions,
    DATA_ALIGNMENT, DEFAULT_LEVEL, SOLID_LIMIT,
};

/// The mode, mtime and compression of an entry given to [`Editor::put`] (the writer's options).
pub type EntryMeta = EntryOptions;

/// Dead bytes above this share of the file make [`needs_compaction`] true (the CLI then compacts
/// after an edit): past it, reads touch a file more than twice the size of its content.
pub const COMPACT_DEAD_SHARE: f64 = 0.5;

/// What a commit wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Every byte written to the file: data, index, footer, commit slots.
    pub bytes_written: u64,
    /// Bytes written past the end the file had when the editor started writing (data, index, footer).
    pub bytes_appended: u64,
    /// Data bytes written into holes.
    pub holes_reused: u64,
    /// Frames of replaced entries kept because their content was unchanged at the same position.
    pub frames_reused: u64,
    /// Dead bytes of the new version (holes, padding, older indexes), as [`Archive::space`] counts them.
    pub dead_bytes: u64,
    /// The file's length after the commit.
    pub file_len: u64,
    /// The committed generation (unchanged when there was nothing to commit).
    pub generation: u64,
}

/// A step of the commit protocol after which a test can stop the editor, as a crash would.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Slot 0 written to adopt a streamed archive.
    AdoptSlot,
    /// The adoption synced.
    AdoptSync,
    /// An uncommitted tail cut off.
    TruncateTail,
    /// One data write (a frame or an extent).
    Data,
    /// The new index written.
    Index,
    /// The new footer written.
    Footer,
    /// Data, index and footer synced.
    SyncData,
    /// Asked before the slot write: stopping here writes half of the slot (a torn write).
    TornSlot,
    /// The commit slot written.
    Slot,
    /// The commit slot synced.
    SyncSlot,
}

/// Decides, at each step, whether to stop there (tests only).
type FaultHook = Box<dyn FnMut(Step) -> bool + Send>;

/// An archive opened for a change in place (exclusive `flock` on the file for the editor's life).
pub struct Editor {
    file: File,
    name: PathBuf,
    archive: Archive,
    /// Which commit slot (0 or 1) holds the committed version; `None` for a streamed archive not
    /// adopted yet.
    winner: Option<u64>,
    /// Space used by the version before the committed one (its slot's index), when readable.
    older_live: Option<Vec<Range<u64>>>,
    options: WriterOptions,
    entries: BTreeMap<String, Planned>,
    next_rank: u64,
    order: Option<Vec<String>>,
    /// This edit's solid stream (small new entries), cut and compressed as the writer's.
    solid: SolidStream,
    /// Where new data may go; set up before the first write.
    space: Option<Space>,
    changed: bool,
    report: CommitReport,
    /// How many entries of the committed version use each frame, and each raw extent (by offset).
    users: Option<(Vec<u32>, HashMap<u64, u32>)>,
    fault: Option<FaultHook>,
}

/// One entry of the version being built.
struct Planned {
    /// Default record order: committed entries keep their index, new ones follow in put order.
    rank: u64,
    data: Data,
}

enum Data {
    /// Unchanged: the committed version's record at this index.
    Old(u32),
    /// New content: the record (storage fields, mode and mtime) and its frames.
    New(EntryRecord, Run),
}

enum Run {
    /// Raw or empty: no frames.
    None,
    /// Frames of its own (written now, or kept from the replaced entry).
    Own(Vec<FrameRecord>),
    /// In this edit's solid stream; the record's `first_frame` counts in that stream.
    Solid,
}

/// Free space: holes first fit, then the end of the file.
struct Space {
    holes: Vec<Range<u64>>,
    end: u64,
    start_end: u64,
}

impl Space {
    /// Where `len` bytes go, and whether that is a hole. `align`: start at a multiple of 16.
    fn alloc(&mut self, len: u64, align: bool) -> (u64, bool) {
        let round = |at: u64| if align { at.div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT } else { at };
        for i in 0..self.holes.len() {
            let hole = self.holes[i].clone();
            let start = round(hole.start);
            if start + len <= hole.end {
                // Remnants too small for anything useful are dropped, keeping the list short.
                let mut rest = Vec::new();
                if start - hole.start >= DATA_ALIGNMENT {
                    rest.push(hole.start..start);
                }
                if hole.end - (start + len) >= DATA_ALIGNMENT {
                    rest.push(start + len..hole.end);
                }
                self.holes.splice(i..=i, rest);
                return (start, true);
            }
        }
        let start = round(self.end);
        self.end = start + len;
        (start, false)
    }
}

impl std::fmt::Debug for Editor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Editor").field("name", &self.name).field("entries", &self.entries.len()).finish()
    }
}

impl Editor {
    /// Opens `path` for a change in place: no symlink as its last component, a regular file, an
    /// exclusive lock taken without waiting ([`Error::Busy`] when another editor holds it), and a
    /// valid 2.x archive.
    pub fn open(path: &Path) -> Result<Editor> {
        let file = crate::fs::open_regular_for_update(path).map_err(|e| Error::io(path, e))?;
        if !crate::fs::try_lock_exclusive(&file).map_err(|e| Error::io(path, e))? {
            return Err(Error::Busy { file: path.to_owned() });
        }
        let archive = Archive::from_file(&file, path)?;
        if archive.version().0 != VERSION_MAJOR {
            let reason = format!(
                "it is format {}.{}; in-place changes need {VERSION_MAJOR}.x (`mf compact` rewrites it)",
                archive.version().0,
                archive.version().1
            );
            return Err(Error::NotEditable { file: path.to_owned(), reason });
        }
        let slots = read_slots(&file, path)?;
        let winner = (archive.generation() != 0)
            .then(|| {
                (0..2u64)
                    .find(|&i| slot_valid(&slots[i as usize]) && slots[i as usize].generation == archive.generation())
            })
            .flatten();
        let older_live = winner.and_then(|w| {
            let other = slots[(1 - w) as usize];
            let usable = slot_valid(&other) && other.generation < archive.generation();
            // An unreadable older version only means new data is appended, never put in holes.
            usable.then(|| Archive::open_version(&file, path, other.footer_offset, other.generation).ok()).flatten()
        });
        let options = writer_options_of(&archive);
        let entries = archive
            .entries()
            .map(|e| (e.path().to_owned(), Planned { rank: u64::from(e.index()), data: Data::Old(e.index()) }))
            .collect();
        Ok(Editor {
            next_rank: archive.len() as u64,
            older_live: older_live.as_ref().map(live_ranges),
            file,
            name: path.to_owned(),
            winner,
            options,
            entries,
            order: None,
            solid: SolidStream::default(),
            space: None,
            changed: false,
            report: CommitReport::default(),
            users: None,
            fault: None,
            archive,
        })
    }

    /// The committed version, to read old content from.
    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// The level and frame size new content is compressed with (the archive's).
    pub fn options(&self) -> &WriterOptions {
        &self.options
    }

    /// Whether the version being built has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// Removes the entry at `path`; [`Error::NoSuchEntry`] if there is none.
    pub fn remove(&mut self, path: &str) -> Result<()> {
        if self.entries.remove(path).is_none() {
            return Err(Error::NoSuchEntry { file: self.name.clone(), entry: path.to_owned() });
        }
        self.changed = true;
        Ok(())
    }

    /// Removes the entry at `path`, or every entry under the directory `path`; returns the paths
    /// removed, in path order ([`Error::NoSuchEntry`] when there are none).
    pub fn remove_tree(&mut self, path: &str) -> Result<Vec<String>> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut removed: Vec<String> = self.entries.range(prefix.clone()..).map(|(p, _)| p.clone()).collect();
        removed.retain(|p| p.starts_with(&prefix));
        if self.entries.contains_key(path) {
            removed.insert(0, path.to_owned());
        }
        if removed.is_empty() {
            return Err(Error::NoSuchEntry { file: self.name.clone(), entry: path.to_owned() });
        }
        for p in &removed {
            self.entries.remove(p);
        }
        self.changed = true;
        Ok(removed)
    }

    /// Sets the final entry record order: exactly the paths of the version being built, each once
    /// (checked again at commit). Default: committed entries in their order, new ones appended.
    pub fn set_order(&mut self, paths: &[&str]) -> Result<()> {
        self.order = Some(paths.iter().map(|p| (*p).to_owned()).collect());
        self.check_order()?;
        self.changed = true;
        Ok(())
    }

    /// Adds or replaces `path` with `size` bytes of `content` (streamed, a batch of frames at a time).
    /// Replacing a frames entry (or a raw one) keeps, record for record, every old frame of it whose
    /// decoded content is identical at the same position, so a small edit in the middle of a large
    /// entry writes only the frames that changed. New content is compressed as the streaming writer
    /// would (same policy, solid stream for small compressible entries), at the archive's level.
    pub fn put(&mut self, path: &str, options: &EntryOptions, content: &mut dyn Read, size: u64) -> Result<()> {
        validate_path(path)?;
        check_entry_options(options)?;
        self.check_conflicts(path)?;
        self.start_writes()?;
        let mut content = content.take(size);
        let (record, run) = if size <= SOLID_LIMIT || options.compression == writer::Compression::Solid {
            self.put_small_or_solid(path, options, &mut content, size)?
        } else {
            self.put_frames(path, options, &mut content, size)?
        };
        self.plan_new(path, options, record, run);
        Ok(())
    }

    /// Whether [`put_keeping_frames`](Self::put_keeping_frames) can keep, for new content of `size`
    /// bytes, the committed entry at `path`'s frame `k` for every `k` with `keep[k]`: the entry's
    /// frames are its own (or it is raw) and frame `k` has the new frame's length.
    pub fn can_keep_frames(&mut self, path: &str, size: u64, keep: &[bool]) -> bool {
        let frame_size = self.options.frame_size() as u64;
        let reusable = self.reusable_frames(path);
        keep.len() as u64 == size.div_ceil(frame_size)
            && keep.iter().enumerate().filter(|(_, &kept)| kept).all(|(k, _)| {
                let len = (size - k as u64 * frame_size).min(frame_size);
                reusable.get(k).is_some_and(|(frame, _)| u64::from(frame.len) == len)
            })
    }

    /// Adds or replaces `path` with `size` bytes whose frame `k` is, for every `k` with `keep[k]`,
    /// the committed entry's frame `k`, left where it is without being read or decoded; `changed`
    /// yields the content of the other frames, in order, which are compressed as
    /// [`put`](Self::put) would. The editor never sees the kept bytes, so `content_hash` (the xxh3
    /// of the whole new content, recorded in the index) is the caller's to vouch for. Fails with
    /// [`Error::InvalidOption`] when [`can_keep_frames`](Self::can_keep_frames) is false.
    pub fn put_keeping_frames(
        &mut self,
        path: &str,
        options: &EntryOptions,
        size: u64,
        content_hash: u64,
        keep: &[bool],
        changed: &mut dyn Read,
    ) -> Result<()> {
        validate_path(path)?;
        check_entry_options(options)?;
        self.check_conflicts(path)?;
        if options.compression == writer::Compression::Solid || !self.can_keep_frames(path, size, keep) {
            return Err(Error::InvalidOption(format!("'{path}': the frames asked for cannot be kept")));
        }
        self.start_writes()?;
        // The kept frames are stored under the replaced entry's filter decision, so the new
        // frames are too (its first bytes may not even be seen here).
        let mut plan = FramePlan::new(path, options, &self.options);
        plan.x86 = self.replaced_x86(path);
        let reusable = self.reusable_frames(path);
        let frame_size = self.options.frame_size();
        let batch = batch_frames(frame_size);
        let mut frames: Vec<FrameRecord> = Vec::with_capacity(keep.len());
        let mut k = 0usize;
        while k < keep.len() {
            if keep[k] {
                self.report.frames_reused += 1;
                frames.push(reusable[k].0);
                k += 1;
                continue;
            }
            // The next changed frames (up to a batch), compressed on every core.
            let mut chunks = Vec::new();
            while k < keep.len() && !keep[k] && chunks.len() < batch {
                let len = (size - k as u64 * frame_size as u64).min(frame_size as u64) as usize;
                let mut chunk = vec![0u8; len];
                let filled = read_full(changed, &mut chunk).map_err(|e| Error::io(path, e))?;
                check_length(path, filled as u64, len as u64)?;
                chunks.push(chunk);
                k += 1;
            }
            let encoded: Vec<StoredFrame> = chunks
                .par_iter()
                .map(|chunk| plan.encode(chunk, None))
                .collect::<io::Result<_>>()
                .map_err(|e| Error::io(path, e))?;
            for (frame, chunk) in encoded.iter().zip(&chunks) {
                let bytes = frame.bytes(chunk);
                let offset = self.place(bytes, frames.is_empty())?;
                frames.push(FrameRecord { offset, stored_len: bytes.len() as u32, len: chunk.len() as u32 });
            }
        }
        let (record, run) = self.frames_record(frames, size, content_hash, plan.x86);
        self.plan_new(path, options, record, run);
        Ok(())
    }

    /// Records a new entry's metadata and plans it (replacing the entry at `path`, keeping its rank).
    fn plan_new(&mut self, path: &str, options: &EntryOptions, mut record: EntryRecord, run: Run) {
        let mtime = options.mtime.unwrap_or_default();
        record.mode = options.mode;
        record.mtime_secs = mtime.secs;
        record.mtime_nanos = mtime.nanos;
        record.path_len = path.len() as u32;
        let rank = match self.entries.get(path) {
            Some(planned) => planned.rank,
            None => {
                self.next_rank += 1;
                self.next_rank - 1
            }
        };
        self.entries.insert(path.to_owned(), Planned { rank, data: Data::New(record, run) });
        self.changed = true;
    }

    /// Rewrites the committed version with [`compact`] over the archive's own path while this editor
    /// holds the lock (nothing planned may be pending: commit first).
    pub fn compact_in_place(self) -> Result<CompactReport> {
        if self.changed {
            return Err(Error::InvalidOption("an editor with uncommitted changes cannot compact".into()));
        }
        compact(&self.archive, &self.name)
    }

    /// Test hook: `hook(step)` is asked after each step of the protocol; `true` stops there with an
    /// I/O error, leaving the file as a crash at that point would (bar what the OS had not synced).
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: impl FnMut(Step) -> bool + Send + 'static) {
        self.fault = Some(Box::new(hook));
    }

    /// Writes the new version: index and footer appended, synced, then the free commit slot written
    /// with the next generation and synced. Nothing changed: nothing is written.
    pub fn commit(mut self) -> Result<CommitReport> {
        if !self.changed {
            return Ok(CommitReport {
                generation: self.archive.generation(),
                file_len: self.archive.file_len(),
                dead_bytes: self.archive.space().dead,
                ..CommitReport::default()
            });
        }
        self.check_order()?;
        self.start_writes()?;
        self.flush_solid(true)?;
        let (mut records, paths, frames) = self.final_tables()?;
        let index = writer::build_index(&mut records, &paths, &frames)?;
        // The index and footer always go at the end, after every earlier version's footer: so the
        // tail after the committed footer is dead in every version.
        let space = self.space.as_mut().expect("start_writes set up the space");
        let index_offset = space.end;
        space.end += index.len() as u64 + FOOTER_LEN;
        let footer_at = index_offset + index.len() as u64;
        let footer = Footer::new(index_offset, index.len() as u64, format::xxh3(&index));
        self.write_meta(&index, index_offset, Step::Index)?;
        self.write_meta(&format::to_bytes(&footer), footer_at, Step::Footer)?;
        self.file.sync_all().map_err(|e| Error::io(&self.name, e))?;
        self.step(Step::SyncData)?;
        let generation = self.archive.generation().max(1).checked_add(1).ok_or_else(|| Error::NotEditable {
            file: self.name.clone(),
            reason: "the generation counter is exhausted".into(),
        })?;
        // The new version is checked by the reader's own rules before it is committed: a mistake
        // here must never become the archive's committed state.
        let new = Archive::open_version(&self.file, &self.name, footer_at, generation)?;
        let slot_at = HEADER_LEN + SLOT_LEN * (1 - self.winner.unwrap_or(0));
        let slot = format::to_bytes(&CommitSlot::new(generation, footer_at));
        if self.fault.as_mut().is_some_and(|hook| hook(Step::TornSlot)) {
            self.file.write_all_at(&slot[..16], slot_at).map_err(|e| Error::io(&self.name, e))?;
            return Err(injected(&self.name, Step::TornSlot));
        }
        self.file.write_all_at(&slot, slot_at).map_err(|e| Error::io(&self.name, e))?;
        self.report.bytes_written += SLOT_LEN;
        self.step(Step::Slot)?;
        self.file.sync_data().map_err(|e| Error::io(&self.name, e))?;
        self.step(Step::SyncSlot)?;
        Ok(CommitReport { dead_bytes: new.space().dead, file_len: footer_at + FOOTER_LEN, generation, ..self.report })
    }

    fn step(&mut self, step: Step) -> Result<()> {
        if self.fault.as_mut().is_some_and(|hook| hook(step)) {
            return Err(injected(&self.name, step));
        }
        Ok(())
    }

    fn check_order(&self) -> Result<()> {
        let Some(order) = &self.order else { return Ok(()) };
        let bad = |what: String| Error::InvalidOption(format!("entry order: {what}"));
        if order.len() != self.entries.len() {
            return Err(bad(format!("{} paths for {} entries", order.len(), self.entries.len())));
        }
        let mut seen = std::collections::HashSet::new();
        for path in order {
            if !self.entries.contains_key(path) {
                return Err(bad(format!("'{path}' is not an entry")));
            }
            if !seen.insert(path.as_str()) {
                return Err(bad(format!("'{path}' is listed twice")));
            }
        }
        Ok(())
    }

    /// Refuses a path that would be a file and a directory at once with the entries planned.
    fn check_conflicts(&self, path: &str) -> Result<()> {
        for (i, byte) in path.bytes().enumerate() {
            if byte == b'/' && self.entries.contains_key(&path[..i]) {
                return Err(Error::PathConflict { path: path.to_owned(), other: path[..i].to_owned() });
            }
        }
        let prefix = format!("{path}/");
        if let Some((other, _)) = self.entries.range(prefix.clone()..).next().filter(|(p, _)| p.starts_with(&prefix)) {
            return Err(Error::PathConflict { path: path.to_owned(), other: other.clone() });
        }
        Ok(())
    }

    /// Before the first write: adopts a streamed archive (slot 0, generation 1, pointing at its
    /// footer, synced), cuts off an uncommitted tail, and finds the holes that may be reused.
    fn start_writes(&mut self) -> Result<()> {
        if self.space.is_some() {
            return Ok(());
        }
        let (index_offset, index_len) = self.archive.index_extent();
        let footer_at = index_offset + index_len;
        let end = footer_at + FOOTER_LEN;
        if self.winner.is_none() {
            let slot = format::to_bytes(&CommitSlot::new(1, footer_at));
            self.file.write_all_at(&slot, HEADER_LEN).map_err(|e| Error::io(&self.name, e))?;
            self.report.bytes_written += SLOT_LEN;
            self.step(Step::AdoptSlot)?;
            self.file.sync_data().map_err(|e| Error::io(&self.name, e))?;
            self.step(Step::AdoptSync)?;
            self.winner = Some(0);
        }
        let len = self.file.metadata().map_err(|e| Error::io(&self.name, e))?.len();
        if len > end {
            // The tail after the committed footer is dead in every version (each commit appends
            // its footer after all earlier ones), so no reader can be using it.
            self.file.set_len(end).map_err(|e| Error::io(&self.name, e))?;
            self.step(Step::TruncateTail)?;
        }
        let holes = match &self.older_live {
            Some(older) => {
                let mut live = live_ranges(&self.archive);
                live.extend(older.iter().cloned());
                complement(live, DATA_START..end)
            }
            None => Vec::new(),
        };
        self.space = Some(Space { holes, end, start_end: end });
        Ok(())
    }

    /// Stores `bytes` somewhere free; returns where.
    fn place(&mut self, bytes: &[u8], align: bool) -> Result<u64> {
        let space = self.space.as_mut().expect("start_writes set up the space");
        let (at, in_hole) = space.alloc(bytes.len() as u64, align);
        let start_end = space.start_end;
        self.file.write_all_at(bytes, at).map_err(|e| Error::io(&self.name, e))?;
        self.report.bytes_written += bytes.len() as u64;
        if in_hole {
            self.report.holes_reused += bytes.len() as u64;
        } else {
            self.report.bytes_appended += (at + bytes.len() as u64).saturating_sub(start_end.max(at));
        }
        self.step(Step::Data)?;
        Ok(at)
    }

    fn write_meta(&mut self, bytes: &[u8], at: u64, step: Step) -> Result<()> {
        self.file.write_all_at(bytes, at).map_err(|e| Error::io(&self.name, e))?;
        self.report.bytes_written += bytes.len() as u64;
        self.report.bytes_appended += bytes.len() as u64;
        self.step(step)
    }

    /// Small content (read whole) or forced-solid content: empty, solid stream, or own frames.
    fn put_small_or_solid(
        &mut self,
        path: &str,
        options: &EntryOptions,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<(EntryRecord, Run)> {
        if size > SOLID_LIMIT {
            return self.stream_solid(path, content, size);
        }
        let mut data = Vec::with_capacity(size as usize);
        content.read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
        check_length(path, data.len() as u64, size)?;
        let hash = format::xxh3(&data);
        if data.is_empty() {
            let record = EntryRecord { compression: COMPRESSION_NONE, content_hash: hash, ..EntryRecord::default() };
            return Ok((record, Run::None));
        }
        if goes_solid(path, &data, options.compression) {
            let start = self.solid.push(&data);
            self.flush_solid(false)?;
            return Ok((self.solid_record(start, size, hash), Run::Solid));
        }
        self.put_frames(path, options, &mut &data[..], size)
    }

    /// Content of any size streamed into the solid stream ([`writer::Compression::Solid`]).
    fn stream_solid(&mut self, path: &str, content: &mut dyn Read, size: u64) -> Result<(EntryRecord, Run)> {
        let start = self.solid.len();
        let mut hasher = Xxh3::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            let filled = read_full(content, &mut buffer).map_err(|e| Error::io(path, e))?;
            hasher.update(&buffer[..filled]);
            self.solid.push(&buffer[..filled]);
            read += filled as u64;
            self.flush_solid(false)?;
            if filled < buffer.len() {
                break;
            }
        }
        check_length(path, read, size)?;
        Ok((self.solid_record(start, size, hasher.digest()), Run::Solid))
    }

    fn solid_record(&self, start: u64, size: u64, content_hash: u64) -> EntryRecord {
        SolidStream::record(start, size, content_hash, &self.options)
    }

    /// Stores buffered solid frames as the writer does: whole batches, or everything at the end.
    fn flush_solid(&mut self, all: bool) -> Result<()> {
        while let Some(batch) = self.solid.take_batch(all, &self.options) {
            let batch = batch.map_err(|e| Error::io(&self.name, e))?;
            for (k, (bytes, len)) in batch.frames().enumerate() {
                let offset = self.place(bytes, k == 0)?;
                self.solid.frames.push(FrameRecord { offset, stored_len: bytes.len() as u32, len });
            }
        }
        Ok(())
    }

    /// Streams content into frames of its own, keeping the replaced entry's frames that are equal.
    fn put_frames(
        &mut self,
        path: &str,
        options: &EntryOptions,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<(EntryRecord, Run)> {
        let mut plan = FramePlan::new(path, options, &self.options);
        let replaced_x86 = self.replaced_x86(path);
        let reusable = self.reusable_frames(path);
        let frame_size = self.options.frame_size();
        let batch = batch_frames(frame_size) * frame_size;
        let (mut current, mut next) = (vec![0u8; batch], vec![0u8; batch]);
        let mut hasher = Xxh3::new();
        let mut frames: Vec<FrameRecord> = Vec::new();
        let mut filled = read_full(content, &mut current).map_err(|e| Error::io(path, e))?;
        plan = plan.with_head(&current[..filled]);
        let mut read = 0u64;
        loop {
            let block = &current[..filled];
            let last = filled < batch;
            hasher.update(block);
            let first = frames.len();
            let (archive, file, name, plan) = (&self.archive, &self.file, &self.name, &plan);
            // A compressed frame is kept only under the same filter decision (a raw one holds the
            // content itself either way).
            let keepable = |old: &(FrameRecord, Option<u32>)| old.0.stored_len == old.0.len || replaced_x86 == plan.x86;
            let mut encoded: Result<Vec<Option<StoredFrame>>> = Ok(Vec::new());
            let mut next_filled = Ok(0);
            // As the streaming writer does: the next batch is read here (for a patch, rebuilt from
            // the old content and the delta) while the pool compares and compresses this one.
            rayon::in_place_scope(|scope| {
                scope.spawn(|_| {
                    encoded = block
                        .par_chunks(frame_size)
                        .enumerate()
                        .map(|(i, chunk)| match reusable.get(first + i) {
                            Some(old) if keepable(old) && old_frame_equals(archive, file, name, old, chunk)? => {
                                Ok(None)
                            }
                            _ => plan.encode(chunk, None).map(Some).map_err(|e| Error::io(path, e)),
                        })
                        .collect();
                });
                if !last {
                    next_filled = read_full(content, &mut next).map_err(|e| Error::io(path, e));
                }
            });
            for (i, (frame, chunk)) in encoded?.into_iter().zip(block.chunks(frame_size)).enumerate() {
                let record = match frame {
                    None => {
                        self.report.frames_reused += 1;
                        reusable[first + i].0
                    }
                    Some(frame) => {
                        let bytes = frame.bytes(chunk);
                        let offset = self.place(bytes, first + i == 0)?;
                        FrameRecord { offset, stored_len: bytes.len() as u32, len: chunk.len() as u32 }
                    }
                };
                frames.push(record);
            }
            read += filled as u64;
            if last {
                break;
            }
            filled = next_filled?;
            std::mem::swap(&mut current, &mut next);
        }
        check_length(path, read, size)?;
        Ok(self.frames_record(frames, size, hasher.digest(), plan.x86))
    }

    /// The record of an entry stored in `frames` (raw extent when they are all raw and back to back).
    fn frames_record(&self, frames: Vec<FrameRecord>, size: u64, content_hash: u64, x86: bool) -> (EntryRecord, Run) {
        let all_raw = frames.iter().all(|f| f.stored_len == f.len);
        let contiguous = frames.windows(2).all(|w| w[0].offset + u64::from(w[0].stored_len) == w[1].offset);
        if frames.is_empty() || (all_raw && contiguous) {
            // Raw and back to back: one extent, as the writer stores an entry whose frames are all raw.
            let offset = frames.first().map_or(0, |f| f.offset);
            let record =
                EntryRecord { compression: COMPRESSION_NONE, offset, size, content_hash, ..Default::default() };
            return (record, Run::None);
        }
        let record = EntryRecord {
            compression: COMPRESSION_ZSTD,
            level: level_byte(self.options.level),
            flags: if x86 { ENTRY_FLAG_X86 } else { 0 },
            frame_count: frames.len() as u64,
            size,
            content_hash,
            ..EntryRecord::default()
        };
        (record, Run::Own(frames))
    }

    /// The committed entry at `path`'s frames by position (a raw extent seen as raw frames), with
    /// their frame-table index, when the new content may keep them: the entry's data is its own
    /// (no other entry shares a frame or the extent) and starts at its first frame's first byte.
    /// Whether the committed entry at `path` has the X86 filter flag.
    fn replaced_x86(&self, path: &str) -> bool {
        self.archive.get(path).is_some_and(|e| e.has_x86_filter())
    }

    fn reusable_frames(&mut self, path: &str) -> Vec<(FrameRecord, Option<u32>)> {
        let Some(entry) = self.archive.get(path).filter(|e| e.size() > 0) else { return Vec::new() };
        let (frame_users, raw_users) = self.users.get_or_insert_with(|| count_users(&self.archive));
        match entry.stored_as() {
            StoredAs::Raw if raw_users.get(&entry.offset()).copied() == Some(1) => {
                let frame_size = self.options.frame_size() as u64;
                (0..entry.size().div_ceil(frame_size))
                    .map(|k| {
                        let len = (entry.size() - k * frame_size).min(frame_size) as u32;
                        (FrameRecord { offset: entry.offset() + k * frame_size, stored_len: len, len }, None)
                    })
                    .collect()
            }
            StoredAs::Zstd if self.archive.entry_skip(&entry) == 0 => {
                let run = self.archive.entry_frames(&entry);
                if run.clone().any(|f| frame_users[f as usize] != 1) {
                    return Vec::new();
                }
                run.map(|f| (self.archive.frames()[f as usize], Some(f))).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The new version's records (in final order), paths and frame table: committed frames still
    /// used (in their order), then new entries' own frames, then this edit's solid frames still used.
    fn final_tables(&self) -> Result<(Vec<EntryRecord>, Vec<String>, Vec<FrameRecord>)> {
        let mut planned: Vec<(&String, &Planned)> = self.entries.iter().collect();
        match &self.order {
            Some(order) => {
                let position: HashMap<&str, usize> = order.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
                planned.sort_by_key(|(path, _)| position.get(path.as_str()).copied().unwrap_or(usize::MAX));
            }
            None => planned.sort_by_key(|(_, p)| p.rank),
        }
        let old_frames = self.archive.frames();
        let mut keep = vec![false; old_frames.len()];
        let mut solid_used = vec![false; self.solid.frames.len()];
        for (_, p) in &planned {
            match &p.data {
                Data::Old(i) => {
                    if let Some(entry) = self.archive.entry(*i) {
                        for f in self.archive.entry_frames(&entry) {
                            keep[f as usize] = true;
                        }
                    }
                }
                Data::New(record, Run::Solid) => {
                    let run = record.first_frame as usize..record.first_frame as usize + record.frame_count as usize;
                    solid_used[run].iter_mut().for_each(|u| *u = true);
                }
                Data::New(..) => {}
            }
        }
        let mut frames = Vec::new();
        let old_index = renumber(&keep, |i| frames.push(old_frames[i]));
        let mut records = Vec::with_capacity(planned.len());
        let mut paths = Vec::with_capacity(planned.len());
        for (path, p) in &planned {
            let record = match &p.data {
                Data::Old(i) => {
                    let mut record = *self
                        .archive
                        .entry(*i)
                        .map(|e| e.record())
                        .ok_or_else(|| Error::InvalidOption(format!("entry {i} is past the committed version")))?;
                    if record.compression == COMPRESSION_ZSTD {
                        record.first_frame = old_index[record.first_frame as usize];
                    }
                    record
                }
                Data::New(record, Run::Own(own)) => {
                    let first_frame = frames.len() as u32;
                    frames.extend_from_slice(own);
                    EntryRecord { first_frame, ..*record }
                }
                Data::New(record, _) => *record,
            };
            records.push(record);
            paths.push((*path).clone());
        }
        let solid_base = frames.len() as u32;
        let solid_index = renumber(&solid_used, |i| frames.push(self.solid.frames[i]));
        for (record, (_, p)) in records.iter_mut().zip(&planned) {
            if let Data::New(_, Run::Solid) = p.data {
                record.first_frame = solid_base + solid_index[record.first_frame as usize];
            }
        }
        Ok((records, paths, frames))
    }
}

/// Numbers the kept items in order (calling `keep_one` for each); the result maps old positions
/// to new ones (unkept positions map to `u32::MAX`).
fn renumber(keep: &[bool], mut keep_one: impl FnMut(usize)) -> Vec<u32> {
    let mut next = 0u32;
    keep.iter()
        .enumerate()
        .map(|(i, &kept)| {
            if !kept {
                return u32::MAX;
            }
            keep_one(i);
            next += 1;
            next - 1
        })
        .collect()
}

/// Whether an old frame (of `archive`, stored in `file`) decodes to exactly `chunk`.
fn old_frame_equals(
    archive: &Archive,
    file: &File,
    name: &Path,
    old: &(FrameRecord, Option<u32>),
    chunk: &[u8],
) -> Result<bool> {
    let (record, index) = old;
    if record.len as usize != chunk.len() {
        return Ok(false);
    }
    let mut bytes = Vec::new();
    match index {
        Some(f) => archive.decode_frame_at(*f, &mut bytes)?,
        None => {
            bytes.resize(chunk.len(), 0);
            file.read_exact_at(&mut bytes, record.offset).map_err(|e| Error::io(name, e))?;
        }
    }
    Ok(bytes == chunk)
}

fn injected(name: &Path, step: Step) -> Error {
    Error::io(name, io::Error::other(format!("injected fault after step {step:?}")))
}

fn check_length(path: &str, read: u64, size: u64) -> Result<()> {
    if read < size {
        let what = format!("the content ends after {read} of {size} bytes");
        return Err(Error::io(path, io::Error::new(io::ErrorKind::UnexpectedEof, what)));
    }
    Ok(())
}

fn level_byte(level: i32) -> i8 {
    level.clamp(-128, 127) as i8
}

/// Frames compressed at once when streaming: a few per thread, at most about 8 MiB.
fn batch_frames(frame_size: usize) -> usize {
    let threads = rayon::current_num_threads();
    (2 * threads).max(4).max((8 * threads).min((8 << 20) / frame_size))
}

/// The two commit slots as stored (unchecked).
fn read_slots(file: &File, name: &Path) -> Result<[CommitSlot; 2]> {
    let mut bytes = [0u8; 2 * SLOT_LEN as usize];
    file.read_exact_at(&mut bytes, HEADER_LEN).map_err(|e| Error::io(name, e))?;
    let slot = |i: usize| format::from_bytes::<CommitSlot>(&bytes[i * 32..i * 32 + 32]).unwrap_or_default();
    Ok([slot(0), slot(1)])
}

fn slot_valid(slot: &CommitSlot) -> bool {
    slot.generation != 0 && slot.slot_hash == slot.compute_hash()
}

/// How many entries use each frame, and each raw extent (by offset).
fn count_users(archive: &Archive) -> (Vec<u32>, HashMap<u64, u32>) {
    let mut frames = vec![0u32; archive.frames().len()];
    let mut raw = HashMap::new();
    for entry in archive.entries() {
        match entry.stored_as() {
            StoredAs::Raw if entry.size() > 0 => *raw.entry(entry.offset()).or_insert(0) += 1,
            StoredAs::Raw => {}
            StoredAs::Zstd => archive.entry_frames(&entry).for_each(|f| frames[f as usize] += 1),
        }
    }
    (frames, raw)
}

/// Every byte range a version uses: frames, raw extents, its index and footer.
fn live_ranges(archive: &Archive) -> Vec<Range<u64>> {
    let mut live: Vec<Range<u64>> =
        archive.frames().iter().map(|f| f.offset..f.offset + u64::from(f.stored_len)).collect();
    live.extend(
        archive
            .entries()
            .filter(|e| e.stored_as() == StoredAs::Raw && e.size() > 0)
            .map(|e| e.offset()..e.offset() + e.size()),
    );
    let (index_offset, index_len) = archive.index_extent();
    live.push(index_offset..index_offset + index_len + FOOTER_LEN);
    live
}

/// The parts of `within` no range of `live` covers, in order.
fn complement(mut live: Vec<Range<u64>>, within: Range<u64>) -> Vec<Range<u64>> {
    live.sort_by_key(|r| r.start);
    let mut holes = Vec::new();
    let mut at = within.start;
    for range in live {
        if range.start > at {
            holes.push(at..range.start.min(within.end));
        }
        at = at.max(range.end);
        if at >= within.end {
            break;
        }
    }
    if at < within.end {
        holes.push(at..within.end);
    }
    holes.retain(|h| h.start < h.end);
    holes
}

/// The writer settings that reproduce an archive: its frame size, and the level its compressed
/// entries record (the default level when it has none).
pub fn writer_options_of(archive: &Archive) -> WriterOptions {
    let level = archive
        .entries()
        .find(|e| e.stored_as() == StoredAs::Zstd && e.level() != 0)
        .map_or(DEFAULT_LEVEL, |e| i32::from(e.level()));
    WriterOptions { level, frame_size_log2: archive.header().frame_size_log2 }
}

/// Whether an archive's dead space is past [`COMPACT_DEAD_SHARE`] of its file.
pub fn needs_compaction(archive: &Archive) -> bool {
    past_compaction_threshold(archive.space().dead, archive.file_len())
}

fn past_compaction_threshold(dead_bytes: u64, file_len: u64) -> bool {
    dead_bytes as f64 > COMPACT_DEAD_SHARE * file_len as f64
}

impl CommitReport {
    /// Whether the committed version's dead space is past [`COMPACT_DEAD_SHARE`] of its file (what
    /// [`needs_compaction`] says of the archive, without opening it again).
    pub fn needs_compaction(&self) -> bool {
        past_compaction_threshold(self.dead_bytes, self.file_len)
    }
}

/// Compacts the archive at `path` over itself ([`compact`]), holding its edit lock meanwhile so no
/// editor commits into the version being rewritten ([`Error::Busy`] if one is open). Any version
/// the reader reads is accepted (a 1.0 archive comes out as 2.0).
pub fn compact_file(path: &Path) -> Result<CompactReport> {
    let file = crate::fs::open_regular_for_update(path).map_err(|e| Error::io(path, e))?;
    if !crate::fs::try_lock_exclusive(&file).map_err(|e| Error::io(path, e))? {
        return Err(Error::Busy { file: path.to_owned() });
    }
    compact(&Archive::from_file(&file, path)?, path)
}

/// What [`compact`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Entries written.
    pub entries: usize,
    /// Length of the archive before.
    pub old_len: u64,
    /// Length of the compacted archive.
    pub new_len: u64,
}

/// Rewrites `archive` into `output` (temp file, fsync, rename; `output` may be the archive's own
/// path) without holes, exactly as `mf pack` would pack its content: entries in the pack order
/// (by kind), the archive's level and frame size, each entry's mode and mtime, automatic
/// compression. Every entry is verified as it is read.
pub fn compact(archive: &Archive, output: &Path) -> Result<CompactReport> {
    let mut order: Vec<_> = archive.entries().collect();
    order.sort_by(|a, b| {
        crate::pack::compression_order_key(a.path()).cmp(&crate::pack::compression_order_key(b.path()))
    });
    compact_in_order(archive, output, order)
}

/// [`compact`], but the entries keep their record order: what an updater needs whose patches and
/// file tables number entries in record order (spec/PATCH.md "Content id").
pub fn compact_keeping_order(archive: &Archive, output: &Path) -> Result<CompactReport> {
    compact_in_order(archive, output, archive.entries().collect())
}

fn compact_in_order(archive: &Archive, output: &Path, order: Vec<crate::Entry<'_>>) -> Result<CompactReport> {
    let options = writer_options_of(archive);
    let mut out = crate::AtomicFile::create_removing_stale(output).map_err(|e| Error::io(output, e))?;
    let sink = io::BufWriter::with_capacity(1 << 20, out.file());
    let mut writer = crate::ArchiveWriter::with_name(sink, options, output)?;
    for entry in &order {
        let entry_options =
            EntryOptions { compression: writer::Compression::Auto, mode: entry.mode(), mtime: entry.mtime() };
        if entry.size() <= crate::pack::SMALL_FILE_LIMIT {
            let data = archive.read(entry)?.into_owned();
            writer.add_prepared(writer::prepare_entry(entry.path().to_owned(), data, entry_options, &options)?)?;
        } else {
            let open = || Ok(archive.reader(entry));
            writer.add_rereadable(entry.path(), archive.name(), entry.size(), open, entry_options)?;
        }
    }
    let sink = writer.finish()?;
    sink.into_inner().map_err(|e| Error::io(output, e.into_error()))?;
    out.commit().map_err(|e| Error::io(output, e))?;
    let new_len = std::fs::metadata(output).map_err(|e| Error::io(output, e))?.len();
    Ok(CompactReport { entries: order.len(), old_len: archive.file_len(), new_len })
}
