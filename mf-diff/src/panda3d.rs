//! Patches between archives of either format: Panda3D multifiles are diffed and rebuilt as their
//! canonical mf conversions (`spec/PATCH.md`), and the patch header records which sides were
//! multifiles so that apply converts its base the same way and writes the result in the new side's
//! format. These are the calls `mf diff`, `mf apply` and the release tools use; [`diff_files`] and
//! [`apply_patch`] below them only know mf archives and plain files.
//!
//! ```
//! use mf_diff::panda3d::{apply_any, diff_any, ArchiveFormat, PatchSink};
//! use mf_panda3d::{MultifileOptions, MultifileWriter, SubfileSpec};
//! # let dir = tempfile::tempdir()?;
//! let multifile = |name: &str, text: &[u8]| -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
//!     let specs = vec![SubfileSpec { name: "a.txt".into(), compression_level: Some(6), timestamp: 0 }];
//!     let options = MultifileOptions::default();
//!     let mut writer = MultifileWriter::new(std::io::Cursor::new(Vec::new()), name, &options, specs)?;
//!     writer.add(&mut &text[..])?;
//!     let path = dir.path().join(name);
//!     std::fs::write(&path, writer.finish()?.into_inner())?;
//!     Ok(path)
//! };
//! let old = multifile("v1.mf", &b"version one\n".repeat(100))?;
//! let new = multifile("v2.mf", &b"version two\n".repeat(100))?;
//! let patch = dir.path().join("v1-v2.mfp");
//! let diff = diff_any(&old, &new, PatchSink::File(&patch), 64 << 20, &|_| {})?;
//! assert_eq!((diff.old_format, diff.new_format), (Some(ArchiveFormat::Panda3d), Some(ArchiveFormat::Panda3d)));
//!
//! let rebuilt = dir.path().join("rebuilt.mf");
//! let applied = apply_any(&patch, &old, &rebuilt, None, &|_| {})?;
//! assert_eq!(applied.format, ArchiveFormat::Panda3d);
//! let archive = mf_panda3d::AnyArchive::open(&rebuilt)?;
//! assert_eq!(&archive.read(&archive.get("a.txt").unwrap())?[..], &b"version two\n".repeat(100)[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use mf_panda3d::ArchiveFormat;
use mf_panda3d::{convert_to_file, AnyArchive, ConvertOptions, Target};

use crate::error::{Error, Result};
use crate::wire::{FLAG_NEW_PANDA3D, FLAG_OLD_PANDA3D, KIND_ARCHIVE};
use crate::{
    apply_patch, diff_files, diff_stat, progress_total, write_patch, ApplyOutcome, DiffOptions, Patch, PatchReport,
};

/// The format of the file at `path`, from its first bytes: `None` when it is no archive (or cannot be
/// read; the diff or apply then reports why).
pub fn detect(path: &Path) -> Option<ArchiveFormat> {
    ArchiveFormat::detect(path).ok().flatten()
}

/// The formats a patch's header records: `(old, new)`.
pub fn patch_formats(flags: u8) -> (ArchiveFormat, ArchiveFormat) {
    let format = |flag: u8| if flags & flag != 0 { ArchiveFormat::Panda3d } else { ArchiveFormat::Mf };
    (format(FLAG_OLD_PANDA3D), format(FLAG_NEW_PANDA3D))
}

/// What [`diff_any`] found.
#[derive(Debug, Clone)]
pub struct AnyDiff {
    /// The report of the diff between the (converted) inputs. `report.exact` is true only when applying
    /// the patch rebuilds NEW itself byte for byte: for a Panda3D NEW, when NEW is exactly the Panda3D
    /// conversion of its canonical mf conversion (as `mf convert --to panda3d` writes multifiles).
    pub report: PatchReport,
    /// OLD's format, `None` when the pair was diffed as plain files.
    pub old_format: Option<ArchiveFormat>,
    /// NEW's format, `None` when the pair was diffed as plain files.
    pub new_format: Option<ArchiveFormat>,
    /// The header flags the patch records ([`FLAG_OLD_PANDA3D`], [`FLAG_NEW_PANDA3D`]).
    pub flags: u8,
}

/// Where [`diff_any`] puts the patch.
pub enum PatchSink<'a> {
    /// Nowhere: only report (`mf diff --stat`).
    None,
    /// Atomically into this file.
    File(&'a Path),
    /// Streamed into a writer (`mf diff -o -`); the caller flushes it.
    Writer(&'a mut dyn std::io::Write),
}

impl<'a> From<Option<&'a Path>> for PatchSink<'a> {
    fn from(path: Option<&'a Path>) -> Self {
        path.map_or(PatchSink::None, PatchSink::File)
    }
}

/// Diffs `old` and `new`, each an mf archive, a Panda3D multifile or (when either is no archive) a
/// plain file; writes the patch to `patch` (a [`PatchSink`], or an `Option<&Path>`). `tick` is told about
/// bytes of NEW's content as they are diffed ([`progress_total`] of the converted pair is their sum).
pub fn diff_any<'p>(
    old: &Path,
    new: &Path,
    patch: impl Into<PatchSink<'p>>,
    memory_limit: u64,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<AnyDiff> {
    // Between two archives, a Panda3D side is diffed as its canonical mf conversion; anything else is
    // a plain patch of the files as they are.
    let formats = detect(old).zip(detect(new));
    let old_panda3d = formats.is_some_and(|(o, _)| o == ArchiveFormat::Panda3d);
    let new_panda3d = formats.is_some_and(|(_, n)| n == ArchiveFormat::Panda3d);
    let scratch = scratch_dir()?;
    let old_mf = if old_panda3d { canonical_mf(old, &scratch.path().join("old.mf"))? } else { old.to_owned() };
    let new_mf = if new_panda3d { canonical_mf(new, &scratch.path().join("new.mf"))? } else { new.to_owned() };
    let options = DiffOptions { memory_limit, old_is_panda3d: old_panda3d, new_is_panda3d: new_panda3d };
    let mut report = match patch.into() {
        PatchSink::File(patch) => diff_files(&old_mf, &new_mf, patch, &options, tick)?,
        PatchSink::Writer(mut out) => write_patch(&old_mf, &new_mf, &mut out, &options, tick)?,
        PatchSink::None => diff_stat(&old_mf, &new_mf, &options, tick)?,
    };
    if new_panda3d {
        // The patch rebuilds NEW's canonical mf conversion, which apply converts back to Panda3D.
        report.exact &= round_trips_exactly(new, &new_mf, &scratch.path().join("new.p3d"))?;
    }
    Ok(AnyDiff {
        report,
        old_format: formats.map(|f| f.0),
        new_format: formats.map(|f| f.1),
        flags: options.panda3d_flags(),
    })
}

/// [`progress_total`] for [`diff_any`]: NEW's content size (its file size when it is no mf archive).
pub fn progress_total_any(old: &Path, new: &Path) -> Result<u64> {
    Ok(match (detect(old), detect(new)) {
        (Some(_), Some(ArchiveFormat::Panda3d)) => AnyArchive::open(new)?.total_size(),
        (Some(ArchiveFormat::Panda3d), Some(ArchiveFormat::Mf)) => mf_format::Archive::open(new)?.total_size(),
        _ => progress_total(old, new)?,
    })
}

/// How [`apply_any`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnyApply {
    /// The format written.
    pub format: ArchiveFormat,
    /// Entries written (or 1 for a plain patch).
    pub entries: usize,
    /// Bytes of the written file.
    pub len: u64,
    /// The output was checked to be byte-identical to the file the patch was made from (never for a
    /// Panda3D-flagged NEW: the patch records its canonical mf conversion's hash, not NEW's).
    pub exact: bool,
}

/// Applies `patch` to `old` (an mf archive, a Panda3D multifile, or a plain file), writing `target`
/// atomically in `format`, by default the format the patch records for NEW. `target` may be `old`
/// itself. A Panda3D base must go with a patch made from a Panda3D OLD, and an mf base with one made
/// from an mf OLD ([`Error::WrongBase`] otherwise, before anything is written).
pub fn apply_any(
    patch: &Path,
    old: &Path,
    target: &Path,
    format: Option<ArchiveFormat>,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<AnyApply> {
    let header = *Patch::open(patch)?.header();
    let (patch_old, patch_new) = patch_formats(header.flags);
    let format = format.unwrap_or(patch_new);
    let scratch = scratch_dir()?;
    let old_is_panda3d = header.kind == KIND_ARCHIVE && detect(old) == Some(ArchiveFormat::Panda3d);
    let base = match (patch_old, old_is_panda3d) {
        (ArchiveFormat::Panda3d, true) => canonical_mf(old, &scratch.path().join("old.mf"))?,
        (ArchiveFormat::Mf, false) => old.to_owned(),
        (made_from, _) => {
            let is = if old_is_panda3d { "a Panda3D multifile" } else { "not one" };
            let what = match made_from {
                ArchiveFormat::Panda3d => {
                    format!("{} was made from a Panda3D multifile, but this is {is}: wrong base", patch.display())
                }
                ArchiveFormat::Mf => format!(
                    "{} was made from an mf archive, but this is a Panda3D multifile: wrong base",
                    patch.display()
                ),
            };
            return Err(Error::WrongBase { file: old.to_owned(), entry: None, what });
        }
    };
    // A Panda3D result is rebuilt as mf first (and checked), then converted: the target is replaced
    // only by the finished conversion.
    let rebuilt = match format {
        ArchiveFormat::Mf => target.to_owned(),
        ArchiveFormat::Panda3d => scratch.path().join("new.mf"),
    };
    let ApplyOutcome { exact, entries, len } = apply_patch(patch, &base, &rebuilt, tick)?;
    if format == ArchiveFormat::Mf {
        // Identical to the canonical conversion of a Panda3D NEW, not to NEW itself.
        return Ok(AnyApply { format, entries, len, exact: exact && patch_new == ArchiveFormat::Mf });
    }
    convert_to_file(&AnyArchive::open(&rebuilt)?, target, &ConvertOptions::canonical(Target::Panda3d))?;
    let len = std::fs::metadata(target).map_err(|e| Error::Io { file: target.to_owned(), source: e })?.len();
    Ok(AnyApply { format, entries, len, exact: false })
}

/// Writes the canonical mf conversion of the multifile at `path` to `out`. Encrypted subfiles are
/// refused: diff and apply take no password, and the conversion must not depend on one.
pub fn canonical_mf(path: &Path, out: &Path) -> Result<PathBuf> {
    let archive = AnyArchive::open(path)?;
    convert_to_file(&archive, out, &ConvertOptions::canonical(Target::Mf))?;
    Ok(out.to_owned())
}

/// Whether converting `canonical` (the canonical mf conversion of `original`) back to Panda3D gives
/// `original` byte for byte; the conversion is written to `scratch`, then removed.
fn round_trips_exactly(original: &Path, canonical: &Path, scratch: &Path) -> Result<bool> {
    convert_to_file(&AnyArchive::open(canonical)?, scratch, &ConvertOptions::canonical(Target::Panda3d))?;
    let same = same_bytes(original, scratch).map_err(|e| Error::Io { file: original.to_owned(), source: e })?;
    let _ = std::fs::remove_file(scratch);
    Ok(same)
}

fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut a, mut b) = (io::BufReader::new(File::open(a)?), io::BufReader::new(File::open(b)?));
    if a.get_ref().metadata()?.len() != b.get_ref().metadata()?.len() {
        return Ok(false);
    }
    let (mut left, mut right) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut left)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut right[..n])?;
        if left[..n] != right[..n] {
            return Ok(false);
        }
    }
}

fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| Error::Io { file: std::env::temp_dir(), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multifile(path: &Path, files: &[(&str, &[u8])]) {
        let files: Vec<_> = files.iter().map(|&(name, data)| (name, data, Some(6), 0)).collect();
        std::fs::write(path, mf_test_support::panda3d::multifile_bytes(&files)).unwrap();
    }

    #[test]
    fn canonical_multifiles_patch_exactly_and_others_in_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.p3d"), dir.path().join("new.p3d"));
        let text = b"line\n".repeat(3000);
        multifile(&old, &[("a.txt", &text), ("b.txt", b"bee")]);
        // As `mf convert --to panda3d` writes it: the canonical round trip gives it back exactly.
        multifile(&dir.path().join("draft.p3d"), &[("a.txt", &text[..10_000]), ("c.txt", b"sea")]);
        let draft = canonical_mf(&dir.path().join("draft.p3d"), &dir.path().join("draft.mf")).unwrap();
        convert_to_file(&AnyArchive::open(draft).unwrap(), &new, &ConvertOptions::canonical(Target::Panda3d)).unwrap();
        let diff = diff_any(&old, &new, PatchSink::File(&dir.path().join("p.mfp")), 1 << 26, &|_| {}).unwrap();
        assert_eq!(diff.flags, FLAG_OLD_PANDA3D | FLAG_NEW_PANDA3D);
        assert!(diff.report.exact, "the canonical round trip of NEW is NEW");
        let out = dir.path().join("out.p3d");
        let applied = apply_any(&dir.path().join("p.mfp"), &old, &out, None, &|_| {}).unwrap();
        assert_eq!(applied.format, ArchiveFormat::Panda3d);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&new).unwrap());

        // Stored instead of compressed where the canonical form compresses: content only.
        std::fs::write(&new, mf_test_support::panda3d::multifile_bytes(&[("a.txt", &text, Some(1), 5)])).unwrap();
        let diff = diff_any(&old, &new, None, 1 << 26, &|_| {}).unwrap();
        assert!(!diff.report.exact, "level 1 and a timestamp: not what the canonical conversion writes");
    }

    #[test]
    fn a_base_of_the_wrong_format_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old.p3d"), dir.path().join("new.p3d"));
        multifile(&old, &[("a", b"1")]);
        multifile(&new, &[("a", b"2")]);
        let patch = dir.path().join("p.mfp");
        diff_any(&old, &new, PatchSink::File(&patch), 1 << 26, &|_| {}).unwrap();
        let mf_base = mf_test_support::write_mf(dir.path().join("base.mf"), [("a", b"1")]);
        let target = dir.path().join("out");
        let err = apply_any(&patch, &mf_base, &target, None, &|_| {}).unwrap_err();
        assert!(matches!(err, Error::WrongBase { .. }), "{err}");
        assert!(err.to_string().contains("made from a Panda3D multifile"), "{err}");
        assert!(!target.exists());
    }
}
