//! `mf add`, `mf rm`, `mf compact`: archives changed in place. The library does the work
//! (`mf_format::inplace`, `mf_format::edit`, or `mf_panda3d::edit` for Panda3D multifiles); this
//! parses, calls it once and prints.

use std::path::{Path, PathBuf};

use clap::Args;
use mf_format::inplace::{AddOptions, EditReport};
use mf_format::DirPackOptions;
use mf_panda3d::ArchiveFormat;
use serde::Serialize;

use crate::{JsonFlag, Outcome};

#[derive(Args)]
pub struct AddArgs {
    /// The archive to change in place.
    archive: PathBuf,
    /// Files or directories to add (directories recursively, by the rules of `mf pack`); their
    /// entry paths are these paths, relative to -C DIR.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Take PATHs relative to DIR (entry paths are relative to it).
    #[arg(short = 'C', value_name = "DIR")]
    directory: Option<PathBuf>,
    /// Only write files whose content (or mode) differs from the archive's entry.
    #[arg(long)]
    update: bool,
    /// Leave out paths matching this glob inside added directories (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Also store these extensions uncompressed (comma-separated).
    #[arg(long, value_name = "EXT,...", value_delimiter = ',')]
    store: Vec<String>,
    /// Record modification times.
    #[arg(long)]
    keep_mtime: bool,
    /// Pack the targets of symlinks that lead outside an added directory (refused otherwise).
    #[arg(long)]
    follow_symlinks: bool,
    /// Do not compact afterwards even when dead space passes half of the file.
    #[arg(long)]
    no_compact: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct RmArgs {
    /// The archive to change in place.
    archive: PathBuf,
    /// Entry paths to remove (a directory path removes everything under it).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    /// Do not compact afterwards even when dead space passes half of the file.
    #[arg(long)]
    no_compact: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct CompactArgs {
    /// The archive to rewrite without holes.
    archive: PathBuf,
    /// Write the compacted archive here instead of replacing ARCHIVE.
    #[arg(short, long, value_name = "OUT.mf")]
    output: Option<PathBuf>,
    #[command(flatten)]
    json: JsonFlag,
}

fn is_panda3d(archive: &Path) -> bool {
    ArchiveFormat::detect(archive).ok().flatten() == Some(ArchiveFormat::Panda3d)
}

pub fn add(args: AddArgs) -> Outcome {
    let options = AddOptions {
        base: args.directory.unwrap_or_default(),
        update: args.update,
        pack: DirPackOptions {
            store_extensions: args.store,
            excludes: args.exclude,
            keep_mtime: args.keep_mtime,
            follow_symlinks: args.follow_symlinks,
            ..DirPackOptions::default()
        },
        no_compact: args.no_compact,
    };
    let report = if is_panda3d(&args.archive) {
        mf_panda3d::edit::add_paths(&args.archive, &args.paths, &options)?
    } else {
        mf_format::inplace::add_paths(&args.archive, &args.paths, &options)?
    };
    for path in &report.skipped {
        eprintln!("mf: skipping {} (not a regular file)", path.display());
    }
    print_report(&args.archive, &report, args.json.json)
}

pub fn rm(args: RmArgs) -> Outcome {
    let report = if is_panda3d(&args.archive) {
        mf_panda3d::edit::remove_paths(&args.archive, &args.paths, args.no_compact)?
    } else {
        mf_format::inplace::remove_paths(&args.archive, &args.paths, args.no_compact)?
    };
    print_report(&args.archive, &report, args.json.json)
}

#[derive(Serialize)]
struct CompactJson {
    archive: String,
    output: String,
    entries: usize,
    old_size: u64,
    new_size: u64,
}

pub fn compact(args: CompactArgs) -> Outcome {
    let output = args.output.as_ref().unwrap_or(&args.archive);
    let report = match &args.output {
        _ if is_panda3d(&args.archive) => mf_panda3d::edit::compact_file(&args.archive, output)?,
        Some(output) => mf_format::compact(&mf_format::Archive::open(&args.archive)?, output)?,
        None => mf_format::edit::compact_file(&args.archive)?,
    };
    let json = CompactJson {
        archive: args.archive.display().to_string(),
        output: output.display().to_string(),
        entries: report.entries,
        old_size: report.old_len,
        new_size: report.new_len,
    };
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        say!("compacted {} entries: {} -> {} bytes ({})", json.entries, json.old_size, json.new_size, json.output)?;
    }
    Ok(true)
}

#[derive(Serialize)]
struct EditJson<'a> {
    archive: String,
    added: &'a [String],
    replaced: &'a [String],
    unchanged: &'a [String],
    removed: &'a [String],
    bytes_written: u64,
    bytes_appended: u64,
    holes_reused: u64,
    frames_reused: u64,
    dead_bytes: u64,
    file_size: u64,
    generation: u64,
    compacted: bool,
}

fn print_report(archive: &Path, report: &EditReport, json: bool) -> Outcome {
    let commit = &report.commit;
    let out = EditJson {
        archive: archive.display().to_string(),
        added: &report.added,
        replaced: &report.replaced,
        unchanged: &report.unchanged,
        removed: &report.removed,
        bytes_written: commit.bytes_written,
        bytes_appended: commit.bytes_appended,
        holes_reused: commit.holes_reused,
        frames_reused: commit.frames_reused,
        dead_bytes: report.compacted.map_or(commit.dead_bytes, |_| 0),
        file_size: report.compacted.map_or(commit.file_len, |c| c.new_len),
        generation: commit.generation,
        compacted: report.compacted.is_some(),
    };
    if json {
        say!("{}", serde_json::to_string_pretty(&out)?)?;
        return Ok(true);
    }
    let lines =
        [("added", out.added), ("replaced", out.replaced), ("unchanged", out.unchanged), ("removed", out.removed)];
    for (what, paths) in lines {
        for path in paths {
            say!("{what:<9} {}", crate::terminal::escaped(path))?;
        }
    }
    say!(
        "wrote {} bytes ({} appended, {} into holes, {} frames kept), generation {}, {} dead bytes",
        out.bytes_written,
        out.bytes_appended,
        out.holes_reused,
        out.frames_reused,
        out.generation,
        out.dead_bytes
    )?;
    if let Some(compacted) = report.compacted {
        say!("compacted: {} -> {} bytes (dead space was past half of the file)", compacted.old_len, compacted.new_len)?;
    }
    Ok(true)
}
