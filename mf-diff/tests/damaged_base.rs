//! A rebuild does not decode every old entry before it starts (spec/PATCH.md "Applying"): each
//! result byte is bound by its entry's hash or, for an exact patch, by the final `new_hash` check.
//! A damaged old entry must still be the error named, whichever way its bytes reach the result,
//! and no output may appear.

use std::path::{Path, PathBuf};

use mf_diff::{apply_patch, diff_files, DiffOptions, Patch};
use mf_format::{ArchiveWriter, Compression, EntryOptions, WriterOptions};
use mf_test_support::noise;

const RAW: EntryOptions = EntryOptions { compression: Compression::Store, mode: 0o644, mtime: None };

/// Old: `code.bin` (a delta's base), `moved.bin` (renamed in the new version: a verbatim copy) and
/// `notes.txt`, the binaries stored raw so a flipped byte is a flipped content byte.
fn old_files() -> Vec<(&'static str, Vec<u8>, EntryOptions)> {
    let notes = b"release notes, line after line\n".repeat(300);
    vec![
        ("code.bin", noise(300_000, 1), RAW),
        ("moved.bin", noise(200_000, 2), RAW),
        ("notes.txt", notes, EntryOptions::default()),
    ]
}

fn new_files() -> Vec<(&'static str, Vec<u8>, EntryOptions)> {
    let mut files = old_files();
    files[0].1[150_000..150_064].fill(0xAB);
    files[1].0 = "renamed.bin";
    files
}

fn write(dir: &Path, name: &str, files: &[(&str, Vec<u8>, EntryOptions)]) -> PathBuf {
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data, options) in files {
        writer.add_bytes(path, data, *options).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

/// The old and new archives in `dir`, and the patch between them (`p.mfp`).
fn versions_and_patch(dir: &Path, new_side: impl FnOnce(&Path)) -> (PathBuf, PathBuf, PathBuf) {
    let old = write(dir, "old.mf", &old_files());
    let new = write(dir, "new.mf", &new_files());
    new_side(&new);
    let patch = dir.join("p.mfp");
    diff_files(&old, &new, &patch, &DiffOptions::default(), &|_| {}).unwrap();
    (old, new, patch)
}

/// Flips one byte of `entry`'s content in the archive at `path` (the entry is stored raw).
fn damage(path: &Path, entry: &str, at: u64) {
    let archive = mf_format::Archive::open(path).unwrap();
    let e = archive.get(entry).unwrap();
    assert_eq!(e.stored_as(), mf_format::StoredAs::Raw);
    let offset = (e.offset() + at) as usize;
    drop(archive);
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x5A;
    std::fs::write(path, bytes).unwrap();
}

fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn refused_naming(dir: &Path, patch: &Path, old: &Path, entry: &str) {
    let out = dir.join("out.mf");
    let err = apply_patch(patch, old, &out, &|_| {}).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(entry) && text.contains("old.mf"), "{text}");
    assert!(!out.exists());
}

#[test]
fn a_damaged_delta_base_or_copied_entry_is_named_and_nothing_is_written() {
    for (entry, at) in [("code.bin", 5), ("code.bin", 299_999), ("moved.bin", 0), ("moved.bin", 199_999)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (old, new, patch) = versions_and_patch(d, |_| {});
        let opened = Patch::open(&patch).unwrap();
        assert!(opened.header().exact());

        // The intact base rebuilds the new archive byte for byte.
        apply_patch(&patch, &old, &d.join("ok.mf"), &|_| {}).unwrap();
        assert_eq!(std::fs::read(d.join("ok.mf")).unwrap(), std::fs::read(&new).unwrap());

        damage(&old, entry, at);
        refused_naming(d, &patch, &old, entry);
        assert!(leftovers(d, &["old.mf", "new.mf", "p.mfp", "ok.mf"]).is_empty(), "{entry}");
    }
}

#[test]
fn damage_in_old_bytes_the_patch_never_reads_still_gives_the_exact_result() {
    // code.bin's bytes 150,000..150,064 are replaced in the new version, so its delta never reads
    // them: a rebuild that reads only what it uses yields the new archive, checked whole.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new, patch) = versions_and_patch(d, |_| {});
    damage(&old, "code.bin", 150_010);
    apply_patch(&patch, &old, &d.join("out.mf"), &|_| {}).unwrap();
    assert_eq!(std::fs::read(d.join("out.mf")).unwrap(), std::fs::read(&new).unwrap());
}

#[test]
fn without_an_exact_result_a_copied_entry_is_checked_before_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The new side edited in place (generation 1): not what a fresh pack writes, so the patch
    // cannot promise a byte-identical result.
    let (old, _, patch) = versions_and_patch(d, |new| {
        let mut editor = mf_format::Editor::open(new).unwrap();
        let extra = b"added after the pack\n".repeat(10);
        editor.put("extra.txt", &EntryOptions::default(), &mut &extra[..], extra.len() as u64).unwrap();
        editor.commit().unwrap();
    });
    assert!(!Patch::open(&patch).unwrap().header().exact());

    damage(&old, "moved.bin", 1234);
    refused_naming(d, &patch, &old, "moved.bin");
    assert!(leftovers(d, &["old.mf", "new.mf", "p.mfp"]).is_empty());
}
