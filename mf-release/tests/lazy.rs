//! Mounting from a repository, library side: `LazyArchive` over a real nginx, with faults injected by
//! a proxy (corrupted, cut and stalled responses, a server gone), resuming a cache, and a tampered
//! cache. Every byte read must be the published archive's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mf_release::hash::{sha256_file, sha256_hex};
use mf_release::lazy::{BlockTable, LazyArchive, LazyOptions};
use mf_release::repo::{self, AddOptions, Signing, DEFAULT_EXPIRY};
use mf_release::{Error, Manifest, ObjectRef, SecretKey};
use mf_test_support::faults::{Fault, FaultProxy};
use mf_test_support::nginx::{Nginx, Request};
use mf_test_support::{noise, write_mf};

const BLOCK: u64 = 64 << 10;

struct Published {
    dir: tempfile::TempDir,
    key: SecretKey,
    repo: PathBuf,
    /// The published archive's bytes.
    archive: Vec<u8>,
}

impl Published {
    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn options(&self) -> LazyOptions {
        let mut options = LazyOptions::new(self.cache());
        options.fetch.timeout = Duration::from_secs(2);
        options.fetch.attempts = 2;
        options.fetch.backoff = Duration::from_millis(20);
        options
    }

    fn open(&self, url: &str, options: LazyOptions) -> mf_release::Result<Arc<LazyArchive>> {
        LazyArchive::open(url, Some(&self.key.public()), options)
    }

    fn full_sha256(&self) -> String {
        sha256_hex(&self.archive)
    }
}

/// A signed repository with one version: 48 entries of 128 KiB of noise (pairs of seeds give the same
/// noise, so 24 are stored: about 3 MiB).
fn publish() -> Published {
    publish_with(48, 128 << 10)
}

/// A signed repository with one version: `count` entries `data/NN.bin` of `size` bytes of noise.
fn publish_with(count: u64, size: usize) -> Published {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..count).map(|i| (format!("data/{i:02}.bin"), noise(size, i))).collect();
    let path = write_mf(dir.path().join("v1.mf"), &files);
    let repo = dir.path().join("repo");
    repo::add(&repo, "1", &path, &add_options(&key), &|_| {}).unwrap();
    let archive = std::fs::read(&path).unwrap();
    Published { dir, key, repo, archive }
}

/// Version 1's block table as published.
fn published_table(published: &Published) -> BlockTable {
    let (manifest, _) = repo::load(&published.repo).unwrap();
    let object = manifest.versions[0].blocks.clone().unwrap();
    BlockTable::parse(&std::fs::read(published.repo.join(&object.path)).unwrap(), "t").unwrap()
}

/// Replaces version 1's block table with `bytes` and signs the manifest again, as a publisher who
/// built that table would: the client gets it bound to a signed manifest, so only its own checks
/// of the table's content stand between it and the bytes.
fn republish_table(published: &Published, bytes: &[u8]) {
    let manifest_path = published.repo.join("manifest.json");
    let (mut manifest, _) =
        Manifest::load_for_publish(&std::fs::read(&manifest_path).unwrap(), None, "manifest").unwrap();
    let sha256 = sha256_hex(bytes);
    let path = format!("blocks/{sha256}.bin");
    std::fs::write(published.repo.join(&path), bytes).unwrap();
    manifest.versions[0].blocks = Some(ObjectRef { path, size: bytes.len() as u64, sha256 });
    manifest.manifest_version += 1;
    std::fs::write(&manifest_path, manifest.to_signed_json(Some(&published.key))).unwrap();
}

/// Every request nginx logged once it holds at least `count` (at most 10 s later), and after a
/// further 200 ms for any that should not be there.
fn all_logged(server: &Nginx, count: usize) -> Vec<Request> {
    wait_until("nginx's log", Duration::from_secs(10), || server.requests().len() >= count);
    std::thread::sleep(Duration::from_millis(200));
    server.requests()
}

fn add_options(key: &SecretKey) -> AddOptions<'_> {
    AddOptions {
        signing: Signing { key: Some(key), expires_in: DEFAULT_EXPIRY },
        patch_from_last: 0,
        memory_limit: 256 << 20,
    }
}

/// Range requests for the archive in the access log: `(first, last)` byte of each.
fn archive_ranges(requests: &[Request]) -> Vec<(u64, u64)> {
    requests
        .iter()
        .filter(|r| r.uri.starts_with("/full/"))
        .map(|r| {
            assert_eq!(r.status, 206, "{r:?}");
            let (a, b) = r.range.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// The archive range requests of nginx's log once it holds `count` of them (nginx logs a request
/// after sending the response, which can be after the client has read it), at most 10 s later.
fn logged(server: &Nginx, count: u64) -> Vec<(u64, u64)> {
    let start = Instant::now();
    loop {
        let ranges = archive_ranges(&server.requests());
        if ranges.len() as u64 >= count || start.elapsed() > Duration::from_secs(10) {
            return ranges;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The archive range requests `lazy` made since it had made `before`, as nginx logged them.
fn logged_since(server: &Nginx, lazy: &LazyArchive, before: u64) -> Vec<(u64, u64)> {
    let all = logged(server, lazy.progress().requests);
    all[before as usize..].to_vec()
}

/// Entry `name`'s content read through the lazy archive after `ensure` of its stored extent.
fn read_entry(lazy: &LazyArchive, name: &str) -> mf_release::Result<Vec<u8>> {
    let archive = lazy.open_archive()?;
    let entry = archive.get(name).expect("listed");
    lazy.ensure(entry.offset(), entry.stored_size())?;
    Ok(archive.read(&entry)?.into_owned())
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn open_fetches_only_the_open_ranges_and_ensure_only_the_blocks_asked_for() {
    let published = publish_with(96, 128 << 10);
    let server = Nginx::serve(&published.repo);
    let lazy = published.open(&server.url(), published.options()).unwrap();
    assert_eq!(lazy.version(), "1");
    assert_eq!(lazy.full().sha256, published.full_sha256());
    assert!(lazy.cache_path().ends_with(format!("{}.mf.partial", published.full_sha256())));
    let table = lazy.table().clone();
    assert_eq!(table.block_size as u64, BLOCK);

    // Opening read the manifest and the block table, nothing else: the table embeds the blocks of
    // the open ranges, which are in the cache, verified, and list the archive.
    let requests = all_logged(&server, 2);
    let uris: Vec<&str> = requests.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris.len(), 2, "{uris:?}");
    assert_eq!(uris[0], "/manifest.json");
    assert!(uris[1].starts_with("/blocks/") && requests[1].status == 200, "{uris:?}");
    assert_eq!(lazy.progress().requests, 0);
    assert_eq!(lazy.open_archive().unwrap().len(), 96);
    let size = published.archive.len() as u64;
    let (index_offset, _) = lazy.open_archive().unwrap().index_extent();
    let tail = index_offset / BLOCK * BLOCK;
    let fetched_at_open = lazy.progress().present;
    assert_eq!(fetched_at_open, BLOCK + (size - tail));
    assert!(lazy.is_present(0, BLOCK) && lazy.is_present(tail, size - tail));
    assert!(table.embedded.is_empty(), "the mount keeps no copy of the embedded blocks");

    // One entry in the middle: one coalesced request for exactly its blocks.
    let name = "data/20.bin";
    assert_eq!(read_entry(&lazy, name).unwrap(), noise(128 << 10, 20));
    let archive = lazy.open_archive().unwrap();
    let entry = archive.get(name).unwrap();
    let blocks = table.blocks_of(entry.offset(), entry.stored_size());
    assert!(blocks.end - blocks.start >= 2, "the entry spans several blocks");
    let ranges = logged_since(&server, &lazy, 0);
    assert_eq!(ranges, vec![(blocks.start * BLOCK, blocks.end * BLOCK - 1)], "neighbours coalesced into one request");
    assert_eq!(lazy.progress().present, fetched_at_open + (blocks.end - blocks.start) * BLOCK);
    assert!(lazy.is_present(entry.offset(), entry.stored_size()));

    // Present blocks are not fetched again; a large range is split into requests of at most 4 MiB.
    lazy.ensure(entry.offset(), entry.stored_size()).unwrap();
    assert_eq!(lazy.progress().requests, 1);
    lazy.ensure(0, size).unwrap();
    let ranges = logged_since(&server, &lazy, 1);
    assert!(ranges.len() >= 3, "{ranges:?}");
    assert_eq!(ranges.iter().map(|(a, b)| b - a + 1).max(), Some(4 << 20), "{ranges:?}");
    for &(a, b) in &ranges {
        assert!(b - a < 4 << 20 && a % BLOCK == 0, "{ranges:?}");
        assert!(b < blocks.start * BLOCK || a >= blocks.end * BLOCK, "present blocks are not asked for again");
    }
    let fetched: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(fetched + fetched_at_open + (blocks.end - blocks.start) * BLOCK, size);
    let made = lazy.progress().requests;
    for i in 0..96 {
        assert_eq!(read_entry(&lazy, &format!("data/{i:02}.bin")).unwrap(), noise(128 << 10, i));
    }
    assert_eq!(lazy.progress().requests, made, "reads of present blocks fetch nothing");

    // A second user of the same cached version is refused while the first holds it.
    let err = published.open(&server.url(), published.options()).err().expect("the cache is in use");
    assert!(matches!(err, Error::CacheInUse { .. }), "{err}");
    drop(lazy);
    published.open(&server.url(), published.options()).unwrap();
}

/// A proxy in front of `server` that applies `fault` to archive range requests once `armed`
/// (requests made while opening pass), and counts the faulted ones.
fn faulty(server: &Nginx, fault: impl Fn(usize) -> Fault + Send + Sync + 'static) -> (FaultProxy, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let seen = AtomicUsize::new(0);
    let flag = armed.clone();
    let proxy = FaultProxy::start(server.port, move |_, path| {
        if flag.load(Ordering::SeqCst) && path.starts_with("/full/") {
            fault(seen.fetch_add(1, Ordering::SeqCst))
        } else {
            Fault::Pass
        }
    });
    (proxy, armed)
}

#[test]
fn a_corrupted_block_is_fetched_again_and_never_served() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    // The first archive request after opening has one byte flipped in its second block.
    let (proxy, armed) = faulty(&server, |n| if n == 0 { Fault::Corrupt { at: BLOCK + 5 } } else { Fault::Pass });
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let before = lazy.progress().requests;
    assert_eq!(read_entry(&lazy, "data/10.bin").unwrap(), noise(128 << 10, 10));
    let ranges = logged_since(&server, &lazy, before);
    assert_eq!(ranges.len(), 2, "the run, then the bad block alone: {ranges:?}");
    assert_eq!(ranges[1], (ranges[0].0 + BLOCK, ranges[0].0 + 2 * BLOCK - 1));

    // Corrupted on every attempt: the BlockHash error, and the block's bytes never reach the cache.
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |_| Fault::Corrupt { at: 7 });
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let archive = lazy.open_archive().unwrap();
    let entry = archive.get("data/30.bin").unwrap();
    let first = entry.offset() / BLOCK;
    match lazy.ensure(entry.offset(), entry.stored_size()) {
        Err(Error::BlockHash { url, block, offset }) => {
            assert_eq!((block, offset), (first, first * BLOCK));
            assert!(url.ends_with(&format!("{}.mf", published.full_sha256())), "{url}");
        }
        other => panic!("expected a BlockHash error, got {other:?}"),
    }
    assert!(!lazy.is_present(first * BLOCK, BLOCK));
    let cached = std::fs::read(lazy.cache_path()).unwrap();
    assert!(cached[(first * BLOCK) as usize..((first + 1) * BLOCK) as usize].iter().all(|&b| b == 0));
    // The error reaches a reader as a failed read, never as other bytes.
    assert!(read_entry(&lazy, "data/30.bin").is_err());
}

#[test]
fn a_cut_connection_is_retried_and_a_stall_times_out() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |n| if n == 0 { Fault::Cut { after: 70_000 } } else { Fault::Pass });
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let before = lazy.progress().requests;
    assert_eq!(read_entry(&lazy, "data/05.bin").unwrap(), noise(128 << 10, 5));
    assert_eq!(lazy.progress().requests, before + 2, "the cut request, then the same one again");
    let ranges = logged_since(&server, &lazy, before);
    assert_eq!(ranges.len(), 2);
    let archive = lazy.open_archive().unwrap();
    let entry = archive.get("data/05.bin").unwrap();
    let blocks = lazy.table().blocks_of(entry.offset(), entry.stored_size());
    assert!(ranges.iter().all(|&r| r == (blocks.start * BLOCK, blocks.end * BLOCK - 1)), "{ranges:?}");
    drop(lazy);

    // A server that stops sending: the read fails after the timeout (2 attempts of 2 s), not never.
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |_| Fault::Stall { after: 100 });
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let err = read_entry(&lazy, "data/05.bin").unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("blocks ") && message.contains("bytes ") && message.contains("/full/"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
}

#[test]
fn a_server_ignoring_ranges_is_refused_rather_than_downloaded_whole() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |_| Fault::IgnoreRange);
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    armed.store(true, Ordering::SeqCst);
    let before = lazy.progress().fetched_bytes;
    let err = read_entry(&lazy, "data/01.bin").unwrap_err().to_string();
    assert!(err.contains("ignores Range"), "{err}");
    assert_eq!(lazy.progress().fetched_bytes, before, "no byte of the 200's body was read");

    // A small archive (at most 1 MiB) is read whole from such a server, and still checked.
    let published = publish_with(4, 100_000);
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |_| Fault::IgnoreRange);
    armed.store(true, Ordering::SeqCst);
    let lazy = published.open(&proxy.url(), published.options()).unwrap();
    assert_eq!(read_entry(&lazy, "data/02.bin").unwrap(), noise(100_000, 2));
    assert!(server.requests().iter().any(|r| r.uri.starts_with("/full/") && r.status == 200));
}

#[test]
fn a_server_gone_mid_fill_fails_missing_blocks_and_keeps_serving_cached_ones() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let mut options = published.options();
    options.fill_rate = Some(1 << 20);
    let lazy = published.open(&server.url(), options).unwrap();
    assert_eq!(read_entry(&lazy, "data/40.bin").unwrap(), noise(128 << 10, 40));
    lazy.start_fill();
    // The fill goes in file order: the first MiB (data/00 among it) is in, the end (data/47) is not.
    wait_until("some fill", Duration::from_secs(30), || lazy.progress().present > 1 << 20);
    drop(server);
    // Cached: still read. Missing: an error after the attempts, not a hang.
    assert_eq!(read_entry(&lazy, "data/40.bin").unwrap(), noise(128 << 10, 40));
    assert_eq!(read_entry(&lazy, "data/00.bin").unwrap(), noise(128 << 10, 0));
    let start = Instant::now();
    let err = read_entry(&lazy, "data/47.bin").unwrap_err();
    assert!(matches!(err, Error::Fetch { .. } | Error::Timeout { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15));
    wait_until("the fill to notice", Duration::from_secs(30), || lazy.progress().fill_error.is_some());
    assert!(!lazy.progress().complete);
    lazy.stop();
}

#[test]
fn a_stopped_fill_resumes_where_it_stopped_and_completes_as_the_full_download() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let size = published.archive.len() as u64;
    let mut options = published.options();
    options.fill_rate = Some(4 << 20);
    let lazy = published.open(&server.url(), options).unwrap();
    lazy.start_fill();
    wait_until("half the archive", Duration::from_secs(30), || lazy.progress().present >= size / 2);
    lazy.stop();
    let present = lazy.progress().present;
    assert!(present < size, "stopped before the end");
    let base = logged(&server, lazy.progress().requests).len();
    drop(lazy);

    // Reopened: the blocks the cache holds are hashed again, not fetched; only the rest is.
    let lazy = published.open(&server.url(), published.options()).unwrap();
    lazy.start_fill();
    wait_until("completion", Duration::from_secs(60), || lazy.progress().complete);
    let ranges = logged(&server, base as u64 + lazy.progress().requests);
    let fetched: u64 = ranges[base..].iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(fetched, size - present, "only the missing blocks were fetched");
    let complete = published.cache().join(format!("{}.mf", published.full_sha256()));
    assert_eq!(lazy.cache_path(), complete);
    assert_eq!(sha256_file(&complete).unwrap().0, published.full_sha256());
    assert!(!published.cache().join(format!("{}.mf.partial", published.full_sha256())).exists());
    assert!(!published.cache().join(format!("{}.blocks", published.full_sha256())).exists());
    // The open archive still reads (the file kept its inode across the rename).
    assert_eq!(read_entry(&lazy, "data/33.bin").unwrap(), noise(128 << 10, 33));
    drop(lazy);

    // A complete cache is used as it is: nothing fetched but metadata.
    let lazy = published.open(&server.url(), published.options()).unwrap();
    assert_eq!(read_entry(&lazy, "data/47.bin").unwrap(), noise(128 << 10, 47));
    assert_eq!(lazy.progress().requests, 0);
}

#[test]
fn a_tampered_cache_is_hashed_again_and_refetched() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let size = published.archive.len() as u64;
    let lazy = published.open(&server.url(), published.options()).unwrap();
    lazy.ensure(0, size).unwrap();
    lazy.stop();
    let partial = lazy.cache_path().to_owned();
    let base = logged(&server, lazy.progress().requests).len();
    drop(lazy);

    // Blocks 10 and 11 are zeroed behind the record's back, and the last byte (of the footer) changed.
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[(10 * BLOCK) as usize..(12 * BLOCK) as usize].fill(0);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&partial, &bytes).unwrap();
    // A record write cut short by a kill left its temp file (pid 0 is no process's).
    let stale = published.cache().join(".mf-state.0.0badf00d.mf-tmp");
    std::fs::write(&stale, b"half a record").unwrap();
    let lazy = published.open(&server.url(), published.options()).unwrap();
    assert!(!stale.exists(), "stale temp files are removed");
    lazy.start_fill();
    wait_until("completion", Duration::from_secs(60), || lazy.progress().complete);
    let ranges = logged(&server, base as u64 + lazy.progress().requests)[base..].to_vec();
    let fetched: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    // The damaged last block is one the table embeds: rewritten from it, not fetched.
    assert_eq!(fetched, 2 * BLOCK, "the two zeroed blocks: {ranges:?}");
    assert_eq!(std::fs::read(lazy.cache_path()).unwrap(), published.archive);
    let base = base + ranges.len();
    drop(lazy);

    // A record claiming every block of an all-zero file: every block fails its hash and is fetched.
    let cache = published.cache();
    let sha = published.full_sha256();
    std::fs::remove_file(cache.join(format!("{sha}.mf"))).unwrap();
    let blocks = size.div_ceil(BLOCK) as usize;
    let mut record = b"MFBITS01".to_vec();
    record.extend_from_slice(&size.to_le_bytes());
    record.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    record.extend(std::iter::repeat_n(0xffu8, blocks.div_ceil(8)));
    std::fs::write(cache.join(format!("{sha}.blocks")), &record).unwrap();
    let file = std::fs::File::create(cache.join(format!("{sha}.mf.partial"))).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    let lazy = published.open(&server.url(), published.options()).unwrap();
    assert_eq!(read_entry(&lazy, "data/02.bin").unwrap(), noise(128 << 10, 2));
    lazy.start_fill();
    wait_until("completion", Duration::from_secs(60), || lazy.progress().complete);
    assert_eq!(std::fs::read(lazy.cache_path()).unwrap(), published.archive);
    let ranges = logged(&server, base as u64 + lazy.progress().requests)[base..].to_vec();
    let fetched: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    let embedded = published_table(&published).embedded.len() as u64;
    assert_eq!(fetched, size - embedded, "every claimed block but the embedded ones was refetched once");
}

#[test]
fn links_in_the_cache_are_refused() {
    let published = publish();
    let cache = published.cache();
    std::fs::create_dir_all(&cache).unwrap();
    let target = published.dir.path().join("elsewhere");
    std::fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, cache.join(format!("{}.mf.partial", published.full_sha256()))).unwrap();
    let err = published.open(published.repo.to_str().unwrap(), published.options()).err().expect("refused");
    assert!(matches!(err, Error::UnsafeState { .. }), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn a_directory_repository_works_and_trust_is_checked() {
    let published = publish();
    let dir_repo = published.repo.to_str().unwrap();
    let lazy = published.open(dir_repo, published.options()).unwrap();
    assert_eq!(read_entry(&lazy, "data/07.bin").unwrap(), noise(128 << 10, 7));
    drop(lazy);

    // Without a key, an unsigned manifest is accepted only when allowed; a wrong key never.
    let err = LazyArchive::open(dir_repo, None, published.options()).err().expect("no key");
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    let other = SecretKey::generate().unwrap();
    let err = LazyArchive::open(dir_repo, Some(&other.public()), published.options()).err().expect("wrong key");
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");

    // An older manifest than the cache already accepted is a rollback.
    let trusted = published.cache().join("trusted.json");
    std::fs::write(&trusted, br#"{"manifest_version": 99, "keyid": null}"#).unwrap();
    let err = published.open(dir_repo, published.options()).err().expect("rollback");
    assert!(matches!(err, Error::Rollback { got: 1, trusted: 99, .. }), "{err}");
    std::fs::remove_file(&trusted).unwrap();

    // Unknown version; a version published without a block table (re-signed manifest without it).
    let mut options = published.options();
    options.version = Some("7".into());
    assert!(matches!(published.open(dir_repo, options).err(), Some(Error::VersionNotFound { .. })));
    let manifest_path = published.repo.join("manifest.json");
    let (mut manifest, _) =
        Manifest::load_for_publish(&std::fs::read(&manifest_path).unwrap(), None, "manifest").unwrap();
    manifest.versions[0].blocks = None;
    manifest.manifest_version += 1;
    std::fs::write(&manifest_path, manifest.to_signed_json(Some(&published.key))).unwrap();
    let err = published.open(dir_repo, published.options()).err().expect("no table");
    assert!(matches!(&err, Error::NoBlockTable { version, .. } if version == "1"), "{err}");
    assert!(err.to_string().contains("version 1"), "{err}");
}

#[test]
fn release_add_publishes_the_block_table_and_prune_removes_it() {
    let published = publish();
    let repo = &published.repo;
    let (manifest, _) = repo::load(repo).unwrap();
    let blocks = manifest.versions[0].blocks.clone().expect("a block table is published");
    assert!(blocks.path.starts_with("blocks/") && blocks.path.ends_with(".bin"));
    let bytes = std::fs::read(repo.join(&blocks.path)).unwrap();
    assert_eq!((bytes.len() as u64, sha256_hex(&bytes)), (blocks.size, blocks.sha256.clone()));
    let table = BlockTable::parse_for(&bytes, &manifest.versions[0].full, "t").unwrap();
    assert_eq!(table.block_size as u64, BLOCK);
    for (i, chunk) in published.archive.chunks(BLOCK as usize).enumerate() {
        assert!(table.block_matches(i as u64, chunk));
    }

    let v2 = write_mf(published.dir.path().join("v2.mf"), [("a.txt", b"two".to_vec())]);
    let added = repo::add(repo, "2", &v2, &add_options(&published.key), &|_| {}).unwrap();
    let v2_blocks = added.blocks.expect("listed in what add returns");
    assert!(repo.join(&v2_blocks.path).is_file());
    let signing = Signing { key: Some(&published.key), expires_in: DEFAULT_EXPIRY };
    let pruned = repo::prune(repo, 1, &signing, false).unwrap();
    assert!(pruned.objects_deleted.contains(&blocks.path), "{:?}", pruned.objects_deleted);
    assert!(!repo.join(&blocks.path).exists());
    assert!(repo.join(&v2_blocks.path).is_file());
}

#[test]
fn concurrent_reads_of_the_same_blocks_fetch_each_block_once() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    // Slow responses, so the threads' requests overlap.
    let proxy = FaultProxy::start(server.port, |_, path| {
        if path.starts_with("/full/") {
            Fault::Throttle { bytes_per_sec: 4 << 20 }
        } else {
            Fault::Pass
        }
    });
    let mut options = published.options();
    options.max_in_flight = 2;
    let lazy = published.open(&proxy.url(), options).unwrap();
    let before = lazy.progress().requests;
    let archive = lazy.open_archive().unwrap();
    let (first, last) = (archive.get("data/20.bin").unwrap(), archive.get("data/29.bin").unwrap());
    let (start, end) = (first.offset(), last.offset() + last.stored_size());
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let lazy = &lazy;
            // Overlapping, differently aligned ranges.
            scope.spawn(move || lazy.ensure(start + t * 10_000, end - start - t * 20_000).unwrap());
        }
    });
    for i in 20..30 {
        assert_eq!(read_entry(&lazy, &format!("data/{i}.bin")).unwrap(), noise(128 << 10, i));
    }
    let mut ranges = logged_since(&server, &lazy, before);
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(pair[0].1 < pair[1].0, "a block was fetched twice: {ranges:?}");
    }
    let fetched: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(fetched, (end.div_ceil(BLOCK) - start / BLOCK) * BLOCK);
}

#[test]
fn without_fill_only_what_is_read_or_read_ahead_is_fetched() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let mut options = published.options();
    options.fill = false;
    let lazy = published.open(&server.url(), options).unwrap();
    let at_open = lazy.progress().present;
    lazy.start_fill();
    let archive = lazy.open_archive().unwrap();
    let entry = archive.get("data/15.bin").unwrap();
    lazy.prefetch(entry.offset(), entry.stored_size());
    wait_until("the read-ahead", Duration::from_secs(30), || lazy.is_present(entry.offset(), entry.stored_size()));
    let blocks = lazy.table().blocks_of(entry.offset(), entry.stored_size());
    std::thread::sleep(Duration::from_millis(300));
    let progress = lazy.progress();
    assert_eq!(progress.present, at_open + (blocks.end - blocks.start) * BLOCK, "nothing else was fetched");
    assert!(!progress.complete);
    assert_eq!(archive.read(&entry).unwrap().as_ref(), noise(128 << 10, 15));
    lazy.stop();
}

/// A mount shares one `LazyArchive` between its threads.
#[test]
fn a_lazy_archive_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<LazyArchive>();
    shared::<Arc<LazyArchive>>();
}

#[test]
fn the_record_of_present_blocks_is_saved_while_filling() {
    // The record is saved after each 8 MiB verified, so a killed fill loses at most that.
    let published = publish_with(220, 128 << 10);
    assert!(published.archive.len() > 12 << 20);
    let server = Nginx::serve(&published.repo);
    let mut options = published.options();
    options.fill_rate = Some(8 << 20);
    let lazy = published.open(&server.url(), options).unwrap();
    let record = published.cache().join(format!("{}.blocks", published.full_sha256()));
    assert!(!record.exists(), "nothing to record before anything is filled");
    lazy.start_fill();
    wait_until("a saved record", Duration::from_secs(30), || record.exists());
    let bytes = std::fs::read(&record).unwrap();
    assert_eq!(&bytes[..8], b"MFBITS01");
    let claimed: u32 = bytes[20..].iter().map(|b| b.count_ones()).sum();
    assert!(u64::from(claimed) * BLOCK >= 8 << 20, "{claimed} blocks");
    // It claims only verified blocks (the last one, present since open, is short).
    assert!(lazy.progress().present + BLOCK > u64::from(claimed) * BLOCK);
    wait_until("completion", Duration::from_secs(60), || lazy.progress().complete);
    assert!(!record.exists(), "removed once complete");
}

#[test]
fn requests_reuse_connections() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let mut options = published.options();
    options.max_in_flight = 1;
    let lazy = published.open(&server.url(), options).unwrap();
    for i in 0..10 {
        assert_eq!(read_entry(&lazy, &format!("data/{:02}.bin", i * 4)).unwrap(), noise(128 << 10, i * 4));
    }
    assert_eq!(lazy.progress().requests, 10);
    drop(lazy);
    // nginx logs (at level info) each connection's close, with its number: `*N client ... closed`.
    wait_until("the connections to close", Duration::from_secs(10), || server.error_log().contains("closed"));
    std::thread::sleep(Duration::from_millis(200));
    let log = server.error_log();
    // A connection closed "while waiting for request" never sent one (the harness's readiness probe).
    let mut connections: Vec<&str> = log
        .lines()
        .filter(|line| !line.contains("while waiting for request"))
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('*')))
        .collect();
    connections.sort();
    connections.dedup();
    // 12 requests (manifest, table, 10 ranges), one after the other: one kept-alive connection.
    assert_eq!(connections.len(), 1, "{log}");
}

#[test]
fn readers_waiting_for_a_failed_fetch_fail_with_it_instead_of_each_retrying() {
    let published = publish();
    let server = Nginx::serve(&published.repo);
    let (proxy, armed) = faulty(&server, |_| Fault::Stall { after: 100 });
    let mut options = published.options();
    options.fetch.timeout = Duration::from_secs(1);
    let lazy = published.open(&proxy.url(), options).unwrap();
    armed.store(true, Ordering::SeqCst);
    let archive = lazy.open_archive().unwrap();
    let entry = archive.get("data/12.bin").unwrap();
    let start = Instant::now();
    let failures = std::thread::scope(|scope| {
        let readers: Vec<_> =
            (0..6).map(|_| scope.spawn(|| lazy.ensure(entry.offset(), entry.stored_size()).is_err())).collect();
        readers.into_iter().map(|r| r.join().unwrap()).filter(|&failed| failed).count()
    });
    assert_eq!(failures, 6);
    // One fetch's attempts (2 of 1 s), not six of them one after the other.
    assert!(start.elapsed() < Duration::from_secs(7), "{:?}", start.elapsed());
    assert!(lazy.progress().requests <= 2 + 2 * 2, "{:?}", lazy.progress());
}

#[test]
fn a_table_without_embedded_blocks_opens_with_range_requests_for_the_open_ranges() {
    // As a publisher leaves a table whose open ranges' blocks exceed 16 MiB (a big index).
    let published = publish_with(96, 128 << 10);
    let mut table = published_table(&published);
    table.embedded.clear();
    republish_table(&published, &table.to_bytes());
    let server = Nginx::serve(&published.repo);
    let lazy = published.open(&server.url(), published.options()).unwrap();
    let size = published.archive.len() as u64;
    let (index_offset, _) = lazy.open_archive().unwrap().index_extent();
    let mut ranges = logged(&server, 2);
    ranges.sort();
    assert_eq!(ranges, vec![(0, BLOCK - 1), (index_offset / BLOCK * BLOCK, size - 1)], "one request per open range");
    assert_eq!(lazy.progress().requests, 2);
    for i in [0, 50, 95] {
        assert_eq!(read_entry(&lazy, &format!("data/{i:02}.bin")).unwrap(), noise(128 << 10, i));
    }
}

#[test]
fn a_tampered_embedded_block_is_never_served_but_fetched_from_the_archive() {
    let published = publish();
    let table = published_table(&published);
    let size = published.archive.len() as u64;
    let last = table.block_count() - 1;
    let last_start = last * BLOCK;
    // The last block (footer) changed inside the table: the table still matches the signed manifest.
    let mut bad = table.clone();
    let at = bad.embedded.len() - 1;
    bad.embedded[at] ^= 1;
    republish_table(&published, &bad.to_bytes());
    let server = Nginx::serve(&published.repo);
    let lazy = published.open(&server.url(), published.options()).unwrap();
    assert_eq!(logged(&server, 1), vec![(last_start, size - 1)], "only the bad block is fetched");
    let cached = std::fs::read(lazy.cache_path()).unwrap();
    assert_eq!(cached[last_start as usize..], published.archive[last_start as usize..]);
    assert_eq!(cached[..BLOCK as usize], published.archive[..BLOCK as usize], "the good embedded block is used");
    assert_eq!(read_entry(&lazy, "data/05.bin").unwrap(), noise(128 << 10, 5));
    drop(lazy);

    // Bad in the table and bad from the server: the open fails, naming the block; nothing is served.
    std::fs::remove_dir_all(published.cache()).unwrap();
    let (proxy, armed) = faulty(&server, |_| Fault::Corrupt { at: 3 });
    armed.store(true, Ordering::SeqCst);
    match published.open(&proxy.url(), published.options()) {
        Err(Error::BlockHash { block, offset, .. }) => assert_eq!((block, offset), (last, last_start)),
        other => panic!("expected a BlockHash error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_table_whose_embedded_length_is_wrong_is_refused_before_any_range_request() {
    let published = publish();
    let table = published_table(&published);
    let good = table.to_bytes();
    let embedded_at = good.len() - table.embedded.len();
    // One block too few (the field and the bytes agree with each other, not with the open ranges).
    let short = (table.embedded.len() as u64) - BLOCK;
    let mut bytes = good[..embedded_at + short as usize].to_vec();
    bytes[56..64].copy_from_slice(&short.to_le_bytes());
    republish_table(&published, &bytes);
    let server = Nginx::serve(&published.repo);
    match published.open(&server.url(), published.options()) {
        Err(e @ Error::BadBlockTable { .. }) => {
            let message = e.to_string();
            assert!(message.contains("/blocks/") && message.contains(&format!("{short} embedded bytes")), "{message}")
        }
        other => panic!("expected a BadBlockTable error, got {:?}", other.map(|_| ())),
    }
    let requests = all_logged(&server, 2);
    assert_eq!(requests.len(), 2, "the manifest and the table only: {requests:?}");
    assert!(archive_ranges(&requests).is_empty());
}
