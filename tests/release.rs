//! End-to-end tests of publishing: `mf keygen` and `mf release add|list|prune|resign`.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{mf_fails, mf_ok, sample_assets};

#[test]
fn publish_two_versions_from_folders_and_archives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = mf_ok(d, &["keygen", "release"]);
    assert!(out.contains("key id"), "{out}");
    let mode = std::fs::metadata(d.join("release.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    assert!(std::fs::read_to_string(d.join("release.pub")).unwrap().starts_with("mf-ed25519:"));
    let again = mf_fails(d, &["keygen", "release"], 1);
    assert!(again.contains("exists"), "{again}");

    let assets = sample_assets();
    let added: serde_json::Value = serde_json::from_str(&mf_ok(
        d,
        &["release", "add", "repo", "1.0", assets.to_str().unwrap(), "--sign", "release.key", "--json"],
    ))
    .unwrap();
    assert_eq!(added["manifest_version"], 1);
    assert_eq!(added["signed"], true);
    // A folder is published as `mf pack` would pack it.
    mf_ok(d, &["pack", assets.to_str().unwrap(), "-o", "by-hand.mf"]);
    let full = d.join("repo").join(added["full"]["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&full).unwrap(), std::fs::read(d.join("by-hand.mf")).unwrap());
    // Its block hash table (for mounting from the repository) is stored and listed.
    let blocks = d.join("repo").join(added["blocks"]["path"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&blocks).unwrap().len(), added["blocks"]["size"].as_u64().unwrap());
    assert!(std::fs::read(&blocks).unwrap().starts_with(b"MFBLOCK1"));

    // Version 1.1 from an archive with one changed file.
    common::copy_tree(&assets, &d.join("v2"));
    let first = common::read_tree(&d.join("v2")).into_iter().next().unwrap().0;
    std::fs::write(d.join("v2").join(&first), b"replaced content\n").unwrap();
    mf_ok(d, &["pack", "v2", "-o", "v2.mf"]);
    let out = mf_ok(d, &["release", "add", "repo", "1.1", "v2.mf", "--sign", "release.key"]);
    assert!(out.contains("patch from 1.0") && out.contains("block hash table"), "{out}");

    let listing: serde_json::Value = serde_json::from_str(&mf_ok(d, &["release", "list", "repo", "--json"])).unwrap();
    let versions = listing["manifest"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["patches"][0]["from"], "1.0");
    assert_eq!(listing["signed"], true);

    // Without the key, a signed repository is not rewritten; a duplicate version is refused.
    let manifest = std::fs::read(d.join("repo/manifest.json")).unwrap();
    let err = mf_fails(d, &["release", "add", "repo", "1.2", "v2.mf"], 1);
    assert!(err.contains("--sign"), "{err}");
    let err = mf_fails(d, &["release", "add", "repo", "1.1", "v2.mf", "--sign", "release.key"], 1);
    assert!(err.contains("already published"), "{err}");
    assert_eq!(std::fs::read(d.join("repo/manifest.json")).unwrap(), manifest);

    mf_ok(d, &["release", "resign", "repo", "--sign", "release.key", "--expires", "30d"]);
    let pruned: serde_json::Value = serde_json::from_str(&mf_ok(
        d,
        &["release", "prune", "repo", "--keep", "1", "--sign", "release.key", "--json"],
    ))
    .unwrap();
    assert_eq!(pruned["versions_removed"][0], "1.0");
    assert_eq!(pruned["manifest_version"], 4);
    assert!(!full.exists(), "1.0's full archive is gone once no manifest names it");
    assert!(!blocks.exists(), "and so is its block hash table");
}

/// Every file under `root` (relative paths), for checking that a refused command wrote nothing.
fn files_under(root: &std::path::Path) -> Vec<String> {
    common::read_tree(root).into_iter().map(|(path, _)| path).collect()
}

#[test]
fn manifest_lifetimes_that_cannot_be_published_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mf_ok(d, &["keygen", "release"]);
    let assets = sample_assets();
    let assets = assets.to_str().unwrap();
    // Past year 9999 (this used to panic after storing the full archive), and zero (this used to
    // publish a manifest every client refuses).
    for expires in ["100000000y", "0s"] {
        let err =
            mf_fails(d, &["release", "add", "repo", "1.0", assets, "--sign", "release.key", "--expires", expires], 1);
        assert!(err.contains("--expires") && !err.contains("panicked"), "{expires}: {err}");
        let left = if d.join("repo").exists() { files_under(&d.join("repo")) } else { Vec::new() };
        assert!(left.iter().all(|p| p == ".lock"), "{expires}: a refused add left {left:?}");
    }

    mf_ok(d, &["release", "add", "repo", "1.0", assets, "--sign", "release.key"]);
    let before = files_under(&d.join("repo"));
    let manifest = std::fs::read(d.join("repo/manifest.json")).unwrap();
    for expires in ["100000000y", "0s"] {
        for command in [&["release", "resign", "repo"][..], &["release", "prune", "repo", "--keep", "1"][..]] {
            let mut args = command.to_vec();
            args.extend(["--sign", "release.key", "--expires", expires]);
            let err = mf_fails(d, &args, 1);
            assert!(err.contains("--expires") && !err.contains("panicked"), "{args:?}: {err}");
        }
    }
    assert_eq!(std::fs::read(d.join("repo/manifest.json")).unwrap(), manifest, "the manifest is unchanged");
    assert_eq!(files_under(&d.join("repo")), before, "no object was added or removed");
}
