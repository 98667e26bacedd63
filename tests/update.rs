//! End-to-end tests of `mf update` (archive mode) against a real nginx on loopback, with faults injected
//! by a proxy between mf and nginx: cut connections, stalls, corruption, wrong lengths, bad signatures,
//! expiry, rollback, unknown installs, and kill -9 at random points.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy};
use common::nginx::Nginx;
use common::{copy_tree, mf_ok, noise, spawn_quiet, write_tree};
use serde_json::Value;

/// Three versions published into a signed repository with `--patch-from-last 1`, so going from 1.0 to
/// 1.2 takes a chain of two patches.
struct Fixture {
    repo: PathBuf,
    secret: PathBuf,
    public: PathBuf,
    /// (version, archive) oldest first.
    versions: Vec<(String, PathBuf)>,
}

const VERSIONS: [&str; 3] = ["1.0", "1.1", "1.2"];

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Built once per test run under the target directory; fixtures of earlier runs are removed.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(&base).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("update-fixture-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = base.join(format!("update-fixture-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        mf_ok(&root, &["keygen", "release"]);
        // 1.0: eight incompressible 256 KiB files (2 MiB archive).
        let names: Vec<String> = (0..8).map(|i| format!("data/{}.bin", (b'a' + i) as char)).collect();
        let mut files: Vec<(String, Vec<u8>)> =
            names.iter().enumerate().map(|(i, n)| (n.clone(), noise(256 << 10, i as u64 + 1))).collect();
        let mut versions = Vec::new();
        for (step, version) in VERSIONS.iter().enumerate() {
            match step {
                1 => files[2].1 = noise(64 << 10, 100), // c.bin replaced: a ~64 KiB patch
                2 => {
                    files[5].1[1000..1100].fill(7); // f.bin edited in place: a tiny bsdiff
                    files.push(("data/new.bin".into(), noise(32 << 10, 200)));
                }
                _ => {}
            }
            let tree = root.join(format!("tree-{version}"));
            let borrowed: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
            write_tree(&tree, &borrowed);
            let archive = root.join(format!("v{version}.mf"));
            mf_ok(&root, &["pack", tree.to_str().unwrap(), "-o", archive.to_str().unwrap()]);
            mf_ok(
                &root,
                &[
                    "release",
                    "add",
                    "repo",
                    version,
                    archive.to_str().unwrap(),
                    "--sign",
                    "release.key",
                    "--patch-from-last",
                    "1",
                ],
            );
            versions.push((version.to_string(), archive));
        }
        Fixture {
            repo: root.join("repo"),
            secret: root.join("release.key"),
            public: root.join("release.pub"),
            versions,
        }
    })
}

impl Fixture {
    fn archive(&self, version: &str) -> &Path {
        &self.versions.iter().find(|(v, _)| v == version).unwrap().1
    }

    fn bytes(&self, version: &str) -> Vec<u8> {
        std::fs::read(self.archive(version)).unwrap()
    }

    /// The repository's manifest (signed part) as JSON.
    fn manifest(repo: &Path) -> Value {
        let text = std::fs::read(repo.join("manifest.json")).unwrap();
        serde_json::from_slice::<Value>(&text).unwrap()["signed"].clone()
    }

    /// A private copy of the repository, for tests that damage or change it.
    fn copy_repo(&self, into: &Path) -> PathBuf {
        let repo = into.join("repo");
        copy_tree(&self.repo, &repo);
        repo
    }
}

/// Runs `mf update` with `args` in `dir` (with a deadline, so a hang fails the test).
fn update(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["update"];
    all.extend_from_slice(args);
    common::mf_with_deadline(dir, &all, 60)
}

/// Runs `mf update ... --json` and asserts success; returns the outcome.
fn update_ok(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = update(dir, &all);
    assert!(
        out.status.success(),
        "mf update {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON outcome")
}

/// Runs `mf update` and asserts it exits 1; returns stderr.
fn update_fails(dir: &Path, args: &[&str]) -> String {
    let out = update(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "mf update {args:?} should fail:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_arg() -> String {
    fixture().public.to_str().unwrap().to_owned()
}

/// Installs `version`'s archive as `dir/game.mf`.
fn install(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join("game.mf");
    std::fs::copy(fixture().archive(version), &path).unwrap();
    path
}

fn route_kinds(outcome: &Value) -> Vec<String> {
    outcome["route"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap().to_owned()).collect()
}

fn served_paths(server: &Nginx) -> Vec<String> {
    server.requests().into_iter().map(|r| r.uri).collect()
}

/// Files left in the state directory's downloads/ and work/ (none after a successful update).
fn leftovers(archive: &Path) -> Vec<String> {
    let state = PathBuf::from(format!("{}.mf-update", archive.display()));
    let mut found = Vec::new();
    for sub in ["downloads", "work"] {
        if let Ok(entries) = std::fs::read_dir(state.join(sub)) {
            found.extend(entries.map(|e| format!("{sub}/{}", e.unwrap().file_name().to_string_lossy())));
        }
    }
    if let Some(dir) = archive.parent() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".mf-tmp") {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn patch_chain_fresh_install_and_up_to_date() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    let dir = tempfile::tempdir().unwrap();
    let game = install(dir.path(), "1.0");
    let key = key_arg();
    let manifest = Fixture::manifest(&f.repo);
    let patch_sizes: u64 =
        [1usize, 2].iter().map(|&i| manifest["versions"][i]["patches"][0]["size"].as_u64().unwrap()).sum();
    let full_size = manifest["versions"][2]["full"]["size"].as_u64().unwrap();
    let manifest_len = std::fs::metadata(f.repo.join("manifest.json")).unwrap().len();

    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert_eq!(outcome["installed"]["version"], "1.0");
    assert_eq!(outcome["target"], "1.2");
    assert_eq!(route_kinds(&outcome), ["patch", "patch"], "{outcome}");
    assert_eq!(outcome["route_bytes"], patch_sizes);
    // In place, each step checks entries against the signed file tables of both its versions.
    let table_sizes: u64 = (0..3).map(|i| manifest["versions"][i]["files"]["size"].as_u64().unwrap()).sum();
    assert_eq!(
        outcome["fetched_bytes"],
        patch_sizes + table_sizes + manifest_len,
        "only the manifest, the patches and the file tables travel"
    );
    assert!(patch_sizes * 10 < full_size, "the fixture's patches are small: {patch_sizes} vs {full_size}");
    assert_eq!(outcome["changed"], true);
    assert!(outcome["fell_back"].is_null());
    assert_version(&game, "1.2", "patched in place: the published 1.2's entries");
    assert_eq!(outcome["in_place"], true);
    // Two patches' worth of changed entries, indexes and slots: a fraction of the archive.
    let written = outcome["bytes_written"].as_u64().unwrap();
    assert!(written > 0 && written * 3 < full_size, "wrote {written} of {full_size}");
    let paths = served_paths(&server);
    assert_eq!(paths.len(), 6, "{paths:?}");
    assert!(
        paths[0].ends_with("/manifest.json")
            && paths[1..].iter().all(|p| p.starts_with("/patches/") || p.starts_with("/files/")),
        "{paths:?}"
    );
    // The manifest, rewritten in place, asks caches to revalidate; patches, content-addressed, may
    // come from any cache. (File tables are fetched as small metadata, revalidated like the manifest.)
    for request in server.requests() {
        let expected = if request.uri.starts_with("/patches/") { "-" } else { "no-cache" };
        assert_eq!(request.cache_control, expected, "{}", request.uri);
    }
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));

    // Nothing to do: only the manifest is fetched.
    server.clear_log();
    let again = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert_eq!(again["changed"], false);
    assert_eq!(again["route"].as_array().unwrap().len(), 0);
    assert_eq!(served_paths(&server), ["/manifest.json"]);
    let text = mf_ok(dir.path(), &["update", "--repo", &server.url(), "--key", &key, "game.mf"]);
    assert!(text.contains("already at 1.2"), "{text}");

    // Fresh install of an older version with --to: the full download.
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "--to", "1.1", "fresh.mf"]);
    assert_eq!(outcome["installed"]["state"], "missing");
    assert_eq!(route_kinds(&outcome), ["full"]);
    assert_eq!(std::fs::read(dir.path().join("fresh.mf")).unwrap(), f.bytes("1.1"));
    // A single patch from there.
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "fresh.mf"]);
    assert_eq!(route_kinds(&outcome), ["patch"]);
    assert_version(&dir.path().join("fresh.mf"), "1.2", "");
    let err = update_fails(dir.path(), &["--repo", &server.url(), "--key", &key, "--to", "9.9", "fresh.mf"]);
    assert!(err.contains("9.9") && err.contains("1.0, 1.1, 1.2"), "{err}");
}

#[test]
fn check_fetches_only_the_manifest_and_changes_nothing() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    let dir = tempfile::tempdir().unwrap();
    let game = install(dir.path(), "1.0");
    let key = key_arg();
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "--check", "game.mf"]);
    assert_eq!(outcome["check_only"], true);
    assert_eq!(outcome["changed"], false);
    assert_eq!(route_kinds(&outcome), ["patch", "patch"]);
    assert!(outcome["route_bytes"].as_u64().unwrap() > 0);
    assert_eq!(served_paths(&server), ["/manifest.json"]);
    assert_eq!(std::fs::read(&game).unwrap(), f.bytes("1.0"));
    assert!(!dir.path().join("game.mf.mf-update").exists(), "--check writes no state");
    let text = mf_ok(dir.path(), &["update", "--repo", &server.url(), "--key", &key, "--check", "game.mf"]);
    assert!(text.contains("installed 1.0, target 1.2") && text.contains("would fetch"), "{text}");
}

#[test]
fn a_cut_connection_resumes_with_a_range_request() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    const CUT: u64 = 600 << 10;
    // The first download of the full archive is cut after 600 KiB; later connections pass.
    let proxy = FaultProxy::start(server.port, |_, path| {
        static CUT_ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if path.starts_with("/full/") && !CUT_ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Fault::Cut { after: CUT }
        } else {
            Fault::Pass
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let key = key_arg();
    let outcome = update_ok(dir.path(), &["--repo", &proxy.url(), "--key", &key, "game.mf"]);
    assert_version(&dir.path().join("game.mf"), "1.2", "");
    let full_size = Fixture::manifest(&f.repo)["versions"][2]["full"]["size"].as_u64().unwrap();
    let manifest_len = std::fs::metadata(f.repo.join("manifest.json")).unwrap().len();
    assert_eq!(outcome["fetched_bytes"], full_size + manifest_len, "the second attempt fetched only the missing bytes");
    let full_requests: Vec<_> = server.requests().into_iter().filter(|r| r.uri.starts_with("/full/")).collect();
    assert_eq!(full_requests.len(), 2, "{full_requests:?}");
    assert_eq!(full_requests[1].range, format!("bytes={CUT}-"));
    assert_eq!(full_requests[1].status, 206);
    assert_eq!(full_requests[1].body_bytes, full_size - CUT);

    // A server that ignores Range answers the resumed request with the whole file: the client starts over.
    let connections = std::sync::atomic::AtomicUsize::new(0);
    let proxy = FaultProxy::start(server.port, move |_, path| {
        if !path.starts_with("/full/") {
            return Fault::Pass;
        }
        match connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Fault::Cut { after: CUT },
            _ => Fault::IgnoreRange,
        }
    });
    let outcome = update_ok(dir.path(), &["--repo", &proxy.url(), "--key", &key, "again.mf"]);
    assert_version(&dir.path().join("again.mf"), "1.2", "");
    assert_eq!(outcome["fetched_bytes"], CUT + full_size + manifest_len, "the cut bytes, then the whole file");
    let statuses: Vec<u16> =
        server.requests().into_iter().filter(|r| r.uri.starts_with("/full/")).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 206, 200, 200], "no Range reached the server the second time");
}

#[test]
fn a_stalled_server_times_out_cleanly_and_a_later_run_resumes() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    // Each piece's first connection stalls after 1000 bytes, its retries at once.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let stall = FaultProxy::start(server.port, move |_, path| {
        if path.ends_with("manifest.json") {
            Fault::Pass
        } else if seen.lock().unwrap().insert(path.to_owned()) {
            Fault::Stall { after: 1000 }
        } else {
            Fault::Stall { after: 0 }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let game = install(dir.path(), "1.0");
    let key = key_arg();
    let started = Instant::now();
    let err = update_fails(
        dir.path(),
        &["--repo", &stall.url(), "--key", &key, "--timeout", "0.5", "--retries", "1", "game.mf"],
    );
    assert!(started.elapsed() < Duration::from_secs(20), "timeouts are honoured: {:?}", started.elapsed());
    assert!(err.contains("timeout") && err.contains("/patches/") && err.contains("after 1000 of"), "{err}");
    assert!(err.contains("full download"), "the full download was tried too: {err}");
    assert_eq!(std::fs::read(&game).unwrap(), f.bytes("1.0"), "the installed archive is untouched");

    // The server recovers (a fresh one, with a fresh log): the next run continues the partial patch.
    drop(stall);
    let server = Nginx::serve(&f.repo);
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert_eq!(route_kinds(&outcome), ["patch", "patch"]);
    assert_version(&game, "1.2", "");
    let ranges: Vec<String> = server.requests().into_iter().map(|r| r.range).filter(|r| r != "-").collect();
    assert_eq!(ranges, ["bytes=1000-"], "the stalled patch resumed at byte 1000");
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));
}

#[test]
fn a_corrupted_patch_falls_back_to_the_full_download() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let repo = f.copy_repo(dir.path());
    let manifest = Fixture::manifest(&repo);
    let patch = repo.join(manifest["versions"][2]["patches"][0]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&patch).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&patch, bytes).unwrap();
    let server = Nginx::serve(&repo);
    let game = install(dir.path(), "1.0");
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key_arg(), "game.mf"]);
    let reason = outcome["fell_back"].as_str().expect("fell back");
    assert!(reason.contains("SHA-256") && reason.contains("/patches/"), "{reason}");
    assert_eq!(route_kinds(&outcome), ["full"]);
    assert_version(&game, "1.2", "");
    assert!(served_paths(&server).iter().any(|p| p.starts_with("/full/")));

    // Corruption in transit (the repository is fine) is caught the same way.
    let server = Nginx::serve(&f.repo);
    let proxy = fault_patches(server.port, Fault::Corrupt { at: 100 });
    let game = install(dir.path(), "1.0");
    let outcome = update_ok(dir.path(), &["--repo", &proxy.url(), "--key", &key_arg(), "game.mf"]);
    assert!(outcome["fell_back"].as_str().unwrap().contains("SHA-256"), "{outcome}");
    assert_version(&game, "1.2", "");
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));
}

#[test]
fn a_missing_patch_is_not_retried_and_the_full_download_is_used() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let repo = f.copy_repo(dir.path());
    let manifest = Fixture::manifest(&repo);
    let patch_path = manifest["versions"][2]["patches"][0]["path"].as_str().unwrap().to_owned();
    std::fs::remove_file(repo.join(&patch_path)).unwrap();
    let server = Nginx::serve(&repo);
    let game = install(dir.path(), "1.0");
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key_arg(), "game.mf"]);
    let reason = outcome["fell_back"].as_str().expect("fell back");
    assert!(reason.contains("404") && reason.contains(&patch_path), "{reason}");
    assert_version(&game, "1.2", "");
    let requests = server.requests();
    let missing: Vec<_> = requests.iter().filter(|r| r.uri.ends_with(&patch_path)).collect();
    assert_eq!(missing.len(), 1, "a 404 is not retried: {requests:?}");
    assert_eq!(missing[0].status, 404);
}

#[test]
fn server_errors_are_retried_and_an_unreachable_server_is_named() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    // Every path's first request gets a 503; the retry passes.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    let proxy = FaultProxy::start(server.port, move |_, path| {
        if seen.lock().unwrap().insert(path.to_owned()) {
            Fault::Status { code: 503 }
        } else {
            Fault::Pass
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let game = install(dir.path(), "1.0");
    let key = key_arg();
    let outcome = update_ok(dir.path(), &["--repo", &proxy.url(), "--key", &key, "game.mf"]);
    assert!(outcome["fell_back"].is_null(), "{outcome}");
    assert_version(&game, "1.2", "");
    let paths = proxy.paths();
    assert_eq!(paths.len(), 12, "manifest, two patches and three file tables, each asked twice: {paths:?}");
    assert_eq!(server.requests().len(), 6, "the server saw each once");

    // Nothing listens: the error names the URL and how many attempts were made.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}/repo");
    let err = update_fails(dir.path(), &["--repo", &url, "--key", &key, "--retries", "1", "game.mf"]);
    assert!(err.contains(&format!("{url}/manifest.json")) && err.contains("2 attempts"), "{err}");
    assert_version(&game, "1.2", "");
}

#[test]
fn wrong_length_responses_are_never_used() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let repo = f.copy_repo(dir.path());
    let manifest = Fixture::manifest(&repo);
    // The first patch replaced by a longer file, the newest full archive by a shorter one.
    let patch = repo.join(manifest["versions"][1]["patches"][0]["path"].as_str().unwrap());
    let mut longer = std::fs::read(&patch).unwrap();
    longer.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&patch, longer).unwrap();
    let full = repo.join(manifest["versions"][2]["full"]["path"].as_str().unwrap());
    let full_bytes = std::fs::read(&full).unwrap();
    std::fs::write(&full, &full_bytes[..full_bytes.len() - 10]).unwrap();
    let server = Nginx::serve(&repo);
    let game = install(dir.path(), "1.0");
    let err = update_fails(dir.path(), &["--repo", &server.url(), "--key", &key_arg(), "game.mf"]);
    assert!(err.contains("wrong file, refused"), "{err}");
    assert!(err.contains("/patches/") && err.contains("/full/"), "both pieces are named: {err}");
    assert_eq!(std::fs::read(&game).unwrap(), f.bytes("1.0"), "the installed archive is untouched");
    assert!(leftovers(&game).is_empty(), "nothing of the refused pieces is kept: {:?}", leftovers(&game));

    // With the full archive restored, the update falls back to it.
    std::fs::write(&full, &full_bytes).unwrap();
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key_arg(), "game.mf"]);
    assert!(outcome["fell_back"].as_str().unwrap().contains("wrong file"), "{outcome}");
    assert_version(&game, "1.2", "");

    // A body of unannounced length that runs past the manifest's size: cut off and refused.
    let server = Nginx::serve(&f.repo);
    let proxy = fault_patches(server.port, Fault::Append { bytes: 100 });
    let game = install(dir.path(), "1.0");
    let outcome = update_ok(dir.path(), &["--repo", &proxy.url(), "--key", &key_arg(), "game.mf"]);
    let reason = outcome["fell_back"].as_str().expect("fell back");
    assert!(reason.contains("longer than the manifest's"), "{reason}");
    assert_version(&game, "1.2", "");
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));
}

#[test]
fn bad_signatures_wrong_keys_and_unsigned_repositories_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = f.copy_repo(d);
    let game = install(d, "1.0");
    let key = key_arg();
    let server = Nginx::serve(&repo);

    // An altered manifest: a size changed without re-signing.
    let original = std::fs::read_to_string(repo.join("manifest.json")).unwrap();
    let size = Fixture::manifest(&repo)["versions"][2]["full"]["size"].as_u64().unwrap();
    let tampered = original.replacen(&format!("\"size\": {size}"), &format!("\"size\": {}", size + 1), 1);
    assert_ne!(tampered, original);
    std::fs::write(repo.join("manifest.json"), &tampered).unwrap();
    let err = update_fails(d, &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert!(err.contains("does not verify") && err.contains("manifest.json"), "{err}");
    std::fs::write(repo.join("manifest.json"), &original).unwrap();

    // The wrong key.
    mf_ok(d, &["keygen", "other"]);
    let err = update_fails(d, &["--repo", &server.url(), "--key", "other.pub", "game.mf"]);
    assert!(err.contains("no signature by the trusted key"), "{err}");

    // An unsigned repository: refused with a key, a usage error without --key or --allow-unsigned.
    let unsigned = d.join("unsigned");
    mf_ok(d, &["release", "add", "unsigned", "1.0", f.archive("1.0").to_str().unwrap()]);
    mf_ok(d, &["release", "add", "unsigned", "1.2", f.archive("1.2").to_str().unwrap()]);
    let err = update_fails(d, &["--repo", unsigned.to_str().unwrap(), "--key", &key, "game.mf"]);
    assert!(err.contains("not signed"), "{err}");
    let usage = common::mf_fails(d, &["update", "--repo", unsigned.to_str().unwrap(), "game.mf"], 2);
    assert!(usage.contains("--allow-unsigned"), "{usage}");
    assert_eq!(std::fs::read(&game).unwrap(), f.bytes("1.0"), "nothing was changed by refused updates");
    assert!(server.requests().iter().all(|r| r.uri == "/manifest.json"), "nothing but the manifest was fetched");

    let outcome = update_ok(d, &["--repo", unsigned.to_str().unwrap(), "--allow-unsigned", "game.mf"]);
    assert_eq!(outcome["changed"], true);
    assert_version(&game, "1.2", "");
}

#[test]
fn expired_and_rolled_back_manifests_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = f.copy_repo(d);
    let server = Nginx::serve(&repo);
    let key = key_arg();
    let secret = f.secret.to_str().unwrap();
    let game = install(d, "1.0");

    // The client sees manifest version 3; the repository then publishes 1.3 (manifest version 4).
    let old_manifest = std::fs::read(repo.join("manifest.json")).unwrap();
    update_ok(d, &["--repo", &server.url(), "--key", &key, "--to", "1.1", "game.mf"]);
    let tree = d.join("tree");
    write_tree(&tree, &[("x.bin", &noise(1000, 9))]);
    mf_ok(d, &["release", "add", repo.to_str().unwrap(), "1.3", tree.to_str().unwrap(), "--sign", secret]);
    let new_manifest = std::fs::read(repo.join("manifest.json")).unwrap();
    // A --check sees version 4 but records nothing: version 3 is still acceptable afterwards.
    update_ok(d, &["--repo", &server.url(), "--key", &key, "--check", "game.mf"]);
    std::fs::write(repo.join("manifest.json"), &old_manifest).unwrap();
    update_ok(d, &["--repo", &server.url(), "--key", &key, "--check", "game.mf"]);
    std::fs::write(repo.join("manifest.json"), &new_manifest).unwrap();
    update_ok(d, &["--repo", &server.url(), "--key", &key, "--to", "1.2", "game.mf"]);
    assert_version(&game, "1.2", "");

    // A mirror serving the older (validly signed) manifest: a rollback.
    std::fs::write(repo.join("manifest.json"), &old_manifest).unwrap();
    let err = update_fails(d, &["--repo", &server.url(), "--key", &key, "--to", "1.1", "game.mf"]);
    assert!(err.contains("rollback refused") && err.contains("manifest version 3"), "{err}");
    assert_version(&game, "1.2", "");
    std::fs::write(repo.join("manifest.json"), &new_manifest).unwrap();

    // A manifest that expired (re-signed to expire in one second).
    mf_ok(d, &["release", "resign", repo.to_str().unwrap(), "--sign", secret, "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let err = update_fails(d, &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert!(err.contains("expired"), "{err}");
    assert_version(&game, "1.2", "");
}

#[test]
fn an_unknown_install_is_reported_and_repaired_only_when_asked() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("game.mf");
    let mut modified = f.bytes("1.1");
    modified[5000] ^= 1;
    std::fs::write(&game, &modified).unwrap();
    let key = key_arg();
    let err = update_fails(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert!(err.contains("matches no version") && err.contains("--repair"), "{err}");
    assert_eq!(std::fs::read(&game).unwrap(), modified, "left untouched");
    let check = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "--check", "game.mf"]);
    assert_eq!(check["installed"]["state"], "unknown");
    assert_eq!(check["needs_repair"], true);
    assert_eq!(route_kinds(&check), ["full"]);

    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "--repair", "game.mf"]);
    assert_eq!(outcome["changed"], true);
    assert_version(&game, "1.2", "");
}

/// A tiny deterministic generator for kill times.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_at_random_points_leaves_the_old_or_the_new_archive() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    // Slow enough that kills land in downloads, applies and the swap alike.
    let proxy = FaultProxy::start(server.port, |_, _| Fault::Throttle { bytes_per_sec: 200 << 10 });
    let dir = tempfile::tempdir().unwrap();
    let game = install(dir.path(), "1.0");
    let old = f.bytes("1.0");
    let key = key_arg();
    let args = ["update", "--repo", &proxy.url(), "--key", &key, "game.mf"];
    let spawn = || spawn_quiet(dir.path(), &args);
    // Measure a whole run, then start over from 1.0 with no state.
    let started = Instant::now();
    assert!(spawn().wait().unwrap().success());
    let full_run = started.elapsed();
    assert_version(&game, "1.2", "");
    std::fs::remove_dir_all(dir.path().join("game.mf.mf-update")).unwrap();
    std::fs::write(&game, &old).unwrap();

    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill test: a full run takes {full_run:?}; seed {seed}");
    // Patched in place, one commit per patch: a kill leaves 1.0, 1.1 (between the patches) or 1.2,
    // each complete.
    let mut outcomes = [0usize; 3];
    for round in 0..14 {
        let at = full_run.mul_f64((xorshift(&mut seed) % 1000) as f64 / 1000.0);
        let mut child = spawn();
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let state = match version_of(&game) {
            Some("1.0") => 0,
            Some("1.1") => 1,
            Some("1.2") => 2,
            _ => panic!("round {round}: killed after {at:?}, the archive is no complete version"),
        };
        outcomes[state] += 1;
        if state == 2 {
            // Start over from the old version, keeping whatever state the killed run left behind.
            std::fs::write(&game, &old).unwrap();
        }
    }
    eprintln!("kill test: {} rounds left 1.0, {} left 1.1, {} left 1.2", outcomes[0], outcomes[1], outcomes[2]);
    // The next run completes from whatever the killed runs left.
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert_eq!(outcome["changed"], true);
    assert_version(&game, "1.2", "");
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));
}

/// The entries of an archive in record order: path, mode, mtime, content (`None`: no archive).
/// One entry as compared: path, mode, mtime, content.
type EntryView = (String, u32, Option<mf_format::Mtime>, Vec<u8>);

fn entries_of(path: &Path) -> Option<Vec<EntryView>> {
    let archive = mf_format::Archive::open(path).ok()?;
    archive
        .entries()
        .map(|e| Some((e.path().to_owned(), e.mode(), e.mtime(), archive.read(&e).ok()?.into_owned())))
        .collect()
}

/// Which fixture version `path` holds, by content (an archive patched in place is not the published
/// file byte for byte).
fn version_of(path: &Path) -> Option<&'static str> {
    let entries = entries_of(path)?;
    VERSIONS.into_iter().find(|v| entries_of(fixture().archive(v)).as_ref() == Some(&entries))
}

fn assert_version(path: &Path, version: &str, why: &str) {
    assert_eq!(version_of(path), Some(VERSIONS.into_iter().find(|v| *v == version).unwrap()), "{why}");
}

#[test]
fn kill_9_during_a_fresh_install_leaves_no_archive_or_the_whole_one() {
    let f = fixture();
    let server = Nginx::serve(&f.repo);
    let proxy = FaultProxy::start(server.port, |_, _| Fault::Throttle { bytes_per_sec: 3 << 20 });
    let dir = tempfile::tempdir().unwrap();
    let game = dir.path().join("game.mf");
    let new = f.bytes("1.2");
    let key = key_arg();
    let args = ["update", "--repo", &proxy.url(), "--key", &key, "game.mf"];
    let spawn = || spawn_quiet(dir.path(), &args);
    let started = Instant::now();
    assert!(spawn().wait().unwrap().success());
    let full_run = started.elapsed();
    assert_eq!(std::fs::read(&game).unwrap(), new);
    let reset = || {
        std::fs::remove_file(&game).unwrap();
        std::fs::remove_dir_all(dir.path().join("game.mf.mf-update")).unwrap();
    };
    reset();

    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("fresh-install kill test: a full run takes {full_run:?}; seed {seed}");
    let full_sha = Fixture::manifest(&f.repo)["versions"][2]["full"]["sha256"].as_str().unwrap().to_owned();
    let part = dir.path().join(format!("game.mf.mf-update/downloads/{full_sha}.part"));
    for round in 0..8 {
        // Kill times spread over the first 90 % of a run, so most land inside the download.
        let at = full_run.mul_f64((xorshift(&mut seed) % 900) as f64 / 1000.0);
        let mut child = spawn();
        std::thread::sleep(at);
        let _ = child.kill();
        child.wait().unwrap();
        match std::fs::read(&game) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(bytes) if bytes == new => reset(),
            Ok(bytes) => panic!("round {round}: killed after {at:?}, a partial archive of {} bytes", bytes.len()),
            Err(e) => panic!("{e}"),
        }
    }
    // Make sure the last kill lands inside the download (the download alone takes most of a run).
    let partial_size = || std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    for attempt in 0..6 {
        if game.exists() {
            assert_eq!(std::fs::read(&game).unwrap(), new);
            reset();
        }
        if (1..new.len() as u64).contains(&partial_size()) {
            break;
        }
        let mut child = spawn();
        std::thread::sleep(full_run.mul_f64(0.2 + 0.1 * attempt as f64));
        let _ = child.kill();
        child.wait().unwrap();
    }
    // The next run completes, resuming the partial download instead of fetching it again.
    let partial = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(partial > 0 && partial < new.len() as u64, "a kill left a partial download ({partial} bytes)");
    server.clear_log();
    let outcome = update_ok(dir.path(), &["--repo", &server.url(), "--key", &key, "game.mf"]);
    assert_eq!(std::fs::read(&game).unwrap(), new);
    let ranges: Vec<String> = server.requests().into_iter().map(|r| r.range).filter(|r| r != "-").collect();
    assert_eq!(ranges, [format!("bytes={partial}-")]);
    let manifest_len = std::fs::metadata(f.repo.join("manifest.json")).unwrap().len();
    assert_eq!(outcome["fetched_bytes"], new.len() as u64 - partial + manifest_len);
    assert!(leftovers(&game).is_empty(), "{:?}", leftovers(&game));
}

/// A proxy in front of nginx on `port` that applies `fault` to every patch download and passes the rest.
fn fault_patches(port: u16, fault: Fault) -> FaultProxy {
    FaultProxy::start(port, move |_, path| if path.starts_with("/patches/") { fault } else { Fault::Pass })
}

/// A state folder someone else can write: a symlink planted as the state folder, as `downloads/` or
/// `work/`, or as a `.part` file is refused with a clear error, and what it points to is never
/// emptied, filled or appended to.
#[test]
fn symlinks_planted_in_the_state_folder_are_refused_and_never_followed() {
    use std::os::unix::fs::symlink;
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path();
    let repo = fixture().repo.to_str().unwrap().to_owned();
    let key = key_arg();
    let args = ["--repo", repo.as_str(), "--key", key.as_str(), "game.mf"];
    let victim = d.join("victim");
    let state = d.join("game.mf.mf-update");
    let precious = || vec![("keep.txt".to_owned(), b"precious".to_vec())];
    let reset = || {
        let _ = std::fs::remove_dir_all(&state); // a symlink itself is removed, not followed
        let _ = std::fs::remove_dir_all(&victim);
        write_tree(&victim, &[("keep.txt", b"precious")]);
        install(d, "1.0");
    };
    for planted in ["the state folder", "downloads", "work"] {
        reset();
        if planted == "the state folder" {
            symlink(&victim, &state).unwrap();
        } else {
            std::fs::create_dir_all(&state).unwrap();
            symlink(&victim, state.join(planted)).unwrap();
        }
        let err = update_fails(d, &args);
        assert!(err.contains("symbolic link"), "{planted}: {err}");
        assert_eq!(common::read_tree(&victim), precious(), "{planted}: the link's target changed");
        assert_eq!(std::fs::read(d.join("game.mf")).unwrap(), fixture().bytes("1.0"), "{planted}");
    }

    // A `.part` of the route's first piece that points at someone's file: never appended to.
    reset();
    std::fs::create_dir_all(state.join("downloads")).unwrap();
    let first_piece = first_patch_from_1_0();
    symlink(victim.join("keep.txt"), state.join("downloads").join(format!("{first_piece}.part"))).unwrap();
    let err = update_fails(d, &args);
    assert!(err.contains("symbolic link"), ".part: {err}");
    assert_eq!(common::read_tree(&victim), precious(), ".part: the link's target changed");

    // With the plants gone, the same state folder updates normally.
    reset();
    update_ok(d, &args);
    assert_version(&d.join("game.mf"), "1.2", "");
}

/// The SHA-256 of the second version's first patch (from 1.0): the first piece of the route from 1.0.
fn first_patch_from_1_0() -> String {
    let manifest = Fixture::manifest(&fixture().repo);
    manifest["versions"][1]["patches"][0]["sha256"].as_str().unwrap().to_owned()
}

fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success());
}

/// The files the updater keeps in the state folder (the lock, the trust record, downloads) are opened
/// relative to the state folder's handle, without following a link and only as regular files: a
/// dangling link planted as the lock is not created through, a FIFO planted as the trust record or a
/// download does not block the update, and the archive stays as it was.
#[test]
fn state_files_planted_as_links_or_fifos_are_refused_without_writing_or_blocking() {
    use std::os::unix::fs::symlink;
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path();
    let repo = fixture().repo.to_str().unwrap().to_owned();
    let key = key_arg();
    let args = ["--repo", repo.as_str(), "--key", key.as_str(), "game.mf"];
    let victim = d.join("victim");
    let state = d.join("game.mf.mf-update");
    let first_piece = first_patch_from_1_0();
    let plants: [(&str, &str); 5] = [
        ("lock", "dangling link"),
        ("trusted.json", "dangling link"),
        ("trusted.json", "fifo"),
        (&first_piece, "fifo"),
        (&format!("{first_piece}.part"), "fifo"),
    ];
    for (name, kind) in plants {
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(&victim);
        write_tree(&victim, &[("keep.txt", b"precious")]);
        install(d, "1.0");
        let at = if name.starts_with(&first_piece) { state.join("downloads") } else { state.clone() };
        std::fs::create_dir_all(&at).unwrap();
        match kind {
            "fifo" => make_fifo(&at.join(name)),
            _ => symlink(victim.join("created"), at.join(name)).unwrap(),
        }
        let err = update_fails(d, &args);
        let expected = if kind == "fifo" { "FIFO" } else { "symbolic link" };
        assert!(err.contains(expected) && err.contains(name), "{name} as a {kind}: {err}");
        assert_eq!(
            common::read_tree(&victim),
            vec![("keep.txt".to_owned(), b"precious".to_vec())],
            "{name} as a {kind}: something was written outside the state folder"
        );
        assert_eq!(std::fs::read(d.join("game.mf")).unwrap(), fixture().bytes("1.0"), "{name} as a {kind}");
    }
}
