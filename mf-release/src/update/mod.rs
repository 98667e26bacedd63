//! The update client (spec/RELEASE.md "Updating").
//!
//! A [`Session`] is a verified view of one release repository from one install's point of view: opening
//! it fetches `manifest.json`, verifies its signature, structure and expiry, refuses a rollback against
//! the install's state directory (`trusted.json`) and records the accepted `manifest_version`. It then
//! plans routes, fetches file tables and downloads pieces into the state directory's `downloads/`, each
//! checked against the manifest's size and SHA-256 before it is handed out. Install modes build on it:
//! [`archive`] replaces one archive file; [`folder`] patches a plain install folder under a journal.
//!
//! ```no_run
//! use mf_release::update::{Session, SessionOptions};
//! # fn main() -> mf_release::Result<()> {
//! let key = mf_release::PublicKey::from_arg("release.pub")?;
//! let session = Session::open("https://example.com/game", "game.mf.mf-update".as_ref(), SessionOptions::new(Some(key)))?;
//! let target = session.target(None)?.version.clone();
//! let route = session.plan(Some("1.0.0"), &target)?;
//! for step in &route.steps {
//!     let piece = session.download(step.object(), &|_have| {})?;
//!     println!("{} ready at {}", step.object().path, piece.display());
//! }
//! # Ok(()) }
//! ```

pub mod archive;
pub mod folder;
pub(crate) mod identity;
pub(crate) mod state;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use mf_format::fs::{Dir, Kind};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Fetcher};
use crate::hash::sha256_hex;
use crate::keys::PublicKey;
use crate::manifest::{FileTable, Manifest, ObjectRef, Version, MANIFEST_PATH, MAX_MANIFEST_SIZE};
use crate::plan::{full_route, plan, Route};

pub use archive::{update_archive, IdentifiedBy, Installed, Outcome, Piece};

/// What `mf update` was asked to do, for an archive or an install folder alike.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    /// The key the manifest must be signed by; `None` accepts an unsigned manifest.
    pub key: Option<PublicKey>,
    /// Timeouts, retries and limits of every download.
    pub fetch: FetchOptions,
    /// Target version; the newest when `None`.
    pub to: Option<String>,
    /// Only report the route (`--check`): fetch only metadata, change nothing.
    pub check: bool,
    /// Bring an unknown or modified install to the target with the full download (`--repair`).
    pub repair: bool,
    /// Archive mode: identify the installed version by every entry's SHA-256 even when the state
    /// folder's record of the last update still describes the archive (`--verify`).
    pub verify: bool,
    /// Archive mode: rebuild the archive into a new file and rename it over the old one, as for
    /// Panda3D multifiles, instead of patching it in place (`--rebuild`).
    pub rebuild: bool,
}

pub(crate) const TRUSTED_FILE: &str = "trusted.json";
const DOWNLOADS_DIR: &str = "downloads";
/// File tables kept between runs, named by SHA-256: content-addressed, so a cached one is never stale.
const TABLES_DIR: &str = "tables";
const LOCK_FILE: &str = "lock";
/// Archive mode's patch results.
pub(crate) const WORK_DIR: &str = "work";
/// File tables are small; a larger one is refused before it is read whole.
const MAX_FILE_TABLE_SIZE: u64 = 256 << 20;
/// A trust record is a few dozen bytes; anything near this bound is not one.
const MAX_TRUSTED_SIZE: u64 = 1 << 20;

/// How a [`Session`] verifies and fetches.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The key the manifest must be signed by; `None` accepts an unsigned (or any) manifest, which the
    /// CLI allows only with `--allow-unsigned`.
    pub key: Option<PublicKey>,
    /// Timeouts, retries and limits of every download.
    pub fetch: FetchOptions,
    /// Check only: never create or write the state directory (trust is checked, not recorded;
    /// [`Session::download`] is refused).
    pub read_only: bool,
    /// The time expiry is checked against.
    pub now: SystemTime,
}

impl SessionOptions {
    /// Defaults: download options of [`FetchOptions::default`], writable state, expiry checked against now.
    pub fn new(key: Option<PublicKey>) -> SessionOptions {
        SessionOptions { key, fetch: FetchOptions::default(), read_only: false, now: SystemTime::now() }
    }
}

/// What `trusted.json` records: the newest manifest this install accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trusted {
    /// The highest `manifest_version` accepted; an older manifest is a rollback.
    pub manifest_version: u64,
    /// The key that signed it, or `None` for an unsigned repository.
    pub keyid: Option<String>,
}

/// Something told about the progress of an update (a terminal progress bar, or nothing).
pub trait Progress: Sync {
    /// Piece `index` of `count` (from 0) starts: `label` names it, `size` is its length.
    fn piece(&self, _index: usize, _count: usize, _label: &str, _size: u64) {}
    /// `have` bytes of the current piece are present locally.
    fn bytes(&self, _have: u64) {}
    /// The current piece is complete and checked.
    fn piece_done(&self) {}
    /// Something the user should know that is not an error (a fallback to the full download...).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// A verified release repository, seen from one install (module docs).
pub struct Session {
    repo: String,
    fetcher: Fetcher,
    state: PathBuf,
    /// The state folder, opened once without following a symlink (`None`: a read-only session of an
    /// install that has none yet). Everything in it is reached through this handle.
    state_dir: Option<Dir>,
    /// `STATE/downloads/` (`None` when read-only).
    downloads: Option<Dir>,
    manifest: Manifest,
    read_only: bool,
    tables: Mutex<HashMap<String, FileTable>>,
    /// Held for the session's life: one update per install at a time.
    _lock: Option<Flock<File>>,
}

impl Session {
    /// Opens `repo` (an `http(s)://` URL, `file://` URL or directory) for the install whose state lives
    /// in `state_dir`: fetches and verifies the manifest, refuses a rollback, and (unless read-only)
    /// records the accepted manifest version in `state_dir/trusted.json`.
    pub fn open(repo: &str, state_dir: &Path, options: SessionOptions) -> Result<Session> {
        let fetcher = Fetcher::new(repo, options.fetch.clone())?;
        let state = state::open_state_dir(state_dir, !options.read_only)?;
        let lock = match (&state, options.read_only) {
            (Some(dir), false) => Some(lock_state(dir)?),
            _ => None,
        };
        let origin = fetcher.url(MANIFEST_PATH);
        let bytes = fetcher.fetch_small(MANIFEST_PATH, MAX_MANIFEST_SIZE)?;
        let manifest = Manifest::verify(&bytes, options.key.as_ref(), options.now, &origin)?;
        let trusted = match &state {
            Some(dir) => read_trusted(dir)?,
            None => None,
        };
        if let Some(trusted) = trusted {
            if manifest.manifest_version < trusted.manifest_version {
                return Err(Error::Rollback {
                    origin,
                    got: manifest.manifest_version,
                    trusted: trusted.manifest_version,
                });
            }
        }
        let mut downloads = None;
        if let (Some(dir), false) = (&state, options.read_only) {
            let trusted = Trusted {
                manifest_version: manifest.manifest_version,
                keyid: options.key.as_ref().map(PublicKey::key_id),
            };
            state::write_file(dir, TRUSTED_FILE, &serde_json::to_vec_pretty(&trusted).unwrap_or_default())?;
            // Left by a killed run: temp files of state writes nobody holds any more.
            dir.remove_stale_temps(state::TEMP_PREFIX, state::TEMP_SUFFIX).map_err(|e| Error::io(dir.path(), e))?;
            downloads = state::open_subdir(dir, DOWNLOADS_DIR, true)?;
            forget_unlisted_tables(dir, &manifest)?;
        }
        Ok(Session {
            repo: repo.to_owned(),
            fetcher,
            state: state_dir.to_owned(),
            state_dir: state,
            downloads,
            manifest,
            read_only: options.read_only,
            tables: Mutex::new(HashMap::new()),
            _lock: lock,
        })
    }

    /// Opens the session of an update of the install whose state lives in `state_dir`: read-only
    /// for `--check`.
    pub(crate) fn for_update(repo: &str, state_dir: &Path, options: &UpdateOptions) -> Result<Session> {
        let session_options = SessionOptions {
            key: options.key.clone(),
            fetch: options.fetch.clone(),
            read_only: options.check,
            now: SystemTime::now(),
        };
        Session::open(repo, state_dir, session_options)
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The repository as given to [`Session::open`].
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The state folder this session locks and writes (downloads, file tables, `trusted.json`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The open state folder (`None` for a read-only session of an install without one).
    pub(crate) fn state_handle(&self) -> Option<&Dir> {
        self.state_dir.as_ref()
    }

    /// The open `downloads/` folder (`None` when read-only).
    pub(crate) fn downloads_handle(&self) -> Option<&Dir> {
        self.downloads.as_ref()
    }

    /// Where pieces are downloaded: `STATE/downloads/`.
    pub fn downloads_dir(&self) -> PathBuf {
        self.state.join(DOWNLOADS_DIR)
    }

    /// The URL (or path) of a repository path, for messages.
    pub fn url(&self, path: &str) -> String {
        self.fetcher.url(path)
    }

    /// Bytes received from the repository so far, the manifest included.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetcher.received()
    }

    /// The version `to`, or the newest when `None`.
    pub fn target(&self, to: Option<&str>) -> Result<&Version> {
        match to {
            Some(name) => self.manifest.version(name).ok_or_else(|| self.version_not_found(name)),
            None => self.manifest.latest().ok_or_else(|| Error::NoVersions { repo: self.repo.clone() }),
        }
    }

    fn version_not_found(&self, version: &str) -> Error {
        Error::VersionNotFound {
            repo: self.repo.clone(),
            version: version.to_owned(),
            available: self.manifest.versions.iter().map(|v| v.version.clone()).collect(),
        }
    }

    /// The version whose full archive has SHA-256 `sha256`, if any.
    pub fn version_by_full_hash(&self, sha256: &str) -> Option<&Version> {
        self.manifest.versions.iter().find(|v| v.full.sha256 == sha256)
    }

    /// True when `object` is already complete in `downloads/` (its hash is checked when it is used).
    pub fn has(&self, object: &ObjectRef) -> bool {
        let Some(dir) = &self.downloads else { return false };
        dir.metadata(&object.sha256).ok().flatten().is_some_and(|m| m.kind == Kind::File && m.len == object.size)
    }

    /// The cheapest route from `installed` (`None`: nothing installed, or an install to replace whole) to
    /// `target`; pieces already downloaded count as free.
    pub fn plan(&self, installed: Option<&str>, target: &str) -> Result<Route> {
        plan(&self.manifest, installed, target, &|object| self.has(object))
            .ok_or_else(|| self.version_not_found(target))
    }

    /// `version`'s file table, fetched, checked against the manifest's size and SHA-256, and parsed
    /// (cached for the session).
    pub fn file_table(&self, version: &str) -> Result<FileTable> {
        if let Some(table) = self.tables.lock().unwrap_or_else(|e| e.into_inner()).get(version) {
            return Ok(table.clone());
        }
        let object = &self.target(Some(version))?.files;
        let url = self.fetcher.url(&object.path);
        if object.size > MAX_FILE_TABLE_SIZE {
            return Err(Error::metadata(&url, format!("{} bytes is more than a file table may have", object.size)));
        }
        let tables = match &self.state_dir {
            Some(dir) => state::open_subdir(dir, TABLES_DIR, !self.read_only)?,
            None => None,
        };
        let cached = match &tables {
            Some(dir) => state::read_file(dir, &object.sha256, MAX_FILE_TABLE_SIZE)?,
            None => None,
        };
        let bytes = match cached {
            Some(bytes) if bytes.len() as u64 == object.size && sha256_hex(&bytes) == object.sha256 => bytes,
            _ => {
                let bytes = self.fetcher.fetch_small(&object.path, object.size)?;
                let sha256 = sha256_hex(&bytes);
                if bytes.len() as u64 != object.size || sha256 != object.sha256 {
                    return Err(Error::Mismatch {
                        origin: url,
                        what: format!(
                            "got {} bytes with SHA-256 {sha256}, but the manifest says {} bytes with SHA-256 {}",
                            bytes.len(),
                            object.size,
                            object.sha256
                        ),
                    });
                }
                if let (Some(dir), false) = (&tables, self.read_only) {
                    // A cache: failing to keep it only costs a download next time.
                    let _ = state::write_file(dir, &object.sha256, &bytes);
                }
                bytes
            }
        };
        let table = FileTable::from_object(&bytes, version, &url)?;
        self.tables.lock().unwrap_or_else(|e| e.into_inner()).insert(version.to_owned(), table.clone());
        Ok(table)
    }

    /// Downloads `object` into `downloads/<sha256>` (resuming a `.part` left by an earlier run, retrying
    /// transient failures) and returns a path to it once its size and SHA-256 match the manifest: the
    /// path names the file in the open `downloads/` folder ([`mf_format::fs::Dir::fd_path`]), valid
    /// while the session lives.
    /// `progress` gets the number of the piece's bytes present locally.
    pub fn download(&self, object: &ObjectRef, progress: &dyn Fn(u64)) -> Result<PathBuf> {
        match &self.downloads {
            Some(dir) if !self.read_only => self.fetcher.fetch_object(object, dir, progress),
            _ => Err(Error::BadArgument("a read-only (--check) session downloads nothing".into())),
        }
    }

    /// Deletes a downloaded piece (complete or partial), e.g. one that failed to apply.
    pub fn discard(&self, object: &ObjectRef) {
        if let Some(dir) = &self.downloads {
            let _ = dir.remove_file(&object.sha256);
            let _ = dir.remove_file(format!("{}.part", object.sha256));
        }
    }

    /// Carries out `route` with `run`. When a patch route fails (not on tampered local state), tells `progress`, and carries out the
    /// full download of `target` instead. Returns what `run` gave, the route that gave it, and why the
    /// patch route failed when it did.
    pub(crate) fn run_with_fallback<T>(
        &self,
        route: Route,
        target: &str,
        progress: &dyn Progress,
        run: impl Fn(&Route) -> Result<T>,
    ) -> Result<(T, Route, Option<String>)> {
        let error = match run(&route) {
            Ok(result) => return Ok((result, route, None)),
            // Tampered local state is no route's fault: the full download would meet it too.
            Err(error) if route.is_full() || matches!(error, Error::UnsafeState { .. }) => return Err(error),
            Err(error) => error,
        };
        let reason = crate::error::chain(&error);
        progress.note(&format!("the patch route failed ({reason}); falling back to the full download"));
        let full =
            full_route(&self.manifest, target, &|o| self.has(o)).ok_or_else(|| self.version_not_found(target))?;
        let result = run(&full)
            .map_err(|full_error| Error::UpdateFailed { patch_route: Box::new(error), source: Box::new(full_error) })?;
        Ok((result, full, Some(reason)))
    }

    /// Deletes every download (after a successful update).
    pub fn clean_downloads(&self) -> Result<()> {
        match &self.downloads {
            Some(dir) if !self.read_only => {
                empty_dir(dir)?;
                dir.sync().map_err(|e| Error::io(dir.path(), e))
            }
            _ => Ok(()),
        }
    }
}

/// The `--repair` rule for an install that matches no version, in either mode: `--check` reports it
/// (true when the real run needs `--repair`); a real run without `--repair` is refused with
/// `refusal()` and leaves the install untouched; with `--repair` the update goes on.
pub(crate) fn repair_rule(options: &UpdateOptions, refusal: impl FnOnce() -> Error) -> Result<bool> {
    if options.check {
        Ok(!options.repair)
    } else if options.repair {
        Ok(false)
    } else {
        Err(refusal())
    }
}

/// Takes the install's lock (`STATE/lock`, opened in the state folder without following a link);
/// refuses when another update of the same install is running.
fn lock_state(state: &Dir) -> Result<Flock<File>> {
    let path = state.display_path(LOCK_FILE);
    let file = state.open_file_append(LOCK_FILE, 0o600).map_err(|e| state::state_error(&path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => Error::Locked { lock: path.clone(), source: errno },
        _ => Error::io(&path, errno.into()),
    })
}

pub(crate) fn read_trusted(state: &Dir) -> Result<Option<Trusted>> {
    let Some(bytes) = state::read_file(state, TRUSTED_FILE, MAX_TRUSTED_SIZE)? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::metadata(
            state.display_path(TRUSTED_FILE).display(),
            format!("unreadable trust record ({e}); delete it only if you trust the repository's current manifest"),
        )
    })
}

/// Removes cached file tables of versions the manifest no longer lists (pruned), so the cache stays
/// the size of the repository's metadata. Names are removed in the folder's handle, never followed.
fn forget_unlisted_tables(state: &Dir, manifest: &Manifest) -> Result<()> {
    let Some(dir) = state::open_subdir(state, TABLES_DIR, false)? else { return Ok(()) };
    let listed: std::collections::HashSet<&str> = manifest.versions.iter().map(|v| v.files.sha256.as_str()).collect();
    for (name, _) in dir.entries().map_err(|e| Error::io(dir.path(), e))? {
        if !listed.contains(name.to_string_lossy().as_ref()) {
            let _ = dir.remove_file(&name);
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` all or nothing ([`mf_format::fs::write_atomic`]), the error naming `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    mf_format::fs::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// Removes everything inside the open folder `dir`: a symbolic link inside it is removed itself,
/// never followed.
pub(crate) fn empty_dir(dir: &Dir) -> Result<()> {
    for (name, kind) in dir.entries().map_err(|e| Error::io(dir.path(), e))? {
        let path = dir.display_path(&name);
        let kind = match kind {
            Some(kind) => Some(kind),
            None => dir.metadata(&name).map_err(|e| Error::io(&path, e))?.map(|m| m.kind),
        };
        if kind == Some(Kind::Dir) {
            let sub = dir.open_dir(&name).map_err(|e| Error::io(&path, e))?;
            empty_dir(&sub)?;
            dir.remove_dir(&name).map_err(|e| Error::io(&path, e))?;
        } else {
            dir.remove_file(&name).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
