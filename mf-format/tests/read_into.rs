//! `Archive::read_into`: a whole entry decoded straight into the caller's buffer, checksum verified,
//! for every way an entry can be stored, and refused with a clear error for a buffer of the wrong
//! length or damaged stored bytes.

use mf_format::{Archive, ArchiveWriter, Compression, EntryOptions, Error, StoredAs, WriterOptions, PLAUSIBLE_RATIO};
use mf_test_support::{noise, text};

const NAME: &str = "into.mf";
const FRAME: usize = 1 << 12;
const SMALL_FRAMES: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };

/// Every kind of storage: small solid entries straddling frame boundaries, a solid entry covering
/// whole frames in its middle, a deduplicated one, own frames (several, the last one partial), own frames
/// partly stored raw, a raw entry, an empty one.
fn specimen() -> Vec<(String, Vec<u8>, Compression)> {
    let mut entries: Vec<(String, Vec<u8>, Compression)> =
        (0..6).map(|i| (format!("s{i}.txt"), text(i, 40), Compression::Auto)).collect();
    entries.push(("solid-big.txt".into(), text(7, 500), Compression::Solid));
    entries.push(("dup.txt".into(), text(1, 40), Compression::Auto));
    entries.push(("own.txt".into(), text(9, 800)[..3 * FRAME + 10].to_vec(), Compression::Zstd));
    entries.push(("mixed.bin".into(), [&text(3, 800)[..FRAME], &random(2 * FRAME + 100)].concat(), Compression::Zstd));
    entries.push(("raw.bin".into(), noise(300, 1), Compression::Store));
    entries.push(("empty".into(), Vec::new(), Compression::Auto));
    entries
}

/// Incompressible bytes (splitmix64), so zstd frames of them are stored raw.
fn random(len: usize) -> Vec<u8> {
    let mut state = 0x1234_5678_u64;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn pack(entries: &[(String, Vec<u8>, Compression)]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new(), SMALL_FRAMES).unwrap();
    for (path, data, compression) in entries {
        writer.add_bytes(path, data, EntryOptions { compression: *compression, ..EntryOptions::default() }).unwrap();
    }
    writer.finish().unwrap()
}

fn read_into(archive: &Archive, path: &str) -> mf_format::Result<Vec<u8>> {
    let entry = archive.get(path).unwrap();
    let mut out = vec![0u8; entry.size() as usize];
    archive.read_into(&entry, &mut out)?;
    Ok(out)
}

#[test]
fn every_kind_of_entry_reads_into_a_buffer_as_read_gives_it() {
    let entries = specimen();
    let archive = Archive::from_bytes(pack(&entries), NAME).unwrap();
    let big = archive.get("solid-big.txt").unwrap();
    assert!(big.is_solid() && archive.frame_count(&big) >= 3, "a solid entry with whole frames inside");
    assert!(archive.entries().any(|e| e.is_solid() && archive.entry_skip(&e) > 0));
    assert_eq!(archive.get("raw.bin").unwrap().stored_as(), StoredAs::Raw);
    // In path order, then reversed: the frame cache shared by solid entries must not leak stale bytes
    // into whichever entry comes next.
    let mut order: Vec<&(String, Vec<u8>, Compression)> = entries.iter().collect();
    for _ in 0..2 {
        for (path, data, _) in &order {
            assert_eq!(&read_into(&archive, path).unwrap(), data, "{path}");
            let entry = archive.get(path).unwrap();
            assert_eq!(archive.read(&entry).unwrap().as_ref(), &data[..], "{path}");
            assert!(archive.size_is_plausible(&entry), "{path}");
        }
        order.reverse();
    }
}

#[test]
fn a_buffer_of_the_wrong_length_is_refused_before_anything_is_read() {
    let archive = Archive::from_bytes(pack(&specimen()), NAME).unwrap();
    for path in ["own.txt", "raw.bin", "s1.txt", "empty"] {
        let entry = archive.get(path).unwrap();
        let size = entry.size() as usize;
        for len in [size + 1, size.saturating_sub(1), 0].into_iter().filter(|&len| len != size) {
            let mut out = vec![7u8; len];
            match archive.read_into(&entry, &mut out) {
                Err(Error::BufferSize { entry: named, len: got, size: want }) => {
                    assert_eq!((named.as_str(), got, want), (path, len as u64, size as u64));
                }
                other => panic!("{path} into {len} bytes: expected BufferSize, got {other:?}"),
            }
            assert!(out.iter().all(|&b| b == 7), "{path}: nothing written");
        }
    }
    let message = archive.read_into(&archive.get("own.txt").unwrap(), &mut [0u8; 5]).unwrap_err().to_string();
    assert!(message.contains("own.txt") && message.contains("5 bytes"), "{message}");
}

#[test]
fn a_damaged_frame_is_an_error_naming_the_entry_and_the_frame_offset() {
    let entries = specimen();
    let bytes = pack(&entries);
    let archive = Archive::from_bytes(bytes.clone(), NAME).unwrap();
    for path in ["own.txt", "solid-big.txt", "s2.txt"] {
        let entry = archive.get(path).unwrap();
        // The frame wholly inside (own.txt's second; the big solid entry's middle), else the first.
        let run = archive.entry_frames(&entry);
        let frame = if run.len() > 2 { run.start + 1 } else { run.start };
        let record = archive.frames()[frame as usize];
        assert!(record.stored_len < record.len, "{path}: frame {frame} is compressed");

        // A zstd frame header that is not one.
        let mut damaged = bytes.clone();
        damaged[record.offset as usize..record.offset as usize + 4].copy_from_slice(b"\0\0\0\0");
        let archive = Archive::from_bytes(damaged, NAME).unwrap();
        match read_into(&archive, path) {
            Err(Error::Corrupt { offset, entry, what, .. }) => {
                assert_eq!(offset, record.offset, "{path}: {what}");
                assert_eq!(entry.as_deref(), Some(path));
                assert!(what.contains(&format!("frame {frame}")) && what.contains("zstd"), "{what}");
            }
            other => panic!("{path}: expected Corrupt, got {other:?}"),
        }

        // Damage inside the compressed data: a decode error at the frame, or a checksum mismatch.
        let mut damaged = bytes.clone();
        let middle = record.offset as usize + record.stored_len as usize / 2;
        damaged[middle] ^= 0x55;
        let archive = Archive::from_bytes(damaged, NAME).unwrap();
        match read_into(&archive, path) {
            Err(Error::Corrupt { offset, entry, .. }) => {
                assert_eq!((offset, entry.as_deref()), (record.offset, Some(path)));
            }
            Err(Error::ChecksumMismatch { entry, .. }) => assert_eq!(entry, path),
            other => panic!("{path}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn a_damaged_raw_entry_or_raw_frame_fails_its_checksum() {
    let bytes = pack(&specimen());
    let archive = Archive::from_bytes(bytes.clone(), NAME).unwrap();
    let raw = archive.get("raw.bin").unwrap();
    // mixed.bin: a frame of text, then frames of noise that zstd cannot shrink, stored raw.
    let mixed = archive.get("mixed.bin").unwrap();
    let noise_frame = archive.frames()[archive.entry_frames(&mixed).start as usize + 1];
    assert_eq!(noise_frame.stored_len, noise_frame.len, "noise is stored in raw frames");
    for (path, at) in [("raw.bin", raw.offset() + 10), ("mixed.bin", noise_frame.offset + 100)] {
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 1;
        let archive = Archive::from_bytes(damaged, NAME).unwrap();
        match read_into(&archive, path) {
            Err(Error::ChecksumMismatch { entry, file, .. }) => {
                assert_eq!(entry, path);
                assert_eq!(file.to_str(), Some(NAME));
            }
            other => panic!("{path}: expected ChecksumMismatch, got {other:?}"),
        }
    }
}

#[test]
fn an_entry_far_more_compressed_than_plausible_still_reads_whole() {
    // 64 KiB of zeros in 4 KiB frames stores a few bytes a frame: beyond the plausible ratio, so
    // `read` grows its buffer as it decodes instead of trusting the size; the content is the same.
    let zeros = vec![0u8; 16 * FRAME];
    let entries = vec![("zeros".to_owned(), zeros.clone(), Compression::Zstd)];
    let archive = Archive::from_bytes(pack(&entries), NAME).unwrap();
    let entry = archive.get("zeros").unwrap();
    assert!(entry.size() > entry.stored_size() * PLAUSIBLE_RATIO);
    assert!(!archive.size_is_plausible(&entry));
    assert_eq!(archive.read(&entry).unwrap().as_ref(), &zeros[..]);
    assert_eq!(read_into(&archive, "zeros").unwrap(), zeros);
}
