//! `mf`: pack, inspect, extract and verify `.mf` multifile archives.
//!
//! A thin front end: each subcommand parses its arguments, calls the libraries and prints. Exit codes:
//! 0 success, 1 failure, 2 usage error.

/// `println!` that returns the write error instead of panicking: a reader that closed stdout
/// (`mf info x.mf | head -0`) then ends the command through `?`, and `main` exits quietly. Every
/// line of standard output goes through here or through an `io::Write` with `?`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod archive_cmds;
mod convert;
mod diff_cmds;
mod docs_cmds;
mod edit_cmds;
mod extract;
mod mount_cmds;
mod pack;
mod progress;
mod release_cmds;
mod terminal;
mod update_cmds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mf", version, about = "Multifile archives: pack assets, read them in place, ship small patches")]
struct Cli {
    /// Worker threads for compression and verification (default: one per core), or serving a mount (default: 4).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack directories into an archive.
    Pack(pack::PackArgs),
    /// List the entries of an archive.
    List(archive_cmds::ListArgs),
    /// Extract entries into a directory.
    Extract(extract::ExtractArgs),
    /// Write one entry's content to standard output.
    Cat(archive_cmds::CatArgs),
    /// Check every checksum of an archive.
    Verify(archive_cmds::VerifyArgs),
    /// Show an archive's version, counts and sizes.
    Info(archive_cmds::InfoArgs),
    /// Add or replace files in an archive or Panda3D multifile, in place (crash-safe; directories recursively).
    Add(edit_cmds::AddArgs),
    /// Remove entries (or directories of entries) from an archive or Panda3D multifile, in place (crash-safe).
    Rm(edit_cmds::RmArgs),
    /// Rewrite an archive without dead space, exactly as a fresh `mf pack` (or `multify -c`) of its content.
    Compact(edit_cmds::CompactArgs),
    /// Convert between mf archives and Panda3D multifiles.
    Convert(convert::ConvertArgs),
    /// Mount archives (overlaid) as a read-only folder, through FUSE.
    Mount(mount_cmds::MountArgs),
    /// Unmount a folder mounted by `mf mount` (also after its daemon died).
    Umount(mount_cmds::UmountArgs),
    /// Make a patch from OLD to NEW (archives entry by entry, other files whole).
    Diff(diff_cmds::DiffArgs),
    /// Apply a patch to OLD, writing -o NEW or replacing OLD (--in-place).
    Apply(diff_cmds::ApplyArgs),
    /// Show what a patch changes.
    PatchInfo(diff_cmds::PatchInfoArgs),
    /// Make an ed25519 key pair for signing release manifests.
    Keygen(release_cmds::KeygenArgs),
    /// Publish versions into a release repository (static files any web server can serve).
    #[command(subcommand)]
    Release(release_cmds::ReleaseCommand),
    /// Bring an archive to a release's newest (or --to) version from a release repository.
    Update(update_cmds::UpdateArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(docs_cmds::CompletionsArgs),
    /// Write manual pages (mf.1 and one per subcommand) into a directory.
    Man(docs_cmds::ManArgs),
}

/// `--json` for commands whose output scripts read.
#[derive(Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A command's outcome beyond plain failure: `Ok(false)` means "ran, but found problems" (exit 1
/// without an extra error message).
pub type Outcome = anyhow::Result<bool>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Interrupted work must leave nothing behind: remove any half-written temp file, then exit as a
    // signal-killed process would.
    // A running `mf mount` instead unmounts and returns.
    let _ = ctrlc::set_handler(|| {
        if mount_cmds::interrupt() {
            return;
        }
        mf_format::remove_pending_temp_files();
        std::process::exit(130);
    });
    if let Some(threads) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
            eprintln!("mf: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Pack(args) => pack::run(args),
        Command::List(args) => archive_cmds::list(args),
        Command::Extract(args) => extract::run(args),
        Command::Cat(args) => archive_cmds::cat(args),
        Command::Verify(args) => archive_cmds::verify(args),
        Command::Info(args) => archive_cmds::info(args),
        Command::Add(args) => edit_cmds::add(args),
        Command::Rm(args) => edit_cmds::rm(args),
        Command::Compact(args) => edit_cmds::compact(args),
        Command::Convert(args) => convert::run(args),
        Command::Mount(args) => mount_cmds::mount(args, cli.threads),
        Command::Umount(args) => mount_cmds::umount(args),
        Command::Diff(args) => diff_cmds::diff(args),
        Command::Apply(args) => diff_cmds::apply(args),
        Command::PatchInfo(args) => diff_cmds::patch_info(args),
        Command::Keygen(args) => release_cmds::keygen(args),
        Command::Release(command) => release_cmds::run(command),
        Command::Update(args) => update_cmds::run(args),
        Command::Completions(args) => docs_cmds::completions(args),
        Command::Man(args) => docs_cmds::man(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `mf list big.mf | head` is not an error.
                return ExitCode::SUCCESS;
            }
            eprintln!("mf: {}{}", terminal::escaped(&format!("{err:#}")), hint(&err));
            ExitCode::FAILURE
        }
    }
}

/// What the user can do about an error, in terms of this tool's flags (the libraries know no flags).
fn hint(err: &anyhow::Error) -> &'static str {
    let password_required = |cause: &(dyn std::error::Error + 'static)| {
        matches!(cause.downcast_ref(), Some(mf_panda3d::Error::PasswordRequired { .. }))
            || matches!(cause.downcast_ref(), Some(mf_diff::Error::Panda3d(mf_panda3d::Error::PasswordRequired { .. })))
    };
    if err.chain().any(password_required) {
        " (give its password with --password)"
    } else {
        ""
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(broken)
            || matches!(cause.downcast_ref::<mf_format::Error>(), Some(mf_format::Error::Io { error, .. }) if broken(error))
    })
}

/// Opens an archive, with the file name in any error.
pub fn open_archive(path: &PathBuf) -> anyhow::Result<mf_format::Archive> {
    Ok(mf_format::Archive::open(path)?)
}
