//! Property tests: for random pairs of archives, applying the diff to the old archive gives the new
//! archive byte for byte, and the patch is the same whatever the thread count.

use std::path::Path;

use mf_diff::{apply_patch, diff_files, DiffOptions};
use mf_format::{Compression, EntryOptions, Mtime, WriterOptions};
use mf_test_support::mf_bytes_with;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct File {
    path: String,
    content: Vec<u8>,
    compression: Compression,
    mode: u32,
    mtime: Option<i64>,
}

fn content_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..3000),
        (1usize..40, any::<u8>(), 0usize..200).prop_map(|(words, seed, extra)| {
            let mut text = Vec::new();
            for i in 0..words * 20 + extra {
                text.extend_from_slice(format!("word{} ", (i * seed as usize) % 17).as_bytes());
            }
            text
        }),
    ]
}

fn file_strategy() -> impl Strategy<Value = File> {
    (
        0u32..12,
        prop_oneof![Just("txt"), Just("bin"), Just("png")],
        content_strategy(),
        prop_oneof![Just(Compression::Auto), Just(Compression::Store), Just(Compression::Zstd)],
        prop_oneof![Just(0o644u32), Just(0o755)],
        proptest::option::of(0i64..2_000_000_000),
    )
        .prop_map(|(n, ext, content, compression, mode, mtime)| File {
            path: format!("d{}/f{n}.{ext}", n % 3),
            content,
            compression,
            mode,
            mtime,
        })
}

/// A derived release: some files edited, renamed, removed, added.
fn mutate(files: &[File], ops: &[(u8, u16, u8)], extra: &[File]) -> Vec<File> {
    let mut out: Vec<File> = files.to_vec();
    for &(op, at, byte) in ops {
        if out.is_empty() {
            break;
        }
        let i = at as usize % out.len();
        match op % 5 {
            0 => {
                let c = &mut out[i].content;
                let p = at as usize % (c.len() + 1);
                c.insert(p, byte);
            }
            1 => {
                let c = &mut out[i].content;
                if !c.is_empty() {
                    let p = at as usize % c.len();
                    c[p] ^= byte | 1;
                }
            }
            2 => out[i].path = format!("moved/{}", out[i].path),
            3 => {
                out.remove(i);
            }
            _ => out[i].mode ^= 0o111,
        }
    }
    out.extend(extra.iter().cloned().map(|mut f| {
        f.path = format!("new/{}", f.path);
        f
    }));
    out
}

fn write_archive(path: &Path, files: &[File], level: i32, frame_size_log2: u8) {
    let mut seen = std::collections::HashSet::new();
    let entries = files.iter().filter(|file| seen.insert(&file.path)).map(|file| {
        let options = EntryOptions {
            compression: file.compression,
            mode: file.mode,
            mtime: file.mtime.map(|secs| Mtime { secs, nanos: 5 }),
        };
        (&file.path, &file.content, options)
    });
    std::fs::write(path, mf_bytes_with(WriterOptions { level, frame_size_log2 }, entries)).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn apply_of_diff_reproduces_the_new_archive(
        files in proptest::collection::vec(file_strategy(), 0..10),
        ops in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..12),
        extra in proptest::collection::vec(file_strategy(), 0..3),
        old_level in prop_oneof![Just(1), Just(9)],
        new_level in prop_oneof![Just(1), Just(9)],
        small_frames in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (old, new, patch, out) =
            (dir.path().join("old.mf"), dir.path().join("new.mf"), dir.path().join("p.mfp"), dir.path().join("out.mf"));
        write_archive(&old, &files, old_level, 18);
        write_archive(&new, &mutate(&files, &ops, &extra), new_level, if small_frames { 12 } else { 18 });
        let options = DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() };
        diff_files(&old, &new, &patch, &options, &|_| {}).unwrap();
        let outcome = apply_patch(&patch, &old, &out, &|_| {}).unwrap();
        prop_assert!(outcome.exact);
        prop_assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&new).unwrap());
    }
}

#[test]
fn patches_are_identical_across_thread_counts_and_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<File> = (0..40)
        .map(|i| File {
            path: format!("dir{}/file{i}.dat", i % 4),
            content: format!("entry {i} ").repeat(500 + i * 37).into_bytes(),
            compression: Compression::Auto,
            mode: 0o644,
            mtime: None,
        })
        .collect();
    let mut changed = files.clone();
    for (i, file) in changed.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
        file.content.extend_from_slice(format!("appended {i}").as_bytes());
    }
    let (old, new) = (dir.path().join("old.mf"), dir.path().join("new.mf"));
    write_archive(&old, &files, 9, 18);
    write_archive(&new, &changed, 9, 18);
    let mut patches = Vec::new();
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let patch = dir.path().join(format!("p{threads}.mfp"));
        pool.install(|| {
            diff_files(&old, &new, &patch, &DiffOptions { memory_limit: 1 << 30, ..DiffOptions::default() }, &|_| {})
        })
        .unwrap();
        patches.push(std::fs::read(&patch).unwrap());
    }
    assert!(patches.windows(2).all(|w| w[0] == w[1]), "patches differ across thread counts");
    // A budget so small that entries run one at a time still gives the same patch.
    let patch = dir.path().join("small.mfp");
    diff_files(&old, &new, &patch, &DiffOptions { memory_limit: 16 << 20, ..DiffOptions::default() }, &|_| {}).unwrap();
    assert_eq!(std::fs::read(&patch).unwrap(), patches[0]);
}

#[test]
fn a_forged_patch_never_panics_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<File> = (0..5)
        .map(|i| File {
            path: format!("f{i}.txt"),
            content: format!("line {i}\n").repeat(300).into_bytes(),
            compression: Compression::Auto,
            mode: 0o644,
            mtime: None,
        })
        .collect();
    let mut changed = files.clone();
    changed[2].content.extend_from_slice(b"more");
    changed.push(File { path: "g.bin".into(), content: vec![3; 999], ..files[0].clone() });
    let (old, new, patch) = (dir.path().join("old.mf"), dir.path().join("new.mf"), dir.path().join("p.mfp"));
    write_archive(&old, &files, 9, 18);
    write_archive(&new, &changed, 9, 18);
    diff_files(&old, &new, &patch, &DiffOptions { memory_limit: 1 << 30, ..DiffOptions::default() }, &|_| {}).unwrap();
    let good = std::fs::read(&patch).unwrap();
    // Re-seal a corruption of every byte of the control stream of the body with valid checksums, so the parser and the
    // applier (not just the checksum) see the damage.
    let control_len = u64::from_le_bytes(good[48..56].try_into().unwrap()) as usize;
    let control = zstd::decode_all(&good[80..80 + control_len]).unwrap();
    let blobs = &good[80 + control_len..];
    for at in 0..control.len() {
        let mut forged = control.clone();
        forged[at] ^= 0x55;
        let bytes = reseal(&good, &forged, blobs);
        let forged_path = dir.path().join("forged.mfp");
        std::fs::write(&forged_path, &bytes).unwrap();
        let out = dir.path().join("out.mf");
        if let Ok(outcome) = apply_patch(&forged_path, &old, &out, &|_| {}) {
            // Some bytes (a mode, an mtime) change the result legitimately; an exact patch
            // must then still produce exactly what its header promises.
            assert!(outcome.exact);
            let _ = std::fs::remove_file(&out);
        } else {
            assert!(!out.exists());
        }
    }
}

fn reseal(good: &[u8], control: &[u8], blobs: &[u8]) -> Vec<u8> {
    let compressed = zstd::encode_all(control, 3).unwrap();
    let mut header = good[..80].to_vec();
    header[48..56].copy_from_slice(&(compressed.len() as u64).to_le_bytes());
    let mut body = compressed.clone();
    body.extend_from_slice(blobs);
    header[64..72].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
    let hash = xxhash_rust::xxh3::xxh3_64(&header[..72]);
    header[72..80].copy_from_slice(&hash.to_le_bytes());
    header.extend_from_slice(&body);
    header
}

/// Container 2.0's shared data and solid stream survive a diff: duplicates (small, large, empty),
/// solid batches written between other entries, and a changed entry among them are rebuilt byte
/// for byte (patch storage kinds "solid" and "same as").
#[test]
fn archives_with_duplicates_and_solid_blocks_patch_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let big = mf_test_support::text(1, 30_000);
    let noise = mf_test_support::noise(50_000, 3);
    let build = |changed: &[u8]| {
        let mut files: Vec<(String, Vec<u8>, EntryOptions)> = Vec::new();
        for i in 0..200 {
            files.push((format!("small/{i}.txt"), mf_test_support::text(i, 30), EntryOptions::default()));
            if i % 50 == 0 {
                files.push((format!("big/{i}.txt"), big.clone(), EntryOptions::default()));
                files.push((format!("noise/{i}.bin"), noise.clone(), EntryOptions::default()));
                files.push((format!("empty/{i}"), Vec::new(), EntryOptions::default()));
            }
        }
        files.push(("changed.txt".into(), changed.to_vec(), EntryOptions::default()));
        files.push(("copy-of-small-7.txt".into(), mf_test_support::text(7, 30), EntryOptions::default()));
        mf_bytes_with(
            WriterOptions { level: 3, frame_size_log2: 12 },
            files.iter().map(|(p, d, o)| (p.as_str(), &d[..], *o)),
        )
    };
    let (old, new, patch, out) =
        (dir.path().join("old.mf"), dir.path().join("new.mf"), dir.path().join("p.mfp"), dir.path().join("out.mf"));
    std::fs::write(&old, build(b"before")).unwrap();
    std::fs::write(&new, build(b"after, and longer")).unwrap();
    let archive = mf_format::Archive::open(&new).unwrap();
    assert!(archive.space().shared_entries > 5 && archive.space().solid_frames > 16, "{:?}", archive.space());
    assert!(archive.reference_level().is_some(), "the writer's own layout is recognised");
    diff_files(&old, &new, &patch, &DiffOptions::default(), &|_| {}).unwrap();
    let outcome = apply_patch(&patch, &old, &out, &|_| {}).unwrap();
    assert!(outcome.exact);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&new).unwrap());
}

#[test]
fn unrelated_large_entries_fall_back_to_blocks_and_apply_exactly() {
    // Past one standard window the entry is matched in windows; unrelated content outgrows the
    // delta's memory allowance (its whole size here), so the diff falls back to zstd blocks.
    let dir = tempfile::tempdir().unwrap();
    let (old, new, patch, out) =
        (dir.path().join("old.mf"), dir.path().join("new.mf"), dir.path().join("p.mfp"), dir.path().join("out.mf"));
    let len = 20 << 20;
    let file = |content: Vec<u8>| File {
        path: "big.bin".into(),
        content,
        compression: Compression::Auto,
        mode: 0o644,
        mtime: None,
    };
    write_archive(&old, &[file(mf_test_support::noise(len, 1))], 3, 18);
    write_archive(&new, &[file(mf_test_support::noise(len, 2))], 3, 18);
    let report = diff_files(&old, &new, &patch, &DiffOptions::default(), &|_| {}).unwrap();
    let big = report.entries.iter().find(|e| e.path.as_deref() == Some("big.bin")).unwrap();
    assert_eq!(big.method, mf_diff::Method::ZstdRef, "{big:?}");
    let outcome = apply_patch(&patch, &old, &out, &|_| {}).unwrap();
    assert!(outcome.exact);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&new).unwrap(), "the rebuild differs from the new archive");
}
