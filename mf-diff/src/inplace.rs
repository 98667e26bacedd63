//! Applying an archive patch in place (spec/PATCH.md "Applying in place"): the archive is changed
//! through [`mf_format::Editor`], so only new and changed entries are written (into holes or after
//! the end), unchanged entries stay where they are, and the commit protocol makes the change
//! all-or-nothing. Every written entry streams through the same checks as a rebuild (size and xxh3,
//! and the caller's [`EntryCheck`]) before the commit; a failure drops the editor uncommitted, so the
//! archive stays the old version.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use mf_format::{Compression, Editor, EntryOptions};

use crate::apply::{ArchiveOld, BaseMatch, NewContent, NewEntry, Patch, Verify, WalkedEntry};
use crate::content_id::{content_id, ContentIdBuilder, IdEntry};
use crate::error::{Error, Result};
use crate::source::Source;
use crate::wire::{FrameRun, PayloadDesc, Storage};

/// A caller's check of each entry of the new version, before the commit (mf-release checks them
/// against the signed file table). Its errors abort the apply: nothing is committed.
pub trait EntryCheck {
    /// Entry `index` (record order) of the new version. `written` is false for an entry left as it
    /// is (a copy of old entry `copy_of` under its own path, mode and mtime), true when its content
    /// follows through [`EntryCheck::content`].
    fn entry(&mut self, index: usize, entry: &NewEntry, written: bool) -> Result<()>;
    /// The next bytes of the entry being written (already counted towards its size and xxh3).
    fn content(&mut self, bytes: &[u8]);
    /// The entry being written is complete (its size and xxh3 matched).
    fn finish(&mut self) -> Result<()>;
    /// Every entry was seen (`entries` of them); called before the commit.
    fn complete(&mut self, entries: usize) -> Result<()> {
        let _ = entries;
        Ok(())
    }
}

/// Fault injection for crash tests: asked after each step of the editor's commit protocol.
#[doc(hidden)]
pub type FaultHook = Box<dyn FnMut(mf_format::edit::Step) -> bool + Send>;

/// Options of [`apply_in_place`].
#[derive(Default)]
pub struct InPlaceOptions<'a> {
    /// Checks every new entry before the commit.
    pub check: Option<&'a mut dyn EntryCheck>,
    /// Test hook: stops the commit at a step as a crash would.
    #[doc(hidden)]
    pub fault: Option<FaultHook>,
}

/// How an in-place apply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlaceOutcome {
    /// Entries of the new version.
    pub entries: usize,
    /// Entries whose content was written (changed, new, renamed or with new metadata).
    pub entries_written: usize,
    /// Entries removed.
    pub entries_removed: usize,
    /// Every byte written to the archive (data, index, footer, commit slot).
    pub bytes_written: u64,
    /// The archive's length afterwards.
    pub len: u64,
    /// Dead bytes of the new version.
    pub dead_bytes: u64,
    /// The committed generation.
    pub generation: u64,
    /// The new version's content id, checked against the patch's (2.2) and on the committed archive.
    pub content_id: u64,
    /// Whether the base was the very archive the patch was made from, or the same content laid out
    /// differently.
    pub base: BaseMatch,
}

/// Whether [`apply_in_place`] can apply `patch` to `archive`: an archive patch between mf archives
/// (no Panda3D side) and an mf archive of container version 2 as the base. Other patches rewrite the
/// whole file ([`crate::panda3d::apply_any`]).
pub fn can_apply_in_place(patch: &Path, archive: &Path) -> Result<bool> {
    let header = *Patch::open(patch)?.header();
    let archive_patch = header.kind == crate::wire::KIND_ARCHIVE
        && header.flags & (crate::wire::FLAG_OLD_PANDA3D | crate::wire::FLAG_NEW_PANDA3D) == 0;
    Ok(archive_patch
        && crate::panda3d::detect(archive) == Some(mf_panda3d::ArchiveFormat::Mf)
        && mf_format::Archive::open_pread(archive).is_ok_and(|a| a.version().0 == mf_format::format::VERSION_MAJOR))
}

/// Applies the archive patch `patch` to the mf archive `archive` in place (module docs).
pub fn apply_in_place(
    patch: &Path,
    archive: &Path,
    options: InPlaceOptions<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<InPlaceOutcome> {
    let patch = Patch::open(patch)?;
    let header = patch.header();
    if !patch.is_archive() || header.flags & (crate::wire::FLAG_OLD_PANDA3D | crate::wire::FLAG_NEW_PANDA3D) != 0 {
        return Err(Error::Unsupported {
            file: patch.path().to_owned(),
            what: "only a patch between mf archives applies in place (this one rewrites the whole file)".into(),
        });
    }
    let mut editor = Editor::open(archive)?;
    if let Some(fault) = options.fault {
        editor.set_fault_hook(fault);
    }
    // Old content is read through a handle of its own; the editor's lock keeps the version still.
    let src = Source::open_archive(archive)?;
    let old = src.archive.as_ref().expect("opened as an archive");
    if old.generation() != editor.archive().generation() || old.footer() != editor.archive().footer() {
        return Err(Error::Archive(mf_format::Error::Busy { file: archive.to_owned() }));
    }
    let base = patch.check_archive_base(&src, old, archive)?;
    let new_paths = new_paths(&patch, old);
    let kept: HashSet<&str> = new_paths.iter().map(String::as_str).collect();
    // Removed first: a new entry may take a path under a removed one ('a' removed, 'a/b' added).
    let removed: Vec<String> =
        old.entries().map(|e| e.path().to_owned()).filter(|p| !kept.contains(p.as_str())).collect();
    for path in &removed {
        editor.remove(path)?;
    }

    let mut check = options.check;
    let keep_masks = keep_masks(&patch, old, &new_paths, &mut editor);
    // Without a caller's check, kept frames are neither read nor decoded: only the rebuilt runs
    // stream. With one, every byte streams (the kept ones decoded) so the check and the entry's
    // hash see the whole content; the kept frames are still not written.
    let bound_by_content_id = patch.content_ids().is_some();
    let skip_kept: Vec<bool> =
        keep_masks.iter().map(|m| m.is_some() && check.is_none() && bound_by_content_id).collect();
    let frame_size = editor.options().frame_size() as u64;
    let mut id = ContentIdBuilder::default();
    let mut index = 0usize;
    let mut written = 0usize;
    let old_entries = ArchiveOld { src: &src, archive: old };
    patch.walk_records(&old_entries, archive, Verify::ReadBases, &skip_kept, |record, walked| -> Result<()> {
        let WalkedEntry { meta, stream } = walked;
        let (mtime_secs, mtime_nanos) = meta.mtime.map_or((0, 0), |m| (m.secs, m.nanos));
        id.push(IdEntry {
            path: &meta.path,
            size: meta.size,
            content_hash: meta.xxh3,
            mode: meta.mode,
            mtime_secs,
            mtime_nanos,
        });
        let unchanged = match meta.content {
            NewContent::CopyOf(i) => {
                old.entry(i).is_some_and(|e| e.path() == meta.path && e.mode() == meta.mode && e.mtime() == meta.mtime)
            }
            NewContent::Bytes(_) => false,
        };
        if let Some(check) = check.as_deref_mut() {
            check.entry(index, &meta, !unchanged)?;
        }
        index += 1;
        if unchanged {
            return Ok(());
        }
        let compression = match &record.storage {
            Storage::None => Compression::Store,
            Storage::Solid => Compression::Solid,
            _ => Compression::Auto,
        };
        let entry_options = EntryOptions { compression, mode: meta.mode, mtime: meta.mtime };
        let keep = keep_masks[index - 1].as_deref().map(|mask| (mask, skip_kept[index - 1]));
        let target = PutTarget { editor: &mut editor, archive, frame_size };
        let more = target.put(&meta, &entry_options, keep, stream, &mut check)?;
        if more != 0 {
            return Err(Error::OutputMismatch {
                file: archive.to_owned(),
                entry: Some(meta.path.clone()),
                what: format!("the rebuilt content is longer than its {} bytes", meta.size),
            });
        }
        if let Some(check) = check.as_deref_mut() {
            check.finish()?;
        }
        written += 1;
        progress(meta.size);
        Ok(())
    })?;
    let expected = id.finish();
    if let Some(check) = check {
        check.complete(index)?;
    }
    let order: Vec<&str> = new_paths.iter().map(String::as_str).collect();
    editor.set_order(&order)?;
    let report = editor.commit()?;
    // The committed index is read back: its entry list must be the one just checked.
    let committed = mf_format::Archive::open_pread(archive)?;
    let got = content_id(&committed);
    if got != expected {
        return Err(Error::OutputMismatch {
            file: archive.to_owned(),
            entry: None,
            what: format!("the committed archive has content id {got:016x}, not the rebuilt {expected:016x}"),
        });
    }
    Ok(InPlaceOutcome {
        entries: new_paths.len(),
        entries_written: written,
        entries_removed: removed.len(),
        bytes_written: report.bytes_written,
        len: report.file_len,
        dead_bytes: report.dead_bytes,
        generation: report.generation,
        content_id: got,
        base,
    })
}

/// The new version's paths in record order (a record's explicit path, or its base's).
fn new_paths(patch: &Patch, old: &mf_format::Archive) -> Vec<String> {
    patch
        .records()
        .iter()
        .filter_map(|r| r.path.clone().or_else(|| r.old_index.and_then(|i| old.entry(i)).map(|e| e.path().to_owned())))
        .collect()
}

/// Where a written entry goes.
struct PutTarget<'e> {
    editor: &'e mut Editor,
    archive: &'e Path,
    frame_size: u64,
}

impl PutTarget<'_> {
    /// Streams one written entry into the editor (through the caller's check), keeping the frames
    /// `keep` names when it is given (`(mask, skipped)`: `skipped` when the stream already leaves
    /// them out). Returns how many bytes the stream still held past the entry (0 unless it lies).
    fn put(
        self,
        meta: &NewEntry,
        options: &EntryOptions,
        keep: Option<(&[bool], bool)>,
        stream: &mut crate::apply::EntryStream<'_>,
        check: &mut Option<&mut dyn EntryCheck>,
    ) -> Result<usize> {
        let archive = self.archive;
        let mut tee = Tee { stream: &mut *stream, check };
        match keep {
            Some((keep, skipped)) => {
                let frame_size = self.frame_size;
                let mut changed = ChangedFrames { inner: &mut tee, keep, frame_size, pos: 0, skipped };
                let put = self.editor.put_keeping_frames(&meta.path, options, meta.size, meta.xxh3, keep, &mut changed);
                put.map_err(|e| changed.inner.stream.take_failure().unwrap_or(Error::Archive(e)))?;
                // The rest (kept frames after the last changed one) streams through the checks.
                let mut rest = Vec::new();
                let read = changed.read_to_end(&mut rest);
                read.map_err(|e| stream.take_failure().unwrap_or_else(|| Error::io(archive, e)))?;
                Ok(rest.len())
            }
            None => {
                let put = self.editor.put(&meta.path, options, &mut tee, meta.size);
                // The stream's own error (size, hash, a damaged payload) is the real one.
                put.map_err(|e| stream.take_failure().unwrap_or(Error::Archive(e)))?;
                // The editor reads exactly `size` bytes; the end of the stream is where its hash is checked.
                let mut rest = [0u8; 1];
                stream.read(&mut rest).map_err(|e| stream.take_failure().unwrap_or_else(|| Error::io(archive, e)))
            }
        }
    }
}

/// For each record, the frames the editor can keep where they are (a frames record whose base is
/// the entry at its own path, stored in frames of its own of the patch's frame size), else `None`.
fn keep_masks(
    patch: &Patch,
    old: &mf_format::Archive,
    new_paths: &[String],
    editor: &mut Editor,
) -> Vec<Option<Vec<bool>>> {
    let frame_size = editor.options().frame_size() as u64;
    let same_frames = editor.options().frame_size_log2 == patch.frame_size_log2();
    patch
        .records()
        .iter()
        .zip(new_paths)
        .map(|(record, path)| {
            let PayloadDesc::Frames(runs) = &record.payload else { return None };
            let base_here = record.old_index.and_then(|i| old.entry(i)).is_some_and(|b| b.path() == path);
            let keep = keep_mask(runs, record.size, frame_size);
            let solid = matches!(record.storage, Storage::Solid);
            (same_frames && base_here && !solid && editor.can_keep_frames(path, record.size, &keep)).then_some(keep)
        })
        .collect()
}

/// Per new frame: whether a kept run covers it.
fn keep_mask(runs: &[FrameRun], size: u64, frame_size: u64) -> Vec<bool> {
    let mut mask = Vec::with_capacity(size.div_ceil(frame_size) as usize);
    for run in runs {
        mask.extend(std::iter::repeat_n(run.patch.is_none(), run.frames as usize));
    }
    mask
}

/// The bytes of an entry's changed frames: everything its stream yields (when `skipped`, the stream
/// already leaves the kept frames out) minus, otherwise, the kept frames' bytes, which are read
/// (and so checked) but not handed on.
struct ChangedFrames<'t, 's, 'a, 'c, 'd> {
    inner: &'t mut Tee<'s, 'a, 'c, 'd>,
    keep: &'t [bool],
    frame_size: u64,
    pos: u64,
    skipped: bool,
}

impl Read for ChangedFrames<'_, '_, '_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.skipped {
            return self.inner.read(buf);
        }
        let mut scratch = [0u8; 64 << 10];
        loop {
            let frame = self.pos / self.frame_size;
            let frame_left = (frame + 1) * self.frame_size - self.pos;
            let kept = self.keep.get(frame as usize).copied().unwrap_or(false);
            let target: &mut [u8] = if kept { &mut scratch } else { &mut *buf };
            let want = (frame_left as usize).min(target.len());
            let n = self.inner.read(&mut target[..want])?;
            self.pos += n as u64;
            if !kept || n == 0 {
                return Ok(n);
            }
        }
    }
}

/// An entry's checked stream, handing what it reads to the caller's check too.
struct Tee<'s, 'a, 'c, 'd> {
    stream: &'s mut crate::apply::EntryStream<'a>,
    check: &'c mut Option<&'d mut dyn EntryCheck>,
}

impl Read for Tee<'_, '_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.read(buf)?;
        if let Some(check) = self.check.as_deref_mut() {
            check.content(&buf[..n]);
        }
        Ok(n)
    }
}
