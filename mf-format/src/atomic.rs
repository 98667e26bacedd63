//! Replace-by-rename output files: a temp file beside the target that becomes the target only when
//! complete and synced. Until [`AtomicFile::commit`], an existing target is untouched; if the process
//! fails or is interrupted, the temp file is removed (on drop, or by [`remove_pending_temp_files`]
//! from a signal handler).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::fs::{Dir, Kind, TempFile};

static PENDING: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn register(path: &Path) {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    pending.get_or_insert_with(HashSet::new).insert(path.to_owned());
}

fn unregister(path: &Path) {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(set) = pending.as_mut() {
        set.remove(path);
    }
}

/// Deletes every temp file of an uncommitted [`AtomicFile`] in this process. For signal handlers
/// that are about to exit: it uses no allocation beyond what the registry holds and never blocks on
/// a lock held by a panicking thread.
pub fn remove_pending_temp_files() {
    let pending = match PENDING.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    if let Some(set) = pending.as_ref() {
        for path in set {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An output file written under a temporary name and renamed over the target on commit.
///
/// Only a regular file is ever replaced: if a symlink, directory, FIFO, socket or device node is at
/// the target, [`AtomicFile::create`] (and again [`AtomicFile::commit`]) refuse with
/// `InvalidInput`, so `-o /dev/null` or `-o some-link` never replaces the node or the link. Temp
/// files are named `.NAME.<pid>.<random>.mf-tmp`; [`AtomicFile::create_removing_stale`] also removes
/// stale ones of a killed earlier run (see [`crate::fs`] for the rule).
pub struct AtomicFile {
    temp: Option<TempFile>,
    target: PathBuf,
    temp_path: PathBuf,
}

/// Suffix of [`AtomicFile`] temp names.
const TEMP_SUFFIX: &str = ".mf-tmp";

/// Fails unless `name` in `dir` is missing or a regular file; returns its permission bits.
fn replaceable(dir: &Dir, name: &OsStr, target: &Path) -> io::Result<Option<u32>> {
    match dir.metadata(name)? {
        None => Ok(None),
        Some(meta) if meta.kind == Kind::File => Ok(Some(meta.mode)),
        Some(meta) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}: refusing to replace it with a regular file (only regular files are replaced)",
                target.display(),
                meta.kind.describe()
            ),
        )),
    }
}

impl AtomicFile {
    /// Creates a temp file in the target's directory (so the final rename stays on one file system).
    /// Fails if something other than a regular file is at `target`.
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        AtomicFile::create_in(target.as_ref(), false)
    }

    /// [`AtomicFile::create`], first removing stale temp files a killed earlier run left for the same
    /// target. This reads the whole directory, so it is for one-off outputs (`mf pack -o`), not for
    /// code writing many files into one directory.
    pub fn create_removing_stale(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        AtomicFile::create_in(target.as_ref(), true)
    }

    fn create_in(target: &Path, remove_stale: bool) -> io::Result<AtomicFile> {
        let target = target.to_owned();
        let dir_path = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let Some(name) = target.file_name() else {
            let what = format!("{}: not a file name", target.display());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        };
        let dir = Dir::open(&dir_path)?;
        replaceable(&dir, name, &target)?;
        let prefix = format!(".{}.", name.to_string_lossy());
        if remove_stale {
            let _ = dir.remove_stale_temps(&prefix, TEMP_SUFFIX);
        }
        let temp = dir.create_temp(&prefix, TEMP_SUFFIX)?;
        let temp_path = dir_path.join(temp.name());
        register(&temp_path);
        Ok(AtomicFile { temp: Some(temp), target, temp_path })
    }

    /// The path the file will have once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The temporary file's path (in the target's directory) until it is committed.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_mut().expect("temp file is present until commit").file()
    }

    /// Syncs the data, gives the file the target's permissions (or 0644 for a new file), renames it
    /// over the target and syncs the directory, so after a crash either the old or the new file is
    /// there, complete.
    pub fn commit(mut self) -> io::Result<()> {
        let mut temp = self.temp.take().expect("temp file is present until commit");
        let name = self.target.file_name().expect("checked in create").to_owned();
        let result = (|| {
            let mode = replaceable(temp.dir(), &name, &self.target)?.unwrap_or(0o644);
            temp.file().set_permissions(std::fs::Permissions::from_mode(mode))?;
            let dir = temp.dir().try_clone()?;
            temp.persist(&name)?; // fsync + renameat in the handle
            dir.sync()
        })();
        unregister(&self.temp_path);
        result
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            drop(temp); // TempFile removes the file.
            unregister(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `remove_pending_temp_files` removes every pending temp file of the process, so the tests
    /// that create temp files must not run at the same time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn commit_replaces_and_drop_leaves_nothing() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();

        let mut file = AtomicFile::create(&target).unwrap();
        file.file().write_all(b"abandoned").unwrap();
        drop(file);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut file = AtomicFile::create(&target).unwrap();
        file.file().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old", "target untouched before commit");
        file.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_to_replace_anything_but_a_regular_file() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real"), b"precious").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["link", "sub"] {
            let err = AtomicFile::create(dir.path().join(name)).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        }
        // Swapped in between create and commit: refused too, and the temp file is gone.
        let target = dir.path().join("late");
        let mut file = AtomicFile::create(&target).unwrap();
        file.file().write_all(b"new").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), &target).unwrap();
        assert!(file.commit().is_err());
        assert_eq!(std::fs::read(dir.path().join("real")).unwrap(), b"precious");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }

    #[test]
    fn pending_temp_files_can_be_removed() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let file = AtomicFile::create(dir.path().join("x")).unwrap();
        let temp = file.temp_path().to_owned();
        assert!(temp.exists());
        remove_pending_temp_files();
        assert!(!temp.exists());
        drop(file);
    }
}
