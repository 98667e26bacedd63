//! File-system access through directory handles, for code that writes into folders another process
//! may race (an extraction target, an install folder, an update's state folder).
//!
//! Checking a path and then using it by name is a race: between the check and the use, someone who
//! can write inside the folder can swap a checked directory for a symlink and redirect the write
//! anywhere. A [`Dir`] is an open directory; every operation on it names one component relative to
//! that handle and never follows a symlink at that component, so once a directory is open no path
//! above it is resolved again. Walking `a/b/c` opens `a`, then `b` in `a`, then `c` in `b`, each with
//! `O_NOFOLLOW|O_DIRECTORY`: a symlink anywhere on the way is an error (`ELOOP`/`ENOTDIR`), never a
//! detour.
//!
//! The building blocks, all relative to a handle:
//! - [`Dir::open`] (the caller's own path; symlinks in it are the caller's choice) and
//!   [`Dir::open_nofollow`] (refuses a symlink as the last component);
//! - [`Dir::open_dir`], [`Dir::open_path`] (component by component), [`Dir::create_dir`],
//!   [`Dir::create_dir_path`] (mkdir -p through handles);
//! - [`Dir::metadata`] (lstat), [`Dir::open_file`] (no-follow open of a regular file),
//!   [`Dir::create_file_exclusive`] (`O_CREAT|O_EXCL|O_NOFOLLOW`, e.g. a secret key);
//! - [`Dir::create_temp`] (a [`TempFile`] that is removed unless [`TempFile::persist`]ed, which
//!   fsyncs it and `renameat`s it into place), [`Dir::rename`], [`Dir::remove_file`],
//!   [`Dir::remove_dir`], [`Dir::sync`] (fsync the directory so renames are durable);
//! - [`Dir::remove_stale_temps`]: temp files of our own naming left by a killed run.
//!
//! ## Temp files and stale ones
//! A temp file is named `PREFIX<pid>.<random>SUFFIX` and holds an exclusive `flock` for as long as
//! its [`TempFile`] lives. A temp file is *stale* (and [`Dir::remove_stale_temps`] deletes it) only
//! when all of these hold: its name matches the caller's prefix and suffix, it is a regular file,
//! nobody holds its lock, and the process named in it is not alive. A concurrently running `mf` is
//! therefore never robbed of its temp file: it holds the lock (and the pid check covers the instant
//! between creating the file and locking it). The lock is released by the kernel when a process dies,
//! even by SIGKILL.
//!
//! ```
//! use mf_format::fs::Dir;
//! use std::io::Write;
//! # let scratch = tempfile::tempdir().unwrap();
//! let root = Dir::open(scratch.path())?;
//! let sub = root.create_dir_path("assets/textures")?; // no symlink followed on the way
//! let mut temp = sub.create_temp(".mf-extract.", "")?;
//! temp.file().write_all(b"pixels")?;
//! temp.persist("wall.raw")?; // fsync, renameat within `sub`
//! sub.sync()?;
//! assert_eq!(std::fs::read(scratch.path().join("assets/textures/wall.raw"))?, b"pixels");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

/// An open directory. Operations name one path component relative to it (or, for the `_path`
/// methods, a `/`-separated relative path walked one component at a time) and never follow a
/// symlink inside it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// Where the directory was when opened; only for error messages.
    path: PathBuf,
}

/// What is at a name, without following a symlink there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO, socket or device node.
    Other,
}

impl Kind {
    fn of(file_type: FileType) -> Kind {
        match file_type {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// A name for error messages ("a symlink", "a directory"...).
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Other => "a FIFO, socket or device",
        }
    }
}

/// The lstat of a name in a [`Dir`].
#[derive(Debug, Clone, Copy)]
pub struct Metadata {
    /// What it is.
    pub kind: Kind,
    /// Size in bytes.
    pub len: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `name` must be a single, ordinary path component: no `/`, not empty, `.` or `..`.
fn check_component(name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} is not a single path component", name)));
    }
    Ok(())
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC).union(OFlags::RDONLY);

impl Dir {
    /// Opens the directory at `path`. Symlinks in `path` itself are followed: the caller chose it.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let flags = OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(errno)?;
        Ok(Dir { fd, path: path.to_owned() })
    }

    /// Opens the directory at `path`, refusing it if its last component is a symlink (`ELOOP`).
    pub fn open_nofollow(path: impl AsRef<Path>) -> io::Result<Dir> {
        let path = path.as_ref();
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).map_err(errno)?;
        Ok(Dir { fd, path: path.to_owned() })
    }

    /// The path this handle was opened at (joined with the components walked from it); for
    /// messages only: the handle keeps referring to the same directory if it is moved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path()` joined with `name`, for messages.
    pub fn display_path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// A second handle to the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    /// Opens the subdirectory `name` (one component), refusing a symlink.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<Dir> {
        let name = name.as_ref();
        check_component(name)?;
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()).map_err(errno)?;
        Ok(Dir { fd, path: self.path.join(name) })
    }

    /// Opens the subdirectory at the `/`-separated relative `path`, one component at a time, never
    /// following a symlink. An empty path gives a second handle to `self`.
    pub fn open_path(&self, path: &str) -> io::Result<Dir> {
        let mut dir = self.try_clone()?;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            dir = dir.open_dir(component)?;
        }
        Ok(dir)
    }

    /// Creates the subdirectory `name` with mode 0777 (less the umask). `AlreadyExists` if anything
    /// is at that name.
    pub fn create_dir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_component(name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)).map_err(errno)
    }

    /// Opens the subdirectory at `path`, creating missing components, one at a time, never
    /// following a symlink (a symlink or file in the way is an error).
    pub fn create_dir_path(&self, path: &str) -> io::Result<Dir> {
        let mut dir = self.try_clone()?;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            match dir.create_dir(component) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            dir = dir.open_dir(component)?;
        }
        Ok(dir)
    }

    /// lstat of `name`: `None` when nothing is there.
    pub fn metadata(&self, name: impl AsRef<OsStr>) -> io::Result<Option<Metadata>> {
        let name = name.as_ref();
        check_component(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Metadata {
                kind: Kind::of(FileType::from_raw_mode(stat.st_mode)),
                len: stat.st_size as u64,
                mode: stat.st_mode & 0o7777,
                uid: stat.st_uid,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Opens the regular file `name` for reading. A symlink is refused; a FIFO or device is refused
    /// without blocking (the open is non-blocking and the type is checked on the open file).
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let name = name.as_ref();
        check_component(name)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty()).map_err(errno)?;
        let file = regular_only(fd)?;
        Ok(file)
    }

    /// Creates the file `name` exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) with permission bits `mode`
    /// (exactly: the umask is overridden with fchmod), for writing. Fails if anything, even a
    /// dangling symlink, is at `name`.
    pub fn create_file_exclusive(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = name.as_ref();
        check_component(name)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode & 0o600)).map_err(errno)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for appending, creating it (permission bits `mode`, less the
    /// umask) if nothing is there. A symlink, FIFO or device at `name` is refused without blocking.
    pub fn open_file_append(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = name.as_ref();
        check_component(name)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::APPEND
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NONBLOCK
            | OFlags::NOCTTY;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)?;
        regular_only(fd)
    }

    /// A path naming this very directory (`/proc/self/fd/N`), for APIs that only take paths: the
    /// kernel resolves it to the open directory, not by walking the path it was opened at again, so
    /// a directory swapped for a symlink since is not followed. Valid while `self` lives; Linux only.
    pub fn fd_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// lstat of the directory itself (through its handle).
    pub fn own_metadata(&self) -> io::Result<Metadata> {
        let stat = rustix::fs::fstat(&self.fd).map_err(errno)?;
        Ok(Metadata {
            kind: Kind::of(FileType::from_raw_mode(stat.st_mode)),
            len: stat.st_size as u64,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
        })
    }

    /// Creates a temp file `PREFIX<pid>.<random>SUFFIX` (mode 0600, `O_EXCL|O_NOFOLLOW|O_CLOEXEC`)
    /// and locks it, so [`Dir::remove_stale_temps`] of another run leaves it alone.
    pub fn create_temp(&self, prefix: &str, suffix: &str) -> io::Result<TempFile> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let pid = std::process::id();
        for _ in 0..100 {
            let name = format!("{prefix}{pid}.{:08x}{suffix}", fastrand::u32(..));
            match rustix::fs::openat(&self.fd, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    let mut temp = TempFile { dir: self.try_clone()?, name, file: Some(File::from(fd)) };
                    rustix::fs::flock(temp.file(), FlockOperation::LockExclusive).map_err(errno)?;
                    return Ok(temp);
                }
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "could not find a free temp file name"))
    }

    /// Renames `from` in this directory to `to` in `to_dir` (`renameat`: replaces a file at `to`,
    /// the directory entry itself, never what a symlink there points to).
    pub fn rename(&self, from: impl AsRef<OsStr>, to_dir: &Dir, to: impl AsRef<OsStr>) -> io::Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        check_component(from)?;
        check_component(to)?;
        rustix::fs::renameat(&self.fd, from, &to_dir.fd, to).map_err(errno)
    }

    /// Removes the file (or symlink) `name`; never follows it.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_component(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(errno)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        let name = name.as_ref();
        check_component(name)?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(errno)
    }

    /// fsyncs the directory, making renames and creations in it durable. Some file systems refuse a
    /// directory fsync (`EINVAL`); that is reported as success since there is nothing more to do.
    pub fn sync(&self) -> io::Result<()> {
        match rustix::fs::fsync(&self.fd) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// `syncfs` of the file system the directory is on: every file written there so far is durable
    /// once this returns. One call replaces an fsync per file when many small files are written
    /// together (extraction), where each fsync is a journal commit of its own.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(errno)
    }

    /// Names in the directory (without `.` and `..`), with their type when the file system reports
    /// it cheaply (`None`: ask [`Dir::metadata`]).
    pub fn entries(&self) -> io::Result<Vec<(std::ffi::OsString, Option<Kind>)>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => None,
                other => Some(Kind::of(other)),
            };
            names.push((name.to_owned(), kind));
        }
        Ok(names)
    }

    /// Removes stale temp files named `PREFIX<pid>.<random>SUFFIX` (see the module doc for when one
    /// is stale) and returns how many were removed. Anything that is not ours, in use, or not a
    /// regular file is left alone.
    pub fn remove_stale_temps(&self, prefix: &str, suffix: &str) -> io::Result<usize> {
        let mut removed = 0;
        for (name, kind) in self.entries()? {
            let Some(text) = name.to_str() else { continue };
            let Some(pid) = temp_owner(text, prefix, suffix) else { continue };
            if kind.is_some_and(|k| k != Kind::File) || process_alive(pid) {
                continue;
            }
            if self.remove_if_unlocked(text)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Unlinks the regular file `name` if nobody holds its lock, holding the lock while unlinking
    /// and checking that the name still refers to the inode that was locked.
    fn remove_if_unlocked(&self, name: &str) -> io::Result<bool> {
        let file = match self.open_file(name) {
            Ok(file) => file,
            Err(e) if matches!(e.raw_os_error(), Some(libc_like::ENOENT | libc_like::ELOOP)) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(false), // not a regular file
            Err(e) => return Err(e),
        };
        if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(false); // in use
        }
        let locked = rustix::fs::fstat(&file).map_err(errno)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if now.st_dev == locked.st_dev && now.st_ino == locked.st_ino => {}
            _ => return Ok(false),
        }
        match self.remove_file(name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The few errno values compared above, without a libc dependency.
mod libc_like {
    pub const ENOENT: i32 = rustix::io::Errno::NOENT.raw_os_error();
    pub const ELOOP: i32 = rustix::io::Errno::LOOP.raw_os_error();
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The pid in a temp name `PREFIX<pid>.<8 hex>SUFFIX`, if `name` is one.
fn temp_owner(name: &str, prefix: &str, suffix: &str) -> Option<u32> {
    let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let (pid, random) = middle.split_once('.')?;
    if random.len() != 8 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether a process with this pid exists (in our pid namespace). Our own pid counts as alive.
fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(rustix::io::Errno::SRCH) => false,
        Err(_) => true, // EPERM: it exists, owned by someone else
    }
}

/// Turns an open fd into a `File` if it is a regular file; otherwise `InvalidInput` naming the kind.
/// Clears `O_NONBLOCK` (harmless for regular files, but callers expect ordinary blocking I/O).
fn regular_only(fd: OwnedFd) -> io::Result<File> {
    let stat = rustix::fs::fstat(&fd).map_err(errno)?;
    let kind = Kind::of(FileType::from_raw_mode(stat.st_mode));
    if kind != Kind::File {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {}, not a regular file", kind.describe())));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(errno)?;
    Ok(File::from(fd))
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO or device and
/// refusing them with a clear error (`InvalidInput`). Symlinks in `path` are followed: the caller
/// named it.
pub fn open_regular(path: impl AsRef<Path>) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = rustix::fs::open(path.as_ref(), flags, Mode::empty()).map_err(errno)?;
    regular_only(fd)
}

/// Opens `path` for reading and writing in place if it is a regular file, refusing a symlink as the
/// last component (`O_NOFOLLOW`: an archive changed in place is the file named, never a link's
/// target), and FIFOs and devices without blocking on them.
pub fn open_regular_for_update(path: impl AsRef<Path>) -> io::Result<File> {
    let flags = OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::NOFOLLOW;
    let fd = rustix::fs::open(path.as_ref(), flags, Mode::empty()).map_err(errno)?;
    regular_only(fd)
}

/// Takes an exclusive `flock` on `file` without waiting; `Ok(false)` when another holder has it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// A temp file in a [`Dir`], locked while it lives and removed on drop unless persisted.
#[derive(Debug)]
pub struct TempFile {
    dir: Dir,
    name: String,
    file: Option<File>,
}

impl TempFile {
    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("present until persisted")
    }

    /// Its name in its directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// fsyncs the file and renames it to `target` in its directory (replacing whatever file is there;
    /// the caller checks first if it must not). The directory itself is not synced: call
    /// [`Dir::sync`] once after a batch of renames.
    pub fn persist(self, target: impl AsRef<OsStr>) -> io::Result<()> {
        self.rename_into(target.as_ref(), true)
    }

    /// Renames the file to `target` like [`persist`](Self::persist) but without an fsync of its
    /// own: the caller has made its content durable already, with a
    /// [`Dir::sync_filesystem`] after it was completely written.
    pub fn persist_synced(self, target: impl AsRef<OsStr>) -> io::Result<()> {
        self.rename_into(target.as_ref(), false)
    }

    /// Closes the file (fsynced first when `sync`) and renames it to `target`; on failure the temp
    /// file is removed.
    fn rename_into(mut self, target: &OsStr, sync: bool) -> io::Result<()> {
        let file = self.file.take().expect("present until persisted");
        let synced = if sync { file.sync_all() } else { Ok(()) };
        let result = synced.and_then(|()| self.dir.rename(&self.name, &self.dir, target));
        if result.is_err() {
            let _ = self.dir.remove_file(&self.name);
        }
        result
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.dir.remove_file(&self.name);
        }
    }
}

/// The `/`-separated parents of a relative path, shallowest first (`a/b/c` gives `a`, `a/b`).
pub fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// fsyncs the directory at `path`, making renames in it durable. A file system that refuses a
/// directory fsync is not an error (nothing more can be done).
pub fn sync_dir(path: impl AsRef<Path>) -> io::Result<()> {
    Dir::open(path.as_ref())?.sync()
}

/// Writes `bytes` to `path` all or nothing, through [`crate::AtomicFile`] (temp file, fsync, rename,
/// directory fsync).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut out = crate::AtomicFile::create(path.as_ref())?;
    out.file().write_all(bytes)?;
    out.commit()
}

/// Reads up to `N` leading bytes of the file at `path` (fewer if it is shorter), refusing a
/// non-regular file without blocking. For sniffing magic numbers.
pub fn read_head<const N: usize>(path: impl AsRef<Path>) -> io::Result<([u8; N], usize)> {
    let mut file = open_regular(path)?;
    let mut head = [0u8; N];
    let mut got = 0;
    while got < N {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((head, got))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn walks_refuse_symlinks() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(scratch.path().join("real")).unwrap();
        symlink(outside.path(), scratch.path().join("link")).unwrap();
        let root = Dir::open(scratch.path()).unwrap();
        root.open_path("real").unwrap();
        assert!(root.open_path("link").is_err());
        assert!(root.create_dir_path("link/sub").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing created outside");
        assert!(Dir::open_nofollow(scratch.path().join("link")).is_err());
        assert!(root.open_dir("..").is_err());
        assert!(root.open_dir("a/b").is_err());
        assert_eq!(root.metadata("link").unwrap().unwrap().kind, Kind::Symlink);
        assert!(root.metadata("missing").unwrap().is_none());
    }

    #[test]
    fn temp_files_persist_or_vanish() {
        let scratch = tempfile::tempdir().unwrap();
        let root = Dir::open(scratch.path()).unwrap();
        let mut temp = root.create_temp(".t.", ".tmp").unwrap();
        temp.file().write_all(b"abandoned").unwrap();
        drop(temp);
        assert_eq!(root.entries().unwrap().len(), 0);
        let mut temp = root.create_temp(".t.", ".tmp").unwrap();
        temp.file().write_all(b"kept").unwrap();
        temp.persist("out").unwrap();
        assert_eq!(std::fs::read(scratch.path().join("out")).unwrap(), b"kept");
        assert_eq!(root.entries().unwrap().len(), 1);
    }

    #[test]
    fn stale_temps_are_removed_but_live_ones_kept() {
        let scratch = tempfile::tempdir().unwrap();
        let root = Dir::open(scratch.path()).unwrap();
        let live = root.create_temp(".t.", ".tmp").unwrap();
        // A dead process's temp file: pid far above pid_max (4194304), so never alive.
        std::fs::write(scratch.path().join(".t.999999999.0123abcd.tmp"), b"x").unwrap();
        std::fs::write(scratch.path().join(".t.999999999.not-ours.tmp"), b"x").unwrap();
        std::fs::write(scratch.path().join("unrelated"), b"x").unwrap();
        assert_eq!(root.remove_stale_temps(".t.", ".tmp").unwrap(), 1);
        let mut names: Vec<_> = root.entries().unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names.len(), 3);
        assert!(names.iter().any(|n| n == live.name()));
        // Our own live temp carries our pid, which is alive: kept even when unlocked by another fd.
        drop(live);
    }

    #[test]
    fn exclusive_create_refuses_links_and_sets_mode() {
        let scratch = tempfile::tempdir().unwrap();
        let root = Dir::open(scratch.path()).unwrap();
        symlink("/nonexistent/target", scratch.path().join("dangling")).unwrap();
        assert!(root.create_file_exclusive("dangling", 0o600).is_err());
        let file = root.create_file_exclusive("key", 0o600).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(root.create_file_exclusive("key", 0o600).is_err());
    }

    #[test]
    fn open_regular_refuses_fifos_without_blocking() {
        let scratch = tempfile::tempdir().unwrap();
        let fifo = scratch.path().join("fifo");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert_eq!(read_head::<8>(scratch.path().join("missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
        std::fs::write(scratch.path().join("short"), b"abc").unwrap();
        let (head, len) = read_head::<8>(scratch.path().join("short")).unwrap();
        assert_eq!(&head[..len], b"abc");
    }

    #[test]
    fn appends_and_fd_paths_stay_in_the_opened_directory() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(scratch.path().join("d")).unwrap();
        let root = Dir::open(scratch.path()).unwrap();
        let d = root.open_dir("d").unwrap();
        d.open_file_append("log", 0o600).unwrap().write_all(b"one").unwrap();
        d.open_file_append("log", 0o600).unwrap().write_all(b"two").unwrap();
        assert_eq!(std::fs::read(scratch.path().join("d/log")).unwrap(), b"onetwo");
        symlink(outside.path().join("planted"), scratch.path().join("d/link")).unwrap();
        assert!(d.open_file_append("link", 0o600).is_err(), "a symlink is not appended through");
        assert!(!outside.path().join("planted").exists());
        assert_eq!(d.own_metadata().unwrap().kind, Kind::Dir);
        // The directory is swapped for a symlink after it was opened: the fd path still names it.
        std::fs::rename(scratch.path().join("d"), scratch.path().join("moved")).unwrap();
        symlink(outside.path(), scratch.path().join("d")).unwrap();
        std::fs::write(d.fd_path().join("new"), b"x").unwrap();
        assert!(scratch.path().join("moved/new").exists());
        assert!(!outside.path().join("new").exists());
    }

    #[test]
    fn parents_are_shallowest_first() {
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(parents("a").count(), 0);
    }
}
