//! Archive mode: bring one archive file to a release's version (spec/RELEASE.md "Updating").
//!
//! The installed version is the one whose full archive has the file's SHA-256. The route's patches are
//! applied one after another into `STATE/work/`, each result checked against its version's
//! `full.sha256`; a route that fails anywhere falls back to the full download. The checked result is
//! renamed over the archive (same file system: the state directory sits beside it) and the directory
//! synced, so the archive is at every instant either the old version or the new one, complete.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::fetch::sync_dir;
use crate::hash::sha256_file;
use crate::plan::{Route, Step};
use crate::update::{remove_dir_contents, repair_rule, Progress, Session, UpdateOptions, WORK_DIR};

/// What the archive was before the update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Installed {
    /// No archive at that path: a fresh install.
    Missing,
    /// The archive is this version's full archive, byte for byte.
    Version {
        /// The version's name.
        version: String,
    },
    /// The archive matches no version of the repository (modified, damaged, or from elsewhere).
    Unknown {
        /// The archive's SHA-256, which no version's full archive has.
        sha256: String,
    },
}

impl Installed {
    /// The installed version, when it is one the repository lists.
    pub fn version(&self) -> Option<&str> {
        match self {
            Installed::Version { version } => Some(version),
            _ => None,
        }
    }
}

/// One piece of a route, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Piece {
    /// `patch` or `full`.
    pub kind: &'static str,
    /// The version a patch applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The version the piece produces.
    pub to: String,
    /// The object's path in the repository.
    pub path: String,
    /// The object's size in bytes (what the piece downloads unless already present).
    pub size: u64,
}

impl Piece {
    pub(crate) fn of(step: &Step) -> Piece {
        let object = step.object();
        let (kind, from) = match step {
            Step::Patch { from, .. } => ("patch", Some(from.clone())),
            Step::Full { .. } => ("full", None),
        };
        Piece { kind, from, to: step.produces().to_owned(), path: object.path.clone(), size: object.size }
    }

    /// `patch 1.0 → 1.1 (5.2 KiB)`-style label.
    pub fn label(&self) -> String {
        match &self.from {
            Some(from) => format!("patch {from} -> {}", self.to),
            None => format!("full {}", self.to),
        }
    }
}

/// How an archive update went (or, with `--check`, would go).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The archive updated (or checked).
    pub archive: PathBuf,
    /// The repository's URL or path.
    pub repo: String,
    /// The `manifest_version` of the manifest used.
    pub manifest_version: u64,
    /// What the archive was before the run.
    pub installed: Installed,
    /// The version the run brings it to.
    pub target: String,
    /// The planned route (empty when already up to date).
    pub route: Vec<Piece>,
    /// Bytes the planned route downloads (pieces already downloaded are free).
    pub route_bytes: u64,
    /// True when only the route was reported.
    pub check_only: bool,
    /// True when the archive was replaced.
    pub changed: bool,
    /// Why the patch route was abandoned for the full download, if it was.
    pub fell_back: Option<String>,
    /// Bytes received from the repository, the manifest included.
    pub fetched_bytes: u64,
    /// The unknown install needs `--repair` to be replaced (only reported with `--check`).
    pub needs_repair: bool,
}

/// The state directory of an archive: `ARCHIVE.mf-update/` beside it.
pub fn state_dir(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".mf-update");
    archive.with_file_name(name)
}

/// Brings `archive` to the target version from repository `repo` (module docs).
pub fn update_archive(repo: &str, archive: &Path, options: &UpdateOptions, progress: &dyn Progress) -> Result<Outcome> {
    if archive.file_name().is_none() {
        return Err(Error::BadArgument(format!("{}: not a file path", archive.display())));
    }
    let state = state_dir(archive);
    let work = state.join(WORK_DIR);
    let session = Session::for_update(repo, &state, options)?;
    if !options.check {
        // Left by a run that was killed: half-applied patches and temp files, never needed again.
        remove_dir_contents(&work)?;
        remove_temp_files(&state)?;
    }
    let target = session.target(options.to.as_deref())?.clone();
    let installed = identify(&session, archive)?;
    let mut outcome = Outcome {
        archive: archive.to_owned(),
        repo: repo.to_owned(),
        manifest_version: session.manifest().manifest_version,
        installed: installed.clone(),
        target: target.version.clone(),
        route: Vec::new(),
        route_bytes: 0,
        check_only: options.check,
        changed: false,
        fell_back: None,
        fetched_bytes: 0,
        needs_repair: false,
    };
    if installed.version() == Some(target.version.as_str()) {
        session.clean_downloads()?;
        outcome.fetched_bytes = session.fetched_bytes();
        return Ok(outcome);
    }
    let route = session.plan(installed.version(), &target.version)?;
    outcome.route = route.steps.iter().map(Piece::of).collect();
    outcome.route_bytes = route.fetch_bytes;
    if let Installed::Unknown { sha256 } = &installed {
        outcome.needs_repair = repair_rule(options, || Error::UnknownInstall {
            install: archive.to_owned(),
            repo: repo.to_owned(),
            found: format!("its SHA-256 {sha256}"),
            target: target.version.clone(),
            full_size: target.full.size,
        })?;
    }
    if options.check {
        outcome.fetched_bytes = session.fetched_bytes();
        return Ok(outcome);
    }

    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let (result, taken, fell_back) = session.run_with_fallback(route, &target.version, progress, |route| {
        run_route(&session, archive, &work, route, progress)
    })?;
    outcome.route = taken.steps.iter().map(Piece::of).collect();
    outcome.route_bytes = taken.fetch_bytes;
    outcome.fell_back = fell_back;
    install(&result, archive, &target.full.sha256)?;
    outcome.changed = true;
    session.clean_downloads()?;
    remove_dir_contents(&work)?;
    let _ = std::fs::remove_dir(&work);
    outcome.fetched_bytes = session.fetched_bytes();
    Ok(outcome)
}

/// Which version `archive` is, by its SHA-256.
fn identify(session: &Session, archive: &Path) -> Result<Installed> {
    match std::fs::metadata(archive) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Installed::Missing),
        Err(e) => return Err(Error::io(archive, e)),
        Ok(meta) if !meta.is_file() => {
            return Err(Error::WrongFileType { path: archive.to_owned(), expected: "regular file" });
        }
        Ok(_) => {}
    }
    let (sha256, _) = sha256_file(archive)?;
    Ok(match session.version_by_full_hash(&sha256) {
        Some(version) => Installed::Version { version: version.version.clone() },
        None => Installed::Unknown { sha256 },
    })
}

/// Downloads and applies `route`'s pieces; returns the checked result file (in `work/` or `downloads/`).
fn run_route(
    session: &Session,
    archive: &Path,
    work: &Path,
    route: &Route,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let count = route.steps.len();
    let mut current: Option<PathBuf> = None;
    for (index, step) in route.steps.iter().enumerate() {
        let piece = Piece::of(step);
        let object = step.object();
        progress.piece(index, count, &piece.label(), object.size);
        let file = session.download(object, &|have| progress.bytes(have))?;
        progress.piece_done();
        match step {
            Step::Full { .. } => current = Some(file),
            Step::Patch { to, .. } => {
                let version = session.target(Some(to))?;
                let base = current.clone().unwrap_or_else(|| archive.to_owned());
                let out = work.join(format!("{}.mf", version.full.sha256));
                // Either format: a Panda3D base is converted, and the result written as the patch's NEW.
                mf_diff::panda3d::apply_any(&file, &base, &out, None, &|_| {})
                    .inspect_err(|_| session.discard(object))?;
                check_hash(&out, &version.full.sha256, &format!("the result of {}", piece.label()))?;
                if let Some(previous) = current.replace(out) {
                    let _ = std::fs::remove_file(previous);
                }
            }
        }
    }
    current.ok_or_else(|| Error::Internal("empty route".into()))
}

fn check_hash(path: &Path, sha256: &str, what: &str) -> Result<()> {
    let (got, _) = sha256_file(path)?;
    if got != sha256 {
        return Err(Error::Mismatch {
            origin: path.display().to_string(),
            what: format!("{what} has SHA-256 {got}, but the manifest says {sha256}"),
        });
    }
    Ok(())
}

/// Moves the checked `result` over `archive`: permissions of the old archive, fsync, rename, directory
/// fsync. `result` lives in the state directory beside the archive, so the rename is atomic.
fn install(result: &Path, archive: &Path, sha256: &str) -> Result<()> {
    check_hash(result, sha256, "the new archive")?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(archive).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    let file = std::fs::File::open(result).map_err(|e| Error::io(result, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(result, e))?;
    file.sync_all().map_err(|e| Error::io(result, e))?;
    drop(file);
    std::fs::rename(result, archive).map_err(|e| Error::io(archive, e))?;
    if let Some(dir) = archive.parent() {
        sync_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    }
    Ok(())
}

/// Removes `*.mf-tmp` files (atomic writes a killed run left) from the state directory.
fn remove_temp_files(state: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(state) else { return Ok(()) };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".mf-tmp") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
