//! `mf mount` and `mf umount`.
//!
//! `mf mount` runs the file system in the foreground until Ctrl-C, SIGTERM or an external unmount.
//! `--background` does not fork (the process may already have threads): it starts this same binary
//! again as a detached child in its own process group, running the foreground mount, and waits on a
//! pipe for the child to report that the mount is live or why it failed.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Args;
use mf_mount::{MountOptions, Stopper, Unmounted};

use crate::Outcome;

#[derive(Args)]
pub struct MountArgs {
    /// Archives to overlay, in order: later archives win for the same path. Each is an mf archive or
    /// a Panda3D multifile (detected by its magic).
    #[arg(required = true, value_name = "ARCHIVE")]
    archives: Vec<PathBuf>,
    /// An existing, empty directory.
    #[arg(value_name = "MOUNTPOINT")]
    mount_point: PathBuf,
    /// Return once the mount is ready, leaving a daemon serving it (stop it with `mf umount`).
    #[arg(long)]
    background: bool,
    /// Let other users see the mount (non-root users need user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Memory for decoded frames of compressed entries, e.g. 64M, 1G, 0 (bytes unless suffixed
    /// K, M or G). Compressed Panda3D subfiles are decoded whole and cached; one larger than this
    /// reads as EIO (logged), since it would be decoded again for every read.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    cache_size: u64,
    /// Kernel read-ahead window in KiB (larger READ requests; root only; 0 keeps the kernel default).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    read_ahead: u32,
    /// Password of encrypted subfiles of Panda3D multifiles (without it, reading one fails with EIO
    /// and a logged message).
    #[arg(long, value_name = "PASSWORD")]
    password: Option<String>,
    /// With --background: append the daemon's messages (I/O errors) to FILE instead of discarding them.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Record which files are opened, in the order first opened, in FILE (created; it must not
    /// exist): one JSON string per line, written as it happens. `mf pack --order-from FILE` lays
    /// them out first.
    #[arg(long, value_name = "FILE")]
    record_trace: Option<PathBuf>,
    /// Internal: run as the daemon of `--background`, reporting readiness on standard output.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

#[derive(Args)]
pub struct UmountArgs {
    /// Where the archives are mounted.
    #[arg(value_name = "MOUNTPOINT")]
    mount_point: PathBuf,
}

/// What the daemon child prints once the mount is live.
const READY: &str = "mf-mount-ready";

/// Worker threads when `--threads` is not given.
const DEFAULT_THREADS: usize = 4;

/// The running mount's stopper, for the signal handler.
static RUNNING: Mutex<Option<Stopper>> = Mutex::new(None);

/// Called by the Ctrl-C/SIGTERM handler. While a mount is running, the first signal unmounts it
/// (the mount command then returns normally) and this returns true; otherwise false, and the caller
/// exits (a second Ctrl-C thus exits at once; the mount is already detached by then).
pub fn interrupt() -> bool {
    let stopper = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take();
    match stopper {
        Some(stopper) => {
            if let Err(e) = stopper.stop() {
                eprintln!("mf: {e}");
            }
            true
        }
        None => false,
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| format!("'{text}' is not a size such as 64M"))?;
    let shift = match suffix.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("unknown size suffix in '{text}' (use K, M or G)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("size '{text}' is too large"))
}

pub fn mount(args: MountArgs, threads: Option<usize>) -> Outcome {
    if args.background && !args.daemon_child {
        return spawn_daemon(&args, threads);
    }
    let options = MountOptions {
        allow_other: args.allow_other,
        cache_size: usize::try_from(args.cache_size).context("cache size does not fit in memory")?,
        threads: threads.unwrap_or(DEFAULT_THREADS),
        read_ahead_kb: (args.read_ahead > 0).then_some(args.read_ahead),
        record_trace: args.record_trace.clone(),
        ..MountOptions::default()
    };
    let mut archives = mf_mount::open_archives(&args.archives)?;
    for archive in &mut archives {
        archive.set_password(args.password.clone());
    }
    let handle = mf_mount::mount(archives, &args.mount_point, &options)?;
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.stopper());
    if args.daemon_child {
        report_ready(args.log.as_deref())?;
    }
    handle.wait();
    RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take();
    handle.unmount()?;
    Ok(true)
}

/// In the daemon child: points standard output and error away from the parent's pipe (at `log`, or
/// /dev/null), then tells the parent through that pipe that the mount is live, and closes it so the
/// parent sees end-of-file. The redirection comes first: once the parent returns, its pipe has no
/// reader, and a message written there (a read error the caller's very next access may cause) would
/// fail.
fn report_ready(log: Option<&Path>) -> anyhow::Result<()> {
    let target: File = match log {
        Some(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?,
        None => File::options().write(true).open("/dev/null")?,
    };
    std::io::stdout().flush()?;
    let mut parent = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    nix::unistd::dup2_stdout(&target)?;
    nix::unistd::dup2_stderr(&target)?;
    writeln!(parent, "{READY}")?;
    parent.flush()?;
    Ok(())
}

/// Starts the daemon child and waits until it reports the mount live (exit 0, silent) or fails
/// (its error, exit 1).
fn spawn_daemon(args: &MountArgs, threads: Option<usize>) -> Outcome {
    // The child runs in `/` (so it pins no directory): hand it absolute paths.
    let absolute = |path: &Path| std::path::absolute(path).with_context(|| format!("bad path {}", path.display()));
    let mut command = Command::new(std::env::current_exe().context("cannot find the mf executable")?);
    if let Some(threads) = threads {
        command.arg("--threads").arg(threads.to_string());
    }
    command.arg("mount").arg("--daemon-child");
    command.arg("--cache-size").arg(args.cache_size.to_string());
    command.arg("--read-ahead").arg(args.read_ahead.to_string());
    if args.allow_other {
        command.arg("--allow-other");
    }
    if let Some(password) = &args.password {
        command.arg("--password").arg(password);
    }
    if let Some(log) = &args.log {
        command.arg("--log").arg(absolute(log)?);
    }
    if let Some(trace) = &args.record_trace {
        command.arg("--record-trace").arg(absolute(trace)?);
    }
    command.arg("--");
    for archive in &args.archives {
        command.arg(absolute(archive)?);
    }
    // Canonical, so that `mf umount` can find this daemon by its mount point.
    command.arg(args.mount_point.canonicalize().or_else(|_| absolute(&args.mount_point))?);

    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone().context("cannot duplicate a pipe")?)
        .stderr(writer)
        .current_dir("/")
        // Its own process group: a Ctrl-C meant for the shell's foreground job does not reach it.
        .process_group(0);
    let mut child = command.spawn().context("cannot start the mount daemon")?;
    // The Command holds the pipe's write ends; close them so the child's exit reads as end-of-file.
    drop(command);

    let mut messages = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.context("cannot read from the mount daemon")?;
        if line == READY {
            return Ok(true);
        }
        messages.push_str(&line);
        messages.push('\n');
    }
    let status = child.wait().context("cannot wait for the mount daemon")?;
    if messages.trim().is_empty() {
        return Err(anyhow!("the mount daemon exited ({status}) without mounting"));
    }
    eprint!("{messages}");
    Ok(false)
}

pub fn umount(args: UmountArgs) -> Outcome {
    let daemons = mf_mount::absolute_mount_point(&args.mount_point).map(|p| daemons_serving(&p)).unwrap_or_default();
    match mf_mount::unmount(&args.mount_point)? {
        Unmounted::Lazily => eprintln!(
            "mf: {} was busy: detached; the file system goes away when its last open file is closed",
            args.mount_point.display()
        ),
        Unmounted::Clean | Unmounted::NotMounted => {
            // Return only once the daemon is gone, so that a mount made right after this one is
            // never disturbed by the old daemon's shutdown.
            let deadline = Instant::now() + Duration::from_secs(10);
            while daemons.iter().any(|&pid| is_running(pid)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(true)
}

/// Whether process `pid` still runs (an exited daemon stays a zombie until its adoptive parent reaps it).
fn is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// Pids of `mf mount --background` daemons serving `mount_point` (their last argument).
fn daemons_serving(mount_point: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let wanted = mount_point.as_os_str().as_encoded_bytes();
    entries
        .flatten()
        .filter_map(|item| {
            let pid: u32 = item.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(item.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
            (args.contains(&&b"--daemon-child"[..]) && args.last() == Some(&wanted)).then_some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
