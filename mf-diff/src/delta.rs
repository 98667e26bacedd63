//! Delta payloads: the bsdiff model (controls, delta bytes, extra bytes) kept as separately
//! compressed streams, so an applier decodes them side by side, a buffer at a time, reading the old
//! content by random access (spec/PATCH.md, "delta"). HDiffPatch keeps its streams apart for the
//! same reason: nothing of the entry has to be in memory at once. The delta bytes, mostly zeros,
//! are coded as runs of zeros and literals (patch format 2.4), as HDiffPatch RLE-codes its diff
//! bytes: zstd then reads a twentieth of them and a strong level is cheap.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::source::BlobStream;
use crate::wire::{
    put_varint, unzigzag, zigzag, ControlReader, DeltaCoding, DeltaDesc, MAX_PAYLOAD_EXPANSION, STREAM_WINDOW_LOG_MAX,
};
use crate::zref;

/// One control: emit `add` bytes `old[p+i] + delta[i]` (mod 256), then `copy` bytes of extra, then `p += seek`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Bytes produced by adding `delta` bytes to the old bytes at the cursor.
    pub add: u64,
    /// Bytes then taken verbatim from the extra stream.
    pub copy: u64,
    /// How far the old cursor then moves (may be negative).
    pub seek: i64,
}

/// A delta turning one old content into one new content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaParts {
    /// The controls in output order.
    pub controls: Vec<Control>,
    /// Σ add bytes: new minus old, byte by byte (mod 256), mostly zeros for similar content; kept
    /// as runs, so a 250 MB library's delta bytes take a few MB while the matcher works.
    pub delta: DeltaBytes,
    /// Σ copy bytes: new bytes with no counterpart in the old content.
    pub extra: Vec<u8>,
}

/// A delta as it goes into a patch: four zstd frames (empty when their stream is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedDelta {
    /// Number of controls encoded in `controls`.
    pub control_count: u64,
    /// Σ add: the number of delta bytes.
    pub delta_len: u64,
    /// The zstd frame of the controls (varint add, varint copy, zigzag seek each); empty when there are none.
    pub controls: Vec<u8>,
    /// Runs coding: Σ literal run lengths (the decoded length of `delta`) and the zstd frame of the
    /// runs (varint zero bytes, varint literal bytes each; empty when there are no delta bytes).
    /// `None`: raw coding, `delta` holds the delta bytes as they are.
    pub runs: Option<(u64, Vec<u8>)>,
    /// The zstd frame of the delta bytes' literals (raw coding: of the delta bytes); empty when there are none.
    pub delta: Vec<u8>,
    /// The zstd frame of the extra bytes; empty when there are none.
    pub extra: Vec<u8>,
}

impl EncodedDelta {
    /// The payload descriptor (blob positions are the reader's business).
    pub fn desc(&self) -> DeltaDesc {
        DeltaDesc {
            control_count: self.control_count,
            delta_len: self.delta_len,
            coding: match &self.runs {
                Some((literal_len, runs)) => {
                    DeltaCoding::Runs { literal_len: *literal_len, runs_blob: runs.len() as u64 }
                }
                None => DeltaCoding::Raw,
            },
            controls_blob: self.controls.len() as u64,
            delta_blob: self.delta.len() as u64,
            extra_blob: self.extra.len() as u64,
            blob_at: 0,
        }
    }

    /// Bytes the blobs take.
    pub fn len(&self) -> u64 {
        let runs = self.runs.as_ref().map_or(0, |(_, runs)| runs.len());
        (self.controls.len() + runs + self.delta.len() + self.extra.len()) as u64
    }

    /// Whether all blobs are empty (a delta of empty content).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeltaParts {
    /// Bytes the delta produces.
    pub fn output_len(&self) -> u64 {
        self.controls.iter().map(|c| c.add + c.copy).sum()
    }

    /// Compresses the streams at `level`. Controls that produce nothing are folded into the
    /// previous control's seek, so every control but a leading one produces a byte (the reader holds
    /// the control count to the entry's size).
    pub fn encode(&self, level: i32) -> io::Result<EncodedDelta> {
        let add: u64 = self.controls.iter().map(|c| c.add).sum();
        let copy: u64 = self.controls.iter().map(|c| c.copy).sum();
        if add != self.delta.len() || copy != self.extra.len() as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "delta controls do not match their streams"));
        }
        let mut folded: Vec<Control> = Vec::with_capacity(self.controls.len());
        for control in &self.controls {
            match folded.last_mut() {
                Some(last) if control.add == 0 && control.copy == 0 => last.seek += control.seek,
                _ => folded.push(*control),
            }
        }
        let mut raw = Vec::with_capacity(folded.len() * 4);
        for control in &folded {
            put_varint(&mut raw, control.add);
            put_varint(&mut raw, control.copy);
            put_varint(&mut raw, zigzag(control.seek));
        }
        let frame = |bytes: &[u8]| -> io::Result<Vec<u8>> {
            if bytes.is_empty() {
                Ok(Vec::new())
            } else {
                zref::compress_plain(bytes, level)
            }
        };
        let literals = self.delta.literals();
        // The streams are independent: compressed side by side (level 19 on a binary's runs and
        // literals is a second or two, the end of a diff).
        let ((controls, runs), (delta, extra)) = rayon::join(
            || rayon::join(|| frame(&raw), || frame(&self.delta.runs())),
            || rayon::join(|| frame(literals), || frame(&self.extra)),
        );
        let mut encoded = EncodedDelta {
            control_count: folded.len() as u64,
            delta_len: add,
            controls: controls?,
            runs: Some((literals.len() as u64, runs?)),
            delta: delta?,
            extra: extra?,
        };
        // A reader holds a record's size to 2^20 times its payload bytes (spec/PATCH.md); long zero
        // runs can beat that (a huge entry with a few changed bytes), the raw coding cannot. The
        // raw bytes are compressed as they are expanded, never held whole.
        if add + copy > encoded.len().saturating_mul(MAX_PAYLOAD_EXPANSION) {
            encoded.runs = None;
            encoded.delta = if add == 0 {
                Vec::new()
            } else {
                zref::compress_plain_chunks(add, level, |sink| self.delta.expand(sink))?
            };
        }
        Ok(encoded)
    }
}

/// Delta bytes kept as spec/PATCH.md's runs coding: (zero bytes, literal bytes) varint pairs, never
/// (0, 0), and the literal bytes apart; a literal run ends at the next zero byte. Built by appending,
/// so the bytes themselves are never held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaBytes {
    /// Finished pairs.
    runs: Vec<u8>,
    /// Every literal byte, the current run's included.
    literals: Vec<u8>,
    /// Zero bytes of the current (unfinished) pair.
    zeros: u64,
    /// Literal bytes of the current pair.
    literal: u64,
    /// Bytes appended in all.
    len: u64,
}

impl DeltaBytes {
    /// Appends delta bytes: alternately a stretch of zeros and a stretch of nonzero bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let zeros = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
            self.push_zeros(zeros as u64);
            bytes = &bytes[zeros..];
            let literal = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            self.push_literals(&bytes[..literal]);
            bytes = &bytes[literal..];
        }
    }

    /// Appends `new[i] - old[i]` (mod 256) for every `i`.
    pub fn push_difference(&mut self, new: &[u8], old: &[u8]) {
        let mut buf = [0u8; 4096];
        for (n, o) in new.chunks(buf.len()).zip(old.chunks(buf.len())) {
            let out = &mut buf[..n.len()];
            out.iter_mut().zip(n.iter().zip(o)).for_each(|(d, (n, o))| *d = n.wrapping_sub(*o));
            self.push(out);
        }
    }

    /// Appends another delta's bytes (pair by pair: nothing is expanded).
    pub fn append(&mut self, other: &DeltaBytes) {
        let mut literals = &other.literals[..];
        for (zeros, literal) in other.pairs() {
            self.push_zeros(zeros);
            let (now, rest) = literals.split_at(literal as usize);
            self.push_literals(now);
            literals = rest;
        }
    }

    /// Appends zero bytes; they end the current literal run.
    fn push_zeros(&mut self, zeros: u64) {
        if zeros > 0 {
            if self.literal > 0 {
                self.close_pair();
            }
            self.zeros += zeros;
            self.len += zeros;
        }
    }

    /// Appends nonzero bytes.
    fn push_literals(&mut self, literals: &[u8]) {
        self.literals.extend_from_slice(literals);
        self.literal += literals.len() as u64;
        self.len += literals.len() as u64;
    }

    fn close_pair(&mut self) {
        put_varint(&mut self.runs, self.zeros);
        put_varint(&mut self.runs, self.literal);
        (self.zeros, self.literal) = (0, 0);
    }

    /// Bytes held in memory (runs and literals).
    pub fn held_bytes(&self) -> u64 {
        (self.runs.len() + self.literals.len()) as u64
    }

    /// Number of delta bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no delta bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The nonzero bytes, in order (the literal stream).
    pub fn literals(&self) -> &[u8] {
        &self.literals
    }

    /// The runs stream: every pair, the unfinished one included.
    pub fn runs(&self) -> Vec<u8> {
        let mut runs = self.runs.clone();
        if self.zeros > 0 || self.literal > 0 {
            put_varint(&mut runs, self.zeros);
            put_varint(&mut runs, self.literal);
        }
        runs
    }

    /// Every (zeros, literals) pair.
    fn pairs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut at = 0;
        let finished = std::iter::from_fn(move || {
            (at < self.runs.len()).then(|| {
                let zeros = read_varint(&self.runs, &mut at);
                (zeros, read_varint(&self.runs, &mut at))
            })
        });
        finished.chain((self.zeros > 0 || self.literal > 0).then_some((self.zeros, self.literal)))
    }

    /// Feeds the bytes, expanded, to `sink` a piece at a time.
    pub fn expand<E>(&self, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let zeros = [0u8; 1 << 16];
        let mut literals = &self.literals[..];
        for (mut z, literal) in self.pairs() {
            while z > 0 {
                let n = z.min(zeros.len() as u64) as usize;
                sink(&zeros[..n])?;
                z -= n as u64;
            }
            let (now, rest) = literals.split_at(literal as usize);
            sink(now)?;
            literals = rest;
        }
        Ok(())
    }

    /// The bytes, expanded (for tests and small callers).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.expand(|piece| -> Result<(), ()> {
            out.extend_from_slice(piece);
            Ok(())
        });
        out
    }
}

impl From<&[u8]> for DeltaBytes {
    fn from(bytes: &[u8]) -> Self {
        let mut delta = DeltaBytes::default();
        delta.push(bytes);
        delta
    }
}

/// A varint this module wrote itself (so well formed) at `*at`, advancing past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// The delta bytes of a delta payload as a stream, from either coding. One per delta being applied,
/// so the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum DeltaSource<'a> {
    /// Before 2.4: the bytes as they are.
    Raw(BlobStream<'a>),
    /// 2.4: runs of zeros and literals.
    Runs {
        runs: ControlReader<BufReader<BlobStream<'a>>>,
        literals: BlobStream<'a>,
        /// Zero bytes left in the current run.
        zeros: u64,
        /// Literal bytes left in the current run.
        literal: u64,
        /// Delta bytes no run has covered yet: every run length is held to it.
        uncovered: u64,
    },
}

impl DeltaSource<'_> {
    /// Fills `out` with the next delta bytes.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<()> {
        match self {
            DeltaSource::Raw(stream) => {
                stream.read_exact(out).map_err(|e| stream.error(e, "the delta stream ends early"))
            }
            DeltaSource::Runs { runs, literals, zeros, literal, uncovered } => {
                let mut filled = 0;
                while filled < out.len() {
                    let want = (out.len() - filled) as u64;
                    if *zeros > 0 {
                        let n = want.min(*zeros) as usize;
                        out[filled..filled + n].fill(0);
                        *zeros -= n as u64;
                        filled += n;
                    } else if *literal > 0 {
                        let n = want.min(*literal) as usize;
                        literals
                            .read_exact(&mut out[filled..filled + n])
                            .map_err(|e| literals.error(e, "the delta literal stream ends early"))?;
                        *literal -= n as u64;
                        filled += n;
                    } else {
                        let at = runs.offset;
                        *zeros = runs.bounded(*uncovered, "zero run")?;
                        *uncovered -= *zeros;
                        *literal = runs.bounded(*uncovered, "literal run")?;
                        *uncovered -= *literal;
                        if *zeros == 0 && *literal == 0 {
                            return Err(runs.corrupt_at(at, "an empty delta run"));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Checks that every delta byte was used and the streams end exactly there.
    fn finish(&mut self) -> Result<()> {
        match self {
            DeltaSource::Raw(stream) => stream.finish("the delta stream"),
            DeltaSource::Runs { runs, literals, zeros, literal, uncovered } => {
                if *zeros + *literal + *uncovered != 0 {
                    return Err(runs.corrupt("the delta runs hold more bytes than the controls add"));
                }
                let mut byte = [0u8; 1];
                let more = runs.get_mut().read(&mut byte);
                match more {
                    Ok(0) => {}
                    Ok(_) => return Err(runs.corrupt("the delta run stream holds more bytes than its runs use")),
                    Err(e) => return Err(runs.corrupt(format!("the delta run stream does not decode: {e}"))),
                }
                runs.get_mut().get_mut().finish("the delta run stream")?;
                literals.finish("the delta literal stream")
            }
        }
    }
}

/// Random access to the old content a delta reads, through a small least-recently-used cache of
/// aligned chunks (read through the mapping of a raw entry, or decoded from the frames covering the
/// chunk of a compressed one). Controls of a native binary's delta jump between a few old regions
/// (code, data, string tables) at every relocation; with a single cached chunk each jump decoded the
/// chunk again, so applying a 60 MB library decoded gigabytes.
pub(crate) struct OldCursor<'a> {
    read: std::rc::Rc<dyn Fn(u64, usize) -> Result<Vec<u8>> + 'a>,
    size: u64,
    /// Cached chunks: (start, bytes, last use), at most [`OLD_CHUNKS`].
    chunks: Vec<(u64, Vec<u8>, u64)>,
    clock: u64,
}

/// Old bytes per cached chunk: the default frame size, so a miss decodes one frame.
const OLD_CHUNK: u64 = 1 << 18;
/// Chunks cached at once (18 MiB): a windowed delta's block reads anywhere in its 16 MiB window
/// (mf-diff's matcher::STANDARD_WINDOW), and 8 MiB made applying duckdb's library decode its old
/// frames several times over (apply 1.91 s, 1.02 s with 18 MiB; peak RSS 36 → 48 MiB).
const OLD_CHUNKS: usize = 72;

impl<'a> OldCursor<'a> {
    pub fn new(size: u64, read: impl Fn(u64, usize) -> Result<Vec<u8>> + 'a) -> Self {
        OldCursor { read: std::rc::Rc::new(read), size, chunks: Vec::new(), clock: 0 }
    }

    /// A cursor over `[start, start + len)` of this one's bytes (a frame run's base window), with a
    /// cache of its own; `None` when the window does not lie inside.
    pub fn window(&self, start: u64, len: u64) -> Option<OldCursor<'a>> {
        start.checked_add(len).filter(|&end| end <= self.size)?;
        let read = self.read.clone();
        Some(OldCursor::new(len, move |at, n| read(start + at, n)))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// `len` old bytes from `start`, read directly (reference windows of zstd-ref blocks).
    pub fn read_exact(&self, start: u64, len: usize) -> Result<Vec<u8>> {
        (self.read)(start, len)
    }

    /// The cached old bytes from `pos` to the end of its chunk (`pos` < size).
    pub fn at(&mut self, pos: u64) -> Result<&[u8]> {
        self.clock += 1;
        let start = pos / OLD_CHUNK * OLD_CHUNK;
        let slot = match self.chunks.iter().position(|c| c.0 == start) {
            Some(slot) => slot,
            None => {
                let len = OLD_CHUNK.min(self.size - start) as usize;
                let data = (self.read)(start, len)?;
                if self.chunks.len() < OLD_CHUNKS {
                    self.chunks.push((start, data, 0));
                    self.chunks.len() - 1
                } else {
                    let oldest = (0..self.chunks.len()).min_by_key(|&k| self.chunks[k].2).unwrap_or(0);
                    self.chunks[oldest] = (start, data, 0);
                    oldest
                }
            }
        };
        self.chunks[slot].2 = self.clock;
        let (start, data, _) = &self.chunks[slot];
        Ok(&data[(pos - start) as usize..])
    }
}

/// Applies a delta payload as a stream: each call produces the next bytes of the new content.
pub(crate) struct DeltaReader<'a> {
    controls: ControlReader<BlobStream<'a>>,
    delta: DeltaSource<'a>,
    extra: BlobStream<'a>,
    old: OldCursor<'a>,
    patch: &'a Path,
    entry: String,
    controls_left: u64,
    add_left: u64,
    copy_left: u64,
    seek: Option<i64>,
    pos: i64,
    produced: u64,
    size: u64,
}

impl<'a> DeltaReader<'a> {
    pub fn new(
        file: &'a File,
        patch: &'a Path,
        desc: &DeltaDesc,
        size: u64,
        old: OldCursor<'a>,
        entry: &str,
    ) -> Result<Self> {
        let open = |at: u64, len: u64, section: &'static str| {
            BlobStream::open(file, patch, at, len, STREAM_WINDOW_LOG_MAX, section, entry)
        };
        let runs_at = desc.blob_at + desc.controls_blob;
        let delta_at = runs_at + desc.runs_blob();
        let extra_at = delta_at + desc.delta_blob;
        let mut controls = ControlReader::for_section(
            open(desc.blob_at, desc.controls_blob, "delta controls")?,
            patch,
            "delta controls",
        );
        controls.entry = Some(entry.to_owned());
        let delta = match desc.coding {
            DeltaCoding::Raw => DeltaSource::Raw(open(delta_at, desc.delta_blob, "delta bytes")?),
            DeltaCoding::Runs { runs_blob, .. } => {
                let mut runs = ControlReader::for_section(
                    BufReader::with_capacity(64 << 10, open(runs_at, runs_blob, "delta runs")?),
                    patch,
                    "delta runs",
                );
                runs.entry = Some(entry.to_owned());
                DeltaSource::Runs {
                    runs,
                    literals: open(delta_at, desc.delta_blob, "delta literals")?,
                    zeros: 0,
                    literal: 0,
                    uncovered: desc.delta_len,
                }
            }
        };
        Ok(DeltaReader {
            controls,
            delta,
            extra: open(extra_at, desc.extra_blob, "extra bytes")?,
            old,
            patch,
            entry: entry.to_owned(),
            controls_left: desc.control_count,
            add_left: 0,
            copy_left: 0,
            seek: None,
            pos: 0,
            produced: 0,
            size,
        })
    }

    fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::CorruptPatch {
            file: self.patch.to_owned(),
            section: "delta controls",
            offset: self.controls.offset,
            entry: Some(self.entry.clone()),
            what: what.into(),
        }
    }

    /// Reads the next control, holding it to the entry's size before it produces anything.
    fn next_control(&mut self) -> Result<bool> {
        if self.controls_left == 0 {
            return Ok(false);
        }
        self.controls_left -= 1;
        let add = self.controls.varint()?;
        let copy = self.controls.varint()?;
        let seek = unzigzag(self.controls.varint()?);
        let total = add.checked_add(copy).and_then(|n| n.checked_add(self.produced));
        if total.is_none_or(|t| t > self.size) {
            return Err(self.corrupt(format!("controls produce more than the entry's {} bytes", self.size)));
        }
        (self.add_left, self.copy_left, self.seek) = (add, copy, Some(seek));
        Ok(true)
    }

    /// Produces up to `buf.len()` bytes; 0 at the end, after checking that every stream was used
    /// up exactly.
    pub fn produce(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            if self.add_left > 0 {
                let pos = u64::try_from(self.pos).ok().filter(|&p| p < self.old.size()).ok_or_else(|| {
                    self.corrupt(format!("a control reads old byte {} outside the old content", self.pos))
                })?;
                let want = (buf.len() as u64).min(self.add_left) as usize;
                let old = self.old.at(pos)?;
                let n = want.min(old.len());
                let out = &mut buf[..n];
                self.delta.read_exact(out)?;
                for (byte, o) in out.iter_mut().zip(&old[..n]) {
                    *byte = byte.wrapping_add(*o);
                }
                self.add_left -= n as u64;
                self.pos += n as i64;
                self.produced += n as u64;
                return Ok(n);
            }
            if self.copy_left > 0 {
                let n = (buf.len() as u64).min(self.copy_left) as usize;
                self.extra.read_exact(&mut buf[..n]).map_err(|e| self.extra.error(e, "the extra stream ends early"))?;
                self.copy_left -= n as u64;
                self.produced += n as u64;
                return Ok(n);
            }
            if let Some(seek) = self.seek.take() {
                self.pos = self.pos.checked_add(seek).ok_or_else(|| self.corrupt("a seek overflows"))?;
            }
            if !self.next_control()? {
                break;
            }
        }
        if self.produced != self.size {
            return Err(self.corrupt(format!("controls produce {} bytes, the entry has {}", self.produced, self.size)));
        }
        self.controls.expect_end()?;
        self.delta.finish()?;
        self.extra.finish("the extra stream")?;
        Ok(0)
    }
}

/// Applies a delta to in-memory old content (for tests and small callers).
pub fn apply_in_memory(old: &[u8], parts: &DeltaParts) -> Option<Vec<u8>> {
    let delta = parts.delta.to_vec();
    let mut out = Vec::new();
    let (mut pos, mut d, mut e) = (0i64, 0usize, 0usize);
    for c in &parts.controls {
        for i in 0..c.add as usize {
            let o = *old.get(usize::try_from(pos).ok()? + i)?;
            out.push(o.wrapping_add(*delta.get(d + i)?));
        }
        pos += c.add as i64;
        d += c.add as usize;
        out.extend_from_slice(parts.extra.get(e..e + c.copy as usize)?);
        e += c.copy as usize;
        pos = pos.checked_add(c.seek)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::io::Write;

    /// Applies `encoded` through the streaming reader, its blobs in a file as a patch holds them.
    fn apply_encoded(old: &[u8], encoded: &EncodedDelta, size: u64) -> Result<Vec<u8>> {
        let mut file = tempfile::tempfile().unwrap();
        let runs = encoded.runs.as_ref().map(|(_, runs)| runs.clone()).unwrap_or_default();
        for blob in [&encoded.controls, &runs, &encoded.delta, &encoded.extra] {
            file.write_all(blob).unwrap();
        }
        let desc = DeltaDesc { blob_at: 0, ..encoded.desc() };
        let cursor =
            OldCursor::new(old.len() as u64, |start, len| Ok(old[start as usize..start as usize + len].to_vec()));
        let mut reader = DeltaReader::new(&file, Path::new("p.mfp"), &desc, size, cursor, "e")?;
        let (mut out, mut buf) = (Vec::new(), [0u8; 1000]);
        loop {
            let n = reader.produce(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn frame(bytes: &[u8]) -> Vec<u8> {
        if bytes.is_empty() {
            Vec::new()
        } else {
            zref::compress_plain(bytes, 1).unwrap()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn run_coded_deltas_apply_to_the_new_content(
            old in proptest::collection::vec(0u8..8, 1..3000),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0usize..40), 0..12),
        ) {
            let mut new = old.clone();
            for (at, byte, len) in edits {
                let at = at.index(new.len());
                let end = (at + len).min(new.len());
                new[at..end].iter_mut().for_each(|b| *b = b.wrapping_add(byte));
                new.insert(at, byte);
            }
            let parts = crate::matcher::diff(&old, &new).unwrap();
            let encoded = parts.encode(1).unwrap();
            prop_assert!(encoded.runs.is_some());
            prop_assert_eq!(apply_encoded(&old, &encoded, new.len() as u64).unwrap(), new);
        }
    }

    #[test]
    fn delta_runs_cover_zeros_and_literals() {
        let delta = DeltaBytes::from(&[0, 0, 5, 6, 0, 7][..]);
        assert_eq!((delta.runs(), delta.literals()), (vec![2, 2, 1, 1], &[5, 6, 7][..]));
        let delta = DeltaBytes::from(&[9, 0, 0][..]);
        assert_eq!((delta.runs(), delta.literals()), (vec![0, 1, 2, 0], &[9][..]));
        assert_eq!(DeltaBytes::from(&[][..]).runs(), Vec::<u8>::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn delta_bytes_built_piecewise_equal_built_at_once(
            pieces in proptest::collection::vec(proptest::collection::vec(prop_oneof![3 => Just(0u8), 1 => 1u8..4], 0..40), 0..8),
            zeros_between in 0u64..3,
        ) {
            let (mut pushed, mut appended, mut all) = (DeltaBytes::default(), DeltaBytes::default(), Vec::new());
            for piece in &pieces {
                pushed.push(piece);
                appended.append(&DeltaBytes::from(&piece[..]));
                all.extend_from_slice(piece);
                let zeros = vec![0u8; zeros_between as usize];
                pushed.push(&zeros);
                let mut z = DeltaBytes::default();
                z.push_zeros(zeros_between);
                appended.append(&z);
                all.extend_from_slice(&zeros);
            }
            let at_once = DeltaBytes::from(&all[..]);
            prop_assert_eq!(pushed.to_vec(), all.clone());
            prop_assert_eq!((pushed.runs(), pushed.literals(), pushed.len()), (at_once.runs(), at_once.literals(), at_once.len()));
            prop_assert_eq!((appended.runs(), appended.literals(), appended.len()), (at_once.runs(), at_once.literals(), at_once.len()));
            let mut difference = DeltaBytes::default();
            difference.push_difference(&all, &vec![0u8; all.len()]);
            prop_assert_eq!(difference, at_once);
        }
    }

    #[test]
    fn a_huge_delta_with_few_changes_keeps_the_raw_coding() {
        // 48 MiB of old content with one changed byte: its runs would fit in a few dozen bytes,
        // more than 2^20-fold, which readers refuse; the raw delta stream compresses less.
        let size = 48u64 << 20;
        let old = vec![3u8; size as usize];
        let mut delta = DeltaBytes::default();
        delta.push_zeros(1234);
        delta.push(&[1]);
        delta.push_zeros(size - 1235);
        let parts = DeltaParts { controls: vec![Control { add: size, copy: 0, seek: 0 }], delta, extra: vec![] };
        let encoded = parts.encode(1).unwrap();
        assert!(encoded.runs.is_none());
        assert!(size <= encoded.len() * MAX_PAYLOAD_EXPANSION);
        let out = apply_encoded(&old, &encoded, size).unwrap();
        assert_eq!(out[1234], 4);
        assert_eq!(out.iter().filter(|&&b| b != 3).count(), 1);

        // A small one gets runs.
        let parts = DeltaParts {
            controls: vec![Control { add: 4000, copy: 0, seek: 0 }],
            delta: DeltaBytes::from(&[0; 4000][..]),
            extra: vec![],
        };
        assert!(parts.encode(1).unwrap().runs.is_some());
    }

    #[test]
    fn bad_runs_are_refused_naming_the_stream() {
        let old = vec![1u8; 100];
        let controls = {
            let mut raw = Vec::new();
            for v in [100, 0, 0] {
                put_varint(&mut raw, v);
            }
            frame(&raw)
        };
        let with_runs = |runs: &[u8], literals: &[u8]| EncodedDelta {
            control_count: 1,
            delta_len: 100,
            controls: controls.clone(),
            runs: Some((literals.len() as u64, frame(runs))),
            delta: frame(literals),
            extra: Vec::new(),
        };
        let good = with_runs(&[98, 2], &[5, 6]);
        let out = apply_encoded(&old, &good, 100).unwrap();
        assert_eq!(&out[97..], &[1, 6, 7]);

        for (runs, literals, expected) in [
            (&[0u8, 0, 100, 0][..], &[][..], "an empty delta run"),
            (&[98, 3][..], &[5, 6, 7][..], "literal run 3 exceeds the limit 2"),
            (&[101, 0][..], &[][..], "zero run 101 exceeds the limit 100"),
            (&[50, 0][..], &[][..], "ends early"),
            (&[100, 0, 0, 0][..], &[][..], "holds more bytes"),
            (&[98, 2][..], &[5, 6, 7][..], "holds more bytes"),
        ] {
            let err = apply_encoded(&old, &with_runs(runs, literals), 100).unwrap_err().to_string();
            assert!(err.contains(expected), "{runs:?}: {err}");
            assert!(err.contains("p.mfp"), "{err}");
        }
    }

    #[test]
    fn old_cursor_keeps_the_regions_a_delta_alternates_between() {
        let old: Vec<u8> = (0..((OLD_CHUNKS as u64 + 8) * OLD_CHUNK)).map(|i| (i % 251) as u8).collect();
        let reads = RefCell::new(Vec::new());
        let mut cursor = OldCursor::new(old.len() as u64, |start, len| {
            reads.borrow_mut().push(start);
            Ok(old[start as usize..start as usize + len].to_vec())
        });
        // Code, data and string table of a binary: three regions far apart, visited in turn.
        let regions = [3 * OLD_CHUNK + 5, 20 * OLD_CHUNK + 7, 39 * OLD_CHUNK + 11];
        for round in 0..50u64 {
            for &region in &regions {
                let pos = region + round;
                assert_eq!(cursor.at(pos).unwrap()[0], old[pos as usize]);
            }
        }
        assert_eq!(reads.borrow().len(), 3, "each region's chunk is read once");

        // More regions than the cache holds: the least recently used chunk goes, the rest stay.
        let many: Vec<u64> = (0..=OLD_CHUNKS as u64).map(|k| k * OLD_CHUNK).collect();
        reads.borrow_mut().clear();
        for &pos in &many {
            cursor.at(pos).unwrap();
        }
        let first_pass = reads.borrow().len();
        cursor.at(many[many.len() - 1]).unwrap();
        assert_eq!(reads.borrow().len(), first_pass, "the newest chunk is still cached");
        cursor.at(many[0]).unwrap();
        assert_eq!(reads.borrow().len(), first_pass + 1, "the oldest chunk was evicted");
    }
}
