//! Writes the seed corpus of the `patch_apply` fuzz target (fuzz/fuzz_targets/patch_apply.rs):
//! real patches against the target's fixture (the same old archive and plain file, built the same
//! way), each as a raw seed (mode byte 0, then the patch file) and as a sealed seed (mode byte 1 or 3,
//! the control stream's length as u16 LE, the decompressed control stream, then the blob section).
//! Deterministic: run by fuzz/make-seeds.sh.

use std::io::Read;
use std::path::Path;

use mf_diff::wire::{PatchHeader, PATCH_HEADER_LEN};
use mf_diff::{diff_files, DiffOptions};
use mf_format::WriterOptions;
use mf_test_support::mf_bytes_with;

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
}
