//! `Journal::parse_and_check`, the parse-and-check step of folder-mode recovery (also the entry point
//! of the `folder_journal` fuzz target).

use std::path::Path;

use mf_release::update::folder::{Journal, Operation};
use mf_release::{Error, FileEntry, FileTable};

fn table(version: &str, paths: &[&str]) -> FileTable {
    FileTable {
        kind: "mf-file-table".into(),
        spec_version: 1,
        version: version.into(),
        archive_index_hash: String::new(),
        entries: paths
            .iter()
            .map(|p| FileEntry { path: (*p).into(), size: 1, mode: 0o644, sha256: String::new(), xxh3: String::new() })
            .collect(),
    }
}

fn tables(version: &str) -> mf_release::Result<FileTable> {
    match version {
        "1.0" => Ok(table("1.0", &["a.txt", "old.txt"])),
        "2.0" => Ok(table("2.0", &["a.txt", "dir/new.txt"])),
        "broken" => Err(Error::NoVersions { repo: "r".into() }),
        other => Err(Error::VersionNotFound { repo: "r".into(), version: other.into(), available: vec![] }),
    }
}

const PATH: &str = "/x/.mf-update/journal.json";

fn journal(from: &str, to: &str, operations: &str, dirs: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"mf-folder-journal","from":{from},"to":"{to}","done":false,"operations":[{operations}],"created_dirs":[{dirs}]}}"#
    )
    .into_bytes()
}

fn refusal(bytes: &[u8]) -> String {
    match Journal::parse_and_check(bytes, Path::new(PATH), &tables) {
        Err(Error::BadJournal { path, what }) => {
            assert_eq!(path, Path::new(PATH));
            what
        }
        other => panic!("expected BadJournal, got {other:?}"),
    }
}

#[test]
fn a_journal_the_tables_allow_is_accepted_with_its_operations() {
    let bytes = journal(
        r#""1.0""#,
        "2.0",
        r#"{"op":"replace","path":"dir/new.txt","staged":"s0"},{"op":"delete","path":"old.txt"}"#,
        r#""dir""#,
    );
    let journal = Journal::parse_and_check(&bytes, Path::new(PATH), &tables).unwrap();
    assert_eq!((journal.from_version(), journal.to_version(), journal.is_done()), (Some("1.0"), "2.0", false));
    assert_eq!(
        journal.operations(),
        [
            Operation::Replace { path: "dir/new.txt".into(), staged: "s0".into() },
            Operation::Delete { path: "old.txt".into() }
        ]
    );
    assert_eq!(journal.created_dirs(), ["dir"]);
}

#[test]
fn hostile_journals_are_refused_naming_the_journal_file() {
    assert!(refusal(b"{not json").contains("not an mf folder journal"));
    let escape = journal(r#""1.0""#, "2.0", r#"{"op":"replace","path":"../a.txt","staged":"s0"}"#, "");
    assert!(refusal(&escape).contains("../a.txt"));
    let state = journal(r#""1.0""#, "2.0", r#"{"op":"delete","path":".mf-update/x"}"#, "");
    assert!(refusal(&state).contains(".mf-update"));
    let staged = journal(r#""1.0""#, "2.0", r#"{"op":"replace","path":"a.txt","staged":"../s0"}"#, "");
    assert!(refusal(&staged).contains("staging name"));
    let unlisted = journal(r#""1.0""#, "2.0", r#"{"op":"delete","path":"a.txt"}"#, "");
    assert!(refusal(&unlisted).contains("not allowed"));
    let unknown = journal("null", "9.9", "", "");
    assert!(refusal(&unknown).contains("9.9"));
}

#[test]
fn a_failing_table_lookup_is_returned_as_is() {
    let bytes = journal(r#""broken""#, "2.0", r#"{"op":"replace","path":"a.txt","staged":"s0"}"#, "");
    assert!(matches!(Journal::parse_and_check(&bytes, Path::new(PATH), &tables), Err(Error::NoVersions { .. })));
}
