//! The mf-diff adapter: a version's files, in the folder or in staging, as a patch's old entries.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mf_diff::{OldEntries, OldEntry};

use super::stage::Stager;
use super::{parse_xxh3, InstallDir};
use crate::error::Result;
use crate::manifest::FileTable;

/// The old side of a patch step: the files of a version, in the folder or (for files earlier steps
/// rebuilt) in staging.
pub(super) struct FolderOld {
    name: PathBuf,
    pub(super) entries: Vec<OldEntry>,
    locations: Vec<PathBuf>,
}

impl FolderOld {
    pub(super) fn new(
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
                Some(name) => stager.pinned(name),
                None => dir.target(&e.path),
            });
        }
        Ok(FolderOld { name: dir.root.clone(), entries, locations })
    }

    pub(super) fn location(&self, index: u32) -> PathBuf {
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
