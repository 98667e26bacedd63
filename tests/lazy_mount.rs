//! End-to-end tests of `mf mount --repo`: a release mounted straight from its repository, served by a
//! real nginx (with faults injected by a proxy), through real FUSE mounts. Every byte read must be
//! the published version's; what is fetched must be what reads need (Range requests only); a filled
//! cache must be exactly the published archive; failures are EIO, never wrong bytes, never a hang.
//!
//! Each mount is guarded: whatever happens, it is detached and its process killed before the
//! temporary directory goes. Without /dev/fuse these tests fail, unless MF_SKIP_FUSE=1 asks to skip.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy};
use common::fuse::{daemon_pid, detach_and_kill, fuse_available, is_mounted, is_running, wait_until};
use common::nginx::{Nginx, Request};
use common::{mf_fails, mf_ok, noise, read_tree, stored_extents, write_tree};

/// The publisher's block size (the unit of every range request).
const BLOCK: u64 = 64 << 10;

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 40);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} holds {}\n", i.wrapping_mul(2654435761) % 9973).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A game-like tree: a config, small scripts (solid), `data_files` incompressible 128 KiB files
/// (raw), a large compressible level (frames). `version` changes a few of them.
fn tree(root: &Path, data_files: u64, version: u64) {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("boot/config.json".into(), format!("{{\"version\": {version}}}\n").into_bytes()),
        ("levels/big.txt".into(), text(1 << 20, 7)),
    ];
    for i in 0..20 {
        let seed = if i == 3 { 100 * version + i } else { i };
        files.push((format!("scripts/s{i:02}.py"), text(2_000 + 150 * i as usize, seed)));
    }
    for i in 0..data_files {
        let seed = if i == 5 { 1000 * version + i } else { i };
        // Odd seeds: noise() ignores the lowest bit, and equal files would be stored once.
        files.push((format!("data/{i:03}.bin"), noise(128 << 10, 2 * seed + 1)));
    }
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    write_tree(root, &borrowed);
}

/// One published version: its source folder and its full archive in the repository.
struct Version {
    source: PathBuf,
    full: PathBuf,
    sha256: String,
    size: u64,
}

/// A signed repository with versions 1 and 2.
struct Published {
    dir: tempfile::TempDir,
    repo: PathBuf,
    versions: Vec<Version>,
}

impl Published {
    fn new(data_files: u64) -> Published {
        let dir = tempfile::tempdir().unwrap();
        mf_ok(dir.path(), &["keygen", "release"]);
        let repo = dir.path().join("repo");
        let mut published = Published { repo, versions: Vec::new(), dir };
        for version in [1, 2] {
            let source = published.dir.path().join(format!("v{version}"));
            tree(&source, data_files, version);
            published.add(&version.to_string(), &source, &[]);
        }
        published
    }

    /// `mf release add` of `source` as `version` (signed, no patches: not what is tested here).
    fn add(&mut self, version: &str, source: &Path, extra: &[&str]) -> &Version {
        let repo = self.repo.to_str().unwrap();
        let mut args = vec!["release", "add", repo, version, source.to_str().unwrap(), "--sign", "release.key"];
        args.extend_from_slice(&["--patch-from-last", "0", "--json"]);
        args.extend_from_slice(extra);
        let added: serde_json::Value = serde_json::from_str(&mf_ok(self.dir.path(), &args)).unwrap();
        assert!(added["blocks"]["path"].is_string(), "release add publishes a block table: {added}");
        self.versions.push(Version {
            source: source.to_owned(),
            full: self.repo.join(added["full"]["path"].as_str().unwrap()),
            sha256: added["full"]["sha256"].as_str().unwrap().to_owned(),
            size: added["full"]["size"].as_u64().unwrap(),
        });
        self.versions.last().unwrap()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn newest(&self) -> &Version {
        self.versions.last().unwrap()
    }
}

/// A `mf mount` of this test: detached and killed on drop whatever happened.
struct Mount {
    mount_point: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Starts `mf mount ARGS... MNT` in the foreground and waits until the mount is live.
    fn foreground(dir: &Path, name: &str, args: &[&str]) -> Mount {
        let mount_point = dir.join(name);
        std::fs::create_dir_all(&mount_point).unwrap();
        let child = Command::new(common::mf_bin())
            .arg("mount")
            .args(args)
            .arg(&mount_point)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut mount = Mount { mount_point, child: Some(child) };
        let start = Instant::now();
        while !is_mounted(&mount.mount_point) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                let output = mount.child.take().unwrap().wait_with_output().unwrap();
                panic!("mf mount exited early ({status}): {}", String::from_utf8_lossy(&output.stderr));
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the mount did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        mount
    }

    /// `mf mount --background ARGS... MNT`: returns once the mount is live.
    fn background(dir: &Path, name: &str, args: &[&str]) -> Mount {
        let mount_point = dir.join(name);
        std::fs::create_dir_all(&mount_point).unwrap();
        let mut all = vec!["mount", "--background"];
        all.extend_from_slice(args);
        all.push(mount_point.to_str().unwrap());
        assert_eq!(mf_ok(dir, &all), "", "--background prints nothing on success");
        assert!(is_mounted(&mount_point));
        Mount { mount_point, child: None }
    }

    fn file(&self, path: &str) -> PathBuf {
        self.mount_point.join(path)
    }

    /// Unmounts with `mf umount` (which must not hang) and returns the foreground process's output.
    fn stop(mut self) -> Option<Output> {
        let dir = self.mount_point.parent().unwrap().to_owned();
        let out = common::mf_with_deadline(&dir, &["umount", self.mount_point.to_str().unwrap()], 30);
        assert!(out.status.success(), "mf umount failed: {}", String::from_utf8_lossy(&out.stderr));
        let child = self.child.take()?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while is_running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!is_running(pid), "mf mount did not exit after its unmount");
        Some(child.wait_with_output().unwrap())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        detach_and_kill(&self.mount_point, self.child.as_mut());
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reading `path` fails with EIO (never a byte of it is served).
fn assert_eio(path: &Path) {
    match read(path) {
        Ok(bytes) => panic!("{}: read {} bytes instead of failing", path.display(), bytes.len()),
        Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EIO), "{}: {error}", path.display()),
    }
}

/// Drops a file's pages from the kernel's page cache, so its next read reaches the mount.
fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = File::open(path).unwrap();
    // SAFETY: a plain syscall on a descriptor that stays open for the call.
    let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(result, 0, "posix_fadvise");
}

/// The archive's range requests in the access log, as inclusive `(first, last)` byte pairs; each
/// must have been answered 206 (never the whole file).
fn archive_ranges(requests: &[Request]) -> Vec<(u64, u64)> {
    requests
        .iter()
        .filter(|r| r.uri.starts_with("/full/"))
        .map(|r| {
            assert_eq!(r.status, 206, "only range requests for the archive: {r:?}");
            let (a, b) = r.range.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// The blocks holding every stored byte of `paths` in `archive` (frames or raw extent).
fn blocks_of_entries(archive: &mf_format::Archive, paths: &[&str]) -> BTreeSet<u64> {
    let mut blocks = BTreeSet::new();
    for path in paths {
        for (offset, len) in stored_extents(archive, path).into_iter().filter(|e| e.1 > 0) {
            blocks.extend(offset / BLOCK..=(offset + len - 1) / BLOCK);
        }
    }
    blocks
}

/// The blocks `Archive::open` needs: the head (header and commit slots) and index to end.
fn open_blocks(archive: &mf_format::Archive) -> BTreeSet<u64> {
    let (index_offset, _) = archive.index_extent();
    let last = (archive.file_len() - 1) / BLOCK;
    std::iter::once(0).chain(index_offset / BLOCK..=last).collect()
}

fn sha256_of(path: &Path) -> String {
    mf_release::hash::sha256_file(path).unwrap().0
}

#[test]
fn no_fill_fetches_only_the_ranges_that_reads_need_and_serves_exact_bytes() {
    if !fuse_available() {
        return;
    }
    let published = Published::new(40);
    let server = Nginx::serve(&published.repo);
    let url = server.url();
    let newest = published.newest();
    let mount = Mount::foreground(
        published.path(),
        "mnt",
        &["--repo", &url, "--key", "release.pub", "--no-fill", "--cache", "cache"],
    );
    // The tree at once (the index came with the open ranges); stat fetches nothing more.
    let listed = std::fs::read_dir(mount.file("data")).unwrap().count();
    assert_eq!(listed, 40);
    assert_eq!(std::fs::metadata(mount.file("levels/big.txt")).unwrap().len(), 1 << 20);
    let read_paths = ["boot/config.json", "scripts/s03.py", "data/007.bin", "levels/big.txt"];
    for path in read_paths {
        assert_eq!(read(&mount.file(path)).unwrap(), std::fs::read(newest.source.join(path)).unwrap(), "{path}");
    }
    let requests = server.requests();
    assert_eq!(requests[0].uri, "/manifest.json");
    let ranges = archive_ranges(&requests);
    let archive = mf_format::Archive::open(&newest.full).unwrap();
    let mut allowed = open_blocks(&archive);
    allowed.extend(blocks_of_entries(&archive, &read_paths));
    let mut fetched = 0;
    for &(first, last) in &ranges {
        for block in first / BLOCK..=last / BLOCK {
            assert!(allowed.contains(&block), "block {block} ({first}-{last}) was fetched but no read needs it");
        }
        fetched += last - first + 1;
    }
    assert!(
        fetched <= allowed.len() as u64 * BLOCK && fetched < newest.size / 2,
        "fetched {fetched} of {} bytes",
        newest.size
    );
    // Nothing was filled: the cache is still partial.
    let cache = published.path().join("cache");
    assert!(cache.join(format!("{}.mf.partial", newest.sha256)).exists());
    assert!(!cache.join(format!("{}.mf", newest.sha256)).exists());
    mount.stop();

    // An older version on request, in its own cache.
    let mount = Mount::foreground(
        published.path(),
        "mnt-v1",
        &["--repo", &url, "--key", "release.pub", "--version", "1", "--no-fill", "--cache", "cache1"],
    );
    let old = &published.versions[0];
    for path in ["scripts/s03.py", "data/005.bin", "boot/config.json"] {
        assert_eq!(read(&mount.file(path)).unwrap(), std::fs::read(old.source.join(path)).unwrap(), "v1 {path}");
    }
    mount.stop();

    // A wrong key is refused before anything is mounted.
    mf_ok(published.path(), &["keygen", "other"]);
    std::fs::create_dir(published.path().join("mnt-bad")).unwrap();
    let refused =
        mf_fails(published.path(), &["mount", "--repo", &url, "--key", "other.pub", "--cache", "cache2", "mnt-bad"], 1);
    assert!(refused.to_lowercase().contains("signature"), "{refused}");
    assert!(!is_mounted(&published.path().join("mnt-bad")));
}

#[test]
fn the_fill_completes_to_exactly_the_published_archive() {
    if !fuse_available() {
        return;
    }
    let published = Published::new(24);
    let server = Nginx::serve(&published.repo);
    let newest = published.newest();
    let mount = Mount::foreground(
        published.path(),
        "mnt",
        &["--repo", &server.url(), "--key", "release.pub", "--cache", "cache"],
    );
    let complete = published.path().join("cache").join(format!("{}.mf", newest.sha256));
    wait_until("the cache holds the complete archive", Duration::from_secs(60), || complete.exists());
    assert_eq!(sha256_of(&complete), newest.sha256, "the filled cache is the published archive");
    assert!(!published.path().join(format!("cache/{}.mf.partial", newest.sha256)).exists());
    // Every file reads right through the mount, and a full download would not fetch more.
    assert_eq!(read_tree(&mount.mount_point), read_tree(&newest.source));
    // The open ranges' blocks came inside the block table, not as range requests.
    let archive = mf_format::Archive::open(&complete).unwrap();
    let embedded: u64 = open_blocks(&archive).iter().map(|b| BLOCK.min(newest.size - b * BLOCK)).sum();
    let fetched: u64 = archive_ranges(&server.requests()).iter().map(|(a, b)| b - a + 1).sum();
    assert_eq!(fetched, newest.size - embedded, "each block not in the table fetched once");
    mount.stop();
}

#[test]
fn tampered_bytes_are_refetched_or_eio_never_served() {
    if !fuse_available() {
        return;
    }
    let published = Published::new(16);
    let server = Nginx::serve(&published.repo);
    // 0: pass; 1: corrupt every archive response; 2: corrupt the next one only.
    let mode = Arc::new(AtomicUsize::new(0));
    let policy_mode = mode.clone();
    let proxy = FaultProxy::start(server.port, move |_, path| {
        if !path.starts_with("/full/") {
            return Fault::Pass;
        }
        match policy_mode.load(Ordering::SeqCst) {
            1 => Fault::Corrupt { at: 1000 },
            2 if policy_mode.compare_exchange(2, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() => {
                Fault::Corrupt { at: 1000 }
            }
            _ => Fault::Pass,
        }
    });
    let newest = published.newest();
    let expected = |path: &str| std::fs::read(newest.source.join(path)).unwrap();
    let mount = Mount::foreground(
        published.path(),
        "mnt",
        &["--repo", &proxy.url(), "--key", "release.pub", "--no-fill", "--cache", "cache", "--timeout", "5"],
    );

    mode.store(1, Ordering::SeqCst);
    let failing = ["data/009.bin", "data/003.bin", "levels/big.txt"];
    for path in failing {
        assert_eio(&mount.file(path));
    }
    // A corrupted response followed by a good one: the block is fetched again and served right.
    mode.store(2, Ordering::SeqCst);
    assert_eq!(read(&mount.file("data/010.bin")).unwrap(), expected("data/010.bin"));
    assert_eq!(mode.load(Ordering::SeqCst), 0, "the corrupted response was used");
    // The server mends: what failed reads right (no failure was kept).
    for path in failing {
        assert!(read(&mount.file(path)).unwrap() == expected(path), "{path} reads right once the server mends");
    }
    let output = mount.stop().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("data/009.bin") && log.contains("archive bytes"), "one log line per failed read: {log}");
}

#[test]
fn a_server_gone_mid_fill_leaves_cached_files_readable_and_missing_ones_eio_and_unmount_works() {
    if !fuse_available() {
        return;
    }
    let published = Published::new(48);
    let server = Nginx::serve(&published.repo);
    let newest = published.newest();
    let archive = mf_format::Archive::open(&newest.full).unwrap();
    // The data file stored last: far beyond what a slow fill reaches in the test's few seconds.
    let last = archive.entries().filter(|e| e.path().starts_with("data/")).max_by_key(|e| e.offset()).unwrap();
    let last = last.path().to_owned();
    let mount = Mount::foreground(
        published.path(),
        "mnt",
        &[
            "--repo",
            &server.url(),
            "--key",
            "release.pub",
            "--cache",
            "cache",
            "--fill-rate",
            "256K",
            "--timeout",
            "1",
            "--retries",
            "1",
        ],
    );
    let cached = "data/001.bin";
    assert_eq!(read(&mount.file(cached)).unwrap(), std::fs::read(newest.source.join(cached)).unwrap());
    drop(server);

    // Read again from the cache file (not the page cache): still right.
    drop_page_cache(&mount.file(cached));
    assert_eq!(read(&mount.file(cached)).unwrap(), std::fs::read(newest.source.join(cached)).unwrap());
    // A file never fetched: EIO once the request times out, not a hang.
    let start = Instant::now();
    assert_eio(&mount.file(&last));
    assert!(start.elapsed() < Duration::from_secs(20), "the read failed after {:?}", start.elapsed());
    assert!(!published.path().join(format!("cache/{}.mf", newest.sha256)).exists(), "not complete");
    let start = Instant::now();
    let output = mount.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "unmounting took {:?}", start.elapsed());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&last), "the failed read is logged");
}

#[test]
fn a_background_mount_killed_mid_fill_resumes_on_the_next_mount() {
    if !fuse_available() {
        return;
    }
    // About 12.5 MiB: the record of verified blocks is saved every 8 MiB of progress.
    let published = Published::new(100);
    let server = Nginx::serve(&published.repo);
    let newest = published.newest();
    let url = server.url();
    let args = ["--repo", url.as_str(), "--key", "release.pub", "--cache", "cache"];
    let mut slow = args.to_vec();
    slow.extend_from_slice(&["--fill-rate", "3M", "--log", "mount.log"]);
    let mount = Mount::background(published.path(), "mnt", &slow);
    let cache = published.path().join("cache");
    let record = cache.join(format!("{}.blocks", newest.sha256));
    let start = Instant::now();
    while !record.exists() {
        let listing: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name()).collect();
        let log = std::fs::read_to_string(published.path().join("mount.log")).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(60), "no record of progress: {listing:?}; {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = daemon_pid(&mount.mount_point).expect("the daemon runs");
    Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    wait_until("the daemon is gone", Duration::from_secs(10), || !is_running(pid));
    assert!(!cache.join(format!("{}.mf", newest.sha256)).exists(), "killed before the fill completed");
    // `mf umount` clears the dead daemon's mount.
    mf_ok(published.path(), &["umount", mount.mount_point.to_str().unwrap()]);
    drop(mount);

    server.clear_log();
    let mount = Mount::foreground(published.path(), "mnt", &args);
    let complete = cache.join(format!("{}.mf", newest.sha256));
    wait_until("the resumed fill completes", Duration::from_secs(60), || complete.exists());
    let fetched: u64 = archive_ranges(&server.requests()).iter().map(|(a, b)| b - a + 1).sum();
    assert!(fetched < newest.size - (4 << 20), "resumed: fetched {fetched} of {} bytes", newest.size);
    assert_eq!(sha256_of(&complete), newest.sha256);
    assert_eq!(read_tree(&mount.mount_point), read_tree(&newest.source));
    mount.stop();
}

#[test]
fn a_recorded_trace_lays_the_traced_files_first_in_the_next_release() {
    if !fuse_available() {
        return;
    }
    let mut published = Published::new(24);
    let server = Nginx::serve(&published.repo);
    let url = server.url();
    let mount = Mount::foreground(
        published.path(),
        "mnt",
        &["--repo", &url, "--key", "release.pub", "--no-fill", "--cache", "cache", "--record-trace", "trace.jsonl"],
    );
    let traced = ["scripts/s12.py", "data/017.bin", "boot/config.json", "levels/big.txt", "data/002.bin"];
    for path in traced {
        read(&mount.file(path)).unwrap();
    }
    mount.stop();
    let lines: Vec<String> = std::fs::read_to_string(published.path().join("trace.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, traced);

    // An archive given to release add keeps its order: --order-from is refused for it.
    let v2 = published.newest().full.to_str().unwrap().to_owned();
    let refused = mf_fails(
        published.path(),
        &["release", "add", "repo", "x", &v2, "--order-from", "trace.jsonl", "--sign", "release.key"],
        1,
    );
    assert!(refused.contains("--order-from needs a folder"), "{refused}");

    let source = published.newest().source.clone();
    let v3 = published.add("3", &source, &["--order-from", "trace.jsonl"]);
    let (full, sha256) = (v3.full.clone(), v3.sha256.clone());
    let archive = mf_format::Archive::open(&full).unwrap();
    // The traced files are the archive's first data, in trace order.
    let data_start = mf_format::format::DATA_START;
    let mut expected_next = data_start;
    for path in traced {
        let entry = archive.get(path).unwrap();
        assert!(archive.frames_contiguous(&entry), "{path}: frames of its own, back to back");
        assert!(entry.offset() >= expected_next, "{path} comes after the traced files before it");
        assert!(entry.offset() - expected_next < 16, "{path} follows the traced file before it (alignment only)");
        expected_next = entry.offset() + entry.stored_size();
    }
    // A start-up read of them fetches one contiguous range at the front (besides the open ranges).
    server.clear_log();
    let mount = Mount::foreground(
        published.path(),
        "mnt3",
        &["--repo", &url, "--key", "release.pub", "--no-fill", "--cache", "cache3", "--version", "3"],
    );
    for path in traced {
        assert_eq!(read(&mount.file(path)).unwrap(), std::fs::read(source.join(path)).unwrap(), "{path}");
    }
    mount.stop();
    let open = open_blocks(&archive);
    let mut fetched = BTreeSet::new();
    for (first, last) in archive_ranges(&server.requests()) {
        fetched.extend(first / BLOCK..=last / BLOCK);
    }
    // Block 0 (an open range's) came inside the block table: the rest follows it in one run.
    assert!(fetched.iter().all(|b| !open.contains(b)), "the table's blocks are not fetched: {fetched:?}");
    let data_blocks: Vec<u64> = std::iter::once(0).chain(fetched.iter().copied()).collect();
    let contiguous = data_blocks.windows(2).all(|pair| pair[1] == pair[0] + 1);
    assert!(contiguous, "one range from the front: {data_blocks:?}");
    assert_eq!(sha256_of(&full), sha256);
}
