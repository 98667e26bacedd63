//! Scanning an install folder: what is at every path a file table lists, and which version that is.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;

use rayon::prelude::*;
use serde::Serialize;

use mf_format::fs::parents;

use super::{FolderState, InstallDir};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, FileTable};

/// What is at a listed path of the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathState {
    /// Nothing (or a missing parent directory).
    Missing,
    /// A regular file whose parents are real directories. `sha256` is computed only when some
    /// table lists the path with this size.
    File {
        /// Length in bytes.
        size: u64,
        /// Unix permission bits.
        mode: u32,
        /// SHA-256 in hex, when some table lists the path with this size.
        sha256: Option<String>,
    },
    /// Something else: a directory, a symbolic link, or a parent that is not a real directory.
    Other(String),
}

impl PathState {
    /// True when the file has exactly this entry's content (size and SHA-256).
    pub(super) fn has_content(&self, entry: &FileEntry) -> bool {
        matches!(self, PathState::File { size, sha256: Some(sha), .. } if *size == entry.size && *sha == entry.sha256)
    }

    /// True when the file has this entry's content and mode.
    pub(super) fn is(&self, entry: &FileEntry) -> bool {
        self.has_content(entry) && matches!(self, PathState::File { mode, .. } if *mode == entry.mode)
    }

    pub(super) fn describe(&self, entry: &FileEntry) -> String {
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
    /// The release path.
    pub path: String,
    /// How it differs: `missing`, another size, another content, or not a regular file.
    pub what: String,
}

/// The state of every path that some file table lists, each probed and hashed once.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    states: HashMap<String, PathState>,
}

impl Scan {
    /// What was found at `path` (a path never probed reads as [`PathState::Missing`]).
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

impl InstallDir {
    /// What is at relative path `path`, without following symbolic links anywhere.
    pub(super) fn probe(&self, path: &str) -> Result<PathState> {
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
}
