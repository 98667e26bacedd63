//! Publishing into a release repository (spec/RELEASE.md "Layout" and "Publishing").
//!
//! Every object is written (temp file, fsync, rename) before the manifest that names it, and the
//! manifest last, so a client reading the repository at any moment sees a consistent set. An
//! exclusive lock on `REPO/.lock` serialises publishers.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mf_format::{Archive, AtomicFile};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hash::{is_sha256_hex, sha256_file, sha256_reader};
use crate::keys::{PublicKey, SecretKey};
use crate::lazy::table::{BlockTable, DEFAULT_BLOCK_SIZE};
use crate::manifest::{
    format_time, is_valid_version, FileEntry, FileTable, Manifest, ObjectRef, PatchRef, Version, FILE_TABLE_TYPE,
    MANIFEST_PATH, SPEC_VERSION, STATE_DIR_NAME,
};
use crate::update::write_atomically;

/// Default lifetime of a freshly written manifest.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(180 * 24 * 3600);
const OBJECT_DIRS: [(&str, &str); 4] = [("full", "mf"), ("patches", "mfp"), ("files", "json.zst"), ("blocks", "bin")];

/// How a manifest rewrite is signed and how long it stays valid.
pub struct Signing<'a> {
    /// The publisher's key; `None` writes an unsigned manifest (refused for a signed repository).
    pub key: Option<&'a SecretKey>,
    /// How long the manifest stays valid (`--expires`); zero or past year 9999 is refused by [`Signing::expiry`].
    pub expires_in: Duration,
}

/// The latest expiry an RFC 3339 timestamp can carry: 9999-12-31T23:59:59Z.
const LATEST_EXPIRY_SECS: u64 = 253_402_300_799;

impl Signing<'_> {
    /// When a manifest signed at `now` expires. Refused before anything is written: a zero lifetime
    /// (clients would refuse the manifest at once) and one past year 9999 (no timestamp holds it).
    pub fn expiry(&self, now: SystemTime) -> Result<SystemTime> {
        let bad = |why| Error::BadExpiry { expires_in: self.expires_in, why };
        if self.expires_in.is_zero() {
            return Err(bad("a manifest that expires at once would be refused by every client"));
        }
        let expires = now.checked_add(self.expires_in).ok_or_else(|| bad("too far in the future"))?;
        let secs = expires.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if secs > LATEST_EXPIRY_SECS {
            return Err(bad("too far in the future (the expiry must be before year 10000)"));
        }
        Ok(expires)
    }
}

/// Options of [`add`].
pub struct AddOptions<'a> {
    /// How the rewritten manifest is signed.
    pub signing: Signing<'a>,
    /// Build patches to the new version from this many previous versions.
    pub patch_from_last: usize,
    /// Memory budget for each diff (see [`mf_diff::DiffOptions::memory_limit`]).
    pub memory_limit: u64,
}

/// What [`add`] published.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// The version published.
    pub version: String,
    /// The rewritten manifest's `manifest_version`.
    pub manifest_version: u64,
    /// The version's full archive as stored.
    pub full: ObjectRef,
    /// Its file table as stored.
    pub files: ObjectRef,
    /// Its block hash table as stored (`None` for a Panda3D multifile, which cannot be mounted).
    pub blocks: Option<ObjectRef>,
    /// Patches published to this version.
    pub patches: Vec<PatchRef>,
    /// Versions whose patch was not kept, and why.
    pub patches_skipped: Vec<SkippedPatch>,
    /// Whether the manifest was signed.
    pub signed: bool,
}

/// A patch [`add`] built but did not publish.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedPatch {
    /// The version the patch would have applied to.
    pub from: String,
    /// Why it was not kept: not smaller than the full download, or the archive cannot be rebuilt byte for byte.
    pub reason: String,
}

/// What [`prune`] removed (or would remove, for a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    /// Versions dropped from the manifest, oldest first.
    pub versions_removed: Vec<String>,
    /// Patches of kept versions dropped because they apply to a removed version.
    pub patches_removed: usize,
    /// Object paths deleted (or, for a dry run, that would be).
    pub objects_deleted: Vec<String>,
    /// Bytes of those objects.
    pub bytes_freed: u64,
    /// The rewritten manifest's `manifest_version` (the current one for a dry run).
    pub manifest_version: u64,
    /// Nothing was changed: the fields say what would be.
    pub dry_run: bool,
}

/// A locked repository with its current manifest.
struct Locked {
    root: PathBuf,
    _lock: File,
    manifest: Manifest,
}

impl Locked {
    fn open(root: &Path, key: Option<&SecretKey>, create: bool) -> Result<Locked> {
        if create {
            std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        } else if !root.join(MANIFEST_PATH).is_file() {
            return Err(Error::NotARepository { path: root.to_owned() });
        }
        let lock_path = root.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        let (manifest, was_signed) =
            read_manifest(root, key.map(SecretKey::public).as_ref())?.unwrap_or_else(|| (Manifest::empty(), false));
        if was_signed && key.is_none() {
            return Err(Error::SigningKeyRequired { repo: root.to_owned() });
        }
        Ok(Locked { root: root.to_owned(), _lock: lock, manifest })
    }

    /// Writes `manifest` as the new `manifest.json` with the next manifest version.
    fn commit(&mut self, mut manifest: Manifest, signing: &Signing) -> Result<u64> {
        manifest.manifest_version = self.manifest.manifest_version + 1;
        let expires = signing.expiry(SystemTime::now())?;
        manifest.expires = format_time(expires);
        manifest.validate(MANIFEST_PATH)?;
        write_atomically(&self.root.join(MANIFEST_PATH), &manifest.to_signed_json(signing.key))?;
        self.manifest = manifest;
        Ok(self.manifest.manifest_version)
    }
}

/// Reads `REPO/manifest.json` if present: the manifest and whether it is signed. With `key`, a signed
/// manifest must carry a valid signature by it.
pub fn read_manifest(root: &Path, key: Option<&PublicKey>) -> Result<Option<(Manifest, bool)>> {
    let path = root.join(MANIFEST_PATH);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Manifest::load_for_publish(&bytes, key, &path.display().to_string()).map(Some)
}

/// Adds `archive` (an mf archive) as version `version` of the repository at `root`, creating the
/// repository if needed: stores the archive and its file table, builds patches from the last
/// `patch_from_last` versions, and rewrites the manifest.
pub fn add(root: &Path, version: &str, archive: &Path, options: &AddOptions, log: &dyn Fn(&str)) -> Result<Added> {
    if !is_valid_version(version) {
        return Err(Error::BadVersionName { version: version.to_owned() });
    }
    // Checked before the repository is touched: a bad lifetime must not leave stored objects behind.
    options.signing.expiry(SystemTime::now())?;
    let mut repo = Locked::open(root, options.signing.key, true)?;
    if repo.manifest.version(version).is_some() {
        return Err(Error::AlreadyPublished { repo: root.to_owned(), version: version.to_owned() });
    }
    let table = file_table(archive, version)?;
    let scratch = tempfile::Builder::new().prefix(".mf-publish-").tempdir_in(root).map_err(|e| Error::io(root, e))?;

    log(&format!("storing {}", archive.display()));
    let full = store(root, "full", "mf", archive, Transfer::Copy)?;
    let table_path = scratch.path().join("files.json.zst");
    write_atomically(&table_path, &table.to_object())?;
    let files = store(root, "files", "json.zst", &table_path, Transfer::Move)?;
    let blocks = store_block_table(root, &full, scratch.path())?;

    let mut patches = Vec::new();
    let mut patches_skipped = Vec::new();
    let first = repo.manifest.versions.len().saturating_sub(options.patch_from_last);
    for old in &repo.manifest.versions[first..] {
        let old_path = object_path(root, &old.full)?;
        let patch_path = scratch.path().join(format!("{}.mfp", old.version));
        log(&format!("diffing {} -> {version}", old.version));
        // Panda3D multifiles are diffed as their canonical mf conversions (the patch records it).
        let report = mf_diff::panda3d::diff_any(
            &old_path,
            archive,
            mf_diff::panda3d::PatchSink::File(&patch_path),
            options.memory_limit,
            &|_| {},
        )?
        .report;
        let size = std::fs::metadata(&patch_path).map_err(|e| Error::io(&patch_path, e))?.len();
        // Clients check every result against the full archive's SHA-256, so a patch must rebuild it
        // byte for byte: archives not laid out as mf writes them only get full downloads.
        let skip = if !report.exact {
            Some("the archive is not laid out as mf writes it, so a patch cannot rebuild it byte for byte".to_owned())
        } else if size >= full.size {
            Some(format!("the patch ({size} bytes) is not smaller than the full download"))
        } else {
            None
        };
        if let Some(reason) = skip {
            patches_skipped.push(SkippedPatch { from: old.version.clone(), reason });
            continue;
        }
        let object = store(root, "patches", "mfp", &patch_path, Transfer::Move)?;
        patches.push(PatchRef { from: old.version.clone(), object });
    }

    let mut manifest = repo.manifest.clone();
    manifest.versions.push(Version {
        version: version.to_owned(),
        published: format_time(SystemTime::now()),
        full: full.clone(),
        files: files.clone(),
        patches: patches.clone(),
        blocks: blocks.clone(),
    });
    let manifest_version = repo.commit(manifest, &options.signing)?;
    Ok(Added {
        version: version.to_owned(),
        manifest_version,
        full,
        files,
        blocks,
        patches,
        patches_skipped,
        signed: options.signing.key.is_some(),
    })
}

/// Keeps the newest `keep` versions: drops older versions and the patches from them, rewrites the
/// manifest, then deletes the objects it no longer references.
pub fn prune(root: &Path, keep: usize, signing: &Signing, dry_run: bool) -> Result<Pruned> {
    if keep == 0 {
        return Err(Error::BadArgument("--keep must be at least 1: the newest version always stays".into()));
    }
    signing.expiry(SystemTime::now())?;
    let mut repo = Locked::open(root, signing.key, false)?;
    let mut manifest = repo.manifest.clone();
    let cut = manifest.versions.len().saturating_sub(keep);
    let versions_removed: Vec<String> = manifest.versions.drain(..cut).map(|v| v.version).collect();
    let kept: HashSet<String> = manifest.versions.iter().map(|v| v.version.clone()).collect();
    let mut patches_removed = 0;
    for version in &mut manifest.versions {
        let before = version.patches.len();
        version.patches.retain(|p| kept.contains(&p.from));
        patches_removed += before - version.patches.len();
    }
    let referenced = referenced_paths(&manifest);
    let unreferenced = unreferenced_objects(root, &referenced)?;
    let bytes_freed = unreferenced.iter().map(|(_, len)| len).sum();
    let objects_deleted: Vec<String> = unreferenced.into_iter().map(|(path, _)| path).collect();
    let mut manifest_version = repo.manifest.manifest_version;
    if !dry_run {
        if !versions_removed.is_empty() || patches_removed > 0 {
            manifest_version = repo.commit(manifest, signing)?;
        }
        // Only now that no manifest names them may the objects go.
        for path in &objects_deleted {
            let full = root.join(path);
            std::fs::remove_file(&full).map_err(|e| Error::io(&full, e))?;
        }
    }
    Ok(Pruned { versions_removed, patches_removed, objects_deleted, bytes_freed, manifest_version, dry_run })
}

/// Rewrites the manifest unchanged but for a new manifest version and expiry, signed by `key`.
pub fn resign(root: &Path, signing: &Signing) -> Result<u64> {
    signing.expiry(SystemTime::now())?;
    let mut repo = Locked::open(root, signing.key, false)?;
    // Signing a previously unsigned repository is allowed: clients given the key start trusting it.
    let manifest = repo.manifest.clone();
    repo.commit(manifest, signing)
}

/// The repository's current manifest (no signature or expiry check), for listing.
pub fn load(root: &Path) -> Result<(Manifest, bool)> {
    read_manifest(root, None)?.ok_or_else(|| Error::NotARepository { path: root.to_owned() })
}

/// The file table of an mf archive: every entry in data order with its SHA-256. A Panda3D multifile's
/// table is that of its canonical mf conversion (`spec/PATCH.md`), the archive its patches rebuild.
pub fn file_table(archive_path: &Path, version: &str) -> Result<FileTable> {
    if mf_diff::panda3d::detect(archive_path) == Some(mf_diff::panda3d::ArchiveFormat::Panda3d) {
        let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let canonical = mf_diff::panda3d::canonical_mf(archive_path, &scratch.path().join("canonical.mf"))?;
        return file_table(&canonical, version);
    }
    let archive = Archive::open(archive_path)?;
    if let Some(error) = archive.verify().into_iter().next() {
        return Err(error.into());
    }
    let mut entries = Vec::with_capacity(archive.len());
    for entry in archive.entries() {
        let path = entry.path();
        if path == STATE_DIR_NAME || path.starts_with(&format!("{STATE_DIR_NAME}/")) {
            return Err(Error::ReservedPath { archive: archive_path.to_owned(), entry: path.to_owned() });
        }
        let (sha256, size) = sha256_reader(archive.reader(&entry)).map_err(|e| Error::io(archive_path, e))?;
        entries.push(FileEntry {
            path: path.to_owned(),
            size,
            mode: entry.mode() & 0o7777,
            sha256,
            xxh3: format!("{:016x}", entry.content_hash()),
        });
    }
    Ok(FileTable {
        kind: FILE_TABLE_TYPE.to_owned(),
        spec_version: SPEC_VERSION,
        version: version.to_owned(),
        archive_index_hash: format!("{:016x}", archive.footer().index_hash),
        entries,
    })
}

/// Builds the block hash table of the stored archive `full` (spec/RELEASE.md "Block hash tables and
/// mounting from a repository") and stores it as `blocks/<sha256>.bin`. `None` for a Panda3D
/// multifile: only mf archives are mounted.
fn store_block_table(root: &Path, full: &ObjectRef, scratch: &Path) -> Result<Option<ObjectRef>> {
    let archive = root.join(&full.path);
    if mf_diff::panda3d::detect(&archive) == Some(mf_diff::panda3d::ArchiveFormat::Panda3d) {
        return Ok(None);
    }
    let table = BlockTable::build(&archive, DEFAULT_BLOCK_SIZE)?;
    // Built from the stored copy, which must still be the object the manifest will name.
    if hex::encode(table.archive_sha256) != full.sha256 || table.archive_size != full.size {
        return Err(Error::Mismatch {
            origin: archive.display().to_string(),
            what: "the stored archive changed while its block table was built".into(),
        });
    }
    let path = scratch.join("blocks.bin");
    write_atomically(&path, &table.to_bytes())?;
    store(root, "blocks", "bin", &path, Transfer::Move).map(Some)
}

/// The local path of an object of the repository, checked to exist with the manifest's size.
fn object_path(root: &Path, object: &ObjectRef) -> Result<PathBuf> {
    let path = root.join(&object.path);
    let len = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    if len != object.size {
        return Err(Error::Mismatch {
            origin: path.display().to_string(),
            what: format!("{len} bytes, the manifest says {}", object.size),
        });
    }
    Ok(path)
}

/// How [`store`] brings a file into the repository.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transfer {
    /// Copy (the input belongs to the user), through a temp file, fsync and rename.
    Copy,
    /// Rename a finished, synced scratch file of the same filesystem.
    Move,
}

/// Stores `source` as `DIR/<sha256>.EXT` unless an object with that hash is already there.
fn store(root: &Path, dir: &str, ext: &str, source: &Path, transfer: Transfer) -> Result<ObjectRef> {
    let (sha256, size) = sha256_file(source)?;
    let object = ObjectRef { path: format!("{dir}/{sha256}.{ext}"), size, sha256 };
    let target = root.join(&object.path);
    if existing_object_matches(&target, &object)? {
        return Ok(object);
    }
    create_parent(&target)?;
    match transfer {
        Transfer::Copy => {
            let mut out = AtomicFile::create(&target).map_err(|e| Error::io(&target, e))?;
            let mut input = File::open(source).map_err(|e| Error::io(source, e))?;
            std::io::copy(&mut input, out.file()).map_err(|e| Error::io(&target, e))?;
            out.commit().map_err(|e| Error::io(&target, e))?;
        }
        Transfer::Move => {
            std::fs::rename(source, &target).map_err(|e| Error::io(&target, e))?;
            sync_dir(target.parent().unwrap_or(root))?;
        }
    }
    Ok(object)
}

/// True when `target` exists with the object's exact bytes; a damaged copy is replaced.
fn existing_object_matches(target: &Path, object: &ObjectRef) -> Result<bool> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.len() == object.size => Ok(sha256_file(target)?.0 == object.sha256),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(target, e)),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e)),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    mf_format::fs::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

fn referenced_paths(manifest: &Manifest) -> HashSet<String> {
    let mut paths = HashSet::new();
    for version in &manifest.versions {
        paths.insert(version.full.path.clone());
        paths.insert(version.files.path.clone());
        paths.extend(version.blocks.iter().map(|b| b.path.clone()));
        paths.extend(version.patches.iter().map(|p| p.object.path.clone()));
    }
    paths
}

/// Objects under the repository's object directories that `referenced` does not name. Only files
/// named like objects (`<sha256>.<ext>`) are considered: anything else there is not ours to delete.
fn unreferenced_objects(root: &Path, referenced: &HashSet<String>) -> Result<Vec<(String, u64)>> {
    let mut found = Vec::new();
    for (dir, ext) in OBJECT_DIRS {
        let path = root.join(dir);
        let listing = match std::fs::read_dir(&path) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        for item in listing {
            let item = item.map_err(|e| Error::io(&path, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            let is_object = name.strip_suffix(&format!(".{ext}")).is_some_and(is_sha256_hex);
            let relative = format!("{dir}/{name}");
            if is_object && !referenced.contains(&relative) {
                let len = item.metadata().map_err(|e| Error::io(item.path(), e))?.len();
                found.push((relative, len));
            }
        }
    }
    found.sort();
    Ok(found)
}
