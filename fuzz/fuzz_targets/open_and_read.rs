//! Opens arbitrary bytes as an archive and, when that succeeds, reads every entry every way the
//! library offers. Besides "no panic, no huge allocation", it checks that the ways agree with each
//! other, so a reader bug that returns wrong bytes without an error is a crash too.
//!
//! Almost every mutation of a valid archive breaks a checksum, which would keep the fuzzer at the
//! door; so each input is also tried with its header, index and footer checksums recomputed, which
//! sends mutated indexes through the reader's semantic checks, and once more with one entry's X86
//! filter flag flipped, so the filter's rules (never on raw or solid entries, agreed by every entry
//! sharing a frame) and its decoding are exercised from every seed.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use mf_format::{Archive, Error, StoredAs};

/// Entries (and archives) decoding to more than this are only probed with `read_at`: zstd can
/// legitimately expand a few KiB into GiBs, which would only make the fuzzer slow, not find bugs.
const FULL_READ_LIMIT: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    if let Some(resealed) = reseal(data) {
        if resealed != data {
            exercise(resealed.clone());
        }
        // The same archive with one entry's X86 filter flag (2.1) flipped, resealed: the reader
        // must refuse it (raw, solid, or sharing frames with an entry that disagrees) or read it
        // consistently every way.
        if let Some(flipped) = flip_x86_flag(&resealed, data.first().copied().unwrap_or(0)).and_then(|b| reseal(&b)) {
            exercise(flipped);
        }
    }
});

/// The archive with the X86 flag of entry record `which` (modulo the entry count) flipped.
fn flip_x86_flag(data: &[u8], which: u8) -> Option<Vec<u8>> {
    let footer_at = data.len().checked_sub(40)?;
    let word = |at: usize| data.get(at..at.checked_add(8)?).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let index_at = usize::try_from(word(footer_at)?).ok()?;
    let entries = word(index_at)?;
    if entries == 0 {
        return None;
    }
    let record = usize::try_from(u64::from(which) % entries).ok()?;
    let flags_at = index_at.checked_add(32 + 10)?.checked_add(record.checked_mul(64)?)?;
    let mut bytes = data.to_vec();
    *bytes.get_mut(flags_at)? ^= mf_format::format::ENTRY_FLAG_X86 as u8;
    Some(bytes)
}

/// The input with every checksum made to match, where the footer locates an index at all.
fn reseal(data: &[u8]) -> Option<Vec<u8>> {
    use xxhash_rust::xxh3::xxh3_64;
    let len = data.len();
    if len < 72 {
        return None;
    }
    let mut bytes = data.to_vec();
    let header_hash = xxh3_64(&bytes[..24]);
    bytes[24..32].copy_from_slice(&header_hash.to_le_bytes());
    let footer_at = len - 40;
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (index_offset, index_len) = (word(footer_at), word(footer_at + 8));
    if index_offset.checked_add(index_len) == Some(footer_at as u64) && index_offset >= 32 {
        let index_hash = xxh3_64(&bytes[index_offset as usize..footer_at]);
        bytes[footer_at + 16..footer_at + 24].copy_from_slice(&index_hash.to_le_bytes());
    }
    let footer_hash = xxh3_64(&bytes[footer_at..footer_at + 24]);
    bytes[footer_at + 24..footer_at + 32].copy_from_slice(&footer_hash.to_le_bytes());
    Some(bytes)
}

fn exercise(data: Vec<u8>) {
    let Ok(archive) = Archive::from_bytes(data, "fuzz.mf") else {
        return;
    };
    let small = archive.total_size() <= FULL_READ_LIMIT;
    for entry in archive.entries() {
        let found = archive.get(entry.path()).expect("every entry is found by its path");
        assert_eq!(found.index(), entry.index());
        let size = entry.size();
        // A share of shared frames never exceeds the frames themselves.
        assert!(archive.stored_share(&entry) <= entry.stored_size());

        let whole = if small { archive.read(&entry).ok().map(|c| c.into_owned()) } else { None };
        if let Some(whole) = &whole {
            assert_eq!(whole.len() as u64, size);
            assert!(archive.verify_entry(&entry).is_ok(), "read succeeded, so verify must");
        }

        if small {
            let mut streamed = Vec::new();
            let streamed_ok = archive.reader(&entry).read_to_end(&mut streamed).is_ok();
            if let Some(whole) = &whole {
                assert!(streamed_ok, "read succeeded, so the streaming reader must");
                assert_eq!(&streamed, whole);
            }
        }

        for offset in [0, 1, size / 3, size / 2, size.saturating_sub(5000), size.saturating_sub(1), size, size + 1] {
            let mut buf = [0u8; 5000];
            match archive.read_at(&entry, offset, &mut buf) {
                Ok(n) => {
                    assert_eq!(n as u64, (size - offset).min(buf.len() as u64));
                    if let Some(whole) = &whole {
                        assert_eq!(&buf[..n], &whole[offset as usize..offset as usize + n]);
                    }
                }
                Err(Error::OutOfRange { .. }) => assert!(offset > size),
                Err(e) => assert!(e.is_corruption(), "unexpected error kind: {e}"),
            }
        }

        let mut frame = Vec::new();
        let frames = archive.frame_count(&entry);
        if entry.stored_as() == StoredAs::Raw {
            assert_eq!(frames, 0);
            assert_eq!(archive.raw_bytes(&entry).map(<[u8]>::len), Some(size as usize));
        } else {
            assert!(archive.raw_bytes(&entry).is_none());
            // Frame k holds the entry's bytes from (earlier frames of the run) − skip on: in 2.0 a
            // solid or shared frame also holds other entries' bytes around them.
            let mut frame_start = 0u64;
            let skip = archive.entry_skip(&entry);
            for k in 0..frames.min(64) {
                let len = archive.frame_len(&entry, k);
                if archive.decode_frame(&entry, k, &mut frame).is_ok() {
                    assert_eq!(frame.len() as u64, len);
                    if let Some(whole) = &whole {
                        // The part of this frame inside the entry, in entry and frame coordinates.
                        let from = frame_start.max(skip);
                        let to = (frame_start + len).min(skip + size);
                        if from < to {
                            let in_frame = &frame[(from - frame_start) as usize..(to - frame_start) as usize];
                            assert_eq!(in_frame, &whole[(from - skip) as usize..(to - skip) as usize]);
                        }
                    }
                }
                frame_start += len;
            }
        }
    }

    let by_path: Vec<_> = archive.entries_by_path().map(|e| e.path()).collect();
    assert_eq!(by_path.len(), archive.len());
    assert!(by_path.windows(2).all(|w| w[0] < w[1]), "lookup order is strictly increasing");
    if small {
        for error in archive.verify() {
            assert!(error.is_corruption(), "unexpected error kind: {error}");
        }
    }
}
