//! Errors of the patch library. Each names the file it is about; errors about damaged or mismatched
//! data also name the entry and, for patches, the section and byte offset where the problem was found.

use mf_format::error::EntryContext;
use std::io;
use std::path::PathBuf;

/// The result of every fallible call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a diff or an apply failed. Nothing is written at the target when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the container library (opening or reading an archive).
    #[error(transparent)]
    Archive(#[from] mf_format::Error),

    /// An error only Panda3D multifiles have (an encrypted subfile, an unsupported multifile version).
    #[error(transparent)]
    Panda3d(mf_panda3d::Error),

    /// Reading or writing a file failed.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file being read or written.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },

    /// The file does not start with the patch magic: it is not a patch at all.
    #[error("{}: not an mf patch (no patch magic at offset 0)", file.display())]
    NotAPatch {
        /// The supposed patch.
        file: PathBuf,
    },

    /// A patch of another major format version.
    #[error("{}: patch format version {major}.{minor} is not supported (this build reads 2.x; recreate the patch with this mf version)", file.display())]
    UnsupportedVersion {
        /// The patch.
        file: PathBuf,
        /// Its major version (this build reads [`crate::wire::PATCH_VERSION_MAJOR`]).
        major: u16,
        /// Its minor version.
        minor: u16,
    },

    /// The patch is damaged, truncated or lies (a count or length past what the file can hold).
    #[error("{}: corrupt patch at {section} offset {offset}{}: {what}", file.display(), EntryContext(entry))]
    CorruptPatch {
        /// The patch.
        file: PathBuf,
        /// `header`, `control stream` or the blob or stream being decoded.
        section: &'static str,
        /// Byte offset within `section` (of the decompressed stream for streams).
        offset: u64,
        /// The entry record being read, when there is one.
        entry: Option<String>,
        /// What is wrong.
        what: String,
    },

    /// The old file is not the one the patch was made from (length, index hash or an entry's hash differ).
    #[error("{}: not the file this patch was made for{}: {what}", file.display(), EntryContext(entry))]
    WrongBase {
        /// The old file.
        file: PathBuf,
        /// The entry whose base does not match, when one is to blame.
        entry: Option<String>,
        /// What differs.
        what: String,
    },

    /// The old file already is the patch's result; callers updating in place treat this as success.
    #[error("{}: the patch is already applied (the file is already the patch's result)", file.display())]
    AlreadyApplied {
        /// The old file.
        file: PathBuf,
    },

    /// The rebuilt output's length or hash differs from what the patch declares; it was not kept.
    #[error("{}: the rebuilt output does not match the patch{}: {what}", file.display(), EntryContext(entry))]
    OutputMismatch {
        /// The patch.
        file: PathBuf,
        /// The entry whose content is wrong, when one is to blame.
        entry: Option<String>,
        /// What differs.
        what: String,
    },

    /// A request the patch or file cannot serve: a patch that is not a regular file, an entry too
    /// large to hold in memory, entry-by-entry application of a plain patch.
    #[error("{}: {what}", file.display())]
    Unsupported {
        /// The file concerned.
        file: PathBuf,
        /// Why.
        what: String,
    },

    /// An option out of range (memory limit, level, size syntax); names the option.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl From<mf_panda3d::Error> for Error {
    fn from(error: mf_panda3d::Error) -> Self {
        match error {
            mf_panda3d::Error::Format(inner) => Error::Archive(inner),
            other => Error::Panda3d(other),
        }
    }
}

impl Error {
    pub(crate) fn io(file: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { file: file.into(), source }
    }

    /// True when the error means a patch or archive is damaged or does not fit (as opposed to an
    /// I/O failure such as a full disk).
    pub fn is_data_error(&self) -> bool {
        match self {
            Error::Archive(e) => e.is_corruption(),
            Error::Panda3d(e) => e.is_corruption(),
            Error::Io { .. } | Error::InvalidOption(_) => false,
            _ => true,
        }
    }
}
