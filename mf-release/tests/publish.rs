//! Publishing: objects, file tables, patches, signatures, prune and resign on a real directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mf_format::Archive;
use mf_release::hash::sha256_file;
use mf_release::repo::{self, AddOptions, Signing, DEFAULT_EXPIRY};
use mf_release::{Error, Manifest, SecretKey};
use mf_test_support::{text, write_mf};

fn release(dir: &Path, n: u64) -> PathBuf {
    let mut script = text(1, 4000);
    script.extend_from_slice(format!("version {n}\n").as_bytes());
    let mut files = vec![("scripts/main.py", script), ("data/table.csv", text(2 + n, 3000))];
    if n >= 2 {
        files.push(("data/new.txt", text(99, 10)));
    }
    write_mf(dir.join(format!("v{n}.mf")), &files)
}

fn options(key: Option<&SecretKey>) -> AddOptions<'_> {
    AddOptions { signing: Signing { key, expires_in: DEFAULT_EXPIRY }, patch_from_last: 3, memory_limit: 256 << 20 }
}

fn read_manifest(root: &Path, key: &SecretKey) -> Manifest {
    let bytes = std::fs::read(root.join("manifest.json")).unwrap();
    Manifest::verify(&bytes, Some(&key.public()), SystemTime::now(), "test").unwrap()
}

#[test]
fn versions_are_published_with_patches_and_signed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::generate().unwrap();
    let quiet = |_: &str| {};
    for n in 1..=4 {
        let added = repo::add(&root, &format!("1.{n}"), &release(dir.path(), n), &options(Some(&key)), &quiet).unwrap();
        assert_eq!(added.manifest_version, n);
        assert_eq!(added.patches.len() as u64, (n - 1).min(3));
    }
    let manifest = read_manifest(&root, &key);
    assert_eq!(manifest.manifest_version, 4);
    let names: Vec<&str> = manifest.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, ["1.1", "1.2", "1.3", "1.4"]);
    let latest = manifest.latest().unwrap();
    assert_eq!(latest.patches.iter().map(|p| p.from.as_str()).collect::<Vec<_>>(), ["1.1", "1.2", "1.3"]);
    // Every object is content-addressed and intact; the full archive is the input byte for byte.
    for version in &manifest.versions {
        for object in
            std::iter::once(&version.full).chain([&version.files]).chain(version.patches.iter().map(|p| &p.object))
        {
            let (sha, len) = sha256_file(&root.join(&object.path)).unwrap();
            assert_eq!((sha.as_str(), len), (object.sha256.as_str(), object.size), "{}", object.path);
            assert!(object.path.contains(&object.sha256));
        }
        assert!(version.patches.iter().all(|p| p.object.size < version.full.size));
    }
    assert_eq!(std::fs::read(root.join(&latest.full.path)).unwrap(), std::fs::read(dir.path().join("v4.mf")).unwrap());
    // Each patch really turns its source into the new version.
    let patch = &latest.patches[0];
    let out = dir.path().join("rebuilt.mf");
    let from = manifest.version(&patch.from).unwrap();
    mf_diff::apply_patch(&root.join(&patch.object.path), &root.join(&from.full.path), &out, &|_| {}).unwrap();
    assert_eq!(sha256_file(&out).unwrap().0, latest.full.sha256);
    // The file table mirrors the archive in data order.
    let table_bytes = std::fs::read(root.join(&latest.files.path)).unwrap();
    let table = mf_release::FileTable::from_object(&table_bytes, "1.4", "t").unwrap();
    let archive = Archive::open(root.join(&latest.full.path)).unwrap();
    let paths: Vec<String> = archive.entries().map(|e| e.path().to_owned()).collect();
    assert_eq!(table.entries.iter().map(|e| e.path.clone()).collect::<Vec<_>>(), paths);
    assert_eq!(table.archive_index_hash, format!("{:016x}", archive.footer().index_hash));
}

#[test]
fn a_signed_repository_needs_its_key_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::generate().unwrap();
    let quiet = |_: &str| {};
    repo::add(&root, "1", &release(dir.path(), 1), &options(Some(&key)), &quiet).unwrap();
    let before = std::fs::read(root.join("manifest.json")).unwrap();

    let err = repo::add(&root, "2", &release(dir.path(), 2), &options(None), &quiet).unwrap_err();
    assert!(err.to_string().contains("signed"), "{err}");
    let other = SecretKey::generate().unwrap();
    let err = repo::add(&root, "2", &release(dir.path(), 2), &options(Some(&other)), &quiet).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    let err = repo::add(&root, "1", &release(dir.path(), 2), &options(Some(&key)), &quiet).unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
    let err = repo::add(&root, "../2", &release(dir.path(), 2), &options(Some(&key)), &quiet).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
    // A damaged input is refused before anything is written.
    let bad = dir.path().join("bad.mf");
    let mut bytes = std::fs::read(release(dir.path(), 2)).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    assert!(repo::add(&root, "2", &bad, &options(Some(&key)), &quiet).is_err());
    assert_eq!(std::fs::read(root.join("manifest.json")).unwrap(), before, "failed publishes change nothing");
}

#[test]
fn prune_keeps_the_newest_versions_and_deletes_only_unreferenced_objects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::generate().unwrap();
    let quiet = |_: &str| {};
    for n in 1..=4 {
        repo::add(&root, &format!("{n}"), &release(dir.path(), n), &options(Some(&key)), &quiet).unwrap();
    }
    std::fs::write(root.join("full/README"), b"not an object").unwrap();
    let signing = Signing { key: Some(&key), expires_in: DEFAULT_EXPIRY };
    let dry = repo::prune(&root, 2, &signing, true).unwrap();
    assert_eq!(dry.versions_removed, ["1", "2"]);
    assert_eq!(read_manifest(&root, &key).versions.len(), 4, "a dry run changes nothing");

    let pruned = repo::prune(&root, 2, &signing, false).unwrap();
    assert_eq!(pruned.versions_removed, ["1", "2"]);
    assert_eq!(pruned.objects_deleted, dry.objects_deleted);
    let manifest = read_manifest(&root, &key);
    assert_eq!(manifest.manifest_version, 5);
    assert_eq!(manifest.versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["3", "4"]);
    assert_eq!(manifest.latest().unwrap().patches.iter().map(|p| p.from.as_str()).collect::<Vec<_>>(), ["3"]);
    // Everything still named exists; everything deleted was unnamed; foreign files stay.
    for version in &manifest.versions {
        assert!(root.join(&version.full.path).is_file());
        assert!(root.join(&version.files.path).is_file());
    }
    for path in &pruned.objects_deleted {
        assert!(!root.join(path).exists());
    }
    assert!(pruned.objects_deleted.len() >= 4, "{:?}", pruned.objects_deleted);
    assert!(root.join("full/README").is_file());
    assert!(repo::prune(&root, 0, &signing, false).is_err());
}

#[test]
fn resign_moves_the_expiry_and_the_manifest_version_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let key = SecretKey::generate().unwrap();
    let short =
        AddOptions { signing: Signing { key: Some(&key), expires_in: Duration::from_secs(60) }, ..options(Some(&key)) };
    repo::add(&root, "1", &release(dir.path(), 1), &short, &|_| {}).unwrap();
    let before = read_manifest(&root, &key);
    let version = repo::resign(&root, &Signing { key: Some(&key), expires_in: DEFAULT_EXPIRY }).unwrap();
    let after = read_manifest(&root, &key);
    assert_eq!(version, 2);
    assert_eq!(after.versions, before.versions);
    assert!(after.expires_at().unwrap() > before.expires_at().unwrap() + Duration::from_secs(3600));
}
