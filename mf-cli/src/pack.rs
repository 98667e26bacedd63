//! `mf pack`: collect files, then hand them to the library's parallel packer.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use globset::{Glob, GlobSet, GlobSetBuilder};
use mf_format::{
    entry_path_from_fs, pack_inputs, ArchiveWriter, AtomicFile, Compression, EntryOptions, PackInput, WriterOptions,
};

use crate::Outcome;

#[derive(Args)]
pub struct PackArgs {
    /// Directories whose contents become the archive's root (merged; a path may come from one only).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// The archive to write (replaced only once complete).
    #[arg(short, long, value_name = "OUT.mf")]
    output: PathBuf,
    /// zstd level, 1 (fast) to 22 (small).
    #[arg(long, value_name = "N", default_value_t = mf_format::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
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

impl PackArgs {
    /// `mf pack DIR -o OUTPUT` with every other option at its default, for commands that publish a
    /// folder (so a folder and an archive packed by hand from it are the same bytes).
    pub fn defaults(dir: PathBuf, output: PathBuf) -> PackArgs {
        PackArgs {
            dirs: vec![dir],
            output,
            level: mf_format::DEFAULT_LEVEL,
            store: Vec::new(),
            exclude: Vec::new(),
            files_from: None,
            keep_mtime: false,
            frame_size: mf_format::WriterOptions::default().frame_size_log2,
        }
    }
}

pub fn run(args: PackArgs) -> Outcome {
    let excludes = build_globs(&args.exclude)?;
    let store: Vec<String> = args.store.iter().map(|e| e.trim_start_matches('.').to_ascii_lowercase()).collect();
    let output_abs = absolute(&args.output);

    let mut found: BTreeMap<String, PackInput> = BTreeMap::new();
    let mut add = |entry_path: String, fs_path: PathBuf, metadata: &std::fs::Metadata| -> anyhow::Result<()> {
        // Compare full paths only when the names match: `absolute` costs a getcwd per call.
        let is_output = fs_path.file_name() == output_abs.file_name() && absolute(&fs_path) == output_abs;
        if excludes.is_match(&entry_path) || is_output {
            return Ok(());
        }
        let mut options = EntryOptions::from_metadata(metadata, args.keep_mtime);
        if has_extension(&entry_path, &store) {
            options.compression = Compression::Store;
        }
        let input = PackInput { entry_path: entry_path.clone(), fs_path, size_hint: metadata.len(), options };
        if let Some(previous) = found.insert(entry_path.clone(), input) {
            bail!("'{entry_path}' comes from two inputs: {} and another directory", previous.fs_path.display());
        }
        Ok(())
    };

    if let Some(list) = &args.files_from {
        let [dir] = args.dirs.as_slice() else {
            bail!("--files-from takes exactly one DIR (the list's paths are relative to it)");
        };
        let text = std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let place = || format!("{}:{}", list.display(), number + 1);
            let entry_path = entry_path_from_fs(Path::new(line)).with_context(place)?;
            let fs_path = dir.join(line);
            let metadata =
                std::fs::metadata(&fs_path).with_context(|| format!("{}: {}", place(), fs_path.display()))?;
            if !metadata.is_file() {
                bail!("{}: {} is not a regular file", place(), fs_path.display());
            }
            add(entry_path, fs_path, &metadata)?;
        }
    } else {
        for dir in &args.dirs {
            if !dir.is_dir() {
                bail!("{}: not a directory", dir.display());
            }
            let walker = walkdir::WalkDir::new(dir).follow_links(true).sort_by_file_name();
            let mut walker = walker.into_iter();
            while let Some(item) = walker.next() {
                let item = item.with_context(|| format!("walking {}", dir.display()))?;
                let relative = item.path().strip_prefix(dir).unwrap_or(item.path());
                if relative.as_os_str().is_empty() {
                    continue;
                }
                let entry_path = entry_path_from_fs(relative).with_context(|| item.path().display().to_string())?;
                if item.file_type().is_dir() {
                    if excludes.is_match(&entry_path) {
                        walker.skip_current_dir();
                    }
                    continue;
                }
                if !item.file_type().is_file() {
                    eprintln!("mf: skipping {} (not a regular file)", item.path().display());
                    continue;
                }
                let metadata = item.metadata().with_context(|| item.path().display().to_string())?;
                add(entry_path, item.path().to_owned(), &metadata)?;
            }
        }
    }

    let inputs: Vec<PackInput> = found.into_values().collect();
    let total: u64 = inputs.iter().map(|i| i.size_hint).sum();
    let bar = crate::progress::bytes(total, "packing");

    let options = WriterOptions { level: args.level, frame_size_log2: args.frame_size };
    let mut out = AtomicFile::create(&args.output)
        .with_context(|| format!("creating a temp file beside {}", args.output.display()))?;
    let sink = BufWriter::with_capacity(1 << 20, out.file());
    let mut writer = ArchiveWriter::with_name(sink, options, &args.output)?;
    pack_inputs(&mut writer, &inputs, |input, size| {
        bar.set_message(input.entry_path.clone());
        bar.inc(size);
    })?;
    let entries = writer.len();
    writer
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", args.output.display()))?;
    out.commit().with_context(|| format!("replacing {}", args.output.display()))?;
    bar.finish_and_clear();
    if entries == 0 {
        eprintln!("mf: warning: {} holds no entries", args.output.display());
    }
    Ok(true)
}

fn build_globs(patterns: &[String]) -> anyhow::Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern).with_context(|| format!("bad --exclude pattern {pattern:?}"))?);
        // A pattern without '/' also matches a name at any depth, as in .gitignore.
        if !pattern.contains('/') {
            builder.add(Glob::new(&format!("**/{pattern}")).with_context(|| format!("bad pattern {pattern:?}"))?);
        }
    }
    Ok(builder.build()?)
}

fn has_extension(path: &str, extensions: &[String]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
