//! Writes the seed corpus of the `patch_apply` fuzz target (fuzz/fuzz_targets/patch_apply.rs):
//! real patches against the target's fixture (the same old archive and plain file, built the same
//! way), each as a raw seed (mode byte 0, then the patch file) and as a sealed seed (mode byte 1 or 3,
//! the control stream's length as u16 LE, the decompressed control stream, then the blob section).
//! Deterministic: run by fuzz/make-seeds.sh.

use std::io::Read;
use std::path::Path;

use mf_diff::wire::{
    ArchivePreamble, BlockDesc, ContentIds, EntryRecord, FrameRun, Op, PatchHeader, PayloadDesc, RunPatch, Storage,
    FLAG_CONTENT_IDS, KIND_ARCHIVE, PATCH_HEADER_LEN, PATCH_VERSION_MAJOR, PATCH_VERSION_MINOR,
};
use mf_diff::{content_id, diff_files, DiffOptions};
use mf_format::WriterOptions;
use mf_test_support::mf_bytes_with;
use xxhash_rust::xxh3::xxh3_64;

fn archive(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    mf_bytes_with(WriterOptions { level: 3, frame_size_log2: 12 }, files)
}

fn write_seeds(out: &Path, name: &str, patch: &Path, sealed_mode: u8) {
    let bytes = std::fs::read(patch).expect("patch");
    let header = PatchHeader::parse(&bytes[..PATCH_HEADER_LEN as usize], bytes.len() as u64, patch).expect("header");
    let control_end = (PATCH_HEADER_LEN + header.control_len) as usize;
    let mut control = Vec::new();
    zstd::stream::read::Decoder::new(&bytes[PATCH_HEADER_LEN as usize..control_end])
        .expect("decoder")
        .read_to_end(&mut control)
        .expect("control stream");
    let mut raw = vec![0u8];
    raw.extend_from_slice(&bytes);
    std::fs::write(out.join(format!("raw-{name}.mfp")), raw).expect("write");
    if let Ok(len) = u16::try_from(control.len()) {
        let mut sealed = vec![sealed_mode];
        sealed.extend_from_slice(&len.to_le_bytes());
        sealed.extend_from_slice(&control);
        sealed.extend_from_slice(&bytes[control_end..]);
        std::fs::write(out.join(format!("sealed-{name}.mfp")), sealed).expect("write");
    }
}

fn main() {
    let out = std::env::args_os().nth(1).expect("usage: patch_seeds OUT_DIR");
    let out = Path::new(&out);
    std::fs::create_dir_all(out).expect("out dir");
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let options = DiffOptions { memory_limit: 64 << 20, ..DiffOptions::default() };

    // The fuzz target's fixture, byte for byte.
    let a_txt = b"hello world\n".repeat(900);
    let c_bin: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let old = archive(&[("a.txt", a_txt.clone()), ("b/c.bin", c_bin.clone()), ("empty", Vec::new())]);
    std::fs::write(d.join("old.mf"), &old).expect("write");
    let plain = b"plain old file contents ".repeat(200);
    std::fs::write(d.join("old.bin"), &plain).expect("write");

    // Archive patch: an edited text (delta or zstd-ref), a rename, an added entry, a removed one.
    let mut a_new = a_txt.clone();
    a_new.splice(3000..3000, b"inserted line\n".iter().copied());
    a_new[100] = b'H';
    let mut c_new = c_bin.clone();
    c_new.iter_mut().step_by(97).for_each(|b| *b ^= 0x55);
    let new = archive(&[("a.txt", a_new), ("b/c2.bin", c_bin), ("b/c.bin", c_new), ("new.txt", b"brand new".to_vec())]);
    std::fs::write(d.join("new.mf"), &new).expect("write");
    diff_files(&d.join("old.mf"), &d.join("new.mf"), &d.join("archive.mfp"), &options, &|_| {}).expect("diff");
    write_seeds(out, "archive", &d.join("archive.mfp"), 1 | 4);

    // Plain patch: the fixture's plain file edited in place and extended.
    let mut plain_new = plain.clone();
    plain_new[10..20].copy_from_slice(b"0123456789");
    plain_new.extend_from_slice(b"and a tail");
    std::fs::write(d.join("new.bin"), &plain_new).expect("write");
    diff_files(&d.join("old.bin"), &d.join("new.bin"), &d.join("plain.mfp"), &options, &|_| {}).expect("diff");
    write_seeds(out, "plain", &d.join("plain.mfp"), 1 | 2);

    frames_seeds(out, d, &a_txt, &old);
}

/// 2.3 seeds with a frames record (op 4), made field by field: the fixture's entries are too small
/// for `mf diff` to choose one. a.txt (3 frames of 4 KiB) keeps frames 0 and 2 and rebuilds frame 1
/// from a full block; the other entries are copies. Raw: a whole patch with content ids (not EXACT:
/// the layout is not checked here). Sealed: the control stream without content ids, as the target
/// seals it.
fn frames_seeds(out: &Path, d: &Path, a_txt: &[u8], old: &[u8]) {
    let mut a_new = a_txt.to_vec();
    a_new[4096..8192].copy_from_slice(&b"changed frame\n".repeat(293)[..4096]);
    let c_bin: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    let new = archive(&[("a.txt", a_new.clone()), ("b/c.bin", c_bin), ("empty", Vec::new())]);
    std::fs::write(d.join("frames-old.mf"), old).expect("write");
    std::fs::write(d.join("frames-new.mf"), &new).expect("write");
    let old_archive = mf_format::Archive::open(d.join("frames-old.mf")).expect("old");
    let new_archive = mf_format::Archive::open(d.join("frames-new.mf")).expect("new");
    let blob = zstd::bulk::compress(&a_new[4096..8192], 3).expect("compress");
    let run = RunPatch {
        op: Op::Full,
        hash: xxh3_64(&a_new[4096..8192]),
        old_start: 0,
        old_len: 0,
        payload: PayloadDesc::Blocks(vec![BlockDesc {
            new_len: 4096,
            old_start: 0,
            old_len: 0,
            blob_len: blob.len() as u64,
            blob_at: 0,
        }]),
    };
    let copy = |index: u32, storage: Storage| EntryRecord {
        at: 0,
        op: Op::Copy,
        old_index: Some(index),
        path: None,
        mode: None,
        mtime: None,
        size: 0,
        hash: 0,
        base_hash: None,
        storage,
        payload: PayloadDesc::None,
    };
    let records = [
        EntryRecord {
            at: 0,
            op: Op::Frames,
            old_index: Some(0),
            path: None,
            mode: None,
            mtime: None,
            size: a_new.len() as u64,
            hash: xxh3_64(&a_new),
            base_hash: Some(xxh3_64(a_txt)),
            // The fixture's small entries live in the solid stream.
            storage: Storage::Solid,
            payload: PayloadDesc::Frames(vec![
                FrameRun { frames: 1, patch: None },
                FrameRun { frames: 1, patch: Some(run) },
                FrameRun { frames: 1, patch: None },
            ]),
        },
        copy(1, Storage::Solid),
        copy(2, Storage::None),
    ];
    let control = |ids: Option<ContentIds>| {
        let mut control = Vec::new();
        let preamble =
            ArchivePreamble { frame_size_log2: 12, level: 3, old_entry_count: 3, new_entry_count: 3, content_ids: ids };
        preamble.write(&mut control);
        let mut previous = -1;
        for record in &records {
            record.write(&mut control, &mut previous);
        }
        control
    };
    let ids = ContentIds { old: content_id(&old_archive), new: content_id(&new_archive) };
    let compressed = zstd::bulk::compress(&control(Some(ids)), 19).expect("compress");
    let mut body = compressed.clone();
    body.extend_from_slice(&blob);
    let header = PatchHeader {
        version_major: PATCH_VERSION_MAJOR,
        version_minor: PATCH_VERSION_MINOR,
        kind: KIND_ARCHIVE,
        flags: FLAG_CONTENT_IDS,
        old_len: old.len() as u64,
        old_id: old_archive.footer().index_hash,
        new_len: new.len() as u64,
        new_hash: xxh3_64(&new),
        control_len: compressed.len() as u64,
        blobs_len: blob.len() as u64,
        body_hash: xxh3_64(&body),
    };
    let mut raw = vec![0u8];
    raw.extend_from_slice(&header.to_bytes());
    raw.extend_from_slice(&body);
    // The seed must be a patch that applies: checked here rather than trusted.
    std::fs::write(d.join("frames.mfp"), &raw[1..]).expect("write");
    mf_diff::apply_patch(&d.join("frames.mfp"), &d.join("frames-old.mf"), &d.join("frames-out.mf"), &|_| {})
        .expect("the frames seed applies");
    let rebuilt = mf_format::Archive::open(d.join("frames-out.mf")).expect("rebuilt");
    assert_eq!(content_id(&rebuilt), ids.new, "the frames seed rebuilds the new entries");
    assert!(rebuilt.verify().is_empty());
    std::fs::write(out.join("raw-frames.mfp"), raw).expect("write");

    let sealed_control = control(None);
    let mut sealed = vec![1u8];
    sealed.extend_from_slice(&(sealed_control.len() as u16).to_le_bytes());
    sealed.extend_from_slice(&sealed_control);
    sealed.extend_from_slice(&blob);
    std::fs::write(out.join("sealed-frames.mfp"), sealed).expect("write");
}
