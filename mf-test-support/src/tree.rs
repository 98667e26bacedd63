//! Writing and reading folder trees.

use std::path::{Path, PathBuf};

/// Writes `files` (path relative to `root`, content) under `root`, creating parent folders.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&full, content).unwrap_or_else(|e| panic!("writing {}: {e}", full.display()));
    }
}

/// Every regular file under `root`, relative path → content, sorted.
pub fn read_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let item = item.unwrap();
            let path = item.path();
            if item.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Copies the regular files of `from` into `to`, keeping relative paths.
pub fn copy_tree(from: &Path, to: &Path) {
    for (path, content) in read_tree(from) {
        write_tree(to, &[(&path, &content)]);
    }
}

/// The sample asset folder shipped in the repository (`examples/assets`).
pub fn sample_assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/assets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_tree_reads_back_sorted_and_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_tree(&a, &[("z/y.txt", b"2"), ("x.txt", b"1")]);
        let expected = vec![("x.txt".to_owned(), b"1".to_vec()), ("z/y.txt".to_owned(), b"2".to_vec())];
        assert_eq!(read_tree(&a), expected);
        copy_tree(&a, &b);
        assert_eq!(read_tree(&b), expected);
        assert!(sample_assets().is_dir());
    }
}
