//! Fuzzes the patch reader and applier. Two modes, chosen by the first byte's low bit:
//! - raw: the input is a whole patch file (exercises header and checksum checks);
//! - sealed: the input is a control stream plus blobs, which the target compresses and seals with
//!   valid checksums and the right base identity, so the parser and applier see arbitrary records
//!   (entry records, delta and zstd payload descriptors, the delta's three streams) against a real
//!   old archive (or plain file).
//!
//! Archive patches are also applied in place to a copy of the old archive: a patch that fails must
//! leave the copy reading exactly as the old archive (nothing committed), and one that succeeds must
//! leave an archive that opens and verifies.
//!
//! Any panic, abort or out-of-memory is a finding; errors are the expected outcome.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mf_format::{ArchiveWriter, EntryOptions, WriterOptions};

struct Fixture {
    dir: tempfile::TempDir,
    archive: PathBuf,
    archive_id: u64,
    archive_len: u64,
    plain: PathBuf,
    plain_id: u64,
    plain_len: u64,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = ArchiveWriter::new(Vec::new(), WriterOptions { level: 3, frame_size_log2: 12 }).expect("writer");
        writer.add_bytes("a.txt", &b"hello world\n".repeat(900), EntryOptions::default()).expect("add");
        writer.add_bytes("b/c.bin", &(0..5000u32).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>(), EntryOptions::default()).expect("add");
        writer.add_bytes("empty", b"", EntryOptions::default()).expect("add");
        let bytes = writer.finish().expect("finish");
        let archive = dir.path().join("old.mf");
        std::fs::write(&archive, &bytes).expect("write");
        let opened = mf_format::Archive::open(&archive).expect("open");
        let plain = dir.path().join("old.bin");
        let plain_bytes = b"plain old file contents ".repeat(200);
        std::fs::write(&plain, &plain_bytes).expect("write");
        Fixture {
            archive_id: opened.footer().index_hash,
            archive_len: bytes.len() as u64,
            archive,
            plain_id: xxhash_rust::xxh3::xxh3_64(&plain_bytes),
            plain_len: plain_bytes.len() as u64,
            plain,
            dir,
        }
    })
}

fn seal(kind: u8, flags: u8, old_len: u64, old_id: u64, new_len: u64, control: &[u8], blobs: &[u8]) -> Vec<u8> {
    let compressed = zstd::encode_all(control, 1).unwrap_or_default();
    let mut body = compressed.clone();
    body.extend_from_slice(blobs);
    let header = mf_diff::wire::PatchHeader {
        version_major: mf_diff::wire::PATCH_VERSION_MAJOR,
        version_minor: mf_diff::wire::PATCH_VERSION_MINOR,
        kind,
        flags,
        old_len,
        old_id,
        new_len,
        new_hash: 0,
        control_len: compressed.len() as u64,
        blobs_len: blobs.len() as u64,
        body_hash: xxhash_rust::xxh3::xxh3_64(&body),
    };
    let mut patch = header.to_bytes().to_vec();
    patch.extend_from_slice(&body);
    patch
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some((&mode, rest)) = data.split_first() else { return };
    let patch_bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        if rest.len() < 2 {
            return;
        }
        let control_len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let (control, blobs) = rest[2..].split_at(control_len);
        let plain = mode & 2 != 0;
        let (old_len, old_id) = if plain { (fx.plain_len, fx.plain_id) } else { (fx.archive_len, fx.archive_id) };
        seal(u8::from(plain), (mode >> 2) & 1, old_len, old_id, 1 << 16, control, blobs)
    };
    let patch = fx.dir.path().join(format!("p{}.mfp", std::process::id()));
    if std::fs::write(&patch, &patch_bytes).is_err() {
        return;
    }
    let out = fx.dir.path().join("out");
    let old = if mode & 2 != 0 && mode & 1 == 1 { &fx.plain } else { &fx.archive };
    if let Ok(p) = mf_diff::Patch::open(&patch) {
        let _ = p.report();
    }
    let _ = mf_diff::apply_patch(&patch, old, &out, &|_| {});
    let _ = std::fs::remove_file(&out);
    if old == &fx.archive {
        apply_in_place_to_a_copy(fx, &patch, &out);
    }
});

/// Every entry's path and content, in record order.
fn contents(archive: &mf_format::Archive) -> Vec<(String, Vec<u8>)> {
    archive.entries().map(|e| (e.path().to_owned(), archive.read(&e).expect("readable").into_owned())).collect()
}

fn apply_in_place_to_a_copy(fx: &Fixture, patch: &std::path::Path, copy: &std::path::Path) {
    if std::fs::copy(&fx.archive, copy).is_err() {
        return;
    }
    let result = mf_diff::apply_in_place(patch, copy, mf_diff::InPlaceOptions::default(), &|_| {});
    let after = mf_format::Archive::open(copy).expect("an in-place apply leaves an archive that opens");
    if result.is_ok() {
        assert!(after.verify().is_empty(), "a successful in-place apply leaves an archive that verifies");
    } else {
        let before = mf_format::Archive::open(&fx.archive).expect("fixture");
        assert_eq!(contents(&after), contents(&before), "a failed in-place apply changed the archive");
    }
    let _ = std::fs::remove_file(copy);
}
