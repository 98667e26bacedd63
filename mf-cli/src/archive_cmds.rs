//! Read-only commands: `list`, `cat`, `verify`, `info`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use mf_format::{Entry, StoredAs};
use serde::Serialize;

use crate::{open_archive, JsonFlag, Outcome};

#[derive(Args)]
pub struct ListArgs {
    archive: PathBuf,
    /// Long listing: mode, size, stored size, ratio, path.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct CatArgs {
    archive: PathBuf,
    /// Path of the entry inside the archive.
    path: String,
}

#[derive(Args)]
pub struct VerifyArgs {
    archive: PathBuf,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct InfoArgs {
    archive: PathBuf,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    path: &'a str,
    size: u64,
    stored_size: u64,
    compression: &'static str,
    mode: String,
    mtime: Option<i64>,
    xxh3: String,
}

impl<'a> From<&Entry<'a>> for EntryJson<'a> {
    fn from(entry: &Entry<'a>) -> Self {
        EntryJson {
            path: entry.path(),
            size: entry.size(),
            stored_size: entry.stored_size(),
            compression: compression_name(entry),
            mode: format!("{:04o}", entry.mode()),
            mtime: entry.mtime().map(|m| m.secs),
            xxh3: format!("{:016x}", entry.content_hash()),
        }
    }
}

fn compression_name(entry: &Entry<'_>) -> &'static str {
    match entry.stored_as() {
        StoredAs::Raw => "none",
        StoredAs::Zstd => "zstd",
    }
}

/// Stored size as a percentage of the size (100% for empty entries).
fn ratio(size: u64, stored: u64) -> f64 {
    if size == 0 {
        100.0
    } else {
        stored as f64 * 100.0 / size as f64
    }
}

pub fn list(args: ListArgs) -> Outcome {
    let archive = open_archive(&args.archive)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json.json {
        let entries: Vec<EntryJson> = archive.entries_by_path().map(|e| EntryJson::from(&e)).collect();
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        for entry in archive.entries_by_path() {
            if args.long {
                writeln!(
                    out,
                    "{} {:>12} {:>12} {:>6.1}% {}",
                    mode_string(entry.mode()),
                    entry.size(),
                    entry.stored_size(),
                    ratio(entry.size(), entry.stored_size()),
                    entry.path()
                )?;
            } else {
                writeln!(out, "{}", entry.path())?;
            }
        }
    }
    out.flush()?;
    Ok(true)
}

fn mode_string(mode: u32) -> String {
    let mut s = String::from("-");
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub fn cat(args: CatArgs) -> Outcome {
    let archive = open_archive(&args.archive)?;
    let entry =
        archive.get(&args.path).ok_or_else(|| anyhow!("{}: no entry '{}'", args.archive.display(), args.path))?;
    let mut out = std::io::stdout().lock();
    let mut reader = archive.reader(&entry);
    std::io::copy(&mut reader, &mut out)
        .with_context(|| format!("{}: reading '{}'", args.archive.display(), args.path))?;
    out.flush()?;
    Ok(true)
}

#[derive(Serialize)]
struct VerifyJson {
    archive: String,
    entries: usize,
    damaged: Vec<DamagedJson>,
}

#[derive(Serialize)]
struct DamagedJson {
    entry: Option<String>,
    error: String,
}

pub fn verify(args: VerifyArgs) -> Outcome {
    let archive = open_archive(&args.archive)?;
    let bar = crate::progress::bytes(archive.total_stored_size(), "verifying");
    let errors = archive.verify();
    bar.finish_and_clear();
    if args.json.json {
        let damaged = errors
            .iter()
            .map(|e| DamagedJson {
                entry: match e {
                    mf_format::Error::ChecksumMismatch { entry, .. } => Some(entry.clone()),
                    mf_format::Error::Corrupt { entry, .. } => entry.clone(),
                    _ => None,
                },
                error: e.to_string(),
            })
            .collect();
        let report = VerifyJson { archive: args.archive.display().to_string(), entries: archive.len(), damaged };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for error in &errors {
            eprintln!("mf: {error}");
        }
        let status = if errors.is_empty() { "OK" } else { "DAMAGED" };
        println!("{}: {status}: {} entries checked, {} damaged", args.archive.display(), archive.len(), errors.len());
    }
    Ok(errors.is_empty())
}

#[derive(Serialize)]
struct InfoJson {
    archive: String,
    format: &'static str,
    version: String,
    entries: usize,
    total_size: u64,
    stored_size: u64,
    file_size: u64,
    index_size: u64,
    frame_size: u64,
    compressed_entries: usize,
    ratio_percent: f64,
}

pub fn info(args: InfoArgs) -> Outcome {
    let archive = open_archive(&args.archive)?;
    let (major, minor) = archive.version();
    let info = InfoJson {
        archive: args.archive.display().to_string(),
        format: "mf",
        version: format!("{major}.{minor}"),
        entries: archive.len(),
        total_size: archive.total_size(),
        stored_size: archive.total_stored_size(),
        file_size: archive.file_len(),
        index_size: archive.index_extent().1,
        frame_size: archive.frame_size(),
        compressed_entries: archive.entries().filter(|e| e.stored_as() == StoredAs::Zstd).count(),
        ratio_percent: ratio(archive.total_size(), archive.file_len()),
    };
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("archive:      {}", info.archive);
        println!("format:       mf {}", info.version);
        println!("entries:      {} ({} compressed)", info.entries, info.compressed_entries);
        println!("total size:   {} bytes", info.total_size);
        println!("stored size:  {} bytes", info.stored_size);
        println!("file size:    {} bytes (index {} bytes)", info.file_size, info.index_size);
        println!("ratio:        {:.1}% (file size / total size)", info.ratio_percent);
        println!("frame size:   {} bytes", info.frame_size);
    }
    Ok(true)
}
