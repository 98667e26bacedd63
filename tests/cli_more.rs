//! More end-to-end tests of the `mf` binary: pack options, partial and hostile extraction, Ctrl-C
//! during pack, damaged archives, JSON output, and random trees round-tripping through
//! `mf pack` / `mf extract`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

fn listing(dir: &Path, archive: &str) -> Vec<String> {
    mf_ok(dir, &["list", archive]).lines().map(str::to_owned).collect()
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&mf_ok(dir, args)).expect("valid JSON")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn exclude_matches_names_anywhere_or_paths_from_the_root() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        &dir.path().join("src"),
        &[
            ("a.txt", b"a"),
            ("b.tmp", b"b"),
            ("logs/x.log", b"x"),
            ("sub/c.tmp", b"c"),
            ("sub/keep.txt", b"k"),
            ("sub/logs/y.log", b"y"),
            ("sub/deeper/keep.txt", b"d"),
        ],
    );
    // Without '/', a pattern matches a name at any depth (a directory's whole subtree goes).
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf", "--exclude", "*.tmp", "--exclude", "logs"]);
    assert_eq!(listing(dir.path(), "x.mf"), ["a.txt", "sub/deeper/keep.txt", "sub/keep.txt"]);
    // With '/', it is matched against the whole path inside the archive.
    mf_ok(dir.path(), &["pack", "src", "-o", "y.mf", "--exclude", "sub/*.txt"]);
    let listed = listing(dir.path(), "y.mf");
    assert!(!listed.contains(&"sub/keep.txt".to_owned()), "{listed:?}");
    assert!(listed.contains(&"a.txt".to_owned()) && listed.contains(&"sub/logs/y.log".to_owned()), "{listed:?}");
    // globset's `*` crosses '/', so sub/deeper/keep.txt matches `sub/*.txt` too.
    assert!(!listed.contains(&"sub/deeper/keep.txt".to_owned()), "{listed:?}");
    let err = mf_fails(dir.path(), &["pack", "src", "-o", "z.mf", "--exclude", "a[b"], 1);
    assert!(err.contains("a[b"), "{err}");
    assert!(!dir.path().join("z.mf").exists());
}

#[test]
fn files_from_packs_exactly_the_list_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("a.txt", b"a"), ("d/b.txt", b"b"), ("d/c.txt", b"c"), ("e.txt", b"e")]);
    std::fs::write(dir.path().join("list.txt"), "d/b.txt\n\na.txt\r\n./e.txt\n").unwrap();
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf", "--files-from", "list.txt"]);
    assert_eq!(listing(dir.path(), "x.mf"), ["a.txt", "d/b.txt", "e.txt"]);

    for (list, line, what) in [
        ("a.txt\nmissing.txt\n", 2, "missing.txt"),
        ("a.txt\nd/b.txt\n../src/a.txt\n", 3, "../src/a.txt"),
        ("/etc/hostname\n", 1, "/etc/hostname"),
        ("d\n", 1, "not a regular file"),
    ] {
        std::fs::write(dir.path().join("bad.txt"), list).unwrap();
        let err = mf_fails(dir.path(), &["pack", "src", "-o", "bad.mf", "--files-from", "bad.txt"], 1);
        assert!(err.contains(&format!("bad.txt:{line}")) && err.contains(what), "{list:?}: {err}");
        assert!(!dir.path().join("bad.mf").exists());
    }
    let err = mf_fails(dir.path(), &["pack", "src", "src", "-o", "bad.mf", "--files-from", "list.txt"], 1);
    assert!(err.contains("exactly one DIR"), "{err}");
    let err = mf_fails(dir.path(), &["pack", "src", "-o", "bad.mf", "--files-from", "nope.txt"], 1);
    assert!(err.contains("nope.txt"), "{err}");
}

#[test]
fn store_keeps_the_given_extensions_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let text = "compressible text, again and again\n".repeat(2000);
    // Each file's content differs by its first byte, so none is stored as a duplicate of another.
    let [a, b, c, d] = ["1", "2", "3", "4"].map(|p| format!("{p}{text}"));
    write_tree(
        &dir.path().join("src"),
        &[("t.dds", a.as_bytes()), ("t.BIN", b.as_bytes()), ("t.txt", c.as_bytes()), ("dds", d.as_bytes())],
    );
    let text = a;
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf", "--store", ".dds,bin"]);
    let entries = json(dir.path(), &["list", "--json", "x.mf"]);
    let compression = |path: &str| {
        let entry = entries.as_array().unwrap().iter().find(|e| e["path"] == path).unwrap();
        (entry["compression"].as_str().unwrap().to_owned(), entry["stored_size"].as_u64().unwrap())
    };
    assert_eq!(compression("t.dds"), ("none".to_owned(), text.len() as u64));
    assert_eq!(compression("t.BIN"), ("none".to_owned(), text.len() as u64));
    assert_eq!(compression("t.txt").0, "zstd");
    assert_eq!(compression("dds").0, "zstd", "a name without a dot has no extension");
}

#[test]
fn keep_mtime_restores_modification_times() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("old.txt", b"old"), ("d/older.bin", &noise(100, 1))]);
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_500_000_000, 123_456_789);
    let older = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for (path, time) in [("src/old.txt", old), ("src/d/older.bin", older)] {
        std::fs::File::options().write(true).open(dir.path().join(path)).unwrap().set_modified(time).unwrap();
    }
    mf_ok(dir.path(), &["pack", "src", "-o", "kept.mf", "--keep-mtime"]);
    mf_ok(dir.path(), &["extract", "kept.mf", "-C", "out"]);
    let mtime = |path: &str| std::fs::metadata(dir.path().join(path)).unwrap().modified().unwrap();
    assert_eq!(mtime("out/old.txt"), old);
    assert_eq!(mtime("out/d/older.bin"), older);
    let entries = json(dir.path(), &["list", "--json", "kept.mf"]);
    assert_eq!(entries[1]["mtime"], 1_500_000_000);

    // Without the flag the archive records no times (so it is reproducible) and files get "now".
    mf_ok(dir.path(), &["pack", "src", "-o", "plain.mf"]);
    let entries = json(dir.path(), &["list", "--json", "plain.mf"]);
    assert!(entries[1]["mtime"].is_null());
    mf_ok(dir.path(), &["extract", "plain.mf", "-C", "out2"]);
    assert!(mtime("out2/old.txt") > old);
}

#[test]
fn extract_takes_a_subset_of_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        &dir.path().join("src"),
        &[("dir/a.txt", b"a"), ("dir/sub/b.txt", b"b"), ("dir2/c.txt", b"c"), ("file.txt", b"f"), ("other.txt", b"o")],
    );
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    mf_ok(dir.path(), &["extract", "x.mf", "dir/", "file.txt", "-C", "out"]);
    let got: Vec<String> = read_tree(&dir.path().join("out")).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, ["dir/a.txt", "dir/sub/b.txt", "file.txt"]);
    // "dir" does not select "dir2"; naming a directory without the slash works too.
    mf_ok(dir.path(), &["extract", "x.mf", "dir", "-C", "out3"]);
    let got: Vec<String> = read_tree(&dir.path().join("out3")).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, ["dir/a.txt", "dir/sub/b.txt"]);
    let err = mf_fails(dir.path(), &["extract", "x.mf", "file.txt", "nothing/here", "-C", "out2"], 1);
    assert!(err.contains("nothing/here") && err.contains("x.mf"), "{err}");
    assert!(!dir.path().join("out2/file.txt").exists(), "nothing is written when a path is unknown");
}

#[test]
fn extract_never_writes_through_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("a/x", b"payload"), ("f", b"file content")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("victim"), b"precious").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("a")).unwrap();

    for force in [false, true] {
        let mut args = vec!["extract", "x.mf", "-C", "out"];
        if force {
            args.push("--force");
        }
        let err = mf_fails(dir.path(), &args, 1);
        assert!(err.contains("not a directory") && err.contains("a/x"), "{err}");
        assert_eq!(names_in(&elsewhere), ["victim"], "nothing written outside the target");
        assert!(!out.join("f").exists(), "the refusal comes before any write");
    }

    // A symlink where a file goes is replaced, never followed.
    std::fs::remove_file(out.join("a")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("victim"), out.join("f")).unwrap();
    let err = mf_fails(dir.path(), &["extract", "x.mf", "-C", "out"], 1);
    assert!(err.contains("already exists"), "{err}");
    mf_ok(dir.path(), &["extract", "x.mf", "-C", "out", "--force"]);
    assert_eq!(std::fs::read(elsewhere.join("victim")).unwrap(), b"precious");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"file content");
    assert!(!std::fs::symlink_metadata(out.join("f")).unwrap().file_type().is_symlink());
}

#[test]
fn sigint_during_pack_leaves_no_temp_file_and_the_old_archive() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Incompressible data at level 19 keeps the packer busy long enough to be interrupted.
    let block = noise(1 << 20, 42);
    for i in 0..4 {
        let mut data = Vec::with_capacity(32 << 20);
        for j in 0..32u8 {
            data.extend(block.iter().map(|b| b ^ j ^ i));
        }
        std::fs::write(src.join(format!("big{i}.bin")), data).unwrap();
    }
    std::fs::write(dir.path().join("out.mf"), b"previous archive").unwrap();

    let mut child = Command::new(mf_bin())
        .args(["pack", "src", "-o", "out.mf", "--level", "19"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let temp_exists = || names_in(dir.path()).iter().any(|n| n.ends_with(".mf-tmp"));
    let start = Instant::now();
    while !temp_exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the temp file never appeared");
        assert!(child.try_wait().unwrap().is_none(), "pack finished before it could be interrupted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "pack finished before it could be interrupted");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "interrupted pack must fail");
    assert_eq!(output.status.code(), Some(130));
    assert_eq!(names_in(dir.path()), ["out.mf", "src"], "no temp file left");
    assert_eq!(std::fs::read(dir.path().join("out.mf")).unwrap(), b"previous archive");
}

#[test]
fn commands_on_a_damaged_archive_exit_1_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    // Over 64 KiB, so bad.txt has frames of its own (not a solid frame shared with good.txt).
    let text = "some text that compresses well\n".repeat(3000);
    write_tree(&dir.path().join("src"), &[("bad.txt", text.as_bytes()), ("good.txt", b"fine")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let path = dir.path().join("x.mf");
    let mut bytes = std::fs::read(&path).unwrap();
    // bad.txt is first in data order, right after the header and commit slots; hit its first frame.
    bytes[96 + 20] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let err = mf_fails(dir.path(), &["verify", "x.mf"], 1);
    assert!(err.contains("x.mf") && err.contains("'bad.txt'") && !err.contains("good.txt"), "{err}");
    let err = mf_fails(dir.path(), &["cat", "x.mf", "bad.txt"], 1);
    assert!(err.contains("x.mf") && err.contains("bad.txt"), "{err}");
    assert_eq!(mf_ok(dir.path(), &["cat", "x.mf", "good.txt"]), "fine");
    let err = mf_fails(dir.path(), &["extract", "x.mf", "-C", "out"], 1);
    assert!(err.contains("'bad.txt'") && err.contains("1 of 2"), "{err}");
    assert_eq!(names_in(&dir.path().join("out")), ["good.txt"], "the damaged entry leaves no file, not even a temp");
    let report = serde_json::from_str::<serde_json::Value>(&String::from_utf8_lossy(
        &mf_in(dir.path(), &["verify", "--json", "x.mf"]).stdout,
    ))
    .unwrap();
    assert_eq!(report["entries"], 2);
    assert_eq!(report["damaged"].as_array().unwrap().len(), 1);
    assert_eq!(report["damaged"][0]["entry"], "bad.txt");
    assert_eq!(mf_in(dir.path(), &["verify", "--json", "x.mf"]).status.code(), Some(1));

    // Damage to the index: every command refuses the file at open, naming it and the offset.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 60;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    for args in [&["list", "x.mf"][..], &["info", "x.mf"], &["verify", "x.mf"], &["extract", "x.mf", "-C", "o2"]] {
        let err = mf_fails(dir.path(), args, 1);
        assert!(err.contains("x.mf") && err.contains("index checksum mismatch") && err.contains("offset"), "{err}");
    }
    assert!(!dir.path().join("o2").exists() || names_in(&dir.path().join("o2")).is_empty());
    let err = mf_fails(dir.path(), &["list", "missing.mf"], 1);
    assert!(err.contains("missing.mf"), "{err}");
    std::fs::write(
        dir.path().join("text.mf"),
        b"just some text, not an archive at all....................................",
    )
    .unwrap();
    let err = mf_fails(dir.path(), &["info", "text.mf"], 1);
    assert!(err.contains("text.mf") && err.contains("not an mf archive"), "{err}");
}

#[test]
fn duplicates_and_small_files_pack_once_and_extract_whole() {
    let dir = tempfile::tempdir().unwrap();
    let big = noise(1 << 20, 9);
    let mut files: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("scripts/m{i}.py"), format!("def f{i}(x):\n    return x * {i} + 1\n").into_bytes()))
        .collect();
    files.push(("a/big.bin".into(), big.clone()));
    files.push(("b/big.bin".into(), big.clone()));
    files.push(("c/empty".into(), Vec::new()));
    files.push(("d/empty".into(), Vec::new()));
    let tree: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), &d[..])).collect();
    write_tree(&dir.path().join("src"), &tree);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let size = std::fs::metadata(dir.path().join("x.mf")).unwrap().len();
    assert!(size < (1 << 20) + 80_000, "two identical 1 MiB files cost 1 MiB: {size} bytes");
    let info = json(dir.path(), &["info", "--json", "x.mf"]);
    assert_eq!(info["space"]["shared_entries"], 1, "{info}");
    assert_eq!(info["space"]["shared_bytes"], 1 << 20, "{info}");
    assert_eq!(info["space"]["solid_entries"], 500, "{info}");
    assert!(info["space"]["dead_bytes"].as_u64().unwrap() < 16 * 10, "{info}");
    let text = mf_ok(dir.path(), &["info", "x.mf"]);
    assert!(text.contains("dead space:") && text.contains("shared:       1 entries"), "{text}");
    mf_ok(dir.path(), &["extract", "x.mf", "-C", "out"]);
    let mut expected: Vec<(String, Vec<u8>)> = files.clone();
    expected.sort();
    assert_eq!(read_tree(&dir.path().join("out")), expected);
    // Path order on request: same content, data in path order.
    mf_ok(dir.path(), &["pack", "src", "-o", "p.mf", "--order", "path"]);
    let archive = mf_format::Archive::open(dir.path().join("p.mf")).unwrap();
    let order: Vec<&str> = archive.entries().map(|e| e.path()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    mf_ok(dir.path(), &["verify", "p.mf"]);
}

#[test]
fn info_and_verify_json_report_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let text = "compressible line of text\n".repeat(4000);
    let random = noise(20_000, 5);
    write_tree(&dir.path().join("src"), &[("a.txt", text.as_bytes()), ("b.bin", &random), ("c/empty", b"")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "x.mf"]);
    let info = json(dir.path(), &["info", "--json", "x.mf"]);
    let file_size = std::fs::metadata(dir.path().join("x.mf")).unwrap().len();
    assert_eq!(info["format"], "mf");
    assert_eq!(info["version"], "2.1");
    assert_eq!(info["entries"], 3);
    assert_eq!(info["compressed_entries"], 1);
    assert_eq!(info["total_size"], (text.len() + random.len()) as u64);
    assert_eq!(info["file_size"], file_size);
    assert_eq!(info["frame_size"], 1 << 18);
    let stored = info["stored_size"].as_u64().unwrap();
    assert!(stored < (text.len() / 10 + random.len()) as u64 && stored >= random.len() as u64, "{info}");
    let ratio = info["ratio_percent"].as_f64().unwrap();
    assert!((ratio - file_size as f64 * 100.0 / (text.len() + random.len()) as f64).abs() < 1e-9);

    let report = json(dir.path(), &["verify", "--json", "x.mf"]);
    assert_eq!(report["entries"], 3);
    assert_eq!(report["damaged"], serde_json::json!([]));
    assert_eq!(report["archive"], "x.mf");
}

mod random_trees {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct FileSpec {
        path: String,
        content: Vec<u8>,
        executable: bool,
    }

    fn file_spec() -> impl Strategy<Value = FileSpec> {
        let component = prop::sample::select(vec!["a", "b", "ab", "x.png", "y.txt", "ü"]);
        let path = prop::collection::vec(component, 1..4).prop_map(|parts| parts.join("/"));
        let content = prop_oneof![
            Just(Vec::new()),
            (0usize..3000, any::<u64>()).prop_map(|(len, seed)| noise(len, seed)),
            (0usize..600_000, any::<u8>()).prop_map(|(len, b)| {
                format!("{b} repeated line\n").into_bytes().into_iter().cycle().take(len).collect()
            }),
            (1usize..300_000, any::<u64>()).prop_map(|(len, seed)| [noise(len, seed), vec![7; len]].concat()),
        ];
        (path, content, any::<bool>()).prop_map(|(path, content, executable)| FileSpec { path, content, executable })
    }

    fn tree() -> impl Strategy<Value = Vec<FileSpec>> {
        prop::collection::vec(file_spec(), 1..10).prop_map(|specs| {
            let mut kept: Vec<FileSpec> = Vec::new();
            for spec in specs {
                let clash = kept.iter().any(|k| {
                    k.path == spec.path
                        || spec.path.starts_with(&format!("{}/", k.path))
                        || k.path.starts_with(&format!("{}/", spec.path))
                });
                if !clash {
                    kept.push(spec);
                }
            }
            kept
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

        #[test]
        fn random_trees_round_trip_through_pack_and_extract(files in tree(), level in 1i32..=5) {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            for file in &files {
                let full = src.join(&file.path);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, &file.content).unwrap();
                let mode = if file.executable { 0o755 } else { 0o640 };
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let level = level.to_string();
            mf_ok(dir.path(), &["pack", "src", "-o", "t.mf", "--level", &level]);
            mf_ok(dir.path(), &["verify", "t.mf"]);
            mf_ok(dir.path(), &["extract", "t.mf", "-C", "out"]);
            prop_assert_eq!(read_tree(&dir.path().join("out")), read_tree(&src));
            for file in &files {
                let mode = std::fs::metadata(dir.path().join("out").join(&file.path)).unwrap().permissions().mode();
                prop_assert_eq!(mode & 0o111 != 0, file.executable, "{}", file.path);
            }
        }
    }
}

#[test]
fn pack_frame_size_sets_the_frames_random_reads_decode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text: Vec<u8> = (0..20_000).flat_map(|i| format!("row {i}\n").into_bytes()).collect();
    write_tree(&d.join("in"), &[("table.txt", &text)]);
    mf_ok(d, &["pack", "in", "-o", "small.mf", "--frame-size", "4K"]);
    let info: serde_json::Value = serde_json::from_str(&mf_ok(d, &["info", "--json", "small.mf"])).unwrap();
    assert_eq!(info["frame_size"], 4096);
    let archive = mf_format::Archive::open(d.join("small.mf")).unwrap();
    let entry = archive.get("table.txt").unwrap();
    assert_eq!(archive.frame_count(&entry), text.len().div_ceil(4096) as u64);
    assert_eq!(mf_ok(d, &["cat", "small.mf", "table.txt"]).into_bytes(), text);
    let err = mf_fails(d, &["pack", "in", "-o", "bad.mf", "--frame-size", "5000"], 2);
    assert!(err.contains("power of two"), "{err}");
    assert!(!d.join("bad.mf").exists());
}
