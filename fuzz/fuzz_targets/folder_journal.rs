//! Feeds `.mf-update/journal.json` bytes to the parse-and-check step of folder-mode recovery
//! (`Journal::parse_and_check`), against fixed signed file tables for versions `1.0` and `2.0`; any
//! other version is unknown to the repository, and version `lookup-fails` makes the table lookup
//! itself fail. Besides "no panic, no huge allocation", it re-checks every accepted journal
//! independently of the validator (the properties `InstallDir::recover` relies on before it moves a
//! file) and that it survives serialization unchanged.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mf_release::manifest::{check_relative_path, STATE_DIR_NAME};
use mf_release::update::folder::{Journal, Operation};
use mf_release::testing::file_table as table;
use mf_release::{Error, FileTable};

const OLD: &[&str] = &["a.txt", "dir/b.bin", "old.txt", "gone/x"];
const NEW: &[&str] = &["a.txt", "dir/b.bin", "dir/sub/c.txt", "new.txt"];

fn tables(version: &str) -> mf_release::Result<FileTable> {
    match version {
        "1.0" => Ok(table("1.0", OLD)),
        "2.0" => Ok(table("2.0", NEW)),
        "lookup-fails" => Err(Error::NoVersions { repo: "fuzz".into() }),
        other => Err(Error::VersionNotFound {
            repo: "fuzz".into(),
            version: other.into(),
            available: vec!["1.0".into(), "2.0".into()],
        }),
    }
}

fn listed(version: &str) -> HashSet<&'static str> {
    match version {
        "1.0" => OLD.iter().copied().collect(),
        "2.0" => NEW.iter().copied().collect(),
        _ => panic!("an accepted, unfinished journal names version {version:?}, which has no table"),
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/.mf-update/journal.json");
    let journal = match Journal::parse_and_check(data, path, &tables) {
        Ok(journal) => journal,
        Err(Error::BadJournal { path: named, what }) => {
            assert_eq!(named, path, "the error names the journal file");
            assert!(!what.is_empty());
            return;
        }
        Err(Error::NoVersions { .. }) => return,
        Err(other) => panic!("unexpected error kind: {other:?}"),
    };
    check_accepted(&journal);

    let again = serde_json::to_vec(&journal).expect("a journal serializes");
    let reparsed =
        Journal::parse_and_check(&again, path, &tables).expect("an accepted journal, written back, is accepted");
    assert_eq!(reparsed.operations(), journal.operations());
    assert_eq!(reparsed.created_dirs(), journal.created_dirs());
    assert_eq!((reparsed.from_version(), reparsed.to_version()), (journal.from_version(), journal.to_version()));
    assert_eq!(reparsed.is_done(), journal.is_done());
});

/// What recovery relies on, checked without the validator's code.
fn check_accepted(journal: &Journal) {
    let mut paths = HashSet::new();
    let mut staged_names = HashSet::new();
    let mut replaced_parents = HashSet::new();
    for op in journal.operations() {
        let path = op.path();
        assert!(check_relative_path(path).is_ok(), "accepted path {path:?} is not a release path");
        assert!(path != STATE_DIR_NAME && !path.starts_with(".mf-update/"), "accepted path {path:?} in state dir");
        assert!(!path.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "accepted path {path:?}");
        assert!(paths.insert(path), "accepted path {path:?} twice");
        if let Operation::Replace { staged, .. } = op {
            assert!(
                staged.starts_with('s')
                    && staged.len() >= 2
                    && staged[1..].bytes().all(|b| b.is_ascii_digit())
                    && !staged.contains('/'),
                "accepted staged name {staged:?}"
            );
            assert!(staged_names.insert(staged.clone()), "staged name {staged:?} used twice");
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                replaced_parents.insert(&path[..at + i]);
                at += i + 1;
            }
        }
    }
    for dir in journal.created_dirs() {
        assert!(replaced_parents.contains(dir.as_str()), "created dir {dir:?} is no parent of a replaced file");
    }
    if journal.is_done() {
        return;
    }
    let to = listed(journal.to_version());
    let from = journal.from_version().map(listed).unwrap_or_default();
    for op in journal.operations() {
        match op {
            Operation::Replace { path, .. } => assert!(to.contains(path.as_str()), "replaces unlisted {path:?}"),
            Operation::Delete { path } => assert!(
                from.contains(path.as_str()) && !to.contains(path.as_str()),
                "deletes {path:?}, which the tables do not allow"
            ),
        }
    }
}
