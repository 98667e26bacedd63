//! Fixtures shared by this crate's integration tests, the `mf` end-to-end tests and the
//! `folder_journal` fuzz target, which all forge folder-mode journals and the file tables they are
//! checked against. Hidden from the docs: not part of the API, no stability promised.

use crate::manifest::{FileEntry, FileTable, FILE_TABLE_TYPE, SPEC_VERSION};

/// A file table of `version` listing `paths` (1 byte, mode 0644 each, no hashes): all that the
/// journal check looks at, which is whether each operation's path is listed.
pub fn file_table(version: &str, paths: &[&str]) -> FileTable {
    FileTable {
        kind: FILE_TABLE_TYPE.into(),
        spec_version: SPEC_VERSION,
        version: version.into(),
        archive_index_hash: String::new(),
        entries: paths
            .iter()
            .map(|p| FileEntry { path: (*p).into(), size: 1, mode: 0o644, sha256: String::new(), xxh3: String::new() })
            .collect(),
    }
}

/// The bytes of a `.mf-update/journal.json` switching from `from` to `to` with `operations` (a JSON
/// array of `{"op": "replace"|"delete", "path": …, "staged": …}`, unchecked, so it can be hostile) and
/// `created_dirs`, not yet done.
pub fn journal_json(from: Option<&str>, to: &str, operations: serde_json::Value, created_dirs: &[&str]) -> Vec<u8> {
    let journal = serde_json::json!({
        "type": crate::update::folder::JOURNAL_TYPE, "from": from, "to": to, "done": false,
        "operations": operations, "created_dirs": created_dirs,
    });
    serde_json::to_vec(&journal).expect("JSON values serialize")
}
