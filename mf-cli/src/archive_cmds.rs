//! Read-only commands: `list`, `cat`, `verify`, `info`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use mf_panda3d::{AnyArchive, AnyEntry};
use serde::Serialize;

use crate::terminal::escaped;
use crate::{JsonFlag, Outcome};

/// `--password` for archives with encrypted entries (Panda3D multifiles).
#[derive(Args, Clone, Default)]
pub struct PasswordArg {
    /// Password of encrypted entries (Panda3D multifiles made with `multify -e`).
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
}

/// Opens an archive of either format (mf or Panda3D multifile, detected by magic), with the file name
/// in any error.
pub fn open_any(path: &PathBuf, password: &PasswordArg) -> anyhow::Result<AnyArchive> {
    let mut archive = AnyArchive::open(path)?;
    archive.set_password(password.password.clone());
    Ok(archive)
}

#[derive(Args)]
pub struct ListArgs {
    archive: PathBuf,
    /// Long listing: mode, size, stored size, ratio, path. An entry in a solid block is given its
    /// share of the block's frames, by the bytes it holds in them.
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
    #[command(flatten)]
    password: PasswordArg,
}

#[derive(Args)]
pub struct VerifyArgs {
    archive: PathBuf,
    #[command(flatten)]
    json: JsonFlag,
    #[command(flatten)]
    password: PasswordArg,
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
    /// Bytes a reader fetches for the entry: shared frames (a solid block) count in full.
    stored_size: u64,
    /// Bytes the entry costs: shared frames split between their entries by the bytes each holds.
    stored_share: u64,
    compression: &'static str,
    mode: String,
    mtime: Option<i64>,
    /// Recorded by mf archives only (null for Panda3D subfiles).
    xxh3: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    text: bool,
}

impl<'a> EntryJson<'a> {
    fn new(archive: &AnyArchive, entry: &AnyEntry<'a>) -> Self {
        EntryJson {
            path: entry.path(),
            size: entry.size(),
            stored_size: entry.stored_size(),
            stored_share: archive.stored_share(entry),
            compression: entry.compression(),
            mode: format!("{:04o}", entry.mode()),
            mtime: entry.mtime().map(|m| m.secs),
            xxh3: entry.content_hash().map(|h| format!("{h:016x}")),
            encrypted: entry.is_encrypted(),
            text: entry.is_text(),
        }
    }
}

/// Markers of Panda3D subfile flags in long listings (empty for mf entries).
fn markers(entry: &AnyEntry<'_>) -> &'static str {
    match (entry.is_encrypted(), entry.is_text()) {
        (true, true) => "[encrypted,text] ",
        (true, false) => "[encrypted] ",
        (false, true) => "[text] ",
        (false, false) => "",
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
    let archive = open_any(&args.archive, &PasswordArg::default())?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json.json {
        let entries: Vec<EntryJson> = archive.entries_by_path().map(|e| EntryJson::new(&archive, &e)).collect();
        serde_json::to_writer_pretty(&mut out, &entries)?;
        writeln!(out)?;
    } else {
        for entry in archive.entries_by_path() {
            if args.long {
                let share = archive.stored_share(&entry);
                writeln!(
                    out,
                    "{} {:>12} {:>12} {:>6.1}% {}{}",
                    mode_string(entry.mode()),
                    entry.size(),
                    share,
                    ratio(entry.size(), share),
                    markers(&entry),
                    escaped(entry.path())
                )?;
            } else {
                writeln!(out, "{}", escaped(entry.path()))?;
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
    let archive = open_any(&args.archive, &args.password)?;
    let entry =
        archive.get(&args.path).ok_or_else(|| anyhow!("{}: no entry '{}'", args.archive.display(), args.path))?;
    let mut out = std::io::stdout().lock();
    let mut reader = archive.reader(&entry)?;
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
    /// Encrypted entries not checked because no password was given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unchecked_encrypted: Vec<String>,
}

#[derive(Serialize)]
struct DamagedJson {
    entry: Option<String>,
    error: String,
}

pub fn verify(args: VerifyArgs) -> Outcome {
    let archive = open_any(&args.archive, &args.password)?;
    let bar = crate::progress::bytes(archive.total_stored_size(), "verifying");
    // Without a password, encrypted entries cannot be checked; they are reported, not counted as damage.
    let (locked, errors): (Vec<_>, Vec<_>) =
        archive.verify().into_iter().partition(|e| matches!(e, mf_panda3d::Error::PasswordRequired { .. }));
    let unchecked: Vec<String> = locked
        .iter()
        .filter_map(|e| match e {
            mf_panda3d::Error::PasswordRequired { entry, .. } => Some(entry.clone()),
            _ => None,
        })
        .collect();
    bar.finish_and_clear();
    if args.json.json {
        let damaged = errors
            .iter()
            .map(|e| DamagedJson {
                entry: match e {
                    mf_panda3d::Error::Format(mf_format::Error::ChecksumMismatch { entry, .. }) => Some(entry.clone()),
                    mf_panda3d::Error::Format(mf_format::Error::Corrupt { entry, .. }) => entry.clone(),
                    mf_panda3d::Error::PasswordRequired { entry, .. } | mf_panda3d::Error::Decrypt { entry, .. } => {
                        Some(entry.clone())
                    }
                    _ => None,
                },
                error: e.to_string(),
            })
            .collect();
        let report = VerifyJson {
            archive: args.archive.display().to_string(),
            entries: archive.len(),
            damaged,
            unchecked_encrypted: unchecked,
        };
        say!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        for error in &errors {
            eprintln!("mf: {}", escaped(&error.to_string()));
        }
        if !unchecked.is_empty() {
            eprintln!(
                "mf: {} encrypted entries not checked (give --password to check them): {}",
                unchecked.len(),
                unchecked.join(", ")
            );
        }
        let status = if errors.is_empty() { "OK" } else { "DAMAGED" };
        say!(
            "{}: {status}: {} entries checked, {} damaged",
            args.archive.display(),
            archive.len() - unchecked.len(),
            errors.len()
        )?;
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
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_size: Option<u64>,
    /// The commit generation (0: never changed in place).
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
    compressed_entries: usize,
    ratio_percent: f64,
    /// How an mf archive's data area is used (dead space, deduplication, solid blocks).
    #[serde(skip_serializing_if = "Option::is_none")]
    space: Option<SpaceJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    panda3d: Option<Panda3dInfoJson>,
}

/// [`mf_format::SpaceUse`] as JSON.
#[derive(Serialize)]
struct SpaceJson {
    /// Bytes of the data area no entry or frame uses (holes and alignment padding).
    dead_bytes: u64,
    /// Entries sharing an earlier entry's data, and the content bytes that saved.
    shared_entries: u64,
    shared_bytes: u64,
    /// Entries in solid blocks, and the frames holding them.
    solid_entries: u64,
    solid_frames: u64,
    frames: u64,
}

/// What only Panda3D multifiles have.
#[derive(Serialize)]
struct Panda3dInfoJson {
    scale_factor: u32,
    /// The multifile timestamp, Unix seconds (0: none recorded).
    timestamp: u32,
    header_prefix: Option<String>,
    encrypted_entries: usize,
    text_entries: usize,
    deleted_entries: usize,
    /// Bytes no reader uses (deleted entries, data and index entries left behind by in-place edits).
    dead_bytes: u64,
    /// Panda3D would repack it: entries unsorted, with gaps, or deleted.
    needs_repack: bool,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize)]
struct SignatureJson {
    /// Subject of the signing certificate.
    subject: Option<String>,
    error: Option<String>,
    certificates: u32,
    offset: u64,
}

pub fn info(args: InfoArgs) -> Outcome {
    let archive = open_any(&args.archive, &PasswordArg::default())?;
    let (major, minor) = archive.version();
    let count = |pred: fn(&AnyEntry<'_>) -> bool| archive.entries_by_path().filter(|e| pred(e)).count();
    let panda3d = archive.as_panda3d().map(|multifile| Panda3dInfoJson {
        scale_factor: multifile.scale_factor(),
        timestamp: multifile.timestamp(),
        header_prefix: (!multifile.header_prefix().is_empty())
            .then(|| String::from_utf8_lossy(multifile.header_prefix()).trim_end().to_owned()),
        encrypted_entries: count(|e| e.is_encrypted()),
        text_entries: count(|e| e.is_text()),
        deleted_entries: multifile.deleted_count(),
        dead_bytes: multifile.dead_bytes(),
        needs_repack: multifile.needs_repack(),
        signatures: multifile
            .signatures()
            .iter()
            .map(|s| SignatureJson {
                subject: s.subject.as_ref().ok().cloned(),
                error: s.subject.as_ref().err().cloned(),
                certificates: s.certificates,
                offset: s.data_offset,
            })
            .collect(),
    });
    let index_size = archive.index_size();
    let info = InfoJson {
        archive: args.archive.display().to_string(),
        format: archive.format().name(),
        version: format!("{major}.{minor}"),
        entries: archive.len(),
        total_size: archive.total_size(),
        stored_size: archive.total_stored_size(),
        file_size: archive.file_len(),
        index_size,
        frame_size: archive.as_mf().map(|mf| mf.frame_size()),
        generation: archive.as_mf().map(|mf| mf.generation()),
        compressed_entries: count(|e| e.is_compressed()),
        ratio_percent: ratio(archive.total_size(), archive.file_len()),
        space: archive.as_mf().map(|mf| {
            let space = mf.space();
            SpaceJson {
                dead_bytes: space.dead,
                shared_entries: space.shared_entries,
                shared_bytes: space.shared_bytes,
                solid_entries: space.solid_entries,
                solid_frames: space.solid_frames,
                frames: space.frames,
            }
        }),
        panda3d,
    };
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&info)?)?;
    } else {
        say!("archive:      {}", info.archive)?;
        say!("format:       {} {}", info.format, info.version)?;
        say!("entries:      {} ({} compressed)", info.entries, info.compressed_entries)?;
        say!("total size:   {} bytes", info.total_size)?;
        say!("stored size:  {} bytes", info.stored_size)?;
        say!("file size:    {} bytes (index {} bytes)", info.file_size, info.index_size)?;
        say!("ratio:        {:.1}% (file size / total size)", info.ratio_percent)?;
        if let Some(frame_size) = info.frame_size {
            say!("frame size:   {frame_size} bytes")?;
        }
        if let Some(generation) = info.generation {
            say!("generation:   {generation}")?;
        }
        if let Some(space) = &info.space {
            say!("dead space:   {} bytes", space.dead_bytes)?;
            say!("shared:       {} entries ({} bytes stored once)", space.shared_entries, space.shared_bytes)?;
            say!("solid:        {} entries in {} of {} frames", space.solid_entries, space.solid_frames, space.frames)?;
        }
        if let Some(p) = &info.panda3d {
            say!("scale factor: {}", p.scale_factor)?;
            say!("timestamp:    {}", if p.timestamp == 0 { "none".to_owned() } else { p.timestamp.to_string() })?;
            if let Some(prefix) = &p.header_prefix {
                say!("prefix:       {prefix}")?;
            }
            say!("encrypted:    {} entries", p.encrypted_entries)?;
            say!("text:         {} entries", p.text_entries)?;
            say!("deleted:      {} entries (still in the index chain)", p.deleted_entries)?;
            say!("dead space:   {} bytes", p.dead_bytes)?;
            say!("needs repack: {}", if p.needs_repack { "yes" } else { "no" })?;
            for signature in &p.signatures {
                match (&signature.subject, &signature.error) {
                    (Some(subject), _) => say!("signature:    {subject} ({} certificates)", signature.certificates)?,
                    (_, Some(error)) => say!("signature:    unreadable: {error}")?,
                    _ => {}
                }
            }
        }
    }
    Ok(true)
}
