//! `mf mount` and `mf umount`.
//!
//! `mf mount` runs the file system in the foreground until Ctrl-C, SIGTERM or an external unmount.
//! With `--repo` it serves a release straight from its repository: [`LazyArchive`] fetches and
//! verifies the archive's bytes as reads need them (and fills the rest in the background), and
//! [`mf_mount::mount_on_demand`] asks it for each read's bytes first.
//! `--background` does not fork (the process may already have threads): it starts this same binary
//! again as a detached child in its own process group, running the foreground mount, and waits on a
//! pipe for the child to report that the mount is live or why it failed.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{ArgGroup, Args};
use mf_mount::{MountOptions, OnDemand, Stopper, Unmounted};
use mf_release::fetch::FetchOptions;
use mf_release::lazy::{LazyArchive, LazyOptions};
use mf_release::PublicKey;

use crate::Outcome;

#[derive(Args)]
pub struct MountArgs {
    /// The archives to overlay, in order (later archives win for the same path; each an mf archive
    /// or a Panda3D multifile, detected by its magic), then the mount point: an existing, empty
    /// directory. With --repo, the mount point alone.
    #[arg(required = true, value_name = "ARCHIVE... MOUNTPOINT")]
    paths: Vec<PathBuf>,
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
    #[command(flatten)]
    repo: RepoArgs,
}

/// `mf mount --repo`: a release mounted straight from its repository.
#[derive(Args)]
#[command(group(ArgGroup::new("trust").args(["key", "allow_unsigned"]).requires("repo")))]
pub struct RepoArgs {
    /// Mount a version of this release repository (an http(s):// URL, a file:// URL or a
    /// directory) instead of archive files: its manifest is verified as `mf update` verifies it, and
    /// the archive's bytes are fetched as reads need them, each block checked against the hashes
    /// the signed manifest binds, into a local cache that fills in the background.
    #[arg(long, value_name = "URL|DIR", conflicts_with = "password")]
    repo: Option<String>,
    /// With --repo: the public key the manifest must be signed by (a .pub file or its one-line text).
    #[arg(long, value_name = "PUBKEY")]
    key: Option<String>,
    /// With --repo: accept an unsigned repository (no protection against tampering).
    #[arg(long)]
    allow_unsigned: bool,
    /// With --repo: mount this version instead of the newest.
    #[arg(long, value_name = "VERSION", requires = "repo")]
    version: Option<String>,
    /// With --repo: the cache folder (default $XDG_CACHE_HOME/mf/mounts, or ~/.cache/mf/mounts).
    /// Once complete, it holds `<sha256>.mf`: the same file a full download gives.
    #[arg(long, value_name = "DIR", requires = "repo")]
    cache: Option<PathBuf>,
    /// With --repo: fetch only what is read (and read ahead), not the rest (metered links).
    #[arg(long, requires = "repo")]
    no_fill: bool,
    /// With --repo: bytes per second the background fill may fetch at most, e.g. 2M (reads are
    /// never capped).
    #[arg(long, value_name = "RATE", requires = "repo", value_parser = parse_size)]
    fill_rate: Option<u64>,
    /// With --repo: seconds to wait for a connection or for data before a request counts as stalled.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    timeout: Duration,
    /// With --repo: retries of a request after a transient failure (a read waits for them).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,
}

impl MountArgs {
    /// The archives and the mount point (the last path), checked against `--repo`: one or more
    /// archives without it, none with it.
    fn split_paths(&self) -> anyhow::Result<(&[PathBuf], &Path)> {
        let (mount_point, archives) = self.paths.split_last().ok_or_else(|| anyhow!("no MOUNTPOINT given"))?;
        match (&self.repo.repo, archives.len()) {
            (None, 0) => bail!("give the ARCHIVE(s) to mount, then the MOUNTPOINT (or --repo URL|DIR)"),
            (Some(_), n) if n > 0 => {
                bail!("--repo mounts a release instead of ARCHIVE files: give the MOUNTPOINT only")
            }
            _ => Ok((archives, mount_point)),
        }
    }
}

/// Serves an on-demand mount's reads from the repository.
struct FromRepo(Arc<LazyArchive>);

impl OnDemand for FromRepo {
    fn ensure(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0.ensure(offset, len).map_err(std::io::Error::other)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        self.0.prefetch(offset, len);
    }
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

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("'{text}' is not a number of seconds between 0 and 86400")),
    }
}

/// The default cache folder of `--repo` mounts: `$XDG_CACHE_HOME/mf/mounts`, else
/// `~/.cache/mf/mounts` (a relative XDG_CACHE_HOME is ignored, as the XDG spec asks).
fn default_cache_dir() -> anyhow::Result<PathBuf> {
    let absolute = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return Ok(xdg.join("mf/mounts"));
    }
    let home = absolute("HOME").ok_or_else(|| anyhow!("no cache folder: HOME is not set; pass --cache DIR"))?;
    Ok(home.join(".cache/mf/mounts"))
}

/// Verifies the repository's manifest and opens the version's archive on demand.
fn open_repo(repo: &str, args: &RepoArgs) -> anyhow::Result<Arc<LazyArchive>> {
    let key = match &args.key {
        Some(text) => Some(PublicKey::from_arg(text).context("reading --key")?),
        None if args.allow_unsigned => None,
        None => bail!("--repo needs --key PUBKEY (or --allow-unsigned, which gives no protection against tampering)"),
    };
    let cache_dir = match &args.cache {
        Some(dir) => dir.clone(),
        None => default_cache_dir()?,
    };
    let options = LazyOptions {
        version: args.version.clone(),
        fill: !args.no_fill,
        fill_rate: args.fill_rate,
        fetch: FetchOptions { timeout: args.timeout, attempts: args.retries + 1, ..FetchOptions::default() },
        allow_unsigned: args.allow_unsigned,
        ..LazyOptions::new(cache_dir)
    };
    Ok(LazyArchive::open(repo, key.as_ref(), options)?)
}

/// On a terminal: a bar of the archive's bytes present until it is complete or the mount ends.
fn show_fill(lazy: Arc<LazyArchive>, done: Arc<AtomicBool>) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = crate::progress::bytes(lazy.progress().total, "filling");
    bar.set_message(format!("{} {}", lazy.repo(), lazy.version()));
    let thread = std::thread::spawn(move || loop {
        let progress = lazy.progress();
        bar.set_position(progress.present);
        if let Some(error) = &progress.fill_error {
            bar.set_message(format!("retrying: {error}"));
        }
        if progress.complete || done.load(Ordering::Acquire) {
            bar.finish_and_clear();
            if progress.complete {
                eprintln!("mf: {} is complete in {}", lazy.version(), lazy.cache_path().display());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    Some(thread)
}

pub fn mount(args: MountArgs, threads: Option<usize>) -> Outcome {
    let (archive_paths, mount_point) = args.split_paths()?;
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
    let (handle, lazy) = match &args.repo.repo {
        Some(repo) => {
            let lazy = open_repo(repo, &args.repo)?;
            let archive = lazy.open_archive()?;
            // Also without filling: the background thread serves the read-ahead hints.
            lazy.start_fill();
            let source = Arc::new(FromRepo(lazy.clone()));
            (mf_mount::mount_on_demand(archive, source, mount_point, &options)?, Some(lazy))
        }
        None => {
            let mut archives = mf_mount::open_archives(archive_paths)?;
            for archive in &mut archives {
                archive.set_password(args.password.clone());
            }
            (mf_mount::mount(archives, mount_point, &options)?, None)
        }
    };
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.stopper());
    if args.daemon_child {
        report_ready(args.log.as_deref())?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let bar = lazy.clone().and_then(|lazy| show_fill(lazy, done.clone()));
    handle.wait();
    done.store(true, Ordering::Release);
    RUNNING.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(bar) = bar {
        let _ = bar.join();
    }
    let unmounted = handle.unmount();
    if let Some(lazy) = &lazy {
        // Keeps what was fetched for the next mount (the record of verified blocks).
        lazy.stop();
    }
    unmounted?;
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

/// The `--repo` flags for the daemon child, which runs in `/`: local paths made absolute.
fn add_repo_args(command: &mut Command, args: &RepoArgs) -> anyhow::Result<()> {
    let Some(repo) = &args.repo else { return Ok(()) };
    let absolute = |path: &Path| std::path::absolute(path).with_context(|| format!("bad path {}", path.display()));
    // A directory repository (not a URL) and a key file are paths; a key's own text is passed as is.
    let local = |text: &str| -> anyhow::Result<std::ffi::OsString> {
        let path = Path::new(text);
        Ok(if !text.contains("://") && path.exists() { absolute(path)?.into_os_string() } else { text.into() })
    };
    command.arg("--repo").arg(local(repo)?);
    if let Some(key) = &args.key {
        command.arg("--key").arg(local(key)?);
    }
    if args.allow_unsigned {
        command.arg("--allow-unsigned");
    }
    if let Some(version) = &args.version {
        command.arg("--version").arg(version);
    }
    if let Some(cache) = &args.cache {
        command.arg("--cache").arg(absolute(cache)?);
    }
    if args.no_fill {
        command.arg("--no-fill");
    }
    if let Some(rate) = args.fill_rate {
        command.arg("--fill-rate").arg(rate.to_string());
    }
    command.arg("--timeout").arg(args.timeout.as_secs_f64().to_string());
    command.arg("--retries").arg(args.retries.to_string());
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
    add_repo_args(&mut command, &args.repo)?;
    command.arg("--");
    let (archives, mount_point) = args.split_paths()?;
    for archive in archives {
        command.arg(absolute(archive)?);
    }
    // Canonical, so that `mf umount` can find this daemon by its mount point.
    command.arg(mount_point.canonicalize().or_else(|_| absolute(mount_point))?);

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
