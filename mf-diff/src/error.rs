//! Errors of the patch library. Each names the file it is about; errors about damaged or mismatched
//! data also name the entry and, for patches, the section and byte offset where the problem was found.

use mf_format::error::EntryContext;
use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the container library (opening or reading an archive).
    #[error(transparent)]
    Archive(#[from] mf_format::Error),

    /// An error only Panda3D multifiles have (an encrypted subfile, an unsupported multifile version).
    #[error(transparent)]
    Panda3d(mf_panda3d::Error),

    #[error("{}: {source}", file.display())]
    Io { file: PathBuf, source: io::Error },

    #[error("{}: not an mf patch (no patch magic at offset 0)", file.display())]
    NotAPatch { file: PathBuf },

    #[error("{}: patch format version {major}.{minor} is not supported (this build reads 2.x; recreate the patch with this mf version)", file.display())]
    UnsupportedVersion { file: PathBuf, major: u16, minor: u16 },

    #[error("{}: corrupt patch at {section} offset {offset}{}: {what}", file.display(), EntryContext(entry))]
    CorruptPatch { file: PathBuf, section: &'static str, offset: u64, entry: Option<String>, what: String },

    #[error("{}: not the file this patch was made for{}: {what}", file.display(), EntryContext(entry))]
    WrongBase { file: PathBuf, entry: Option<String>, what: String },

    #[error("{}: the patch is already applied (the file is already the patch's result)", file.display())]
    AlreadyApplied { file: PathBuf },

    #[error("{}: the rebuilt output does not match the patch{}: {what}", file.display(), EntryContext(entry))]
    OutputMismatch { file: PathBuf, entry: Option<String>, what: String },

    #[error("{}: {what}", file.display())]
    Unsupported { file: PathBuf, what: String },

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
