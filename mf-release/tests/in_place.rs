//! Archive-mode updates in place (spec/RELEASE.md "Archive mode"): identification by content and by
//! the state record, the record as hostile local state, and crashes at every step of a commit.

use std::path::{Path, PathBuf};

use mf_format::{Archive, ArchiveWriter, Editor, EntryOptions, WriterOptions};
use mf_release::repo::{self, AddOptions, Signing, DEFAULT_EXPIRY};
use mf_release::update::{update_archive, IdentifiedBy, Installed, Outcome, Quiet, UpdateOptions};
use mf_release::{Error, SecretKey};
use mf_test_support::noise;

struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key: SecretKey,
    /// Each version's published archive, oldest first.
    versions: Vec<PathBuf>,
}

/// Three versions: 1.1 edits a large raw entry in its middle and a text; 1.2 adds and removes files.
fn repository() -> Repo {
    let mut big = noise(2 << 20, 1);
    let mut files: Vec<(String, Vec<u8>)> =
        (0..10).map(|i| (format!("scripts/s{i}.py"), format!("print({i})\n").repeat(200 + i).into_bytes())).collect();
    let mut versions = Vec::new();
    for step in 0..3 {
        match step {
            1 => {
                big[1 << 20] ^= 0x55;
                files[2].1.extend_from_slice(b"# changed\n");
            }
            2 => {
                files.remove(4);
                files.push(("scripts/new.py".into(), b"print('new')\n".repeat(50)));
            }
            _ => {}
        }
        let mut version = files.clone();
        version.push(("data/big.raw".into(), big.clone()));
        versions.push(version);
    }
    publish(&versions)
}

/// Publishes `versions` as 1.0, 1.1, ... with a patch from each to the next.
fn publish(contents: &[Vec<(String, Vec<u8>)>]) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let key = SecretKey::generate().unwrap();
    let mut versions = Vec::new();
    for (i, files) in contents.iter().enumerate() {
        let version = format!("1.{i}");
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
        for (path, data) in files {
            writer.add_bytes(path, data, EntryOptions::default()).unwrap();
        }
        let path = root.join(format!("v{version}.mf"));
        std::fs::write(&path, writer.finish().unwrap()).unwrap();
        let options = AddOptions {
            signing: Signing { key: Some(&key), expires_in: DEFAULT_EXPIRY },
            patch_from_last: 1,
            memory_limit: 256 << 20,
        };
        repo::add(&root.join("repo"), &version, &path, &options, &|_| {}).unwrap();
        versions.push(path);
    }
    Repo { _dir: dir, root, key, versions }
}

impl Repo {
    fn url(&self) -> String {
        self.root.join("repo").to_str().unwrap().to_owned()
    }

    fn options(&self) -> UpdateOptions {
        UpdateOptions {
            key: Some(self.key.public()),
            fetch: Default::default(),
            to: None,
            check: false,
            repair: false,
            verify: false,
            rebuild: false,
        }
    }

    fn update(&self, archive: &Path, options: &UpdateOptions) -> mf_release::Result<Outcome> {
        update_archive(&self.url(), archive, options, &Quiet)
    }

    /// Installs version `index` as `name` (the published file, byte for byte).
    fn install(&self, index: usize, name: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::copy(&self.versions[index], &path).unwrap();
        path
    }
}

fn entries(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let archive = Archive::open(path).unwrap();
    archive.entries().map(|e| (e.path().to_owned(), e.mode(), archive.read(&e).unwrap().into_owned())).collect()
}

fn record_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap().to_os_string();
    name.push(".mf-update");
    archive.with_file_name(name).join("archive.json")
}

#[test]
fn patches_in_place_then_trusts_its_record_and_checks_by_content_without_it() {
    let repo = repository();
    let game = repo.install(0, "game.mf");
    let outcome = repo.update(&game, &repo.options()).unwrap();
    assert_eq!(outcome.identified_by, Some(IdentifiedBy::Sha256));
    assert!(outcome.in_place && outcome.changed && outcome.fell_back.is_none(), "{outcome:?}");
    assert_eq!(outcome.route.len(), 2, "two patches");
    assert_eq!(entries(&game), entries(&repo.versions[2]));
    let len = std::fs::metadata(&repo.versions[2]).unwrap().len();
    assert!(outcome.bytes_written * 4 < len, "wrote {} for a {len}-byte archive", outcome.bytes_written);
    assert!(record_path(&game).exists());

    // Up to date, known by the record (no entry hashed) ...
    let again = repo.update(&game, &repo.options()).unwrap();
    assert_eq!((again.identified_by, again.changed), (Some(IdentifiedBy::Record), false));
    // ... or by every entry's SHA-256 when asked, or when the record is gone.
    let verify = UpdateOptions { verify: true, ..repo.options() };
    assert_eq!(repo.update(&game, &verify).unwrap().identified_by, Some(IdentifiedBy::Entries));
    std::fs::remove_file(record_path(&game)).unwrap();
    assert_eq!(repo.update(&game, &repo.options()).unwrap().identified_by, Some(IdentifiedBy::Entries));
    // The long check wrote the record again.
    assert_eq!(repo.update(&game, &repo.options()).unwrap().identified_by, Some(IdentifiedBy::Record));

    // --rebuild renames a new file over the archive: the published 1.2, byte for byte.
    let other = repo.install(0, "other.mf");
    let rebuilt = repo.update(&other, &UpdateOptions { rebuild: true, ..repo.options() }).unwrap();
    assert!(!rebuilt.in_place);
    assert_eq!(std::fs::read(&other).unwrap(), std::fs::read(&repo.versions[2]).unwrap());
}

/// Rewrites the state record so that it describes the archive as it is now, claiming `version`
/// (what anyone who can write the state folder can do).
fn forge_record(archive: &Path, version: &str) {
    use std::os::unix::fs::MetadataExt;
    let opened = Archive::open(archive).unwrap();
    let meta = std::fs::metadata(archive).unwrap();
    let record = serde_json::json!({
        "type": "mf-archive-record",
        "version": version,
        "fingerprint": {
            "dev": meta.dev(), "ino": meta.ino(), "len": meta.len(),
            "ctime_secs": meta.ctime(), "ctime_nanos": meta.ctime_nsec(),
            "generation": opened.generation(),
            "content_id": format!("{:016x}", mf_diff::content_id(&opened)),
            "index_hash": format!("{:016x}", opened.footer().index_hash),
        }
    });
    std::fs::write(record_path(archive), serde_json::to_vec(&record).unwrap()).unwrap();
}

#[test]
fn a_forged_record_cannot_pass_a_modified_archive() {
    let repo = repository();
    let game = repo.install(1, "game.mf");
    repo.update(&game, &UpdateOptions { to: Some("1.1".into()), ..repo.options() }).unwrap();
    assert_eq!(repo.update(&game, &repo.options()).unwrap().installed, Installed::Version { version: "1.1".into() });
    // game is 1.2 now, patched in place. Change an entry through the editor (its index changes) and
    // forge the record to describe the modified file.
    let mut editor = Editor::open(&game).unwrap();
    let evil = b"print('evil')\n".to_vec();
    editor.put("scripts/s1.py", &EntryOptions::default(), &mut &evil[..], evil.len() as u64).unwrap();
    editor.commit().unwrap();
    forge_record(&game, "1.2");
    let err = repo.update(&game, &repo.options()).unwrap_err();
    assert!(matches!(err, Error::UnknownInstall { .. }), "{err}");

    // A change that keeps the index (a raw entry's bytes, no checksum of their own) passes a forged
    // record's index check, which is what the record is for; --verify reads every entry and sees it.
    let game = repo.install(2, "raw.mf");
    let bytes = std::fs::read(&game).unwrap();
    let needle = &noise(2 << 20, 1)[4096..4128];
    let at = bytes.windows(32).position(|w| w == needle).expect("the raw entry's bytes");
    let mut damaged = bytes.clone();
    damaged[at] ^= 1;
    std::fs::write(&game, &damaged).unwrap();
    // Without a record the archive is checked the long way.
    let err = repo.update(&game, &repo.options()).unwrap_err();
    assert!(matches!(err, Error::UnknownInstall { .. }), "{err}");
    std::fs::create_dir_all(record_path(&game).parent().unwrap()).unwrap();
    forge_record(&game, "1.2");
    assert_eq!(repo.update(&game, &repo.options()).unwrap().identified_by, Some(IdentifiedBy::Record));
    let err = repo.update(&game, &UpdateOptions { verify: true, ..repo.options() }).unwrap_err();
    assert!(matches!(err, Error::UnknownInstall { .. }), "{err}");
    assert_eq!(std::fs::read(&game).unwrap(), damaged, "refused updates change nothing");
}

#[test]
fn a_crash_at_any_step_of_an_in_place_commit_is_finished_by_the_next_update() {
    let repo = repository();
    let patch = {
        let manifest = std::fs::read(repo.root.join("repo/manifest.json")).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        repo.root.join("repo").join(manifest["signed"]["versions"][1]["patches"][0]["path"].as_str().unwrap())
    };
    let mut stop_at = 0usize;
    loop {
        let game = repo.install(0, &format!("crash{stop_at}.mf"));
        // The update's own first step, stopped at commit step `stop_at` as by a kill.
        let mut count = 0usize;
        let hook = Box::new(move |_: mf_format::edit::Step| {
            count += 1;
            count > stop_at
        });
        let options = mf_diff::InPlaceOptions { fault: Some(hook), ..Default::default() };
        let crashed = mf_diff::apply_in_place(&patch, &game, options, &|_| {}).is_err();
        let now = entries(&game);
        assert!(now == entries(&repo.versions[0]) || now == entries(&repo.versions[1]), "step {stop_at}");
        // The next update identifies whatever version the crash left, by content, and completes.
        let outcome = repo.update(&game, &repo.options()).unwrap();
        assert!(outcome.fell_back.is_none(), "step {stop_at}: {outcome:?}");
        assert_eq!(entries(&game), entries(&repo.versions[2]), "step {stop_at}");
        std::fs::remove_file(&game).unwrap();
        if !crashed {
            assert!(stop_at > 5);
            break;
        }
        stop_at += 1;
    }
}

#[test]
fn dead_space_past_the_threshold_is_compacted_keeping_the_version() {
    // 1.1 replaces a 3 MiB incompressible entry by another of 1 MiB: in place, the old one becomes a
    // hole of most of the file.
    let small = vec![("a.txt".to_string(), b"text\n".repeat(1000))];
    let v0 = [small.clone(), vec![("big.bin".into(), noise(3 << 20, 7))]].concat();
    let v1 = [small, vec![("big.bin".into(), noise(1 << 20, 8))]].concat();
    let repo = publish(&[v0, v1]);
    let game = repo.install(0, "game.mf");
    let outcome = repo.update(&game, &repo.options()).unwrap();
    assert!(outcome.in_place && outcome.compacted, "{outcome:?}");
    let archive = Archive::open(&game).unwrap();
    assert!(!mf_format::edit::needs_compaction(&archive));
    assert_eq!(entries(&game), entries(&repo.versions[1]));
    // Compacted in record order with the publisher's settings: the published 1.1 byte for byte, and
    // the record describes the compacted file.
    assert_eq!(std::fs::read(&game).unwrap(), std::fs::read(&repo.versions[1]).unwrap());
    assert_eq!(repo.update(&game, &repo.options()).unwrap().identified_by, Some(IdentifiedBy::Record));
}
