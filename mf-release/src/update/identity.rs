//! Archive mode's identification by content (spec/RELEASE.md "Installed version"): an archive
//! updated in place is not byte-identical to its version's full archive, so it is recognised by its
//! entries instead, against the version's signed file table.
//!
//! Two levels of check:
//! - the **index check** (always): the archive's entry list in record order equals the table's
//!   (path, size, mode, xxh3), so patch numbering and every entry's identity are the version's;
//! - the **content check**: every entry's content has the table's SHA-256, which binds the bytes as
//!   the signed manifest does. It reads the whole archive, so a run skips it when the state folder's
//!   **archive record** (written by this client right after it last changed the archive) still
//!   describes the file: same device, inode, length, change time, commit generation, content id and
//!   index hash. A record proves nothing by itself (whoever writes the state folder can write it), but
//!   only the archive's owner can write the state folder (it is refused otherwise) and the archive,
//!   and any change made to the file since the record changes its change time; and the index check
//!   still runs against the signed table, so a record cannot make a different index pass.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use mf_format::fs::Dir;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::FileTable;
use crate::update::state;

/// The archive record's name in the state folder.
pub(crate) const RECORD_FILE: &str = "archive.json";
const RECORD_TYPE: &str = "mf-archive-record";
/// A record is a few hundred bytes.
const MAX_RECORD_SIZE: u64 = 64 << 10;

/// What identifies one state of an archive file without reading its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    ctime_secs: i64,
    ctime_nanos: i64,
    generation: u64,
    content_id: String,
    index_hash: String,
}

/// The state folder's record of the version this client last left the archive at.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(rename = "type")]
    kind: String,
    version: String,
    fingerprint: Fingerprint,
}

/// The fingerprint of the open `archive` at `path` (its file's metadata read now).
pub(crate) fn fingerprint(path: &Path, archive: &mf_format::Archive) -> Result<Fingerprint> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    Ok(Fingerprint {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        ctime_secs: meta.ctime(),
        ctime_nanos: meta.ctime_nsec(),
        generation: archive.generation(),
        content_id: format!("{:016x}", mf_diff::content_id(archive)),
        index_hash: format!("{:016x}", archive.footer().index_hash),
    })
}

/// The version the record names, when the record describes `archive` as it is now.
pub(crate) fn recorded_version(state: &Dir, path: &Path, archive: &mf_format::Archive) -> Result<Option<String>> {
    let Some(bytes) = state::read_file(state, RECORD_FILE, MAX_RECORD_SIZE)? else { return Ok(None) };
    // An unreadable record is only a lost shortcut: the content check runs instead.
    let Ok(record) = serde_json::from_slice::<Record>(&bytes) else { return Ok(None) };
    if record.kind != RECORD_TYPE || record.fingerprint != fingerprint(path, archive)? {
        return Ok(None);
    }
    Ok(Some(record.version))
}

/// Records that the archive at `path` is now `version` (after this client changed it and checked
/// the result).
pub(crate) fn record_version(state: &Dir, path: &Path, version: &str) -> Result<()> {
    // Only mf archives are identified by content: a Panda3D multifile is checked by its SHA-256.
    let Ok(archive) = mf_format::Archive::open_pread(path) else { return forget_record(state) };
    let record =
        Record { kind: RECORD_TYPE.into(), version: version.to_owned(), fingerprint: fingerprint(path, &archive)? };
    state::write_file(state, RECORD_FILE, &serde_json::to_vec_pretty(&record).unwrap_or_default())
}

/// Forgets the record (before the archive is changed, so a crash never leaves a record of a
/// version the file may no longer be).
pub(crate) fn forget_record(state: &Dir) -> Result<()> {
    state::remove_file(state, RECORD_FILE)
}

/// The index check: `archive`'s entries in record order are `table`'s (path, size, mode, xxh3).
/// `Err` says the first difference.
pub(crate) fn index_matches(archive: &mf_format::Archive, table: &FileTable) -> std::result::Result<(), String> {
    if archive.len() != table.entries.len() {
        return Err(format!("{} entries, the table has {}", archive.len(), table.entries.len()));
    }
    for (entry, listed) in archive.entries().zip(&table.entries) {
        let xxh3 = format!("{:016x}", entry.content_hash());
        if entry.path() != listed.path
            || entry.size() != listed.size
            || entry.mode() != listed.mode
            || !xxh3.eq_ignore_ascii_case(&listed.xxh3)
        {
            return Err(format!(
                "entry #{} is '{}' ({} bytes, mode {:o}, xxh3 {xxh3}); the table lists '{}' ({} bytes, mode {:o}, xxh3 {})",
                entry.index(),
                entry.path(),
                entry.size(),
                entry.mode(),
                listed.path,
                listed.size,
                listed.mode,
                listed.xxh3
            ));
        }
    }
    Ok(())
}

/// The content check: every entry of `archive` (whose index already matches `table`) has the
/// table's SHA-256. Entries are read in parallel. `Err` names the first entry that differs.
pub(crate) fn content_matches(
    archive: &mf_format::Archive,
    table: &FileTable,
) -> Result<std::result::Result<(), String>> {
    let differing = (0..archive.len())
        .into_par_iter()
        .map(|i| -> Result<Option<String>> {
            let entry = archive.entry(i as u32).ok_or_else(|| Error::Internal("entry vanished".into()))?;
            let mut hasher = Sha256::new();
            let mut reader = archive.reader(&entry);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match std::io::Read::read(&mut reader, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    // A damaged entry is a content mismatch, not a failed update.
                    Err(e) => return Ok(Some(format!("entry '{}' does not read: {e}", entry.path()))),
                }
            }
            let got = hex::encode(hasher.finalize());
            Ok((got != table.entries[i].sha256).then(|| {
                format!("entry '{}' has SHA-256 {got}; the table says {}", entry.path(), table.entries[i].sha256)
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(match differing.into_iter().flatten().next() {
        Some(what) => Err(what),
        None => Ok(()),
    })
}

/// The check an in-place patch step runs on every entry before its commit: the new version's
/// entries must be the target table's, in order (path, size, mode, xxh3); an entry left in place
/// must be a copy of an old entry whose table SHA-256 is the new entry's (the old entries were
/// bound to the old table when the archive was identified); an entry written is SHA-256'd as it
/// streams and compared with the target table.
pub(crate) struct TableCheck<'t> {
    pub(crate) archive: &'t Path,
    pub(crate) old: &'t FileTable,
    pub(crate) new: &'t FileTable,
    pub(crate) writing: Option<(usize, Sha256)>,
}

impl TableCheck<'_> {
    fn mismatch(&self, entry: &str, what: String) -> mf_diff::Error {
        mf_diff::Error::OutputMismatch {
            file: self.archive.to_owned(),
            entry: Some(entry.to_owned()),
            what: format!("{what} (version {}'s signed file table)", self.new.version),
        }
    }
}

impl mf_diff::EntryCheck for TableCheck<'_> {
    fn entry(&mut self, index: usize, entry: &mf_diff::NewEntry, written: bool) -> mf_diff::Result<()> {
        let Some(listed) = self.new.entries.get(index) else {
            return Err(self.mismatch(
                &entry.path,
                format!("entry #{index} is past the table's {} entries", self.new.entries.len()),
            ));
        };
        let xxh3 = format!("{:016x}", entry.xxh3);
        if entry.path != listed.path
            || entry.size != listed.size
            || entry.mode != listed.mode
            || !xxh3.eq_ignore_ascii_case(&listed.xxh3)
        {
            return Err(self.mismatch(
                &entry.path,
                format!(
                    "entry #{index} would be '{}' ({} bytes, mode {:o}, xxh3 {xxh3}), the table lists '{}' ({} bytes, mode {:o}, xxh3 {})",
                    entry.path, entry.size, entry.mode, listed.path, listed.size, listed.mode, listed.xxh3
                ),
            ));
        }
        if written {
            self.writing = Some((index, Sha256::new()));
            return Ok(());
        }
        let old_sha = match entry.content {
            mf_diff::NewContent::CopyOf(i) => self.old.entries.get(i as usize).map(|e| e.sha256.as_str()),
            mf_diff::NewContent::Bytes(_) => None,
        };
        if old_sha != Some(listed.sha256.as_str()) {
            return Err(
                self.mismatch(&entry.path, "an entry kept in place has another SHA-256 than the table's".into())
            );
        }
        Ok(())
    }

    fn content(&mut self, bytes: &[u8]) {
        if let Some((_, hasher)) = &mut self.writing {
            hasher.update(bytes);
        }
    }

    fn finish(&mut self) -> mf_diff::Result<()> {
        let Some((index, hasher)) = self.writing.take() else { return Ok(()) };
        let listed = &self.new.entries[index];
        let got = hex::encode(hasher.finalize());
        if got != listed.sha256 {
            return Err(self.mismatch(
                &listed.path,
                format!("written content has SHA-256 {got}, the table says {}", listed.sha256),
            ));
        }
        Ok(())
    }

    fn complete(&mut self, entries: usize) -> mf_diff::Result<()> {
        if entries != self.new.entries.len() {
            return Err(mf_diff::Error::OutputMismatch {
                file: self.archive.to_owned(),
                entry: None,
                what: format!(
                    "{entries} entries, version {}'s table lists {}",
                    self.new.version,
                    self.new.entries.len()
                ),
            });
        }
        Ok(())
    }
}
