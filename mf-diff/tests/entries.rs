//! Entry-level apply (`Patch::apply_entries`): an archive patch rebuilt against an old side that is
//! not an archive (here: contents in memory, as an install folder would hand them out).

use std::path::{Path, PathBuf};

use mf_diff::{diff_files, DiffOptions, NewContent, OldEntries, OldEntry, Patch};
use mf_format::Archive;
use mf_test_support::write_mf;

/// Old entries held in memory, in data order.
struct InMemory {
    name: PathBuf,
    entries: Vec<(OldEntry, Vec<u8>)>,
}

impl OldEntries for InMemory {
    fn name(&self) -> &Path {
        &self.name
    }
    fn count(&self) -> u64 {
        self.entries.len() as u64
    }
    fn entry(&self, index: u32) -> Option<OldEntry> {
        self.entries.get(index as usize).map(|(e, _)| e.clone())
    }
    fn read_range(&self, index: u32, start: u64, len: usize) -> mf_diff::Result<Vec<u8>> {
        let data = &self.entries[index as usize].1;
        Ok(data[start as usize..start as usize + len].to_vec())
    }
}

fn write_archive(path: &Path, files: &[(&str, Vec<u8>, u32)]) {
    write_mf(path, files);
}

fn old_side(archive: &Archive, name: &Path) -> InMemory {
    let entries = archive
        .entries()
        .map(|e| {
            let info = OldEntry {
                path: e.path().to_owned(),
                size: e.size(),
                xxh3: e.content_hash(),
                mode: e.mode(),
                mtime: None,
            };
            (info, archive.read(&e).unwrap().into_owned())
        })
        .collect();
    InMemory { name: name.to_owned(), entries }
}

#[test]
fn entries_rebuild_the_new_archive_and_copies_name_their_old_entry() {
    let dir = tempfile::tempdir().unwrap();
    let text: Vec<u8> = (0..4000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let mut edited = text.clone();
    edited[100..110].copy_from_slice(b"EDITED....");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let old = dir.path().join("old.mf");
    let new = dir.path().join("new.mf");
    write_archive(
        &old,
        &[
            ("keep.txt", b"unchanged".to_vec(), 0o644),
            ("edit.txt", text.clone(), 0o644),
            ("gone.bin", vec![1; 10], 0o644),
            ("big.bin", big.clone(), 0o644),
            ("tool", b"#!/bin/sh\n".to_vec(), 0o644),
        ],
    );
    write_archive(
        &new,
        &[
            ("keep.txt", b"unchanged".to_vec(), 0o644),
            ("edit.txt", edited.clone(), 0o644),
            ("moved/big.bin", big.clone(), 0o644),
            ("tool", b"#!/bin/sh\n".to_vec(), 0o755),
            ("added.txt", b"new file".to_vec(), 0o600),
        ],
    );
    let patch_path = dir.path().join("p.mfp");
    diff_files(&old, &new, &patch_path, &DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }, &|_| {})
        .unwrap();
    let patch = Patch::open(&patch_path).unwrap();
    assert!(patch.is_archive());
    let old_archive = Archive::open(&old).unwrap();
    let new_archive = Archive::open(&new).unwrap();
    assert_eq!(patch.header().old_id, old_archive.footer().index_hash);
    let source = old_side(&old_archive, &old);

    let mut rebuilt = Vec::new();
    patch
        .apply_entries(&source, |entry| -> mf_diff::Result<()> {
            rebuilt.push(entry);
            Ok(())
        })
        .unwrap();
    let expected: Vec<_> = new_archive.entries().collect();
    assert_eq!(rebuilt.len(), expected.len());
    for (got, want) in rebuilt.iter().zip(&expected) {
        assert_eq!(got.path, want.path());
        assert_eq!(got.mode, want.mode());
        assert_eq!((got.size, got.xxh3), (want.size(), want.content_hash()));
        let content = match &got.content {
            NewContent::Bytes(bytes) => bytes.clone(),
            NewContent::CopyOf(i) => source.entries[*i as usize].1.clone(),
        };
        assert_eq!(content, new_archive.read(want).unwrap().as_ref(), "{}", got.path);
    }
    let by_path = |p: &str| rebuilt.iter().find(|e| e.path == p).unwrap();
    // Unchanged, moved and mode-only changes cost no content: they name their old entry.
    assert_eq!(by_path("keep.txt").content, NewContent::CopyOf(0));
    assert_eq!(by_path("moved/big.bin").content, NewContent::CopyOf(3));
    assert_eq!(by_path("tool").content, NewContent::CopyOf(4));
    assert_eq!(by_path("tool").mode, 0o755);
    assert!(matches!(by_path("edit.txt").content, NewContent::Bytes(_)));

    // A base whose content differs from what it claims is refused before anything is produced.
    let mut damaged = old_side(&old_archive, &old);
    damaged.entries[1].1[5] ^= 1;
    let mut produced = 0;
    let err = patch
        .apply_entries(&damaged, |_| -> mf_diff::Result<()> {
            produced += 1;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(produced, 0);
    assert!(matches!(err, mf_diff::Error::WrongBase { .. }), "{err}");
    assert!(err.to_string().contains("edit.txt"), "{err}");

    // A different old side (one entry fewer, or another hash) is a wrong base.
    let mut short = old_side(&old_archive, &old);
    short.entries.pop();
    assert!(matches!(
        patch.apply_entries(&short, |_| Ok::<_, mf_diff::Error>(())),
        Err(mf_diff::Error::WrongBase { .. })
    ));
    let mut other = old_side(&old_archive, &old);
    other.entries[1].0.xxh3 ^= 1;
    let err = patch.apply_entries(&other, |_| Ok::<_, mf_diff::Error>(())).unwrap_err();
    assert!(err.to_string().contains("edit.txt"), "{err}");

    // The visitor's error stops the walk and comes back as is.
    let mut seen = 0;
    let err = patch
        .apply_entries(&source, |_| {
            seen += 1;
            Err(mf_diff::Error::InvalidOption("stop".into()))
        })
        .unwrap_err();
    assert_eq!(seen, 1);
    assert!(err.to_string().contains("stop"));
}
