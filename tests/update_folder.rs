//! End-to-end tests of `mf update --dir`: install folders updated from a signed repository served by a
//! real nginx on loopback, including kills (SIGKILL) at random points of the update.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::{mf_fails, mf_ok, mf_with_deadline};

/// path → (content, mode) of every file under a folder, except the updater's state directory.
type Tree = BTreeMap<String, (Vec<u8>, u32)>;

fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let item = item.unwrap();
            let rel = item.path().strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            if rel == ".mf-update" {
                continue;
            }
            let meta = std::fs::symlink_metadata(item.path()).unwrap();
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                tree.insert(rel, (std::fs::read(item.path()).unwrap(), meta.permissions().mode() & 0o7777));
            }
        }
    }
    tree
}

fn write(root: &Path, tree: &Tree) {
    for (path, (content, mode)) in tree {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

fn text(lines: usize, tag: &str) -> Vec<u8> {
    (0..lines).flat_map(|i| format!("{tag}: line {i} of a config file\n").into_bytes()).collect()
}

/// Small deterministic generator (no dependency needed for test data and kill times).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Three releases: edits, a mode change, a rename, deletions (one emptying a directory) and additions.
fn small_releases() -> Vec<Tree> {
    let big = common::noise(300_000, 7);
    let mut big2 = big.clone();
    big2[5000..5100].fill(0);
    let entry = |p: &str, c: Vec<u8>, m: u32| (p.to_owned(), (c, m));
    let v1: Tree = [
        entry("game.cfg", text(200, "v1"), 0o644),
        entry("data/level.bin", big.clone(), 0o644),
        entry("bin/run", b"#!/bin/sh\necho 1\n".to_vec(), 0o644),
        entry("docs/old.txt", b"removed in 2".to_vec(), 0o644),
        entry("music/theme.ogg", common::noise(40_000, 3), 0o644),
    ]
    .into_iter()
    .collect();
    let v2: Tree = [
        entry("game.cfg", [text(200, "v1"), b"extra = 1\n".to_vec()].concat(), 0o644),
        entry("data/level.bin", big2.clone(), 0o644),
        entry("bin/run", b"#!/bin/sh\necho 1\n".to_vec(), 0o755),
        entry("audio/theme.ogg", common::noise(40_000, 3), 0o644),
        entry("data/new.bin", common::noise(10_000, 9), 0o644),
    ]
    .into_iter()
    .collect();
    let mut v3 = v2.clone();
    v3.insert("game.cfg".into(), ([text(200, "v3"), b"extra = 1\n".to_vec()].concat(), 0o644));
    v3.remove("data/new.bin");
    v3.insert("README".into(), (b"version 3".to_vec(), 0o644));
    vec![v1, v2, v3]
}

fn user_files() -> Tree {
    [
        ("settings.ini".to_owned(), (b"volume=11\n".to_vec(), 0o600)),
        ("data/my-save.dat".to_owned(), (b"save game".to_vec(), 0o644)),
    ]
    .into_iter()
    .collect()
}

fn with_user(tree: &Tree) -> Tree {
    let mut all = tree.clone();
    all.extend(user_files());
    all
}

/// A signed repository with `releases` published as versions 1, 2, ... from folders.
fn publish(d: &Path, releases: &[Tree]) {
    mf_ok(d, &["keygen", "release"]);
    for (i, tree) in releases.iter().enumerate() {
        let src = d.join(format!("src{}", i + 1));
        write(&src, tree);
        let version = format!("{}", i + 1);
        mf_ok(d, &["release", "add", "repo", &version, src.to_str().unwrap(), "--sign", "release.key"]);
    }
}

/// A temp dir holding a repository of [`small_releases`] and `game/` installed at version 1 from it.
fn installed_at_version_1() -> (tempfile::TempDir, Vec<Tree>) {
    let temp = tempfile::tempdir().unwrap();
    let releases = small_releases();
    publish(temp.path(), &releases);
    update(temp.path(), "repo", "game", &["--to", "1"]);
    (temp, releases)
}

fn update(d: &Path, url: &str, dir: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["update", "--repo", url, "--key", "release.pub", "--dir", dir, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&mf_ok(d, &args)).unwrap()
}

fn assert_no_update_leftovers(dir: &Path) {
    let state = dir.join(".mf-update");
    for name in ["staging", "backup", "journal.json"] {
        assert!(!state.join(name).exists(), "{name} left in {}", state.display());
    }
}

#[test]
fn folders_install_fresh_and_update_by_patches_leaving_user_files_alone() {
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path();
    let releases = small_releases();
    publish(d, &releases);
    let nginx = Nginx::serve(&d.join("repo"));
    let url = nginx.url();

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("repo/manifest.json")).unwrap()).unwrap();
    let table_uri = |i: usize| format!("/{}", manifest["signed"]["versions"][i]["files"]["path"].as_str().unwrap());
    let tables_fetched = |nginx: &Nginx| -> Vec<String> {
        nginx.requests().into_iter().map(|r| r.uri).filter(|uri| uri.starts_with("/files/")).collect()
    };

    // Fresh install of version 1 into a folder that does not exist yet: only its own file table.
    let out = update(d, &url, "game", &["--to", "1"]);
    assert_eq!(out["installed"]["state"], "fresh");
    assert_eq!(tables_fetched(&nginx), [table_uri(0)]);
    assert_eq!(out["route"][0]["kind"], "full");
    assert_eq!(snapshot(&d.join("game")), releases[0]);
    assert_no_update_leftovers(&d.join("game"));

    write(&d.join("game"), &user_files());
    let check = update(d, &url, "game", &["--check"]);
    assert_eq!(check["installed"]["version"], "1");
    assert_eq!(check["target"], "3");
    let route: Vec<&str> = check["route"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert!(route.iter().all(|k| *k == "patch"), "{check}");
    assert_eq!(snapshot(&d.join("game")), with_user(&releases[0]), "--check changes nothing");

    nginx.clear_log();
    let out = update(d, &url, "game", &[]);
    assert_eq!(out["changed"], true);
    assert!(out["fell_back"].is_null(), "{out}");
    assert_eq!(snapshot(&d.join("game")), with_user(&releases[2]));
    // `docs/` held only a file version 2 deleted, so it went; `data/` keeps the user's save.
    assert!(!d.join("game/docs").exists());
    assert_no_update_leftovers(&d.join("game"));
    let requests = nginx.requests();
    assert!(requests.iter().any(|r| r.uri.contains("/patches/")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.uri.contains("/full/")), "a patch route fetched a full archive: {requests:?}");
    // Version 1's table was kept from the install and identified the folder at once: only the tables
    // of versions the route produces travel.
    let fetched = tables_fetched(&nginx);
    assert!(!fetched.contains(&table_uri(0)) && fetched.contains(&table_uri(2)), "{fetched:?}");
    assert_eq!(fetched.len(), out["route"].as_array().unwrap().len(), "{fetched:?}");
    let full_size: u64 =
        std::fs::read_dir(d.join("repo/full")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).max().unwrap();
    assert!(out["fetched_bytes"].as_u64().unwrap() < full_size, "{out}");

    nginx.clear_log();
    let again = update(d, &url, "game", &[]);
    assert_eq!(again["changed"], false);
    assert!(tables_fetched(&nginx).is_empty(), "an up-to-date folder needs only the manifest");
    assert!(again["route"].as_array().unwrap().is_empty());
    assert_eq!(snapshot(&d.join("game")), with_user(&releases[2]));
}

#[test]
fn a_modified_install_is_refused_then_repaired_and_a_bad_patch_falls_back() {
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path();
    let releases = small_releases();
    publish(d, &releases);
    let nginx = Nginx::serve(&d.join("repo"));
    let url = nginx.url();

    let game = d.join("game");
    write(&game, &with_user(&releases[0]));
    std::fs::write(game.join("game.cfg"), b"edited by hand\n").unwrap();
    let before = snapshot(&game);
    let check = update(d, &url, "game", &["--check"]);
    assert_eq!(check["installed"]["state"], "unknown");
    assert_eq!(check["installed"]["closest"], "1");
    assert_eq!(check["installed"]["differences"][0]["path"], "game.cfg");
    assert_eq!(check["needs_repair"], true);
    let err = mf_fails(d, &["update", "--repo", &url, "--key", "release.pub", "--dir", "game"], 1);
    assert!(err.contains("game.cfg") && err.contains("--repair"), "{err}");
    assert_eq!(snapshot(&game), before, "a refused update changes nothing");

    let out = update(d, &url, "game", &["--repair"]);
    assert_eq!(out["route"][0]["kind"], "full");
    assert_eq!(snapshot(&game), with_user(&releases[2]));

    // A damaged patch in the repository: the patch route fails its hash check, the full archive is used.
    let game2 = d.join("game2");
    write(&game2, &with_user(&releases[1]));
    for patch in std::fs::read_dir(d.join("repo/patches")).unwrap() {
        let path = patch.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let out = update(d, &url, "game2", &[]);
    assert!(out["fell_back"].as_str().is_some_and(|r| !r.is_empty()), "{out}");
    assert_eq!(out["route"][0]["kind"], "full");
    assert_eq!(snapshot(&game2), with_user(&releases[2]));
    assert_no_update_leftovers(&game2);

    // A user's directory where version 3 puts a file: the switch stops there and rolls back what it had
    // done (the deletion of data/new.bin comes first).
    let game3 = d.join("game3");
    write(&game3, &with_user(&releases[1]));
    write(&game3, &[("README/notes.txt".to_owned(), (b"mine".to_vec(), 0o644))].into_iter().collect());
    let before = snapshot(&game3);
    let err = mf_fails(d, &["update", "--repo", &url, "--key", "release.pub", "--dir", "game3"], 1);
    assert!(err.contains("README") && err.contains("directory"), "{err}");
    assert_eq!(snapshot(&game3), before, "the failed switch was rolled back");
    assert_no_update_leftovers(&game3);
}

/// Many files, so that staging and the switch take long enough for kills to land inside them.
fn many_file_releases() -> Vec<Tree> {
    let mut v1 = Tree::new();
    for i in 0..800 {
        let content = format!("asset {i}\n").repeat(20 + i % 50).into_bytes();
        v1.insert(format!("assets/d{}/f{i}.txt", i % 30), (content, 0o644));
    }
    v1.insert("bin/tool".into(), (b"#!/bin/sh\n".to_vec(), 0o755));
    let mut v2 = Tree::new();
    for (i, (path, (content, mode))) in v1.iter().enumerate() {
        match i % 4 {
            0 => {} // deleted
            1 => {
                let mut edited = content.clone();
                edited.extend_from_slice(b"edited in version 2\n");
                v2.insert(path.clone(), (edited, *mode));
            }
            2 => {
                v2.insert(format!("moved/{path}"), (content.clone(), *mode));
            }
            _ => {
                v2.insert(path.clone(), (content.clone(), *mode));
            }
        }
    }
    for i in 0..200 {
        v2.insert(format!("new/n{}/g{i}.txt", i % 10), (format!("new {i}\n").repeat(30).into_bytes(), 0o644));
    }
    vec![v1, v2]
}

#[test]
fn killing_an_update_at_random_points_never_breaks_the_folder() {
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path();
    let releases = many_file_releases();
    publish(d, &releases);
    let nginx = Nginx::serve(&d.join("repo"));
    let url = nginx.url();
    let start_tree = with_user(&releases[0]);
    let target_tree = with_user(&releases[1]);
    let args = |dir: &str| -> Vec<String> {
        ["update", "--repo", &url, "--key", "release.pub", "--dir", dir, "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };

    // An uninterrupted run sets the time scale.
    write(&d.join("ref"), &start_tree);
    let begun = Instant::now();
    mf_ok(d, &args("ref").iter().map(String::as_str).collect::<Vec<_>>());
    let full_run = begun.elapsed();
    assert_eq!(snapshot(&d.join("ref")), target_tree);

    let seed = 0x5eed_f01d_u64;
    let mut rng = Lcg(seed);
    let mut killed_in_switch = 0;
    let mut killed = 0;
    for iteration in 0..16 {
        let dir = format!("game{iteration}");
        write(&d.join(&dir), &start_tree);
        let arguments = args(&dir);
        let mut child = common::spawn_quiet(d, &arguments.iter().map(String::as_str).collect::<Vec<_>>());
        let journal = d.join(&dir).join(".mf-update/journal.json");
        let kill_at = if iteration % 2 == 0 {
            // Anywhere in the run.
            Duration::from_micros(rng.next() % (full_run.as_micros() as u64).max(1))
        } else {
            // Inside the switch: shortly after the journal appears.
            Duration::from_micros(rng.next() % 5_000)
        };
        let spawned = Instant::now();
        let mut journal_seen = None;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if journal_seen.is_none() && journal.exists() {
                journal_seen = Some(Instant::now());
            }
            let due = if iteration % 2 == 0 {
                spawned.elapsed() >= kill_at
            } else {
                journal_seen.is_some_and(|t| t.elapsed() >= kill_at)
            };
            if due {
                child.kill().unwrap(); // SIGKILL
                killed += 1;
                if journal.exists() {
                    killed_in_switch += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        child.wait().unwrap();

        // The folder holds only start and target files at their paths, never anything else.
        let interrupted = snapshot(&d.join(&dir));
        for (path, file) in &interrupted {
            assert!(
                start_tree.get(path) == Some(file) || target_tree.get(path) == Some(file),
                "seed {seed:#x} iteration {iteration}: {path} is neither version's"
            );
        }
        let out: serde_json::Value =
            serde_json::from_str(&mf_ok(d, &args(&dir).iter().map(String::as_str).collect::<Vec<_>>())).unwrap();
        assert_eq!(snapshot(&d.join(&dir)), target_tree, "seed {seed:#x} iteration {iteration}: {out}");
        assert_no_update_leftovers(&d.join(&dir));
        std::fs::remove_dir_all(d.join(&dir)).unwrap();
    }
    eprintln!("uninterrupted run {full_run:?}; killed {killed} of 16 runs, {killed_in_switch} during the switch");
    assert!(killed >= 8, "only {killed} runs were killed before they finished");
    assert!(killed_in_switch >= 4, "only {killed_in_switch} kills landed during the switch");
}

/// A journal is input like any other: forged ones (paths leaving the folder, staged files from
/// elsewhere, operations the signed file tables do not allow) are refused and nothing changes.
#[test]
fn a_forged_journal_is_refused_and_the_folder_stays_as_it_is() {
    let (temp, releases) = installed_at_version_1();
    let d = temp.path();
    let game = d.join("game");
    write(&game, &user_files());
    let before = snapshot(&game);
    std::fs::write(d.join("victim.txt"), b"not the updater's").unwrap();
    std::fs::write(d.join("secret"), b"placed by someone else").unwrap();
    let state = game.join(".mf-update");
    std::fs::create_dir_all(state.join("staging")).unwrap();
    let victim = d.join("victim.txt").to_str().unwrap().to_owned();

    let forged = [
        ("a `..` deletion", serde_json::json!([{ "op": "delete", "path": "../victim.txt" }])),
        ("an absolute deletion", serde_json::json!([{ "op": "delete", "path": victim }])),
        ("a `..` replacement", serde_json::json!([{ "op": "replace", "path": "../outside.txt", "staged": "s0" }])),
        (
            "a staged file from outside staging",
            serde_json::json!([{ "op": "replace", "path": "game.cfg", "staged": "../../../secret" }]),
        ),
        ("deleting a user's file", serde_json::json!([{ "op": "delete", "path": "settings.ini" }])),
        ("deleting a file version 2 keeps", serde_json::json!([{ "op": "delete", "path": "data/level.bin" }])),
        (
            "replacing a file version 2 drops",
            serde_json::json!([{ "op": "replace", "path": "docs/old.txt", "staged": "s0" }]),
        ),
    ];
    for (what, operations) in forged {
        std::fs::write(state.join("staging/s0"), b"staged by someone else").unwrap();
        let journal = mf_release::testing::journal_json(Some("1"), "2", operations, &[]);
        std::fs::write(state.join("journal.json"), journal).unwrap();
        let err = mf_fails(d, &["update", "--repo", "repo", "--key", "release.pub", "--dir", "game"], 1);
        assert!(err.contains("journal.json") && err.contains("refused"), "{what}: {err}");
        assert_eq!(snapshot(&game), before, "{what}: the folder changed");
        assert_eq!(std::fs::read(d.join("victim.txt")).unwrap(), b"not the updater's", "{what}");
        assert_eq!(std::fs::read(d.join("secret")).unwrap(), b"placed by someone else", "{what}");
        assert!(!d.join("outside.txt").exists(), "{what}: wrote outside the folder");
        assert!(state.join("journal.json").exists(), "{what}: the refused journal stays for inspection");
    }

    // The journal the updater itself writes still finishes: remove the forgery and update for real.
    std::fs::remove_file(state.join("journal.json")).unwrap();
    update(d, "repo", "game", &[]);
    assert_eq!(snapshot(&game), with_user(&releases[2]));
}

/// The updater's own folders inside `.mf-update/` are local state someone else may have planted: a
/// `backup/` that is a symbolic link used to receive the folder's old files (and `staging/` or
/// `downloads/` the same way). Such a state folder is refused before anything changes.
#[test]
fn symlinks_planted_in_the_folder_state_are_refused_and_never_followed() {
    use std::os::unix::fs::symlink;
    let (temp, releases) = installed_at_version_1();
    let d = temp.path();
    let game = d.join("game");
    let before = snapshot(&game);
    let victim = d.join("victim");
    for planted in ["backup", "staging", "downloads"] {
        let _ = std::fs::remove_dir_all(&victim);
        write(&victim, &user_files());
        let link = game.join(".mf-update").join(planted);
        let _ = std::fs::remove_dir_all(&link);
        symlink(&victim, &link).unwrap();
        let err = mf_fails(d, &["update", "--repo", "repo", "--key", "release.pub", "--dir", "game"], 1);
        assert!(err.contains("symbolic link"), "{planted}: {err}");
        assert_eq!(snapshot(&victim), user_files(), "{planted}: the link's target changed");
        assert_eq!(snapshot(&game), before, "{planted}: the folder changed");
        std::fs::remove_file(&link).unwrap();
    }
    update(d, "repo", "game", &[]);
    assert_eq!(snapshot(&game), releases[2]);
}

/// The files folder mode keeps in `.mf-update/` (the installed-version hint, cached file tables, the
/// journal) are read through the state folder's handle, only as regular files of bounded size: a FIFO
/// planted as one of them is refused at once (reading it used to block forever), a link as one is
/// never followed, and the folder is left as it was.
#[test]
fn state_files_planted_as_fifos_or_links_are_refused_without_blocking() {
    use std::os::unix::fs::symlink;
    let (temp, releases) = installed_at_version_1();
    let d = temp.path();
    let game = d.join("game");
    let before = snapshot(&game);
    let state = game.join(".mf-update");
    let cached_table = std::fs::read_dir(state.join("tables")).unwrap().next().unwrap().unwrap().file_name();
    let cached_table = format!("tables/{}", cached_table.to_string_lossy());
    let args = ["update", "--repo", "repo", "--key", "release.pub", "--dir", "game"];
    for (name, kind) in [
        ("installed.json", "fifo"),
        (cached_table.as_str(), "fifo"),
        ("journal.json", "fifo"),
        ("installed.json", "link"),
        (cached_table.as_str(), "link"),
    ] {
        let planted = state.join(name);
        let saved = std::fs::read(&planted).ok();
        let _ = std::fs::remove_file(&planted);
        if kind == "fifo" {
            let status = std::process::Command::new("mkfifo").arg(&planted).status().unwrap();
            assert!(status.success());
        } else {
            symlink("/dev/zero", &planted).unwrap();
        }
        let out = mf_with_deadline(d, &args, 60);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name} as a {kind}: {err}");
        let expected = if kind == "fifo" { "FIFO" } else { "symbolic link" };
        assert!(err.contains(expected) && err.contains(name), "{name} as a {kind}: {err}");
        assert_eq!(snapshot(&game), before, "{name} as a {kind}: the folder changed");
        std::fs::remove_file(&planted).unwrap();
        if let Some(bytes) = saved {
            std::fs::write(&planted, bytes).unwrap();
        }
    }
    update(d, "repo", "game", &[]);
    assert_eq!(snapshot(&game), releases[2]);
}
