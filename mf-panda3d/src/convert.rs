//! Conversion between the two formats, in either direction (or to the same format).
//!
//! With [`ConvertOptions::canonical`], converting to mf is **the canonical mf conversion** of
//! `spec/PATCH.md`: a pure function of the input's entries (paths, contents, modes, timestamps, and
//! each entry's choice of compressed or stored), on which Panda3D-flagged patches rely. Converting to
//! Panda3D with the same defaults is its reverse, as `mf apply` writes a Panda3D result.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use mf_format::{ArchiveWriter, AtomicFile, Compression, EntryOptions, WriterOptions};

use crate::any::{AnyArchive, AnyEntry};
use crate::error::{Error, Result};
use crate::writer::{multify_would_compress, MultifileOptions, MultifileWriter, SubfileSpec};

/// zlib level `multify -z` uses.
pub const MULTIFY_DEFAULT_LEVEL: u32 = 6;

/// The format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Panda3D multifile (version 1.1), laid out as `multify` writes it.
    Panda3d,
    /// An mf archive.
    Mf,
}

impl Target {
    /// `panda3d` or `mf`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Panda3d => "panda3d",
            Target::Mf => "mf",
        }
    }
}

/// How to convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Output format.
    pub to: Target,
    /// Level of compressed entries: zlib 1..=9 for Panda3D (default 6, as `multify -z`), zstd for mf
    /// (default: the mf writer's).
    pub level: Option<i32>,
    /// Panda3D scale factor (positions are stored divided by it); at least 1.
    pub scale_factor: u32,
}

impl ConvertOptions {
    /// The defaults of `mf convert`: the canonical conversion to `to`.
    pub fn canonical(to: Target) -> ConvertOptions {
        ConvertOptions { to, level: None, scale_factor: 1 }
    }
}

/// Writes `archive` to `output` in `options.to`, atomically: `output` is replaced only by the complete
/// result, and is left as it was on any error. Fails before creating anything when an entry is
/// encrypted and the archive has no password ([`Error::PasswordRequired`]); encrypted entries are
/// written decrypted (neither output format written here encrypts).
pub fn convert_to_file(archive: &AnyArchive, output: &Path, options: &ConvertOptions) -> Result<()> {
    if !archive.has_password() {
        if let Some(encrypted) = archive.entries_by_path().find(|e| e.is_encrypted()) {
            return Err(Error::PasswordRequired {
                file: archive.name().to_owned(),
                entry: encrypted.path().to_owned(),
            });
        }
    }
    let level = check_level(options)?;
    let mut out = AtomicFile::create(output).map_err(|e| Error::io(output, e))?;
    let sink = BufWriter::with_capacity(1 << 20, out.file());
    let written = match options.to {
        Target::Panda3d => write_panda3d(archive, sink, output, options.scale_factor, level),
        Target::Mf => write_mf(archive, sink, output, level),
    };
    written?.into_inner().map_err(|e| Error::io(output, e.into_error()))?;
    out.commit().map_err(|e| Error::io(output, e))?;
    Ok(())
}

/// The level to use, checked against the target's range.
fn check_level(options: &ConvertOptions) -> Result<Option<i32>> {
    match (options.to, options.level) {
        (Target::Panda3d, Some(level)) if !(1..=9).contains(&level) => {
            Err(mf_format::Error::InvalidOption(format!("zlib level {level} is outside 1..=9")).into())
        }
        (_, level) => Ok(level),
    }
}

/// An entry's timestamp as Panda3D records it: Unix seconds, 0 for none.
fn panda3d_timestamp(entry: &AnyEntry<'_>) -> u32 {
    entry.mtime().map(|m| u32::try_from(m.secs.max(0)).unwrap_or(u32::MAX)).unwrap_or(0)
}

fn write_panda3d<W: Write + Seek>(
    archive: &AnyArchive,
    sink: W,
    output: &Path,
    scale_factor: u32,
    level: Option<i32>,
) -> Result<W> {
    let level = level.map_or(MULTIFY_DEFAULT_LEVEL, |l| l as u32);
    // Entries the source compressed stay compressed, except the types multify -z never compresses.
    let specs: Vec<SubfileSpec> = archive
        .entries_by_path()
        .map(|entry| SubfileSpec {
            name: entry.path().to_owned(),
            compression_level: (entry.is_compressed() && multify_would_compress(entry.path())).then_some(level),
            timestamp: panda3d_timestamp(&entry),
        })
        .collect();
    let options = MultifileOptions {
        scale_factor,
        // Like multify, the multifile's timestamp is that of its newest subfile; 0 records none.
        timestamp: archive.entries_by_path().map(|e| panda3d_timestamp(&e)).max().unwrap_or(0),
        header_prefix: None,
    };
    let mut writer = MultifileWriter::new(sink, output, &options, specs)?;
    // The writer wants the subfiles in name order, which is the order entries_by_path yields.
    for entry in archive.entries_by_path() {
        let mut reader = archive.reader(&entry)?;
        writer.add(&mut reader)?;
    }
    writer.finish()
}

fn write_mf<W: Write>(archive: &AnyArchive, sink: W, output: &Path, level: Option<i32>) -> Result<W> {
    let mut options = WriterOptions::default();
    if let Some(level) = level {
        options.level = level;
    }
    let mut writer = ArchiveWriter::with_name(sink, options, output)?;
    for entry in archive.entries_by_path() {
        let compression = if entry.is_compressed() { Compression::Auto } else { Compression::Store };
        let entry_options = EntryOptions { compression, mode: entry.mode(), mtime: entry.mtime() };
        writer.add_reader(entry.path(), archive.reader(&entry)?, entry_options)?;
    }
    Ok(writer.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mf_format::Archive;

    fn mf_bytes(files: &[(&str, &[u8], Compression)]) -> Vec<u8> {
        mf_test_support::mf_bytes(files)
    }

    #[test]
    fn mf_to_panda3d_and_back_is_the_identity_on_canonical_archives() {
        let dir = tempfile::tempdir().unwrap();
        let text = vec![b'x'; 20_000];
        let files: &[(&str, &[u8], Compression)] = &[
            ("a.png", b"not really png", Compression::Auto),
            ("d/t.txt", &text, Compression::Auto),
            ("raw", b"r", Compression::Store),
        ];
        let source = dir.path().join("src.mf");
        // Canonical form first (the mf writer's defaults), then a round trip through Panda3D.
        let original = AnyArchive::from_bytes(mf_bytes(files), "in.mf").unwrap();
        convert_to_file(&original, &source, &ConvertOptions::canonical(Target::Mf)).unwrap();
        let p3d = dir.path().join("x.p3d");
        convert_to_file(&AnyArchive::open(&source).unwrap(), &p3d, &ConvertOptions::canonical(Target::Panda3d))
            .unwrap();
        let multifile = AnyArchive::open(&p3d).unwrap();
        assert!(multifile.as_panda3d().is_some());
        assert_eq!(multifile.get("d/t.txt").unwrap().compression(), "zlib");
        assert_eq!(multifile.get("a.png").unwrap().compression(), "none", "multify never compresses png");
        let back = dir.path().join("back.mf");
        convert_to_file(&multifile, &back, &ConvertOptions::canonical(Target::Mf)).unwrap();
        let (a, b) = (Archive::open(&source).unwrap(), Archive::open(&back).unwrap());
        let contents = |archive: &Archive| -> Vec<(String, Vec<u8>)> {
            archive.entries().map(|e| (e.path().to_owned(), archive.read(&e).unwrap().into_owned())).collect()
        };
        assert_eq!(contents(&a), contents(&b));
        // The mf -> panda3d -> mf trip keeps png stored: the png entry of `back` is stored.
        assert_eq!(b.get("raw").unwrap().stored_as(), mf_format::StoredAs::Raw);
    }

    #[test]
    fn a_bad_level_fails_before_the_output_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.p3d");
        std::fs::write(&out, b"old").unwrap();
        let archive = AnyArchive::from_bytes(mf_bytes(&[("a", b"1", Compression::Auto)]), "in.mf").unwrap();
        let options = ConvertOptions { level: Some(12), ..ConvertOptions::canonical(Target::Panda3d) };
        let err = convert_to_file(&archive, &out, &options).unwrap_err();
        assert!(err.to_string().contains("zlib level 12 is outside 1..=9"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    }
}
