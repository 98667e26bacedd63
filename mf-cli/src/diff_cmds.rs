//! `mf diff`, `mf apply` and `mf patch-info`: subfile-wise patches between archives (mf-diff).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args};
use mf_diff::{Change, DiffOptions, EntryReport, PatchReport};
use serde_json::json;

use crate::convert::{convert_to_file, Target};
use crate::terminal::escaped;
use crate::{progress, JsonFlag, Outcome};

/// Format of `mf apply`'s output.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplyFormat {
    /// An mf archive.
    Mf,
    /// A Panda3D multifile, as `mf convert --to panda3d` writes it.
    Panda3d,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The old archive (mf or Panda3D multifile, or any file).
    old: PathBuf,
    /// The new archive (mf or Panda3D multifile, or any file).
    new: PathBuf,
    /// Where to write the patch.
    #[arg(short, long, value_name = "PATCH", required_unless_present = "stat")]
    output: Option<PathBuf>,
    /// Only report what changed and what the patch would cost; write nothing.
    #[arg(long)]
    stat: bool,
    /// Memory budget for entries diffed at once, e.g. 512M or 2G (default: half of available RAM).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_limit)]
    memory_limit: Option<u64>,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["output", "in_place"])))]
pub struct ApplyArgs {
    patch: PathBuf,
    /// The archive (or file) the patch was made from.
    old: PathBuf,
    /// Where to write the result.
    #[arg(short, long, value_name = "NEW")]
    output: Option<PathBuf>,
    /// Replace OLD with the result, once it is complete and verified. If OLD is a symlink, the file
    /// it points to is replaced and the link kept.
    #[arg(long)]
    in_place: bool,
    /// Format of the result (default: the new archive's format, as recorded in the patch).
    #[arg(long, value_enum)]
    format: Option<ApplyFormat>,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct PatchInfoArgs {
    patch: PathBuf,
    #[command(flatten)]
    json: JsonFlag,
}

pub fn parse_memory_limit(text: &str) -> Result<u64, String> {
    mf_diff::parse_size(text).ok_or_else(|| format!("'{text}' is not a size (examples: 512M, 2G, 1048576)"))
}

/// The first bytes of `path` (empty when unreadable: the diff or apply then reports the error).
fn head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::new();
    let _ = std::fs::File::open(path).and_then(|f| f.take(8).read_to_end(&mut head));
    head
}

/// Whether `path` starts like a Panda3D multifile.
fn is_panda3d(path: &Path) -> bool {
    mf_format::panda3d::looks_like_multifile(&head(path))
}

/// Whether `path` starts like an archive of either format (else diff makes a plain patch).
fn is_archive(path: &Path) -> bool {
    let head = head(path);
    head.starts_with(&mf_format::format::MAGIC) || mf_format::panda3d::looks_like_multifile(&head)
}

/// The canonical mf conversion of the Panda3D multifile at `path`, written into `dir`.
fn canonical_mf(path: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let archive = mf_format::AnyArchive::open(path)?;
    if let Some(encrypted) = archive.entries_by_path().find(|e| e.is_encrypted()) {
        return Err(anyhow!(
            "{}: entry '{}' is encrypted; diff and apply do not take a password (decrypt it with mf convert first)",
            path.display(),
            encrypted.path()
        ));
    }
    let out = dir.join(name);
    convert_to_file(&archive, &out, Target::Mf).with_context(|| format!("converting {} to mf", path.display()))?;
    Ok(out)
}

pub fn diff(args: DiffArgs) -> Outcome {
    // Between two archives, a Panda3D side is diffed as its canonical mf conversion (the header
    // records it); anything else is a plain patch of the files as they are.
    let both_archives = is_archive(&args.old) && is_archive(&args.new);
    let old_panda3d = both_archives && is_panda3d(&args.old);
    let new_panda3d = both_archives && is_panda3d(&args.new);
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let old = if old_panda3d { canonical_mf(&args.old, scratch.path(), "old.mf")? } else { args.old.clone() };
    let new = if new_panda3d { canonical_mf(&args.new, scratch.path(), "new.mf")? } else { args.new.clone() };
    let options = DiffOptions {
        memory_limit: args.memory_limit.unwrap_or_else(mf_diff::default_memory_limit),
        old_is_panda3d: old_panda3d,
        new_is_panda3d: new_panda3d,
    };
    let total = mf_diff::progress_total(&old, &new)?;
    let bar = progress::bytes(total, "diffing");
    let tick = |n: u64| bar.inc(n);
    let mut report = match &args.output {
        Some(patch) if !args.stat => mf_diff::diff_files(&old, &new, patch, &options, &tick)?,
        _ => mf_diff::diff_stat(&old, &new, &options, &tick)?,
    };
    // The patch rebuilds NEW's canonical mf conversion: NEW itself only in content.
    report.exact &= !new_panda3d;
    bar.finish_and_clear();
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&report_json(&report, true, options.panda3d_flags()))?)?;
    } else {
        print_report(&report, true)?;
        if let Some(patch) = args.output.as_ref().filter(|_| !args.stat) {
            say!("wrote {}", patch.display())?;
        }
    }
    Ok(true)
}

pub fn apply(args: ApplyArgs) -> Outcome {
    let (old_path, target) = match (&args.output, args.in_place) {
        (Some(out), false) => (args.old.clone(), out.clone()),
        // A symlink is followed: the file it points to is read, patched and replaced, and the link
        // stays (like `sed -i --follow-symlinks`). Replacing the link itself by a regular file would
        // leave the real archive old while reporting success.
        (None, true) => {
            let real = std::fs::canonicalize(&args.old).with_context(|| format!("resolving {}", args.old.display()))?;
            (real.clone(), real)
        }
        _ => return Err(anyhow!("give either -o NEW or --in-place")),
    };
    let header =
        *mf_diff::Patch::open(&args.patch).with_context(|| format!("applying {}", args.patch.display()))?.header();
    let flags = header.flags;
    let archive_patch = header.kind == mf_diff::wire::KIND_ARCHIVE;
    let old_panda3d = flags & mf_diff::wire::FLAG_OLD_PANDA3D != 0;
    let new_panda3d = flags & mf_diff::wire::FLAG_NEW_PANDA3D != 0;
    let format = args.format.unwrap_or(if new_panda3d { ApplyFormat::Panda3d } else { ApplyFormat::Mf });
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let old = match (old_panda3d, archive_patch && is_panda3d(&old_path)) {
        (true, true) => canonical_mf(&old_path, scratch.path(), "old.mf")?,
        (false, false) => old_path.clone(),
        (true, false) => {
            return Err(anyhow!(
                "{} was made from a Panda3D multifile, but {} is not one: wrong base",
                args.patch.display(),
                old_path.display()
            ))
        }
        (false, true) => {
            return Err(anyhow!(
                "{} was made from an mf archive, but {} is a Panda3D multifile: wrong base",
                args.patch.display(),
                old_path.display()
            ))
        }
    };
    // A Panda3D result is rebuilt as mf first, checked, then converted; the target is replaced
    // only by the finished conversion.
    let rebuilt = match format {
        ApplyFormat::Mf => target.clone(),
        ApplyFormat::Panda3d => scratch.path().join("new.mf"),
    };
    let total = estimate_size(&old);
    let bar = progress::bytes(total, "applying");
    let outcome = mf_diff::apply_patch(&args.patch, &old, &rebuilt, &|n| bar.inc(n))
        .with_context(|| format!("applying {}", args.patch.display()))?;
    bar.finish_and_clear();
    let mut outcome = outcome;
    if format == ApplyFormat::Panda3d {
        let archive = mf_format::AnyArchive::open(&rebuilt)?;
        convert_to_file(&archive, &target, Target::Panda3d)
            .with_context(|| format!("writing {} as a Panda3D multifile", target.display()))?;
        outcome.len = std::fs::metadata(&target).with_context(|| format!("reading {}", target.display()))?.len();
        // Byte-identity is only promised for mf targets written by mf.
        outcome.exact = false;
    }
    if format == ApplyFormat::Mf && new_panda3d {
        // Identical to the canonical conversion of NEW, not to NEW itself.
        outcome.exact = false;
    }
    if args.json.json {
        let value = json!({
            "output": target.display().to_string(),
            "entries": outcome.entries,
            "bytes": outcome.len,
            "byte_identical": outcome.exact,
        });
        say!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        let how = if outcome.exact { "byte-identical to the patch's target" } else { "identical in content" };
        say!("wrote {} ({} bytes, {how})", target.display(), outcome.len)?;
    }
    Ok(true)
}

fn estimate_size(old: &Path) -> u64 {
    mf_format::Archive::open(old)
        .map(|a| a.total_size())
        .or_else(|_| std::fs::metadata(old).map(|m| m.len()))
        .unwrap_or(0)
}

pub fn patch_info(args: PatchInfoArgs) -> Outcome {
    let patch = mf_diff::Patch::open(&args.patch)?;
    let flags = patch.header().flags;
    let mut report = patch.report();
    report.exact &= flags & mf_diff::wire::FLAG_NEW_PANDA3D == 0;
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&report_json(&report, false, flags))?)?;
    } else {
        print_report(&report, false)?;
    }
    Ok(true)
}

fn entry_name(entry: &EntryReport) -> String {
    match (&entry.path, &entry.old_path, entry.old_index) {
        (Some(path), Some(old), _) if entry.change == Change::Renamed => {
            format!("{} => {}", escaped(old), escaped(path))
        }
        (Some(path), _, _) => escaped(path).into_owned(),
        (None, Some(old), _) => escaped(old).into_owned(),
        (None, None, Some(index)) => format!("(old entry #{index})"),
        (None, None, None) => "(old entry)".into(),
    }
}

fn letter(change: Change) -> char {
    match change {
        Change::Unchanged => ' ',
        Change::Renamed => 'R',
        Change::Changed => 'M',
        Change::Added => 'A',
        Change::Removed => 'D',
    }
}

fn print_report(report: &PatchReport, show_sizes: bool) -> std::io::Result<()> {
    let listed: Vec<&EntryReport> = report.entries.iter().filter(|e| e.change != Change::Unchanged).collect();
    let width = listed.iter().map(|e| entry_name(e).chars().count()).max().unwrap_or(0).min(60);
    for entry in &listed {
        let name = entry_name(entry);
        let sizes = match (entry.change, entry.old_size) {
            (Change::Removed, _) if show_sizes => format!("{} B", entry.size),
            (Change::Changed, Some(old)) if show_sizes => format!("{old} -> {} B", entry.size),
            (_, _) if show_sizes || entry.size > 0 => format!("{} B", entry.size),
            _ => String::new(),
        };
        let cost = match entry.change {
            Change::Removed => String::new(),
            _ => format!("{} {} B", entry.method.name(), entry.patch_bytes),
        };
        say!(" {} {name:<width$} | {sizes:>22} | {cost}", letter(entry.change))?;
    }
    let counts: Vec<String> = [Change::Unchanged, Change::Renamed, Change::Changed, Change::Added, Change::Removed]
        .iter()
        .map(|&c| format!("{} {}", report.count(c), c.name()))
        .collect();
    let percent = if report.new_len > 0 { 100.0 * report.patch_len as f64 / report.new_len as f64 } else { 0.0 };
    say!(
        " {}; patch {} bytes ({percent:.2}% of the new file's {} bytes){}",
        counts.join(", "),
        report.patch_len,
        report.new_len,
        if report.exact { "" } else { "; result identical in content, not byte-identical" }
    )
}

fn report_json(report: &PatchReport, with_old: bool, flags: u8) -> serde_json::Value {
    let mut counts = serde_json::Map::new();
    let mut bytes = serde_json::Map::new();
    for change in [Change::Unchanged, Change::Renamed, Change::Changed, Change::Added, Change::Removed] {
        counts.insert(change.name().into(), json!(report.count(change)));
        if with_old || change != Change::Removed {
            bytes.insert(change.name().into(), json!(report.bytes(change)));
        }
    }
    let entries: Vec<serde_json::Value> = report
        .entries
        .iter()
        .map(|e| {
            json!({
                "change": e.change.name(),
                "path": e.path,
                "old_path": e.old_path,
                "old_index": e.old_index,
                "size": e.size,
                "old_size": e.old_size,
                "method": e.method.name(),
                "patch_bytes": e.patch_bytes,
            })
        })
        .collect();
    json!({
        "kind": if report.archive { "archive" } else { "file" },
        "old_format": if flags & mf_diff::wire::FLAG_OLD_PANDA3D != 0 { "panda3d" } else { "mf" },
        "new_format": if flags & mf_diff::wire::FLAG_NEW_PANDA3D != 0 { "panda3d" } else { "mf" },
        "byte_identical": report.exact,
        "old_len": report.old_len,
        "new_len": report.new_len,
        "new_xxh3": format!("{:016x}", report.new_hash),
        "patch_len": report.patch_len,
        "counts": counts,
        "bytes": bytes,
        "entries": entries,
    })
}
