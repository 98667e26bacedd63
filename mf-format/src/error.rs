//! Errors of the container library. Every error about a file names it; errors about damaged data also
//! name the entry and the byte offset where the damage was found, so a user can tell what to re-fetch.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A result whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading or writing an archive; callers match on the variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on `file`. The message includes `error`'s, so it is deliberately not reported
    /// as the error's `source()` too: a caller printing the chain (`{:#}`) would show it twice.
    #[error("{}: {error}", file.display())]
    Io {
        /// The file the operation was on.
        file: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },

    /// The file does not start with the mf magic.
    #[error("{}: not an mf archive (no mf magic at offset 0)", file.display())]
    NotAnArchive {
        /// The file that is not an archive.
        file: PathBuf,
    },

    #[error(
        "{}: format version {major}.{minor} is not supported (this build reads 1.x and {}.x)",
        file.display(),
        crate::format::VERSION_MAJOR
    )]
    /// The archive's major version is not one this build reads.
    UnsupportedVersion {
        /// The archive.
        file: PathBuf,
        /// Its major version (this build reads 1 and 2).
        major: u16,
        /// Its minor version.
        minor: u16,
    },

    /// Damaged or forged archive bytes: a rule of the spec does not hold.
    #[error("{}: corrupt archive at offset {offset}{}: {what}", file.display(), EntryContext(entry))]
    Corrupt {
        /// The archive.
        file: PathBuf,
        /// Byte offset in the file where the damage was found (a record, a frame, a field).
        offset: u64,
        /// The entry the damaged bytes belong to, when known.
        entry: Option<String>,
        /// What is wrong, in words.
        what: String,
    },

    #[error(
        "{}: entry '{entry}' is damaged: content checksum {actual:016x} does not match the recorded {expected:016x}",
        file.display()
    )]
    /// An entry decoded, but not to the content its hash records.
    ChecksumMismatch {
        /// The archive.
        file: PathBuf,
        /// The damaged entry.
        entry: String,
        /// The xxh3 the index records.
        expected: u64,
        /// The xxh3 of the content as decoded.
        actual: u64,
    },

    /// A path breaks the entry path rules (spec "Paths").
    #[error("invalid entry path {path:?}: {reason}")]
    InvalidPath {
        /// The refused path.
        path: String,
        /// Which path rule it breaks.
        reason: &'static str,
    },

    /// A path was added to a writer twice.
    #[error("entry path '{path}' is added twice")]
    DuplicatePath {
        /// The path added twice.
        path: String,
    },

    /// A path would be a file and a directory at once.
    #[error("entry path '{path}' conflicts with '{other}': one would be a file and a directory at once")]
    PathConflict {
        /// The path being added.
        path: String,
        /// The earlier path it conflicts with.
        other: String,
    },

    /// A caller passed an option or input the writer refuses (the text says which and why).
    #[error("invalid writer option: {0}")]
    InvalidOption(String),

    /// Another process holds the archive's edit lock (an `Editor` is open on it).
    #[error("{}: the archive is busy: another process is changing it (try again when it is done)", file.display())]
    Busy {
        /// The archive.
        file: PathBuf,
    },

    /// The archive cannot be changed in place (the text says why).
    #[error("{}: cannot change this archive in place: {reason}", file.display())]
    NotEditable {
        /// The archive.
        file: PathBuf,
        /// Why not.
        reason: String,
    },

    /// An edit names an entry the archive does not have.
    #[error("{}: no entry '{entry}'", file.display())]
    NoSuchEntry {
        /// The archive.
        file: PathBuf,
        /// The path asked for.
        entry: String,
    },

    /// A buffer given to [`Archive::read_into`](crate::Archive::read_into) is not the entry's size.
    #[error("a buffer of {len} bytes was given for entry '{entry}', which is {size} bytes")]
    BufferSize {
        /// The entry read.
        entry: String,
        /// The buffer's length.
        len: u64,
        /// The entry's size in bytes.
        size: u64,
    },

    /// A read started past the end of an entry.
    #[error("offset {offset} is past the end of entry '{entry}' ({size} bytes)")]
    OutOfRange {
        /// The entry read.
        entry: String,
        /// The offset asked for (past the end).
        offset: u64,
        /// The entry's size in bytes.
        size: u64,
    },
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
            Error::OutOfRange { .. }
            | Error::BufferSize { .. }
            | Error::InvalidOption(_)
            | Error::NoSuchEntry { .. } => io::ErrorKind::InvalidInput,
            Error::Busy { .. } => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}
