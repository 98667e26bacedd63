//! `Journal::parse_and_check`, the parse-and-check step of folder-mode recovery (also the entry point
//! of the `folder_journal` fuzz target).

use std::path::Path;

use mf_release::testing::{file_table as table, journal_json};
use mf_release::update::folder::{Journal, Operation};
use mf_release::{Error, FileTable};
use serde_json::json;

fn tables(version: &str) -> mf_release::Result<FileTable> {
    match version {
        "1.0" => Ok(table("1.0", &["a.txt", "old.txt"])),
        "2.0" => Ok(table("2.0", &["a.txt", "dir/new.txt"])),
        "broken" => Err(Error::NoVersions { repo: "r".into() }),
        other => Err(Error::VersionNotFound { repo: "r".into(), version: other.into(), available: vec![] }),
    }
}

const PATH: &str = "/x/.mf-update/journal.json";

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
    let bytes = journal_json(
        Some("1.0"),
        "2.0",
        json!([{"op":"replace","path":"dir/new.txt","staged":"s0"},{"op":"delete","path":"old.txt"}]),
        &["dir"],
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
    let escape = journal_json(Some("1.0"), "2.0", json!([{"op":"replace","path":"../a.txt","staged":"s0"}]), &[]);
    assert!(refusal(&escape).contains("../a.txt"));
    let state = journal_json(Some("1.0"), "2.0", json!([{"op":"delete","path":".mf-update/x"}]), &[]);
    assert!(refusal(&state).contains(".mf-update"));
    let staged = journal_json(Some("1.0"), "2.0", json!([{"op":"replace","path":"a.txt","staged":"../s0"}]), &[]);
    assert!(refusal(&staged).contains("staging name"));
    let unlisted = journal_json(Some("1.0"), "2.0", json!([{"op":"delete","path":"a.txt"}]), &[]);
    assert!(refusal(&unlisted).contains("not allowed"));
    let unknown = journal_json(None, "9.9", json!([]), &[]);
    assert!(refusal(&unknown).contains("9.9"));
}

#[test]
fn a_failing_table_lookup_is_returned_as_is() {
    let bytes = journal_json(Some("broken"), "2.0", json!([{"op":"replace","path":"a.txt","staged":"s0"}]), &[]);
    assert!(matches!(Journal::parse_and_check(&bytes, Path::new(PATH), &tables), Err(Error::NoVersions { .. })));
}
