//! `mf extract`: write entries under a directory, never outside it, never over existing files
//! unless `--force`, each file complete or absent.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use mf_format::{AnyArchive as Archive, AnyEntry as Entry};
use rayon::prelude::*;

use crate::archive_cmds::{open_any, PasswordArg};
use crate::Outcome;

#[derive(Args)]
pub struct ExtractArgs {
    archive: PathBuf,
    /// Entries to extract: exact paths or directories inside the archive (default: all).
    paths: Vec<String>,
    /// Directory to extract into (created if missing).
    #[arg(short = 'C', long = "directory", value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Replace files that already exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    password: PasswordArg,
}

pub fn run(args: ExtractArgs) -> Outcome {
    let archive = open_any(&args.archive, &args.password)?;
    let selected = select(&archive, &args.paths)?;
    if args.password.password.is_none() {
        if let Some(encrypted) = selected.iter().find(|e| e.is_encrypted()) {
            return Err(mf_format::Error::PasswordRequired {
                file: args.archive.clone(),
                entry: encrypted.path().to_owned(),
            }
            .into());
        }
    }

    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let root = args.dir.canonicalize().with_context(|| args.dir.display().to_string())?;

    // Check everything that could stop us before writing anything.
    let mut dirs = DirMaker::new(root.clone());
    for entry in &selected {
        let target = root.join(entry.path());
        if let Some(existing) = existing_kind(&target)? {
            if existing.is_dir() {
                bail!("{}: a directory is in the way of entry '{}'", target.display(), entry.path());
            }
            if !args.force {
                bail!("{}: already exists (use --force to replace it)", target.display());
            }
        }
        dirs.check(entry.path())?;
    }
    for entry in &selected {
        dirs.create(entry.path())?;
    }

    let total = selected.iter().map(|e| e.size()).sum();
    let bar = crate::progress::bytes(total, "extracting");
    let failures: Vec<anyhow::Error> = selected
        .par_iter()
        .filter_map(|entry| {
            let result = extract_one(&archive, entry, &root.join(entry.path()));
            bar.inc(entry.size());
            result.err()
        })
        .collect();
    bar.finish_and_clear();
    for failure in &failures {
        eprintln!("mf: {}", crate::terminal::escaped(&format!("{failure:#}")));
    }
    if !failures.is_empty() {
        eprintln!("mf: {} of {} entries were not extracted", failures.len(), selected.len());
    }
    Ok(failures.is_empty())
}

/// Entries matching the requested paths (an exact entry, or everything under a directory).
fn select<'a>(archive: &'a Archive, paths: &[String]) -> anyhow::Result<Vec<Entry<'a>>> {
    if paths.is_empty() {
        return Ok(archive.entries_by_path().collect());
    }
    let mut chosen = Vec::new();
    let mut seen = HashSet::new();
    for path in paths {
        let path = path.trim_end_matches('/');
        let mut matched = false;
        if let Some(entry) = archive.get(path) {
            matched = true;
            if seen.insert(entry.index()) {
                chosen.push(entry);
            }
        } else {
            let prefix = format!("{path}/");
            let start = archive.lower_bound(&prefix);
            for position in start.. {
                match archive.lookup_entry(position) {
                    Some(entry) if entry.path().starts_with(&prefix) => {
                        matched = true;
                        if seen.insert(entry.index()) {
                            chosen.push(entry);
                        }
                    }
                    _ => break,
                }
            }
        }
        if !matched {
            bail!("{}: no entry or directory '{path}'", archive.name().display());
        }
    }
    Ok(chosen)
}

fn existing_kind(path: &Path) -> anyhow::Result<Option<fs::FileType>> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata.file_type())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Creates the directories entries need, refusing to pass through anything that is not a real
/// directory under the root (a symlink planted there could otherwise redirect writes outside it).
struct DirMaker {
    root: PathBuf,
    known: HashSet<String>,
}

impl DirMaker {
    fn new(root: PathBuf) -> Self {
        DirMaker { root, known: HashSet::new() }
    }

    fn parents(path: &str) -> impl Iterator<Item = &str> {
        path.match_indices('/').map(move |(i, _)| &path[..i])
    }

    fn check(&mut self, entry_path: &str) -> anyhow::Result<()> {
        for dir in Self::parents(entry_path) {
            if self.known.contains(dir) {
                continue;
            }
            let full = self.root.join(dir);
            match existing_kind(&full)? {
                Some(kind) if kind.is_dir() => {
                    self.known.insert(dir.to_owned());
                }
                Some(_) => bail!(
                    "{}: exists and is not a directory (refusing to extract '{entry_path}' through it)",
                    full.display()
                ),
                None => {}
            }
        }
        Ok(())
    }

    fn create(&mut self, entry_path: &str) -> anyhow::Result<()> {
        for dir in Self::parents(entry_path) {
            if self.known.contains(dir) {
                continue;
            }
            let full = self.root.join(dir);
            match fs::create_dir(&full) {
                Ok(()) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists
                        && existing_kind(&full)?.is_some_and(|k| k.is_dir()) => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", full.display())),
            }
            self.known.insert(dir.to_owned());
        }
        Ok(())
    }
}

/// Streams one entry to a temp file beside its target, verifying the checksum on the way, then
/// renames it into place. A damaged entry leaves no file.
fn extract_one(archive: &Archive, entry: &Entry<'_>, target: &Path) -> anyhow::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".mf-extract.")
        .tempfile_in(parent)
        .with_context(|| format!("creating a temp file in {}", parent.display()))?;
    {
        let mut out = BufWriter::with_capacity(256 << 10, temp.as_file_mut());
        let mut reader = archive.reader(entry)?;
        io::copy(&mut reader, &mut out)
            .with_context(|| format!("{}: entry '{}'", archive.name().display(), entry.path()))?;
        out.flush().with_context(|| format!("writing {}", target.display()))?;
    }
    let file: &File = temp.as_file();
    file.set_permissions(fs::Permissions::from_mode(entry.mode() & 0o777))?;
    if let Some(mtime) = entry.mtime() {
        let time = mtime_to_system(mtime);
        file.set_modified(time).with_context(|| format!("setting the mtime of {}", target.display()))?;
    }
    temp.persist(target).map_err(|e| e.error).with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

fn mtime_to_system(mtime: mf_format::Mtime) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    if mtime.secs >= 0 {
        UNIX_EPOCH + Duration::new(mtime.secs as u64, mtime.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(mtime.secs.unsigned_abs()) + Duration::from_nanos(u64::from(mtime.nanos))
    }
}
