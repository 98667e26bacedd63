//! Library errors as Python exceptions. Work runs without the GIL and returns a [`Failure`] (plain data,
//! `Send`); at the boundary it becomes an instance of the matching class of `mfarchive._errors`, with the
//! file, entry and offset the library named as attributes, so callers can `except CorruptError as e:
//! e.entry`. No library error is turned into a panic, and none is lost: every variant maps to a class.

use std::io;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// Which exception class of `mfarchive._errors` a failure raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Generic,
    Io,
    Corrupt,
    NotAnArchive,
    UnsupportedVersion,
    NotFound,
    Password,
    InvalidPath,
    InvalidOption,
    Exists,
    Extract,
    NotRaw,
    WrongBase,
    AlreadyApplied,
    Release,
    Signature,
    Expired,
    Rollback,
    Fetch,
    Locked,
    UnknownInstall,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Generic => "MfError",
            Kind::Io => "MfIOError",
            Kind::Corrupt => "CorruptError",
            Kind::NotAnArchive => "NotAnArchiveError",
            Kind::UnsupportedVersion => "UnsupportedVersionError",
            Kind::NotFound => "NotFoundError",
            Kind::Password => "PasswordError",
            Kind::InvalidPath => "InvalidPathError",
            Kind::InvalidOption => "InvalidOptionError",
            Kind::Exists => "ExistsError",
            Kind::Extract => "ExtractError",
            Kind::NotRaw => "NotRawError",
            Kind::WrongBase => "WrongBaseError",
            Kind::AlreadyApplied => "AlreadyAppliedError",
            Kind::Release => "ReleaseError",
            Kind::Signature => "SignatureError",
            Kind::Expired => "ExpiredError",
            Kind::Rollback => "RollbackError",
            Kind::Fetch => "FetchError",
            Kind::Locked => "LockedError",
            Kind::UnknownInstall => "UnknownInstallError",
        }
    }
}

/// A library failure, ready to become a Python exception (boxed: it travels in every `Result`).
#[derive(Debug, Clone)]
pub struct Failure(Box<Details>);

/// What a [`Failure`] tells.
#[derive(Debug, Clone)]
pub struct Details {
    pub kind: Kind,
    /// The library's message with its causes (`a: b: c`).
    pub message: String,
    pub file: Option<PathBuf>,
    pub entry: Option<String>,
    pub offset: Option<u64>,
    /// For damaged patches: the section the offset is in.
    pub section: Option<&'static str>,
    pub errno: Option<i32>,
    /// Failures of single entries (an extraction that wrote the others).
    pub failures: Vec<Failure>,
    pub written: Option<usize>,
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl std::ops::Deref for Failure {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Failure {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

impl Failure {
    pub fn new(kind: Kind, error: &dyn std::error::Error) -> Failure {
        Failure::message(kind, mf_release::error::chain(error))
    }

    pub fn message(kind: Kind, message: impl Into<String>) -> Failure {
        Failure(Box::new(Details {
            kind,
            message: message.into(),
            file: None,
            entry: None,
            offset: None,
            section: None,
            errno: None,
            failures: Vec::new(),
            written: None,
        }))
    }

    fn file(mut self, file: &Path) -> Failure {
        self.file = Some(file.to_owned());
        self
    }

    fn entry(mut self, entry: Option<&str>) -> Failure {
        self.entry = entry.map(str::to_owned);
        self
    }

    fn offset(mut self, offset: u64) -> Failure {
        self.offset = Some(offset);
        self
    }

    fn io(error: &io::Error, whole: &dyn std::error::Error, file: Option<&Path>) -> Failure {
        // A library error carried inside an io::Error (entry readers report damage that way) keeps
        // its own class.
        if let Some(inner) = error.get_ref() {
            if let Some(format) = inner.downcast_ref::<mf_format::Error>() {
                return Failure::from(format);
            }
            if let Some(panda) = inner.downcast_ref::<mf_panda3d::Error>() {
                return Failure::from(panda);
            }
        }
        let mut failure = Failure::new(Kind::Io, whole);
        failure.file = file.map(Path::to_owned);
        failure.errno = error.raw_os_error();
        failure
    }

    /// The Python exception: an instance of the class `kind` names, with its attributes set.
    pub fn to_py(&self, py: Python<'_>) -> PyErr {
        match self.instance(py) {
            Ok(exception) => PyErr::from_value(exception),
            Err(err) => err,
        }
    }

    fn instance<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let class = error_class(py, self.kind)?;
        let exception = match self.errno {
            Some(errno) => class.call1((errno, &self.message))?,
            None => class.call1((&self.message,))?,
        };
        exception.setattr("file", self.file.as_ref().map(|f| f.to_string_lossy().into_owned()))?;
        exception.setattr("entry", &self.entry)?;
        exception.setattr("offset", self.offset)?;
        if self.section.is_some() {
            exception.setattr("section", self.section)?;
        }
        if self.written.is_some() {
            let failures = self.failures.iter().map(|f| f.instance(py)).collect::<PyResult<Vec<_>>>()?;
            exception.setattr("failures", failures)?;
            exception.setattr("written", self.written)?;
        }
        Ok(exception)
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        Python::attach(|py| failure.to_py(py))
    }
}

/// The class `kind` names, imported once.
fn error_class(py: Python<'_>, kind: Kind) -> PyResult<Bound<'_, PyAny>> {
    static MODULE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("mfarchive._errors").map(|m| m.into_any().unbind()))?;
    let class = module.bind(py).getattr(kind.class_name())?;
    class.cast_into::<PyType>().map(Bound::into_any).map_err(PyErr::from)
}

impl From<&mf_format::Error> for Failure {
    fn from(error: &mf_format::Error) -> Failure {
        use mf_format::Error as E;
        match error {
            E::Io { file, error: io } => Failure::io(io, error, Some(file)),
            E::NotAnArchive { file } => Failure::new(Kind::NotAnArchive, error).file(file).offset(0),
            E::UnsupportedVersion { file, .. } => Failure::new(Kind::UnsupportedVersion, error).file(file),
            E::Corrupt { file, offset, entry, .. } => {
                Failure::new(Kind::Corrupt, error).file(file).entry(entry.as_deref()).offset(*offset)
            }
            E::ChecksumMismatch { file, entry, .. } => Failure::new(Kind::Corrupt, error).file(file).entry(Some(entry)),
            E::InvalidPath { path, .. } | E::DuplicatePath { path } | E::PathConflict { path, .. } => {
                Failure::new(Kind::InvalidPath, error).entry(Some(path))
            }
            E::InvalidOption(_) => Failure::new(Kind::InvalidOption, error),
            E::OutOfRange { entry, .. } | E::BufferSize { entry, .. } => {
                Failure::new(Kind::InvalidOption, error).entry(Some(entry))
            }
            E::Busy { file } => Failure::new(Kind::Locked, error).file(file),
            E::NotEditable { file, .. } => Failure::new(Kind::UnsupportedVersion, error).file(file),
            E::NoSuchEntry { file, entry } => Failure::new(Kind::NotFound, error).file(file).entry(Some(entry)),
        }
    }
}

impl From<mf_format::Error> for Failure {
    fn from(error: mf_format::Error) -> Failure {
        Failure::from(&error)
    }
}

impl From<&mf_panda3d::Error> for Failure {
    fn from(error: &mf_panda3d::Error) -> Failure {
        use mf_panda3d::Error as E;
        match error {
            E::Format(inner) => Failure::from(inner),
            E::NotAMultifile { file } => Failure::new(Kind::NotAnArchive, error).file(file).offset(0),
            E::UnsupportedVersion { file, .. } => Failure::new(Kind::UnsupportedVersion, error).file(file),
            E::PasswordRequired { file, entry } | E::Decrypt { file, entry, .. } => {
                Failure::new(Kind::Password, error).file(file).entry(Some(entry))
            }
            E::NotFound { file, path } => Failure::new(Kind::NotFound, error).file(file).entry(Some(path)),
            E::Input(inner) => Failure::from(inner),
        }
    }
}

impl From<mf_panda3d::Error> for Failure {
    fn from(error: mf_panda3d::Error) -> Failure {
        Failure::from(&error)
    }
}

impl From<&mf_format::UnpackError> for Failure {
    fn from(error: &mf_format::UnpackError) -> Failure {
        use mf_format::UnpackError as E;
        match error {
            E::Path(inner) => Failure::from(inner),
            E::Exists { path, entry } | E::DirectoryInTheWay { path, entry } | E::NotADirectory { path, entry, .. } => {
                Failure::new(Kind::Exists, error).file(path).entry(Some(entry))
            }
            E::Io { path, error: io } => Failure::io(io, error, Some(path)),
            E::Read { entry, error: io } => {
                let mut failure = Failure::io(io, error, None);
                failure.entry.get_or_insert_with(|| entry.clone());
                failure
            }
        }
    }
}

impl From<mf_panda3d::ExtractError> for Failure {
    fn from(error: mf_panda3d::ExtractError) -> Failure {
        match &error {
            mf_panda3d::ExtractError::Archive(inner) => Failure::from(inner),
            mf_panda3d::ExtractError::Unpack(inner) => Failure::from(inner),
        }
    }
}

impl From<mf_format::PackError> for Failure {
    fn from(error: mf_format::PackError) -> Failure {
        Failure::from(&error)
    }
}

impl From<&mf_format::PackError> for Failure {
    fn from(error: &mf_format::PackError) -> Failure {
        use mf_format::PackError as E;
        match error {
            E::Format(inner) | E::BadPath { error: inner, .. }
                if !matches!(inner, mf_format::Error::InvalidPath { .. }) =>
            {
                Failure::from(inner)
            }
            E::Io { path, error: io } => Failure::io(io, error, Some(path)),
            E::BadPattern { .. } | E::ListNeedsOneDir | E::ListTooLarge { .. } => {
                Failure::new(Kind::InvalidOption, error)
            }
            E::NotADirectory { path } => Failure::new(Kind::InvalidOption, error).file(path),
            _ => Failure::new(Kind::InvalidPath, error),
        }
    }
}

impl From<mf_diff::Error> for Failure {
    fn from(error: mf_diff::Error) -> Failure {
        Failure::from(&error)
    }
}

impl From<&mf_diff::Error> for Failure {
    fn from(error: &mf_diff::Error) -> Failure {
        use mf_diff::Error as E;
        match error {
            E::Archive(inner) => Failure::from(inner),
            E::Panda3d(inner) => Failure::from(inner),
            E::Io { file, source } => Failure::io(source, error, Some(file)),
            E::NotAPatch { file } => Failure::new(Kind::NotAnArchive, error).file(file).offset(0),
            E::UnsupportedVersion { file, .. } => Failure::new(Kind::UnsupportedVersion, error).file(file),
            E::CorruptPatch { file, section, offset, entry, .. } => {
                let mut failure = Failure::new(Kind::Corrupt, error).file(file).entry(entry.as_deref()).offset(*offset);
                failure.section = Some(section);
                failure
            }
            E::WrongBase { file, entry, .. } => Failure::new(Kind::WrongBase, error).file(file).entry(entry.as_deref()),
            E::AlreadyApplied { file } => Failure::new(Kind::AlreadyApplied, error).file(file),
            E::OutputMismatch { file, entry, .. } => {
                Failure::new(Kind::Corrupt, error).file(file).entry(entry.as_deref())
            }
            E::Unsupported { file, .. } => Failure::new(Kind::Generic, error).file(file),
            E::InvalidOption(_) => Failure::new(Kind::InvalidOption, error),
        }
    }
}

impl From<mf_release::Error> for Failure {
    fn from(error: mf_release::Error) -> Failure {
        use mf_release::Error as E;
        match &error {
            E::Format(inner) => Failure::from(inner),
            E::Diff(inner) => Failure::from(inner),
            E::Io { path, source } => Failure::io(source, &error, Some(path)),
            E::BadSignature { .. } | E::BadKey { .. } => Failure::new(Kind::Signature, &error),
            E::Expired { .. } => Failure::new(Kind::Expired, &error),
            E::Rollback { .. } => Failure::new(Kind::Rollback, &error),
            E::Fetch { .. } => Failure::new(Kind::Fetch, &error),
            E::Mismatch { .. } | E::BadMetadata { .. } | E::BadJournal { .. } => Failure::new(Kind::Corrupt, &error),
            E::Locked { lock, .. } => Failure::new(Kind::Locked, &error).file(lock),
            E::UnknownInstall { install, .. } => Failure::new(Kind::UnknownInstall, &error).file(install),
            E::VersionNotFound { .. } | E::NoVersions { .. } => Failure::new(Kind::NotFound, &error),
            E::BadVersionName { .. } | E::BadExpiry { .. } | E::BadArgument(_) => {
                Failure::new(Kind::InvalidOption, &error)
            }
            _ => Failure::new(Kind::Release, &error),
        }
    }
}

/// A Python-level `ValueError` for a closed archive or writer, as file objects raise.
pub fn closed(what: &str) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(format!("I/O operation on a closed {what}"))
}
