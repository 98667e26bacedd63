//! Frames records (patch format 2.3, op 4): large entries with a few changed frames keep the others.
//! Round trips (rebuild byte for byte, in place by content) for edits at the start, middle and end,
//! grown and shrunk entries, raw, compressed and mixed frames, with solid and shared entries around;
//! an in-place apply of a one-frame edit writes only that frame; hostile frames records are refused
//! naming the entry, with nothing written or committed.

use std::path::{Path, PathBuf};

use mf_diff::wire::{
    ArchivePreamble, BlockDesc, ContentIds, EntryRecord, FrameRun, Op, PatchHeader, PayloadDesc, RunPatch, Storage,
    FLAG_CONTENT_IDS, KIND_ARCHIVE, PATCH_HEADER_LEN, PATCH_VERSION_MAJOR, PATCH_VERSION_MINOR,
};
use mf_diff::{
    apply_in_place, apply_patch, content_id, diff_files, DiffOptions, EntryCheck, Error, InPlaceOptions, Method,
    NewEntry, PatchReport,
};
use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, WriterOptions};
use mf_test_support::noise;
use xxhash_rust::xxh3::xxh3_64;

/// Frames of 4 KiB keep the entries small while giving them many frames.
const LOG2: u8 = 12;
const FRAME: usize = 1 << LOG2;

fn options(log2: u8) -> WriterOptions {
    WriterOptions { frame_size_log2: log2, ..WriterOptions::default() }
}

fn write_with(dir: &Path, name: &str, log2: u8, files: &[(String, Vec<u8>, Compression)]) -> PathBuf {
    let mut writer = ArchiveWriter::new(Vec::new(), options(log2)).unwrap();
    for (path, data, compression) in files {
        writer.add_bytes(path, data, EntryOptions { compression: *compression, ..EntryOptions::default() }).unwrap();
    }
    let path = dir.join(name);
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    path
}

fn write(dir: &Path, name: &str, files: &[(String, Vec<u8>, Compression)]) -> PathBuf {
    write_with(dir, name, LOG2, files)
}

/// Compressible text whose frames all differ (numbered lines).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = mf_test_support::text(seed, len / 20 + 1);
    out.truncate(len);
    out
}

/// Frames alternating between text (stored compressed) and noise (stored raw).
fn mixed(frames: usize, seed: u64) -> Vec<u8> {
    (0..frames)
        .flat_map(|k| if k % 3 == 0 { noise(FRAME, seed + k as u64) } else { text(FRAME, seed * 100 + k as u64) })
        .collect()
}

/// An edit of a big entry.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Start,
    Middle,
    End,
    Grow,
    Shrink,
}

fn edited(mut data: Vec<u8>, edit: Edit) -> Vec<u8> {
    let len = data.len();
    match edit {
        Edit::Start => data[10..20].copy_from_slice(b"0123456789"),
        Edit::Middle => data[len / 2..len / 2 + 7].copy_from_slice(b"changed"),
        Edit::End => data[len - 5..].copy_from_slice(b"tail!"),
        Edit::Grow => data.extend_from_slice(&text(3 * FRAME + 100, 77)),
        Edit::Shrink => data.truncate(len - FRAME - 300),
    }
    data
}

const BIG: [&str; 3] = ["big/text.bin", "big/noise.bin", "big/mixed.bin"];

/// Big entries of 64 frames (compressed, raw, mixed) with small solid entries and a shared pair
/// around them; version 2 applies `edit` to every big entry and changes one small file.
fn release(edit: Option<Edit>) -> Vec<(String, Vec<u8>, Compression)> {
    let mut files = Vec::new();
    for i in 0..6 {
        files.push((format!("scripts/{i}.txt"), text(900 + i * 50, i as u64), Compression::Auto));
    }
    let bigs = [text(64 * FRAME, 1), noise(64 * FRAME, 2), mixed(64, 3)];
    for (path, data) in BIG.iter().zip(bigs) {
        let data = match edit {
            Some(edit) => edited(data, edit),
            None => data,
        };
        files.push((path.to_string(), data, Compression::Auto));
    }
    files.push(("shared/a.bin".into(), text(20 * FRAME, 9), Compression::Auto));
    files.push(("shared/b.bin".into(), text(20 * FRAME, 9), Compression::Auto));
    if edit.is_some() {
        files[2].1.extend_from_slice(b"one more line\n");
    }
    files
}

fn diff(old: &Path, new: &Path, patch: &Path) -> PatchReport {
    diff_files(old, new, patch, &DiffOptions { memory_limit: 256 << 20, ..DiffOptions::default() }, &|_| {}).unwrap()
}

/// Every entry (record order): path, mode, size, content hash, and the content read back.
fn contents(path: &Path) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let archive = Archive::open(path).unwrap();
    archive
        .entries()
        .map(|e| {
            let data = archive.read(&e).unwrap().into_owned();
            assert_eq!(xxh3_64(&data), e.content_hash(), "{} does not match its index", e.path());
            (e.path().to_owned(), e.mode(), e.size(), e.content_hash(), data)
        })
        .collect()
}

fn method_of(report: &PatchReport, path: &str) -> Method {
    report.entries.iter().find(|e| e.path.as_deref() == Some(path)).unwrap().method
}

/// Hashes every entry it is given in full; fails when a written entry's bytes miss its hash.
#[derive(Default)]
struct HashEverything {
    current: Option<(String, u64, xxhash_rust::xxh3::Xxh3, u64)>,
    written: Vec<String>,
}

impl EntryCheck for HashEverything {
    fn entry(&mut self, _: usize, entry: &NewEntry, written: bool) -> mf_diff::Result<()> {
        if written {
            self.current = Some((entry.path.clone(), entry.xxh3, xxhash_rust::xxh3::Xxh3::new(), 0));
        }
        Ok(())
    }
    fn content(&mut self, bytes: &[u8]) {
        let (_, _, hasher, len) = self.current.as_mut().unwrap();
        hasher.update(bytes);
        *len += bytes.len() as u64;
    }
    fn finish(&mut self) -> mf_diff::Result<()> {
        let (path, expected, hasher, _) = self.current.take().unwrap();
        assert_eq!(hasher.digest(), expected, "the check saw other bytes for {path}");
        self.written.push(path);
        Ok(())
    }
}

#[test]
fn edits_anywhere_round_trip_through_frames_records() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.mf", &release(None));
    for edit in [Edit::Start, Edit::Middle, Edit::End, Edit::Grow, Edit::Shrink] {
        let new = write(dir.path(), "new.mf", &release(Some(edit)));
        let patch = dir.path().join("p.mfp");
        let report = diff(&old, &new, &patch);
        for path in BIG {
            assert_eq!(method_of(&report, path), Method::Frames, "{path} after {edit:?}");
        }
        // Kept frames cost a few bytes: the patch is far smaller than one big entry.
        assert!(report.patch_len < 16 * FRAME as u64, "{edit:?}: {} bytes", report.patch_len);

        // Rebuild: byte for byte the new archive.
        let rebuilt = dir.path().join("rebuilt.mf");
        let outcome = apply_patch(&patch, &old, &rebuilt, &|_| {}).unwrap();
        assert!(outcome.exact, "{edit:?}");
        assert_eq!(std::fs::read(&rebuilt).unwrap(), std::fs::read(&new).unwrap(), "{edit:?}");

        // In place, kept frames untouched: the new entries, every one matching its index.
        let target = dir.path().join("target.mf");
        std::fs::copy(&old, &target).unwrap();
        let outcome = apply_in_place(&patch, &target, InPlaceOptions::default(), &|_| {}).unwrap();
        assert_eq!(contents(&target), contents(&new), "{edit:?}");
        assert_eq!(outcome.content_id, content_id(&Archive::open(&new).unwrap()));

        // In place under a caller's check: the check sees every byte of each written entry.
        std::fs::copy(&old, &target).unwrap();
        let mut check = HashEverything::default();
        let options = InPlaceOptions { check: Some(&mut check), ..InPlaceOptions::default() };
        apply_in_place(&patch, &target, options, &|_| {}).unwrap();
        assert_eq!(contents(&target), contents(&new), "{edit:?} with a check");
        for path in BIG {
            assert!(check.written.iter().any(|p| p == path), "{path} was not checked");
        }
    }
}

#[test]
fn an_in_place_one_frame_edit_writes_only_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let big = text(256 * FRAME, 5);
    let files = |data: Vec<u8>| vec![("big.bin".to_string(), data, Compression::Auto)];
    let old = write(dir.path(), "old.mf", &files(big.clone()));
    let mut changed = big;
    changed[100 * FRAME + 17] ^= 0x20;
    let new = write(dir.path(), "new.mf", &files(changed));
    let patch = dir.path().join("p.mfp");
    let report = diff(&old, &new, &patch);
    assert_eq!(method_of(&report, "big.bin"), Method::Frames);

    let target = dir.path().join("target.mf");
    std::fs::copy(&old, &target).unwrap();
    let outcome = apply_in_place(&patch, &target, InPlaceOptions::default(), &|_| {}).unwrap();
    assert_eq!(contents(&target), contents(&new));
    // One compressed frame, the index (its frame table has 256 records) and footer, the slot.
    let index = Archive::open(&target).unwrap().index_extent().1;
    assert!(
        outcome.bytes_written <= FRAME as u64 + index + 200,
        "wrote {} bytes for one frame (index {index})",
        outcome.bytes_written
    );
    // Every other frame of the entry is where it was.
    let frames = |path: &Path| {
        let archive = Archive::open(path).unwrap();
        let entry = archive.get("big.bin").unwrap();
        archive.entry_frames(&entry).map(|f| archive.frames()[f as usize]).collect::<Vec<_>>()
    };
    let (before, after) = (frames(&old), frames(&target));
    let moved: Vec<usize> = (0..before.len()).filter(|&k| before[k] != after[k]).collect();
    assert_eq!(moved, vec![100]);
}

#[test]
fn entries_that_mostly_changed_are_diffed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.mf", &[("a.bin".into(), text(32 * FRAME, 1), Compression::Auto)]);
    let mut data = text(32 * FRAME, 1);
    data.insert(5, b'!'); // shifts every frame
    let new = write(dir.path(), "new.mf", &[("a.bin".into(), data, Compression::Auto)]);
    let report = diff(&old, &new, &dir.path().join("p.mfp"));
    assert_ne!(method_of(&report, "a.bin"), Method::Frames);
}

// ---- hostile frames records ----

/// The old archive of the hostile tests: one compressed entry of 16 frames.
fn hostile_base(dir: &Path, log2: u8) -> (PathBuf, Vec<u8>) {
    let data = text(16 * FRAME, 3);
    let path = write_with(dir, &format!("old{log2}.mf"), log2, &[("big.bin".into(), data.clone(), Compression::Zstd)]);
    (path, data)
}

/// A one-record archive patch from `old` to a new archive holding `new_data` at "big.bin" (written
/// to compute its content id), with `record`'s payload blobs `blobs`.
fn craft(dir: &Path, old: &Path, new_data: &[u8], minor: u16, mut record: EntryRecord, blobs: &[Vec<u8>]) -> PathBuf {
    let old_archive = Archive::open(old).unwrap();
    let new = write(dir, "crafted-new.mf", &[("big.bin".into(), new_data.to_vec(), Compression::Zstd)]);
    let new_archive = Archive::open(&new).unwrap();
    record.old_index = Some(0);
    record.base_hash = Some(old_archive.entry(0).unwrap().content_hash());
    let mut control = Vec::new();
    ArchivePreamble {
        frame_size_log2: LOG2,
        level: 9,
        old_entry_count: 1,
        new_entry_count: 1,
        content_ids: Some(ContentIds { old: content_id(&old_archive), new: content_id(&new_archive) }),
    }
    .write(&mut control);
    record.write(&mut control, &mut -1);
    let control = zstd::bulk::compress(&control, 3).unwrap();
    let blob_bytes: Vec<u8> = blobs.concat();
    let mut body = control.clone();
    body.extend_from_slice(&blob_bytes);
    let header = PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: minor,
        kind: KIND_ARCHIVE,
        flags: FLAG_CONTENT_IDS,
        old_len: std::fs::metadata(old).unwrap().len(),
        old_id: 0, // never the base's index hash: the base is recognised by its content id
        new_len: 1 << 24,
        new_hash: 0,
        control_len: control.len() as u64,
        blobs_len: blob_bytes.len() as u64,
        body_hash: xxh3_64(&body),
    };
    let mut bytes = header.to_bytes().to_vec();
    bytes.extend_from_slice(&body);
    assert_eq!(bytes.len() as u64, PATCH_HEADER_LEN + body.len() as u64);
    let path = dir.join("crafted.mfp");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn frames_record(size: u64, hash: u64, runs: Vec<FrameRun>) -> EntryRecord {
    EntryRecord {
        at: 0,
        op: Op::Frames,
        old_index: Some(0),
        path: None,
        mode: None,
        mtime: None,
        size,
        hash,
        base_hash: None,
        storage: Storage::AllFrames,
        payload: PayloadDesc::Frames(runs),
    }
}

fn keep(frames: u64) -> FrameRun {
    FrameRun { frames, patch: None }
}

/// A run of one frame rebuilt by a full block of `content`, claiming `len` bytes and `hash`.
fn full_run(content: &[u8], len: u64, hash: u64) -> (FrameRun, Vec<u8>) {
    let blob = zstd::bulk::compress(content, 3).unwrap();
    let block = BlockDesc { new_len: len, old_start: 0, old_len: 0, blob_len: blob.len() as u64, blob_at: 0 };
    let patch = RunPatch { op: Op::Full, hash, old_start: 0, old_len: 0, payload: PayloadDesc::Blocks(vec![block]) };
    (FrameRun { frames: 1, patch: Some(patch) }, blob)
}

/// Applies `patch` both ways: both fail with an error for which `expect` holds, the rebuild writes
/// nothing and the in-place apply leaves the archive's bytes as they were.
fn refused(dir: &Path, patch: &Path, old: &Path, expect: impl Fn(&Error) -> bool) {
    let target = dir.join("out.mf");
    let err = apply_patch(patch, old, &target, &|_| {}).unwrap_err();
    assert!(expect(&err), "rebuild: {err}");
    // Parsing names a record without a path by its base (the old archive is not open yet).
    let text = err.to_string();
    assert!(text.contains("big.bin") || text.contains("#0 of the base"), "the error names the entry: {err}");
    assert!(!target.exists());
    let copy = dir.join("inplace.mf");
    std::fs::copy(old, &copy).unwrap();
    let err = apply_in_place(patch, &copy, InPlaceOptions::default(), &|_| {}).unwrap_err();
    assert!(expect(&err), "in place: {err}");
    assert_eq!(contents(&copy), contents(old), "nothing committed");
}

#[test]
fn a_correct_crafted_patch_applies_so_the_hostile_ones_below_fail_for_their_flaw_only() {
    let dir = tempfile::tempdir().unwrap();
    let (old, data) = hostile_base(dir.path(), LOG2);
    let mut new_data = data.clone();
    new_data[8 * FRAME..9 * FRAME].copy_from_slice(&text(FRAME, 99));
    let frame8 = &new_data[8 * FRAME..9 * FRAME];
    let (run, blob) = full_run(frame8, FRAME as u64, xxh3_64(frame8));
    let record = frames_record(new_data.len() as u64, xxh3_64(&new_data), vec![keep(8), run, keep(7)]);
    let patch = craft(dir.path(), &old, &new_data, PATCH_VERSION_MINOR, record, &[blob]);
    let target = dir.path().join("out.mf");
    apply_patch(&patch, &old, &target, &|_| {}).unwrap();
    assert_eq!(contents(&target)[0].4, new_data);
    apply_in_place(&patch, &old, InPlaceOptions::default(), &|_| {}).unwrap();
    assert_eq!(contents(&old)[0].4, new_data);
}

#[test]
fn hostile_frames_records_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (old, data) = hostile_base(dir.path(), LOG2);
    let size = data.len() as u64;
    let hash = xxh3_64(&data);
    let corrupt = |e: &Error| matches!(e, Error::CorruptPatch { .. });

    // A keep run past the entry's frame count.
    let patch = craft(dir.path(), &old, &data, PATCH_VERSION_MINOR, frames_record(size, hash, vec![keep(17)]), &[]);
    refused(dir.path(), &patch, &old, |e| corrupt(e) && e.to_string().contains("frames in the run"));

    // Runs that cover fewer frames than the entry has.
    let patch = craft(dir.path(), &old, &data, PATCH_VERSION_MINOR, frames_record(size, hash, vec![keep(15)]), &[]);
    refused(dir.path(), &patch, &old, |e| corrupt(e) && e.to_string().contains("cover 15"));

    // A keep of frames the base does not have (the new entry is longer than the base).
    let mut longer = data.clone();
    longer.extend_from_slice(&text(2 * FRAME, 8));
    let record = frames_record(longer.len() as u64, xxh3_64(&longer), vec![keep(18)]);
    let patch = craft(dir.path(), &old, &longer, PATCH_VERSION_MINOR, record, &[]);
    refused(dir.path(), &patch, &old, |e| matches!(e, Error::WrongBase { .. }) && e.to_string().contains("frame 17"));

    // A nested op producing the wrong length: the block says 4096 bytes, its frame holds 4000.
    let mut new_data = data.clone();
    new_data[4 * FRAME..5 * FRAME].fill(b'x');
    let (run, blob) = full_run(&new_data[4 * FRAME..5 * FRAME - 96], FRAME as u64, 0);
    let record = frames_record(size, xxh3_64(&new_data), vec![keep(4), run, keep(11)]);
    let patch = craft(dir.path(), &old, &new_data, PATCH_VERSION_MINOR, record, &[blob]);
    refused(dir.path(), &patch, &old, |e| corrupt(e) && e.to_string().contains("does not decode"));

    // A rebuilt run whose bytes miss the run's hash.
    let (run, blob) = full_run(&new_data[4 * FRAME..5 * FRAME], FRAME as u64, 12345);
    let record = frames_record(size, xxh3_64(&new_data), vec![keep(4), run, keep(11)]);
    let patch = craft(dir.path(), &old, &new_data, PATCH_VERSION_MINOR, record, &[blob]);
    refused(dir.path(), &patch, &old, |e| {
        matches!(e, Error::OutputMismatch { .. }) && e.to_string().contains("frames 4..=4")
    });

    // A record hash that is not the new content's (the new content id was made with the right one).
    let (run, blob) = full_run(&new_data[4 * FRAME..5 * FRAME], FRAME as u64, xxh3_64(&new_data[4 * FRAME..5 * FRAME]));
    let record = frames_record(size, xxh3_64(&new_data) ^ 1, vec![keep(4), run, keep(11)]);
    let patch = craft(dir.path(), &old, &new_data, PATCH_VERSION_MINOR, record, &[blob]);
    let target = dir.path().join("out.mf");
    let err = apply_patch(&patch, &old, &target, &|_| {}).unwrap_err();
    assert!(matches!(err, Error::OutputMismatch { .. }) && err.to_string().contains("big.bin"), "{err}");
    assert!(!target.exists());
    let copy = dir.path().join("inplace.mf");
    std::fs::copy(&old, &copy).unwrap();
    let err = apply_in_place(&patch, &copy, InPlaceOptions::default(), &|_| {}).unwrap_err();
    assert!(err.to_string().contains("content id"), "{err}");
    assert_eq!(contents(&copy), contents(&old), "nothing committed");

    // Operation 4 in a patch that says it is 2.2: refused at its first byte, as a 2.2 reader does.
    let patch = craft(dir.path(), &old, &data, 2, frames_record(size, hash, vec![keep(16)]), &[]);
    for err in [
        apply_patch(&patch, &old, &dir.path().join("out.mf"), &|_| {}).unwrap_err(),
        apply_in_place(&patch, &old, InPlaceOptions::default(), &|_| {}).unwrap_err(),
    ] {
        assert!(corrupt(&err) && err.to_string().contains("unknown operation 4"), "{err}");
    }
    assert_eq!(contents(&old)[0].4, data);
}

#[test]
fn a_keep_on_a_base_cut_in_other_frames_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The same content (so the same content id) in frames of 8 KiB: the patch keeps 4 KiB frames.
    let (old, data) = hostile_base(dir.path(), LOG2 + 1);
    let record = frames_record(data.len() as u64, xxh3_64(&data), vec![keep(16)]);
    let patch = craft(dir.path(), &old, &data, PATCH_VERSION_MINOR, record, &[]);
    refused(dir.path(), &patch, &old, |e| matches!(e, Error::WrongBase { .. }) && e.to_string().contains("2^13"));
}

#[test]
fn kept_frames_are_not_read_in_place_unless_a_check_needs_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    // 1024 frames: the edited frame's base window (1 MiB each side) ends far from frame 10.
    let big = text(1024 * FRAME, 5);
    let files = |data: Vec<u8>| vec![("big.bin".to_string(), data, Compression::Zstd)];
    let old = write(dir.path(), "old.mf", &files(big.clone()));
    let mut changed = big;
    changed[900 * FRAME + 3] ^= 0x20;
    let new = write(dir.path(), "new.mf", &files(changed));
    let patch = dir.path().join("p.mfp");
    diff(&old, &new, &patch);

    // Damage kept frame 10 of the old archive (its stored bytes, past the zstd frame header).
    let damaged = dir.path().join("damaged.mf");
    std::fs::copy(&old, &damaged).unwrap();
    let frame = {
        let archive = Archive::open(&old).unwrap();
        let entry = archive.get("big.bin").unwrap();
        archive.frames()[archive.entry_frames(&entry).nth(10).unwrap() as usize]
    };
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[(frame.offset + u64::from(frame.stored_len) / 2) as usize] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();

    // With a caller's check, every byte streams: the damage is found and nothing is committed.
    let target = dir.path().join("checked.mf");
    std::fs::copy(&damaged, &target).unwrap();
    let mut check = HashEverything::default();
    let options = InPlaceOptions { check: Some(&mut check), ..InPlaceOptions::default() };
    assert!(apply_in_place(&patch, &target, options, &|_| {}).is_err());
    let committed = Archive::open(&target).unwrap();
    assert_eq!(committed.index_extent(), Archive::open(&damaged).unwrap().index_extent(), "nothing committed");

    // Without one, the kept frames are neither read nor decoded (spec/PATCH.md "Applying in place"):
    // the apply succeeds, only frame 900 is written, and the damaged frame stays as it was, where a
    // read of it (or `mf verify`) reports it.
    let outcome = apply_in_place(&patch, &damaged, InPlaceOptions::default(), &|_| {}).unwrap();
    assert!(outcome.bytes_written < 2 * FRAME as u64 + Archive::open(&damaged).unwrap().index_extent().1 + 200);
    let archive = Archive::open(&damaged).unwrap();
    assert!(archive.read(&archive.get("big.bin").unwrap()).is_err());
}

#[test]
fn a_forged_frames_patch_never_panics_never_writes_and_never_commits_a_wrong_archive() {
    let dir = tempfile::tempdir().unwrap();
    let big = text(32 * FRAME, 11);
    let mut changed = big.clone();
    changed[9 * FRAME + 5..9 * FRAME + 15].copy_from_slice(b"0123456789");
    let old = write(dir.path(), "old.mf", &[("big.bin".into(), big, Compression::Zstd)]);
    let new = write(dir.path(), "new.mf", &[("big.bin".into(), changed, Compression::Zstd)]);
    let patch = dir.path().join("p.mfp");
    assert_eq!(method_of(&diff(&old, &new, &patch), "big.bin"), Method::Frames);
    let good = std::fs::read(&patch).unwrap();
    let control_len = u64::from_le_bytes(good[48..56].try_into().unwrap()) as usize;
    let control = zstd::decode_all(&good[80..80 + control_len]).unwrap();
    let blobs = &good[80 + control_len..];
    let (old_contents, new_contents) = (contents(&old), contents(&new));
    for at in 0..control.len() {
        let mut forged = control.clone();
        forged[at] ^= 0x55;
        // Re-sealed with valid checksums, so the parser and the appliers see the damage.
        let compressed = zstd::bulk::compress(&forged, 3).unwrap();
        let mut header = good[..80].to_vec();
        header[48..56].copy_from_slice(&(compressed.len() as u64).to_le_bytes());
        let mut body = compressed;
        body.extend_from_slice(blobs);
        header[64..72].copy_from_slice(&xxh3_64(&body).to_le_bytes());
        let hash = xxh3_64(&header[..72]);
        header[72..80].copy_from_slice(&hash.to_le_bytes());
        header.extend_from_slice(&body);
        let forged_path = dir.path().join("forged.mfp");
        std::fs::write(&forged_path, &header).unwrap();

        let out = dir.path().join("out.mf");
        match apply_patch(&forged_path, &old, &out, &|_| {}) {
            Ok(outcome) => {
                assert!(outcome.exact, "byte {at}");
                std::fs::remove_file(&out).unwrap();
            }
            Err(_) => assert!(!out.exists(), "byte {at}"),
        }
        let copy = dir.path().join("copy.mf");
        std::fs::copy(&old, &copy).unwrap();
        match apply_in_place(&forged_path, &copy, InPlaceOptions::default(), &|_| {}) {
            Ok(_) => assert_eq!(contents(&copy), new_contents, "byte {at}: committed something else"),
            Err(_) => assert_eq!(contents(&copy), old_contents, "byte {at}: a failure committed"),
        }
    }
}
