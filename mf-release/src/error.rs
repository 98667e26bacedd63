//! Errors of publishing and updating. Each names the file, URL or version it concerns.

use std::path::{Path, PathBuf};

/// What went wrong; every variant names the file, URL or version involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The manifest or a file table is not valid JSON of the expected shape.
    #[error("{origin}: {what}")]
    BadMetadata { origin: String, what: String },
    /// No signature by the trusted key verifies (or the repository is unsigned and that is not allowed).
    #[error("{origin}: {what}")]
    BadSignature { origin: String, what: String },
    /// The manifest's expiry time has passed: a frozen or stale repository.
    #[error("{origin}: the manifest expired at {expires} (manifest version {manifest_version}); the repository must be re-signed")]
    Expired { origin: String, expires: String, manifest_version: u64 },
    /// The manifest is older than one this client already trusted: a rollback.
    #[error("{origin}: manifest version {got} is older than version {trusted} already seen: rollback refused (a stale mirror or cache, or an attack; try again later or another mirror)")]
    Rollback { origin: String, got: u64, trusted: u64 },
    /// A key file or key text is malformed.
    #[error("{origin}: {what}")]
    BadKey { origin: String, what: String },
    /// A downloaded or stored object does not have the size or hash the manifest gives.
    #[error("{origin}: {what}")]
    Mismatch { origin: String, what: String },
    /// Fetching failed (network, HTTP status, timeout, short or long response).
    #[error("{url}: {what}")]
    Fetch { url: String, what: String },
    /// A request that cannot be carried out (unknown version, duplicate version, nothing to do...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Format(#[from] mf_format::Error),
    #[error(transparent)]
    Diff(#[from] mf_diff::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io { path: path.as_ref().to_owned(), source }
    }

    pub fn metadata(origin: impl std::fmt::Display, what: impl Into<String>) -> Error {
        Error::BadMetadata { origin: origin.to_string(), what: what.into() }
    }
}
