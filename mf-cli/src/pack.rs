//! `mf pack`: the library collects the files by its rules and packs them; this prints progress.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use mf_format::{
    collect_inputs, pack_to_file_reusing, pack_to_writer_reusing, DirPackOptions, PackOrder, PackSummary, ReuseSource,
    TraceOrder, WriterOptions,
};

use crate::{JsonFlag, Outcome};

#[derive(Args)]
pub struct PackArgs {
    /// Directories whose contents become the archive's root (merged; a path may come from one only).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// The archive to write (replaced only once complete; only a regular file is replaced), or `-`
    /// for standard output.
    #[arg(short, long, value_name = "OUT.mf")]
    output: PathBuf,
    /// zstd level, 1 (fast) to 22 (small).
    #[arg(long, value_name = "N", default_value_t = mf_format::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
    /// Release-build preset: zstd level 12 and 4M frames (instead of --level and --frame-size).
    /// Archives 3-7% smaller than the defaults (about 1.1x `tar | zstd -19 --long`, the solid bound)
    /// for 2-3x the pack time, still under mksquashfs's; random reads decode up to 4 MiB each.
    #[arg(long, conflicts_with_all = ["level", "frame_size"])]
    best: bool,
    /// Also store these extensions uncompressed (comma-separated, e.g. `dds,bin`).
    #[arg(long, value_name = "EXT,...", value_delimiter = ',')]
    store: Vec<String>,
    /// Leave out paths matching this glob (matched against the path inside the archive; repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Pack exactly the files listed in LIST (one path per line, relative to the single DIR).
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// Record modification times (off by default so archives are reproducible).
    #[arg(long)]
    keep_mtime: bool,
    /// Size of the independently compressed frames: a power of two from 4K to 64M. Smaller frames make
    /// random reads (a mount, `read_at`) decode less per read; larger ones compress a little better.
    #[arg(long, value_name = "SIZE", default_value = "256K", value_parser = parse_frame_size)]
    frame_size: u8,
    /// Data order: `kind` groups similar files (by extension, then name) so small ones compress
    /// together; `path` keeps path order. Lookup is by path either way.
    #[arg(long, value_name = "ORDER", default_value = "kind", value_parser = parse_order)]
    order: PackOrder,
    /// Lay out first the files an access trace names, in its order (`mf mount --record-trace`
    /// writes one: a JSON string per line), then the rest in --order: a mount fetching the archive
    /// on demand then reads its start-up files as one range.
    #[arg(long, value_name = "TRACE")]
    order_from: Option<PathBuf>,
    /// Pack the targets of symlinks that lead outside their DIR (refused otherwise; links that stay
    /// inside are always followed).
    #[arg(long)]
    follow_symlinks: bool,
    /// Copy the compressed frames of an earlier archive where they decode to the content being
    /// packed, instead of compressing it again. The output is byte-identical to a pack without it;
    /// frames are only found when OLD was packed with the same level and frame size.
    #[arg(long, value_name = "OLD.mf")]
    reuse: Option<PathBuf>,
    /// Print a JSON summary (entries, what was reused) on standard output.
    #[command(flatten)]
    json: JsonFlag,
}

/// Parses `--order`.
fn parse_order(text: &str) -> Result<PackOrder, String> {
    match text {
        "kind" => Ok(PackOrder::Kind),
        "path" => Ok(PackOrder::Path),
        _ => Err(format!("'{text}' is not an order (kind or path)")),
    }
}

/// Parses a frame size such as `64K` into its base-2 logarithm.
fn parse_frame_size(text: &str) -> Result<u8, String> {
    let size = mf_diff::parse_size(text).ok_or_else(|| format!("'{text}' is not a size (examples: 64K, 1M)"))?;
    let log2 = size.trailing_zeros();
    let range = mf_format::format::MIN_FRAME_SIZE_LOG2..=mf_format::format::MAX_FRAME_SIZE_LOG2;
    if !size.is_power_of_two() || !range.contains(&(log2 as u8)) {
        return Err(format!("frame size {text} must be a power of two from 4K to 64M"));
    }
    Ok(log2 as u8)
}

pub fn run(args: PackArgs) -> Outcome {
    let to_stdout = args.output == Path::new("-");
    let options = DirPackOptions {
        order: args.order,
        writer: if args.best {
            WriterOptions::best()
        } else {
            WriterOptions { level: args.level, frame_size_log2: args.frame_size }
        },
        store_extensions: args.store,
        excludes: args.exclude,
        files_from: args.files_from,
        keep_mtime: args.keep_mtime,
        follow_symlinks: args.follow_symlinks,
        order_from: args.order_from.clone(),
    };
    if to_stdout && args.json.json {
        anyhow::bail!("--json prints on standard output, which -o - already writes the archive to");
    }
    let reuse = match &args.reuse {
        Some(old) => Some(Arc::new(ReuseSource::open(old, &options.writer).context("cannot reuse it")?)),
        None => None,
    };
    let collected = collect_inputs(&args.dirs, (!to_stdout).then_some(args.output.as_path()), &options)?;
    for path in &collected.skipped {
        eprintln!("mf: skipping {} (not a regular file)", path.display());
    }
    if let (Some(trace), Some(order)) = (&args.order_from, &collected.trace) {
        report_trace_order(trace, order);
    }
    let total: u64 = collected.inputs.iter().map(|i| i.size_hint).sum();
    let bar = crate::progress::bytes(total, "packing");
    let progress = |input: &mf_format::PackInput, size| {
        bar.set_message(input.entry_path.clone());
        bar.inc(size);
    };
    let summary = if to_stdout {
        let sink = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let (mut sink, summary) = pack_to_writer_reusing(
            &collected.inputs,
            sink,
            Path::new("<stdout>"),
            options.writer,
            reuse.clone(),
            progress,
        )?;
        sink.flush().context("writing the archive to standard output")?;
        summary
    } else {
        pack_to_file_reusing(&collected.inputs, &args.output, options.writer, reuse.clone(), progress)?
    };
    bar.finish_and_clear();
    if summary.entries == 0 {
        eprintln!("mf: warning: {} holds no entries", args.output.display());
    }
    if let (Some(old), Some(source)) = (&args.reuse, &reuse) {
        report_reuse(old, source, &summary);
    }
    if args.json.json {
        let reused = summary.reused;
        let json = serde_json::json!({
            "entries": summary.entries,
            "reused": {
                "entries": reused.entries,
                "whole_entries": reused.whole_entries,
                "frames": reused.frames,
                "bytes": reused.bytes,
                "stored_bytes": reused.stored_bytes,
                "damaged_frames": summary.damaged_frames,
            },
            "order_from": collected.trace.as_ref().map(trace_order_json),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(true)
}

/// Says on standard error how many files the access trace placed first, and what it ignored.
pub fn report_trace_order(trace: &Path, order: &TraceOrder) {
    eprintln!(
        "mf: {} files laid out first in the order of {} ({} lines; ignored: {} repeated, {} not packed)",
        order.placed,
        trace.display(),
        order.listed,
        order.duplicates,
        order.not_in_input
    );
}

/// The `--json` form of what the access trace did.
pub fn trace_order_json(order: &TraceOrder) -> serde_json::Value {
    serde_json::json!({
        "listed": order.listed,
        "placed": order.placed,
        "duplicates": order.duplicates,
        "not_in_input": order.not_in_input,
    })
}

/// Says on standard error what was copied from OLD, and warns about damaged frames of it.
fn report_reuse(old: &Path, source: &ReuseSource, summary: &PackSummary) {
    let reused = summary.reused;
    eprintln!(
        "mf: reused {} frames of {} entries ({} whole) from {}: {} bytes not compressed again",
        reused.frames,
        reused.entries,
        reused.whole_entries,
        old.display(),
        reused.bytes
    );
    let (damaged, first) = source.damage();
    if damaged > 0 {
        eprintln!(
            "mf: warning: {}: {damaged} damaged frames were compressed afresh instead ({})",
            old.display(),
            first.unwrap_or_default()
        );
    }
}
