//! The reference writer's compression choices (spec/FORMAT.md, "What writers do").

/// Extensions of formats that are usually already compressed: their frames are only tried at
/// [`PROBE_LEVEL`] first, so zstd spends little time on data it cannot shrink.
pub const PRECOMPRESSED_EXTENSIONS: &[&str] = &[
    // images
    "png", "jpg", "jpeg", "gif", "webp", "avif", "heic", "heif", "jxl", "jp2", "ktx2", "basis",
    // audio and video
    "ogg", "oga", "ogv", "opus", "mp3", "m4a", "aac", "flac", "wma", "mp4", "m4v", "mov", "webm", "mkv", "avi", "wmv",
    "bik", "bk2", "usm", // archives and compressed streams
    "zip", "gz", "tgz", "bz2", "tbz2", "xz", "txz", "zst", "tzst", "lz4", "lzma", "br", "7z", "rar", "cab", "jar",
    "apk", "whl", "pak", "mf", "mfp", "pz", // fonts and documents that embed compression
    "woff", "woff2", "pdf", "docx", "xlsx", "pptx", "odt", "epub",
];

/// True when the path's extension names an already-compressed format (case-insensitive).
pub fn is_precompressed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => {
            PRECOMPRESSED_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(ext))
        }
        _ => false,
    }
}

/// The fast zstd level at which frames of already-compressed formats are tried first: such a frame
/// is compressed at the archive's level only when this level already saves 1/32 of it (some "media"
/// files, such as video with long static scenes or PNGs written without real compression, do shrink).
pub const PROBE_LEVEL: i32 = 1;

/// Frames whose bytes carry more than this many bits of (order-0) entropy per byte are tried at
/// [`PROBE_LEVEL`] first, whatever their extension. Below it, entropy coding alone saves over 1/16,
/// so compression always pays and the probe would be wasted time; above it, the data is mostly
/// already compressed or random, where zstd at higher levels spends far more time (about 50×
/// level 1 on random data) to find nothing.
pub const PROBE_ENTROPY_BITS: f64 = 7.5;

/// Order-0 Shannon entropy of `data` in bits per byte (0 for empty data).
pub fn byte_entropy_bits(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    // Four tables counted in turn, then summed: one table stalls on every run of equal bytes
    // (each increment waits for the previous one to the same counter). The counts are the same.
    let mut tables = [[0u64; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for quad in &mut quads {
        for (table, &byte) in tables.iter_mut().zip(quad) {
            table[byte as usize] += 1;
        }
    }
    for &byte in quads.remainder() {
        tables[0][byte as usize] += 1;
    }
    let mut counts = [0u64; 256];
    for table in &tables {
        for (count, &n) in counts.iter_mut().zip(table) {
            *count += n;
        }
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// A compressed frame is kept only if it saves at least 1/32 of the frame; otherwise decoding it
/// would cost time on every read for almost no space.
pub fn compression_is_useful(raw_len: usize, compressed_len: usize) -> bool {
    compressed_len < raw_len - raw_len / 32
}

/// A compressed frame must be strictly shorter than its data, or readers would take it for raw.
pub fn compression_is_shorter(raw_len: usize, compressed_len: usize) -> bool {
    compressed_len < raw_len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_precompressed_extensions() {
        assert!(is_precompressed("textures/a.PNG"));
        assert!(is_precompressed("music.ogg"));
        assert!(is_precompressed("dir.zip/x.gz"));
        assert!(!is_precompressed("dir.zip/x.txt"));
        assert!(!is_precompressed("png"));
        assert!(!is_precompressed(".png"));
        assert!(!is_precompressed("shaders/a.glsl"));
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert_eq!(byte_entropy_bits(b""), 0.0);
        assert_eq!(byte_entropy_bits(&[7; 1000]), 0.0);
        assert!((byte_entropy_bits(b"abababab") - 1.0).abs() < 1e-12);
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 40).collect();
        assert!((byte_entropy_bits(&all) - 8.0).abs() < 1e-12);
        assert!(byte_entropy_bits("some ordinary english text, repeated. ".repeat(50).as_bytes()) < 5.0);
    }

    #[test]
    fn usefulness_threshold() {
        assert!(compression_is_useful(3200, 3099));
        assert!(!compression_is_useful(3200, 3100));
        assert!(!compression_is_useful(0, 0));
        assert!(compression_is_shorter(10, 9));
        assert!(!compression_is_shorter(10, 10));
    }
}
