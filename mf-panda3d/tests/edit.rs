//! Panda3D multifiles changed in place (`mf_panda3d::edit`), checked by mf's reader and by the real
//! Panda3D (`panda3d.core.Multifile`): every step of every commit stopped as a crash would stop it,
//! torn tails, the sector rule, and hostile archives that must be refused untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mf_panda3d::edit::{compact_file, Step, SECTOR};
use mf_panda3d::{Multifile, MultifileEditor};
use mf_test_support::panda3d::{multify, panda3d_py};

type Content = BTreeMap<String, Vec<u8>>;

/// What mf reads: every live subfile's content.
fn mf_view(path: &Path) -> Content {
    let multifile = Multifile::open(path).unwrap_or_else(|e| panic!("mf cannot read {}: {e}", path.display()));
    multifile.subfiles().iter().map(|s| (s.name().to_owned(), multifile.read(s).unwrap())).collect()
}

/// What Panda3D reads: every subfile it lists (a name listed twice fails), with its content.
fn panda_view(path: &Path) -> Content {
    let script = format!(
        r#"
from panda3d.core import Multifile, Filename
m = Multifile()
assert m.openRead(Filename.fromOsSpecific({path:?})), 'panda3d cannot open it'
seen = set()
for i in range(m.getNumSubfiles()):
    n = m.getSubfileName(i)
    assert n not in seen, 'listed twice: ' + n
    seen.add(n)
    print(n + '\t' + m.readSubfile(i).hex())
"#,
        path = path.to_str().unwrap()
    );
    let out = panda3d_py(path.parent().unwrap(), &script);
    out.lines()
        .map(|line| {
            let (name, hex) = line.split_once('\t').unwrap();
            let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            (name.to_owned(), bytes)
        })
        .collect()
}

/// Both readers agree on the content, and return it.
fn view(path: &Path) -> Content {
    let mf = mf_view(path);
    assert_eq!(panda_view(path), mf, "Panda3D and mf read {} differently", path.display());
    mf
}

fn text(n: u32, tag: &str) -> Vec<u8> {
    (0..n).flat_map(|i| format!("{tag} line {i}\n").into_bytes()).collect()
}

/// A multifile written by the real `multify -c -T 0 -z` from `files` (in `dir/name`).
fn multify_archive(dir: &Path, name: &str, files: &[(&str, Vec<u8>)], extra: &[&str]) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    for (path, content) in files {
        let full = src.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    let out = dir.join(name);
    let mut args = vec!["-c", "-T", "0", "-f", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let names: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
    args.extend_from_slice(&names);
    multify(&src, &args);
    out
}

fn base_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.dat", text(50, "a")),
        ("b/c.dat", text(2000, "c")),
        ("b/d.bin", mf_test_support::noise(3000, 4)),
        ("e.png", mf_test_support::noise(700, 5)),
        ("f.dat", text(10, "f")),
    ]
}

type Edit = fn(&mut MultifileEditor) -> mf_panda3d::Result<()>;

fn put(editor: &mut MultifileEditor, name: &str, content: &[u8]) -> mf_panda3d::Result<()> {
    let compress = editor.compresses(name);
    editor.put(name, &mut &content[..], compress, 0)
}

/// The edits whose every step is crashed, each taking another commit path.
fn scenarios() -> Vec<(&'static str, Edit, Content)> {
    let base: Content = base_files().into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
    let mut add = base.clone();
    add.insert("g/new.dat".into(), text(300, "new"));
    let mut replace_head = base.clone();
    replace_head.insert("a.dat".into(), text(60, "A"));
    replace_head.insert("z.bin".into(), b"zz".to_vec());
    let mut replace_middle = base.clone();
    replace_middle.insert("b/d.bin".into(), mf_test_support::noise(5000, 6));
    let mut remove_one = base.clone();
    remove_one.remove("b/c.dat");
    let mut remove_tree = base.clone();
    remove_tree.remove("b/c.dat");
    remove_tree.remove("b/d.bin");
    remove_tree.remove("f.dat");
    vec![
        ("add (link from the last entry)", |e| put(e, "g/new.dat", &text(300, "new")), add),
        (
            "replace the first entry and add (head commit)",
            |e| {
                put(e, "a.dat", &text(60, "A"))?;
                put(e, "z.bin", b"zz")
            },
            replace_head,
        ),
        ("replace in the middle (relink)", |e| put(e, "b/d.bin", &mf_test_support::noise(5000, 6)), replace_middle),
        ("remove one (flag byte)", |e| e.remove_tree("b/c.dat").map(drop), remove_one),
        ("remove several (relink)", |e| e.remove_tree("b").and_then(|_| e.remove_tree("f.dat")).map(drop), remove_tree),
    ]
}

/// Runs `edit` on `path`, stopping after the `stop_at`-th step (counting from 0); returns whether it
/// stopped (false: the edit ran to its end), and the steps seen.
fn run_stopping(path: &Path, edit: Edit, stop_at: Option<usize>) -> (bool, Vec<Step>) {
    let mut editor = MultifileEditor::open(path).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (seen2, count2) = (seen.clone(), count.clone());
    editor.set_fault_hook(move |step| {
        seen2.lock().unwrap().push(step);
        Some(count2.fetch_add(1, Ordering::SeqCst)) == stop_at
    });
    let result = edit(&mut editor).and_then(|()| editor.commit().map(drop));
    let steps = seen.lock().unwrap().clone();
    match result {
        Ok(()) => (false, steps),
        Err(e) => {
            assert!(e.to_string().contains("test fault"), "a real failure: {e}");
            (true, steps)
        }
    }
}

#[test]
fn a_crash_after_any_step_leaves_the_old_or_the_new_archive_for_mf_and_panda3d() {
    let dir = tempfile::tempdir().unwrap();
    let original = multify_archive(dir.path(), "base.mf", &base_files(), &["-z"]);
    let pristine = std::fs::read(&original).unwrap();
    let old = view(&original);
    let work = dir.path().join("work.mf");
    for (what, edit, new) in scenarios() {
        let mut outcomes = Vec::new();
        // With and without a torn tail of an earlier crashed edit (junk never linked) to cut first.
        for stop_at in (0..).flat_map(|n| [(n, false), (n, true)]) {
            let (stop_at, torn_tail) = stop_at;
            let mut bytes = pristine.clone();
            if torn_tail {
                bytes.extend_from_slice(&[0xa5; 333]);
            }
            std::fs::write(&work, &bytes).unwrap();
            let (stopped, steps) = run_stopping(&work, edit, Some(stop_at));
            let now = view(&work);
            assert!(now == old || now == new, "{what}: stopped after {steps:?}: neither version");
            if !stopped {
                assert_eq!(now, new, "{what}: the finished edit");
                if torn_tail {
                    break;
                }
                continue;
            }
            outcomes.push((steps.last().copied(), now == new));
            // The next edit after the crash completes it, cutting what the crash left unlinked.
            if now == old {
                let len_before = std::fs::metadata(&work).unwrap().len();
                run_stopping(&work, edit, None);
                assert_eq!(view(&work), new, "{what}: the edit redone after a crash at {steps:?}");
                let grown = std::fs::metadata(&work).unwrap().len() - pristine.len() as u64;
                assert!(grown < 20_000 && len_before > 0, "{what}: the crashed tail was cut, not kept: +{grown}");
            }
        }
        assert!(outcomes.iter().any(|(step, _)| *step == Some(Step::Commit)), "{what}: {outcomes:?}");
        // Stopped after the commit write: the new version; after any step before it: the old one.
        for (step, is_new) in &outcomes {
            let committed = matches!(step, Some(Step::Commit | Step::SyncCommit));
            assert_eq!(*is_new, committed, "{what}: after {step:?}");
        }
    }
}

#[test]
fn an_appended_tail_cut_anywhere_reads_as_the_old_archive() {
    let dir = tempfile::tempdir().unwrap();
    let original = multify_archive(dir.path(), "base.mf", &base_files(), &["-z"]);
    let pristine = std::fs::read(&original).unwrap();
    let old = view(&original);
    let work = dir.path().join("work.mf");
    std::fs::write(&work, &pristine).unwrap();
    // Stop after everything is appended and synced, before the link.
    let steps = run_stopping(&work, |e| put(e, "g/new.dat", &text(300, "new")), Some(2)).1;
    assert_eq!(steps.last(), Some(&Step::SyncData));
    let full = std::fs::read(&work).unwrap();
    assert!(full.len() > pristine.len() + 100);
    // A power loss keeps any prefix of the unsynced appends (and garbage in the rest).
    for cut in [pristine.len() + 1, pristine.len() + 7, (pristine.len() + full.len()) / 2, full.len() - 1] {
        let mut torn = full[..cut].to_vec();
        torn.extend(std::iter::repeat_n(0xff, (full.len() - cut) / 2));
        std::fs::write(&work, &torn).unwrap();
        assert_eq!(view(&work), old, "cut at {cut}");
        // The next edit cuts the torn tail and appends where the archive logically ends.
        let mut editor = MultifileEditor::open(&work).unwrap();
        put(&mut editor, "h.dat", b"h").unwrap();
        let report = editor.commit().unwrap();
        let mut expected = old.clone();
        expected.insert("h.dat".into(), b"h".to_vec());
        assert_eq!(view(&work), expected);
        assert!(report.file_len < pristine.len() as u64 + 100, "cut at {cut}: the tail was not reused: {report:?}");
        assert_eq!(std::fs::metadata(&work).unwrap().len(), report.file_len);
    }
}

/// A multifile whose header prefix puts the first entry at `first_entry` (scale 1).
fn prefixed(dir: &Path, name: &str, first_entry: usize) -> PathBuf {
    // multify -P adds '#' and '\n' around the text; the 18-byte header follows.
    let prefix = "p".repeat(first_entry - 18 - 2);
    multify_archive(dir, name, &[("a.dat", text(5, "a")), ("b.dat", text(5, "b"))], &["-P", &prefix])
}

#[test]
fn commit_writes_never_cross_a_sector_and_the_rewrite_covers_what_no_write_can() {
    let dir = tempfile::tempdir().unwrap();
    let first_entry = SECTOR as usize - 7;
    // The first entry's commit bytes (offset 505, 14 bytes) cross offset 512: replacing it cannot be
    // committed by one in-sector write, so the archive is rewritten whole (packed, prefix kept).
    let straddling = prefixed(dir.path(), "straddle.mf", first_entry);
    let before = std::fs::read(&straddling).unwrap();
    assert_eq!(before[..first_entry - 18].last(), Some(&b'\n'));
    let mut editor = MultifileEditor::open(&straddling).unwrap();
    let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = steps.clone();
    editor.set_fault_hook(move |step| {
        seen.lock().unwrap().push(step);
        false
    });
    put(&mut editor, "a.dat", b"replaced\n").unwrap();
    let report = editor.commit().unwrap();
    assert!(!steps.lock().unwrap().contains(&Step::Commit), "no in-place commit write: {:?}", steps.lock().unwrap());
    let after = std::fs::read(&straddling).unwrap();
    assert_eq!(report.file_len, after.len() as u64);
    assert_eq!(&after[..first_entry], &before[..first_entry], "prefix and header kept");
    let content = view(&straddling);
    assert_eq!(content["a.dat"], b"replaced\n");
    assert!(!Multifile::open(&straddling).unwrap().needs_repack(), "the rewrite is packed");

    // Adding links from the last entry, whose `next` word lies inside a sector: an in-place commit.
    let linked = prefixed(dir.path(), "linked.mf", first_entry);
    let mut editor = MultifileEditor::open(&linked).unwrap();
    let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = steps.clone();
    editor.set_fault_hook(move |step| {
        seen.lock().unwrap().push(step);
        false
    });
    put(&mut editor, "c.dat", b"new\n").unwrap();
    editor.commit().unwrap();
    assert!(steps.lock().unwrap().contains(&Step::Commit));
    assert_eq!(view(&linked)["c.dat"], b"new\n");
}

/// `multify -c -T 0 -z` of `files`, with one entry's bytes changed by `damage`; an edit must fail
/// naming the file and an offset, and leave every byte as it was.
fn refused(dir: &Path, name: &str, damage: impl Fn(&mut Vec<u8>, &Multifile), expect: &str) {
    let path = multify_archive(dir, name, &base_files(), &["-z"]);
    let good = Multifile::open(&path).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes, &good);
    drop(good);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dir.join("new.dat"), b"x").unwrap();
    let add = mf_format::inplace::AddOptions { base: dir.to_owned(), ..Default::default() };
    let errors = [
        mf_panda3d::edit::add_paths(&path, &[PathBuf::from("new.dat")], &add).unwrap_err().to_string(),
        mf_panda3d::edit::remove_paths(&path, &["a.dat".into()], false).unwrap_err().to_string(),
    ];
    for err in errors {
        assert!(err.contains(name) && err.contains("offset") && err.contains(expect), "{name}: {err}");
    }
    // Compaction fails too: at open, or (overlapping data) when it decodes every subfile first.
    let err = compact_file(&path, &path).unwrap_err().to_string();
    assert!(err.contains(name) && err.contains("offset"), "{name}: {err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: a refused edit left the file as it was");
}

fn set_u32(bytes: &mut [u8], at: u64, value: u32) {
    bytes[at as usize..at as usize + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn hostile_chains_are_refused_naming_file_and_offset_and_never_modified() {
    let dir = tempfile::tempdir().unwrap();
    let second = |m: &Multifile| m.subfiles()[1].index_offset();
    refused(dir.path(), "loop.mf", |b, m| set_u32(b, second(m), 18), "loops back to the entry at 18");
    refused(
        dir.path(),
        "beyond.mf",
        |b, m| {
            let beyond = b.len() as u32 + 40;
            set_u32(b, second(m), beyond)
        },
        "past the end of the file",
    );
    // `next` pointing back into a subfile's data (zlib bytes, not an entry).
    refused(dir.path(), "into-data.mf", |b, m| set_u32(b, second(m), m.subfiles()[1].data_offset() as u32 + 2), "");
    // A name length of 65535 runs past the end of the file.
    refused(
        dir.path(),
        "long-name.mf",
        |b, m| {
            let last = m.subfiles().last().unwrap().index_offset() as usize;
            // Entry of a compressed subfile: name length at +22 (after ulen and timestamp).
            b[last + 22..last + 24].copy_from_slice(&[0xff, 0xff]);
        },
        "cut off",
    );
    // An entry whose data covers the next entry: readable, but an edit would write into that data.
    refused(
        dir.path(),
        "overlap.mf",
        |b, m| {
            let first = m.subfiles()[0].index_offset();
            set_u32(b, first + 4, second(m) as u32);
            set_u32(b, first + 8, 30);
        },
        "overlaps",
    );
}

#[test]
fn signed_and_version_1_0_archives_are_refused_and_encrypted_subfiles_are_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A signature record (flags 0x20, empty name) after a subfile: crafted, multify -S needs keys.
    let signed = mf_test_support::panda3d::craft_multifile(
        d,
        "signed.mf",
        "[('a.dat', b'hello', 0, 5), ('', b'\\x04\\x00\\x00\\x00sig!\\x00\\x00\\x00\\x00', 0x20, 0)]",
    );
    let before = std::fs::read(&signed).unwrap();
    let err = mf_panda3d::edit::remove_paths(&signed, &["a.dat".into()], false).unwrap_err().to_string();
    assert!(err.contains("signed.mf") && err.contains("signed") && err.contains("invalidates"), "{err}");
    let err = compact_file(&signed, &signed).unwrap_err().to_string();
    assert!(err.contains("signed"), "{err}");
    assert_eq!(std::fs::read(&signed).unwrap(), before);

    // Encrypted with the real multify -e: others can be added and removed, it is kept as it was.
    let encrypted = multify_archive(d, "enc.mf", &[("s.dat", b"secret\n".to_vec())], &["-e", "-p", "pw"]);
    let secret = std::fs::read(&encrypted).unwrap();
    let stored_before = {
        let m = Multifile::open(&encrypted).unwrap();
        m.stored_bytes(&m.subfiles()[0]).unwrap().into_owned()
    };
    let mut editor = MultifileEditor::open(&encrypted).unwrap();
    let err = put(&mut editor, "s.dat", b"plain").unwrap_err().to_string();
    assert!(err.contains("'s.dat' is encrypted"), "{err}");
    put(&mut editor, "t.dat", b"plain").unwrap();
    editor.commit().unwrap();
    let m = Multifile::open(&encrypted).unwrap();
    assert_eq!(m.stored_bytes(m.get("s.dat").unwrap()).unwrap(), stored_before);
    let out = panda3d_py(
        d,
        "from panda3d.core import Multifile, Filename\nm = Multifile()\nassert m.openRead(Filename('enc.mf'))\n\
         m.setEncryptionPassword('pw')\nprint(m.readSubfile(m.findSubfile('s.dat')), m.readSubfile(m.findSubfile('t.dat')))",
    );
    assert_eq!(out.trim(), "b'secret\\n' b'plain'");
    assert!(secret.len() < std::fs::read(&encrypted).unwrap().len());

    // Version 1.0 (no timestamps): Panda3D repacks those before changing them; mf asks for compact.
    let mut v10 = std::fs::read(multify_archive(d, "v11.mf", &[("a.dat", b"a".to_vec())], &[])).unwrap();
    // Rewrite as 1.0: minor 0, no header timestamp, no entry timestamp, positions 8 bytes lower.
    let (next, data) =
        (u32::from_le_bytes(v10[18..22].try_into().unwrap()), u32::from_le_bytes(v10[22..26].try_into().unwrap()));
    let name = v10[18 + 20..18 + 25].to_vec();
    let mut bytes = b"pmf\0\n\r\x01\x00\x00\x00\x01\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&(next - 8).to_le_bytes());
    bytes.extend_from_slice(&(data - 8).to_le_bytes());
    bytes.extend_from_slice(&v10[26..32]);
    bytes.extend_from_slice(&v10[36..38]);
    bytes.extend_from_slice(&name);
    bytes.extend_from_slice(&[0; 4]);
    bytes.push(b'a');
    v10 = bytes;
    let path = d.join("v10.mf");
    std::fs::write(&path, &v10).unwrap();
    assert_eq!(view(&path)["a.dat"], b"a");
    let err = MultifileEditor::open(&path).unwrap_err().to_string();
    assert!(err.contains("version 1.0") && err.contains("mf compact"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), v10);
    compact_file(&path, &path).unwrap();
    assert_eq!(Multifile::open(&path).unwrap().version(), (1, 1));
    assert_eq!(view(&path)["a.dat"], b"a");
}

/// Runs Panda3D's own in-place edit (`openReadWrite`, then `ops`, then `flush()`, no repack) on `path`.
fn panda_edit(path: &Path, ops: &str) {
    let script = format!(
        "from panda3d.core import Multifile, Filename\nm = Multifile()\n\
         assert m.openReadWrite(Filename.fromOsSpecific({:?}))\n{ops}\nassert m.flush()\n",
        path.to_str().unwrap()
    );
    panda3d_py(path.parent().unwrap(), &script);
}

#[test]
fn edits_by_panda3d_and_by_mf_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = multify_archive(d, "mixed.mf", &base_files(), &["-z"]);
    std::fs::write(d.join("p1.dat"), b"from panda 1\n").unwrap();
    std::fs::write(d.join("p2.dat"), b"from panda 2\n").unwrap();
    let mut expected = view(&path);
    // Panda3D appends an entry and flags one deleted, in place.
    panda_edit(
        &path,
        "m.addSubfile('p/one.dat', Filename.binaryFilename('p1.dat'), 6)\nassert m.removeSubfile('f.dat')",
    );
    assert!(Multifile::open(&path).unwrap().deleted_count() == 1);
    expected.insert("p/one.dat".into(), b"from panda 1\n".to_vec());
    expected.remove("f.dat");
    assert_eq!(view(&path), expected);
    // mf edits that chain: a replacement (relinked), an addition, a removal.
    let mut editor = MultifileEditor::open(&path).unwrap();
    put(&mut editor, "b/c.dat", b"replaced by mf\n").unwrap();
    put(&mut editor, "m/new.dat", b"added by mf\n").unwrap();
    editor.remove_tree("a.dat").unwrap();
    editor.commit().unwrap();
    expected.insert("b/c.dat".into(), b"replaced by mf\n".to_vec());
    expected.insert("m/new.dat".into(), b"added by mf\n".to_vec());
    expected.remove("a.dat");
    assert_eq!(view(&path), expected);
    // And Panda3D edits what mf left, then mf compacts it all into multify's packed layout.
    panda_edit(
        &path,
        "m.addSubfile('p/two.dat', Filename.binaryFilename('p2.dat'), 0)\nassert m.removeSubfile('m/new.dat')",
    );
    expected.insert("p/two.dat".into(), b"from panda 2\n".to_vec());
    expected.remove("m/new.dat");
    assert_eq!(view(&path), expected);
    let report = compact_file(&path, &path).unwrap();
    assert!(report.new_len < report.old_len);
    let compacted = Multifile::open(&path).unwrap();
    assert!(!compacted.needs_repack() && compacted.dead_bytes() == 0 && compacted.deleted_count() == 0);
    assert_eq!(view(&path), expected);
}

#[test]
fn one_editor_at_a_time_and_a_symlink_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = multify_archive(dir.path(), "busy.mf", &base_files(), &["-z"]);
    let before = std::fs::read(&path).unwrap();
    let mut first = MultifileEditor::open(&path).unwrap();
    let err = MultifileEditor::open(&path).unwrap_err().to_string();
    assert!(err.contains("busy.mf") && err.contains("busy"), "{err}");
    let err = compact_file(&path, &path).unwrap_err().to_string();
    assert!(err.contains("busy"), "{err}");
    put(&mut first, "x.dat", b"x").unwrap();
    first.commit().unwrap();
    assert_eq!(view(&path)["x.dat"], b"x");
    // A symlink as the archive's last component is refused, its target untouched.
    let link = dir.path().join("link.mf");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let now = std::fs::read(&path).unwrap();
    assert_ne!(now, before);
    assert!(MultifileEditor::open(&link).is_err());
    assert!(mf_panda3d::edit::remove_paths(&link, &["x.dat".into()], false).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), now);
}
