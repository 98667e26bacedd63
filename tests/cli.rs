//! End-to-end tests of `mf pack`, `list`, `extract`, `cat`, `verify` and `info`.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn pack_extract_round_trips_the_sample_assets_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let assets = sample_assets();
    let assets = assets.to_str().unwrap();
    mf_ok(dir.path(), &["pack", assets, "-o", "assets.mf"]);
    mf_ok(dir.path(), &["verify", "assets.mf"]);
    mf_ok(dir.path(), &["extract", "assets.mf", "-C", "out"]);
    assert_eq!(read_tree(&dir.path().join("out")), read_tree(&sample_assets()));
    let mode = std::fs::metadata(dir.path().join("out/bin/launch.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "executable bit restored");
    let mode = std::fs::metadata(dir.path().join("out/models/cube.obj")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn list_shows_paths_in_order_and_long_and_json_forms() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("b.txt", b"bbbb"), ("a/z.txt", b"z"), ("a/y.bin", &noise(1000, 1))]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    assert_eq!(mf_ok(dir.path(), &["list", "x.mf"]), "a/y.bin\na/z.txt\nb.txt\n");
    let long = mf_ok(dir.path(), &["list", "-l", "x.mf"]);
    assert!(
        long.lines().any(|l| l.starts_with("-rw-r--r--") && l.contains(" 1000 ") && l.ends_with("a/y.bin")),
        "{long}"
    );
    let json: serde_json::Value = serde_json::from_str(&mf_ok(dir.path(), &["list", "--json", "x.mf"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[2]["path"], "b.txt");
    assert_eq!(json[2]["size"], 4);
}

#[test]
fn long_listing_gives_small_files_their_share_of_the_solid_block() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..50).map(|i| (format!("f{i:02}.txt"), mf_test_support::text(i as u64, 2 + i % 5))).collect();
    let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
    write_tree(&dir.path().join("src"), &borrowed);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let json: serde_json::Value = serde_json::from_str(&mf_ok(dir.path(), &["list", "--json", "x.mf"])).unwrap();
    let info: serde_json::Value = serde_json::from_str(&mf_ok(dir.path(), &["info", "--json", "x.mf"])).unwrap();
    let stored = info["stored_size"].as_u64().unwrap();
    let mut shares = 0;
    // The case that matters: the block is larger than the smallest files.
    assert!(json.as_array().unwrap().iter().any(|e| e["size"].as_u64().unwrap() < stored), "{json}");
    for entry in json.as_array().unwrap() {
        // Each file is in the one solid frame, which a reader fetches whole...
        assert_eq!(entry["stored_size"].as_u64().unwrap(), stored, "{entry}");
        // ...but costs only its part of it.
        let share = entry["stored_share"].as_u64().unwrap();
        assert!(share < entry["size"].as_u64().unwrap(), "{entry}");
        shares += share;
    }
    assert!(shares.abs_diff(stored) <= 50, "shares {shares} vs stored {stored}");
    let long = mf_ok(dir.path(), &["list", "-l", "x.mf"]);
    for line in long.lines() {
        let ratio: f64 = line.split_whitespace().nth(3).unwrap().trim_end_matches('%').parse().unwrap();
        assert!(ratio < 100.0, "{line}");
    }
}

#[test]
fn pack_is_deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..40 {
        let text = format!("line {i}\n").repeat(i * 500 + 1);
        files.push((format!("d{}/f{i}.txt", i % 3), text.into_bytes()));
    }
    files.push(("big.bin".into(), [noise(700_000, 3), vec![0; 900_000]].concat()));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    write_tree(&dir.path().join("src"), &refs);
    mf_ok(dir.path(), &["--threads", "1", "pack", "src", "-o", "one.mf"]);
    mf_ok(dir.path(), &["--threads", "4", "pack", "src", "-o", "four.mf"]);
    let one = std::fs::read(dir.path().join("one.mf")).unwrap();
    assert_eq!(one, std::fs::read(dir.path().join("four.mf")).unwrap());
}

#[test]
fn extract_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("a.txt", b"new")]);
    write_tree(&dir.path().join("out"), &[("a.txt", b"old")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let err = mf_fails(dir.path(), &["extract", "x.mf", "-C", "out"], 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("out/a.txt")).unwrap(), b"old");
    mf_ok(dir.path(), &["extract", "x.mf", "-C", "out", "--force"]);
    assert_eq!(std::fs::read(dir.path().join("out/a.txt")).unwrap(), b"new");
}

#[test]
fn cat_writes_one_entry_and_names_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let big = "abc".repeat(300_000);
    write_tree(&dir.path().join("src"), &[("t/big.txt", big.as_bytes())]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    assert_eq!(mf_ok(dir.path(), &["cat", "x.mf", "t/big.txt"]), big);
    let err = mf_fails(dir.path(), &["cat", "x.mf", "t/nope"], 1);
    assert!(err.contains("no entry 't/nope'"), "{err}");
}

#[test]
fn verify_names_the_damaged_entry() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("good.bin", &noise(5000, 9)), ("bad.bin", &noise(5000, 10))]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let path = dir.path().join("x.mf");
    let mut bytes = std::fs::read(&path).unwrap();
    // Data order is path order: "bad.bin" is first, at offset 32 (right after the header).
    bytes[32 + 100] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let out = mf_in(dir.path(), &["verify", "x.mf"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'bad.bin'") && !stderr.contains("good.bin"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    mf_fails(dir.path(), &["pack"], 2);
    mf_fails(dir.path(), &["frobnicate"], 2);
    mf_fails(dir.path(), &["pack", "x", "-o", "y.mf", "--level", "99"], 2);
}

#[test]
fn failed_pack_leaves_nothing_and_keeps_the_old_archive() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.mf"), b"previous archive").unwrap();
    write_tree(&dir.path().join("src"), &[("ok.txt", b"fine")]);
    let err = mf_fails(dir.path(), &["pack", "src", "missing-dir", "-o", "x.mf"], 1);
    assert!(err.contains("missing-dir"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("x.mf")).unwrap(), b"previous archive");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temp file left: {names:?}");
}

#[test]
fn pack_leaves_out_its_own_output_when_writing_into_the_packed_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("a.txt", b"aaa"), ("sub/x.mf", b"another archive, kept")]);
    // The first pack creates src/x.mf; the second must not pack the first one's output into itself.
    mf_ok(dir.path(), &["pack", "src", "-o", "src/x.mf"]);
    assert_eq!(mf_ok(dir.path(), &["list", "src/x.mf"]), "a.txt\nsub/x.mf\n");
    mf_ok(dir.path(), &["pack", "src", "-o", "src/x.mf"]);
    assert_eq!(mf_ok(dir.path(), &["list", "src/x.mf"]), "a.txt\nsub/x.mf\n");
}
