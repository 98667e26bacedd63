//! The update Session on a directory repository: trust recording, read-only sessions, file tables,
//! planning with downloaded pieces, downloads checked against the manifest, and locking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mf_release::hash::sha256_file;
use mf_release::repo::{self, AddOptions, Signing, DEFAULT_EXPIRY};
use mf_release::update::{Session, SessionOptions};
use mf_release::{Error, SecretKey};
use mf_test_support::{text, write_mf};

/// A signed repository with versions 1 and 2 (a patch from 1 to 2).
fn publish(dir: &Path, key: &SecretKey) -> PathBuf {
    let repo = dir.join("repo");
    let options = AddOptions {
        signing: Signing { key: Some(key), expires_in: DEFAULT_EXPIRY },
        patch_from_last: 3,
        memory_limit: 256 << 20,
    };
    for n in 1..=2u64 {
        let mut script = text(1, 4000);
        script.extend_from_slice(format!("version {n}\n").as_bytes());
        let files = [("main.py", script), ("data.csv", text(10 + n, 2000))];
        let path = write_mf(dir.join(format!("v{n}.mf")), &files);
        repo::add(&repo, &n.to_string(), &path, &options, &|_| {}).unwrap();
    }
    repo
}

fn options(key: &SecretKey) -> SessionOptions {
    let mut options = SessionOptions::new(Some(key.public()));
    options.fetch.timeout = Duration::from_secs(5);
    options
}

#[test]
fn a_session_verifies_records_trust_and_downloads_checked_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let repo = publish(dir.path(), &key);
    let state = dir.path().join("state");
    let repo_arg = repo.to_str().unwrap();

    // Read-only: verifies, writes nothing, downloads nothing.
    let mut read_only = options(&key);
    read_only.read_only = true;
    let session = Session::open(repo_arg, &state, read_only).unwrap();
    assert_eq!(session.manifest().manifest_version, 2);
    assert!(!state.exists());
    let object = session.target(None).unwrap().full.clone();
    assert!(session.download(&object, &|_| {}).is_err());
    drop(session);

    let session = Session::open(repo_arg, &state, options(&key)).unwrap();
    let trusted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("trusted.json")).unwrap()).unwrap();
    assert_eq!(trusted["manifest_version"], 2);
    assert_eq!(trusted["keyid"], key.public().key_id());
    // One update per install at a time.
    let err = Session::open(repo_arg, &state, options(&key)).err().expect("locked");
    assert!(err.to_string().contains("another mf update"), "{err}");

    // File tables are checked against the manifest and describe the version's archive.
    let table = session.file_table("2").unwrap();
    assert_eq!(table.version, "2");
    let paths: Vec<&str> = table.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths.len(), 2);
    assert!(paths.contains(&"main.py") && paths.contains(&"data.csv"), "{paths:?}");
    assert!(session.file_table("9").is_err());

    // The route from 1 is the patch; once downloaded it is free.
    let route = session.plan(Some("1"), "2").unwrap();
    assert!(!route.is_full() && route.fetch_bytes > 0);
    let patch = route.steps[0].object().clone();
    let last = std::sync::atomic::AtomicU64::new(0);
    let path = session.download(&patch, &|have| last.store(have, std::sync::atomic::Ordering::SeqCst)).unwrap();
    assert_eq!(last.load(std::sync::atomic::Ordering::SeqCst), patch.size, "progress reaches the piece's size");
    assert_eq!(sha256_file(&path).unwrap().0, patch.sha256);
    // The returned path names the file in the open downloads folder (not re-resolved by name).
    use std::os::unix::fs::MetadataExt;
    let stored = std::fs::metadata(session.downloads_dir().join(&patch.sha256)).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), stored.ino());
    assert!(session.has(&patch));
    assert_eq!(session.plan(Some("1"), "2").unwrap().fetch_bytes, 0);
    session.discard(&patch);
    assert!(!session.has(&patch));
    session.download(&patch, &|_| {}).unwrap();
    session.clean_downloads().unwrap();
    assert_eq!(std::fs::read_dir(session.downloads_dir()).unwrap().count(), 0);
    drop(session);

    // A damaged file table in the repository is refused by its hash.
    let files = repo.join(table_path(&repo, "2"));
    let mut bytes = std::fs::read(&files).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&files, bytes).unwrap();
    // The table fetched above was kept (content-addressed, so never stale): no new fetch is needed.
    let session = Session::open(repo_arg, &state, options(&key)).unwrap();
    let fetched = session.fetched_bytes();
    assert_eq!(session.file_table("2").unwrap(), table);
    assert_eq!(session.fetched_bytes(), fetched, "served from the state directory's cache");
    drop(session);
    // A damaged cached copy is ignored, and a damaged copy in the repository is refused by its hash.
    let cached = state.join("tables").join(table_sha(&repo, "2"));
    std::fs::write(&cached, b"{}").unwrap();
    let session = Session::open(repo_arg, &state, options(&key)).unwrap();
    let err = session.file_table("2").unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
}

fn table_sha(repo: &Path, version: &str) -> String {
    let (manifest, _) = repo::load(repo).unwrap();
    manifest.version(version).unwrap().files.sha256.clone()
}

fn table_path(repo: &Path, version: &str) -> String {
    let (manifest, _) = repo::load(repo).unwrap();
    manifest.version(version).unwrap().files.path.clone()
}

#[test]
fn rollback_is_refused_against_the_recorded_manifest_version() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let repo = publish(dir.path(), &key);
    let state = dir.path().join("state");
    let old = std::fs::read(repo.join("manifest.json")).unwrap();
    repo::resign(&repo, &Signing { key: Some(&key), expires_in: DEFAULT_EXPIRY }).unwrap();
    drop(Session::open(repo.to_str().unwrap(), &state, options(&key)).unwrap());
    std::fs::write(repo.join("manifest.json"), old).unwrap();
    let err = Session::open(repo.to_str().unwrap(), &state, options(&key)).err().expect("rollback");
    assert!(matches!(err, Error::Rollback { got: 2, trusted: 3, .. }), "{err}");
    // The refused manifest did not lower the record.
    let trusted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("trusted.json")).unwrap()).unwrap();
    assert_eq!(trusted["manifest_version"], 3);
}

/// A race against a session: once the session is open, `downloads/` is swapped for a symbolic link
/// to someone else's folder. The session keeps writing into the folder it opened (reached through its
/// handle, never by path again), so nothing lands in the link's target.
#[test]
fn a_downloads_folder_swapped_for_a_link_after_open_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let repo = publish(dir.path(), &key);
    let state = dir.path().join("state");
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let session = Session::open(repo.to_str().unwrap(), &state, options(&key)).unwrap();
    std::fs::rename(state.join("downloads"), state.join("moved")).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("downloads")).unwrap();

    let object = session.target(None).unwrap().full.clone();
    let path = session.download(&object, &|_| {}).unwrap();
    assert_eq!(sha256_file(&path).unwrap().0, object.sha256);
    assert!(state.join("moved").join(&object.sha256).is_file(), "written into the folder the session opened");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing written through the link");
    session.clean_downloads().unwrap();
    assert_eq!(std::fs::read_dir(state.join("moved")).unwrap().count(), 0);
    drop(session);
    // The next session refuses the planted link.
    let err = Session::open(repo.to_str().unwrap(), &state, options(&key)).err().expect("refused");
    assert!(matches!(err, Error::UnsafeState { .. }), "{err}");
}
