//! Format 2.0's new structures: deduplication, solid blocks, commit slots, and the sharing rules a
//! reader enforces on forged indexes (each refused with an error naming the entry or frame and the
//! offset of its record). Forgeries rewrite a valid archive and recompute every checksum, so the
//! semantic checks are what catches them.

use mf_format::format::{self, CommitSlot, EntryRecord, Footer, FrameRecord, IndexHeader, FOOTER_LEN};
use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, Error, StoredAs, WriterOptions};
use mf_test_support::{noise, text};

const NAME: &str = "v2.mf";
const SMALL_FRAMES: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };
const FRAME: usize = 1 << 12;

fn pack(options: WriterOptions, entries: &[(&str, Vec<u8>, Compression)]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new(), options).unwrap();
    for (path, data, compression) in entries {
        writer.add_bytes(path, data, EntryOptions { compression: *compression, ..EntryOptions::default() }).unwrap();
    }
    writer.finish().unwrap()
}

/// Solid entries `s0..s5` (about 1.5 KiB of text each, spanning frame boundaries), a duplicate of
/// `s1`, an own-frames entry of two frames, a raw entry and an empty one.
fn specimen() -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>, Compression)> =
        (0..6).map(|i| (format!("s{i}.txt"), text(i, 40), Compression::Auto)).collect();
    entries.push(("dup.txt".into(), text(1, 40), Compression::Auto));
    entries.push(("own.txt".into(), text(9, 400)[..FRAME + 10].to_vec(), Compression::Zstd));
    entries.push(("raw.bin".into(), noise(300, 1), Compression::Store));
    entries.push(("empty".into(), Vec::new(), Compression::Auto));
    let borrowed: Vec<(&str, Vec<u8>, Compression)> =
        entries.iter().map(|(p, d, c)| (p.as_str(), d.clone(), *c)).collect();
    pack(SMALL_FRAMES, &borrowed)
}

/// A 2.0 archive being forged: positions of the tables as they were when it was made.
struct Forger {
    bytes: Vec<u8>,
    index_at: usize,
    entries: usize,
}

impl Forger {
    fn new(bytes: Vec<u8>) -> Forger {
        let footer: Footer = format::from_bytes(&bytes[bytes.len() - 40..]).unwrap();
        let header: IndexHeader = format::from_bytes(&bytes[footer.index_offset as usize..]).unwrap();
        Forger { index_at: footer.index_offset as usize, entries: header.entry_count as usize, bytes }
    }
    fn record_at(&self, i: usize) -> usize {
        self.index_at + 32 + 64 * i
    }
    fn frame_at(&self, f: usize) -> usize {
        self.record_at(self.entries) + 16 * f
    }
    fn find(&self, path: &str) -> usize {
        let archive = Archive::from_bytes(self.bytes.clone(), NAME).unwrap();
        archive.get(path).unwrap().index() as usize
    }
    fn record(&self, i: usize) -> EntryRecord {
        format::from_bytes(&self.bytes[self.record_at(i)..]).unwrap()
    }
    fn edit(&mut self, path: &str, change: impl FnOnce(&mut EntryRecord)) -> &mut Self {
        let i = self.find(path);
        let mut record = self.record(i);
        change(&mut record);
        let at = self.record_at(i);
        self.bytes[at..at + 64].copy_from_slice(&format::to_bytes(&record));
        self
    }
    /// Edits several records at once (found before any is changed).
    fn edit_all(&mut self, changes: &[(&str, u16)]) -> &mut Self {
        let found: Vec<usize> = changes.iter().map(|(path, _)| self.find(path)).collect();
        for (i, (_, flags)) in found.into_iter().zip(changes) {
            let mut record = self.record(i);
            record.flags = *flags;
            let at = self.record_at(i);
            self.bytes[at..at + 64].copy_from_slice(&format::to_bytes(&record));
        }
        self
    }
    fn frame(&self, f: usize) -> FrameRecord {
        format::from_bytes(&self.bytes[self.frame_at(f)..]).unwrap()
    }
    fn edit_frame(&mut self, f: usize, change: impl FnOnce(&mut FrameRecord)) -> &mut Self {
        let mut frame = self.frame(f);
        change(&mut frame);
        let at = self.frame_at(f);
        self.bytes[at..at + 16].copy_from_slice(&format::to_bytes(&frame));
        self
    }
    fn open(&mut self) -> mf_format::Result<Archive> {
        let footer_at = self.bytes.len() - 40;
        let index = &self.bytes[self.index_at..footer_at];
        let footer = Footer::new(self.index_at as u64, index.len() as u64, format::xxh3(index));
        self.bytes[footer_at..].copy_from_slice(&format::to_bytes(&footer));
        Archive::from_bytes(self.bytes.clone(), NAME)
    }
}

#[track_caller]
fn refused(result: mf_format::Result<Archive>, entry: Option<&str>, offset: usize, what: &str) {
    let err = result.expect_err("the forged archive must be refused");
    let message = err.to_string();
    match &err {
        Error::Corrupt { offset: at, entry: named, what: said, .. } => {
            assert_eq!(*at, offset as u64, "{message}");
            assert_eq!(named.as_deref(), entry, "{message}");
            assert!(said.contains(what), "expected {what:?} in: {message}");
            assert!(message.starts_with(NAME), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn the_specimen_has_every_kind_of_storage_and_reads_back() {
    let bytes = specimen();
    let archive = Archive::from_bytes(bytes, NAME).unwrap();
    assert_eq!(archive.version(), (2, 1));
    assert!(archive.verify().is_empty());
    let s1 = archive.get("s1.txt").unwrap();
    let dup = archive.get("dup.txt").unwrap();
    assert!(s1.is_solid() && dup.is_solid());
    assert_eq!(s1.record().first_frame, dup.record().first_frame);
    assert_eq!(archive.entry_skip(&s1), archive.entry_skip(&dup));
    assert_eq!(archive.read(&dup).unwrap().as_ref(), &text(1, 40)[..]);
    assert_eq!(archive.get("own.txt").unwrap().stored_as(), StoredAs::Zstd);
    assert!(!archive.get("own.txt").unwrap().is_solid());
    assert_eq!(archive.get("raw.bin").unwrap().stored_as(), StoredAs::Raw);
    let space = archive.space();
    assert_eq!(space.shared_entries, 1);
    assert_eq!(space.shared_bytes, text(1, 40).len() as u64);
    assert_eq!(space.solid_entries, 7);
    assert!(space.dead < 16 * 12, "only alignment padding is dead in a fresh pack: {space:?}");
    // Solid entries straddle frame boundaries, and every entry reads at every offset.
    assert!(archive.entries().any(|e| e.is_solid() && archive.frame_count(&e) == 2));
    for entry in archive.entries() {
        let whole = archive.read(&entry).unwrap().into_owned();
        for offset in 0..whole.len() {
            let mut buf = [0u8; 700];
            let n = archive.read_at(&entry, offset as u64, &mut buf).unwrap();
            assert_eq!(&buf[..n], &whole[offset..(offset + 700).min(whole.len())], "{} at {offset}", entry.path());
        }
    }
}

/// An entry's share of its frames, byte by byte: each frame's stored length spread evenly over its
/// decoded bytes, summed over the bytes the entry holds.
fn share_by_bytes(archive: &Archive, entry: &mf_format::Entry<'_>) -> f64 {
    let mut at = archive.entry_skip(entry);
    let mut left = entry.size();
    let mut share = 0.0;
    for f in archive.entry_frames(entry) {
        let frame = archive.frames()[f as usize];
        let held = (u64::from(frame.len) - at).min(left);
        share += f64::from(frame.stored_len) * held as f64 / f64::from(frame.len);
        left -= held;
        at = 0;
    }
    share
}

#[test]
fn stored_shares_split_solid_frames_and_add_up_to_the_stored_bytes() {
    let archive = Archive::from_bytes(specimen(), NAME).unwrap();
    let mut straddling = 0;
    let mut total = 0;
    for entry in archive.entries() {
        let share = archive.stored_share(&entry);
        if entry.is_solid() {
            assert!(share < entry.stored_size(), "{}: {share} of {}", entry.path(), entry.stored_size());
            assert!((share as f64 - share_by_bytes(&archive, &entry)).abs() <= 1.0, "{}: {share}", entry.path());
            straddling += usize::from(archive.frame_count(&entry) == 2);
        } else {
            assert_eq!(share, entry.stored_size(), "{}", entry.path());
        }
        total += share;
    }
    assert!(straddling > 0, "the specimen's solid entries straddle frames");
    // The duplicate counts its extent again; the rest adds up to the distinct stored bytes, up to
    // the rounding of each entry's two partial frames.
    let distinct = total - archive.stored_share(&archive.get("dup.txt").unwrap());
    let parts = 2 * archive.len() as u64;
    assert!(distinct.abs_diff(archive.total_stored_size()) <= parts, "{distinct} vs {}", archive.total_stored_size());
}

#[test]
fn duplicates_are_stored_once_whatever_their_size_or_way_in() {
    let big = text(3, 200_000); // a few MiB: frames of its own
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    writer.add_bytes("a/big", &big, EntryOptions::default()).unwrap();
    writer.add_file("b/big", &dir.path().join("big"), EntryOptions::default()).unwrap();
    writer.add_reader("c/big", &big[..], EntryOptions::default()).unwrap(); // a stream: stored again
    for i in 0..1000 {
        writer.add_bytes(&format!("same/{i}"), b"identical small file\n", EntryOptions::default()).unwrap();
        writer.add_bytes(&format!("empty/{i}"), b"", EntryOptions::default()).unwrap();
    }
    let noise_file = noise(1 << 20, 5);
    writer.add_bytes("n1.bin", &noise_file, EntryOptions::default()).unwrap();
    writer.add_bytes("n2.bin", &noise_file, EntryOptions::default()).unwrap();
    let bytes = writer.finish().unwrap();
    let archive = Archive::from_bytes(bytes.clone(), NAME).unwrap();
    assert_eq!(archive.verify().iter().map(|e| e.to_string()).collect::<Vec<_>>(), Vec::<String>::new());
    let stored = |p: &str| *archive.get(p).unwrap().record();
    let (a, b, c) = (stored("a/big"), stored("b/big"), stored("c/big"));
    assert_eq!((a.first_frame, a.frame_count), (b.first_frame, b.frame_count), "identical files share frames");
    assert_ne!(a.first_frame, c.first_frame, "a streamed copy is written before its hash is known");
    assert_eq!(stored("n1.bin").offset, stored("n2.bin").offset, "raw extents are shared too");
    let space = archive.space();
    assert_eq!(space.shared_entries, 1 + 999 + 1);
    // Two identical 1 MiB incompressible files cost 1 MiB.
    let frames_stored: u64 = archive.frames().iter().map(|f| u64::from(f.stored_len)).sum();
    assert!(bytes.len() as u64 <= frames_stored + (1 << 20) + 200_000, "{} bytes", bytes.len());
    for i in [0, 500, 999] {
        assert_eq!(
            archive.read(&archive.get(&format!("same/{i}")).unwrap()).unwrap().as_ref(),
            b"identical small file\n"
        );
        assert_eq!(archive.get(&format!("empty/{i}")).unwrap().size(), 0);
    }
    assert_eq!(archive.read(&archive.get("c/big").unwrap()).unwrap().as_ref(), &big[..]);
}

#[test]
fn thousands_of_small_files_share_solid_frames_and_are_smaller_than_alone() {
    let files: Vec<(String, Vec<u8>)> =
        (0..3000).map(|i| (format!("d{}/f{i}.txt", i % 7), text(i, 3 + i as usize % 20))).collect();
    let mut solid = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    let mut alone = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for (path, data) in &files {
        solid.add_bytes(path, data, EntryOptions::default()).unwrap();
        let own = EntryOptions { compression: Compression::Zstd, ..EntryOptions::default() };
        alone.add_bytes(path, data, own).unwrap();
    }
    let (solid, alone) = (solid.finish().unwrap(), alone.finish().unwrap());
    assert!(solid.len() * 3 < alone.len() * 2, "solid {} vs one frame each {}", solid.len(), alone.len());
    let archive = Archive::from_bytes(solid, NAME).unwrap();
    assert!(archive.verify().is_empty());
    assert!(archive.frames().len() < 20, "{} frames", archive.frames().len());
    for (path, data) in files.iter().step_by(97) {
        let entry = archive.get(path).unwrap();
        assert!(entry.is_solid());
        assert_eq!(archive.read(&entry).unwrap().as_ref(), &data[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Commit slots

/// `bytes` with slot `i` (0 or 1) set to `slot`.
fn with_slot(mut bytes: Vec<u8>, i: usize, slot: CommitSlot) -> Vec<u8> {
    let at = 32 + 32 * i;
    bytes[at..at + 32].copy_from_slice(&format::to_bytes(&slot));
    bytes
}

/// The archive with a second copy of its index and footer appended (an update's new version).
fn with_second_version(bytes: &[u8]) -> (Vec<u8>, u64, u64) {
    let footer: Footer = format::from_bytes(&bytes[bytes.len() - 40..]).unwrap();
    let old_footer_at = bytes.len() as u64 - FOOTER_LEN;
    let index = bytes[footer.index_offset as usize..old_footer_at as usize].to_vec();
    let mut out = bytes.to_vec();
    let new_index_at = out.len() as u64;
    out.extend_from_slice(&index);
    let new_footer = Footer::new(new_index_at, index.len() as u64, format::xxh3(&index));
    let new_footer_at = out.len() as u64;
    out.extend_from_slice(&format::to_bytes(&new_footer));
    (out, old_footer_at, new_footer_at)
}

#[test]
fn commit_slots_pick_the_highest_valid_generation_and_ignore_torn_ones() {
    let bytes = specimen();
    let plain = Archive::from_bytes(bytes.clone(), NAME).unwrap();
    assert_eq!(plain.generation(), 0, "both slots empty: the footer is the last 40 bytes");

    let (two, old_at, new_at) = with_second_version(&bytes);
    let two = with_slot(with_slot(two, 0, CommitSlot::new(1, old_at)), 1, CommitSlot::new(2, new_at));
    let archive = Archive::from_bytes(two.clone(), NAME).unwrap();
    assert_eq!(archive.generation(), 2);
    assert_eq!(archive.index_extent().0 + archive.index_extent().1, new_at);
    assert!(archive.verify().is_empty());
    // The other way round, the older footer is the committed one; what follows it is an
    // uncommitted tail.
    let swapped = with_slot(with_slot(two.clone(), 0, CommitSlot::new(3, old_at)), 1, CommitSlot::new(2, new_at));
    let archive = Archive::from_bytes(swapped, NAME).unwrap();
    assert_eq!((archive.generation(), archive.index_extent().0 + archive.index_extent().1), (3, old_at));

    // A torn slot (its hash does not match) is ignored: the other one wins.
    let mut torn_slot = CommitSlot::new(9, new_at);
    torn_slot.slot_hash ^= 1;
    let torn = with_slot(two.clone(), 0, torn_slot);
    assert_eq!(Archive::from_bytes(torn, NAME).unwrap().generation(), 2);
    // Both torn: as if empty, the last 40 bytes are the footer.
    let mut torn_two = torn_slot;
    torn_two.generation = 10;
    let all_torn = with_slot(with_slot(two.clone(), 0, torn_slot), 1, torn_two);
    let archive = Archive::from_bytes(all_torn, NAME).unwrap();
    assert_eq!(archive.generation(), 0);
    // A torn slot on an archive whose end holds no footer: nothing valid to open.
    let mut tail = bytes.clone();
    tail.extend_from_slice(&[7u8; 100]);
    let tail = with_slot(tail, 0, torn_slot);
    refused(Archive::from_bytes(tail.clone(), NAME), None, tail.len() - 8, "end magic");
    // A valid slot makes the same tail an ignored, uncommitted one.
    let committed = with_slot(tail, 1, CommitSlot::new(1, bytes.len() as u64 - 40));
    assert!(Archive::from_bytes(committed, NAME).unwrap().verify().is_empty());
}

#[test]
fn a_valid_slot_pointing_at_garbage_is_corruption_not_a_fallback() {
    let bytes = specimen();
    let (two, old_at, _) = with_second_version(&bytes);
    // Generation 5 points into the data area: an error, although slot 0's version is intact.
    let bad = with_slot(with_slot(two.clone(), 0, CommitSlot::new(1, old_at)), 1, CommitSlot::new(5, 200));
    refused(Archive::from_bytes(bad, NAME), None, 232, "commit slot points at garbage");
    let outside = with_slot(two.clone(), 1, CommitSlot::new(5, two.len() as u64 - 39));
    refused(Archive::from_bytes(outside, NAME), None, 72, "outside the file");
    let same = with_slot(with_slot(two.clone(), 0, CommitSlot::new(4, old_at)), 1, CommitSlot::new(4, old_at));
    refused(Archive::from_bytes(same, NAME), None, 64, "both commit slots claim generation 4");
    let mut reserved = CommitSlot::new(1, old_at);
    reserved.reserved = 1;
    reserved.slot_hash = reserved.compute_hash();
    refused(Archive::from_bytes(with_slot(two, 0, reserved), NAME), None, 48, "reserved");
}

// ---------------------------------------------------------------------------------------------
// Sharing rules and frame records

#[test]
fn frame_records_out_of_bounds_are_refused() {
    let mut forger = Forger::new(specimen());
    let at = forger.frame_at(0);
    forger.edit_frame(0, |f| f.len = FRAME as u32 + 1);
    refused(forger.open(), None, at, "outside 1..=4096");
    let mut forger = Forger::new(specimen());
    forger.edit_frame(0, |f| f.stored_len = f.len + 1);
    refused(forger.open(), None, at, "stored length");
    let mut forger = Forger::new(specimen());
    forger.edit_frame(0, |f| f.offset = 50);
    refused(forger.open(), None, at, "outside the data area");
    let mut forger = Forger::new(specimen());
    let index_at = forger.index_at as u64;
    forger.edit_frame(0, |f| f.offset = index_at - 1);
    refused(forger.open(), None, at, "outside the data area");
}

#[test]
fn overlapping_frames_and_extents_are_refused() {
    let mut forger = Forger::new(specimen());
    let first = forger.frame(0);
    let at1 = forger.frame_at(1);
    forger.edit_frame(1, |f| f.offset = first.offset + 1);
    refused(forger.open(), None, at1, "overlap frame 0");
    // A raw extent over a frame.
    let mut forger = Forger::new(specimen());
    let raw_at = forger.record_at(forger.find("raw.bin"));
    forger.edit("raw.bin", |r| r.offset = first.offset);
    refused(forger.open(), Some("raw.bin"), raw_at, "overlaps frame");
}

#[test]
fn partially_overlapping_shared_ranges_are_refused() {
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("dup.txt"));
    forger.edit("dup.txt", |r| r.offset += 1); // one byte later than s1.txt: overlapping, not identical
    refused(forger.open(), Some("dup.txt"), at, "partially overlaps");
    // Identical ranges must have identical content hashes.
    let mut forger = Forger::new(specimen());
    forger.edit("dup.txt", |r| r.content_hash ^= 1);
    refused(forger.open(), Some("dup.txt"), at, "content hashes differ");
    // Two raw entries overlapping partially.
    let bytes =
        pack(SMALL_FRAMES, &[("r1", noise(300, 1), Compression::Store), ("r2", noise(300, 2), Compression::Store)]);
    let mut forger = Forger::new(bytes);
    let r1 = forger.record(0);
    let at = forger.record_at(1);
    forger.edit("r2", |r| r.offset = r1.offset + 10);
    refused(forger.open(), Some("r2"), at, "partially overlaps");
}

#[test]
fn unused_frames_and_runs_that_are_not_minimal_are_refused() {
    // own.txt has two frames; claiming one leaves the second unused.
    let mut forger = Forger::new(specimen());
    let own = forger.record(forger.find("own.txt"));
    let second = own.first_frame as usize + 1;
    let at = forger.frame_at(second);
    forger.edit("own.txt", |r| {
        r.frame_count = 1;
        r.size = FRAME as u64;
    });
    refused(forger.open(), None, at, "no entry uses it");
    // A skip at or past the first frame's end.
    let mut forger = Forger::new(specimen());
    let i = forger.find("s0.txt");
    let at = forger.record_at(i);
    forger.edit("s0.txt", |r| r.offset = FRAME as u64);
    refused(forger.open(), Some("s0.txt"), at, "not minimal");
    // A run one frame longer than needed.
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("own.txt"));
    forger.edit("own.txt", |r| r.size = FRAME as u64);
    refused(forger.open(), Some("own.txt"), at, "not minimal");
    // A run past the table, and content past the run.
    let mut forger = Forger::new(specimen());
    forger.edit("own.txt", |r| r.frame_count = 1000);
    refused(forger.open(), Some("own.txt"), at, "outside the frame table");
    let mut forger = Forger::new(specimen());
    forger.edit("own.txt", |r| r.size += 5000);
    refused(forger.open(), Some("own.txt"), at, "runs past its 2 frames");
}

#[test]
fn unknown_fields_of_2_0_are_refused() {
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("own.txt"));
    forger.edit("own.txt", |r| r.flags = 4);
    refused(forger.open(), Some("own.txt"), at, "unknown entry flags");
    // The X86 filter flag (2.1) on a raw entry and on a solid one.
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("raw.bin"));
    forger.edit("raw.bin", |r| r.flags = format::ENTRY_FLAG_X86);
    refused(forger.open(), Some("raw.bin"), at, "X86 filter flag");
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("s1.txt"));
    forger.edit("s1.txt", |r| r.flags |= format::ENTRY_FLAG_X86);
    refused(forger.open(), Some("s1.txt"), at, "solid entry with the X86 filter flag");
    // Entries sharing data must agree on the filter: the same range (a duplicate), or one frame
    // holding two entries' disjoint ranges (the SOLID flag cleared, so only sharing is left to refuse).
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("dup.txt"));
    forger.edit_all(&[("s1.txt", 0), ("dup.txt", format::ENTRY_FLAG_X86)]);
    refused(
        forger.open(),
        Some("dup.txt"),
        at,
        "shares its content range (in decoded frame coordinates) with entry 's1.txt' but not its X86 filter flag",
    );
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("s2.txt"));
    forger.edit_all(&[("s1.txt", 0), ("dup.txt", 0), ("s2.txt", format::ENTRY_FLAG_X86)]);
    refused(forger.open(), Some("s2.txt"), at, "but not its X86 filter flag");
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("raw.bin"));
    forger.edit("raw.bin", |r| r.flags = 1);
    refused(forger.open(), Some("raw.bin"), at, "solid flag");
    let mut forger = Forger::new(specimen());
    let at = forger.record_at(forger.find("empty"));
    forger.edit("empty", |r| r.offset = 96);
    refused(forger.open(), Some("empty"), at, "empty entry");
    let mut forger = Forger::new(specimen());
    let mut header: IndexHeader = format::from_bytes(&forger.bytes[forger.index_at..]).unwrap();
    header.dictionary_count = 1;
    let index_at = forger.index_at;
    forger.bytes[index_at..index_at + 32].copy_from_slice(&format::to_bytes(&header));
    refused(forger.open(), None, index_at + 24, "dictionary count");
}

#[test]
fn archives_of_format_1_0_still_open_read_and_verify() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for name in
        ["v1-tree.mf", "v1-mixed-frames.mf", "v1-multi-frame.mf", "v1-empty-entries.mf", "v1-unsorted-data-order.mf"]
    {
        let archive = Archive::open(dir.join(name)).unwrap();
        assert_eq!(archive.version().0, 1, "{name}");
        assert!(archive.verify().is_empty(), "{name}");
        for entry in archive.entries() {
            let whole = archive.read(&entry).unwrap();
            let mut buf = vec![0u8; 5000];
            let offset = 3.min(whole.len());
            let n = archive.read_at(&entry, offset as u64, &mut buf).unwrap();
            assert_eq!(&buf[..n], &whole[offset..(offset + 5000).min(whole.len())]);
            seen += 1;
        }
        let pread = Archive::open_pread(dir.join(name)).unwrap();
        assert!(pread.verify().is_empty(), "{name}");
    }
    assert!(seen >= 12);
    // The known contents of the tree fixture (written by the 1.0 writer from fuzz_seeds).
    let tree = Archive::open(dir.join("v1-tree.mf")).unwrap();
    assert_eq!(tree.read(&tree.get("bin/run.sh").unwrap()).unwrap().as_ref(), b"#!/bin/sh\necho hi\n");
    assert_eq!(tree.get("bin/run.sh").unwrap().mode(), 0o755);
}

#[test]
fn a_1_x_reader_would_refuse_2_0_by_major_and_later_majors_are_refused() {
    let mut bytes = specimen();
    assert_eq!(&bytes[8..10], &[2, 0]);
    bytes[8] = 3;
    let hash = format::xxh3(&bytes[..24]);
    bytes[24..32].copy_from_slice(&hash.to_le_bytes());
    assert!(matches!(Archive::from_bytes(bytes, NAME), Err(Error::UnsupportedVersion { major: 3, .. })));
}
