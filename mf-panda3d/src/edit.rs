//! Panda3D multifiles changed in place: `mf add`, `mf rm` and `mf compact` (spec/PANDA3D.md,
//! "Editing in place").
//!
//! Panda3D's own `add_subfile` + `flush` appends new entries at the end of the file and patches the
//! old last entry's `next` word; `remove_subfile` sets an entry's deleted flag. This editor writes the
//! same shapes, ordered so that one single-sector write commits the whole edit: everything new
//! (data, index entries, terminator) is appended after the archive's logical end and synced first,
//! unlinked and so invisible to every reader; then one write of at most 14 bytes inside one 512-byte
//! sector links it in (or, for a single removal, sets one flag byte), and is synced. A crash leaves
//! the old archive (plus an unlinked tail the next edit cuts off) or the new one. Where no such write
//! exists (the bytes to change cross a sector boundary, or the archive is empty), the archive is
//! rewritten whole in the packed layout (temp file, fsync, rename), as `multify -r` always does.
//!
//! Never are two live entries of one name in the chain: Panda3D lists both and extracts both (the
//! later overwrites the earlier), which is neither version. So a replacement or removal relinks the
//! chain from an entry before the first one that changes, past copies of the entries after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use binrw::{BinRead, BinWrite};
use mf_format::edit::{CommitReport, CompactReport, COMPACT_DEAD_SHARE};
use mf_format::inplace::{AddOptions, EditReport};
use mf_format::Error as FormatError;
use mf_format::{validate_path, AtomicFile, Compression};

use crate::convert::MULTIFY_DEFAULT_LEVEL;
use crate::error::{Error, Result};
use crate::format::{
    pad_to_scale, xor_name, Header, IndexEntry, FLAG_COMPRESSED, FLAG_DELETED, FLAG_ENCRYPTED, HEADER_LEN_V1_1, MAGIC,
    VERSION_MAJOR, VERSION_MINOR,
};
use crate::reader::{Multifile, Subfile};
use crate::writer::multify_would_compress;

/// The unit a disk writes all or nothing (the smallest sector size in use). A commit write never
/// crosses a multiple of it; where it would, another entry links instead, or the archive is rewritten.
pub const SECTOR: u64 = 512;
/// The bytes a head commit rewrites: the first entry's `next`, data fields and flags.
const HEAD_COMMIT_LEN: u64 = 14;

/// A step of the edit after which a test can stop the editor, as a crash would.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// An unlinked tail cut off.
    TruncateTail,
    /// One new subfile's data written.
    Data,
    /// The new index entries and terminator written.
    Index,
    /// Everything appended synced.
    SyncData,
    /// The commit write (link word, head entry or flag byte) done.
    Commit,
    /// The commit write synced.
    SyncCommit,
}

type FaultHook = Box<dyn FnMut(Step) -> bool + Send>;

/// One entry of the index chain as it is on disk.
struct ChainEntry {
    position: u64,
    entry: IndexEntry,
    name: String,
}

/// A new subfile's data, written after the logical end and not linked yet.
struct Staged {
    data_at: u64,
    stored: u64,
    original: u64,
    flags: u16,
    timestamp: u32,
}

/// How an edit is committed.
enum CommitWrite {
    /// One removal: the low byte of the entry's flags gets the deleted bit.
    Flag { at: u64, byte: u8 },
    /// The `next` word of chain entry `from` points at the new entries.
    Link { from: usize },
    /// The first entry is flagged deleted and points at a new chain holding every live entry.
    Head,
    /// No single-sector write can commit it: a packed rewrite (temp file, fsync, rename).
    Rewrite,
}

/// A multifile opened for a change in place (exclusive `flock` for the editor's life).
pub struct MultifileEditor {
    file: File,
    name: PathBuf,
    multifile: Multifile,
    chain: Vec<ChainEntry>,
    scale: u64,
    /// Where the archive's last reachable byte ends (padded); anything after it is an unlinked tail.
    logical_end: u64,
    /// Where the next appended byte goes; `None` until the tail is cut.
    end: Option<u64>,
    compress_new: bool,
    staged: BTreeMap<String, Staged>,
    /// Live names of the version being built.
    names: BTreeSet<String>,
    removed: BTreeSet<String>,
    report: CommitReport,
    fault: Option<FaultHook>,
}

impl std::fmt::Debug for MultifileEditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultifileEditor").field("name", &self.name).finish()
    }
}

fn not_editable(file: &Path, reason: impl Into<String>) -> Error {
    FormatError::NotEditable { file: file.to_owned(), reason: reason.into() }.into()
}

/// Opens `path` for writing without following a final symlink, locks it (without waiting) and
/// reads it through that handle.
fn open_locked(path: &Path) -> Result<(File, Multifile)> {
    let file = mf_format::fs::open_regular_for_update(path).map_err(|e| Error::io(path, e))?;
    if !mf_format::fs::try_lock_exclusive(&file).map_err(|e| Error::io(path, e))? {
        return Err(FormatError::Busy { file: path.to_owned() }.into());
    }
    let multifile = Multifile::from_file(&file, path)?;
    Ok((file, multifile))
}

impl MultifileEditor {
    /// Opens `path` for a change in place. Refused (nothing written): signed archives (any change
    /// invalidates the signatures), version 1.0 (Panda3D repacks those; `mf compact` does), a name
    /// live twice, and index structures that overlap each other or live data.
    pub fn open(path: &Path) -> Result<MultifileEditor> {
        let (file, multifile) = open_locked(path)?;
        if !multifile.signatures().is_empty() {
            return Err(not_editable(
                path,
                "it is signed, and any change invalidates its signatures (change it, then sign it again with multify -S)",
            ));
        }
        if multifile.version().1 < 1 {
            return Err(not_editable(path, "it is version 1.0 (`mf compact` rewrites it as 1.1, as Panda3D does)"));
        }
        if multifile.shadowed_count() > 0 {
            return Err(not_editable(path, "it names a subfile twice (damaged; `mf compact` keeps the first)"));
        }
        let scale = u64::from(multifile.scale_factor());
        let chain = read_chain(&multifile, scale)?;
        let logical_end = check_layout(&multifile, &chain, scale)?;
        let names = multifile.subfiles().iter().map(|s| s.name().to_owned()).collect();
        Ok(MultifileEditor {
            compress_new: multifile.subfiles().iter().any(Subfile::is_compressed),
            file,
            name: path.to_owned(),
            multifile,
            chain,
            scale,
            logical_end,
            end: None,
            staged: BTreeMap::new(),
            names,
            removed: BTreeSet::new(),
            report: CommitReport::default(),
            fault: None,
        })
    }

    /// The archive as it was opened.
    pub fn multifile(&self) -> &Multifile {
        &self.multifile
    }

    /// Whether a new subfile named `name` is stored zlib-compressed: when the archive already holds
    /// a compressed subfile and multify's `-Z` default would compress the extension (so an archive
    /// written by `multify -z` stays compressed and one written without stays stored).
    pub fn compresses(&self, name: &str) -> bool {
        self.compress_new && multify_would_compress(name)
    }

    /// Test hook: `hook(step)` is asked after each step; `true` stops there with an I/O error, leaving
    /// the file as a crash at that point would (bar what the OS had not synced).
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: impl FnMut(Step) -> bool + Send + 'static) {
        self.fault = Some(Box::new(hook));
    }

    fn step(&mut self, step: Step) -> Result<()> {
        if self.fault.as_mut().is_some_and(|hook| hook(step)) {
            let what = format!("stopped after {step:?} (test fault)");
            return Err(Error::io(&self.name, io::Error::other(what)));
        }
        Ok(())
    }

    /// Adds or replaces subfile `name` with `content` (`compress`: zlib at multify's level 6),
    /// timestamped `mtime` when the archive records timestamps. The data is written now, after the
    /// archive's logical end; nothing links it until [`commit`](Self::commit).
    pub fn put(&mut self, name: &str, content: &mut dyn Read, compress: bool, mtime: u32) -> Result<()> {
        validate_path(name)?;
        if name.len() > usize::from(u16::MAX) {
            return Err(FormatError::InvalidPath { path: name.to_owned(), reason: "longer than 65535 bytes" }.into());
        }
        if let Some(old) = self.multifile.get(name).filter(|_| !self.removed.contains(name)) {
            if old.is_encrypted() {
                return Err(not_editable(
                    &self.name,
                    format!("subfile '{name}' is encrypted; mf does not replace encrypted subfiles (multify -e does)"),
                ));
            }
        }
        self.check_conflicts(name)?;
        let data_at = pad_to_scale(self.start_writes()?, self.scale);
        let mut sink = BufWriter::with_capacity(1 << 20, PositionedWriter { file: &self.file, at: data_at });
        let io_err = |e| Error::io(&self.name, e);
        let original = if compress {
            let level = flate2::Compression::new(MULTIFY_DEFAULT_LEVEL);
            let mut encoder = flate2::write::ZlibEncoder::new(&mut sink, level);
            let original = io::copy(content, &mut encoder).map_err(io_err)?;
            encoder.finish().map_err(io_err)?;
            original
        } else {
            io::copy(content, &mut sink).map_err(io_err)?
        };
        let written = sink.into_inner().map_err(|e| io_err(e.into_error()))?;
        let stored = written.at - data_at;
        let too_big = |what| not_editable(&self.name, format!("subfile '{name}' is {what} 4 GiB, the format's limit"));
        u32::try_from(stored).map_err(|_| too_big("stored in more than"))?;
        u32::try_from(original).map_err(|_| too_big("larger than"))?;
        self.end = Some(written.at);
        self.report.bytes_written += stored;
        self.report.bytes_appended += stored;
        let flags = if compress { FLAG_COMPRESSED } else { 0 };
        let timestamp = if self.multifile.timestamp() == 0 { 0 } else { mtime };
        self.staged.insert(name.to_owned(), Staged { data_at, stored, original, flags, timestamp });
        self.names.insert(name.to_owned());
        self.step(Step::Data)
    }

    /// Removes subfile `path`, or every subfile under directory `path`; returns the names removed.
    pub fn remove_tree(&mut self, path: &str) -> Result<Vec<String>> {
        let prefix = format!("{path}/");
        let hits: Vec<String> =
            self.names.iter().filter(|n| n.as_str() == path || n.starts_with(&prefix)).cloned().collect();
        if hits.is_empty() {
            return Err(Error::NotFound { file: self.name.clone(), path: path.to_owned() });
        }
        for name in &hits {
            self.names.remove(name);
            self.staged.remove(name);
            if self.multifile.get(name).is_some() {
                self.removed.insert(name.clone());
            }
        }
        Ok(hits)
    }

    /// Refuses a name that would be a subfile and a directory of another at once.
    fn check_conflicts(&self, name: &str) -> Result<()> {
        for (i, byte) in name.bytes().enumerate() {
            if byte == b'/' && self.names.contains(&name[..i]) {
                return Err(FormatError::PathConflict { path: name.to_owned(), other: name[..i].to_owned() }.into());
            }
        }
        let prefix = format!("{name}/");
        if let Some(other) = self.names.range(prefix.clone()..).next().filter(|n| n.starts_with(&prefix)) {
            return Err(FormatError::PathConflict { path: name.to_owned(), other: other.clone() }.into());
        }
        Ok(())
    }

    /// Before the first append: cuts off the unlinked tail of an earlier, interrupted edit.
    fn start_writes(&mut self) -> Result<u64> {
        if let Some(end) = self.end {
            return Ok(end);
        }
        if self.multifile.file_len() > self.logical_end {
            self.file.set_len(self.logical_end).map_err(|e| Error::io(&self.name, e))?;
            self.step(Step::TruncateTail)?;
        }
        self.end = Some(self.logical_end);
        Ok(self.logical_end)
    }

    /// Commits the edit (see the module documentation) and returns what it wrote. Nothing changed:
    /// nothing is written.
    pub fn commit(mut self) -> Result<CommitReport> {
        if self.staged.is_empty() && self.removed.is_empty() {
            return Ok(CommitReport {
                file_len: self.multifile.file_len(),
                dead_bytes: self.multifile.dead_bytes(),
                ..CommitReport::default()
            });
        }
        match self.plan_commit() {
            CommitWrite::Rewrite => self.rewrite(),
            CommitWrite::Flag { at, byte } => {
                self.commit_write(at, &[byte])?;
                self.finish_report()
            }
            CommitWrite::Link { from } => {
                let first = self.append_chain(from + 1)?;
                let at = self.chain[from].position;
                let word = self.scaled(first)?.to_le_bytes();
                self.commit_write(at, &word)?;
                self.finish_report()
            }
            CommitWrite::Head => {
                let first = self.append_chain(0)?;
                let head = &self.chain[0];
                let mut bytes = Vec::with_capacity(HEAD_COMMIT_LEN as usize);
                bytes.extend_from_slice(&self.scaled(first)?.to_le_bytes());
                bytes.extend_from_slice(&head.entry.data_start.to_le_bytes());
                bytes.extend_from_slice(&head.entry.data_length.to_le_bytes());
                bytes.extend_from_slice(&(head.entry.flags | FLAG_DELETED).to_le_bytes());
                let at = head.position;
                self.commit_write(at, &bytes)?;
                self.finish_report()
            }
        }
    }

    /// Chooses the commit write: a flag byte for a lone removal; else a link from the nearest entry
    /// before the first changed one whose `next` word lies in one sector; else the head; else a rewrite.
    fn plan_commit(&self) -> CommitWrite {
        let changed = |c: &ChainEntry| {
            c.entry.flags & FLAG_DELETED == 0 && (self.removed.contains(&c.name) || self.staged.contains_key(&c.name))
        };
        let first_changed = self.chain.iter().position(changed).unwrap_or(self.chain.len());
        if self.staged.is_empty() && self.removed.len() == 1 {
            let entry = &self.chain[first_changed];
            // The deleted bit is in the flags' low byte: a one-byte write, all or nothing anywhere.
            return CommitWrite::Flag { at: entry.position + 12, byte: (entry.entry.flags as u8) | FLAG_DELETED as u8 };
        }
        let links = (0..first_changed).rev().find(|&i| in_one_sector(self.chain[i].position, 4));
        match links {
            Some(from) => CommitWrite::Link { from },
            None if !self.chain.is_empty() && in_one_sector(self.chain[0].position, HEAD_COMMIT_LEN) => {
                CommitWrite::Head
            }
            None => CommitWrite::Rewrite,
        }
    }

    /// Appends, after the staged data, index entries for the live entries of the chain from `from` on
    /// (copies, pointing at their data where it is) and for the staged subfiles (in name order), then
    /// a terminator; syncs everything appended. Returns the first new entry's position.
    fn append_chain(&mut self, from: usize) -> Result<u64> {
        let mut entries: Vec<IndexEntry> = self.chain[from..]
            .iter()
            .filter(|c| {
                c.entry.flags & FLAG_DELETED == 0 && self.names.contains(&c.name) && !self.staged.contains_key(&c.name)
            })
            .map(|c| c.entry.clone())
            .collect();
        for (name, staged) in &self.staged {
            let compressed = staged.flags & FLAG_COMPRESSED != 0;
            entries.push(IndexEntry {
                next: 0,
                data_start: self.scaled(staged.data_at)?,
                data_length: staged.stored as u32,
                flags: staged.flags,
                uncompressed_length: compressed.then_some(staged.original as u32),
                timestamp: Some(staged.timestamp),
                name: xor_name(name.as_bytes()),
            });
        }
        let first = pad_to_scale(self.start_writes()?, self.scale);
        let mut positions = Vec::with_capacity(entries.len());
        let mut at = first;
        for entry in &entries {
            positions.push(at);
            at = pad_to_scale(at + entry.encoded_len(), self.scale);
        }
        let terminator = at;
        let end = pad_to_scale(terminator + 4, self.scale);
        let mut bytes = io::Cursor::new(Vec::new());
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.next = self.scaled(positions.get(i + 1).copied().unwrap_or(terminator))?;
            bytes.set_position(positions[i] - first);
            entry
                .write_args(&mut bytes, (true,))
                .map_err(|e| Error::io(&self.name, io::Error::other(e.to_string())))?;
        }
        let mut bytes = bytes.into_inner();
        bytes.resize((end - first) as usize, 0);
        self.scaled(end)?;
        self.file.write_all_at(&bytes, first).map_err(|e| Error::io(&self.name, e))?;
        self.report.bytes_written += bytes.len() as u64;
        self.report.bytes_appended += bytes.len() as u64;
        self.end = Some(end);
        self.step(Step::Index)?;
        self.file.sync_all().map_err(|e| Error::io(&self.name, e))?;
        self.step(Step::SyncData)?;
        Ok(first)
    }

    /// The single write that commits, then its sync.
    fn commit_write(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        debug_assert!(in_one_sector(at, bytes.len() as u64));
        self.file.write_all_at(bytes, at).map_err(|e| Error::io(&self.name, e))?;
        self.report.bytes_written += bytes.len() as u64;
        self.step(Step::Commit)?;
        self.file.sync_data().map_err(|e| Error::io(&self.name, e))?;
        self.step(Step::SyncCommit)
    }

    /// The report, with the new version's dead space read back through the reader.
    fn finish_report(self) -> Result<CommitReport> {
        let new = Multifile::from_file(&self.file, &self.name)?;
        Ok(CommitReport { dead_bytes: new.dead_bytes(), file_len: new.file_len(), ..self.report })
    }

    /// The edit as a packed rewrite of the whole archive (temp file, fsync, rename over it).
    fn rewrite(self) -> Result<CommitReport> {
        let mut items: Vec<PackedItem> = self
            .multifile
            .subfiles()
            .iter()
            .filter(|s| self.names.contains(s.name()) && !self.staged.contains_key(s.name()))
            .map(PackedItem::of)
            .collect();
        items.extend(self.staged.iter().map(|(name, s)| PackedItem {
            name: name.clone(),
            flags: s.flags,
            original: s.original,
            timestamp: s.timestamp,
            source_at: s.data_at,
            len: s.stored,
        }));
        let new_len = write_packed(&self.file, &self.multifile, items, &self.name)?;
        let written = self.report.bytes_written + new_len;
        Ok(CommitReport { bytes_written: written, bytes_appended: written, file_len: new_len, ..self.report })
    }

    fn scaled(&self, position: u64) -> Result<u32> {
        u32::try_from(position / self.scale).map_err(|_| {
            not_editable(
                &self.name,
                format!("position {position} does not fit the scale factor {} (the file is too large)", self.scale),
            )
        })
    }
}

/// True when `len` bytes at `at` lie inside one [`SECTOR`].
fn in_one_sector(at: u64, len: u64) -> bool {
    len > 0 && at / SECTOR == (at + len - 1) / SECTOR
}

/// The index chain as it is on disk (the reader has checked it: bounds, loops, names).
fn read_chain(multifile: &Multifile, scale: u64) -> Result<Vec<ChainEntry>> {
    let name = multifile.name();
    let bytes = multifile.file_bytes().ok_or_else(|| not_editable(name, "it is not mapped"))?;
    let mut chain = Vec::new();
    let mut position = multifile.index_start();
    while let Some(at) = usize::try_from(position).ok().and_then(|p| bytes.get(p..)) {
        if at.len() < 4 || at[..4] == [0; 4] || chain.len() > bytes.len() / 4 {
            break;
        }
        let entry = IndexEntry::read_args(&mut io::Cursor::new(at), (true,))
            .map_err(|_| Error::corrupt(name, position, None, "the index entry does not parse"))?;
        let next = u64::from(entry.next) * scale;
        let entry_name = String::from_utf8_lossy(&xor_name(&entry.name)).into_owned();
        chain.push(ChainEntry { position, entry, name: entry_name });
        position = next;
    }
    Ok(chain)
}

/// Checks that the header, every index entry, the terminator and every live subfile's data occupy
/// disjoint bytes (an edit writes into an entry, which must not be anyone's data), and returns the
/// logical end: the end of the last byte anything in the chain refers to, padded.
fn check_layout(multifile: &Multifile, chain: &[ChainEntry], scale: u64) -> Result<u64> {
    let mut used = vec![(0, multifile.index_start(), "the header".to_owned())];
    let mut logical_end = multifile.index_end();
    for c in chain {
        used.push((c.position, c.position + c.entry.encoded_len(), format!("the index entry of '{}'", c.name)));
        let data_at = u64::from(c.entry.data_start) * scale;
        let data_end = data_at + u64::from(c.entry.data_length);
        logical_end = logical_end.max(c.position + c.entry.encoded_len()).max(data_end);
        if c.entry.flags & FLAG_DELETED == 0 && data_end > data_at {
            used.push((data_at, data_end, format!("the data of '{}'", c.name)));
        }
    }
    used.push((multifile.index_end() - 4, multifile.index_end(), "the terminator".to_owned()));
    used.sort();
    for pair in used.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(Error::corrupt(
                multifile.name(),
                pair[1].0,
                None,
                format!("{} overlaps {}: mf does not edit such a file in place", pair[1].2, pair[0].2),
            ));
        }
    }
    Ok(pad_to_scale(logical_end, scale))
}

/// A `Write` at a moving offset of a file (`pwrite`).
struct PositionedWriter<'a> {
    file: &'a File,
    at: u64,
}

impl Write for PositionedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One subfile of a packed rewrite: its index fields and where its stored bytes are now.
struct PackedItem {
    name: String,
    flags: u16,
    original: u64,
    timestamp: u32,
    source_at: u64,
    len: u64,
}

impl PackedItem {
    fn of(subfile: &Subfile) -> PackedItem {
        PackedItem {
            name: subfile.name().to_owned(),
            flags: subfile.flags(),
            original: subfile.size(),
            timestamp: subfile.raw_timestamp(),
            source_at: subfile.data_offset(),
            len: subfile.stored_size(),
        }
    }
}

/// Writes `items` (stored bytes copied from `source` as they are: compressed, encrypted, text flags
/// kept) in the packed layout multify writes, with `multifile`'s prefix, scale factor and timestamp,
/// to `output` (temp file, fsync, rename). Returns the new length.
fn write_packed(source: &File, multifile: &Multifile, mut items: Vec<PackedItem>, output: &Path) -> Result<u64> {
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let scale = u64::from(multifile.scale_factor());
    let prefix = multifile.header_prefix().to_vec();
    let index_start = pad_to_scale(prefix.len() as u64 + HEADER_LEN_V1_1, scale);
    let scaled = |position: u64| {
        u32::try_from(position / scale)
            .map_err(|_| not_editable(output, format!("position {position} does not fit the scale factor {scale}")))
    };
    let mut entries = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    let mut at = index_start;
    for item in &items {
        let sized = item.flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0;
        let entry = IndexEntry {
            next: 0,
            data_start: 0,
            data_length: item.len as u32,
            flags: item.flags,
            uncompressed_length: sized.then_some(item.original as u32),
            timestamp: Some(item.timestamp),
            name: xor_name(item.name.as_bytes()),
        };
        positions.push(at);
        at = pad_to_scale(at + entry.encoded_len(), scale);
        entries.push(entry);
    }
    let terminator = at;
    let mut data_at = pad_to_scale(terminator + 4, scale);
    for (i, (entry, item)) in entries.iter_mut().zip(&items).enumerate() {
        entry.next = scaled(positions.get(i + 1).copied().unwrap_or(terminator))?;
        entry.data_start = scaled(data_at)?;
        data_at = pad_to_scale(data_at + item.len, scale);
    }
    let header = Header {
        magic: MAGIC,
        version_major: VERSION_MAJOR,
        version_minor: VERSION_MINOR,
        scale_factor: multifile.scale_factor(),
        timestamp: Some(multifile.timestamp()),
    };
    let mut head = io::Cursor::new(prefix);
    head.set_position(head.get_ref().len() as u64);
    let binrw_err = |e: binrw::Error| Error::io(output, io::Error::other(e.to_string()));
    header.write(&mut head).map_err(binrw_err)?;
    for (entry, &position) in entries.iter().zip(&positions) {
        head.set_position(position);
        entry.write_args(&mut head, (true,)).map_err(binrw_err)?;
    }
    let mut head = head.into_inner();
    head.resize(pad_to_scale(terminator + 4, scale) as usize, 0);
    let mut out = AtomicFile::create_removing_stale(output).map_err(|e| Error::io(output, e))?;
    let io_err = |e| Error::io(output, e);
    let mut sink = BufWriter::with_capacity(1 << 20, out.file());
    sink.write_all(&head).map_err(io_err)?;
    let mut written = head.len() as u64;
    for item in &items {
        copy_range(source, multifile.name(), item.source_at, item.len, &mut sink)?;
        let padded = pad_to_scale(written + item.len, scale);
        io::copy(&mut io::repeat(0).take(padded - written - item.len), &mut sink).map_err(io_err)?;
        written = padded;
    }
    sink.into_inner().map_err(|e| io_err(e.into_error()))?;
    out.commit().map_err(io_err)?;
    Ok(written)
}

/// Copies `len` bytes at `at` of `source` into `sink`.
fn copy_range(source: &File, name: &Path, mut at: u64, len: u64, sink: &mut dyn Write) -> Result<()> {
    let mut buffer = vec![0u8; (1 << 20).min(len as usize)];
    let end = at + len;
    while at < end {
        let n = buffer.len().min((end - at) as usize);
        source.read_exact_at(&mut buffer[..n], at).map_err(|e| Error::io(name, e))?;
        sink.write_all(&buffer[..n]).map_err(|e| Error::io(name, e))?;
        at += n as u64;
    }
    Ok(())
}

/// Rewrites the multifile at `path` in the packed layout `multify` writes (entries sorted by name,
/// then the terminator, then the data in the same order), keeping its header prefix, scale factor,
/// timestamp and every subfile's stored bytes and flags: `output` (temp file, fsync, rename; may be
/// `path` itself). Holds `path`'s edit lock meanwhile. Every subfile is decoded first, so a damaged
/// one fails the compaction before anything is written. Signed archives are refused (the signatures
/// would be dropped); version 1.0 comes out as 1.1 with no timestamps.
pub fn compact_file(path: &Path, output: &Path) -> Result<CompactReport> {
    let (file, multifile) = open_locked(path)?;
    if !multifile.signatures().is_empty() {
        return Err(not_editable(path, "it is signed, and rewriting it drops its signatures"));
    }
    // Damage is found before anything is written (encrypted subfiles, which need the password to
    // decode, are copied unchecked).
    for subfile in multifile.subfiles().iter().filter(|s| !s.is_encrypted()) {
        multifile.verify_subfile(subfile)?;
    }
    let items = multifile.subfiles().iter().map(PackedItem::of).collect();
    let new_len = write_packed(&file, &multifile, items, output)?;
    Ok(CompactReport { entries: multifile.len(), old_len: multifile.file_len(), new_len })
}

/// Whether `multifile`'s dead bytes are past [`COMPACT_DEAD_SHARE`] of its file (the rule of mf
/// archives): edits then compact unless told not to.
pub fn needs_compaction(multifile: &Multifile) -> bool {
    multifile.dead_bytes() as f64 > COMPACT_DEAD_SHARE * multifile.file_len() as f64
}

/// Adds (or replaces) the files and directories `paths` in the multifile `archive`, in place, by the
/// rules of [`mf_format::inplace::add_paths`] (`-C` base, `--update`: only subfiles whose decoded
/// content differs). New subfiles are compressed as [`MultifileEditor::compresses`] says, except
/// extensions `options.pack.store_extensions` names.
pub fn add_paths(archive: &Path, paths: &[PathBuf], options: &AddOptions) -> Result<EditReport> {
    let mut editor = MultifileEditor::open(archive)?;
    let mut report = EditReport::default();
    let inputs = mf_format::inplace::collect_paths(archive, paths, options, &mut report.skipped)?;
    for input in &inputs {
        let io_err = |e| Error::io(&input.fs_path, e);
        let mut file = mf_format::fs::open_regular(&input.fs_path).map_err(io_err)?;
        let metadata = file.metadata().map_err(io_err)?;
        let existing = editor.multifile().get(&input.entry_path).cloned();
        if let Some(old) = existing.as_ref().filter(|_| options.update) {
            if same_content(editor.multifile(), old, &mut file, metadata.len())? {
                report.unchanged.push(input.entry_path.clone());
                continue;
            }
            io::Seek::rewind(&mut file).map_err(io_err)?;
        }
        let compress = editor.compresses(&input.entry_path) && input.options.compression != Compression::Store;
        let mtime = u32::try_from(metadata.mtime().max(0)).unwrap_or(u32::MAX);
        editor.put(&input.entry_path, &mut file.take(metadata.len()), compress, mtime)?;
        let list = if existing.is_some() { &mut report.replaced } else { &mut report.added };
        list.push(input.entry_path.clone());
    }
    finish(editor, options.no_compact, report)
}

/// Removes the subfiles `paths` (a directory path removes everything under it) in place.
pub fn remove_paths(archive: &Path, paths: &[String], no_compact: bool) -> Result<EditReport> {
    let mut editor = MultifileEditor::open(archive)?;
    let mut report = EditReport::default();
    for path in paths {
        report.removed.extend(editor.remove_tree(path.trim_end_matches('/'))?);
    }
    finish(editor, no_compact, report)
}

/// Commits, then compacts when the new version's dead space passes the threshold.
fn finish(editor: MultifileEditor, no_compact: bool, mut report: EditReport) -> Result<EditReport> {
    let name = editor.name.clone();
    report.commit = editor.commit()?;
    if !no_compact && report.commit.needs_compaction() {
        report.compacted = Some(compact_file(&name, &name)?);
    }
    Ok(report)
}

/// Whether `file` (`size` bytes) holds exactly `subfile`'s decoded content. An encrypted subfile
/// cannot be compared (nor replaced): an error.
fn same_content(multifile: &Multifile, subfile: &Subfile, file: &mut File, size: u64) -> Result<bool> {
    if subfile.is_encrypted() {
        return Err(not_editable(
            multifile.name(),
            format!("subfile '{}' is encrypted; mf does not replace encrypted subfiles", subfile.name()),
        ));
    }
    if subfile.size() != size {
        return Ok(false);
    }
    let mut old = multifile.reader(subfile)?;
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut old, &mut a).map_err(|e| Error::io(multifile.name(), e))?;
        let m = read_full(file, &mut b[..n.max(1)]).map_err(|e| Error::io(multifile.name(), e))?;
        if a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_write_fits_a_sector_or_is_not_made() {
        assert!(in_one_sector(508, 4) && in_one_sector(0, HEAD_COMMIT_LEN) && in_one_sector(512, 4));
        assert!(!in_one_sector(509, 4) && !in_one_sector(511, 2) && !in_one_sector(500, HEAD_COMMIT_LEN));
        assert!(in_one_sector(511, 1), "the flag byte fits anywhere");
        assert!(!in_one_sector(0, 0));
    }
}
