//! Folder mode against local patches and archives made with mf-format and mf-diff.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mf_format::Archive;

use super::journal::{CrashPoints, Journal, JournalError};
use super::*;
use crate::hash::sha256_hex;
use crate::manifest::FileEntry;

/// A release: path → (content, mode).
/// Crash injection: counts the steps on disk of the switch, recovery and rollback, and stops dead
/// (no rollback) at step `stop_at`, as a kill would.
#[derive(Debug, Default)]
struct Faults {
    stop_at: Option<usize>,
    steps: usize,
    crashed: bool,
}

impl CrashPoints for Faults {
    fn step(&mut self) -> Result<()> {
        self.steps += 1;
        if self.stop_at == Some(self.steps) {
            self.crashed = true;
            return Err(Error::Internal(format!("simulated crash at step {}", self.steps)));
        }
        Ok(())
    }

    fn crashed(&self) -> bool {
        self.crashed
    }
}

type Files = BTreeMap<String, (Vec<u8>, u32)>;

fn text(lines: u32, tag: &str) -> Vec<u8> {
    (0..lines).flat_map(|i| format!("{tag} line {i} of the release notes\n").into_bytes()).collect()
}

fn release(list: &[(&str, Vec<u8>, u32)]) -> Files {
    list.iter().map(|(p, c, m)| (p.to_string(), (c.clone(), *m))).collect()
}

fn versions() -> Vec<Files> {
    let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut big2 = big.clone();
    big2[1000..1010].copy_from_slice(b"0123456789");
    let v1 = release(&[
        ("a.txt", text(300, "v1"), 0o644),
        ("b/c.bin", big.clone(), 0o644),
        ("tool", b"#!/bin/sh\necho hi\n".to_vec(), 0o644),
        ("old.txt", b"old file".to_vec(), 0o644),
        ("keep.dat", vec![9; 5000], 0o600),
        ("data", b"data was a file".to_vec(), 0o644),
        ("only/o.txt", b"only listed files here".to_vec(), 0o644),
    ]);
    let v2 = release(&[
        ("a.txt", [text(300, "v1"), b"appended in v2\n".to_vec()].concat(), 0o644),
        ("b/c.bin", big2.clone(), 0o644),
        ("tool", b"#!/bin/sh\necho hi\n".to_vec(), 0o755),
        ("moved/keep.dat", vec![9; 5000], 0o600),
        ("data/x.txt", b"data is a directory now".to_vec(), 0o644),
        ("new/dir/n.txt", text(50, "new"), 0o644),
        ("zz.txt", b"last in path order".to_vec(), 0o644),
    ]);
    let v3 = release(&[
        ("a.txt", [text(300, "v3"), b"appended in v2\n".to_vec()].concat(), 0o644),
        ("tool", b"#!/bin/sh\necho hello\n".to_vec(), 0o755),
        ("moved/keep.dat", vec![9; 5000], 0o600),
        ("data/x.txt", b"data is a directory now, edited".to_vec(), 0o640),
        ("new/dir/n.txt", text(50, "new"), 0o644),
        ("old.txt", b"old file is back".to_vec(), 0o644),
        ("zz.txt", b"last in path order".to_vec(), 0o644),
    ]);
    // Version 4 turns directory new/dir into a file.
    let mut v4 = v3.clone();
    v4.remove("new/dir/n.txt");
    v4.insert("new/dir".into(), (b"a file where a directory was".to_vec(), 0o644));
    vec![v1, v2, v3, v4]
}

fn write_archive(path: &Path, files: &Files) {
    mf_test_support::write_mf(path, files.iter().map(|(name, (data, mode))| (name, data, *mode)));
}

fn table_of(archive: &Path, version: &str) -> FileTable {
    let archive = Archive::open(archive).unwrap();
    let entries = archive
        .entries()
        .map(|e| {
            let content = archive.read(&e).unwrap();
            FileEntry {
                path: e.path().to_owned(),
                size: e.size(),
                mode: e.mode(),
                sha256: sha256_hex(&content),
                xxh3: format!("{:016x}", e.content_hash()),
            }
        })
        .collect();
    let table = FileTable {
        kind: crate::manifest::FILE_TABLE_TYPE.into(),
        spec_version: 1,
        version: version.into(),
        archive_index_hash: format!("{:016x}", archive.footer().index_hash),
        entries,
    };
    FileTable::parse(&table.to_json(), version, "test").unwrap()
}

/// Archives, tables and patches 1→2, 2→3 and 1→3 of the three versions, made once per test.
struct Repo {
    _dir: tempfile::TempDir,
    files: Vec<Files>,
    archives: Vec<PathBuf>,
    tables: Vec<FileTable>,
    patches: HashMap<(usize, usize), PathBuf>,
}

fn repo() -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let files = versions();
    let mut archives = Vec::new();
    let mut tables = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = dir.path().join(format!("v{}.mf", i + 1));
        write_archive(&path, f);
        tables.push(table_of(&path, &format!("{}", i + 1)));
        archives.push(path);
    }
    let mut patches = HashMap::new();
    for (from, to) in [(0, 1), (1, 2), (0, 2), (2, 3)] {
        let path = dir.path().join(format!("p{from}{to}.mfp"));
        let options = mf_diff::DiffOptions { memory_limit: 256 << 20, ..mf_diff::DiffOptions::default() };
        mf_diff::diff_files(&archives[from], &archives[to], &path, &options, &|_| {}).unwrap();
        patches.insert((from, to), path);
    }
    Repo { _dir: dir, files, archives, tables, patches }
}

impl Repo {
    fn tables(&self) -> Vec<&FileTable> {
        self.tables.iter().collect()
    }

    /// The tables by version, as a session gives them to [`InstallDir::recover`].
    fn table(&self, version: &str) -> Result<FileTable> {
        self.tables.iter().find(|t| t.version == version).cloned().ok_or_else(|| Error::VersionNotFound {
            repo: "test".into(),
            version: version.into(),
            available: Vec::new(),
        })
    }
}

fn user_files() -> Files {
    release(&[("user.cfg", b"volume=11".to_vec(), 0o600), ("b/mine.txt", b"my notes".to_vec(), 0o644)])
}

fn install(root: &Path, files: &Files) {
    for (path, (content, mode)) in files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, content).unwrap();
        fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// Every file of the folder except the state directory, with mode; and the directories.
fn contents(root: &Path) -> (Files, BTreeSet<String>) {
    let mut files = Files::new();
    let mut dirs = BTreeSet::new();
    fn walk(root: &Path, dir: &Path, files: &mut Files, dirs: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let rel = entry.path().strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            if rel == STATE_DIR_NAME {
                continue;
            }
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                dirs.insert(rel);
                walk(root, &entry.path(), files, dirs);
            } else {
                files.insert(rel, (fs::read(entry.path()).unwrap(), meta.permissions().mode() & 0o7777));
            }
        }
    }
    if root.exists() {
        walk(root, root, &mut files, &mut dirs);
    }
    (files, dirs)
}

fn with_user(files: &Files) -> Files {
    let mut all = files.clone();
    all.extend(user_files());
    all
}

fn assert_clean_state(root: &Path) {
    let state = root.join(STATE_DIR_NAME);
    for name in [STAGING, BACKUP, JOURNAL] {
        assert!(!state.join(name).exists(), "{name} left behind");
    }
}

fn stage_chain(repo: &Repo, dir: &InstallDir, from: usize, to: usize) -> Staged {
    let scan = dir.scan(&repo.tables()).unwrap();
    assert_eq!(scan.identify(&repo.tables()), FolderState::Version { version: format!("{}", from + 1) });
    let steps: Vec<PatchStep> =
        (from..to).map(|k| PatchStep { patch: &repo.patches[&(k, k + 1)], to: &repo.tables[k + 1] }).collect();
    dir.stage_patches(&scan, &repo.tables[from], &steps, &|_| {}).unwrap()
}

#[test]
fn a_patch_chain_updates_the_folder_and_leaves_user_files_alone() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[0]));
    let dir = InstallDir::new(root.path());

    let staged = stage_chain(&repo, &dir, 0, 2);
    // Unchanged files (same content and mode in place) are not staged; the rest is.
    assert!(!staged.operations.iter().any(|op| op.path() == "zz.txt" && matches!(op, Operation::Delete { .. })));
    assert!(staged.operations.contains(&Operation::Delete { path: "b/c.bin".into() }));
    assert!(staged.operations.contains(&Operation::Delete { path: "only/o.txt".into() }));
    dir.switch(&staged).unwrap();

    let (files, dirs) = contents(root.path());
    assert_eq!(files, with_user(&repo.files[2]));
    // `only/` held listed files only and went; `b/` keeps the user's file.
    assert!(!dirs.contains("only") && dirs.contains("b") && dirs.contains("data"), "{dirs:?}");
    assert_clean_state(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    assert_eq!(scan.identify(&repo.tables()), FolderState::Version { version: "3".into() });
    assert_eq!(dir.recover(&|v| repo.table(v)).unwrap(), Recovery::Clean);
}

#[test]
fn one_patch_at_a_time_and_a_direct_patch_give_the_same_folder() {
    let repo = repo();
    for route in [vec![(0, 1), (1, 2)], vec![(0, 2)]] {
        let root = tempfile::tempdir().unwrap();
        install(root.path(), &with_user(&repo.files[0]));
        let dir = InstallDir::new(root.path());
        for (from, to) in route {
            let scan = dir.scan(&repo.tables()).unwrap();
            let steps = [PatchStep { patch: &repo.patches[&(from, to)], to: &repo.tables[to] }];
            let staged = dir.stage_patches(&scan, &repo.tables[from], &steps, &|_| {}).unwrap();
            dir.switch(&staged).unwrap();
            assert_eq!(contents(root.path()).0, with_user(&repo.files[to]));
        }
    }
}

#[test]
fn the_full_archive_installs_fresh_updates_and_repairs() {
    let repo = repo();
    // Fresh: a missing folder.
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("game");
    let dir = InstallDir::new(&root);
    let scan = dir.scan(&repo.tables()).unwrap();
    assert_eq!(scan.identify(&repo.tables()), FolderState::Fresh);
    let staged = dir.stage_full(&scan, None, &repo.archives[2], &repo.tables[2], &|_| {}).unwrap();
    dir.switch(&staged).unwrap();
    assert_eq!(contents(&root).0, repo.files[2]);
    assert_clean_state(&root);

    // An update from version 2 stages only what differs.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[1]));
    let dir = InstallDir::new(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    let staged = dir.stage_full(&scan, Some(&repo.tables[1]), &repo.archives[2], &repo.tables[2], &|_| {}).unwrap();
    for unchanged in ["moved/keep.dat", "new/dir/n.txt", "zz.txt"] {
        assert!(!staged.operations.iter().any(|op| op.path() == unchanged), "{unchanged} staged");
    }
    let total: u64 = repo.tables[2].entries.iter().map(|e| e.size).sum();
    assert!(staged.staged_bytes < total);
    dir.switch(&staged).unwrap();
    assert_eq!(contents(root.path()).0, with_user(&repo.files[2]));

    // A modified install is reported with the file that differs, and repaired from the archive.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[1]));
    fs::write(root.path().join("a.txt"), b"edited by hand").unwrap();
    let dir = InstallDir::new(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    let FolderState::Unknown { closest, differences } = scan.identify(&repo.tables()) else { panic!("not unknown") };
    assert_eq!(closest.as_deref(), Some("2"));
    let what = format!("has 14 bytes instead of {}", repo.files[1]["a.txt"].0.len());
    assert_eq!(differences, vec![Difference { path: "a.txt".into(), what }]);
    let closest = &repo.tables[1];
    let staged = dir.stage_full(&scan, Some(closest), &repo.archives[2], &repo.tables[2], &|_| {}).unwrap();
    dir.switch(&staged).unwrap();
    assert_eq!(contents(root.path()).0, with_user(&repo.files[2]));
}

#[test]
fn a_wrong_base_or_foreign_archive_is_refused_before_the_folder_changes() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[0]));
    let dir = InstallDir::new(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    // Patch 2→3 applied to version 1's folder.
    let steps = [PatchStep { patch: &repo.patches[&(1, 2)], to: &repo.tables[2] }];
    let err = dir.stage_patches(&scan, &repo.tables[0], &steps, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("base index"), "{err}");
    // Version 1's archive offered as version 3's.
    let err = dir.stage_full(&scan, Some(&repo.tables[0]), &repo.archives[0], &repo.tables[2], &|_| {}).unwrap_err();
    assert!(err.to_string().contains("not version 3"), "{err}");
    // A file changed after the scan: the patch's base check names it.
    fs::write(root.path().join("a.txt"), text(300, "vX")).unwrap();
    let steps = [PatchStep { patch: &repo.patches[&(0, 1)], to: &repo.tables[1] }];
    let err = dir.stage_patches(&scan, &repo.tables[0], &steps, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("a.txt"), "{err}");
    fs::write(root.path().join("a.txt"), &repo.files[0]["a.txt"].0).unwrap();
    assert_eq!(contents(root.path()).0, with_user(&repo.files[0]));
    assert!(!root.path().join(STATE_DIR_NAME).join(STAGING).exists());
}

/// Version 2 adds `zz.txt`, last in path order; a user directory there makes the switch fail on
/// its last operation.
fn blocked_update(repo: &Repo) -> (tempfile::TempDir, InstallDir, Staged) {
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[0]));
    install(root.path(), &release(&[("zz.txt/inside", b"user dir".to_vec(), 0o644)]));
    let dir = InstallDir::new(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    let steps = [PatchStep { patch: &repo.patches[&(0, 1)], to: &repo.tables[1] }];
    let staged = dir.stage_patches(&scan, &repo.tables[0], &steps, &|_| {}).unwrap();
    assert_eq!(staged.operations.last().map(Operation::path), Some("zz.txt"));
    (root, dir, staged)
}

fn blocked_original(repo: &Repo) -> Files {
    let mut files = with_user(&repo.files[0]);
    files.extend(release(&[("zz.txt/inside", b"user dir".to_vec(), 0o644)]));
    files
}

#[test]
fn an_error_during_the_switch_rolls_back() {
    let repo = repo();
    let (root, dir, staged) = blocked_update(&repo);
    let (_, dirs_before) = contents(root.path());
    let err = dir.switch(&staged).unwrap_err();
    assert!(err.to_string().contains("zz.txt"), "{err}");
    let (files, dirs) = contents(root.path());
    assert_eq!(files, blocked_original(&repo));
    assert_eq!(dirs, dirs_before, "created directories are removed, removed ones restored");
    assert_clean_state(root.path());
}

#[test]
fn a_crash_at_any_step_of_a_failing_switch_recovers_to_the_old_version() {
    let repo = repo();
    for k in 1.. {
        let (root, dir, staged) = blocked_update(&repo);
        let mut faults = Faults { stop_at: Some(k), ..Faults::default() };
        let result = dir.switch_with(&staged, &mut faults);
        assert!(result.is_err());
        if !faults.crashed {
            break; // k is past the last step: the rollback ran to its end
        }
        // Recovery rolls forward, meets the same obstacle and rolls back.
        let _ = dir.recover(&|v| repo.table(v));
        assert_eq!(contents(root.path()).0, blocked_original(&repo), "crash at step {k}");
        assert_clean_state(root.path());
        assert!(k < 100);
    }
}

#[test]
fn a_crash_at_any_step_of_the_switch_or_recovery_is_finished_by_recovery() {
    let repo = repo();
    // 1 → 3 (files become directories and back), 3 → 4 (a directory becomes a file).
    for (from, to) in [(0, 2), (2, 3)] {
        crash_at_every_step(&repo, from, to, false);
        crash_at_every_step(&repo, from, to, true);
    }
}

/// Crashes the switch at step k for every k, then recovers: at once, or (`nested`) after a crash at
/// every step of the recovery too.
fn crash_at_every_step(repo: &Repo, from: usize, to: usize, nested: bool) {
    let mut crashes = 0;
    for k in 1.. {
        let root = tempfile::tempdir().unwrap();
        install(root.path(), &with_user(&repo.files[from]));
        let dir = InstallDir::new(root.path());
        let staged = stage_chain(repo, &dir, from, to);
        let mut faults = Faults { stop_at: Some(k), ..Faults::default() };
        let result = dir.switch_with(&staged, &mut faults);
        if !faults.crashed {
            result.unwrap();
            assert_eq!(contents(root.path()).0, with_user(&repo.files[to]));
            break;
        }
        crashes += 1;
        // A second crash, at every step of the recovery, then a clean recovery.
        for j in 1.. {
            let mut again = Faults { stop_at: nested.then_some(j), ..Faults::default() };
            let outcome = dir.recover_with(&|v| repo.table(v), &mut again);
            if !again.crashed {
                assert!(matches!(outcome, Ok(Recovery::Finished { .. }) | Ok(Recovery::Clean)), "{outcome:?}");
                break;
            }
        }
        assert_eq!(dir.recover(&|v| repo.table(v)).unwrap(), Recovery::Clean);
        assert_eq!(contents(root.path()).0, with_user(&repo.files[to]), "{from}->{to}: crash at step {k}");
        assert_clean_state(root.path());
        let scan = dir.scan(&repo.tables()).unwrap();
        assert_eq!(scan.identify(&repo.tables()), FolderState::Version { version: format!("{}", to + 1) });
    }
    assert!(crashes > 5, "only {crashes} steps");
}

#[test]
fn staging_without_a_journal_is_discarded() {
    let repo = repo();
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &with_user(&repo.files[0]));
    let dir = InstallDir::new(root.path());
    let _staged = stage_chain(&repo, &dir, 0, 1);
    assert!(root.path().join(STATE_DIR_NAME).join(STAGING).exists());
    // A journal write killed before its rename leaves only a temp file.
    let temp = root.path().join(STATE_DIR_NAME).join(".journal.json.abc123.mf-tmp");
    fs::write(&temp, b"{").unwrap();
    assert_eq!(dir.recover(&|v| repo.table(v)).unwrap(), Recovery::DiscardedStaging);
    assert!(!temp.exists());
    assert_eq!(contents(root.path()).0, with_user(&repo.files[0]));
    assert_clean_state(root.path());
}

#[test]
fn symbolic_links_are_never_followed_out_of_the_folder() {
    let repo = repo();
    let outside = tempfile::tempdir().unwrap();
    // A listed directory replaced by a link: the install no longer matches.
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &repo.files[0]);
    install(outside.path(), &release(&[("c.bin", repo.files[0]["b/c.bin"].0.clone(), 0o644)]));
    fs::remove_dir_all(root.path().join("b")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("b")).unwrap();
    let dir = InstallDir::new(root.path());
    let scan = dir.scan(&repo.tables()).unwrap();
    let FolderState::Unknown { differences, .. } = scan.identify(&repo.tables()) else { panic!("identified") };
    assert!(differences.iter().any(|d| d.path == "b/c.bin" && d.what.contains("symbolic link")), "{differences:?}");
    // Repairing would write through the link: refused, and nothing outside changes.
    let staged = dir.stage_full(&scan, Some(&repo.tables[0]), &repo.archives[1], &repo.tables[1], &|_| {}).unwrap();
    let err = dir.switch(&staged).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(contents(outside.path()).0, release(&[("c.bin", repo.files[0]["b/c.bin"].0.clone(), 0o644)]));
    assert_clean_state(root.path());
}

#[test]
fn a_journal_is_checked_against_the_tables_it_names_before_anything_runs() {
    let repo = repo();
    let journal = |from: Option<&str>, operations: Vec<Operation>, created_dirs: Vec<&str>| Journal {
        kind: JOURNAL_TYPE.into(),
        from: from.map(Into::into),
        to: "2".into(),
        done: false,
        operations,
        created_dirs: created_dirs.into_iter().map(Into::into).collect(),
    };
    let delete = |path: &str| Operation::Delete { path: path.into() };
    let replace = |path: &str, staged: &str| Operation::Replace { path: path.into(), staged: staged.into() };
    let refused = |j: Journal| match j.check(&|v| repo.table(v)) {
        Err(JournalError::Refused(what)) => what,
        Err(JournalError::Lookup(e)) => panic!("lookup failed: {e}"),
        Ok(()) => panic!("accepted {j:?}"),
    };
    let v1_only =
        repo.tables[0].entries.iter().find(|e| repo.table("2").unwrap().entries.iter().all(|f| f.path != e.path));
    let v1_only = &v1_only.expect("version 1 has a file version 2 drops").path;
    let v2_file = &repo.tables[1].entries[0].path;
    assert!(journal(Some("1"), vec![delete(v1_only), replace(v2_file, "s0")], vec![])
        .check(&|v| repo.table(v))
        .is_ok());

    assert!(refused(journal(Some("1"), vec![delete("../outside")], vec![])).contains("'..'"));
    assert!(refused(journal(Some("1"), vec![delete("/etc/passwd")], vec![])).contains("absolute"));
    assert!(refused(journal(Some("1"), vec![replace(v2_file, "../../secret")], vec![])).contains("staged"));
    assert!(refused(journal(Some("1"), vec![delete("user.cfg")], vec![])).contains("not allowed"));
    assert!(refused(journal(None, vec![delete(v1_only)], vec![])).contains("not allowed"));
    assert!(refused(journal(Some("1"), vec![replace(v1_only, "s0")], vec![])).contains("not allowed"));
    assert!(refused(journal(Some("1"), vec![replace(v2_file, "s0")], vec!["elsewhere"])).contains("created directory"));
    assert!(refused(journal(Some("9"), vec![], vec![])).contains("does not list"));
    assert!(refused(journal(Some("1"), vec![delete(v1_only), delete(v1_only)], vec![])).contains("two operations"));
}
