//! Entry path rules (spec/FORMAT.md, "Paths"). Both the writer and the reader apply them, so no archive
//! this library accepts can name a file outside the directory it is extracted or mounted into.

use crate::error::{Error, Result};
use crate::format::{MAX_COMPONENT_LEN, MAX_PATH_LEN};

/// Checks that `path` is a valid entry path: relative, `/`-separated, no empty, `.` or `..` component,
/// no NUL or backslash, at most 4096 bytes with components of at most 255.
pub fn validate_path(path: &str) -> Result<()> {
    let fail = |reason| Err(Error::InvalidPath { path: path.to_owned(), reason });
    if path.is_empty() {
        return fail("the path is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return fail("the path is longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return fail("absolute paths are not allowed");
    }
    for component in path.split('/') {
        match component {
            "" => return fail("empty path component (leading, trailing or doubled '/')"),
            "." | ".." => return fail("'.' and '..' components are not allowed"),
            _ if component.len() > MAX_COMPONENT_LEN => return fail("a path component is longer than 255 bytes"),
            _ if component.contains('\0') => return fail("NUL bytes are not allowed"),
            _ if component.contains('\\') => {
                return fail("backslashes are not allowed (use '/' to separate components)")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Turns a relative file-system path into an entry path (components joined by `/`).
pub fn entry_path_from_fs(relative: &std::path::Path) -> Result<String> {
    use std::path::Component;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => {
                    return Err(Error::InvalidPath {
                        path: relative.to_string_lossy().into_owned(),
                        reason: "the file name is not valid UTF-8",
                    })
                }
            },
            Component::CurDir => {}
            _ => {
                return Err(Error::InvalidPath {
                    path: relative.to_string_lossy().into_owned(),
                    reason: "the path must be relative and stay inside its input directory",
                })
            }
        }
    }
    let path = parts.join("/");
    validate_path(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for path in ["a", "a/b/c.png", "dir.with.dots/x", "..a/b..", "unicodé/文件"] {
            validate_path(path).unwrap();
        }
    }

    #[test]
    fn rejects_escaping_and_malformed_paths() {
        let long_component = "x".repeat(256);
        let long_path = vec!["abc"; 1100].join("/");
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "a\0b",
            "a\\..\\b",
            long_component.as_str(),
            long_path.as_str(),
        ] {
            assert!(validate_path(path).is_err(), "{path:?} should be rejected");
        }
    }

    #[test]
    fn converts_relative_fs_paths() {
        use std::path::Path;
        assert_eq!(entry_path_from_fs(Path::new("a/b/c")).unwrap(), "a/b/c");
        assert_eq!(entry_path_from_fs(Path::new("./a")).unwrap(), "a");
        assert!(entry_path_from_fs(Path::new("../a")).is_err());
        assert!(entry_path_from_fs(Path::new("/a")).is_err());
    }
}
