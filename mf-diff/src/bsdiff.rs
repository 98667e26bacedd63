//! bsdiff matches without bzip2: qbsdiff finds the matches, its bzip2 sections are decoded once into
//! [`DeltaParts`] (controls, delta bytes, extra bytes), which the patch stores as three separately
//! compressed streams (spec/PATCH.md, "delta").

use std::io::{self, Read};

use crate::delta::{Control, DeltaParts};

/// Computes the delta turning `old` into `new`. Deterministic (single-threaded search).
pub fn diff(old: &[u8], new: &[u8]) -> io::Result<DeltaParts> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .parallel_scheme(qbsdiff::ParallelScheme::Never)
        .compression_level(1)
        .compare(io::Cursor::new(&mut patch))?;
    from_bsdiff4(&patch)
}

fn decode_int(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    let x = u64::from_le_bytes(a);
    if x >> 63 == 0 || x == 1 << 63 {
        x as i64
    } else {
        ((x & ((1 << 63) - 1)) as i64).wrapping_neg()
    }
}

/// Converts a BSDIFF40 patch (bzip2 sections) into its three streams.
fn from_bsdiff4(patch: &[u8]) -> io::Result<DeltaParts> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "qbsdiff produced an unexpected patch");
    if patch.len() < 32 || &patch[..8] != b"BSDIFF40" {
        return Err(bad());
    }
    let csize = usize::try_from(decode_int(&patch[8..16])).map_err(|_| bad())?;
    let dsize = usize::try_from(decode_int(&patch[16..24])).map_err(|_| bad())?;
    let body = &patch[32..];
    if csize.checked_add(dsize).is_none_or(|n| n > body.len()) {
        return Err(bad());
    }
    let mut ctrls = Vec::new();
    bzip2::read::BzDecoder::new(&body[..csize]).read_to_end(&mut ctrls)?;
    let mut delta = Vec::new();
    bzip2::read::BzDecoder::new(&body[csize..csize + dsize]).read_to_end(&mut delta)?;
    let mut extra = Vec::new();
    bzip2::read::BzDecoder::new(&body[csize + dsize..]).read_to_end(&mut extra)?;
    if ctrls.len() % 24 != 0 {
        return Err(bad());
    }
    let controls = ctrls
        .chunks_exact(24)
        .map(|ctrl| {
            Ok(Control {
                add: u64::try_from(decode_int(&ctrl[0..8])).map_err(|_| bad())?,
                copy: u64::try_from(decode_int(&ctrl[8..16])).map_err(|_| bad())?,
                seek: decode_int(&ctrl[16..24]),
            })
        })
        .collect::<io::Result<_>>()?;
    Ok(DeltaParts { controls, delta, extra })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::apply_in_memory;
    use proptest::prelude::*;

    #[test]
    fn diff_then_apply_reproduces_the_new_data() {
        let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[1000] ^= 0xff;
        new.splice(20_000..20_000, b"inserted text".iter().copied());
        new.drain(40_000..40_100);
        let parts = diff(&old, &new).unwrap();
        assert_eq!(parts.output_len(), new.len() as u64);
        assert_eq!(apply_in_memory(&old, &parts).unwrap(), new);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_random_edits(old in proptest::collection::vec(any::<u8>(), 0..3000),
                                    edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..20)) {
            let mut new = old.clone();
            for (pos, byte) in edits {
                let at = pos as usize % (new.len() + 1);
                if byte % 3 == 0 && at < new.len() { new.remove(at); } else { new.insert(at, byte); }
            }
            let parts = diff(&old, &new).unwrap();
            prop_assert_eq!(apply_in_memory(&old, &parts).unwrap(), new);
        }
    }
}
