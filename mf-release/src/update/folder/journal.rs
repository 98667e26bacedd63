//! The switch under `.mf-update/journal.json`: run, recovery after a crash, and rollback.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Write};

use mf_format::AtomicFile;
use serde::{Deserialize, Serialize};

use super::stage::Staged;
use super::{exists, io_err, parents, sync_dir, InstallDir, JOURNAL_TYPE};
use crate::error::{Error, Result};

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

/// `.mf-update/journal.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Journal {
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
    /// journal is removed.
    pub fn recover(&self) -> Result<Recovery> {
        self.recover_with(&mut NoCrashes)
    }

    pub(crate) fn recover_with(&self, faults: &mut dyn CrashPoints) -> Result<Recovery> {
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
    pub(super) fn run_journal(&self, mut journal: Journal, faults: &mut dyn CrashPoints) -> Result<()> {
        if !journal.done {
            if let Err(error) = self.run_operations(&journal, faults) {
                if faults.crashed() {
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

    pub(super) fn run_operations(&self, journal: &Journal, faults: &mut dyn CrashPoints) -> Result<()> {
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
    pub(super) fn roll_back(&self, journal: &Journal, faults: &mut dyn CrashPoints) -> Result<()> {
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

    /// Makes sure every parent of `path` is a real directory, creating missing ones when `create`.
    /// A symbolic link is always refused, and so is a file in the way when `create`: writes never leave
    /// the folder. Without `create`, returns false when a parent is missing or a file (so nothing can
    /// be at `path`).
    pub(super) fn check_parents(&self, path: &str, create: bool) -> Result<bool> {
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
    pub(super) fn remove_empty_parents(&self, path: &str) {
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
