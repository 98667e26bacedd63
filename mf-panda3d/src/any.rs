//! One entry model over both archive formats mf reads: its own `.mf` container and Panda3D multifiles.
//! The CLI's read commands (list, cat, extract, verify, info, convert) work through [`AnyArchive`], so
//! they behave the same on either; the format is detected from the file's first bytes.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use mf_format::{Archive, Entry, Mtime, StoredAs};

use crate::error::{Error, Result};
use crate::reader::{looks_like_multifile, Multifile, Subfile};

/// Panda3D has no permission bits; its subfiles are ordinary readable files.
const PANDA3D_MODE: u32 = 0o644;

/// An open archive of either format.
#[derive(Debug)]
pub enum AnyArchive {
    /// An mf archive.
    Mf(Archive),
    /// A Panda3D multifile.
    Panda3d(Multifile),
}

impl From<Archive> for AnyArchive {
    fn from(archive: Archive) -> AnyArchive {
        AnyArchive::Mf(archive)
    }
}

impl From<Multifile> for AnyArchive {
    fn from(multifile: Multifile) -> AnyArchive {
        AnyArchive::Panda3d(multifile)
    }
}

/// An entry of an [`AnyArchive`].
#[derive(Debug, Clone, Copy)]
pub enum AnyEntry<'a> {
    /// An entry of an mf archive.
    Mf(Entry<'a>),
    /// A subfile of a Panda3D multifile.
    Panda3d {
        /// Position in name order; unique within the archive.
        index: u32,
        /// The subfile.
        subfile: &'a Subfile,
        /// The subfile's timestamp, or the multifile's when it has none.
        mtime: Option<u32>,
    },
}

/// Which format an archive is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// mf's own `.mf` container.
    Mf,
    /// A Panda3D multifile.
    Panda3d,
}

impl ArchiveFormat {
    /// The format whose magic `head` (a file's first bytes; 8 suffice) starts with, or `None`. The
    /// one place that decides what a file is: opening, diffing and publishing all ask it.
    pub fn sniff(head: &[u8]) -> Option<ArchiveFormat> {
        if looks_like_multifile(head) {
            Some(ArchiveFormat::Panda3d)
        } else if head.starts_with(&mf_format::format::MAGIC) {
            Some(ArchiveFormat::Mf)
        } else {
            None
        }
    }

    /// [`sniff`](Self::sniff) on the first 8 bytes of the file at `path`. A FIFO, device or
    /// directory is an error (it is never read, so this never blocks), as is a file that cannot be opened.
    pub fn detect(path: impl AsRef<Path>) -> std::io::Result<Option<ArchiveFormat>> {
        let (head, len) = mf_format::fs::read_head::<8>(path)?;
        Ok(ArchiveFormat::sniff(&head[..len]))
    }

    /// `mf` or `panda3d`.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveFormat::Mf => "mf",
            ArchiveFormat::Panda3d => "panda3d",
        }
    }
}

impl<'a> AnyEntry<'a> {
    /// A number unique to the entry within its archive.
    pub fn index(&self) -> u32 {
        match self {
            AnyEntry::Mf(entry) => entry.index(),
            AnyEntry::Panda3d { index, .. } => *index,
        }
    }
    /// The entry's path (`/`-separated, relative).
    pub fn path(&self) -> &'a str {
        match self {
            AnyEntry::Mf(entry) => entry.path(),
            AnyEntry::Panda3d { subfile, .. } => subfile.name(),
        }
    }
    /// Content size in bytes.
    pub fn size(&self) -> u64 {
        match self {
            AnyEntry::Mf(entry) => entry.size(),
            AnyEntry::Panda3d { subfile, .. } => subfile.size(),
        }
    }
    /// Bytes the entry occupies in the archive.
    pub fn stored_size(&self) -> u64 {
        match self {
            AnyEntry::Mf(entry) => entry.stored_size(),
            AnyEntry::Panda3d { subfile, .. } => subfile.stored_size(),
        }
    }
    /// Absolute offset of the entry's stored data in the archive file.
    pub fn offset(&self) -> u64 {
        match self {
            AnyEntry::Mf(entry) => entry.offset(),
            AnyEntry::Panda3d { subfile, .. } => subfile.data_offset(),
        }
    }
    /// Unix permission bits (always 0644 for Panda3D subfiles).
    pub fn mode(&self) -> u32 {
        match self {
            AnyEntry::Mf(entry) => entry.mode(),
            AnyEntry::Panda3d { .. } => PANDA3D_MODE,
        }
    }
    /// Modification time, if recorded.
    pub fn mtime(&self) -> Option<Mtime> {
        match self {
            AnyEntry::Mf(entry) => entry.mtime(),
            AnyEntry::Panda3d { mtime, .. } => mtime.map(|secs| Mtime { secs: i64::from(secs), nanos: 0 }),
        }
    }
    /// `none`, `zstd` (mf) or `zlib` (Panda3D).
    pub fn compression(&self) -> &'static str {
        match self {
            AnyEntry::Mf(entry) => match entry.stored_as() {
                StoredAs::Raw => "none",
                StoredAs::Zstd => "zstd",
            },
            AnyEntry::Panda3d { subfile, .. } if subfile.is_compressed() => "zlib",
            AnyEntry::Panda3d { .. } => "none",
        }
    }
    /// Whether the content is stored compressed.
    pub fn is_compressed(&self) -> bool {
        self.compression() != "none"
    }
    /// Whether the entry is encrypted (Panda3D only).
    pub fn is_encrypted(&self) -> bool {
        matches!(self, AnyEntry::Panda3d { subfile, .. } if subfile.is_encrypted())
    }
    /// Added to a Panda3D multifile in text mode.
    pub fn is_text(&self) -> bool {
        matches!(self, AnyEntry::Panda3d { subfile, .. } if subfile.is_text())
    }
    /// xxh3-64 of the content, recorded by mf archives only.
    pub fn content_hash(&self) -> Option<u64> {
        match self {
            AnyEntry::Mf(entry) => Some(entry.content_hash()),
            AnyEntry::Panda3d { .. } => None,
        }
    }
}

/// How an entry's content lies in its archive: what a reader serving byte ranges (the mount) can do
/// without decoding the whole entry.
#[derive(Debug, Clone, Copy)]
pub enum EntryLayout<'a> {
    /// Uncompressed and contiguous: the content is this slice of the archive.
    Contiguous(&'a [u8]),
    /// Independent frames of at most `frame_size` content bytes (mf frames entries), possibly shared
    /// with other entries (solid blocks, deduplicated content): [`AnyArchive::frame_of`] says which
    /// frame holds a byte, and [`AnyArchive::decode_frame_at`] decodes it alone.
    Frames {
        /// The archive's largest frame length.
        frame_size: u64,
    },
    /// Uncompressed and contiguous in a file read on demand (an archive opened with
    /// [`AnyArchive::open_pread`]): ranges are read with [`AnyArchive::read_at`].
    Positioned,
    /// A stream without random access (zlib or encrypted Panda3D subfiles): a range needs the content
    /// decoded from the start, so readers decode it whole ([`AnyArchive::read`]) and keep it.
    Stream,
}

/// Reads up to `n` leading bytes of a file (fewer when it is shorter).
fn is_multifile(path: &Path) -> Result<bool> {
    Ok(ArchiveFormat::detect(path).map_err(|e| Error::io(path, e))? == Some(ArchiveFormat::Panda3d))
}

impl AnyArchive {
    /// Opens an archive of either format, detected by its magic (a Panda3D magic may follow a `#`
    /// header prefix).
    pub fn open(path: impl AsRef<Path>) -> Result<AnyArchive> {
        let path = path.as_ref();
        if is_multifile(path)? {
            Ok(AnyArchive::Panda3d(Multifile::open(path)?))
        } else {
            Ok(AnyArchive::Mf(Archive::open(path)?))
        }
    }

    /// Like [`open`](Self::open), for long-lived readers of files that may change while open (a
    /// mount): both formats read entry data with `pread` ([`Archive::open_pread`],
    /// [`Multifile::open_pread`]), so a truncated file gives read errors instead of SIGBUS.
    pub fn open_pread(path: impl AsRef<Path>) -> Result<AnyArchive> {
        let path = path.as_ref();
        if is_multifile(path)? {
            Ok(AnyArchive::Panda3d(Multifile::open_pread(path)?))
        } else {
            Ok(AnyArchive::Mf(Archive::open_pread(path)?))
        }
    }

    /// Like [`open`](Self::open), from memory.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<std::path::PathBuf>) -> Result<AnyArchive> {
        if ArchiveFormat::sniff(&bytes) == Some(ArchiveFormat::Panda3d) {
            Ok(AnyArchive::Panda3d(Multifile::from_bytes(bytes, name)?))
        } else {
            Ok(AnyArchive::Mf(Archive::from_bytes(bytes, name)?))
        }
    }

    /// Sets the password for encrypted entries (only Panda3D multifiles have them).
    pub fn set_password(&mut self, password: Option<String>) {
        if let AnyArchive::Panda3d(multifile) = self {
            multifile.set_password(password);
        }
    }

    /// Whether a password was set with [`set_password`](Self::set_password).
    pub fn has_password(&self) -> bool {
        match self {
            AnyArchive::Mf(_) => false,
            AnyArchive::Panda3d(multifile) => multifile.has_password(),
        }
    }

    /// Fails when one entry's path is also a directory of another (`a` and `a/b`), which no file
    /// system can hold: extraction and mounting check this before doing anything. mf archives are
    /// refused at open for this; Panda3D multifiles open (Panda3D itself reads them) and fail here.
    pub fn check_paths(&self) -> Result<()> {
        match self {
            AnyArchive::Mf(_) => Ok(()),
            AnyArchive::Panda3d(multifile) => multifile.check_paths(),
        }
    }

    /// How `entry`'s content lies in the archive (see [`EntryLayout`]).
    pub fn layout<'a>(&'a self, entry: &AnyEntry<'a>) -> EntryLayout<'a> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => match entry.stored_as() {
                StoredAs::Raw => archive.raw_bytes(entry).map_or(EntryLayout::Positioned, EntryLayout::Contiguous),
                StoredAs::Zstd => EntryLayout::Frames { frame_size: archive.frame_size() },
            },
            (AnyArchive::Panda3d(multifile), AnyEntry::Panda3d { subfile, .. }) => {
                match multifile.raw_bytes(subfile) {
                    Some(raw) => EntryLayout::Contiguous(raw),
                    // Stored as is in a pread multifile: read where it lies.
                    None if !subfile.is_compressed() && !subfile.is_encrypted() => EntryLayout::Positioned,
                    None => EntryLayout::Stream,
                }
            }
            _ => EntryLayout::Stream,
        }
    }

    /// Decodes frame `frame` of an entry laid out as [`EntryLayout::Frames`] into `out` (replacing its
    /// contents), checked.
    pub fn decode_frame(&self, entry: &AnyEntry<'_>, frame: u64, out: &mut Vec<u8>) -> Result<()> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => Ok(archive.decode_frame(entry, frame, out)?),
            _ => Err(Self::foreign(entry)),
        }
    }

    /// The frame holding byte `offset` of an entry laid out as [`EntryLayout::Frames`], as (frame
    /// number in the archive, offset within that frame's decoded bytes). Entries sharing a frame get
    /// the same frame number, so a cache keyed by it decodes a shared frame once.
    pub fn frame_of(&self, entry: &AnyEntry<'_>, offset: u64) -> Option<(u32, u64)> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => archive.frame_of(entry, offset),
            _ => None,
        }
    }

    /// Decodes frame `frame` of the archive (a number from [`frame_of`](Self::frame_of)) into `out`,
    /// checked.
    pub fn decode_frame_at(&self, frame: u32, out: &mut Vec<u8>) -> Result<()> {
        match self {
            AnyArchive::Mf(archive) => Ok(archive.decode_frame_at(frame, out)?),
            AnyArchive::Panda3d(_) => {
                Err(mf_format::Error::InvalidOption(format!("frame {frame}: Panda3D multifiles have no frames")).into())
            }
        }
    }

    /// Which format the archive is in.
    pub fn format(&self) -> ArchiveFormat {
        match self {
            AnyArchive::Mf(_) => ArchiveFormat::Mf,
            AnyArchive::Panda3d(_) => ArchiveFormat::Panda3d,
        }
    }

    /// The archive's file name (as given at open; used in errors).
    pub fn name(&self) -> &Path {
        match self {
            AnyArchive::Mf(archive) => archive.name(),
            AnyArchive::Panda3d(multifile) => multifile.name(),
        }
    }

    /// Format version as (major, minor).
    pub fn version(&self) -> (u16, u16) {
        match self {
            AnyArchive::Mf(archive) => archive.version(),
            AnyArchive::Panda3d(multifile) => multifile.version(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            AnyArchive::Mf(archive) => archive.len(),
            AnyArchive::Panda3d(multifile) => multifile.len(),
        }
    }

    /// True when the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the archive file in bytes.
    pub fn file_len(&self) -> u64 {
        match self {
            AnyArchive::Mf(archive) => archive.file_len(),
            AnyArchive::Panda3d(multifile) => multifile.file_len(),
        }
    }

    /// Bytes of the index: mf's index section; for Panda3D, from the first index entry to the end of
    /// the chain (for appended, non-contiguous chains this spans the data in between).
    pub fn index_size(&self) -> u64 {
        match self {
            AnyArchive::Mf(archive) => archive.index_extent().1,
            AnyArchive::Panda3d(multifile) => multifile.index_end().saturating_sub(multifile.index_start()),
        }
    }

    /// Sum of the entries' content sizes.
    pub fn total_size(&self) -> u64 {
        match self {
            AnyArchive::Mf(archive) => archive.total_size(),
            AnyArchive::Panda3d(multifile) => multifile.total_size(),
        }
    }

    /// Sum of the entries' stored sizes.
    pub fn total_stored_size(&self) -> u64 {
        match self {
            AnyArchive::Mf(archive) => archive.total_stored_size(),
            AnyArchive::Panda3d(multifile) => multifile.total_stored_size(),
        }
    }

    /// The stored bytes an entry costs: for mf archives, [`Archive::stored_share`] (frames of a
    /// solid block split between the entries in them); for Panda3D subfiles, which share nothing,
    /// the stored size.
    pub fn stored_share(&self, entry: &AnyEntry<'_>) -> u64 {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => archive.stored_share(entry),
            _ => entry.stored_size(),
        }
    }

    fn panda_entry<'a>(multifile: &'a Multifile, index: usize) -> Option<AnyEntry<'a>> {
        let subfile = multifile.subfile(index)?;
        Some(AnyEntry::Panda3d { index: index as u32, subfile, mtime: multifile.mtime(subfile) })
    }

    /// The entry at a position of path order.
    pub fn lookup_entry(&self, position: usize) -> Option<AnyEntry<'_>> {
        match self {
            AnyArchive::Mf(archive) => archive.lookup_entry(position).map(AnyEntry::Mf),
            AnyArchive::Panda3d(multifile) => Self::panda_entry(multifile, position),
        }
    }

    /// Entries in path (byte) order.
    pub fn entries_by_path(&self) -> impl Iterator<Item = AnyEntry<'_>> + '_ {
        (0..self.len()).filter_map(move |position| self.lookup_entry(position))
    }

    /// Finds an entry by path.
    pub fn get(&self, path: &str) -> Option<AnyEntry<'_>> {
        self.lookup_entry(self.lower_bound(path)).filter(|e| e.path() == path)
    }

    /// Number of entries whose path sorts below `key`.
    pub fn lower_bound(&self, key: &str) -> usize {
        match self {
            AnyArchive::Mf(archive) => archive.lower_bound(key),
            AnyArchive::Panda3d(multifile) => multifile.lower_bound(key),
        }
    }

    /// A streaming reader over an entry's content that checks it (mf: xxh3 at the end; Panda3D: zlib
    /// checksum and recorded length). Fails at once for an encrypted entry without a password.
    pub fn reader<'a>(&'a self, entry: &AnyEntry<'a>) -> Result<Box<dyn Read + Send + 'a>> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => Ok(Box::new(archive.reader(entry))),
            (AnyArchive::Panda3d(multifile), AnyEntry::Panda3d { subfile, .. }) => {
                Ok(Box::new(multifile.reader(subfile)?))
            }
            _ => Err(Self::foreign(entry)),
        }
    }

    /// Reads a whole entry, checked.
    pub fn read(&self, entry: &AnyEntry<'_>) -> Result<Cow<'_, [u8]>> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => Ok(archive.read(entry)?),
            (AnyArchive::Panda3d(multifile), AnyEntry::Panda3d { subfile, .. }) => {
                multifile.read(subfile).map(Cow::Owned)
            }
            _ => Err(Self::foreign(entry)),
        }
    }

    /// Random access: reads content bytes from `offset` into `buf`, returning how many (fewer only at
    /// the end). mf decodes only the frames the range touches; a compressed or encrypted Panda3D
    /// subfile is decoded from its start.
    pub fn read_at(&self, entry: &AnyEntry<'_>, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match (self, entry) {
            (AnyArchive::Mf(archive), AnyEntry::Mf(entry)) => Ok(archive.read_at(entry, offset, buf)?),
            (AnyArchive::Panda3d(multifile), AnyEntry::Panda3d { subfile, .. }) => {
                multifile.read_at(subfile, offset, buf)
            }
            _ => Err(Self::foreign(entry)),
        }
    }

    /// Checks every entry; the errors of damaged (or, for Panda3D, undecryptable) entries.
    pub fn verify(&self) -> Vec<Error> {
        match self {
            AnyArchive::Mf(archive) => archive.verify().into_iter().map(Error::from).collect(),
            AnyArchive::Panda3d(multifile) => multifile.verify(),
        }
    }

    /// The mf archive, if that is the format.
    pub fn as_mf(&self) -> Option<&Archive> {
        match self {
            AnyArchive::Mf(archive) => Some(archive),
            AnyArchive::Panda3d(_) => None,
        }
    }

    /// The Panda3D multifile, if that is the format.
    pub fn as_panda3d(&self) -> Option<&Multifile> {
        match self {
            AnyArchive::Panda3d(multifile) => Some(multifile),
            AnyArchive::Mf(_) => None,
        }
    }

    fn foreign(entry: &AnyEntry<'_>) -> Error {
        mf_format::Error::InvalidOption(format!("entry '{}' belongs to an archive of another format", entry.path()))
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panda3d_bytes(prefix: Option<&str>) -> Vec<u8> {
        let files = [("dir/z.bin", &[0u8; 5000][..], Some(6), 5), ("a.txt", b"text", None, 0)];
        mf_test_support::panda3d::multifile_bytes_with(1, 9, prefix, &files)
    }

    #[test]
    fn detects_both_formats_and_offers_one_entry_model() {
        let mf = mf_test_support::mf_bytes([("a.txt", &b"text"[..]), ("dir/z.bin", &[0u8; 5000])]);
        let archives = [
            AnyArchive::from_bytes(mf, "x.mf").unwrap(),
            AnyArchive::from_bytes(panda3d_bytes(None), "x.p3d").unwrap(),
            AnyArchive::from_bytes(panda3d_bytes(Some("#!/usr/bin/env panda3d")), "y.p3d").unwrap(),
        ];
        assert_eq!(
            archives.iter().map(|a| a.format()).collect::<Vec<_>>(),
            [ArchiveFormat::Mf, ArchiveFormat::Panda3d, ArchiveFormat::Panda3d]
        );
        for archive in &archives {
            let paths: Vec<&str> = archive.entries_by_path().map(|e| e.path()).collect();
            assert_eq!(paths, ["a.txt", "dir/z.bin"]);
            let z = archive.get("dir/z.bin").unwrap();
            assert!(z.is_compressed() && z.size() == 5000 && z.stored_size() < 5000);
            assert_eq!(&archive.read(&z).unwrap()[..], &[0u8; 5000][..]);
            let mut buf = [1u8; 8];
            assert_eq!(archive.read_at(&z, 4996, &mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], &[0; 4]);
            let mut content = Vec::new();
            archive.reader(&archive.get("a.txt").unwrap()).unwrap().read_to_end(&mut content).unwrap();
            assert_eq!(content, b"text");
            assert_eq!(archive.lower_bound("dir/"), 1);
            assert!(archive.get("dir").is_none());
            assert!(archive.verify().is_empty());
        }
        let panda = &archives[1];
        assert_eq!(panda.get("dir/z.bin").unwrap().mtime().map(|m| m.secs), Some(5));
        assert_eq!(panda.get("a.txt").unwrap().mtime().map(|m| m.secs), Some(9), "falls back to the header's");
        assert_eq!(panda.get("a.txt").unwrap().mode(), 0o644);
        assert_eq!(panda.get("dir/z.bin").unwrap().compression(), "zlib");
        assert!(panda.get("a.txt").unwrap().content_hash().is_none());
    }

    #[test]
    fn sniffing_decides_the_format_from_the_first_bytes_only() {
        let mf = mf_test_support::mf_bytes([("a.txt", &b"text"[..])]);
        assert_eq!(ArchiveFormat::sniff(&mf[..8]), Some(ArchiveFormat::Mf));
        assert_eq!(ArchiveFormat::sniff(&panda3d_bytes(None)[..8]), Some(ArchiveFormat::Panda3d));
        assert_eq!(ArchiveFormat::sniff(b"#!/usr/bin/env panda3d"), Some(ArchiveFormat::Panda3d));
        assert_eq!(ArchiveFormat::sniff(&mf[..5]), None, "a truncated magic is no archive");
        assert_eq!(ArchiveFormat::sniff(b"PK\x03\x04 zip"), None);

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"hello").unwrap();
        assert_eq!(ArchiveFormat::detect(&plain).unwrap(), None);
        std::fs::write(dir.path().join("x.mf"), &mf).unwrap();
        assert_eq!(ArchiveFormat::detect(dir.path().join("x.mf")).unwrap(), Some(ArchiveFormat::Mf));
        // A FIFO is refused without blocking on it.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(ArchiveFormat::detect(&fifo).is_err());
        assert!(ArchiveFormat::detect(dir.path().join("missing")).is_err());
    }
}
