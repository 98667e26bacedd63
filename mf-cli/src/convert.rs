//! `mf convert IN OUT --to panda3d|mf`: rewrite an archive of either format in the other (or the
//! same) format with `mf_panda3d::convert_to_file`. The output appears only once complete.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use mf_panda3d::{convert_to_file, ConvertOptions, Target};

use crate::archive_cmds::{open_any, PasswordArg};
use crate::Outcome;

#[derive(Clone, Copy, ValueEnum)]
pub enum TargetArg {
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
    to: TargetArg,
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
    let to = match args.to {
        TargetArg::Panda3d => Target::Panda3d,
        TargetArg::Mf => Target::Mf,
    };
    let options = ConvertOptions { to, level: args.level, scale_factor: args.scale_factor };
    if archive.has_password() && archive.entries_by_path().any(|e| e.is_encrypted()) {
        eprintln!("mf: note: encrypted entries are written decrypted (the {} output has no encryption)", to.name());
    }
    convert_to_file(&archive, &args.output, &options).with_context(|| format!("writing {}", args.output.display()))?;
    Ok(true)
}
