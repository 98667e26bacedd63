//! Folder mode: updating a plain install folder that holds the files of a release's archive
//! (spec/RELEASE.md "Folder mode").
//!
//! The folder is only ever changed at paths that the installed or the target file table lists.
//! An update is **identified** ([`InstallDir::scan`], [`Scan::identify`]), **staged** in
//! `.mf-update/staging/` from a chain of patches ([`InstallDir::stage_patches`]) or the full archive
//! ([`InstallDir::stage_full`]), and then **switched** ([`InstallDir::switch`]) under a journal:
//! every operation first moves the current file to `.mf-update/backup/` and then moves the staged
//! file in. [`InstallDir::recover`] finishes a switch that a crash interrupted; every step of the
//! switch, the recovery and the rollback looks at what is on disk before acting, so running any
//! of them again after a crash is safe.

mod journal;
mod old_entries;
mod scan;
mod stage;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fetch::sync_dir;
use crate::manifest::{FileTable, STATE_DIR_NAME};
use crate::plan::{Route, Step};
use crate::update::{repair_rule, Piece, Progress, Session, UpdateOptions};

pub use journal::{Journal, Operation, Recovery};
pub use scan::{Difference, PathState, Scan};
pub use stage::{PatchStep, Staged};

const STAGING: &str = "staging";
const BACKUP: &str = "backup";
const JOURNAL: &str = "journal.json";
pub(crate) const JOURNAL_TYPE: &str = "mf-folder-journal";

/// An install folder and its state directory.
pub struct InstallDir {
    root: PathBuf,
    state: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

fn parse_xxh3(text: &str, path: &str) -> Result<u64> {
    u64::from_str_radix(text, 16)
        .map_err(|_| Error::metadata("file table", format!("entry {path:?}: xxh3 {text:?} is not 16 hex digits")))
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

impl InstallDir {
    /// The install folder `root` (which may not exist yet: a fresh install).
    pub fn new(root: &Path) -> InstallDir {
        InstallDir { root: root.to_owned(), state: root.join(STATE_DIR_NAME) }
    }

    /// The install folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `INSTALL_DIR/.mf-update`.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn staging(&self) -> PathBuf {
        self.state.join(STAGING)
    }

    fn backup(&self) -> PathBuf {
        self.state.join(BACKUP)
    }

    fn journal_path(&self) -> PathBuf {
        self.state.join(JOURNAL)
    }

    fn target(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// Creates the root and the state directory, refusing a state directory that is a symbolic link.
    fn prepare_state(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        match fs::symlink_metadata(&self.state) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::WrongFileType { path: self.state.clone(), expected: "directory" }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&self.state).map_err(io_err(&self.state)),
            Err(e) => Err(Error::io(&self.state, e)),
        }
    }
}

/// Which version a folder holds ([`Scan::identify`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FolderState {
    /// No path that any table lists exists: an empty or missing folder, or one with only other files.
    Fresh,
    /// Every file of this version's table is present with its size and SHA-256.
    Version {
        /// The version's name.
        version: String,
    },
    /// Neither: `closest` is the version whose table most files match (none when no file matches),
    /// with the files that differ from it.
    Unknown {
        /// The version whose table most files match.
        closest: Option<String>,
        /// The listed files that differ from `closest`'s table, in path order.
        differences: Vec<Difference>,
    },
}

/// How a folder update went (or, with `--check`, would go).
#[derive(Debug, Clone, Serialize)]
pub struct FolderOutcome {
    /// The install folder updated (or checked).
    pub dir: PathBuf,
    /// The repository's URL or path.
    pub repo: String,
    /// The `manifest_version` of the manifest used.
    pub manifest_version: u64,
    /// An interrupted earlier update that this run finished (`finished`), whose staging it discarded
    /// (`discarded`), or (with `--check`) that the next run will finish (`pending`).
    pub recovered: Option<String>,
    /// What the folder held before the run (after any recovery).
    pub installed: FolderState,
    /// The version the run brings it to.
    pub target: String,
    /// The planned route (empty when already up to date).
    pub route: Vec<Piece>,
    /// Bytes the planned route downloads (pieces already downloaded are free).
    pub route_bytes: u64,
    /// True when only the route was reported (`--check`).
    pub check_only: bool,
    /// True when the switch changed files in the folder.
    pub changed: bool,
    /// Files written (created or replaced) and deleted by the switch.
    pub files_written: usize,
    /// Files deleted by the switch.
    pub files_deleted: usize,
    /// Why the patch route was abandoned for the full download, if it was.
    pub fell_back: Option<String>,
    /// Bytes received from the repository, the manifest included.
    pub fetched_bytes: u64,
    /// The unknown install needs `--repair` to be replaced (only reported with `--check`).
    pub needs_repair: bool,
}

impl FolderOutcome {
    /// The outcome before anything is planned or changed.
    fn unchanged(
        dir: &Path,
        session: &Session,
        recovered: Option<String>,
        installed: &FolderState,
        target: &str,
        options: &UpdateOptions,
    ) -> FolderOutcome {
        FolderOutcome {
            dir: dir.to_owned(),
            repo: session.repo().to_owned(),
            manifest_version: session.manifest().manifest_version,
            recovered,
            installed: installed.clone(),
            target: target.to_owned(),
            route: Vec::new(),
            route_bytes: 0,
            check_only: options.check,
            changed: false,
            files_written: 0,
            files_deleted: 0,
            fell_back: None,
            fetched_bytes: 0,
            needs_repair: false,
        }
    }
}

/// Brings install folder `dir` to the target version from repository `repo` (module docs): finishes an
/// interrupted update first, identifies the installed version by the file tables, plans, downloads,
/// stages (falling back to the full archive when the patch route fails) and switches.
pub fn update_folder(
    repo: &str,
    dir: &Path,
    options: &UpdateOptions,
    progress: &dyn Progress,
) -> Result<FolderOutcome> {
    let install = InstallDir::new(dir);
    if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::WrongFileType { path: dir.to_owned(), expected: "directory" });
    }
    if fs::symlink_metadata(install.state_dir()).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::WrongFileType { path: install.state_dir().to_owned(), expected: "directory" });
    }
    let session = Session::for_update(repo, install.state_dir(), options)?;
    let recovered = finish_interrupted(&session, &install, options, progress)?;
    let target = session.target(options.to.as_deref())?.clone();
    let mut tables: HashMap<String, FileTable> = HashMap::new();
    let mut scan = Scan::default();
    let installed = identify_installed(&session, &install, &mut scan, &mut tables)?;
    let mut outcome = FolderOutcome::unchanged(dir, &session, recovered, &installed, &target.version, options);
    let installed_version = match &installed {
        FolderState::Version { version } => Some(version.as_str()),
        _ => None,
    };
    if installed_version == Some(target.version.as_str()) {
        if !options.check {
            session.clean_downloads()?;
            remember_installed(&install, &target.version);
        }
        outcome.fetched_bytes = session.fetched_bytes();
        return Ok(outcome);
    }
    let route = session.plan(installed_version, &target.version)?;
    outcome.route = route.steps.iter().map(Piece::of).collect();
    outcome.route_bytes = route.fetch_bytes;
    // Staging needs the tables of every version the route passes through (and of the full fallback's
    // target), and the scan of their paths.
    for version in route.steps.iter().map(Step::produces).chain([target.version.as_str()]) {
        if !tables.contains_key(version) {
            tables.insert(version.to_owned(), session.file_table(version)?);
        }
    }
    let table_of = |version: &str| tables.get(version);
    let in_play: Vec<&FileTable> = tables.values().collect();
    install.scan_more(&mut scan, &in_play)?;
    // The table whose files the update may delete: the installed version's, or for a repair the closest.
    let installed_table = match &installed {
        FolderState::Version { version } => table_of(version),
        FolderState::Fresh => None,
        FolderState::Unknown { closest, differences } => {
            outcome.needs_repair =
                repair_rule(options, || unknown_install(dir, repo, closest.as_deref(), differences, &target))?;
            closest.as_deref().and_then(table_of)
        }
    };
    if options.check {
        outcome.fetched_bytes = session.fetched_bytes();
        return Ok(outcome);
    }

    let stage = |route: &Route| stage_route(&session, &install, &scan, installed_table, route, &table_of, progress);
    let (staged, taken, fell_back) = session.run_with_fallback(route, &target.version, progress, |route| {
        stage(route).inspect_err(|_| {
            // A failed patch route's pieces are not worth resuming: the full download replaces them.
            if !route.is_full() {
                for step in &route.steps {
                    session.discard(step.object());
                }
            }
        })
    })?;
    install.switch(&staged)?;
    remember_installed(&install, &target.version);
    session.clean_downloads()?;
    outcome.record_switch(&taken, fell_back, &staged, session.fetched_bytes());
    Ok(outcome)
}

impl FolderOutcome {
    /// Records a done switch: the route taken, why the patch route was abandoned if it was, and the
    /// files changed.
    fn record_switch(&mut self, taken: &Route, fell_back: Option<String>, staged: &Staged, fetched_bytes: u64) {
        self.route = taken.steps.iter().map(Piece::of).collect();
        self.route_bytes = taken.fetch_bytes;
        self.fell_back = fell_back;
        self.changed = true;
        self.files_deleted = staged.operations.iter().filter(|op| matches!(op, Operation::Delete { .. })).count();
        self.files_written = staged.operations.len() - self.files_deleted;
        self.fetched_bytes = fetched_bytes;
    }
}

/// Finishes (or, with `--check`, only reports) an update a crash interrupted: `finished`, `discarded`
/// or `pending` for [`FolderOutcome::recovered`].
fn finish_interrupted(
    session: &Session,
    install: &InstallDir,
    options: &UpdateOptions,
    progress: &dyn Progress,
) -> Result<Option<String>> {
    if options.check {
        // Read-only: an interrupted switch is only reported; the next real run finishes it.
        return Ok(exists(&install.journal_path()).then(|| "pending".to_owned()));
    }
    Ok(match install.recover(&|version| session.file_table(version))? {
        Recovery::Clean => None,
        Recovery::Finished { to } => {
            progress.note(&format!("finished an interrupted update to {to}"));
            Some("finished".to_owned())
        }
        Recovery::DiscardedStaging => Some("discarded".to_owned()),
    })
}

/// The refusal of a folder that matches no version, naming the closest version and the first files
/// that differ from it.
fn unknown_install(
    dir: &Path,
    repo: &str,
    closest: Option<&str>,
    differences: &[Difference],
    target: &crate::manifest::Version,
) -> Error {
    let listed: Vec<String> = differences.iter().take(10).map(|d| format!("{} ({})", d.path, d.what)).collect();
    let more = differences.len().saturating_sub(listed.len());
    Error::UnknownInstall {
        install: dir.to_owned(),
        repo: repo.to_owned(),
        found: format!(
            "the files (closest version: {}; differing: {}{})",
            closest.unwrap_or("none"),
            listed.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
        ),
        target: target.version.clone(),
        full_size: target.full.size,
    }
}

/// The version this install folder last reached through `mf update` (a hint: it is checked first).
const INSTALLED_HINT: &str = "installed.json";

#[derive(Serialize, Deserialize)]
struct InstalledHint {
    version: String,
}

/// Records the version the folder now holds, so the next update checks its file table first. Only a
/// hint: losing it costs the next run a few more file tables.
fn remember_installed(install: &InstallDir, version: &str) {
    let hint = InstalledHint { version: version.to_owned() };
    let _ = crate::update::write_atomically(
        &install.state_dir().join(INSTALLED_HINT),
        &serde_json::to_vec(&hint).unwrap_or_default(),
    );
}

/// Identifies the installed version while fetching as few file tables as possible: the version last
/// installed here first, then newest to oldest, stopping at the first whose every file matches (the
/// newest match wins, as [`Scan::identify`] decides). An empty or missing folder is fresh without any
/// table; only a folder that matches no version needs every table, to tell a fresh folder (no listed
/// path exists) from a modified one and to name the closest version. Fetched tables land in `tables`.
fn identify_installed(
    session: &Session,
    install: &InstallDir,
    scan: &mut Scan,
    tables: &mut HashMap<String, FileTable>,
) -> Result<FolderState> {
    if folder_is_empty(install)? {
        return Ok(FolderState::Fresh);
    }
    let versions: Vec<&str> = session.manifest().versions.iter().map(|v| v.version.as_str()).collect();
    let hint = fs::read(install.state_dir().join(INSTALLED_HINT))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<InstalledHint>(&bytes).ok())
        .map(|hint| hint.version)
        .filter(|version| versions.contains(&version.as_str()));
    let mut order: Vec<&str> = hint.iter().map(String::as_str).collect();
    order.extend(versions.iter().rev().filter(|v| Some(**v) != hint.as_deref()));
    for version in order {
        let table = session.file_table(version)?;
        install.scan_more(scan, &[&table])?;
        let matches = scan.matches(&table);
        tables.insert(version.to_owned(), table);
        if matches {
            return Ok(FolderState::Version { version: version.to_owned() });
        }
    }
    let all: Vec<&FileTable> = versions.iter().filter_map(|v| tables.get(*v)).collect();
    Ok(scan.identify(&all))
}

/// True when the folder is missing or holds nothing but the updater's state directory.
fn folder_is_empty(install: &InstallDir) -> Result<bool> {
    match fs::read_dir(install.root()) {
        Ok(mut entries) => Ok(entries.all(|e| e.is_ok_and(|e| e.file_name() == STATE_DIR_NAME))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(install.root(), e)),
    }
}

/// Downloads a route's pieces and stages the target from them.
fn stage_route<'t>(
    session: &Session,
    install: &InstallDir,
    scan: &Scan,
    installed: Option<&FileTable>,
    route: &Route,
    table_of: &dyn Fn(&str) -> Option<&'t FileTable>,
    progress: &dyn Progress,
) -> Result<Staged> {
    let count = route.steps.len();
    let mut files = Vec::with_capacity(count);
    for (index, step) in route.steps.iter().enumerate() {
        progress.piece(index, count, &Piece::of(step).label(), step.object().size);
        files.push(session.download(step.object(), &|have| progress.bytes(have))?);
        progress.piece_done();
    }
    let table = |version: &str| {
        table_of(version).ok_or_else(|| Error::Internal(format!("no file table for version {version}")))
    };
    match route.steps.as_slice() {
        [Step::Full { version, .. }] => install.stage_full(scan, installed, &files[0], table(version)?, &|_| {}),
        steps => {
            let installed =
                installed.ok_or_else(|| Error::Internal("a patch route needs an installed version".into()))?;
            let mut chain = Vec::with_capacity(count);
            for (step, file) in steps.iter().zip(&files) {
                let Step::Patch { to, .. } = step else {
                    return Err(Error::Internal("a route mixes patches and a full download".into()));
                };
                chain.push(PatchStep { patch: file, to: table(to)? });
            }
            install.stage_patches(scan, installed, &chain, &|_| {})
        }
    }
}

#[cfg(test)]
mod tests;
