//! `mf keygen` and `mf release add|list|prune|resign`: publishing into a release repository
//! (mf-release, spec/RELEASE.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mf_release::repo::{self, AddOptions, Signing};
use mf_release::SecretKey;
use serde_json::json;

use crate::{JsonFlag, Outcome};

#[derive(Args)]
pub struct KeygenArgs {
    /// Writes NAME.key (secret, mode 0600: keep it off servers) and NAME.pub (give it to clients).
    #[arg(value_name = "NAME")]
    name: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Publish VERSION from an archive or a folder: store it, build patches from recent versions,
    /// rewrite the manifest.
    Add(AddArgs),
    /// Show the repository's versions, downloads and patches.
    List(ListArgs),
    /// Drop old versions and the patches from them, then delete objects no longer referenced.
    Prune(PruneArgs),
    /// Re-sign the manifest with a new expiry (and manifest version), changing nothing else.
    Resign(ResignArgs),
}

#[derive(Args)]
pub struct SigningArgs {
    /// Sign the manifest with this secret key (made by `mf keygen`). Required once a repository is signed.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    /// How long the manifest stays valid, e.g. 90d, 1y, 12h. Clients refuse expired manifests.
    #[arg(long, value_name = "DURATION", default_value = "180d", value_parser = parse_duration)]
    expires: Duration,
}

#[derive(Args)]
pub struct AddArgs {
    /// The repository directory (created if missing); serve it as static files.
    repo: PathBuf,
    /// The version name: 1-128 characters of [A-Za-z0-9._+-], new in this repository.
    version: String,
    /// An mf archive, or a folder (packed with `mf pack`'s defaults).
    input: PathBuf,
    /// When INPUT is a folder: lay out first the files this access trace names, in its order, as
    /// `mf pack --order-from` does (an archive given as INPUT keeps its own order).
    #[arg(long, value_name = "TRACE")]
    order_from: Option<PathBuf>,
    /// Build patches to this version from the last N versions.
    #[arg(long, value_name = "N", default_value_t = 3)]
    patch_from_last: usize,
    /// Memory budget for each diff, e.g. 512M or 2G (default: half of available RAM).
    #[arg(long, value_name = "SIZE", value_parser = crate::diff_cmds::parse_memory_limit)]
    memory_limit: Option<u64>,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct ListArgs {
    repo: PathBuf,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct PruneArgs {
    repo: PathBuf,
    /// Keep the newest N versions.
    #[arg(long, value_name = "N")]
    keep: usize,
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    signing: SigningArgs,
    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Args)]
pub struct ResignArgs {
    repo: PathBuf,
    #[command(flatten)]
    signing: SigningArgs,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration (examples: 90d, 1y, 12h): {e}"))
}

pub fn keygen(args: KeygenArgs) -> Outcome {
    let secret_path = with_suffix(&args.name, "key");
    let public_path = with_suffix(&args.name, "pub");
    if !args.force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                bail!(
                    "{} exists; pass --force to replace it (clients trusting the old key would refuse the new one)",
                    path.display()
                );
            }
        }
    }
    let key = SecretKey::generate()?;
    key.write_to(&secret_path, args.force).with_context(|| format!("writing {}", secret_path.display()))?;
    mf_format::fs::write_atomic(&public_path, key.public().to_text().as_bytes())
        .with_context(|| format!("writing {}", public_path.display()))?;
    say!("key id {}", key.public().key_id())?;
    say!("secret key: {} (sign with `mf release add --sign`; keep it private)", secret_path.display())?;
    say!("public key: {} (clients: `mf update --key`)", public_path.display())?;
    Ok(true)
}

fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut text = name.as_os_str().to_owned();
    text.push(".");
    text.push(suffix);
    PathBuf::from(text)
}

fn load_key(signing: &SigningArgs) -> anyhow::Result<Option<SecretKey>> {
    signing.sign.as_deref().map(|path| SecretKey::load(path).map_err(anyhow::Error::from)).transpose()
}

pub fn run(command: ReleaseCommand) -> Outcome {
    match command {
        ReleaseCommand::Add(args) => add(args),
        ReleaseCommand::List(args) => list(args),
        ReleaseCommand::Prune(args) => prune(args),
        ReleaseCommand::Resign(args) => resign(args),
    }
}

fn add(args: AddArgs) -> Outcome {
    let key = load_key(&args.signing)?;
    // Before packing a folder: a lifetime that cannot be published fails at once.
    Signing { key: key.as_ref(), expires_in: args.signing.expires }.expiry(std::time::SystemTime::now())?;
    let metadata = std::fs::metadata(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    // A folder is packed first, into the repository's filesystem, then published like an archive.
    let _scratch;
    if args.order_from.is_some() && !metadata.is_dir() {
        bail!(
            "--order-from needs a folder as INPUT: {} is an archive, whose order is fixed (repack it with mf pack --order-from)",
            args.input.display()
        );
    }
    let archive = if metadata.is_dir() {
        std::fs::create_dir_all(&args.repo).with_context(|| format!("creating {}", args.repo.display()))?;
        let scratch = tempfile::Builder::new()
            .prefix(".mf-pack-")
            .tempdir_in(&args.repo)
            .with_context(|| format!("creating a scratch directory in {}", args.repo.display()))?;
        let packed = scratch.path().join("release.mf");
        // The library's directory packing with default options: the same bytes as `mf pack DIR`
        // (with `--order-from TRACE` as given).
        let options = mf_format::DirPackOptions { order_from: args.order_from.clone(), ..Default::default() };
        let collected = mf_format::collect_inputs(std::slice::from_ref(&args.input), Some(&packed), &options)?;
        if let (Some(trace), Some(order), false) = (&args.order_from, &collected.trace, args.json.json) {
            crate::pack::report_trace_order(trace, order);
        }
        mf_format::pack_to_file(&collected.inputs, &packed, options.writer, |_, _| {})?;
        _scratch = scratch;
        packed
    } else {
        args.input.clone()
    };
    let options = AddOptions {
        signing: Signing { key: key.as_ref(), expires_in: args.signing.expires },
        patch_from_last: args.patch_from_last,
        memory_limit: args.memory_limit.unwrap_or_else(mf_diff::default_memory_limit),
    };
    let quiet = args.json.json || !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = |message: &str| {
        if !quiet {
            eprintln!("mf: {message}");
        }
    };
    let added = repo::add(&args.repo, &args.version, &archive, &options, &log)?;
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&added)?)?;
        return Ok(true);
    }
    say!(
        "published {} (manifest version {}{}): full {} bytes",
        added.version,
        added.manifest_version,
        if added.signed { ", signed" } else { ", UNSIGNED" },
        added.full.size
    )?;
    if let Some(blocks) = &added.blocks {
        say!("  block hash table: {} bytes", blocks.size)?;
    }
    for patch in &added.patches {
        say!("  patch from {}: {} bytes", patch.from, patch.object.size)?;
    }
    for skipped in &added.patches_skipped {
        say!("  no patch from {}: {}", skipped.from, skipped.reason)?;
    }
    Ok(true)
}

fn list(args: ListArgs) -> Outcome {
    let (manifest, signed) = repo::load(&args.repo)?;
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&json!({ "signed": signed, "manifest": manifest }))?)?;
        return Ok(true);
    }
    say!(
        "manifest version {}, {}, expires {}",
        manifest.manifest_version,
        if signed { "signed" } else { "unsigned" },
        manifest.expires
    )?;
    for version in manifest.versions.iter().rev() {
        say!("{}  published {}  full {} bytes", version.version, version.published, version.full.size)?;
        for patch in &version.patches {
            say!("    from {}: {} bytes", patch.from, patch.object.size)?;
        }
    }
    Ok(true)
}

fn prune(args: PruneArgs) -> Outcome {
    let key = load_key(&args.signing)?;
    let signing = Signing { key: key.as_ref(), expires_in: args.signing.expires };
    let pruned = repo::prune(&args.repo, args.keep, &signing, args.dry_run)?;
    if args.json.json {
        say!("{}", serde_json::to_string_pretty(&pruned)?)?;
        return Ok(true);
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    say!(
        "{verb} {} version(s) {:?}, {} patch(es), {} object(s), {} bytes",
        pruned.versions_removed.len(),
        pruned.versions_removed,
        pruned.patches_removed,
        pruned.objects_deleted.len(),
        pruned.bytes_freed
    )?;
    Ok(true)
}

fn resign(args: ResignArgs) -> Outcome {
    let key = load_key(&args.signing)?;
    if key.is_none() {
        bail!("resign needs --sign KEY");
    }
    let expires_in = args.signing.expires;
    let version = repo::resign(&args.repo, &Signing { key: key.as_ref(), expires_in })?;
    say!("manifest version {version} signed, valid for {}", humantime::format_duration(expires_in))?;
    Ok(true)
}
