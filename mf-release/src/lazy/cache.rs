//! The cache folder's files for one archive, reached only through the folder's handle:
//! `<sha256>.lock` (held while mounted), `<sha256>.mf.partial` (the sparse file being filled),
//! `<sha256>.blocks` (the record of blocks written, untrusted), and `<sha256>.mf` (complete).

use std::fs::File;

use mf_format::fs::{Dir, Kind};
use nix::fcntl::{Flock, FlockArg};

use super::table::BlockTable;
use crate::error::{Error, Result};
use crate::manifest::ObjectRef;
use crate::update::state;

/// The record's first 8 bytes.
const RECORD_MAGIC: [u8; 8] = *b"MFBITS01";
/// Magic, archive size, block size, then the bits.
const RECORD_HEAD: usize = 8 + 8 + 4;

/// The cache file, open for reading and writing, and what the cache claims of it.
pub(super) struct Opened {
    pub file: File,
    pub partial_name: String,
    pub complete_name: String,
    /// The file already has its complete name.
    pub is_complete_name: bool,
    /// One flag per block: the cache claims it is present (to be hashed again before use).
    pub claimed: Vec<bool>,
}

pub(super) fn record_name(sha256: &str) -> String {
    format!("{sha256}.blocks")
}

/// Takes `<sha256>.lock` in the cache folder, refusing when another process holds it.
pub(super) fn lock(cache: &Dir, sha256: &str) -> Result<Flock<File>> {
    let name = format!("{sha256}.lock");
    let path = cache.display_path(&name);
    let file = cache.open_file_append(&name, 0o600).map_err(|e| state::state_error(&path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => Error::CacheInUse { lock: path.clone() },
        _ => Error::io(&path, errno.into()),
    })
}

/// Opens (or creates) the cache file of `full`: the complete `<sha256>.mf` when it has the right
/// length (every block claimed), else `<sha256>.mf.partial` with the blocks its record claims, else
/// a new sparse file of the archive's length. A link or special file at either name is refused.
pub(super) fn open_file(cache: &Dir, full: &ObjectRef, table: &BlockTable) -> Result<Opened> {
    let complete_name = format!("{}.mf", full.sha256);
    let partial_name = format!("{}.mf.partial", full.sha256);
    let record = record_name(&full.sha256);
    let blocks = table.block_count() as usize;
    if let Some(len) = regular_len(cache, &complete_name)? {
        if len == table.archive_size {
            let file = open_rw(cache, &complete_name)?;
            // Left by a run killed between the rename and the cleanup.
            state::remove_file(cache, &partial_name)?;
            state::remove_file(cache, &record)?;
            return Ok(Opened {
                file,
                partial_name,
                complete_name,
                is_complete_name: true,
                claimed: vec![true; blocks],
            });
        }
        state::remove_file(cache, &complete_name)?;
    }
    let mut claimed = vec![false; blocks];
    let file = match regular_len(cache, &partial_name)? {
        Some(len) => {
            let file = open_rw(cache, &partial_name)?;
            if len == table.archive_size {
                claimed = read_record(cache, &record, table)?;
            } else {
                file.set_len(table.archive_size).map_err(|e| Error::io(cache.display_path(&partial_name), e))?;
            }
            file
        }
        None => {
            let path = cache.display_path(&partial_name);
            drop(cache.create_file_exclusive(&partial_name, 0o600).map_err(|e| state::state_error(&path, e))?);
            let file = open_rw(cache, &partial_name)?;
            file.set_len(table.archive_size).map_err(|e| Error::io(&path, e))?;
            file
        }
    };
    Ok(Opened { file, partial_name, complete_name, is_complete_name: false, claimed })
}

/// The length of the regular file `name`, `None` when nothing is there; a link, folder or special
/// file there is refused.
fn regular_len(cache: &Dir, name: &str) -> Result<Option<u64>> {
    let path = cache.display_path(name);
    match cache.metadata(name).map_err(|e| Error::io(&path, e))? {
        None => Ok(None),
        Some(meta) if meta.kind == Kind::File => Ok(Some(meta.len)),
        Some(meta) => Err(Error::UnsafeState {
            path,
            what: format!(
                "{} where the mount keeps its cached archive",
                if meta.kind == Kind::Symlink { "a symbolic link" } else { meta.kind.describe() }
            ),
        }),
    }
}

/// Opens `name` in `cache` for reading and writing, without following a link at the name: the path
/// goes through the folder's descriptor (`/proc/self/fd/N/name`), so the folder is the one opened.
fn open_rw(cache: &Dir, name: &str) -> Result<File> {
    let path = cache.display_path(name);
    mf_format::fs::open_regular_for_update(cache.fd_path().join(name)).map_err(|e| state::state_error(&path, e))
}

/// The blocks `<sha256>.blocks` claims; all unclaimed when it is missing or not a record of this
/// table (it is only a hint: every claimed block is hashed again before use).
fn read_record(cache: &Dir, name: &str, table: &BlockTable) -> Result<Vec<bool>> {
    let blocks = table.block_count() as usize;
    let len = RECORD_HEAD + blocks.div_ceil(8);
    let none = vec![false; blocks];
    let bytes = match state::read_file(cache, name, len as u64) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(none),
        // Larger than a record of this table can be: not one.
        Err(Error::UnsafeState { .. }) => return Ok(none),
        Err(e) => return Err(e),
    };
    if bytes.len() != len || bytes[..RECORD_HEAD] != record_head(table)[..] {
        return Ok(none);
    }
    let bits = &bytes[RECORD_HEAD..];
    Ok((0..blocks).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
}

/// The record's head for `table`: magic, archive size, block size (a record of another table is
/// ignored).
fn record_head(table: &BlockTable) -> Vec<u8> {
    let mut head = Vec::with_capacity(RECORD_HEAD);
    head.extend_from_slice(&RECORD_MAGIC);
    head.extend_from_slice(&table.archive_size.to_le_bytes());
    head.extend_from_slice(&table.block_size.to_le_bytes());
    head
}

/// Replaces `<sha256>.blocks` with a record of `present` (temp file, fsync, rename).
pub(super) fn write_record(cache: &Dir, name: &str, table: &BlockTable, present: &[bool]) -> Result<()> {
    let mut bytes = record_head(table);
    bytes.resize(RECORD_HEAD + present.len().div_ceil(8), 0);
    for (i, _) in present.iter().enumerate().filter(|(_, &p)| p) {
        bytes[RECORD_HEAD + i / 8] |= 1 << (i % 8);
    }
    state::write_file(cache, name, &bytes)
}
