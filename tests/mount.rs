//! End-to-end tests of `mf mount` / `mf umount` and of `mf_mount::mount`, with real FUSE mounts.
//!
//! Every mount is made on a fresh temporary directory and guarded: whatever happens, the guard
//! detaches it (`umount -l`) before the directory is removed, so a failing test leaves no mount.
//! Without /dev/fuse these tests fail, unless MF_SKIP_FUSE=1 asks to skip them.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fuse::{daemon_pid, detach_and_kill, fuse_available, is_mounted, is_running, wait_until};
use common::{mf_fails, mf_in, mf_ok, noise, stored_span, write_tree};

/// A temporary directory with a mount point in it. Dropping it first detaches anything still
/// mounted there and kills a foreground `mf mount` child it owns.
struct Scratch {
    dir: tempfile::TempDir,
    mount_point: PathBuf,
    child: Option<Child>,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        Scratch { dir, mount_point, child: None }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mnt(&self) -> &str {
        self.mount_point.to_str().unwrap()
    }

    /// Starts `mf mount ARGS... MNT` in the foreground and waits until the mount is live.
    fn mount_foreground(&mut self, archives: &[&Path], extra: &[&str]) {
        let child = Command::new(common::mf_bin())
            .arg("mount")
            .args(extra)
            .args(archives)
            .arg(&self.mount_point)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mount_point = self.mount_point.clone();
        let start = Instant::now();
        while !is_mounted(&mount_point) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let output = self.child.take().unwrap().wait_with_output().unwrap();
                panic!("mf mount exited early ({status}): {}", String::from_utf8_lossy(&output.stderr));
            }
            assert!(start.elapsed() < Duration::from_secs(10), "mount did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn mount_background(&self, archives: &[&Path], extra: &[&str]) {
        let mut args = vec!["mount", "--background"];
        args.extend_from_slice(extra);
        let archive_args: Vec<&str> = archives.iter().map(|a| a.to_str().unwrap()).collect();
        args.extend(archive_args);
        args.push(self.mnt());
        let stdout = mf_ok(self.path(), &args);
        assert_eq!(stdout, "", "--background prints nothing on success");
        assert!(is_mounted(&self.mount_point), "the mount is live when --background returns");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        detach_and_kill(&self.mount_point, self.child.as_mut());
    }
}

fn pack(dir: &Path, src: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["pack", src.to_str().unwrap(), "-o", out];
    args.extend_from_slice(extra);
    mf_ok(dir, &args);
    dir.join(out)
}

/// A text-like, compressible, non-repeating payload (many zstd frames when large).
fn compressible(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} value {}\n", i.wrapping_mul(2654435761) % 1000).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A source tree covering the cases the mount must get right.
fn build_source(root: &Path) -> (Vec<u8>, Vec<u8>) {
    let big_text = compressible(3 << 20); // 12 frames of 256 KiB
    let big_noise = noise(1 << 20, 7); // stored raw
    write_tree(
        root,
        &[
            ("readme.txt", b"hello\n"),
            ("empty.bin", b""),
            ("bin/launch.sh", b"#!/bin/sh\necho launched\n"),
            ("data/levels/one.json", b"{\"level\": 1}\n"),
            ("data/levels/two.json", b"{\"level\": 2}\n"),
            ("data/big.txt", &big_text),
            ("data/noise.raw", &big_noise),
            ("deep/a/b/c/d/leaf.txt", b"leaf\n"),
        ],
    );
    std::fs::set_permissions(root.join("bin/launch.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    (big_text, big_noise)
}

/// Every file and directory under `root`: relative path → (is_dir, mode & 0o777, size, nlink).
fn tree_attrs(root: &Path) -> Vec<(String, bool, u32, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(path.clone());
                out.push((rel, true, meta.mode() & 0o777, 0, meta.nlink()));
            } else {
                out.push((rel, false, meta.mode() & 0o777, meta.len(), meta.nlink()));
            }
        }
    }
    out.sort();
    out
}

fn errno(result: std::io::Result<impl Sized>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn mounted_tree_matches_the_source_in_content_and_attributes() {
    if !fuse_available() {
        return;
    }
    let mut scratch = Scratch::new();
    let src = scratch.path().join("src");
    let (big_text, big_noise) = build_source(&src);
    let archive = pack(scratch.path(), &src, "game.mf", &[]);
    let archive_mtime = std::fs::metadata(&archive).unwrap().modified().unwrap();
    scratch.mount_foreground(&[&archive], &["--cache-size", "1M"]);
    let mnt = scratch.mount_point.clone();

    // Content, byte for byte, and the directory structure.
    assert_eq!(common::read_tree(&mnt), common::read_tree(&src));
    // Sizes, modes (the executable bit included), link counts (2 + subdirectories for a directory).
    let mut source_attrs = tree_attrs(&src);
    for attr in &mut source_attrs {
        if !attr.1 {
            // The writer records 0o755 for executables and 0o644 otherwise.
            attr.2 = if attr.2 & 0o111 != 0 { 0o755 } else { 0o644 };
        } else {
            attr.2 = 0o755;
        }
    }
    assert_eq!(tree_attrs(&mnt), source_attrs);
    let root = std::fs::metadata(&mnt).unwrap();
    assert_eq!(root.nlink(), 2 + 3, "root has bin, data and deep");
    let launch = std::fs::metadata(mnt.join("bin/launch.sh")).unwrap();
    assert_eq!(launch.mode() & 0o777, 0o755);
    assert!(launch.blksize() >= 128 * 1024, "large st_blksize");
    assert_eq!(launch.blocks(), 1);
    // Entries without a recorded mtime show the archive file's.
    assert_eq!(launch.modified().unwrap(), archive_mtime);
    let out = Command::new(mnt.join("bin/launch.sh")).output().unwrap();
    assert_eq!(out.stdout, b"launched\n", "executables run from the mount");

    // `ls -lR` lists everything (readdirplus) with the right modes and sizes.
    let listing = Command::new("ls").arg("-lR").arg(&mnt).output().unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains("-rwxr-xr-x 1"), "{listing}");
    assert!(listing.contains(&format!("{} ", 3 << 20)), "{listing}");
    for name in ["readme.txt", "empty.bin", "launch.sh", "one.json", "two.json", "big.txt", "noise.raw", "leaf.txt"] {
        assert!(listing.contains(name), "ls -lR misses {name}:\n{listing}");
    }

    // statfs reports real totals: blocks × block size ≥ the content, one inode per node.
    let statfs = Command::new("stat").args(["-f", "-c", "%b %S %c"]).arg(&mnt).output().unwrap();
    let statfs = String::from_utf8(statfs.stdout).unwrap();
    let numbers: Vec<u64> = statfs.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let content: u64 = common::read_tree(&src).iter().map(|(_, c)| c.len() as u64).sum();
    assert!(numbers[0] * numbers[1] >= content && numbers[0] * numbers[1] < content + 16 * numbers[1], "{statfs}");
    assert_eq!(numbers[2], 1 + tree_attrs(&src).len() as u64, "one inode per file and directory: {statfs}");

    // Missing names are ENOENT (cached negatively, still ENOENT the second time).
    for _ in 0..2 {
        assert_eq!(errno(std::fs::metadata(mnt.join("data/nope"))), Some(libc::ENOENT));
    }
    assert_eq!(errno(std::fs::metadata(mnt.join("readme.txt/x"))), Some(libc::ENOTDIR));

    // Random reads inside the compressed multi-frame entry, with O_DIRECT so each one reaches the
    // daemon at its exact offset (frame boundaries included), and buffered.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for direct in [true, false] {
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(mnt.join("data/big.txt")).unwrap();
        let mut buf = vec![0u8; 300_000];
        for i in 0..200 {
            let len = 1 + (next() % 300_000) as usize;
            let offset = if i % 10 == 0 {
                // Straddle a frame boundary.
                ((next() % 11 + 1) * 262_144).saturating_sub(len as u64 / 2)
            } else {
                next() % big_text.len() as u64
            };
            let n = file.read_at(&mut buf[..len], offset).unwrap();
            let expected_len = len.min(big_text.len() - offset as usize);
            assert_eq!(n, expected_len, "short read at {offset}+{len} (direct: {direct})");
            assert!(buf[..n] == big_text[offset as usize..offset as usize + n], "bytes differ at {offset}+{len}");
        }
    }

    // Eight concurrent readers over the compressed and the raw file.
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let (mnt, big_text, big_noise) = (&mnt, &big_text, &big_noise);
            scope.spawn(move || {
                let (name, expected) =
                    if t % 2 == 0 { ("data/big.txt", big_text) } else { ("data/noise.raw", big_noise) };
                let file =
                    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(mnt.join(name)).unwrap();
                let mut state = t + 1;
                let mut buf = vec![0u8; 64 * 1024];
                for _ in 0..150 {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let offset = (state >> 20) % expected.len() as u64;
                    let n = file.read_at(&mut buf, offset).unwrap();
                    assert!(buf[..n] == expected[offset as usize..offset as usize + n], "thread {t} at {offset}");
                }
                // And the whole file, sequentially.
                let mut all = Vec::new();
                File::open(mnt.join(name)).unwrap().read_to_end(&mut all).unwrap();
                assert!(all == *expected);
            });
        }
    });

    // Read-only at the kernel level.
    assert_eq!(errno(File::create(mnt.join("new.txt"))), Some(libc::EROFS));
    assert_eq!(errno(std::fs::OpenOptions::new().write(true).open(mnt.join("readme.txt"))), Some(libc::EROFS));
    assert_eq!(errno(std::fs::create_dir(mnt.join("newdir"))), Some(libc::EROFS));
    assert_eq!(errno(std::fs::remove_file(mnt.join("readme.txt"))), Some(libc::EROFS));
    assert_eq!(errno(std::fs::rename(mnt.join("readme.txt"), mnt.join("r.txt"))), Some(libc::EROFS));

    // Ctrl-C unmounts cleanly and exits 0.
    let mut child = scratch.child.take().unwrap();
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "mf mount did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!is_mounted(&mnt));
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0, "the mount point is empty again");
}

#[test]
fn later_archives_win_and_the_library_handle_unmounts_on_drop() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let base = scratch.path().join("base");
    let patch = scratch.path().join("patch");
    write_tree(&base, &[("a/shared.txt", b"base"), ("a/base_only.txt", b"b"), ("conflict", b"base file")]);
    write_tree(&patch, &[("a/shared.txt", b"patched"), ("a/patch_only.txt", b"p"), ("conflict/inner", b"dir now")]);
    let base_mf = pack(scratch.path(), &base, "base.mf", &[]);
    let patch_mf = pack(scratch.path(), &patch, "patch.mf", &["--keep-mtime"]);

    let options = mf_mount::MountOptions { threads: 2, ..mf_mount::MountOptions::default() };
    let handle = mf_mount::mount_paths(&[&base_mf, &patch_mf], &scratch.mount_point, &options).unwrap();
    let mnt = scratch.mount_point.clone();
    assert!(is_mounted(&mnt));
    assert!(handle.is_running());
    assert_eq!(std::fs::read(mnt.join("a/shared.txt")).unwrap(), b"patched");
    assert_eq!(std::fs::read(mnt.join("a/base_only.txt")).unwrap(), b"b");
    assert_eq!(std::fs::read(mnt.join("a/patch_only.txt")).unwrap(), b"p");
    assert_eq!(std::fs::read(mnt.join("conflict/inner")).unwrap(), b"dir now");
    let mut names: Vec<String> =
        std::fs::read_dir(mnt.join("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["base_only.txt", "patch_only.txt", "shared.txt"]);
    // --keep-mtime entries show their own mtime (the source file's).
    let source_mtime = std::fs::metadata(patch.join("a/patch_only.txt")).unwrap().modified().unwrap();
    assert_eq!(std::fs::metadata(mnt.join("a/patch_only.txt")).unwrap().modified().unwrap(), source_mtime);

    drop(handle);
    assert!(!is_mounted(&mnt), "dropping the handle unmounts");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}

#[test]
fn unmounting_with_an_open_file_detaches_and_returns() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    write_tree(&src, &[("big.txt", &compressible(1 << 20))]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);
    let options = mf_mount::MountOptions { unmount_grace: Duration::from_millis(200), ..Default::default() };
    let handle = mf_mount::mount_paths(&[&archive], &scratch.mount_point, &options).unwrap();
    let mut open = File::open(scratch.mount_point.join("big.txt")).unwrap();
    let mut start_bytes = [0u8; 16];
    open.read_exact(&mut start_bytes).unwrap();
    assert_eq!(&start_bytes, &compressible(16)[..]);

    let started = Instant::now();
    handle.unmount().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "unmount must not wait for the reader");
    assert!(!is_mounted(&scratch.mount_point), "the mount is gone from the namespace");
    // The open file either still reads (lazily detached) or fails (connection aborted); never hangs.
    let _ = open.seek(SeekFrom::Start(500_000)).and_then(|_| open.read(&mut start_bytes));
    drop(open);

    // The CLI: `mf umount` on a busy background mount detaches it and says so; the daemon then
    // exits when the file is closed.
    scratch.mount_background(&[&archive], &[]);
    let open = File::open(scratch.mount_point.join("big.txt")).unwrap();
    let pid = daemon_pid(&scratch.mount_point).expect("daemon running");
    let out = mf_in(scratch.path(), &["umount", scratch.mnt()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!is_mounted(&scratch.mount_point));
    drop(open);
    wait_until("the daemon exits", Duration::from_secs(10), || !is_running(pid));
}

#[test]
fn background_mount_and_umount_and_stale_mounts() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    write_tree(&src, &[("x/y.txt", b"why\n")]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);

    scratch.mount_background(&[&archive], &["--threads", "2", "--cache-size", "8M"]);
    assert_eq!(std::fs::read(scratch.mount_point.join("x/y.txt")).unwrap(), b"why\n");
    let pid = daemon_pid(&scratch.mount_point).expect("daemon running");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    assert!(!is_mounted(&scratch.mount_point));
    wait_until("the daemon exits", Duration::from_secs(10), || !is_running(pid));
    let err = mf_fails(scratch.path(), &["umount", scratch.mnt()], 1);
    assert!(err.contains("not a mount point"), "{err}");

    // A killed daemon leaves a stale mount ("transport endpoint is not connected"); umount clears it.
    scratch.mount_background(&[&archive], &[]);
    let pid = daemon_pid(&scratch.mount_point).expect("daemon running");
    Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    wait_until("the daemon dies", Duration::from_secs(10), || {
        errno(std::fs::metadata(scratch.mount_point.join("x"))) == Some(libc::ENOTCONN)
    });
    assert!(is_mounted(&scratch.mount_point));
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    assert!(!is_mounted(&scratch.mount_point));
    assert_eq!(std::fs::read_dir(&scratch.mount_point).unwrap().count(), 0);
}

#[test]
fn bad_mount_points_and_damaged_archives_are_refused() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    write_tree(&src, &[("f.txt", b"content")]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);
    let a = archive.to_str().unwrap();

    let missing = scratch.path().join("missing");
    let err = mf_fails(scratch.path(), &["mount", a, missing.to_str().unwrap()], 1);
    assert!(err.contains("does not exist"), "{err}");
    let err = mf_fails(scratch.path(), &["mount", "--background", a, src.to_str().unwrap()], 1);
    assert!(err.contains("is not empty"), "{err}");
    let err = mf_fails(scratch.path(), &["mount", a, src.join("f.txt").to_str().unwrap()], 1);
    assert!(err.contains("not a directory"), "{err}");
    let err = mf_fails(scratch.path(), &["mount", "nope.mf", scratch.mnt()], 1);
    assert!(err.contains("nope.mf"), "{err}");

    // A damaged index: refused at mount time, naming the archive, in both modes.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() - 60; // inside the index, before the footer
    bytes[at] ^= 0xFF;
    let damaged = scratch.path().join("damaged.mf");
    std::fs::write(&damaged, &bytes).unwrap();
    for extra in [&[][..], &["--background"][..]] {
        let mut args = vec!["mount"];
        args.extend_from_slice(extra);
        args.extend([damaged.to_str().unwrap(), scratch.mnt()]);
        let err = mf_fails(scratch.path(), &args, 1);
        assert!(err.contains("damaged.mf") && err.contains("damaged"), "{err}");
        assert!(!is_mounted(&scratch.mount_point));
    }
}

#[test]
fn a_damaged_frame_reads_as_eio_and_is_logged() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    let text = compressible(1 << 20);
    // Different content: identical files would share one extent (container 2.0 deduplicates).
    let other: Vec<u8> = text.iter().rev().copied().collect();
    write_tree(&src, &[("bad.txt", &text), ("good.txt", &other)]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);
    let (offset, stored) = {
        let opened = mf_format::Archive::open(&archive).unwrap();
        let entry = opened.get("bad.txt").unwrap();
        assert_eq!(entry.stored_as(), mf_format::StoredAs::Zstd);
        (entry.offset(), entry.stored_size())
    };
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = (offset + stored / 2) as usize;
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0x5A;
    }
    std::fs::write(&archive, &bytes).unwrap();

    let log = scratch.path().join("daemon.log");
    scratch.mount_background(&[&archive], &["--log", log.to_str().unwrap()]);
    assert_eq!(errno(std::fs::read(scratch.mount_point.join("bad.txt"))), Some(libc::EIO));
    assert_eq!(std::fs::read(scratch.mount_point.join("good.txt")).unwrap(), other, "other entries still read");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("bad.txt") && logged.contains("a.mf"), "log: {logged}");
}

#[test]
fn allow_other_lets_other_users_read() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    // Other users must be able to reach the mount point at all.
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = scratch.path().join("src");
    write_tree(&src, &[("shared.txt", b"for everyone\n")]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);
    let file = scratch.mount_point.join("shared.txt");
    let read_as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(&file)
            .output()
            .expect("setpriv runs")
    };

    scratch.mount_background(&[&archive], &[]);
    let denied = read_as_nobody();
    assert!(!denied.status.success(), "without --allow-other only the owner may read");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);

    scratch.mount_background(&[&archive], &["--allow-other"]);
    let allowed = read_as_nobody();
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    assert_eq!(allowed.stdout, b"for everyone\n");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
}

/// Builds a Panda3D multifile with the real `multify -c` and `flags` from every item of `src`.
fn multify_create(src: &Path, target: &Path, flags: &[&str]) {
    let mut items: Vec<String> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    items.sort();
    let mut args = vec!["-c", "-f", target.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend(items.iter().map(String::as_str));
    common::multify(src, &args);
}

#[test]
fn panda3d_multifiles_mount_like_mf_archives() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (big_text, _) = build_source(&src);
    let source = common::read_tree(&src);
    let compressed = dir.path().join("zlib.mf");
    multify_create(&src, &compressed, &["-z"]);
    let stored = dir.path().join("stored.mf");
    multify_create(&src, &stored, &[]);
    let listed: serde_json::Value =
        serde_json::from_str(&mf_ok(dir.path(), &["list", "--json", compressed.to_str().unwrap()])).unwrap();
    assert!(listed.to_string().contains("zlib"), "multify -z compressed something: {listed}");

    for archive in [&compressed, &stored] {
        let mut scratch = Scratch::new();
        scratch.mount_foreground(&[archive], &[]);
        let mnt = scratch.mount_point.clone();
        assert_eq!(common::read_tree(&mnt), source, "{}: mounted tree differs from the source", archive.display());
        // Random access inside a compressed subfile, at the end and across it.
        let file = File::open(mnt.join("data/big.txt")).unwrap();
        let mut buf = vec![0u8; 300_000];
        file.read_exact_at(&mut buf, 2_000_001).unwrap();
        assert_eq!(buf, big_text[2_000_001..2_300_001]);
        let mut tail = [0u8; 16];
        let n = file.read_at(&mut tail, big_text.len() as u64 - 5).unwrap();
        assert_eq!(&tail[..n], &big_text[big_text.len() - 5..]);
        assert_eq!(std::fs::metadata(mnt.join("data/big.txt")).unwrap().len(), big_text.len() as u64);
        assert!(std::fs::metadata(mnt.join("data/levels")).unwrap().is_dir());
        drop(file);
        mf_ok(scratch.path(), &["umount", scratch.mnt()]);
        assert!(!is_mounted(&mnt));
    }

    // Encrypted subfiles: EIO and a logged message without the password, their content with it.
    let encrypted = dir.path().join("encrypted.mf");
    multify_create(&src, &encrypted, &["-z", "-e", "-p", "secret"]);
    let scratch = Scratch::new();
    let log = scratch.path().join("daemon.log");
    scratch.mount_background(&[&encrypted], &["--log", log.to_str().unwrap()]);
    assert_eq!(errno(std::fs::read(scratch.mount_point.join("readme.txt"))), Some(libc::EIO));
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("readme.txt") && logged.contains("encrypted.mf"), "log: {logged}");
    let scratch = Scratch::new();
    scratch.mount_background(&[&encrypted], &["--password", "secret"]);
    assert_eq!(common::read_tree(&scratch.mount_point), source, "decrypted with --password");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
}

#[test]
fn panda3d_multifiles_overlay_with_mf_archives() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let patch = dir.path().join("patch");
    let big = compressible(1 << 20);
    write_tree(&base, &[("a/shared.txt", b"panda base"), ("a/base_only.txt", &big), ("conflict", b"base file")]);
    write_tree(&patch, &[("a/shared.txt", b"mf patch"), ("a/patch_only.txt", b"p"), ("conflict/inner", b"dir now")]);
    let panda = dir.path().join("base.p3d.mf");
    multify_create(&base, &panda, &["-z"]);
    let mf = pack(dir.path(), &patch, "patch.mf", &[]);

    // Panda3D below, mf on top (through the library).
    let scratch = Scratch::new();
    let options = mf_mount::MountOptions { threads: 2, ..mf_mount::MountOptions::default() };
    let handle = mf_mount::mount_paths(&[&panda, &mf], &scratch.mount_point, &options).unwrap();
    let mnt = scratch.mount_point.clone();
    assert_eq!(std::fs::read(mnt.join("a/shared.txt")).unwrap(), b"mf patch");
    assert_eq!(std::fs::read(mnt.join("a/base_only.txt")).unwrap(), big);
    assert_eq!(std::fs::read(mnt.join("a/patch_only.txt")).unwrap(), b"p");
    assert_eq!(std::fs::read(mnt.join("conflict/inner")).unwrap(), b"dir now");
    drop(handle);
    assert!(!is_mounted(&mnt));

    // mf below, Panda3D on top (through the binary).
    let mut scratch = Scratch::new();
    scratch.mount_foreground(&[&mf, &panda], &[]);
    let mnt = scratch.mount_point.clone();
    assert_eq!(std::fs::read(mnt.join("a/shared.txt")).unwrap(), b"panda base");
    assert_eq!(std::fs::read(mnt.join("a/patch_only.txt")).unwrap(), b"p");
    assert_eq!(std::fs::read(mnt.join("conflict")).unwrap(), b"base file");
    let mut names: Vec<String> =
        std::fs::read_dir(mnt.join("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["base_only.txt", "patch_only.txt", "shared.txt"]);
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_multifile_with_a_file_that_is_also_a_directory_is_refused_by_the_mount() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let archive = common::craft_multifile(
        scratch.path(),
        "conflict.mf",
        "[('a', b'file a', 0, 0), ('a/b', b'file a/b', 0, 0), ('c', b'c', 0, 0)]",
    );
    let err = mf_fails(scratch.path(), &["mount", "--background", archive.to_str().unwrap(), scratch.mnt()], 1);
    assert!(err.contains("conflict.mf") && err.contains("'a' is a subfile and also a directory of 'a/b'"), "{err}");
    assert!(!is_mounted(&scratch.mount_point), "nothing is mounted");
}

#[test]
fn a_zlib_bomb_subfile_is_refused_per_read_within_the_cache_budget() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    // 1 GiB of zeros deflates to about 1 MiB; next to it a small compressed subfile that must still read.
    let archive = common::craft_multifile(
        scratch.path(),
        "bomb.mf",
        "[('bomb.bin', (lambda c: b''.join(c.compress(bytes(1 << 20)) for _ in range(1024)) + c.flush())\
         (zlib.compressobj(9)), 0x08, 1 << 30), ('small.txt', zlib.compress(b'hello ' * 1000), 0x08, 6000)]",
    );
    let log = scratch.path().join("daemon.log");
    scratch.mount_background(&[&archive], &["--cache-size", "64M", "--log", log.to_str().unwrap()]);
    let mnt = scratch.mount_point.clone();
    assert_eq!(std::fs::read(mnt.join("small.txt")).unwrap(), b"hello ".repeat(1000));
    assert_eq!(std::fs::metadata(mnt.join("bomb.bin")).unwrap().len(), 1 << 30);
    // Reading 4 KiB would inflate the whole GiB for every request; it is refused at once instead.
    let started = Instant::now();
    let mut head = [0u8; 4096];
    let read = File::open(mnt.join("bomb.bin")).unwrap().read(&mut head);
    assert_eq!(errno(read), Some(libc::EIO), "a subfile larger than the cache is refused");
    assert!(started.elapsed() < Duration::from_secs(5), "refused without inflating it");
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("bomb.bin") && logged.contains("cache size"), "log: {logged}");
}

/// Issue 11 item 6: an archive truncated under a live mount used to kill the daemon with SIGBUS
/// (entry data and the index were read through a mapping). Now the missing region reads as a logged
/// EIO, and everything still in the file, and all metadata, keeps working.
#[test]
fn an_archive_truncated_under_the_mount_gives_eio_and_the_daemon_lives() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    let text = compressible(1 << 20);
    let raw = noise(1 << 20, 11);
    write_tree(&src, &[("a-text.txt", &text), ("b-noise.bin", &raw), ("c-text.txt", &text)]);
    let archive = pack(scratch.path(), &src, "a.mf", &[]);
    let extent = |path: &str| {
        let opened = mf_format::Archive::open(&archive).unwrap();
        let entry = opened.get(path).unwrap();
        (entry.offset(), entry.stored_size(), entry.stored_as())
    };
    let (noise_at, noise_stored, noise_kind) = extent("b-noise.bin");
    assert_eq!(noise_kind, mf_format::StoredAs::Raw, "noise is stored raw");
    let cut = noise_at + noise_stored / 2;
    // Every entry wholly before the cut must still read; every one after it must fail.
    let (before, after): (Vec<&str>, Vec<&str>) = ["a-text.txt", "c-text.txt"].iter().partition(|p| {
        let (at, stored, _) = extent(p);
        at + stored <= cut
    });
    assert!(!after.is_empty() || !before.is_empty());

    let log = scratch.path().join("daemon.log");
    scratch.mount_background(&[&archive], &["--log", log.to_str().unwrap()]);
    let pid = daemon_pid(&scratch.mount_point).expect("the daemon runs");
    File::options().write(true).open(&archive).unwrap().set_len(cut).unwrap();

    let noise_file = File::open(scratch.mount_point.join("b-noise.bin")).unwrap();
    let mut head = vec![0u8; 64 << 10];
    noise_file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, raw[..64 << 10], "the part of an entry still in the file reads");
    let mut tail = vec![0u8; 64 << 10];
    let missing = noise_file.read_exact_at(&mut tail, (raw.len() - (64 << 10)) as u64);
    assert_eq!(errno(missing), Some(libc::EIO), "the missing part is EIO");
    for path in &before {
        assert_eq!(std::fs::read(scratch.mount_point.join(path)).unwrap(), text, "{path} lies before the cut");
    }
    for path in &after {
        assert_eq!(errno(std::fs::read(scratch.mount_point.join(path))), Some(libc::EIO), "{path} lies after the cut");
    }
    assert!(is_running(pid), "the daemon survived the truncation");
    assert!(is_mounted(&scratch.mount_point));
    let mut listing: Vec<String> = std::fs::read_dir(&scratch.mount_point)
        .unwrap()
        .map(|item| item.unwrap().file_name().into_string().unwrap())
        .collect();
    listing.sort();
    assert_eq!(listing, ["a-text.txt", "b-noise.bin", "c-text.txt"], "metadata is still served");
    assert_eq!(std::fs::metadata(scratch.mount_point.join("c-text.txt")).unwrap().len(), text.len() as u64);

    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("b-noise.bin") && logged.contains("a.mf") && logged.contains("truncated"), "log: {logged}");
}

/// Issue 11 item 6, for Panda3D multifiles: they used to stay mapped under a mount, so truncating one
/// killed the daemon with SIGBUS. They are read with `pread` now: the lost region reads as a logged
/// EIO, a stored subfile's part still in the file reads, and the mount stays alive and unmounts.
#[test]
fn a_multifile_truncated_under_the_mount_gives_eio_and_the_daemon_lives() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let text = b"some text ".repeat(20_000);
    let noise_len = 1 << 20;
    // Stored as is: a.txt and b.bin (noise); c.txt is zlib-compressed and lies after b.bin.
    let archive = common::craft_multifile(
        scratch.path(),
        "game.mf",
        "[('a.txt', b'some text ' * 20000, 0, 0), \
          ('b.bin', bytes(((i * 2654435761) >> 13) & 255 for i in range(1 << 20)), 0, 0), \
          ('c.txt', zlib.compress(b'some text ' * 20000), 0x08, 200000)]",
    );
    let noise: Vec<u8> = (0..noise_len as u64).map(|i| ((i * 2_654_435_761) >> 13) as u8).collect();
    let multifile = mf_panda3d::Multifile::open(&archive).unwrap();
    let noise_at = multifile.get("b.bin").unwrap().data_offset();
    assert!(multifile.get("a.txt").unwrap().data_offset() < noise_at);
    assert!(multifile.get("c.txt").unwrap().data_offset() > noise_at);
    drop(multifile);
    let cut = noise_at + noise_len as u64 / 2;

    let log = scratch.path().join("daemon.log");
    scratch.mount_background(&[&archive], &["--log", log.to_str().unwrap()]);
    let pid = daemon_pid(&scratch.mount_point).expect("the daemon runs");
    let mnt = scratch.mount_point.clone();
    assert_eq!(std::fs::read(mnt.join("c.txt")).unwrap(), text, "reads before the truncation");
    File::options().write(true).open(&archive).unwrap().set_len(cut).unwrap();

    let noise_file = File::open(mnt.join("b.bin")).unwrap();
    let mut head = vec![0u8; 64 << 10];
    noise_file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, noise[..64 << 10], "the part of a subfile still in the file reads");
    let mut tail = vec![0u8; 64 << 10];
    let missing = noise_file.read_exact_at(&mut tail, (noise_len - (64 << 10)) as u64);
    assert_eq!(errno(missing), Some(libc::EIO), "the missing part is EIO");
    assert_eq!(std::fs::read(mnt.join("a.txt")).unwrap(), text, "a.txt lies before the cut");
    assert!(is_running(pid), "the daemon survived the truncation");
    assert!(is_mounted(&mnt));
    let mut listing: Vec<String> =
        std::fs::read_dir(&mnt).unwrap().map(|item| item.unwrap().file_name().into_string().unwrap()).collect();
    listing.sort();
    assert_eq!(listing, ["a.txt", "b.bin", "c.txt"], "metadata is still served");

    mf_ok(scratch.path(), &["umount", scratch.mnt()]);
    assert!(!is_mounted(&mnt), "unmounted cleanly");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("b.bin") && logged.contains("game.mf") && logged.contains("truncated"), "log: {logged}");
}

/// Issue 14: a live mount follows an mf archive edited in place (`mf add`, `mf rm`, the library's
/// `Editor`). After each commit, what is opened through the mount is the new version at once
/// (replaced bytes, new files, removed files gone; never EIO), while a file opened before the edits
/// goes on reading its own version exactly through the next two commits (spec/FORMAT.md "Readers
/// that keep a version open"), and fails with ESTALE, never wrong bytes, once a third one may have
/// reused its space.
#[test]
fn a_mount_follows_an_archive_edited_in_place() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let d = scratch.path();
    let old_raw = noise(300_000, 21); // stored raw: read with pread straight from the file
    let old_text = compressible(1 << 20); // zstd frames
    write_tree(
        &d.join("src"),
        &[("keep.txt", b"kept\n"), ("dir/replace.bin", &old_raw), ("dir/text.txt", &old_text), ("gone.txt", b"bye\n")],
    );
    let archive = pack(d, &d.join("src"), "a.mf", &[]);
    let options = mf_mount::MountOptions { follow: Some(Duration::from_millis(100)), ..Default::default() };
    let handle = mf_mount::mount_paths(&[&archive], &scratch.mount_point, &options).unwrap();
    let mnt = scratch.mount_point.clone();
    let keep_ino = std::fs::metadata(mnt.join("keep.txt")).unwrap().ino();
    let replace_ino = std::fs::metadata(mnt.join("dir/replace.bin")).unwrap().ino();
    assert_eq!(std::fs::metadata(mnt.join("gone.txt")).unwrap().len(), 4, "looked up (and cached) before it goes");

    // Opened before any edit; O_DIRECT so that every read reaches the daemon (not the page cache).
    let old = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(mnt.join("dir/replace.bin"));
    let old = old.unwrap();
    let read_old = || {
        let mut buf = vec![0u8; 64 << 10];
        let mut out = Vec::new();
        for offset in [0u64, 150_000, 300_000 - (64 << 10)] {
            let n = old.read_at(&mut buf, offset).map_err(|e| e.raw_os_error())?;
            out.push((offset, buf[..n].to_vec()));
        }
        Ok::<_, Option<i32>>(out)
    };
    let expected_old: Vec<(u64, Vec<u8>)> = [0usize, 150_000, 300_000 - (64 << 10)]
        .iter()
        .map(|&o| (o as u64, old_raw[o..(o + (64 << 10)).min(old_raw.len())].to_vec()))
        .collect();
    assert_eq!(read_old().unwrap(), expected_old);

    let mut expected: std::collections::BTreeMap<String, Vec<u8>> =
        common::read_tree(&d.join("src")).into_iter().collect();
    let check = |expected: &std::collections::BTreeMap<String, Vec<u8>>, step: &str| {
        // Opens see the new version at once: an open checks the archive first.
        let seen: std::collections::BTreeMap<String, Vec<u8>> = common::read_tree(&mnt).into_iter().collect();
        assert!(seen == *expected, "{step}: the mount shows {:?}", seen.keys().collect::<Vec<_>>());
        assert_eq!(std::fs::metadata(mnt.join("keep.txt")).unwrap().ino(), keep_ino, "{step}: unchanged, same inode");
    };

    // Commit 1 (generation 2): replace a file with `mf add`.
    let new_raw = noise(300_000, 22);
    write_tree(&d.join("new"), &[("dir/replace.bin", &new_raw), ("added.txt", b"hello\n")]);
    mf_ok(d, &["add", "a.mf", "-C", "new", "dir/replace.bin", "--no-compact"]);
    expected.insert("dir/replace.bin".into(), new_raw.clone());
    assert_eq!(std::fs::read(mnt.join("dir/replace.bin")).unwrap(), new_raw, "replaced bytes at once");
    check(&expected, "after replacing");
    assert_eq!(read_old().unwrap(), expected_old, "the open file still reads its version");
    wait_until("the replaced file gets a new inode", Duration::from_secs(5), || {
        std::fs::metadata(mnt.join("dir/replace.bin")).unwrap().ino() != replace_ino
    });

    // Commit 2 (generation 3): add a file, never looked up before.
    mf_ok(d, &["add", "a.mf", "-C", "new", "added.txt", "--no-compact"]);
    expected.insert("added.txt".into(), b"hello\n".to_vec());
    assert_eq!(std::fs::read(mnt.join("added.txt")).unwrap(), b"hello\n", "a new file appears at once");
    check(&expected, "after adding");
    assert_eq!(read_old().unwrap(), expected_old, "two commits later, the open file still reads its version");

    // Commit 3 (generation 4): remove a file the kernel had cached.
    mf_ok(d, &["rm", "a.mf", "gone.txt", "--no-compact"]);
    expected.remove("gone.txt");
    assert_eq!(errno(File::open(mnt.join("gone.txt"))), Some(libc::ENOENT), "opening a removed file fails at once");
    check(&expected, "after removing");
    wait_until("the cached name of the removed file is dropped", Duration::from_secs(5), || {
        errno(std::fs::metadata(mnt.join("gone.txt"))) == Some(libc::ENOENT)
    });
    // A third commit may reuse the space of the version the old file reads: refused, not wrong bytes.
    assert_eq!(read_old().err(), Some(Some(libc::ESTALE)), "an overtaken version is stale");

    // Commit 4 (generation 5), through the library: a compressed entry replaced, its holes reused.
    let new_text: Vec<u8> = old_text.iter().rev().copied().collect();
    let text_ino = std::fs::metadata(mnt.join("dir/text.txt")).unwrap().ino();
    let mut editor = mf_format::Editor::open(&archive).unwrap();
    let options = mf_format::EntryOptions::default();
    editor.put("dir/text.txt", &options, &mut &new_text[..], new_text.len() as u64).unwrap();
    assert_eq!(editor.commit().unwrap().generation, 5);
    expected.insert("dir/text.txt".into(), new_text.clone());
    check(&expected, "after the editor's commit");
    // Cached attributes follow within the follow interval: a new inode with the new size.
    wait_until("the replaced entry's attributes follow", Duration::from_secs(5), || {
        std::fs::metadata(mnt.join("dir/text.txt")).unwrap().ino() != text_ino
    });
    let mut names: Vec<String> =
        std::fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["added.txt", "dir", "keep.txt"]);
    drop(old);

    // `mf compact` renames a new file over the path: followed too, and so are edits of that file.
    mf_ok(d, &["compact", "a.mf"]);
    check(&expected, "after compacting");
    mf_ok(d, &["rm", "a.mf", "added.txt", "--no-compact"]);
    expected.remove("added.txt");
    check(&expected, "after an edit of the compacted file");
    handle.unmount().unwrap();
}

#[test]
fn record_trace_then_pack_order_from_lays_the_traced_files_out_first() {
    if !fuse_available() {
        return;
    }
    let scratch = Scratch::new();
    let src = scratch.path().join("src");
    build_source(&src);
    write_tree(&src, &[("odd\nname \"q\".txt", b"odd\n")]);
    let archive = pack(scratch.path(), &src, "game.mf", &[]);
    // Relative: the background daemon runs in `/`, so the path must be made absolute for it.
    scratch.mount_background(&[&archive], &["--record-trace", "trace.jsonl"]);
    let mnt = scratch.mount_point.clone();
    let opened =
        ["data/levels/two.json", "odd\nname \"q\".txt", "data/noise.raw", "data/levels/two.json", "readme.txt"];
    for path in opened {
        assert_eq!(std::fs::read(mnt.join(path)).unwrap(), std::fs::read(src.join(path)).unwrap(), "{path}");
    }
    std::fs::metadata(mnt.join("data/big.txt")).unwrap(); // looked up, never opened
    let trace = scratch.path().join("trace.jsonl");
    // Each line is written as the file is first opened: complete while the mount runs.
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<String>(line).unwrap())
        .collect();
    assert_eq!(lines, ["data/levels/two.json", "odd\nname \"q\".txt", "data/noise.raw", "readme.txt"]);
    mf_ok(scratch.path(), &["umount", scratch.mnt()]);

    // A second mount does not overwrite the trace.
    let refused = mf_fails(scratch.path(), &["mount", "--record-trace", "trace.jsonl", "game.mf", scratch.mnt()], 1);
    assert!(refused.contains("trace.jsonl") && refused.contains("exists"), "{refused}");
    assert_eq!(std::fs::read_to_string(&trace).unwrap().lines().count(), 4);

    // A symbolic link planted at the trace path is not followed, not even a dangling one: nothing
    // is created where it points and the mount is refused.
    let victim = scratch.path().join("victim.txt");
    std::os::unix::fs::symlink(&victim, scratch.path().join("planted.jsonl")).unwrap();
    let refused = mf_fails(scratch.path(), &["mount", "--record-trace", "planted.jsonl", "game.mf", scratch.mnt()], 1);
    assert!(refused.contains("planted.jsonl"), "{refused}");
    assert!(!victim.exists(), "the link's target was created");
    assert!(!is_mounted(&scratch.mount_point), "a refused mount is not mounted");

    let json = mf_ok(
        scratch.path(),
        &["pack", src.to_str().unwrap(), "-o", "ordered.mf", "--order-from", "trace.jsonl", "--json"],
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["order_from"]["placed"], 4);
    assert_eq!(json["order_from"]["duplicates"], 0);
    let ordered = mf_format::Archive::open(scratch.path().join("ordered.mf")).unwrap();
    let spans: Vec<(u64, u64)> = lines.iter().map(|path| stored_span(&ordered, path)).collect();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "the traced files come in trace order: {spans:?}");
    }
    for entry in ordered.entries().filter(|e| e.size() > 0 && !lines.iter().any(|l| l == e.path())) {
        let (start, _) = stored_span(&ordered, entry.path());
        assert!(start >= spans.last().unwrap().1, "{} lies before the traced files", entry.path());
    }
    // The same content as the plain pack.
    let extracted = scratch.path().join("out");
    mf_ok(scratch.path(), &["extract", "ordered.mf", "-C", extracted.to_str().unwrap()]);
    assert_eq!(common::read_tree(&extracted), common::read_tree(&src));

    // A bad line is named by file and line; nothing is written.
    std::fs::write(scratch.path().join("bad.jsonl"), "\"readme.txt\"\nreadme.txt\n").unwrap();
    let bad =
        mf_fails(scratch.path(), &["pack", src.to_str().unwrap(), "-o", "bad.mf", "--order-from", "bad.jsonl"], 1);
    assert!(bad.contains("bad.jsonl:2"), "{bad}");
    assert!(!scratch.path().join("bad.mf").exists());
}
