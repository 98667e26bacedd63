//! Damaged and forged **format 1.0** archives (still read; see `bad_input_v2.rs` for 2.0): every one
//! must be refused with a clear error (naming the file, and
//! where it applies the entry and the offset), never a panic, never an allocation sized by a lying
//! field.
//!
//! Most forgeries are made by [`Doctor`], which takes a valid archive from the writer, rewrites some
//! structure and then recomputes the index, footer and header checksums, so the reader's semantic
//! checks are reached instead of stopping at a checksum mismatch.

use std::io::Read;

use mf_test_support::{mf_v1_bytes_with, noise};

use mf_format::format::{self, EntryRecord, Footer, Header, IndexHeader};
use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, Error, StoredAs, StoredLayout, WriterOptions};

/// Every allocation of this test binary together stays under 1 GiB: a reader that trusted a lying
/// count or size would abort the run instead of passing.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 1 << 30);

const NAME: &str = "doctored.mf";
const FRAME_SIZE: usize = 1 << 12;
const HEADER_END: u64 = 32;

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = seed;
    while out.len() < len {
        out.extend_from_slice(format!("line {i} of some compressible text\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn build(entries: &[(&str, Vec<u8>, Compression)]) -> Vec<u8> {
    mf_v1_bytes_with(WriterOptions { level: 3, frame_size_log2: 12 }, entries)
}

/// The standard specimen: a two-frame zstd entry whose last frame is stored raw, a raw entry, a
/// three-frame zstd entry in a directory, and an empty entry. Data order equals path order.
fn specimen_entries() -> Vec<(&'static str, Vec<u8>, Compression)> {
    vec![
        ("a.txt", text(FRAME_SIZE + 10, 0), Compression::Auto),
        ("b.bin", noise(300, 1), Compression::Store),
        ("c/d.txt", text(2 * FRAME_SIZE + 1000, 7), Compression::Auto),
        ("e", Vec::new(), Compression::Auto),
    ]
}

fn specimen() -> Vec<u8> {
    build(&specimen_entries())
}

/// Rewrites parts of a valid archive and re-seals it (recomputes index, footer and header hashes).
/// Positions are computed from the index header as it was when the `Doctor` was made, so a test
/// can make the counts lie without losing track of where the tables are.
struct Doctor {
    bytes: Vec<u8>,
    index_at: usize,
    entry_count: usize,
    frame_count: usize,
}

impl Doctor {
    fn new(bytes: Vec<u8>) -> Self {
        let footer: Footer = format::from_bytes(&bytes[bytes.len() - 40..]).unwrap();
        let index_at = footer.index_offset as usize;
        let header: IndexHeader = format::from_bytes(&bytes[index_at..]).unwrap();
        Doctor { index_at, entry_count: header.entry_count as usize, frame_count: header.frame_count as usize, bytes }
    }

    fn footer_at(&self) -> usize {
        self.bytes.len() - 40
    }

    fn index_header(&self) -> IndexHeader {
        format::from_bytes(&self.bytes[self.index_at..]).unwrap()
    }

    fn set_index_header(&mut self, header: IndexHeader) {
        self.put(self.index_at, &format::to_bytes(&header));
    }

    /// Absolute offset of record `i`.
    fn record_at(&self, i: usize) -> usize {
        self.index_at + 32 + 64 * i
    }

    fn record(&self, i: usize) -> EntryRecord {
        format::from_bytes(&self.bytes[self.record_at(i)..]).unwrap()
    }

    fn edit_record(&mut self, i: usize, edit: impl FnOnce(&mut EntryRecord)) -> &mut Self {
        let mut record = self.record(i);
        edit(&mut record);
        self.put(self.record_at(i), &format::to_bytes(&record));
        self
    }

    fn frames_at(&self) -> usize {
        self.record_at(self.entry_count)
    }

    fn frame_end(&self, j: usize) -> u64 {
        let at = self.frames_at() + 8 * j;
        u64::from_le_bytes(self.bytes[at..at + 8].try_into().unwrap())
    }

    fn set_frame_end(&mut self, j: usize, end: u64) -> &mut Self {
        self.put(self.frames_at() + 8 * j, &end.to_le_bytes());
        self
    }

    fn lookup_at(&self) -> usize {
        self.frames_at() + 8 * self.frame_count
    }

    fn set_lookup(&mut self, position: usize, entry: u32) -> &mut Self {
        self.put(self.lookup_at() + 4 * position, &entry.to_le_bytes());
        self
    }

    fn strings_at(&self) -> usize {
        self.lookup_at() + 4 * self.entry_count
    }

    /// Appends `path` to the string table (growing the index) and points record `i` at it.
    fn set_path(&mut self, i: usize, path: &[u8]) -> &mut Self {
        let mut header = self.index_header();
        let path_offset = header.strings_len as u32;
        header.strings_len += path.len() as u64;
        self.set_index_header(header);
        let footer_at = self.footer_at();
        self.bytes.splice(footer_at..footer_at, path.iter().copied());
        self.edit_record(i, |r| {
            r.path_offset = path_offset;
            r.path_len = path.len() as u32;
        })
    }

    fn set_header(&mut self, edit: impl FnOnce(&mut Header)) -> &mut Self {
        let mut header: Header = format::from_bytes(&self.bytes).unwrap();
        edit(&mut header);
        self.put(0, &format::to_bytes(&header));
        self
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Recomputes every checksum so only the semantic checks can catch the change.
    fn reseal(&mut self) -> &mut Self {
        let footer_at = self.footer_at();
        let index = &self.bytes[self.index_at..footer_at];
        let footer = Footer::new(self.index_at as u64, index.len() as u64, xxhash_rust::xxh3::xxh3_64(index));
        self.put(footer_at, &format::to_bytes(&footer));
        let mut header: Header = format::from_bytes(&self.bytes).unwrap();
        header.header_hash = header.compute_hash();
        self.put(0, &format::to_bytes(&header));
        self
    }

    fn open(&mut self) -> mf_format::Result<Archive> {
        self.reseal();
        Archive::from_bytes(self.bytes.clone(), NAME)
    }
}

/// Asserts a `Corrupt` error naming the file and, when given, the entry and the offset; returns the
/// message.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(
    result: mf_format::Result<T>,
    entry: Option<&str>,
    offset: Option<usize>,
    what: &str,
) -> String {
    let err = result.expect_err("the forged archive must be refused");
    let message = err.to_string();
    match &err {
        Error::Corrupt { file, offset: at, entry: named, what: said } => {
            assert_eq!(file.to_str(), Some(NAME), "{message}");
            assert!(message.starts_with(NAME), "the message names the file: {message}");
            if let Some(entry) = entry {
                assert_eq!(named.as_deref(), Some(entry), "{message}");
                assert!(message.contains(&format!("'{entry}'")), "the message names the entry: {message}");
            }
            if let Some(offset) = offset {
                assert_eq!(*at, offset as u64, "{message}");
                assert!(message.contains(&format!("offset {offset}")), "the message gives the offset: {message}");
            }
            assert!(said.contains(what), "expected {what:?} in: {message}");
        }
        other => panic!("expected a Corrupt error, got {other:?}: {message}"),
    }
    message
}

#[test]
fn the_doctor_changes_nothing_by_itself() {
    let original = specimen();
    let mut doctor = Doctor::new(original.clone());
    doctor.reseal();
    assert_eq!(doctor.bytes, original);
    let archive = doctor.open().unwrap();
    assert!(archive.verify().is_empty());
    let kinds: Vec<_> = archive.entries().map(|e| (e.path(), e.stored_as(), archive.frame_count(&e))).collect();
    assert_eq!(
        kinds,
        [
            ("a.txt", StoredAs::Zstd, 2),
            ("b.bin", StoredAs::Raw, 0),
            ("c/d.txt", StoredAs::Zstd, 3),
            ("e", StoredAs::Raw, 0)
        ]
    );
    // The specimen's second frame of a.txt (10 bytes) is stored raw inside a zstd entry.
    assert_eq!(doctor.frame_end(1) - doctor.frame_end(0), 10);
}

// ---------------------------------------------------------------------------------------------
// Truncation and bit flips

#[test]
fn truncation_at_every_length_is_an_error() {
    let bytes = specimen();
    let dir = tempfile::tempdir().unwrap();
    for len in 0..bytes.len() {
        let err = Archive::from_bytes(bytes[..len].to_vec(), NAME).expect_err("truncated archive must be refused");
        assert!(err.is_corruption(), "length {len}: {err}");
        assert!(err.to_string().starts_with(NAME), "length {len}: {err}");
        if len < 8 {
            assert!(matches!(err, Error::NotAnArchive { .. }), "length {len}: {err}");
        }
        // The file path goes through the short-file check and the mapping.
        let path = dir.path().join("t.mf");
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Archive::open(&path).expect_err("truncated file must be refused");
        assert!(err.is_corruption(), "length {len}: {err}");
        assert!(err.to_string().contains("t.mf"), "length {len}: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let message = assert_corrupt(Archive::from_bytes(longer, NAME), None, Some(bytes.len() - 7), "end magic");
    assert!(message.contains("trailing data"), "{message}");
}

/// Path, content, mode and size of every entry.
type Contents = Vec<(String, Vec<u8>, u32, u64)>;

/// Reads everything every way; returns the first error, if any.
fn read_everything(archive: &Archive) -> Result<Contents, Error> {
    if let Some(err) = archive.verify().into_iter().next() {
        return Err(err);
    }
    let mut contents = Vec::new();
    for entry in archive.entries() {
        let whole = archive.read(&entry)?.into_owned();
        let mut streamed = Vec::new();
        archive.reader(&entry).read_to_end(&mut streamed).map_err(|e| Error::Io { file: NAME.into(), error: e })?;
        assert_eq!(streamed, whole, "read and reader agree once both succeed");
        contents.push((entry.path().to_owned(), whole, entry.mode(), entry.size()));
    }
    Ok(contents)
}

#[test]
fn every_single_bit_flip_is_detected_or_harmless() {
    let original = specimen();
    let expected = read_everything(&Archive::from_bytes(original.clone(), NAME).unwrap()).unwrap();
    let intact = Archive::from_bytes(original.clone(), NAME).unwrap();
    let data_end = intact.index_extent().0 as usize;
    let entry_at =
        |at: usize| intact.entries().find(|e| (e.offset()..e.offset() + e.stored_size()).contains(&(at as u64)));

    let mut harmless = Vec::new();
    for at in 0..original.len() {
        for bit in 0..8 {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << bit;
            let result = Archive::from_bytes(bytes, NAME);
            let archive = match result {
                Err(err) => {
                    assert!(err.is_corruption(), "flip at {at}.{bit}: {err}");
                    assert!(err.to_string().starts_with(NAME), "flip at {at}.{bit}: {err}");
                    continue;
                }
                Ok(archive) => archive,
            };
            // Header, index and footer are checksummed: a flip there must not even open.
            assert!((32..data_end).contains(&at), "flip at {at}.{bit} outside the data area was not detected at open");
            match read_everything(&archive) {
                Err(err) => {
                    let entry = entry_at(at).unwrap_or_else(|| panic!("flip at {at}.{bit} in padding reported: {err}"));
                    let message = err.to_string();
                    assert!(message.contains(NAME) && message.contains(&format!("'{}'", entry.path())), "{message}");
                }
                Ok(contents) => {
                    assert_eq!(contents, expected, "flip at {at}.{bit} changed content without an error");
                    harmless.push(at);
                }
            }
        }
    }
    // Only padding and bits of zstd frames that do not change what they decode to may be harmless
    // (a raw frame's or raw entry's every bit changes the content, which the comparison above catches).
    for at in harmless {
        if let Some(entry) = entry_at(at) {
            assert_eq!(entry.stored_as(), StoredAs::Zstd, "undetected flip at {at} in raw entry {}", entry.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header, footer and version

#[test]
fn unsupported_major_versions_are_refused_by_name() {
    for major in [0u16, 3, 0xffff] {
        let mut doctor = Doctor::new(specimen());
        doctor.set_header(|h| h.version_major = major);
        let err = doctor.open().unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { major: m, minor: 0, .. } if m == major),
            "major {major}: {err}"
        );
        let message = err.to_string();
        assert!(message.starts_with(NAME) && message.contains(&format!("{major}.0")), "{message}");
    }
}

#[test]
fn a_later_minor_version_of_the_same_major_opens() {
    let mut doctor = Doctor::new(specimen());
    doctor.set_header(|h| h.version_minor = 7);
    let archive = doctor.open().unwrap();
    assert_eq!(archive.version(), (1, 7));
    assert!(archive.verify().is_empty());
    assert_eq!(&archive.read(&archive.get("c/d.txt").unwrap()).unwrap()[..], &text(2 * FRAME_SIZE + 1000, 7)[..]);
}

#[test]
fn bad_magic_and_frame_size_are_refused() {
    let mut bytes = specimen();
    bytes[1] = b'X';
    assert!(matches!(Archive::from_bytes(bytes, NAME), Err(Error::NotAnArchive { .. })));
    for log2 in [0u8, 11, 27, 255] {
        let mut doctor = Doctor::new(specimen());
        doctor.set_header(|h| h.frame_size_log2 = log2);
        assert_corrupt(doctor.open(), None, Some(12), "frame size");
    }
}

#[test]
fn footer_extents_that_lie_are_refused() {
    let original = specimen();
    let footer_at = original.len() - 40;
    let index_at = Doctor::new(original.clone()).index_at as u64;
    let index_len = (footer_at as u64) - index_at;
    let cases = [
        (0, index_len),
        (16, index_len + index_at - 16),
        (index_at + 1, index_len),
        (index_at, index_len + 1),
        (index_at, u64::MAX),
        (u64::MAX, index_len),
        (u64::MAX - 10, 20),
    ];
    for (index_offset, len) in cases {
        let mut bytes = original.clone();
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes[index_at as usize..footer_at]);
        bytes[footer_at..].copy_from_slice(&format::to_bytes(&Footer::new(index_offset, len, hash)));
        assert_corrupt(Archive::from_bytes(bytes, NAME), None, Some(footer_at), "index extent");
    }
    // An empty index (with the matching hash) cannot even hold the index header.
    let mut bytes = original.clone();
    let empty_hash = xxhash_rust::xxh3::xxh3_64(&[]);
    bytes[footer_at..].copy_from_slice(&format::to_bytes(&Footer::new(footer_at as u64, 0, empty_hash)));
    assert_corrupt(Archive::from_bytes(bytes, NAME), None, Some(footer_at), "shorter than its header");
}

// ---------------------------------------------------------------------------------------------
// Counts that lie

#[test]
fn counts_that_lie_are_refused_without_allocating_them() {
    let huge = [u64::MAX, 1 << 40, 1 << 32, u64::from(u32::MAX), 1 << 28, 1];
    for value in huge {
        for field in 0..3 {
            let mut doctor = Doctor::new(specimen());
            let mut header = doctor.index_header();
            match field {
                0 => header.entry_count = header.entry_count.wrapping_add(value),
                1 => header.frame_count = header.frame_count.wrapping_add(value),
                _ => header.strings_len = header.strings_len.wrapping_add(value),
            }
            doctor.set_index_header(header);
            let index_at = doctor.index_at;
            assert_corrupt(doctor.open(), None, Some(index_at), "counts do not add up");
        }
    }
    // Counts that add up but shift every table: the records no longer make sense.
    let mut doctor = Doctor::new(specimen());
    let mut header = doctor.index_header();
    header.entry_count -= 1;
    header.frame_count += 8;
    header.strings_len += 4;
    doctor.set_index_header(header);
    assert!(doctor.open().unwrap_err().is_corruption());
    // No assertion on memory here: the global allocator's cap makes any allocation sized by these
    // counts abort the whole test binary.
}

#[test]
fn a_forged_size_costs_at_most_one_frame_before_failing() {
    // 20 frames of 4 KiB, re-labelled as 20 frames of 64 MiB: every frame check at open still holds
    // (stored ≤ uncompressed), so only decoding can tell. Reading must fail on the first frame
    // instead of allocating 1.25 GiB up front (the allocator cap would abort this test).
    let data = text(20 * FRAME_SIZE, 3);
    let mut doctor = Doctor::new(build(&[("big.txt", data, Compression::Auto)]));
    doctor.set_header(|h| h.frame_size_log2 = 26);
    doctor.edit_record(0, |r| r.size = 20 << 26);
    let archive = doctor.open().unwrap();
    let entry = archive.get("big.txt").unwrap();
    assert_eq!(archive.frame_count(&entry), 20);
    let offset = entry.offset() as usize;
    assert_corrupt(archive.read(&entry), Some("big.txt"), Some(offset), "frame 0");
    let mut sink = Vec::new();
    let err = archive.reader(&entry).read_to_end(&mut sink).unwrap_err();
    assert!(err.to_string().contains("big.txt"), "{err}");
    let mut buf = [0u8; 16];
    assert!(archive.read_at(&entry, (20 << 26) - 16, &mut buf).is_err());
    assert_eq!(archive.verify().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Extents and storage

#[test]
fn overlapping_and_out_of_range_extents_are_refused() {
    let original = specimen();
    let probe = Doctor::new(original.clone());
    let (a, b, c) = (probe.record(0), probe.record(1), probe.record(2));
    let data_end = probe.index_at as u64;
    let at = |i| Some(probe.record_at(i));

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(1, |r| r.offset = a.offset);
    assert_corrupt(doctor.open(), Some("b.bin"), at(1), "overlaps");

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(1, |r| r.offset = a.offset + a.frame_count - 1);
    assert_corrupt(doctor.open(), Some("b.bin"), at(1), "overlaps");

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(0, |r| r.offset = 16);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "header");

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(0, |r| r.offset = 0);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "header");

    // Records out of data order are refused like overlaps.
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(3, |r| r.offset = HEADER_END);
    assert_corrupt(doctor.open(), Some("e"), at(3), "overlaps");
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(2, |r| r.offset = b.offset);
    assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "overlaps");

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(3, |r| r.offset = data_end + 16);
    assert_corrupt(doctor.open(), Some("e"), at(3), "past the data area");

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(1, |r| {
        r.offset = data_end - 100;
        r.size = 300;
        r.frame_count = 300;
    });
    assert_corrupt(doctor.open(), Some("b.bin"), at(1), "past the data area");

    for offset in [u64::MAX, u64::MAX - 299, 1 << 40] {
        let mut doctor = Doctor::new(original.clone());
        doctor.edit_record(1, |r| r.offset = offset);
        let message = assert_corrupt(doctor.open(), Some("b.bin"), at(1), "");
        assert!(message.contains("overflows") || message.contains("past the data area"), "{message}");
    }

    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(1, |r| {
        r.size = u64::MAX;
        r.frame_count = u64::MAX;
    });
    assert_corrupt(doctor.open(), Some("b.bin"), at(1), "");
    let _ = c;
}

#[test]
fn raw_entries_must_store_exactly_their_size() {
    for (size, stored) in [(301, 300), (299, 300), (0, 300), (u64::MAX, 300)] {
        let mut doctor = Doctor::new(specimen());
        doctor.edit_record(1, |r| {
            r.size = size;
            r.frame_count = stored;
        });
        let at = doctor.record_at(1);
        assert_corrupt(doctor.open(), Some("b.bin"), Some(at), "stored size differs");
    }
}

#[test]
fn unknown_compression_mode_and_mtime_are_refused() {
    for compression in [2u8, 3, 0x80, 0xff] {
        let mut doctor = Doctor::new(specimen());
        doctor.edit_record(0, |r| r.compression = compression);
        let at = doctor.record_at(0);
        assert_corrupt(doctor.open(), Some("a.txt"), Some(at), &format!("unknown compression method {compression}"));
    }
    let mut doctor = Doctor::new(specimen());
    doctor.edit_record(2, |r| r.mode = 0o10000);
    let at = doctor.record_at(2);
    assert_corrupt(doctor.open(), Some("c/d.txt"), Some(at), "mode");
    let mut doctor = Doctor::new(specimen());
    doctor.edit_record(2, |r| r.mtime_nanos = 1_000_000_000);
    assert_corrupt(doctor.open(), Some("c/d.txt"), Some(at), "nanoseconds");
}

#[test]
fn bad_frame_tables_are_refused() {
    // Frames: a.txt owns ends 0 and 1, c/d.txt owns ends 2, 3 and 4.
    let original = specimen();
    let probe = Doctor::new(original.clone());
    let at = |i| Some(probe.record_at(i));
    let (e0, e1, e2, e3) = (probe.frame_end(0), probe.frame_end(1), probe.frame_end(2), probe.frame_end(3));

    // Non-increasing ends.
    let mut doctor = Doctor::new(original.clone());
    doctor.set_frame_end(3, e2);
    assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "frame 1 has an impossible stored length");
    let mut doctor = Doctor::new(original.clone());
    doctor.set_frame_end(3, e2 - 1);
    assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "impossible stored length");
    let mut doctor = Doctor::new(original.clone());
    doctor.set_frame_end(0, 0);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "frame 0 has an impossible stored length");

    // A stored frame longer than its uncompressed length (a.txt's last frame holds 10 bytes).
    let mut doctor = Doctor::new(original.clone());
    doctor.set_frame_end(0, e1 - 11);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "frame 1 has an impossible stored length");
    // ... and a full frame one byte too long: a raw first frame (noise) followed by a compressed one.
    let mixed = [noise(FRAME_SIZE, 5), text(FRAME_SIZE, 5)].concat();
    let mut doctor = Doctor::new(build(&[("m.dat", mixed, Compression::Auto)]));
    assert_eq!(doctor.frame_end(0), FRAME_SIZE as u64, "the first frame is stored raw");
    doctor.set_frame_end(0, FRAME_SIZE as u64 + 1);
    let record_at = Some(doctor.record_at(0));
    assert_corrupt(doctor.open(), Some("m.dat"), record_at, "frame 0 has an impossible stored length");

    // Last end differs from stored_size, either way.
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(0, |r| r.frame_count -= 1);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "last frame end differs");
    let mut doctor = Doctor::new(original.clone());
    doctor.set_frame_end(1, e1 - 1);
    assert_corrupt(doctor.open(), Some("a.txt"), at(0), "last frame end differs");

    // first_frame not the next unused frame.
    for first in [0u32, 1, 3, u32::MAX] {
        let mut doctor = Doctor::new(original.clone());
        doctor.edit_record(2, |r| r.first_frame = first);
        assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "first frame");
    }
    // A raw entry given frames leaves the table with unused frames.
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(0, |r| {
        r.compression = 0;
        r.first_frame = 0;
        r.size = r.frame_count;
    });
    let message = assert_corrupt(doctor.open(), None, None, "");
    assert!(message.contains("first frame") || message.contains("unused frames"), "{message}");
    // A size needing more frames than the table holds.
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(2, |r| r.size += FRAME_SIZE as u64);
    assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "frames run past the frame table");
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(2, |r| r.size = u64::MAX);
    assert_corrupt(doctor.open(), Some("c/d.txt"), at(2), "frames run past the frame table");
    // A size needing fewer frames leaves frames unused.
    let mut doctor = Doctor::new(original.clone());
    doctor.edit_record(2, |r| r.size -= FRAME_SIZE as u64);
    assert_corrupt(doctor.open(), None, None, "");
    let _ = (e0, e3);
}

#[test]
fn zstd_frames_that_decode_wrongly_are_errors_naming_entry_and_offset() {
    let original = specimen();
    let probe = Doctor::new(original.clone());
    let a = probe.record(0);
    let frame0_at = a.offset as usize;

    // The recorded size claims one byte more or less than the frame decodes to (the last frame of
    // a.txt is raw, so shift the change onto frame 0 by dropping the raw frame from a one-frame view).
    for delta in [-1i64, 1] {
        let mut doctor = Doctor::new(build(&[("one.txt", text(3000, 1), Compression::Auto)]));
        doctor.edit_record(0, |r| r.size = (r.size as i64 + delta) as u64);
        let archive = doctor.open().unwrap();
        let entry = archive.get("one.txt").unwrap();
        let at = entry.offset() as usize;
        let message = assert_corrupt(archive.read(&entry), Some("one.txt"), Some(at), "frame 0");
        // Caught from the frame header, before a buffer is sized for the claimed length.
        assert!(message.contains("declares 3000 bytes"), "{message}");
        assert_eq!(archive.verify().len(), 1);
        let mut buf = [0u8; 10];
        assert!(archive.read_at(&entry, 5, &mut buf).is_err());
    }

    // Garbage where a zstd frame should be: the data area is not checksummed by the index, so
    // this opens; every read path reports it.
    let mut bytes = original.clone();
    let len = probe.frame_end(0) as usize;
    bytes[frame0_at..frame0_at + len].copy_from_slice(&noise(len, 99));
    let archive = Archive::from_bytes(bytes, NAME).unwrap();
    let entry = archive.get("a.txt").unwrap();
    assert_corrupt(archive.read(&entry), Some("a.txt"), Some(frame0_at), "frame 0 does not decode");
    let mut frame = Vec::new();
    assert_corrupt(archive.decode_frame(&entry, 0, &mut frame), Some("a.txt"), Some(frame0_at), "frame 0");
    let err = archive.reader(&entry).read_to_end(&mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("'a.txt'") && err.to_string().contains(NAME), "{err}");
    let errors = archive.verify();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("'a.txt'"));
    // The undamaged raw second frame still reads.
    let mut tail = [0u8; 10];
    assert_eq!(archive.read_at(&entry, FRAME_SIZE as u64, &mut tail).unwrap(), 10);
    assert_eq!(&tail, &text(FRAME_SIZE + 10, 0)[FRAME_SIZE..]);
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn bad_paths_in_the_index_are_refused() {
    let bad: [&[u8]; 12] = [
        b"../x",
        b"/etc/passwd",
        b"a//b",
        b"a/",
        b"a\0b",
        b"a\\b",
        b"..",
        b".",
        b"a/./b",
        b"",
        &[b'x'; 4097],
        &[b'y'; 256],
    ];
    for path in bad {
        let mut doctor = Doctor::new(specimen());
        doctor.set_path(1, path);
        let at = doctor.record_at(1);
        let shown = String::from_utf8_lossy(path).into_owned();
        let message = assert_corrupt(doctor.open(), Some(&shown), Some(at), "");
        assert!(message.contains("path"), "{message}");
    }
}

#[test]
fn paths_that_are_not_utf8_or_outside_the_table_are_refused() {
    let mut doctor = Doctor::new(specimen());
    let strings_at = doctor.strings_at();
    let strings_len = doctor.index_header().strings_len as usize;
    doctor.set_path(1, &[b'o', 0xff, 0xfe]);
    // The bad byte is the second of the appended path.
    assert_corrupt(doctor.open(), None, Some(strings_at + strings_len + 1), "not UTF-8");

    let cases: [(u32, u32); 4] = [(strings_len as u32, 1), (strings_len as u32 - 1, 2), (u32::MAX, 1), (0, u32::MAX)];
    for (path_offset, path_len) in cases {
        let mut doctor = Doctor::new(specimen());
        doctor.edit_record(2, |r| {
            r.path_offset = path_offset;
            r.path_len = path_len;
        });
        let at = doctor.record_at(2);
        assert_corrupt(doctor.open(), None, Some(at), "outside the string table");
    }

    // A path cut in the middle of a multi-byte character.
    let mut doctor = Doctor::new(build(&[("é.txt", text(10, 0), Compression::Auto)]));
    doctor.edit_record(0, |r| {
        r.path_offset = 1;
        r.path_len = 5;
    });
    let at = doctor.record_at(0);
    assert_corrupt(doctor.open(), None, Some(at), "string table");
}

#[test]
fn duplicate_paths_are_refused() {
    // Two records naming the same bytes.
    let mut doctor =
        Doctor::new(build(&[("a1", text(10, 0), Compression::Auto), ("b2", text(20, 0), Compression::Auto)]));
    doctor.edit_record(1, |r| r.path_offset = 0);
    let lookup_at = doctor.lookup_at();
    assert_corrupt(doctor.open(), Some("a1"), Some(lookup_at + 4), "duplicate path");
    // The lookup table naming one entry twice.
    let mut doctor =
        Doctor::new(build(&[("a1", text(10, 0), Compression::Auto), ("b2", text(20, 0), Compression::Auto)]));
    doctor.set_lookup(1, 0);
    let lookup_at = doctor.lookup_at();
    assert_corrupt(doctor.open(), Some("a1"), Some(lookup_at + 4), "duplicate path");
}

#[test]
fn an_entry_that_is_also_a_directory_is_refused() {
    let entries = [("a", text(10, 0), Compression::Auto), ("bbb", text(20, 0), Compression::Auto)];
    let mut doctor = Doctor::new(build(&entries));
    let strings_at = doctor.strings_at();
    doctor.put(strings_at + 1, b"a/b");
    let lookup_at = doctor.lookup_at();
    let message = assert_corrupt(doctor.open(), Some("a"), Some(lookup_at), "also a directory");
    assert!(message.contains("'a/b'"), "{message}");

    // With a sibling sorting between them ('-' < '/').
    let entries = [
        ("a", text(10, 0), Compression::Auto),
        ("a-b", text(5, 0), Compression::Auto),
        ("ccc", text(20, 0), Compression::Auto),
    ];
    let mut doctor = Doctor::new(build(&entries));
    let strings_at = doctor.strings_at();
    doctor.put(strings_at + 4, b"a/c");
    let lookup_at = doctor.lookup_at();
    assert_corrupt(doctor.open(), Some("a"), Some(lookup_at), "also a directory");
}

#[test]
fn a_bad_lookup_table_is_refused() {
    let mut doctor = Doctor::new(specimen());
    doctor.set_lookup(0, 1).set_lookup(1, 0);
    let lookup_at = doctor.lookup_at();
    assert_corrupt(doctor.open(), Some("a.txt"), Some(lookup_at + 4), "not sorted");
    for bogus in [4u32, 99, u32::MAX] {
        let mut doctor = Doctor::new(specimen());
        doctor.set_lookup(2, bogus);
        let lookup_at = doctor.lookup_at();
        assert_corrupt(doctor.open(), None, Some(lookup_at + 8), "names no entry");
    }
}

#[test]
fn the_writer_refuses_what_the_reader_would() {
    let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions::default()).unwrap();
    for path in ["../x", "/etc/passwd", "a//b", "a/", "a\0b", "a\\b", ""] {
        assert!(
            matches!(writer.add_bytes(path, b"x", EntryOptions::default()), Err(Error::InvalidPath { .. })),
            "{path:?}"
        );
    }
    writer.add_bytes("a/b", b"x", EntryOptions::default()).unwrap();
    assert!(matches!(writer.add_bytes("a/b", b"y", EntryOptions::default()), Err(Error::DuplicatePath { .. })));
    assert!(matches!(writer.add_bytes("a", b"y", EntryOptions::default()), Err(Error::PathConflict { .. })));
    assert!(matches!(writer.add_bytes("a/b/c", b"y", EntryOptions::default()), Err(Error::PathConflict { .. })));
    let bad_mode = EntryOptions { mode: 0o10000, ..EntryOptions::default() };
    assert!(matches!(writer.add_bytes("m", b"y", bad_mode), Err(Error::InvalidOption(_))));
    assert!(matches!(writer.add_reader("m", &b"y"[..], bad_mode), Err(Error::InvalidOption(_))));
    assert!(matches!(writer.add_bytes_with_frames("m", b"y", bad_mode, &[false]), Err(Error::InvalidOption(_))));
    let layout = StoredLayout {
        size: 1,
        content_hash: xxhash_rust::xxh3::xxh3_64(b"y"),
        stored_len: 1,
        frame_ends: &[],
        x86_filter: false,
    };
    assert!(matches!(writer.add_stored("m", bad_mode, layout, &b"y"[..]), Err(Error::InvalidOption(_))));
    // A refused entry does not keep its path: it can be added once the options are right.
    writer.add_bytes("m", b"y", EntryOptions::default()).unwrap();
    // The refused entries left no trace: the archive holds exactly the good entries.
    let archive = Archive::from_bytes(writer.finish().unwrap(), NAME).unwrap();
    assert_eq!(archive.entries().map(|e| e.path().to_owned()).collect::<Vec<_>>(), ["a/b", "m"]);
    assert!(archive.verify().is_empty());
}
