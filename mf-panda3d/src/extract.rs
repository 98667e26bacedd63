//! Choosing entries of an archive of either format and extracting them safely: the rules `mf extract`
//! applies, shared with every other front end (the Python package) so both select and refuse alike.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use mf_format::{unpack_in, UnpackEntry, UnpackError, UnpackOptions, UnpackReport};

use crate::any::{AnyArchive, AnyEntry};
use crate::error::Error;

/// Why [`extract`] wrote nothing, or could not select what to extract.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive cannot be extracted as asked: a requested path it does not hold, an encrypted
    /// entry without a password, a path that is a file and a directory at once.
    #[error(transparent)]
    Archive(#[from] Error),
    /// A path or target check failed before anything was written (see [`unpack_in`]).
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// The entries `paths` name, in the order asked and each once: an exact entry path, or a directory
/// (every entry under it; a trailing `/` is allowed). All entries, in path order, when `paths` is
/// empty. A path that matches nothing is [`Error::NotFound`].
pub fn select<'a>(archive: &'a AnyArchive, paths: &[String]) -> Result<Vec<AnyEntry<'a>>, Error> {
    if paths.is_empty() {
        return Ok(archive.entries_by_path().collect());
    }
    let mut chosen = Vec::new();
    let mut seen = HashSet::new();
    for path in paths {
        let path = path.trim_end_matches('/');
        let mut matched = false;
        if let Some(entry) = archive.get(path) {
            matched = true;
            if seen.insert(entry.index()) {
                chosen.push(entry);
            }
        } else {
            let prefix = format!("{path}/");
            let start = archive.lower_bound(&prefix);
            for position in start.. {
                match archive.lookup_entry(position) {
                    Some(entry) if entry.path().starts_with(&prefix) => {
                        matched = true;
                        if seen.insert(entry.index()) {
                            chosen.push(entry);
                        }
                    }
                    _ => break,
                }
            }
        }
        if !matched {
            return Err(Error::NotFound { file: archive.name().to_owned(), path: path.to_owned() });
        }
    }
    Ok(chosen)
}

/// Extracts `selected` entries of `archive` under `dest` with [`unpack_in`] (validated paths, no
/// symlink followed below `dest`, each file complete or absent, checksums checked while writing).
/// Refuses before writing anything when a selected path is a file and a directory at once
/// ([`unpack_in`]'s check, so a conflict-free entry of such a multifile still extracts by name), or
/// when an entry is encrypted and no password was set. `progress` gets each entry's size as it completes.
pub fn extract(
    archive: &AnyArchive,
    selected: &[AnyEntry<'_>],
    dest: &Path,
    options: UnpackOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<UnpackReport, ExtractError> {
    if !archive.has_password() {
        if let Some(encrypted) = selected.iter().find(|e| e.is_encrypted()) {
            let file = archive.name().to_owned();
            return Err(Error::PasswordRequired { file, entry: encrypted.path().to_owned() }.into());
        }
    }
    let entries: Vec<UnpackEntry> = selected
        .iter()
        .map(|e| UnpackEntry { path: e.path().to_owned(), size: e.size(), mode: e.mode(), mtime: e.mtime() })
        .collect();
    let open = |entry: &UnpackEntry| {
        let found = archive.get(&entry.path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        archive.reader(&found).map_err(io::Error::from)
    };
    Ok(unpack_in(dest, &entries, options, open, progress)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> AnyArchive {
        let bytes = mf_test_support::mf_bytes([("a.txt", &b"a"[..]), ("dir/b.txt", b"b"), ("dir/sub/c.txt", b"c")]);
        AnyArchive::from_bytes(bytes, "x.mf").unwrap()
    }

    #[test]
    fn selects_exact_paths_and_directories_once_each() {
        let archive = archive();
        let paths = |asked: &[&str]| -> Vec<String> {
            let asked: Vec<String> = asked.iter().map(|s| s.to_string()).collect();
            select(&archive, &asked).unwrap().iter().map(|e| e.path().to_owned()).collect()
        };
        assert_eq!(paths(&[]), ["a.txt", "dir/b.txt", "dir/sub/c.txt"]);
        assert_eq!(paths(&["dir/sub/", "dir", "a.txt"]), ["dir/sub/c.txt", "dir/b.txt", "a.txt"]);
        let missing = select(&archive, &["di".to_owned()]).unwrap_err();
        assert!(matches!(&missing, Error::NotFound { path, .. } if path == "di"), "{missing}");
        assert_eq!(missing.to_string(), "x.mf: no entry or directory 'di'");
    }

    #[test]
    fn extracts_the_selection_and_nothing_else() {
        let archive = archive();
        let dest = tempfile::tempdir().unwrap();
        let selected = select(&archive, &["dir/sub".to_owned()]).unwrap();
        let report = extract(&archive, &selected, dest.path(), UnpackOptions::default(), &|_| {}).unwrap();
        assert_eq!(report.written, 1);
        assert_eq!(std::fs::read(dest.path().join("dir/sub/c.txt")).unwrap(), b"c");
        assert!(!dest.path().join("a.txt").exists() && !dest.path().join("dir/b.txt").exists());
        let again = extract(&archive, &selected, dest.path(), UnpackOptions::default(), &|_| {});
        assert!(matches!(again, Err(ExtractError::Unpack(UnpackError::Exists { .. }))));
    }
}
