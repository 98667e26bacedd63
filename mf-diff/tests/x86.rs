//! Patches between archives holding x86 executables (container 2.1, the X86 filter): apply rebuilds
//! the new archive byte for byte (filtered frames copied from the base, verbatim copies carrying
//! their flag), and in-place apply gives the new content.

use std::path::Path;

use mf_diff::{apply_in_place, apply_patch, diff_files, DiffOptions, InPlaceOptions};
use mf_format::{Archive, WriterOptions};
use mf_test_support::{mf_bytes_with, text, x86_executable};

/// 64 KiB frames, so a 2 MiB binary has many frames and is patched frame by frame.
const OPTIONS: WriterOptions = WriterOptions { level: 3, frame_size_log2: 16 };

fn release(version: u32) -> Vec<(String, Vec<u8>)> {
    let exe = x86_executable(2 << 20);
    let mut tool = exe.clone();
    let mut not_yet_code = exe[..600_000].to_vec();
    not_yet_code[0] = b'#';
    if version >= 2 {
        tool[1 << 20..(1 << 20) + 300].fill(0xE8); // an edit in the middle
        not_yet_code[0] = 0x7f; // now it starts like an ELF file: filtered from here on
    }
    vec![
        ("bin/tool".into(), tool),
        ("bin/same".into(), exe[..1_500_000].to_vec()),
        ("bin/flip".into(), not_yet_code),
        ("notes.txt".into(), text(u64::from(version), 3000)),
    ]
}

fn write(path: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::write(path, mf_bytes_with(OPTIONS, files.iter().map(|(p, d)| (p.as_str(), &d[..])))).unwrap();
}

#[test]
fn patches_between_filtered_archives_apply_exactly_and_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, patch, out) =
        (dir.path().join("old.mf"), dir.path().join("new.mf"), dir.path().join("p.mfp"), dir.path().join("out.mf"));
    write(&old, &release(1));
    write(&new, &release(2));
    let new_archive = Archive::open(&new).unwrap();
    for path in ["bin/tool", "bin/same", "bin/flip"] {
        assert!(new_archive.get(path).unwrap().has_x86_filter(), "{path}");
    }
    assert!(!Archive::open(&old).unwrap().get("bin/flip").unwrap().has_x86_filter());
    assert!(new_archive.reference_level().is_some(), "the writer's own layout is recognised");

    diff_files(&old, &new, &patch, &DiffOptions::default(), &|_| {}).unwrap();
    let patch_len = std::fs::metadata(&patch).unwrap().len();
    assert!(patch_len < 400_000, "the unchanged binary and frames are not in the patch: {patch_len} bytes");
    let outcome = apply_patch(&patch, &old, &out, &|_| {}).unwrap();
    assert!(outcome.exact);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&new).unwrap(), "the rebuild differs from the new archive");

    std::fs::copy(&old, &out).unwrap();
    apply_in_place(&patch, &out, InPlaceOptions::default(), &|_| {}).unwrap();
    let applied = Archive::open(&out).unwrap();
    assert!(applied.verify().is_empty());
    for (path, data) in release(2) {
        let entry = applied.get(&path).unwrap();
        assert_eq!(applied.read(&entry).unwrap().as_ref(), &data[..], "{path}");
    }
}
