//! The one place mf maps files into memory. Both archive readers (this crate's [`Archive`] and the
//! Panda3D reader of the `mf-panda3d` crate) hold their bytes in a [`Backing`] opened here.
//!
//! [`Archive`]: crate::Archive

use std::fs::File;
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
    // mapped; mf never modifies an archive in place (writers replace files by rename), and a
    // concurrently truncated file can at worst fault, not expose memory unsafety in this process.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))
}
