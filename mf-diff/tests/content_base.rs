//! 2.2 patches recognise their base by content (spec/PATCH.md "Content id"): an archive with the
//! same entries in the same record order but another layout is a valid base; one with other
//! content, or other record order, is not.

use std::path::{Path, PathBuf};

use mf_diff::{apply_patch, content_id, diff_files, DiffOptions, Error};
use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};

fn write(dir: &Path, name: &str, files: &[(&str, Vec<u8>)], level: i32) -> PathBuf {
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions { level, ..WriterOptions::default() }).unwrap();
    for (path, data) in files {
        writer.add_bytes(path, data, EntryOptions::default()).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

fn files(edit: bool) -> Vec<(&'static str, Vec<u8>)> {
    let text = b"a line of text that zstd likes to see again and again\n".repeat(400);
    let mut changed = text.clone();
    if edit {
        changed[1000] = b'X';
    }
    vec![("a.txt", changed), ("b/c.txt", text.repeat(2)), ("d.bin", (0..5000u32).map(|i| (i * 7) as u8).collect())]
}

fn options() -> DiffOptions {
    DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }
}

#[test]
fn a_base_laid_out_differently_is_recognised_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.mf", &files(false), 3);
    let new = write(dir.path(), "new.mf", &files(true), 3);
    let patch = dir.path().join("p.mfp");
    diff_files(&old, &new, &patch, &options(), &|_| {}).unwrap();

    // The same entries at another level: other frame bytes, other length and index hash.
    let relaid = write(dir.path(), "relaid.mf", &files(false), 19);
    let (a, b) = (mf_format::Archive::open(&old).unwrap(), mf_format::Archive::open(&relaid).unwrap());
    assert_ne!(a.footer().index_hash, b.footer().index_hash);
    assert_eq!(content_id(&a), content_id(&b));

    let out = dir.path().join("out.mf");
    let outcome = apply_patch(&patch, &relaid, &out, &|_| {}).unwrap();
    assert!(outcome.exact);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&new).unwrap());

    // Already applied, recognised by content too.
    let new_relaid = write(dir.path(), "new19.mf", &files(true), 19);
    let err = apply_patch(&patch, &new_relaid, &dir.path().join("x.mf"), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::AlreadyApplied { .. }), "{err}");
}

#[test]
fn other_content_or_record_order_is_a_wrong_base() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.mf", &files(false), 3);
    let new = write(dir.path(), "new.mf", &files(true), 3);
    let patch = dir.path().join("p.mfp");
    diff_files(&old, &new, &patch, &options(), &|_| {}).unwrap();

    let mut reordered = files(false);
    reordered.reverse();
    let reordered = write(dir.path(), "reordered.mf", &reordered, 3);
    let err = apply_patch(&patch, &reordered, &dir.path().join("x.mf"), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::WrongBase { .. }), "{err}");

    let mut other = files(false);
    other[2].1[10] ^= 1;
    let other = write(dir.path(), "other.mf", &other, 19);
    let err = apply_patch(&patch, &other, &dir.path().join("y.mf"), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::WrongBase { .. }), "{err}");
    assert!(!dir.path().join("x.mf").exists() && !dir.path().join("y.mf").exists());
}
