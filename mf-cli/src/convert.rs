//! `mf convert IN OUT --to panda3d|mf`: rewrite an archive of either format in the other (or the
//! same) format, keeping paths, contents, modes and timestamps where the target has them, and each
//! entry's choice of compressed or stored. The output appears only once complete.

use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use mf_format::panda3d::{multify_would_compress, MultifileOptions, MultifileWriter, SubfileSpec};
use mf_format::{AnyArchive, ArchiveWriter, AtomicFile, Compression, EntryOptions, WriterOptions};

use crate::archive_cmds::{open_any, PasswordArg};
use crate::Outcome;

/// zlib level `multify -z` uses.
const MULTIFY_DEFAULT_LEVEL: u32 = 6;

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    /// A Panda3D multifile (version 1.1), as `multify` writes it.
    Panda3d,
    /// An mf archive.
    Mf,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The archive to read (mf or Panda3D multifile, detected by magic).
    input: PathBuf,
    /// The archive to write (replaced only once complete).
    output: PathBuf,
    /// Format of the output.
    #[arg(long, value_enum)]
    to: Target,
    /// Compression level of compressed entries: zlib 1-9 for panda3d (default 6, as multify -z),
    /// zstd 1-22 for mf (default 9).
    #[arg(long, value_name = "N")]
    level: Option<i32>,
    /// Panda3D scale factor (positions are stored divided by it, so archives can pass 4 GiB).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    scale_factor: u32,
    #[command(flatten)]
    password: PasswordArg,
}

pub fn run(args: ConvertArgs) -> Outcome {
    let archive = open_any(&args.input, &args.password)?;
    if args.password.password.is_none() {
        if let Some(encrypted) = archive.entries_by_path().find(|e| e.is_encrypted()) {
            return Err(mf_format::Error::PasswordRequired {
                file: args.input.clone(),
                entry: encrypted.path().to_owned(),
            }
            .into());
        }
    }
    if archive.entries_by_path().any(|e| e.is_encrypted()) {
        eprintln!("mf: note: encrypted entries are written decrypted ({} has no encryption)", target_name(args.to));
    }
    let mut out = AtomicFile::create(&args.output)
        .with_context(|| format!("creating a temp file beside {}", args.output.display()))?;
    let sink = BufWriter::with_capacity(1 << 20, out.file());
    match args.to {
        Target::Panda3d => write_panda3d(&archive, sink, &args)?,
        Target::Mf => write_mf(&archive, sink, &args)?,
    }
    out.commit().with_context(|| format!("replacing {}", args.output.display()))?;
    Ok(true)
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Panda3d => "a Panda3D multifile written by mf",
        Target::Mf => "mf",
    }
}

fn write_panda3d(archive: &AnyArchive, sink: BufWriter<&mut std::fs::File>, args: &ConvertArgs) -> anyhow::Result<()> {
    let level = match args.level {
        None => MULTIFY_DEFAULT_LEVEL,
        Some(level @ 1..=9) => level as u32,
        Some(level) => bail!("zlib level {level} is outside 1..=9"),
    };
    let timestamp = |entry: &mf_format::AnyEntry<'_>| {
        entry.mtime().map(|m| u32::try_from(m.secs.max(0)).unwrap_or(u32::MAX)).unwrap_or(0)
    };
    // Entries the source compressed stay compressed, except the types multify -z never compresses.
    let specs: Vec<SubfileSpec> = archive
        .entries_by_path()
        .map(|entry| SubfileSpec {
            name: entry.path().to_owned(),
            compression_level: (entry.is_compressed() && multify_would_compress(entry.path())).then_some(level),
            timestamp: timestamp(&entry),
        })
        .collect();
    let options = MultifileOptions {
        scale_factor: args.scale_factor,
        // Like multify, the multifile's timestamp is that of its newest subfile; 0 records none.
        timestamp: archive.entries_by_path().map(|e| timestamp(&e)).max().unwrap_or(0),
        header_prefix: None,
    };
    let mut writer = MultifileWriter::new(sink, &args.output, &options, specs)?;
    // The writer wants the subfiles in name order, which is the order entries_by_path yields.
    for entry in archive.entries_by_path() {
        let mut reader = archive.reader(&entry)?;
        writer.add(&mut reader).with_context(|| format!("{}: entry '{}'", archive.name().display(), entry.path()))?;
    }
    writer
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}

fn write_mf(archive: &AnyArchive, sink: BufWriter<&mut std::fs::File>, args: &ConvertArgs) -> anyhow::Result<()> {
    let mut options = WriterOptions::default();
    if let Some(level) = args.level {
        options.level = level;
    }
    let mut writer = ArchiveWriter::with_name(sink, options, &args.output)?;
    for entry in archive.entries_by_path() {
        let compression = if entry.is_compressed() { Compression::Auto } else { Compression::Store };
        let entry_options = EntryOptions { compression, mode: entry.mode(), mtime: entry.mtime() };
        let reader = archive.reader(&entry)?;
        writer
            .add_reader(entry.path(), reader, entry_options)
            .with_context(|| format!("{}: entry '{}'", archive.name().display(), entry.path()))?;
    }
    writer
        .finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}

/// Writes `archive` to `output` (atomically) in format `to` with the defaults of `mf convert`: the
/// canonical conversion, a pure function of the input's entries, which `mf diff`/`mf apply` rely on.
pub fn convert_to_file(archive: &AnyArchive, output: &std::path::Path, to: Target) -> anyhow::Result<()> {
    let args = ConvertArgs {
        input: archive.name().to_owned(),
        output: output.to_owned(),
        to,
        level: None,
        scale_factor: 1,
        password: PasswordArg::default(),
    };
    let mut out =
        AtomicFile::create(output).with_context(|| format!("creating a temp file beside {}", output.display()))?;
    let sink = BufWriter::with_capacity(1 << 20, out.file());
    match to {
        Target::Panda3d => write_panda3d(archive, sink, &args)?,
        Target::Mf => write_mf(archive, sink, &args)?,
    }
    out.commit().with_context(|| format!("replacing {}", output.display()))?;
    Ok(())
}
