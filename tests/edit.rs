//! End-to-end tests of `mf add`, `mf rm` and `mf compact`: archives changed in place, what they
//! report, `mf info` after edits, compaction byte-identical to `mf pack` (and, for Panda3D
//! multifiles, to `multify -c`), crashes, and refusals.

mod common;

use std::path::Path;

use common::*;

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&mf_ok(dir, args)).expect("valid JSON")
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// A source tree with text, a large compressible file, noise and a nested directory.
fn source(root: &Path) {
    let big: Vec<u8> = (0..60_000u32).flat_map(|i| format!("row {i} of the big table\n").into_bytes()).collect();
    write_tree(
        root,
        &[
            ("readme.txt", b"hello\n"),
            ("data/big.csv", &big),
            ("data/noise.bin", &noise(200_000, 3)),
            ("scripts/a.py", b"print('a')\n"),
            ("scripts/b.py", b"print('b')\n"),
        ],
    );
}

/// The archive's content as extracted by `mf extract`.
fn extracted(dir: &Path, archive: &str) -> Vec<(String, Vec<u8>)> {
    let out = dir.join(format!("x-{}", fastrand_name(archive)));
    let _ = std::fs::remove_dir_all(&out);
    mf_ok(dir, &["extract", archive, "-C", out.to_str().unwrap()]);
    read_tree(&out)
}

fn fastrand_name(archive: &str) -> String {
    archive.replace(['/', '.'], "_")
}

#[test]
fn add_and_rm_change_the_archive_in_place_and_report_what_they_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf"]);
    write_tree(&d.join("more"), &[("extra/new.txt", b"new file\n"), ("extra/deep/x.txt", b"x\n")]);

    let report = json(d, &["add", "a.mf", "-C", "more", "extra", "--json"]);
    // In `mf pack`'s order: by kind, then file name.
    assert_eq!(strings(&report["added"]), ["extra/new.txt", "extra/deep/x.txt"]);
    assert_eq!(report["generation"], 2);
    let written = report["bytes_written"].as_u64().unwrap();
    assert!(written > 0 && written < 10_000, "adding two tiny files writes little: {report}");
    let info = json(d, &["info", "a.mf", "--json"]);
    assert_eq!(info["generation"], 2);
    assert_eq!(info["space"]["dead_bytes"], report["dead_bytes"], "info and the edit agree on dead space");
    assert_eq!(info["file_size"], report["file_size"]);

    // Replacing a file with the same name from the current directory (no -C).
    std::fs::write(d.join("readme.txt"), b"changed\n").unwrap();
    let text = mf_ok(d, &["add", "a.mf", "readme.txt"]);
    assert!(text.contains("replaced  readme.txt") && text.contains("generation 3"), "{text}");

    let report = json(d, &["rm", "a.mf", "scripts", "data/noise.bin", "--json", "--no-compact"]);
    assert_eq!(strings(&report["removed"]), ["scripts/a.py", "scripts/b.py", "data/noise.bin"]);
    let mut expected = read_tree(&d.join("src"));
    expected.retain(|(p, _)| !p.starts_with("scripts/") && p != "data/noise.bin");
    expected.retain(|(p, _)| p != "readme.txt");
    expected.push(("readme.txt".into(), b"changed\n".to_vec()));
    expected.push(("extra/deep/x.txt".into(), b"x\n".to_vec()));
    expected.push(("extra/new.txt".into(), b"new file\n".to_vec()));
    expected.sort();
    assert_eq!(extracted(d, "a.mf"), expected);
    mf_ok(d, &["verify", "a.mf"]);
    let info = json(d, &["info", "a.mf", "--json"]);
    assert!(info["space"]["dead_bytes"].as_u64().unwrap() >= 200_000, "the removed noise is dead space: {info}");

    let err = mf_fails(d, &["rm", "a.mf", "no/such"], 1);
    assert!(err.contains("a.mf") && err.contains("no entry 'no/such'"), "{err}");
}

#[test]
fn add_update_writes_only_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf"]);
    let report = json(d, &["add", "a.mf", "-C", "src", ".", "--update", "--json"]);
    assert!(report["added"].as_array().unwrap().is_empty() && report["replaced"].as_array().unwrap().is_empty());
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 5, "{report}");
    assert_eq!(report["bytes_written"], 0, "nothing changed, nothing written: {report}");

    // One changed line in the middle of the large file: only its frame is written again.
    let path = d.join("src/data/big.csv");
    let mut big = std::fs::read(&path).unwrap();
    let middle = big.len() / 2;
    big[middle..middle + 3].copy_from_slice(b"XYZ");
    std::fs::write(&path, &big).unwrap();
    let report = json(d, &["add", "a.mf", "-C", "src", ".", "--update", "--json"]);
    assert_eq!(strings(&report["replaced"]), ["data/big.csv"], "{report}");
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 4);
    assert!(report["frames_reused"].as_u64().unwrap() >= 4, "{report}");
    let index_and_slot = 2_000;
    assert!(report["bytes_written"].as_u64().unwrap() < 256 * 1024 + index_and_slot, "{report}");
    assert_eq!(extracted(d, "a.mf"), read_tree(&d.join("src")));
}

#[test]
fn compact_is_byte_identical_to_a_fresh_pack_of_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf", "--level", "5", "--frame-size", "64K"]);
    write_tree(&d.join("more"), &[("extra/new.txt", b"new file\n"), ("huge.log", &vec![b'z'; 300_000])]);
    mf_ok(d, &["add", "a.mf", "-C", "more", "extra", "huge.log"]);
    mf_ok(d, &["rm", "a.mf", "scripts/a.py", "--no-compact"]);
    std::fs::write(d.join("src/readme.txt"), b"edited\n").unwrap();
    mf_ok(d, &["add", "a.mf", "-C", "src", "readme.txt"]);

    let tree = d.join("tree");
    mf_ok(d, &["extract", "a.mf", "-C", tree.to_str().unwrap()]);
    mf_ok(d, &["pack", "tree", "-o", "fresh.mf", "--level", "5", "--frame-size", "64K"]);
    let report = json(d, &["compact", "a.mf", "-o", "c.mf", "--json"]);
    assert_eq!(report["entries"], 6);
    assert_eq!(std::fs::read(d.join("c.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
    // In place: the archive itself becomes that file, with no dead space and generation 0.
    let before = std::fs::metadata(d.join("a.mf")).unwrap().len();
    let text = mf_ok(d, &["compact", "a.mf"]);
    assert!(text.contains("compacted 6 entries"), "{text}");
    assert_eq!(std::fs::read(d.join("a.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
    assert!(std::fs::metadata(d.join("a.mf")).unwrap().len() < before);
    assert_eq!(json(d, &["info", "a.mf", "--json"])["generation"], 0);
}

#[test]
fn x86_executables_edited_in_place_compact_to_a_fresh_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let exe = x86_executable(2 << 20);
    write_tree(&d.join("src"), &[("bin/tool", &exe), ("readme.txt", b"hello\n")]);
    mf_ok(d, &["pack", "src", "-o", "a.mf", "--level", "5", "--frame-size", "64K"]);
    let mut edited = exe.clone();
    edited[700_000..700_100].fill(0xE8);
    std::fs::write(d.join("src/bin/tool"), &edited).unwrap();
    let report = json(d, &["add", "a.mf", "-C", "src", ".", "--update", "--json"]);
    assert_eq!(strings(&report["replaced"]), ["bin/tool"], "{report}");
    assert!(report["frames_reused"].as_u64().unwrap() >= 20, "{report}");
    assert_eq!(extracted(d, "a.mf"), read_tree(&d.join("src")));
    mf_ok(d, &["pack", "src", "-o", "fresh.mf", "--level", "5", "--frame-size", "64K"]);
    mf_ok(d, &["compact", "a.mf"]);
    assert_eq!(std::fs::read(d.join("a.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
}

#[test]
fn removing_most_of_an_archive_compacts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf"]);
    let report = json(d, &["rm", "a.mf", "data", "--json"]);
    assert_eq!(report["compacted"], true, "{report}");
    assert_eq!(report["dead_bytes"], 0);
    let info = json(d, &["info", "a.mf", "--json"]);
    assert_eq!(info["generation"], 0, "a compacted archive is a fresh pack");
    assert_eq!(report["file_size"], info["file_size"]);
    let names: Vec<String> = extracted(d, "a.mf").into_iter().map(|(p, _)| p).collect();
    assert_eq!(names, ["readme.txt", "scripts/a.py", "scripts/b.py"]);
}

#[test]
fn add_refuses_links_leaving_a_directory_and_paths_outside_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf"]);
    std::fs::write(d.join("secret"), b"secret").unwrap();
    std::fs::create_dir(d.join("add")).unwrap();
    std::os::unix::fs::symlink(d.join("secret"), d.join("add/link")).unwrap();
    let before = std::fs::read(d.join("a.mf")).unwrap();
    let err = mf_fails(d, &["add", "a.mf", "add"], 1);
    assert!(err.contains("outside"), "{err}");
    let err = mf_fails(d, &["add", "a.mf", "-C", "src", "../secret"], 1);
    assert!(err.contains("relative"), "{err}");
    let err = mf_fails(d, &["add", "a.mf", "a.mf"], 1);
    assert!(err.contains("cannot be added to itself"), "{err}");
    assert_eq!(std::fs::read(d.join("a.mf")).unwrap(), before, "a refused add leaves the archive as it was");
}

/// `multify -c -T 0 FLAGS FILES...` run in `src`, writing `dir/name`.
fn multify_create(dir: &Path, src: &str, name: &str, flags: &[&str], files: &[&str]) -> std::path::PathBuf {
    let target = dir.join(name);
    let mut args = vec!["-c", "-T", "0", "-f", target.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend_from_slice(files);
    multify(&dir.join(src), &args);
    target
}

/// What the real `multify -x` extracts from `dir/archive`, and the names `multify -t` lists.
fn multify_content(dir: &Path, archive: &str) -> Vec<(String, Vec<u8>)> {
    let out = dir.join(format!("multify-x-{}", fastrand_name(archive)));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let path = dir.join(archive);
    multify(&out, &["-x", "-f", path.to_str().unwrap()]);
    let tree = read_tree(&out);
    let listed: Vec<String> = multify(dir, &["-t", "-f", archive]).lines().map(str::to_owned).collect();
    let names: Vec<String> = tree.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(listed, names, "multify -t lists each subfile once");
    tree
}

#[test]
fn panda3d_multifiles_change_in_place_as_multify_and_panda3d_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big: Vec<u8> = (0..20_000u32).flat_map(|i| format!("row {i}\n").into_bytes()).collect();
    write_tree(&d.join("src"), &[("a.dat", b"alpha\n"), ("b/big.dat", &big), ("b/pic.png", &noise(5000, 1))]);
    multify_create(d, "src", "p.mf", &["-z"], &["a.dat", "b"]);
    write_tree(&d.join("more"), &[("a.dat", b"alpha\n"), ("c/new.dat", b"new\n"), ("b/pic.png", &noise(6000, 2))]);

    let report = json(d, &["add", "p.mf", "-C", "more", "c", "--json"]);
    assert_eq!(strings(&report["added"]), ["c/new.dat"]);
    let written = report["bytes_written"].as_u64().unwrap();
    assert!(written > 0 && written < 200, "one small subfile and its entry: {report}");
    assert_eq!(report["compacted"], false);
    let before = std::fs::read(d.join("p.mf")).unwrap();
    let report = json(d, &["add", "p.mf", "-C", "more", "a.dat", "--update", "--json"]);
    assert_eq!(strings(&report["unchanged"]), ["a.dat"]);
    assert_eq!(report["bytes_written"], 0);
    assert_eq!(std::fs::read(d.join("p.mf")).unwrap(), before, "--update with nothing changed writes nothing");
    let report = json(d, &["add", "p.mf", "-C", "more", "a.dat", "b/pic.png", "--update", "--json"]);
    assert_eq!(strings(&report["unchanged"]), ["a.dat"]);
    assert_eq!(strings(&report["replaced"]), ["b/pic.png"]);
    let mut expected = vec![
        ("a.dat".to_owned(), b"alpha\n".to_vec()),
        ("b/big.dat".to_owned(), big.clone()),
        ("b/pic.png".to_owned(), noise(6000, 2)),
        ("c/new.dat".to_owned(), b"new\n".to_vec()),
    ];
    assert_eq!(multify_content(d, "p.mf"), expected);
    assert_eq!(extracted(d, "p.mf"), expected);
    let list = json(d, &["list", "p.mf", "--json"]);
    let compression = |path: &str| {
        list.as_array().unwrap().iter().find(|e| e["path"] == path).unwrap()["compression"].as_str().unwrap().to_owned()
    };
    assert_eq!(compression("c/new.dat"), "zlib", "a -z archive gets compressed subfiles");
    assert_eq!(compression("b/pic.png"), "none", "except multify's -Z extensions");

    let report = json(d, &["rm", "p.mf", "b", "--json", "--no-compact"]);
    assert_eq!(strings(&report["removed"]), ["b/big.dat", "b/pic.png"]);
    expected.retain(|(name, _)| !name.starts_with("b/"));
    assert_eq!(multify_content(d, "p.mf"), expected);
    let script = "from panda3d.core import Multifile, Filename\nm = Multifile()\nassert m.openRead(Filename('p.mf'))\n\
                  print(sorted((m.getSubfileName(i), bytes(m.readSubfile(i))) for i in range(m.getNumSubfiles())))";
    assert_eq!(panda3d_py(d, script).trim(), "[('a.dat', b'alpha\\n'), ('c/new.dat', b'new\\n')]");
    let info = json(d, &["info", "p.mf", "--json"]);
    let dead = info["panda3d"]["dead_bytes"].as_u64().unwrap();
    assert!(dead > 10_000, "the removed data is dead: {info}");
    assert_eq!(info["panda3d"]["needs_repack"], true);

    let report = json(d, &["compact", "p.mf", "--json"]);
    assert_eq!(report["entries"], 2);
    assert_eq!(report["new_size"].as_u64().unwrap(), report["old_size"].as_u64().unwrap() - dead);
    let info = json(d, &["info", "p.mf", "--json"]);
    assert_eq!((info["panda3d"]["dead_bytes"].as_u64(), &info["panda3d"]["needs_repack"]), (Some(0), &false.into()));
    assert_eq!(multify_content(d, "p.mf"), expected);
}

#[test]
fn mf_compact_of_an_edited_multifile_is_byte_identical_to_multify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files: [(&str, Vec<u8>); 4] = [
        ("a.bin", b"first\n".to_vec()),
        ("m/model.egg", (0..3000u32).flat_map(|i| format!("<V> {i}\n").into_bytes()).collect()),
        ("m/tex.png", noise(4000, 7)),
        ("z.dat", noise(100, 8)),
    ];
    let tree: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, &c[..])).collect();
    write_tree(&d.join("all"), &tree);
    for flags in [&[][..], &["-z"], &["-F", "16"]] {
        // Every file but z.dat, then z.dat added by mf, m/model.egg removed and a.bin replaced.
        multify_create(d, "all", "edited.mf", flags, &["a.bin", "m"]);
        write_tree(&d.join("new"), &[("a.bin", b"second\n")]);
        if flags != ["-z"] {
            // Stored archives get stored subfiles, so mf's bytes are multify's.
            mf_ok(d, &["add", "edited.mf", "-C", "all", "z.dat", "--no-compact"]);
            mf_ok(d, &["add", "edited.mf", "-C", "new", "a.bin", "--no-compact"]);
        }
        mf_ok(d, &["rm", "edited.mf", "m/model.egg", "--no-compact"]);
        assert!(json(d, &["info", "edited.mf", "--json"])["panda3d"]["dead_bytes"].as_u64().unwrap() > 0);
        let edited = std::fs::read(d.join("edited.mf")).unwrap();
        mf_ok(d, &["compact", "edited.mf", "-o", "copy.mf"]);
        assert_eq!(std::fs::read(d.join("edited.mf")).unwrap(), edited, "-o leaves the archive as it was");
        mf_ok(d, &["compact", "edited.mf"]);
        assert_eq!(std::fs::read(d.join("edited.mf")).unwrap(), std::fs::read(d.join("copy.mf")).unwrap());
        let reference = if flags != ["-z"] {
            write_tree(&d.join("final"), &[("a.bin", b"second\n"), ("m/tex.png", &files[2].1), ("z.dat", &files[3].1)]);
            multify_create(d, "final", "reference.mf", flags, &["a.bin", "m", "z.dat"])
        } else {
            multify_create(d, "all", "reference.mf", flags, &["a.bin", "m/tex.png"])
        };
        assert_eq!(
            std::fs::read(d.join("edited.mf")).unwrap(),
            std::fs::read(reference).unwrap(),
            "{flags:?}: mf compact and multify -c differ"
        );
        let _ = std::fs::remove_dir_all(d.join("final"));
    }
}

#[test]
fn panda3d_multifiles_that_cannot_change_in_place_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Signed: a signature record (flags 0x20, empty name) after the subfile.
    craft_multifile(
        d,
        "p.mf",
        "[('a.txt', b'a', 0, 1), ('', b'\\x04\\x00\\x00\\x00sig!\\x00\\x00\\x00\\x00', 0x20, 0)]",
    );
    let bytes = std::fs::read(d.join("p.mf")).unwrap();
    std::fs::write(d.join("b.txt"), b"b").unwrap();
    for args in [&["add", "p.mf", "b.txt"][..], &["rm", "p.mf", "a.txt"], &["compact", "p.mf"]] {
        let err = mf_fails(d, args, 1);
        assert!(err.contains("p.mf") && err.contains("signed"), "{err}");
    }
    assert_eq!(std::fs::read(d.join("p.mf")).unwrap(), bytes);
    // A `next` word beyond the end of the file: the error names file and offset.
    let mut broken = mf_test_support::panda3d::multifile_bytes(&[("a.txt", b"a", None, 0), ("b.txt", b"b", None, 0)]);
    broken[18..22].copy_from_slice(&9999u32.to_le_bytes());
    std::fs::write(d.join("q.mf"), &broken).unwrap();
    for args in [&["add", "q.mf", "b.txt"][..], &["rm", "q.mf", "a.txt"], &["compact", "q.mf"]] {
        let err = mf_fails(d, args, 1);
        assert!(err.contains("q.mf") && err.contains("offset 18"), "{err}");
    }
    assert_eq!(std::fs::read(d.join("q.mf")).unwrap(), broken);
}

#[test]
fn mf_add_to_a_multifile_killed_at_any_moment_leaves_the_old_or_the_new_content() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tree(&d.join("src"), &[("a.dat", b"a\n"), ("b.dat", b"b\n")]);
    multify_create(d, "src", "p.mf", &["-z"], &["a.dat", "b.dat"]);
    let old = multify_content(d, "p.mf");
    let log: Vec<u8> = (0..400_000u32).flat_map(|i| format!("line {i} of the added log\n").into_bytes()).collect();
    write_tree(&d.join("more"), &[("a.dat", b"A\n"), ("added.log", &log), ("added.bin", &noise(6 << 20, 9))]);
    let mut new = old.clone();
    new[0].1 = b"A\n".to_vec();
    new.push(("added.bin".into(), noise(6 << 20, 9)));
    new.push(("added.log".into(), log));
    new.sort();
    let mut saw_old = false;
    for delay_ms in [0u64, 5, 10, 20, 40, 80, 160, 320] {
        let mut child =
            spawn_quiet(d, &["add", "p.mf", "-C", "more", "added.log", "added.bin", "a.dat", "--no-compact"]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let now = multify_content(d, "p.mf");
        assert!(now == old || now == new, "killed after {delay_ms} ms: neither version for multify");
        assert_eq!(extracted(d, "p.mf"), now, "killed after {delay_ms} ms: mf and multify differ");
        if now == new {
            mf_ok(d, &["rm", "p.mf", "added.log", "added.bin", "--no-compact"]);
            mf_ok(d, &["add", "p.mf", "-C", "src", "a.dat", "--no-compact"]);
            assert_eq!(multify_content(d, "p.mf"), old);
        } else {
            saw_old = true;
        }
    }
    assert!(saw_old, "at least one kill landed before the commit");
    mf_ok(d, &["add", "p.mf", "-C", "more", "added.log", "added.bin", "a.dat"]);
    assert_eq!(multify_content(d, "p.mf"), new);
    assert_eq!(extracted(d, "p.mf"), new);
}

#[test]
fn mf_add_killed_at_any_moment_leaves_the_old_or_the_new_archive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    source(&d.join("src"));
    mf_ok(d, &["pack", "src", "-o", "a.mf"]);
    let old = extracted(d, "a.mf");
    let big: Vec<u8> = (0..400_000u32).flat_map(|i| format!("line {i} of the added log\n").into_bytes()).collect();
    write_tree(&d.join("more"), &[("added.log", &big), ("added.bin", &noise(6 << 20, 9))]);
    let mut new = old.clone();
    new.push(("added.bin".into(), noise(6 << 20, 9)));
    new.push(("added.log".into(), big));
    new.sort();
    let mut saw_old = false;
    for delay_ms in [0u64, 5, 10, 20, 40, 80, 160, 320] {
        let mut child = spawn_quiet(d, &["add", "a.mf", "-C", "more", "added.log", "added.bin", "--no-compact"]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        mf_ok(d, &["verify", "a.mf"]);
        let now = extracted(d, "a.mf");
        assert!(now == old || now == new, "killed after {delay_ms} ms: neither version");
        if now == new {
            // Committed before the kill: undo it for the next round.
            mf_ok(d, &["rm", "a.mf", "added.log", "added.bin", "--no-compact"]);
        } else {
            saw_old = true;
        }
    }
    assert!(saw_old, "at least one kill landed before the commit");
    mf_ok(d, &["add", "a.mf", "-C", "more", "added.log", "added.bin"]);
    assert_eq!(extracted(d, "a.mf"), new);
}
