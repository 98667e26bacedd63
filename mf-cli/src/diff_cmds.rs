//! `mf diff`, `mf apply` and `mf patch-info`: subfile-wise patches between archives (mf-diff).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args};
use mf_diff::panda3d::{self, ArchiveFormat, PatchSink};
use mf_diff::{Change, EntryReport, PatchReport};
use serde_json::json;

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
    /// Where to write the patch (only a regular file is replaced), or `-` for standard output (the
    /// report is then not printed).
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
    /// Change OLD into the result. A patch between mf archives edits OLD in place, writing only the
    /// entries that changed (crash-safe: OLD stays the old version until the new one is complete
    /// and checked); other patches, and --rebuild, write a new file and rename it over OLD. If OLD is
    /// a symlink, the file it points to is changed and the link kept.
    #[arg(long)]
    in_place: bool,
    /// With --in-place: rewrite the whole archive instead of editing it.
    #[arg(long, requires = "in_place")]
    rebuild: bool,
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

pub fn diff(args: DiffArgs) -> Outcome {
    let memory_limit = args.memory_limit.unwrap_or_else(mf_diff::default_memory_limit);
    let total = panda3d::progress_total_any(&args.old, &args.new)?;
    let bar = progress::bytes(total, "diffing");
    let to_stdout = !args.stat && args.output.as_deref() == Some(Path::new("-"));
    if to_stdout {
        let mut sink = std::io::BufWriter::new(std::io::stdout().lock());
        panda3d::diff_any(&args.old, &args.new, PatchSink::Writer(&mut sink), memory_limit, &|n| bar.inc(n))?;
        std::io::Write::flush(&mut sink).context("writing the patch to standard output")?;
        bar.finish_and_clear();
        return Ok(true);
    }
    let patch = args.output.as_deref().filter(|_| !args.stat);
    let diff = panda3d::diff_any(&args.old, &args.new, patch, memory_limit, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&report_json(&diff.report, true, diff.flags))?)?;
    } else {
        print_report(&diff.report, true)?;
        if let Some(patch) = patch {
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
    let format = args.format.map(|f| match f {
        ApplyFormat::Mf => ArchiveFormat::Mf,
        ApplyFormat::Panda3d => ArchiveFormat::Panda3d,
    });
    if args.in_place && !args.rebuild && args.format.is_none() && mf_diff::can_apply_in_place(&args.patch, &old_path)? {
        return apply_in_place(&args, &target);
    }
    let bar = progress::bytes(estimate_size(&old_path), "applying");
    let outcome = panda3d::apply_any(&args.patch, &old_path, &target, format, &|n| bar.inc(n))
        .with_context(|| format!("applying {}", args.patch.display()))?;
    bar.finish_and_clear();
    if args.json.json {
        let value = json!({
            "output": target.display().to_string(),
            "entries": outcome.entries,
            "bytes": outcome.len,
            "bytes_written": outcome.len,
            "in_place": false,
            "byte_identical": outcome.exact,
        });
        say!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        let how = if outcome.exact { "byte-identical to the patch's target" } else { "identical in content" };
        say!("wrote {} ({} bytes, {how})", target.display(), outcome.len)?;
    }
    Ok(true)
}

/// `mf apply --in-place` of a patch between mf archives: the archive is edited, not rewritten.
fn apply_in_place(args: &ApplyArgs, target: &Path) -> Outcome {
    let bar = progress::bytes(estimate_size(target), "applying");
    let outcome = mf_diff::apply_in_place(&args.patch, target, mf_diff::InPlaceOptions::default(), &|n| bar.inc(n))
        .with_context(|| format!("applying {}", args.patch.display()))?;
    bar.finish_and_clear();
    let checked = "every written entry's size and xxh3 (an entry that keeps frames in place: each rebuilt run's), and the new entry list's content id";
    if args.json.json {
        let value = json!({
            "output": target.display().to_string(),
            "entries": outcome.entries,
            "bytes": outcome.len,
            "bytes_written": outcome.bytes_written,
            "in_place": true,
            "entries_written": outcome.entries_written,
            "entries_removed": outcome.entries_removed,
            "dead_bytes": outcome.dead_bytes,
            "content_id": format!("{:016x}", outcome.content_id),
            "checked": checked,
        });
        say!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        say!(
            "updated {} in place: {} entries ({} written, {} removed); wrote {} bytes, the archive has {} bytes ({} dead)",
            target.display(),
            outcome.entries,
            outcome.entries_written,
            outcome.entries_removed,
            outcome.bytes_written,
            outcome.len,
            outcome.dead_bytes
        )?;
        say!("checked: {checked} ({:016x})", outcome.content_id)?;
    }
    Ok(true)
}

/// Content bytes the apply will write, for the progress bar (a guess: OLD's size).
fn estimate_size(old: &Path) -> u64 {
    mf_panda3d::AnyArchive::open(old)
        .map(|a| a.total_size())
        .or_else(|_| std::fs::metadata(old).map(|m| m.len()))
        .unwrap_or(0)
}

pub fn patch_info(args: PatchInfoArgs) -> Outcome {
    let (report, flags) = panda3d::patch_info_any(&args.patch)?;
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
    let (old_format, new_format) = panda3d::patch_formats(flags);
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
        "old_format": old_format.name(),
        "new_format": new_format.name(),
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
