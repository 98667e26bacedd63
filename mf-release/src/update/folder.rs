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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mf_diff::{NewContent, NewEntry, OldEntries, OldEntry, Patch};
use mf_format::{Archive, AtomicFile};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use crate::manifest::{FileEntry, FileTable, STATE_DIR_NAME};
use crate::plan::{Route, Step};
use crate::update::{Piece, Progress, Session, SessionOptions, UpdateOptions};

const STAGING: &str = "staging";
const BACKUP: &str = "backup";
const JOURNAL: &str = "journal.json";
const JOURNAL_TYPE: &str = "mf-folder-journal";

/// What is at a listed path of the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathState {
    /// Nothing (or a missing parent directory).
    Missing,
    /// A regular file whose parents are real directories. `sha256` is computed only when some
    /// table lists the path with this size.
    File { size: u64, mode: u32, sha256: Option<String> },
    /// Something else: a directory, a symbolic link, or a parent that is not a real directory.
    Other(String),
}

impl PathState {
    /// True when the file has exactly this entry's content (size and SHA-256).
    fn has_content(&self, entry: &FileEntry) -> bool {
        matches!(self, PathState::File { size, sha256: Some(sha), .. } if *size == entry.size && *sha == entry.sha256)
    }

    /// True when the file has this entry's content and mode.
    fn is(&self, entry: &FileEntry) -> bool {
        self.has_content(entry) && matches!(self, PathState::File { mode, .. } if *mode == entry.mode)
    }

    fn describe(&self, entry: &FileEntry) -> String {
        match self {
            PathState::Missing => "missing".into(),
            PathState::Other(what) => what.clone(),
            PathState::File { size, .. } if *size != entry.size => {
                format!("has {size} bytes instead of {}", entry.size)
            }
            PathState::File { .. } => "content differs (SHA-256)".into(),
        }
    }
}

/// A listed path whose file differs from a file table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// The state of every path that some file table lists, each probed and hashed once.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    states: HashMap<String, PathState>,
}

impl Scan {
    pub fn state(&self, path: &str) -> &PathState {
        self.states.get(path).unwrap_or(&PathState::Missing)
    }

    /// Whether every entry of `table` is present with its size and SHA-256.
    pub fn matches(&self, table: &FileTable) -> bool {
        table.entries.iter().all(|e| self.state(&e.path).has_content(e))
    }

    /// The entries of `table` the folder does not hold.
    pub fn differences(&self, table: &FileTable) -> Vec<Difference> {
        table
            .entries
            .iter()
            .filter(|e| !self.state(&e.path).has_content(e))
            .map(|e| Difference { path: e.path.clone(), what: self.state(&e.path).describe(e) })
            .collect()
    }

    /// Identifies the installed version among `tables` (oldest first, as the manifest lists them);
    /// the newest matching version wins.
    pub fn identify(&self, tables: &[&FileTable]) -> FolderState {
        if let Some(table) = tables.iter().rev().find(|t| self.matches(t)) {
            return FolderState::Version { version: table.version.clone() };
        }
        if self.states.values().all(|s| *s == PathState::Missing) {
            return FolderState::Fresh;
        }
        // The most matching files; `max_by_key` keeps the last maximum, so ties go to the newest.
        let closest = tables
            .iter()
            .map(|t| (t, t.entries.iter().filter(|e| self.state(&e.path).has_content(e)).count()))
            .filter(|(_, matching)| *matching > 0)
            .max_by_key(|(_, matching)| *matching)
            .map(|(t, _)| t);
        match closest {
            Some(table) => {
                FolderState::Unknown { closest: Some(table.version.clone()), differences: self.differences(table) }
            }
            None => FolderState::Unknown {
                closest: None,
                differences: tables.last().map(|t| self.differences(t)).unwrap_or_default(),
            },
        }
    }
}

/// One step of a patch route in folder mode: the patch file and the file table of the version it
/// produces.
pub struct PatchStep<'a> {
    pub patch: &'a Path,
    pub to: &'a FileTable,
}

/// An operation of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    /// Put staged file `staged` (a name in the staging directory) at `path`.
    Replace { path: String, staged: String },
    /// Remove the file at `path`.
    Delete { path: String },
}

impl Operation {
    pub fn path(&self) -> &str {
        match self {
            Operation::Replace { path, .. } | Operation::Delete { path } => path,
        }
    }
}

/// Files staged and verified, ready to switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub from: Option<String>,
    pub to: String,
    /// Deletions first, then replacements, each in path order.
    pub operations: Vec<Operation>,
    /// Bytes of staged files.
    pub staged_bytes: u64,
}

/// `.mf-update/journal.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    #[serde(rename = "type")]
    kind: String,
    from: Option<String>,
    to: String,
    /// Set once every operation is done: only the cleanup remains.
    done: bool,
    operations: Vec<Operation>,
    /// Directories the switch creates (shallowest first); a rollback removes them when empty.
    created_dirs: Vec<String>,
}

/// What [`InstallDir::recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No interrupted update.
    Clean,
    /// An interrupted switch to `to` was finished.
    Finished { to: String },
    /// Staged files of an update whose switch had not begun were removed.
    DiscardedStaging,
}

/// Test-only crash injection: the switch, recovery and rollback count their steps on disk and stop
/// dead (no rollback) at step `stop_at`, as a kill would.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub stop_at: Option<usize>,
    pub steps: usize,
    pub crashed: bool,
}

impl Faults {
    fn step(&mut self) -> Result<()> {
        self.steps += 1;
        if self.stop_at == Some(self.steps) {
            self.crashed = true;
            return Err(Error::Invalid(format!("simulated crash at step {}", self.steps)));
        }
        Ok(())
    }
}

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

/// `/`-separated parents of a relative path, shallowest first (`a/b/c` gives `a`, `a/b`).
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn sync_dir(path: &Path) {
    // Directory fsync makes renames durable; some file systems refuse it, which is harmless.
    if let Ok(dir) = File::open(path) {
        let _ = dir.sync_all();
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

impl InstallDir {
    /// The install folder `root` (which may not exist yet: a fresh install).
    pub fn new(root: &Path) -> InstallDir {
        InstallDir { root: root.to_owned(), state: root.join(STATE_DIR_NAME) }
    }

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
            Ok(_) => Err(Error::Invalid(format!("{} is not a directory", self.state.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&self.state).map_err(io_err(&self.state)),
            Err(e) => Err(Error::io(&self.state, e)),
        }
    }

    /// What is at relative path `path`, without following symbolic links anywhere.
    fn probe(&self, path: &str) -> Result<PathState> {
        for parent in parents(path) {
            let full = self.target(parent);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Ok(PathState::Other(format!("its parent {parent} is a symbolic link")))
                }
                Ok(_) => return Ok(PathState::Other(format!("its parent {parent} is not a directory"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PathState::Missing),
                Err(e) => return Err(Error::io(&full, e)),
            }
        }
        let full = self.target(path);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_file() => {
                Ok(PathState::File { size: meta.len(), mode: meta.permissions().mode() & 0o7777, sha256: None })
            }
            Ok(meta) if meta.file_type().is_symlink() => Ok(PathState::Other("is a symbolic link".into())),
            Ok(meta) if meta.is_dir() => Ok(PathState::Other("is a directory".into())),
            Ok(_) => Ok(PathState::Other("is not a regular file".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathState::Missing),
            Err(e) => Err(Error::io(&full, e)),
        }
    }

    /// Probes every path any of `tables` lists, hashing (SHA-256, in parallel) each file whose size
    /// some table gives for its path, once.
    pub fn scan(&self, tables: &[&FileTable]) -> Result<Scan> {
        let mut scan = Scan::default();
        self.scan_more(&mut scan, tables)?;
        Ok(scan)
    }

    /// Extends `scan` to the paths `tables` list: probes paths not probed yet, and hashes files
    /// probed earlier whose size only these tables list. Nothing is hashed twice.
    pub fn scan_more(&self, scan: &mut Scan, tables: &[&FileTable]) -> Result<()> {
        let mut sizes: HashMap<&str, HashSet<u64>> = HashMap::new();
        for table in tables {
            for entry in &table.entries {
                sizes.entry(entry.path.as_str()).or_default().insert(entry.size);
            }
        }
        let mut paths: Vec<(&str, &HashSet<u64>)> = sizes
            .iter()
            .map(|(p, s)| (*p, s))
            .filter(|(path, sizes)| match scan.states.get(*path) {
                None => true,
                Some(PathState::File { size, sha256: None, .. }) => sizes.contains(size),
                Some(_) => false,
            })
            .collect();
        paths.sort_unstable_by_key(|(p, _)| *p);
        let states = paths
            .par_iter()
            .map(|(path, sizes)| {
                let mut state = self.probe(path)?;
                if let PathState::File { size, sha256, .. } = &mut state {
                    if sizes.contains(size) {
                        let full = self.target(path);
                        let (hash, len) = crate::hash::sha256_file(&full)?;
                        if len != *size {
                            // Changed while scanning: never trust it.
                            return Ok((path.to_string(), PathState::Other("changed while being read".into())));
                        }
                        *sha256 = Some(hash);
                    }
                }
                Ok((path.to_string(), state))
            })
            .collect::<Result<Vec<_>>>()?;
        scan.states.extend(states);
        Ok(())
    }

    /// Starts a staging area: refuses while a journal exists (recover first), empties old staging.
    fn begin_staging(&self) -> Result<Stager> {
        self.prepare_state()?;
        if exists(&self.journal_path()) {
            return Err(Error::Invalid(format!(
                "{}: an interrupted update must be finished first",
                self.journal_path().display()
            )));
        }
        let staging = self.staging();
        if exists(&staging) {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        fs::create_dir(&staging).map_err(io_err(&staging))?;
        Ok(Stager { dir: staging, next: 0 })
    }

    /// Stages the target of a chain of patches: patch `k` is applied to the folder content of the
    /// version before it, with earlier steps' outputs taken from staging. `installed` is the table
    /// the folder matches (see [`Scan::identify`]).
    pub fn stage_patches(
        &self,
        scan: &Scan,
        installed: &FileTable,
        steps: &[PatchStep<'_>],
        progress: &dyn Fn(u64),
    ) -> Result<Staged> {
        let Some(last) = steps.last() else {
            return Err(Error::Invalid("a patch route needs at least one patch".into()));
        };
        let mut stager = self.begin_staging()?;
        let result = self.stage_chain(&mut stager, installed, steps, progress);
        let staged =
            result.and_then(|overlay| self.finish_staging(&mut stager, scan, Some(installed), last.to, overlay));
        if staged.is_err() {
            let _ = fs::remove_dir_all(&stager.dir);
        }
        staged
    }

    fn stage_chain(
        &self,
        stager: &mut Stager,
        installed: &FileTable,
        steps: &[PatchStep<'_>],
        progress: &dyn Fn(u64),
    ) -> Result<HashMap<String, String>> {
        // Path → staged name, for paths whose content in the current version is not the folder's.
        let mut overlay: HashMap<String, String> = HashMap::new();
        let mut current = installed;
        for step in steps {
            let patch = Patch::open(step.patch)?;
            let origin = step.patch.display().to_string();
            if !patch.is_archive() {
                return Err(Error::Mismatch { origin, what: "not an archive patch".into() });
            }
            let old_id = format!("{:016x}", patch.header().old_id);
            if !old_id.eq_ignore_ascii_case(&current.archive_index_hash) {
                return Err(Error::Mismatch {
                    origin,
                    what: format!(
                        "the patch's base index {old_id} is not version {}'s ({})",
                        current.version, current.archive_index_hash
                    ),
                });
            }
            let old = FolderOld::new(self, current, &overlay, stager)?;
            let mut next: HashMap<String, String> = HashMap::new();
            let mut produced = 0usize;
            patch.apply_entries(&old, |entry: NewEntry| -> Result<()> {
                let want = step.to.entries.get(produced).ok_or_else(|| Error::Mismatch {
                    origin: origin.clone(),
                    what: format!("the patch gives more entries than version {}'s file table", step.to.version),
                })?;
                produced += 1;
                check_against_table(&entry, want, &origin)?;
                match entry.content {
                    NewContent::Bytes(bytes) => {
                        let name = stager.write(&bytes, entry.mode)?;
                        next.insert(entry.path, name);
                    }
                    NewContent::CopyOf(index) => {
                        let base = old.entries.get(index as usize).ok_or_else(|| Error::Mismatch {
                            origin: origin.clone(),
                            what: format!("copy of old entry #{index}, which does not exist"),
                        })?;
                        if base.path == entry.path && base.mode == entry.mode {
                            // Unchanged where it is: stays in the folder, or in staging from an earlier step.
                            if let Some(name) = overlay.get(&entry.path) {
                                next.insert(entry.path, name.clone());
                            }
                        } else {
                            let name = stager.copy(&old.location(index), entry.mode)?;
                            next.insert(entry.path, name);
                        }
                    }
                }
                progress(entry.size);
                Ok(())
            })?;
            if produced != step.to.entries.len() {
                return Err(Error::Mismatch {
                    origin,
                    what: format!(
                        "the patch gives {produced} entries, version {}'s file table lists {}",
                        step.to.version,
                        step.to.entries.len()
                    ),
                });
            }
            // Staged files no later step or the result can use.
            let kept: HashSet<&String> = next.values().collect();
            for name in overlay.values().filter(|n| !kept.contains(n)) {
                let _ = fs::remove_file(stager.dir.join(name));
            }
            overlay = next;
            current = step.to;
        }
        Ok(overlay)
    }

    /// Stages `target` from its full archive: only files the folder does not already hold with the
    /// right content and mode. `installed` (the identified or closest version) says which files to
    /// delete; `None` for a fresh install.
    pub fn stage_full(
        &self,
        scan: &Scan,
        installed: Option<&FileTable>,
        archive_path: &Path,
        target: &FileTable,
        progress: &dyn Fn(u64),
    ) -> Result<Staged> {
        let mut stager = self.begin_staging()?;
        let result = self.extract_changed(&mut stager, scan, archive_path, target, progress);
        let staged = result.and_then(|overlay| self.finish_staging(&mut stager, scan, installed, target, overlay));
        if staged.is_err() {
            let _ = fs::remove_dir_all(&stager.dir);
        }
        staged
    }

    fn extract_changed(
        &self,
        stager: &mut Stager,
        scan: &Scan,
        archive_path: &Path,
        target: &FileTable,
        progress: &dyn Fn(u64),
    ) -> Result<HashMap<String, String>> {
        let archive = Archive::open(archive_path)?;
        let origin = archive_path.display().to_string();
        let index_hash = format!("{:016x}", archive.footer().index_hash);
        if !index_hash.eq_ignore_ascii_case(&target.archive_index_hash) || archive.len() != target.entries.len() {
            return Err(Error::Mismatch {
                origin,
                what: format!("the archive is not version {}'s (index {index_hash})", target.version),
            });
        }
        let mut overlay = HashMap::new();
        for (entry, want) in archive.entries().zip(&target.entries) {
            if entry.path() != want.path
                || entry.size() != want.size
                || entry.content_hash() != parse_xxh3(&want.xxh3, &want.path)?
                || entry.mode() != want.mode
            {
                return Err(Error::Mismatch {
                    origin,
                    what: format!("entry {} differs from version {}'s file table", entry.path(), target.version),
                });
            }
            let state = scan.state(&want.path);
            if state.is(want) {
                continue;
            }
            let name = if state.has_content(want) {
                stager.copy(&self.target(&want.path), want.mode)?
            } else {
                // The reader checks the content hash at the end of the entry.
                stager.write_from(archive.reader(&entry), want.mode, &self.target(&want.path))?
            };
            progress(want.size);
            overlay.insert(want.path.clone(), name);
        }
        Ok(overlay)
    }

    /// Turns staged files into operations: drops staged files equal to what the folder holds, adds
    /// mode changes and deletions, and verifies every staged file against the target table.
    fn finish_staging(
        &self,
        stager: &mut Stager,
        scan: &Scan,
        installed: Option<&FileTable>,
        target: &FileTable,
        mut overlay: HashMap<String, String>,
    ) -> Result<Staged> {
        let mut replaces = Vec::new();
        let mut staged_bytes = 0;
        for want in &target.entries {
            let state = scan.state(&want.path);
            let staged = match overlay.remove(&want.path) {
                Some(name) if state.is(want) => {
                    let _ = fs::remove_file(stager.dir.join(&name));
                    continue;
                }
                Some(name) => name,
                None if state.is(want) => continue,
                None if state.has_content(want) => stager.copy(&self.target(&want.path), want.mode)?,
                None => {
                    return Err(Error::Mismatch {
                        origin: self.root.display().to_string(),
                        what: format!(
                            "{}: {} (the folder changed during the update?)",
                            want.path,
                            state.describe(want)
                        ),
                    })
                }
            };
            staged_bytes += want.size;
            replaces.push((want, Operation::Replace { path: want.path.clone(), staged }));
        }
        let names: Vec<&str> = replaces
            .iter()
            .filter_map(|(_, op)| match op {
                Operation::Replace { staged, .. } => Some(staged.as_str()),
                Operation::Delete { .. } => None,
            })
            .collect();
        stager.sync(&names)?;
        replaces.par_iter().try_for_each(|(want, op)| match op {
            Operation::Replace { staged, .. } => verify_staged(&stager.dir.join(staged), want),
            Operation::Delete { .. } => Ok(()),
        })?;
        let mut replaces: Vec<Operation> = replaces.into_iter().map(|(_, op)| op).collect();
        let keep: HashSet<&str> = target.entries.iter().map(|e| e.path.as_str()).collect();
        let mut operations: Vec<Operation> = installed
            .map(|t| t.entries.iter())
            .into_iter()
            .flatten()
            .filter(|e| !keep.contains(e.path.as_str()))
            .filter(|e| matches!(scan.state(&e.path), PathState::File { .. }))
            .map(|e| Operation::Delete { path: e.path.clone() })
            .collect();
        operations.sort_by(|a, b| a.path().cmp(b.path()));
        replaces.sort_by(|a, b| a.path().cmp(b.path()));
        operations.extend(replaces);
        Ok(Staged { from: installed.map(|t| t.version.clone()), to: target.version.clone(), operations, staged_bytes })
    }

    /// Switches the folder to the staged files under the journal. An error rolls back; the folder is
    /// then as before.
    pub fn switch(&self, staged: &Staged) -> Result<()> {
        self.switch_with(staged, &mut Faults::default())
    }

    pub(crate) fn switch_with(&self, staged: &Staged, faults: &mut Faults) -> Result<()> {
        let journal = Journal {
            kind: JOURNAL_TYPE.into(),
            from: staged.from.clone(),
            to: staged.to.clone(),
            done: false,
            operations: staged.operations.clone(),
            created_dirs: self.dirs_to_create(&staged.operations),
        };
        self.write_journal(&journal)?;
        faults.step()?;
        self.run_journal(journal, faults)
    }

    /// Finishes whatever an interrupted update left: a journal is rolled forward, staging without a
    /// journal is removed.
    pub fn recover(&self) -> Result<Recovery> {
        self.recover_with(&mut Faults::default())
    }

    pub(crate) fn recover_with(&self, faults: &mut Faults) -> Result<Recovery> {
        match fs::symlink_metadata(&self.state) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Error::Invalid(format!("{} is not a directory", self.state.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovery::Clean),
            Err(e) => return Err(Error::io(&self.state, e)),
        }
        // Temp files of a journal write that a kill interrupted (the journal itself is whole or absent).
        if let Ok(entries) = fs::read_dir(&self.state) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".mf-tmp") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let path = self.journal_path();
        match fs::read(&path) {
            Ok(bytes) => {
                let journal: Journal = serde_json::from_slice(&bytes)
                    .ok()
                    .filter(|j: &Journal| j.kind == JOURNAL_TYPE)
                    .ok_or_else(|| Error::metadata(path.display(), "not an mf folder journal"))?;
                let to = journal.to.clone();
                self.run_journal(journal, faults)?;
                Ok(Recovery::Finished { to })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let staging = self.staging();
                let had_staging = exists(&staging);
                if had_staging {
                    fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
                }
                // Backups without a journal only remain (empty) after a rollback.
                let _ = fs::remove_dir(self.backup());
                Ok(if had_staging { Recovery::DiscardedStaging } else { Recovery::Clean })
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Runs (or re-runs) a journal's operations, marks it done and cleans up; an error (not a
    /// simulated crash) rolls back.
    fn run_journal(&self, mut journal: Journal, faults: &mut Faults) -> Result<()> {
        if !journal.done {
            if let Err(error) = self.run_operations(&journal, faults) {
                if faults.crashed {
                    return Err(error);
                }
                return match self.roll_back(&journal, faults) {
                    Ok(()) => Err(error),
                    Err(rollback) => Err(Error::Invalid(format!(
                        "{error}; rolling back failed too ({rollback}): the next run finishes the update"
                    ))),
                };
            }
            journal.done = true;
            self.write_journal(&journal)?;
            faults.step()?;
        }
        self.clean_up(faults)
    }

    fn run_operations(&self, journal: &Journal, faults: &mut Faults) -> Result<()> {
        fs::create_dir_all(self.backup()).map_err(io_err(&self.backup()))?;
        let mut dirs = BTreeSet::new();
        for (index, op) in journal.operations.iter().enumerate() {
            let target = self.target(op.path());
            let backup = self.backup().join(format!("b{index}"));
            dirs.insert(target.parent().unwrap_or(&self.root).to_owned());
            match op {
                Operation::Delete { path } => {
                    // A parent that is missing or a file (a replacement put it there when the switch
                    // ran before): the file is gone already.
                    if !self.check_parents(path, false)? {
                        continue;
                    }
                    if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                        fs::rename(&target, &backup).map_err(io_err(&target))?;
                        faults.step()?;
                    }
                    self.remove_empty_parents(path);
                }
                Operation::Replace { path, staged } => {
                    let staged = self.staging().join(staged);
                    if !exists(&staged) {
                        continue; // done before
                    }
                    self.check_parents(path, true)?;
                    if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                        return Err(Error::Invalid(format!(
                            "{}: cannot replace {path}: it is a directory, not a file of the release",
                            self.root.display()
                        )));
                    }
                    if exists(&target) && !exists(&backup) {
                        fs::rename(&target, &backup).map_err(io_err(&target))?;
                        faults.step()?;
                    }
                    fs::rename(&staged, &target).map_err(io_err(&target))?;
                    faults.step()?;
                }
            }
        }
        // The renames must be durable before the journal says they are done.
        for dir in dirs.iter().chain([&self.backup(), &self.staging(), &self.root]) {
            sync_dir(dir);
        }
        Ok(())
    }

    /// Puts back what `run_operations` changed, in reverse: files moved in go back to staging (so a
    /// crash during the rollback can still be finished forward), backups go back in place; then
    /// created directories that are empty are removed, and the journal and staging go.
    fn roll_back(&self, journal: &Journal, faults: &mut Faults) -> Result<()> {
        for (index, op) in journal.operations.iter().enumerate().rev() {
            let target = self.target(op.path());
            let backup = self.backup().join(format!("b{index}"));
            if let Operation::Replace { staged, .. } = op {
                let staged = self.staging().join(staged);
                if !exists(&staged) && fs::symlink_metadata(&target).is_ok_and(|m| m.is_file()) {
                    fs::rename(&target, &staged).map_err(io_err(&target))?;
                    faults.step()?;
                }
            }
            if exists(&backup) {
                self.check_parents(op.path(), true)?;
                if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    // A directory the switch created where a deleted file was; empty once the
                    // files moved in are back in staging.
                    let _ = fs::remove_dir(&target);
                }
                fs::rename(&backup, &target).map_err(io_err(&target))?;
                faults.step()?;
            }
        }
        for dir in journal.created_dirs.iter().rev() {
            let _ = fs::remove_dir(self.target(dir));
        }
        sync_dir(&self.root);
        let journal_path = self.journal_path();
        fs::remove_file(&journal_path).map_err(io_err(&journal_path))?;
        sync_dir(&self.state);
        faults.step()?;
        let _ = fs::remove_dir_all(self.staging());
        let _ = fs::remove_dir_all(self.backup());
        Ok(())
    }

    fn clean_up(&self, faults: &mut Faults) -> Result<()> {
        for dir in [self.backup(), self.staging()] {
            if exists(&dir) {
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                faults.step()?;
            }
        }
        let journal = self.journal_path();
        fs::remove_file(&journal).map_err(io_err(&journal))?;
        sync_dir(&self.state);
        faults.step()
    }

    /// Makes sure every parent of `path` is a real directory, creating missing ones when `create`.
    /// A symbolic link is always refused, and so is a file in the way when `create`: writes never leave
    /// the folder. Without `create`, returns false when a parent is missing or a file (so nothing can
    /// be at `path`).
    fn check_parents(&self, path: &str, create: bool) -> Result<bool> {
        for parent in parents(path) {
            let full = self.target(parent);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if !create && !meta.file_type().is_symlink() => return Ok(false),
                Ok(meta) => {
                    let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "not a directory" };
                    return Err(Error::Invalid(format!(
                        "{}: cannot write {path}: {parent} is {what}",
                        self.root.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&full).map_err(io_err(&full))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(&full, e)),
            }
        }
        Ok(true)
    }

    /// Removes the parents of a deleted file that are now empty (they only held listed files).
    fn remove_empty_parents(&self, path: &str) {
        let mut parents: Vec<&str> = parents(path).collect();
        parents.reverse();
        for parent in parents {
            if fs::remove_dir(self.target(parent)).is_err() {
                break;
            }
        }
    }

    /// The directories the replacements will create: parents that are not directories now (missing,
    /// or a listed file that the deletions, which run first, remove).
    fn dirs_to_create(&self, operations: &[Operation]) -> Vec<String> {
        let mut dirs = Vec::new();
        let mut seen = HashSet::new();
        for op in operations {
            let Operation::Replace { path, .. } = op else { continue };
            for parent in parents(path) {
                if !seen.insert(parent) {
                    continue;
                }
                if !fs::symlink_metadata(self.target(parent)).is_ok_and(|m| m.is_dir()) {
                    dirs.push(parent.to_owned());
                }
            }
        }
        dirs
    }

    fn write_journal(&self, journal: &Journal) -> Result<()> {
        let path = self.journal_path();
        let mut out = AtomicFile::create(&path).map_err(io_err(&path))?;
        let bytes = serde_json::to_vec_pretty(journal).map_err(|e| Error::io(&path, io::Error::other(e)))?;
        out.file().write_all(&bytes).map_err(io_err(&path))?;
        out.commit().map_err(io_err(&path))
    }
}

/// Checks a rebuilt entry against the entry the target's file table lists at its position.
fn check_against_table(entry: &NewEntry, want: &FileEntry, origin: &str) -> Result<()> {
    if entry.path != want.path
        || entry.size != want.size
        || entry.mode != want.mode
        || entry.xxh3 != parse_xxh3(&want.xxh3, &want.path)?
    {
        return Err(Error::Mismatch {
            origin: origin.to_owned(),
            what: format!(
                "the patch rebuilds {} ({} bytes, mode {:o}) where the file table lists {} ({} bytes, mode {:o})",
                entry.path, entry.size, entry.mode, want.path, want.size, want.mode
            ),
        });
    }
    Ok(())
}

/// Checks a staged file's size, SHA-256 and mode against the target table.
fn verify_staged(path: &Path, want: &FileEntry) -> Result<()> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let (sha, len) = crate::hash::sha256_file(path)?;
    let mode = meta.permissions().mode() & 0o7777;
    if len != want.size || sha != want.sha256 || mode != want.mode {
        return Err(Error::Mismatch {
            origin: want.path.clone(),
            what: format!(
                "the staged file ({len} bytes, mode {mode:o}, sha256 {sha}) is not the file table's ({} bytes, mode {:o}, sha256 {})",
                want.size, want.mode, want.sha256
            ),
        });
    }
    Ok(())
}

/// Writes staged files: `staging/s<n>`, each synced with its target mode.
struct Stager {
    dir: PathBuf,
    next: usize,
}

impl Stager {
    fn create(&mut self) -> Result<(String, PathBuf, File)> {
        let name = format!("s{}", self.next);
        self.next += 1;
        let path = self.dir.join(&name);
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok((name, path, file))
    }

    /// Sets the target mode. Syncing waits for [`Stager::sync`], once every file is written, so the
    /// kernel writes them back together instead of one journal commit per file.
    fn seal(file: File, path: &Path, mode: u32) -> Result<()> {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(path))
    }

    /// Syncs the staged files `names` (in parallel) and the staging directory.
    fn sync(&self, names: &[&str]) -> Result<()> {
        names.par_iter().try_for_each(|name| {
            let path = self.dir.join(name);
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))
        })?;
        sync_dir(&self.dir);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8], mode: u32) -> Result<String> {
        let (name, path, mut file) = self.create()?;
        file.write_all(bytes).map_err(io_err(&path))?;
        Self::seal(file, &path, mode)?;
        Ok(name)
    }

    /// Copies `reader` into a new staged file; `source` names it in errors.
    fn write_from(&mut self, mut reader: impl Read, mode: u32, source: &Path) -> Result<String> {
        let (name, path, file) = self.create()?;
        let mut writer = io::BufWriter::with_capacity(1 << 20, file);
        io::copy(&mut reader, &mut writer).map_err(|e| Error::io(source, e))?;
        let file = writer.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        Self::seal(file, &path, mode)?;
        Ok(name)
    }

    fn copy(&mut self, from: &Path, mode: u32) -> Result<String> {
        let reader = File::open(from).map_err(io_err(from))?;
        self.write_from(reader, mode, from)
    }
}

/// The old side of a patch step: the files of a version, in the folder or (for files earlier steps
/// rebuilt) in staging.
struct FolderOld {
    name: PathBuf,
    entries: Vec<OldEntry>,
    locations: Vec<PathBuf>,
}

impl FolderOld {
    fn new(
        dir: &InstallDir,
        table: &FileTable,
        overlay: &HashMap<String, String>,
        stager: &Stager,
    ) -> Result<FolderOld> {
        let mut entries = Vec::with_capacity(table.entries.len());
        let mut locations = Vec::with_capacity(table.entries.len());
        for e in &table.entries {
            entries.push(OldEntry {
                path: e.path.clone(),
                size: e.size,
                xxh3: parse_xxh3(&e.xxh3, &e.path)?,
                mode: e.mode,
                mtime: None,
            });
            locations.push(match overlay.get(&e.path) {
                Some(name) => stager.dir.join(name),
                None => dir.target(&e.path),
            });
        }
        Ok(FolderOld { name: dir.root.clone(), entries, locations })
    }

    fn location(&self, index: u32) -> PathBuf {
        self.locations.get(index as usize).cloned().unwrap_or_default()
    }
}

impl OldEntries for FolderOld {
    fn name(&self) -> &Path {
        &self.name
    }

    fn count(&self) -> u64 {
        self.entries.len() as u64
    }

    fn entry(&self, index: u32) -> Option<OldEntry> {
        self.entries.get(index as usize).cloned()
    }

    fn read_range(&self, index: u32, start: u64, len: usize) -> mf_diff::Result<Vec<u8>> {
        let path = self.location(index);
        let io = |e: io::Error| mf_diff::Error::Io { file: path.clone(), source: e };
        let file = File::open(&path).map_err(io)?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|e| io(io::Error::other(e)))?;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, start).map_err(io)?;
        Ok(buf)
    }
}

/// Which version a folder holds ([`Scan::identify`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum FolderState {
    /// No path that any table lists exists: an empty or missing folder, or one with only other files.
    Fresh,
    /// Every file of this version's table is present with its size and SHA-256.
    Version { version: String },
    /// Neither: `closest` is the version whose table most files match (none when no file matches),
    /// with the files that differ from it.
    Unknown { closest: Option<String>, differences: Vec<Difference> },
}

/// How a folder update went (or, with `--check`, would go).
#[derive(Debug, Clone, Serialize)]
pub struct FolderOutcome {
    pub dir: PathBuf,
    pub repo: String,
    pub manifest_version: u64,
    /// An interrupted earlier update that this run finished (`finished`), whose staging it discarded
    /// (`discarded`), or (with `--check`) that the next run will finish (`pending`).
    pub recovered: Option<String>,
    pub installed: FolderState,
    pub target: String,
    pub route: Vec<Piece>,
    pub route_bytes: u64,
    pub check_only: bool,
    pub changed: bool,
    /// Files written (created or replaced) and deleted by the switch.
    pub files_written: usize,
    pub files_deleted: usize,
    pub fell_back: Option<String>,
    pub fetched_bytes: u64,
    pub needs_repair: bool,
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
        return Err(Error::Invalid(format!("{}: not a directory", dir.display())));
    }
    if fs::symlink_metadata(install.state_dir()).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::Invalid(format!("{}: not a directory", install.state_dir().display())));
    }
    let session_options = SessionOptions {
        key: options.key.clone(),
        fetch: options.fetch.clone(),
        read_only: options.check,
        now: std::time::SystemTime::now(),
    };
    let session = Session::open(repo, install.state_dir(), session_options)?;
    let recovered = if options.check {
        // Read-only: an interrupted switch is only reported; the next real run finishes it.
        exists(&install.journal_path()).then(|| "pending".to_owned())
    } else {
        match install.recover()? {
            Recovery::Clean => None,
            Recovery::Finished { to } => {
                progress.note(&format!("finished an interrupted update to {to}"));
                Some("finished".to_owned())
            }
            Recovery::DiscardedStaging => Some("discarded".to_owned()),
        }
    };
    let target = session.target(options.to.as_deref())?.clone();
    let mut tables: HashMap<String, FileTable> = HashMap::new();
    let mut scan = Scan::default();
    let installed = identify_installed(&session, &install, &mut scan, &mut tables)?;
    let mut outcome = FolderOutcome {
        dir: dir.to_owned(),
        repo: repo.to_owned(),
        manifest_version: session.manifest().manifest_version,
        recovered,
        installed: installed.clone(),
        target: target.version.clone(),
        route: Vec::new(),
        route_bytes: 0,
        check_only: options.check,
        changed: false,
        files_written: 0,
        files_deleted: 0,
        fell_back: None,
        fetched_bytes: 0,
        needs_repair: false,
    };
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
            if options.check {
                outcome.needs_repair = !options.repair;
            } else if !options.repair {
                let listed: Vec<String> =
                    differences.iter().take(10).map(|d| format!("{} ({})", d.path, d.what)).collect();
                let more = differences.len().saturating_sub(listed.len());
                return Err(Error::Invalid(format!(
                    "{}: the files match no version in {repo} (closest: {}; differing: {}{}); left untouched. \
                     Run again with --repair to bring it to {} with the full download ({} bytes)",
                    dir.display(),
                    closest.as_deref().unwrap_or("none"),
                    listed.join(", "),
                    if more > 0 { format!(" and {more} more") } else { String::new() },
                    target.version,
                    target.full.size
                )));
            }
            closest.as_deref().and_then(table_of)
        }
    };
    if options.check {
        outcome.fetched_bytes = session.fetched_bytes();
        return Ok(outcome);
    }

    let (staged, taken, fell_back) = session.run_with_fallback(route, &target.version, progress, |route| {
        stage_route(&session, &install, &scan, installed_table, route, &table_of, progress).inspect_err(|_| {
            // A failed patch route's pieces are not worth resuming: the full download replaces them.
            if !route.is_full() {
                for step in &route.steps {
                    session.discard(step.object());
                }
            }
        })
    })?;
    outcome.route = taken.steps.iter().map(Piece::of).collect();
    outcome.route_bytes = taken.fetch_bytes;
    outcome.fell_back = fell_back;
    install.switch(&staged)?;
    remember_installed(&install, &target.version);
    outcome.changed = true;
    outcome.files_deleted = staged.operations.iter().filter(|op| matches!(op, Operation::Delete { .. })).count();
    outcome.files_written = staged.operations.len() - outcome.files_deleted;
    session.clean_downloads()?;
    outcome.fetched_bytes = session.fetched_bytes();
    Ok(outcome)
}

/// Downloads a route's pieces and stages the target from them.
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
    let table =
        |version: &str| table_of(version).ok_or_else(|| Error::Invalid(format!("no file table for version {version}")));
    match route.steps.as_slice() {
        [Step::Full { version, .. }] => install.stage_full(scan, installed, &files[0], table(version)?, &|_| {}),
        steps => {
            let installed =
                installed.ok_or_else(|| Error::Invalid("a patch route needs an installed version".into()))?;
            let mut chain = Vec::with_capacity(count);
            for (step, file) in steps.iter().zip(&files) {
                let Step::Patch { to, .. } = step else {
                    return Err(Error::Invalid("a route mixes patches and a full download".into()));
                };
                chain.push(PatchStep { patch: file, to: table(to)? });
            }
            install.stage_patches(scan, installed, &chain, &|_| {})
        }
    }
}

#[cfg(test)]
#[path = "folder_tests.rs"]
mod tests;
