//! Errors of the Panda3D library: those of the mf container library (I/O, damaged data, invalid
//! paths and options, which name the file, entry and offset) plus the few only Panda3D multifiles have.

use std::io;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong reading, writing or converting a multifile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error shared with mf archives: I/O, damaged data, invalid paths or options.
    #[error(transparent)]
    Format(#[from] mf_format::Error),

    /// The file does not start with the Panda3D magic (nor with a `#` header prefix).
    #[error("{}: not a Panda3D multifile (no multifile magic at offset 0)", file.display())]
    NotAMultifile {
        /// The file.
        file: PathBuf,
    },

    /// A multifile version this reader does not know.
    #[error(
        "{}: Panda3D multifile version {major}.{minor} is not supported (this build reads 1.0 and 1.1)",
        file.display()
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// Major version recorded in the header.
        major: u16,
        /// Minor version recorded in the header.
        minor: u16,
    },

    /// An encrypted subfile was read without a password.
    #[error("{}: entry '{entry}' is encrypted and no password was given", file.display())]
    PasswordRequired {
        /// The multifile.
        file: PathBuf,
        /// The encrypted subfile.
        entry: String,
    },

    /// A path asked for names no entry and no directory of entries.
    #[error("{}: no entry or directory '{path}'", file.display())]
    NotFound {
        /// The archive.
        file: PathBuf,
        /// The path asked for.
        path: String,
    },

    /// A file given to add could not be taken (unreadable, not a regular file, a path outside the
    /// base directory, a symlink leaving an added directory).
    #[error(transparent)]
    Input(mf_format::pack::PackError),

    /// An encrypted subfile could not be decrypted (wrong password, damaged record, unknown cipher,
    /// or a build without the `crypto` feature).
    #[error("{}: entry '{entry}' cannot be decrypted: {what}", file.display())]
    Decrypt {
        /// The multifile.
        file: PathBuf,
        /// The subfile.
        entry: String,
        /// Why.
        what: String,
    },
}

impl Error {
    /// An I/O error on `file`.
    pub fn io(file: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Format(mf_format::Error::io(file, source))
    }

    /// Damaged data in `file` at `offset`, in `entry` when known.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, entry: Option<&str>, what: impl Into<String>) -> Self {
        Error::Format(mf_format::Error::corrupt(file, offset, entry, what))
    }

    /// True when the error means the archive's bytes are damaged (as opposed to an I/O failure, a
    /// missing password or a caller mistake).
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Format(inner) => inner.is_corruption(),
            Error::NotAMultifile { .. } | Error::UnsupportedVersion { .. } => true,
            Error::PasswordRequired { .. } | Error::Decrypt { .. } | Error::NotFound { .. } | Error::Input(_) => false,
        }
    }
}

impl From<mf_format::pack::PackError> for Error {
    fn from(err: mf_format::pack::PackError) -> Self {
        match err {
            mf_format::pack::PackError::Format(inner) => Error::Format(inner),
            other => Error::Input(other),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Format(inner) => inner.into(),
            not_found @ Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, not_found),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}
