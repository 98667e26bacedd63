//! zstd with a reference prefix (what `zstd --patch-from` does): the old content is the window the
//! new content's matches point into. One zstd frame per call; the frame checksum is off because the
//! entry's content hash is checked after decoding.

use std::io;

use zstd::zstd_safe::{CCtx, CParameter};

use crate::wire::{REF_WINDOW_LOG_MAX, STREAM_WINDOW_LOG_MAX};

fn zerr(code: usize) -> io::Error {
    io::Error::other(zstd::zstd_safe::get_error_name(code).to_owned())
}

/// Smallest window log covering `len` bytes, within zstd's limits and `max` (spec/PATCH.md bounds
/// every frame's window so appliers decode in bounded memory).
fn window_log(len: u64, max: u32) -> u32 {
    let bits = 64 - len.max(1).leading_zeros();
    bits.clamp(10, max)
}

/// Compresses `new` with `prefix` as a single-use dictionary at `level`.
pub fn compress(prefix: &[u8], new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut cctx = CCtx::create();
    let max = if prefix.is_empty() { STREAM_WINDOW_LOG_MAX } else { REF_WINDOW_LOG_MAX };
    let window = window_log(prefix.len() as u64 + new.len() as u64, max);
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

/// Plain zstd of `len` bytes that `feed` hands over a piece at a time (never held whole), with the
/// frame settings of [`compress_plain`].
pub fn compress_plain_chunks(
    len: u64,
    level: i32,
    feed: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    encoder.window_log(window_log(len, STREAM_WINDOW_LOG_MAX))?;
    encoder.include_checksum(false)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(len))?;
    feed(&mut |piece| encoder.write_all(piece))?;
    encoder.finish()
}

/// Decodes one frame made by [`compress`], read from `frame`, into exactly `size` bytes; any other
/// length, a window above `window_log_max`, or bytes after the frame are errors. The output grows
/// only as bytes are decoded, so a frame that merely declares a huge size cannot make it allocate.
pub fn decompress_from(prefix: &[u8], frame: impl io::BufRead, size: u64, window_log_max: u32) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(frame, prefix)?.single_frame();
    decoder.window_log_max(window_log_max)?;
    let mut out = Vec::new();
    (&mut decoder).take(size.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 != size {
        return Err(invalid("zstd frame decodes to the wrong size"));
    }
    if !decoder.finish().fill_buf()?.is_empty() {
        return Err(invalid("bytes follow the zstd frame"));
    }
    Ok(out)
}

/// [`decompress_from`] on a frame in memory, with the widest window this format allows.
#[cfg(test)]
pub fn decompress(prefix: &[u8], frame: &[u8], size: u64) -> io::Result<Vec<u8>> {
    decompress_from(prefix, frame, size, REF_WINDOW_LOG_MAX)
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
}
