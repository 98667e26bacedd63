//! Staging: the target's files written and verified in `.mf-update/staging/`, from a chain of patches
//! or from the full archive, before the switch touches the folder.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mf_diff::{NewContent, NewEntry, Patch};
use mf_format::fs::Dir;
use mf_format::Archive;
use rayon::prelude::*;

use super::journal::Operation;
use super::old_entries::FolderOld;
use super::scan::{PathState, Scan};
use super::{exists, io_err, parse_xxh3, sync_dir, InstallDir, STAGING};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, FileTable};

/// One step of a patch route in folder mode: the patch file and the file table of the version it
/// produces.
pub struct PatchStep<'a> {
    /// The downloaded, verified patch file.
    pub patch: &'a Path,
    /// The file table of the version the patch produces: what every staged file is checked against.
    pub to: &'a FileTable,
}

/// Files staged and verified, ready to switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The version the folder held (`None` for a fresh install).
    pub from: Option<String>,
    /// The version the staged files make.
    pub to: String,
    /// Deletions first, then replacements, each in path order.
    pub operations: Vec<Operation>,
    /// Bytes of staged files.
    pub staged_bytes: u64,
}

impl InstallDir {
    /// Starts a staging area: refuses while a journal exists (recover first), empties old staging.
    pub(super) fn begin_staging(&self) -> Result<Stager> {
        self.prepare_state()?;
        if exists(&self.journal_path()) {
            return Err(Error::InterruptedUpdate { journal: self.journal_path() });
        }
        let staging = self.staging();
        if exists(&staging) {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        // Staged files are created through a handle on the new folder: a link swapped in for it
        // later does not redirect them.
        let state = Dir::open_nofollow(&self.state).map_err(io_err(&self.state))?;
        state.create_dir(STAGING).map_err(io_err(&staging))?;
        let handle = state.open_dir(STAGING).map_err(io_err(&staging))?;
        Ok(Stager { dir: staging, handle, next: 0 })
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
            return Err(Error::BadArgument("a patch route needs at least one patch".into()));
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

    pub(super) fn stage_chain(
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

    pub(super) fn extract_changed(
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
    pub(super) fn finish_staging(
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
}

/// Checks a rebuilt entry against the entry the target's file table lists at its position.
pub(super) fn check_against_table(entry: &NewEntry, want: &FileEntry, origin: &str) -> Result<()> {
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
pub(super) fn verify_staged(path: &Path, want: &FileEntry) -> Result<()> {
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
pub(super) struct Stager {
    /// Where the staging folder is, for reading staged files back and for messages.
    pub(super) dir: PathBuf,
    handle: Dir,
    next: usize,
}

impl Stager {
    pub(super) fn create(&mut self) -> Result<(String, PathBuf, File)> {
        let name = format!("s{}", self.next);
        self.next += 1;
        let path = self.dir.join(&name);
        let file = self.handle.create_file_exclusive(&name, 0o600).map_err(io_err(&path))?;
        Ok((name, path, file))
    }

    /// Sets the target mode. Syncing waits for [`Stager::sync`], once every file is written, so the
    /// kernel writes them back together instead of one journal commit per file.
    pub(super) fn seal(file: File, path: &Path, mode: u32) -> Result<()> {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(path))
    }

    /// Syncs the staged files `names` (in parallel) and the staging directory.
    pub(super) fn sync(&self, names: &[&str]) -> Result<()> {
        names.par_iter().try_for_each(|name| {
            let path = self.dir.join(name);
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, e))
        })?;
        sync_dir(&self.dir);
        Ok(())
    }

    pub(super) fn write(&mut self, bytes: &[u8], mode: u32) -> Result<String> {
        let (name, path, mut file) = self.create()?;
        file.write_all(bytes).map_err(io_err(&path))?;
        Self::seal(file, &path, mode)?;
        Ok(name)
    }

    /// Copies `reader` into a new staged file; `source` names it in errors.
    pub(super) fn write_from(&mut self, mut reader: impl Read, mode: u32, source: &Path) -> Result<String> {
        let (name, path, file) = self.create()?;
        let mut writer = io::BufWriter::with_capacity(1 << 20, file);
        io::copy(&mut reader, &mut writer).map_err(|e| Error::io(source, e))?;
        let file = writer.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        Self::seal(file, &path, mode)?;
        Ok(name)
    }

    pub(super) fn copy(&mut self, from: &Path, mode: u32) -> Result<String> {
        let reader = File::open(from).map_err(io_err(from))?;
        self.write_from(reader, mode, from)
    }
}
