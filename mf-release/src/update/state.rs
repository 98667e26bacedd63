//! The install's state folder, read and written only through directory handles.
//!
//! Someone else may be able to write the state folder (`ARCHIVE.mf-update/`, `INSTALL/.mf-update/`),
//! so nothing in it is trusted to be what its name says: the folder is opened once, without following
//! a symlink, and checked to be a directory owned by this user; every file and folder in it is then
//! opened relative to that handle with no-follow semantics (a symlink, FIFO or device where the
//! updater keeps its own file is refused with [`Error::UnsafeState`]), reads are bounded before
//! anything is allocated, and writes go to an exclusively created temp file in the same folder that
//! is fsynced and `renameat`ed into place. No path inside the folder is resolved again after the
//! folder was opened.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use mf_format::fs::{Dir, Kind};

use crate::error::{Error, Result};

/// Temp files of state writes: `.mf-state.<pid>.<random>.mf-tmp` (stale ones are removed on the next
/// run, see [`Dir::remove_stale_temps`]).
pub(crate) const TEMP_PREFIX: &str = ".mf-state.";
pub(crate) const TEMP_SUFFIX: &str = ".mf-tmp";

/// The updater's own folders in a state folder (folder mode's `staging/` and `backup/` too: files
/// are moved into and out of them).
pub(crate) const OWN_FOLDERS: [&str; 5] = ["downloads", "work", "tables", "staging", "backup"];

/// What an I/O error on a state name means: a planted link or special file is refused as unsafe
/// state, anything else is an I/O error naming the path.
pub(crate) fn state_error(path: &Path, e: io::Error) -> Error {
    const ELOOP: i32 = nix::errno::Errno::ELOOP as i32;
    const ENOTDIR: i32 = nix::errno::Errno::ENOTDIR as i32;
    match e.raw_os_error() {
        Some(ELOOP) => Error::UnsafeState {
            path: path.to_owned(),
            what: "a symbolic link where the updater keeps its own file or folder".into(),
        },
        Some(ENOTDIR) => Error::WrongFileType { path: path.to_owned(), expected: "directory" },
        _ if e.kind() == io::ErrorKind::InvalidInput => {
            Error::UnsafeState { path: path.to_owned(), what: format!("{e} where the updater keeps its own file") }
        }
        _ => Error::io(path, e),
    }
}

/// Opens (with `create`, creating it first) the state folder `path`. The path up to its parent is the
/// caller's; the folder itself is opened without following a symlink and must be a directory owned
/// by this user. `None` when it does not exist and `create` is false.
pub(crate) fn open_state_dir(path: &Path, create: bool) -> Result<Option<Dir>> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (if parent.as_os_str().is_empty() { Path::new(".") } else { parent }, name),
        _ => return Err(Error::BadArgument(format!("{}: not a state folder path", path.display()))),
    };
    if create {
        // The install folder (folder mode) or the archive's folder: the caller's own path.
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let parent_dir = match Dir::open(parent) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
        Err(e) => return Err(Error::io(parent, e)),
    };
    if create {
        match parent_dir.create_dir(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let dir = match parent_dir.open_dir(name) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
        Err(_) if is_link(&parent_dir, name) => {
            return Err(Error::UnsafeState {
                path: path.to_owned(),
                what: "the state folder is a symbolic link".into(),
            });
        }
        Err(e) => return Err(state_error(path, e)),
    };
    let meta = dir.own_metadata().map_err(|e| Error::io(path, e))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid != me {
        return Err(Error::UnsafeState {
            path: path.to_owned(),
            what: format!("the state folder is owned by uid {}, not by this user ({me})", meta.uid),
        });
    }
    for sub in OWN_FOLDERS {
        match dir.metadata(sub).map_err(|e| Error::io(dir.display_path(sub), e))? {
            None | Some(mf_format::fs::Metadata { kind: Kind::Dir, .. }) => {}
            Some(other) if other.kind == Kind::Symlink => {
                return Err(state_error(&dir.display_path(sub), loop_error()))
            }
            Some(_) => return Err(Error::WrongFileType { path: dir.display_path(sub), expected: "directory" }),
        }
    }
    Ok(Some(dir))
}

/// Whether `name` in `dir` is a symbolic link (to tell a planted link from another failure: opening
/// one as a directory without following it fails with `ELOOP` or `ENOTDIR`).
fn is_link(dir: &Dir, name: impl AsRef<std::ffi::OsStr>) -> bool {
    dir.metadata(name).ok().flatten().is_some_and(|m| m.kind == Kind::Symlink)
}

fn loop_error() -> io::Error {
    io::Error::from_raw_os_error(nix::errno::Errno::ELOOP as i32)
}

/// Opens the updater's folder `name` in `state` (creating it with `create`), never through a symlink.
/// `None` when it does not exist and `create` is false.
pub(crate) fn open_subdir(state: &Dir, name: &str, create: bool) -> Result<Option<Dir>> {
    let path = state.display_path(name);
    let opened = if create { state.create_dir_path(name) } else { state.open_dir(name) };
    match opened {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => Ok(None),
        Err(_) if is_link(state, name) => Err(state_error(&path, loop_error())),
        Err(e) => Err(state_error(&path, e)),
    }
}

/// The bytes of the state file `name` in `dir`: a regular file (never through a symlink, never a FIFO
/// or device) of at most `cap` bytes, checked before anything is allocated. `None` when missing.
pub(crate) fn read_file(dir: &Dir, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
    let path = dir.display_path(name);
    let file = match dir.open_file(name) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(&path, e)),
    };
    let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len > cap {
        return Err(Error::UnsafeState {
            path,
            what: format!("{len} bytes, more than the {cap} bytes the updater ever writes there"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| Error::io(&path, e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::UnsafeState { path, what: format!("grew past {cap} bytes while being read") });
    }
    Ok(Some(bytes))
}

/// Replaces the state file `name` in `dir` with `bytes`, all or nothing: an exclusively created temp
/// file in `dir`, fsynced and renamed over `name` (replacing the name itself, never what a link
/// there points to), then `dir` fsynced.
pub(crate) fn write_file(dir: &Dir, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.display_path(name);
    let mut temp = dir.create_temp(TEMP_PREFIX, TEMP_SUFFIX).map_err(|e| state_error(&path, e))?;
    temp.file().write_all(bytes).map_err(|e| Error::io(&path, e))?;
    temp.persist(name).map_err(|e| state_error(&path, e))?;
    dir.sync().map_err(|e| Error::io(dir.path(), e))
}

/// Removes the file `name` from `dir` (a link there is removed itself); missing is fine.
pub(crate) fn remove_file(dir: &Dir, name: &str) -> Result<()> {
    match dir.remove_file(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(dir.display_path(name), e)),
        _ => Ok(()),
    }
}

/// A path naming `name` inside the open directory `dir` for path-taking APIs ([`Dir::fd_path`]): it
/// stays inside `dir` even if the folder's path was swapped for a symlink since it was opened.
pub(crate) fn pinned_path(dir: &Dir, name: &str) -> PathBuf {
    dir.fd_path().join(name)
}
