//! An archive of a release repository fetched on demand (spec/RELEASE.md "Block hash tables and
//! mounting from a repository"): what `mf mount --repo` serves while the archive downloads.
//!
//! [`LazyArchive::open`] verifies the manifest as `mf update` does (signature, expiry, rollback
//! against `CACHE/trusted.json`), fetches the version's block hash table (bound to the manifest by
//! size and SHA-256), creates the local cache file at the archive's full size (sparse) and fetches
//! the byte ranges [`mf_format::Archive`] reads at open. From then on [`LazyArchive::ensure`] makes
//! any byte range present before it is read: missing blocks are fetched with HTTP range requests
//! (neighbours coalesced, several in flight), each checked against its SHA-256 before it is written
//! to the cache, and a background fill ([`LazyArchive::start_fill`]) fetches the rest in file order.
//! Once every block is present the file's SHA-256 must equal the manifest's, and it is renamed to
//! `CACHE/<sha256>.mf`: exactly the file a full download gives.
//!
//! The cache is untrusted: the record of which blocks are present (`<sha256>.blocks`) only says
//! where to look; each such block is hashed again before its first use in a session.
//!
//! ```no_run
//! use mf_release::lazy::{LazyArchive, LazyOptions};
//! # fn main() -> mf_release::Result<()> {
//! let key = mf_release::PublicKey::from_arg("release.pub")?;
//! let lazy = LazyArchive::open("https://example.com/game", Some(&key), LazyOptions::new("cache".into()))?;
//! let archive = lazy.open_archive()?; // index and footer are already present
//! let entry = archive.get("scripts/main.py").expect("listed");
//! lazy.ensure(entry.offset(), entry.stored_size())?; // fetched and verified now
//! let script = archive.read(&entry)?;
//! lazy.start_fill(); // the rest in the background
//! # Ok(()) }
//! ```

mod blocks;
mod cache;
mod fill;
pub mod table;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mf_format::fs::Dir;
use nix::fcntl::Flock;

use crate::error::{Error, Result};
use crate::fetch::{FetchOptions, Fetcher};
use crate::hash::sha256_hex;
use crate::keys::PublicKey;
use crate::manifest::{Manifest, ObjectRef, MANIFEST_PATH, MAX_MANIFEST_SIZE};
use crate::update::{read_trusted, state, Trusted, TRUSTED_FILE};

pub use table::BlockTable;

use blocks::{BlockStates, Slots};
use fill::FillControl;

/// How a [`LazyArchive`] caches, fetches and fills.
#[derive(Debug, Clone)]
pub struct LazyOptions {
    /// The cache folder (created if missing; must be this user's): it holds `<sha256>.mf.partial`
    /// and `<sha256>.blocks` while the archive downloads, then `<sha256>.mf`, plus `trusted.json`
    /// (the newest manifest version accepted) and `<sha256>.lock`.
    pub cache_dir: PathBuf,
    /// The version to mount; the newest when `None`.
    pub version: Option<String>,
    /// Fill the cache in the background until the archive is complete ([`LazyArchive::start_fill`]);
    /// `false` (`--no-fill`) fetches only what is read and read ahead.
    pub fill: bool,
    /// Bytes per second the background fill may fetch at most (`None`: no cap).
    pub fill_rate: Option<u64>,
    /// Range requests in flight at once, at least 1.
    pub max_in_flight: usize,
    /// Timeouts and retries of every request.
    pub fetch: FetchOptions,
    /// Accept an unsigned manifest when no key is given (the key, when given, is always required).
    pub allow_unsigned: bool,
}

impl LazyOptions {
    /// Defaults: the newest version, background fill without a rate cap, 4 requests in flight,
    /// [`FetchOptions::default`], signed manifests only.
    pub fn new(cache_dir: PathBuf) -> LazyOptions {
        LazyOptions {
            cache_dir,
            version: None,
            fill: true,
            fill_rate: None,
            max_in_flight: 4,
            fetch: FetchOptions::default(),
            allow_unsigned: false,
        }
    }
}

/// How far a [`LazyArchive`] is (see [`LazyArchive::progress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LazyProgress {
    /// Bytes of the archive present in the cache and verified in this session.
    pub present: u64,
    /// The archive's length.
    pub total: u64,
    /// Bytes received from the repository by this session (the manifest and block table included).
    pub fetched_bytes: u64,
    /// Range requests made for the archive (each attempt of a retried request counts).
    pub requests: u64,
    /// The archive is complete: every block verified, the whole file's SHA-256 matched the manifest,
    /// and it was renamed to `<sha256>.mf`.
    pub complete: bool,
    /// The background fill's last failure, if its last attempt failed (it retries with backoff).
    pub fill_error: Option<String>,
}

/// A version's archive, fetched on demand into a local sparse cache file (module docs).
/// `Send + Sync`: share it as `Arc<LazyArchive>`.
pub struct LazyArchive {
    repo: String,
    version: String,
    /// The version's full archive, as the signed manifest gives it.
    full: ObjectRef,
    /// The archive's URL (or path), for messages.
    url: String,
    fetcher: Fetcher,
    table: BlockTable,
    /// The cache folder, opened once; every name in it is reached through this handle.
    cache: Dir,
    /// The cache file, open for reading and writing (it keeps its inode when renamed complete).
    file: File,
    /// `<sha256>.mf.partial` and `<sha256>.mf` in the cache folder, for messages.
    partial_path: PathBuf,
    complete_path: PathBuf,
    /// The file has its complete name.
    renamed: AtomicBool,
    complete: AtomicBool,
    states: BlockStates,
    slots: Slots,
    /// `ensure` calls running now: the background fill waits while there are any.
    foreground: AtomicUsize,
    /// Bytes verified since the block record was last saved.
    unsaved: AtomicU64,
    /// Serialises saves of the block record.
    saving: Mutex<()>,
    fill: Arc<FillControl>,
    options: LazyOptions,
    /// Held while this archive lives: one user of a cached version at a time.
    _lock: Flock<File>,
}

impl LazyArchive {
    /// Verifies the manifest of `repo` (an `http(s)://` URL, `file://` URL or directory) signed by
    /// `key` (as `mf update` does: signature, expiry, no rollback against the cache's record), takes
    /// the cache's lock for the version, fetches the version's block hash table, writes the blocks it
    /// embeds into the sparse cache file (created at full size), fetches in parallel whatever of the
    /// table's open ranges is still missing (all of them when the table embeds none), and returns once
    /// [`LazyArchive::open_archive`] succeeds. A cache left by an earlier run is resumed: the blocks
    /// it records are hashed again before use, the others fetched.
    pub fn open(repo: &str, key: Option<&PublicKey>, options: LazyOptions) -> Result<Arc<LazyArchive>> {
        let fetcher = Fetcher::new(repo, options.fetch.clone())?;
        let origin = fetcher.url(MANIFEST_PATH);
        if key.is_none() && !options.allow_unsigned {
            return Err(Error::BadSignature {
                origin,
                what: "no public key given to verify the manifest with (pass the key, or allow unsigned repositories)"
                    .into(),
            });
        }
        let cache = state::open_state_dir(&options.cache_dir, true)?
            .ok_or_else(|| Error::Internal("the cache folder was not created".into()))?;
        let manifest = fetch_manifest(&fetcher, key, &cache, &origin)?;
        let version = match &options.version {
            Some(name) => manifest.version(name).ok_or_else(|| Error::VersionNotFound {
                repo: repo.to_owned(),
                version: name.clone(),
                available: manifest.versions.iter().map(|v| v.version.clone()).collect(),
            })?,
            None => manifest.latest().ok_or_else(|| Error::NoVersions { repo: repo.to_owned() })?,
        };
        let blocks_ref = version
            .blocks
            .as_ref()
            .ok_or_else(|| Error::NoBlockTable { repo: repo.to_owned(), version: version.version.clone() })?;
        let mut table = fetch_table(&fetcher, blocks_ref, &version.full)?;
        // Written into the cache below, then dropped: the table the mount keeps holds digests only.
        let embedded = std::mem::take(&mut table.embedded);
        let full = version.full.clone();
        let lock = cache::lock(&cache, &full.sha256)?;
        // Left by a killed run: temp files of record writes nobody holds any more (a running mount's
        // are locked and stay).
        cache.remove_stale_temps(state::TEMP_PREFIX, state::TEMP_SUFFIX).map_err(|e| Error::io(cache.path(), e))?;
        let opened = cache::open_file(&cache, &full, &table)?;
        let states = BlockStates::new(&table, &opened.claimed);
        let lazy = Arc::new(LazyArchive {
            repo: repo.to_owned(),
            version: version.version.clone(),
            url: fetcher.url(&full.path),
            full,
            fetcher,
            partial_path: cache.display_path(&opened.partial_name),
            complete_path: cache.display_path(&opened.complete_name),
            renamed: AtomicBool::new(opened.is_complete_name),
            complete: AtomicBool::new(false),
            table,
            cache,
            file: opened.file,
            states,
            slots: Slots::new(options.max_in_flight.max(1)),
            foreground: AtomicUsize::new(0),
            unsaved: AtomicU64::new(0),
            saving: Mutex::new(()),
            fill: Arc::new(FillControl::default()),
            options,
            _lock: lock,
        });
        if !opened.is_complete_name {
            lazy.write_embedded(&embedded)?;
        }
        drop(embedded);
        lazy.fetch_open_ranges()?;
        lazy.open_archive()?;
        Ok(lazy)
    }

    /// The version served.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The repository as given to [`LazyArchive::open`].
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The version's full archive as the signed manifest lists it (path, size, SHA-256).
    pub fn full(&self) -> &ObjectRef {
        &self.full
    }

    /// The verified block hash table.
    pub fn table(&self) -> &BlockTable {
        &self.table
    }

    /// The archive's URL (or path in a directory repository).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache file's current path: `<sha256>.mf.partial`, or `<sha256>.mf` once complete (the
    /// open file keeps its inode across the rename).
    pub fn cache_path(&self) -> &Path {
        if self.renamed.load(Ordering::Acquire) {
            &self.complete_path
        } else {
            &self.partial_path
        }
    }

    /// The archive read from the cache file's open descriptor ([`mf_format::Archive::from_file`]).
    /// Its header, index and footer are present; entry data is only after [`LazyArchive::ensure`]
    /// of its stored extent (holes read as zeros).
    pub fn open_archive(&self) -> Result<mf_format::Archive> {
        Ok(mf_format::Archive::from_file(&self.file, self.cache_path())?)
    }

    /// Blocks until bytes `[offset, offset + len)` of the archive (clamped to its length) are in the
    /// cache file and verified. Missing blocks are fetched (neighbouring missing blocks coalesced into
    /// one request of at most [`MAX_REQUEST`] bytes, up to `max_in_flight` requests in parallel); a
    /// block another thread is already fetching is waited for, not fetched twice (and if that fetch
    /// fails, this call fails too instead of trying again after it); a block that fails
    /// its hash is fetched once more, then refused with [`Error::BlockHash`]. Errors name the URL,
    /// block and offset; a server that is gone fails after the fetch options' timeout and attempts.
    pub fn ensure(&self, offset: u64, len: u64) -> Result<()> {
        self.foreground.fetch_add(1, Ordering::SeqCst);
        let result = self.ensure_blocks(offset, len);
        self.foreground.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// True when bytes `[offset, offset + len)` are present and verified in this session (no fetch).
    pub fn is_present(&self, offset: u64, len: u64) -> bool {
        self.states.all_verified(self.table.blocks_of(offset, len))
    }

    /// Non-blocking read-ahead: queues `[offset, offset + len)` for the background thread, ahead of
    /// the fill in file order. Served once [`LazyArchive::start_fill`] runs (also without `fill`).
    pub fn prefetch(&self, offset: u64, len: u64) {
        if !self.is_present(offset, len) {
            self.fill.queue(offset, len);
        }
    }

    /// How far the archive is.
    pub fn progress(&self) -> LazyProgress {
        LazyProgress {
            present: self.states.present_bytes(),
            total: self.table.archive_size,
            fetched_bytes: self.fetcher.received(),
            requests: self.fetcher.range_requests(),
            complete: self.complete.load(Ordering::Acquire),
            fill_error: self.fill.error(),
        }
    }

    /// Starts the background thread (once): it serves [`LazyArchive::prefetch`] requests first and,
    /// with `fill`, fetches every other block in file order, at most `fill_rate` bytes a second and
    /// only while no [`LazyArchive::ensure`] call is running. When every block is present it checks
    /// the whole file's SHA-256 against the manifest, fsyncs it, renames it to `<sha256>.mf` and
    /// removes the block record. It stops then, or at [`LazyArchive::stop`], or when the archive is
    /// dropped. Failures (a server gone) are kept in [`LazyProgress::fill_error`] and retried with backoff.
    pub fn start_fill(self: &Arc<Self>) {
        fill::start(self);
    }

    /// Stops the background thread and waits for it (unless called on it), then saves the record of
    /// present blocks. [`LazyArchive::ensure`] keeps working.
    pub fn stop(&self) {
        self.fill.stop_and_join();
        self.save_record();
    }

    /// Fetches the table's open ranges (what [`mf_format::Archive`] reads at open), in parallel.
    fn fetch_open_ranges(&self) -> Result<()> {
        let ranges = &self.table.open_ranges;
        std::thread::scope(|scope| {
            let running: Vec<_> =
                ranges.iter().map(|r| scope.spawn(move || self.ensure_blocks(r.offset, r.len))).collect();
            running.into_iter().try_for_each(|thread| {
                thread.join().unwrap_or_else(|_| Err(Error::Internal("a fetch thread panicked".into())))
            })
        })
    }

    /// The repository and version, for messages.
    fn describe(&self) -> String {
        format!("{} version {}", self.repo, self.version)
    }
}

impl Drop for LazyArchive {
    fn drop(&mut self) {
        self.fill.request_stop();
        self.save_record();
    }
}

/// The longest range request a [`LazyArchive`] makes.
pub const MAX_REQUEST: u64 = 4 << 20;

/// Fetches and verifies the manifest; refuses a rollback against `CACHE/trusted.json` and records
/// the accepted manifest version there.
fn fetch_manifest(fetcher: &Fetcher, key: Option<&PublicKey>, cache: &Dir, origin: &str) -> Result<Manifest> {
    let bytes = fetcher.fetch_small(MANIFEST_PATH, MAX_MANIFEST_SIZE)?;
    let manifest = Manifest::verify(&bytes, key, SystemTime::now(), origin)?;
    if let Some(trusted) = read_trusted(cache)? {
        if manifest.manifest_version < trusted.manifest_version {
            return Err(Error::Rollback {
                origin: origin.to_owned(),
                got: manifest.manifest_version,
                trusted: trusted.manifest_version,
            });
        }
    }
    let trusted = Trusted { manifest_version: manifest.manifest_version, keyid: key.map(PublicKey::key_id) };
    state::write_file(cache, TRUSTED_FILE, &serde_json::to_vec_pretty(&trusted).unwrap_or_default())?;
    Ok(manifest)
}

/// Fetches the block table `object` and checks it against the manifest (size, SHA-256) and against
/// the archive `full` it describes.
fn fetch_table(fetcher: &Fetcher, object: &ObjectRef, full: &ObjectRef) -> Result<BlockTable> {
    let url = fetcher.url(&object.path);
    if object.size > table::MAX_BLOCK_TABLE_SIZE {
        return Err(Error::BadBlockTable {
            origin: url,
            what: format!(
                "the manifest gives {} bytes, more than the {}-byte limit",
                object.size,
                table::MAX_BLOCK_TABLE_SIZE
            ),
        });
    }
    let bytes = fetcher.fetch_small(&object.path, object.size)?;
    let sha256 = sha256_hex(&bytes);
    if bytes.len() as u64 != object.size || sha256 != object.sha256 {
        return Err(Error::Mismatch {
            origin: url,
            what: format!(
                "got {} bytes with SHA-256 {sha256}, but the manifest says {} bytes with SHA-256 {}",
                bytes.len(),
                object.size,
                object.sha256
            ),
        });
    }
    BlockTable::parse_for(&bytes, full, &url)
}
