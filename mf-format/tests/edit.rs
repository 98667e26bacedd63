//! The in-place editor: content after edits, holes reused, frames kept for a mid-entry edit, bytes
//! counted, every crash point of the commit protocol, locking and hostile commit slots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mf_format::edit::Step;
use mf_format::{Archive, ArchiveWriter, Compression, Editor, EntryOptions, Error, WriterOptions};
use mf_test_support::{noise, text};

type Content = BTreeMap<String, Vec<u8>>;

const SMALL_FRAMES: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };

fn pack(path: &Path, options: WriterOptions, files: &Content) {
    let mut writer = ArchiveWriter::new(Vec::new(), options).unwrap();
    for (name, data) in files {
        writer.add_bytes(name, data, EntryOptions::default()).unwrap();
    }
    std::fs::write(path, writer.finish().unwrap()).unwrap();
}

/// Every entry of the archive at `path`, read and verified.
fn content(path: &Path) -> Content {
    let archive = Archive::open(path).unwrap();
    assert!(archive.verify().is_empty(), "{:?}", archive.verify());
    archive.entries().map(|e| (e.path().to_owned(), archive.read(&e).unwrap().into_owned())).collect()
}

fn sample() -> Content {
    let mut files = Content::new();
    files.insert("docs/readme.txt".into(), text(1, 200));
    files.insert("docs/notes.txt".into(), text(2, 300));
    files.insert("big/model.bin".into(), text(3, 20_000)); // ~600 KB of text: frames of its own
    files.insert("big/noise.dat".into(), noise(100_000, 4)); // incompressible: raw
    files.insert("empty".into(), Vec::new());
    files
}

fn put(editor: &mut Editor, path: &str, data: &[u8]) {
    editor.put(path, &EntryOptions::default(), &mut &data[..], data.len() as u64).unwrap();
}

fn setup(options: WriterOptions) -> (tempfile::TempDir, PathBuf, Content) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.mf");
    let files = sample();
    pack(&path, options, &files);
    (dir, path, files)
}

#[test]
fn edits_commit_a_new_generation_with_exactly_the_new_content() {
    let (_dir, path, mut files) = setup(WriterOptions::default());
    assert_eq!(Archive::open(&path).unwrap().generation(), 0);
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("docs/notes.txt").unwrap();
    put(&mut editor, "docs/readme.txt", b"replaced");
    put(&mut editor, "new/file.txt", &text(9, 50));
    let report = editor.commit().unwrap();
    files.remove("docs/notes.txt");
    files.insert("docs/readme.txt".into(), b"replaced".to_vec());
    files.insert("new/file.txt".into(), text(9, 50));
    assert_eq!(content(&path), files);
    let archive = Archive::open(&path).unwrap();
    assert_eq!((archive.generation(), report.generation), (2, 2));
    assert_eq!(report.file_len, std::fs::metadata(&path).unwrap().len());
    assert_eq!(report.dead_bytes, archive.space().dead);
    // Record order: kept entries keep theirs (the replaced one too), new ones follow.
    let order: Vec<&str> = archive.entries().map(|e| e.path()).collect();
    assert_eq!(order, ["big/model.bin", "big/noise.dat", "docs/readme.txt", "empty", "new/file.txt"]);
    // A second edit commits generation 3 into the other slot.
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("empty").unwrap();
    assert_eq!(editor.commit().unwrap().generation, 3);
    files.remove("empty");
    assert_eq!(content(&path), files);
}

#[test]
fn nothing_changed_writes_nothing_and_errors_name_the_entry() {
    let (_dir, path, _files) = setup(WriterOptions::default());
    let before = std::fs::read(&path).unwrap();
    let mut editor = Editor::open(&path).unwrap();
    let err = editor.remove("missing").unwrap_err();
    assert!(matches!(err, Error::NoSuchEntry { .. }) && err.to_string().contains("missing"), "{err}");
    let err = editor.put("docs/readme.txt/x", &EntryOptions::default(), &mut &b"x"[..], 1).unwrap_err();
    assert!(matches!(err, Error::PathConflict { .. }), "{err}");
    let err = editor.put("docs", &EntryOptions::default(), &mut &b"x"[..], 1).unwrap_err();
    assert!(matches!(err, Error::PathConflict { .. }), "{err}");
    assert_eq!(editor.commit().unwrap().bytes_written, 0);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn short_content_is_an_error_and_set_order_sets_the_record_order() {
    let (_dir, path, files) = setup(WriterOptions::default());
    let mut editor = Editor::open(&path).unwrap();
    let err = editor.put("x", &EntryOptions::default(), &mut &b"abc"[..], 10).unwrap_err();
    assert!(err.to_string().contains("3 of 10 bytes"), "{err}");
    put(&mut editor, "a-first", b"hello");
    let mut order: Vec<&str> = files.keys().map(String::as_str).collect();
    order.push("a-first");
    order.reverse();
    assert!(editor.set_order(&order[1..]).is_err(), "an order missing an entry is refused");
    editor.set_order(&order).unwrap();
    editor.commit().unwrap();
    let archive = Archive::open(&path).unwrap();
    let got: Vec<&str> = archive.entries().map(|e| e.path()).collect();
    assert_eq!(got, order);
}

#[test]
fn holes_are_reused_only_when_dead_in_the_committed_and_the_older_version() {
    let (_dir, path, mut files) = setup(SMALL_FRAMES);
    // Generation 2: the noise entry is removed; its space is live in generation 1 (the older one).
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("big/noise.dat").unwrap();
    let first = editor.commit().unwrap();
    files.remove("big/noise.dat");
    assert_eq!(first.holes_reused, 0, "nothing is dead in both versions yet");
    // Generation 3: committed 2 and older 1 both... 1 still uses the noise: not reusable.
    let mut editor = Editor::open(&path).unwrap();
    let fresh = noise(50_000, 77);
    editor.put("fresh.dat", &EntryOptions::default(), &mut &fresh[..], fresh.len() as u64).unwrap();
    let second = editor.commit().unwrap();
    files.insert("fresh.dat".into(), fresh);
    assert_eq!(second.holes_reused, 0, "generation 1 still uses the removed entry's space");
    assert_eq!(content(&path), files);
    // Generation 4: committed 3 and older 2 no longer use it: it is reused, and the file does not grow
    // by the new entry's size.
    let len_before = std::fs::metadata(&path).unwrap().len();
    let mut editor = Editor::open(&path).unwrap();
    let more = noise(60_000, 78);
    editor.put("more.dat", &EntryOptions::default(), &mut &more[..], more.len() as u64).unwrap();
    let third = editor.commit().unwrap();
    files.insert("more.dat".into(), more);
    assert!(third.holes_reused >= 60_000, "{third:?}");
    assert_eq!(third.bytes_appended, third.bytes_written - third.holes_reused - 32, "{third:?}");
    assert!(std::fs::metadata(&path).unwrap().len() < len_before + 60_000);
    assert_eq!(content(&path), files);
    let archive = Archive::open(&path).unwrap();
    let more = archive.get("more.dat").unwrap();
    let index_offset = archive.index_extent().0;
    assert!(more.offset() < len_before && more.offset() < index_offset);
}

#[test]
fn a_small_edit_in_the_middle_of_a_large_entry_writes_only_the_frames_that_changed() {
    for (name, data) in [("big/model.bin", text(3, 20_000)), ("big/noise.dat", noise(100_000, 4))] {
        let (_dir, path, mut files) = setup(SMALL_FRAMES);
        let frames_before = data.len().div_ceil(4096) as u64;
        let mut edited = data.clone();
        let middle = edited.len() / 2;
        edited[middle..middle + 10].copy_from_slice(b"0123456789");
        let mut editor = Editor::open(&path).unwrap();
        put(&mut editor, name, &edited);
        let report = editor.commit().unwrap();
        files.insert(name.into(), edited);
        assert_eq!(content(&path), files, "{name}");
        // One frame (two if the edit straddles a frame boundary) is written; the rest are kept.
        assert!(report.frames_reused >= frames_before - 2, "{name}: {report:?}");
        let index_len = Archive::open(&path).unwrap().index_extent().1;
        let data_written = report.bytes_written - index_len - 40 - 64;
        assert!(data_written <= 2 * 4096, "{name}: {report:?}");
    }
}

#[test]
fn small_entries_go_into_a_solid_stream_and_survive_later_edits() {
    let (_dir, path, mut files) = setup(WriterOptions::default());
    let mut editor = Editor::open(&path).unwrap();
    for i in 0..50 {
        let data = text(100 + i, 20);
        put(&mut editor, &format!("small/{i}.txt"), &data);
        files.insert(format!("small/{i}.txt"), data);
    }
    editor.commit().unwrap();
    let archive = Archive::open(&path).unwrap();
    assert!(archive.get("small/7.txt").unwrap().is_solid());
    drop(archive);
    assert_eq!(content(&path), files);
    // Removing some of a solid block keeps the others readable; removing all drops its frames.
    let mut editor = Editor::open(&path).unwrap();
    for i in 0..25 {
        editor.remove(&format!("small/{i}.txt")).unwrap();
        files.remove(&format!("small/{i}.txt"));
    }
    editor.commit().unwrap();
    assert_eq!(content(&path), files);
    let mut editor = Editor::open(&path).unwrap();
    assert_eq!(editor.remove_tree("small").unwrap().len(), 25);
    files.retain(|k, _| !k.starts_with("small/"));
    editor.commit().unwrap();
    assert_eq!(content(&path), files);
}

#[test]
fn a_second_editor_is_refused_as_busy() {
    let (_dir, path, _files) = setup(WriterOptions::default());
    let editor = Editor::open(&path).unwrap();
    let err = Editor::open(&path).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert!(err.to_string().contains("a.mf"), "{err}");
    drop(editor);
    Editor::open(&path).unwrap();
}

#[test]
fn a_symlink_is_not_edited_through() {
    let (dir, path, _files) = setup(WriterOptions::default());
    let link = dir.path().join("link.mf");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(Editor::open(&link).is_err());
}

/// One edit, stopped after step `stop_at` (counting every step the hook is asked about).
fn edit_stopping_at(path: &Path, stop_at: usize) -> Result<(), Error> {
    let counter = Arc::new(AtomicUsize::new(0));
    let seen = counter.clone();
    let mut editor = Editor::open(path)?;
    editor.set_fault_hook(move |_step: Step| seen.fetch_add(1, Ordering::SeqCst) == stop_at);
    apply_edit(&mut editor)?;
    editor.commit().map(|_| ())
}

fn apply_edit(editor: &mut Editor) -> Result<(), Error> {
    editor.remove("docs/notes.txt")?;
    let mut edited = text(3, 20_000);
    edited[500_000..500_004].copy_from_slice(b"EDIT");
    editor.put("big/model.bin", &EntryOptions::default(), &mut &edited[..], edited.len() as u64)?;
    let small = text(50, 10);
    editor.put("small.txt", &EntryOptions::default(), &mut &small[..], small.len() as u64)?;
    let stored = EntryOptions { compression: Compression::Store, ..EntryOptions::default() };
    let raw = noise(30_000, 51);
    editor.put("raw.bin", &stored, &mut &raw[..], raw.len() as u64)
}

fn expected_after_edit(mut files: Content) -> Content {
    files.remove("docs/notes.txt");
    let mut edited = text(3, 20_000);
    edited[500_000..500_004].copy_from_slice(b"EDIT");
    files.insert("big/model.bin".into(), edited);
    files.insert("small.txt".into(), text(50, 10));
    files.insert("raw.bin".into(), noise(30_000, 51));
    files
}

#[test]
fn a_crash_after_any_step_leaves_the_old_or_the_new_version_and_a_later_edit_succeeds() {
    // Both a streamed archive (adoption steps) and one with two committed versions (holes reused).
    for prepared in [false, true] {
        let mut stop_at = 0;
        loop {
            let (_dir, path, mut files) = setup(SMALL_FRAMES);
            if prepared {
                for name in ["docs/readme.txt", "big/noise.dat"] {
                    let mut editor = Editor::open(&path).unwrap();
                    editor.remove(name).unwrap();
                    editor.commit().unwrap();
                    files.remove(name);
                }
            }
            let old = files.clone();
            let new = expected_after_edit(files);
            let result = edit_stopping_at(&path, stop_at);
            let now = content(&path);
            assert!(now == old || now == new, "prepared {prepared}, stopped after step {stop_at}");
            if result.is_ok() {
                assert_eq!(now, new);
                break;
            }
            assert!(result.unwrap_err().to_string().contains("injected fault"));
            // The next run completes the edit (or, if it was committed, makes a further one).
            let mut editor = Editor::open(&path).unwrap();
            let mut expected = new.clone();
            if now == old {
                apply_edit(&mut editor).unwrap();
            } else {
                put(&mut editor, "after.txt", b"after");
                expected.insert("after.txt".into(), b"after".to_vec());
            }
            editor.commit().unwrap();
            assert_eq!(content(&path), expected, "prepared {prepared}, after a crash at step {stop_at}");
            stop_at += 1;
        }
        assert!(stop_at > 8, "the protocol has steps to crash at: {stop_at}");
    }
}

#[test]
fn a_torn_slot_write_leaves_the_old_version() {
    let (_dir, path, files) = setup(WriterOptions::default());
    let mut editor = Editor::open(&path).unwrap();
    editor.set_fault_hook(|step| step == Step::TornSlot);
    apply_edit(&mut editor).unwrap();
    assert!(editor.commit().is_err());
    assert_eq!(content(&path), files);
    assert_eq!(Archive::open(&path).unwrap().generation(), 1, "the adoption stands, the torn slot is ignored");
}

#[test]
fn an_uncommitted_tail_is_ignored_and_cut_off_by_the_next_edit() {
    let (_dir, path, files) = setup(WriterOptions::default());
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("empty").unwrap();
    editor.commit().unwrap();
    let committed_len = std::fs::metadata(&path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, &noise(5000, 1)).unwrap();
    drop(file);
    let mut expected = files.clone();
    expected.remove("empty");
    assert_eq!(content(&path), expected, "the tail is ignored");
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("docs/notes.txt").unwrap();
    let report = editor.commit().unwrap();
    expected.remove("docs/notes.txt");
    assert_eq!(content(&path), expected);
    assert!(report.file_len < committed_len + 5000, "the tail was cut: {report:?}");
}

#[test]
fn hostile_slots_and_a_truncated_file_are_errors_naming_file_and_offset() {
    let (_dir, path, _files) = setup(WriterOptions::default());
    let mut editor = Editor::open(&path).unwrap();
    editor.remove("empty").unwrap();
    editor.commit().unwrap();
    let good = std::fs::read(&path).unwrap();
    let slot = |generation: u64, footer: u64| {
        mf_format::format::to_bytes(&mf_format::format::CommitSlot::new(generation, footer))
    };

    let mut bytes = good.clone();
    bytes[64..96].copy_from_slice(&slot(9, good.len() as u64 + 100)); // past the end of the file
    std::fs::write(&path, &bytes).unwrap();
    let err = Editor::open(&path).err().unwrap().to_string();
    assert!(err.contains("a.mf") && err.contains("offset 72") && err.contains("outside the file"), "{err}");

    let mut bytes = good.clone();
    let winner = bytes[64..96].to_vec();
    bytes[32..64].copy_from_slice(&winner); // both slots the same generation
    std::fs::write(&path, &bytes).unwrap();
    let err = Editor::open(&path).err().unwrap().to_string();
    assert!(err.contains("a.mf") && err.contains("offset 64") && err.contains("generation"), "{err}");

    std::fs::write(&path, &good[..good.len() - 20]).unwrap(); // the committed footer cut
    let err = Editor::open(&path).err().unwrap().to_string();
    assert!(err.contains("a.mf") && err.contains("offset"), "{err}");
}

#[test]
fn an_older_version_that_does_not_check_out_means_append_only() {
    let (_dir, path, _files) = setup(SMALL_FRAMES);
    for name in ["docs/readme.txt", "big/noise.dat"] {
        let mut editor = Editor::open(&path).unwrap();
        editor.remove(name).unwrap();
        editor.commit().unwrap();
    }
    // Damage the older slot's footer (generation 2's), so its index cannot be trusted.
    let archive = Archive::open(&path).unwrap();
    assert_eq!(archive.generation(), 3);
    let bytes = std::fs::read(&path).unwrap();
    let older: mf_format::format::CommitSlot = mf_format::format::from_bytes(&bytes[64..96]).unwrap();
    assert_eq!(older.generation, 2);
    drop(archive);
    let mut damaged = bytes.clone();
    damaged[older.footer_offset as usize] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let mut editor = Editor::open(&path).unwrap();
    let data = noise(40_000, 5);
    editor.put("n.dat", &EntryOptions::default(), &mut &data[..], data.len() as u64).unwrap();
    let report = editor.commit().unwrap();
    assert_eq!(report.holes_reused, 0, "{report:?}");
    assert_eq!(Archive::open(&path).unwrap().get("n.dat").map(|e| e.size()), Some(40_000));
}

#[test]
fn compact_equals_a_fresh_pack_of_the_same_content() {
    let (dir, path, _files) = setup(SMALL_FRAMES);
    let mut editor = Editor::open(&path).unwrap();
    apply_edit(&mut editor).unwrap();
    editor.commit().unwrap();
    let files = content(&path);
    let out = dir.path().join("compact.mf");
    let report = mf_format::compact(&Archive::open(&path).unwrap(), &out).unwrap();
    assert_eq!(report.entries, files.len());
    // A fresh pack of the same content in pack order, with the same level and frame size.
    let mut inputs: Vec<mf_format::PackInput> = files
        .iter()
        .map(|(name, data)| {
            let fs_path = dir.path().join("tree").join(name);
            std::fs::create_dir_all(fs_path.parent().unwrap()).unwrap();
            std::fs::write(&fs_path, data).unwrap();
            mf_format::PackInput {
                entry_path: name.clone(),
                fs_path,
                size_hint: data.len() as u64,
                options: EntryOptions::default(),
            }
        })
        .collect();
    mf_format::order_for_compression(&mut inputs);
    let fresh = dir.path().join("fresh.mf");
    mf_format::pack_to_file(&inputs, &fresh, SMALL_FRAMES, |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&fresh).unwrap());
    assert_eq!(Archive::open(&out).unwrap().space().dead, Archive::open(&fresh).unwrap().space().dead);
}

#[test]
fn a_reader_of_version_n_stays_consistent_through_commits_n_plus_1_and_n_plus_2() {
    let (_dir, path, mut files) = setup(SMALL_FRAMES);
    for name in ["big/noise.dat", "docs/readme.txt"] {
        let mut editor = Editor::open(&path).unwrap();
        editor.remove(name).unwrap();
        editor.commit().unwrap();
        files.remove(name);
    }
    // A long-lived reader maps generation 3.
    let reader = Archive::open(&path).unwrap();
    assert_eq!(reader.generation(), 3);
    let mut reused = 0;
    for (generation, seed) in [(4u64, 40u64), (5, 50)] {
        let mut editor = Editor::open(&path).unwrap();
        editor.remove("docs/notes.txt").ok();
        let data = noise(120_000, seed);
        editor.put(&format!("n{seed}.dat"), &EntryOptions::default(), &mut &data[..], data.len() as u64).unwrap();
        let report = editor.commit().unwrap();
        assert_eq!(report.generation, generation);
        reused += report.holes_reused;
        // The old reader still reads exactly its version, and can tell a newer one was committed.
        assert!(reader.verify().is_empty(), "after generation {generation}: {:?}", reader.verify());
        for (name, data) in &files {
            assert_eq!(&reader.read(&reader.get(name).unwrap()).unwrap()[..], &data[..], "{name}");
        }
        assert_eq!(Archive::open(&path).unwrap().generation(), generation);
    }
    assert!(reused > 0, "the commits did reuse holes, so the guarantee was exercised");
}

#[test]
fn a_version_1_archive_is_not_edited_in_place_but_compacts_to_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.mf");
    let files = [("a.txt", text(1, 100)), ("b.bin", noise(10_000, 2))];
    let inputs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, &d[..])).collect();
    std::fs::write(&path, mf_test_support::mf_v1_bytes_with(WriterOptions::default(), inputs)).unwrap();
    let before = content(&path);
    let err = Editor::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotEditable { .. }) && err.to_string().contains("1.0"), "{err}");
    mf_format::edit::compact_file(&path).unwrap();
    assert_eq!(Archive::open(&path).unwrap().version().0, 2);
    assert_eq!(content(&path), before);
    Editor::open(&path).unwrap();
}

/// Yields `good` bytes, then fails.
struct FailingReader {
    good: Vec<u8>,
    at: usize,
}

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.good.len() {
            return Err(std::io::Error::other("the source went away"));
        }
        let n = buf.len().min(self.good.len() - self.at);
        buf[..n].copy_from_slice(&self.good[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_put_whose_source_fails_leaves_the_editor_usable_and_solid_content_streams() {
    let (_dir, path, mut files) = setup(SMALL_FRAMES);
    let mut editor = Editor::open(&path).unwrap();
    for compression in [Compression::Auto, Compression::Solid] {
        let options = EntryOptions { compression, ..EntryOptions::default() };
        let mut failing = FailingReader { good: text(7, 5_000), at: 0 };
        let err = editor.put("big/model.bin", &options, &mut failing, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("the source went away"), "{err}");
    }
    // Forced solid content larger than the solid limit streams into the solid stream.
    let long = text(8, 10_000);
    let solid = EntryOptions { compression: Compression::Solid, ..EntryOptions::default() };
    editor.put("long.txt", &solid, &mut &long[..], long.len() as u64).unwrap();
    put(&mut editor, "short.txt", b"short");
    editor.commit().unwrap();
    files.insert("long.txt".into(), long);
    files.insert("short.txt".into(), b"short".to_vec());
    assert_eq!(content(&path), files, "the failed puts changed nothing");
    assert!(Archive::open(&path).unwrap().get("long.txt").unwrap().is_solid());
}

#[test]
fn random_edit_sequences_keep_the_content_and_every_reader_of_the_last_two_versions_intact() {
    let (_dir, path, mut files) = setup(SMALL_FRAMES);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut readers: Vec<(Archive, Content)> = Vec::new();
    let mut holes_reused = 0;
    for round in 0..30u64 {
        let mut editor = Editor::open(&path).unwrap();
        for _ in 0..1 + next(3) {
            let name = format!("f{}.{}", next(8), ["txt", "bin", "dat"][next(3) as usize]);
            match next(4) {
                0 if files.contains_key(&name) => {
                    editor.remove(&name).unwrap();
                    files.remove(&name);
                }
                1 if files.contains_key(&name) => {
                    // A small edit of an existing entry.
                    let mut data = files[&name].clone();
                    if !data.is_empty() {
                        let at = next(data.len() as u64) as usize;
                        data[at] ^= 0x5a;
                    }
                    put(&mut editor, &name, &data);
                    files.insert(name, data);
                }
                _ => {
                    let len = next(40_000) as usize;
                    let data = if next(2) == 0 { noise(len, round * 100 + next(50)) } else { text(round, len / 30) };
                    put(&mut editor, &name, &data);
                    files.insert(name, data);
                }
            }
        }
        holes_reused += editor.commit().unwrap().holes_reused;
        assert_eq!(content(&path), files, "round {round}");
        readers.push((Archive::open(&path).unwrap(), files.clone()));
        // Readers of the versions committed one and two commits ago still read exactly them.
        let keep = readers.len().saturating_sub(3);
        readers.drain(..keep);
        for (reader, expected) in &readers {
            let got: Content =
                reader.entries().map(|e| (e.path().to_owned(), reader.read(&e).unwrap().into_owned())).collect();
            assert_eq!(&got, expected, "round {round}, reader of generation {}", reader.generation());
        }
    }
    let archive = Archive::open(&path).unwrap();
    assert_eq!(archive.generation(), 31);
    assert!(holes_reused > 0, "the sequence exercised hole reuse");
    assert_eq!(archive.space().dead + archive.space().stored, archive.space().data_area);
}

#[test]
fn kept_frames_are_recorded_without_being_read_and_only_when_they_fit() {
    for (name, data) in [("big/model.bin", text(3, 20_000)), ("big/noise.dat", noise(100_000, 4))] {
        let (_dir, path, mut files) = setup(SMALL_FRAMES);
        let frames = data.len().div_ceil(4096);
        let mut edited = data.clone();
        edited[4096 * 5 + 7] ^= 1;
        let mut keep = vec![true; frames];
        keep[5] = false;
        let mut editor = Editor::open(&path).unwrap();
        // Only frame 5's bytes are handed over; the caller vouches for the whole content's hash.
        let mut changed = &edited[4096 * 5..4096 * 6];
        let hash = xxhash_rust::xxh3::xxh3_64(&edited);
        let size = edited.len() as u64;
        editor.put_keeping_frames(name, &EntryOptions::default(), size, hash, &keep, &mut changed).unwrap();
        let report = editor.commit().unwrap();
        assert_eq!(report.frames_reused, frames as u64 - 1, "{name}");
        files.insert(name.into(), edited);
        assert_eq!(content(&path), files, "{name}");
    }

    let (_dir, path, _) = setup(SMALL_FRAMES);
    let mut editor = Editor::open(&path).unwrap();
    let frames = 600_000usize.div_ceil(4096);
    let size = Archive::open(&path).unwrap().get("big/model.bin").unwrap().size();
    let model_frames = size.div_ceil(4096) as usize;
    // Wrong frame count, a kept frame the old entry lacks, an entry with no frames of its own.
    assert!(!editor.can_keep_frames("big/model.bin", size, &vec![true; model_frames + 1]));
    assert!(!editor.can_keep_frames("big/model.bin", size + 4096, &vec![true; model_frames + 1]));
    let readme = Archive::open(&path).unwrap().get("docs/readme.txt").unwrap().size();
    let readme_keep = vec![true; readme.div_ceil(4096) as usize];
    assert!(!editor.can_keep_frames("docs/readme.txt", readme, &readme_keep), "in the solid stream");
    assert!(!editor.can_keep_frames("no/such", 4096 * frames as u64, &vec![true; frames]));
    let err = editor
        .put_keeping_frames("docs/readme.txt", &EntryOptions::default(), readme, 0, &readme_keep, &mut &[][..])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    // The changed frames' bytes ending early is an error, as for put.
    let mut keep = vec![true; model_frames];
    keep[0] = false;
    let err = editor
        .put_keeping_frames("big/model.bin", &EntryOptions::default(), size, 0, &keep, &mut &b"short"[..])
        .unwrap_err();
    assert!(err.to_string().contains("ends after 5"), "{err}");
}
