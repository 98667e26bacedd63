//! The one place mf maps files into memory. Both archive readers (this crate's [`Archive`] and the
//! Panda3D reader of the `mf-panda3d` crate) hold their bytes in a [`Backing`] opened here; and
//! `PreadFile`, the alternative for files that may change while open, reads with `pread`.
//!
//! [`Archive`]: crate::Archive

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The bytes of an archive: a read-only mapping of a file, or a buffer.
pub enum Backing {
    /// A read-only mapping of the whole file.
    Map(memmap2::Mmap),
    /// Bytes held in memory (an archive opened from a buffer, or an empty file, which cannot be mapped).
    Owned(Vec<u8>),
}

impl Backing {
    /// Opens and maps the file at `path` (named in errors). An empty file is held as an empty buffer.
    pub fn open(path: &Path) -> Result<Backing> {
        // open_regular: a FIFO or device is refused, never blocked on.
        let file = crate::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(Backing::Owned(Vec::new()));
        }
        map_readonly(&file, path).map(Backing::Map)
    }

    /// Maps `file` (opened from `name`, used in errors). An empty file is held as an empty buffer.
    pub fn from_file(file: &File, name: &Path) -> Result<Backing> {
        let len = file.metadata().map_err(|e| Error::io(name, e))?.len();
        if len == 0 {
            return Ok(Backing::Owned(Vec::new()));
        }
        map_readonly(file, name).map(Backing::Map)
    }

    /// All the bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(map) => map,
            Backing::Owned(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Backing::Map(_) => "Map",
            Backing::Owned(_) => "Owned",
        };
        f.debug_struct("Backing").field("kind", &kind).field("len", &self.bytes().len()).finish()
    }
}

/// Maps `file` (opened from `path`, named in errors) read-only.
pub(crate) fn map_readonly(file: &File, path: &Path) -> Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and every access through it is bounds-checked. The remaining
    // hazard of any file mapping is another process truncating or rewriting the file while it is
    // mapped. mf's in-place editor (`edit`) only writes space no version a reader may hold uses
    // (holes, and the end of the file), and a concurrently truncated file can at worst fault, not
    // expose memory unsafety in this process.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))
}

/// An archive file read with `pread` on demand instead of mapped: for long-lived readers (a mount)
/// of files another process may truncate or rewrite, where a mapping would kill the reader with
/// SIGBUS. A read of a region that no longer exists is then an ordinary I/O error.
///
/// The fixed structures at both ends (header, and index + footer) are read once at open and
/// served from memory, so metadata lookups never touch the file again.
pub(crate) struct PreadFile {
    file: File,
    len: u64,
    head: Vec<u8>,
    tail_start: u64,
    tail: Vec<u8>,
}

impl PreadFile {
    /// Reads the first `head_len` bytes and the bytes `tail` (clamped to the file's length `len`: the
    /// index and footer; an uncommitted tail after them is not held). The tail's buffer is reserved
    /// fallibly: its size comes from the file's own footer.
    pub(crate) fn new(file: File, path: &Path, len: u64, head_len: u64, tail: Range<u64>) -> Result<PreadFile> {
        let read = |start: u64, end: u64| -> Result<Vec<u8>> {
            let n = usize::try_from(end.saturating_sub(start))
                .map_err(|_| Error::io(path, std::io::Error::other("the index does not fit in memory")))?;
            let mut buf = Vec::new();
            buf.try_reserve_exact(n).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
            buf.resize(n, 0);
            file.read_exact_at(&mut buf, start).map_err(|e| Error::io(path, e))?;
            Ok(buf)
        };
        let head = read(0, head_len.min(len))?;
        let tail_start = tail.start.min(len);
        let tail = read(tail_start, tail.end.min(len))?;
        Ok(PreadFile { len, head, tail_start, tail, file })
    }

    /// The file's length at open.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes `range` of the file if they lie within the parts held in memory.
    pub(crate) fn held(&self, range: Range<u64>) -> Option<&[u8]> {
        fn within<'a>(part: &'a [u8], base: u64, range: &Range<u64>) -> Option<&'a [u8]> {
            let start = usize::try_from(range.start.checked_sub(base)?).ok()?;
            let end = usize::try_from(range.end.checked_sub(base)?).ok()?;
            part.get(start..end)
        }
        within(&self.head, 0, &range).or_else(|| within(&self.tail, self.tail_start, &range))
    }

    /// Fills `buf` from the file at `offset`; a file that shrank gives `UnexpectedEof`.
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}
