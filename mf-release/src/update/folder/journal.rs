//! The switch under `.mf-update/journal.json`: run, recovery after a crash, and rollback.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mf_format::fs::{parents, Dir, Kind};
use mf_format::AtomicFile;
use serde::{Deserialize, Serialize};

use super::stage::Staged;
use super::{exists, io_err, sync_dir, InstallDir, BACKUP, JOURNAL_TYPE, STAGING};
use crate::error::{Error, Result};
use crate::manifest::{check_relative_path, FileTable, STATE_DIR_NAME};

/// An operation of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Operation {
    /// Put staged file `staged` (a name in the staging directory) at `path`.
    Replace {
        /// The release path written.
        path: String,
        /// The staged file's name in the staging directory (never a path).
        staged: String,
    },
    /// Remove the file at `path`.
    Delete {
        /// The release path removed.
        path: String,
    },
}

impl Operation {
    /// The release path the operation writes or removes.
    pub fn path(&self) -> &str {
        match self {
            Operation::Replace { path, .. } | Operation::Delete { path } => path,
        }
    }
}

/// `.mf-update/journal.json`. Outside this module it is only seen through
/// [`Journal::parse_and_check`] and read-only accessors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) from: Option<String>,
    pub(super) to: String,
    /// Set once every operation is done: only the cleanup remains.
    pub(super) done: bool,
    pub(super) operations: Vec<Operation>,
    /// Directories the switch creates (shallowest first); a rollback removes them when empty.
    pub(super) created_dirs: Vec<String>,
}

/// What [`InstallDir::recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No interrupted update.
    Clean,
    /// An interrupted switch to `to` was finished.
    Finished {
        /// The version the folder now holds.
        to: String,
    },
    /// Staged files of an update whose switch had not begun were removed.
    DiscardedStaging,
}

/// The points of the switch, recovery and rollback where each step on disk is done, so that tests
/// can stop dead at any of them as a kill would. Production code passes [`NoCrashes`].
pub(crate) trait CrashPoints {
    /// A step on disk is done; an error stops the run there, with no rollback.
    fn step(&mut self) -> Result<()>;
    /// True once [`CrashPoints::step`] has simulated a crash (errors after it are not rolled back).
    fn crashed(&self) -> bool;
}

/// Runs every step.
pub(crate) struct NoCrashes;

impl CrashPoints for NoCrashes {
    fn step(&mut self) -> Result<()> {
        Ok(())
    }

    fn crashed(&self) -> bool {
        false
    }
}

impl InstallDir {
    /// Switches the folder to the staged files under the journal. An error rolls back; the folder is
    /// then as before.
    pub fn switch(&self, staged: &Staged) -> Result<()> {
        self.switch_with(staged, &mut NoCrashes)
    }

    pub(crate) fn switch_with(&self, staged: &Staged, faults: &mut dyn CrashPoints) -> Result<()> {
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
    /// journal is removed. The journal is untrusted input: it is first checked against the signed file
    /// tables of the versions it names (`tables` gives them) and refused, the folder untouched, unless
    /// every operation is one those tables allow (`Journal::check`).
    pub fn recover(&self, tables: &dyn Fn(&str) -> Result<FileTable>) -> Result<Recovery> {
        self.recover_with(tables, &mut NoCrashes)
    }

    pub(crate) fn recover_with(
        &self,
        tables: &dyn Fn(&str) -> Result<FileTable>,
        faults: &mut dyn CrashPoints,
    ) -> Result<Recovery> {
        match fs::symlink_metadata(&self.state) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(Error::WrongFileType { path: self.state.clone(), expected: "directory" }),
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
        match read_journal_file(&path) {
            Ok(bytes) => {
                let journal = Journal::parse_and_check(&bytes, &path, tables)?;
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

    /// Refuses a staging or backup directory that is not a real directory (a symbolic link would move
    /// files in from, or out to, elsewhere). A missing one is fine.
    fn check_work_dir(&self, dir: &Path) -> Result<()> {
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::WrongFileType { path: dir.to_owned(), expected: "directory (not a symbolic link)" }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir, e)),
        }
    }

    /// Runs (or re-runs) a journal's operations, marks it done and cleans up; an error (not a
    /// simulated crash) rolls back.
    pub(super) fn run_journal(&self, mut journal: Journal, faults: &mut dyn CrashPoints) -> Result<()> {
        if !journal.done {
            if let Err(error) = self.run_operations(&journal, faults) {
                if faults.crashed() {
                    return Err(error);
                }
                return match self.roll_back(&journal, faults) {
                    Ok(()) => Err(error),
                    Err(rollback) => {
                        Err(Error::RollbackFailed { rollback: Box::new(rollback), source: Box::new(error) })
                    }
                };
            }
            journal.done = true;
            self.write_journal(&journal)?;
            faults.step()?;
        }
        self.clean_up(faults)
    }

    pub(super) fn run_operations(&self, journal: &Journal, faults: &mut dyn CrashPoints) -> Result<()> {
        self.check_work_dir(&self.staging())?;
        self.check_work_dir(&self.backup())?;
        let handles = self.switch_handles()?;
        let mut dirs = BTreeSet::new();
        for (index, op) in journal.operations.iter().enumerate() {
            let backup = format!("b{index}");
            dirs.insert(self.target(parent_and_name(op.path()).0));
            match op {
                Operation::Delete { path } => {
                    // A parent that is missing or a file (a replacement put it there when the switch
                    // ran before): the file is gone already.
                    let Some((dir, name)) = self.open_parent(&handles.root, path, false)? else { continue };
                    let at = self.target(path);
                    if dir.metadata(name).map_err(io_err(&at))?.is_some_and(|m| m.kind != Kind::Dir) {
                        dir.rename(name, &handles.backup, &backup).map_err(io_err(&at))?;
                        faults.step()?;
                    }
                    self.remove_empty_parents(&handles.root, path);
                }
                Operation::Replace { path, staged } => {
                    let staged_path = self.staging().join(staged);
                    let Some(staging) = &handles.staging else { continue }; // done before
                    match staging.metadata(staged).map_err(io_err(&staged_path))? {
                        Some(meta) if meta.kind == Kind::File => {}
                        Some(_) => {
                            return Err(Error::WrongFileType { path: staged_path, expected: "regular staged file" })
                        }
                        None => continue, // done before
                    }
                    let Some((dir, name)) = self.open_parent(&handles.root, path, true)? else { continue };
                    let at = self.target(path);
                    match dir.metadata(name).map_err(io_err(&at))? {
                        Some(meta) if meta.kind == Kind::Dir => {
                            return Err(Error::Blocked {
                                root: self.root.clone(),
                                path: path.clone(),
                                what: "it is a directory, not a file of the release".into(),
                            });
                        }
                        Some(_) if handles.backup.metadata(&backup).map_err(io_err(&at))?.is_none() => {
                            dir.rename(name, &handles.backup, &backup).map_err(io_err(&at))?;
                            faults.step()?;
                        }
                        _ => {}
                    }
                    staging.rename(staged, &dir, name).map_err(io_err(&at))?;
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

    /// Handles on the folder, staging (if present) and backup (created) for the switch and rollback:
    /// every file they move is named relative to a handle, and no symbolic link is followed below
    /// the install folder itself.
    fn switch_handles(&self) -> Result<SwitchHandles> {
        let root = Dir::open(&self.root).map_err(io_err(&self.root))?;
        let state = root.open_dir(STATE_DIR_NAME).map_err(io_err(&self.state))?;
        let staging = match state.open_dir(STAGING) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(self.staging(), e)),
        };
        let backup = state.create_dir_path(BACKUP).map_err(io_err(&self.backup()))?;
        Ok(SwitchHandles { root, staging, backup })
    }

    /// The parent directory of release path `path`, opened from `root` one component at a time
    /// without following a symbolic link, and the file's name in it. Parents are checked first
    /// ([`InstallDir::check_parents`]) for a clear error; with `create`, missing ones are created
    /// through the handles. `None` (only without `create`) when a parent is missing or a file.
    fn open_parent<'p>(&self, root: &Dir, path: &'p str, create: bool) -> Result<Option<(Dir, &'p str)>> {
        if !self.check_parents(path, create)? {
            return Ok(None);
        }
        let (parent, name) = parent_and_name(path);
        let opened = if create { root.create_dir_path(parent) } else { root.open_path(parent) };
        // An error here after the check passed is a race with another process: refused, nothing followed.
        let dir = opened.map_err(io_err(&self.target(parent)))?;
        Ok(Some((dir, name)))
    }

    /// Puts back what `run_operations` changed, in reverse: files moved in go back to staging (so a
    /// crash during the rollback can still be finished forward), backups go back in place; then
    /// created directories that are empty are removed, and the journal and staging go.
    pub(super) fn roll_back(&self, journal: &Journal, faults: &mut dyn CrashPoints) -> Result<()> {
        let handles = self.switch_handles()?;
        for (index, op) in journal.operations.iter().enumerate().rev() {
            let at = self.target(op.path());
            let backup = format!("b{index}");
            if let (Operation::Replace { staged, .. }, Some(staging)) = (op, &handles.staging) {
                if staging.metadata(staged).map_err(io_err(&at))?.is_none() {
                    if let Some((dir, name)) = self.open_parent(&handles.root, op.path(), false)? {
                        if dir.metadata(name).map_err(io_err(&at))?.is_some_and(|m| m.kind == Kind::File) {
                            dir.rename(name, staging, staged).map_err(io_err(&at))?;
                            faults.step()?;
                        }
                    }
                }
            }
            if handles.backup.metadata(&backup).map_err(io_err(&at))?.is_some() {
                let Some((dir, name)) = self.open_parent(&handles.root, op.path(), true)? else { continue };
                if dir.metadata(name).map_err(io_err(&at))?.is_some_and(|m| m.kind == Kind::Dir) {
                    // A directory the switch created where a deleted file was; empty once the
                    // files moved in are back in staging.
                    let _ = dir.remove_dir(name);
                }
                handles.backup.rename(&backup, &dir, name).map_err(io_err(&at))?;
                faults.step()?;
            }
        }
        for dir in journal.created_dirs.iter().rev() {
            let (parent, name) = parent_and_name(dir);
            if let Ok(parent) = handles.root.open_path(parent) {
                let _ = parent.remove_dir(name);
            }
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

    pub(super) fn clean_up(&self, faults: &mut dyn CrashPoints) -> Result<()> {
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

    /// Checks that every parent of `path` is a real directory or (when `create`: it will be created)
    /// missing. A symbolic link is always refused, and so is a file in the way when `create`: writes
    /// never leave the folder. Without `create`, returns false when a parent is missing or a file (so
    /// nothing can be at `path`).
    pub(super) fn check_parents(&self, path: &str, create: bool) -> Result<bool> {
        for parent in parents(path) {
            let full = self.target(parent);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if !create && !meta.file_type().is_symlink() => return Ok(false),
                Ok(meta) => {
                    let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "not a directory" };
                    return Err(Error::Blocked {
                        root: self.root.clone(),
                        path: path.to_owned(),
                        what: format!("{parent} is {what}"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(&full, e)),
            }
        }
        Ok(true)
    }

    /// Removes the parents of a deleted file that are now empty (they only held listed files).
    pub(super) fn remove_empty_parents(&self, root: &Dir, path: &str) {
        let mut parents: Vec<&str> = parents(path).collect();
        parents.reverse();
        for parent in parents {
            let (above, name) = parent_and_name(parent);
            if root.open_path(above).and_then(|dir| dir.remove_dir(name)).is_err() {
                break;
            }
        }
    }

    /// The directories the replacements will create: parents that are not directories now (missing,
    /// or a listed file that the deletions, which run first, remove).
    pub(super) fn dirs_to_create(&self, operations: &[Operation]) -> Vec<String> {
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

    pub(super) fn write_journal(&self, journal: &Journal) -> Result<()> {
        let path = self.journal_path();
        let mut out = AtomicFile::create(&path).map_err(io_err(&path))?;
        let bytes = serde_json::to_vec_pretty(journal).map_err(|e| Error::io(&path, io::Error::other(e)))?;
        out.file().write_all(&bytes).map_err(io_err(&path))?;
        out.commit().map_err(io_err(&path))
    }
}

/// A journal larger than this is refused before it is read (a million operations take ~100 MB).
const MAX_JOURNAL_SIZE: u64 = 512 << 20;

/// Reads the journal file: a regular file (never through a symbolic link) of bounded size.
fn read_journal_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = fs::OpenOptions::new().read(true).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits()).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_JOURNAL_SIZE {
        return Err(io::Error::other(format!(
            "not a regular file of at most {MAX_JOURNAL_SIZE} bytes ({} bytes)",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_JOURNAL_SIZE + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why [`Journal::check`] failed: the journal itself, or looking up a table it names.
pub(super) enum JournalError {
    Refused(String),
    Lookup(Error),
}

/// True for a name [`super::stage::Stager`] gives: `s` and a number, nothing that could leave staging.
fn is_staged_name(name: &str) -> bool {
    name.len() >= 2 && name.len() <= 21 && name.starts_with('s') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

impl Journal {
    /// The parse-and-check step of [`InstallDir::recover`], on the bytes of a journal file already
    /// read from `path` (named in errors): parses the JSON and runs `Journal::check` against the
    /// file tables `tables` gives. A journal that does not parse, or that the check refuses, is
    /// [`Error::BadJournal`]; an error looking up a table is returned as is. Public so that the
    /// journal validation can be fuzzed without a folder on disk.
    pub fn parse_and_check(bytes: &[u8], path: &Path, tables: &dyn Fn(&str) -> Result<FileTable>) -> Result<Journal> {
        let journal: Journal = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadJournal { path: path.to_owned(), what: format!("not an mf folder journal: {e}") })?;
        journal.check(tables).map_err(|e| match e {
            JournalError::Refused(what) => Error::BadJournal { path: path.to_owned(), what },
            JournalError::Lookup(error) => error,
        })?;
        Ok(journal)
    }

    /// The version the interrupted update started from (`None`: nothing was installed).
    pub fn from_version(&self) -> Option<&str> {
        self.from.as_deref()
    }

    /// The version the interrupted update switches to.
    pub fn to_version(&self) -> &str {
        &self.to
    }

    /// Whether every operation is done (only the cleanup remains).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The operations of the switch, in order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// Directories the switch creates, shallowest first.
    pub fn created_dirs(&self) -> &[String] {
        &self.created_dirs
    }

    /// Checks a journal found on disk before any of it runs: its type; every path a valid release path
    /// (relative, no `..`, not in `.mf-update/`) named once; every staged file a plain name in staging;
    /// and every operation one the signed file tables of its `from` and `to` versions allow: a
    /// replacement writes a path the target lists, a deletion removes a path the installed version
    /// lists and the target does not; created directories are parents of replaced paths. A journal
    /// already marked done only has its cleanup left (inside `.mf-update/`), so its tables are not
    /// needed.
    pub(super) fn check(&self, tables: &dyn Fn(&str) -> Result<FileTable>) -> Result<(), JournalError> {
        let refuse = |what: String| Err(JournalError::Refused(what));
        if self.kind != JOURNAL_TYPE {
            return refuse(format!("type {:?} is not {JOURNAL_TYPE:?}", self.kind));
        }
        let mut paths = HashSet::new();
        let mut staged_names = HashSet::new();
        for op in &self.operations {
            let path = op.path();
            if let Err(why) = check_relative_path(path) {
                return refuse(format!("operation path {path:?} {why}"));
            }
            if path == STATE_DIR_NAME || path.starts_with(&format!("{STATE_DIR_NAME}/")) {
                return refuse(format!("operation path {path:?} is inside {STATE_DIR_NAME}/"));
            }
            if !paths.insert(path) {
                return refuse(format!("{path:?} has two operations"));
            }
            if let Operation::Replace { staged, .. } = op {
                if !is_staged_name(staged) || !staged_names.insert(staged.as_str()) {
                    return refuse(format!("{path:?}: staged file {staged:?} is not a staging name used once"));
                }
            }
        }
        let replaced_parents: HashSet<&str> = self
            .operations
            .iter()
            .filter(|op| matches!(op, Operation::Replace { .. }))
            .flat_map(|op| parents(op.path()))
            .collect();
        if let Some(dir) = self.created_dirs.iter().find(|d| !replaced_parents.contains(d.as_str())) {
            return refuse(format!("created directory {dir:?} is no parent of a replaced file"));
        }
        if self.done {
            return Ok(());
        }
        let table = |version: &str| {
            tables(version).map_err(|e| match e {
                Error::VersionNotFound { .. } => JournalError::Refused(format!(
                    "it names version {version:?}, which the repository does not list, so its operations cannot be checked"
                )),
                other => JournalError::Lookup(other),
            })
        };
        let to = table(&self.to)?;
        let from = self.from.as_deref().map(table).transpose()?;
        let listed = |t: &FileTable| -> HashSet<String> { t.entries.iter().map(|e| e.path.clone()).collect() };
        let to_paths = listed(&to);
        let from_paths = from.as_ref().map(listed).unwrap_or_default();
        for op in &self.operations {
            let allowed = match op {
                Operation::Replace { path, .. } => to_paths.contains(path),
                Operation::Delete { path } => from_paths.contains(path) && !to_paths.contains(path),
            };
            if !allowed {
                let from = self.from.as_deref().unwrap_or("nothing installed");
                return refuse(format!(
                    "{op:?} is not allowed by the file tables of versions {from} and {} (an update from one to the \
                     other replaces only files the target lists and deletes only files the installed version lists)",
                    self.to
                ));
            }
        }
        Ok(())
    }
}

/// Open directories of a switch (see [`InstallDir::switch_handles`]).
struct SwitchHandles {
    root: Dir,
    staging: Option<Dir>,
    backup: Dir,
}

/// `a/b/c` gives (`a/b`, `c`); `c` gives (``, `c`).
fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}
