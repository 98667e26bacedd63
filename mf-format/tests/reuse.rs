//! Incremental pack: packing with an earlier archive's frames gives exactly the bytes of a fresh
//! pack, copies frames where it can, and a damaged or foreign earlier archive never changes the
//! output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mf_format::{
    collect_inputs, pack_to_file, pack_to_file_reusing, Archive, DirPackOptions, Error, PackSummary, ReuseSource,
    WriterOptions,
};
use mf_test_support::noise;

/// 4 KiB frames keep multi-frame entries small; level 3 keeps the test quick.
const OPTIONS: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };

/// Compressible text with some variety per seed.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("v {} {} {}\n", i % 97, (i * seed) % 1013, i / 7).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn write(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (path, data) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// Version 1 of a release: own-frames entries (text, a media file mixing raw and compressed
/// frames, a large streamed file), raw noise, solid small files and duplicates.
fn version_1() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = vec![
        ("models/big.obj", text(600_000, 1)),
        ("models/edit.obj", text(300_000, 2)),
        ("models/grow.obj", text(200_000, 3)),
        ("models/drop.obj", text(150_000, 4)),
        ("old/streamed.bin", text(5 << 20, 5)), // over 4 MiB: streamed, not prepared
        ("old/renamed.obj", text(120_000, 6)),
        ("textures/wall.png", noise(100_000, 7)),
        ("audio/mixed.ogg", [noise(40_000, 8), text(60_000, 8)].concat()),
        ("dup/a.obj", text(90_000, 9)),
        ("dup/b.obj", text(90_000, 9)),
    ];
    for i in 0..20u64 {
        let name: &'static str = Box::leak(format!("text/small{i}.txt").into_boxed_str());
        files.push((name, text(500 + i as usize * 300, 100 + i)));
    }
    files
}

/// Version 2: some files changed (a same-size edit in the middle, growth, a byte of a raw frame), one removed, two
/// renamed (one of them the large streamed file), some added, small files changed, added, removed.
fn version_2() -> Vec<(&'static str, Vec<u8>)> {
    let mut files: Vec<(&'static str, Vec<u8>)> = version_1()
        .into_iter()
        .filter(|(p, _)| !matches!(*p, "models/drop.obj" | "text/small3.txt"))
        .map(|(p, data)| match p {
            "models/edit.obj" => {
                let mut data = data;
                data[150_000..150_010].copy_from_slice(b"EDITEDEDIT");
                (p, data)
            }
            "models/grow.obj" => (p, [data, text(10_000, 33)].concat()),
            "audio/mixed.ogg" => {
                // One byte of one of the noise frames, which are stored raw.
                let mut data = data;
                data[10_000] ^= 0xFF;
                (p, data)
            }
            "old/streamed.bin" => ("new/streamed.bin", data),
            "old/renamed.obj" => ("new/renamed.obj", data),
            "text/small5.txt" => (p, text(2_000, 555)),
            _ => (p, data),
        })
        .collect();
    files.push(("models/added.obj", text(110_000, 42)));
    files.push(("dup/c.obj", text(90_000, 9)));
    files.push(("text/added.txt", text(800, 77)));
    files
}

fn pack(dir: &Path, out: &Path, options: WriterOptions) {
    let pack_options = DirPackOptions { writer: options, ..DirPackOptions::default() };
    let collected = collect_inputs(&[dir.to_owned()], Some(out), &pack_options).unwrap();
    pack_to_file(&collected.inputs, out, options, |_, _| {}).unwrap();
}

fn pack_reusing(dir: &Path, out: &Path, options: WriterOptions, old: &Path) -> (PackSummary, Arc<ReuseSource>) {
    let pack_options = DirPackOptions { writer: options, ..DirPackOptions::default() };
    let collected = collect_inputs(&[dir.to_owned()], Some(out), &pack_options).unwrap();
    let source = Arc::new(ReuseSource::open(old, &options).unwrap());
    let summary = pack_to_file_reusing(&collected.inputs, out, options, Some(source.clone()), |_, _| {}).unwrap();
    (summary, source)
}

struct Trees {
    _dir: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
    root: PathBuf,
}

fn trees() -> Trees {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let (v1, v2) = (root.join("v1"), root.join("v2"));
    write(&v1, &version_1());
    write(&v2, &version_2());
    Trees { _dir: dir, v1, v2, root }
}

#[test]
fn reusing_pack_is_byte_identical_to_a_fresh_pack_and_copies_unchanged_frames() {
    let t = trees();
    let (old, fresh, reused) = (t.root.join("old.mf"), t.root.join("fresh.mf"), t.root.join("reused.mf"));
    pack(&t.v1, &old, OPTIONS);
    pack(&t.v2, &fresh, OPTIONS);
    let (summary, source) = pack_reusing(&t.v2, &reused, OPTIONS, &old);
    assert_eq!(std::fs::read(&reused).unwrap(), std::fs::read(&fresh).unwrap(), "reused pack differs from fresh");
    assert_eq!(source.damage().0, 0);

    // Every compressed frame of an unchanged own-frames entry is copied: big.obj, dup/a.obj (its
    // duplicates share it), the renamed files (found by content), the compressible frames of the
    // media file; edit.obj and grow.obj keep all frames but the changed ones.
    let archive = Archive::open(&fresh).unwrap();
    let compressed_frames = |path: &str| {
        let entry = archive.get(path).unwrap();
        (0..archive.frame_count(&entry)).filter(|&k| !archive.frame_is_raw(&entry, k)).count() as u64
    };
    let whole = ["models/big.obj", "dup/a.obj", "new/streamed.bin", "new/renamed.obj", "audio/mixed.ogg"];
    let expected_whole: u64 = whole.iter().map(|p| compressed_frames(p)).sum();
    let edit = compressed_frames("models/edit.obj");
    let grow = compressed_frames("models/grow.obj");
    let reuse = summary.reused;
    assert_eq!(reuse.whole_entries, whole.len() as u64, "{reuse:?}");
    assert_eq!(reuse.entries, whole.len() as u64 + 2, "{reuse:?}");
    // The edit touches one frame (150_000..150_010 lies in frame 36 of 4 KiB); growth rewrites the
    // old last (partial) frame and the new ones.
    assert_eq!(reuse.frames, expected_whole + (edit - 1) + (200_000 / 4096), "{reuse:?}");
    assert!(grow > 200_000 / 4096);
    assert!(reuse.bytes >= (5 << 20) + 600_000, "{reuse:?}");
    // The media file's noise frames, raw in OLD, are taken as they are without being probed again,
    // but for the one whose byte changed.
    assert!(raw_frames(&archive, "audio/mixed.ogg") >= 9);
    assert_eq!(source.raw_frames_matched(), raw_frames(&archive, "audio/mixed.ogg") - 1);
}

/// How many of an own-frames entry's frames are stored raw.
fn raw_frames(archive: &Archive, path: &str) -> u64 {
    let entry = archive.get(path).unwrap();
    (0..archive.frame_count(&entry)).filter(|&k| archive.frame_is_raw(&entry, k)).count() as u64
}

#[test]
fn an_old_archive_of_another_level_or_frame_size_is_not_reused_and_the_output_is_still_identical() {
    let t = trees();
    let fresh = t.root.join("fresh.mf");
    pack(&t.v2, &fresh, OPTIONS);
    let others = [
        WriterOptions { level: 5, ..OPTIONS },
        WriterOptions { frame_size_log2: 13, ..OPTIONS },
        WriterOptions { level: 5, frame_size_log2: 14 },
    ];
    for (i, other) in others.into_iter().enumerate() {
        let (old, reused) = (t.root.join(format!("old{i}.mf")), t.root.join(format!("reused{i}.mf")));
        pack(&t.v1, &old, other);
        let (summary, _) = pack_reusing(&t.v2, &reused, OPTIONS, &old);
        assert_eq!(std::fs::read(&reused).unwrap(), std::fs::read(&fresh).unwrap(), "{other:?}");
        assert_eq!(summary.reused.frames, 0, "{other:?}: {summary:?}");
    }
}

#[test]
fn reusing_the_same_tree_copies_every_compressed_frame() {
    let t = trees();
    let (old, again) = (t.root.join("old.mf"), t.root.join("again.mf"));
    pack(&t.v1, &old, OPTIONS);
    let (summary, source) = pack_reusing(&t.v1, &again, OPTIONS, &old);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&old).unwrap());
    let archive = Archive::open(&old).unwrap();
    let own_compressed: u64 = archive
        .entries()
        .filter(|e| !e.is_solid() && e.path() != "dup/b.obj")
        .map(|e| (0..archive.frame_count(&e)).filter(|&k| !archive.frame_is_raw(&e, k)).count() as u64)
        .sum();
    assert!(own_compressed > 1000);
    assert_eq!(summary.reused.frames, own_compressed);
    assert_eq!(source.raw_frames_matched(), raw_frames(&archive, "audio/mixed.ogg"));
}

/// Offset of the first compressed frame of `path` in `archive`, and its stored length.
fn first_zstd_frame(archive: &Path, path: &str) -> (u64, u32) {
    let archive = Archive::open(archive).unwrap();
    let entry = archive.get(path).unwrap();
    let run = archive.entry_frames(&entry);
    let frame = archive.frames()[run.start as usize..run.end as usize].iter().find(|f| f.stored_len < f.len).unwrap();
    (frame.offset, frame.stored_len)
}

#[test]
fn damaged_frames_of_the_old_archive_are_compressed_afresh_and_counted() {
    let t = trees();
    let (old, fresh, reused) = (t.root.join("old.mf"), t.root.join("fresh.mf"), t.root.join("reused.mf"));
    pack(&t.v1, &old, OPTIONS);
    pack(&t.v2, &fresh, OPTIONS);
    let mut bytes = std::fs::read(&old).unwrap();
    // One frame's payload garbled (its checksum catches it), another's header made to lie.
    let (offset, len) = first_zstd_frame(&old, "models/big.obj");
    for b in &mut bytes[(offset + len as u64 / 2) as usize..][..8] {
        *b ^= 0x5a;
    }
    let (offset, _) = first_zstd_frame(&old, "dup/a.obj");
    bytes[offset as usize..][..4].copy_from_slice(b"junk");
    std::fs::write(&old, &bytes).unwrap();

    let (summary, source) = pack_reusing(&t.v2, &reused, OPTIONS, &old);
    assert_eq!(std::fs::read(&reused).unwrap(), std::fs::read(&fresh).unwrap());
    // The garbled payload does not decode (damage, reported); the frame without zstd magic is not a
    // frame this writer makes and is simply not taken.
    let (damaged, first) = source.damage();
    assert_eq!(damaged, 1, "{first:?}");
    assert_eq!(summary.damaged_frames, 1);
    let first = first.unwrap();
    assert!(first.contains("old.mf") && first.contains("frame"), "{first}");
    assert!(summary.reused.frames > 0);
}

/// Sets the content hash of `path`'s record in the archive at `file` to `hash`, fixing the index
/// and footer hashes so that the archive still opens: a forged claim of equal content.
fn forge_content_hash(file: &Path, path: &str, hash: u64) {
    let archive = Archive::open(file).unwrap();
    let index = archive.get(path).unwrap().index() as usize;
    let (index_offset, index_len) = archive.index_extent();
    drop(archive);
    let mut bytes = std::fs::read(file).unwrap();
    let record = index_offset as usize + 32 + 64 * index;
    bytes[record + 56..record + 64].copy_from_slice(&hash.to_le_bytes());
    let index_bytes = &bytes[index_offset as usize..(index_offset + index_len) as usize];
    let index_hash = xxhash_rust::xxh3::xxh3_64(index_bytes);
    let footer = bytes.len() - 40;
    bytes[footer + 16..footer + 24].copy_from_slice(&index_hash.to_le_bytes());
    let footer_hash = xxhash_rust::xxh3::xxh3_64(&bytes[footer..footer + 24]);
    bytes[footer + 24..footer + 32].copy_from_slice(&footer_hash.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
    Archive::open(file).expect("the forged archive still opens");
}

#[test]
fn a_frame_that_decodes_to_other_content_is_never_copied_whatever_the_hashes_claim() {
    // OLD holds big.obj (found by path) and renamed.obj (found by size and content hash) with one
    // frame each that decodes cleanly to other bytes, their records forged to claim the new
    // content's hash: those chunks are compressed afresh, the rest copied.
    let t = trees();
    let (old, fresh, reused) = (t.root.join("old.mf"), t.root.join("fresh.mf"), t.root.join("reused.mf"));
    let v1 = version_1();
    let content = |path: &str| v1.iter().find(|(p, _)| *p == path).unwrap().1.clone();
    let mut big = content("models/big.obj");
    big[10_000..10_010].copy_from_slice(b"0123456789");
    let mut renamed = content("old/renamed.obj");
    renamed[50_000..50_010].copy_from_slice(b"0123456789");
    let forged_dir = t.root.join("forged");
    write(&forged_dir, &[("models/big.obj", big), ("old/renamed.obj", renamed)]);
    pack(&forged_dir, &old, OPTIONS);
    let hash = |data: &[u8]| xxhash_rust::xxh3::xxh3_64(data);
    forge_content_hash(&old, "models/big.obj", hash(&content("models/big.obj")));
    forge_content_hash(&old, "old/renamed.obj", hash(&content("old/renamed.obj")));

    pack(&t.v2, &fresh, OPTIONS);
    let (summary, source) = pack_reusing(&t.v2, &reused, OPTIONS, &old);
    assert_eq!(std::fs::read(&reused).unwrap(), std::fs::read(&fresh).unwrap());
    assert_eq!(source.damage().0, 0, "frames that decode are not damage");
    let archive = Archive::open(&fresh).unwrap();
    let compressed = |path: &str| {
        let entry = archive.get(path).unwrap();
        (0..archive.frame_count(&entry)).filter(|&k| !archive.frame_is_raw(&entry, k)).count() as u64
    };
    let reuse = summary.reused;
    assert_eq!(reuse.entries, 2, "{reuse:?}");
    assert_eq!(reuse.whole_entries, 0, "{reuse:?}");
    assert_eq!(reuse.frames, compressed("models/big.obj") - 1 + compressed("new/renamed.obj") - 1, "{reuse:?}");
}

#[test]
fn an_old_file_that_is_not_an_archive_is_an_error_naming_it() {
    let t = trees();
    let old = t.root.join("old.mf");
    pack(&t.v1, &old, OPTIONS);
    let mut bytes = std::fs::read(&old).unwrap();
    let len = bytes.len();
    bytes[len - 20] ^= 1; // footer hash
    std::fs::write(&old, &bytes).unwrap();
    let error = ReuseSource::open(&old, &OPTIONS).err().expect("a damaged index is refused");
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("old.mf"), "{error}");

    std::fs::write(&old, b"not an archive at all, just some text of enough length to have a footer....").unwrap();
    let error = ReuseSource::open(&old, &OPTIONS).err().expect("not an archive");
    assert!(error.to_string().contains("old.mf"), "{error}");
}
