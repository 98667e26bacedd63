//! The one place mf maps files into memory: both archive readers (mf and Panda3D) open through it.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Maps `file` (opened from `path`, named in errors) read-only.
pub(crate) fn map_readonly(file: &File, path: &Path) -> Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and every access through it is bounds-checked. The remaining
    // hazard of any file mapping is another process truncating or rewriting the file while it is
    // mapped; mf never modifies an archive in place (writers replace files by rename), and a
    // concurrently truncated file can at worst fault, not expose memory unsafety in this process.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))
}
