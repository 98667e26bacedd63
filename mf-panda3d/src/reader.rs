//! Reads Panda3D multifiles in place: maps the file (or, for long-lived readers of files that may
//! change, reads it with `pread`), follows the index chain as Panda3D does (with loop detection and
//! bounds checks), and decodes subfiles (zlib, encryption) on demand.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use binrw::BinRead;
use rayon::prelude::*;

use crate::crypto;
use crate::error::{Error, Result};
use crate::format::{
    pad_to_scale, xor_name, Header, IndexEntry, FLAG_COMPRESSED, FLAG_DELETED, FLAG_ENCRYPTED, FLAG_SIGNATURE,
    FLAG_TEXT, HEADER_LEN_V1_0, HEADER_LEN_V1_1, MAGIC, VERSION_MAJOR, VERSION_MINOR,
};
use mf_format::mapping::Backing;
use mf_format::validate_path;

/// Largest ratio a zlib stream can reach (deflate's limit is about 1032:1); caps allocations made from
/// a subfile's recorded original length.
const MAX_ZLIB_RATIO: u64 = 1100;

/// Longest index entry: fixed fields (at most 24 bytes) and a name of up to 65535 bytes.
const MAX_INDEX_ENTRY_LEN: usize = 24 + 65535;
/// How far the `#` header prefix is looked for, and how much of a signature record is read: both are
/// lines of text or a certificate chain, never megabytes.
const MAX_PREFIX_LEN: usize = 1 << 20;
const MAX_SIGNATURE_LEN: usize = 16 << 20;
/// What a `pread` multifile reads at a time while following the index chain (entries usually lie
/// back to back, so one read serves many).
const INDEX_WINDOW: usize = 1 << 20;

/// Where a multifile's bytes come from.
enum Source {
    /// Mapped or in memory: the whole file as one slice.
    Whole(Backing),
    /// Read with `pread` on demand, for files that may shrink while open (a mount): a missing region
    /// is a read error, never SIGBUS. `prefix` holds the `#` header prefix, which
    /// [`Multifile::header_prefix`] lends out.
    Pread { file: File, len: u64, prefix: Vec<u8> },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Whole(backing) => backing.bytes().len() as u64,
            Source::Pread { len, .. } => *len,
        }
    }
}

/// The file's bytes while the index is parsed: slices of the whole file, or windows read with
/// `pread` and kept until a request falls outside them.
struct Window<'s> {
    source: &'s Source,
    start: u64,
    buf: Vec<u8>,
}

impl<'s> Window<'s> {
    fn new(source: &'s Source) -> Window<'s> {
        Window { source, start: 0, buf: Vec::new() }
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file, none past it).
    fn get(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let (file, file_len) = match self.source {
            Source::Whole(backing) => {
                let rest = usize::try_from(offset).ok().and_then(|o| backing.bytes().get(o..)).unwrap_or_default();
                return Ok(&rest[..len.min(rest.len())]);
            }
            Source::Pread { file, len, .. } => (file, *len),
        };
        let end = offset.saturating_add(len as u64).min(file_len);
        let held_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > held_end {
            let want = end.saturating_sub(offset).max(INDEX_WINDOW as u64).min(file_len.saturating_sub(offset));
            self.buf.clear();
            self.buf.resize(want as usize, 0);
            file.read_exact_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + (end.saturating_sub(offset)) as usize])
    }
}

/// A subfile's stored bytes read with `pread`, in order; a file that ends early is an error naming
/// where it ended.
struct PreadRange<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for PreadRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.end - self.at).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(truncated(self.at));
        }
        self.at += n as u64;
        Ok(n)
    }
}

fn truncated(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ends at offset {at}, before the subfile's data does (truncated while open?)"),
    )
}

/// True when `head` (the first bytes of a file) looks like a Panda3D multifile: the magic at offset 0,
/// or a `#` header-prefix line (the magic must then follow the prefix).
pub fn looks_like_multifile(head: &[u8]) -> bool {
    head.starts_with(&MAGIC) || head.first() == Some(&b'#')
}

/// A live subfile of a multifile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subfile {
    name: String,
    index_offset: u64,
    data_offset: u64,
    data_length: u64,
    flags: u16,
    original_length: u64,
    timestamp: u32,
    /// Bytes of its index entry, padded to the scale factor (for the dead-space count).
    entry_len: u64,
}

impl Subfile {
    /// The subfile's name (a valid entry path).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Position of the subfile's index entry in the file.
    pub fn index_offset(&self) -> u64 {
        self.index_offset
    }
    /// Position of the stored data in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    /// Bytes stored in the archive.
    pub fn stored_size(&self) -> u64 {
        self.data_length
    }
    /// Size of the content (the recorded original length for compressed or encrypted subfiles).
    pub fn size(&self) -> u64 {
        self.original_length
    }
    /// The raw flags of the index entry.
    pub fn flags(&self) -> u16 {
        self.flags
    }
    /// Stored zlib-compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }
    /// Stored encrypted (needs the password).
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }
    /// Added in text mode (stored with `\n` line ends).
    pub fn is_text(&self) -> bool {
        self.flags & FLAG_TEXT != 0
    }
    /// The subfile's own timestamp (0 when it uses the multifile's).
    pub fn raw_timestamp(&self) -> u32 {
        self.timestamp
    }
}

/// A signature record (flags 0x20): not a file, reported by `info`.
#[derive(Debug, Clone)]
pub struct Signature {
    /// Position of the record's index entry.
    pub index_offset: u64,
    /// Position of the record's data.
    pub data_offset: u64,
    /// Length of the record's data.
    pub data_length: u64,
    /// Subject of the signing certificate, or why it could not be read.
    pub subject: std::result::Result<String, String>,
    /// Number of certificates in the record (signing certificate first).
    pub certificates: u32,
}

/// An open Panda3D multifile. `&Multifile` is `Sync`.
pub struct Multifile {
    name: PathBuf,
    source: Source,
    prefix_len: u64,
    header: Header,
    subfiles: Vec<Subfile>,
    signatures: Vec<Signature>,
    deleted: usize,
    shadowed: usize,
    /// Bytes of signature records (entries and data, padded), which are live but not subfiles.
    signature_bytes: u64,
    needs_repack: bool,
    index_start: u64,
    index_end: u64,
    password: Option<String>,
}

impl std::fmt::Debug for Multifile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multifile").field("name", &self.name).field("subfiles", &self.subfiles.len()).finish()
    }
}

impl Multifile {
    /// Maps and opens a multifile, reading its header and whole index chain (not subfile data).
    pub fn open(path: impl AsRef<Path>) -> Result<Multifile> {
        let path = path.as_ref();
        Self::from_backing(path.to_owned(), Backing::open(path)?)
    }

    /// Opens a multifile held in memory; `name` is used in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Multifile> {
        Self::from_backing(name.into(), Backing::Owned(bytes))
    }

    /// Like [`open`](Self::open), for long-lived readers of files that may change while open (a
    /// mount): nothing is mapped; the index is read at open and subfile data with `pread` when it is
    /// read, so a file truncated meanwhile gives read errors naming the subfile, never SIGBUS.
    /// [`raw_bytes`](Self::raw_bytes) is then `None` (read with [`read_at`](Self::read_at)).
    pub fn open_pread(path: impl AsRef<Path>) -> Result<Multifile> {
        let path = path.as_ref();
        let file = mf_format::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Self::parse(path.to_owned(), Source::Pread { file, len, prefix: Vec::new() })
    }

    /// Maps and opens the already open `file` (named `name` in errors): an editor reads the very
    /// file it locked, never the path again.
    pub fn from_file(file: &File, name: impl Into<PathBuf>) -> Result<Multifile> {
        let name = name.into();
        let backing = Backing::from_file(file, &name)?;
        Self::from_backing(name, backing)
    }

    /// The whole file's bytes, when it is mapped or in memory (not for [`open_pread`](Self::open_pread)).
    pub(crate) fn file_bytes(&self) -> Option<&[u8]> {
        match &self.source {
            Source::Whole(backing) => Some(backing.bytes()),
            Source::Pread { .. } => None,
        }
    }

    fn from_backing(name: PathBuf, backing: Backing) -> Result<Multifile> {
        Self::parse(name, Source::Whole(backing))
    }

    /// Reads the header and follows the whole index chain. Over the ~80-line guide: one pass over
    /// the chain whose checks share its running state (visited entries, expected positions).
    fn parse(name: PathBuf, mut source: Source) -> Result<Multifile> {
        let file_len = source.len();
        let corrupt = |offset: u64, entry: Option<&str>, what: String| Error::corrupt(&name, offset, entry, what);
        let io_error = |e: io::Error| Error::io(&name, e);
        let mut window = Window::new(&source);

        let prefix_len = header_prefix_len(window.get(0, MAX_PREFIX_LEN).map_err(io_error)?);
        let prefix = window.get(0, prefix_len as usize).map_err(io_error)?.to_vec();
        let after_prefix = window.get(prefix_len, HEADER_LEN_V1_1 as usize).map_err(io_error)?.to_vec();
        if !after_prefix.starts_with(&MAGIC) {
            if prefix_len > 0 {
                return Err(corrupt(prefix_len, None, "no Panda3D multifile magic after the '#' header prefix".into()));
            }
            return Err(Error::NotAMultifile { file: name });
        }
        let header = Header::read(&mut Cursor::new(&after_prefix))
            .map_err(|_| corrupt(prefix_len, None, "the multifile header is cut off".into()))?;
        if header.version_major != VERSION_MAJOR || !(0..=VERSION_MINOR).contains(&header.version_minor) {
            return Err(Error::UnsupportedVersion {
                file: name,
                major: header.version_major as u16,
                minor: header.version_minor as u16,
            });
        }
        if header.scale_factor == 0 {
            return Err(corrupt(prefix_len + 10, None, "scale factor is 0".into()));
        }
        let scale = u64::from(header.scale_factor);
        let has_timestamps = header.version_minor >= 1;
        let header_len = if has_timestamps { HEADER_LEN_V1_1 } else { HEADER_LEN_V1_0 };
        let index_start = pad_to_scale(prefix_len + header_len, scale);

        let mut subfiles = Vec::new();
        let mut signatures = Vec::new();
        let mut deleted = 0;
        let mut signature_bytes = 0u64;
        let mut needs_repack = false;
        let mut visited = HashSet::new();
        let mut position = index_start;
        let mut previous_name: Option<String> = None;
        let mut expected_next_data = None;
        let mut expected_entry_at = None;
        let index_end;
        loop {
            if !visited.insert(position) {
                return Err(corrupt(position, None, format!("the index chain loops back to the entry at {position}")));
            }
            let at = window.get(position, MAX_INDEX_ENTRY_LEN).map_err(io_error)?;
            if at.len() < 4 {
                return Err(corrupt(
                    position,
                    None,
                    format!("the index chain is cut: entry position {position} is past the end of the file ({file_len} bytes)"),
                ));
            }
            if at[..4] == [0; 4] {
                index_end = position + 4;
                break;
            }
            let entry = IndexEntry::read_args(&mut Cursor::new(at), (has_timestamps,)).map_err(|_| {
                corrupt(position, None, format!("the index entry at {position} is cut off by the end of the file"))
            })?;
            let raw_name = xor_name(&entry.name);
            let entry_name = String::from_utf8_lossy(&raw_name).into_owned();
            let fail = |offset: u64, what: String| corrupt(offset, Some(&entry_name), what);
            let data_offset = u64::from(entry.data_start) * scale;
            let data_length = u64::from(entry.data_length);
            if data_offset.checked_add(data_length).is_none_or(|end| end > file_len) {
                return Err(fail(
                    position + 4,
                    format!(
                        "the data (offset {data_offset}, length {data_length}) runs past the end of the file ({file_len} bytes)"
                    ),
                ));
            }
            let next = u64::from(entry.next) * scale;
            if next >= file_len {
                return Err(fail(
                    position,
                    format!("the index chain is cut: the next entry would be at {next}, past the end of the file ({file_len} bytes)"),
                ));
            }
            // Panda3D repacks archives whose entries are not back to back, sorted and live. Signature
            // records are appended after everything else, so the jump to them does not count.
            if entry.flags & FLAG_SIGNATURE == 0 && expected_entry_at.is_some_and(|at| at != position) {
                needs_repack = true;
            }
            expected_entry_at = Some(pad_to_scale(position + entry.encoded_len(), scale));
            if entry.flags & FLAG_DELETED != 0 {
                deleted += 1;
                needs_repack = true;
            } else if entry.flags & FLAG_SIGNATURE != 0 {
                signature_bytes += pad_to_scale(entry.encoded_len(), scale) + pad_to_scale(data_length, scale);
                let data = window.get(data_offset, (data_length as usize).min(MAX_SIGNATURE_LEN)).map_err(io_error)?;
                signatures.push(read_signature(data, position, data_offset, data_length));
            } else {
                let name_str = String::from_utf8(raw_name)
                    .map_err(|_| fail(position, "the subfile name is not valid UTF-8".into()))?;
                validate_path(&name_str).map_err(|e| fail(position, e.to_string()))?;
                if previous_name.as_deref().is_some_and(|p| p >= name_str.as_str()) {
                    needs_repack = true;
                }
                if expected_next_data.is_some_and(|d| d != data_offset) {
                    needs_repack = true;
                }
                expected_next_data = Some(pad_to_scale(data_offset + data_length, scale));
                previous_name = Some(name_str.clone());
                let original_length = match entry.uncompressed_length {
                    Some(len) if entry.flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0 => u64::from(len),
                    _ => data_length,
                };
                subfiles.push(Subfile {
                    name: name_str,
                    index_offset: position,
                    data_offset,
                    data_length,
                    flags: entry.flags,
                    original_length,
                    timestamp: entry.timestamp.unwrap_or(0),
                    entry_len: pad_to_scale(entry.encoded_len(), scale),
                });
            }
            position = next;
        }
        // Panda3D keeps one subfile per name; for a damaged archive naming one twice, the first in
        // chain order wins (stable sort, then dedup keeps the first of each run).
        subfiles.sort_by(|a, b| a.name.cmp(&b.name));
        let before = subfiles.len();
        subfiles.dedup_by(|later, first| later.name == first.name);
        let shadowed = before - subfiles.len();
        drop(window);
        if let Source::Pread { prefix: held, .. } = &mut source {
            *held = prefix;
        }
        Ok(Multifile {
            name,
            prefix_len,
            header,
            subfiles,
            signatures,
            deleted,
            shadowed,
            signature_bytes,
            needs_repack: needs_repack || shadowed > 0,
            index_start,
            index_end,
            password: None,
            source,
        })
    }

    /// Sets the password used to decrypt encrypted subfiles.
    pub fn set_password(&mut self, password: Option<String>) {
        self.password = password;
    }

    /// Whether a password was set.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Fails when a subfile's name is also a directory of another subfile (`a` and `a/b`): Panda3D
    /// reads such archives, but no file system can hold both, so extraction and mounting refuse them
    /// up front. The error names the file, the subfile and its index entry's offset.
    pub fn check_paths(&self) -> Result<()> {
        let mut prefix = String::new();
        for subfile in &self.subfiles {
            prefix.clear();
            prefix.push_str(&subfile.name);
            prefix.push('/');
            // Names are sorted, so every `name/…` is at or after the lower bound of `name/`.
            if let Some(other) = self.subfiles.get(self.lower_bound(&prefix)).filter(|o| o.name.starts_with(&prefix)) {
                return Err(Error::corrupt(
                    &self.name,
                    subfile.index_offset,
                    Some(&subfile.name),
                    format!("'{}' is a subfile and also a directory of '{}'", subfile.name, other.name),
                ));
            }
        }
        Ok(())
    }

    /// The file name given at open (used in errors).
    pub fn name(&self) -> &Path {
        &self.name
    }
    /// Format version as (major, minor).
    pub fn version(&self) -> (u16, u16) {
        (self.header.version_major as u16, self.header.version_minor as u16)
    }
    /// Positions are stored divided by this.
    pub fn scale_factor(&self) -> u32 {
        self.header.scale_factor
    }
    /// The multifile's timestamp (0 when none is recorded, and always 0 in version 1.0).
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp.unwrap_or(0)
    }
    /// Length of the `#` header prefix (0 when there is none).
    pub fn header_prefix(&self) -> &[u8] {
        match &self.source {
            Source::Whole(backing) => backing.bytes().get(..self.prefix_len as usize).unwrap_or_default(),
            Source::Pread { prefix, .. } => prefix,
        }
    }
    /// Entries marked deleted but still in the chain.
    pub fn deleted_count(&self) -> usize {
        self.deleted
    }
    /// Live entries hidden because an earlier entry has the same name (damaged archives only).
    pub fn shadowed_count(&self) -> usize {
        self.shadowed
    }
    /// True when Panda3D would repack this archive: unsorted, gaps, deleted entries.
    pub fn needs_repack(&self) -> bool {
        self.needs_repack
    }
    /// Position of the first index entry.
    pub fn index_start(&self) -> u64 {
        self.index_start
    }
    /// One past the terminator of the index chain.
    pub fn index_end(&self) -> u64 {
        self.index_end
    }
    /// Bytes of the file no reader uses: deleted entries and their data, index entries and
    /// terminators left behind by in-place edits, a tail never linked into the chain. What is live:
    /// the prefix and header, each live subfile's index entry and data, signature records, and the
    /// terminator, each padded to the scale factor (`spec/PANDA3D.md`, "Editing in place").
    pub fn dead_bytes(&self) -> u64 {
        let scale = u64::from(self.header.scale_factor);
        let live = self
            .subfiles
            .iter()
            .map(|s| s.entry_len + pad_to_scale(s.data_length, scale))
            .fold(self.index_start + pad_to_scale(4, scale) + self.signature_bytes, u64::saturating_add);
        self.file_len().saturating_sub(live)
    }
    /// Signature records, in chain order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }
    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.source.len()
    }
    /// Number of live subfiles.
    pub fn len(&self) -> usize {
        self.subfiles.len()
    }
    /// True when there are no live subfiles.
    pub fn is_empty(&self) -> bool {
        self.subfiles.is_empty()
    }
    /// Live subfiles in name order.
    pub fn subfiles(&self) -> &[Subfile] {
        &self.subfiles
    }
    /// The subfile at `index` of name order.
    pub fn subfile(&self, index: usize) -> Option<&Subfile> {
        self.subfiles.get(index)
    }
    /// Finds a subfile by name (binary search).
    pub fn get(&self, name: &str) -> Option<&Subfile> {
        self.subfiles.binary_search_by(|s| s.name.as_str().cmp(name)).ok().map(|i| &self.subfiles[i])
    }
    /// Number of subfiles whose name sorts below `key`.
    pub fn lower_bound(&self, key: &str) -> usize {
        self.subfiles.partition_point(|s| s.name.as_str() < key)
    }
    /// Modification time: the subfile's timestamp, else the multifile's; `None` when both are 0.
    pub fn mtime(&self, subfile: &Subfile) -> Option<u32> {
        Some(if subfile.timestamp != 0 { subfile.timestamp } else { self.timestamp() }).filter(|&t| t != 0)
    }

    /// The bytes stored for a subfile (compressed and/or encrypted as on disk): a slice of the
    /// mapping, or read with `pread` (an error naming the subfile if the file shrank since it was
    /// opened).
    pub fn stored_bytes(&self, subfile: &Subfile) -> Result<Cow<'_, [u8]>> {
        match &self.source {
            Source::Whole(backing) => {
                let start = subfile.data_offset as usize;
                Ok(Cow::Borrowed(backing.bytes().get(start..start + subfile.data_length as usize).unwrap_or_default()))
            }
            Source::Pread { .. } => {
                let mut stored = Vec::new();
                // data_length was checked against the file's length at open.
                stored
                    .try_reserve_exact(subfile.data_length as usize)
                    .map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
                self.stored_reader(subfile)
                    .read_to_end(&mut stored)
                    .map_err(|e| self.corrupt(subfile, e.to_string()))?;
                Ok(Cow::Owned(stored))
            }
        }
    }

    /// The stored bytes of a subfile as a stream.
    fn stored_reader<'a>(&'a self, subfile: &Subfile) -> Box<dyn Read + Send + 'a> {
        let (start, end) = (subfile.data_offset, subfile.data_offset + subfile.data_length);
        match &self.source {
            Source::Whole(backing) => Box::new(backing.bytes().get(start as usize..end as usize).unwrap_or_default()),
            Source::Pread { file, .. } => Box::new(PreadRange { file, at: start, end }),
        }
    }

    /// The content of an uncompressed, unencrypted subfile as a slice of the mapping (`None` for
    /// other subfiles, and for every subfile of a multifile opened with
    /// [`open_pread`](Self::open_pread)).
    pub fn raw_bytes(&self, subfile: &Subfile) -> Option<&[u8]> {
        match &self.source {
            Source::Whole(backing) if !subfile.is_compressed() && !subfile.is_encrypted() => {
                let start = subfile.data_offset as usize;
                Some(backing.bytes().get(start..start + subfile.data_length as usize).unwrap_or_default())
            }
            _ => None,
        }
    }

    fn corrupt(&self, subfile: &Subfile, what: impl Into<String>) -> Error {
        Error::corrupt(&self.name, subfile.data_offset, Some(&subfile.name), what)
    }

    /// The stored bytes after decryption (still compressed if the subfile is).
    fn decrypted(&self, subfile: &Subfile) -> Result<std::borrow::Cow<'_, [u8]>> {
        let stored = self.stored_bytes(subfile)?;
        if !subfile.is_encrypted() {
            return Ok(stored);
        }
        let password = self
            .password
            .as_deref()
            .ok_or_else(|| Error::PasswordRequired { file: self.name.clone(), entry: subfile.name.clone() })?;
        let plain = crypto::decrypt(&stored, password).map_err(|what| Error::Decrypt {
            file: self.name.clone(),
            entry: subfile.name.clone(),
            what,
        })?;
        Ok(std::borrow::Cow::Owned(plain))
    }

    /// A streaming reader over a subfile's content. Errors when the content cannot be decoded
    /// (damaged zlib data, a wrong length) surface from `read` as `InvalidData`, naming the file,
    /// subfile and offset. Encrypted subfiles are decrypted in memory first (they need the password).
    pub fn reader<'a>(&'a self, subfile: &'a Subfile) -> Result<SubfileReader<'a>> {
        let source: Box<dyn Read + Send + 'a> = if subfile.is_encrypted() {
            let plain = self.decrypted(subfile)?;
            if !subfile.is_compressed() && plain.len() as u64 != subfile.original_length {
                return Err(self.corrupt(
                    subfile,
                    format!("decrypts to {} bytes but records {}", plain.len(), subfile.original_length),
                ));
            }
            match plain {
                Cow::Borrowed(slice) => Box::new(slice),
                Cow::Owned(vec) => Box::new(Cursor::new(vec)),
            }
        } else {
            // Streamed, never loaded whole: from the mapping, or read with pread as it is consumed.
            self.stored_reader(subfile)
        };
        let inner: Box<dyn Read + Send + 'a> = if subfile.is_compressed() {
            // Panda3D inflates with inflateInit2(47): zlib or gzip framing.
            let gzip = self.decrypted_starts_with_gzip(subfile);
            if gzip {
                Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(source)))
            } else {
                Box::new(flate2::read::ZlibDecoder::new(io::BufReader::new(source)))
            }
        } else {
            source
        };
        Ok(SubfileReader { multifile: self, subfile, inner, produced: 0 })
    }

    fn decrypted_starts_with_gzip(&self, subfile: &Subfile) -> bool {
        if subfile.is_encrypted() {
            // Only multify's zlib output is expected inside encrypted records.
            return false;
        }
        let mut magic = [0u8; 2];
        self.stored_reader(subfile).read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b]
    }

    /// Reads a whole subfile, checking its decoded length.
    pub fn read(&self, subfile: &Subfile) -> Result<Vec<u8>> {
        let cap = subfile.original_length.min(subfile.data_length.saturating_mul(MAX_ZLIB_RATIO).saturating_add(64));
        let mut out = Vec::new();
        out.try_reserve_exact(usize::try_from(cap).unwrap_or(usize::MAX))
            .map_err(|e| Error::io(&self.name, io::Error::other(e)))?;
        self.reader(subfile)?.read_to_end(&mut out).map_err(|e| self.unwrap_io(e))?;
        Ok(out)
    }

    /// Reads content bytes starting at `offset` into `buf`; returns how many were read (less than
    /// `buf.len()` only at the end). Raw subfiles are sliced from the mapping; compressed or encrypted
    /// subfiles are decoded from their start up to the range (zlib has no random access).
    pub fn read_at(&self, subfile: &Subfile, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = subfile.original_length;
        if offset > size {
            return Err(mf_format::Error::OutOfRange { entry: subfile.name.clone(), offset, size }.into());
        }
        let len = (buf.len() as u64).min(size - offset) as usize;
        if let Some(raw) = self.raw_bytes(subfile) {
            let start = offset as usize;
            buf[..len].copy_from_slice(&raw[start..start + len]);
            return Ok(len);
        }
        if let (Source::Pread { file, .. }, false, false) =
            (&self.source, subfile.is_compressed(), subfile.is_encrypted())
        {
            let at = subfile.data_offset + offset;
            let mut range = PreadRange { file, at, end: at + len as u64 };
            range.read_exact(&mut buf[..len]).map_err(|e| self.corrupt(subfile, e.to_string()))?;
            return Ok(len);
        }
        let mut reader = self.reader(subfile)?;
        io::copy(&mut (&mut reader).take(offset), &mut io::sink()).map_err(|e| self.unwrap_io(e))?;
        reader.read_exact(&mut buf[..len]).map_err(|e| self.unwrap_io(e))?;
        Ok(len)
    }

    /// Recovers the library error carried inside an `io::Error` from a [`SubfileReader`].
    fn unwrap_io(&self, error: io::Error) -> Error {
        if error.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = error.into_inner() {
                if let Ok(err) = inner.downcast::<Error>() {
                    return *err;
                }
            }
            return Error::io(&self.name, io::Error::other("unreadable subfile"));
        }
        Error::io(&self.name, error)
    }

    /// Decodes one subfile completely (zlib check, lengths, decryption check).
    pub fn verify_subfile(&self, subfile: &Subfile) -> Result<()> {
        let mut reader = self.reader(subfile)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|e| self.unwrap_io(e))?;
        Ok(())
    }

    /// Decodes every subfile in parallel; returns the errors in name order. Panda3D records no
    /// checksums, so this finds damaged zlib streams, wrong lengths and undecryptable data; an
    /// encrypted subfile without a password is reported as an error.
    pub fn verify(&self) -> Vec<Error> {
        let results: Vec<Option<Error>> = self.subfiles.par_iter().map(|s| self.verify_subfile(s).err()).collect();
        results.into_iter().flatten().collect()
    }

    /// Sum of the subfiles' content sizes.
    pub fn total_size(&self) -> u64 {
        self.subfiles.iter().map(|s| s.original_length).fold(0, u64::saturating_add)
    }
    /// Sum of the subfiles' stored sizes.
    pub fn total_stored_size(&self) -> u64 {
        self.subfiles.iter().map(|s| s.data_length).fold(0, u64::saturating_add)
    }
}

/// Length of a `#` header prefix as Panda3D's reader consumes it: while the next byte is `#`, a line
/// up to `\n`, then any whitespace.
fn header_prefix_len(bytes: &[u8]) -> u64 {
    let mut position = 0usize;
    while bytes.get(position) == Some(&b'#') {
        match bytes[position..].iter().position(|&b| b == b'\n') {
            Some(newline) => position += newline + 1,
            None => return bytes.len() as u64,
        }
        while bytes.get(position).is_some_and(|b| b.is_ascii_whitespace() || *b == b'\x0b') {
            position += 1;
        }
    }
    position as u64
}

/// The signature record at `index_offset`, its data (`data`: at most [`MAX_SIGNATURE_LEN`] bytes of
/// it) parsed as far as it goes.
fn read_signature(data: &[u8], index_offset: u64, data_offset: u64, data_length: u64) -> Signature {
    let parse = || -> std::result::Result<(String, u32), String> {
        let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?)) };
        let sig_len = u32_at(0).ok_or("the signature record is cut off")? as usize;
        let count_at = sig_len.checked_add(4).ok_or("signature length overflows")?;
        let count = u32_at(count_at).ok_or("the signature record is cut off")?;
        let certs = data.get(count_at + 4..).unwrap_or_default();
        let (_, cert) = x509_parser::parse_x509_certificate(certs)
            .map_err(|e| format!("the signing certificate does not parse: {e}"))?;
        Ok((cert.subject().to_string(), count))
    };
    let (subject, certificates) = match parse() {
        Ok((subject, count)) => (Ok(subject), count),
        Err(e) => (Err(e), 0),
    };
    Signature { index_offset, data_offset, data_length, subject, certificates }
}

/// Streaming reader over one subfile; see [`Multifile::reader`]. Checks that the decoded content
/// has exactly the recorded length.
pub struct SubfileReader<'a> {
    multifile: &'a Multifile,
    subfile: &'a Subfile,
    inner: Box<dyn Read + Send + 'a>,
    produced: u64,
}

impl SubfileReader<'_> {
    fn damaged(&self, what: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.multifile.corrupt(self.subfile, what))
    }
}

impl Read for SubfileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let expected = self.subfile.original_length;
        if buf.is_empty() {
            return Ok(0);
        }
        // Ask for one byte more than remains, so a stream longer than recorded is caught.
        let remaining = expected.saturating_sub(self.produced);
        let want = buf.len().min(usize::try_from(remaining.saturating_add(1)).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.damaged(format!("the data does not decode: {e}"))),
        };
        self.produced += n as u64;
        if self.produced > expected {
            return Err(self.damaged(format!("the data decodes to more than the recorded {expected} bytes")));
        }
        if n == 0 && self.produced < expected {
            return Err(
                self.damaged(format!("the data decodes to {} bytes instead of the recorded {expected}", self.produced))
            );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::MultifileOptions;

    fn build(options: &MultifileOptions, files: &[(&str, &[u8], Option<u32>)]) -> Vec<u8> {
        let files: Vec<_> = files.iter().map(|&(name, data, level)| (name, data, level, 7)).collect();
        let prefix = options.header_prefix.as_deref();
        mf_test_support::panda3d::multifile_bytes_with(options.scale_factor, options.timestamp, prefix, &files)
    }

    /// A pread multifile reads what the mapped one does; once the file is truncated under it, the
    /// lost subfiles are errors naming the subfile and the truncation, and the rest still reads.
    #[test]
    fn a_pread_multifile_survives_truncation_with_errors_naming_the_subfile() {
        let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let text = b"text ".repeat(10_000);
        let bytes = build(
            &MultifileOptions::default(),
            &[("a.txt", &text, Some(6)), ("b.bin", &noise, None), ("c.txt", &text, Some(6))],
        );
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("t.mf");
        std::fs::write(&path, &bytes).unwrap();
        let mapped = Multifile::open(&path).unwrap();
        let pread = Multifile::open_pread(&path).unwrap();
        assert_eq!(pread.subfiles(), mapped.subfiles());
        for subfile in pread.subfiles() {
            assert!(pread.raw_bytes(subfile).is_none());
            assert_eq!(pread.read(subfile).unwrap(), mapped.read(subfile).unwrap());
            let (mut a, mut b) = ([0u8; 100], [0u8; 100]);
            assert_eq!(pread.read_at(subfile, 1000, &mut a).unwrap(), mapped.read_at(subfile, 1000, &mut b).unwrap());
            assert_eq!(a, b);
        }
        drop(mapped);
        let raw = pread.get("b.bin").unwrap().clone();
        let cut = raw.data_offset + raw.data_length / 2;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(pread.read_at(&raw, 0, &mut buf).unwrap(), 100, "the part still in the file reads");
        assert_eq!(&buf[..], &noise[..100]);
        let err = pread.read_at(&raw, raw.data_length - 100, &mut buf).unwrap_err().to_string();
        assert!(err.contains("b.bin") && err.contains("truncated"), "{err}");
        let err = pread.read(&raw).unwrap_err().to_string();
        assert!(err.contains("b.bin") && err.contains("truncated"), "{err}");
        for subfile in pread.subfiles() {
            let lost = subfile.data_offset + subfile.data_length > cut;
            assert_eq!(pread.read(subfile).is_err(), lost, "{}", subfile.name());
        }
    }

    #[test]
    fn writer_output_reads_back_with_every_option() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let files: &[(&str, &[u8], Option<u32>)] =
            &[("z/big.bin", &big, Some(9)), ("a.txt", b"hello\n", None), ("empty", b"", Some(6)), ("m/e", b"", None)];
        for scale in [1, 3, 16] {
            for prefix in [None, Some("!/usr/bin/env panda3d".to_owned())] {
                let options = MultifileOptions { scale_factor: scale, timestamp: 99, header_prefix: prefix.clone() };
                let bytes = build(&options, files);
                let multifile = Multifile::from_bytes(bytes.clone(), "t.mf").unwrap();
                assert_eq!(multifile.len(), 4);
                assert!(!multifile.needs_repack(), "scale {scale}");
                assert_eq!(multifile.scale_factor(), scale);
                assert_eq!(multifile.timestamp(), 99);
                assert_eq!(multifile.header_prefix().is_empty(), prefix.is_none());
                let names: Vec<&str> = multifile.subfiles().iter().map(|s| s.name()).collect();
                assert_eq!(names, ["a.txt", "empty", "m/e", "z/big.bin"]);
                let sub = multifile.get("z/big.bin").unwrap();
                assert!(sub.is_compressed() && sub.stored_size() < 2000);
                assert_eq!(multifile.read(sub).unwrap(), big);
                let mut middle = [0u8; 10];
                assert_eq!(multifile.read_at(sub, 50_000, &mut middle).unwrap(), 10);
                assert_eq!(&middle[..], &big[50_000..50_010]);
                assert_eq!(multifile.read(multifile.get("a.txt").unwrap()).unwrap(), b"hello\n");
                assert_eq!(multifile.mtime(multifile.get("a.txt").unwrap()), Some(7));
                assert!(multifile.verify().is_empty());
                if scale == 16 {
                    assert_eq!(bytes.len() % 16, 0);
                    assert_eq!(multifile.get("a.txt").unwrap().data_offset() % 16, 0);
                }
            }
        }
    }

    #[test]
    fn a_name_that_is_also_a_directory_is_reported_with_both_names() {
        // "a-x" and "a.x" sort between "a" and "a/b": the check must not stop at the next name.
        let files: &[(&str, &[u8], Option<u32>)] = &[("a", b"1", None), ("a-x", b"2", None), ("a/b", b"3", None)];
        let multifile = Multifile::from_bytes(build(&MultifileOptions::default(), files), "c.mf").unwrap();
        assert_eq!(multifile.len(), 3, "opens: Panda3D reads such archives");
        let err = multifile.check_paths().unwrap_err().to_string();
        assert!(err.contains("c.mf") && err.contains("'a' is a subfile and also a directory of 'a/b'"), "{err}");
        let files: &[(&str, &[u8], Option<u32>)] = &[("a", b"1", None), ("a-x/b", b"2", None), ("ab/c", b"3", None)];
        let fine = Multifile::from_bytes(build(&MultifileOptions::default(), files), "f.mf").unwrap();
        assert!(fine.check_paths().is_ok());
    }

    #[test]
    fn header_prefixes_are_consumed_as_panda3d_does() {
        assert_eq!(header_prefix_len(b"pmf\0"), 0);
        assert_eq!(header_prefix_len(b"#a\npmf"), 3);
        assert_eq!(header_prefix_len(b"#a\n \r\n#b\r\n\tpmf"), 11);
        assert_eq!(header_prefix_len(b"#no newline"), 11);
        let err = Multifile::from_bytes(b"#x\nnot it".to_vec(), "p.mf").unwrap_err();
        assert!(err.to_string().contains("no Panda3D multifile magic after the '#' header prefix"), "{err}");
        assert!(matches!(Multifile::from_bytes(b"PK\x03\x04".to_vec(), "z"), Err(Error::NotAMultifile { .. })));
    }

    #[test]
    fn arbitrary_damage_never_panics() {
        let files: &[(&str, &[u8], Option<u32>)] = &[("a", b"0123456789", Some(6)), ("b", b"abc", None)];
        let good = build(&MultifileOptions::default(), files);
        // Every single-byte change and every truncation either opens or fails cleanly; reading what
        // opens never panics.
        for at in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bytes = good.clone();
                bytes[at] = value;
                if let Ok(multifile) = Multifile::from_bytes(bytes, "d.mf") {
                    let _ = multifile.verify();
                    for sub in multifile.subfiles() {
                        let _ = multifile.read_at(sub, 1, &mut [0u8; 4]);
                    }
                }
            }
            let _ = Multifile::from_bytes(good[..at].to_vec(), "cut.mf");
        }
    }

    #[test]
    fn a_reader_keeps_failing_cleanly_after_a_length_error() {
        let files: &[(&str, &[u8], Option<u32>)] = &[("a", b"0123456789", Some(6))];
        let mut bytes = build(&MultifileOptions::default(), files);
        // Shrink the recorded original length of "a" (at entry offset +14) to 3.
        let at = HEADER_LEN_V1_1 as usize + 14;
        bytes[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        let multifile = Multifile::from_bytes(bytes, "short.mf").unwrap();
        let sub = multifile.get("a").unwrap();
        let mut reader = multifile.reader(sub).unwrap();
        let mut buf = [0u8; 64];
        let mut failures = 0;
        for _ in 0..4 {
            if reader.read(&mut buf).is_err() {
                failures += 1;
            }
        }
        assert!(failures >= 1);
        let err = multifile.read(sub).unwrap_err().to_string();
        assert!(err.contains("short.mf") && err.contains("more than the recorded 3 bytes"), "{err}");
    }

    #[test]
    fn chain_loops_and_duplicates_are_handled() {
        let files: &[(&str, &[u8], Option<u32>)] = &[("a", b"1", None), ("b", b"2", None)];
        let mut bytes = build(&MultifileOptions::default(), files);
        let first = HEADER_LEN_V1_1 as usize;
        let second = u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
        // Point the second entry back at the first: a loop.
        bytes[second..second + 4].copy_from_slice(&(first as u32).to_le_bytes());
        let err = Multifile::from_bytes(bytes.clone(), "loop.mf").unwrap_err();
        assert!(err.to_string().contains("loops back to the entry at 18"), "{err}");
        // Rename the second entry to the first's name: the first in chain order wins.
        let mut dup = build(&MultifileOptions::default(), files);
        let name_at = second + 20;
        dup[name_at] = b'a' ^ 0xff;
        let multifile = Multifile::from_bytes(dup, "dup.mf").unwrap();
        assert_eq!(multifile.len(), 1);
        assert_eq!(multifile.shadowed_count(), 1);
        assert_eq!(multifile.read(&multifile.subfiles()[0]).unwrap(), b"1");
    }

    #[test]
    #[cfg(feature = "crypto")]
    fn encrypted_subfiles_decrypt_only_with_the_password() {
        // Hand-build a multifile whose only subfile is encrypted (as multify -e does).
        let stored = crypto::encrypt(b"secret data", "pw", crypto::Cipher::BlowfishCbc, 16, &[1; 8]).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        let name = xor_name(b"s.bin");
        let entry_len = 4 + 4 + 4 + 2 + 4 + 4 + 2 + name.len();
        let terminator = 18 + entry_len;
        let data = terminator + 4;
        bytes.extend_from_slice(&(terminator as u32).to_le_bytes());
        bytes.extend_from_slice(&(data as u32).to_le_bytes());
        bytes.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&FLAG_ENCRYPTED.to_le_bytes());
        bytes.extend_from_slice(&11u32.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&name);
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&stored);
        let mut multifile = Multifile::from_bytes(bytes, "e.mf").unwrap();
        let sub = multifile.get("s.bin").unwrap().clone();
        assert!(sub.is_encrypted());
        assert!(matches!(multifile.read(&sub), Err(Error::PasswordRequired { .. })));
        multifile.set_password(Some("nope".into()));
        assert!(matches!(multifile.read(&sub), Err(Error::Decrypt { .. })));
        multifile.set_password(Some("pw".into()));
        assert_eq!(multifile.read(&sub).unwrap(), b"secret data");
        let mut reader = multifile.reader(&sub).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).unwrap(), 11);
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
        assert!(multifile.verify().is_empty());
    }
}
