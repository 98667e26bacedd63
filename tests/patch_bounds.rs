//! Hostile patches through the real binary (issue 11, item 4): tiny patches whose counts or
//! payloads claim far more than the declared output. Each must be refused with a clear error naming
//! the patch and offset, write nothing, and stay small: peak RSS is measured with `/usr/bin/time`.

mod common;

use common::*;
use mf_diff::wire::{PatchHeader, KIND_PLAIN, PATCH_HEADER_LEN, PATCH_VERSION_MAJOR, PATCH_VERSION_MINOR};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

/// Peak RSS any of these runs may reach. A normal `mf patch-info` stays around 10 MiB.
const RSS_LIMIT_KIB: u64 = 100 << 10;

/// Runs `mf` under `/usr/bin/time`, returning its output and peak RSS in KiB.
fn mf_measured(dir: &Path, args: &[&str]) -> (Output, u64) {
    let rss_file = dir.join("rss.txt");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(mf_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("/usr/bin/time runs mf");
    let text = std::fs::read_to_string(&rss_file).unwrap();
    let rss = text.lines().filter_map(|l| l.trim().parse::<u64>().ok()).next_back().expect("a peak RSS figure");
    (out, rss)
}

/// Asserts `mf args` fails with exit 1 (not a crash), stays small, and says `expected` on stderr.
fn refused_small(dir: &Path, args: &[&str], expected: &str) {
    let (out, rss) = mf_measured(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "mf {args:?} should fail cleanly, got {}: {stderr}", out.status);
    assert!(stderr.contains(expected), "mf {args:?}: expected '{expected}' in: {stderr}");
    assert!(stderr.contains("offset"), "the error names an offset: {stderr}");
    assert!(rss < RSS_LIMIT_KIB, "mf {args:?} peaked at {rss} KiB");
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Assembles a patch file from a header (lengths and hashes filled in), a control stream already
/// compressed, and blobs.
fn assemble(mut header: PatchHeader, control_frame: &[u8], blobs: &[Vec<u8>]) -> Vec<u8> {
    header.control_len = control_frame.len() as u64;
    header.blobs_len = blobs.iter().map(|b| b.len() as u64).sum();
    let mut body = control_frame.to_vec();
    for blob in blobs {
        body.extend_from_slice(blob);
    }
    header.body_hash = xxhash_rust::xxh3::xxh3_64(&body);
    let mut file = header.to_bytes().to_vec();
    file.extend_from_slice(&body);
    file
}

fn plain_header(old: &[u8], new_len: u64) -> PatchHeader {
    PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: PATCH_VERSION_MINOR,
        kind: KIND_PLAIN,
        flags: 1,
        old_len: old.len() as u64,
        old_id: xxhash_rust::xxh3::xxh3_64(old),
        new_len,
        new_hash: 0,
        control_len: 0,
        blobs_len: 0,
        body_hash: 0,
    }
}

/// A real archive patch between two one-entry archives, whose header the forged patches reuse.
fn real_archive_patch(d: &Path) -> PatchHeader {
    write_tree(&d.join("a"), &[("x.txt", b"first version of the file")]);
    write_tree(&d.join("b"), &[("x.txt", b"second version of the file")]);
    mf_ok(d, &["pack", "a", "-o", "old.mf"]);
    mf_ok(d, &["pack", "b", "-o", "new.mf"]);
    mf_ok(d, &["diff", "old.mf", "new.mf", "-o", "real.mfp"]);
    let bytes = std::fs::read(d.join("real.mfp")).unwrap();
    let header =
        PatchHeader::parse(&bytes[..PATCH_HEADER_LEN as usize], bytes.len() as u64, Path::new("real.mfp")).unwrap();
    // The control streams built here carry no content ids (2.1 layout).
    PatchHeader { flags: header.flags & !mf_diff::wire::FLAG_CONTENT_IDS, ..header }
}

/// 20 million copy records (60 MB of control stream) in a patch of a few KB.
fn copy_flood(header: PatchHeader, records: u64) -> Vec<u8> {
    let mut control = vec![18u8, 3];
    varint(&mut control, 1); // old entries
    varint(&mut control, records);
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    encoder.write_all(&control).unwrap();
    // A verbatim copy of old entry 0, then copies of the same entry (base delta -1, zigzag 1).
    encoder.write_all(&[0, 8, 0]).unwrap();
    let record = [0u8, 8, 1].repeat(1 << 16);
    for _ in 0..(records - 1).div_ceil(1 << 16) {
        encoder.write_all(&record).unwrap();
    }
    assemble(header, &encoder.finish().unwrap(), &[])
}

#[test]
fn twenty_million_copy_records_are_refused_before_they_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = real_archive_patch(d);
    let patch = copy_flood(header, 20_000_000);
    assert!(patch.len() < 64 << 10, "the forged patch is tiny: {} bytes", patch.len());
    std::fs::write(d.join("flood.mfp"), &patch).unwrap();
    // The declared output cannot index 20 million entries.
    refused_small(d, &["patch-info", "flood.mfp"], "new entry count 20000000 exceeds the limit");
    refused_small(d, &["apply", "flood.mfp", "old.mf", "-o", "out.mf"], "new entry count 20000000 exceeds the limit");
    assert!(!d.join("out.mf").exists());

    // Declaring a huge output does not help: the second copy of the same entry names its path twice.
    let huge = PatchHeader { new_len: 1 << 40, ..header };
    std::fs::write(d.join("flood2.mfp"), copy_flood(huge, 20_000_000)).unwrap();
    refused_small(d, &["patch-info", "flood2.mfp"], "would hold this path twice");
    refused_small(d, &["apply", "flood2.mfp", "old.mf", "-o", "out.mf"], "would hold this path twice");
    assert!(!d.join("out.mf").exists());
}

#[test]
fn a_delta_producing_more_than_the_declared_output_is_refused_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = b"the old file".to_vec();
    std::fs::write(d.join("old.bin"), &old).unwrap();
    // One control copying 141 MB of extra bytes into a file declared to have 1,000 bytes.
    let claimed: u64 = 141_000_000;
    let mut controls = Vec::new();
    varint(&mut controls, 0);
    varint(&mut controls, claimed);
    varint(&mut controls, 0);
    let controls_blob = zstd::bulk::compress(&controls, 3).unwrap();
    let mut extra = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..claimed >> 20 {
        extra.write_all(&zeros).unwrap();
    }
    let extra_blob = extra.finish().unwrap();
    let mut control = vec![1u8]; // op delta
                                 // control count 1, delta_len 0, coding 0 (raw), then the blob lengths.
    for value in [1, 0, 0, controls_blob.len() as u64, 0, extra_blob.len() as u64] {
        varint(&mut control, value);
    }
    let frame = zstd::bulk::compress(&control, 3).unwrap();
    let patch = assemble(plain_header(&old, 1000), &frame, &[controls_blob, extra_blob]);
    assert!(patch.len() < 64 << 10, "the forged patch is small: {} bytes", patch.len());
    std::fs::write(d.join("bomb.mfp"), &patch).unwrap();
    refused_small(
        d,
        &["apply", "bomb.mfp", "old.bin", "-o", "out.bin"],
        "controls produce more than the entry's 1000 bytes",
    );
    assert!(!d.join("out.bin").exists(), "nothing is written");
    let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!leftovers.iter().any(|n| n.to_string_lossy().contains("tmp")), "no temp file left: {leftovers:?}");
}

#[test]
fn a_control_stream_declaring_a_huge_window_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = b"old".to_vec();
    std::fs::write(d.join("old.bin"), &old).unwrap();
    let mut control = vec![3u8]; // op full
    varint(&mut control, 1);
    varint(&mut control, 1000);
    varint(&mut control, 9);
    // A streamed frame (no content size) with a 2 GiB window: a decoder that honoured it would
    // allocate its buffer before the first byte.
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.set_parameter(zstd::zstd_safe::CParameter::WindowLog(31)).unwrap();
    encoder.include_contentsize(false).unwrap();
    encoder.write_all(&control).unwrap();
    let frame = encoder.finish().unwrap();
    let patch = assemble(plain_header(&old, 1000), &frame, &[vec![0u8; 9]]);
    std::fs::write(d.join("window.mfp"), &patch).unwrap();
    refused_small(d, &["patch-info", "window.mfp"], "control stream offset 0: the stream does not decode");
    refused_small(d, &["apply", "window.mfp", "old.bin", "-o", "out.bin"], "control stream");
    assert!(!d.join("out.bin").exists());
}

/// Text-like content that zstd compresses, different in every MiB.
fn big_content(len: usize) -> Vec<u8> {
    let words: [&[u8]; 8] = [b"alpha ", b"beta ", b"gamma ", b"sprite ", b"mesh ", b"shader\n", b"level ", b"quest "];
    let mut out = Vec::with_capacity(len + 16);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state & 7) as usize]);
    }
    out.truncate(len);
    out
}

#[test]
fn applying_a_delta_to_a_300_mb_entry_stays_under_64_mib() {
    use mf_diff::delta::{apply_in_memory, Control, DeltaBytes, DeltaParts};
    use mf_diff::wire::{ArchivePreamble, EntryRecord, Op, PayloadDesc, Storage, KIND_ARCHIVE};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    const SIZE: usize = 300 << 20;
    let old = big_content(SIZE);
    write_tree(&d.join("a"), &[("big.bin", &old)]);
    mf_ok(d, &["pack", "a", "-o", "old.mf"]);
    std::fs::remove_dir_all(d.join("a")).unwrap();

    // New content: old with scattered byte changes, 1,000 inserted bytes at 100 MiB, and the tail
    // read from 1 MiB further on (a seek).
    let mut delta = vec![0u8; SIZE - (2 << 20)];
    for at in (0..delta.len()).step_by(7_000_003) {
        delta[at] = 1;
    }
    let controls = vec![
        Control { add: 100 << 20, copy: 1000, seek: 1 << 20 },
        Control { add: (SIZE - (102 << 20)) as u64, copy: 0, seek: 0 },
    ];
    let parts = DeltaParts { controls, delta: DeltaBytes::from(&delta[..]), extra: vec![b'+'; 1000] };
    let new = apply_in_memory(&old, &parts).unwrap();
    let new_hash = xxhash_rust::xxh3::xxh3_64(&new);
    let old_hash = xxhash_rust::xxh3::xxh3_64(&old);
    drop((old, new));
    let encoded = parts.encode(3).unwrap();

    let archive = mf_format::Archive::open(d.join("old.mf")).unwrap();
    let mut control = Vec::new();
    // A patch without content ids (as 2.1 wrote them): readers keep reading them.
    let preamble =
        ArchivePreamble { frame_size_log2: 18, level: 3, old_entry_count: 1, new_entry_count: 1, content_ids: None };
    preamble.write(&mut control);
    let record = EntryRecord {
        at: 0,
        op: Op::Delta,
        old_index: Some(0),
        path: None,
        mode: None,
        mtime: None,
        size: parts.output_len(),
        hash: new_hash,
        base_hash: Some(old_hash),
        storage: Storage::AllFrames,
        payload: PayloadDesc::Delta(encoded.desc()),
    };
    record.write(&mut control, &mut -1);
    let header = PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: PATCH_VERSION_MINOR,
        kind: KIND_ARCHIVE,
        flags: 0,
        old_len: archive.file_len(),
        old_id: archive.footer().index_hash,
        new_len: 2 * SIZE as u64,
        new_hash: 0,
        control_len: 0,
        blobs_len: 0,
        body_hash: 0,
    };
    let frame = zstd::bulk::compress(&control, 3).unwrap();
    let runs = encoded.runs.clone().map(|(_, runs)| runs).unwrap_or_default();
    let blobs = [encoded.controls.clone(), runs, encoded.delta.clone(), encoded.extra.clone()];
    std::fs::write(d.join("big.mfp"), assemble(header, &frame, &blobs)).unwrap();

    let (out, rss) = mf_measured(d, &["apply", "big.mfp", "old.mf", "-o", "new.mf"]);
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("apply of a 300 MB entry: peak RSS {rss} KiB");
    assert!(rss < 64 << 10, "apply of a 300 MB entry peaked at {rss} KiB");
    let rebuilt = mf_format::Archive::open(d.join("new.mf")).unwrap();
    let entry = rebuilt.get("big.bin").unwrap();
    assert_eq!((entry.size(), entry.content_hash()), (parts.output_len(), new_hash));
    mf_ok(d, &["verify", "new.mf"]);
}

/// One delta record of `size` bytes, stored with every frame compressed, whose payload is two
/// 9-byte blobs: the applier would size one flag per 4 KiB frame of `size` before decoding anything.
fn huge_delta_entry(header: PatchHeader, size: u64) -> Vec<u8> {
    let mut control = vec![12u8, 3]; // 4 KiB frames, level 3
    varint(&mut control, 1); // old entries
    varint(&mut control, 1); // new entries
    control.extend_from_slice(&[1, 0]); // delta, no flags
    varint(&mut control, 0); // base: old entry 0 (zigzag delta 0)
    varint(&mut control, size);
    control.extend_from_slice(&[0; 16]); // content hash, base hash
    control.push(1); // storage: all frames compressed
                     // Control count, delta length, coding 1 (runs: a few bytes of them could claim all `size`
                     // zeros), literal length 0, then the blob lengths: controls, runs, literals, extra.
    for value in [1, size, 1, 0, 9, 9, 0, 0] {
        varint(&mut control, value);
    }
    let frame = zstd::bulk::compress(&control, 3).unwrap();
    assemble(header, &frame, &[vec![0x28; 9], vec![0x28; 9]])
}

#[test]
fn an_entry_size_its_payload_cannot_decode_to_is_refused_before_per_frame_state_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = PatchHeader { new_len: 1 << 40, ..real_archive_patch(d) };
    // 2^50 bytes in 4 KiB frames: 2^38 per-frame flags (256 GiB) before the fix.
    std::fs::write(d.join("huge.mfp"), huge_delta_entry(header, 1 << 50)).unwrap();
    refused_small(d, &["patch-info", "huge.mfp"], "payload bytes can decode to");
    refused_small(d, &["apply", "huge.mfp", "old.mf", "-o", "out.mf"], "payload bytes can decode to");
    assert!(!d.join("out.mf").exists());
}

/// One frames record (patch format 2.3) of `size` bytes whose single run keeps every frame of the
/// base: no blob at all, so only the base can bound what it claims.
fn huge_frames_entry(header: PatchHeader, size: u64) -> Vec<u8> {
    let mut control = vec![12u8, 3]; // 4 KiB frames, level 3
    varint(&mut control, 1); // old entries
    varint(&mut control, 1); // new entries
    control.extend_from_slice(&[4, 0]); // frames, no flags
    varint(&mut control, 0); // base: old entry 0
    varint(&mut control, size);
    control.extend_from_slice(&[0; 16]); // content hash, base hash
    control.push(1); // storage: all frames compressed
    varint(&mut control, 1); // one run
    varint(&mut control, size.div_ceil(4096)); // of every frame
    control.push(0); // kept
    assemble(header, &zstd::bulk::compress(&control, 3).unwrap(), &[])
}

#[test]
fn a_frames_record_keeping_more_than_the_old_archive_can_hold_is_refused_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = PatchHeader { new_len: 1 << 40, ..real_archive_patch(d) };
    // 2^50 bytes kept from an old archive of a few hundred bytes: 2^38 per-frame flags if believed.
    std::fs::write(d.join("kept.mfp"), huge_frames_entry(header, 1 << 50)).unwrap();
    refused_small(d, &["patch-info", "kept.mfp"], "kept frames exceed");
    refused_small(d, &["apply", "kept.mfp", "old.mf", "-o", "out.mf"], "kept frames exceed");
    refused_small(d, &["apply", "--in-place", "kept.mfp", "old.mf"], "kept frames exceed");
    assert!(!d.join("out.mf").exists());
}
