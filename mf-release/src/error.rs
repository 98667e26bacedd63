//! Errors of publishing and updating. Each names the file, URL or version it concerns, and each case a
//! caller may act on (a held lock, an unknown version, an expired or rolled-back manifest, a modified
//! install, a refused journal...) is a variant of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What went wrong; every variant names the file, URL or version involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing `path` failed (the I/O error is the source).
    #[error("{}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The manifest or a file table is not valid JSON of the expected shape.
    #[error("{origin}: {what}")]
    BadMetadata {
        /// The manifest's or file table's path or URL.
        origin: String,
        /// What is wrong with it.
        what: String,
    },
    /// No signature by the trusted key verifies (or the repository is unsigned and that is not allowed).
    #[error("{origin}: {what}")]
    BadSignature {
        /// The manifest's path or URL.
        origin: String,
        /// Which check failed.
        what: String,
    },
    /// The manifest's expiry time has passed: a frozen or stale repository.
    #[error("{origin}: the manifest expired at {expires} (manifest version {manifest_version}); the repository must be re-signed")]
    Expired {
        /// The manifest's path or URL.
        origin: String,
        /// Its `expires` field (RFC 3339).
        expires: String,
        /// Its `manifest_version`.
        manifest_version: u64,
    },
    /// The manifest is older than one this client already trusted: a rollback.
    #[error("{origin}: manifest version {got} is older than version {trusted} already seen: rollback refused (a stale mirror or cache, or an attack; try again later or another mirror)")]
    Rollback {
        /// The manifest's path or URL.
        origin: String,
        /// The `manifest_version` it carries.
        got: u64,
        /// The highest `manifest_version` this install accepted before.
        trusted: u64,
    },
    /// A key file or key text is malformed.
    #[error("{origin}: {what}")]
    BadKey {
        /// The key file, or where the key text came from.
        origin: String,
        /// What is wrong with it.
        what: String,
    },
    /// A downloaded or stored object does not have the size or hash the manifest gives.
    #[error("{origin}: {what}")]
    Mismatch {
        /// The object's path or URL.
        origin: String,
        /// Expected and actual size or hash.
        what: String,
    },
    /// Fetching failed (network, HTTP status, timeout, short or long response).
    #[error("{url}: {what}")]
    Fetch {
        /// The URL (or repository path) being fetched.
        url: String,
        /// The failure, with the HTTP status when there was one.
        what: String,
    },
    /// Another `mf update` of the same install holds its lock (`lock`).
    #[error("{}: another mf update of this install is running", lock.display())]
    Locked {
        /// The lock file.
        lock: PathBuf,
        /// The `flock` error (`EWOULDBLOCK` when held).
        source: nix::errno::Errno,
    },
    /// The repository does not list `version`.
    #[error("{repo}: version {version:?} is not in the repository (it has: {})", available.join(", "))]
    VersionNotFound {
        /// The repository's URL or path.
        repo: String,
        /// The version asked for.
        version: String,
        /// The versions the manifest lists, oldest first.
        available: Vec<String>,
    },
    /// The repository lists no version at all.
    #[error("{repo}: the repository has no versions yet")]
    NoVersions {
        /// The repository's URL or path.
        repo: String,
    },
    /// `path` holds no `manifest.json`.
    #[error("{}: not a release repository (no manifest.json)", path.display())]
    NotARepository {
        /// The folder given as repository.
        path: PathBuf,
    },
    /// Publishing a version the repository already has.
    #[error("{}: version {version} is already published", repo.display())]
    AlreadyPublished {
        /// The repository folder.
        repo: PathBuf,
        /// The version name.
        version: String,
    },
    /// A version name outside 1-128 characters of `[A-Za-z0-9._+-]`.
    #[error("version {version:?} must be 1-128 characters of [A-Za-z0-9._+-]")]
    BadVersionName {
        /// The refused name.
        version: String,
    },
    /// Rewriting a signed repository's manifest without its key.
    #[error("{}: the repository is signed; pass --sign with its key (an unsigned manifest would be refused by clients)", repo.display())]
    SigningKeyRequired {
        /// The repository folder.
        repo: PathBuf,
    },
    /// A manifest lifetime (`--expires`) that cannot be published: zero, or beyond year 9999.
    #[error("--expires {}: {why}", humantime::format_duration(*expires_in))]
    BadExpiry {
        /// The lifetime asked for.
        expires_in: Duration,
        /// Why it cannot be published.
        why: &'static str,
    },
    /// An archive to publish has an entry inside `.mf-update/`, which install folders reserve.
    #[error("{}: entry {entry:?} is inside .mf-update/, which install folders reserve for the updater", archive.display())]
    ReservedPath {
        /// The archive being published.
        archive: PathBuf,
        /// The offending entry path.
        entry: String,
    },
    /// The install matches no version of the repository (modified, damaged or from elsewhere); it was
    /// left untouched, and only `--repair` replaces it.
    #[error("{}: {found} matches no version in {repo} (modified, damaged or unknown install); left untouched. Run again with --repair to bring it to {target} with the full download ({full_size} bytes)", install.display())]
    UnknownInstall {
        /// The archive or install folder.
        install: PathBuf,
        /// The repository's URL or path.
        repo: String,
        /// What was found: the archive's SHA-256, or the folder's closest version and differing files.
        found: String,
        /// The version `--repair` would install.
        target: String,
        /// Bytes of that version's full download.
        full_size: u64,
    },
    /// `path` exists but is not the kind of file system object the update needs.
    #[error("{}: not a {expected}", path.display())]
    WrongFileType {
        /// The object found.
        path: PathBuf,
        /// What was needed there (`regular file`, `directory`).
        expected: &'static str,
    },
    /// A folder-mode journal (`.mf-update/journal.json`) failed validation; nothing was changed.
    #[error("{}: {what}; refused, the folder was left as it is (remove the .mf-update folder to start over)", path.display())]
    BadJournal {
        /// The journal file.
        path: PathBuf,
        /// Which check failed.
        what: String,
    },
    /// An interrupted folder update (its journal) must be finished before a new one is staged.
    #[error("{}: an interrupted update must be finished first", journal.display())]
    InterruptedUpdate {
        /// The journal of the interrupted update.
        journal: PathBuf,
    },
    /// The state folder of an install (or a folder or file in it) is not what this client made: a
    /// symbolic link, or owned by another user. Following it could empty or fill a folder elsewhere.
    #[error("{}: {what}; refused (remove it to start over)", path.display())]
    UnsafeState {
        /// The refused folder or file.
        path: PathBuf,
        /// What makes it unsafe.
        what: String,
    },
    /// The switch met something at or above a release path that it must not replace or pass through
    /// (a directory, a symbolic link, a file where a directory goes).
    #[error("{}: cannot write {path}: {what}", root.display())]
    Blocked {
        /// The install folder.
        root: PathBuf,
        /// The release path being written (relative to `root`).
        path: String,
        /// What stands in the way.
        what: String,
    },
    /// The patch route failed, and so did the full download that replaced it (the source).
    #[error("the update failed: the patch route failed ({}), and so did the full download", chain(patch_route))]
    UpdateFailed {
        /// Why the patch route failed.
        patch_route: Box<Error>,
        /// Why the full download failed.
        source: Box<Error>,
    },
    /// The switch failed (the source) and rolling it back failed too: the next run finishes it.
    #[error("the switch failed, and rolling back failed too ({}): the next run finishes the update", chain(rollback))]
    RollbackFailed {
        /// Why the rollback failed.
        rollback: Box<Error>,
        /// Why the switch failed.
        source: Box<Error>,
    },
    /// The version has no block hash table (published before tables existed, or from a Panda3D
    /// multifile), so it cannot be mounted from the repository.
    #[error("{repo}: version {version} has no block hash table (it was published by an older mf release add, or is not an mf archive), so it cannot be mounted from the repository; download it with mf update instead")]
    NoBlockTable {
        /// The repository's URL or path.
        repo: String,
        /// The version asked for.
        version: String,
    },
    /// A block hash table breaks a rule of spec/RELEASE.md (truncated, wrong magic, wrong length, a
    /// range outside the archive, another archive's size or hash...).
    #[error("{origin}: bad block hash table: {what}")]
    BadBlockTable {
        /// The table's URL or path.
        origin: String,
        /// Which rule it breaks.
        what: String,
    },
    /// A fetched block does not have the SHA-256 the signed block table gives, on every attempt: its
    /// bytes were refused, never served.
    #[error("{url}: block {block} (bytes {offset}..) does not match its SHA-256 in the signed block table, also when fetched again: refused")]
    BlockHash {
        /// The archive's URL or path.
        url: String,
        /// The block's number.
        block: u64,
        /// The block's first byte in the archive.
        offset: u64,
    },
    /// The server sent nothing for the configured timeout on every attempt.
    #[error("{url}: {what}")]
    Timeout {
        /// The URL (or repository path) being fetched.
        url: String,
        /// What was being fetched, and for how long the server was silent.
        what: String,
    },
    /// Another process (a second mount) is using the same cached archive.
    #[error("{}: another mount of this version is using this cache", lock.display())]
    CacheInUse {
        /// The lock file.
        lock: PathBuf,
    },
    /// A request that cannot be carried out as given (`--keep 0`, a path with no file name...).
    #[error("{0}")]
    BadArgument(String),
    /// A broken internal invariant (a bug, not bad input).
    #[error("internal error: {0}")]
    Internal(String),
    /// An archive could not be opened, read or written (the container library's error).
    #[error(transparent)]
    Format(#[from] mf_format::Error),
    /// Making or applying a patch failed (the patch library's error).
    #[error(transparent)]
    Diff(#[from] mf_diff::Error),
}

/// The result of every fallible call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// [`Error::Io`] about `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io { path: path.as_ref().to_owned(), source }
    }

    /// [`Error::BadMetadata`] about `origin` (a path or URL).
    pub fn metadata(origin: impl std::fmt::Display, what: impl Into<String>) -> Error {
        Error::BadMetadata { origin: origin.to_string(), what: what.into() }
    }
}

/// `error` and its sources in one line, `a: b: c`, for messages that embed an error as text.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        // Transparent wrappers repeat their inner error's text; print it once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
