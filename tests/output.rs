//! How `mf` writes what it prints: to a reader that went away, and for a terminal that must not be
//! driven by names found in an archive. Also `apply --in-place` through a symlink.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{mf_ok, noise, write_tree};

/// Runs `mf args` in `dir` with a standard output whose reader has already closed (as after
/// `mf ... | head -0`): returns exit code and stderr.
fn run_into_closed_pipe(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(common::mf_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Two versions of a small tree, packed, a patch between them and a release repository.
fn fixtures(dir: &Path) {
    write_tree(&dir.join("v1"), &[("a.txt", b"one\n"), ("b.bin", &noise(5000, 1))]);
    write_tree(&dir.join("v2"), &[("a.txt", b"two\n"), ("c.txt", b"new\n")]);
    mf_ok(dir, &["pack", "v1", "-o", "v1.mf"]);
    mf_ok(dir, &["pack", "v2", "-o", "v2.mf"]);
    mf_ok(dir, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp"]);
    mf_ok(dir, &["release", "add", "repo", "1.0", "v1.mf"]);
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let commands: &[&[&str]] = &[
        &["info", "v1.mf"],
        &["info", "--json", "v1.mf"],
        &["verify", "v1.mf"],
        &["verify", "--json", "v1.mf"],
        &["list", "v1.mf"],
        &["list", "--long", "v1.mf"],
        &["patch-info", "p.mfp"],
        &["patch-info", "--json", "p.mfp"],
        &["diff", "--stat", "v1.mf", "v2.mf"],
        &["diff", "--stat", "--json", "v1.mf", "v2.mf"],
        &["release", "list", "repo"],
        &["release", "list", "--json", "repo"],
        &["cat", "v1.mf", "b.bin"],
    ];
    for args in commands {
        let (code, stderr) = run_into_closed_pipe(dir.path(), args);
        assert_eq!(code, Some(0), "mf {args:?} into a closed pipe: exit {code:?}, stderr: {stderr}");
        assert_eq!(stderr, "", "mf {args:?} into a closed pipe says nothing");
    }
}

#[test]
fn entry_paths_with_control_characters_are_escaped_for_terminals_but_exact_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "red\u{1b}[31m\u{1b}]0;title\u{7}\nforged line\r\u{85}\u{202e}gpj.exe";
    write_tree(&dir.path().join("src"), &[(evil, b"x"), ("plain.txt", b"y")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "a.mf"]);
    let escaped = "red\\u{1b}[31m\\u{1b}]0;title\\u{7}\\nforged line\\r\\u{85}\\u{202e}gpj.exe";

    let listing = mf_ok(dir.path(), &["list", "a.mf"]);
    assert_eq!(listing, format!("plain.txt\n{escaped}\n"));
    let long = mf_ok(dir.path(), &["list", "--long", "a.mf"]);
    assert_eq!(long.lines().count(), 2, "one line per entry: {long}");
    assert!(long.contains(escaped) && !long.contains('\u{1b}'), "{long}");

    let json: serde_json::Value = serde_json::from_str(&mf_ok(dir.path(), &["list", "--json", "a.mf"])).unwrap();
    let paths: Vec<&str> = json.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["plain.txt", evil], "--json keeps paths exact");

    // Patch reports name entries too.
    let added = "added\u{1b}[2J\u{9b}2J";
    write_tree(&dir.path().join("src2"), &[(evil, b"changed"), ("plain.txt", b"y"), (added, b"z")]);
    mf_ok(dir.path(), &["pack", "src2", "-o", "b.mf"]);
    let stat = mf_ok(dir.path(), &["diff", "--stat", "a.mf", "b.mf"]);
    assert!(stat.contains(escaped) && !stat.contains('\u{1b}') && !stat.contains("\nforged"), "{stat}");
    mf_ok(dir.path(), &["diff", "a.mf", "b.mf", "-o", "p.mfp"]);
    let info = mf_ok(dir.path(), &["patch-info", "p.mfp"]);
    assert!(info.contains("added\\u{1b}[2J\\u{9b}2J"), "{info}");
    assert!(!info.contains('\u{1b}') && !info.contains('\u{9b}'), "{info}");
}

#[test]
fn apply_in_place_through_a_symlink_replaces_the_real_archive_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    std::fs::create_dir(dir.path().join("store")).unwrap();
    std::fs::copy(dir.path().join("v1.mf"), dir.path().join("store/real.mf")).unwrap();
    std::os::unix::fs::symlink("store/real.mf", dir.path().join("link.mf")).unwrap();

    let out = mf_ok(dir.path(), &["apply", "p.mfp", "link.mf", "--in-place"]);
    assert!(out.contains("real.mf"), "names the file it replaced: {out}");
    let link = std::fs::symlink_metadata(dir.path().join("link.mf")).unwrap();
    assert!(link.file_type().is_symlink(), "the link is still a link");
    assert_eq!(std::fs::read_link(dir.path().join("link.mf")).unwrap(), Path::new("store/real.mf"));
    // Edited in place: the new version's entries (its bytes only with --rebuild, below).
    let entries = |path: &str| {
        let archive = mf_format::Archive::open(dir.path().join(path)).unwrap();
        archive.entries().map(|e| (e.path().to_owned(), archive.read(&e).unwrap().into_owned())).collect::<Vec<_>>()
    };
    assert_eq!(entries("store/real.mf"), entries("v2.mf"), "the real archive is the new version");
    std::fs::copy(dir.path().join("v1.mf"), dir.path().join("store/real.mf")).unwrap();
    mf_ok(dir.path(), &["apply", "p.mfp", "link.mf", "--in-place", "--rebuild"]);
    assert!(std::fs::symlink_metadata(dir.path().join("link.mf")).unwrap().file_type().is_symlink());
    assert_eq!(
        std::fs::read(dir.path().join("store/real.mf")).unwrap(),
        std::fs::read(dir.path().join("v2.mf")).unwrap(),
        "the real archive is the new version"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("store")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["real.mf"], "no temp file left beside it");
}

#[test]
fn error_messages_quoting_entry_paths_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &[("x\u{1b}]0;pwned\u{7}.txt", b"x")]);
    mf_ok(dir.path(), &["pack", "src", "-o", "a.mf"]);
    let stderr = common::mf_fails(dir.path(), &["cat", "a.mf", "x\u{1b}]0;pwned\u{7}.txt/missing"], 1);
    assert!(stderr.contains("x\\u{1b}]0;pwned\\u{7}.txt/missing"), "{stderr}");
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\u{7}'), "{stderr}");
}
