//! In-place apply (spec/PATCH.md "Applying in place"): only changed entries are written, the result
//! has the new version's entries, and a failure or a crash at any step of the commit leaves the
//! archive exactly the old or the new version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mf_diff::{apply_in_place, content_id, diff_files, DiffOptions, EntryCheck, Error, InPlaceOptions, NewEntry};
use mf_format::{Archive, ArchiveWriter, EntryOptions, WriterOptions};

fn write(dir: &Path, name: &str, files: &[(String, Vec<u8>)]) -> PathBuf {
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data) in files {
        writer.add_bytes(path, data, EntryOptions::default()).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

/// A release: a big incompressible entry, text files, and small ones.
fn release(version: u32) -> Vec<(String, Vec<u8>)> {
    let mut state = 0x2545f4914f6cdd1du64;
    let mut big: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut files = Vec::new();
    for i in 0..20 {
        files.push((format!("text/{i}.txt"), format!("file {i} line\n").repeat(300 + i).into_bytes()));
    }
    if version >= 2 {
        big[1 << 20] ^= 0xff; // a small edit in the middle
        files[3].1.extend_from_slice(b"changed\n");
        files.remove(7);
        files.push(("added/new.txt".into(), b"brand new\n".repeat(100)));
        let renamed = files.remove(0);
        files.push(("moved/0.txt".into(), renamed.1));
    }
    files.push(("data/big.bin".into(), big));
    files
}

fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let old = write(dir, "old.mf", &release(1));
    let new = write(dir, "new.mf", &release(2));
    let patch = dir.join("p.mfp");
    diff_files(&old, &new, &patch, &DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }, &|_| {})
        .unwrap();
    (old, new, patch)
}

/// The entries (record order) with their contents.
fn contents(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let archive = Archive::open(path).unwrap();
    archive.entries().map(|e| (e.path().to_owned(), e.mode(), archive.read(&e).unwrap().into_owned())).collect()
}

#[test]
fn writes_only_what_changed_and_gives_the_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, patch) = setup(dir.path());
    let target = dir.path().join("target.mf");
    std::fs::copy(&old, &target).unwrap();
    let outcome = apply_in_place(&patch, &target, InPlaceOptions::default(), &|_| {}).unwrap();
    assert_eq!(contents(&target), contents(&new));
    let len = std::fs::metadata(&old).unwrap().len();
    // The big entry's one changed frame, a few small files, the index: far below the archive.
    assert!(outcome.bytes_written < len / 4, "wrote {} of {len}", outcome.bytes_written);
    assert_eq!(outcome.entries_removed, 2, "text/7.txt and text/0.txt");
    assert_eq!(outcome.content_id, content_id(&Archive::open(&new).unwrap()));

    // The result is a valid base for the next patch, by content: new -> v3 applies in place again.
    let mut v3 = release(2);
    v3[1].1.extend_from_slice(b"v3\n");
    let v3_path = write(dir.path(), "v3.mf", &v3);
    let patch3 = dir.path().join("p3.mfp");
    diff_files(&new, &v3_path, &patch3, &DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }, &|_| {})
        .unwrap();
    apply_in_place(&patch3, &target, InPlaceOptions::default(), &|_| {}).unwrap();
    assert_eq!(contents(&target), contents(&v3_path));
    // And applying it again is recognised as done.
    let err = apply_in_place(&patch3, &target, InPlaceOptions::default(), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::AlreadyApplied { .. }), "{err}");
}

/// Refuses the first written entry it sees complete.
struct Refuse;
impl EntryCheck for Refuse {
    fn entry(&mut self, _: usize, _: &NewEntry, _: bool) -> mf_diff::Result<()> {
        Ok(())
    }
    fn content(&mut self, _: &[u8]) {}
    fn finish(&mut self) -> mf_diff::Result<()> {
        Err(Error::OutputMismatch { file: "t".into(), entry: None, what: "refused by the check".into() })
    }
}

#[test]
fn a_failed_check_or_a_wrong_base_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _, patch) = setup(dir.path());
    let target = dir.path().join("target.mf");
    std::fs::copy(&old, &target).unwrap();
    let mut refuse = Refuse;
    let options = InPlaceOptions { check: Some(&mut refuse), ..InPlaceOptions::default() };
    let err = apply_in_place(&patch, &target, options, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("refused by the check"), "{err}");
    assert_eq!(contents(&target), contents(&old));
    // The file may have adopted a commit slot, but the committed version is the old one.
    assert_eq!(content_id(&Archive::open(&target).unwrap()), content_id(&Archive::open(&old).unwrap()));

    // A wrong base: the archive of another version is refused before anything is written.
    let other = write(dir.path(), "other.mf", &release(2)[..5]);
    let other_bytes = std::fs::read(&other).unwrap();
    let err = apply_in_place(&patch, &other, InPlaceOptions::default(), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::WrongBase { .. }), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), other_bytes);
}

#[test]
fn a_crash_at_any_step_leaves_the_old_or_the_new_version_and_the_next_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, patch) = setup(dir.path());
    let (old_entries, new_entries) = (contents(&old), contents(&new));
    let mut stop_at = 0usize;
    loop {
        let target = dir.path().join(format!("crash{stop_at}.mf"));
        std::fs::copy(&old, &target).unwrap();
        let steps = Arc::new(Mutex::new(Vec::new()));
        let seen = steps.clone();
        let mut count = 0usize;
        let hook = Box::new(move |step| {
            seen.lock().unwrap().push(step);
            count += 1;
            count > stop_at
        });
        let result =
            apply_in_place(&patch, &target, InPlaceOptions { fault: Some(hook), ..InPlaceOptions::default() }, &|_| {});
        let now = contents(&target);
        if result.is_ok() {
            assert_eq!(now, new_entries);
            assert!(stop_at > 5, "the commit has more steps than {stop_at}");
            break;
        }
        let last = *steps.lock().unwrap().last().unwrap();
        assert!(now == old_entries || now == new_entries, "after a crash at {last:?} (step {stop_at})");
        // The next run completes (or finds the work done).
        match apply_in_place(&patch, &target, InPlaceOptions::default(), &|_| {}) {
            Ok(_) => {}
            Err(Error::AlreadyApplied { .. }) => assert_eq!(now, new_entries),
            Err(e) => panic!("the run after a crash at {last:?} failed: {e}"),
        }
        assert_eq!(contents(&target), new_entries, "after a crash at {last:?} and a second run");
        std::fs::remove_file(&target).unwrap();
        stop_at += 1;
    }
}
