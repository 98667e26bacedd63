//! `mf extract`: write entries under a directory, never outside it, never over existing files
//! unless `--force`, each file complete or absent (the rules live in `mf_panda3d::extract`).

use std::path::PathBuf;

use clap::Args;
use mf_format::{UnpackError, UnpackOptions};
use mf_panda3d::ExtractError;

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
    let selected = mf_panda3d::select(&archive, &args.paths)?;
    let total = selected.iter().map(|e| e.size()).sum();
    let bar = crate::progress::bytes(total, "extracting");
    let options = UnpackOptions { overwrite: args.force };
    let report =
        mf_panda3d::extract(&archive, &selected, &args.dir, options, &|size| bar.inc(size)).map_err(|e| match e {
            ExtractError::Unpack(e @ UnpackError::Exists { .. }) => anyhow::anyhow!("{e} (use --force to replace it)"),
            // unpack_in checks every path (rules, duplicates, a file that is also a directory: `a` and
            // `a/b`) before writing anything; its message names the entries, this names the archive.
            ExtractError::Unpack(e @ UnpackError::Path(_)) => anyhow::anyhow!("{}: {e}", args.archive.display()),
            // Unwrapped so that `main` sees the library's own error (its hint for a missing password).
            ExtractError::Unpack(other) => other.into(),
            ExtractError::Archive(other) => other.into(),
        });
    bar.finish_and_clear();
    let report = report?;
    for failure in &report.failures {
        eprintln!("mf: {}", crate::terminal::escaped(&format!("{failure:#}")));
    }
    if !report.failures.is_empty() {
        eprintln!("mf: {} of {} entries were not extracted", selected.len() - report.written, selected.len());
    }
    Ok(report.failures.is_empty())
}
