//! End-to-end tests of `mf pack --reuse`: the output is byte-identical to a fresh pack, the
//! summary says what was reused, and a damaged OLD is an error (unreadable index) or a warning
//! (damaged frames) but never a different output.

mod common;

use common::*;
use std::path::Path;

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("vertex {} {} {}\n", i % 89, (i * seed) % 997, i / 5).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// v1 and v2 trees: changed, added, removed and renamed files, solid small files, duplicates, raw
/// noise, and a media file mixing raw and compressed frames.
fn write_versions(root: &Path) {
    let big = text(400_000, 1);
    let mut edited = text(300_000, 2);
    let mixed = [noise(30_000, 3), text(50_000, 3)].concat();
    let small: Vec<Vec<u8>> = (0..12).map(|i| text(400 + i * 200, 10 + i as u64)).collect();
    let mut v1: Vec<(String, Vec<u8>)> = vec![
        ("models/big.obj".into(), big.clone()),
        ("models/edited.obj".into(), edited.clone()),
        ("models/gone.obj".into(), text(90_000, 4)),
        ("old/name.obj".into(), text(150_000, 5)),
        ("textures/wall.png".into(), noise(80_000, 6)),
        ("audio/mixed.ogg".into(), mixed.clone()),
        ("dup/one.obj".into(), text(70_000, 7)),
        ("dup/two.obj".into(), text(70_000, 7)),
    ];
    v1.extend(small.iter().enumerate().map(|(i, data)| (format!("text/s{i}.txt"), data.clone())));
    edited[123_456..123_466].copy_from_slice(b"0123456789");
    let mut v2: Vec<(String, Vec<u8>)> = v1
        .iter()
        .filter(|(p, _)| p != "models/gone.obj" && p != "text/s4.txt")
        .map(|(p, data)| match p.as_str() {
            "models/edited.obj" => (p.clone(), edited.clone()),
            "old/name.obj" => ("new/name.obj".into(), data.clone()),
            "text/s2.txt" => (p.clone(), text(900, 99)),
            _ => (p.clone(), data.clone()),
        })
        .collect();
    v2.push(("models/added.obj".into(), text(100_000, 8)));
    v2.push(("dup/three.obj".into(), text(70_000, 7)));
    for (name, files) in [("v1", v1), ("v2", v2)] {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
        write_tree(&root.join(name), &files);
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn pack_reuse_is_byte_identical_to_a_fresh_pack_and_reports_what_it_reused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_versions(d);
    for frame in ["4K", "256K"] {
        mf_ok(d, &["pack", "v1", "-o", "old.mf", "--frame-size", frame, "--level", "5"]);
        mf_ok(d, &["pack", "v2", "-o", "fresh.mf", "--frame-size", frame, "--level", "5"]);
        let out = mf_in(
            d,
            &["pack", "v2", "-o", "reused.mf", "--frame-size", frame, "--level", "5", "--reuse", "old.mf", "--json"],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(d.join("reused.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap(), "{frame}");
        let report = json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(report["entries"], 20, "{report}");
        // big.obj, name.obj (renamed), dup/one.obj and the compressed part of mixed.ogg whole;
        // edited.obj all but the frame with the edit.
        assert_eq!(report["reused"]["whole_entries"], 4, "{frame}: {report}");
        assert_eq!(report["reused"]["entries"], 5, "{frame}: {report}");
        assert!(report["reused"]["bytes"].as_u64().unwrap() > 400_000 + 150_000 + 70_000, "{report}");
        assert_eq!(report["reused"]["damaged_frames"], 0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("reused") && stderr.contains("from old.mf"), "{stderr}");
        mf_ok(d, &["verify", "reused.mf"]);
    }
    // OLD may be the output itself: it is read from the old file until the new one replaces it.
    let out = mf_ok(
        d,
        &["pack", "v2", "-o", "old.mf", "--reuse", "old.mf", "--frame-size", "256K", "--level", "5", "--json"],
    );
    assert_eq!(std::fs::read(d.join("old.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
    assert_eq!(json(&out)["reused"]["whole_entries"], 4, "{out}");
}

#[test]
fn pack_reuse_of_x86_executables_is_byte_identical_to_a_fresh_pack() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A real x86-64 binary (this test's own), filtered by the writer, with an edit in v2.
    let exe = x86_executable(3 << 20);
    let mut edited = exe.clone();
    edited[1 << 20..(1 << 20) + 40].fill(0x90);
    write_tree(&d.join("v1"), &[("bin/tool", &exe), ("lib/libtool.so", &exe[..1 << 20]), ("notes.txt", b"v1\n")]);
    write_tree(&d.join("v2"), &[("bin/tool", &edited), ("lib/libtool.so", &exe[..1 << 20]), ("notes.txt", b"v2\n")]);
    mf_ok(d, &["pack", "v1", "-o", "old.mf", "--level", "5"]);
    mf_ok(d, &["pack", "v2", "-o", "fresh.mf", "--level", "5"]);
    let report = json(&mf_ok(d, &["pack", "v2", "-o", "reused.mf", "--level", "5", "--reuse", "old.mf", "--json"]));
    assert_eq!(std::fs::read(d.join("reused.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
    // libtool.so whole, tool all but the frame with the edit.
    assert_eq!(report["reused"]["whole_entries"], 1, "{report}");
    assert_eq!(report["reused"]["entries"], 2, "{report}");
    let info = json(&mf_ok(d, &["info", "reused.mf", "--json"]));
    assert_eq!(info["version"], "2.1", "{info}");
    mf_ok(d, &["verify", "reused.mf"]);
    let tree = d.join("out");
    mf_ok(d, &["extract", "reused.mf", "-C", tree.to_str().unwrap()]);
    assert_eq!(std::fs::read(tree.join("bin/tool")).unwrap(), edited);
}

#[test]
fn pack_reuse_of_another_level_reuses_nothing_and_still_matches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_versions(d);
    mf_ok(d, &["pack", "v1", "-o", "old.mf", "--level", "3"]);
    mf_ok(d, &["pack", "v2", "-o", "fresh.mf"]);
    let report = json(&mf_ok(d, &["pack", "v2", "-o", "reused.mf", "--reuse", "old.mf", "--json"]));
    assert_eq!(std::fs::read(d.join("reused.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());
    assert_eq!(report["reused"]["frames"], 0, "{report}");
}

#[test]
fn a_damaged_old_archive_is_refused_or_warned_about_never_copied_wrongly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_versions(d);
    mf_ok(d, &["pack", "v1", "-o", "old.mf"]);
    mf_ok(d, &["pack", "v2", "-o", "fresh.mf"]);
    let good = std::fs::read(d.join("old.mf")).unwrap();

    // Damaged frame data: a warning naming OLD, the frame recompressed, the output still identical.
    // Entries are ordered by kind, then name: big.obj's first frame is the first data, at 96.
    let offset = 96;
    let mut damaged = good.clone();
    for b in &mut damaged[offset + 100..offset + 140] {
        *b ^= 0xa5;
    }
    std::fs::write(d.join("old.mf"), &damaged).unwrap();
    let out = mf_in(d, &["pack", "v2", "-o", "reused.mf", "--reuse", "old.mf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("old.mf") && stderr.contains("damaged"), "{stderr}");
    assert_eq!(std::fs::read(d.join("reused.mf")).unwrap(), std::fs::read(d.join("fresh.mf")).unwrap());

    // An unreadable index: an error naming OLD, exit 1, and no output written.
    let mut broken = good.clone();
    let len = broken.len();
    broken[len - 30] ^= 0xff;
    std::fs::write(d.join("old.mf"), &broken).unwrap();
    let stderr = mf_fails(d, &["pack", "v2", "-o", "new.mf", "--reuse", "old.mf"], 1);
    assert!(stderr.contains("old.mf") && stderr.contains("reuse"), "{stderr}");
    assert!(!d.join("new.mf").exists());

    // Not there at all: the same.
    let stderr = mf_fails(d, &["pack", "v2", "-o", "new.mf", "--reuse", "missing.mf"], 1);
    assert!(stderr.contains("missing.mf"), "{stderr}");
    assert!(!d.join("new.mf").exists());
}

/// Large files (streamed a block at a time, the next block encoded while one is written), small
/// files of a size no other file has (no deduplication key is taken for them) and small files
/// sharing a size, equal or not: `--reuse` on 1 and on 3 threads writes the bytes of a fresh pack,
/// and equal files are still stored once.
#[test]
fn pack_reuse_is_the_same_on_any_thread_count_and_still_shares_equal_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let large = text(9 << 20, 21);
    let mut edited = large.clone();
    edited[4 << 20..(4 << 20) + 8].copy_from_slice(b"CHANGED!");
    let mixed = [noise(3 << 20, 22), text(3 << 20, 23)].concat();
    let twin = noise(200_000, 24);
    let v1: Vec<(&str, &[u8])> = vec![
        ("data/large.obj", &large),
        ("data/mixed.pak", &mixed),
        ("twins/a.bin", &twin),
        ("twins/b.bin", &twin),
        ("same_size/noise.bin", &twin[..150_000]),
        ("same_size/text.obj", &large[..150_000]),
        ("unique/a.obj", &large[..170_001]),
    ];
    let mut v2 = v1.clone();
    v2[0].1 = &edited;
    write_tree(&d.join("v1"), &v1);
    write_tree(&d.join("v2"), &v2);
    let pack = |threads: &str, out: &str, reuse: bool| {
        let mut args = vec!["--threads", threads, "pack", "v2", "-o", out, "--frame-size", "16K"];
        if reuse {
            args.extend(["--reuse", "old.mf"]);
        }
        mf_ok(d, &args);
        std::fs::read(d.join(out)).unwrap()
    };
    mf_ok(d, &["pack", "v1", "-o", "old.mf", "--frame-size", "16K"]);
    let fresh = pack("1", "fresh.mf", false);
    assert_eq!(pack("3", "fresh3.mf", false), fresh, "fresh, 3 threads");
    assert_eq!(pack("1", "reused1.mf", true), fresh, "--reuse, 1 thread");
    assert_eq!(pack("3", "reused3.mf", true), fresh, "--reuse, 3 threads");
    // The twins' 200 000 incompressible bytes are stored once: without one twin the archive is
    // smaller by its index record only.
    let without_twin: Vec<(&str, &[u8])> = v2.iter().copied().filter(|(p, _)| *p != "twins/b.bin").collect();
    write_tree(&d.join("v3"), &without_twin);
    mf_ok(d, &["pack", "v3", "-o", "v3.mf", "--frame-size", "16K"]);
    let one_twin = std::fs::metadata(d.join("v3.mf")).unwrap().len() as usize;
    assert!(fresh.len() < one_twin + 1000, "{} bytes against {one_twin}: the twins were not shared", fresh.len());
    mf_ok(d, &["verify", "reused3.mf"]);
    std::fs::create_dir(d.join("out")).unwrap();
    mf_ok(d, &["extract", "reused3.mf", "-C", "out"]);
    assert_eq!(std::fs::read(d.join("out/twins/b.bin")).unwrap(), twin);
    assert_eq!(std::fs::read(d.join("out/data/large.obj")).unwrap(), edited);
}
