//! The reference writer's compression choices (spec/FORMAT.md, "What writers do").

/// Extensions of formats that are already compressed: zstd would spend time and gain nothing.
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
    fn usefulness_threshold() {
        assert!(compression_is_useful(3200, 3099));
        assert!(!compression_is_useful(3200, 3100));
        assert!(!compression_is_useful(0, 0));
        assert!(compression_is_shorter(10, 9));
        assert!(!compression_is_shorter(10, 10));
    }
}
