//! End-to-end tests of Panda3D multifile support, against files written by the real Panda3D tools
//! (`multify` and `panda3d.core.Multifile` from the pip package, in the virtualenv scripts/test sets
//! up; the tests fail when MF_PANDA3D_PYTHON / MF_MULTIFY are unset).

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// 2024-01-02 00:00:00 UTC, the mtime given to every source file.
const SOURCE_MTIME: u64 = 1_704_153_600;

/// Top-level names passed to multify (directories are added recursively).
const SOURCE_ITEMS: &[&str] = &["a.txt", "crlf.txt", "b.bin", "d", "empty.dat", "big"];

/// A source tree covering text files (one with CRLF line ends), binary, compressible, incompressible,
/// already-compressed (png), empty and larger-than-a-buffer files. Returns its directory.
fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let numbers: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"hello world\n".to_vec()),
        ("crlf.txt", b"one\r\ntwo\r\n".to_vec()),
        ("b.bin", b"BINARYDATA\x00\x01\x02".to_vec()),
        ("d/e/nums.dat", numbers.into_bytes()),
        ("d/pic.png", noise(5000, 7)),
        ("empty.dat", Vec::new()),
        ("big/noise.bin", [noise(200_000, 9), vec![b'z'; 100_000]].concat()),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
    write_tree(&src, &refs);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(SOURCE_MTIME);
    for (path, _) in &files {
        std::fs::File::options().write(true).open(src.join(path)).unwrap().set_modified(time).unwrap();
    }
    src
}

/// Builds `name` with `multify -c` and `flags` from the source tree (run inside it).
fn multify_create(src: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let target = src.parent().unwrap().join(name);
    let mut args = vec!["-c", "-f", target.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend_from_slice(SOURCE_ITEMS);
    multify(src, &args);
    target
}

/// Extracts with the real multify into `dir/out` and returns the tree.
fn multify_extract(archive: &Path, out: &Path, flags: &[&str]) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(out).unwrap();
    let mut args = vec!["-x", "-f", archive.to_str().unwrap(), "-C", out.to_str().unwrap()];
    args.extend_from_slice(flags);
    multify(out, &args);
    read_tree(out)
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&mf_ok(dir, args)).unwrap()
}

fn entry<'a>(list: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    list.as_array().unwrap().iter().find(|e| e["path"] == path).unwrap_or_else(|| panic!("no {path} in {list}"))
}

#[test]
fn reads_every_multify_layout_exactly_as_multify_extracts_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let variants: &[(&str, &[&str])] = &[
        ("plain.mf", &[]),
        ("zlib.mf", &["-z"]),
        ("zlib9.mf", &["-9"]),
        ("no-timestamps.mf", &["-T", "0"]),
        ("scale16.mf", &["-F", "16"]),
        ("scale16-zlib.mf", &["-F", "16", "-z", "-T", "0"]),
        ("prefix.mf", &["-P", "!/usr/bin/env panda3d"]),
        ("text-dat.mf", &["-X", "dat,txt"]),
    ];
    let expected_names = "a.txt\nb.bin\nbig/noise.bin\ncrlf.txt\nd/e/nums.dat\nd/pic.png\nempty.dat\n";
    for (name, flags) in variants {
        let archive = multify_create(&src, name, flags);
        let reference = multify_extract(&archive, &dir.path().join(format!("ref-{name}")), &[]);
        assert_eq!(reference.len(), 7, "{name}");
        assert_eq!(mf_ok(dir.path(), &["list", name]), expected_names, "{name}");
        mf_ok(dir.path(), &["extract", name, "-C", &format!("mf-{name}")]);
        assert_eq!(read_tree(&dir.path().join(format!("mf-{name}"))), reference, "{name}: mf and multify -x differ");
        let verify = mf_ok(dir.path(), &["verify", name]);
        assert!(verify.contains("OK: 7 entries checked, 0 damaged"), "{name}: {verify}");
        // Text mode stores LF line ends (Linux multify turns CRLF into LF).
        assert_eq!(mf_ok(dir.path(), &["cat", name, "crlf.txt"]), "one\ntwo\n", "{name}");
        let info = json(dir.path(), &["info", "--json", name]);
        assert_eq!(info["format"], "panda3d");
        assert_eq!(info["version"], "1.1");
        assert_eq!(info["panda3d"]["dead_bytes"], 0, "{name}: multify's packed layout has no dead bytes");
    }

    let list = json(dir.path(), &["list", "--json", "zlib.mf"]);
    assert_eq!(entry(&list, "d/e/nums.dat")["compression"], "zlib");
    assert_eq!(entry(&list, "d/pic.png")["compression"], "none", "multify never compresses png");
    assert_eq!(entry(&list, "d/e/nums.dat")["size"], 8893);
    assert!(entry(&list, "d/e/nums.dat")["stored_size"].as_u64().unwrap() < 8893);
    assert_eq!(entry(&list, "a.txt")["text"], true);
    assert!(entry(&list, "b.bin").get("text").is_none());
    let list = json(dir.path(), &["list", "--json", "text-dat.mf"]);
    assert_eq!(entry(&list, "d/e/nums.dat")["text"], true, "-X dat marks .dat files as text");

    let info = json(dir.path(), &["info", "--json", "scale16.mf"]);
    assert_eq!(info["panda3d"]["scale_factor"], 16);
    let bytes = std::fs::read(dir.path().join("scale16.mf")).unwrap();
    // Header (18 bytes) padded with zeros to 0x20, where the first entry starts.
    assert_eq!(&bytes[0x12..0x20], &[0; 14]);
    assert_ne!(u32::from_le_bytes(bytes[0x20..0x24].try_into().unwrap()), 0);
    let info = json(dir.path(), &["info", "--json", "prefix.mf"]);
    assert_eq!(info["panda3d"]["header_prefix"], "#!/usr/bin/env panda3d");
    let bytes = std::fs::read(dir.path().join("prefix.mf")).unwrap();
    assert!(bytes.starts_with(b"#!/usr/bin/env panda3d\npmf\0\n\r"), "prefix layout");
}

#[test]
fn timestamps_come_from_subfiles_or_are_absent_with_t0() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    multify_create(&src, "with.mf", &[]);
    multify_create(&src, "without.mf", &["-T", "0"]);
    let list = json(dir.path(), &["list", "--json", "with.mf"]);
    for item in list.as_array().unwrap() {
        assert_eq!(item["mtime"], SOURCE_MTIME, "{item}");
        assert_eq!(item["mode"], "0644");
        assert!(item["xxh3"].is_null(), "Panda3D records no checksums");
    }
    let list = json(dir.path(), &["list", "--json", "without.mf"]);
    assert!(list.as_array().unwrap().iter().all(|e| e["mtime"].is_null()), "{list}");
    assert_eq!(json(dir.path(), &["info", "--json", "without.mf"])["panda3d"]["timestamp"], 0);

    mf_ok(dir.path(), &["extract", "with.mf", "-C", "out"]);
    let modified = std::fs::metadata(dir.path().join("out/d/e/nums.dat")).unwrap().modified().unwrap();
    assert_eq!(modified.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), SOURCE_MTIME);
}

#[test]
fn encrypted_subfiles_need_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    for (name, flags) in [("enc.mf", &["-e", "-p", "secret"][..]), ("encz.mf", &["-z", "-e", "-p", "secret"][..])] {
        let archive = multify_create(&src, name, flags);
        let reference = multify_extract(&archive, &dir.path().join(format!("ref-{name}")), &["-p", "secret"]);

        let list = json(dir.path(), &["list", "--json", name]);
        assert!(list.as_array().unwrap().iter().all(|e| e["encrypted"] == true), "{list}");
        assert!(mf_ok(dir.path(), &["list", "-l", name]).contains("[encrypted] b.bin"));

        let out = format!("nopw-{name}");
        let err = mf_fails(dir.path(), &["extract", name, "-C", &out], 1);
        assert!(err.contains(name) && err.contains("is encrypted") && err.contains("--password"), "{err}");
        let out = dir.path().join(&out);
        assert!(!out.exists() || read_tree(&out).is_empty(), "nothing extracted without the password");
        let err = mf_fails(dir.path(), &["cat", name, "b.bin"], 1);
        assert!(err.contains("'b.bin' is encrypted"), "{err}");
        let err = mf_fails(dir.path(), &["cat", name, "b.bin", "--password", "wrong"], 1);
        assert!(err.contains("'b.bin' cannot be decrypted: wrong password"), "{err}");

        let out = format!("mf-{name}");
        mf_ok(dir.path(), &["extract", name, "-C", &out, "--password", "secret"]);
        assert_eq!(read_tree(&dir.path().join(&out)), reference, "{name}");
        assert_eq!(mf_ok(dir.path(), &["cat", name, "a.txt", "--password", "secret"]), "hello world\n");

        let verify = mf_in(dir.path(), &["verify", name]);
        assert!(verify.status.success());
        assert!(String::from_utf8_lossy(&verify.stderr).contains("7 encrypted entries not checked"));
        let verify = mf_ok(dir.path(), &["verify", name, "--password", "secret"]);
        assert!(verify.contains("OK: 7 entries checked"), "{verify}");
        let verify = mf_in(dir.path(), &["verify", name, "--password", "nope"]);
        assert_eq!(verify.status.code(), Some(1));
    }
    // The record names multify's default cipher: NID 91 (bf-cbc), 16-byte key, count 0.
    let bytes = std::fs::read(dir.path().join("enc.mf")).unwrap();
    let multifile_record = bytes.windows(6).any(|w| w == [91, 0, 16, 0, 0, 0]);
    assert!(multifile_record, "bf-cbc record header present");
}

#[test]
fn multifiles_edited_by_multify_and_by_panda3d_read_as_panda3d_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    // multify -r (add/replace, repacks) and -k (delete).
    let edited = multify_create(&src, "edited.mf", &["-z"]);
    std::fs::write(src.join("new.txt"), b"added later\n").unwrap();
    std::fs::write(src.join("a.txt"), b"replaced\n").unwrap();
    multify(&src, &["-r", "-f", edited.to_str().unwrap(), "new.txt", "a.txt"]);
    multify(&src, &["-k", "-f", edited.to_str().unwrap(), "b.bin"]);
    let reference = multify_extract(&edited, &dir.path().join("ref-edited"), &[]);
    mf_ok(dir.path(), &["extract", "edited.mf", "-C", "mf-edited"]);
    assert_eq!(read_tree(&dir.path().join("mf-edited")), reference);
    assert!(!mf_ok(dir.path(), &["list", "edited.mf"]).contains("b.bin"));
    assert_eq!(mf_ok(dir.path(), &["cat", "edited.mf", "a.txt"]), "replaced\n");

    // Panda3D's API without a repack: appended entries (a chain that jumps to the end of the file)
    // and a deleted entry left in the chain.
    multify_create(&src, "appended.mf", &[]);
    multify_create(&src, "deleted.mf", &["-z"]);
    let script = r#"
import json
from panda3d.core import Multifile, Filename
m = Multifile(); assert m.openReadWrite(Filename('appended.mf'))
assert m.addSubfile('zz/new.txt', Filename.binaryFilename('src/new.txt'), 6); assert m.flush()
assert m.addSubfile('aa/first.txt', Filename.binaryFilename('src/a.txt'), 0); assert m.flush(); m.close()
m = Multifile(); assert m.openReadWrite(Filename('deleted.mf'))
assert m.removeSubfile('b.bin'); assert m.flush(); m.close()
result = {}
for name in ['appended.mf', 'deleted.mf']:
    m = Multifile(); assert m.openRead(Filename(name))
    result[name] = {'repack': m.needsRepack(), 'files': {m.getSubfileName(i): bytes(m.readSubfile(i)).hex() for i in range(m.getNumSubfiles())}}
print(json.dumps(result))
"#;
    let panda: serde_json::Value = serde_json::from_str(&panda3d_py(dir.path(), script)).unwrap();
    for name in ["appended.mf", "deleted.mf"] {
        let files = panda[name]["files"].as_object().unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        let listed = mf_ok(dir.path(), &["list", name]);
        assert_eq!(listed.lines().collect::<Vec<_>>(), names, "{name}");
        for (path, hex) in files {
            let content = mf_in(dir.path(), &["cat", name, path]).stdout;
            let hex_content: String = content.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(&hex_content, hex.as_str().unwrap(), "{name}: {path}");
        }
        assert_eq!(panda[name]["repack"], true);
        let info = json(dir.path(), &["info", "--json", name]);
        assert_eq!(info["panda3d"]["needs_repack"], true, "{name}");
        mf_ok(dir.path(), &["verify", name]);
    }
    assert!(panda["appended.mf"]["files"].get("zz/new.txt").is_some());
    assert!(panda["deleted.mf"]["files"].get("b.bin").is_none());
    assert_eq!(json(dir.path(), &["info", "--json", "deleted.mf"])["panda3d"]["deleted_entries"], 1);
    assert_eq!(json(dir.path(), &["info", "--json", "appended.mf"])["panda3d"]["deleted_entries"], 0);
    let list = json(dir.path(), &["list", "--json", "appended.mf"]);
    assert_eq!(entry(&list, "zz/new.txt")["compression"], "zlib");
}

#[test]
fn info_reports_signatures_and_they_are_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem"])
        .args(["-days", "2", "-subj", "/CN=mf test signer/O=mf project"])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs (scripts/test installs it)");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let composite =
        [std::fs::read(dir.path().join("cert.pem")).unwrap(), std::fs::read(dir.path().join("key.pem")).unwrap()]
            .concat();
    std::fs::write(dir.path().join("composite.pem"), composite).unwrap();
    let signed = dir.path().join("signed.mf");
    let pem = dir.path().join("composite.pem");
    let mut args = vec!["-c", "-f", signed.to_str().unwrap(), "-S", pem.to_str().unwrap()];
    args.extend_from_slice(SOURCE_ITEMS);
    multify(&src, &args);
    assert!(multify(dir.path(), &["-tvf", "signed.mf"]).contains("Signed by mf test signer"));

    let info = json(dir.path(), &["info", "--json", "signed.mf"]);
    let signatures = info["panda3d"]["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 1, "{info}");
    assert_eq!(signatures[0]["subject"], "CN=mf test signer, O=mf project");
    assert_eq!(info["entries"], 7, "the signature is not an entry");
    assert!(mf_ok(dir.path(), &["info", "signed.mf"]).contains("signature:    CN=mf test signer"));
    assert_eq!(mf_ok(dir.path(), &["list", "signed.mf"]).lines().count(), 7);
    mf_ok(dir.path(), &["verify", "signed.mf"]);
}

/// Contents of every subfile as Panda3D's own Multifile class reads them, with timestamps.
fn panda3d_read_all(dir: &Path, archive: &str) -> serde_json::Value {
    let script = format!(
        r#"
import json
from panda3d.core import Multifile, Filename
m = Multifile(); assert m.openRead(Filename('{archive}'))
print(json.dumps({{m.getSubfileName(i): [bytes(m.readSubfile(i)).hex(), m.getSubfileTimestamp(i), m.isSubfileCompressed(i)] for i in range(m.getNumSubfiles())}}))
"#
    );
    serde_json::from_str(&panda3d_py(dir, &script)).unwrap()
}

#[test]
fn convert_round_trips_mf_panda3d_mf_and_the_real_tools_accept_our_output() {
    let dir = tempfile::tempdir().unwrap();
    let assets = sample_assets();
    let src = dir.path().join("src");
    // The sample assets plus a png (never compressed by multify) and an empty file.
    let mut files = read_tree(&assets);
    files.push(("extra/pic.png".into(), noise(3000, 4)));
    files.push(("extra/empty.bin".into(), Vec::new()));
    files.push(("extra/zeros.bin".into(), vec![0; 300_000]));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
    write_tree(&src, &refs);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(SOURCE_MTIME);
    for (path, _) in &files {
        std::fs::File::options().write(true).open(src.join(path)).unwrap().set_modified(time).unwrap();
    }
    mf_ok(dir.path(), &["pack", "src", "-o", "orig.mf", "--keep-mtime"]);
    mf_ok(dir.path(), &["convert", "orig.mf", "game.p3d", "--to", "panda3d"]);

    // multify lists and extracts it.
    let listed = multify(dir.path(), &["-tf", "game.p3d"]);
    let mut names: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    names.sort();
    let mut expected: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    expected.sort();
    assert_eq!(names, expected);
    let extracted = multify_extract(&dir.path().join("game.p3d"), &dir.path().join("multify-out"), &[]);
    assert_eq!(extracted, read_tree(&src), "multify -x of our output");

    // Panda3D's Multifile class loads it: contents, timestamps, compression choices.
    let panda = panda3d_read_all(dir.path(), "game.p3d");
    let panda = panda.as_object().unwrap();
    assert_eq!(panda.len(), files.len());
    for (path, content) in &files {
        let item = &panda[path.as_str()];
        let hex: String = content.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(item[0].as_str().unwrap(), hex, "{path}");
        assert_eq!(item[1], SOURCE_MTIME, "{path}");
    }
    assert_eq!(panda["extra/pic.png"][2], false, "png stays stored");
    assert_eq!(panda["extra/zeros.bin"][2], true, "compressible data is zlib-compressed");
    let list = json(dir.path(), &["list", "--json", "game.p3d"]);
    assert_eq!(entry(&list, "extra/zeros.bin")["compression"], "zlib");
    assert!(entry(&list, "extra/zeros.bin")["stored_size"].as_u64().unwrap() < 10_000);

    // And back to mf: the same contents and timestamps.
    mf_ok(dir.path(), &["convert", "game.p3d", "back.mf", "--to", "mf"]);
    mf_ok(dir.path(), &["extract", "back.mf", "-C", "back"]);
    assert_eq!(read_tree(&dir.path().join("back")), read_tree(&src), "mf -> panda3d -> mf, byte for byte");
    let list = json(dir.path(), &["list", "--json", "back.mf"]);
    assert_eq!(entry(&list, "extra/zeros.bin")["compression"], "zstd");
    assert_eq!(entry(&list, "extra/pic.png")["compression"], "none");
    assert_eq!(entry(&list, "extra/zeros.bin")["mtime"], SOURCE_MTIME);

    // A multify-made archive converts too, with other scale factors and levels.
    mf_ok(dir.path(), &["convert", "orig.mf", "scaled.p3d", "--to", "panda3d", "--scale-factor", "64", "--level", "9"]);
    let extracted = multify_extract(&dir.path().join("scaled.p3d"), &dir.path().join("scaled-out"), &[]);
    assert_eq!(extracted, read_tree(&src));
    assert!(multify(dir.path(), &["-tvf", "scaled.p3d"]).contains("Scale factor is 64"));
}

#[test]
fn convert_of_encrypted_multifiles_needs_the_password_and_leaves_nothing_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = source_tree(dir.path());
    let archive = multify_create(&src, "enc.mf", &["-z", "-e", "-p", "pw"]);
    std::fs::write(dir.path().join("out.mf"), b"old").unwrap();
    let err = mf_fails(dir.path(), &["convert", "enc.mf", "out.mf", "--to", "mf"], 1);
    assert!(err.contains("is encrypted"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("out.mf")).unwrap(), b"old", "existing output untouched");
    mf_ok(dir.path(), &["convert", "enc.mf", "out.mf", "--to", "mf", "--password", "pw"]);
    mf_ok(dir.path(), &["extract", "out.mf", "-C", "out"]);
    assert_eq!(read_tree(&dir.path().join("out")), multify_extract(&archive, &dir.path().join("ref"), &["-p", "pw"]));
}

/// `multify -c -T 0` of a.txt and b.bin: exactly the 97-byte file of the reference hexdump.
fn reference_fixture(dir: &Path, flags: &[&str]) -> Vec<u8> {
    let src = dir.join("small");
    write_tree(&src, &[("a.txt", b"hello world\n"), ("b.bin", b"BINARYDATA\x00\x01\x02")]);
    let target = dir.join("small.mf");
    let mut args = vec!["-c", "-T", "0", "-f", target.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["a.txt", "b.bin"]);
    multify(&src, &args);
    std::fs::read(target).unwrap()
}

fn patch_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn damaged_multifiles_give_clear_errors_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let good = reference_fixture(dir.path(), &[]);
    assert_eq!(good.len(), 97, "layout of the reference hexdump");
    assert_eq!(&good[0x44..0x48], &[0; 4], "terminator at 0x44");

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("truncated.mf", good[..0x30].to_vec(), "runs past the end of the file (48 bytes)"));
    let mut into_tail = good.clone();
    patch_u32(&mut into_tail, 0x12, 91); // an entry that would start 6 bytes before the end
    cases.push(("entry-cut.mf", into_tail, "the index entry at 91 is cut off by the end of the file"));
    let mut chain_cut = good.clone();
    patch_u32(&mut chain_cut, 0x2b, 95); // the next entry would start 2 bytes before the end
    cases.push(("chain-cut.mf", chain_cut, "the index chain is cut: entry position 95"));
    let mut looped = good.clone();
    patch_u32(&mut looped, 0x2b, 0x12); // the second entry points back to the first
    cases.push(("loop.mf", looped, "loops back"));
    let mut self_loop = good.clone();
    patch_u32(&mut self_loop, 0x12, 0x12);
    cases.push(("self-loop.mf", self_loop, "loops back"));
    let mut lying_length = good.clone();
    patch_u32(&mut lying_length, 0x12 + 8, 0xffff_fff0);
    cases.push(("lying-length.mf", lying_length, "runs past the end of the file"));
    let mut lying_next = good.clone();
    patch_u32(&mut lying_next, 0x12, 0x7fff_0000);
    cases.push(("lying-next.mf", lying_next, "index chain is cut"));
    let mut bad_version = good.clone();
    bad_version[8] = 2;
    cases.push(("version-1.2.mf", bad_version, "version 1.2 is not supported"));
    let mut bad_prefix = b"# no magic follows\n".to_vec();
    bad_prefix.extend_from_slice(&good[1..]);
    cases.push(("bad-prefix.mf", bad_prefix, "no Panda3D multifile magic after the '#' header prefix"));
    for (name, bytes, expected) in &cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let out = mf_with_deadline(dir.path(), &["list", name], 20);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(name) && stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        if *name != "version-1.2.mf" {
            assert!(stderr.contains("offset"), "{name}: the error names the offset: {stderr}");
        }
    }

    // Lying original lengths and damaged zlib data are found when the content is decoded.
    let good_z = reference_fixture(&dir.path().join("z"), &["-z"]);
    assert_eq!(good_z[0x12 + 12], 0x48, "a.txt entry flags: compressed + text");
    let mut longer = good_z.clone();
    patch_u32(&mut longer, 0x12 + 14, 1000);
    let mut shorter = good_z.clone();
    patch_u32(&mut shorter, 0x12 + 14, 4);
    let mut flipped = good_z.clone();
    flipped[0x55] ^= 0xff;
    let decode_cases = [
        ("ulen-longer.mf", longer, "decodes to 12 bytes instead of the recorded 1000"),
        ("ulen-shorter.mf", shorter, "decodes to more than the recorded 4 bytes"),
        ("flipped.mf", flipped, "does not decode"),
    ];
    for (name, bytes, expected) in &decode_cases {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        let out = mf_with_deadline(dir.path(), &["verify", name], 20);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains("'a.txt'") && stderr.contains(expected), "{name}: {stderr}");
        assert!(stderr.contains(name) && stderr.contains("offset 80"), "{name}: names file and data offset: {stderr}");
        let out = mf_with_deadline(dir.path(), &["extract", name, "-C", &format!("out-{name}")], 20);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let tree = read_tree(&dir.path().join(format!("out-{name}")));
        assert_eq!(
            tree,
            vec![("b.bin".to_owned(), b"BINARYDATA\x00\x01\x02".to_vec())],
            "{name}: only the intact entry"
        );
    }
}

#[test]
fn version_1_0_multifiles_without_timestamps_are_read() {
    // Panda3D 1.10 only writes 1.1; build a 1.0 file from multify's 1.1 output by dropping the
    // header and per-entry timestamps (4 bytes each) and moving the offsets accordingly.
    let dir = tempfile::tempdir().unwrap();
    let v11 = reference_fixture(dir.path(), &[]);
    let mut v10 = Vec::new();
    v10.extend_from_slice(&v11[..6]);
    v10.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0]); // 1.0, scale 1
                                                      // Entries at 14 and 14 + 21; terminator at 56; data at 60 (12 bytes) and 72 (13 bytes).
    let entry = |next: u32, start: u32, len: u32, flags: u16, name: &[u8]| {
        let mut e = Vec::new();
        e.extend_from_slice(&next.to_le_bytes());
        e.extend_from_slice(&start.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&(name.len() as u16).to_le_bytes());
        e.extend(name.iter().map(|b| b ^ 0xff));
        e
    };
    v10.extend(entry(35, 60, 12, 0x40, b"a.txt"));
    v10.extend(entry(56, 72, 13, 0, b"b.bin"));
    v10.extend_from_slice(&[0; 4]);
    v10.extend_from_slice(&v11[0x48..]);
    assert_eq!(v10.len(), 85);
    std::fs::write(dir.path().join("v10.mf"), &v10).unwrap();
    assert_eq!(mf_ok(dir.path(), &["list", "v10.mf"]), "a.txt\nb.bin\n");
    assert_eq!(mf_ok(dir.path(), &["cat", "v10.mf", "a.txt"]), "hello world\n");
    assert_eq!(mf_in(dir.path(), &["cat", "v10.mf", "b.bin"]).stdout, b"BINARYDATA\x00\x01\x02");
    assert_eq!(json(dir.path(), &["info", "--json", "v10.mf"])["version"], "1.0");
    // Panda3D itself agrees.
    let names = panda3d_py(
        dir.path(),
        "from panda3d.core import Multifile, Filename\nm = Multifile(); assert m.openRead(Filename('v10.mf'))\n\
         print(','.join(m.getSubfileName(i) + '=' + bytes(m.readSubfile(i)).decode('latin-1') for i in range(m.getNumSubfiles())))",
    );
    assert_eq!(names.trim_end(), "a.txt=hello world\n,b.bin=BINARYDATA\u{0}\u{1}\u{2}");
}

#[test]
fn other_ciphers_panda3d_can_be_configured_with_decrypt_too() {
    // Panda3D takes the cipher and key length from PRC variables (Multifile's own setters are ignored
    // when writing in 1.10.16, and so was multifile-encryption-iteration-count in our trials).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.bin"), b"configured cipher\x00\xff").unwrap();
    let configs = [
        ("aes256.mf", "aes-256-cbc", 32, 427),
        ("aes128.mf", "aes-128-cbc", 16, 419),
        ("des3.mf", "des-ede3-cbc", 24, 44),
        ("bf-long-key.mf", "bf-cbc", 32, 91),
    ];
    for (name, algorithm, key_len, nid) in configs {
        let script = format!(
            r#"
from panda3d.core import loadPrcFileData, Multifile, Filename
loadPrcFileData('', 'encryption-algorithm {algorithm}\nencryption-key-length {}')
m = Multifile(); assert m.openWrite(Filename('{name}'))
m.setEncryptionFlag(True); m.setEncryptionPassword('pw')
assert m.addSubfile('data.bin', Filename.binaryFilename('data.bin'), 6)
assert m.flush(); m.close()
"#,
            key_len * 8
        );
        panda3d_py(dir.path(), &script);
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        let record = [&(nid as u16).to_le_bytes()[..], &(key_len as u16).to_le_bytes(), &[0, 0]].concat();
        assert!(bytes.windows(6).any(|w| w == record), "{name}: cipher record {record:?} present");
        assert_eq!(
            mf_in(dir.path(), &["cat", name, "data.bin", "--password", "pw"]).stdout,
            b"configured cipher\x00\xff",
            "{name}"
        );
        let err = mf_fails(dir.path(), &["cat", name, "data.bin", "--password", "wrong"], 1);
        assert!(err.contains("wrong password"), "{name}: {err}");
    }
}

/// Builds a multifile with the real `multify -c -z` from every top-level item of `src`.
fn multify_all(src: &Path, target: &Path) {
    let mut items: Vec<String> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    items.sort();
    let mut args = vec!["-c", "-z", "-f", target.to_str().unwrap()];
    args.extend(items.iter().map(String::as_str));
    multify(src, &args);
}

#[test]
fn diff_and_apply_between_panda3d_multifiles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let edited = text.replacen("line 500\n", "line five hundred\n", 1);
    let logo = noise(50_000, 3);
    write_tree(
        &d.join("v1"),
        &[("a.txt", text.as_bytes()), ("gone.dat", b"removed in v2"), ("img/logo.raw", &logo), ("same.txt", b"same")],
    );
    write_tree(
        &d.join("v2"),
        &[("a.txt", edited.as_bytes()), ("added.txt", b"new in v2"), ("art/logo.raw", &logo), ("same.txt", b"same")],
    );
    let (v1, v2) = (d.join("v1.mf"), d.join("v2.mf"));
    multify_all(&d.join("v1"), &v1);
    multify_all(&d.join("v2"), &v2);
    let expected = multify_extract(&v2, &d.join("ref"), &[]);
    assert_eq!(expected, read_tree(&d.join("v2")));

    let report = json(d, &["diff", "v1.mf", "v2.mf", "-o", "p.mfp", "--json"]);
    assert_eq!(report["kind"], "archive", "diffed entry by entry: {report}");
    assert_eq!((report["old_format"].as_str(), report["new_format"].as_str()), (Some("panda3d"), Some("panda3d")));
    for (change, count) in [("changed", 1), ("added", 1), ("removed", 1), ("renamed", 1), ("unchanged", 1)] {
        assert_eq!(report["counts"][change], count, "{change}: {report}");
    }
    assert_eq!(report["byte_identical"], false, "a Panda3D target is promised in content only");
    let info = json(d, &["patch-info", "p.mfp", "--json"]);
    assert_eq!(info["new_format"], "panda3d");
    assert!(std::fs::metadata(d.join("p.mfp")).unwrap().len() < 20_000, "the patch carries changes only");

    // Default: the new side's format, which the real multify reads back.
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "out.p3d"]);
    assert_eq!(json(d, &["info", "out.p3d", "--json"])["format"], "panda3d");
    assert_eq!(multify_extract(&d.join("out.p3d"), &d.join("x-multify"), &[]), expected);
    mf_ok(d, &["extract", "out.p3d", "-C", "x-mf"]);
    assert_eq!(read_tree(&d.join("x-mf")), expected);

    // --format mf: an mf archive with the same content.
    mf_ok(d, &["apply", "p.mfp", "v1.mf", "-o", "out.mf", "--format", "mf"]);
    assert_eq!(json(d, &["info", "out.mf", "--json"])["format"], "mf");
    mf_ok(d, &["extract", "out.mf", "-C", "x-mf2"]);
    assert_eq!(read_tree(&d.join("x-mf2")), expected);

    // A wrong base is refused and nothing is written: another multifile, or an mf archive.
    let err = mf_fails(d, &["apply", "p.mfp", "v2.mf", "-o", "wrong.p3d"], 1);
    assert!(err.to_lowercase().contains("base") || err.contains("old"), "{err}");
    assert!(!d.join("wrong.p3d").exists());
    let err = mf_fails(d, &["apply", "p.mfp", "out.mf", "-o", "wrong2.p3d"], 1);
    assert!(err.contains("wrong base"), "{err}");
    assert!(!d.join("wrong2.p3d").exists());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("wrong"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");

    // Mixed pair: an mf archive to a Panda3D multifile, applied in place.
    mf_ok(d, &["pack", "v1", "-o", "v1-mf.mf"]);
    mf_ok(d, &["diff", "v1-mf.mf", "v2.mf", "-o", "mixed.mfp"]);
    mf_ok(d, &["apply", "mixed.mfp", "v1-mf.mf", "--in-place"]);
    assert_eq!(json(d, &["info", "v1-mf.mf", "--json"])["format"], "panda3d");
    mf_ok(d, &["extract", "v1-mf.mf", "-C", "x-mixed"]);
    assert_eq!(read_tree(&d.join("x-mixed")), expected);

    // A multifile and a file that is no archive: a plain patch of the files as they are.
    std::fs::write(d.join("notes.bin"), noise(3000, 11)).unwrap();
    let plain = json(d, &["diff", "v1.mf", "notes.bin", "-o", "plain.mfp", "--json"]);
    assert_eq!((plain["kind"].as_str(), plain["old_format"].as_str()), (Some("file"), Some("mf")), "{plain}");
    mf_ok(d, &["apply", "plain.mfp", "v1.mf", "-o", "notes.out"]);
    assert_eq!(std::fs::read(d.join("notes.out")).unwrap(), std::fs::read(d.join("notes.bin")).unwrap());
}

#[test]
fn extract_refuses_a_multifile_with_a_file_that_is_also_a_directory_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::craft_multifile(
        d,
        "conflict.mf",
        "[('a', b'file a', 0, 0), ('a/b', b'file a/b', 0, 0), ('c', b'c', 0, 0)]",
    );
    // Readable as Panda3D reads it: listing works.
    assert!(mf_ok(d, &["list", "conflict.mf"]).contains("a/b"));
    let err = mf_fails(d, &["extract", "conflict.mf", "-C", "out"], 1);
    assert!(err.contains("conflict.mf: entry path 'a/b' conflicts with 'a'"), "{err}");
    let written: Vec<_> =
        std::fs::read_dir(d.join("out")).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(written.is_empty(), "nothing written: {written:?}");
    // The check is on the entries asked for: one that conflicts with nothing extracts.
    mf_ok(d, &["extract", "conflict.mf", "c", "-C", "only-c"]);
    assert_eq!(std::fs::read(d.join("only-c/c")).unwrap(), b"c");
}

/// Publishes Panda3D multifiles with `mf release add` and updates an installed one with `mf update`
/// from a real nginx: patches between multifiles written by `mf convert` rebuild them byte for byte;
/// a multifile multify wrote (not laid out as mf writes it) gets no patch and is installed in full.
#[test]
fn release_add_and_update_work_on_panda3d_multifiles() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mf_ok(d, &["keygen", "release"]);
    let text: String = (0..30_000).map(|i| format!("line {i}\n")).collect();
    type Files = Vec<(&'static str, Vec<u8>)>;
    let versions: [(&str, Files); 3] = [
        (
            "1.0",
            vec![("a.txt", text.clone().into_bytes()), ("img/logo.png", noise(40_000, 1)), ("b.bin", noise(9000, 2))],
        ),
        (
            "1.1",
            vec![
                ("a.txt", text.replacen("line 7\n", "line seven\n", 1).into_bytes()),
                ("img/logo.png", noise(40_000, 1)),
            ],
        ),
        ("1.2", vec![("a.txt", text.replacen("line 9\n", "line nine\n", 1).into_bytes()), ("c.txt", b"new".to_vec())]),
    ];
    for (version, files) in &versions {
        let tree = d.join(format!("tree-{version}"));
        let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        write_tree(&tree, &borrowed);
        mf_ok(d, &["pack", tree.to_str().unwrap(), "-o", &format!("{version}.mf")]);
        mf_ok(d, &["convert", &format!("{version}.mf"), &format!("{version}.p3d"), "--to", "panda3d"]);
        let added = json(
            d,
            &[
                "release",
                "add",
                "repo",
                version,
                &format!("{version}.p3d"),
                "--sign",
                "release.key",
                "--patch-from-last",
                "1",
                "--json",
            ],
        );
        if *version != "1.0" {
            assert_eq!(added["patches"].as_array().unwrap().len(), 1, "a patch from the previous version: {added}");
            assert!(added["patches_skipped"].as_array().unwrap().is_empty(), "{added}");
        }
    }
    // The real Panda3D tools read what is published.
    assert_eq!(multify_extract(&d.join("1.2.p3d"), &d.join("ref"), &[]), read_tree(&d.join("tree-1.2")));

    let server = common::nginx::Nginx::serve(&d.join("repo"));
    std::fs::copy(d.join("1.0.p3d"), d.join("game.mf")).unwrap();
    let out = mf_ok(d, &["update", "--repo", &server.url(), "--key", "release.pub", "game.mf", "--json"]);
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = outcome["route"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["patch", "patch"], "1.0 -> 1.1 -> 1.2 by patches: {outcome}");
    assert_eq!(std::fs::read(d.join("game.mf")).unwrap(), std::fs::read(d.join("1.2.p3d")).unwrap());
    assert_eq!(json(d, &["info", "game.mf", "--json"])["format"], "panda3d");

    // 1.3 made by multify: no patch can rebuild it byte for byte, so clients download it whole.
    let tree = d.join("tree-1.3");
    write_tree(&tree, &[("a.txt", text.as_bytes()), ("d.txt", b"multify made this")]);
    multify_all(&tree, &d.join("1.3.p3d"));
    let added = json(
        d,
        &["release", "add", "repo", "1.3", "1.3.p3d", "--sign", "release.key", "--patch-from-last", "1", "--json"],
    );
    assert!(added["patches"].as_array().unwrap().is_empty(), "{added}");
    assert!(added["patches_skipped"][0]["reason"].as_str().unwrap().contains("byte for byte"), "{added}");
    let out = mf_ok(d, &["update", "--repo", &server.url(), "--key", "release.pub", "game.mf", "--json"]);
    let outcome: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outcome["route"][0]["kind"], "full", "{outcome}");
    assert_eq!(std::fs::read(d.join("game.mf")).unwrap(), std::fs::read(d.join("1.3.p3d")).unwrap());
}
