//! `mf add` and `mf rm` as library calls: files from disk added to an archive in place (directories
//! by the rules of `mf pack`), paths removed, one crash-safe commit each, then compaction when dead
//! space passes [`COMPACT_DEAD_SHARE`](crate::edit::COMPACT_DEAD_SHARE).

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::edit::{CommitReport, CompactReport, Editor};
use crate::pack::{collect_inputs, has_extension, DirPackOptions, PackError, PackInput};
use crate::path::entry_path_from_fs;
use crate::writer::{Compression, EntryOptions};

/// How [`add_paths`] turns files into entries.
#[derive(Debug, Clone, Default)]
pub struct AddOptions {
    /// Entry paths are the given paths relative to this directory (`-C DIR`); the given paths are
    /// taken relative to it too. Empty: the current directory.
    pub base: PathBuf,
    /// Only files whose content (size, then xxh3 of the content against the entry's recorded hash)
    /// or mode differs from the entry at that path are written.
    pub update: bool,
    /// The rules directories are walked by (as `mf pack`: excludes, store-extensions, mtimes,
    /// symlinks leaving the directory refused unless followed). Its order and writer settings are
    /// not used: new entries follow in the walk's order, compressed at the archive's level.
    pub pack: DirPackOptions,
    /// Never compact after the edit, whatever the dead space.
    pub no_compact: bool,
}

/// What [`add_paths`] or [`remove_paths`] did.
#[derive(Debug, Clone, Default)]
pub struct EditReport {
    /// Entries that did not exist before.
    pub added: Vec<String>,
    /// Entries whose content was replaced.
    pub replaced: Vec<String>,
    /// Entries left as they were (`--update`: content unchanged).
    pub unchanged: Vec<String>,
    /// Entries removed.
    pub removed: Vec<String>,
    /// The commit.
    pub commit: CommitReport,
    /// The compaction that followed, when dead space passed the threshold.
    pub compacted: Option<CompactReport>,
    /// Things in walked directories that are not regular files, left out.
    pub skipped: Vec<PathBuf>,
}

/// Adds (or replaces) the files and directories `paths` in the archive `archive`, in place.
pub fn add_paths(archive: &Path, paths: &[PathBuf], options: &AddOptions) -> Result<EditReport, PackError> {
    let mut editor = Editor::open(archive)?;
    let mut report = EditReport::default();
    let inputs = collect_paths(archive, paths, options, &mut report.skipped)?;
    for input in &inputs {
        let mut file = crate::fs::open_regular(&input.fs_path).map_err(|error| io(&input.fs_path, error))?;
        let size = file.metadata().map_err(|error| io(&input.fs_path, error))?.len();
        let existing = editor.archive().get(&input.entry_path).map(|e| (e.size(), e.content_hash(), e.mode()));
        if let Some((old_size, old_hash, old_mode)) = existing.filter(|_| options.update) {
            if old_size == size && old_mode == input.options.mode {
                // Hashed through the handle `put` reads from, so the file compared is the file stored.
                let unchanged = hash_prefix(&mut file, size).map_err(|error| io(&input.fs_path, error))? == old_hash;
                if unchanged {
                    report.unchanged.push(input.entry_path.clone());
                    continue;
                }
                file.rewind().map_err(|error| io(&input.fs_path, error))?;
            }
        }
        editor.put(&input.entry_path, &input.options, &mut file, size)?;
        let list = if existing.is_some() { &mut report.replaced } else { &mut report.added };
        list.push(input.entry_path.clone());
    }
    finish(editor, options.no_compact, report)
}

/// The files `paths` name (each a file, or a directory walked by the pack rules), as entries whose
/// paths are relative to `options.base`; what walked directories hold that is not a regular file goes
/// to `skipped`. Shared with the Panda3D editor (`mf_panda3d::edit`), so both formats take the same
/// paths by the same rules.
pub fn collect_paths(
    archive: &Path,
    paths: &[PathBuf],
    options: &AddOptions,
    skipped: &mut Vec<PathBuf>,
) -> Result<Vec<PackInput>, PackError> {
    let mut inputs = Vec::new();
    for path in paths {
        collect(path, archive, options, &mut inputs, skipped)?;
    }
    Ok(inputs)
}

/// Removes the entries `paths` (a directory path removes everything under it) in place.
pub fn remove_paths(archive: &Path, paths: &[String], no_compact: bool) -> Result<EditReport, PackError> {
    let mut editor = Editor::open(archive)?;
    let mut report = EditReport::default();
    for path in paths {
        report.removed.extend(editor.remove_tree(path.trim_end_matches('/'))?);
    }
    finish(editor, no_compact, report)
}

/// Commits, then compacts (under a fresh lock) when the new version's dead space passes the threshold.
fn finish(editor: Editor, no_compact: bool, mut report: EditReport) -> Result<EditReport, PackError> {
    let name = editor.archive().name().to_owned();
    report.commit = editor.commit()?;
    if !no_compact && report.commit.needs_compaction() {
        report.compacted = Some(Editor::open(&name)?.compact_in_place()?);
    }
    Ok(report)
}

/// The files `path` names (a file, or a directory walked by the pack rules), as entries.
fn collect(
    path: &Path,
    archive: &Path,
    options: &AddOptions,
    inputs: &mut Vec<PackInput>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), PackError> {
    let place = path.display().to_string();
    let fs_path = options.base.join(path);
    let metadata = std::fs::metadata(&fs_path).map_err(|error| io(&fs_path, error))?;
    // The base directory itself (`.`) adds its content at the archive's root.
    let is_base = path.components().all(|c| c == std::path::Component::CurDir);
    if metadata.is_dir() {
        let prefix = if is_base {
            String::new()
        } else {
            let entry_path = entry_path_from_fs(path).map_err(|error| PackError::BadPath { place, error })?;
            format!("{entry_path}/")
        };
        let collected = collect_inputs(std::slice::from_ref(&fs_path), Some(archive), &options.pack)?;
        skipped.extend(collected.skipped);
        inputs.extend(collected.inputs.into_iter().map(|mut input| {
            input.entry_path = format!("{prefix}{}", input.entry_path);
            input
        }));
        return Ok(());
    }
    let entry_path = entry_path_from_fs(path).map_err(|error| PackError::BadPath { place: place.clone(), error })?;
    if !metadata.is_file() {
        return Err(PackError::NotRegular { place, path: fs_path });
    }
    if is_same_file(&metadata, archive) {
        let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, "an archive cannot be added to itself");
        return Err(io(&fs_path, error));
    }
    let mut entry_options = EntryOptions::from_metadata(&metadata, options.pack.keep_mtime);
    if has_extension(&entry_path, &options.pack.store_extensions) {
        entry_options.compression = Compression::Store;
    }
    inputs.push(PackInput { entry_path, fs_path, size_hint: metadata.len(), options: entry_options });
    Ok(())
}

fn is_same_file(metadata: &std::fs::Metadata, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(other).is_ok_and(|o| o.dev() == metadata.dev() && o.ino() == metadata.ino())
}

/// xxh3 of the first `size` bytes read from `file`.
fn hash_prefix(file: &mut std::fs::File, size: u64) -> std::io::Result<u64> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut reader = file.take(size);
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.digest())
}

fn io(path: &Path, error: std::io::Error) -> PackError {
    PackError::Io { path: path.to_owned(), error }
}
