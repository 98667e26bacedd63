//! Writes the seed corpus of the `open_and_read` fuzz target (see `fuzz/make-seeds.sh`): small valid
//! archives covering every storage case, and a few damaged ones. Deterministic, so re-running it
//! reproduces the committed files.
//!
//! Usage: `cargo run -p mf-format --example fuzz_seeds -- DIR`

use mf_format::{Compression, EntryOptions, Mtime, WriterOptions};
use mf_test_support::{mf_bytes_with, noise};

/// 4 KiB frames keep multi-frame seeds small.
const SMALL_FRAMES: WriterOptions = WriterOptions { level: 3, frame_size_log2: 12 };

fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog\n".iter().copied().cycle().take(len).collect()
}

/// An ELF header for x86-64 followed by call and jump instructions to a few targets: what the x86
/// filter is for, compressible once filtered.
fn x86_code(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[18] = 62;
    let mut i = 0u32;
    while out.len() < len {
        let target = 4096 * (i % 3) + 17;
        let next = out.len() as u32 + 5;
        out.push(if i.is_multiple_of(4) { 0xE9 } else { 0xE8 });
        out.extend_from_slice(&target.wrapping_sub(next).to_le_bytes());
        out.extend_from_slice(&[0x48, 0x89, 0xC7]);
        i += 1;
    }
    out.truncate(len);
    out
}

fn archive(options: WriterOptions, entries: &[(&str, Vec<u8>, EntryOptions)]) -> Vec<u8> {
    mf_bytes_with(options, entries)
}

/// `bytes` with a copy of its index and footer appended and committed through slot 1 (generation 2),
/// slot 0 pointing at the original footer (generation 1): an in-place update's layout.
fn two_versions(bytes: &[u8]) -> Vec<u8> {
    use mf_format::format::{self, CommitSlot, Footer};
    let footer: Footer = format::from_bytes(&bytes[bytes.len() - 40..]).expect("a footer");
    let old_footer_at = bytes.len() as u64 - 40;
    let index = bytes[footer.index_offset as usize..old_footer_at as usize].to_vec();
    let mut out = bytes.to_vec();
    let new_index_at = out.len() as u64;
    out.extend_from_slice(&index);
    let new_footer_at = out.len() as u64;
    out.extend_from_slice(&format::to_bytes(&Footer::new(new_index_at, index.len() as u64, format::xxh3(&index))));
    out[32..64].copy_from_slice(&format::to_bytes(&CommitSlot::new(1, old_footer_at)));
    out[64..96].copy_from_slice(&format::to_bytes(&CommitSlot::new(2, new_footer_at)));
    out
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: fuzz_seeds DIR");
    std::fs::create_dir_all(&dir).expect("creating the corpus directory");
    let auto = EntryOptions::default();
    let store = EntryOptions { compression: Compression::Store, ..auto };
    let zstd = EntryOptions { compression: Compression::Zstd, ..auto };
    let exec = EntryOptions { mode: 0o755, mtime: Some(Mtime { secs: 1_700_000_000, nanos: 5 }), ..auto };

    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty-archive.mf", archive(SMALL_FRAMES, &[])),
        ("one-raw.mf", archive(SMALL_FRAMES, &[("a.bin", noise(100, 1), store)])),
        ("one-zstd-frame.mf", archive(SMALL_FRAMES, &[("a.txt", text(1000), auto)])),
        ("multi-frame.mf", archive(SMALL_FRAMES, &[("big.txt", text(3 * 4096 + 123), auto)])),
        (
            "mixed-frames.mf",
            archive(SMALL_FRAMES, &[("mix.dat", [text(4096), noise(4096, 2), text(700)].concat(), auto)]),
        ),
        (
            "empty-entries.mf",
            archive(SMALL_FRAMES, &[("e1", vec![], auto), ("d/e2", vec![], store), ("d/x", text(50), zstd)]),
        ),
        (
            "tree.mf",
            archive(
                SMALL_FRAMES,
                &[
                    ("a/b/c.txt", text(300), auto),
                    ("a/b/d.png", noise(200, 3), auto),
                    ("a/e", text(5000), zstd),
                    ("bin/run.sh", b"#!/bin/sh\necho hi\n".to_vec(), exec),
                    ("z", noise(17, 4), store),
                ],
            ),
        ),
        (
            "unsorted-data-order.mf",
            archive(SMALL_FRAMES, &[("zz", text(100), auto), ("aa", text(200), auto), ("mm", vec![1], store)]),
        ),
        (
            "default-frames.mf",
            archive(WriterOptions::default(), &[("x.txt", text(2000), auto), ("y.bin", noise(64, 5), auto)]),
        ),
        ("unicode.mf", archive(SMALL_FRAMES, &[("unicodé/文件.txt", text(40), auto), ("..a/b..", text(10), store)])),
    ];

    // 2.0 structures: shared data, solid frames (several entries a frame, entries across frames).
    let mut solid_entries: Vec<(String, Vec<u8>, EntryOptions)> =
        (0..12).map(|i| (format!("s/{i}.txt"), text(700 + 61 * i), auto)).collect();
    solid_entries.push(("dup/a.txt".into(), text(700), auto));
    solid_entries.push(("dup/n1".into(), noise(300, 6), store));
    solid_entries.push(("dup/n2".into(), noise(300, 6), store));
    let borrowed: Vec<(&str, Vec<u8>, EntryOptions)> =
        solid_entries.iter().map(|(p, d, o)| (p.as_str(), d.clone(), *o)).collect();
    let solid = archive(SMALL_FRAMES, &borrowed);
    seeds.push(("dedup-solid.mf", solid.clone()));
    seeds.push(("slots-two-versions.mf", two_versions(&solid)));

    // 2.1: an x86 executable's frames through the branch filter (flag X86), shared by a duplicate,
    // next to an unfiltered copy of the same bytes (in frames of their own: small files go solid).
    let code = x86_code(3 * 4096 + 500);
    let mut not_code = code.clone();
    not_code[0] = b'#';
    let filtered = archive(
        SMALL_FRAMES,
        &[("bin/tool", code.clone(), zstd), ("bin/tool2", code, zstd), ("bin/tool.dat", not_code, zstd)],
    );
    seeds.push(("x86-filtered.mf", filtered));

    // Damaged variants: the fuzzer starts from both sides of each check.
    let base = seeds[6].1.clone();
    let mut truncated = base.clone();
    truncated.truncate(base.len() - 7);
    let mut data_flip = base.clone();
    data_flip[100] ^= 0x10;
    let mut index_flip = base.clone();
    let index_at = base.len() - 100;
    index_flip[index_at] ^= 0x01;
    let mut header_only = base.clone();
    header_only.truncate(32);
    seeds.push(("damaged-truncated.mf", truncated));
    seeds.push(("damaged-data-bit.mf", data_flip));
    seeds.push(("damaged-index-bit.mf", index_flip));
    seeds.push(("damaged-header-only.mf", header_only));

    for (name, bytes) in seeds {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, bytes).expect("writing a seed");
    }
}
