//! `mf update`: bring an archive or an install folder to a release's version (mf-release).

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args};
use indicatif::ProgressBar;
use mf_release::fetch::FetchOptions;
use mf_release::update::folder::{update_folder, FolderOutcome, FolderState};
use mf_release::update::{update_archive, Installed, Outcome, Progress, UpdateOptions};
use mf_release::PublicKey;

use crate::{progress, JsonFlag};

#[derive(Args)]
#[command(group(ArgGroup::new("install").required(true).args(["archive", "dir"])))]
#[command(group(ArgGroup::new("trust").required(true).args(["key", "allow_unsigned"])))]
pub struct UpdateArgs {
    /// The release repository: an http(s):// URL, a file:// URL or a directory.
    #[arg(long, value_name = "URL|DIR")]
    repo: String,
    /// The public key the manifest must be signed by (a .pub file or its one-line text).
    #[arg(long, value_name = "PUBKEY")]
    key: Option<String>,
    /// Accept an unsigned repository (no protection against tampering).
    #[arg(long)]
    allow_unsigned: bool,
    /// Only report the installed version, the target and the route with its bytes; change nothing.
    #[arg(long)]
    check: bool,
    /// Replace an unknown or modified install with the full download.
    #[arg(long)]
    repair: bool,
    /// Identify the installed archive by every entry's SHA-256 even when the record of the last
    /// update says it is unchanged (reads the whole archive).
    #[arg(long)]
    verify: bool,
    /// Rewrite the whole archive and rename it over the old one instead of patching it in place.
    #[arg(long)]
    rebuild: bool,
    /// Update to this version instead of the newest.
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Seconds to wait for a connection or for data before a download counts as stalled.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    timeout: Duration,
    /// Retries of a download after a transient failure (connection lost, timeout, 5xx), each resuming.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    retries: u32,
    /// Update a plain install folder (spec/RELEASE.md "Folder mode").
    #[arg(long, value_name = "INSTALL_DIR")]
    dir: Option<PathBuf>,
    /// The archive to update (created if missing).
    archive: Option<PathBuf>,
    #[command(flatten)]
    json: JsonFlag,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("'{text}' is not a number of seconds between 0 and 86400")),
    }
}

/// A progress bar of the route's bytes, on a terminal only; one message per piece. Created when the
/// first piece starts, so runs that download nothing draw nothing.
struct Bar {
    bar: OnceLock<ProgressBar>,
    state: Mutex<BarState>,
}

impl Bar {
    fn bar(&self) -> &ProgressBar {
        self.bar.get_or_init(|| progress::bytes(0, "fetching"))
    }
}

#[derive(Default)]
struct BarState {
    /// Bytes of the pieces finished before the current one.
    done: u64,
    current: u64,
}

impl Progress for Bar {
    fn piece(&self, index: usize, count: usize, label: &str, size: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let bar = self.bar();
        if index == 0 {
            // A new route (the first, or the full download after a failed patch route).
            *state = BarState::default();
            bar.set_length(0);
        }
        state.current = 0;
        bar.inc_length(size);
        bar.set_message(format!("[{}/{count}] {label}", index + 1));
        bar.set_position(state.done);
    }

    fn bytes(&self, have: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.current = have;
        self.bar().set_position(state.done + have);
    }

    fn piece_done(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.done += state.current;
        state.current = 0;
    }

    fn note(&self, message: &str) {
        match self.bar.get() {
            Some(bar) => bar.suspend(|| eprintln!("mf: {message}")),
            None => eprintln!("mf: {message}"),
        }
    }
}

pub fn run(args: UpdateArgs) -> crate::Outcome {
    let key = match &args.key {
        Some(text) => Some(PublicKey::from_arg(text).context("reading --key")?),
        None => None,
    };
    let options = UpdateOptions {
        key,
        fetch: FetchOptions { timeout: args.timeout, attempts: args.retries + 1, ..FetchOptions::default() },
        to: args.to.clone(),
        check: args.check,
        repair: args.repair,
        verify: args.verify,
        rebuild: args.rebuild,
    };
    let bar = Bar { bar: OnceLock::new(), state: Mutex::new(BarState::default()) };
    let finish = |bar: &Bar| {
        if let Some(bar) = bar.bar.get() {
            bar.finish_and_clear();
        }
    };
    if let Some(dir) = &args.dir {
        let result = update_folder(&args.repo, dir, &options, &bar);
        finish(&bar);
        let outcome = result?;
        if args.json.json {
            say!("{}", serde_json::to_string_pretty(&outcome)?)?;
        } else {
            print_folder_outcome(&outcome)?;
        }
        return Ok(true);
    }
    let archive = args.archive.clone().ok_or_else(|| anyhow!("give an ARCHIVE or --dir INSTALL_DIR"))?;
    let result = update_archive(&args.repo, &archive, &options, &bar);
    finish(&bar);
    let outcome = result?;
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&outcome)?)?;
    } else {
        print_outcome(&outcome)?;
    }
    Ok(true)
}

fn installed_text(installed: &Installed) -> String {
    match installed {
        Installed::Missing => "nothing installed".to_owned(),
        Installed::Version { version } => version.clone(),
        Installed::Unknown { sha256 } => format!("an unknown version (SHA-256 {sha256})"),
    }
}

fn print_outcome(outcome: &Outcome) -> std::io::Result<()> {
    let name = outcome.archive.display();
    let route: Vec<String> = outcome.route.iter().map(|p| format!("{} ({} bytes)", p.label(), p.size)).collect();
    let installed = installed_text(&outcome.installed);
    if outcome.route.is_empty() {
        say!("{name}: already at {} (manifest version {})", outcome.target, outcome.manifest_version)?;
    } else if outcome.check_only {
        say!("{name}: installed {installed}, target {}", outcome.target)?;
        say!("route: {}", route.join(", "))?;
        say!("would fetch {} bytes", outcome.route_bytes)?;
        if outcome.needs_repair {
            say!("the installed archive is unknown or modified: only --repair replaces it")?;
        }
    } else {
        say!("{name}: {installed} -> {} via {}", outcome.target, route.join(", "))?;
        if let Some(reason) = &outcome.fell_back {
            say!("the patch route failed ({reason}); used the full download")?;
        }
        let how = if outcome.in_place { "in place" } else { "as a new file" };
        let compacted = if outcome.compacted { ", then compacted" } else { "" };
        say!("fetched {} bytes; wrote {} bytes ({how}{compacted})", outcome.fetched_bytes, outcome.bytes_written)?;
    }
    Ok(())
}

fn folder_state_text(state: &FolderState) -> String {
    match state {
        FolderState::Fresh => "nothing installed".to_owned(),
        FolderState::Version { version } => version.clone(),
        FolderState::Unknown { closest, differences } => format!(
            "a modified or unknown install ({} files differ from {})",
            differences.len(),
            closest.as_deref().unwrap_or("every version")
        ),
    }
}

fn print_folder_outcome(outcome: &FolderOutcome) -> std::io::Result<()> {
    let name = outcome.dir.display();
    match outcome.recovered.as_deref() {
        Some("finished") => say!("{name}: finished an interrupted update")?,
        Some("pending") => say!("{name}: an interrupted update is pending; the next update finishes it")?,
        _ => {}
    }
    let route: Vec<String> = outcome.route.iter().map(|p| format!("{} ({} bytes)", p.label(), p.size)).collect();
    let installed = folder_state_text(&outcome.installed);
    if outcome.route.is_empty() {
        say!("{name}: already at {} (manifest version {})", outcome.target, outcome.manifest_version)?;
    } else if outcome.check_only {
        say!("{name}: installed {installed}, target {}", outcome.target)?;
        if let FolderState::Unknown { differences, .. } = &outcome.installed {
            for difference in differences.iter().take(20) {
                say!("  {}: {}", crate::terminal::escaped(&difference.path), difference.what)?;
            }
        }
        say!("route: {}", route.join(", "))?;
        say!("would fetch {} bytes", outcome.route_bytes)?;
        if outcome.needs_repair {
            say!("the install is unknown or modified: only --repair changes it")?;
        }
    } else {
        say!("{name}: {installed} -> {} via {}", outcome.target, route.join(", "))?;
        if let Some(reason) = &outcome.fell_back {
            say!("the patch route failed ({reason}); used the full download")?;
        }
        say!(
            "{} files written, {} deleted; fetched {} bytes",
            outcome.files_written,
            outcome.files_deleted,
            outcome.fetched_bytes
        )?;
    }
    Ok(())
}
