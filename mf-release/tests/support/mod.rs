//! Inputs shared by mf-release's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};

/// Writes an mf archive `dir/name` holding `files` (path, content) in that order.
pub fn archive(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data) in files {
        writer.add_bytes(path, data, EntryOptions::default()).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

/// `lines` lines of compressible text that differ with `seed`.
pub fn text(seed: u64, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("line {i} of asset {seed}: {}\n", i * 13 + seed as usize))
        .collect::<String>()
        .into_bytes()
}
