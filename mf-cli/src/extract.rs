//! `mf extract`: write entries under a directory, never outside it, never over existing files
//! unless `--force`, each file complete or absent.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use mf_format::{unpack_in, UnpackEntry, UnpackError, UnpackOptions};
use mf_panda3d::{AnyArchive as Archive, AnyEntry as Entry};

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
            return Err(mf_panda3d::Error::PasswordRequired {
                file: args.archive.clone(),
                entry: encrypted.path().to_owned(),
            }
            .into());
        }
    }

    let entries: Vec<UnpackEntry> = selected
        .iter()
        .map(|e| UnpackEntry { path: e.path().to_owned(), size: e.size(), mode: e.mode(), mtime: e.mtime() })
        .collect();
    let total = entries.iter().map(|e| e.size).sum();
    let bar = crate::progress::bytes(total, "extracting");
    let open = |entry: &UnpackEntry| {
        let found = archive.get(&entry.path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        archive.reader(&found).map_err(io::Error::from)
    };
    let options = UnpackOptions { overwrite: args.force };
    let report = unpack_in(&args.dir, &entries, options, open, &|size| bar.inc(size)).map_err(|e| match e {
        UnpackError::Exists { .. } => anyhow::anyhow!("{e} (use --force to replace it)"),
        // unpack_in checks every path (rules, duplicates, a file that is also a directory: `a` and
        // `a/b`) before writing anything; its message names the entries, this names the archive.
        UnpackError::Path(_) => anyhow::anyhow!("{}: {e}", args.archive.display()),
        other => other.into(),
    });
    bar.finish_and_clear();
    let report = report?;
    for failure in &report.failures {
        eprintln!("mf: {}", crate::terminal::escaped(&format!("{failure:#}")));
    }
    if !report.failures.is_empty() {
        eprintln!("mf: {} of {} entries were not extracted", entries.len() - report.written, entries.len());
    }
    Ok(report.failures.is_empty())
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
