//! The patch file's byte layout (spec/PATCH.md): the fixed header, LEB128 varints, and a reader over
//! the decompressed control stream that tracks its offset for error messages and never allocates
//! more than the bytes actually present.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};

/// `\x89MFP\r\n\x1a\n`.
pub const PATCH_MAGIC: [u8; 8] = *b"\x89MFP\r\n\x1a\n";
pub const PATCH_VERSION_MAJOR: u16 = 1;
pub const PATCH_VERSION_MINOR: u16 = 0;
pub const PATCH_HEADER_LEN: u64 = 80;

/// Patch kinds (header byte 12).
pub const KIND_ARCHIVE: u8 = 0;
pub const KIND_PLAIN: u8 = 1;

/// Header flag: the result is byte-identical to the new file and `new_hash` is enforced.
pub const FLAG_EXACT: u8 = 1;
/// Header flag (archive patches): the old file is a Panda3D multifile; the patch's old archive is its
/// canonical mf conversion (what `mf convert --to mf` writes), which `apply` makes first.
pub const FLAG_OLD_PANDA3D: u8 = 2;
/// Header flag (archive patches): the new file was a Panda3D multifile; the patch rebuilds its
/// canonical mf conversion, and `apply` writes a Panda3D multifile by default.
pub const FLAG_NEW_PANDA3D: u8 = 4;
/// Every header flag this version knows.
pub const FLAGS_KNOWN: u8 = FLAG_EXACT | FLAG_OLD_PANDA3D | FLAG_NEW_PANDA3D;

/// Operation codes of an entry record.
pub const OP_COPY: u8 = 0;
pub const OP_BSDIFF: u8 = 1;
pub const OP_ZREF: u8 = 2;
pub const OP_FULL: u8 = 3;

/// Entry record flags.
pub const EF_PATH: u8 = 1;
pub const EF_MODE: u8 = 2;
pub const EF_MTIME: u8 = 4;
pub const EF_VERBATIM: u8 = 8;
pub const EF_KNOWN: u8 = EF_PATH | EF_MODE | EF_MTIME | EF_VERBATIM;

/// Storage descriptors.
pub const STORE_NONE: u8 = 0;
pub const STORE_ALL_FRAMES: u8 = 1;
pub const STORE_BITMAP: u8 = 2;

/// bsdiff payload location.
pub const BS_INLINE: u8 = 0;
pub const BS_BLOB: u8 = 1;

/// Largest bsdiff payload kept inline in the control stream; larger ones become blobs.
pub const INLINE_MAX: u64 = 1 << 20;

/// The fixed 80-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchHeader {
    pub version_major: u16,
    pub version_minor: u16,
    pub kind: u8,
    pub flags: u8,
    pub old_len: u64,
    /// Archive patches: the old archive's index hash (footer field). Plain patches: xxh3 of the old file.
    pub old_id: u64,
    pub new_len: u64,
    pub new_hash: u64,
    pub control_len: u64,
    pub blobs_len: u64,
    pub body_hash: u64,
}

impl PatchHeader {
    pub fn exact(&self) -> bool {
        self.flags & FLAG_EXACT != 0
    }

    pub fn to_bytes(&self) -> [u8; PATCH_HEADER_LEN as usize] {
        let mut b = [0u8; PATCH_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&PATCH_MAGIC);
        b[8..10].copy_from_slice(&self.version_major.to_le_bytes());
        b[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        b[12] = self.kind;
        b[13] = self.flags;
        b[16..24].copy_from_slice(&self.old_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.old_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.new_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.new_hash.to_le_bytes());
        b[48..56].copy_from_slice(&self.control_len.to_le_bytes());
        b[56..64].copy_from_slice(&self.blobs_len.to_le_bytes());
        b[64..72].copy_from_slice(&self.body_hash.to_le_bytes());
        let hash = xxh3_64(&b[..72]);
        b[72..80].copy_from_slice(&hash.to_le_bytes());
        b
    }

    /// Parses and checks a header; `file_len` is the patch file's length.
    pub fn parse(bytes: &[u8], file_len: u64, file: &Path) -> Result<PatchHeader> {
        let corrupt = |offset: u64, what: &str| Error::CorruptPatch {
            file: file.to_owned(),
            section: "header",
            offset,
            entry: None,
            what: what.to_owned(),
        };
        if bytes.len() < 8 || bytes[..8] != PATCH_MAGIC {
            return Err(Error::NotAPatch { file: file.to_owned() });
        }
        if (bytes.len() as u64) < PATCH_HEADER_LEN {
            return Err(corrupt(bytes.len() as u64, "patch is truncated (shorter than its header)"));
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let header = PatchHeader {
            version_major: u16_at(8),
            version_minor: u16_at(10),
            kind: bytes[12],
            flags: bytes[13],
            old_len: u64_at(16),
            old_id: u64_at(24),
            new_len: u64_at(32),
            new_hash: u64_at(40),
            control_len: u64_at(48),
            blobs_len: u64_at(56),
            body_hash: u64_at(64),
        };
        if header.version_major != PATCH_VERSION_MAJOR {
            return Err(Error::UnsupportedVersion {
                file: file.to_owned(),
                major: header.version_major,
                minor: header.version_minor,
            });
        }
        if xxh3_64(&bytes[..72]) != u64_at(72) {
            return Err(corrupt(72, "header checksum mismatch (the header is damaged)"));
        }
        if header.kind != KIND_ARCHIVE && header.kind != KIND_PLAIN {
            return Err(corrupt(12, &format!("unknown patch kind {}", header.kind)));
        }
        if header.flags & !FLAGS_KNOWN != 0 || bytes[14] != 0 || bytes[15] != 0 {
            return Err(corrupt(13, "unknown flags or non-zero reserved bytes"));
        }
        if header.kind != KIND_ARCHIVE && header.flags & (FLAG_OLD_PANDA3D | FLAG_NEW_PANDA3D) != 0 {
            return Err(corrupt(13, "Panda3D flags on a plain patch"));
        }
        let expected = PATCH_HEADER_LEN.checked_add(header.control_len).and_then(|x| x.checked_add(header.blobs_len));
        if expected != Some(file_len) {
            return Err(corrupt(
                48,
                &format!(
                    "section lengths say the patch has {} bytes but the file has {file_len} (truncated or extended)",
                    expected.map(|e| e.to_string()).unwrap_or_else(|| "too many".into())
                ),
            ));
        }
        Ok(header)
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads the decompressed control stream, tracking the offset for errors.
pub struct ControlReader<R: Read> {
    inner: R,
    pub offset: u64,
    file: PathBuf,
    /// The entry being parsed, for errors.
    pub entry: Option<String>,
}

impl<R: Read> ControlReader<R> {
    pub fn new(inner: R, file: &Path) -> Self {
        ControlReader { inner, offset: 0, file: file.to_owned(), entry: None }
    }

    pub fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::CorruptPatch {
            file: self.file.clone(),
            section: "control stream",
            offset: self.offset,
            entry: self.entry.clone(),
            what: what.into(),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupt("control stream ends early")),
            Err(e) if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other => {
                Err(self.corrupt(format!("control stream does not decode: {e}")))
            }
            Err(e) => Err(Error::io(&self.file, e)),
        }
    }

    pub fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    pub fn u64le(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn varint(&mut self) -> Result<u64> {
        let start = self.offset;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                self.offset = start;
                return Err(self.corrupt("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        self.offset = start;
        Err(self.corrupt("varint is longer than 10 bytes"))
    }

    /// A varint that must be at most `max` (a length or count about to size something).
    pub fn bounded(&mut self, max: u64, what: &str) -> Result<u64> {
        let at = self.offset;
        let value = self.varint()?;
        if value > max {
            self.offset = at;
            return Err(self.corrupt(format!("{what} {value} exceeds the limit {max}")));
        }
        Ok(value)
    }

    /// Reads `len` bytes, growing the buffer only as bytes actually arrive.
    pub fn bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let got = (&mut self.inner).take(len).read_to_end(&mut out).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::Other => {
                self.corrupt(format!("control stream does not decode: {e}"))
            }
            _ => Error::io(&self.file, e),
        })?;
        if (got as u64) < len {
            self.offset += got as u64;
            return Err(self.corrupt("control stream ends early"));
        }
        self.offset += len;
        Ok(out)
    }

    /// Checks that nothing follows the last record.
    pub fn expect_end(&mut self) -> Result<()> {
        let mut b = [0u8; 1];
        match self.inner.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => Err(self.corrupt("trailing bytes after the last record")),
            Err(e) => Err(self.corrupt(format!("control stream does not decode: {e}"))),
        }
    }
}

/// A writer that hashes (xxh3) and counts what passes through.
pub struct HashingWriter<W: Write> {
    pub inner: W,
    pub hasher: xxhash_rust::xxh3::Xxh3,
    pub len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: xxhash_rust::xxh3::Xxh3::new(), len: 0 }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_overflow() {
        for value in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut reader = ControlReader::new(&buf[..], Path::new("p"));
            assert_eq!(reader.varint().unwrap(), value);
            reader.expect_end().unwrap();
        }
        let too_long = [0xffu8; 11];
        assert!(ControlReader::new(&too_long[..], Path::new("p")).varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(ControlReader::new(&overflow[..], Path::new("p")).varint().is_err());
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = PatchHeader {
            version_major: 1,
            version_minor: 0,
            kind: KIND_ARCHIVE,
            flags: FLAG_EXACT,
            old_len: 10,
            old_id: 11,
            new_len: 12,
            new_hash: 13,
            control_len: 5,
            blobs_len: 7,
            body_hash: 14,
        };
        let bytes = header.to_bytes();
        assert_eq!(PatchHeader::parse(&bytes, 92, Path::new("p")).unwrap(), header);
        assert!(matches!(PatchHeader::parse(&bytes, 91, Path::new("p")), Err(Error::CorruptPatch { .. })));
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert!(matches!(PatchHeader::parse(&damaged, 92, Path::new("p")), Err(Error::CorruptPatch { .. })));
        assert!(matches!(PatchHeader::parse(b"nope", 4, Path::new("p")), Err(Error::NotAPatch { .. })));
    }
}
