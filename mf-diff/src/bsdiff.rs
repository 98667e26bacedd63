//! The raw bsdiff payload (spec/PATCH.md, "bsdiff payload"): the matcher's controls, delta bytes
//! and extra bytes stored without bzip2, so the patch's own zstd stream compresses them.

use std::io::{self, Write};

use crate::matcher::DeltaParts;
use crate::wire::{put_varint, unzigzag, zigzag};

/// Computes the raw bsdiff payload turning `old` into `new` (tests and small inputs).
#[cfg(test)]
pub fn diff(old: &[u8], new: &[u8]) -> io::Result<Vec<u8>> {
    let parts = crate::matcher::diff(old, new, 1).map_err(io::Error::other)?;
    Ok(to_payload(&parts))
}

fn controls_bytes(parts: &DeltaParts) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.controls.len() * 6 + 10);
    put_varint(&mut out, parts.controls.len() as u64);
    for control in &parts.controls {
        put_varint(&mut out, control.add);
        put_varint(&mut out, control.copy);
        put_varint(&mut out, zigzag(control.seek));
    }
    out
}

/// Length of the raw payload of `parts`.
pub fn payload_len(parts: &DeltaParts) -> u64 {
    let varint_len = |v: u64| u64::from((64 - v.leading_zeros()).max(1).div_ceil(7));
    let controls: u64 =
        parts.controls.iter().map(|c| varint_len(c.add) + varint_len(c.copy) + varint_len(zigzag(c.seek))).sum();
    varint_len(parts.controls.len() as u64) + controls + parts.delta.len() as u64 + parts.extra.len() as u64
}

/// Writes the raw payload of `parts` to `out` (streamed, so a compressor need not hold a copy).
pub fn write_payload(parts: &DeltaParts, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(&controls_bytes(parts))?;
    out.write_all(&parts.delta)?;
    out.write_all(&parts.extra)
}

/// The raw payload of `parts` as bytes.
#[cfg(test)]
pub fn to_payload(parts: &DeltaParts) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_len(parts) as usize);
    write_payload(parts, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Why a payload cannot be applied.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadError {
    /// Offset in the payload where the problem was found.
    pub offset: u64,
    pub what: &'static str,
}

fn read_varint(payload: &[u8], at: &mut usize) -> Result<u64, PayloadError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *payload.get(*at).ok_or(PayloadError { offset: *at as u64, what: "payload ends early" })?;
        *at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(PayloadError { offset: *at as u64, what: "varint overflows" });
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(PayloadError { offset: *at as u64, what: "varint too long" })
}

/// Applies a raw payload to `old`, producing exactly `new_size` bytes. Every length and position is
/// checked against the payload and `old`; the output grows only as bytes are produced.
pub fn apply(old: &[u8], payload: &[u8], new_size: u64) -> Result<Vec<u8>, PayloadError> {
    let mut at = 0usize;
    let count = read_varint(payload, &mut at)?;
    // Each control takes at least 3 bytes, so a lying count fails before any big allocation.
    if count > (payload.len() as u64) / 3 {
        return Err(PayloadError { offset: 0, what: "control count exceeds the payload" });
    }
    let mut controls = Vec::with_capacity(count as usize);
    let (mut delta_len, mut extra_len, mut total) = (0u64, 0u64, 0u64);
    for _ in 0..count {
        let start = at as u64;
        let add = read_varint(payload, &mut at)?;
        let copy = read_varint(payload, &mut at)?;
        let seek = unzigzag(read_varint(payload, &mut at)?);
        let overflow = PayloadError { offset: start, what: "control lengths overflow" };
        delta_len = delta_len.checked_add(add).ok_or(overflow)?;
        extra_len =
            extra_len.checked_add(copy).ok_or(PayloadError { offset: start, what: "control lengths overflow" })?;
        total = add
            .checked_add(copy)
            .and_then(|n| n.checked_add(total))
            .ok_or(PayloadError { offset: start, what: "control lengths overflow" })?;
        controls.push((add, copy, seek));
    }
    if total != new_size {
        return Err(PayloadError { offset: 0, what: "controls do not produce the entry's size" });
    }
    let rest = (payload.len() - at) as u64;
    if delta_len.checked_add(extra_len) != Some(rest) {
        return Err(PayloadError { offset: at as u64, what: "delta and extra lengths do not match the payload" });
    }
    let delta = &payload[at..at + delta_len as usize];
    let extra = &payload[at + delta_len as usize..];
    let (mut dpos, mut epos) = (0usize, 0usize);
    let mut spos: i64 = 0;
    let mut out = Vec::new();
    for (add, copy, seek) in controls {
        let add = add as usize;
        if add > 0 {
            let start = usize::try_from(spos)
                .ok()
                .filter(|&s| s.checked_add(add).is_some_and(|end| end <= old.len()))
                .ok_or(PayloadError { offset: (at + dpos) as u64, what: "control reads outside the old entry" })?;
            out.extend(old[start..start + add].iter().zip(&delta[dpos..dpos + add]).map(|(o, d)| o.wrapping_add(*d)));
            dpos += add;
            spos += add as i64;
        }
        let copy = copy as usize;
        out.extend_from_slice(&extra[epos..epos + copy]);
        epos += copy;
        spos = spos.checked_add(seek).ok_or(PayloadError { offset: (at + dpos) as u64, what: "seek overflows" })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn diff_then_apply_reproduces_the_new_data() {
        let old: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = old.clone();
        new[1000] ^= 0xff;
        new.splice(20_000..20_000, b"inserted text".iter().copied());
        new.drain(40_000..40_100);
        let payload = diff(&old, &new).unwrap();
        assert_eq!(apply(&old, &payload, new.len() as u64).unwrap(), new);
        assert!(apply(&old, &payload, new.len() as u64 + 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn apply_never_panics_on_garbage(old in proptest::collection::vec(any::<u8>(), 0..200),
                                         payload in proptest::collection::vec(any::<u8>(), 0..200),
                                         size in 0u64..500) {
            let _ = apply(&old, &payload, size);
        }

        #[test]
        fn round_trips_random_edits(old in proptest::collection::vec(any::<u8>(), 0..3000),
                                    edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..20)) {
            let mut new = old.clone();
            for (pos, byte) in edits {
                let at = pos as usize % (new.len() + 1);
                if byte % 3 == 0 && at < new.len() { new.remove(at); } else { new.insert(at, byte); }
            }
            let payload = diff(&old, &new).unwrap();
            prop_assert_eq!(apply(&old, &payload, new.len() as u64).unwrap(), new);
        }
    }
}
