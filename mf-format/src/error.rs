//! Errors of the container library. Every error about a file names it; errors about damaged data also
//! name the entry and the byte offset where the damage was found, so a user can tell what to re-fetch.

use std::fmt;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on `file`. The message includes `error`'s, so it is deliberately not reported
    /// as the error's `source()` too: a caller printing the chain (`{:#}`) would show it twice.
    #[error("{}: {error}", file.display())]
    Io { file: PathBuf, error: io::Error },

    #[error("{}: not an mf archive (no mf magic at offset 0)", file.display())]
    NotAnArchive { file: PathBuf },

    #[error(
        "{}: format version {major}.{minor} is not supported (this build reads {}.x)",
        file.display(),
        crate::format::VERSION_MAJOR
    )]
    UnsupportedVersion { file: PathBuf, major: u16, minor: u16 },

    #[error("{}: corrupt archive at offset {offset}{}: {what}", file.display(), EntryContext(entry))]
    Corrupt { file: PathBuf, offset: u64, entry: Option<String>, what: String },

    #[error(
        "{}: entry '{entry}' is damaged: content checksum {actual:016x} does not match the recorded {expected:016x}",
        file.display()
    )]
    ChecksumMismatch { file: PathBuf, entry: String, expected: u64, actual: u64 },

    #[error("invalid entry path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("entry path '{path}' is added twice")]
    DuplicatePath { path: String },

    #[error("entry path '{path}' conflicts with '{other}': one would be a file and a directory at once")]
    PathConflict { path: String, other: String },

    #[error("invalid writer option: {0}")]
    InvalidOption(String),

    #[error("offset {offset} is past the end of entry '{entry}' ({size} bytes)")]
    OutOfRange { entry: String, offset: u64, size: u64 },
}

/// Formats an optional entry name as ` (entry 'NAME')`, or nothing, for error messages about archive
/// data; shared with the other mf crates so every message names entries the same way.
pub struct EntryContext<'a>(pub &'a Option<String>);

impl fmt::Display for EntryContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(entry) => write!(f, " (entry '{entry}')"),
            None => Ok(()),
        }
    }
}

impl Error {
    /// An I/O error on `file`.
    pub fn io(file: impl Into<PathBuf>, error: io::Error) -> Self {
        Error::Io { file: file.into(), error }
    }

    /// Damaged data in `file` at `offset`, in `entry` when known.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, entry: Option<&str>, what: impl Into<String>) -> Self {
        Error::Corrupt { file: file.into(), offset, entry: entry.map(str::to_owned), what: what.into() }
    }

    /// True when the error means the archive's bytes are damaged (as opposed to an I/O failure or a
    /// caller mistake).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::NotAnArchive { .. }
                | Error::Corrupt { .. }
                | Error::ChecksumMismatch { .. }
                | Error::UnsupportedVersion { .. }
        )
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        let kind = match &err {
            Error::Io { error, .. } => error.kind(),
            Error::OutOfRange { .. } | Error::InvalidOption(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
