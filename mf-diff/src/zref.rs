//! zstd with a reference prefix (what `zstd --patch-from` does): the old content is the window the
//! new content's matches point into. One zstd frame per call; the frame checksum is off because the
//! entry's content hash is checked after decoding.

use std::io;

use zstd::zstd_safe::{CCtx, CParameter};

fn zerr(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code).to_owned())
}

/// Smallest window log covering `len` bytes, within zstd's limits.
fn window_log(len: u64) -> u32 {
    let bits = 64 - len.max(1).leading_zeros();
    bits.clamp(10, 30)
}

/// Compresses `new` with `prefix` as a single-use dictionary at `level`.
pub fn compress(prefix: &[u8], new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut cctx = CCtx::create();
    let window = window_log(prefix.len() as u64 + new.len() as u64);
    cctx.set_parameter(CParameter::CompressionLevel(level)).map_err(zerr)?;
    cctx.set_parameter(CParameter::WindowLog(window)).map_err(zerr)?;
    if window > 27 {
        cctx.set_parameter(CParameter::EnableLongDistanceMatching(true)).map_err(zerr)?;
    }
    cctx.set_parameter(CParameter::ChecksumFlag(false)).map_err(zerr)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true)).map_err(zerr)?;
    cctx.ref_prefix(prefix).map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(new.len()));
    cctx.compress2(&mut out, new).map_err(zerr)?;
    Ok(out)
}

/// Plain zstd (no prefix), same frame settings.
pub fn compress_plain(new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    compress(&[], new, level)
}

/// Plain zstd of `len` bytes that `write` produces piecewise (so they need not be in one buffer),
/// with the same frame settings as [`compress_plain`]. Fails if `write` writes another length.
pub fn compress_streamed(
    len: u64,
    level: i32,
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    encoder.include_checksum(false)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(len))?;
    encoder.set_parameter(CParameter::WindowLog(window_log(len)))?;
    write(&mut encoder)?;
    encoder.finish()
}

/// Decodes a frame made by [`compress`] into exactly `size` bytes; any other length is an error.
/// The output grows only as bytes are decoded, so a frame that merely declares a huge size cannot
/// make it allocate.
pub fn decompress(prefix: &[u8], frame: &[u8], size: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(declared)) if declared == size => {}
        _ => return Err(invalid("zstd frame does not declare the expected size")),
    }
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(frame, prefix)?.single_frame();
    decoder.window_log_max(31)?;
    let mut out = Vec::new();
    decoder.take(size.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 != size {
        return Err(invalid("zstd frame decodes to the wrong size"));
    }
    Ok(out)
}

/// Estimated compression working set beyond the input buffers, in bytes.
pub fn compress_overhead(level: i32, total: u64) -> u64 {
    let tables: u64 = if level >= 16 { 96 << 20 } else { 32 << 20 };
    // Small inputs shrink zstd's tables to the input size.
    tables.min(total.saturating_mul(8)) + (1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip_and_wrong_prefix_fails() {
        let old: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut new = old.clone();
        new[5000] ^= 1;
        let frame = compress(&old, &new, 19).unwrap();
        assert!(frame.len() < 1000, "prefix makes the patch small: {}", frame.len());
        assert_eq!(decompress(&old, &frame, new.len() as u64).unwrap(), new);
        assert!(decompress(&old, &frame, new.len() as u64 + 1).is_err());
        let wrong = vec![0u8; old.len()];
        assert_ne!(decompress(&wrong, &frame, new.len() as u64).ok(), Some(new));
    }

    #[test]
    fn streamed_frames_decode_and_declare_their_size() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let frame = compress_streamed(data.len() as u64, 3, |w| {
            w.write_all(&data[..40_000])?;
            w.write_all(&data[40_000..])
        })
        .unwrap();
        assert_eq!(decompress(&[], &frame, data.len() as u64).unwrap(), data);
        assert!(compress_streamed(10, 3, |w| w.write_all(&[0u8; 9])).is_err());
    }
}
