//! Writes the seed corpus of the `panda3d` fuzz target (`fuzz/corpus/panda3d/`), byte for byte:
//! small valid multifiles (stored, zlib, scale 16, `#` prefix, Blowfish-encrypted with password
//! `secret`) and damaged copies (index loops, lying lengths and positions, a cut file).
//!
//! ```sh
//! cargo run -p mf-panda3d --example panda3d_seeds -- fuzz/corpus/panda3d
//! ```
//!
//! Multifiles are laid out here field by field rather than with `MultifileWriter`, which neither
//! writes text flags, encryption nor the damage; `regress-*` seeds are inputs the fuzzer found and
//! are kept by hand.

use std::io::Write;
use std::path::Path;

use mf_panda3d::crypto::{encrypt, Cipher};
use mf_panda3d::format::{FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_TEXT, MAGIC};

/// The multifile timestamp of the timestamped seeds, and their subfiles' (one second earlier).
const TIMESTAMP: u32 = 0x6b01_476a;

struct Subfile {
    name: &'static str,
    stored: Vec<u8>,
    flags: u16,
    /// Recorded for compressed or encrypted subfiles only.
    original_len: u32,
    timestamp: u32,
}

fn pad(position: usize, scale: usize) -> usize {
    position.div_ceil(scale) * scale
}

/// A version 1.1 multifile: `prefix`, the header, the index (entries back to back, each at a
/// multiple of `scale`), its terminator, then the data in index order.
fn layout(prefix: &[u8], scale: u32, timestamp: u32, subfiles: &[Subfile]) -> Vec<u8> {
    let scale_usize = scale as usize;
    let mut out = prefix.to_vec();
    out.extend_from_slice(&MAGIC);
    for field in [1u16, 1] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    out.extend_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    let entry_len = |s: &Subfile| {
        let original = if s.flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0 { 4 } else { 0 };
        4 + 4 + 4 + 2 + original + 4 + 2 + s.name.len()
    };
    let mut entry_at = Vec::new();
    let mut position = pad(out.len(), scale_usize);
    for subfile in subfiles {
        entry_at.push(position);
        position = pad(position + entry_len(subfile), scale_usize);
    }
    let terminator_at = position;
    let mut data_at = Vec::new();
    let mut data = pad(terminator_at + 4, scale_usize);
    for subfile in subfiles {
        data_at.push(data);
        data = pad(data + subfile.stored.len(), scale_usize);
    }
    let field = |value: usize| u32::try_from(value / scale_usize).expect("seeds are small").to_le_bytes();
    for (i, subfile) in subfiles.iter().enumerate() {
        out.resize(entry_at[i], 0);
        let next = entry_at.get(i + 1).copied().unwrap_or(terminator_at);
        out.extend_from_slice(&field(next));
        out.extend_from_slice(&field(data_at[i]));
        out.extend_from_slice(&(subfile.stored.len() as u32).to_le_bytes());
        out.extend_from_slice(&subfile.flags.to_le_bytes());
        if subfile.flags & (FLAG_COMPRESSED | FLAG_ENCRYPTED) != 0 {
            out.extend_from_slice(&subfile.original_len.to_le_bytes());
        }
        out.extend_from_slice(&subfile.timestamp.to_le_bytes());
        out.extend_from_slice(&(subfile.name.len() as u16).to_le_bytes());
        out.extend(subfile.name.bytes().map(|b| b ^ 0xff));
    }
    out.resize(terminator_at + 4, 0);
    for (i, subfile) in subfiles.iter().enumerate() {
        out.resize(data_at[i], 0);
        out.extend_from_slice(&subfile.stored);
    }
    out.resize(pad(out.len(), scale_usize), 0);
    out
}

const HELLO: &[u8] = b"hello world\n";
const BINARY: &[u8] = b"BINARYDATA\0\x01\x02";

fn stored(name: &'static str, data: &[u8], flags: u16, timestamp: u32) -> Subfile {
    Subfile { name, stored: data.to_vec(), flags, original_len: 0, timestamp }
}

fn zlib(name: &'static str, data: &[u8], flags: u16) -> Subfile {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(data).expect("in memory");
    let stored = encoder.finish().expect("in memory");
    Subfile { name, stored, flags: flags | FLAG_COMPRESSED, original_len: data.len() as u32, timestamp: 0 }
}

fn encrypted(name: &'static str, data: &[u8], flags: u16, iv: [u8; 8]) -> Subfile {
    let stored = encrypt(data, "secret", Cipher::BlowfishCbc, 16, &iv).expect("valid cipher parameters");
    Subfile { name, stored, flags: flags | FLAG_ENCRYPTED, original_len: data.len() as u32, timestamp: TIMESTAMP - 1 }
}

/// `bytes` with the little-endian u32 at `at` replaced by `value`.
fn with_u32(mut bytes: Vec<u8>, at: usize, value: u32) -> Vec<u8> {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    bytes
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: panda3d_seeds OUTPUT_DIR");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let plain = layout(b"", 1, 0, &[stored("a.txt", HELLO, FLAG_TEXT, 0), stored("b.bin", BINARY, 0, 0)]);
    let lines: String = (1..=50).map(|n| format!("{n}\n")).collect();
    let compressed = layout(
        b"",
        1,
        0,
        &[zlib("a.txt", HELLO, FLAG_TEXT), zlib("b.bin", BINARY, 0), zlib("n.dat", lines.as_bytes(), 0)],
    );
    // Offsets in `plain`: the first entry at 18 (next at 18, data length at 26), the second at 43.
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("plain.mf", plain.clone()),
        ("zlib.mf", compressed.clone()),
        (
            "scale16.mf",
            layout(
                b"",
                16,
                TIMESTAMP,
                &[stored("a.txt", HELLO, FLAG_TEXT, TIMESTAMP - 1), stored("b.bin", BINARY, 0, TIMESTAMP - 1)],
            ),
        ),
        (
            "prefix.mf",
            layout(b"#!/usr/bin/env panda3d\n", 1, TIMESTAMP, &[stored("a.txt", HELLO, FLAG_TEXT, TIMESTAMP - 1)]),
        ),
        (
            "encrypted-secret.mf",
            layout(
                b"",
                1,
                TIMESTAMP,
                &[
                    encrypted("a.txt", HELLO, FLAG_TEXT, [0x87, 0x17, 0xbc, 0xa2, 0x1d, 0x84, 0x55, 0x0c]),
                    encrypted("b.bin", BINARY, 0, [0x01, 0xa6, 0xf6, 0x90, 0x4b, 0x34, 0x72, 0x02]),
                ],
            ),
        ),
        ("damaged-loop.mf", with_u32(plain.clone(), 43, 18)),
        ("damaged-self-loop.mf", with_u32(plain.clone(), 18, 18)),
        ("damaged-lying-next.mf", with_u32(plain.clone(), 18, 0x7fff_0000)),
        ("damaged-lying-length.mf", with_u32(plain.clone(), 26, 0xffff_fff0)),
        // The first subfile of zlib.mf claims 1000 bytes once inflated.
        ("damaged-lying-ulen.mf", with_u32(compressed, 32, 1000)),
        ("damaged-truncated.mf", plain[..48].to_vec()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
