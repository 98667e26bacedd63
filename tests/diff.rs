//! End-to-end tests of `mf diff`, `mf apply` and `mf patch-info` through the real binary: exact round
//! trips, renames, bad input of every kind (wrong base, applied twice, damaged patch, damaged old
//! archive, unwritable target, full disk, kill -9 during an in-place apply) and the reports.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Text that compresses well but is not trivially repetitive.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["alpha", "beta", "gamma", "delta", "sprite", "mesh", "shader", "level", "quest", "sound"];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % 10) as usize].as_bytes());
        out.push(if state.is_multiple_of(7) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

struct Release {
    files: Vec<(String, Vec<u8>)>,
}

impl Release {
    fn write(&self, root: &Path) {
        let refs: Vec<(&str, &[u8])> = self.files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
        write_tree(root, &refs);
    }
}

/// A release with scripts, data, a big random asset and a texture.
fn release_v1() -> Release {
    let mut files = Vec::new();
    for i in 0..30 {
        files.push((format!("scripts/mod{i}.py"), text(2000 + i * 300, i as u64 + 1)));
    }
    files.push(("data/level1.txt".into(), text(300_000, 99)));
    files.push(("assets/big.bin".into(), noise(400_000, 5)));
    files.push(("textures/wall.png".into(), noise(50_000, 6)));
    files.push(("old/obsolete.txt".into(), text(5000, 7)));
    Release { files }
}

/// v1 with: one script edited, data edited in a few places, big.bin moved, a file added, one
/// removed, a duplicate of a script added.
fn release_v2() -> Release {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, content) in release_v1().files {
        match path.as_str() {
            "scripts/mod3.py" => {
                let mut c = content.clone();
                c.splice(100..100, b"# patched line\n".iter().copied());
                files.push((path, c));
            }
            "data/level1.txt" => {
                let mut c = content.clone();
                c[1000..1010].copy_from_slice(b"0123456789");
                c.splice(150_000..150_000, text(3000, 1234));
                c.drain(250_000..251_000);
                files.push((path, c));
            }
            "assets/big.bin" => files.push(("assets/moved/big.bin".into(), content)),
            "old/obsolete.txt" => {}
            _ => files.push((path, content)),
        }
    }
    files.push(("scripts/new_feature.py".into(), text(4000, 4242)));
    files.push(("scripts/copy_of_mod5.py".into(), text(2000 + 5 * 300, 6)));
    Release { files }
}

fn pack(dir: &Path, release: &Release, name: &str, extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    release.write(&src);
    let out = dir.join(name);
    let mut args = vec!["pack", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    mf_ok(dir, &args);
    out
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

/// Files in `dir` whose names look like mf temp files.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mf-tmp"))
        .collect()
}

#[test]
fn round_trip_is_byte_identical_and_reports_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = pack(d, &release_v1(), "v1.mf", &[]);
    let new = pack(d, &release_v2(), "v2.mf", &[]);
    let stat = json(&mf_ok(d, &["diff", "--stat", "--json", "v1.mf", "v2.mf"]));
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    assert!(!d.join("nothing.mfp").exists());
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "rebuilt.mf"]);
    assert_eq!(std::fs::read(d.join("rebuilt.mf")).unwrap(), std::fs::read(&new).unwrap(), "byte-identical");
    mf_ok(d, &["verify", "rebuilt.mf"]);
    assert!(std::fs::read(&old).unwrap() != std::fs::read(&new).unwrap());

    let counts = &stat["counts"];
    assert_eq!(counts["changed"], 2, "{stat}");
    assert_eq!(counts["renamed"], 2, "moved big.bin and the duplicate: {stat}");
    assert_eq!(counts["added"], 1, "{stat}");
    assert_eq!(counts["removed"], 1, "{stat}");
    assert_eq!(counts["unchanged"], 30, "{stat}");
    assert_eq!(stat["byte_identical"], true);
    let patch_len = std::fs::metadata(d.join("p.mfp")).unwrap().len();
    assert_eq!(stat["patch_len"], patch_len, "--stat predicts the patch size exactly");
    assert_eq!(stat["new_len"], std::fs::metadata(&new).unwrap().len());
    let entries = stat["entries"].as_array().unwrap();
    let find = |path: &str| entries.iter().find(|e| e["path"] == path).unwrap_or_else(|| panic!("{path} in {stat}"));
    assert_eq!(find("assets/moved/big.bin")["old_path"], "assets/big.bin");
    assert_eq!(find("assets/moved/big.bin")["patch_bytes"], 0);
    assert_eq!(find("assets/moved/big.bin")["method"], "copy");
    let data = find("data/level1.txt");
    assert_ne!(data["method"], "full", "a small edit is diffed, not carried whole: {data}");
    assert!(data["patch_bytes"].as_u64().unwrap() < 10_000, "{data}");
    assert_eq!(find("scripts/new_feature.py")["change"], "added");
    assert!(entries.iter().any(|e| e["change"] == "removed" && e["old_path"] == "old/obsolete.txt"));
    // 400 KB of random data moved and 300 KB of text edited: the patch is a few KB.
    assert!(patch_len < 12_000, "patch is {patch_len} bytes");

    let info = json(&mf_ok(d, &["patch-info", "--json", "p.mfp"]));
    assert_eq!(info["patch_len"], patch_len);
    assert_eq!(info["byte_identical"], true);
    for change in ["changed", "renamed", "added", "removed", "unchanged"] {
        assert_eq!(info["counts"][change], stat["counts"][change], "patch-info agrees on {change}: {info}");
    }
    let text = mf_ok(d, &["patch-info", "p.mfp"]);
    assert!(text.contains("assets/moved/big.bin") && text.contains("scripts/new_feature.py"), "{text}");
    let stat_text = mf_ok(d, &["diff", "--stat", "v1.mf", "v2.mf"]);
    assert!(stat_text.contains("assets/big.bin => assets/moved/big.bin"), "{stat_text}");
    assert!(stat_text.contains("1 added, 1 removed"), "{stat_text}");
}

#[test]
fn a_pure_rename_costs_only_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = noise(2_000_000, 77);
    pack(
        d,
        &Release { files: vec![("a/huge.bin".into(), big.clone()), ("b.txt".into(), b"x".to_vec())] },
        "v1.mf",
        &[],
    );
    pack(d, &Release { files: vec![("z/renamed.bin".into(), big), ("b.txt".into(), b"x".to_vec())] }, "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    let len = std::fs::metadata(d.join("p.mfp")).unwrap().len();
    assert!(len < 200, "a rename of 2 MB costs {len} bytes");
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "out.mf"]);
    assert_eq!(std::fs::read(d.join("out.mf")).unwrap(), std::fs::read(d.join("v2.mf")).unwrap());
}

#[test]
fn patches_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pack(d, &release_v1(), "v1.mf", &[]);
    pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["--threads", "1", "diff", "v1.mf", "v2.mf", "-o", "one.mfp"]);
    mf_ok(d, &["--threads", "4", "diff", "v1.mf", "v2.mf", "-o", "four.mfp"]);
    assert_eq!(std::fs::read(d.join("one.mfp")).unwrap(), std::fs::read(d.join("four.mfp")).unwrap());
}

#[test]
fn a_small_memory_limit_falls_back_to_blocks_and_still_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old_big = [text(3_000_000, 1), noise(3_000_000, 2)].concat();
    let mut new_big = old_big.clone();
    // One byte more near the start shifts every frame: no frame is kept (patch format 2.3 frames
    // records), so the whole entry goes through the block fallback this test is about.
    new_big.splice(10..20, b"EDITEDEDIT+".iter().copied());
    new_big.splice(4_000_000..4_000_000, noise(5000, 3));
    new_big.drain(5_000_000..5_002_000);
    pack(d, &Release { files: vec![("big.dat".into(), old_big)] }, "v1.mf", &[]);
    pack(d, &Release { files: vec![("big.dat".into(), new_big)] }, "v2.mf", &[]);
    let stat = json(&mf_ok(d, &["diff", "--json", "--memory-limit", "16M", "v1.mf", "v2.mf", "-o", "p.mfp"]));
    assert_eq!(stat["entries"][0]["method"], "zstd-ref", "{stat}");
    let len = std::fs::metadata(d.join("p.mfp")).unwrap().len();
    assert!(len < 100_000, "block-wise patch of a 6 MB entry with small edits is {len} bytes");
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "out.mf"]);
    assert_eq!(std::fs::read(d.join("out.mf")).unwrap(), std::fs::read(d.join("v2.mf")).unwrap());
    let err = mf_fails(d, &["diff", "--memory-limit", "lots", "v1.mf", "v2.mf", "-o", "q.mfp"], 2);
    assert!(err.contains("not a size"), "{err}");
}

/// A large entry with a one-frame edit among others: a frames record (patch format 2.3) keeps the
/// unchanged frames, the rebuild is `mf pack`'s archive byte for byte, the patch is the same for any
/// thread count, and `mf apply --in-place` writes about one frame.
#[test]
fn a_one_frame_edit_of_a_large_entry_keeps_the_other_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 24 frames of 256 KiB: text (compressed) and noise (raw) in turn, with small files around.
    let big: Vec<u8> = (0..24u64).flat_map(|k| if k % 2 == 0 { text(1 << 18, k) } else { noise(1 << 18, k) }).collect();
    let mut files: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("s/{i}.txt"), text(3000, i + 50))).collect();
    files.push(("pak/big.pak".into(), big.clone()));
    // A shared pair beside it (its data deduplicated).
    files.push(("dup/a.bin".into(), noise(300_000, 99)));
    files.push(("dup/b.bin".into(), noise(300_000, 99)));
    let v1 = Release { files: files.clone() };
    let mut edited = big;
    edited[(13 << 18) + 1000..(13 << 18) + 1010].copy_from_slice(b"0123456789");
    files[5].1 = edited;
    let v2 = Release { files };
    let old = pack(d, &v1, "v1.mf", &[]);
    let new = pack(d, &v2, "v2.mf", &[]);

    let stat = json(&mf_ok(d, &["--threads", "1", "diff", "--json", "v1.mf", "v2.mf", "-o", "one.mfp"]));
    mf_ok(d, &["--threads", "4", "diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    assert_eq!(std::fs::read(d.join("one.mfp")).unwrap(), std::fs::read(d.join("p.mfp")).unwrap());
    let entries = stat["entries"].as_array().unwrap();
    let pak = entries.iter().find(|e| e["path"] == "pak/big.pak").unwrap();
    assert_eq!(pak["method"], "frames", "{stat}");
    assert!(pak["patch_bytes"].as_u64().unwrap() < 2000, "one changed raw frame: {pak}");
    let info = mf_ok(d, &["patch-info", "p.mfp"]);
    assert!(info.contains("frames"), "{info}");

    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "rebuilt.mf"]);
    assert_eq!(std::fs::read(d.join("rebuilt.mf")).unwrap(), std::fs::read(&new).unwrap(), "byte-identical");

    let out = json(&mf_ok(d, &["apply", "--in-place", "--json", "p.mfp", "v1.mf"]));
    assert!(same_content(&old, &new));
    mf_ok(d, &["verify", "v1.mf"]);
    let written = out["bytes_written"].as_u64().unwrap_or_else(|| panic!("{out}"));
    assert!(written < 400_000, "one 256 KiB frame, small files and the index: wrote {written} bytes");
}

#[test]
fn wrong_base_fails_naming_the_entry_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pack(d, &release_v1(), "v1.mf", &[]);
    pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    // Another base: same paths, but data/level1.txt (which the patch diffs against) differs.
    let mut other = release_v1();
    for (path, content) in other.files.iter_mut() {
        if path == "data/level1.txt" {
            content[5] ^= 0x20;
        }
    }
    pack(d, &other, "other.mf", &[]);
    let before = std::fs::read(d.join("other.mf")).unwrap();
    let err = mf_fails(d, &["apply", "p.mfp", "other.mf", "-o", "out.mf"], 1);
    assert!(err.contains("not the file this patch was made for"), "{err}");
    assert!(err.contains("data/level1.txt"), "names the entry: {err}");
    assert!(!d.join("out.mf").exists());
    let err = mf_fails(d, &["apply", "p.mfp", "other.mf", "--in-place"], 1);
    assert!(err.contains("data/level1.txt"), "{err}");
    assert_eq!(std::fs::read(d.join("other.mf")).unwrap(), before);
    assert!(temp_files(d).is_empty());
}

#[test]
fn applying_twice_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pack(d, &release_v1(), "v1.mf", &[]);
    let new = pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    std::fs::copy(d.join("v1.mf"), d.join("client.mf")).unwrap();
    // Edited in place: the new version's entries, not its bytes.
    mf_ok(d, &["apply", "p.mfp", "client.mf", "--in-place"]);
    assert!(same_content(&d.join("client.mf"), &new));
    let err = mf_fails(d, &["apply", "p.mfp", "client.mf", "--in-place"], 1);
    assert!(err.contains("already applied"), "{err}");
    assert!(same_content(&d.join("client.mf"), &new));
    // Rebuilt: byte for byte; applying again is recognised too.
    std::fs::copy(d.join("v1.mf"), d.join("client.mf")).unwrap();
    mf_ok(d, &["apply", "p.mfp", "client.mf", "--in-place", "--rebuild"]);
    assert_eq!(std::fs::read(d.join("client.mf")).unwrap(), std::fs::read(&new).unwrap());
    let err = mf_fails(d, &["apply", "p.mfp", "client.mf", "--in-place", "--rebuild"], 1);
    assert!(err.contains("already applied"), "{err}");
    assert_eq!(std::fs::read(d.join("client.mf")).unwrap(), std::fs::read(&new).unwrap());
    assert!(temp_files(d).is_empty());
}

/// The entries of two archives in record order: path, mode, mtime and content.
/// One entry as compared: path, mode, mtime, content.
type EntryView = (String, u32, Option<mf_format::Mtime>, Vec<u8>);

fn entries_of(path: &Path) -> Vec<EntryView> {
    let archive = mf_format::Archive::open(path).unwrap();
    archive
        .entries()
        .map(|e| (e.path().to_owned(), e.mode(), e.mtime(), archive.read(&e).unwrap().into_owned()))
        .collect()
}

fn same_content(a: &Path, b: &Path) -> bool {
    entries_of(a) == entries_of(b)
}

#[test]
fn truncated_or_corrupted_patches_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pack(d, &release_v1(), "v1.mf", &[]);
    pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    let patch = std::fs::read(d.join("p.mfp")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", patch[..patch.len() - 7].to_vec(), "truncated"),
        ("short", patch[..40].to_vec(), "truncated"),
        (
            "body",
            {
                let mut p = patch.clone();
                let at = p.len() - 3;
                p[at] ^= 1;
                p
            },
            "body checksum",
        ),
        (
            "header",
            {
                let mut p = patch.clone();
                p[20] ^= 1;
                p
            },
            "header checksum",
        ),
        (
            "magic",
            {
                let mut p = patch.clone();
                p[1] = b'X';
                p
            },
            "not an mf patch",
        ),
        ("empty", Vec::new(), "not an mf patch"),
    ];
    let old_before = std::fs::read(d.join("v1.mf")).unwrap();
    for (name, bytes, expected) in cases {
        std::fs::write(d.join("bad.mfp"), &bytes).unwrap();
        let err = mf_fails(d, &["apply", "bad.mfp", "v1.mf", "-o", "out.mf"], 1);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!d.join("out.mf").exists(), "{name}");
        let err = mf_fails(d, &["patch-info", "bad.mfp"], 1);
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert_eq!(std::fs::read(d.join("v1.mf")).unwrap(), old_before);
    assert!(temp_files(d).is_empty());
}

#[test]
fn a_damaged_old_archive_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = pack(d, &release_v1(), "v1.mf", &[]);
    pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    // Damage the moved random asset (stored raw, so the byte is its content) in the old archive.
    let listing = json(&mf_ok(d, &["list", "--json", "v1.mf"]));
    let big = listing.as_array().unwrap().iter().find(|e| e["path"] == "assets/big.bin").unwrap().clone();
    assert_eq!(big["compression"], "none");
    let mut bytes = std::fs::read(&old).unwrap();
    let needle = &noise(400_000, 5)[1000..1032];
    let at = bytes.windows(32).position(|w| w == needle).unwrap();
    bytes[at + 7] ^= 0xff;
    std::fs::write(&old, &bytes).unwrap();
    let err = mf_fails(d, &["apply", "p.mfp", "v1.mf", "-o", "out.mf"], 1);
    assert!(err.contains("assets/big.bin") && err.contains("damaged"), "{err}");
    assert!(!d.join("out.mf").exists());
    for mode in [&["--in-place"][..], &["--in-place", "--rebuild"]] {
        let err = mf_fails(d, &[&["apply", "p.mfp", "v1.mf"][..], mode].concat(), 1);
        assert!(err.contains("assets/big.bin"), "{mode:?}: {err}");
        assert_eq!(std::fs::read(&old).unwrap(), bytes, "{mode:?}: old archive untouched");
    }
    assert!(temp_files(d).is_empty());
}

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.path().to_str().unwrap()])
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs failed (these tests need root): {status}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro", self.path().to_str().unwrap()])
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount read-only failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_old_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = Release { files: vec![("a.bin".into(), noise(1_200_000, 1))] };
    let v2 = Release { files: vec![("a.bin".into(), noise(1_200_000, 1)), ("b.bin".into(), noise(1_000_000, 2))] };
    pack(d, &v1, "v1.mf", &[]);
    pack(d, &v2, "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    let disk = Tmpfs::mount("2m");
    let old = disk.path().join("client.mf");
    std::fs::copy(d.join("v1.mf"), &old).unwrap();
    let before = std::fs::read(&old).unwrap();
    let patch = d.join("p.mfp");
    let err = mf_fails(d, &["apply", patch.to_str().unwrap(), old.to_str().unwrap(), "--in-place", "--rebuild"], 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(std::fs::read(&old).unwrap(), before);
    assert!(temp_files(disk.path()).is_empty(), "{:?}", temp_files(disk.path()));
    // In place: the uncommitted data does not fit; the archive stays the old version.
    let err = mf_fails(d, &["apply", patch.to_str().unwrap(), old.to_str().unwrap(), "--in-place"], 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(same_content(&old, &d.join("v1.mf")));
    assert!(temp_files(disk.path()).is_empty(), "{:?}", temp_files(disk.path()));
    let out = disk.path().join("out.mf");
    let err = mf_fails(d, &["apply", patch.to_str().unwrap(), old.to_str().unwrap(), "-o", out.to_str().unwrap()], 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!out.exists());
    // A patch that does not fit either: the patch output is atomic too.
    let err = mf_fails(d, &["diff", "v1.mf", "v2.mf", "-o", disk.path().join("p.mfp").to_str().unwrap()], 1);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(temp_files(disk.path()).is_empty());
}

#[test]
fn an_unwritable_target_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pack(d, &release_v1(), "v1.mf", &[]);
    pack(d, &release_v2(), "v2.mf", &[]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    let disk = Tmpfs::mount("8m");
    let old = disk.path().join("client.mf");
    std::fs::copy(d.join("v1.mf"), &old).unwrap();
    disk.remount_read_only();
    let before = std::fs::read(&old).unwrap();
    let patch = d.join("p.mfp");
    let err = mf_fails(d, &["apply", patch.to_str().unwrap(), old.to_str().unwrap(), "--in-place"], 1);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read(&old).unwrap(), before);
    // A target inside a path that is not a directory.
    let err = mf_fails(d, &["apply", "p.mfp", "v1.mf", "-o", "v2.mf/inside.mf"], 1);
    assert!(err.contains("v2.mf"), "{err}");
}

#[test]
fn kill_9_during_an_in_place_apply_leaves_old_or_new_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The old archive is packed at level 1 and the new one at level 15: every entry must be
    // recompressed by apply, which makes it slow enough to be killed mid-way.
    let mut v1 = Release { files: Vec::new() };
    for i in 0..12 {
        v1.files.push((format!("data/part{i}.txt"), text(2_000_000, i + 10)));
    }
    let mut v2 = Release { files: v1.files.clone() };
    v2.files[3].1[500..510].copy_from_slice(b"CHANGED!!!");
    pack(d, &v1, "v1.mf", &["--level", "1"]);
    let new = pack(d, &v2, "v2.mf", &["--level", "15"]);
    mf_ok(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    let old_bytes = std::fs::read(d.join("v1.mf")).unwrap();
    let new_bytes = std::fs::read(&new).unwrap();
    let target = d.join("client.mf");
    let mut saw_old = false;
    for delay_ms in [20u64, 150, 400, 900, 1600, 2600] {
        std::fs::write(&target, &old_bytes).unwrap();
        let mut child = Command::new(mf_bin())
            .args(["apply", "p.mfp", "client.mf", "--in-place", "--rebuild"])
            .current_dir(d)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let now = std::fs::read(&target).unwrap();
        assert!(now == old_bytes || now == new_bytes, "after kill at {delay_ms} ms the file is neither old nor new");
        saw_old |= now == old_bytes;
        // Leftovers of a SIGKILL can only be hidden temp files named after the target.
        for name in temp_files(d) {
            assert!(name.starts_with(".client.mf."), "unexpected leftover {name}");
        }
    }
    assert!(saw_old, "no kill landed before the rename: the test did not exercise an interrupted apply");
    // A later apply ignores any leftover temp file and completes.
    std::fs::write(&target, &old_bytes).unwrap();
    mf_ok(d, &["apply", "p.mfp", "client.mf", "--in-place", "--rebuild"]);
    assert_eq!(std::fs::read(&target).unwrap(), new_bytes);

    // Edited in place: a kill at any moment leaves the old or the new version (by content: the
    // edit changes the file's bytes), and the next run completes. (Every step of the commit is
    // stopped at in mf-diff's in_place tests.)
    let old_path = d.join("v1.mf");
    for name in temp_files(d) {
        std::fs::remove_file(d.join(name)).unwrap();
    }
    for delay_ms in [5u64, 20, 60, 150, 400] {
        std::fs::write(&target, &old_bytes).unwrap();
        let mut child =
            Command::new(mf_bin()).args(["apply", "p.mfp", "client.mf", "--in-place"]).current_dir(d).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let now_old = same_content(&target, &old_path);
        assert!(now_old || same_content(&target, &new), "after kill at {delay_ms} ms: neither old nor new");
        if now_old {
            mf_ok(d, &["apply", "p.mfp", "client.mf", "--in-place"]);
        }
        assert!(same_content(&target, &new), "after kill at {delay_ms} ms and another run");
        assert!(temp_files(d).is_empty(), "{:?}", temp_files(d));
    }
}

#[test]
fn two_plain_files_are_diffed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = [text(500_000, 3), noise(300_000, 4)].concat();
    let mut new = old.clone();
    new.splice(1000..1000, b"inserted".iter().copied());
    new[600_000] ^= 1;
    std::fs::write(d.join("old.bin"), &old).unwrap();
    std::fs::write(d.join("new.bin"), &new).unwrap();
    let report = json(&mf_ok(d, &["diff", "--json", "old.bin", "new.bin", "-o", "p.mfp"]));
    assert_eq!(report["kind"], "file");
    let len = std::fs::metadata(d.join("p.mfp")).unwrap().len();
    assert!(len < 5_000, "patch of two 800 KB files differing in two places is {len} bytes");
    mf_ok(d, &["apply", "p.mfp", "old.bin", "-o", "out.bin"]);
    assert_eq!(std::fs::read(d.join("out.bin")).unwrap(), new);
    let info = json(&mf_ok(d, &["patch-info", "--json", "p.mfp"]));
    assert_eq!(info["kind"], "file");
    assert_eq!(info["new_len"], new.len());
    // Wrong base and applied twice.
    let err = mf_fails(d, &["apply", "p.mfp", "p.mfp", "-o", "x.bin"], 1);
    assert!(err.contains("not the file this patch was made for"), "{err}");
    let err = mf_fails(d, &["apply", "p.mfp", "out.bin", "--in-place"], 1);
    assert!(err.contains("already applied"), "{err}");
    assert!(!d.join("x.bin").exists());
    // The same rules with a small memory budget (block-wise path).
    mf_ok(d, &["diff", "--memory-limit", "16M", "old.bin", "new.bin", "-o", "q.mfp"]);
    mf_ok(d, &["apply", "q.mfp", "old.bin", "-o", "out2.bin"]);
    assert_eq!(std::fs::read(d.join("out2.bin")).unwrap(), new);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mf_fails(d, &["diff", "a", "b"], 2);
    mf_fails(d, &["apply", "p", "a"], 2);
    mf_fails(d, &["apply", "p", "a", "-o", "x", "--in-place"], 2);
}

/// C source of a program with `functions` functions; `version` changes a few constants and adds
/// functions in the middle, which moves most code and shifts the addresses it refers to, the way
/// a real point release of a native library does.
fn c_program(functions: usize, version: u32) -> String {
    let mut src = String::from("#include <stdio.h>\n#include <stdlib.h>\n");
    let extra = if version > 1 { 40 } else { 0 };
    for f in 0..functions + extra {
        let k = if version > 1 && f % 97 == 0 { f * 3 + 1 } else { f * 3 };
        src += &format!(
            "static const char *name_{f} = \"function number {f}\";\n\
             __attribute__((noinline)) long fn_{f}(long x) {{ long s = x; \
             for (int i = 0; i < {r}; i++) s = s * {k} + (s >> 3) + i; \
             if (s % 7 == 0) puts(name_{f}); return s ^ {f}; }}\n",
            r = f % 13 + 2
        );
    }
    src += "int main(int argc, char **argv) { long s = argc;\n";
    for f in 0..functions + extra {
        src += &format!("s += fn_{f}(s);\n");
    }
    src += "printf(\"%ld\\n\", s); return 0; }\n";
    src
}

/// Compiles `source` with the system C compiler (present wherever the crates build: libsais is C).
fn compile(dir: &Path, source: &str, out: &str) -> PathBuf {
    let c = dir.join(format!("{out}.c"));
    std::fs::write(&c, source).unwrap();
    let status = Command::new("cc").args(["-O1", "-o"]).arg(dir.join(out)).arg(&c).status().expect("cc runs");
    assert!(status.success(), "cc failed on {out}.c");
    dir.join(out)
}

#[test]
fn native_executables_round_trip_with_small_thread_independent_patches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 2000 functions at -O1: a binary of ~450 KB that compiles in seconds, big enough that moved code
    // and shifted addresses dominate the diff.
    compile(d, &c_program(2000, 1), "v1");
    compile(d, &c_program(2000, 2), "v2");
    let new = std::fs::read(d.join("v2")).unwrap();
    assert!(new.len() > 256 << 10, "the program is a sizeable binary: {} bytes", new.len());
    mf_ok(d, &["--threads", "1", "diff", "v1", "v2", "-o", "one.mfp"]);
    mf_ok(d, &["--threads", "4", "diff", "v1", "v2", "-o", "four.mfp"]);
    let patch = std::fs::read(d.join("one.mfp")).unwrap();
    assert_eq!(patch, std::fs::read(d.join("four.mfp")).unwrap());
    // Most code moved and its addresses shifted; the patch must still be a small fraction.
    assert!(patch.len() * 20 < new.len(), "patch {} bytes for a {} byte program", patch.len(), new.len());
    mf_ok(d, &["apply", "one.mfp", "v1", "-o", "rebuilt"]);
    assert_eq!(std::fs::read(d.join("rebuilt")).unwrap(), new);
    // Archives holding the programs take the same path per entry.
    pack(d, &Release { files: vec![("bin/prog".into(), std::fs::read(d.join("v1")).unwrap())] }, "v1.mf", &[]);
    pack(d, &Release { files: vec![("bin/prog".into(), new.clone())] }, "v2.mf", &[]);
    let stat = json(&mf_ok(d, &["diff", "--json", "v1.mf", "v2.mf", "-o", "p.mfp"]));
    assert_eq!(stat["entries"][0]["method"], "bsdiff", "{stat}");
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "out.mf"]);
    assert_eq!(std::fs::read(d.join("out.mf")).unwrap(), std::fs::read(d.join("v2.mf")).unwrap());
}
