//! Replace-by-rename output files: a temp file beside the target that becomes the target only when
//! complete and synced. Until [`AtomicFile::commit`], an existing target is untouched; if the process
//! fails or is interrupted, the temp file is removed (on drop, or by [`remove_pending_temp_files`]
//! from a signal handler).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
pub struct AtomicFile {
    temp: Option<tempfile::NamedTempFile>,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates a temp file in the target's directory (so the final rename stays on one file system).
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let target = target.as_ref().to_owned();
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".mf-tmp").tempfile_in(&dir)?;
        register(temp.path());
        Ok(AtomicFile { temp: Some(temp), target })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn temp_path(&self) -> &Path {
        self.temp.as_ref().map(|t| t.path()).unwrap_or(&self.target)
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_mut().expect("temp file is present until commit").as_file_mut()
    }

    /// Syncs the data, gives the file the target's permissions (or 0644 for a new file), renames it
    /// over the target and syncs the directory, so after a crash either the old or the new file is
    /// there, complete.
    pub fn commit(mut self) -> io::Result<()> {
        let temp = self.temp.take().expect("temp file is present until commit");
        let mode = std::fs::metadata(&self.target).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
        temp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
        temp.as_file().sync_all()?;
        let temp_path = temp.path().to_owned();
        temp.persist(&self.target).map_err(|e| e.error)?;
        unregister(&temp_path);
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            // Directory fsync makes the rename durable; some file systems refuse it, which is harmless.
            if let Ok(dir) = OpenOptions::new().read(true).open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_owned();
            drop(temp); // NamedTempFile removes the file.
            unregister(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `remove_pending_temp_files` removes every pending temp file of the process, so the tests that
    /// create temp files must not run concurrently with the one that calls it.
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
