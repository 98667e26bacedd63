//! Archive mode: bring one archive file to a release's version (spec/RELEASE.md "Updating").
//!
//! The installed version is the one whose full archive has the file's SHA-256. The route's patches are
//! applied one after another into `STATE/work/`, each result checked against its version's
//! `full.sha256`; a route that fails anywhere falls back to the full download. The checked result is
//! renamed over the archive (same file system: the state directory sits beside it) and the directory
//! synced, so the archive is at every instant either the old version or the new one, complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mf_format::fs::{Dir, Kind};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::{sha256_file, sha256_reader};
use crate::plan::{Route, Step};
use crate::update::{empty_dir, identity, repair_rule, state, Progress, Session, UpdateOptions, WORK_DIR};

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
    /// How the installed version was recognised (`None`: missing or unknown).
    pub identified_by: Option<IdentifiedBy>,
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
    /// True when the archive was patched in place (only changed entries written) rather than
    /// replaced by a new file.
    pub in_place: bool,
    /// True when the archive was compacted after an in-place update (its dead space had passed the
    /// threshold).
    pub compacted: bool,
    /// Bytes this run wrote for the archive: in place, what each commit wrote (data, index, footer,
    /// slot) plus a compaction's new file; otherwise each patch result or the full download.
    pub bytes_written: u64,
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
    let session = Session::for_update(repo, &state, options)?;
    if let (Some(state), false) = (session.state_handle(), options.check) {
        // Left by a run that was killed: half-applied patches and temp files, never needed again.
        if let Some(work) = state::open_subdir(state, WORK_DIR, false)? {
            empty_dir(&work)?;
        }
        remove_temp_files(state)?;
    }
    let target = session.target(options.to.as_deref())?.clone();
    let (installed, identified_by) = identify(&session, archive, options.verify)?;
    let mut outcome = Outcome {
        archive: archive.to_owned(),
        repo: repo.to_owned(),
        manifest_version: session.manifest().manifest_version,
        installed: installed.clone(),
        identified_by,
        target: target.version.clone(),
        route: Vec::new(),
        route_bytes: 0,
        check_only: options.check,
        changed: false,
        fell_back: None,
        fetched_bytes: 0,
        needs_repair: false,
        in_place: false,
        compacted: false,
        bytes_written: 0,
    };
    if installed.version() == Some(target.version.as_str()) {
        if let (Some(state), false, Some(IdentifiedBy::Sha256 | IdentifiedBy::Entries)) =
            (session.state_handle(), options.check, identified_by)
        {
            // Checked the long way: the next run can take the short one.
            identity::record_version(state, archive, &target.version)?;
        }
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

    let state = session.state_handle().ok_or_else(|| Error::Internal("no state folder".into()))?;
    let downloads = session.downloads_handle().ok_or_else(|| Error::Internal("no downloads folder".into()))?;
    let work = state::open_subdir(state, WORK_DIR, true)?.ok_or_else(|| Error::Internal("no work folder".into()))?;
    // An mf archive at a known version is patched in place; anything else is rebuilt and renamed.
    let in_place = !options.rebuild && installed.version().is_some() && is_editable(archive);
    let written = AtomicU64::new(0);
    let (result, taken, fell_back) = session.run_with_fallback(route, &target.version, progress, |route| {
        if in_place && !route.is_full() {
            run_in_place(&session, archive, state, route, progress, &written)
        } else {
            run_route(&session, archive, &work, route, progress, &written)
        }
    })?;
    outcome.route = taken.steps.iter().map(Piece::of).collect();
    outcome.route_bytes = taken.fetch_bytes;
    outcome.fell_back = fell_back;
    let result_dir = match result.place {
        Place::Work => Some(&work),
        Place::Downloads => Some(downloads),
        Place::Archive => None,
    };
    if let Some(result_dir) = result_dir {
        // No record may describe a file that is about to be replaced.
        identity::forget_record(state)?;
        install(result_dir, &result.name, archive, &target.full.sha256)?;
        identity::record_version(state, archive, &target.version)?;
    } else {
        outcome.in_place = true;
        if let Some(compacted) = compact_if_needed(state, archive, &target.version)? {
            written.fetch_add(compacted, Ordering::Relaxed);
            outcome.compacted = true;
        }
    }
    outcome.bytes_written = written.load(Ordering::Relaxed);
    outcome.changed = true;
    session.clean_downloads()?;
    empty_dir(&work)?;
    let _ = state.remove_dir(WORK_DIR);
    outcome.fetched_bytes = session.fetched_bytes();
    Ok(outcome)
}

/// How the installed version was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifiedBy {
    /// The whole file's SHA-256 is the version's `full.sha256`.
    Sha256,
    /// The index equals the version's file table and every entry has the table's SHA-256.
    Entries,
    /// The index equals the version's file table, and the state folder's record of the last update
    /// still describes the file (spec/RELEASE.md: why that is enough).
    Record,
}

/// Which version `archive` is (spec/RELEASE.md "Installed version"): by the state folder's record
/// and an index check (unless `verify`), by the whole file's SHA-256, or by its entries against a
/// version's file table.
fn identify(session: &Session, archive: &Path, verify: bool) -> Result<(Installed, Option<IdentifiedBy>)> {
    match std::fs::symlink_metadata(archive) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Installed::Missing, None)),
        Err(e) => return Err(Error::io(archive, e)),
        // Renaming the new version over a link would replace the link and leave the archive it
        // points to old.
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(Error::WrongFileType {
                path: archive.to_owned(),
                expected: "regular file (not a symbolic link: name the archive it points to)",
            });
        }
        Ok(meta) if !meta.is_file() => {
            return Err(Error::WrongFileType { path: archive.to_owned(), expected: "regular file" });
        }
        Ok(_) => {}
    }
    let version = |name: String, by| Ok((Installed::Version { version: name }, Some(by)));
    // Not an mf archive (a Panda3D multifile, or damaged): only the whole file's hash can tell.
    let opened = mf_format::Archive::open_pread(archive).ok();
    if let (Some(opened), Some(state), false) = (&opened, session.state_handle(), verify) {
        if let Some(name) = identity::recorded_version(state, archive, opened)? {
            if session.manifest().version(&name).is_some()
                && identity::index_matches(opened, &session.file_table(&name)?).is_ok()
            {
                return version(name, IdentifiedBy::Record);
            }
        }
    }
    // A fresh pack (no commit slot in use) is most likely some version's full archive byte for byte.
    let mut sha256 = None;
    if opened.as_ref().is_none_or(|a| a.generation() == 0) {
        let (hash, _) = sha256_file(archive)?;
        if let Some(found) = session.version_by_full_hash(&hash) {
            return version(found.version.clone(), IdentifiedBy::Sha256);
        }
        sha256 = Some(hash);
    }
    if let Some(opened) = &opened {
        for candidate in session.manifest().versions.iter().rev() {
            let table = session.file_table(&candidate.version)?;
            if identity::index_matches(opened, &table).is_ok() && identity::content_matches(opened, &table)?.is_ok() {
                return version(candidate.version.clone(), IdentifiedBy::Entries);
            }
        }
    }
    let sha256 = match sha256 {
        Some(hash) => hash,
        None => sha256_file(archive)?.0,
    };
    Ok((Installed::Unknown { sha256 }, None))
}

/// Where a route's result lies: `work/` (a patch's output), `downloads/` (a full archive), or the
/// archive itself (patched in place).
enum Place {
    Work,
    Downloads,
    Archive,
}

/// A route's checked result: its folder in the state folder and its name there.
struct RouteResult {
    place: Place,
    name: String,
}

/// Downloads and applies `route`'s pieces; returns where the checked result is. Patch outputs are
/// written into the open `work` folder (through [`state::pinned_path`], so a `work/` swapped for a
/// link meanwhile is not followed).
fn run_route(
    session: &Session,
    archive: &Path,
    work: &Dir,
    route: &Route,
    progress: &dyn Progress,
    written: &AtomicU64,
) -> Result<RouteResult> {
    let count = route.steps.len();
    let mut current: Option<(RouteResult, PathBuf)> = None;
    for (index, step) in route.steps.iter().enumerate() {
        let piece = Piece::of(step);
        let object = step.object();
        progress.piece(index, count, &piece.label(), object.size);
        let file = session.download(object, &|have| progress.bytes(have))?;
        progress.piece_done();
        match step {
            Step::Full { .. } => {
                written.fetch_add(object.size, Ordering::Relaxed);
                current = Some((RouteResult { place: Place::Downloads, name: object.sha256.clone() }, file))
            }
            Step::Patch { to, .. } => {
                let version = session.target(Some(to))?;
                let base = current.as_ref().map_or_else(|| archive.to_owned(), |(_, path)| path.clone());
                let name = format!("{}.mf", version.full.sha256);
                let out = state::pinned_path(work, &name);
                // Either format: a Panda3D base is converted, and the result written as the patch's NEW.
                let applied = mf_diff::panda3d::apply_any(&file, &base, &out, None, &|_| {})
                    .inspect_err(|_| session.discard(object))?;
                written.fetch_add(applied.len, Ordering::Relaxed);
                check_hash(&out, &version.full.sha256, &format!("the result of {}", piece.label()))?;
                let previous = current.replace((RouteResult { place: Place::Work, name }, out));
                if let Some((RouteResult { place: Place::Work, name: old }, _)) = previous {
                    let _ = work.remove_file(old);
                }
            }
        }
    }
    current.map(|(result, _)| result).ok_or_else(|| Error::Internal("empty route".into()))
}

/// Whether `archive` is an mf archive the editor can change in place (container 2.x).
fn is_editable(archive: &Path) -> bool {
    mf_diff::panda3d::detect(archive) == Some(mf_diff::panda3d::ArchiveFormat::Mf)
        && mf_format::Archive::open_pread(archive).is_ok_and(|a| a.version().0 == mf_format::format::VERSION_MAJOR)
}

/// Downloads and applies `route`'s patches to `archive` in place, one commit each. Before each
/// commit every entry of the new version is checked against the target's signed file table
/// ([`identity::TableCheck`]); after it, the archive's index is checked against the table once more
/// and the state folder records the version. A failure leaves the archive at the last version
/// committed (the caller falls back to the full download).
fn run_in_place(
    session: &Session,
    archive: &Path,
    state: &Dir,
    route: &Route,
    progress: &dyn Progress,
    written: &AtomicU64,
) -> Result<RouteResult> {
    let count = route.steps.len();
    for (index, step) in route.steps.iter().enumerate() {
        let Step::Patch { from, to, .. } = step else {
            return Err(Error::Internal("a full download in a patch route".into()));
        };
        let piece = Piece::of(step);
        let object = step.object();
        progress.piece(index, count, &piece.label(), object.size);
        let file = session.download(object, &|have| progress.bytes(have))?;
        progress.piece_done();
        let (old_table, new_table) = (session.file_table(from)?, session.file_table(to)?);
        if !mf_diff::can_apply_in_place(&file, archive)? {
            return Err(Error::Mismatch {
                origin: session.url(&object.path),
                what: "the patch cannot be applied in place (not a patch between mf archives)".into(),
            });
        }
        let mut check = identity::TableCheck { archive, old: &old_table, new: &new_table, writing: None };
        let options = mf_diff::InPlaceOptions { check: Some(&mut check), ..Default::default() };
        identity::forget_record(state)?;
        let applied = mf_diff::apply_in_place(&file, archive, options, &|_| {}).inspect_err(|e| {
            if matches!(e, mf_diff::Error::CorruptPatch { .. }) {
                session.discard(object)
            }
        })?;
        written.fetch_add(applied.bytes_written, Ordering::Relaxed);
        let committed = mf_format::Archive::open_pread(archive)?;
        identity::index_matches(&committed, &new_table).map_err(|what| Error::Mismatch {
            origin: archive.display().to_string(),
            what: format!("after the patch to {to}: {what}"),
        })?;
        identity::record_version(state, archive, to)?;
    }
    Ok(RouteResult { place: Place::Archive, name: String::new() })
}

/// Compacts `archive` (keeping its record order, so it stays `version` for the file table and for
/// patches) when its dead space passed the threshold; returns the bytes written.
fn compact_if_needed(state: &Dir, archive: &Path, version: &str) -> Result<Option<u64>> {
    let opened = mf_format::Archive::open(archive)?;
    if !mf_format::edit::needs_compaction(&opened) {
        return Ok(None);
    }
    drop(opened);
    identity::forget_record(state)?;
    // Under the edit lock, so no editor commits into the version being rewritten.
    let editor = mf_format::Editor::open(archive)?;
    let report = mf_format::edit::compact_keeping_order(editor.archive(), archive)?;
    drop(editor);
    identity::record_version(state, archive, version)?;
    Ok(Some(report.new_len))
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

/// Moves the checked result `name` in `dir` (in the state folder beside the archive, so the rename is
/// atomic) over `archive`: permissions of the old archive, hash checked on the open file, fsync,
/// `renameat` from the open folder into the archive's folder, directory fsync.
fn install(dir: &Dir, name: &str, archive: &Path, sha256: &str) -> Result<()> {
    let result_path = dir.display_path(name);
    let (parent, archive_name) = match (archive.parent(), archive.file_name()) {
        (Some(parent), Some(file)) => (if parent.as_os_str().is_empty() { Path::new(".") } else { parent }, file),
        _ => return Err(Error::BadArgument(format!("{}: not a file path", archive.display()))),
    };
    let parent_dir = Dir::open(parent).map_err(|e| Error::io(parent, e))?;
    let mode = match parent_dir.metadata(archive_name).map_err(|e| Error::io(archive, e))? {
        Some(meta) if meta.kind == Kind::File => meta.mode,
        Some(meta) => {
            return Err(Error::UnsafeState {
                path: archive.to_owned(),
                what: format!("became {} during the update; left as it is", meta.kind.describe()),
            })
        }
        None => 0o644,
    };
    let file = dir.open_file(name).map_err(|e| state::state_error(&result_path, e))?;
    let (got, _) = sha256_reader(&file).map_err(|e| Error::io(&result_path, e))?;
    if got != sha256 {
        return Err(Error::Mismatch {
            origin: result_path.display().to_string(),
            what: format!("the new archive has SHA-256 {got}, but the manifest says {sha256}"),
        });
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(&result_path, e))?;
    file.sync_all().map_err(|e| Error::io(&result_path, e))?;
    drop(file);
    dir.rename(name, &parent_dir, archive_name).map_err(|e| Error::io(archive, e))?;
    let _ = parent_dir.sync();
    Ok(())
}

/// Removes `*.mf-tmp` files (atomic writes a killed run left) from the state folder, by name in its
/// handle (a link is removed, never followed).
fn remove_temp_files(state: &Dir) -> Result<()> {
    for (name, kind) in state.entries().map_err(|e| Error::io(state.path(), e))? {
        if name.to_string_lossy().ends_with(".mf-tmp") && kind != Some(Kind::Dir) {
            state::remove_file(state, &name.to_string_lossy())?;
        }
    }
    Ok(())
}
